//! Reads .github/workflows/build-images.yml and checks what GitHub cannot be asked here: the triggers, concurrency,
//! permissions, job order and matrix, the pinning of actions, that secrets only reach steps through `env:`, and that
//! every `cargo xtask …` line in it is accepted by the xtask's own argument parser, with its `${{ … }}` values
//! taken from a real `cargo xtask image meta` run, so the workflow and the CLI cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_norway::{Mapping, Value};

use crate::support::{root, words, workflow, workflow_text};

// The grammar itself, compiled into this test: parsing is all it is used for, so the checks need no special mode
// in the binary.
#[path = "../../src/flags.rs"]
pub(crate) mod flags;

fn get<'a>(value: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(value, |v, key| {
        v.get(key)
            .unwrap_or_else(|| panic!("{path}: no `{key}` in {v:?}"))
    })
}

fn str_of<'a>(value: &'a Value, path: &str) -> &'a str {
    get(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string"))
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_mapping()
        .map(|m| m.keys().map(|k| k.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn jobs(wf: &Value) -> &Mapping {
    get(wf, "jobs").as_mapping().unwrap()
}

fn steps(job: &Value) -> &[Value] {
    get(job, "steps").as_sequence().unwrap()
}

#[test]
fn triggers() {
    let wf = workflow();
    let on = get(&wf, "on");
    assert_eq!(keys(on), set(&["push", "workflow_dispatch"]));
    assert_eq!(
        get(on, "push.branches"),
        &serde_norway::from_str::<Value>("[main]").unwrap()
    );
    assert_eq!(
        get(on, "push.tags"),
        &serde_norway::from_str::<Value>("['v*']").unwrap()
    );
    let inputs = get(on, "workflow_dispatch.inputs");
    assert_eq!(keys(inputs), set(&["tag_name", "platforms", "skip_push"]));
    assert_eq!(str_of(inputs, "tag_name.type"), "string");
    assert_eq!(str_of(inputs, "platforms.type"), "string");
    assert_eq!(str_of(inputs, "skip_push.type"), "boolean");
    assert_eq!(get(inputs, "skip_push.default").as_bool(), Some(false));
}

#[test]
fn concurrency_and_permissions() {
    let wf = workflow();
    // No workflow-level group: its cancel-in-progress would cancel a run's publish job with the rest of it.
    assert!(
        wf.get("concurrency").is_none(),
        "a workflow-level concurrency group"
    );
    // A newer run of the same ref cancels the older one's planning and builds, each platform in its own group
    // (one group for the matrix would have its jobs cancel each other).
    let concurrency = |job: &str| get(&jobs(&wf)[job], "concurrency").clone();
    let cancelling = |group: &str| -> Value {
        serde_norway::from_str(&format!("{{group: '{group}', cancel-in-progress: true}}")).unwrap()
    };
    assert_eq!(
        concurrency("prepare"),
        cancelling("build-images-plan-${{ github.ref }}")
    );
    assert_eq!(
        concurrency("build"),
        cancelling("build-images-build-${{ github.ref }}-${{ matrix.platform }}")
    );
    // Publishing: one repository-wide group (no ref in its name), queued, never cancelled.
    let publish: Value =
        serde_norway::from_str("{group: build-images-publish, queue: max}").unwrap();
    assert_eq!(concurrency("manifest"), publish);

    // contents: read for everything, packages: write where GHCR is written, and the attestations' id-token and
    // attestations: write on the job that attests only.
    let read_only: Value = serde_norway::from_str("contents: read").unwrap();
    let publishing: Value = serde_norway::from_str("{contents: read, packages: write}").unwrap();
    let attesting: Value = serde_norway::from_str(
        "{contents: read, packages: write, id-token: write, attestations: write}",
    )
    .unwrap();
    assert_eq!(get(&wf, "permissions"), &read_only);
    for (name, job) in jobs(&wf) {
        let name = name.as_str().unwrap();
        let want = match name {
            "prepare" => None,
            "build" => Some(&publishing),
            "manifest" => Some(&attesting),
            other => panic!("unexpected job {other}"),
        };
        assert_eq!(job.get("permissions"), want, "permissions of job {name}");
    }
}

#[test]
fn jobs_order_and_matrix() {
    let wf = workflow();
    let jobs = jobs(&wf);
    let names: Vec<&str> = jobs.keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(names, ["prepare", "build", "manifest"]);
    let needs = |job: &str| -> BTreeSet<String> {
        match jobs[job].get("needs") {
            None => BTreeSet::new(),
            Some(Value::String(one)) => set(&[one]),
            Some(list) => list
                .as_sequence()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect(),
        }
    };
    assert!(needs("prepare").is_empty());
    assert_eq!(needs("build"), set(&["prepare"]));
    assert_eq!(needs("manifest"), set(&["prepare", "build"]));

    let build = &jobs["build"];
    assert_eq!(get(build, "strategy.fail-fast").as_bool(), Some(false));
    assert_eq!(
        str_of(build, "strategy.matrix.include"),
        "${{ fromJSON(needs.prepare.outputs.platforms) }}"
    );
    // The runner comes from the plan (Cargo.toml's runners table), never from a second list here.
    assert_eq!(str_of(build, "runs-on"), "${{ matrix.runner }}");
    for job in ["prepare", "manifest"] {
        assert_eq!(str_of(&jobs[job], "runs-on"), "ubuntu-24.04", "{job}");
    }

    // Nothing is published unless pushing is on; skip_push still builds and exports.
    assert_eq!(
        str_of(&jobs["manifest"], "if"),
        "needs.prepare.outputs.skip_push == 'false'"
    );
    for step in steps(build) {
        let is_push = step
            .get("run")
            .and_then(Value::as_str)
            .is_some_and(|r| r.contains("image push"))
            || step
                .get("uses")
                .and_then(Value::as_str)
                .is_some_and(|u| u.starts_with("actions/upload-artifact@"));
        let gated = step.get("if").and_then(Value::as_str)
            == Some("needs.prepare.outputs.skip_push == 'false'");
        assert_eq!(is_push, gated, "{step:?}");
        if step
            .get("run")
            .and_then(Value::as_str)
            .is_some_and(|r| r.contains("image build"))
        {
            assert!(step.get("if").is_none(), "the build always runs: {step:?}");
        }
    }
}

#[test]
fn actions_are_pinned_and_checkouts_keep_no_credentials() {
    let text = workflow_text();
    let pinned: BTreeMap<&str, (&str, &str)> = [
        (
            "actions/checkout",
            ("11bd71901bbe5b1630ceea73d27597364c9af683", "v4.2.2"),
        ),
        (
            "actions/cache",
            ("5a3ec84eff668545956fd18022155c47e93e2684", "v4.2.3"),
        ),
        (
            "actions/upload-artifact",
            ("ea165f8d65b6e75b540449e92b4886f43607fa02", "v4.6.2"),
        ),
        (
            "actions/download-artifact",
            ("d3f86a106a0bac45b974a628896c90dbdf5c8093", "v4.3.0"),
        ),
        (
            "actions/attest-build-provenance",
            ("a2bbfa25375fe432b6a289bc6b6cd05ecd0c4c32", "v4.1.0"),
        ),
        (
            "actions/attest-sbom",
            ("c604332985a26aa8cf1bdc465b92731239ec6b9e", "v4.1.0"),
        ),
        (
            "docker/login-action",
            ("4907a6ddec9925e35a0a9e82d7399ccc52663121", "v4.1.0"),
        ),
    ]
    .into();
    let mut seen = BTreeSet::new();
    for line in text.lines() {
        let Some(uses) = line
            .trim_start()
            .trim_start_matches("- ")
            .strip_prefix("uses: ")
        else {
            continue;
        };
        let (action, rest) = uses.split_once('@').expect("uses: owner/repo@sha");
        let (sha, comment) = rest.split_once(" # ").expect("a `# vX.Y.Z` comment");
        let (want_sha, want_version) = pinned
            .get(action)
            .unwrap_or_else(|| panic!("{action} is not a reviewed action"));
        assert_eq!((sha, comment), (*want_sha, *want_version), "{line}");
        assert!(sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()));
        seen.insert(action);
    }
    assert_eq!(seen.len(), pinned.len(), "every reviewed action is used");

    let wf = workflow();
    for (name, job) in jobs(&wf) {
        let steps = steps(job);
        let checkout = steps
            .iter()
            .position(|s| {
                s.get("uses")
                    .and_then(Value::as_str)
                    .is_some_and(|u| u.starts_with("actions/checkout@"))
            })
            .unwrap_or_else(|| panic!("{name:?} checks out"));
        assert_eq!(
            get(&steps[checkout], "with.persist-credentials").as_bool(),
            Some(false),
            "{name:?}"
        );
        // The xtask build is cached in every job, keyed on Cargo.lock and the runner's architecture.
        let cache = steps
            .iter()
            .find(|s| {
                s.get("uses")
                    .and_then(Value::as_str)
                    .is_some_and(|u| u.starts_with("actions/cache@"))
            })
            .unwrap_or_else(|| panic!("{name:?} caches the xtask build"));
        let key = str_of(cache, "with.key");
        assert!(
            key.contains("hashFiles('Cargo.lock')") && key.contains("runner.arch"),
            "{key}"
        );
        assert!(str_of(cache, "with.path").contains("target/debug"));
    }
}

#[test]
fn secrets_only_reach_steps_as_env() {
    let wf = workflow();
    assert!(
        !format!("{:?}", wf.get("env")).contains("secrets."),
        "no workflow-level secrets"
    );
    for (name, job) in jobs(&wf) {
        assert!(
            !format!("{:?}", job.get("env")).contains("secrets."),
            "no job-level secrets in {name:?}"
        );
        for step in steps(job) {
            if let Some(run) = step.get("run").and_then(Value::as_str) {
                // No expression at all inside a script: values arrive as env, so nothing can be injected.
                assert!(!run.contains("${{"), "expression inside run: {run}");
            }
            if let Some(with) = step.get("with") {
                // The one exception: the login for the attestations' push takes GitHub's own token as its
                // documented `password` input (an action gets its inputs as INPUT_* variables, like env:).
                let mut with = with.clone();
                let uses = step.get("uses").and_then(Value::as_str).unwrap_or("");
                if uses.starts_with("docker/login-action@") {
                    assert_eq!(
                        with["password"].as_str(),
                        Some("${{ secrets.GITHUB_TOKEN }}")
                    );
                    with.as_mapping_mut().unwrap().remove("password");
                }
                assert!(
                    !format!("{with:?}").contains("secrets."),
                    "secret in with: {step:?}"
                );
            }
        }
    }
    let text = workflow_text();
    assert!(!text.contains("toJSON(secrets"), "no bulk secrets");
    assert!(!text.contains("secrets: inherit"));
}

/// The step outputs of a real `image meta` run for a push to main with pushing on (credentials faked by name).
fn meta_outputs(dir: &Path) -> BTreeMap<String, String> {
    let output = dir.join("github_output");
    std::fs::write(&output, "").unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["image", "meta"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .env("CARGO", std::env::var_os("CARGO").unwrap_or("cargo".into()))
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_EVENT_NAME", "push")
        .env("GITHUB_REF", "refs/heads/main")
        .env("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567")
        .env("GITHUB_OUTPUT", &output)
        .env("GITHUB_STEP_SUMMARY", dir.join("summary"))
        .env("GITHUB_ACTOR", "octocat")
        .env("GITHUB_TOKEN", "x")
        .env("DOCKERHUB_USERNAME", "x")
        .env("DOCKERHUB_TOKEN", "x")
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "image meta failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(&output).unwrap();
    text.lines()
        .map(|line| {
            let (k, v) = line
                .split_once('=')
                .expect("single-line outputs from image meta");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Resolves one `${{ … }}` value the way GitHub would for this run, from meta's outputs and one matrix entry.
fn resolve(
    value: &str,
    meta: &BTreeMap<String, String>,
    matrix: &BTreeMap<String, String>,
) -> Option<String> {
    let expr = value.strip_prefix("${{ ")?.strip_suffix(" }}")?;
    if let Some(name) = expr.strip_prefix("needs.prepare.outputs.") {
        return Some(meta.get(name).cloned().unwrap_or_else(|| {
            panic!(
                "the workflow reads needs.prepare.outputs.{name}, which image meta does not write"
            )
        }));
    }
    if let Some(key) = expr.strip_prefix("matrix.") {
        return Some(
            matrix
                .get(key)
                .unwrap_or_else(|| panic!("matrix.{key} is not in image meta's matrix"))
                .clone(),
        );
    }
    if let Some(name) = expr.strip_prefix("inputs.") {
        return Some(match name {
            "skip_push" => "false".into(),
            _ => String::new(),
        });
    }
    expr.starts_with("secrets.").then(|| "secret".into())
}

#[test]
fn every_xtask_command_parses_with_the_values_github_would_give() {
    let dir = std::env::temp_dir().join(format!("xtask-workflow-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let meta = meta_outputs(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    let matrix: Vec<BTreeMap<String, String>> = serde_json::from_str(&meta["platforms"]).unwrap();
    assert_eq!(matrix.len(), 2, "{matrix:?}");

    let wf = workflow();
    // Every output prepare passes on is one image meta writes, under the same name.
    let outputs = get(&jobs(&wf)["prepare"], "outputs");
    for (name, value) in outputs.as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        assert_eq!(
            value.as_str(),
            Some(format!("${{{{ steps.meta.outputs.{name} }}}}").as_str())
        );
        assert!(meta.contains_key(name), "image meta writes no {name}");
    }
    for want in [
        "tag",
        "version",
        "is_release",
        "skip_push",
        "prune_previous",
        "platforms",
    ] {
        assert!(keys(outputs).contains(want), "prepare outputs {want}");
    }

    let mut commands = Vec::new();
    for (job_name, job) in jobs(&wf) {
        for entry in &matrix {
            for step in steps(job) {
                let Some(run) = step.get("run").and_then(Value::as_str) else {
                    continue;
                };
                let mut env = BTreeMap::new();
                if let Some(step_env) = step.get("env").and_then(Value::as_mapping) {
                    for (k, v) in step_env {
                        let v = v
                            .as_str()
                            .unwrap_or_else(|| panic!("{k:?} is not a string"));
                        let resolved = resolve(v, &meta, entry).unwrap_or_else(|| {
                            assert!(!v.contains("${{"), "unknown expression {v}");
                            v.to_owned()
                        });
                        env.insert(k.as_str().unwrap().to_owned(), resolved);
                    }
                }
                let argv = words(run, &env);
                // `exec`: the runner signals the step's shell on a cancel, so the shell must become the xtask
                // (cargo run replaces itself with the binary) for the signal to reach it.
                assert_eq!(
                    argv[..3],
                    ["exec", "cargo", "xtask"],
                    "every step execs one cargo xtask call: {run}"
                );
                let args: Vec<std::ffi::OsString> = argv[3..].iter().map(Into::into).collect();
                if let Err(err) = flags::parse(args.clone()) {
                    panic!(
                        "job {job_name:?}: `{}` is refused by the xtask: {err}",
                        argv.join(" ")
                    );
                }
                commands.push(argv[3..].join(" "));
            }
        }
    }
    // The pipeline's stages, in order, with the values of a push to main on the first platform.
    commands.dedup();
    assert!(commands.contains(&"image meta".to_owned()), "{commands:#?}");
    // The build gets the labels meta decided, as meta wrote them.
    let build = format!(
        "image build --platform linux/arm64 --cache-repo ghcr.io/taipei-commuter/mcp-taipei-metro-month-price-cache --labels {}",
        meta["labels"]
    );
    assert!(commands.contains(&build), "{build}\nin {commands:#?}");
    assert!(commands
        .iter()
        .any(|c| c == "image push --platform linux/amd64 --digest-dir target/digests"));
    assert!(commands.iter().any(|c| c
        == "image manifest --digest-dir target/digests --tag latest --floating-tags  --platforms linux/amd64,linux/arm64"));
    // The digest directory is the same in push, the artifact upload and download, and manifest.
    let text = workflow_text();
    assert!(text.contains("path: target/digests/\n") && text.contains("path: target/digests\n"));
}

/// The attestations: made in the manifest job after the tag moved, of the digests `image manifest` published (the
/// list, each platform's image with the SBOM its build job uploaded), pushed to the first target, whose registry
/// the login step names; the first target is GHCR (GITHUB_TOKEN logs in there).
#[test]
fn attestations_are_made_of_what_was_published() {
    let wf = workflow();
    let steps = get(&jobs(&wf)["manifest"], "steps")
        .as_sequence()
        .unwrap()
        .clone();
    let uses = |step: &Value| {
        step.get("uses")
            .and_then(Value::as_str)
            .unwrap_or("")
            .split('@')
            .next()
            .unwrap()
            .to_owned()
    };
    let manifest_at = steps
        .iter()
        .position(|s| s.get("id").and_then(Value::as_str) == Some("manifest"))
        .unwrap();
    let attesting: Vec<&Value> = steps[manifest_at + 1..].iter().collect();
    let actions: Vec<String> = attesting.iter().map(|s| uses(s)).collect();
    assert_eq!(
        actions,
        [
            "docker/login-action",
            "actions/attest-build-provenance",
            "actions/attest-sbom",
            "actions/attest-sbom"
        ]
    );
    let with = |step: &Value, key: &str| match &step["with"][key] {
        Value::Bool(b) => b.to_string(),
        other => other.as_str().unwrap_or_default().to_owned(),
    };
    assert_eq!(
        with(attesting[0], "registry"),
        "${{ steps.manifest.outputs.registry }}"
    );
    assert_eq!(
        with(attesting[0], "password"),
        "${{ secrets.GITHUB_TOKEN }}"
    );
    for step in &attesting[1..] {
        assert_eq!(
            with(step, "subject-name"),
            "${{ steps.manifest.outputs.repository }}"
        );
        assert_eq!(with(step, "push-to-registry"), "true");
        assert!(
            step["if"]
                .as_str()
                .unwrap()
                .starts_with("steps.manifest.outputs.tag_moved == 'true'"),
            "{step:?}"
        );
    }
    assert_eq!(
        with(attesting[1], "subject-digest"),
        "${{ steps.manifest.outputs.digest }}"
    );
    for (step, platform) in attesting[2..].iter().zip(["linux-amd64", "linux-arm64"]) {
        let output = platform.replace('-', "_");
        assert_eq!(
            with(step, "subject-digest"),
            format!("${{{{ steps.manifest.outputs.digest_{output} }}}}")
        );
        assert_eq!(
            with(step, "sbom-path"),
            format!("target/image/{platform}.cdx.json")
        );
    }
    let config = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let first_target = config
        .split("targets = [")
        .nth(1)
        .and_then(|t| t.split('"').nth(1))
        .unwrap();
    assert!(first_target.starts_with("ghcr.io/"), "{first_target}");
}
