//! A small HTTP/1.1 server on std::net (one thread per connection, keep-alive, Content-Length and chunked
//! request bodies) and the `healthcheck` client.
//!
//! The service answers tiny JSON requests, so a thread per connection is plenty and keeps the binary free of an
//! async runtime. Limits (header size, body size, connection count, idle timeout) keep a misbehaving client from
//! exhausting the process.

use crate::calendar::{self, Date};
use crate::mcp;
use serde_json::json;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MAX_HEADER_BYTES: usize = 16 * 1024;
const MAX_BODY_BYTES: usize = 1024 * 1024;
const MAX_CONNECTIONS: usize = 512;
/// How long a kept-alive or slow connection may stay silent.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Set once a stop signal arrives: connections finish the request in hand and close.
pub static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);
/// Requests being answered right now, so shutdown can let them finish.
pub static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

pub struct Request {
    pub method: String,
    pub path: String,
    pub keep_alive: bool,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

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
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
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

/// Reads one request. `Ok(None)`: the peer closed between requests. `Err`: I/O failure or timeout (drop it).
fn read_request(
    r: &mut impl BufRead,
    w: &mut impl Write,
) -> io::Result<Option<Result<Request, Reject>>> {
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
    let length = if chunked {
        None
    } else {
        let mut lengths = req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse::<usize>());
        match (lengths.next(), lengths.next()) {
            (None, _) => Some(0),
            (Some(Ok(n)), None) => Some(n),
            _ => return Ok(Some(Err(Reject(400, "invalid Content-Length")))),
        }
    };
    if length.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Ok(Some(Err(Reject(413, "request body larger than 1 MiB"))));
    }
    let expects_body = chunked || length.is_some_and(|n| n > 0);
    if expects_body
        && http11
        && req
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        w.flush()?;
    }
    match length {
        Some(n) => {
            req.body = vec![0; n];
            r.read_exact(&mut req.body)?;
        }
        None => {
            // Chunk-size lines and trailers get a fresh allowance of their own.
            budget = MAX_HEADER_BYTES;
            loop {
                let size_line = line!();
                let hex = size_line.split(';').next().unwrap_or("").trim();
                let Ok(size) = usize::from_str_radix(hex, 16) else {
                    return Ok(Some(Err(Reject(400, "malformed chunk size"))));
                };
                if size == 0 {
                    // Trailer fields, up to the final empty line.
                    while !line!().is_empty() {}
                    break;
                }
                if req.body.len() + size > MAX_BODY_BYTES {
                    return Ok(Some(Err(Reject(413, "request body larger than 1 MiB"))));
                }
                let start = req.body.len();
                req.body.resize(start + size, 0);
                r.read_exact(&mut req.body[start..])?;
                if !line!().is_empty() {
                    return Ok(Some(Err(Reject(400, "malformed chunk"))));
                }
            }
        }
    }
    Ok(Some(Ok(req)))
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
    out.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
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

pub fn route(req: &Request, started: Instant) -> Response {
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

fn handle_connection(stream: TcpStream, started: Instant) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let req = match read_request(&mut reader, &mut writer)? {
            None => return Ok(()),
            Some(Ok(req)) => req,
            Some(Err(Reject(status, why))) => {
                let resp = Response::json(status, &json!({ "error": why }));
                return write_response(&mut writer, &resp, false, false);
            }
        };
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        let resp = route(&req, started);
        let keep_alive = req.keep_alive && !SHUTTING_DOWN.load(Ordering::SeqCst);
        let written = write_response(&mut writer, &resp, keep_alive, req.method == "HEAD");
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        written?;
        if !keep_alive {
            return Ok(());
        }
    }
}

/// Decrements the connection count however the connection thread ends.
struct ConnectionSlot;

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        CONNECTIONS.fetch_sub(1, Ordering::SeqCst);
    }
}

pub fn bind(port: u16) -> io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
}

/// Accepts connections until the process exits; each connection gets its own thread.
pub fn serve(listener: TcpListener) -> io::Result<()> {
    let started = Instant::now();
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(s) => s,
            // Transient accept failures (peer reset before accept, fd exhaustion): back off briefly and go on.
            Err(e) => {
                eprintln!("accept failed: {e}");
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if CONNECTIONS.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            CONNECTIONS.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let resp = Response::json(
                503,
                &json!({"error": "too many connections, retry shortly"}),
            );
            let _ = write_response(&mut stream, &resp, false, false);
            continue;
        }
        let spawned = thread::Builder::new()
            .name("conn".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let _slot = ConnectionSlot;
                // Timeouts and resets are normal client behaviour; nothing to report.
                let _ = handle_connection(stream, started);
            });
        if let Err(e) = spawned {
            CONNECTIONS.fetch_sub(1, Ordering::SeqCst);
            eprintln!("cannot start a connection thread: {e}");
        }
    }
    Ok(())
}

/// GET http://127.0.0.1:{port}/healthz within `timeout`; `Ok` only on status 200.
pub fn healthcheck(port: u16, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer from 127.0.0.1:{port} within {timeout:?}"))
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, remaining()?)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_write_timeout(Some(remaining()?))
        .and_then(|_| {
            write!(
                stream,
                "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
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
            assert_eq!(route(&req(m, p), t).status, status, "{m} {p}");
        }
        assert_eq!(
            route(&req("GET", "/mcp"), t).headers,
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
            "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
        );
    }
}
