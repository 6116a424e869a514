//! `cargo xtask bench`: the pipeline's speed and memory, measured side by side in one run on this machine.
//!
//! Each comparison alternates its two sides for N rounds (a shared, noisy machine drifts; alternation spreads the
//! drift over both sides), times every run as a separate process whose output goes to target/bench/logs/, and
//! reports median, min and max per side and the ratio of the medians. The xtask side is its built binary (the one
//! running this benchmark), not `cargo run`: cargo's start-up is reported once, in B6. The results are printed
//! as a table and written as JSON to target/bench/.
//!
//! Builds run in podman storages of their own under target/bench/storage (the user's is only read, to copy the
//! base images once): an empty one per clean build, which is what a CI runner starts with.
//!
//! - B1 clean build vs rebuild after a source-only change (same storage), on a copy of the project whose
//!   src/main.rs gets a new comment before each rebuild; this xtask runs `image build` in the copy (a project is
//!   the checkout the xtask runs in).
//! - B2 the same clean build vs a build on empty storage with `--cache-repo` (a registry filled by an earlier
//!   build), after a source-only change: the CI case, where each push changes the sources.
//! - B3 (`--emulated`) arm64 cross-compiled vs arm64 emulated: the same Containerfile and podman argv, with the
//!   build stage on linux/arm64 (BUILDPLATFORM=linux/arm64 and an arm64 Rust image) under qemu.
//! - B4 push of an image the registry already has: `image push` vs `podman push`; a proxy in front of the
//!   registry counts what each sends.
//! - B5 one list over 2 platforms into 2 repositories: `image manifest` vs `podman manifest create/add/push`.
//! - B6 cold compile of the xtask (empty CARGO_TARGET_DIR), and `--help` of the built binary vs `cargo xtask`.
//! - B7 `image release --local` warm, the image's size, and the xtask's peak memory pushing a 200 MiB layer.
//! - B8 `image release` of a docs-only commit vs one of a source change, in a git clone of the project, into one
//!   registry through the counting proxy: the docs-only release uploads nothing, writes no manifest, moves no tag
//!   and prunes nothing, since its images are the very ones `latest` names.
//! - B9 (only when named) the races test for 100 rounds: tags lost, `latest` not on the newest commit, failed runs.

mod proc;
mod proxy;
mod report;
mod storage;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use xshell::{cmd, Shell};

use crate::config::ImageConfig;
use crate::flags;
use crate::image::build::{self, shell_line};
use crate::image::local_registry::{self, LocalRegistry};
use crate::image::push;
use crate::oci::{media_type, Digest, Platform};
use report::{Bench, Figure, Machine, Side};
use storage::Storage;

const DEFAULT_ROUNDS: u32 = 3;
/// `--help` runs per side and round: one run takes milliseconds, so a round holds several.
const HELP_RUNS_PER_ROUND: u32 = 10;
/// The synthetic layer of B7's memory measure.
const BIG_LAYER_BYTES: u64 = 200 * 1024 * 1024;

/// The root package (the app), compiled beside the xtask in B6.
const APP_PACKAGE: &str = "mcp-taipei-metro-month-price";

/// Where the test bench (`cargo xtask ci`) names its Rust builder, and the name it uses.
const RUST_BUILDER_VAR: &str = "XTASK_RUST_BUILDER";
const DEFAULT_RUST_BUILDER: &str = "localhost/xtask/rust-builder:trixie";
/// B3's Rust image for building on linux/arm64 (made once with mmdebstrap, run under qemu).
const ARM64_BUILDER: &str = "localhost/xtask/bench-rust-builder:trixie-arm64";

/// Variables (and prefixes) `cargo run` sets for the program it runs, which a nested cargo must not inherit.
const CARGO_RUN_VARS: [&str; 6] = [
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_RUSTC_CURRENT_DIR",
];

/// The issue's targets.
const B1_TARGET: f64 = 0.3;
/// The xtask's cold compile against the app's.
const B6_TARGET: f64 = 2.5;
const B2_TARGET: f64 = 0.35;
const B3_TARGET: f64 = 0.05;
const B4_TARGET: f64 = 0.5;
const B5_TARGET: f64 = 0.3;
const B7_SIZE_TARGET_MB: f64 = 15.0;
const B7_MEMORY_TARGET_MB: f64 = 64.0;
/// Rounds of the races test B9 runs (the test's own default is 8).
const B9_ROUNDS: u32 = 100;
const B8_TARGET: f64 = 0.2;

/// The benchmarks to run: B1 … B9 named on the command line (any case, `b4` or `4`), default all but B3 and B9;
/// `--emulated` adds B3.
pub fn selection(which: &[String], emulated: bool) -> anyhow::Result<BTreeSet<u8>> {
    let mut chosen = BTreeSet::new();
    for name in which.iter().flat_map(|w| w.split(',')) {
        let name = name.trim();
        let number = name
            .strip_prefix(['b', 'B'])
            .unwrap_or(name)
            .parse::<u8>()
            .ok()
            .filter(|n| (1..=9).contains(n))
            .ok_or_else(|| {
                crate::exit::invalid(format!(
                    "unknown benchmark {name:?}; name B1 … B9 (B3 needs --emulated to be useful)"
                ))
            })?;
        chosen.insert(number);
    }
    if chosen.is_empty() {
        chosen.extend([1, 2, 4, 5, 6, 7, 8]);
    }
    if emulated {
        chosen.insert(3);
    }
    Ok(chosen)
}

/// One command to run and show: environment additions, argv, and the directory it runs in (default: the root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub env: Vec<(String, String)>,
    pub argv: Vec<String>,
    pub dir: Option<PathBuf>,
}

impl Spec {
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Spec {
        Spec {
            env: Vec::new(),
            argv: argv.into_iter().map(Into::into).collect(),
            dir: None,
        }
    }

    /// Runs in `dir` (the xtask's project is the checkout it runs in).
    pub fn in_dir(mut self, dir: &Path) -> Spec {
        self.dir = Some(dir.to_owned());
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Spec {
        self.env.push((
            key.to_owned(),
            value.as_ref().to_string_lossy().into_owned(),
        ));
        self
    }

    /// As a shell line, with paths below `root` shown relative to it.
    pub fn shown(&self, root: &Path) -> String {
        let words: Vec<String> = self
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .chain(self.argv.iter().cloned())
            .collect();
        let prefix = format!("{}/", root.display());
        let line = match &self.dir {
            Some(dir) => format!(
                "cd {} && {}",
                shell_line(&[dir.display().to_string()]),
                shell_line(&words)
            ),
            None => shell_line(&words),
        };
        line.replace(&prefix, "")
    }

    fn command(&self, sh: &Shell) -> Command {
        let (program, args) = self.argv.split_first().expect("a spec has a program");
        let mut command: Command = cmd!(sh, "{program} {args...}").into();
        if Path::new(program).file_name() == Some("cargo".as_ref()) {
            // `cargo run` gave this process the xtask's CARGO_PKG_* and CARGO_MANIFEST_*; a cargo started with
            // them sees the build scripts that watch them (ring's) as changed and rebuilds half the tree.
            for (key, _) in std::env::vars_os() {
                let key = key.to_string_lossy();
                if CARGO_RUN_VARS.iter().any(|var| key.starts_with(var)) {
                    command.env_remove(&*key);
                }
            }
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        command
    }
}

/// The alternation of two sides: round 0 runs `a` first, round 1 `b` first, and so on.
pub fn order(round: u32) -> [bool; 2] {
    if round.is_multiple_of(2) {
        [true, false]
    } else {
        [false, true]
    }
}

/// Config plus layer sizes of a v2s2 manifest: what a pull transfers.
pub fn compressed_size(manifest: &[u8]) -> anyhow::Result<u64> {
    build::exported_size(manifest)
}

impl flags::Bench {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let chosen = selection(&self.which, self.emulated)?;
        let rounds = self.rounds.unwrap_or(DEFAULT_ROUNDS).max(1);
        if rounds < 3 {
            eprintln!(
                "warning: {rounds} round(s): fewer than 3 makes the min/max and the median weak"
            );
        }
        let mut bench = Bencher::new(sh, self.rust_image.clone())?;
        let machine_before = load_average();
        println!(
            "bench: {} in {rounds} round(s); logs in {}",
            chosen
                .iter()
                .map(|n| format!("B{n}"))
                .collect::<Vec<_>>()
                .join(", "),
            bench.logs.display()
        );
        let mut results: Vec<Bench> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        let mut record = |name: &str, outcome: anyhow::Result<Vec<Bench>>| match outcome {
            Ok(benches) => results.extend(benches),
            Err(err) => {
                eprintln!("bench: {name} failed: {err:#}");
                failures.push(format!("{name}: {err:#}"));
            }
        };
        if chosen.contains(&6) {
            record("B6", bench.b6(rounds));
        }
        if chosen.contains(&7) {
            record("B7", bench.b7(rounds));
        }
        if chosen.contains(&4) {
            record("B4", bench.b4(rounds));
        }
        if chosen.contains(&5) {
            record("B5", bench.b5(rounds));
        }
        if chosen.contains(&1) || chosen.contains(&2) {
            record(
                "B1/B2",
                bench.b1_b2(rounds, chosen.contains(&1), chosen.contains(&2)),
            );
        }
        if chosen.contains(&8) {
            record("B8", bench.b8(rounds));
        }
        if chosen.contains(&3) {
            record("B3", bench.b3(rounds));
        }
        if chosen.contains(&9) {
            record("B9", bench.b9());
        }
        bench.stop();
        results.sort_by(|a, b| a.id.cmp(&b.id));

        let machine = Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            load_before: machine_before,
            load_after: load_average(),
            podman: cmd!(sh, "podman --version")
                .quiet()
                .read()
                .unwrap_or_default(),
            revision: cmd!(sh, "git rev-parse --short HEAD")
                .quiet()
                .ignore_stderr()
                .read()
                .unwrap_or_default(),
        };
        println!("\n{}", report::table(&results));
        println!(
            "machine: {} CPUs, load {} before, {} after; {}",
            machine.cpus, machine.load_before, machine.load_after, machine.podman
        );
        let run = report::Run {
            started: bench.started,
            rounds,
            machine,
            benches: results.iter().map(report::BenchJson::from).collect(),
        };
        let json = serde_json::to_string_pretty(&run).expect("results serialize");
        let file = bench.dir.join(format!("bench-{}.json", bench.started));
        std::fs::write(&file, &json).with_context(|| format!("write {}", file.display()))?;
        std::fs::write(bench.dir.join("latest.json"), &json)
            .with_context(|| format!("write {}", bench.dir.join("latest.json").display()))?;
        println!("results: {} (and latest.json)", file.display());
        if !failures.is_empty() {
            anyhow::bail!(
                "{} benchmark(s) failed:\n{}",
                failures.len(),
                failures.join("\n")
            );
        }
        Ok(())
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split(' ')
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Everything the benchmarks share, set up on first use.
struct Bencher<'a> {
    sh: &'a Shell,
    root: PathBuf,
    /// `<target>/bench`
    dir: PathBuf,
    logs: PathBuf,
    started: u64,
    /// This process's binary: the built xtask.
    xtask: PathBuf,
    cargo: String,
    rust_image: String,
    /// Applied to every podman and xtask the benchmark starts (from the environment or the test bench's setup).
    containers_conf: Option<String>,
    /// Fixed, so repeated builds of the same sources give the same image (labels included).
    source_date_epoch: String,
    image_name: String,
    runs: std::cell::Cell<u32>,
    registry: Option<LocalRegistry>,
    base: Option<Storage>,
    warm: Option<Storage>,
    exports_ready: bool,
}

impl<'a> Bencher<'a> {
    fn new(sh: &'a Shell, rust_image: Option<String>) -> anyhow::Result<Bencher<'a>> {
        let root = sh.current_dir();
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => root.join(dir),
            _ => root.join("target"),
        };
        let test_bench = crate::ci::BenchEnv::read(&crate::ci::ci_dir(&root)).unwrap_or_default();
        let from_env = |key: &str| {
            std::env::var(key)
                .ok()
                .filter(|v| !v.is_empty())
                .or_else(|| test_bench.vars.get(key).cloned())
        };
        let rust_image = rust_image
            .or_else(|| from_env(RUST_BUILDER_VAR))
            .unwrap_or_else(|| DEFAULT_RUST_BUILDER.to_owned());
        let dir = target.join("bench");
        let started = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let logs = dir.join("logs").join(started.to_string());
        std::fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;
        let source_date_epoch = cmd!(sh, "git log -1 --format=%ct")
            .quiet()
            .ignore_stderr()
            .read()
            .ok()
            .filter(|s| s.trim().parse::<u64>().is_ok())
            .unwrap_or_else(|| "0".into());
        Ok(Bencher {
            sh,
            xtask: std::env::current_exe().context("find the running xtask binary")?,
            cargo: std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
            rust_image,
            containers_conf: from_env("CONTAINERS_CONF"),
            source_date_epoch: source_date_epoch.trim().to_owned(),
            image_name: ImageConfig::load(sh)?.name,
            root,
            dir,
            logs,
            started,
            runs: std::cell::Cell::new(0),
            registry: None,
            base: None,
            warm: None,
            exports_ready: false,
        })
    }

    /// Runs `spec` with its output in a new log file; prints what ran and how long it took.
    fn time(&self, label: &str, spec: &Spec, watch_memory: bool) -> anyhow::Result<proc::Timed> {
        let log = self.next_log(label);
        let _ = std::fs::write(&log, format!("$ {}\n", spec.shown(&self.root)));
        let mut command = spec.command(self.sh);
        if !spec.env.iter().any(|(key, _)| key == "SOURCE_DATE_EPOCH") {
            command.env("SOURCE_DATE_EPOCH", &self.source_date_epoch);
        }
        if let Some(conf) = &self.containers_conf {
            command.env("CONTAINERS_CONF", conf);
        }
        let timed = proc::run(command, &log, watch_memory)
            .with_context(|| format!("{label} (log: {})", log.display()))?;
        println!(
            "  {label:<58} {:>9}",
            report::seconds(timed.elapsed.as_secs_f64())
        );
        Ok(timed)
    }

    /// A new log file's path, numbered in run order.
    fn next_log(&self, label: &str) -> PathBuf {
        self.runs.set(self.runs.get() + 1);
        let slug: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        self.logs.join(format!("{:03}-{slug}.log", self.runs.get()))
    }

    fn stop(&mut self) {
        if let Some(registry) = self.registry.take() {
            registry.stop(self.sh);
        }
    }

    fn registry(&mut self) -> anyhow::Result<String> {
        if self.registry.is_none() {
            let runner = local_registry::choose_runner(
                local_registry::find_binary(std::env::var_os("PATH").as_deref()),
                std::env::var("XTASK_REGISTRY_IMAGE").ok(),
            );
            let registry = LocalRegistry::start(self.sh, runner)?;
            println!("bench: registry on {}", registry.address);
            self.registry = Some(registry);
        }
        Ok(self.registry.as_ref().expect("started").address.clone())
    }

    /// The store of base images every benchmark storage reads, with `extra` images besides the Rust builder.
    fn base(&mut self, extra: &[&str]) -> anyhow::Result<Storage> {
        let base = match &self.base {
            Some(base) => base.clone(),
            None => Storage::open(&self.dir.join("storage/base"), None)?,
        };
        let mut images = vec![self.rust_image.clone()];
        images.extend(extra.iter().map(|s| s.to_string()));
        storage::sync_base_images(self.sh, &base, &images)?;
        self.base = Some(base.clone());
        Ok(base)
    }

    /// A storage that keeps its layers from run to run: the "warm" case.
    fn warm(&mut self) -> anyhow::Result<Storage> {
        if let Some(warm) = &self.warm {
            return Ok(warm.clone());
        }
        let base = self.base(&[])?;
        let warm = Storage::open(&self.dir.join("storage/warm"), Some(&base))?;
        self.warm = Some(warm.clone());
        Ok(warm)
    }

    fn build_args(&self, rust_image: &str) -> [String; 4] {
        [
            "--build-arg".into(),
            format!("RUST_IMAGE={rust_image}"),
            "--build-arg".into(),
            "RUNTIME_IMAGE=scratch".into(),
        ]
    }

    /// `image release --local` in the warm storage, exports under target/bench/work.
    fn release_spec(&mut self) -> anyhow::Result<Spec> {
        let warm = self.warm()?;
        let mut argv = vec![
            self.xtask.display().to_string(),
            "image".into(),
            "release".into(),
            "--local".into(),
        ];
        argv.extend(self.build_args(&self.rust_image.clone()));
        Ok(Spec::new(argv)
            .env("CONTAINERS_STORAGE_CONF", &warm.conf)
            .env("CARGO_TARGET_DIR", self.dir.join("work")))
    }

    /// Both platforms built and exported to target/bench/work/image (by a first, untimed release).
    fn exports(&mut self) -> anyhow::Result<PathBuf> {
        if !self.exports_ready {
            let spec = self.release_spec()?;
            self.time(
                "warm-up: image release --local (both platforms)",
                &spec,
                false,
            )?;
            self.exports_ready = true;
        }
        Ok(self.dir.join("work"))
    }

    fn local_image(&self, platform: Platform) -> String {
        format!("localhost/{}:local-{}", self.image_name, platform.arch)
    }

    // ---- B6 ----

    fn b6(&mut self, rounds: u32) -> anyhow::Result<Vec<Bench>> {
        println!("B6: cold compile of the xtask, and --help latency");
        // The xtask as every CI job builds it (no bench feature) beside the app, both from an empty target dir,
        // alternating which goes first; `--timings` tells the units and the longest of them.
        let cold = |package: &str, dir: &Path| {
            Spec::new([
                self.cargo.as_str(),
                "build",
                "--package",
                package,
                "--timings",
            ])
            .env("CARGO_TARGET_DIR", dir)
        };
        let (xtask_dir, app_dir) = (self.dir.join("cold-xtask"), self.dir.join("cold-app"));
        let (xtask_spec, app_spec) = (cold("xtask", &xtask_dir), cold(APP_PACKAGE, &app_dir));
        let mut xtask_side = Side::new(
            "cargo build --package xtask, empty target dir",
            xtask_spec.shown(&self.root),
        );
        let mut app_side = Side::new(
            "cargo build --package <app>, empty target dir",
            app_spec.shown(&self.root),
        );
        let mut units = Vec::new();
        for round in 0..rounds {
            for xtask_first in order(round) {
                let (spec, dir, side, what) = if xtask_first {
                    (&xtask_spec, &xtask_dir, &mut xtask_side, "xtask")
                } else {
                    (&app_spec, &app_dir, &mut app_side, "app")
                };
                let _ = std::fs::remove_dir_all(dir);
                let timed = self.time(
                    &format!("cold compile {what}, round {}", round + 1),
                    spec,
                    false,
                )?;
                side.seconds.push(timed.elapsed.as_secs_f64());
                if xtask_first {
                    units = cargo_timings(&dir.join("cargo-timings/cargo-timing.html"))
                        .unwrap_or_default();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&xtask_dir);
        let _ = std::fs::remove_dir_all(&app_dir);
        let mut compile = Bench::versus(
            "B6a",
            "cold compile of the xtask (debug, no bench feature, as every CI job builds it) vs the app",
            app_side,
            xtask_side,
            B6_TARGET,
        );
        if !units.is_empty() {
            compile.figures.push(Figure::new(
                "units compiled for the xtask (crates and build scripts)",
                units.len() as f64,
                "units",
                None,
                "cargo build --timings (last round)",
            ));
            units.sort_by(|a, b| b.1.total_cmp(&a.1));
            let longest: Vec<String> = units
                .iter()
                .take(5)
                .map(|(name, seconds)| format!("{name} {seconds:.1} s"))
                .collect();
            compile
                .notes
                .push(format!("longest units: {}", longest.join(", ")));
        }
        let cargo = &self.cargo;
        let crates = cmd!(
            self.sh,
            "{cargo} tree --package xtask --edges normal --prefix none --no-dedupe"
        )
        .quiet()
        .ignore_stderr()
        .read()
        .map(|tree| tree.lines().collect::<BTreeSet<_>>().len())
        .unwrap_or(0);
        if crates > 0 {
            compile.figures.push(Figure::new(
                "crates compiled (xtask and its normal dependencies)",
                crates as f64,
                "crates",
                None,
                "cargo tree --package xtask --edges normal",
            ));
        }

        let binary = Spec::new([self.xtask.display().to_string(), "--help".into()]);
        let cargo = Spec::new([self.cargo.as_str(), "xtask", "--help"]);
        let mut binary_side = Side::new("built binary: xtask --help", binary.shown(&self.root));
        let mut cargo_side = Side::new(
            "cargo xtask --help (cargo run, nothing to rebuild)",
            cargo.shown(&self.root),
        );
        for round in 0..rounds {
            for run in 0..HELP_RUNS_PER_ROUND {
                for first in order(round * HELP_RUNS_PER_ROUND + run) {
                    let (spec, side) = if first {
                        (&cargo, &mut cargo_side)
                    } else {
                        (&binary, &mut binary_side)
                    };
                    let log = self.next_log("help");
                    let timed = proc::run(spec.command(self.sh), &log, false)?;
                    side.seconds.push(timed.elapsed.as_secs_f64());
                }
            }
        }
        let mut help = Bench::new("B6b", "--help latency", cargo_side);
        help.compared = Some(binary_side);
        help.notes.push(format!(
            "{HELP_RUNS_PER_ROUND} runs per side and round, alternating; the ratio is what cargo's start-up adds"
        ));
        Ok(vec![compile, help])
    }

    // ---- B7 ----

    fn b7(&mut self, rounds: u32) -> anyhow::Result<Vec<Bench>> {
        println!(
            "B7: image release --local (warm), image size, peak memory pushing a 200 MiB layer"
        );
        let work = self.exports()?;
        let spec = self.release_spec()?;
        let mut side = Side::new(
            "image release --local, warm storage",
            spec.shown(&self.root),
        );
        for round in 0..rounds {
            let timed = self.time(
                &format!("image release --local, round {}", round + 1),
                &spec,
                false,
            )?;
            side.seconds.push(timed.elapsed.as_secs_f64());
        }
        let mut release = Bench::new(
            "B7a",
            "image release --local, warm (both platforms, registry, list, pull back)",
            side,
        );
        let warm = self.warm()?;
        for platform in Platform::ALL {
            let dir = build::export_dir(&work.join("image"), platform);
            let manifest = std::fs::read(dir.join("manifest.json"))
                .with_context(|| format!("read the export in {}", dir.display()))?;
            release.figures.push(Figure::new(
                format!("image size {platform}, compressed (what a pull transfers)"),
                compressed_size(&manifest)? as f64 / 1e6,
                "MB",
                Some(B7_SIZE_TARGET_MB),
                format!("config + layer sizes in {}/manifest.json", dir.display()),
            ));
            let image = self.local_image(platform);
            let template = "{{.Size}}";
            let size = cmd!(self.sh, "podman image inspect --format {template} {image}")
                .env("CONTAINERS_STORAGE_CONF", &warm.conf)
                .quiet()
                .read()
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok());
            if let Some(size) = size {
                release.figures.push(Figure::new(
                    format!("image size {platform}, unpacked"),
                    size / 1e6,
                    "MB",
                    Some(B7_SIZE_TARGET_MB),
                    format!("podman image inspect --format {template} {image}"),
                ));
            }
        }

        // Peak memory of a push that must upload a 200 MiB layer: a new repository per round.
        let big = self.dir.join("work-big");
        make_big_export(
            self.sh,
            &build::export_dir(&big.join("image"), Platform::LINUX_AMD64),
        )?;
        let registry = self.registry()?;
        let mut push_side = Side::new(
            "image push of a 200 MiB layer (new repository each round)",
            String::new(),
        );
        let mut peak_kib = 0;
        for round in 0..rounds {
            let to = format!("{registry}/bench/big-{}-{round}", self.started);
            let spec = Spec::new([
                self.xtask.display().to_string(),
                "image".into(),
                "push".into(),
                "--platform".into(),
                "linux/amd64".into(),
                "--to".into(),
                to,
                "--digest-dir".into(),
                big.join("digests").display().to_string(),
            ])
            .env("CARGO_TARGET_DIR", &big);
            push_side.command = spec.shown(&self.root);
            let timed = self.time(&format!("push 200 MiB, round {}", round + 1), &spec, true)?;
            push_side.seconds.push(timed.elapsed.as_secs_f64());
            peak_kib = peak_kib.max(timed.peak_rss_kib.unwrap_or(0));
        }
        let mut memory = Bench::new("B7b", "image push of a 200 MiB layer", push_side);
        memory.figures.push(Figure::new(
            "peak memory of the xtask (VmHWM, highest round)",
            peak_kib as f64 / 1024.0,
            "MiB",
            Some(B7_MEMORY_TARGET_MB),
            "/proc/<pid>/status VmHWM, read every 5 ms while the push runs",
        ));
        Ok(vec![release, memory])
    }

    // ---- B9 ----

    /// The races test (`xtask/tests/it/races.rs`) for [`B9_ROUNDS`] rounds: what it counts, as figures.
    fn b9(&mut self) -> anyhow::Result<Vec<Bench>> {
        println!("B9: {B9_ROUNDS} rounds of racing releases (xtask/tests/it/races.rs)");
        let (cargo, rounds) = (&self.cargo, B9_ROUNDS.to_string());
        let filter = "races::racing_releases_leave_every_tag_whole";
        let command = format!(
            "RACE_ROUNDS={rounds} {cargo} test -q -p xtask --test it {filter} -- --exact --nocapture"
        );
        let started = Instant::now();
        let out = cmd!(
            self.sh,
            "{cargo} test -q -p xtask --test it {filter} -- --exact --nocapture"
        )
        .env("RACE_ROUNDS", &rounds)
        .quiet()
        .ignore_status()
        .output()
        .context("run the races test")?;
        let mut side = Side::new("races test", command);
        side.seconds.push(started.elapsed().as_secs_f64());
        let stderr = String::from_utf8_lossy(&out.stderr);
        std::fs::write(self.logs.join("b9-races.log"), stderr.as_bytes())?;
        let counts = race_counts(&stderr).with_context(|| {
            format!(
                "the races test printed no `races:` line (exit {:?}); see {}",
                out.status.code(),
                self.logs.join("b9-races.log").display()
            )
        })?;
        let mut bench = Bench::new(
            "B9",
            "releases racing each other: 2 of latest and a version per round",
            side,
        );
        let how = "the test's own count, after every round, in both registries";
        for (key, name, target) in [
            ("rounds", "rounds", None),
            ("lost", "tags lost", Some(0.0)),
            (
                "wrong_latest",
                "rounds ending with latest not on the newer commit in a registry",
                Some(0.0),
            ),
            (
                "failed_runs",
                "releases that failed (or whose newer commit lost)",
                Some(0.0),
            ),
            ("pruned", "manifests pruned meanwhile", None),
        ] {
            let value = counts.get(key).copied().unwrap_or(f64::NAN);
            bench
                .figures
                .push(Figure::new(name, value, "", target, how));
        }
        if !out.status.success() {
            bench.notes.push(format!(
                "the test failed; its output is in {}",
                self.logs.join("b9-races.log").display()
            ));
        }
        Ok(vec![bench])
    }

    // ---- B4 ----

    fn b4(&mut self, rounds: u32) -> anyhow::Result<Vec<Bench>> {
        println!("B4: push of an image the registry already has");
        let work = self.exports()?;
        let registry = self.registry()?;
        let warm = self.warm()?;
        let platform = Platform::LINUX_AMD64;
        let image = self.local_image(platform);
        let xtask_spec = |host: &str, xtask: &Path| {
            Spec::new([
                xtask.display().to_string(),
                "image".into(),
                "push".into(),
                "--platform".into(),
                platform.to_string(),
                "--to".into(),
                format!("{host}/bench/push"),
                "--digest-dir".into(),
                work.join("b4-digests").display().to_string(),
            ])
            .env("CARGO_TARGET_DIR", &work)
        };
        let podman_spec = |host: &str| {
            Spec::new([
                "podman".into(),
                "push".into(),
                "--tls-verify=false".into(),
                "--format".into(),
                "v2s2".into(),
                image.clone(),
                format!("docker://{host}/bench/push:podman"),
            ])
            .env("CONTAINERS_STORAGE_CONF", &warm.conf)
        };
        let xtask = self.xtask.clone();
        let (xtask_run, podman_run) = (xtask_spec(&registry, &xtask), podman_spec(&registry));
        self.time("first push (untimed): image push", &xtask_run, false)?;
        self.time("first push (untimed): podman push", &podman_run, false)?;
        let mut podman_side =
            Side::new("podman push (already there)", podman_run.shown(&self.root));
        let mut xtask_side = Side::new("image push (already there)", xtask_run.shown(&self.root));
        for round in 0..rounds {
            for podman_first in order(round) {
                let (label, spec, side) = if podman_first {
                    ("podman push", &podman_run, &mut podman_side)
                } else {
                    ("image push", &xtask_run, &mut xtask_side)
                };
                let timed = self.time(&format!("{label}, round {}", round + 1), spec, false)?;
                side.seconds.push(timed.elapsed.as_secs_f64());
            }
        }
        let mut bench = Bench::versus(
            "B4",
            "push of an image the registry already has (linux/amd64)",
            podman_side,
            xtask_side,
            B4_TARGET,
        );

        // Measured on a second push through the proxy: to podman the proxy is another registry, and a first push
        // there uploads what its blob-info cache has not seen at that address.
        let proxy = proxy::CountingProxy::start(&registry).context("start the counting proxy")?;
        let (xtask_proxied, podman_proxied) = (
            xtask_spec(&proxy.address, &xtask),
            podman_spec(&proxy.address),
        );
        self.time(
            "through the counting proxy (first): image push",
            &xtask_proxied,
            false,
        )?;
        self.time(
            "through the counting proxy (first): podman push",
            &podman_proxied,
            false,
        )?;
        proxy.take();
        self.time(
            "through the counting proxy: image push",
            &xtask_proxied,
            false,
        )?;
        let by_xtask = proxy.take();
        self.time(
            "through the counting proxy: podman push",
            &podman_proxied,
            false,
        )?;
        let by_podman = proxy.take();
        bench.figures.push(Figure::new(
            "bytes uploaded by image push (request bodies)",
            by_xtask.body_bytes as f64,
            "B",
            Some(0.0),
            format!(
                "a proxy in front of the registry: {} requests ({}), {} bytes in all",
                by_xtask.requests.values().sum::<u64>(),
                by_xtask.requests_line(),
                by_xtask.bytes
            ),
        ));
        bench.figures.push(Figure::new(
            "bytes uploaded by podman push (request bodies)",
            by_podman.body_bytes as f64,
            "B",
            None,
            format!(
                "a proxy in front of the registry: {} requests ({}), {} bytes in all",
                by_podman.requests.values().sum::<u64>(),
                by_podman.requests_line(),
                by_podman.bytes
            ),
        ));
        Ok(vec![bench])
    }

    // ---- B5 ----

    fn b5(&mut self, rounds: u32) -> anyhow::Result<Vec<Bench>> {
        println!("B5: one list over 2 platforms into 2 repositories");
        let work = self.exports()?;
        let registry = self.registry()?;
        let warm = self.warm()?;
        let (repo_a, repo_b) = (
            format!("{registry}/bench/list-a"),
            format!("{registry}/bench/list-b"),
        );
        let digests = work.join("b5-digests");
        let _ = std::fs::remove_dir_all(&digests);
        for platform in Platform::ALL {
            let spec = Spec::new([
                self.xtask.display().to_string(),
                "image".into(),
                "push".into(),
                "--platform".into(),
                platform.to_string(),
                "--to".into(),
                repo_a.clone(),
                "--to".into(),
                repo_b.clone(),
                "--digest-dir".into(),
                digests.display().to_string(),
            ])
            .env("CARGO_TARGET_DIR", &work);
            self.time(
                &format!("setup (untimed): push {platform} to both"),
                &spec,
                false,
            )?;
        }
        let digest_of = |platform: Platform| -> anyhow::Result<String> {
            let path = digests.join(platform.dir_name());
            let record: push::DigestRecord = serde_json::from_slice(
                &std::fs::read(&path).with_context(|| format!("read {}", path.display()))?,
            )
            .with_context(|| format!("parse {}", path.display()))?;
            Ok(record.digest.to_string())
        };
        let (amd64, arm64) = (
            digest_of(Platform::LINUX_AMD64)?,
            digest_of(Platform::LINUX_ARM64)?,
        );
        let xtask_spec = |tag: &str| {
            Spec::new([
                self.xtask.display().to_string(),
                "image".into(),
                "manifest".into(),
                "--digest-dir".into(),
                digests.display().to_string(),
                "--tag".into(),
                tag.into(),
                "--to".into(),
                repo_a.clone(),
                "--to".into(),
                repo_b.clone(),
                "--platforms".into(),
                "linux/amd64,linux/arm64".into(),
            ])
            .env("CARGO_TARGET_DIR", &work)
        };
        let podman = |args: Vec<String>| {
            Spec::new(std::iter::once("podman".to_owned()).chain(args))
                .env("CONTAINERS_STORAGE_CONF", &warm.conf)
        };
        let podman_specs = |tag: &str, list: &str| -> Vec<Spec> {
            let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            vec![
                podman(s(&["manifest", "create", list])),
                podman(s(&[
                    "manifest",
                    "add",
                    "--tls-verify=false",
                    list,
                    &format!("docker://{repo_a}@{amd64}"),
                ])),
                podman(s(&[
                    "manifest",
                    "add",
                    "--tls-verify=false",
                    list,
                    &format!("docker://{repo_a}@{arm64}"),
                ])),
                podman(s(&[
                    "manifest",
                    "push",
                    "--tls-verify=false",
                    list,
                    &format!("docker://{repo_a}:{tag}"),
                ])),
                podman(s(&[
                    "manifest",
                    "push",
                    "--tls-verify=false",
                    list,
                    &format!("docker://{repo_b}:{tag}"),
                ])),
            ]
        };
        let shown_podman = podman_specs("TAG", "localhost/bench/list")
            .iter()
            .map(|s| s.shown(&self.root))
            .collect::<Vec<_>>()
            .join(" && ");
        let mut podman_side = Side::new("podman manifest create, add x2, push x2", shown_podman);
        let mut xtask_side = Side::new("image manifest", xtask_spec("TAG").shown(&self.root));
        for round in 0..rounds {
            for podman_first in order(round) {
                if podman_first {
                    let tag = format!("podman-{}-{round}", self.started);
                    let list = format!("localhost/bench/list-{}-{round}", self.started);
                    let mut total = Duration::ZERO;
                    for spec in podman_specs(&tag, &list) {
                        total += self
                            .time(
                                &format!("podman {}, round {}", spec.argv[2], round + 1),
                                &spec,
                                false,
                            )?
                            .elapsed;
                    }
                    let remove = podman(vec!["manifest".into(), "rm".into(), list.clone()]);
                    self.time("podman manifest rm (untimed cleanup)", &remove, false)?;
                    podman_side.seconds.push(total.as_secs_f64());
                } else {
                    let tag = format!("xtask-{}-{round}", self.started);
                    let timed = self.time(
                        &format!("image manifest, round {}", round + 1),
                        &xtask_spec(&tag),
                        false,
                    )?;
                    xtask_side.seconds.push(timed.elapsed.as_secs_f64());
                }
            }
        }
        let mut bench = Bench::versus(
            "B5",
            "one list of 2 platforms into 2 repositories",
            podman_side,
            xtask_side,
            B5_TARGET,
        );
        for (who, tag) in [
            ("podman", format!("podman-{}-0", self.started)),
            ("image manifest", format!("xtask-{}-0", self.started)),
        ] {
            if let Some(media_type) = manifest_media_type(&registry, "bench/list-a", &tag) {
                bench
                    .notes
                    .push(format!("{who} published a list of media type {media_type}"));
            }
        }
        Ok(vec![bench])
    }

    // ---- B1 and B2 ----

    fn b1_b2(&mut self, rounds: u32, b1: bool, b2: bool) -> anyhow::Result<Vec<Bench>> {
        println!("B1/B2: clean build vs rebuild after a source change, and vs empty storage with the registry cache");
        let base = self.base(&[])?;
        let copy = self.project_copy()?;
        let registry = if b2 { Some(self.registry()?) } else { None };
        let cache_repo = registry.map(|r| format!("{r}/bench/layer-cache"));
        let storages = self.dir.join("storage");
        let work = self.dir.join("work-copy");
        let build_spec = |storage: &Storage, cache: Option<&str>| {
            let mut argv = vec![
                self.xtask.display().to_string(),
                "image".into(),
                "build".into(),
                "--platform".into(),
                "linux/amd64".into(),
            ];
            argv.extend(self.build_args(&self.rust_image));
            if let Some(cache) = cache {
                argv.extend(["--cache-repo".into(), cache.to_owned()]);
            }
            // In the copy: the xtask's project is the checkout it runs in.
            Spec::new(argv)
                .in_dir(&copy)
                .env("CONTAINERS_STORAGE_CONF", &storage.conf)
                .env("CARGO_TARGET_DIR", &work)
        };
        let shown = |cache: Option<&str>, what: &str| {
            let storage = Storage {
                dir: storages.join(what),
                conf: storages.join(format!("{what}.conf")),
            };
            build_spec(&storage, cache).shown(&self.root)
        };
        let mut clean = Side::new(
            "clean build (empty storage, no cache)",
            shown(None, "clean"),
        );
        let mut rebuild = Side::new(
            "rebuild after a source-only change, same storage",
            shown(None, "clean"),
        );
        let mut cached = Side::new(
            "empty storage + --cache-repo, after a source-only change",
            shown(cache_repo.as_deref(), "cached"),
        );
        if let Some(cache) = &cache_repo {
            let storage = Storage::fresh(self.sh, &storages.join("fill-cache"), Some(&base))?;
            self.time(
                "fill the layer cache (untimed)",
                &build_spec(&storage, Some(cache)),
                false,
            )?;
            storage.remove(self.sh)?;
        }
        let mut edits = 0;
        let mut edit = |copy: &Path| -> anyhow::Result<()> {
            edits += 1;
            let main = copy.join("src/main.rs");
            let mut text = std::fs::read_to_string(&main)
                .with_context(|| format!("read {}", main.display()))?;
            text.push_str(&format!(
                "// source-only change {edits} for `cargo xtask bench`\n"
            ));
            std::fs::write(&main, text).with_context(|| format!("write {}", main.display()))
        };
        for round in 0..rounds {
            let n = round + 1;
            // Round 0: clean, rebuild, cached; round 1: cached, clean, rebuild; …
            for clean_first in order(round) {
                if clean_first {
                    let storage = Storage::fresh(self.sh, &storages.join("clean"), Some(&base))?;
                    let timed = self.time(
                        &format!("clean build, round {n}"),
                        &build_spec(&storage, None),
                        false,
                    )?;
                    clean.seconds.push(timed.elapsed.as_secs_f64());
                    if b1 {
                        edit(&copy)?;
                        let timed = self.time(
                            &format!("rebuild after a source change, round {n}"),
                            &build_spec(&storage, None),
                            false,
                        )?;
                        rebuild.seconds.push(timed.elapsed.as_secs_f64());
                    }
                    storage.remove(self.sh)?;
                } else if let Some(cache) = &cache_repo {
                    edit(&copy)?;
                    let storage = Storage::fresh(self.sh, &storages.join("cached"), Some(&base))?;
                    let timed = self.time(
                        &format!("empty storage + cache, round {n}"),
                        &build_spec(&storage, Some(cache)),
                        false,
                    )?;
                    cached.seconds.push(timed.elapsed.as_secs_f64());
                    storage.remove(self.sh)?;
                }
            }
        }
        let note = "linux/amd64, built by the xtask run in a copy of the project (target/bench/project) whose \
                    src/main.rs gets a new comment line before each rebuild and each cached build";
        let mut out = Vec::new();
        if b1 {
            let mut bench = Bench::versus(
                "B1",
                "clean build vs rebuild after a source-only change",
                clean.clone(),
                rebuild,
                B1_TARGET,
            );
            bench.notes.push(note.into());
            out.push(bench);
        }
        if b2 {
            let mut bench = Bench::versus(
                "B2",
                "clean build vs empty storage with the registry layer cache",
                clean,
                cached,
                B2_TARGET,
            );
            bench.notes.push(note.into());
            bench.notes.push(
                "the cached side includes the cache probe, pulling the cached layers and pushing the new ones \
                 (--cache-to)"
                    .into(),
            );
            out.push(bench);
        }
        Ok(out)
    }

    /// A copy of the project (what git tracks or would track) in target/bench/project, where B1 and B2 edit
    /// src/ and build.
    fn project_copy(&mut self) -> anyhow::Result<PathBuf> {
        let copy = self.dir.join("project");
        let _ = std::fs::remove_dir_all(&copy);
        let listing = cmd!(
            self.sh,
            "git ls-files -z --cached --others --exclude-standard"
        )
        .quiet()
        .read()
        .context("list the project's files with git (the benchmark copies them)")?;
        for file in listing.split('\0').filter(|f| !f.is_empty()) {
            let from = self.root.join(file);
            if !from.is_file() {
                continue;
            }
            let to = copy.join(file);
            std::fs::create_dir_all(to.parent().expect("a file has a parent"))?;
            std::fs::copy(&from, &to)
                .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
        }
        Ok(copy)
    }

    // ---- B8 ----

    fn b8(&mut self, rounds: u32) -> anyhow::Result<Vec<Bench>> {
        println!("B8: image release of a docs-only commit vs one of a source change");
        let base = self.base(&[])?;
        let registry = self.registry()?;
        let proxy = proxy::CountingProxy::start(&registry).context("start the counting proxy")?;
        let repository = format!("bench/b8-{}", self.started);
        let target = format!("{}/{repository}", proxy.address);

        // A clone with the project's history (the image's commit is found in it), committed to as a developer
        // would; the xtask binary's project is the checkout it runs in.
        let clone = self.dir.join("b8-project");
        let _ = std::fs::remove_dir_all(&clone);
        let root = &self.root;
        cmd!(self.sh, "git clone -q --no-hardlinks {root} {clone}")
            .quiet()
            .run()
            .context("clone the project for B8")?;
        let git = |args: &[&str]| -> anyhow::Result<String> {
            let mut all = vec![
                "-C".to_owned(),
                clone.display().to_string(),
                "-c".to_owned(),
                "user.name=cargo xtask bench".to_owned(),
                "-c".to_owned(),
                "user.email=bench@localhost".to_owned(),
            ];
            all.extend(args.iter().map(|a| a.to_string()));
            cmd!(self.sh, "git {all...}")
                .quiet()
                .read()
                .with_context(|| format!("git {}", args.join(" ")))
        };
        let storage = Storage::fresh(self.sh, &self.dir.join("storage/b8"), Some(&base))?;
        let work = self.dir.join("work-b8");
        let release = |extra: &[&str]| {
            let mut argv = vec![
                self.xtask.display().to_string(),
                "image".into(),
                "release".into(),
                "--to".into(),
                target.clone(),
            ];
            argv.extend(extra.iter().map(|a| a.to_string()));
            argv.extend(self.build_args(&self.rust_image));
            Spec::new(argv)
                .in_dir(&clone)
                .env("CONTAINERS_STORAGE_CONF", &storage.conf)
                .env("CARGO_TARGET_DIR", &work)
                // The image's time comes from its commit, as in CI; empty is unset.
                .env("SOURCE_DATE_EPOCH", "")
        };

        // Setup (untimed): a version release (its X.Y.Z, X.Y and X tags), then `latest`.
        let version = ImageConfig::load(self.sh)?.version;
        git(&["tag", &format!("v{version}")])?;
        self.time(
            &format!("setup (untimed): image release --version v{version}"),
            &release(&["--version", &format!("v{version}")]),
            false,
        )?;
        self.time("setup (untimed): image release", &release(&[]), false)?;
        proxy.take();

        let latest = release(&[]);
        let mut source_side = Side::new(
            "image release after a commit to src/ (new images)",
            latest.shown(&self.root),
        );
        let mut docs_side = Side::new(
            "image release after a docs-only commit (the same images)",
            latest.shown(&self.root),
        );
        let (mut docs_bytes, mut docs_writes, mut moved_tags) = (0, 0, 0);
        let mut source_bytes = Vec::new();
        let mut commits = 0;
        for round in 0..rounds {
            for source_first in order(round) {
                commits += 1;
                let (file, what) = if source_first {
                    ("src/main.rs", "source")
                } else {
                    ("README.md", "docs-only")
                };
                let path = clone.join(file);
                let mut text = std::fs::read_to_string(&path)
                    .with_context(|| format!("read {}", path.display()))?;
                let comment = if source_first { "//" } else { "<!--" };
                text.push_str(&format!(
                    "\n{comment} {what} change {commits} for `cargo xtask bench`\n"
                ));
                if !source_first {
                    text.push_str("-->\n");
                }
                std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
                git(&[
                    "commit",
                    "-q",
                    "-a",
                    "-m",
                    &format!("bench: {what} change {commits}"),
                ])?;

                let before = tag_digests(&registry, &repository)?;
                let timed = self.time(
                    &format!("image release after a {what} commit, round {}", round + 1),
                    &latest,
                    false,
                )?;
                let sent = proxy.take();
                let after = tag_digests(&registry, &repository)?;
                let changed: Vec<&String> = after
                    .iter()
                    .filter(|(tag, digest)| before.get(*tag) != Some(digest))
                    .map(|(tag, _)| tag)
                    .chain(before.keys().filter(|tag| !after.contains_key(*tag)))
                    .collect();
                if source_first {
                    source_side.seconds.push(timed.elapsed.as_secs_f64());
                    source_bytes.push(sent.body_bytes as f64);
                    anyhow::ensure!(
                        changed == [&"latest".to_owned()],
                        "a source change must move `latest` and only it; changed: {changed:?}"
                    );
                } else {
                    docs_side.seconds.push(timed.elapsed.as_secs_f64());
                    docs_bytes = docs_bytes.max(sent.body_bytes);
                    docs_writes += sent.requests.get("PUT").copied().unwrap_or(0)
                        + sent.requests.get("POST").copied().unwrap_or(0)
                        + sent.requests.get("PATCH").copied().unwrap_or(0)
                        + sent.requests.get("DELETE").copied().unwrap_or(0);
                    moved_tags += changed.len();
                }
            }
        }
        let mut bench = Bench::versus(
            "B8",
            "image release: a docs-only commit vs a source change (both platforms, into one registry)",
            source_side,
            docs_side,
            B8_TARGET,
        );
        bench.figures.push(Figure::new(
            "bytes uploaded by the docs-only release (request bodies, highest round)",
            docs_bytes as f64,
            "B",
            Some(0.0),
            "the counting proxy between the xtask and the registry",
        ));
        bench.figures.push(Figure::new(
            "writes by the docs-only releases (PUT, POST, PATCH, DELETE: manifests, uploads, tags, prunes)",
            docs_writes as f64,
            "requests",
            Some(0.0),
            "the counting proxy, every round",
        ));
        bench.figures.push(Figure::new(
            "tags the docs-only releases changed (latest, 0.x.y, 0.x, 0)",
            moved_tags as f64,
            "tags",
            Some(0.0),
            format!("tags/list and each tag's digest, before and after, in {repository}"),
        ));
        if let Some(median) = report::Summary::of(&source_bytes) {
            bench.figures.push(Figure::new(
                "bytes uploaded by the release after a source change (median)",
                median.median,
                "B",
                None,
                "the counting proxy",
            ));
        }
        bench.notes.push(format!(
            "a git clone of the project in target/bench/b8-project; each round commits a comment to src/main.rs \
             (a new image: latest moves, the old one is pruned) and a comment to README.md (nothing the image is \
             made from), alternating which goes first; a version release v{version} and a latest release before \
             the first round; one warm podman storage (as a developer's, or a CI runner with the layer cache)"
        ));
        storage.remove(self.sh)?;
        let _ = std::fs::remove_dir_all(&clone);
        Ok(vec![bench])
    }

    // ---- B3 ----

    fn b3(&mut self, rounds: u32) -> anyhow::Result<Vec<Bench>> {
        println!("B3: linux/arm64 cross-compiled vs emulated (qemu)");
        ensure_arm64_builder(self.sh, &self.dir)?;
        let base = self.base(&[ARM64_BUILDER])?;
        let config = ImageConfig::load(self.sh)?;
        let containerfile = self.sh.current_dir().join(&config.containerfile);
        let mut facts = build::Facts {
            context: self.sh.current_dir(),
            out_dir: PathBuf::new(),
            build_platform: build::native_platform()?,
            containerfile: std::fs::read_to_string(&containerfile)
                .with_context(|| format!("read {}", containerfile.display()))?,
        };
        let platform = Platform::LINUX_ARM64;
        let storages = self.dir.join("storage");
        let mut plans = Vec::new();
        for (what, rust_image, build_platform) in [
            ("cross", self.rust_image.clone(), facts.build_platform),
            ("emulated", ARM64_BUILDER.to_owned(), Platform::LINUX_ARM64),
        ] {
            facts.out_dir = self.dir.join(format!("work-b3-{what}")).join("image");
            let request = build::BuildRequest {
                platforms: vec![platform],
                build_args: vec![
                    format!("RUST_IMAGE={rust_image}"),
                    "RUNTIME_IMAGE=scratch".into(),
                ],
                tag: Some(format!("localhost/bench/b3-{what}")),
                cache_repo: None,
                labels: BTreeMap::new(),
            };
            let mut plan = build::BuildPlan::new(&config, &request, &facts)?;
            // The emulated variant: the build stage runs on the target platform, under qemu.
            plan.build_platform = build_platform;
            std::fs::create_dir_all(&plan.out_dir)?;
            let specs = [plan.build_argv(platform), plan.export_argv(platform)];
            plans.push((what, specs));
        }
        let mut sides: Vec<Side> = plans
            .iter()
            .map(|(what, specs)| {
                let shown = specs
                    .iter()
                    .map(|argv| shell_line(argv))
                    .collect::<Vec<_>>()
                    .join(" && ");
                Side::new(
                    format!("linux/arm64 {what}, empty storage"),
                    format!(
                        "CONTAINERS_STORAGE_CONF=<empty storage> {}",
                        shown.replace(&format!("{}/", self.root.display()), "")
                    ),
                )
            })
            .collect();
        for round in 0..rounds {
            for cross_first in order(round) {
                let index = usize::from(!cross_first);
                let (what, specs) = &plans[index];
                let storage =
                    Storage::fresh(self.sh, &storages.join(format!("b3-{what}")), Some(&base))?;
                let mut total = Duration::ZERO;
                for argv in specs {
                    let spec =
                        Spec::new(argv.clone()).env("CONTAINERS_STORAGE_CONF", &storage.conf);
                    total += self
                        .time(
                            &format!("{what} {}, round {}", argv[1], round + 1),
                            &spec,
                            false,
                        )?
                        .elapsed;
                }
                storage.remove(self.sh)?;
                sides[index].seconds.push(total.as_secs_f64());
            }
        }
        let emulated = sides.pop().expect("two sides");
        let cross = sides.pop().expect("two sides");
        let mut bench = Bench::versus(
            "B3",
            "linux/arm64: emulated vs cross-compiled",
            emulated,
            cross,
            B3_TARGET,
        );
        bench.notes.push(format!(
            "same Containerfile and podman argv; the emulated side sets BUILDPLATFORM=linux/arm64 and uses {ARM64_BUILDER} \
             (Debian trixie rustc, cargo, gcc for arm64), so every build step runs under qemu-aarch64"
        ));
        Ok(vec![bench])
    }
}

/// Every tag of `repository` and the digest it names, read from the registry itself (not through the proxy).
fn tag_digests(registry: &str, repository: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent
        .get(&format!("http://{registry}/v2/{repository}/tags/list"))
        .call()
        .with_context(|| format!("list the tags of {repository}"))?;
    if response.status() == 404 {
        return Ok(BTreeMap::new());
    }
    let body = response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("read the tags of {repository}"))?;
    let listing: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("the tags of {repository} are not JSON: {body}"))?;
    let mut tags = BTreeMap::new();
    for tag in listing["tags"].as_array().into_iter().flatten() {
        let tag = tag.as_str().unwrap_or_default();
        let response = agent
            .head(&format!(
                "http://{registry}/v2/{repository}/manifests/{tag}"
            ))
            .header("accept", media_type::MANIFEST_ACCEPT)
            .call()
            .with_context(|| format!("read tag {tag} of {repository}"))?;
        let digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|d| d.to_str().ok())
            .unwrap_or_default();
        tags.insert(tag.to_owned(), digest.to_owned());
    }
    Ok(tags)
}

/// The media type of a list in the registry, to say what each side published.
fn manifest_media_type(registry: &str, repository: &str, tag: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let response = agent
        .head(&format!("http://{registry}/v2/{repository}/manifests/{tag}"))
        .header(
            "accept",
            "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json",
        )
        .call()
        .ok()?;
    (response.status() == 200)
        .then(|| {
            response
                .headers()
                .get("content-type")?
                .to_str()
                .ok()
                .map(str::to_owned)
        })
        .flatten()
}

/// The units of a `cargo build --timings` run and their durations, from the data its HTML report embeds
/// (`const UNIT_DATA = [{"name": …, "target": …, "duration": …}, …];`).
fn cargo_timings(report: &Path) -> Option<Vec<(String, f64)>> {
    let html = std::fs::read_to_string(report).ok()?;
    let start = html.find("UNIT_DATA = ")? + "UNIT_DATA = ".len();
    let end = start + html[start..].find(";\n")?;
    let units: Vec<serde_json::Value> = serde_json::from_str(&html[start..end]).ok()?;
    Some(
        units
            .iter()
            .filter_map(|unit| {
                let name = format!(
                    "{}{}",
                    unit["name"].as_str()?,
                    unit["target"].as_str().unwrap_or_default()
                );
                Some((name, unit["duration"].as_f64()?))
            })
            .collect(),
    )
}

/// A `dir:` export (as `podman push IMG dir:PATH` writes it) of one linux/amd64 image with a single 200 MiB layer
/// of random bytes (gzip cannot shrink them), made once and reused.
fn make_big_export(sh: &Shell, dir: &Path) -> anyhow::Result<()> {
    if push::read_export(dir, Platform::LINUX_AMD64)
        .is_ok_and(|e| e.layers.iter().any(|l| l.size >= BIG_LAYER_BYTES))
    {
        return Ok(());
    }
    println!("bench: making a 200 MiB random layer (once)");
    let _ = std::fs::remove_dir_all(dir);
    let scratch = dir.with_extension("scratch");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(scratch.join("rootfs"))?;
    std::fs::create_dir_all(dir)?;
    {
        use std::io::{Read, Write};
        let mut random = std::fs::File::open("/dev/urandom").context("open /dev/urandom")?;
        let path = scratch.join("rootfs/random.bin");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut buffer = vec![0u8; 1 << 20];
        for _ in 0..BIG_LAYER_BYTES / (1 << 20) {
            random.read_exact(&mut buffer)?;
            out.write_all(&buffer)?;
        }
        out.flush()?;
    }
    let (rootfs, tar) = (scratch.join("rootfs"), scratch.join("layer.tar"));
    cmd!(
        sh,
        "tar --create --file {tar} --directory {rootfs} random.bin"
    )
    .quiet()
    .run()
    .context("pack the random layer with tar")?;
    let diff_id = Digest::of_file(&tar)?;
    cmd!(sh, "gzip -1 --no-name {tar}")
        .quiet()
        .run()
        .context("compress the random layer with gzip")?;
    let layer = scratch.join("layer.tar.gz");
    let layer_digest = Digest::of_file(&layer)?;
    let layer_size = std::fs::metadata(&layer)?.len();
    std::fs::rename(&layer, dir.join(layer_digest.hex()))?;
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "cargo xtask bench: 200 MiB of random bytes"}],
    }))?;
    let config_digest = Digest::of(&config);
    std::fs::write(dir.join(config_digest.hex()), &config)?;
    let manifest = serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::DOCKER_MANIFEST,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": config.len(),
            "digest": config_digest,
        },
        "layers": [{
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "size": layer_size,
            "digest": layer_digest,
        }],
    }))?;
    std::fs::write(dir.join("manifest.json"), manifest)?;
    std::fs::write(dir.join("version"), "Directory Transport Version: 1.1\n")?;
    std::fs::remove_dir_all(&scratch)?;
    push::read_export(dir, Platform::LINUX_AMD64).map(drop)
}

/// B3's arm64 Rust image, made once with mmdebstrap (its package scripts run under qemu) and imported.
fn ensure_arm64_builder(sh: &Shell, dir: &Path) -> anyhow::Result<()> {
    if storage::image_id(sh, None, ARM64_BUILDER).is_some() {
        return Ok(());
    }
    println!("bench: building {ARM64_BUILDER} with mmdebstrap under qemu (once; takes minutes)");
    let ca = std::env::var("SSL_CERT_FILE")
        .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
    let upload = format!("upload {ca} /etc/ssl/certs/ca-certificates.crt");
    let tarball = dir.join("arm64-builder.tar");
    std::fs::create_dir_all(dir)?;
    let result = cmd!(
        sh,
        "mmdebstrap --quiet --variant=apt --architectures=arm64 --include=rustc,cargo,gcc,libc6-dev,ca-certificates
            --dpkgopt=path-exclude=/usr/share/doc/* --dpkgopt=path-exclude=/usr/share/man/*
            --dpkgopt=path-exclude=/usr/share/locale/*
            --customize-hook={upload} trixie {tarball} http://deb.debian.org/debian"
    )
    .run()
    .context("create the arm64 Rust builder's root filesystem with mmdebstrap (needs qemu-user-static and binfmt)")
    .and_then(|()| {
        let changes = [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV CARGO_HTTP_CAINFO=/etc/ssl/certs/ca-certificates.crt",
            "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
            r#"CMD ["/bin/bash"]"#,
        ]
        .iter()
        .flat_map(|c| ["--change".to_owned(), c.to_string()])
        .collect::<Vec<_>>();
        cmd!(sh, "podman import --quiet --os linux --arch arm64 {changes...} {tarball} {ARM64_BUILDER}")
            .run()
            .with_context(|| format!("import {} as {ARM64_BUILDER}", tarball.display()))
    });
    let _ = std::fs::remove_file(&tarball);
    result
}

/// `races: rounds=100 lost=0 …` (the races test's summary line) as numbers by name.
fn race_counts(output: &str) -> Option<BTreeMap<String, f64>> {
    let line = output
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("races: "))?;
    Some(
        line.split_whitespace()
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                Some((key.to_owned(), value.parse().ok()?))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn race_counts_from_the_summary_line() {
        let output =
            "noise\nraces: rounds=100 lost=0 wrong_latest=2 failed_runs=1 pruned=450\nmore noise\n";
        let counts = race_counts(output).unwrap();
        assert_eq!(counts["rounds"], 100.0);
        assert_eq!(counts["lost"], 0.0);
        assert_eq!(counts["wrong_latest"], 2.0);
        assert_eq!(counts["failed_runs"], 1.0);
        assert_eq!(race_counts("no summary here"), None);
    }

    #[test]
    fn selections() {
        type Case<'a> = (&'a [&'a str], bool, Option<&'a [u8]>);
        let cases: [Case; 9] = [
            (&[], false, Some(&[1, 2, 4, 5, 6, 7, 8])),
            (&[], true, Some(&[1, 2, 3, 4, 5, 6, 7, 8])),
            (&["B4"], false, Some(&[4])),
            (&["b1,b2", "7"], false, Some(&[1, 2, 7])),
            (&["B3"], false, Some(&[3])),
            (&["B8"], false, Some(&[8])),
            (&["B9"], false, Some(&[9])),
            (&["B10"], false, None),
            (&["fast"], false, None),
        ];
        for (which, emulated, want) in cases {
            let which: Vec<String> = which.iter().map(|s| s.to_string()).collect();
            match want {
                Some(want) => assert_eq!(
                    selection(&which, emulated)
                        .unwrap()
                        .into_iter()
                        .collect::<Vec<_>>(),
                    want,
                    "{which:?}"
                ),
                None => assert_eq!(
                    crate::exit::code_of(&selection(&which, emulated).unwrap_err()),
                    2
                ),
            }
        }
    }

    #[test]
    fn sides_alternate() {
        let firsts: Vec<bool> = (0..4).map(|round| order(round)[0]).collect();
        assert_eq!(firsts, [true, false, true, false]);
        for round in 0..4 {
            let [a, b] = order(round);
            assert_ne!(a, b);
        }
    }

    #[test]
    fn specs_show_as_shell_lines_relative_to_the_root() {
        let spec = Spec::new([
            "/src/target/debug/xtask",
            "image",
            "push",
            "--to",
            "127.0.0.1:5000/bench/push",
        ])
        .env("CARGO_TARGET_DIR", "/src/target/bench/work")
        .env("X", "a b");
        assert_eq!(
            spec.shown(Path::new("/src")),
            "CARGO_TARGET_DIR=target/bench/work 'X=a b' target/debug/xtask image push --to 127.0.0.1:5000/bench/push"
        );
    }

    #[test]
    fn compressed_sizes() {
        let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":10,
                      "digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},
            "layers":[{"size":100,"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111"},
                      {"size":1000,"digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222"}]}"#;
        assert_eq!(compressed_size(manifest).unwrap(), 1110);
        assert!(compressed_size(b"{}").is_err());
    }
}
