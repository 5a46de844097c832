//! A labelled scenario on disk: a directory holding `signals.csv` and `labels.toml`.
//!
//! ```text
//! signals.csv   time,<signal>,<signal>,...     header: `time`, then signal names
//!               0,71.2,12.5                     time: seconds, or RFC 3339
//!               1,,12.6                         an empty cell: no sample
//! labels.toml   healthy = true                  a run without a fault, or
//!               failure_at = 5400               the failure (seconds from the first
//!               onset_at = 1800                 row, or RFC 3339), its onset, and
//!               asset = "pump"                  optionally the asset and the kind
//!               kind = "bearing_wear"
//!               restarts = [3600]               agent restarts (seconds), optional
//! ```
//!
//! The CSV is read by the `replay` driver's reader (`edge_driver_replay::table`), so
//! a scenario can also be played live (`kind = "replay"`).

use std::path::{Path, PathBuf};

use edge_driver_replay::table::{self, Table};

use edge_driver_api::config::{
    Diagnostic, Diagnostics, NodeValue, TableReader, parse_document, render,
};

/// A scenario read from its directory.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub dir: PathBuf,
    /// Signal names, in CSV column order (the time column excluded).
    pub columns: Vec<String>,
    /// Seconds from the first row, one per row, non-decreasing.
    pub times: Vec<f64>,
    /// `rows × columns` values; `None` where the cell was empty.
    pub values: Vec<Option<f64>>,
    /// Wall time of the first row (RFC 3339 times), else 2026-01-01T00:00:00Z.
    pub start_wall_ns: i64,
    pub labels: Labels,
    /// Operators' labels of the alerts raised while it was recorded.
    pub operator: Vec<super::operator::OperatorLabel>,
}

/// What happened in a scenario.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Labels {
    pub healthy: bool,
    /// Seconds from the first row.
    pub failure_at_s: Option<f64>,
    /// Seconds from the first row; the start of the run when not given.
    pub onset_at_s: Option<f64>,
    pub asset: Option<String>,
    pub kind: Option<String>,
    /// Agent restarts (seconds from the first row).
    pub restarts_s: Vec<f64>,
}

impl Scenario {
    /// The duration from the first to the last row, in seconds.
    pub fn duration_s(&self) -> f64 {
        self.times.last().copied().unwrap_or(0.0)
    }

    /// The value of row `r`, column `c`.
    pub fn value(&self, r: usize, c: usize) -> Option<f64> {
        self.values[r * self.columns.len() + c]
    }
}

/// Every scenario directory under `root` (those holding a `signals.csv`), sorted.
pub fn dirs(root: &Path) -> Result<Vec<PathBuf>, Vec<String>> {
    let entries = std::fs::read_dir(root).map_err(|e| {
        vec![format!(
            "{}: cannot read the scenarios directory: {e}",
            root.display()
        )]
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("signals.csv").is_file())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        return Err(vec![format!(
            "{}: no scenario found (a scenario is a directory holding signals.csv and labels.toml)",
            root.display()
        )]);
    }
    Ok(dirs)
}

/// Reads one scenario directory.
pub fn load(dir: &Path) -> Result<Scenario, Vec<String>> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Table {
        columns,
        times,
        values,
        start_wall_ns,
    } = table::parse_csv(
        &dir.join("signals.csv"),
        &read_text(&dir.join("signals.csv"))?,
    )?;
    let labels = read_labels(&dir.join("labels.toml"), start_wall_ns)?;
    let operator = super::operator::read(dir, start_wall_ns)?;
    Ok(Scenario {
        name,
        dir: dir.to_path_buf(),
        columns,
        times,
        values,
        start_wall_ns,
        labels,
        operator,
    })
}

fn read_text(path: &Path) -> Result<String, Vec<String>> {
    std::fs::read_to_string(path).map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])
}

fn read_labels(path: &Path, start_wall_ns: i64) -> Result<Labels, Vec<String>> {
    let src = std::fs::read_to_string(path).map_err(|e| {
        vec![format!(
            "{}: cannot read: {e} (write `healthy = true`, or `failure_at = <seconds>`)",
            path.display()
        )]
    })?;
    let file = path.display().to_string();
    let render = |d: &[Diagnostic]| vec![render(&file, &src, d)];
    let table = parse_document(&src).map_err(|d| render(&d))?;
    let diags = Diagnostics::new();
    let labels = {
        let mut r = TableReader::new(&table, "", &diags);
        let mut time = |key: &'static str| label_time(&mut r, key, start_wall_ns);
        let failure_at_s = time("failure_at");
        let onset_at_s = time("onset_at");
        let restarts_s = restarts(&mut r);
        Labels {
            healthy: r.bool("healthy").is_some_and(|b| b.value),
            failure_at_s,
            onset_at_s,
            asset: r.string("asset").map(|s| s.value),
            kind: r.string("kind").map(|s| s.value),
            restarts_s,
        }
    };
    if labels.healthy == labels.failure_at_s.is_some() {
        diags.push(
            Diagnostic::new(
                table.span,
                "",
                "say either `healthy = true` or `failure_at = <time>`",
            )
            .hint("a run without a fault is healthy; a run that ends in a failure has its time"),
        );
    }
    if let (Some(o), Some(f)) = (labels.onset_at_s, labels.failure_at_s)
        && o > f
    {
        diags.push(Diagnostic::new(
            table.get("onset_at").map_or(table.span, |e| e.node.span),
            "onset_at",
            "the onset comes after the failure",
        ));
    }
    if diags.is_empty() {
        Ok(labels)
    } else {
        Err(render(&diags.into_vec()))
    }
}

/// A label time: seconds from the first row, or an RFC 3339 time.
fn label_time(r: &mut TableReader<'_>, key: &'static str, start_wall_ns: i64) -> Option<f64> {
    let node = r.node(key)?;
    let text = match &node.value {
        NodeValue::Int(i) => return Some(*i as f64),
        NodeValue::Float(f) if f.is_finite() => return Some(*f),
        NodeValue::Str(s) | NodeValue::Datetime(s) => s,
        other => {
            r.error(
                node.span,
                key,
                format!("expected a time, found {}", other.type_name()),
            )
            .hint("seconds from the first row (failure_at = 5400) or RFC 3339")
            .emit();
            return None;
        }
    };
    match table::parse_rfc3339(text) {
        Some(ns) => Some((ns - start_wall_ns) as f64 / 1e9),
        None => {
            r.error(node.span, key, format!("`{text}` is not an RFC 3339 time"))
                .hint("e.g. 2026-01-01T06:30:00Z, or seconds from the first row")
                .emit();
            None
        }
    }
}

/// `restarts = [seconds, ...]`.
fn restarts(r: &mut TableReader<'_>) -> Vec<f64> {
    let Some(node) = r.node("restarts") else {
        return Vec::new();
    };
    let items = match &node.value {
        NodeValue::Array(items) => items,
        other => {
            r.error(
                node.span,
                "restarts",
                format!("expected an array, found {}", other.type_name()),
            )
            .hint("restarts = [3600, 7200] (seconds from the first row)")
            .emit();
            return Vec::new();
        }
    };
    items
        .iter()
        .filter_map(|n| match n.value {
            NodeValue::Int(i) => Some(i as f64),
            NodeValue::Float(f) if f.is_finite() => Some(f),
            _ => {
                r.error(n.span, "restarts", "expected seconds from the first row")
                    .emit();
                None
            }
        })
        .collect()
}
