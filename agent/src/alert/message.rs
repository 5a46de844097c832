//! What alerts say: the human message of each detector kind and model alert,
//! system alerts about the agent itself, and the formatting they share.

use std::collections::BTreeMap;
use std::sync::Arc;

use edge_driver_api::Timestamp;
use edge_models::{Evaluation, Severity};

use super::{ALERT_SCHEMA_VERSION, Alert, AlertId, AlertState, AlertTime, DetectorInfo};

/// An alert about the agent itself (e.g. its journal cannot store alerts). Its asset
/// is the agent id, its detector the component, its kind `system`.
#[allow(clippy::too_many_arguments)]
pub fn system_alert(
    agent_id: &Arc<str>,
    id: AlertId,
    episode: AlertId,
    component: &str,
    severity: Severity,
    state: AlertState,
    message: String,
    now: Timestamp,
) -> Alert {
    Alert {
        v: ALERT_SCHEMA_VERSION,
        id,
        episode,
        agent_id: agent_id.clone(),
        asset: agent_id.clone(),
        detector: Arc::from(component),
        kind: "system",
        signals: vec![Arc::from(format!("agent.{component}").as_str())],
        feature: "health".into(),
        severity,
        previous_severity: None,
        state,
        score: f64::NAN,
        limit: f64::NAN,
        eta_s: None,
        eta_range_s: None,
        fit: None,
        message,
        features: BTreeMap::new(),
        time: AlertTime::at(now),
        model: None,
    }
}

/// `1h 23m`, `4m 10s`, `12s`.
pub fn human_duration(secs: f64) -> String {
    if !secs.is_finite() {
        return "never".into();
    }
    let s = secs.max(0.0).round() as u64;
    let (d, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {sec:02}s")
    } else {
        format!("{sec}s")
    }
}

/// ", between 40m 00s and 1h 10m" (", at the earliest 40m 00s" when unbounded).
fn eta_interval((lo, hi): (f64, f64)) -> String {
    if hi.is_finite() {
        format!(
            ", between {} and {}",
            human_duration(lo),
            human_duration(hi)
        )
    } else {
        format!(", at the earliest {}", human_duration(lo))
    }
}

/// A number for humans: up to 4 decimals without trailing zeros, scientific
/// notation for very small or very large magnitudes.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v == 0.0 {
        return "0".into();
    }
    if v.abs() < 1e-3 || v.abs() >= 1e7 {
        return format!("{v:e}");
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

pub(super) fn message(
    info: &DetectorInfo,
    eval: &Evaluation,
    severity: Severity,
    state: AlertState,
) -> String {
    let (score, limit) = (num(eval.score), num(eval.limit));
    if let Some(m) = &info.model {
        let who = format!("model {} {}", m.model.name, m.model.version);
        return match (info.kind, state) {
            ("model_health", AlertState::Raised) => format!(
                "{who} is quarantined: {}; {} keeps only its built-in detectors",
                m.note, info.asset
            ),
            ("model_health", AlertState::Cleared) => format!("{who} is back in service"),
            (_, AlertState::Cleared) => {
                format!("{who}: {} back to normal ({score})", m.meaning)
            }
            _ => match eval.eta_s() {
                Some(eta) if m.meaning == "remaining_time_s" => format!(
                    "{who}: {} left (limit {}, {})",
                    human_duration(eta),
                    human_duration(eval.limit),
                    severity.as_str()
                ),
                _ => format!(
                    "{who}: {} = {score} beyond {} limit {limit}",
                    m.meaning,
                    severity.as_str()
                ),
            },
        };
    }
    let what = format!("{}({})", info.feature_name, info.signal);
    if state == AlertState::Cleared {
        return format!("{what} back to normal ({} score {score})", info.kind);
    }
    match info.kind {
        "trend" => match eval.eta_s() {
            Some(eta) if eta <= 0.0 => format!("{what} has reached the limit {limit}"),
            Some(eta) => format!(
                "{what} predicted to cross {limit} in {}{} ({})",
                human_duration(eta),
                eval.forecast
                    .and_then(|f| f.range_s)
                    .map(eta_interval)
                    .unwrap_or_default(),
                severity.as_str()
            ),
            None => format!("{what} trending towards {limit}"),
        },
        "zscore" => format!("{what} is anomalous: z = {score} (limit {limit})"),
        "flatline" => format!("{what} = {score} ≤ {limit}: signal is flat, sensor may be stuck"),
        "rate_of_change" => format!("{what} changes at {score}/s (limit {limit}/s)"),
        "cusum" => format!(
            "{what} has shifted {} its baseline: CUSUM {} σ (limit {limit} σ)",
            if eval.score < 0.0 { "below" } else { "above" },
            num(eval.score.abs())
        ),
        "residual" => format!(
            "{what} is {} {} what {}({}) predicts (limit {})",
            num(eval.score.abs()),
            if eval.score < 0.0 { "below" } else { "above" },
            info.feature_name,
            info.predictor.as_deref().unwrap_or("its predictor"),
            num(eval.limit.abs())
        ),
        _ => format!(
            "{what} = {score} beyond {} limit {limit}",
            severity.as_str()
        ),
    }
}

/// RFC 3339 UTC with millisecond precision, e.g. `2026-11-22T03:04:05.678Z`.
pub fn rfc3339(wall_ns: i64) -> String {
    let ms = wall_ns.div_euclid(1_000_000);
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use edge_models::Feature;

    use super::*;

    fn info(kind: &'static str) -> DetectorInfo {
        DetectorInfo {
            asset: "pump1".into(),
            name: "leak".into(),
            kind,
            signal: "pump1.pressure".into(),
            feature: Feature::Mean,
            feature_name: "mean".into(),
            band_names: Vec::new(),
            model: None,
            predictor: None,
        }
    }

    #[test]
    fn a_cusum_alert_says_which_way_the_baseline_shifted() {
        let eval = |score| Evaluation {
            level: Some(Severity::Warning),
            score,
            limit: 10.0,
            forecast: None,
        };
        let down = message(
            &info("cusum"),
            &eval(-12.5),
            Severity::Warning,
            AlertState::Raised,
        );
        assert_eq!(
            down,
            "mean(pump1.pressure) has shifted below its baseline: CUSUM 12.5 σ (limit 10 σ)"
        );
        let up = message(
            &info("cusum"),
            &eval(11.0),
            Severity::Warning,
            AlertState::Raised,
        );
        assert!(up.contains("shifted above"), "{up}");
    }

    #[test]
    fn a_residual_alert_names_its_predictor_and_the_side() {
        let mut i = info("residual");
        i.predictor = Some("pump1.current".into());
        let eval = Evaluation {
            level: Some(Severity::Warning),
            score: -1.25,
            limit: -0.8,
            forecast: None,
        };
        assert_eq!(
            message(&i, &eval, Severity::Warning, AlertState::Raised),
            "mean(pump1.pressure) is 1.25 below what mean(pump1.current) predicts (limit 0.8)"
        );
    }
}
