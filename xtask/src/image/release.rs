//! `cargo xtask image release`: the whole pipeline (meta -> build -> push -> manifest) in one process, with the very
//! functions the CI jobs call, for a developer's laptop; `--local` publishes into a throwaway registry so a newcomer
//! can run everything without credentials.
//!
//! The checks that guard a version release (semver form, the git tag at HEAD, a clean tree, Cargo.toml's version)
//! and the base-image preflight are pure functions of facts gathered once at the edge, tested here.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use xshell::{cmd, Shell};

use crate::config::{ImageConfig, Platform};
use crate::github::Github;
use crate::image::local_registry::{self, LocalRegistry, Runner};
use crate::image::manifest::{self, Clients, Urls};
use crate::image::{build, meta, prune, push};
use crate::registry::client;
use crate::registry::credentials::{self, Env};
use crate::registry::Reference;
use crate::{exit, flags};

impl flags::Release {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        if self.keep && !self.local {
            return Err(exit::invalid(
                "--keep only applies to --local (it leaves the throwaway registry running)",
            ));
        }
        if self.local && !self.to.is_empty() {
            return Err(exit::invalid(
                "--local publishes only into the throwaway registry; drop --to, or drop --local to publish to --to",
            ));
        }
        let gh = Github::from_env();
        let env = Env::from_process();
        let config = ImageConfig::load(sh)?;
        let git = GitState::read(sh)?;
        let version = match &self.version {
            Some(version) => {
                let tag_commit = tag_commit(sh, version);
                Some(check_version_release(
                    version,
                    &git,
                    &tag_commit,
                    &config.version,
                )?)
            }
            None => {
                for warning in latest_warnings(&git) {
                    gh.warning("image release", &warning);
                }
                None
            }
        };
        let runner = self.local.then(|| {
            local_registry::choose_runner(
                local_registry::find_binary(std::env::var_os("PATH").as_deref()),
                std::env::var("XTASK_REGISTRY_IMAGE")
                    .ok()
                    .filter(|v| !v.is_empty()),
            )
        });
        if self.dry_run {
            return self.dry_run(sh, &config, &git, version, runner.as_ref(), &env);
        }
        let registry = match &runner {
            Some(runner) => {
                println!("==> start a throwaway registry");
                let registry = LocalRegistry::start(sh, runner.clone())?;
                println!(
                    "throwaway registry on {} ({}; storage {})",
                    registry.address,
                    match runner {
                        Runner::Binary(path) => path.display().to_string(),
                        Runner::Podman { image } => format!("podman, image {image}"),
                    },
                    registry.storage().display()
                );
                Some(registry)
            }
            None => None,
        };
        let result = self.publish(
            sh,
            &gh,
            &env,
            &config,
            &git,
            version,
            registry.as_ref().map(|r| r.address.as_str()),
        );
        if let Some(registry) = registry {
            if self.keep {
                println!(
                    "\nthe throwaway registry keeps running on {}; stop it with: {}",
                    registry.address,
                    registry.stop_hint()
                );
            } else {
                registry.stop(sh);
                println!("\nthrowaway registry stopped (pass --keep to leave it running)");
            }
        }
        result
    }

    /// The targets: the throwaway registry's repository with `--local`, else `--to`, else the configured ones.
    fn targets(&self, config: &ImageConfig, local: Option<&str>) -> Vec<String> {
        match local {
            Some(address) => vec![format!("{address}/{}", config.name)],
            None if self.to.is_empty() => config.targets.clone(),
            None => self.to.clone(),
        }
    }

    fn plan(
        &self,
        env: &Env,
        config: &ImageConfig,
        git: &GitState,
        version: &Option<String>,
        targets: Vec<String>,
    ) -> anyhow::Result<meta::Plan> {
        let facts = meta::Facts {
            event: "push".into(),
            git_ref: match version {
                Some(number) => format!("refs/tags/v{number}"),
                None => "refs/heads/main".into(),
            },
            sha: git.head.clone(),
            tag_name: None,
            skip_push: false,
            platforms: self.platforms.clone(),
            targets,
        };
        let settings = meta::Settings {
            name: config.name.clone(),
            platforms: config.platforms.clone(),
            targets: config.targets.clone(),
            runners: BTreeMap::new(),
            package_version: config.version.clone(),
            description: config.description.clone(),
            license: config.license.clone(),
            repository: config.repository.clone(),
        };
        // As in CI: every target's registry needs a login (variables, auth file or helper), loopback excepted.
        meta::plan(&facts, &settings, &|target: &Reference| {
            Ok(credentials::source_of(&target.registry, &target.repository, env)?.is_some())
        })
    }

    fn build_plan(
        &self,
        sh: &Shell,
        config: &ImageConfig,
        plan: &meta::Plan,
        version: &Option<String>,
    ) -> anyhow::Result<build::BuildPlan> {
        let request = build::BuildRequest {
            platforms: plan.jobs.iter().map(|job| job.platform).collect(),
            build_args: self.build_arg.clone(),
            tag: None,
            cache_repo: self.cache_repo.clone(),
            version: version.clone(),
        };
        build::BuildPlan::new(config, &request, &build::Facts::gather(sh)?)
    }

    #[allow(clippy::too_many_arguments)]
    fn publish(
        &self,
        sh: &Shell,
        gh: &Github,
        env: &Env,
        config: &ImageConfig,
        git: &GitState,
        version: Option<String>,
        local: Option<&str>,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut phases: Vec<(String, Duration)> = Vec::new();
        let plan = self.plan(env, config, git, &version, self.targets(config, local))?;
        let targets = crate::registry::reference::parse_targets(&plan.targets)?;
        let platforms: Vec<Platform> = plan.jobs.iter().map(|job| job.platform).collect();
        println!(
            "==> release {} ({}) from {} to {}",
            plan.tag,
            platforms
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            short(&git.head),
            plan.targets.join(", ")
        );

        let build_plan = self.build_plan(sh, config, &plan, &version)?;
        build::require_podman()?;
        let phase = Instant::now();
        check_base_images(sh, &build_plan)?;
        phases.push(("check base images".into(), phase.elapsed()));

        // Every platform is built before anything is pushed: a failed build leaves every registry untouched.
        let mut exports = Vec::new();
        for &platform in &platforms {
            let phase = Instant::now();
            exports.push(build::build_platform(sh, &build_plan, platform)?);
            phases.push((format!("build {platform}"), phase.elapsed()));
        }

        let digest_dir = build_plan.out_dir.join("digests");
        if digest_dir.exists() {
            std::fs::remove_dir_all(&digest_dir)
                .with_context(|| format!("remove old digests in {}", digest_dir.display()))?;
        }
        let options = client::Options::from_env(self.insecure_registry.clone());
        for export in &exports {
            let phase = Instant::now();
            let _group = gh.group(&format!("image push {}", export.platform));
            push::push(
                sh,
                &push::Request {
                    platform: export.platform,
                    export_dir: export.dir.clone(),
                    targets: targets.clone(),
                    digest_dir: digest_dir.clone(),
                    insecure: self.insecure_registry.clone(),
                },
                env,
                &options,
            )?;
            phases.push((format!("push {}", export.platform), phase.elapsed()));
        }

        let phase = Instant::now();
        let request = manifest::Request {
            tag: plan.tag.clone(),
            targets: targets.iter().map(ToString::to_string).collect(),
            children: manifest::read_digest_dir(&digest_dir, &platforms)?,
            prune_previous: plan.prune_previous,
        };
        let mut clients = Clients::connect(sh, &targets, &self.insecure_registry, env)?;
        let access = prune::Access::from_process(sh, &targets)?;
        let urls = Urls::new(&targets, &self.insecure_registry);
        let published = manifest::publish_and_report(gh, &mut clients, &access, &request, &urls)?;
        phases.push(("manifest".into(), phase.elapsed()));

        if local.is_some() {
            let phase = Instant::now();
            let reference = format!("{}:{}", request.targets[0], plan.tag);
            verify_pulls(sh, &reference, &platforms, build_plan.build_platform)?;
            phases.push(("pull back and check".into(), phase.elapsed()));
        }

        println!("\nreleased {} = {}", published.tag, published.digest);
        for (name, duration) in &phases {
            println!("  {name:<22} {:>7.1} s", duration.as_secs_f64());
        }
        println!(
            "  {:<22} {:>7.1} s",
            "total",
            started.elapsed().as_secs_f64()
        );
        let tls = if local.is_some() {
            "--tls-verify=false "
        } else {
            ""
        };
        if local.is_some() && !self.keep {
            println!(
                "\nthe image stays in local storage (the registry stops now; --keep leaves it running):\n  \
                 podman run --rm --network=host {}:{}",
                request.targets[0], plan.tag
            );
        } else {
            println!("\npull it:");
            for target in &request.targets {
                println!("  podman pull {tls}{target}:{}", plan.tag);
            }
        }
        Ok(())
    }

    fn dry_run(
        &self,
        sh: &Shell,
        config: &ImageConfig,
        git: &GitState,
        version: Option<String>,
        runner: Option<&Runner>,
        env: &Env,
    ) -> anyhow::Result<()> {
        let scratch = std::env::temp_dir().join("xtask-registry-<id>");
        // The port is picked when the registry starts: 1 stands for it in the plan, `<free port>` when shown.
        let address = "127.0.0.1:<free port>";
        let shown = |line: String| line.replace("127.0.0.1:1/", "127.0.0.1:<free port>/");
        let plan = self.plan(
            env,
            config,
            git,
            &version,
            self.targets(config, runner.map(|_| "127.0.0.1:1")),
        )?;
        let platforms: Vec<Platform> = plan.jobs.iter().map(|job| job.platform).collect();
        let build_plan = self.build_plan(sh, config, &plan, &version)?;
        println!("dry run: image release would run these, in order, and change nothing:");
        let mut step = 0;
        let mut say = |title: String, lines: Vec<String>| {
            step += 1;
            println!("\n{step}. {title}");
            for line in lines {
                println!("   {line}");
            }
        };
        if let Some(runner) = runner {
            say(
                "start a throwaway registry (config with delete enabled, storage in a temp dir)"
                    .into(),
                local_registry::describe_start(runner, address, &scratch),
            );
        }
        say(
            format!(
                "plan: tag {}, platforms {}, targets {}{}",
                plan.tag,
                plan.platform_list(),
                shown(plan.targets.join(", ")),
                if plan.prune_previous {
                    ", prune the superseded index"
                } else {
                    ""
                }
            ),
            plan.warnings.clone(),
        );
        say(
            "check the base images are here or reachable".into(),
            base_images(
                &containerfile_defaults(&read_containerfile(&build_plan)?),
                &build_plan.build_args,
            )
            .iter()
            .map(|(_, image)| {
                let transport = format!("docker://{image}");
                format!(
                    "podman image exists {image} || skopeo --command-timeout {BASE_TIMEOUT} inspect --raw \
                     --retry-times 0 {transport}"
                )
            })
            .collect(),
        );
        for &platform in &platforms {
            say(
                format!("build {platform} and export it"),
                vec![
                    build::shell_line(&build_plan.build_argv(platform)),
                    build::shell_line(&build_plan.export_argv(platform)),
                ],
            );
        }
        let digest_dir = build_plan.out_dir.join("digests");
        let targets = crate::registry::reference::parse_targets(&plan.targets)?;
        for &platform in &platforms {
            let request = push::Request {
                platform,
                export_dir: build_plan.export_dir(platform),
                targets: targets.clone(),
                digest_dir: digest_dir.clone(),
                insecure: self.insecure_registry.clone(),
            };
            say(
                format!("push {platform} by digest, no tag"),
                push::planned_calls(&request, None)
                    .into_iter()
                    .map(shown)
                    .collect(),
            );
        }
        let request = manifest::Request {
            tag: plan.tag.clone(),
            targets: targets.iter().map(ToString::to_string).collect(),
            children: platforms
                .iter()
                .map(|&platform| manifest::Child {
                    platform,
                    variant: None,
                    digest: format!("<digest of {platform}>"),
                    size: 0,
                    media_type: manifest::DOCKER_MANIFEST.into(),
                })
                .collect(),
            prune_previous: plan.prune_previous,
        };
        let urls = Urls::new(&targets, &self.insecure_registry);
        say(
            format!("manifest list, then tag {} (all or nothing)", plan.tag),
            manifest::planned_calls(&request, None)
                .iter()
                .map(|call| shown(urls.line(call)))
                .collect(),
        );
        if runner.is_some() {
            let reference = format!("{address}/{}:{}", config.name, plan.tag);
            let format = "{{.Os}}/{{.Architecture}}";
            say(
                "pull each platform back and check its architecture".into(),
                pull_order(&platforms, build_plan.build_platform)
                    .into_iter()
                    .flat_map(|platform| {
                        [
                            format!(
                                "podman pull -q --tls-verify=false --platform {platform} {reference}"
                            ),
                            format!("podman image inspect --format '{format}' <pulled id>"),
                        ]
                    })
                    .collect(),
            );
            say(
                if self.keep {
                    "leave the registry running (--keep)".into()
                } else {
                    "stop the registry and remove its storage".into()
                },
                vec![],
            );
        }
        Ok(())
    }
}

/// How long the reachability check of one base image may take.
const BASE_TIMEOUT: &str = "20s";

fn read_containerfile(build_plan: &build::BuildPlan) -> anyhow::Result<String> {
    std::fs::read_to_string(&build_plan.containerfile)
        .with_context(|| format!("read {}", build_plan.containerfile.display()))
}

/// Fails before any build when a base image is neither in local storage nor reachable, saying how to point the
/// build at local ones (docker.io may be out of reach, as behind some proxies).
fn check_base_images(sh: &Shell, build_plan: &build::BuildPlan) -> anyhow::Result<()> {
    let images = base_images(
        &containerfile_defaults(&read_containerfile(build_plan)?),
        &build_plan.build_args,
    );
    let mut missing = Vec::new();
    for (arg, image) in images {
        if cmd!(sh, "podman image exists {image}")
            .quiet()
            .ignore_stderr()
            .run()
            .is_ok()
        {
            println!("base image {arg}={image}: in local storage");
            continue;
        }
        let transport = format!("docker://{image}");
        let output = cmd!(
            sh,
            "skopeo --command-timeout {BASE_TIMEOUT} inspect --raw --retry-times 0 {transport}"
        )
        .quiet()
        .ignore_status()
        .output();
        match output {
            Ok(output) if output.status.success() => {
                println!("base image {arg}={image}: reachable, podman will pull it");
            }
            Ok(output) => {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let why = stderr
                    .lines()
                    .last()
                    .unwrap_or("skopeo could not read it")
                    .trim();
                let why = why
                    .rsplit_once("msg=")
                    .map_or(why, |(_, msg)| msg.trim_matches('"'));
                missing.push((arg, image, why.to_owned()));
            }
            Err(err) => missing.push((arg, image, format!("could not run skopeo ({err})"))),
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(exit::build_failed(unreachable_bases_message(&missing)))
    }
}

/// The order of the pull-back check: the machine's own platform last, so the local tag names the image it runs.
fn pull_order(platforms: &[Platform], native: Platform) -> Vec<Platform> {
    let mut order: Vec<Platform> = platforms.iter().copied().filter(|p| *p != native).collect();
    if platforms.contains(&native) {
        order.push(native);
    }
    order
}

/// Pulls each platform of `reference` back with podman, as a user would, and checks what arrived.
fn verify_pulls(
    sh: &Shell,
    reference: &str,
    platforms: &[Platform],
    native: Platform,
) -> anyhow::Result<()> {
    println!("==> pull {reference} back for each platform");
    let format = "{{.Os}}/{{.Architecture}}";
    for platform in pull_order(platforms, native) {
        let wanted = platform.to_string();
        let id = cmd!(
            sh,
            "podman pull -q --tls-verify=false --platform {wanted} {reference}"
        )
        .read()
        .map_err(|err| {
            exit::registry_failed(format!(
                "podman could not pull {wanted} of {reference} ({err})"
            ))
        })?;
        let id = id.lines().last().unwrap_or("").trim().to_owned();
        let got = cmd!(sh, "podman image inspect --format {format} {id}")
            .quiet()
            .read()
            .with_context(|| format!("inspect the pulled {wanted} image {id}"))?;
        if got.trim() != wanted {
            return Err(exit::registry_failed(format!(
                "pulling {reference} for {wanted} gave an image for {}",
                got.trim()
            )));
        }
        println!(
            "  {wanted}: pulled {} ({got})",
            short(&id),
            got = got.trim()
        );
    }
    Ok(())
}

impl GitState {
    /// Reads HEAD, the branch and the uncommitted changes.
    pub fn read(sh: &Shell) -> anyhow::Result<GitState> {
        let head = cmd!(sh, "git rev-parse HEAD")
            .quiet()
            .ignore_stderr()
            .read()
            .map_err(|_| {
                exit::invalid(format!(
                    "{} is not a git checkout with a commit; release from a clone of the repository",
                    sh.current_dir().display()
                ))
            })?;
        let branch = cmd!(sh, "git symbolic-ref --short -q HEAD")
            .quiet()
            .ignore_stderr()
            .read()
            .ok()
            .filter(|b| !b.is_empty());
        let status = cmd!(sh, "git status --porcelain")
            .quiet()
            .read()
            .context("run git status")?;
        Ok(GitState {
            head: head.trim().to_owned(),
            branch,
            changes: status
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }
}

/// The commit the tag `version` points at, if it exists.
fn tag_commit(sh: &Shell, version: &str) -> TagCommit {
    let spec = format!("refs/tags/{version}^{{commit}}");
    cmd!(sh, "git rev-parse -q --verify {spec}")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
        .map(|sha| sha.trim().to_owned())
        .filter(|sha| !sha.is_empty())
}

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
            let mut args = configured.clone();
            for flag in &flags {
                let (key, value) = flag.split_once('=').unwrap();
                args.insert(key.to_owned(), value.to_owned());
            }
            let got = base_images(&defaults, &args);
            let want: Vec<(String, String)> = want
                .into_iter()
                .map(|(a, b)| (a.into(), b.into()))
                .collect();
            assert_eq!(got, want, "{flags:?}");
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
