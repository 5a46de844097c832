//! Window features.
//!
//! Definitions (all over the samples of one [`Frame`]; they match numpy/scipy, see
//! `models/reference/`):
//!
//! | feature | definition |
//! |---|---|
//! | `mean` | arithmetic mean |
//! | `std` | population standard deviation (`numpy.std`, ddof = 0) |
//! | `min`, `max`, `p2p` | minimum, maximum, max − min |
//! | `rms` | √(mean(x²)) |
//! | `skewness` | m3 / m2^1.5 (`scipy.stats.skew`, bias = True) |
//! | `kurtosis` | excess kurtosis m4 / m2² − 3 (`scipy.stats.kurtosis`, fisher, bias = True) |
//! | `crest` | max\|x\| / rms |
//! | `slope` | least-squares slope against sample time, units per second (`numpy.polyfit(t, x, 1)[0]`) |
//! | `ewma` | y₀ = x₀, yᵢ = α·xᵢ + (1−α)·yᵢ₋₁, last y |
//! | `last`, `count` | last value, number of samples |
//! | `band:NAME` | power of the mean-removed signal in `[lo, hi)` Hz: Σ cₖ·\|Xₖ\|²/n² over the rfft bins in the band, cₖ = 1 for DC and Nyquist, 2 otherwise. The bands of a full 0..fs/2 partition sum to the variance (Parseval). The sample rate is taken from the frame's timestamps. |
//!
//! Moments use two passes (mean first) for accuracy. For a constant window `skewness`
//! and `kurtosis` are NaN, as in scipy; detectors skip NaN.
//!
//! The extractor allocates its FFT buffers once; steady state allocates nothing.

use std::collections::HashMap;
use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use crate::window::Frame;

/// Maximum number of frequency bands per signal.
pub const MAX_BANDS: usize = 16;

/// A feature of a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Feature {
    Mean,
    Std,
    Min,
    Max,
    PeakToPeak,
    Rms,
    Skewness,
    Kurtosis,
    CrestFactor,
    Slope,
    Ewma,
    Last,
    Count,
    /// Power in the n-th configured band of the signal.
    Band(u8),
}

/// Scalar features in index order.
pub const SCALAR_FEATURES: [Feature; 13] = [
    Feature::Mean,
    Feature::Std,
    Feature::Min,
    Feature::Max,
    Feature::PeakToPeak,
    Feature::Rms,
    Feature::Skewness,
    Feature::Kurtosis,
    Feature::CrestFactor,
    Feature::Slope,
    Feature::Ewma,
    Feature::Last,
    Feature::Count,
];

impl Feature {
    /// The name used in configuration files (`band:NAME` for bands).
    pub fn name(self) -> &'static str {
        match self {
            Feature::Mean => "mean",
            Feature::Std => "std",
            Feature::Min => "min",
            Feature::Max => "max",
            Feature::PeakToPeak => "p2p",
            Feature::Rms => "rms",
            Feature::Skewness => "skewness",
            Feature::Kurtosis => "kurtosis",
            Feature::CrestFactor => "crest",
            Feature::Slope => "slope",
            Feature::Ewma => "ewma",
            Feature::Last => "last",
            Feature::Count => "count",
            Feature::Band(_) => "band",
        }
    }

    /// Parses a feature name; `band:NAME` resolves against the signal's band names.
    pub fn parse(s: &str, band_names: &[&str]) -> Result<Feature, String> {
        if let Some(band) = s.strip_prefix("band:") {
            return band_names
                .iter()
                .position(|b| *b == band)
                .and_then(|i| u8::try_from(i).ok())
                .map(Feature::Band)
                .ok_or_else(|| {
                    if band_names.is_empty() {
                        format!("no bands are configured for this signal, so `{s}` does not exist")
                    } else {
                        format!("unknown band `{band}` (bands: {})", band_names.join(", "))
                    }
                });
        }
        SCALAR_FEATURES
            .iter()
            .copied()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("unknown feature `{s}`"))
    }

    /// All accepted names, for messages.
    pub fn all_names() -> Vec<&'static str> {
        let mut v: Vec<&'static str> = SCALAR_FEATURES.iter().map(|f| f.name()).collect();
        v.push("band:NAME");
        v
    }

    fn scalar_index(self) -> Option<usize> {
        SCALAR_FEATURES.iter().position(|f| *f == self)
    }
}

/// A frequency band, `[lo_hz, hi_hz)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Band {
    pub name: String,
    pub lo_hz: f64,
    pub hi_hz: f64,
}

/// Per-signal feature settings.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureConfig {
    pub ewma_alpha: f64,
    pub bands: Vec<Band>,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            ewma_alpha: 0.1,
            bands: Vec::new(),
        }
    }
}

/// The features of one window.
#[derive(Clone, Debug)]
pub struct FeatureValues {
    scalars: [f64; SCALAR_FEATURES.len()],
    bands: [f64; MAX_BANDS],
    n_bands: usize,
    /// Monotonic end time of the window (s).
    pub t_end: f64,
}

impl Default for FeatureValues {
    fn default() -> Self {
        FeatureValues {
            scalars: [f64::NAN; SCALAR_FEATURES.len()],
            bands: [f64::NAN; MAX_BANDS],
            n_bands: 0,
            t_end: 0.0,
        }
    }
}

impl FeatureValues {
    /// The value of a feature (NaN if undefined for this window).
    #[inline]
    pub fn get(&self, f: Feature) -> f64 {
        match f {
            Feature::Band(i) => {
                let i = usize::from(i);
                if i < self.n_bands {
                    self.bands[i]
                } else {
                    f64::NAN
                }
            }
            other => other
                .scalar_index()
                .map(|i| self.scalars[i])
                .unwrap_or(f64::NAN),
        }
    }

    /// Band powers in configuration order.
    pub fn bands(&self) -> &[f64] {
        &self.bands[..self.n_bands]
    }

    #[inline]
    fn set(&mut self, f: Feature, v: f64) {
        if let Some(i) = f.scalar_index() {
            self.scalars[i] = v;
        }
    }
}

struct Fft {
    planner: RealFftPlanner<f64>,
    plans: HashMap<usize, Arc<dyn RealToComplex<f64>>>,
    input: Vec<f64>,
    spectrum: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
}

impl std::fmt::Debug for Fft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fft")
            .field("plans", &self.plans.len())
            .finish_non_exhaustive()
    }
}

/// Computes [`FeatureValues`] from frames of one signal.
#[derive(Debug)]
pub struct FeatureExtractor {
    cfg: FeatureConfig,
    fft: Option<Fft>,
}

impl FeatureExtractor {
    /// `max_len` is the largest frame this extractor will see (buffers are sized once).
    pub fn new(cfg: FeatureConfig, max_len: usize) -> Self {
        let fft = (!cfg.bands.is_empty()).then(|| Fft {
            planner: RealFftPlanner::new(),
            plans: HashMap::new(),
            input: Vec::with_capacity(max_len),
            spectrum: Vec::with_capacity(max_len / 2 + 1),
            scratch: Vec::with_capacity(max_len),
        });
        FeatureExtractor { cfg, fft }
    }

    pub fn config(&self) -> &FeatureConfig {
        &self.cfg
    }

    /// Computes all features of `frame` into `out`.
    pub fn compute(&mut self, frame: &Frame, out: &mut FeatureValues) {
        out.t_end = frame.end_secs();
        compute_scalars(&frame.t, &frame.x, self.cfg.ewma_alpha, out);
        out.n_bands = self.cfg.bands.len().min(MAX_BANDS);
        if let Some(fft) = self.fft.as_mut() {
            band_powers(
                fft,
                &self.cfg.bands,
                &frame.t,
                &frame.x,
                out.get(Feature::Mean),
                &mut out.bands,
            );
        }
    }
}

/// The scalar features (everything but bands).
pub fn compute_scalars(t: &[f64], x: &[f64], ewma_alpha: f64, out: &mut FeatureValues) {
    let n = x.len();
    if n == 0 {
        out.scalars = [f64::NAN; SCALAR_FEATURES.len()];
        out.set(Feature::Count, 0.0);
        return;
    }
    let nf = n as f64;
    let mut sum = 0.0;
    let mut tsum = 0.0;
    let mut min = f64::INFINITY;
    let mut max = f64::NEG_INFINITY;
    let mut absmax: f64 = 0.0;
    let mut ew = x[0];
    for (i, (&xi, &ti)) in x.iter().zip(t).enumerate() {
        sum += xi;
        tsum += ti;
        min = min.min(xi);
        max = max.max(xi);
        absmax = absmax.max(xi.abs());
        if i > 0 {
            ew = ewma_alpha * xi + (1.0 - ewma_alpha) * ew;
        }
    }
    let mean = sum / nf;
    let tmean = tsum / nf;
    let (mut m2, mut m3, mut m4, mut sq, mut stx, mut stt) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (&xi, &ti) in x.iter().zip(t) {
        let d = xi - mean;
        let d2 = d * d;
        m2 += d2;
        m3 += d2 * d;
        m4 += d2 * d2;
        sq += xi * xi;
        let dt = ti - tmean;
        stx += dt * d;
        stt += dt * dt;
    }
    m2 /= nf;
    m3 /= nf;
    m4 /= nf;
    let rms = (sq / nf).sqrt();
    // Same degeneracy rule as scipy (`_moment`: `m2 <= (10 * finfo.resolution * mean)²`):
    // a variance within round-off of the mean is a constant window. The sum of n
    // equal values divided by n leaves deviations of a few ulps, whose ratios are
    // garbage (a kurtosis of −2 for a stuck sensor).
    let degenerate = m2 <= (1e-14 * mean).powi(2);
    out.set(Feature::Mean, mean);
    out.set(Feature::Std, m2.sqrt());
    out.set(Feature::Min, min);
    out.set(Feature::Max, max);
    out.set(Feature::PeakToPeak, max - min);
    out.set(Feature::Rms, rms);
    out.set(
        Feature::Skewness,
        if degenerate {
            f64::NAN
        } else {
            m3 / m2.powf(1.5)
        },
    );
    out.set(
        Feature::Kurtosis,
        if degenerate {
            f64::NAN
        } else {
            m4 / (m2 * m2) - 3.0
        },
    );
    out.set(
        Feature::CrestFactor,
        if rms > 0.0 { absmax / rms } else { f64::NAN },
    );
    out.set(
        Feature::Slope,
        if n >= 2 && stt > 0.0 {
            stx / stt
        } else {
            f64::NAN
        },
    );
    out.set(Feature::Ewma, ew);
    out.set(Feature::Last, x[n - 1]);
    out.set(Feature::Count, nf);
}

fn band_powers(
    fft: &mut Fft,
    bands: &[Band],
    t: &[f64],
    x: &[f64],
    mean: f64,
    out: &mut [f64; MAX_BANDS],
) {
    let n = x.len();
    out.iter_mut().for_each(|b| *b = f64::NAN);
    if n < 4 {
        return;
    }
    let span = t[n - 1] - t[0];
    if span <= 0.0 {
        return;
    }
    let fs = (n - 1) as f64 / span;
    let plan = match fft.plans.get(&n) {
        Some(p) => p.clone(),
        None => {
            let p = fft.planner.plan_fft_forward(n);
            fft.plans.insert(n, p.clone());
            p
        }
    };
    fft.input.clear();
    fft.input.extend(x.iter().map(|v| v - mean));
    fft.spectrum.clear();
    fft.spectrum.resize(n / 2 + 1, Complex::new(0.0, 0.0));
    fft.scratch.clear();
    fft.scratch
        .resize(plan.get_scratch_len(), Complex::new(0.0, 0.0));
    if plan
        .process_with_scratch(&mut fft.input, &mut fft.spectrum, &mut fft.scratch)
        .is_err()
    {
        return;
    }
    let n2 = (n * n) as f64;
    let last = fft.spectrum.len() - 1;
    for (slot, band) in out.iter_mut().zip(bands) {
        let mut p = 0.0;
        for (k, c) in fft.spectrum.iter().enumerate() {
            let f = k as f64 * fs / n as f64;
            if f < band.lo_hz || f >= band.hi_hz {
                continue;
            }
            let weight = if k == 0 || (n % 2 == 0 && k == last) {
                1.0
            } else {
                2.0
            };
            p += weight * c.norm_sqr() / n2;
        }
        *slot = p;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(t: Vec<f64>, x: Vec<f64>) -> Frame {
        Frame { end_ns: 0, t, x }
    }

    #[test]
    fn constant_window_has_nan_shape_features_and_zero_spread() {
        let f = frame(vec![0.0, 1.0, 2.0], vec![5.0; 3]);
        let mut e = FeatureExtractor::new(FeatureConfig::default(), 3);
        let mut out = FeatureValues::default();
        e.compute(&f, &mut out);
        assert_eq!(out.get(Feature::Std), 0.0);
        assert_eq!(out.get(Feature::PeakToPeak), 0.0);
        assert!(out.get(Feature::Skewness).is_nan());
        assert!(out.get(Feature::Kurtosis).is_nan());
        assert_eq!(out.get(Feature::Slope), 0.0);
        assert_eq!(out.get(Feature::Rms), 5.0);
    }

    #[test]
    fn a_constant_window_whose_mean_leaves_round_off_is_still_constant() {
        // 512 copies of a stuck vibration reading: sum / n differs from the value
        // by a few ulps, which once made the kurtosis −2 instead of undefined.
        let n = 512;
        let f = frame((0..n).map(|i| i as f64).collect(), vec![0.152_641_03; n]);
        let mut e = FeatureExtractor::new(FeatureConfig::default(), n);
        let mut out = FeatureValues::default();
        e.compute(&f, &mut out);
        assert!(
            out.get(Feature::Kurtosis).is_nan(),
            "{}",
            out.get(Feature::Kurtosis)
        );
        assert!(out.get(Feature::Skewness).is_nan());
    }

    #[test]
    fn band_powers_of_a_full_partition_sum_to_the_variance() {
        let n = 256;
        let fs = 256.0;
        let t: Vec<f64> = (0..n).map(|i| i as f64 / fs).collect();
        let x: Vec<f64> = t
            .iter()
            .map(|&t| {
                3.0 * (2.0 * std::f64::consts::PI * 10.0 * t).sin()
                    + (2.0 * std::f64::consts::PI * 90.0 * t).sin()
                    + 2.0
            })
            .collect();
        let cfg = FeatureConfig {
            ewma_alpha: 0.1,
            bands: vec![
                Band {
                    name: "low".into(),
                    lo_hz: 0.0,
                    hi_hz: 50.0,
                },
                Band {
                    name: "high".into(),
                    lo_hz: 50.0,
                    hi_hz: 1e9,
                },
            ],
        };
        let mut e = FeatureExtractor::new(cfg, n);
        let mut out = FeatureValues::default();
        e.compute(&frame(t, x), &mut out);
        // A sine of amplitude A has power A²/2.
        assert!((out.bands()[0] - 4.5).abs() < 1e-9, "{:?}", out.bands());
        assert!((out.bands()[1] - 0.5).abs() < 1e-9, "{:?}", out.bands());
        let var = out.get(Feature::Std).powi(2);
        assert!((out.bands()[0] + out.bands()[1] - var).abs() < 1e-9);
    }

    #[test]
    fn feature_names_round_trip() {
        for f in SCALAR_FEATURES {
            assert_eq!(Feature::parse(f.name(), &[]), Ok(f));
        }
        assert_eq!(
            Feature::parse("band:high", &["low", "high"]),
            Ok(Feature::Band(1))
        );
        assert!(Feature::parse("band:mid", &["low"]).is_err());
        assert!(Feature::parse("median", &[]).is_err());
    }
}
