//! Operators' labels in a scenario (`alert-labels.jsonl`: lines of the `[labels]
//! dataset`, as `edge-agent alerts label` wrote them while the history was
//! recorded): how the configuration under test does against what people said
//! of the alerts raised at the time.
//!
//! A replayed alert (a new episode) matches the label of the same asset and
//! detector whose alert was raised within [`MATCH_S`] of it (the nearest). Matched
//! `true` and `false` labels give a precision against the operators; a `true`
//! label no replayed alert matches is a problem the configuration no longer
//! warns of.

use std::path::Path;

use serde::Serialize;

use super::replay::ReplayedAlert;

/// File name of a scenario's operator labels.
pub const FILE: &str = "alert-labels.jsonl";

/// Seconds between a replayed alert and a labelled one that still match.
pub const MATCH_S: f64 = 300.0;

/// One label: which alert (asset, detector, seconds from the scenario's first
/// row) and the verdict (`true`, `false`, `unsure`).
#[derive(Clone, Debug, PartialEq)]
pub struct OperatorLabel {
    pub asset: String,
    pub detector: String,
    pub t_s: f64,
    pub verdict: String,
}

/// Reads `dir`'s labels, if it has any; `start_wall_ns` is the first row's wall
/// time. Errors name `file:line`.
pub fn read(dir: &Path, start_wall_ns: i64) -> Result<Vec<OperatorLabel>, Vec<String>> {
    let path = dir.join(FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!(
                    "{}:{}:{}: not JSON: {e}",
                    path.display(),
                    i + 1,
                    e.column()
                ));
                continue;
            }
        };
        let a = &v["alert"];
        let (Some(asset), Some(detector), Some(wall), Some(verdict)) = (
            a["asset"].as_str(),
            a["detector"].as_str(),
            a["time"]["wall_ns"].as_i64(),
            v["verdict"]
                .as_str()
                .filter(|s| matches!(*s, "true" | "false" | "unsure")),
        ) else {
            errors.push(format!(
                "{}:{}:1: not a label (a line of the [labels] dataset: verdict, alert.asset, alert.detector, alert.time.wall_ns)",
                path.display(),
                i + 1
            ));
            continue;
        };
        out.push(OperatorLabel {
            asset: asset.into(),
            detector: detector.into(),
            t_s: (wall - start_wall_ns) as f64 / 1e9,
            verdict: verdict.into(),
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        errors.truncate(20);
        Err(errors)
    }
}

/// How a scenario's replayed alerts fare against its operator labels.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LabelMatch {
    pub labels: usize,
    /// Replayed alerts matching a label, by its verdict.
    pub matched_true: u64,
    pub matched_false: u64,
    pub matched_unsure: u64,
    /// `true` labels no replayed alert matches.
    pub true_missed: u64,
}

/// Matches new-episode alerts to `labels`, each label at most once.
pub fn compare(alerts: &[ReplayedAlert], labels: &[OperatorLabel]) -> LabelMatch {
    let mut used = vec![false; labels.len()];
    let mut m = LabelMatch {
        labels: labels.len(),
        ..LabelMatch::default()
    };
    for a in alerts.iter().filter(|a| a.new_episode) {
        let nearest = labels
            .iter()
            .enumerate()
            .filter(|(i, l)| {
                !used[*i]
                    && l.asset == *a.asset
                    && l.detector == *a.detector
                    && (l.t_s - a.t_s).abs() <= MATCH_S
            })
            .min_by(|(_, x), (_, y)| (x.t_s - a.t_s).abs().total_cmp(&(y.t_s - a.t_s).abs()));
        if let Some((i, l)) = nearest {
            used[i] = true;
            match l.verdict.as_str() {
                "true" => m.matched_true += 1,
                "false" => m.matched_false += 1,
                _ => m.matched_unsure += 1,
            }
        }
    }
    m.true_missed = labels
        .iter()
        .zip(&used)
        .filter(|(l, u)| !**u && l.verdict == "true")
        .count() as u64;
    m
}
