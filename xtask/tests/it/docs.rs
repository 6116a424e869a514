//! The commands the documentation shows are commands that work: every `cargo xtask …` line in a fenced code block of
//! README.md or docs/*.md is split into words as a shell would and parsed with the xtask's own grammar (the
//! `flags` module the workflow test compiles in), and a placeholder (`…`, `[--flag]`, `<value>`) is refused, so a
//! reader can paste any of them. A failure names the file and line.

use std::path::{Path, PathBuf};

use crate::support::root;
use crate::workflow::flags;

/// One `cargo xtask …` command of a fenced block: where it starts and the xtask's arguments.
#[derive(Debug, PartialEq, Eq)]
struct DocCommand {
    line: usize,
    args: Vec<String>,
}

/// The `cargo xtask …` commands in the fenced code blocks of `markdown`, with the 1-based line each starts on.
/// A line ending in `\` goes on on the next one; `#` starts a comment. `Err` holds a line that mentions `cargo
/// xtask` but is not one plain command (a pipe, `&&`, a variable, an unclosed quote).
fn fenced_commands(markdown: &str) -> Vec<Result<DocCommand, (usize, String)>> {
    let mut out = Vec::new();
    let mut fence: Option<String> = None;
    let mut pending: Option<(usize, String)> = None;
    for (index, raw) in markdown.lines().enumerate() {
        let number = index + 1;
        let trimmed = raw.trim_start();
        let marker: String = trimmed
            .chars()
            .take_while(|&c| c == '`' || c == '~')
            .collect();
        match &fence {
            None => {
                if marker.len() >= 3
                    && (marker.chars().all(|c| c == '`') || marker.chars().all(|c| c == '~'))
                {
                    fence = Some(marker);
                }
                continue;
            }
            Some(open)
                if pending.is_none()
                    && marker.starts_with(open.as_str())
                    && trimmed.trim() == marker =>
            {
                fence = None;
                continue;
            }
            Some(_) => {}
        }
        let (start, mut text) = pending.take().unwrap_or((number, String::new()));
        if let Some(head) = raw.strip_suffix('\\') {
            text.push_str(head);
            text.push(' ');
            pending = Some((start, text));
            continue;
        }
        text.push_str(raw);
        match words(&text) {
            Ok(words) => {
                let program = words
                    .iter()
                    .position(|w| !is_assignment(w))
                    .unwrap_or(words.len());
                if words[program..].starts_with(&["cargo".to_owned(), "xtask".to_owned()]) {
                    out.push(Ok(DocCommand {
                        line: start,
                        args: words[program + 2..].to_vec(),
                    }));
                } else if words.windows(2).any(|w| w == ["cargo", "xtask"]) {
                    out.push(Err((
                        start,
                        "`cargo xtask` not at the start of the command".to_owned(),
                    )));
                }
            }
            Err(why) if text.contains("cargo xtask") => out.push(Err((start, why))),
            Err(_) => {}
        }
    }
    out
}

/// `NAME=value` before a command.
fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
}

/// Splits one shell command into words: single and double quotes, `#` comments. Anything that would make it more
/// than one plain command with literal values is refused.
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => out.extend(word.take()),
            '#' if word.is_none() => break,
            '\'' | '"' => {
                let mut quoted = String::new();
                loop {
                    match chars.next() {
                        Some(end) if end == c => break,
                        Some('$' | '`') if c == '"' => {
                            return Err(format!("a variable or substitution in {line:?}"))
                        }
                        Some(other) => quoted.push(other),
                        None => return Err(format!("an unclosed quote in {line:?}")),
                    }
                }
                word.get_or_insert_with(String::new).push_str(&quoted);
            }
            '|' | '&' | ';' | '<' | '>' | '(' | ')' | '`' | '$' | '\\' | '*' | '?' => {
                return Err(format!(
                    "`{c}` in {line:?}: show one plain command with literal values"
                ))
            }
            other => word.get_or_insert_with(String::new).push(other),
        }
    }
    out.extend(word);
    Ok(out)
}

/// Why an argument is a placeholder rather than a value, if it is one.
fn placeholder(arg: &str) -> Option<&'static str> {
    if arg.contains('…') || arg.contains("...") {
        Some("an ellipsis")
    } else if arg.starts_with('[') || arg.ends_with(']') {
        Some("an optional part in brackets")
    } else if arg.starts_with('<') || arg.ends_with('>') {
        Some("a <placeholder>")
    } else {
        None
    }
}

/// README.md and every docs/*.md, sorted.
fn documents(root: &Path) -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    docs.insert(0, root.join("README.md"));
    docs
}

/// What is wrong with `markdown`'s commands, as `file:line: …` lines; also the number of commands checked.
fn problems(file: &str, markdown: &str) -> (Vec<String>, usize) {
    let mut problems = Vec::new();
    let mut checked = 0;
    for command in fenced_commands(markdown) {
        let command = match command {
            Ok(command) => command,
            Err((line, why)) => {
                problems.push(format!("{file}:{line}: {why}"));
                continue;
            }
        };
        checked += 1;
        let shown = format!("cargo xtask {}", command.args.join(" "));
        if let Some(why) = command.args.iter().find_map(|arg| placeholder(arg)) {
            problems.push(format!(
                "{file}:{}: `{shown}` holds {why}; show a command that runs as it is",
                command.line
            ));
            continue;
        }
        let args = command.args.iter().map(Into::into);
        if let Err(err) = flags::parse(args) {
            problems.push(format!(
                "{file}:{}: `{shown}` is refused by the xtask: {err}",
                command.line
            ));
        }
    }
    (problems, checked)
}

#[test]
fn every_documented_command_parses() {
    let root = root();
    let mut all = Vec::new();
    let mut checked = 0;
    for path in documents(&root) {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.strip_prefix(&root).unwrap().display().to_string();
        let (problems, count) = problems(&name, &text);
        all.extend(problems);
        checked += count;
    }
    assert!(
        all.is_empty(),
        "commands in the docs that do not work as shown:\n{}",
        all.join("\n")
    );
    // The README's two commands are there, and the extraction found the rest too.
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let first: Vec<Vec<String>> = fenced_commands(&readme)
        .into_iter()
        .filter_map(Result::ok)
        .take(2)
        .map(|c| c.args)
        .collect();
    assert_eq!(first, [vec!["ci"], vec!["image", "release", "--local"]]);
    assert!(
        checked >= 20,
        "only {checked} commands found in README.md and docs/"
    );
}

#[test]
fn the_extraction_finds_and_refuses_what_it_should() {
    let markdown = "\
text `cargo xtask not in a fence`

```sh
cargo xtask ci --no-setup          # a comment: cargo xtask nothing
XTASK_REGISTRY_TRACE=1 cargo xtask image push --platform linux/arm64 \\
  --digest-dir target/digests --to 127.0.0.1:5000/team/app
cargo xtask image build --platform linux/amd64 --labels '{\"a\": \"b c\"}'
cargo xtask image manifest --digest-dir target/digests --tag latest [--dry-run]
cargo xtask image prune --digest sha256:…
cargo xtask image pusj
cargo xtask image build | tee log
git tag v1.2.3 && cargo xtask image release --version v1.2.3
podman run --rm image   # cargo xtask is not run here
```

~~~
cargo xtask bench B1 B2 --rounds 5
~~~
";
    let found = fenced_commands(markdown);
    let lines: Vec<usize> = found
        .iter()
        .map(|c| match c {
            Ok(c) => c.line,
            Err((line, _)) => *line,
        })
        .collect();
    assert_eq!(lines, [4, 5, 7, 8, 9, 10, 11, 12, 17], "{found:#?}");
    assert_eq!(
        found[1].as_ref().unwrap().args,
        [
            "image",
            "push",
            "--platform",
            "linux/arm64",
            "--digest-dir",
            "target/digests",
            "--to",
            "127.0.0.1:5000/team/app"
        ]
    );
    assert_eq!(
        found[2].as_ref().unwrap().args.last().unwrap(),
        r#"{"a": "b c"}"#
    );

    let (problems, checked) = problems("doc.md", markdown);
    let lines: Vec<&str> = problems
        .iter()
        .map(|p| p.split(':').take(2).collect::<Vec<_>>()[1])
        .collect();
    assert_eq!(lines, ["8", "9", "10", "11", "12"], "{problems:#?}");
    assert_eq!(checked, 7);
    assert!(problems[0].contains("brackets"), "{}", problems[0]);
    assert!(problems[1].contains("ellipsis"), "{}", problems[1]);
    assert!(
        problems[2].contains("refused by the xtask"),
        "{}",
        problems[2]
    );
}
