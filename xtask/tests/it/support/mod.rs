//! The harness every test module shares: the checkout's paths, the test bench's variables (`target/ci/env`),
//! reading .github/workflows/build-images.yml and splitting its one-line `run:` commands into argv.
//!
//! - `registry`: real distribution registries in each auth mode, a token server, synthetic image exports and running
//!   the xtask binary (its API is documented at the top of support/registry.rs).
//! - `fault_proxy`: the fault-injecting proxy put between the xtask and a registry.
//! - `rootless`: an unprivileged user with rootless podman, for the builds that run as one.
//! - `podman5`: Debian trixie's podman 5 run as a podman in podman, for the builds under a newer podman.
//! - `simulate`: runs the workflow's jobs locally the way GitHub would.

pub mod fault_proxy;
pub mod podman5;
pub mod registry;
pub mod rootless;
pub mod simulate;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_norway::Value;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The cargo target directory of this test build (CARGO_TARGET_DIR or target/).
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Holds the lock `build` builds `arch` (amd64, arm64) under, until dropped. Tests that build the app take it too,
/// so tests running side by side (threads or processes) never build the same image at once (the second one then
/// finds podman's layer cache warm) nor retag the default local image while another test uses it.
pub fn build_lock(arch: &str) -> File {
    let dir = target_dir().join("tests/build");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = File::create(dir.join(format!("{arch}.lock"))).unwrap();
    lock.lock().unwrap();
    lock
}

/// [`build_lock`] of both platforms, amd64 first.
pub fn build_locks() -> [File; 2] {
    [build_lock("amd64"), build_lock("arm64")]
}

/// The variables of the test bench a test may take from its own environment instead of `target/ci/env`.
const CI_ENV_KEYS: [&str; 7] = [
    "CONTAINERS_CONF",
    "XTASK_RUST_BUILDER",
    "XTASK_BUSYBOX_AMD64",
    "XTASK_BUSYBOX_ARM64",
    "XTASK_TEST_BUILD_ARGS",
    "XTASK_SBOM_PYTHON",
    "XTASK_PODMAN5",
];

/// The test bench's variables: `<target>/ci/env` as `cargo xtask ci` writes it (`KEY=VALUE` lines, values that need
/// it single-quoted for `set -a; . target/ci/env`), overlaid by the process environment for the bench's keys.
pub fn ci_env() -> BTreeMap<String, String> {
    let mut vars = std::fs::read_to_string(target_dir().join("ci/env"))
        .map(|text| parse_ci_env(&text))
        .unwrap_or_default();
    for key in CI_ENV_KEYS {
        if let Ok(value) = std::env::var(key) {
            vars.insert(key.to_owned(), value);
        }
    }
    vars
}

/// The build arguments (`KEY=VALUE`) for tests that build the app: XTASK_TEST_BUILD_ARGS, else the local Rust
/// builder on `scratch` (the binary is static, and one base must serve both platforms).
pub fn ci_build_args(vars: &BTreeMap<String, String>) -> Vec<String> {
    if let Some(args) = vars.get("XTASK_TEST_BUILD_ARGS") {
        return args.split_whitespace().map(str::to_owned).collect();
    }
    let builder = vars.get("XTASK_RUST_BUILDER").unwrap_or_else(|| {
        panic!(
            "XTASK_RUST_BUILDER is not set and {} does not name it: run `cargo xtask ci --setup-only` first",
            target_dir().join("ci/env").display()
        )
    });
    vec![
        format!("RUST_IMAGE={builder}"),
        "RUNTIME_IMAGE=scratch".to_owned(),
    ]
}

/// Reads the text of `target/ci/env`: the inverse of the xtask's `BenchEnv::render`.
pub fn parse_ci_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| {
            let value = value.trim();
            let value = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .map_or_else(|| value.to_owned(), |v| v.replace(r"'\''", "'"));
            (key.trim().to_owned(), value)
        })
        .collect()
}

/// root's podman with the bench's configuration (its CONTAINERS_CONF, where podman needed one).
pub fn podman() -> Command {
    let mut command = Command::new("podman");
    command.envs(ci_env().into_iter().filter(|(k, _)| k == "CONTAINERS_CONF"));
    command
}

pub fn workflow_path() -> PathBuf {
    root().join(".github/workflows/build-images.yml")
}

pub fn workflow_text() -> String {
    std::fs::read_to_string(workflow_path()).unwrap()
}

pub fn workflow() -> Value {
    serde_norway::from_str(&workflow_text()).unwrap()
}

/// Splits a one-line command into words the way bash would for the simple forms used here: words, "$VAR" and 'x'.
/// Anything that needs a real shell (pipes, lists, substitutions, redirections) is refused: logic belongs in the xtask.
pub fn words(run: &str, env: &BTreeMap<String, String>) -> Vec<String> {
    let line = run.trim();
    assert!(
        !line.contains(['\n', '|', ';', '&', '<', '>', '`', '(', ')', '*', '?', '\\']),
        "not a single plain command: {run}"
    );
    let var = |name: &str| -> String {
        env.get(name)
            .cloned()
            .unwrap_or_else(|| panic!("${name} is not set in the step's env: {run}"))
    };
    let mut out = Vec::new();
    for word in line.split_whitespace() {
        let word = if let Some(name) = word.strip_prefix("\"$").and_then(|w| w.strip_suffix('"')) {
            var(name)
        } else if let Some(inner) = word.strip_prefix('\'').and_then(|w| w.strip_suffix('\'')) {
            inner.to_owned()
        } else {
            assert!(
                !word.contains(['$', '"', '\'']),
                "quote variables as \"$NAME\": {run}"
            );
            word.to_owned()
        };
        out.push(word);
    }
    out
}

/// Reads a GITHUB_OUTPUT file the way the runner does: `name=value` lines and `name<<DELIMITER` blocks.
pub fn parse_outputs(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        if let Some((name, delimiter)) = line.split_once("<<") {
            let mut value = Vec::new();
            for line in lines.by_ref() {
                if line == delimiter {
                    break;
                }
                value.push(line);
            }
            out.insert(name.to_owned(), value.join("\n"));
        } else {
            let (name, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("bad GITHUB_OUTPUT line {line:?}"));
            out.insert(name.to_owned(), value.to_owned());
        }
    }
    out
}

/// Runs `command` to its end; panics with its output unless it succeeded.
pub fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("start {command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A clone of this checkout's HEAD at `to` (no hard links: a test may change or chmod its files).
pub fn clone_checkout(to: &Path) {
    run(Command::new("git")
        .args(["clone", "-q", "--no-hardlinks"])
        .arg(root())
        .arg(to));
}

/// [`run`], and its standard output, trimmed.
pub fn stdout(command: &mut Command) -> String {
    String::from_utf8(run(command).stdout)
        .unwrap()
        .trim()
        .to_owned()
}
