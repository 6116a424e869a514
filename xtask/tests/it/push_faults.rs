//! `cargo xtask image push` when the registry misbehaves, through a fault-injecting proxy in front of a real
//! distribution registry: retries on 5xx/429 (with Retry-After), never on other 4xx, the exit-4 message after the
//! last attempt, uploads whose outcome is unknown, dropped connections and read timeouts.

use std::path::Path;
use std::time::Duration;

use crate::support::fault_proxy::{Exchange, Fault, FaultProxy, Plan, Rule};
use crate::support::registry::{self as harness, Auth, Export, TestRegistry, Xtask};

fn setup(layer_sizes: &[u64]) -> (TestRegistry, FaultProxy, harness::TempDir, Export) {
    let registry = TestRegistry::start(Auth::Anonymous);
    let proxy = FaultProxy::start(registry.address.parse().unwrap(), Plan::default());
    let work = harness::temp_dir("faults");
    let image = Export::write(&work.path().join("image/linux-amd64"), "amd64", layer_sizes);
    (registry, proxy, work, image)
}

fn push(work: &Path, to: &str) -> Xtask {
    Xtask::push_amd64(work, to)
}

/// The proxy applies `fault` to the next `times` requests (`None`: all of them) with this method whose target
/// contains `path`.
fn inject(proxy: &FaultProxy, method: &str, path: &str, times: Option<u32>, fault: Fault) {
    proxy.set_plan(Plan {
        rules: vec![Rule {
            method: Some(method.into()),
            path_contains: Some(path.into()),
            fault,
            skip: 0,
            remaining: times,
        }],
        ..Plan::default()
    });
}

fn count(log: &[Exchange], method: &str, path: &str) -> usize {
    log.iter()
        .filter(|e| e.method == method && e.path.contains(path))
        .count()
}

/// A registry that keeps answering 503 to the manifest PUT: three attempts, then exit 4 with the message of the
/// contract and the registry's error code; no digest file.
#[test]
fn persistent_503_fails_after_three_attempts() {
    let (registry, proxy, work, image) = setup(&[5_000]);
    inject(&proxy, "PUT", "/manifests/", None, Fault::Unavailable);
    let run = push(work.path(), &proxy.reference("team/app")).run();
    assert_eq!(run.code, 4, "{}\n{}", run.stdout, run.stderr);
    let message = run.stderr.lines().last().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "Failed to push to {} after 3 attempts",
            proxy.address()
        )),
        "{}",
        run.stderr
    );
    for part in [
        &format!("PUT manifest {}", image.digest),
        "team/app",
        "HTTP 503 UNAVAILABLE",
        "injected by the fault proxy",
    ] {
        assert!(message.contains(part), "{part:?} in {message}");
    }
    assert_eq!(count(&proxy.log(), "PUT", "/manifests/"), 3);
    assert_eq!(
        run.stderr.matches("retrying in").count(),
        2,
        "{}",
        run.stderr
    );
    assert!(!work.path().join("digests/linux-amd64").exists());
    // The blobs did land; the manifest never did.
    assert!(registry
        .requests()
        .iter()
        .all(|r| !(r.method == "PUT" && r.path.contains("/manifests/"))));
}

/// A 429 with Retry-After: 1 is waited out (not the 10 ms backoff), then the push goes through.
#[test]
fn retry_after_is_honoured() {
    let (registry, proxy, work, image) = setup(&[5_000]);
    inject(
        &proxy,
        "POST",
        "/blobs/uploads/",
        Some(1),
        Fault::TooManyRequests {
            retry_after: "1".into(),
        },
    );
    let run = push(work.path(), &proxy.reference("team/app"))
        .run()
        .success();
    assert!(run.elapsed >= Duration::from_secs(1), "{:?}", run.elapsed);
    assert!(run.stderr.contains("retrying in 1.0 s"), "{}", run.stderr);
    assert!(
        run.stderr.contains("HTTP 429 TOOMANYREQUESTS"),
        "{}",
        run.stderr
    );
    assert_eq!(
        registry.skopeo_raw("team/app", &image.digest),
        image.manifest
    );
}

/// Other 4xx are not retried: one manifest PUT, exit 4, no "after 3 attempts".
#[test]
fn client_errors_are_not_retried() {
    for status in [400, 403, 404] {
        let (_registry, proxy, work, _image) = setup(&[1_000]);
        inject(
            &proxy,
            "PUT",
            "/manifests/",
            None,
            Fault::Refused {
                status,
                code: "MANIFEST_INVALID".into(),
            },
        );
        let run = push(work.path(), &proxy.reference("team/app")).run();
        assert_eq!(run.code, 4, "{status}: {}", run.stderr);
        assert_eq!(count(&proxy.log(), "PUT", "/manifests/"), 1, "{status}");
        assert!(
            run.stderr
                .contains(&format!("HTTP {status} MANIFEST_INVALID")),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("after 3 attempts"), "{}", run.stderr);
        assert!(!run.stderr.contains("retrying"), "{}", run.stderr);
    }
}

/// The blob PUT reaches the registry but the answer is lost: the next attempt HEADs the blob, finds it, and does
/// not upload it again.
#[test]
fn lost_answer_to_an_upload_is_checked_with_head() {
    let (registry, proxy, work, image) = setup(&[200_000]);
    let layer = image.layers[0].0.clone();
    inject(
        &proxy,
        "PUT",
        &format!("digest={}", layer.replace(':', "%3A")),
        Some(1),
        Fault::AppliedThenDropped,
    );
    push(work.path(), &proxy.reference("team/app"))
        .run()
        .success();
    let log = proxy.log();
    let lost: Vec<&Exchange> = log.iter().filter(|e| e.fault.is_some()).collect();
    assert!(
        matches!(lost[..], [e] if e.upstream_status == Some(201) && e.status.is_none()),
        "the registry took the upload, the xtask got no answer: {log:?}"
    );
    let uploads = count(&log, "PUT", &layer.replace(':', "%3A"));
    assert_eq!(uploads, 1, "uploaded again: {log:?}");
    let heads = count(&log, "HEAD", &format!("/blobs/{layer}"));
    assert_eq!(heads, 2, "{log:?}");
    assert_eq!(
        registry.skopeo_raw("team/app", &image.digest),
        image.manifest
    );
}

/// The connection drops before the registry saw the upload: the blob is absent, so a new session is opened
/// (sessions are single-use) and the upload redone.
#[test]
fn dropped_upload_restarts_from_post() {
    let (registry, proxy, work, image) = setup(&[200_000]);
    let layer = image.layers[0].0.clone();
    let encoded = layer.replace(':', "%3A");
    inject(
        &proxy,
        "PUT",
        &format!("digest={encoded}"),
        Some(1),
        Fault::Dropped,
    );
    push(work.path(), &proxy.reference("team/app"))
        .run()
        .success();
    let log = proxy.log();
    let dropped: Vec<&Exchange> = log.iter().filter(|e| e.fault.is_some()).collect();
    assert!(
        matches!(dropped[..], [e] if e.upstream_status.is_none() && e.status.is_none()),
        "the dropped upload never reached the registry: {log:?}"
    );
    assert_eq!(count(&log, "PUT", &encoded), 2, "{log:?}");
    // One session per blob, plus the one the dropped attempt wasted.
    assert_eq!(
        count(&log, "POST", "/blobs/uploads/"),
        image.layers.len() + 2,
        "{log:?}"
    );
    assert_eq!(
        registry.skopeo_raw("team/app", &image.digest),
        image.manifest
    );
}

/// A registry that stalls longer than the read timeout fails that attempt; the next one succeeds.
#[test]
fn stalled_answers_time_out_and_are_retried() {
    let (registry, proxy, work, image) = setup(&[1_000]);
    inject(
        &proxy,
        "HEAD",
        "/manifests/",
        Some(1),
        Fault::Delay(Duration::from_secs(3)),
    );
    let run = push(work.path(), &proxy.reference("team/app"))
        .env("XTASK_HTTP_TIMEOUT_MS", "500")
        .run()
        .success();
    assert!(run.stderr.contains("attempt 1/3 failed"), "{}", run.stderr);
    assert!(run.stderr.contains("no response"), "{}", run.stderr);
    assert!(run.elapsed < Duration::from_secs(3), "{:?}", run.elapsed);
    assert_eq!(
        registry.skopeo_raw("team/app", &image.digest),
        image.manifest
    );
}
