//! An asset's operating regime (`running = { signal, above, settle, step }`): a
//! stopped machine, or one that has just started or changed load, is in normal
//! operation, not in fault. While it is stopped, and for `settle` after it starts
//! or its load steps, the asset's detectors and models do not judge; at each such
//! change its detectors relearn normal (baselines, trend history), so that the new
//! load is what they compare with afterwards.

use std::ops::Range;

use super::plan::RunningCfg;

/// The regime of one asset, followed from one of its windows' mean.
#[derive(Debug)]
pub(crate) struct Gate {
    cfg: RunningCfg,
    /// The pipeline's index of the window the regime is read from.
    pub(crate) window: usize,
    /// The pipeline's indices of the asset's detectors.
    pub(crate) detectors: Range<usize>,
    running: bool,
    last_mean: Option<f64>,
    quiet_until: f64,
}

impl Gate {
    pub(crate) fn new(cfg: RunningCfg, window: usize, detectors: Range<usize>) -> Gate {
        Gate {
            cfg,
            window,
            detectors,
            running: false,
            last_mean: None,
            quiet_until: f64::NEG_INFINITY,
        }
    }

    /// Takes the regime window's mean at `t` (seconds); `true` when normal changed
    /// (the machine started or its load stepped) and the detectors must relearn.
    /// The first observation of a running machine is not a change: it has been
    /// running for an unknown time, and the detectors have their own warm-up.
    pub(crate) fn observe(&mut self, t: f64, mean: f64) -> bool {
        if !mean.is_finite() {
            return false;
        }
        let running = mean > self.cfg.above;
        let changed = match self.last_mean {
            // Already running when first seen: not a change.
            None => false,
            Some(_) if !self.running => running,
            Some(last) => {
                running
                    && self.cfg.step > 0.0
                    && (mean - last).abs() > self.cfg.step * last.abs().max(f64::EPSILON)
            }
        };
        self.running = running;
        self.last_mean = Some(mean);
        if changed {
            self.quiet_until = t + self.cfg.settle_s;
        }
        changed
    }

    /// Continues the state of `old` (the same regime before a reload).
    pub(crate) fn continue_from(&mut self, old: &Gate) {
        if old.cfg == self.cfg {
            self.running = old.running;
            self.last_mean = old.last_mean;
            self.quiet_until = old.quiet_until;
        }
    }

    /// Whether the asset's detectors and models judge at `t`.
    pub(crate) fn judging(&self, t: f64) -> bool {
        self.running && t >= self.quiet_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Gate {
        Gate::new(
            RunningCfg {
                window: 0,
                above: 2.0,
                settle_s: 600.0,
                step: 0.2,
            },
            0,
            0..3,
        )
    }

    #[test]
    fn a_stop_and_the_settling_after_a_start_or_a_load_step_are_not_judged() {
        let mut g = gate();
        assert!(!g.judging(0.0), "unknown until observed");
        assert!(
            !g.observe(0.0, 12.0),
            "already running at start: not a change"
        );
        assert!(g.judging(0.0));
        assert!(!g.observe(60.0, 11.0), "a 8 % change is not a step");
        assert!(g.judging(60.0));
        assert!(!g.observe(120.0, 0.1), "stopping");
        assert!(!g.judging(120.0));
        assert!(g.observe(3600.0, 12.0), "a start");
        assert!(!g.judging(3600.0) && !g.judging(4199.0) && g.judging(4200.0));
        assert!(g.observe(7200.0, 7.0), "a load step of 42 %");
        assert!(!g.judging(7500.0) && g.judging(7800.0));
        assert!(!g.observe(7860.0, f64::NAN), "a NaN mean changes nothing");
        assert!(g.judging(7860.0));
    }
}
