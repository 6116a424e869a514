//! An in-memory registry for the stages' unit tests: manifests, blobs and tags per repository, every call
//! recorded, PUTs that fail on demand, and DELETE with distribution's semantics (a manifest goes with every tag
//! naming it), so tests of publishing and pruning see what a real registry would do.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use super::{Reference, Removal, Repository};
use crate::exit;
use crate::oci::{Digest, Manifest};

#[derive(Default)]
struct State {
    /// (repository, digest) -> manifest
    manifests: BTreeMap<(String, Digest), Manifest>,
    /// (repository, tag) -> digest
    tags: BTreeMap<(String, String), Digest>,
    blobs: BTreeMap<(String, Digest), Vec<u8>>,
    fail_put: Option<(String, String)>,
    calls: Vec<String>,
}

/// The registry; clones share it.
#[derive(Clone, Default)]
pub struct Memory {
    state: Rc<RefCell<State>>,
}

/// One repository of a [`Memory`] registry.
pub struct MemoryRepo {
    memory: Memory,
    target: Reference,
    name: String,
}

impl Memory {
    /// The repository `target` (`a.example/team/app`).
    pub fn repository(&self, target: &str) -> MemoryRepo {
        MemoryRepo {
            memory: self.clone(),
            target: Reference::parse(target).expect("a valid test target"),
            name: target.to_owned(),
        }
    }

    pub fn put_blob(&self, target: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::of(bytes);
        self.state
            .borrow_mut()
            .blobs
            .insert((target.to_owned(), digest.clone()), bytes.to_vec());
        digest
    }

    /// The next PUT of `reference` in `target` fails (and every one after it).
    pub fn fail_put(&self, target: &str, reference: &str) {
        self.state.borrow_mut().fail_put = Some((target.to_owned(), reference.to_owned()));
    }

    /// Every call so far, as `GET target reference`, `PUT …`, `BLOB …`, `TAGS …`, `DELETE …`.
    pub fn calls(&self) -> Vec<String> {
        self.state.borrow().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.state.borrow_mut().calls.clear();
    }

    /// Every (target, tag, digest), sorted.
    pub fn tags(&self) -> Vec<(String, String, Digest)> {
        self.state
            .borrow()
            .tags
            .iter()
            .map(|((target, tag), digest)| (target.clone(), tag.clone(), digest.clone()))
            .collect()
    }

    /// Takes a manifest away, as a registry that lost it would answer.
    pub fn remove_manifest(&self, target: &str, digest: &Digest) {
        self.state
            .borrow_mut()
            .manifests
            .remove(&(target.to_owned(), digest.clone()));
    }

    /// Keeps only the blobs for which `keep(target, bytes)` holds.
    pub fn retain_blobs(&self, mut keep: impl FnMut(&str, &[u8]) -> bool) {
        self.state
            .borrow_mut()
            .blobs
            .retain(|(target, _), bytes| keep(target, bytes));
    }

    /// Makes `target` answer other bytes for `digest` than were stored under it.
    pub fn corrupt_manifest(&self, target: &str, digest: &Digest) {
        if let Some(manifest) = self
            .state
            .borrow_mut()
            .manifests
            .get_mut(&(target.to_owned(), digest.clone()))
        {
            manifest.bytes.push(b' ');
        }
    }

    fn record(&self, call: String) {
        self.state.borrow_mut().calls.push(call);
    }
}

impl Repository for MemoryRepo {
    fn target(&self) -> &Reference {
        &self.target
    }

    fn manifest(&self, reference: &str) -> anyhow::Result<Option<Manifest>> {
        self.memory.record(format!("GET {} {reference}", self.name));
        let state = self.memory.state.borrow();
        let digest = match reference.parse::<Digest>() {
            Ok(digest) => Some(digest),
            Err(_) => state
                .tags
                .get(&(self.name.clone(), reference.to_owned()))
                .cloned(),
        };
        Ok(digest.and_then(|d| state.manifests.get(&(self.name.clone(), d)).cloned()))
    }

    fn resolve(&self, tag: &str) -> anyhow::Result<Option<Digest>> {
        self.memory.record(format!("HEAD {} {tag}", self.name));
        Ok(self
            .memory
            .state
            .borrow()
            .tags
            .get(&(self.name.clone(), tag.to_owned()))
            .cloned())
    }

    fn blob(&self, digest: &Digest) -> anyhow::Result<Option<Vec<u8>>> {
        self.memory.record(format!("BLOB {} {digest}", self.name));
        Ok(self
            .memory
            .state
            .borrow()
            .blobs
            .get(&(self.name.clone(), digest.clone()))
            .cloned())
    }

    fn put_manifest(&self, reference: &str, manifest: &Manifest) -> anyhow::Result<()> {
        self.memory.record(format!("PUT {} {reference}", self.name));
        let mut state = self.memory.state.borrow_mut();
        if state.fail_put.as_ref() == Some(&(self.name.clone(), reference.to_owned())) {
            return Err(exit::registry_failed(format!(
                "Failed to push to {} after 3 attempts",
                self.name
            )));
        }
        if Digest::is_valid(reference) && manifest.digest != reference {
            anyhow::bail!("PUT of {} under digest {reference}", manifest.digest);
        }
        state.manifests.insert(
            (self.name.clone(), manifest.digest.clone()),
            manifest.clone(),
        );
        if !Digest::is_valid(reference) {
            state.tags.insert(
                (self.name.clone(), reference.to_owned()),
                manifest.digest.clone(),
            );
        }
        Ok(())
    }

    fn tags(&self) -> anyhow::Result<Vec<String>> {
        self.memory.record(format!("TAGS {}", self.name));
        Ok(self
            .memory
            .state
            .borrow()
            .tags
            .keys()
            .filter(|(target, _)| *target == self.name)
            .map(|(_, tag)| tag.clone())
            .collect())
    }

    fn delete(&self, digest: &Digest) -> anyhow::Result<Removal> {
        self.memory.record(format!("DELETE {} {digest}", self.name));
        let mut state = self.memory.state.borrow_mut();
        if state
            .manifests
            .remove(&(self.name.clone(), digest.clone()))
            .is_none()
        {
            return Ok(Removal::Gone);
        }
        let name = self.name.clone();
        state
            .tags
            .retain(|(target, _), named| *target != name || named != digest);
        Ok(Removal::Deleted)
    }
}
