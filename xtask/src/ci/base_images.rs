//! The local base images the tests build on, since no image can be pulled here: a busybox per platform and a Rust
//! builder (Debian trixie's rustc with the cross toolchain and this machine's CA bundle); and an image with Debian
//! trixie's podman 5, in which the tests run the build again under a newer podman than this machine's.
//!
//! Each carries a label with a content key, a hash of its recipe (and of the CA bundle for the builder): an image
//! with the current key is reused, any other is rebuilt. Both come from `mmdebstrap`, so nothing is pulled from
//! a container registry.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use anyhow::Context;
use xshell::{cmd, Shell};

use crate::oci::{Digest, Platform};

pub const RUST_BUILDER: &str = "localhost/xtask/rust-builder:trixie";
/// Debian trixie with its podman (5.4, with buildah 1.39 inside), run `--privileged` as a podman in podman.
pub const PODMAN5: &str = "localhost/xtask/podman5:trixie";
pub const KEY_LABEL: &str = "xtask.content-key";
const SUITE: &str = "trixie";
const MIRROR: &str = "http://deb.debian.org/debian";
/// Bump when a recipe changes in a way its text below does not show.
const RECIPE_VERSION: &str = "1";

pub fn busybox(platform: Platform) -> String {
    format!("localhost/xtask/busybox:{}", platform.arch)
}

/// The Rust builder's packages for a build machine of `host`: native rustc plus the other arch's libstd and
/// cross gcc (the Containerfile links statically, so the cross libc6-dev is needed too).
pub fn builder_packages(host: Platform) -> Vec<String> {
    let (foreign, cross) = match host.arch {
        "arm64" => ("amd64", "x86-64-linux-gnu libc6-dev-amd64-cross"),
        _ => ("arm64", "aarch64-linux-gnu libc6-dev-arm64-cross"),
    };
    let mut packages: Vec<String> = ["rustc", "cargo", "gcc", "libc6-dev", "ca-certificates"]
        .map(str::to_owned)
        .into();
    packages.push(format!("libstd-rust-dev:{foreign}"));
    let mut cross = cross.split(' ');
    packages.push(format!("gcc-{}", cross.next().unwrap_or_default()));
    packages.extend(cross.map(str::to_owned));
    packages
}

/// Environment of the builder image: cargo and TLS clients trust the bundle copied from this machine, which
/// includes any TLS-intercepting proxy's CA.
pub const BUILDER_ENV: [&str; 3] = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "CARGO_HTTP_CAINFO=/etc/ssl/certs/ca-certificates.crt",
    "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
];

pub fn builder_key(host: Platform, ca_bundle: &[u8]) -> String {
    content_key(&[
        "rust-builder",
        RECIPE_VERSION,
        SUITE,
        MIRROR,
        host.arch,
        &builder_packages(host).join(","),
        &BUILDER_ENV.join(","),
        Digest::of(ca_bundle).hex(),
    ])
}

/// What the podman-5 image holds: podman (its dependencies bring conmon, netavark and the containers
/// configuration), runc (crun fails on this machine's hybrid cgroups, and this machine's containers.conf asks for
/// runc) and git (the xtask reads the commit's time and revision).
pub const PODMAN5_PACKAGES: [&str; 3] = ["podman", "runc", "git"];

pub fn podman5_key(host: Platform) -> String {
    content_key(&[
        "podman5",
        RECIPE_VERSION,
        SUITE,
        MIRROR,
        host.arch,
        &PODMAN5_PACKAGES.join(","),
    ])
}

pub fn busybox_key(platform: Platform) -> String {
    content_key(&[
        "busybox",
        RECIPE_VERSION,
        SUITE,
        MIRROR,
        platform.arch,
        "busybox-static",
    ])
}

fn content_key(parts: &[&str]) -> String {
    Digest::of(parts.join("\n").as_bytes()).hex()[..16].to_owned()
}

/// The content key label of a local image (None when the image is absent).
fn current_key(sh: &Shell, image: &str) -> Option<String> {
    let template = format!("{{{{index .Labels \"{KEY_LABEL}\"}}}}");
    cmd!(sh, "podman image inspect --format {template} {image}")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
        .map(|key| key.trim().to_owned())
}

fn image_id(sh: &Shell, image: &str) -> Option<String> {
    let template = "{{.Id}}";
    cmd!(sh, "podman image inspect --format {template} {image}")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
}

/// Imports a root filesystem tarball as `image`, then drops the image it replaced.
fn import(
    sh: &Shell,
    tarball: &Path,
    image: &str,
    platform: Platform,
    changes: &[String],
) -> anyhow::Result<()> {
    let old = image_id(sh, image);
    let arch = platform.arch;
    let changes: Vec<String> = changes
        .iter()
        .flat_map(|c| ["--change".to_owned(), c.clone()])
        .collect();
    cmd!(
        sh,
        "podman import --quiet --os linux --arch {arch} {changes...} {tarball} {image}"
    )
    .run()
    .with_context(|| format!("import {} as {image}", tarball.display()))?;
    if let Some(old) = old.filter(|old| Some(old) != image_id(sh, image).as_ref()) {
        // Still used by a container or another tag: then it stays, which is harmless.
        let _ = cmd!(sh, "podman rmi {old}")
            .quiet()
            .ignore_stderr()
            .ignore_stdout()
            .run();
    }
    Ok(())
}

/// A busybox image for `platform`: the static busybox from Debian, a link per applet, /tmp and the usual users.
pub fn ensure_busybox(sh: &Shell, dir: &Path, platform: Platform) -> anyhow::Result<()> {
    let image = busybox(platform);
    let key = busybox_key(platform);
    if current_key(sh, &image).as_deref() == Some(key.as_str()) {
        println!("base image: {image} is current");
        return Ok(());
    }
    println!("base image: building {image}");
    let work = dir.join(format!("busybox-{}", platform.arch));
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("remove {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    let extract = work.join("extract");
    let arch = platform.arch;
    cmd!(sh, "mmdebstrap --quiet --variant=extract --architectures={arch} --include=busybox-static {SUITE} {extract} {MIRROR}")
        .run()
        .with_context(|| format!("download busybox-static for {platform} with mmdebstrap"))?;
    let found = ["usr/bin/busybox", "bin/busybox"]
        .iter()
        .map(|p| extract.join(p))
        .find(|p| p.is_file())
        .with_context(|| format!("no busybox binary in {}", extract.display()))?;

    let rootfs = work.join("rootfs");
    let bin = rootfs.join("usr/bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::create_dir_all(rootfs.join("etc"))?;
    std::fs::create_dir_all(rootfs.join("tmp"))?;
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    std::fs::copy(&found, bin.join("busybox"))?;
    for (link, target) in [("bin", "usr/bin"), ("sbin", "usr/bin"), ("usr/sbin", "bin")] {
        symlink(target, rootfs.join(link))?;
    }
    // The applet list from the binary itself (an arm64 one runs through qemu, set up before this).
    let busybox_bin = bin.join("busybox");
    let applets = cmd!(sh, "{busybox_bin} --list")
        .quiet()
        .read()
        .with_context(|| format!("list the applets of {}", busybox_bin.display()))?;
    for applet in applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        symlink("busybox", bin.join(applet)).with_context(|| format!("link applet {applet}"))?;
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/home/nonroot:/bin/false\n\
         nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    std::fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\nnonroot:x:65532:\nnogroup:x:65534:\n",
    )?;

    let tarball = work.join("rootfs.tar");
    cmd!(
        sh,
        "tar --numeric-owner --owner=0 --group=0 -C {rootfs} -cf {tarball} ."
    )
    .run()
    .context("pack the busybox root filesystem")?;
    import(
        sh,
        &tarball,
        &image,
        platform,
        &[
            r#"CMD ["/bin/sh"]"#.to_owned(),
            format!("LABEL {KEY_LABEL}={key}"),
        ],
    )?;
    std::fs::remove_dir_all(&work).with_context(|| format!("remove {}", work.display()))?;
    Ok(())
}

/// The Rust builder for a build machine of `host`, made by mmdebstrap and imported with podman.
pub fn ensure_rust_builder(sh: &Shell, dir: &Path, host: Platform) -> anyhow::Result<()> {
    let ca_path = std::env::var("SSL_CERT_FILE")
        .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
    let ca_bundle = std::fs::read(&ca_path).with_context(|| {
        format!("read this machine's CA bundle {ca_path}; install ca-certificates")
    })?;
    let key = builder_key(host, &ca_bundle);
    if current_key(sh, RUST_BUILDER).as_deref() == Some(key.as_str()) {
        println!("base image: {RUST_BUILDER} is current");
        return Ok(());
    }
    println!(
        "base image: building {RUST_BUILDER} (mmdebstrap {SUITE}, about a minute, then the import)"
    );
    let arches = match host.arch {
        "arm64" => "arm64,amd64",
        _ => "amd64,arm64",
    };
    let include = builder_packages(host).join(",");
    let upload = format!("upload {ca_path} /etc/ssl/certs/ca-certificates.crt");
    let tarball = dir.join("rust-builder.tar");
    let result = cmd!(
        sh,
        "mmdebstrap --quiet --variant=apt --architectures={arches} --include={include}
            --dpkgopt=path-exclude=/usr/share/doc/* --dpkgopt=path-exclude=/usr/share/man/*
            --dpkgopt=path-exclude=/usr/share/locale/*
            --customize-hook={upload} {SUITE} {tarball} {MIRROR}"
    )
    .run()
    .context("create the Rust builder's root filesystem with mmdebstrap")
    .and_then(|()| {
        let mut changes: Vec<String> = BUILDER_ENV.iter().map(|e| format!("ENV {e}")).collect();
        changes.push(r#"CMD ["/bin/bash"]"#.to_owned());
        changes.push(format!("LABEL {KEY_LABEL}={key}"));
        import(sh, &tarball, RUST_BUILDER, host, &changes)
    });
    let _ = std::fs::remove_file(&tarball);
    result
}

/// The podman-5 image for a machine of `host`, made by mmdebstrap and imported with podman.
pub fn ensure_podman5(sh: &Shell, dir: &Path, host: Platform) -> anyhow::Result<()> {
    let key = podman5_key(host);
    if current_key(sh, PODMAN5).as_deref() == Some(key.as_str()) {
        println!("base image: {PODMAN5} is current");
        return Ok(());
    }
    println!(
        "base image: building {PODMAN5} (mmdebstrap {SUITE}, about a minute, then the import)"
    );
    let arch = host.arch;
    let include = PODMAN5_PACKAGES.join(",");
    let tarball = dir.join("podman5.tar");
    let result = cmd!(
        sh,
        "mmdebstrap --quiet --variant=apt --architectures={arch} --include={include}
            --dpkgopt=path-exclude=/usr/share/doc/* --dpkgopt=path-exclude=/usr/share/man/*
            --dpkgopt=path-exclude=/usr/share/locale/*
            {SUITE} {tarball} {MIRROR}"
    )
    .run()
    .context("create the podman-5 root filesystem with mmdebstrap")
    .and_then(|()| {
        import(
            sh,
            &tarball,
            PODMAN5,
            host,
            &[
                // podman 5 warns on every command that cgroups v1 (this machine's) is deprecated.
                "ENV PODMAN_IGNORE_CGROUPSV1_WARNING=1".to_owned(),
                r#"CMD ["/bin/bash"]"#.to_owned(),
                format!("LABEL {KEY_LABEL}={key}"),
            ],
        )
    });
    let _ = std::fs::remove_file(&tarball);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_packages_per_host() {
        let cases = [
            (
                Platform::LINUX_AMD64,
                "rustc cargo gcc libc6-dev ca-certificates libstd-rust-dev:arm64 gcc-aarch64-linux-gnu \
                 libc6-dev-arm64-cross",
            ),
            (
                Platform::LINUX_ARM64,
                "rustc cargo gcc libc6-dev ca-certificates libstd-rust-dev:amd64 gcc-x86-64-linux-gnu \
                 libc6-dev-amd64-cross",
            ),
        ];
        for (host, want) in cases {
            assert_eq!(
                builder_packages(host),
                want.split_whitespace().collect::<Vec<_>>(),
                "{host}"
            );
        }
    }

    #[test]
    fn keys_follow_their_inputs() {
        let a = builder_key(Platform::LINUX_AMD64, b"bundle one");
        assert_eq!(a, builder_key(Platform::LINUX_AMD64, b"bundle one"));
        assert_eq!(a.len(), 16);
        assert_ne!(a, builder_key(Platform::LINUX_AMD64, b"bundle two"));
        assert_ne!(a, builder_key(Platform::LINUX_ARM64, b"bundle one"));
        assert_ne!(
            busybox_key(Platform::LINUX_AMD64),
            busybox_key(Platform::LINUX_ARM64)
        );
        assert_eq!(
            busybox(Platform::LINUX_ARM64),
            "localhost/xtask/busybox:arm64"
        );
        assert_ne!(
            podman5_key(Platform::LINUX_AMD64),
            podman5_key(Platform::LINUX_ARM64)
        );
    }
}
