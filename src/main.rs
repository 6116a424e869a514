//! TPASS month-price MCP server: entry point, command line, environment and signals.
//!
//! `serve` (the default) answers MCP over HTTP on $MCP_HOST:$MCP_PORT (127.0.0.1 unless told otherwise; the image
//! sets 0.0.0.0); `healthcheck` asks a running server for /healthz so a container image needs neither a shell nor
//! curl for its HEALTHCHECK.

mod calendar;
mod fare;
mod http;
mod mcp;
#[cfg(test)]
mod schema_check;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use std::{env, process, thread};

const DEFAULT_PORT: u16 = 3000;
/// From a checkout the server listens on this machine only, as MCP advises for local servers; the container image
/// sets MCP_HOST=0.0.0.0, where it must be reachable from outside the container.
const DEFAULT_HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// Part of the 2 s stop budget that in-flight requests may use to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(1500);

fn usage() -> String {
    format!(
        "{name} {version}
Tells a Taipei commuter whether the TPASS monthly pass (NT$1200, 30 days) beats paying per ride with the
Taipei Metro frequent-rider discount, as an MCP server (streamable HTTP, stateless).

Usage:
  {name} [serve]       listen on $MCP_HOST:$MCP_PORT (POST /mcp, GET /healthz)
  {name} healthcheck   GET http://$MCP_HOST:$MCP_PORT/healthz (127.0.0.1 when MCP_HOST is 0.0.0.0);
                       exit 0 on 200, else 1 (3 s limit)
  {name} --help | --version

Environment:
  MCP_HOST     IP address to listen on (default {DEFAULT_HOST}: this machine only, as MCP advises for local
               servers; the container image sets 0.0.0.0 so that it is reachable from outside the container;
               :: listens on IPv6 and IPv4)
  MCP_PORT     TCP port, 1-65535 (default {DEFAULT_PORT})
  MCP_ALLOWED_ORIGINS
               comma-separated browser origins allowed to call the server, e.g. https://app.example.com;
               requests without Origin and from loopback origins (localhost, 127.0.0.1, [::1]) are always
               allowed, any other Origin gets 403
  MCP_MAX_CONNECTIONS
               open connections at most (default {max})
  MCP_MAX_CONNECTIONS_PER_CLIENT
               open connections per client IP address at most (default half of MCP_MAX_CONNECTIONS); behind a
               proxy or a port forward that shows every client as one address, raise it

Limits: a request head must arrive within {head} s of the connection's (or, kept alive, the request's) first
byte and the whole request within {request} s (else 408); a kept-alive connection idle for {idle} s is closed.

Tools: calculate_fare, get_discount_info. Official calendars embedded: {years}.
SIGTERM or SIGINT stops the server.",
        name = mcp::SERVER_NAME,
        version = mcp::SERVER_VERSION,
        max = http::DEFAULT_MAX_CONNECTIONS,
        head = http::HEAD_TIMEOUT.as_secs(),
        request = http::REQUEST_TIMEOUT.as_secs(),
        idle = http::IDLE_TIMEOUT.as_secs(),
        years = calendar::covered_years_text(),
    )
}

/// An environment variable; unset and empty are both `None`.
fn var(name: &str) -> Result<Option<String>, String> {
    match env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(env::VarError::NotPresent) => Ok(None),
        Err(env::VarError::NotUnicode(v)) => Err(format!("invalid {name} {v:?}: not UTF-8")),
    }
}

/// MCP_HOST: an IP address (IPv6 with or without brackets) or `localhost`; the default when unset or empty.
fn host_from(value: Option<&str>) -> Result<IpAddr, String> {
    let Some(raw) = value else {
        return Ok(DEFAULT_HOST);
    };
    let v = raw.trim();
    if v.is_empty() {
        return Ok(DEFAULT_HOST);
    }
    if v.eq_ignore_ascii_case("localhost") {
        return Ok(DEFAULT_HOST);
    }
    let bare = v
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(v);
    bare.parse::<IpAddr>().map_err(|_| {
        format!(
            "invalid MCP_HOST {raw:?}: set it to an IP address to listen on, such as 127.0.0.1 (this machine only) \
             or 0.0.0.0 (every interface), or unset it for {DEFAULT_HOST}"
        )
    })
}

/// MCP_ALLOWED_ORIGINS: comma-separated origins, each `scheme://host[:port]`.
fn origins_from(value: Option<&str>) -> Result<Vec<String>, String> {
    let Some(raw) = value else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            http::normalize_origin(o).ok_or_else(|| {
                format!(
                    "invalid origin {o:?} in MCP_ALLOWED_ORIGINS: write each as scheme://host[:port], \
                     e.g. https://app.example.com, separated by commas"
                )
            })
        })
        .collect()
}

/// A positive connection count, or `default` when unset.
fn count_from(name: &str, value: Option<&str>, default: usize) -> Result<usize, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "invalid {name} {v:?}: set it to a whole number of connections, 1 or more (or unset it)"
            )),
        },
    }
}

fn settings() -> Result<http::Settings, String> {
    let max = count_from(
        "MCP_MAX_CONNECTIONS",
        var("MCP_MAX_CONNECTIONS")?.as_deref(),
        http::DEFAULT_MAX_CONNECTIONS,
    )?;
    let per_client = count_from(
        "MCP_MAX_CONNECTIONS_PER_CLIENT",
        var("MCP_MAX_CONNECTIONS_PER_CLIENT")?.as_deref(),
        (max / 2).max(1),
    )?;
    Ok(http::Settings {
        allowed_origins: origins_from(var("MCP_ALLOWED_ORIGINS")?.as_deref())?,
        max_connections: max,
        max_connections_per_client: per_client.min(max),
    })
}

fn host() -> Result<IpAddr, String> {
    host_from(var("MCP_HOST")?.as_deref())
}

/// MCP_PORT, or the default when unset or empty.
fn port_from(value: Option<&str>) -> Result<u16, String> {
    let Some(raw) = value else {
        return Ok(DEFAULT_PORT);
    };
    let v = raw.trim();
    if v.is_empty() {
        return Ok(DEFAULT_PORT);
    }
    match v.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!(
            "invalid MCP_PORT {raw:?}: set it to a TCP port number from 1 to 65535 (or unset it for {DEFAULT_PORT})"
        )),
    }
}

fn port() -> Result<u16, String> {
    port_from(var("MCP_PORT")?.as_deref())
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset reads it; both only write to the local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Blocks SIGTERM and SIGINT in this thread and in every thread spawned after it, so that only the waiter
/// thread receives them. As PID 1 in a container the kernel applies no default action to these signals, so an
/// explicit wait is the only way they stop the server.
fn block_stop_signals() -> libc::sigset_t {
    let set = signal_set();
    // SAFETY: `set` is a valid, initialised signal set; the old mask is not requested.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        eprintln!("warning: cannot block SIGTERM/SIGINT (error {rc}); stop signals may not shut down cleanly");
    }
    set
}

/// Waits for a stop signal, lets requests in flight finish (bounded), then exits 0.
fn spawn_signal_waiter(set: libc::sigset_t) {
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is initialised and `sig` is a valid place for the result.
            while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
            let name = if sig == libc::SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            eprintln!("{name} received, shutting down");
            http::SHUTTING_DOWN.store(true, Ordering::SeqCst);
            let deadline = Instant::now() + DRAIN_TIMEOUT;
            while http::IN_FLIGHT.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            process::exit(0);
        })
        .unwrap_or_else(|e| {
            eprintln!("cannot start the signal thread: {e}");
            process::exit(1)
        });
}

fn serve() -> i32 {
    if let Err(e) = calendar::load() {
        eprintln!("{}: {e}", mcp::SERVER_NAME);
        return 1;
    }
    let (host, port, settings) = match (host(), port(), settings()) {
        (Ok(h), Ok(p), Ok(s)) => (h, p, s),
        (h, p, s) => {
            for e in [h.err(), p.err(), s.err()].into_iter().flatten() {
                eprintln!("{}: {e}", mcp::SERVER_NAME);
            }
            return 1;
        }
    };
    let addr = SocketAddr::new(host, port);
    let set = block_stop_signals();
    let listener = match http::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "{}: cannot listen on {addr}: {e}; set MCP_PORT to a free port (and MCP_HOST to an address of this machine)",
                mcp::SERVER_NAME
            );
            return 1;
        }
    };
    spawn_signal_waiter(set);
    eprintln!(
        "{} {} listening on http://{addr} (POST /mcp, GET /healthz)",
        mcp::SERVER_NAME,
        mcp::SERVER_VERSION
    );
    // One set of settings for the life of the process, shared by every connection thread.
    let settings: &'static http::Settings = Box::leak(Box::new(settings));
    match http::serve(listener, settings) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}: server stopped: {e}", mcp::SERVER_NAME);
            1
        }
    }
}

fn healthcheck() -> i32 {
    let result = host().and_then(|h| {
        port().and_then(|p| http::healthcheck(http::local_address(h, p), HEALTHCHECK_TIMEOUT))
    });
    match result {
        Ok(()) => {
            println!("healthy");
            0
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            1
        }
    }
}

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let code = match args.as_slice() {
        [] | ["serve"] => serve(),
        ["healthcheck"] => healthcheck(),
        ["-h" | "--help" | "help"] => {
            println!("{}", usage());
            0
        }
        ["-V" | "--version"] => {
            println!("{} {}", mcp::SERVER_NAME, mcp::SERVER_VERSION);
            0
        }
        _ => {
            eprintln!(
                "{}: unexpected arguments {:?}; run with --help for usage",
                mcp::SERVER_NAME,
                args
            );
            2
        }
    };
    process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_parsing() {
        assert_eq!(port_from(None), Ok(3000));
        assert_eq!(port_from(Some("")), Ok(3000));
        assert_eq!(port_from(Some(" 8080 ")), Ok(8080));
        assert_eq!(port_from(Some("65535")), Ok(65535));
        for bad in ["0", "65536", "-1", "abc", "80a", "3000.0"] {
            let err = port_from(Some(bad)).unwrap_err();
            assert!(err.starts_with("invalid MCP_PORT"), "{bad}: {err}");
            assert!(err.contains("1 to 65535"));
        }
    }

    #[test]
    fn host_parsing() {
        let ok = [
            (None, "127.0.0.1"),
            (Some(""), "127.0.0.1"),
            (Some("localhost"), "127.0.0.1"),
            (Some(" 0.0.0.0 "), "0.0.0.0"),
            (Some("192.168.1.20"), "192.168.1.20"),
            (Some("::"), "::"),
            (Some("[::1]"), "::1"),
        ];
        for (value, ip) in ok {
            assert_eq!(host_from(value), Ok(ip.parse().unwrap()), "{value:?}");
        }
        for bad in [
            "example.com",
            "0.0.0.0:3000",
            "256.1.1.1",
            "[::1",
            "http://127.0.0.1",
        ] {
            let err = host_from(Some(bad)).unwrap_err();
            assert!(err.starts_with("invalid MCP_HOST"), "{bad}: {err}");
            assert!(err.contains("0.0.0.0"), "{err}");
        }
    }

    #[test]
    fn origin_list_parsing() {
        assert_eq!(origins_from(None), Ok(vec![]));
        assert_eq!(
            origins_from(Some(" https://App.Example.com:443 , http://10.0.0.5:8080,")),
            Ok(vec![
                "https://app.example.com".to_string(),
                "http://10.0.0.5:8080".to_string()
            ])
        );
        for bad in [
            "app.example.com",
            "https://a.example/path",
            "null",
            "https://a:99999",
        ] {
            let err = origins_from(Some(bad)).unwrap_err();
            assert!(err.contains("MCP_ALLOWED_ORIGINS"), "{bad}: {err}");
        }
    }

    #[test]
    fn connection_counts() {
        assert_eq!(count_from("X", None, 512), Ok(512));
        assert_eq!(count_from("X", Some(" 8 "), 512), Ok(8));
        for bad in ["0", "-1", "many", "1.5"] {
            assert!(count_from("X", Some(bad), 512)
                .unwrap_err()
                .starts_with("invalid X"));
        }
    }
}
