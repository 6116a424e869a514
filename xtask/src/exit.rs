//! Exit codes of the pipeline's contract, carried through `anyhow` errors.
//!
//! 2 invalid input or tag, 3 build failed, 4 registry failed after retries, 128 + n stopped by signal n (130
//! SIGINT, 143 SIGTERM), 1 anything else.

use std::fmt;

/// An error tagged with the process exit code it must produce.
#[derive(Debug)]
pub struct Coded {
    pub code: i32,
    pub message: String,
    /// The HTTP status a registry answered, for callers to whom a status is an answer (Docker Hub's 403 on a
    /// DELETE while tagged), not only a failure.
    pub status: Option<u16>,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

pub const INVALID_INPUT: i32 = 2;
pub const BUILD_FAILED: i32 = 3;
pub const REGISTRY_FAILED: i32 = 4;

/// Bad input: a tag, ref, flag or file the user must fix (exit 2).
pub fn invalid(message: impl Into<String>) -> anyhow::Error {
    Coded {
        code: INVALID_INPUT,
        message: message.into(),
        status: None,
    }
    .into()
}

/// A build (or a build-side artifact such as a digest file) failed (exit 3).
pub fn build_failed(message: impl Into<String>) -> anyhow::Error {
    Coded {
        code: BUILD_FAILED,
        message: message.into(),
        status: None,
    }
    .into()
}

/// A registry still failed after the retries (exit 4).
pub fn registry_failed(message: impl Into<String>) -> anyhow::Error {
    registry_answered(message, None)
}

/// A registry failed with this HTTP status (exit 4); [`status_of`] finds it again.
pub fn registry_answered(message: impl Into<String>, status: Option<u16>) -> anyhow::Error {
    Coded {
        code: REGISTRY_FAILED,
        message: message.into(),
        status,
    }
    .into()
}

/// Stopped by a cancel (exit 128 + the signal's number).
pub fn cancelled(signal: crate::signals::Signal, message: impl Into<String>) -> anyhow::Error {
    Coded {
        code: signal.exit_code(),
        message: message.into(),
        status: None,
    }
    .into()
}

/// The HTTP status of the registry failure in an error's chain, if it came from an answer.
pub fn status_of(err: &anyhow::Error) -> Option<u16> {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<Coded>())
        .and_then(|coded| coded.status)
}

/// The exit code for an error: the first coded error in its chain, else 1.
pub fn code_of(err: &anyhow::Error) -> i32 {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<Coded>())
        .map_or(1, |coded| coded.code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn code_survives_context() {
        let cases: [(anyhow::Error, i32); 5] = [
            (invalid("bad tag"), 2),
            (cancelled(crate::signals::Signal(15), "stopped"), 143),
            (build_failed("podman build"), 3),
            (registry_failed("push"), 4),
            (anyhow::anyhow!("other"), 1),
        ];
        for (err, want) in cases {
            let wrapped = Err::<(), _>(err).context("outer step").unwrap_err();
            assert_eq!(code_of(&wrapped), want, "{wrapped:#}");
        }
        let answered = Err::<(), _>(registry_answered("DELETE", Some(403)))
            .context("prune")
            .unwrap_err();
        assert_eq!((code_of(&answered), status_of(&answered)), (4, Some(403)));
        assert_eq!(status_of(&registry_failed("timeout")), None);
    }
}
