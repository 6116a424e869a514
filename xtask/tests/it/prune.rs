//! Pruning end to end: the push and manifest stages (the xtask binary) release `latest` into a real distribution
//! registry with deletion enabled, and the superseded index goes with the children no tag uses; `image prune`
//! lists and removes untagged clutter. Stand-ins for GitHub's and Docker Hub's APIs are tested in the crate
//! (`src/image/prune/registry_tests.rs`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::registry::{self as harness, Auth, Export, TestRegistry, Xtask};

const PLATFORMS: [(&str, &str); 2] = [("linux/amd64", "amd64"), ("linux/arm64", "arm64")];

/// One build: an export per platform under its own target dir, and the digest files its pushes write.
struct Build {
    work: harness::TempDir,
    digests: PathBuf,
    exports: Vec<Export>,
}

impl Build {
    /// Layer sizes pick the content, so two builds with the same size for a platform share that platform's image.
    fn new(name: &str, amd64: u64, arm64: u64) -> Build {
        let work = harness::temp_dir(name);
        let exports = PLATFORMS
            .iter()
            .zip([amd64, arm64])
            .map(|((platform, arch), size)| {
                let dir = work.path().join("image").join(platform.replace('/', "-"));
                Export::write(&dir, arch, &[size])
            })
            .collect();
        let digests = work.path().join("digests");
        Build {
            work,
            digests,
            exports,
        }
    }

    fn children(&self) -> Vec<String> {
        self.exports.iter().map(|e| e.digest.clone()).collect()
    }

    fn push(&self, registry: &TestRegistry, to: &str) {
        for (platform, _) in PLATFORMS {
            creds(
                Xtask::new()
                    .args([
                        "image",
                        "push",
                        "--platform",
                        platform,
                        "--to",
                        to,
                        "--digest-dir",
                    ])
                    .args([&self.digests])
                    .target_dir(self.work.path()),
                registry,
            )
            .run()
            .success();
        }
    }

    fn manifest(&self, registry: &TestRegistry, to: &str, tag: &str) -> harness::Run {
        creds(
            Xtask::new()
                .args(["image", "manifest", "--tag", tag, "--to", to])
                .args(["--platforms", "linux/amd64,linux/arm64", "--digest-dir"])
                .args([&self.digests]),
            registry,
        )
        .run()
    }
}

fn creds(xtask: Xtask, registry: &TestRegistry) -> Xtask {
    match &registry.auth {
        Auth::Anonymous => xtask,
        Auth::Basic { user, password } | Auth::Token { user, password } => xtask
            .env("REGISTRY_USERNAME", user)
            .env("REGISTRY_PASSWORD", password),
    }
}

/// The digest of the manifest list the manifest stage published (its `digest=` output line).
fn published(run: &harness::Run) -> String {
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix("published latest = "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no published digest in\n{}", run.stdout))
        .to_owned()
}

/// The manifests distribution stores for a repository: its revision links on disk.
fn stored(registry: &TestRegistry, repository: &str) -> Vec<String> {
    let dir = registry
        .storage()
        .join("docker/registry/v2/repositories")
        .join(repository)
        .join("_manifests/revisions/sha256");
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("link").exists())
        .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
        .collect();
    out.sort();
    out
}

/// The status of a HEAD of `repository:reference` (0: no answer).
fn head(registry: &TestRegistry, repository: &str, reference: &str) -> u16 {
    registry
        .fetch("HEAD", &format!("/v2/{repository}/manifests/{reference}"))
        .status
}

fn sorted(mut items: Vec<String>) -> Vec<String> {
    items.sort();
    items
}

/// The status of a HEAD of `repository:latest`, asked again after a 500. distribution's filesystem driver rewrites a
/// tag's link file in place (truncate, then write), so a read landing between the two finds an empty link and answers
/// 500 "invalid checksum digest format"; that is a torn read of a tag being moved, which a client retries (as ours
/// does), not a missing tag. A 404, or a 500 that persists, is what this polling exists to catch.
fn head_latest(registry: &TestRegistry, repository: &str) -> u16 {
    let mut status = head(registry, repository, "latest");
    for _ in 0..3 {
        if status != 500 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        status = head(registry, repository, "latest");
    }
    status
}

/// HEADs `latest` every 50 ms while running `during`; every status seen.
fn polling<T>(
    registry: &TestRegistry,
    repository: &str,
    during: impl FnOnce() -> T,
) -> (T, Vec<u16>) {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = std::thread::scope(|scope| {
        let stopping = stop.clone();
        let poller = scope.spawn(move || {
            let mut seen = Vec::new();
            while !stopping.load(Ordering::SeqCst) {
                seen.push(head_latest(registry, repository));
                std::thread::sleep(Duration::from_millis(50));
            }
            seen.push(head_latest(registry, repository));
            seen
        });
        let out = during();
        stop.store(true, Ordering::SeqCst);
        (out, poller.join().unwrap())
    });
    seen
}

#[test]
fn three_releases_of_latest_leave_one_index_and_its_children() {
    let registry = TestRegistry::start(Auth::token("ci", "s3cret"));
    let to = registry.reference("team/app");
    let builds = [
        Build::new("one", 11_000, 12_000),
        Build::new("two", 21_000, 22_000),
        Build::new("three", 31_000, 32_000),
    ];
    let mut indexes = Vec::new();
    let mut polls = Vec::new();
    for (n, build) in builds.iter().enumerate() {
        build.push(&registry, &to);
        let (run, seen) = polling(&registry, "team/app", || {
            build.manifest(&registry, &to, "latest")
        });
        let run = run.success();
        if n > 0 {
            polls.extend(seen);
            let previous: &String = &indexes[n - 1];
            assert!(
                run.stdout.contains(&format!("deleted {previous}")),
                "release {n} prunes the previous latest:\n{}",
                run.stdout
            );
        }
        indexes.push(published(&run));
    }
    let mut want = builds[2].children();
    want.push(indexes[2].clone());
    assert_eq!(
        stored(&registry, "team/app"),
        sorted(want),
        "one latest index and its two children"
    );
    for (build, index) in builds.iter().zip(&indexes).take(2) {
        assert_eq!(head(&registry, "team/app", index), 404);
        for child in build.children() {
            assert_eq!(head(&registry, "team/app", &child), 404);
        }
    }
    assert!(polls.len() >= 4, "polled {} times", polls.len());
    assert!(polls.iter().all(|s| *s == 200), "latest answered {polls:?}");
}

#[test]
fn a_version_tag_from_the_same_build_keeps_it() {
    let registry = TestRegistry::start(Auth::Anonymous);
    let to = registry.reference("team/app");
    let one = Build::new("one", 11_000, 12_000);
    let two = Build::new("two", 21_000, 22_000);
    // The third build leaves arm64 unchanged: its image is the very same as the second's.
    let three = Build::new("three", 31_000, 22_000);
    one.push(&registry, &to);
    let first = published(&one.manifest(&registry, &to, "latest").success());
    two.push(&registry, &to);
    let second = published(&two.manifest(&registry, &to, "latest").success());
    two.manifest(&registry, &to, "1.0.0").success();
    three.push(&registry, &to);
    let run = three.manifest(&registry, &to, "latest").success();
    let third = published(&run);
    assert!(
        !run.stdout.contains("deleted"),
        "1.0.0 still uses the second build:\n{}",
        run.stdout
    );
    // The arm64 image is shared by the second and third builds.
    let mut want = vec![second.clone(), third];
    want.extend(two.children());
    want.extend(three.children());
    want.sort();
    want.dedup();
    assert_eq!(stored(&registry, "team/app"), want);
    assert_eq!(head(&registry, "team/app", &first), 404);
    for digest in two.children().iter().chain([&second]) {
        assert_eq!(
            head(&registry, "team/app", digest),
            200,
            "1.0.0 keeps {digest}"
        );
    }
}

#[test]
fn two_releases_racing_end_with_an_intact_latest() {
    let registry = TestRegistry::start(Auth::Anonymous);
    let to = registry.reference("team/app");
    let base = Build::new("base", 10_000, 10_500);
    base.push(&registry, &to);
    base.manifest(&registry, &to, "latest").success();
    for round in 0..3u64 {
        // Both share the amd64 image with each other; each has its own arm64 image.
        let shared = 20_000 + round * 1_000;
        let left = Build::new("left", shared, shared + 100);
        let right = Build::new("right", shared, shared + 200);
        left.push(&registry, &to);
        right.push(&registry, &to);
        let barrier = std::sync::Barrier::new(2);
        let runs: Vec<harness::Run> = std::thread::scope(|scope| {
            let handles: Vec<_> = [&left, &right]
                .into_iter()
                .map(|build| {
                    let (registry, to, barrier) = (&registry, &to, &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        build.manifest(registry, to, "latest")
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            runs.iter().any(|r| r.code == 0),
            "round {round}: at least one release succeeds: {runs:#?}"
        );
        for run in &runs {
            assert!(
                run.code == 0 || run.code == 4,
                "round {round}: a release that loses the race fails as a registry failure: {run:#?}"
            );
        }
        assert_eq!(head(&registry, "team/app", "latest"), 200, "round {round}");
        let latest = registry.fetch("GET", "/v2/team/app/manifests/latest");
        assert_eq!(latest.status, 200, "round {round}");
        let list: serde_json::Value = serde_json::from_slice(&latest.body).unwrap();
        for child in list["manifests"].as_array().unwrap() {
            let digest = child["digest"].as_str().unwrap();
            assert_eq!(
                head(&registry, "team/app", digest),
                200,
                "round {round}: latest's child {digest}"
            );
        }
    }
}

fn prune(registry: &TestRegistry, to: &str, extra: &[&str]) -> harness::Run {
    creds(
        Xtask::new()
            .args(["image", "prune", "--to", to])
            .args(extra),
        registry,
    )
    .run()
}

#[test]
fn image_prune_lists_then_deletes_untagged_clutter() {
    let registry = TestRegistry::start(Auth::Anonymous);
    let to = registry.reference("team/app");
    let live = Build::new("live", 11_000, 12_000);
    live.push(&registry, &to);
    live.manifest(&registry, &to, "latest").success();
    // Pushed by digest, never published: clutter an interrupted release leaves.
    let stray = Build::new("stray", 11_000, 13_000);
    stray.push(&registry, &to);
    let stray_arm64 = stray.children()[1].clone();
    let shared_amd64 = live.children()[0].clone();

    let listed = prune(&registry, &to, &[]).success();
    assert!(
        listed.stdout.contains("cannot list untagged manifests"),
        "{}",
        listed.stdout
    );

    let args = ["--digest", &stray_arm64, "--digest", &shared_amd64];
    let listed = prune(&registry, &to, &args).success();
    assert!(
        listed
            .stdout
            .contains(&format!("would delete {stray_arm64}")),
        "{}",
        listed.stdout
    );
    assert!(
        !listed
            .stdout
            .contains(&format!("would delete {shared_amd64}")),
        "{}",
        listed.stdout
    );
    assert_eq!(
        head(&registry, "team/app", &stray_arm64),
        200,
        "listing deletes nothing"
    );

    let done = prune(&registry, &to, &[&args[..], &["--yes"]].concat()).success();
    assert!(
        done.stdout.contains(&format!("deleted {stray_arm64}")),
        "{}",
        done.stdout
    );
    assert_eq!(head(&registry, "team/app", &stray_arm64), 404);
    assert_eq!(
        head(&registry, "team/app", &shared_amd64),
        200,
        "latest's child stays"
    );
    assert_eq!(head(&registry, "team/app", "latest"), 200);

    let again = prune(&registry, &to, &[&args[..], &["--yes"]].concat()).success();
    assert!(again.stdout.contains("already gone"), "{}", again.stdout);

    let bad = prune(&registry, &to, &["--digest", "latest"]);
    assert_eq!(bad.code, 2, "{bad:#?}");
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// Attaches an attestation to `subject` the way a client does where the registry has no referrers API: an
/// artifact manifest naming the subject, then the referrers index under the tag `sha256-<hex>` listing it.
/// Returns (attestation, referrers index).
fn attest(
    registry: &TestRegistry,
    repository: &str,
    subject: &str,
    statement: &str,
) -> (String, String) {
    let empty = registry.put_blob(repository, b"{}");
    let bundle = registry.put_blob(repository, statement.as_bytes());
    let subject_size = registry
        .fetch("GET", &format!("/v2/{repository}/manifests/{subject}"))
        .body
        .len();
    let attestation = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": BUNDLE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": BUNDLE, "digest": bundle, "size": statement.len()}],
        "subject": {"mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
                    "digest": subject, "size": subject_size},
    });
    let bytes = serde_json::to_vec(&attestation).unwrap();
    let attestation =
        registry.put_manifest(repository, &harness::sha256(&bytes), OCI_MANIFEST, &bytes);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": attestation, "size": bytes.len(), "artifactType": BUNDLE}],
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    let tag = subject.replacen(':', "-", 1);
    let index = registry.put_manifest(repository, &tag, OCI_INDEX, &bytes);
    (attestation, index)
}

#[test]
fn attestations_go_with_the_list_they_attest_and_stay_with_a_live_one() {
    let registry = TestRegistry::start(Auth::Anonymous);
    let repository = "team/app";
    let to = registry.reference(repository);
    let first = Build::new("attested-first", 21_000, 22_000);
    first.push(&registry, &to);
    let old = published(&first.manifest(&registry, &to, "latest").success());
    let (old_attestation, old_index) =
        attest(&registry, repository, &old, "provenance of the first");
    let old_child = first.children()[1].clone();
    let (old_sbom, old_sbom_index) =
        attest(&registry, repository, &old_child, "sbom of the first arm64");

    let second = Build::new("attested-second", 21_500, 22_500);
    second.push(&registry, &to);
    let run = second.manifest(&registry, &to, "latest").success();
    let new = published(&run);
    for gone in [
        &old,
        &old_index,
        &old_attestation,
        &old_sbom_index,
        &old_sbom,
    ] {
        assert_eq!(
            head(&registry, repository, gone),
            404,
            "{gone} is still there\n{}",
            run.stdout
        );
        assert!(
            run.stdout.contains(&format!("deleted {gone}")),
            "{gone} in\n{}",
            run.stdout
        );
    }
    let tags = registry.tags(repository).unwrap();
    assert_eq!(
        tags,
        ["latest"],
        "the referrers tags of the pruned list went with it"
    );

    // The live list's attestation stays through a prune of untagged clutter, and verify reports it.
    let (attestation, index) = attest(&registry, repository, &new, "provenance of the second");
    prune(&registry, &to, &["--yes", "--digest", &attestation]).success();
    for kept in [&new, &index, &attestation] {
        assert_eq!(head(&registry, repository, kept), 200, "{kept}");
    }
    let run = Xtask::new()
        .args(["image", "verify", "--no-rebuild", &format!("{to}:latest")])
        .run();
    assert!(
        run.stdout.contains(&format!(
            "the list: 1 in {}: {BUNDLE}",
            new.replacen(':', "-", 1)
        )),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
}
