//! The UI's plots: server-rendered SVG of a signal's history, a window feature
//! over hours, a detector's evaluations (the last ones, or hours of them), and an
//! alert's evidence.

use std::sync::Arc;

use hyper::StatusCode;

use super::{Query, Response, Site, UiState, alert, param, series, signal, span};
use crate::alert::Alert;
use crate::alert::AlertState;
use crate::alert::trace::{TracePoint, plots_score};
use crate::ingest::history::{Series, Span};
use crate::ops::http::plot::{self, Plot};
use crate::ops::http::routes::{reply, text};
use edge_driver_api::ClockAnchor;

pub(super) fn signal_svg(site: &Site, ui: &Arc<UiState>, q: &Query<'_>) -> Response {
    let ((i, name), sp) = match signal(site, q).and_then(|s| Ok((s, span(q)?))) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let s = series(site, ui, i, sp);
    let unit = site.source.latest.unit(i);
    let mut p = Plot {
        title: format!("{name} (min–max and mean per {}s)", s.bucket_s),
        unit: unit.as_deref(),
        series: Some(&s),
        ..Plot::default()
    };
    // The limits of the alerts open on this signal.
    for a in ui.alerts.active() {
        if a.signals.iter().any(|n| **n == *name)
            && feature_in_signal_units(&a)
            && a.limit.is_finite()
        {
            p.limits.push((
                a.limit,
                plot::severity_colour(a.severity.as_str()),
                format!("{} {}", a.detector, a.severity.as_str()),
            ));
        }
    }
    svg(plot::svg(&p))
}

/// `/plot/detector.svg?asset=&detector=&span=`: a detector's evaluations (its
/// window feature, or its score where its limit applies to the score) and the
/// limit it was held against last: its last ones (`recent`), or the mean per
/// bucket over `[ui] history` (`long`).
pub(super) fn detector_svg(site: &Site, ui: &Arc<UiState>, q: &Query<'_>) -> Response {
    let (asset, detector, sp) = match param(q, "asset", true)
        .and_then(|a| Ok((a, param(q, "detector", true)?, span(q)?)))
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let no_evaluations = || {
        text(
            StatusCode::NOT_FOUND,
            format!(
                "no evaluations of {}/{} in that span yet\n",
                asset.escape_debug(),
                detector.escape_debug()
            ),
        )
    };
    let Some(d) = ui.trace.describe(asset, detector) else {
        return no_evaluations();
    };
    let clock = &site.source.clock;
    let (series, limit, per) = match sp {
        Span::Recent => {
            let points = ui.trace.series(asset, detector);
            let Some(last) = points.last() else {
                return no_evaluations();
            };
            let series = traced_series(&points, d.kind, &clock.anchor());
            (series, last.limit, "per evaluation".to_string())
        }
        Span::Long => {
            let long = ui
                .trace
                .long(asset, detector, clock.mono_ns(), clock.now().wall_ns);
            let Some((shown, limits)) = long.filter(|(s, _)| !s.points.is_empty()) else {
                return no_evaluations();
            };
            let limit = limits.points.iter().rev().find_map(|p| p.3);
            let per = format!("mean per {}s", shown.bucket_s);
            (shown, limit.unwrap_or(f32::NAN), per)
        }
    };
    let what = if plots_score(d.kind) {
        format!("{} score", d.kind)
    } else {
        d.what
    };
    let mut p = Plot {
        title: format!("{asset}/{detector}: {what} ({per})"),
        series: Some(&series),
        ..Plot::default()
    };
    // A trend's score is its ETA; its limit is on the feature.
    if limit.is_finite() {
        p.limits.push((
            f64::from(limit),
            "#d62728",
            format!("limit {}", crate::alert::num(f64::from(limit))),
        ));
    }
    svg(plot::svg(&p))
}

/// `/plot/feature.svg?asset=&signal=&feature=`: a window feature over `[ui]
/// history` (the mean per bucket of the windows that ended in it), whether or
/// not a detector reads it.
pub(super) fn feature_svg(site: &Site, ui: &Arc<UiState>, q: &Query<'_>) -> Response {
    let (asset, signal, feature) = match param(q, "asset", true)
        .and_then(|a| Ok((a, param(q, "signal", true)?, param(q, "feature", true)?)))
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let clock = &site.source.clock;
    let Some(series) =
        ui.features
            .series(asset, signal, feature, clock.mono_ns(), clock.now().wall_ns)
    else {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "no window of {} on {} computes `{}`; /api/signal lists them\n",
                asset.escape_debug(),
                signal.escape_debug(),
                feature.escape_debug()
            ),
        );
    };
    let unit = site
        .source
        .latest
        .find(signal)
        .and_then(|i| site.source.latest.unit(i))
        .filter(|_| feature_keeps_units(feature));
    let p = Plot {
        title: format!(
            "{asset}: {feature}({signal}) per window, mean per {}s",
            series.bucket_s
        ),
        unit: unit.as_deref(),
        series: Some(&series),
        ..Plot::default()
    };
    svg(plot::svg(&p))
}

/// Wall-clock milliseconds of a monotonic instant (signed: a simulation faster
/// than real time stamps ahead of now).
pub(super) fn wall_ms(anchor: &ClockAnchor, mono_ns: u64) -> i64 {
    anchor.at(mono_ns).wall_ns / 1_000_000
}

/// A detector's evaluations as a plot series: its input, or its score where its
/// limit applies to the score.
fn traced_series(points: &[TracePoint], kind: &str, anchor: &ClockAnchor) -> Series {
    Series {
        bucket_s: 0.0,
        points: points
            .iter()
            .map(|p| {
                let v = Some(p.plotted(kind)).filter(|v| v.is_finite());
                (wall_ms(anchor, p.mono_ns), v, v, v)
            })
            .collect(),
    }
}

fn svg(doc: String) -> Response {
    reply(StatusCode::OK, "image/svg+xml", doc)
}

/// Features whose values are on the signal's own scale (comparable with its raw
/// values: a limit on them can be drawn over the signal).
fn on_signal_scale(feature: &str) -> bool {
    let f = feature.split(['(', '[']).next().unwrap_or("");
    matches!(
        f,
        "mean" | "min" | "max" | "last" | "median" | "p95" | "p5" | "p99" | "p1" | "ewma"
    )
}

/// Features in the signal's unit (spreads too).
fn feature_keeps_units(feature: &str) -> bool {
    on_signal_scale(feature) || matches!(feature, "std" | "p2p" | "rms")
}

/// Alerts whose limit is on the signal's own scale.
fn feature_in_signal_units(a: &Alert) -> bool {
    on_signal_scale(&a.feature) || a.kind == "threshold" || a.kind == "trend"
}

/// What an evidence plot draws.
struct Evidence {
    series: Series,
    unit: Option<Arc<str>>,
    /// The alert's limit is in the series' units.
    limit_comparable: bool,
    what: String,
}

/// The detector's own evaluations when they were traced (its feature, or its
/// score where the limit applies to the score), else the first signal's history
/// around the alert.
fn evidence(site: &Site, ui: &UiState, a: &Alert, at: i64, anchor: &ClockAnchor) -> Evidence {
    let traced = ui.trace.series(&a.asset, &a.detector);
    let signal = a.signals.first().and_then(|n| site.source.latest.find(n));
    let unit = signal.and_then(|i| site.source.latest.unit(i));
    if !traced.is_empty() {
        let on_score = plots_score(a.kind);
        return Evidence {
            series: traced_series(&traced, a.kind, anchor),
            unit: (!on_score && feature_in_signal_units(a))
                .then_some(unit)
                .flatten(),
            limit_comparable: true,
            what: if on_score {
                "score per evaluation".into()
            } else {
                format!("{} per window", a.feature)
            },
        };
    }
    // The recent ring while the alert is in it, else the long one.
    let series = signal.map_or_else(Series::default, |i| {
        let recent = series(site, ui, i, Span::Recent);
        match recent.points.first() {
            Some(p) if p.0 <= at => recent,
            _ => series(site, ui, i, Span::Long),
        }
    });
    Evidence {
        series,
        unit,
        limit_comparable: feature_in_signal_units(a),
        what: "the signal around it".into(),
    }
}

/// `/alerts/{id}.svg`: the detector's evaluations (or the signal) around the
/// alert, its limit, the raise (and clear) marks and, for a forecast, the fitted
/// curve, the predicted crossing and its interval.
pub(super) fn alert_svg(site: &Site, ui: &Arc<UiState>, q: &Query<'_>) -> Response {
    let id = q
        .path
        .trim_start_matches("/alerts/")
        .trim_end_matches(".svg");
    let a = match alert(ui, id) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let anchor = site.source.clock.anchor();
    let at = wall_ms(&anchor, a.time.mono_ns);
    let ev = evidence(site, ui, &a, at, &anchor);
    let drawn = ev.limit_comparable && a.limit.is_finite();
    let mut p = Plot {
        title: format!("{}/{}: {} — {}", a.asset, a.detector, a.message, ev.what),
        unit: ev.unit.as_deref(),
        series: Some(&ev.series),
        ..Plot::default()
    };
    if drawn {
        p.limits.push((
            a.limit,
            plot::severity_colour(a.severity.as_str()),
            format!("limit {}", crate::alert::num(a.limit)),
        ));
    }
    for m in ui.alerts.episode(a.episode) {
        let label = match m.state {
            AlertState::Raised => m.severity.as_str().to_string(),
            AlertState::Cleared => "cleared".into(),
        };
        let colour = match m.state {
            AlertState::Raised => plot::severity_colour(m.severity.as_str()),
            AlertState::Cleared => "#7f7f7f",
        };
        p.marks
            .push((wall_ms(&anchor, m.time.mono_ns), colour, label));
    }
    if p.marks.is_empty() {
        p.marks.push((
            at,
            plot::severity_colour(a.severity.as_str()),
            a.severity.as_str().into(),
        ));
    }
    if drawn {
        p.forecast = forecast_path(&a, at);
    }
    svg(plot::svg(&p))
}

/// Points drawn along a fitted curve.
const CURVE_POINTS: u32 = 48;

/// The alert's forecast as drawn: its fitted curve from the start of the fit to
/// the crossing (a straight segment from the feature's value when there is no
/// curve: a model's remaining time), and the crossing's interval.
fn forecast_path(a: &Alert, at: i64) -> Option<plot::ForecastPath> {
    let eta = a.eta_s.filter(|e| e.is_finite())?;
    let ms = |s: f64| at + (s * 1000.0) as i64;
    let path = match a.fit {
        Some(fit) => (0..=CURVE_POINTS)
            .map(|i| {
                let tau = -fit.span_s + (fit.span_s + eta) * f64::from(i) / f64::from(CURVE_POINTS);
                (ms(tau), fit.curve.at(tau))
            })
            .filter(|q| q.1.is_finite())
            .collect(),
        None => {
            let v0 = a
                .features
                .get(&a.feature)
                .copied()
                .filter(|v| v.is_finite())?;
            vec![(at, v0), (ms(eta), a.limit)]
        }
    };
    let range = a
        .eta_range_s
        .map(|(lo, hi)| (ms(lo), hi.is_finite().then(|| ms(hi))));
    Some(plot::ForecastPath {
        path,
        crossing: (ms(eta), a.limit),
        range,
    })
}
