//! The retry schedule, as pure functions: which failures are worth another attempt and how long to wait.
//!
//! 3 attempts; before attempt n+1 wait base * 2^(n-1) (10 s, then 20 s by default), or what the registry's
//! Retry-After asks for. The base is configurable (`XTASK_RETRY_BASE_MS`) so tests of the failure paths run in
//! milliseconds.

use std::time::{Duration, SystemTime};

/// Attempts per request, including the first.
pub const ATTEMPTS: u32 = 3;
/// The first backoff delay.
pub const DEFAULT_BASE: Duration = Duration::from_secs(10);
/// The variable that overrides the base delay, in milliseconds.
pub const BASE_ENV: &str = "XTASK_RETRY_BASE_MS";
/// A registry asking for longer than this is not waited for: the attempt fails as if no retry were left.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// How often and how patiently to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub attempts: u32,
    pub base: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            attempts: ATTEMPTS,
            base: DEFAULT_BASE,
        }
    }
}

impl Policy {
    /// The default policy with the base taken from `XTASK_RETRY_BASE_MS`'s value, when it is a number.
    pub fn with_base_ms(value: Option<&str>) -> Policy {
        let base = value
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(DEFAULT_BASE, Duration::from_millis);
        Policy {
            base,
            ..Policy::default()
        }
    }

    /// The policy the process environment asks for (read at the edge).
    pub fn from_env() -> Policy {
        Policy::with_base_ms(std::env::var(BASE_ENV).ok().as_deref())
    }

    /// How long to wait after failed attempt `attempt` (1-based) before the next one; `None` when no attempt is
    /// left or the registry asked for an unreasonable wait.
    pub fn delay_after(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if attempt >= self.attempts {
            return None;
        }
        match retry_after {
            Some(wait) if wait > MAX_RETRY_AFTER => None,
            Some(wait) => Some(wait),
            None => Some(self.base.saturating_mul(1 << (attempt - 1).min(16))),
        }
    }
}

/// Statuses that say "try again later": timeouts, throttling and server-side failures. Every other 4xx is the
/// request's fault and repeating it would only fail the same way.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// A Retry-After value: delay-seconds or an HTTP date (relative to `now`; a past date means "now").
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_schedule() {
        // Every wait of a request that always fails.
        let schedule = |policy: &Policy| -> Vec<Duration> {
            (1..=policy.attempts)
                .map_while(|n| policy.delay_after(n, None))
                .collect()
        };
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let cases = [
            (None, vec![s(10), s(20)]),
            (Some("50"), vec![ms(50), ms(100)]),
            (Some(" 0 "), vec![ms(0), ms(0)]),
            (Some("fast"), vec![s(10), s(20)]),
            (Some(""), vec![s(10), s(20)]),
        ];
        for (env, want) in cases {
            let policy = Policy::with_base_ms(env);
            assert_eq!(policy.attempts, 3);
            assert_eq!(schedule(&policy), want, "{env:?}");
        }
        let four = Policy {
            attempts: 4,
            base: s(10),
        };
        assert_eq!(schedule(&four), vec![s(10), s(20), s(40)]);
    }

    #[test]
    fn delays_per_attempt() {
        let p = Policy::default();
        let s = Duration::from_secs;
        let cases = [
            (1, None, Some(s(10))),
            (2, None, Some(s(20))),
            (3, None, None),
            (1, Some(s(3)), Some(s(3))),
            (2, Some(s(0)), Some(s(0))),
            (3, Some(s(3)), None),
            (1, Some(s(301)), None),
        ];
        for (attempt, retry_after, want) in cases {
            assert_eq!(
                p.delay_after(attempt, retry_after),
                want,
                "{attempt} {retry_after:?}"
            );
        }
    }

    #[test]
    fn retryable_statuses() {
        let retry = [408, 429, 500, 502, 503, 504];
        let never = [
            200, 201, 202, 400, 401, 403, 404, 405, 409, 412, 413, 416, 501, 505,
        ];
        for status in retry {
            assert!(is_retryable_status(status), "{status}");
        }
        for status in never {
            assert!(!is_retryable_status(status), "{status}");
        }
    }

    #[test]
    fn retry_after_values() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let s = Duration::from_secs;
        let cases = [
            ("120", Some(s(120))),
            (" 0", Some(s(0))),
            ("Sun, 06 Nov 1994 08:50:07 GMT", Some(s(30))),
            ("Sun, 06 Nov 1994 08:49:37 GMT", Some(s(0))),
            ("Sun, 06 Nov 1994 08:40:00 GMT", Some(s(0))),
            ("Sunday, 06-Nov-94 08:49:47 GMT", Some(s(10))),
            ("Sun Nov  6 08:49:57 1994", Some(s(20))),
            ("-5", None),
            ("1.5", None),
            ("soon", None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_retry_after(value, now), want, "{value:?}");
        }
    }
}
