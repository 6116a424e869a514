//! The xtask's integration tests, as one test binary (one compile and one link of the shared harness): a module per
//! area, the harness in `support/`. Tests that need the bench (podman, the local base images, root) are `#[ignore]`d;
//! `cargo xtask ci` runs them all.

mod bad_input;
mod build;
mod docs;
mod faults;
mod hostile;
mod manifest;
mod podman5;
mod prune;
mod push;
mod push_faults;
mod races;
mod release;
mod reproducible;
mod sbom;
mod secrets;
mod support;
mod verify;
mod workflow;
mod workflow_simulation;
