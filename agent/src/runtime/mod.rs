//! The composition root: [`start`] builds every part of a running agent from a
//! [`Config`] and wires them together, as a list of steps:
//!
//! 1. the sample ring;
//! 2. the delivery side (`sinks`): journal, sink thread, uplink;
//! 3. the model watcher;
//! 4. the pipeline task;
//! 5. the drivers (`drivers`), each under its supervisor;
//! 6. operations (`ops`): control socket, metrics, systemd, the stats log;
//! 7. the stop sequence (`shutdown`).
//!
//! [`reload`] applies a new configuration to it; [`service`] is what `edge-agent
//! run` adds around it (signals, systemd, SIGHUP).
//!
//! Task tree (one cancellation tree, rooted in the [`AgentHandle`]'s `shutdown` token):
//!
//! ```text
//! shutdown ──► drivers token (child) ──► one supervisor per driver ──► driver attempt task
//!          └─► stats task
//! pipeline_stop (cancelled by the stop sequence once every driver returned)
//!          └─► pipeline task ──(bounded mpsc, owned by the pipeline)──► sink thread
//! ```
//!
//! Shutdown order: stop drivers (each gets `grace`, then is aborted) → the pipeline
//! drains what is left in the ring → it drops the alert sender → the sink thread
//! delivers the remaining alerts and flushes → the report is returned. The whole
//! sequence is bounded by `agent.shutdown_timeout`.

mod drivers;
mod ops;
pub use ops::Endpoints;
mod deploy;
pub mod reload;
pub mod remote;
pub mod service;
mod shutdown;
mod sinks;

use std::sync::Arc;

use edge_driver_api::Clock;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::alert::{EngineStats, IdGenerator};
use crate::config::{Config, DriverInstance};
use crate::delivery::events::AgentEvents;
use crate::delivery::journal::Journal;
use crate::delivery::sink::AlertSink;
use crate::delivery::uplink::UplinkStats;
use crate::inbound::{WriteRoutes, Writes};
use crate::ingest::latest::{DescribeFn, LatestValues, TextTap};
use crate::ingest::meter::DriverMeter;
use crate::ingest::ring::{RingStats, SampleRing};
use crate::ingest::supervisor::{DriverState, DriverStatus};
use crate::ops::status::StatusSource;
use crate::pipeline::scoring::{LiveModels, ModelStore, watch_models};
use crate::pipeline::task::Taps;
use crate::pipeline::{PipelineCounters, PipelineSnapshot, PipelineTask, Processor, run_pipeline};
use drivers::{DriverSet, Spawner};
use reload::{ConfigReloader, PipelineLink};
use sinks::Delivery;

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
    pub systemd: Option<Arc<crate::ops::sdnotify::Notifier>>,
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
    /// A remote `restart` or `config_update` asked to run the agent again.
    pub restart_requested: bool,
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
    models: Arc<LiveModels>,
    reload_models: Arc<tokio::sync::Notify>,
    source: StatusSource,
    endpoints: Endpoints,
    reloader: ConfigReloader,
    lifecycle: JoinHandle<RunReport>,
    restart: Arc<std::sync::atomic::AtomicBool>,
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
        self.counters.snapshot()
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
    pub fn models(&self) -> Arc<ModelStore> {
        self.models.get()
    }

    /// Applies a new configuration's driver and asset changes live (what SIGHUP
    /// does; see [`crate::runtime::reload`]).
    pub fn reloader(&self) -> ConfigReloader {
        self.reloader.clone()
    }

    /// Where the metrics endpoint and the web UI listen.
    pub fn endpoints(&self) -> Endpoints {
        self.endpoints
    }

    /// What `edge-agent status` would print, now.
    pub fn status(&self) -> crate::ops::status::AgentStatus {
        self.source.snapshot()
    }

    /// Every tag whose name matches `filter`: what `edge-agent tags` shows.
    pub fn tags(&self, filter: &str) -> crate::ops::status::TagsReport {
        self.source.tags(filter)
    }

    /// Writes a tag, as `edge-agent write` does (checked, routed to its driver,
    /// audited).
    pub async fn write(&self, order: crate::inbound::WriteOrder) -> crate::inbound::WriteReport {
        self.source.writes.write(order).await
    }

    /// Reloads every model now (what SIGHUP does): changed versions are validated
    /// and swapped in, bad ones rejected.
    pub fn reload_models(&self) {
        self.reload_models.notify_one();
    }

    /// Waits until the agent stops (after its shutdown token is cancelled).
    pub async fn wait(self) -> anyhow::Result<RunReport> {
        let mut report = self.lifecycle.await?;
        report.restart_requested = self.restart.load(std::sync::atomic::Ordering::SeqCst);
        Ok(report)
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
    let ring = Arc::new(SampleRing::new(config.ring.capacity, config.ring.overflow));
    let recent = ops::recent_alerts(&config);
    let ui = ops::ui_parts(&config, recent.as_ref());
    let mut extra = std::mem::take(&mut opts.extra_sinks);
    extra.extend(recent.as_ref().map(|r| r.sink()));
    let mut delivery = sinks::start(&config, &clock, extra)?;
    let labels = config.labels.as_ref().zip(recent.as_ref()).map(|(l, r)| {
        Arc::new(crate::delivery::labels::Labeller::new(
            config.agent.id.clone(),
            l,
            r.clone(),
            clock.clone(),
            delivery.alerts_tx.clone(),
        ))
    });
    let events = Arc::new(AgentEvents::new(
        config.agent.id.clone(),
        &config.registry,
        delivery.alerts_tx.clone(),
    ));
    let latest = latest_values(&config);
    let reload_models = opts.reload_models.take().unwrap_or_default();
    let models = start_model_watch(&config, &clock, &delivery, &reload_models, &shutdown);
    let taps = Taps {
        latest: latest.clone(),
        history: ui.as_ref().map(|u| u.history.clone()),
        trace: ui.as_ref().map(|u| u.trace.clone()),
        features: ui.as_ref().map(|u| u.features.clone()),
    };
    let pipeline = start_pipeline(&config, &clock, &opts, &ring, &delivery, &models, taps);
    let drivers_token = shutdown.child_token();
    let tap: Arc<dyn edge_driver_api::EventSink> = Arc::new(TextTap {
        latest: latest.clone(),
        inner: events.clone(),
    });
    let routes = Arc::new(WriteRoutes::default());
    let (drivers, statuses) = start_drivers(
        &config,
        &mut opts,
        &ring,
        &clock,
        tap,
        &drivers_token,
        &routes,
    );
    let writes = Arc::new(Writes::new(
        config.agent.id.clone(),
        routes,
        latest.clone(),
        clock.clone(),
        sinks::audit_trail(&delivery),
    ));
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
        counters: pipeline.counters.clone(),
        drivers: drivers.meters(),
        journal: delivery.journal.clone(),
        uplink: config
            .uplink
            .as_ref()
            .map(|_| delivery.uplink_stats.clone()),
        sinks: delivery.sink_counters.clone(),
        models: models.clone(),
        alarms: delivery.alarms.clone(),
        latest,
        ui_url: Default::default(),
        labels,
        writes: writes.clone(),
    };
    let reloader = ConfigReloader {
        set: drivers.clone(),
        pipeline: pipeline.link,
    };
    let restart = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let commands = remote_commands(
        &config, &clock, &delivery, &source, &reloader, &restart, &shutdown,
    );
    let tags_of = source.clone();
    let alerts_of = recent.clone();
    delivery.start_uplink(
        &config,
        Arc::new(move || tags_of.tags("").tags),
        Arc::new(move || alerts_of.as_ref().map(|r| r.active()).unwrap_or_default()),
        writes,
        commands,
    );
    let endpoints = ops::start(
        &config,
        &opts,
        &source,
        ui.as_ref(),
        &pipeline.counters,
        statuses.len(),
        &shutdown,
    );
    let stats = ops::spawn_stats(
        source.clone(),
        config.agent.stats_interval,
        shutdown.clone(),
    );
    let handle = AgentHandle {
        shutdown: shutdown.clone(),
        ring: ring.clone(),
        counters: pipeline.counters.clone(),
        statuses: statuses.clone(),
        journal: delivery.journal.clone(),
        uplink: delivery.uplink_stats.clone(),
        models,
        reload_models,
        source,
        endpoints,
        reloader,
        restart,
        lifecycle: shutdown::spawn(shutdown::Stoppable {
            shutdown,
            drivers_token,
            drivers,
            events,
            pipeline_stop: pipeline.stop,
            pipeline: pipeline.task,
            counters: pipeline.counters,
            delivery,
            stats,
            systemd: opts.systemd.clone(),
            timeout: config.agent.shutdown_timeout,
            ring,
            statuses,
        }),
    };
    Ok(handle)
}

/// Remote operations (`[commands]`): the executor, fed by the uplink, and the
/// end of a command a restart interrupted.
fn remote_commands(
    config: &Config,
    clock: &Clock,
    delivery: &Delivery,
    source: &StatusSource,
    reloader: &ConfigReloader,
    restart: &Arc<std::sync::atomic::AtomicBool>,
    shutdown: &CancellationToken,
) -> Option<crate::delivery::uplink::CommandLink> {
    use crate::inbound::commands::{Executor, Gate, ReplayGuard, Reporter, capabilities};
    let (cfg, uplink) = (config.commands.clone()?, config.uplink.as_ref()?);
    let file = std::path::Path::new(&config.file);
    let parts = remote::Parts {
        file: file.is_file().then(|| file.to_path_buf()),
        reloader: reloader.clone(),
        source: source.clone(),
        writes: source.writes.clone(),
        health_window: cfg.health_window,
        restart: restart.clone(),
        shutdown: shutdown.clone(),
    };
    let seen = config
        .journal
        .as_ref()
        .map(|j| j.store.dir.join("commands.seen"));
    let prefix = &uplink.topic_prefix;
    let caps = capabilities(&config.agent.id, prefix, &cfg);
    let reporter = Reporter {
        agent_id: config.agent.id.clone(),
        emit: sinks::command_emit(delivery),
        clock: clock.clone(),
        counters: Default::default(),
    };
    let replay = ReplayGuard::open(seen, cfg.replay_window);
    let gate = Gate::new(cfg, prefix, &config.agent.id, replay);
    let base = gate.base().to_string();
    let labels = source.labels.clone().map(remote::label_handler);
    let executor = Executor {
        gate,
        ops: remote::operations(parts.clone(), labels),
        reporter: reporter.clone(),
    };
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(executor.run(rx, shutdown.clone()));
    tokio::spawn(remote::resume(parts, move |op, id, outcome| {
        reporter.report(op, id, outcome)
    }));
    Some(crate::delivery::uplink::CommandLink {
        base,
        capabilities: serde_json::to_vec(&caps).unwrap_or_default(),
        tx,
    })
}

/// One latest-value slot per signal, with its driver kind's names for exception
/// codes.
fn latest_values(config: &Config) -> Arc<LatestValues> {
    let kinds: std::collections::HashMap<&str, DescribeFn> = config
        .drivers
        .iter()
        .filter_map(|d| Some((&*d.name, crate::config::exception_names(d.kind)?)))
        .collect();
    Arc::new(LatestValues::new(&config.registry, &kinds))
}

/// The models in service, watched for new versions (always: a reload may bring
/// the first model).
fn start_model_watch(
    config: &Config,
    clock: &Clock,
    delivery: &Delivery,
    reload: &Arc<tokio::sync::Notify>,
    shutdown: &CancellationToken,
) -> Arc<LiveModels> {
    let live = Arc::new(LiveModels::new(config.models.clone()));
    tokio::spawn(watch_models(
        live.clone(),
        reload.clone(),
        shutdown.clone(),
        delivery.alerts_tx.downgrade(),
        config.agent.id.clone(),
        clock.clone(),
    ));
    live
}

/// The running pipeline task and how to reach it.
struct RunningPipeline {
    task: JoinHandle<Processor>,
    /// Cancelled by the stop sequence once every driver has returned.
    stop: CancellationToken,
    counters: Arc<PipelineCounters>,
    link: PipelineLink,
}

fn start_pipeline(
    config: &Config,
    clock: &Clock,
    opts: &RunOptions,
    ring: &Arc<SampleRing>,
    delivery: &Delivery,
    models: &Arc<LiveModels>,
    taps: Taps,
) -> RunningPipeline {
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
    let (reconfigure_tx, reconfigure) = mpsc::channel(1);
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_pipeline(
        processor,
        PipelineTask {
            ring: ring.clone(),
            tx: delivery.alerts_tx.clone(),
            batch_size: config.ring.batch,
            stop: stop.clone(),
            clock: clock.clone(),
            agent_id: config.agent.id.clone(),
            telemetry: config.telemetry.clone(),
            reconfigure,
            taps,
        },
    ));
    RunningPipeline {
        task,
        stop,
        counters,
        link: PipelineLink {
            tx: reconfigure_tx,
            models: models.clone(),
            agent_id: config.agent.id.clone(),
            limits: config.alerts.limits.clone(),
        },
    }
}

/// Every configured driver (and the embedder's), each under its own supervisor.
fn start_drivers(
    config: &Config,
    opts: &mut RunOptions,
    ring: &Arc<SampleRing>,
    clock: &Clock,
    events: Arc<dyn edge_driver_api::EventSink>,
    token: &CancellationToken,
    writes: &Arc<WriteRoutes>,
) -> (Arc<DriverSet>, Vec<Arc<DriverStatus>>) {
    let set = Arc::new(DriverSet::new(
        Spawner {
            ring: ring.clone(),
            clock: clock.clone(),
            backoff: config.supervisor,
            grace: config.agent.shutdown_timeout.mul_f64(0.4),
            events,
            parent: token.clone(),
            writes: writes.clone(),
        },
        config.fingerprints.clone(),
        &config.registry,
    ));
    let mut statuses = Vec::new();
    for d in config
        .drivers
        .iter()
        .cloned()
        .chain(opts.extra_drivers.drain(..))
    {
        let status = Arc::new(DriverStatus::new(d.name.clone(), d.kind));
        statuses.push(status.clone());
        let meter = Arc::new(DriverMeter::new(&d.name, &config.registry));
        set.start(d.name.clone(), d.factory.clone(), status, meter);
    }
    (set, statuses)
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
