//! The OCI distribution client the pipeline pushes, reads and deletes with: target references, credentials,
//! authentication, retries and errors.
//!
//! Entry points for the stages: [`Reference::parse`] a target, [`Registries`] for one client per registry host
//! (credentials looked up once, tokens cached per scope), then the operations of [`client::Registry`]
//! (blobs, manifests by digest or tag, tags/list, DELETE).

// Shared by several stages that land one at a time; some items have no caller in every build yet.
#![allow(dead_code)]

pub mod auth;
pub mod client;
pub mod credentials;
pub mod error;
pub mod reference;
pub mod retry;

use std::collections::HashMap;
use std::rc::Rc;

use xshell::Shell;

#[allow(unused_imports)]
pub use client::{Options, Registry};
#[allow(unused_imports)]
pub use credentials::{Credentials, Env};
#[allow(unused_imports)]
pub use reference::Reference;

/// The clients of one run: one per registry API host, made on first use with the credentials found for it.
pub struct Registries<'a> {
    sh: &'a Shell,
    env: Env,
    options: Options,
    clients: HashMap<String, Rc<Registry>>,
}

impl<'a> Registries<'a> {
    /// `env` is the credential environment read once at the edge ([`Env::from_process`]).
    pub fn new(sh: &'a Shell, env: Env, options: Options) -> Registries<'a> {
        Registries {
            sh,
            env,
            options,
            clients: HashMap::new(),
        }
    }

    /// The client for `target`'s registry; the first call for a host looks up its credentials (env, auth files,
    /// credential helpers) and says on stdout where they came from (never what they are).
    pub fn client(&mut self, target: &Reference) -> anyhow::Result<Rc<Registry>> {
        if let Some(client) = self.clients.get(&target.api_host) {
            return Ok(client.clone());
        }
        let found = credentials::lookup(self.sh, &target.registry, &target.repository, &self.env)?;
        if let Some(found) = &found {
            println!("  {}: credentials from {}", target.registry, found.source);
        }
        let client = Rc::new(Registry::new(target, found, self.options.clone()));
        self.clients.insert(target.api_host.clone(), client.clone());
        Ok(client)
    }

    pub fn options(&self) -> &Options {
        &self.options
    }
}
