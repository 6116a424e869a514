//! The build stage under podman 5 (Debian trixie's 5.4, with buildah 1.39): the same xtask binary builds both
//! platforms of a clone of HEAD in an empty storage with a registry layer cache (`--cache-repo` on a test registry),
//! exports them (with their SBOMs), then builds them again in another empty storage from that cache alone; and the
//! images are set beside the ones this machine's podman builds of the same commit. It shows that the Containerfile's workarounds
//! for buildah 1.28 (BUILDPLATFORM passed by the xtask, the final stage pinned with `--platform`, no `ARG` in the
//! build stage) hold on a newer podman, and names every way the images of the two podmans differ.
//!
//! Where the two differ, only the difference below is let through; anything else fails the test: each layer's tar,
//! where containers/storage before 1.48 (podman 4.3's) writes the file type bits into the tar header's mode
//! (`0100755`), later ones only the permission bits (`0000755`); the files, their modes, owners, times and contents
//! are the same, and so are the layers once those header fields agree. The configs, history included, are the same.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use serde_json::Value;

use crate::build::image_commit;
use crate::reproducible::{
    assert_no_cache_used, base_store, builder_and_build_flags, configs, digests, log_tail,
    storage_conf, PLATFORMS,
};
use crate::support::podman5::Podman5;
use crate::support::registry::{sha256, temp_dir, Auth, TestRegistry};
use crate::support::rootless::is_root;
use crate::support::{ci_env, podman, run, stdout, target_dir};

/// A build's log, stdout and stderr.
fn log(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The steps of a `podman build` log that do more than start a stage (`[stage] STEP n/m: INSTRUCTION`, not FROM).
/// Their outcomes are counted rather than read step by step: buildah builds a stage named by `COPY --from` when it
/// gets there, so that stage's steps come between the COPY line and the COPY's outcome.
fn steps_after_from(log: &str) -> usize {
    log.lines()
        .filter_map(|line| line.split_once("] STEP ").map(|(_, step)| step))
        .filter(|step| {
            step.split_once(": ")
                .is_some_and(|(_, i)| !i.starts_with("FROM "))
        })
        .count()
}

/// Checks one platform's export: a v2s2 manifest whose blobs are there with their digests, a Docker config for the
/// platform with the healthcheck and this commit's revision.
fn check_export(target: &Path, platform: &str) {
    let dir = target.join("image").join(platform.replace('/', "-"));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    for blob in std::iter::once(&manifest["config"]).chain(manifest["layers"].as_array().unwrap()) {
        let digest = blob["digest"].as_str().unwrap();
        let bytes = std::fs::read(dir.join(&digest[7..])).unwrap();
        assert_eq!(sha256(&bytes), digest, "{platform}");
        assert_eq!(blob["size"].as_u64(), Some(bytes.len() as u64), "{digest}");
    }
    let config = &configs(target)[PLATFORMS.iter().position(|p| *p == platform).unwrap()];
    assert_eq!(config["architecture"], platform.rsplit('/').next().unwrap());
    assert_eq!(
        config["config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "/app", "healthcheck"]),
        "{platform}: {config}"
    );
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.revision"],
        image_commit().0.as_str()
    );
}

/// The uncompressed tar of a layer blob.
fn gunzip(path: &Path) -> Vec<u8> {
    run(Command::new("gzip").arg("-dc").arg(path)).stdout
}

/// The tar with every header's mode cut to its permission bits (and the checksum made right again).
fn without_file_type_bits(tar: &[u8]) -> Vec<u8> {
    let mut tar = tar.to_vec();
    let mut at = 0;
    while at + 512 <= tar.len() && tar[at..at + 512].iter().any(|b| *b != 0) {
        let field = |range: std::ops::Range<usize>, tar: &[u8]| {
            let text = String::from_utf8_lossy(&tar[at + range.start..at + range.end]).into_owned();
            u64::from_str_radix(text.trim_matches(|c: char| c == '\0' || c == ' '), 8).unwrap_or(0)
        };
        let (mode, size) = (field(100..108, &tar), field(124..136, &tar));
        tar[at + 100..at + 108].copy_from_slice(format!("{:07o}\0", mode & 0o7777).as_bytes());
        tar[at + 148..at + 156].copy_from_slice(b"        ");
        let sum: u32 = tar[at..at + 512].iter().map(|b| u32::from(*b)).sum();
        tar[at + 148..at + 156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        at += 512 + size.div_ceil(512) as usize * 512;
    }
    tar
}

/// How the export of `platform` under `a` differs from the one under `b`, as a set of the known kinds; panics on
/// any other difference.
fn known_differences(a: &Path, b: &Path, platform: &str) -> BTreeSet<&'static str> {
    let index = PLATFORMS.iter().position(|p| *p == platform).unwrap();
    let (mut config_a, mut config_b) = (configs(a)[index].clone(), configs(b)[index].clone());
    let mut found = BTreeSet::new();
    // The labels are set on the exported config, not by build steps, so the history is one podman's as the
    // other's (buildah before 1.30 wrote a LABEL entry per `--label`, later ones one for all).
    assert_eq!(
        config_a["history"], config_b["history"],
        "{platform}: the histories differ"
    );
    // The layers' ids follow from the layers, compared below.
    for config in [&mut config_a, &mut config_b] {
        let object = config.as_object_mut().unwrap();
        object.remove("rootfs");
    }
    assert_eq!(
        config_a, config_b,
        "{platform}: the configs differ in more than their layers' ids"
    );

    let dir = |target: &Path| target.join("image").join(platform.replace('/', "-"));
    let layers = |target: &Path| -> Vec<String> {
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(dir(target).join("manifest.json")).unwrap())
                .unwrap();
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap()[7..].to_owned())
            .collect()
    };
    let (layers_a, layers_b) = (layers(a), layers(b));
    assert_eq!(layers_a.len(), layers_b.len(), "{platform}: layer count");
    for (n, (la, lb)) in layers_a.iter().zip(&layers_b).enumerate() {
        if la == lb {
            continue;
        }
        let (tar_a, tar_b) = (gunzip(&dir(a).join(la)), gunzip(&dir(b).join(lb)));
        if tar_a != tar_b {
            assert!(
                without_file_type_bits(&tar_a) == without_file_type_bits(&tar_b),
                "{platform}: layer {n} differs in more than the file type bits of its tar headers' modes"
            );
            found.insert(
                "layers: file type bits in the tar headers' modes (containers/storage < 1.48)",
            );
        } else {
            found.insert("layers: the same tar, compressed differently");
        }
    }
    found
}

#[test]
#[ignore = "builds both platforms twice under podman 5 (a podman in podman) and once with this machine's podman: \
            needs root and the test bench; run by `cargo xtask ci`"]
fn both_platforms_build_export_and_cache_under_podman_5() {
    assert!(is_root(), "podman in podman runs privileged: run as root");
    let (builder, build_args) = builder_and_build_flags();
    let podman5 = Podman5::prepare(&builder);
    let version = podman5.version();
    assert!(version.starts_with("podman version 5."), "{version}");

    let work = temp_dir("podman5");
    let checkout = work.path().join("checkout");
    crate::support::clone_checkout(&checkout);
    let registry = TestRegistry::start(Auth::Anonymous);
    let cache = registry.reference("podman5/cache");
    let logs = target_dir().join("tests/podman5");
    std::fs::create_dir_all(&logs).unwrap();
    let build = |name: &str| {
        let target = work.path().join(format!("{name}-target"));
        let storage = work.path().join(format!("{name}-storage"));
        let mut command = podman5.xtask(work.path(), &checkout, &storage, &target);
        command
            .args(["image", "build", "--tag", "localhost/xtask-test/podman5"])
            .args(["--cache-repo", &cache])
            .args(&build_args);
        let clock = Instant::now();
        let output = command.output().unwrap();
        // Kept for a look after the run (the work directory is removed).
        let kept = logs.join(format!("{name}.log"));
        std::fs::write(&kept, log(&output)).unwrap();
        assert!(
            output.status.success(),
            "the {name} build under {version} failed (log in {}):\n{}",
            kept.display(),
            log_tail(&output)
        );
        eprintln!(
            "{name} build under {version}: {:.1} s",
            clock.elapsed().as_secs_f64()
        );
        (target, output)
    };

    // An empty storage and an empty cache: every step runs, and its result goes to the cache.
    let (first, output) = build("first");
    assert_no_cache_used(&output, "the first build under podman 5");
    let first_log = log(&output);
    assert_eq!(
        first_log.matches("Pushing cache").count(),
        steps_after_from(&first_log),
        "not every step was written to the cache (log in {})",
        logs.join("first.log").display()
    );
    assert!(
        !registry.tags("podman5/cache").unwrap().is_empty(),
        "nothing was written to the layer cache"
    );
    for platform in PLATFORMS {
        check_export(&first, platform);
    }

    // Another empty storage: every step comes from the cache, none runs (nothing is compiled), and the images are
    // the same.
    let (second, output) = build("second");
    let second_log = log(&output);
    let steps = steps_after_from(&second_log);
    assert!(
        steps > 0,
        "no build steps in {}",
        logs.join("second.log").display()
    );
    assert_eq!(
        second_log.matches("Cache pulled from remote").count(),
        steps,
        "not every step was taken from the cache (log in {})",
        logs.join("second.log").display()
    );
    assert!(!second_log.contains("Pushing cache"), "a step ran again");
    assert!(!second_log.contains("Compiling "), "{}", log_tail(&output));
    let under_podman5 = digests(&first);
    assert_eq!(
        under_podman5,
        digests(&second),
        "the build from the cache gave other images"
    );

    // This machine's podman, the same clone, an empty storage (the builder read-only) and no cache.
    let host_version = stdout(podman().arg("--version"));
    let host = work.path().join("host");
    let conf = work.path().join("host-storage.conf");
    std::fs::write(
        &conf,
        storage_conf(&host.join("root"), &host.join("run"), &base_store(&builder)),
    )
    .unwrap();
    let host_target = work.path().join("host-target");
    let clock = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(&checkout)
        .envs(ci_env().into_iter().filter(|(k, _)| k == "CONTAINERS_CONF"))
        .env("CONTAINERS_STORAGE_CONF", &conf)
        .env("CARGO_TARGET_DIR", &host_target)
        .env_remove("SOURCE_DATE_EPOCH")
        .args([
            "image",
            "build",
            "--tag",
            "localhost/xtask-test/podman5-host",
        ])
        .args(&build_args)
        .output()
        .unwrap();
    let _ = Command::new("umount")
        .arg(host.join("root/overlay"))
        .output();
    assert!(
        output.status.success(),
        "the build under {host_version} failed:\n{}",
        log_tail(&output)
    );
    eprintln!(
        "build under {host_version}: {:.1} s",
        clock.elapsed().as_secs_f64()
    );
    let under_host = digests(&host_target);
    // The SBOMs are the xtask's, from the sources: the same whichever podman built the image.
    for platform in PLATFORMS {
        let name = format!("image/{}.cdx.json", platform.replace('/', "-"));
        assert_eq!(
            std::fs::read(first.join(&name)).unwrap(),
            std::fs::read(host_target.join(&name)).unwrap(),
            "{platform}: the SBOMs under {version} and {host_version} differ"
        );
    }
    for (index, platform) in PLATFORMS.iter().enumerate() {
        if under_podman5[index] == under_host[index] {
            eprintln!(
                "{platform}: the same digest under {version} and {host_version}: {}",
                under_podman5[index]
            );
            continue;
        }
        let differences = known_differences(&first, &host_target, platform);
        assert!(!differences.is_empty(), "{platform}");
        eprintln!(
            "{platform}: {} under {version}, {} under {host_version}; they differ only in: {}",
            under_podman5[index],
            under_host[index],
            Vec::from_iter(differences).join("; ")
        );
    }
}

#[test]
fn steps_are_counted_without_the_stage_starts() {
    let log = "[1/2] STEP 1/2: FROM --platform=linux/amd64 localhost/b AS build\n[1/2] STEP 2/2: RUN make\n\
               --> Pushing cache [r]:k\n[2/2] STEP 1/2: FROM scratch\n[2/2] STEP 2/2: COPY --from=build /a /a\n\
               no step here: STEP\n";
    assert_eq!(steps_after_from(log), 2);
}

#[test]
fn file_type_bits_are_cut_from_tar_modes() {
    let header = |mode: &str| {
        let mut block = vec![0u8; 1024];
        block[..3].copy_from_slice(b"app");
        block[100..108].copy_from_slice(mode.as_bytes());
        block[124..136].copy_from_slice(b"00000000001\0");
        block[148..156].copy_from_slice(b"        ");
        let sum: u32 = block[..512].iter().map(|b| u32::from(*b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        block[512] = b'x';
        block.extend([0u8; 1024]);
        block
    };
    let (old, new) = (header("0100755\0"), header("0000755\0"));
    assert_ne!(old, new);
    assert_eq!(without_file_type_bits(&old), new);
    assert_eq!(without_file_type_bits(&new), new);
}
