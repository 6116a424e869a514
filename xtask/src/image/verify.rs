//! `cargo xtask image verify REF`: is a published image what its sources build? First its structure (a Docker
//! manifest list of the configured platforms whose v2s2 children name their platform, carry the healthcheck and the
//! labels a rebuild needs, with every blob present) and the attestations stored beside it; then a rebuild of the
//! revision its labels record, from a clean `git worktree`, on the base it records, compared digest by digest. A
//! difference is named: which layer, which config fields.
//!
//! The checks and the comparison are pure functions over bytes ([`check_structure`], [`compare_images`]); reading
//! the registry, git and the build are the edges.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;
use xshell::{cmd, Shell};

use crate::config::ImageConfig;
use crate::image::manifest::{self, Child};
use crate::image::{build, containerfile, meta, release};
use crate::oci::media_type::DOCKER_MANIFEST;
use crate::oci::{ConfigFile, Descriptor, Digest, ImageManifest, Index, Manifest, Platform};
use crate::registry::{Reference, Repo, Repository};
use crate::session::Session;
use crate::{exit, flags};

const LABEL: &str = "org.opencontainers.image.";
const REVISION: &str = "org.opencontainers.image.revision";
const CREATED: &str = "org.opencontainers.image.created";
const VERSION: &str = "org.opencontainers.image.version";
const BASE_NAME: &str = "org.opencontainers.image.base.name";
const BASE_DIGEST: &str = "org.opencontainers.image.base.digest";

/// At most this many differing config fields are listed; the rest are counted.
const MAX_FIELDS: usize = 20;

/// The image to verify: a repository and a tag or digest in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub target: Reference,
    /// A tag (`latest`) or a digest (`sha256:…`).
    pub reference: String,
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let separator = if Digest::is_valid(&self.reference) {
            '@'
        } else {
            ':'
        };
        write!(
            f,
            "{}/{}{separator}{}",
            self.target.registry, self.target.repository, self.reference
        )
    }
}

/// Parses `REGISTRY/NAME:TAG` or `REGISTRY/NAME@sha256:…`; without either, the tag is `latest`.
pub fn parse_image_ref(input: &str) -> anyhow::Result<ImageRef> {
    let input = input.trim();
    let (name, reference) = match input.split_once('@') {
        Some((name, digest)) => {
            if !Digest::is_valid(digest) {
                return Err(exit::invalid(format!(
                    "{input:?} names the digest {digest:?}, which is not sha256: and 64 lowercase hex digits"
                )));
            }
            // `name:tag@digest`: the digest is what is read; the tag only documents it.
            let name = strip_tag(name).0;
            (name, digest.to_owned())
        }
        None => match strip_tag(input) {
            (name, Some(tag)) => {
                if !manifest::is_valid_tag(tag) {
                    return Err(exit::invalid(format!(
                        "{input:?} names the tag {tag:?}, which is not a valid tag (letters, digits, `_`, `.`, `-`; \
                         up to 128)"
                    )));
                }
                (name, tag.to_owned())
            }
            (name, None) => (name, "latest".to_owned()),
        },
    };
    let target = Reference::parse(name).map_err(|err| {
        exit::invalid(format!(
            "{err}; give the image as REGISTRY/NAME:TAG or REGISTRY/NAME@sha256:…, like \
             ghcr.io/owner/app:latest or 127.0.0.1:5000/team/app:1.2.3"
        ))
    })?;
    Ok(ImageRef { target, reference })
}

/// `name:tag` into the name and the tag; a colon before the last `/` is a registry port, not a tag.
fn strip_tag(input: &str) -> (&str, Option<&str>) {
    let last_part = input.rfind('/').map_or(0, |slash| slash + 1);
    match input[last_part..].rfind(':') {
        Some(colon) => (
            &input[..last_part + colon],
            Some(&input[last_part + colon + 1..]),
        ),
        None => (input, None),
    }
}

/// One child of the published list as the registry holds it; `None` where it could not be found.
#[derive(Clone, Debug)]
pub struct PublishedChild {
    pub entry: Descriptor,
    pub manifest: Option<Manifest>,
    pub config: Option<Vec<u8>>,
    /// Layers the manifest names that the registry does not have.
    pub missing_layers: Vec<Digest>,
}

/// The list and its children, read once.
#[derive(Clone, Debug)]
pub struct PublishedImage {
    pub list: Manifest,
    pub children: Vec<PublishedChild>,
}

/// What the checks found: the problems, and for each platform its child digest and labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Structure {
    pub problems: Vec<String>,
    pub platforms: Vec<(Platform, Digest, BTreeMap<String, String>)>,
}

/// Checks the published image against what the pipeline publishes: a Docker manifest list naming each of
/// `platforms` once and nothing else, each child a v2s2 manifest whose bytes hash to its entry, whose config names
/// the platform, has a healthcheck and the revision, created and version labels (the same in every child), and
/// whose blobs are all there.
pub fn check_structure(image: &PublishedImage, platforms: &[Platform]) -> Structure {
    let mut out = Structure::default();
    let list = &image.list;
    if list.media_type != crate::oci::media_type::DOCKER_LIST {
        out.problems.push(format!(
            "the list {} is {}, not a Docker manifest list",
            list.digest, list.media_type
        ));
    }
    for platform in platforms {
        let named = image
            .children
            .iter()
            .filter(|child| entry_platform(&child.entry) == Some(*platform))
            .count();
        if named != 1 {
            out.problems
                .push(format!("the list names {platform} {named} times, not once"));
        }
    }
    for child in &image.children {
        let entry = &child.entry;
        let Some(platform) = entry_platform(entry).filter(|p| platforms.contains(p)) else {
            let named = entry
                .platform
                .as_ref()
                .map_or("no platform".to_owned(), |p| {
                    format!("{}/{}", p.os, p.architecture)
                });
            out.problems.push(format!(
                "the list names {} for {named}, which is not one of {}",
                entry.digest,
                join(platforms)
            ));
            continue;
        };
        let problems_before = out.problems.len();
        let mut problem = |text: String| {
            out.problems
                .push(format!("{platform} {}: {text}", entry.digest.short()))
        };
        let Some(manifest) = &child.manifest else {
            problem("the manifest is missing".into());
            continue;
        };
        if manifest.digest != entry.digest {
            problem(format!(
                "the registry answered bytes hashing to {}",
                manifest.digest
            ));
            continue;
        }
        if manifest.bytes.len() as u64 != entry.size {
            problem(format!(
                "{} bytes, the list says {}",
                manifest.bytes.len(),
                entry.size
            ));
        }
        let image_manifest = match ImageManifest::parse(&manifest.bytes) {
            Ok(parsed) => parsed,
            Err(why) => {
                problem(format!("the manifest is {why}"));
                continue;
            }
        };
        let media_type = image_manifest
            .media_type
            .as_deref()
            .unwrap_or(&manifest.media_type);
        if media_type != DOCKER_MANIFEST {
            problem(format!(
                "{media_type}, not a Docker schema-2 image manifest"
            ));
        }
        for layer in &child.missing_layers {
            problem(format!("layer {layer} is missing"));
        }
        let Some(config_bytes) = &child.config else {
            problem(format!(
                "the config {} is missing",
                image_manifest.config.digest
            ));
            continue;
        };
        if Digest::of(config_bytes) != image_manifest.config.digest {
            problem(format!(
                "the config's bytes do not hash to {}",
                image_manifest.config.digest
            ));
            continue;
        }
        let config = match ConfigFile::parse(config_bytes) {
            Ok(config) => config,
            Err(why) => {
                problem(format!("the config is {why}"));
                continue;
            }
        };
        if !platform.matches(&config.os, &config.architecture) {
            problem(format!(
                "the config is for {}/{}",
                config.os, config.architecture
            ));
        }
        let has_test = config
            .config
            .healthcheck
            .as_ref()
            .and_then(|h| h["Test"].as_array())
            .is_some_and(|t| !t.is_empty());
        if !has_test {
            problem("the config has no HEALTHCHECK (built without --format docker?)".into());
        }
        let labels = config.config.labels.unwrap_or_default();
        match labels.get(REVISION) {
            Some(revision) if is_commit(revision) => {}
            Some(revision) => problem(format!(
                "the {REVISION} label {revision:?} is not a full commit id"
            )),
            None => problem(format!(
                "no {REVISION} label: nothing says which commit to rebuild"
            )),
        }
        match labels.get(CREATED) {
            Some(created) if meta::parse_rfc3339(created).is_some() => {}
            Some(created) => problem(format!(
                "the {CREATED} label {created:?} is not a UTC time in whole seconds"
            )),
            None => problem(format!("no {CREATED} label: nothing says the build's time")),
        }
        if !labels.contains_key(VERSION) {
            problem(format!("no {VERSION} label"));
        }
        if out.problems.len() == problems_before {
            out.platforms.push((platform, entry.digest.clone(), labels));
        }
    }
    if let Some((first, _, labels)) = out.platforms.first() {
        for (platform, _, other) in &out.platforms[1..] {
            for key in [REVISION, CREATED, VERSION] {
                if labels.get(key) != other.get(key) {
                    out.problems.push(format!(
                        "{first} and {platform} record different {key} labels ({:?} and {:?})",
                        labels.get(key),
                        other.get(key)
                    ));
                }
            }
        }
    }
    out.platforms
        .sort_by_key(|(platform, ..)| platform.list_position());
    out
}

fn entry_platform(entry: &Descriptor) -> Option<Platform> {
    let spec = entry.platform.as_ref()?;
    Platform::ALL
        .into_iter()
        .find(|p| p.matches(&spec.os, &spec.architecture))
}

fn is_commit(text: &str) -> bool {
    matches!(text.len(), 40 | 64)
        && text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn join(platforms: &[Platform]) -> String {
    platforms
        .iter()
        .map(Platform::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The referrers tag of the OCI distribution spec's fallback (`sha256-<hex>`), under which registries without the
/// referrers API (GHCR, Docker Hub, distribution) keep the index of what refers to a manifest: attestations.
pub fn referrers_tag(subject: &Digest) -> String {
    subject.as_str().replacen(':', "-", 1)
}

/// The artifact types a referrers index lists (`application/vnd.dev.sigstore.bundle.v0.3+json`, …).
pub fn artifact_types(index: &[u8]) -> Result<Vec<String>, String> {
    let index: Value = serde_json::from_slice(index).map_err(|err| format!("not JSON ({err})"))?;
    let manifests = index["manifests"].as_array().ok_or("no manifests array")?;
    Ok(manifests
        .iter()
        .map(|m| {
            m["artifactType"]
                .as_str()
                .unwrap_or("(no artifactType)")
                .to_owned()
        })
        .collect())
}

/// The differences between a published image and its rebuild, as lines a reader can act on: the manifest's config
/// and layers by position, then the config's fields (JSON paths) with both values.
pub fn compare_images(
    published_manifest: &[u8],
    published_config: &[u8],
    rebuilt_manifest: &[u8],
    rebuilt_config: &[u8],
) -> Vec<String> {
    let mut out = Vec::new();
    let (Ok(published), Ok(rebuilt)) = (
        ImageManifest::parse(published_manifest),
        ImageManifest::parse(rebuilt_manifest),
    ) else {
        out.push("one of the manifests cannot be read".into());
        return out;
    };
    let count = (published.layers.len(), rebuilt.layers.len());
    if count.0 != count.1 {
        out.push(format!("{} layers published, {} rebuilt", count.0, count.1));
    }
    for (n, (p, r)) in published.layers.iter().zip(&rebuilt.layers).enumerate() {
        if p.digest != r.digest || p.size != r.size {
            out.push(format!(
                "layer {} of {}: published {} ({} bytes), rebuilt {} ({} bytes)",
                n + 1,
                count.0,
                p.digest,
                p.size,
                r.digest,
                r.size
            ));
        }
    }
    if published.config.digest != rebuilt.config.digest {
        out.push(format!(
            "config: published {}, rebuilt {}",
            published.config.digest, rebuilt.config.digest
        ));
        let (published, rebuilt) = (flatten_json(published_config), flatten_json(rebuilt_config));
        let mut fields: Vec<String> = Vec::new();
        for (path, value) in &published {
            match rebuilt.get(path) {
                Some(other) if other == value => {}
                Some(other) => fields.push(format!("  {path}: published {value}, rebuilt {other}")),
                None => fields.push(format!("  {path}: published {value}, not in the rebuild")),
            }
        }
        for (path, value) in &rebuilt {
            if !published.contains_key(path) {
                fields.push(format!("  {path}: not published, rebuilt {value}"));
            }
        }
        let more = fields.len().saturating_sub(MAX_FIELDS);
        out.extend(fields.into_iter().take(MAX_FIELDS));
        if more > 0 {
            out.push(format!("  … and {more} more fields"));
        }
    }
    if out.is_empty() && published_manifest != rebuilt_manifest {
        out.push("the manifests name the same blobs but differ in their bytes".into());
    }
    out
}

/// Every scalar of a JSON document by its path (`.config.Labels["org.opencontainers.image.version"]`,
/// `.history[2].created`), values as JSON text.
fn flatten_json(bytes: &[u8]) -> BTreeMap<String, String> {
    fn walk(value: &Value, path: String, out: &mut BTreeMap<String, String>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, value) in map {
                    let plain = key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    let path = if plain {
                        format!("{path}.{key}")
                    } else {
                        format!("{path}[{key:?}]")
                    };
                    walk(value, path, out);
                }
            }
            Value::Array(items) if !items.is_empty() => {
                for (n, value) in items.iter().enumerate() {
                    walk(value, format!("{path}[{n}]"), out);
                }
            }
            other => {
                out.insert(
                    if path.is_empty() { ".".into() } else { path },
                    other.to_string(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => walk(&value, String::new(), &mut out),
        Err(_) => {
            out.insert(
                ".".into(),
                format!("{} bytes that are not JSON", bytes.len()),
            );
        }
    }
    out
}

/// The build arguments of the rebuild: the final stage's base as the image records it (`base.name@base.digest`),
/// unless `given` names that argument; then every `given` one.
pub fn rebuild_build_args(
    containerfile: &str,
    labels: &BTreeMap<String, String>,
    given: &[String],
) -> Vec<String> {
    let mut args = Vec::new();
    if let (Some(arg), Some(name)) = (
        containerfile::final_base_arg(containerfile),
        labels.get(BASE_NAME),
    ) {
        let named = given
            .iter()
            .any(|g| g.split_once('=').is_some_and(|(k, _)| k.trim() == arg));
        if !named {
            let base = match labels.get(BASE_DIGEST) {
                Some(digest) => format!("{name}@{digest}"),
                None => name.clone(),
            };
            args.push(format!("{arg}={base}"));
        }
    }
    args.extend(given.iter().cloned());
    args
}

impl flags::Verify {
    pub fn run(self, session: &mut Session) -> anyhow::Result<()> {
        let image = parse_image_ref(&self.reference)?;
        let platforms = session.config()?.platforms.clone();
        session.registries.allow_insecure(&self.insecure_registry);
        session.registries.set_purpose("verify");
        println!("==> verify {image}");
        let repo = session.registries.repository(&session.sh, &image.target)?;
        let published = read_published(&repo, &image)?;
        let structure = check_structure(&published, &platforms);
        println!(
            "list {} ({}, {} entries)",
            published.list.digest,
            published.list.media_type,
            published.children.len()
        );
        for (platform, digest, labels) in &structure.platforms {
            println!(
                "  ok {platform} {digest}: v2s2, config {platform}, healthcheck, revision {}, created {}, version {}",
                labels[REVISION], labels[CREATED], labels[VERSION]
            );
        }
        for line in attestation_lines(&repo, &published) {
            println!("{line}");
        }
        if !structure.problems.is_empty() {
            for problem in &structure.problems {
                println!("  problem: {problem}");
            }
            anyhow::bail!(
                "{image} ({}) is not a whole image of this pipeline: {}",
                published.list.digest,
                structure.problems.join("; ")
            );
        }
        if self.no_rebuild {
            println!(
                "structure verified: {image} = {} (no rebuild: --no-rebuild)",
                published.list.digest
            );
            return Ok(());
        }
        let labels = structure.platforms[0].2.clone();
        let revision = labels[REVISION].clone();
        let checkout = Worktree::add(
            &session.sh,
            &session.root,
            &session.target_dir,
            &published.list.digest,
            &revision,
        )?;
        let rebuilt = rebuild(
            session,
            &self,
            &checkout.dir,
            &published.list.digest,
            &labels,
            &structure,
        )?;
        drop(checkout);

        println!("==> compare");
        let mut differences = Vec::new();
        let mut children = Vec::new();
        for (platform, digest, _) in &structure.platforms {
            let child = published
                .children
                .iter()
                .find(|c| &c.entry.digest == digest)
                .expect("a checked child");
            let (manifest, config) = (
                child.manifest.as_ref().expect("checked"),
                child.config.as_ref().expect("checked"),
            );
            let (rebuilt_manifest, rebuilt_config) = read_export(&rebuilt[platform])?;
            let rebuilt_digest = Digest::of(&rebuilt_manifest);
            if rebuilt_digest == *digest {
                println!("  {platform}: identical, {digest}");
            } else {
                let lines =
                    compare_images(&manifest.bytes, config, &rebuilt_manifest, &rebuilt_config);
                println!("  {platform}: differs: published {digest}, rebuilt {rebuilt_digest}");
                for line in &lines {
                    println!("    {line}");
                }
                differences.push(format!(
                    "{platform}: {}",
                    lines.first().cloned().unwrap_or_default()
                ));
            }
            let variant = ConfigFile::parse(&rebuilt_config)
                .ok()
                .and_then(|c| c.variant);
            children.push(Child {
                platform: *platform,
                variant,
                digest: rebuilt_digest,
                size: rebuilt_manifest.len() as u64,
                media_type: DOCKER_MANIFEST.to_owned(),
            });
        }
        let list = manifest::assemble_list(&children);
        if list.digest == published.list.digest {
            println!("  list: identical, {}", list.digest);
        } else {
            println!(
                "  list: published {}, rebuilt {}",
                published.list.digest, list.digest
            );
            if differences.is_empty() {
                differences
                    .push("the list's bytes differ although every child is identical".into());
            }
        }
        if differences.is_empty() {
            println!(
                "verified: {image} ({}) is what revision {} builds, byte for byte",
                published.list.digest,
                short(&revision)
            );
            Ok(())
        } else {
            anyhow::bail!(
                "{image} ({}) is not what revision {} builds: {}",
                published.list.digest,
                short(&revision),
                differences.join("; ")
            )
        }
    }
}

fn short(revision: &str) -> &str {
    &revision[..revision.len().min(12)]
}

/// Reads the list `image` names and every child's manifest, config and layer presence.
fn read_published(repo: &Repo, image: &ImageRef) -> anyhow::Result<PublishedImage> {
    let list = repo
        .manifest(&image.reference)
        .with_context(|| format!("read {image}"))?
        .ok_or_else(|| {
            exit::invalid(format!(
                "{image} does not exist: check the name and the tag or digest"
            ))
        })?;
    if !list.is_index() {
        anyhow::bail!(
            "{image} is a single image ({}), not a manifest list: this pipeline publishes a list of every platform",
            list.media_type
        );
    }
    let index: Index = serde_json::from_slice(&list.bytes)
        .map_err(|err| anyhow::anyhow!("the list {} cannot be read ({err})", list.digest))?;
    let mut children = Vec::new();
    for entry in index.manifests {
        let manifest = repo
            .manifest(entry.digest.as_str())
            .with_context(|| format!("read {}", entry.digest))?;
        let mut config = None;
        let mut missing_layers = Vec::new();
        if let Some(parsed) = manifest
            .as_ref()
            .and_then(|m| ImageManifest::parse(&m.bytes).ok())
        {
            config = repo
                .blob(&parsed.config.digest)
                .with_context(|| format!("read config {}", parsed.config.digest))?;
            for layer in &parsed.layers {
                if repo
                    .client
                    .blob_exists(&repo.target.repository, &layer.digest)?
                    .is_none()
                {
                    missing_layers.push(layer.digest.clone());
                }
            }
        }
        children.push(PublishedChild {
            entry,
            manifest,
            config,
            missing_layers,
        });
    }
    Ok(PublishedImage { list, children })
}

/// One line per subject (the list, each child) on what refers to it under its referrers tag.
fn attestation_lines(repo: &dyn Repository, image: &PublishedImage) -> Vec<String> {
    let subjects = std::iter::once(("the list".to_owned(), &image.list.digest)).chain(
        image.children.iter().map(|c| {
            let named = entry_platform(&c.entry).map_or("a child".to_owned(), |p| p.to_string());
            (named, &c.entry.digest)
        }),
    );
    let mut lines = vec!["attestations (referrers tags):".to_owned()];
    for (named, digest) in subjects {
        let tag = referrers_tag(digest);
        let line = match repo.manifest(&tag) {
            Ok(Some(index)) => match artifact_types(&index.bytes) {
                Ok(types) if types.is_empty() => format!("  {named}: {tag} lists nothing"),
                Ok(types) => format!("  {named}: {} in {tag}: {}", types.len(), types.join(", ")),
                Err(why) => format!("  {named}: {tag} cannot be read ({why})"),
            },
            Ok(None) => format!("  {named}: none"),
            Err(err) => format!("  {named}: {tag} cannot be read ({err:#})"),
        };
        lines.push(line);
    }
    lines
}

/// A detached `git worktree` of one revision under the target directory, removed when dropped.
struct Worktree {
    sh: Shell,
    dir: PathBuf,
}

impl Worktree {
    fn add(
        sh: &Shell,
        root: &Path,
        target_dir: &Path,
        list: &Digest,
        revision: &str,
    ) -> anyhow::Result<Worktree> {
        let commit = format!("{revision}^{{commit}}");
        if cmd!(sh, "git -C {root} cat-file -e {commit}")
            .quiet()
            .ignore_stderr()
            .run()
            .is_err()
        {
            anyhow::bail!(
                "the image records revision {revision}, which this checkout does not have; fetch it \
                 (`git fetch origin {revision}`, or a full clone) and run verify again, or pass --no-rebuild"
            );
        }
        let dir = target_dir
            .join("verify")
            .join(&list.hex()[..12])
            .join("checkout");
        // A worktree left by an interrupted verify is replaced.
        let _ = cmd!(sh, "git -C {root} worktree remove --force {dir}")
            .quiet()
            .ignore_stderr()
            .run();
        let _ = cmd!(sh, "git -C {root} worktree prune").quiet().run();
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
        }
        println!(
            "==> rebuild revision {revision} from a clean worktree {}",
            dir.display()
        );
        cmd!(
            sh,
            "git -C {root} worktree add --quiet --detach {dir} {revision}"
        )
        .run()
        .with_context(|| format!("check out revision {revision} into {}", dir.display()))?;
        let worktree_sh = Shell::new()?;
        worktree_sh.change_dir(root);
        Ok(Worktree {
            sh: worktree_sh,
            dir,
        })
    }
}

impl Drop for Worktree {
    fn drop(&mut self) {
        let dir = &self.dir;
        let _ = cmd!(self.sh, "git worktree remove --force {dir}")
            .quiet()
            .ignore_stderr()
            .run();
    }
}

/// Builds every platform of `structure` from `checkout` with the recorded labels (so the same time) and base,
/// without the registry layer cache (a rebuild takes nothing from the registry but its base images).
fn rebuild(
    session: &mut Session,
    flags: &flags::Verify,
    checkout: &Path,
    list: &Digest,
    labels: &BTreeMap<String, String>,
    structure: &Structure,
) -> anyhow::Result<BTreeMap<Platform, PathBuf>> {
    let sh = Shell::new()?;
    sh.change_dir(checkout);
    let config =
        ImageConfig::load(&sh).context("read [package.metadata.image] of the recorded revision")?;
    let containerfile_path = checkout.join(&config.containerfile);
    let text = std::fs::read_to_string(&containerfile_path)
        .with_context(|| format!("read {}", containerfile_path.display()))?;
    let recorded: BTreeMap<String, String> = labels
        .iter()
        .filter(|(key, _)| key.starts_with(LABEL))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let request = build::BuildRequest {
        platforms: structure.platforms.iter().map(|(p, ..)| *p).collect(),
        build_args: rebuild_build_args(&text, labels, &flags.build_arg),
        tag: Some(format!("localhost/{}:verify", config.name)),
        cache_repo: None,
        labels: recorded,
    };
    let facts = build::Facts {
        context: checkout.to_path_buf(),
        out_dir: session
            .target_dir
            .join("verify")
            .join(&list.hex()[..12])
            .join("image"),
        build_platform: build::native_platform()?,
        containerfile: text,
    };
    let mut plan = build::BuildPlan::new(&config, &request, &facts)?;
    plan.cache_repo = None;
    plan.no_cache = flags.no_cache;
    build::require_podman()?;
    let given: Vec<String> = request.build_args.clone();
    if release::use_local_bases(&session.sh, &mut plan, &given)? {
        let dir = session.target_dir.join("ci");
        crate::ci::base_images::ensure_rust_builder(&session.sh, &dir, plan.build_platform)
            .context("make the local Rust builder; `cargo xtask ci --setup-only` (as root) installs what it needs")?;
    }
    release::check_base_images(&session.sh, &release::bases_of(&plan)?)?;
    let mut out = BTreeMap::new();
    for &platform in &plan.platforms {
        let exported = build::build_platform(session, &plan, platform)?;
        out.insert(platform, exported.dir);
    }
    Ok(out)
}

/// The manifest and config of an export directory.
fn read_export(dir: &Path) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let path = dir.join("manifest.json");
    let manifest = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    let parsed = ImageManifest::parse(&manifest)
        .map_err(|why| anyhow::anyhow!("{} is {why}", path.display()))?;
    let config_path = dir.join(parsed.config.digest.hex());
    let config =
        std::fs::read(&config_path).with_context(|| format!("read {}", config_path.display()))?;
    Ok((manifest, config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media_type::DOCKER_LIST;
    use crate::oci::PlatformSpec;

    const REV: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn image_references() {
        // (input, Ok((registry, repository, tag or digest)) or Err(a fragment of the message))
        type Case<'a> = (&'a str, Result<(&'a str, &'a str, &'a str), &'a str>);
        let cases: &[Case] = &[
            ("ghcr.io/owner/app:latest", Ok(("ghcr.io", "owner/app", "latest"))),
            ("ghcr.io/owner/app", Ok(("ghcr.io", "owner/app", "latest"))),
            ("127.0.0.1:5000/team/app:1.2.3", Ok(("127.0.0.1:5000", "team/app", "1.2.3"))),
            ("127.0.0.1:5000/team/app", Ok(("127.0.0.1:5000", "team/app", "latest"))),
            (
                "docker.io/user/app:1.2@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                Ok((
                    "docker.io",
                    "user/app",
                    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                )),
            ),
            ("ghcr.io/owner/app@sha256:abc", Err("not sha256: and 64")),
            ("ghcr.io/owner/app:bad tag", Err("not a valid tag")),
            ("app:1.0", Ok(("docker.io", "library/app", "1.0"))),
            ("ghcr.io/Owner/app:latest", Err("REGISTRY/NAME:TAG")),
            ("", Err("REGISTRY/NAME:TAG")),
        ];
        for (input, want) in cases {
            match (parse_image_ref(input), want) {
                (Ok(got), Ok((registry, repository, reference))) => {
                    assert_eq!(
                        (
                            got.target.registry.as_str(),
                            got.target.repository.as_str(),
                            got.reference.as_str()
                        ),
                        (*registry, *repository, *reference),
                        "{input}"
                    );
                }
                (Err(err), Err(fragment)) => {
                    assert!(format!("{err:#}").contains(fragment), "{input}: {err:#}");
                    assert_eq!(
                        crate::exit::code_of(&err),
                        crate::exit::INVALID_INPUT,
                        "{input}"
                    );
                }
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    fn config(arch: &str, labels: &[(&str, &str)], healthcheck: bool) -> Vec<u8> {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        let mut config = serde_json::json!({
            "os": "linux", "architecture": arch,
            "config": {"Labels": labels, "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:1"]},
        });
        if healthcheck {
            config["config"]["Healthcheck"] =
                serde_json::json!({"Test": ["CMD", "/app", "--health"]});
        }
        serde_json::to_vec(&config).unwrap()
    }

    fn labels() -> Vec<(&'static str, &'static str)> {
        vec![
            (REVISION, REV),
            (CREATED, "2026-12-01T10:00:00Z"),
            (VERSION, "0.1.0"),
        ]
    }

    fn image_manifest(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
        let descriptor = |media_type: &str, bytes: &[u8]| serde_json::json!({"mediaType": media_type, "size": bytes.len(), "digest": Digest::of(bytes).to_string()});
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": descriptor("application/vnd.docker.container.image.v1+json", config),
            "layers": layers.iter().map(|l| descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", l)).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    fn child(arch: &str, config: Vec<u8>) -> PublishedChild {
        let manifest = Manifest::new(DOCKER_MANIFEST, image_manifest(&config, &[b"layer"]));
        PublishedChild {
            entry: Descriptor {
                media_type: DOCKER_MANIFEST.into(),
                size: manifest.bytes.len() as u64,
                digest: manifest.digest.clone(),
                platform: Some(PlatformSpec {
                    architecture: arch.into(),
                    os: "linux".into(),
                    variant: None,
                }),
            },
            manifest: Some(manifest),
            config: Some(config),
            missing_layers: Vec::new(),
        }
    }

    fn image(children: Vec<PublishedChild>) -> PublishedImage {
        PublishedImage {
            list: Manifest::new(DOCKER_LIST, b"{}".to_vec()),
            children,
        }
    }

    #[test]
    fn structure_of_a_published_image() {
        let good = || {
            vec![
                child("amd64", config("amd64", &labels(), true)),
                child("arm64", config("arm64", &labels(), true)),
            ]
        };
        type Change = fn(&mut PublishedImage);
        let cases: &[(&str, Change, &[&str])] = &[
            ("a whole image", |_| {}, &[]),
            (
                "an OCI index",
                |i| i.list.media_type = crate::oci::media_type::OCI_INDEX.into(),
                &["not a Docker manifest list"],
            ),
            (
                "a platform missing",
                |i| drop(i.children.pop()),
                &["names linux/arm64 0 times"],
            ),
            (
                "a platform twice",
                |i| i.children[1] = i.children[0].clone(),
                &["names linux/amd64 2 times", "linux/arm64 0 times"],
            ),
            (
                "an extra platform",
                |i| {
                    let mut extra = i.children[0].clone();
                    extra.entry.platform.as_mut().unwrap().architecture = "riscv64".into();
                    i.children.push(extra);
                },
                &["for linux/riscv64, which is not one of linux/amd64, linux/arm64"],
            ),
            (
                "a missing child",
                |i| i.children[0].manifest = None,
                &["linux/amd64 sha256:", "the manifest is missing"],
            ),
            (
                "a missing config",
                |i| i.children[1].config = None,
                &["linux/arm64", "the config sha256:", "is missing"],
            ),
            (
                "a missing layer",
                |i| i.children[0].missing_layers.push(Digest::of(b"layer")),
                &["layer sha256:", "is missing"],
            ),
            (
                "the wrong bytes",
                |i| i.children[0].manifest.as_mut().unwrap().digest = Digest::of(b"other"),
                &["bytes hashing to"],
            ),
            (
                "the wrong arch",
                |i| {
                    *i = image(vec![
                        child("amd64", config("arm64", &labels(), true)),
                        child("arm64", config("arm64", &labels(), true)),
                    ])
                },
                &["the config is for linux/arm64"],
            ),
            (
                "no healthcheck",
                |i| i.children[1] = child("arm64", config("arm64", &labels(), false)),
                &["no HEALTHCHECK"],
            ),
            (
                "no revision",
                |i| i.children[0] = child("amd64", config("amd64", &labels()[1..], true)),
                &["no org.opencontainers.image.revision label"],
            ),
            (
                "a short revision",
                |i| {
                    i.children[0] = child(
                        "amd64",
                        config(
                            "amd64",
                            &[(REVISION, "0123abc"), labels()[1], labels()[2]],
                            true,
                        ),
                    )
                },
                &["is not a full commit id"],
            ),
            (
                "children of two commits",
                |i| {
                    let other = "89abcdef0123456789abcdef0123456789abcdef";
                    i.children[1] = child(
                        "arm64",
                        config(
                            "arm64",
                            &[(REVISION, other), labels()[1], labels()[2]],
                            true,
                        ),
                    );
                },
                &["record different org.opencontainers.image.revision labels"],
            ),
        ];
        for (case, change, problems) in cases {
            let mut published = image(good());
            change(&mut published);
            let found = check_structure(&published, &Platform::ALL);
            let text = found.problems.join("\n");
            if problems.is_empty() {
                assert!(found.problems.is_empty(), "{case}: {text}");
                assert_eq!(found.platforms.len(), 2, "{case}");
            }
            for fragment in *problems {
                assert!(text.contains(fragment), "{case}: {fragment:?} in\n{text}");
            }
        }
    }

    #[test]
    fn differences_name_the_layer_and_the_config_fields() {
        let config_a = config("amd64", &labels(), true);
        let changed_labels = [labels()[0], labels()[1], (VERSION, "0.1.1")];
        let config_b = config("amd64", &changed_labels, true);
        let same = compare_images(
            &image_manifest(&config_a, &[b"one", b"two"]),
            &config_a,
            &image_manifest(&config_a, &[b"one", b"two"]),
            &config_a,
        );
        assert!(same.is_empty(), "{same:?}");
        let layer = compare_images(
            &image_manifest(&config_a, &[b"one", b"two"]),
            &config_a,
            &image_manifest(&config_a, &[b"one", b"TWO!"]),
            &config_a,
        );
        assert_eq!(layer.len(), 1, "{layer:?}");
        assert!(
            layer[0].starts_with("layer 2 of 2: published sha256:"),
            "{layer:?}"
        );
        assert!(layer[0].contains("(3 bytes), rebuilt sha256:"), "{layer:?}");
        let fields = compare_images(
            &image_manifest(&config_a, &[b"one"]),
            &config_a,
            &image_manifest(&config_b, &[b"one"]),
            &config_b,
        );
        assert!(
            fields[0].starts_with("config: published sha256:"),
            "{fields:?}"
        );
        assert_eq!(
            fields[1],
            r#"  .config.Labels["org.opencontainers.image.version"]: published "0.1.0", rebuilt "0.1.1""#,
            "{fields:?}"
        );
        assert_eq!(fields.len(), 2, "{fields:?}");
        let count = compare_images(
            &image_manifest(&config_a, &[b"one"]),
            &config_a,
            &image_manifest(&config_a, &[b"one", b"two"]),
            &config_a,
        );
        assert_eq!(count, ["1 layers published, 2 rebuilt"]);
    }

    #[test]
    fn the_rebuild_uses_the_recorded_base_unless_told_otherwise() {
        let containerfile = "ARG RUST_IMAGE=rust\nARG RUNTIME_IMAGE=distroless:nonroot@sha256:aa\n\
                             FROM ${RUST_IMAGE} AS build\nRUN true\nFROM ${RUNTIME_IMAGE}\nCOPY --from=build /a /a\n";
        assert_eq!(
            containerfile::final_base_arg(containerfile).as_deref(),
            Some("RUNTIME_IMAGE")
        );
        assert_eq!(containerfile::final_base_arg("FROM scratch\n"), None);
        let digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let recorded: BTreeMap<String, String> = [
            (
                BASE_NAME.to_owned(),
                "gcr.io/distroless/static:nonroot".to_owned(),
            ),
            (BASE_DIGEST.to_owned(), digest.to_owned()),
        ]
        .into();
        let given = ["RUST_IMAGE=localhost/rust".to_owned()];
        assert_eq!(
            rebuild_build_args(containerfile, &recorded, &given),
            [
                format!("RUNTIME_IMAGE=gcr.io/distroless/static:nonroot@{digest}"),
                given[0].clone()
            ]
        );
        let runtime_given = ["RUNTIME_IMAGE=scratch".to_owned()];
        assert_eq!(
            rebuild_build_args(containerfile, &recorded, &runtime_given),
            runtime_given
        );
        // No base recorded (built on scratch): the Containerfile and the given arguments decide.
        assert_eq!(
            rebuild_build_args(containerfile, &BTreeMap::new(), &given),
            given
        );
    }

    #[test]
    fn referrers_tags_and_their_index() {
        let digest = Digest::of(b"");
        assert_eq!(referrers_tag(&digest), format!("sha256-{}", digest.hex()));
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:1","size":1,
             "artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json"},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:2","size":1}]}"#;
        assert_eq!(
            artifact_types(index).unwrap(),
            [
                "application/vnd.dev.sigstore.bundle.v0.3+json",
                "(no artifactType)"
            ]
        );
        assert!(artifact_types(b"[]").is_err());
    }
}
