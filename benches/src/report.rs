//! The table every bench prints after its criterion groups: each case's median time (read
//! back from criterion's `estimates.json`), its throughput, and its ratio to a limit or a
//! peer measured in the same run, beside the target for that ratio.
//!
//! Only results written by the current run count: an `estimates.json` older than the
//! run's start (a case filtered out this time, or a `--test` run) shows as `—`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// Criterion's results on disk, restricted to those written since a given instant.
pub struct Results {
    dir: PathBuf,
    since: SystemTime,
}

impl Results {
    /// The results criterion writes in this process: its output directory is found as
    /// criterion finds it (`$CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`, else the
    /// target directory `cargo metadata` reports, else `target/criterion`); only files
    /// modified at or after `since` are read.
    pub fn since(since: SystemTime) -> Self {
        Self {
            dir: criterion_dir(),
            since,
        }
    }

    /// Median time per iteration in nanoseconds of benchmark `id` (`function/value` as
    /// given to `BenchmarkId::new`, or the name given to `bench_function`) in `group`, or
    /// `None` if this run did not measure it.
    pub fn median_ns(&self, group: &str, id: &str) -> Option<f64> {
        let mut path = self.dir.join(safe(group));
        for part in id.split('/') {
            path.push(safe(part));
        }
        path.push("new");
        path.push("estimates.json");
        read_median(&path, self.since)
    }
}

/// Criterion's directory-name rule (`make_filename_safe`) for the characters it replaces.
fn safe(name: &str) -> String {
    name.replace(
        &['?', '"', '/', '\\', '*', '<', '>', ':', '|', '^'][..],
        "_",
    )
}

fn read_median(path: &Path, since: SystemTime) -> Option<f64> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    if modified < since {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    cargo_target_dir()
        .map(|t| t.join("criterion"))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

fn cargo_target_dir() -> Option<PathBuf> {
    let cargo = std::env::var_os("CARGO")?;
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .ok()?;
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    json["target_directory"].as_str().map(PathBuf::from)
}

/// What one call of a case does, for its throughput.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Work {
    /// Floating-point operations (an FMA counts as two): throughput in GFLOP/s.
    Flops(f64),
    /// Bytes moved: throughput in GB/s (10⁹ bytes per second).
    Bytes(f64),
    /// Output rows produced from `bytes` of weights: rows/s and GB/s.
    Rows {
        /// Rows per call.
        rows: f64,
        /// Weight bytes read per call.
        bytes: f64,
    },
    /// Nothing to divide by: only the time is reported.
    Latency,
}

impl Work {
    fn throughput(self, ns: f64) -> String {
        let per_s = 1e9 / ns;
        match self {
            Work::Flops(f) => format!("{:.1} GFLOP/s", f * per_s / 1e9),
            Work::Bytes(b) => format!("{:.1} GB/s", b * per_s / 1e9),
            Work::Rows { rows, bytes } => format!(
                "{} row/s, {:.1} GB/s",
                si(rows * per_s),
                bytes * per_s / 1e9
            ),
            Work::Latency => String::new(),
        }
    }

    /// The amount the throughput divides by (flops, bytes, or weight bytes for rows).
    fn amount(self) -> Option<f64> {
        match self {
            Work::Flops(x) | Work::Bytes(x) | Work::Rows { bytes: x, .. } => Some(x),
            Work::Latency => None,
        }
    }
}

fn si(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.2} G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.2} k", x / 1e3)
    } else {
        format!("{x:.0} ")
    }
}

/// A duration in nanoseconds, with a unit that keeps 3–4 significant digits.
pub fn time(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// How a ratio is formed and printed; in every kind, larger is better for tensorlet.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Our throughput over the limit's, as a percentage.
    Limit,
    /// The peer's time over ours (speed-up), as `×`.
    Peer,
    /// A budget over our time: ≥ 1 means within budget, as `×`.
    Budget,
}

struct Comparison {
    kind: Kind,
    name: String,
    figure: Option<String>,
    ratio: Option<f64>,
    target: Option<f64>,
}

/// One case of a [`Table`]: its time and work, and what it is compared with.
pub struct Row {
    case: String,
    time_ns: Option<f64>,
    work: Work,
    against: Vec<Comparison>,
}

impl Row {
    /// Compares our throughput with a limit's (`limit_ns` for `limit_work`), as a share;
    /// `target` is the least share the issue asks for (e.g. `0.92`), if any.
    pub fn vs_limit(
        &mut self,
        name: &str,
        limit_ns: Option<f64>,
        limit_work: Work,
        target: Option<f64>,
    ) -> &mut Self {
        let ours = self.time_ns.zip(self.work.amount()).map(|(t, w)| w / t);
        let limit = limit_ns.zip(limit_work.amount()).map(|(t, w)| w / t);
        self.against.push(Comparison {
            kind: Kind::Limit,
            name: name.to_owned(),
            figure: limit_ns.map(|t| limit_work.throughput(t)),
            ratio: ours.zip(limit).map(|(o, l)| o / l),
            target,
        });
        self
    }

    /// Compares with a peer doing the same work in `peer_ns`: the ratio is the peer's time
    /// over ours; `target` is the least speed-up the issue asks for, if any.
    pub fn vs_peer(&mut self, name: &str, peer_ns: Option<f64>, target: Option<f64>) -> &mut Self {
        self.against.push(Comparison {
            kind: Kind::Peer,
            name: name.to_owned(),
            figure: peer_ns.map(time),
            ratio: peer_ns.zip(self.time_ns).map(|(p, o)| p / o),
            target,
        });
        self
    }

    /// Compares our time with a budget of `budget_ns`: met when the time is within it.
    pub fn within(&mut self, name: &str, budget_ns: f64) -> &mut Self {
        self.against.push(Comparison {
            kind: Kind::Budget,
            name: name.to_owned(),
            figure: Some(time(budget_ns)),
            ratio: self.time_ns.map(|t| budget_ns / t),
            target: Some(1.0),
        });
        self
    }
}

/// The printed summary of one bench: one line per (case, comparison).
pub struct Table {
    title: String,
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Table {
    /// An empty table headed `title`.
    pub fn new(title: &str) -> Self {
        Self {
            title: title.to_owned(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a case measured at `time_ns` per call (`None`: not measured in this run).
    pub fn row(&mut self, case: impl Into<String>, time_ns: Option<f64>, work: Work) -> &mut Row {
        self.rows.push(Row {
            case: case.into(),
            time_ns,
            work,
            against: Vec::new(),
        });
        self.rows.last_mut().expect("just pushed")
    }

    /// Adds a line printed under the table.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The table as Markdown (aligned for a terminal), with a count of targets met and the
    /// notes under it.
    pub fn render(&self) -> String {
        let header = [
            "case",
            "tensorlet",
            "throughput",
            "against",
            "its figure",
            "ratio",
            "target",
            "met",
        ];
        let dash = "—".to_owned();
        let mut lines: Vec<[String; 8]> = Vec::new();
        let (mut met, mut missed, mut unknown) = (0, 0, 0);
        for row in &self.rows {
            let mut first = [
                row.case.clone(),
                row.time_ns.map(time).unwrap_or_else(|| dash.clone()),
                row.time_ns
                    .map(|t| row.work.throughput(t))
                    .unwrap_or_else(|| dash.clone()),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ];
            if row.against.is_empty() {
                lines.push(first);
                continue;
            }
            for (i, c) in row.against.iter().enumerate() {
                let mut line = if i == 0 {
                    std::mem::take(&mut first)
                } else {
                    Default::default()
                };
                let fmt = |r: f64| match c.kind {
                    Kind::Limit => format!("{:.0}%", r * 100.0),
                    Kind::Peer | Kind::Budget => format!("{r:.2}×"),
                };
                line[3] = c.name.clone();
                line[4] = c.figure.clone().unwrap_or_else(|| dash.clone());
                line[5] = c.ratio.map(fmt).unwrap_or_else(|| dash.clone());
                line[6] = c
                    .target
                    .map(|t| format!("≥ {}", fmt(t)))
                    .unwrap_or_default();
                line[7] = match (c.ratio, c.target) {
                    (_, None) => String::new(),
                    (None, Some(_)) => {
                        unknown += 1;
                        dash.clone()
                    }
                    (Some(r), Some(t)) if r >= t => {
                        met += 1;
                        "yes".to_owned()
                    }
                    (Some(_), Some(_)) => {
                        missed += 1;
                        "**no**".to_owned()
                    }
                };
                lines.push(line);
            }
        }
        let width = |i: usize| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..8).map(width).collect();
        let mut out = format!("\n## {}\n\n", self.title);
        let mut push = |cells: &[String]| {
            out.push('|');
            for (cell, &w) in cells.iter().zip(&widths) {
                let pad = w - cell.chars().count();
                let _ = write!(out, " {cell}{} |", " ".repeat(pad));
            }
            out.push('\n');
        };
        push(&header.map(str::to_owned));
        push(&widths.iter().map(|&w| "-".repeat(w)).collect::<Vec<_>>());
        for line in &lines {
            push(line);
        }
        let _ = writeln!(
            out,
            "\ntargets: {met} met, {missed} missed, {unknown} not measured in this run"
        );
        for note in &self.notes {
            let _ = writeln!(out, "- {note}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_targets() {
        let mut t = Table::new("t");
        t.row("a", Some(1000.0), Work::Flops(1e5))
            .vs_limit("peak", Some(500.0), Work::Flops(1e5), Some(0.5))
            .vs_peer("peer", Some(3000.0), Some(2.0))
            .within("budget", 900.0);
        t.row("b", None, Work::Bytes(4.0))
            .vs_peer("peer", Some(1.0), Some(1.0));
        let text = t.render();
        assert!(text.contains("| 50%"), "{text}");
        assert!(text.contains("3.00×"), "{text}");
        assert!(text.contains("0.90×"), "{text}");
        assert!(
            text.contains("targets: 2 met, 1 missed, 1 not measured"),
            "{text}"
        );
    }

    #[test]
    fn stale_or_missing_results_are_none() {
        let r = Results {
            dir: PathBuf::from("/nonexistent"),
            since: SystemTime::UNIX_EPOCH,
        };
        assert_eq!(r.median_ns("g", "f/v"), None);
    }
}
