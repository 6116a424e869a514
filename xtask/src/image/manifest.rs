//! `cargo xtask image manifest`: merges the per-platform digests written by `image push` into one Docker manifest
//! list and moves the tag in every target registry, all or nothing.
//!
//! The order is the point of this stage. First everything is read and checked in every registry (each child exists
//! there and its config says the platform it claims; the digest the tag points at now is noted for pruning). Only
//! then is the list pushed by digest everywhere, then the tag moved everywhere, then the tag read back. A failure
//! before the tag moves leaves every registry's tags exactly as they were.
//!
//! The core (digest files, list assembly, the order of calls, checks, outputs) is pure and tested here against an
//! in-memory registry; `xtask/tests/it/manifest.rs` runs it against a real one.

mod commits;

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::github::Github;
use crate::image::prune;
use crate::image::push::DigestRecord;
use crate::oci::media_type::{DOCKER_LIST, DOCKER_MANIFEST, OCI_MANIFEST};
use crate::oci::{
    ConfigFile, Descriptor, Digest, ImageManifest, Index, Manifest, Platform, PlatformSpec,
};
use crate::registry::reference::parse_targets;
use crate::registry::{Reference, Repo, Repository};
use crate::session::Session;
use crate::signals::{self, Signal};
use crate::{exit, flags};

#[cfg(test)]
pub use commits::NoHistory;
pub use commits::{Commit, History};

impl flags::Manifest {
    pub fn run(self, session: &mut Session) -> anyhow::Result<()> {
        let platforms = match &self.platforms {
            Some(list) => Platform::parse_list(list)?,
            None => session.config()?.platforms.clone(),
        };
        let tag = check_tag(&self.tag)?;
        let floating = parse_floating(&tag, self.floating_tags.as_deref().unwrap_or(""))?;
        let children = read_digest_dir(&session.root.join(&self.digest_dir), &platforms)?;
        // The digest records say where `image push` put each platform: those are the targets, unless told.
        let targets = if !self.to.is_empty() {
            parse_targets(&self.to)?
        } else {
            match recorded_targets(&children)? {
                Some(targets) => targets,
                None => parse_targets(&session.config()?.targets)?,
            }
        };
        let request = Request {
            prune_previous: self.prune_previous || tag == "latest",
            monotonic: tag == "latest" && !self.allow_older,
            settle: session.settle,
            tag,
            floating,
            children: children.into_iter().map(|(child, _)| child).collect(),
        };
        let urls = Urls::new(&targets, &self.insecure_registry);
        if self.dry_run {
            print_plan(&request, &targets, &assemble_list(&request.children), &urls);
            return Ok(());
        }
        session.registries.allow_insecure(&self.insecure_registry);
        session.registries.set_purpose("publish to");
        let repos = connect(session, &targets)?;
        let access = prune::Access::from_session(session, &targets)?;
        publish_and_report(&session.github, &repos, &access, &request, &urls, &*session)?;
        Ok(())
    }
}

/// One repository per target, through the session's clients (credentials looked up once per registry).
pub fn connect(session: &mut Session, targets: &[Reference]) -> anyhow::Result<Vec<Repo>> {
    targets
        .iter()
        .map(|target| session.registries.repository(&session.sh, target))
        .collect()
}

/// The targets every digest record names, when they all name the same ones; `None` for records that name none
/// (written by hand, or by an older push). Records that disagree mean the pushes went to different places: exit 3.
pub fn recorded_targets(
    children: &[(Child, Vec<String>)],
) -> anyhow::Result<Option<Vec<Reference>>> {
    let Some((first, first_targets)) = children.first() else {
        return Ok(None);
    };
    if first_targets.is_empty() {
        return Ok(None);
    }
    for (child, targets) in children {
        if targets != first_targets {
            return Err(exit::build_failed(format!(
                "the digest records disagree on where the images are: {} was pushed to {}, {} to {}; push every \
                 platform to the same targets, or name them with --to",
                first.platform,
                first_targets.join(", "),
                child.platform,
                targets.join(", ")
            )));
        }
    }
    Ok(Some(parse_targets(first_targets)?))
}

/// The stage as CI and `image release` run it: publish, then prune what `latest` superseded, then the step
/// outputs and summary. A prune failure is a warning: the new tag is live by then. From here on a cancel's signal
/// is deferred (see [`signals`]): before the first tag move it stops the publish with nothing changed; after, the
/// tags are finished, the prune is left for later, and the exit code still says the run was cancelled.
pub fn publish_and_report(
    gh: &Github,
    repos: &[Repo],
    access: &prune::Access,
    request: &Request,
    urls: &Urls,
    history: &dyn History,
) -> anyhow::Result<Published> {
    signals::defer();
    let repositories: Vec<&dyn Repository> = repos.iter().map(|r| r as &dyn Repository).collect();
    let published = {
        let _group = gh.group(&format!(
            "image manifest: publish {} to {} target(s)",
            request.tag,
            repos.len()
        ));
        publish(
            &repositories,
            request,
            &mut |call| println!("  {}", urls.line(call)),
            &signals::received,
            history,
        )
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
    match &published.kept {
        Some(kept) => {
            let line = kept.line(&published.tag, &published.digest);
            println!("{line}");
            if gh.actions {
                gh.notice("image manifest: tag kept", &line);
            }
            for note in &kept.unconverged {
                gh.warning("image manifest: registries disagree", note);
            }
        }
        None => println!(
            "published {} = {} in {}",
            published.tag,
            published.digest,
            published.targets.join(", ")
        ),
    }
    for floating in &published.floating {
        println!("  {}", floating_line(floating));
    }
    let mut prune_summary = String::new();
    let cancelled = signals::received();
    if let (Some(signal), false) = (cancelled, published.superseded.is_empty()) {
        let note = format!(
            "{signal} received while the tags moved: they were finished; the prune of what {} superseded is left              for the next release (or `cargo xtask image prune`)",
            published.tag
        );
        gh.warning("image manifest: cancelled", &note);
        prune_summary.push_str(&format!("\n{note}\n"));
    }
    for superseded in published.superseded.iter().filter(|_| cancelled.is_none()) {
        println!(
            "  {}",
            urls.line(&Call::Prune {
                target: superseded.target.clone(),
                previous: superseded.previous.to_string(),
            })
        );
        let repo = repositories
            .iter()
            .find(|r| r.target().to_string() == superseded.target)
            .expect("superseded in a target that was published to");
        let report =
            prune::remove_superseded(*repo, access, &superseded.previous, &superseded.current);
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
    // A cancel during the prune let it finish (it puts back whatever a racing release needs); the exit code still
    // says the run was cancelled.
    let during = match cancelled {
        Some(_) => "while the tags moved: they were finished",
        None => "while the superseded index was pruned: the prune was finished",
    };
    if let Some(signal) = cancelled.or_else(signals::received) {
        return Err(exit::cancelled(
            signal,
            format!(
                "{signal} received {during}, and {} names {} in every target",
                published.tag, published.digest
            ),
        ));
    }
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

/// `--floating-tags 1.2,1`: legal tags, other than the tag, and only beside a release version (exit 2).
pub fn parse_floating(tag: &str, list: &str) -> anyhow::Result<Vec<String>> {
    let mut floating = Vec::new();
    for item in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let item = check_tag(item)?;
        if item == tag || item == "latest" {
            return Err(exit::invalid(format!(
                "--floating-tags names {item:?}, which is not a floating tag; give the X.Y and X tags of the release"
            )));
        }
        if !floating.contains(&item) {
            floating.push(item);
        }
    }
    if !floating.is_empty() && semver::Version::parse(tag).is_err() {
        return Err(exit::invalid(format!(
            "--floating-tags follow a release version, but --tag {tag:?} is not one (X.Y.Z)"
        )));
    }
    Ok(floating)
}

/// Prints the calls a run would make, in order (`--dry-run`).
pub fn print_plan(request: &Request, targets: &[Reference], list: &Manifest, urls: &Urls) {
    println!(
        "dry run: image manifest would make these registry calls, in order, and stop at the first failure:"
    );
    for call in planned_calls(request, targets, list) {
        println!("  {}", urls.line(&call));
    }
}

/// One platform's image as `image push` left it in every target: what the list's entry says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Child {
    pub platform: Platform,
    /// The CPU variant the config names (`v8`), carried into the list entry.
    pub variant: Option<String>,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// The file `image push` writes for `platform` under the digest directory (`linux-arm64`).
pub fn digest_file_name(platform: Platform) -> String {
    platform.dir_name()
}

/// Parses and checks one digest file; `path` only names it in errors. Every failure is build-side (exit 3): the
/// push that should have written it did not finish, or wrote something else.
/// Returns the child and the targets the record says it was pushed to.
pub fn parse_digest_file(
    platform: Platform,
    path: &Path,
    text: &str,
) -> anyhow::Result<(Child, Vec<String>)> {
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
    let (os, arch) = (&file.platform.os, &file.platform.architecture);
    if !platform.matches(os, arch) {
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
    Ok((
        Child {
            platform,
            variant: file.platform.variant,
            digest: file.digest,
            size: file.size,
            media_type: file.media_type,
        },
        file.targets,
    ))
}

/// Reads the digest file of every expected platform from `dir`. A missing one is named with the push to rerun.
pub fn read_digest_dir(
    dir: &Path,
    platforms: &[Platform],
) -> anyhow::Result<Vec<(Child, Vec<String>)>> {
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
    children.sort_by_key(|(child, _)| child.platform.list_position());
    Ok(children)
}

/// The fixed order of the list's entries: amd64, then arm64, whatever order the platforms were given in.
fn order(mut children: Vec<Child>) -> Vec<Child> {
    children.sort_by_key(|child| child.platform.list_position());
    children
}

/// Assembles the Docker manifest list. The bytes depend only on the children (fixed field and platform order), so
/// every rerun and every registry gets the same digest.
pub fn assemble_list(children: &[Child]) -> Manifest {
    let list = Index {
        schema_version: 2,
        media_type: DOCKER_LIST.to_owned(),
        manifests: order(children.to_vec())
            .into_iter()
            .map(|child| Descriptor {
                media_type: child.media_type,
                size: child.size,
                digest: child.digest,
                platform: Some(PlatformSpec {
                    architecture: child.platform.arch.to_owned(),
                    os: child.platform.os.to_owned(),
                    variant: child.variant,
                }),
            })
            .collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&list).expect("a list serializes");
    bytes.push(b'\n');
    Manifest::new(DOCKER_LIST, bytes)
}

/// A legal OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn is_valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric() || b == b'_')
        && tag.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
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
    /// A release's `X.Y` and `X` tags: each moves with the tag only where that is forward (`version-tags`).
    pub floating: Vec<String>,
    pub children: Vec<Child>,
    /// Remove the index the tag pointed to before, once the new one is verified live (the default for `latest`).
    pub prune_previous: bool,
    /// The tag only moves to a newer commit (`latest`, unless `--allow-older`): it stays where a newer commit's
    /// list is, and every target is brought to that list.
    pub monotonic: bool,
    /// How long after the read-back a run that moved a tag looks at it once more (see [`Session::settle`]).
    pub settle: Duration,
}

/// The calls a run makes when everything succeeds, in order. The config digests are not known before the child
/// manifests are read, so they are shown as `<config of …>`; the previous tag's target as `<previous>`.
pub fn planned_calls(request: &Request, targets: &[Reference], list: &Manifest) -> Vec<Call> {
    let children: Vec<(String, Platform)> = request
        .children
        .iter()
        .map(|child| (child.digest.to_string(), child.platform))
        .collect();
    calls_in_order(
        (&request.tag, &request.floating),
        (request.prune_previous, request.monotonic),
        &children,
        (list.digest.to_string(), Some(list.bytes.len())),
        targets,
    )
}

/// [`planned_calls`] before anything is built (a dry run of a whole release): the platforms' manifests and the
/// list are named by what they will be.
pub fn planned_calls_before_build(
    (tag, floating): (&str, &[String]),
    (prune_previous, monotonic): (bool, bool),
    platforms: &[Platform],
    targets: &[Reference],
) -> Vec<Call> {
    let children: Vec<(String, Platform)> = platforms
        .iter()
        .map(|&platform| (format!("<digest of {platform}>"), platform))
        .collect();
    calls_in_order(
        (tag, floating),
        (prune_previous, monotonic),
        &children,
        ("<list digest>".to_owned(), None),
        targets,
    )
}

fn calls_in_order(
    tags: (&str, &[String]),
    (prune_previous, monotonic): (bool, bool),
    children: &[(String, Platform)],
    (list_digest, list_size): (String, Option<usize>),
    targets: &[Reference],
) -> Vec<Call> {
    let (tag, floating) = tags;
    let tags: Vec<String> = std::iter::once(tag.to_owned())
        .chain(floating.iter().cloned())
        .collect();
    let targets: Vec<String> = targets.iter().map(ToString::to_string).collect();
    let get = |target: &String, reference: String| Call::GetManifest {
        target: target.clone(),
        reference,
    };
    let mut calls = Vec::new();
    for target in &targets {
        for (reference, platform) in children {
            calls.push(get(target, reference.clone()));
            calls.push(Call::GetBlob {
                target: target.clone(),
                digest: format!("<config of {platform}>"),
            });
        }
        calls.push(get(target, tag.to_owned()));
        calls.push(get(target, list_digest.clone()));
    }
    // The commit the tag's list records, for a tag that only moves forward.
    for target in targets.iter().filter(|_| monotonic) {
        calls.push(get(target, format!("<first image of {tag}>")));
        calls.push(Call::GetBlob {
            target: target.clone(),
            digest: format!("<config of {tag}>"),
        });
    }
    // A floating tag's current version: the label of the first image of what it names.
    for floating in floating {
        for target in &targets {
            calls.push(get(target, floating.clone()));
            calls.push(get(target, format!("<first image of {floating}>")));
            calls.push(Call::GetBlob {
                target: target.clone(),
                digest: format!("<config of {floating}>"),
            });
        }
    }
    let put_list = |target: &String, reference: &String| Call::PutManifest {
        target: target.clone(),
        reference: reference.clone(),
        media_type: DOCKER_LIST.into(),
        size: list_size,
    };
    for target in &targets {
        calls.push(put_list(target, &list_digest));
    }
    // Asked again just before the moves: has a newer commit's release moved the tag meanwhile?
    if monotonic {
        for target in &targets {
            calls.push(get(target, tag.to_owned()));
        }
    }
    for reference in &tags {
        for target in &targets {
            calls.push(put_list(target, reference));
        }
    }
    // The read-back; for a tag that only moves forward, once more after the pause; then the prune.
    let read_back = tags.iter().chain(monotonic.then_some(&tags[0]));
    for tag in read_back {
        for target in &targets {
            calls.push(get(target, tag.clone()));
        }
    }
    for target in targets.iter().filter(|_| prune_previous) {
        calls.push(Call::Prune {
            target: target.clone(),
            previous: "<previous>".into(),
        });
    }
    calls
}

/// A previous index, superseded by the new one in `target`: the prune stage's input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superseded {
    pub target: String,
    pub previous: Digest,
    pub current: Digest,
}

/// What a run did: the summary's and the outputs' input.
#[derive(Clone, Debug)]
pub struct Published {
    pub tag: String,
    pub floating: Vec<Floating>,
    pub digest: Digest,
    pub targets: Vec<String>,
    pub children: Vec<Child>,
    /// The digest the tag pointed to before, per target (`None`: the tag is new there).
    pub previous: Vec<Option<Digest>>,
    /// Indexes to prune (only with `prune_previous`, and only where the tag really moved).
    pub superseded: Vec<Superseded>,
    /// Set when the tag stayed on a newer commit's list (then `digest` is that list's, not this run's).
    pub kept: Option<Kept>,
    pub durations: Durations,
}

/// Why a tag that only moves forward was left where it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    /// This run's list (pushed by digest only if the race was lost after the move).
    pub list: Digest,
    /// The commit the tag's list records, newer than this run's.
    pub newer: Commit,
    pub ours: Option<Commit>,
    /// The newer release moved the tag after this run had: this run's move was undone by it.
    pub raced: bool,
    /// Targets that could not be brought to the newer list, with why.
    pub unconverged: Vec<String>,
}

impl Kept {
    /// `latest stays on sha256:a1b2… (commit 9f8e… of 2026-12-01T10:00:00Z), newer than this run's commit 1a2b… of …`.
    pub fn line(&self, tag: &str, digest: &Digest) -> String {
        let ours = self.ours.as_ref().map_or(
            "this run's images, which record no commit".to_owned(),
            |c| format!("this run's commit {}", c.describe()),
        );
        let how = if self.raced {
            "a racing release of it moved the tag after this run did"
        } else {
            "this run moved no tag"
        };
        format!(
            "{tag} stays on {} (commit {}), newer than {ours}: {how}; `--allow-older` moves it back deliberately",
            digest.short(),
            self.newer.describe()
        )
    }
}

#[derive(Clone, Debug, Default)]
pub struct Durations {
    pub verify: Duration,
    pub push_list: Duration,
    pub move_tag: Duration,
    pub read_back: Duration,
}

/// What a floating tag (`1.2`, `1`) did: it moves only forward, and the same way in every target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Floating {
    pub tag: String,
    pub moved: bool,
    /// `new`, `was 1.2.2`, or why it stayed: `stays on 1.2.5, newer than 1.2.3`.
    pub note: String,
}

/// Runs the stage against `repos` (one per target): verify everything everywhere, push the list by digest, move
/// the tags, read them back. `log` receives each call just before it is made. `cancel` says whether a cancel has
/// come: it is asked before each write up to the first tag move, where stopping changes nothing anyone sees, and
/// never after, since tag moves once begun are finished so that every registry names the same digest. `history`
/// says which of two commits descends from the other, for a tag that only moves forward (`latest`).
pub fn publish(
    repos: &[&dyn Repository],
    request: &Request,
    log: &mut dyn FnMut(&Call),
    cancel: &dyn Fn() -> Option<Signal>,
    history: &dyn History,
) -> anyhow::Result<Published> {
    let stop_if_cancelled = |what: &str| match cancel() {
        Some(signal) => Err(exit::cancelled(
            signal,
            format!(
                "{signal} received {what}: no tag was moved; rerun the same command to publish"
            ),
        )),
        None => Ok(()),
    };
    let list = assemble_list(&request.children);
    let targets: Vec<String> = repos.iter().map(|r| r.target().to_string()).collect();
    let mut durations = Durations::default();
    let version = match request.floating.is_empty() {
        true => None,
        false => Some(semver::Version::parse(&request.tag).map_err(|_| {
            exit::invalid(format!(
                "floating tags follow a release version, but the tag {:?} is not one (X.Y.Z)",
                request.tag
            ))
        })?),
    };

    // 1. Read only: every child in every target, where each tag points now, and the version a floating tag names.
    let started = Instant::now();
    let mut ours = None;
    let mut previous = Vec::new();
    // Where the list is there already (a release of the very images another tag names), a racing prune of that
    // other tag's superseded list may be deleting it, and every tag naming it with it.
    let mut there_before = Vec::new();
    for (repo, target) in repos.iter().zip(&targets) {
        for (index, child) in request.children.iter().enumerate() {
            let labels = verify_child(*repo, target, child, log)?;
            if index == 0 {
                ours = labels.as_ref().and_then(Commit::from_labels);
            }
        }
        previous.push(read_tag(*repo, target, &request.tag, log)?);
        log(&Call::GetManifest {
            target: target.clone(),
            reference: list.digest.to_string(),
        });
        there_before.push(
            repo.manifest(list.digest.as_str())
                .with_context(|| format!("read the manifest list {} in {target}", list.digest))?
                .is_some(),
        );
    }
    let mut commits = Commits::new(ours, history);
    // A tag that only moves forward stays where a newer commit's list is, and every target is brought to it.
    if request.monotonic {
        if let Some(newer) = commits.newest_other(repos, &previous, &list.digest, log)? {
            durations.verify = started.elapsed();
            return keep(
                repos, request, &list, newer, previous, durations, &commits, log,
            );
        }
    }
    // Per floating tag: what it names in each target, and whether it moves (everywhere or nowhere).
    let mut floating = Vec::new();
    let mut moves: Vec<(&str, Vec<Option<Manifest>>)> = vec![(&request.tag, previous.clone())];
    for tag in &request.floating {
        let version = version.as_ref().expect("floating tags come with a version");
        let mut before = Vec::new();
        let mut newest: Option<semver::Version> = None;
        for (repo, target) in repos.iter().zip(&targets) {
            let named = read_tag(*repo, target, tag, log)?;
            if let Some(manifest) = &named {
                if let Some(theirs) = version_named(*repo, target, manifest, log)? {
                    newest = newest.max(Some(theirs));
                }
            }
            before.push(named);
        }
        let (moved, note) = match &newest {
            Some(theirs) if theirs > version => {
                (false, format!("stays on {theirs}, newer than {version}"))
            }
            Some(theirs) => (true, format!("was {theirs}")),
            None if before.iter().any(Option::is_some) => {
                (true, "named an image without a version label".to_owned())
            }
            None => (true, "new".to_owned()),
        };
        if moved {
            moves.push((tag, before));
        }
        floating.push(Floating {
            tag: tag.clone(),
            moved,
            note,
        });
    }
    durations.verify = started.elapsed();

    // A tag that names the list already stays as it is: a rerun, or a release whose images are the same as the
    // last one's (a commit that changed nothing they are made from), writes nothing.
    let names_list = |named: &Option<Manifest>| {
        named
            .as_ref()
            .is_some_and(|manifest| manifest.digest == list.digest)
    };

    // 2. The list by digest everywhere: nothing points at it yet, so this changes what no one sees.
    let started = Instant::now();
    for ((repo, target), named) in repos.iter().zip(&targets).zip(&previous) {
        if names_list(named) {
            continue;
        }
        stop_if_cancelled(&format!("before the list was pushed to {target}"))?;
        put(*repo, target, list.digest.as_str(), &list, log)
            .with_context(|| format!("push the manifest list to {target} (no tag was moved)"))?;
    }
    durations.push_list = started.elapsed();

    // A release that finished while this one verified and pushed may have moved the tag to a newer commit: asked
    // again just before the moves, so the window in which a late run could put `latest` back is milliseconds.
    if request.monotonic {
        let mut now = Vec::new();
        for (repo, target) in repos.iter().zip(&targets) {
            now.push(read_tag(*repo, target, &request.tag, log)?);
        }
        if let Some(newer) = commits.newest_other(repos, &now, &list.digest, log)? {
            return keep(repos, request, &list, newer, now, durations, &commits, log);
        }
        moves[0].1 = now.clone();
        previous = now;
    }

    // 3. The tags, everywhere. Should a target refuse, every tag moved so far gets its previous manifest back: a
    // failed move may still have happened (the registry wrote it, then the answer was lost), and putting the
    // previous manifest back where it did not is harmless.
    stop_if_cancelled("before the first tag move")?;
    let started = Instant::now();
    let mut done: Vec<(&dyn Repository, &str, &Option<Manifest>)> = Vec::new();
    for (tag, before) in &moves {
        for ((repo, target), old) in repos.iter().zip(&targets).zip(before) {
            if names_list(old) {
                continue;
            }
            done.push((*repo, tag, old));
            if let Err(err) = put(*repo, target, tag, &list, log) {
                let restored = restore(&done, log);
                return Err(err).with_context(|| {
                    format!(
                        "move tag {tag} to {} in {target}; {restored}",
                        list.digest.short()
                    )
                });
            }
        }
    }
    durations.move_tag = started.elapsed();

    // 4. Read back: every moved tag must now name the list, in every target. A tag that only moves forward may
    // have been moved meanwhile by a racing release: then every target is brought to the newer commit's list.
    let started = Instant::now();
    let mut superseded = Vec::new();
    let mut lost_to = None;
    for (tag, _) in &moves {
        let racing = request.monotonic && *tag == request.tag;
        let named = read_back(repos, tag, &list, log);
        if racing {
            if let Some(newer) = converge_race(repos, tag, &list, named.clone(), &mut commits, log)?
            {
                lost_to = Some(newer);
                continue;
            }
        } else {
            for (target, now) in targets.iter().zip(&named) {
                let now_digest = now.as_ref().map(|m| &m.digest);
                if now_digest != Some(&list.digest) {
                    return Err(exit::registry_failed(format!(
                        "tag {tag} in {target} resolves to {} after the move, not to {}; another release may \
                         have moved it meanwhile: check `skopeo inspect --raw docker://{target}:{tag}`",
                        now_digest.map_or("nothing".to_owned(), |d| d.to_string()),
                        list.digest,
                    )));
                }
            }
        }
        if *tag != request.tag || !request.prune_previous {
            continue;
        }
        for (target, before) in targets.iter().zip(&previous) {
            if let Some(old) = before.as_ref().filter(|old| old.digest != list.digest) {
                superseded.push(Superseded {
                    target: target.clone(),
                    previous: old.digest.clone(),
                    current: list.digest.clone(),
                });
            }
        }
    }
    // 5. A racing prune of the same list (a version released from the very images `latest` had) may have deleted
    // it between the move and now, and its tags with it: put back what went, from the bytes verified above.
    let all: Vec<bool> = vec![true; targets.len()];
    if lost_to.is_none() {
        put_back_vanished(repos, &moves, &list, &all, log)?;
    }
    // 6. Registries have no compare-and-swap on tags: a release of an older commit that looked at `latest` just
    // before this run moved it can move it back a moment later, and a racing prune that looked at the tags before
    // this run's move sends its DELETE after. So once more, after a pause longer than either takes: `latest` is
    // brought to the newest commit's list again, and vanished tags are put back. Only where something moved: a
    // rerun that moved nothing has nothing to lose.
    let moved_latest = request.monotonic
        && previous
            .iter()
            .any(|p| p.as_ref().map(|m| &m.digest) != Some(&list.digest));
    // A prune can only be deleting a list that was there before, and only where a tag newly names it.
    let exposed: Vec<bool> = (0..targets.len())
        .map(|i| {
            there_before[i]
                && moves
                    .iter()
                    .any(|(_, before)| before[i].as_ref().map(|m| &m.digest) != Some(&list.digest))
        })
        .collect();
    if lost_to.is_none() && (moved_latest || exposed.contains(&true)) {
        std::thread::sleep(request.settle);
        if moved_latest {
            let named = read_back(repos, &request.tag, &list, log);
            lost_to = converge_race(repos, &request.tag, &list, named, &mut commits, log)?;
        }
        if lost_to.is_none() {
            put_back_vanished(repos, &moves, &list, &exposed, log)?;
        }
    }
    durations.read_back = started.elapsed();

    let previous = previous
        .iter()
        .map(|p| p.as_ref().map(|m| m.digest.clone()))
        .collect();
    let children = order(request.children.clone());
    if let Some((newer, commit)) = lost_to {
        // A newer commit's release moved the tag after this one did: its list stands everywhere, and pruning
        // is its business.
        return Ok(Published {
            tag: request.tag.clone(),
            floating,
            digest: newer.digest.clone(),
            targets,
            children,
            previous,
            superseded: Vec::new(),
            kept: Some(Kept {
                list: list.digest.clone(),
                newer: commit,
                ours: commits.ours.clone(),
                raced: true,
                unconverged: Vec::new(),
            }),
            durations,
        });
    }
    Ok(Published {
        tag: request.tag.clone(),
        floating,
        digest: list.digest,
        targets,
        children,
        previous,
        superseded,
        kept: None,
        durations,
    })
}

/// What `tag` names in each target after this run moved it to `list`. Every registry acknowledged its move with
/// the list's digest, so the publish happened; undoing it through a registry that cannot even be read would leave
/// the registries disagreeing. So an unreadable one is a warning and counts as naming the list: only the check for
/// a concurrent release is lost there.
fn read_back(
    repos: &[&dyn Repository],
    tag: &str,
    list: &Manifest,
    log: &mut dyn FnMut(&Call),
) -> Vec<Option<Manifest>> {
    let mut named = Vec::new();
    for repo in repos {
        let target = repo.target().to_string();
        log(&Call::GetManifest {
            target: target.clone(),
            reference: tag.to_string(),
        });
        match repo.manifest(tag) {
            Ok(now) => named.push(now),
            Err(err) => {
                eprintln!(
                    "warning: could not read back tag {tag} in {target} after it was moved there: {err:#}"
                );
                named.push(Some(list.clone()));
            }
        }
    }
    named
}

/// Puts back, in the `watched` targets, every moved tag that no longer resolves (a racing prune deleted its list,
/// and its tags with it), from the bytes verified before.
fn put_back_vanished(
    repos: &[&dyn Repository],
    moves: &[(&str, Vec<Option<Manifest>>)],
    list: &Manifest,
    watched: &[bool],
    log: &mut dyn FnMut(&Call),
) -> anyhow::Result<()> {
    for (tag, _) in moves {
        for (repo, _) in repos.iter().zip(watched).filter(|(_, w)| **w) {
            let target = repo.target().to_string();
            if matches!(repo.resolve(tag), Ok(None)) {
                eprintln!(
                    "warning: tag {tag} vanished from {target} after it was moved there (a racing prune deleted \
                     its list); putting it back"
                );
                put(*repo, &target, list.digest.as_str(), list, log)
                    .and_then(|()| put(*repo, &target, tag, list, log))
                    .with_context(|| format!("put tag {tag} back in {target}"))?;
            }
        }
    }
    Ok(())
}

fn read_tag(
    repo: &dyn Repository,
    target: &str,
    tag: &str,
    log: &mut dyn FnMut(&Call),
) -> anyhow::Result<Option<Manifest>> {
    log(&Call::GetManifest {
        target: target.to_owned(),
        reference: tag.to_owned(),
    });
    repo.manifest(tag)
        .with_context(|| format!("read the current tag {tag} in {target}"))
}

/// The commits of this run's images and of what the tags name, each list's read once per target.
struct Commits<'h> {
    ours: Option<Commit>,
    history: &'h dyn History,
    known: Vec<(String, Digest, Option<Commit>)>,
}

impl<'h> Commits<'h> {
    fn new(ours: Option<Commit>, history: &'h dyn History) -> Commits<'h> {
        Commits {
            ours,
            history,
            known: Vec::new(),
        }
    }

    /// The commit `manifest` (read from `repo`) records.
    fn of(
        &mut self,
        repo: &dyn Repository,
        manifest: &Manifest,
        log: &mut dyn FnMut(&Call),
    ) -> anyhow::Result<Option<Commit>> {
        let target = repo.target().to_string();
        let known =
            |(t, d, _): &&(String, Digest, Option<Commit>)| *t == target && *d == manifest.digest;
        if let Some((_, _, commit)) = self.known.iter().find(known) {
            return Ok(commit.clone());
        }
        let commit = labels_named(repo, &target, manifest, log)?
            .as_ref()
            .and_then(Commit::from_labels);
        self.known
            .push((target, manifest.digest.clone(), commit.clone()));
        Ok(commit)
    }

    /// Of the lists `named` (one per target, other than `own`), the newest commit's, if newer than this run's.
    fn newest_other(
        &mut self,
        repos: &[&dyn Repository],
        named: &[Option<Manifest>],
        own: &Digest,
        log: &mut dyn FnMut(&Call),
    ) -> anyhow::Result<Option<Newer>> {
        let mut newest: Option<Newer> = None;
        for (repo, manifest) in repos.iter().zip(named) {
            let Some(manifest) = manifest.as_ref().filter(|m| m.digest != *own) else {
                continue;
            };
            let commit = self.of(*repo, manifest, log)?;
            let beats = |than: Option<&Commit>| {
                commits::compare(than, commit.as_ref(), self.history) == Ordering::Greater
            };
            let newest_commit = newest.as_ref().map(|(_, c)| c);
            if beats(self.ours.as_ref()) && newest_commit.is_none_or(|c| beats(Some(c))) {
                let commit = commit.clone().expect("only a recorded commit is newer");
                newest = Some((manifest.clone(), commit));
            }
        }
        Ok(newest)
    }
}

/// A list newer than this run's, and the commit it records.
type Newer = (Manifest, Commit);

/// The run's tag stays on a newer commit's list: nothing of this run is written, and each target whose tag names
/// something else is brought to that list, where its children are there.
#[allow(clippy::too_many_arguments)]
fn keep(
    repos: &[&dyn Repository],
    request: &Request,
    list: &Manifest,
    (newer, commit): Newer,
    previous: Vec<Option<Manifest>>,
    durations: Durations,
    commits: &Commits,
    log: &mut dyn FnMut(&Call),
) -> anyhow::Result<Published> {
    let unconverged = converge(repos, &request.tag, &newer, &previous, log)?;
    Ok(Published {
        tag: request.tag.clone(),
        floating: Vec::new(),
        digest: newer.digest.clone(),
        targets: repos.iter().map(|r| r.target().to_string()).collect(),
        children: order(request.children.clone()),
        previous: previous
            .iter()
            .map(|p| p.as_ref().map(|m| m.digest.clone()))
            .collect(),
        superseded: Vec::new(),
        kept: Some(Kept {
            list: list.digest.clone(),
            newer: commit,
            ours: commits.ours.clone(),
            raced: false,
            unconverged,
        }),
        durations,
    })
}

/// Puts `winner` under `tag` in every target where the tag (`named`, as read) names something else and the
/// winner's children are there. Returns the targets it could not bring, with why.
fn converge(
    repos: &[&dyn Repository],
    tag: &str,
    winner: &Manifest,
    named: &[Option<Manifest>],
    log: &mut dyn FnMut(&Call),
) -> anyhow::Result<Vec<String>> {
    let children = winner.children().map_err(anyhow::Error::msg)?;
    let mut unconverged = Vec::new();
    for (repo, now) in repos.iter().zip(named) {
        if now.as_ref().map(|m| &m.digest) == Some(&winner.digest) {
            continue;
        }
        let target = repo.target().to_string();
        let mut missing = None;
        for child in &children {
            log(&Call::GetManifest {
                target: target.clone(),
                reference: child.to_string(),
            });
            if repo.manifest(child.as_str())?.is_none() {
                missing = Some(child.clone());
                break;
            }
        }
        if let Some(child) = missing {
            unconverged.push(format!(
                "{target}: {tag} left on {}; the newer list {} lists {child}, which is not there",
                now.as_ref()
                    .map_or("nothing".to_owned(), |m| m.digest.short().to_string()),
                winner.digest.short()
            ));
            continue;
        }
        put(*repo, &target, winner.digest.as_str(), winner, log)
            .and_then(|()| put(*repo, &target, tag, winner, log))
            .with_context(|| {
                format!(
                    "bring {tag} in {target} to the newer list {}",
                    winner.digest
                )
            })?;
    }
    Ok(unconverged)
}

/// After this run moved `tag` everywhere, what each target names (`named`) may differ: a racing release moved it
/// in some. Brings every target to the newest commit's list and reads again, until all agree (a few rounds at
/// most). `Some` when that list is not this run's.
fn converge_race(
    repos: &[&dyn Repository],
    tag: &str,
    list: &Manifest,
    mut named: Vec<Option<Manifest>>,
    commits: &mut Commits,
    log: &mut dyn FnMut(&Call),
) -> anyhow::Result<Option<Newer>> {
    const ROUNDS: usize = 5;
    for _ in 0..ROUNDS {
        let winner = commits.newest_other(repos, &named, &list.digest, log)?;
        let winning = winner.as_ref().map_or(list, |(m, _)| m);
        if named
            .iter()
            .all(|m| m.as_ref().map(|m| &m.digest) == Some(&winning.digest))
        {
            return Ok(winner);
        }
        let unconverged = converge(repos, tag, winning, &named, log)?;
        if !unconverged.is_empty() {
            return Err(exit::registry_failed(format!(
                "tag {tag} names different lists in the targets after racing releases, and one cannot be \
                 brought to the newest: {}; rerun the newest commit's release",
                unconverged.join("; ")
            )));
        }
        named.clear();
        for repo in repos {
            named.push(read_tag(*repo, &repo.target().to_string(), tag, log)?);
        }
    }
    Err(exit::registry_failed(format!(
        "tag {tag} still names different lists in the targets after {ROUNDS} rounds of bringing them together \
         (releases are still racing); rerun the newest commit's release"
    )))
}

/// The labels of an index's first image's config (or of an image's own config); `None` where unreadable.
fn labels_named(
    repo: &dyn Repository,
    target: &str,
    manifest: &Manifest,
    log: &mut dyn FnMut(&Call),
) -> anyhow::Result<Option<BTreeMap<String, String>>> {
    let image = match manifest.children().map_err(anyhow::Error::msg)?.first() {
        Some(child) => {
            log(&Call::GetManifest {
                target: target.to_owned(),
                reference: child.to_string(),
            });
            match repo.manifest(child.as_str())? {
                Some(image) => image,
                None => return Ok(None),
            }
        }
        None => manifest.clone(),
    };
    let Ok(image) = ImageManifest::parse(&image.bytes) else {
        return Ok(None);
    };
    log(&Call::GetBlob {
        target: target.to_owned(),
        digest: image.config.digest.to_string(),
    });
    let Some(config) = repo.blob(&image.config.digest)? else {
        return Ok(None);
    };
    Ok(ConfigFile::parse(&config)
        .ok()
        .and_then(|config| config.config.labels))
}

/// The release version an index (or image) says it is: the version label of its first image's config.
fn version_named(
    repo: &dyn Repository,
    target: &str,
    manifest: &Manifest,
    log: &mut dyn FnMut(&Call),
) -> anyhow::Result<Option<semver::Version>> {
    Ok(
        labels_named(repo, target, manifest, log)?.and_then(|labels| {
            labels
                .get("org.opencontainers.image.version")
                .and_then(|v| semver::Version::parse(v).ok())
        }),
    )
}

fn put(
    repo: &dyn Repository,
    target: &str,
    reference: &str,
    list: &Manifest,
    log: &mut dyn FnMut(&Call),
) -> anyhow::Result<()> {
    log(&Call::PutManifest {
        target: target.into(),
        reference: reference.into(),
        media_type: DOCKER_LIST.into(),
        size: Some(list.bytes.len()),
    });
    repo.put_manifest(reference, list)
}

/// Puts the previous manifests back under the tags moved so far (`done`, the failed move last). Best effort: says
/// what it did, for the error message.
fn restore(
    done: &[(&dyn Repository, &str, &Option<Manifest>)],
    log: &mut dyn FnMut(&Call),
) -> String {
    let mut notes = Vec::new();
    // The last one is the move that failed: it may or may not have happened.
    let failed = done.len().saturating_sub(1);
    for (index, (repo, tag, before)) in done.iter().enumerate() {
        let target = repo.target();
        match before {
            Some(old) => {
                log(&Call::PutManifest {
                    target: target.to_string(),
                    reference: tag.to_string(),
                    media_type: old.media_type.clone(),
                    size: Some(old.bytes.len()),
                });
                match repo.put_manifest(tag, old) {
                    Ok(()) => notes.push(format!(
                        "{target}: tag {tag} put back to {}",
                        old.digest.short()
                    )),
                    Err(err) if index == failed => notes.push(format!(
                        "{target}: if the failed move went through after all, tag {tag} could not be put back \
                         ({err:#}); check `skopeo inspect --raw docker://{target}:{tag}`"
                    )),
                    Err(err) => notes.push(format!(
                        "{target}: tag {tag} already moved and could not be put back ({err:#})"
                    )),
                }
            }
            None if index == failed => notes.push(format!(
                "{target}: tag {tag} did not exist there; if the failed move went through after all, it names the \
                 new list"
            )),
            None => notes.push(format!(
                "{target}: tag {tag} is new there and stays on the new list"
            )),
        }
    }
    format!("tags put back: {}", notes.join("; "))
}

/// Checks one child in one target: the manifest is there, is what the digest file says, and its config's
/// os/architecture is the platform it is listed under. Returns the config's labels.
fn verify_child(
    repo: &dyn Repository,
    target: &str,
    child: &Child,
    log: &mut dyn FnMut(&Call),
) -> anyhow::Result<Option<BTreeMap<String, String>>> {
    let platform = child.platform;
    log(&Call::GetManifest {
        target: target.into(),
        reference: child.digest.to_string(),
    });
    let manifest = repo
        .manifest(child.digest.as_str())
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
        digest: config_digest.to_string(),
    });
    let config = repo
        .blob(&config_digest)
        .with_context(|| format!("read the config of {platform} image in {target}"))?
        .ok_or_else(|| {
            exit::registry_failed(format!(
                "config {config_digest} of the {platform} image {} is missing in {target}; \
                 push it again with `cargo xtask image push --platform {platform} --to {target}` (no tag was moved)",
                child.digest
            ))
        })?;
    check_child_config(target, child, &config_digest, &config)?;
    Ok(ConfigFile::parse(&config)
        .ok()
        .and_then(|config| config.config.labels))
}

/// Checks a child manifest as read from `target` and returns its config digest.
pub fn check_child_manifest(
    target: &str,
    child: &Child,
    manifest: &Manifest,
) -> anyhow::Result<Digest> {
    let platform = child.platform;
    let actual = Digest::of(&manifest.bytes);
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
    let image = ImageManifest::parse(&manifest.bytes).map_err(|why| {
        exit::build_failed(format!(
            "{platform} manifest {} in {target} is {why} (no tag was moved)",
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
    Ok(image.config.digest)
}

/// Checks a child's config blob: the bytes are the named blob, and it is built for the platform it is listed
/// under. A wrong architecture is a build-side mistake (the arm64 job built amd64): exit 3.
pub fn check_child_config(
    target: &str,
    child: &Child,
    config_digest: &Digest,
    config: &[u8],
) -> anyhow::Result<()> {
    let platform = child.platform;
    if Digest::of(config) != *config_digest {
        return Err(exit::registry_failed(format!(
            "{target} answered config {config_digest} of the {platform} image with other bytes (no tag was moved)"
        )));
    }
    let config = ConfigFile::parse(config).map_err(|why| {
        exit::build_failed(format!(
            "config {config_digest} of the {platform} image in {target} is {why} (no tag was moved)"
        ))
    })?;
    let or_unknown = |s: &str| {
        if s.is_empty() {
            "?".to_owned()
        } else {
            s.to_owned()
        }
    };
    let (os, arch) = (or_unknown(&config.os), or_unknown(&config.architecture));
    if !platform.matches(&os, &arch) {
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
/// array (`references`) and one key per target (`ref_<registry host>`, `_2`, `_3` … when a host repeats); the first
/// target's `repository` and `registry` and each platform's image (`digest_linux_amd64`), the subjects of the
/// workflow's attestations.
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
        ("digest".to_owned(), published.digest.to_string()),
        ("platforms".to_owned(), platforms.join(",")),
        (
            "floating_moved".to_owned(),
            floating_tags(published, true).join(","),
        ),
        (
            "floating_kept".to_owned(),
            floating_tags(published, false).join(","),
        ),
        (
            "references".to_owned(),
            serde_json::to_string(&references).expect("strings serialize"),
        ),
        ("tag_moved".to_owned(), published.kept.is_none().to_string()),
        (
            "kept_because".to_owned(),
            published
                .kept
                .as_ref()
                .map(|kept| kept.line(&published.tag, &published.digest))
                .unwrap_or_default(),
        ),
    ];
    if let Some(first) = published.targets.first() {
        out.push(("repository".to_owned(), first.clone()));
        let registry = first.split('/').next().unwrap_or(first);
        out.push(("registry".to_owned(), registry.to_owned()));
    }
    for child in &published.children {
        out.push((
            format!("digest_{}", child.platform.dir_name().replace('-', "_")),
            child.digest.to_string(),
        ));
    }
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

fn floating_tags(published: &Published, moved: bool) -> Vec<&str> {
    published
        .floating
        .iter()
        .filter(|f| f.moved == moved)
        .map(|f| f.tag.as_str())
        .collect()
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
/// `tag 1.2 moved (was 1.2.2)`, `tag 1 left alone (stays on 1.3.0, newer than 1.2.3)`.
fn floating_line(floating: &Floating) -> String {
    format!(
        "tag {} {} ({})",
        floating.tag,
        if floating.moved {
            "moved"
        } else {
            "left alone"
        },
        floating.note
    )
}

pub fn summary(published: &Published) -> String {
    let mut out = match &published.kept {
        None => format!("### Image `{}` published\n\n", published.tag),
        Some(kept) => {
            let mut out = format!(
                "### Image `{}` left on a newer commit\n\n{}\n\nThis run's list `{}` was not tagged.\n\n",
                published.tag,
                kept.line(&published.tag, &published.digest),
                kept.list
            );
            for note in &kept.unconverged {
                out.push_str(&format!("Not brought to the newer list: {note}\n\n"));
            }
            out
        }
    };
    out.push_str(&format!(
        "Manifest list `{}`\n\n| Registry | Reference | Before |\n|---|---|---|\n",
        published.digest
    ));
    for (target, before) in published.targets.iter().zip(&published.previous) {
        let before = match before {
            Some(digest) if *digest == published.digest => "unchanged".to_owned(),
            Some(digest) => format!("`{}`", digest.short()),
            None => "new tag".to_owned(),
        };
        out.push_str(&format!(
            "| {} | `{target}:{}` | {before} |\n",
            target.split('/').next().unwrap_or(target),
            published.tag
        ));
    }
    for floating in &published.floating {
        out.push_str(&format!("\nFloating {}.\n", floating_line(floating)));
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
    use crate::registry::memory::Memory;

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

    fn d(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    #[test]
    fn digest_files() {
        let path = Path::new("/tmp/digests/linux-arm64");
        let good_obj = r#"{"os":"linux","architecture":"arm64"}"#;
        // (platform field, digest, media type, size, expected error fragment or None)
        let cases: Vec<(&str, String, &str, u64, Option<&str>)> = vec![
            // (the digests are written as text, so that malformed ones can be)
            (good_obj, d('a').to_string(), DOCKER_MANIFEST, 528, None),
            (
                r#"{"os":"linux","architecture":"arm64","variant":"v8"}"#,
                d('b').to_string(),
                DOCKER_MANIFEST,
                1,
                None,
            ),
            (
                r#"{"os":"windows","architecture":"arm64"}"#,
                d('a').to_string(),
                DOCKER_MANIFEST,
                528,
                Some("says it is for windows/arm64"),
            ),
            (
                r#"{"os":"linux","architecture":"amd64"}"#,
                d('a').to_string(),
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
                d('a')
                    .to_string()
                    .to_uppercase()
                    .replace("SHA256", "sha256"),
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
                d('a').to_string(),
                OCI_MANIFEST,
                528,
                Some("loses HEALTHCHECK"),
            ),
            (
                good_obj,
                d('a').to_string(),
                DOCKER_LIST,
                528,
                Some("schema-2 image manifests only"),
            ),
            (
                good_obj,
                d('a').to_string(),
                DOCKER_MANIFEST,
                0,
                Some("size 0"),
            ),
        ];
        for (platform, digest, media_type, size, want) in cases {
            let text = digest_json(platform, &digest, media_type, size);
            match (parse_digest_file(ARM, path, &text), want) {
                (Ok((child, targets)), None) => {
                    assert_eq!(
                        child,
                        Child {
                            platform: ARM,
                            variant: platform.contains("v8").then(|| "v8".to_owned()),
                            digest: digest.parse().unwrap(),
                            size,
                            media_type: media_type.into()
                        }
                    );
                    assert!(targets.is_empty());
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

    fn write_digest_file(dir: &Path, platform: &str, digest: Digest, size: u64) {
        let json = digest_json(&os_arch(platform), digest.as_str(), DOCKER_MANIFEST, size);
        std::fs::write(dir.join(platform.replace('/', "-")), json).unwrap();
    }

    #[test]
    fn digest_dir_names_the_missing_platform() {
        let dir = temp_dir("missing");
        write_digest_file(&dir, "linux/amd64", d('1'), 10);
        let err = read_digest_dir(&dir, &[AMD, ARM]).unwrap_err();
        assert_eq!(exit::code_of(&err), 3);
        let msg = err.to_string();
        assert!(msg.contains("no digest for linux/arm64"), "{msg}");
        assert!(msg.contains("--platform linux/arm64"), "{msg}");

        write_digest_file(&dir, "linux/arm64", d('2'), 20);
        // Given arm64 first, read in the fixed order all the same.
        let children = read_digest_dir(&dir, &[ARM, AMD]).unwrap();
        let got: Vec<_> = children.iter().map(|(c, _)| (c.platform, c.size)).collect();
        assert_eq!(got, [(AMD, 10), (ARM, 20)]);
        // Only the expected platforms are read.
        assert_eq!(read_digest_dir(&dir, &[ARM]).unwrap().len(), 1);

        let err = read_digest_dir(&dir.join("nope"), &[AMD]).unwrap_err();
        assert_eq!(exit::code_of(&err), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn child(platform: Platform, digest: Digest, size: u64) -> Child {
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
        assert_eq!(list.digest, Digest::of(&list.bytes));
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
    fn tags() {
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
    }

    /// Pushes a one-config image for `platform` into `target`, as `image push` would.
    fn push_image(memory: &Memory, target: &str, platform: (&str, &str)) -> Child {
        push_versioned(memory, target, platform, "0.0.0")
    }

    /// An image whose config carries the version label `version`.
    fn push_versioned(
        memory: &Memory,
        target: &str,
        platform: (&str, &str),
        version: &str,
    ) -> Child {
        push_labelled(
            memory,
            target,
            platform,
            &[("org.opencontainers.image.version", version)],
        )
    }

    /// An image built from `revision`, committed at `time` (seconds since the epoch).
    fn push_commit(
        memory: &Memory,
        target: &str,
        platform: (&str, &str),
        (revision, time): (&str, u64),
    ) -> Child {
        let created = crate::image::meta::rfc3339(time);
        push_labelled(
            memory,
            target,
            platform,
            &[
                (commits::REVISION_LABEL, revision),
                (commits::CREATED_LABEL, &created),
            ],
        )
    }

    /// An image whose config carries `labels`.
    fn push_labelled(
        memory: &Memory,
        target: &str,
        platform: (&str, &str),
        labels: &[(&str, &str)],
    ) -> Child {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        let config = serde_json::json!({
            "os": platform.0,
            "architecture": platform.1,
            "config": {"Healthcheck": {}, "Labels": labels},
        })
        .to_string();
        let config_digest = memory.put_blob(target, config.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":{},"digest":"{config_digest}"}},"layers":[]}}"#,
            config.len()
        );
        let manifest = Manifest::new(DOCKER_MANIFEST, manifest.into_bytes());
        memory
            .repository(target)
            .put_manifest(manifest.digest.as_str(), &manifest)
            .unwrap();
        child(
            format!("{}/{}", platform.0, platform.1)
                .parse()
                .unwrap_or(AMD),
            manifest.digest.clone(),
            manifest.bytes.len() as u64,
        )
    }

    fn run(memory: &Memory, request: &Request) -> anyhow::Result<Published> {
        run_logged(memory, request, &mut |_| {})
    }

    fn run_logged(
        memory: &Memory,
        request: &Request,
        log: &mut dyn FnMut(&Call),
    ) -> anyhow::Result<Published> {
        let repos = [memory.repository(A), memory.repository(B)];
        let repos: Vec<&dyn Repository> = repos.iter().map(|r| r as &dyn Repository).collect();
        publish(&repos, request, log, &|| None, &NoHistory)
    }

    fn targets() -> Vec<Reference> {
        parse_targets(&[A.into(), B.into()]).unwrap()
    }

    const A: &str = "a.example/team/app";
    const B: &str = "b.example/team/app";

    /// Commits in order: the one `latest` names in [`setup`], the one it publishes, and a later one.
    const OLD: (&str, u64) = ("a1", 1_000);
    const NEW: (&str, u64) = ("b2", 2_000);
    const NEWER: (&str, u64) = ("c3", 3_000);

    /// Both platforms of `commit` pushed to both registries, untagged.
    fn push_build(memory: &Memory, commit: (&str, u64)) -> Vec<Child> {
        let mut children = Vec::new();
        for target in [A, B] {
            children = vec![
                push_commit(memory, target, ("linux", "amd64"), commit),
                push_commit(memory, target, ("linux", "arm64"), commit),
            ];
        }
        children
    }

    /// Two registries, both platforms of `NEW` pushed to both, and `latest` on the list of `OLD` in each.
    fn setup() -> (Memory, Request) {
        let memory = Memory::default();
        let old = assemble_list(&push_build(&memory, OLD));
        for target in [A, B] {
            let repo = memory.repository(target);
            repo.put_manifest(old.digest.as_str(), &old).unwrap();
            repo.put_manifest("latest", &old).unwrap();
        }
        let children = push_build(&memory, NEW);
        memory.clear_calls();
        let request = Request {
            tag: "latest".into(),
            floating: Vec::new(),
            children,
            prune_previous: true,
            monotonic: true,
            settle: Duration::ZERO,
        };
        (memory, request)
    }

    #[test]
    fn publishes_in_order_and_matches_the_plan() {
        let (memory, request) = setup();
        let old = memory.tags();
        let mut logged = Vec::new();
        let published =
            run_logged(&memory, &request, &mut |call| logged.push(call.clone())).unwrap();
        let list = assemble_list(&request.children);
        assert_eq!(published.digest, list.digest);
        for (target, tag, digest) in memory.tags() {
            assert_eq!(
                (tag.as_str(), &digest),
                ("latest", &list.digest),
                "{target}"
            );
        }
        // The log is the dry-run plan with the unknowns filled in.
        let plan = planned_calls(&request, &targets(), &list);
        let plan: Vec<&Call> = plan
            .iter()
            .filter(|call| !matches!(call, Call::Prune { .. }))
            .collect();
        assert_eq!(logged.len(), plan.len(), "{logged:#?}\n{plan:#?}");
        for (logged, planned) in logged.iter().zip(&plan) {
            assert!(as_planned(logged, planned), "{logged} is not {planned}");
        }
        // No write before every read of every target.
        let calls = memory.calls();
        let first_put = calls.iter().position(|c| c.starts_with("PUT")).unwrap();
        let reads = calls[..first_put].len();
        // Per registry: two children and their configs, the tag, the list, and the first image and config of what
        // the tag names.
        assert_eq!(reads, 2 * (2 * 2 + 1 + 1 + 2), "{calls:?}");
        // Both lists pushed by digest before any tag moved.
        let puts: Vec<&String> = calls.iter().filter(|c| c.starts_with("PUT")).collect();
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
        // A rerun changes nothing, supersedes nothing and writes nothing.
        memory.clear_calls();
        let tags_before = memory.tags();
        let again = run(&memory, &request).unwrap();
        assert_eq!(again.digest, list.digest);
        assert!(again.superseded.is_empty());
        let writes: Vec<String> = memory
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("PUT") || c.starts_with("DELETE"))
            .collect();
        assert_eq!(writes, Vec::<String>::new());
        assert_eq!(memory.tags(), tags_before);
    }

    /// A call's kind and place, with digests that are unknown in a dry run blanked out.
    fn shape(call: &Call) -> String {
        match call {
            Call::GetBlob { target, .. } => format!("GET blob {target}"),
            other => other.to_string(),
        }
    }

    /// Whether a logged call is the planned one: equal, or a read of the manifest the plan could only name by
    /// its place (`<first image of latest>`).
    fn as_planned(logged: &Call, planned: &Call) -> bool {
        match (logged, planned) {
            (
                Call::GetManifest { target, .. },
                Call::GetManifest {
                    target: planned_target,
                    reference,
                },
            ) if reference.starts_with("<first image of ") => target == planned_target,
            _ => shape(logged) == shape(planned),
        }
    }

    #[test]
    fn nothing_moves_unless_everything_is_verified() {
        type Break = fn(&Memory, &mut Request);
        let cases: Vec<(&str, Break, i32, &str)> = vec![
            (
                "arm64 missing in the second registry",
                |m, r| m.remove_manifest(B, &r.children[1].digest),
                4,
                "linux/arm64 image",
            ),
            (
                "arm64 config missing in the second registry",
                |m, _| {
                    m.retain_blobs(|target, config| {
                        target != B || !String::from_utf8_lossy(config).contains("arm64")
                    })
                },
                4,
                "config",
            ),
            (
                "the arm64 job built amd64",
                |m, r| {
                    let wrong = push_image(m, A, ("linux", "amd64"));
                    let wrong_b = push_image(m, B, ("linux", "amd64"));
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
                |m, r| m.corrupt_manifest(B, &r.children[0].digest),
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
            let (memory, mut request) = setup();
            break_it(&memory, &mut request);
            memory.clear_calls();
            let before = memory.tags();
            let err = run(&memory, &request).unwrap_err();
            assert_eq!(exit::code_of(&err), code, "{name}: {err:#}");
            let msg = format!("{err:#}");
            assert!(msg.contains(fragment), "{name}: {msg}");
            assert!(msg.contains("no tag was moved"), "{name}: {msg}");
            assert_eq!(memory.tags(), before, "{name}");
            assert!(
                !memory.calls().iter().any(|c| c.starts_with("PUT")),
                "{name}: {:?}",
                memory.calls()
            );
        }
    }

    /// A cancel noted at every point of a publish: until the first tag move it stops the publish with every tag as
    /// it was (exit 143); from then on the moves are finished and every registry names the new list.
    #[test]
    fn a_cancel_stops_before_the_tags_move_or_lets_them_finish() {
        let (memory, request) = setup();
        let mut calls = 0;
        run_logged(&memory, &request, &mut |_| calls += 1).unwrap();
        let list = assemble_list(&request.children);
        let first_tag_move = {
            let (memory, request) = setup();
            let mut logged = Vec::new();
            run_logged(&memory, &request, &mut |call| logged.push(call.clone())).unwrap();
            logged
                .iter()
                .position(|call| matches!(call, Call::PutManifest { reference, .. } if reference == "latest"))
                .expect("a tag move in the log")
        };
        let mut stopped = 0;
        for at in 0..=calls {
            let (memory, request) = setup();
            let before = memory.tags();
            let (seen, noted) = (std::cell::Cell::new(0), std::cell::Cell::new(false));
            let repos = [memory.repository(A), memory.repository(B)];
            let repos: Vec<&dyn Repository> = repos.iter().map(|r| r as &dyn Repository).collect();
            let result = publish(
                &repos,
                &request,
                &mut |_| {
                    seen.set(seen.get() + 1);
                    if seen.get() > at {
                        noted.set(true);
                    }
                },
                &|| noted.get().then_some(Signal(15)),
                &NoHistory,
            );
            match result {
                Err(err) => {
                    stopped += 1;
                    assert!(
                        at < first_tag_move,
                        "stopped after a tag moved (at {at}): {err:#}"
                    );
                    assert_eq!(exit::code_of(&err), 143, "{err:#}");
                    assert!(format!("{err:#}").contains("SIGTERM received"), "{err:#}");
                    assert_eq!(memory.tags(), before, "at {at}");
                }
                Ok(published) => {
                    assert!(at >= first_tag_move, "went on although cancelled at {at}");
                    for (target, tag, digest) in memory.tags() {
                        assert_eq!(
                            (tag.as_str(), &digest),
                            ("latest", &list.digest),
                            "{target}"
                        );
                    }
                    assert_eq!(published.digest, list.digest);
                }
            }
        }
        // A cancel noted at any call before the first tag move stopped the publish.
        assert_eq!(stopped, first_tag_move);
        assert!(first_tag_move > 0);
    }

    /// The list of `commit`'s build, pushed by digest and tagged `latest` in `targets`.
    fn tag_build(memory: &Memory, commit: (&str, u64), targets: &[&str]) -> Manifest {
        let list = assemble_list(&push_build(memory, commit));
        for target in targets {
            let repo = memory.repository(target);
            repo.put_manifest(list.digest.as_str(), &list).unwrap();
            repo.put_manifest("latest", &list).unwrap();
        }
        list
    }

    fn latest(memory: &Memory) -> Vec<(String, Digest)> {
        memory
            .tags()
            .into_iter()
            .filter(|(_, tag, _)| tag == "latest")
            .map(|(target, _, digest)| (target, digest))
            .collect()
    }

    #[test]
    fn latest_never_goes_back_to_an_older_commit() {
        struct Case {
            name: &'static str,
            /// What `latest` names in A and in B before the run (`None`: as `setup` left it, on OLD).
            before: [Option<(&'static str, u64)>; 2],
            /// Whose images are missing from B (their arm64 child), so nothing newer can be copied there.
            missing_in_b: bool,
            monotonic: bool,
            history: &'static [&'static str],
            /// What `latest` names in both afterwards: the run's own list, or the newest commit's.
            want_ours: bool,
            want_unconverged: usize,
        }
        let cases = [
            Case {
                name: "an older commit's latest moves forward",
                before: [None, None],
                missing_in_b: false,
                monotonic: true,
                history: &[],
                want_ours: true,
                want_unconverged: 0,
            },
            Case {
                name: "a newer commit's latest stays",
                before: [Some(NEWER), Some(NEWER)],
                missing_in_b: false,
                monotonic: true,
                history: &[],
                want_ours: false,
                want_unconverged: 0,
            },
            Case {
                name: "--allow-older moves it back",
                before: [Some(NEWER), Some(NEWER)],
                missing_in_b: false,
                monotonic: false,
                history: &[],
                want_ours: true,
                want_unconverged: 0,
            },
            Case {
                name: "disagreeing registries are brought to the newest",
                before: [Some(NEWER), None],
                missing_in_b: false,
                monotonic: true,
                history: &[],
                want_ours: false,
                want_unconverged: 0,
            },
            Case {
                name: "...where its children are there",
                before: [Some(NEWER), None],
                missing_in_b: true,
                monotonic: true,
                history: &[],
                want_ours: false,
                want_unconverged: 1,
            },
            // The history knows NEWER's commit as an ancestor of this run's, whatever its recorded time says.
            Case {
                name: "ancestry outweighs commit time",
                before: [Some(NEWER), Some(NEWER)],
                missing_in_b: false,
                monotonic: true,
                history: &["a1", "c3", "b2"],
                want_ours: true,
                want_unconverged: 0,
            },
        ];
        struct Line(&'static [&'static str]);
        impl History for Line {
            fn is_ancestor(&self, older: &str, newer: &str) -> Option<bool> {
                let at = |r: &str| self.0.iter().position(|c| *c == r);
                Some(at(older)? <= at(newer)?)
            }
        }
        for case in cases {
            let (memory, mut request) = setup();
            request.monotonic = case.monotonic;
            let mut newest = None;
            for (target, before) in [A, B].iter().zip(case.before) {
                if let Some(commit) = before {
                    newest = Some(tag_build(&memory, commit, &[target]));
                }
            }
            if case.missing_in_b {
                let newer = newest.as_ref().unwrap();
                memory.remove_manifest(B, &newer.children().unwrap()[1]);
            }
            let tags_before = latest(&memory);
            memory.clear_calls();
            let repos = [memory.repository(A), memory.repository(B)];
            let repos: Vec<&dyn Repository> = repos.iter().map(|r| r as &dyn Repository).collect();
            let published = publish(&repos, &request, &mut |_| {}, &|| None, &Line(case.history))
                .unwrap_or_else(|err| panic!("{}: {err:#}", case.name));
            let ours = assemble_list(&request.children).digest;
            let after = latest(&memory);
            if case.want_ours {
                assert!(published.kept.is_none(), "{}", case.name);
                assert_eq!(published.digest, ours, "{}", case.name);
                assert!(
                    after.iter().all(|(_, d)| *d == ours),
                    "{}: {after:?}",
                    case.name
                );
                continue;
            }
            let newer = newest.expect("a newer list in the case");
            let kept = published
                .kept
                .as_ref()
                .unwrap_or_else(|| panic!("{}: not kept", case.name));
            assert_eq!(published.digest, newer.digest, "{}", case.name);
            assert_eq!(kept.list, ours, "{}", case.name);
            assert_eq!(kept.newer.revision, NEWER.0, "{}", case.name);
            assert!(!kept.raced, "{}", case.name);
            assert_eq!(
                kept.unconverged.len(),
                case.want_unconverged,
                "{}: {:?}",
                case.name,
                kept.unconverged
            );
            assert!(published.superseded.is_empty(), "{}", case.name);
            // Nothing of this run was written: its list is nowhere, and no tag names it.
            assert!(
                !memory
                    .calls()
                    .iter()
                    .any(|c| c.starts_with("PUT") && c.contains(ours.as_str())),
                "{}: {:?}",
                case.name,
                memory.calls()
            );
            let want: Vec<(String, Digest)> = if case.want_unconverged == 0 {
                [A, B]
                    .iter()
                    .map(|t| (t.to_string(), newer.digest.clone()))
                    .collect()
            } else {
                tags_before
            };
            assert_eq!(after, want, "{}", case.name);
            let outputs = outputs(&published);
            assert!(
                outputs.contains(&("tag_moved".into(), "false".into())),
                "{}",
                case.name
            );
            let line = kept.line("latest", &published.digest);
            assert!(
                line.contains("latest stays on")
                    && line.contains("newer than this run's commit b2"),
                "{line}"
            );
            assert!(summary(&published).contains(&line), "{}", case.name);
        }
    }

    #[test]
    fn racing_releases_of_latest_end_on_the_newest_everywhere() {
        // Between this run's moves and its read-back another release moves `latest` in one registry: a newer
        // commit's in A (this run lost), or an older commit's in B (this run's list goes back there).
        for (name, racer, into, ours_wins) in [
            ("newer in A", NEWER, A, false),
            ("older in B", OLD, B, true),
        ] {
            let (memory, request) = setup();
            let racer = assemble_list(&push_build(&memory, racer));
            let repos = [memory.repository(A), memory.repository(B)];
            let repos: Vec<&dyn Repository> = repos.iter().map(|r| r as &dyn Repository).collect();
            let (mut moves, mut raced) = (0, false);
            let published = publish(
                &repos,
                &request,
                &mut |call| {
                    if matches!(call, Call::PutManifest { reference, .. } if reference == "latest") {
                        moves += 1;
                    }
                    if moves == 2 && !raced && matches!(call, Call::GetManifest { reference, .. } if reference == "latest") {
                        raced = true;
                        let repo = memory.repository(into);
                        repo.put_manifest(racer.digest.as_str(), &racer).unwrap();
                        repo.put_manifest("latest", &racer).unwrap();
                    }
                },
                &|| None,
                &NoHistory,
            )
            .unwrap_or_else(|err| panic!("{name}: {err:#}"));
            assert!(raced, "{name}");
            let ours = assemble_list(&request.children).digest;
            let want = if ours_wins { &ours } else { &racer.digest };
            assert!(
                latest(&memory).iter().all(|(_, d)| d == want),
                "{name}: {:?}",
                latest(&memory)
            );
            assert_eq!(&published.digest, want, "{name}");
            match &published.kept {
                Some(kept) => {
                    assert!(!ours_wins && kept.raced, "{name}");
                    assert!(
                        published.superseded.is_empty(),
                        "{name}: a lost race prunes nothing"
                    );
                }
                None => assert!(ours_wins, "{name}"),
            }
        }
    }

    #[test]
    fn a_refused_tag_move_puts_the_earlier_ones_back() {
        let (memory, request) = setup();
        let before = memory.tags();
        memory.fail_put(B, "latest");
        let err = run(&memory, &request).unwrap_err();
        assert_eq!(exit::code_of(&err), 4);
        let msg = format!("{err:#}");
        assert!(msg.contains(&format!("{A}: tag latest put back")), "{msg}");
        assert_eq!(memory.tags(), before);

        // Where the tag is new, it cannot be taken back: the message says so.
        let (memory, mut request) = setup();
        request.tag = "1.2.3".into();
        memory.fail_put(B, "1.2.3");
        let msg = format!("{:#}", run(&memory, &request).unwrap_err());
        assert!(
            msg.contains("is new there and stays on the new list"),
            "{msg}"
        );
    }

    #[test]
    fn floating_tags_only_move_forward() {
        let memory = Memory::default();
        // Releases in this order, each with floating X.Y and X: (version, build seed, what 0.1 and 0 name after).
        let release = |version: &str| {
            let mut children = Vec::new();
            for target in [A, B] {
                children = vec![
                    push_versioned(&memory, target, ("linux", "amd64"), version),
                    push_versioned(&memory, target, ("linux", "arm64"), version),
                ];
            }
            let v = semver::Version::parse(version).unwrap();
            let request = Request {
                tag: version.into(),
                floating: vec![format!("{}.{}", v.major, v.minor), v.major.to_string()],
                children,
                prune_previous: false,
                monotonic: false,
                settle: Duration::ZERO,
            };
            let published = run(&memory, &request).unwrap();
            let moves: Vec<(String, bool, String)> = published
                .floating
                .iter()
                .map(|f| (f.tag.clone(), f.moved, f.note.clone()))
                .collect();
            (published.digest, moves)
        };
        let named = |tag: &str| -> Vec<Digest> {
            memory
                .tags()
                .into_iter()
                .filter(|(_, t, _)| t == tag)
                .map(|(_, _, digest)| digest)
                .collect()
        };
        let own = |s: &str| (s.to_owned(), true, "new".to_owned());
        // A new line: both tags are new.
        let (first, moves) = release("0.1.0");
        assert_eq!(moves, [own("0.1"), own("0")]);
        // A higher minor: 0.2 is new, 0 moves forward.
        let (second, moves) = release("0.2.0");
        assert_eq!(moves, [own("0.2"), ("0".into(), true, "was 0.1.0".into())]);
        // An older line's patch: 0.1 moves forward, 0 stays on the newer 0.2.0.
        let (third, moves) = release("0.1.1");
        assert_eq!(
            moves,
            [
                ("0.1".into(), true, "was 0.1.0".into()),
                ("0".into(), false, "stays on 0.2.0, newer than 0.1.1".into())
            ]
        );
        assert_eq!(named("0.1"), [third.clone(), third.clone()]);
        assert_eq!(named("0"), [second.clone(), second.clone()]);
        for (tag, digest) in [("0.1.0", &first), ("0.2.0", &second), ("0.1.1", &third)] {
            assert_eq!(named(tag), [digest.clone(), digest.clone()], "{tag}");
        }
        // The same version released again moves its floating tags to the new list.
        let (again, moves) = release("0.2.0");
        assert_eq!(moves[1], ("0".into(), true, "was 0.2.0".into()));
        assert_eq!(named("0"), [again.clone(), again]);
        assert!(named("latest").is_empty());
    }

    #[test]
    fn floating_tags_need_a_version() {
        for (tag, list, ok) in [
            ("1.2.3", "1.2,1", true),
            ("1.2.3", "", true),
            ("latest", "", true),
            ("latest", "1", false),
            ("1.2.3", "latest", false),
            ("1.2.3", "1.2.3", false),
            ("1.2.3", "a b", false),
        ] {
            let got = parse_floating(tag, list);
            assert_eq!(got.is_ok(), ok, "{tag} {list}: {got:?}");
            if let Err(err) = got {
                assert_eq!(exit::code_of(&err), 2);
            }
        }
    }

    #[test]
    fn versions_never_supersede() {
        let (memory, mut request) = setup();
        request.tag = "1.2.3".into();
        request.prune_previous = false;
        let published = run(&memory, &request).unwrap();
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
        let plan: Vec<String> = planned_calls(&request, &targets(), &list)
            .iter()
            .map(|c| c.to_string())
            .collect();
        let puts: Vec<usize> = (0..plan.len())
            .filter(|&i| plan[i].starts_with("PUT"))
            .collect();
        assert_eq!(puts.len(), 4);
        // Every read precedes every write; every tag write follows every digest write.
        assert!(plan[..puts[0]].iter().all(|c| c.starts_with("GET")));
        assert!(
            plan[puts[0]].contains(list.digest.as_str())
                && plan[puts[1]].contains(list.digest.as_str())
        );
        assert!(plan[puts[2]].ends_with(&format!(
            "manifests/latest ({DOCKER_LIST}, {} bytes)",
            list.bytes.len()
        )));
        assert_eq!(plan.iter().filter(|c| c.starts_with("PRUNE")).count(), 2);
        assert_eq!(
            plan.last().unwrap(),
            &format!("PRUNE  {B} superseded <previous>")
        );
        let unbuilt: Vec<String> =
            planned_calls_before_build(("latest", &[]), (true, true), &[AMD, ARM], &targets())
                .iter()
                .map(|c| c.to_string())
                .collect();
        assert_eq!(unbuilt.len(), plan.len());
        assert!(
            unbuilt[0].ends_with("manifests/<digest of linux/amd64>"),
            "{}",
            unbuilt[0]
        );
        assert!(unbuilt[puts[0]].ends_with(&format!("manifests/<list digest> ({DOCKER_LIST})")));
    }

    fn published() -> Published {
        Published {
            tag: "latest".into(),
            floating: Vec::new(),
            digest: d('f'),
            targets: vec![
                "ghcr.io/o/app".into(),
                "docker.io/o/app".into(),
                "docker.io/o/app2".into(),
            ],
            children: vec![child(AMD, d('1'), 528), child(ARM, d('2'), 529)],
            previous: vec![Some(d('e')), None, Some(d('f'))],
            superseded: vec![],
            kept: None,
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
            ("digest", d('f').to_string()),
            ("platforms", "linux/amd64,linux/arm64".into()),
            ("floating_moved", String::new()),
            ("floating_kept", String::new()),
            (
                "references",
                format!(
                    r#"["ghcr.io/o/app:latest@{0}","docker.io/o/app:latest@{0}","docker.io/o/app2:latest@{0}"]"#,
                    d('f')
                ),
            ),
            ("tag_moved", "true".into()),
            ("kept_because", String::new()),
            ("repository", "ghcr.io/o/app".into()),
            ("registry", "ghcr.io".into()),
            ("digest_linux_amd64", d('1').to_string()),
            ("digest_linux_arm64", d('2').to_string()),
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
