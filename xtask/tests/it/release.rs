//! `cargo xtask image release` for real: the app built for both platforms with the local test builder, pushed into
//! a registry with Basic auth and published as one list; the arm64 image pulled back and run under qemu; a version
//! release from a tagged clone that leaves `latest` alone; the checks that stop a bad version release; a dry run
//! that sends nothing; unreachable base images named before any build; and `--local` from a fresh clone.
//!
//! The builds take minutes, so the tests run one at a time and share podman's layer cache: the first release builds
//! each platform, later ones reuse the layers. The clones share one cargo target directory under CARGO_TARGET_TMPDIR.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use xshell::{cmd, Shell};

use crate::support;
use crate::support::registry::{self as harness, Auth, Export, Run, TestRegistry, Xtask};

const REPO: &str = "team/app";
const USER: &str = "releaser";
const PASSWORD: &str = "s3cret pass";
const LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const IMAGE: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The builds share podman and its layer cache: one test at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What `cargo xtask ci --setup-only` leaves in target/ci/env: the local Rust builder (docker.io cannot be reached
/// here) and, where podman needs it, CONTAINERS_CONF.
struct Bench {
    build_args: Vec<String>,
    env: BTreeMap<String, String>,
}

/// The bench's variables: the process environment wins over `target/ci/env`.
fn bench() -> Bench {
    let vars = support::ci_env();
    Bench {
        build_args: support::ci_build_args(&vars)
            .into_iter()
            .flat_map(|arg| ["--build-arg".to_owned(), arg])
            .collect(),
        env: vars
            .into_iter()
            .filter(|(k, _)| k == "CONTAINERS_CONF")
            .collect(),
    }
}

impl Bench {
    /// The xtask binary of this build, in this checkout.
    fn xtask(&self, work: &Path) -> Xtask {
        let mut xtask = Xtask::new().target_dir(work);
        for (k, v) in &self.env {
            xtask = xtask.env(k, v);
        }
        xtask
    }

    /// `cargo xtask …` inside another checkout (a clone), as a developer runs it there.
    fn cargo_xtask(&self, checkout: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .arg("xtask")
            .args(args)
            .current_dir(checkout)
            .env("CARGO_TARGET_DIR", clone_target())
            .env("XTASK_RETRY_BASE_MS", "10");
        for name in harness::SCRUBBED {
            if *name != "CARGO_TARGET_DIR" {
                command.env_remove(name);
            }
        }
        for (k, v) in &self.env {
            command.env(k, v);
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let started = Instant::now();
        let output = command.output().expect("run cargo");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed: started.elapsed(),
            peak_rss_kib: 0,
        }
    }
}

/// One cargo target directory for every clone, kept between runs so only the first compiles everything.
fn clone_target() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("release-clones")
}

/// A fresh clone of this checkout's HEAD.
fn clone(name: &str) -> harness::TempDir {
    let dir = harness::temp_dir(name);
    let sh = Shell::new().unwrap();
    let root = support::root();
    let into = dir.path().join("repo");
    cmd!(sh, "git clone -q {root} {into}").run().unwrap();
    sh.change_dir(&into);
    cmd!(sh, "git config user.email release-test@example.invalid")
        .run()
        .unwrap();
    cmd!(sh, "git config user.name release-test").run().unwrap();
    dir
}

fn repo(dir: &harness::TempDir) -> PathBuf {
    dir.path().join("repo")
}

/// `skopeo inspect` of `REPO` + `suffix` (`:tag`, `@digest`) in `registry`; `None` when it is not there.
fn skopeo(registry: &TestRegistry, suffix: &str, flags: &[&str]) -> Option<Vec<u8>> {
    registry.skopeo_inspect(&format!("{REPO}{suffix}"), flags)
}

fn tag_digest(registry: &TestRegistry, tag: &str) -> Option<String> {
    skopeo(registry, &format!(":{tag}"), &["--raw"]).map(|raw| harness::sha256(&raw))
}

/// Checks the tag is a Docker manifest list of exactly linux/amd64 and linux/arm64, whose children are v2s2 images
/// with the Healthcheck and the platform in their config. Returns (list digest, platform -> (child, config)).
fn check_list(registry: &TestRegistry, tag: &str) -> (String, BTreeMap<String, (String, Value)>) {
    let raw = skopeo(registry, &format!(":{tag}"), &["--raw"]).expect("the tag exists");
    let list: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(list["mediaType"], LIST, "{list}");
    let mut children = BTreeMap::new();
    let mut order = Vec::new();
    for entry in list["manifests"].as_array().unwrap() {
        let platform = format!(
            "{}/{}",
            entry["platform"]["os"].as_str().unwrap(),
            entry["platform"]["architecture"].as_str().unwrap()
        );
        assert_eq!(entry["mediaType"], IMAGE, "{entry}");
        let digest = entry["digest"].as_str().unwrap().to_owned();
        let manifest = skopeo(registry, &format!("@{digest}"), &["--raw"]).unwrap();
        let manifest: Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(manifest["mediaType"], IMAGE);
        let config = skopeo(registry, &format!("@{digest}"), &["--config", "--raw"]).unwrap();
        let config: Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(
            format!(
                "{}/{}",
                config["os"].as_str().unwrap(),
                config["architecture"].as_str().unwrap()
            ),
            platform
        );
        let healthcheck = &config["config"]["Healthcheck"]["Test"];
        assert!(
            healthcheck.to_string().contains("healthcheck"),
            "{platform}: Healthcheck {healthcheck}"
        );
        order.push(platform.clone());
        children.insert(platform, (digest, config));
    }
    assert_eq!(order, ["linux/amd64", "linux/arm64"]);
    (harness::sha256(&raw), children)
}

/// Checks the run exited 0 and shows its closing summary (phase times) in the test's output.
fn succeeded(run: Run) -> Run {
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    if let Some(at) = run.stdout.find("\nreleased ") {
        println!("{}", run.stdout[at..].trim_end());
    }
    run
}

fn release_args<'a>(bench: &'a Bench, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["image", "release"];
    args.extend(extra);
    args.extend(bench.build_args.iter().map(String::as_str));
    args
}

/// Pulls `reference` for linux/arm64 with podman, runs it (under qemu on an x86 machine) and asks its /healthz.
fn run_arm64(registry: &TestRegistry, reference: &str, bench: &Bench) {
    let sh = Shell::new().unwrap();
    for (k, v) in &bench.env {
        sh.set_var(k, v);
    }
    let creds = format!("--creds={}", registry.creds().unwrap());
    let id = cmd!(
        sh,
        "podman pull -q --tls-verify=false {creds} --platform linux/arm64 {reference}"
    )
    .read()
    .unwrap();
    let id = id.lines().last().unwrap().trim().to_owned();
    let format = "{{.Architecture}}";
    let arch = cmd!(sh, "podman image inspect --format {format} {id}")
        .read()
        .unwrap();
    assert_eq!(arch.trim(), "arm64");
    let port = harness::free_port().to_string();
    let env = format!("MCP_PORT={port}");
    let container = cmd!(sh, "podman run -d --rm --network=host -e {env} {id}")
        .read()
        .unwrap();
    let container = container.trim().to_owned();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let started = Instant::now();
    let answer = loop {
        match ureq::get(&url).call() {
            Ok(mut response) => break response.body_mut().read_to_string().unwrap(),
            Err(_) if started.elapsed() < Duration::from_secs(90) => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Err(err) => {
                let logs = cmd!(sh, "podman logs {container}").ignore_status().read();
                let _ = cmd!(sh, "podman rm -f {container}")
                    .quiet()
                    .ignore_status()
                    .run();
                panic!("the arm64 container did not answer {url}: {err}\n{logs:?}");
            }
        }
    };
    let _ = cmd!(sh, "podman rm -f {container}")
        .quiet()
        .ignore_status()
        .ignore_stdout()
        .run();
    assert!(answer.contains("healthy"), "{answer}");
    println!(
        "arm64 answered /healthz under emulation after {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
#[ignore = "builds both platforms with podman and runs arm64 under qemu: needs the test bench; run by `cargo xtask ci`"]
fn release_into_a_basic_auth_registry_then_a_version_release_that_leaves_latest() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _builds = support::build_locks();
    let bench = bench();
    let registry = TestRegistry::start(Auth::basic(USER, PASSWORD));
    let target = registry.reference(REPO);
    let work = harness::temp_dir("release");

    // `latest` from this checkout.
    let run = succeeded(
        bench
            .xtask(work.path())
            .args(release_args(&bench, &["--to", &target]))
            .env("REGISTRY_USERNAME", USER)
            .env("REGISTRY_PASSWORD", PASSWORD)
            .run(),
    );
    println!("release latest: {:.1} s", run.elapsed.as_secs_f64());
    let (latest, children) = check_list(&registry, "latest");
    assert!(
        run.stdout.contains(&format!("released latest = {latest}")),
        "{}",
        run.stdout
    );
    assert_eq!(registry.tags(REPO).unwrap(), ["latest"]);
    run_arm64(&registry, &format!("{target}:latest"), &bench);

    // A version release from a clone whose tag v1.2.3 is at HEAD and whose Cargo.toml says 1.2.3.
    let checkout = clone("version");
    let repo = repo(&checkout);
    let sh = Shell::new().unwrap();
    sh.change_dir(&repo);
    let manifest = std::fs::read_to_string(repo.join("Cargo.toml")).unwrap();
    let old = manifest
        .lines()
        .find(|l| l.starts_with("version = "))
        .unwrap()
        .to_owned();
    std::fs::write(
        repo.join("Cargo.toml"),
        manifest.replacen(&old, "version = \"1.2.3\"", 1),
    )
    .unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Cargo.lock records the package version too: refresh it so the commit is complete and the tree clean.
    cmd!(sh, "{cargo} update --workspace --offline")
        .env("CARGO_TARGET_DIR", clone_target())
        .quiet()
        .run()
        .unwrap();
    cmd!(sh, "git commit -qam 'Release 1.2.3'").run().unwrap();

    // Each missing precondition stops it before anything is built, with the fix.
    let creds = [("REGISTRY_USERNAME", USER), ("REGISTRY_PASSWORD", PASSWORD)];
    let refused = bench.cargo_xtask(
        &repo,
        &release_args(&bench, &["--version", "v1.2.3", "--to", &target]),
        &creds,
    );
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("git tag v1.2.3 does not exist"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("`git tag v1.2.3`"),
        "{}",
        refused.stderr
    );
    cmd!(sh, "git tag v1.2.3").run().unwrap();
    std::fs::write(repo.join("notes.txt"), "uncommitted").unwrap();
    let refused = bench.cargo_xtask(
        &repo,
        &release_args(&bench, &["--version", "v1.2.3", "--to", &target]),
        &creds,
    );
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("the working tree is not clean (?? notes.txt)"),
        "{}",
        refused.stderr
    );
    std::fs::remove_file(repo.join("notes.txt")).unwrap();
    let refused = bench.cargo_xtask(
        &repo,
        &release_args(&bench, &["--version", "v1.2", "--to", &target]),
        &creds,
    );
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("like --version v1.2.3"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        registry.tags(REPO).unwrap(),
        ["latest"],
        "nothing was published by a refused release"
    );

    let run = bench.cargo_xtask(
        &repo,
        &release_args(&bench, &["--version", "v1.2.3", "--to", &target]),
        &creds,
    );
    let run = succeeded(run);
    println!(
        "release v1.2.3 from a clone: {:.1} s",
        run.elapsed.as_secs_f64()
    );
    let (version, version_children) = check_list(&registry, "1.2.3");
    assert_ne!(version, latest);
    for (_, config) in version_children.values() {
        assert_eq!(
            config["config"]["Labels"]["org.opencontainers.image.version"], "1.2.3",
            "{config}"
        );
    }
    // `latest` is where it was, and its children are still there (a version release never prunes).
    assert_eq!(
        tag_digest(&registry, "latest").as_deref(),
        Some(latest.as_str())
    );
    for (child, _) in children.values() {
        assert!(
            skopeo(&registry, &format!("@{child}"), &["--raw"]).is_some(),
            "{child}"
        );
    }
    // version-tags in Cargo.toml: the new 1.2 and 1 name the release as well; latest stays where it was.
    let mut tags = registry.tags(REPO).unwrap();
    tags.sort();
    assert_eq!(tags, ["1", "1.2", "1.2.3", "latest"]);
    for floating in ["1", "1.2"] {
        assert_eq!(
            tag_digest(&registry, floating),
            tag_digest(&registry, "1.2.3")
        );
    }
}

#[test]
fn a_dry_run_prints_every_step_and_leaves_the_registry_byte_for_byte_unchanged() {
    // Nothing is built or pulled, so any base image names do.
    let bench = Bench {
        build_args: [
            "--build-arg",
            "RUST_IMAGE=localhost/builder:1",
            "--build-arg",
            "RUNTIME_IMAGE=scratch",
        ]
        .map(str::to_owned)
        .to_vec(),
        env: BTreeMap::new(),
    };
    let registry = TestRegistry::start(Auth::basic(USER, PASSWORD));
    let target = registry.reference(REPO);
    let work = harness::temp_dir("dry-run");
    // Something already published there, as in a real registry.
    Export::write(&work.path().join("image/linux-amd64"), "amd64", &[10_000]);
    let digests = work.path().join("digests").display().to_string();
    bench
        .xtask(work.path())
        .args([
            "image",
            "push",
            "--platform",
            "linux/amd64",
            "--to",
            &target,
            "--digest-dir",
            &digests,
        ])
        .env("REGISTRY_USERNAME", USER)
        .env("REGISTRY_PASSWORD", PASSWORD)
        .run()
        .success();
    let before = registry.storage_hash();
    let requests = registry.requests().len();

    let run = bench
        .xtask(work.path())
        .args(release_args(&bench, &["--to", &target, "--dry-run"]))
        .env("REGISTRY_USERNAME", USER)
        .env("REGISTRY_PASSWORD", PASSWORD)
        .run()
        .success();
    let steps: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .collect();
    let titles: Vec<String> = steps
        .iter()
        .map(|s| {
            s.split_whitespace()
                .skip(1)
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(
        titles,
        [
            "check the",
            "build linux/amd64",
            "build linux/arm64",
            "push linux/amd64",
            "push linux/arm64",
            "manifest list,",
        ],
        "{}",
        run.stdout
    );
    for fragment in [
        "plan: tag latest",
        "podman build --format docker --identity-label=false --timestamp ",
        "--platform linux/arm64 --network=host",
        &format!(
            "PUT    http://{}/v2/{REPO}/manifests/latest",
            registry.address
        ),
        "prune  ",
    ] {
        assert!(
            run.stdout.contains(fragment),
            "{fragment:?} in\n{}",
            run.stdout
        );
    }
    assert_eq!(
        registry.requests().len(),
        requests,
        "a dry run sends no request"
    );
    assert_eq!(registry.storage_hash(), before);
    assert!(
        !work.path().join("image/linux-arm64").exists(),
        "a dry run builds nothing"
    );

    // With --local it starts nothing either, and says what it would.
    let run = bench
        .xtask(work.path())
        .args(release_args(&bench, &["--local", "--dry-run"]))
        .run()
        .success();
    assert!(
        run.stdout.contains("1. start a throwaway registry"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(
            "podman pull -q --tls-verify=false --platform linux/arm64 127.0.0.1:<free port>/"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("stop the registry and remove its storage"),
        "{}",
        run.stdout
    );
}

#[test]
#[ignore = "asks podman and skopeo about base images: needs the test bench; run by `cargo xtask ci`"]
fn unreachable_base_images_are_named_before_any_build() {
    let bench = bench();
    let work = harness::temp_dir("unreachable");
    let run = bench
        .xtask(work.path())
        .args([
            "image",
            "release",
            "--local",
            "--build-arg",
            "RUST_IMAGE=registry.invalid/none/rust:1",
            "--build-arg",
            "RUNTIME_IMAGE=scratch",
        ])
        .run();
    assert_eq!(
        run.code, 3,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    for fragment in [
        "RUST_IMAGE=registry.invalid/none/rust:1:",
        "cargo xtask image release --build-arg RUST_IMAGE=<local image>",
        "[package.metadata.image.build-args]",
    ] {
        assert!(
            run.stderr.contains(fragment),
            "{fragment:?} in\n{}",
            run.stderr
        );
    }
    assert!(
        !run.stdout.contains("STEP"),
        "no build started:\n{}",
        run.stdout
    );
    assert!(run.elapsed < Duration::from_secs(60), "{:?}", run.elapsed);
    // The throwaway registry it started is gone again.
    let address = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("throwaway registry on "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{}", run.stdout))
        .to_owned();
    assert!(
        TcpStream::connect(&address).is_err(),
        "{address} still answers"
    );
    assert!(
        run.stdout.contains("throwaway registry stopped"),
        "{}",
        run.stdout
    );
}

#[test]
#[ignore = "compiles the xtask in a clone and builds both platforms with podman: needs the test bench; run by `cargo xtask ci`"]
fn local_release_from_a_fresh_clone() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _builds = support::build_locks();
    let bench = bench();
    let checkout = clone("local");
    let repo = repo(&checkout);
    // The README's second command as it stands: no flags. Where the configured bases cannot be pulled (here,
    // docker.io and gcr.io are out of reach) it takes the local ones `cargo xtask ci` made, and says so.
    let run = succeeded(bench.cargo_xtask(&repo, &["image", "release", "--local"], &[]));
    let unreachable = run.stdout.contains("cannot be pulled");
    if unreachable {
        assert!(
            run.stdout
                .contains("using localhost/xtask/rust-builder:trixie instead"),
            "{}",
            run.stdout
        );
    }
    assert!(
        run.stdout.contains("base image RUST_IMAGE="),
        "it says which Rust image it builds on:\n{}",
        run.stdout
    );
    println!(
        "cargo xtask image release --local from a fresh clone: {:.1} s",
        run.elapsed.as_secs_f64()
    );
    for fragment in [
        "linux/arm64: pulled ",
        "(linux/arm64)",
        "linux/amd64: pulled ",
        "(linux/amd64)",
        "released latest = sha256:",
        "throwaway registry stopped",
    ] {
        assert!(
            run.stdout.contains(fragment),
            "{fragment:?} in\n{}",
            run.stdout
        );
    }
    let address = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("throwaway registry on "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert!(
        TcpStream::connect(&address).is_err(),
        "{address} still answers"
    );
    // The image stays in local storage under the printed name, for both platforms' checks to have pulled it.
    let sh = Shell::new().unwrap();
    let reference = format!("{address}/mcp-taipei-metro-month-price:latest");
    cmd!(sh, "podman image exists {reference}").run().unwrap();
    assert!(
        run.stdout
            .contains(&format!("podman run --rm --network=host {reference}")),
        "{}",
        run.stdout
    );
}

#[test]
#[ignore = "builds a registry image and both platforms with podman: needs the test bench; run by `cargo xtask ci`"]
fn local_release_with_the_registry_image_instead_of_the_binary() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bench = bench();
    // A stand-in for the official registry image (docker.io is out of reach here): the same distribution binary
    // at the same paths, on the local builder's Debian (the binary needs glibc).
    let sh = Shell::new().unwrap();
    for (k, v) in &bench.env {
        sh.set_var(k, v);
    }
    let context = harness::temp_dir("registry-image");
    std::fs::copy("/usr/bin/docker-registry", context.path().join("registry"))
        .expect("docker-registry is installed");
    let builder = bench
        .build_args
        .iter()
        .find_map(|a| a.strip_prefix("RUST_IMAGE="))
        .unwrap()
        .to_owned();
    std::fs::write(
        context.path().join("Containerfile"),
        format!(
            "FROM {builder}\nCOPY registry /bin/registry\nENTRYPOINT [\"/bin/registry\", \"serve\"]\n\
             CMD [\"/etc/docker/registry/config.yml\"]\n"
        ),
    )
    .unwrap();
    let image = "localhost/xtask-test/registry:2";
    let dir = context.path();
    cmd!(sh, "podman build -q --tag {image} {dir}")
        .ignore_stdout()
        .run()
        .unwrap();

    let _builds = support::build_locks();
    let work = harness::temp_dir("registry-image-release");
    let run = succeeded(
        bench
            .xtask(work.path())
            .args(release_args(&bench, &["--local"]))
            .env("XTASK_REGISTRY_IMAGE", image)
            .run(),
    );
    let line = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("throwaway registry on "))
        .unwrap_or_else(|| panic!("{}", run.stdout))
        .to_owned();
    assert!(line.contains(&format!("podman, image {image}")), "{line}");
    for fragment in [
        "linux/arm64: pulled ",
        "linux/amd64: pulled ",
        "throwaway registry stopped",
    ] {
        assert!(
            run.stdout.contains(fragment),
            "{fragment:?} in\n{}",
            run.stdout
        );
    }
    let address = line.split_whitespace().next().unwrap();
    assert!(
        TcpStream::connect(address).is_err(),
        "{address} still answers"
    );
    let port = address.rsplit(':').next().unwrap();
    let filter = format!("name=xtask-registry-{port}");
    let left = cmd!(sh, "podman ps -aq --filter {filter}").read().unwrap();
    assert_eq!(left.trim(), "", "the registry container is gone");
}

/// One release to two repositories of one registry, with the layer cache there too: the credential helper named for
/// that registry runs once for the whole process (cache probe, both pushes, the manifest stage), however many
/// stages ask.
#[test]
#[ignore = "builds with podman: needs the test bench; run by `cargo xtask ci`"]
fn a_credential_helper_runs_once_per_registry_in_a_release() {
    use std::os::unix::fs::PermissionsExt;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _builds = support::build_locks();
    let bench = bench();
    let registry = TestRegistry::start(Auth::basic(USER, PASSWORD));
    let work = harness::temp_dir("helper-count");
    let bin = work.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = work.path().join("calls");
    // Each run writes the name of the process that ran it: podman asks the helper too (for the cache), and only
    // the xtask's own runs are counted.
    let helper = bin.join("docker-credential-xtaskcount");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\ncat /proc/$PPID/comm >> '{}'\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let auth_file = work.path().join("auth.json");
    std::fs::write(
        &auth_file,
        serde_json::json!({"credHelpers": {registry.address.clone(): "xtaskcount"}}).to_string(),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (app, mirror, cache) = (
        registry.reference("team/app"),
        registry.reference("team/mirror"),
        registry.reference("team/cache"),
    );
    succeeded(
        bench
            .xtask(work.path())
            .args(release_args(
                &bench,
                &[
                    "--to",
                    &app,
                    "--to",
                    &mirror,
                    "--cache-repo",
                    &cache,
                    "--platforms",
                    "linux/amd64",
                ],
            ))
            .env("PATH", &path)
            .env("REGISTRY_AUTH_FILE", &auth_file)
            .run(),
    );
    for repository in ["team/app", "team/mirror"] {
        assert_eq!(
            registry.tags(repository).unwrap(),
            ["latest"],
            "{repository}"
        );
    }
    let text = std::fs::read_to_string(&calls).unwrap_or_default();
    let by_xtask = text.lines().filter(|name| name.trim() == "xtask").count();
    assert_eq!(by_xtask, 1, "helper runs by process:\n{text}");
}
