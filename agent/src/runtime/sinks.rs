//! Starting the delivery side: the journal, the sink thread with every configured
//! sink, and the uplink that forwards the journal.

use std::sync::{Arc, Mutex};

use edge_driver_api::Clock;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::delivery::alarm::AlarmState;
use crate::delivery::journal::fs::StdFs;
use crate::delivery::journal::sink::JournalSink;
use crate::delivery::journal::{Journal, Lane};
use crate::delivery::sink::{AlertSink, ConsoleSink, JsonlSink, SinkCounters, SinkMsg, run_sinks};
use crate::delivery::sparkplug::{AlertSource, BdSeqFile, Outage, SparkplugLink, TagSource};
use crate::delivery::uplink::{UplinkStats, run_uplink};
use crate::inbound::{Audit, WriteReport, Writes};

/// The running delivery side.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// Into the sink thread (the pipeline, events and the model watcher send here).
    pub alerts_tx: mpsc::Sender<SinkMsg>,
    pub sink_counters: Arc<SinkCounters>,
    /// Receives once the sink thread has delivered everything and flushed.
    pub sinks_done: std::sync::mpsc::Receiver<()>,
    pub journal: Option<Arc<Mutex<Journal>>>,
    pub alarms: Arc<AlarmState>,
    pub uplink_stats: Arc<UplinkStats>,
    pub uplink: Option<JoinHandle<()>>,
    /// Stops the uplink (after the sinks finished, so the last alerts go out).
    pub uplink_stop: CancellationToken,
    /// Wakes the uplink when the journal has new records.
    journal_wake: Arc<Notify>,
}

/// Opens the journal, starts the sink thread and the uplink.
pub(crate) fn start(
    config: &Config,
    clock: &Clock,
    extra: Vec<Box<dyn AlertSink>>,
) -> anyhow::Result<Delivery> {
    let journal_wake = Arc::new(Notify::new());
    let journal = open_journal(config)?;
    let alarms = AlarmState::new(&config.alarms);
    let sinks = build_sinks(config, clock, &journal, &journal_wake, &alarms, extra)?;
    let (alerts_tx, alerts_rx) = mpsc::channel(config.alerts.queue);
    let sink_counters = Arc::new(SinkCounters::default());
    let sinks_done = spawn_sink_thread(alerts_rx, sinks, sink_counters.clone())?;
    Ok(Delivery {
        alerts_tx,
        sink_counters,
        sinks_done,
        journal,
        alarms,
        uplink_stats: Arc::new(UplinkStats::default()),
        uplink: None,
        uplink_stop: CancellationToken::new(),
        journal_wake,
    })
}

impl Delivery {
    /// Starts the uplink, once the tags it reports as a Sparkplug node (`tags`)
    /// can be read. It forwards from the journal and outlives the pipeline at
    /// shutdown, so that the last alerts still go out.
    pub(crate) fn start_uplink(
        &mut self,
        config: &Config,
        tags: TagSource,
        alerts: AlertSource,
        writes: Arc<Writes>,
        commands: Option<crate::delivery::uplink::CommandLink>,
    ) {
        let (Some(u), Some(j)) = (&config.uplink, &self.journal) else {
            return;
        };
        let mut u = u.clone();
        u.commands = commands;
        u.sparkplug = config.sparkplug.clone().map(|cfg| {
            let dir = config.journal.as_ref().map(|j| j.store.dir.as_path());
            let detectors = config
                .assets
                .iter()
                .flat_map(|a| {
                    let names = a.detectors.iter().map(|d| d.name.to_string());
                    let models = a.models.iter().map(|b| b.name.to_string());
                    names.chain(models).map(|d| (a.name.to_string(), d))
                })
                .collect();
            let names: Vec<String> = tags().into_iter().map(|t| t.name).collect();
            let outage = Outage::open(dir, &names, cfg.history);
            Arc::new(SparkplugLink {
                cfg,
                tags,
                alerts,
                detectors,
                bd_seq: std::sync::Mutex::new(BdSeqFile::open(dir)),
                outage: std::sync::Mutex::new(outage),
                writes,
            })
        });
        self.uplink = Some(tokio::spawn(run_uplink(
            u,
            j.clone(),
            self.journal_wake.clone(),
            self.uplink_stop.clone(),
            self.uplink_stats.clone(),
        )));
    }
}

/// Where write reports go: the events lane (`events/audit`), like every event.
/// A full sink queue makes the report wait in a task of its own rather than be
/// dropped: an audit trail with gaps is no audit trail.
pub(crate) fn audit_trail(delivery: &Delivery) -> Audit {
    // Weak: the sink thread ends when the pipeline drops the last strong sender.
    let tx = delivery.alerts_tx.downgrade();
    Box::new(
        move |report: &WriteReport| match serde_json::to_vec(report) {
            Ok(body) => send_event(&tx, "audit", report.time.wall_ns, body),
            Err(e) => tracing::error!(error = %e, "cannot encode a write report"),
        },
    )
}

/// An event onto the events lane through a weak sender; when the sink queue is
/// full the event waits in a task of its own rather than be dropped.
fn send_event(tx: &mpsc::WeakSender<SinkMsg>, source: &str, wall_ns: i64, body: Vec<u8>) {
    let msg = SinkMsg::Event {
        source: Arc::from(source),
        wall_ns,
        body,
    };
    let Some(tx) = tx.upgrade() else {
        tracing::warn!(source, "event not sent: the agent is stopping");
        return;
    };
    if let Err(mpsc::error::TrySendError::Full(msg)) = tx.try_send(msg) {
        tokio::spawn(async move {
            let _ = tx.send(msg).await;
        });
    }
}

/// Where command statuses and audit events go: the events lane, under the
/// source the executor names (`#cmd/{op}/{id}/status`, `audit`). Weak, like the
/// audit trail.
pub(crate) fn command_emit(delivery: &Delivery) -> crate::inbound::commands::Emit {
    let tx = delivery.alerts_tx.downgrade();
    Arc::new(move |source: String, body: Vec<u8>| {
        let wall_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        send_event(&tx, &source, wall_ns, body);
    })
}

fn open_journal(config: &Config) -> anyhow::Result<Option<Arc<Mutex<Journal>>>> {
    let Some(j) = &config.journal else {
        return Ok(None);
    };
    let dir = &j.store.dir;
    let (journal, rep) = Journal::open(j.store.clone(), Arc::new(StdFs))
        .map_err(|e| anyhow::anyhow!("cannot open the journal in {}: {e}", dir.display()))?;
    let stats = journal.stats();
    tracing::info!(
        dir = %dir.display(), segments = rep.segments, records = rep.records,
        pending_alerts = stats.pending[Lane::Alert as usize], corrupt = rep.corrupt,
        torn = rep.torn, quarantined = rep.quarantined.len(), "journal opened"
    );
    Ok(Some(Arc::new(Mutex::new(journal))))
}

/// The journal first (where alerts are accepted), then the local alarm outputs
/// (they must not wait behind a slow console or file), the console, the JSON-lines
/// file and the embedder's sinks.
fn build_sinks(
    config: &Config,
    clock: &Clock,
    journal: &Option<Arc<Mutex<Journal>>>,
    journal_wake: &Arc<Notify>,
    alarms: &Arc<AlarmState>,
    mut extra: Vec<Box<dyn AlertSink>>,
) -> anyhow::Result<Vec<Box<dyn AlertSink>>> {
    let mut sinks: Vec<Box<dyn AlertSink>> = Vec::new();
    if let (Some(journal), Some(j)) = (journal, &config.journal) {
        sinks.push(Box::new(
            JournalSink::new(journal.clone(), j.backlog)
                .with_notify(journal_wake.clone())
                .with_identity(config.agent.id.clone(), clock.clone()),
        ));
    }
    #[cfg(feature = "gpio")]
    if !config.alarms.is_empty() {
        let pins = crate::delivery::alarm::linux_pins(&config.alarms);
        sinks.push(Box::new(crate::delivery::alarm::AlarmSink::new(
            &config.alarms,
            pins,
            alarms.clone(),
        )));
    }
    #[cfg(not(feature = "gpio"))]
    let _ = alarms;
    if config.alerts.console {
        sinks.push(Box::new(ConsoleSink));
    }
    if let Some(path) = &config.alerts.jsonl {
        let sink = JsonlSink::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open alert file {}: {e}", path.display()))?;
        sinks.push(Box::new(sink));
    }
    sinks.append(&mut extra);
    Ok(sinks)
}

/// A dedicated thread, not `spawn_blocking`: it lives as long as the agent, and a
/// long-running blocking task would stop tokio's paused clock from auto-advancing
/// in virtual-time tests.
fn spawn_sink_thread(
    rx: mpsc::Receiver<SinkMsg>,
    sinks: Vec<Box<dyn AlertSink>>,
    counters: Arc<SinkCounters>,
) -> anyhow::Result<std::sync::mpsc::Receiver<()>> {
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("alert-sinks".into())
        .spawn(move || {
            run_sinks(rx, sinks, counters);
            let _ = done_tx.send(());
        })
        .map_err(|e| anyhow::anyhow!("cannot start the alert sink thread: {e}"))?;
    Ok(done_rx)
}
