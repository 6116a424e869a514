//! `cargo xtask image build` against real podman: both platforms built with the local Rust builder on `scratch`,
//! the containers run (arm64 through qemu), the exported v2s2 directories checked blob by blob, a source-only
//! change reusing the dependency layer, and the amd64 build as an unprivileged user with rootless podman.
//!
//! The tests that need the test bench (podman, the base images from `cargo xtask ci --setup-only`) are ignored by
//! a bare `cargo test`; `cargo xtask ci` runs them. They read the bench's settings from the environment, else from
//! `target/ci/env`. Each platform is built once per content key (sources, Containerfile, xtask binary, HEAD) and
//! shared between tests and test processes through a lock file, so a run builds each platform once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::registry::{free_port, sha256};
use crate::support::rootless::{self, Rootless};
use crate::support::{self, ci_env, podman, root, run, stdout, target_dir};

const XTASK: &str = env!("CARGO_BIN_EXE_xtask");
/// A platform's ELF machine numbers (e_machine).
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

fn rust_builder() -> String {
    ci_env().get("XTASK_RUST_BUILDER").cloned().expect(
        "XTASK_RUST_BUILDER is not set and target/ci/env is missing: run `cargo xtask ci --setup-only` first",
    )
}

fn git_head() -> String {
    stdout(
        Command::new("git")
            .arg("-C")
            .arg(root())
            .args(["rev-parse", "HEAD"]),
    )
}

/// The commit an image of this checkout records (sha, committer time): the newest that changed what the image is
/// made from, the Containerfile, what it copies and the pipeline's code; docs-only commits after it do not count.
pub fn image_commit() -> (String, u64) {
    let line = stdout(Command::new("git").arg("-C").arg(root()).args([
        "log",
        "-1",
        "--format=%H %ct",
        "--",
        "Containerfile",
        ".containerignore",
        "Cargo.toml",
        "Cargo.lock",
        "xtask/Cargo.toml",
        "src",
        "xtask/src",
    ]));
    let (sha, time) = line.split_once(' ').unwrap();
    (sha.to_owned(), time.parse().unwrap())
}

/// The xtask with the bench's CONTAINERS_CONF.
pub fn xtask() -> Command {
    let mut command = Command::new(XTASK);
    command.envs(ci_env().into_iter().filter(|(k, _)| k == "CONTAINERS_CONF"));
    command.env_remove("SOURCE_DATE_EPOCH");
    command
}

fn which(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}

/// Splits a line printed by `--dry-run` back into argv (plain words and single-quoted ones).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' if in_word => {
                words.push(std::mem::take(&mut word));
                in_word = false;
            }
            ' ' => {}
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

fn value_after<'a>(argv: &'a [String], flag: &str) -> Vec<&'a str> {
    argv.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].as_str())
        .collect()
}

// ---- cheap tests: no container runs ----

#[test]
fn dry_run_prints_the_exact_commands_and_runs_nothing() {
    // No podman on PATH: a dry run must not need it.
    let bin = support::registry::temp_dir("build-dry-run-path");
    std::os::unix::fs::symlink(which("git"), bin.0.join("git")).unwrap();
    let target = support::registry::temp_dir("build-dry-run-target");
    let output = run(Command::new(XTASK)
        .args([
            "image",
            "build",
            "--dry-run",
            "--platform",
            "linux/arm64",
            "--build-arg",
            "RUNTIME_IMAGE=scratch",
            "--build-arg",
            "NOTE=two words",
            "--tag",
            "localhost/dry/app:t",
        ])
        .env("PATH", &bin.0)
        .env("CARGO", env!("CARGO"))
        .env("CARGO_TARGET_DIR", &target.0)
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");

    let build = shell_words(lines[0]);
    assert_eq!(
        &build[..9],
        [
            "podman",
            "build",
            "--format",
            "docker",
            "--identity-label=false",
            "--timestamp",
            "0",
            "--platform",
            "linux/arm64"
        ]
    );
    assert!(build.contains(&"--network=host".to_owned()), "{build:?}");
    assert_eq!(value_after(&build, "--tag"), ["localhost/dry/app:t-arm64"]);
    assert_eq!(
        value_after(&build, "--file"),
        [root().join("Containerfile").to_str().unwrap()]
    );
    let build_platform = match std::env::consts::ARCH {
        "aarch64" => "linux/arm64",
        _ => "linux/amd64",
    };
    let mut args = value_after(&build, "--build-arg");
    args.sort();
    assert_eq!(
        args,
        [
            format!("BUILDPLATFORM={build_platform}").as_str(),
            "NOTE=two words",
            "RUNTIME_IMAGE=scratch",
            "TARGETARCH=arm64"
        ]
    );
    // The labels are no build step: podman gets none, and each exported config gets them.
    assert!(value_after(&build, "--label").is_empty(), "{build:?}");
    let labels: BTreeMap<String, String> = serde_json::from_str(
        lines[2]
            .strip_prefix("# labels of every exported config (created is also its time): ")
            .unwrap_or_else(|| panic!("a comment naming the labels: {text}")),
    )
    .unwrap();
    let labels: BTreeMap<&str, &str> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let version = stdout(Command::new(env!("CARGO")).args([
        "metadata",
        "--no-deps",
        "--format-version",
        "1",
        "--offline",
        "--manifest-path",
        root().join("Cargo.toml").to_str().unwrap(),
    ]));
    let version: Value = serde_json::from_str(&version).unwrap();
    let app = version["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "mcp-taipei-metro-month-price")
        .unwrap();
    let (revision, _) = image_commit();
    let want = BTreeMap::from([
        ("org.opencontainers.image.created", "2023-11-14T22:13:20Z"),
        (
            "org.opencontainers.image.description",
            app["description"].as_str().unwrap(),
        ),
        (
            "org.opencontainers.image.licenses",
            app["license"].as_str().unwrap(),
        ),
        ("org.opencontainers.image.revision", revision.as_str()),
        (
            "org.opencontainers.image.source",
            app["repository"].as_str().unwrap(),
        ),
        (
            "org.opencontainers.image.title",
            "mcp-taipei-metro-month-price",
        ),
        (
            "org.opencontainers.image.version",
            app["version"].as_str().unwrap(),
        ),
    ]);
    assert_eq!(labels, want);
    assert_eq!(build.last().unwrap(), root().to_str().unwrap());

    let export = shell_words(lines[1]);
    let dir = target.0.join("image/linux-arm64");
    assert_eq!(
        export,
        [
            "podman",
            "push",
            "--quiet",
            "--format",
            "v2s2",
            "--compress",
            "localhost/dry/app:t-arm64",
            &format!("dir:{}", dir.display())
        ]
    );
    assert!(!dir.exists(), "a dry run wrote {}", dir.display());
}

#[test]
fn bad_input_exits_2_before_anything_runs() {
    let cases: [(&[&str], Option<&str>, &str); 4] = [
        (
            &["--platform", "linux/s390x"],
            None,
            "linux/amd64 or linux/arm64",
        ),
        (&["--build-arg", "NOVALUE"], None, "KEY=VALUE"),
        (&["--build-arg", "TARGETARCH=arm64"], None, "TARGETARCH"),
        (&[], Some("yesterday"), "SOURCE_DATE_EPOCH"),
    ];
    for (args, epoch, mention) in cases {
        let mut command = xtask();
        command.args(["image", "build", "--dry-run"]).args(args);
        if let Some(epoch) = epoch {
            command.env("SOURCE_DATE_EPOCH", epoch);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(mention), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?} printed commands");
    }
}

#[test]
fn missing_podman_says_how_to_install_it() {
    let bin = support::registry::temp_dir("build-no-podman");
    std::os::unix::fs::symlink(which("git"), bin.0.join("git")).unwrap();
    let output = Command::new(XTASK)
        .args(["image", "build", "--platform", "linux/amd64"])
        .env("PATH", &bin.0)
        .env("CARGO", env!("CARGO"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("podman is not installed"), "{stderr}");
    assert!(stderr.contains("apt-get install -y podman"), "{stderr}");
}

// ---- builds against real podman ----

/// A platform's image built by `cargo xtask image build` for this checkout, shared between tests.
pub struct Built {
    pub image: String,
    /// `<target>/image/<os>-<arch>`; the SBOM is `<target>/image/<os>-<arch>.cdx.json` beside it.
    pub export: PathBuf,
    /// The build's own log (podman's output).
    pub log: String,
}

/// Hash of what the build depends on: sources, manifests, Containerfile, the xtask binary and HEAD (the labels).
fn content_key(build_args: &[String]) -> String {
    let root = root();
    let mut hasher = Sha256::new();
    let mut files = vec![
        root.join("Containerfile"),
        root.join(".containerignore"),
        root.join("Cargo.toml"),
        root.join("Cargo.lock"),
        root.join("xtask/Cargo.toml"),
        PathBuf::from(XTASK),
    ];
    let mut stack = vec![root.join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    for file in files {
        hasher.update(file.to_string_lossy().as_bytes());
        hasher.update(std::fs::read(&file).unwrap_or_default());
    }
    hasher.update(git_head());
    hasher.update(build_args.join("\n"));
    format!("{:x}", hasher.finalize())[..12].to_owned()
}

/// Build arguments: the bench's (the Rust builder, RUNTIME_IMAGE=scratch).
pub fn build_args() -> Vec<String> {
    support::ci_build_args(&ci_env())
}

/// Builds `platform` once per content key; other tests and test processes wait on the lock and reuse it.
pub fn shared_build(platform: &str) -> Built {
    let args = build_args();
    let key = content_key(&args);
    let arch = platform.rsplit('/').next().unwrap();
    let dir = target_dir().join("tests/build").join(&key);
    std::fs::create_dir_all(&dir).unwrap();
    let _lock = support::build_lock(arch);

    let image = format!("localhost/xtask-test/app:{key}-{arch}");
    let export = dir.join("image").join(platform.replace('/', "-"));
    let log_path = dir.join(format!("{arch}.log"));
    let done = dir.join(format!("{arch}.done"));
    let present = podman()
        .args(["image", "exists", &image])
        .status()
        .unwrap()
        .success();
    if !(done.exists() && present && export.join("manifest.json").exists()) {
        let started = Instant::now();
        let mut command = xtask();
        command
            .args(["image", "build", "--platform", platform, "--tag"])
            .arg(format!("localhost/xtask-test/app:{key}"))
            .env("CARGO_TARGET_DIR", &dir);
        for arg in &args {
            command.args(["--build-arg", arg]);
        }
        let output = command.output().unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::write(&log_path, &log).unwrap();
        assert!(
            output.status.success(),
            "image build {platform} failed ({}); log in {}:\n{}",
            output.status,
            log_path.display(),
            &log[log.len().saturating_sub(4000)..]
        );
        eprintln!(
            "built {platform} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        std::fs::write(&done, "").unwrap();
        forget_older_builds(arch, &key);
    }
    Built {
        image,
        export,
        log: std::fs::read_to_string(&log_path).unwrap_or_default(),
    }
}

/// Drops the images and exports of earlier keys for `arch` (every commit makes a new key), so repeated runs do not
/// pile them up; their layers stay in podman's cache until it is pruned.
fn forget_older_builds(arch: &str, key: &str) {
    let current = format!("localhost/xtask-test/app:{key}-{arch}");
    let listed = podman()
        .args([
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "localhost/xtask-test/app",
        ])
        .output()
        .unwrap();
    for image in String::from_utf8_lossy(&listed.stdout).lines() {
        if image.ends_with(&format!("-{arch}")) && image != current {
            let _ = podman().args(["rmi", image]).output();
        }
    }
    for entry in std::fs::read_dir(target_dir().join("tests/build"))
        .unwrap()
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() && entry.file_name() != key {
            let _ = std::fs::remove_dir_all(path.join("image").join(format!("linux-{arch}")));
            let _ = std::fs::remove_file(path.join(format!("{arch}.done")));
        }
    }
}

/// A container removed when dropped.
struct Container(String);

impl Container {
    fn start(image: &str, port: u16) -> Container {
        let id = stdout(podman().args([
            "run",
            "--detach",
            "--network=host",
            // No systemd timer here; the test runs the healthcheck itself.
            "--health-interval=disable",
            "--env",
            &format!("MCP_PORT={port}"),
            image,
        ]));
        Container(id)
    }

    fn logs(&self) -> String {
        let output = podman().args(["logs", &self.0]).output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman()
            .args(["rm", "--force", "--time", "1", &self.0])
            .output();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// GET /healthz until it answers (qemu makes the arm64 start slow), then its status and JSON body.
fn wait_healthy(container: &Container, port: u16, within: Duration) -> (u16, Value) {
    let started = Instant::now();
    loop {
        match agent()
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .call()
        {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.into_body().read_to_string().unwrap();
                return (
                    status,
                    serde_json::from_str(&body).unwrap_or(Value::String(body)),
                );
            }
            Err(err) if started.elapsed() > within => {
                panic!(
                    "no answer on /healthz within {within:?}: {err}\n{}",
                    container.logs()
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

fn image_config(image: &str) -> Value {
    let text = stdout(podman().args(["image", "inspect", image]));
    let list: Value = serde_json::from_str(&text).unwrap();
    list[0].clone()
}

/// The image's /app, copied out of a created (never started) container.
fn binary_of(image: &str) -> Vec<u8> {
    let id = stdout(podman().args(["create", image]));
    let container = Container(id);
    let dest = support::registry::temp_dir("build-binary");
    let path = dest.0.join("app");
    run(podman().args([
        "cp",
        &format!("{}:/app", container.0),
        path.to_str().unwrap(),
    ]));
    std::fs::read(path).unwrap()
}

/// (e_machine, has PT_INTERP) of a 64-bit little-endian ELF file.
fn elf_facts(bytes: &[u8]) -> (u16, bool) {
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(bytes[4], 2, "not a 64-bit ELF");
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let machine = u16_at(18);
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(54) as usize, u16_at(56) as usize);
    let interp = (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) == 3
    });
    (machine, interp)
}

#[test]
#[ignore = "builds linux/amd64 with podman: needs the test bench (`cargo xtask ci --setup-only`); run by `cargo xtask ci`"]
fn amd64_container_answers_healthz_and_a_tool_call() {
    let built = shared_build("linux/amd64");
    let port = free_port();
    let container = Container::start(&built.image, port);
    let (status, health) = wait_healthy(&container, port, Duration::from_secs(30));
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["server"]["name"], "mcp-taipei-metro-month-price");

    let call = serde_json::json!({
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "calculate_fare", "arguments": {
            "startDate": "2025-10-01", "oneWayFare": 40, "tripsPerDay": 2, "customWorkingDays": 15
        }}
    });
    let response = agent()
        .post(format!("http://127.0.0.1:{port}/mcp"))
        .header("Accept", "application/json, text/event-stream")
        .header("Content-Type", "application/json")
        .send(call.to_string())
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value =
        serde_json::from_str(&response.into_body().read_to_string().unwrap()).unwrap();
    assert_eq!(body["id"], 7, "{body}");
    assert_ne!(body["result"]["isError"], true, "{body}");
    let text = body["result"]["content"][0]["text"].as_str().unwrap();
    let result: Value = serde_json::from_str(text).unwrap();
    // 2025-10-01, fare 40, 15 custom working days: NT$1080, use regular fares, save NT$120 (app-spec).
    assert_eq!(result["recommendation"], "USE_REGULAR", "{result}");
    assert_eq!(result["regularCost"].as_f64(), Some(1080.0), "{result}");

    // The image's HEALTHCHECK runs the binary's healthcheck subcommand inside the container.
    run(podman().args(["healthcheck", "run", &container.0]));
}

#[test]
#[ignore = "builds linux/arm64 with podman and runs it under qemu: needs the test bench; run by `cargo xtask ci`"]
fn arm64_image_is_a_static_aarch64_binary_that_runs_under_qemu() {
    let built = shared_build("linux/arm64");
    let config = image_config(&built.image);
    assert_eq!(config["Architecture"], "arm64");
    assert_eq!(config["Os"], "linux");
    let (machine, interp) = elf_facts(&binary_of(&built.image));
    assert_eq!(machine, EM_AARCH64, "/app is not an aarch64 binary");
    assert!(
        !interp,
        "/app asks for a dynamic loader: not statically linked"
    );

    let port = free_port();
    let container = Container::start(&built.image, port);
    let (status, health) = wait_healthy(&container, port, Duration::from_secs(120));
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "healthy", "{health}");
}

/// The export holds a v2s2 manifest whose blobs are all there with the right digests and sizes; the config says
/// the platform and carries the healthcheck, user, port, entrypoint and labels.
fn check_export(built: &Built, arch: &str, machine: u16) {
    let manifest_bytes = std::fs::read(built.export.join("manifest.json")).unwrap();
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert!(!layers.is_empty());
    let mut total = 0;
    for blob in std::iter::once(&manifest["config"]).chain(layers) {
        let digest = blob["digest"].as_str().unwrap();
        let bytes = std::fs::read(built.export.join(digest.strip_prefix("sha256:").unwrap()))
            .unwrap_or_else(|err| panic!("blob {digest} missing from the export: {err}"));
        assert_eq!(
            sha256(&bytes),
            digest,
            "blob content does not match its digest"
        );
        assert_eq!(blob["size"].as_u64(), Some(bytes.len() as u64), "{digest}");
        total += bytes.len();
    }
    for layer in layers {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
    }
    assert!(
        total < 15_000_000,
        "the {arch} image is {total} bytes compressed (limit 15 MB)"
    );
    // The build's summary printed the same digest the push stage will use.
    assert!(
        built.log.contains(&sha256(&manifest_bytes)),
        "{}",
        built.log
    );

    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config: Value = serde_json::from_slice(
        &std::fs::read(
            built
                .export
                .join(config_digest.strip_prefix("sha256:").unwrap()),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(config["architecture"], arch);
    assert_eq!(config["os"], "linux");
    let c = &config["config"];
    assert_eq!(
        c["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "/app", "healthcheck"]),
        "{c}"
    );
    assert_eq!(c["User"], "65532:65532");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/app"]));
    assert!(c["ExposedPorts"]["3000/tcp"].is_object(), "{c}");
    let labels = &c["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.revision"],
        image_commit().0.as_str()
    );
    // The image's time is the created label's; the steps the build wrote keep its one fixed time, whatever the
    // commit; no build-time id is left.
    assert_eq!(
        config["created"],
        labels["org.opencontainers.image.created"]
    );
    assert_eq!(
        config["history"].as_array().unwrap().last().unwrap()["created"],
        "1970-01-01T00:00:00Z",
        "{config}"
    );
    for id in ["container", "parent"] {
        assert!(config.get(id).is_none(), "{id} in {config}");
    }
    assert_eq!(c["Hostname"], "", "{c}");
    assert_eq!(config["container_config"]["Hostname"], "", "{config}");
    for step in config["history"].as_array().unwrap() {
        let comment = step["comment"].as_str().unwrap_or_default();
        assert!(!comment.starts_with("FROM "), "{step}");
    }
    assert_eq!(
        labels["org.opencontainers.image.title"],
        "mcp-taipei-metro-month-price"
    );
    assert_eq!(labels["org.opencontainers.image.licenses"], "MIT");
    for key in ["version", "source", "created"] {
        let value = labels[format!("org.opencontainers.image.{key}")]
            .as_str()
            .unwrap_or("");
        assert!(!value.is_empty(), "label {key} missing: {labels}");
    }
    let created = labels["org.opencontainers.image.created"].as_str().unwrap();
    assert!(
        created.len() == 20 && created.ends_with('Z') && created.as_bytes()[10] == b'T',
        "created label {created:?} is not RFC 3339 UTC"
    );

    let (elf_machine, interp) = elf_facts(&binary_of(&built.image));
    assert_eq!(elf_machine, machine);
    assert!(!interp, "the {arch} binary is not statically linked");
}

#[test]
#[ignore = "builds both platforms with podman: needs the test bench; run by `cargo xtask ci`"]
fn exports_are_v2s2_with_matching_blobs_healthcheck_and_labels() {
    check_export(&shared_build("linux/amd64"), "amd64", EM_X86_64);
    check_export(&shared_build("linux/arm64"), "arm64", EM_AARCH64);
}

#[test]
#[ignore = "builds with podman: needs the test bench; run by `cargo xtask ci`"]
fn failing_build_exits_3_and_names_the_platform() {
    let output = xtask()
        .args([
            "image",
            "build",
            "--platform",
            "linux/arm64",
            "--build-arg",
            "RUST_IMAGE=localhost/xtask-test/no-such-builder:none",
            "--build-arg",
            "RUNTIME_IMAGE=scratch",
            "--tag",
            "localhost/xtask-test/failing:t",
        ])
        .env(
            "CARGO_TARGET_DIR",
            support::registry::temp_dir("build-failing").0.as_path(),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("error: build linux/arm64 failed"),
        "{stderr}"
    );
}

/// A copy of the build context (what .containerignore lets through) where a test may change files.
fn copy_context(into: &Path) {
    let root = root();
    for file in [
        "Containerfile",
        ".containerignore",
        "Cargo.toml",
        "Cargo.lock",
        "xtask/Cargo.toml",
    ] {
        let to = into.join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root.join(file), to).unwrap();
    }
    run(Command::new("cp")
        .arg("-a")
        .arg(root.join("src"))
        .arg(into.join("src")));
}

#[test]
#[ignore = "builds linux/amd64 twice with podman: needs the test bench; run by `cargo xtask ci`"]
fn source_only_change_reuses_the_dependency_layer() {
    // The same commands the xtask runs (from its dry run), on a copy whose src/ differs from the checkout's.
    shared_build("linux/amd64");
    let key = content_key(&build_args());
    let mut command = xtask();
    command.args([
        "image",
        "build",
        "--dry-run",
        "--platform",
        "linux/amd64",
        "--tag",
    ]);
    command.arg(format!("localhost/xtask-test/edited:{key}"));
    for arg in build_args() {
        command.args(["--build-arg", &arg]);
    }
    let text = stdout(&mut command);
    let mut argv = shell_words(text.lines().next().unwrap());

    let context = support::registry::temp_dir("build-edited");
    copy_context(&context.0);
    let main = context.0.join("src/main.rs");
    let mut source = std::fs::read_to_string(&main).unwrap();
    source.push_str(&format!(
        "\n// edited by a test: {key} {:?}\n",
        Instant::now()
    ));
    std::fs::write(&main, source).unwrap();
    *argv.last_mut().unwrap() = context.0.display().to_string();
    let file = argv.iter().position(|a| a == "--file").unwrap() + 1;
    argv[file] = context.0.join("Containerfile").display().to_string();

    let started = Instant::now();
    let output = run(podman().args(&argv[1..]));
    let rebuild = started.elapsed();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Each step prints "STEP n/m: <instruction>" and then "--> Using cache <id>" when it was reused.
    let reused = |needle: &str| {
        let at = log
            .find(needle)
            .unwrap_or_else(|| panic!("no step {needle:?} in:\n{log}"));
        let rest = &log[at..];
        let next_step = rest[1..].find("STEP ").map_or(rest.len(), |n| n + 1);
        rest[..next_step].contains("Using cache")
    };
    // Only the dependency step writes the stub src/main.rs.
    assert!(
        reused("' > src/main.rs"),
        "the dependency layer was rebuilt:\n{log}"
    );
    assert!(
        !reused("COPY src src"),
        "the edited sources were not copied:\n{log}"
    );
    eprintln!(
        "rebuild after a source-only change: {:.1} s",
        rebuild.as_secs_f64()
    );
    let image = format!("localhost/xtask-test/edited:{key}-amd64");
    let _ = podman().args(["rmi", &image]).output();
}

// ---- rootless ----

#[test]
#[ignore = "creates a user and builds with rootless podman: needs root and the test bench; run by `cargo xtask ci`"]
fn amd64_builds_as_an_unprivileged_user_with_rootless_podman() {
    if !rootless::is_root() {
        // Not root: every build of this suite already ran rootless; prove it.
        let rootless = stdout(podman().args(["info", "--format", "{{.Host.Security.Rootless}}"]));
        assert_eq!(rootless, "true");
        shared_build("linux/amd64");
        return;
    }
    let user = Rootless::prepare();
    let checkout = user.clone_checkout("src");
    user.sync_image(&rust_builder());

    let mut args = user.xtask_words(&user.share.join("target"));
    args.extend(
        [
            "image",
            "build",
            "--platform",
            "linux/amd64",
            "--tag",
            "localhost/xtask-test/rootless:t",
        ]
        .map(str::to_owned),
    );
    for arg in build_args() {
        args.extend(["--build-arg".to_owned(), arg]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let output = user.command(&args).current_dir(&checkout).output().unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "rootless build failed:\n{}",
        &log[log.len().saturating_sub(4000)..]
    );
    eprintln!(
        "rootless amd64 build: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let info = user
        .command(&[
            "podman",
            "info",
            "--format",
            "{{.Host.Security.Rootless}} {{.Store.GraphDriverName}}",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&info.stdout).trim(), "true overlay");
    let export = user.share.join("target/image/linux-amd64");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(export.join("manifest.json")).unwrap()).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config: Value = serde_json::from_slice(
        &std::fs::read(export.join(config_digest.strip_prefix("sha256:").unwrap())).unwrap(),
    )
    .unwrap();
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.revision"],
        image_commit().0.as_str()
    );
    let _ = user
        .command(&["podman", "rmi", "localhost/xtask-test/rootless:t-amd64"])
        .output();
}

#[test]
fn dry_run_lines_split_back_into_argv() {
    let cases: [(&str, &[&str]); 3] = [
        (
            "podman build --network=host /src",
            &["podman", "build", "--network=host", "/src"],
        ),
        (
            r"--label 'k=v w' 'it'\''s' ''",
            &["--label", "k=v w", "it's", ""],
        ),
        ("a  b", &["a", "b"]),
    ];
    for (line, want) in cases {
        assert_eq!(shell_words(line), want, "{line}");
    }
}

/// The labels are decided once, by `image meta`, and the built image carries exactly those: for a push to main,
/// a version tag and a manual run, as the workflow hands them over (`--labels "$LABELS"`).
#[test]
#[ignore = "builds with podman: needs the test bench; run by `cargo xtask ci`"]
fn the_image_carries_exactly_the_labels_meta_decided() {
    let work = crate::support::registry::temp_dir("labels");
    let sha = git_head();
    let _lock = support::build_lock("amd64");
    let events: [(&str, &str, &[&str], &str); 3] = [
        ("push", "refs/heads/main", &[], "latest"),
        ("push", "refs/tags/v0.9.1", &[], "0.9.1"),
        (
            "workflow_dispatch",
            "refs/heads/main",
            &["--tag-name", "try-labels"],
            "try-labels",
        ),
    ];
    for (event, git_ref, extra, version) in events {
        let meta = stdout(
            xtask()
                .current_dir(root())
                .args(["image", "meta", "--event", event, "--ref", git_ref, "--sha"])
                .arg(&sha)
                .args(["--skip-push", "--json"])
                .args(extra),
        );
        let meta: Value = serde_json::from_str(&meta).unwrap();
        let labels = &meta["labels"];
        assert_eq!(
            labels["org.opencontainers.image.version"], version,
            "{event} {git_ref}"
        );
        // The image's commit and time, whichever commit is published: a docs-only HEAD publishes its parent's.
        let (revision, time) = image_commit();
        assert_eq!(
            labels["org.opencontainers.image.revision"],
            revision.as_str()
        );
        assert_eq!(
            labels["org.opencontainers.image.created"],
            stdout(Command::new("date").args([
                "-u",
                "-d",
                &format!("@{time}"),
                "+%Y-%m-%dT%H:%M:%SZ"
            ]))
            .as_str()
        );

        let mut build = xtask();
        build
            .current_dir(root())
            .env("CARGO_TARGET_DIR", work.path())
            .args(["image", "build", "--platform", "linux/amd64"])
            .args(["--tag", "localhost/xtask-test/labels"])
            .args(["--labels", &labels.to_string()]);
        for arg in build_args() {
            build.args(["--build-arg", &arg]);
        }
        run(&mut build);
        let export = format!("dir:{}", work.path().join("image/linux-amd64").display());
        let config: Value = serde_json::from_str(&stdout(
            Command::new("skopeo").args(["inspect", "--config", &export]),
        ))
        .unwrap();
        assert_eq!(
            &config["config"]["Labels"], labels,
            "{event} {git_ref}: the built image's labels are meta's"
        );
    }
}
