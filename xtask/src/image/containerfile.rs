//! What the pipeline reads from the Containerfile: the build arguments' defaults, the base images, the final
//! stage's base (for the `org.opencontainers.image.base.*` labels), the Rust target each platform is compiled for
//! (for the SBOM) and the files of the build context the image is made from (so that a commit touching none of
//! them gives the same image as its parent).
//!
//! Pure functions of the Containerfile's text, tested with tables; only instructions the pipeline relies on are
//! understood (`ARG`, `FROM`, `ENV`, `COPY`, `ADD`, line continuations, comments), not the whole syntax.

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

/// How the Containerfile compiles the app for one platform: what the SBOM's crates are resolved for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RustTarget {
    /// The target triple (`aarch64-unknown-linux-gnu`).
    pub triple: String,
    /// The build stage's RUSTFLAGS (`-C target-feature=+crt-static`): they are part of the target's cfg.
    pub rustflags: Option<String>,
}

/// The Rust target the Containerfile compiles for on `arch` (TARGETARCH): `RUST_TARGET` and `RUSTFLAGS` as set by
/// `ENV` in the stage the final stage copies from (`COPY --from=build`), with the stages that one is built on
/// followed (`FROM build-${TARGETARCH} AS build` inherits `build-arm64`'s environment). `None` where no such stage
/// sets `RUST_TARGET`.
pub fn rust_target(
    containerfile: &str,
    build_args: &BTreeMap<String, String>,
    arch: &str,
) -> Option<RustTarget> {
    let mut args = defaults(containerfile);
    args.extend(build_args.clone());
    args.insert("TARGETARCH".into(), arch.into());
    let stages = stages(containerfile, &args);
    let last = stages.last()?;
    last.copies_from.iter().find_map(|from| {
        let index = match from.parse::<usize>() {
            Ok(index) => index,
            Err(_) => stages
                .iter()
                .position(|s| s.name.as_deref() == Some(from))?,
        };
        let env = stage_env(&stages, index);
        Some(RustTarget {
            triple: env.get("RUST_TARGET")?.clone(),
            rustflags: env.get("RUSTFLAGS").cloned(),
        })
    })
}

/// One `FROM` and what the pipeline reads of what follows it.
struct Stage {
    /// `AS name`, lower case.
    name: Option<String>,
    /// The image or earlier stage it starts from, arguments substituted, lower case.
    base: String,
    env: Vec<(String, String)>,
    /// The stages its `COPY --from=` and `ADD --from=` read, lower case.
    copies_from: Vec<String>,
}

fn stages(containerfile: &str, args: &BTreeMap<String, String>) -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    for line in instructions(containerfile) {
        let (keyword, rest) = split_keyword(&line);
        match keyword.as_str() {
            "FROM" => {
                let words: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let name = match words.as_slice() {
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => {
                        Some(name.to_ascii_lowercase())
                    }
                    _ => None,
                };
                stages.push(Stage {
                    name,
                    base: substitute(words.first().unwrap_or(&""), args).to_ascii_lowercase(),
                    env: Vec::new(),
                    copies_from: Vec::new(),
                });
            }
            "ENV" => {
                if let Some(stage) = stages.last_mut() {
                    stage.env.extend(env_pairs(rest));
                }
            }
            "COPY" | "ADD" => {
                let from = rest
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("--from="));
                if let (Some(stage), Some(from)) = (stages.last_mut(), from) {
                    stage.copies_from.push(from.to_ascii_lowercase());
                }
            }
            _ => {}
        }
    }
    stages
}

/// The environment stage `index` has: that of the earlier stage it starts from, if any, overlaid by its own.
fn stage_env(stages: &[Stage], index: usize) -> BTreeMap<String, String> {
    let Some(stage) = stages.get(index) else {
        return BTreeMap::new();
    };
    let parent = stages[..index]
        .iter()
        .rposition(|s| s.name.as_deref() == Some(stage.base.as_str()));
    let mut env = parent.map_or_else(BTreeMap::new, |parent| stage_env(stages, parent));
    env.extend(stage.env.iter().cloned());
    env
}

/// The variables of one `ENV`: `K=V K2="a b"`, or the older `K the rest of the line`.
fn env_pairs(rest: &str) -> Vec<(String, String)> {
    let words = shell_words(rest);
    if !words.first().is_some_and(|w| w.contains('=')) {
        let rest = rest.trim();
        return match rest.split_once(char::is_whitespace) {
            Some((key, value)) => vec![(key.to_owned(), value.trim().to_owned())],
            None => Vec::new(),
        };
    }
    words
        .iter()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Words split at unquoted whitespace, with double and single quotes and backslash escapes taken out.
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '\'' => {
                in_word = true;
                word.extend(chars.by_ref().take_while(|&c| c != '\''));
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
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
    fn the_rust_target_of_each_platform() {
        let project = include_str!("../../../Containerfile");
        let crt_static = Some("-C target-feature=+crt-static");
        let one_stage = "FROM rust AS b\nENV RUST_TARGET=x86_64-unknown-linux-musl\nRUN x\n\
                         FROM scratch\nCOPY --from=b /out/app /app\n";
        let by_arch = "ARG TARGETARCH\nFROM busybox AS tools\n\
                       FROM r AS build-amd64\nENV RUST_TARGET x86_64-unknown-linux-musl\n\
                       FROM r AS build-arm64\nENV RUST_TARGET='aarch64-unknown-linux-musl' \\\n\
                       \x20 RUSTFLAGS=\"-C a=\\\"b\\\"\"\n\
                       FROM build-${TARGETARCH} AS build\nENV OTHER=1\nFROM scratch\nCOPY --from=0 /x /x\n\
                       COPY --from=build /out/app /app\n";
        // (Containerfile, build arguments, TARGETARCH, triple and RUSTFLAGS)
        type Case<'a> = (
            &'a str,
            Pairs<'a>,
            &'a str,
            Option<(&'a str, Option<&'a str>)>,
        );
        let cases: [Case; 9] = [
            (
                project,
                vec![],
                "amd64",
                Some(("x86_64-unknown-linux-gnu", crt_static)),
            ),
            (
                project,
                vec![],
                "arm64",
                Some(("aarch64-unknown-linux-gnu", crt_static)),
            ),
            (
                project,
                vec![("RUNTIME_IMAGE", "scratch"), ("RUST_IMAGE", "localhost/b")],
                "arm64",
                Some(("aarch64-unknown-linux-gnu", crt_static)),
            ),
            (
                one_stage,
                vec![],
                "arm64",
                Some(("x86_64-unknown-linux-musl", None)),
            ),
            (
                by_arch,
                vec![],
                "amd64",
                Some(("x86_64-unknown-linux-musl", None)),
            ),
            (
                by_arch,
                vec![],
                "arm64",
                Some(("aarch64-unknown-linux-musl", Some("-C a=\"b\""))),
            ),
            (
                "FROM rust AS b\nFROM scratch\nCOPY --from=b /x /x\n",
                vec![],
                "amd64",
                None,
            ),
            (
                "FROM rust\nENV RUST_TARGET=x\nCOPY . /src\n",
                vec![],
                "amd64",
                None,
            ),
            ("", vec![], "amd64", None),
        ];
        for (containerfile, given, arch, want) in cases {
            let want = want.map(|(triple, rustflags)| RustTarget {
                triple: triple.into(),
                rustflags: rustflags.map(str::to_owned),
            });
            assert_eq!(
                rust_target(containerfile, &args(&given), arch),
                want,
                "{arch} {containerfile:?}"
            );
        }
    }

    #[test]
    fn env_instructions() {
        let cases: [(&str, Pairs); 5] = [
            ("A=1 B=\"two words\"", vec![("A", "1"), ("B", "two words")]),
            (
                "A='x y' B=a\\ b C=",
                vec![("A", "x y"), ("B", "a b"), ("C", "")],
            ),
            (
                "KEY a value with spaces",
                vec![("KEY", "a value with spaces")],
            ),
            ("A=\"say \\\"hi\\\"\"", vec![("A", "say \"hi\"")]),
            ("LONELY", vec![]),
        ];
        for (rest, want) in cases {
            let want: Vec<(String, String)> = want
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect();
            assert_eq!(env_pairs(rest), want, "{rest}");
        }
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
