//! `[[assets.detectors]]`: the one table of detector kinds and their readers.
//!
//! A detector kind is its detector in `models/src/detect/`, one row and reader
//! here, and its message in `agent/src/alert/message.rs`.

use std::collections::HashSet;
use std::sync::Arc;

use edge_driver_api::SignalRegistry;
use edge_driver_api::config::{Span, TableReader, closest};
use edge_models::Feature;
use edge_models::detect::{
    CusumSpec, DetectorSpec, Direction, FlatLineSpec, RateOfChangeSpec, ResidualSpec, Severity,
    ThresholdSpec, TrendSpec, ZScoreSpec,
};

use super::assets::{AssetWindow, resolve_signal};
use super::check_name;
use crate::pipeline::DetectorCfg;

/// A detector kind: its name in the config, the feature it reads unless told
/// otherwise, and the reader of its settings.
pub(super) struct DetectorKind {
    pub name: &'static str,
    pub default_feature: &'static str,
    read: fn(&mut TableReader<'_>) -> Option<DetectorSpec>,
}

/// Every detector kind.
const DETECTOR_KINDS: &[DetectorKind] = &[
    DetectorKind {
        name: "threshold",
        default_feature: "mean",
        read: read_threshold,
    },
    DetectorKind {
        name: "zscore",
        default_feature: "mean",
        read: read_zscore,
    },
    DetectorKind {
        name: "trend",
        default_feature: "mean",
        read: read_trend,
    },
    DetectorKind {
        name: "flatline",
        default_feature: "p2p",
        read: read_flatline,
    },
    DetectorKind {
        name: "rate_of_change",
        default_feature: "mean",
        read: read_rate_of_change,
    },
    DetectorKind {
        name: "cusum",
        default_feature: "mean",
        read: read_cusum,
    },
    DetectorKind {
        name: "residual",
        default_feature: "mean",
        read: read_residual,
    },
];

/// The names of every detector kind.
pub fn detector_kinds() -> Vec<&'static str> {
    DETECTOR_KINDS.iter().map(|k| k.name).collect()
}

/// `kind`: one of the table's.
fn read_kind(d: &mut TableReader<'_>) -> Option<&'static DetectorKind> {
    if !d.has("kind") {
        d.table_error("missing required key `kind`")
            .expected(format!("one of: {}", detector_kinds().join(", ")))
            .emit();
        return None;
    }
    let choices: Vec<(&str, &'static DetectorKind)> =
        DETECTOR_KINDS.iter().map(|k| (k.name, k)).collect();
    d.choice("kind", &choices).map(|k| k.value)
}

fn read_direction(d: &mut TableReader<'_>) -> Direction {
    d.choice(
        "direction",
        &[("above", Direction::Above), ("below", Direction::Below)],
    )
    .map(|v| v.value)
    .unwrap_or(Direction::Above)
}

pub(super) fn read_detector(
    d: &mut TableReader<'_>,
    registry: &SignalRegistry,
    windows: &[AssetWindow],
    names: &mut HashSet<String>,
) -> Option<DetectorCfg> {
    let name = d.req_string("name");
    let mut ok = true;
    if let Some(n) = &name {
        ok &= check_name(d, "name", n);
        if !names.insert(n.value.clone()) {
            d.error(
                n.span,
                "name",
                format!("detector name `{}` is used twice in this asset", n.value),
            )
            .hint("detector names identify alerts; make them unique within the asset")
            .emit();
            ok = false;
        }
    }
    let kind = read_kind(d);
    let window = window_of(d, "signal", registry, windows).map(|(w, _)| w);
    let predictor = match kind {
        Some(k) if k.name == "residual" => match window_of(d, "predictor", registry, windows) {
            Some((p, span)) if Some(p) == window => {
                d.error(span, "predictor", "a signal cannot predict itself")
                    .hint("name another signal of this asset whose value explains this one, e.g. the motor current for a pressure")
                    .emit();
                ok = false;
                None
            }
            Some((p, _)) => Some(p),
            None => {
                ok = false;
                None
            }
        },
        _ => None,
    };
    let always = d
        .choice("judge", &[("running", false), ("always", true)])
        .is_some_and(|v| v.value);
    let default_feature = kind.map_or("mean", |k| k.default_feature);
    let feature_s = d.string("feature");
    let feature_name = feature_s
        .as_ref()
        .map(|f| f.value.clone())
        .unwrap_or_else(|| default_feature.to_string());
    let feature = window.and_then(|w| {
        let bands: Vec<&str> = windows[w].bands.iter().map(String::as_str).collect();
        match Feature::parse(&feature_name, &bands) {
            Ok(f) => Some(f),
            Err(msg) => {
                let span = feature_s.as_ref().map(|f| f.span).unwrap_or(d.span());
                let mut b = d
                    .error(span, "feature", msg)
                    .expected(format!("one of: {}", Feature::all_names().join(", ")));
                if let Some(best) = closest(&feature_name, Feature::all_names().into_iter()) {
                    b = b.hint(format!("did you mean `{best}`?"));
                } else if feature_name.starts_with("band:") {
                    b = b.hint("define the band under the signal's `bands = [{ name = ..., lo_hz = ..., hi_hz = ... }]`");
                }
                b.emit();
                None
            }
        }
    });
    let spec = match kind {
        Some(k) => (k.read)(d),
        None => {
            d.skip_unknown_check();
            None
        }
    };
    let (name, window, feature, spec) = (name?, window?, feature?, spec?);
    ok.then(|| DetectorCfg {
        name: Arc::from(name.value.as_str()),
        window,
        feature,
        feature_name,
        spec,
        predictor,
        always,
    })
}

/// `key` (required): a signal with a window in this asset; its window's index and
/// where the key's value is.
fn window_of(
    d: &mut TableReader<'_>,
    key: &'static str,
    registry: &SignalRegistry,
    windows: &[AssetWindow],
) -> Option<(usize, Span)> {
    let sig = d.req_string(key)?;
    resolve_signal(d, key, &sig, registry)?;
    let idx = windows.iter().position(|w| w.signal == sig.value);
    if idx.is_none() {
        d.error(
            sig.span,
            key,
            format!("signal `{}` has no window in this asset", sig.value),
        )
        .hint(format!(
            "add [[assets.signals]] signal = \"{}\" (with its window) to this asset",
            sig.value
        ))
        .emit();
    }
    idx.map(|i| (i, sig.span))
}

fn read_threshold(d: &mut TableReader<'_>) -> Option<DetectorSpec> {
    let mut ok = true;
    let direction = read_direction(d);
    let warning = d.f64("warning");
    let critical = d.f64("critical");
    let hysteresis = d
        .f64_in("hysteresis", 0.0, f64::MAX)
        .map(|v| v.value)
        .unwrap_or(0.0);
    let min_duration = d
        .duration("min_duration")
        .map(|v| v.value.as_secs_f64())
        .unwrap_or(0.0);
    if warning.is_none() && critical.is_none() && !d.has("warning") && !d.has("critical") {
        d.table_error("a threshold detector needs `warning`, `critical` or both")
            .hint("e.g. warning = 75.0, critical = 85.0")
            .emit();
        ok = false;
    }
    if let (Some(w), Some(c)) = (&warning, &critical) {
        let wrong = match direction {
            Direction::Above => w.value >= c.value,
            Direction::Below => w.value <= c.value,
        };
        if wrong {
            let rel = if direction == Direction::Above {
                "below"
            } else {
                "above"
            };
            d.error(
                c.span,
                "critical",
                format!(
                    "critical limit {} is not beyond the warning limit {}",
                    c.value, w.value
                ),
            )
            .expected(format!(
                "for direction = \"{}\" the warning limit lies {rel} the critical one",
                if direction == Direction::Above {
                    "above"
                } else {
                    "below"
                }
            ))
            .hint("swap the limits, or set direction = \"below\" for low-limit alarms")
            .emit();
            ok = false;
        }
    }
    let spec = DetectorSpec::Threshold(ThresholdSpec {
        direction,
        warning: warning.map(|v| v.value),
        critical: critical.map(|v| v.value),
        hysteresis,
        min_duration_s: min_duration,
    });
    ok.then_some(spec)
}

fn read_zscore(d: &mut TableReader<'_>) -> Option<DetectorSpec> {
    let mut ok = true;
    let warning_z = d
        .f64_in("warning_z", 0.1, 1e6)
        .map(|v| v.value)
        .unwrap_or(4.0);
    let critical_z = d.f64_in("critical_z", 0.1, 1e6);
    if let Some(c) = &critical_z
        && c.value <= warning_z
    {
        d.error(
            c.span,
            "critical_z",
            "`critical_z` must be larger than `warning_z`",
        )
        .emit();
        ok = false;
    }
    let spec = DetectorSpec::ZScore(ZScoreSpec {
        alpha: d
            .f64_in("alpha", 1e-6, 1.0)
            .map(|v| v.value)
            .unwrap_or(0.05),
        warning_z,
        critical_z: critical_z.map(|v| v.value),
        warmup: d
            .int_in("warmup", 1, 1_000_000)
            .map(|v| v.value as u32)
            .unwrap_or(30),
        min_std: d
            .f64_in("min_std", 0.0, f64::MAX)
            .map(|v| v.value)
            .unwrap_or(1e-9),
        min_count: d
            .int_in("min_count", 1, 1_000_000)
            .map(|v| v.value as u32)
            .unwrap_or(2),
    });
    ok.then_some(spec)
}

fn read_trend(d: &mut TableReader<'_>) -> Option<DetectorSpec> {
    let direction = read_direction(d);
    let limit = d.req_f64("limit");
    let horizon = d.req_duration("horizon");
    let lookback = d
        .duration("lookback")
        .map(|v| v.value.as_secs_f64())
        .unwrap_or(3600.0);
    let severity = d
        .choice(
            "severity",
            &[
                ("warning", Severity::Warning),
                ("prefault", Severity::PreFault),
                ("critical", Severity::Critical),
            ],
        )
        .map(|v| v.value)
        .unwrap_or(Severity::PreFault);
    let min_points = d
        .int_in("min_points", 3, 64)
        .map(|v| v.value as usize)
        .unwrap_or(10);
    let min_count = d
        .int_in("min_count", 1, 1_000_000)
        .map(|v| v.value as u32)
        .unwrap_or(3);
    match (limit, horizon) {
        (Some(l), Some(h)) => Some(DetectorSpec::Trend(TrendSpec {
            direction,
            limit: l.value,
            horizon_s: h.value.as_secs_f64(),
            lookback_s: lookback,
            min_points,
            min_count,
            severity,
        })),
        _ => None,
    }
}

fn read_flatline(d: &mut TableReader<'_>) -> Option<DetectorSpec> {
    Some(DetectorSpec::FlatLine(FlatLineSpec {
        epsilon: d
            .f64_in("epsilon", 0.0, f64::MAX)
            .map(|v| v.value)
            .unwrap_or(1e-9),
        min_duration_s: d
            .duration("min_duration")
            .map(|v| v.value.as_secs_f64())
            .unwrap_or(300.0),
        severity: d
            .choice(
                "severity",
                &[
                    ("warning", Severity::Warning),
                    ("critical", Severity::Critical),
                ],
            )
            .map(|v| v.value)
            .unwrap_or(Severity::Warning),
    }))
}

fn read_rate_of_change(d: &mut TableReader<'_>) -> Option<DetectorSpec> {
    let mut ok = true;
    let per = d
        .duration("per")
        .map(|v| v.value.as_secs_f64())
        .unwrap_or(1.0)
        .max(1e-9);
    let warning = d.f64_in("warning", 0.0, f64::MAX).map(|v| v.value / per);
    let critical = d.f64_in("critical", 0.0, f64::MAX).map(|v| v.value / per);
    if warning.is_none() && critical.is_none() && !d.has("warning") && !d.has("critical") {
        d.table_error("a rate_of_change detector needs `warning`, `critical` or both")
            .hint("e.g. warning = 5.0, per = \"1m\"")
            .emit();
        ok = false;
    }
    let spec = DetectorSpec::RateOfChange(RateOfChangeSpec { warning, critical });
    ok.then_some(spec)
}

fn read_cusum(d: &mut TableReader<'_>) -> Option<DetectorSpec> {
    let direction = d
        .choice(
            "direction",
            &[
                ("above", Some(Direction::Above)),
                ("below", Some(Direction::Below)),
                ("both", None),
            ],
        )
        .and_then(|v| v.value);
    let warning = d.f64_in("warning", 0.1, 1e6).map_or(10.0, |v| v.value);
    let critical = d.f64_in("critical", 0.1, 1e6);
    if let Some(c) = &critical
        && c.value <= warning
    {
        d.error(
            c.span,
            "critical",
            "`critical` must be larger than `warning`",
        )
        .hint("both are sums in baseline standard deviations, e.g. warning = 10, critical = 20")
        .emit();
        return None;
    }
    Some(DetectorSpec::Cusum(CusumSpec {
        direction,
        warmup: d
            .int_in("warmup", 2, 1_000_000)
            .map_or(30, |v| v.value as u32),
        slack: d.f64_in("slack", 0.0, 1e6).map_or(0.5, |v| v.value),
        warning,
        critical: critical.map(|v| v.value),
        min_std: d.f64_in("min_std", 0.0, f64::MAX).map_or(1e-9, |v| v.value),
    }))
}

/// `direction`, `warning`/`critical` as distances from the expected value (the
/// limits lie below it for `direction = "below"`), `hysteresis`, `min_duration`,
/// `learn` (windows per anchor) and an optional fixed `slope`.
fn read_residual(d: &mut TableReader<'_>) -> Option<DetectorSpec> {
    let direction = read_direction(d);
    let warning = d.f64_in("warning", 0.0, f64::MAX);
    let critical = d.f64_in("critical", 0.0, f64::MAX);
    if warning.is_none() && critical.is_none() && !d.has("warning") && !d.has("critical") {
        d.table_error("a residual detector needs `warning`, `critical` or both")
            .hint("distances from the value the predictor explains, in the signal's units, e.g. warning = 0.8, critical = 1.5")
            .emit();
        return None;
    }
    if let (Some(w), Some(c)) = (&warning, &critical)
        && c.value <= w.value
    {
        d.error(
            c.span,
            "critical",
            "`critical` must be larger than `warning`",
        )
        .hint("both are distances from the expected value, e.g. warning = 0.8, critical = 1.5")
        .emit();
        return None;
    }
    let sign = if direction == Direction::Below {
        -1.0
    } else {
        1.0
    };
    Some(DetectorSpec::Residual(ResidualSpec {
        limits: ThresholdSpec {
            direction,
            warning: warning.map(|v| sign * v.value),
            critical: critical.map(|v| sign * v.value),
            hysteresis: d
                .f64_in("hysteresis", 0.0, f64::MAX)
                .map_or(0.0, |v| v.value),
            min_duration_s: d
                .duration("min_duration")
                .map_or(0.0, |v| v.value.as_secs_f64()),
        },
        learn: d
            .int_in("learn", 1, 1_000_000)
            .map_or(10, |v| v.value as u32),
        slope: d.f64("slope").map(|v| v.value),
    }))
}

#[cfg(test)]
mod tests {
    use crate::config::{DEFAULT_CONFIG, parse};

    /// The default config with one more detector on its last asset (the gateway's
    /// own health), and the line of that detector's first key.
    fn with_detector(keys: &str) -> (String, usize) {
        let src = format!(
            "{DEFAULT_CONFIG}\n[[assets.detectors]]\nname = \"mem_shift\"\nsignal = \"host.mem.used_pct\"\n{keys}"
        );
        (src, DEFAULT_CONFIG.lines().count() + 5)
    }

    #[test]
    fn a_cusum_detector_reads_its_keys_and_defaults() {
        let (src, _) = with_detector("kind = \"cusum\"\ndirection = \"below\"\ncritical = 12.0\n");
        let cfg = parse("t.toml", &src).unwrap_or_else(|e| panic!("{e}"));
        let d = cfg
            .assets
            .iter()
            .flat_map(|a| &a.detectors)
            .find(|d| &*d.name == "mem_shift")
            .expect("the detector is configured");
        assert_eq!((d.spec.kind(), d.feature_name.as_str()), ("cusum", "mean"));
        let edge_models::DetectorSpec::Cusum(c) = &d.spec else {
            panic!("{:?}", d.spec)
        };
        assert_eq!(
            (c.direction, c.warmup, c.slack, c.warning, c.critical),
            (
                Some(edge_models::Direction::Below),
                30,
                0.5,
                10.0,
                Some(12.0)
            )
        );
    }

    #[test]
    fn a_cusum_critical_below_its_warning_is_an_error_at_the_key() {
        let (src, first) = with_detector("kind = \"cusum\"\nwarning = 12\ncritical = 4\n");
        let e = parse("t.toml", &src).expect_err("critical below warning");
        let text = e.to_string();
        let at = format!("t.toml:{}:", first + 2);
        assert!(
            text.contains(&at) && text.contains("`critical` must be larger"),
            "expected an error at {at}:\n{text}"
        );
    }

    fn mem_shift(cfg: &crate::config::Config) -> &crate::pipeline::DetectorCfg {
        cfg.assets
            .iter()
            .flat_map(|a| &a.detectors)
            .find(|d| &*d.name == "mem_shift")
            .expect("the detector is configured")
    }

    #[test]
    fn a_residual_detector_reads_its_predictor_and_signed_limits() {
        let (src, _) = with_detector(
            "kind = \"residual\"\npredictor = \"host.disk.root.used_pct\"\ndirection = \"below\"\nwarning = 0.8\ncritical = 1.5\njudge = \"always\"\n",
        );
        let cfg = parse("t.toml", &src).unwrap_or_else(|e| panic!("{e}"));
        let d = mem_shift(&cfg);
        assert_eq!((d.predictor, d.always), (Some(0), true), "the disk window");
        let edge_models::DetectorSpec::Residual(r) = &d.spec else {
            panic!("{:?}", d.spec)
        };
        let l = &r.limits;
        assert_eq!(
            (l.warning, l.critical, r.learn, r.slope),
            (Some(-0.8), Some(-1.5), 10, None)
        );
        assert!(
            !cfg.assets
                .iter()
                .flat_map(|a| &a.detectors)
                .filter(|d| &*d.name != "mem_shift" && &*d.name != "comm_health")
                .any(|d| d.always),
            "judge defaults to running"
        );
    }

    #[test]
    fn a_residual_without_a_usable_predictor_is_an_error_at_the_key() {
        let (src, first) = with_detector("kind = \"residual\"\nwarning = 1\n");
        let text = parse("t.toml", &src).expect_err("no predictor").to_string();
        assert!(text.contains("missing required key `predictor`"), "{text}");
        let (src, first2) =
            with_detector("kind = \"residual\"\npredictor = \"host.mem.used_pct\"\nwarning = 1\n");
        let text = parse("t.toml", &src).expect_err("itself").to_string();
        assert!(text.contains("cannot predict itself"), "{text}");
        let (src, _) =
            with_detector("kind = \"residual\"\npredictor = \"host.cpu.load1\"\nwarning = 1\n");
        let text = parse("t.toml", &src).expect_err("no window").to_string();
        let at = format!("t.toml:{}:", first + 1);
        assert!(
            text.contains(&at)
                && (text.contains("has no window") || text.contains("unknown signal")),
            "expected an error at {at}:\n{text}"
        );
        let (src, _) = with_detector(
            "kind = \"threshold\"\npredictor = \"host.disk.root.used_pct\"\nwarning = 1\n",
        );
        let text = parse("t.toml", &src)
            .expect_err("only residuals")
            .to_string();
        assert!(text.contains("predictor"), "{text}");
        assert_eq!(first, first2);
    }
}
