//! Runs the workflow's jobs here, as GitHub would run them, straight from the YAML: jobs in `needs` order, job and
//! step `if:`s, the matrix from the prepare job's output, each step's `env:` with its `${{ … }}` values, the
//! environment a runner sets (GITHUB_EVENT_NAME, GITHUB_REF, GITHUB_SHA, GITHUB_OUTPUT, GITHUB_STEP_SUMMARY, …),
//! secrets as environment variables, and the artifact hand-off done by copying directories.
//!
//! What differs from GitHub, on purpose: every job runs in this checkout (the directories the artifact steps use are
//! emptied before each job, as on a fresh runner); checkout and cache steps do nothing; and the registries are
//! swapped for local ones by appending `--to` to the stages that take it (plus `--build-arg`s for the local base
//! images), since GHCR and Docker Hub cannot be reached from here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_norway::Value;

use super::{parse_outputs, words};

/// The event that starts the run.
#[derive(Clone, Debug)]
pub struct Event {
    /// `push` or `workflow_dispatch`.
    pub name: String,
    pub git_ref: String,
    pub sha: String,
    /// workflow_dispatch inputs as GitHub renders them in expressions (booleans as `true` / `false`).
    pub inputs: BTreeMap<String, String>,
}

impl Event {
    pub fn push(git_ref: &str, sha: &str) -> Event {
        Event {
            name: "push".into(),
            git_ref: git_ref.into(),
            sha: sha.into(),
            inputs: BTreeMap::new(),
        }
    }

    pub fn dispatch(git_ref: &str, sha: &str, inputs: &[(&str, &str)]) -> Event {
        Event {
            name: "workflow_dispatch".into(),
            git_ref: git_ref.into(),
            sha: sha.into(),
            inputs: inputs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

/// What replaces the outside world.
#[derive(Clone, Debug, Default)]
pub struct Local {
    /// Target repositories (`127.0.0.1:PORT/owner/name`) given to meta, push and manifest as `--to`.
    pub targets: Vec<String>,
    /// `K=V` given to `image build` as `--build-arg` (local base images).
    pub build_args: Vec<String>,
    /// The repository's secrets (`GITHUB_TOKEN` is one on GitHub too).
    pub secrets: BTreeMap<String, String>,
    /// This machine's settings a runner would not need (CONTAINERS_CONF from the test bench).
    pub machine_env: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Success,
    Failed,
    Skipped,
}

/// One `run:` step that ran.
#[derive(Clone, Debug)]
pub struct StepRun {
    pub job: String,
    /// The matrix entry (`linux/arm64`), if any.
    pub entry: Option<String>,
    /// The command as written in the workflow, with its values filled in (without the local additions).
    pub command: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

#[derive(Debug, Default)]
pub struct Outcome {
    /// Per job: the status of each matrix entry (one entry without a matrix).
    pub jobs: BTreeMap<String, Vec<Status>>,
    /// Per job: its `outputs:`.
    pub outputs: BTreeMap<String, BTreeMap<String, String>>,
    pub steps: Vec<StepRun>,
    /// All step summaries, in order.
    pub summary: String,
    /// Per job and matrix entry: its `concurrency:` as evaluated for this run.
    pub concurrency: BTreeMap<String, Vec<Concurrency>>,
    pub attestations: Vec<Attestation>,
}

/// A job's `concurrency:` with its expressions evaluated: what decides, on GitHub, whether two runs' jobs wait for
/// each other, cancel each other, or run side by side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Concurrency {
    pub group: String,
    pub cancel_in_progress: bool,
    /// `queue:` (`max` keeps up to 100 waiting; absent: one waits, older waiting ones are cancelled).
    pub queue: Option<String>,
}

impl Outcome {
    /// `Success` when every entry succeeded, `Skipped` when the job never ran, else `Failed`.
    pub fn job(&self, name: &str) -> Status {
        let entries = &self.jobs[name];
        if entries.iter().all(|s| *s == Status::Skipped) {
            Status::Skipped
        } else if entries.iter().all(|s| *s == Status::Success) {
            Status::Success
        } else {
            Status::Failed
        }
    }

    /// The commands that ran, as `image build --platform linux/amd64`, in order.
    pub fn commands(&self) -> Vec<String> {
        self.steps
            .iter()
            .map(|s| s.command[3..].join(" "))
            .collect()
    }
}

/// The variables a runner or a developer's shell might carry that would leak into the simulated steps.
const SCRUBBED: &[&str] = &[
    "GHCR_USERNAME",
    "GHCR_TOKEN",
    "DOCKERHUB_USERNAME",
    "DOCKERHUB_TOKEN",
    "REGISTRY_USERNAME",
    "REGISTRY_PASSWORD",
    "CI",
];

/// Runs the workflow file at `workflow` for `event`. `xtask` is the built binary that `cargo xtask` runs; `work` a
/// scratch directory for outputs, summaries and artifacts.
pub fn run(workflow: &Path, xtask: &Path, event: &Event, local: &Local, work: &Path) -> Outcome {
    let root = super::root();
    let wf: Value = serde_norway::from_str(&std::fs::read_to_string(workflow).unwrap()).unwrap();
    let jobs = wf["jobs"].as_mapping().unwrap();
    // Each run has its own outputs and artifacts, as each workflow run on GitHub does.
    let work = work.join(format!(
        "run-{}",
        std::fs::read_dir(work).map_or(0, Iterator::count)
    ));
    let artifacts = work.join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let hand_off_dirs = artifact_dirs(&wf, &root);
    let mut outcome = Outcome::default();
    let mut counter = 0;

    for (name, job) in jobs {
        let name = name.as_str().unwrap().to_owned();
        let needs = needs(job);
        for need in &needs {
            assert!(
                outcome.jobs.contains_key(need),
                "job {name} needs {need}, which comes later in the file"
            );
        }
        let mut ctx = Ctx {
            event,
            secrets: &local.secrets,
            needs: needs
                .iter()
                .map(|n| {
                    (
                        n.clone(),
                        outcome.outputs.get(n).cloned().unwrap_or_default(),
                    )
                })
                .collect(),
            matrix: BTreeMap::new(),
            steps: BTreeMap::new(),
            logins: Default::default(),
            attestations: Default::default(),
        };
        // GitHub's implicit success(): a job runs only when every job it needs succeeded, and its `if:` holds.
        let runs = needs.iter().all(|n| outcome.job(n) == Status::Success)
            && job
                .get("if")
                .and_then(Value::as_str)
                .is_none_or(|cond| ctx.condition(cond));
        let entries: Vec<BTreeMap<String, String>> = match job
            .get("strategy")
            .and_then(|s| s.get("matrix"))
            .and_then(|m| m.get("include"))
            .and_then(Value::as_str)
        {
            Some(include) if runs => {
                let json = ctx.expand(include);
                let list: Vec<BTreeMap<String, String>> = serde_json::from_str(&json)
                    .unwrap_or_else(|e| {
                        panic!("matrix of {name} is not a list of objects: {e}: {json}")
                    });
                assert!(!list.is_empty(), "empty matrix for {name}");
                list
            }
            _ => vec![BTreeMap::new()],
        };
        if !runs {
            outcome.jobs.insert(name.clone(), vec![Status::Skipped]);
            continue;
        }

        let mut statuses = Vec::new();
        for entry in entries {
            ctx.matrix = entry.clone();
            ctx.steps.clear();
            ctx.logins.borrow_mut().clear();
            if let Some(concurrency) = job.get("concurrency") {
                let (group, cancel, queue) = match concurrency.as_str() {
                    Some(group) => (group.to_owned(), false, None),
                    None => (
                        scalar(&concurrency["group"]),
                        concurrency
                            .get("cancel-in-progress")
                            .and_then(Value::as_bool)
                            == Some(true),
                        concurrency.get("queue").map(scalar),
                    ),
                };
                outcome
                    .concurrency
                    .entry(name.clone())
                    .or_default()
                    .push(Concurrency {
                        group: ctx.expand(&group),
                        cancel_in_progress: cancel,
                        queue,
                    });
            }
            // A fresh runner: nothing handed over except through artifacts.
            for dir in &hand_off_dirs {
                let _ = std::fs::remove_dir_all(dir);
            }
            let label = entry.get("platform").cloned();
            let mut status = Status::Success;
            for step in job["steps"].as_sequence().unwrap() {
                if let Some(cond) = step.get("if").and_then(Value::as_str) {
                    if !ctx.condition(cond) {
                        continue;
                    }
                }
                if let Some(uses) = step.get("uses").and_then(Value::as_str) {
                    if !ctx.uses(uses, step, &root, &artifacts) {
                        status = Status::Failed;
                        break;
                    }
                    continue;
                }
                let run = step["run"].as_str().expect("a step has uses: or run:");
                let env: BTreeMap<String, String> = step
                    .get("env")
                    .and_then(Value::as_mapping)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.as_str().unwrap().to_owned(), ctx.expand(&scalar(v))))
                            .collect()
                    })
                    .unwrap_or_default();
                let argv = words(run, &env);
                assert_eq!(
                    argv[..3],
                    ["exec", "cargo", "xtask"],
                    "not an exec cargo xtask step: {run}"
                );
                counter += 1;
                let output = work.join(format!("output-{counter}"));
                let summary = work.join(format!("summary-{counter}"));
                std::fs::write(&output, "").unwrap();
                std::fs::write(&summary, "").unwrap();
                let mut cmd = Command::new(xtask);
                cmd.args(&argv[3..])
                    .args(local_args(&argv[3..], local))
                    .current_dir(&root);
                for (key, _) in std::env::vars_os() {
                    let key = key.to_string_lossy().into_owned();
                    if key.starts_with("GITHUB_")
                        || key.starts_with("INPUT_")
                        || key.starts_with("RUNNER_")
                        || SCRUBBED.contains(&key.as_str())
                    {
                        cmd.env_remove(&key);
                    }
                }
                cmd.envs(&local.machine_env)
                    .envs(runner_env(event))
                    .env("GITHUB_OUTPUT", &output)
                    .env("GITHUB_STEP_SUMMARY", &summary)
                    .envs(&env);
                let started = Instant::now();
                let result = cmd.output().unwrap();
                let code = result.status.code().unwrap_or(-1);
                outcome.steps.push(StepRun {
                    job: name.clone(),
                    entry: label.clone(),
                    command: argv,
                    code,
                    stdout: String::from_utf8_lossy(&result.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&result.stderr).into_owned(),
                    took: started.elapsed(),
                });
                outcome
                    .summary
                    .push_str(&std::fs::read_to_string(&summary).unwrap());
                if let Some(id) = step.get("id").and_then(Value::as_str) {
                    let outputs = parse_outputs(&std::fs::read_to_string(&output).unwrap());
                    ctx.steps.insert(id.to_owned(), outputs);
                }
                if code != 0 {
                    status = Status::Failed;
                    break;
                }
            }
            statuses.push(status);
        }
        if let Some(outputs) = job.get("outputs").and_then(Value::as_mapping) {
            let values = outputs
                .iter()
                .map(|(k, v)| (k.as_str().unwrap().to_owned(), ctx.expand(&scalar(v))))
                .collect();
            outcome.outputs.insert(name.clone(), values);
        }
        outcome.attestations.extend(ctx.attestations.take());
        outcome.jobs.insert(name, statuses);
    }
    outcome
}

/// The variables every GitHub runner sets for the run.
fn runner_env(event: &Event) -> Vec<(&'static str, String)> {
    let (ref_type, ref_name) = match event.git_ref.strip_prefix("refs/tags/") {
        Some(tag) => ("tag", tag.to_owned()),
        None => (
            "branch",
            event
                .git_ref
                .strip_prefix("refs/heads/")
                .unwrap_or(&event.git_ref)
                .to_owned(),
        ),
    };
    vec![
        ("CI", "true".into()),
        ("GITHUB_ACTIONS", "true".into()),
        ("GITHUB_EVENT_NAME", event.name.clone()),
        ("GITHUB_REF", event.git_ref.clone()),
        ("GITHUB_REF_TYPE", ref_type.into()),
        ("GITHUB_REF_NAME", ref_name),
        ("GITHUB_SHA", event.sha.clone()),
        ("GITHUB_ACTOR", "octocat".into()),
        (
            "GITHUB_REPOSITORY",
            "taipei-commuter/mcp-taipei-metro-month-price".into(),
        ),
    ]
}

/// The flags that point a stage at the local stand-ins.
fn local_args(args: &[String], local: &Local) -> Vec<String> {
    let stage = args.get(1).map(String::as_str);
    let mut extra = Vec::new();
    match (args.first().map(String::as_str), stage) {
        (Some("image"), Some("meta" | "push" | "manifest")) => {
            for target in &local.targets {
                extra.extend(["--to".to_owned(), target.clone()]);
            }
        }
        (Some("image"), Some("build")) => {
            for arg in &local.build_args {
                extra.extend(["--build-arg".to_owned(), arg.clone()]);
            }
        }
        _ => {}
    }
    extra
}

fn needs(job: &Value) -> Vec<String> {
    match job.get("needs") {
        None => Vec::new(),
        Some(Value::String(one)) => vec![one.clone()],
        Some(list) => list
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect(),
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// The directories the artifact steps upload from or download into (relative to the checkout).
fn artifact_dirs(wf: &Value, root: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for (_, job) in wf["jobs"].as_mapping().unwrap() {
        for step in job["steps"].as_sequence().unwrap() {
            let uses = step.get("uses").and_then(Value::as_str).unwrap_or("");
            if uses.starts_with("actions/upload-artifact@")
                || uses.starts_with("actions/download-artifact@")
            {
                let mut path = step["with"]["path"].as_str().unwrap();
                if path.contains("${{") {
                    // A file named per matrix entry: its directory is what a fresh runner lacks.
                    path = path.rsplit_once('/').map_or("", |(dir, _)| dir);
                }
                assert!(
                    !path.contains("${{") && !path.is_empty(),
                    "artifact directory must be literal"
                );
                let dir = root.join(path.trim_end_matches('/'));
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
    }
    dirs
}

/// The expression contexts of one job entry.
struct Ctx<'a> {
    event: &'a Event,
    secrets: &'a BTreeMap<String, String>,
    needs: BTreeMap<String, BTreeMap<String, String>>,
    matrix: BTreeMap<String, String>,
    steps: BTreeMap<String, BTreeMap<String, String>>,
    /// Registries `docker/login-action` logged in to in this job (its docker config), with the credentials.
    logins: std::cell::RefCell<BTreeMap<String, (String, String)>>,
    /// What the attest actions attested.
    attestations: std::cell::RefCell<Vec<Attestation>>,
}

/// One attestation an attest action made: its kind, subject and where its predicate came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attestation {
    /// `provenance` or `sbom`.
    pub kind: &'static str,
    /// The repository named as the subject (`ghcr.io/owner/app`, no tag).
    pub subject_name: String,
    pub subject_digest: String,
    /// The SBOM's path, for an SBOM attestation.
    pub sbom: Option<PathBuf>,
}

impl Ctx<'_> {
    /// A context path (`needs.prepare.outputs.tag`) or one of the few calls the workflow uses.
    fn eval(&self, expr: &str) -> String {
        let expr = expr.trim();
        if let Some(inner) = expr
            .strip_prefix("fromJSON(")
            .and_then(|e| e.strip_suffix(')'))
        {
            return self.eval(inner);
        }
        if let Some(args) = expr
            .strip_prefix("startsWith(")
            .and_then(|e| e.strip_suffix(')'))
        {
            let (value, prefix) = args.split_once(',').unwrap();
            let prefix = prefix.trim().trim_matches('\'');
            return self.eval(value).starts_with(prefix).to_string();
        }
        if let Some(literal) = expr.strip_prefix('\'').and_then(|e| e.strip_suffix('\'')) {
            return literal.to_owned();
        }
        let parts: Vec<&str> = expr.split('.').collect();
        let missing = || panic!("the simulator cannot evaluate `{expr}`: unknown or missing value");
        match parts.as_slice() {
            ["inputs", name] => self.event.inputs.get(*name).cloned().unwrap_or_default(),
            ["secrets", name] => self.secrets.get(*name).cloned().unwrap_or_default(),
            ["matrix", key] => self.matrix.get(*key).cloned().unwrap_or_else(missing),
            ["needs", job, "outputs", key] => self
                .needs
                .get(*job)
                .and_then(|o| o.get(*key))
                .cloned()
                .unwrap_or_default(),
            ["steps", id, "outputs", key] => self
                .steps
                .get(*id)
                .and_then(|o| o.get(*key))
                .cloned()
                .unwrap_or_default(),
            ["github", "ref"] => self.event.git_ref.clone(),
            ["github", "sha"] => self.event.sha.clone(),
            ["github", "event_name"] => self.event.name.clone(),
            ["github", "actor"] => "octocat".into(),
            ["runner", "os"] => "Linux".into(),
            ["runner", "arch"] => "X64".into(),
            _ => missing(),
        }
    }

    /// Replaces every `${{ … }}` in a value.
    fn expand(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${{") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find("}}").expect("unclosed ${{") + start;
            out.push_str(&self.eval(&rest[start + 3..end]));
            rest = &rest[end + 2..];
        }
        out.push_str(rest);
        out
    }

    /// `a == 'b'` or `a != 'b'`, with or without `${{ }}`.
    fn condition(&self, cond: &str) -> bool {
        let cond = cond.trim();
        let cond = cond
            .strip_prefix("${{")
            .and_then(|c| c.strip_suffix("}}"))
            .unwrap_or(cond);
        if cond.contains("&&") {
            return cond.split("&&").all(|part| self.condition(part));
        }
        if let Some((left, right)) = cond.split_once("==") {
            self.eval(left) == self.eval(right)
        } else if let Some((left, right)) = cond.split_once("!=") {
            self.eval(left) != self.eval(right)
        } else {
            panic!("the simulator cannot evaluate the condition `{cond}`")
        }
    }

    /// The actions the workflow uses; returns false when the step fails.
    fn uses(&self, uses: &str, step: &Value, root: &Path, artifacts: &Path) -> bool {
        let action = uses.split('@').next().unwrap();
        let with = |key: &str| {
            step.get("with")
                .and_then(|w| w.get(key))
                .map(|v| self.expand(&scalar(v)))
        };
        match action {
            // This checkout is the checkout; the cache only makes the xtask build faster.
            "actions/checkout" | "actions/cache" => true,
            "actions/upload-artifact" => {
                let name = with("name").unwrap();
                let mut from = root.join(with("path").unwrap());
                // A single file lands at the artifact's root.
                let files = if from.is_file() {
                    let file = vec![from.clone()];
                    from.pop();
                    file
                } else {
                    list_files(&from)
                };
                if files.is_empty() {
                    // if-no-files-found: error
                    return with("if-no-files-found").as_deref() != Some("error");
                }
                let to = artifacts.join(&name);
                assert!(!to.exists(), "artifact {name} uploaded twice");
                for file in files {
                    copy_into(&from, &file, &to);
                }
                true
            }
            "actions/download-artifact" => {
                let pattern = with("pattern").unwrap();
                let prefix = pattern.strip_suffix('*').expect("a prefix* pattern");
                assert_eq!(with("merge-multiple").as_deref(), Some("true"));
                let to = root.join(with("path").unwrap());
                std::fs::create_dir_all(&to).unwrap();
                for artifact in std::fs::read_dir(artifacts).unwrap() {
                    let artifact = artifact.unwrap().path();
                    if artifact
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(prefix)
                    {
                        for file in list_files(&artifact) {
                            copy_into(&artifact, &file, &to);
                        }
                    }
                }
                true
            }
            // As documented: the registry's credentials go to the job's docker config, where the attest actions'
            // registry client (@sigstore/oci) reads them; all three inputs are required.
            "docker/login-action" => {
                let (Some(registry), Some(user), Some(password)) =
                    (with("registry"), with("username"), with("password"))
                else {
                    return false;
                };
                if [&registry, &user, &password].iter().any(|v| v.is_empty()) {
                    return false;
                }
                self.logins.borrow_mut().insert(registry, (user, password));
                true
            }
            "actions/attest-build-provenance" | "actions/attest-sbom" => {
                let kind = if action.ends_with("sbom") {
                    "sbom"
                } else {
                    "provenance"
                };
                let name = with("subject-name").unwrap_or_default();
                let digest = with("subject-digest").unwrap_or_default();
                let valid_digest = digest.strip_prefix("sha256:").is_some_and(|hex| {
                    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
                });
                // A fully qualified image name without a tag, as push-to-registry requires.
                let last = name.rsplit('/').next().unwrap_or("");
                if !valid_digest
                    || name.matches('/').count() < 2
                    || last.contains(':')
                    || name.contains('@')
                {
                    eprintln!("{action}: subject {name:?} {digest:?} is not NAME + sha256 digest");
                    return false;
                }
                let sbom = with("sbom-path").map(|p| root.join(p));
                let predicate = match (&sbom, kind) {
                    (Some(path), "sbom") => match std::fs::read(path) {
                        Ok(bytes) => {
                            let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                            // actions/attest takes a CycloneDX document by these three fields.
                            let fields = ["bomFormat", "serialNumber", "specVersion"];
                            if doc["bomFormat"] != "CycloneDX" || fields.iter().any(|f| doc[f].as_str().is_none_or(str::is_empty)) {
                                eprintln!("{action}: {} is not a CycloneDX SBOM (bomFormat, serialNumber, specVersion)", path.display());
                                return false;
                            }
                            bytes
                        }
                        Err(err) => {
                            eprintln!("{action}: sbom-path {}: {err}", path.display());
                            return false;
                        }
                    },
                    (None, "sbom") => return false,
                    _ => format!(r#"{{"buildType":"https://actions.github.io/buildtypes/workflow/v1","subject":"{digest}"}}"#).into_bytes(),
                };
                if with("push-to-registry").as_deref() == Some("true") {
                    let registry = name.split('/').next().unwrap().to_owned();
                    let Some(login) = self.logins.borrow().get(&registry).cloned() else {
                        eprintln!("{action}: push-to-registry needs credentials for {registry} in the docker config");
                        return false;
                    };
                    if let Err(err) = push_attestation(&name, &digest, &predicate, &login) {
                        eprintln!("{action}: {err}");
                        return false;
                    }
                }
                self.attestations.borrow_mut().push(Attestation {
                    kind,
                    subject_name: name,
                    subject_digest: digest,
                    sbom,
                });
                true
            }
            other => panic!("the simulator does not know the action {other}"),
        }
    }
}

const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// What the attest actions do with push-to-registry (through @sigstore/oci): the bundle as an OCI artifact manifest
/// whose subject is the attested manifest, and, for a registry without the referrers API (GHCR, Docker Hub,
/// distribution), the referrers index under the tag `sha256-<hex>`, extended with it.
fn push_attestation(
    name: &str,
    digest: &str,
    predicate: &[u8],
    (user, password): &(String, String),
) -> Result<(), String> {
    use base64::Engine as _;
    let (host, repository) = name.split_once('/').unwrap();
    let base = format!("http://{host}/v2/{repository}");
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let subject = agent
        .get(&format!("{base}/manifests/{digest}"))
        .header("authorization", &auth)
        .header("accept", "application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json")
        .call()
        .map_err(|e| e.to_string())?;
    if subject.status() != 200 {
        return Err(format!(
            "the subject {name}@{digest} is not there ({})",
            subject.status()
        ));
    }
    let subject_type = subject.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let subject_size = subject
        .into_body()
        .read_to_vec()
        .map_err(|e| e.to_string())?
        .len();
    let upload = |bytes: &[u8]| -> Result<String, String> {
        let digest = super::registry::sha256(bytes);
        let started = agent
            .post(&format!("{base}/blobs/uploads/"))
            .header("authorization", &auth)
            .send_empty()
            .map_err(|e| e.to_string())?;
        let location = started.headers()["location"].to_str().unwrap().to_owned();
        let url = if location.starts_with('/') {
            format!("http://{host}{location}")
        } else {
            location
        };
        let separator = if url.contains('?') { '&' } else { '?' };
        let done = agent
            .put(&format!("{url}{separator}digest={digest}"))
            .header("authorization", &auth)
            .send(bytes)
            .map_err(|e| e.to_string())?;
        if done.status() != 201 {
            return Err(format!("blob upload answered {}", done.status()));
        }
        Ok(digest)
    };
    let put = |reference: &str, media_type: &str, bytes: &[u8]| -> Result<(), String> {
        let answer = agent
            .put(&format!("{base}/manifests/{reference}"))
            .header("authorization", &auth)
            .header("content-type", media_type)
            .send(bytes)
            .map_err(|e| e.to_string())?;
        if answer.status() != 201 {
            return Err(format!(
                "PUT manifests/{reference} answered {}",
                answer.status()
            ));
        }
        Ok(())
    };
    let bundle = format!(
        r#"{{"mediaType":"{BUNDLE}","dsseEnvelope":{{"payload":"{}"}}}}"#,
        base64::engine::general_purpose::STANDARD.encode(predicate)
    );
    let empty = upload(b"{}")?;
    let layer = upload(bundle.as_bytes())?;
    let artifact = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": BUNDLE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": BUNDLE, "digest": layer, "size": bundle.len()}],
        "subject": {"mediaType": subject_type, "digest": digest, "size": subject_size},
    }))
    .unwrap();
    let artifact_digest = super::registry::sha256(&artifact);
    put(
        &artifact_digest,
        "application/vnd.oci.image.manifest.v1+json",
        &artifact,
    )?;
    let tag = digest.replacen(':', "-", 1);
    let existing = agent
        .get(&format!("{base}/manifests/{tag}"))
        .header("authorization", &auth)
        .header("accept", "application/vnd.oci.image.index.v1+json")
        .call()
        .map_err(|e| e.to_string())?;
    let mut index: serde_json::Value = match existing.status().as_u16() {
        200 => serde_json::from_slice(&existing.into_body().read_to_vec().unwrap())
            .map_err(|e| e.to_string())?,
        404 => {
            serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []})
        }
        status => return Err(format!("GET manifests/{tag} answered {status}")),
    };
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": artifact_digest,
            "size": artifact.len(),
            "artifactType": BUNDLE,
        }));
    put(
        &tag,
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    )
}

fn list_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(list_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn copy_into(base: &Path, file: &Path, to: &Path) {
    let dest = to.join(file.strip_prefix(base).unwrap());
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(file, dest).unwrap();
}
