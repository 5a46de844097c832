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
    /// Forecast time until the limit is crossed (seconds), for trend detectors.
    pub eta_s: Option<f64>,
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
        }
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
        }
    }

    /// Feeds the feature value `x` of the window ending at `t` (monotonic seconds).
    pub fn evaluate(&mut self, t: f64, x: f64) -> Option<Evaluation> {
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
                    eta_s: None,
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
                            eta_s: None,
                        }
                    }
                    _ => return None,
                }
            }
            (DetectorSpec::Cusum(s), State::Cusum(st)) => st.evaluate(s, self.level, x),
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
        eta_s: None,
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
            eta_s: None,
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
        eta_s: None,
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
                eta_s: None,
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
            eta_s: None,
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    let mid = n / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    let upper = *m;
    if n % 2 == 1 {
        upper
    } else {
        let lower = v[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + upper) / 2.0
    }
}

/// Theil–Sen fit over `pts`; returns (slope, level at `t_now`, robust residual sigma).
pub fn theil_sen(
    pts: &[(f64, f64)],
    t_now: f64,
    scratch: &mut Vec<f64>,
) -> Option<(f64, f64, f64)> {
    if pts.len() < 2 {
        return None;
    }
    scratch.clear();
    for i in 0..pts.len() {
        for j in i + 1..pts.len() {
            let dt = pts[j].0 - pts[i].0;
            if dt > 0.0 {
                scratch.push((pts[j].1 - pts[i].1) / dt);
            }
        }
    }
    if scratch.is_empty() {
        return None;
    }
    let slope = median(scratch);
    scratch.clear();
    scratch.extend(pts.iter().map(|&(t, y)| y - slope * (t - t_now)));
    let level = median(scratch);
    scratch.clear();
    scratch.extend(
        pts.iter()
            .map(|&(t, y)| (y - (level + slope * (t - t_now))).abs()),
    );
    let sigma = 1.4826 * median(scratch);
    Some((slope, level, sigma))
}

/// A least-squares quadratic `y = a + b·τ + c·τ²` (τ = t − `t_now`) over `pts`,
/// with the residual sums of squares of that quadratic and of the least-squares
/// line, to tell whether the curvature is real.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quadratic {
    pub a: f64,
    pub b: f64,
    pub c: f64,
    pub rss: f64,
    pub rss_line: f64,
}

/// Fits a [`Quadratic`]; `None` for fewer than 4 points or a degenerate spread.
pub fn quadratic_fit(pts: &[(f64, f64)], t_now: f64) -> Option<Quadratic> {
    let n = pts.len();
    if n < 4 {
        return None;
    }
    // Scale τ to about [-1, 0] so the normal equations stay well conditioned.
    let span = pts.iter().map(|p| t_now - p.0).fold(0.0, f64::max);
    if span <= 0.0 {
        return None;
    }
    let (mut s1, mut s2, mut s3, mut s4) = (0.0, 0.0, 0.0, 0.0);
    let (mut y0, mut y1, mut y2) = (0.0, 0.0, 0.0);
    for &(t, y) in pts {
        let u = (t - t_now) / span;
        s1 += u;
        s2 += u * u;
        s3 += u * u * u;
        s4 += u * u * u * u;
        y0 += y;
        y1 += u * y;
        y2 += u * u * y;
    }
    let n = n as f64;
    let det3 = |m: [[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let m = [[n, s1, s2], [s1, s2, s3], [s2, s3, s4]];
    let d = det3(m);
    if d.abs() < 1e-12 * n * n * n {
        return None;
    }
    let with = |col: usize| {
        let mut k = m;
        for (row, v) in k.iter_mut().zip([y0, y1, y2]) {
            row[col] = v;
        }
        det3(k) / d
    };
    let (a, bu, cu) = (with(0), with(1), with(2));
    // The least-squares line, for comparison.
    let dl = n * s2 - s1 * s1;
    let bl = (n * y1 - s1 * y0) / dl;
    let al = (y0 - bl * s1) / n;
    let (mut rss, mut rss_line) = (0.0, 0.0);
    for &(t, y) in pts {
        let u = (t - t_now) / span;
        rss += (y - (a + bu * u + cu * u * u)).powi(2);
        rss_line += (y - (al + bl * u)).powi(2);
    }
    Some(Quadratic {
        a,
        b: bu / span,
        c: cu / (span * span),
        rss,
        rss_line,
    })
}

/// The first τ > 0 where `a + b·τ + c·τ² = level`, if the curve gets there.
fn first_crossing(a: f64, b: f64, c: f64, level: f64) -> Option<f64> {
    let k = a - level;
    if c.abs() < 1e-15 {
        let t = -k / b;
        return (t > 0.0 && t.is_finite()).then_some(t);
    }
    let disc = b * b - 4.0 * c * k;
    if disc < 0.0 {
        return None;
    }
    let r = disc.sqrt();
    let (t1, t2) = ((-b - r) / (2.0 * c), (-b + r) / (2.0 * c));
    let (lo, hi) = if t1 < t2 { (t1, t2) } else { (t2, t1) };
    [lo, hi].into_iter().find(|&t| t > 0.0)
}

/// F statistic above which the quadratic replaces the line: the curvature must
/// explain far more than noise would (window features are autocorrelated, which
/// inflates F, hence a strict bar).
const CURVATURE_F: f64 = 20.0;

/// The predicted time until `gap` is closed: from the robust line, unless a real
/// curvature shows the rise levelling off, when the curve decides (and may predict
/// no crossing at all: a restart's heating settling below the limit).
fn forecast(s: &TrendSpec, pts: &[(f64, f64)], t: f64, toward: f64, gap: f64) -> Option<f64> {
    let sign = match s.direction {
        Direction::Above => 1.0,
        Direction::Below => -1.0,
    };
    let curved = quadratic_fit(pts, t).filter(|q| {
        let dof = pts.len() as f64 - 3.0;
        q.rss > 0.0 && (q.rss_line - q.rss) / (q.rss / dof) > CURVATURE_F
            || q.rss == 0.0 && q.rss_line > 0.0
    });
    let line = gap / toward;
    match curved {
        // Levelling off (curving away from the limit): the curve decides, and may
        // say the limit is never reached (a restart's heating settling).
        Some(q) if sign * q.c < 0.0 => {
            first_crossing(sign * q.a, sign * q.b, sign * q.c, sign * s.limit)
        }
        // Accelerating curves are not extrapolated: on the benchmark they raised
        // forecasts from healthy daily and load swings (README, Detection quality).
        _ => Some(line),
    }
}

fn trend(
    s: &TrendSpec,
    current: Option<Severity>,
    history: &mut Deque<(f64, f64), TREND_POINTS>,
    scratch: &mut Vec<f64>,
    streak: &mut u32,
    t: f64,
    x: f64,
) -> Evaluation {
    // Keep points spaced so that the history spans the lookback.
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
    let none = Evaluation {
        level: None,
        score: f64::NAN,
        limit: s.limit,
        eta_s: None,
    };
    if history.len() < s.min_points.max(2) {
        *streak = 0;
        return none;
    }
    let (a, b) = history.as_slices();
    // The fit needs one contiguous slice; the deque has at most two parts.
    let mut pts: heapless::Vec<(f64, f64), { TREND_POINTS + 1 }> = heapless::Vec::new();
    let _ = pts.extend_from_slice(a);
    let _ = pts.extend_from_slice(b);
    if pts.last().is_none_or(|&(lt, _)| lt < t) {
        let _ = pts.push((t, x));
    }
    let Some((slope, level_now, sigma)) = theil_sen(&pts, t, scratch) else {
        return none;
    };
    let span = pts.last().map(|p| p.0).unwrap_or(t) - pts.first().map(|p| p.0).unwrap_or(t);
    let toward = match s.direction {
        Direction::Above => slope,
        Direction::Below => -slope,
    };
    // The trend must stand out of the noise over the history it was fitted on.
    let significant = toward > 0.0 && toward * span > 3.0 * sigma;
    let gap = match s.direction {
        Direction::Above => s.limit - level_now,
        Direction::Below => level_now - s.limit,
    };
    let eta = if gap <= 0.0 {
        Some(0.0)
    } else if significant {
        forecast(s, &pts, t, toward, gap)
    } else {
        None
    };
    let within = eta.is_some_and(|e| e <= s.horizon_s);
    let still = eta.is_some_and(|e| e <= s.horizon_s * 1.5);
    let level = if current.is_some() && still {
        current
    } else if within {
        *streak += 1;
        if *streak >= s.min_count.max(1) {
            Some(s.severity)
        } else {
            None
        }
    } else {
        *streak = 0;
        None
    };
    Evaluation {
        level,
        score: eta.unwrap_or(f64::INFINITY),
        limit: s.limit,
        eta_s: eta,
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
                first = Some((i, e.eta_s));
            }
        }
        let (at, eta) = first.expect("trend raised");
        assert_eq!(at, 20);
        let eta = eta.expect("eta present");
        assert!((eta - 30.0).abs() < 1e-9, "eta {eta}");
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
    fn quadratic_fit_recovers_its_coefficients_and_roots() {
        let pts: Vec<(f64, f64)> = (0..20)
            .map(|i| {
                let t = 100.0 + i as f64;
                let tau = t - 119.0;
                (t, 3.0 + 0.5 * tau - 0.25 * tau * tau)
            })
            .collect();
        let q = quadratic_fit(&pts, 119.0).expect("fit");
        assert!(
            (q.a - 3.0).abs() < 1e-6 && (q.b - 0.5).abs() < 1e-6 && (q.c + 0.25).abs() < 1e-6,
            "{q:?}"
        );
        assert!(q.rss < 1e-9 && q.rss_line > 1.0);
        assert_eq!(first_crossing(0.0, 1.0, 0.0, 5.0), Some(5.0));
        assert_eq!(first_crossing(0.0, 0.0, 1.0, 4.0), Some(2.0));
        assert_eq!(first_crossing(0.0, 1.0, -1.0, 1.0), None, "peaks at 0.25");
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
    fn theil_sen_resists_outliers() {
        let mut pts: Vec<(f64, f64)> = (0..20).map(|i| (i as f64, 2.0 * i as f64 + 1.0)).collect();
        pts[3].1 = 500.0;
        pts[11].1 = -300.0;
        let mut scratch = Vec::new();
        let (slope, level, _) = theil_sen(&pts, 19.0, &mut scratch).expect("fit");
        assert!((slope - 2.0).abs() < 1e-9);
        assert!((level - 39.0).abs() < 1e-9);
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
