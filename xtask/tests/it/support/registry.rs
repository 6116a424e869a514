//! Shared harness of the xtask integration tests: real distribution registries (`docker-registry serve`) on free
//! loopback ports in each auth mode, an in-process token server, synthetic image exports, and running the xtask.
//!
//! Use it from a test module with `use crate::support::registry::…`.
//!
//! API
//! - [`TestRegistry::start(Auth)`] starts a registry (storage in a temp dir, `delete: enabled: true`, access log
//!   on) and waits until `/v2/` answers. `Auth::Anonymous`, `Auth::basic(user, pass)` (htpasswd -Bbn),
//!   `Auth::token(user, pass)` (distribution's `auth.token` against a [`TokenServer`] run in this process, signing
//!   ES256 JWTs with a P-256 key made by `openssl`). Dropping it kills the registry and removes its directory.
//!   - `.address` (`127.0.0.1:PORT`), `.reference(repo)` (`127.0.0.1:PORT/repo`), `.url(path)`.
//!   - `.storage()` its storage directory; `.storage_hash()` a hash of every file in it (equal: byte for byte
//!     unchanged).
//!   - `.log()` the registry's log; `.requests()` its access-log lines as [`Request`] (method, path, status);
//!     `.requests_since(n)` the ones after the first n (take `.requests().len()` before an action).
//!   - `.fetch(method, path)` -> [`Answer`] (`status`, `body`, `digest`): the one HTTP reader of a registry in the
//!     tests, with the registry's own credentials (Basic or a token from its server), every manifest type accepted.
//!   - `.tags(repo)` -> `Ok(tags)` or `Err(status, body)` of `GET /v2/<repo>/tags/list`; `.repositories()` the
//!     catalog.
//!   - `.creds()` -> `Some("user:pass")` for skopeo's `--creds`; `.skopeo_raw(repo, digest)` -> manifest bytes read
//!     by skopeo (`skopeo inspect --raw --tls-verify=false`); `.skopeo_inspect("repo:tag", flags)` -> `None` when the
//!     registry does not have it.
//!   - `.token_server()` -> the [`TokenServer`] (`.requests()`: every token request, with the user and scopes
//!     asked and whether it was granted).
//! - [`Export::write(dir, arch, layer_sizes)`] writes what `podman push --format v2s2 IMG dir:DIR` writes
//!   (manifest.json, version, blobs named by hex digest) for a tiny but valid image: real uncompressed tar layers
//!   of pseudo-random bytes (deterministic per size and arch), a Docker config naming the platform. Fields:
//!   `digest`, `manifest`, `config_digest`, `layers` (digest, size), `total_size`.
//! - [`Xtask::new()`] runs `env!("CARGO_BIN_EXE_xtask")` in a scrubbed environment (no credential variables, HOME
//!   and XDG_RUNTIME_DIR in a temp dir, XTASK_RETRY_BASE_MS=10): `.args([...])`, `.env(k, v)`, `.target_dir(p)`
//!   (sets CARGO_TARGET_DIR, where `image push` finds `image/<os>-<arch>/`), `.run()` -> [`Run`] (`code`, `stdout`,
//!   `stderr`, `elapsed`, `peak_rss_kib` sampled from /proc while it runs).
//! - [`free_port()`], [`temp_dir(name)`] (removed on drop), [`sha256(bytes)`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use sha2::{Digest, Sha256};
use xshell::{cmd, Shell};

/// `sha256:<hex>`
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// A free TCP port on 127.0.0.1 (closed again before it is returned).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn temp_dir(name: &str) -> TempDir {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "xtask-test-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// ---------------------------------------------------------------------------------------------------------------
// Registries

/// How a test registry authenticates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    Anonymous,
    Basic { user: String, password: String },
    Token { user: String, password: String },
}

impl Auth {
    pub fn basic(user: &str, password: &str) -> Auth {
        Auth::Basic {
            user: user.into(),
            password: password.into(),
        }
    }

    pub fn token(user: &str, password: &str) -> Auth {
        Auth::Token {
            user: user.into(),
            password: password.into(),
        }
    }

    fn user_password(&self) -> Option<(&str, &str)> {
        match self {
            Auth::Anonymous => None,
            Auth::Basic { user, password } | Auth::Token { user, password } => {
                Some((user, password))
            }
        }
    }
}

/// The User-Agent of the harness's readiness probe, left out of [`TestRegistry::requests`].
const PROBE_AGENT: &str = "xtask-test-probe";

/// The manifest media types [`TestRegistry::fetch`] accepts: Docker's and OCI's, lists and images.
const ACCEPT: &str = "application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.image.manifest.v1+json";

/// What a registry answered to [`TestRegistry::fetch`].
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// The Docker-Content-Digest header.
    pub digest: Option<String>,
}

/// One line of the registry's access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// A running `docker-registry serve`.
pub struct TestRegistry {
    /// `127.0.0.1:PORT`
    pub address: String,
    pub auth: Auth,
    dir: TempDir,
    child: Child,
    token: Option<TokenServer>,
}

impl TestRegistry {
    pub fn start(auth: Auth) -> TestRegistry {
        TestRegistry::start_with(auth, None)
    }

    /// A registry that speaks only TLS, with this certificate and key (PEM).
    pub fn start_tls(auth: Auth, cert: &Path, key: &Path) -> TestRegistry {
        TestRegistry::start_with(auth, Some((cert, key)))
    }

    fn start_with(auth: Auth, tls: Option<(&Path, &Path)>) -> TestRegistry {
        let tls_yaml = tls.map_or(String::new(), |(cert, key)| {
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            )
        });
        let dir = temp_dir("registry");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let sh = Shell::new().unwrap();
        let (auth_yaml, token) = match &auth {
            Auth::Anonymous => (String::new(), None),
            Auth::Basic { user, password } => {
                let line = cmd!(sh, "htpasswd -Bbn {user} {password}")
                    .quiet()
                    .read()
                    .expect("htpasswd (apache2-utils)");
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, format!("{}\n", line.trim())).unwrap();
                (
                    format!(
                        "auth:\n  htpasswd:\n    realm: xtask-test\n    path: {}\n",
                        path.display()
                    ),
                    None,
                )
            }
            Auth::Token { user, password } => {
                let server = TokenServer::start(dir.path(), user, password);
                (
                    format!(
                        "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                        server.realm,
                        server.service,
                        server.issuer,
                        server.cert.display()
                    ),
                    Some(server),
                )
            }
        };
        let mut last_log = String::new();
        for _ in 0..5 {
            let address = format!("127.0.0.1:{}", free_port());
            let config = format!(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {address}\n  secret: xtask-test-secret\n{tls_yaml}{auth_yaml}",
                storage.display()
            );
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config).unwrap();
            let log_path = dir.path().join("registry.log");
            let log = std::fs::File::create(&log_path).unwrap();
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("docker-registry is installed (apt-get install docker-registry)");
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(15) {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if let Ok(mut stream) = TcpStream::connect(&address) {
                    let _ = write!(
                        stream,
                        "GET /v2/ HTTP/1.1\r\nHost: {address}\r\nUser-Agent: {PROBE_AGENT}\r\nConnection: close\r\n\r\n"
                    );
                    let mut answer = String::new();
                    let _ = stream.read_to_string(&mut answer);
                    // A TLS-only registry answers plain HTTP with 400 "Client sent an HTTP request to an
                    // HTTPS server": up, too.
                    let tls_up = tls.is_some() && answer.contains("HTTPS server");
                    if answer.starts_with("HTTP/1.1 200")
                        || answer.starts_with("HTTP/1.1 401")
                        || tls_up
                    {
                        return TestRegistry {
                            address,
                            auth,
                            dir,
                            child,
                            token,
                        };
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
        }
        panic!("docker-registry did not start:\n{last_log}");
    }

    /// `127.0.0.1:PORT/<repository>`
    pub fn reference(&self, repository: &str) -> String {
        format!("{}/{repository}", self.address)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Where the registry keeps its blobs and manifests.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// A hash of every file (path and bytes) in the registry's storage: equal means byte-for-byte unchanged.
    pub fn storage_hash(&self) -> String {
        fn walk(dir: &Path, root: &Path, hasher: &mut Sha256, count: &mut usize) {
            let mut entries: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for path in entries {
                if path.is_dir() {
                    walk(&path, root, hasher, count);
                } else {
                    let bytes = std::fs::read(&path).unwrap();
                    let name = path.strip_prefix(root).unwrap().to_string_lossy();
                    hasher.update(name.as_bytes());
                    hasher.update([0]);
                    hasher.update((bytes.len() as u64).to_le_bytes());
                    hasher.update(&bytes);
                    *count += 1;
                }
            }
        }
        let storage = self.storage();
        let mut hasher = Sha256::new();
        let mut count = 0;
        walk(&storage, &storage, &mut hasher, &mut count);
        format!("{count} files, sha256:{:x}", hasher.finalize())
    }

    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token.as_ref()
    }

    /// `user:password` for skopeo's `--creds`.
    pub fn creds(&self) -> Option<String> {
        self.auth.user_password().map(|(u, p)| format!("{u}:{p}"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The access log: every request the registry answered, in order (but the harness's readiness probe).
    pub fn requests(&self) -> Vec<Request> {
        self.log()
            .lines()
            .filter(|line| !line.contains(PROBE_AGENT))
            .filter_map(|line| {
                // 127.0.0.1 - - [date] "HEAD /v2/x HTTP/1.1" 404 157 "" "agent"
                let (_, rest) = line.split_once("] \"")?;
                let (request, rest) = rest.split_once("\" ")?;
                let mut parts = request.split(' ');
                let method = parts.next()?.to_owned();
                let path = parts.next()?.to_owned();
                let status = rest.split(' ').next()?.parse().ok()?;
                Some(Request {
                    method,
                    path,
                    status,
                })
            })
            .collect()
    }

    /// The requests after the first `n`.
    pub fn requests_since(&self, n: usize) -> Vec<Request> {
        self.requests().into_iter().skip(n).collect()
    }

    /// `method path` straight to the registry (past any proxy) with its own credentials (Basic, or a pull token
    /// from its token server for the repository the path names) and every manifest media type accepted: the one
    /// way the tests read a registry over HTTP. Status 0: no answer.
    pub fn fetch(&self, method: &str, path: &str) -> Answer {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(path))
            .header("accept", ACCEPT);
        match &self.auth {
            Auth::Anonymous => {}
            Auth::Basic { user, password } => {
                request = request.header(
                    "authorization",
                    format!("Basic {}", b64(format!("{user}:{password}").as_bytes())),
                );
            }
            Auth::Token { .. } => {
                let server = self.token.as_ref().unwrap();
                let repository = path
                    .strip_prefix("/v2/")
                    .and_then(|p| {
                        ["/tags/", "/manifests/", "/blobs/"]
                            .iter()
                            .find_map(|m| p.split_once(m).map(|(repo, _)| repo))
                    })
                    .unwrap_or("");
                let token = server.issue("tester", &[format!("repository:{repository}:pull")]);
                request = request.header("authorization", format!("Bearer {token}"));
            }
        }
        match agent.run(request.body(()).unwrap()) {
            Ok(mut response) => Answer {
                status: response.status().as_u16(),
                digest: response
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body: response.body_mut().read_to_vec().unwrap_or_default(),
            },
            Err(_) => Answer {
                status: 0,
                digest: None,
                body: Vec::new(),
            },
        }
    }

    /// Uploads a blob to an anonymous registry in one request (POST, then PUT with the digest); returns the digest.
    pub fn put_blob(&self, repository: &str, bytes: &[u8]) -> String {
        assert!(
            matches!(self.auth, Auth::Anonymous),
            "put_blob needs an anonymous registry"
        );
        let agent = ureq::agent();
        let digest = sha256(bytes);
        let started = agent
            .post(&self.url(&format!("/v2/{repository}/blobs/uploads/")))
            .send_empty()
            .expect("start an upload");
        let location = started.headers()["location"].to_str().unwrap().to_owned();
        let url = if location.starts_with('/') {
            self.url(&location)
        } else {
            location
        };
        let separator = if url.contains('?') { '&' } else { '?' };
        agent
            .put(&format!("{url}{separator}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .send(bytes)
            .expect("finish the upload");
        digest
    }

    /// PUTs a manifest into an anonymous registry under `reference` (a tag or its digest); returns its digest.
    pub fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> String {
        assert!(
            matches!(self.auth, Auth::Anonymous),
            "put_manifest needs an anonymous registry"
        );
        ureq::agent()
            .put(&self.url(&format!("/v2/{repository}/manifests/{reference}")))
            .header("content-type", media_type)
            .send(bytes)
            .expect("put the manifest");
        sha256(bytes)
    }

    /// The repositories the registry holds (`GET /v2/_catalog`).
    pub fn repositories(&self) -> Vec<String> {
        let answer = self.fetch("GET", "/v2/_catalog");
        let body = String::from_utf8_lossy(&answer.body);
        assert_eq!(answer.status, 200, "catalog of {}: {body}", self.address);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        json["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect()
    }

    /// The tags of a repository, or the error status and body (distribution answers 404 NAME_UNKNOWN for a
    /// repository that holds only untagged manifests).
    pub fn tags(&self, repository: &str) -> Result<Vec<String>, (u16, String)> {
        let answer = self.fetch("GET", &format!("/v2/{repository}/tags/list"));
        assert_ne!(answer.status, 0, "no answer from {}", self.address);
        let body = String::from_utf8_lossy(&answer.body).into_owned();
        if answer.status != 200 {
            return Err((answer.status, body));
        }
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        Ok(value["tags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default())
    }

    /// The manifest `repository@digest` as skopeo reads it (an independent client).
    pub fn skopeo_raw(&self, repository: &str, digest: &str) -> Vec<u8> {
        self.skopeo_inspect(&format!("{repository}@{digest}"), &["--raw"])
            .unwrap_or_else(|| panic!("{repository}@{digest} is not in the registry"))
    }

    /// `skopeo inspect FLAGS` of `image` (`repository:tag` or `repository@digest`) with the registry's credentials;
    /// `None` when the registry does not have it, a panic on any other failure.
    pub fn skopeo_inspect(&self, image: &str, flags: &[&str]) -> Option<Vec<u8>> {
        let sh = Shell::new().unwrap();
        let image = format!("docker://{}", self.reference(image));
        let creds = self.creds().map(|c| format!("--creds={c}"));
        let output = cmd!(
            sh,
            "skopeo inspect --tls-verify=false {creds...} {flags...} {image}"
        )
        .quiet()
        .ignore_status()
        .output()
        .unwrap();
        if output.status.success() {
            return Some(output.stdout);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("manifest unknown") || stderr.contains("not found"),
            "skopeo inspect {image}: {stderr}"
        );
        None
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Token server

/// One request the token server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// The Basic user, if any.
    pub user: Option<String>,
    pub scopes: Vec<String>,
    pub granted: bool,
    /// A POST of the OAuth2 refresh grant (an identity token) rather than a GET with Basic.
    pub refresh: bool,
}

/// A Docker token server (the Bearer flow of GHCR and Docker Hub) on a free loopback port: checks Basic
/// credentials, answers `{"token": JWT, "expires_in": 300}` with the requested repository actions granted.
pub struct TokenServer {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub cert: PathBuf,
    key: PathBuf,
    x5c: String,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl TokenServer {
    fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        let sh = Shell::new().unwrap();
        let key = dir.join("token-key.pem");
        let cert = dir.join("token-cert.pem");
        cmd!(
            sh,
            "openssl ecparam -name prime256v1 -genkey -noout -out {key}"
        )
        .quiet()
        .run()
        .expect("openssl");
        cmd!(
            sh,
            "openssl req -new -x509 -key {key} -out {cert} -days 2 -subj /CN=xtask-test-token"
        )
        .quiet()
        .ignore_stderr()
        .run()
        .unwrap();
        let der = cmd!(sh, "openssl x509 -in {cert} -outform DER")
            .quiet()
            .output()
            .unwrap()
            .stdout;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = TokenServer {
            realm: format!("http://127.0.0.1:{port}/token"),
            service: "xtask-test-registry".into(),
            issuer: "xtask-test-issuer".into(),
            cert,
            key,
            x5c: b64(&der),
            requests: Arc::default(),
            stop: Arc::default(),
            port,
        };
        let signer = server.signer();
        let requests = server.requests.clone();
        let stop = server.stop.clone();
        let expected = format!("Basic {}", b64(format!("{user}:{password}").as_bytes()));
        // An identity token (Docker's refresh token) is accepted when it equals the password.
        let refresh_token = password.to_owned();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let _ = serve_token(stream, &signer, &expected, &refresh_token, &requests);
            }
        });
        server
    }

    fn signer(&self) -> Signer {
        Signer {
            key: self.key.clone(),
            x5c: self.x5c.clone(),
            service: self.service.clone(),
            issuer: self.issuer.clone(),
        }
    }

    /// Every token request so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// A token granting `scopes` (for the tests' own reads).
    pub fn issue(&self, subject: &str, scopes: &[String]) -> String {
        self.signer().token(subject, scopes)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

#[derive(Clone)]
struct Signer {
    key: PathBuf,
    x5c: String,
    service: String,
    issuer: String,
}

impl Signer {
    /// An ES256 JWT as distribution's token auth checks it: x5c header chaining to the rootcertbundle, aud =
    /// service, iss = issuer, and `access` listing what each scope asked for.
    fn token(&self, subject: &str, scopes: &[String]) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|scope| {
                let mut parts = scope.splitn(3, ':');
                let kind = parts.next()?;
                let name = parts.next()?;
                let actions: Vec<&str> = parts.next()?.split(',').collect();
                Some(serde_json::json!({"type": kind, "name": name, "actions": actions}))
            })
            .collect();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [self.x5c]});
        let claims = serde_json::json!({
            "iss": self.issuer, "sub": subject, "aud": self.service,
            "exp": now + 300, "nbf": now - 10, "iat": now,
            "jti": format!("{now}-{}", rand_u64()), "access": access,
        });
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sh = Shell::new().unwrap();
        let key = &self.key;
        let der = cmd!(sh, "openssl dgst -sha256 -sign {key}")
            .stdin(input.as_bytes())
            .quiet()
            .output()
            .unwrap()
            .stdout;
        format!("{input}.{}", b64url(&der_to_raw(&der)))
    }
}

fn rand_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    COUNTER.fetch_add(1, Ordering::Relaxed)
        ^ SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
}

/// ECDSA's DER `SEQUENCE { INTEGER r, INTEGER s }` -> JWS's raw r||s, 32 bytes each.
fn der_to_raw(der: &[u8]) -> Vec<u8> {
    assert_eq!(der[0], 0x30, "DER sequence");
    let mut pos = if der[1] & 0x80 != 0 {
        2 + (der[1] & 0x7f) as usize
    } else {
        2
    };
    let mut out = Vec::with_capacity(64);
    for _ in 0..2 {
        assert_eq!(der[pos], 0x02, "DER integer");
        let len = der[pos + 1] as usize;
        let int = &der[pos + 2..pos + 2 + len];
        let int = &int[int.len().saturating_sub(32)..];
        out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        out.extend_from_slice(int);
        pos += 2 + len;
    }
    out
}

fn serve_token(
    stream: TcpStream,
    signer: &Signer,
    expected: &str,
    refresh_token: &str,
    requests: &Mutex<Vec<TokenRequest>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_owned());
            }
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut form = vec![0; length.min(64 << 10)];
    reader.read_exact(&mut form)?;
    let form = String::from_utf8_lossy(&form).into_owned();
    let target = request_line.split(' ').nth(1).unwrap_or("");
    let refresh = request_line.starts_with("POST ");
    // The refresh grant carries its parameters in the form body; GET in the query.
    let query = if refresh {
        form.as_str()
    } else {
        target.split_once('?').map_or("", |(_, q)| q)
    };
    let field = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(&format!("{name}=")[..]))
            .map(percent_decode)
    };
    let scopes: Vec<String> = query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("scope="))
        .map(percent_decode)
        .collect();
    let user = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| pair.split_once(':').map(|(u, _)| u.to_owned()));
    let granted = if refresh {
        field("grant_type").as_deref() == Some("refresh_token")
            && field("refresh_token").as_deref() == Some(refresh_token)
    } else {
        authorization.as_deref() == Some(expected)
    };
    let anonymous = authorization.is_none() && !refresh;
    requests.lock().unwrap().push(TokenRequest {
        user: user.clone(),
        scopes: scopes.clone(),
        granted,
        refresh,
    });
    let mut stream = stream;
    if granted || anonymous {
        // Anonymous callers get a token that grants nothing, as Docker Hub does for private repositories.
        let granted_scopes = if granted { scopes } else { Vec::new() };
        let token = signer.token(user.as_deref().unwrap_or("anonymous"), &granted_scopes);
        let body = if refresh {
            format!(r#"{{"access_token":"{token}","expires_in":300}}"#)
        } else {
            format!(r#"{{"token":"{token}","expires_in":300}}"#)
        };
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
    } else {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
        write!(
            stream,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
    }
    stream.flush()
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => out.push(b),
                    Err(_) => out.extend_from_slice(&bytes[i..i + 3]),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------------------------
// Synthetic exports

/// An image export as `podman push --format v2s2 IMG dir:DIR` leaves it.
#[derive(Clone, Debug)]
pub struct Export {
    /// The manifest's digest: what the push must produce everywhere.
    pub digest: String,
    pub manifest: Vec<u8>,
    pub config_digest: String,
    /// (digest, size) of each layer.
    pub layers: Vec<(String, u64)>,
    /// Config plus layers, in bytes.
    pub total_size: u64,
}

impl Export {
    /// Writes an image for linux/`arch` with one layer per entry of `layer_sizes` (each a tar holding one file
    /// of about that many pseudo-random bytes) into `dir`.
    pub fn write(dir: &Path, arch: &str, layer_sizes: &[u64]) -> Export {
        Export::write_labelled(dir, arch, layer_sizes, &serde_json::json!({}))
    }

    /// [`Export::write`] with these labels on the image config.
    pub fn write_labelled(
        dir: &Path,
        arch: &str,
        layer_sizes: &[u64],
        labels: &serde_json::Value,
    ) -> Export {
        std::fs::create_dir_all(dir).unwrap();
        let mut layers = Vec::new();
        for (i, &size) in layer_sizes.iter().enumerate() {
            let (digest, len) =
                write_tar_layer(dir, &format!("layer{i}-{arch}.bin"), size, i as u64);
            layers.push((digest, len));
        }
        let diff_ids: Vec<&str> = layers.iter().map(|(d, _)| d.as_str()).collect();
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/app"], "Healthcheck": {"Test": ["CMD", "/app", "health"]}, "Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "xtask test export"}],
        })
        .to_string();
        let config_digest = sha256(config.as_bytes());
        std::fs::write(dir.join(&config_digest[7..]), &config).unwrap();
        let layer_json: Vec<serde_json::Value> = layers
            .iter()
            .map(|(digest, size)| {
                serde_json::json!({
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar",
                    "size": size, "digest": digest,
                })
            })
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": config.len(), "digest": config_digest,
            },
            "layers": layer_json,
        })
        .to_string()
        .into_bytes();
        std::fs::write(dir.join("manifest.json"), &manifest).unwrap();
        std::fs::write(dir.join("version"), "Directory Transport Version: 1.1\n").unwrap();
        Export {
            digest: sha256(&manifest),
            manifest,
            total_size: config.len() as u64 + layers.iter().map(|(_, s)| s).sum::<u64>(),
            config_digest,
            layers,
        }
    }
}

/// A ustar archive with one regular file of `size` pseudo-random bytes, streamed to disk (layers may be large).
/// Returns (digest, archive size).
fn write_tar_layer(dir: &Path, name: &str, size: u64, seed: u64) -> (String, u64) {
    let scratch = dir.join(".layer.tmp");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&scratch).unwrap());
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut put = |bytes: &[u8], file: &mut std::io::BufWriter<std::fs::File>| {
        hasher.update(bytes);
        file.write_all(bytes).unwrap();
        total += bytes.len() as u64;
    };
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..108].copy_from_slice(b"0000644\0");
    header[108..116].copy_from_slice(b"0000000\0");
    header[116..124].copy_from_slice(b"0000000\0");
    header[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    header[136..148].copy_from_slice(b"00000000000\0");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    put(&header, &mut file);
    // xorshift64*: fast, incompressible enough that the bytes sent are the bytes counted.
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ size ^ 0xD1B5_4A32_D192_ED03;
    let mut chunk = vec![0u8; 1 << 16];
    let mut left = size;
    while left > 0 {
        for word in chunk.chunks_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let value = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            word.copy_from_slice(&value[..word.len()]);
        }
        let n = left.min(chunk.len() as u64) as usize;
        put(&chunk[..n], &mut file);
        left -= n as u64;
    }
    let padding = (512 - (size % 512) as usize) % 512;
    put(&vec![0u8; padding + 1024], &mut file);
    file.flush().unwrap();
    drop(file);
    let digest = format!("sha256:{:x}", hasher.finalize());
    std::fs::rename(&scratch, dir.join(&digest[7..])).unwrap();
    (digest, total)
}

// ---------------------------------------------------------------------------------------------------------------
// Running the xtask

/// The variables scrubbed from the xtask's environment so the machine's own logins never leak into a test.
pub const SCRUBBED: &[&str] = &[
    "REGISTRY_USERNAME",
    "REGISTRY_PASSWORD",
    "GHCR_USERNAME",
    "GHCR_TOKEN",
    "GITHUB_ACTOR",
    "GITHUB_TOKEN",
    "DOCKERHUB_USERNAME",
    "DOCKERHUB_TOKEN",
    "REGISTRY_AUTH_FILE",
    "DOCKER_CONFIG",
    "XDG_RUNTIME_DIR",
    "CARGO_TARGET_DIR",
    "GITHUB_OUTPUT",
    "GITHUB_STEP_SUMMARY",
    "GITHUB_EVENT_NAME",
    "GITHUB_REF",
    "GITHUB_SHA",
    "XTASK_REGISTRY_TRACE",
    "XTASK_HTTP_TIMEOUT_MS",
];

/// A run of the xtask binary.
pub struct Xtask {
    command: Command,
    _home: TempDir,
}

/// What a run did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// The largest resident set seen while it ran (VmHWM), in KiB.
    pub peak_rss_kib: u64,
}

impl Run {
    /// Panics with the output unless the run exited 0.
    pub fn success(self) -> Run {
        assert_eq!(
            self.code, 0,
            "xtask failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Xtask {
    pub fn new() -> Xtask {
        let home = temp_dir("home");
        let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
        for name in SCRUBBED {
            command.env_remove(name);
        }
        command
            .env("HOME", home.path())
            .env("XTASK_RETRY_BASE_MS", "10")
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Xtask {
            command,
            _home: home,
        }
    }

    pub fn args<I, S>(mut self, args: I) -> Xtask
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command.args(args);
        self
    }

    pub fn env(mut self, name: &str, value: impl AsRef<std::ffi::OsStr>) -> Xtask {
        self.command.env(name, value);
        self
    }

    /// `image push --platform linux/amd64` of the export under `work` to `to`, its digest file in `work/digests`.
    pub fn push_amd64(work: &Path, to: &str) -> Xtask {
        Xtask::new()
            .args(["image", "push", "--platform", "linux/amd64", "--digest-dir"])
            .args([work.join("digests")])
            .args(["--to", to])
            .target_dir(work)
    }

    /// Runs in `dir` (a clone): the xtask takes the checkout it runs in as its project.
    pub fn current_dir(mut self, dir: &Path) -> Xtask {
        self.command.current_dir(dir);
        self
    }

    /// Where `image push` looks for `image/<os>-<arch>/` (CARGO_TARGET_DIR).
    pub fn target_dir(self, dir: &Path) -> Xtask {
        self.env("CARGO_TARGET_DIR", dir)
    }

    pub fn run(self) -> Run {
        self.run_watched(|_| {})
    }

    /// Like [`Xtask::run`], with `kill -<signal>` sent to the process once `ready()` holds (checked every 10 ms).
    pub fn run_signalled(self, signal: &str, ready: impl Fn() -> bool) -> Run {
        let mut sent = false;
        self.run_watched(|pid| {
            if !sent && ready() {
                let status = Command::new("kill")
                    .args([format!("-{signal}"), pid.to_string()])
                    .status()
                    .expect("run kill");
                assert!(status.success(), "kill -{signal} {pid} failed");
                sent = true;
            }
        })
    }

    /// Cancels the run as GitHub's runner cancels a step, once `ready`: SIGINT, then SIGTERM 7.5 s later and
    /// SIGKILL 2.5 s after that while it still runs. Returns the run and the signals sent.
    pub fn run_cancelled(self, ready: impl Fn() -> bool) -> (Run, Vec<&'static str>) {
        let mut sent: Vec<&'static str> = Vec::new();
        let mut since = None;
        let run = self.run_watched(|pid| {
            let next = match (sent.len(), since.map(|t: Instant| t.elapsed())) {
                (0, _) if ready() => "INT",
                (1, Some(waited)) if waited >= Duration::from_millis(7_500) => "TERM",
                (2, Some(waited)) if waited >= Duration::from_millis(10_000) => "KILL",
                _ => return,
            };
            let status = Command::new("kill")
                .args([format!("-{next}"), pid.to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -{next} {pid} failed");
            since.get_or_insert_with(Instant::now);
            sent.push(next);
        });
        (run, sent)
    }

    /// Runs the xtask to its end, calling `watch` with its pid while it runs.
    fn run_watched(mut self, mut watch: impl FnMut(u32)) -> Run {
        let started = Instant::now();
        let mut child = self.command.spawn().expect("run the xtask binary");
        let pid = child.id();
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let mut peak = 0;
        let status = loop {
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                if let Some(kib) = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                {
                    peak = peak.max(kib);
                }
            }
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            watch(pid);
            std::thread::sleep(Duration::from_millis(10));
        };
        Run {
            code: status.code().unwrap_or(-1),
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
            elapsed: started.elapsed(),
            peak_rss_kib: peak,
        }
    }
}
