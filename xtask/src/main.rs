//! `cargo xtask`: the image pipeline, the test bench and the benchmarks, written in Rust next to the app.

#[cfg(feature = "bench")]
mod bench;
mod ci;
mod ci_lint;
mod config;
mod exit;
mod flags;
mod github;
mod image;
mod oci;
mod registry;
mod session;
mod signals;

use std::path::{Path, PathBuf};

use session::Session;

fn main() {
    let code = match run() {
        Ok(()) => 0,
        Err(err) => {
            // Errors quote what registries said: nothing in them may start a workflow command or an escape.
            eprintln!("{}", github::printable(&format!("error: {err:#}")));
            exit::code_of(&err)
        }
    };
    std::process::exit(code);
}

fn run() -> anyhow::Result<()> {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let flags = flags::parse(args.clone()).map_err(|err| {
        if err.is_help() {
            print!("{}", flags::help_for(&args, &err.to_string()));
            std::process::exit(0);
        }
        exit::invalid(format!("{err}\nRun `cargo xtask --help` for usage"))
    })?;
    let mut session = Session::new(project_root())?;
    // The session holds the credentials now; no child process gets them from here on.
    registry::credentials::remove_secrets_from_environment();
    let session = &mut session;
    match flags.subcommand {
        flags::XtaskCmd::Ci(cmd) => cmd.run(&session.sh),
        flags::XtaskCmd::Image(image) => match image.subcommand {
            flags::ImageCmd::Build(cmd) => cmd.run(session),
            flags::ImageCmd::Manifest(cmd) => cmd.run(session),
            flags::ImageCmd::Meta(cmd) => cmd.run(session),
            flags::ImageCmd::Push(cmd) => cmd.run(session),
            flags::ImageCmd::Release(cmd) => cmd.run(session),
            flags::ImageCmd::Prune(cmd) => cmd.run(session),
            flags::ImageCmd::Verify(cmd) => cmd.run(session),
        },
        flags::XtaskCmd::Bench(cmd) => run_bench(cmd, session, &args),
    }
}

#[cfg(feature = "bench")]
fn run_bench(
    cmd: flags::Bench,
    session: &mut Session,
    _args: &[std::ffi::OsString],
) -> anyhow::Result<()> {
    cmd.run(&session.sh)
}

/// The bench lives behind the `bench` feature: build the xtask with it and run the same command there.
#[cfg(not(feature = "bench"))]
fn run_bench(
    _cmd: flags::Bench,
    session: &mut Session,
    args: &[std::ffi::OsString],
) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!("==> build the xtask with the bench (cargo run -p xtask --features bench)");
    let status = std::process::Command::new(cargo)
        .current_dir(&session.root)
        .args([
            "run",
            "--quiet",
            "--package",
            "xtask",
            "--features",
            "bench",
            "--",
        ])
        .args(args)
        .status()
        .map_err(|err| anyhow::anyhow!("could not run cargo to build the bench ({err})"))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => std::process::exit(code),
        None => anyhow::bail!("the bench was stopped by a signal ({status})"),
    }
}

/// The workspace root: the checkout the command runs in (the nearest directory up from here with `Cargo.toml` and
/// `xtask/Cargo.toml`), else the one this binary was built from, whose xtask crate lives one level below it.
fn project_root() -> PathBuf {
    let checkout = std::env::current_dir().ok().and_then(|dir| {
        dir.ancestors()
            .find(|d| d.join("Cargo.toml").is_file() && d.join("xtask/Cargo.toml").is_file())
            .map(Path::to_path_buf)
    });
    checkout.unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask is inside the workspace")
            .to_path_buf()
    })
}
