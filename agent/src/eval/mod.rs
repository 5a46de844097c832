//! `edge-agent eval`: detection quality on labelled scenarios.
//!
//! Each scenario ([`scenario`]) is played through the agent's real pipeline
//! ([`replay`]: the configuration's windows, detectors, models and alert engine; its
//! drivers replaced by the scenario's rows) in virtual time, and its alerts are
//! scored against the labels ([`score`]). The report is a table for people and a
//! JSON document for scripts, whose shape is a contract (`Report`, documented in
//! the README): fields are only ever added.

pub mod operator;
pub mod plot;
pub mod replay;
pub mod scenario;
pub mod score;

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::config::Config;
pub use score::{Overall, ScenarioResult};

/// Version of the JSON report.
pub const REPORT_VERSION: u32 = 1;

/// What `eval` reports.
#[derive(Debug, Serialize)]
pub struct Report {
    pub v: u32,
    pub config: String,
    pub overall: Overall,
    pub scenarios: Vec<ScenarioResult>,
    /// What was ignored (CSV columns that name no configured signal).
    pub warnings: Vec<String>,
}

/// Why `eval` could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{}", .0.join("\n"))]
    Scenarios(Vec<String>),
    #[error("cannot write the plot {path}: {error}")]
    Plot { path: String, error: std::io::Error },
}

/// Replays every scenario under `dir` through a pipeline built from `config`;
/// with `plots`, writes `<plots>/<scenario>.svg` for each. One scenario is in
/// memory at a time; every problem of every scenario is reported at once.
pub fn run(config: &Config, dir: &Path, plots: Option<&Path>) -> Result<Report, EvalError> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut busy = std::time::Duration::ZERO;
    let mut results = Vec::new();
    for d in scenario::dirs(dir).map_err(EvalError::Scenarios)? {
        let sc = match scenario::load(&d) {
            Ok(sc) => sc,
            Err(mut e) => {
                problems.append(&mut e);
                continue;
            }
        };
        let Some(signals) = signals_of(config, &sc, &mut problems, &mut warnings) else {
            continue;
        };
        if !problems.is_empty() {
            continue; // the run fails: only check the rest
        }
        let started = std::time::Instant::now();
        let result = score::score(config, &sc, replay::replay(config, &sc, &signals));
        busy += started.elapsed();
        if let Some(dir) = plots {
            write_plot(dir, &sc, &result)?;
        }
        results.push(result);
    }
    if !problems.is_empty() {
        return Err(EvalError::Scenarios(problems));
    }
    let overall = score::overall(&results, busy.as_secs_f64());
    Ok(Report {
        v: REPORT_VERSION,
        config: config.file.clone(),
        overall,
        scenarios: results,
        warnings,
    })
}

/// The configured signal of each column of `sc`; `None` (and a problem) when no
/// column names one. Columns naming none are warnings.
fn signals_of(
    config: &Config,
    sc: &scenario::Scenario,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<Vec<Option<edge_driver_api::SignalId>>> {
    let signals = replay::column_signals(config, sc);
    if signals.iter().all(Option::is_none) {
        problems.push(format!(
            "{}/signals.csv: no column names a signal of {} (columns: {}); name the columns as the config names its signals",
            sc.dir.display(),
            config.file,
            sc.columns.join(", ")
        ));
        return None;
    }
    for (c, s) in sc.columns.iter().zip(&signals) {
        if s.is_none() {
            warnings.push(format!(
                "{}/signals.csv: column `{c}` is not a signal of the configuration; ignored",
                sc.dir.display()
            ));
        }
    }
    Some(signals)
}

fn write_plot(dir: &Path, sc: &scenario::Scenario, r: &ScenarioResult) -> Result<(), EvalError> {
    let path = dir.join(format!("{}.svg", sc.name));
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, plot::svg(sc, r)))
        .map_err(|error| EvalError::Plot {
            path: path.display().to_string(),
            error,
        })
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1} %", v * 100.0))
}

fn secs(v: Option<f64>) -> String {
    v.map_or("-".into(), crate::alert::human_duration)
}

/// The report as a table for people.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:<8} {:>9} {:<9} {:>10} {:>9} {:>6} {:>6}",
        "scenario", "truth", "detected", "first", "lead", "ETA err", "false", "warmup"
    );
    for s in &r.scenarios {
        let truth = if s.healthy {
            "healthy".to_string()
        } else {
            s.kind.clone().unwrap_or("fault".into())
        };
        let detected = if s.healthy {
            "-"
        } else if s.detected {
            "yes"
        } else {
            "NO"
        };
        let _ = writeln!(
            out,
            "{:<28} {:<8} {:>9} {:<9} {:>10} {:>9} {:>6} {:>6}",
            s.name,
            truth,
            detected,
            s.first_severity.unwrap_or("-"),
            secs(s.lead_s),
            s.eta_error
                .map_or("-".into(), |e| format!("{:+.0} %", e * 100.0)),
            s.false_alerts,
            s.warmup_alerts,
        );
    }
    let o = &r.overall;
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "scenarios              {} ({} with a fault)",
        o.scenarios, o.fault_scenarios
    );
    let _ = writeln!(out, "recall                 {}", pct(o.recall));
    let _ = writeln!(out, "precision              {}", pct(o.precision));
    let _ = writeln!(
        out,
        "false alarms           {} per healthy hour ({:.1} healthy hours)",
        o.false_alarms_per_hour
            .map_or("-".into(), |v| format!("{v:.3}")),
        o.healthy_hours
    );
    let _ = writeln!(
        out,
        "lead time              median {}, p10 {}",
        secs(o.median_lead_s),
        secs(o.p10_lead_s)
    );
    let _ = writeln!(
        out,
        "warned >= 10 min ahead {} of {} faults spanning >= 30 min",
        o.long_faults_warned_10min, o.long_faults
    );
    let _ = writeln!(
        out,
        "ETA error              median {}; the interval holds the truth in {}",
        pct(o.median_abs_eta_error),
        pct(o.eta_interval_coverage)
    );
    if o.labelled_precision.is_some() || o.labelled_true_missed > 0 {
        let _ = writeln!(
            out,
            "operators' labels      precision {}; {} problem(s) labelled true raise no alert now",
            pct(o.labelled_precision),
            o.labelled_true_missed
        );
    }
    let _ = writeln!(out, "alerts in warm-up      {}", o.warmup_alerts);
    let _ = writeln!(out, "drift events           {}", o.drift_events);
    let _ = writeln!(out, "speed                  {:.0}x real time", o.speedup);
    out
}

#[cfg(test)]
mod tests;
