//! The test bench's pinned Python virtualenvs: each made from a requirements.txt of exact pins, with a stamp beside
//! the install recording the pins it was made from, so a second run with the same pins does nothing.

use std::path::{Path, PathBuf};

use anyhow::Context;
use xshell::{cmd, Shell};

/// Installs `requirements` into the virtualenv at `venv` unless its stamp shows them; returns its python. `what`
/// names the install in the messages (`MCP Python SDK`).
pub fn install(
    sh: &Shell,
    what: &str,
    requirements: &Path,
    venv: &Path,
) -> anyhow::Result<PathBuf> {
    let pins = std::fs::read_to_string(requirements)
        .with_context(|| format!("read {}", requirements.display()))?;
    let bin = venv.join("bin");
    let python = bin.join("python");
    let stamp = venv.join("installed-requirements.txt");
    if python.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == pins) {
        println!("python: {what} installed in {}", venv.display());
        return Ok(python);
    }
    if !bin.join("pip").exists() {
        let system = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        cmd!(sh, "{system} -m venv {venv}").run().with_context(|| {
            format!(
                "create the virtualenv {} for the {what} (needs python3 3.10 or later with the venv module: \
                 apt-get install python3-venv)",
                venv.display()
            )
        })?;
    }
    let pip = bin.join("pip");
    cmd!(
        sh,
        "{pip} install --quiet --disable-pip-version-check -r {requirements}"
    )
    .run()
    .with_context(|| {
        format!(
            "install the {what} ({}) into {}",
            requirements.display(),
            venv.display()
        )
    })?;
    std::fs::write(&stamp, pins).with_context(|| format!("write {}", stamp.display()))?;
    println!("python: {what} installed in {} now", venv.display());
    Ok(python)
}
