//! Docker Hub: tags and their digests come from Docker Hub's API; manifests are deleted through the registry.
//!
//! Calls:
//! - `POST {api}/v2/auth/token` with `{"identifier": user, "secret": token}` when credentials for docker.io are
//!   found: the `access_token` is the bearer for the next call (anonymous otherwise, enough for public
//!   repositories);
//! - `GET {api}/v2/namespaces/{namespace}/repositories/{name}/tags?page_size=100`, following `next`: each tag's
//!   `digest` and, in `images[].digest`, the platform manifests of a tagged index. This replaces one registry
//!   GET per tag, and Docker Hub counts manifest GETs against the pull rate limit;
//! - `DELETE https://registry-1.docker.io/v2/{namespace}/{name}/manifests/{digest}` (the registry API): 202
//!   deleted, 404 already gone, 403 while a tag or another index still references it (so it is refused, not
//!   forced, and Docker Hub itself guards a shared child). Docker Hub documents a 500 there as "retried in the
//!   background".
//!
//! `{api}` is DOCKERHUB_API_URL, `https://hub.docker.com` by default. Docker Hub's documented API lists tags
//! only, so `image prune` cannot discover untagged manifests there; it prunes the ones it is told about.

use std::collections::BTreeSet;

use anyhow::bail;

use super::api::{encode_segment, Api, Pages};
use super::{Backend, Removal, TagView};
use crate::registry::Repository;
use crate::registry::{Credentials, Reference};

#[derive(Debug, serde::Deserialize)]
struct Page {
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    results: Vec<Tag>,
}

#[derive(Debug, serde::Deserialize)]
struct Tag {
    name: String,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    images: Vec<Image>,
}

#[derive(Debug, serde::Deserialize)]
struct Image {
    #[serde(default)]
    digest: Option<String>,
}

pub struct DockerHub<'a> {
    api: Api,
    login: Option<Credentials>,
    logged_in: bool,
    namespace: String,
    name: String,
    repo: &'a dyn Repository,
    target: &'a Reference,
}

impl<'a> DockerHub<'a> {
    pub fn new(
        api_base: &str,
        login: Option<Credentials>,
        repo: &'a dyn Repository,
    ) -> anyhow::Result<DockerHub<'a>> {
        let target = repo.target();
        let (namespace, name) = match target.repository.split_once('/') {
            Some((namespace, name)) => (namespace.to_owned(), name.to_owned()),
            None => ("library".to_owned(), target.repository.clone()),
        };
        Ok(DockerHub {
            api: Api::new(api_base, None),
            login,
            logged_in: false,
            namespace,
            name,
            repo,
            target,
        })
    }

    fn log_in(&mut self) -> anyhow::Result<()> {
        if self.logged_in {
            return Ok(());
        }
        self.logged_in = true;
        let Some(login) = &self.login else {
            return Ok(());
        };
        #[derive(serde::Deserialize)]
        struct Token {
            access_token: String,
        }
        let body = serde_json::json!({"identifier": login.username, "secret": login.secret});
        let answer = self.api.post_json("/v2/auth/token", &[], &body)?;
        if answer.status != 200 {
            bail!(
                "Docker Hub refused the login of {} for its API (POST /v2/auth/token: {} {}); \
                 check DOCKERHUB_USERNAME and DOCKERHUB_TOKEN",
                login.username,
                answer.status,
                answer.message()
            );
        }
        let token: Token = answer.json("POST /v2/auth/token")?;
        self.api.set_token(Some(token.access_token));
        Ok(())
    }
}

impl Backend for DockerHub<'_> {
    fn label(&self) -> &'static str {
        "Docker Hub API + registry DELETE"
    }

    fn tags(&mut self) -> anyhow::Result<TagView> {
        self.log_in()?;
        let mut view = TagView::default();
        let mut next = Some(format!(
            "/v2/namespaces/{}/repositories/{}/tags?page_size=100",
            encode_segment(&self.namespace),
            encode_segment(&self.name)
        ));
        let mut pages = Pages::default();
        while let Some(path) = next.take() {
            pages.visit(&self.api.url(&path)?, "Docker Hub's tag list")?;
            let answer = self.api.get(&path, &[("Accept", "application/json")])?;
            match answer.status {
                200 => {}
                // A repository that does not exist (yet) has no tags.
                404 if pages.count() == 1 => return Ok(view),
                status => bail!(
                    "listing the tags of {} on Docker Hub: GET {path} answered {status}: {}",
                    self.target,
                    answer.message()
                ),
            }
            let page: Page = answer.json(&path)?;
            for tag in page.results {
                let digest = match tag.digest {
                    Some(digest) if !digest.is_empty() => digest,
                    // Old tags may lack a digest in the API; ask the registry instead of guessing.
                    _ => match self.repo.resolve(&tag.name)? {
                        Some(digest) => digest.to_string(),
                        None => continue,
                    },
                };
                let children: Vec<String> = tag
                    .images
                    .iter()
                    .filter_map(|image| image.digest.clone())
                    .filter(|child| child != &digest && !child.is_empty())
                    .collect();
                if !children.is_empty() {
                    view.children.insert(digest.clone(), children);
                }
                view.tags.insert(tag.name, digest);
            }
            next = page.next.filter(|n| !n.is_empty());
        }
        Ok(view)
    }

    fn all_manifests(&mut self) -> anyhow::Result<Option<BTreeSet<String>>> {
        Ok(None)
    }

    fn delete(&mut self, digest: &str) -> anyhow::Result<Removal> {
        let refused = || Removal::Refused {
            status: 403,
            message: format!(
                "Docker Hub refuses to delete {digest}: a tag or another index still references it"
            ),
        };
        match self.repo.delete(&digest.parse()?) {
            Ok(Removal::Refused { status: 403, .. }) => Ok(refused()),
            // 403 is Docker Hub's answer here while a tag or index references the manifest, not a failure.
            Err(err) if crate::exit::status_of(&err) == Some(403) => Ok(refused()),
            Err(err) if crate::exit::status_of(&err) == Some(500) => Err(err.context(
                "Docker Hub documents a 500 on manifest deletion as retried in the background; \
                 check again later with `cargo xtask image prune`",
            )),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_pages_parse_as_documented() {
        let page: Page = serde_json::from_str(
            r#"{"count": 2, "next": "https://hub.docker.com/v2/namespaces/u/repositories/r/tags?page=2&page_size=1",
                "previous": null,
                "results": [{"creator": 1, "id": 2, "name": "latest", "digest": "sha256:idx",
                  "images": [{"architecture": "amd64", "os": "linux", "digest": "sha256:a", "status": "active"},
                             {"architecture": "arm64", "os": "linux", "digest": "sha256:b"}],
                  "tag_status": "active", "content_type": "image"}]}"#,
        )
        .unwrap();
        assert!(page.next.unwrap().contains("page=2"));
        let tag = &page.results[0];
        assert_eq!(tag.digest.as_deref(), Some("sha256:idx"));
        let children: Vec<_> = tag
            .images
            .iter()
            .filter_map(|i| i.digest.as_deref())
            .collect();
        assert_eq!(children, ["sha256:a", "sha256:b"]);
        let last: Page =
            serde_json::from_str(r#"{"count": 0, "next": null, "results": []}"#).unwrap();
        assert!(last.next.is_none() && last.results.is_empty());
    }
}
