//! The HTTP side of the distribution API on ureq: one [`Registry`] per registry host, holding its agent,
//! credentials and tokens, with the blob, manifest, tag and delete operations the stages need.
//!
//! Every operation goes through the same retry loop (see `retry.rs`) and the same auth step: a request goes out
//! with what we know (nothing, Basic, or a cached Bearer token for its scopes); a 401 teaches the scheme, we
//! authenticate once and resend; a second 401 is final (a wrong password fails at once, it is never retried).
//! ureq runs with `http_status_as_error(false)` so challenges and the registry's error bodies are ours to read.
//!
//! Credentials are bound to the registry's origin (see `origin.rs`): Authorization goes only to that origin and
//! to a token realm `origin::check_realm` allows; a 401 is a challenge only when the registry's own origin
//! answered it. Redirects are followed here, not by ureq: reads may go to storage on another host (without
//! Authorization, never from https to http), writes never follow one. Upload locations and page links must
//! stay on the origin they came from, and listings are bounded.

// A RegistryError is built once per failed request, next to an HTTP round trip: its size does not matter, and
// boxing it would only add noise to every operation.
#![allow(clippy::result_large_err)]

use std::cell::{Cell, OnceCell};
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use ureq::http;

use super::auth::{self, Scheme, TokenCache};
use super::credentials::{self, Credentials, Found};
use super::error::{parse_error_body, RegistryError};
use super::origin::{self, Origin};
use super::reference::{self, Reference};
use super::retry::{self, Policy};
use super::transport::{ProxyEnv, Settings, Transport};
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
    /// The proxy variables (loopback never goes through a proxy).
    pub proxies: ProxyEnv,
    /// Token realm hosts allowed besides the registry's own domain (`XTASK_TRUSTED_REALMS`).
    pub trusted_realms: Vec<String>,
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
            proxies: ProxyEnv::default(),
            trusted_realms: Vec::new(),
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
            proxies: ProxyEnv::from_process(),
            trusted_realms: std::env::var(origin::TRUSTED_REALMS_ENV)
                .unwrap_or_default()
                .split(',')
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .collect(),
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
    /// The host (and port) of the distribution API: `registry-1.docker.io` for Docker Hub.
    api_host: String,
    /// Loopback or `--insecure-registry`: tried over https first, plain HTTP if it does not speak TLS.
    plain_allowed: bool,
    /// The origin credentials are bound to, settled on first use (after the TLS probe where plain HTTP is allowed).
    origin: OnceCell<Origin>,
    transport: Transport,
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
            .field("api_host", &self.api_host)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// How long the TLS probe of a loopback or insecure registry waits: a TLS server answers a ClientHello at once.
const TLS_PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Redirects a read follows at most.
const MAX_REDIRECTS: usize = 5;
/// Bounds of a listing: a registry cannot keep the pipeline paging forever.
const MAX_PAGES: usize = 1000;
const MAX_ENTRIES: usize = 100_000;

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
        let transport = Transport::new(Settings {
            connect_timeout: options.connect_timeout,
            io_timeout: options.io_timeout,
            proxies: options.proxies.clone(),
        });
        let options_purpose = options.purpose;
        Registry {
            name: target.registry.clone(),
            api_host: target.api_host.clone(),
            plain_allowed: reference::allows_plain_http(
                &target.api_host,
                &target.registry,
                &options.insecure,
            ),
            origin: OnceCell::new(),
            transport,
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

    /// The registry's origin: https, or for a loopback or insecure host whatever it speaks (https first, as
    /// Docker does for localhost, so a local registry with a certificate is used over TLS).
    fn origin(&self) -> Result<&Origin, RegistryError> {
        if let Some(origin) = self.origin.get() {
            return Ok(origin);
        }
        let https = Origin::of(&format!("https://{}/", self.api_host))
            .map_err(|why| self.plain_error("reach the registry", why))?;
        let origin = if self.plain_allowed && !self.speaks_tls(&https)? {
            Origin {
                https: false,
                port: if https.port == 443 { 80 } else { https.port },
                ..https
            }
        } else {
            https
        };
        Ok(self.origin.get_or_init(|| origin))
    }

    /// Whether the far end answers TLS. Only a clear sign that it does not (an answer that is not TLS, a
    /// hang-up or silence after our ClientHello) means plain HTTP; a certificate problem means it does speak TLS,
    /// and the real request then fails naming the fix.
    fn speaks_tls(&self, https: &Origin) -> Result<bool, RegistryError> {
        let agent = self
            .transport
            .probe_agent(https, TLS_PROBE_TIMEOUT.min(self.options.io_timeout))
            .map_err(|why| self.plain_error("reach the registry", why))?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let outcome = agent.get(format!("{https}/v2/")).call();
        if self.options.trace {
            let shown = outcome
                .as_ref()
                .map_or_else(|e| e.to_string(), |r| r.status().to_string());
            eprintln!("  TLS probe {https}/v2/ -> {shown}");
        }
        match outcome {
            Ok(_) => Ok(true),
            Err(err) if rustls_error(&err).is_some() => Ok(!matches!(
                rustls_error(&err),
                Some(rustls::Error::InvalidMessage(_))
            )),
            Err(ureq::Error::Timeout(_)) | Err(ureq::Error::Protocol(_)) => Ok(false),
            Err(ureq::Error::Io(err))
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::WouldBlock
                ) =>
            {
                Ok(false)
            }
            Err(err) => Err(RegistryError {
                retryable: transport_retryable(&err),
                ..self.plain_error("reach the registry", err.to_string())
            }),
        }
    }

    fn plain_error(&self, operation: &str, detail: String) -> RegistryError {
        RegistryError {
            registry: self.name.clone(),
            repository: String::new(),
            operation: operation.to_owned(),
            status: None,
            code: None,
            detail,
            remedy: None,
            retryable: false,
            retry_after: None,
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
        )?;
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
        )?;
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
            )?;
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
        )?;
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
            )?;
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
            )?;
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
            )?;
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
            )?;
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
            )?;
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

    /// Follows `Link: <…>; rel="next"` pages, which must stay on the registry's origin; a page seen twice, more
    /// than MAX_PAGES pages or more than MAX_ENTRIES entries is an error, not a loop.
    fn list(
        &self,
        repository: &str,
        first: String,
        field: &'static str,
        actions: &[&str],
    ) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut next = Some(format!(
            "{}{first}",
            self.origin_url()
                .map_err(|e| e.finish(self.purpose.get(), 1))?
        ));
        while let Some(url) = next.take() {
            if !seen.insert(url.clone()) || seen.len() > MAX_PAGES {
                let why = if seen.len() > MAX_PAGES {
                    format!("more than {MAX_PAGES} pages")
                } else {
                    format!("the page {url} came back again")
                };
                anyhow::bail!(
                    "listing {field} of {}/{repository}: {why}; the registry's pagination does not end",
                    self.name
                );
            }
            let page = self.with_retries(|_| {
                let mut call = self.call(
                    "GET",
                    String::new(),
                    repository,
                    format!("list {field}"),
                    actions,
                )?;
                call.url = url.clone();
                let response = self.send_once(&call)?;
                match response.status().as_u16() {
                    200 => {}
                    404 => return Ok((Vec::new(), None)),
                    _ => return Err(self.status_error(&call, response)),
                }
                let link = match header(&response, "link").and_then(|l| next_link(&l)) {
                    Some(link) => {
                        Some(origin::resolve_on_origin(&call.url, &link).map_err(|why| {
                            self.invalid(&call, format!("refusing the next page: {why}"))
                        })?)
                    }
                    None => None,
                };
                let body = self.read_body(&call, response, 16 << 20)?;
                let value: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|_| self.invalid(&call, "the answer is not JSON".into()))?;
                let items: Vec<String> = value[field]
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
            if out.len() > MAX_ENTRIES {
                anyhow::bail!(
                    "listing {field} of {}/{repository}: more than {MAX_ENTRIES} entries; refusing to read on",
                    self.name
                );
            }
            next = page.1;
        }
        Ok(out)
    }

    // ---- the request machinery ----

    /// `https://ghcr.io`: where every call of this client goes.
    fn origin_url(&self) -> Result<String, RegistryError> {
        Ok(self.origin()?.base_url())
    }

    fn call<'a>(
        &self,
        method: &'static str,
        path: String,
        repository: &'a str,
        operation: String,
        actions: &[&str],
    ) -> Result<Call<'a>, RegistryError> {
        Ok(Call {
            method,
            url: format!("{}{path}", self.origin_url()?),
            repository,
            operation,
            scopes: if actions.is_empty() {
                Vec::new()
            } else {
                vec![auth::repository_scope(repository, actions)]
            },
            headers: Vec::new(),
            payload: Payload::Empty,
        })
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
    /// operation to judge; a 401 after authenticating is final, and a 401 from any origin but the registry's
    /// (a redirect target, say) is an error naming that host: its challenge is never answered.
    fn send_once(&self, call: &Call) -> Result<http::Response<ureq::Body>, RegistryError> {
        let mut authenticated = false;
        loop {
            let authorization = self.authorization(call)?;
            let (response, answered_by) = self.send_following(call, authorization.as_deref())?;
            if response.status().as_u16() != 401 {
                return Ok(response);
            }
            if &answered_by != self.origin()? {
                return Err(self.invalid(
                    call,
                    format!(
                        "{answered_by} (not the registry, reached by a redirect) asked for credentials; they are \
                         only ever sent to {}",
                        self.origin()?
                    ),
                ));
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
                    let usable = self.credentials.as_ref().is_some_and(|c| !c.identity_token);
                    if !usable || authorization.is_some() {
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

    /// Sends a request and follows redirects the way a registry client must: a write (PUT, POST, PATCH, DELETE)
    /// never follows one (a redirected manifest PUT must not turn into a GET whose 200 looks like success); a
    /// read follows at most MAX_REDIRECTS, never from https to http, with Authorization only while it stays on
    /// the registry's origin. Returns the answer and the origin that gave it.
    fn send_following(
        &self,
        call: &Call,
        authorization: Option<&str>,
    ) -> Result<(http::Response<ureq::Body>, Origin), RegistryError> {
        let registry = self.origin()?.clone();
        let mut url = call.url.clone();
        let mut hops = 0;
        loop {
            let here = Origin::of(&url).map_err(|why| self.invalid(call, why))?;
            let authorization = authorization.filter(|_| here == registry);
            let response = self.raw(call, &url, &here, authorization)?;
            let status = response.status().as_u16();
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                return Ok((response, here));
            }
            let location = header(&response, "location").unwrap_or_default();
            if !matches!(call.method, "GET" | "HEAD") {
                return Err(self.invalid(
                    call,
                    format!(
                        "the registry answered {status} (a redirect to {}) to a {}; writes never follow a \
                         redirect, check the registry address",
                        crate::github::untrusted(&location),
                        call.method
                    ),
                ));
            }
            let next = origin::resolve(&url, &location)
                .map_err(|why| self.invalid(call, format!("refusing the redirect: {why}")))?;
            let there = Origin::of(&next).map_err(|why| self.invalid(call, why))?;
            if here.https && !there.https {
                return Err(self.invalid(
                    call,
                    format!("refusing a redirect from {here} to plain HTTP at {there}"),
                ));
            }
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(self.invalid(call, format!("more than {MAX_REDIRECTS} redirects")));
            }
            drop(response);
            url = next;
        }
    }

    /// The Authorization header for a call to the registry, from what we know of it (fetching a token when it
    /// is Bearer and none is cached for these scopes). Nothing for a URL off the registry's origin.
    fn authorization(&self, call: &Call) -> Result<Option<String>, RegistryError> {
        let on_registry = Origin::of(&call.url).is_ok_and(|o| self.origin().is_ok_and(|r| &o == r));
        if !on_registry {
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
            Scheme::Basic => Ok(self
                .credentials
                .as_ref()
                .filter(|c| !c.identity_token)
                .map(Credentials::basic_header)),
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

    /// A token from the realm the registry named, once `origin::check_realm` allows it: GET
    /// realm?service=…&scope=… with our Basic credentials (or none, for an anonymous token), or, for an identity
    /// token (Docker's OAuth2 refresh token), a POST of the refresh grant as Docker does. The realm's answer is
    /// never followed elsewhere.
    fn fetch_token(
        &self,
        call: &Call,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<(String, Duration), RegistryError> {
        let operation = format!(
            "get a token from {} for {}",
            crate::github::untrusted(realm),
            call.operation
        );
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
        let realm_origin = origin::check_realm(self.origin()?, realm, &self.options.trusted_realms)
            .map_err(|why| fail(None, why, false, None))?;
        let mut query = Vec::new();
        if let Some(service) = service {
            query.push(format!("service={}", encode(service)));
        }
        query.extend(scopes.iter().map(|s| format!("scope={}", encode(s))));
        let refresh = self.credentials.as_ref().filter(|c| c.identity_token);
        let request = match refresh {
            Some(credentials) => {
                query.push("grant_type=refresh_token".into());
                query.push("client_id=xtask-image".into());
                query.push(format!("refresh_token={}", encode(&credentials.secret)));
                http::Request::builder()
                    .method("POST")
                    .uri(realm)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(query.join("&").into_bytes())
            }
            None => {
                let separator = if realm.contains('?') { '&' } else { '?' };
                let mut request = http::Request::builder()
                    .method("GET")
                    .uri(format!("{realm}{separator}{}", query.join("&")));
                if let Some(credentials) = &self.credentials {
                    request = request.header("authorization", credentials.basic_header());
                }
                request.body(Vec::new())
            }
        }
        .map_err(|err| fail(None, format!("bad token URL: {err}"), false, None))?;
        let agent = self
            .transport
            .agent(&realm_origin)
            .map_err(|why| fail(None, why, false, None))?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let response = agent.run(request);
        if self.options.trace {
            eprintln!(
                "  {} {} -> {}",
                if refresh.is_some() { "POST" } else { "GET" },
                crate::github::untrusted(realm),
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
            300..=399 => Err(fail(
                Some(status),
                "the token endpoint answered with a redirect, which is not followed".into(),
                false,
                None,
            )),
            _ => Err(fail(
                Some(status),
                crate::github::untrusted(&String::from_utf8_lossy(&body))
                    .chars()
                    .take(200)
                    .collect(),
                retry::is_retryable_status(status),
                None,
            )),
        }
    }

    fn raw(
        &self,
        call: &Call,
        url: &str,
        origin: &Origin,
        authorization: Option<&str>,
    ) -> Result<http::Response<ureq::Body>, RegistryError> {
        let mut request = http::Request::builder().method(call.method).uri(url);
        for (name, value) in &call.headers {
            request = request.header(*name, value);
        }
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let agent = self
            .transport
            .agent(origin)
            .map_err(|why| self.transport_error(call, why, false))?;
        let bad = |err: http::Error| self.transport_error(call, err.to_string(), false);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let result = match &call.payload {
            Payload::Empty if matches!(call.method, "POST" | "PUT") => {
                // Some registries (GHCR) refuse a bodyless POST without an explicit zero length.
                let request = request
                    .header("content-length", "0")
                    .body(())
                    .map_err(bad)?;
                agent.run(request)
            }
            Payload::Empty => agent.run(request.body(()).map_err(bad)?),
            Payload::Bytes(bytes) => agent.run(request.body(*bytes).map_err(bad)?),
            Payload::File(path) => {
                let file = File::open(path).map_err(|err| {
                    self.transport_error(call, format!("open {}: {err}", path.display()), false)
                })?;
                agent.run(request.body(file).map_err(bad)?)
            }
        };
        if self.options.trace {
            let shown = match &result {
                Ok(response) => response.status().to_string(),
                Err(err) => err.to_string(),
            };
            eprintln!(
                "  {} {} -> {shown}",
                call.method,
                crate::github::untrusted(url)
            );
        }
        result.map_err(|err| {
            let detail = match rustls_error(&err) {
                Some(rustls::Error::InvalidCertificate(why)) => format!(
                    "the registry's TLS certificate is not trusted ({why:?}); if it comes from a private CA, point \
                     SSL_CERT_FILE at that CA's PEM file"
                ),
                _ => err.to_string(),
            };
            self.transport_error(call, detail, transport_retryable(&err))
        })
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

    /// The absolute URL of an upload session from a 202's Location (relative or absolute), which must stay on
    /// the registry's origin: the blob and its Authorization go nowhere else.
    fn location(
        &self,
        call: &Call,
        response: &http::Response<ureq::Body>,
    ) -> Result<String, RegistryError> {
        let location = header(response, "location").ok_or_else(|| {
            self.invalid(call, "the registry answered 202 without a Location".into())
        })?;
        origin::resolve_on_origin(&call.url, &location)
            .map_err(|why| self.invalid(call, format!("refusing the upload location: {why}")))
    }
}

enum Mount {
    Mounted,
    Session(String),
}

fn parse_token_response(body: &[u8]) -> Result<(String, Duration), String> {
    auth::parse_token_response(body)
}

/// The TLS failure behind a ureq error: reported as its own variant, or inside the I/O error of the handshake.
fn rustls_error(err: &ureq::Error) -> Option<&rustls::Error> {
    match err {
        ureq::Error::Rustls(err) => Some(err),
        ureq::Error::Io(err) => err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>()),
        _ => None,
    }
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
                "http://127.0.0.1:5000/u/1",
                "http://127.0.0.1:5000/u/1?digest=sha256%3Aab",
            ),
            (
                "9?_state=y",
                "http://127.0.0.1:5000/v2/a/blobs/uploads/9?_state=y&digest=sha256%3Aab",
            ),
        ];
        for (location, want) in cases {
            assert_eq!(
                with_query(
                    &origin::resolve_on_origin(&format!("{base}/v2/a/blobs/uploads/"), location)
                        .unwrap(),
                    "digest",
                    "sha256:ab"
                ),
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
