//! Alert sinks: where alerts go after the engine.
//!
//! Sinks run on one dedicated thread fed by a bounded channel from the pipeline. Each
//! alert goes to every sink; a failing sink is logged and counted and does not stop
//! the others. The store-and-forward journal plugs in here as another [`AlertSink`].

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::alert::Alert;

/// What the pipeline sends to the sink thread.
#[derive(Debug)]
pub enum SinkMsg {
    Alert(Box<Alert>),
    /// A per-asset feature summary (JSON), for the low-priority lane.
    Telemetry {
        asset: Arc<str>,
        wall_ns: i64,
        body: Vec<u8>,
    },
    /// A driver event (JSON, see `events.rs`), for the event lane.
    Event {
        source: Arc<str>,
        wall_ns: i64,
        body: Vec<u8>,
    },
    /// An operator's label of an alert (JSON, see `labels.rs`), for the journal.
    Label {
        id: u128,
        wall_ns: i64,
        body: Vec<u8>,
    },
    /// Periodic: lets sinks retry and sync even when nothing else arrives.
    Tick,
}

/// A destination for alerts.
pub trait AlertSink: Send {
    fn name(&self) -> &str;
    /// Delivers one alert. Called in alert order.
    fn deliver(&mut self, alert: &Alert) -> std::io::Result<()>;
    /// Alerts the sink raised about itself (e.g. the journal cannot store alerts);
    /// the sink thread delivers them to every sink.
    fn take_system_alerts(&mut self) -> Vec<Alert> {
        Vec::new()
    }
    /// Delivers a telemetry summary; most sinks ignore them.
    fn telemetry(&mut self, _asset: &str, _wall_ns: i64, _body: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
    /// Delivers a driver event (JSON); most sinks ignore them.
    fn event(&mut self, _source: &str, _wall_ns: i64, _body: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
    /// Delivers an operator's label (JSON); only the journal takes them.
    fn label(&mut self, _id: u128, _wall_ns: i64, _body: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
    /// Makes delivered alerts durable/visible (called when the channel is idle and at
    /// shutdown).
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Human-readable lines on stdout.
#[derive(Debug, Default)]
pub struct ConsoleSink;

impl AlertSink for ConsoleSink {
    fn name(&self) -> &str {
        "console"
    }
    fn deliver(&mut self, alert: &Alert) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", alert.human_line())
    }
    fn event(&mut self, _source: &str, _wall_ns: i64, body: &[u8]) -> std::io::Result<()> {
        let v: serde_json::Value = serde_json::from_slice(body).map_err(std::io::Error::other)?;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{} EVENT    {} = {}",
            v["time"]["wall"].as_str().unwrap_or("?"),
            v["signal"].as_str().unwrap_or("?"),
            v["value"]
        )
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().lock().flush()
    }
}

/// One JSON document per line, appended to a file.
#[derive(Debug)]
pub struct JsonlSink {
    path: PathBuf,
    out: BufWriter<File>,
    /// Written since the last sync.
    dirty: bool,
}

impl JsonlSink {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(JsonlSink {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            dirty: false,
        })
    }
}

impl AlertSink for JsonlSink {
    fn name(&self) -> &str {
        "jsonl"
    }
    fn deliver(&mut self, alert: &Alert) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, alert).map_err(std::io::Error::other)?;
        self.out.write_all(b"\n")?;
        self.dirty = true;
        // Alerts are rare; make each visible to readers (tail -f) immediately.
        self.out.flush()
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        if std::mem::take(&mut self.dirty) {
            self.out.get_ref().sync_data()?;
        }
        Ok(())
    }
}

impl Drop for JsonlSink {
    fn drop(&mut self) {
        if let Err(e) = self.out.flush() {
            tracing::error!(path = %self.path.display(), error = %e, "could not flush alert file");
        }
    }
}

/// Counters of the sink thread.
#[derive(Debug, Default)]
pub struct SinkCounters {
    pub delivered: AtomicU64,
    pub telemetry: AtomicU64,
    pub events: AtomicU64,
    pub failures: AtomicU64,
    /// Alerts raised or escalated, by severity (info, warning, prefault, critical).
    pub raised: [AtomicU64; 4],
    pub cleared: AtomicU64,
}

impl SinkCounters {
    fn count(&self, a: &Alert) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        match a.state {
            crate::alert::AlertState::Raised => &self.raised[a.severity as usize],
            crate::alert::AlertState::Cleared => &self.cleared,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs on its own thread until the channel closes (the pipeline dropped its
/// sender), delivering every message to every sink, then flushes.
pub fn run_sinks(
    mut rx: mpsc::Receiver<SinkMsg>,
    mut sinks: Vec<Box<dyn AlertSink>>,
    counters: Arc<SinkCounters>,
) {
    let mut failing: Vec<bool> = vec![false; sinks.len()];
    while let Some(msg) = rx.blocking_recv() {
        let is_tick = matches!(msg, SinkMsg::Tick);
        for (i, sink) in sinks.iter_mut().enumerate() {
            let r = match &msg {
                SinkMsg::Alert(a) => sink.deliver(a),
                SinkMsg::Telemetry {
                    asset,
                    wall_ns,
                    body,
                } => sink.telemetry(asset, *wall_ns, body),
                SinkMsg::Event {
                    source,
                    wall_ns,
                    body,
                } => sink.event(source, *wall_ns, body),
                SinkMsg::Label { id, wall_ns, body } => sink.label(*id, *wall_ns, body),
                SinkMsg::Tick => Ok(()),
            };
            match r {
                Ok(()) => {
                    if !is_tick && std::mem::take(&mut failing[i]) {
                        tracing::info!(sink = sink.name(), "alert sink recovered");
                    }
                }
                Err(e) => {
                    counters.failures.fetch_add(1, Ordering::Relaxed);
                    if !std::mem::replace(&mut failing[i], true) {
                        tracing::error!(sink = sink.name(), error = %e, "alert sink failed");
                    }
                }
            }
        }
        // Alerts a sink raised about itself go to every sink (the journal keeps its
        // own in its in-memory backlog until it can write again).
        let mut own: Vec<Alert> = Vec::new();
        for sink in sinks.iter_mut() {
            own.append(&mut sink.take_system_alerts());
        }
        for a in &own {
            for sink in sinks.iter_mut() {
                if sink.deliver(a).is_err() {
                    counters.failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            counters.count(a);
        }
        match msg {
            SinkMsg::Alert(a) => counters.count(&a),
            SinkMsg::Telemetry { .. } => {
                counters.telemetry.fetch_add(1, Ordering::Relaxed);
            }
            SinkMsg::Event { .. } => {
                counters.events.fetch_add(1, Ordering::Relaxed);
            }
            SinkMsg::Label { .. } | SinkMsg::Tick => {}
        }
        if rx.is_empty() {
            for sink in sinks.iter_mut() {
                if let Err(e) = sink.flush() {
                    tracing::warn!(sink = sink.name(), error = %e, "alert sink flush failed");
                }
            }
        }
    }
    for sink in sinks.iter_mut() {
        if let Err(e) = sink.flush() {
            tracing::error!(sink = sink.name(), error = %e, "alert sink flush failed at shutdown");
        }
    }
}
