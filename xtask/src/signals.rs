//! Cancellation of a publish: SIGINT, SIGTERM and SIGHUP are noted rather than obeyed at once, so that a publish
//! stops only where stopping leaves every registry whole, and otherwise finishes the tag moves it has begun.
//!
//! GitHub cancels a step with SIGINT, then SIGTERM 7.5 s later, then SIGKILL 2.5 s after that (some runner versions
//! send SIGHUP). Moving the tags takes milliseconds, so finishing them always fits; stopping in the middle would
//! leave the registries naming different digests under one tag.

use std::ffi::c_int;
use std::fmt;
use std::sync::atomic::{AtomicI32, Ordering};

/// The signals a cancel sends (the same numbers on Linux and macOS).
const DEFERRED: [(c_int, &str); 3] = [(1, "SIGHUP"), (2, "SIGINT"), (15, "SIGTERM")];

/// The last deferred signal received, 0 for none.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" {
    /// C's `signal(2)`; glibc and macOS give it BSD semantics (SA_RESTART), so blocking calls in flight resume
    /// after the handler rather than fail with EINTR.
    fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
}

/// The handler: one atomic store, which is async-signal-safe.
extern "C" fn note(signum: c_int) {
    RECEIVED.store(signum, Ordering::SeqCst);
}

/// A cancel that was received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signal(pub c_int);

impl Signal {
    /// The shell's convention: 128 + the signal's number (130 for SIGINT, 143 for SIGTERM).
    pub fn exit_code(self) -> i32 {
        128 + self.0
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match DEFERRED.iter().find(|(n, _)| *n == self.0) {
            Some((_, name)) => f.write_str(name),
            None => write!(f, "signal {}", self.0),
        }
    }
}

/// From now on SIGHUP, SIGINT and SIGTERM are noted for [`received`] instead of ending the process.
pub fn defer() {
    for (number, _) in DEFERRED {
        // SAFETY: installs a handler that only stores to an atomic; the previous handler is not needed.
        unsafe {
            signal(number, note);
        }
    }
}

/// The cancel received since [`defer`], if any.
pub fn received() -> Option<Signal> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        n => Some(Signal(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_exit_codes() {
        let cases = [
            (1, "SIGHUP", 129),
            (2, "SIGINT", 130),
            (15, "SIGTERM", 143),
            (10, "signal 10", 138),
        ];
        for (number, name, code) in cases {
            assert_eq!(Signal(number).to_string(), name);
            assert_eq!(Signal(number).exit_code(), code);
        }
    }
}
