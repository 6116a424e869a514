//! The one OCI distribution client the pipeline pushes, reads and deletes with: target references, credentials,
//! authentication, retries and errors, and the [`Repository`] port every stage talks to.
//!
//! Entry points for the stages: [`Reference::parse`] a target, [`Registries`] (one per process, in the session)
//! for one client per registry host with its credentials looked up once, then [`Registries::repository`] for a
//! [`Repository`] of one target.

pub mod auth;
pub mod client;
pub mod credentials;
pub mod error;
#[cfg(test)]
pub mod memory;
pub mod origin;
pub mod reference;
pub mod retry;
pub mod transport;

use std::collections::HashMap;
use std::rc::Rc;

use xshell::Shell;

pub use client::{Options, Registry};
pub use credentials::{Credentials, Env};
pub use reference::Reference;

use crate::oci::{Digest, Manifest};

/// How a DELETE of a manifest ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    Deleted,
    /// 404: someone (an earlier run, a racing release) deleted it already.
    Gone,
    /// Any other answer (405 where deleting is off, Docker Hub's 403 while tagged): reported, never forced.
    Refused {
        status: u16,
        message: String,
    },
}

/// One repository of one registry: the manifest, blob and tag calls the manifest and prune stages make. The
/// registry client implements it ([`Repo`]); unit tests use the in-memory [`memory::Memory`]. Absence is an
/// answer (`Ok(None)`); errors are final, after the client's own retries.
pub trait Repository {
    /// The target this repository is (`ghcr.io/owner/name`).
    fn target(&self) -> &Reference;
    /// A manifest by digest or tag, exact bytes.
    fn manifest(&self, reference: &str) -> anyhow::Result<Option<Manifest>>;
    /// The digest a tag names (HEAD), without reading the manifest.
    fn resolve(&self, tag: &str) -> anyhow::Result<Option<Digest>>;
    /// A small blob (a config), checked against its digest.
    fn blob(&self, digest: &Digest) -> anyhow::Result<Option<Vec<u8>>>;
    /// PUT a manifest under its digest or a tag; the registry must answer the digest of the bytes sent.
    fn put_manifest(&self, reference: &str, manifest: &Manifest) -> anyhow::Result<()>;
    /// Every tag; empty when there are none (distribution answers 404 NAME_UNKNOWN then).
    fn tags(&self) -> anyhow::Result<Vec<String>>;
    /// `DELETE /v2/<name>/manifests/<digest>`.
    fn delete(&self, digest: &Digest) -> anyhow::Result<Removal>;
}

/// The registry client scoped to one target repository.
pub struct Repo {
    pub client: Rc<Registry>,
    pub target: Reference,
}

impl Repository for Repo {
    fn target(&self) -> &Reference {
        &self.target
    }

    fn manifest(&self, reference: &str) -> anyhow::Result<Option<Manifest>> {
        self.client.get_manifest(&self.target.repository, reference)
    }

    fn resolve(&self, tag: &str) -> anyhow::Result<Option<Digest>> {
        Ok(self
            .client
            .head_manifest(&self.target.repository, tag)?
            .map(|info| info.digest))
    }

    fn blob(&self, digest: &Digest) -> anyhow::Result<Option<Vec<u8>>> {
        self.client.get_blob(&self.target.repository, digest)
    }

    fn put_manifest(&self, reference: &str, manifest: &Manifest) -> anyhow::Result<()> {
        self.client
            .put_manifest(&self.target.repository, reference, manifest)
            .map(drop)
    }

    fn tags(&self) -> anyhow::Result<Vec<String>> {
        self.client.list_tags(&self.target.repository)
    }

    fn delete(&self, digest: &Digest) -> anyhow::Result<Removal> {
        self.client.delete_manifest(&self.target.repository, digest)
    }
}

/// The clients of one process: one per registry API host, made on first use, with the credentials found for
/// it. Credentials are looked up once per registry and repository, and a credential helper runs at most once per
/// registry host, however many stages (cache probe, push, manifest, prune) ask.
pub struct Registries {
    env: Env,
    options: Options,
    clients: HashMap<String, Rc<Registry>>,
    credentials: credentials::Cache,
}

impl Registries {
    /// `env` is the credential environment read once at the edge ([`Env::from_process`]).
    pub fn new(env: Env, options: Options) -> Registries {
        Registries {
            env,
            options,
            clients: HashMap::new(),
            credentials: credentials::Cache::default(),
        }
    }

    /// Hosts besides loopback that may be reached over plain HTTP (`--insecure-registry`), for clients made from
    /// now on.
    pub fn allow_insecure(&mut self, hosts: &[String]) {
        for host in hosts {
            if !self.options.insecure.contains(host) {
                self.options.insecure.push(host.clone());
            }
        }
    }

    /// What a failure says the run was trying to do (`push to`, `publish to`, `prune`).
    pub fn set_purpose(&mut self, purpose: &'static str) {
        self.options.purpose = purpose;
        for client in self.clients.values() {
            client.set_purpose(purpose);
        }
    }

    pub fn env(&self) -> &Env {
        &self.env
    }

    /// `target`'s credentials, looked up once (env, auth files, credential helpers); says on stdout where they
    /// came from the first time (never what they are).
    pub fn credentials(
        &mut self,
        sh: &Shell,
        target: &Reference,
    ) -> anyhow::Result<Option<credentials::Found>> {
        self.credentials.lookup(sh, target, &self.env)
    }

    /// The client for `target`'s registry.
    pub fn client(&mut self, sh: &Shell, target: &Reference) -> anyhow::Result<Rc<Registry>> {
        if let Some(client) = self.clients.get(&target.api_host) {
            return Ok(client.clone());
        }
        let found = self.credentials(sh, target)?;
        let client = Rc::new(Registry::new(target, found, self.options.clone()));
        self.clients.insert(target.api_host.clone(), client.clone());
        Ok(client)
    }

    /// The repository `target` names, through its registry's client.
    pub fn repository(&mut self, sh: &Shell, target: &Reference) -> anyhow::Result<Repo> {
        Ok(Repo {
            client: self.client(sh, target)?,
            target: target.clone(),
        })
    }
}
