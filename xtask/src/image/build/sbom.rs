//! The CycloneDX 1.6 SBOM `image build` writes beside each platform's export: the crates linked into the app for
//! that platform's Rust target, the final stage's base image, and the app itself as the described component.
//!
//! [`document`] is pure (`cargo metadata` JSON, Cargo.lock, the image's labels -> the document's bytes), so the
//! same commit gives the same bytes: no clock (the time is the `created` label), a serial number derived from the
//! content, components and dependencies sorted, keys in a fixed order. [`read_inputs`] is the one effect: it runs
//! `cargo metadata` for the target and reads Cargo.lock.
//!
//! What is linked is read from the resolve graph of `cargo metadata --filter-platform <triple>` (cargo drops the
//! edges whose `cfg` does not hold for the target): from the root package, only normal edges (`kind: null`) are
//! followed, so dev-dependencies and build scripts' dependencies are out, and proc-macro crates (compiled for the
//! build machine, never linked) are out with everything only they pull in. The graph's features are those of the
//! whole workspace, so a crate that only another member's features turn on would be listed too; the integration
//! test compares the list with `cargo tree` of the app to catch that.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use xshell::{cmd, Shell};

use crate::image::containerfile::RustTarget;
use crate::oci::Platform;

/// The `metadata.properties` entry naming the Rust target (CycloneDX's property taxonomy, as cargo-cyclonedx
/// writes it).
pub const TARGET_TRIPLE_PROPERTY: &str = "cdx:rustc:sbom:target:triple";

const SCHEMA: &str = "http://cyclonedx.org/schema/bom-1.6.schema.json";
const VERSION_LABEL: &str = "org.opencontainers.image.version";
const CREATED_LABEL: &str = "org.opencontainers.image.created";
const BASE_NAME_LABEL: &str = "org.opencontainers.image.base.name";
const BASE_DIGEST_LABEL: &str = "org.opencontainers.image.base.digest";

/// crates.io's index, as a git and as a sparse registry: its crates' purls need no `repository_url`.
const CRATES_IO: [&str; 2] = [
    "registry+https://github.com/rust-lang/crates.io-index",
    "sparse+https://index.crates.io/",
];

/// What one platform's SBOM is made from.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The output of `cargo metadata --format-version 1 --filter-platform <triple> --locked`.
    pub metadata: &'a str,
    /// Cargo.lock's text (for the checksums, which `cargo metadata` does not give).
    pub lock: &'a str,
    /// The image's labels (the build plan's): version, time and base image.
    pub labels: &'a BTreeMap<String, String>,
    /// The Rust target triple the metadata was resolved for.
    pub target: &'a str,
    pub platform: Platform,
}

/// A generated SBOM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sbom {
    /// The JSON document, pretty-printed, with a trailing newline.
    pub bytes: Vec<u8>,
    /// How many components it lists (the crates and the base image; the app is `metadata.component`).
    pub components: usize,
}

/// The SBOM of one platform's image.
pub fn document(inputs: &Inputs) -> anyhow::Result<Sbom> {
    let metadata: Metadata =
        serde_json::from_str(inputs.metadata).context("read the output of cargo metadata")?;
    let checksums = lock_checksums(inputs.lock);
    let packages: BTreeMap<&str, &Package> = metadata
        .packages
        .iter()
        .map(|p| (p.id.as_str(), p))
        .collect();
    let resolve = metadata
        .resolve
        .as_ref()
        .context("cargo metadata gave no resolve graph")?;
    let root = resolve.root.as_deref().context(
        "cargo metadata names no root package: the workspace root's Cargo.toml must be the app's package",
    )?;
    let nodes: BTreeMap<&str, &Node> = resolve.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let package = |id: &str| {
        packages
            .get(id)
            .copied()
            .with_context(|| format!("cargo metadata lists no package {id}"))
    };

    // The linked crates, each with the linked crates it depends on directly.
    let mut linked: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut pending = vec![root];
    while let Some(id) = pending.pop() {
        if linked.contains_key(id) {
            continue;
        }
        let node = nodes
            .get(id)
            .with_context(|| format!("the resolve graph has no node {id}"))?;
        let mut deps = BTreeSet::new();
        for dep in &node.deps {
            let normal = dep.dep_kinds.iter().any(|k| k.kind.is_none());
            if normal && !package(&dep.pkg)?.is_proc_macro() {
                deps.insert(dep.pkg.as_str());
                pending.push(&dep.pkg);
            }
        }
        linked.insert(id, deps);
    }

    let mut refs = BTreeMap::new();
    let mut components = Vec::new();
    for &id in linked.keys() {
        let package = package(id)?;
        let purl = cargo_purl(package);
        refs.insert(id, purl.clone());
        if id == root {
            continue;
        }
        let hash = match (&package.source, checksums.get(&package.lock_key())) {
            (_, Some(checksum)) => Some(Hash::sha256(checksum)),
            (Some(source), None)
                if source.starts_with("registry+") || source.starts_with("sparse+") =>
            {
                anyhow::bail!(
                    "Cargo.lock has no checksum for {}@{} from {source}, so the SBOM cannot give its hash; \
                     let cargo write the lock file anew (`cargo update --workspace` changes no version)",
                    package.name,
                    package.version
                )
            }
            _ => None,
        };
        components.push(Component {
            kind: "library",
            bom_ref: purl.clone(),
            name: package.name.clone(),
            version: Some(package.version.clone()),
            scope: Some("required"),
            hashes: Vec::from_iter(hash),
            licenses: package.licenses(),
            purl,
        });
    }
    let mut dependencies: Vec<Dependency> = linked
        .iter()
        .map(|(id, deps)| {
            let mut depends_on: Vec<String> = deps.iter().map(|dep| refs[dep].clone()).collect();
            depends_on.sort();
            Dependency {
                reference: refs[id].clone(),
                depends_on,
            }
        })
        .collect();
    if let Some(base) = base_image(inputs.labels, inputs.platform) {
        dependencies.push(Dependency {
            reference: base.bom_ref.clone(),
            depends_on: Vec::new(),
        });
        components.push(base);
    }
    components.sort_by(|a, b| a.bom_ref.cmp(&b.bom_ref));
    dependencies.sort_by(|a, b| a.reference.cmp(&b.reference));

    let app = package(root)?;
    let mut bom = Bom {
        schema: SCHEMA,
        bom_format: "CycloneDX",
        spec_version: "1.6",
        serial_number: None,
        version: 1,
        metadata: BomMetadata {
            timestamp: inputs.labels.get(CREATED_LABEL).cloned(),
            component: Component {
                kind: "application",
                bom_ref: refs[root].clone(),
                name: app.name.clone(),
                // The image's version (what it is published as); the purl keeps the crate's.
                version: Some(
                    inputs
                        .labels
                        .get(VERSION_LABEL)
                        .unwrap_or(&app.version)
                        .clone(),
                ),
                scope: None,
                hashes: Vec::new(),
                licenses: app.licenses(),
                purl: refs[root].clone(),
            },
            properties: vec![Property {
                name: TARGET_TRIPLE_PROPERTY,
                value: inputs.target.to_owned(),
            }],
        },
        components,
        dependencies,
    };
    // The serial number names the content: the same document always gets the same one.
    bom.serial_number = Some(content_urn(&pretty(&bom)?));
    Ok(Sbom {
        bytes: pretty(&bom)?,
        components: bom.components.len(),
    })
}

fn pretty(bom: &Bom) -> anyhow::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(bom).context("serialise the SBOM")?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// `urn:uuid:` and a UUIDv8 (RFC 9562, the form for UUIDs made another way) of the first 16 bytes of the
/// content's SHA-256.
fn content_urn(content: &[u8]) -> String {
    let mut bytes: [u8; 16] = Sha256::digest(content)[..16].try_into().expect("16 bytes");
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Cargo.lock's `checksum` of each `[[package]]`, by (name, version, source): only those keys are read, from the
/// `key = "value"` lines cargo writes.
fn lock_checksums(lock: &str) -> BTreeMap<LockKey, String> {
    fn flush(entry: &mut BTreeMap<String, String>, out: &mut BTreeMap<LockKey, String>) {
        let mut entry = std::mem::take(entry);
        if let (Some(name), Some(version), Some(checksum)) = (
            entry.remove("name"),
            entry.remove("version"),
            entry.remove("checksum"),
        ) {
            out.insert((name, version, entry.remove("source")), checksum);
        }
    }
    let mut out = BTreeMap::new();
    let mut entry = BTreeMap::new();
    let mut in_package = false;
    for line in lock.lines().map(str::trim) {
        if line.starts_with('[') {
            flush(&mut entry, &mut out);
            in_package = line == "[[package]]";
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let quoted = value.len() >= 2 && value.starts_with('"') && value.ends_with('"');
        let key = key.trim();
        if in_package && quoted && ["name", "version", "source", "checksum"].contains(&key) {
            entry.insert(key.to_owned(), value[1..value.len() - 1].to_owned());
        }
    }
    flush(&mut entry, &mut out);
    out
}

/// (name, version, source) of a locked package.
type LockKey = (String, String, Option<String>);

/// `pkg:cargo/<name>@<version>`, with where it comes from when that is not crates.io: the registry's index
/// (`repository_url`) or the git repository and commit (`vcs_url`).
fn cargo_purl(package: &Package) -> String {
    let mut purl = format!(
        "pkg:cargo/{}@{}",
        percent_encode(&package.name),
        percent_encode(&package.version)
    );
    match package.source.as_deref() {
        None => {}
        Some(source) if CRATES_IO.contains(&source) => {}
        Some(source) => match source.strip_prefix("git+") {
            Some(git) => {
                let (url, commit) = git.split_once('#').unwrap_or((git, ""));
                let url = url.split_once('?').map_or(url, |(url, _)| url);
                let at = if commit.is_empty() {
                    String::new()
                } else {
                    format!("@{commit}")
                };
                purl.push_str(&format!(
                    "?vcs_url={}",
                    percent_encode(&format!("git+{url}{at}"))
                ));
            }
            None => {
                let index = source.split_once('+').map_or(source, |(_, url)| url);
                purl.push_str(&format!("?repository_url={}", percent_encode(index)));
            }
        },
    }
    purl
}

/// The final stage's base image, from the `base.name` and `base.digest` labels, as a `container` component:
/// `pkg:oci/<name>@<digest>?arch=<arch>&repository_url=<repository>&tag=<tag>`. `None` on `scratch` (no label).
fn base_image(labels: &BTreeMap<String, String>, platform: Platform) -> Option<Component> {
    let reference = labels.get(BASE_NAME_LABEL)?;
    let reference = reference
        .split_once('@')
        .map_or(reference.as_str(), |(name, _)| name);
    let last_slash = reference.rfind('/').map_or(0, |slash| slash + 1);
    let (repository, tag) = match reference[last_slash..].split_once(':') {
        Some((_, tag)) => (&reference[..reference.len() - tag.len() - 1], Some(tag)),
        None => (reference, None),
    };
    let digest = labels.get(BASE_DIGEST_LABEL);
    let mut purl = format!(
        "pkg:oci/{}",
        percent_encode(&repository[last_slash..].to_ascii_lowercase())
    );
    if let Some(digest) = digest {
        purl.push('@');
        purl.push_str(&percent_encode(digest));
    }
    // Qualifiers in the canonical (sorted) order.
    purl.push_str(&format!(
        "?arch={}&repository_url={}",
        percent_encode(platform.arch),
        percent_encode(repository)
    ));
    if let Some(tag) = tag {
        purl.push_str(&format!("&tag={}", percent_encode(tag)));
    }
    Some(Component {
        kind: "container",
        bom_ref: purl.clone(),
        name: repository.to_owned(),
        // What was pulled: the digest where the reference pins one, else the tag.
        version: digest.cloned().or(tag.map(str::to_owned)),
        scope: Some("required"),
        hashes: digest
            .and_then(|d| d.strip_prefix("sha256:"))
            .map(Hash::sha256)
            .into_iter()
            .collect(),
        licenses: Vec::new(),
        purl,
    })
}

/// Percent-encodes all but the unreserved characters and `:` and `/`, the purl's canonical form (as the purl
/// reference implementation writes it).
fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The parts of `cargo metadata --format-version 1` read here.
#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    resolve: Option<Resolve>,
}

#[derive(Deserialize)]
struct Package {
    id: String,
    name: String,
    version: String,
    source: Option<String>,
    license: Option<String>,
    targets: Vec<Target>,
}

impl Package {
    fn is_proc_macro(&self) -> bool {
        self.targets
            .iter()
            .any(|t| t.kind.iter().any(|k| k == "proc-macro"))
    }

    /// The `license` field as an SPDX expression: the `/` older crates use between alternatives is `OR`.
    fn licenses(&self) -> Vec<License> {
        self.license
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|license| License {
                expression: license
                    .split('/')
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(" OR "),
            })
            .collect()
    }

    fn lock_key(&self) -> LockKey {
        (self.name.clone(), self.version.clone(), self.source.clone())
    }
}

#[derive(Deserialize)]
struct Target {
    kind: Vec<String>,
}

#[derive(Deserialize)]
struct Resolve {
    nodes: Vec<Node>,
    root: Option<String>,
}

#[derive(Deserialize)]
struct Node {
    id: String,
    deps: Vec<NodeDep>,
}

#[derive(Deserialize)]
struct NodeDep {
    pkg: String,
    dep_kinds: Vec<DepKind>,
}

#[derive(Deserialize)]
struct DepKind {
    /// `null` for a normal dependency, `"dev"` or `"build"`.
    kind: Option<String>,
}

/// The document, its keys in the order written.
#[derive(Serialize)]
struct Bom {
    #[serde(rename = "$schema")]
    schema: &'static str,
    #[serde(rename = "bomFormat")]
    bom_format: &'static str,
    #[serde(rename = "specVersion")]
    spec_version: &'static str,
    #[serde(rename = "serialNumber", skip_serializing_if = "Option::is_none")]
    serial_number: Option<String>,
    version: u32,
    metadata: BomMetadata,
    components: Vec<Component>,
    dependencies: Vec<Dependency>,
}

#[derive(Serialize)]
struct BomMetadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<String>,
    component: Component,
    properties: Vec<Property>,
}

#[derive(Serialize)]
struct Component {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "bom-ref")]
    bom_ref: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hashes: Vec<Hash>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    licenses: Vec<License>,
    purl: String,
}

#[derive(Serialize)]
struct Hash {
    alg: &'static str,
    content: String,
}

impl Hash {
    fn sha256(hex: &str) -> Hash {
        Hash {
            alg: "SHA-256",
            content: hex.to_owned(),
        }
    }
}

#[derive(Serialize)]
struct License {
    expression: String,
}

#[derive(Serialize)]
struct Property {
    name: &'static str,
    value: String,
}

#[derive(Serialize)]
struct Dependency {
    #[serde(rename = "ref")]
    reference: String,
    #[serde(rename = "dependsOn", skip_serializing_if = "Vec::is_empty")]
    depends_on: Vec<String>,
}

/// Runs `cargo metadata` for `target` in the workspace at `workspace` (the build context) and reads its
/// Cargo.lock: the metadata JSON and the lock's text. `--locked`, as the Containerfile builds, so a lock file that
/// is out of date fails here, before the build. The target's RUSTFLAGS are passed because they change its cfg.
pub fn read_inputs(
    sh: &Shell,
    workspace: &std::path::Path,
    target: &RustTarget,
) -> anyhow::Result<(String, String)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = workspace.join("Cargo.toml");
    let triple = &target.triple;
    let command = cmd!(
        sh,
        "{cargo} metadata --format-version 1 --filter-platform {triple} --locked --manifest-path {manifest}"
    )
    .quiet()
    .env_remove("CARGO_ENCODED_RUSTFLAGS");
    let command = match &target.rustflags {
        Some(flags) => command.env("RUSTFLAGS", flags),
        None => command.env_remove("RUSTFLAGS"),
    };
    let metadata = command.read().with_context(|| {
        format!(
            "cargo metadata for {triple} in {} (is Cargo.lock up to date? `cargo metadata` without --locked \
             updates it)",
            workspace.display()
        )
    })?;
    let lock_path = workspace.join("Cargo.lock");
    let lock = std::fs::read_to_string(&lock_path)
        .with_context(|| format!("read {}", lock_path.display()))?;
    Ok((metadata, lock))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const CRATES_IO_GIT: &str = "registry+https://github.com/rust-lang/crates.io-index";
    const PINNED: &str = "sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab";
    const DISTROLESS_PURL: &str = "pkg:oci/static-debian12@sha256:\
        afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab?arch=amd64&\
        repository_url=gcr.io/distroless/static-debian12&tag=nonroot";

    /// A package of the fixture: (name, version, source, license, a proc macro).
    type Crate<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, bool);

    fn id((name, version, source, ..): Crate) -> String {
        match source {
            Some(source) => format!("{source}#{name}@{version}"),
            None => format!("path+file:///src/{name}#{version}"),
        }
    }

    const APP: Crate = ("app", "0.1.0", None, Some("MIT"), false);
    const LINKED: Crate = (
        "linked",
        "1.2.3",
        Some(CRATES_IO_GIT),
        Some("MIT/Apache-2.0"),
        false,
    );
    const BOTH: Crate = (
        "both",
        "2.0.0",
        Some(CRATES_IO_GIT),
        Some("MIT OR Apache-2.0"),
        false,
    );
    const DEEP: Crate = ("deep", "0.3.0+meta.1", Some(CRATES_IO_GIT), None, false);
    const BUILD_ONLY: Crate = ("cc", "1.0.0", Some(CRATES_IO_GIT), Some("MIT"), false);
    const BUILD_DEP_OF_BUILD: Crate = ("shlex", "1.0.0", Some(CRATES_IO_GIT), Some("MIT"), false);
    const DEV_ONLY: Crate = ("proptest", "1.0.0", Some(CRATES_IO_GIT), Some("MIT"), false);
    const MACRO: Crate = ("derive", "1.0.0", Some(CRATES_IO_GIT), Some("MIT"), true);
    const MACRO_DEP: Crate = ("syn", "2.0.0", Some(CRATES_IO_GIT), Some("MIT"), false);
    const GIT: Crate = (
        "patched",
        "0.9.0",
        Some("git+https://github.com/o/patched?rev=abc#abc123def"),
        Some("Apache-2.0"),
        false,
    );
    const OTHER_REGISTRY: Crate = (
        "inhouse",
        "1.0.0",
        Some("sparse+https://crates.example.com/index/"),
        Some("MIT"),
        false,
    );

    /// Edges: (from, to, kinds), kind `None` = normal.
    type Edge<'a> = (Crate<'a>, Crate<'a>, &'a [Option<&'a str>]);

    /// `cargo metadata` output for `crates` and `edges`, rooted at APP.
    fn metadata(crates: &[Crate], edges: &[Edge]) -> String {
        let packages: Vec<Value> = crates
            .iter()
            .map(|&c| {
                let kind = if c.4 { "proc-macro" } else { "lib" };
                json!({"id": id(c), "name": c.0, "version": c.1, "source": c.2, "license": c.3,
                       "targets": [{"kind": [kind], "name": c.0}], "dependencies": []})
            })
            .collect();
        let nodes: Vec<Value> = crates
            .iter()
            .map(|&c| {
                let deps: Vec<Value> = edges
                    .iter()
                    .filter(|(from, ..)| id(*from) == id(c))
                    .map(|(_, to, kinds)| {
                        let kinds: Vec<Value> = kinds
                            .iter()
                            .map(|k| json!({"kind": k, "target": null}))
                            .collect();
                        json!({"name": to.0, "pkg": id(*to), "dep_kinds": kinds})
                    })
                    .collect();
                json!({"id": id(c), "deps": deps, "dependencies": [], "features": []})
            })
            .collect();
        json!({"packages": packages, "resolve": {"nodes": nodes, "root": id(APP)}, "version": 1})
            .to_string()
    }

    /// A Cargo.lock with a checksum for each registry crate of `crates` (sha256 of its name).
    fn lock(crates: &[Crate]) -> String {
        let mut lock =
            "# This file is automatically @generated by Cargo.\nversion = 4\n".to_owned();
        for &(name, version, source, ..) in crates {
            lock.push_str(&format!(
                "\n[[package]]\nname = \"{name}\"\nversion = \"{version}\"\n"
            ));
            if let Some(source) = source {
                lock.push_str(&format!("source = \"{source}\"\n"));
                if !source.starts_with("git+") {
                    lock.push_str(&format!("checksum = \"{}\"\n", checksum(name)));
                }
            }
            lock.push_str("dependencies = [\n \"x\",\n]\n");
        }
        lock
    }

    fn checksum(name: &str) -> String {
        format!("{:x}", Sha256::digest(name.as_bytes()))
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn image_labels() -> BTreeMap<String, String> {
        labels(&[
            (CREATED_LABEL, "2023-11-14T22:13:20Z"),
            (VERSION_LABEL, "1.2.3"),
            (BASE_NAME_LABEL, "gcr.io/distroless/static-debian12:nonroot"),
            (BASE_DIGEST_LABEL, PINNED),
        ])
    }

    fn generate(
        metadata: &str,
        lock: &str,
        labels: &BTreeMap<String, String>,
    ) -> anyhow::Result<Value> {
        let sbom = document(&Inputs {
            metadata,
            lock,
            labels,
            target: "x86_64-unknown-linux-gnu",
            platform: Platform::LINUX_AMD64,
        })?;
        let value: Value = serde_json::from_slice(&sbom.bytes)?;
        assert_eq!(
            value["components"].as_array().unwrap().len(),
            sbom.components
        );
        Ok(value)
    }

    fn names(document: &Value) -> Vec<String> {
        document["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                format!(
                    "{}@{}",
                    c["name"].as_str().unwrap(),
                    c["version"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    const NORMAL: &[Option<&str>] = &[None];
    const BUILD: &[Option<&str>] = &[Some("build")];
    const DEV: &[Option<&str>] = &[Some("dev")];

    #[test]
    fn only_what_is_linked() {
        let all = [
            APP,
            LINKED,
            BOTH,
            DEEP,
            BUILD_ONLY,
            BUILD_DEP_OF_BUILD,
            DEV_ONLY,
            MACRO,
            MACRO_DEP,
        ];
        // (edges, the components, name@version in purl order)
        let cases: [(Vec<Edge>, Vec<&str>); 6] = [
            (vec![], vec![]),
            (
                vec![(APP, LINKED, NORMAL), (LINKED, DEEP, NORMAL)],
                vec!["deep@0.3.0+meta.1", "linked@1.2.3"],
            ),
            // Build scripts' dependencies and everything they pull in are compiled for the build machine only.
            (
                vec![
                    (APP, BUILD_ONLY, BUILD),
                    (BUILD_ONLY, BUILD_DEP_OF_BUILD, NORMAL),
                    (APP, DEV_ONLY, DEV),
                ],
                vec![],
            ),
            // A crate that is both a normal and a build dependency is linked.
            (
                vec![
                    (APP, LINKED, NORMAL),
                    (LINKED, BOTH, &[Some("build"), None]),
                ],
                vec!["both@2.0.0", "linked@1.2.3"],
            ),
            // A proc macro and what only it depends on are out; what something linked also depends on is in.
            (
                vec![
                    (APP, MACRO, NORMAL),
                    (MACRO, MACRO_DEP, NORMAL),
                    (MACRO, DEEP, NORMAL),
                    (APP, LINKED, NORMAL),
                ],
                vec!["linked@1.2.3"],
            ),
            (
                vec![
                    (APP, MACRO, NORMAL),
                    (MACRO, DEEP, NORMAL),
                    (APP, LINKED, NORMAL),
                    (LINKED, DEEP, NORMAL),
                ],
                vec!["deep@0.3.0+meta.1", "linked@1.2.3"],
            ),
        ];
        for (edges, want) in cases {
            let document =
                generate(&metadata(&all, &edges), &lock(&all), &BTreeMap::new()).unwrap();
            assert_eq!(names(&document), want, "{edges:?}");
        }
    }

    #[test]
    fn purls_hashes_and_licenses() {
        let all = [APP, LINKED, BOTH, DEEP, GIT, OTHER_REGISTRY];
        let edges: Vec<Edge> = all[1..].iter().map(|&c| (APP, c, NORMAL)).collect();
        let document = generate(&metadata(&all, &edges), &lock(&all), &BTreeMap::new()).unwrap();
        let hash = |name: &str| json!([{"alg": "SHA-256", "content": checksum(name)}]);
        // (purl, hashes, licenses)
        let want = [
            (
                "pkg:cargo/both@2.0.0",
                hash("both"),
                json!([{"expression": "MIT OR Apache-2.0"}]),
            ),
            ("pkg:cargo/deep@0.3.0%2Bmeta.1", hash("deep"), Value::Null),
            (
                "pkg:cargo/inhouse@1.0.0?repository_url=https://crates.example.com/index/",
                hash("inhouse"),
                json!([{"expression": "MIT"}]),
            ),
            (
                "pkg:cargo/linked@1.2.3",
                hash("linked"),
                json!([{"expression": "MIT OR Apache-2.0"}]),
            ),
            (
                "pkg:cargo/patched@0.9.0?vcs_url=git%2Bhttps://github.com/o/patched%40abc123def",
                Value::Null,
                json!([{"expression": "Apache-2.0"}]),
            ),
        ];
        let components = document["components"].as_array().unwrap();
        assert_eq!(components.len(), want.len(), "{document:#}");
        for (component, (purl, hashes, licenses)) in components.iter().zip(want) {
            assert_eq!(component["type"], "library");
            assert_eq!(component["purl"], purl);
            assert_eq!(component["bom-ref"], purl);
            assert_eq!(component["hashes"], hashes, "{purl}");
            assert_eq!(component["licenses"], licenses, "{purl}");
        }
    }

    #[test]
    fn a_registry_crate_without_a_checksum_is_an_error() {
        let all = [APP, LINKED];
        let metadata = metadata(&all, &[(APP, LINKED, NORMAL)]);
        let lock = lock(&all).replace(&format!("checksum = \"{}\"\n", checksum("linked")), "");
        let err = generate(&metadata, &lock, &BTreeMap::new()).unwrap_err();
        assert!(
            format!("{err:#}").contains("no checksum for linked@1.2.3"),
            "{err:#}"
        );
    }

    #[test]
    fn the_base_image_and_the_app() {
        let all = [APP, LINKED];
        let metadata = metadata(&all, &[(APP, LINKED, NORMAL)]);
        let lock = lock(&all);
        // (labels, the base image's component or null, the app's version, the timestamp or null)
        let cases = [
            (
                image_labels(),
                json!({
                    "type": "container",
                    "bom-ref": DISTROLESS_PURL,
                    "name": "gcr.io/distroless/static-debian12",
                    "version": PINNED,
                    "scope": "required",
                    "hashes": [{"alg": "SHA-256", "content": PINNED.strip_prefix("sha256:").unwrap()}],
                    "purl": DISTROLESS_PURL,
                }),
                "1.2.3",
                json!("2023-11-14T22:13:20Z"),
            ),
            (
                labels(&[
                    (BASE_NAME_LABEL, "localhost:5000/xtask/BusyBox:amd64"),
                    (VERSION_LABEL, "latest"),
                ]),
                json!({
                    "type": "container",
                    "bom-ref": "pkg:oci/busybox?arch=amd64&repository_url=localhost:5000/xtask/BusyBox&tag=amd64",
                    "name": "localhost:5000/xtask/BusyBox",
                    "version": "amd64",
                    "scope": "required",
                    "purl": "pkg:oci/busybox?arch=amd64&repository_url=localhost:5000/xtask/BusyBox&tag=amd64",
                }),
                "latest",
                Value::Null,
            ),
            (
                labels(&[(BASE_NAME_LABEL, "localhost:5000/bare")]),
                json!({
                    "type": "container",
                    "bom-ref": "pkg:oci/bare?arch=amd64&repository_url=localhost:5000/bare",
                    "name": "localhost:5000/bare",
                    "scope": "required",
                    "purl": "pkg:oci/bare?arch=amd64&repository_url=localhost:5000/bare",
                }),
                "0.1.0",
                Value::Null,
            ),
            // scratch: no base labels, no container.
            (BTreeMap::new(), Value::Null, "0.1.0", Value::Null),
        ];
        for (labels, base, version, timestamp) in cases {
            let document = generate(&metadata, &lock, &labels).unwrap();
            let components = document["components"].as_array().unwrap();
            let container = components.iter().find(|c| c["type"] == "container");
            assert_eq!(
                container.cloned().unwrap_or(Value::Null),
                base,
                "{labels:?}"
            );
            let app = &document["metadata"]["component"];
            assert_eq!(
                app,
                &json!({"type": "application", "bom-ref": "pkg:cargo/app@0.1.0", "name": "app",
                        "version": version, "licenses": [{"expression": "MIT"}], "purl": "pkg:cargo/app@0.1.0"})
            );
            assert_eq!(document["metadata"]["timestamp"], timestamp, "{labels:?}");
            assert_eq!(
                document["metadata"]["properties"],
                json!([{"name": "cdx:rustc:sbom:target:triple", "value": "x86_64-unknown-linux-gnu"}])
            );
            let mut dependencies = vec![
                json!({"ref": "pkg:cargo/app@0.1.0", "dependsOn": ["pkg:cargo/linked@1.2.3"]}),
                json!({"ref": "pkg:cargo/linked@1.2.3"}),
            ];
            if let Some(container) = container {
                dependencies.push(json!({"ref": container["bom-ref"]}));
            }
            assert_eq!(
                document["dependencies"],
                Value::Array(dependencies),
                "{labels:?}"
            );
        }
    }

    #[test]
    fn the_same_inputs_in_any_order_give_the_same_bytes() {
        let all = [APP, LINKED, BOTH, DEEP, MACRO, MACRO_DEP];
        let edges = [
            (APP, LINKED, NORMAL),
            (APP, MACRO, NORMAL),
            (LINKED, DEEP, NORMAL),
            (APP, BOTH, NORMAL),
        ];
        let reversed_crates: Vec<Crate> = all.iter().rev().copied().collect();
        let reversed_edges: Vec<Edge> = edges.iter().rev().copied().collect();
        let lock = lock(&all);
        let labels = image_labels();
        let bytes = |metadata: &str, lock: &str| {
            document(&Inputs {
                metadata,
                lock,
                labels: &labels,
                target: "aarch64-unknown-linux-gnu",
                platform: Platform::LINUX_ARM64,
            })
            .unwrap()
            .bytes
        };
        let first = bytes(&metadata(&all, &edges), &lock);
        let reversed_lock = self::lock(&reversed_crates);
        assert_eq!(
            first,
            bytes(&metadata(&reversed_crates, &reversed_edges), &reversed_lock)
        );
        let text = String::from_utf8(first).unwrap();
        assert!(
            text.ends_with("}\n") && text.starts_with("{\n  \"$schema\""),
            "{text}"
        );
        // The serial number is a UUID made from the content, its version 8 and variant bits set.
        let document: Value = serde_json::from_str(&text).unwrap();
        let serial = document["serialNumber"].as_str().unwrap();
        let uuid = serial.strip_prefix("urn:uuid:").unwrap();
        let groups: Vec<usize> = uuid.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{serial}");
        assert!(uuid
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(&uuid[14..15], "8", "{serial}");
        assert!("89ab".contains(&uuid[19..20]), "{serial}");
        // Another platform, another document.
        let amd64 = generate(&metadata(&all, &edges), &lock, &labels).unwrap();
        assert_ne!(amd64["serialNumber"], document["serialNumber"]);
    }

    /// The whole document for a small graph on the project's default base, byte for byte (the integration test
    /// validates this file against the CycloneDX 1.6 schema too). After a deliberate change of the format, write
    /// the new document printed by the failure into the file.
    #[test]
    fn the_document_as_written() {
        let all = [APP, LINKED, BOTH, DEEP, BUILD_ONLY, MACRO];
        let edges = [
            (APP, LINKED, NORMAL),
            (APP, MACRO, NORMAL),
            (APP, BUILD_ONLY, BUILD),
            (LINKED, DEEP, NORMAL),
            (LINKED, BOTH, NORMAL),
        ];
        let sbom = document(&Inputs {
            metadata: &metadata(&all, &edges),
            lock: &lock(&all),
            labels: &image_labels(),
            target: "x86_64-unknown-linux-gnu",
            platform: Platform::LINUX_AMD64,
        })
        .unwrap();
        let text = String::from_utf8(sbom.bytes).unwrap();
        assert_eq!(sbom.components, 4);
        assert_eq!(text, include_str!("testdata/sbom.cdx.json"), "\n{text}");
    }

    #[test]
    fn lock_file_checksums() {
        let lock = "version = 4\n\n[[package]]\nname = \"a\"\nversion = \"1.0.0\"\nsource = \"registry+x\"\n\
                    checksum = \"abc\"\n\n[[package]]\nname = \"local\"\nversion = \"0.1.0\"\n\
                    dependencies = [\n \"a\",\n]\n\n\
                    [[package]]\nname = \"b\"\nversion = \"2.0.0\"\nsource = \"sparse+y\"\nchecksum = \"def\"\n\n\
                    [metadata]\nname = \"not a package\"\nversion = \"0\"\nchecksum = \"no\"\n";
        let want = BTreeMap::from([
            (
                ("a".into(), "1.0.0".into(), Some("registry+x".into())),
                "abc".to_owned(),
            ),
            (
                ("b".into(), "2.0.0".into(), Some("sparse+y".into())),
                "def".to_owned(),
            ),
        ]);
        assert_eq!(lock_checksums(lock), want);
        let project = lock_checksums(include_str!("../../../../Cargo.lock"));
        assert!(
            project.keys().any(|(name, ..)| name == "serde_json"),
            "{project:?}"
        );
    }

    #[test]
    fn percent_encoding_keeps_what_purls_keep() {
        let cases = [
            ("1.0.0+build.1", "1.0.0%2Bbuild.1"),
            ("sha256:ab", "sha256:ab"),
            ("gcr.io/a_b/c-d~e", "gcr.io/a_b/c-d~e"),
            ("a b@c?d#e&f=g", "a%20b%40c%3Fd%23e%26f%3Dg"),
        ];
        for (text, want) in cases {
            assert_eq!(percent_encode(text), want);
        }
    }
}
