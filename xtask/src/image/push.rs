//! `cargo xtask image push`: one platform's exported image (`target/image/<os>-<arch>/`, written by
//! `podman push IMG dir:PATH`) into every target repository, by digest, creating no tag.
//!
//! The exact exported manifest bytes are sent everywhere, so the digest is the same in every registry. Per target:
//! HEAD the manifest (a rerun stops here, sending nothing), else for each blob HEAD, mount from a repository of the
//! same registry that got it earlier in this run, or upload streamed from its file; then PUT the manifest by digest.
//! Finally `DIR/<os>-<arch>` records digest, size, media type and platform for the manifest stage.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::exit;
use crate::flags;
use crate::oci::{media_type, ConfigFile, Digest, ImageManifest, Manifest, Platform, PlatformSpec};
use crate::registry::client::BlobOutcome;
use crate::registry::reference::parse_targets;
use crate::registry::{Reference, Repo, Repository};
use crate::session::Session;

impl flags::Push {
    pub fn run(self, session: &mut Session) -> anyhow::Result<()> {
        let platform: Platform = self.platform.parse()?;
        let targets = if self.to.is_empty() {
            session.config()?.targets.clone()
        } else {
            self.to.clone()
        };
        let request = Request {
            platform,
            export_dir: session.export_dir(platform),
            targets: parse_targets(&targets)?,
            digest_dir: session.root.join(&self.digest_dir),
            insecure: self.insecure_registry.clone(),
        };
        if self.dry_run {
            let export = read_export(&request.export_dir, platform).ok();
            println!(
                "dry run: image push would make these registry calls for {platform}, and change nothing:"
            );
            for line in planned_calls(&request, export.as_ref()) {
                println!("  {line}");
            }
            return Ok(());
        }
        push(session, &request)?;
        Ok(())
    }
}

/// What to push where.
#[derive(Clone, Debug)]
pub struct Request {
    pub platform: Platform,
    /// The `dir:` export of this platform's image.
    pub export_dir: PathBuf,
    pub targets: Vec<Reference>,
    /// Receives `<os>-<arch>`.
    pub digest_dir: PathBuf,
    /// Hosts allowed plain HTTP besides loopback.
    pub insecure: Vec<String>,
}

/// One blob of the export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub digest: Digest,
    pub size: u64,
    pub path: PathBuf,
}

/// A platform's exported image, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    pub dir: PathBuf,
    /// The manifest's exact bytes: they are what is pushed and what the digest is of.
    pub manifest: Manifest,
    pub config: Blob,
    pub layers: Vec<Blob>,
    /// From the config: what the manifest list will say about this image.
    pub platform: PlatformSpec,
}

impl Export {
    /// Config first, then the layers in order.
    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.config).chain(&self.layers)
    }

    pub fn total_size(&self) -> u64 {
        self.blobs().map(|b| b.size).sum()
    }
}

/// The digest file the manifest stage reads (`DIR/<os>-<arch>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DigestRecord {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub platform: PlatformSpec,
    /// Where it was pushed (`registry/repository`).
    #[serde(default)]
    pub targets: Vec<String>,
}

/// Reads and checks the export of `platform`: manifest.json, every blob file at its size, the config's digest and
/// platform. Failures are build-side (exit 3) and say which build to rerun.
pub fn read_export(dir: &Path, platform: Platform) -> anyhow::Result<Export> {
    let rebuild = format!("run `cargo xtask image build --platform {platform}` first");
    let broken =
        |why: String| exit::build_failed(format!("export {}: {why}; {rebuild}", dir.display()));
    let manifest_path = dir.join("manifest.json");
    let bytes = match std::fs::read(&manifest_path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(exit::build_failed(format!(
                "no exported image for {platform}: {} is missing; {rebuild}",
                manifest_path.display()
            )))
        }
        Err(err) => return Err(err).with_context(|| format!("read {}", manifest_path.display())),
    };
    let parsed =
        ImageManifest::parse(&bytes).map_err(|why| broken(format!("manifest.json is {why}")))?;
    let manifest = Manifest::new(parsed.media_type.as_deref().unwrap_or_default(), bytes);
    if manifest.media_type.is_empty() {
        return Err(broken("manifest.json has no mediaType".into()));
    }
    if manifest.media_type != media_type::DOCKER_MANIFEST {
        return Err(broken(format!(
            "the manifest is {}, but the pipeline publishes Docker schema-2 images (an OCI config \
             loses HEALTHCHECK); export with `podman push --format v2s2`",
            manifest.media_type
        )));
    }
    let blob = |digest: &Digest, size: u64| -> anyhow::Result<Blob> {
        let path = dir.join(digest.hex());
        let on_disk = std::fs::metadata(&path)
            .map_err(|_| broken(format!("blob file {} is missing", path.display())))?
            .len();
        if on_disk != size {
            return Err(broken(format!(
                "blob file {} has {on_disk} bytes, the manifest says {size}",
                path.display()
            )));
        }
        Ok(Blob {
            digest: digest.clone(),
            size,
            path,
        })
    };
    let config = blob(&parsed.config.digest, parsed.config.size)?;
    let config_bytes =
        std::fs::read(&config.path).with_context(|| format!("read {}", config.path.display()))?;
    if Digest::of(&config_bytes) != config.digest {
        return Err(broken(format!(
            "config {} does not match its digest",
            config.path.display()
        )));
    }
    let image = ConfigFile::parse(&config_bytes)
        .ok()
        .filter(|c| !c.os.is_empty() && !c.architecture.is_empty())
        .ok_or_else(|| {
            broken(format!(
                "config {} has no os/architecture",
                config.path.display()
            ))
        })?;
    if !platform.matches(&image.os, &image.architecture) {
        return Err(broken(format!(
            "the image in it is {}/{}, not {platform}",
            image.os, image.architecture
        )));
    }
    let layers = parsed
        .layers
        .iter()
        .map(|d| blob(&d.digest, d.size))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Export {
        dir: dir.to_owned(),
        manifest,
        config,
        layers,
        platform: PlatformSpec {
            architecture: image.architecture,
            os: image.os,
            variant: image.variant,
        },
    })
}

/// What one target got.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetReport {
    pub target: String,
    /// The manifest was already there (a rerun): nothing was sent.
    pub already_there: bool,
    pub uploaded_blobs: usize,
    pub uploaded_bytes: u64,
    pub mounted_blobs: usize,
    pub existing_blobs: usize,
    /// Bytes not sent because the registry had them (existing, mounted, or the whole image on a rerun).
    pub skipped_bytes: u64,
    /// HTTP requests made for this target (token requests included).
    pub requests: u64,
    pub elapsed: Duration,
}

/// What a push did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub record: DigestRecord,
    pub digest_file: PathBuf,
    pub targets: Vec<TargetReport>,
}

/// The registry calls a push makes, in order (`--dry-run`); with no export yet (a dry-run release) the blobs
/// are named by where they will come from.
pub fn planned_calls(request: &Request, export: Option<&Export>) -> Vec<String> {
    let source = request.export_dir.join("manifest.json");
    let manifest = export.map_or_else(
        || format!("<digest of {}>", source.display()),
        |e| e.manifest.digest.to_string(),
    );
    let blobs: Vec<(String, String)> = match export {
        Some(export) => export
            .blobs()
            .map(|b| (b.digest.to_string(), format!("{} bytes; ", b.size)))
            .collect(),
        None => vec![(
            format!("<each blob of {}>", source.display()),
            String::new(),
        )],
    };
    let mut calls = Vec::new();
    let mut pushed_on: HashMap<&str, &str> = HashMap::new();
    for target in &request.targets {
        let base = target.base_url(&request.insecure);
        let repo = &target.repository;
        calls.push(format!(
            "HEAD   {base}/v2/{repo}/manifests/{manifest}  (present: skip this target)"
        ));
        for (blob, size) in &blobs {
            calls.push(format!(
                "HEAD   {base}/v2/{repo}/blobs/{blob}  ({size}present: skip)"
            ));
            if let Some(from) = pushed_on.get(target.api_host.as_str()) {
                calls.push(format!(
                    "POST   {base}/v2/{repo}/blobs/uploads/?mount=…&from={from}  (201: mounted, done)"
                ));
            } else {
                calls.push(format!("POST   {base}/v2/{repo}/blobs/uploads/"));
            }
            calls.push("PUT    <upload Location>?digest=…  (the file, streamed)".to_owned());
        }
        calls.push(format!(
            "PUT    {base}/v2/{repo}/manifests/{manifest}  ({}, no tag)",
            export.map_or(media_type::DOCKER_MANIFEST, |e| e
                .manifest
                .media_type
                .as_str())
        ));
        pushed_on.entry(target.api_host.as_str()).or_insert(repo);
    }
    calls.push(format!(
        "write  {}",
        request
            .digest_dir
            .join(request.platform.dir_name())
            .display()
    ));
    calls
}

/// Pushes one platform to every target and writes its digest file, through the session's clients, so several
/// platforms (or the manifest stage after them) share logins and cached tokens; the function `image release`
/// calls.
pub fn push(session: &mut Session, request: &Request) -> anyhow::Result<Report> {
    let export = read_export(&request.export_dir, request.platform)?;
    // The digest file is the push's only output: a directory that cannot hold it is found out before anything
    // is sent, not after every registry got the image.
    std::fs::create_dir_all(&request.digest_dir).map_err(|err| {
        exit::invalid(format!(
            "digest directory {} cannot be created ({err}); pass --digest-dir a directory path",
            request.digest_dir.display()
        ))
    })?;
    let platform = request.platform;
    let digest = &export.manifest.digest;
    println!(
        "push {platform} {digest} ({} blobs, {}) to {} target(s), by digest, no tag",
        export.layers.len() + 1,
        human(export.total_size()),
        request.targets.len()
    );
    session.registries.allow_insecure(&request.insecure);
    session.registries.set_purpose("push to");
    // Per API host, a repository that holds every blob already: later targets there mount instead of uploading.
    let mut mount_source: HashMap<String, String> = HashMap::new();
    let mut reports = Vec::new();
    for target in &request.targets {
        let repo = session.registries.repository(&session.sh, target)?;
        let report = push_target(
            &repo,
            &export,
            mount_source.get(&target.api_host).map(String::as_str),
        )
        .with_context(|| format!("push {platform} to {target}"))?;
        mount_source
            .entry(target.api_host.clone())
            .or_insert_with(|| target.repository.clone());
        reports.push(report);
    }

    let record = DigestRecord {
        digest: digest.clone(),
        size: export.manifest.bytes.len() as u64,
        media_type: export.manifest.media_type.clone(),
        platform: export.platform.clone(),
        targets: request.targets.iter().map(ToString::to_string).collect(),
    };
    let digest_file = write_record(&request.digest_dir, platform, &record)?;
    let uploaded: u64 = reports.iter().map(|r| r.uploaded_bytes).sum();
    let skipped: u64 = reports.iter().map(|r| r.skipped_bytes).sum();
    println!(
        "pushed {platform} {digest}: {} uploaded, {} skipped; digest written to {}",
        human(uploaded),
        human(skipped),
        digest_file.display()
    );
    Ok(Report {
        record,
        digest_file,
        targets: reports,
    })
}

/// Blobs go through the client itself: uploads and mounts stream files, which only the real registry does.
fn push_target(
    repo: &Repo,
    export: &Export,
    mount_from: Option<&str>,
) -> anyhow::Result<TargetReport> {
    let started = Instant::now();
    let registry = &repo.client;
    let requests_before = registry.requests();
    let target = repo.target();
    let digest = &export.manifest.digest;
    let mut report = TargetReport {
        target: target.to_string(),
        ..TargetReport::default()
    };
    if repo.resolve(digest.as_str())?.is_some() {
        report.already_there = true;
        report.existing_blobs = export.layers.len() + 1;
        report.skipped_bytes = export.total_size();
    } else {
        for blob in export.blobs() {
            let outcome =
                registry.push_blob(&target.repository, &blob.digest, &blob.path, mount_from)?;
            let what = match outcome {
                BlobOutcome::Existed => {
                    report.existing_blobs += 1;
                    report.skipped_bytes += blob.size;
                    "already there".to_owned()
                }
                BlobOutcome::Mounted => {
                    report.mounted_blobs += 1;
                    report.skipped_bytes += blob.size;
                    format!("mounted from {}", mount_from.unwrap_or("?"))
                }
                BlobOutcome::Uploaded(bytes) => {
                    report.uploaded_blobs += 1;
                    report.uploaded_bytes += bytes;
                    if bytes == 0 {
                        // An earlier attempt's upload had landed after all.
                        report.skipped_bytes += blob.size;
                        "already there (found after a retry)".to_owned()
                    } else {
                        format!("uploaded {}", human(bytes))
                    }
                }
            };
            println!(
                "  {target}: blob {} ({}) {what}",
                blob.digest.short(),
                human(blob.size)
            );
        }
        repo.put_manifest(digest.as_str(), &export.manifest)?;
    }
    report.requests = registry.requests() - requests_before;
    report.elapsed = started.elapsed();
    println!(
        "  {target}@{digest}: {}; {} uploaded in {} blob(s), {} mounted, {} already there, {} skipped, \
         {} requests, {:.2} s",
        if report.already_there {
            "manifest already there"
        } else {
            "manifest put"
        },
        human(report.uploaded_bytes),
        report.uploaded_blobs,
        report.mounted_blobs,
        report.existing_blobs,
        human(report.skipped_bytes),
        report.requests,
        report.elapsed.as_secs_f64()
    );
    Ok(report)
}
/// Writes `DIR/<os>-<arch>` whole or not at all (a half-written file must not reach the manifest stage).
pub fn write_record(
    dir: &Path,
    platform: Platform,
    record: &DigestRecord,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("create digest directory {}", dir.display()))?;
    let path = dir.join(platform.dir_name());
    let temporary = dir.join(format!(".{}.tmp", platform.dir_name()));
    let mut json = serde_json::to_string_pretty(record).expect("a digest record serializes");
    json.push('\n');
    std::fs::write(&temporary, json).with_context(|| format!("write {}", temporary.display()))?;
    std::fs::rename(&temporary, &path).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// `1.5 MiB`
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::oci::media_type::{DOCKER_MANIFEST, OCI_MANIFEST};

    fn d(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    fn write_export(dir: &Path, arch: &str, manifest_type: &str) -> (Digest, Digest) {
        std::fs::create_dir_all(dir).unwrap();
        let config = format!(r#"{{"architecture":"{arch}","os":"linux","config":{{}}}}"#);
        let config_digest = Digest::of(config.as_bytes());
        let layer = b"not really a tarball";
        let layer_digest = Digest::of(layer);
        std::fs::write(dir.join(config_digest.hex()), &config).unwrap();
        std::fs::write(dir.join(layer_digest.hex()), layer).unwrap();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{manifest_type}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":{},"digest":"{config_digest}"}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":{},"digest":"{layer_digest}"}}]}}"#,
            config.len(),
            layer.len()
        );
        std::fs::write(dir.join("manifest.json"), &manifest).unwrap();
        std::fs::write(dir.join("version"), "Directory Transport Version: 1.1\n").unwrap();
        (Digest::of(manifest.as_bytes()), layer_digest)
    }

    #[test]
    fn exports_are_checked() {
        let root = std::env::temp_dir().join(format!("xtask-export-{}", std::process::id()));
        let good = root.join("good");
        let (digest, layer) = write_export(&good, "arm64", DOCKER_MANIFEST);
        let export = read_export(&good, Platform::LINUX_ARM64).unwrap();
        assert_eq!(export.manifest.digest, digest);
        assert_eq!(export.layers.len(), 1);
        assert_eq!(
            export.platform,
            PlatformSpec {
                os: "linux".into(),
                architecture: "arm64".into(),
                variant: None
            }
        );

        let cases: Vec<(PathBuf, Platform, &str)> = {
            let missing = root.join("missing");
            let wrong_arch = root.join("wrong-arch");
            write_export(&wrong_arch, "amd64", DOCKER_MANIFEST);
            let oci = root.join("oci");
            write_export(&oci, "arm64", OCI_MANIFEST);
            let untyped = root.join("untyped");
            write_export(&untyped, "arm64", "");
            let short_blob = root.join("short-blob");
            let (_, layer2) = write_export(&short_blob, "arm64", DOCKER_MANIFEST);
            std::fs::write(short_blob.join(layer2.hex()), "x").unwrap();
            let no_blob = root.join("no-blob");
            write_export(&no_blob, "arm64", DOCKER_MANIFEST);
            std::fs::remove_file(no_blob.join(layer.hex())).unwrap();
            vec![
                (missing, Platform::LINUX_ARM64, "manifest.json is missing"),
                (
                    wrong_arch,
                    Platform::LINUX_ARM64,
                    "is linux/amd64, not linux/arm64",
                ),
                (oci, Platform::LINUX_ARM64, "--format v2s2"),
                (untyped, Platform::LINUX_ARM64, "no mediaType"),
                (short_blob, Platform::LINUX_ARM64, "has 1 bytes"),
                (no_blob, Platform::LINUX_ARM64, "is missing"),
            ]
        };
        for (dir, platform, mention) in cases {
            let err = read_export(&dir, platform).unwrap_err();
            assert_eq!(exit::code_of(&err), 3, "{}", dir.display());
            let msg = err.to_string();
            assert!(msg.contains(mention), "{}: {msg}", dir.display());
            assert!(
                msg.contains("cargo xtask image build --platform linux/arm64"),
                "{msg}"
            );
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn digest_record_round_trips() {
        let dir = std::env::temp_dir().join(format!("xtask-digest-{}", std::process::id()));
        let record = DigestRecord {
            digest: d('e'),
            size: 420,
            media_type: DOCKER_MANIFEST.into(),
            platform: PlatformSpec {
                os: "linux".into(),
                architecture: "arm64".into(),
                variant: Some("v8".into()),
            },
            targets: vec!["127.0.0.1:5000/team/app".into()],
        };
        let path = write_record(&dir, Platform::LINUX_ARM64, &record).unwrap();
        assert_eq!(path, dir.join("linux-arm64"));
        let text = std::fs::read_to_string(&path).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["mediaType"], DOCKER_MANIFEST);
        assert_eq!(value["platform"]["architecture"], "arm64");
        assert_eq!(serde_json::from_str::<DigestRecord>(&text).unwrap(), record);
        assert!(!dir.join(".linux-arm64.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dry_run_names_every_call_in_order() {
        let request = Request {
            platform: Platform::LINUX_AMD64,
            export_dir: "/src/target/image/linux-amd64".into(),
            targets: parse_targets(&[
                "127.0.0.1:5000/team/app".into(),
                "127.0.0.1:5000/team/mirror".into(),
                "ghcr.io/o/app".into(),
            ])
            .unwrap(),
            digest_dir: "/tmp/digests".into(),
            insecure: vec![],
        };
        let calls = planned_calls(&request, None);
        let shape: Vec<String> = calls
            .iter()
            .map(|c| c.split("  (").next().unwrap().to_owned())
            .collect();
        let manifest = "<digest of /src/target/image/linux-amd64/manifest.json>";
        let blob = "<each blob of /src/target/image/linux-amd64/manifest.json>";
        let want = vec![
            format!("HEAD   http://127.0.0.1:5000/v2/team/app/manifests/{manifest}"),
            format!("HEAD   http://127.0.0.1:5000/v2/team/app/blobs/{blob}"),
            "POST   http://127.0.0.1:5000/v2/team/app/blobs/uploads/".into(),
            "PUT    <upload Location>?digest=…".into(),
            format!("PUT    http://127.0.0.1:5000/v2/team/app/manifests/{manifest}"),
            format!("HEAD   http://127.0.0.1:5000/v2/team/mirror/manifests/{manifest}"),
            format!("HEAD   http://127.0.0.1:5000/v2/team/mirror/blobs/{blob}"),
            "POST   http://127.0.0.1:5000/v2/team/mirror/blobs/uploads/?mount=…&from=team/app"
                .into(),
            "PUT    <upload Location>?digest=…".into(),
            format!("PUT    http://127.0.0.1:5000/v2/team/mirror/manifests/{manifest}"),
            format!("HEAD   https://ghcr.io/v2/o/app/manifests/{manifest}"),
            format!("HEAD   https://ghcr.io/v2/o/app/blobs/{blob}"),
            "POST   https://ghcr.io/v2/o/app/blobs/uploads/".into(),
            "PUT    <upload Location>?digest=…".into(),
            format!("PUT    https://ghcr.io/v2/o/app/manifests/{manifest}"),
            "write  /tmp/digests/linux-amd64".into(),
        ];
        assert_eq!(shape, want);
        assert!(calls.iter().all(|c| !c.contains(":latest")));
    }

    #[test]
    fn sizes_read_well() {
        let cases = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (5 << 20, "5.0 MiB"),
            (3 << 30, "3.0 GiB"),
        ];
        for (bytes, want) in cases {
            assert_eq!(human(bytes), want);
        }
    }
}
