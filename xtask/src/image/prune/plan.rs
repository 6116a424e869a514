//! The pure core of pruning: from what a repository holds right now (its tags and the children of its indexes),
//! decide which manifests may be deleted and why every other one is kept.
//!
//! Nothing here talks to a registry, so every rule is covered by table-driven tests. The rules:
//! - a manifest a tag points to is kept, and so is every manifest such an index lists (recursively);
//! - the new index and its children are kept even if no listed tag shows them yet (the tag list may lag);
//! - when a tagged manifest's content could not be read, what it references is unknown, so nothing is deleted;
//! - indexes are deleted before their children, so no index is ever left listing a missing child by our doing
//!   (Docker Hub even refuses to delete a child while an index lists it);
//! - what refers to a manifest (attestations, kept by registries without the referrers API under the tag
//!   `sha256-<hex>` of the OCI distribution spec's fallback) lives and goes with it: such a tag keeps its index only
//!   while its subject is kept, and a deleted manifest's referrers are deleted after it.

use std::collections::{BTreeMap, BTreeSet};

/// What one registry repository holds, as far as pruning needs to know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every tag and the digest it points to.
    pub tags: BTreeMap<String, String>,
    /// The children of every index whose content was read; image manifests have none and may be absent.
    pub children: BTreeMap<String, Vec<String>>,
    /// Manifests whose content could not be read, so what they reference is unknown.
    pub unreadable: BTreeSet<String>,
}

/// Why a manifest is kept.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Keep {
    /// A tag points to it.
    Tagged { tag: String },
    /// An index that a tag points to lists it.
    Referenced { index: String, tag: String },
    /// It is the new index, or one of its children.
    New,
    /// A tagged manifest could not be read, so whether it references this one is unknown.
    Unknown { unreadable: String },
}

impl std::fmt::Display for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Keep::Tagged { tag } => write!(f, "tagged `{tag}`"),
            Keep::Referenced { index, tag } => write!(f, "listed by {index} (tagged `{tag}`)"),
            Keep::New => f.write_str("part of the new index"),
            Keep::Unknown { unreadable } => {
                write!(
                    f,
                    "{unreadable} could not be read, so its references are unknown"
                )
            }
        }
    }
}

/// One manifest to delete, with the index it was found under (None for a root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doomed {
    pub digest: String,
    pub parent: Option<String>,
}

/// The outcome of planning: what goes (in a safe order) and what stays, with the reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Parents before their children.
    pub delete: Vec<Doomed>,
    pub keep: Vec<(String, Keep)>,
}

impl Snapshot {
    /// Every manifest that must stay, with the first reason found (tags in name order).
    pub fn protected(&self, new: Option<&str>) -> BTreeMap<String, Keep> {
        let mut keep = BTreeMap::new();
        if let Some(new) = new {
            for digest in self.closure(new) {
                keep.insert(digest, Keep::New);
            }
        }
        let protect = |keep: &mut BTreeMap<String, Keep>, tag: &String, digest: &String| {
            keep.entry(digest.clone())
                .or_insert_with(|| Keep::Tagged { tag: tag.clone() });
            for child in self.closure(digest).into_iter().skip(1) {
                keep.entry(child).or_insert_with(|| Keep::Referenced {
                    index: digest.clone(),
                    tag: tag.clone(),
                });
            }
        };
        for (tag, digest) in &self.tags {
            if referrers_subject(tag).is_none() {
                protect(&mut keep, tag, digest);
            }
        }
        // A referrers tag only while its subject stays (a referrer never keeps its subject).
        for (tag, digest) in &self.tags {
            if referrers_subject(tag).is_some_and(|subject| keep.contains_key(&subject)) {
                protect(&mut keep, tag, digest);
            }
        }
        keep
    }

    /// The referrers tags whose subject is `digest`, with the index each names.
    fn referrers_of(&self, digest: &str) -> impl Iterator<Item = &String> + '_ {
        let tag = digest.replacen(':', "-", 1);
        self.tags
            .iter()
            .filter(move |(t, _)| **t == tag)
            .map(|(_, index)| index)
    }

    /// A manifest that may reference others but whose content is unknown, if any: a tagged one, or the new one.
    fn blind_spot(&self, new: Option<&str>) -> Option<String> {
        let roots = self.tags.values().map(String::as_str).chain(new);
        for root in roots {
            if let Some(unreadable) = self
                .closure(root)
                .into_iter()
                .find(|digest| self.unreadable.contains(digest))
            {
                return Some(unreadable);
            }
        }
        None
    }

    /// The digest itself, then everything it lists, depth first, each once.
    pub fn closure(&self, digest: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        self.walk(digest, &mut seen, &mut out);
        out
    }

    fn walk(&self, digest: &str, seen: &mut BTreeSet<String>, out: &mut Vec<String>) {
        if !seen.insert(digest.to_owned()) {
            return;
        }
        out.push(digest.to_owned());
        for child in self.children.get(digest).into_iter().flatten() {
            self.walk(child, seen, out);
        }
    }

    /// Parent of each digest in `roots`' closures (the first index found listing it).
    fn parents(&self, roots: &[String]) -> BTreeMap<String, String> {
        let mut parent = BTreeMap::new();
        for root in roots {
            for digest in self.closure(root) {
                for child in self.children.get(&digest).into_iter().flatten() {
                    if child != &digest {
                        parent
                            .entry(child.clone())
                            .or_insert_with(|| digest.clone());
                    }
                }
            }
        }
        parent
    }
}

/// What to delete now that the tag moved from `old` to `new`: `old` and those of its children no tag still needs.
pub fn superseded(snapshot: &Snapshot, old: &str, new: &str) -> Plan {
    if old == new {
        return Plan::default();
    }
    decide(snapshot, &[old.to_owned()], Some(new))
}

/// What to delete among manifests known to exist (`known`, tagged or not): every one that no tag needs.
pub fn untagged(snapshot: &Snapshot, known: &BTreeSet<String>) -> Plan {
    // Start from the manifests no other known index lists, so each index comes before its children.
    let listed: BTreeSet<&String> = known
        .iter()
        .flat_map(|digest| snapshot.children.get(digest).into_iter().flatten())
        .filter(|child| known.contains(*child))
        .collect();
    // A referrers index goes with its subject, after it (see `decide`), never as a root of its own.
    let referrers: BTreeSet<&String> = snapshot
        .tags
        .iter()
        .filter(|(tag, _)| referrers_subject(tag).is_some())
        .map(|(_, index)| index)
        .collect();
    let mut roots: Vec<String> = known
        .iter()
        .filter(|digest| !listed.contains(digest) && !referrers.contains(digest))
        .cloned()
        .collect();
    // A cycle of indexes has no root; it cannot be built with content addressing, but keep every digest covered.
    let covered: BTreeSet<String> = roots.iter().flat_map(|r| snapshot.closure(r)).collect();
    roots.extend(
        known
            .iter()
            .filter(|d| !covered.contains(*d) && !referrers.contains(d))
            .cloned(),
    );
    decide(snapshot, &roots, None)
}

fn decide(snapshot: &Snapshot, roots: &[String], new: Option<&str>) -> Plan {
    let protected = snapshot.protected(new);
    let blind = snapshot.blind_spot(new);
    let parents = snapshot.parents(roots);
    let mut plan = Plan::default();
    let mut seen = BTreeSet::new();
    for root in roots {
        for digest in snapshot.closure(root) {
            if !seen.insert(digest.clone()) {
                continue;
            }
            if let Some(reason) = protected.get(&digest) {
                plan.keep.push((digest, reason.clone()));
            } else if let Some(unreadable) = &blind {
                plan.keep.push((
                    digest,
                    Keep::Unknown {
                        unreadable: unreadable.clone(),
                    },
                ));
            } else {
                let parent = parents.get(&digest).cloned();
                plan.delete.push(Doomed { digest, parent });
            }
        }
    }
    // What refers to a deleted manifest goes after it: its referrers index (under the subject, so it goes in the
    // second round, after the subject), then what that index lists.
    let subjects: Vec<String> = plan.delete.iter().map(|d| d.digest.clone()).collect();
    for subject in &subjects {
        for index in snapshot.referrers_of(subject) {
            for digest in snapshot.closure(index) {
                if !seen.insert(digest.clone())
                    || protected.contains_key(&digest)
                    || blind.is_some()
                {
                    continue;
                }
                let parent = if &digest == index {
                    subject.clone()
                } else {
                    parents
                        .get(&digest)
                        .cloned()
                        .unwrap_or_else(|| index.clone())
                };
                plan.delete.push(Doomed {
                    digest,
                    parent: Some(parent),
                });
            }
        }
    }
    plan
}

/// The manifest a referrers tag (`sha256-<64 hex>`, the OCI distribution spec's fallback) names the referrers of.
pub fn referrers_subject(tag: &str) -> Option<String> {
    let hex = tag.strip_prefix("sha256-")?;
    let is_hex = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    is_hex.then(|| format!("sha256:{hex}"))
}

/// Which of the manifests deleted in this run a tag needs again (a concurrent release began using them), in the
/// order to put them back: children before the indexes that list them, since a registry may check an index's
/// children exist.
pub fn to_restore(snapshot: &Snapshot, deleted: &[String], new: Option<&str>) -> Vec<String> {
    let protected = snapshot.protected(new);
    let mut wanted: Vec<String> = deleted
        .iter()
        .filter(|digest| protected.contains_key(*digest))
        .cloned()
        .collect();
    // `deleted` is parents first; reversing puts every child before its parent.
    wanted.reverse();
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(tags: &[(&str, &str)], indexes: &[(&str, &[&str])]) -> Snapshot {
        Snapshot {
            tags: tags
                .iter()
                .map(|(t, d)| (t.to_string(), d.to_string()))
                .collect(),
            children: indexes
                .iter()
                .map(|(i, c)| (i.to_string(), c.iter().map(|c| c.to_string()).collect()))
                .collect(),
            unreadable: BTreeSet::new(),
        }
    }

    fn deleted(plan: &Plan) -> Vec<&str> {
        plan.delete.iter().map(|d| d.digest.as_str()).collect()
    }

    #[test]
    fn referrers_live_and_go_with_their_subject() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let tag = |digest: &str| digest.replacen(':', "-", 1);
        let (old, new) = (d('a'), d('b'));
        let (old_amd, new_amd) = (d('c'), d('e'));
        let (old_refs, old_att, old_amd_refs, old_sbom) = (d('1'), d('2'), d('3'), d('4'));
        let (new_refs, new_att) = (d('5'), d('6'));
        let snap = snapshot(
            &[
                ("latest", &new),
                (&tag(&old), &old_refs),
                (&tag(&old_amd), &old_amd_refs),
                (&tag(&new), &new_refs),
            ],
            &[
                (&old, &[&old_amd]),
                (&new, &[&new_amd]),
                (&old_refs, &[&old_att]),
                (&old_amd_refs, &[&old_sbom]),
                (&new_refs, &[&new_att]),
            ],
        );
        let plan = superseded(&snap, &old, &new);
        assert_eq!(
            deleted(&plan),
            [
                &old,
                &old_amd,
                &old_refs,
                &old_att,
                &old_amd_refs,
                &old_sbom
            ],
            "{plan:?}"
        );
        // The referrers index goes after its subject (in the second round), what it lists after it.
        assert_eq!(plan.delete[2].parent.as_deref(), Some(old.as_str()));
        assert_eq!(plan.delete[3].parent.as_deref(), Some(old_refs.as_str()));
        assert_eq!(
            plan.delete[5].parent.as_deref(),
            Some(old_amd_refs.as_str())
        );
        // The live list's referrers are kept, as is everything while the old list is tagged.
        let keep: BTreeMap<_, _> = snap.protected(Some(&new));
        assert!(keep.contains_key(&new_refs) && keep.contains_key(&new_att));
        let mut tagged = snap.clone();
        tagged.tags.insert("1.0.0".into(), old.clone());
        assert_eq!(
            deleted(&superseded(&tagged, &old, &new)),
            Vec::<&str>::new()
        );
        // A referrer never keeps its subject: untagged, the old list and its referrers go.
        let known: BTreeSet<String> = [old.clone(), old_refs.clone()].into();
        assert_eq!(
            deleted(&untagged(&snap, &known)),
            [
                &old,
                &old_amd,
                &old_refs,
                &old_att,
                &old_amd_refs,
                &old_sbom
            ]
        );
        assert_eq!(referrers_subject("sha256-abc"), None);
        assert_eq!(referrers_subject(&tag(&old)), Some(old.clone()));
    }

    #[test]
    fn superseded_cases() {
        // (case, tags, indexes, old, new, expected deletions in order)
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, &'a str)],
            &'a [(&'a str, &'a [&'a str])],
            &'a str,
            &'a str,
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            (
                "old index and both children go",
                &[("latest", "new")],
                &[("old", &["o-amd", "o-arm"]), ("new", &["n-amd", "n-arm"])],
                "old",
                "new",
                &["old", "o-amd", "o-arm"],
            ),
            (
                "nothing when the tag did not move",
                &[("latest", "same")],
                &[("same", &["a", "b"])],
                "same",
                "same",
                &[],
            ),
            (
                "a version tag on the old index keeps it all",
                &[("latest", "new"), ("1.2.3", "old")],
                &[("old", &["o-amd", "o-arm"]), ("new", &["n-amd", "n-arm"])],
                "old",
                "new",
                &[],
            ),
            (
                "a child shared with the new index stays",
                &[("latest", "new")],
                &[("old", &["shared", "o-arm"]), ("new", &["shared", "n-arm"])],
                "old",
                "new",
                &["old", "o-arm"],
            ),
            (
                "a child another tagged index lists stays",
                &[("latest", "new"), ("1.0.0", "v1")],
                &[
                    ("old", &["o-amd", "o-arm"]),
                    ("new", &["n-amd", "n-arm"]),
                    ("v1", &["o-amd", "v-arm"]),
                ],
                "old",
                "new",
                &["old", "o-arm"],
            ),
            (
                "a child tagged on its own stays",
                &[("latest", "new"), ("amd-only", "o-amd")],
                &[("old", &["o-amd", "o-arm"]), ("new", &["n-amd", "n-arm"])],
                "old",
                "new",
                &["old", "o-arm"],
            ),
            (
                "the new index is safe even before the tag list shows it",
                &[("latest", "old")],
                &[("old", &["o-amd", "o-arm"]), ("new", &["o-amd", "n-arm"])],
                "old",
                "new",
                &[],
            ),
            (
                "a third release moved latest on: the old one still goes, the newest stays",
                &[("latest", "newer")],
                &[
                    ("old", &["o-amd", "o-arm"]),
                    ("new", &["n-amd", "n-arm"]),
                    ("newer", &["n-amd", "r-arm"]),
                ],
                "old",
                "new",
                &["old", "o-amd", "o-arm"],
            ),
            (
                "old was a single image manifest",
                &[("latest", "new")],
                &[("new", &["n-amd", "n-arm"])],
                "old",
                "new",
                &["old"],
            ),
            (
                "nested index: children of a child index go too, unless referenced",
                &[("latest", "new"), ("x", "keep-me")],
                &[
                    ("old", &["inner", "o-arm"]),
                    ("inner", &["deep", "keep-me"]),
                    ("new", &["n-amd"]),
                ],
                "old",
                "new",
                &["old", "inner", "deep", "o-arm"],
            ),
        ];
        for (name, tags, indexes, old, new, want) in cases {
            let plan = superseded(&snapshot(tags, indexes), old, new);
            assert_eq!(deleted(&plan), *want, "{name}");
            // Everything under `old` is either deleted or kept with a reason, never both and never dropped.
            let all = snapshot(tags, indexes).closure(old);
            let kept: Vec<&str> = plan.keep.iter().map(|(d, _)| d.as_str()).collect();
            if old != new {
                for digest in &all {
                    let d = digest.as_str();
                    assert!(
                        want.contains(&d) != kept.contains(&d),
                        "{name}: {d} must be deleted xor kept"
                    );
                }
            }
        }
    }

    #[test]
    fn reasons_name_the_tag_that_needs_it() {
        let snap = snapshot(
            &[("latest", "new"), ("1.0.0", "v1")],
            &[("old", &["a", "b"]), ("v1", &["a"]), ("new", &["b"])],
        );
        let plan = superseded(&snap, "old", "new");
        assert_eq!(deleted(&plan), ["old"]);
        assert_eq!(
            plan.keep,
            vec![
                (
                    "a".to_owned(),
                    Keep::Referenced {
                        index: "v1".into(),
                        tag: "1.0.0".into()
                    }
                ),
                ("b".to_owned(), Keep::New),
            ]
        );
        assert_eq!(plan.delete[0].parent, None);
    }

    #[test]
    fn parents_are_recorded_for_children() {
        let snap = snapshot(&[("latest", "new")], &[("old", &["a", "b"])]);
        let plan = superseded(&snap, "old", "new");
        assert_eq!(
            plan.delete,
            vec![
                Doomed {
                    digest: "old".into(),
                    parent: None
                },
                Doomed {
                    digest: "a".into(),
                    parent: Some("old".into())
                },
                Doomed {
                    digest: "b".into(),
                    parent: Some("old".into())
                },
            ]
        );
    }

    #[test]
    fn an_unreadable_tagged_manifest_blocks_all_deletion() {
        let mut snap = snapshot(
            &[("latest", "new"), ("1.0.0", "mystery")],
            &[("old", &["a", "b"]), ("new", &["c"])],
        );
        snap.unreadable.insert("mystery".into());
        let plan = superseded(&snap, "old", "new");
        assert!(plan.delete.is_empty(), "{plan:?}");
        assert!(plan.keep.iter().all(
            |(_, why)| matches!(why, Keep::Unknown { unreadable } if unreadable == "mystery")
        ));
        assert_eq!(plan.keep.len(), 3);
        // An unreadable manifest nobody tags does not block anything.
        let mut snap = snapshot(&[("latest", "new")], &[("old", &["a"])]);
        snap.unreadable.insert("stray".into());
        assert_eq!(deleted(&superseded(&snap, "old", "new")), ["old", "a"]);
    }

    #[test]
    fn untagged_cases() {
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, &'a str)],
            &'a [(&'a str, &'a [&'a str])],
            &'a [&'a str],
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            (
                "children of the tagged index are untagged but stay",
                &[("latest", "idx")],
                &[("idx", &["amd", "arm"])],
                &["idx", "amd", "arm"],
                &[],
            ),
            (
                "a stray index and its children go, index first, whatever order they were listed in",
                &[("latest", "idx")],
                &[("idx", &["amd", "arm"]), ("stray", &["s-amd", "s-arm"])],
                &["s-arm", "amd", "s-amd", "idx", "arm", "stray"],
                &["stray", "s-amd", "s-arm"],
            ),
            (
                "a stray index sharing a child with a tagged one leaves that child",
                &[("latest", "idx"), ("1.0.0", "v1")],
                &[
                    ("idx", &["amd", "arm"]),
                    ("v1", &["v-amd", "v-arm"]),
                    ("stray", &["amd", "s-arm"]),
                ],
                &["idx", "amd", "arm", "v1", "v-amd", "v-arm", "stray", "s-arm"],
                &["stray", "s-arm"],
            ),
            (
                "a lone untagged image manifest goes",
                &[("latest", "idx")],
                &[("idx", &["amd"])],
                &["idx", "amd", "lone"],
                &["lone"],
            ),
            (
                "an empty repository has nothing to prune",
                &[],
                &[],
                &[],
                &[],
            ),
        ];
        for (name, tags, indexes, known, want) in cases {
            let known: BTreeSet<String> = known.iter().map(|d| d.to_string()).collect();
            let plan = untagged(&snapshot(tags, indexes), &known);
            assert_eq!(deleted(&plan), *want, "{name}");
            assert_eq!(
                plan.delete.len() + plan.keep.len(),
                known.len(),
                "{name}: every known manifest is decided once"
            );
        }
    }

    #[test]
    fn restore_only_what_a_tag_needs_again_children_first() {
        // A concurrent release tagged an index listing `a`, which this run had just deleted with `old` and `b`.
        let snap = snapshot(
            &[("latest", "racer")],
            &[("racer", &["a", "r-arm"]), ("other", &["b"])],
        );
        let deleted = ["old".to_owned(), "a".to_owned(), "b".to_owned()];
        assert_eq!(to_restore(&snap, &deleted, None), ["a"]);
        let snap = snapshot(&[("latest", "old")], &[("old", &["a", "b"])]);
        assert_eq!(to_restore(&snap, &deleted, None), ["b", "a", "old"]);
        assert!(to_restore(&Snapshot::default(), &deleted, None).is_empty());
    }
}
