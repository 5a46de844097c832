//! Scores replays against their labels.
//!
//! Rules (the README's "Detection quality" section states them for users):
//! * an *alert* is a new episode (a `raised` message that does not escalate an open
//!   one); escalations and clears belong to their episode;
//! * in a fault scenario, an alert in `[onset_at, failure_at)` (on the labelled
//!   asset, when one is given) is true; one before the onset, or on another asset,
//!   is false; alerts at or after the failure are not scored;
//! * healthy time is a healthy scenario's whole duration and a fault scenario's time
//!   before its onset (none when the onset is not labelled);
//! * an alert is a *warm-up* alert when its detector had not yet seen enough data
//!   since the start or the last restart: its window once full, plus the windows its
//!   baseline learns from (z-score and CUSUM `warmup`, trend `min_points`, a model's
//!   `confirm` rows).

use std::collections::HashMap;

use edge_models::{DetectorSpec, WindowSpec};
use serde::Serialize;

use super::replay::{Replay, ReplayedAlert};
use super::scenario::Scenario;
use crate::config::Config;
use crate::pipeline::AssetCfg;

/// One scenario's result (the JSON contract's `scenarios[]`).
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub healthy: bool,
    pub kind: Option<String>,
    pub duration_s: f64,
    pub failure_at_s: Option<f64>,
    pub onset_at_s: Option<f64>,
    pub detected: bool,
    pub first_alert_s: Option<f64>,
    pub first_severity: Option<&'static str>,
    pub lead_s: Option<f64>,
    /// (predicted − actual) / actual remaining time at the first true alert with an ETA.
    pub eta_error: Option<f64>,
    /// Whether the actual remaining time fell inside that alert's ETA interval.
    pub eta_in_range: Option<bool>,
    pub true_alerts: u64,
    pub false_alerts: u64,
    pub warmup_alerts: u64,
    pub healthy_hours: f64,
    pub drift_events: u64,
    /// Against the operators' labels (`alert-labels.jsonl`), when the scenario has any.
    pub operator_labels: Option<super::operator::LabelMatch>,
    pub alerts: Vec<ReplayedAlert>,
}

/// The whole run (the JSON contract's `overall`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overall {
    pub scenarios: usize,
    pub fault_scenarios: usize,
    pub recall: Option<f64>,
    pub precision: Option<f64>,
    pub false_alarms_per_hour: Option<f64>,
    pub healthy_hours: f64,
    pub median_lead_s: Option<f64>,
    pub p10_lead_s: Option<f64>,
    pub median_abs_eta_error: Option<f64>,
    /// Of the ETAs scored, the fraction whose interval held the actual remaining time.
    pub eta_interval_coverage: Option<f64>,
    pub warmup_alerts: u64,
    /// Fault scenarios whose onset-to-failure span is at least 30 min.
    pub long_faults: usize,
    /// Of those, the ones whose first alert came at least 10 min before the failure.
    pub long_faults_warned_10min: usize,
    pub drift_events: u64,
    /// Of the replayed alerts matching an operator's `true` or `false` label, the
    /// share labelled `true` (`None` without labels).
    pub labelled_precision: Option<f64>,
    /// Operators' `true` labels that no replayed alert matches.
    pub labelled_true_missed: u64,
    /// Scenario time replayed per second spent replaying (CSV parsing excluded).
    pub speedup: f64,
}

/// Seconds each detector needs before it may judge, by (asset, detector name).
fn warmups(config: &Config, sc: &Scenario) -> HashMap<(String, String), f64> {
    let mut out = HashMap::new();
    for asset in &config.assets {
        let shape = |wi: usize| window_seconds(asset, wi, config, sc);
        for d in &asset.detectors {
            let (span, hop) = shape(d.window);
            let learn = match &d.spec {
                DetectorSpec::ZScore(s) => f64::from(s.warmup) * hop,
                DetectorSpec::Cusum(s) => f64::from(s.warmup) * hop,
                DetectorSpec::Residual(s) => f64::from(s.learn) * hop,
                DetectorSpec::Trend(s) => s.min_points as f64 * hop,
                DetectorSpec::RateOfChange(_) => hop,
                _ => 0.0,
            };
            out.insert((asset.name.to_string(), d.name.to_string()), span + learn);
        }
        let longest = (0..asset.windows.len())
            .map(|wi| shape(wi).0)
            .fold(0.0, f64::max);
        for b in &asset.models {
            let learn = b.every.as_secs_f64() * f64::from(b.confirm.max(1));
            out.insert(
                (asset.name.to_string(), b.name.to_string()),
                longest + learn,
            );
        }
    }
    out
}

/// (span, hop) of window `wi` of `asset` in seconds; a count window is measured
/// with the median sample interval of its signal in the scenario.
fn window_seconds(asset: &AssetCfg, wi: usize, config: &Config, sc: &Scenario) -> (f64, f64) {
    let w = &asset.windows[wi];
    match w.spec {
        WindowSpec::Time {
            size_ns, hop_ns, ..
        } => (size_ns as f64 / 1e9, hop_ns as f64 / 1e9),
        WindowSpec::Count { size, hop } => {
            let name = config.registry.name(w.signal);
            let dt = sc
                .columns
                .iter()
                .position(|c| c == name)
                .map_or(0.0, |c| median_interval(sc, c));
            (size as f64 * dt, hop as f64 * dt)
        }
    }
}

fn median_interval(sc: &Scenario, c: usize) -> f64 {
    let mut last = None;
    let mut gaps: Vec<f64> = Vec::new();
    for (r, &t) in sc.times.iter().enumerate() {
        if sc.value(r, c).is_some() {
            if let Some(l) = last {
                gaps.push(t - l);
            }
            last = Some(t);
        }
    }
    quantile(&mut gaps, 0.5).unwrap_or(0.0)
}

/// The `q` quantile (nearest rank) of `v`, or `None` when empty.
fn quantile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    Some(v[i])
}

/// Scores one replay of `sc`.
pub fn score(config: &Config, sc: &Scenario, replay: Replay) -> ScenarioResult {
    let l = &sc.labels;
    let warm = warmups(config, sc);
    let onset = l.onset_at_s.unwrap_or(0.0);
    let mut r = ScenarioResult {
        name: sc.name.clone(),
        healthy: l.healthy,
        kind: l.kind.clone(),
        duration_s: sc.duration_s(),
        failure_at_s: l.failure_at_s,
        onset_at_s: l.onset_at_s,
        detected: false,
        first_alert_s: None,
        first_severity: None,
        lead_s: None,
        eta_error: None,
        eta_in_range: None,
        true_alerts: 0,
        false_alerts: 0,
        warmup_alerts: 0,
        healthy_hours: match l.failure_at_s {
            None => sc.duration_s() / 3600.0,
            Some(_) => l.onset_at_s.unwrap_or(0.0) / 3600.0,
        },
        drift_events: replay.drift_events,
        operator_labels: (!sc.operator.is_empty())
            .then(|| super::operator::compare(&replay.alerts, &sc.operator)),
        alerts: Vec::new(),
    };
    for a in &replay.alerts {
        if l.failure_at_s.is_some_and(|f| a.t_s >= f) || a.state != "raised" {
            continue;
        }
        let in_fault = l.failure_at_s.is_some()
            && a.t_s >= onset
            && l.asset.as_deref().is_none_or(|x| x == &*a.asset);
        if in_fault
            && r.eta_error.is_none()
            && let (Some(eta), Some(f)) = (a.eta_s, l.failure_at_s)
        {
            let actual = f - a.t_s;
            r.eta_error = (actual > 0.0).then(|| (eta - actual) / actual);
            r.eta_in_range = a
                .eta_range_s
                .filter(|_| actual > 0.0)
                .map(|(lo, hi)| lo <= actual && actual <= hi);
        }
        if !a.new_episode {
            continue;
        }
        let since_start = a.t_s
            - l.restarts_s
                .iter()
                .copied()
                .filter(|&s| s <= a.t_s)
                .fold(0.0, f64::max);
        let needed = warm
            .get(&(a.asset.to_string(), a.detector.to_string()))
            .copied()
            .unwrap_or(0.0);
        if since_start < needed {
            r.warmup_alerts += 1;
        }
        if in_fault {
            r.true_alerts += 1;
            if !r.detected {
                r.detected = true;
                r.first_alert_s = Some(a.t_s);
                r.first_severity = Some(a.severity.as_str());
                r.lead_s = l.failure_at_s.map(|f| f - a.t_s);
            }
        } else {
            r.false_alerts += 1;
        }
    }
    r.alerts = replay.alerts;
    r
}

/// The overall figures of `results`, replayed in `wall_s` seconds.
pub fn overall(results: &[ScenarioResult], wall_s: f64) -> Overall {
    let faults: Vec<&ScenarioResult> = results
        .iter()
        .filter(|r| r.failure_at_s.is_some())
        .collect();
    let trues: u64 = results.iter().map(|r| r.true_alerts).sum();
    let falses: u64 = results.iter().map(|r| r.false_alerts).sum();
    let healthy_hours: f64 = results.iter().map(|r| r.healthy_hours).sum();
    let mut leads: Vec<f64> = faults.iter().filter_map(|r| r.lead_s).collect();
    let mut etas: Vec<f64> = results
        .iter()
        .filter_map(|r| r.eta_error.map(f64::abs))
        .collect();
    let long: Vec<&&ScenarioResult> = faults
        .iter()
        .filter(|r| r.failure_at_s.unwrap_or(0.0) - r.onset_at_s.unwrap_or(0.0) >= 1800.0)
        .collect();
    let replayed: f64 = results.iter().map(|r| r.duration_s).sum();
    Overall {
        scenarios: results.len(),
        fault_scenarios: faults.len(),
        recall: (!faults.is_empty())
            .then(|| faults.iter().filter(|r| r.detected).count() as f64 / faults.len() as f64),
        precision: (trues + falses > 0).then(|| trues as f64 / (trues + falses) as f64),
        false_alarms_per_hour: (healthy_hours > 0.0).then(|| falses as f64 / healthy_hours),
        healthy_hours,
        median_lead_s: quantile(&mut leads, 0.5),
        p10_lead_s: quantile(&mut leads, 0.1),
        median_abs_eta_error: quantile(&mut etas, 0.5),
        eta_interval_coverage: {
            let scored: Vec<bool> = results.iter().filter_map(|r| r.eta_in_range).collect();
            (!scored.is_empty())
                .then(|| scored.iter().filter(|&&b| b).count() as f64 / scored.len() as f64)
        },
        warmup_alerts: results.iter().map(|r| r.warmup_alerts).sum(),
        long_faults: long.len(),
        long_faults_warned_10min: long
            .iter()
            .filter(|r| r.lead_s.is_some_and(|l| l >= 600.0))
            .count(),
        drift_events: results.iter().map(|r| r.drift_events).sum(),
        labelled_precision: {
            let m = results.iter().filter_map(|r| r.operator_labels.as_ref());
            let (t, f) = m.fold((0, 0), |(t, f), m| {
                (t + m.matched_true, f + m.matched_false)
            });
            (t + f > 0).then(|| t as f64 / (t + f) as f64)
        },
        labelled_true_missed: results
            .iter()
            .filter_map(|r| r.operator_labels.as_ref())
            .map(|m| m.true_missed)
            .sum(),
        speedup: if wall_s > 0.0 { replayed / wall_s } else { 0.0 },
    }
}
