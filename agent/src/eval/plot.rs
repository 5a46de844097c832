//! One SVG timeline per scenario (`eval --plots DIR`): what people look at before
//! they read numbers.
//!
//! A panel per signal (the scenario's values, min/max-downsampled to the plot's
//! width), with the limits of the alerts raised on it; the labelled onset (orange,
//! dashed) and failure (red) across every panel; and an alert strip: one row per
//! detector, a mark per raise coloured by severity (yellow warning, orange
//! prefault, red critical), a grey mark per clear, and for a forecast its
//! predicted crossing (a line from the alert to the crossing it announced, over a
//! band from the earliest to the latest crossing of its interval).
//! Self-contained SVG, no scripts, readable in any browser.

use std::fmt::Write as _;

use super::replay::ReplayedAlert;
use super::scenario::Scenario;
use super::score::ScenarioResult;

const WIDTH: f64 = 1200.0;
const LEFT: f64 = 180.0;
const RIGHT: f64 = 20.0;
const PANEL: f64 = 130.0;
const GAP: f64 = 26.0;
const ROW: f64 = 18.0;

/// Maps scenario seconds to x.
struct Axis {
    span_s: f64,
}

impl Axis {
    fn x(&self, t: f64) -> f64 {
        LEFT + (WIDTH - LEFT - RIGHT) * (t / self.span_s).clamp(0.0, 1.0)
    }
}

fn severity_colour(severity: &str) -> &'static str {
    match severity {
        "critical" => "#d62728",
        "prefault" => "#ff7f0e",
        "warning" => "#e6b800",
        _ => "#1f77b4",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG timeline of `sc` and its result.
pub fn svg(sc: &Scenario, r: &ScenarioResult) -> String {
    let axis = Axis {
        span_s: sc.duration_s().max(1.0),
    };
    let detectors = detector_rows(&r.alerts);
    let strip = ROW * detectors.len().max(1) as f64 + GAP;
    let height = 40.0 + sc.columns.len() as f64 * (PANEL + GAP) + strip + 30.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let title = match (r.healthy, r.failure_at_s) {
        (_, Some(f)) => format!(
            "{} — {} failing at {}",
            sc.name,
            r.kind.as_deref().unwrap_or("fault"),
            crate::alert::human_duration(f)
        ),
        _ => format!("{} — healthy", sc.name),
    };
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="20" font-size="14">{}</text>"#,
        esc(&title)
    );
    let mut y = 40.0;
    for c in 0..sc.columns.len() {
        panel(&mut out, sc, r, c, &axis, y);
        y += PANEL + GAP;
    }
    alert_strip(&mut out, &r.alerts, &detectors, &axis, y);
    labels(&mut out, r, &axis, 40.0, y + strip - GAP);
    time_ticks(&mut out, &axis, y + strip);
    out.push_str("</svg>\n");
    out
}

/// Detectors in order of their first alert: (asset/detector).
fn detector_rows(alerts: &[ReplayedAlert]) -> Vec<String> {
    let mut rows: Vec<String> = Vec::new();
    for a in alerts {
        let key = format!("{}/{}", a.asset, a.detector);
        if !rows.contains(&key) {
            rows.push(key);
        }
    }
    rows
}

/// Column `c`'s values, at most two points (min and max) per pixel column; `None`
/// where the data stops (a dropout: the line breaks there).
fn downsample(sc: &Scenario, c: usize, axis: &Axis) -> Vec<Option<(f64, f64)>> {
    let mut out: Vec<Option<(f64, f64)>> = Vec::new();
    let mut bucket: Option<(i64, f64, f64, f64, f64)> = None; // px, t_min, v_min, t_max, v_max
    let flush = |b: (i64, f64, f64, f64, f64), out: &mut Vec<Option<(f64, f64)>>| {
        let (_, tn, vn, tx, vx) = b;
        if tn <= tx {
            out.extend([Some((tn, vn)), Some((tx, vx))]);
        } else {
            out.extend([Some((tx, vx)), Some((tn, vn))]);
        }
    };
    for (r, &t) in sc.times.iter().enumerate() {
        let Some(v) = sc.value(r, c).filter(|v| v.is_finite()) else {
            if let Some(b) = bucket.take() {
                flush(b, &mut out);
            }
            if out.last().is_some_and(Option::is_some) {
                out.push(None);
            }
            continue;
        };
        let px = axis.x(t) as i64;
        match bucket.as_mut() {
            Some(b) if b.0 == px => {
                if v < b.2 {
                    (b.1, b.2) = (t, v);
                }
                if v > b.4 {
                    (b.3, b.4) = (t, v);
                }
            }
            _ => {
                if let Some(b) = bucket.take() {
                    flush(b, &mut out);
                }
                bucket = Some((px, t, v, t, v));
            }
        }
    }
    if let Some(b) = bucket {
        flush(b, &mut out);
    }
    out
}

fn panel(out: &mut String, sc: &Scenario, r: &ScenarioResult, c: usize, axis: &Axis, top: f64) {
    let pts = downsample(sc, c, axis);
    let name = &sc.columns[c];
    // Limits of the alerts on this signal widen the range so they show.
    let limits: Vec<(f64, &str)> = limit_lines(&r.alerts, name);
    let (lo, hi) = pts
        .iter()
        .flatten()
        .map(|p| p.1)
        .chain(limits.iter().map(|l| l.0))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    } else {
        (lo - 1.0, lo + 1.0)
    };
    let y = |v: f64| top + PANEL * (1.0 - (v - lo) / (hi - lo));
    let right = WIDTH - RIGHT;
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{top}" width="{}" height="{PANEL}" fill="none" stroke="#999"/>"##,
        right - LEFT
    );
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{}">{}</text>"#,
        top - 4.0,
        esc(name)
    );
    for (v, anchor) in [(hi, top + 10.0), (lo, top + PANEL)] {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{anchor}" text-anchor="end">{}</text>"#,
            LEFT - 4.0,
            crate::alert::num((v * 100.0).round() / 100.0)
        );
    }
    for (v, sev) in limits {
        let _ = writeln!(
            out,
            r#"<line x1="{LEFT}" x2="{right}" y1="{0:.1}" y2="{0:.1}" stroke="{1}" stroke-dasharray="2,3"/>"#,
            y(v),
            severity_colour(sev)
        );
    }
    let mut d = String::new();
    let mut pen_down = false;
    for p in &pts {
        let Some((t, v)) = p else {
            pen_down = false;
            continue;
        };
        let pen = if pen_down { " L" } else { " M" };
        let _ = write!(d, "{pen}{:.1},{:.1}", axis.x(*t), y(*v));
        pen_down = true;
    }
    let _ = writeln!(
        out,
        r##"<path d="{d}" fill="none" stroke="#1f77b4" stroke-width="1"/>"##
    );
}

/// (limit, severity) of the raises on `signal` by threshold-like detectors (a
/// forecast's limit too: it is the value it predicts the signal reaches).
fn limit_lines<'a>(alerts: &'a [ReplayedAlert], signal: &str) -> Vec<(f64, &'a str)> {
    let mut out: Vec<(f64, &str)> = Vec::new();
    for a in alerts {
        let on_signal = a.signal.as_deref() == Some(signal);
        let sev = a.severity.as_str();
        if on_signal
            && a.state == "raised"
            && a.limit.is_finite()
            && matches!(a.kind, "threshold" | "trend")
            && !out.iter().any(|(l, s)| *l == a.limit && *s == sev)
        {
            out.push((a.limit, sev));
        }
    }
    out
}

fn alert_strip(out: &mut String, alerts: &[ReplayedAlert], rows: &[String], axis: &Axis, top: f64) {
    let right = WIDTH - RIGHT;
    let _ = writeln!(out, r#"<text x="{LEFT}" y="{}">alerts</text>"#, top - 4.0);
    for (i, row) in rows.iter().enumerate() {
        let y = top + ROW * i as f64 + ROW / 2.0;
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" x2="{right}" y1="{y}" y2="{y}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end" font-size="9">{}</text>"##,
            LEFT - 4.0,
            y + 3.0,
            esc(row.rsplit('/').next().unwrap_or(row))
        );
    }
    for a in alerts {
        let key = format!("{}/{}", a.asset, a.detector);
        let Some(i) = rows.iter().position(|r| *r == key) else {
            continue;
        };
        let y = top + ROW * i as f64 + ROW / 2.0;
        let x = axis.x(a.t_s);
        let colour = if a.state == "cleared" {
            "#aaa"
        } else {
            severity_colour(a.severity.as_str())
        };
        if let (Some((lo, hi)), "raised") = (a.eta_range_s, a.state) {
            let xb = if hi.is_finite() {
                axis.x(a.t_s + hi)
            } else {
                right
            };
            let xa = axis.x(a.t_s + lo);
            let _ = writeln!(
                out,
                r#"<rect class="eta-range" x="{xa:.1}" y="{:.1}" width="{:.1}" height="6" fill="{colour}" fill-opacity="0.3"/>"#,
                y - 3.0,
                (xb - xa).max(1.0)
            );
        }
        if let (Some(eta), "raised") = (a.eta_s, a.state) {
            let _ = writeln!(
                out,
                r#"<line x1="{x:.1}" x2="{:.1}" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="1" stroke-dasharray="4,2"/><circle cx="{:.1}" cy="{y}" r="3" fill="none" stroke="{colour}"/>"#,
                axis.x(a.t_s + eta),
                axis.x(a.t_s + eta)
            );
        }
        let _ = writeln!(
            out,
            r#"<rect x="{:.1}" y="{:.1}" width="3" height="{}" fill="{colour}"><title>{}</title></rect>"#,
            x - 1.5,
            y - ROW / 2.0 + 2.0,
            ROW - 4.0,
            esc(&format!(
                "{} {} at {}: {}",
                a.state,
                a.severity.as_str(),
                crate::alert::human_duration(a.t_s),
                a.message
            ))
        );
    }
}

/// The labelled onset and failure across the whole plot.
fn labels(out: &mut String, r: &ScenarioResult, axis: &Axis, top: f64, bottom: f64) {
    for (t, colour, dash, what) in [
        (r.onset_at_s, "#ff7f0e", "6,4", "onset"),
        (r.failure_at_s, "#d62728", "none", "failure"),
    ] {
        if let Some(t) = t {
            let x = axis.x(t);
            let _ = writeln!(
                out,
                r#"<line x1="{x:.1}" x2="{x:.1}" y1="{top}" y2="{bottom}" stroke="{colour}" stroke-dasharray="{dash}"/><text x="{:.1}" y="{}" fill="{colour}">{what}</text>"#,
                x + 3.0,
                top + 10.0
            );
        }
    }
}

fn time_ticks(out: &mut String, axis: &Axis, y: f64) {
    let step = [60.0, 600.0, 1800.0, 3600.0, 7200.0, 21_600.0, 86_400.0]
        .into_iter()
        .find(|s| axis.span_s / s <= 12.0)
        .unwrap_or(86_400.0);
    let mut t = 0.0;
    while t <= axis.span_s {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" font-size="9">{}</text>"#,
            axis.x(t),
            y + 12.0,
            crate::alert::human_duration(t)
        );
        t += step;
    }
}
