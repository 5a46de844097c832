//! Wiring and lifecycle of a running agent.
//!
//! Task tree (one cancellation tree, rooted in the [`AgentHandle`]'s `shutdown` token):
//!
//! ```text
//! shutdown ──► drivers token (child) ──► one supervisor per driver ──► driver attempt task
//!          └─► stats task
//! pipeline_stop (cancelled by the lifecycle task once every driver returned)
//!          └─► pipeline task ──(bounded mpsc, owned by the pipeline)──► sink thread
//! ```
//!
//! Shutdown order: stop drivers (each gets `grace`, then is aborted) → the pipeline
//! drains what is left in the ring → it drops the alert sender → the sink thread
//! delivers the remaining alerts and flushes → the report is returned. The whole
//! sequence is bounded by `agent.shutdown_timeout`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use edge_driver_api::Clock;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::alert::{EngineStats, IdGenerator};
use crate::config::{Config, DriverInstance};
use crate::control::ControlSocket;
use crate::events::AgentEvents;
use crate::journal::fs::StdFs;
use crate::journal::sink::JournalSink;
use crate::journal::{Journal, JournalConfig, Lane};
use crate::meter::DriverMeter;
use crate::pipeline::{PipelineCounters, Processor, run_pipeline};
use crate::reload::{ConfigReloader, DriverSet, Spawner};
use crate::ring::{RingStats, SampleRing};
use crate::sink::{AlertSink, ConsoleSink, JsonlSink, SinkCounters, run_sinks};
use crate::status::StatusSource;
use crate::supervisor::{DriverState, DriverStatus};
use crate::uplink::{UplinkStats, run_uplink};

/// Extra parts for embedding and tests.
#[derive(Default)]
pub struct RunOptions {
    /// Clock to use (default: the system clock).
    pub clock: Option<Clock>,
    /// Sinks in addition to the configured ones.
    pub extra_sinks: Vec<Box<dyn AlertSink>>,
    /// Drivers in addition to the configured ones (their signals must be registered).
    pub extra_drivers: Vec<DriverInstance>,
    /// Seed for alert ids (default: from the kernel's random source).
    pub id_seed: Option<u64>,
    /// Notified to reload every model (the command wires SIGHUP to it).
    pub reload_models: Option<Arc<tokio::sync::Notify>>,
    /// Open the control socket at its standard place when the config names none
    /// (the `run` command does; embedded agents and tests opt in with a path).
    pub default_control_socket: bool,
    /// systemd's notification socket (`Type=notify`): READY, STOPPING, STATUS.
    pub systemd: Option<Arc<crate::sdnotify::Notifier>>,
    /// Feed systemd's watchdog at half this period while the pipeline moves.
    pub watchdog: Option<std::time::Duration>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("extra_sinks", &self.extra_sinks.len())
            .field("extra_drivers", &self.extra_drivers.len())
            .finish_non_exhaustive()
    }
}

/// Counters of the pipeline at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineSnapshot {
    pub samples: u64,
    pub unusable: u64,
    pub unrouted: u64,
    pub windows: u64,
    pub evaluations: u64,
    pub alerts: u64,
    pub model_rows: u64,
    pub model_errors: u64,
    pub model_rows_skipped: u64,
    pub model_swaps: u64,
    pub events_dropped: u64,
}

impl PipelineSnapshot {
    fn read(c: &PipelineCounters) -> Self {
        PipelineSnapshot {
            samples: c.samples.load(Ordering::Relaxed),
            unusable: c.unusable.load(Ordering::Relaxed),
            unrouted: c.unrouted.load(Ordering::Relaxed),
            windows: c.windows.load(Ordering::Relaxed),
            evaluations: c.evaluations.load(Ordering::Relaxed),
            alerts: c.alerts.load(Ordering::Relaxed),
            model_rows: c.model_rows.load(Ordering::Relaxed),
            model_errors: c.model_errors.load(Ordering::Relaxed),
            model_rows_skipped: c.model_rows_skipped.load(Ordering::Relaxed),
            model_swaps: c.model_swaps.load(Ordering::Relaxed),
            events_dropped: c.events_dropped.load(Ordering::Relaxed),
        }
    }
}

/// One driver's status at the end of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverReport {
    pub name: String,
    pub kind: &'static str,
    pub state: DriverState,
    pub restarts: u64,
    pub panics: u64,
    pub last_error: Option<String>,
}

/// What a run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunReport {
    pub ring: RingStats,
    pub pipeline: PipelineSnapshot,
    pub engine: EngineStats,
    pub drivers: Vec<DriverReport>,
    pub alerts_delivered: u64,
    pub sink_failures: u64,
    /// Shutdown took longer than `agent.shutdown_timeout` and was cut short.
    pub shutdown_timed_out: bool,
}

/// A started agent.
#[derive(Debug)]
pub struct AgentHandle {
    shutdown: CancellationToken,
    ring: Arc<SampleRing>,
    counters: Arc<PipelineCounters>,
    statuses: Vec<Arc<DriverStatus>>,
    journal: Option<Arc<std::sync::Mutex<Journal>>>,
    uplink: Arc<UplinkStats>,
    models: Arc<crate::models::LiveModels>,
    reload_models: Arc<tokio::sync::Notify>,
    source: StatusSource,
    reloader: ConfigReloader,
    lifecycle: JoinHandle<RunReport>,
}

impl AgentHandle {
    /// The token that stops the agent.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn ring_stats(&self) -> RingStats {
        self.ring.stats()
    }

    pub fn pipeline(&self) -> PipelineSnapshot {
        PipelineSnapshot::read(&self.counters)
    }

    pub fn drivers(&self) -> &[Arc<DriverStatus>] {
        &self.statuses
    }

    /// Uplink counters (all zero without an uplink).
    pub fn uplink(&self) -> &UplinkStats {
        &self.uplink
    }

    /// The journal, when configured (the uplink reads and acknowledges through it).
    pub fn journal(&self) -> Option<Arc<std::sync::Mutex<Journal>>> {
        self.journal.clone()
    }

    /// The models in service (with their swap and rejection counts).
    pub fn models(&self) -> Arc<crate::models::ModelStore> {
        self.models.get()
    }

    /// Applies a new configuration's driver and asset changes live (what SIGHUP
    /// does; see [`crate::reload`]).
    pub fn reloader(&self) -> ConfigReloader {
        self.reloader.clone()
    }

    /// What `edge-agent status` would print, now.
    pub fn status(&self) -> crate::status::AgentStatus {
        self.source.snapshot()
    }

    /// Reloads every model now (what SIGHUP does): changed versions are validated
    /// and swapped in, bad ones rejected.
    pub fn reload_models(&self) {
        self.reload_models.notify_one();
    }

    /// Waits until the agent stops (after its shutdown token is cancelled).
    pub async fn wait(self) -> anyhow::Result<RunReport> {
        Ok(self.lifecycle.await?)
    }

    /// Stops the agent and waits for its report.
    pub async fn stop(self) -> anyhow::Result<RunReport> {
        self.shutdown.cancel();
        self.wait().await
    }
}

/// Starts every part of the agent. Must be called inside a tokio runtime.
pub fn start(config: Config, mut opts: RunOptions) -> anyhow::Result<AgentHandle> {
    let clock = opts.clock.take().unwrap_or_else(Clock::system);
    let shutdown = CancellationToken::new();
    let drivers_token = shutdown.child_token();
    let pipeline_stop = CancellationToken::new();

    let ring = Arc::new(SampleRing::new(config.ring.capacity, config.ring.overflow));

    // Sinks: the journal first (where alerts are accepted), then the others.
    let journal_wake = Arc::new(tokio::sync::Notify::new());
    let mut sinks: Vec<Box<dyn AlertSink>> = Vec::new();
    let journal = match &config.journal {
        Some(j) => {
            let cfg = JournalConfig {
                dir: j.dir.clone(),
                segment_bytes: j.segment_bytes,
                max_disk: j.max_disk,
                fsync: j.fsync,
            };
            let (journal, rep) = Journal::open(cfg, Arc::new(StdFs)).map_err(|e| {
                anyhow::anyhow!("cannot open the journal in {}: {e}", j.dir.display())
            })?;
            let stats = journal.stats();
            tracing::info!(
                dir = %j.dir.display(), segments = rep.segments, records = rep.records,
                pending_alerts = stats.pending[Lane::Alert as usize], corrupt = rep.corrupt,
                torn = rep.torn, quarantined = rep.quarantined.len(), "journal opened"
            );
            let journal = Arc::new(std::sync::Mutex::new(journal));
            sinks.push(Box::new(
                JournalSink::new(journal.clone(), j.backlog)
                    .with_notify(journal_wake.clone())
                    .with_identity(config.agent.id.clone(), clock.clone()),
            ));
            Some(journal)
        }
        None => None,
    };
    // Local alarm outputs next: they must not wait behind a slow console or file.
    let alarms = crate::alarm::AlarmState::new(&config.alarms);
    #[cfg(feature = "gpio")]
    if !config.alarms.is_empty() {
        let pins = crate::alarm::linux_pins(&config.alarms);
        sinks.push(Box::new(crate::alarm::AlarmSink::new(
            &config.alarms,
            pins,
            alarms.clone(),
        )));
    }
    if config.alerts.console {
        sinks.push(Box::new(ConsoleSink));
    }
    if let Some(path) = &config.alerts.jsonl {
        let sink = JsonlSink::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open alert file {}: {e}", path.display()))?;
        sinks.push(Box::new(sink));
    }
    sinks.append(&mut opts.extra_sinks);
    // The uplink forwards from the journal; it outlives the pipeline at shutdown so
    // that the last alerts still go out.
    let uplink_stats = Arc::new(UplinkStats::default());
    let uplink_stop = CancellationToken::new();
    let uplink_task = match (&config.uplink, &journal) {
        (Some(u), Some(j)) => Some(tokio::spawn(run_uplink(
            u.clone(),
            j.clone(),
            journal_wake.clone(),
            uplink_stop.clone(),
            uplink_stats.clone(),
        ))),
        _ => None,
    };
    let (alerts_tx, alerts_rx) = mpsc::channel(config.alerts.queue);
    let sink_counters = Arc::new(SinkCounters::default());
    // A dedicated thread, not `spawn_blocking`: it lives as long as the agent, and a
    // long-running blocking task would stop tokio's paused clock from auto-advancing
    // in virtual-time tests.
    let (sink_done_tx, sink_done_rx) = std::sync::mpsc::sync_channel::<()>(1);
    {
        let c = sink_counters.clone();
        std::thread::Builder::new()
            .name("alert-sinks".into())
            .spawn(move || {
                run_sinks(alerts_rx, sinks, c);
                let _ = sink_done_tx.send(());
            })
            .map_err(|e| anyhow::anyhow!("cannot start the alert sink thread: {e}"))?;
    }

    let events = Arc::new(AgentEvents::new(
        config.agent.id.clone(),
        &config.registry,
        alerts_tx.clone(),
    ));

    let ids = match opts.id_seed {
        Some(s) => IdGenerator::with_seed(s),
        None => IdGenerator::new(),
    };
    let processor = Processor::new(
        config.agent.id.clone(),
        &config.registry,
        &config.assets,
        &config.models,
        config.alerts.limits.clone(),
        ids,
    );
    let counters = processor.counters();
    let reload_models = opts.reload_models.take().unwrap_or_default();
    // Always watched: a reload may bring the first model.
    let live_models = Arc::new(crate::models::LiveModels::new(config.models.clone()));
    tokio::spawn(crate::models::watch_models(
        live_models.clone(),
        reload_models.clone(),
        shutdown.clone(),
        alerts_tx.downgrade(),
        config.agent.id.clone(),
        clock.clone(),
    ));
    let (reconfigure_tx, reconfigure_rx) = mpsc::channel(1);
    let pipeline_link = crate::reload::PipelineLink {
        tx: reconfigure_tx,
        models: live_models.clone(),
        agent_id: config.agent.id.clone(),
        limits: config.alerts.limits.clone(),
    };
    let pipeline = tokio::spawn(run_pipeline(
        processor,
        ring.clone(),
        alerts_tx,
        config.ring.batch,
        pipeline_stop.clone(),
        clock.clone(),
        config.agent.id.clone(),
        config.telemetry.clone(),
        reconfigure_rx,
    ));

    let mut statuses = Vec::new();
    let drivers = Arc::new(DriverSet::new(
        Spawner {
            ring: ring.clone(),
            clock: clock.clone(),
            backoff: config.supervisor,
            grace: config.agent.shutdown_timeout.mul_f64(0.4),
            events: events.clone() as Arc<dyn edge_driver_api::EventSink>,
            parent: drivers_token.clone(),
        },
        config.fingerprints.clone(),
        &config.registry,
    ));
    for d in config
        .drivers
        .iter()
        .cloned()
        .chain(opts.extra_drivers.drain(..))
    {
        let status = Arc::new(DriverStatus::new(d.name.clone(), d.kind));
        statuses.push(status.clone());
        let meter = Arc::new(DriverMeter::new(&d.name, &config.registry));
        drivers.start(d.name.clone(), d.factory.clone(), status, meter);
    }
    tracing::info!(
        agent = %config.agent.id,
        drivers = statuses.len(),
        signals = config.registry.len(),
        assets = config.assets.len(),
        ring = config.ring.capacity,
        overflow = config.ring.overflow.as_str(),
        "edge-agent started"
    );

    let source = StatusSource {
        agent: config.agent.id.clone(),
        config_file: Arc::from(config.file.as_str()),
        clock: clock.clone(),
        started_ns: clock.mono_ns(),
        ring: ring.clone(),
        counters: counters.clone(),
        drivers: drivers.meters(),
        journal: journal.clone(),
        uplink: config.uplink.as_ref().map(|_| uplink_stats.clone()),
        sinks: sink_counters.clone(),
        models: live_models.clone(),
        alarms,
    };
    // Operations: the control socket, the metrics endpoint, systemd. None of them
    // can stop the agent: a socket that cannot be opened is logged and left out.
    let control_path = match &config.agent.control_socket {
        ControlSocket::At(p) => Some(p.clone()),
        ControlSocket::Default if opts.default_control_socket => {
            Some(crate::control::default_path())
        }
        _ => None,
    };
    if let Some(path) = control_path {
        match crate::control::bind(&path) {
            Ok(l) => {
                tracing::info!(socket = %path.display(), "control socket open (edge-agent status)");
                tokio::spawn(crate::control::serve(
                    l,
                    path,
                    source.clone(),
                    shutdown.clone(),
                ));
            }
            Err(e) => tracing::warn!(
                socket = %path.display(), error = %e,
                "cannot open the control socket; `edge-agent status` will not reach this agent (set [agent] control_socket)"
            ),
        }
    }
    if let Some(m) = &config.metrics {
        let std_listener = std::net::TcpListener::bind(m.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std);
        match std_listener {
            Ok(l) => {
                tracing::info!(listen = %l.local_addr().map_or(m.listen, |a| a), "Prometheus metrics at /metrics");
                tokio::spawn(crate::metrics::serve(l, source.clone(), shutdown.clone()));
            }
            Err(e) => tracing::error!(
                listen = %m.listen, error = %e,
                "cannot open the metrics endpoint; the agent runs without it"
            ),
        }
    }
    if let Some(n) = &opts.systemd {
        if let Some(period) = opts.watchdog {
            tokio::spawn(crate::sdnotify::feed_watchdog(
                n.clone(),
                period,
                counters.clone(),
                shutdown.clone(),
            ));
        }
        n.send(&format!(
            "READY=1\nSTATUS=running: {} drivers, {} signals, {} assets",
            statuses.len(),
            config.registry.len(),
            config.assets.len()
        ));
    }
    let systemd = opts.systemd.clone();

    let stats_task = {
        let ring = ring.clone();
        let counters = counters.clone();
        let statuses = statuses.clone();
        let every = config.agent.stats_interval;
        let token = shutdown.clone();
        let clock = clock.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            let mut was_synced = clock.is_synced();
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let synced = clock.refresh_sync();
                if synced != was_synced {
                    tracing::info!(synced, "wall clock synchronisation changed");
                    was_synced = synced;
                }
                let r = ring.stats();
                let p = PipelineSnapshot::read(&counters);
                let down: Vec<&str> = statuses
                    .iter()
                    .filter(|s| s.state() != DriverState::Running)
                    .map(|s| &*s.name)
                    .collect();
                tracing::info!(
                    samples = p.samples, windows = p.windows, alerts = p.alerts,
                    unusable = p.unusable, ring_len = r.len, ring_high_water = r.high_water,
                    ring_dropped = r.dropped(), drivers_down = ?down, clock_synced = synced,
                    "stats"
                );
            }
        })
    };

    let timeout = config.agent.shutdown_timeout;
    let drivers_for_shutdown = drivers.clone();
    let lifecycle = {
        let shutdown = shutdown.clone();
        let counters = counters.clone();
        let ring = ring.clone();
        let statuses = statuses.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            if let Some(n) = &systemd {
                n.send("STOPPING=1\nSTATUS=stopping: draining to the journal");
            }
            tracing::info!("shutting down: stopping drivers");
            drivers_token.cancel();
            let deadline = tokio::time::Instant::now() + timeout;
            let driver_set = drivers_for_shutdown;
            let sequence = async {
                // A reload in progress finishes first (it holds the set briefly).
                for s in driver_set.take_tasks() {
                    let _ = s.await;
                }
                // No driver can send events any more: let the sink channel close.
                events.close();
                pipeline_stop.cancel();
                pipeline.await.ok()
            };
            let (processor, mut timed_out) = match tokio::time::timeout_at(deadline, sequence).await
            {
                Ok(p) => (p, false),
                Err(_) => (None, true),
            };
            events.close();
            // The sink thread finishes once the pipeline dropped the alert sender. Wait
            // for it on a blocking thread with a real-time bound: it is outside tokio.
            let remaining = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .max(std::time::Duration::from_secs(1));
            let sinks_done =
                tokio::task::spawn_blocking(move || sink_done_rx.recv_timeout(remaining).is_ok())
                    .await
                    .unwrap_or(false);
            timed_out |= !sinks_done;
            uplink_stop.cancel();
            if let Some(t) = uplink_task {
                let left = deadline
                    .saturating_duration_since(tokio::time::Instant::now())
                    .max(std::time::Duration::from_secs(1));
                if tokio::time::timeout(left, t).await.is_err() {
                    tracing::warn!("uplink did not stop in time");
                }
            }
            if timed_out {
                tracing::error!(?timeout, "shutdown did not finish in time");
            }
            let _ = stats_task.await;
            let report = RunReport {
                ring: ring.stats(),
                pipeline: PipelineSnapshot::read(&counters),
                engine: processor.map(|p| p.engine_stats()).unwrap_or_default(),
                drivers: statuses
                    .iter()
                    .map(|s| DriverReport {
                        name: s.name.to_string(),
                        kind: s.kind,
                        state: s.state(),
                        restarts: s.restarts.load(Ordering::Relaxed),
                        panics: s.panics.load(Ordering::Relaxed),
                        last_error: s.last_error(),
                    })
                    .collect(),
                alerts_delivered: sink_counters.delivered.load(Ordering::Relaxed),
                sink_failures: sink_counters.failures.load(Ordering::Relaxed),
                shutdown_timed_out: timed_out,
            };
            tracing::info!(
                samples = report.pipeline.samples,
                alerts = report.alerts_delivered,
                ring_dropped = report.ring.dropped(),
                "edge-agent stopped"
            );
            report
        })
    };
    Ok(AgentHandle {
        shutdown,
        ring,
        counters,
        statuses,
        journal,
        uplink: uplink_stats,
        models: live_models,
        reload_models,
        source,
        reloader: ConfigReloader {
            set: drivers,
            pipeline: pipeline_link,
        },
        lifecycle,
    })
}

/// Runs until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<RunReport> {
    let handle = start(config, opts)?;
    let token = handle.shutdown_token();
    tokio::select! {
        _ = shutdown.cancelled() => token.cancel(),
        _ = token.cancelled() => {}
    }
    handle.wait().await
}
