//! Server-side SVG plots for the UI and for links from central systems: one panel
//! of a signal's history (min–max band and mean), horizontal limit lines, vertical
//! alert marks and a forecast (the fitted curve to the crossing it predicts, and
//! the interval of that crossing). Self-contained SVG, no scripts; every text drawn from device or
//! config data is XML-escaped.

use std::fmt::Write as _;

use crate::ingest::history::{Point, Series};

const W: f64 = 900.0;
const H: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;

/// What one plot shows.
#[derive(Debug, Default)]
pub struct Plot<'a> {
    pub title: String,
    pub unit: Option<&'a str>,
    pub series: Option<&'a Series>,
    /// Horizontal lines: value, colour, label.
    pub limits: Vec<(f64, &'static str, String)>,
    /// Vertical marks: wall ms, colour, label.
    pub marks: Vec<(i64, &'static str, String)>,
    pub forecast: Option<ForecastPath>,
}

/// A forecast as drawn: the fitted curve, the crossing it predicts and when the
/// crossing may come.
#[derive(Debug, Default)]
pub struct ForecastPath {
    /// The fitted curve from the start of its fit to the crossing: (ms, value).
    pub path: Vec<(i64, f64)>,
    /// The predicted crossing: (ms, limit).
    pub crossing: (i64, f64),
    /// The earliest and latest crossing (ms; the latest `None` when unbounded).
    pub range: Option<(i64, Option<i64>)>,
}

pub fn severity_colour(severity: &str) -> &'static str {
    match severity {
        "critical" => "#d62728",
        "prefault" => "#ff7f0e",
        "warning" => "#c9a000",
        _ => "#1f77b4",
    }
}

/// XML text escaping.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

struct Frame {
    t0: i64,
    t1: i64,
    lo: f64,
    hi: f64,
}

impl Frame {
    fn x(&self, t: i64) -> f64 {
        let span = (self.t1 - self.t0).max(1) as f64;
        LEFT + (W - LEFT - RIGHT) * ((t - self.t0) as f64 / span).clamp(0.0, 1.0)
    }
    fn y(&self, v: f64) -> f64 {
        let span = (self.hi - self.lo).max(1e-9);
        TOP + (H - TOP - BOTTOM) * (1.0 - ((v - self.lo) / span).clamp(0.0, 1.0))
    }
}

fn frame(p: &Plot<'_>) -> Frame {
    let pts = p.series.map_or(&[][..], |s| &s.points[..]);
    let mut t0 = pts.first().map_or(0, |q| q.0);
    let mut t1 = pts.last().map_or(1, |q| q.0);
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    let mut see = |v: f64| {
        if v.is_finite() {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    };
    for q in pts {
        for v in [q.1, q.2, q.3].into_iter().flatten() {
            see(f64::from(v));
        }
    }
    p.limits.iter().for_each(|l| see(l.0));
    if let Some(fc) = &p.forecast {
        see(fc.crossing.1);
        t1 = t1.max(fc.crossing.0);
        if let Some((early, late)) = fc.range {
            t1 = t1.max(late.unwrap_or(early));
        }
        // The fitted part of the path lies among the points drawn; its start may
        // reach back before them.
        if let Some(first) = fc.path.first() {
            t0 = t0.min(first.0);
        }
        fc.path.iter().for_each(|q| see(q.1));
    }
    for m in &p.marks {
        t0 = t0.min(m.0);
        t1 = t1.max(m.0);
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    Frame {
        t0,
        t1: t1.max(t0 + 1),
        lo: lo - pad,
        hi: hi + pad,
    }
}

/// `HH:MM:SS` UTC of wall milliseconds.
fn clock(ms: i64) -> String {
    let s = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Compact number for axis labels.
fn num(v: f64) -> String {
    if v.abs() >= 1e5 || (v != 0.0 && v.abs() < 1e-2) {
        format!("{v:.3e}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The SVG document.
pub fn svg(p: &Plot<'_>) -> String {
    let f = frame(p);
    let mut o = String::with_capacity(16 * 1024);
    let _ = write!(
        o,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" font-family="sans-serif" font-size="11"><rect width="{W}" height="{H}" fill="white"/><text x="{LEFT}" y="18" font-size="13">{}</text>"##,
        esc(&p.title)
    );
    axes(&mut o, &f, p.unit);
    if let Some(s) = p.series {
        band(&mut o, &f, s);
        mean(&mut o, &f, s);
    }
    for (v, colour, label) in &p.limits {
        let y = f.y(*v);
        let _ = write!(
            o,
            r#"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="{colour}" stroke-dasharray="6 3"/><text x="{}" y="{:.1}" fill="{colour}" text-anchor="end">{}</text>"#,
            W - RIGHT,
            W - RIGHT - 2.0,
            y - 3.0,
            esc(label)
        );
    }
    if let Some(fc) = &p.forecast {
        forecast(&mut o, &f, fc);
    }
    for (t, colour, label) in &p.marks {
        let x = f.x(*t);
        let _ = write!(
            o,
            r#"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{}" fill="{colour}">{}</text>"#,
            H - BOTTOM,
            x + 3.0,
            TOP + 10.0,
            esc(label)
        );
    }
    o.push_str("</svg>");
    o
}

const FORECAST: &str = "#9467bd";

/// The fitted curve (dashed), the interval of the crossing (a band on the limit)
/// and the predicted crossing (a dot).
fn forecast(o: &mut String, f: &Frame, fc: &ForecastPath) {
    let (tc, vc) = fc.crossing;
    let (xc, yc) = (f.x(tc), f.y(vc));
    if let Some((early, late)) = fc.range {
        let (xa, xb) = (f.x(early), late.map_or(W - RIGHT, |l| f.x(l)));
        let label = match late {
            Some(l) => format!("between {} and {}", clock(early), clock(l)),
            None => format!("from {}", clock(early)),
        };
        let _ = write!(
            o,
            r##"<rect class="eta-range" x="{xa:.1}" y="{:.1}" width="{:.1}" height="10" fill="{FORECAST}" fill-opacity="0.25"/><text x="{xc:.1}" y="{:.1}" fill="{FORECAST}" text-anchor="end">{label}</text>"##,
            yc - 5.0,
            (xb - xa).max(1.0),
            yc + 28.0,
        );
    }
    let mut d = String::new();
    for &(t, v) in &fc.path {
        let _ = write!(d, "{:.1},{:.1} ", f.x(t), f.y(v));
    }
    let _ = write!(
        o,
        r##"<polyline class="forecast" points="{d}" fill="none" stroke="{FORECAST}" stroke-width="2" stroke-dasharray="4 3"/><circle cx="{xc:.1}" cy="{yc:.1}" r="4" fill="{FORECAST}"/><text x="{:.1}" y="{:.1}" fill="{FORECAST}" text-anchor="end">predicted crossing {}</text>"##,
        xc - 6.0,
        yc + 14.0,
        clock(tc)
    );
}

fn axes(o: &mut String, f: &Frame, unit: Option<&str>) {
    let (bottom, right) = (H - BOTTOM, W - RIGHT);
    let _ = write!(
        o,
        r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="#999"/>"##,
        right - LEFT,
        bottom - TOP
    );
    for i in 0..=4 {
        let v = f.lo + (f.hi - f.lo) * f64::from(i) / 4.0;
        let y = f.y(v);
        let _ = write!(
            o,
            r##"<text x="{}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
            LEFT - 4.0,
            y + 4.0,
            num(v)
        );
    }
    for i in 0..=5 {
        let t = f.t0 + (f.t1 - f.t0) * i / 5;
        let _ = write!(
            o,
            r##"<text x="{:.1}" y="{}" text-anchor="middle" fill="#555">{}</text>"##,
            f.x(t),
            bottom + 16.0,
            clock(t)
        );
    }
    let _ = write!(
        o,
        r##"<text x="{right}" y="{}" text-anchor="end" fill="#555">UTC{}</text>"##,
        bottom + 32.0,
        unit.map(|u| format!(" · {}", esc(u))).unwrap_or_default()
    );
}

/// Appends `x,y ` of each point, y read by `pick`.
fn coords<'a>(
    d: &mut String,
    f: &Frame,
    points: impl Iterator<Item = &'a Point>,
    pick: fn(&Point) -> Option<f32>,
) {
    for q in points {
        let _ = write!(
            d,
            "{:.1},{:.1} ",
            f.x(q.0),
            f.y(f64::from(pick(q).unwrap_or(0.0)))
        );
    }
}

/// The min–max band, one polygon per run of non-empty buckets.
fn band(o: &mut String, f: &Frame, s: &Series) {
    for run in runs(s) {
        let mut d = String::new();
        coords(&mut d, f, run.iter(), |q| q.2);
        coords(&mut d, f, run.iter().rev(), |q| q.1);
        let _ = write!(
            o,
            r##"<polygon points="{d}" fill="#1f77b4" fill-opacity="0.18" stroke="none"/>"##
        );
    }
}

fn mean(o: &mut String, f: &Frame, s: &Series) {
    for run in runs(s) {
        let mut d = String::new();
        coords(&mut d, f, run.iter(), |q| q.3);
        let _ = write!(
            o,
            r##"<polyline class="mean" points="{d}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>"##
        );
    }
}

/// Runs of consecutive buckets with data.
fn runs(s: &Series) -> impl Iterator<Item = &[Point]> {
    s.points.split(|q| q.3.is_none()).filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plot_escapes_its_texts_and_draws_gaps_as_gaps() {
        let series = Series {
            bucket_s: 1.0,
            points: vec![
                (1000, Some(1.0), Some(2.0), Some(1.5)),
                (2000, Some(1.0), Some(3.0), Some(2.0)),
                (3000, None, None, None),
                (4000, Some(2.0), Some(2.0), Some(2.0)),
            ],
        };
        let p = Plot {
            title: "<script>alert(1)</script> & co".into(),
            unit: Some("°C\"><x>"),
            series: Some(&series),
            limits: vec![(85.0, "#d62728", "critical 85 <".into())],
            marks: vec![(2500, "#ff7f0e", "prefault".into())],
            forecast: Some(ForecastPath {
                path: vec![(1500, 1.0), (2500, 2.0), (9000, 85.0)],
                crossing: (9000, 85.0),
                range: Some((7000, Some(12_000))),
            }),
        };
        let s = svg(&p);
        assert!(!s.contains("<script>") && !s.contains("<x>"), "{s}");
        assert!(s.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; co"));
        assert_eq!(s.matches("class=\"mean\"").count(), 2, "one line per run");
        assert!(s.contains("predicted crossing 00:00:09"));
        assert!(
            s.contains("between 00:00:07 and 00:00:12"),
            "the ETA's interval"
        );
        assert_eq!(s.matches("class=\"eta-range\"").count(), 1);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
        // Nothing to draw is still a valid document.
        // A series of means only (a long view) sets the frame by its means.
        let means = Series {
            bucket_s: 72.0,
            points: vec![
                (1000, None, None, Some(10.0)),
                (2000, None, None, Some(20.0)),
            ],
        };
        let s = svg(&Plot {
            series: Some(&means),
            limits: vec![(30.0, "#d62728", "limit".into())],
            ..Plot::default()
        });
        let ys: Vec<f64> = s
            .split("class=\"mean\" points=\"")
            .nth(1)
            .and_then(|p| p.split('"').next())
            .map(|p| {
                p.split_whitespace()
                    .filter_map(|xy| xy.split(',').nth(1)?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        assert!(ys.len() == 2 && ys[0] > ys[1], "10 drawn below 20: {ys:?}");
        let empty = svg(&Plot::default());
        assert!(empty.ends_with("</svg>") && !empty.contains("NaN"));
    }
}
