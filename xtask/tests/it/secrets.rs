//! A registry password that is a unique marker string, through every way the pipeline takes credentials
//! (environment, auth file, credential helper) and every stage that uses them, in runs that succeed and runs that
//! fail on authentication: the marker (and the base64 `user:password` it travels as) never shows up in any
//! process's command line (sampled from /proc/*/cmdline all along), in stdout or stderr, in GITHUB_OUTPUT or
//! GITHUB_STEP_SUMMARY, or in an error message.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;

use crate::support::registry::{self as harness, Auth, Export, Run, TestRegistry, Xtask};

const USER: &str = "ci-bot";
const REPO: &str = "team/app";

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Reads every process's command line, over and over, until stopped; keeps the ones that hold a needle and, to
/// show the sampling saw the runs at all, the command lines of the xtask and its children.
struct CmdlineSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Sampled>,
}

#[derive(Debug, Default)]
struct Sampled {
    passes: usize,
    /// Command lines of the runs under test and of the credential helper they ran.
    seen: BTreeSet<String>,
    /// Command lines that held a needle.
    leaks: BTreeSet<String>,
}

impl CmdlineSampler {
    /// `mine`: a string in the command lines of the runs under test (their work directory), to tell them apart
    /// from whatever else runs on the machine.
    fn start(needles: Vec<String>, mine: String) -> CmdlineSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut sampled = Sampled::default();
                while !stop.load(Ordering::Relaxed) {
                    sampled.passes += 1;
                    let Ok(entries) = std::fs::read_dir("/proc") else {
                        continue;
                    };
                    for entry in entries.flatten() {
                        let name = entry.file_name();
                        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                            continue;
                        }
                        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
                            continue;
                        };
                        let line = String::from_utf8_lossy(&raw).replace('\0', " ");
                        if needles.iter().any(|n| line.contains(n.as_str())) {
                            sampled.leaks.insert(line.clone());
                        }
                        if line.contains(mine.as_str())
                            || line.contains("docker-credential-xtasktest")
                        {
                            sampled.seen.insert(line);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                sampled
            })
        };
        CmdlineSampler { stop, handle }
    }

    fn finish(self) -> Sampled {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// Everything a run showed: stdout, stderr, and the GitHub files it wrote.
struct Shown {
    label: String,
    run: Run,
    files: String,
}

/// A run in the GitHub Actions environment (annotations on, GITHUB_OUTPUT and GITHUB_STEP_SUMMARY files).
fn in_actions(xtask: Xtask, dir: &Path, label: &str) -> Shown {
    let slug: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let output = dir.join(format!("{slug}.output"));
    let summary = dir.join(format!("{slug}.summary"));
    let run = xtask
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", &output)
        .env("GITHUB_STEP_SUMMARY", &summary)
        .run();
    let files = format!(
        "{}{}",
        std::fs::read_to_string(&output).unwrap_or_default(),
        std::fs::read_to_string(&summary).unwrap_or_default()
    );
    Shown {
        label: label.to_owned(),
        run,
        files,
    }
}

fn push(work: &Path, platform: &str, target: &str) -> Xtask {
    Xtask::new()
        .args(["image", "push", "--platform", platform, "--digest-dir"])
        .args([work.join("digests")])
        .args(["--to", target])
        .target_dir(work)
}

fn manifest(work: &Path, target: &str) -> Xtask {
    Xtask::new()
        .args(["image", "manifest", "--tag", "latest", "--platforms"])
        .args(["linux/amd64,linux/arm64", "--digest-dir"])
        .args([work.join("digests")])
        .args(["--to", target])
        .target_dir(work)
}

fn with_env_password(xtask: Xtask, password: &str) -> Xtask {
    xtask
        .env("REGISTRY_USERNAME", USER)
        .env("REGISTRY_PASSWORD", password)
}

fn write_exports(work: &Path) {
    Export::write(&work.join("image/linux-amd64"), "amd64", &[2_000]);
    Export::write(&work.join("image/linux-arm64"), "arm64", &[2_100]);
}

/// A credential helper on PATH that answers `password` for any server (what `docker-credential-pass` and friends
/// do): a real program the xtask has to run, so its argv is sampled too.
fn credential_helper(dir: &Path, password: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-xtasktest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\n\
             # Long enough for the sampler to see this process, short enough not to slow the test.\nsleep 0.2\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{password}\"}}' \"$server\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn a_marker_password_never_leaks() {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let marker = format!("Mrk{}q{nanos}Zx", std::process::id());
    let needles = vec![marker.clone(), b64(&format!("{USER}:{marker}"))];
    let work = harness::temp_dir("secrets");
    write_exports(work.path());

    // The marker is the right password of `token` and `basic`, and a wrong one for `token_other` and
    // `basic_other`.
    let token = TestRegistry::start(Auth::token(USER, &marker));
    let basic = TestRegistry::start(Auth::basic(USER, &marker));
    let token_other = TestRegistry::start(Auth::token(USER, "the-real-password"));
    let basic_other = TestRegistry::start(Auth::basic(USER, "the-real-password"));

    let sampler = CmdlineSampler::start(needles.clone(), work.path().display().to_string());
    let mut shown: Vec<Shown> = Vec::new();
    let dir = work.path();

    // 1. The CI path with the password in the environment: meta, both pushes, manifest (with tracing on).
    for registry in [&token, &basic] {
        let target = registry.reference(REPO);
        let meta = Xtask::new()
            .args([
                "image",
                "meta",
                "--event",
                "push",
                "--ref",
                "refs/heads/main",
            ])
            .args([
                "--sha",
                "0123456789abcdef0123456789abcdef01234567",
                "--to",
                &target,
            ])
            .args(["--json"]);
        shown.push(in_actions(
            with_env_password(meta, &marker),
            dir,
            &format!("meta {target}"),
        ));
        for platform in ["linux/amd64", "linux/arm64"] {
            let step = with_env_password(push(dir, platform, &target), &marker)
                .env("XTASK_REGISTRY_TRACE", "1");
            shown.push(in_actions(step, dir, &format!("push {platform} {target}")));
        }
        shown.push(in_actions(
            with_env_password(manifest(dir, &target), &marker).env("XTASK_REGISTRY_TRACE", "1"),
            dir,
            &format!("manifest {target}"),
        ));
        shown.push(in_actions(
            with_env_password(
                Xtask::new().args(["image", "prune", "--yes", "--to", &target]),
                &marker,
            ),
            dir,
            &format!("prune {target}"),
        ));
    }
    for s in &shown {
        assert_eq!(
            s.run.code, 0,
            "{}: {}{}",
            s.label, s.run.stdout, s.run.stderr
        );
    }

    // 2. The marker as a wrong password: push and manifest fail on authentication (exit 4), saying which
    //    credentials were refused.
    let failing_from = shown.len();
    for registry in [&token_other, &basic_other] {
        let target = registry.reference(REPO);
        shown.push(in_actions(
            with_env_password(push(dir, "linux/amd64", &target), &marker),
            dir,
            &format!("refused push {target}"),
        ));
        shown.push(in_actions(
            with_env_password(manifest(dir, &target), &marker),
            dir,
            &format!("refused manifest {target}"),
        ));
    }
    for s in &shown[failing_from..] {
        assert_eq!(
            s.run.code, 4,
            "{}: {}{}",
            s.label, s.run.stdout, s.run.stderr
        );
        assert!(
            s.run.stderr.contains("REGISTRY_USERNAME") || s.run.stderr.contains("rejected"),
            "{}: the error names the credentials to check: {}",
            s.label,
            s.run.stderr
        );
    }

    // 3. From an auth file (podman's auth.json, base64 of user:password), right and wrong.
    let auth_file = dir.join("auth.json");
    let entry = serde_json::json!({"auth": b64(&format!("{USER}:{marker}"))});
    std::fs::write(
        &auth_file,
        serde_json::json!({"auths": {
            token.address.clone(): entry.clone(),
            token_other.address.clone(): entry,
        }})
        .to_string(),
    )
    .unwrap();
    let from_file = shown.len();
    for (registry, code) in [(&token, 0), (&token_other, 4)] {
        let step = push(dir, "linux/amd64", &registry.reference("team/from-file"))
            .env("REGISTRY_AUTH_FILE", &auth_file);
        let s = in_actions(step, dir, &format!("auth file push {}", registry.address));
        assert_eq!(
            s.run.code, code,
            "{}: {}{}",
            s.label, s.run.stdout, s.run.stderr
        );
        shown.push(s);
    }
    assert!(shown[from_file]
        .run
        .stdout
        .contains("credentials from auth file"));

    // 4. An auth file that is wrong in shape, with the credentials where an object should be: the error names
    //    the file and the problem, never the value it could not use.
    let misshapen = dir.join("misshapen.json");
    std::fs::write(
        &misshapen,
        serde_json::json!({"auths": {token.address.clone(): b64(&format!("{USER}:{marker}"))}})
            .to_string(),
    )
    .unwrap();
    let s = in_actions(
        push(dir, "linux/amd64", &token.reference("team/misshapen"))
            .env("REGISTRY_AUTH_FILE", &misshapen),
        dir,
        "misshapen auth file",
    );
    assert_eq!(s.run.code, 2, "{}{}", s.run.stdout, s.run.stderr);
    assert!(s.run.stderr.contains("misshapen.json"), "{}", s.run.stderr);
    shown.push(s);

    // 5. From a credential helper (`credHelpers` in docker's config.json), right and wrong.
    let bin = credential_helper(dir, &marker);
    let docker_config = dir.join("docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    std::fs::write(
        docker_config.join("config.json"),
        serde_json::json!({"credHelpers": {
            token.address.clone(): "xtasktest",
            token_other.address.clone(): "xtasktest",
        }})
        .to_string(),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let from_helper = shown.len();
    for (registry, code) in [(&token, 0), (&token_other, 4)] {
        let step = push(dir, "linux/arm64", &registry.reference("team/from-helper"))
            .env("DOCKER_CONFIG", &docker_config)
            .env("PATH", &path);
        let s = in_actions(step, dir, &format!("helper push {}", registry.address));
        assert_eq!(
            s.run.code, code,
            "{}: {}{}",
            s.label, s.run.stdout, s.run.stderr
        );
        shown.push(s);
    }
    assert!(shown[from_helper]
        .run
        .stdout
        .contains("credential helper docker-credential-xtasktest"));

    // 6. A dry-run release prints every command it would run, with the credentials in the environment.
    shown.push(in_actions(
        with_env_password(
            Xtask::new().args([
                "image",
                "release",
                "--dry-run",
                "--to",
                &token.reference(REPO),
            ]),
            &marker,
        ),
        dir,
        "release --dry-run",
    ));

    let sampled = sampler.finish();

    // The marker really was the password: the token servers saw the user, granted with the right one and refused
    // with the wrong one.
    let granted = |registry: &TestRegistry| {
        registry
            .token_server()
            .unwrap()
            .requests()
            .iter()
            .filter(|r| r.user.as_deref() == Some(USER))
            .map(|r| r.granted)
            .collect::<BTreeSet<bool>>()
    };
    assert_eq!(granted(&token), BTreeSet::from([true]));
    assert_eq!(granted(&token_other), BTreeSet::from([false]));

    let mut leaks = Vec::new();
    for s in &shown {
        for (what, text) in [
            ("stdout", &s.run.stdout),
            ("stderr", &s.run.stderr),
            ("GITHUB_OUTPUT/GITHUB_STEP_SUMMARY", &s.files),
        ] {
            for needle in &needles {
                if text.contains(needle.as_str()) {
                    leaks.push(format!("{} {what}:\n{text}", s.label));
                }
            }
        }
    }
    for line in &sampled.leaks {
        leaks.push(format!("a process's command line: {line}"));
    }
    eprintln!(
        "{} runs, {} passes over /proc/*/cmdline, {} distinct command lines of xtask runs and their children seen",
        shown.len(),
        sampled.passes,
        sampled.seen.len()
    );
    assert!(
        leaks.is_empty(),
        "the marker leaked:\n{}",
        leaks.join("\n---\n")
    );
    // The sampling saw the runs and the helper, or it proves nothing.
    assert!(
        sampled.seen.iter().any(|l| l.contains("xtask image push")),
        "{:?}",
        sampled.seen
    );
    assert!(
        sampled
            .seen
            .iter()
            .any(|l| l.contains("docker-credential-xtasktest get")),
        "{:?}",
        sampled.seen
    );
}
