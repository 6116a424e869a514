//! Running one timed command: its output goes to a log file (the table is what the user reads), a failure shows
//! the log's tail, and the peak memory of the process can be watched while it runs.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// How often /proc/<pid>/status is read while watching memory.
const MEMORY_POLL: Duration = Duration::from_millis(5);

/// What a finished command took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timed {
    pub elapsed: Duration,
    /// The process's VmHWM (peak resident set) in KiB, when it was watched.
    pub peak_rss_kib: Option<u64>,
}

/// Runs `command` with stdout and stderr appended to `log`, and fails (with the log's tail) unless it succeeds.
/// With `watch_memory`, polls the child's VmHWM every few milliseconds; the last value read before it exits is
/// its peak (VmHWM only grows), missing at most the growth of its last few milliseconds.
pub fn run(mut command: Command, log: &Path, watch_memory: bool) -> anyhow::Result<Timed> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open the log {}", log.display()))?;
    let shown = format!("{command:?}");
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    let started = Instant::now();
    let mut child = command.spawn().with_context(|| format!("start {shown}"))?;
    let mut peak = None;
    let status = if watch_memory {
        let status_file = format!("/proc/{}/status", child.id());
        loop {
            if let Some(kib) = std::fs::read_to_string(&status_file)
                .ok()
                .as_deref()
                .and_then(vm_hwm_kib)
            {
                peak = Some(peak.unwrap_or(0).max(kib));
            }
            if let Some(status) = child.try_wait()? {
                break status;
            }
            std::thread::sleep(MEMORY_POLL);
        }
    } else {
        child.wait()?
    };
    let elapsed = started.elapsed();
    if !status.success() {
        let mut text = String::new();
        let _ = std::fs::File::open(log).and_then(|mut f| f.read_to_string(&mut text));
        anyhow::bail!(
            "{shown} failed ({status}); the end of its log {}:\n{}",
            log.display(),
            tail(&text, 25)
        );
    }
    Ok(Timed {
        elapsed,
        peak_rss_kib: peak,
    })
}

/// VmHWM of a /proc/<pid>/status text, in KiB.
pub fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|value| value.trim().parse().ok())
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> &str {
    let mut start = text.len();
    for _ in 0..=lines {
        match text[..start].rfind('\n') {
            Some(at) => start = at,
            None => return text,
        }
    }
    &text[start + 1..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_hwm() {
        let status =
            "Name:\txtask\nVmPeak:\t  123456 kB\nVmHWM:\t    9876 kB\nVmRSS:\t    5000 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(9876));
        assert_eq!(vm_hwm_kib("Name:\tzombie\nState:\tZ\n"), None);
    }

    #[test]
    fn tails() {
        assert_eq!(tail("a\nb\nc\n", 1), "c\n");
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("a\nb", 5), "a\nb");
    }

    #[test]
    fn times_a_real_process_and_its_memory() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        // `sort` holds its whole input in memory: 40 MB of lines read from a file make its peak at least that.
        let input = dir.join("input");
        let line = "x".repeat(99) + "\n";
        std::fs::write(&input, line.repeat(400_000)).unwrap();
        let mut sort = Command::new("sort");
        sort.arg(&input);
        let timed = run(sort, &log, true).unwrap();
        let peak = timed.peak_rss_kib.unwrap();
        assert!(peak > 35_000, "sort of 40 MB peaked at {peak} KiB");
        assert!(timed.elapsed > Duration::ZERO);

        let mut failing = Command::new("ls");
        failing.arg("/nonexistent-xtask-bench");
        let err = run(failing, &log, false).unwrap_err().to_string();
        assert!(
            err.contains("exit status: 2") && err.contains("nonexistent-xtask-bench"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
