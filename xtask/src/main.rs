//! `cargo xtask`: the image pipeline, the test bench and the benchmarks, written in Rust next to the app.

mod bench;
mod ci;
mod ci_lint;
mod config;
mod exit;
mod flags;
mod github;
mod image;
mod registry;

use std::path::{Path, PathBuf};

use xshell::Shell;

fn main() {
    let code = match run() {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("error: {err:#}");
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
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    match flags.subcommand {
        flags::XtaskCmd::Ci(cmd) => cmd.run(&sh),
        flags::XtaskCmd::Image(image) => match image.subcommand {
            flags::ImageCmd::Build(cmd) => cmd.run(&sh),
            flags::ImageCmd::Manifest(cmd) => cmd.run(&sh),
            flags::ImageCmd::Meta(cmd) => cmd.run(&sh),
            flags::ImageCmd::Push(cmd) => cmd.run(&sh),
            flags::ImageCmd::Release(cmd) => cmd.run(&sh),
            flags::ImageCmd::Prune(cmd) => cmd.run(&sh),
        },
        flags::XtaskCmd::Bench(cmd) => cmd.run(&sh),
    }
}

/// The workspace root: the xtask crate lives one level below it.
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}
