//! The vocabulary every stage speaks: digests, media types, the target platforms, descriptors, image manifests,
//! manifest lists and the parts of an image config the pipeline reads. One type per concept, after
//! go-containerregistry's `pkg/v1`; nothing here does I/O but hashing a file.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::exit;

/// A content digest, always `sha256:` and 64 lowercase hex digits: the only form the pipeline makes or accepts.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    /// The digest of these bytes.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{:x}", Sha256::digest(bytes)))
    }

    /// The digest of a whole file, read in pieces (layers can be large); only the bench hashes files it made.
    #[cfg(feature = "bench")]
    pub fn of_file(path: &std::path::Path) -> std::io::Result<Digest> {
        use std::io::Read as _;
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
        Ok(Digest(format!("sha256:{:x}", hasher.finalize())))
    }

    /// Whether `value` is a digest in the one accepted form.
    pub fn is_valid(value: &str) -> bool {
        value.strip_prefix("sha256:").is_some_and(|hex| {
            hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits (the blob file names of a `dir:` export).
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// `sha256:0123456789ab`: enough to tell digests apart in a message.
    pub fn short(&self) -> &str {
        &self.0[..19]
    }
}

impl FromStr for Digest {
    type Err = anyhow::Error;

    fn from_str(value: &str) -> anyhow::Result<Digest> {
        if Digest::is_valid(value) {
            Ok(Digest(value.to_owned()))
        } else {
            Err(exit::invalid(format!(
                "{value:?} is not a digest; give sha256: and 64 lowercase hex digits"
            )))
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Digest {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let value = String::deserialize(deserializer)?;
        if Digest::is_valid(&value) {
            Ok(Digest(value))
        } else {
            Err(serde::de::Error::custom(format!(
                "{value:?} is not a sha256 digest"
            )))
        }
    }
}

/// The media types the pipeline names. Only Docker schema 2 keeps HEALTHCHECK, so that is what it publishes; the
/// OCI ones are recognised where registries answer them.
pub mod media_type {
    /// A Docker image manifest (schema 2): every child the pipeline pushes.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// The Docker manifest list: the multi-platform index over schema-2 children.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// The Accept header of every manifest read: lists and indexes first, so a tag is never converted.
    pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
        application/vnd.docker.distribution.manifest.list.v2+json, \
        application/vnd.oci.image.manifest.v1+json, \
        application/vnd.docker.distribution.manifest.v2+json";

    /// An index of manifests (Docker list or OCI index).
    pub fn is_index(media_type: &str) -> bool {
        media_type == DOCKER_LIST || media_type == OCI_INDEX
    }
}

/// A target platform of the image. Only the two the Containerfile can cross-compile to exist.
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
    /// Every platform, in the order a manifest list names them.
    pub const ALL: [Platform; 2] = [Platform::LINUX_AMD64, Platform::LINUX_ARM64];

    /// `linux-amd64`: a file and directory name (target/image/linux-amd64/, the digest record).
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.os, self.arch)
    }

    /// Whether an image config or list entry names this platform.
    pub fn matches(&self, os: &str, architecture: &str) -> bool {
        (os, architecture) == (self.os, self.arch)
    }

    /// Parses a comma-separated list (`linux/amd64,linux/arm64`), refusing unknown platforms, empty entries and
    /// a platform named twice (a mistake in the caller's list, not something to guess about): all exit 2.
    pub fn parse_list(list: &str) -> anyhow::Result<Vec<Platform>> {
        if list.split(',').all(|item| item.trim().is_empty()) {
            return Err(exit::invalid(
                "the platform list is empty, so there is no platform to build; use linux/amd64, linux/arm64 or both, comma-separated, or leave \
                 --platforms out for the configured ones",
            ));
        }
        let mut out: Vec<Platform> = Vec::new();
        for item in list.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(exit::invalid(format!(
                    "empty entry in the platform list {list:?}; use linux/amd64, linux/arm64 or both, comma-separated"
                )));
            }
            let platform: Platform = item.parse()?;
            if out.contains(&platform) {
                return Err(exit::invalid(format!(
                    "platform {platform} is listed twice in {list:?}; name each platform once"
                )));
            }
            out.push(platform);
        }
        Ok(out)
    }

    /// Sorts platforms into list order (amd64, then arm64), whatever order they were given in.
    pub fn list_position(&self) -> usize {
        Platform::ALL
            .iter()
            .position(|p| p == self)
            .unwrap_or(usize::MAX)
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

/// The `platform` of a list entry or a digest record, as JSON spells it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformSpec {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Points at a blob or manifest: what it is, how big, its digest, and for a list entry the platform.
/// The field order is the serialised order, which the list's digest depends on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    #[serde(default)]
    pub size: u64,
    pub digest: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformSpec>,
}

/// An image manifest: one config and its layers.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

impl ImageManifest {
    /// Parses an image manifest; the media type comes from the document, or from its config's type where an OCI
    /// manifest leaves it out.
    pub fn parse(bytes: &[u8]) -> Result<ImageManifest, String> {
        let mut manifest: ImageManifest = serde_json::from_slice(bytes)
            .map_err(|err| format!("not an image manifest ({err})"))?;
        if manifest.schema_version != 2 {
            return Err(format!("schemaVersion {}, not 2", manifest.schema_version));
        }
        if manifest.media_type.is_none() && manifest.config.media_type == media_type::OCI_CONFIG {
            manifest.media_type = Some(media_type::OCI_MANIFEST.to_owned());
        }
        Ok(manifest)
    }

    /// Every blob it names, config first.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        std::iter::once(&self.config).chain(&self.layers)
    }
}

/// A manifest list (Docker) or image index (OCI).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
}

/// The parts of an image config the pipeline reads: the platform, and the labels and healthcheck of the runtime
/// config (Docker spells it `config`; `container_config` and the rest are ignored).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub config: RunConfig,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct RunConfig {
    #[serde(rename = "Labels", default)]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    #[serde(rename = "Healthcheck", default)]
    pub healthcheck: Option<serde_json::Value>,
}

impl ConfigFile {
    pub fn parse(bytes: &[u8]) -> Result<ConfigFile, String> {
        // serde would take a JSON array for a struct; a config is an object.
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return Err("not an image config (not a JSON object)".into());
        }
        serde_json::from_slice(bytes).map_err(|err| format!("not an image config ({err})"))
    }
}

/// A manifest exactly as stored: its bytes are hashed and resent, never re-serialised, so a manifest taken away by
/// mistake can be put back byte for byte.
#[derive(Clone, PartialEq, Eq)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

impl Manifest {
    /// These bytes under this media type; a generic or empty type gives way to the document's own `mediaType`.
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Manifest {
        let media_type = if media_type.is_empty()
            || media_type.starts_with("text/")
            || media_type.starts_with("application/json")
        {
            document_media_type(&bytes).unwrap_or_else(|| media_type.to_owned())
        } else {
            media_type.to_owned()
        };
        Manifest {
            digest: Digest::of(&bytes),
            media_type,
            bytes,
        }
    }

    pub fn is_index(&self) -> bool {
        media_type::is_index(&self.media_type)
            || document_media_type(&self.bytes).is_some_and(|t| media_type::is_index(&t))
    }

    /// The digests an index lists; empty for an image manifest.
    pub fn children(&self) -> Result<Vec<Digest>, String> {
        if !self.is_index() {
            return Ok(Vec::new());
        }
        let index: Index = serde_json::from_slice(&self.bytes)
            .map_err(|err| format!("index {} is not valid ({err})", self.digest))?;
        Ok(index.manifests.into_iter().map(|d| d.digest).collect())
    }
}

impl fmt::Debug for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manifest")
            .field("digest", &self.digest)
            .field("media_type", &self.media_type)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// The `mediaType` a manifest document names itself.
fn document_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Typed {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Typed>(bytes).ok()?.media_type
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        let empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(Digest::of(b"").as_str(), empty);
        assert_eq!(Digest::of(b"").short(), "sha256:e3b0c44298fc");
        assert_eq!(Digest::of(b"").hex().len(), 64);
        let cases = [
            (empty, true),
            ("sha256:abc", false),
            ("sha256:", false),
            ("", false),
            (
                "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                false,
            ),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                false,
            ),
            (
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
                false,
            ),
            ("latest", false),
        ];
        for (value, valid) in cases {
            assert_eq!(Digest::is_valid(value), valid, "{value:?}");
            assert_eq!(value.parse::<Digest>().is_ok(), valid, "{value:?}");
            let json = serde_json::to_string(value).unwrap();
            assert_eq!(
                serde_json::from_str::<Digest>(&json).is_ok(),
                valid,
                "{value:?}"
            );
        }
        let err = "sha256:abc".parse::<Digest>().unwrap_err();
        assert_eq!(crate::exit::code_of(&err), 2);
    }

    #[cfg(feature = "bench")]
    #[test]
    fn file_digest_matches_the_bytes() {
        let path = std::env::temp_dir().join(format!("xtask-oci-{}", std::process::id()));
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(Digest::of_file(&path).unwrap(), Digest::of(&bytes));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn media_types() {
        use media_type::*;
        for (media_type, index) in [
            (DOCKER_LIST, true),
            (OCI_INDEX, true),
            (DOCKER_MANIFEST, false),
            (OCI_MANIFEST, false),
            (OCI_CONFIG, false),
            ("application/json", false),
        ] {
            assert_eq!(is_index(media_type), index, "{media_type}");
        }
    }

    #[test]
    fn platforms_parse_and_print() {
        for p in Platform::ALL {
            assert_eq!(p.to_string().parse::<Platform>().unwrap(), p);
        }
        assert_eq!(Platform::LINUX_ARM64.dir_name(), "linux-arm64");
        assert!(Platform::LINUX_ARM64.matches("linux", "arm64"));
        assert!(!Platform::LINUX_ARM64.matches("linux", "amd64"));
        for bad in ["linux/386", "windows/amd64", "linux", "", "linux/arm64/v8"] {
            let err = bad.parse::<Platform>().unwrap_err();
            assert_eq!(crate::exit::code_of(&err), 2, "{bad}");
        }
    }

    #[test]
    fn platform_lists() {
        let ok = [
            ("linux/amd64", vec![Platform::LINUX_AMD64]),
            (
                "linux/arm64, linux/amd64",
                vec![Platform::LINUX_ARM64, Platform::LINUX_AMD64],
            ),
        ];
        for (list, want) in ok {
            assert_eq!(Platform::parse_list(list).unwrap(), want, "{list}");
        }
        let bad = [
            ("", "is empty"),
            (" , ", "is empty"),
            ("linux/amd64,", "empty entry"),
            ("linux/amd64,linux/amd64", "listed twice"),
            ("linux/amd64,linux/s390x", "unsupported platform"),
        ];
        for (list, message) in bad {
            let err = Platform::parse_list(list).unwrap_err();
            assert_eq!(crate::exit::code_of(&err), 2, "{list}");
            assert!(err.to_string().contains(message), "{list}: {err}");
        }
    }

    #[test]
    fn manifests_and_their_children() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"digest":"{a}","platform":{{"os":"linux","architecture":"amd64"}}}},{{"digest":"{b}"}}]}}"#,
            media_type::DOCKER_LIST
        );
        let oci_index_untyped =
            format!(r#"{{"schemaVersion":2,"manifests":[{{"digest":"{a}"}}]}}"#);
        let image = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"digest":"{a}","size":1}},"layers":[{{"digest":"{b}","size":2}}]}}"#,
            media_type::DOCKER_MANIFEST
        );
        let cases = [
            (
                Manifest::new("", list.clone().into_bytes()),
                vec![a.clone(), b.clone()],
            ),
            (
                Manifest::new(media_type::OCI_INDEX, oci_index_untyped.into_bytes()),
                vec![a.clone()],
            ),
            (
                Manifest::new("text/plain", image.clone().into_bytes()),
                vec![],
            ),
        ];
        for (manifest, children) in cases {
            assert_eq!(manifest.children().unwrap(), children, "{manifest:?}");
            assert_eq!(manifest.digest, Digest::of(&manifest.bytes));
        }
        assert_eq!(
            Manifest::new("text/plain", list.into_bytes()).media_type,
            media_type::DOCKER_LIST
        );
        let parsed = ImageManifest::parse(image.as_bytes()).unwrap();
        assert_eq!(
            parsed.blobs().map(|d| &d.digest).collect::<Vec<_>>(),
            [&a, &b]
        );
        assert!(ImageManifest::parse(b"{}").is_err());
        assert!(ImageManifest::parse(br#"{"schemaVersion":1,"config":{"digest":"x"}}"#).is_err());
        let bad_index = Manifest::new(
            media_type::DOCKER_LIST,
            br#"{"manifests":[{"digest":"sha256:x"}]}"#.to_vec(),
        );
        assert!(bad_index.children().is_err());
    }

    #[test]
    fn image_manifests_parse() {
        let (a, b, c) = (Digest::of(b"a"), Digest::of(b"b"), Digest::of(b"c"));
        let v2s2 = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":409,"digest":"{a}"}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":163,"digest":"{b}"}}]}}"#,
            media_type::DOCKER_MANIFEST
        );
        let parsed = ImageManifest::parse(v2s2.as_bytes()).unwrap();
        assert_eq!(
            parsed.media_type.as_deref(),
            Some(media_type::DOCKER_MANIFEST)
        );
        assert_eq!((&parsed.config.digest, parsed.config.size), (&a, 409));
        assert_eq!(
            parsed
                .layers
                .iter()
                .map(|d| (&d.digest, d.size))
                .collect::<Vec<_>>(),
            [(&b, 163)]
        );
        // An OCI manifest may leave its mediaType out; its config's type tells.
        let oci = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{}","digest":"{c}","size":1}},"layers":[]}}"#,
            media_type::OCI_CONFIG
        );
        assert_eq!(
            ImageManifest::parse(oci.as_bytes())
                .unwrap()
                .media_type
                .as_deref(),
            Some(media_type::OCI_MANIFEST)
        );
        let untyped =
            format!(r#"{{"schemaVersion":2,"config":{{"digest":"{a}","size":1}},"layers":[]}}"#);
        assert_eq!(
            ImageManifest::parse(untyped.as_bytes()).unwrap().media_type,
            None
        );

        let bad = [
            ("{".to_owned(), "not an image manifest"),
            (
                format!(
                    r#"{{"schemaVersion":1,"config":{{"digest":"{a}","size":1}},"layers":[]}}"#
                ),
                "schemaVersion 1",
            ),
            (
                r#"{"schemaVersion":2,"config":{"digest":"sha256:ab","size":1},"layers":[]}"#
                    .to_owned(),
                "not a sha256 digest",
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"config":{{"digest":"{a}","size":1}},"layers":[{{"digest":"../../etc/passwd","size":1}}]}}"#
                ),
                "not a sha256 digest",
            ),
        ];
        for (text, mention) in bad {
            let err = ImageManifest::parse(text.as_bytes()).unwrap_err();
            assert!(err.contains(mention), "{text}: {err}");
        }
    }

    #[test]
    fn configs() {
        let config = br#"{"os":"linux","architecture":"arm64","variant":"v8",
            "config":{"Labels":{"org.opencontainers.image.revision":"abc"},"Healthcheck":{"Test":["CMD","/app","healthcheck"]}}}"#;
        let parsed = ConfigFile::parse(config).unwrap();
        assert!(Platform::LINUX_ARM64.matches(&parsed.os, &parsed.architecture));
        assert_eq!(parsed.variant.as_deref(), Some("v8"));
        assert_eq!(
            parsed.config.labels.unwrap()["org.opencontainers.image.revision"],
            "abc"
        );
        assert!(parsed.config.healthcheck.is_some());
        assert!(ConfigFile::parse(b"[]").is_err());
    }
}
