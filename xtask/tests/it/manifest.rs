//! `cargo xtask image manifest` against two real distribution registries (one with htpasswd Basic auth, one with
//! Bearer tokens), with small synthetic images pushed by the real `image push`: the list an independent client
//! (skopeo) reads, the same digest everywhere, step outputs and summary, pruning of the superseded `latest`, and the
//! all-or-nothing rule: a missing digest file, a wrong architecture or a child missing in one registry moves no tag
//! in any registry and writes nothing; a dry run leaves the storage byte for byte unchanged.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::support;
use crate::support::fault_proxy::{Fault, FaultProxy, Plan, Rng, Rule};
use crate::support::registry::{self as harness, Auth, Export, Run, TempDir, TestRegistry, Xtask};

const REPO: &str = "team/app";
const USER: &str = "ci";
const PASSWORD: &str = "correct horse";
const LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const IMAGE: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Two registries, a work directory with the exports and digest files, and the credentials for both.
struct World {
    basic: TestRegistry,
    token: TestRegistry,
    work: TempDir,
}

impl World {
    fn new() -> World {
        World {
            basic: TestRegistry::start(Auth::basic(USER, PASSWORD)),
            token: TestRegistry::start(Auth::token(USER, PASSWORD)),
            work: harness::temp_dir("manifest"),
        }
    }

    fn registries(&self) -> [&TestRegistry; 2] {
        [&self.basic, &self.token]
    }

    fn targets(&self) -> Vec<String> {
        self.registries()
            .iter()
            .map(|r| r.reference(REPO))
            .collect()
    }

    fn digest_dir(&self) -> PathBuf {
        self.work.path().join("digests")
    }

    fn xtask(&self) -> Xtask {
        Xtask::new()
            .target_dir(self.work.path())
            .env("REGISTRY_USERNAME", USER)
            .env("REGISTRY_PASSWORD", PASSWORD)
    }

    /// A fresh export of linux/`arch` (layer sizes make it distinct) where `image push` reads it.
    fn export(&self, arch: &str, layer_sizes: &[u64]) -> Export {
        let dir = self.work.path().join(format!("image/linux-{arch}"));
        let _ = std::fs::remove_dir_all(&dir);
        Export::write(&dir, arch, layer_sizes)
    }

    /// `image push` of linux/`arch` to `to`, which writes its digest file.
    fn push(&self, arch: &str, to: &[String]) {
        let mut args = vec![
            "image".to_owned(),
            "push".into(),
            "--platform".into(),
            format!("linux/{arch}"),
            "--digest-dir".into(),
            self.digest_dir().display().to_string(),
        ];
        for target in to {
            args.extend(["--to".to_owned(), target.clone()]);
        }
        self.xtask().args(args).run().success();
    }

    /// Exports and pushes both platforms everywhere; returns (amd64, arm64).
    fn release_images(&self, seed: u64) -> (Export, Export) {
        let amd = self.export("amd64", &[20_000 + seed]);
        let arm = self.export("arm64", &[30_000 + seed]);
        self.push("amd64", &self.targets());
        self.push("arm64", &self.targets());
        (amd, arm)
    }

    fn manifest(&self, tag: &str, extra: &[&str]) -> Xtask {
        self.manifest_to(tag, &self.targets(), extra)
    }

    /// `image manifest` into `targets` (the registries, or proxies in front of them).
    fn manifest_to(&self, tag: &str, targets: &[String], extra: &[&str]) -> Xtask {
        let mut args = vec![
            "image".to_owned(),
            "manifest".into(),
            "--digest-dir".into(),
            self.digest_dir().display().to_string(),
            "--tag".into(),
            tag.into(),
            "--platforms".into(),
            "linux/amd64,linux/arm64".into(),
        ];
        for target in targets {
            args.extend(["--to".to_owned(), target.clone()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        self.xtask().args(args)
    }

    /// Every tag in both registries with the digest skopeo reads for it.
    fn tags(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for registry in self.registries() {
            for tag in registry.tags(REPO).unwrap_or_default() {
                let bytes = skopeo_raw(registry, &format!(":{tag}")).expect("a listed tag reads");
                out.insert(
                    format!("{} {tag}", registry.address),
                    harness::sha256(&bytes),
                );
            }
        }
        out
    }

    /// How many requests each registry has logged so far.
    fn marks(&self) -> [usize; 2] {
        self.registries().map(|r| r.requests().len())
    }

    /// Writes (PUT, POST, PATCH, DELETE) each registry received since `marks`.
    fn writes_since(&self, marks: [usize; 2]) -> Vec<String> {
        self.registries()
            .iter()
            .zip(marks)
            .flat_map(|(registry, mark)| {
                registry
                    .requests_since(mark)
                    .into_iter()
                    .filter(|r| matches!(r.method.as_str(), "PUT" | "POST" | "PATCH" | "DELETE"))
                    .map(|r| format!("{} {} {}", registry.address, r.method, r.path))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// `skopeo inspect --raw` of `REPO` + `suffix` (`:tag` or `@digest`); `None` when it is not there.
fn skopeo_raw(registry: &TestRegistry, suffix: &str) -> Option<Vec<u8>> {
    skopeo(registry, suffix, &["--raw"])
}

fn skopeo(registry: &TestRegistry, suffix: &str, flags: &[&str]) -> Option<Vec<u8>> {
    registry.skopeo_inspect(&format!("{REPO}{suffix}"), flags)
}

fn failed(run: &Run, code: i32, fragments: &[&str]) {
    assert_eq!(
        run.code, code,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    for fragment in fragments {
        assert!(
            run.stderr.contains(fragment),
            "{fragment:?} not in stderr:\n{}",
            run.stderr
        );
    }
}

#[test]
fn publishes_one_list_of_both_platforms_in_every_registry() {
    let world = World::new();
    let (amd, arm) = world.release_images(0);
    let outputs = world.work.path().join("github-output");
    let summary = world.work.path().join("github-summary");
    let run = world
        .manifest("latest", &[])
        .env("GITHUB_OUTPUT", &outputs)
        .env("GITHUB_STEP_SUMMARY", &summary)
        .run()
        .success();

    // An independent client reads the same list, by tag, in both registries.
    let raw = skopeo_raw(&world.basic, ":latest").unwrap();
    assert_eq!(skopeo_raw(&world.token, ":latest").unwrap(), raw);
    let digest = harness::sha256(&raw);
    let list: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(list["mediaType"], LIST);
    assert_eq!(list["schemaVersion"], 2);
    let entries: Vec<(String, String, String, String)> = list["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                format!(
                    "{}/{}",
                    m["platform"]["os"].as_str().unwrap(),
                    m["platform"]["architecture"].as_str().unwrap()
                ),
                m["digest"].as_str().unwrap().to_owned(),
                m["mediaType"].as_str().unwrap().to_owned(),
                m["size"].to_string(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            (
                "linux/amd64".to_owned(),
                amd.digest.clone(),
                IMAGE.to_owned(),
                amd.manifest.len().to_string()
            ),
            (
                "linux/arm64".to_owned(),
                arm.digest.clone(),
                IMAGE.to_owned(),
                arm.manifest.len().to_string()
            ),
        ]
    );
    // Each child is a v2s2 image whose config keeps the Healthcheck and names its platform.
    for (platform, child, _, _) in &entries {
        for registry in world.registries() {
            let config = skopeo(registry, &format!("@{child}"), &["--config", "--raw"]).unwrap();
            let config: Value = serde_json::from_slice(&config).unwrap();
            assert!(
                config["config"]["Healthcheck"]["Test"].is_array(),
                "{config}"
            );
            assert_eq!(
                format!(
                    "{}/{}",
                    config["os"].as_str().unwrap(),
                    config["architecture"].as_str().unwrap()
                ),
                *platform
            );
        }
    }

    // The step outputs and the summary say what was published where.
    let outputs = std::fs::read_to_string(&outputs).unwrap();
    let outputs = support::parse_outputs(&outputs);
    assert_eq!(outputs["tag"], "latest");
    assert_eq!(outputs["digest"], digest);
    assert_eq!(outputs["platforms"], "linux/amd64,linux/arm64");
    let references: Vec<String> = serde_json::from_str(&outputs["references"]).unwrap();
    let want: Vec<String> = world
        .targets()
        .iter()
        .map(|t| format!("{t}:latest@{digest}"))
        .collect();
    assert_eq!(references, want);
    for (registry, reference) in world.registries().iter().zip(&want) {
        let key = format!("ref_{}", registry.address.replace(['.', ':'], "_"));
        assert_eq!(&outputs[&key], reference);
    }
    let summary = std::fs::read_to_string(&summary).unwrap();
    for fragment in [
        "### Image `latest` published".to_owned(),
        format!("Manifest list `{digest}`"),
        format!("| linux/amd64 | `{}` |", amd.digest),
        format!("| linux/arm64 | `{}` |", arm.digest),
        format!(
            "podman pull --tls-verify=false {}:latest",
            world.targets()[1]
        ),
        "new tag".to_owned(),
        "Durations: verify ".to_owned(),
    ] {
        assert!(summary.contains(&fragment), "{fragment:?} in\n{summary}");
    }
    assert!(
        run.stdout.contains(&format!("published latest = {digest}")),
        "{}",
        run.stdout
    );

    // A rerun publishes the same bytes: same digest, nothing superseded, nothing deleted.
    let marks = world.marks();
    world.manifest("latest", &[]).run().success();
    assert_eq!(
        harness::sha256(&skopeo_raw(&world.basic, ":latest").unwrap()),
        digest
    );
    assert!(
        !world
            .writes_since(marks)
            .iter()
            .any(|w| w.contains("DELETE")),
        "{:?}",
        world.writes_since(marks)
    );

    // New images: `latest` moves to the new list everywhere and the superseded one is pruned.
    let (amd2, _) = world.release_images(1);
    let run = world.manifest("latest", &[]).run().success();
    let moved = skopeo_raw(&world.token, ":latest").unwrap();
    assert_ne!(harness::sha256(&moved), digest);
    assert!(String::from_utf8_lossy(&moved).contains(&amd2.digest));
    for registry in world.registries() {
        assert_eq!(
            skopeo_raw(registry, &format!("@{digest}")),
            None,
            "{}",
            run.stdout
        );
        assert_eq!(skopeo_raw(registry, &format!("@{}", amd.digest)), None);
    }
}

/// Publishes a first `latest` and pushes a second pair of images, ready for a manifest that must fail.
fn world_with_latest() -> (World, BTreeMap<String, String>) {
    let world = World::new();
    world.release_images(0);
    world.manifest("latest", &[]).run().success();
    world.manifest("1.0.0", &[]).run().success();
    world.release_images(7);
    let tags = world.tags();
    assert_eq!(tags.len(), 4, "{tags:?}");
    (world, tags)
}

#[test]
fn a_missing_platform_digest_moves_no_tag_anywhere() {
    let (world, before) = world_with_latest();
    std::fs::remove_file(world.digest_dir().join("linux-arm64")).unwrap();
    let marks = world.marks();
    let run = world.manifest("latest", &[]).run();
    failed(
        &run,
        3,
        &[
            "no digest for linux/arm64",
            "linux-arm64 is missing",
            "no tag was moved",
        ],
    );
    assert_eq!(world.tags(), before);
    assert_eq!(world.writes_since(marks), Vec::<String>::new());
}

#[test]
fn a_child_of_the_wrong_architecture_moves_no_tag_anywhere() {
    let (world, before) = world_with_latest();
    // The arm64 job built amd64 by mistake: its digest file names the amd64 image as arm64.
    let amd: Value =
        serde_json::from_slice(&std::fs::read(world.digest_dir().join("linux-amd64")).unwrap())
            .unwrap();
    let mut wrong = amd.clone();
    wrong["platform"]["architecture"] = "arm64".into();
    std::fs::write(world.digest_dir().join("linux-arm64"), wrong.to_string()).unwrap();
    let marks = world.marks();
    let run = world.manifest("latest", &[]).run();
    failed(
        &run,
        3,
        &[
            &format!(
                "the image listed as linux/arm64 ({} in {}",
                amd["digest"].as_str().unwrap(),
                world.targets()[0]
            ),
            "is built for linux/amd64",
            "--platform linux/arm64",
            "no tag was moved",
        ],
    );
    assert_eq!(world.tags(), before);
    assert_eq!(world.writes_since(marks), Vec::<String>::new());
}

#[test]
fn a_child_missing_in_one_registry_moves_no_tag_anywhere() {
    let (world, before) = world_with_latest();
    // A new arm64 image reaches only the first registry.
    let arm = world.export("arm64", &[44_444]);
    world.push("arm64", &world.targets()[..1]);
    let marks = world.marks();
    let run = world.manifest("latest", &[]).run();
    failed(
        &run,
        4,
        &[
            &format!(
                "linux/arm64 image {} is missing in {}",
                arm.digest,
                world.targets()[1]
            ),
            "no tag was moved",
        ],
    );
    assert_eq!(world.tags(), before);
    assert_eq!(world.writes_since(marks), Vec::<String>::new());
}

#[test]
fn a_dry_run_leaves_every_registry_byte_for_byte_unchanged() {
    let (world, before) = world_with_latest();
    let storages: Vec<String> = world
        .registries()
        .iter()
        .map(|r| r.storage_hash())
        .collect();
    let marks = world.marks();
    let run = world.manifest("latest", &["--dry-run"]).run().success();
    // It prints every call, in order: reads (children, the tag, the list, the commit the tag's list records), the
    // list by digest,
    // the tag read again, the tags, the read-back (twice: right away and after a pause), the prune.
    let lines: Vec<&str> = run.stdout.lines().skip(1).map(str::trim).collect();
    let kinds: Vec<String> = lines
        .iter()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
        .collect();
    let want: Vec<&str> = [
        vec!["GET"; 16],
        vec!["PUT"; 2],
        vec!["GET"; 2],
        vec!["PUT"; 2],
        vec!["GET"; 4],
        vec!["prune"; 2],
    ]
    .concat();
    assert_eq!(kinds, want, "{}", run.stdout);
    let targets = world.targets();
    assert!(
        lines[20].contains(&format!("/manifests/latest  ({LIST}, ")),
        "{}",
        lines[20]
    );
    assert!(
        lines[20].contains(&targets[0].replacen('/', "/v2/", 1)),
        "{}",
        lines[20]
    );
    assert!(
        lines[21].contains(&targets[1].replacen('/', "/v2/", 1)),
        "{}",
        lines[21]
    );

    assert_eq!(
        world
            .registries()
            .iter()
            .map(|r| r.requests_since(0).len())
            .collect::<Vec<_>>(),
        marks.to_vec(),
        "a dry run sends no request"
    );
    let after: Vec<String> = world
        .registries()
        .iter()
        .map(|r| r.storage_hash())
        .collect();
    assert_eq!(after, storages);
    assert_eq!(world.tags(), before);
}

/// With `1.2` and `1` style tags on: 0.1.0, then 0.2.0, then 0.1.1, each its own build, published into two real
/// registries. `0.1` follows its line to 0.1.1, `0` stays on 0.2.0 (never back), every version keeps its own tag,
/// `latest` is never touched, and both registries agree.
#[test]
fn floating_tags_move_forward_only_in_every_registry() {
    let world = World::new();
    let mut lists = BTreeMap::new();
    for (seed, version) in [(1, "0.1.0"), (2, "0.2.0"), (3, "0.1.1")] {
        let labels = serde_json::json!({"org.opencontainers.image.version": version});
        for (arch, size) in [("amd64", 20_000 + seed), ("arm64", 30_000 + seed)] {
            let dir = world.work.path().join(format!("image/linux-{arch}"));
            let _ = std::fs::remove_dir_all(&dir);
            Export::write_labelled(&dir, arch, &[size], &labels);
            world.push(arch, &world.targets());
        }
        let minor = version.rsplit_once('.').unwrap().0.to_owned();
        let floating = format!("{minor},0");
        let run = world
            .manifest(version, &["--floating-tags", &floating])
            .run()
            .success();
        let digest = world.tags()[&format!("{} {version}", world.basic.address)].clone();
        lists.insert(version, digest);
        if version == "0.1.1" {
            assert!(
                run.stdout
                    .contains("tag 0 left alone (stays on 0.2.0, newer than 0.1.1)"),
                "{}",
                run.stdout
            );
        }
    }
    let tags = world.tags();
    for registry in world.registries() {
        let named = |tag: &str| tags[&format!("{} {tag}", registry.address)].clone();
        assert_eq!(named("0.1"), lists["0.1.1"], "0.1 in {}", registry.address);
        assert_eq!(named("0"), lists["0.2.0"], "0 in {}", registry.address);
        assert_eq!(named("0.2"), lists["0.2.0"]);
        for version in ["0.1.0", "0.2.0", "0.1.1"] {
            assert_eq!(named(version), lists[version], "{version}");
        }
        let mut names = registry.tags(REPO).unwrap();
        names.sort();
        assert_eq!(names, ["0", "0.1", "0.1.0", "0.1.1", "0.2", "0.2.0"]);
    }
}

/// A cancel as GitHub sends it (SIGINT first) during a two-registry publish, with a proxy in front of each registry
/// holding one request so the signal lands at a known point. Before the first tag move: exit 130, every tag as it
/// was, nothing written. While the tags move: they are finished, so both registries name the new list (exit 130
/// still says the run was cancelled, and the prune is left for later). A rerun converges with nothing to do.
#[test]
fn a_cancel_changes_nothing_before_the_tags_move_and_lets_them_finish_once_begun() {
    let (world, before) = world_with_latest();
    let proxies = world
        .registries()
        .map(|r| FaultProxy::start(r.address.parse().unwrap(), Plan::default()));
    let targets: Vec<String> = proxies.iter().map(|p| p.reference(REPO)).collect();
    let hold = |proxy: &FaultProxy, method: &str| {
        proxy.set_plan(Plan {
            rules: vec![Rule {
                method: Some(method.into()),
                path_contains: Some("/manifests/latest".into()),
                fault: Fault::Delay(std::time::Duration::from_secs(3)),
                skip: 0,
                remaining: Some(1),
            }],
            ..Plan::default()
        })
    };
    let done_in_first = |method: &str| {
        proxies[0]
            .log()
            .iter()
            .any(|e| e.method == method && e.path.ends_with("/manifests/latest"))
    };

    // The second registry's read of the tag is held; the cancel comes once the first registry's read is done.
    hold(&proxies[1], "GET");
    let marks = world.marks();
    let run = world
        .manifest_to("latest", &targets, &[])
        .run_signalled("INT", || done_in_first("GET"));
    assert_eq!(run.code, 130, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("SIGINT received before") && run.stderr.contains("no tag was moved"),
        "{}",
        run.stderr
    );
    assert_eq!(world.tags(), before);
    assert_eq!(world.writes_since(marks), Vec::<String>::new());

    // The second registry's tag move is held; the cancel comes once the first registry's tag has moved.
    for proxy in &proxies {
        proxy.set_plan(Plan::default());
    }
    hold(&proxies[1], "PUT");
    let run = world
        .manifest_to("latest", &targets, &[])
        .run_signalled("INT", || done_in_first("PUT"));
    assert_eq!(run.code, 130, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("SIGINT received while the tags moved: they were finished"),
        "{}",
        run.stderr
    );
    // What `latest` names in each registry.
    let latest = |tags: &BTreeMap<String, String>| -> Vec<String> {
        tags.iter()
            .filter(|(key, _)| key.ends_with(" latest"))
            .map(|(_, digest)| digest.clone())
            .collect()
    };
    let after = latest(&world.tags());
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[0], after[1], "the registries disagree: {after:?}");
    assert_ne!(after, latest(&before), "latest did not move");

    // Rerunning the same command converges: the tag already names the list everywhere, so nothing moves.
    world.manifest("latest", &[]).run().success();
    assert_eq!(latest(&world.tags()), after);
}

/// A late run: commit B is released as `latest`, then its parent A (a re-run of an older workflow, a slow runner,
/// a queued job). A's images record a later time than B's, as after a rebase, so only the history can tell which
/// is newer. `latest` stays on B in both registries; the run exits 0 and says why in the log, the step outputs
/// and the summary; a version release of A still publishes its version; `--allow-older` moves `latest` back.
#[test]
fn a_late_run_of_an_older_commit_leaves_latest_on_the_newer_one() {
    let world = World::new();
    let sh = xshell::Shell::new().unwrap();
    sh.change_dir(env!("CARGO_MANIFEST_DIR"));
    let commit = |rev: &str| {
        xshell::cmd!(sh, "git rev-parse {rev}")
            .read()
            .expect("the checkout has HEAD and its parent")
    };
    let (parent, head) = (commit("HEAD~1"), commit("HEAD"));
    let release = |revision: &str, created: &str, seed: u64, tag: &str, extra: &[&str]| {
        let labels = serde_json::json!({
            "org.opencontainers.image.revision": revision,
            "org.opencontainers.image.created": created,
        });
        for (arch, size) in [("amd64", 20_000 + seed), ("arm64", 30_000 + seed)] {
            let dir = world.work.path().join(format!("image/linux-{arch}"));
            let _ = std::fs::remove_dir_all(&dir);
            Export::write_labelled(&dir, arch, &[size], &labels);
            world.push(arch, &world.targets());
        }
        let (outputs, summary) = (
            world.work.path().join("out"),
            world.work.path().join("summary"),
        );
        let _ = (
            std::fs::remove_file(&outputs),
            std::fs::remove_file(&summary),
        );
        let run = world
            .manifest(tag, extra)
            .env("GITHUB_OUTPUT", &outputs)
            .env("GITHUB_STEP_SUMMARY", &summary)
            .run()
            .success();
        let read = |path: &PathBuf| std::fs::read_to_string(path).unwrap_or_default();
        (run, read(&outputs), read(&summary))
    };
    let latest = |world: &World| -> Vec<String> {
        world
            .registries()
            .iter()
            .map(|r| world.tags()[&format!("{} latest", r.address)].clone())
            .collect()
    };

    release(&head, "2026-01-01T00:00:00Z", 1, "latest", &[]);
    let newer = latest(&world);
    assert_eq!(newer[0], newer[1]);
    let marks = world.marks();
    let (run, outputs, summary) = release(&parent, "2026-06-01T00:00:00Z", 2, "latest", &[]);
    assert_eq!(latest(&world), newer, "latest went back:\n{}", run.stdout);
    let why = format!("latest stays on {}", &newer[0][.."sha256:".len() + 12]);
    assert!(run.stdout.contains(&why), "{}", run.stdout);
    assert!(
        run.stdout
            .contains(&format!("newer than this run's commit {}", &parent[..12])),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("deleted"),
        "a late run prunes nothing:\n{}",
        run.stdout
    );
    assert!(outputs.contains("tag_moved=false\n"), "{outputs}");
    assert!(
        outputs.contains(&format!("kept_because={why}")),
        "{outputs}"
    );
    assert!(summary.contains("left on a newer commit"), "{summary}");
    // Nothing of the late run was written under the tag: only its pushes (blobs and children) came before.
    let tag_writes: Vec<String> = world
        .writes_since(marks)
        .into_iter()
        .filter(|w| w.contains("/manifests/latest") || w.contains("DELETE"))
        .collect();
    assert_eq!(tag_writes, Vec::<String>::new());

    // A version of the older commit is a version: it publishes.
    let (run, outputs, _) = release(&parent, "2026-06-01T00:00:00Z", 2, "1.0.0", &[]);
    assert!(
        outputs.contains("tag_moved=true\n"),
        "{outputs}\n{}",
        run.stdout
    );
    let tags = world.tags();
    for registry in world.registries() {
        assert_eq!(
            tags[&format!("{} 1.0.0", registry.address)],
            tags[&format!("{} 1.0.0", world.basic.address)]
        );
        assert_ne!(tags[&format!("{} 1.0.0", registry.address)], newer[0]);
    }
    assert_eq!(latest(&world), newer);

    // A deliberate rollback.
    let (run, _, _) = release(
        &parent,
        "2026-06-01T00:00:00Z",
        2,
        "latest",
        &["--allow-older"],
    );
    let rolled = latest(&world);
    assert_eq!(
        rolled[0],
        tags[&format!("{} 1.0.0", world.basic.address)],
        "{}",
        run.stdout
    );
    assert_eq!(rolled[0], rolled[1]);
}

/// A cancel as GitHub's runner sends it (SIGINT, then SIGTERM 7.5 s later), and SIGKILL, at every request of a
/// two-registry publish of `latest`: the reads, the list, the re-read, the tag moves, the read-back and the prune.
/// 30 points drawn with a fixed seed from all of them; each holds that one request in a proxy and signals while
/// it is held. After SIGINT both registries name the
/// same list under `latest`, the old one or the new one, and the run exits 130; after SIGKILL, and after SIGINT,
/// rerunning the same command brings both to the new list.
#[test]
fn a_cancel_or_a_kill_at_any_point_leaves_the_registries_agreeing() {
    let world = World::new();
    let proxies = world
        .registries()
        .map(|r| FaultProxy::start(r.address.parse().unwrap(), Plan::default()));
    let through: Vec<String> = proxies.iter().map(|p| p.reference(REPO)).collect();
    // A short pause before the second look keeps the 150-odd publishes quick; it is a point like any other.
    let publish = || {
        world
            .manifest_to("latest", &through, &[])
            .env("XTASK_SETTLE_MS", "50")
    };
    let mut commit = 0;
    // A new build of the next commit, pushed to both registries (not through the proxies).
    let mut build = |world: &World| {
        commit += 1;
        let labels = serde_json::json!({
            "org.opencontainers.image.revision": format!("{commit:040x}"),
            "org.opencontainers.image.created": format!("2026-01-01T00:{:02}:{:02}Z", commit / 60, commit % 60),
        });
        for (arch, size) in [("amd64", 20_000 + commit), ("arm64", 30_000 + commit)] {
            let dir = world.work.path().join(format!("image/linux-{arch}"));
            let _ = std::fs::remove_dir_all(&dir);
            Export::write_labelled(&dir, arch, &[size], &labels);
            world.push(arch, &world.targets());
        }
    };
    let latest = |world: &World| -> Vec<String> {
        let tags = world.tags();
        world
            .registries()
            .iter()
            .map(|r| tags[&format!("{} latest", r.address)].clone())
            .collect()
    };

    // A publish that supersedes and prunes a previous `latest`: how many requests each proxy sees.
    build(&world);
    publish().run().success();
    build(&world);
    let marks = proxies.each_ref().map(|p| p.log().len());
    publish().run().success();
    let counts: Vec<usize> = proxies
        .iter()
        .zip(marks)
        .map(|(p, m)| p.log().len() - m)
        .collect();
    let mut points: Vec<(usize, u32)> = (0..2)
        .flat_map(|p| (0..counts[p] as u32).map(move |k| (p, k)))
        .collect();
    assert!(
        points.len() >= 30,
        "only {} points: {counts:?}",
        points.len()
    );
    // 30 of them, drawn with a fixed seed, in the order of the stage.
    let mut rng = Rng::new(30);
    while points.len() > 30 {
        points.remove((rng.next_u64() % points.len() as u64) as usize);
    }

    for signal in ["INT", "KILL"] {
        for &(p, k) in &points {
            let at = format!("SIG{signal} at request {k} of registry {p}");
            let before = latest(&world);
            assert_eq!(before[0], before[1], "before {at}");
            build(&world);
            proxies[p].set_plan(Plan {
                rules: vec![Rule {
                    method: None,
                    path_contains: None,
                    fault: Fault::Delay(std::time::Duration::from_millis(250)),
                    skip: k,
                    remaining: Some(1),
                }],
                ..Plan::default()
            });
            let held = || proxies[p].holding() > 0;
            let run = publish();
            let run = match signal {
                "INT" => {
                    let (run, sent) = run.run_cancelled(held);
                    assert_eq!(
                        sent,
                        ["INT"],
                        "{at}: it did not end on SIGINT\n{}",
                        run.stderr
                    );
                    assert_eq!(run.code, 130, "{at}\n{}\n{}", run.stdout, run.stderr);
                    Some(run)
                }
                _ => {
                    run.run_signalled("KILL", held);
                    None
                }
            };
            proxies[p].set_plan(Plan::default());
            let after = latest(&world);
            if run.is_some() {
                assert_eq!(after[0], after[1], "{at}: the registries disagree");
            }
            // The same command again converges on the new list everywhere.
            publish().run().success();
            let converged = latest(&world);
            assert_eq!(
                converged[0], converged[1],
                "{at}: the rerun left them disagreeing"
            );
            assert_ne!(converged, before, "{at}: the rerun did not publish");
            if let Some(run) = run {
                assert!(
                    after == before || after == converged,
                    "{at}: latest named a third list\n{}",
                    run.stdout
                );
            }
        }
    }
}
