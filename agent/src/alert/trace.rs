//! What each detector saw, evaluation by evaluation: the evidence behind an alert
//! (the web UI plots it). Per (asset, detector) the last [`POINTS`] evaluations:
//! the detector's input (a window feature, or a model's score), its score and the
//! limit it was held against; and over `[ui] history`, the mean per bucket of what
//! its plot shows ([`plots_score`]) and of its limit.
//!
//! Fed by the engine for every evaluation (once per window hop or model batch, not
//! per sample), under one short lock. Bounded: at most [`MAX_SERIES`] series, each
//! allocated once when its detector first reports.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::ingest::history::{HistoryConfig, Series as Buckets};
use crate::ingest::means::MeanRing;

/// Evaluations kept per detector.
pub const POINTS: usize = 180;
/// Detectors traced (more are counted in `untraced`).
pub const MAX_SERIES: usize = 256;

/// One evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TracePoint {
    /// Agent-monotonic time of the window's end (or the model batch), ns.
    pub mono_ns: u64,
    /// The detector's input: its window feature, or the model's score.
    pub value: f32,
    /// The detector's score (the feature, a z-score, a rate, a forecast ETA...).
    pub score: f32,
    pub limit: f32,
}

#[derive(Debug)]
struct Series {
    asset: Arc<str>,
    detector: Arc<str>,
    /// The signal it watches and what it evaluates (`mean`, a model's meaning).
    signal: Arc<str>,
    what: String,
    kind: &'static str,
    points: VecDeque<TracePoint>,
    /// Over `[ui] history`: the plotted value (column 0) and the limit (1).
    long: MeanRing,
}

/// Whether a detector's plot shows its score (its limit applies to the score: a
/// z-score, a rate, a CUSUM, a residual, a model's output) rather than its window
/// feature.
pub fn plots_score(kind: &str) -> bool {
    matches!(
        kind,
        "zscore" | "rate_of_change" | "cusum" | "residual" | "model" | "model_health"
    )
}

impl TracePoint {
    /// What a plot of a detector of `kind` shows of this evaluation.
    pub fn plotted(&self, kind: &str) -> f32 {
        if plots_score(kind) {
            self.score
        } else {
            self.value
        }
    }
}

/// A traced detector, as listed for a signal.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TracedDetector {
    pub asset: Arc<str>,
    pub detector: Arc<str>,
    pub what: String,
    /// The detector kind (`threshold`, `zscore`, `model`...).
    pub kind: &'static str,
}

impl Series {
    fn describe(&self) -> TracedDetector {
        TracedDetector {
            asset: self.asset.clone(),
            detector: self.detector.clone(),
            what: self.what.clone(),
            kind: self.kind,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    series: Vec<Series>,
    untraced: u64,
}

/// Every detector's recent evaluations.
#[derive(Debug)]
pub struct DetectorTrace {
    /// The long view's span and buckets.
    long: HistoryConfig,
    inner: Mutex<Inner>,
}

impl DetectorTrace {
    pub fn new(long: HistoryConfig) -> DetectorTrace {
        DetectorTrace {
            long,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The series index of (asset, detector), created on first use (watching
    /// `signal`, evaluating `what`); `None` once [`MAX_SERIES`] exist.
    pub fn slot(
        &self,
        asset: &Arc<str>,
        detector: &Arc<str>,
        signal: &Arc<str>,
        what: &str,
        kind: &'static str,
    ) -> Option<usize> {
        let mut g = self.lock();
        if let Some(i) = g
            .series
            .iter()
            .position(|s| s.asset == *asset && s.detector == *detector)
        {
            return Some(i);
        }
        if g.series.len() == MAX_SERIES {
            g.untraced += 1;
            return None;
        }
        g.series.push(Series {
            asset: asset.clone(),
            detector: detector.clone(),
            signal: signal.clone(),
            what: what.to_string(),
            kind,
            points: VecDeque::with_capacity(POINTS),
            long: MeanRing::new(self.long.long, self.long.points, 2),
        });
        Some(g.series.len() - 1)
    }

    /// Records one evaluation of series `slot`.
    pub fn record(&self, slot: usize, p: TracePoint) {
        let mut g = self.lock();
        if let Some(s) = g.series.get_mut(slot) {
            if s.points.len() == POINTS {
                s.points.pop_front();
            }
            s.points.push_back(p);
            let shown = [p.plotted(s.kind), p.limit].map(f64::from);
            s.long.record(p.mono_ns, shown);
        }
    }

    /// The evaluations of (asset, detector), oldest first.
    pub fn series(&self, asset: &str, detector: &str) -> Vec<TracePoint> {
        self.lock()
            .series
            .iter()
            .find(|s| &*s.asset == asset && &*s.detector == detector)
            .map(|s| s.points.iter().copied().collect())
            .unwrap_or_default()
    }

    /// (what its plot shows, its limit) of (asset, detector) over `[ui] history`.
    pub fn long(
        &self,
        asset: &str,
        detector: &str,
        now_mono_ns: u64,
        now_wall_ns: i64,
    ) -> Option<(Buckets, Buckets)> {
        let g = self.lock();
        let s = g
            .series
            .iter()
            .find(|s| &*s.asset == asset && &*s.detector == detector)?;
        Some((
            s.long.series(0, now_mono_ns, now_wall_ns),
            s.long.series(1, now_mono_ns, now_wall_ns),
        ))
    }

    /// The traced detectors watching `signal`.
    pub fn on_signal(&self, signal: &str) -> Vec<TracedDetector> {
        self.lock()
            .series
            .iter()
            .filter(|s| &*s.signal == signal)
            .map(Series::describe)
            .collect()
    }

    /// (asset, detector), if traced.
    pub fn describe(&self, asset: &str, detector: &str) -> Option<TracedDetector> {
        self.lock()
            .series
            .iter()
            .find(|s| &*s.asset == asset && &*s.detector == detector)
            .map(Series::describe)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        let g = self.lock();
        g.series
            .iter()
            .map(|s| POINTS * std::mem::size_of::<TracePoint>() + s.long.bytes())
            .sum()
    }
}

/// An engine's link to the trace: the series of each of its detector slots.
#[derive(Debug, Default)]
pub struct TraceLink {
    pub trace: Option<Arc<DetectorTrace>>,
    pub slots: Vec<Option<usize>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(i: u64) -> TracePoint {
        TracePoint {
            mono_ns: i,
            value: i as f32,
            score: 0.0,
            limit: 1.0,
        }
    }

    #[test]
    fn each_detector_keeps_its_last_evaluations_and_the_number_of_series_is_bounded() {
        let t = DetectorTrace::new(HistoryConfig::default());
        let (a, d, e) = (Arc::from("pump"), Arc::from("hot"), Arc::from("cold"));
        let sig: Arc<str> = Arc::from("pump.temperature");
        let hot = t.slot(&a, &d, &sig, "mean", "threshold").expect("slot");
        assert_eq!(
            t.slot(&a, &d, &sig, "mean", "threshold"),
            Some(hot),
            "the same series again"
        );
        let cold = t.slot(&a, &e, &sig, "min", "threshold").expect("slot");
        for i in 0..(POINTS as u64 + 5) {
            t.record(hot, p(i));
        }
        t.record(cold, p(7));
        let s = t.series("pump", "hot");
        assert_eq!(s.len(), POINTS);
        assert_eq!(s.first().map(|p| p.mono_ns), Some(5), "the oldest went");
        assert_eq!(t.series("pump", "cold"), vec![p(7)]);
        assert!(t.series("pump", "nope").is_empty());
        let names: Vec<String> = t
            .on_signal("pump.temperature")
            .iter()
            .map(|d| d.what.clone())
            .collect();
        assert_eq!(names, vec!["mean", "min"]);
        assert!(t.on_signal("pump.pressure").is_empty());
        for i in 2..MAX_SERIES {
            assert!(
                t.slot(
                    &a,
                    &Arc::from(format!("d{i}").as_str()),
                    &sig,
                    "x",
                    "threshold"
                )
                .is_some()
            );
        }
        assert_eq!(
            t.slot(&a, &Arc::from("one too many"), &sig, "x", "threshold"),
            None
        );
        t.record(999, p(1)); // an unknown slot is ignored
    }

    #[test]
    fn the_long_view_keeps_what_the_plot_shows_and_the_limit_over_hours() {
        let t = DetectorTrace::new(HistoryConfig::default()); // 2 h in 72 s buckets
        let (a, sig): (Arc<str>, Arc<str>) = (Arc::from("pump"), Arc::from("pump.current"));
        let z = t
            .slot(&a, &Arc::from("z"), &sig, "mean", "zscore")
            .expect("slot");
        let hot = t
            .slot(&a, &Arc::from("hot"), &sig, "mean", "threshold")
            .expect("slot");
        let s = 1_000_000_000u64;
        // Three hours of one evaluation a minute.
        for m in 0..180u64 {
            let p = TracePoint {
                mono_ns: m * 60 * s,
                value: 12.0,
                score: m as f32,
                limit: 6.0,
            };
            t.record(z, p);
            t.record(hot, p);
        }
        let now = 180 * 60 * s;
        let (shown, limit) = t.long("pump", "z", now, 0).expect("traced");
        assert_eq!(shown.bucket_s, 72.0);
        assert!(
            shown.points.len() >= 99,
            "two hours: {}",
            shown.points.len()
        );
        let last = shown.points.iter().rev().find_map(|p| p.3);
        assert_eq!(last, Some(179.0), "a z-score's plot shows its score");
        assert!(limit.points.iter().filter_map(|p| p.3).all(|l| l == 6.0));
        let (feature, _) = t.long("pump", "hot", now, 0).expect("traced");
        assert!(feature.points.iter().filter_map(|p| p.3).all(|v| v == 12.0));
        assert!(t.long("pump", "nope", now, 0).is_none());
        assert_eq!(
            t.series("pump", "z").len(),
            POINTS,
            "the exact evaluations too"
        );
    }
}
