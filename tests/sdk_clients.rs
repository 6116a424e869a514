//! The official MCP SDKs against the real binary: the Python SDK (`mcp` from PyPI) and the TypeScript SDK
//! (`@modelcontextprotocol/sdk` from npm) run their client scripts under tests/clients/ (initialize, ping,
//! tools/list with output schemas, both tools with structured content validated against them, an unknown tool,
//! bad arguments).
//!
//! The clients are installed by `cargo xtask ci` (also `--setup-only`): the Python SDK in a virtualenv at
//! `<target>/ci/clients/venv`, the TypeScript SDK by `npm ci` in tests/clients/node. A bare `cargo test` ignores
//! these tests; `cargo xtask ci` runs them, and a missing client fails them with the command that installs it.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use support::Server;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// The checks each script must report as passed (by name), so that a script cut short cannot pass.
const REQUIRED_CHECKS: [&str; 12] = [
    "initialize",
    "server info",
    "ping",
    "tools/list",
    "output schema calculate_fare",
    "output schema get_discount_info",
    "calculate_fare structured content validates",
    "calculate_fare 2027-02-01 numbers",
    "calculate_fare into 2028 warns",
    "get_discount_info validates",
    "unknown tool is an error result",
    "bad arguments are an error result",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The cargo target directory of this build (CARGO_TARGET_DIR or target/), where `cargo xtask ci` puts the venv.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

const INSTALL: &str =
    "run `cargo xtask ci --setup-only` (or `cargo xtask ci`) once to install the SDK clients";

/// Runs `program script URL` against a fresh server and checks its report.
fn run_client(label: &str, program: &Path, script: &Path) {
    let server = Server::start();
    let url = format!("http://127.0.0.1:{}/mcp", server.port);
    let mut child = Command::new(program)
        .arg(script)
        .arg(&url)
        .current_dir(script.parent().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{label}: cannot run {}: {e}; {INSTALL}", program.display()));
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > CLIENT_TIMEOUT {
            let _ = child.kill();
            panic!("{label}: the client did not finish within {CLIENT_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{label}: the client failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let passed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ok "))
        .collect();
    for check in REQUIRED_CHECKS {
        assert!(
            passed.contains(&check),
            "{label}: no passed check {check:?}:\n{stdout}"
        );
    }
    let last = stdout.lines().last().unwrap_or("");
    assert!(
        last.ends_with(&format!(": {} checks passed", passed.len())),
        "{label}: last line {last:?}:\n{stdout}"
    );
    println!("{label}: {last}");
}

#[test]
#[ignore = "needs the MCP Python SDK that `cargo xtask ci` installs in <target>/ci/clients/venv; run by `cargo xtask ci`"]
fn python_sdk_client() {
    let python = target_dir().join("ci/clients/venv/bin/python");
    assert!(
        python.exists(),
        "the MCP Python SDK client is not installed ({} is missing): {INSTALL}",
        python.display()
    );
    run_client(
        "Python SDK",
        &python,
        &root().join("tests/clients/python/client.py"),
    );
}

#[test]
#[ignore = "needs the MCP TypeScript SDK that `cargo xtask ci` installs with npm ci in tests/clients/node; run by `cargo xtask ci`"]
fn typescript_sdk_client() {
    let dir = root().join("tests/clients/node");
    let sdk = dir.join("node_modules/@modelcontextprotocol/sdk/package.json");
    assert!(
        sdk.exists(),
        "the MCP TypeScript SDK client is not installed ({} is missing): {INSTALL}",
        sdk.display()
    );
    run_client("TypeScript SDK", Path::new("node"), &dir.join("client.mjs"));
}
