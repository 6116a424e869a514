//! Which commit an image records, and which of two commits is newer: what keeps `latest` from going back.
//!
//! An image says what it was built from in its labels (`org.opencontainers.image.revision` and `.created`, the
//! commit's time unless `SOURCE_DATE_EPOCH` said otherwise). Git ancestry decides where the checkout has both
//! commits; elsewhere (a shallow CI checkout) the recorded times do, and equal times fall back to the revisions'
//! order, so that every racing release reaches the same verdict about the same two images.

use std::cmp::Ordering;
use std::collections::BTreeMap;

pub const REVISION_LABEL: &str = "org.opencontainers.image.revision";
pub const CREATED_LABEL: &str = "org.opencontainers.image.created";

/// The commit an image records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    pub revision: String,
    /// Seconds since the epoch, from the `created` label (`None`: absent or not `YYYY-MM-DDTHH:MM:SSZ`).
    pub time: Option<u64>,
}

impl Commit {
    /// The commit in an image's labels; `None` for an image that records no revision.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<Commit> {
        let revision = labels.get(REVISION_LABEL)?.trim();
        if revision.is_empty() {
            return None;
        }
        Some(Commit {
            revision: revision.to_owned(),
            time: labels.get(CREATED_LABEL).and_then(|t| parse_rfc3339(t)),
        })
    }

    /// `abc1234def56 of 2026-12-01T10:00:00Z`, for logs and the summary.
    pub fn describe(&self) -> String {
        let short: String = self.revision.chars().take(12).collect();
        match self.time {
            Some(time) => format!("{short} of {}", crate::image::meta::rfc3339(time)),
            None => short,
        }
    }
}

/// What the checkout knows of the commits' history.
pub trait History {
    /// Whether `older` is an ancestor of `newer`; `None` where the checkout does not have both.
    fn is_ancestor(&self, older: &str, newer: &str) -> Option<bool>;
}

/// No history at all: the recorded times decide.
#[cfg(test)]
pub struct NoHistory;

#[cfg(test)]
impl History for NoHistory {
    fn is_ancestor(&self, _: &str, _: &str) -> Option<bool> {
        None
    }
}

/// How `theirs` compares with `ours`: `Greater` when it is the newer commit. An image with no record of its commit
/// is older than any that has one.
pub fn compare(ours: Option<&Commit>, theirs: Option<&Commit>, history: &dyn History) -> Ordering {
    let (ours, theirs) = match (ours, theirs) {
        (Some(ours), Some(theirs)) => (ours, theirs),
        (ours, theirs) => return theirs.is_some().cmp(&ours.is_some()),
    };
    if ours.revision == theirs.revision {
        return Ordering::Equal;
    }
    if history.is_ancestor(&theirs.revision, &ours.revision) == Some(true) {
        return Ordering::Less;
    }
    if history.is_ancestor(&ours.revision, &theirs.revision) == Some(true) {
        return Ordering::Greater;
    }
    theirs
        .time
        .unwrap_or(0)
        .cmp(&ours.time.unwrap_or(0))
        .then_with(|| theirs.revision.cmp(&ours.revision))
}

/// `YYYY-MM-DDTHH:MM:SSZ` (the form the build writes) as seconds since the epoch; anything else is `None`.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let shape_ok = b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z';
    if !shape_ok {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u64> {
        let part = &text[range];
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if year < 1970 || !(1..=12).contains(&month) || day == 0 || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    // Civil date to days (the inverse of the build's `rfc3339`).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let (era, yoe) = (y / 400, y % 400);
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    let epoch = days * 86_400 + hour * 3600 + minute * 60 + second;
    // A day past the month's end (`02-30`) would roll over; such a label is not one the build wrote.
    (crate::image::meta::rfc3339(epoch) == text).then_some(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Line(&'static [&'static str]);

    /// A straight history, oldest first.
    impl History for Line {
        fn is_ancestor(&self, older: &str, newer: &str) -> Option<bool> {
            let at = |r: &str| self.0.iter().position(|c| *c == r);
            Some(at(older)? <= at(newer)?)
        }
    }

    fn commit(revision: &str, time: Option<u64>) -> Commit {
        Commit {
            revision: revision.into(),
            time,
        }
    }

    #[test]
    fn newer_commits() {
        let history = Line(&["a", "b", "c"]);
        use Ordering::*;
        type Case<'h> = (
            &'static str,
            Option<Commit>,
            Option<Commit>,
            &'h dyn History,
            Ordering,
        );
        let cases: Vec<Case> = vec![
            (
                "same revision",
                Some(commit("b", Some(5))),
                Some(commit("b", Some(9))),
                &NoHistory,
                Equal,
            ),
            (
                "theirs is our parent",
                Some(commit("b", Some(5))),
                Some(commit("a", Some(9))),
                &history,
                Less,
            ),
            (
                "theirs descends from ours",
                Some(commit("a", Some(9))),
                Some(commit("c", Some(5))),
                &history,
                Greater,
            ),
            (
                "no history: later time wins",
                Some(commit("a", Some(5))),
                Some(commit("c", Some(9))),
                &NoHistory,
                Greater,
            ),
            (
                "no history: earlier time loses",
                Some(commit("c", Some(9))),
                Some(commit("a", Some(5))),
                &NoHistory,
                Less,
            ),
            (
                "unknown to the history: times",
                Some(commit("x", Some(9))),
                Some(commit("a", Some(5))),
                &history,
                Less,
            ),
            (
                "equal times: revision order",
                Some(commit("a", Some(5))),
                Some(commit("b", Some(5))),
                &NoHistory,
                Greater,
            ),
            (
                "equal times, other side",
                Some(commit("b", Some(5))),
                Some(commit("a", Some(5))),
                &NoHistory,
                Less,
            ),
            (
                "theirs records no time",
                Some(commit("a", Some(5))),
                Some(commit("b", None)),
                &NoHistory,
                Less,
            ),
            (
                "theirs records no commit",
                Some(commit("a", Some(5))),
                None,
                &NoHistory,
                Less,
            ),
            (
                "ours records no commit",
                None,
                Some(commit("a", Some(5))),
                &NoHistory,
                Greater,
            ),
            ("neither records one", None, None, &NoHistory, Equal),
        ];
        for (name, ours, theirs, history, want) in cases {
            assert_eq!(
                compare(ours.as_ref(), theirs.as_ref(), history),
                want,
                "{name}"
            );
            // The verdict is the same seen from the other side.
            assert_eq!(
                compare(theirs.as_ref(), ours.as_ref(), history),
                want.reverse(),
                "{name}, reversed"
            );
        }
    }

    #[test]
    fn created_labels() {
        let cases = [
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2000-02-29T00:00:00Z", Some(951_782_400)),
            ("2023-11-14T22:13:20Z", Some(1_700_000_000)),
            ("2100-01-01T00:00:00Z", Some(4_102_444_800)),
            ("2023-02-30T00:00:00Z", None),
            ("2023-11-14T22:13:20+01:00", None),
            ("2023-11-14 22:13:20Z", None),
            ("2023-11-14T22:13:20.5Z", None),
            ("1969-12-31T23:59:59Z", None),
            ("2023-13-01T00:00:00Z", None),
            ("+023-11-14T22:13:20Z", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_rfc3339(text), want, "{text:?}");
        }
    }

    #[test]
    fn commits_from_labels() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            Commit::from_labels(&labels(&[
                (REVISION_LABEL, "abc"),
                (CREATED_LABEL, "2023-11-14T22:13:20Z")
            ])),
            Some(commit("abc", Some(1_700_000_000)))
        );
        assert_eq!(
            Commit::from_labels(&labels(&[
                (REVISION_LABEL, "abc"),
                (CREATED_LABEL, "yesterday")
            ])),
            Some(commit("abc", None))
        );
        assert_eq!(Commit::from_labels(&labels(&[(REVISION_LABEL, " ")])), None);
        assert_eq!(
            Commit::from_labels(&labels(&[(CREATED_LABEL, "2023-11-14T22:13:20Z")])),
            None
        );
    }
}
