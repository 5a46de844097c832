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

use std::path::{Path, PathBuf};

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

/// 2026-01-01T00:00:00Z: the wall time given to scenarios timed in seconds.
const DEFAULT_START_NS: i64 = 1_767_225_600_000_000_000;

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
    let csv_path = dir.join("signals.csv");
    let text = std::fs::read_to_string(&csv_path)
        .map_err(|e| vec![format!("{}: cannot read: {e}", csv_path.display())])?;
    let (columns, times, values, start_wall_ns) = parse_csv(&csv_path, &text)?;
    let labels = read_labels(&dir.join("labels.toml"), start_wall_ns)?;
    Ok(Scenario {
        name,
        dir: dir.to_path_buf(),
        columns,
        times,
        values,
        start_wall_ns,
        labels,
    })
}

type Csv = (Vec<String>, Vec<f64>, Vec<Option<f64>>, i64);

fn parse_csv(path: &Path, text: &str) -> Result<Csv, Vec<String>> {
    let at =
        |line: usize, col: usize, msg: String| format!("{}:{line}:{col}: {msg}", path.display());
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(vec![at(
            1,
            1,
            "empty file; the first line names the columns: time,<signal>,...".into(),
        )]);
    };
    let mut head = header.split(',').map(str::trim);
    if head.next() != Some("time") {
        return Err(vec![at(
            1,
            1,
            "the first column must be `time` (seconds or RFC 3339)".into(),
        )]);
    }
    let columns: Vec<String> = head.map(str::to_string).collect();
    if columns.is_empty() || columns.iter().any(String::is_empty) {
        return Err(vec![at(
            1,
            1,
            "name every signal column after `time`".into(),
        )]);
    }
    let mut times = Vec::new();
    let mut values = Vec::new();
    let mut errors = Vec::new();
    let mut first: Option<(f64, Option<i64>)> = None;
    for (i, line) in lines {
        let n = i + 1;
        let mut cells = line.split(',');
        let t_cell = cells.next().unwrap_or("").trim();
        let (t_abs, wall) = match parse_time(t_cell) {
            Some(t) => t,
            None => {
                errors.push(at(
                    n,
                    1,
                    format!(
                        "`{t_cell}` is not a time (seconds, or RFC 3339 like 2026-01-01T00:00:00Z)"
                    ),
                ));
                continue;
            }
        };
        let (t0, _) = *first.get_or_insert((t_abs, wall));
        let t = t_abs - t0;
        if times.last().is_some_and(|&last| t < last) {
            errors.push(at(
                n,
                1,
                "time goes backwards; sort the rows by time".into(),
            ));
            continue;
        }
        let mut row: Vec<Option<f64>> = Vec::with_capacity(columns.len());
        let mut col = t_cell.len() + 2;
        for cell in cells.by_ref().take(columns.len()) {
            let c = cell.trim();
            row.push(if c.is_empty() {
                None
            } else if let Ok(v) = c.parse::<f64>() {
                Some(v)
            } else {
                errors.push(at(
                    n,
                    col,
                    format!("`{c}` is not a number (leave the cell empty for no sample)"),
                ));
                None
            });
            col += cell.len() + 1;
        }
        if row.len() != columns.len() || cells.next().is_some() {
            errors.push(at(
                n,
                1,
                format!(
                    "{} cells where the header has {}",
                    line.split(',').count(),
                    columns.len() + 1
                ),
            ));
            continue;
        }
        times.push(t);
        values.extend(row);
    }
    if times.is_empty() && errors.is_empty() {
        errors.push(at(2, 1, "no rows".into()));
    }
    if !errors.is_empty() {
        errors.truncate(20);
        return Err(errors);
    }
    let start = first.and_then(|(_, w)| w).unwrap_or(DEFAULT_START_NS);
    Ok((columns, times, values, start))
}

/// Seconds (any origin) and, for RFC 3339, the wall time in ns.
fn parse_time(s: &str) -> Option<(f64, Option<i64>)> {
    if let Ok(v) = s.parse::<f64>() {
        return v.is_finite().then_some((v, None));
    }
    let ns = parse_rfc3339(s)?;
    Some((ns as f64 / 1e9, Some(ns)))
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` as Unix-epoch nanoseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':'
        || b[16] != b':'
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac_ns = 0i64;
    if let Some(f) = rest.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded = format!("{:0<9}", &f[..digits.min(9)]);
        frac_ns = padded.parse().ok()?;
        rest = &f[digits..];
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            sign * (rest[1..3].parse::<i64>().ok()? * 3600 + rest[4..6].parse::<i64>().ok()? * 60)
        }
    };
    let days = edge_driver_api::time::days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)
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
    match parse_rfc3339(text) {
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
