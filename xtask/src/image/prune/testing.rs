//! Test support for pruning: a real distribution registry per test, a plain client for it (anonymous, loopback),
//! synthetic multi-platform images, and a tiny HTTP server for the stand-ins of GitHub's and Docker Hub's APIs.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::oci::{digest_of, Fetched, Registry};
use super::Removal;
use crate::image::local_registry::{find_binary, LocalRegistry, Runner};
use crate::registry::Reference;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPT: &str = "application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json";

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

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// An anonymous client for a loopback registry: enough to push synthetic images and to prune.
#[derive(Clone)]
pub struct Plain {
    agent: ureq::Agent,
}

impl Default for Plain {
    fn default() -> Self {
        Plain { agent: agent() }
    }
}

fn base(target: &Reference) -> String {
    format!("{}/v2/{}", target.base_url(&[]), target.repository)
}

impl Plain {
    /// Retries a 500 a few times, as the registry client does: distribution rewrites a tag's link file in place, so
    /// a read racing a write of the same tag can fail for an instant, and of two racing deletes of one manifest the
    /// loser may get a 500 before the 404.
    fn retrying(
        &self,
        call: impl Fn() -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let mut answer = call();
        for _ in 0..5 {
            if !matches!(&answer, Ok(a) if a.status() == 500) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            answer = call();
        }
        answer
    }

    pub fn push_blob(&self, target: &Reference, bytes: &[u8]) -> String {
        let digest = digest_of(bytes);
        let url = format!("{}/blobs/{digest}", base(target));
        if self.agent.head(&url).call().unwrap().status() == 200 {
            return digest;
        }
        let started = self
            .agent
            .post(&format!("{}/blobs/uploads/", base(target)))
            .send_empty()
            .unwrap();
        assert_eq!(started.status(), 202, "start upload");
        let location = started.headers()["location"].to_str().unwrap().to_owned();
        let location = if location.starts_with('/') {
            format!("{}{location}", target.base_url(&[]))
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let done = self
            .agent
            .put(&format!("{location}{sep}digest={digest}"))
            .header("Content-Type", "application/octet-stream")
            .send(bytes)
            .unwrap();
        assert_eq!(done.status(), 201, "finish upload of {digest}");
        digest
    }

    pub fn put_manifest(
        &self,
        target: &Reference,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) {
        if let Err(err) = self.try_put_manifest(target, reference, media_type, bytes) {
            panic!("{err}");
        }
    }

    pub fn try_put_manifest(
        &self,
        target: &Reference,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), String> {
        let mut answer = self
            .agent
            .put(&format!("{}/manifests/{reference}", base(target)))
            .header("Content-Type", media_type)
            .send(bytes)
            .map_err(|err| err.to_string())?;
        let status = answer.status();
        let body = answer.body_mut().read_to_string().unwrap_or_default();
        if status == 201 {
            Ok(())
        } else {
            Err(format!("PUT manifests/{reference}: {status} {body}"))
        }
    }

    pub fn head(&self, target: &Reference, reference: &str) -> u16 {
        self.agent
            .head(&format!("{}/manifests/{reference}", base(target)))
            .header("Accept", ACCEPT)
            .call()
            .unwrap()
            .status()
            .as_u16()
    }
}

impl Registry for Plain {
    fn tags(&self, target: &Reference) -> anyhow::Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct List {
            tags: Option<Vec<String>>,
        }
        let mut answer = self
            .agent
            .get(&format!("{}/tags/list", base(target)))
            .call()?;
        match answer.status().as_u16() {
            404 => Ok(Vec::new()),
            200 => {
                let list: List = serde_json::from_str(&answer.body_mut().read_to_string()?)?;
                Ok(list.tags.unwrap_or_default())
            }
            status => anyhow::bail!("tags/list answered {status}"),
        }
    }

    fn resolve(&self, target: &Reference, tag: &str) -> anyhow::Result<Option<String>> {
        let answer = self.retrying(|| {
            self.agent
                .head(&format!("{}/manifests/{tag}", base(target)))
                .header("Accept", ACCEPT)
                .call()
        })?;
        match answer.status().as_u16() {
            404 => Ok(None),
            200 => Ok(Some(
                answer.headers()["docker-content-digest"]
                    .to_str()?
                    .to_owned(),
            )),
            status => anyhow::bail!("HEAD manifests/{tag} answered {status}"),
        }
    }

    fn fetch(&self, target: &Reference, reference: &str) -> anyhow::Result<Option<Fetched>> {
        let mut answer = self.retrying(|| {
            self.agent
                .get(&format!("{}/manifests/{reference}", base(target)))
                .header("Accept", ACCEPT)
                .call()
        })?;
        match answer.status().as_u16() {
            404 => Ok(None),
            200 => {
                let media_type = answer
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let bytes = answer.body_mut().read_to_vec()?;
                Ok(Some(Fetched {
                    digest: digest_of(&bytes),
                    media_type,
                    bytes,
                }))
            }
            status => anyhow::bail!("GET manifests/{reference} answered {status}"),
        }
    }

    fn store(&self, target: &Reference, manifest: &Fetched) -> anyhow::Result<()> {
        let answer = self
            .agent
            .put(&format!("{}/manifests/{}", base(target), manifest.digest))
            .header("Content-Type", &manifest.media_type)
            .send(&manifest.bytes[..])?;
        anyhow::ensure!(answer.status() == 201, "PUT answered {}", answer.status());
        Ok(())
    }

    fn delete(&self, target: &Reference, digest: &str) -> anyhow::Result<Removal> {
        let mut answer = self.retrying(|| {
            self.agent
                .delete(&format!("{}/manifests/{digest}", base(target)))
                .call()
        })?;
        Ok(match answer.status().as_u16() {
            200 | 202 => Removal::Deleted,
            404 => Removal::Gone,
            status => Removal::Refused {
                status,
                message: answer.body_mut().read_to_string().unwrap_or_default(),
            },
        })
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
    pub fn push(&self, client: &Plain, target: &Reference) {
        if let Err(err) = self.try_push(client, target) {
            panic!("{err}");
        }
    }

    /// Pushes, or says why the registry refused the index (its children went missing meanwhile).
    pub fn try_push(&self, client: &Plain, target: &Reference) -> Result<(), String> {
        for image in [&self.amd64, &self.arm64] {
            for blob in &image.blobs {
                client.push_blob(target, blob);
            }
            client.try_put_manifest(target, &image.digest(), DOCKER_MANIFEST, &image.manifest)?;
        }
        client.try_put_manifest(target, &self.digest(), DOCKER_LIST, &self.index)
    }

    pub fn tag(&self, client: &Plain, target: &Reference, tag: &str) {
        client.put_manifest(target, tag, DOCKER_LIST, &self.index);
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
