//! The throwaway registry of `cargo xtask image release --local`: a distribution registry on a free loopback port,
//! with its storage in a temporary directory and deletion enabled (so pruning works as in production).
//!
//! The distribution binary is used where it is installed (Debian's `docker-registry`); otherwise the official
//! registry image runs with podman. Both read the same generated config file.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use xshell::{cmd, Shell};

/// The official registry image, for machines without the distribution binary; `XTASK_REGISTRY_IMAGE` names another
/// (and then is used even where the binary is installed).
pub const REGISTRY_IMAGE: &str = "docker.io/library/registry:2";

/// Where the storage lives inside the official image.
const CONTAINER_STORAGE: &str = "/var/lib/registry";

/// How the registry runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Runner {
    /// The distribution binary (`docker-registry serve CONFIG`), at this path.
    Binary(PathBuf),
    /// The registry image, run with podman.
    Podman { image: String },
}

/// A running throwaway registry. Dropping it does not stop it: call [`LocalRegistry::stop`], or leave it running
/// (`--keep`) and tell the user [`LocalRegistry::stop_hint`].
#[derive(Debug)]
pub struct LocalRegistry {
    /// `127.0.0.1:PORT`
    pub address: String,
    /// The temporary directory with the config and the storage.
    pub dir: PathBuf,
    /// The process id (binary) or container name (podman).
    handle: Handle,
}

#[derive(Debug)]
enum Handle {
    Process(std::process::Child),
    Container(String),
}

/// The registry's config: loopback only, storage in `storage`, deletion on, logs quiet.
pub fn config_yaml(address: &str, storage: &str) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
         maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {address}\n  headers:\n    X-Content-Type-Options: [nosniff]\n"
    )
}

/// The registry image with podman when one is named (`XTASK_REGISTRY_IMAGE`), else the binary if installed, else
/// podman with the official registry image.
pub fn choose_runner(binary: Option<PathBuf>, image_override: Option<String>) -> Runner {
    match (image_override, binary) {
        (Some(image), _) => Runner::Podman { image },
        (None, Some(path)) => Runner::Binary(path),
        (None, None) => Runner::Podman {
            image: REGISTRY_IMAGE.to_owned(),
        },
    }
}

/// Looks for the distribution binary on PATH (`docker-registry` on Debian, `registry` elsewhere).
pub fn find_binary(path_var: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let path_var = path_var?;
    for dir in std::env::split_paths(path_var) {
        for name in ["docker-registry", "registry"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// A free TCP port on the loopback interface (the OS picks it; the listener is closed before the registry binds).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("find a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

/// The commands a start runs, for `--dry-run` (the port and directory are placeholders then).
pub fn describe_start(runner: &Runner, address: &str, dir: &Path) -> Vec<String> {
    let config = dir.join("config.yml");
    match runner {
        Runner::Binary(path) => vec![format!("{} serve {}", path.display(), config.display())],
        Runner::Podman { image } => vec![format!(
            "podman run -d --rm --name {} --network=host -v {}:/etc/docker/registry/config.yml:ro \
             -v {}:{CONTAINER_STORAGE} {image}",
            container_name(address),
            config.display(),
            dir.join("storage").display()
        )],
    }
}

fn container_name(address: &str) -> String {
    format!(
        "xtask-registry-{}",
        address.rsplit(':').next().unwrap_or("0")
    )
}

impl LocalRegistry {
    /// Starts a registry on a free loopback port and waits until it answers `GET /v2/` (the tests and the bench;
    /// a release picks its port up front, see [`LocalRegistry::start_on`]).
    #[cfg(any(test, feature = "bench"))]
    pub fn start(sh: &Shell, runner: Runner) -> anyhow::Result<LocalRegistry> {
        // The port is free when picked but could be taken before the registry binds it: try a few.
        let mut last_err = None;
        for _ in 0..3 {
            let address = format!("127.0.0.1:{}", free_port()?);
            match Self::start_on(sh, runner.clone(), &address) {
                Ok(registry) => return Ok(registry),
                Err(err) => last_err = Some(err),
            }
        }
        Err(last_err.expect("tried at least once"))
    }

    /// Starts a registry on `address` (one [`free_port`] picked beforehand, so the plan can name it).
    pub fn start_on(sh: &Shell, runner: Runner, address: &str) -> anyhow::Result<LocalRegistry> {
        let dir = std::env::temp_dir().join(format!(
            "xtask-registry-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage)
            .with_context(|| format!("create the registry storage {}", storage.display()))?;
        Self::start_at(sh, &runner, address, &dir).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&dir);
        })
    }

    fn start_at(
        sh: &Shell,
        runner: &Runner,
        address: &str,
        dir: &Path,
    ) -> anyhow::Result<LocalRegistry> {
        let config = dir.join("config.yml");
        let handle = match runner {
            Runner::Binary(path) => {
                let storage = dir.join("storage");
                std::fs::write(&config, config_yaml(address, &storage.to_string_lossy()))
                    .with_context(|| format!("write {}", config.display()))?;
                let log = std::fs::File::create(dir.join("registry.log"))
                    .context("create the registry's log file")?;
                let mut command: std::process::Command = cmd!(sh, "{path} serve {config}").into();
                // Its own process group: a Ctrl-C meant for the xtask must not kill a --keep registry later.
                std::os::unix::process::CommandExt::process_group(&mut command, 0);
                let child = command
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()
                    .with_context(|| format!("start {}", path.display()))?;
                Handle::Process(child)
            }
            Runner::Podman { image } => {
                std::fs::write(&config, config_yaml(address, CONTAINER_STORAGE))
                    .with_context(|| format!("write {}", config.display()))?;
                let name = container_name(address);
                let config_mount =
                    format!("{}:/etc/docker/registry/config.yml:ro", config.display());
                let storage_mount =
                    format!("{}:{CONTAINER_STORAGE}", dir.join("storage").display());
                cmd!(
                    sh,
                    "podman run -d --rm --name {name} --network=host -v {config_mount} -v {storage_mount} {image}"
                )
                .quiet()
                .ignore_stdout()
                .run()
                .with_context(|| {
                    format!(
                        "start the registry image {image} with podman; install the distribution registry \
                         instead (Debian/Ubuntu: `apt-get install docker-registry`), or point \
                         XTASK_REGISTRY_IMAGE at a registry image you have"
                    )
                })?;
                Handle::Container(name)
            }
        };
        let mut registry = LocalRegistry {
            address: address.to_owned(),
            dir: dir.to_owned(),
            handle,
        };
        if let Err(err) = registry.wait_ready(Duration::from_secs(20)) {
            let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
            registry.halt(sh);
            return Err(err.context(format!(
                "the throwaway registry on {address} did not come up{}",
                if log.trim().is_empty() {
                    String::new()
                } else {
                    format!(":\n{}", log.trim())
                }
            )));
        }
        Ok(registry)
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let url = format!("http://{}/v2/", self.address);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            .build()
            .into();
        let started = Instant::now();
        loop {
            if let Handle::Process(child) = &mut self.handle {
                if let Some(status) = child.try_wait()? {
                    anyhow::bail!("the registry exited at once ({status})");
                }
            }
            if let Ok(response) = agent.get(&url).call() {
                if response.status() == 200 {
                    return Ok(());
                }
            }
            if started.elapsed() > timeout {
                anyhow::bail!(
                    "GET {url} did not answer 200 within {} s",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The storage directory, on the host.
    pub fn storage(&self) -> PathBuf {
        self.dir.join("storage")
    }

    /// How to stop it by hand (after `--keep`).
    pub fn stop_hint(&self) -> String {
        match &self.handle {
            Handle::Process(child) => {
                format!("kill {} && rm -rf {}", child.id(), self.dir.display())
            }
            Handle::Container(name) => {
                format!("podman stop {name} && rm -rf {}", self.dir.display())
            }
        }
    }

    fn halt(&mut self, sh: &Shell) {
        match &mut self.handle {
            Handle::Process(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Handle::Container(name) => {
                let name = name.clone();
                let _ = cmd!(sh, "podman stop -t 2 {name}")
                    .quiet()
                    .ignore_stdout()
                    .ignore_stderr()
                    .run();
            }
        }
    }

    /// Stops the registry and removes its storage.
    pub fn stop(mut self, sh: &Shell) {
        self.halt(sh);
        // Files a rootless container wrote may belong to a sub-uid; what cannot be removed stays in the temp dir.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_enables_delete_on_loopback() {
        let yaml = config_yaml("127.0.0.1:5123", "/tmp/r/storage");
        for line in [
            "  addr: 127.0.0.1:5123\n",
            "    rootdirectory: /tmp/r/storage\n",
            "  delete:\n    enabled: true\n",
        ] {
            assert!(yaml.contains(line), "{line:?} in\n{yaml}");
        }
    }

    #[test]
    fn runner_prefers_the_binary() {
        let dir = std::env::temp_dir().join(format!("xtask-find-registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path_var = std::env::join_paths([dir.join("nothing"), dir.clone()]).unwrap();
        assert_eq!(find_binary(Some(&path_var)), None);
        std::fs::write(dir.join("docker-registry"), "").unwrap();
        let found = find_binary(Some(&path_var));
        assert_eq!(found, Some(dir.join("docker-registry")));
        std::fs::remove_dir_all(&dir).unwrap();

        let cases = [
            (
                Some("/usr/bin/docker-registry"),
                None,
                Runner::Binary("/usr/bin/docker-registry".into()),
            ),
            (
                None,
                None,
                Runner::Podman {
                    image: REGISTRY_IMAGE.into(),
                },
            ),
            (
                None,
                Some("localhost/registry:2"),
                Runner::Podman {
                    image: "localhost/registry:2".into(),
                },
            ),
            (
                Some("/usr/bin/docker-registry"),
                Some("localhost/registry:2"),
                Runner::Podman {
                    image: "localhost/registry:2".into(),
                },
            ),
        ];
        for (binary, image, want) in cases {
            assert_eq!(
                choose_runner(binary.map(PathBuf::from), image.map(str::to_owned)),
                want
            );
        }
    }

    #[test]
    fn dry_run_describes_the_start() {
        let dir = Path::new("/tmp/xtask-registry-x");
        assert_eq!(
            describe_start(
                &Runner::Binary("/usr/bin/docker-registry".into()),
                "127.0.0.1:PORT",
                dir
            ),
            ["/usr/bin/docker-registry serve /tmp/xtask-registry-x/config.yml"]
        );
        let podman = describe_start(
            &Runner::Podman {
                image: REGISTRY_IMAGE.into(),
            },
            "127.0.0.1:5000",
            dir,
        );
        assert_eq!(
            podman,
            [
                "podman run -d --rm --name xtask-registry-5000 --network=host \
              -v /tmp/xtask-registry-x/config.yml:/etc/docker/registry/config.yml:ro \
              -v /tmp/xtask-registry-x/storage:/var/lib/registry docker.io/library/registry:2"
            ]
        );
    }

    /// The real binary: starts, answers, stops.
    #[test]
    fn starts_and_stops_the_installed_binary() {
        let binary = find_binary(std::env::var_os("PATH").as_deref())
            .expect("docker-registry on PATH (`cargo xtask ci` installs it)");
        let sh = Shell::new().unwrap();
        let registry = LocalRegistry::start(&sh, Runner::Binary(binary)).unwrap();
        let url = format!("http://{}/v2/", registry.address);
        assert_eq!(ureq::get(&url).call().unwrap().status(), 200);
        let dir = registry.dir.clone();
        assert!(registry.storage().is_dir());
        registry.stop(&sh);
        assert!(ureq::get(&url).call().is_err());
        assert!(!dir.exists());
    }
}
