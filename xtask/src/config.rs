//! The pipeline's defaults from `[package.metadata.image]` in the root Cargo.toml, and the `Platform` type.
//!
//! Read through `cargo metadata` (JSON) so the xtask needs no TOML parser; the parsing itself is a pure function
//! of that JSON so it is tested without cargo.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;
use xshell::{cmd, Shell};

use crate::exit;
use crate::oci::Platform;

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
    /// `version-tags`: the tags a version release publishes, as patterns (`{major}.{minor}` and `{major}` float).
    pub version_tags: Vec<VersionTag>,
    /// `[package.metadata.image.runners]`: the GitHub runner label that builds each platform, where it is not
    /// the default.
    pub runners: BTreeMap<Platform, String>,
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
        let runners = runners(&image["runners"], root_manifest)?;
        let version_tags = match strings("version-tags")? {
            patterns if patterns.is_empty() => vec![VersionTag::Patch],
            patterns => {
                VersionTag::parse_all(&patterns).map_err(|why| bad("version-tags", &why))?
            }
        };
        let text = |key: &str| package[key].as_str().map(str::to_owned);
        Ok(ImageConfig {
            name,
            containerfile,
            platforms,
            targets,
            build_args,
            cache_repo,
            version_tags,
            runners,
            version: text("version").unwrap_or_else(|| "0.0.0".into()),
            license: text("license"),
            repository: text("repository"),
            description: text("description"),
        })
    }
}

/// One `version-tags` pattern: the tags a release `X.Y.Z` publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum VersionTag {
    /// `{major}.{minor}.{patch}`: the release's own tag, always published.
    Patch,
    /// `{major}.{minor}`: follows the newest release of its minor line.
    Minor,
    /// `{major}`: follows the newest release of its major line.
    Major,
}

impl VersionTag {
    const PATTERNS: [(&'static str, VersionTag); 3] = [
        ("{major}.{minor}.{patch}", VersionTag::Patch),
        ("{major}.{minor}", VersionTag::Minor),
        ("{major}", VersionTag::Major),
    ];

    /// The patterns of `version-tags`; the release's own tag must be among them.
    fn parse_all(patterns: &[String]) -> Result<Vec<VersionTag>, String> {
        let all = || {
            VersionTag::PATTERNS
                .map(|(pattern, _)| format!("\"{pattern}\""))
                .join(", ")
        };
        let mut tags = Vec::new();
        for pattern in patterns {
            let tag = VersionTag::PATTERNS
                .iter()
                .find(|(known, _)| known == pattern)
                .map(|(_, tag)| *tag)
                .ok_or_else(|| format!("a list of {} (not {pattern:?})", all()))?;
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        if !tags.contains(&VersionTag::Patch) {
            return Err(format!(
                "a list that includes \"{{major}}.{{minor}}.{{patch}}\" (a release always publishes its own \
                 version), from {}",
                all()
            ));
        }
        tags.sort();
        Ok(tags)
    }

    /// The tag this pattern gives `version`.
    pub fn render(self, version: &semver::Version) -> String {
        match self {
            VersionTag::Patch => format!("{}.{}.{}", version.major, version.minor, version.patch),
            VersionTag::Minor => format!("{}.{}", version.major, version.minor),
            VersionTag::Major => version.major.to_string(),
        }
    }
}

/// `[package.metadata.image.runners]`: `"linux/arm64" = "ubuntu-24.04"` and so on.
fn runners(table: &Value, root_manifest: &Path) -> anyhow::Result<BTreeMap<Platform, String>> {
    let bad = || {
        exit::invalid(format!(
            "[package.metadata.image.runners] in {} must map platforms to runner labels, like \
             \"linux/arm64\" = \"ubuntu-24.04-arm\"",
            root_manifest.display()
        ))
    };
    match table {
        Value::Null => Ok(BTreeMap::new()),
        Value::Object(table) => table
            .iter()
            .map(|(platform, runner)| {
                let platform: Platform = platform
                    .parse()
                    .context("[package.metadata.image.runners]")?;
                match runner.as_str().map(str::trim) {
                    Some(runner) if !runner.is_empty() => Ok((platform, runner.to_owned())),
                    _ => Err(bad()),
                }
            })
            .collect(),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn version_tag_patterns() {
        let root = Path::new("/src/Cargo.toml");
        let read = |tags: Value| {
            ImageConfig::from_metadata(
                &metadata(json!({"name": "app", "version-tags": tags})),
                root,
            )
            .map(|config| config.version_tags)
        };
        use VersionTag::*;
        assert_eq!(read(Value::Null).unwrap(), [Patch]);
        assert_eq!(
            read(json!([
                "{major}",
                "{major}.{minor}.{patch}",
                "{major}.{minor}"
            ]))
            .unwrap(),
            [Patch, Minor, Major]
        );
        for bad in [
            json!(["{major}.{minor}"]),
            json!(["{major}.{minor}.{patch}", "v{major}"]),
            json!(["latest"]),
            json!("{major}"),
        ] {
            let err = read(bad.clone()).unwrap_err();
            assert_eq!(exit::code_of(&err), 2, "{bad}");
            assert!(err.to_string().contains("version-tags"), "{err}");
        }
        let version = semver::Version::new(1, 2, 3);
        assert_eq!(
            [Patch, Minor, Major].map(|t| t.render(&version)),
            ["1.2.3", "1.2", "1"]
        );
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
                version_tags: vec![VersionTag::Patch],
                runners: BTreeMap::new(),
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

    #[test]
    fn runners_table() {
        let root = Path::new("/src/Cargo.toml");
        let read = |runners: Value| {
            ImageConfig::from_metadata(&metadata(json!({"name": "app", "runners": runners})), root)
                .map(|config| config.runners)
        };
        let got =
            read(json!({"linux/arm64": "ubuntu-24.04", "linux/amd64": "self-hosted"})).unwrap();
        assert_eq!(got[&Platform::LINUX_ARM64], "ubuntu-24.04");
        assert_eq!(got[&Platform::LINUX_AMD64], "self-hosted");
        assert!(read(Value::Null).unwrap().is_empty());
        for bad in [
            json!({"linux/s390x": "x"}),
            json!({"linux/amd64": ""}),
            json!({"linux/amd64": 1}),
            json!(["x"]),
        ] {
            let err = read(bad.clone()).unwrap_err();
            assert_eq!(exit::code_of(&err), 2, "{bad}");
        }
    }

    #[test]
    fn this_repository_runs_arm64_on_its_own_runner() {
        let sh = Shell::new().unwrap();
        sh.change_dir(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap());
        let config = ImageConfig::load(&sh).unwrap();
        for platform in &config.platforms {
            assert!(
                config.runners.contains_key(platform),
                "{platform} has no runner in Cargo.toml"
            );
        }
    }
}
