//! An asset's operating regime (`running = { signal, above, settle, step }`): a
//! stopped machine, or one that has just started or changed load, is in normal
//! operation, not in fault. While it is stopped, and for `settle` after it starts
//! or its load steps, the asset's detectors and models do not judge; at each such
//! change its detectors relearn normal (baselines, trend history), so that the new
//! load is what they compare with afterwards.
//!
//! A load step is the mean moving by more than `step` within one window length
//! (the mean `lag` windows ago, `lag` = size / hop): a sliding window spreads a
//! step over `lag` windows, each of which moves only part of it.

use std::ops::Range;

use heapless::Deque;

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
    /// Whether a mean has been observed.
    seen: bool,
    /// The means of the last `lag` windows (oldest first).
    means: Deque<f64, MAX_LAG>,
    lag: usize,
    quiet_until: f64,
}

/// The longest window length, in hops, a load step is looked for over.
pub(crate) const MAX_LAG: usize = 32;

impl Gate {
    /// `lag`: the regime window's size in hops (a step shows fully after it).
    pub(crate) fn new(cfg: RunningCfg, window: usize, lag: usize, detectors: Range<usize>) -> Gate {
        Gate {
            cfg,
            window,
            detectors,
            running: false,
            seen: false,
            means: Deque::new(),
            lag: lag.clamp(1, MAX_LAG),
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
        let changed = if !self.seen {
            // Already running when first seen: not a change.
            false
        } else if !self.running {
            running
        } else {
            self.means.front().is_some_and(|&before| {
                running
                    && self.cfg.step > 0.0
                    && (mean - before).abs() > self.cfg.step * before.abs().max(f64::EPSILON)
            })
        };
        self.seen = true;
        self.running = running;
        if changed || !running {
            // What follows is compared with the new regime only.
            self.means.clear();
        }
        if self.means.len() >= self.lag {
            self.means.pop_front();
        }
        // Room was made above: `lag` ≤ MAX_LAG.
        let _ = self.means.push_back(mean);
        if changed {
            self.quiet_until = t + self.cfg.settle_s;
        }
        changed
    }

    /// Continues the state of `old` (the same regime before a reload).
    pub(crate) fn continue_from(&mut self, old: &Gate) {
        if old.cfg == self.cfg && old.lag == self.lag {
            self.running = old.running;
            self.seen = old.seen;
            self.means = old.means.clone();
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
            1,
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

    #[test]
    fn a_step_spread_over_a_sliding_window_is_seen_once_it_has_moved_the_mean() {
        let cfg = RunningCfg {
            window: 0,
            above: 2.0,
            settle_s: 600.0,
            step: 0.1,
        };
        // A 5-minute window sliding by 1 minute: a step from 10 to 12 A moves each
        // window's mean by 0.4 A (4 %), never 10 % from one window to the next.
        let mut g = Gate::new(cfg, 0, 5, 0..1);
        let means = [10.0, 10.0, 10.0, 10.4, 10.8, 11.2, 11.6, 12.0, 12.0, 12.0];
        let changed: Vec<bool> = (0..means.len())
            .map(|i| g.observe(60.0 * i as f64, means[i]))
            .collect();
        assert_eq!(changed.iter().filter(|&&c| c).count(), 1, "{changed:?}");
        assert!(
            changed[5],
            "10.0 → 11.2 within a window length: {changed:?}"
        );
        // A slow swing of 3 % is no step.
        let mut g = Gate::new(g.cfg.clone(), 0, 5, 0..1);
        let swing = |i: u32| 10.0 + 0.3 * (f64::from(i) / 10.0).sin();
        assert!((0..100).all(|i| !g.observe(60.0 * f64::from(i), swing(i))));
    }
}
