//! `cargo xtask ci`: the whole test bench in one command, on a fresh Debian machine or a developer's.
//!
//! Phases: setup (packages, arm64 binfmt, a podman configuration that can start containers here, the local base
//! images), then `cargo fmt --check`, the workflow lint (zizmor, actionlint, schema), clippy with warnings denied,
//! and every test; a summary gives each phase's time. Setup leaves `target/ci/env` (KEY=VALUE lines) for the tests, so
//! `cargo test` after `cargo xtask ci --setup-only` finds the same images and configuration. The tests that need
//! the bench (podman, base images) are `#[ignore]`d so a bare `cargo test` stays quick; ci runs them all.

pub mod base_images;
mod clients;
mod setup;
mod venv;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use xshell::{cmd, Shell};

use crate::flags;

pub use setup::BenchEnv;

/// Where setup leaves its files: `<target dir>/ci` (the target directory as the session resolves it).
pub fn ci_dir(root: &Path) -> PathBuf {
    crate::session::target_dir(root, std::env::var_os("CARGO_TARGET_DIR").as_deref()).join("ci")
}

struct Phase {
    name: &'static str,
    time: Duration,
    error: Option<String>,
}

impl flags::Ci {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let started = Instant::now();
        let root = sh.current_dir();
        let dir = ci_dir(&root);
        let mut phases = Vec::new();

        let env = if self.no_setup {
            BenchEnv::read(&dir).with_context(|| {
                format!(
                    "read {} left by an earlier setup; run `cargo xtask ci` without --no-setup once",
                    dir.join("env").display()
                )
            })?
        } else {
            let phase_start = Instant::now();
            let env = setup::run(sh, &dir);
            phases.push(Phase {
                name: "setup",
                time: phase_start.elapsed(),
                error: env.as_ref().err().map(|err| format!("{err:#}")),
            });
            match env {
                Ok(env) => env,
                Err(err) => {
                    print_summary(&phases, started.elapsed());
                    return Err(err.context("setup of the test bench"));
                }
            }
        };
        for (key, value) in &env.vars {
            sh.set_var(key, value);
        }
        if self.setup_only {
            print_summary(&phases, started.elapsed());
            println!(
                "\nThe test bench is ready. The tests read {} themselves; to use podman by hand with the same \
                 settings: `set -a; . {}; set +a`",
                dir.join("env").display(),
                dir.join("env").display()
            );
            return Ok(());
        }

        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let nextest = cmd!(sh, "{cargo} nextest --version")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .is_ok();
        let test = if nextest {
            cmd!(
                sh,
                "{cargo} nextest run --workspace --features xtask/bench --no-fail-fast --run-ignored all"
            )
        } else {
            cmd!(
                sh,
                "{cargo} test --workspace --features xtask/bench --no-fail-fast -- --include-ignored"
            )
        };
        type Check<'a> = Box<dyn FnOnce() -> anyhow::Result<()> + 'a>;
        let checks: [(&'static str, Check); 4] = [
            (
                "fmt",
                Box::new(|| Ok(cmd!(sh, "{cargo} fmt --all --check").run()?)),
            ),
            ("lint", Box::new(|| crate::ci_lint::lint_workflow(sh))),
            (
                "clippy",
                Box::new(|| {
                    // Once as the workflow jobs build it, once with the bench.
                    cmd!(
                        sh,
                        "{cargo} clippy --workspace --all-targets -- -D warnings"
                    )
                    .run()?;
                    Ok(cmd!(
                        sh,
                        "{cargo} clippy -p xtask --all-targets --features bench -- -D warnings"
                    )
                    .run()?)
                }),
            ),
            ("test", Box::new(|| Ok(test.run()?))),
        ];
        for (name, check) in checks {
            println!("\n==> {name}");
            let phase_start = Instant::now();
            let result = check();
            phases.push(Phase {
                name,
                time: phase_start.elapsed(),
                error: result.err().map(|err| format!("{err:#}")),
            });
        }

        print_summary(&phases, started.elapsed());
        let failed: Vec<&str> = phases
            .iter()
            .filter(|p| p.error.is_some())
            .map(|p| p.name)
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            anyhow::bail!(
                "ci failed in: {}; see the output of each above",
                failed.join(", ")
            )
        }
    }
}

fn print_summary(phases: &[Phase], total: Duration) {
    println!("\nphase     time      result");
    for phase in phases {
        println!(
            "{:<9} {:>7.1}s  {}",
            phase.name,
            phase.time.as_secs_f64(),
            if phase.error.is_some() {
                "FAILED"
            } else {
                "ok"
            }
        );
    }
    println!("{:<9} {:>7.1}s", "total", total.as_secs_f64());
}
