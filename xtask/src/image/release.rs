//! `cargo xtask image release`: the whole pipeline (meta -> build -> push -> manifest) in one process, with the very
//! functions the CI jobs call, for a developer's laptop; `--local` publishes into a throwaway registry so a newcomer
//! can run everything without credentials.
//!
//! The checks that guard a version release (semver form, the git tag at HEAD, a clean tree, Cargo.toml's version)
//! and the base-image preflight are pure functions of facts gathered once at the edge, tested here.

// Parts of the stage are used once the build and push stages it drives have landed.
#![allow(dead_code)]

use std::collections::BTreeMap;

use crate::exit;

/// The repository's state, read once from git.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GitState {
    /// `git rev-parse HEAD`
    pub head: String,
    /// The branch checked out (`None`: detached HEAD).
    pub branch: Option<String>,
    /// `git status --porcelain` lines: anything uncommitted, untracked files included.
    pub changes: Vec<String>,
}

/// The commit a tag points at (`None`: no such tag).
pub type TagCommit = Option<String>;

/// `v1.2.3` -> `1.2.3`, or exit 2 saying what a version looks like.
pub fn version_number(version: &str) -> anyhow::Result<String> {
    let numeric = |part: &str| {
        !part.is_empty()
            && part.bytes().all(|b| b.is_ascii_digit())
            && (part == "0" || !part.starts_with('0'))
    };
    version
        .strip_prefix('v')
        .filter(|rest| {
            let parts: Vec<&str> = rest.split('.').collect();
            parts.len() == 3 && parts.iter().all(|p| numeric(p))
        })
        .map(str::to_owned)
        .ok_or_else(|| {
            exit::invalid(format!(
                "--version {version:?} is not a release version: use `v` and three numbers without leading zeros, \
                 like --version v1.2.3 (the git tag's name)"
            ))
        })
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// Everything a version release needs before anything is built; every failure is listed with its remedy (exit 2).
pub fn check_version_release(
    version: &str,
    git: &GitState,
    tag_commit: &TagCommit,
    cargo_version: &str,
) -> anyhow::Result<String> {
    let number = version_number(version)?;
    let mut problems = Vec::new();
    match tag_commit {
        None => problems.push(format!(
            "git tag {version} does not exist; create it at the commit to release: `git tag {version}` \
             (then `git push origin {version}` to publish the tag)"
        )),
        Some(commit) if *commit != git.head => problems.push(format!(
            "git tag {version} points at {}, not at HEAD ({}); check the tag out to release it \
             (`git checkout {version}`), or, if HEAD is the release, move the tag: `git tag -f {version}`",
            short(commit),
            short(&git.head)
        )),
        Some(_) => {}
    }
    if !git.changes.is_empty() {
        let shown: Vec<&str> = git.changes.iter().take(5).map(|s| s.trim()).collect();
        let more = git.changes.len().saturating_sub(shown.len());
        problems.push(format!(
            "the working tree is not clean ({}{}); commit or stash the changes (`git stash -u`) so the image is \
             built from exactly the tagged source",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    if cargo_version != number {
        problems.push(format!(
            "Cargo.toml's version is {cargo_version}, but the release is {number}; set `version = \"{number}\"` in \
             Cargo.toml, commit, and tag that commit {version}"
        ));
    }
    if problems.is_empty() {
        Ok(number)
    } else {
        Err(exit::invalid(format!(
            "cannot release {version}:\n  - {}",
            problems.join("\n  - ")
        )))
    }
}

/// A `latest` release publishes HEAD as it is; these are worth a look but do not stop it.
pub fn latest_warnings(git: &GitState) -> Vec<String> {
    let mut warnings = Vec::new();
    match git.branch.as_deref() {
        Some("main") => {}
        Some(branch) => warnings.push(format!(
            "publishing `latest` from branch {branch}, not main: CI publishes `latest` only from main"
        )),
        None => warnings.push(format!(
            "publishing `latest` from a detached HEAD ({}), not main: CI publishes `latest` only from main",
            short(&git.head)
        )),
    }
    if !git.changes.is_empty() {
        warnings.push(format!(
            "the working tree has {} uncommitted change(s): the image holds them, but its revision label says {}",
            git.changes.len(),
            short(&git.head)
        ));
    }
    warnings
}

/// The `ARG NAME=default` lines before the first `FROM`: the defaults a `--build-arg` overrides.
pub fn containerfile_defaults(containerfile: &str) -> BTreeMap<String, String> {
    let mut defaults = BTreeMap::new();
    for line in containerfile.lines().map(str::trim) {
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("FROM ") {
            break;
        }
        if let Some(rest) = upper.strip_prefix("ARG ").map(|_| line[4..].trim()) {
            if let Some((name, value)) = rest.split_once('=') {
                let value = value.trim().trim_matches('"');
                defaults.insert(name.trim().to_owned(), value.to_owned());
            }
        }
    }
    defaults
}

/// The base images a build pulls: RUST_IMAGE and RUNTIME_IMAGE, each from `--build-arg`, else the configured
/// default, else the Containerfile's. `scratch` is no image.
pub fn base_images(
    containerfile_defaults: &BTreeMap<String, String>,
    build_args: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    ["RUST_IMAGE", "RUNTIME_IMAGE"]
        .into_iter()
        .filter_map(|arg| {
            let image = build_args
                .get(arg)
                .or_else(|| containerfile_defaults.get(arg))?;
            (image != "scratch").then(|| (arg.to_owned(), image.clone()))
        })
        .collect()
}

/// Merges `--build-arg K=V` flags over the configured defaults; a flag without `=` exits 2.
pub fn merge_build_args(
    configured: &BTreeMap<String, String>,
    flags: &[String],
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut args = configured.clone();
    for flag in flags {
        let (key, value) = flag
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| {
                exit::invalid(format!(
                "--build-arg {flag:?} is not KEY=VALUE (like --build-arg RUNTIME_IMAGE=scratch)"
            ))
            })?;
        args.insert(key.to_owned(), value.to_owned());
    }
    Ok(args)
}

/// The message for base images that are neither local nor reachable, said before any build starts.
pub fn unreachable_bases_message(missing: &[(String, String, String)]) -> String {
    let mut out = String::from(
        "these base images are neither in local storage nor reachable, so the build would fail:\n",
    );
    for (arg, image, why) in missing {
        out.push_str(&format!("  - {arg}={image}: {why}\n"));
    }
    out.push_str(
        "point the build at images you have, on the command line:\n  cargo xtask image release",
    );
    for (arg, _, _) in missing {
        out.push_str(&format!(" --build-arg {arg}=<local image>"));
    }
    out.push_str("\nor as defaults in Cargo.toml:\n  [package.metadata.image.build-args]\n");
    for (arg, _, _) in missing {
        out.push_str(&format!("  {arg} = \"<local image>\"\n"));
    }
    out.push_str(
        "(RUNTIME_IMAGE=scratch needs no base image; `cargo xtask ci --setup-only` builds a local Rust builder)",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "0123456789abcdef0123456789abcdef01234567";
    const OTHER: &str = "fedcba9876543210fedcba9876543210fedcba98";

    fn git(changes: &[&str]) -> GitState {
        GitState {
            head: HEAD.into(),
            branch: Some("main".into()),
            changes: changes.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn version_releases() {
        let at_head = Some(HEAD.to_owned());
        // (version, changes, tag commit, Cargo.toml version, Ok(number) or the fragments of the error)
        type Case<'a> = (
            &'a str,
            Vec<&'a str>,
            TagCommit,
            &'a str,
            Result<&'a str, Vec<&'a str>>,
        );
        let cases: Vec<Case> = vec![
            ("v1.2.3", vec![], at_head.clone(), "1.2.3", Ok("1.2.3")),
            ("v0.1.0", vec![], at_head.clone(), "0.1.0", Ok("0.1.0")),
            (
                "v10.20.30",
                vec![],
                at_head.clone(),
                "10.20.30",
                Ok("10.20.30"),
            ),
            (
                "1.2.3",
                vec![],
                at_head.clone(),
                "1.2.3",
                Err(vec!["like --version v1.2.3"]),
            ),
            (
                "v1.2",
                vec![],
                at_head.clone(),
                "1.2.0",
                Err(vec!["not a release version"]),
            ),
            (
                "v1.2.3.4",
                vec![],
                at_head.clone(),
                "1.2.3",
                Err(vec!["not a release version"]),
            ),
            (
                "v01.2.3",
                vec![],
                at_head.clone(),
                "1.2.3",
                Err(vec!["not a release version"]),
            ),
            (
                "v1.2.3-beta",
                vec![],
                at_head.clone(),
                "1.2.3",
                Err(vec!["not a release version"]),
            ),
            (
                " v1.2.3",
                vec![],
                at_head.clone(),
                "1.2.3",
                Err(vec!["not a release version"]),
            ),
            (
                "v1.2.3",
                vec![],
                None,
                "1.2.3",
                Err(vec!["git tag v1.2.3 does not exist", "`git tag v1.2.3`"]),
            ),
            (
                "v1.2.3",
                vec![],
                Some(OTHER.into()),
                "1.2.3",
                Err(vec![
                    "points at fedcba9, not at HEAD (0123456)",
                    "`git checkout v1.2.3`",
                    "`git tag -f v1.2.3`",
                ]),
            ),
            (
                "v1.2.3",
                vec![" M src/main.rs", "?? notes.txt"],
                at_head.clone(),
                "1.2.3",
                Err(vec![
                    "not clean (M src/main.rs, ?? notes.txt)",
                    "`git stash -u`",
                ]),
            ),
            (
                "v1.2.3",
                vec![],
                at_head.clone(),
                "0.1.0",
                Err(vec![
                    "Cargo.toml's version is 0.1.0, but the release is 1.2.3",
                    "version = \"1.2.3\"",
                ]),
            ),
            (
                // Every problem at once, so one round of fixes is enough.
                "v1.2.3",
                vec!["?? a", "?? b", "?? c", "?? d", "?? e", "?? f", "?? g"],
                None,
                "0.1.0",
                Err(vec![
                    "does not exist",
                    "and 2 more",
                    "Cargo.toml's version is 0.1.0",
                ]),
            ),
        ];
        for (version, changes, tag, cargo, want) in cases {
            let got = check_version_release(version, &git(&changes), &tag, cargo);
            match (got, want) {
                (Ok(number), Ok(want)) => assert_eq!(number, want, "{version}"),
                (Err(err), Err(fragments)) => {
                    assert_eq!(exit::code_of(&err), 2, "{version}");
                    let msg = err.to_string();
                    for fragment in fragments {
                        assert!(msg.contains(fragment), "{version}: {fragment:?} in {msg}");
                    }
                }
                (got, want) => panic!("{version}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn latest_from_elsewhere_warns() {
        assert!(latest_warnings(&git(&[])).is_empty());
        let mut branch = git(&[]);
        branch.branch = Some("feature".into());
        assert_eq!(latest_warnings(&branch).len(), 1);
        assert!(latest_warnings(&branch)[0].contains("from branch feature, not main"));
        let mut detached = git(&[" M x"]);
        detached.branch = None;
        let warnings = latest_warnings(&detached);
        assert!(
            warnings[0].contains("detached HEAD (0123456)"),
            "{warnings:?}"
        );
        assert!(warnings[1].contains("1 uncommitted change"), "{warnings:?}");
    }

    #[test]
    fn base_images_from_args_config_and_containerfile() {
        let containerfile = "# comment\nARG RUST_IMAGE=docker.io/library/rust:1-slim-trixie\n\
             ARG RUNTIME_IMAGE=\"gcr.io/distroless/static-debian12:nonroot\"\nARG TARGETARCH\n\
             FROM ${RUST_IMAGE} AS build\nARG LATER=x\n";
        let defaults = containerfile_defaults(containerfile);
        assert_eq!(
            defaults,
            [
                (
                    "RUST_IMAGE".to_owned(),
                    "docker.io/library/rust:1-slim-trixie".to_owned()
                ),
                (
                    "RUNTIME_IMAGE".to_owned(),
                    "gcr.io/distroless/static-debian12:nonroot".to_owned()
                ),
            ]
            .into()
        );
        let configured: BTreeMap<String, String> =
            [("RUNTIME_IMAGE".to_owned(), "scratch".to_owned())].into();
        type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>);
        let cases: Vec<Case> = vec![
            (
                vec![],
                vec![("RUST_IMAGE", "docker.io/library/rust:1-slim-trixie")],
            ),
            (
                vec!["RUST_IMAGE=localhost/builder:1"],
                vec![("RUST_IMAGE", "localhost/builder:1")],
            ),
            (
                vec!["RUNTIME_IMAGE=localhost/busybox", "RUST_IMAGE=b"],
                vec![("RUST_IMAGE", "b"), ("RUNTIME_IMAGE", "localhost/busybox")],
            ),
        ];
        for (flags, want) in cases {
            let flags: Vec<String> = flags.into_iter().map(Into::into).collect();
            let args = merge_build_args(&configured, &flags).unwrap();
            let got = base_images(&defaults, &args);
            let want: Vec<(String, String)> = want
                .into_iter()
                .map(|(a, b)| (a.into(), b.into()))
                .collect();
            assert_eq!(got, want, "{flags:?}");
        }
        for bad in ["RUST_IMAGE", "=x"] {
            let err = merge_build_args(&configured, &[bad.into()]).unwrap_err();
            assert_eq!(exit::code_of(&err), 2);
        }
    }

    #[test]
    fn unreachable_bases_say_how_to_point_elsewhere() {
        let msg = unreachable_bases_message(&[(
            "RUST_IMAGE".into(),
            "docker.io/library/rust:1-slim-trixie".into(),
            "no such host".into(),
        )]);
        for fragment in [
            "RUST_IMAGE=docker.io/library/rust:1-slim-trixie: no such host",
            "cargo xtask image release --build-arg RUST_IMAGE=<local image>\n",
            "[package.metadata.image.build-args]\n  RUST_IMAGE = \"<local image>\"",
        ] {
            assert!(msg.contains(fragment), "{fragment:?} in {msg}");
        }
    }
}
