//! Test support for pruning: a real distribution registry per test, the pipeline's client for it (anonymous,
//! loopback), synthetic multi-platform images, and a tiny HTTP server for the stand-ins of GitHub's and Docker
//! Hub's APIs.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::rc::Rc;

use crate::image::local_registry::{find_binary, LocalRegistry, Runner};
use crate::oci::media_type::{DOCKER_LIST, DOCKER_MANIFEST};
use crate::oci::{Digest, Manifest};
use crate::registry::retry::Policy;
use crate::registry::{Options, Reference, Registry, Repo, Repository};

fn digest_of(bytes: &[u8]) -> String {
    Digest::of(bytes).to_string()
}

/// A distribution registry (deletion enabled) that stops and removes its storage when dropped.
pub struct TestRegistry {
    inner: Option<LocalRegistry>,
}

impl TestRegistry {
    pub fn start() -> TestRegistry {
        let sh = xshell::Shell::new().unwrap();
        let binary = find_binary(std::env::var_os("PATH").as_deref()).expect(
            "docker-registry (distribution) must be installed: apt-get install docker-registry",
        );
        let inner =
            LocalRegistry::start(&sh, Runner::Binary(binary)).expect("start docker-registry");
        TestRegistry { inner: Some(inner) }
    }

    pub fn address(&self) -> &str {
        &self.inner.as_ref().unwrap().address
    }

    pub fn storage(&self) -> std::path::PathBuf {
        self.inner.as_ref().unwrap().storage()
    }

    /// Digests of the manifests the registry stores for `repository` (its revision links on disk).
    pub fn stored_manifests(&self, repository: &str) -> Vec<String> {
        let dir = self
            .inner
            .as_ref()
            .unwrap()
            .storage()
            .join("docker/registry/v2/repositories")
            .join(repository)
            .join("_manifests/revisions/sha256");
        let mut out: Vec<String> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().join("link").exists())
                    .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.stop(&xshell::Shell::new().unwrap());
        }
    }
}

/// The pipeline's own registry client for a loopback test registry: anonymous, with quick retries (a read racing
/// a write of the same tag can fail with a 500 for an instant in distribution, which the client retries).
pub fn repo(target: &Reference) -> Repo {
    let options = Options {
        policy: Policy::with_base_ms(Some("20")),
        ..Options::default()
    };
    Repo {
        client: Rc::new(Registry::new(target, None, options)),
        target: target.clone(),
    }
}

/// What the tests do to a repository besides what the prune stage does: push synthetic images, look things up.
pub trait Fixture: Repository {
    /// Uploads `bytes` as a blob (nothing if it is there); returns its digest.
    fn push_blob(&self, bytes: &[u8]) -> String;
    /// PUT a manifest under a digest or tag; the registry's refusal as text.
    fn try_put(&self, reference: &str, media_type: &str, bytes: &[u8]) -> Result<(), String>;
    fn put(&self, reference: &str, media_type: &str, bytes: &[u8]) {
        if let Err(err) = self.try_put(reference, media_type, bytes) {
            panic!("{err}");
        }
    }
    /// 200 when the registry has the manifest, 404 when not.
    fn head(&self, reference: &str) -> u16 {
        match self.manifest(reference).unwrap() {
            Some(_) => 200,
            None => 404,
        }
    }
    /// The digest a tag names.
    fn digest_of_tag(&self, tag: &str) -> Option<String> {
        self.resolve(tag).unwrap().map(|d| d.to_string())
    }
    /// The digest of a manifest and what it lists (empty for an image).
    fn read(&self, reference: &str) -> Option<(String, Vec<String>)> {
        let manifest = self.manifest(reference).unwrap()?;
        let children = manifest.children().unwrap();
        Some((
            manifest.digest.to_string(),
            children.iter().map(ToString::to_string).collect(),
        ))
    }
}

impl Fixture for Repo {
    fn push_blob(&self, bytes: &[u8]) -> String {
        // One file per upload: racing releases push the same blob at once.
        static UPLOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let digest = Digest::of(bytes);
        let path = std::env::temp_dir().join(format!(
            "xtask-prune-blob-{}-{}",
            std::process::id(),
            UPLOADS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, bytes).unwrap();
        let pushed = self
            .client
            .push_blob(&self.target.repository, &digest, &path, None);
        let _ = std::fs::remove_file(&path);
        pushed.unwrap();
        digest.to_string()
    }

    fn try_put(&self, reference: &str, media_type: &str, bytes: &[u8]) -> Result<(), String> {
        self.put_manifest(reference, &Manifest::new(media_type, bytes.to_vec()))
            .map_err(|err| format!("PUT manifests/{reference}: {err:#}"))
    }
}

/// One built platform image: its manifest, and the blobs it needs.
pub struct Image {
    pub arch: &'static str,
    pub manifest: Vec<u8>,
    pub blobs: Vec<Vec<u8>>,
}

impl Image {
    pub fn digest(&self) -> String {
        digest_of(&self.manifest)
    }
}

/// A tiny linux image for `arch`; different `seed`s give different digests.
pub fn image(arch: &'static str, seed: &str) -> Image {
    let layer = format!("layer {seed} {arch}").into_bytes();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Labels": {"seed": seed}},
        "rootfs": {"type": "layers", "diff_ids": [digest_of(&layer)]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": config.len(), "digest": digest_of(&config)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": layer.len(), "digest": digest_of(&layer)}],
    }))
    .unwrap();
    Image {
        arch,
        manifest,
        blobs: vec![config, layer],
    }
}

/// A Docker manifest list over these images.
pub fn index(images: &[&Image]) -> Vec<u8> {
    let manifests: Vec<_> = images
        .iter()
        .map(|image| {
            serde_json::json!({
                "mediaType": DOCKER_MANIFEST, "size": image.manifest.len(), "digest": image.digest(),
                "platform": {"architecture": image.arch, "os": "linux"},
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": manifests,
    }))
    .unwrap()
}

/// A two-platform build: its children and its index.
pub struct Build {
    pub amd64: Image,
    pub arm64: Image,
    pub index: Vec<u8>,
}

impl Build {
    pub fn new(seed: &str) -> Build {
        Build::from(image("amd64", seed), image("arm64", seed))
    }

    pub fn from(amd64: Image, arm64: Image) -> Build {
        let index = index(&[&amd64, &arm64]);
        Build {
            amd64,
            arm64,
            index,
        }
    }

    pub fn digest(&self) -> String {
        digest_of(&self.index)
    }

    pub fn children(&self) -> [String; 2] {
        [self.amd64.digest(), self.arm64.digest()]
    }

    /// Pushes children and the index by digest, as the push and manifest stages do; no tag.
    pub fn push(&self, repo: &Repo) {
        if let Err(err) = self.try_push(repo) {
            panic!("{err}");
        }
    }

    /// Pushes, or says why the registry refused the index (its children went missing meanwhile).
    pub fn try_push(&self, repo: &Repo) -> Result<(), String> {
        for image in [&self.amd64, &self.arm64] {
            for blob in &image.blobs {
                repo.push_blob(blob);
            }
            repo.try_put(&image.digest(), DOCKER_MANIFEST, &image.manifest)?;
        }
        repo.try_put(&self.digest(), DOCKER_LIST, &self.index)
    }

    pub fn tag(&self, repo: &Repo, tag: &str) {
        repo.put(tag, DOCKER_LIST, &self.index);
    }
}

/// A request as the stand-in servers see it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    pub fn query(&self, name: &str) -> Option<String> {
        let query = self.target.split_once('?')?.1;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
    }

    /// `page` (from 1) and the page size named `size_name` (at most 100), as both APIs take them.
    pub fn page(&self, size_name: &str, default_size: usize) -> (usize, usize) {
        let number = |name: &str| self.query(name).and_then(|v| v.parse::<usize>().ok());
        (
            number("page").unwrap_or(1),
            number(size_name).unwrap_or(default_size).min(100),
        )
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, value: serde_json::Value) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: value.to_string().into_bytes(),
        }
    }

    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// A minimal HTTP/1.1 server on a loopback port, one thread per connection, `Connection: close`.
pub struct Server {
    pub address: String,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub fn start(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let handler = handler.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &*handler);
                });
            }
        });
        Server { address, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.address);
    }
}

fn serve(stream: TcpStream, handler: &Handler) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Ok(());
    };
    let mut headers = BTreeMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let request = Request {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
        body,
    };
    let response = handler(&request);
    let mut out = stream;
    let mut head = format!("HTTP/1.1 {} X\r\n", response.status);
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let skip_body = request.method == "HEAD";
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        response.body.len()
    ));
    out.write_all(head.as_bytes())?;
    if !skip_body {
        out.write_all(&response.body)?;
    }
    out.flush()
}
