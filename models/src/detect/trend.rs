//! The trend detector: when will the feature cross its limit.
//!
//! Two questions, two answers. *Whether* to raise is decided on the robust line
//! (Theil–Sen over the lookback), which healthy daily and load swings rarely push
//! into the horizon; a rise that a quadratic shows levelling off below the limit
//! predicts no crossing. *When* the crossing comes is reported from the model that
//! fits the lookback best: the line, or, when the rise really accelerates (an F
//! test of the quadratic against the line), the better of a quadratic and an
//! exponential growth. Its interval runs from the earliest crossing a plausible
//! accelerating curve predicts to the crossing at today's rate (the rise stopping
//! to accelerate now), with the line's fit uncertainty, widened by [`ETA_MARGIN`].

use super::fit::{exponential_fit, quadratic_fit, theil_sen};
use super::*;

/// F statistic above which a curve replaces the line: the curvature must explain
/// far more than noise would (window features are autocorrelated, which inflates
/// F, hence a strict bar).
const CURVATURE_F: f64 = 20.0;

/// Relative widening of both ends of the ETA interval: the error of the best
/// curve's first forecasts on the detection-quality benchmark (README, Detection
/// quality), which slow unmodelled swings (ambient, load) cause.
const ETA_MARGIN: f64 = 0.1;

type Points = heapless::Vec<(f64, f64), { TREND_POINTS + 1 }>;

/// What the fits say about the crossing (in signed values).
struct Prediction {
    /// Decides whether to raise: the line's crossing, or a levelling-off curve's.
    decide: Option<f64>,
    /// Reported: the best-fitting model's crossing, its interval and curve.
    reported: Option<Forecast>,
}

impl Prediction {
    fn none() -> Self {
        Prediction {
            decide: None,
            reported: None,
        }
    }

    fn reached() -> Self {
        Prediction {
            decide: Some(0.0),
            reported: Some(Forecast {
                eta_s: 0.0,
                range_s: Some((0.0, 0.0)),
                fit: None,
            }),
        }
    }

    fn at(decide: Option<f64>, eta: f64, range: (f64, f64), curve: Curve, span_s: f64) -> Self {
        Prediction {
            decide,
            reported: Some(Forecast {
                eta_s: eta,
                range_s: Some(range),
                fit: Some(Fit { curve, span_s }),
            }),
        }
    }
}

/// The forecast of a significant rising trend (`line`); `pts` are signed so that
/// the limit is above them.
fn forecast(pts: &[(f64, f64)], t: f64, limit: f64, line: LineFit) -> Prediction {
    let q = quadratic_fit(pts, t);
    let curved = q.filter(|q| {
        let dof = pts.len() as f64 - 3.0;
        q.rss > 0.0 && (q.rss_line - q.rss) / (q.rss / dof) > CURVATURE_F
            || q.rss == 0.0 && q.rss_line > 0.0
    });
    let at_line = line.gap / line.toward;
    let (lo, hi) = line.bounds(pts);
    if let Some(q) = curved.filter(|q| q.c < 0.0) {
        // Levelling off: the curve decides, and may say the limit is never reached
        // (a restart's heating settling).
        return match q.crossing(limit) {
            Some(e) => {
                let range = (e.min(at_line * lo), e.max(at_line * hi));
                Prediction::at(Some(e), e, range, q.curve(), line.span)
            }
            None => Prediction::none(),
        };
    }
    let growth = exponential_fit(pts, t);
    let q_at = q.filter(|q| q.c > 0.0).and_then(|q| q.crossing(limit));
    // A curve is plausible when it fits at least as well as the least-squares line.
    let rss_line = q.map_or(f64::INFINITY, |q| q.rss_line);
    let e_at = growth
        .filter(|g| g.rss <= rss_line)
        .and_then(|g| g.crossing(limit));
    // The accelerating curve that fits best: (rss, crossing, curve).
    let best = curved.and_then(|q| {
        let quad = q_at.map(|at| (q.rss, at, q.curve()));
        let exp = growth.and_then(|g| e_at.map(|at| (g.rss, at, g.curve())));
        match (quad, exp) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    });
    let (eta, late, curve) = match best {
        Some((_, at, c)) if c.slope_now() > 0.0 => {
            (at, at.max((limit - c.at(0.0)) / c.slope_now()), c)
        }
        Some((_, at, c)) => (at, at.max(at_line), c),
        None => (at_line, at_line * hi, line.curve()),
    };
    let early = [Some(eta), Some(at_line * lo), q_at, e_at]
        .into_iter()
        .flatten()
        .fold(f64::INFINITY, f64::min);
    let range = (early * (1.0 - ETA_MARGIN), late * (1.0 + ETA_MARGIN));
    Prediction::at(Some(at_line), eta, range, curve, line.span)
}

/// The robust line: its rate toward the limit, the gap to it, its level now, its
/// residual sigma, and the span it was fitted on.
#[derive(Clone, Copy)]
struct LineFit {
    toward: f64,
    gap: f64,
    level: f64,
    sigma: f64,
    span: f64,
}

impl LineFit {
    fn curve(&self) -> Curve {
        Curve::Line {
            level: self.level,
            slope: self.toward,
        }
    }

    /// The interval of the line's crossing `gap / toward`, as factors of it: the
    /// crossing times of the two-sigma bounds on the fitted level (σ/√n) and slope
    /// (σ/√Σ(t − t̄)²). The late factor is infinite when the slope could be zero.
    fn bounds(&self, pts: &[(f64, f64)]) -> (f64, f64) {
        let n = pts.len() as f64;
        let mean_t = pts.iter().map(|p| p.0).sum::<f64>() / n;
        let stt: f64 = pts.iter().map(|p| (p.0 - mean_t).powi(2)).sum();
        let se_level = self.sigma / n.sqrt();
        let se_slope = self.sigma / stt.sqrt().max(f64::MIN_POSITIVE);
        let line = self.gap / self.toward;
        let early = ((self.gap - 2.0 * se_level).max(0.0) / (self.toward + 2.0 * se_slope)) / line;
        let late = if self.toward > 2.0 * se_slope {
            ((self.gap + 2.0 * se_level) / (self.toward - 2.0 * se_slope)) / line
        } else {
            f64::INFINITY
        };
        (early, late)
    }
}

/// Adds `(t, x)` to the history, spaced so that it spans the lookback, and drops
/// what is older than the lookback.
fn remember(s: &TrendSpec, history: &mut Deque<(f64, f64), TREND_POINTS>, t: f64, x: f64) {
    let spacing = s.lookback_s / (TREND_POINTS - 1) as f64;
    if history.back().is_none_or(|&(lt, _)| t - lt >= spacing) {
        if history.is_full() {
            history.pop_front();
        }
        let _ = history.push_back((t, x));
    }
    while history
        .front()
        .is_some_and(|&(ft, _)| t - ft > s.lookback_s)
    {
        history.pop_front();
    }
}

/// Fits run on values times this, so that the limit lies above them.
fn sign(s: &TrendSpec) -> f64 {
    match s.direction {
        Direction::Above => 1.0,
        Direction::Below => -1.0,
    }
}

/// The history and the point now as one slice, signed so that the limit lies
/// above (`-x` for a `below` detector), with the limit signed alike.
fn signed_points(
    s: &TrendSpec,
    history: &Deque<(f64, f64), TREND_POINTS>,
    t: f64,
    x: f64,
) -> (Points, f64) {
    let sign = sign(s);
    let mut pts = Points::new();
    for &(pt, px) in history.iter() {
        let _ = pts.push((pt, sign * px));
    }
    if pts.last().is_none_or(|&(lt, _)| lt < t) {
        let _ = pts.push((t, sign * x));
    }
    (pts, sign * s.limit)
}

/// What the fits predict over `pts` (signed, the limit above them).
/// `None` when there is nothing to fit.
fn predict(pts: &[(f64, f64)], t: f64, limit: f64, scratch: &mut Vec<f64>) -> Option<Prediction> {
    let (slope, level_now, sigma) = theil_sen(pts, t, scratch)?;
    let gap = limit - level_now;
    if gap <= 0.0 {
        return Some(Prediction::reached());
    }
    let span = pts.last().map_or(t, |p| p.0) - pts.first().map_or(t, |p| p.0);
    // The trend must stand out of the noise over the history it was fitted on.
    if slope <= 0.0 || slope * span <= 3.0 * sigma {
        return Some(Prediction::none());
    }
    let line = LineFit {
        toward: slope,
        gap,
        level: level_now,
        sigma,
        span,
    };
    Some(forecast(pts, t, limit, line))
}

pub(super) fn trend(
    s: &TrendSpec,
    current: Option<Severity>,
    history: &mut Deque<(f64, f64), TREND_POINTS>,
    scratch: &mut Vec<f64>,
    streak: &mut u32,
    t: f64,
    x: f64,
) -> Evaluation {
    remember(s, history, t, x);
    let judged = (history.len() >= s.min_points.max(2))
        .then(|| {
            let (pts, limit) = signed_points(s, history, t, x);
            predict(&pts, t, limit, scratch)
        })
        .flatten();
    let Some(f) = judged else {
        *streak = 0;
        return Evaluation {
            level: None,
            score: f64::NAN,
            limit: s.limit,
            forecast: None,
        };
    };
    let within = f.decide.is_some_and(|e| e <= s.horizon_s);
    let still = f.decide.is_some_and(|e| e <= s.horizon_s * 1.5);
    let level = if current.is_some() && still {
        current
    } else if within {
        *streak += 1;
        (*streak >= s.min_count.max(1)).then_some(s.severity)
    } else {
        *streak = 0;
        None
    };
    // Back to the feature's units.
    let forecast = f.reported.map(|r| Forecast {
        fit: r.fit.map(|fit| Fit {
            curve: fit.curve.times(sign(s)),
            ..fit
        }),
        ..r
    });
    Evaluation {
        level,
        score: forecast.map_or(f64::INFINITY, |r| r.eta_s),
        limit: s.limit,
        forecast,
    }
}
