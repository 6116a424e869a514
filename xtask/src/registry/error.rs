//! Registry errors that say where and what: the registry, repository, operation, HTTP status and the
//! registry's own error code (from the distribution JSON error body), and whether another attempt may help.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::exit;

/// One failed registry request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryError {
    /// `ghcr.io`, `127.0.0.1:5000`
    pub registry: String,
    /// `owner/name`
    pub repository: String,
    /// `PUT manifest sha256:…`, `upload blob sha256:…`
    pub operation: String,
    /// The HTTP status, or `None` when no response came (connection refused, timeout).
    pub status: Option<u16>,
    /// The registry's error codes (`MANIFEST_INVALID`, `DENIED`), comma-joined.
    pub code: Option<String>,
    /// The registry's message, or the transport error, or what we found wrong with the answer.
    pub detail: String,
    /// What the user can do about it.
    pub remedy: Option<String>,
    /// Whether the same request may succeed later.
    pub retryable: bool,
    /// What the registry asked us to wait (Retry-After).
    pub retry_after: Option<Duration>,
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in {}/{}: ",
            self.operation, self.registry, self.repository
        )?;
        match (self.status, &self.code) {
            (Some(status), Some(code)) => {
                write!(f, "HTTP {status} {}", crate::github::untrusted(code))?
            }
            (Some(status), None) => write!(f, "HTTP {status}")?,
            (None, _) => f.write_str("no response")?,
        }
        if !self.detail.is_empty() {
            // The registry's own words: escaped, so they cannot forge a log line or a workflow command.
            write!(f, " ({})", crate::github::untrusted(&self.detail))?;
        }
        if let Some(remedy) = &self.remedy {
            write!(f, "; {remedy}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RegistryError {}

impl RegistryError {
    /// The error the command ends with (exit 4). After retries the message starts with
    /// "Failed to <purpose> <registry> after N attempts"; a request that was not worth repeating (a 4xx such as a
    /// rejected password) says so at once.
    pub fn finish(self, purpose: &str, attempts: u32) -> anyhow::Error {
        let message = if self.retryable && attempts > 1 {
            format!(
                "Failed to {purpose} {} after {attempts} attempts: {self}",
                self.registry
            )
        } else {
            format!("Failed to {purpose} {}: {self}", self.registry)
        };
        exit::registry_answered(message, self.status)
    }
}

/// The distribution spec's error body: `{"errors": [{"code": "...", "message": "...", "detail": ...}]}`.
/// Returns (codes, messages), each comma-joined, or `None` for a body of another shape.
pub fn parse_error_body(body: &[u8]) -> Option<(String, String)> {
    #[derive(Deserialize)]
    struct Body {
        errors: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let body: Body = serde_json::from_slice(body).ok()?;
    if body.errors.is_empty() {
        return None;
    }
    let join = |f: &dyn Fn(&Entry) -> &str| {
        let parts: Vec<&str> = body
            .errors
            .iter()
            .map(f)
            .filter(|s| !s.is_empty())
            .collect();
        parts.join(", ")
    };
    Some((join(&|e| &e.code), join(&|e| &e.message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies() {
        let cases: [(&str, Option<(&str, &str)>); 6] = [
            (
                r#"{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid","detail":{}}]}"#,
                Some(("MANIFEST_INVALID", "manifest invalid")),
            ),
            (
                r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"},{"code":"DENIED","message":"no"}]}"#,
                Some(("BLOB_UNKNOWN, DENIED", "blob unknown, no")),
            ),
            (
                r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
                Some(("UNAUTHORIZED", "")),
            ),
            (r#"{"errors":[]}"#, None),
            ("<html>502 Bad Gateway</html>", None),
            ("", None),
        ];
        for (body, want) in cases {
            let got = parse_error_body(body.as_bytes());
            assert_eq!(
                got.as_ref().map(|(c, m)| (c.as_str(), m.as_str())),
                want,
                "{body}"
            );
        }
    }

    #[test]
    fn messages_name_everything_and_exit_4() {
        let err = RegistryError {
            registry: "ghcr.io".into(),
            repository: "o/n".into(),
            operation: "PUT manifest sha256:ab".into(),
            status: Some(503),
            code: Some("UNAVAILABLE".into()),
            detail: "service unavailable".into(),
            remedy: None,
            retryable: true,
            retry_after: None,
        };
        let shown = err.to_string();
        assert_eq!(
            shown,
            "PUT manifest sha256:ab in ghcr.io/o/n: HTTP 503 UNAVAILABLE (service unavailable)"
        );
        let finished = err.clone().finish("push to", 3);
        assert_eq!(exit::code_of(&finished), 4);
        assert!(finished
            .to_string()
            .starts_with("Failed to push to ghcr.io after 3 attempts: PUT manifest"));

        let denied = RegistryError {
            status: Some(401),
            code: None,
            detail: String::new(),
            remedy: Some("check REGISTRY_USERNAME and REGISTRY_PASSWORD".into()),
            retryable: false,
            ..err
        };
        let finished = denied.finish("push to", 1);
        assert_eq!(exit::code_of(&finished), 4);
        assert_eq!(
            finished.to_string(),
            "Failed to push to ghcr.io: PUT manifest sha256:ab in ghcr.io/o/n: HTTP 401; \
             check REGISTRY_USERNAME and REGISTRY_PASSWORD"
        );
    }
}
