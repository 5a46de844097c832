//! Recorded history as a table: one row per time, one column per signal. Read from
//! CSV (`time,<signal>,...`) or JSON lines (`{"time": ..., "<signal>": ..., ...}`);
//! `time` in seconds (any origin) or RFC 3339; an empty cell (CSV) or a missing
//! or `null` field (JSON) is no sample. Shared by the `replay` driver and
//! `edge-agent eval`'s scenarios. Errors name `file:line:col`, at most 20.

use std::path::Path;

/// A table read from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// Signal names, in column order (the time column excluded).
    pub columns: Vec<String>,
    /// Seconds from the first row, one per row, non-decreasing.
    pub times: Vec<f64>,
    /// `rows × columns` values; `None` where there was no sample.
    pub values: Vec<Option<f64>>,
    /// Wall time of the first row (RFC 3339 times), else [`DEFAULT_START_NS`].
    pub start_wall_ns: i64,
}

impl Table {
    /// The value of row `r`, column `c`.
    pub fn value(&self, r: usize, c: usize) -> Option<f64> {
        self.values[r * self.columns.len() + c]
    }

    pub fn rows(&self) -> usize {
        self.times.len()
    }

    /// The duration from the first to the last row, in seconds.
    pub fn duration_s(&self) -> f64 {
        self.times.last().copied().unwrap_or(0.0)
    }
}

/// 2026-01-01T00:00:00Z: the wall time given to tables timed in seconds.
pub const DEFAULT_START_NS: i64 = 1_767_225_600_000_000_000;

/// Errors reported per file, at most.
const MAX_ERRORS: usize = 20;

/// Reads `path`: JSON lines when it ends in `.jsonl` or `.ndjson`, else CSV.
pub fn read(path: &Path) -> Result<Table, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("{}: cannot read it: {e}", path.display())])?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("jsonl" | "ndjson") => parse_json_lines(path, &text),
        _ => parse_csv(path, &text),
    }
}

/// Reads CSV: a header `time,<signal>,...`, then one row per time.
pub fn parse_csv(path: &Path, text: &str) -> Result<Table, Vec<String>> {
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
        errors.truncate(MAX_ERRORS);
        return Err(errors);
    }
    let start_wall_ns = first.and_then(|(_, w)| w).unwrap_or(DEFAULT_START_NS);
    Ok(Table {
        columns,
        times,
        values,
        start_wall_ns,
    })
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

type JsonRow = (
    usize,
    f64,
    Option<i64>,
    serde_json::Map<String, serde_json::Value>,
);

/// Reads JSON lines: one object per line with `time` and a field per signal (a
/// number, or `null` for no sample). The columns are every field name seen,
/// sorted.
pub fn parse_json_lines(path: &Path, text: &str) -> Result<Table, Vec<String>> {
    let at =
        |line: usize, col: usize, msg: String| format!("{}:{line}:{col}: {msg}", path.display());
    let mut errors = Vec::new();
    // (line, seconds, wall ns of an RFC 3339 time, the signal fields)
    let mut rows: Vec<JsonRow> = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let n = i + 1;
        let mut obj = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(o)) => o,
            Ok(_) => {
                errors.push(at(n, 1, "each line must be a JSON object".into()));
                continue;
            }
            Err(e) => {
                errors.push(at(n, e.column().max(1), format!("not JSON: {e}")));
                continue;
            }
        };
        let t = match obj.remove("time") {
            Some(serde_json::Value::Number(x)) => {
                x.as_f64().filter(|v| v.is_finite()).map(|v| (v, None))
            }
            Some(serde_json::Value::String(s)) => parse_time(&s),
            _ => None,
        };
        match t {
            Some((t, wall)) => rows.push((n, t, wall, obj)),
            None => errors.push(at(
                n,
                1,
                "`time` must be seconds or an RFC 3339 string like \"2026-01-01T00:00:00Z\"".into(),
            )),
        }
    }
    let mut columns: Vec<String> = rows.iter().flat_map(|r| r.3.keys().cloned()).collect();
    columns.sort();
    columns.dedup();
    let t0 = rows.first().map(|r| r.1);
    let mut table = Table {
        columns,
        times: Vec::with_capacity(rows.len()),
        values: Vec::new(),
        start_wall_ns: rows.first().and_then(|r| r.2).unwrap_or(DEFAULT_START_NS),
    };
    for (n, t, _, obj) in rows {
        let t = t - t0.unwrap_or(t);
        if table.times.last().is_some_and(|&last| t < last) {
            errors.push(at(
                n,
                1,
                "time goes backwards; sort the lines by time".into(),
            ));
            continue;
        }
        table.times.push(t);
        for c in &table.columns {
            table.values.push(match obj.get(c) {
                None | Some(serde_json::Value::Null) => None,
                Some(v) => v.as_f64().filter(|x| x.is_finite()).or_else(|| {
                    errors.push(at(
                        n,
                        1,
                        format!("`{c}` is not a number (use null for no sample)"),
                    ));
                    None
                }),
            });
        }
    }
    if table.times.is_empty() && errors.is_empty() {
        errors.push(at(
            1,
            1,
            "no lines; each line is {\"time\": ..., \"<signal>\": ...}".into(),
        ));
    }
    if table.columns.is_empty() && errors.is_empty() {
        errors.push(at(1, 1, "no signal fields besides `time`".into()));
    }
    if errors.is_empty() {
        Ok(table)
    } else {
        errors.truncate(MAX_ERRORS);
        Err(errors)
    }
}
