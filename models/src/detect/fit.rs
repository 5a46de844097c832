//! The fits the trend detector forecasts with: a robust line (Theil–Sen), a
//! least-squares quadratic, and their crossings of a limit.

pub(super) fn median(v: &mut [f64]) -> f64 {
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
pub(super) fn first_crossing(a: f64, b: f64, c: f64, level: f64) -> Option<f64> {
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

/// Exponential growth `y = base + amp·e^(k·τ)` (τ = t − `t_now`, k > 0) fitted by
/// least squares: `k` on a grid refined around its best point, `base` and `amp`
/// exact for each `k`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Exponential {
    pub base: f64,
    pub amp: f64,
    pub k: f64,
    pub rss: f64,
}

impl Quadratic {
    /// The first τ > 0 where the curve reaches `level`, if it gets there.
    pub fn crossing(&self, level: f64) -> Option<f64> {
        first_crossing(self.a, self.b, self.c, level)
    }

    pub fn curve(&self) -> Curve {
        Curve::Quadratic {
            a: self.a,
            b: self.b,
            c: self.c,
        }
    }
}

impl Exponential {
    /// The first τ > 0 where the curve reaches `level`, if it gets there.
    pub fn crossing(&self, level: f64) -> Option<f64> {
        let r = (level - self.base) / self.amp;
        let t = r.ln() / self.k;
        (r > 0.0 && t > 0.0 && t.is_finite()).then_some(t)
    }

    pub fn curve(&self) -> Curve {
        Curve::Growth {
            base: self.base,
            amp: self.amp,
            k: self.k,
        }
    }
}

/// Least squares of `y` on `[1, x]`: (intercept, slope, rss), in one pass (`x` is
/// evaluated once per point; the rss comes from the sums).
fn linear_ls(pts: &[(f64, f64)], x: impl Fn(f64) -> f64) -> Option<(f64, f64, f64)> {
    let n = pts.len() as f64;
    let (mut sx, mut sy, mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(t, y) in pts {
        let u = x(t);
        sx += u;
        sy += y;
        sxx += u * u;
        sxy += u * y;
        syy += y * y;
    }
    let d = n * sxx - sx * sx;
    if d.abs() <= 1e-12 * n * sxx.max(f64::MIN_POSITIVE) {
        return None;
    }
    let slope = (n * sxy - sx * sy) / d;
    let icpt = (sy - slope * sx) / n;
    // At the least-squares solution the residuals are orthogonal to [1, x].
    let rss = (syy - icpt * sy - slope * sxy).max(0.0);
    Some((icpt, slope, rss))
}

/// Fits an [`Exponential`] with a positive growth rate; `None` for fewer than 4
/// points, a zero span, or no growing fit.
pub fn exponential_fit(pts: &[(f64, f64)], t_now: f64) -> Option<Exponential> {
    if pts.len() < 4 {
        return None;
    }
    let span = pts.iter().map(|p| t_now - p.0).fold(0.0, f64::max);
    if span <= 0.0 {
        return None;
    }
    let at = |ks: f64| {
        let k = ks / span;
        linear_ls(pts, |t| (k * (t - t_now)).exp())
            .filter(|&(_, amp, _)| amp > 0.0)
            .map(|(base, amp, rss)| Exponential { base, amp, k, rss })
    };
    // k·span from 0.05 (nearly a line) to 20 (all of the rise at the end).
    const STEPS: i32 = 24;
    let grid = |i: i32| 0.05 * (400.0f64).powf(f64::from(i) / f64::from(STEPS));
    let mut best: Option<(i32, Exponential)> = None;
    for i in 0..=STEPS {
        if let Some(e) = at(grid(i)) {
            if best.is_none_or(|(_, b)| e.rss < b.rss) {
                best = Some((i, e));
            }
        }
    }
    let (i, mut e) = best?;
    // Golden-section refinement between the best point's neighbours (in ln k·span);
    // each step keeps one probe and fits one new one.
    const INV_PHI: f64 = 0.618_033_988_749_895;
    let r = |v: f64| at(v.exp()).map_or(f64::INFINITY, |e| e.rss);
    let (mut lo, mut hi) = (grid(i - 1).ln(), grid(i + 1).ln());
    let (mut m1, mut m2) = (hi - (hi - lo) * INV_PHI, lo + (hi - lo) * INV_PHI);
    let (mut r1, mut r2) = (r(m1), r(m2));
    for _ in 0..20 {
        if r1 < r2 {
            (hi, m2, r2) = (m2, m1, r1);
            m1 = hi - (hi - lo) * INV_PHI;
            r1 = r(m1);
        } else {
            (lo, m1, r1) = (m1, m2, r2);
            m2 = lo + (hi - lo) * INV_PHI;
            r2 = r(m2);
        }
    }
    if let Some(f) = at(((lo + hi) / 2.0).exp()) {
        if f.rss < e.rss {
            e = f;
        }
    }
    Some(e)
}

/// A fitted curve in the feature's units, τ seconds from the evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Curve {
    /// `level + slope·τ`
    Line { level: f64, slope: f64 },
    /// `a + b·τ + c·τ²`
    Quadratic { a: f64, b: f64, c: f64 },
    /// `base + amp·e^(k·τ)`
    Growth { base: f64, amp: f64, k: f64 },
}

impl Curve {
    pub fn at(&self, tau: f64) -> f64 {
        match *self {
            Curve::Line { level, slope } => level + slope * tau,
            Curve::Quadratic { a, b, c } => a + b * tau + c * tau * tau,
            Curve::Growth { base, amp, k } => base + amp * (k * tau).exp(),
        }
    }

    /// The slope at τ = 0.
    pub fn slope_now(&self) -> f64 {
        match *self {
            Curve::Line { slope, .. } => slope,
            Curve::Quadratic { b, .. } => b,
            Curve::Growth { amp, k, .. } => amp * k,
        }
    }

    /// `line`, `quadratic` or `exponential`.
    pub fn model(&self) -> &'static str {
        match self {
            Curve::Line { .. } => "line",
            Curve::Quadratic { .. } => "quadratic",
            Curve::Growth { .. } => "exponential",
        }
    }

    /// The same curve times `sign` (fits run on signed values).
    pub(super) fn times(self, sign: f64) -> Curve {
        match self {
            Curve::Line { level, slope } => Curve::Line {
                level: sign * level,
                slope: sign * slope,
            },
            Curve::Quadratic { a, b, c } => Curve::Quadratic {
                a: sign * a,
                b: sign * b,
                c: sign * c,
            },
            Curve::Growth { base, amp, k } => Curve::Growth {
                base: sign * base,
                amp: sign * amp,
                k,
            },
        }
    }
}

/// A curve with the span (seconds before the evaluation) it was fitted on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    pub curve: Curve,
    pub span_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn theil_sen_resists_outliers() {
        let mut pts: Vec<(f64, f64)> = (0..20).map(|i| (i as f64, 2.0 * i as f64 + 1.0)).collect();
        pts[3].1 = 500.0;
        pts[11].1 = -300.0;
        let mut scratch = Vec::new();
        let (slope, level, _) = theil_sen(&pts, 19.0, &mut scratch).expect("fit");
        assert!((slope - 2.0).abs() < 1e-9);
        assert!((level - 39.0).abs() < 1e-9);
    }
}
