//! `cargo xtask image build`: one `podman build --format docker --timestamp` per platform, each exported to
//! `target/image/<os>-<arch>/` (podman's `dir:` transport: the v2s2 manifest and its blobs as files) for the push
//! stage, its config freed of build-time ids and given meta's labels and time ([`normalise`]) so that the same
//! sources give the same digest anywhere, with its CycloneDX SBOM beside it in
//! `target/image/<os>-<arch>.cdx.json` ([`sbom`]).
//!
//! The plan and every argv are pure functions of the configuration, the request (with the labels `image meta`
//! decided) and a few facts of the session (root, target directory, the build machine's arch); only
//! `build_platform` runs anything.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use xshell::{cmd, Shell};

mod normalise;
pub mod sbom;

use crate::config::ImageConfig;
use crate::image::containerfile::RustTarget;
use crate::image::{containerfile, meta};
use crate::oci::{Digest, ImageManifest, Platform};
use crate::registry::client::{Options, Registry};
use crate::registry::credentials::Source;
use crate::registry::reference::allows_plain_http;
use crate::registry::retry::Policy;
use crate::registry::{Credentials, Reference};
use crate::session::Session;
use crate::{exit, flags};

/// Build arguments the pipeline sets itself, per platform; a user value would contradict `--platform`.
const RESERVED_ARGS: [&str; 2] = ["BUILDPLATFORM", "TARGETARCH"];

/// The label that holds the image's time.
const CREATED: &str = "org.opencontainers.image.created";

/// `podman build --timestamp`: the time of every file a build adds and of each history entry it writes (the Unix
/// epoch, as reproducible images commonly carry).
const LAYER_TIME: &str = "0";

/// How long the layer cache may take to answer before the build goes on without it.
const CACHE_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the caller asks for (from `image build` or `image release` flags).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildRequest {
    /// Platforms to build; empty means the configured ones.
    pub platforms: Vec<Platform>,
    /// `K=V` build arguments; each overrides the configured default of the same key.
    pub build_args: Vec<String>,
    /// Local image name (`localhost/app:local`); each platform is tagged `<tag>-<arch>`.
    pub tag: Option<String>,
    /// Registry repository used as a layer cache; default: the configured one.
    pub cache_repo: Option<String>,
    /// The image's labels, as `image meta` decided them ([`meta::labels`]).
    pub labels: BTreeMap<String, String>,
}

/// Facts about the checkout and the machine, from the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// The build context (the workspace root); the Containerfile path is relative to it.
    pub context: PathBuf,
    /// Where each platform is exported, as `<out_dir>/<os>-<arch>/` (`<target dir>/image`).
    pub out_dir: PathBuf,
    /// The machine the build stage runs on (podman's BUILDPLATFORM).
    pub build_platform: Platform,
    /// The Containerfile's text (for the final stage's base).
    pub containerfile: String,
}

impl Facts {
    pub fn of(session: &Session) -> anyhow::Result<Facts> {
        let path = session.root.join(&session.config()?.containerfile);
        Ok(Facts {
            context: session.root.clone(),
            out_dir: session.target_dir.join("image"),
            build_platform: native_platform()?,
            containerfile: std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "read {}; set containerfile in [package.metadata.image] to the image's Containerfile",
                    path.display()
                )
            })?,
        })
    }
}

/// The platform of this machine, where the build stage runs.
pub fn native_platform() -> anyhow::Result<Platform> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(Platform::LINUX_AMD64),
        "aarch64" => Ok(Platform::LINUX_ARM64),
        other => Err(exit::invalid(format!(
            "this machine's architecture {other} cannot run the build stage; build on x86_64 or aarch64 Linux"
        ))),
    }
}

/// Everything needed to build and export each platform, computed before anything runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildPlan {
    pub context: PathBuf,
    pub containerfile: PathBuf,
    pub platforms: Vec<Platform>,
    pub build_platform: Platform,
    /// User build arguments after merging the configured defaults with the request.
    pub build_args: BTreeMap<String, String>,
    /// OCI labels (org.opencontainers.image.*): meta's, and the final stage's base where known.
    pub labels: BTreeMap<String, String>,
    /// The Rust target the Containerfile compiles each platform for (what its SBOM is resolved for).
    pub rust_targets: BTreeMap<Platform, RustTarget>,
    /// Local image name; platform `p` is tagged `local_image(p)`.
    pub image: String,
    /// `<target>/image`: each platform is exported to `<out_dir>/<os>-<arch>/`.
    pub out_dir: PathBuf,
    pub cache_repo: Option<String>,
    /// The cache can be read but not written (found by [`BuildPlan::check_cache`]): no `--cache-to`.
    pub cache_read_only: bool,
    /// A private auth file (0600, in a 0700 directory) with the cache registry's credentials from the
    /// environment, for `podman build --authfile`; see [`PrivateAuthFile`].
    pub authfile: Option<PathBuf>,
    /// `podman build --no-cache`: every step runs again, none comes from local storage or a registry.
    pub no_cache: bool,
}

/// One platform's build, exported for the push stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportedImage {
    pub platform: Platform,
    /// The local image (`localhost/app:local-arm64`).
    pub image: String,
    /// The export directory (manifest.json and one file per blob).
    pub dir: PathBuf,
    /// sha256 of manifest.json: the digest the image has in every registry it is pushed to.
    pub manifest_digest: Digest,
    /// The CycloneDX SBOM beside the export, and how many components it lists.
    pub sbom: PathBuf,
    pub sbom_components: usize,
    /// Bytes a pull transfers: config plus compressed layers.
    pub compressed_size: u64,
    pub build_time: Duration,
    pub export_time: Duration,
}

impl BuildPlan {
    pub fn new(
        config: &ImageConfig,
        request: &BuildRequest,
        facts: &Facts,
    ) -> anyhow::Result<BuildPlan> {
        let platforms = if request.platforms.is_empty() {
            config.platforms.clone()
        } else {
            request.platforms.clone()
        };
        let mut build_args = config.build_args.clone();
        for arg in &request.build_args {
            let (key, value) = arg
                .split_once('=')
                .filter(|(key, _)| !key.trim().is_empty())
                .ok_or_else(|| exit::invalid(format!("--build-arg {arg:?} must be KEY=VALUE")))?;
            build_args.insert(key.trim().to_owned(), value.to_owned());
        }
        if let Some(key) = RESERVED_ARGS
            .iter()
            .find(|key| build_args.contains_key(**key))
        {
            return Err(exit::invalid(format!(
                "build argument {key} is set by the pipeline from --platform and the build machine; remove it"
            )));
        }

        let cache_repo = request
            .cache_repo
            .clone()
            .or_else(|| config.cache_repo.clone());
        if let Some(repo) = &cache_repo {
            Reference::parse(repo)
                .context("--cache-repo (or cache-repo in [package.metadata.image])")?;
        }

        let image = match &request.tag {
            Some(tag) if !tag.trim().is_empty() => tag.trim().to_owned(),
            Some(_) => return Err(exit::invalid("--tag must not be empty")),
            None => format!("localhost/{}:local", config.name),
        };
        // The image's time, written into the exported config: the one meta decided.
        if let Some(created) = request.labels.get(CREATED) {
            meta::parse_rfc3339(created).ok_or_else(|| {
                exit::invalid(format!(
                    "the label {CREATED}={created:?} is not a time like 2023-11-14T22:13:20Z (whole seconds, \
                     UTC); pass the labels `image meta` wrote"
                ))
            })?;
        }
        let mut labels = request.labels.clone();
        labels.extend(containerfile::base_labels(
            containerfile::final_base(&facts.containerfile, &build_args).as_deref(),
        ));
        let mut rust_targets = BTreeMap::new();
        for &platform in &platforms {
            let target = containerfile::rust_target(&facts.containerfile, &build_args, platform.arch)
                .ok_or_else(|| {
                    exit::invalid(format!(
                        "{} sets no RUST_TARGET for {platform}, so its SBOM cannot say what is compiled: set \
                         `ENV RUST_TARGET=<triple>` in the stage the final stage copies the app from",
                        config.containerfile.display()
                    ))
                })?;
            rust_targets.insert(platform, target);
        }
        Ok(BuildPlan {
            context: facts.context.clone(),
            containerfile: facts.context.join(&config.containerfile),
            platforms,
            build_platform: facts.build_platform,
            build_args,
            labels,
            rust_targets,
            image,
            out_dir: facts.out_dir.clone(),
            cache_repo,
            cache_read_only: false,
            authfile: None,
            no_cache: false,
        })
    }

    /// The local image of one platform: `<image>-<arch>` when the name has a tag, else `<image>:<arch>`.
    pub fn local_image(&self, platform: Platform) -> String {
        let name_part = self.image.rsplit('/').next().unwrap_or(&self.image);
        if name_part.contains(':') {
            format!("{}-{}", self.image, platform.arch)
        } else {
            format!("{}:{}", self.image, platform.arch)
        }
    }

    pub fn export_dir(&self, platform: Platform) -> PathBuf {
        export_dir(&self.out_dir, platform)
    }

    /// `<out_dir>/<os>-<arch>.cdx.json`: beside the export, not in it, so the push stage never sends it.
    pub fn sbom_path(&self, platform: Platform) -> PathBuf {
        self.out_dir
            .join(format!("{}.cdx.json", platform.dir_name()))
    }

    /// The platform's SBOM, from `cargo metadata` of the build context for its Rust target and the labels.
    pub fn sbom(&self, sh: &Shell, platform: Platform) -> anyhow::Result<sbom::Sbom> {
        let target = self
            .rust_targets
            .get(&platform)
            .with_context(|| format!("{platform} is not a platform of this build"))?;
        let (metadata, lock) = sbom::read_inputs(sh, &self.context, target)?;
        sbom::document(&sbom::Inputs {
            metadata: &metadata,
            lock: &lock,
            labels: &self.labels,
            target: &target.triple,
            platform,
        })
    }

    /// What the dry run says of the labels, as a shell comment: each export's config gets them, and the
    /// `created` label's time as its own.
    pub fn labels_comment(&self) -> String {
        format!(
            "# labels of every exported config (created is also its time): {}",
            serde_json::to_string(&self.labels).expect("a map of strings serialises")
        )
    }

    /// `podman build` for one platform.
    pub fn build_argv(&self, platform: Platform) -> Vec<String> {
        let mut argv: Vec<String> = [
            "podman",
            "build",
            "--format",
            "docker",
            // No io.buildah.version label: the labels are meta's, and the digest must not depend on the podman.
            "--identity-label=false",
        ]
        .map(str::to_owned)
        .into();
        argv.extend(
            [
                // One time for every build of every commit: a layer's bytes are its files', so a cache hit from
                // an earlier commit gives the very layer a clean build would (the image's time is set at export).
                "--timestamp",
                LAYER_TIME,
                "--platform",
                &platform.to_string(),
                // cargo inside RUN needs the network, and rootless podman here cannot use slirp4netns.
                "--network=host",
                "--file",
                &self.containerfile.display().to_string(),
                "--tag",
                &self.local_image(platform),
                "--build-arg",
                &format!("BUILDPLATFORM={}", self.build_platform),
                "--build-arg",
                &format!("TARGETARCH={}", platform.arch),
            ]
            .map(str::to_owned),
        );
        for (key, value) in &self.build_args {
            argv.extend(["--build-arg".to_owned(), format!("{key}={value}")]);
        }
        if let Some(authfile) = &self.authfile {
            argv.extend(["--authfile".into(), authfile.display().to_string()]);
        }
        if self.no_cache {
            argv.push("--no-cache".into());
        }
        if let Some(repo) = &self.cache_repo {
            argv.extend(["--layers".into(), "--cache-from".into(), repo.clone()]);
            if !self.cache_read_only {
                argv.extend(["--cache-to".into(), repo.clone()]);
            }
            // podman has no per-registry switch: for a loopback cache (plain HTTP) TLS verification is off for
            // the whole build, base image pulls included.
            if Reference::parse(repo)
                .is_ok_and(|r| allows_plain_http(&r.api_host, &r.registry, &[]))
            {
                argv.push("--tls-verify=false".into());
            }
        }
        argv.push(self.context.display().to_string());
        argv
    }

    /// Keeps the layer cache as far as it can be used now: read and write, read only (`--cache-from` alone: a
    /// developer without push rights still gets CI's layers), or not at all, with a warning. A missing or
    /// unreachable cache must never fail a build, and podman fails a build whose `--cache-to` push is refused, so
    /// the probe writes: it uploads the empty blob (one attempt, short timeouts), and on refusal reads it.
    /// Credentials found in the environment reach podman in a private auth file that lives as long as the
    /// returned guard (podman reads only auth files, and its environment holds no secrets); credentials from the
    /// user's own auth files and helpers podman finds itself.
    pub fn check_cache(&mut self, session: &mut Session) -> Option<PrivateAuthFile> {
        let repo = self.cache_repo.clone()?;
        let started = Instant::now();
        let (outcome, authfile) = match probe_cache(session, &repo, &self.out_dir) {
            Ok((refused, authfile)) => (Ok(refused), authfile),
            Err(err) => (Err(err), None),
        };
        self.authfile = authfile.as_ref().map(|a| a.path.clone());
        match outcome {
            Ok(None) => println!(
                "==> layer cache {repo}: read and write (checked in {:.1} s)",
                started.elapsed().as_secs_f64()
            ),
            Ok(Some(refused)) => {
                eprintln!(
                    "warning: the layer cache {repo} cannot be written ({refused:#}); reading it only, so this \
                     build's new layers are not cached"
                );
                self.cache_read_only = true;
            }
            Err(err) => {
                eprintln!(
                    "warning: the layer cache {repo} cannot be used ({err:#}); building without it, so every \
                     step runs unless podman's local storage has it"
                );
                self.cache_repo = None;
            }
        }
        authfile
    }

    /// `podman push` into the export directory, gzip layers and a v2s2 manifest, as the registries will get them.
    pub fn export_argv(&self, platform: Platform) -> Vec<String> {
        vec![
            "podman".into(),
            "push".into(),
            "--quiet".into(),
            "--format".into(),
            "v2s2".into(),
            "--compress".into(),
            self.local_image(platform),
            format!("dir:{}", self.export_dir(platform).display()),
        ]
    }
}

/// An auth file only podman reads, for one build: 0600 in a fresh 0700 directory, removed when dropped.
#[derive(Debug)]
pub struct PrivateAuthFile {
    dir: PathBuf,
    pub path: PathBuf,
}

impl PrivateAuthFile {
    pub fn new(registry: &str, credentials: &Credentials) -> anyhow::Result<PrivateAuthFile> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir = std::env::temp_dir().join(format!(
            "xtask-auth-{}-{}",
            std::process::id(),
            Digest::of(format!("{registry}{:?}", Instant::now()).as_bytes()).short()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("create the private directory {}", dir.display()))?;
        let guard = PrivateAuthFile {
            path: dir.join("auth.json"),
            dir,
        };
        let entry = serde_json::json!({
            "auths": { registry: { "auth": credentials.basic_header().trim_start_matches("Basic ") } }
        });
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&guard.path)
            .and_then(|mut file| file.write_all(entry.to_string().as_bytes()))
            .with_context(|| format!("write {}", guard.path.display()))?;
        Ok(guard)
    }
}

impl Drop for PrivateAuthFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Ok((None, _)): read and write; Ok((Some(why), _)): read only, writing failed with `why`; Err: not usable. The
/// auth file is there when the credentials came from the environment.
fn probe_cache(
    session: &mut Session,
    repo: &str,
    scratch_dir: &Path,
) -> anyhow::Result<(Option<anyhow::Error>, Option<PrivateAuthFile>)> {
    let target = Reference::parse(repo)?;
    let found = session.registries.credentials(&session.sh, &target)?;
    let login = found
        .as_ref()
        .filter(|found| matches!(found.source, Source::Env { .. }))
        .map(|found| found.credentials.clone());
    let options = Options {
        policy: Policy {
            attempts: 1,
            ..Policy::default()
        },
        connect_timeout: CACHE_PROBE_TIMEOUT,
        io_timeout: CACHE_PROBE_TIMEOUT,
        purpose: "write to the layer cache at",
        ..Options::default()
    };
    let registry = Registry::new(&target, found, options);
    std::fs::create_dir_all(scratch_dir)
        .with_context(|| format!("create {}", scratch_dir.display()))?;
    let empty = scratch_dir.join(".cache-probe");
    std::fs::write(&empty, b"").with_context(|| format!("write {}", empty.display()))?;
    // The empty blob: harmless, and the same every time.
    let empty_blob = Digest::of(b"");
    let refused = match registry.upload_blob(&target.repository, &empty_blob, &empty, None) {
        Ok(_) => None,
        Err(write) => {
            registry
                .blob_exists(&target.repository, &empty_blob)
                .map_err(|read| read.context(format!("writing failed too: {write:#}")))?;
            Some(write)
        }
    };
    let authfile = match login {
        Some(credentials) => Some(PrivateAuthFile::new(&target.registry, &credentials)?),
        None => None,
    };
    Ok((refused, authfile))
}

/// `<out_dir>/<os>-<arch>`: where `image build` leaves a platform's export and `image push` finds it.
pub fn export_dir(out_dir: &Path, platform: Platform) -> PathBuf {
    out_dir.join(platform.dir_name())
}

/// One argv as a shell line that pastes back exactly (for --dry-run).
pub fn shell_line(argv: &[String]) -> String {
    let mut line = String::new();
    for (i, arg) in argv.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        let plain = !arg.is_empty()
            && arg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-+=:,./@%".contains(&b));
        if plain {
            line.push_str(arg);
        } else {
            let _ = write!(line, "'{}'", arg.replace('\'', r"'\''"));
        }
    }
    line
}

/// Fails with the way to install podman when it is not on PATH.
pub fn require_podman() -> anyhow::Result<()> {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("podman").is_file()));
    if found {
        Ok(())
    } else {
        anyhow::bail!(
            "podman is not installed (not found on PATH); install it: `sudo apt-get install -y podman` on \
             Debian/Ubuntu, `sudo dnf install -y podman` on Fedora, see https://podman.io/docs/installation; \
             or run `cargo xtask ci` as root on Debian to install everything the pipeline needs"
        )
    }
}

fn run_argv(sh: &Shell, argv: &[String]) -> xshell::Result<()> {
    let (program, args) = argv.split_first().expect("an argv has a program");
    cmd!(sh, "{program} {args...}").run()
}

/// Builds one platform and exports it; a failure exits 3 and names the platform.
pub fn build_platform(
    session: &mut Session,
    plan: &BuildPlan,
    platform: Platform,
) -> anyhow::Result<ExportedImage> {
    println!("==> build {platform}");
    // Checked here, per platform, so that every caller (image build, image release) gets a build that a broken
    // cache cannot fail.
    let mut checked;
    let _authfile;
    let plan = if plan.cache_repo.is_some() {
        checked = plan.clone();
        _authfile = checked.check_cache(session);
        &checked
    } else {
        plan
    };
    let sh = &session.sh;
    // Before the build, which takes minutes: a Cargo.lock the build would refuse fails here already.
    let sbom = plan
        .sbom(sh, platform)
        .map_err(|err| exit::build_failed(format!("the SBOM of {platform}: {err:#}")))?;
    let started = Instant::now();
    run_argv(sh, &plan.build_argv(platform)).map_err(|err| {
        exit::build_failed(format!(
            "build {platform} failed; see podman's output above ({err})"
        ))
    })?;
    let build_time = started.elapsed();

    let started = Instant::now();
    let dir = plan.export_dir(platform);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("remove the old export {}", dir.display()))?;
    }
    std::fs::create_dir_all(&plan.out_dir)
        .with_context(|| format!("create {}", plan.out_dir.display()))?;
    run_argv(sh, &plan.export_argv(platform)).map_err(|err| {
        exit::build_failed(format!(
            "export {platform} to {} failed ({err})",
            dir.display()
        ))
    })?;
    let manifest = normalise::export(&dir, &plan.labels).map_err(|err| {
        exit::build_failed(format!(
            "normalise the export of {platform} in {}: {err:#}",
            dir.display()
        ))
    })?;
    let compressed_size = exported_size(&manifest).map_err(|err| {
        exit::build_failed(format!(
            "export of {platform} in {}: {err:#}",
            dir.display()
        ))
    })?;
    // Written once the export is there, so an SBOM always describes the export beside it.
    let sbom_path = plan.sbom_path(platform);
    std::fs::write(&sbom_path, &sbom.bytes)
        .with_context(|| format!("write the SBOM {}", sbom_path.display()))?;
    let exported = ExportedImage {
        platform,
        image: plan.local_image(platform),
        manifest_digest: Digest::of(&manifest),
        sbom: sbom_path,
        sbom_components: sbom.components,
        dir,
        compressed_size,
        build_time,
        export_time: started.elapsed(),
    };
    println!(
        "==> {platform}: built in {:.1} s, exported in {:.1} s to {} ({}, {:.1} MB compressed)",
        exported.build_time.as_secs_f64(),
        exported.export_time.as_secs_f64(),
        exported.dir.display(),
        exported.manifest_digest,
        exported.compressed_size as f64 / 1e6,
    );
    println!(
        "==> {platform}: SBOM (CycloneDX 1.6) in {}, {} components",
        exported.sbom.display(),
        exported.sbom_components
    );
    Ok(exported)
}

/// Config plus layer sizes of a v2s2 manifest (what a pull transfers).
pub fn exported_size(manifest: &[u8]) -> anyhow::Result<u64> {
    let manifest =
        ImageManifest::parse(manifest).map_err(|why| anyhow::anyhow!("manifest.json is {why}"))?;
    anyhow::ensure!(
        manifest.media_type.as_deref() == Some(crate::oci::media_type::DOCKER_MANIFEST),
        "manifest.json is not a Docker v2s2 manifest (mediaType {:?})",
        manifest.media_type.unwrap_or_default()
    );
    Ok(manifest.blobs().map(|blob| blob.size).sum())
}

impl flags::Build {
    pub fn run(self, session: &mut Session) -> anyhow::Result<()> {
        let config = session.config()?.clone();
        let mut platforms = Vec::new();
        for list in &self.platform {
            for platform in Platform::parse_list(list)? {
                if !platforms.contains(&platform) {
                    platforms.push(platform);
                }
            }
        }
        let request = BuildRequest {
            platforms,
            build_args: self.build_arg,
            tag: self.tag,
            cache_repo: self.cache_repo,
            labels: match &self.labels {
                Some(json) => parse_labels(json)?,
                // A build by hand: the labels meta gives a build of this checkout at Cargo.toml's version.
                None => meta::labels(
                    &config,
                    &config.version,
                    session.revision()?.as_deref(),
                    session.created()?,
                ),
            },
        };
        let plan = BuildPlan::new(&config, &request, &Facts::of(session)?)?;
        if self.dry_run {
            for &platform in &plan.platforms {
                println!("{}", shell_line(&plan.build_argv(platform)));
                println!("{}", shell_line(&plan.export_argv(platform)));
            }
            // Not a command: the labels are written into each exported config, not passed to podman.
            println!("{}", plan.labels_comment());
            return Ok(());
        }
        require_podman()?;
        let mut built = Vec::new();
        for &platform in &plan.platforms {
            built.push(build_platform(session, &plan, platform)?);
        }
        println!("\nplatform      build    export  size     digest");
        for image in &built {
            println!(
                "{:<13} {:>6.1}s {:>6.1}s  {:>5.1}MB  {}",
                image.platform.to_string(),
                image.build_time.as_secs_f64(),
                image.export_time.as_secs_f64(),
                image.compressed_size as f64 / 1e6,
                image.manifest_digest
            );
        }
        Ok(())
    }
}

/// `--labels`: the JSON object `image meta` writes to its `labels` output.
pub fn parse_labels(json: &str) -> anyhow::Result<BTreeMap<String, String>> {
    serde_json::from_str(json).map_err(|err| {
        exit::invalid(format!(
            "--labels must be a JSON object of strings, as `image meta` writes it to its `labels` output ({err})"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ImageConfig {
        ImageConfig {
            name: "app".into(),
            containerfile: "Containerfile".into(),
            platforms: Platform::ALL.to_vec(),
            targets: vec!["ghcr.io/o/app".into()],
            build_args: [("RUNTIME_IMAGE".to_owned(), "scratch".to_owned())].into(),
            cache_repo: None,
            version_tags: vec![crate::config::VersionTag::Patch],
            runners: BTreeMap::new(),
            version: "1.2.3".into(),
            license: Some("MIT".into()),
            repository: Some("https://github.com/o/app".into()),
            description: None,
        }
    }

    fn facts() -> Facts {
        Facts {
            context: "/src".into(),
            out_dir: "/src/target/image".into(),
            build_platform: Platform::LINUX_AMD64,
            containerfile: include_str!("../../../Containerfile").into(),
        }
    }

    /// What `image meta` decides for commit 0123abc at `version`.
    fn labels(version: &str) -> BTreeMap<String, String> {
        meta::labels(&config(), version, Some("0123abc"), Some(1_700_000_000))
    }

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    /// The start of every `podman build` line: the fixed time, the platform and the local tag.
    fn podman_build(arch: &str, tag: &str) -> String {
        format!(
            "podman build --format docker --identity-label=false --timestamp 0 --platform linux/{arch} \
             --network=host --file /src/Containerfile --tag {tag} --build-arg BUILDPLATFORM=linux/amd64 \
             --build-arg TARGETARCH={arch}"
        )
    }

    #[test]
    fn build_argv_per_request() {
        let cases = [
            (
                BuildRequest {
                    labels: labels("1.2.3"),
                    ..BuildRequest::default()
                },
                Platform::LINUX_ARM64,
                format!(
                    "{} --build-arg RUNTIME_IMAGE=scratch /src",
                    podman_build("arm64", "localhost/app:local-arm64")
                ),
            ),
            (
                BuildRequest {
                    build_args: vec![
                        "RUST_IMAGE=localhost/rb:1".into(),
                        "RUNTIME_IMAGE=localhost/bb:amd64".into(),
                    ],
                    tag: Some("localhost/try".into()),
                    cache_repo: Some("ghcr.io/o/cache".into()),
                    labels: labels("2.0.0"),
                    ..BuildRequest::default()
                },
                Platform::LINUX_AMD64,
                format!(
                    "{} --build-arg RUNTIME_IMAGE=localhost/bb:amd64 \
                     --build-arg RUST_IMAGE=localhost/rb:1 \
                     --layers --cache-from ghcr.io/o/cache --cache-to ghcr.io/o/cache /src",
                    podman_build("amd64", "localhost/try:amd64")
                ),
            ),
            (
                BuildRequest {
                    cache_repo: Some("127.0.0.1:5000/bench/cache".into()),
                    labels: labels("1.2.3"),
                    ..BuildRequest::default()
                },
                Platform::LINUX_AMD64,
                format!(
                    "{} --build-arg RUNTIME_IMAGE=scratch --layers \
                     --cache-from 127.0.0.1:5000/bench/cache --cache-to 127.0.0.1:5000/bench/cache \
                     --tls-verify=false /src",
                    podman_build("amd64", "localhost/app:local-amd64")
                ),
            ),
        ];
        for (request, platform, want) in cases {
            let plan = BuildPlan::new(&config(), &request, &facts()).unwrap();
            assert_eq!(plan.build_argv(platform), words(&want), "{request:?}");
        }
    }

    #[test]
    fn one_build_time_for_every_commit_and_the_labels_kept_for_the_export() {
        let pinned = "sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab";
        let no_runtime_arg = || {
            let mut config = config();
            config.build_args.clear();
            config
        };
        let with_base = |mut labels: BTreeMap<String, String>| {
            labels.insert("org.opencontainers.image.base.digest".into(), pinned.into());
            labels.insert(
                "org.opencontainers.image.base.name".into(),
                "gcr.io/distroless/static-debian12:nonroot".into(),
            );
            labels
        };
        // (configuration, labels asked for, the labels the export is given)
        let cases = [
            (config(), labels("1.2.3"), labels("1.2.3")),
            (config(), labels("2.0.0"), labels("2.0.0")),
            (config(), BTreeMap::new(), BTreeMap::new()),
            (
                no_runtime_arg(),
                labels("1.2.3"),
                with_base(labels("1.2.3")),
            ),
        ];
        let mut argvs = Vec::new();
        for (config, asked, given) in cases {
            let request = BuildRequest {
                labels: asked,
                ..BuildRequest::default()
            };
            let plan = BuildPlan::new(&config, &request, &facts()).unwrap();
            assert_eq!(plan.labels, given, "{request:?}");
            let argv = plan.build_argv(Platform::LINUX_AMD64);
            assert_eq!(value_after(&argv, "--timestamp"), [LAYER_TIME], "{argv:?}");
            assert!(value_after(&argv, "--label").is_empty(), "{argv:?}");
            argvs.push(argv);
        }
        // Commits that differ only in their labels ask podman for the very same build, so every cached step holds.
        assert_eq!(argvs[0], argvs[1]);
        assert_eq!(argvs[1], argvs[2]);

        let request = BuildRequest {
            labels: [(CREATED.to_owned(), "2023-11-14T22:13:20.123Z".to_owned())].into(),
            ..BuildRequest::default()
        };
        let err = BuildPlan::new(&config(), &request, &facts()).unwrap_err();
        assert_eq!(exit::code_of(&err), 2);
        assert!(err.to_string().contains("image meta"), "{err}");
    }

    fn value_after<'a>(argv: &'a [String], flag: &str) -> Vec<&'a str> {
        argv.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn export_argv_and_dirs() {
        let plan = BuildPlan::new(&config(), &BuildRequest::default(), &facts()).unwrap();
        assert_eq!(
            plan.export_argv(Platform::LINUX_AMD64),
            words(
                "podman push --quiet --format v2s2 --compress localhost/app:local-amd64 \
                 dir:/src/target/image/linux-amd64"
            )
        );
        assert_eq!(
            plan.export_dir(Platform::LINUX_ARM64),
            PathBuf::from("/src/target/image/linux-arm64")
        );
        assert_eq!(plan.platforms, Platform::ALL.to_vec());
    }

    #[test]
    fn local_image_names() {
        let cases = [
            (None, "localhost/app:local-arm64"),
            (Some("localhost/x/app:dev"), "localhost/x/app:dev-arm64"),
            (Some("localhost:5000/app"), "localhost:5000/app:arm64"),
            (Some("app"), "app:arm64"),
        ];
        for (tag, want) in cases {
            let request = BuildRequest {
                tag: tag.map(str::to_owned),
                ..BuildRequest::default()
            };
            let plan = BuildPlan::new(&config(), &request, &facts()).unwrap();
            assert_eq!(plan.local_image(Platform::LINUX_ARM64), want);
        }
    }

    #[test]
    fn invalid_requests_exit_2() {
        let cases = [
            (vec!["NOEQUALS"], None, "KEY=VALUE"),
            (vec!["=x"], None, "KEY=VALUE"),
            (vec!["TARGETARCH=arm64"], None, "TARGETARCH"),
            (vec!["BUILDPLATFORM=linux/arm64"], None, "BUILDPLATFORM"),
            (vec![], Some(" "), "--tag"),
        ];
        for (args, tag, mention) in cases {
            let request = BuildRequest {
                build_args: args.iter().map(|a| a.to_string()).collect(),
                tag: tag.map(str::to_owned),
                ..BuildRequest::default()
            };
            let err = BuildPlan::new(&config(), &request, &facts()).unwrap_err();
            assert_eq!(exit::code_of(&err), 2);
            assert!(err.to_string().contains(mention), "{err}");
        }
    }

    #[test]
    fn a_cache_repo_must_be_a_repository() {
        for repo in ["ghcr.io/o/cache:tag", "", "https://ghcr.io/o/cache"] {
            let request = BuildRequest {
                cache_repo: Some(repo.into()),
                ..BuildRequest::default()
            };
            let err = BuildPlan::new(&config(), &request, &facts()).unwrap_err();
            assert_eq!(exit::code_of(&err), 2, "{repo}");
            assert!(format!("{err:#}").contains("--cache-repo"), "{err:#}");
        }
    }

    /// A docker-registry on a free loopback port with `extra` YAML under `storage:`; killed on drop.
    struct Distribution(std::process::Child, PathBuf);

    impl Distribution {
        fn start(name: &str, storage_extra: &str) -> (Distribution, String) {
            let binary =
                crate::image::local_registry::find_binary(std::env::var_os("PATH").as_deref())
                    .expect("docker-registry is installed (apt-get install docker-registry)");
            let dir =
                std::env::temp_dir().join(format!("xtask-cache-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let address = format!(
                "127.0.0.1:{}",
                crate::image::local_registry::free_port().unwrap()
            );
            let config = dir.join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n{storage_extra}\
                     http:\n  addr: {address}\n",
                    dir.join("data").display()
                ),
            )
            .unwrap();
            let child = std::process::Command::new(binary)
                .arg("serve")
                .arg(&config)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let started = Instant::now();
            while std::net::TcpStream::connect(&address).is_err() {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "registry did not start"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            (Distribution(child, dir), address)
        }
    }

    impl Drop for Distribution {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }

    #[test]
    fn the_cache_is_used_as_far_as_it_can_be() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut session = Session::new(root.to_path_buf()).unwrap();
        // No credentials from the environment running the tests.
        session.registries = crate::registry::Registries::new(
            crate::registry::Env::default(),
            crate::registry::Options::default(),
        );
        let scratch =
            std::env::temp_dir().join(format!("xtask-cache-probe-{}", std::process::id()));
        let (_writable, writable) = Distribution::start("rw", "");
        let (_read_only, read_only) =
            Distribution::start("ro", "  maintenance:\n    readonly:\n      enabled: true\n");
        let closed = format!(
            "127.0.0.1:{}",
            crate::image::local_registry::free_port().unwrap()
        );
        // (repository, --cache-from, --cache-to)
        let cases = [
            (format!("{writable}/bench/cache"), true, true),
            (format!("{read_only}/bench/cache"), true, false),
            (format!("{closed}/bench/cache"), false, false),
        ];
        for (repo, read, write) in cases {
            let mut plan = BuildPlan::new(
                &config(),
                &BuildRequest {
                    cache_repo: Some(repo.clone()),
                    ..BuildRequest::default()
                },
                &facts(),
            )
            .unwrap();
            plan.out_dir = scratch.clone();
            let started = Instant::now();
            plan.check_cache(&mut session);
            assert_eq!(plan.cache_repo.is_some(), read, "{repo}");
            assert!(
                started.elapsed() < CACHE_PROBE_TIMEOUT * 2,
                "{repo}: {:?}",
                started.elapsed()
            );
            let argv = plan.build_argv(Platform::LINUX_AMD64).join(" ");
            assert_eq!(argv.contains("--cache-from"), read, "{argv}");
            assert_eq!(argv.contains("--cache-to"), write, "{argv}");
        }
        let _ = std::fs::remove_dir_all(&scratch);
    }

    #[test]
    fn shell_lines_paste_back() {
        let cases = [
            (
                vec!["podman", "build", "--network=host", "/src"],
                "podman build --network=host /src",
            ),
            (vec!["a b", "it's", ""], r"'a b' 'it'\''s' ''"),
            (vec!["--label", "k=v w"], "--label 'k=v w'"),
        ];
        for (argv, want) in cases {
            let argv: Vec<String> = argv.into_iter().map(str::to_owned).collect();
            assert_eq!(shell_line(&argv), want);
        }
    }

    #[test]
    fn exported_sizes() {
        let (a, b, c) = (Digest::of(b"a"), Digest::of(b"b"), Digest::of(b"c"));
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{{"size":10,"digest":"{a}"}},"layers":[{{"size":100,"digest":"{b}"}},{{"size":1000,"digest":"{c}"}}]}}"#
        );
        assert_eq!(exported_size(manifest.as_bytes()).unwrap(), 1110);
        let oci = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"size":1,"digest":"{a}"}},"layers":[]}}"#
        );
        let oci = oci.as_bytes();
        assert!(exported_size(oci).unwrap_err().to_string().contains("v2s2"));
    }
}
