//! The backend for any registry that deletes through the distribution API.
//!
//! distribution (with `storage.delete.enabled`) deletes `DELETE /v2/<name>/manifests/<digest>` and answers 202;
//! 404 means it is already gone; 405 `UNSUPPORTED` means deletion is disabled there. It has no call that lists
//! untagged manifests (the catalog lists repositories, `tags/list` tags), so this backend prunes only manifests
//! it is told about: the superseded index and its children, or the digests given to `image prune --digest`.

use std::collections::{BTreeMap, BTreeSet};

use super::{Backend, Removal, TagView};
use crate::oci::Digest;
use crate::registry::Repository;

/// Any registry that deletes manifests through the distribution API.
pub struct Oci<'a> {
    pub repo: &'a dyn Repository,
}

impl Backend for Oci<'_> {
    fn label(&self) -> &'static str {
        "distribution API (DELETE /v2/<name>/manifests/<digest>)"
    }

    fn tags(&mut self) -> anyhow::Result<TagView> {
        let mut tags = BTreeMap::new();
        for tag in self.repo.tags()? {
            // A tag removed between the listing and the HEAD is simply no longer there.
            if let Some(digest) = self.repo.resolve(&tag)? {
                tags.insert(tag, digest.to_string());
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
        let digest: Digest = digest.parse()?;
        Ok(match self.repo.delete(&digest)? {
            Removal::Refused { status: 405, .. } => Removal::Refused {
                status: 405,
                message: format!(
                    "{} does not allow deleting manifests; enable it (distribution: storage.delete.enabled: true)",
                    self.repo.target().registry
                ),
            },
            other => other,
        })
    }
}
