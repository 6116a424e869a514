//! Reproducible images: one commit, built twice by `cargo xtask image build`, from two clones at different paths,
//! at different times and in different time zones, each in an empty podman storage of its own, the first as root
//! and the second as an unprivileged user with rootless podman, gives the same digest for linux/amd64 and
//! linux/arm64 and the same SBOMs, and, pushed into two repositories, the same list. And a later commit with the
//! same binary, built in a storage warm with the earlier one's steps, gives what an empty storage gives.
//!
//! The storages are empty but for the Rust builder, which each sees read-only (`additionalimagestores`), as a CI
//! runner starts with only the base images it pulls.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::build::image_commit;
use crate::support::registry::{sha256, temp_dir, Auth, TestRegistry, Xtask};
use crate::support::rootless::{self, Rootless};
use crate::support::{ci_build_args, ci_env, parse_outputs, podman, target_dir};

pub const PLATFORMS: [&str; 2] = ["linux/amd64", "linux/arm64"];

/// The test bench's Rust builder, and the `--build-arg` flags that build on it (and on scratch).
pub fn builder_and_build_flags() -> (String, Vec<String>) {
    let vars = ci_env();
    let builder = vars
        .get("XTASK_RUST_BUILDER")
        .cloned()
        .expect("XTASK_RUST_BUILDER: run `cargo xtask ci --setup-only` first");
    let flags = ci_build_args(&vars)
        .into_iter()
        .flat_map(|arg| ["--build-arg".to_owned(), arg])
        .collect();
    (builder, flags)
}

/// storage.conf of an overlay storage at `dir` that reads the images of `base` too.
pub fn storage_conf(graphroot: &Path, runroot: &Path, base: &Path) -> String {
    format!(
        "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n\n[storage.options]\n\
         additionalimagestores = [\"{}\"]\n",
        graphroot.display(),
        runroot.display(),
        base.display()
    )
}

fn image_id(storage_conf: Option<&Path>, image: &str) -> Option<String> {
    let mut command = podman();
    command.args(["image", "inspect", "--format", "{{.Id}}", image]);
    if let Some(conf) = storage_conf {
        command.env("CONTAINERS_STORAGE_CONF", conf);
    }
    let output = command.output().unwrap();
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A store that holds only the Rust builder, copied from root's storage when it is missing or stale; returns its
/// graphroot.
pub fn base_store(builder: &str) -> PathBuf {
    let dir = target_dir().join("tests/reproducible-base");
    let (graphroot, runroot) = (dir.join("root"), dir.join("run"));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("storage.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            graphroot.display(),
            runroot.display()
        ),
    )
    .unwrap();
    let want =
        image_id(None, builder).expect("the Rust builder: run `cargo xtask ci --setup-only`");
    if image_id(Some(&conf), builder).as_deref() != Some(want.as_str()) {
        let to = format!(
            "containers-storage:[overlay@{}+{}]{builder}",
            graphroot.display(),
            runroot.display()
        );
        let status = Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                &format!("containers-storage:{builder}"),
                &to,
            ])
            .status()
            .unwrap();
        assert!(status.success(), "copy {builder} into {}", dir.display());
    }
    graphroot
}

/// sha256 of each platform's exported manifest.json under `target/image/`: the digest it has in any registry.
pub fn digests(target: &Path) -> Vec<String> {
    PLATFORMS
        .iter()
        .map(|platform| {
            let manifest = target
                .join("image")
                .join(platform.replace('/', "-"))
                .join("manifest.json");
            sha256(
                &std::fs::read(&manifest)
                    .unwrap_or_else(|err| panic!("{}: {err}", manifest.display())),
            )
        })
        .collect()
}

/// Each platform's exported config, for the message when two builds differ.
pub fn configs(target: &Path) -> Vec<Value> {
    PLATFORMS
        .iter()
        .map(|platform| {
            let export = target.join("image").join(platform.replace('/', "-"));
            let manifest: Value =
                serde_json::from_slice(&std::fs::read(export.join("manifest.json")).unwrap())
                    .unwrap();
            let digest = manifest["config"]["digest"].as_str().unwrap();
            serde_json::from_slice(&std::fs::read(export.join(&digest[7..])).unwrap()).unwrap()
        })
        .collect()
}

/// Pushes both platforms' exports under `target` into `repository` and publishes the list; returns its digest.
fn publish(registry: &TestRegistry, target: &Path, repository: &str) -> String {
    let work = temp_dir("reproducible-publish");
    let to = registry.reference(repository);
    for platform in PLATFORMS {
        Xtask::new()
            .args(["image", "push", "--platform", platform, "--to", &to])
            .args(["--digest-dir"])
            .args([work.path().join("digests")])
            .target_dir(target)
            .run()
            .success();
    }
    let outputs = work.path().join("outputs");
    Xtask::new()
        .args(["image", "manifest", "--tag", "latest", "--to", &to])
        .args(["--platforms", "linux/amd64,linux/arm64"])
        .args(["--digest-dir"])
        .args([work.path().join("digests")])
        .env("GITHUB_OUTPUT", &outputs)
        .run()
        .success();
    parse_outputs(&std::fs::read_to_string(&outputs).unwrap())["digest"].clone()
}

/// Every step ran: the storage was empty, so nothing came from an earlier build.
pub fn assert_no_cache_used(output: &std::process::Output, which: &str) {
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(log.contains("STEP 1/"), "{which}: no build steps in\n{log}");
    assert!(
        !log.contains("Using cache"),
        "{which} reused a layer:\n{log}"
    );
}

pub fn log_tail(output: &std::process::Output) -> String {
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    log[log.len().saturating_sub(4000)..].to_owned()
}

#[test]
#[ignore = "builds both platforms twice, once as root and once rootless, in empty storages: needs root and the test \
            bench; run by `cargo xtask ci`"]
fn two_clones_two_storages_one_rootless() {
    assert!(
        rootless::is_root(),
        "the rootless half makes a user: run as root (`cargo xtask ci` does)"
    );
    let (builder, build_args) = builder_and_build_flags();
    let base = base_store(&builder);

    // The first build: root, a clone in one place, an empty storage of its own, UTC.
    let work = temp_dir("reproducible");
    let first = work.path().join("first-clone");
    crate::support::clone_checkout(&first);
    let storage = work.path().join("storage");
    let conf = work.path().join("storage.conf");
    std::fs::write(
        &conf,
        storage_conf(&storage.join("root"), &storage.join("run"), &base),
    )
    .unwrap();
    let first_target = work.path().join("target");
    let first_started = SystemTime::now();
    let clock = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(&first)
        .envs(ci_env().into_iter().filter(|(k, _)| k == "CONTAINERS_CONF"))
        .env("CONTAINERS_STORAGE_CONF", &conf)
        .env("CARGO_TARGET_DIR", &first_target)
        .env("TZ", "UTC")
        .env_remove("SOURCE_DATE_EPOCH")
        .args([
            "image",
            "build",
            "--tag",
            "localhost/xtask-test/repro-first",
        ])
        .args(&build_args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the first build failed:\n{}",
        log_tail(&output)
    );
    assert_no_cache_used(&output, "the first build");
    eprintln!(
        "first build (root, {}): {:.1} s",
        first.display(),
        clock.elapsed().as_secs_f64()
    );
    let _ = Command::new("umount")
        .arg(storage.join("root/overlay"))
        .output();

    // The second, at least a second later: the unprivileged user, its own clone elsewhere, an empty rootless
    // storage that reads the builder from a store of the user's that holds only it, another time zone.
    std::thread::sleep(Duration::from_millis(1100));
    let user = Rootless::prepare();
    user.sync_base_image(&builder);
    let second = user.clone_checkout("somewhere/else/second-clone");
    let second_target = user.own_dir("target-second");
    let mut words = user.empty_storage("storage");
    words.push("TZ=Asia/Taipei".to_owned());
    words.extend(user.xtask_words(&second_target));
    words.extend(
        [
            "image",
            "build",
            "--tag",
            "localhost/xtask-test/repro-second",
        ]
        .map(str::to_owned),
    );
    words.extend(build_args.iter().cloned());
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let second_started = SystemTime::now();
    let clock = Instant::now();
    let output = user.command(&words).current_dir(&second).output().unwrap();
    assert!(
        output.status.success(),
        "the second build (rootless) failed:\n{}",
        log_tail(&output)
    );
    assert_no_cache_used(&output, "the second build");
    eprintln!(
        "second build (rootless, {}): {:.1} s",
        second.display(),
        clock.elapsed().as_secs_f64()
    );
    let apart = second_started.duration_since(first_started).unwrap();
    assert!(apart >= Duration::from_secs(1), "{apart:?}");
    let rootless = user
        .command(&["podman", "info", "--format", "{{.Host.Security.Rootless}}"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&rootless.stdout).trim(), "true");

    // Every digest the same, and the images are what this commit labels.
    let (one, two) = (digests(&first_target), digests(&second_target));
    for (index, platform) in PLATFORMS.iter().enumerate() {
        assert_eq!(
            one[index],
            two[index],
            "{platform}: the two builds differ; configs:\n{:#}\n{:#}",
            configs(&first_target)[index],
            configs(&second_target)[index]
        );
    }
    // The SBOMs too: they name no path, user or clock, only what the commit builds.
    for platform in PLATFORMS {
        let name = format!("image/{}.cdx.json", platform.replace('/', "-"));
        assert_eq!(
            std::fs::read(first_target.join(&name)).unwrap(),
            std::fs::read(second_target.join(&name)).unwrap(),
            "{platform}: the two builds' SBOMs differ"
        );
    }
    for config in configs(&first_target) {
        assert_eq!(
            config["config"]["Labels"]["org.opencontainers.image.revision"],
            image_commit().0.as_str()
        );
        assert_eq!(
            config["created"],
            config["config"]["Labels"]["org.opencontainers.image.created"]
        );
    }
    let registry = TestRegistry::start(Auth::Anonymous);
    let lists = [
        publish(&registry, &first_target, "repro/first"),
        publish(&registry, &second_target, "repro/second"),
    ];
    assert!(lists[0].starts_with("sha256:"), "{lists:?}");
    assert_eq!(lists[0], lists[1], "the two lists differ");
    eprintln!(
        "the same digests {} apart: linux/amd64 {}, linux/arm64 {}, list {}",
        format_args!("{:.0} s", apart.as_secs_f64()),
        one[0],
        one[1],
        lists[0]
    );
}

/// Builds linux/amd64 of the checkout `clone` in the storage `conf` into `target`; returns the build's log.
fn build_amd64(clone: &Path, conf: &Path, target: &Path, build_args: &[String]) -> String {
    let output = crate::build::xtask()
        .current_dir(clone)
        .env("CONTAINERS_STORAGE_CONF", conf)
        .env("CARGO_TARGET_DIR", target)
        .args(["image", "build", "--platform", "linux/amd64"])
        .args(["--tag", "localhost/xtask-test/repro-warm"])
        .args(build_args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the build of {} failed:\n{}",
        clone.display(),
        log_tail(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
#[ignore = "builds linux/amd64 three times with podman: needs the test bench; run by `cargo xtask ci`"]
fn a_storage_warm_with_an_earlier_commit_builds_what_an_empty_one_does() {
    let (builder, build_args) = builder_and_build_flags();
    let base = base_store(&builder);
    let work = temp_dir("reproducible-warm");
    let clone = work.path().join("clone");
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .arg("-C")
            .arg(&clone)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .env("GIT_AUTHOR_DATE", "2030-01-02T03:04:05Z")
            .env("GIT_COMMITTER_DATE", "2030-01-02T03:04:05Z")
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    };
    crate::support::clone_checkout(&clone);
    let storage = |name: &str| {
        let conf = work.path().join(format!("{name}.conf"));
        let dir = work.path().join(name);
        std::fs::write(
            &conf,
            storage_conf(&dir.join("root"), &dir.join("run"), &base),
        )
        .unwrap();
        conf
    };
    let (warm, empty) = (storage("warm"), storage("empty"));

    // This commit, into the storage that is then warm.
    let earlier = work.path().join("target-earlier");
    build_amd64(&clone, &warm, &earlier, &build_args);

    // A later commit whose binary is the same (a comment), so a new revision and time on the same files.
    let main = clone.join("src/main.rs");
    let mut text = std::fs::read_to_string(&main).unwrap();
    text.push_str("// A later commit with the same binary.\n");
    std::fs::write(&main, text).unwrap();
    git(&["commit", "-q", "-am", "a comment"]);

    let from_warm = work.path().join("target-warm");
    let log = build_amd64(&clone, &warm, &from_warm, &build_args);
    // The final stage's copy of the binary came from the earlier commit's build: after the sources' copy (a new
    // layer, as is the compile after it) and before the next step, the only cache hit can be that copy's (podman
    // prints the final stage's first steps where it likes).
    let sources = log
        .rfind("COPY src src")
        .unwrap_or_else(|| panic!("no COPY src step:\n{log}"));
    let next = log[sources..]
        .find("USER 65532")
        .unwrap_or_else(|| panic!("no USER step after the compile:\n{log}"));
    assert!(
        log[sources..sources + next].contains("--> Using cache"),
        "the binary's layer was not taken from the warm storage:\n{log}"
    );
    let from_empty = work.path().join("target-empty");
    let log = build_amd64(&clone, &empty, &from_empty, &build_args);
    assert!(
        !log.contains("Using cache"),
        "the empty storage reused a step:\n{log}"
    );

    // Each export: its manifest's digest, the manifest, the config it names.
    let export = |target: &Path| target.join("image/linux-amd64");
    let manifest_bytes =
        |target: &Path| std::fs::read(export(target).join("manifest.json")).unwrap();
    let manifest = |target: &Path| sha256(&manifest_bytes(target));
    let manifest_json =
        |target: &Path| -> Value { serde_json::from_slice(&manifest_bytes(target)).unwrap() };
    let config = |target: &Path| -> Value {
        let digest = manifest_json(target)["config"]["digest"]
            .as_str()
            .unwrap()
            .to_owned();
        serde_json::from_slice(&std::fs::read(export(target).join(&digest[7..])).unwrap()).unwrap()
    };
    assert_eq!(
        manifest(&from_warm),
        manifest(&from_empty),
        "a warm and an empty storage built the later commit differently; configs:\n{:#}\n{:#}",
        config(&from_warm),
        config(&from_empty)
    );
    // It is the later commit's image: its own revision and time, and a digest of its own.
    let (earlier_config, later_config) = (config(&earlier), config(&from_warm));
    assert_eq!(later_config["created"], "2030-01-02T03:04:05Z");
    assert_ne!(
        earlier_config["config"]["Labels"]["org.opencontainers.image.revision"],
        later_config["config"]["Labels"]["org.opencontainers.image.revision"]
    );
    assert_ne!(manifest(&earlier), manifest(&from_warm));
    // The same files, layer for layer: only the config tells the commits apart.
    assert_eq!(
        manifest_json(&earlier)["layers"],
        manifest_json(&from_warm)["layers"]
    );
}
