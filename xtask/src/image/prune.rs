//! Removing superseded manifests: the old `latest` after a release (called by the manifest stage), and
//! `cargo xtask image prune` for untagged clutter.
//!
//! Safety rules (the decisions themselves are in [`plan`], a pure function with table-driven tests):
//! - only after the new index is live: the caller reads the digest `latest` pointed to before moving the tag, and
//!   calls [`remove_superseded`] once the new `latest` answers in that registry;
//! - nothing a tag still needs goes: the tags are read fresh from the registry, and a manifest a tag points to, or
//!   that a tagged index lists, is kept; if any tagged manifest cannot be read, nothing is deleted;
//! - the index is deleted before its children, and the tags are read again before the children go;
//! - every deleted manifest is saved first; if a concurrent release starts using one of them (two releases of
//!   `latest` racing), it is put back byte for byte, so the winner's `latest` stays whole;
//! - a failure never fails the release: it comes back in the [`PruneReport`] as a warning.
//!
//! Backends, chosen per target ([`Kind`]): GHCR through GitHub's packages API ([`ghcr`]), Docker Hub through its
//! API and registry DELETE ([`dockerhub`]), any other registry through the distribution API ([`oci`]).

pub mod api;
pub mod dockerhub;
pub mod ghcr;
pub mod oci;
pub mod plan;
#[cfg(test)]
mod registry_tests;
#[cfg(test)]
mod testing;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use anyhow::Context;

use plan::Snapshot;

use crate::oci::{Digest, Manifest};
pub use crate::registry::Removal;
use crate::registry::{Credentials, Reference, Repository};
use crate::session::Session;
use crate::{exit, flags};

impl flags::Prune {
    pub fn run(self, session: &mut Session) -> anyhow::Result<()> {
        let targets = if self.to.is_empty() {
            session.config()?.targets.clone()
        } else {
            self.to.clone()
        };
        let targets = crate::registry::reference::parse_targets(&targets)?;
        for digest in &self.digest {
            if !Digest::is_valid(digest) {
                return Err(exit::invalid(format!(
                    "--digest {digest:?} is not a digest; give sha256: and 64 lowercase hex digits"
                )));
            }
        }
        session.registries.allow_insecure(&self.insecure_registry);
        session.registries.set_purpose("prune");
        let access = Access::from_session(session, &targets)?;
        let mut failed = Vec::new();
        for target in &targets {
            let repo = session.registries.repository(&session.sh, target)?;
            let report = remove_untagged(&repo, &access, &self.digest, self.yes);
            print!("{}", report.text(self.yes));
            for warning in report.warnings() {
                session.github.warning("image prune", &warning);
            }
            session.github.append_summary(&report.markdown())?;
            if report.failed() {
                failed.push(target.to_string());
            }
        }
        if !self.yes {
            println!("nothing was deleted; run again with --yes to delete what is listed");
        }
        if !failed.is_empty() {
            return Err(exit::registry_failed(format!(
                "prune did not finish in {}; see the failures above, fix them and run it again (it is safe to repeat)",
                failed.join(", ")
            )));
        }
        Ok(())
    }
}

/// Which API deletes manifests in a target registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// GitHub packages REST API (GHCR answers the registry DELETE with 405).
    Ghcr,
    /// Docker Hub API for tags, registry DELETE for manifests.
    DockerHub,
    /// The distribution API alone.
    Oci,
}

impl Kind {
    /// The backend for a target: an override for its registry if one is set, else by host.
    pub fn of(target: &Reference, overrides: &BTreeMap<String, Kind>) -> Kind {
        if let Some(kind) = overrides
            .get(&target.registry)
            .or_else(|| overrides.get(&target.api_host))
        {
            return *kind;
        }
        match target.registry.as_str() {
            "ghcr.io" => Kind::Ghcr,
            "docker.io"
            | "index.docker.io"
            | "registry-1.docker.io"
            | "registry.hub.docker.com" => Kind::DockerHub,
            _ => Kind::Oci,
        }
    }

    fn parse(name: &str) -> Option<Kind> {
        match name {
            "ghcr" => Some(Kind::Ghcr),
            "dockerhub" => Some(Kind::DockerHub),
            "oci" => Some(Kind::Oci),
            _ => None,
        }
    }
}

/// What pruning needs besides the registry client, read from the environment once at the edge
/// ([`Access::from_session`]).
#[derive(Clone, Default)]
pub struct Access {
    /// GITHUB_API_URL, else `https://api.github.com`.
    pub github_api: String,
    /// Bearer token for the packages API: GITHUB_TOKEN, else GHCR's registry secret.
    pub github_token: Option<String>,
    /// DOCKERHUB_API_URL, else `https://hub.docker.com`.
    pub dockerhub_api: String,
    /// Docker Hub credentials (the registry's, DOCKERHUB_USERNAME/DOCKERHUB_TOKEN or auth files).
    pub dockerhub_login: Option<Credentials>,
    /// XTASK_PRUNE_BACKEND=`host=ghcr|dockerhub|oci,…`: treat a registry as GHCR or Docker Hub (a GitHub
    /// Enterprise container registry, or a local stand-in).
    pub overrides: BTreeMap<String, Kind>,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("github_api", &self.github_api)
            .field(
                "github_token",
                &self.github_token.as_ref().map(|_| "<redacted>"),
            )
            .field("dockerhub_api", &self.dockerhub_api)
            .field("dockerhub_login", &self.dockerhub_login)
            .field("overrides", &self.overrides)
            .finish()
    }
}

pub const GITHUB_API: &str = "https://api.github.com";
pub const DOCKERHUB_API: &str = "https://hub.docker.com";

impl Access {
    /// Reads GITHUB_API_URL, GITHUB_TOKEN, DOCKERHUB_API_URL and XTASK_PRUNE_BACKEND, and takes the credentials of
    /// the GHCR and Docker Hub targets among `targets` from the session's lookup (so no helper runs twice).
    pub fn from_session(session: &mut Session, targets: &[Reference]) -> anyhow::Result<Access> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let overrides = parse_overrides(var("XTASK_PRUNE_BACKEND").as_deref().unwrap_or(""))?;
        let mut access = Access {
            github_api: var("GITHUB_API_URL").unwrap_or_else(|| GITHUB_API.to_owned()),
            // From the session's snapshot: the process environment no longer holds secrets by now.
            github_token: session
                .registries
                .env()
                .get("GITHUB_TOKEN")
                .map(str::to_owned),
            dockerhub_api: var("DOCKERHUB_API_URL").unwrap_or_else(|| DOCKERHUB_API.to_owned()),
            dockerhub_login: None,
            overrides,
        };
        for target in targets {
            let kind = Kind::of(target, &access.overrides);
            let wanted = match kind {
                Kind::Ghcr => access.github_token.is_none(),
                Kind::DockerHub => access.dockerhub_login.is_none(),
                Kind::Oci => false,
            };
            if !wanted {
                continue;
            }
            if let Some(found) = session.registries.credentials(&session.sh, target)? {
                match kind {
                    Kind::Ghcr => access.github_token = Some(found.credentials.secret),
                    _ => access.dockerhub_login = Some(found.credentials),
                }
            }
        }
        Ok(access)
    }
}

/// `127.0.0.1:5000=ghcr,registry.local=dockerhub`.
pub fn parse_overrides(value: &str) -> anyhow::Result<BTreeMap<String, Kind>> {
    let mut out = BTreeMap::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parsed = item
            .split_once('=')
            .and_then(|(host, kind)| Some((host.trim(), Kind::parse(kind.trim())?)));
        let Some((host, kind)) = parsed else {
            return Err(crate::exit::invalid(format!(
                "XTASK_PRUNE_BACKEND item {item:?} is not HOST=ghcr, HOST=dockerhub or HOST=oci"
            )));
        };
        out.insert(host.to_owned(), kind);
    }
    Ok(out)
}

/// Tags as a backend sees them, with the children of tagged indexes when its API tells them (Docker Hub).
#[derive(Clone, Debug, Default)]
pub struct TagView {
    pub tags: BTreeMap<String, String>,
    pub children: BTreeMap<String, Vec<String>>,
}

/// One way of listing and deleting manifests in a target.
pub trait Backend {
    fn label(&self) -> &'static str;
    /// Every tag and its digest, read fresh.
    fn tags(&mut self) -> anyhow::Result<TagView>;
    /// Every manifest, tagged or not, when the API can list them (GHCR); None when it cannot.
    fn all_manifests(&mut self) -> anyhow::Result<Option<BTreeSet<String>>>;
    fn delete(&mut self, digest: &str) -> anyhow::Result<Removal>;
}

/// What a prune did in one target, for the log, a `::warning::` per warning, and the step summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub target: String,
    pub backend: String,
    /// Deleted, in order (indexes before their children).
    pub deleted: Vec<String>,
    /// Would be deleted (listing only, `image prune` without `--yes`).
    pub would_delete: Vec<String>,
    /// Kept, with the reason.
    pub kept: Vec<(String, String)>,
    /// Deleted, then put back because a tag needed it again.
    pub restored: Vec<String>,
    /// Benign: nothing to prune, already gone (404).
    pub notes: Vec<String>,
    /// Something was not deleted or could not be checked: a refused delete, an API error.
    pub failures: Vec<String>,
}

impl PruneReport {
    fn new(target: &Reference) -> PruneReport {
        PruneReport {
            target: target.to_string(),
            ..PruneReport::default()
        }
    }

    /// Every line that deserves a `::warning::` annotation: failures and notes alike (the release still succeeds).
    pub fn warnings(&self) -> Vec<String> {
        self.failures
            .iter()
            .chain(self.notes.iter())
            .map(|w| format!("prune {}: {w}", self.target))
            .collect()
    }

    pub fn failed(&self) -> bool {
        !self.failures.is_empty()
    }

    /// Plain text for the terminal.
    pub fn text(&self, yes: bool) -> String {
        let mut out = format!("prune {}", self.target);
        if !self.backend.is_empty() {
            out.push_str(&format!(" (through the {})", self.backend));
        }
        out.push_str(":\n");
        for digest in &self.would_delete {
            out.push_str(&format!("  would delete {digest}\n"));
        }
        for digest in &self.deleted {
            out.push_str(&format!("  deleted {digest}\n"));
        }
        for digest in &self.restored {
            out.push_str(&format!("  put back {digest} (a tag needs it again)\n"));
        }
        if !self.kept.is_empty() {
            out.push_str(&format!(
                "  kept {} manifest(s) that tags use\n",
                self.kept.len()
            ));
        }
        if yes && self.deleted.is_empty() && self.failures.is_empty() {
            out.push_str("  nothing deleted\n");
        }
        for note in &self.notes {
            out.push_str(&format!("  note: {note}\n"));
        }
        for failure in &self.failures {
            out.push_str(&format!("  FAILED: {failure}\n"));
        }
        out
    }

    /// A Markdown section for GITHUB_STEP_SUMMARY.
    pub fn markdown(&self) -> String {
        let mut out = format!("### Prune `{}`\n\n", self.target);
        if !self.backend.is_empty() {
            out.push_str(&format!("Through the {}.\n\n", self.backend));
        }
        let list = |out: &mut String, title: &str, items: &[String]| {
            if !items.is_empty() {
                out.push_str(&format!("{title}:\n"));
                for item in items {
                    out.push_str(&format!("- `{item}`\n"));
                }
                out.push('\n');
            }
        };
        list(&mut out, "Deleted", &self.deleted);
        list(
            &mut out,
            "Would delete (run with --yes)",
            &self.would_delete,
        );
        list(&mut out, "Restored (a tag needed it again)", &self.restored);
        if !self.kept.is_empty() {
            out.push_str("Kept:\n");
            for (digest, why) in &self.kept {
                out.push_str(&format!("- `{digest}`: {why}\n"));
            }
            out.push('\n');
        }
        for failure in &self.failures {
            out.push_str(&format!("> ⚠️ {failure}\n"));
        }
        for note in &self.notes {
            out.push_str(&format!("> {note}\n"));
        }
        out
    }
}

/// The backend for one target.
fn backend<'a>(repo: &'a dyn Repository, access: &Access) -> anyhow::Result<Box<dyn Backend + 'a>> {
    let target = repo.target();
    Ok(match Kind::of(target, &access.overrides) {
        Kind::Ghcr => Box::new(ghcr::Ghcr::new(
            &access.github_api,
            access.github_token.clone(),
            target,
        )?),
        Kind::DockerHub => Box::new(dockerhub::DockerHub::new(
            &access.dockerhub_api,
            access.dockerhub_login.clone(),
            repo,
        )?),
        Kind::Oci => Box::new(oci::Oci { repo }),
    })
}

/// Reads manifests once each and keeps their bytes (to put back) and their children.
struct Reader<'a> {
    repo: &'a dyn Repository,
    saved: BTreeMap<String, Manifest>,
    children: BTreeMap<String, Vec<String>>,
    /// Digests whose content could not be read (404 or error), with why.
    unreadable: BTreeMap<String, String>,
    /// The manifests this run may delete: a tag an API says points to one of them is checked with the registry.
    watch: BTreeSet<String>,
}

impl<'a> Reader<'a> {
    fn new(repo: &'a dyn Repository) -> Reader<'a> {
        Reader {
            repo,
            saved: BTreeMap::new(),
            children: BTreeMap::new(),
            unreadable: BTreeMap::new(),
            watch: BTreeSet::new(),
        }
    }

    /// Reads a manifest; Ok(false) when the registry does not have it (404) or it is unreadable.
    fn load(&mut self, digest: &str) -> bool {
        if self.saved.contains_key(digest) {
            return true;
        }
        if self.unreadable.contains_key(digest) {
            return false;
        }
        let outcome = self
            .repo
            .manifest(digest)
            .and_then(|fetched| match fetched {
                None => Ok(None),
                Some(fetched) => {
                    anyhow::ensure!(
                        fetched.digest == digest,
                        "the registry returned {} when asked for {digest}",
                        fetched.digest
                    );
                    let children = fetched.children().map_err(anyhow::Error::msg)?;
                    let children = children.iter().map(ToString::to_string).collect();
                    Ok(Some((fetched, children)))
                }
            });
        match outcome {
            Ok(Some((fetched, children))) => {
                self.children.insert(digest.to_owned(), children);
                self.saved.insert(digest.to_owned(), fetched);
                true
            }
            Ok(None) => {
                self.unreadable
                    .insert(digest.to_owned(), "not found (404)".into());
                false
            }
            Err(err) => {
                self.unreadable
                    .insert(digest.to_owned(), format!("{err:#}"));
                false
            }
        }
    }

    /// Loads a manifest and, recursively, everything it lists; returns the digests that exist.
    fn load_tree(&mut self, digest: &str) -> Vec<String> {
        let mut found = Vec::new();
        let mut stack = vec![digest.to_owned()];
        let mut seen = BTreeSet::new();
        while let Some(next) = stack.pop() {
            if !seen.insert(next.clone()) || !self.load(&next) {
                continue;
            }
            found.push(next.clone());
            for child in self.children[&next].iter().rev() {
                stack.push(child.clone());
            }
        }
        found
    }

    /// GitHub's and Docker Hub's APIs may lag behind a tag that just moved: where one says a tag points to a
    /// manifest this run may delete, the registry (the source of truth, and a HEAD is no pull) has the last word.
    fn confirm(&mut self, view: &mut TagView) -> anyhow::Result<()> {
        let suspects: Vec<(String, String)> = view
            .tags
            .iter()
            .filter(|(_, digest)| self.watch.contains(*digest))
            .map(|(tag, digest)| (tag.clone(), digest.clone()))
            .collect();
        for (tag, digest) in suspects {
            match self.repo.resolve(&tag)? {
                Some(now) if now == digest.as_str() => {}
                Some(now) => {
                    view.children.remove(now.as_str());
                    view.tags.insert(tag, now.to_string());
                }
                None => {
                    view.tags.remove(&tag);
                }
            }
        }
        Ok(())
    }

    /// The tags read fresh from the backend, with the children of every tagged index (recursively).
    fn snapshot(&mut self, backend: &mut dyn Backend) -> anyhow::Result<Snapshot> {
        let mut view = backend.tags().context("reading the tags")?;
        self.confirm(&mut view)?;
        let mut snapshot = Snapshot {
            tags: view.tags,
            children: view.children,
            unreadable: BTreeSet::new(),
        };
        let mut stack: Vec<String> = snapshot.tags.values().cloned().collect();
        let mut seen = BTreeSet::new();
        while let Some(digest) = stack.pop() {
            if !seen.insert(digest.clone()) {
                continue;
            }
            if snapshot.children.contains_key(&digest) {
                // The API told this index's children; their own children matter only if they are indexes, which
                // a platform image never is.
                continue;
            }
            if self.load(&digest) {
                stack.extend(self.children[&digest].iter().cloned());
            } else if snapshot.tags.values().any(|d| d == &digest) {
                snapshot.unreadable.insert(digest);
            }
        }
        for (digest, children) in &self.children {
            snapshot
                .children
                .entry(digest.clone())
                .or_insert_with(|| children.clone());
        }
        Ok(snapshot)
    }
}

/// Deletes the index `old_index` that a tag (normally `latest`) pointed to before it moved to `new_index`, with
/// those of its platform children that no remaining tag still uses (directly, or listed by a tagged index).
///
/// Call it only after the new index is verified live in this registry. It never fails the caller: whatever goes
/// wrong is in the report's `failures` (print each of [`PruneReport::warnings`] as a `::warning::` annotation and
/// append [`PruneReport::markdown`] to the step summary). Nothing to prune (`old_index == new_index`, or already
/// gone) is a note, not a failure. Safe to run twice, and against a release racing this one.
pub fn remove_superseded(
    repo: &dyn Repository,
    access: &Access,
    old_index: &Digest,
    new_index: &Digest,
) -> PruneReport {
    let mut report = PruneReport::new(repo.target());
    if old_index == new_index {
        report.notes.push(format!(
            "nothing to prune: the tag already pointed to {new_index}"
        ));
        return report;
    }
    let (old_index, new_index) = (old_index.as_str(), new_index.as_str());
    if let Err(err) = superseded(repo, access, old_index, new_index, &mut report) {
        report.failures.push(format!("{err:#}"));
    }
    report
}

fn superseded(
    repo: &dyn Repository,
    access: &Access,
    old: &str,
    new: &str,
    report: &mut PruneReport,
) -> anyhow::Result<()> {
    let target = repo.target();
    let mut backend = backend(repo, access)?;
    report.backend = backend.label().to_owned();
    let mut reader = Reader::new(repo);
    // Read (and keep) the old index and its children before anything changes, so they can be put back.
    reader.watch = reader.load_tree(old).into_iter().collect();
    // The new index's children are protected whatever the tag list says (it may not show the new tag yet).
    reader.load(new);
    if reader.watch.is_empty() {
        let why = reader.unreadable.get(old).cloned().unwrap_or_default();
        report.notes.push(format!(
            "nothing to prune: the previous index {old} cannot be read ({why})"
        ));
        return Ok(());
    }
    let snapshot = reader.snapshot(backend.as_mut())?;
    let plan = plan::superseded(&snapshot, old, new);
    let planned: Vec<String> = plan.delete.iter().map(|d| d.digest.clone()).collect();
    let result = execute(
        &mut reader,
        backend.as_mut(),
        plan,
        Some(new),
        report,
        |reader, backend| {
            let snapshot = reader.snapshot(backend)?;
            Ok(plan::superseded(&snapshot, old, new))
        },
    );
    let left: Vec<&String> = planned
        .iter()
        .filter(|d| !report.deleted.contains(d))
        .collect();
    if (result.is_err() || report.failed()) && !left.is_empty() {
        let digests: String = left.iter().map(|d| format!(" --digest {d}")).collect();
        report.notes.push(format!(
            "once fixed, finish with: cargo xtask image prune --to {target}{digests} --yes"
        ));
    }
    result
}

/// Deletes a plan's roots, re-plans with fresh tags, deletes the children still unneeded, then puts back anything
/// a tag needs again.
fn execute(
    reader: &mut Reader<'_>,
    backend: &mut dyn Backend,
    plan: plan::Plan,
    new: Option<&str>,
    report: &mut PruneReport,
    replan: impl Fn(&mut Reader<'_>, &mut dyn Backend) -> anyhow::Result<plan::Plan>,
) -> anyhow::Result<()> {
    for (digest, why) in &plan.keep {
        report.kept.push((digest.clone(), why.to_string()));
    }
    if plan.delete.is_empty() {
        report.notes.push("nothing to prune".to_owned());
        return Ok(());
    }
    let mut deleted: Vec<String> = Vec::new();
    let mut blocked: BTreeSet<String> = BTreeSet::new();
    let remove = |digest: &str,
                  backend: &mut dyn Backend,
                  report: &mut PruneReport,
                  deleted: &mut Vec<String>|
     -> bool {
        match backend.delete(digest) {
            Ok(Removal::Deleted) => {
                report.deleted.push(digest.to_owned());
                deleted.push(digest.to_owned());
                true
            }
            Ok(Removal::Gone) => {
                report
                    .notes
                    .push(format!("{digest} was already deleted (404)"));
                true
            }
            Ok(Removal::Refused { status, message }) => {
                report
                    .failures
                    .push(format!("{digest} not deleted ({status}): {message}"));
                false
            }
            Err(err) => {
                report
                    .failures
                    .push(format!("{digest} not deleted: {err:#}"));
                false
            }
        }
    };
    // Roots first: an index goes before its children.
    for doomed in plan.delete.iter().filter(|d| d.parent.is_none()) {
        // A racing release may have tagged it since the plan (a version release of the very same list): a DELETE
        // would take that tag with it (distribution and GHCR delete a manifest's tags with it), so look again.
        // What an API says a tag names is checked with the registry, as for the plan (Docker Hub's API lags).
        let view = backend.tags().and_then(|mut view| {
            reader.confirm(&mut view)?;
            Ok(view)
        });
        match view {
            Ok(view) => {
                if let Some((tag, _)) = view.tags.iter().find(|(_, d)| **d == doomed.digest) {
                    report.kept.push((
                        doomed.digest.clone(),
                        format!("tag {tag} names it now (tagged while this prune ran)"),
                    ));
                    blocked.insert(doomed.digest.clone());
                    continue;
                }
            }
            Err(err) => {
                report.failures.push(format!(
                    "{} not deleted: the tags could not be read just before ({err:#})",
                    doomed.digest
                ));
                blocked.insert(doomed.digest.clone());
                continue;
            }
        }
        if !remove(&doomed.digest, backend, report, &mut deleted) {
            blocked.insert(doomed.digest.clone());
        }
    }
    let children: Vec<&plan::Doomed> = plan.delete.iter().filter(|d| d.parent.is_some()).collect();
    if !children.is_empty() {
        // Tags may have moved while the roots went: decide about the children again with fresh tags.
        let fresh = replan(reader, backend)?;
        let still: BTreeSet<&str> = fresh.delete.iter().map(|d| d.digest.as_str()).collect();
        for doomed in children {
            let parent = doomed.parent.as_deref().unwrap_or_default();
            if blocked.contains(parent) {
                blocked.insert(doomed.digest.clone());
                report.kept.push((
                    doomed.digest.clone(),
                    format!("its index {parent} could not be deleted"),
                ));
            } else if !still.contains(doomed.digest.as_str()) {
                let why = fresh
                    .keep
                    .iter()
                    .find(|(d, _)| d == &doomed.digest)
                    .map_or("a tag needs it now".to_owned(), |(_, why)| why.to_string());
                report.kept.push((doomed.digest.clone(), why));
            } else if !remove(&doomed.digest, backend, report, &mut deleted) {
                blocked.insert(doomed.digest.clone());
            }
        }
    }
    // A racing release may have started using what just went: put it back.
    if !deleted.is_empty() {
        let snapshot = reader.snapshot(backend)?;
        for digest in plan::to_restore(&snapshot, &deleted, new) {
            let manifest = reader.saved[&digest].clone();
            match reader
                .repo
                .put_manifest(manifest.digest.as_str(), &manifest)
            {
                Ok(()) => report.restored.push(digest),
                Err(err) => report.failures.push(format!(
                    "{digest} is needed by a tag again but could not be put back: {err:#}"
                )),
            }
        }
    }
    Ok(())
}

/// Removes untagged manifests no tagged index lists: every one the backend can list (GHCR), plus `extra` digests
/// (and what they list). Without `yes`, only fills `would_delete`.
pub fn remove_untagged(
    repo: &dyn Repository,
    access: &Access,
    extra: &[String],
    yes: bool,
) -> PruneReport {
    let mut report = PruneReport::new(repo.target());
    if let Err(err) = untagged(repo, access, extra, yes, &mut report) {
        report.failures.push(format!("{err:#}"));
    }
    report
}

fn untagged(
    repo: &dyn Repository,
    access: &Access,
    extra: &[String],
    yes: bool,
    report: &mut PruneReport,
) -> anyhow::Result<()> {
    for digest in extra {
        anyhow::ensure!(
            Digest::is_valid(digest),
            "{digest:?} is not a sha256 digest"
        );
    }
    let target = repo.target();
    let mut backend = backend(repo, access)?;
    report.backend = backend.label().to_owned();
    let mut reader = Reader::new(repo);
    let listed = backend.all_manifests()?;
    if listed.is_none() && extra.is_empty() {
        report.notes.push(format!(
            "the {} cannot list untagged manifests, so only ones named with --digest can be pruned here",
            backend.label()
        ));
    }
    let mut known = BTreeSet::new();
    for digest in listed.iter().flatten().chain(extra) {
        known.extend(reader.load_tree(digest));
    }
    reader.watch = known.clone();
    for digest in extra {
        if !known.contains(digest) {
            report
                .notes
                .push(format!("{digest} is not in {target} (already gone?)"));
        }
    }
    let snapshot = reader.snapshot(backend.as_mut())?;
    let plan = plan::untagged(&snapshot, &known);
    if !yes {
        report.would_delete = plan.delete.iter().map(|d| d.digest.clone()).collect();
        report.kept = plan
            .keep
            .iter()
            .map(|(d, why)| (d.clone(), why.to_string()))
            .collect();
        return Ok(());
    }
    execute(
        &mut reader,
        backend.as_mut(),
        plan,
        None,
        report,
        |reader, backend| {
            let snapshot = reader.snapshot(backend)?;
            Ok(plan::untagged(&snapshot, &known))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn backend_by_host_and_override() {
        let overrides = parse_overrides("127.0.0.1:5000=ghcr, 127.0.0.1:5001=dockerhub").unwrap();
        let cases = [
            ("ghcr.io/o/app", Kind::Ghcr),
            ("docker.io/u/app", Kind::DockerHub),
            ("quay.io/o/app", Kind::Oci),
            ("127.0.0.1:5000/o/app", Kind::Ghcr),
            ("127.0.0.1:5001/o/app", Kind::DockerHub),
            ("127.0.0.1:5002/o/app", Kind::Oci),
        ];
        for (t, want) in cases {
            assert_eq!(Kind::of(&target(t), &overrides), want, "{t}");
        }
        assert!(parse_overrides("host=nope").is_err());
        assert!(parse_overrides("justahost").is_err());
        assert!(parse_overrides("").unwrap().is_empty());
    }

    #[test]
    fn same_digest_is_a_note_not_a_failure() {
        let memory = crate::registry::memory::Memory::default();
        let d = Digest::of(b"x");
        let report = remove_superseded(
            &memory.repository("quay.io/o/a"),
            &Access::default(),
            &d,
            &d,
        );
        assert!(!report.failed() && report.deleted.is_empty());
        assert_eq!(report.warnings().len(), 1, "{report:?}");
        assert!(
            memory.calls().is_empty(),
            "no registry call: {:?}",
            memory.calls()
        );
    }

    #[test]
    fn access_debug_hides_secrets() {
        let access = Access {
            github_token: Some("ghp_secret".into()),
            dockerhub_login: Some(Credentials::new("alice-hub", "dckr_secret")),
            ..Access::default()
        };
        let shown = format!("{access:?}");
        assert!(
            !shown.contains("ghp_") && !shown.contains("dckr_") && !shown.contains("alice"),
            "{shown}"
        );
    }
}
