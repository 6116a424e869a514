//! Where a registry's credentials come from: per-target environment variables first (CI), then the standard auth
//! files a developer's `podman login` / `docker login` wrote, including docker credential helpers.
//!
//! The environment is read once, at the edge, into an [`Env`] snapshot; everything below takes it as a value so
//! the lookup rules are testable without touching the process environment. Secret values never reach argv,
//! logs or errors: `Debug` of [`Credentials`] prints `<redacted>`, and errors name variables and files only.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use serde::Deserialize;
use xshell::{cmd, Shell};

use super::reference::{Reference, DOCKER_HUB};
use crate::exit;

/// A username and its password or token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub secret: String,
    /// The secret is an identity token (Docker's OAuth2 refresh token, `identitytoken` in an auth file, or a
    /// helper's answer with the user `<token>`): it is exchanged at the token realm, never sent as Basic.
    pub identity_token: bool,
}

impl Credentials {
    pub fn new(username: impl Into<String>, secret: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            secret: secret.into(),
            identity_token: false,
        }
    }

    /// An identity token (the user name is informative only).
    pub fn identity(username: impl Into<String>, token: impl Into<String>) -> Credentials {
        Credentials {
            identity_token: true,
            ..Credentials::new(username, token)
        }
    }

    /// The value of an `Authorization: Basic …` header.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &"<redacted>")
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The environment variables that carry one registry's credentials; the first set one of each list wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvNames {
    pub username: &'static [&'static str],
    pub secret: &'static [&'static str],
}

impl fmt::Display for EnvNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |names: &[&str]| match names {
            [one] => one.to_string(),
            [first, rest @ ..] => format!("{first} (or {})", rest.join(", ")),
            [] => String::new(),
        };
        write!(f, "{} and {}", list(self.username), list(self.secret))
    }
}

/// The variables that hold credentials for `registry` (as written in the target: `ghcr.io`, `docker.io`,
/// `127.0.0.1:5000`).
pub fn required_env(registry: &str) -> EnvNames {
    match registry {
        "ghcr.io" => EnvNames {
            username: &["GHCR_USERNAME", "GITHUB_ACTOR"],
            secret: &["GHCR_TOKEN", "GITHUB_TOKEN"],
        },
        DOCKER_HUB => EnvNames {
            username: &["DOCKERHUB_USERNAME"],
            secret: &["DOCKERHUB_TOKEN"],
        },
        _ => EnvNames {
            username: &["REGISTRY_USERNAME"],
            secret: &["REGISTRY_PASSWORD"],
        },
    }
}

/// Every variable the lookup reads besides the credential variables themselves.
const LOCATION_VARS: &[&str] = &[
    "REGISTRY_AUTH_FILE",
    "XDG_RUNTIME_DIR",
    "HOME",
    "DOCKER_CONFIG",
];

/// Variables that hold secrets: read into the session's [`Env`] and then removed from the process, so no child
/// (podman, git, a credential helper, cargo) ever inherits them. The runner's own tokens are removed too: nothing
/// the xtask runs needs them.
pub const SECRET_VARS: &[&str] = &[
    "GHCR_TOKEN",
    "GITHUB_TOKEN",
    "DOCKERHUB_TOKEN",
    "REGISTRY_PASSWORD",
    "ACTIONS_RUNTIME_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
];

/// Removes [`SECRET_VARS`] from this process's environment, after the session took its snapshot.
pub fn remove_secrets_from_environment() {
    for name in SECRET_VARS {
        // Called from main before any thread starts, so nothing reads the environment concurrently.
        std::env::remove_var(name);
    }
}

/// A snapshot of the variables credential lookup depends on, taken once at the edge.
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.vars.keys()).finish()
    }
}

impl Env {
    /// Reads the credential and auth-file variables of the running process.
    pub fn from_process() -> Env {
        let names = ["ghcr.io", DOCKER_HUB, "other"]
            .into_iter()
            .flat_map(|r| {
                let n = required_env(r);
                n.username.iter().chain(n.secret.iter()).copied()
            })
            .chain(LOCATION_VARS.iter().copied());
        Env::from_pairs(names.filter_map(|name| Some((name, std::env::var(name).ok()?))))
    }

    /// An environment made of exactly these pairs (tests, or a caller that already read them).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Env {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// A set, non-empty variable (CI passes unset secrets as empty strings).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn first(&self, names: &'static [&'static str]) -> Option<(&'static str, &str)> {
        names.iter().find_map(|name| Some((*name, self.get(name)?)))
    }

    /// The auth files to consult, in order: REGISTRY_AUTH_FILE, ${XDG_RUNTIME_DIR}/containers/auth.json,
    /// ~/.config/containers/auth.json, then docker's config.json ($DOCKER_CONFIG or ~/.docker).
    pub fn auth_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        if let Some(file) = self.get("REGISTRY_AUTH_FILE") {
            files.push(PathBuf::from(file));
        }
        if let Some(dir) = self.get("XDG_RUNTIME_DIR") {
            files.push(Path::new(dir).join("containers/auth.json"));
        }
        if let Some(home) = self.get("HOME") {
            files.push(Path::new(home).join(".config/containers/auth.json"));
        }
        match (self.get("DOCKER_CONFIG"), self.get("HOME")) {
            (Some(dir), _) => files.push(Path::new(dir).join("config.json")),
            (None, Some(home)) => files.push(Path::new(home).join(".docker/config.json")),
            (None, None) => {}
        }
        files
    }
}

/// Where credentials were found (printed to say which login is used; never the values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Env {
        username: &'static str,
        secret: &'static str,
    },
    File(PathBuf),
    Helper {
        helper: String,
        file: PathBuf,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Env { username, secret } => write!(f, "environment ({username}, {secret})"),
            Source::File(path) => write!(f, "auth file {}", path.display()),
            Source::Helper { helper, file } => write!(
                f,
                "credential helper docker-credential-{helper} (configured in {})",
                file.display()
            ),
        }
    }
}

/// Credentials and where they came from.
#[derive(Clone, Debug)]
pub struct Found {
    pub credentials: Credentials,
    pub source: Source,
}

/// Where `registry`'s credentials would come from, without running a credential helper: the presence check
/// the meta stage makes before any build. `repository` lets podman's per-repository auth.json keys match.
pub fn source_of(registry: &str, repository: &str, env: &Env) -> anyhow::Result<Option<Source>> {
    let names = required_env(registry);
    if let (Some((username, _)), Some((secret, _))) =
        (env.first(names.username), env.first(names.secret))
    {
        return Ok(Some(Source::Env { username, secret }));
    }
    for file in env.auth_files() {
        match read_auth_file(&file, registry, repository)? {
            Some(FileEntry::Basic(_)) => return Ok(Some(Source::File(file))),
            Some(FileEntry::Helper(helper)) => return Ok(Some(Source::Helper { helper, file })),
            None => {}
        }
    }
    Ok(None)
}

/// Credentials looked up once per process: per registry and repository (podman's auth files may scope a login to
/// a repository), and a credential helper's answer once per helper and registry host, however many stages ask.
#[derive(Default)]
pub struct Cache {
    found: HashMap<(String, String), Option<Found>>,
    helpers: HashMap<(String, String), Option<Credentials>>,
}

impl Cache {
    /// [`lookup_with`] through the cache, running helpers for real; the first lookup of a target says on stdout where its credentials came
    /// from (never what they are).
    pub fn lookup(
        &mut self,
        sh: &Shell,
        target: &Reference,
        env: &Env,
    ) -> anyhow::Result<Option<Found>> {
        let key = (target.registry.clone(), target.repository.clone());
        if let Some(found) = self.found.get(&key) {
            return Ok(found.clone());
        }
        let helpers = &mut self.helpers;
        let found = lookup_with(
            &target.registry,
            &target.repository,
            env,
            &mut |helper, registry| {
                let key = (helper.to_owned(), registry.to_owned());
                if let Some(answer) = helpers.get(&key) {
                    return Ok(answer.clone());
                }
                let answer = run_helper(sh, helper, registry)?;
                helpers.insert(key, answer.clone());
                Ok(answer)
            },
        )?;
        if let Some(found) = &found {
            println!("  {}: credentials from {}", target.registry, found.source);
        }
        self.found.insert(key, found.clone());
        Ok(found)
    }
}

type Helper<'a> = dyn FnMut(&str, &str) -> anyhow::Result<Option<Credentials>> + 'a;

fn lookup_with(
    registry: &str,
    repository: &str,
    env: &Env,
    run_helper: &mut Helper,
) -> anyhow::Result<Option<Found>> {
    let names = required_env(registry);
    if let (Some((username_var, username)), Some((secret_var, secret))) =
        (env.first(names.username), env.first(names.secret))
    {
        return Ok(Some(Found {
            credentials: Credentials::new(username, secret),
            source: Source::Env {
                username: username_var,
                secret: secret_var,
            },
        }));
    }
    for file in env.auth_files() {
        match read_auth_file(&file, registry, repository)? {
            Some(FileEntry::Basic(credentials)) => {
                return Ok(Some(Found {
                    credentials,
                    source: Source::File(file),
                }))
            }
            Some(FileEntry::Helper(helper)) => {
                if let Some(credentials) = run_helper(&helper, registry)? {
                    return Ok(Some(Found {
                        credentials,
                        source: Source::Helper { helper, file },
                    }));
                }
            }
            None => {}
        }
    }
    Ok(None)
}

/// What an auth file says about one registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileEntry {
    Basic(Credentials),
    /// Ask `docker-credential-<name>`.
    Helper(String),
}

fn read_auth_file(
    path: &Path,
    registry: &str,
    repository: &str,
) -> anyhow::Result<Option<FileEntry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(err).with_context(|| format!("read auth file {}", path.display()));
        }
    };
    parse_auth_file(&text, registry, repository).map_err(|why| {
        exit::invalid(format!(
            "auth file {} is unusable: {why}; fix it or log in again (podman login {registry})",
            path.display()
        ))
    })
}

#[derive(Deserialize, Default)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

/// Reads one podman auth.json or docker config.json (same shape) and picks `registry`'s entry. Podman allows
/// keys scoped to a namespace or repository (`host/owner/name`); the most specific matching key wins. Docker's
/// keys may be URLs (`https://index.docker.io/v1/`), which stand for their host.
pub fn parse_auth_file(
    text: &str,
    registry: &str,
    repository: &str,
) -> Result<Option<FileEntry>, String> {
    // serde's message quotes the value it could not use, and in an auth file that value may be the credentials
    // themselves (`"host": "<base64 of user:password>"`): say where and what kind of mistake, never the value.
    let file: AuthFile = serde_json::from_str(text).map_err(|err| {
        let what = match err.classify() {
            serde_json::error::Category::Data => "a value of the wrong type or shape",
            serde_json::error::Category::Eof => "it ends too early",
            _ => "a syntax error",
        };
        format!(
            "bad JSON ({what} at line {}, column {})",
            err.line(),
            err.column()
        )
    })?;

    if let Some((_, helper)) = best_key(file.cred_helpers.iter(), registry, repository) {
        return Ok(Some(FileEntry::Helper(valid_helper(helper)?)));
    }
    if let Some((key, entry)) = best_key(file.auths.iter(), registry, repository) {
        if let Some(token) = entry.identity_token.as_deref().filter(|t| !t.is_empty()) {
            // `auth` then holds only the user name (`user:`), for display.
            let username = entry
                .auth
                .as_deref()
                .and_then(|a| {
                    base64::engine::general_purpose::STANDARD
                        .decode(a.trim())
                        .ok()
                })
                .and_then(|d| String::from_utf8(d).ok())
                .and_then(|d| d.split_once(':').map(|(u, _)| u.to_owned()))
                .or_else(|| entry.username.clone())
                .unwrap_or_default();
            return Ok(Some(FileEntry::Basic(Credentials::identity(
                username, token,
            ))));
        }
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| format!("the \"auth\" of {key:?} is not valid base64"))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| format!("the \"auth\" of {key:?} is not UTF-8"))?;
            let (username, secret) = decoded
                .split_once(':')
                .ok_or_else(|| format!("the \"auth\" of {key:?} is not base64 of user:password"))?;
            return Ok(Some(FileEntry::Basic(Credentials::new(username, secret))));
        }
        if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
            return Ok(Some(FileEntry::Basic(Credentials::new(
                username.as_str(),
                password.as_str(),
            ))));
        }
        // An empty entry is what `docker login` leaves when a credsStore holds the secret.
    }
    match &file.creds_store {
        Some(store) if !store.is_empty() => Ok(Some(FileEntry::Helper(valid_helper(store)?))),
        _ => Ok(None),
    }
}

fn valid_helper(name: &str) -> Result<String, String> {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
    {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "credential helper name {name:?} is not a plain name"
        ))
    }
}

/// The registry and path a key stands for: `https://index.docker.io/v1/` -> (`docker.io`, ``),
/// `quay.io/owner` -> (`quay.io`, `owner`).
fn normalize_key(key: &str) -> (String, String) {
    let (had_scheme, rest) = match key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
    {
        Some(rest) => (true, rest),
        None => (false, key),
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = host.to_ascii_lowercase();
    let host = match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_owned()
        }
        _ => host,
    };
    // A URL's path is an API prefix (`/v1/`), never a repository.
    let path = if had_scheme {
        String::new()
    } else {
        path.trim_end_matches('/').to_owned()
    };
    (host, path)
}

fn best_key<'a, V>(
    entries: impl Iterator<Item = (&'a String, &'a V)>,
    registry: &str,
    repository: &str,
) -> Option<(&'a String, &'a V)> {
    entries
        .filter_map(|(key, value)| {
            let (host, path) = normalize_key(key);
            if host != registry {
                return None;
            }
            let matches = path.is_empty()
                || repository == path
                || repository
                    .strip_prefix(path.as_str())
                    .is_some_and(|rest| rest.starts_with('/'));
            matches.then_some((path.len(), key, value))
        })
        .max_by_key(|(specificity, _, _)| *specificity)
        .map(|(_, key, value)| (key, value))
}

/// Asks `docker-credential-<helper> get` (the server URL on stdin, JSON on stdout). `None` when the helper has
/// nothing for this registry.
fn run_helper(sh: &Shell, helper: &str, registry: &str) -> anyhow::Result<Option<Credentials>> {
    let program = format!("docker-credential-{helper}");
    let server = if registry == DOCKER_HUB {
        "https://index.docker.io/v1/".to_owned()
    } else {
        registry.to_owned()
    };
    let output = cmd!(sh, "{program} get")
        .stdin(server.as_bytes())
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("run {program} to get the credentials for {registry}"))?;
    if !output.status.success() {
        let stdout = String::from_utf8_lossy(&output.stdout);
        if stdout.contains("credentials not found") || output.stdout.is_empty() {
            return Ok(None);
        }
        anyhow::bail!(
            "{program} get failed for {registry} ({}); check that helper's login",
            output.status
        );
    }
    parse_helper_output(&output.stdout)
        .map(Some)
        .map_err(|why| anyhow::anyhow!("{program} answered for {registry} with {why}"))
}

fn parse_helper_output(stdout: &[u8]) -> Result<Credentials, String> {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let answer: Answer = serde_json::from_slice(stdout)
        .map_err(|_| "output that is not {\"Username\", \"Secret\"} JSON".to_owned())?;
    // Docker's helpers store an identity token under the user name `<token>`.
    if answer.username == "<token>" {
        return Ok(Credentials::identity(answer.username, answer.secret));
    }
    Ok(Credentials::new(answer.username, answer.secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lookup with no cache in between.
    fn lookup(
        sh: &Shell,
        registry: &str,
        repository: &str,
        env: &Env,
    ) -> anyhow::Result<Option<Found>> {
        lookup_with(registry, repository, env, &mut |helper, registry| {
            run_helper(sh, helper, registry)
        })
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn env_names_per_registry() {
        let cases = [
            (
                "ghcr.io",
                "GHCR_USERNAME (or GITHUB_ACTOR) and GHCR_TOKEN (or GITHUB_TOKEN)",
            ),
            ("docker.io", "DOCKERHUB_USERNAME and DOCKERHUB_TOKEN"),
            ("127.0.0.1:5000", "REGISTRY_USERNAME and REGISTRY_PASSWORD"),
            ("quay.io", "REGISTRY_USERNAME and REGISTRY_PASSWORD"),
        ];
        for (registry, want) in cases {
            assert_eq!(required_env(registry).to_string(), want, "{registry}");
        }
    }

    #[test]
    fn env_credentials_take_precedence_and_fall_back() {
        let sh = Shell::new().unwrap();
        type Vars = Vec<(&'static str, &'static str)>;
        type Want = Option<(&'static str, &'static str, &'static str, &'static str)>;
        let cases: [(&str, Vars, Want); 6] = [
            (
                "ghcr.io",
                vec![
                    ("GHCR_USERNAME", "u"),
                    ("GHCR_TOKEN", "t"),
                    ("GITHUB_TOKEN", "g"),
                ],
                Some(("u", "t", "GHCR_USERNAME", "GHCR_TOKEN")),
            ),
            (
                "ghcr.io",
                vec![("GITHUB_ACTOR", "actor"), ("GITHUB_TOKEN", "g")],
                Some(("actor", "g", "GITHUB_ACTOR", "GITHUB_TOKEN")),
            ),
            (
                "ghcr.io",
                vec![
                    ("GHCR_USERNAME", ""),
                    ("GITHUB_ACTOR", "a"),
                    ("GHCR_TOKEN", "t"),
                ],
                Some(("a", "t", "GITHUB_ACTOR", "GHCR_TOKEN")),
            ),
            ("ghcr.io", vec![("GITHUB_ACTOR", "a")], None),
            (
                "docker.io",
                vec![("DOCKERHUB_USERNAME", "d"), ("DOCKERHUB_TOKEN", "x")],
                Some(("d", "x", "DOCKERHUB_USERNAME", "DOCKERHUB_TOKEN")),
            ),
            (
                "127.0.0.1:5000",
                vec![("DOCKERHUB_USERNAME", "d"), ("DOCKERHUB_TOKEN", "x")],
                None,
            ),
        ];
        for (registry, vars, want) in cases {
            let env = Env::from_pairs(vars.clone());
            let found = lookup(&sh, registry, "o/n", &env).unwrap();
            let got = found.as_ref().map(|f| match &f.source {
                Source::Env { username, secret } => (
                    f.credentials.username.as_str(),
                    f.credentials.secret.as_str(),
                    *username,
                    *secret,
                ),
                other => panic!("{other}"),
            });
            assert_eq!(got, want, "{registry} {vars:?}");
            assert_eq!(
                source_of(registry, "o/n", &env).unwrap().is_some(),
                want.is_some()
            );
        }
    }

    #[test]
    fn auth_files_in_podman_and_docker_formats() {
        let user_pass = b64("alice:s3cr:et");
        let podman = format!(
            r#"{{"auths": {{"ghcr.io": {{"auth": "{user_pass}"}},
                "quay.io/team": {{"auth": "{}"}},
                "quay.io/team/app": {{"auth": "{}"}},
                "quay.io": {{"auth": "{}"}}}}}}"#,
            b64("team:1"),
            b64("app:2"),
            b64("any:3")
        );
        let docker = format!(
            r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{}"}},
                "registry.lan:5000": {{}},
                "http://old.lan/v1/": {{"username": "u", "password": "p"}}}},
              "credHelpers": {{"gcr.io": "gcloud"}},
              "credsStore": "desktop"}}"#,
            b64("bob:hub")
        );
        let basic = |u: &str, p: &str| Some(FileEntry::Basic(Credentials::new(u, p)));
        let helper = |h: &str| Some(FileEntry::Helper(h.into()));
        let cases = [
            (&podman, "ghcr.io", "o/n", basic("alice", "s3cr:et")),
            (&podman, "quay.io", "team/app", basic("app", "2")),
            (&podman, "quay.io", "team/other", basic("team", "1")),
            (&podman, "quay.io", "teammate/x", basic("any", "3")),
            (&podman, "docker.io", "o/n", None),
            (&docker, "docker.io", "library/alpine", basic("bob", "hub")),
            (&docker, "old.lan", "a/b", basic("u", "p")),
            (&docker, "gcr.io", "p/i", helper("gcloud")),
            (&docker, "registry.lan:5000", "a/b", helper("desktop")),
            (&docker, "ghcr.io", "o/n", helper("desktop")),
        ];
        for (text, registry, repository, want) in cases {
            assert_eq!(
                parse_auth_file(text, registry, repository).unwrap(),
                want,
                "{registry}/{repository}"
            );
        }
    }

    #[test]
    fn broken_auth_files_are_reported() {
        let cases = [
            ("{not json", "bad JSON (a syntax error at line 1, column 2)"),
            (
                r#"{"auths": []}"#,
                "bad JSON (a value of the wrong type or shape at line 1, column 10)",
            ),
            (
                r#"{"auths": {"ghcr.io": "dTpzZWNyZXQ="}}"#,
                "bad JSON (a value of the wrong type or shape at line 1, column 36)",
            ),
            (
                r#"{"auths": {"#,
                "bad JSON (it ends too early at line 1, column 11)",
            ),
            (
                r#"{"auths": {"ghcr.io": {"auth": "%%%"}}}"#,
                "not valid base64",
            ),
            (
                &format!(
                    r#"{{"auths": {{"ghcr.io": {{"auth": "{}"}}}}}}"#,
                    b64("nocolon")
                ),
                "user:password",
            ),
            (r#"{"credHelpers": {"ghcr.io": "../evil"}}"#, "plain name"),
        ];
        for (text, mention) in cases {
            let err = parse_auth_file(text, "ghcr.io", "o/n").unwrap_err();
            assert!(err.contains(mention), "{text}: {err}");
            assert!(!err.contains("nocolon"), "secret leaked: {err}");
            assert!(!err.contains("dTpzZWNyZXQ="), "secret leaked: {err}");
        }
    }

    #[test]
    fn files_are_read_in_order_and_bad_ones_exit_2() {
        let dir = std::env::temp_dir().join(format!("xtask-cred-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("home/.docker")).unwrap();
        std::fs::create_dir_all(dir.join("run/containers")).unwrap();
        let first = dir.join("first.json");
        std::fs::write(&first, r#"{"auths": {}}"#).unwrap();
        std::fs::write(
            dir.join("run/containers/auth.json"),
            format!(
                r#"{{"auths": {{"127.0.0.1:5000": {{"auth": "{}"}}}}}}"#,
                b64("run:1")
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("home/.docker/config.json"),
            format!(r#"{{"auths": {{"127.0.0.1:5000": {{"auth": "{}"}}, "ghcr.io": {{"auth": "{}"}}}}}}"#, b64("dock:2"), b64("gh:3")),
        )
        .unwrap();
        let env = Env::from_pairs([
            ("REGISTRY_AUTH_FILE", first.to_str().unwrap()),
            ("XDG_RUNTIME_DIR", dir.join("run").to_str().unwrap()),
            ("HOME", dir.join("home").to_str().unwrap()),
        ]);
        let sh = Shell::new().unwrap();
        let local = lookup(&sh, "127.0.0.1:5000", "a/b", &env).unwrap().unwrap();
        assert_eq!(local.credentials, Credentials::new("run", "1"));
        assert_eq!(
            local.source,
            Source::File(dir.join("run/containers/auth.json"))
        );
        let gh = lookup(&sh, "ghcr.io", "a/b", &env).unwrap().unwrap();
        assert_eq!(gh.credentials, Credentials::new("gh", "3"));
        assert!(lookup(&sh, "quay.io", "a/b", &env).unwrap().is_none());

        std::fs::write(&first, "{oops").unwrap();
        let err = lookup(&sh, "ghcr.io", "a/b", &env).unwrap_err();
        assert_eq!(exit::code_of(&err), 2);
        assert!(err.to_string().contains("first.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_is_redacted() {
        let c = Credentials::new("alice", "hunter2");
        let shown = format!("{c:?}");
        assert!(
            shown.contains("<redacted>") && !shown.contains("hunter2") && !shown.contains("alice")
        );
        let env = Env::from_pairs([("REGISTRY_PASSWORD", "hunter2")]);
        assert!(!format!("{env:?}").contains("hunter2"));
    }

    #[test]
    fn credential_helpers_get_the_server_on_stdin() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("xtask-helper-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Answers only for Docker Hub's legacy key, as docker-credential-* helpers are asked.
        let script = "#!/bin/sh\nread server\nif [ \"$1 $server\" = \"get https://index.docker.io/v1/\" ]; then\n  echo '{\"ServerURL\":\"x\",\"Username\":\"hub\",\"Secret\":\"tok\"}'\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi\n";
        let helper = dir.join("docker-credential-xtasktest");
        std::fs::write(&helper, script).unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = dir.join("config.json");
        std::fs::write(&config, r#"{"credsStore": "xtasktest"}"#).unwrap();
        let env = Env::from_pairs([("REGISTRY_AUTH_FILE", config.to_str().unwrap())]);
        let sh = Shell::new().unwrap();
        let path = format!(
            "{}:{}",
            dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        sh.set_var("PATH", path);
        let hub = lookup(&sh, "docker.io", "u/n", &env).unwrap().unwrap();
        assert_eq!(hub.credentials, Credentials::new("hub", "tok"));
        assert!(matches!(hub.source, Source::Helper { ref helper, .. } if helper == "xtasktest"));
        assert!(lookup(&sh, "quay.io", "u/n", &env).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn helper_output() {
        let ok = parse_helper_output(br#"{"ServerURL":"ghcr.io","Username":"u","Secret":"s"}"#);
        assert_eq!(ok.unwrap(), Credentials::new("u", "s"));
        assert!(parse_helper_output(b"nope").is_err());
    }
}
