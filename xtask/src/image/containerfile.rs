//! What the pipeline reads from the Containerfile: the build arguments' defaults, the base images, the final
//! stage's base (for the `org.opencontainers.image.base.*` labels) and the files of the build context the image
//! is made from (so that a commit touching none of them gives the same image as its parent).
//!
//! Pure functions of the Containerfile's text, tested with tables; only instructions the pipeline relies on are
//! understood (`ARG`, `FROM`, `COPY`, `ADD`, line continuations, comments), not the whole syntax.

use std::collections::BTreeMap;

use crate::oci::Digest;

/// The `ARG NAME=default` lines before the first `FROM`: the defaults a `--build-arg` overrides.
pub fn defaults(containerfile: &str) -> BTreeMap<String, String> {
    let mut defaults = BTreeMap::new();
    for line in instructions(containerfile) {
        let (keyword, rest) = split_keyword(&line);
        match keyword.as_str() {
            "FROM" => break,
            "ARG" => {
                if let Some((name, value)) = rest.split_once('=') {
                    let value = value.trim().trim_matches('"');
                    defaults.insert(name.trim().to_owned(), value.to_owned());
                }
            }
            _ => {}
        }
    }
    defaults
}

/// The base images a build pulls: RUST_IMAGE and RUNTIME_IMAGE, each from `build_args` (the configured default
/// merged with `--build-arg`), else the Containerfile's. `scratch` is no image.
pub fn base_images(
    defaults: &BTreeMap<String, String>,
    build_args: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    ["RUST_IMAGE", "RUNTIME_IMAGE"]
        .into_iter()
        .filter_map(|arg| {
            let image = build_args.get(arg).or_else(|| defaults.get(arg))?;
            (image != "scratch").then(|| (arg.to_owned(), image.clone()))
        })
        .collect()
}

/// The image the final stage is built on, with the build arguments substituted and earlier stages followed
/// (`FROM build AS x` is based on what `build` is based on); `None` for `scratch` or what cannot be resolved.
pub fn final_base(containerfile: &str, build_args: &BTreeMap<String, String>) -> Option<String> {
    let mut args = defaults(containerfile);
    args.extend(build_args.clone());
    let mut stages: Vec<(Option<String>, String)> = Vec::new();
    for line in instructions(containerfile) {
        let (keyword, rest) = split_keyword(&line);
        if keyword != "FROM" {
            continue;
        }
        let words: Vec<&str> = rest
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let image = substitute(words.first()?, &args);
        let name = match words.as_slice() {
            [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_ascii_lowercase()),
            _ => None,
        };
        stages.push((name, image));
    }
    let mut image = stages.last()?.1.clone();
    // Each step goes to an earlier stage, so this ends.
    for _ in 0..stages.len() {
        match stages
            .iter()
            .find(|(name, _)| name.as_deref() == Some(image.to_ascii_lowercase().as_str()))
        {
            Some((_, base)) => image = base.clone(),
            None => break,
        }
    }
    let unresolved = image.contains('$') || image.is_empty();
    (!unresolved && image != "scratch").then_some(image)
}

/// The build argument that names the final stage's base (`RUNTIME_IMAGE` for `FROM ${RUNTIME_IMAGE}`), if one
/// does: the argument whose value, whatever it is, becomes [`final_base`].
pub fn final_base_arg(containerfile: &str) -> Option<String> {
    defaults(containerfile).into_keys().find(|arg| {
        let probe = format!("{}-probe", arg.to_ascii_lowercase());
        let args = BTreeMap::from([(arg.clone(), probe.clone())]);
        final_base(containerfile, &args).as_deref() == Some(probe.as_str())
    })
}

/// The `org.opencontainers.image.base.name` and `base.digest` labels of a base image reference: the name as
/// written (tag kept, digest dropped) and the digest where the reference pins one.
pub fn base_labels(base: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let Some(base) = base else {
        return labels;
    };
    let (name, digest) = match base.rsplit_once('@') {
        Some((name, digest)) if Digest::is_valid(digest) => (name, Some(digest)),
        _ => (base, None),
    };
    labels.insert("org.opencontainers.image.base.name".into(), name.into());
    if let Some(digest) = digest {
        labels.insert("org.opencontainers.image.base.digest".into(), digest.into());
    }
    labels
}

/// A reference `skopeo` can read: containers/image refuses a tag and a digest together, and the digest is what
/// is pulled, so the tag goes.
pub fn pullable(image: &str) -> String {
    match image.rsplit_once('@') {
        Some((name, digest)) if Digest::is_valid(digest) => {
            let repository_end = name.rfind('/').map_or(0, |slash| slash + 1);
            let repository = match name[repository_end..].find(':') {
                Some(colon) => &name[..repository_end + colon],
                None => name,
            };
            format!("{repository}@{digest}")
        }
        _ => image.to_owned(),
    }
}

/// The paths of the build context the image is made from: the Containerfile itself, `.containerignore` (it
/// decides what a `COPY` sees), and every local source of `COPY` and `ADD` (not `--from` a stage, not a URL), as
/// git pathspecs relative to the context. `.` stands for the whole context.
pub fn inputs(containerfile_path: &str, containerfile: &str) -> Vec<String> {
    let mut paths = vec![containerfile_path.to_owned(), ".containerignore".to_owned()];
    for line in instructions(containerfile) {
        let (keyword, rest) = split_keyword(&line);
        if keyword != "COPY" && keyword != "ADD" {
            continue;
        }
        let rest = rest.trim();
        let words: Vec<String> = if rest.starts_with('[') {
            serde_json::from_str(rest).unwrap_or_default()
        } else {
            rest.split_whitespace().map(str::to_owned).collect()
        };
        if words.iter().any(|w| w.starts_with("--from")) {
            continue;
        }
        let operands: Vec<&String> = words.iter().filter(|w| !w.starts_with("--")).collect();
        let Some((_destination, sources)) = operands.split_last() else {
            continue;
        };
        for source in sources {
            if source.contains("://") {
                continue;
            }
            let path = source.trim_start_matches("./").trim_end_matches('/');
            let path = if path.is_empty() { "." } else { path };
            if !paths.iter().any(|p| p == path) {
                paths.push(path.to_owned());
            }
        }
    }
    paths
}

/// The instructions, one per entry: continuation lines joined, comments and blank lines dropped.
fn instructions(containerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in containerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}

/// The instruction's keyword (upper case) and the rest of it.
fn split_keyword(instruction: &str) -> (String, &str) {
    let instruction = instruction.trim();
    match instruction.split_once(char::is_whitespace) {
        Some((keyword, rest)) => (keyword.to_ascii_uppercase(), rest.trim()),
        None => (instruction.to_ascii_uppercase(), ""),
    }
}

/// `${NAME}` and `$NAME` replaced by the argument's value; unknown ones are left as they are.
fn substitute(word: &str, args: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = word;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, consumed) = match after.strip_prefix('{') {
            Some(braced) => match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        match args.get(name).filter(|_| !name.is_empty()) {
            Some(value) => out.push_str(value),
            None => out.push_str(&rest[at..at + 1 + consumed]),
        }
        rest = &after[consumed..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED: &str = "sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab";

    /// Build arguments or labels, as (key, value) pairs.
    type Pairs<'a> = Vec<(&'a str, &'a str)>;

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_args_before_the_first_from() {
        let containerfile = "# comment\nARG RUST_IMAGE=docker.io/library/rust:1-slim-trixie\n\
             ARG RUNTIME_IMAGE=\"gcr.io/distroless/static-debian12:nonroot\"\nARG TARGETARCH\n\
             FROM ${RUST_IMAGE} AS build\nARG LATER=x\n";
        assert_eq!(
            defaults(containerfile),
            args(&[
                ("RUST_IMAGE", "docker.io/library/rust:1-slim-trixie"),
                ("RUNTIME_IMAGE", "gcr.io/distroless/static-debian12:nonroot"),
            ])
        );
    }

    #[test]
    fn base_images_from_args_config_and_containerfile() {
        let defaults = args(&[
            ("RUST_IMAGE", "docker.io/library/rust:1-slim-trixie"),
            ("RUNTIME_IMAGE", "gcr.io/distroless/static-debian12:nonroot"),
        ]);
        type Case<'a> = (Pairs<'a>, Pairs<'a>);
        let cases: Vec<Case> = vec![
            (
                vec![("RUNTIME_IMAGE", "scratch")],
                vec![("RUST_IMAGE", "docker.io/library/rust:1-slim-trixie")],
            ),
            (
                vec![
                    ("RUNTIME_IMAGE", "scratch"),
                    ("RUST_IMAGE", "localhost/builder:1"),
                ],
                vec![("RUST_IMAGE", "localhost/builder:1")],
            ),
            (
                vec![("RUNTIME_IMAGE", "localhost/busybox"), ("RUST_IMAGE", "b")],
                vec![("RUST_IMAGE", "b"), ("RUNTIME_IMAGE", "localhost/busybox")],
            ),
        ];
        for (given, want) in cases {
            let want: Vec<(String, String)> = want
                .into_iter()
                .map(|(a, b)| (a.into(), b.into()))
                .collect();
            assert_eq!(base_images(&defaults, &args(&given)), want, "{given:?}");
        }
    }

    #[test]
    fn the_final_stages_base() {
        let project = include_str!("../../../Containerfile");
        let chained = "ARG B=localhost/bb:1\nFROM ${B} AS one\nFROM one AS two\nRUN x\nFROM two\n";
        let cases: [(&str, Pairs, Option<&str>); 7] = [
            (project, vec![("RUNTIME_IMAGE", "scratch")], None),
            (
                project,
                vec![("RUNTIME_IMAGE", "localhost/xtask/busybox:amd64")],
                Some("localhost/xtask/busybox:amd64"),
            ),
            (
                "ARG R=gcr.io/d/static:nonroot\nFROM --platform=linux/${TARGETARCH} $R\n",
                vec![],
                Some("gcr.io/d/static:nonroot"),
            ),
            (chained, vec![], Some("localhost/bb:1")),
            (chained, vec![("B", "scratch")], None),
            ("FROM ${NOT_SET}\n", vec![], None),
            ("RUN nothing\n", vec![], None),
        ];
        for (containerfile, given, want) in cases {
            assert_eq!(
                final_base(containerfile, &args(&given)).as_deref(),
                want,
                "{given:?}"
            );
        }
        // The project's default: distroless, pinned by digest.
        let default = final_base(project, &BTreeMap::new()).unwrap();
        assert!(
            default.starts_with("gcr.io/distroless/static-debian12:nonroot@sha256:"),
            "{default}"
        );
    }

    #[test]
    fn base_labels_name_and_digest() {
        let pinned = format!("gcr.io/distroless/static-debian12:nonroot@{PINNED}");
        let cases: [(Option<&str>, Pairs); 4] = [
            (None, vec![]),
            (
                Some(&pinned),
                vec![
                    (
                        "org.opencontainers.image.base.name",
                        "gcr.io/distroless/static-debian12:nonroot",
                    ),
                    ("org.opencontainers.image.base.digest", PINNED),
                ],
            ),
            (
                Some("localhost/xtask/busybox:amd64"),
                vec![(
                    "org.opencontainers.image.base.name",
                    "localhost/xtask/busybox:amd64",
                )],
            ),
            (
                Some("localhost:5000/bb@sha256:short"),
                vec![(
                    "org.opencontainers.image.base.name",
                    "localhost:5000/bb@sha256:short",
                )],
            ),
        ];
        for (base, want) in cases {
            assert_eq!(base_labels(base), args(&want), "{base:?}");
        }
    }

    #[test]
    fn pullable_references_drop_the_tag_of_a_pinned_one() {
        let cases = [
            (
                format!("docker.io/library/rust:1-slim-trixie@{PINNED}"),
                format!("docker.io/library/rust@{PINNED}"),
            ),
            (
                format!("localhost:5000/bb:amd64@{PINNED}"),
                format!("localhost:5000/bb@{PINNED}"),
            ),
            (
                format!("localhost:5000/bb@{PINNED}"),
                format!("localhost:5000/bb@{PINNED}"),
            ),
            (
                "localhost:5000/bb:amd64".to_owned(),
                "localhost:5000/bb:amd64".to_owned(),
            ),
        ];
        for (image, want) in cases {
            assert_eq!(pullable(&image), want);
        }
    }

    #[test]
    fn inputs_are_what_the_image_is_made_from() {
        let project = include_str!("../../../Containerfile");
        assert_eq!(
            inputs("Containerfile", project),
            [
                "Containerfile",
                ".containerignore",
                "Cargo.toml",
                "Cargo.lock",
                "xtask/Cargo.toml",
                "src"
            ]
        );
        let cases: [(&str, Vec<&str>); 5] = [
            ("FROM x\nCOPY . /src\n", vec!["."]),
            ("FROM x\nCOPY ./ /src\nCOPY ./a ./b/ /dst/\n", vec![".", "a", "b"]),
            (
                "FROM x\nCOPY --chown=1:1 --from=build /out /app\nADD https://e.org/f /f\nADD f.tar /\n",
                vec!["f.tar"],
            ),
            ("FROM x\nCOPY [\"a b\", \"c\", \"/dst\"]\n", vec!["a b", "c"]),
            ("FROM x\nRUN echo \\\n  COPY nothing\nCOPY \\\n  one \\\n  /dst\n", vec!["one"]),
        ];
        for (containerfile, want) in cases {
            let got = inputs("build/Containerfile", containerfile);
            assert_eq!(got[..2], ["build/Containerfile", ".containerignore"]);
            assert_eq!(got[2..], want, "{containerfile:?}");
        }
    }

    #[test]
    fn arguments_are_substituted() {
        let given = args(&[("A", "x"), ("B_2", "y")]);
        let cases = [
            ("${A}", "x"),
            ("$A", "x"),
            ("pre-${A}-$B_2:tag", "pre-x-y:tag"),
            ("${MISSING}", "${MISSING}"),
            ("$", "$"),
            ("${A", "${A"),
        ];
        for (word, want) in cases {
            assert_eq!(substitute(word, &given), want, "{word}");
        }
    }
}
