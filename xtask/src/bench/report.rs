//! The benchmark's results: samples per side, their summary (median, min, max), the ratio of two sides, targets
//! and their verdicts, the table printed at the end and the JSON written to target/bench/.
//!
//! Pure: everything here is computed from the measured numbers, so it is tested without running anything.

use std::fmt::Write as _;

use serde::Serialize;

/// One side of a comparison: what was run and how long each run took.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Side {
    pub label: String,
    /// The command line (or the sequence of them) that was timed, as a user would paste it.
    pub command: String,
    /// Wall time of each run, in seconds, in the order they ran.
    pub seconds: Vec<f64>,
}

impl Side {
    pub fn new(label: impl Into<String>, command: impl Into<String>) -> Side {
        Side {
            label: label.into(),
            command: command.into(),
            seconds: Vec::new(),
        }
    }

    pub fn summary(&self) -> Option<Summary> {
        Summary::of(&self.seconds)
    }
}

/// Median, min and max of some samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    /// None for no samples. The median of an even count is the mean of the two middle ones.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            n,
        })
    }
}

/// An upper bound a figure should stay under.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Target {
    pub at_most: f64,
}

/// Whether a measured value meets its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Met,
    Missed,
    /// No target, or nothing measured.
    None,
}

impl Verdict {
    pub fn of(value: Option<f64>, target: Option<Target>) -> Verdict {
        match (value, target) {
            (Some(value), Some(target)) if value <= target.at_most => Verdict::Met,
            (Some(_), Some(_)) => Verdict::Missed,
            _ => Verdict::None,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::None => "",
        }
    }
}

/// A single figure beside the timings: bytes uploaded, image size, peak memory.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub target: Option<Target>,
    pub verdict: Verdict,
    /// How it was measured.
    pub how: String,
}

impl Figure {
    pub fn new(
        name: impl Into<String>,
        value: f64,
        unit: impl Into<String>,
        target: Option<f64>,
        how: impl Into<String>,
    ) -> Figure {
        let target = target.map(|at_most| Target { at_most });
        Figure {
            name: name.into(),
            value,
            unit: unit.into(),
            target,
            verdict: Verdict::of(Some(value), target),
            how: how.into(),
        }
    }
}

/// One benchmark: a baseline side, optionally a side compared with it (ratio = compared / baseline, medians),
/// and extra figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bench {
    pub id: String,
    pub title: String,
    pub baseline: Side,
    pub compared: Option<Side>,
    pub ratio_target: Option<Target>,
    pub figures: Vec<Figure>,
    /// What the reader needs to judge the numbers (what was changed, what is left out).
    pub notes: Vec<String>,
}

impl Bench {
    pub fn new(id: &str, title: &str, baseline: Side) -> Bench {
        Bench {
            id: id.to_owned(),
            title: title.to_owned(),
            baseline,
            compared: None,
            ratio_target: None,
            figures: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// `compared` against `baseline`, whose ratio (compared / baseline) should stay at or under `at_most`.
    pub fn versus(id: &str, title: &str, baseline: Side, compared: Side, at_most: f64) -> Bench {
        Bench {
            compared: Some(compared),
            ratio_target: Some(Target { at_most }),
            ..Bench::new(id, title, baseline)
        }
    }

    /// Median of the compared side over the median of the baseline.
    pub fn ratio(&self) -> Option<f64> {
        let base = self.baseline.summary()?.median;
        let compared = self.compared.as_ref()?.summary()?.median;
        (base > 0.0).then(|| compared / base)
    }

    pub fn verdict(&self) -> Verdict {
        Verdict::of(self.ratio(), self.ratio_target)
    }
}

/// Everything one `cargo xtask bench` run measured, as written to target/bench/*.json.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Run {
    /// Unix seconds at the start.
    pub started: u64,
    pub rounds: u32,
    pub machine: Machine,
    pub benches: Vec<BenchJson>,
}

/// Facts that make runs comparable (or explain why they are not).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Machine {
    pub cpus: usize,
    /// /proc/loadavg at the start and at the end: the machine is shared.
    pub load_before: String,
    pub load_after: String,
    pub podman: String,
    pub revision: String,
}

/// A bench with its summaries and verdicts spelled out, so the JSON needs no recomputation to be read.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchJson {
    #[serde(flatten)]
    pub bench: Bench,
    pub baseline_summary: Option<Summary>,
    pub compared_summary: Option<Summary>,
    pub ratio: Option<f64>,
    pub verdict: Verdict,
}

impl From<&Bench> for BenchJson {
    fn from(bench: &Bench) -> BenchJson {
        BenchJson {
            baseline_summary: bench.baseline.summary(),
            compared_summary: bench.compared.as_ref().and_then(Side::summary),
            ratio: bench.ratio(),
            verdict: bench.verdict(),
            bench: bench.clone(),
        }
    }
}

/// `1.234 s`, `12.3 ms`: seconds shown at a precision that fits their size.
pub fn seconds(value: f64) -> String {
    if value < 1.0 {
        format!("{:.1} ms", value * 1000.0)
    } else {
        format!("{value:.1} s")
    }
}

/// The table printed at the end of a run.
pub fn table(benches: &[Bench]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<4} {:<52} {:>10} {:>10} {:>10} {:>3}",
        "", "side", "median", "min", "max", "n"
    );
    for bench in benches {
        let _ = writeln!(out, "{} {}", bench.id, bench.title);
        for side in std::iter::once(&bench.baseline).chain(&bench.compared) {
            match side.summary() {
                Some(s) => {
                    let _ = writeln!(
                        out,
                        "{:<4} {:<52} {:>10} {:>10} {:>10} {:>3}",
                        "",
                        side.label,
                        seconds(s.median),
                        seconds(s.min),
                        seconds(s.max),
                        s.n
                    );
                }
                None => {
                    let _ = writeln!(out, "{:<4} {:<52} {:>10}", "", side.label, "not run");
                }
            }
        }
        if let Some(ratio) = bench.ratio() {
            let target = bench
                .ratio_target
                .map(|t| format!(" (target <= {:.2}: {})", t.at_most, bench.verdict().word()))
                .unwrap_or_default();
            let _ = writeln!(out, "{:<4} ratio {ratio:.3}{target}", "");
        }
        for figure in &bench.figures {
            let target = figure
                .target
                .map(|t| {
                    format!(
                        " (target <= {} {}: {})",
                        number(t.at_most),
                        figure.unit,
                        figure.verdict.word()
                    )
                })
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<4} {}: {} {}{target}",
                "",
                figure.name,
                number(figure.value),
                figure.unit
            );
        }
        for note in &bench.notes {
            let _ = writeln!(out, "{:<4} note: {note}", "");
        }
    }
    out
}

/// A figure without needless decimals (`0`, `1.5`, `12.34`).
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(label: &str, seconds: &[f64]) -> Side {
        Side {
            label: label.into(),
            command: format!("run {label}"),
            seconds: seconds.to_vec(),
        }
    }

    #[test]
    fn summaries() {
        type Case<'a> = (&'a [f64], Option<(f64, f64, f64, usize)>);
        let cases: [Case; 5] = [
            (&[], None),
            (&[2.0], Some((2.0, 2.0, 2.0, 1))),
            (&[3.0, 1.0, 2.0], Some((2.0, 1.0, 3.0, 3))),
            (&[4.0, 1.0, 3.0, 2.0], Some((2.5, 1.0, 4.0, 4))),
            (&[5.0, 5.0, 1.0], Some((5.0, 1.0, 5.0, 3))),
        ];
        for (samples, want) in cases {
            let got = Summary::of(samples).map(|s| (s.median, s.min, s.max, s.n));
            assert_eq!(got, want, "{samples:?}");
        }
    }

    #[test]
    fn ratio_and_verdict() {
        let cases = [
            (
                &[10.0, 12.0, 11.0][..],
                &[3.0, 2.0, 4.0][..],
                Some(0.3),
                Some(3.0 / 11.0),
                Verdict::Met,
            ),
            (
                &[10.0][..],
                &[5.0][..],
                Some(0.3),
                Some(0.5),
                Verdict::Missed,
            ),
            (&[10.0][..], &[3.0][..], Some(0.3), Some(0.3), Verdict::Met),
            (&[10.0][..], &[5.0][..], None, Some(0.5), Verdict::None),
            (&[10.0][..], &[][..], Some(0.3), None, Verdict::None),
            (&[0.0][..], &[1.0][..], Some(0.3), None, Verdict::None),
        ];
        for (base, compared, target, ratio, verdict) in cases {
            let mut bench = Bench::new("B0", "t", side("a", base));
            bench.compared = Some(side("b", compared));
            bench.ratio_target = target.map(|at_most| Target { at_most });
            assert_eq!(bench.ratio(), ratio, "{base:?} {compared:?}");
            assert_eq!(bench.verdict(), verdict, "{base:?} {compared:?}");
        }
    }

    #[test]
    fn figures_have_verdicts() {
        assert_eq!(
            Figure::new("x", 0.0, "B", Some(0.0), "h").verdict,
            Verdict::Met
        );
        assert_eq!(
            Figure::new("x", 70.0, "MB", Some(64.0), "h").verdict,
            Verdict::Missed
        );
        assert_eq!(
            Figure::new("x", 7.0, "MB", None, "h").verdict,
            Verdict::None
        );
    }

    #[test]
    fn the_table_shows_every_side_ratio_and_figure() {
        let mut bench = Bench::new("B4", "push", side("podman push", &[0.5, 0.4, 0.6]));
        bench.compared = Some(side("xtask image push", &[0.1, 0.12, 0.08]));
        bench.ratio_target = Some(Target { at_most: 0.5 });
        bench.figures.push(Figure::new(
            "bytes uploaded by the xtask",
            0.0,
            "B",
            Some(0.0),
            "proxy",
        ));
        bench.notes.push("one platform".into());
        let empty = Bench::new("B6", "compile", side("cold compile", &[]));
        let text = table(&[bench, empty]);
        for line in [
            "B4 push",
            "podman push",
            "500.0 ms",
            "400.0 ms",
            "600.0 ms",
            "xtask image push",
            "100.0 ms",
            "ratio 0.200 (target <= 0.50: met)",
            "bytes uploaded by the xtask: 0 B (target <= 0 B: met)",
            "note: one platform",
            "B6 compile",
            "not run",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
    }

    #[test]
    fn json_spells_out_summaries() {
        let mut bench = Bench::new("B1", "build", side("clean", &[100.0, 120.0, 110.0]));
        bench.compared = Some(side("rebuild", &[30.0, 20.0, 25.0]));
        bench.ratio_target = Some(Target { at_most: 0.3 });
        let json = serde_json::to_value(BenchJson::from(&bench)).unwrap();
        assert_eq!(json["id"], "B1");
        assert_eq!(json["baseline_summary"]["median"], 110.0);
        assert_eq!(json["compared_summary"]["min"], 20.0);
        assert_eq!(json["verdict"], "met");
        assert_eq!(json["baseline"]["command"], "run clean");
        assert!((json["ratio"].as_f64().unwrap() - 25.0 / 110.0).abs() < 1e-12);
    }

    #[test]
    fn numbers_and_seconds() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(1.5), "1.5");
        assert_eq!(number(12.345), "12.35");
        assert_eq!(seconds(0.0123), "12.3 ms");
        assert_eq!(seconds(61.24), "61.2 s");
    }
}
