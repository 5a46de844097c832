//! Built-in detectors.
//!
//! Each detector watches one feature of one signal and is evaluated once per window.
//! It returns an [`Evaluation`]: the severity it currently asserts (or none), a score
//! and, for forecasts, an ETA. Turning level changes into alerts (ids, dedup, rate
//! limits) is the alert engine's job, not the detector's.
//!
//! A NaN input (undefined feature, e.g. the kurtosis of a constant window) leaves the
//! detector's state unchanged and yields `None`.
//!
//! Severity order: `Info < Warning < PreFault < Critical`. A PreFault is a *predicted*
//! Critical: more urgent than a Warning (something will break, with an ETA) and less
//! than a Critical (it has not broken yet).

use heapless::Deque;

mod fit;
mod residual;
mod trend;

pub use fit::{Curve, Fit, Quadratic, quadratic_fit, theil_sen};
pub use residual::ResidualSpec;
use residual::ResidualState;
use trend::trend;

/// How bad an alert is. Ordered: `Info < Warning < PreFault < Critical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Info = 0,
    Warning = 1,
    PreFault = 2,
    Critical = 3,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::PreFault => "prefault",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        Some(match s {
            "info" => Severity::Info,
            "warning" => Severity::Warning,
            "prefault" => Severity::PreFault,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
}

/// Which side of a limit is bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Above,
    Below,
}

impl Direction {
    #[inline]
    fn beyond(self, x: f64, limit: f64) -> bool {
        match self {
            Direction::Above => x > limit,
            Direction::Below => x < limit,
        }
    }
    /// Still beyond `limit` once hysteresis `h` is taken into account (for clearing).
    #[inline]
    fn holds(self, x: f64, limit: f64, h: f64) -> bool {
        match self {
            Direction::Above => x > limit - h,
            Direction::Below => x < limit + h,
        }
    }
}

/// What a detector concluded from one window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// The severity the detector asserts now; `None` = normal.
    pub level: Option<Severity>,
    /// Detector-specific score: the feature value (threshold, flat-line), the z-score,
    /// the rate of change, or the forecast ETA in seconds.
    pub score: f64,
    /// The limit the score is compared with.
    pub limit: f64,
    /// When the limit will be crossed (trend detectors, remaining-time models).
    pub forecast: Option<Forecast>,
}

impl Evaluation {
    /// The forecast's predicted seconds until the limit is crossed.
    pub fn eta_s(&self) -> Option<f64> {
        self.forecast.map(|f| f.eta_s)
    }
}

/// A prediction of when the limit will be crossed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Forecast {
    /// Seconds from the evaluation until the crossing (0 once reached).
    pub eta_s: f64,
    /// Earliest and latest seconds (the latest infinite when the trend may as well
    /// be flat).
    pub range_s: Option<(f64, f64)>,
    /// The curve the ETA comes from.
    pub fit: Option<Fit>,
}

/// Threshold with hysteresis and a minimum duration before raising.
#[derive(Clone, Debug, PartialEq)]
pub struct ThresholdSpec {
    pub direction: Direction,
    pub warning: Option<f64>,
    pub critical: Option<f64>,
    /// A raised level clears only once the value is back by this much.
    pub hysteresis: f64,
    /// The condition must hold this long before a level is raised.
    pub min_duration_s: f64,
}

/// EWMA baseline with a z-score test.
#[derive(Clone, Debug, PartialEq)]
pub struct ZScoreSpec {
    /// Baseline smoothing per window (0 < alpha ≤ 1).
    pub alpha: f64,
    pub warning_z: f64,
    pub critical_z: Option<f64>,
    /// Windows used to learn the baseline before any decision.
    pub warmup: u32,
    /// Floor of the baseline's standard deviation (avoids ÷0 on quiet signals).
    pub min_std: f64,
    /// Consecutive anomalous windows before raising.
    pub min_count: u32,
}

/// Robust trend forecast: predicts when a limit will be crossed.
#[derive(Clone, Debug, PartialEq)]
pub struct TrendSpec {
    pub direction: Direction,
    pub limit: f64,
    /// Raise when the predicted crossing is within this horizon.
    pub horizon_s: f64,
    /// How much history the fit uses.
    pub lookback_s: f64,
    /// Points needed before forecasting.
    pub min_points: usize,
    /// Consecutive windows within the horizon before raising.
    pub min_count: u32,
    pub severity: Severity,
}

/// Flat line / stuck sensor: the feature (normally `p2p`) stays at or below `epsilon`.
#[derive(Clone, Debug, PartialEq)]
pub struct FlatLineSpec {
    pub epsilon: f64,
    pub min_duration_s: f64,
    pub severity: Severity,
}

/// Rate of change of the feature between consecutive windows, per second.
#[derive(Clone, Debug, PartialEq)]
pub struct RateOfChangeSpec {
    pub warning: Option<f64>,
    pub critical: Option<f64>,
}

/// Tabular CUSUM (Page): sums the feature's deviations from a baseline learnt over
/// the first `warmup` windows, in baseline standard deviations less `slack` per
/// window, so a small shift that persists (a slow leak, a fouled sensor) adds up
/// where a z-score on single windows never fires.
#[derive(Clone, Debug, PartialEq)]
pub struct CusumSpec {
    /// The side watched; `None` watches both.
    pub direction: Option<Direction>,
    /// Windows that learn the baseline mean and standard deviation.
    pub warmup: u32,
    /// Allowance per window in standard deviations (half the shift to detect).
    pub slack: f64,
    /// Decision intervals: the sum (in standard deviations) that raises a level. The
    /// sums are capped at 1.5 × the highest, so a long shift that ends clears soon.
    pub warning: f64,
    pub critical: Option<f64>,
    /// Floor of the baseline's standard deviation (avoids ÷0 on quiet signals).
    pub min_std: f64,
}

/// Any built-in detector's configuration.
#[derive(Clone, Debug, PartialEq)]
pub enum DetectorSpec {
    Threshold(ThresholdSpec),
    ZScore(ZScoreSpec),
    Trend(TrendSpec),
    FlatLine(FlatLineSpec),
    RateOfChange(RateOfChangeSpec),
    Cusum(CusumSpec),
    Residual(ResidualSpec),
}

impl DetectorSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            DetectorSpec::Threshold(_) => "threshold",
            DetectorSpec::ZScore(_) => "zscore",
            DetectorSpec::Trend(_) => "trend",
            DetectorSpec::FlatLine(_) => "flatline",
            DetectorSpec::RateOfChange(_) => "rate_of_change",
            DetectorSpec::Cusum(_) => "cusum",
            DetectorSpec::Residual(_) => "residual",
        }
    }

    /// Whether [`Detector::evaluate_with`] needs a predictor's value.
    pub fn needs_predictor(&self) -> bool {
        matches!(self, DetectorSpec::Residual(_))
    }
}

/// Capacity of the trend detector's history.
pub const TREND_POINTS: usize = 64;
const TREND_PAIRS: usize = TREND_POINTS * (TREND_POINTS + 1) / 2;

#[derive(Debug)]
enum State {
    Threshold {
        pending_since: Option<f64>,
    },
    ZScore {
        mean: f64,
        var: f64,
        seen: u32,
        streak: u32,
    },
    Trend {
        history: Box<Deque<(f64, f64), TREND_POINTS>>,
        scratch: Vec<f64>,
        streak: u32,
    },
    FlatLine {
        since: Option<f64>,
    },
    RateOfChange {
        prev: Option<(f64, f64)>,
    },
    Cusum(CusumState),
    Residual(ResidualState),
}

/// A running detector. Allocates only at construction.
#[derive(Debug)]
pub struct Detector {
    spec: DetectorSpec,
    level: Option<Severity>,
    state: State,
}

impl Detector {
    pub fn new(spec: DetectorSpec) -> Self {
        let state = match &spec {
            DetectorSpec::Threshold(_) => State::Threshold {
                pending_since: None,
            },
            DetectorSpec::ZScore(_) => State::ZScore {
                mean: 0.0,
                var: 0.0,
                seen: 0,
                streak: 0,
            },
            DetectorSpec::Trend(_) => State::Trend {
                history: Box::new(Deque::new()),
                scratch: Vec::with_capacity(TREND_PAIRS),
                streak: 0,
            },
            DetectorSpec::FlatLine(_) => State::FlatLine { since: None },
            DetectorSpec::RateOfChange(_) => State::RateOfChange { prev: None },
            DetectorSpec::Cusum(_) => State::Cusum(CusumState::default()),
            DetectorSpec::Residual(_) => State::Residual(ResidualState::default()),
        };
        Detector {
            spec,
            level: None,
            state,
        }
    }

    pub fn spec(&self) -> &DetectorSpec {
        &self.spec
    }

    /// The level currently asserted.
    pub fn level(&self) -> Option<Severity> {
        self.level
    }

    /// Forgets what the detector learnt about normal (baselines, trend history,
    /// pending durations) and keeps its level: after a change of operating regime
    /// (a start, a load step) the old normal no longer applies, and an alert that
    /// is open stays open until the detector judges again.
    pub fn relearn(&mut self) {
        match &mut self.state {
            State::Threshold { pending_since } => *pending_since = None,
            State::ZScore { seen, streak, .. } => (*seen, *streak) = (0, 0),
            State::Trend {
                history, streak, ..
            } => {
                history.clear();
                *streak = 0;
            }
            State::FlatLine { since } => *since = None,
            State::RateOfChange { prev } => *prev = None,
            State::Cusum(c) => *c = CusumState::default(),
            State::Residual(r) => r.relearn(self.level.is_some()),
        }
    }

    /// Feeds the feature value `x` of the window ending at `t` (monotonic seconds).
    pub fn evaluate(&mut self, t: f64, x: f64) -> Option<Evaluation> {
        self.evaluate_with(t, x, f64::NAN)
    }

    /// [`Self::evaluate`] with the predictor's feature value `p` of the same window
    /// (residual detectors; the others ignore it, and a residual detector yields
    /// `None` without one).
    pub fn evaluate_with(&mut self, t: f64, x: f64, p: f64) -> Option<Evaluation> {
        if !x.is_finite() {
            return None;
        }
        let eval = match (&self.spec, &mut self.state) {
            (DetectorSpec::Threshold(s), State::Threshold { pending_since }) => {
                threshold(s, self.level, pending_since, t, x)
            }
            (
                DetectorSpec::ZScore(s),
                State::ZScore {
                    mean,
                    var,
                    seen,
                    streak,
                },
            ) => zscore(s, self.level, mean, var, seen, streak, x),
            (
                DetectorSpec::Trend(s),
                State::Trend {
                    history,
                    scratch,
                    streak,
                },
            ) => trend(s, self.level, history, scratch, streak, t, x),
            (DetectorSpec::FlatLine(s), State::FlatLine { since }) => {
                let level = if x <= s.epsilon {
                    let start = *since.get_or_insert(t);
                    (t - start >= s.min_duration_s).then_some(s.severity)
                } else {
                    *since = None;
                    None
                };
                Evaluation {
                    level,
                    score: x,
                    limit: s.epsilon,
                    forecast: None,
                }
            }
            (DetectorSpec::RateOfChange(s), State::RateOfChange { prev }) => {
                let previous = prev.replace((t, x));
                match previous {
                    Some((pt, px)) if t > pt => {
                        let rate = (x - px) / (t - pt);
                        let level = graded(rate.abs(), s.warning, s.critical, self.level, 0.8);
                        Evaluation {
                            level,
                            score: rate,
                            limit: limit_of(level, s.warning, s.critical),
                            forecast: None,
                        }
                    }
                    _ => return None,
                }
            }
            (DetectorSpec::Cusum(s), State::Cusum(st)) => st.evaluate(s, self.level, x),
            (DetectorSpec::Residual(s), State::Residual(st)) => {
                st.evaluate(s, self.level, t, x, p)?
            }
            _ => unreachable!("detector state always matches its spec"),
        };
        self.level = eval.level;
        Some(eval)
    }
}

fn limit_of(level: Option<Severity>, warning: Option<f64>, critical: Option<f64>) -> f64 {
    match level {
        Some(Severity::Critical) => critical.or(warning),
        _ => warning.or(critical),
    }
    .unwrap_or(f64::NAN)
}

/// Level for a magnitude compared with warning/critical limits; an active level is
/// kept while the magnitude stays above `clear_ratio` × its limit.
fn graded(
    m: f64,
    warning: Option<f64>,
    critical: Option<f64>,
    current: Option<Severity>,
    clear_ratio: f64,
) -> Option<Severity> {
    let raw = if critical.is_some_and(|c| m > c) {
        Some(Severity::Critical)
    } else if warning.is_some_and(|w| m > w) {
        Some(Severity::Warning)
    } else {
        None
    };
    let keep =
        |sev: Severity, lim: Option<f64>| lim.is_some_and(|l| m > l * clear_ratio).then_some(sev);
    match current {
        Some(Severity::Critical) if raw < Some(Severity::Critical) => {
            keep(Severity::Critical, critical)
                .or(raw)
                .or_else(|| keep(Severity::Warning, warning))
        }
        Some(Severity::Warning) if raw.is_none() => keep(Severity::Warning, warning),
        _ => raw,
    }
}

fn threshold(
    s: &ThresholdSpec,
    current: Option<Severity>,
    pending_since: &mut Option<f64>,
    t: f64,
    x: f64,
) -> Evaluation {
    let dir = s.direction;
    let limit = |sev: Severity| match sev {
        Severity::Critical => s.critical,
        _ => s.warning,
    };
    // Highest level whose limit is exceeded right now.
    let mut target = if s.critical.is_some_and(|c| dir.beyond(x, c)) {
        Some(Severity::Critical)
    } else if s.warning.is_some_and(|w| dir.beyond(x, w)) {
        Some(Severity::Warning)
    } else {
        None
    };
    // Hysteresis: an active level (or the warning under a falling critical) holds
    // until the value is back past its limit by `hysteresis`.
    if let Some(cur) = current
        && target < Some(cur)
    {
        for sev in [Severity::Critical, Severity::Warning] {
            if sev <= cur
                && Some(sev) > target
                && limit(sev).is_some_and(|l| dir.holds(x, l, s.hysteresis))
            {
                target = Some(sev);
                break;
            }
        }
    }
    let level = if target > current {
        let since = *pending_since.get_or_insert(t);
        if t - since >= s.min_duration_s {
            *pending_since = None;
            target
        } else {
            current
        }
    } else {
        *pending_since = None;
        target
    };
    Evaluation {
        level,
        score: x,
        limit: level
            .or(target)
            .and_then(limit)
            .or(s.warning)
            .or(s.critical)
            .unwrap_or(f64::NAN),
        forecast: None,
    }
}

fn zscore(
    s: &ZScoreSpec,
    current: Option<Severity>,
    mean: &mut f64,
    var: &mut f64,
    seen: &mut u32,
    streak: &mut u32,
    x: f64,
) -> Evaluation {
    let update = |mean: &mut f64, var: &mut f64, alpha: f64| {
        let diff = x - *mean;
        let incr = alpha * diff;
        *mean += incr;
        *var = (1.0 - alpha) * (*var + diff * incr);
    };
    if *seen == 0 {
        *mean = x;
        *var = 0.0;
    }
    if *seen < s.warmup {
        // Learn quickly during warm-up: cumulative average, then EWMA.
        let alpha = (1.0 / f64::from(*seen + 1)).max(s.alpha);
        update(mean, var, alpha);
        *seen += 1;
        return Evaluation {
            level: None,
            score: 0.0,
            limit: s.warning_z,
            forecast: None,
        };
    }
    let std = var.sqrt().max(s.min_std);
    let z = (x - *mean) / std;
    let raw = graded(z.abs(), Some(s.warning_z), s.critical_z, current, 0.75);
    let level = if raw > current {
        *streak += 1;
        if *streak >= s.min_count.max(1) {
            *streak = 0;
            raw
        } else {
            current
        }
    } else {
        *streak = 0;
        raw
    };
    // While anomalous (raised, or waiting for `min_count`), adapt slowly so a real
    // fault is not learnt as normal at once: one anomalous window learnt at full
    // speed would inflate the variance and hide the next.
    let alpha = if level.is_some() || raw.is_some() {
        s.alpha * 0.1
    } else {
        s.alpha
    };
    update(mean, var, alpha);
    Evaluation {
        level,
        score: z,
        limit: limit_of(level, Some(s.warning_z), s.critical_z),
        forecast: None,
    }
}

/// A CUSUM's baseline (Welford's running mean and squared deviations during
/// warm-up, then frozen) and its two one-sided sums.
#[derive(Debug, Default)]
struct CusumState {
    seen: u32,
    mean: f64,
    m2: f64,
    high: f64,
    low: f64,
}

impl CusumState {
    /// Score: the larger watched sum, negative when it is the downward one.
    fn evaluate(&mut self, s: &CusumSpec, current: Option<Severity>, x: f64) -> Evaluation {
        if self.seen < s.warmup {
            self.seen += 1;
            let d = x - self.mean;
            self.mean += d / f64::from(self.seen);
            self.m2 += d * (x - self.mean);
            return Evaluation {
                level: None,
                score: 0.0,
                limit: s.warning,
                forecast: None,
            };
        }
        let std = (self.m2 / f64::from(self.seen.max(1)))
            .sqrt()
            .max(s.min_std);
        let z = (x - self.mean) / std;
        // Capped, so a long shift that ends clears within a few dozen windows.
        let cap = 1.5 * s.critical.unwrap_or(s.warning);
        self.high = (self.high + z - s.slack).clamp(0.0, cap);
        self.low = (self.low - z - s.slack).clamp(0.0, cap);
        let score = match s.direction {
            Some(Direction::Above) => self.high,
            Some(Direction::Below) => -self.low,
            None if self.low > self.high => -self.low,
            None => self.high,
        };
        let level = graded(score.abs(), Some(s.warning), s.critical, current, 0.5);
        Evaluation {
            level,
            score,
            limit: limit_of(level, Some(s.warning), s.critical),
            forecast: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn th(min_duration_s: f64) -> Detector {
        Detector::new(DetectorSpec::Threshold(ThresholdSpec {
            direction: Direction::Above,
            warning: Some(70.0),
            critical: Some(80.0),
            hysteresis: 2.0,
            min_duration_s,
        }))
    }

    fn levels(d: &mut Detector, xs: &[f64]) -> Vec<Option<Severity>> {
        xs.iter()
            .enumerate()
            .map(|(i, &x)| d.evaluate(i as f64, x).and_then(|e| e.level))
            .collect()
    }

    use Severity::*;

    #[test]
    fn threshold_raises_escalates_and_clears_with_hysteresis() {
        let mut d = th(0.0);
        assert_eq!(
            levels(&mut d, &[60.0, 71.0, 69.0, 67.9, 81.0, 79.0, 77.9, 60.0]),
            vec![
                None,
                Some(Warning),
                Some(Warning),
                None,
                Some(Critical),
                Some(Critical),
                Some(Warning),
                None
            ]
        );
    }

    #[test]
    fn threshold_waits_for_min_duration_before_raising() {
        let mut d = th(2.0);
        assert_eq!(
            levels(&mut d, &[71.0, 71.0, 60.0, 71.0, 71.0, 71.0]),
            vec![None, None, None, None, None, Some(Warning)]
        );
    }

    #[test]
    fn threshold_below_direction() {
        let mut d = Detector::new(DetectorSpec::Threshold(ThresholdSpec {
            direction: Direction::Below,
            warning: Some(4.0),
            critical: None,
            hysteresis: 0.5,
            min_duration_s: 0.0,
        }));
        assert_eq!(
            levels(&mut d, &[5.0, 3.9, 4.4, 4.6]),
            vec![None, Some(Warning), Some(Warning), None]
        );
    }

    #[test]
    fn nan_input_changes_nothing() {
        let mut d = th(0.0);
        d.evaluate(0.0, 75.0);
        assert_eq!(d.evaluate(1.0, f64::NAN), None);
        assert_eq!(d.level(), Some(Warning));
    }

    #[test]
    fn zscore_flags_a_jump_after_warmup_and_not_before() {
        let mut d = Detector::new(DetectorSpec::ZScore(ZScoreSpec {
            alpha: 0.1,
            warning_z: 4.0,
            critical_z: Some(8.0),
            warmup: 20,
            min_std: 1e-6,
            min_count: 1,
        }));
        let mut lv = Vec::new();
        for i in 0..40 {
            let x = 10.0 + if i % 2 == 0 { 0.1 } else { -0.1 };
            lv.push(d.evaluate(i as f64, x).and_then(|e| e.level));
        }
        assert!(lv.iter().all(Option::is_none));
        assert_eq!(d.evaluate(41.0, 10.6).and_then(|e| e.level), Some(Warning));
        assert_eq!(d.evaluate(42.0, 12.0).and_then(|e| e.level), Some(Critical));
    }

    #[test]
    fn trend_predicts_the_crossing_before_it_happens() {
        let mut d = Detector::new(DetectorSpec::Trend(TrendSpec {
            direction: Direction::Above,
            limit: 100.0,
            horizon_s: 30.0,
            lookback_s: 60.0,
            min_points: 5,
            min_count: 1,
            severity: PreFault,
        }));
        // Rises 1/s from 50: crosses 100 at t = 50; horizon 30 s → raise at t ≈ 20.
        let mut first = None;
        for i in 0..50 {
            let e = d.evaluate(i as f64, 50.0 + i as f64);
            if let Some(e) = e
                && e.level == Some(PreFault)
                && first.is_none()
            {
                first = Some((i, e.eta_s()));
            }
        }
        let (at, eta) = first.expect("trend raised");
        assert_eq!(at, 20);
        let eta = eta.expect("eta present");
        assert!((eta - 30.0).abs() < 1e-9, "eta {eta}");
    }

    fn trend_spec(lookback_s: f64, min_points: usize) -> TrendSpec {
        TrendSpec {
            direction: Direction::Above,
            limit: 100.0,
            horizon_s: 1e6,
            lookback_s,
            min_points,
            min_count: 1,
            severity: PreFault,
        }
    }

    /// The last evaluation's (eta, early, late) after feeding `f(t)` every second.
    fn forecast_after(spec: TrendSpec, until: u32, f: impl Fn(f64) -> f64) -> (f64, f64, f64) {
        let mut d = Detector::new(DetectorSpec::Trend(spec));
        let mut last = None;
        for i in 0..=until {
            let t = f64::from(i);
            last = d.evaluate(t, f(t));
        }
        let e = last.expect("evaluated");
        let f = e.forecast.expect("a forecast");
        let (lo, hi) = f.range_s.expect("an interval");
        (f.eta_s, lo, hi)
    }

    #[test]
    fn a_noisy_trend_has_a_wider_eta_interval_than_a_clean_one() {
        let width = |noise: f64| {
            let wobble = |t: f64| noise * (((t as u64 * 7919) % 13) as f64 / 6.0 - 1.0);
            let (eta, lo, hi) =
                forecast_after(trend_spec(60.0, 5), 39, |t| 50.0 + t * 0.5 + wobble(t));
            assert!(lo <= eta && eta <= hi, "{lo} <= {eta} <= {hi}");
            (hi - lo) / eta
        };
        let clean = width(0.0);
        let noisy = width(2.0);
        assert!(
            (clean - 2.0 * 0.1).abs() < 1e-6,
            "a perfect line is only widened by the margin: {clean}"
        );
        assert!(noisy > clean + 0.1, "noise widens it: {noisy}");
    }

    #[test]
    fn trend_ignores_noise_without_drift() {
        let mut d = Detector::new(DetectorSpec::Trend(TrendSpec {
            direction: Direction::Above,
            limit: 10.0,
            horizon_s: 1000.0,
            lookback_s: 100.0,
            min_points: 10,
            min_count: 1,
            severity: PreFault,
        }));
        for i in 0..200 {
            let noise = ((i * 7919) % 13) as f64 / 13.0 - 0.5;
            let e = d.evaluate(i as f64, 5.0 + noise);
            assert_eq!(e.and_then(|e| e.level), None, "at {i}");
        }
    }

    #[test]
    fn an_accelerating_rise_is_forecast_by_the_curve_that_fits_it() {
        // A quadratic rise: y = 50 + 40·(t/1000)² crosses 100 at t = 1118 s, 518 s
        // after t = 600; the line over the last 600 s says ~900 s.
        let (eta, lo, hi) = forecast_after(trend_spec(600.0, 10), 600, |t| {
            50.0 + 40.0 * (t / 1000.0).powi(2)
        });
        assert!((eta - 518.0).abs() < 0.02 * 518.0, "quadratic: {eta}");
        assert!(lo < 518.0 && hi > 518.0 && hi < 900.0, "[{lo}, {hi}]");
        // Exponential growth: y = 50 + e^(t/300) crosses 100 at 300·ln 50 = 1173.6 s.
        let (eta, lo, hi) =
            forecast_after(trend_spec(600.0, 10), 600, |t| 50.0 + (t / 300.0).exp());
        let truth = 300.0 * 50f64.ln() - 600.0;
        assert!(
            (eta - truth).abs() < 0.02 * truth,
            "exponential: {eta} vs {truth}"
        );
        assert!(lo < truth && hi > truth, "[{lo}, {hi}]");
    }

    #[test]
    fn an_accelerating_rise_decides_on_the_line_and_reports_the_curve() {
        // The line enters a 1000 s horizon later than the curve would: the raise
        // waits for the line (healthy swings bend curves), the ETA is the curve's.
        let spec = TrendSpec {
            horizon_s: 700.0,
            ..trend_spec(600.0, 10)
        };
        let mut d = Detector::new(DetectorSpec::Trend(spec));
        let mut first = None;
        for i in 0..=1100 {
            let t = f64::from(i);
            let e = d.evaluate(t, 50.0 + 40.0 * (t / 1000.0).powi(2));
            if first.is_none() && e.is_some_and(|e| e.level.is_some()) {
                first = e.map(|e| (t, e.eta_s()));
            }
        }
        let (t, eta) = first.expect("raised");
        let eta = eta.expect("with an ETA");
        assert!(
            eta < 700.0 && (t + eta - 1118.0).abs() < 20.0,
            "at {t}: {eta}"
        );
    }

    #[test]
    fn a_rise_that_levels_off_below_the_limit_forecasts_no_crossing() {
        let mut d = Detector::new(DetectorSpec::Trend(TrendSpec {
            direction: Direction::Above,
            limit: 80.0,
            horizon_s: 7200.0,
            lookback_s: 1800.0,
            min_points: 10,
            min_count: 1,
            severity: PreFault,
        }));
        // A restart's heating: 40 → 60 with a 900 s time constant.
        for i in 0..=120 {
            let t = i as f64 * 10.0;
            let e = d.evaluate(t, 60.0 - 20.0 * (-t / 900.0).exp());
            assert_eq!(e.and_then(|e| e.level), None, "at {t} s: {e:?}");
        }
    }

    #[test]
    fn zscore_confirms_a_step_over_min_count_windows() {
        let mut d = Detector::new(DetectorSpec::ZScore(ZScoreSpec {
            alpha: 0.05,
            warning_z: 6.0,
            critical_z: None,
            warmup: 30,
            min_std: 0.05,
            min_count: 2,
        }));
        for i in 0..40 {
            d.evaluate(i as f64, 12.0);
        }
        let levels: Vec<_> = (40..44)
            .map(|i| d.evaluate(i as f64, 7.0).and_then(|e| e.level))
            .collect();
        assert_eq!(
            levels,
            vec![None, Some(Warning), Some(Warning), Some(Warning)]
        );
    }

    #[test]
    fn relearning_keeps_the_level_and_takes_the_new_level_as_normal() {
        let mut d = Detector::new(DetectorSpec::ZScore(ZScoreSpec {
            alpha: 0.1,
            warning_z: 4.0,
            critical_z: None,
            warmup: 10,
            min_std: 0.01,
            min_count: 1,
        }));
        for i in 0..30 {
            d.evaluate(i as f64, 10.0 + if i % 2 == 0 { 0.1 } else { -0.1 });
        }
        assert_eq!(d.evaluate(30.0, 13.0).and_then(|e| e.level), Some(Warning));
        // A load step to 13: relearnt, the new level is normal once warmed up.
        d.relearn();
        assert_eq!(d.level(), Some(Warning), "kept until judged again");
        let mut levels = Vec::new();
        for i in 31..60 {
            let x = 13.0 + if i % 2 == 0 { 0.1 } else { -0.1 };
            levels.push(d.evaluate(i as f64, x).and_then(|e| e.level));
        }
        assert!(levels.iter().all(Option::is_none), "{levels:?}");
    }

    #[test]
    fn flatline_needs_min_duration() {
        let mut d = Detector::new(DetectorSpec::FlatLine(FlatLineSpec {
            epsilon: 0.0,
            min_duration_s: 3.0,
            severity: Warning,
        }));
        assert_eq!(
            levels(&mut d, &[0.5, 0.0, 0.0, 0.0, 0.0, 0.2]),
            vec![None, None, None, None, Some(Warning), None]
        );
    }

    #[test]
    fn rate_of_change_grades_absolute_rate() {
        let mut d = Detector::new(DetectorSpec::RateOfChange(RateOfChangeSpec {
            warning: Some(1.0),
            critical: Some(5.0),
        }));
        assert_eq!(
            levels(&mut d, &[0.0, 0.5, 2.0, 10.0, 10.0]),
            vec![None, None, Some(Warning), Some(Critical), None]
        );
    }

    fn cusum(direction: Option<Direction>) -> Detector {
        Detector::new(DetectorSpec::Cusum(CusumSpec {
            direction,
            warmup: 50,
            slack: 0.5,
            warning: 10.0,
            critical: Some(20.0),
            min_std: 1e-9,
        }))
    }

    /// Deterministic noise, uniform in [-√3, √3] (standard deviation 1).
    fn noise(n: usize) -> Vec<f64> {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * 3f64.sqrt()
            })
            .collect()
    }

    #[test]
    fn cusum_finds_a_one_sigma_shift_that_a_zscore_misses() {
        let xs: Vec<f64> = noise(400)
            .into_iter()
            .enumerate()
            .map(|(i, e)| 20.0 + e + if i >= 200 { 1.0 } else { 0.0 })
            .collect();
        let mut c = cusum(None);
        let got = levels(&mut c, &xs);
        assert!(
            got[..200].iter().all(Option::is_none),
            "false alarm before the shift"
        );
        let first = got.iter().position(Option::is_some).expect("shift found");
        assert!((200..240).contains(&first), "found at window {first}");
        assert_eq!(got[399], Some(Critical));

        let mut z = Detector::new(DetectorSpec::ZScore(ZScoreSpec {
            alpha: 0.05,
            warning_z: 4.0,
            critical_z: None,
            warmup: 50,
            min_std: 1e-9,
            min_count: 2,
        }));
        assert!(levels(&mut z, &xs).iter().all(Option::is_none));
    }

    #[test]
    fn cusum_watches_only_its_direction_and_clears_when_the_shift_ends() {
        let xs: Vec<f64> = noise(400)
            .into_iter()
            .enumerate()
            .map(|(i, e)| 20.0 + e - if (150..250).contains(&i) { 2.0 } else { 0.0 })
            .collect();
        assert!(
            levels(&mut cusum(Some(Direction::Above)), &xs)
                .iter()
                .all(Option::is_none)
        );
        let mut below = cusum(Some(Direction::Below));
        let got = levels(&mut below, &xs);
        assert!(got[150..250].iter().any(Option::is_some));
        assert_eq!(got[399], None, "cleared once the signal came back");
        let e = below.evaluate(400.0, 16.0).expect("evaluated");
        assert!(e.score < 0.0, "a downward sum scores negative: {e:?}");
    }

    #[test]
    fn severity_order_puts_prefault_between_warning_and_critical() {
        assert!(Info < Warning && Warning < PreFault && PreFault < Critical);
    }
}
