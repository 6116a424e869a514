//! The pipeline against misbehaving registries, through the fault-injecting proxy (support/fault_proxy.rs) in
//! front of real distribution registries: seeded random faults over whole two-platform publishes (each run ends
//! with a correct index everywhere or with exit 4 and every tag where it was), a stalled registry that must fail
//! within a stated bound, and a push killed mid-upload whose rerun sends only what is missing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::fault_proxy::{Exchange, Fault, FaultProxy, Plan, Rule};
use crate::support::registry::{self as harness, Auth, Export, Run, TestRegistry, Xtask};

const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const REPO: &str = "team/app";
const USER: &str = "ci-bot";
const PASSWORD: &str = "faults-test-password";

/// A real registry with the fault proxy in front; the xtask only ever sees the proxy.
struct Site {
    registry: TestRegistry,
    proxy: FaultProxy,
}

impl Site {
    fn start(auth: Auth) -> Site {
        let registry = TestRegistry::start(auth);
        let upstream: SocketAddr = registry.address.parse().unwrap();
        let proxy = FaultProxy::start(upstream, Plan::default());
        Site { registry, proxy }
    }

    /// The `--to` value: the repository behind the proxy.
    fn target(&self) -> String {
        self.proxy.reference(REPO)
    }

    /// GET a manifest straight from the registry (not through the proxy), with the registry's credentials:
    /// (digest of the bytes, bytes), or `None` when it has no such manifest.
    fn manifest(&self, reference: &str) -> Option<(String, Vec<u8>)> {
        let answer = self
            .registry
            .fetch("GET", &format!("/v2/{REPO}/manifests/{reference}"));
        match answer.status {
            200 => Some((harness::sha256(&answer.body), answer.body)),
            404 => None,
            other => panic!(
                "GET manifest {reference} from {}: HTTP {other}",
                self.registry.address
            ),
        }
    }

    /// The digest `tag` resolves to now.
    fn tag(&self, tag: &str) -> Option<String> {
        self.manifest(tag).map(|(digest, _)| digest)
    }

    fn creds(&self) -> Vec<String> {
        self.registry
            .creds()
            .map(|c| vec![format!("--creds={c}")])
            .unwrap_or_default()
    }
}

/// The exports of both platforms for one publish, at `<work>/image/<os>-<arch>`. `salt` changes the layer sizes,
/// hence every digest, so each publish has its own index.
fn exports(work: &Path, salt: u64) -> [Export; 2] {
    [
        Export::write(
            &work.join("image/linux-amd64"),
            "amd64",
            &[3_000 + salt * 7, 500],
        ),
        Export::write(
            &work.join("image/linux-arm64"),
            "arm64",
            &[3_100 + salt * 5, 700],
        ),
    ]
}

fn with_creds(xtask: Xtask) -> Xtask {
    // Only the token registry challenges; the anonymous one never asks, so the credentials stay unused there.
    xtask
        .env("REGISTRY_USERNAME", USER)
        .env("REGISTRY_PASSWORD", PASSWORD)
}

fn push(work: &Path, platform: &str, targets: &[String], env: &[(&str, &str)]) -> Xtask {
    let mut xtask = Xtask::new()
        .args(["image", "push", "--platform", platform, "--digest-dir"])
        .args([work.join("digests")])
        .target_dir(work);
    for target in targets {
        xtask = xtask.args(["--to", target]);
    }
    for (name, value) in env {
        xtask = xtask.env(name, value);
    }
    with_creds(xtask)
}

fn manifest(work: &Path, tag: &str, targets: &[String], env: &[(&str, &str)]) -> Xtask {
    let mut xtask = Xtask::new()
        .args([
            "image",
            "manifest",
            "--tag",
            tag,
            "--platforms",
            "linux/amd64,linux/arm64",
            "--digest-dir",
        ])
        .args([work.join("digests")])
        .target_dir(work);
    for target in targets {
        xtask = xtask.args(["--to", target]);
    }
    for (name, value) in env {
        xtask = xtask.env(name, value);
    }
    with_creds(xtask)
}

/// What a whole publish (push amd64, push arm64, manifest) did; the steps stop at the first failure, as CI's jobs
/// do.
struct Publish {
    runs: Vec<(&'static str, Run)>,
}

impl Publish {
    fn run(work: &Path, tag: &str, targets: &[String], env: &[(&str, &str)]) -> Publish {
        let mut runs = Vec::new();
        let steps: [(&'static str, Xtask); 3] = [
            ("push linux/amd64", push(work, "linux/amd64", targets, env)),
            ("push linux/arm64", push(work, "linux/arm64", targets, env)),
            ("manifest", manifest(work, tag, targets, env)),
        ];
        for (name, step) in steps {
            let run = step.run();
            let failed = run.code != 0;
            runs.push((name, run));
            if failed {
                break;
            }
        }
        Publish { runs }
    }

    /// `None` when every step passed, else the failed step and its run.
    fn failure(&self) -> Option<&(&'static str, Run)> {
        self.runs.iter().find(|(_, run)| run.code != 0)
    }

    /// "attempt n/3 failed, retrying" lines over all steps: the retries taken.
    fn retries(&self) -> usize {
        self.runs
            .iter()
            .map(|(_, run)| {
                run.stderr
                    .lines()
                    .filter(|l| l.contains("failed, retrying in"))
                    .count()
            })
            .sum()
    }

    fn transcript(&self) -> String {
        self.runs
            .iter()
            .map(|(name, run)| {
                format!(
                    "== {name}: exit {} in {:.2} s\n{}{}",
                    run.code,
                    run.elapsed.as_secs_f64(),
                    run.stdout,
                    run.stderr
                )
            })
            .collect()
    }
}

/// Checks that `tag` in `site` is a Docker manifest list of exactly the two exports, that skopeo (an independent
/// client) copies all of it (every manifest and blob, digests checked on the way), and that each platform's image
/// is the export's.
fn assert_published(site: &Site, tag: &str, images: &[Export; 2], scratch: &Path, context: &str) {
    let (digest, bytes) = site
        .manifest(tag)
        .unwrap_or_else(|| panic!("{context}: {tag} is missing in {}", site.registry.address));
    let list: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(list["mediaType"], DOCKER_LIST, "{context}");
    let entries: Vec<(String, String)> = list["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["platform"]["architecture"].as_str().unwrap().to_owned(),
                m["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        vec![
            ("amd64".to_owned(), images[0].digest.clone()),
            ("arm64".to_owned(), images[1].digest.clone())
        ],
        "{context}: {} {tag}",
        site.registry.address
    );
    for (image, _) in images.iter().zip(["amd64", "arm64"]) {
        let (child, child_bytes) = site
            .manifest(&image.digest)
            .unwrap_or_else(|| panic!("{context}: child {} missing", image.digest));
        assert_eq!(child, image.digest);
        assert_eq!(child_bytes, image.manifest);
    }
    let dest = scratch.join(format!("copy-{}", site.registry.address.replace(':', "-")));
    let _ = std::fs::remove_dir_all(&dest);
    let source = format!("docker://{}/{REPO}@{digest}", site.registry.address);
    let output = Command::new("skopeo")
        .args(["copy", "--all", "--src-tls-verify=false", "--quiet"])
        .args(
            site.creds()
                .iter()
                .map(|c| c.replace("--creds", "--src-creds")),
        )
        .arg(&source)
        .arg(format!("dir:{}", dest.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{context}: skopeo copy --all {source}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // skopeo verified every blob against its digest while copying; the children it wrote are the exports.
    for image in images {
        let copied = dest.join(format!("{}.manifest.json", &image.digest[7..]));
        assert_eq!(
            std::fs::read(&copied).unwrap_or_default(),
            image.manifest,
            "{context}: {}",
            copied.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dest);
}

fn fault_counts(log: &[Exchange]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for fault in log.iter().filter_map(|e| e.fault.as_ref()) {
        *counts.entry(fault.name()).or_insert(0) += 1;
    }
    counts
}

/// The env every faulted run gets: fast retries, a read timeout the stalls overrun.
const FAST: &[(&str, &str)] = &[
    ("XTASK_RETRY_BASE_MS", "5"),
    ("XTASK_HTTP_TIMEOUT_MS", "300"),
];

/// 50 seeded runs of a two-platform publish to two registries (one anonymous, one with Bearer tokens), each
/// registry behind its own proxy faulting a random fifth of the requests. A run either publishes a correct index
/// under `latest` in both registries, or fails with exit 4 leaving `latest` where it was in both. Nothing else.
#[test]
fn seeded_faults_never_publish_partially() {
    let runs: u64 = std::env::var("FAULT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let rate: f64 = std::env::var("FAULT_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.2);
    let first_seed: u64 = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let sites = [
        Site::start(Auth::Anonymous),
        Site::start(Auth::token(USER, PASSWORD)),
    ];
    let targets: Vec<String> = sites.iter().map(Site::target).collect();
    let work = harness::temp_dir("faults");

    // A first, clean publish, so every run has a `latest` that must stay put when it fails.
    let mut current = exports(&work.path().join("run-0"), 0);
    let first = Publish::run(&work.path().join("run-0"), "latest", &targets, FAST);
    assert!(first.failure().is_none(), "{}", first.transcript());

    let started = Instant::now();
    let mut published: u64 = 0;
    let mut failed: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut retries = Vec::new();
    let mut injected: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    for seed in first_seed..first_seed + runs {
        let dir = work.path().join(format!("run-{seed}"));
        let images = exports(&dir, seed);
        let before: Vec<Option<String>> = sites.iter().map(|s| s.tag("latest")).collect();
        let marks: Vec<usize> = sites.iter().map(|s| s.proxy.mark()).collect();
        for (i, site) in sites.iter().enumerate() {
            site.proxy.set_plan(Plan::random(seed * 2 + i as u64, rate));
        }
        let publish = Publish::run(&dir, "latest", &targets, FAST);
        for site in &sites {
            site.proxy.set_plan(Plan::default());
        }
        let after: Vec<Option<String>> = sites.iter().map(|s| s.tag("latest")).collect();
        let logs: Vec<Vec<Exchange>> = sites
            .iter()
            .zip(&marks)
            .map(|(s, m)| s.proxy.log_since(*m))
            .collect();
        for log in &logs {
            for (name, n) in fault_counts(log) {
                *injected.entry(name).or_insert(0) += n;
            }
        }
        retries.push(publish.retries());
        let context = format!("seed {seed}");
        match publish.failure() {
            None => {
                published += 1;
                for site in &sites {
                    assert_published(site, "latest", &images, &dir, &context);
                }
                current = images;
            }
            Some((step, run)) => {
                *failed.entry(step).or_insert(0) += 1;
                if run.code != 4 {
                    problems.push(format!(
                        "{context}: {step} exited {}, not 4\n{}",
                        run.code,
                        publish.transcript()
                    ));
                }
                if after != before {
                    problems.push(format!(
                        "{context}: {step} failed but latest moved: {before:?} -> {after:?}\n{}",
                        publish.transcript()
                    ));
                } else {
                    // Where it was, and still a whole index.
                    for site in &sites {
                        assert_published(site, "latest", &current, &dir, &context);
                    }
                }
            }
        }
        // Whatever happened, both registries agree.
        if after[0] != after[1] {
            problems.push(format!(
                "{context}: the registries disagree on latest: {after:?}\n{}",
                publish.transcript()
            ));
        }
    }
    let elapsed = started.elapsed();
    let total_retries: usize = retries.iter().sum();
    eprintln!(
        "{runs} seeded runs (seeds {first_seed}..{}, fault rate {rate}) in {:.1} s: {published} published, {} \
         failed with exit 4 {failed:?}; retries taken: {total_retries} (max {} in one run); faults injected: \
         {injected:?}",
        first_seed + runs - 1,
        elapsed.as_secs_f64(),
        runs - published,
        retries.iter().max().unwrap_or(&0),
    );
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    // The mix must exercise both outcomes, or the test proves less than it claims.
    if runs >= 20 {
        assert!(
            published > 0 && published < runs,
            "split {published}/{runs}"
        );
    }
}

/// The same seed injects the same faults into the same requests.
#[test]
fn a_seed_replays_the_same_faults() {
    let site = Site::start(Auth::Anonymous);
    let work = harness::temp_dir("replay");
    let shape = |log: Vec<Exchange>| -> Vec<(String, String, Option<&'static str>)> {
        log.into_iter()
            .map(|e| {
                // Upload session ids and state differ per run; the operation does not.
                let path = match e.path.find("/uploads/") {
                    Some(at) => e.path[..at + 9].to_owned(),
                    None => e.path,
                };
                (e.method, path, e.fault.map(|f| f.name()))
            })
            .collect()
    };
    let mut shapes = Vec::new();
    for round in 0..2 {
        let dir = work.path().join(format!("round-{round}"));
        exports(&dir, 1);
        let target = site.proxy.reference(&format!("{REPO}-{round}"));
        let mark = site.proxy.mark();
        site.proxy.set_plan(Plan::random(7, 0.3));
        let run = push(&dir, "linux/amd64", &[target], FAST).run();
        let log = site.proxy.log_since(mark);
        assert!(log.iter().any(|e| e.fault.is_some()), "{log:?}");
        let repo = format!("{REPO}-{round}");
        let log: Vec<_> = shape(log)
            .into_iter()
            .map(|(method, path, fault)| (method, path.replace(&repo, REPO), fault))
            .collect();
        shapes.push((run.code, log));
    }
    assert_eq!(shapes[0], shapes[1]);
}

fn rule(method: &str, path: &str, fault: Fault, times: u32) -> Rule {
    Rule {
        method: Some(method.into()),
        path_contains: Some(path.into()),
        fault,
        skip: 0,
        remaining: Some(times),
    }
}

/// A second publish whose manifest stage meets `rules` (one list per registry), after a clean first one.
struct SecondPublish {
    sites: [Site; 2],
    work: harness::TempDir,
    images: [Export; 2],
    before: Vec<Option<String>>,
    after: Vec<Option<String>>,
    run: Run,
}

impl SecondPublish {
    fn run(rules: [Vec<Rule>; 2]) -> SecondPublish {
        let sites = [
            Site::start(Auth::Anonymous),
            Site::start(Auth::token(USER, PASSWORD)),
        ];
        let targets: Vec<String> = sites.iter().map(Site::target).collect();
        let work = harness::temp_dir("tagmove");
        let first = work.path().join("first");
        exports(&first, 0);
        let publish = Publish::run(&first, "latest", &targets, FAST);
        assert!(publish.failure().is_none(), "{}", publish.transcript());
        let second = work.path().join("second");
        let images = exports(&second, 1);
        for platform in ["linux/amd64", "linux/arm64"] {
            push(&second, platform, &targets, FAST).run().success();
        }
        let before: Vec<Option<String>> = sites.iter().map(|s| s.tag("latest")).collect();
        for (site, rules) in sites.iter().zip(rules) {
            site.proxy.set_plan(Plan {
                rules,
                ..Plan::default()
            });
        }
        let run = manifest(&second, "latest", &targets, FAST).run();
        let after: Vec<Option<String>> = sites.iter().map(|s| s.tag("latest")).collect();
        SecondPublish {
            sites,
            work,
            images,
            before,
            after,
            run,
        }
    }
}

/// The tag PUT reached the first registry, but its answer was lost and both retries failed: the tag did move
/// there, so the run that exits 4 must put it back, or the two registries disagree on `latest`.
#[test]
fn a_tag_move_with_a_lost_answer_is_rolled_back() {
    let second = SecondPublish::run([
        vec![
            rule("PUT", "/manifests/latest", Fault::AppliedThen500, 1),
            rule("PUT", "/manifests/latest", Fault::Unavailable, 2),
        ],
        vec![],
    ]);
    let shown = format!("{}{}", second.run.stdout, second.run.stderr);
    assert_eq!(second.run.code, 4, "{shown}");
    assert_eq!(second.after, second.before, "{shown}");
    assert!(shown.contains("tag latest put back to"), "{shown}");
    assert!(!shown.contains(PASSWORD));
}

/// Every registry acknowledged the move, then reading the tag back failed in one: the publish happened and is
/// whole in both registries; the run says it could not check, and does not undo half of it.
#[test]
fn a_failed_read_back_is_a_warning_not_a_half_publish() {
    let second = SecondPublish::run([
        vec![],
        vec![Rule {
            // The first read is of the tag before the move, the second the look just before the move (`latest`
            // only moves forward), the third the read-back.
            skip: 2,
            ..rule("GET", "/manifests/latest", Fault::Unavailable, 100)
        }],
    ]);
    let shown = format!("{}{}", second.run.stdout, second.run.stderr);
    assert_eq!(second.run.code, 0, "{shown}");
    assert!(shown.contains("could not read back tag latest"), "{shown}");
    assert_ne!(second.after, second.before);
    for site in &second.sites {
        assert_published(
            site,
            "latest",
            &second.images,
            second.work.path(),
            "read-back",
        );
    }
}

/// The read timeout and the retry base the stall tests run with, and the bound that follows from them: the first
/// request that meets the stall fails its attempt after one timeout, the operation after `ATTEMPTS` of them plus
/// the backoff (base, then 2 × base), and the run stops at that operation. With the defaults (120 s per read or
/// write, 10 s base) the same formula gives 3 × 120 + 10 + 20 = 390 s.
const STALL_TIMEOUT_MS: u64 = 1_000;
const STALL_BASE_MS: u64 = 100;
const ATTEMPTS: u64 = 3;
/// Process start, credential lookup and the requests that succeed before the stall.
const STALL_SLACK_MS: u64 = 3_000;

fn stall_bound() -> (Duration, Duration) {
    let floor = Duration::from_millis(ATTEMPTS * STALL_TIMEOUT_MS);
    let bound = floor + Duration::from_millis(STALL_BASE_MS * (1 + 2) + STALL_SLACK_MS);
    (floor, bound)
}

fn stalled_run(xtask: impl Fn(&[(&str, &str)]) -> Xtask) -> Run {
    let timeout = STALL_TIMEOUT_MS.to_string();
    let base = STALL_BASE_MS.to_string();
    let env = [
        ("XTASK_HTTP_TIMEOUT_MS", timeout.as_str()),
        ("XTASK_RETRY_BASE_MS", base.as_str()),
    ];
    xtask(&env).run()
}

/// A registry that accepts connections and then never answers: push and manifest both fail with exit 4 within
/// the bound, having waited out every attempt (not failed early on something else).
#[test]
fn a_stalled_registry_fails_within_the_bound() {
    let site = Site::start(Auth::Anonymous);
    let work = harness::temp_dir("stall");
    exports(work.path(), 0);
    let targets = vec![site.target()];
    // The digest files the manifest stage needs, pushed while the registry still answered.
    for platform in ["linux/amd64", "linux/arm64"] {
        push(work.path(), platform, &targets, FAST).run().success();
    }
    site.proxy.set_plan(Plan::stalled(Duration::from_secs(120)));
    let (floor, bound) = stall_bound();
    type Step<'a> = Box<dyn Fn(&[(&str, &str)]) -> Xtask + 'a>;
    let steps: [(&str, Step); 2] = [
        (
            "push",
            Box::new(|env| {
                // Another repository, so the push has to talk to the registry.
                push(
                    work.path(),
                    "linux/amd64",
                    &[site.proxy.reference("other")],
                    env,
                )
            }),
        ),
        (
            "manifest",
            Box::new(|env| manifest(work.path(), "latest", &targets, env)),
        ),
    ];
    for (name, step) in steps {
        let run = stalled_run(step);
        eprintln!(
            "stalled {name}: exit {} after {:.2} s (bound {:.2} s)",
            run.code,
            run.elapsed.as_secs_f64(),
            bound.as_secs_f64()
        );
        assert_eq!(run.code, 4, "{name}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("after 3 attempts"),
            "{name}: {}",
            run.stderr
        );
        assert!(run.stderr.contains("timeout"), "{name}: {}", run.stderr);
        assert!(
            run.elapsed >= floor && run.elapsed <= bound,
            "{name}: {:?} outside [{floor:?}, {bound:?}]",
            run.elapsed
        );
    }
    assert_eq!(site.tag("latest"), None, "nothing was published");
}

/// A registry that stops reading an upload halfway, for a layer whose rest fits in the socket buffers (the client
/// then waits for an answer: one read timeout per attempt) and for one whose rest does not (the client's write
/// blocks). Each attempt starts a new upload; the push fails with exit 4 within the bound.
///
/// A blocked write times out one timeout after the last byte the kernel took, and Linux keeps taking a few while
/// its zero-window probes back off (each collapse of the reader's queue opens a little window): up to about two
/// timeouts more (measured: 1.2 s with a 1 s timeout). So a write-blocked attempt is bounded by 3 timeouts.
#[test]
fn an_upload_stalled_midway_fails_within_the_bound() {
    let site = Site::start(Auth::Anonymous);
    let stall_layer = Plan {
        rules: vec![Rule {
            method: Some("PUT".into()),
            path_contains: Some("/blobs/uploads/".into()),
            fault: Fault::StallMidBody,
            skip: 1, // the config goes through; the layer stalls
            remaining: None,
        }],
        stall: Duration::from_secs(120),
        ..Plan::default()
    };
    let (floor, answer_bound) = stall_bound();
    let write_bound = answer_bound + Duration::from_millis(ATTEMPTS * 2 * STALL_TIMEOUT_MS);
    for (layer, bound) in [(1u64 << 20, answer_bound), (16 << 20, write_bound)] {
        let work = harness::temp_dir("stall-upload");
        Export::write(&work.path().join("image/linux-amd64"), "amd64", &[layer]);
        let mark = site.proxy.mark();
        site.proxy.set_plan(stall_layer.clone());
        let target = site.proxy.reference(&format!("{REPO}-{layer}"));
        let run = stalled_run(|env| {
            push(
                work.path(),
                "linux/amd64",
                std::slice::from_ref(&target),
                env,
            )
        });
        eprintln!(
            "upload of {layer} bytes stalled midway: exit {} after {:.2} s (bound {:.2} s)",
            run.code,
            run.elapsed.as_secs_f64(),
            bound.as_secs_f64()
        );
        assert_eq!(run.code, 4, "{}{}", run.stdout, run.stderr);
        let stalled: Vec<Exchange> = site
            .proxy
            .log_since(mark)
            .into_iter()
            .filter(|e| e.fault == Some(Fault::StallMidBody))
            .collect();
        assert_eq!(
            stalled.len(),
            3,
            "one stalled upload per attempt: {stalled:?}"
        );
        assert!(stalled.iter().all(|e| !e.body_complete && e.body_bytes > 0));
        assert!(
            run.elapsed >= floor && run.elapsed <= bound,
            "{layer}: {:?} outside [{floor:?}, {bound:?}]\n{}",
            run.elapsed,
            run.stderr
        );
    }
}

/// A registry that is never silent for a whole read timeout, but never finishes an answer either (one byte every
/// half timeout): a per-read timeout alone never fires, so the run must still end within the bound.
#[test]
fn a_trickling_registry_fails_within_the_bound() {
    let site = Site::start(Auth::Anonymous);
    let work = harness::temp_dir("trickle");
    exports(work.path(), 0);
    site.proxy.set_plan(Plan {
        rate: 1.0,
        faults: vec![Fault::Trickle {
            every: Duration::from_millis(STALL_TIMEOUT_MS / 2),
        }],
        ..Plan::default()
    });
    let (_, bound) = stall_bound();
    let started = Instant::now();
    let run = stalled_run(|env| push(work.path(), "linux/amd64", &[site.target()], env));
    eprintln!(
        "trickling registry: exit {} after {:.2} s (bound {:.2} s)",
        run.code,
        run.elapsed.as_secs_f64(),
        bound.as_secs_f64()
    );
    assert_eq!(run.code, 4, "{}{}", run.stdout, run.stderr);
    assert!(started.elapsed() <= bound, "{:?}", started.elapsed());
}

/// The digest a blob upload PUT names (`…?_state=…&digest=sha256%3A…`).
fn upload_digest(exchange: &Exchange) -> Option<String> {
    if exchange.method != "PUT" || !exchange.path.contains("/blobs/uploads/") {
        return None;
    }
    let (_, digest) = exchange.path.split_once("digest=")?;
    Some(digest.split('&').next()?.replace("%3A", ":"))
}

/// Blob uploads the registry accepted: (digest, payload bytes).
fn accepted_uploads(log: &[Exchange]) -> Vec<(String, u64)> {
    log.iter()
        .filter(|e| e.status == Some(201))
        .filter_map(|e| Some((upload_digest(e)?, e.body_bytes)))
        .collect()
}

/// A push killed with SIGKILL in the middle of a layer upload (the proxy slows the link so the kill lands there),
/// then the whole publish rerun: it completes, and the rerun uploads exactly the blobs the killed run had not
/// finished, each once, counted in bytes by the proxy.
#[test]
fn a_push_killed_midway_resumes_with_only_what_is_missing() {
    let site = Site::start(Auth::Anonymous);
    let work = harness::temp_dir("kill");
    // Larger than what the socket buffers between the xtask and the proxy hold (about 10 MiB here): a kill must
    // leave part of the layer unsent, not merely unread.
    let layer = 24u64 << 20;
    let images = [
        Export::write(
            &work.path().join("image/linux-amd64"),
            "amd64",
            &[layer, layer + 1, layer + 2],
        ),
        Export::write(&work.path().join("image/linux-arm64"), "arm64", &[5_000]),
    ];
    let amd64 = &images[0];
    let config_size = amd64.total_size - amd64.layers.iter().map(|(_, s)| s).sum::<u64>();
    let mut sizes: BTreeMap<String, u64> = amd64.layers.iter().cloned().collect();
    sizes.insert(amd64.config_digest.clone(), config_size);

    // About a second per layer.
    site.proxy.set_plan(Plan {
        throttle: Some(layer),
        ..Plan::default()
    });
    let home = harness::temp_dir("home");
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    for name in harness::SCRUBBED {
        command.env_remove(name);
    }
    let mut killed = command
        .env("HOME", home.path())
        .env("XTASK_RETRY_BASE_MS", "10")
        .env("CARGO_TARGET_DIR", work.path())
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap())
        .args(["image", "push", "--platform", "linux/amd64", "--digest-dir"])
        .arg(work.path().join("digests"))
        .args(["--to", &site.target()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first layer is in and the second is on its way, then kill in the middle of it.
    let started = Instant::now();
    loop {
        let log = site.proxy.log();
        let done = accepted_uploads(&log).len();
        let uploading = log
            .last()
            .is_some_and(|e| e.status.is_none() && upload_digest(e).is_some());
        if done >= 2 && uploading {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the push never reached its second layer: {log:?}"
        );
        assert!(
            killed.try_wait().unwrap().is_none(),
            "the push ended before the kill: {log:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    killed.kill().unwrap(); // SIGKILL
    let status = killed.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    // The proxy still drains what the killed process had handed to the kernel, at the throttled pace.
    assert!(site.proxy.wait_idle(Duration::from_secs(30)));
    let first = site.proxy.log();
    let finished: BTreeMap<String, u64> = accepted_uploads(&first).into_iter().collect();
    let cut: Vec<&Exchange> = first
        .iter()
        .filter(|e| upload_digest(e).is_some() && e.status.is_none())
        .collect();
    assert_eq!(cut.len(), 1, "one upload was cut: {first:?}");
    assert!(
        !cut[0].body_complete && cut[0].body_bytes > 0 && cut[0].body_bytes < layer,
        "{:?}",
        cut[0]
    );
    assert!(!first
        .iter()
        .any(|e| e.method == "PUT" && e.path.contains("/manifests/")));
    assert!(!work.path().join("digests/linux-amd64").exists());
    assert_eq!(site.tag("latest"), None);

    // The rerun, at full speed: push amd64 again, then arm64, then the manifest.
    site.proxy.set_plan(Plan::default());
    let targets = vec![site.target()];
    let mark = site.proxy.mark();
    push(work.path(), "linux/amd64", &targets, FAST)
        .run()
        .success();
    let rerun = site.proxy.log_since(mark);
    let uploaded = accepted_uploads(&rerun);
    let missing: BTreeMap<String, u64> = sizes
        .iter()
        .filter(|(digest, _)| !finished.contains_key(*digest))
        .map(|(d, s)| (d.clone(), *s))
        .collect();
    let uploaded_map: BTreeMap<String, u64> = uploaded.iter().cloned().collect();
    assert_eq!(
        uploaded.len(),
        uploaded_map.len(),
        "a blob went twice: {uploaded:?}"
    );
    assert_eq!(
        uploaded_map, missing,
        "the rerun uploads exactly what was missing"
    );
    let resent: u64 = uploaded.iter().map(|(_, n)| n).sum();
    let saved: u64 = finished.values().sum();
    eprintln!(
        "killed mid-upload after {} of {} bytes ({} of {} blobs finished, {} bytes of the cut one sent); the rerun \
         uploaded {resent} bytes ({} blobs) and skipped {saved}",
        saved + cut[0].body_bytes,
        amd64.total_size,
        finished.len(),
        sizes.len(),
        cut[0].body_bytes,
        uploaded.len(),
    );
    assert_eq!(resent + saved, amd64.total_size);

    push(work.path(), "linux/arm64", &targets, FAST)
        .run()
        .success();
    manifest(work.path(), "latest", &targets, FAST)
        .run()
        .success();
    assert_published(&site, "latest", &images, work.path(), "after the rerun");
}
