//! Runs the real binary on a free port and talks HTTP to it: health, the MCP exchange as JSON and as SSE,
//! error replies, concurrency, the `healthcheck` subcommand and stop signals.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mcp-taipei-metro-month-price");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Server {
        let port = free_port();
        let mut child = Command::new(BIN)
            .env("MCP_PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server binary");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "server did not listen on {port}");
            if let Some(status) = child.try_wait().unwrap() {
                panic!("server exited with {status} before listening on {port}");
            }
            thread::sleep(Duration::from_millis(20));
        }
        Server { child, port }
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain kill(2) on the child we spawned and still own.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    fn wait_for_exit(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, t.elapsed());
            }
            assert!(t.elapsed() < limit, "server still running after {limit:?}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn healthcheck(&self) -> ExitStatus {
        Command::new(BIN)
            .arg("healthcheck")
            .env("MCP_PORT", self.port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn parse_reply(raw: &[u8]) -> Reply {
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
fn read_one_reply(s: &mut TcpStream) -> Reply {
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

fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
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

const BOTH: &str = "application/json, text/event-stream";

fn rpc(port: u16, accept: &str, msg: &Value) -> Reply {
    request(
        port,
        "POST",
        "/mcp",
        &[("Content-Type", "application/json"), ("Accept", accept)],
        &msg.to_string(),
    )
}

fn call_fare(port: u16, accept: &str, args: Value) -> Value {
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
fn fare_text(result: &Value) -> Value {
    assert_eq!(result["isError"], false, "{result}");
    serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap()
}

#[test]
fn health_endpoint_has_documented_shape() {
    let server = Server::start();
    let r = request(server.port, "GET", "/healthz", &[], "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let h = r.json();
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["server"]["name"], "mcp-taipei-metro-month-price");
    assert_eq!(h["server"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(h["server"]["uptime"].is_u64());
    assert_eq!(h["mcp"]["connected"], true);
    assert_eq!(h["mcp"]["toolsAvailable"], 2);
    assert_eq!(h["calendar"]["years"], json!([2025, 2026, 2027]));
    let ts = h["timestamp"].as_str().unwrap();
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
        "{ts}"
    );
}

#[test]
fn mcp_exchange_as_json_and_sse() {
    let server = Server::start();
    let port = server.port;

    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {},
        "clientInfo": {"name": "integration-test", "version": "1"}}});
    let r = rpc(port, BOTH, &init).json();
    assert_eq!(r["result"]["protocolVersion"], "2025-03-26");
    assert_eq!(
        r["result"]["serverInfo"]["name"],
        "mcp-taipei-metro-month-price"
    );
    assert!(r["result"]["capabilities"]["tools"].is_object());

    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let r = rpc(port, BOTH, &note);
    assert_eq!((r.status, r.body.as_str()), (202, ""));

    let list = rpc(
        port,
        BOTH,
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .json();
    let tools = list["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["calculate_fare", "get_discount_info"]);
    assert_eq!(tools[0]["inputSchema"]["type"], "object");

    for accept in [BOTH, "text/event-stream"] {
        let args = json!({"startDate": "2024-10-31", "oneWayFare": 35, "customWorkingDays": 20});
        let f = fare_text(&call_fare(port, accept, args));
        assert_eq!(f["tpassCost"], 1200, "{accept}");
        assert_eq!(f["regularCost"], 1267, "{accept}");
        assert_eq!(f["savingsAmount"], -67);
        assert_eq!(f["recommendation"], "BUY_TPASS");
        assert_eq!(f["details"]["totalTrips"], 40);
        assert_eq!(f["details"]["periodEnd"], "2024-11-29");
        assert_eq!(f["details"]["crossesMonthBoundary"], true);
        let months = f["monthlyBreakdown"].as_array().unwrap();
        assert_eq!(
            (months[0]["trips"].clone(), months[0]["finalCost"].clone()),
            (json!(2), json!("NT$70"))
        );
        assert_eq!(months[1]["trips"], 38);
        assert_eq!(months[1]["discountTier"], "10%");
        assert_eq!(months[1]["discountAmount"], "NT$133");
        assert_eq!(months[1]["finalCost"], "NT$1197");
    }

    let cases = [
        (22, 1496, -296, "BUY_TPASS"),
        (15, 1080, 120, "USE_REGULAR"),
        (10, 760, 440, "USE_REGULAR"),
    ];
    for (custom, regular, savings, rec) in cases {
        let args =
            json!({"startDate": "2025-10-01", "oneWayFare": 40, "customWorkingDays": custom});
        let f = fare_text(&call_fare(port, BOTH, args));
        assert_eq!(f["regularCost"], regular, "custom {custom}");
        assert_eq!(f["savingsAmount"], savings, "custom {custom}");
        assert_eq!(f["recommendation"], rec, "custom {custom}");
    }

    let f = fare_text(&call_fare(port, BOTH, json!({"startDate": "2025-10-01"})));
    let list = f["holidays"]["list"].as_array().unwrap();
    let dates: Vec<&str> = list.iter().map(|h| h["date"].as_str().unwrap()).collect();
    assert!(
        dates.contains(&"2025-10-06") && dates.contains(&"2025-10-10"),
        "{dates:?}"
    );
    assert_eq!(f["details"]["workingDays"], 19);

    let info = rpc(
        port,
        BOTH,
        &json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
        "params": {"name": "get_discount_info", "arguments": {}}}),
    )
    .json();
    let info = fare_text(&info["result"]);
    assert_eq!(info["discountTiers"].as_array().unwrap().len(), 4);
    assert_eq!(info["tpassInfo"]["price"], "NT$1200");
}

#[test]
fn error_replies() {
    let server = Server::start();
    let port = server.port;

    let r = request(
        port,
        "POST",
        "/mcp",
        &[("Content-Type", "application/json")],
        "{\"jsonrpc\": ",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], -32700);

    let msg = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "buy_ticket", "arguments": {}}});
    let r = rpc(port, BOTH, &msg).json();
    assert_eq!(r["result"]["isError"], true);
    assert!(r["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("Unknown tool: buy_ticket"));

    let cases = [
        (
            json!({"oneWayFare": 0}),
            "oneWayFare must be between 1 and 1000 (got 0)",
        ),
        (
            json!({"tripsPerDay": 11}),
            "tripsPerDay must be between 1 and 10 (got 11)",
        ),
        (
            json!({"customWorkingDays": 31}),
            "customWorkingDays must be between 0 and 30 (got 31)",
        ),
        (
            json!({"startDate": "2025-02-30"}),
            "startDate 2025-02-30 is not a real calendar date",
        ),
    ];
    for (args, text) in cases {
        let result = call_fare(port, BOTH, args);
        assert_eq!(result["isError"], true);
        assert_eq!(
            result["content"][0]["text"],
            format!("Invalid input: {text}")
        );
    }

    for method in ["GET", "DELETE"] {
        let r = request(port, method, "/mcp", &[], "");
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("POST"));
    }
    assert_eq!(request(port, "GET", "/nowhere", &[], "").status, 404);
}

#[test]
fn slow_client_does_not_block_others_and_keep_alive_works() {
    let server = Server::start();
    // A client that sends half a request and then stalls holds its own thread only.
    let mut stalled = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stalled
        .write_all(b"POST /mcp HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();

    let t = Instant::now();
    assert_eq!(request(server.port, "GET", "/healthz", &[], "").status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "blocked for {:?}",
        t.elapsed()
    );

    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    for _ in 0..2 {
        let req = format!(
            "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{ping}",
            ping.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let r = read_one_reply(&mut s);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("keep-alive"));
        assert_eq!(r.json()["result"], json!({}));
    }
}

#[test]
fn healthcheck_then_sigterm_stops_within_two_seconds() {
    let mut server = Server::start();
    assert_eq!(server.healthcheck().code(), Some(0));
    // An idle keep-alive connection must not hold the shutdown up.
    let _idle = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    server.signal(libc::SIGTERM);
    let (status, took) = server.wait_for_exit(Duration::from_secs(2));
    assert_eq!(status.code(), Some(0), "stopped in {took:?}");
    assert_eq!(server.healthcheck().code(), Some(1));
}

#[test]
fn sigint_stops_too() {
    let mut server = Server::start();
    server.signal(libc::SIGINT);
    let (status, _) = server.wait_for_exit(Duration::from_secs(2));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn command_line() {
    for port in ["0", "70000", "http"] {
        let out = Command::new(BIN).env("MCP_PORT", port).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "MCP_PORT={port}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("invalid MCP_PORT"), "{err}");
    }
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("mcp-taipei-metro-month-price {}", env!("CARGO_PKG_VERSION"))
    );
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("MCP_PORT"));
    let out = Command::new(BIN).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // Nothing listens on this port: the health check must fail fast.
    let out = Command::new(BIN)
        .arg("healthcheck")
        .env("MCP_PORT", free_port().to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
