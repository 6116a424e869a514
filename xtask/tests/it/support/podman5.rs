//! Debian trixie's podman 5 (the test bench's `localhost/xtask/podman5:trixie`, from `cargo xtask ci --setup-only`),
//! run `--privileged` by root's podman as a podman in podman, for the tests that build under a newer podman than
//! this machine's. It runs this very xtask binary (built here against an older glibc, so it runs on trixie's),
//! cargo and rustc (for `cargo metadata`, whose `--filter-platform` for the build's SBOM asks rustc for the target's
//! cfg, and which downloads the crates' manifests: through this machine's CA bundle, into a cargo home kept for these
//! runs), on the host's network (a test registry on loopback is reachable), in an empty
//! storage per build that also reads, read-only, a store of podman 5's own holding only the Rust builder, as a CI
//! runner starts with only the base images it pulls.
//!
//! One such test at a time per checkout: [`Podman5::prepare`] holds a lock until dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{ci_env, podman, run, stdout, target_dir};

/// The content key label every bench image carries (`cargo xtask ci` rebuilds an image when it changes).
const KEY_OF: &str = "{{index .Labels \"xtask.content-key\"}}";

pub struct Podman5 {
    image: String,
    /// The store holding only the Rust builder (its graphroot and runroot are `root/` and `run/` in it).
    base: PathBuf,
    _one_at_a_time: File,
}

impl Podman5 {
    /// The podman-5 image from the bench, with `builder` (an image of root's podman) in its base store: copied
    /// over (`podman save`, then podman 5's `podman load`) when the store has another content key.
    pub fn prepare(builder: &str) -> Podman5 {
        let image = ci_env().get("XTASK_PODMAN5").cloned().expect(
            "XTASK_PODMAN5 is not set and target/ci/env does not name it: run `cargo xtask ci --setup-only` first",
        );
        let base = target_dir().join("tests/podman5-base");
        std::fs::create_dir_all(&base).unwrap();
        let lock = File::create(target_dir().join("tests/podman5.lock")).unwrap();
        lock.lock().unwrap();
        let podman5 = Podman5 {
            image,
            base,
            _one_at_a_time: lock,
        };
        podman5.sync_base(builder);
        podman5
    }

    /// storage.conf of an overlay storage with its graphroot and runroot in `dir`, reading `additional` too.
    fn storage_conf(dir: &Path, additional: Option<&Path>) -> String {
        let mut conf = format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            dir.join("root").display(),
            dir.join("run").display()
        );
        if let Some(store) = additional {
            conf.push_str(&format!(
                "\n[storage.options]\nadditionalimagestores = [\"{}\"]\n",
                store.join("root").display()
            ));
        }
        conf
    }

    /// `podman run` of the podman-5 image: privileged (its podman mounts overlays and makes namespaces), the host's
    /// network, the bench's containers.conf where it needed one (runc and explicit ulimits suit podman 5 here as
    /// well), `dirs` mounted at the same paths (read-only where false), the xtask and cargo on PATH, the Rust
    /// toolchain's sysroot at its own path (rustc finds its libraries beside it) as RUSTC, this machine's CA bundle
    /// (which holds a TLS-intercepting proxy's CA, where there is one) for cargo, a cargo home kept from run to run
    /// (`target/tests/podman5-cargo`), and its podman using the storage `storage_conf` describes.
    fn run_in(&self, dirs: &[(&Path, bool)], storage_conf: &Path) -> Command {
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
        let sysroot = PathBuf::from(stdout(Command::new(rustc).args(["--print", "sysroot"])));
        let ca_bundle = std::env::var("SSL_CERT_FILE")
            .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".to_owned());
        let cargo_home = target_dir().join("tests/podman5-cargo");
        std::fs::create_dir_all(&cargo_home).unwrap();
        let mut command = podman();
        command.args(["run", "--rm", "--privileged", "--network=host"]);
        if let Some(conf) = ci_env().get("CONTAINERS_CONF") {
            command
                .arg("--volume")
                .arg(format!("{conf}:/etc/containers/containers.conf:ro"));
        }
        for (dir, writable) in dirs {
            let mode = if *writable { "rw" } else { "ro" };
            command
                .arg("--volume")
                .arg(format!("{}:{}:{mode}", dir.display(), dir.display()));
        }
        command
            .arg("--volume")
            .arg(format!(
                "{}:/usr/local/bin/xtask:ro",
                env!("CARGO_BIN_EXE_xtask")
            ))
            .arg("--volume")
            .arg(format!("{}:/usr/local/bin/cargo:ro", env!("CARGO")))
            .args(["--env", "CARGO=/usr/local/bin/cargo"])
            .arg("--volume")
            .arg(format!("{}:{}:ro", sysroot.display(), sysroot.display()))
            .arg("--env")
            .arg(format!("RUSTC={}", sysroot.join("bin/rustc").display()))
            .arg("--volume")
            .arg(format!("{ca_bundle}:/etc/ssl/certs/ca-certificates.crt:ro"))
            .args([
                "--env",
                "CARGO_HTTP_CAINFO=/etc/ssl/certs/ca-certificates.crt",
            ])
            .arg("--volume")
            .arg(format!("{}:/root/.cargo", cargo_home.display()))
            .arg("--env")
            .arg(format!(
                "CONTAINERS_STORAGE_CONF={}",
                storage_conf.display()
            ));
        command
    }

    /// Loads `builder` into the base store unless it holds it at the same content key.
    fn sync_base(&self, builder: &str) {
        let want = stdout(podman().args(["image", "inspect", "--format", KEY_OF, builder]));
        let conf = self.base.join("storage.conf");
        std::fs::write(&conf, Self::storage_conf(&self.base, None)).unwrap();
        let mut inspect = self.run_in(&[(&self.base, true)], &conf);
        inspect
            .arg(&self.image)
            .args(["podman", "image", "inspect", "--format", KEY_OF, builder]);
        let have = inspect.output().unwrap();
        if have.status.success() && String::from_utf8_lossy(&have.stdout).trim() == want {
            return;
        }
        let archive = self.base.join("builder.tar");
        let _ = std::fs::remove_file(&archive);
        run(podman().args(["save", "--output", archive.to_str().unwrap(), builder]));
        let mut load = self.run_in(&[(&self.base, true)], &conf);
        load.arg(&self.image).args([
            "podman",
            "load",
            "--quiet",
            "--input",
            archive.to_str().unwrap(),
        ]);
        run(&mut load);
        std::fs::remove_file(&archive).unwrap();
    }

    /// `xtask ARGS…` under podman 5, in `checkout` (the xtask's project is the checkout it runs in), with its
    /// target directory `target` and an empty storage of its own in `storage` that reads the base store. All three
    /// lie under `work`, which is mounted whole; the arguments follow.
    pub fn xtask(&self, work: &Path, checkout: &Path, storage: &Path, target: &Path) -> Command {
        std::fs::create_dir_all(storage).unwrap();
        let conf = storage.with_extension("conf");
        std::fs::write(&conf, Self::storage_conf(storage, Some(&self.base))).unwrap();
        let mut command = self.run_in(&[(work, true), (&self.base, false)], &conf);
        command
            .arg("--workdir")
            .arg(checkout)
            .arg("--env")
            .arg(format!("CARGO_TARGET_DIR={}", target.display()))
            .args([&self.image, "xtask"]);
        command
    }

    /// The version podman 5 reports (`podman version 5.4.2`).
    pub fn version(&self) -> String {
        let mut command = podman();
        command
            .args(["run", "--rm", &self.image])
            .args(["podman", "--version"]);
        stdout(&mut command)
    }
}
