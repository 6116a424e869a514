//! Talking to GitHub Actions from a step: step outputs (GITHUB_OUTPUT), the job summary (GITHUB_STEP_SUMMARY),
//! collapsible log groups and error/warning annotations.
//!
//! Off GitHub (a developer's terminal) the same calls print plain text, so every stage can use them unconditionally.
//! The environment is read once, in [`Github::from_env`]; the formatting is pure and tested here.

use std::collections::hash_map::RandomState;
use std::fs::OpenOptions;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Where a step's outputs and summary go, captured from the environment at the edge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Github {
    /// `GITHUB_ACTIONS=true`: workflow commands (`::group::`) are understood by the log.
    pub actions: bool,
    /// `GITHUB_OUTPUT`: file of `name=value` lines read after the step ends.
    pub output: Option<PathBuf>,
    /// `GITHUB_STEP_SUMMARY`: Markdown file shown on the run's page.
    pub summary: Option<PathBuf>,
}

impl Github {
    pub fn from_env() -> Github {
        let path = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Github {
            actions: std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true"),
            output: path("GITHUB_OUTPUT"),
            summary: path("GITHUB_STEP_SUMMARY"),
        }
    }

    /// Appends step outputs; a no-op when GITHUB_OUTPUT is not set.
    pub fn set_outputs(&self, outputs: &[(&str, String)]) -> anyhow::Result<()> {
        let Some(path) = &self.output else {
            return Ok(());
        };
        let mut text = String::new();
        for (name, value) in outputs {
            text.push_str(&format_output(name, value)?);
        }
        append(path, &text).context("write the step outputs to $GITHUB_OUTPUT")
    }

    /// Appends Markdown to the job summary; a no-op when GITHUB_STEP_SUMMARY is not set.
    pub fn append_summary(&self, markdown: &str) -> anyhow::Result<()> {
        let Some(path) = &self.summary else {
            return Ok(());
        };
        let mut text = markdown.to_owned();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        append(path, &text).context("append to the job summary $GITHUB_STEP_SUMMARY")
    }

    /// Starts a collapsible log group that ends when the guard is dropped; a plain heading off GitHub.
    pub fn group(&self, title: &str) -> Group {
        if self.actions {
            println!("::group::{}", escape_data(title));
        } else {
            println!("==> {title}");
        }
        Group {
            actions: self.actions,
        }
    }

    /// An error annotation on the run (plain `error: …` on stderr off GitHub).
    pub fn error(&self, title: &str, message: &str) {
        eprintln!("{}", annotation(self.actions, "error", title, message));
    }

    /// A notice annotation on the run (plain `notice: …` on stderr off GitHub).
    pub fn notice(&self, title: &str, message: &str) {
        eprintln!("{}", annotation(self.actions, "notice", title, message));
    }

    /// A warning annotation on the run (plain `warning: …` on stderr off GitHub).
    pub fn warning(&self, title: &str, message: &str) {
        eprintln!("{}", annotation(self.actions, "warning", title, message));
    }
}

/// Ends its log group when dropped, so an early `?` return still closes it.
#[must_use = "the group ends when this guard is dropped"]
pub struct Group {
    actions: bool,
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.actions {
            println!("::endgroup::");
        }
    }
}

fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("write {}", path.display()))
}

/// One GITHUB_OUTPUT entry. Single-line values are `name=value`; a value with a line break uses the
/// `name<<DELIMITER` form with a random delimiter that the value does not contain, so a value can never inject
/// another output.
pub fn format_output(name: &str, value: &str) -> anyhow::Result<String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        anyhow::bail!("output name {name:?} must be letters, digits, '_' or '-'");
    }
    if !value.contains(['\n', '\r']) {
        return Ok(format!("{name}={value}\n"));
    }
    let mut delimiter = format!("ghadelimiter_{:016x}", random());
    while value.contains(&delimiter) {
        delimiter = format!("ghadelimiter_{:016x}", random());
    }
    Ok(format!("{name}<<{delimiter}\n{value}\n{delimiter}\n"))
}

/// A random 64-bit number from the standard library's per-process hash keys (no extra dependency needed).
fn random() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// Escapes the message part of a workflow command: a line break would otherwise end the command and let the rest of
/// the text be read as a new one.
pub fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a property value (`title=…`), where `:` ends the properties and `,` separates them.
pub fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// `::error title=T::message` on GitHub, `error: T: message` elsewhere.
pub fn annotation(actions: bool, level: &str, title: &str, message: &str) -> String {
    match (actions, title.is_empty()) {
        (true, true) => format!("::{level}::{}", escape_data(message)),
        (true, false) => format!(
            "::{level} title={}::{}",
            escape_property(title),
            escape_data(message)
        ),
        (false, true) => format!("{level}: {message}"),
        (false, false) => format!("{level}: {title}: {message}"),
    }
}

/// Text a server sent (an error body, a header, a link, a label) made safe to print anywhere, on one line:
/// control characters (line breaks, ESC, DEL, C1 controls, bidirectional overrides) become `\u{…}` escapes, so
/// it can start no line of its own, no workflow command (`::error::…`) and no terminal escape sequence.
pub fn untrusted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_unsafe(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    if out.starts_with("::") {
        out.insert(0, ' ');
    }
    out
}

/// A message of ours, which may quote what servers said, as it goes to stdout or stderr: line breaks are kept,
/// every other control character is escaped, and a line that would start a workflow command is indented.
pub fn printable(text: &str) -> String {
    text.split('\n')
        .map(|line| untrusted(line.strip_suffix('\r').unwrap_or(line)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Escapes text for a Markdown table cell of the job summary.
pub fn table_cell(text: &str) -> String {
    untrusted(&text.replace(['\r', '\n'], " "))
        .replace('\\', "\\\\")
        .replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_servers_say_cannot_start_a_line_a_command_or_an_escape() {
        let cases = [
            ("plain text", "plain text"),
            ("a\n::error title=x::pwned", "a\\u{a}::error title=x::pwned"),
            ("::error::pwned", " ::error::pwned"),
            ("\u{1b}[31mred\u{1b}[0m", "\\u{1b}[31mred\\u{1b}[0m"),
            ("cr\rlf", "cr\\u{d}lf"),
            ("nul\0del\u{7f}c1\u{9b}", "nul\\u{0}del\\u{7f}c1\\u{9b}"),
            ("bidi\u{202e}txt", "bidi\\u{202e}txt"),
            ("tab\tok", "tab\\u{9}ok"),
            ("ünïcødé ok", "ünïcødé ok"),
        ];
        for (text, want) in cases {
            assert_eq!(untrusted(text), want, "{text:?}");
        }
        let printed = printable("error: x\n::warning::y\r\nz \u{1b}]0;title\u{7}");
        assert_eq!(printed, "error: x\n ::warning::y\nz \\u{1b}]0;title\\u{7}");
        assert!(printed.lines().all(|l| !l.starts_with("::")));
    }

    /// Reads GITHUB_OUTPUT text back the way the runner does.
    fn parse_outputs(text: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if let Some((name, delimiter)) = line.split_once("<<") {
                let mut value = Vec::new();
                for line in lines.by_ref() {
                    if line == delimiter {
                        break;
                    }
                    value.push(line);
                }
                out.push((name.to_owned(), value.join("\n")));
            } else {
                let (name, value) = line.split_once('=').unwrap();
                out.push((name.to_owned(), value.to_owned()));
            }
        }
        out
    }

    #[test]
    fn outputs_round_trip_and_cannot_inject() {
        let cases = [
            ("tag", "latest", "tag=latest\n"),
            ("is_release", "false", "is_release=false\n"),
            ("empty", "", "empty=\n"),
            ("eq", "a=b", "eq=a=b\n"),
        ];
        for (name, value, want) in cases {
            assert_eq!(format_output(name, value).unwrap(), want);
        }
        for value in [
            "two\nlines",
            "inject\nskip_push=true",
            "ghadelimiter_x\nEOF",
            "end\n",
        ] {
            let text = format_output("v", value).unwrap();
            assert_eq!(
                parse_outputs(&text),
                [("v".to_owned(), value.to_owned())],
                "{text}"
            );
            assert!(text.starts_with("v<<ghadelimiter_"), "{text}");
        }
        for bad in ["", "a b", "a=b", "x\ny"] {
            assert!(format_output(bad, "v").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn outputs_and_summary_are_appended_to_files() {
        let dir = std::env::temp_dir().join(format!("xtask-github-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let gh = Github {
            actions: true,
            output: Some(dir.join("output")),
            summary: Some(dir.join("summary")),
        };
        std::fs::write(dir.join("output"), "before=1\n").unwrap();
        gh.set_outputs(&[("a", "1".into()), ("b", "x\ny".into())])
            .unwrap();
        gh.append_summary("# Plan").unwrap();
        gh.append_summary("| a |\n").unwrap();
        let outputs = parse_outputs(&std::fs::read_to_string(dir.join("output")).unwrap());
        assert_eq!(
            outputs,
            [
                ("before".to_owned(), "1".to_owned()),
                ("a".into(), "1".into()),
                ("b".into(), "x\ny".into())
            ]
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("summary")).unwrap(),
            "# Plan\n| a |\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();

        // Off GitHub nothing is written anywhere.
        let local = Github::default();
        local.set_outputs(&[("a", "1".into())]).unwrap();
        local.append_summary("x").unwrap();
    }

    #[test]
    fn annotations_are_escaped() {
        let cases = [
            (true, "error", "", "plain", "::error::plain"),
            (
                true,
                "error",
                "Bad tag",
                "Tag 'v1.0'\n100% wrong",
                "::error title=Bad tag::Tag 'v1.0'%0A100%25 wrong",
            ),
            (
                true,
                "warning",
                "a: b, c",
                "x::y",
                "::warning title=a%3A b%2C c::x::y",
            ),
            (true, "error", "t", "cr\r\n", "::error title=t::cr%0D%0A"),
            (false, "error", "", "plain", "error: plain"),
            (false, "warning", "T", "m\nn", "warning: T: m\nn"),
        ];
        for (actions, level, title, message, want) in cases {
            assert_eq!(annotation(actions, level, title, message), want);
        }
        assert_eq!(table_cell("a|b\nc"), "a\\|b c");
    }
}
