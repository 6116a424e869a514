//! The fault-injecting HTTP/1.1 proxy of the tests: it sits on a loopback port between the xtask and a real
//! registry, sees every request (method, path, body size), and on a seeded random fraction of them answers 503, 429
//! with Retry-After, 500 (once per manifest path, with or without the PUT having reached the registry), resets the
//! connection in the middle of a request body, or stalls past the client's read timeout. [`Rule`]s aim one fault at
//! chosen requests, also ones never drawn at random: any status with an error code, a connection closed before or
//! after the registry acted, a delay before forwarding, an answer trickled out byte by byte.
//!
//! The same seed gives the same faults for the same sequence of requests: the xtask sends its requests one after
//! the other, so a failing seed can be replayed. Every request is logged, faulted or not, so tests can assert that
//! a run made no write (no PUT, POST, PATCH or DELETE) or count the bytes an upload sent.
//!
//! Each request travels on its own connection (the proxy answers `Connection: close`): the end of a response is
//! then the end of the stream, so the proxy only has to understand request framing, and one reset or stall never
//! leaks into the next request.

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the proxy does to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 503 with a distribution-style error body; the registry never sees the request.
    Unavailable,
    /// 429 with this Retry-After value (seconds or an HTTP date); the registry never sees the request.
    TooManyRequests { retry_after: String },
    /// This status with a distribution error body of this code; the registry never sees the request.
    Refused { status: u16, code: String },
    /// Read the whole request, then close the connection without forwarding or answering.
    Dropped,
    /// Forward the request, then close the connection without passing on the answer: the registry acted, the
    /// client cannot know it.
    AppliedThenDropped,
    /// Wait this long (or until the proxy stops), then forward.
    Delay(Duration),
    /// 500 instead of forwarding, at most once per manifest path (a manifest PUT only).
    ManifestPut500Once,
    /// The manifest PUT reaches the registry, then the client gets 500 instead of its answer: the write happened
    /// but the caller cannot know it. At most once per manifest path.
    AppliedThen500,
    /// Read part of the request body (forwarding it), then drop both connections with data still unread, which
    /// makes the kernel send RST (requests with a body only).
    ResetMidBody,
    /// Read the whole request, then answer nothing for [`Plan::stall`] (or until the proxy stops).
    Stall,
    /// Read half the request body, then read nothing more for [`Plan::stall`]: the client's writes block (or it
    /// waits for an answer) (requests with a body only).
    StallMidBody,
    /// Forward, then pass the answer on one byte at a time with this pause between bytes: a registry that is
    /// never silent for long, but never done.
    Trickle { every: Duration },
}

impl Fault {
    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Unavailable => "503",
            Fault::TooManyRequests { .. } => "429",
            Fault::Refused { .. } => "refused",
            Fault::Dropped => "dropped",
            Fault::AppliedThenDropped => "applied-then-dropped",
            Fault::Delay(_) => "delay",
            Fault::ManifestPut500Once => "500-once",
            Fault::AppliedThen500 => "applied-then-500",
            Fault::ResetMidBody => "reset",
            Fault::Stall => "stall",
            Fault::StallMidBody => "stall-mid-body",
            Fault::Trickle { .. } => "trickle",
        }
    }

    fn applies_to(&self, request: &RequestHead) -> bool {
        match self {
            Fault::ManifestPut500Once | Fault::AppliedThen500 => request.is_manifest_put(),
            Fault::ResetMidBody | Fault::StallMidBody => request.has_body(),
            _ => true,
        }
    }

    fn once_per_path(&self) -> bool {
        matches!(self, Fault::ManifestPut500Once | Fault::AppliedThen500)
    }
}

/// A fault for requests that match, checked before the random draw (for tests that need one exact failure).
#[derive(Clone, Debug)]
pub struct Rule {
    /// `PUT`, `HEAD`; `None` matches every method.
    pub method: Option<String>,
    /// A substring of the request target (`/manifests/latest`, `/blobs/uploads/`).
    pub path_contains: Option<String>,
    pub fault: Fault,
    /// How many matching requests pass untouched before it applies (the read-back, not the first read).
    pub skip: u32,
    /// How many more requests it applies to; `None`: all of them.
    pub remaining: Option<u32>,
}

/// How the proxy misbehaves. The default forwards everything untouched.
#[derive(Clone, Debug)]
pub struct Plan {
    pub seed: u64,
    /// The fraction of requests (0.0 to 1.0) that get a random fault.
    pub rate: f64,
    /// The faults drawn from (uniformly among those that apply to the request).
    pub faults: Vec<Fault>,
    pub rules: Vec<Rule>,
    /// How long [`Fault::Stall`] holds a request.
    pub stall: Duration,
    /// Request bodies pass at most this many bytes per second (a slow link), when set.
    pub throttle: Option<u64>,
}

impl Default for Plan {
    fn default() -> Plan {
        Plan {
            seed: 0,
            rate: 0.0,
            faults: Vec::new(),
            rules: Vec::new(),
            stall: Duration::from_secs(30),
            throttle: None,
        }
    }
}

impl Plan {
    /// Every fault kind, on `rate` of the requests, with a zero Retry-After so runs stay fast.
    pub fn random(seed: u64, rate: f64) -> Plan {
        Plan {
            seed,
            rate,
            faults: vec![
                Fault::Unavailable,
                Fault::TooManyRequests {
                    retry_after: "0".into(),
                },
                Fault::ManifestPut500Once,
                Fault::AppliedThen500,
                Fault::ResetMidBody,
                Fault::Stall,
            ],
            ..Plan::default()
        }
    }

    /// Every request stalls.
    pub fn stalled(stall: Duration) -> Plan {
        Plan {
            rate: 1.0,
            faults: vec![Fault::Stall],
            stall,
            ..Plan::default()
        }
    }
}

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub method: String,
    /// The request target (path and query).
    pub path: String,
    pub fault: Option<Fault>,
    /// The status the client got (`None`: reset, stalled, or the registry gave no answer).
    pub status: Option<u16>,
    /// The status the registry answered, when the request reached it.
    pub upstream_status: Option<u16>,
    /// Request body bytes read from the client (payload, without chunk framing).
    pub body_bytes: u64,
    /// Whether the client's request body arrived complete.
    pub body_complete: bool,
}

impl Exchange {
    /// PUT, POST, PATCH or DELETE: a request that may change the registry.
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "PUT" | "POST" | "PATCH" | "DELETE")
    }
}

/// xorshift64*, seeded through splitmix64: small, fast, and the same on every machine.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct State {
    plan: Plan,
    rng: Rng,
    /// Manifest paths that already had their one 500.
    failed_once: HashSet<String>,
    log: Vec<Exchange>,
}

struct Shared {
    upstream: SocketAddr,
    state: Mutex<State>,
    stop: AtomicBool,
    open: AtomicUsize,
    /// Requests held by [`Fault::Delay`] right now.
    holding: AtomicUsize,
}

/// A running proxy; stops (and releases any stalled connection) when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`127.0.0.1:PORT` of a registry).
    pub fn start(upstream: SocketAddr, plan: Plan) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy on loopback");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            state: Mutex::new(State {
                rng: Rng::new(plan.seed),
                plan,
                failed_once: HashSet::new(),
                log: Vec::new(),
            }),
            stop: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            holding: AtomicUsize::new(0),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = shared.clone();
                    shared.open.fetch_add(1, Ordering::SeqCst);
                    std::thread::spawn(move || {
                        // A client that went away mid-request is part of the game, not a proxy failure.
                        let _ = serve(&shared, stream);
                        shared.open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            })
        };
        FaultProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:PORT`: what the xtask is pointed at instead of the registry.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// `127.0.0.1:PORT/<repository>` through the proxy.
    pub fn reference(&self, repository: &str) -> String {
        format!("{}/{repository}", self.addr)
    }

    pub fn socket_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the plan (the random sequence restarts from the new seed; the log is kept).
    pub fn set_plan(&self, plan: Plan) {
        let mut state = self.shared.state.lock().unwrap();
        state.rng = Rng::new(plan.seed);
        state.failed_once.clear();
        state.plan = plan;
    }

    /// How many requests a [`Fault::Delay`] is holding right now.
    pub fn holding(&self) -> usize {
        self.shared.holding.load(Ordering::SeqCst)
    }

    /// Every request so far, in arrival order.
    pub fn log(&self) -> Vec<Exchange> {
        self.shared.state.lock().unwrap().log.clone()
    }

    /// The number of requests so far: a mark for [`FaultProxy::log_since`].
    pub fn mark(&self) -> usize {
        self.shared.state.lock().unwrap().log.len()
    }

    /// The requests that arrived after `mark`.
    pub fn log_since(&self, mark: usize) -> Vec<Exchange> {
        self.shared.state.lock().unwrap().log[mark..].to_vec()
    }

    /// Requests that may have changed the registry (PUT, POST, PATCH, DELETE).
    pub fn writes(&self) -> Vec<Exchange> {
        self.log().into_iter().filter(Exchange::is_write).collect()
    }

    /// Connections still being served (a stalled one counts until its stall ends).
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Waits until no connection is being served (every logged exchange is final); false on timeout.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while self.open_connections() > 0 {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// A request line and its headers.
#[derive(Clone, Debug)]
struct RequestHead {
    method: String,
    target: String,
    /// Name (lowercase) and value, in order.
    headers: Vec<(String, String)>,
}

impl RequestHead {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> Option<u64> {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
    }

    fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn has_body(&self) -> bool {
        self.is_chunked() || self.content_length().unwrap_or(0) > 0
    }

    fn is_manifest_put(&self) -> bool {
        self.method == "PUT" && self.target.contains("/manifests/")
    }

    /// The head as sent upstream: same request, but the connection closes after the answer.
    fn to_upstream(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        for (name, value) in &self.headers {
            if name == "connection" || name == "keep-alive" || name == "proxy-connection" {
                continue;
            }
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("connection: close\r\n\r\n");
        out.into_bytes()
    }
}

/// Reads one line ending in CRLF (or LF); `None` at a clean end of stream.
fn read_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    if line.len() > 64 << 10 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

fn read_head(reader: &mut impl BufRead) -> io::Result<Option<RequestHead>> {
    let Some(line) = read_line(reader)? else {
        return Ok(None);
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad request line",
        ));
    };
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "end inside headers"))?;
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    Ok(Some(RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
    }))
}

/// Copies a request body from the client to `sink` with its framing intact (so the registry sees the same
/// request), stopping after `limit` payload bytes when set. Returns whether the body ended; `payload` counts the
/// payload bytes read, also when the client goes away halfway.
fn copy_body(
    head: &RequestHead,
    reader: &mut impl BufRead,
    sink: &mut dyn Write,
    limit: Option<u64>,
    throttle: Option<u64>,
    payload: &mut u64,
) -> io::Result<bool> {
    let started = Instant::now();
    let pace = |payload: u64| {
        if let Some(rate) = throttle.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(payload as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    };
    let mut buffer = vec![0u8; 16 << 10];
    // Copies `n` raw bytes; false when the limit cut it short.
    let mut copy = |reader: &mut dyn BufRead,
                    sink: &mut dyn Write,
                    mut n: u64,
                    payload: &mut u64|
     -> io::Result<bool> {
        while n > 0 {
            let mut want = n.min(buffer.len() as u64);
            if let Some(limit) = limit {
                if *payload >= limit {
                    return Ok(false);
                }
                want = want.min(limit - *payload);
            }
            let got = reader.read(&mut buffer[..want as usize])?;
            if got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "body cut short",
                ));
            }
            sink.write_all(&buffer[..got])?;
            *payload += got as u64;
            n -= got as u64;
            pace(*payload);
        }
        Ok(true)
    };
    if head.is_chunked() {
        loop {
            let line = read_line(reader)?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "end in chunk size"))?;
            let size = u64::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            sink.write_all(format!("{line}\r\n").as_bytes())?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    let line = read_line(reader)?.unwrap_or_default();
                    sink.write_all(format!("{line}\r\n").as_bytes())?;
                    if line.is_empty() {
                        return Ok(true);
                    }
                }
            }
            if !copy(reader, sink, size, payload)? {
                return Ok(false);
            }
            let end = read_line(reader)?.unwrap_or_default();
            sink.write_all(format!("{end}\r\n").as_bytes())?;
        }
    } else {
        let length = head.content_length().unwrap_or(0);
        copy(reader, sink, length, payload)
    }
}

/// Answers `status` with a distribution error body of `code`.
fn respond(
    client: &mut TcpStream,
    status: u16,
    code: &str,
    retry_after: Option<&str>,
) -> io::Result<()> {
    let reason = match status {
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Injected",
    };
    let body =
        format!(r#"{{"errors":[{{"code":"{code}","message":"injected by the fault proxy"}}]}}"#);
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(value) = retry_after {
        out.push_str(&format!("retry-after: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    client.write_all(out.as_bytes())?;
    client.flush()
}

/// Reads the registry's answer and passes it on, with `connection: close`; returns its status. With `trickle`,
/// one byte at a time with that pause between bytes.
fn relay_response(
    upstream: TcpStream,
    client: &mut TcpStream,
    trickle: Option<(Duration, &AtomicBool)>,
) -> io::Result<u16> {
    let mut reader = BufReader::new(upstream);
    let status_line = read_line(&mut reader)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no answer"))?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
    let mut head = format!("{status_line}\r\n");
    loop {
        let line = read_line(&mut reader)?.unwrap_or_default();
        if line.is_empty() {
            break;
        }
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if name != "connection" && name != "keep-alive" {
            head.push_str(&line);
            head.push_str("\r\n");
        }
    }
    head.push_str("connection: close\r\n\r\n");
    match trickle {
        None => {
            client.write_all(head.as_bytes())?;
            io::copy(&mut reader, client)?;
        }
        Some((every, stop)) => {
            let mut rest = head.into_bytes();
            reader.read_to_end(&mut rest)?;
            for byte in rest {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                client.write_all(&[byte])?;
                client.flush()?;
                std::thread::sleep(every);
            }
        }
    }
    client.flush()?;
    Ok(status)
}

/// Reads an answer to the end and returns its status (for a PUT whose answer the client will not see).
fn swallow_response(upstream: TcpStream) -> io::Result<u16> {
    let mut reader = BufReader::new(upstream);
    let status_line = read_line(&mut reader)?.unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
    io::copy(&mut reader, &mut io::sink())?;
    Ok(status)
}

fn choose(state: &mut State, head: &RequestHead) -> Option<Fault> {
    let path_key = || format!("{} {}", head.method, head.target);
    for rule in &mut state.plan.rules {
        let matches = rule.method.as_deref().is_none_or(|m| m == head.method)
            && rule
                .path_contains
                .as_deref()
                .is_none_or(|p| head.target.contains(p))
            && rule.fault.applies_to(head)
            && rule.remaining != Some(0);
        if matches && rule.skip > 0 {
            rule.skip -= 1;
            continue;
        }
        if matches {
            if let Some(n) = &mut rule.remaining {
                *n -= 1;
            }
            return Some(rule.fault.clone());
        }
    }
    if state.plan.rate <= 0.0 || state.plan.faults.is_empty() {
        return None;
    }
    // Two draws per request whatever the outcome, so one request's fault never shifts the next one's.
    let roll = state.rng.next_f64();
    let pick = state.rng.next_u64();
    if roll >= state.plan.rate {
        return None;
    }
    let key = path_key();
    let candidates: Vec<&Fault> = state
        .plan
        .faults
        .iter()
        .filter(|f| f.applies_to(head))
        .filter(|f| !(f.once_per_path() && state.failed_once.contains(&key)))
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let fault = candidates[(pick % candidates.len() as u64) as usize].clone();
    if fault.once_per_path() {
        state.failed_once.insert(key);
    }
    Some(fault)
}

/// Sleeps for `wait`, or until the proxy stops.
fn pause(wait: Duration, stop: &AtomicBool) {
    let until = Instant::now() + wait;
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Serves one connection: one request, then close.
fn serve(shared: &Shared, client: TcpStream) -> io::Result<()> {
    if shared.stop.load(Ordering::SeqCst) {
        return Ok(());
    }
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    // A TLS ClientHello (the client's probe of whether a loopback registry speaks TLS): answer as a plain HTTP
    // server does (Go's answers 400) instead of waiting for a request line that never comes.
    if reader.fill_buf()?.first() == Some(&0x16) {
        client.write_all(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")?;
        return Ok(());
    }
    let Some(head) = read_head(&mut reader)? else {
        return Ok(());
    };
    let (index, fault, stall, throttle) = {
        let mut state = shared.state.lock().unwrap();
        let fault = choose(&mut state, &head);
        let index = state.log.len();
        state.log.push(Exchange {
            method: head.method.clone(),
            path: head.target.clone(),
            fault: fault.clone(),
            status: None,
            upstream_status: None,
            body_bytes: 0,
            body_complete: false,
        });
        (index, fault, state.plan.stall, state.plan.throttle)
    };
    let record = |f: &mut dyn FnMut(&mut Exchange)| {
        let mut state = shared.state.lock().unwrap();
        f(&mut state.log[index]);
    };
    // Copies the request body to `sink` and logs how much of it came.
    let body = |reader: &mut BufReader<TcpStream>,
                sink: &mut dyn Write,
                limit: Option<u64>|
     -> io::Result<()> {
        let mut bytes = 0;
        let result = copy_body(&head, reader, sink, limit, throttle, &mut bytes);
        let complete = matches!(result, Ok(true));
        record(&mut |e| {
            e.body_bytes = bytes;
            e.body_complete = complete;
        });
        result.map(|_| ())
    };
    let drain = |reader: &mut BufReader<TcpStream>| body(reader, &mut io::sink(), None);
    // Answers in the registry's place, which never sees the request.
    let refuse = |reader: &mut BufReader<TcpStream>,
                  client: &mut TcpStream,
                  status: u16,
                  code: &str,
                  retry_after: Option<&str>|
     -> io::Result<()> {
        drain(reader)?;
        respond(client, status, code, retry_after)?;
        record(&mut |e| e.status = Some(status));
        Ok(())
    };
    match fault {
        None | Some(Fault::Trickle { .. } | Fault::Delay(_)) => {
            let trickle = match fault {
                Some(Fault::Trickle { every }) => Some((every, &shared.stop)),
                _ => None,
            };
            if let Some(Fault::Delay(wait)) = fault {
                shared.holding.fetch_add(1, Ordering::SeqCst);
                pause(wait, &shared.stop);
                shared.holding.fetch_sub(1, Ordering::SeqCst);
            }
            let mut upstream = TcpStream::connect(shared.upstream)?;
            upstream.write_all(&head.to_upstream())?;
            if let Err(err) = body(&mut reader, &mut upstream, None) {
                // The client went away mid-body: the registry sees the same cut.
                let _ = upstream.shutdown(Shutdown::Both);
                return Err(err);
            }
            upstream.flush()?;
            let status = relay_response(upstream, &mut client, trickle)?;
            record(&mut |e| {
                e.status = Some(status);
                e.upstream_status = Some(status);
            });
        }
        Some(Fault::Unavailable) => refuse(&mut reader, &mut client, 503, "UNAVAILABLE", None)?,
        Some(Fault::TooManyRequests { ref retry_after }) => refuse(
            &mut reader,
            &mut client,
            429,
            "TOOMANYREQUESTS",
            Some(retry_after),
        )?,
        Some(Fault::Refused { status, ref code }) => {
            refuse(&mut reader, &mut client, status, code, None)?
        }
        Some(Fault::ManifestPut500Once) => refuse(&mut reader, &mut client, 500, "UNKNOWN", None)?,
        Some(Fault::Dropped) => {
            drain(&mut reader)?;
            let _ = client.shutdown(Shutdown::Both);
        }
        Some(Fault::AppliedThen500 | Fault::AppliedThenDropped) => {
            let mut upstream = TcpStream::connect(shared.upstream)?;
            upstream.write_all(&head.to_upstream())?;
            body(&mut reader, &mut upstream, None)?;
            upstream.flush()?;
            let upstream_status = swallow_response(upstream)?;
            record(&mut |e| e.upstream_status = Some(upstream_status));
            if fault == Some(Fault::AppliedThen500) {
                respond(&mut client, 500, "UNKNOWN", None)?;
                record(&mut |e| e.status = Some(500));
            } else {
                let _ = client.shutdown(Shutdown::Both);
            }
        }
        Some(Fault::ResetMidBody) => {
            // Half of a known length, else the first 64 bytes of a chunked body: either way some stays unread.
            let limit = head.content_length().map_or(64, |n| n / 2);
            let mut upstream = TcpStream::connect(shared.upstream)?;
            upstream.write_all(&head.to_upstream())?;
            body(&mut reader, &mut upstream, Some(limit))?;
            let _ = upstream.shutdown(Shutdown::Both);
            drop(upstream);
            // Unread bytes in the receive queue turn the close into a reset. Wait briefly for the rest of the body
            // to arrive first, so there is something unread even for a small body.
            std::thread::sleep(Duration::from_millis(20));
            drop(reader);
            drop(client);
        }
        Some(Fault::StallMidBody) => {
            let limit = head.content_length().map_or(64, |n| n / 2);
            body(&mut reader, &mut io::sink(), Some(limit))?;
            pause(stall, &shared.stop);
            let _ = client.shutdown(Shutdown::Both);
        }
        Some(Fault::Stall) => {
            drain(&mut reader)?;
            pause(stall, &shared.stop);
            let _ = client.shutdown(Shutdown::Both);
        }
    }
    Ok(())
}
