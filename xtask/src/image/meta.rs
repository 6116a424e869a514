//! `cargo xtask image meta`: turns the GitHub event (or the same facts given as flags) into the publishing plan:
//! which tag, which version, whether it is a release, whether to push and prune, which platforms on which runners.
//!
//! Every check that can fail a publication without building anything happens here, in the workflow's first job:
//! the tag's semantic version, a manual tag's name, the platforms, and the presence of the credentials. The core,
//! [`plan`], is a pure function of [`Facts`] and [`Settings`]; `run` only reads the environment and writes outputs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::config::{ImageConfig, VersionTag};
use crate::exit;
use crate::flags;
use crate::github;
use crate::oci::Platform;
use crate::registry::credentials::{self, required_env};
use crate::registry::reference::allows_plain_http;
use crate::registry::Reference;
use crate::session::Session;

/// What happened: the event and its inputs, from the GitHub environment or from flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// `push` or `workflow_dispatch`.
    pub event: String,
    /// `refs/heads/main`, `refs/tags/v1.2.3`.
    pub git_ref: String,
    /// The commit being built.
    pub sha: String,
    /// A manual run's tag name; `None` for the default `manual-<sha7>`.
    pub tag_name: Option<String>,
    pub skip_push: bool,
    /// Comma-separated platforms requested for this run; `None` for the configured ones.
    pub platforms: Option<String>,
    /// Target repositories requested for this run; empty for the configured ones.
    pub targets: Vec<String>,
    /// The `revision` label: the commit the image's inputs come from (the newest that changed them, so a docs-only
    /// commit gives the same image as its parent); `None` for `sha`.
    pub revision: Option<String>,
    /// The image's time, seconds since the epoch: the `created` label, and the exported config's `created`.
    /// `$SOURCE_DATE_EPOCH`, else the time of the `revision` commit (so a rebuild labels the same); `None` leaves
    /// the label out.
    pub created: Option<u64>,
}

/// One build job: a platform and the runner that builds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub platform: Platform,
    pub runner: String,
}

/// What to publish, decided once, before anything is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The tag the manifest stage moves: `latest`, `1.2.3` or a manual run's name.
    pub tag: String,
    /// A release's `X.Y` and `X` tags (`version-tags`), moved with the tag where that is forward.
    pub floating_tags: Vec<String>,
    /// `1.2.3` for a release; otherwise the same as the tag.
    pub version: String,
    /// A `vX.Y.Z` tag push: publishes `X.Y.Z` and never touches `latest`.
    pub is_release: bool,
    pub push: bool,
    /// Delete the index that the moved tag used to point to (only for `latest` from main).
    pub prune_previous: bool,
    pub targets: Vec<String>,
    pub jobs: Vec<Job>,
    /// OCI annotations for the image config (`org.opencontainers.image.*`).
    pub labels: BTreeMap<String, String>,
    /// Things worth a look that do not stop the run.
    pub warnings: Vec<String>,
}

const MAIN: &str = "refs/heads/main";
const TAGS: &str = "refs/tags/";

/// The runner per platform when `[package.metadata.image.runners]` does not name one.
pub fn default_runner(platform: Platform) -> &'static str {
    if platform == Platform::LINUX_ARM64 {
        "ubuntu-24.04-arm"
    } else {
        "ubuntu-24.04"
    }
}

/// What a run publishes, read from the event (CI) or given directly (`image release`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Publication {
    /// `latest`, from main; the index it superseded is pruned.
    Latest,
    /// `X.Y.Z`, from the git tag `vX.Y.Z`; `latest` is left alone.
    Release(semver::Version),
    /// A manual run's tag (`manual-<sha7>` by default).
    Manual(String),
}

/// Reads what to publish from the event and ref: a push to main, a push of a `vX.Y.Z` tag, or a manual run.
pub fn publication(facts: &Facts) -> anyhow::Result<Publication> {
    let sha = check_sha(&facts.sha)?;
    match facts.event.as_str() {
        "push" => {
            if let Some(name) = &facts.tag_name {
                return Err(exit::invalid(format!(
                    "a tag name ({name:?}) is only for manual runs (workflow_dispatch); a push publishes `latest` \
                     from main or X.Y.Z from a vX.Y.Z tag"
                )));
            }
            if facts.git_ref == MAIN {
                Ok(Publication::Latest)
            } else if let Some(tag) = facts.git_ref.strip_prefix(TAGS) {
                Ok(Publication::Release(release_version(tag)?))
            } else if facts.git_ref.is_empty() {
                Err(exit::invalid(
                    "no git ref: pass --ref refs/heads/main or --ref refs/tags/vX.Y.Z, or run inside GitHub \
                     Actions (GITHUB_REF)",
                ))
            } else {
                Err(exit::invalid(format!(
                    "a push of {:?} publishes nothing: only refs/heads/main (as `latest`) and tags vX.Y.Z (as X.Y.Z) \
                     are published; for anything else start the workflow by hand (workflow_dispatch)",
                    facts.git_ref
                )))
            }
        }
        "workflow_dispatch" => match &facts.tag_name {
            Some(name) => {
                check_manual_tag(name)?;
                Ok(Publication::Manual(name.clone()))
            }
            None => Ok(Publication::Manual(format!("manual-{}", &sha[..7]))),
        },
        "" => Err(exit::invalid(
            "no event: pass --event push or --event workflow_dispatch, or run inside GitHub Actions \
             (GITHUB_EVENT_NAME)",
        )),
        other => Err(exit::invalid(format!(
            "the event {other:?} publishes nothing: images are published on a push to main, a push of a tag \
             vX.Y.Z, or a manual run (workflow_dispatch)"
        ))),
    }
}

/// Decides the plan. `has_credentials(target)` tells whether a login for the target's registry exists (in the
/// environment or an auth file); only its presence is asked, so no secret value comes near this function.
pub fn plan(
    facts: &Facts,
    config: &ImageConfig,
    has_credentials: &dyn Fn(&Reference) -> anyhow::Result<bool>,
) -> anyhow::Result<Plan> {
    plan_for(publication(facts)?, facts, config, has_credentials)
}

/// The plan for a publication already decided; `facts` gives the commit, platforms and targets.
pub fn plan_for(
    publication: Publication,
    facts: &Facts,
    config: &ImageConfig,
    has_credentials: &dyn Fn(&Reference) -> anyhow::Result<bool>,
) -> anyhow::Result<Plan> {
    let sha = check_sha(&facts.sha)?;
    let mut warnings = Vec::new();
    let mut floating_tags = Vec::new();
    let (tag, version, is_release, from_main) = match publication {
        Publication::Latest => ("latest".to_owned(), "latest".to_owned(), false, true),
        Publication::Release(version) => {
            if semver::Version::parse(&config.version).ok().as_ref() != Some(&version) {
                warnings.push(format!(
                    "Tag 'v{version}' publishes {version} but Cargo.toml's version is {}; bump the version in \
                     Cargo.toml before tagging so the binary reports the same version",
                    config.version
                ));
            }
            floating_tags = config
                .version_tags
                .iter()
                .filter(|pattern| **pattern != VersionTag::Patch)
                .map(|pattern| pattern.render(&version))
                .collect();
            (version.to_string(), version.to_string(), true, false)
        }
        Publication::Manual(tag) => (tag.clone(), tag, false, false),
    };

    let platforms = match &facts.platforms {
        Some(list) => Platform::parse_list(list)?,
        None => config.platforms.clone(),
    };
    if platforms.is_empty() {
        return Err(exit::invalid(
            "no platform to build: set platforms in [package.metadata.image] or pass --platforms linux/amd64,linux/arm64",
        ));
    }
    let jobs = platforms
        .iter()
        .map(|&platform| Job {
            platform,
            runner: config
                .runners
                .get(&platform)
                .cloned()
                .unwrap_or_else(|| default_runner(platform).to_owned()),
        })
        .collect();

    let targets = if facts.targets.is_empty() {
        &config.targets
    } else {
        &facts.targets
    };
    let targets = targets
        .iter()
        .map(|t| Reference::parse(t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let push = !facts.skip_push;
    if push {
        if targets.is_empty() {
            return Err(exit::invalid(
                "nothing to push to: set targets in [package.metadata.image], pass --to REPOSITORY, or skip the \
                 push (--skip-push)",
            ));
        }
        check_credentials(&targets, has_credentials)?;
    }

    let revision = facts.revision.as_deref().unwrap_or(sha);
    let labels = labels(config, &version, Some(revision), facts.created);

    Ok(Plan {
        prune_previous: from_main && push,
        floating_tags,
        tag,
        version,
        is_release,
        push,
        targets: targets.iter().map(ToString::to_string).collect(),
        jobs,
        labels,
        warnings,
    })
}

/// The image's OCI labels (`org.opencontainers.image.*`), decided here once: `image build` puts exactly these on
/// the image. Empty values are left out.
pub fn labels(
    config: &ImageConfig,
    version: &str,
    revision: Option<&str>,
    created: Option<u64>,
) -> BTreeMap<String, String> {
    let created = created.map(rfc3339);
    let values = [
        ("title", Some(config.name.as_str())),
        ("description", config.description.as_deref()),
        ("licenses", config.license.as_deref()),
        ("source", config.repository.as_deref()),
        ("revision", revision),
        ("version", Some(version)),
        ("created", created.as_deref()),
    ];
    values
        .into_iter()
        .filter_map(|(key, value)| {
            let value = value.filter(|v| !v.is_empty())?;
            Some((format!("org.opencontainers.image.{key}"), value.to_owned()))
        })
        .collect()
}

/// RFC 3339 UTC time of a Unix timestamp (`2023-11-14T22:13:20Z`).
pub fn rfc3339(epoch: u64) -> String {
    let (days, secs) = (epoch / 86_400, epoch % 86_400);
    // Days to civil date (Howard Hinnant's algorithm), for dates from 1970 on.
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The Unix timestamp of an RFC 3339 UTC time as [`rfc3339`] writes it (`2023-11-14T22:13:20Z`, from 1970 on);
/// `None` for any other form.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let shape = b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    if !shape {
        return None;
    }
    let number = |range: std::ops::Range<usize>| text[range].parse::<u64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if year < 1970 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Civil date to days (Howard Hinnant's algorithm), the inverse of the one in `rfc3339`.
    let y = year - u64::from(month <= 2);
    let (era, yoe) = (y / 400, y % 400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let epoch = days * 86_400 + hour * 3600 + minute * 60 + second;
    // A day that does not exist in its month (2023-02-30) comes back as another date.
    (rfc3339(epoch) == text).then_some(epoch)
}

/// `v1.2.3` -> `1.2.3`; anything but `v` and exactly three numeric parts without leading zeros is refused.
pub fn release_version(tag: &str) -> anyhow::Result<semver::Version> {
    match version_of_tag(tag) {
        Some(version) => Ok(version),
        None => Err(exit::invalid(format!(
            "Tag '{tag}' does not follow semantic versioning (expected: v1.2.3)\n\
             A release tag is `v` and three numbers without leading zeros, nothing more. To fix it, delete the tag \
             (git push origin :refs/tags/{tag}) and push a correct one (git tag v1.2.3 && git push origin v1.2.3); \
             for a test image, run the workflow by hand with a tag_name instead"
        ))),
    }
}

/// The one release-version rule: `v1.2.3` -> 1.2.3 (semver, which refuses leading zeros and missing parts);
/// `None` for anything else, a pre-release or build suffix included.
pub fn version_of_tag(tag: &str) -> Option<semver::Version> {
    let version = semver::Version::parse(tag.strip_prefix('v')?).ok()?;
    (version.pre.is_empty() && version.build.is_empty()).then_some(version)
}

/// A manual run's tag: a legal OCI tag that cannot be mistaken for `latest` or a release.
pub fn check_manual_tag(name: &str) -> anyhow::Result<()> {
    let legal = name.len() <= 128
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !legal {
        return Err(exit::invalid(format!(
            "Tag name {name:?} is not a valid image tag: use 1 to 128 letters, digits, '_', '.' or '-', not starting \
             with '.' or '-' (for example test-login-fix)"
        )));
    }
    if name.eq_ignore_ascii_case("latest") {
        return Err(exit::invalid(
            "Tag name 'latest' is reserved for pushes to main; pick another name, or leave tag_name empty for \
             manual-<sha7>",
        ));
    }
    if looks_like_version(name) {
        return Err(exit::invalid(format!(
            "Tag name '{name}' looks like a version; versions are published only by pushing a git tag vX.Y.Z. Use \
             a name that is not a version (for example test-{name}), or leave tag_name empty for manual-<sha7>"
        )));
    }
    Ok(())
}

/// `1.2`, `v1.2.3`, `1.2.3-rc.1`, `v2`: a name a reader would take for a release.
fn looks_like_version(name: &str) -> bool {
    let (had_v, rest) = match name.strip_prefix(['v', 'V']) {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    let major_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    if major_len == 0 {
        return false;
    }
    let after = &rest[major_len..];
    (had_v && after.is_empty())
        || after
            .strip_prefix('.')
            .is_some_and(|minor| minor.starts_with(|c: char| c.is_ascii_digit()))
}

/// A commit SHA: 7 to 64 hex digits (SHA-1 or SHA-256 repositories).
fn check_sha(sha: &str) -> anyhow::Result<&str> {
    if (7..=64).contains(&sha.len()) && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(sha)
    } else if sha.is_empty() {
        Err(exit::invalid(
            "no commit SHA: pass --sha, run inside GitHub Actions (GITHUB_SHA), or run from a git checkout",
        ))
    } else {
        Err(exit::invalid(format!(
            "commit SHA {sha:?} is not 7 to 64 hex digits"
        )))
    }
}

/// Every target's registry must have a login before anything is built, except loopback registries (a local test
/// registry, usually anonymous). The message names the environment variables, never a value.
fn check_credentials(
    targets: &[Reference],
    has_credentials: &dyn Fn(&Reference) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    let mut seen = Vec::new();
    for target in targets {
        let registry = target.registry.as_str();
        if allows_plain_http(&target.api_host, registry, &[]) || seen.contains(&registry) {
            continue;
        }
        seen.push(registry);
        if !has_credentials(target)? {
            missing.push(format!(
                "  {registry} (for {target}): {}",
                required_env(registry)
            ));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(exit::invalid(format!(
        "Missing credentials for pushing; set these environment variables (in GitHub: repository secrets passed \
         to the step's env), or log in with `podman login`:\n{}\nor build without pushing (--skip-push, or skip_push \
         in a manual run)",
        missing.join("\n")
    )))
}

impl Plan {
    /// `linux/amd64,linux/arm64`, the form the other stages' `--platforms` take.
    pub fn platform_list(&self) -> String {
        let names: Vec<String> = self.jobs.iter().map(|j| j.platform.to_string()).collect();
        names.join(",")
    }

    /// The build matrix: `[{"platform":"linux/amd64","runner":"ubuntu-24.04","slug":"linux-amd64"}, …]`.
    pub fn matrix(&self) -> Value {
        self.jobs
            .iter()
            .map(|job| {
                json!({
                    "platform": job.platform.to_string(),
                    "runner": job.runner,
                    "slug": job.platform.dir_name(),
                })
            })
            .collect()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "tag": self.tag,
            "tags": self.tags(),
            "floating_tags": self.floating_tags,
            "version": self.version,
            "is_release": self.is_release,
            "push": self.push,
            "prune_previous": self.prune_previous,
            "targets": self.targets,
            "platforms": self.jobs.iter().map(|j| j.platform.to_string()).collect::<Vec<_>>(),
            "matrix": self.matrix(),
            "labels": self.labels,
            "warnings": self.warnings,
        })
    }

    /// Every tag the run may move: the tag, then the floating ones.
    pub fn tags(&self) -> Vec<String> {
        std::iter::once(self.tag.clone())
            .chain(self.floating_tags.iter().cloned())
            .collect()
    }

    /// The step outputs the workflow's later jobs read.
    pub fn outputs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("tag", self.tag.clone()),
            ("tags", self.tags().join(",")),
            ("floating_tags", self.floating_tags.join(",")),
            ("version", self.version.clone()),
            ("is_release", self.is_release.to_string()),
            ("skip_push", (!self.push).to_string()),
            ("prune_previous", self.prune_previous.to_string()),
            ("platforms", self.matrix().to_string()),
            ("platform_list", self.platform_list()),
            ("targets", self.targets.join(",")),
            (
                "labels",
                serde_json::to_string(&self.labels).expect("labels serialize"),
            ),
        ]
    }

    /// The readable form for a terminal.
    pub fn summary(&self, facts: &Facts) -> String {
        let mut out = String::new();
        let what = if facts.event == "push" {
            format!("push of {}", facts.git_ref)
        } else {
            format!("{} at {}", facts.event, facts.git_ref)
        };
        let _ = writeln!(out, "Plan for {what} ({})", short(&facts.sha));
        let _ = writeln!(out, "  tag:        {}", self.tag);
        if !self.floating_tags.is_empty() {
            let _ = writeln!(
                out,
                "  floating:   {} (each moves only forward)",
                self.floating_tags.join(", ")
            );
        }
        let _ = writeln!(out, "  version:    {}", self.version);
        if let Some(revision) = self.labels.get("org.opencontainers.image.revision") {
            // A docs-only HEAD shows its parent here: the image is the one that commit made.
            let created = self
                .labels
                .get("org.opencontainers.image.created")
                .map_or(String::new(), |c| format!(", time {c}"));
            let _ = writeln!(out, "  image of:   {}{created}", short(revision));
        }
        let _ = writeln!(
            out,
            "  release:    {}",
            if self.is_release {
                "yes (latest is not touched)"
            } else {
                "no"
            }
        );
        if self.push {
            let _ = writeln!(out, "  push to:    {}", self.targets.join(", "));
        } else {
            let _ = writeln!(out, "  push:       no (build and export only)");
        }
        let _ = writeln!(
            out,
            "  prune:      {}",
            if self.prune_previous {
                "the index the previous `latest` pointed to"
            } else {
                "nothing"
            }
        );
        for job in &self.jobs {
            let _ = writeln!(out, "  build:      {} on {}", job.platform, job.runner);
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "  warning:    {warning}");
        }
        out
    }

    /// The job summary on the run's page (Markdown).
    pub fn markdown(&self, facts: &Facts) -> String {
        let cell = github::table_cell;
        let mut out = String::from("### Image publishing plan\n\n| | |\n|---|---|\n");
        let mut row = |key: &str, value: &str| {
            let _ = writeln!(out, "| {key} | {} |", cell(value));
        };
        row(
            "event",
            &format!("{} {} ({})", facts.event, facts.git_ref, short(&facts.sha)),
        );
        row("tag", &self.tag);
        if !self.floating_tags.is_empty() {
            row("floating tags", &self.floating_tags.join(", "));
        }
        row("version", &self.version);
        row("release", &self.is_release.to_string());
        row(
            "push to",
            &if self.push {
                self.targets.join(", ")
            } else {
                "nothing (skip_push)".to_owned()
            },
        );
        row("prune previous", &self.prune_previous.to_string());
        let builds: Vec<String> = self
            .jobs
            .iter()
            .map(|j| format!("{} on {}", j.platform, j.runner))
            .collect();
        row("platforms", &builds.join(", "));
        out
    }
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

impl flags::Meta {
    pub fn run(self, session: &mut Session) -> anyhow::Result<()> {
        let gh = &session.github;
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let skip_push = self.skip_push
            || match env("INPUT_SKIP_PUSH").as_deref() {
                None | Some("false") => false,
                Some("true") => true,
                Some(other) => {
                    return Err(exit::invalid(format!(
                        "INPUT_SKIP_PUSH is {other:?}; use true or false"
                    )))
                }
            };
        let git = session.git()?;
        let sha = match self.sha.or_else(|| env("GITHUB_SHA")) {
            Some(sha) => sha,
            None => git.head.clone().unwrap_or_default(),
        };
        // The image's commit is known for the checkout only; a --sha of another commit is its own revision.
        let revision = match Some(&sha) == git.head.as_ref() {
            true => session.revision()?,
            false => None,
        };
        let created = session.created()?;
        let facts = Facts {
            event: self
                .event
                .or_else(|| env("GITHUB_EVENT_NAME"))
                .unwrap_or_default(),
            git_ref: self
                .git_ref
                .or_else(|| env("GITHUB_REF"))
                .unwrap_or_default(),
            sha,
            tag_name: self
                .tag_name
                .or_else(|| env("INPUT_TAG_NAME"))
                .filter(|t| !t.is_empty()),
            skip_push,
            // GitHub passes "" for an unset input, which means the configured platforms; an explicitly empty
            // --platforms flag is kept, so Platform::parse_list refuses it.
            platforms: self
                .platforms
                .or_else(|| env("INPUT_PLATFORMS").filter(|p| !p.trim().is_empty())),
            targets: self.to,
            revision,
            created,
        };
        let config = session.config()?;
        let creds = session.registries.env();
        let has_credentials = |target: &Reference| {
            credentials::source_of(&target.registry, &target.repository, creds)
                .map(|source| source.is_some())
        };
        let plan = match plan(&facts, config, &has_credentials) {
            Ok(plan) => plan,
            Err(err) => {
                if gh.actions {
                    gh.error("image meta", &format!("{err:#}"));
                }
                return Err(err);
            }
        };
        for warning in &plan.warnings {
            gh.warning("image meta", warning);
        }
        gh.set_outputs(&plan.outputs())?;
        gh.append_summary(&plan.markdown(&facts))?;
        if self.json {
            println!("{:#}", plan.to_json());
        } else {
            print!("{}", plan.summary(&facts));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
    const GHCR: &str = "ghcr.io/o/app";
    const HUB: &str = "docker.io/o/app";

    fn settings() -> ImageConfig {
        ImageConfig {
            name: "app".into(),
            containerfile: "Containerfile".into(),
            platforms: Platform::ALL.to_vec(),
            targets: vec![GHCR.into(), HUB.into()],
            build_args: BTreeMap::new(),
            cache_repo: None,
            version_tags: vec![VersionTag::Patch],
            runners: BTreeMap::new(),
            version: "1.2.3".into(),
            description: Some("d".into()),
            license: Some("MIT".into()),
            repository: Some("https://github.com/o/app".into()),
        }
    }

    fn facts(event: &str, git_ref: &str) -> Facts {
        Facts {
            event: event.into(),
            git_ref: git_ref.into(),
            sha: SHA.into(),
            ..Facts::default()
        }
    }

    const ALL_CREDS: &[&str] = &[
        "GITHUB_ACTOR",
        "GITHUB_TOKEN",
        "DOCKERHUB_USERNAME",
        "DOCKERHUB_TOKEN",
    ];

    /// The expected outcome of one case: the plan's key fields, or the exit code and a part of the message.
    #[derive(Debug)]
    enum Want {
        /// tag, version, is_release, push, prune_previous, platforms
        Plan(&'static str, &'static str, bool, bool, bool, &'static str),
        Refused(i32, &'static str),
    }
    use Want::{Plan as P, Refused as R};

    fn case(
        event: &str,
        git_ref: &str,
        tweak: impl FnOnce(&mut Facts),
    ) -> (Facts, &'static [&'static str]) {
        let mut f = facts(event, git_ref);
        tweak(&mut f);
        (f, ALL_CREDS)
    }

    #[test]
    fn table() {
        let both = "linux/amd64,linux/arm64";
        let none = |_: &mut Facts| {};
        let cases: Vec<((Facts, &[&str]), Want)> = vec![
            // Push to main: latest, prune the previous one.
            (case("push", "refs/heads/main", none), P("latest", "latest", false, true, true, both)),
            (
                case("push", "refs/heads/main", |f| f.skip_push = true),
                P("latest", "latest", false, false, false, both),
            ),
            (
                case("push", "refs/heads/main", |f| f.platforms = Some("linux/arm64".into())),
                P("latest", "latest", false, true, true, "linux/arm64"),
            ),
            // Release tags.
            (case("push", "refs/tags/v1.2.3", none), P("1.2.3", "1.2.3", true, true, false, both)),
            (case("push", "refs/tags/v0.0.0", none), P("0.0.0", "0.0.0", true, true, false, both)),
            (case("push", "refs/tags/v10.20.300", none), P("10.20.300", "10.20.300", true, true, false, both)),
            (
                case("push", "refs/tags/v1.2.3", |f| f.skip_push = true),
                P("1.2.3", "1.2.3", true, false, false, both),
            ),
            (case("push", "refs/tags/v1.0", none), R(2, "Tag 'v1.0' does not follow semantic versioning (expected: v1.2.3)")),
            (case("push", "refs/tags/1.2.3", none), R(2, "Tag '1.2.3' does not follow semantic versioning")),
            (case("push", "refs/tags/v1.2.3-beta", none), R(2, "Tag 'v1.2.3-beta' does not follow")),
            (case("push", "refs/tags/v1.2.3-rc.1", none), R(2, "Tag 'v1.2.3-rc.1' does not follow")),
            (case("push", "refs/tags/v1.2.3+build.5", none), R(2, "Tag 'v1.2.3+build.5' does not follow")),
            (case("push", "refs/tags/v1.2", none), R(2, "Tag 'v1.2' does not follow")),
            (case("push", "refs/tags/v1.2.3.4", none), R(2, "Tag 'v1.2.3.4' does not follow")),
            (case("push", "refs/tags/v01.2.3", none), R(2, "Tag 'v01.2.3' does not follow")),
            (case("push", "refs/tags/v1.02.3", none), R(2, "Tag 'v1.02.3' does not follow")),
            (case("push", "refs/tags/ v1.2.3", none), R(2, "Tag ' v1.2.3' does not follow")),
            (case("push", "refs/tags/v1.2.3 ", none), R(2, "Tag 'v1.2.3 ' does not follow")),
            (case("push", "refs/tags/V1.2.3", none), R(2, "Tag 'V1.2.3' does not follow")),
            (case("push", "refs/tags/v1..3", none), R(2, "Tag 'v1..3' does not follow")),
            (case("push", "refs/tags/v", none), R(2, "Tag 'v' does not follow")),
            (case("push", "refs/tags/v1.2.3+build", none), R(2, "does not follow semantic versioning")),
            (case("push", "refs/tags/v1.0", none), R(2, "git tag v1.2.3 && git push origin v1.2.3")),
            // Other pushes and events are refused.
            (case("push", "refs/heads/feature", none), R(2, "\"refs/heads/feature\" publishes nothing")),
            (case("push", "refs/heads/mainline", none), R(2, "publishes nothing")),
            (case("push", "main", none), R(2, "publishes nothing")),
            (case("push", "", none), R(2, "no git ref")),
            (case("pull_request", "refs/pull/1/merge", none), R(2, "the event \"pull_request\" publishes nothing")),
            (case("schedule", "refs/heads/main", none), R(2, "publishes nothing")),
            (case("", "refs/heads/main", none), R(2, "no event")),
            (
                case("push", "refs/heads/main", |f| f.tag_name = Some("x".into())),
                R(2, "only for manual runs"),
            ),
            // Manual runs.
            (case("workflow_dispatch", "refs/heads/main", none), P("manual-0123456", "manual-0123456", false, true, false, both)),
            (case("workflow_dispatch", "refs/tags/v1.2.3", none), P("manual-0123456", "manual-0123456", false, true, false, both)),
            (
                case("workflow_dispatch", "refs/heads/x", |f| f.tag_name = Some("test-login_fix.2".into())),
                P("test-login_fix.2", "test-login_fix.2", false, true, false, both),
            ),
            (
                case("workflow_dispatch", "refs/heads/x", |f| f.tag_name = Some("_x".into())),
                P("_x", "_x", false, true, false, both),
            ),
            (
                case("workflow_dispatch", "refs/heads/x", |f| f.tag_name = Some("2024-01-31".into())),
                P("2024-01-31", "2024-01-31", false, true, false, both),
            ),
            (
                case("workflow_dispatch", "refs/heads/x", |f| f.tag_name = Some("a".repeat(128))),
                P("", "", false, true, false, both),
            ),
            (
                case("workflow_dispatch", "refs/heads/x", |f| {
                    f.skip_push = true;
                    f.platforms = Some(" linux/arm64 , linux/amd64 ".into());
                }),
                P("manual-0123456", "manual-0123456", false, false, false, "linux/arm64,linux/amd64"),
            ),
            (
                case("workflow_dispatch", "refs/heads/x", |f| f.tag_name = Some("a".repeat(129))),
                R(2, "not a valid image tag"),
            ),
            (case("workflow_dispatch", "refs/heads/x", |f| f.tag_name = Some("latest".into())), R(2, "reserved")),
            (case("workflow_dispatch", "refs/heads/x", |f| f.tag_name = Some("LATEST".into())), R(2, "reserved")),
            (case("workflow_dispatch", "refs/heads/x", |f| f.tag_name = Some("1.2.3".into())), R(2, "looks like a version")),
            (case("workflow_dispatch", "refs/heads/x", |f| f.tag_name = Some("v1.2.3".into())), R(2, "looks like a version")),
            (case("workflow_dispatch", "refs/heads/x", |f| f.tag_name = Some("v1.2".into())), R(2, "looks like a version")),
            (case("workflow_dispatch", "refs/heads/x", |f| f.tag_name = Some("v2".into())), R(2, "looks like a version")),
            (case("workflow_dispatch", "refs/heads/x", |f| f.tag_name = Some("1.2.3-rc.1".into())), R(2, "looks like a version")),
            (case("workflow_dispatch", "refs/heads/x", |f| f.tag_name = Some("-x".into())), R(2, "not a valid image tag")),
            (case("workflow_dispatch", "refs/heads/x", |f| f.tag_name = Some(".x".into())), R(2, "not a valid image tag")),
            (case("workflow_dispatch", "refs/heads/x", |f| f.tag_name = Some("a b".into())), R(2, "not a valid image tag")),
            (case("workflow_dispatch", "refs/heads/x", |f| f.tag_name = Some("a/b".into())), R(2, "not a valid image tag")),
            (case("workflow_dispatch", "refs/heads/x", |f| f.tag_name = Some("a:b".into())), R(2, "not a valid image tag")),
            (case("workflow_dispatch", "refs/heads/x", |f| f.tag_name = Some("café".into())), R(2, "not a valid image tag")),
            // Commit SHAs.
            (case("workflow_dispatch", "refs/heads/x", |f| f.sha = String::new()), R(2, "no commit SHA")),
            (case("workflow_dispatch", "refs/heads/x", |f| f.sha = "abc".into()), R(2, "not 7 to 64 hex digits")),
            (case("push", "refs/heads/main", |f| f.sha = "0123456789abcdefg".into()), R(2, "not 7 to 64 hex digits")),
            // Platforms.
            (case("push", "refs/heads/main", |f| f.platforms = Some("linux/amd64,linux/amd64".into())), R(2, "listed twice")),
            (case("push", "refs/heads/main", |f| f.platforms = Some("linux/s390x".into())), R(2, "unsupported platform")),
            (case("push", "refs/heads/main", |f| f.platforms = Some("linux/amd64,".into())), R(2, "empty entry")),
            (case("push", "refs/heads/main", |f| f.platforms = Some("".into())), R(2, "platform list is empty")),
            (case("push", "refs/heads/main", |f| f.platforms = Some(" ".into())), R(2, "platform list is empty")),
            (case("push", "refs/heads/main", |f| f.platforms = Some("amd64".into())), R(2, "unsupported platform")),
            // Targets and credentials.
            (
                (facts("push", "refs/heads/main"), &["GITHUB_ACTOR", "DOCKERHUB_USERNAME", "DOCKERHUB_TOKEN"]),
                R(2, "ghcr.io (for ghcr.io/o/app): GHCR_USERNAME (or GITHUB_ACTOR) and GHCR_TOKEN (or GITHUB_TOKEN)"),
            ),
            (
                (facts("push", "refs/tags/v1.2.3"), &["GITHUB_ACTOR", "GITHUB_TOKEN", "DOCKERHUB_USERNAME"]),
                R(2, "docker.io (for docker.io/o/app): DOCKERHUB_USERNAME and DOCKERHUB_TOKEN\nor build without pushing"),
            ),
            (
                (facts("workflow_dispatch", "refs/heads/main"), &[]),
                R(2, "ghcr.io (for ghcr.io/o/app): GHCR_USERNAME (or GITHUB_ACTOR) and GHCR_TOKEN (or GITHUB_TOKEN)\n  docker.io (for docker.io/o/app): DOCKERHUB_USERNAME and DOCKERHUB_TOKEN"),
            ),
            (
                ({ let mut f = facts("push", "refs/heads/main"); f.skip_push = true; f }, &[]),
                P("latest", "latest", false, false, false, both),
            ),
            (
                ({ let mut f = facts("push", "refs/heads/main"); f.targets = vec!["127.0.0.1:5000/team/app".into(), "localhost:5001/app".into()]; f }, &[]),
                P("latest", "latest", false, true, true, both),
            ),
            (
                ({ let mut f = facts("push", "refs/heads/main"); f.targets = vec!["registry.example.com/team/app".into()]; f }, &["REGISTRY_USERNAME"]),
                R(2, "registry.example.com (for registry.example.com/team/app): REGISTRY_USERNAME and REGISTRY_PASSWORD"),
            ),
            (
                ({ let mut f = facts("push", "refs/heads/main"); f.targets = vec!["ghcr.io/o/app".into()]; f }, &["GHCR_USERNAME", "GHCR_TOKEN"]),
                P("latest", "latest", false, true, true, both),
            ),
            (case("push", "refs/heads/main", |f| f.targets = vec![" ghcr.io/o/app".into()]), R(2, "invalid target repository")),
            (case("push", "refs/heads/main", |f| f.targets = vec!["ghcr.io/o/app@sha256:abc".into()]), R(2, "invalid target repository")),
            (case("push", "refs/heads/main", |f| f.targets = vec!["ghcr.io/o/app:1".into()]), R(2, "invalid target repository")),
            (case("push", "refs/heads/main", |f| f.targets = vec!["ghcr.io/O/App".into()]), R(2, "invalid target repository")),
            (case("push", "refs/heads/main", |f| f.targets = vec!["ghcr.io//app".into()]), R(2, "invalid target repository")),
        ];
        assert!(cases.len() >= 30, "{} cases", cases.len());
        for ((facts, env), want) in cases {
            let env = crate::registry::Env::from_pairs(env.iter().map(|name| (*name, "x")));
            let got = plan(&facts, &settings(), &|t: &Reference| {
                Ok(credentials::source_of(&t.registry, &t.repository, &env)?.is_some())
            });
            match (want, got) {
                (P(tag, version, is_release, push, prune, platforms), Ok(plan)) => {
                    // An empty expected tag stands for "the tag name given".
                    let given = facts.tag_name.clone().unwrap_or_default();
                    let tag = if tag.is_empty() { given.as_str() } else { tag };
                    let version = if version.is_empty() { tag } else { version };
                    assert_eq!(
                        (
                            plan.tag.as_str(),
                            plan.version.as_str(),
                            plan.is_release,
                            plan.push,
                            plan.prune_previous
                        ),
                        (tag, version, is_release, push, prune),
                        "{facts:?}"
                    );
                    assert_eq!(plan.platform_list(), platforms, "{facts:?}");
                    assert!(!plan.is_release || plan.tag != "latest");
                    assert!(!plan.prune_previous || plan.tag == "latest");
                }
                (R(code, message), Err(err)) => {
                    let text = format!("{err:#}");
                    assert_eq!(exit::code_of(&err), code, "{facts:?}: {text}");
                    assert!(
                        text.contains(message),
                        "{facts:?}:\n{text}\nwants: {message}"
                    );
                    for secret in ALL_CREDS {
                        // Names are fine, values never reach this function; assert no "=" value syntax leaks.
                        assert!(!text.contains(&format!("{secret}=")), "{text}");
                    }
                }
                (want, got) => panic!("{facts:?}: wanted {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn floating_tags_follow_the_version_tags() {
        let mut config = settings();
        config.version_tags = vec![VersionTag::Patch, VersionTag::Minor, VersionTag::Major];
        let release = plan(&facts("push", "refs/tags/v1.2.3"), &config, &|_| Ok(true)).unwrap();
        assert_eq!(release.floating_tags, ["1.2", "1"]);
        let outputs: BTreeMap<_, _> = release.outputs().into_iter().collect();
        assert_eq!(outputs["tags"], "1.2.3,1.2,1");
        assert_eq!(outputs["floating_tags"], "1.2,1");
        // Only a version release has floating tags.
        for (event, git_ref) in [
            ("push", "refs/heads/main"),
            ("workflow_dispatch", "refs/heads/main"),
        ] {
            let other = plan(&facts(event, git_ref), &config, &|_| Ok(true)).unwrap();
            assert!(other.floating_tags.is_empty(), "{event}");
            assert_eq!(other.tags(), std::slice::from_ref(&other.tag));
        }
        // Cargo.toml's version is compared as a version.
        config.version = "1.2.3".into();
        assert!(release.warnings.is_empty(), "{:?}", release.warnings);
        config.version = "1.2.4".into();
        let differs = plan(&facts("push", "refs/tags/v1.2.3"), &config, &|_| Ok(true)).unwrap();
        assert_eq!(differs.warnings.len(), 1, "{:?}", differs.warnings);
    }

    #[test]
    fn outputs_matrix_and_labels() {
        let mut s = settings();
        s.runners
            .insert(Platform::LINUX_ARM64, "ubuntu-24.04".into());
        let plan = plan(&facts("push", "refs/tags/v1.2.3"), &s, &|_| Ok(true)).unwrap();
        let outputs: BTreeMap<_, _> = plan.outputs().into_iter().collect();
        assert_eq!(outputs["tag"], "1.2.3");
        assert_eq!(outputs["is_release"], "true");
        assert_eq!(outputs["skip_push"], "false");
        assert_eq!(outputs["prune_previous"], "false");
        assert_eq!(outputs["platform_list"], "linux/amd64,linux/arm64");
        assert_eq!(outputs["targets"], "ghcr.io/o/app,docker.io/o/app");
        let matrix: Value = serde_json::from_str(&outputs["platforms"]).unwrap();
        assert_eq!(
            matrix,
            json!([
                {"platform": "linux/amd64", "runner": "ubuntu-24.04", "slug": "linux-amd64"},
                {"platform": "linux/arm64", "runner": "ubuntu-24.04", "slug": "linux-arm64"},
            ])
        );
        assert_eq!(plan.labels["org.opencontainers.image.version"], "1.2.3");
        assert_eq!(plan.labels["org.opencontainers.image.revision"], SHA);
        assert_eq!(
            plan.labels["org.opencontainers.image.source"],
            "https://github.com/o/app"
        );
        assert!(plan.warnings.is_empty());
        let json = plan.to_json();
        assert_eq!(json["matrix"], matrix);
        assert_eq!(json["platforms"], json!(["linux/amd64", "linux/arm64"]));

        // Default runners, and a warning when the tag and Cargo.toml disagree.
        let plan = super::plan(&facts("push", "refs/tags/v2.0.0"), &settings(), &|_| {
            Ok(true)
        })
        .unwrap();
        assert_eq!(plan.jobs[1].runner, "ubuntu-24.04-arm");
        assert_eq!(plan.warnings.len(), 1);
        assert!(plan.warnings[0].contains("Cargo.toml's version is 1.2.3"));
        let text = plan.summary(&facts("push", "refs/tags/v2.0.0"));
        assert!(
            text.contains("tag:        2.0.0") && text.contains("linux/arm64 on ubuntu-24.04-arm"),
            "{text}"
        );
        assert!(text.contains("image of:   0123456\n"), "{text}");
        let md = plan.markdown(&facts("push", "refs/tags/v2.0.0"));
        assert!(md.contains("| tag | 2.0.0 |"), "{md}");
    }

    #[test]
    fn the_revision_is_the_commit_the_inputs_come_from() {
        const SOURCE: &str = "fedcba9876543210fedcba9876543210fedcba98";
        // (event, revision known, the revision label, the tag)
        let cases = [
            ("push", Some(SOURCE), SOURCE, "latest"),
            ("push", None, SHA, "latest"),
            ("workflow_dispatch", Some(SOURCE), SOURCE, "manual-0123456"),
        ];
        for (event, revision, want, tag) in cases {
            let mut facts = facts(event, "refs/heads/main");
            facts.revision = revision.map(str::to_owned);
            facts.created = Some(1_700_000_000);
            let plan = plan(&facts, &settings(), &|_| Ok(true)).unwrap();
            assert_eq!(plan.labels["org.opencontainers.image.revision"], want);
            assert_eq!(
                plan.labels["org.opencontainers.image.created"],
                "2023-11-14T22:13:20Z"
            );
            assert_eq!(plan.tag, tag, "the tag names the commit published");
            let text = plan.summary(&facts);
            assert!(
                text.contains(&format!(
                    "image of:   {}, time 2023-11-14T22:13:20Z",
                    &want[..7]
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn labels_skip_unknown_facts() {
        let mut config = settings();
        config.license = None;
        config.repository = Some(String::new());
        let labels = labels(&config, "1.2.3", None, Some(1_700_000_000));
        assert_eq!(
            labels["org.opencontainers.image.created"],
            "2023-11-14T22:13:20Z"
        );
        let keys: Vec<_> = labels.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "org.opencontainers.image.created",
                "org.opencontainers.image.description",
                "org.opencontainers.image.title",
                "org.opencontainers.image.version"
            ]
        );
    }

    #[test]
    fn rfc3339_dates() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_700_000_000, "2023-11-14T22:13:20Z"),
            (1_709_251_199, "2024-02-29T23:59:59Z"),
            (1_735_689_600, "2025-01-01T00:00:00Z"),
            (4_102_444_800, "2100-01-01T00:00:00Z"),
        ];
        for (epoch, want) in cases {
            assert_eq!(rfc3339(epoch), want, "{epoch}");
            assert_eq!(parse_rfc3339(want), Some(epoch), "{want}");
        }
        for text in [
            "2023-11-14T22:13:20.5Z",
            "2023-11-14T22:13:20+00:00",
            "2023-11-14 22:13:20Z",
            "2023-02-30T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "1969-12-31T23:59:59Z",
            "",
        ] {
            assert_eq!(parse_rfc3339(text), None, "{text}");
        }
    }
}
