//! The facts of one `cargo xtask` run, gathered once at the edge and passed down: the shell, the project root and
//! target directory, the image configuration, the GitHub step files, the credential environment, the git facts,
//! and the registry clients (one per host, credentials looked up once). Stages read these; none of them reads the
//! process environment, runs `cargo metadata` or asks git again.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};

use anyhow::Context;
use xshell::{cmd, Shell};

use crate::config::ImageConfig;
use crate::exit;
use crate::github::Github;
use crate::image::containerfile;
use crate::registry::{Env, Options, Registries};

pub struct Session {
    pub sh: Shell,
    /// The workspace root: the build context, and where `cargo xtask` runs its commands.
    pub root: PathBuf,
    /// `$CARGO_TARGET_DIR` (relative to the root) or `<root>/target`.
    pub target_dir: PathBuf,
    pub github: Github,
    pub registries: Registries,
    /// How long after its read-back a publish that moved a tag looks at it once more: longer than a racing release
    /// takes from its last look at the tag to its move, or a racing prune from its last look at the tags to its
    /// DELETE. 1.5 s; `XTASK_SETTLE_MS` for tests that publish many times.
    pub settle: std::time::Duration,
    /// `$SOURCE_DATE_EPOCH` as given.
    source_date_epoch: Option<String>,
    config: OnceCell<ImageConfig>,
    git: OnceCell<Git>,
}

/// What git says about the checkout, read on first use (a `push` of an export needs none of it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Git {
    /// `git rev-parse HEAD`; `None` outside a git checkout.
    pub head: Option<String>,
    /// HEAD's committer time, seconds since the epoch.
    pub commit_time: Option<u64>,
    /// The newest commit up to HEAD that changed what the image is made from ([`Session::image_inputs`]): the
    /// image's revision and time, so that a commit touching none of it (docs only) gives the very same image.
    /// In a shallow clone of depth 1 this is HEAD.
    pub source: Option<Commit>,
    /// The branch checked out (`None`: detached HEAD).
    pub branch: Option<String>,
    /// `git status --porcelain` lines: anything uncommitted, untracked files included.
    pub changes: Vec<String>,
}

/// A commit and its committer time (seconds since the epoch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    pub sha: String,
    pub time: u64,
}

/// The pipeline's own code: it writes the build's argv and rewrites the exported config, so it decides the
/// image's bytes as much as the Containerfile does.
const PIPELINE_SOURCES: &str = "xtask/src";

impl Session {
    /// Reads the process environment once. `root` is the workspace root.
    pub fn new(root: PathBuf) -> anyhow::Result<Session> {
        let sh = Shell::new()?;
        sh.change_dir(&root);
        let target_dir = target_dir(&root, std::env::var_os("CARGO_TARGET_DIR").as_deref());
        Ok(Session {
            sh,
            target_dir,
            root,
            github: Github::from_env(),
            registries: Registries::new(Env::from_process(), Options::from_env(Vec::new())),
            settle: std::time::Duration::from_millis(
                std::env::var("XTASK_SETTLE_MS")
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(1_500),
            ),
            source_date_epoch: std::env::var("SOURCE_DATE_EPOCH")
                .ok()
                .filter(|v| !v.trim().is_empty()),
            config: OnceCell::new(),
            git: OnceCell::new(),
        })
    }

    /// `[package.metadata.image]`, read through `cargo metadata` on first use.
    pub fn config(&self) -> anyhow::Result<&ImageConfig> {
        if let Some(config) = self.config.get() {
            return Ok(config);
        }
        let config = ImageConfig::load(&self.sh)?;
        Ok(self.config.get_or_init(|| config))
    }

    /// The git facts, read on first use.
    pub fn git(&self) -> anyhow::Result<&Git> {
        if let Some(git) = self.git.get() {
            return Ok(git);
        }
        let git = Git::read(&self.sh, &self.image_inputs())?;
        Ok(self.git.get_or_init(|| git))
    }

    /// The paths the image is made from, relative to the root: the Containerfile, what it copies from the build
    /// context, and the pipeline's code. Empty when the Containerfile cannot be read (then HEAD stands for them).
    pub fn image_inputs(&self) -> Vec<String> {
        let Ok(config) = self.config() else {
            return Vec::new();
        };
        let path = config.containerfile.display().to_string();
        match std::fs::read_to_string(self.root.join(&config.containerfile)) {
            Ok(text) => {
                let mut inputs = containerfile::inputs(&path, &text);
                inputs.push(PIPELINE_SOURCES.to_owned());
                inputs
            }
            Err(_) => Vec::new(),
        }
    }

    /// The image's time, seconds since the epoch: `$SOURCE_DATE_EPOCH`, else the time of the commit its inputs
    /// come from ([`Git::source`]), else HEAD's, so the same sources always get the same `created` label and
    /// config time; `None` outside a git checkout.
    pub fn created(&self) -> anyhow::Result<Option<u64>> {
        match &self.source_date_epoch {
            Some(value) => value.trim().parse().map(Some).map_err(|_| {
                exit::invalid(format!(
                    "SOURCE_DATE_EPOCH={value:?} is not whole seconds since 1970-01-01; unset it or fix it"
                ))
            }),
            None => {
                let git = self.git()?;
                Ok(git.source.as_ref().map(|c| c.time).or(git.commit_time))
            }
        }
    }

    /// The commit the image records as its revision: the one its inputs come from, else HEAD.
    pub fn revision(&self) -> anyhow::Result<Option<String>> {
        let git = self.git()?;
        Ok(git
            .source
            .as_ref()
            .map(|c| c.sha.clone())
            .or_else(|| git.head.clone()))
    }

    /// Where `image build` exports `platform` and `image push` reads it.
    pub fn export_dir(&self, platform: crate::oci::Platform) -> PathBuf {
        self.target_dir.join("image").join(platform.dir_name())
    }
}

/// `$CARGO_TARGET_DIR`, made absolute against the root, or `<root>/target`.
pub fn target_dir(root: &Path, cargo_target_dir: Option<&std::ffi::OsStr>) -> PathBuf {
    match cargo_target_dir {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

impl Git {
    fn read(sh: &Shell, inputs: &[String]) -> anyhow::Result<Git> {
        let read = |out: xshell::Result<String>| {
            out.ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        let head = read(
            cmd!(sh, "git rev-parse HEAD")
                .quiet()
                .ignore_stderr()
                .read(),
        );
        if head.is_none() {
            return Ok(Git::default());
        }
        let commit_time = match read(
            cmd!(sh, "git log -1 --format=%ct")
                .quiet()
                .ignore_stderr()
                .read(),
        ) {
            Some(time) => Some(time.parse().map_err(|_| {
                exit::invalid(format!(
                    "git gave a commit time {time:?} that is not a number"
                ))
            })?),
            None => None,
        };
        let branch = read(
            cmd!(sh, "git symbolic-ref --short -q HEAD")
                .quiet()
                .ignore_stderr()
                .read(),
        );
        let status = cmd!(sh, "git status --porcelain")
            .quiet()
            .read()
            .context("run git status")?;
        let format = "--format=%H %ct";
        let source = match inputs.is_empty() {
            true => None,
            false => read(
                cmd!(sh, "git log -1 {format} -- {inputs...}")
                    .quiet()
                    .ignore_stderr()
                    .read(),
            )
            .and_then(|line| parse_commit(&line)),
        };
        Ok(Git {
            head,
            commit_time,
            source,
            branch,
            changes: status
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }
}

/// Ancestry from the checkout's own history, for `latest`'s forward-only rule. Revisions come from registry labels,
/// so only full hexadecimal object names reach git; an answer other than yes or no (a commit the checkout does
/// not have, as in a shallow CI clone) is unknown, and the recorded commit times decide instead.
impl crate::image::manifest::History for Session {
    fn is_ancestor(&self, older: &str, newer: &str) -> Option<bool> {
        let object_name =
            |r: &str| matches!(r.len(), 40 | 64) && r.bytes().all(|b| b.is_ascii_hexdigit());
        if !object_name(older) || !object_name(newer) {
            return None;
        }
        let sh = &self.sh;
        let status = cmd!(sh, "git merge-base --is-ancestor {older} {newer}")
            .quiet()
            .ignore_status()
            .ignore_stderr()
            .output()
            .ok()?
            .status;
        match status.code() {
            Some(0) => Some(true),
            Some(1) => Some(false),
            _ => None,
        }
    }
}

/// `<sha> <committer time>`, as `git log --format='%H %ct'` prints it.
fn parse_commit(line: &str) -> Option<Commit> {
    let (sha, time) = line.trim().split_once(' ')?;
    let hex = sha.len() >= 40 && sha.bytes().all(|b| b.is_ascii_hexdigit());
    Some(Commit {
        sha: sha.to_owned(),
        time: time.parse().ok()?,
    })
    .filter(|_| hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_dirs() {
        let root = Path::new("/src/app");
        let cases = [
            (None, "/src/app/target"),
            (Some(""), "/src/app/target"),
            (Some("out"), "/src/app/out"),
            (Some("/tmp/t"), "/tmp/t"),
        ];
        for (var, want) in cases {
            let var = var.map(std::ffi::OsStr::new);
            assert_eq!(target_dir(root, var), Path::new(want), "{var:?}");
        }
    }

    #[test]
    fn commit_lines() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let cases = [
            (format!("{sha} 1700000000\n"), Some((sha, 1_700_000_000))),
            (sha.to_owned(), None),
            (format!("{sha} soon"), None),
            ("xyz 1700000000".to_owned(), None),
            (String::new(), None),
        ];
        for (line, want) in cases {
            let want = want.map(|(sha, time)| Commit {
                sha: sha.to_owned(),
                time,
            });
            assert_eq!(parse_commit(&line), want, "{line:?}");
        }
    }

    #[test]
    fn reads_this_checkout_once() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let session = Session::new(root.to_path_buf()).unwrap();
        let first = session.git().unwrap() as *const Git;
        assert_eq!(session.git().unwrap() as *const Git, first);
        if let Some(head) = &session.git().unwrap().head {
            assert!(head.len() >= 40, "{head}");
            assert!(session.git().unwrap().commit_time.is_some());
            // The image's commit is HEAD or one of its ancestors, and no newer than HEAD.
            let source = session.git().unwrap().source.clone().unwrap();
            let git = |args: &[&str]| {
                std::process::Command::new("git")
                    .current_dir(root)
                    .args(args)
                    .status()
                    .unwrap()
                    .success()
            };
            assert!(git(&["merge-base", "--is-ancestor", &source.sha, head]));
            assert!(source.time <= session.git().unwrap().commit_time.unwrap());
        }
        assert!(session.image_inputs().contains(&"src".to_owned()));
        assert_eq!(
            session.config().unwrap().name,
            "mcp-taipei-metro-month-price"
        );
    }

    #[test]
    fn ancestry_from_the_checkout() {
        use crate::image::manifest::History;
        let dir = std::env::temp_dir().join(format!("xtask-ancestry-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let session = Session::new(dir.clone()).unwrap();
        let sh = &session.sh;
        let commit = |message: &str| {
            cmd!(sh, "git -c user.name=t -c user.email=t@example.invalid commit -q --allow-empty -m {message}")
                .run()
                .unwrap();
            cmd!(sh, "git rev-parse HEAD").read().unwrap()
        };
        cmd!(sh, "git init -q").run().unwrap();
        let (parent, child) = (commit("one"), commit("two"));
        let unknown = "0".repeat(40);
        let cases = [
            (&parent, &child, Some(true)),
            (&child, &parent, Some(false)),
            (&parent, &parent, Some(true)),
            (&unknown, &child, None),
            (&"--help".to_owned(), &child, None),
            (&parent[..12].to_owned(), &child, None),
        ];
        for (older, newer, want) in cases {
            assert_eq!(session.is_ancestor(older, newer), want, "{older} {newer}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
