//! The registry side of pruning: the few distribution calls it needs (as a trait the registry client implements),
//! reading an index's children, and the backend for any registry that deletes through the distribution API.
//!
//! distribution (with `storage.delete.enabled`) deletes `DELETE /v2/<name>/manifests/<digest>` and answers 202;
//! 404 means it is already gone; 405 `UNSUPPORTED` means deletion is disabled there. It has no call that lists
//! untagged manifests (the catalog lists repositories, `tags/list` tags), so this backend prunes only manifests
//! it is told about: the superseded index and its children, or the digests given to `image prune --digest`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use sha2::{Digest as _, Sha256};

use super::{Backend, Removal, TagView};
use crate::registry::Reference;

/// A manifest as stored: kept whole so a manifest deleted by mistake can be put back byte for byte.
#[derive(Clone, PartialEq, Eq)]
pub struct Fetched {
    pub digest: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("digest", &self.digest)
            .field("media_type", &self.media_type)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// The distribution calls pruning makes, on one repository each. The registry client implements it; errors are
/// final (after the client's own retries).
pub trait Registry {
    /// Every tag of the repository; empty when it has none (distribution answers 404 NAME_UNKNOWN then).
    fn tags(&self, target: &Reference) -> anyhow::Result<Vec<String>>;
    /// The digest a tag points to (HEAD), or None when the tag does not exist.
    fn resolve(&self, target: &Reference, tag: &str) -> anyhow::Result<Option<String>>;
    /// A manifest by digest or tag (GET), or None on 404.
    fn fetch(&self, target: &Reference, reference: &str) -> anyhow::Result<Option<Fetched>>;
    /// Puts a manifest back by its digest (PUT), with its own media type.
    fn store(&self, target: &Reference, manifest: &Fetched) -> anyhow::Result<()>;
    /// `DELETE /v2/<name>/manifests/<digest>`; statuses other than 2xx and 404 come back as `Refused`.
    fn delete(&self, target: &Reference, digest: &str) -> anyhow::Result<Removal>;
}

/// The digests an index (OCI image index or Docker manifest list) lists; empty for an image manifest.
pub fn children(manifest: &Fetched) -> anyhow::Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Listed {
        digest: String,
    }
    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<Vec<Listed>>,
    }
    let doc: Doc = serde_json::from_slice(&manifest.bytes)
        .with_context(|| format!("manifest {} is not JSON", manifest.digest))?;
    let media_type = doc.media_type.as_deref().unwrap_or(&manifest.media_type);
    let is_index = media_type.contains("manifest.list") || media_type.contains("image.index");
    Ok(if is_index {
        doc.manifests
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.digest)
            .collect()
    } else {
        Vec::new()
    })
}

/// `sha256:<hex>` of these bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::from("sha256:");
    for byte in hash {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// A `sha256:` digest of 64 lowercase hex digits.
pub fn is_digest(value: &str) -> bool {
    value.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Any registry that deletes manifests through the distribution API.
pub struct Oci<'a> {
    pub registry: &'a dyn Registry,
    pub target: &'a Reference,
}

impl Backend for Oci<'_> {
    fn label(&self) -> &'static str {
        "distribution API (DELETE /v2/<name>/manifests/<digest>)"
    }

    fn tags(&mut self) -> anyhow::Result<TagView> {
        let mut tags = BTreeMap::new();
        for tag in self.registry.tags(self.target)? {
            // A tag removed between the listing and the HEAD is simply no longer there.
            if let Some(digest) = self.registry.resolve(self.target, &tag)? {
                tags.insert(tag, digest);
            }
        }
        Ok(TagView {
            tags,
            children: BTreeMap::new(),
        })
    }

    fn all_manifests(&mut self) -> anyhow::Result<Option<BTreeSet<String>>> {
        Ok(None)
    }

    fn delete(&mut self, digest: &str) -> anyhow::Result<Removal> {
        Ok(match self.registry.delete(self.target, digest)? {
            Removal::Refused { status: 405, .. } => Removal::Refused {
                status: 405,
                message: format!(
                    "{} does not allow deleting manifests; enable it (distribution: storage.delete.enabled: true)",
                    self.target.registry
                ),
            },
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetched(media_type: &str, body: &str) -> Fetched {
        Fetched {
            digest: digest_of(body.as_bytes()),
            media_type: media_type.into(),
            bytes: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn children_of_each_kind_of_manifest() {
        let list = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json",
            "manifests":[{"digest":"sha256:a","platform":{"os":"linux","architecture":"amd64"}},{"digest":"sha256:b"}]}"#;
        let oci_index_no_media_type = r#"{"schemaVersion":2,"manifests":[{"digest":"sha256:c"}]}"#;
        let image = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"digest":"sha256:cfg"},"layers":[{"digest":"sha256:l"}]}"#;
        let cases = [
            (fetched("", list), vec!["sha256:a", "sha256:b"]),
            (
                fetched(
                    "application/vnd.oci.image.index.v1+json",
                    oci_index_no_media_type,
                ),
                vec!["sha256:c"],
            ),
            (
                fetched("application/vnd.oci.image.manifest.v1+json", image),
                vec![],
            ),
        ];
        for (manifest, want) in cases {
            assert_eq!(children(&manifest).unwrap(), want, "{manifest:?}");
        }
        assert!(children(&fetched("", "not json")).is_err());
    }

    #[test]
    fn digests_are_checked_and_computed() {
        assert_eq!(
            digest_of(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(is_digest(&digest_of(b"x")));
        for bad in [
            "sha256:abc",
            "latest",
            "sha512:00",
            &digest_of(b"x").to_uppercase(),
        ] {
            assert!(!is_digest(bad), "{bad}");
        }
    }
}
