//! Registry authentication, the pure parts: parsing `WWW-Authenticate` challenges, token scopes, the token
//! endpoint's answer, and the per-scope token cache. The HTTP side lives in `client.rs`.
//!
//! Challenge values hold commas inside quotes (`scope="repository:x:pull,push"`) and a header may carry several
//! challenges (`Bearer realm="…", Basic realm="…"`), so they are tokenized, never split on commas.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// One challenge of a `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercased: `bearer`, `basic`.
    pub scheme: String,
    /// Parameter names lowercased, values unquoted, in order.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How a registry wants to be authenticated, learned from its first 401.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Not asked yet (or the registry is open).
    Unknown,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Scheme {
    /// The scheme to use from a 401's challenges: Bearer when offered (it is what registries prefer), else Basic.
    pub fn from_challenges(challenges: &[Challenge]) -> Option<Scheme> {
        let bearer = challenges.iter().find(|c| c.scheme == "bearer");
        if let Some(realm) = bearer.and_then(|c| c.param("realm")) {
            return Some(Scheme::Bearer {
                realm: realm.to_owned(),
                service: bearer.and_then(|c| c.param("service")).map(str::to_owned),
            });
        }
        challenges
            .iter()
            .any(|c| c.scheme == "basic")
            .then_some(Scheme::Basic)
    }
}

/// Parses every challenge in one `WWW-Authenticate` value.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut p = Parser {
        s: header.as_bytes(),
        pos: 0,
    };
    let mut out = Vec::new();
    loop {
        p.skip(|b| b == b',' || b.is_ascii_whitespace());
        if p.done() {
            break;
        }
        let scheme = p.token();
        if scheme.is_empty() {
            // Not a token: skip the stray character rather than give up on the rest.
            p.pos += 1;
            continue;
        }
        let mut challenge = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params: Vec::new(),
        };
        loop {
            let before = p.pos;
            p.skip(|b| b == b',' || b.is_ascii_whitespace());
            let name = p.token();
            p.skip(|b| b == b' ' || b == b'\t');
            if name.is_empty() || p.peek() != Some(b'=') {
                // The next challenge's scheme (or the end): leave it for the outer loop.
                p.pos = before;
                break;
            }
            // `name=` then `=`, a comma or the end is a token68 (`Basic dXNlcg==`), which registries do not use:
            // skip it, it ends this challenge.
            let eq_start = p.pos;
            p.skip(|b| b == b'=');
            let eq_run = p.pos - eq_start;
            p.skip(|b| b == b' ' || b == b'\t');
            if eq_run > 1 || p.peek().is_none_or(|b| b == b',') {
                break;
            }
            let value = if p.peek() == Some(b'"') {
                p.quoted()
            } else {
                // Unquoted values are tokens; some registries leave URLs unquoted, so take up to the next comma.
                let start = p.pos;
                p.skip(|b| b != b',' && !b.is_ascii_whitespace());
                String::from_utf8_lossy(&p.s[start..p.pos]).into_owned()
            };
            challenge.params.push((name.to_ascii_lowercase(), value));
        }
        out.push(challenge);
    }
    out
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn done(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip(&mut self, pred: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
    }

    /// An RFC 7230 token.
    fn token(&mut self) -> String {
        let start = self.pos;
        self.skip(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        String::from_utf8_lossy(&self.s[start..self.pos]).into_owned()
    }

    /// A quoted-string, with `\x` escapes resolved; an unterminated one runs to the end.
    fn quoted(&mut self) -> String {
        self.pos += 1;
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.pos += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(escaped) = self.peek() {
                        out.push(escaped);
                        self.pos += 1;
                    }
                }
                _ => out.push(b),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// `repository:<name>:<actions>` — the scope a token must carry for one repository.
pub fn repository_scope(repository: &str, actions: &[&str]) -> String {
    format!("repository:{repository}:{}", actions.join(","))
}

/// The scopes to ask the token endpoint for: what we need plus whatever the challenge named (it states what the
/// registry checks, e.g. `delete`), without duplicates, in a stable order.
pub fn scopes_for_request(wanted: &[String], challenge_scope: Option<&str>) -> Vec<String> {
    let mut scopes: Vec<String> = wanted.to_vec();
    if let Some(extra) = challenge_scope {
        // Several scopes in one challenge are space-separated.
        for scope in extra.split(' ').filter(|s| !s.is_empty()) {
            if !scopes.iter().any(|s| s == scope) {
                scopes.push(scope.to_owned());
            }
        }
    }
    scopes
}

/// The token endpoint's answer: the token (`token`, or OAuth2's `access_token`) and how long it lives
/// (`expires_in`, 60 s when absent as the token spec says).
pub fn parse_token_response(body: &[u8]) -> Result<(String, Duration), String> {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        access_token: Option<String>,
        #[serde(default)]
        expires_in: Option<u64>,
    }
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|_| "the token endpoint did not answer JSON".to_owned())?;
    let token = answer
        .token
        .filter(|t| !t.is_empty())
        .or(answer.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| "the token endpoint's answer has no token".to_owned())?;
    let lifetime = Duration::from_secs(answer.expires_in.filter(|&s| s > 0).unwrap_or(60));
    Ok((token, lifetime))
}

/// Bearer tokens per scope set, dropped a little before they expire so a long upload does not start on a token
/// that dies half-way.
#[derive(Default)]
pub struct TokenCache {
    tokens: HashMap<String, (String, Instant)>,
}

impl TokenCache {
    /// The key of a set of scopes (order does not matter).
    pub fn key(scopes: &[String]) -> String {
        let mut sorted: Vec<&str> = scopes.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        sorted.join(" ")
    }

    pub fn get(&self, key: &str, now: Instant) -> Option<&str> {
        self.tokens
            .get(key)
            .filter(|(_, until)| now < *until)
            .map(|(token, _)| token.as_str())
    }

    pub fn insert(&mut self, key: String, token: String, lifetime: Duration, now: Instant) {
        let margin = (lifetime / 10).min(Duration::from_secs(30));
        self.tokens.insert(key, (token, now + lifetime - margin));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(scheme: &str, params: &[(&str, &str)]) -> Challenge {
        Challenge {
            scheme: scheme.into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn challenges() {
        let cases = [
            (
                r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:o/n:pull,push""#,
                vec![c(
                    "bearer",
                    &[
                        ("realm", "https://ghcr.io/token"),
                        ("service", "ghcr.io"),
                        ("scope", "repository:o/n:pull,push"),
                    ],
                )],
            ),
            (
                r#"Basic realm="Registry Realm""#,
                vec![c("basic", &[("realm", "Registry Realm")])],
            ),
            (
                r#"BEARER Realm = "https://auth.docker.io/token" , Service="registry.docker.io""#,
                vec![c(
                    "bearer",
                    &[
                        ("realm", "https://auth.docker.io/token"),
                        ("service", "registry.docker.io"),
                    ],
                )],
            ),
            (
                r#"Bearer realm="a,b",scope="repository:x:pull,push repository:y:pull", Basic realm="z""#,
                vec![
                    c(
                        "bearer",
                        &[
                            ("realm", "a,b"),
                            ("scope", "repository:x:pull,push repository:y:pull"),
                        ],
                    ),
                    c("basic", &[("realm", "z")]),
                ],
            ),
            (
                r#"Bearer realm=http://127.0.0.1:1/token,service=local"#,
                vec![c(
                    "bearer",
                    &[("realm", "http://127.0.0.1:1/token"), ("service", "local")],
                )],
            ),
            (
                r#"Bearer realm="with \"quotes\" and \\ slash",error="insufficient_scope""#,
                vec![c(
                    "bearer",
                    &[
                        ("realm", r#"with "quotes" and \ slash"#),
                        ("error", "insufficient_scope"),
                    ],
                )],
            ),
            (
                "Basic dXNlcjpwYXNz==, Bearer realm=\"r\"",
                vec![c("basic", &[]), c("bearer", &[("realm", "r")])],
            ),
            ("Basic", vec![c("basic", &[])]),
            ("", vec![]),
            (
                r#"Bearer realm="unterminated"#,
                vec![c("bearer", &[("realm", "unterminated")])],
            ),
        ];
        for (header, want) in cases {
            assert_eq!(parse_challenges(header), want, "{header}");
        }
    }

    #[test]
    fn scheme_prefers_bearer() {
        let cases = [
            (
                r#"Basic realm="x", Bearer realm="https://t",service="s""#,
                Some(Scheme::Bearer {
                    realm: "https://t".into(),
                    service: Some("s".into()),
                }),
            ),
            (r#"Basic realm="x""#, Some(Scheme::Basic)),
            (r#"Bearer service="no realm""#, None),
            (r#"Negotiate"#, None),
        ];
        for (header, want) in cases {
            assert_eq!(
                Scheme::from_challenges(&parse_challenges(header)),
                want,
                "{header}"
            );
        }
    }

    #[test]
    fn scopes() {
        let push = vec![repository_scope("o/n", &["pull", "push"])];
        let cases = [
            (None, vec!["repository:o/n:pull,push"]),
            (
                Some("repository:o/n:pull,push"),
                vec!["repository:o/n:pull,push"],
            ),
            (
                Some("repository:o/n:delete"),
                vec!["repository:o/n:pull,push", "repository:o/n:delete"],
            ),
            (
                Some("repository:a:pull  repository:o/n:pull,push"),
                vec!["repository:o/n:pull,push", "repository:a:pull"],
            ),
        ];
        for (challenge, want) in cases {
            assert_eq!(scopes_for_request(&push, challenge), want, "{challenge:?}");
        }
        assert_eq!(
            TokenCache::key(&["b".into(), "a".into(), "b".into()]),
            "a b"
        );
    }

    #[test]
    fn token_responses() {
        let s = Duration::from_secs;
        type Want = Result<(&'static str, Duration), &'static str>;
        let cases: [(&str, Want); 7] = [
            (r#"{"token":"t","expires_in":300}"#, Ok(("t", s(300)))),
            (r#"{"access_token":"a"}"#, Ok(("a", s(60)))),
            (
                r#"{"token":"","access_token":"a","expires_in":0}"#,
                Ok(("a", s(60))),
            ),
            (
                r#"{"token":"t","access_token":"a","issued_at":"2020-01-01T00:00:00Z"}"#,
                Ok(("t", s(60))),
            ),
            (r#"{"expires_in":300}"#, Err("no token")),
            ("<html>", Err("not answer JSON")),
            (r#"{"token":"t","expires_in":-1}"#, Err("not answer JSON")),
        ];
        for (body, want) in cases {
            match (parse_token_response(body.as_bytes()), want) {
                (Ok((token, life)), Ok((want_token, want_life))) => {
                    assert_eq!((token.as_str(), life), (want_token, want_life), "{body}")
                }
                (Err(err), Err(mention)) => assert!(err.contains(mention), "{body}: {err}"),
                (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn cache_expires_before_the_token() {
        let now = Instant::now();
        let mut cache = TokenCache::default();
        cache.insert("k".into(), "t".into(), Duration::from_secs(60), now);
        assert_eq!(cache.get("k", now), Some("t"));
        assert_eq!(cache.get("k", now + Duration::from_secs(53)), Some("t"));
        assert_eq!(cache.get("k", now + Duration::from_secs(54)), None);
        assert_eq!(cache.get("other", now), None);
        cache.insert("long".into(), "l".into(), Duration::from_secs(3600), now);
        assert_eq!(
            cache.get("long", now + Duration::from_secs(3569)),
            Some("l")
        );
        assert_eq!(cache.get("long", now + Duration::from_secs(3570)), None);
    }
}
