//! Releases racing each other against the same registries: in each round two releases of `latest` (of an older and
//! a newer commit) and a version release start together (their pushes run side by side, their manifest stages are
//! let go at the same instant, with a little jitter) while the previous `latest` is being superseded and pruned.
//! Afterwards, in every registry: every tag resolves, every child of every tagged index (and its config and
//! layers) exists, no tag is lost, and `latest` names the newer commit's list, the same in both registries.
//! Every release exits 0: the older commit's either leaves `latest` alone or is overtaken and says so.
//!
//! Odd rounds release a version of new images. Even rounds release as the version the very images the previous
//! `latest` had, so the version's index is the index the `latest` releases are pruning: distribution's DELETE of a
//! manifest also removes every tag naming it at that instant. The prune looks at the tags again just before each
//! DELETE and keeps what is tagged by then, and the release looks at its tag again after its read-back (and once
//! more a moment later where its list was there before) and puts back what went.
//!
//! `RACE_ROUNDS` sets the number of rounds (8 by default; `cargo xtask bench B9` runs 100).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::support::fault_proxy::Rng;
use crate::support::registry::{self as harness, Answer, Auth, Export, Run, TestRegistry, Xtask};

const REPO: &str = "team/app";
const USER: &str = "ci-bot";
const PASSWORD: &str = "races-test-password";

/// The state of one registry after a round: every tag's children (by digest), and what is wrong.
fn check_registry(registry: &TestRegistry) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let mut tags = BTreeMap::new();
    let mut problems = Vec::new();
    let names = registry.tags(REPO).unwrap_or_default();
    for tag in names {
        let Answer {
            status,
            body: bytes,
            ..
        } = registry.fetch("GET", &format!("/v2/{REPO}/manifests/{tag}"));
        if status != 200 {
            problems.push(format!(
                "{}: tag {tag} does not resolve (HTTP {status})",
                registry.address
            ));
            continue;
        }
        let index: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let children: Vec<String> = index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["digest"].as_str().unwrap().to_owned())
            .collect();
        tags.insert(tag.clone(), children.clone());
        for digest in &children {
            let Answer {
                status,
                body: bytes,
                ..
            } = registry.fetch("GET", &format!("/v2/{REPO}/manifests/{digest}"));
            if status != 200 {
                problems.push(format!(
                    "{}: child {digest} of tag {tag} is missing (HTTP {status})",
                    registry.address
                ));
                continue;
            }
            let image: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let blobs = std::iter::once(&image["config"])
                .chain(image["layers"].as_array().into_iter().flatten())
                .map(|d| d["digest"].as_str().unwrap().to_owned());
            for blob in blobs {
                let status = registry
                    .fetch("HEAD", &format!("/v2/{REPO}/blobs/{blob}"))
                    .status;
                if status != 200 {
                    problems.push(format!(
                        "{}: blob {blob} of child {digest} of tag {tag} is missing (HTTP {status})",
                        registry.address
                    ));
                }
            }
        }
    }
    (tags, problems)
}

/// The child digests (amd64, arm64) a release publishes, from the digest files its pushes wrote.
fn children_of(work: &Path) -> Vec<String> {
    ["linux-amd64", "linux-arm64"]
        .iter()
        .map(|file| {
            let text = std::fs::read(work.join("digests").join(file)).unwrap();
            let record: serde_json::Value = serde_json::from_slice(&text).unwrap();
            record["digest"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn with_creds(xtask: Xtask) -> Xtask {
    xtask
        .env("REGISTRY_USERNAME", USER)
        .env("REGISTRY_PASSWORD", PASSWORD)
        .env("XTASK_RETRY_BASE_MS", "20")
}

fn push_both(work: &Path, targets: &[String]) -> Vec<Run> {
    ["linux/amd64", "linux/arm64"]
        .iter()
        .map(|platform| {
            with_creds(
                Xtask::new()
                    .args(["image", "push", "--platform", platform, "--digest-dir"])
                    .args([work.join("digests")])
                    .args(targets.iter().flat_map(|t| ["--to".to_owned(), t.clone()]))
                    .target_dir(work),
            )
            .run()
        })
        .collect()
}

fn manifest(work: &Path, tag: &str, targets: &[String]) -> Xtask {
    with_creds(
        Xtask::new()
            .args(["image", "manifest", "--tag", tag])
            .args(["--platforms", "linux/amd64,linux/arm64", "--digest-dir"])
            .args([work.join("digests")])
            .args(targets.iter().flat_map(|t| ["--to".to_owned(), t.clone()]))
            .target_dir(work),
    )
}

/// Both platforms' exports of the commit numbered `salt`: its revision and commit time (seconds after a fixed
/// start, so a higher salt is a later commit) are in the labels, as a build writes them.
fn exports(work: &Path, salt: u64) {
    let labels = serde_json::json!({
        "org.opencontainers.image.revision": format!("{salt:040x}"),
        "org.opencontainers.image.created": format!("2026-01-01T{:02}:{:02}:{:02}Z", salt / 3600, salt / 60 % 60, salt % 60),
    });
    Export::write_labelled(
        &work.join("image/linux-amd64"),
        "amd64",
        &[4_000 + salt * 3],
        &labels,
    );
    Export::write_labelled(
        &work.join("image/linux-arm64"),
        "arm64",
        &[4_100 + salt * 3],
        &labels,
    );
}

#[test]
fn racing_releases_leave_every_tag_whole() {
    let rounds: u64 = std::env::var("RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let registries = Arc::new([
        TestRegistry::start(Auth::Anonymous),
        TestRegistry::start(Auth::token(USER, PASSWORD)),
    ]);
    let targets: Vec<String> = registries.iter().map(|r| r.reference(REPO)).collect();
    let work = harness::temp_dir("races");

    // The first `latest`, which round 1 supersedes (and releases as a version).
    let mut previous = work.path().join("initial");
    exports(&previous, 0);
    for run in push_both(&previous, &targets) {
        run.success();
    }
    manifest(&previous, "latest", &targets).run().success();

    let mut rng = Rng::new(42);
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    // Tags lost in each round kind (a version of new images, or of the very images being pruned).
    let mut lost: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    // Manifests the prunes of the superseded `latest` deleted while the others raced.
    let mut pruned = 0;
    // Rounds whose `latest` was not the newer commit's in some registry, and runs that failed or lost to the older.
    let (mut wrong_latest, mut failed_runs) = (0, 0);
    for round in 1..=rounds {
        let dir = work.path().join(format!("round-{round}"));
        // The racing `latest` releases: an older commit (a) and a newer one (b). The version release has new images
        // too (odd rounds) or reuses the previous `latest`'s (even rounds), in its own work directory as another CI
        // job would.
        let shared = round % 2 == 0;
        let kind = if shared {
            "version of the pruned images"
        } else {
            "version of new images"
        };
        let releases: Vec<(String, std::path::PathBuf)> = vec![
            ("latest".into(), dir.join("a")),
            ("latest".into(), dir.join("b")),
            (format!("1.{round}.0"), dir.join("version")),
        ];
        exports(&releases[0].1, round * 10 + 1);
        exports(&releases[1].1, round * 10 + 2);
        if !shared {
            exports(&releases[2].1, round * 10 + 3);
        }
        for platform in ["linux-amd64", "linux-arm64"]
            .into_iter()
            .filter(|_| shared)
        {
            let from = previous.join("image").join(platform);
            let to = releases[2].1.join("image").join(platform);
            std::fs::create_dir_all(&to).unwrap();
            for entry in std::fs::read_dir(&from).unwrap() {
                let entry = entry.unwrap();
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
        let barrier = Arc::new(Barrier::new(releases.len()));
        let jitter: Vec<u64> = releases.iter().map(|_| rng.next_u64() % 40).collect();
        let handles: Vec<_> = releases
            .iter()
            .cloned()
            .zip(jitter)
            .map(|((tag, work), jitter)| {
                let barrier = barrier.clone();
                let targets = targets.clone();
                std::thread::spawn(move || {
                    let pushes = push_both(&work, &targets);
                    barrier.wait();
                    std::thread::sleep(Duration::from_millis(jitter));
                    let run = manifest(&work, &tag, &targets).run();
                    (tag, work, pushes, run)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let newest = children_of(&results[1].1);
        for (index, (tag, _, pushes, run)) in results.iter().enumerate() {
            pruned += run.stdout.matches(": deleted sha256:").count();
            for push in pushes {
                assert_eq!(
                    push.code, 0,
                    "round {round}: push for {tag}: {}",
                    push.stderr
                );
            }
            let kept = run.stdout.contains("latest stays on");
            let outcome = match index {
                0 if kept => "older latest: kept",
                0 => "older latest: moved",
                1 if kept => "newer latest: kept",
                1 => "newer latest: moved",
                _ => kind,
            };
            *outcomes
                .entry(format!("{outcome}, exit {}", run.code))
                .or_insert(0) += 1;
            if run.code != 0 || (index == 1 && kept) {
                failed_runs += 1;
                problems.push(format!(
                    "round {round}: {outcome} exited {}:\n{}{}",
                    run.code, run.stdout, run.stderr
                ));
            }
        }
        let mut wrong = false;
        for registry in registries.iter() {
            let (tags, found) = check_registry(registry);
            problems.extend(found.into_iter().map(|p| format!("round {round}: {p}")));
            if tags.get("latest") != Some(&newest) {
                wrong = true;
                problems.push(format!(
                    "round {round}: {} latest is {:?}, not the newer commit's {newest:?}",
                    registry.address,
                    tags.get("latest")
                ));
            }
            let version = &results[2];
            if !tags.contains_key(&version.0) {
                lost.entry(kind).or_default().push(format!(
                    "round {round}: {} lost tag {} (its release exited {}):\n{}{}",
                    registry.address, version.0, version.3.code, version.3.stdout, version.3.stderr
                ));
            }
        }
        wrong_latest += usize::from(wrong);
        // The next round's version release republishes the images `latest` has now.
        previous = results[1].1.clone();
    }
    let lost_counts: BTreeMap<&&str, usize> = lost.iter().map(|(k, v)| (k, v.len())).collect();
    eprintln!(
        "{rounds} rounds of 2 latest releases + 1 version release: outcomes {outcomes:?}; {pruned} manifests \
         pruned meanwhile; tags lost: {lost_counts:?}"
    );
    // One line for `cargo xtask bench B9`.
    eprintln!(
        "races: rounds={rounds} lost={} wrong_latest={wrong_latest} failed_runs={failed_runs} pruned={pruned}",
        lost.values().map(Vec::len).sum::<usize>()
    );
    for losses in lost.values() {
        problems.extend(losses.iter().cloned());
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
