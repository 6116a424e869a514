//! Podman storages of the benchmark, apart from the user's own: a base store that holds only the base images, and
//! fresh (empty) or warm storages that see the base store read-only (`additionalimagestores`).
//!
//! An empty storage is what a CI runner starts with, minus the base image pull (the same for every side, and not
//! possible here: docker.io is unreachable). Each storage is selected with CONTAINERS_STORAGE_CONF, which every
//! podman the xtask starts inherits.

use std::path::{Path, PathBuf};

use anyhow::Context;
use xshell::{cmd, Shell};

/// A podman storage under the benchmark's directory, with its storage.conf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Storage {
    pub dir: PathBuf,
    /// The storage.conf to point CONTAINERS_STORAGE_CONF at.
    pub conf: PathBuf,
}

/// storage.conf for an overlay storage in `dir` (graphroot `dir/root`, runroot `dir/run`) that also reads the
/// images of `additional` (a read-only image store).
pub fn storage_conf(dir: &Path, additional: Option<&Path>) -> String {
    let mut conf = format!(
        "# Written by `cargo xtask bench`.\n[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
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

/// Mount points at or below `dir` in a /proc/self/mounts text, deepest first (the order to unmount them in).
pub fn mounts_under(mounts: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(1))
        .map(unescape_mount_path)
        .map(PathBuf::from)
        .filter(|point| point.starts_with(dir))
        .collect();
    found.sort_by_key(|point| std::cmp::Reverse(point.as_os_str().len()));
    found.dedup();
    found
}

/// /proc/self/mounts writes space, tab, newline and backslash as octal escapes.
fn unescape_mount_path(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(byte as char);
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

impl Storage {
    /// The storage in `dir`, as it is (a warm storage keeps what earlier runs left).
    pub fn open(dir: &Path, additional: Option<&Storage>) -> anyhow::Result<Storage> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let conf = dir.with_extension("conf");
        std::fs::write(
            &conf,
            storage_conf(dir, additional.map(|s| s.dir.as_path())),
        )
        .with_context(|| format!("write {}", conf.display()))?;
        Ok(Storage {
            dir: dir.to_owned(),
            conf,
        })
    }

    /// An empty storage in `dir` (whatever was there is removed first).
    pub fn fresh(sh: &Shell, dir: &Path, additional: Option<&Storage>) -> anyhow::Result<Storage> {
        remove_dir(sh, dir)?;
        Storage::open(dir, additional)
    }

    /// Removes the storage: its leftover mounts (the overlay driver keeps its home mounted), then its files.
    pub fn remove(self, sh: &Shell) -> anyhow::Result<()> {
        remove_dir(sh, &self.dir)?;
        let _ = std::fs::remove_file(&self.conf);
        Ok(())
    }

    /// The image ID of `image` in this storage, if it has it.
    pub fn image_id(&self, sh: &Shell, image: &str) -> Option<String> {
        image_id(sh, Some(&self.conf), image)
    }
}

/// The image ID of `image` in the storage `conf` names, or in the user's storage for None.
pub fn image_id(sh: &Shell, conf: Option<&Path>, image: &str) -> Option<String> {
    let template = "{{.Id}}";
    let mut command = cmd!(sh, "podman image inspect --format {template} {image}")
        .quiet()
        .ignore_stderr();
    if let Some(conf) = conf {
        command = command.env("CONTAINERS_STORAGE_CONF", conf);
    }
    command
        .read()
        .ok()
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
}

/// Makes `base` hold `images` as the user's storage has them (copied with skopeo when missing or different).
pub fn sync_base_images(sh: &Shell, base: &Storage, images: &[String]) -> anyhow::Result<()> {
    for image in images {
        let want = image_id(sh, None, image).with_context(|| {
            format!(
                "base image {image} is not in podman's storage; build the local base images with \
                 `cargo xtask ci --setup-only`, or name another with --rust-image"
            )
        })?;
        if base.image_id(sh, image).as_deref() == Some(want.as_str()) {
            continue;
        }
        println!("bench: copying {image} into the base store (once)");
        let to = format!(
            "containers-storage:[overlay@{}+{}]{image}",
            base.dir.join("root").display(),
            base.dir.join("run").display()
        );
        let from = format!("containers-storage:{image}");
        cmd!(sh, "skopeo copy --quiet {from} {to}")
            .quiet()
            .run()
            .with_context(|| format!("copy {image} into the base store {}", base.dir.display()))?;
    }
    Ok(())
}

fn remove_dir(sh: &Shell, dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for point in mounts_under(&mounts, dir) {
        cmd!(sh, "umount {point}")
            .quiet()
            .ignore_stderr()
            .run()
            .with_context(|| {
                format!("unmount {} to remove a benchmark storage", point.display())
            })?;
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confs() {
        let plain = storage_conf(Path::new("/b/base"), None);
        assert!(plain.contains("graphroot = \"/b/base/root\"\nrunroot = \"/b/base/run\"\n"));
        assert!(!plain.contains("additionalimagestores"));
        let fresh = storage_conf(Path::new("/b/s1"), Some(Path::new("/b/base")));
        assert!(fresh.contains("driver = \"overlay\""));
        assert!(fresh.contains("additionalimagestores = [\"/b/base/root\"]"));
    }

    #[test]
    fn mounts_below_a_directory_deepest_first() {
        let mounts = "\
/dev/vda / ext4 rw 0 0
/dev/vda /b/s1/root/overlay ext4 rw 0 0
overlay /b/s1/root/overlay/abc/merged overlay rw,lowerdir=/b/base/root/overlay/l/X 0 0
/dev/vda /b/s10/root/overlay ext4 rw 0 0
overlay /b/with\\040space/m overlay rw 0 0
proc /proc proc rw 0 0
";
        assert_eq!(
            mounts_under(mounts, Path::new("/b/s1")),
            [
                PathBuf::from("/b/s1/root/overlay/abc/merged"),
                PathBuf::from("/b/s1/root/overlay")
            ]
        );
        assert_eq!(
            mounts_under(mounts, Path::new("/b/with space")),
            [PathBuf::from("/b/with space/m")]
        );
        assert!(mounts_under(mounts, Path::new("/nowhere")).is_empty());
    }
}
