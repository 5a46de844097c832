//! Input drift: a binding's recent inputs against the model's training statistics.
//!
//! Two brakes keep a feature that hovers at the edge of its training range from
//! flooding the event stream: hysteresis (an input is back only when its recent
//! mean is well inside the range) and a dwell (`DriftCfg::dwell`): a binding's
//! inputs change state at most once per dwell of sample time. A change that comes
//! sooner waits; if the input is back by the end of the dwell, nothing is reported.

use edge_models::onnx::manifest::{FeatureStats, ValidatedModel};

use super::binding::DriftCfg;

/// A change of an input's drift state.
#[derive(Clone, Debug, PartialEq)]
pub struct DriftChange {
    pub input: usize,
    pub drifted: bool,
    pub z: f64,
    pub recent_mean: f64,
}

/// Input drift against the training statistics.
#[derive(Clone, Debug)]
pub struct Drift {
    cfg: DriftCfg,
    alpha: f64,
    stats: Vec<FeatureStats>,
    mean: Vec<f64>,
    count: Vec<u32>,
    drifted: Vec<bool>,
    /// Sample time (s) of the binding's last reported change.
    last_change: Option<f64>,
}

impl Drift {
    pub fn new(m: &ValidatedModel, cfg: DriftCfg) -> Drift {
        let stats: Vec<FeatureStats> = m
            .manifest
            .input
            .drift_inputs()
            .iter()
            .map(|f| {
                m.manifest.training.get(f).copied().unwrap_or(FeatureStats {
                    mean: 0.0,
                    std: f64::INFINITY,
                    min: f64::NEG_INFINITY,
                    max: f64::INFINITY,
                })
            })
            .collect();
        let n = stats.len();
        Drift {
            cfg,
            alpha: 2.0 / (f64::from(cfg.rows.max(1)) + 1.0),
            stats,
            mean: vec![0.0; n],
            count: vec![0; n],
            drifted: vec![false; n],
            last_change: None,
        }
    }

    /// Inputs currently out of the training distribution.
    pub fn drifted(&self) -> impl Iterator<Item = usize> + '_ {
        self.drifted
            .iter()
            .enumerate()
            .filter(|(_, d)| **d)
            .map(|(i, _)| i)
    }

    pub fn stats(&self, input: usize) -> Option<&FeatureStats> {
        self.stats.get(input)
    }

    /// Takes the input row of sample time `t` (seconds); changes of state are
    /// appended to `out`.
    pub fn update(&mut self, t: f64, row: &[f32], out: &mut Vec<DriftChange>) {
        let settled = self
            .last_change
            .is_none_or(|last| t - last >= self.cfg.dwell.as_secs_f64());
        let first = out.len();
        for (i, x) in row.iter().enumerate().take(self.stats.len()) {
            let x = f64::from(*x);
            if !x.is_finite() {
                continue;
            }
            let m = if self.count[i] == 0 {
                x
            } else {
                self.mean[i] + self.alpha * (x - self.mean[i])
            };
            self.mean[i] = m;
            self.count[i] = self.count[i].saturating_add(1);
            if self.count[i] < self.cfg.rows {
                continue;
            }
            let s = &self.stats[i];
            let z = (m - s.mean).abs() / s.std.max(1e-9 * s.mean.abs().max(1.0));
            let range = (s.max - s.min).max(0.0);
            let outside = m < s.min - 0.25 * range || m > s.max + 0.25 * range;
            let inside = m >= s.min && m <= s.max;
            let now = if self.drifted[i] {
                // Hysteresis: back only when well inside.
                !(z < 0.75 * self.cfg.z && inside)
            } else {
                z > self.cfg.z || outside
            };
            if now != self.drifted[i] && settled {
                self.drifted[i] = now;
                out.push(DriftChange {
                    input: i,
                    drifted: now,
                    z,
                    recent_mean: m,
                });
            }
        }
        if out.len() > first {
            self.last_change = Some(t);
        }
    }
}
