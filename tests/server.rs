//! Runs the real binary on a free port and talks HTTP to it: health, the MCP exchange as JSON and as SSE,
//! error replies, Origin checks, batches by protocol version, output schemas, slow and greedy clients, the listen
//! address, the `healthcheck` subcommand and stop signals.

#[path = "../src/schema_check.rs"]
mod schema_check;
mod support;

use serde_json::json;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use support::*;

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
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "MCP_PORT",
        "MCP_HOST",
        "default 127.0.0.1",
        "the container image sets 0.0.0.0",
        "MCP_ALLOWED_ORIGINS",
        "MCP_MAX_CONNECTIONS_PER_CLIENT",
        "2025-2027",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
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

#[test]
fn origin_is_checked_against_dns_rebinding() {
    let server = Server::start_with(&[(
        "MCP_ALLOWED_ORIGINS",
        "https://app.example.com, http://10.1.2.3:8080",
    )]);
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let post = |origin: Option<&str>| {
        let mut headers = vec![("Content-Type", "application/json"), ("Accept", BOTH)];
        if let Some(o) = origin {
            headers.push(("Origin", o));
        }
        request(server.port, "POST", "/mcp", &headers, ping)
    };
    for origin in [
        None,
        Some("http://localhost:6274"),
        Some("http://127.0.0.1:3000"),
        Some("http://[::1]:5173"),
        Some("https://app.example.com"),
        Some("http://10.1.2.3:8080"),
    ] {
        let r = post(origin);
        assert_eq!(r.status, 200, "{origin:?}: {}", r.body);
        assert_eq!(r.json()["result"], json!({}));
    }
    for origin in [
        "http://evil.example",
        "http://evil.example:3000",
        "null",
        "https://app.example.com.evil.example",
        "http://10.1.2.3:8081",
    ] {
        let r = post(Some(origin));
        assert_eq!(r.status, 403, "{origin}: {}", r.body);
        let v = r.json();
        assert_eq!(v["error"]["code"], -32000, "{origin}");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not allowed"));
    }
    let r = request(
        server.port,
        "GET",
        "/healthz",
        &[("Origin", "http://evil.example")],
        "",
    );
    assert_eq!(r.status, 403);

    // Without MCP_ALLOWED_ORIGINS only loopback origins pass.
    let plain = Server::start();
    let r = request(
        plain.port,
        "POST",
        "/mcp",
        &[("Origin", "https://app.example.com")],
        ping,
    );
    assert_eq!(r.status, 403);
}

#[test]
fn bad_settings_exit_1_with_a_message() {
    let cases = [
        ("MCP_HOST", "example.com", "invalid MCP_HOST"),
        ("MCP_ALLOWED_ORIGINS", "evil.example", "MCP_ALLOWED_ORIGINS"),
        ("MCP_MAX_CONNECTIONS", "0", "invalid MCP_MAX_CONNECTIONS"),
        (
            "MCP_MAX_CONNECTIONS_PER_CLIENT",
            "lots",
            "invalid MCP_MAX_CONNECTIONS_PER_CLIENT",
        ),
    ];
    for (name, value, message) in cases {
        let mut child = Command::new(BIN)
            .env("MCP_PORT", free_port().to_string())
            .env(name, value)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{name}={value}: the server started instead of refusing the setting");
            }
            thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{name}={value}: {err}");
    }
}

#[test]
fn batches_follow_the_protocol_version() {
    let server = Server::start();
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#;
    let post = |version: Option<&str>| {
        let mut headers = vec![("Content-Type", "application/json"), ("Accept", BOTH)];
        if let Some(v) = version {
            headers.push(("MCP-Protocol-Version", v));
        }
        request(server.port, "POST", "/mcp", &headers, batch)
    };
    for version in [Some("2025-03-26"), Some("2024-11-05"), None] {
        let r = post(version);
        assert_eq!(r.status, 200, "{version:?}");
        assert_eq!(r.json().as_array().unwrap().len(), 2);
    }
    for version in ["2025-06-18", "2025-11-25"] {
        let r = post(Some(version));
        assert_eq!(r.status, 400, "{version}");
        let v = r.json();
        assert_eq!(v["error"]["code"], -32600);
        assert!(v["error"]["message"].as_str().unwrap().contains("batches"));
    }
}

#[test]
fn tools_declare_output_schemas_and_results_match_them() {
    let server = Server::start();
    let list = rpc(
        server.port,
        BOTH,
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .json();
    let tools = list["result"]["tools"].as_array().unwrap();
    let schema_of = |name: &str| {
        tools
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["outputSchema"].clone())
            .unwrap()
    };
    let fare_schema = schema_of("calculate_fare");
    assert_eq!(fare_schema["type"], "object");
    let cases = [
        json!({}),
        json!({"startDate": "2027-02-01"}),
        json!({"startDate": "2027-12-15", "oneWayFare": 65, "tripsPerDay": 4}),
        json!({"startDate": "2025-01-31", "customWorkingDays": 0}),
        json!({"startDate": "2024-10-31", "oneWayFare": 35, "customWorkingDays": 20}),
    ];
    for args in cases {
        let result = call_fare(server.port, BOTH, args.clone());
        assert_eq!(result["isError"], false, "{args}");
        let content = &result["structuredContent"];
        if let Err(e) = schema_check::validate(&fare_schema, content) {
            panic!("{args}: {e}");
        }
        // The text block carries the same result for clients that read only text.
        assert_eq!(&fare_text(&result), content, "{args}");
    }
    let info = rpc(
        server.port,
        BOTH,
        &json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
            "params": {"name": "get_discount_info", "arguments": {}}}),
    )
    .json();
    let content = &info["result"]["structuredContent"];
    assert_eq!(
        schema_check::validate(&schema_of("get_discount_info"), content),
        Ok(())
    );
}

#[test]
fn calendar_2027_through_the_server() {
    let server = Server::start();
    let f = fare_text(&call_fare(
        server.port,
        BOTH,
        json!({"startDate": "2027-02-01"}),
    ));
    assert_eq!(f["details"]["workingDays"], 16);
    assert_eq!(f["regularCost"], 1160);
    assert_eq!(f["savingsAmount"], 40);
    assert_eq!(f["recommendation"], "USE_REGULAR");
    assert_eq!(f["holidays"]["totalHolidays"], 9);

    let f = fare_text(&call_fare(
        server.port,
        BOTH,
        json!({"startDate": "2027-12-15"}),
    ));
    assert_eq!(f["details"]["periodEnd"], "2028-01-13");
    assert_eq!(f["details"]["workingDays"], 20);
    assert_eq!(f["regularCost"], 1476);
    let warnings = f["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].as_str().unwrap().contains("2028"));
    assert!(warnings[0].as_str().unwrap().contains("Monday-Friday"));
}

/// A client that sends one byte a second never finishes its head: it gets 408 and the connection closes within
/// the head deadline (10 s), where a per-read timeout would have let it go on for ever.
#[test]
fn trickling_request_head_is_cut_off() {
    let server = Server::start();
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let t = Instant::now();
    let trickle = {
        let mut w = s.try_clone().unwrap();
        thread::spawn(move || {
            for b in b"POST /mcp HTTP/1.1\r\nHost: x\r\nX-Slow: "
                .iter()
                .cycle()
                .take(40)
            {
                if w.write_all(&[*b]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let got = read_until_closed(&mut s);
    let took = t.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text:?}");
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(14),
        "closed after {took:?}"
    );
    trickle.join().unwrap();
}

/// A kept-alive connection that sends nothing more is closed after the idle limit, and says so up front.
#[test]
fn idle_keep_alive_connection_is_closed() {
    let server = Server::start();
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let r = ping_on(&mut s);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("keep-alive"), Some("timeout=15"));
    let t = Instant::now();
    let rest = read_until_closed(&mut s);
    let took = t.elapsed();
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert!(
        took >= Duration::from_secs(14) && took < Duration::from_secs(19),
        "closed after {took:?}"
    );
}

/// The issue's lock-out: 512 connections from one address that never finish a request. With the defaults that
/// address gets at most half the slots (the rest 429), and another client is still served at once.
#[test]
fn one_address_cannot_take_every_connection() {
    let server = Server::start();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, server.port));
    let mut held = Vec::new();
    for _ in 0..512 {
        let mut s = connect_from(Ipv4Addr::LOCALHOST, addr);
        s.write_all(b"POST /mcp HTTP/1.1\r\n").unwrap();
        held.push(s);
    }
    // The refused ones get 429 straight away; the admitted ones are still waiting for their heads.
    thread::sleep(Duration::from_millis(500));
    let (mut refused, mut waiting) = (0, 0);
    for s in &mut held {
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 12];
        match std::io::Read::read(s, &mut buf) {
            Ok(12) if &buf == b"HTTP/1.1 429" => refused += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => waiting += 1,
            other => panic!("unexpected {other:?}: {:?}", String::from_utf8_lossy(&buf)),
        }
    }
    assert_eq!((refused, waiting), (256, 256));

    let t = Instant::now();
    let mut other = connect_from(Ipv4Addr::new(127, 0, 0, 2), addr);
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let r = ping_on(&mut other);
    assert_eq!(r.status, 200);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    drop(held);
}

/// Small caps from the environment: the 429 and 503 replies, and slots coming back when connections close.
#[test]
fn connection_caps_from_the_environment() {
    let server = Server::start_with(&[
        ("MCP_MAX_CONNECTIONS", "4"),
        ("MCP_MAX_CONNECTIONS_PER_CLIENT", "2"),
    ]);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, server.port));
    let a = Ipv4Addr::new(127, 0, 0, 3);
    let b = Ipv4Addr::new(127, 0, 0, 4);
    let c = Ipv4Addr::new(127, 0, 0, 5);
    // Each admitted connection answers a ping before the next one is opened: the kernel may hand connections opened
    // back to back to the server out of order, so only an answer proves which ones hold a slot.
    let admitted = |from: Ipv4Addr| {
        let mut s = connect_from(from, addr);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(ping_on(&mut s).status, 200);
        s
    };
    let mut a1 = admitted(a);
    let a2 = admitted(a);
    let reply = |mut s: TcpStream| String::from_utf8_lossy(&read_until_closed(&mut s)).into_owned();
    let third = reply(connect_from(a, addr));
    assert!(third.starts_with("HTTP/1.1 429 "), "{third}");
    assert!(third.contains("Retry-After: 1"), "{third}");
    let b1 = admitted(b);
    let b2 = admitted(b);
    let full = reply(connect_from(c, addr));
    assert!(full.starts_with("HTTP/1.1 503 "), "{full}");
    drop((a2, b1, b2));
    // The slots come back once the server has seen the three connections close.
    let deadline = Instant::now() + Duration::from_secs(5);
    // A refused connection is answered at once; an admitted one waits silently for its request.
    let mut c1 = loop {
        let mut s = connect_from(c, addr);
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut head = [0u8; 12];
        match std::io::Read::read(&mut s, &mut head) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break s
            }
            other => assert_eq!(
                &head, b"HTTP/1.1 503",
                "while the slots come back: {other:?}"
            ),
        }
        assert!(Instant::now() < deadline, "no slot came back within 5 s");
        thread::sleep(Duration::from_millis(50));
    };
    c1.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(ping_on(&mut c1).status, 200);
    assert_eq!(ping_on(&mut a1).status, 200);
}

#[test]
fn listens_on_mcp_host_and_defaults_to_loopback_only() {
    // Default: 127.0.0.1 only, so another loopback address of this machine is not served.
    let server = Server::start();
    assert!(TcpStream::connect(("127.0.0.1", server.port)).is_ok());
    assert!(TcpStream::connect(("127.0.0.2", server.port)).is_err());
    assert_eq!(server.healthcheck().code(), Some(0));

    let server = Server::start_with(&[("MCP_HOST", "127.0.0.2")]);
    assert!(TcpStream::connect(("127.0.0.2", server.port)).is_ok());
    assert!(TcpStream::connect(("127.0.0.1", server.port)).is_err());
    assert_eq!(
        server.healthcheck_with(&[("MCP_HOST", "127.0.0.2")]).code(),
        Some(0)
    );

    // 0.0.0.0 takes every local address, and healthcheck asks 127.0.0.1.
    let server = Server::start_with(&[("MCP_HOST", "0.0.0.0")]);
    assert!(TcpStream::connect(("127.0.0.2", server.port)).is_ok());
    assert_eq!(
        server.healthcheck_with(&[("MCP_HOST", "0.0.0.0")]).code(),
        Some(0)
    );
}

/// Inside the image the server must be reachable from outside its container: the last stage sets MCP_HOST.
#[test]
fn image_listens_on_every_interface() {
    let containerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Containerfile")).unwrap();
    let last_stage = containerfile.rsplit("\nFROM ").next().unwrap();
    assert!(
        last_stage
            .lines()
            .any(|l| l.trim() == "ENV MCP_HOST=0.0.0.0"),
        "{last_stage}"
    );
}
