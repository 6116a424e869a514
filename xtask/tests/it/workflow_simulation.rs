//! Runs .github/workflows/build-images.yml here, job by job, from the file itself (see support/simulate.rs), against
//! two real distribution registries on loopback ports standing in for GHCR and Docker Hub.
//!
//! Cases: a push of v1.0 (refused in prepare with exit 2, nothing built), a manual run with skip_push (builds,
//! writes no registry), a push to main, a push of v1.2.3 and a manual run with a tag name (published everywhere
//! with the same digests), and a push to main with a push of a version tag of the same commit, publishing in turn
//! as the workflow's queue has them. The cases that build use the local Rust builder image and the podman configuration that
//! `cargo xtask ci --setup-only` leaves in target/ci/env (the runtime base is `scratch`: the binary is static).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support;
use crate::support::registry::{Auth, TestRegistry};
use crate::support::simulate::{self, Concurrency, Event, Local, Outcome, Status};

/// The simulated jobs share this checkout's target/ (digests, exports) and the local image tags: one simulation at
/// a time, across test processes too (nextest runs each test in its own process). The lock ends with the file.
fn one_at_a_time() -> std::fs::File {
    let dir = support::root().join("target/tests");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join("workflow-simulation.lock")).unwrap();
    lock.lock().unwrap();
    lock
}

const SHA: &str = "5f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6";

/// The tags of `repository`, sorted; none when it has none (distribution's 404 NAME_UNKNOWN).
fn tags(registry: &TestRegistry, repository: &str) -> Vec<String> {
    match registry.tags(repository) {
        Ok(mut tags) => {
            tags.sort();
            tags
        }
        Err((404, _)) => Vec::new(),
        Err((status, body)) => panic!("tags of {repository}: HTTP {status} {body}"),
    }
}

/// The digest and body of `repository:reference`.
fn manifest(
    registry: &TestRegistry,
    repository: &str,
    reference: &str,
) -> (String, serde_json::Value) {
    let answer = registry.fetch("GET", &format!("/v2/{repository}/manifests/{reference}"));
    assert_eq!(
        answer.status,
        200,
        "{repository}:{reference}: {}",
        String::from_utf8_lossy(&answer.body)
    );
    (
        answer.digest.unwrap(),
        serde_json::from_slice(&answer.body).unwrap(),
    )
}

struct Bench {
    ghcr: TestRegistry,
    hub: TestRegistry,
    work: PathBuf,
}

const GHCR_REPO: &str = "taipei-commuter/mcp-taipei-metro-month-price";
const HUB_REPO: &str = "taipeicommuter/mcp-taipei-metro-month-price";

impl Bench {
    fn new(case: &str) -> Bench {
        let work = std::env::temp_dir().join(format!("xtask-sim-{case}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        Bench {
            ghcr: TestRegistry::start(Auth::Anonymous),
            hub: TestRegistry::start(Auth::Anonymous),
            work,
        }
    }

    fn local(&self, setup: BenchSetup) -> Local {
        let BenchSetup {
            build_args,
            machine_env,
        } = setup;
        Local {
            targets: vec![
                format!("{}/{GHCR_REPO}", self.ghcr.address),
                format!("{}/{HUB_REPO}", self.hub.address),
            ],
            build_args,
            machine_env,
            secrets: [
                ("GITHUB_TOKEN", "ghs_simulated"),
                ("DOCKERHUB_USERNAME", "taipeicommuter"),
                ("DOCKERHUB_TOKEN", "dckr_pat_simulated"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        }
    }

    fn run(&self, event: &Event, setup: BenchSetup) -> Outcome {
        // The build steps tag the default local images, as the release tests do.
        let _builds = (!setup.build_args.is_empty()).then(support::build_locks);
        let outcome = simulate::run(
            &support::workflow_path(),
            Path::new(env!("CARGO_BIN_EXE_xtask")),
            event,
            &self.local(setup),
            &self.work,
        );
        for step in &outcome.steps {
            eprintln!(
                "[{}{}] {} -> {} in {:.1} s\n{}{}",
                step.job,
                step.entry
                    .as_deref()
                    .map(|e| format!(" {e}"))
                    .unwrap_or_default(),
                step.command.join(" "),
                step.code,
                step.took.as_secs_f64(),
                step.stdout,
                step.stderr
            );
        }
        outcome
    }

    fn registries_untouched(&self) {
        assert_eq!(self.ghcr.repositories(), Vec::<String>::new());
        assert_eq!(self.hub.repositories(), Vec::<String>::new());
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// What the build steps need from the test bench: build arguments and the machine's podman settings.
#[derive(Default)]
struct BenchSetup {
    build_args: Vec<String>,
    machine_env: BTreeMap<String, String>,
}

/// The bench's variables (target/ci/env, which `cargo xtask ci --setup-only` writes after making the local base
/// images, overlaid by the process environment).
fn test_bench() -> BenchSetup {
    let vars = support::ci_env();
    BenchSetup {
        build_args: support::ci_build_args(&vars),
        machine_env: vars
            .into_iter()
            .filter(|(k, _)| k == "CONTAINERS_CONF")
            .collect(),
    }
}

/// target/ci/env as `cargo xtask ci` writes it: bare values, single-quoted ones with spaces or quotes, comments.
#[test]
fn ci_env_file_is_read_as_written() {
    let text = "# Written by `cargo xtask ci`\n\
                CONTAINERS_CONF=/src/target/ci/containers.conf\n\
                XTASK_TEST_BUILD_ARGS='RUST_IMAGE=a RUNTIME_IMAGE=it'\\''s'\n\
                \n EMPTY='' \n";
    let vars = support::parse_ci_env(text);
    let want: BTreeMap<String, String> = [
        ("CONTAINERS_CONF", "/src/target/ci/containers.conf"),
        ("XTASK_TEST_BUILD_ARGS", "RUST_IMAGE=a RUNTIME_IMAGE=it's"),
        ("EMPTY", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(vars, want);
    assert_eq!(
        support::ci_build_args(&vars),
        ["RUST_IMAGE=a", "RUNTIME_IMAGE=it's"]
    );
}

#[test]
fn push_of_v1_0_fails_in_prepare_and_builds_nothing() {
    let _one = one_at_a_time();
    let bench = Bench::new("v1-0");
    let outcome = bench.run(&Event::push("refs/tags/v1.0", SHA), BenchSetup::default());
    assert_eq!(outcome.job("prepare"), Status::Failed);
    assert_eq!(outcome.job("build"), Status::Skipped);
    assert_eq!(outcome.job("manifest"), Status::Skipped);
    assert_eq!(outcome.commands(), ["image meta"]);
    let meta = &outcome.steps[0];
    assert_eq!(meta.code, 2);
    assert!(
        meta.stderr.contains(
            "::error title=image meta::Tag 'v1.0' does not follow semantic versioning (expected: v1.2.3)"
        ),
        "{}",
        meta.stderr
    );
    assert!(
        outcome.attestations.is_empty(),
        "{:?}",
        outcome.attestations
    );
    bench.registries_untouched();
}

#[test]
fn dispatch_with_a_version_like_tag_name_fails_in_prepare() {
    let _one = one_at_a_time();
    let bench = Bench::new("dispatch-version");
    let event = Event::dispatch(
        "refs/heads/main",
        SHA,
        &[
            ("tag_name", "v2.0.0"),
            ("platforms", ""),
            ("skip_push", "false"),
        ],
    );
    let outcome = bench.run(&event, BenchSetup::default());
    assert_eq!(outcome.job("prepare"), Status::Failed);
    assert_eq!(outcome.job("build"), Status::Skipped);
    assert_eq!(outcome.steps[0].code, 2);
    assert!(outcome.steps[0].stderr.contains("looks like a version"));
    bench.registries_untouched();
}

#[test]
fn dispatch_with_skip_push_builds_and_writes_no_registry() {
    let _one = one_at_a_time();
    let bench = Bench::new("skip-push");
    let event = Event::dispatch(
        "refs/heads/main",
        SHA,
        &[("tag_name", ""), ("platforms", ""), ("skip_push", "true")],
    );
    let outcome = bench.run(&event, test_bench());
    assert_eq!(outcome.job("prepare"), Status::Success);
    assert_eq!(outcome.outputs["prepare"]["skip_push"], "true");
    assert_eq!(outcome.outputs["prepare"]["tag"], "manual-5f1e2d3");
    assert_eq!(outcome.job("build"), Status::Success);
    assert_eq!(outcome.job("manifest"), Status::Skipped);
    // Each build gets exactly the labels meta decided, its version being the manual tag.
    let labels = &outcome.outputs["prepare"]["labels"];
    assert!(
        labels.contains(r#""org.opencontainers.image.version":"manual-5f1e2d3""#),
        "{labels}"
    );
    let build = |platform: &str| {
        format!(
            "image build --platform {platform} --cache-repo ghcr.io/taipei-commuter/mcp-taipei-metro-month-price-cache --labels {labels}"
        )
    };
    assert_eq!(
        outcome.commands(),
        [
            "image meta".to_owned(),
            build("linux/amd64"),
            build("linux/arm64"),
        ]
    );
    // Each build entry runs on a fresh runner (target/image is handed over only as artifacts), so what is left is
    // the last entry's: its export and its SBOM.
    let image = support::root().join("target/image");
    assert!(
        image.join("linux-arm64/manifest.json").is_file(),
        "{}",
        image.display()
    );
    assert!(
        image.join("linux-arm64.cdx.json").is_file(),
        "{}",
        image.display()
    );
    assert!(
        !image.join("linux-amd64").exists(),
        "the amd64 runner's files stay on it"
    );
    bench.registries_untouched();
}

/// Publishes through the whole workflow and checks the result in both registries: the tag, the same list digest
/// in both, both platforms in the list, and which tags exist.
fn publish(bench: &Bench, event: Event, tag: &str, want_tags: &[&str]) -> String {
    publish_run(bench, event, tag, want_tags).0
}

/// [`publish`], and the run's outcome.
fn publish_run(bench: &Bench, event: Event, tag: &str, want_tags: &[&str]) -> (String, Outcome) {
    let outcome = bench.run(&event, test_bench());
    for job in ["prepare", "build", "manifest"] {
        assert_eq!(outcome.job(job), Status::Success, "{job}");
    }
    assert_eq!(outcome.outputs["prepare"]["tag"], tag);
    let commands = outcome.commands();
    assert_eq!(commands[0], "image meta");
    let floating = &outcome.outputs["prepare"]["floating_tags"];
    assert_eq!(
        commands.last().unwrap(),
        &format!(
            "image manifest --digest-dir target/digests --tag {tag} --floating-tags {floating} --platforms \
             linux/amd64,linux/arm64"
        )
    );
    let (ghcr_digest, list) = manifest(&bench.ghcr, GHCR_REPO, tag);
    let (hub_digest, _) = manifest(&bench.hub, HUB_REPO, tag);
    assert_eq!(ghcr_digest, hub_digest, "the same list in both registries");
    for floating in floating.split(',').filter(|t| !t.is_empty()) {
        assert_eq!(
            manifest(&bench.ghcr, GHCR_REPO, floating).0,
            ghcr_digest,
            "{floating}"
        );
        assert_eq!(
            manifest(&bench.hub, HUB_REPO, floating).0,
            ghcr_digest,
            "{floating}"
        );
    }
    let mut platforms: Vec<String> = list["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    platforms.sort();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    let want: Vec<String> = want_tags.iter().map(|t| t.to_string()).collect();
    let is_referrers = |tag: &String| tag.starts_with("sha256-");
    let ghcr_tags = tags(&bench.ghcr, GHCR_REPO);
    let (referrers, ghcr_tags): (Vec<String>, Vec<String>) =
        ghcr_tags.into_iter().partition(is_referrers);
    assert_eq!(ghcr_tags, want);
    assert_eq!(tags(&bench.hub, HUB_REPO), want);
    // The manifest job attested the list (provenance) and each platform's image (its SBOM), with the digests
    // `image manifest` published, and stored them in GHCR as referrers, under the tag `sha256-<hex>` of each; every
    // referrers tag there is that of a manifest still there (a pruned list's went with it).
    let children: Vec<String> = list["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .collect();
    let mut subjects: Vec<String> = std::iter::once(ghcr_digest.clone())
        .chain(children.clone())
        .collect();
    subjects.sort();
    for subject in &subjects {
        assert!(
            referrers.contains(&subject.replacen(':', "-", 1)),
            "{subject} in {referrers:?}"
        );
    }
    for tag in &referrers {
        let subject = tag.replacen('-', ":", 1);
        let status = bench
            .ghcr
            .fetch("HEAD", &format!("/v2/{GHCR_REPO}/manifests/{subject}"))
            .status;
        assert_eq!(
            status, 200,
            "the referrers tag {tag} names the referrers of a manifest that is gone"
        );
    }
    let ghcr_name = format!("{}/{GHCR_REPO}", bench.ghcr.address);
    let attested: Vec<(&str, &str, &str, Option<String>)> = outcome
        .attestations
        .iter()
        .map(|a| {
            (
                a.kind,
                a.subject_name.as_str(),
                a.subject_digest.as_str(),
                a.sbom
                    .as_ref()
                    .map(|p| p.file_name().unwrap().to_string_lossy().into_owned()),
            )
        })
        .collect();
    assert_eq!(
        attested,
        [
            ("provenance", ghcr_name.as_str(), ghcr_digest.as_str(), None),
            (
                "sbom",
                ghcr_name.as_str(),
                children[0].as_str(),
                Some("linux-amd64.cdx.json".to_owned())
            ),
            (
                "sbom",
                ghcr_name.as_str(),
                children[1].as_str(),
                Some("linux-arm64.cdx.json".to_owned())
            ),
        ]
    );
    for subject in &subjects {
        let index = bench.ghcr.fetch(
            "GET",
            &format!(
                "/v2/{GHCR_REPO}/manifests/{}",
                subject.replacen(':', "-", 1)
            ),
        );
        assert_eq!(index.status, 200, "{subject}");
        let index: serde_json::Value = serde_json::from_slice(&index.body).unwrap();
        assert!(
            !index["manifests"].as_array().unwrap().is_empty(),
            "{index}"
        );
    }
    assert!(
        outcome.summary.contains(tag),
        "the job summary names the tag"
    );
    (ghcr_digest, outcome)
}

/// `git push --follow-tags`: a push to main and a push of v1.2.3, the same commit, at the same time. On GitHub their
/// plan and build jobs run side by side (each ref in its own groups, so neither cancels the other), and their
/// publishing jobs wait for each other in one queue. Here they run in that queue's order, and afterwards both
/// registries hold `latest` from the main run and 1.2.3, 1.2 and 1 from the tag run, none lost to the other.
#[test]
fn a_main_push_and_a_tag_push_of_one_commit_publish_in_turn() {
    let _one = one_at_a_time();
    let bench = Bench::new("follow-tags");
    let (latest, main) = publish_run(
        &bench,
        Event::push("refs/heads/main", SHA),
        "latest",
        &["latest"],
    );
    let (version, tag) = publish_run(
        &bench,
        Event::push("refs/tags/v1.2.3", SHA),
        "1.2.3",
        &["1", "1.2", "1.2.3", "latest"],
    );
    let group = |outcome: &Outcome, job: &str| outcome.concurrency[job].clone();
    // The publishing jobs: one group, queued, never cancelled.
    let publish = Concurrency {
        group: "build-images-publish".into(),
        cancel_in_progress: false,
        queue: Some("max".into()),
    };
    for outcome in [&main, &tag] {
        assert_eq!(group(outcome, "manifest"), std::slice::from_ref(&publish));
    }
    // Planning and building: a group per ref (and platform), so a newer run of the same ref cancels only its own.
    for job in ["prepare", "build"] {
        for (a, b) in group(&main, job).iter().zip(group(&tag, job)) {
            assert_ne!(a.group, b.group, "{job}");
            assert!(a.cancel_in_progress && b.cancel_in_progress, "{job}");
        }
    }
    assert_eq!(group(&main, "build").len(), 2);
    for (registry, repository) in [(&bench.ghcr, GHCR_REPO), (&bench.hub, HUB_REPO)] {
        assert_eq!(
            manifest(registry, repository, "latest").0,
            latest,
            "{}",
            registry.address
        );
        for name in ["1.2.3", "1.2", "1"] {
            assert_eq!(
                manifest(registry, repository, name).0,
                version,
                "{name} in {}",
                registry.address
            );
        }
    }
}

#[test]
fn push_to_main_publishes_latest_and_the_next_push_prunes_it() {
    let _one = one_at_a_time();
    let bench = Bench::new("main");
    let first = publish(
        &bench,
        Event::push("refs/heads/main", SHA),
        "latest",
        &["latest"],
    );
    // The next commit on main: a new list (its created label differs), and the one `latest` left is deleted.
    let second = publish(
        &bench,
        Event::push(
            "refs/heads/main",
            "6a2f3e4d5c6b7a8998a7b6c5d4e3f2a1b0c9d8e7",
        ),
        "latest",
        &["latest"],
    );
    assert_ne!(first, second);
    for (registry, repository) in [(&bench.ghcr, GHCR_REPO), (&bench.hub, HUB_REPO)] {
        let status = registry
            .fetch("GET", &format!("/v2/{repository}/manifests/{first}"))
            .status;
        assert_eq!(
            status, 404,
            "the superseded list is pruned in {}",
            registry.address
        );
    }
}

#[test]
fn push_of_v1_2_3_publishes_the_version_and_not_latest() {
    let _one = one_at_a_time();
    publish(
        &Bench::new("release"),
        Event::push("refs/tags/v1.2.3", SHA),
        "1.2.3",
        // version-tags in Cargo.toml: 1.2 and 1 are new, so they name the release too.
        &["1", "1.2", "1.2.3"],
    );
}

#[test]
fn dispatch_with_a_tag_publishes_that_tag() {
    let _one = one_at_a_time();
    publish(
        &Bench::new("dispatch"),
        Event::dispatch(
            "refs/heads/main",
            SHA,
            &[
                ("tag_name", "test-login"),
                ("platforms", ""),
                ("skip_push", "false"),
            ],
        ),
        "test-login",
        &["test-login"],
    );
}
