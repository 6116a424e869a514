//! Shared by the workflow tests: reading .github/workflows/build-images.yml, splitting its one-line `run:` commands
//! into argv, and a small simulator that runs the workflow's jobs locally the way GitHub would.
//!
//! `registry`: real distribution registries in each auth mode, a token server, synthetic image exports and running
//! the xtask binary (its API is documented at the top of support/registry.rs).

#![allow(dead_code)]

pub mod fault_proxy;
pub mod registry;
pub mod simulate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_norway::Value;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn workflow_path() -> PathBuf {
    root().join(".github/workflows/build-images.yml")
}

pub fn workflow_text() -> String {
    std::fs::read_to_string(workflow_path()).unwrap()
}

pub fn workflow() -> Value {
    serde_norway::from_str(&workflow_text()).unwrap()
}

/// Splits a one-line command into words the way bash would for the simple forms used here: words, "$VAR" and 'x'.
/// Anything that needs a real shell (pipes, lists, substitutions, redirections) is refused: logic belongs in the xtask.
pub fn words(run: &str, env: &BTreeMap<String, String>) -> Vec<String> {
    let line = run.trim();
    assert!(
        !line.contains(['\n', '|', ';', '&', '<', '>', '`', '(', ')', '*', '?', '\\']),
        "not a single plain command: {run}"
    );
    let var = |name: &str| -> String {
        env.get(name)
            .cloned()
            .unwrap_or_else(|| panic!("${name} is not set in the step's env: {run}"))
    };
    let mut out = Vec::new();
    for word in line.split_whitespace() {
        let word = if let Some(name) = word.strip_prefix("\"$").and_then(|w| w.strip_suffix('"')) {
            var(name)
        } else if let Some(inner) = word.strip_prefix('\'').and_then(|w| w.strip_suffix('\'')) {
            inner.to_owned()
        } else {
            assert!(
                !word.contains(['$', '"', '\'']),
                "quote variables as \"$NAME\": {run}"
            );
            word.to_owned()
        };
        out.push(word);
    }
    out
}

/// Reads a GITHUB_OUTPUT file the way the runner does: `name=value` lines and `name<<DELIMITER` blocks.
pub fn parse_outputs(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        if let Some((name, delimiter)) = line.split_once("<<") {
            let mut value = Vec::new();
            for line in lines.by_ref() {
                if line == delimiter {
                    break;
                }
                value.push(line);
            }
            out.insert(name.to_owned(), value.join("\n"));
        } else {
            let (name, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("bad GITHUB_OUTPUT line {line:?}"));
            out.insert(name.to_owned(), value.to_owned());
        }
    }
    out
}
