//! Residual against a predictor: a signal judged by how far it is from what
//! another signal of the same machine says it should be (pressure from the motor
//! current, flow from the speed). A load change moves both and leaves the
//! residual alone; a leak moves the pressure only.
//!
//! The model is a line through an anchor: `expected = y0 + slope · (x − x0)`.
//! The anchor `(x0, y0)` is the mean of the first `learn` windows judged after
//! each change of operating regime (a start, a load step: [`Detector::relearn`]);
//! the slope is the least-squares slope of the changes between successive anchors
//! (`Σ Δx·Δy / Σ Δx²` over the last few, so a small change of the predictor weighs
//! little), pulled towards proportionality (`y0 / x0`) as much as one change of
//! [`PRIOR_STEP`] of the predictor would: before any change the signal is taken
//! as proportional to its predictor. A configured slope replaces both. Anchors and slopes are
//! not relearnt while the detector asserts a level, and a new anchor the previous
//! one does not explain is refused: a fault is not learnt as normal.
//!
//! [`Detector::relearn`]: super::Detector::relearn

use super::{Evaluation, Severity, ThresholdSpec, threshold};

/// The weight of the proportional prior: one change of the predictor by this
/// fraction of its value.
pub const PRIOR_STEP: f64 = 0.1;
/// Changes between anchors kept (the slope is fitted on them).
const CHANGES: usize = 8;

/// A residual detector's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ResidualSpec {
    /// The limits on the residual (signal units from the expected value, negative
    /// below it), their direction, hysteresis and minimum duration.
    pub limits: ThresholdSpec,
    /// Windows averaged into each anchor.
    pub learn: u32,
    /// A fixed slope (signal units per predictor unit); `None` learns it.
    pub slope: Option<f64>,
}

/// What a residual detector has learnt.
#[derive(Debug, Default)]
pub(super) struct ResidualState {
    /// Windows, Σx and Σy of the anchor being learnt.
    acc: (u32, f64, f64),
    anchor: Option<(f64, f64)>,
    /// The anchor before the last change of regime.
    previous: Option<(f64, f64)>,
    /// (Δx, Δy) between successive anchors, the last [`CHANGES`].
    changes: [(f64, f64); CHANGES],
    n_changes: usize,
    pending_since: Option<f64>,
}

impl ResidualState {
    /// After a change of regime: learn a new anchor (the old one teaches the
    /// slope). While a level is raised the anchor is kept: the new one would take
    /// the fault in, and the slope carries the old one to the new load.
    pub(super) fn relearn(&mut self, raised: bool) {
        self.pending_since = None;
        if raised {
            return;
        }
        if self.anchor.is_some() {
            self.previous = self.anchor.take();
        }
        self.acc = (0, 0.0, 0.0);
    }

    /// The slope in use with anchor `(x0, y0)`.
    fn slope(&self, spec: &ResidualSpec, x0: f64, y0: f64) -> f64 {
        if let Some(s) = spec.slope {
            return s;
        }
        if x0.abs() <= f64::EPSILON {
            return 0.0;
        }
        let prior_w = (PRIOR_STEP * x0).powi(2);
        let (sxy, sxx) = self.changes[..self.n_changes.min(CHANGES)]
            .iter()
            .fold((prior_w * y0 / x0, prior_w), |(sxy, sxx), &(dx, dy)| {
                (sxy + dx * dy, sxx + dx * dx)
            });
        sxy / sxx
    }

    fn learn_slope(&mut self, (x1, y1): (f64, f64)) {
        if let Some((x0, y0)) = self.previous {
            self.changes[self.n_changes % CHANGES] = (x1 - x0, y1 - y0);
            self.n_changes += 1;
        }
    }

    /// Takes a newly learnt anchor when the previous one explains it (within half
    /// the warning distance, plus a third of what the slope adds over the change
    /// of the predictor): a fault that began while the machine was stopped is not
    /// learnt as the new normal, and is judged against the previous anchor.
    fn adopt(&mut self, spec: &ResidualSpec, (x1, y1): (f64, f64)) {
        let Some((x0, y0)) = self.previous else {
            self.anchor = Some((x1, y1));
            return;
        };
        let slope = self.slope(spec, x0, y0);
        let explained = y0 + slope * (x1 - x0);
        let warn = spec.limits.warning.or(spec.limits.critical).unwrap_or(0.0);
        let tolerance = 0.5 * warn.abs() + (slope * (x1 - x0)).abs() / 3.0;
        if (y1 - explained).abs() <= tolerance {
            if spec.slope.is_none() {
                self.learn_slope((x1, y1));
            }
            self.anchor = Some((x1, y1));
        } else {
            self.anchor = Some((x0, y0));
        }
    }

    /// `y`: the signal's feature, `x`: the predictor's, of the window ending at `t`.
    pub(super) fn evaluate(
        &mut self,
        spec: &ResidualSpec,
        current: Option<Severity>,
        t: f64,
        y: f64,
        x: f64,
    ) -> Option<Evaluation> {
        if !x.is_finite() {
            return None;
        }
        let Some((x0, y0)) = self.anchor else {
            self.acc = (self.acc.0 + 1, self.acc.1 + x, self.acc.2 + y);
            let (n, sx, sy) = self.acc;
            if n >= spec.learn.max(1) {
                self.adopt(spec, (sx / f64::from(n), sy / f64::from(n)));
            }
            return Some(Evaluation {
                level: current,
                score: 0.0,
                limit: spec.limits.warning.or(spec.limits.critical)?,
                forecast: None,
            });
        };
        let residual = y - (y0 + self.slope(spec, x0, y0) * (x - x0));
        Some(threshold(
            &spec.limits,
            current,
            &mut self.pending_since,
            t,
            residual,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Detector, DetectorSpec, Direction};
    use super::*;

    fn leak_detector(slope: Option<f64>) -> Detector {
        Detector::new(DetectorSpec::Residual(ResidualSpec {
            limits: ThresholdSpec {
                direction: Direction::Below,
                warning: Some(-0.8),
                critical: Some(-1.5),
                hysteresis: 0.2,
                min_duration_s: 0.0,
            },
            learn: 3,
            slope,
        }))
    }

    /// Pressure of a pump at load `l` (current 12·(0.3 + 0.7·l) A, pressure
    /// 6·(0.5 + 0.5·l) bar), less `leak`.
    fn pump(l: f64, leak: f64) -> (f64, f64) {
        (12.0 * (0.3 + 0.7 * l), 6.0 * (0.5 + 0.5 * l) - leak)
    }

    fn run(d: &mut Detector, t0: usize, points: &[(f64, f64)]) -> Vec<Option<Severity>> {
        points
            .iter()
            .enumerate()
            .map(|(i, &(x, y))| d.evaluate_with((t0 + i) as f64, y, x).and_then(|e| e.level))
            .collect()
    }

    #[test]
    fn a_load_change_is_explained_by_the_predictor_and_a_leak_is_not() {
        let mut d = leak_detector(None);
        // Nominal load: learn the anchor, then steady.
        assert!(
            run(&mut d, 0, &[pump(1.0, 0.0); 6])
                .iter()
                .all(Option::is_none)
        );
        // A load step to 0.6: the regime gate relearns; the new anchor teaches the
        // slope (0.357 bar/A here, 0.38 with the prior) and the pressure drop is
        // normal.
        d.relearn();
        assert!(
            run(&mut d, 6, &[pump(0.6, 0.0); 6])
                .iter()
                .all(Option::is_none)
        );
        // A small load change the gate does not call a step (0.6 → 0.55): the
        // learnt slope explains it, where a level-only baseline would drift.
        assert!(
            run(&mut d, 12, &[pump(0.55, 0.0); 6])
                .iter()
                .all(Option::is_none)
        );
        // A leak at the same load: 1 bar below what the current predicts.
        let levels = run(&mut d, 18, &[pump(0.55, 1.0), pump(0.55, 2.0)]);
        assert_eq!(
            levels,
            vec![Some(Severity::Warning), Some(Severity::Critical)]
        );
        let e = d.evaluate_with(20.0, pump(0.55, 2.0).1, pump(0.55, 0.0).0);
        let e = e.expect("an anchored detector evaluates");
        assert!(
            (e.score + 2.0).abs() < 0.02,
            "the residual is the leak: {e:?}"
        );
        assert_eq!(e.limit, -1.5);
    }

    #[test]
    fn a_leak_that_began_during_a_stop_is_not_learnt_as_the_new_normal() {
        let mut d = leak_detector(None);
        assert!(
            run(&mut d, 0, &[pump(1.0, 0.0); 4])
                .iter()
                .all(Option::is_none)
        );
        // Stopped, restarted at the same load 0.5 bar lower: the new anchor is
        // refused, the old one judges, and the growing leak is raised.
        d.relearn();
        let levels = run(
            &mut d,
            4,
            &[
                pump(1.0, 0.5),
                pump(1.0, 0.5),
                pump(1.0, 0.5),
                pump(1.0, 1.0),
            ],
        );
        assert_eq!(levels, vec![None, None, None, Some(Severity::Warning)]);
    }

    #[test]
    fn without_a_learnt_slope_the_signal_is_taken_as_proportional() {
        let mut d = leak_detector(None);
        run(&mut d, 0, &[(10.0, 5.0); 3]);
        // Current +10 %: pressure expected +10 % (5.5), reads 5.5: normal.
        let e = d.evaluate_with(3.0, 5.5, 11.0).expect("anchored");
        assert!(e.score.abs() < 1e-9 && e.level.is_none(), "{e:?}");
    }

    #[test]
    fn a_configured_slope_is_used_as_given() {
        let mut d = leak_detector(Some(0.0));
        run(&mut d, 0, &[(10.0, 5.0); 3]);
        let e = d.evaluate_with(3.0, 4.0, 12.0).expect("anchored");
        assert_eq!((e.score, e.level), (-1.0, Some(Severity::Warning)));
    }

    #[test]
    fn nothing_is_judged_before_the_anchor_and_a_raised_level_is_not_relearnt() {
        let mut d = leak_detector(None);
        let levels = run(&mut d, 0, &[(10.0, 5.0), (10.0, 1.0)]);
        assert_eq!(levels, vec![None, None], "learning the anchor");
        assert!(
            d.evaluate_with(2.0, 5.0, f64::NAN).is_none(),
            "no predictor"
        );
        run(&mut d, 3, &[(10.0, 6.0)]);
        let e = d.evaluate_with(4.0, 1.0, 10.0).expect("anchored");
        assert_eq!(
            e.level,
            Some(Severity::Critical),
            "anchor 4 bar, reads 1: {e:?}"
        );
        // A change of regime while raised keeps the anchor: the fault is not
        // learnt as the new normal, and the alert clears once it is repaired.
        d.relearn();
        let e = d.evaluate_with(5.0, 1.0, 10.0).expect("still anchored");
        assert_eq!(e.level, Some(Severity::Critical));
        let e = d.evaluate_with(6.0, 4.0, 10.0).expect("still anchored");
        assert_eq!(e.level, None, "repaired: {e:?}");
    }
}
