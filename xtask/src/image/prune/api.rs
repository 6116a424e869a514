//! A small JSON-over-HTTP client for the two management APIs pruning needs besides the registry (GitHub's REST
//! API for GHCR, Docker Hub's API): bearer auth, a few retries on overload, pagination links that never leave the
//! API's own origin (the token must not follow a link elsewhere) and that end (`Pages`). It goes through the
//! registry client's transport: the same trusted CAs and proxies, and no redirect followed.

use std::time::Duration;

use anyhow::{bail, Context};

use crate::registry::origin::{self, Origin};
use crate::registry::transport::{ProxyEnv, Settings, Transport};

/// A response, read whole (these APIs answer small JSON documents).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The `Link` header (GitHub's pagination), if any.
    pub link: Option<String>,
    pub body: String,
}

impl Answer {
    pub fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> anyhow::Result<T> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("{what}: the answer is not the JSON expected"))
    }

    /// The `message` (GitHub) or `detail`/`message` (Docker Hub) of an error body, else the body itself, short.
    pub fn message(&self) -> String {
        let parsed: Option<serde_json::Value> = serde_json::from_str(&self.body).ok();
        let from_json = parsed.as_ref().and_then(|v| {
            ["message", "detail", "error"]
                .iter()
                .find_map(|k| v.get(*k).and_then(|m| m.as_str()).map(str::to_owned))
        });
        let text = from_json.unwrap_or_else(|| self.body.trim().to_owned());
        let mut short: String = crate::github::untrusted(&text).chars().take(300).collect();
        if short.is_empty() {
            short = format!("HTTP {}", self.status);
        }
        short
    }
}

/// One API: a base URL and an optional bearer token (never printed).
pub struct Api {
    transport: Transport,
    base: String,
    token: Option<String>,
    /// Pauses between attempts on 429/5xx/connection errors.
    backoff: Vec<Duration>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

const USER_AGENT: &str = "cargo-xtask-image-prune";

impl Api {
    pub fn new(base: &str, token: Option<String>) -> Api {
        let transport = Transport::new(Settings {
            connect_timeout: Duration::from_secs(15),
            io_timeout: Duration::from_secs(60),
            proxies: ProxyEnv::from_process(),
        });
        Api {
            transport,
            base: base.trim_end_matches('/').to_owned(),
            token,
            backoff: vec![Duration::from_secs(1), Duration::from_secs(4)],
        }
    }

    pub fn set_token(&mut self, token: Option<String>) {
        self.token = token;
    }

    /// `base` + `path` for a path of ours (starting with `/`), or a link a page gave (absolute or relative)
    /// resolved as a URL; either way it must stay on the API's own origin, where the token belongs.
    pub fn url(&self, path: &str) -> anyhow::Result<String> {
        let url = if path.starts_with('/') && !path.starts_with("//") {
            format!("{}{path}", self.base)
        } else {
            origin::resolve(&format!("{}/", self.base), path).map_err(anyhow::Error::msg)?
        };
        let (want, got) = (
            Origin::of(&self.base).map_err(anyhow::Error::msg)?,
            Origin::of(&url).map_err(anyhow::Error::msg)?,
        );
        if want != got {
            bail!(
                "refusing to follow {}: it leaves {want} (the API's own origin)",
                crate::github::untrusted(path)
            );
        }
        Ok(url)
    }

    pub fn get(&self, path: &str, extra: &[(&str, &str)]) -> anyhow::Result<Answer> {
        self.call("GET", path, extra, None)
    }

    pub fn delete(&self, path: &str, extra: &[(&str, &str)]) -> anyhow::Result<Answer> {
        self.call("DELETE", path, extra, None)
    }

    pub fn post_json(
        &self,
        path: &str,
        extra: &[(&str, &str)],
        body: &serde_json::Value,
    ) -> anyhow::Result<Answer> {
        self.call("POST", path, extra, Some(body.to_string()))
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: Option<String>,
    ) -> anyhow::Result<Answer> {
        let url = self.url(path)?;
        let mut attempt = 0;
        loop {
            let outcome = self.once(method, &url, extra, body.as_deref());
            let wait = match &outcome {
                Ok(answer) if matches!(answer.status, 429 | 500 | 502 | 503 | 504) => true,
                Ok(_) => false,
                Err(_) => true,
            };
            if !wait || attempt >= self.backoff.len() {
                return outcome.with_context(|| format!("{method} {url}"));
            }
            std::thread::sleep(self.backoff[attempt]);
            attempt += 1;
        }
    }

    fn once(
        &self,
        method: &str,
        url: &str,
        extra: &[(&str, &str)],
        body: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(url)
            .header("User-Agent", USER_AGENT);
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        let agent = self
            .transport
            .agent(&Origin::of(url).map_err(anyhow::Error::msg)?)
            .map_err(anyhow::Error::msg)?;
        let mut response = match body {
            Some(body) => agent.run(
                request
                    .header("Content-Type", "application/json")
                    .body(body.to_owned())?,
            ),
            None => agent.run(request.body(())?),
        }
        .map_err(anyhow::Error::from)?;
        let status = response.status().as_u16();
        let link = response
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .body_mut()
            .read_to_string()
            .context("reading the answer")?;
        Ok(Answer { status, link, body })
    }
}

/// The pages of one listing: each URL once, at most MAX_PAGES of them, so a server cannot keep a prune paging
/// forever (a `next` back to the same page, or an endless chain).
#[derive(Default)]
pub struct Pages {
    seen: std::collections::HashSet<String>,
}

pub const MAX_PAGES: usize = 1000;

impl Pages {
    pub fn visit(&mut self, url: &str, what: &str) -> anyhow::Result<()> {
        if self.seen.len() >= MAX_PAGES {
            bail!("{what}: more than {MAX_PAGES} pages; the API's pagination does not end");
        }
        if !self.seen.insert(url.to_owned()) {
            bail!(
                "{what}: the page {} came back again; the API's pagination does not end",
                crate::github::untrusted(url)
            );
        }
        Ok(())
    }

    /// Pages visited so far.
    pub fn count(&self) -> usize {
        self.seen.len()
    }
}

/// The `rel="next"` target of a `Link` header (RFC 8288): `<url>; rel="next", <url>; rel="last"`. Parsed, not
/// split on commas, since a URL or a quoted parameter may hold one.
pub fn next_link(header: &str) -> Option<String> {
    let mut rest = header;
    loop {
        let start = rest.find('<')?;
        let end = start + rest[start..].find('>')?;
        let url = &rest[start + 1..end];
        rest = &rest[end + 1..];
        // Parameters run to the next comma that is outside quotes.
        let mut in_quotes = false;
        let mut params_end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '"' => in_quotes = !in_quotes,
                ',' if !in_quotes => {
                    params_end = i;
                    break;
                }
                _ => {}
            }
        }
        let params = &rest[..params_end];
        let is_next = params.split(';').any(|param| {
            let Some((name, value)) = param.split_once('=') else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("rel")
                && value
                    .trim()
                    .trim_matches('"')
                    .split_whitespace()
                    .any(|rel| rel.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(url.to_owned());
        }
        rest = &rest[params_end..];
    }
}

/// Percent-encodes one path segment (a GHCR package name like `team/app` becomes `team%2Fapp`).
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::new();
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links() {
        let cases = [
            (
                r#"<https://api.github.com/user/packages/container/x/versions?page=2&per_page=100>; rel="next", <https://api.github.com/user/packages/container/x/versions?page=5&per_page=100>; rel="last""#,
                Some(
                    "https://api.github.com/user/packages/container/x/versions?page=2&per_page=100",
                ),
            ),
            (
                r#"<https://a/x?page=1>; rel="prev", <https://a/x?page=3>; rel="next""#,
                Some("https://a/x?page=3"),
            ),
            (
                r#"<https://a/x?q=a,b>; title="one, two"; rel="next""#,
                Some("https://a/x?q=a,b"),
            ),
            (r#"<https://a/x?page=9>; rel="last""#, None),
            (r#"<https://a/x>; REL=next"#, Some("https://a/x")),
            ("", None),
            ("garbage", None),
        ];
        for (header, want) in cases {
            assert_eq!(next_link(header).as_deref(), want, "{header}");
        }
    }

    #[test]
    fn links_stay_on_the_api_origin() {
        let api = Api::new("https://api.github.com/", Some("s3cret-token".into()));
        assert_eq!(
            api.url("/users/x").unwrap(),
            "https://api.github.com/users/x"
        );
        assert!(api.url("https://api.github.com/x?page=2").is_ok());
        assert!(api.url("https://evil.example/x").is_err());
        assert!(api.url("https://api.github.com.evil.example/x").is_err());
        // A relative link is a URL relative to the API, not text glued to its base.
        assert!(api
            .url("@evil.example/x")
            .unwrap()
            .starts_with("https://api.github.com/"));
        assert!(api.url("https://api.github.com@evil.example/x").is_err());
        assert!(api.url("//evil.example/x").is_err());
        assert!(api.url("http://api.github.com/x").is_err());
        let local = Api::new("http://127.0.0.1:4000/api/v3", None);
        assert!(local.url("http://127.0.0.1:4000/api/v3/x?page=2").is_ok());
        assert!(local.url("http://127.0.0.1:4001/x").is_err());
        let shown = format!("{api:?}");
        assert!(
            shown.contains("<redacted>") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    #[test]
    fn pagination_ends() {
        let mut pages = Pages::default();
        pages.visit("https://a/x?page=1", "list").unwrap();
        pages.visit("https://a/x?page=2", "list").unwrap();
        let err = pages.visit("https://a/x?page=1", "list").unwrap_err();
        assert!(err.to_string().contains("came back again"), "{err}");
        let mut pages = Pages::default();
        for n in 0..MAX_PAGES {
            pages
                .visit(&format!("https://a/x?page={n}"), "list")
                .unwrap();
        }
        assert!(pages.visit("https://a/x?page=last", "list").is_err());
    }

    #[test]
    fn package_names_are_one_segment() {
        assert_eq!(encode_segment("team/app"), "team%2Fapp");
        assert_eq!(encode_segment("plain-name_1.0"), "plain-name_1.0");
    }
}
