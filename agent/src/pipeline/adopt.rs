//! A reload's new processor taking over from the old one, between two batches.

use std::sync::atomic::Ordering;

use edge_driver_api::Timestamp;

use super::processor::Processor;
use crate::alert::Alert;

impl Processor {
    /// Takes over from `old`, the processor of the configuration this one replaces
    /// (a reload that changed `[[assets]]`), between two batches.
    ///
    /// Whatever did not change keeps running as if nothing happened: a window with
    /// the same asset, signal, cut and features keeps its samples; a detector with
    /// the same name, settings and window keeps its state and its open alert; a
    /// model binding with the same settings and model version keeps its grading,
    /// drift and quarantine state. Everything else starts fresh, and an alert left
    /// open by a removed or changed detector is closed with a `cleared` alert that
    /// says why (appended to `alerts`), so nothing upstream waits for a clear that
    /// can no longer come. Alert ids continue their sequence and the counters stay
    /// the same objects (metrics and status keep reading them).
    pub fn adopt(
        &mut self,
        mut old: Processor,
        now: Timestamp,
        alerts: &mut Vec<Alert>,
    ) -> AdoptReport {
        old.publish(0);
        self.counters = old.counters.clone();
        self.engine.continue_from(&mut old.engine);
        let mut report = AdoptReport::default();
        let from_old = self.adopt_windows(&mut old, &mut report);
        self.adopt_detectors(&mut old, &from_old, &mut report);
        self.adopt_gates(&old, &from_old);
        (report.bindings_kept, report.bindings_new) =
            self.scorer
                .adopt(&mut old.scorer, &mut self.engine, &mut old.engine);
        // Whatever is still open in the old engine can no longer clear.
        let before = alerts.len();
        for det in 0..old.engine.len() {
            if let Some(a) = old.engine.retire(
                det,
                &mut self.engine,
                now,
                "closed: a configuration reload changed or removed this detector",
            ) {
                alerts.push(a);
            }
        }
        report.alerts_closed = alerts.len() - before;
        self.counters
            .alerts
            .fetch_add(report.alerts_closed as u64, Ordering::Relaxed);
        report
    }

    /// Windows with the same asset, signal, cut and features keep their samples.
    /// Returns, per new window, the old window it continues.
    fn adopt_windows(
        &mut self,
        old: &mut Processor,
        report: &mut AdoptReport,
    ) -> Vec<Option<usize>> {
        let mut taken = vec![false; old.windows.len()];
        let mut from_old: Vec<Option<usize>> = vec![None; self.windows.len()];
        for (ni, w) in self.windows.iter_mut().enumerate() {
            let found = old.windows.iter().enumerate().position(|(oi, o)| {
                !taken[oi]
                    && o.asset == w.asset
                    && o.signal == w.signal
                    && o.spec == w.spec
                    && o.feature_cfg == w.feature_cfg
            });
            let Some(oi) = found else {
                report.windows_new += 1;
                continue;
            };
            taken[oi] = true;
            from_old[ni] = Some(oi);
            let o = &mut old.windows[oi];
            std::mem::swap(&mut w.window, &mut o.window);
            std::mem::swap(&mut w.frame, &mut o.frame);
            std::mem::swap(&mut w.extractor, &mut o.extractor);
            std::mem::swap(&mut w.features, &mut o.features);
            w.seen = o.seen;
            report.windows_kept += 1;
        }

        from_old
    }

    /// A regime read from a window that continues keeps its state (running,
    /// settling), so a reload does not hold judgement until the next window.
    fn adopt_gates(&mut self, old: &Processor, from_old: &[Option<usize>]) {
        for gate in &mut self.gates {
            let was =
                from_old[gate.window].and_then(|ow| old.gates.iter().find(|g| g.window == ow));
            if let Some(o) = was {
                gate.continue_from(o);
            }
        }
    }

    /// Built-in detectors (engine slot i is detector i) with the same name,
    /// settings and window keep their state and open alert.
    fn adopt_detectors(
        &mut self,
        old: &mut Processor,
        from_old: &[Option<usize>],
        report: &mut AdoptReport,
    ) {
        let old_window_of = |d: usize| {
            old.windows
                .iter()
                .position(|w| (w.det_first..w.det_end).contains(&d))
        };
        let mut old_det_taken = vec![false; old.detectors.len()];
        for (ni, was) in from_old.iter().enumerate() {
            let (first, end) = (self.windows[ni].det_first, self.windows[ni].det_end);
            for di in first..end {
                let found = was.and_then(|ow| {
                    (0..old.detectors.len()).find(|&od| {
                        !old_det_taken[od]
                            && old_window_of(od) == Some(ow)
                            && old.engine.key(od) == self.engine.key(di)
                            && old.detectors[od].spec == self.detectors[di].spec
                            && old.detectors[od].feature == self.detectors[di].feature
                    })
                });
                let Some(od) = found else {
                    report.detectors_new += 1;
                    continue;
                };
                old_det_taken[od] = true;
                std::mem::swap(
                    &mut self.detectors[di].detector,
                    &mut old.detectors[od].detector,
                );
                self.engine.adopt_slot(di, &mut old.engine, od);
                report.detectors_kept += 1;
            }
        }
    }
}

/// What a reload's [`Processor::adopt`] carried over and what starts fresh.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdoptReport {
    pub windows_kept: usize,
    pub windows_new: usize,
    pub detectors_kept: usize,
    pub detectors_new: usize,
    pub bindings_kept: usize,
    pub bindings_new: usize,
    /// Open alerts closed because their detector was changed or removed.
    pub alerts_closed: usize,
}

/// A new processor for the running pipeline (see [`Processor::adopt`]); the
/// pipeline answers on `done` once it is in service.
#[derive(Debug)]
pub struct Reconfigure {
    pub processor: Box<Processor>,
    pub done: tokio::sync::oneshot::Sender<AdoptReport>,
}
