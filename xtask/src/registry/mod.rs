//! The OCI distribution client the pipeline pushes, reads and deletes with: target references, credentials,
//! authentication, retries and errors.

// Shared by several stages that land one at a time; some items have no caller in every build yet.
#![allow(dead_code)]

pub mod auth;
pub mod client;
pub mod credentials;
pub mod error;
pub mod reference;
pub mod retry;

#[allow(unused_imports)]
pub use credentials::{Credentials, Env};
#[allow(unused_imports)]
pub use reference::Reference;
