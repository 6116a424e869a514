//! TPASS month-price MCP server: entry point, command line, environment and signals.
//!
//! `serve` (the default) answers MCP over HTTP on 0.0.0.0:$MCP_PORT; `healthcheck` asks a running server on
//! 127.0.0.1 for /healthz so a container image needs neither a shell nor curl for its HEALTHCHECK.

mod calendar;
mod fare;
mod http;
mod mcp;
#[cfg(test)]
mod schema_check;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use std::{env, process, thread};

const DEFAULT_PORT: u16 = 3000;
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// Part of the 2 s stop budget that in-flight requests may use to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(1500);

fn usage() -> String {
    format!(
        "{name} {version}
Tells a Taipei commuter whether the TPASS monthly pass (NT$1200, 30 days) beats paying per ride with the
Taipei Metro frequent-rider discount, as an MCP server (streamable HTTP, stateless).

Usage:
  {name} [serve]       listen on 0.0.0.0:$MCP_PORT (POST /mcp, GET /healthz)
  {name} healthcheck   GET http://127.0.0.1:$MCP_PORT/healthz; exit 0 on 200, else 1 (3 s limit)
  {name} --help | --version

Environment:
  MCP_PORT   TCP port, 1-65535 (default {DEFAULT_PORT})

Tools: calculate_fare, get_discount_info. SIGTERM or SIGINT stops the server.",
        name = mcp::SERVER_NAME,
        version = mcp::SERVER_VERSION,
    )
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
    match env::var("MCP_PORT") {
        Ok(v) => port_from(Some(&v)),
        Err(env::VarError::NotPresent) => port_from(None),
        Err(env::VarError::NotUnicode(v)) => Err(format!(
            "invalid MCP_PORT {v:?}: set it to a TCP port number from 1 to 65535"
        )),
    }
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
    let port = match port() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: {e}", mcp::SERVER_NAME);
            return 1;
        }
    };
    let set = block_stop_signals();
    let listener = match http::bind(port) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "{}: cannot listen on 0.0.0.0:{port}: {e}; set MCP_PORT to a free port",
                mcp::SERVER_NAME
            );
            return 1;
        }
    };
    spawn_signal_waiter(set);
    eprintln!(
        "{} {} listening on http://0.0.0.0:{port} (POST /mcp, GET /healthz)",
        mcp::SERVER_NAME,
        mcp::SERVER_VERSION
    );
    match http::serve(listener) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}: server stopped: {e}", mcp::SERVER_NAME);
            1
        }
    }
}

fn healthcheck() -> i32 {
    let result = port().and_then(|p| http::healthcheck(p, HEALTHCHECK_TIMEOUT));
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
}
