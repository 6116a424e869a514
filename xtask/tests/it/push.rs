//! `cargo xtask image push` against the real distribution registry, in each auth mode (anonymous, htpasswd Basic,
//! Bearer tokens from a token server): the digest an independent client (skopeo) reads, no tag created, the same
//! digest in two registries, a rerun that sends nothing, a wrong password that fails at once, and a layer streamed
//! from disk with flat memory.

use std::path::Path;

use crate::support::registry::{self as harness, Auth, Export, TestRegistry, Xtask};

const PLATFORM: &str = "linux/amd64";

/// An export at `<target>/image/linux-amd64` (where the push reads it with CARGO_TARGET_DIR=<target>).
fn export(target: &Path, layer_sizes: &[u64]) -> Export {
    Export::write(&target.join("image/linux-amd64"), "amd64", layer_sizes)
}

fn push(target: &Path, digest_dir: &Path, to: &[String]) -> Xtask {
    let mut args = vec![
        "image".to_owned(),
        "push".into(),
        "--platform".into(),
        PLATFORM.into(),
        "--digest-dir".into(),
        digest_dir.display().to_string(),
    ];
    for t in to {
        args.extend(["--to".to_owned(), t.clone()]);
    }
    Xtask::new().args(args).target_dir(target)
}

fn with_creds(xtask: Xtask, registry: &TestRegistry) -> Xtask {
    match &registry.auth {
        Auth::Anonymous => xtask,
        Auth::Basic { user, password } | Auth::Token { user, password } => xtask
            .env("REGISTRY_USERNAME", user)
            .env("REGISTRY_PASSWORD", password),
    }
}

fn is_write(r: &harness::Request) -> bool {
    matches!(r.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
}

/// The whole contract in one auth mode: push to two repositories of one registry (the second mounts), check with
/// skopeo, no tags, digest file, then a rerun that writes nothing and uploads zero bytes.
fn push_and_rerun(auth: Auth) {
    let registry = TestRegistry::start(auth);
    let work = harness::temp_dir("push");
    let image = export(work.path(), &[300_000, 20_000]);
    let digests = work.path().join("digests");
    let to = [
        registry.reference("team/app"),
        registry.reference("team/mirror"),
    ];

    let first = with_creds(push(work.path(), &digests, &to), &registry)
        .run()
        .success();
    let first_requests = registry.requests().len();

    // An independent client reads exactly the bytes we exported, by digest, in both repositories.
    for repo in ["team/app", "team/mirror"] {
        let raw = registry.skopeo_raw(repo, &image.digest);
        assert_eq!(raw, image.manifest, "{repo}");
        assert_eq!(harness::sha256(&raw), image.digest);
        // No tag: distribution answers 404 NAME_UNKNOWN for a repository holding only untagged manifests.
        match registry.tags(repo) {
            Err((404, body)) => assert!(body.contains("NAME_UNKNOWN"), "{body}"),
            Ok(tags) => assert!(tags.is_empty(), "{repo} got tags {tags:?}"),
            Err(other) => panic!("tags/list of {repo}: {other:?}"),
        }
    }
    let requests = registry.requests();
    assert!(
        !requests
            .iter()
            .any(|r| r.path.contains("/manifests/latest")),
        "{requests:?}"
    );
    let manifest_puts: Vec<_> = requests
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/manifests/"))
        .collect();
    assert_eq!(manifest_puts.len(), 2, "{manifest_puts:?}");
    assert!(manifest_puts
        .iter()
        .all(|r| r.path.ends_with(&format!("/manifests/{}", image.digest)) && r.status == 201));
    // The second repository got its blobs by mount: one upload PUT per blob in all.
    let blob_puts = requests
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/blobs/uploads/"))
        .count();
    assert_eq!(blob_puts, 1 + image.layers.len(), "{requests:?}");
    let mounts = requests
        .iter()
        .filter(|r| r.method == "POST" && r.path.contains("mount=") && r.status == 201)
        .count();
    assert_eq!(mounts, 1 + image.layers.len(), "{requests:?}");

    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(digests.join("linux-amd64")).unwrap())
            .unwrap();
    assert_eq!(record["digest"], image.digest.as_str());
    assert_eq!(record["size"], image.manifest.len() as u64);
    assert_eq!(
        record["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(record["platform"]["os"], "linux");
    assert_eq!(record["platform"]["architecture"], "amd64");
    let uploaded_line = first
        .stdout
        .lines()
        .find(|l| l.starts_with("pushed linux/amd64"))
        .unwrap_or_else(|| panic!("{}", first.stdout));
    assert!(
        uploaded_line.contains(&format!("{} uploaded", human(image.total_size))),
        "{uploaded_line}"
    );

    // A rerun: nothing written, zero bytes sent, same digest file.
    let before = registry.requests().len();
    let rerun = with_creds(push(work.path(), &digests, &to), &registry)
        .run()
        .success();
    let during = registry.requests_since(before);
    assert!(!during.iter().any(is_write), "the rerun wrote: {during:?}");
    assert!(
        during.iter().all(|r| r.method == "HEAD" || r.status == 401),
        "{during:?}"
    );
    assert!(
        rerun.stdout.contains("pushed linux/amd64") && rerun.stdout.contains(": 0 B uploaded"),
        "{}",
        rerun.stdout
    );
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(digests.join("linux-amd64")).unwrap())
            .unwrap();
    assert_eq!(again, record);
    eprintln!(
        "{:?}: first push {} in {:.3} s ({} registry requests); rerun 0 B in {:.3} s ({} requests)",
        registry.auth,
        human(image.total_size),
        first.elapsed.as_secs_f64(),
        first_requests,
        rerun.elapsed.as_secs_f64(),
        during.len()
    );
}

fn human(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    let units = ["KiB", "MiB", "GiB"];
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", units[unit])
}

#[test]
fn anonymous_push_by_digest_then_rerun_sends_nothing() {
    push_and_rerun(Auth::Anonymous);
}

#[test]
fn basic_auth_push_by_digest_then_rerun_sends_nothing() {
    push_and_rerun(Auth::basic("alice", "correct horse"));
}

#[test]
fn token_auth_push_by_digest_then_rerun_sends_nothing() {
    push_and_rerun(Auth::token("bob", "battery staple"));
}

/// Two registries with different logins (from an auth file) get the very same digest.
#[test]
fn same_digest_in_two_registries() {
    let basic = TestRegistry::start(Auth::basic("alice", "pw-a"));
    let token = TestRegistry::start(Auth::token("bob", "pw-b"));
    let work = harness::temp_dir("two");
    let image = export(work.path(), &[50_000]);
    let auth_file = work.path().join("auth.json");
    let entry = |user: &str, pass: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    };
    std::fs::write(
        &auth_file,
        serde_json::json!({"auths": {
            basic.address.clone(): {"auth": entry("alice", "pw-a")},
            token.address.clone(): {"auth": entry("bob", "pw-b")},
        }})
        .to_string(),
    )
    .unwrap();
    let digests = work.path().join("digests");
    let run = push(
        work.path(),
        &digests,
        &[basic.reference("team/app"), token.reference("other/app")],
    )
    .env("REGISTRY_AUTH_FILE", &auth_file)
    .run()
    .success();
    assert!(
        run.stdout.contains("credentials from auth file"),
        "{}",
        run.stdout
    );
    let a = basic.skopeo_raw("team/app", &image.digest);
    let b = token.skopeo_raw("other/app", &image.digest);
    assert_eq!(a, b);
    assert_eq!(harness::sha256(&a), image.digest);
    // The token server granted exactly what the push asked for, to the right user.
    let tokens = token.token_server().unwrap().requests();
    assert!(!tokens.is_empty());
    assert!(
        tokens
            .iter()
            .all(|t| t.granted && t.user.as_deref() == Some("bob")),
        "{tokens:?}"
    );
    assert!(
        tokens.iter().any(|t| t
            .scopes
            .contains(&"repository:other/app:pull,push".to_owned())),
        "{tokens:?}"
    );
    // Tokens are cached per scope: far fewer token requests than registry requests.
    assert!(tokens.len() <= 3, "{tokens:?}");
}

/// A wrong password fails at once: exit 4, a message naming the registry, the status and what to check, no
/// retry (the backoff is set to a minute, so any retry would show), no secret echoed.
#[test]
fn wrong_password_fails_at_once_without_retry() {
    for auth in [Auth::basic("alice", "right"), Auth::token("bob", "right")] {
        let registry = TestRegistry::start(auth.clone());
        let work = harness::temp_dir("wrong");
        export(work.path(), &[10_000]);
        let run = push(
            work.path(),
            &work.path().join("digests"),
            &[registry.reference("team/app")],
        )
        .env("REGISTRY_USERNAME", "alice")
        .env("REGISTRY_PASSWORD", "not-the-password")
        .env("XTASK_RETRY_BASE_MS", "60000")
        .run();
        assert_eq!(run.code, 4, "{auth:?}\n{}\n{}", run.stdout, run.stderr);
        assert!(
            run.elapsed.as_secs() < 20,
            "{auth:?} took {:?}",
            run.elapsed
        );
        let message = &run.stderr;
        assert!(
            message.contains(&format!("Failed to push to {}", registry.address)),
            "{message}"
        );
        assert!(message.contains("HTTP 401"), "{message}");
        assert!(message.contains("REGISTRY_USERNAME"), "{message}");
        assert!(!message.contains("after 3 attempts"), "{message}");
        assert!(!message.contains("retrying"), "{message}");
        assert!(!message.contains("not-the-password"), "{message}");
        assert!(!work.path().join("digests/linux-amd64").exists());
        let requests = registry.requests();
        match &auth {
            // The probe without credentials, then one with them: refused, and that was all.
            Auth::Basic { .. } => {
                assert_eq!(requests.len(), 2, "{requests:?}");
                assert!(requests.iter().all(|r| r.status == 401), "{requests:?}");
            }
            // The probe, then one token request that the token server refused.
            Auth::Token { .. } => {
                assert_eq!(requests.len(), 1, "{requests:?}");
                let tokens = registry.token_server().unwrap().requests();
                assert_eq!(tokens.len(), 1, "{tokens:?}");
                assert!(!tokens[0].granted);
            }
            Auth::Anonymous => unreachable!(),
        }
    }
}

/// No credentials at all for a registry that wants them: exit 4 naming the variables to set.
#[test]
fn missing_credentials_name_the_variables() {
    let registry = TestRegistry::start(Auth::basic("alice", "pw"));
    let work = harness::temp_dir("nocreds");
    export(work.path(), &[1_000]);
    let run = push(
        work.path(),
        &work.path().join("d"),
        &[registry.reference("team/app")],
    )
    .run();
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("set REGISTRY_USERNAME and REGISTRY_PASSWORD or run `podman login"),
        "{}",
        run.stderr
    );
}

/// --dry-run lists the calls and sends none; a target with a tag is refused before anything (exit 2); a
/// missing export is a build-side failure (exit 3).
#[test]
fn dry_run_and_refusals_touch_nothing() {
    let registry = TestRegistry::start(Auth::Anonymous);
    let work = harness::temp_dir("dry");
    let image = export(work.path(), &[1_000]);
    let digests = work.path().join("digests");
    let run = push(work.path(), &digests, &[registry.reference("team/app")])
        .args(["--dry-run"])
        .run()
        .success();
    assert!(
        run.stdout.contains(&format!(
            "PUT    http://{}/v2/team/app/manifests/{}",
            registry.address, image.digest
        )),
        "{}",
        run.stdout
    );
    assert!(!digests.exists());

    let tagged = push(
        work.path(),
        &digests,
        &[format!("{}:latest", registry.reference("team/app"))],
    )
    .run();
    assert_eq!(tagged.code, 2, "{}", tagged.stderr);
    assert!(tagged.stderr.contains("without a tag"), "{}", tagged.stderr);

    let empty = harness::temp_dir("empty");
    let missing = push(empty.path(), &digests, &[registry.reference("team/app")]).run();
    assert_eq!(missing.code, 3, "{}", missing.stderr);
    assert!(
        missing
            .stderr
            .contains("cargo xtask image build --platform linux/amd64"),
        "{}",
        missing.stderr
    );

    assert!(registry.requests().is_empty(), "{:?}", registry.requests());
}

/// A real podman export (`podman push --format v2s2 --compress IMG dir:`) of an imported tarball pushes and reads
/// back with the digest skopeo computes.
#[test]
fn podman_export_pushes_unchanged() {
    let registry = TestRegistry::start(Auth::Anonymous);
    let work = harness::temp_dir("podman");
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/hello"), "hello from the push test\n").unwrap();
    let sh = xshell::Shell::new().unwrap();
    let tarball = work.path().join("rootfs.tar");
    xshell::cmd!(sh, "tar -C {rootfs} -cf {tarball} .")
        .run()
        .unwrap();
    let image = format!("localhost/xtask-push-test:{}", std::process::id());
    xshell::cmd!(sh, "podman import --quiet {tarball} {image}")
        .quiet()
        .ignore_stdout()
        .run()
        .unwrap();
    let dir = work.path().join("target/image/linux-amd64");
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let dest = format!("dir:{}", dir.display());
    let pushed = xshell::cmd!(
        sh,
        "podman push --quiet --format v2s2 --compress {image} {dest}"
    )
    .run();
    let _ = xshell::cmd!(sh, "podman rmi {image}")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run();
    pushed.unwrap();
    let manifest = std::fs::read(dir.join("manifest.json")).unwrap();
    let digest = harness::sha256(&manifest);

    push(
        &work.path().join("target"),
        &work.path().join("d"),
        &[registry.reference("podman/app")],
    )
    .run()
    .success();
    assert_eq!(registry.skopeo_raw("podman/app", &digest), manifest);
    let sh = xshell::Shell::new().unwrap();
    let reference = format!("docker://{}@{digest}", registry.reference("podman/app"));
    let inspected = xshell::cmd!(
        sh,
        "skopeo inspect --no-tags --tls-verify=false {reference}"
    )
    .quiet()
    .read()
    .unwrap();
    let value: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(value["Architecture"], "amd64");
    assert_eq!(value["Digest"], digest.as_str());
}

/// A 64 MiB layer is streamed from its file: the process's peak memory stays far below the layer's size.
#[test]
fn large_layer_streams_with_flat_memory() {
    let registry = TestRegistry::start(Auth::token("bob", "pw"));
    let work = harness::temp_dir("large");
    let image = export(work.path(), &[64 << 20]);
    let run = with_creds(
        push(
            work.path(),
            &work.path().join("d"),
            &[registry.reference("big/app")],
        ),
        &registry,
    )
    .run()
    .success();
    assert_eq!(
        registry.skopeo_raw("big/app", &image.digest),
        image.manifest
    );
    assert!(run.peak_rss_kib > 0, "could not sample the memory");
    assert!(
        run.peak_rss_kib < 32 * 1024,
        "peak RSS {} KiB for a {} layer",
        run.peak_rss_kib,
        human(image.total_size)
    );
    let before = registry.requests().len();
    let rerun = with_creds(
        push(
            work.path(),
            &work.path().join("d"),
            &[registry.reference("big/app")],
        ),
        &registry,
    )
    .run()
    .success();
    assert!(!registry.requests_since(before).iter().any(is_write));
    eprintln!(
        "64 MiB layer, token auth: first push {:.2} s (peak RSS {} KiB), rerun {:.3} s (peak RSS {} KiB)",
        run.elapsed.as_secs_f64(),
        run.peak_rss_kib,
        rerun.elapsed.as_secs_f64(),
        rerun.peak_rss_kib
    );
}
