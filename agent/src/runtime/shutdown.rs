//! The stop sequence, bounded by `agent.shutdown_timeout`: stop the drivers (each
//! gets its grace, then is aborted) → the pipeline drains what is left in the ring
//! and drops the alert sender → the sink thread delivers the rest and flushes →
//! the uplink gets what is left of the time to forward it → the report.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::drivers::DriverSet;
use super::sinks::Delivery;
use super::{DriverReport, RunReport};
use crate::delivery::events::AgentEvents;
use crate::ingest::ring::SampleRing;
use crate::ingest::supervisor::DriverStatus;
use crate::ops::sdnotify::Notifier;
use crate::pipeline::{PipelineCounters, Processor};

/// What the stop sequence stops, and what it reads its report from.
pub(crate) struct Stoppable {
    pub shutdown: CancellationToken,
    pub drivers_token: CancellationToken,
    pub drivers: Arc<DriverSet>,
    pub events: Arc<AgentEvents>,
    pub pipeline_stop: CancellationToken,
    pub pipeline: JoinHandle<Processor>,
    pub delivery: Delivery,
    pub stats: JoinHandle<()>,
    pub systemd: Option<Arc<Notifier>>,
    pub timeout: Duration,
    pub ring: Arc<SampleRing>,
    pub counters: Arc<PipelineCounters>,
    pub statuses: Vec<Arc<DriverStatus>>,
}

/// Waits for the shutdown token, then stops everything in order.
pub(crate) fn spawn(s: Stoppable) -> JoinHandle<RunReport> {
    tokio::spawn(async move {
        s.shutdown.cancelled().await;
        if let Some(n) = &s.systemd {
            n.send("STOPPING=1\nSTATUS=stopping: draining to the journal");
        }
        tracing::info!("shutting down: stopping drivers");
        s.drivers_token.cancel();
        let deadline = Instant::now() + s.timeout;
        let (processor, mut timed_out) = match tokio::time::timeout_at(
            deadline,
            drain(&s.drivers, &s.events, &s.pipeline_stop, s.pipeline),
        )
        .await
        {
            Ok(p) => (p, false),
            Err(_) => (None, true),
        };
        s.events.close();
        timed_out |= !wait_for_sinks(s.delivery.sinks_done, deadline).await;
        s.delivery.uplink_stop.cancel();
        if let Some(t) = s.delivery.uplink
            && tokio::time::timeout(left(deadline), t).await.is_err()
        {
            tracing::warn!("uplink did not stop in time");
        }
        if timed_out {
            tracing::error!(timeout = ?s.timeout, "shutdown did not finish in time");
        }
        let _ = s.stats.await;
        let report = RunReport {
            ring: s.ring.stats(),
            pipeline: s.counters.snapshot(),
            engine: processor.map(|p| p.engine_stats()).unwrap_or_default(),
            drivers: s.statuses.iter().map(|d| driver_report(d)).collect(),
            alerts_delivered: s.delivery.sink_counters.delivered.load(Ordering::Relaxed),
            sink_failures: s.delivery.sink_counters.failures.load(Ordering::Relaxed),
            shutdown_timed_out: timed_out,
            restart_requested: false,
        };
        tracing::info!(
            samples = report.pipeline.samples,
            alerts = report.alerts_delivered,
            ring_dropped = report.ring.dropped(),
            "edge-agent stopped"
        );
        report
    })
}

/// Drivers out, then the pipeline's last drain; the processor in service at the end.
async fn drain(
    drivers: &DriverSet,
    events: &AgentEvents,
    pipeline_stop: &CancellationToken,
    pipeline: JoinHandle<Processor>,
) -> Option<Processor> {
    // A reload in progress finishes first (it holds the set briefly).
    for t in drivers.take_tasks() {
        let _ = t.await;
    }
    // No driver can send events any more: let the sink channel close.
    events.close();
    pipeline_stop.cancel();
    pipeline.await.ok()
}

/// The sink thread finishes once the pipeline dropped the alert sender. Waited for
/// on a blocking thread with a real-time bound: it is outside tokio.
async fn wait_for_sinks(done: std::sync::mpsc::Receiver<()>, deadline: Instant) -> bool {
    let remaining = left(deadline);
    tokio::task::spawn_blocking(move || done.recv_timeout(remaining).is_ok())
        .await
        .unwrap_or(false)
}

/// What is left until `deadline`, at least a second.
fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1))
}

fn driver_report(s: &DriverStatus) -> DriverReport {
    DriverReport {
        name: s.name.to_string(),
        kind: s.kind,
        state: s.state(),
        restarts: s.restarts.load(Ordering::Relaxed),
        panics: s.panics.load(Ordering::Relaxed),
        last_error: s.last_error(),
    }
}
