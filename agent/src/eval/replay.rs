//! Plays a scenario through the agent's real pipeline in virtual time: the
//! configuration's windows, detectors, models and alert engine, fed from the
//! scenario's rows instead of drivers, as fast as the CPU allows.

use std::sync::Arc;

use edge_driver_api::{Sample, SignalId, Timestamp};
use edge_models::Severity;

use super::scenario::Scenario;
use crate::alert::{Alert, AlertState, IdGenerator};
use crate::config::Config;
use crate::pipeline::Processor;

/// The monotonic time of a scenario's first row: a whole day, so that time windows
/// (aligned to multiples of their hop) align with the scenario's own seconds.
const ORIGIN_NS: u64 = 86_400_000_000_000;
/// Samples per batch, as the pipeline task takes them from the ring.
const BATCH: usize = 1024;

/// An alert message raised or cleared during a replay.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ReplayedAlert {
    /// Seconds from the scenario's first row.
    pub t_s: f64,
    #[serde(serialize_with = "crate::alert::ser_severity")]
    pub severity: Severity,
    pub state: &'static str,
    /// A new episode (not an escalation or de-escalation of an open one).
    pub new_episode: bool,
    pub asset: Arc<str>,
    pub detector: Arc<str>,
    pub kind: &'static str,
    /// The signal the detector watches (none for a model).
    pub signal: Option<Arc<str>>,
    pub score: f64,
    pub limit: f64,
    pub eta_s: Option<f64>,
    pub eta_range_s: Option<(f64, f64)>,
    /// The curve behind the ETA (as in the alert JSON).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::alert::ser_fit"
    )]
    pub fit: Option<edge_models::Fit>,
    pub message: String,
}

/// What a replay produced.
#[derive(Debug, Default)]
pub struct Replay {
    pub alerts: Vec<ReplayedAlert>,
    /// Model drift events (input features leaving or re-entering their range).
    pub drift_events: u64,
    pub samples: u64,
}

/// Which registry signal each scenario column feeds (`None`: not a configured signal).
pub fn column_signals(config: &Config, sc: &Scenario) -> Vec<Option<SignalId>> {
    sc.columns.iter().map(|c| config.registry.get(c)).collect()
}

fn processor(config: &Config) -> Processor {
    Processor::new(
        config.agent.id.clone(),
        &config.registry,
        &config.assets,
        &config.models,
        config.alerts.limits.clone(),
        IdGenerator::with_seed(0x5eed),
    )
}

/// Replays `sc` through a pipeline built from `config`.
pub fn replay(config: &Config, sc: &Scenario, signals: &[Option<SignalId>]) -> Replay {
    let mut out = Replay::default();
    let mut p = processor(config);
    let mut restarts = sc.labels.restarts_s.iter().copied().peekable();
    let mut batch: Vec<Sample> = Vec::with_capacity(BATCH);
    let mut alerts: Vec<Alert> = Vec::new();
    for (r, &t) in sc.times.iter().enumerate() {
        if restarts.next_if(|&at| at <= t).is_some() {
            // An agent restart: every window, baseline and open episode is gone.
            flush(&mut p, &mut batch, &mut alerts, &mut out);
            p = processor(config);
        }
        let ts = Timestamp {
            mono_ns: ORIGIN_NS + (t * 1e9) as u64,
            wall_ns: sc.start_wall_ns + (t * 1e9) as i64,
            synced: true,
        };
        for (c, sig) in signals.iter().enumerate() {
            if let (Some(sig), Some(v)) = (sig, sc.value(r, c)) {
                batch.push(Sample::new_f64(ts, *sig, v));
            }
        }
        if batch.len() >= BATCH {
            flush(&mut p, &mut batch, &mut alerts, &mut out);
        }
    }
    flush(&mut p, &mut batch, &mut alerts, &mut out);
    out
}

/// Runs a batch as the pipeline task does: ingest, then the models due.
fn flush(p: &mut Processor, batch: &mut Vec<Sample>, alerts: &mut Vec<Alert>, out: &mut Replay) {
    out.samples += batch.len() as u64;
    p.ingest_batch(batch, alerts);
    batch.clear();
    if p.inference_due() {
        let mut job = p.take_inference();
        job.run();
        p.finish_inference(job, alerts);
        out.drift_events += p.take_events().count() as u64;
    }
    out.alerts.extend(alerts.drain(..).map(|a| {
        ReplayedAlert {
            t_s: (a.time.mono_ns.saturating_sub(ORIGIN_NS)) as f64 / 1e9,
            severity: a.severity,
            state: match a.state {
                AlertState::Raised => "raised",
                AlertState::Cleared => "cleared",
            },
            new_episode: a.state == AlertState::Raised && a.previous_severity.is_none(),
            signal: (a.kind != "model")
                .then(|| a.signals.first().cloned())
                .flatten(),
            asset: a.asset,
            detector: a.detector,
            kind: a.kind,
            score: a.score,
            limit: a.limit,
            eta_s: a.eta_s,
            eta_range_s: a.eta_range_s,
            fit: a.fit,
            message: a.message,
        }
    }));
}
