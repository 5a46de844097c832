//! The dry run: a model's outputs on its reference inputs against the outputs
//! the reference recorded (onnxruntime's, from the training scripts).
//!
//! Strict by design, since it is the one check that the file computes what it was
//! trained to compute:
//! - every `[[outputs]]` of the manifest must be in the reference;
//! - a reference value must be a number, or the string `"NaN"` where NaN is the
//!   expected output; `null` (how JSON writers spell NaN or a missing value) is a
//!   mismatch, and so is our NaN against a number;
//! - a model that outputs NaN on a reference row whose inputs are all finite fails,
//!   whatever the reference says: in service it would be quarantined at once;
//! - every disagreement is counted, and the report gives the largest difference per
//!   output and the row it is in, not only the first mismatch.

use std::path::Path;

use super::manifest::OutputSpec;
use super::{OnnxModel, Output};

/// One output compared with the reference.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputDiff {
    pub name: String,
    pub values: usize,
    /// Values beyond the tolerance (or NaN where a number was expected, ...).
    pub mismatches: usize,
    /// Reference values that are `null` or not a number.
    pub unreadable: usize,
    /// The largest difference (infinite for a NaN against a number) and where.
    pub max_diff: f64,
    pub worst: Option<Worst>,
}

/// Where an output's largest difference is.
#[derive(Clone, Debug, PartialEq)]
pub struct Worst {
    pub row: usize,
    pub column: usize,
    pub ours: f64,
    pub reference: String,
}

/// The dry run's findings: every output compared, and the errors that reject the
/// model (empty when it passed).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DryRun {
    pub outputs: Vec<OutputDiff>,
    pub errors: Vec<String>,
}

impl DryRun {
    fn fail(e: String) -> DryRun {
        DryRun {
            outputs: Vec::new(),
            errors: vec![e],
        }
    }

    /// One line per output for `check-config`: values, largest difference, where.
    pub fn summary(&self) -> Vec<String> {
        self.outputs
            .iter()
            .map(|o| match &o.worst {
                Some(w) => format!(
                    "dry run: output {:?}, {} values, max difference {:.3e} at row {} column {}",
                    o.name, o.values, o.max_diff, w.row, w.column
                ),
                None => format!("dry run: output {:?}, {} values, exact", o.name, o.values),
            })
            .collect()
    }
}

/// What the reference expects of one value.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Number(f64),
    NaN,
    Unreadable,
}

fn expect(v: &serde_json::Value) -> Expect {
    match v {
        serde_json::Value::Number(n) => n.as_f64().map_or(Expect::Unreadable, Expect::Number),
        serde_json::Value::String(s) if s.eq_ignore_ascii_case("nan") => Expect::NaN,
        _ => Expect::Unreadable,
    }
}

fn show(e: Expect) -> String {
    match e {
        Expect::Number(w) => w.to_string(),
        Expect::NaN => "\"NaN\"".into(),
        Expect::Unreadable => "null (not a number)".into(),
    }
}

/// How far ours is from the reference: 0 when it agrees, infinite when it cannot
/// (NaN against a number, a number against NaN, an unreadable reference).
fn difference(ours: f64, want: Expect, exact: bool) -> f64 {
    match want {
        Expect::NaN if ours.is_nan() => 0.0,
        Expect::Number(w) if !ours.is_nan() => {
            let d = (ours - w).abs();
            if exact && d > 0.0 { f64::INFINITY } else { d }
        }
        _ => f64::INFINITY,
    }
}

/// Runs the reference inputs (`null` inputs are NaN) and compares every output
/// the reference holds with ours; `tol` is absolute, relative above 1; labels
/// must be equal.
pub fn dry_run(model: &OnnxModel, declared: &[OutputSpec], path: &Path, tol: f64) -> DryRun {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return DryRun::fail(format!("cannot read the reference {}: {e}", path.display()));
        }
    };
    let doc: serde_json::Value = match serde_json::from_str(&text) {
        Ok(d) => d,
        Err(e) => return DryRun::fail(format!("reference {} is not JSON: {e}", path.display())),
    };
    let Some(rows) = doc["rows"].as_u64().map(|r| r as usize) else {
        return DryRun::fail(format!("reference {} has no \"rows\"", path.display()));
    };
    let xs: Vec<f32> = doc["inputs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_f64().unwrap_or(f64::NAN) as f32)
                .collect()
        })
        .unwrap_or_default();
    let outs = match model.session().and_then(|mut s| s.run(&xs, rows)) {
        Ok(o) => o,
        Err(e) => return DryRun::fail(format!("the dry run on the reference inputs failed: {e}")),
    };
    let mut run = DryRun::default();
    let reference = &doc["outputs"];
    for spec in declared {
        if reference.get(&spec.name).is_none() {
            let has: Vec<&str> = reference
                .as_object()
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default();
            run.errors.push(format!(
                "dry run: the reference has no output {:?} (it has {}): regenerate the reference, or fix the name in [[outputs]]",
                spec.name,
                if has.is_empty() { "none".into() } else { has.join(", ") }
            ));
        }
    }
    let row_len = model.row_len().max(1);
    let finite_row = |r: usize| {
        xs.get(r * row_len..(r + 1) * row_len)
            .is_some_and(|row| row.iter().all(|v| v.is_finite()))
    };
    for (port, out) in model.outputs().iter().zip(&outs) {
        let got = out.to_f64();
        let per_row = (got.len() / rows.max(1)).max(1);
        if let Some(r) = (0..rows).find(|&r| {
            finite_row(r)
                && got
                    .iter()
                    .skip(r * per_row)
                    .take(per_row)
                    .any(|v| v.is_nan())
        }) {
            run.errors.push(format!(
                "dry run: output {:?} is NaN on reference row {r}, whose inputs are all finite: the model would be quarantined in service",
                port.name
            ));
        }
        let Some(want) = reference[&port.name]["data"].as_array() else {
            continue;
        };
        let exact = matches!(out, Output::I64 { .. });
        match compare(&port.name, &got, want, per_row, exact, tol) {
            Ok(diff) => run.outputs.push(diff),
            Err(e) => run.errors.push(e),
        }
    }
    for o in run.outputs.iter().filter(|o| o.mismatches > 0) {
        run.errors.push(mismatch_error(o, tol));
    }
    run
}

fn compare(
    name: &str,
    got: &[f64],
    want: &[serde_json::Value],
    per_row: usize,
    exact: bool,
    tol: f64,
) -> Result<OutputDiff, String> {
    if got.len() != want.len() {
        return Err(format!(
            "dry run: output {name:?} has {} values, the reference {}",
            got.len(),
            want.len()
        ));
    }
    let mut diff = OutputDiff {
        name: name.to_string(),
        values: got.len(),
        mismatches: 0,
        unreadable: 0,
        max_diff: 0.0,
        worst: None,
    };
    for (i, (g, w)) in got.iter().zip(want.iter().map(expect)).enumerate() {
        let d = difference(*g, w, exact);
        let allowed = match w {
            Expect::Number(w) if !exact => tol * w.abs().max(1.0),
            _ => 0.0,
        };
        diff.unreadable += usize::from(w == Expect::Unreadable);
        diff.mismatches += usize::from(d > allowed);
        if d > diff.max_diff {
            diff.max_diff = d;
            diff.worst = Some(Worst {
                row: i / per_row,
                column: i % per_row,
                ours: *g,
                reference: show(w),
            });
        }
    }
    Ok(diff)
}

fn mismatch_error(o: &OutputDiff, tol: f64) -> String {
    let mut e = format!(
        "dry run: output {:?}: {} of {} values differ from the reference (tolerance {tol})",
        o.name, o.mismatches, o.values
    );
    if let Some(w) = &o.worst {
        e += &format!(
            "; the largest difference is at row {} column {}: ours {}, the reference {}",
            w.row, w.column, w.ours, w.reference
        );
        if o.max_diff.is_finite() {
            e += &format!(" ({:.3e})", o.max_diff);
        }
    }
    if o.unreadable > 0 {
        e += &format!(
            "; {} reference values are null or not numbers (write \"NaN\" where NaN is the expected output)",
            o.unreadable
        );
    }
    e
}
