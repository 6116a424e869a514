//! A small HTTP/1.1 server on std::net (one thread per connection, keep-alive, Content-Length and chunked
//! request bodies) and the `healthcheck` client.
//!
//! The service answers tiny JSON requests, so a thread per connection is plenty and keeps the binary free of an
//! async runtime. Limits keep a misbehaving client from exhausting the process: header and body size, a deadline
//! for the whole request head (and for the whole request), an idle limit between kept-alive requests, a cap on
//! connections in all and per client address, and the `Origin` check that MCP's streamable HTTP transport asks for
//! against DNS rebinding.

use crate::calendar::{self, Date};
use crate::mcp;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MAX_HEADER_BYTES: usize = 16 * 1024;
const MAX_BODY_BYTES: usize = 1024 * 1024;
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// The whole request head (request line and headers) must arrive within this, counted from the connection's start
/// or, on a kept-alive connection, from the request's first byte.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole request, body included, from the same start.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a kept-alive connection may wait for its next request (announced in `Keep-Alive: timeout=`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Set once a stop signal arrives: connections finish the request in hand and close.
pub static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);
/// Requests being answered right now, so shutdown can let them finish.
pub static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// What the server is told at start (see `--help`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Browser origins allowed besides the loopback ones, normalised by [`normalize_origin`].
    pub allowed_origins: Vec<String>,
    pub max_connections: usize,
    /// No client address may hold more connections than this, so that one client cannot take every slot.
    pub max_connections_per_client: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            allowed_origins: Vec::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS / 2,
        }
    }
}

pub struct Request {
    pub method: String,
    pub path: String,
    pub keep_alive: bool,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    framing: Framing,
}

/// How the body of a request is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn json(status: u16, v: &serde_json::Value) -> Response {
        Response {
            status,
            content_type: Some("application/json"),
            headers: Vec::new(),
            body: v.to_string().into_bytes(),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// A request the server refuses before routing; the connection closes after the error reply.
#[derive(Debug)]
struct Reject(u16, &'static str);

/// One line, CRLF or LF terminated, counted against the header budget. `Ok(None)` on clean EOF.
fn read_line(
    r: &mut impl BufRead,
    budget: &mut usize,
) -> io::Result<Option<Result<String, Reject>>> {
    let mut buf = Vec::new();
    let n = r
        .by_ref()
        .take(*budget as u64 + 1)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        if n > *budget {
            return Ok(Some(Err(Reject(431, "request head too large"))));
        }
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    *budget -= n;
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(Ok(String::from_utf8_lossy(&buf).into_owned())))
}

/// Reads one request head. `Ok(None)`: the peer closed between requests. `Err`: I/O failure or timeout.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Result<Request, Reject>>> {
    let mut budget = MAX_HEADER_BYTES;
    macro_rules! line {
        () => {
            match read_line(r, &mut budget)? {
                None => return Err(io::ErrorKind::UnexpectedEof.into()),
                Some(Err(rej)) => return Ok(Some(Err(rej))),
                Some(Ok(l)) => l,
            }
        };
    }
    // Tolerate stray empty lines between requests (RFC 9112 section 2.2).
    let request_line = loop {
        match read_line(r, &mut budget)? {
            None => return Ok(None),
            Some(Err(rej)) => return Ok(Some(Err(rej))),
            Some(Ok(l)) if l.is_empty() => continue,
            Some(Ok(l)) => break l,
        }
    };
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(Some(Err(Reject(400, "malformed request line"))));
    };
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ if version.starts_with("HTTP/") => {
            return Ok(Some(Err(Reject(
                505,
                "only HTTP/1.0 and HTTP/1.1 are supported",
            ))))
        }
        _ => return Ok(Some(Err(Reject(400, "malformed request line")))),
    };
    let mut headers = Vec::new();
    loop {
        let l = line!();
        if l.is_empty() {
            break;
        }
        let Some((name, value)) = l.split_once(':') else {
            return Ok(Some(Err(Reject(400, "malformed header line"))));
        };
        if name.is_empty() || name.ends_with(' ') || name.ends_with('\t') {
            return Ok(Some(Err(Reject(400, "malformed header line"))));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let mut req = Request {
        method: method.to_string(),
        path: target.split('?').next().unwrap_or("").to_string(),
        keep_alive: false,
        headers,
        body: Vec::new(),
        framing: Framing::Length(0),
    };
    let connection = req.header("connection").unwrap_or("").to_ascii_lowercase();
    let has_token = |t: &str| connection.split(',').any(|c| c.trim() == t);
    req.keep_alive = if http11 {
        !has_token("close")
    } else {
        has_token("keep-alive")
    };

    let chunked = match req.header("transfer-encoding") {
        None => false,
        Some(te) if te.to_ascii_lowercase().trim_end().ends_with("chunked") => true,
        Some(_) => return Ok(Some(Err(Reject(501, "unsupported Transfer-Encoding")))),
    };
    req.framing = if chunked {
        Framing::Chunked
    } else {
        let mut lengths = req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse::<usize>());
        match (lengths.next(), lengths.next()) {
            (None, _) => Framing::Length(0),
            (Some(Ok(n)), None) => Framing::Length(n),
            _ => return Ok(Some(Err(Reject(400, "invalid Content-Length")))),
        }
    };
    if matches!(req.framing, Framing::Length(n) if n > MAX_BODY_BYTES) {
        return Ok(Some(Err(Reject(413, "request body larger than 1 MiB"))));
    }
    // HTTP/1.0 has no interim responses.
    if !http11 {
        req.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("expect"));
    }
    Ok(Some(Ok(req)))
}

/// Reads the body `req`'s head announced, answering `Expect: 100-continue` first.
fn read_body(
    r: &mut impl BufRead,
    w: &mut impl Write,
    req: &mut Request,
) -> io::Result<Result<(), Reject>> {
    let expects_body = req.framing != Framing::Length(0);
    if expects_body
        && req
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        w.flush()?;
    }
    match req.framing {
        Framing::Length(n) => {
            req.body = vec![0; n];
            r.read_exact(&mut req.body)?;
        }
        Framing::Chunked => {
            // Chunk-size lines and trailers get an allowance of their own.
            let mut budget = MAX_HEADER_BYTES;
            macro_rules! line {
                () => {
                    match read_line(r, &mut budget)? {
                        None => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Some(Err(rej)) => return Ok(Err(rej)),
                        Some(Ok(l)) => l,
                    }
                };
            }
            loop {
                let size_line = line!();
                let hex = size_line.split(';').next().unwrap_or("").trim();
                let Ok(size) = usize::from_str_radix(hex, 16) else {
                    return Ok(Err(Reject(400, "malformed chunk size")));
                };
                if size == 0 {
                    // Trailer fields, up to the final empty line.
                    while !line!().is_empty() {}
                    break;
                }
                if req.body.len() + size > MAX_BODY_BYTES {
                    return Ok(Err(Reject(413, "request body larger than 1 MiB")));
                }
                let start = req.body.len();
                req.body.resize(start + size, 0);
                r.read_exact(&mut req.body[start..])?;
                if !line!().is_empty() {
                    return Ok(Err(Reject(400, "malformed chunk")));
                }
            }
        }
    }
    Ok(Ok(()))
}

/// Head and body in one go (the unit tests' view of the parser).
#[cfg(test)]
fn read_request(
    r: &mut impl BufRead,
    w: &mut impl Write,
) -> io::Result<Option<Result<Request, Reject>>> {
    let mut req = match read_head(r)? {
        Some(Ok(req)) => req,
        other => return Ok(other),
    };
    Ok(Some(read_body(r, w, &mut req)?.map(|()| req)))
}

fn write_response(
    w: &mut impl Write,
    resp: &Response,
    keep_alive: bool,
    head_only: bool,
) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    if let Some(ct) = resp.content_type {
        out.push_str(&format!("Content-Type: {ct}\r\n"));
        if ct == "text/event-stream" {
            out.push_str("Cache-Control: no-cache\r\n");
        }
    }
    for (name, value) in &resp.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    if keep_alive {
        out.push_str(&format!(
            "Connection: keep-alive\r\nKeep-Alive: timeout={}\r\n\r\n",
            IDLE_TIMEOUT.as_secs()
        ));
    } else {
        out.push_str("Connection: close\r\n\r\n");
    }
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(&resp.body);
    }
    w.write_all(&bytes)?;
    w.flush()
}

/// RFC 3339 UTC with milliseconds, e.g. 2025-10-01T04:05:06.789Z.
pub fn timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let date = Date::from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{date}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        since.subsec_millis()
    )
}

pub fn health(uptime: Duration, now: SystemTime) -> serde_json::Value {
    json!({
        "status": "healthy",
        "server": {
            "name": mcp::SERVER_NAME,
            "version": mcp::SERVER_VERSION,
            "uptime": uptime.as_secs(),
        },
        "mcp": {
            "connected": true,
            "toolsAvailable": mcp::TOOL_NAMES.len(),
        },
        "calendar": {
            "years": calendar::covered_years(),
            "otherYears": "Monday-Friday, with a warning",
        },
        "timestamp": timestamp(now),
    })
}

fn not_allowed(allow: &str, message: &str) -> Response {
    let mut r = Response::json(
        405,
        &json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": message}}),
    );
    r.headers.push(("Allow", allow.to_string()));
    r
}

/// `scheme://host[:port]` in lower case without the scheme's default port, or `None` when `origin` is not a
/// serialised origin (the opaque `null`, a path, user info, a bad port).
pub fn normalize_origin(origin: &str) -> Option<String> {
    let (scheme, rest) = origin.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !scheme_ok || rest.is_empty() {
        return None;
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (addr, after) = v6.split_once(']')?;
        addr.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{}]", addr.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c));
        if !host_ok {
            return None;
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    let default_port = match scheme.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    };
    Some(match port {
        Some(p) if Some(p) != default_port => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// A web page served from this machine: http(s) on localhost, *.localhost, 127.0.0.0/8 or [::1], any port.
fn is_loopback_origin(normalized: &str) -> bool {
    let Some(rest) = normalized
        .strip_prefix("http://")
        .or_else(|| normalized.strip_prefix("https://"))
    else {
        return false;
    };
    let host = if rest.starts_with('[') {
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else {
        rest.split(':').next().unwrap_or(rest)
    };
    host == "localhost"
        || host.ends_with(".localhost")
        || host == "[::1"
        || host.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback())
}

/// No `Origin` (not a browser), a loopback origin, or one listed in MCP_ALLOWED_ORIGINS.
pub fn origin_allowed(origin: Option<&str>, settings: &Settings) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    match normalize_origin(origin) {
        Some(o) => is_loopback_origin(&o) || settings.allowed_origins.contains(&o),
        None => false,
    }
}

fn forbidden_origin(origin: &str) -> Response {
    let shown: String = origin.chars().take(200).collect();
    Response::json(
        403,
        &json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": format!(
            "Forbidden: Origin {shown:?} is not allowed (only loopback origins are, by default); add it to MCP_ALLOWED_ORIGINS to let web pages from it call this server"
        )}}),
    )
}

pub fn route(req: &Request, started: Instant, settings: &Settings) -> Response {
    let origin = req.header("origin");
    if !origin_allowed(origin, settings) {
        return forbidden_origin(origin.unwrap_or(""));
    }
    match (req.path.as_str(), req.method.as_str()) {
        ("/healthz", "GET" | "HEAD") => {
            Response::json(200, &health(started.elapsed(), SystemTime::now()))
        }
        ("/healthz", _) => not_allowed("GET, HEAD", "Method not allowed: use GET /healthz"),
        ("/mcp", "POST") => {
            let reply = mcp::handle_post(
                &req.body,
                req.header("accept"),
                req.header("mcp-protocol-version"),
                SystemTime::now(),
            );
            Response {
                status: reply.status,
                content_type: reply.content_type,
                headers: Vec::new(),
                body: reply.body,
            }
        }
        ("/mcp", _) => not_allowed(
            "POST",
            "Method not allowed: this stateless server has no event stream or session; POST JSON-RPC messages to /mcp",
        ),
        (path, _) => Response::json(
            404,
            &json!({"error": format!("Not found: {path}; endpoints are POST /mcp and GET /healthz")}),
        ),
    }
}

/// The socket with a deadline: no read waits past `deadline` (give or take [`DEADLINE_SLACK`]), so a client that
/// trickles bytes cannot stretch a request beyond it (a plain read timeout restarts with every byte). The socket's
/// timeout is changed only when it would overshoot the deadline by more than the slack, so a quick kept-alive
/// exchange costs no extra system call; a timeout that fires before the deadline is re-armed and the read retried.
struct DeadlineStream {
    stream: TcpStream,
    deadline: Instant,
    /// The read timeout set on the socket now.
    armed: Option<Duration>,
}

const DEADLINE_SLACK: Duration = Duration::from_millis(500);

impl DeadlineStream {
    fn new(stream: TcpStream, deadline: Instant) -> DeadlineStream {
        DeadlineStream {
            stream,
            deadline,
            armed: None,
        }
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            if self.armed.is_none_or(|armed| armed > left + DEADLINE_SLACK) {
                self.stream.set_read_timeout(Some(left))?;
                self.armed = Some(left);
            }
            match self.stream.read(buf) {
                Err(e) if is_timeout(&e) && Instant::now() < self.deadline => {
                    // Timed out early (a timeout armed for an earlier, shorter deadline): arm the rest.
                    self.armed = None;
                }
                other => return other,
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn request_timeout(what: &str, limit: Duration) -> Response {
    Response::json(
        408,
        &json!({ "error": format!("{what} not received within {} s", limit.as_secs()) }),
    )
}

fn handle_connection(
    stream: TcpStream,
    accepted: Instant,
    started: Instant,
    settings: &Settings,
) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    // A new connection has HEAD_TIMEOUT from its start for the first head; there is no idle wait before it.
    let mut reader = BufReader::new(DeadlineStream::new(stream, accepted + HEAD_TIMEOUT));
    let mut first = true;
    loop {
        if !first {
            reader.get_mut().deadline = Instant::now() + IDLE_TIMEOUT;
        }
        // Wait for the request's first byte: silence until the deadline just closes the connection.
        match reader.fill_buf() {
            Ok([]) => return Ok(()),
            Ok(_) => {}
            Err(e) if is_timeout(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
        let request_start = if first { accepted } else { Instant::now() };
        first = false;
        reader.get_mut().deadline = request_start + HEAD_TIMEOUT;
        let head = match read_head(&mut reader) {
            Err(e) if is_timeout(&e) => {
                let resp = request_timeout("request head", HEAD_TIMEOUT);
                return write_response(&mut writer, &resp, false, false);
            }
            other => other?,
        };
        let mut req = match head {
            None => return Ok(()),
            Some(Ok(req)) => req,
            Some(Err(Reject(status, why))) => {
                let resp = Response::json(status, &json!({ "error": why }));
                return write_response(&mut writer, &resp, false, false);
            }
        };
        reader.get_mut().deadline = request_start + REQUEST_TIMEOUT;
        match read_body(&mut reader, &mut writer, &mut req) {
            Err(e) if is_timeout(&e) => {
                let resp = request_timeout("request body", REQUEST_TIMEOUT);
                return write_response(&mut writer, &resp, false, false);
            }
            Err(e) => return Err(e),
            Ok(Err(Reject(status, why))) => {
                let resp = Response::json(status, &json!({ "error": why }));
                return write_response(&mut writer, &resp, false, false);
            }
            Ok(Ok(())) => {}
        }
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        let resp = route(&req, started, settings);
        let keep_alive = req.keep_alive && !SHUTTING_DOWN.load(Ordering::SeqCst);
        let written = write_response(&mut writer, &resp, keep_alive, req.method == "HEAD");
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        written?;
        if !keep_alive {
            return Ok(());
        }
    }
}

/// Open connections per client address.
static CLIENTS: Mutex<BTreeMap<IpAddr, usize>> = Mutex::new(BTreeMap::new());

/// A connection's place in [`CLIENTS`], given back however the connection thread ends.
#[derive(Debug)]
struct ConnectionSlot(IpAddr);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut clients = CLIENTS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = clients.get_mut(&self.0) {
            *n -= 1;
            if *n == 0 {
                clients.remove(&self.0);
            }
        }
    }
}

/// A slot for a connection from `ip`, or the refusal to send: 503 when the server is full, 429 when this address
/// holds its share already.
fn admit(ip: IpAddr, settings: &Settings) -> Result<ConnectionSlot, Response> {
    let mut clients = CLIENTS.lock().unwrap_or_else(PoisonError::into_inner);
    let total: usize = clients.values().sum();
    let refuse = |status: u16, why: String| {
        let mut r = Response::json(status, &json!({ "error": why }));
        r.headers.push(("Retry-After", "1".to_string()));
        Err(r)
    };
    if total >= settings.max_connections {
        return refuse(503, "too many connections, retry shortly".into());
    }
    let n = clients.entry(ip).or_insert(0);
    if *n >= settings.max_connections_per_client {
        let limit = settings.max_connections_per_client;
        return refuse(
            429,
            format!("too many connections from {ip} (at most {limit} at a time), retry shortly"),
        );
    }
    *n += 1;
    Ok(ConnectionSlot(ip))
}

pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
}

/// Accepts connections until the process exits; each connection gets its own thread.
pub fn serve(listener: TcpListener, settings: &'static Settings) -> io::Result<()> {
    let started = Instant::now();
    loop {
        let (mut stream, peer) = match listener.accept() {
            Ok(s) => s,
            // Transient accept failures (peer reset before accept, fd exhaustion): back off briefly and go on.
            Err(e) => {
                eprintln!("accept failed: {e}");
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let accepted = Instant::now();
        let slot = match admit(peer.ip().to_canonical(), settings) {
            Ok(slot) => slot,
            Err(resp) => {
                // Never wait on a client that does not read: the reply fits the socket buffer or is dropped.
                let _ = stream.set_nonblocking(true);
                let _ = write_response(&mut stream, &resp, false, false);
                continue;
            }
        };
        let spawned = thread::Builder::new()
            .name("conn".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                // The socket stays open until the slot is given back, so a client that has seen its connection
                // close may open another at once without meeting its own cap.
                let socket = stream.try_clone();
                // Timeouts and resets are normal client behaviour; nothing to report.
                let _ = handle_connection(stream, accepted, started, settings);
                drop(slot);
                drop(socket);
            });
        if let Err(e) = spawned {
            eprintln!("cannot start a connection thread: {e}");
        }
    }
}

/// The address a local client reaches a server bound to `host` on: loopback for the wildcard addresses.
pub fn local_address(host: IpAddr, port: u16) -> SocketAddr {
    let ip = match host {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    SocketAddr::new(ip, port)
}

/// GET http://{addr}/healthz within `timeout`; `Ok` only on status 200.
pub fn healthcheck(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer from {addr} within {timeout:?}"))
    };
    let mut stream = TcpStream::connect_timeout(&addr, remaining()?)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_write_timeout(Some(remaining()?))
        .and_then(|_| {
            write!(
                stream,
                "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )
        })
        .map_err(|e| format!("cannot send the request to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(remaining()?))
        .map_err(|e| e.to_string())?;
    let mut status_line = String::new();
    BufReader::new(stream.take(8 * 1024))
        .read_line(&mut status_line)
        .map_err(|e| format!("no answer from {addr}: {e}"))?;
    let status = status_line.split(' ').nth(1).unwrap_or("");
    if status_line.starts_with("HTTP/1.") && status == "200" {
        Ok(())
    } else {
        Err(format!(
            "GET http://{addr}/healthz answered {:?}",
            status_line.trim_end()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Request, Reject> {
        let mut r = io::Cursor::new(raw.as_bytes().to_vec());
        let mut w = Vec::new();
        read_request(&mut r, &mut w).unwrap().unwrap()
    }

    #[test]
    fn parses_content_length_request() {
        let req = parse("POST /mcp?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nAccept: text/event-stream\r\n\r\nabcdEXTRA").unwrap();
        assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/mcp"));
        assert_eq!(req.body, b"abcd");
        assert!(req.keep_alive);
        assert_eq!(req.header("ACCEPT"), Some("text/event-stream"));
    }

    #[test]
    fn parses_chunked_request_and_bare_lf() {
        let req = parse("POST /mcp HTTP/1.1\nTransfer-Encoding: chunked\nConnection: close\n\n3\nabc\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n").unwrap();
        assert_eq!(req.body, b"abcde");
        assert!(!req.keep_alive);
    }

    #[test]
    fn http10_closes_unless_asked() {
        assert!(!parse("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(
            parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .unwrap()
                .keep_alive
        );
    }

    #[test]
    fn expect_continue_gets_interim_response() {
        let raw = "POST /mcp HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}";
        let mut r = io::Cursor::new(raw.as_bytes().to_vec());
        let mut w = Vec::new();
        let req = read_request(&mut r, &mut w).unwrap().unwrap().unwrap();
        assert_eq!(req.body, b"{}");
        assert_eq!(w, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn rejects_bad_requests() {
        let big = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEADER_BYTES)
        );
        let cases = [
            ("GET /\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\n\r\n", 505),
            ("GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n", 413),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                400,
            ),
            (big.as_str(), 431),
        ];
        for (raw, status) in cases {
            match parse(raw) {
                Err(Reject(s, _)) => assert_eq!(s, status, "{raw:?}"),
                Ok(_) => panic!("accepted {raw:?}"),
            }
        }
    }

    #[test]
    fn eof_between_requests_is_clean() {
        let mut r = io::Cursor::new(b"\r\n".to_vec());
        assert!(read_request(&mut r, &mut Vec::new()).unwrap().is_none());
        let mut r = io::Cursor::new(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab".to_vec());
        assert!(read_request(&mut r, &mut Vec::new()).is_err());
    }

    #[test]
    fn routes() {
        let req = |method: &str, path: &str| Request {
            method: method.into(),
            path: path.into(),
            keep_alive: true,
            headers: vec![],
            body: br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#.to_vec(),
            framing: Framing::Length(0),
        };
        let t = Instant::now();
        let cases = [
            ("GET", "/healthz", 200),
            ("HEAD", "/healthz", 200),
            ("POST", "/healthz", 405),
            ("POST", "/mcp", 200),
            ("GET", "/mcp", 405),
            ("DELETE", "/mcp", 405),
            ("GET", "/", 404),
            ("POST", "/mcp/", 404),
        ];
        for (m, p, status) in cases {
            assert_eq!(
                route(&req(m, p), t, &Settings::default()).status,
                status,
                "{m} {p}"
            );
        }
        assert_eq!(
            route(&req("GET", "/mcp"), t, &Settings::default()).headers,
            vec![("Allow", "POST".to_string())]
        );
    }

    #[test]
    fn health_shape_and_timestamp() {
        let now = UNIX_EPOCH + Duration::from_millis(1_759_291_506_789);
        assert_eq!(timestamp(now), "2025-10-01T04:05:06.789Z");
        let h = health(Duration::from_secs(42), now);
        assert_eq!(h["status"], "healthy");
        assert_eq!(h["server"]["uptime"], 42);
        assert_eq!(h["server"]["name"], "mcp-taipei-metro-month-price");
        assert_eq!(h["mcp"]["connected"], true);
        assert_eq!(h["mcp"]["toolsAvailable"], 2);
        assert_eq!(h["calendar"]["years"], json!(calendar::covered_years()));
        assert!(h["calendar"]["years"][0].is_i64());
    }

    #[test]
    fn response_framing() {
        let mut out = Vec::new();
        let resp = Response {
            status: 202,
            content_type: None,
            headers: vec![],
            body: vec![],
        };
        write_response(&mut out, &resp, true, false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: keep-alive\r\nKeep-Alive: timeout=15\r\n\r\n"
        );
    }

    #[test]
    fn origins_normalise() {
        let cases = [
            ("http://localhost:3000", Some("http://localhost:3000")),
            (
                "HTTPS://App.Example.COM:443",
                Some("https://app.example.com"),
            ),
            ("http://a.example:80", Some("http://a.example")),
            ("https://a.example:8443", Some("https://a.example:8443")),
            ("http://[::1]:3000", Some("http://[::1]:3000")),
            ("http://[0:0:0:0:0:0:0:1]", Some("http://[0:0:0:0:0:0:0:1]")),
            (
                "chrome-extension://abcdef",
                Some("chrome-extension://abcdef"),
            ),
            ("null", None),
            ("", None),
            ("localhost:3000", None),
            ("http://", None),
            ("http://a.example/", None),
            ("http://user@a.example", None),
            ("http://a.example:", None),
            ("http://a.example:65536", None),
            ("http://[::1", None),
            ("http://[nothex]", None),
            ("1http://a", None),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_origin(raw).as_deref(), want, "{raw:?}");
        }
    }

    #[test]
    fn origin_check() {
        let settings = Settings {
            allowed_origins: vec!["https://app.example.com".into()],
            ..Settings::default()
        };
        let allowed = [
            None,
            Some("http://localhost:5173"),
            Some("http://localhost"),
            Some("https://mcp.localhost:8443"),
            Some("http://127.0.0.1:3000"),
            Some("http://127.1.2.3"),
            Some("http://[::1]:6274"),
            Some("https://app.example.com"),
            Some("https://APP.example.com:443"),
        ];
        for origin in allowed {
            assert!(origin_allowed(origin, &settings), "{origin:?}");
        }
        let refused = [
            Some("http://evil.example"),
            Some("http://evil.example:3000"),
            Some("http://app.example.com"),
            Some("https://app.example.com:8443"),
            Some("http://localhost.evil.example"),
            Some("http://127.0.0.1.evil.example"),
            Some("http://10.0.0.1:3000"),
            Some("http://[::2]"),
            Some("file://localhost"),
            Some("null"),
            Some("garbage"),
        ];
        for origin in refused {
            assert!(!origin_allowed(origin, &settings), "{origin:?}");
            assert!(!origin_allowed(origin, &Settings::default()), "{origin:?}");
        }
    }

    #[test]
    fn foreign_origin_gets_403_on_every_route() {
        let t = Instant::now();
        for (method, path) in [
            ("POST", "/mcp"),
            ("GET", "/mcp"),
            ("GET", "/healthz"),
            ("GET", "/x"),
        ] {
            let req = Request {
                method: method.into(),
                path: path.into(),
                keep_alive: true,
                headers: vec![("Origin".into(), "http://evil.example".into())],
                body: br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#.to_vec(),
                framing: Framing::Length(0),
            };
            let resp = route(&req, t, &Settings::default());
            assert_eq!(resp.status, 403, "{method} {path}");
            let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
            assert_eq!(v["error"]["code"], -32000);
            assert_eq!(v["id"], serde_json::Value::Null);
            assert!(v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("MCP_ALLOWED_ORIGINS"));
        }
    }

    #[test]
    fn admission_caps_total_and_per_address() {
        let settings = Settings {
            allowed_origins: vec![],
            max_connections: 3,
            max_connections_per_client: 2,
        };
        // Addresses of their own, so that no other test's connections count here.
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        let a1 = admit(a, &settings).unwrap();
        let a2 = admit(a, &settings).unwrap();
        let refused = admit(a, &settings).err().unwrap();
        assert_eq!(refused.status, 429);
        assert!(refused.headers.contains(&("Retry-After", "1".to_string())));
        let b1 = admit(b, &settings).unwrap();
        assert_eq!(admit(c, &settings).err().unwrap().status, 503);
        drop(a1);
        let c1 = admit(c, &settings).unwrap();
        drop((a2, b1, c1));
        let held = CLIENTS.lock().unwrap();
        assert!(![a, b, c].iter().any(|ip| held.contains_key(ip)));
    }

    #[test]
    fn local_address_for_wildcards() {
        let cases = [
            ("0.0.0.0", "127.0.0.1:3000"),
            ("::", "[::1]:3000"),
            ("127.0.0.1", "127.0.0.1:3000"),
            ("192.168.1.20", "192.168.1.20:3000"),
        ];
        for (host, addr) in cases {
            assert_eq!(local_address(host.parse().unwrap(), 3000).to_string(), addr);
        }
    }
}
