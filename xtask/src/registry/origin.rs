//! Where credentials may go: URLs parsed into origins (scheme, host, port), links resolved against the URL they
//! came from, and the rule for which token realms a registry's credentials may be sent to.
//!
//! Hosts are compared as parsed values, never as string prefixes: `https://ghcr.io.evil.tld`,
//! `https://ghcr.io@evil.tld` and `127.0.0.1:50011` are all other origins than `https://ghcr.io` and
//! `127.0.0.1:5001`. A URL with userinfo (`user@host`) is refused outright: it only ever serves to disguise a host.

use std::fmt;

use ureq::http::Uri;

/// The variable that names token realm hosts a registry may send its users to besides its own domain (comma
/// separated; for registries whose auth lives elsewhere).
pub const TRUSTED_REALMS_ENV: &str = "XTASK_TRUSTED_REALMS";

/// Scheme, host and port of a URL: what credentials are bound to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub https: bool,
    /// Lower case; an IPv6 address keeps its brackets (`[::1]`).
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// The origin of an absolute `http://` or `https://` URL; anything else (another scheme, no host, userinfo,
    /// characters a URL cannot hold) is an error that says why.
    pub fn of(url: &str) -> Result<Origin, String> {
        let uri: Uri = url
            .parse()
            .map_err(|_| format!("{} is not a valid URL", shown(url)))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => return Err(format!("{} uses {other}:, not http(s)", shown(url))),
            None => return Err(format!("{} is not an absolute URL", shown(url))),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{} has no host", shown(url)))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "{} carries a user name before its host (userinfo), which is refused",
                shown(url)
            ));
        }
        let host = authority.host().to_ascii_lowercase();
        if host.is_empty() {
            return Err(format!("{} has no host", shown(url)));
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Origin { https, host, port })
    }

    /// `https://ghcr.io`, `http://127.0.0.1:5000`: the default port is left out.
    pub fn base_url(&self) -> String {
        self.to_string()
    }

    /// Loopback: nothing but this machine can listen there, so plain HTTP is harmless and no proxy is wanted.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.host)
    }

    /// `host` or `host:port` as the user would name it (no scheme, default port left out).
    pub fn host_port(&self) -> String {
        if self.port == self.default_port() {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn default_port(&self) -> u16 {
        if self.https {
            443
        } else {
            80
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.host_port())
    }
}

/// Whether a host (without port; IPv6 with or without brackets) is this machine.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Resolves a link a server sent (an upload `Location`, a `Link` or `next` page, a redirect) against the URL of
/// the answer that carried it, as RFC 3986 does for the forms servers use: absolute, scheme-relative (`//host/x`),
/// absolute path, relative path, query only. The result is re-parsed, so whatever a string trick might do, its
/// origin is the one [`Origin::of`] reports.
pub fn resolve(from: &str, link: &str) -> Result<String, String> {
    let link = link.trim();
    let link = link.split('#').next().unwrap_or(link);
    if link.is_empty() {
        return Err("the server sent an empty link".into());
    }
    let base = Origin::of(from)?;
    let resolved = if has_scheme(link) {
        link.to_owned()
    } else if let Some(rest) = link.strip_prefix("//") {
        format!("{}://{rest}", if base.https { "https" } else { "http" })
    } else if link.starts_with('/') {
        format!("{base}{link}")
    } else {
        let path = from
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
            .unwrap_or("/");
        let path = path.split(['?', '#']).next().unwrap_or("/");
        if link.starts_with('?') {
            format!("{base}{path}{link}")
        } else {
            let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
            let dir = if dir.is_empty() { "/" } else { dir };
            format!("{base}{dir}{link}")
        }
    };
    Origin::of(&resolved)?;
    Ok(resolved)
}

/// Resolves a link and requires it to stay on the origin of the answer that carried it.
pub fn resolve_on_origin(from: &str, link: &str) -> Result<String, String> {
    let resolved = resolve(from, link)?;
    let (want, got) = (Origin::of(from)?, Origin::of(&resolved)?);
    if want != got {
        return Err(format!(
            "the link {} leads to {got}, away from {want}",
            shown(link)
        ));
    }
    Ok(resolved)
}

/// `scheme:` at the start, as RFC 3986 defines a scheme.
fn has_scheme(link: &str) -> bool {
    match link.find(':') {
        Some(i) if i > 0 => {
            let scheme = &link[..i];
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        _ => false,
    }
}

/// Checks that the registry at `registry` may send our credentials to the token realm `realm`: https (plain HTTP
/// only from a plain-HTTP registry to the same host), and the registry's own host, a host of its registrable
/// domain, Docker Hub's known pair, or a host named in `trusted`.
pub fn check_realm(registry: &Origin, realm: &str, trusted: &[String]) -> Result<Origin, String> {
    let origin = Origin::of(realm).map_err(|why| format!("unusable token realm: {why}"))?;
    if !origin.https && (registry.https || origin.host != registry.host) {
        return Err(format!(
            "the token realm {} is plain HTTP; credentials go over plain HTTP only to the plain-HTTP registry's \
             own host",
            shown(realm)
        ));
    }
    let trusted_here = trusted.iter().any(|t| {
        let t = t.trim().to_ascii_lowercase();
        t == origin.host || t == origin.host_port()
    });
    let related = origin.host == registry.host
        || known_pair(&registry.host, &origin.host)
        || registrable_domain(&origin.host)
            .is_some_and(|domain| registrable_domain(&registry.host) == Some(domain));
    if related || trusted_here {
        Ok(origin)
    } else {
        Err(format!(
            "the registry {registry} names the token realm {}, on {}, which is not the registry's host or domain; \
             if the registry's authentication really lives there, allow it with {TRUSTED_REALMS_ENV}={}",
            shown(realm),
            origin.host,
            origin.host
        ))
    }
}

/// Registry hosts whose token service lives on another domain, as their operators document it.
fn known_pair(registry: &str, realm: &str) -> bool {
    matches!(
        (registry, realm),
        ("registry-1.docker.io", "auth.docker.io") | ("index.docker.io", "auth.docker.io")
    )
}

/// Suffixes under which unrelated parties hold names (a small part of the Public Suffix List: the country
/// second levels and shared hosting domains a registry or an attacker is likely to use). Under one of these the
/// registrable domain has one more label.
const PUBLIC_SUFFIXES: &[&str] = &[
    "co.uk",
    "org.uk",
    "ac.uk",
    "gov.uk",
    "com.au",
    "net.au",
    "org.au",
    "co.jp",
    "ne.jp",
    "or.jp",
    "co.kr",
    "com.br",
    "com.cn",
    "net.cn",
    "com.tw",
    "org.tw",
    "com.hk",
    "co.in",
    "co.nz",
    "com.sg",
    "com.mx",
    "co.za",
    "github.io",
    "githubusercontent.com",
    "amazonaws.com",
    "cloudfront.net",
    "azurewebsites.net",
    "azurecr.io",
    "herokuapp.com",
    "appspot.com",
    "web.app",
    "firebaseapp.com",
    "pages.dev",
    "workers.dev",
    "netlify.app",
    "vercel.app",
    "fly.dev",
    "onrender.com",
    "ngrok.io",
    "ngrok-free.app",
    "blogspot.com",
    "nip.io",
    "sslip.io",
    "duckdns.org",
];

/// `ghcr.io` for `ghcr.io`, `gitlab.com` for `registry.gitlab.com`; `None` for addresses and one-label names.
pub fn registrable_domain(host: &str) -> Option<&str> {
    if host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok() || !host.contains('.') {
        return None;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let take = |n: usize| -> Option<&str> {
        (labels.len() >= n).then(|| {
            let start = host.len() - labels[labels.len() - n..].join(".").len();
            &host[start..]
        })
    };
    let two = take(2)?;
    if PUBLIC_SUFFIXES.contains(&two) {
        take(3)
    } else {
        Some(two)
    }
}

/// A URL or link as it may appear in a message: what a server sent is escaped and cut short.
fn shown(text: &str) -> String {
    let short: String = text.chars().take(200).collect();
    format!("{:?}", short)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(url: &str) -> Origin {
        Origin::of(url).unwrap()
    }

    #[test]
    fn origins_are_parsed_not_compared_as_strings() {
        let ok = [
            ("https://ghcr.io/v2/", "https://ghcr.io"),
            ("https://GHCR.io:443/x", "https://ghcr.io"),
            ("http://127.0.0.1:5001/v2/", "http://127.0.0.1:5001"),
            ("http://[::1]:5000/v2/", "http://[::1]:5000"),
            ("https://ghcr.io.evil.tld/v2/", "https://ghcr.io.evil.tld"),
            ("https://registry.test:8443", "https://registry.test:8443"),
        ];
        for (url, want) in ok {
            assert_eq!(origin(url).to_string(), want, "{url}");
        }
        assert_ne!(
            origin("http://127.0.0.1:5001/"),
            origin("http://127.0.0.1:50011/")
        );
        assert_ne!(
            origin("https://ghcr.io/"),
            origin("https://ghcr.io.evil.tld/")
        );
        assert_ne!(origin("https://ghcr.io/"), origin("http://ghcr.io/"));
        let refused = [
            ("https://ghcr.io@evil.tld/x", "userinfo"),
            ("http://[::1]@192.0.2.2:7002/token", "userinfo"),
            ("https://user:pw@ghcr.io/", "userinfo"),
            ("ftp://ghcr.io/x", "ftp"),
            ("/v2/x", "absolute"),
            ("https://ghcr.io/a\nb", "valid"),
            ("https:///x", "valid URL"),
        ];
        for (url, why) in refused {
            let err = Origin::of(url).unwrap_err();
            assert!(err.contains(why), "{url}: {err}");
        }
    }

    #[test]
    fn links_resolve_against_the_answer_they_came_with() {
        let from = "https://ghcr.io/v2/o/app/tags/list?n=2";
        let cases = [
            (
                "/v2/o/app/tags/list?last=b",
                "https://ghcr.io/v2/o/app/tags/list?last=b",
            ),
            ("list?last=b", "https://ghcr.io/v2/o/app/tags/list?last=b"),
            ("?last=b", "https://ghcr.io/v2/o/app/tags/list?last=b"),
            ("https://ghcr.io/v2/x", "https://ghcr.io/v2/x"),
            ("//ghcr.io/v2/x", "https://ghcr.io/v2/x"),
            ("@evil/x", "https://ghcr.io/v2/o/app/tags/@evil/x"),
            ("/x#frag", "https://ghcr.io/x"),
        ];
        for (link, want) in cases {
            assert_eq!(resolve(from, link).unwrap(), want, "{link}");
            assert_eq!(resolve_on_origin(from, link).unwrap(), want, "{link}");
        }
        let away = [
            "https://ghcr.io.evil.tld/v2/x",
            "//evil.tld/x",
            "http://ghcr.io/v2/x",
            "https://ghcr.io:8443/v2/x",
        ];
        for link in away {
            let err = resolve_on_origin(from, link).unwrap_err();
            assert!(err.contains("away from https://ghcr.io"), "{link}: {err}");
        }
        for link in [
            "https://ghcr.io@evil.tld/x",
            "//ghcr.io@evil.tld/x",
            "",
            "javascript:alert(1)",
        ] {
            assert!(resolve_on_origin(from, link).is_err(), "{link}");
        }
        assert_eq!(
            resolve(
                "http://127.0.0.1:5001/v2/a/blobs/uploads/",
                "http://127.0.0.1:50011/u"
            )
            .unwrap(),
            "http://127.0.0.1:50011/u"
        );
        assert!(
            resolve_on_origin("http://127.0.0.1:5001/v2/", "http://127.0.0.1:50011/u").is_err()
        );
    }

    #[test]
    fn token_realms() {
        let trusted = vec!["auth.example.net".to_owned()];
        let ok = [
            ("https://ghcr.io", "https://ghcr.io/token"),
            ("https://registry.gitlab.com", "https://gitlab.com/jwt/auth"),
            (
                "https://registry-1.docker.io",
                "https://auth.docker.io/token",
            ),
            (
                "https://registry.example.com",
                "https://auth.example.net/token",
            ),
            ("http://127.0.0.1:5000", "http://127.0.0.1:7002/token"),
            ("http://127.0.0.1:5000", "https://127.0.0.1:7002/token"),
            ("https://a.example.co.uk", "https://auth.example.co.uk/t"),
        ];
        for (registry, realm) in ok {
            assert!(
                check_realm(&origin(registry), realm, &trusted).is_ok(),
                "{registry} {realm}"
            );
        }
        let refused = [
            (
                "https://ghcr.io",
                "https://evil.tld/token",
                "XTASK_TRUSTED_REALMS=evil.tld",
            ),
            ("https://ghcr.io", "http://ghcr.io/token", "plain HTTP"),
            (
                "http://127.0.0.1:5000",
                "http://127.0.0.2:7002/token",
                "plain HTTP",
            ),
            (
                "http://127.0.0.1:5000",
                "https://127.0.0.2:7002/token",
                "not the registry's host",
            ),
            (
                "http://127.0.0.1:5000",
                "http://[::1]@192.0.2.2:7002/token",
                "userinfo",
            ),
            (
                "https://ghcr.io",
                "https://ghcr.io@evil.tld/token",
                "userinfo",
            ),
            (
                "https://ghcr.io",
                "https://ghcr.io.evil.tld/token",
                "not the registry's host",
            ),
            (
                "https://a.github.io",
                "https://evil.github.io/token",
                "not the registry's host",
            ),
            (
                "https://a.example.co.uk",
                "https://evil.co.uk/token",
                "not the registry's host",
            ),
            ("https://ghcr.io", "/token", "absolute"),
        ];
        for (registry, realm, why) in refused {
            let err = check_realm(&origin(registry), realm, &trusted).unwrap_err();
            assert!(err.contains(why), "{registry} {realm}: {err}");
        }
    }

    #[test]
    fn registrable_domains() {
        let cases = [
            ("ghcr.io", Some("ghcr.io")),
            ("registry.gitlab.com", Some("gitlab.com")),
            ("x.y.example.co.uk", Some("example.co.uk")),
            ("co.uk", None),
            ("me.github.io", Some("me.github.io")),
            ("localhost", None),
            ("127.0.0.1", None),
            ("[::1]", None),
        ];
        for (host, want) in cases {
            assert_eq!(registrable_domain(host), want, "{host}");
        }
        assert!(
            is_loopback_host("[::1]")
                && is_loopback_host("127.0.0.2")
                && is_loopback_host("LOCALHOST")
        );
        assert!(!is_loopback_host("10.0.0.1") && !is_loopback_host("localhost.evil"));
    }
}
