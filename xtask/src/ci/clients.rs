//! The official MCP SDK clients that the app's `tests/sdk_clients.rs` drives the server with: the Python SDK in a
//! virtualenv at `<target>/ci/clients/venv`, and the TypeScript SDK in `tests/clients/node/node_modules` (`npm ci`).
//! Both are pinned (`tests/clients/python/requirements.txt`, `tests/clients/node/package-lock.json`); a stamp beside
//! each install records the pins it was made from, so a second run with the same pins does nothing.

use std::path::Path;

use anyhow::Context;
use xshell::{cmd, Shell};

/// Installs both clients unless their stamps show the current pins.
pub fn install(sh: &Shell, root: &Path) -> anyhow::Result<()> {
    python(sh, root, &super::ci_dir(root).join("clients"))?;
    node(sh, root)
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

fn python(sh: &Shell, root: &Path, dir: &Path) -> anyhow::Result<()> {
    super::venv::install(
        sh,
        "MCP Python SDK",
        &root.join("tests/clients/python/requirements.txt"),
        &dir.join("venv"),
    )?;
    Ok(())
}

fn node(sh: &Shell, root: &Path) -> anyhow::Result<()> {
    let dir = root.join("tests/clients/node");
    let lock = read(&dir.join("package-lock.json"))?;
    let stamp = dir.join("node_modules/.installed-package-lock.json");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == lock) {
        println!(
            "clients: MCP TypeScript SDK installed in {}",
            dir.join("node_modules").display()
        );
        return Ok(());
    }
    let _in_dir = sh.push_dir(&dir);
    cmd!(sh, "npm --version")
        .quiet()
        .ignore_stdout()
        .run()
        .context(
            "npm is needed for the MCP TypeScript SDK client: install Node.js 18 or later with npm, then run \
             `cargo xtask ci` again",
        )?;
    cmd!(sh, "npm ci --no-audit --no-fund")
        .run()
        .with_context(|| format!("npm ci in {}", dir.display()))?;
    std::fs::write(&stamp, lock).with_context(|| format!("write {}", stamp.display()))?;
    println!(
        "clients: MCP TypeScript SDK installed in {} now",
        dir.join("node_modules").display()
    );
    Ok(())
}
