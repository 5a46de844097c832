//! Periodic feature summaries: per asset, the latest features of every window
//! (the telemetry lane; encoded by [`crate::delivery::wire::json::telemetry`]).

use std::sync::Arc;
use std::time::Duration;

use edge_driver_api::Timestamp;
use edge_models::Feature;

use super::processor::Processor;
use crate::delivery::wire::json::{self, SignalSummary};

/// Periodic feature summaries.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetryConfig {
    pub interval: Duration,
    pub features: Vec<Feature>,
    pub bands: bool,
}

impl Processor {
    /// Per-asset summaries of the latest window features (JSON documents), for the
    /// telemetry lane. Signals without a completed window yet are left out.
    pub fn telemetry(
        &self,
        agent_id: &str,
        now: Timestamp,
        cfg: &TelemetryConfig,
    ) -> Vec<(Arc<str>, Vec<u8>)> {
        let mut by_asset: Vec<(Arc<str>, Vec<SignalSummary<'_>>)> = Vec::new();
        for w in self.windows.iter().filter(|w| w.seen) {
            let mut features: Vec<(String, f64)> = cfg
                .features
                .iter()
                .map(|f| (f.name().to_string(), w.features.get(*f)))
                .collect();
            if cfg.bands {
                for (i, b) in w.band_names.iter().enumerate() {
                    let v = w.features.bands().get(i).copied().unwrap_or(f64::NAN);
                    features.push((format!("band:{b}"), v));
                }
            }
            let summary = SignalSummary {
                signal: &w.signal,
                window_end_mono_ns: (w.features.t_end * 1e9) as u64,
                features,
            };
            match by_asset.iter_mut().find(|(a, _)| *a == w.asset) {
                Some((_, list)) => list.push(summary),
                None => by_asset.push((w.asset.clone(), vec![summary])),
            }
        }
        by_asset
            .into_iter()
            .map(|(asset, signals)| {
                let body = json::telemetry(agent_id, &asset, now, &signals).unwrap_or_default();
                (asset, body)
            })
            .collect()
    }
}
