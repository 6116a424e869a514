//! The image pipeline's stages, one module each.

pub mod build;
pub mod containerfile;
pub mod local_registry;
pub mod manifest;
pub mod meta;
pub mod prune;
pub mod push;
pub mod release;
pub mod verify;
