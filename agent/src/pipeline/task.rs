//! The pipeline task: drains the ring in batches into the [`Processor`], runs the
//! models due off the async threads, and hands alerts, events and telemetry to
//! the sink thread.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use edge_driver_api::{Clock, Sample};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::adopt::Reconfigure;
use super::processor::Processor;
use super::scoring::InferenceJob;
use super::telemetry::TelemetryConfig;
use crate::alert::Alert;
use crate::delivery::sink::SinkMsg;
use crate::ingest::history::SignalHistory;
use crate::ingest::latest::LatestValues;
use crate::ingest::ring::SampleRing;

/// What the pipeline task is connected to.
#[derive(Debug)]
pub struct PipelineTask {
    pub ring: Arc<SampleRing>,
    /// To the sink thread; owned by the task (the channel closes when it ends).
    pub tx: mpsc::Sender<SinkMsg>,
    /// Samples taken from the ring per step.
    pub batch_size: usize,
    /// Cancelled by the runtime once every driver has returned.
    pub stop: CancellationToken,
    pub clock: Clock,
    pub agent_id: Arc<str>,
    pub telemetry: Option<TelemetryConfig>,
    /// A reload's new processor.
    pub reconfigure: mpsc::Receiver<Reconfigure>,
    /// What readers see of the samples, recorded per batch.
    pub taps: Taps,
}

/// What the pipeline records for readers: every signal's latest value
/// (`edge-agent tags`) and, when `[ui]` is on, its downsampled history and every
/// detector's evaluations.
#[derive(Debug)]
pub struct Taps {
    pub latest: Arc<LatestValues>,
    pub history: Option<Arc<SignalHistory>>,
    pub trace: Option<Arc<crate::alert::trace::DetectorTrace>>,
    pub features: Option<Arc<super::feature_history::FeatureHistory>>,
}

impl Taps {
    /// Has `processor` record its evaluations and window features here.
    fn attach(&self, processor: &mut Processor) {
        if let Some(t) = &self.trace {
            processor.set_trace(t.clone());
        }
        if let Some(f) = &self.features {
            processor.set_feature_history(f.clone());
        }
    }

    fn record(&self, batch: &[Sample]) {
        self.latest.record(batch);
        if let Some(h) = &self.history {
            h.record(batch);
        }
    }
}

/// Drains the ring until `task.stop` is cancelled *and* the ring is empty; returns
/// the processor in service at the end.
///
/// `stop` is cancelled by the runtime only after every driver has returned, so the
/// final drain sees every sample that was accepted.
pub async fn run_pipeline(mut processor: Processor, mut task: PipelineTask) -> Processor {
    task.taps.attach(&mut processor);
    let mut batch: Vec<Sample> = Vec::with_capacity(task.batch_size);
    let mut alerts: Vec<Alert> = Vec::with_capacity(64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let tele_every = task
        .telemetry
        .as_ref()
        .map(|t| t.interval)
        .unwrap_or(Duration::from_secs(3600));
    let mut tele = interval(tele_every);
    processor.publish_model_status();
    let mut next: Option<Reconfigure> = None;
    loop {
        processor.counters.heartbeat.fetch_add(1, Ordering::Relaxed);
        // A reload's new processor, between two batches (no rows are pending).
        if let Some(r) = next.take().or_else(|| task.reconfigure.try_recv().ok()) {
            task.adopt(&mut processor, r, &mut alerts).await;
        }
        let n = task.ring.drain_into(&mut batch, task.batch_size);
        if n == 0 {
            if task.stop.is_cancelled() {
                break;
            }
            tokio::select! {
                _ = task.ring.wait_for_data() => {}
                _ = task.stop.cancelled() => {}
                Some(r) = task.reconfigure.recv() => next = Some(r),
                _ = tick.tick() => task.tick(),
                _ = tele.tick(), if task.telemetry.is_some() => task.send_telemetry(&processor),
            }
            continue;
        }
        task.taps.record(&batch);
        processor.ingest_batch(&batch, &mut alerts);
        if processor.inference_due() {
            task.infer(&mut processor, &mut alerts).await;
        }
        send_alerts(&task.tx, &mut alerts).await;
        // Let drivers and sinks run between large batches.
        tokio::task::yield_now().await;
    }
    processor
}

/// A 1-tick-per-`every` interval whose first tick is one period from now.
fn interval(every: Duration) -> Interval {
    let mut i = tokio::time::interval_at(Instant::now() + every, every);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

impl PipelineTask {
    /// Puts a reload's processor in service.
    async fn adopt(&self, processor: &mut Processor, r: Reconfigure, alerts: &mut Vec<Alert>) {
        let old = std::mem::replace(processor, *r.processor);
        self.taps.attach(processor);
        let report = processor.adopt(old, self.clock.now(), alerts);
        processor.publish_model_status();
        tracing::info!(?report, "asset configuration in service");
        send_alerts(&self.tx, alerts).await;
        let _ = r.done.send(report);
    }

    /// Sinks retry and sync even when no alert arrives. Only into an empty queue:
    /// a lagging sink thread has work anyway, and a queue full of ticks would make
    /// the next alert wait.
    fn tick(&self) {
        if self.tx.capacity() == self.tx.max_capacity() {
            let _ = self.tx.try_send(SinkMsg::Tick);
        }
    }

    /// Telemetry never blocks the pipeline: dropped (and counted) if the sinks lag.
    fn send_telemetry(&self, processor: &Processor) {
        let Some(cfg) = &self.telemetry else {
            return;
        };
        let now = self.clock.now();
        for (asset, body) in processor.telemetry(&self.agent_id, now, cfg) {
            let msg = SinkMsg::Telemetry {
                asset,
                wall_ns: now.wall_ns,
                body,
            };
            if self.tx.try_send(msg).is_err() {
                processor
                    .counters
                    .telemetry_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Runs the model rows due on a blocking thread, grades them, and queues the
    /// model events.
    async fn infer(&self, processor: &mut Processor, alerts: &mut Vec<Alert>) {
        let mut job = processor.take_inference();
        let started = std::time::Instant::now();
        // Off the async threads; `run` catches a model's panics itself.
        job = match tokio::task::spawn_blocking(move || {
            job.run();
            job
        })
        .await
        {
            Ok(job) => job,
            Err(e) => {
                tracing::error!(error = %e, "model inference task failed; models are off");
                InferenceJob { runs: Vec::new() }
            }
        };
        processor
            .counters
            .model_latency
            .observe(started.elapsed().as_secs_f64());
        processor.finish_inference(job, alerts);
        processor.publish_model_status();
        let counters = processor.counters.clone();
        for ev in processor.take_events() {
            if self.tx.try_send(ev).is_err() {
                counters.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Queues every alert of `alerts` (emptying it) for the sink thread.
async fn send_alerts(tx: &mpsc::Sender<SinkMsg>, alerts: &mut Vec<Alert>) {
    for a in alerts.drain(..) {
        if !send_alert(tx, SinkMsg::Alert(Box::new(a))).await {
            tracing::error!("alert sinks are gone; alerts can no longer be delivered");
        }
    }
}

/// Queues an alert for the sink thread, waiting while its queue is full.
///
/// The wait is a blocking task rather than an async `send`: the sink thread does
/// real file I/O, and while the pipeline waits for it tokio must not see an idle
/// runtime. Under a paused clock (the virtual-time tests) an idle runtime advances
/// time, the drivers produce hours of samples in a moment, and the ring overflows
/// although nothing was slow in simulated time. A blocking task holds the clock
/// still until the disk has caught up. In production this path only runs when the
/// sinks lag, and it costs one pooled thread for the duration of the wait.
/// Returns `false` when the sink thread is gone.
async fn send_alert(tx: &mpsc::Sender<SinkMsg>, msg: SinkMsg) -> bool {
    use tokio::sync::mpsc::error::TrySendError;
    match tx.try_send(msg) {
        Ok(()) => true,
        Err(TrySendError::Closed(_)) => false,
        Err(TrySendError::Full(msg)) => {
            let tx = tx.clone();
            tokio::task::spawn_blocking(move || tx.blocking_send(msg).is_ok())
                .await
                .unwrap_or(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The regression behind a flaky end-to-end run: an alert waiting for a full
    /// sink queue let tokio's paused clock run ahead (hours of simulated samples in
    /// a few real milliseconds of disk I/O) and the ring overflowed.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn waiting_for_a_full_sink_queue_holds_the_virtual_clock() {
        let (tx, mut rx) = mpsc::channel::<SinkMsg>(1);
        tx.try_send(SinkMsg::Tick).expect("room for one");
        // A pending timer: an idle runtime would jump straight to it.
        let timer = tokio::spawn(tokio::time::sleep(Duration::from_secs(3600)));
        let t0 = tokio::time::Instant::now();
        let slow_disk = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let first = rx.blocking_recv().is_some();
            let second = rx.blocking_recv().is_some();
            first && second
        });
        let sent = tokio::time::timeout(Duration::from_secs(10), send_alert(&tx, SinkMsg::Tick))
            .await
            .expect("the sink thread drains within 10 s");
        assert!(sent);
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "the virtual clock advanced {:?} while the sink thread was busy",
            t0.elapsed()
        );
        drop(tx);
        assert!(slow_disk.join().expect("sink thread"));
        timer.abort();
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn an_alert_for_a_closed_sink_queue_reports_failure() {
        let (tx, rx) = mpsc::channel::<SinkMsg>(1);
        drop(rx);
        let sent = tokio::time::timeout(Duration::from_secs(1), send_alert(&tx, SinkMsg::Tick))
            .await
            .expect("returns at once");
        assert!(!sent);
    }
}
