//! GHCR: manifests are deleted as package versions through GitHub's REST API, because GHCR answers the registry's
//! `DELETE /v2/<name>/manifests/<digest>` with 405.
//!
//! Calls (base = GITHUB_API_URL, `https://api.github.com` by default; `Authorization: Bearer` the token):
//! - `GET /users/{owner}`: `type` says whether the package belongs to a user or an organisation;
//! - `GET /{users|orgs}/{owner}/packages/container/{package}/versions?per_page=100`, following `Link: rel="next"`:
//!   each version's `id`, `name` (the manifest digest) and `metadata.container.tags`. Every platform child of an
//!   index is its own, untagged, version;
//! - `DELETE /{users|orgs}/{owner}/packages/container/{package}/versions/{id}`: 204 deleted, 404 already gone,
//!   400 when it is the last (tagged) version, which must be reported, never forced.
//!
//! `{package}` is the repository path after the owner, percent-encoded as one segment (`team/app` → `team%2Fapp`).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context};

use super::api::{encode_segment, next_link, Api, Pages};
use super::{Backend, Removal, TagView};
use crate::registry::Reference;

const HEADERS: &[(&str, &str)] = &[
    ("Accept", "application/vnd.github+json"),
    ("X-GitHub-Api-Version", "2022-11-28"),
];

/// One package version as the API lists it.
#[derive(Debug, Clone, serde::Deserialize)]
struct Version {
    id: u64,
    name: String,
    #[serde(default)]
    metadata: Option<Metadata>,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct Metadata {
    #[serde(default)]
    container: Option<ContainerMeta>,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct ContainerMeta {
    #[serde(default)]
    tags: Vec<String>,
}

impl Version {
    fn tags(&self) -> &[String] {
        self.metadata
            .as_ref()
            .and_then(|m| m.container.as_ref())
            .map_or(&[], |c| c.tags.as_slice())
    }
}

pub struct Ghcr {
    api: Api,
    owner: String,
    package: String,
    /// `/users/{owner}` or `/orgs/{owner}`, once known.
    prefix: Option<String>,
    /// Digest -> version id, from the latest listing.
    ids: BTreeMap<String, u64>,
}

impl Ghcr {
    pub fn new(api_base: &str, token: Option<String>, target: &Reference) -> anyhow::Result<Ghcr> {
        let Some(token) = token else {
            bail!(
                "pruning {target} needs a GitHub token with read:packages and delete:packages \
                 (GITHUB_TOKEN in Actions, with `permissions: packages: write`)"
            );
        };
        let Some((owner, package)) = target.repository.split_once('/') else {
            bail!("{target} has no owner/package path, so its GitHub package cannot be named");
        };
        Ok(Ghcr {
            api: Api::new(api_base, Some(token)),
            owner: owner.to_owned(),
            package: package.to_owned(),
            prefix: None,
            ids: BTreeMap::new(),
        })
    }

    fn prefix(&mut self) -> anyhow::Result<String> {
        if let Some(prefix) = &self.prefix {
            return Ok(prefix.clone());
        }
        #[derive(serde::Deserialize)]
        struct Account {
            #[serde(rename = "type")]
            kind: String,
        }
        let path = format!("/users/{}", encode_segment(&self.owner));
        let answer = self.api.get(&path, HEADERS)?;
        if answer.status != 200 {
            bail!(
                "GET {path} answered {}: {} (is {} a GitHub user or organisation?)",
                answer.status,
                answer.message(),
                self.owner
            );
        }
        let account: Account = answer.json(&path)?;
        let kind = if account.kind == "Organization" {
            "orgs"
        } else {
            "users"
        };
        let prefix = format!("/{kind}/{}", encode_segment(&self.owner));
        self.prefix = Some(prefix.clone());
        Ok(prefix)
    }

    fn versions_path(&mut self) -> anyhow::Result<String> {
        Ok(format!(
            "{}/packages/container/{}/versions",
            self.prefix()?,
            encode_segment(&self.package)
        ))
    }

    fn list(&mut self) -> anyhow::Result<Vec<Version>> {
        let mut next = Some(format!("{}?per_page=100", self.versions_path()?));
        let mut all = Vec::new();
        let mut pages = Pages::default();
        while let Some(path) = next.take() {
            pages.visit(&self.api.url(&path)?, "GitHub's package versions list")?;
            let answer = self.api.get(&path, HEADERS)?;
            match answer.status {
                200 => {}
                404 => bail!(
                    "GitHub knows no container package {} owned by {} (GET {path}: 404); \
                     check the target and that the token may read it",
                    self.package,
                    self.owner
                ),
                status => bail!(
                    "listing the versions of package {}: GET {path} answered {status}: {}",
                    self.package,
                    answer.message()
                ),
            }
            let page: Vec<Version> = answer.json(&path)?;
            all.extend(page);
            next = answer.link.as_deref().and_then(next_link);
        }
        self.ids = all.iter().map(|v| (v.name.clone(), v.id)).collect();
        Ok(all)
    }
}

impl Backend for Ghcr {
    fn label(&self) -> &'static str {
        "GitHub packages API (GHCR)"
    }

    fn tags(&mut self) -> anyhow::Result<TagView> {
        let mut tags = BTreeMap::new();
        for version in self.list()? {
            for tag in version.tags() {
                tags.insert(tag.clone(), version.name.clone());
            }
        }
        Ok(TagView {
            tags,
            children: BTreeMap::new(),
        })
    }

    fn all_manifests(&mut self) -> anyhow::Result<Option<BTreeSet<String>>> {
        Ok(Some(self.list()?.into_iter().map(|v| v.name).collect()))
    }

    fn delete(&mut self, digest: &str) -> anyhow::Result<Removal> {
        if !self.ids.contains_key(digest) {
            self.list()?;
        }
        let Some(id) = self.ids.get(digest).copied() else {
            return Ok(Removal::Gone);
        };
        let path = format!("{}/{id}", self.versions_path()?);
        let answer = self
            .api
            .delete(&path, HEADERS)
            .with_context(|| format!("deleting version {id} ({digest})"))?;
        Ok(match answer.status {
            200 | 202 | 204 => {
                self.ids.remove(digest);
                Removal::Deleted
            }
            404 => Removal::Gone,
            status => Removal::Refused {
                status,
                message: format!("DELETE {path}: {}", answer.message()),
            },
        })
    }
}
