//! A TCP proxy in front of the benchmark's registry that measures what clients send through it: bytes, HTTP
//! requests per method, and request body bytes (what a push uploads: blobs and manifests). An outside measure
//! that does not take the pusher's word for it.
//!
//! distribution builds upload Locations from the request's Host header, so an upload started through the proxy
//! also finishes through it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A running proxy; stops when dropped.
pub struct CountingProxy {
    /// `127.0.0.1:PORT`
    pub address: String,
    sent: Arc<Mutex<Traffic>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl CountingProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream` (`127.0.0.1:5000`).
    pub fn start(upstream: &str) -> std::io::Result<CountingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?.to_string();
        let sent = Arc::new(Mutex::new(Traffic::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let upstream = upstream.to_owned();
        let accept = {
            let (sent, stop) = (sent.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let _ = client.set_nonblocking(false);
                            if let Ok(server) = TcpStream::connect(&upstream) {
                                forward(client, server, sent.clone());
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Ok(CountingProxy {
            address,
            sent,
            stop,
            accept: Some(accept),
        })
    }

    /// What clients sent since the last call.
    pub fn take(&self) -> Traffic {
        std::mem::take(&mut *self.sent.lock().expect("traffic lock"))
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// What clients sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Everything: request lines, headers and bodies.
    pub bytes: u64,
    /// Request bodies only (chunk framing excluded).
    pub body_bytes: u64,
    /// Requests per method (`HEAD`, `PUT`, …).
    pub requests: BTreeMap<String, u64>,
}

impl Traffic {
    fn add(&mut self, other: &Traffic) {
        self.bytes += other.bytes;
        self.body_bytes += other.body_bytes;
        for (method, n) in &other.requests {
            *self.requests.entry(method.clone()).or_default() += n;
        }
    }

    /// `2 HEAD, 1 PUT`
    pub fn requests_line(&self) -> String {
        self.requests
            .iter()
            .map(|(method, n)| format!("{n} {method}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Follows an HTTP/1.1 request stream (keep-alive: one request after another) to count requests and body bytes;
/// bodies are framed by Content-Length or chunked transfer coding.
#[derive(Debug, Default)]
pub struct RequestMeter {
    state: State,
    head: Vec<u8>,
    pub traffic: Traffic,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Head,
    Body(u64),
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    ChunkEnd(u8),
    Trailers(Vec<u8>),
}

impl RequestMeter {
    pub fn feed(&mut self, mut bytes: &[u8]) {
        self.traffic.bytes += bytes.len() as u64;
        while !bytes.is_empty() {
            match &mut self.state {
                State::Head => {
                    let (byte, rest) = (bytes[0], &bytes[1..]);
                    bytes = rest;
                    self.head.push(byte);
                    if self.head.ends_with(b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&self.head).into_owned();
                        self.head.clear();
                        self.start_body(&head);
                    }
                }
                State::Body(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    self.traffic.body_bytes += n;
                    *left -= n;
                    bytes = &bytes[n as usize..];
                    if *left == 0 {
                        self.state = State::Head;
                    }
                }
                State::ChunkSize(line) => {
                    line.push(bytes[0]);
                    bytes = &bytes[1..];
                    if line.ends_with(b"\r\n") {
                        let text = String::from_utf8_lossy(line);
                        let size = text.trim().split(';').next().unwrap_or("");
                        let size = u64::from_str_radix(size.trim(), 16).unwrap_or(0);
                        self.state = if size == 0 {
                            State::Trailers(Vec::new())
                        } else {
                            State::ChunkData(size)
                        };
                    }
                }
                State::ChunkData(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    self.traffic.body_bytes += n;
                    *left -= n;
                    bytes = &bytes[n as usize..];
                    if *left == 0 {
                        self.state = State::ChunkEnd(2);
                    }
                }
                State::ChunkEnd(left) => {
                    bytes = &bytes[1..];
                    *left -= 1;
                    if *left == 0 {
                        self.state = State::ChunkSize(Vec::new());
                    }
                }
                State::Trailers(line) => {
                    line.push(bytes[0]);
                    bytes = &bytes[1..];
                    if line.as_slice() == b"\r\n" {
                        self.state = State::Head;
                    } else if line.ends_with(b"\r\n") {
                        line.clear();
                    }
                }
            }
        }
    }

    fn start_body(&mut self, head: &str) {
        let method = head.split(' ').next().unwrap_or("?").trim().to_owned();
        *self.traffic.requests.entry(method).or_default() += 1;
        let header = |name: &str| {
            head.lines().skip(1).find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
        };
        let chunked =
            header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = header("content-length").and_then(|v| v.parse::<u64>().ok());
        self.state = match (chunked, length) {
            (true, _) => State::ChunkSize(Vec::new()),
            (false, Some(n)) if n > 0 => State::Body(n),
            _ => State::Head,
        };
    }
}

/// Copies both ways on two threads; only the client-to-server direction is measured.
fn forward(client: TcpStream, server: TcpStream, sent: Arc<Mutex<Traffic>>) {
    let (Ok(client_read), Ok(server_read)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let mut meter = RequestMeter::default();
        copy(client_read, &server, Some((&mut meter, &sent)));
        let _ = server.shutdown(Shutdown::Write);
    });
    std::thread::spawn(move || {
        copy(server_read, &client, None);
        let _ = client.shutdown(Shutdown::Write);
    });
}

/// Counted before it is forwarded: by the time an answer reaches the client, its request is in the total.
fn copy(
    mut from: TcpStream,
    mut to: &TcpStream,
    mut meter: Option<(&mut RequestMeter, &Mutex<Traffic>)>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some((meter, total)) = meter.as_mut() {
            meter.feed(&buffer[..n]);
            let counted = std::mem::take(&mut meter.traffic);
            total.lock().expect("traffic lock").add(&counted);
        }
        if to.write_all(&buffer[..n]).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_clients_send_and_forwards_answers() {
        let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream_address = upstream.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut stream, _) = upstream.accept().unwrap();
                let mut got = Vec::new();
                stream.read_to_end(&mut got).unwrap();
                stream.write_all(&got[..got.len().min(3)]).unwrap();
            }
        });
        let proxy = CountingProxy::start(&upstream_address).unwrap();
        for payload in [&b"hello"[..], &[7u8; 100_000][..]] {
            let mut client = TcpStream::connect(&proxy.address).unwrap();
            client.write_all(payload).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).unwrap();
            assert_eq!(answer, payload[..3]);
        }
        server.join().unwrap();
        let traffic = proxy.take();
        assert_eq!(traffic.bytes, 100_005);
        assert_eq!(proxy.take().bytes, 0);
    }

    #[test]
    fn meters_requests_and_bodies() {
        let stream = b"HEAD /v2/a/manifests/sha256:1 HTTP/1.1\r\nHost: x\r\n\r\n\
PUT /v2/a/manifests/t HTTP/1.1\r\nContent-Length: 5\r\ncontent-type: x\r\n\r\nhello\
PATCH /v2/a/blobs/uploads/u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nA;x=y\r\n0123456789\r\n0\r\n\r\n\
GET /v2/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        // Fed whole, and fed byte by byte: the same counts.
        for step in [stream.len(), 1, 7] {
            let mut meter = RequestMeter::default();
            for piece in stream.chunks(step) {
                meter.feed(piece);
            }
            assert_eq!(meter.traffic.bytes, stream.len() as u64);
            assert_eq!(meter.traffic.body_bytes, 5 + 3 + 10, "step {step}");
            assert_eq!(
                meter.traffic.requests_line(),
                "1 GET, 1 HEAD, 1 PATCH, 1 PUT"
            );
        }
    }
}
