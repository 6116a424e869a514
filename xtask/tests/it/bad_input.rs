//! A corpus of bad inputs, each run through the xtask binary with every registry behind the fault proxy (passing
//! requests through, logging them): release tags and refs, manual tag names, platform strings, image references,
//! digest files (empty, truncated, wrong algorithm or length, CRLF and whitespace inside the digest, plain text,
//! wrong platform or media type), auth files (bad JSON, bad base64, wrong shape, unsafe helper names) and bad
//! configuration values. Each must exit non-zero with a message naming the problem, and the registry must see no
//! write (no PUT, POST, PATCH or DELETE). Control runs with good inputs through the same proxy do write, so the
//! silence is the inputs' doing.

use std::net::SocketAddr;

use crate::support::fault_proxy::{FaultProxy, Plan};
use crate::support::registry::{self as harness, Auth, Export, TestRegistry, Xtask};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const REPO: &str = "team/app";

/// One bad input: the command line, extra environment, and a fragment the error must contain.
struct Case {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    mention: String,
}

fn case(name: &str, args: &[&str], mention: &str) -> Case {
    Case {
        name: name.to_owned(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        env: Vec::new(),
        mention: mention.to_owned(),
    }
}

impl Case {
    fn env(mut self, name: &str, value: impl Into<String>) -> Case {
        self.env.push((name.to_owned(), value.into()));
        self
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// `image meta` of a push to `git_ref` into the proxied target, plus `extra`.
fn meta(
    name: &str,
    target: &str,
    event: &str,
    git_ref: &str,
    extra: &[&str],
    mention: &str,
) -> Case {
    let mut args = strings(&["image", "meta", "--event", event, "--ref", git_ref]);
    args.extend(strings(&["--sha", SHA, "--to", target]));
    args.extend(strings(extra));
    Case {
        name: name.to_owned(),
        args,
        env: Vec::new(),
        mention: mention.to_owned(),
    }
}

/// A digest record as `image push` writes it, for `arch`, with `digest`.
fn record(arch: &str, digest: &str) -> serde_json::Value {
    serde_json::json!({
        "digest": digest,
        "size": 420,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "platform": {"os": "linux", "architecture": arch},
        "targets": [],
    })
}

#[test]
fn bad_inputs_fail_clearly_and_write_nothing() {
    let registry = TestRegistry::start(Auth::Anonymous);
    let upstream: SocketAddr = registry.address.parse().unwrap();
    let proxy = FaultProxy::start(upstream, Plan::default());
    let target = proxy.reference(REPO);
    let work = harness::temp_dir("bad-input");
    let dir = work.path();
    let images = [
        Export::write(&dir.join("image/linux-amd64"), "amd64", &[1_500]),
        Export::write(&dir.join("image/linux-arm64"), "arm64", &[1_600]),
    ];

    // Control: good inputs through the same proxy write (the images, by digest).
    let good_digests = dir.join("digests");
    for platform in ["linux/amd64", "linux/arm64"] {
        Xtask::new()
            .args(["image", "push", "--platform", platform, "--digest-dir"])
            .args([&good_digests])
            .args(["--to", &target])
            .target_dir(dir)
            .run()
            .success();
    }
    assert!(proxy.writes().len() >= 6, "{:?}", proxy.log());
    let good: Vec<serde_json::Value> = ["linux-amd64", "linux-arm64"]
        .iter()
        .map(|f| serde_json::from_slice(&std::fs::read(good_digests.join(f)).unwrap()).unwrap())
        .collect();

    let mut cases: Vec<Case> = Vec::new();
    let t = target.as_str();
    // Where a stage that wrongly went ahead would put its digest files.
    let unused = dir.join("unused-digests").display().to_string();
    let d = unused.as_str();

    // Release tags and refs.
    for (name, git_ref) in [
        ("two-number version tag", "refs/tags/v1.2"),
        ("leading zero in a version tag", "refs/tags/v01.2.3"),
        ("version tag without v", "refs/tags/1.2.3"),
        ("pre-release version tag", "refs/tags/v1.2.3-rc.1"),
        ("four-number version tag", "refs/tags/v1.2.3.4"),
    ] {
        cases.push(meta(
            name,
            t,
            "push",
            git_ref,
            &[],
            "does not follow semantic versioning",
        ));
    }
    cases.push(meta("empty ref", t, "push", "", &[], "no git ref"));
    cases.push(meta(
        "push of a feature branch",
        t,
        "push",
        "refs/heads/feature",
        &[],
        "publishes nothing",
    ));
    cases.push(meta(
        "push of a pull request ref",
        t,
        "push",
        "refs/pull/1/merge",
        &[],
        "publishes nothing",
    ));
    cases.push(meta(
        "pull_request event",
        t,
        "pull_request",
        "refs/heads/main",
        &[],
        "publishes nothing",
    ));
    cases.push(meta(
        "schedule event",
        t,
        "schedule",
        "refs/heads/main",
        &[],
        "publishes nothing",
    ));
    cases.push({
        let mut c = meta(
            "short sha",
            t,
            "push",
            "refs/heads/main",
            &[],
            "is not 7 to 64 hex digits",
        );
        c.args[7] = "abc".into();
        c
    });
    cases.push({
        let mut c = meta(
            "non-hex sha",
            t,
            "push",
            "refs/heads/main",
            &[],
            "is not 7 to 64 hex digits",
        );
        c.args[7] = "g".repeat(40);
        c
    });

    // Manual (workflow_dispatch) tag names.
    let long = "a".repeat(129);
    for (name, tag, mention) in [
        ("dispatch tag latest", "latest", "reserved"),
        ("dispatch tag with a path", "../x", "not a valid image tag"),
        (
            "dispatch tag starting with a dot",
            ".hidden",
            "not a valid image tag",
        ),
        (
            "dispatch tag starting with a dash",
            "-x",
            "not a valid image tag",
        ),
        (
            "dispatch tag with a space",
            "with space",
            "not a valid image tag",
        ),
        (
            "dispatch tag of 129 characters",
            long.as_str(),
            "not a valid image tag",
        ),
        (
            "dispatch tag with a colon",
            "tag:colon",
            "not a valid image tag",
        ),
        (
            "dispatch tag with a non-ASCII letter",
            "t\u{e1}g",
            "not a valid image tag",
        ),
        ("dispatch tag v1.2.3", "v1.2.3", "looks like a version"),
        ("dispatch tag 1.2.3", "1.2.3", "looks like a version"),
    ] {
        cases.push(meta(
            name,
            t,
            "workflow_dispatch",
            "refs/heads/main",
            &["--tag-name", tag],
            mention,
        ));
    }
    cases.push(
        meta(
            "INPUT_TAG_NAME with a path",
            t,
            "workflow_dispatch",
            "refs/heads/main",
            &[],
            "not a valid image tag",
        )
        .env("INPUT_TAG_NAME", "../x"),
    );

    // Platform strings.
    for (name, platforms, mention) in [
        (
            "unsupported platform",
            "linux/s390x",
            "unsupported platform",
        ),
        (
            "platform with a variant",
            "linux/arm64/v8",
            "unsupported platform",
        ),
        (
            "platform without an architecture",
            "linux",
            "unsupported platform",
        ),
        (
            "empty entry in a platform list",
            "linux/amd64,,linux/arm64",
            "empty entry",
        ),
        (
            "platform listed twice",
            "linux/amd64,linux/amd64",
            "listed twice",
        ),
    ] {
        cases.push(meta(
            name,
            t,
            "push",
            "refs/heads/main",
            &["--platforms", platforms],
            mention,
        ));
    }
    cases.push(
        meta(
            "INPUT_PLATFORMS unsupported",
            t,
            "workflow_dispatch",
            "refs/heads/main",
            &[],
            "unsupported platform",
        )
        .env("INPUT_PLATFORMS", "linux/mips"),
    );
    cases.push(case(
        "push of an unsupported platform",
        &[
            "image",
            "push",
            "--platform",
            "windows/amd64",
            "--to",
            t,
            "--digest-dir",
            d,
        ],
        "unsupported platform",
    ));
    cases.push(case(
        "manifest of an unsupported platform",
        &[
            "image",
            "manifest",
            "--tag",
            "latest",
            "--platforms",
            "linux/riscv64",
            "--to",
            t,
            "--digest-dir",
            d,
        ],
        "unsupported platform",
    ));
    cases.push(case(
        "manifest of no platform",
        &[
            "image",
            "manifest",
            "--tag",
            "latest",
            "--platforms",
            "",
            "--to",
            t,
            "--digest-dir",
            d,
        ],
        "no platform",
    ));

    // Image references, for meta and for the stages that write.
    let port = proxy.socket_addr().port();
    for (name, reference, mention) in [
        (
            "uppercase repository",
            format!("127.0.0.1:{port}/Team/App"),
            "must be lowercase",
        ),
        ("target with a tag", format!("{t}:latest"), "without a tag"),
        (
            "target with a digest",
            format!("{t}@sha256:{}", "a".repeat(64)),
            "not a digest reference",
        ),
        (
            "target with a scheme",
            format!("https://{t}"),
            "drop the https://",
        ),
        (
            "target with a bad port",
            "127.0.0.1:99999/team/app".to_owned(),
            "is not a port number",
        ),
        (
            "target with an empty path component",
            format!("127.0.0.1:{port}//app"),
            "path component",
        ),
        (
            "target with trailing whitespace",
            format!("{t} "),
            "whitespace",
        ),
    ] {
        cases.push(meta(
            &format!("meta: {name}"),
            &reference,
            "push",
            "refs/heads/main",
            &[],
            mention,
        ));
        cases.push(case(
            &format!("push: {name}"),
            &[
                "image",
                "push",
                "--platform",
                "linux/amd64",
                "--to",
                &reference,
                "--digest-dir",
                d,
            ],
            mention,
        ));
    }

    // Tags given to the manifest stage.
    for (name, tag) in [
        ("manifest tag with a space", "bad tag"),
        ("manifest tag starting with a dot", ".x"),
        ("manifest tag of 129 characters", long.as_str()),
    ] {
        cases.push(case(
            name,
            &[
                "image",
                "manifest",
                "--tag",
                tag,
                "--to",
                t,
                "--platforms",
                "linux/amd64,linux/arm64",
                "--digest-dir",
            ],
            "invalid tag",
        ));
        cases
            .last_mut()
            .unwrap()
            .args
            .push(good_digests.display().to_string());
    }

    // Digest files: a directory per case, holding a good arm64 record and a broken amd64 one (or as said).
    let amd64 = good[0]["digest"].as_str().unwrap().to_owned();
    let hex = amd64.trim_start_matches("sha256:").to_owned();
    let good_text = |i: usize| serde_json::to_string_pretty(&good[i]).unwrap();
    let with_digest = |digest: &str| record("amd64", digest).to_string();
    let digest_cases: Vec<(&str, Option<String>, &str)> = vec![
        ("empty digest file", Some(String::new()), "is not valid"),
        (
            "truncated digest file",
            Some(good_text(0)[..40].to_owned()),
            "is not valid",
        ),
        (
            "sha512 digest",
            Some(with_digest(&format!("sha512:{hex}{hex}"))),
            "not a sha256 digest",
        ),
        (
            "short digest",
            Some(with_digest(&format!("sha256:{}", &hex[..12]))),
            "not a sha256 digest",
        ),
        (
            "digest of 65 hex digits",
            Some(with_digest(&format!("sha256:{hex}0"))),
            "not a sha256 digest",
        ),
        (
            "uppercase digest",
            Some(with_digest(&amd64.to_uppercase())),
            "not a sha256 digest",
        ),
        (
            "digest ending in CRLF",
            Some(with_digest(&format!("{amd64}\r\n"))),
            "not a sha256 digest",
        ),
        (
            "digest with leading whitespace",
            Some(with_digest(&format!(" {amd64}"))),
            "not a sha256 digest",
        ),
        (
            "digest with a space inside",
            Some(with_digest(&format!("sha256: {hex}"))),
            "not a sha256 digest",
        ),
        (
            "plain-text digest with CRLF",
            Some(format!("{amd64}\r\n")),
            "is not valid",
        ),
        (
            "digest file of the other platform",
            Some(good_text(1)),
            "says it is for linux/arm64",
        ),
        (
            "OCI media type",
            Some(
                serde_json::json!({
                    "digest": amd64, "size": 420,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "platform": {"os": "linux", "architecture": "amd64"},
                })
                .to_string(),
            ),
            "loses HEALTHCHECK",
        ),
        (
            "size 0",
            Some({
                let mut v = good[0].clone();
                v["size"] = 0.into();
                v.to_string()
            }),
            "gives size 0",
        ),
        (
            "missing amd64 digest file",
            None,
            "no digest for linux/amd64",
        ),
        (
            "digest file naming an image the registry lacks",
            Some(with_digest(&format!("sha256:{}", "0".repeat(64)))),
            "(no tag was moved)",
        ),
        (
            "digest file naming the other platform's image",
            Some({
                let mut v = good[1].clone();
                v["platform"]["architecture"] = "amd64".into();
                v.to_string()
            }),
            "is built for linux/arm64",
        ),
    ];
    for (i, (name, amd64_text, mention)) in digest_cases.into_iter().enumerate() {
        let case_dir = dir.join(format!("digest-case-{i}"));
        std::fs::create_dir_all(&case_dir).unwrap();
        std::fs::write(case_dir.join("linux-arm64"), good_text(1)).unwrap();
        if let Some(text) = amd64_text {
            std::fs::write(case_dir.join("linux-amd64"), text).unwrap();
        }
        let mut c = case(
            name,
            &[
                "image",
                "manifest",
                "--tag",
                "latest",
                "--to",
                t,
                "--platforms",
                "linux/amd64,linux/arm64",
                "--digest-dir",
            ],
            mention,
        );
        c.args.push(case_dir.display().to_string());
        cases.push(c);
    }
    let mut c = case(
        "missing digest directory",
        &[
            "image",
            "manifest",
            "--tag",
            "latest",
            "--to",
            t,
            "--platforms",
            "linux/amd64,linux/arm64",
            "--digest-dir",
        ],
        "does not exist",
    );
    c.args.push(dir.join("no-such-dir").display().to_string());
    cases.push(c);

    // Auth files (podman's REGISTRY_AUTH_FILE), for a push into the proxied registry.
    let host = proxy.address();
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let auth_cases: Vec<(&str, String, &str)> = vec![
        (
            "auth file that is not JSON",
            "{\"auths\": {".to_owned(),
            "bad JSON",
        ),
        (
            "auth file with trailing garbage",
            "{\"auths\": {}} x".to_owned(),
            "bad JSON",
        ),
        (
            "auth entry that is not base64",
            serde_json::json!({"auths": {host.clone(): {"auth": "%%%not-base64%%%"}}}).to_string(),
            "not valid base64",
        ),
        (
            "auth entry without a colon",
            serde_json::json!({"auths": {host.clone(): {"auth": b64("userpassword")}}}).to_string(),
            "user:password",
        ),
        (
            "auth entry as a bare string",
            serde_json::json!({"auths": {host.clone(): b64("user:password")}}).to_string(),
            "wrong type or shape",
        ),
        (
            "credential helper with a path",
            serde_json::json!({"credHelpers": {host.clone(): "../../bin/sh"}}).to_string(),
            "not a plain name",
        ),
        (
            "credsStore with a path",
            serde_json::json!({"credsStore": "/tmp/evil"}).to_string(),
            "not a plain name",
        ),
    ];
    for (i, (name, text, mention)) in auth_cases.into_iter().enumerate() {
        let file = dir.join(format!("auth-{i}.json"));
        std::fs::write(&file, text).unwrap();
        cases.push(
            case(
                name,
                &[
                    "image",
                    "push",
                    "--platform",
                    "linux/amd64",
                    "--to",
                    t,
                    "--digest-dir",
                    d,
                ],
                mention,
            )
            .env("REGISTRY_AUTH_FILE", file.display().to_string()),
        );
    }

    // A digest directory that cannot be one: found out before anything is pushed.
    let file = dir.join("a-file");
    std::fs::write(&file, "").unwrap();
    // (Into a repository that lacks the image, or the push would have nothing to write anyway.)
    let fresh = proxy.reference("team/fresh");
    let mut c = case(
        "digest directory that is a file",
        &[
            "image",
            "push",
            "--platform",
            "linux/amd64",
            "--to",
            &fresh,
            "--digest-dir",
        ],
        "a-file",
    );
    c.args.push(file.display().to_string());
    cases.push(c);

    // Configuration values and flags.
    cases.push(
        case(
            "XTASK_PRUNE_BACKEND garbage",
            &["image", "prune", "--yes", "--to", t],
            "XTASK_PRUNE_BACKEND",
        )
        .env("XTASK_PRUNE_BACKEND", "garbage"),
    );
    cases.push(
        meta(
            "INPUT_SKIP_PUSH not a boolean",
            t,
            "workflow_dispatch",
            "refs/heads/main",
            &[],
            "INPUT_SKIP_PUSH",
        )
        .env("INPUT_SKIP_PUSH", "maybe"),
    );
    cases.push(case(
        "build argument without a value",
        &["image", "build", "--dry-run", "--build-arg", "NOEQUALS"],
        "must be KEY=VALUE",
    ));
    cases.push(case(
        "unknown flag",
        &["image", "push", "--bogus"],
        "unexpected flag",
    ));
    cases.push(case(
        "release --keep without --local",
        &["image", "release", "--keep", "--to", t],
        "--keep only applies to --local",
    ));
    cases.push(case(
        "release --local with --to",
        &["image", "release", "--local", "--to", t],
        "--local publishes only into the throwaway registry",
    ));
    cases.push(case(
        "release of a version that is not vX.Y.Z",
        &["image", "release", "--version", "1.2", "--to", t],
        "is not a release version",
    ));

    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let mark = proxy.mark();
    let mut failures = Vec::new();
    for case in &cases {
        let before = proxy.mark();
        let mut xtask = Xtask::new().args(&case.args).target_dir(dir);
        for (name, value) in &case.env {
            xtask = xtask.env(name, value);
        }
        let run = xtask.run();
        let writes: Vec<String> = proxy
            .log_since(before)
            .into_iter()
            .filter(|e| e.is_write())
            .map(|e| format!("{} {}", e.method, e.path))
            .collect();
        let error = run
            .stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or("");
        if run.code == 0
            || !run.stderr.contains(case.mention.as_str())
            || !writes.is_empty()
            || error.is_empty()
        {
            failures.push(format!(
                "{}: exit {}, writes {writes:?}, expected a message with {:?}\n  args {:?}\n{}",
                case.name, run.code, case.mention, case.args, run.stderr
            ));
        }
    }
    let writes: Vec<_> = proxy
        .log_since(mark)
        .into_iter()
        .filter(|e| e.is_write())
        .collect();
    eprintln!(
        "{} bad inputs: {} handled as required; {} requests reached the registry, {} of them writes",
        cases.len(),
        cases.len() - failures.len(),
        proxy.log_since(mark).len(),
        writes.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(writes.is_empty(), "{writes:?}");

    // Control: the good digest files through the same proxy publish (and write).
    Xtask::new()
        .args(["image", "manifest", "--tag", "latest", "--to", t])
        .args(["--platforms", "linux/amd64,linux/arm64", "--digest-dir"])
        .args([&good_digests])
        .run()
        .success();
    assert!(!proxy.log_since(mark).iter().all(|e| !e.is_write()));
    for image in &images {
        assert_eq!(registry.skopeo_raw(REPO, &image.digest), image.manifest);
    }
}
