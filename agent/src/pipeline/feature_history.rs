//! Every window's features over hours, for the web UI's plots: per (asset,
//! signal) window, a [`MeanRing`] with one column per feature (the scalar
//! features, then the window's bands), over `[ui] history` in `history_points`
//! buckets. Recorded by the pipeline when a window completes (once per hop, under
//! one short lock), whether or not a detector reads the feature.
//!
//! A window's ring is allocated when the pipeline that computes it starts (at
//! start-up, or when a reload adds the window), at most [`MAX_WINDOWS`].

use std::sync::{Arc, Mutex, MutexGuard};

use edge_models::FeatureValues;
use edge_models::features::SCALAR_FEATURES;

use crate::ingest::history::{HistoryConfig, Series};
use crate::ingest::means::MeanRing;

/// Windows recorded (more are counted in `unrecorded`).
pub const MAX_WINDOWS: usize = 256;

#[derive(Debug)]
struct Entry {
    asset: Arc<str>,
    signal: Arc<str>,
    bands: Vec<String>,
    ring: MeanRing,
}

impl Entry {
    /// The column of feature `name` (`mean`, `band:NAME`).
    fn column(&self, name: &str) -> Option<usize> {
        if let Some(band) = name.strip_prefix("band:") {
            let i = self.bands.iter().position(|b| b == band)?;
            return Some(SCALAR_FEATURES.len() + i);
        }
        SCALAR_FEATURES.iter().position(|f| f.name() == name)
    }

    fn names(&self) -> Vec<String> {
        SCALAR_FEATURES
            .iter()
            .map(|f| f.name().to_string())
            .chain(self.bands.iter().map(|b| format!("band:{b}")))
            .collect()
    }
}

#[derive(Debug, Default)]
struct Inner {
    windows: Vec<Entry>,
    unrecorded: u64,
}

/// The windows of one signal, as the UI lists them.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SignalWindows {
    pub asset: Arc<str>,
    /// The features recorded, in column order.
    pub features: Vec<String>,
}

/// Every window's features over `[ui] history`.
#[derive(Debug)]
pub struct FeatureHistory {
    config: HistoryConfig,
    inner: Mutex<Inner>,
}

impl FeatureHistory {
    pub fn new(config: HistoryConfig) -> FeatureHistory {
        FeatureHistory {
            config,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry of (asset, signal), made on first use (again when its bands
    /// change); `None` once [`MAX_WINDOWS`] exist.
    pub fn slot(&self, asset: &Arc<str>, signal: &Arc<str>, bands: &[String]) -> Option<usize> {
        let mut g = self.lock();
        let ring = || {
            MeanRing::new(
                self.config.long,
                self.config.points,
                SCALAR_FEATURES.len() + bands.len(),
            )
        };
        if let Some(i) = g
            .windows
            .iter()
            .position(|e| e.asset == *asset && e.signal == *signal)
        {
            if g.windows[i].bands != bands {
                g.windows[i].bands = bands.to_vec();
                g.windows[i].ring = ring();
            }
            return Some(i);
        }
        if g.windows.len() == MAX_WINDOWS {
            g.unrecorded += 1;
            return None;
        }
        g.windows.push(Entry {
            asset: asset.clone(),
            signal: signal.clone(),
            bands: bands.to_vec(),
            ring: ring(),
        });
        Some(g.windows.len() - 1)
    }

    /// Records a completed window's features.
    pub fn record(&self, slot: usize, mono_ns: u64, f: &FeatureValues) {
        let mut g = self.lock();
        if let Some(e) = g.windows.get_mut(slot) {
            let scalars = SCALAR_FEATURES.iter().map(|&s| f.get(s));
            e.ring
                .record(mono_ns, scalars.chain(f.bands().iter().copied()));
        }
    }

    /// `feature` of the window (asset, signal) over `[ui] history`; `None` when
    /// there is no such window or feature.
    pub fn series(
        &self,
        asset: &str,
        signal: &str,
        feature: &str,
        now_mono_ns: u64,
        now_wall_ns: i64,
    ) -> Option<Series> {
        let g = self.lock();
        let e = g
            .windows
            .iter()
            .find(|e| &*e.asset == asset && &*e.signal == signal)?;
        let column = e.column(feature)?;
        Some(e.ring.series(column, now_mono_ns, now_wall_ns))
    }

    /// The windows of `signal` (one per asset that windows it).
    pub fn on_signal(&self, signal: &str) -> Vec<SignalWindows> {
        self.lock()
            .windows
            .iter()
            .filter(|e| &*e.signal == signal)
            .map(|e| SignalWindows {
                asset: e.asset.clone(),
                features: e.names(),
            })
            .collect()
    }

    /// (windows recorded, bytes held).
    pub fn size(&self) -> (usize, usize) {
        let g = self.lock();
        (
            g.windows.len(),
            g.windows.iter().map(|e| e.ring.bytes()).sum(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_feature_of_a_window_is_kept_whether_or_not_a_detector_reads_it() {
        let h = FeatureHistory::new(HistoryConfig {
            recent: Duration::from_secs(300),
            long: Duration::from_secs(100),
            points: 10,
        });
        let (a, s): (Arc<str>, Arc<str>) = ("pump".into(), "pump.vibration".into());
        let bands = vec!["shaft".to_string()];
        let slot = h.slot(&a, &s, &bands).expect("slot");
        assert_eq!(h.slot(&a, &s, &bands), Some(slot), "one per window");
        let mut f = FeatureValues::default();
        let mut extractor = edge_models::FeatureExtractor::new(
            edge_models::FeatureConfig {
                bands: vec![edge_models::Band {
                    name: "shaft".into(),
                    lo_hz: 0.0,
                    hi_hz: 10.0,
                }],
                ..Default::default()
            },
            16,
        );
        let mut frame = edge_models::Frame::with_capacity(16);
        let mut w = edge_models::Window::new(edge_models::WindowSpec::Count { size: 16, hop: 16 });
        // 3 + a 5 Hz sine sampled at 100 Hz, then a 6 at the end.
        for i in 0..16u64 {
            let x = if i == 15 {
                6.0
            } else {
                3.0 + (2.0 * std::f64::consts::PI * 5.0 * i as f64 / 100.0).sin()
            };
            if w.push(i * 10_000_000, x, &mut frame) {
                extractor.compute(&frame, &mut f);
            }
        }
        let band = f.bands().first().copied().expect("one band");
        assert!(band.is_finite() && band > 0.0, "{band}");
        h.record(slot, 5_000_000_000, &f);
        let at = |name: &str| {
            h.series("pump", "pump.vibration", name, 5_000_000_000, 0)
                .and_then(|s| s.points.last().and_then(|p| p.3))
        };
        assert_eq!(at("mean"), Some(f.get(edge_models::Feature::Mean) as f32));
        assert_eq!(at("max"), Some(6.0));
        assert_eq!(
            at("p2p"),
            Some(f.get(edge_models::Feature::PeakToPeak) as f32)
        );
        assert_eq!(at("band:shaft"), Some(band as f32));
        assert_eq!(at("band:nope"), None);
        assert!(h.series("pump", "other", "mean", 0, 0).is_none());
        let on = h.on_signal("pump.vibration");
        assert_eq!(on.len(), 1);
        assert!(on[0].features.contains(&"band:shaft".to_string()));
        let (n, bytes) = h.size();
        assert_eq!((n, bytes), (1, 10 * 8 + 10 * 14 * 6));
    }
}
