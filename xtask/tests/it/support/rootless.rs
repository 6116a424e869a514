//! An unprivileged user with rootless podman, for the tests that build as one: the user (made once, with
//! /etc/subuid and /etc/subgid entries), its podman set up as the test bench's (native overlay, the bench's
//! containers.conf), the xtask, cargo and rustc put where it can run them, its own clones of the checkout, the Rust
//! builder in its storage, and empty storages of its own beside that one. One such test at a time, whichever
//! checkout runs it (the user's storage is shared): [`Rootless::prepare`] holds a lock until dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::registry::sha256;
use super::{ci_env, clone_checkout, podman, run, stdout, target_dir};

pub const USER: &str = "xtask-rootless";

pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

/// rustc and the libraries it loads, under `to` as `bin/` and `lib/` of a sysroot: `cargo metadata
/// --filter-platform` (the build's SBOM) asks rustc for the target's cfg, and the toolchain may sit in a home only
/// root can enter. Hard links where `to` is on the toolchain's filesystem (its libraries are hundreds of MB), copies
/// elsewhere.
fn link_rustc(to: &Path) {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let sysroot = PathBuf::from(stdout(Command::new(rustc).args(["--print", "sysroot"])));
    let mut files = vec![(sysroot.join("bin/rustc"), to.join("bin/rustc"))];
    for entry in std::fs::read_dir(sysroot.join("lib")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            files.push((path.clone(), to.join("lib").join(path.file_name().unwrap())));
        }
    }
    for (from, to) in files {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to)
                .unwrap_or_else(|err| panic!("copy {}: {err}", from.display()));
        }
    }
}

/// The test user's setup; its scratch directory is removed when dropped.
pub struct Rootless {
    pub home: PathBuf,
    /// `/tmp/xtask-rootless-<uid>-<checkout>`: `bin/` (xtask, cargo), `rust/` (rustc), `run/` (XDG_RUNTIME_DIR),
    /// `target/`, clones, storages; one per checkout, so that removing it never pulls files from under another's
    /// test.
    pub share: PathBuf,
    _one_at_a_time: File,
}

impl Rootless {
    /// The user, made on first use, with its podman configured and the binaries it needs. Needs root.
    pub fn prepare() -> Rootless {
        assert!(is_root(), "making the rootless test user needs root");
        let lock = File::create("/tmp/xtask-rootless.lock").unwrap();
        lock.lock().unwrap();
        let (uid, home) = ensure_user();
        let owner = format!("{USER}:{USER}");

        // The user's podman: native overlay (rootless may otherwise pick vfs) and, when the bench needed one, the
        // same containers.conf (the user may not be able to read it under target/).
        let config = home.join(".config/containers");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(
            config.join("storage.conf"),
            "[storage]\ndriver = \"overlay\"\n",
        )
        .unwrap();
        match ci_env().get("CONTAINERS_CONF") {
            Some(conf) => {
                std::fs::copy(conf, config.join("containers.conf")).unwrap();
            }
            None => {
                let _ = std::fs::remove_file(config.join("containers.conf"));
            }
        }
        run(Command::new("chown")
            .arg("-R")
            .arg(&owner)
            .arg(home.join(".config")));

        // Binaries the user can run: the xtask and cargo (for `cargo metadata`), which may sit in unreadable homes.
        let checkout = sha256(target_dir().to_string_lossy().as_bytes());
        let share = PathBuf::from(format!("/tmp/xtask-rootless-{uid}-{}", &checkout[7..15]));
        let _ = std::fs::remove_dir_all(&share);
        for dir in ["bin", "run", "target"] {
            std::fs::create_dir_all(share.join(dir)).unwrap();
        }
        std::fs::copy(env!("CARGO_BIN_EXE_xtask"), share.join("bin/xtask")).unwrap();
        std::fs::copy(env!("CARGO"), share.join("bin/cargo")).unwrap();
        link_rustc(&share.join("rust"));
        run(Command::new("chmod").args(["-R", "a+rX"]).arg(&share));
        run(Command::new("chown")
            .arg(&owner)
            .arg(share.join("run"))
            .arg(share.join("target")));
        run(Command::new("chmod").arg("700").arg(share.join("run")));
        Rootless {
            home,
            share,
            _one_at_a_time: lock,
        }
    }

    /// `args` as the user, with a clean environment (HOME, USER, PATH, XDG_RUNTIME_DIR), from a directory it can
    /// enter (this checkout may sit in one only its owner can, mode 0700).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("runuser");
        command
            .current_dir(&self.share)
            .args(["-u", USER, "--", "env", "-i"])
            .arg(format!("HOME={}", self.home.display()))
            .arg(format!("USER={USER}"))
            .arg("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .arg(format!(
                "XDG_RUNTIME_DIR={}",
                self.share.join("run").display()
            ))
            .args(args);
        command
    }

    /// The `env` words that run the user's copy of the xtask: its cargo and rustc, its target directory under
    /// `target`, and git told that a clone made by root is safe to read (for the revision label). `cargo xtask`
    /// arguments follow.
    pub fn xtask_words(&self, target: &Path) -> Vec<String> {
        vec![
            format!("CARGO={}", self.share.join("bin/cargo").display()),
            format!("RUSTC={}", self.share.join("rust/bin/rustc").display()),
            format!("CARGO_TARGET_DIR={}", target.display()),
            "GIT_CONFIG_COUNT=1".to_owned(),
            "GIT_CONFIG_KEY_0=safe.directory".to_owned(),
            "GIT_CONFIG_VALUE_0=*".to_owned(),
            self.share.join("bin/xtask").display().to_string(),
        ]
    }

    /// A directory under the share the user owns.
    pub fn own_dir(&self, name: &str) -> PathBuf {
        let dir = self.share.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        run(Command::new("chown")
            .arg(format!("{USER}:{USER}"))
            .arg(&dir));
        dir
    }

    /// The `env` words that give the user's podman an empty storage of its own at `share/<name>`, which also reads
    /// the base store ([`Rootless::sync_base_image`]) read-only. Its data directory is new as well: podman keeps
    /// the storage paths of its first run in a database there and would otherwise go on using the user's usual
    /// storage whatever storage.conf says.
    pub fn empty_storage(&self, name: &str) -> Vec<String> {
        let data = self.own_dir(name);
        let conf = self.share.join(format!("{name}.conf"));
        std::fs::write(
            &conf,
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n\n[storage.options]\n\
                 additionalimagestores = [\"{}\"]\n",
                data.join("containers/storage").display(),
                self.share.join("run/containers").display(),
                self.base_data().join("containers/storage").display()
            ),
        )
        .unwrap();
        run(Command::new("chmod").arg("a+r").arg(&conf));
        vec![
            format!("XDG_DATA_HOME={}", data.display()),
            format!("CONTAINERS_STORAGE_CONF={}", conf.display()),
        ]
    }

    /// A clone of this checkout's HEAD at `share/<path>`, readable by the user: this checkout may sit where others
    /// cannot read (a home of mode 0700, a `mktemp -d`), and the user needs to read the build context.
    pub fn clone_checkout(&self, path: &str) -> PathBuf {
        let checkout = self.share.join(path);
        std::fs::create_dir_all(checkout.parent().unwrap()).unwrap();
        clone_checkout(&checkout);
        run(Command::new("chmod").args(["-R", "a+rX"]).arg(&self.share));
        checkout
    }

    /// `image` (one root's podman has, labelled with `xtask.content-key`, as the test bench's are) in the user's
    /// own storage, copied over when the user's copy has another content key.
    pub fn sync_image(&self, image: &str) {
        self.sync_into(image, &[]);
    }

    /// `image` in a store of the user's that holds nothing else, kept from run to run (the base an empty storage
    /// reads: the user's own storage also holds earlier builds' layers, which a build would take as its cache).
    pub fn sync_base_image(&self, image: &str) {
        self.sync_into(image, &self.base_words());
    }

    fn base_words(&self) -> Vec<String> {
        vec![format!("XDG_DATA_HOME={}", self.base_data().display())]
    }

    /// The data directory of the base store (its storage is `containers/storage` in it).
    fn base_data(&self) -> PathBuf {
        self.home.join(".local/share/xtask-base")
    }

    /// Copies `image` into the storage the `env` words `store` select, unless it has it at the same content key.
    fn sync_into(&self, image: &str, store: &[String]) {
        let key_of = "{{index .Labels \"xtask.content-key\"}}";
        let root_key = stdout(podman().args(["image", "inspect", "--format", key_of, image]));
        let with = |args: &[&str]| {
            let mut words: Vec<&str> = store.iter().map(String::as_str).collect();
            words.extend(args);
            self.command(&words)
        };
        let user_key = with(&["podman", "image", "inspect", "--format", key_of, image])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&user_key.stdout).trim() == root_key {
            return;
        }
        let archive = self.share.join("image.tar");
        run(podman().args(["save", "--output", archive.to_str().unwrap(), image]));
        run(Command::new("chmod").arg("a+r").arg(&archive));
        run(&mut with(&[
            "podman",
            "load",
            "--quiet",
            "--input",
            archive.to_str().unwrap(),
        ]));
        std::fs::remove_file(&archive).unwrap();
    }
}

impl Drop for Rootless {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.share);
    }
}

/// Free subordinate id range for a new /etc/subuid or /etc/subgid entry (after every existing one).
fn next_subid_start(file: &str) -> u64 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut parts = line.split(':').skip(1);
            Some(parts.next()?.parse::<u64>().ok()? + parts.next()?.parse::<u64>().ok()?)
        })
        .max()
        .unwrap_or(100_000)
        .max(100_000)
}

/// The test user with subuid/subgid entries, created on first use; returns (uid, home).
fn ensure_user() -> (u32, PathBuf) {
    if !Command::new("id")
        .args(["-u", USER])
        .output()
        .unwrap()
        .status
        .success()
    {
        run(Command::new("useradd").args(["--create-home", "--shell", "/bin/sh", USER]));
    }
    for (file, flag) in [
        ("/etc/subuid", "--add-subuids"),
        ("/etc/subgid", "--add-subgids"),
    ] {
        let has = std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with(&format!("{USER}:")));
        if !has {
            let start = next_subid_start(file);
            run(Command::new("usermod").args([flag, &format!("{start}-{}", start + 65_535), USER]));
        }
    }
    let uid: u32 = stdout(Command::new("id").args(["-u", USER]))
        .parse()
        .unwrap();
    let home = stdout(Command::new("getent").args(["passwd", USER]));
    let home = PathBuf::from(home.split(':').nth(5).unwrap());
    (uid, home)
}
