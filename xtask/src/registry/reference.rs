//! Target repository references (`ghcr.io/owner/name`, `docker.io/user/name`, `127.0.0.1:5000/team/app`):
//! which registry, which API host, which repository, and whether plain HTTP is allowed.
//!
//! A target is a repository, never a tag: the push stage creates no tag, so `:tag` or `@digest` is refused.

use std::fmt;

use crate::exit;

/// Docker Hub as users write it; its API lives on another host.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's registry API host.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed target repository.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// The registry as users name it and credentials are keyed: `ghcr.io`, `docker.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// The host (and port) the distribution API answers on: `registry-1.docker.io` for Docker Hub.
    pub api_host: String,
    /// The repository inside the registry: `owner/name`, `library/alpine`.
    pub repository: String,
}

impl Reference {
    /// Parses a target repository; errors exit 2 and say what a valid one looks like.
    pub fn parse(input: &str) -> anyhow::Result<Reference> {
        parse(input).map_err(|why| {
            exit::invalid(format!(
                "invalid target repository {input:?}: {why} \
                 (expected REGISTRY/NAMESPACE/NAME, like ghcr.io/owner/name, docker.io/user/name or 127.0.0.1:5000/team/app)"
            ))
        })
    }

    /// `https://ghcr.io`, or `http://…` for loopback hosts and hosts listed as insecure.
    pub fn base_url(&self, insecure_registries: &[String]) -> String {
        let scheme = if allows_plain_http(&self.api_host, &self.registry, insecure_registries) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}", self.api_host)
    }
}

/// Parses the target repositories of a run (`--to` or the configured ones), dropping duplicates; at least one is
/// needed.
pub fn parse_targets(targets: &[String]) -> anyhow::Result<Vec<Reference>> {
    if targets.is_empty() {
        return Err(exit::invalid(
            "no target repository; pass --to REF (like ghcr.io/owner/name) or set targets in \
             [package.metadata.image] of Cargo.toml",
        ));
    }
    let mut out: Vec<Reference> = Vec::new();
    for target in targets {
        let reference = Reference::parse(target)?;
        if !out.contains(&reference) {
            out.push(reference);
        }
    }
    Ok(out)
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

impl std::str::FromStr for Reference {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Reference> {
        Reference::parse(s)
    }
}

/// Plain HTTP only where nothing can listen in: loopback, or a host the user named with `--insecure-registry`
/// (matched with or without its port).
pub fn allows_plain_http(api_host: &str, registry: &str, insecure_registries: &[String]) -> bool {
    let host_only = strip_port(api_host);
    is_loopback(host_only)
        || insecure_registries.iter().any(|allowed| {
            let allowed = allowed.trim().trim_end_matches('/');
            let allowed = allowed
                .strip_prefix("http://")
                .or_else(|| allowed.strip_prefix("https://"))
                .unwrap_or(allowed);
            allowed == api_host || allowed == registry || allowed == host_only
        })
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn parse(input: &str) -> Result<Reference, String> {
    if input.is_empty() {
        return Err("it is empty".into());
    }
    if input.trim() != input || input.chars().any(char::is_whitespace) {
        return Err("it contains whitespace".into());
    }
    if let Some(scheme) = ["http://", "https://", "docker://"]
        .iter()
        .find(|s| input.starts_with(**s))
    {
        return Err(format!("drop the {scheme} prefix"));
    }
    if input.contains('@') {
        return Err("a target is a repository, not a digest reference; drop the @sha256:…".into());
    }
    let (first, rest) = match input.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (Some(first), rest)
        }
        _ => (None, input),
    };
    let registry = match first {
        Some(host) => {
            validate_host(host)?;
            match host {
                "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
                    DOCKER_HUB.to_owned()
                }
                _ => host.to_ascii_lowercase(),
            }
        }
        // Like docker and podman's short names, a bare `user/name` means Docker Hub.
        None => DOCKER_HUB.to_owned(),
    };
    if rest.contains(':') {
        return Err(
            "a target is a repository without a tag; the push creates no tag, the manifest stage sets it".into(),
        );
    }
    let repository = if registry == DOCKER_HUB && !rest.contains('/') {
        format!("library/{rest}")
    } else {
        rest.to_owned()
    };
    validate_repository(&repository)?;
    let api_host = if registry == DOCKER_HUB {
        DOCKER_HUB_API.to_owned()
    } else {
        registry.clone()
    };
    Ok(Reference {
        registry,
        api_host,
        repository,
    })
}

fn validate_host(host: &str) -> Result<(), String> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("registry host {host:?} has an unclosed ["))?;
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("registry host {host:?} is not an IPv6 address"));
        }
        (None, after.strip_prefix(':'))
    } else {
        match host.split_once(':') {
            Some((name, port)) => (Some(name), Some(port)),
            None => (Some(host), None),
        }
    };
    if let Some(name) = name {
        let labels_ok = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !labels_ok {
            return Err(format!("registry host {name:?} is not a valid host name"));
        }
    }
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("registry port {port:?} is not a port number"));
        }
    }
    Ok(())
}

/// The distribution spec's repository name grammar: lowercase path components joined by `/`, each
/// `[a-z0-9]+` separated by `.`, `_`, `__` or runs of `-`.
fn validate_repository(repository: &str) -> Result<(), String> {
    if repository.is_empty() {
        return Err("the repository name is missing".into());
    }
    if repository.len() > 255 {
        return Err("the repository name is longer than 255 characters".into());
    }
    if repository.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("repository {repository:?} must be lowercase"));
    }
    for component in repository.split('/') {
        if !component_ok(component) {
            return Err(format!(
                "path component {component:?} of {repository:?} must be lowercase letters and digits, \
                 separated by '.', '_', '__' or '-'"
            ));
        }
    }
    Ok(())
}

fn component_ok(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let cases = [
            ("ghcr.io/owner/name", "ghcr.io", "ghcr.io", "owner/name"),
            (
                "docker.io/user/name",
                "docker.io",
                "registry-1.docker.io",
                "user/name",
            ),
            (
                "docker.io/alpine",
                "docker.io",
                "registry-1.docker.io",
                "library/alpine",
            ),
            (
                "index.docker.io/user/name",
                "docker.io",
                "registry-1.docker.io",
                "user/name",
            ),
            (
                "user/name",
                "docker.io",
                "registry-1.docker.io",
                "user/name",
            ),
            (
                "127.0.0.1:5000/team/app",
                "127.0.0.1:5000",
                "127.0.0.1:5000",
                "team/app",
            ),
            ("localhost/team/app", "localhost", "localhost", "team/app"),
            (
                "localhost:5000/a/b/c",
                "localhost:5000",
                "localhost:5000",
                "a/b/c",
            ),
            (
                "Registry.Example.com/a_b/c__d.e-f--g",
                "registry.example.com",
                "registry.example.com",
                "a_b/c__d.e-f--g",
            ),
            (
                "[::1]:5000/team/app",
                "[::1]:5000",
                "[::1]:5000",
                "team/app",
            ),
        ];
        for (input, registry, api_host, repository) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e:#}"));
            assert_eq!(
                (
                    r.registry.as_str(),
                    r.api_host.as_str(),
                    r.repository.as_str()
                ),
                (registry, api_host, repository),
                "{input}"
            );
        }
    }

    #[test]
    fn refuses_bad_targets_with_exit_2() {
        let cases = [
            ("", "empty"),
            (" ghcr.io/o/n", "whitespace"),
            ("ghcr.io/o/n:latest", "without a tag"),
            ("127.0.0.1:5000/team/app:1.0", "without a tag"),
            ("ghcr.io/o/n@sha256:abc", "digest"),
            ("https://ghcr.io/o/n", "https://"),
            ("docker://ghcr.io/o/n", "docker://"),
            ("ghcr.io/Owner/name", "lowercase"),
            ("ghcr.io/o//n", "path component"),
            ("ghcr.io/o/-n", "path component"),
            ("ghcr.io/o/n.", "path component"),
            ("ghcr.io/o/a___b", "path component"),
            ("ghcr.io/", "missing"),
            ("bad_host.io/o/n", "host name"),
            ("host.io:99999/o/n", "port"),
            ("host.io:0/o/n", "port"),
            ("[zz]:5000/o/n", "IPv6"),
        ];
        for (input, mention) in cases {
            let err = Reference::parse(input).unwrap_err();
            assert_eq!(exit::code_of(&err), 2, "{input}");
            let msg = err.to_string();
            assert!(msg.contains(mention), "{input}: {msg}");
            assert!(msg.contains("ghcr.io/owner/name"), "{input}: {msg}");
        }
    }

    #[test]
    fn plain_http_only_for_loopback_or_named_hosts() {
        let insecure = vec![
            "registry.lan:5000".to_owned(),
            "http://other.lan".to_owned(),
        ];
        let cases = [
            ("127.0.0.1:5000/a/b", "http"),
            ("127.9.9.9:5000/a/b", "http"),
            ("localhost:5000/a/b", "http"),
            ("[::1]:5000/a/b", "http"),
            ("registry.lan:5000/a/b", "http"),
            ("registry.lan:5001/a/b", "https"),
            ("other.lan:8080/a/b", "http"),
            ("ghcr.io/a/b", "https"),
            ("docker.io/a/b", "https"),
            ("10.0.0.1:5000/a/b", "https"),
        ];
        for (input, scheme) in cases {
            let r = Reference::parse(input).unwrap();
            let url = r.base_url(&insecure);
            assert_eq!(url, format!("{scheme}://{}", r.api_host), "{input}");
        }
    }
}
