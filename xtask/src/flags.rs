//! The command-line grammar of `cargo xtask`: every command and flag, with the help text users see.

use std::path::PathBuf;

xflags::xflags! {
    /// Project automation: the image pipeline, the test bench and the benchmarks.
    cmd xtask {
        /// Run the whole test bench: install what the tests need, then fmt, clippy and every test.
        cmd ci {
            /// Do not install packages or build local base images (assume they are there).
            optional --no-setup
            /// Only run the setup phase (packages, binfmt, base images), then stop.
            optional --setup-only
        }

        /// Build, push and publish the multi-arch container image.
        cmd image {
            /// Compute the publishing plan (tags, version, platforms) from the GitHub event or flags.
            cmd meta {
                /// Event name (push, workflow_dispatch); default: $GITHUB_EVENT_NAME.
                optional --event event: String
                /// Git ref (refs/heads/main, refs/tags/v1.2.3); also spelled --ref; default: $GITHUB_REF.
                optional --git-ref git_ref: String
                /// Commit SHA; default: $GITHUB_SHA.
                optional --sha sha: String
                /// Tag for a manual run (workflow_dispatch); default: $INPUT_TAG_NAME, else manual-<sha7>.
                optional --tag-name tag_name: String
                /// Build and export only, push nothing; default: $INPUT_SKIP_PUSH.
                optional --skip-push
                /// Comma-separated platforms (linux/amd64,linux/arm64); default: $INPUT_PLATFORMS, else the configured ones.
                optional --platforms platforms: String
                /// Target repository (ghcr.io/owner/name); repeatable; default: the configured targets.
                repeated --to to: String
                /// Print the whole plan as JSON.
                optional --json
            }

            /// Build the image for each platform with podman and export it to target/image/<os>-<arch>/, its CycloneDX SBOM beside it (<os>-<arch>.cdx.json).
            cmd build {
                /// Platform to build (linux/amd64, linux/arm64); repeatable; default: the configured platforms.
                repeated --platform platform: String
                /// Build argument K=V passed to podman build (RUST_IMAGE=…, RUNTIME_IMAGE=…); repeatable.
                repeated --build-arg build_arg: String
                /// Local image name; each platform is tagged <tag>-<arch>; default: localhost/<configured name>:local.
                optional --tag tag: String
                /// Registry repository used as a layer cache (ghcr.io/owner/app-cache); default: cache-repo in [package.metadata.image]; when it cannot be written the build warns and goes on without it.
                optional --cache-repo cache_repo: String
                /// The image's labels as a JSON object (the `labels` output of `image meta`); their created time is also the config's; default: what meta gives a build of this checkout at Cargo.toml's version.
                optional --labels labels: String
                /// Print the podman commands that would run, one per line, and run nothing.
                optional --dry-run
            }

            /// Push one platform's exported image to every target, by digest, with no tag.
            cmd push {
                /// Platform whose export to push (linux/amd64 or linux/arm64).
                required --platform platform: String
                /// Target repository (ghcr.io/owner/name, 127.0.0.1:5000/team/app); repeatable.
                repeated --to to: String
                /// Directory that receives one digest file per platform.
                required --digest-dir digest_dir: PathBuf
                /// Registry host that may be reached over plain HTTP; repeatable.
                repeated --insecure-registry insecure_registry: String
                /// Print every registry call that would be made and change nothing.
                optional --dry-run
            }

            /// Merge the per-platform digests into one manifest list and move the tag, all or nothing.
            cmd manifest {
                /// Directory holding one digest file per platform (written by `image push`).
                required --digest-dir digest_dir: PathBuf
                /// Tag to move (latest, 1.2.3, manual-abc1234).
                required --tag tag: String
                /// Comma-separated floating tags of a release (1.2,1): each moves with --tag only if what it names now is not newer (the `floating_tags` output of `image meta`).
                optional --floating-tags floating_tags: String
                /// Target repository; repeatable; default: the configured targets.
                repeated --to to: String
                /// Comma-separated platforms expected in the list; default: the configured platforms.
                optional --platforms platforms: String
                /// Delete the superseded index after the tag moved (default for `latest`).
                optional --prune-previous
                /// Move `latest` even to an older commit than the one it names now (a deliberate rollback).
                optional --allow-older
                /// Registry host that may be reached over plain HTTP; repeatable.
                repeated --insecure-registry insecure_registry: String
                /// Print every registry call that would be made and change nothing.
                optional --dry-run
            }

            /// Run meta, build, push and manifest in one process, as CI does.
            cmd release {
                /// Publish this version (vX.Y.Z; the git tag must exist at HEAD) instead of `latest`.
                optional --version version: String
                /// Target repository; repeatable; default: the configured targets.
                repeated --to to: String
                /// Comma-separated platforms; default: the configured platforms.
                optional --platforms platforms: String
                /// Build argument K=V passed to podman build; repeatable.
                repeated --build-arg build_arg: String
                /// Registry repository used as a layer cache.
                optional --cache-repo cache_repo: String
                /// Publish into a throwaway registry on a free loopback port (no credentials needed).
                optional --local
                /// With --local: leave the throwaway registry running afterwards.
                optional --keep
                /// Move `latest` even to an older commit than the one it names now (a deliberate rollback).
                optional --allow-older
                /// Registry host that may be reached over plain HTTP; repeatable.
                repeated --insecure-registry insecure_registry: String
                /// Print every command and registry call in order and change nothing.
                optional --dry-run
            }

            /// Remove untagged manifests that no tagged index references.
            cmd prune {
                /// Target repository; repeatable; default: the configured targets.
                repeated --to to: String
                /// Really delete; without it, only list what would be deleted.
                optional --yes
                /// Also consider this manifest (sha256:…) and what it lists, e.g. one a failed prune reported; repeatable.
                /// Needed on registries that cannot list untagged manifests (distribution, Docker Hub).
                repeated --digest digest: String
                /// Registry host that may be reached over plain HTTP; repeatable.
                repeated --insecure-registry insecure_registry: String
            }
            /// Check a published image: its list, platforms, configs and attestations, then rebuild the commit it records and compare digests.
            cmd verify {
                /// The image: REGISTRY/NAME:TAG or REGISTRY/NAME@sha256:… (ghcr.io/owner/app:latest); without a tag, latest.
                required reference: String
                /// Only the checks of what the registry holds (list, platforms, configs, labels, healthcheck, blobs, attestations); no rebuild.
                optional --no-rebuild
                /// Build argument K=V for the rebuild (a Rust image where the configured one cannot be pulled); repeatable.
                repeated --build-arg build_arg: String
                /// Run every step of the rebuild again (podman build --no-cache), not only those this machine has not built from the same inputs.
                optional --no-cache
                /// Registry host that may be reached over plain HTTP; repeatable.
                repeated --insecure-registry insecure_registry: String
            }
        }

        /// Measure the pipeline's speed and memory side by side and write target/bench/*.json (about 40 minutes for all; builds run in podman storages of their own under target/bench/storage).
        cmd bench {
            /// Benchmarks to run: B1 clean build vs source-only rebuild, B2 vs empty storage with the registry cache, B3 arm64 cross vs emulated, B4 push of a present image vs podman push, B5 image manifest vs podman manifest, B6 cold compile and --help, B7 release --local, image size and push memory, B8 release of a docs-only commit vs a source change, B9 100 rounds of racing releases (lost tags, latest on the newest commit); default: all but B3 and B9.
            repeated which: String
            /// Include B3 (arm64 emulated with qemu; takes an hour or more, and builds an arm64 Rust image once).
            optional --emulated
            /// Rounds per side (the sides alternate); default 3.
            optional --rounds rounds: u32
            /// The Rust builder image for the builds; default: $XTASK_RUST_BUILDER, else the test bench's (cargo xtask ci --setup-only).
            optional --rust-image rust_image: String
        }
    }
}

/// Parses argv, accepting `--ref` as the spelling of `--git-ref` (`ref` is a Rust keyword, so the grammar cannot use it).
pub fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> xflags::Result<Xtask> {
    let args = args
        .into_iter()
        .map(|arg| {
            if arg == "--ref" {
                "--git-ref".into()
            } else {
                arg
            }
        })
        .collect();
    Xtask::from_vec(args)
}

/// The part of the generated help that belongs to the command named by `args` (`image push --help` shows `push`
/// only), since xflags prints the help of every command at once.
pub fn help_for(args: &[std::ffi::OsString], full_help: &str) -> String {
    let path: Vec<&str> = std::iter::once("xtask")
        .chain(
            args.iter()
                .map_while(|arg| arg.to_str().filter(|arg| !arg.starts_with('-'))),
        )
        .collect();
    if path.len() == 1 {
        return full_help.to_owned();
    }
    let prefix = path.join(" ");
    let mut out = String::new();
    let mut keep = false;
    for line in full_help.lines() {
        if line.starts_with("xtask") {
            keep = line == prefix || line.starts_with(&format!("{prefix} "));
        }
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    if out.is_empty() {
        full_help.to_owned()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<std::ffi::OsString> {
        line.split_whitespace().map(Into::into).collect()
    }

    #[test]
    fn help_shows_only_the_named_command() {
        let help = parse(args("image push --help")).unwrap_err().to_string();
        let shown = help_for(&args("image push --help"), &help);
        assert!(shown.starts_with("xtask image push\n"), "{shown}");
        assert!(shown.contains("--digest-dir"));
        assert!(!shown.contains("xtask image manifest"));
        let image = help_for(&args("image --help"), &help);
        assert!(image.contains("xtask image meta") && image.contains("xtask image prune"));
        assert!(!image.contains("xtask bench"));
    }

    #[test]
    fn ref_is_accepted_as_git_ref() {
        let flags = parse(args("image meta --ref refs/heads/main")).unwrap();
        let XtaskCmd::Image(Image {
            subcommand: ImageCmd::Meta(meta),
        }) = flags.subcommand
        else {
            panic!()
        };
        assert_eq!(meta.git_ref.as_deref(), Some("refs/heads/main"));
    }
}
