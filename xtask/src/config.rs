//! The pipeline's defaults from `[package.metadata.image]` in the root Cargo.toml, and the `Platform` type.
//!
//! Read through `cargo metadata` (JSON) so the xtask needs no TOML parser; the parsing itself is a pure function
//! of that JSON so it is tested without cargo.

// Shared by several stages that land one at a time; some helpers have no caller in every build yet.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use serde_json::Value;
use xshell::{cmd, Shell};

use crate::exit;

/// A target platform of the image. Only the two the Containerfile can cross-compile to are accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    /// `linux`
    pub os: &'static str,
    /// `amd64` or `arm64` (the OCI/Go spelling, as in TARGETARCH)
    pub arch: &'static str,
}

impl Platform {
    pub const LINUX_AMD64: Platform = Platform {
        os: "linux",
        arch: "amd64",
    };
    pub const LINUX_ARM64: Platform = Platform {
        os: "linux",
        arch: "arm64",
    };
    pub const ALL: [Platform; 2] = [Platform::LINUX_AMD64, Platform::LINUX_ARM64];

    /// `linux-amd64`: a file and directory name (target/image/linux-amd64/).
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.os, self.arch)
    }

    /// The Rust target triple the Containerfile compiles for this platform.
    pub fn rust_target(&self) -> &'static str {
        match self.arch {
            "amd64" => "x86_64-unknown-linux-gnu",
            _ => "aarch64-unknown-linux-gnu",
        }
    }

    /// The ELF machine (`e_machine`) a binary for this platform carries.
    pub fn elf_machine(&self) -> u16 {
        match self.arch {
            "amd64" => 62,
            _ => 183,
        }
    }

    /// Parses a comma-separated list (`linux/amd64,linux/arm64`), dropping duplicates and keeping the order.
    pub fn parse_list(list: &str) -> anyhow::Result<Vec<Platform>> {
        let mut out = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let platform: Platform = item.parse()?;
            if !out.contains(&platform) {
                out.push(platform);
            }
        }
        if out.is_empty() {
            return Err(exit::invalid(format!(
                "no platform in {list:?}; use linux/amd64, linux/arm64 or both, comma-separated"
            )));
        }
        Ok(out)
    }
}

impl FromStr for Platform {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Platform> {
        Platform::ALL
            .into_iter()
            .find(|p| p.to_string() == s.trim())
            .ok_or_else(|| {
                exit::invalid(format!(
                    "unsupported platform {s:?}; use linux/amd64 or linux/arm64"
                ))
            })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)
    }
}

/// `[package.metadata.image]` plus the package facts the labels need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageConfig {
    /// Image name (the local tag's repository, the title label).
    pub name: String,
    /// Path of the Containerfile, relative to the workspace root.
    pub containerfile: PathBuf,
    pub platforms: Vec<Platform>,
    /// Target repositories (ghcr.io/owner/name, docker.io/owner/name).
    pub targets: Vec<String>,
    /// Default build arguments (RUST_IMAGE, RUNTIME_IMAGE, …); `--build-arg` overrides them key by key.
    pub build_args: BTreeMap<String, String>,
    /// Registry repository used as a layer cache.
    pub cache_repo: Option<String>,
    /// The root package's version, license, repository URL and description (for the OCI labels).
    pub version: String,
    pub license: Option<String>,
    pub repository: Option<String>,
    pub description: Option<String>,
}

/// `cargo metadata` (JSON) of the workspace in the shell's directory: the root package's `[package.metadata]`
/// without a TOML parser.
pub fn cargo_metadata(sh: &Shell) -> anyhow::Result<Value> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let json = cmd!(
        sh,
        "{cargo} metadata --no-deps --format-version 1 --offline"
    )
    .quiet()
    .read()
    .context("run `cargo metadata` to read [package.metadata.image] from Cargo.toml")?;
    serde_json::from_str(&json).context("parse the JSON of `cargo metadata`")
}

impl ImageConfig {
    /// Reads the root package's configuration through `cargo metadata` in the shell's directory.
    pub fn load(sh: &Shell) -> anyhow::Result<ImageConfig> {
        let metadata = cargo_metadata(sh)?;
        let root = sh.current_dir().join("Cargo.toml");
        ImageConfig::from_metadata(&metadata, &root)
    }

    /// Picks the package whose manifest is `root_manifest` and reads its `metadata.image`.
    pub fn from_metadata(metadata: &Value, root_manifest: &Path) -> anyhow::Result<ImageConfig> {
        let packages = metadata["packages"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        let package = packages
            .iter()
            .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(root_manifest))
            .or_else(|| {
                // A root manifest reached through a symlink: fall back to the workspace root's package.
                let root = metadata["workspace_root"].as_str()?;
                packages.iter().find(|p| {
                    p["manifest_path"].as_str().map(Path::new)
                        == Some(&Path::new(root).join("Cargo.toml"))
                })
            })
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no package at {}; run cargo xtask from the project's checkout",
                    root_manifest.display()
                )
            })?;
        let image = &package["metadata"]["image"];
        if !image.is_object() {
            return Err(exit::invalid(format!(
                "{} has no [package.metadata.image] table; add one with name, platforms and targets",
                root_manifest.display()
            )));
        }
        let bad = |key: &str, want: &str| {
            exit::invalid(format!(
                "[package.metadata.image] {key} in {} must be {want}",
                root_manifest.display()
            ))
        };
        let string = |key: &str| -> anyhow::Result<Option<String>> {
            match &image[key] {
                Value::Null => Ok(None),
                Value::String(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
                _ => Err(bad(key, "a non-empty string")),
            }
        };
        let strings = |key: &str| -> anyhow::Result<Vec<String>> {
            match &image[key] {
                Value::Null => Ok(Vec::new()),
                Value::Array(items) => items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| bad(key, "a list of strings"))
                    })
                    .collect(),
                _ => Err(bad(key, "a list of strings")),
            }
        };

        let name = string("name")?.ok_or_else(|| bad("name", "set (the image name)"))?;
        let containerfile =
            PathBuf::from(string("containerfile")?.unwrap_or_else(|| "Containerfile".into()));
        let platform_list = strings("platforms")?;
        let platforms = if platform_list.is_empty() {
            Platform::ALL.to_vec()
        } else {
            Platform::parse_list(&platform_list.join(","))
                .context("[package.metadata.image] platforms")?
        };
        let targets = strings("targets")?;
        let build_args = match &image["build-args"] {
            Value::Null => BTreeMap::new(),
            Value::Object(table) => table
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    _ => Err(bad("build-args", "a table of strings (KEY = \"value\")")),
                })
                .collect::<anyhow::Result<_>>()?,
            _ => return Err(bad("build-args", "a table of strings (KEY = \"value\")")),
        };
        let cache_repo = string("cache-repo")?;
        let text = |key: &str| package[key].as_str().map(str::to_owned);
        Ok(ImageConfig {
            name,
            containerfile,
            platforms,
            targets,
            build_args,
            cache_repo,
            version: text("version").unwrap_or_else(|| "0.0.0".into()),
            license: text("license"),
            repository: text("repository"),
            description: text("description"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn platforms_parse_and_print() {
        let cases = [
            (
                "linux/amd64",
                Some(("linux", "amd64", "linux-amd64", "x86_64-unknown-linux-gnu")),
            ),
            (
                " linux/arm64 ",
                Some(("linux", "arm64", "linux-arm64", "aarch64-unknown-linux-gnu")),
            ),
            ("linux/arm/v7", None),
            ("windows/amd64", None),
            ("amd64", None),
            ("", None),
        ];
        for (input, want) in cases {
            let got = input.parse::<Platform>();
            match want {
                Some((os, arch, dir, triple)) => {
                    let p = got.unwrap();
                    assert_eq!(
                        (p.os, p.arch, p.dir_name().as_str(), p.rust_target()),
                        (os, arch, dir, triple)
                    );
                    assert_eq!(p.to_string(), input.trim());
                }
                None => {
                    let err = got.unwrap_err();
                    assert_eq!(exit::code_of(&err), 2, "{input}");
                    assert!(
                        err.to_string().contains("linux/amd64 or linux/arm64"),
                        "{err}"
                    );
                }
            }
        }
    }

    #[test]
    fn platform_lists() {
        let cases: [(&str, Option<Vec<Platform>>); 5] = [
            ("linux/amd64,linux/arm64", Some(Platform::ALL.to_vec())),
            (
                "linux/arm64, linux/amd64",
                Some(vec![Platform::LINUX_ARM64, Platform::LINUX_AMD64]),
            ),
            ("linux/amd64,linux/amd64", Some(vec![Platform::LINUX_AMD64])),
            (" , ", None),
            ("linux/amd64,linux/s390x", None),
        ];
        for (input, want) in cases {
            match want {
                Some(want) => assert_eq!(Platform::parse_list(input).unwrap(), want, "{input}"),
                None => assert_eq!(
                    exit::code_of(&Platform::parse_list(input).unwrap_err()),
                    2,
                    "{input}"
                ),
            }
        }
    }

    fn metadata(image: Value) -> Value {
        json!({
            "workspace_root": "/src",
            "packages": [
                {"name": "xtask", "manifest_path": "/src/xtask/Cargo.toml", "version": "0.0.0", "metadata": null},
                {"name": "app", "manifest_path": "/src/Cargo.toml", "version": "1.2.3", "license": "MIT",
                 "repository": "https://github.com/o/app", "description": "d", "metadata": {"image": image}},
            ]
        })
    }

    #[test]
    fn reads_the_full_table() {
        let config = ImageConfig::from_metadata(
            &metadata(json!({
                "name": "app",
                "containerfile": "build/Containerfile",
                "platforms": ["linux/arm64"],
                "targets": ["ghcr.io/o/app", "docker.io/o/app"],
                "build-args": {"RUNTIME_IMAGE": "scratch"},
                "cache-repo": "ghcr.io/o/app-cache",
            })),
            Path::new("/src/Cargo.toml"),
        )
        .unwrap();
        assert_eq!(
            config,
            ImageConfig {
                name: "app".into(),
                containerfile: "build/Containerfile".into(),
                platforms: vec![Platform::LINUX_ARM64],
                targets: vec!["ghcr.io/o/app".into(), "docker.io/o/app".into()],
                build_args: [("RUNTIME_IMAGE".to_owned(), "scratch".to_owned())].into(),
                cache_repo: Some("ghcr.io/o/app-cache".into()),
                version: "1.2.3".into(),
                license: Some("MIT".into()),
                repository: Some("https://github.com/o/app".into()),
                description: Some("d".into()),
            }
        );
    }

    #[test]
    fn defaults_and_errors() {
        let minimal = ImageConfig::from_metadata(
            &metadata(json!({"name": "app"})),
            Path::new("/src/Cargo.toml"),
        )
        .unwrap();
        assert_eq!(minimal.containerfile, PathBuf::from("Containerfile"));
        assert_eq!(minimal.platforms, Platform::ALL.to_vec());
        assert!(
            minimal.targets.is_empty()
                && minimal.build_args.is_empty()
                && minimal.cache_repo.is_none()
        );

        let cases = [
            (json!({}), "name"),
            (json!({"name": ""}), "name"),
            (
                json!({"name": "app", "platforms": ["linux/riscv64"]}),
                "linux/riscv64",
            ),
            (
                json!({"name": "app", "platforms": "linux/amd64"}),
                "platforms",
            ),
            (json!({"name": "app", "targets": [1]}), "targets"),
            (json!({"name": "app", "build-args": {"A": 1}}), "build-args"),
            (json!({"name": "app", "build-args": ["A=1"]}), "build-args"),
            (json!(null), "[package.metadata.image]"),
        ];
        for (image, mention) in cases {
            let err =
                ImageConfig::from_metadata(&metadata(image.clone()), Path::new("/src/Cargo.toml"))
                    .unwrap_err();
            assert_eq!(exit::code_of(&err), 2, "{image}");
            assert!(format!("{err:#}").contains(mention), "{image}: {err:#}");
        }
    }

    #[test]
    fn reads_this_repository() {
        let sh = Shell::new().unwrap();
        sh.change_dir(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap());
        let config = ImageConfig::load(&sh).unwrap();
        assert_eq!(config.name, "mcp-taipei-metro-month-price");
        assert_eq!(config.platforms, Platform::ALL.to_vec());
        assert_eq!(config.containerfile, PathBuf::from("Containerfile"));
    }
}
