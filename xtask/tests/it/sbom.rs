//! The SBOMs `cargo xtask image build` writes beside each platform's export, checked by others than their writer:
//! the CycloneDX project's own library (cyclonedx-python-lib, through xtask/tests/sbom/validate.py: the strict 1.6
//! schema, canonical purls, SPDX licenses) and cargo itself (`cargo tree` for the platform's target lists the same
//! crates); the hashes are Cargo.lock's, and building again gives the same bytes.
//!
//! The validator is the one `cargo xtask ci` installs (XTASK_SBOM_PYTHON in `target/ci/env`); the SBOMs come from
//! real builds (the ones build.rs shares), so these tests need the test bench and are ignored by a bare
//! `cargo test`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::build::{build_args, shared_build, xtask};
use crate::support::registry::temp_dir;
use crate::support::{self, ci_env, root, run, stdout};

const PLATFORMS: [&str; 2] = ["linux/amd64", "linux/arm64"];
const TRIPLE_PROPERTY: &str = "cdx:rustc:sbom:target:triple";

fn validator() -> (String, PathBuf) {
    let python = ci_env().get("XTASK_SBOM_PYTHON").cloned().expect(
        "XTASK_SBOM_PYTHON is not set and target/ci/env does not name it: run `cargo xtask ci --setup-only` first",
    );
    (python, root().join("xtask/tests/sbom/validate.py"))
}

/// validate.py on `files`.
fn validate(files: &[&Path]) -> Output {
    let (python, script) = validator();
    Command::new(python)
        .arg(script)
        .args(files)
        .output()
        .unwrap()
}

/// `<target>/image/<os>-<arch>.cdx.json` beside the export `<target>/image/<os>-<arch>`.
fn sbom_of(export: &Path) -> PathBuf {
    let name = export.file_name().unwrap().to_str().unwrap();
    export.with_file_name(format!("{name}.cdx.json"))
}

/// name@version of every crate `cargo tree` says is linked into the app for `triple`, with the build's RUSTFLAGS.
fn cargo_tree(triple: &str, rustflags: &str) -> BTreeSet<String> {
    let text = stdout(
        Command::new(env!("CARGO"))
            .current_dir(root())
            .args(["tree", "--target", triple, "-e", "normal,no-proc-macro"])
            .args(["--prefix", "none", "-f", "{p}", "--locked"])
            .env("RUSTFLAGS", rustflags)
            .env_remove("CARGO_ENCODED_RUSTFLAGS"),
    );
    // The first line is the app itself; a crate seen before is marked `(*)`.
    text.lines()
        .skip(1)
        .map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next().unwrap();
            let version = words.next().unwrap().trim_start_matches('v');
            format!("{name}@{version}")
        })
        .collect()
}

/// The image's labels, from the export's config.
fn labels(export: &Path) -> Value {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(export.join("manifest.json")).unwrap()).unwrap();
    let digest = manifest["config"]["digest"].as_str().unwrap();
    let config: Value =
        serde_json::from_slice(&std::fs::read(export.join(&digest[7..])).unwrap()).unwrap();
    config["config"]["Labels"].clone()
}

#[test]
#[ignore = "needs the CycloneDX validator that `cargo xtask ci` installs (XTASK_SBOM_PYTHON); run by `cargo xtask ci`"]
fn the_validator_passes_the_format_sample_and_fails_broken_copies() {
    // The unit tests' document on the project's default base, with every kind of component.
    let sample = root().join("xtask/src/image/build/testdata/sbom.cdx.json");
    let output = validate(&[&sample]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.starts_with("valid CycloneDX 1.6: "), "{text}");
    let original = std::fs::read_to_string(&sample).unwrap();
    let dir = temp_dir("sbom-broken");
    // (what is broken, the change, a fragment of the validator's message)
    let cases = [
        (
            "an unknown property",
            ("\"version\": 1,", "\"version\": 1,\n  \"generated\": true,"),
            "Additional properties",
        ),
        (
            "a hash that is no SHA-256",
            (
                "\"alg\": \"SHA-256\",\n          \"content\": \"",
                "\"alg\": \"SHA-256\",\n          \"content\": \"x",
            ),
            "does not match",
        ),
        (
            "a license that is no SPDX expression",
            (
                "\"expression\": \"MIT\"",
                "\"expression\": \"MIT/Apache-2.0\"",
            ),
            "is not an SPDX expression",
        ),
        (
            "a purl that is not canonical",
            (
                "\"purl\": \"pkg:cargo/both@2.0.0\"",
                "\"purl\": \"pkg:cargo/both@2.0.0?\"",
            ),
            "is not canonical",
        ),
        (
            "a timestamp that is no date-time",
            ("2023-11-14T22:13:20Z", "yesterday"),
            "date-time",
        ),
    ];
    for (what, (from, to), message) in cases {
        assert!(
            original.contains(from),
            "{what}: {from:?} is not in the sample"
        );
        let broken = dir.path().join("broken.cdx.json");
        std::fs::write(&broken, original.replacen(from, to, 1)).unwrap();
        let output = validate(&[&broken]);
        let text = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{what}: {text}");
        assert!(text.contains(message), "{what}: {text}");
    }
}

#[test]
#[ignore = "builds both platforms with podman and runs the CycloneDX validator: needs the test bench; run by \
            `cargo xtask ci`"]
fn each_platforms_sbom_is_valid_and_lists_what_cargo_links() {
    let containerfile = std::fs::read_to_string(root().join("Containerfile")).unwrap();
    let rustflags = containerfile
        .split("RUSTFLAGS=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the Containerfile sets RUSTFLAGS");
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).unwrap();
    for platform in PLATFORMS {
        let built = shared_build(platform);
        let sbom = sbom_of(&built.export);
        let output = validate(&[&sbom]);
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{platform}: {text}");
        let document: Value = serde_json::from_slice(&std::fs::read(&sbom).unwrap()).unwrap();
        let components = document["components"].as_array().unwrap();
        assert!(
            built.log.contains(&format!(
                "==> {platform}: SBOM (CycloneDX 1.6) in {}, {} components",
                sbom.display(),
                components.len()
            )),
            "{platform}: the build did not say where its SBOM is:\n{}",
            built.log
        );

        // The target is the one the Containerfile compiles this platform for.
        let triple = document["metadata"]["properties"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == TRIPLE_PROPERTY)
            .and_then(|p| p["value"].as_str())
            .unwrap_or_else(|| panic!("{platform}: no {TRIPLE_PROPERTY} in {document:#}"));
        let cpu = match platform {
            "linux/amd64" => "x86_64-",
            _ => "aarch64-",
        };
        assert!(triple.starts_with(cpu), "{platform}: {triple}");
        assert!(
            containerfile.contains(&format!("RUST_TARGET={triple} ")),
            "{platform}: the Containerfile does not build {triple}"
        );

        // Exactly the crates cargo links into the app for that target.
        let libraries: Vec<&Value> = components
            .iter()
            .filter(|c| c["type"] == "library")
            .collect();
        let listed: BTreeSet<String> = libraries
            .iter()
            .map(|c| {
                format!(
                    "{}@{}",
                    c["name"].as_str().unwrap(),
                    c["version"].as_str().unwrap()
                )
            })
            .collect();
        let linked = cargo_tree(triple, rustflags);
        assert!(!linked.is_empty());
        assert_eq!(
            listed, linked,
            "{platform}: the SBOM's crates against cargo tree's"
        );
        for library in &libraries {
            let name = library["name"].as_str().unwrap();
            let version = library["version"].as_str().unwrap();
            assert_eq!(
                library["purl"].as_str(),
                Some(format!("pkg:cargo/{name}@{version}").as_str())
            );
            assert_eq!(library["bom-ref"], library["purl"]);
            assert_eq!(library["hashes"][0]["alg"], "SHA-256", "{library}");
            let checksum = library["hashes"][0]["content"].as_str().unwrap();
            let locked = format!(
                "name = \"{name}\"\nversion = \"{version}\"\n\
                 source = \"registry+https://github.com/rust-lang/crates.io-index\"\n\
                 checksum = \"{checksum}\"\n"
            );
            assert!(
                lock.contains(&locked),
                "{platform}: not in Cargo.lock:\n{locked}"
            );
            assert!(
                library["licenses"][0]["expression"].is_string(),
                "{library}"
            );
        }

        // The app, at the image's version and time; the base image only where the image has one.
        let labels = labels(&built.export);
        let app = &document["metadata"]["component"];
        assert_eq!(app["type"], "application");
        assert_eq!(app["name"], "mcp-taipei-metro-month-price");
        assert_eq!(app["version"], labels["org.opencontainers.image.version"]);
        assert_eq!(
            document["metadata"]["timestamp"],
            labels["org.opencontainers.image.created"]
        );
        let containers: Vec<&Value> = components
            .iter()
            .filter(|c| c["type"] == "container")
            .collect();
        match labels["org.opencontainers.image.base.name"].as_str() {
            Some(base) => {
                assert_eq!(containers.len(), 1, "{platform}: {document:#}");
                assert!(
                    base.starts_with(containers[0]["name"].as_str().unwrap()),
                    "{base}"
                );
            }
            None => assert!(containers.is_empty(), "{platform}: {document:#}"),
        }
        assert_eq!(components.len(), libraries.len() + containers.len());
        eprintln!(
            "{platform} ({triple}): {} components, valid: {}",
            components.len(),
            text.trim()
        );
    }
}

#[test]
#[ignore = "builds both platforms twice with podman: needs the test bench; run by `cargo xtask ci`"]
fn building_again_writes_the_same_bytes() {
    let first: Vec<PathBuf> = PLATFORMS
        .iter()
        .map(|platform| sbom_of(&shared_build(platform).export))
        .collect();
    // Podman's layer cache makes the second build quick; the SBOM is made afresh all the same.
    let _builds = support::build_locks();
    let target = temp_dir("sbom-again");
    let mut command = xtask();
    command
        .current_dir(root())
        .env("CARGO_TARGET_DIR", target.path())
        .args(["image", "build", "--tag", "localhost/xtask-test/sbom-again"]);
    for arg in build_args() {
        command.args(["--build-arg", &arg]);
    }
    run(&mut command);
    for (platform, first) in PLATFORMS.iter().zip(first) {
        let again = target
            .path()
            .join("image")
            .join(format!("{}.cdx.json", platform.replace('/', "-")));
        assert_eq!(
            std::fs::read(&again).unwrap(),
            std::fs::read(&first).unwrap(),
            "{platform}: {} and {} differ",
            again.display(),
            first.display()
        );
    }
    for arch in ["amd64", "arm64"] {
        let _ = Command::new("podman")
            .envs(ci_env().into_iter().filter(|(k, _)| k == "CONTAINERS_CONF"))
            .args(["rmi", &format!("localhost/xtask-test/sbom-again:{arch}")])
            .output();
    }
}
