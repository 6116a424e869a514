//! Hostile registries: fakes on loopback, with distinct 127.0.0.x addresses standing for distinct hosts, that try
//! every way seen to get a registry's credentials sent elsewhere (redirects that answer 401, upload locations and
//! page links on other hosts or disguised with userinfo or a longer port, token realms elsewhere or on plain HTTP),
//! a redirected write, endless pagination and text that would forge log lines. The marker password and token
//! reach no listener but the registry's own origin, and every attempt ends in a clear error, never a silent
//! success. Also here: proxies (never for loopback, honoured otherwise), a TLS registry with a private CA, the
//! environment of the processes the xtask starts, and identity tokens.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use xshell::{cmd, Shell};

use crate::support::registry::{self as harness, sha256, Auth, Export, Run, TestRegistry, Xtask};

const USER: &str = "ci-bot";
const MARKER: &str = "hostile-marker-pw-5e0c1a";
const REPO: &str = "team/app";

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn basic() -> String {
    format!("Basic {}", b64(&format!("{USER}:{MARKER}")))
}

// ---------------------------------------------------------------------------------------------------------------
// A scriptable HTTP server that records everything it is sent

/// One request as it arrived: the head verbatim (so any header can be searched for the marker) and the body.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    target: String,
    head: String,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn reply(status: u16) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

impl Reply {
    fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A plain-HTTP server on one loopback address. A TLS ClientHello is answered with a plain 400, as Go's servers do.
struct Fake {
    /// `127.0.0.x:PORT`
    addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    fn start(ip: &str, handler: Handler) -> Fake {
        Fake::on(TcpListener::bind(format!("{ip}:0")).unwrap(), handler)
    }

    fn on(listener: TcpListener, handler: Handler) -> Fake {
        let addr = listener.local_addr().unwrap().to_string();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (handler, log) = (handler.clone(), log.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &*handler, &log);
                });
            }
        });
        Fake { addr, seen }
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Whether any request this listener got holds `needle` anywhere (head or body).
    fn saw(&self, needle: &str) -> bool {
        self.requests()
            .iter()
            .any(|r| r.head.contains(needle) || String::from_utf8_lossy(&r.body).contains(needle))
    }
}

fn serve(
    stream: TcpStream,
    handler: &dyn Fn(&Seen) -> Reply,
    log: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    if reader.fill_buf()?.first() == Some(&0x16) {
        return stream.write_all(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n");
    }
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut parts = head.split(' ');
    let (method, target) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    let mut seen = Seen {
        method,
        target,
        head,
        body: Vec::new(),
    };
    let length: usize = seen
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    seen.body = body;
    log.lock().unwrap().push(seen.clone());
    let answer = handler(&seen);
    let mut out = format!(
        "HTTP/1.1 {} X\r\nconnection: close\r\ncontent-length: {}\r\n",
        answer.status,
        answer.body.len()
    );
    for (name, value) in &answer.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    stream.write_all(out.as_bytes())?;
    if seen.method != "HEAD" {
        stream.write_all(&answer.body)?;
    }
    stream.flush()
}

/// What a registry that wants Basic credentials answers, for the push flow; `twist` answers first where it
/// wants (the attack), after the credentials were checked.
fn registry(twist: impl Fn(&Seen) -> Option<Reply> + Send + Sync + 'static) -> Handler {
    Arc::new(move |req: &Seen| {
        if req.header("authorization").as_deref() != Some(&basic()) {
            return reply(401).header("www-authenticate", r#"Basic realm="fake""#);
        }
        if let Some(answer) = twist(req) {
            return answer;
        }
        standard(req)
    })
}

/// A registry that answers 401 with `challenge` to everything (its token flow is the attack).
fn challenging(challenge: &'static str) -> Handler {
    Arc::new(move |_req: &Seen| reply(401).header("www-authenticate", challenge))
}

fn standard(req: &Seen) -> Reply {
    let path = req.path();
    match req.method.as_str() {
        "GET" if path == "/v2/" => reply(200),
        "HEAD" if path.contains("/blobs/") => reply(404),
        "POST" if path.ends_with("/blobs/uploads/") => {
            reply(202).header("location", format!("/v2/{REPO}/blobs/uploads/1"))
        }
        "PUT" if path.contains("/blobs/uploads/") => reply(201),
        "PUT" if path.contains("/manifests/") => {
            reply(201).header("docker-content-digest", sha256(&req.body))
        }
        _ => reply(404),
    }
}

/// A host that must never be contacted with credentials: asks for them, and offers a token for them.
fn bait() -> Handler {
    Arc::new(|req: &Seen| {
        if req.path().ends_with("/token") {
            return reply(200).body(r#"{"token":"attacker-token","expires_in":300}"#);
        }
        reply(401).header(
            "www-authenticate",
            r#"Bearer realm="http://127.0.0.3:1/token",service="evil""#,
        )
    })
}

fn push(work: &Path, to: &str) -> Xtask {
    Xtask::push_amd64(work, to)
        .env("REGISTRY_USERNAME", USER)
        .env("REGISTRY_PASSWORD", MARKER)
        .env("XTASK_RETRY_BASE_MS", "1")
}

fn export(name: &str) -> harness::TempDir {
    let work = harness::temp_dir(name);
    Export::write(&work.path().join("image/linux-amd64"), "amd64", &[300]);
    work
}

fn assert_refused(run: &Run, work: &Path, says: &[&str]) {
    assert_ne!(run.code, 0, "must fail:\n{}", run.stderr);
    for needle in says {
        assert!(
            run.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            run.stderr
        );
    }
    assert!(
        !run.stderr.contains(MARKER) && !run.stdout.contains(MARKER),
        "{}",
        run.stderr
    );
    assert!(
        !work.join("digests/linux-amd64").exists(),
        "a failed push must not write its digest record"
    );
}

/// A port P whose decimal P·10+1 is free too: `127.0.0.1:P` and `127.0.0.1:P1` as a string prefix pair.
fn prefix_ports() -> (TcpListener, TcpListener) {
    for _ in 0..200 {
        let seed = harness::free_port() as u32;
        let short = 1025 + seed % (6553 - 1025);
        let long = short * 10 + 1;
        if let (Ok(a), Ok(b)) = (
            TcpListener::bind(("127.0.0.1", short as u16)),
            TcpListener::bind(("127.0.0.1", long as u16)),
        ) {
            return (a, b);
        }
    }
    panic!("no free pair of prefix ports");
}

// ---------------------------------------------------------------------------------------------------------------
// The attacks

#[test]
fn credentials_go_to_no_host_but_the_registry() {
    struct Case {
        name: &'static str,
        says: &'static [&'static str],
    }
    // Hosts that must hear nothing with credentials: .2 plays a redirect target / upload host, .3 a token realm.
    let other = Fake::start("127.0.0.2", bait());
    let realm = Fake::start("127.0.0.3", bait());
    let other_addr = other.addr.clone();
    let (short, long) = prefix_ports();
    let long_port = long.local_addr().unwrap().port();
    let long_fake = Fake::on(long, bait());
    let twists: Vec<(Case, Handler)> = vec![
        (
            Case {
                name: "a blob HEAD redirected to a host that asks for credentials",
                says: &["127.0.0.2", "only ever sent to"],
            },
            {
                let to = other_addr.clone();
                registry(move |req| {
                    (req.method == "HEAD" && req.path().contains("/blobs/"))
                        .then(|| reply(307).header("location", format!("http://{to}/blob")))
                })
            },
        ),
        (
            Case {
                name: "an upload location on another host",
                says: &["refusing the upload location", "away from"],
            },
            {
                let to = other_addr.clone();
                registry(move |req| {
                    (req.method == "POST")
                        .then(|| reply(202).header("location", format!("http://{to}/upload")))
                })
            },
        ),
        (
            Case {
                name: "an upload location disguised with userinfo",
                says: &["userinfo"],
            },
            {
                let to = other_addr.clone();
                registry(move |req| {
                    let host = req.header("host").unwrap_or_default();
                    (req.method == "POST").then(|| {
                        reply(202).header("location", format!("http://{host}@{to}/upload"))
                    })
                })
            },
        ),
        (
            Case {
                name: "an upload location on a port that extends the registry's",
                says: &["away from"],
            },
            registry(move |req| {
                (req.method == "POST").then(|| {
                    reply(202).header("location", format!("http://127.0.0.1:{long_port}/upload"))
                })
            }),
        ),
        (
            Case {
                name: "an https token realm on a third host",
                says: &["XTASK_TRUSTED_REALMS=127.0.0.3", "token realm"],
            },
            challenging(r#"Bearer realm="https://127.0.0.3:9/token",service="evil""#),
        ),
        (
            Case {
                name: "a plain-HTTP token realm on another host",
                says: &["plain HTTP"],
            },
            challenging(r#"Bearer realm="http://127.0.0.3:9/token",service="evil""#),
        ),
        (
            Case {
                name: "a plain-HTTP realm disguised with userinfo",
                says: &["userinfo"],
            },
            challenging(r#"Bearer realm="http://[::1]@127.0.0.3:9/token",service="evil""#),
        ),
        (
            Case {
                name: "a manifest PUT redirected to a GET that answers 200",
                says: &["writes never follow a redirect"],
            },
            registry(|req| {
                (req.method == "PUT" && req.path().contains("/manifests/"))
                    .then(|| reply(302).header("location", format!("/v2/{REPO}/manifests/latest")))
            }),
        ),
    ];
    let mut listeners = vec![Some(short)];
    for (case, handler) in twists {
        // The prefix case needs the registry on the short port; the others take any.
        let registry = match listeners.pop().flatten() {
            Some(listener) => Fake::on(listener, handler),
            None => Fake::start("127.0.0.1", handler),
        };
        let work = export("hostile");
        let run = push(work.path(), &format!("{}/{REPO}", registry.addr)).run();
        assert_refused(&run, work.path(), case.says);
        assert!(
            !run.stdout.contains("manifest put"),
            "{}: reported a success:\n{}",
            case.name,
            run.stdout
        );
        for fake in [&other, &realm, &long_fake] {
            assert!(
                !fake.saw(MARKER) && !fake.saw(&b64(&format!("{USER}:{MARKER}"))),
                "{}: {} got the password",
                case.name,
                fake.addr
            );
            assert!(
                fake.requests()
                    .iter()
                    .all(|r| r.header("authorization").is_none()),
                "{}: {} got an Authorization header",
                case.name,
                fake.addr
            );
        }
        // Never a GET of the manifest the redirected PUT pointed at: a write is not turned into a read.
        assert!(registry
            .requests()
            .iter()
            .all(|r| !(r.method == "GET" && r.path().contains("/manifests/"))));
        eprintln!("ok: {}", case.name);
    }
    // The redirect target was reached (without credentials), the upload hosts and realms never.
    assert_eq!(other.requests().len(), 1, "{:?}", other.requests());
    assert!(realm.requests().is_empty() && long_fake.requests().is_empty());
}

/// A `Link` back to the same page, or off the registry's origin, ends the listing with an error at once.
#[test]
fn pagination_cannot_loop_or_leave_the_registry() {
    let elsewhere = Fake::start("127.0.0.2", bait());
    for (link, says) in [
        ("self".to_owned(), "came back again"),
        (
            format!(
                "<http://{}/v2/{REPO}/tags/list?n=2>; rel=\"next\"",
                elsewhere.addr
            ),
            "away from",
        ),
        (
            format!("<http://127.0.0.1@{}/v2/x>; rel=\"next\"", elsewhere.addr),
            "userinfo",
        ),
    ] {
        let link = Arc::new(link);
        let handler = registry(move |req| {
            (req.method == "GET" && req.path().ends_with("/tags/list")).then(|| {
                let next = if link.as_str() == "self" {
                    format!("<{}>; rel=\"next\"", req.target)
                } else {
                    link.to_string()
                };
                reply(200)
                    .header("link", next)
                    .body(r#"{"name":"team/app","tags":["a","b"]}"#)
            })
        });
        let registry = Fake::start("127.0.0.1", handler);
        let work = harness::temp_dir("pages");
        let run = Xtask::new()
            .args([
                "image",
                "prune",
                "--to",
                &format!("{}/{REPO}", registry.addr),
            ])
            .target_dir(work.path())
            .env("REGISTRY_USERNAME", USER)
            .env("REGISTRY_PASSWORD", MARKER)
            .env("XTASK_RETRY_BASE_MS", "1")
            .run();
        assert_ne!(run.code, 0, "{}", run.stderr);
        assert!(run.stderr.contains(says), "{says}:\n{}", run.stderr);
        assert!(run.elapsed < Duration::from_secs(20), "{:?}", run.elapsed);
        let pages = registry
            .requests()
            .iter()
            .filter(|r| r.path().ends_with("/tags/list"))
            .count();
        assert!(pages <= 4, "{pages} pages");
    }
    assert!(
        !elsewhere.saw(MARKER)
            && elsewhere
                .requests()
                .iter()
                .all(|r| r.header("authorization").is_none())
    );
}

/// A registry's error text with a line break, a workflow command and terminal escapes reaches the log and the
/// step summary escaped.
#[test]
fn what_a_registry_says_cannot_forge_log_lines_or_commands() {
    let evil = "oops\n::error title=pwned::owned\r\n::add-mask::x \u{1b}[2J\u{1b}]0;title\u{7}";
    let registry = Fake::start(
        "127.0.0.1",
        registry(move |req| (req.method == "POST").then(|| reply(400).body(evil))),
    );
    let work = export("forge");
    let summary = work.path().join("summary.md");
    let run = push(work.path(), &format!("{}/{REPO}", registry.addr))
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .run();
    assert_eq!(run.code, 4, "{}", run.stderr);
    let summary = std::fs::read_to_string(&summary).unwrap_or_default();
    for (what, text) in [
        ("stderr", &run.stderr),
        ("stdout", &run.stdout),
        ("summary", &summary),
    ] {
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{what} holds a raw escape:\n{text}"
        );
        for line in text.lines() {
            assert!(
                !line.starts_with("::error title=pwned") && !line.starts_with("::add-mask::"),
                "{what} has a forged command line: {line:?}"
            );
        }
    }
    assert!(
        run.stderr.contains("oops"),
        "the registry's words are still shown:\n{}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Proxies

/// A CONNECT proxy that tunnels to `upstream` whatever host is asked for, and records what it was asked.
fn connect_proxy(ip: &str, upstream: String) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind(format!("{ip}:0")).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = asked.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let (upstream, log) = (upstream.clone(), log.clone());
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut reader = BufReader::new(client.try_clone()?);
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                log.lock()
                    .unwrap()
                    .push(head.lines().next().unwrap_or("").to_owned());
                let mut client = client;
                if !head.starts_with("CONNECT ") {
                    return client.write_all(b"HTTP/1.1 405 X\r\ncontent-length: 0\r\n\r\n");
                }
                let server = TcpStream::connect(&upstream)?;
                client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
                let (mut up_read, mut up_write) = (server.try_clone()?, server);
                let mut down = client.try_clone()?;
                let pending = reader.buffer().to_vec();
                up_write.write_all(&pending)?;
                let t = std::thread::spawn(move || std::io::copy(&mut reader, &mut up_write));
                let _ = std::io::copy(&mut up_read, &mut down);
                let _ = t.join();
                Ok(())
            });
        }
    });
    (addr, asked)
}

#[test]
fn loopback_never_goes_through_a_proxy_and_other_hosts_do() {
    let registry = TestRegistry::start(Auth::basic(USER, MARKER));
    let (proxy, asked) = connect_proxy("127.0.0.4", registry.address.clone());
    let proxy_url = format!("http://{proxy}");
    let with_proxies = |x: Xtask| {
        [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ]
        .iter()
        .fold(x, |x, name| x.env(name, &proxy_url))
    };
    let work = export("proxy");
    let run = with_proxies(push(work.path(), &registry.reference(REPO)))
        .run()
        .success();
    assert!(run.stdout.contains("linux/amd64"), "{}", run.stdout);
    assert!(
        asked.lock().unwrap().is_empty(),
        "loopback went through the proxy: {:?}",
        asked.lock().unwrap()
    );

    // A host that is not loopback (a name only the proxy can reach) goes through it, plain HTTP included.
    let work = export("proxy-remote");
    let port = registry.address.rsplit(':').next().unwrap().to_owned();
    let remote = format!("registry.test:{port}");
    let run = with_proxies(push(work.path(), &format!("{remote}/{REPO}")))
        .args(["--insecure-registry", &remote])
        .run()
        .success();
    assert!(run.stdout.contains("linux/amd64"), "{}", run.stdout);
    let asked_now = asked.lock().unwrap().clone();
    assert!(
        !asked_now.is_empty()
            && asked_now
                .iter()
                .all(|line| line.starts_with(&format!("CONNECT {remote} "))),
        "{asked_now:?}"
    );
    // And `no_proxy` sends it direct, where the name does not resolve.
    let work = export("proxy-bypassed");
    let run = with_proxies(push(work.path(), &format!("{remote}/{REPO}")))
        .args(["--insecure-registry", &remote])
        .env("NO_PROXY", "registry.test")
        .env("no_proxy", "registry.test")
        .run();
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert_eq!(asked.lock().unwrap().len(), asked_now.len());
}

// ---------------------------------------------------------------------------------------------------------------
// TLS with a private CA

/// A CA made here, and a certificate for 127.0.0.1 it signed: the registry speaks only TLS with it.
fn private_ca(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let sh = Shell::new().unwrap();
    sh.change_dir(dir);
    cmd!(sh, "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=xtask-test-private-ca")
        .quiet()
        .ignore_stderr()
        .run()
        .unwrap();
    cmd!(sh, "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1")
        .quiet()
        .ignore_stderr()
        .run()
        .unwrap();
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    cmd!(sh, "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.ext")
        .quiet()
        .ignore_stderr()
        .run()
        .unwrap();
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[test]
#[ignore = "needs docker-registry and openssl (cargo xtask ci installs them)"]
fn a_registry_with_a_private_ca_is_used_over_tls_with_ssl_cert_file() {
    let dir = harness::temp_dir("private-ca");
    let (ca, cert, key) = private_ca(dir.path());
    let registry = TestRegistry::start_tls(Auth::basic(USER, MARKER), &cert, &key);

    // Without the CA: a clear error that names the fix, and nothing sent in plain text instead.
    let work = export("tls-untrusted");
    let run = push(work.path(), &registry.reference(REPO)).run();
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(run.stderr.contains("SSL_CERT_FILE"), "{}", run.stderr);

    // With SSL_CERT_FILE: pushed over TLS, no --insecure-registry.
    let work = export("tls-trusted");
    let run = push(work.path(), &registry.reference(REPO))
        .env("SSL_CERT_FILE", &ca)
        .run()
        .success();
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(work.path().join("digests/linux-amd64")).unwrap(),
    )
    .unwrap();
    let digest = record["digest"].as_str().unwrap().to_owned();
    let sh = Shell::new().unwrap();
    let url = format!("https://{}/v2/{REPO}/manifests/{digest}", registry.address);
    let user = format!("{USER}:{MARKER}");
    let accept = "Accept: application/vnd.docker.distribution.manifest.v2+json";
    let stored = cmd!(sh, "curl -sf --cacert {ca} -u {user} -H {accept} {url}")
        .quiet()
        .output()
        .unwrap()
        .stdout;
    assert_eq!(sha256(&stored), digest, "{}", run.stdout);
}

#[test]
#[ignore = "needs docker-registry and openssl (cargo xtask ci installs them)"]
fn the_trust_store_is_read_only_for_a_registry_spoken_to_over_tls() {
    let missing = "/nonexistent/xtask-test-bundle.pem";
    // A plain-HTTP loopback registry: no TLS on the way, so a broken trust store setting is never read.
    let plain = TestRegistry::start(Auth::basic(USER, MARKER));
    let work = export("trust-plain");
    push(work.path(), &plain.reference(REPO))
        .env("SSL_CERT_FILE", missing)
        .run()
        .success();

    // A TLS registry: the same setting is read, and named in the error.
    let dir = harness::temp_dir("trust-tls");
    let (_, cert, key) = private_ca(dir.path());
    let tls = TestRegistry::start_tls(Auth::basic(USER, MARKER), &cert, &key);
    let work = export("trust-tls");
    let run = push(work.path(), &tls.reference(REPO))
        .env("SSL_CERT_FILE", missing)
        .run();
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("SSL_CERT_FILE={missing}")),
        "{}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------------------------------------------
// What children inherit

/// Wrappers that write their environment (from /proc/self/environ) to a file, then do their job: `podman` runs the
/// real one (and stops a `podman build` early, which is enough to see what it got), the credential helper answers.
fn environment_recorders(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let sh = Shell::new().unwrap();
    let podman = cmd!(sh, "which podman").read().expect("podman on PATH");
    let record = |name: &str| {
        format!(
            "tr '\\0' '\\n' < /proc/$$/environ > {}/env-{name}-$$\n",
            dir.display()
        )
    };
    let scripts = [
        (
            "podman",
            format!("#!/bin/sh\n{}[ \"$1\" = build ] && exit 1\nexec {podman} \"$@\"\n", record("podman")),
        ),
        (
            "docker-credential-recorder",
            format!("#!/bin/sh\n{}cat >/dev/null\necho '{{\"Username\":\"{USER}\",\"Secret\":\"{MARKER}\"}}'\n", record("helper")),
        ),
    ];
    for (name, text) in scripts {
        let path = bin.join(name);
        std::fs::write(&path, text).unwrap();
        cmd!(sh, "chmod 755 {path}").run().unwrap();
    }
    bin
}

#[test]
#[ignore = "needs podman and docker-registry (cargo xtask ci installs them)"]
fn children_get_no_secrets_in_their_environment() {
    let dir = harness::temp_dir("child-env");
    let bin = environment_recorders(dir.path());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let secrets: BTreeMap<&str, String> = [
        "GITHUB_TOKEN",
        "GHCR_TOKEN",
        "DOCKERHUB_TOKEN",
        "ACTIONS_RUNTIME_TOKEN",
    ]
    .into_iter()
    .map(|name| (name, format!("{MARKER}-{name}")))
    .collect();
    let with_secrets = |x: Xtask| {
        secrets
            .iter()
            .fold(x.env("PATH", &path), |x, (k, v)| x.env(k, v))
    };

    // A credential helper, asked for a registry's login.
    let registry = TestRegistry::start(Auth::basic(USER, MARKER));
    let auth = dir.path().join("auth.json");
    std::fs::write(
        &auth,
        format!(r#"{{"credHelpers":{{"{}":"recorder"}}}}"#, registry.address),
    )
    .unwrap();
    let work = export("child-env-push");
    let run = with_secrets(
        Xtask::push_amd64(work.path(), &registry.reference(REPO)).env("REGISTRY_AUTH_FILE", &auth),
    )
    .run()
    .success();
    assert!(run.stdout.contains("linux/amd64"), "{}", run.stdout);

    // podman, with a password in the environment as well.
    let run = with_secrets(
        Xtask::new()
            .args(["image", "build", "--platform", "linux/amd64"])
            .target_dir(dir.path()),
    )
    .env("REGISTRY_USERNAME", USER)
    .env("REGISTRY_PASSWORD", MARKER)
    .run();
    assert_eq!(
        run.code, 3,
        "the recorded podman build stops the build:\n{}",
        run.stderr
    );

    let recorded: Vec<(String, String)> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("env-"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    for kind in ["env-helper-", "env-podman-"] {
        assert!(
            recorded.iter().any(|(name, _)| name.starts_with(kind)),
            "no {kind} recorded: {recorded:?}"
        );
    }
    for (name, environ) in &recorded {
        assert!(environ.contains("PATH="), "{name} recorded nothing useful");
        assert!(
            !environ.contains(MARKER),
            "{name} inherited a secret:\n{environ}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Identity tokens

#[test]
#[ignore = "needs docker-registry and openssl (cargo xtask ci installs them)"]
fn an_identity_token_is_exchanged_at_the_realm_never_sent_as_basic() {
    let registry = TestRegistry::start(Auth::token(USER, MARKER));
    let dir = harness::temp_dir("identity-token");
    let auth = dir.path().join("auth.json");
    std::fs::write(
        &auth,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}","identitytoken":"{MARKER}"}}}}}}"#,
            registry.address,
            b64(&format!("{USER}:"))
        ),
    )
    .unwrap();
    let work = export("identity-push");
    let run = Xtask::push_amd64(work.path(), &registry.reference(REPO))
        .env("REGISTRY_AUTH_FILE", &auth)
        .run()
        .success();
    assert!(!run.stderr.contains(MARKER) && !run.stdout.contains(MARKER));
    let tokens = registry.token_server().unwrap().requests();
    assert!(!tokens.is_empty(), "no token was asked for");
    assert!(
        tokens
            .iter()
            .all(|t| t.refresh && t.granted && t.user.is_none()),
        "every token came from the refresh grant, none with Basic: {tokens:?}"
    );
}
