//! The HTTP side of the distribution API on ureq: one [`Registry`] per registry host, holding its agent,
//! credentials and tokens, with the blob, manifest, tag and delete operations the stages need.
//!
//! Every operation goes through the same retry loop (see `retry.rs`) and the same auth step: a request goes out
//! with what we know (nothing, Basic, or a cached Bearer token for its scopes); a 401 teaches the scheme, we
//! authenticate once and resend; a second 401 is final (a wrong password fails at once, it is never retried).
//! ureq runs with `http_status_as_error(false)` so challenges and the registry's error bodies are ours to read.

// A RegistryError is built once per failed request, next to an HTTP round trip: its size does not matter, and
// boxing it would only add noise to every operation.
#![allow(clippy::result_large_err)]

use std::cell::Cell;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use ureq::http;

use super::auth::{self, Scheme, TokenCache};
use super::credentials::{self, Credentials, Found};
use super::error::{parse_error_body, RegistryError};
use super::reference::{self, Reference};
use super::retry::{self, Policy};
use super::Removal;
use crate::oci::{media_type::MANIFEST_ACCEPT, Digest, Manifest};

/// The variable that sets the connect and per-read/write timeout, in milliseconds (tests of hung registries).
pub const TIMEOUT_ENV: &str = "XTASK_HTTP_TIMEOUT_MS";
/// Set to print every registry call (method, URL, status) on stderr.
pub const TRACE_ENV: &str = "XTASK_REGISTRY_TRACE";

/// How to reach registries: which hosts may use plain HTTP, retries and timeouts.
#[derive(Clone, Debug)]
pub struct Options {
    /// Hosts named with `--insecure-registry` (loopback is always allowed plain HTTP).
    pub insecure: Vec<String>,
    pub policy: Policy,
    pub connect_timeout: Duration,
    /// Per read and per write, and for the whole of each answer's head and body: a stalled or trickling
    /// registry fails the attempt instead of hanging the pipeline.
    pub io_timeout: Duration,
    /// Used in "Failed to <purpose> <registry> after 3 attempts": `push to`, `publish to`, `prune`.
    pub purpose: &'static str,
    /// Print every call on stderr.
    pub trace: bool,
    /// Entries per page of tags/list and _catalog (`n=`); the Link header leads to the next page.
    pub page_size: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            insecure: Vec::new(),
            policy: Policy::default(),
            connect_timeout: Duration::from_secs(15),
            io_timeout: Duration::from_secs(120),
            purpose: "push to",
            trace: false,
            page_size: 1000,
        }
    }
}

impl Options {
    /// Defaults, adjusted by XTASK_RETRY_BASE_MS, XTASK_HTTP_TIMEOUT_MS and XTASK_REGISTRY_TRACE (read here, at
    /// the edge).
    pub fn from_env(insecure: Vec<String>) -> Options {
        let mut options = Options {
            insecure,
            policy: Policy::from_env(),
            trace: std::env::var_os(TRACE_ENV).is_some_and(|v| !v.is_empty() && v != "0"),
            ..Options::default()
        };
        if let Some(ms) = std::env::var(TIMEOUT_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            options.connect_timeout = Duration::from_millis(ms);
            options.io_timeout = Duration::from_millis(ms);
        }
        options
    }
}

/// What happened to one blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobOutcome {
    /// The repository already had it.
    Existed,
    /// Linked from another repository of the same registry, nothing sent.
    Mounted,
    /// Sent, this many bytes.
    Uploaded(u64),
}

/// A manifest's identity as HEAD answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestInfo {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// Whether a manifest reference names a digest rather than a tag (a tag cannot hold a colon).
fn is_digest_reference(reference: &str) -> bool {
    reference.contains(':')
}

enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// Streamed from disk, reopened on every attempt.
    File(&'a Path),
}

struct Call<'a> {
    method: &'static str,
    url: String,
    repository: &'a str,
    operation: String,
    scopes: Vec<String>,
    headers: Vec<(&'static str, String)>,
    payload: Payload<'a>,
}

struct AuthState {
    scheme: Scheme,
    tokens: TokenCache,
}

/// A client for one registry host.
pub struct Registry {
    /// As users and credentials name it: `ghcr.io`, `docker.io`, `127.0.0.1:5000`.
    name: String,
    /// `https://ghcr.io`, `http://127.0.0.1:5000`
    base: String,
    agent: ureq::Agent,
    credentials: Option<Credentials>,
    /// What to tell the user when authentication fails.
    credentials_hint: String,
    options: Options,
    state: Mutex<AuthState>,
    requests: AtomicU64,
    purpose: Cell<&'static str>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("name", &self.name)
            .field("base", &self.base)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A client for `target`'s registry; `found` are its credentials (None: anonymous).
    pub fn new(target: &Reference, found: Option<Found>, options: Options) -> Registry {
        let credentials_hint = match &found {
            Some(found) => format!(
                "the credentials from {} were rejected; check them, or that they may push to this repository",
                found.source
            ),
            None => format!(
                "no credentials for {}; set {} or run `podman login {}`",
                target.registry,
                credentials::required_env(&target.registry),
                target.registry
            ),
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(options.connect_timeout))
            .timeout_per_read(Some(options.io_timeout))
            .timeout_per_write(Some(options.io_timeout))
            // A per-read timeout restarts with every byte: a registry that trickles its answer (a byte now and
            // then) would hold the pipeline forever. The answers are small, so each whole part gets one budget.
            .timeout_send_request(Some(options.io_timeout))
            .timeout_recv_response(Some(options.io_timeout))
            .timeout_recv_body(Some(options.io_timeout))
            .user_agent(concat!("xtask-image/", env!("CARGO_PKG_VERSION")))
            // Only blob GETs redirect (to storage on another host); the default policy strips Authorization there.
            .max_redirects(5)
            .build();
        let options_purpose = options.purpose;
        Registry {
            name: target.registry.clone(),
            base: target.base_url(&options.insecure),
            agent: config.new_agent(),
            credentials: found.map(|f| f.credentials),
            credentials_hint,
            options,
            state: Mutex::new(AuthState {
                scheme: Scheme::Unknown,
                tokens: TokenCache::default(),
            }),
            requests: AtomicU64::new(0),
            purpose: Cell::new(options_purpose),
        }
    }

    /// What a failure says the run was trying to do, from now on (one client serves push, manifest and prune).
    pub fn set_purpose(&self, purpose: &'static str) {
        self.purpose.set(purpose);
    }

    /// HTTP requests sent so far (token requests included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    // ---- blobs ----

    /// HEAD a blob: its size if the repository has it.
    pub fn blob_exists(&self, repository: &str, digest: &Digest) -> anyhow::Result<Option<u64>> {
        self.with_retries(|_| self.try_blob_exists(repository, digest))
    }

    fn try_blob_exists(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        let call = self.call(
            "HEAD",
            format!("/v2/{repository}/blobs/{digest}"),
            repository,
            format!("HEAD blob {digest}"),
            &["pull"],
        );
        let response = self.send_once(&call)?;
        match response.status().as_u16() {
            200 => Ok(Some(content_length(&response).unwrap_or(0))),
            404 => Ok(None),
            _ => Err(self.status_error(&call, response)),
        }
    }

    /// Puts a blob into `repository` the cheapest way: nothing if it is there, a cross-repository mount from
    /// `mount_from` (same registry) if that has it, else an upload streamed from `path`.
    pub fn push_blob(
        &self,
        repository: &str,
        digest: &Digest,
        path: &Path,
        mount_from: Option<&str>,
    ) -> anyhow::Result<BlobOutcome> {
        if self.blob_exists(repository, digest)?.is_some() {
            return Ok(BlobOutcome::Existed);
        }
        let mut session = None;
        if let Some(from) = mount_from.filter(|from| *from != repository) {
            match self.with_retries(|_| self.try_mount(repository, digest, from))? {
                Mount::Mounted => return Ok(BlobOutcome::Mounted),
                Mount::Session(location) => session = Some(location),
            }
        }
        self.upload_blob(repository, digest, path, session)
            .map(BlobOutcome::Uploaded)
    }

    fn try_mount(
        &self,
        repository: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<Mount, RegistryError> {
        let mut call = self.call(
            "POST",
            format!(
                "/v2/{repository}/blobs/uploads/?mount={}&from={}",
                encode(digest.as_str()),
                encode(from)
            ),
            repository,
            format!("mount blob {digest} from {from}"),
            &["pull", "push"],
        );
        call.scopes.push(auth::repository_scope(from, &["pull"]));
        let response = self.send_once(&call)?;
        match response.status().as_u16() {
            201 => Ok(Mount::Mounted),
            202 => Ok(Mount::Session(self.location(&call, &response)?)),
            _ => Err(self.status_error(&call, response)),
        }
    }

    /// Uploads a blob from a file (POST a session, PUT the bytes with the digest), streaming it so memory stays
    /// flat whatever the layer size. Upload sessions are single-use: after a failed attempt whose outcome is
    /// unknown, HEAD the blob and start over from POST if it is not there. Returns the bytes sent.
    pub fn upload_blob(
        &self,
        repository: &str,
        digest: &Digest,
        path: &Path,
        mut session: Option<String>,
    ) -> anyhow::Result<u64> {
        let size = std::fs::metadata(path)
            .map_err(|err| anyhow::anyhow!("read blob file {}: {err}", path.display()))?
            .len();
        self.with_retries(|attempt| {
            if attempt > 1 && self.try_blob_exists(repository, digest)?.is_some() {
                return Ok(0);
            }
            let location = match session.take() {
                Some(location) => location,
                None => self.start_upload(repository, digest)?,
            };
            let mut call = self.call(
                "PUT",
                String::new(),
                repository,
                format!("upload blob {digest}"),
                &["pull", "push"],
            );
            call.url = with_query(&location, "digest", digest.as_str());
            call.headers
                .push(("content-type", "application/octet-stream".into()));
            call.payload = Payload::File(path);
            let response = self.send_once(&call)?;
            match response.status().as_u16() {
                201 | 204 => {
                    let answered = header(&response, "docker-content-digest");
                    match answered {
                        Some(answered) if answered != digest.as_str() => {
                            Err(self
                                .invalid(&call, format!("the registry stored it as {answered}")))
                        }
                        _ => Ok(size),
                    }
                }
                _ => Err(self.status_error(&call, response)),
            }
        })
    }

    fn start_upload(&self, repository: &str, digest: &Digest) -> Result<String, RegistryError> {
        let call = self.call(
            "POST",
            format!("/v2/{repository}/blobs/uploads/"),
            repository,
            format!("start upload of blob {digest}"),
            &["pull", "push"],
        );
        let response = self.send_once(&call)?;
        match response.status().as_u16() {
            202 => self.location(&call, &response),
            _ => Err(self.status_error(&call, response)),
        }
    }

    /// GET a blob (a config: small) and check its digest; `None` when the repository does not have it.
    pub fn get_blob(&self, repository: &str, digest: &Digest) -> anyhow::Result<Option<Vec<u8>>> {
        self.with_retries(|_| {
            let call = self.call(
                "GET",
                format!("/v2/{repository}/blobs/{digest}"),
                repository,
                format!("GET blob {digest}"),
                &["pull"],
            );
            let response = self.send_once(&call)?;
            match response.status().as_u16() {
                200 => {}
                404 => return Ok(None),
                _ => return Err(self.status_error(&call, response)),
            }
            let bytes = self.read_body(&call, response, 64 << 20)?;
            if Digest::of(&bytes) != *digest {
                return Err(
                    self.invalid(&call, "the bytes received do not match the digest".into())
                );
            }
            Ok(Some(bytes))
        })
    }

    // ---- manifests ----

    /// PUT a manifest by digest or tag, with Content-Type = its media type. The same bytes are sent on every
    /// attempt; the digest the registry answers (Docker-Content-Digest) must be theirs. Returns the digest.
    pub fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        manifest: &Manifest,
    ) -> anyhow::Result<Digest> {
        let digest = &manifest.digest;
        if is_digest_reference(reference) && reference != digest.as_str() {
            anyhow::bail!(
                "manifest for {}/{repository} is {digest}, not {reference} as asked; this is a bug in the caller",
                self.name
            );
        }
        self.with_retries(|_| {
            let mut call = self.call(
                "PUT",
                format!("/v2/{repository}/manifests/{reference}"),
                repository,
                format!("PUT manifest {reference}"),
                &["pull", "push"],
            );
            call.headers
                .push(("content-type", manifest.media_type.clone()));
            call.payload = Payload::Bytes(&manifest.bytes);
            let response = self.send_once(&call)?;
            match response.status().as_u16() {
                200 | 201 | 202 | 204 => match header(&response, "docker-content-digest") {
                    Some(answered) if answered != digest.as_str() => Err(self.invalid(
                        &call,
                        format!("the registry answered digest {answered}, we sent {digest}"),
                    )),
                    _ => Ok(digest.clone()),
                },
                _ => Err(self.status_error(&call, response)),
            }
        })
    }

    /// HEAD a manifest by digest or tag: `None` if the repository has no such manifest.
    pub fn head_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> anyhow::Result<Option<ManifestInfo>> {
        let head = self.with_retries(|_| {
            let mut call = self.call(
                "HEAD",
                format!("/v2/{repository}/manifests/{reference}"),
                repository,
                format!("HEAD manifest {reference}"),
                &["pull"],
            );
            call.headers.push(("accept", MANIFEST_ACCEPT.into()));
            let response = self.send_once(&call)?;
            match response.status().as_u16() {
                200 => Ok(Some((
                    header(&response, "docker-content-digest"),
                    header(&response, "content-type").unwrap_or_default(),
                    content_length(&response).unwrap_or(0),
                ))),
                404 => Ok(None),
                _ => Err(self.status_error(&call, response)),
            }
        })?;
        let answered = |digest: Option<String>| digest.and_then(|d| d.parse::<Digest>().ok());
        match head {
            None => Ok(None),
            Some((digest, media_type, size)) if answered(digest.clone()).is_some() => {
                Ok(Some(ManifestInfo {
                    digest: answered(digest).expect("checked"),
                    media_type,
                    size,
                }))
            }
            Some((None, media_type, size)) if Digest::is_valid(reference) => {
                Ok(Some(ManifestInfo {
                    digest: reference.parse()?,
                    media_type,
                    size,
                }))
            }
            // A registry that does not say the digest of a tag: read the bytes and hash them.
            Some(_) => Ok(self
                .get_manifest(repository, reference)?
                .map(|m| ManifestInfo {
                    size: m.bytes.len() as u64,
                    digest: m.digest,
                    media_type: m.media_type,
                })),
        }
    }

    /// GET a manifest by digest or tag, exact bytes: `None` if the repository has no such manifest.
    pub fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> anyhow::Result<Option<Manifest>> {
        self.with_retries(|_| {
            let mut call = self.call(
                "GET",
                format!("/v2/{repository}/manifests/{reference}"),
                repository,
                format!("GET manifest {reference}"),
                &["pull"],
            );
            call.headers.push(("accept", MANIFEST_ACCEPT.into()));
            let response = self.send_once(&call)?;
            match response.status().as_u16() {
                200 => {}
                404 => return Ok(None),
                _ => return Err(self.status_error(&call, response)),
            }
            let content_type = header(&response, "content-type").unwrap_or_default();
            let bytes = self.read_body(&call, response, 16 << 20)?;
            let manifest = Manifest::new(&content_type, bytes);
            if is_digest_reference(reference) && manifest.digest != reference {
                return Err(self.invalid(
                    &call,
                    format!("the bytes received hash to {}", manifest.digest),
                ));
            }
            Ok(Some(manifest))
        })
    }

    /// DELETE a manifest by digest. distribution with deletion disabled, and GHCR, answer 405 (or an UNSUPPORTED
    /// error): that is an answer (`Refused`), not a failure of the request.
    pub fn delete_manifest(&self, repository: &str, digest: &Digest) -> anyhow::Result<Removal> {
        self.with_retries(|_| {
            let call = self.call(
                "DELETE",
                format!("/v2/{repository}/manifests/{digest}"),
                repository,
                format!("DELETE manifest {digest}"),
                &["delete"],
            );
            let response = self.send_once(&call)?;
            let unsupported = || Removal::Refused {
                status: 405,
                message: format!("{} does not delete manifests (405 UNSUPPORTED)", self.name),
            };
            match response.status().as_u16() {
                200 | 202 | 204 => Ok(Removal::Deleted),
                404 => Ok(Removal::Gone),
                405 => Ok(unsupported()),
                _ => {
                    let err = self.status_error(&call, response);
                    if err.code.as_deref() == Some("UNSUPPORTED") {
                        Ok(unsupported())
                    } else {
                        Err(err)
                    }
                }
            }
        })
    }

    // ---- listings ----

    /// Every tag of a repository (following pagination). A repository with no tags (distribution answers 404
    /// NAME_UNKNOWN when it only holds untagged manifests) gives an empty list.
    pub fn list_tags(&self, repository: &str) -> anyhow::Result<Vec<String>> {
        self.list(
            repository,
            format!("/v2/{repository}/tags/list?n={}", self.options.page_size),
            "tags",
            &["pull"],
        )
    }

    fn list(
        &self,
        repository: &str,
        first: String,
        field: &'static str,
        actions: &[&str],
    ) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut next = Some(first);
        while let Some(path) = next.take() {
            let page = self.with_retries(|_| {
                let call = self.call(
                    "GET",
                    path.clone(),
                    repository,
                    format!("list {field}"),
                    actions,
                );
                let response = self.send_once(&call)?;
                match response.status().as_u16() {
                    200 => {}
                    404 => return Ok((Vec::new(), None)),
                    _ => return Err(self.status_error(&call, response)),
                }
                let link = header(&response, "link").and_then(|l| next_link(&l));
                let body = self.read_body(&call, response, 16 << 20)?;
                let value: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|_| self.invalid(&call, "the answer is not JSON".into()))?;
                let items = value[field]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok((items, link))
            })?;
            out.extend(page.0);
            next = page.1.map(|link| {
                if link.starts_with("http://") || link.starts_with("https://") {
                    link.strip_prefix(&self.base).unwrap_or(&link).to_owned()
                } else {
                    link
                }
            });
        }
        Ok(out)
    }

    // ---- the request machinery ----

    fn call<'a>(
        &self,
        method: &'static str,
        path: String,
        repository: &'a str,
        operation: String,
        actions: &[&str],
    ) -> Call<'a> {
        Call {
            method,
            url: format!("{}{path}", self.base),
            repository,
            operation,
            scopes: if actions.is_empty() {
                Vec::new()
            } else {
                vec![auth::repository_scope(repository, actions)]
            },
            headers: Vec::new(),
            payload: Payload::Empty,
        }
    }

    /// Runs `attempt` up to the policy's number of times while it fails in a retryable way, waiting the backoff
    /// (or the registry's Retry-After) between attempts.
    fn with_retries<T>(
        &self,
        mut attempt: impl FnMut(u32) -> Result<T, RegistryError>,
    ) -> anyhow::Result<T> {
        let mut n = 1;
        loop {
            match attempt(n) {
                Ok(value) => return Ok(value),
                Err(err) if err.retryable => {
                    match self.options.policy.delay_after(n, err.retry_after) {
                        Some(wait) => {
                            eprintln!(
                                "  attempt {n}/{} failed, retrying in {:.1} s: {err}",
                                self.options.policy.attempts,
                                wait.as_secs_f64()
                            );
                            std::thread::sleep(wait);
                            n += 1;
                        }
                        None => return Err(err.finish(self.purpose.get(), n)),
                    }
                }
                Err(err) => return Err(err.finish(self.purpose.get(), n)),
            }
        }
    }

    /// Sends one request, authenticating once if the registry asks (401). Any other status is returned for the
    /// operation to judge; a 401 after authenticating is final.
    fn send_once(&self, call: &Call) -> Result<http::Response<ureq::Body>, RegistryError> {
        let mut authenticated = false;
        loop {
            let authorization = self.authorization(call)?;
            let response = self.raw(call, authorization.as_deref())?;
            if response.status().as_u16() != 401 {
                return Ok(response);
            }
            let challenges: Vec<auth::Challenge> = response
                .headers()
                .get_all("www-authenticate")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(auth::parse_challenges)
                .collect();
            let scheme = Scheme::from_challenges(&challenges);
            if authenticated || scheme.is_none() {
                return Err(self.status_error(call, response));
            }
            match scheme {
                Some(Scheme::Basic) => {
                    if self.credentials.is_none() || authorization.is_some() {
                        return Err(self.status_error(call, response));
                    }
                    self.state.lock().unwrap().scheme = Scheme::Basic;
                }
                Some(Scheme::Bearer { realm, service }) => {
                    let challenge_scope = challenges
                        .iter()
                        .find(|c| c.scheme == "bearer")
                        .and_then(|c| c.param("scope"));
                    let scopes = auth::scopes_for_request(&call.scopes, challenge_scope);
                    let token = self.fetch_token(call, &realm, service.as_deref(), &scopes)?;
                    let mut state = self.state.lock().unwrap();
                    state.scheme = Scheme::Bearer { realm, service };
                    let (token, lifetime) = token;
                    state.tokens.insert(
                        TokenCache::key(&call.scopes),
                        token,
                        lifetime,
                        Instant::now(),
                    );
                }
                _ => unreachable!("handled above"),
            }
            drop(response);
            authenticated = true;
        }
    }

    /// The Authorization header for a call, from what we know of the registry (fetching a token when it is
    /// Bearer and none is cached for these scopes).
    fn authorization(&self, call: &Call) -> Result<Option<String>, RegistryError> {
        if !call.url.starts_with(&self.base) {
            // Never hand our credentials to another host (an upload Location or a redirect to storage).
            return Ok(None);
        }
        let key = TokenCache::key(&call.scopes);
        let scheme = {
            let state = self.state.lock().unwrap();
            if let Some(token) = state.tokens.get(&key, Instant::now()) {
                return Ok(Some(format!("Bearer {token}")));
            }
            state.scheme.clone()
        };
        match scheme {
            Scheme::Unknown => Ok(None),
            Scheme::Basic => Ok(self.credentials.as_ref().map(Credentials::basic_header)),
            Scheme::Bearer { realm, service } => {
                let (token, lifetime) =
                    self.fetch_token(call, &realm, service.as_deref(), &call.scopes)?;
                let header = format!("Bearer {token}");
                self.state
                    .lock()
                    .unwrap()
                    .tokens
                    .insert(key, token, lifetime, Instant::now());
                Ok(Some(header))
            }
        }
    }

    /// GET realm?service=…&scope=… with our Basic credentials (or none, for an anonymous token).
    fn fetch_token(
        &self,
        call: &Call,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<(String, Duration), RegistryError> {
        let mut query = Vec::new();
        if let Some(service) = service {
            query.push(format!("service={}", encode(service)));
        }
        query.extend(scopes.iter().map(|s| format!("scope={}", encode(s))));
        let separator = if realm.contains('?') { '&' } else { '?' };
        let url = format!("{realm}{separator}{}", query.join("&"));
        let operation = format!("get a token from {realm} for {}", call.operation);
        let fail = |status: Option<u16>,
                    detail: String,
                    retryable: bool,
                    remedy: Option<String>| RegistryError {
            registry: self.name.clone(),
            repository: call.repository.to_owned(),
            operation: operation.clone(),
            status,
            code: None,
            detail,
            remedy,
            retryable,
            retry_after: None,
        };
        let realm_host = url
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or(rest))
            .unwrap_or("");
        let plain = url.starts_with("http://");
        if plain
            && self.credentials.is_some()
            && !reference::allows_plain_http(realm_host, realm_host, &self.options.insecure)
        {
            return Err(fail(
                None,
                "the token realm is plain HTTP on a host that is not loopback".into(),
                false,
                Some(format!(
                    "pass --insecure-registry {realm_host} if that is intended"
                )),
            ));
        }
        let mut request = http::Request::builder().method("GET").uri(&url);
        if let Some(credentials) = &self.credentials {
            request = request.header("authorization", credentials.basic_header());
        }
        let request = request
            .body(())
            .map_err(|err| fail(None, format!("bad token URL: {err}"), false, None))?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let response = self.agent.run(request);
        if self.options.trace {
            eprintln!(
                "  GET {} -> {}",
                url,
                response
                    .as_ref()
                    .map_or_else(|e| e.to_string(), |r| r.status().to_string())
            );
        }
        let response =
            response.map_err(|err| fail(None, err.to_string(), transport_retryable(&err), None))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .unwrap_or_default();
        match status {
            200 => parse_token_response(&body).map_err(|why| fail(Some(200), why, false, None)),
            401 | 403 => Err(fail(
                Some(status),
                "the token endpoint refused the credentials".into(),
                false,
                Some(self.credentials_hint.clone()),
            )),
            _ => Err(fail(
                Some(status),
                String::from_utf8_lossy(&body).chars().take(200).collect(),
                retry::is_retryable_status(status),
                None,
            )),
        }
    }

    fn raw(
        &self,
        call: &Call,
        authorization: Option<&str>,
    ) -> Result<http::Response<ureq::Body>, RegistryError> {
        let mut request = http::Request::builder().method(call.method).uri(&call.url);
        for (name, value) in &call.headers {
            request = request.header(*name, value);
        }
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let bad = |err: http::Error| self.transport_error(call, err.to_string(), false);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let result = match &call.payload {
            Payload::Empty if matches!(call.method, "POST" | "PUT") => {
                // Some registries (GHCR) refuse a bodyless POST without an explicit zero length.
                let request = request
                    .header("content-length", "0")
                    .body(())
                    .map_err(bad)?;
                self.agent.run(request)
            }
            Payload::Empty => self.agent.run(request.body(()).map_err(bad)?),
            Payload::Bytes(bytes) => self.agent.run(request.body(*bytes).map_err(bad)?),
            Payload::File(path) => {
                let file = File::open(path).map_err(|err| {
                    self.transport_error(call, format!("open {}: {err}", path.display()), false)
                })?;
                self.agent.run(request.body(file).map_err(bad)?)
            }
        };
        if self.options.trace {
            let shown = match &result {
                Ok(response) => response.status().to_string(),
                Err(err) => err.to_string(),
            };
            eprintln!("  {} {} -> {shown}", call.method, call.url);
        }
        result.map_err(|err| self.transport_error(call, err.to_string(), transport_retryable(&err)))
    }

    fn transport_error(&self, call: &Call, detail: String, retryable: bool) -> RegistryError {
        RegistryError {
            registry: self.name.clone(),
            repository: call.repository.to_owned(),
            operation: call.operation.clone(),
            status: None,
            code: None,
            detail,
            remedy: None,
            retryable,
            retry_after: None,
        }
    }

    /// An answer we cannot accept although its status is fine (wrong digest, unreadable body).
    fn invalid(&self, call: &Call, detail: String) -> RegistryError {
        RegistryError {
            retryable: false,
            ..self.transport_error(call, detail, false)
        }
    }

    fn status_error(&self, call: &Call, response: http::Response<ureq::Body>) -> RegistryError {
        let status = response.status().as_u16();
        let retry_after = header(&response, "retry-after")
            .and_then(|v| retry::parse_retry_after(&v, SystemTime::now()));
        let body = response
            .into_body()
            .with_config()
            .limit(64 << 10)
            .read_to_vec()
            .unwrap_or_default();
        let (code, detail) = match parse_error_body(&body) {
            Some((code, message)) => (Some(code).filter(|c| !c.is_empty()), message),
            None => (
                None,
                String::from_utf8_lossy(&body)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .chars()
                    .take(200)
                    .collect(),
            ),
        };
        let remedy = match status {
            401 | 403 => Some(self.credentials_hint.clone()),
            _ => None,
        };
        RegistryError {
            registry: self.name.clone(),
            repository: call.repository.to_owned(),
            operation: call.operation.clone(),
            status: Some(status),
            code,
            detail,
            remedy,
            retryable: retry::is_retryable_status(status),
            retry_after,
        }
    }

    fn read_body(
        &self,
        call: &Call,
        response: http::Response<ureq::Body>,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        response
            .into_body()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|err| {
                self.transport_error(
                    call,
                    format!("reading the answer: {err}"),
                    transport_retryable(&err),
                )
            })
    }

    /// The absolute URL of an upload session from a 202's Location (relative or absolute).
    fn location(
        &self,
        call: &Call,
        response: &http::Response<ureq::Body>,
    ) -> Result<String, RegistryError> {
        let location = header(response, "location").ok_or_else(|| {
            self.invalid(call, "the registry answered 202 without a Location".into())
        })?;
        Ok(resolve_location(&self.base, &location))
    }
}

enum Mount {
    Mounted,
    Session(String),
}

fn parse_token_response(body: &[u8]) -> Result<(String, Duration), String> {
    auth::parse_token_response(body)
}

/// Connection-level failures worth another attempt; a malformed request is not.
fn transport_retryable(err: &ureq::Error) -> bool {
    !matches!(
        err,
        ureq::Error::BadUri(_)
            | ureq::Error::Http(_)
            | ureq::Error::InvalidProxyUrl
            | ureq::Error::BodyExceedsLimit(_)
            | ureq::Error::RedirectFailed
    )
}

fn header(response: &http::Response<ureq::Body>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
}

fn content_length(response: &http::Response<ureq::Body>) -> Option<u64> {
    header(response, "content-length").and_then(|v| v.parse().ok())
}

/// An upload Location made absolute: registries answer a path (`/v2/…/uploads/<id>?_state=…`) or a full URL.
pub fn resolve_location(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        format!("{base}/{location}")
    }
}

/// Adds `name=value` to a URL that may already carry a query.
pub fn with_query(url: &str, name: &str, value: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{name}={}", encode(value))
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `rel="next"` target of a Link header: `</v2/x/tags/list?last=a&n=1>; rel="next"`.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"" || p.trim() == "rel=next");
        is_next.then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_and_queries() {
        let base = "http://127.0.0.1:5000";
        let cases = [
            (
                "/v2/a/b/blobs/uploads/123?_state=x",
                "http://127.0.0.1:5000/v2/a/b/blobs/uploads/123?_state=x&digest=sha256%3Aab",
            ),
            (
                "https://upload.example/u/1",
                "https://upload.example/u/1?digest=sha256%3Aab",
            ),
            (
                "v2/a/blobs/uploads/9",
                "http://127.0.0.1:5000/v2/a/blobs/uploads/9?digest=sha256%3Aab",
            ),
        ];
        for (location, want) in cases {
            assert_eq!(
                with_query(&resolve_location(base, location), "digest", "sha256:ab"),
                want
            );
        }
        assert_eq!(
            encode("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }

    #[test]
    fn link_headers() {
        let cases = [
            (
                r#"</v2/a/tags/list?last=x&n=2>; rel="next""#,
                Some("/v2/a/tags/list?last=x&n=2"),
            ),
            (
                r#"<https://r/v2/_catalog?last=b>;rel=next"#,
                Some("https://r/v2/_catalog?last=b"),
            ),
            (r#"</x>; rel="prev", </y>; rel="next""#, Some("/y")),
            (r#"</x>; rel="prev""#, None),
        ];
        for (link, want) in cases {
            assert_eq!(next_link(link).as_deref(), want, "{link}");
        }
    }

    /// The operations the manifest and prune stages use, against the installed distribution registry.
    #[test]
    fn manifest_and_tag_operations_against_a_real_registry() {
        use crate::image::local_registry::{find_binary, LocalRegistry, Runner};
        let binary = find_binary(std::env::var_os("PATH").as_deref())
            .expect("docker-registry on PATH (`cargo xtask ci` installs it)");
        let sh = xshell::Shell::new().unwrap();
        let local = LocalRegistry::start(&sh, Runner::Binary(binary)).unwrap();
        let target = Reference::parse(&format!("{}/team/app", local.address)).unwrap();
        let options = Options {
            page_size: 2,
            policy: Policy::with_base_ms(Some("10")),
            ..Options::default()
        };
        let registry = Registry::new(&target, None, options);
        let repo = "team/app";

        let config =
            br#"{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config_digest = Digest::of(config);
        let dir = local.dir.join("blobs");
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join("config.json");
        std::fs::write(&config_path, config).unwrap();
        assert_eq!(registry.get_blob(repo, &config_digest).unwrap(), None);
        assert_eq!(
            registry
                .push_blob(repo, &config_digest, &config_path, None)
                .unwrap(),
            BlobOutcome::Uploaded(config.len() as u64)
        );
        assert_eq!(
            registry
                .push_blob(repo, &config_digest, &config_path, None)
                .unwrap(),
            BlobOutcome::Existed
        );
        assert_eq!(
            registry.get_blob(repo, &config_digest).unwrap().as_deref(),
            Some(&config[..])
        );
        assert_eq!(
            registry
                .push_blob("team/other", &config_digest, &config_path, Some(repo))
                .unwrap(),
            BlobOutcome::Mounted
        );

        use crate::oci::media_type::{DOCKER_LIST as LIST, DOCKER_MANIFEST as V2};
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{V2}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":{},"digest":"{config_digest}"}},"layers":[]}}"#,
            config.len()
        );
        let image = Manifest::new(V2, manifest.clone().into_bytes());
        let digest = image.digest.clone();
        assert_eq!(registry.head_manifest(repo, digest.as_str()).unwrap(), None);
        assert_eq!(registry.get_manifest(repo, "latest").unwrap(), None);
        assert_eq!(registry.list_tags(repo).unwrap(), Vec::<String>::new());
        assert_eq!(
            registry
                .put_manifest(repo, digest.as_str(), &image)
                .unwrap(),
            digest
        );
        // Still no tag: distribution's 404 NAME_UNKNOWN reads as an empty list.
        assert_eq!(registry.list_tags(repo).unwrap(), Vec::<String>::new());

        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"{LIST}","manifests":[{{"mediaType":"{V2}","size":{},"digest":"{digest}","platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#,
            manifest.len()
        );
        let index = Manifest::new(LIST, list.clone().into_bytes());
        let list_digest = index.digest.clone();
        for tag in ["latest", "1.2.3", "manual-abc1234"] {
            assert_eq!(
                registry.put_manifest(repo, tag, &index).unwrap(),
                list_digest
            );
        }
        let head = registry.head_manifest(repo, "latest").unwrap().unwrap();
        assert_eq!(
            head,
            ManifestInfo {
                digest: list_digest.clone(),
                media_type: LIST.into(),
                size: list.len() as u64
            }
        );
        let got = registry
            .get_manifest(repo, list_digest.as_str())
            .unwrap()
            .unwrap();
        assert_eq!(
            (got.bytes.as_slice(), got.media_type.as_str()),
            (list.as_bytes(), LIST)
        );
        let child = registry
            .get_manifest(repo, digest.as_str())
            .unwrap()
            .unwrap();
        assert_eq!(child.media_type, V2);
        // Three tags over pages of two: the Link header is followed.
        let mut tags = registry.list_tags(repo).unwrap();
        tags.sort();
        assert_eq!(tags, ["1.2.3", "latest", "manual-abc1234"]);

        // A digest PUT under the wrong digest is refused before any request.
        let err = registry
            .put_manifest(repo, config_digest.as_str(), &image)
            .unwrap_err();
        assert!(err.to_string().contains("bug in the caller"), "{err}");
        // A manifest whose blob is missing: the registry's error code, exit 4, not retried.
        let broken = manifest.replace(config_digest.as_str(), Digest::of(b"missing").as_str());
        let broken = Manifest::new(V2, broken.into_bytes());
        let err = registry
            .put_manifest(repo, broken.digest.as_str(), &broken)
            .unwrap_err();
        assert_eq!(crate::exit::code_of(&err), 4);
        let msg = err.to_string();
        assert!(
            msg.contains("HTTP 400 MANIFEST_BLOB_UNKNOWN") && !msg.contains("attempts"),
            "{msg}"
        );

        assert_eq!(
            registry.delete_manifest(repo, &list_digest).unwrap(),
            Removal::Deleted
        );
        assert_eq!(registry.head_manifest(repo, "latest").unwrap(), None);
        assert_eq!(
            registry.delete_manifest(repo, &list_digest).unwrap(),
            Removal::Gone
        );
        assert!(registry.requests() > 20);
        local.stop(&sh);
    }
}
