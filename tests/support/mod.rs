//! Shared by the app's integration tests: the real binary on a free port, raw HTTP/1.1 requests and replies, and
//! connections from a chosen loopback source address (to play several clients on one machine).

#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::FromRawFd;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_mcp-taipei-metro-month-price");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts the binary with extra environment variables; it listens on 127.0.0.1 unless `MCP_HOST` says otherwise.
    pub fn start_with(env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let host = env
            .iter()
            .find(|(k, _)| *k == "MCP_HOST")
            .map_or("127.0.0.1", |(_, v)| v);
        let mut child = Command::new(BIN)
            .env("MCP_PORT", port.to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server binary");
        let deadline = Instant::now() + Duration::from_secs(10);
        // Ready means answering: the probe reads its reply to the end, and the server gives a connection's slot
        // back before closing it, so the probe holds no slot once this returns.
        while !answers_health(host, port) {
            assert!(Instant::now() < deadline, "server did not answer on {port}");
            if let Some(status) = child.try_wait().unwrap() {
                panic!("server exited with {status} before answering on {port}");
            }
            thread::sleep(Duration::from_millis(20));
        }
        Server { child, port }
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain kill(2) on the child we spawned and still own.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    pub fn wait_for_exit(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, t.elapsed());
            }
            assert!(t.elapsed() < limit, "server still running after {limit:?}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn healthcheck(&self) -> ExitStatus {
        self.healthcheck_with(&[])
    }

    pub fn healthcheck_with(&self, env: &[(&str, &str)]) -> ExitStatus {
        Command::new(BIN)
            .arg("healthcheck")
            .env("MCP_PORT", self.port.to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
    }
}

/// One `GET /healthz` with `Connection: close`, read until the server closes; true when it answered at all.
fn answers_health(host: &str, port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect((host, port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let request =
        format!("GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n");
    let mut reply = Vec::new();
    s.write_all(request.as_bytes()).is_ok()
        && s.read_to_end(&mut reply).is_ok()
        && reply.starts_with(b"HTTP/1.1 ")
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

pub fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8(raw.to_vec()).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("complete head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Reads exactly one Content-Length framed reply from a kept-alive connection.
pub fn read_one_reply(s: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        raw.push(byte[0]);
    }
    let head = parse_reply(&raw);
    let len: usize = head.header("content-length").unwrap().parse().unwrap();
    let mut body = vec![0; len];
    s.read_exact(&mut body).unwrap();
    raw.extend_from_slice(&body);
    parse_reply(&raw)
}

pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse_reply(&raw)
}

pub const BOTH: &str = "application/json, text/event-stream";

pub fn rpc(port: u16, accept: &str, msg: &Value) -> Reply {
    request(
        port,
        "POST",
        "/mcp",
        &[("Content-Type", "application/json"), ("Accept", accept)],
        &msg.to_string(),
    )
}

pub fn call_fare(port: u16, accept: &str, args: Value) -> Value {
    let msg = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "calculate_fare", "arguments": args}});
    let r = rpc(port, accept, &msg);
    assert_eq!(r.status, 200, "{}", r.body);
    let envelope = if accept == "text/event-stream" {
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        let data = r
            .body
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("an SSE data line");
        serde_json::from_str(data).unwrap()
    } else {
        assert_eq!(r.header("content-type"), Some("application/json"));
        r.json()
    };
    assert_eq!(envelope["id"], 3);
    envelope["result"].clone()
}

/// The result's text content, parsed: the part every MCP client reads.
pub fn fare_text(result: &Value) -> Value {
    assert_eq!(result["isError"], false, "{result}");
    serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap()
}

/// A TCP connection to `to` from the loopback address `from` (e.g. 127.0.0.2): another client address.
pub fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket/bind/connect on a descriptor this function owns until it is handed to TcpStream; the
    // address structures live on the stack for the duration of each call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let local = sockaddr(from, 0);
        let rc = libc::bind(fd, &local as *const _ as *const libc::sockaddr, len);
        assert_eq!(rc, 0, "bind {from}: {}", std::io::Error::last_os_error());
        let remote = sockaddr(*to.ip(), to.port());
        let rc = libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len);
        assert_eq!(rc, 0, "connect {to}: {}", std::io::Error::last_os_error());
        stream
    }
}

/// Sends one ping over `s` and reads the reply.
pub fn ping_on(s: &mut TcpStream) -> Reply {
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{ping}",
        ping.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    read_one_reply(s)
}

/// Reads until the peer closes (or 20 s pass) and returns what came.
pub fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}
