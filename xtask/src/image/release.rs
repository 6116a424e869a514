//! `cargo xtask image release`: the whole pipeline (meta -> build -> push -> manifest) in one process, with the very
//! functions the CI jobs call, for a developer's laptop; `--local` publishes into a throwaway registry so a newcomer
//! can run everything without credentials.
//!
//! A release is planned whole before anything runs ([`Release::plan`]): the publishing plan, the build plan, the
//! targets. Its [`Step`]s are what `--dry-run` prints and what the executor runs, one after the other, so the two
//! cannot drift apart. The checks that guard a version release (the git tag at HEAD, a clean tree, Cargo.toml's
//! version) and the base-image preflight are pure functions of facts gathered once at the edge, tested here.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use xshell::{cmd, Shell};

use crate::image::local_registry::{self, LocalRegistry, Runner};
use crate::image::manifest::{self, Urls};
use crate::image::{build, containerfile, meta, prune, push};
use crate::oci::Platform;
use crate::registry::credentials;
use crate::registry::reference::parse_targets;
use crate::registry::Reference;
use crate::session::{Git, Session};
use crate::{exit, flags};

impl flags::Release {
    pub fn run(self, session: &mut Session) -> anyhow::Result<()> {
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
        let git = session.git()?.clone();
        if git.head.is_none() {
            return Err(exit::invalid(format!(
                "{} is not a git checkout with a commit; release from a clone of the repository",
                session.root.display()
            )));
        }
        let publication = match &self.version {
            Some(version) => meta::Publication::Release(check_version_release(
                version,
                &git,
                &tag_commit(&session.sh, version),
                &session.config()?.version,
            )?),
            None => {
                for warning in latest_warnings(&git) {
                    session.github.warning("image release", &warning);
                }
                meta::Publication::Latest
            }
        };
        let local = if self.local {
            let runner = local_registry::choose_runner(
                local_registry::find_binary(std::env::var_os("PATH").as_deref()),
                std::env::var("XTASK_REGISTRY_IMAGE")
                    .ok()
                    .filter(|v| !v.is_empty()),
            );
            // The port is picked now so that the plan names the registry; a dry run shows a placeholder.
            let address = if self.dry_run {
                PLACEHOLDER_ADDRESS.to_owned()
            } else {
                format!("127.0.0.1:{}", local_registry::free_port()?)
            };
            Some(Local {
                runner,
                address,
                keep: self.keep,
            })
        } else {
            None
        };
        let release = Release::plan(&self, session, publication, local)?;
        if self.dry_run {
            release.print();
            Ok(())
        } else {
            release.execute(session)
        }
    }
}

/// Stands for the throwaway registry's port in a dry run.
const PLACEHOLDER_ADDRESS: &str = "127.0.0.1:1";

/// The throwaway registry of `--local`.
#[derive(Clone, Debug)]
struct Local {
    runner: Runner,
    /// `127.0.0.1:PORT`
    address: String,
    keep: bool,
}

/// Everything a release does, decided before anything runs.
pub struct Release {
    /// `--local` builds on the local Rust builder (made first if it is missing).
    local_builder: bool,
    plan: meta::Plan,
    build: build::BuildPlan,
    targets: Vec<Reference>,
    digest_dir: PathBuf,
    insecure: Vec<String>,
    /// `--allow-older`: `latest` may move to an older commit.
    allow_older: bool,
    local: Option<Local>,
}

/// One step of a release, in the order [`Release::steps`] gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    StartRegistry,
    LocalBuilder,
    CheckBaseImages,
    Build(Platform),
    Push(Platform),
    Manifest,
    PullBack,
    StopRegistry,
}

/// What the steps hand on to the next ones while a release runs.
#[derive(Default)]
struct Progress {
    registry: Option<LocalRegistry>,
    published: Option<manifest::Published>,
    phases: Vec<(String, Duration)>,
}

impl Release {
    /// Whether the tag only moves forward in commits: `latest`, unless `--allow-older`.
    fn monotonic(&self) -> bool {
        self.plan.tag == "latest" && !self.allow_older
    }

    fn plan(
        flags: &flags::Release,
        session: &mut Session,
        publication: meta::Publication,
        local: Option<Local>,
    ) -> anyhow::Result<Release> {
        let config = session.config()?.clone();
        let facts = meta::Facts {
            sha: session.git()?.head.clone().unwrap_or_default(),
            platforms: flags.platforms.clone(),
            targets: match &local {
                Some(local) => vec![format!("{}/{}", local.address, config.name)],
                None => flags.to.clone(),
            },
            revision: session.revision()?,
            created: session.created()?,
            ..meta::Facts::default()
        };
        // As in CI: every target's registry needs a login (variables, auth file or helper), loopback excepted.
        let env = session.registries.env();
        let plan = meta::plan_for(publication, &facts, &config, &|target: &Reference| {
            Ok(credentials::source_of(&target.registry, &target.repository, env)?.is_some())
        })?;
        let request = build::BuildRequest {
            platforms: plan.jobs.iter().map(|job| job.platform).collect(),
            build_args: flags.build_arg.clone(),
            tag: None,
            cache_repo: flags.cache_repo.clone(),
            labels: plan.labels.clone(),
        };
        let mut build = build::BuildPlan::new(&config, &request, &build::Facts::of(session)?)?;
        // --local needs no flags: a configured base that cannot be pulled gives way to the local one `cargo xtask
        // ci` makes. A base named with --build-arg is kept, reachable or not.
        let local_builder = match local {
            Some(_) => use_local_bases(&session.sh, &mut build, &flags.build_arg)?,
            None => false,
        };
        Ok(Release {
            local_builder,
            targets: parse_targets(&plan.targets)?,
            digest_dir: build.out_dir.join("digests"),
            insecure: flags.insecure_registry.clone(),
            allow_older: flags.allow_older,
            plan,
            build,
            local,
        })
    }

    fn platforms(&self) -> Vec<Platform> {
        self.plan.jobs.iter().map(|job| job.platform).collect()
    }

    /// Every platform is built before anything is pushed: a failed build leaves every registry untouched.
    pub fn steps(&self) -> Vec<Step> {
        let platforms = self.platforms();
        let mut steps = Vec::new();
        if self.local.is_some() {
            steps.push(Step::StartRegistry);
        }
        if self.local_builder {
            steps.push(Step::LocalBuilder);
        }
        steps.push(Step::CheckBaseImages);
        steps.extend(platforms.iter().map(|&p| Step::Build(p)));
        steps.extend(platforms.iter().map(|&p| Step::Push(p)));
        steps.push(Step::Manifest);
        if self.local.is_some() {
            steps.extend([Step::PullBack, Step::StopRegistry]);
        }
        steps
    }

    /// The step's title and the commands or registry calls it makes, as `--dry-run` shows them.
    fn describe(&self, step: Step) -> (String, Vec<String>) {
        match step {
            Step::StartRegistry => {
                let local = self.local.as_ref().expect("a local release");
                let scratch = std::env::temp_dir().join("xtask-registry-<id>");
                (
                    "start a throwaway registry (config with delete enabled, storage in a temp dir)".into(),
                    local_registry::describe_start(&local.runner, &local.address, &scratch),
                )
            }
            Step::LocalBuilder => (
                format!(
                    "make the local Rust builder {} if it is missing or stale (as `cargo xtask ci` does)",
                    crate::ci::base_images::RUST_BUILDER
                ),
                vec!["mmdebstrap trixie with rustc and the cross toolchain, then podman import".into()],
            ),
            Step::CheckBaseImages => (
                "check the base images are here or reachable".into(),
                self.base_images()
                    .unwrap_or_default()
                    .iter()
                    .map(|(_, image)| {
                        format!(
                            "podman image exists {image} || skopeo --command-timeout {BASE_TIMEOUT} inspect --raw \
                             --retry-times 0 docker://{}",
                            containerfile::pullable(image)
                        )
                    })
                    .collect(),
            ),
            Step::Build(platform) => (
                format!("build {platform} and export it"),
                vec![
                    build::shell_line(&self.build.build_argv(platform)),
                    build::shell_line(&self.build.export_argv(platform)),
                ],
            ),
            Step::Push(platform) => (
                format!("push {platform} by digest, no tag"),
                push::planned_calls(&self.push_request(platform), None),
            ),
            Step::Manifest => {
                let urls = Urls::new(&self.targets, &self.insecure);
                (
                    format!(
                        "manifest list, then tag {} (all or nothing){}",
                        self.plan.tag,
                        if self.plan.prune_previous {
                            ", then prune the superseded index"
                        } else {
                            ""
                        }
                    ),
                    manifest::planned_calls_before_build(
                        (&self.plan.tag, &self.plan.floating_tags),
                        (self.plan.prune_previous, self.monotonic()),
                        &self.platforms(),
                        &self.targets,
                    )
                    .iter()
                        .map(|call| urls.line(call))
                        .collect(),
                )
            }
            Step::PullBack => {
                let format = "{{.Os}}/{{.Architecture}}";
                (
                    "pull each platform back and check its architecture".into(),
                    pull_order(&self.platforms(), self.build.build_platform)
                        .into_iter()
                        .flat_map(|platform| {
                            [
                                format!(
                                    "podman pull -q --tls-verify=false --platform {platform} {}",
                                    self.reference()
                                ),
                                format!("podman image inspect --format '{format}' <pulled id>"),
                            ]
                        })
                        .collect(),
                )
            }
            Step::StopRegistry => (
                if self.local.as_ref().is_some_and(|l| l.keep) {
                    "leave the registry running (--keep)".into()
                } else {
                    "stop the registry and remove its storage".into()
                },
                vec![],
            ),
        }
    }

    /// `--dry-run`: the plan, then every step as the executor would run it.
    fn print(&self) {
        println!("dry run: image release would run these, in order, and change nothing:");
        println!(
            "\nplan: tag {}, platforms {}, targets {}{}",
            self.plan.tag,
            self.plan.platform_list(),
            self.plan.targets.join(", "),
            if self.plan.prune_previous {
                ", prune the superseded index"
            } else {
                ""
            }
        );
        for warning in &self.plan.warnings {
            println!("   warning: {warning}");
        }
        for (number, step) in self.steps().into_iter().enumerate() {
            let (title, lines) = self.describe(step);
            println!("\n{}. {title}", number + 1);
            for line in lines {
                println!("   {}", show_placeholder(&line));
            }
        }
    }

    /// Runs the steps in order; the throwaway registry is stopped whatever happens (unless `--keep`).
    fn execute(&self, session: &mut Session) -> anyhow::Result<()> {
        let started = Instant::now();
        session.registries.allow_insecure(&self.insecure);
        println!(
            "==> release {} ({}) from {} to {}",
            self.plan.tag,
            self.plan.platform_list(),
            short(session.git()?.head.as_deref().unwrap_or("")),
            self.plan.targets.join(", ")
        );
        let steps = self.steps();
        let mut progress = Progress::default();
        let mut result = Ok(());
        for (number, &step) in steps.iter().enumerate() {
            let (title, _) = self.describe(step);
            println!("\n==> {}/{} {title}", number + 1, steps.len());
            let phase = Instant::now();
            result = self.run_step(session, step, &mut progress);
            if result.is_err() {
                break;
            }
            progress.phases.push((phase_name(step), phase.elapsed()));
        }
        if let Some(registry) = progress.registry.take() {
            // A failed release still stops what it started.
            self.stop_registry(&session.sh, registry);
        }
        result?;
        let published = progress.published.expect("the manifest step ran");
        println!("\nreleased {} = {}", published.tag, published.digest);
        for (name, duration) in &progress.phases {
            println!("  {name:<22} {:>7.1} s", duration.as_secs_f64());
        }
        println!(
            "  {:<22} {:>7.1} s",
            "total",
            started.elapsed().as_secs_f64()
        );
        match &self.local {
            Some(local) if !local.keep => println!(
                "\nthe image stays in local storage (the registry stopped; --keep leaves it running):\n  \
                 podman run --rm --network=host {}",
                self.reference()
            ),
            _ => {
                let tls = if self.local.is_some() {
                    "--tls-verify=false "
                } else {
                    ""
                };
                println!("\npull it:");
                for target in &self.targets {
                    println!("  podman pull {tls}{target}:{}", self.plan.tag);
                }
            }
        }
        Ok(())
    }

    fn run_step(
        &self,
        session: &mut Session,
        step: Step,
        progress: &mut Progress,
    ) -> anyhow::Result<()> {
        match step {
            Step::StartRegistry => {
                let local = self.local.as_ref().expect("a local release");
                let registry =
                    LocalRegistry::start_on(&session.sh, local.runner.clone(), &local.address)?;
                println!(
                    "throwaway registry on {} ({}; storage {})",
                    registry.address,
                    match &local.runner {
                        Runner::Binary(path) => path.display().to_string(),
                        Runner::Podman { image } => format!("podman, image {image}"),
                    },
                    registry.storage().display()
                );
                progress.registry = Some(registry);
            }
            Step::LocalBuilder => {
                build::require_podman()?;
                let dir = session.target_dir.join("ci");
                crate::ci::base_images::ensure_rust_builder(&session.sh, &dir, self.build.build_platform)
                    .context(
                        "make the local Rust builder; `cargo xtask ci --setup-only` (as root) installs what it needs",
                    )?;
            }
            Step::CheckBaseImages => {
                build::require_podman()?;
                check_base_images(&session.sh, &self.base_images()?)?;
                if self.digest_dir.exists() {
                    std::fs::remove_dir_all(&self.digest_dir).with_context(|| {
                        format!("remove old digests in {}", self.digest_dir.display())
                    })?;
                }
            }
            Step::Build(platform) => {
                build::build_platform(session, &self.build, platform)?;
            }
            Step::Push(platform) => {
                let _group = session.github.group(&format!("image push {platform}"));
                push::push(session, &self.push_request(platform))?;
            }
            Step::Manifest => {
                let request = manifest::Request {
                    tag: self.plan.tag.clone(),
                    floating: self.plan.floating_tags.clone(),
                    children: manifest::read_digest_dir(&self.digest_dir, &self.platforms())?
                        .into_iter()
                        .map(|(child, _)| child)
                        .collect(),
                    prune_previous: self.plan.prune_previous,
                    monotonic: self.monotonic(),
                    settle: session.settle,
                };
                session.registries.set_purpose("publish to");
                let repos = manifest::connect(session, &self.targets)?;
                let access = prune::Access::from_session(session, &self.targets)?;
                let urls = Urls::new(&self.targets, &self.insecure);
                progress.published = Some(manifest::publish_and_report(
                    &session.github,
                    &repos,
                    &access,
                    &request,
                    &urls,
                    &*session,
                )?);
            }
            Step::PullBack => {
                verify_pulls(
                    &session.sh,
                    &self.reference(),
                    &self.platforms(),
                    self.build.build_platform,
                )?;
            }
            Step::StopRegistry => {
                if let Some(registry) = progress.registry.take() {
                    self.stop_registry(&session.sh, registry);
                }
            }
        }
        Ok(())
    }

    fn stop_registry(&self, sh: &Shell, registry: LocalRegistry) {
        if self.local.as_ref().is_some_and(|l| l.keep) {
            println!(
                "the throwaway registry keeps running on {}; stop it with: {}",
                registry.address,
                registry.stop_hint()
            );
        } else {
            registry.stop(sh);
            println!("throwaway registry stopped (pass --keep to leave it running)");
        }
    }

    fn push_request(&self, platform: Platform) -> push::Request {
        push::Request {
            platform,
            export_dir: self.build.export_dir(platform),
            targets: self.targets.clone(),
            digest_dir: self.digest_dir.clone(),
            insecure: self.insecure.clone(),
        }
    }

    /// The first target with the tag: what the pull-back check pulls.
    fn reference(&self) -> String {
        format!("{}:{}", self.targets[0], self.plan.tag)
    }

    fn base_images(&self) -> anyhow::Result<Vec<(String, String)>> {
        bases_of(&self.build)
    }
}

/// The base images `build` pulls, from its Containerfile's defaults and its build arguments.
pub fn bases_of(build: &build::BuildPlan) -> anyhow::Result<Vec<(String, String)>> {
    let containerfile = std::fs::read_to_string(&build.containerfile)
        .with_context(|| format!("read {}", build.containerfile.display()))?;
    Ok(containerfile::base_images(
        &containerfile::defaults(&containerfile),
        &build.build_args,
    ))
}

/// Puts the local stand-in `cargo xtask ci` makes (the Rust builder, or `scratch` for the runtime base) in place of
/// each configured base that can be neither found locally nor pulled, and says so; a base given as a
/// `--build-arg` (`given`) is kept. Returns whether the local Rust builder is one of them (it may need building).
pub fn use_local_bases(
    sh: &Shell,
    build: &mut build::BuildPlan,
    given: &[String],
) -> anyhow::Result<bool> {
    let given: Vec<&str> = given
        .iter()
        .filter_map(|arg| arg.split_once('=').map(|(key, _)| key.trim()))
        .collect();
    let mut local_builder = false;
    for (arg, image) in bases_of(build)? {
        let Some(stand_in) = local_stand_in(&arg).filter(|_| !given.contains(&arg.as_str())) else {
            continue;
        };
        if let Err(why) = base_state(sh, &image) {
            println!(
                "base image {arg}={image} cannot be pulled ({why}); using {stand_in} instead, as \
                 `cargo xtask ci` does (pass --build-arg {arg}=… to choose)"
            );
            local_builder |= stand_in != "scratch";
            build.build_args.insert(arg, stand_in.to_owned());
        }
    }
    Ok(local_builder)
}

/// The phase a step is timed as, in the closing table.
fn phase_name(step: Step) -> String {
    match step {
        Step::StartRegistry => "start the registry".into(),
        Step::LocalBuilder => "local Rust builder".into(),
        Step::CheckBaseImages => "check base images".into(),
        Step::Build(platform) => format!("build {platform}"),
        Step::Push(platform) => format!("push {platform}"),
        Step::Manifest => "manifest".into(),
        Step::PullBack => "pull back and check".into(),
        Step::StopRegistry => "stop the registry".into(),
    }
}

/// A dry run's placeholder address, as shown.
fn show_placeholder(line: &str) -> String {
    line.replace(&format!("{PLACEHOLDER_ADDRESS}/"), "127.0.0.1:<free port>/")
        .replace(&format!("{PLACEHOLDER_ADDRESS} "), "127.0.0.1:<free port> ")
}

/// How long the reachability check of one base image may take.
const BASE_TIMEOUT: &str = "20s";

/// Fails before any build when a base image is neither in local storage nor reachable, saying how to point the
/// build at local ones (docker.io may be out of reach, as behind some proxies).
pub fn check_base_images(sh: &Shell, images: &[(String, String)]) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for (arg, image) in images {
        match base_state(sh, image) {
            Ok(where_) => println!("base image {arg}={image}: {where_}"),
            Err(why) => missing.push((arg.clone(), image.clone(), why)),
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(exit::build_failed(unreachable_bases_message(&missing)))
    }
}

/// Where a base image comes from: local storage or its registry; `Err(why)` when neither has it.
fn base_state(sh: &Shell, image: &str) -> Result<&'static str, String> {
    if cmd!(sh, "podman image exists {image}")
        .quiet()
        .ignore_stderr()
        .run()
        .is_ok()
    {
        return Ok("in local storage");
    }
    let transport = format!("docker://{}", containerfile::pullable(image));
    let output = cmd!(
        sh,
        "skopeo --command-timeout {BASE_TIMEOUT} inspect --raw --retry-times 0 {transport}"
    )
    .quiet()
    .ignore_status()
    .output()
    .map_err(|err| format!("could not run skopeo ({err})"))?;
    if output.status.success() {
        return Ok("reachable, podman will pull it");
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let why = stderr
        .lines()
        .last()
        .unwrap_or("skopeo could not read it")
        .trim();
    Err(why
        .rsplit_once("msg=")
        .map_or(why, |(_, msg)| msg.trim_matches('"'))
        .to_owned())
}

/// The local stand-in for a base `--local` cannot pull: the Rust builder `cargo xtask ci` makes, or no runtime
/// base at all (the binary is static).
fn local_stand_in(arg: &str) -> Option<&'static str> {
    match arg {
        "RUST_IMAGE" => Some(crate::ci::base_images::RUST_BUILDER),
        "RUNTIME_IMAGE" => Some("scratch"),
        _ => None,
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

/// The commit a tag points at (`None`: no such tag).
pub type TagCommit = Option<String>;

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// Everything a version release needs before anything is built; every failure is listed with its remedy (exit 2).
pub fn check_version_release(
    version: &str,
    git: &Git,
    tag_commit: &TagCommit,
    cargo_version: &str,
) -> anyhow::Result<semver::Version> {
    let number = meta::version_of_tag(version).ok_or_else(|| {
        exit::invalid(format!(
            "--version {version:?} is not a release version: use `v` and three numbers without leading zeros, \
             like --version v1.2.3 (the git tag's name)"
        ))
    })?;
    let head = git.head.as_deref().unwrap_or("");
    let mut problems = Vec::new();
    match tag_commit {
        None => problems.push(format!(
            "git tag {version} does not exist; create it at the commit to release: `git tag {version}` \
             (then `git push origin {version}` to publish the tag)"
        )),
        Some(commit) if commit != head => problems.push(format!(
            "git tag {version} points at {}, not at HEAD ({}); check the tag out to release it \
             (`git checkout {version}`), or, if HEAD is the release, move the tag: `git tag -f {version}`",
            short(commit),
            short(head)
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
    if semver::Version::parse(cargo_version).ok().as_ref() != Some(&number) {
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
pub fn latest_warnings(git: &Git) -> Vec<String> {
    let mut warnings = Vec::new();
    match git.branch.as_deref() {
        Some("main") => {}
        Some(branch) => warnings.push(format!(
            "publishing `latest` from branch {branch}, not main: CI publishes `latest` only from main"
        )),
        None => warnings.push(format!(
            "publishing `latest` from a detached HEAD ({}), not main: CI publishes `latest` only from main",
            short(git.head.as_deref().unwrap_or(""))
        )),
    }
    if !git.changes.is_empty() {
        warnings.push(format!(
            "the working tree has {} uncommitted change(s): the image holds them, but its revision label says {}",
            git.changes.len(),
            short(git.head.as_deref().unwrap_or(""))
        ));
    }
    warnings
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

    fn git(changes: &[&str]) -> Git {
        Git {
            head: Some(HEAD.into()),
            commit_time: Some(1_700_000_000),
            source: None,
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
                (Ok(number), Ok(want)) => assert_eq!(number.to_string(), want, "{version}"),
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
