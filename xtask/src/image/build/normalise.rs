//! The export step's last part: the exported image config made free of build-time ids and given the image's labels
//! and time, and the manifest rewritten to name the new config, so that the same sources give the same digest on
//! any machine, in any podman storage, rootful or rootless, with any podman.
//!
//! The labels and the time are set here rather than in the build (`--label`, `--timestamp <created>`) for three
//! reasons. A layer's bytes include its files' mtimes, and buildah's cache key for a step does not include
//! `--timestamp`: an earlier commit's cached layer with the same files would carry that commit's time, so the build
//! runs with one fixed time ([`super::LAYER_TIME`]) and the layers depend on their files only. Each `--label` is a
//! build step (one history entry each before buildah 1.30, one for all later), so the history, and the digest,
//! would depend on the podman version. And the labels change with every commit while the final stage's steps need
//! not run again.
//!
//! With a fixed `--timestamp` podman's layers are byte for byte the same from build to build; its Docker-format
//! config is not. It records the build container (`container`, and its id as `Hostname` in `config` and
//! `container_config`), the previous intermediate image (`parent`), and the intermediate image each step started
//! from (`"comment": "FROM <image id>"` in `history`); each is random or depends on what the storage held. None of
//! them means anything to a user of the image, so they go.
//!
//! Two fields are spelled differently by different podman versions for the same image: buildah 1.38 and later
//! (podman 5.3+) start a `FROM scratch` stage as BuildKit does, with `WorkingDir` "/" and no `Cmd` (null), where
//! older ones wrote "" and `[]`. A runtime reads both the same (no command; the working directory "/"), so the newer
//! spelling is kept and the older one rewritten to it. Everything else is kept as podman wrote it.
//!
//! The history entries the build writes keep the fixed time; the config's `created` is the image's (the
//! `org.opencontainers.image.created` label).
//!
//! [`config`] and [`manifest`] are pure; [`export`] applies them to an export directory.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use super::CREATED;
use crate::oci::{Digest, ImageManifest};

/// The config without build-time ids, with `labels` added to the base image's (a label of the same key replaced)
/// and the `created` label's time, as compact JSON with sorted keys (the same input always gives the same bytes;
/// normalising twice changes nothing).
pub fn config(bytes: &[u8], labels: &BTreeMap<String, String>) -> anyhow::Result<Vec<u8>> {
    let mut config: Value =
        serde_json::from_slice(bytes).context("the exported image config is not JSON")?;
    let object = config
        .as_object_mut()
        .context("the exported image config is not a JSON object")?;
    object.remove("container");
    object.remove("parent");
    if let Some(created) = labels.get(CREATED) {
        object.insert("created".into(), Value::String(created.clone()));
    }
    for key in ["config", "container_config"] {
        if let Some(run) = object.get_mut(key).and_then(Value::as_object_mut) {
            if run.contains_key("Hostname") {
                run.insert("Hostname".into(), Value::String(String::new()));
            }
            if run
                .get("Image")
                .and_then(Value::as_str)
                .is_some_and(is_image_id)
            {
                run.insert("Image".into(), Value::String(String::new()));
            }
            if run.get("WorkingDir").and_then(Value::as_str) == Some("") {
                run.insert("WorkingDir".into(), Value::String("/".into()));
            }
            if run
                .get("Cmd")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty)
            {
                run.insert("Cmd".into(), Value::Null);
            }
            // The labels go where a runtime reads them; `container_config` is the last build step's and keeps
            // what the build wrote.
            if key == "config" && !labels.is_empty() {
                // Absent, or null where the image has none.
                let all = run.entry("Labels").or_insert(Value::Null);
                if !all.is_object() {
                    *all = Value::Object(Default::default());
                }
                let all = all.as_object_mut().expect("made an object above");
                for (key, value) in labels {
                    all.insert(key.clone(), Value::String(value.clone()));
                }
            }
        }
    }
    if let Some(history) = object.get_mut("history").and_then(Value::as_array_mut) {
        for entry in history.iter_mut().filter_map(Value::as_object_mut) {
            let from_an_id = entry
                .get("comment")
                .and_then(Value::as_str)
                .and_then(|comment| comment.strip_prefix("FROM "))
                .is_some_and(is_image_id);
            if from_an_id {
                entry.remove("comment");
            }
        }
    }
    Ok(serde_json::to_vec(&config).expect("a JSON value serialises"))
}

/// An image id as podman prints one: 12 to 64 lowercase hex digits, with or without `sha256:`. A base image's name
/// (`FROM docker.io/library/rust:1`) is not one and stays.
fn is_image_id(text: &str) -> bool {
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    (12..=64).contains(&hex.len()) && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The manifest with its config descriptor naming `config` (digest and size); everything else as it was.
pub fn manifest(bytes: &[u8], config: &[u8]) -> anyhow::Result<Vec<u8>> {
    ImageManifest::parse(bytes).map_err(|why| anyhow::anyhow!("manifest.json is {why}"))?;
    let mut manifest: Value = serde_json::from_slice(bytes).context("manifest.json is not JSON")?;
    let descriptor = manifest
        .get_mut("config")
        .and_then(Value::as_object_mut)
        .context("manifest.json has no config descriptor")?;
    descriptor.insert(
        "digest".into(),
        Value::String(Digest::of(config).to_string()),
    );
    descriptor.insert("size".into(), Value::from(config.len()));
    Ok(serde_json::to_vec(&manifest).expect("a JSON value serialises"))
}

/// Normalises the export in `dir` (`podman push … dir:` output) in place: the new config under its digest, the
/// manifest naming it, the old config removed. Returns the manifest's new bytes.
pub fn export(dir: &Path, labels: &BTreeMap<String, String>) -> anyhow::Result<Vec<u8>> {
    let manifest_path = dir.join("manifest.json");
    let old_manifest = std::fs::read(&manifest_path)
        .with_context(|| format!("read {}", manifest_path.display()))?;
    let parsed = ImageManifest::parse(&old_manifest)
        .map_err(|why| anyhow::anyhow!("{} is {why}", manifest_path.display()))?;
    let old_config_path = dir.join(parsed.config.digest.hex());
    let old_config = std::fs::read(&old_config_path)
        .with_context(|| format!("read the exported config {}", old_config_path.display()))?;
    let new_config = config(&old_config, labels)
        .with_context(|| format!("normalise {}", old_config_path.display()))?;
    let new_manifest = manifest(&old_manifest, &new_config)?;
    let new_config_path = dir.join(Digest::of(&new_config).hex());
    write(&new_config_path, &new_config)?;
    write(&manifest_path, &new_manifest)?;
    if new_config_path != old_config_path {
        std::fs::remove_file(&old_config_path)
            .with_context(|| format!("remove {}", old_config_path.display()))?;
    }
    Ok(new_manifest)
}

/// Written beside and renamed over, so an interrupted export never leaves a half-written file under its name.
fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes).with_context(|| format!("write {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real configs from `podman build --timestamp` (podman 4.3) of this Containerfile for linux/amd64: the same
    /// sources built from two clones at different paths, each in its own empty storage, on `scratch` and on the
    /// local busybox base.
    const SCRATCH: [&[u8]; 2] = [
        include_bytes!("testdata/scratch-a.config.json"),
        include_bytes!("testdata/scratch-b.config.json"),
    ];
    const BUSYBOX: [&[u8]; 2] = [
        include_bytes!("testdata/busybox-a.config.json"),
        include_bytes!("testdata/busybox-b.config.json"),
    ];
    const SCRATCH_MANIFEST: &[u8] = include_bytes!("testdata/scratch-a.manifest.json");

    fn no_labels() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn json(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn two_builds_of_the_same_sources_get_one_config() {
        for [a, b] in [SCRATCH, BUSYBOX] {
            assert_ne!(a, b, "the fixtures are two different builds");
            let (a, b) = (
                config(a, &no_labels()).unwrap(),
                config(b, &no_labels()).unwrap(),
            );
            assert_eq!(
                String::from_utf8_lossy(&a),
                String::from_utf8_lossy(&b),
                "normalised, the two builds agree"
            );
            assert_eq!(
                config(&a, &no_labels()).unwrap(),
                a,
                "normalising twice changes nothing"
            );
        }
    }

    #[test]
    fn only_build_time_ids_go() {
        for raw in SCRATCH.into_iter().chain(BUSYBOX) {
            let (before, after) = (json(raw), json(&config(raw, &no_labels()).unwrap()));
            for gone in ["container", "parent"] {
                assert!(
                    before.get(gone).is_some() && after.get(gone).is_none(),
                    "{gone}"
                );
            }
            for run in ["config", "container_config"] {
                assert_eq!(before[run]["Hostname"].as_str().unwrap().len(), 12);
                assert_eq!(after[run]["Hostname"], "");
                // podman 4.3 spells no command and the root directory the old way.
                assert_eq!(before[run]["Cmd"], serde_json::json!([]));
                assert_eq!(after[run]["Cmd"], Value::Null);
                assert_eq!(before[run]["WorkingDir"], "");
                assert_eq!(after[run]["WorkingDir"], "/");
                let (mut kept, mut was) = (after[run].clone(), before[run].clone());
                for key in ["Hostname", "Cmd", "WorkingDir"] {
                    kept.as_object_mut().unwrap().remove(key);
                    was.as_object_mut().unwrap().remove(key);
                }
                assert_eq!(kept, was, "{run}: everything else is kept");
            }
            for key in ["created", "architecture", "os", "rootfs"] {
                assert_eq!(after[key], before[key], "{key}");
            }
            assert_eq!(after["config"]["Healthcheck"]["Test"][1], "/app");
            let (was, now) = (
                before["history"].as_array().unwrap(),
                after["history"].as_array().unwrap(),
            );
            assert_eq!(was.len(), now.len());
            for (was, now) in was.iter().zip(now) {
                for key in ["created", "created_by", "empty_layer"] {
                    assert_eq!(was.get(key), now.get(key), "{key}");
                }
                match was["comment"].as_str() {
                    Some(id) if id.starts_with("FROM ") && is_image_id(&id[5..]) => {
                        assert!(now.get("comment").is_none(), "{id}")
                    }
                    _ => assert_eq!(was.get("comment"), now.get("comment")),
                }
            }
        }
        // The base's name stays: it says what the image is built on.
        let busybox = String::from_utf8(config(BUSYBOX[0], &no_labels()).unwrap()).unwrap();
        assert!(
            busybox.contains(r#""comment":"FROM localhost/xtask/busybox:amd64""#),
            "{busybox}"
        );
    }

    /// Real configs of one commit built on `scratch` in empty storages by podman 4.3 (buildah 1.28, Debian 12) and
    /// podman 5.4 (buildah 1.39, Debian trixie).
    const PODMAN_4_3: &[u8] = include_bytes!("testdata/scratch-podman4.3.config.json");
    const PODMAN_5_4: &[u8] = include_bytes!("testdata/scratch-podman5.4.config.json");

    #[test]
    fn podman_4_3_and_5_4_spell_no_command_and_the_root_directory_alike_once_normalised() {
        let (old, new) = (json(PODMAN_4_3), json(PODMAN_5_4));
        assert_eq!(old["config"]["WorkingDir"], "");
        assert_eq!(new["config"]["WorkingDir"], "/");
        assert_eq!(old["config"]["Cmd"], serde_json::json!([]));
        assert_eq!(new["config"]["Cmd"], Value::Null);
        let (mut old, mut new) = (
            json(&config(PODMAN_4_3, &no_labels()).unwrap()),
            json(&config(PODMAN_5_4, &no_labels()).unwrap()),
        );
        assert!(
            new.get("container").is_none() && new["config"]["Hostname"] == "",
            "{new}"
        );
        assert_eq!(
            config(&config(PODMAN_5_4, &no_labels()).unwrap(), &no_labels()).unwrap(),
            config(PODMAN_5_4, &no_labels()).unwrap()
        );
        // What is left between them is not a build-time id: these fixtures were built with --label flags, which
        // buildah 1.28 records as a history entry each and 1.30 and later as one; and the layer (rootfs) differs
        // in its tar headers.
        for differs in ["history", "rootfs"] {
            assert_ne!(old[differs], new[differs], "{differs}");
            old.as_object_mut().unwrap().remove(differs);
            new.as_object_mut().unwrap().remove(differs);
        }
        assert_eq!(old, new);
    }

    #[test]
    fn the_labels_and_the_time_are_the_images() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let base = json(&config(BUSYBOX[0], &no_labels()).unwrap());
        // (labels given, the config's created); the labels expected are the base image's and the given ones
        let cases = [
            (no_labels(), base["created"].clone()),
            (
                labels(&[
                    (CREATED, "2024-01-02T03:04:05Z"),
                    ("org.opencontainers.image.revision", "0123abc"),
                ]),
                Value::from("2024-01-02T03:04:05Z"),
            ),
            (
                labels(&[("org.opencontainers.image.version", "1.2.3")]),
                base["created"].clone(),
            ),
        ];
        let base_labels: BTreeMap<String, String> =
            serde_json::from_value(base["config"]["Labels"].clone()).unwrap_or_default();
        for (given, created) in cases {
            let normalised = config(BUSYBOX[0], &given).unwrap();
            let after = json(&normalised);
            assert_eq!(after["created"], created, "{given:?}");
            let mut want = base_labels.clone();
            want.extend(given.clone());
            let got: BTreeMap<String, String> =
                serde_json::from_value(after["config"]["Labels"].clone()).unwrap_or_default();
            assert_eq!(got, want, "{given:?}");
            assert_eq!(
                after["container_config"]["Labels"], base["container_config"]["Labels"],
                "the last build step's config keeps what the build wrote"
            );
            // Build-steps' times stay the build's; only the image's time is the label's.
            assert_eq!(after["history"], base["history"], "{given:?}");
            assert_eq!(
                config(&normalised, &given).unwrap(),
                normalised,
                "normalising twice changes nothing"
            );
        }
        // A label of the base image's key is replaced, not duplicated.
        let mut first = base_labels.clone();
        let Some((key, _)) = first.pop_first() else {
            panic!("the busybox fixture has labels: {base}");
        };
        let replaced = json(&config(BUSYBOX[0], &labels(&[(key.as_str(), "mine")])).unwrap());
        assert_eq!(replaced["config"]["Labels"][key.as_str()], "mine");
    }

    #[test]
    fn image_ids() {
        let cases = [
            ("9a221d024af6", true),
            (
                "sha256:cfc994c9250f71702a697fb06da9633cefc6a32199a7e7fd9d1102571ef98b82",
                true,
            ),
            (
                "cfc994c9250f71702a697fb06da9633cefc6a32199a7e7fd9d1102571ef98b82",
                true,
            ),
            ("9a221d024af", false),
            ("localhost/xtask/busybox:amd64", false),
            ("9A221D024AF6", false),
            ("scratch", false),
        ];
        for (text, want) in cases {
            assert_eq!(is_image_id(text), want, "{text}");
        }
    }

    #[test]
    fn the_manifest_names_the_new_config() {
        let new_config = config(SCRATCH[0], &no_labels()).unwrap();
        let rewritten = manifest(SCRATCH_MANIFEST, &new_config).unwrap();
        let (before, after) = (json(SCRATCH_MANIFEST), json(&rewritten));
        assert_eq!(
            before["config"]["digest"],
            Digest::of(SCRATCH[0]).to_string()
        );
        assert_eq!(
            after["config"]["digest"],
            Digest::of(&new_config).to_string()
        );
        assert_eq!(after["config"]["size"], new_config.len());
        assert_eq!(after["config"]["mediaType"], before["config"]["mediaType"]);
        assert_eq!(after["layers"], before["layers"]);
        assert_eq!(after["mediaType"], before["mediaType"]);
        assert!(manifest(b"{}", &new_config).is_err());
    }

    #[test]
    fn an_export_is_rewritten_in_place() {
        let dir = std::env::temp_dir().join(format!("xtask-normalise-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let old_config = dir.join(Digest::of(SCRATCH[0]).hex());
        std::fs::write(&old_config, SCRATCH[0]).unwrap();
        std::fs::write(dir.join("manifest.json"), SCRATCH_MANIFEST).unwrap();
        let written = export(&dir, &no_labels()).unwrap();
        assert_eq!(std::fs::read(dir.join("manifest.json")).unwrap(), written);
        let new_config = config(SCRATCH[0], &no_labels()).unwrap();
        assert_eq!(
            std::fs::read(dir.join(Digest::of(&new_config).hex())).unwrap(),
            new_config
        );
        assert!(!old_config.exists());
        // Again: nothing changes, and the config is still there.
        assert_eq!(export(&dir, &no_labels()).unwrap(), written);
        assert!(dir.join(Digest::of(&new_config).hex()).exists());
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "{names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
