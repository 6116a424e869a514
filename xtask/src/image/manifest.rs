//! `cargo xtask image manifest`: merges the per-platform digests written by `image push` into one Docker manifest
//! list and moves the tag in every target registry, all or nothing.
//!
//! The order is the point of this stage. First everything is read and checked in every registry (each child exists
//! there and its config says the platform it claims; the digest the tag points at now is noted for pruning). Only
//! then is the list pushed by digest everywhere, then the tag moved everywhere, then the tag read back. A failure
//! before the tag moves leaves every registry's tags exactly as they were.
//!
//! The core (digest files, list assembly, the order of calls, checks, outputs) is pure and tested here against an
//! in-memory registry; `xtask/tests/manifest.rs` runs it against a real one.

// Parts of the stage are used once the registry client it drives has landed.
#![allow(dead_code)]

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use xshell::Shell;

use crate::config::{ImageConfig, Platform};
use crate::github::Github;
use crate::image::prune;
use crate::image::push::DigestRecord;
use crate::registry::client;
use crate::registry::credentials::{self, Env};
use crate::registry::reference::parse_targets;
use crate::registry::Reference;
use crate::{exit, flags};

impl flags::Manifest {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let mut config = None;
        let mut config = || -> anyhow::Result<ImageConfig> {
            if config.is_none() {
                config = Some(ImageConfig::load(sh)?);
            }
            Ok(config.clone().expect("just loaded"))
        };
        let targets = if self.to.is_empty() {
            config()?.targets
        } else {
            self.to.clone()
        };
        let platforms = match &self.platforms {
            Some(list) => Platform::parse_list(list)?,
            None => config()?.platforms,
        };
        let targets = parse_targets(&targets)?;
        let tag = check_tag(&self.tag)?;
        let children = read_digest_dir(&sh.current_dir().join(&self.digest_dir), &platforms)?;
        let request = Request {
            prune_previous: self.prune_previous || tag == "latest",
            tag,
            targets: targets.iter().map(ToString::to_string).collect(),
            children,
        };
        let urls = Urls::new(&targets, &self.insecure_registry);
        if self.dry_run {
            print_plan(&request, Some(&assemble_list(&request.children)), &urls);
            return Ok(());
        }
        let env = Env::from_process();
        let gh = Github::from_env();
        let mut clients = Clients::connect(sh, &targets, &self.insecure_registry, &env)?;
        let access = prune::Access::from_process(sh, &targets)?;
        publish_and_report(&gh, &mut clients, &access, &request, &urls)?;
        Ok(())
    }
}

/// The stage as CI and `image release` run it: publish, then prune what `latest` superseded, then the step
/// outputs and summary. A prune failure is a warning: the new tag is live by then.
pub fn publish_and_report(
    gh: &Github,
    clients: &mut Clients,
    access: &prune::Access,
    request: &Request,
    urls: &Urls,
) -> anyhow::Result<Published> {
    let published = {
        let _group = gh.group(&format!(
            "image manifest: publish {} to {} target(s)",
            request.tag,
            request.targets.len()
        ));
        publish(clients, request, &mut |call| {
            println!("  {}", urls.line(call))
        })
    };
    let published = match published {
        Ok(published) => published,
        Err(err) => {
            if gh.actions {
                gh.error("image manifest", &format!("{err:#}"));
            }
            return Err(err);
        }
    };
    println!(
        "published {} = {} in {}",
        published.tag,
        published.digest,
        published.targets.join(", ")
    );
    let mut prune_summary = String::new();
    for superseded in &published.superseded {
        println!(
            "  {}",
            urls.line(&Call::Prune {
                target: superseded.target.clone(),
                previous: superseded.previous.clone(),
            })
        );
        let report = clients.prune_superseded(access, superseded);
        for warning in report.warnings() {
            gh.warning("image manifest: prune", &warning);
        }
        for deleted in &report.deleted {
            println!("  {}: deleted {deleted}", report.target);
        }
        prune_summary.push_str(&report.markdown());
    }
    let outputs = outputs(&published);
    let outputs: Vec<(&str, String)> = outputs
        .iter()
        .map(|(key, value)| (key.as_str(), value.clone()))
        .collect();
    gh.set_outputs(&outputs)?;
    gh.append_summary(&format!("{}{prune_summary}", summary(&published)))?;
    Ok(published)
}

/// Renders calls with their URLs (`GET https://ghcr.io/v2/owner/name/manifests/latest`), like `image push` does.
pub struct Urls {
    bases: Vec<(String, String)>,
}

impl Urls {
    pub fn new(targets: &[Reference], insecure: &[String]) -> Urls {
        Urls {
            bases: targets
                .iter()
                .map(|t| {
                    (
                        t.to_string(),
                        format!("{}/v2/{}", t.base_url(insecure), t.repository),
                    )
                })
                .collect(),
        }
    }

    fn base<'a>(&'a self, target: &'a str) -> &'a str {
        self.bases
            .iter()
            .find(|(name, _)| name == target)
            .map_or(target, |(_, base)| base.as_str())
    }

    pub fn line(&self, call: &Call) -> String {
        match call {
            Call::GetManifest { target, reference } => {
                format!("GET    {}/manifests/{reference}", self.base(target))
            }
            Call::GetBlob { target, digest } => {
                format!("GET    {}/blobs/{digest}", self.base(target))
            }
            Call::PutManifest {
                target,
                reference,
                media_type,
                size,
            } => format!(
                "PUT    {}/manifests/{reference}  ({media_type}{})",
                self.base(target),
                size.map_or(String::new(), |size| format!(", {size} bytes"))
            ),
            Call::Prune { target, previous } => format!(
                "prune  {target}: delete the superseded index {previous} and those of its children no tag uses"
            ),
        }
    }
}

/// One client of the project's OCI client per target repository, behind [`Registry`] (and the prune stage's
/// registry trait, so pruning reuses the same authenticated connections).
pub struct Clients {
    clients: Vec<(Reference, client::Registry)>,
}

impl Clients {
    /// Looks up each target's credentials (env, auth files, helpers) and makes its client.
    pub fn connect(
        sh: &Shell,
        targets: &[Reference],
        insecure: &[String],
        env: &Env,
    ) -> anyhow::Result<Clients> {
        let mut options = client::Options::from_env(insecure.to_vec());
        options.purpose = "publish to";
        let mut clients = Vec::new();
        for target in targets {
            let found = credentials::lookup(sh, &target.registry, &target.repository, env)?;
            clients.push((
                target.clone(),
                client::Registry::new(target, found, options.clone()),
            ));
        }
        Ok(Clients { clients })
    }

    fn get(&self, target: &str) -> anyhow::Result<(&Reference, &client::Registry)> {
        self.clients
            .iter()
            .find(|(reference, _)| reference.to_string() == target)
            .map(|(reference, client)| (reference, client))
            .ok_or_else(|| anyhow::anyhow!("no client for {target}; this is a bug"))
    }

    /// The prune stage's hook: removes the index `latest` pointed to before, now superseded, with the children no
    /// remaining tag uses. Never fails: problems come back in the report.
    pub fn prune_superseded(
        &self,
        access: &prune::Access,
        superseded: &Superseded,
    ) -> prune::PruneReport {
        match self.get(&superseded.target) {
            Ok((reference, _)) => prune::remove_superseded(
                self,
                reference,
                access,
                &superseded.previous,
                &superseded.current,
            ),
            Err(err) => prune::PruneReport {
                target: superseded.target.clone(),
                failures: vec![format!("{err:#}")],
                ..prune::PruneReport::default()
            },
        }
    }
}

impl Registry for Clients {
    fn manifest(&mut self, target: &str, reference: &str) -> anyhow::Result<Option<Fetched>> {
        let (target, client) = self.get(target)?;
        Ok(client
            .get_manifest(&target.repository, reference)?
            .map(|m| Fetched {
                media_type: m.media_type,
                bytes: m.bytes,
                digest: Some(m.digest),
            }))
    }

    fn blob(&mut self, target: &str, digest: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let (target, client) = self.get(target)?;
        match client.get_blob(&target.repository, digest) {
            Ok(bytes) => Ok(Some(bytes)),
            // The client reports a 404 as an error; tell "not there" from "could not read" with a HEAD.
            Err(err) => match client.blob_exists(&target.repository, digest) {
                Ok(None) => Ok(None),
                _ => Err(err),
            },
        }
    }

    fn put_manifest(
        &mut self,
        target: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> anyhow::Result<String> {
        let (target, client) = self.get(target)?;
        client.put_manifest(&target.repository, reference, media_type, bytes)
    }
}

impl prune::Registry for Clients {
    fn tags(&self, target: &Reference) -> anyhow::Result<Vec<String>> {
        let (target, client) = self.get(&target.to_string())?;
        client.list_tags(&target.repository)
    }

    fn resolve(&self, target: &Reference, tag: &str) -> anyhow::Result<Option<String>> {
        let (target, client) = self.get(&target.to_string())?;
        Ok(client
            .head_manifest(&target.repository, tag)?
            .map(|info| info.digest))
    }

    fn fetch(&self, target: &Reference, reference: &str) -> anyhow::Result<Option<prune::Fetched>> {
        let (target, client) = self.get(&target.to_string())?;
        Ok(client
            .get_manifest(&target.repository, reference)?
            .map(|m| prune::Fetched {
                digest: m.digest,
                media_type: m.media_type,
                bytes: m.bytes,
            }))
    }

    fn store(&self, target: &Reference, manifest: &prune::Fetched) -> anyhow::Result<()> {
        let (target, client) = self.get(&target.to_string())?;
        client.put_manifest(
            &target.repository,
            &manifest.digest,
            &manifest.media_type,
            &manifest.bytes,
        )?;
        Ok(())
    }

    fn delete(&self, target: &Reference, digest: &str) -> anyhow::Result<prune::Removal> {
        let (target, client) = self.get(&target.to_string())?;
        Ok(match client.delete_manifest(&target.repository, digest)? {
            client::DeleteOutcome::Deleted => prune::Removal::Deleted,
            client::DeleteOutcome::NotFound => prune::Removal::Gone,
            client::DeleteOutcome::Unsupported => prune::Removal::Refused {
                status: 405,
                message: format!("{target} does not delete manifests (405 UNSUPPORTED)"),
            },
        })
    }
}

/// A legal OCI tag, or exit 2 saying what one looks like.
pub fn check_tag(tag: &str) -> anyhow::Result<String> {
    if is_valid_tag(tag) {
        Ok(tag.to_owned())
    } else {
        Err(exit::invalid(format!(
            "invalid tag {tag:?}: a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-' \
             (like latest, 1.2.3, manual-abc1234)"
        )))
    }
}

/// Prints the calls a run would make, in order (`--dry-run`).
pub fn print_plan(request: &Request, list: Option<&ManifestList>, urls: &Urls) {
    println!(
        "dry run: image manifest would make these registry calls, in order, and stop at the first failure:"
    );
    for call in planned_calls(request, list) {
        println!("  {}", urls.line(&call));
    }
}

/// A Docker image manifest (schema 2): the only child type the list takes, as only it keeps HEALTHCHECK.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The Docker manifest list: the multi-platform index for schema-2 children.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// One platform's image as `image push` left it in every target: what the list's entry says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Child {
    pub platform: Platform,
    /// The CPU variant the config names (`v8`), carried into the list entry.
    pub variant: Option<String>,
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// The file `image push` writes for `platform` under the digest directory (`linux-arm64`).
pub fn digest_file_name(platform: Platform) -> String {
    platform.dir_name()
}

/// `sha256:` and 64 lowercase hex digits: the only digest form the pipeline produces.
pub fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for byte in hash {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// A short form for messages (`sha256:0123456789ab`).
fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

/// Parses and checks one digest file; `path` only names it in errors. Every failure is build-side (exit 3): the
/// push that should have written it did not finish, or wrote something else.
pub fn parse_digest_file(platform: Platform, path: &Path, text: &str) -> anyhow::Result<Child> {
    let rerun = format!(
        "rerun `cargo xtask image push --platform {platform} --digest-dir {}`",
        path.parent().unwrap_or(Path::new(".")).display()
    );
    let file: DigestRecord = serde_json::from_str(text).map_err(|err| {
        exit::build_failed(format!(
            "digest file {} for {platform} is not valid ({err}); {rerun}",
            path.display()
        ))
    })?;
    if !is_sha256_digest(&file.digest) {
        return Err(exit::build_failed(format!(
            "digest file {} for {platform} holds {:?}, not a sha256 digest; {rerun}",
            path.display(),
            file.digest
        )));
    }
    let (os, arch) = (&file.platform.os, &file.platform.architecture);
    if (os.as_str(), arch.as_str()) != (platform.os, platform.arch) {
        return Err(exit::build_failed(format!(
            "digest file {} says it is for {os}/{arch}, but its name says {platform}; {rerun}",
            path.display()
        )));
    }
    if file.media_type != DOCKER_MANIFEST {
        let why = if file.media_type == OCI_MANIFEST {
            "an OCI manifest loses HEALTHCHECK; build with `podman build --format docker` (`cargo xtask image build` does)"
        } else {
            "the list takes Docker schema-2 image manifests only"
        };
        return Err(exit::build_failed(format!(
            "digest file {} for {platform} has media type {}: {why}",
            path.display(),
            file.media_type
        )));
    }
    if file.size == 0 {
        return Err(exit::build_failed(format!(
            "digest file {} for {platform} gives size 0; {rerun}",
            path.display()
        )));
    }
    Ok(Child {
        platform,
        variant: file.platform.variant,
        digest: file.digest,
        size: file.size,
        media_type: file.media_type,
    })
}

/// Reads the digest file of every expected platform from `dir`. A missing one is named with the push to rerun.
pub fn read_digest_dir(dir: &Path, platforms: &[Platform]) -> anyhow::Result<Vec<Child>> {
    if !dir.is_dir() {
        return Err(exit::build_failed(format!(
            "digest directory {} does not exist; run `cargo xtask image push --digest-dir {}` for each platform first",
            dir.display(),
            dir.display()
        )));
    }
    let mut children = Vec::new();
    for &platform in platforms {
        let path = dir.join(digest_file_name(platform));
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(exit::build_failed(format!(
                    "no digest for {platform}: {} is missing, so its build or push did not finish; \
                     rerun `cargo xtask image push --platform {platform} --digest-dir {}` (no tag was moved)",
                    path.display(),
                    dir.display()
                )))
            }
            Err(err) => {
                return Err(err).with_context(|| format!("read digest file {}", path.display()))
            }
        };
        children.push(parse_digest_file(platform, &path, &text)?);
    }
    Ok(order(children))
}

/// The fixed order of the list's entries: amd64, then arm64, whatever order the platforms were given in.
fn order(mut children: Vec<Child>) -> Vec<Child> {
    children.sort_by_key(|child| {
        Platform::ALL
            .iter()
            .position(|p| *p == child.platform)
            .unwrap_or(usize::MAX)
    });
    children
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListJson<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: Vec<EntryJson<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EntryJson<'a> {
    media_type: &'a str,
    size: u64,
    digest: &'a str,
    platform: PlatformJson<'a>,
}

#[derive(Serialize)]
struct PlatformJson<'a> {
    architecture: &'a str,
    os: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
}

/// The manifest list and its digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestList {
    pub bytes: Vec<u8>,
    pub digest: String,
}

/// Assembles the Docker manifest list. The bytes depend only on the children (fixed field and platform order), so
/// every rerun and every registry gets the same digest.
pub fn assemble_list(children: &[Child]) -> ManifestList {
    let children = order(children.to_vec());
    let list = ListJson {
        schema_version: 2,
        media_type: DOCKER_LIST,
        manifests: children
            .iter()
            .map(|child| EntryJson {
                media_type: &child.media_type,
                size: child.size,
                digest: &child.digest,
                platform: PlatformJson {
                    architecture: child.platform.arch,
                    os: child.platform.os,
                    variant: child.variant.as_deref(),
                },
            })
            .collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&list).expect("a list serializes");
    bytes.push(b'\n');
    let digest = sha256_digest(&bytes);
    ManifestList { bytes, digest }
}

/// A legal OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn is_valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric() || b == b'_')
        && tag.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A manifest as a registry answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub media_type: String,
    pub bytes: Vec<u8>,
    /// `Docker-Content-Digest`, when the registry sent it.
    pub digest: Option<String>,
}

/// The registry operations this stage needs. The real one is the project's OCI client; tests use an in-memory one.
/// `target` is a repository reference as given with `--to` (`ghcr.io/owner/name`).
pub trait Registry {
    /// GET a manifest by digest or tag; `None` when the registry does not have it.
    fn manifest(&mut self, target: &str, reference: &str) -> anyhow::Result<Option<Fetched>>;
    /// GET a (small) blob by digest; `None` when the registry does not have it.
    fn blob(&mut self, target: &str, digest: &str) -> anyhow::Result<Option<Vec<u8>>>;
    /// PUT a manifest under a digest or tag; returns the digest the registry answered.
    fn put_manifest(
        &mut self,
        target: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> anyhow::Result<String>;
}

/// One registry call, in the order the stage makes them: what `--dry-run` prints and what a run logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    GetManifest {
        target: String,
        reference: String,
    },
    GetBlob {
        target: String,
        digest: String,
    },
    PutManifest {
        target: String,
        reference: String,
        media_type: String,
        /// Unknown in a dry run of a whole release (nothing is built yet).
        size: Option<usize>,
    },
    Prune {
        target: String,
        previous: String,
    },
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::GetManifest { target, reference } => {
                write!(f, "GET    {target} manifests/{reference}")
            }
            Call::GetBlob { target, digest } => write!(f, "GET    {target} blobs/{digest}"),
            Call::PutManifest {
                target,
                reference,
                media_type,
                size,
            } => match size {
                Some(size) => write!(
                    f,
                    "PUT    {target} manifests/{reference} ({media_type}, {size} bytes)"
                ),
                None => write!(f, "PUT    {target} manifests/{reference} ({media_type})"),
            },
            Call::Prune { target, previous } => {
                write!(f, "PRUNE  {target} superseded {previous}")
            }
        }
    }
}

/// What to publish: one tag, over these children, into these targets.
#[derive(Clone, Debug)]
pub struct Request {
    pub tag: String,
    pub targets: Vec<String>,
    pub children: Vec<Child>,
    /// Remove the index the tag pointed to before, once the new one is verified live (the default for `latest`).
    pub prune_previous: bool,
}

/// The calls a run makes when everything succeeds, in order. The config digests are not known before the child
/// manifests are read, so they are shown as `<config of …>`; the previous tag's target as `<previous>`. Without
/// `list` (a dry run of a whole release, where nothing is built yet) the list is shown as `<list digest>`.
pub fn planned_calls(request: &Request, list: Option<&ManifestList>) -> Vec<Call> {
    let (list_digest, list_size) = match list {
        Some(list) => (list.digest.clone(), Some(list.bytes.len())),
        None => ("<list digest>".to_owned(), None),
    };
    let mut calls = Vec::new();
    for target in &request.targets {
        for child in &request.children {
            calls.push(Call::GetManifest {
                target: target.clone(),
                reference: child.digest.clone(),
            });
            calls.push(Call::GetBlob {
                target: target.clone(),
                digest: format!("<config of {}>", child.platform),
            });
        }
        calls.push(Call::GetManifest {
            target: target.clone(),
            reference: request.tag.clone(),
        });
    }
    for reference in [&list_digest, &request.tag] {
        for target in &request.targets {
            calls.push(Call::PutManifest {
                target: target.clone(),
                reference: reference.clone(),
                media_type: DOCKER_LIST.into(),
                size: list_size,
            });
        }
    }
    for target in &request.targets {
        calls.push(Call::GetManifest {
            target: target.clone(),
            reference: request.tag.clone(),
        });
        if request.prune_previous {
            calls.push(Call::Prune {
                target: target.clone(),
                previous: "<previous>".into(),
            });
        }
    }
    calls
}

/// A previous index, superseded by the new one in `target`: the prune stage's input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superseded {
    pub target: String,
    pub previous: String,
    pub current: String,
}

/// What a run did: the summary's and the outputs' input.
#[derive(Clone, Debug)]
pub struct Published {
    pub tag: String,
    pub digest: String,
    pub targets: Vec<String>,
    pub children: Vec<Child>,
    /// The digest the tag pointed to before, per target (`None`: the tag is new there).
    pub previous: Vec<Option<String>>,
    /// Indexes to prune (only with `prune_previous`, and only where the tag really moved).
    pub superseded: Vec<Superseded>,
    pub durations: Durations,
}

#[derive(Clone, Debug, Default)]
pub struct Durations {
    pub verify: Duration,
    pub push_list: Duration,
    pub move_tag: Duration,
    pub read_back: Duration,
}

/// The previous manifest under the tag in one target, kept to put it back if a later target refuses the move.
struct Previous {
    fetched: Option<Fetched>,
}

/// Runs the stage against `registry`: verify everything everywhere, push the list by digest, move the tag, read it
/// back. `log` receives each call just before it is made.
pub fn publish(
    registry: &mut dyn Registry,
    request: &Request,
    log: &mut dyn FnMut(&Call),
) -> anyhow::Result<Published> {
    let list = assemble_list(&request.children);
    let mut durations = Durations::default();

    // 1. Read only: every child in every target, and where the tag points now.
    let started = Instant::now();
    let mut previous = Vec::new();
    for target in &request.targets {
        for child in &request.children {
            verify_child(registry, target, child, log)?;
        }
        let call = Call::GetManifest {
            target: target.clone(),
            reference: request.tag.clone(),
        };
        log(&call);
        let fetched = registry
            .manifest(target, &request.tag)
            .with_context(|| format!("read the current tag {} in {target}", request.tag))?;
        previous.push(Previous { fetched });
    }
    durations.verify = started.elapsed();

    // 2. The list by digest everywhere: nothing points at it yet, so this changes what no one sees.
    let started = Instant::now();
    for target in &request.targets {
        put(registry, target, &list.digest, &list, log)
            .with_context(|| format!("push the manifest list to {target} (no tag was moved)"))?;
    }
    durations.push_list = started.elapsed();

    // 3. The tag, everywhere. Should a target refuse, it and the earlier ones get their previous manifest back:
    // a failed move may still have happened (the registry wrote it, then the answer was lost), and putting the
    // previous manifest back where it did not is harmless.
    let started = Instant::now();
    for (index, target) in request.targets.iter().enumerate() {
        if let Err(err) = put(registry, target, &request.tag, &list, log) {
            let restored = restore(
                registry,
                request,
                &request.targets[..=index],
                &previous,
                log,
            );
            return Err(err).with_context(|| {
                format!(
                    "move tag {} to {} in {target}; {restored}",
                    request.tag,
                    short(&list.digest)
                )
            });
        }
    }
    durations.move_tag = started.elapsed();

    // 4. Read back: the tag must now name the list, in every target.
    let started = Instant::now();
    let mut superseded = Vec::new();
    for (target, before) in request.targets.iter().zip(&previous) {
        let call = Call::GetManifest {
            target: target.clone(),
            reference: request.tag.clone(),
        };
        log(&call);
        let now = match registry.manifest(target, &request.tag) {
            Ok(now) => now,
            Err(err) => {
                // Every registry acknowledged its move with the list's digest, so the publish happened; undoing
                // it through a registry that cannot even be read would leave the registries disagreeing. Only
                // the check for a concurrent release is lost, and pruning waits for a run that can read it.
                eprintln!(
                    "warning: could not read back tag {} in {target} after it was moved there: {err:#}",
                    request.tag
                );
                continue;
            }
        };
        let now_digest = now.as_ref().map(|m| sha256_digest(&m.bytes));
        if now_digest.as_deref() != Some(list.digest.as_str()) {
            return Err(exit::registry_failed(format!(
                "tag {} in {target} resolves to {} after the move, not to {}; another release may have moved it \
                 meanwhile: check `skopeo inspect --raw docker://{target}:{}`",
                request.tag,
                now_digest.as_deref().unwrap_or("nothing"),
                list.digest,
                request.tag
            )));
        }
        if let Some(old) = before.fetched.as_ref().map(|m| sha256_digest(&m.bytes)) {
            if request.prune_previous && old != list.digest {
                superseded.push(Superseded {
                    target: target.clone(),
                    previous: old,
                    current: list.digest.clone(),
                });
            }
        }
    }
    durations.read_back = started.elapsed();

    Ok(Published {
        tag: request.tag.clone(),
        digest: list.digest,
        targets: request.targets.clone(),
        children: order(request.children.clone()),
        previous: previous
            .iter()
            .map(|p| p.fetched.as_ref().map(|m| sha256_digest(&m.bytes)))
            .collect(),
        superseded,
        durations,
    })
}

fn put(
    registry: &mut dyn Registry,
    target: &str,
    reference: &str,
    list: &ManifestList,
    log: &mut dyn FnMut(&Call),
) -> anyhow::Result<()> {
    log(&Call::PutManifest {
        target: target.into(),
        reference: reference.into(),
        media_type: DOCKER_LIST.into(),
        size: Some(list.bytes.len()),
    });
    let answered = registry.put_manifest(target, reference, DOCKER_LIST, &list.bytes)?;
    if answered != list.digest {
        return Err(exit::registry_failed(format!(
            "{target} stored the manifest list as {answered}, but its bytes hash to {}",
            list.digest
        )));
    }
    Ok(())
}

/// Puts the previous manifest back under the tag in targets where it was already moved. Best effort: says what it
/// did, for the error message.
fn restore(
    registry: &mut dyn Registry,
    request: &Request,
    moved: &[String],
    previous: &[Previous],
    log: &mut dyn FnMut(&Call),
) -> String {
    let mut notes = Vec::new();
    // The last target is the one whose move failed: it may or may not have moved.
    let failed = moved.len().saturating_sub(1);
    for (index, (target, before)) in moved.iter().zip(previous).enumerate() {
        match &before.fetched {
            Some(old) => {
                log(&Call::PutManifest {
                    target: target.clone(),
                    reference: request.tag.clone(),
                    media_type: old.media_type.clone(),
                    size: Some(old.bytes.len()),
                });
                match registry.put_manifest(target, &request.tag, &old.media_type, &old.bytes) {
                    Ok(_) => notes.push(format!(
                        "{target}: tag put back to {}",
                        short(&sha256_digest(&old.bytes))
                    )),
                    Err(err) if index == failed => notes.push(format!(
                        "{target}: if the failed move went through after all, the tag could not be put back \
                         ({err:#}); check `skopeo inspect --raw docker://{target}:{}`",
                        request.tag
                    )),
                    Err(err) => notes.push(format!(
                        "{target}: tag already moved and could not be put back ({err:#})"
                    )),
                }
            }
            None if index == failed => notes.push(format!(
                "{target}: tag {} did not exist there; if the failed move went through after all, it names the \
                 new list",
                request.tag
            )),
            None => notes.push(format!(
                "{target}: tag {} is new there and stays on the new list",
                request.tag
            )),
        }
    }
    format!("tags put back: {}", notes.join("; "))
}

/// Checks one child in one target: the manifest is there, is what the digest file says, and its config's
/// os/architecture is the platform it is listed under.
fn verify_child(
    registry: &mut dyn Registry,
    target: &str,
    child: &Child,
    log: &mut dyn FnMut(&Call),
) -> anyhow::Result<()> {
    let platform = child.platform;
    log(&Call::GetManifest {
        target: target.into(),
        reference: child.digest.clone(),
    });
    let manifest = registry
        .manifest(target, &child.digest)
        .with_context(|| format!("read {platform} manifest {} in {target}", child.digest))?
        .ok_or_else(|| {
            exit::registry_failed(format!(
                "{platform} image {} is missing in {target}; push it there with \
                 `cargo xtask image push --platform {platform} --to {target}` (no tag was moved)",
                child.digest
            ))
        })?;
    let config_digest = check_child_manifest(target, child, &manifest)?;
    log(&Call::GetBlob {
        target: target.into(),
        digest: config_digest.clone(),
    });
    let config = registry
        .blob(target, &config_digest)
        .with_context(|| format!("read the config of {platform} image in {target}"))?
        .ok_or_else(|| {
            exit::registry_failed(format!(
                "config {config_digest} of the {platform} image {} is missing in {target}; \
                 push it again with `cargo xtask image push --platform {platform} --to {target}` (no tag was moved)",
                child.digest
            ))
        })?;
    check_child_config(target, child, &config_digest, &config)
}

/// Checks a child manifest as read from `target` and returns its config digest.
pub fn check_child_manifest(
    target: &str,
    child: &Child,
    manifest: &Fetched,
) -> anyhow::Result<String> {
    let platform = child.platform;
    let actual = sha256_digest(&manifest.bytes);
    if actual != child.digest {
        return Err(exit::registry_failed(format!(
            "{target} answered {platform} manifest {} with bytes hashing to {actual} (no tag was moved)",
            child.digest
        )));
    }
    if manifest.bytes.len() as u64 != child.size {
        return Err(exit::build_failed(format!(
            "the digest file for {platform} gives size {}, but manifest {} is {} bytes; \
             rerun `cargo xtask image push --platform {platform}` (no tag was moved)",
            child.size,
            child.digest,
            manifest.bytes.len()
        )));
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Image {
        media_type: Option<String>,
        config: Option<Config>,
    }
    #[derive(Deserialize)]
    struct Config {
        digest: String,
    }
    let image: Image = serde_json::from_slice(&manifest.bytes).map_err(|err| {
        exit::build_failed(format!(
            "{platform} manifest {} in {target} is not an image manifest ({err}) (no tag was moved)",
            child.digest
        ))
    })?;
    let media_type = image.media_type.as_deref().unwrap_or(&manifest.media_type);
    if media_type != DOCKER_MANIFEST {
        return Err(exit::build_failed(format!(
            "{platform} manifest {} in {target} is {media_type}, not a Docker schema-2 image manifest; \
             build with `podman build --format docker` (no tag was moved)",
            child.digest
        )));
    }
    match image.config {
        Some(config) if is_sha256_digest(&config.digest) => Ok(config.digest),
        _ => Err(exit::build_failed(format!(
            "{platform} manifest {} in {target} names no config (no tag was moved)",
            child.digest
        ))),
    }
}

/// Checks a child's config blob: the bytes are the named blob, and it is built for the platform it is listed
/// under. A wrong architecture is a build-side mistake (the arm64 job built amd64): exit 3.
pub fn check_child_config(
    target: &str,
    child: &Child,
    config_digest: &str,
    config: &[u8],
) -> anyhow::Result<()> {
    let platform = child.platform;
    if sha256_digest(config) != config_digest {
        return Err(exit::registry_failed(format!(
            "{target} answered config {config_digest} of the {platform} image with other bytes (no tag was moved)"
        )));
    }
    #[derive(Deserialize)]
    struct Config {
        os: Option<String>,
        architecture: Option<String>,
    }
    let config: Config = serde_json::from_slice(config).map_err(|err| {
        exit::build_failed(format!(
            "config {config_digest} of the {platform} image in {target} is not an image config ({err}) \
             (no tag was moved)"
        ))
    })?;
    let os = config.os.as_deref().unwrap_or("?");
    let arch = config.architecture.as_deref().unwrap_or("?");
    if (os, arch) != (platform.os, platform.arch) {
        return Err(exit::build_failed(format!(
            "the image listed as {platform} ({} in {target}) is built for {os}/{arch}: its build produced the \
             wrong platform; rebuild it with `cargo xtask image build --platform {platform}` and push again \
             (no tag was moved)",
            child.digest
        )));
    }
    Ok(())
}

/// The step outputs: tag, digest, platforms, and the full reference (`repo:tag@digest`) per target, both as a JSON
/// array (`references`) and one key per target (`ref_<registry host>`, `_2`, `_3` … when a host repeats).
pub fn outputs(published: &Published) -> Vec<(String, String)> {
    let platforms: Vec<String> = published
        .children
        .iter()
        .map(|c| c.platform.to_string())
        .collect();
    let references: Vec<String> = published
        .targets
        .iter()
        .map(|target| format!("{target}:{}@{}", published.tag, published.digest))
        .collect();
    let mut out = vec![
        ("tag".to_owned(), published.tag.clone()),
        ("digest".to_owned(), published.digest.clone()),
        ("platforms".to_owned(), platforms.join(",")),
        (
            "references".to_owned(),
            serde_json::to_string(&references).expect("strings serialize"),
        ),
    ];
    let mut keys: Vec<String> = Vec::new();
    for (target, reference) in published.targets.iter().zip(&references) {
        let host = target.split('/').next().unwrap_or(target);
        let base: String = std::iter::once("ref_".to_owned())
            .chain(host.chars().map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase().to_string()
                } else {
                    "_".to_owned()
                }
            }))
            .collect();
        let mut key = base.clone();
        let mut n = 2;
        while keys.contains(&key) {
            key = format!("{base}_{n}");
            n += 1;
        }
        keys.push(key.clone());
        out.push((key, reference.clone()));
    }
    out
}

fn seconds(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

/// `podman pull …`, with `--tls-verify=false` for a loopback registry (it speaks plain HTTP).
fn pull_command(target: &str, tag: &str) -> String {
    let host = target.split('/').next().unwrap_or(target);
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    let plain = name == "localhost" || name == "[::1]" || name.starts_with("127.");
    let flag = if plain { "--tls-verify=false " } else { "" };
    format!("podman pull {flag}{target}:{tag}")
}

/// The step summary section (Markdown): tag, registries, platforms with their digests, pull commands, durations.
pub fn summary(published: &Published) -> String {
    let mut out = format!(
        "### Image `{}` published\n\nManifest list `{}`\n\n| Registry | Reference | Before |\n|---|---|---|\n",
        published.tag, published.digest
    );
    for (target, before) in published.targets.iter().zip(&published.previous) {
        let before = match before {
            Some(digest) if *digest == published.digest => "unchanged".to_owned(),
            Some(digest) => format!("`{}`", short(digest)),
            None => "new tag".to_owned(),
        };
        out.push_str(&format!(
            "| {} | `{target}:{}` | {before} |\n",
            target.split('/').next().unwrap_or(target),
            published.tag
        ));
    }
    out.push_str("\n| Platform | Digest | Size |\n|---|---|---|\n");
    for child in &published.children {
        out.push_str(&format!(
            "| {} | `{}` | {} B |\n",
            child.platform, child.digest, child.size
        ));
    }
    out.push_str("\nPull:\n\n```sh\n");
    for target in &published.targets {
        out.push_str(&pull_command(target, &published.tag));
        out.push('\n');
    }
    out.push_str("```\n\n");
    let d = &published.durations;
    out.push_str(&format!(
        "Durations: verify {}, push list {}, move tag {}, read back {}\n",
        seconds(d.verify),
        seconds(d.push_list),
        seconds(d.move_tag),
        seconds(d.read_back)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const AMD: Platform = Platform::LINUX_AMD64;
    const ARM: Platform = Platform::LINUX_ARM64;

    fn digest_json(platform: &str, digest: &str, media_type: &str, size: u64) -> String {
        format!(
            r#"{{"digest":"{digest}","size":{size},"mediaType":"{media_type}","platform":{platform},"targets":[]}}"#
        )
    }

    fn os_arch(platform: &str) -> String {
        let (os, arch) = platform.split_once('/').unwrap();
        format!(r#"{{"os":"{os}","architecture":"{arch}"}}"#)
    }

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn digest_files() {
        let path = Path::new("/tmp/digests/linux-arm64");
        let good_obj = r#"{"os":"linux","architecture":"arm64"}"#;
        // (platform field, digest, media type, size, expected error fragment or None)
        let cases: Vec<(&str, String, &str, u64, Option<&str>)> = vec![
            (good_obj, d('a'), DOCKER_MANIFEST, 528, None),
            (
                r#"{"os":"linux","architecture":"arm64","variant":"v8"}"#,
                d('b'),
                DOCKER_MANIFEST,
                1,
                None,
            ),
            (
                r#"{"os":"windows","architecture":"arm64"}"#,
                d('a'),
                DOCKER_MANIFEST,
                528,
                Some("says it is for windows/arm64"),
            ),
            (
                r#"{"os":"linux","architecture":"amd64"}"#,
                d('a'),
                DOCKER_MANIFEST,
                528,
                Some("its name says linux/arm64"),
            ),
            (
                good_obj,
                "sha256:abc".into(),
                DOCKER_MANIFEST,
                528,
                Some("not a sha256 digest"),
            ),
            (
                good_obj,
                d('A'),
                DOCKER_MANIFEST,
                528,
                Some("not a sha256 digest"),
            ),
            (
                good_obj,
                format!("sha512:{}", "a".repeat(64)),
                DOCKER_MANIFEST,
                528,
                Some("not a sha256 digest"),
            ),
            (
                good_obj,
                d('a'),
                OCI_MANIFEST,
                528,
                Some("loses HEALTHCHECK"),
            ),
            (
                good_obj,
                d('a'),
                DOCKER_LIST,
                528,
                Some("schema-2 image manifests only"),
            ),
            (good_obj, d('a'), DOCKER_MANIFEST, 0, Some("size 0")),
        ];
        for (platform, digest, media_type, size, want) in cases {
            let text = digest_json(platform, &digest, media_type, size);
            match (parse_digest_file(ARM, path, &text), want) {
                (Ok(child), None) => {
                    assert_eq!(
                        child,
                        Child {
                            platform: ARM,
                            variant: platform.contains("v8").then(|| "v8".to_owned()),
                            digest,
                            size,
                            media_type: media_type.into()
                        }
                    )
                }
                (Err(err), Some(fragment)) => {
                    assert_eq!(exit::code_of(&err), 3, "{text}");
                    let msg = err.to_string();
                    assert!(msg.contains(fragment), "{text}: {msg}");
                    assert!(msg.contains("/tmp/digests/linux-arm64"), "{msg}");
                }
                (got, _) => panic!("{text}: {got:?}"),
            }
        }
        for broken in ["", "{}", "not json", r#"{"digest":"sha256:x"}"#] {
            let err = parse_digest_file(ARM, path, broken).unwrap_err();
            assert_eq!(exit::code_of(&err), 3);
            assert!(err.to_string().contains("is not valid"), "{err}");
        }
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("xtask-manifest-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn digest_dir_names_the_missing_platform() {
        let dir = temp_dir("missing");
        std::fs::write(
            dir.join("linux-amd64"),
            digest_json(&os_arch("linux/amd64"), &d('1'), DOCKER_MANIFEST, 10),
        )
        .unwrap();
        let err = read_digest_dir(&dir, &[AMD, ARM]).unwrap_err();
        assert_eq!(exit::code_of(&err), 3);
        let msg = err.to_string();
        assert!(msg.contains("no digest for linux/arm64"), "{msg}");
        assert!(msg.contains("--platform linux/arm64"), "{msg}");

        std::fs::write(
            dir.join("linux-arm64"),
            digest_json(&os_arch("linux/arm64"), &d('2'), DOCKER_MANIFEST, 20),
        )
        .unwrap();
        // Given arm64 first, read in the fixed order all the same.
        let children = read_digest_dir(&dir, &[ARM, AMD]).unwrap();
        let got: Vec<_> = children.iter().map(|c| (c.platform, c.size)).collect();
        assert_eq!(got, [(AMD, 10), (ARM, 20)]);
        // Only the expected platforms are read.
        assert_eq!(read_digest_dir(&dir, &[ARM]).unwrap().len(), 1);

        let err = read_digest_dir(&dir.join("nope"), &[AMD]).unwrap_err();
        assert_eq!(exit::code_of(&err), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn child(platform: Platform, digest: String, size: u64) -> Child {
        Child {
            platform,
            variant: None,
            digest,
            size,
            media_type: DOCKER_MANIFEST.into(),
        }
    }

    #[test]
    fn list_is_deterministic_and_ordered() {
        let amd = child(AMD, d('1'), 528);
        let arm = child(ARM, d('2'), 529);
        let list = assemble_list(&[arm.clone(), amd.clone()]);
        assert_eq!(list, assemble_list(&[amd.clone(), arm.clone()]));
        assert_eq!(list.digest, sha256_digest(&list.bytes));
        let want = format!(
            r#"{{
  "schemaVersion": 2,
  "mediaType": "{DOCKER_LIST}",
  "manifests": [
    {{
      "mediaType": "{DOCKER_MANIFEST}",
      "size": 528,
      "digest": "{}",
      "platform": {{
        "architecture": "amd64",
        "os": "linux"
      }}
    }},
    {{
      "mediaType": "{DOCKER_MANIFEST}",
      "size": 529,
      "digest": "{}",
      "platform": {{
        "architecture": "arm64",
        "os": "linux"
      }}
    }}
  ]
}}
"#,
            d('1'),
            d('2')
        );
        assert_eq!(String::from_utf8(list.bytes.clone()).unwrap(), want);
        // A different child is a different list.
        assert_ne!(
            list.digest,
            assemble_list(&[amd, child(ARM, d('3'), 529)]).digest
        );
    }

    #[test]
    fn tags_and_digests() {
        for (tag, ok) in [
            ("latest", true),
            ("1.2.3", true),
            ("manual-abc1234", true),
            ("_x", true),
            (&*"a".repeat(128), true),
            (&*"a".repeat(129), false),
            ("", false),
            ("-x", false),
            (".x", false),
            ("a:b", false),
            ("a/b", false),
            ("a b", false),
        ] {
            assert_eq!(is_valid_tag(tag), ok, "{tag}");
        }
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(is_sha256_digest(&sha256_digest(b"x")));
    }

    /// An in-memory registry: manifests and blobs per repository, tags as names of manifests, every call recorded,
    /// and PUTs that fail on demand.
    #[derive(Default)]
    struct Memory {
        manifests: HashMap<(String, String), Fetched>,
        blobs: HashMap<(String, String), Vec<u8>>,
        fail_put: Option<(String, String)>,
        calls: Vec<String>,
    }

    impl Memory {
        fn push_image(&mut self, target: &str, platform: (&str, &str)) -> Child {
            let config = format!(
                r#"{{"os":"{}","architecture":"{}","config":{{"Healthcheck":{{}}}}}}"#,
                platform.0, platform.1
            );
            let config_digest = sha256_digest(config.as_bytes());
            let manifest = format!(
                r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":{},"digest":"{config_digest}"}},"layers":[]}}"#,
                config.len()
            );
            let digest = sha256_digest(manifest.as_bytes());
            self.blobs
                .insert((target.into(), config_digest), config.into_bytes());
            self.manifests.insert(
                (target.into(), digest.clone()),
                Fetched {
                    media_type: DOCKER_MANIFEST.into(),
                    bytes: manifest.clone().into_bytes(),
                    digest: Some(digest.clone()),
                },
            );
            child(
                format!("{}/{}", platform.0, platform.1)
                    .parse()
                    .unwrap_or(AMD),
                digest,
                manifest.len() as u64,
            )
        }

        fn tags(&self) -> Vec<(String, String, String)> {
            let mut tags: Vec<_> = self
                .manifests
                .iter()
                .filter(|((_, reference), _)| !reference.starts_with("sha256:"))
                .map(|((target, tag), m)| (target.clone(), tag.clone(), sha256_digest(&m.bytes)))
                .collect();
            tags.sort();
            tags
        }
    }

    impl Registry for Memory {
        fn manifest(&mut self, target: &str, reference: &str) -> anyhow::Result<Option<Fetched>> {
            self.calls.push(format!("GET {target} {reference}"));
            Ok(self
                .manifests
                .get(&(target.into(), reference.into()))
                .cloned())
        }
        fn blob(&mut self, target: &str, digest: &str) -> anyhow::Result<Option<Vec<u8>>> {
            self.calls.push(format!("BLOB {target} {digest}"));
            Ok(self.blobs.get(&(target.into(), digest.into())).cloned())
        }
        fn put_manifest(
            &mut self,
            target: &str,
            reference: &str,
            media_type: &str,
            bytes: &[u8],
        ) -> anyhow::Result<String> {
            self.calls.push(format!("PUT {target} {reference}"));
            if self.fail_put.as_ref() == Some(&(target.into(), reference.into())) {
                return Err(exit::registry_failed(format!(
                    "Failed to push to {target} after 3 attempts"
                )));
            }
            let digest = sha256_digest(bytes);
            self.manifests.insert(
                (target.into(), reference.into()),
                Fetched {
                    media_type: media_type.into(),
                    bytes: bytes.to_vec(),
                    digest: Some(digest.clone()),
                },
            );
            Ok(digest)
        }
    }

    const A: &str = "a.example/team/app";
    const B: &str = "b.example/team/app";

    /// Two registries, both platforms pushed to both, and an old `latest` in each.
    fn setup() -> (Memory, Request) {
        let mut memory = Memory::default();
        let mut children = Vec::new();
        for target in [A, B] {
            children = vec![
                memory.push_image(target, ("linux", "amd64")),
                memory.push_image(target, ("linux", "arm64")),
            ];
            let old = child(AMD, d('0'), 3);
            let old_list = assemble_list(&[old]);
            memory
                .put_manifest(target, "latest", DOCKER_LIST, &old_list.bytes)
                .unwrap();
        }
        memory.calls.clear();
        let request = Request {
            tag: "latest".into(),
            targets: vec![A.into(), B.into()],
            children,
            prune_previous: true,
        };
        (memory, request)
    }

    #[test]
    fn publishes_in_order_and_matches_the_plan() {
        let (mut memory, request) = setup();
        let old = memory.tags();
        let mut logged = Vec::new();
        let published =
            publish(&mut memory, &request, &mut |call| logged.push(call.clone())).unwrap();
        let list = assemble_list(&request.children);
        assert_eq!(published.digest, list.digest);
        for (target, tag, digest) in memory.tags() {
            assert_eq!(
                (tag.as_str(), digest.as_str()),
                ("latest", list.digest.as_str()),
                "{target}"
            );
        }
        // The log is the dry-run plan with the unknowns filled in.
        let plan = planned_calls(&request, Some(&list));
        let logged_shapes: Vec<String> = logged.iter().map(shape).collect();
        let plan_shapes: Vec<String> = plan
            .iter()
            .filter(|call| !matches!(call, Call::Prune { .. }))
            .map(shape)
            .collect();
        assert_eq!(logged_shapes, plan_shapes);
        // No write before every read of every target.
        let first_put = memory
            .calls
            .iter()
            .position(|c| c.starts_with("PUT"))
            .unwrap();
        let reads = memory.calls[..first_put].len();
        assert_eq!(reads, 2 * (2 * 2 + 1), "{:?}", memory.calls);
        // Both lists pushed by digest before any tag moved.
        let puts: Vec<&String> = memory
            .calls
            .iter()
            .filter(|c| c.starts_with("PUT"))
            .collect();
        assert_eq!(
            puts,
            [
                &format!("PUT {A} {}", list.digest),
                &format!("PUT {B} {}", list.digest),
                &format!("PUT {A} latest"),
                &format!("PUT {B} latest"),
            ]
        );
        // The old latest of each registry is superseded.
        assert_eq!(
            published.previous,
            vec![Some(old[0].2.clone()), Some(old[1].2.clone())]
        );
        assert_eq!(
            published.superseded,
            vec![
                Superseded {
                    target: A.into(),
                    previous: old[0].2.clone(),
                    current: list.digest.clone()
                },
                Superseded {
                    target: B.into(),
                    previous: old[1].2.clone(),
                    current: list.digest.clone()
                },
            ]
        );
        // A rerun changes nothing and supersedes nothing.
        let again = publish(&mut memory, &request, &mut |_| {}).unwrap();
        assert_eq!(again.digest, list.digest);
        assert!(again.superseded.is_empty());
    }

    /// A call's kind and place, with digests that are unknown in a dry run blanked out.
    fn shape(call: &Call) -> String {
        match call {
            Call::GetBlob { target, .. } => format!("GET blob {target}"),
            other => other.to_string(),
        }
    }

    #[test]
    fn nothing_moves_unless_everything_is_verified() {
        type Break = fn(&mut Memory, &mut Request);
        let cases: Vec<(&str, Break, i32, &str)> = vec![
            (
                "arm64 missing in the second registry",
                |m, r| {
                    m.manifests
                        .remove(&(B.into(), r.children[1].digest.clone()));
                },
                4,
                "linux/arm64 image",
            ),
            (
                "arm64 config missing in the second registry",
                |m, _| {
                    m.blobs.retain(|(target, _), config| {
                        target != B || !String::from_utf8_lossy(config).contains("arm64")
                    });
                },
                4,
                "config",
            ),
            (
                "the arm64 job built amd64",
                |m, r| {
                    let wrong = m.push_image(A, ("linux", "amd64"));
                    let wrong_b = m.push_image(B, ("linux", "amd64"));
                    assert_eq!(wrong, wrong_b);
                    r.children[1] = Child {
                        platform: ARM,
                        ..wrong
                    };
                },
                3,
                "is built for linux/amd64",
            ),
            (
                "a registry answers other bytes",
                |m, r| {
                    let key = (B.to_owned(), r.children[0].digest.clone());
                    m.manifests.get_mut(&key).unwrap().bytes.push(b' ');
                },
                4,
                "bytes hashing to",
            ),
            (
                "the digest file's size is wrong",
                |_, r| r.children[0].size += 1,
                3,
                "gives size",
            ),
        ];
        for (name, break_it, code, fragment) in cases {
            let (mut memory, mut request) = setup();
            break_it(&mut memory, &mut request);
            let before = memory.tags();
            let err = publish(&mut memory, &request, &mut |_| {}).unwrap_err();
            assert_eq!(exit::code_of(&err), code, "{name}: {err:#}");
            let msg = format!("{err:#}");
            assert!(msg.contains(fragment), "{name}: {msg}");
            assert!(msg.contains("no tag was moved"), "{name}: {msg}");
            assert_eq!(memory.tags(), before, "{name}");
            assert!(
                !memory.calls.iter().any(|c| c.starts_with("PUT")),
                "{name}: {:?}",
                memory.calls
            );
        }
    }

    #[test]
    fn a_refused_tag_move_puts_the_earlier_ones_back() {
        let (mut memory, request) = setup();
        let before = memory.tags();
        memory.fail_put = Some((B.into(), "latest".into()));
        let err = publish(&mut memory, &request, &mut |_| {}).unwrap_err();
        assert_eq!(exit::code_of(&err), 4);
        let msg = format!("{err:#}");
        assert!(msg.contains(&format!("{A}: tag put back")), "{msg}");
        assert_eq!(memory.tags(), before);

        // Where the tag is new, it cannot be taken back: the message says so.
        let (mut memory, mut request) = setup();
        request.tag = "1.2.3".into();
        memory.fail_put = Some((B.into(), "1.2.3".into()));
        let msg = format!(
            "{:#}",
            publish(&mut memory, &request, &mut |_| {}).unwrap_err()
        );
        assert!(
            msg.contains("is new there and stays on the new list"),
            "{msg}"
        );
    }

    #[test]
    fn versions_never_supersede() {
        let (mut memory, mut request) = setup();
        request.tag = "1.2.3".into();
        request.prune_previous = false;
        let published = publish(&mut memory, &request, &mut |_| {}).unwrap();
        assert!(published.superseded.is_empty());
        assert_eq!(published.previous, vec![None, None]);
        let latest: Vec<_> = memory
            .tags()
            .into_iter()
            .filter(|t| t.1 == "latest")
            .collect();
        assert!(latest.iter().all(|t| t.2 != published.digest));
    }

    #[test]
    fn dry_run_plan() {
        let (_, request) = setup();
        let list = assemble_list(&request.children);
        let plan: Vec<String> = planned_calls(&request, Some(&list))
            .iter()
            .map(|c| c.to_string())
            .collect();
        let puts: Vec<usize> = (0..plan.len())
            .filter(|&i| plan[i].starts_with("PUT"))
            .collect();
        assert_eq!(puts.len(), 4);
        // Every read precedes every write; every tag write follows every digest write.
        assert!(plan[..puts[0]].iter().all(|c| c.starts_with("GET")));
        assert!(plan[puts[0]].contains(&list.digest) && plan[puts[1]].contains(&list.digest));
        assert!(plan[puts[2]].ends_with(&format!(
            "manifests/latest ({DOCKER_LIST}, {} bytes)",
            list.bytes.len()
        )));
        assert_eq!(plan.iter().filter(|c| c.starts_with("PRUNE")).count(), 2);
        assert_eq!(
            plan.last().unwrap(),
            &format!("PRUNE  {B} superseded <previous>")
        );
        let unbuilt: Vec<String> = planned_calls(&request, None)
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(unbuilt.len(), plan.len());
        assert!(unbuilt[puts[0]].ends_with(&format!("manifests/<list digest> ({DOCKER_LIST})")));
    }

    fn published() -> Published {
        Published {
            tag: "latest".into(),
            digest: d('f'),
            targets: vec![
                "ghcr.io/o/app".into(),
                "docker.io/o/app".into(),
                "docker.io/o/app2".into(),
            ],
            children: vec![child(AMD, d('1'), 528), child(ARM, d('2'), 529)],
            previous: vec![Some(d('e')), None, Some(d('f'))],
            superseded: vec![],
            durations: Durations {
                verify: Duration::from_millis(1300),
                ..Durations::default()
            },
        }
    }

    #[test]
    fn outputs_name_every_reference() {
        let got = outputs(&published());
        let want: Vec<(String, String)> = [
            ("tag", "latest".to_owned()),
            ("digest", d('f')),
            ("platforms", "linux/amd64,linux/arm64".into()),
            (
                "references",
                format!(
                    r#"["ghcr.io/o/app:latest@{0}","docker.io/o/app:latest@{0}","docker.io/o/app2:latest@{0}"]"#,
                    d('f')
                ),
            ),
            ("ref_ghcr_io", format!("ghcr.io/o/app:latest@{}", d('f'))),
            ("ref_docker_io", format!("docker.io/o/app:latest@{}", d('f'))),
            ("ref_docker_io_2", format!("docker.io/o/app2:latest@{}", d('f'))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn pull_commands() {
        for (target, want) in [
            ("ghcr.io/o/app", "podman pull ghcr.io/o/app:1.2.3"),
            (
                "127.0.0.1:5000/t/app",
                "podman pull --tls-verify=false 127.0.0.1:5000/t/app:1.2.3",
            ),
            (
                "localhost:5000/app",
                "podman pull --tls-verify=false localhost:5000/app:1.2.3",
            ),
            (
                "registry.local:5000/app",
                "podman pull registry.local:5000/app:1.2.3",
            ),
        ] {
            assert_eq!(pull_command(target, "1.2.3"), want);
        }
    }

    #[test]
    fn list_carries_the_variant() {
        let mut arm = child(ARM, d('2'), 529);
        arm.variant = Some("v8".into());
        let text = String::from_utf8(assemble_list(&[arm]).bytes).unwrap();
        assert!(
            text.contains(
                r#""os": "linux",
        "variant": "v8""#
            ),
            "{text}"
        );
    }

    #[test]
    fn summary_section() {
        let text = summary(&published());
        for fragment in [
            "### Image `latest` published",
            &format!("Manifest list `{}`", d('f')),
            "| ghcr.io | `ghcr.io/o/app:latest` | `sha256:eeeeeeeeeeee` |",
            "| docker.io | `docker.io/o/app:latest` | new tag |",
            "| docker.io | `docker.io/o/app2:latest` | unchanged |",
            &format!("| linux/amd64 | `{}` | 528 B |", d('1')),
            &format!("| linux/arm64 | `{}` | 529 B |", d('2')),
            "podman pull ghcr.io/o/app:latest\npodman pull docker.io/o/app:latest\n",
            "Durations: verify 1.3 s, push list 0 ms, move tag 0 ms, read back 0 ms\n",
        ] {
            assert!(text.contains(fragment), "{fragment}\n---\n{text}");
        }
    }
}
