//! The Sparkplug B edge node (`[sparkplug]`): what the agent says about its
//! devices to a Sparkplug host (Ignition, HiveMQ/EMQX Sparkplug hosts), without I/O.
//!
//! * **Devices are drivers.** A driver is a Sparkplug device (`DBIRTH` … `DDEATH`)
//!   whose metrics are its signals; a driver's tags share its connection, so they
//!   are born and die together. A device is alive while at least one of its tags
//!   is good; when none is (the PLC is down), `DDEATH`; when one is good again, a
//!   new `DBIRTH` with every metric.
//! * **Session.** Per MQTT connection: the will is `NDEATH` with `bdSeq`; after
//!   CONNACK, `NBIRTH` (`seq` 0, the same `bdSeq`, `Node Control/Rebirth`), then a
//!   `DBIRTH` per live device; then `DDATA` with the metrics that changed by more
//!   than the deadband since they were last sent (scanned every `scan`, not per
//!   sample: the hot path pays nothing). `seq` counts every message but `NDEATH`,
//!   0–255, wrapping. `bdSeq` is kept on disk ([`BdSeqFile`]) so that it grows
//!   across restarts and kill -9 too.
//! * **Alerts are node metrics**: per (asset, detector) of the configuration,
//!   `Alerts/{asset}/{detector}/` `Active`, `Severity`, `Score`, `ETA_s`, `Message`
//!   and `Id`, in `NBIRTH` and in `NDATA` when they change (read from the active
//!   alerts every `scan`). An alert of a detector the birth did not name (a system
//!   alert) adds its metrics with a new `NBIRTH`.
//! * **Primary host** (`primary_host`): the node subscribes to
//!   `spBv1.0/STATE/{host}` and births (and sends data) only once the host says
//!   `{"online": true}`; when it says offline, the node publishes `NDEATH` and
//!   reconnects, to wait for it again. A `STATE` older than the last one is ignored.
//! * **Commands.** `NCMD Node Control/Rebirth = true` births everything again.
//!   `DCMD` metrics (by name or alias) become tag writes through the agent's
//!   write path (`inbound/write.rs`: writable tags only, limits, rate, audit);
//!   the written value then comes back in `DDATA` like any change.
//! * Bad quality is a null value (`is_null`) with the property `Quality` = 0
//!   (bad), good is 192, as OPC and Ignition read them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::wire::sparkplug::{
    BD_SEQ, DataType, MessageType, Metric, Payload, PropertySet, REBIRTH, Scalar, topic,
};
use crate::alert::Alert;
use crate::ingest::latest::{TagStatus, TagValue};

/// `[sparkplug]` settings (validated).
#[derive(Clone, Debug, PartialEq)]
pub struct SparkplugConfig {
    pub group_id: String,
    pub edge_node_id: String,
    /// A numeric metric is sent again once it moved by more than this.
    pub deadband: f64,
    /// Per signal, instead of `deadband`.
    pub deadbands: std::collections::HashMap<String, f64>,
    /// How often changed values are looked for.
    pub scan: Duration,
    /// The primary host application: births wait for its `STATE` online, and its
    /// `STATE` offline ends the session.
    pub primary_host: Option<String>,
    /// Value changes kept while disconnected, replayed as historical data after
    /// the next births (0: none).
    pub history: usize,
    /// Whether DCMD may write tags (off unless enabled: a DCMD carries no
    /// signature, so enabling it trusts the broker's access control).
    pub dcmd_writes: bool,
}

impl SparkplugConfig {
    /// The deadband of `signal`.
    pub fn deadband_of(&self, signal: &str) -> f64 {
        self.deadbands.get(signal).copied().unwrap_or(self.deadband)
    }
}

/// A message to publish: topic and payload bytes.
pub type Outgoing = (String, Vec<u8>);

/// Every tag's latest value and quality, in registration order.
pub type TagSource = Arc<dyn Fn() -> Vec<TagStatus> + Send + Sync>;

/// The open alerts (most severe first).
pub type AlertSource = Arc<dyn Fn() -> Vec<Alert> + Send + Sync>;

/// What the uplink needs to be a Sparkplug edge node.
pub struct SparkplugLink {
    pub cfg: SparkplugConfig,
    pub tags: TagSource,
    pub alerts: AlertSource,
    /// (asset, detector) of every detector and model binding of the configuration.
    pub detectors: Vec<(String, String)>,
    pub bd_seq: Mutex<BdSeqFile>,
    /// What changed while disconnected.
    pub outage: Mutex<Outage>,
    /// Where DCMD writes go.
    pub writes: Arc<crate::inbound::Writes>,
}

/// Value changes recorded while the node is disconnected: (ms, tag index, value).
///
/// Also appended to `sparkplug.outage` in the journal's directory (one JSON line
/// per change, by signal name), so an agent restarted during an outage still
/// replays what it saw before; the file goes when the outage's changes have
/// been taken for replay. Lines are not synced: a crash of the process keeps
/// them, a power cut may lose the last seconds.
#[derive(Debug, Default)]
pub struct Outage {
    /// Per tag, the value last recorded (empty: the outage's first scan sets it).
    last: Vec<Option<Scalar>>,
    changes: std::collections::VecDeque<(u64, usize, Option<Scalar>)>,
    /// Changes dropped because `history` was full (the oldest go first).
    pub dropped: u64,
    file: Option<PathBuf>,
    /// Lines in the file (it is rewritten when it holds twice `history`).
    lines: usize,
}

/// One line of `sparkplug.outage`.
#[derive(serde::Serialize, serde::Deserialize)]
struct OutageLine {
    t: u64,
    s: String,
    v: Option<Scalar>,
}

impl Outage {
    /// The outage kept in `dir` by an earlier run, for today's `names` (changes
    /// of signals that no longer exist are dropped), at most `history`.
    pub fn open(dir: Option<&Path>, names: &[String], history: usize) -> Outage {
        let file = dir.map(|d| d.join("sparkplug.outage"));
        let mut o = Outage {
            file,
            ..Outage::default()
        };
        let Some(text) = o
            .file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
        else {
            return o;
        };
        for l in text.lines() {
            let Ok(line) = serde_json::from_str::<OutageLine>(l) else {
                continue;
            };
            if let Some(i) = names.iter().position(|n| *n == line.s) {
                o.changes.push_back((line.t, i, line.v));
            }
        }
        while o.changes.len() > history {
            o.changes.pop_front();
            o.dropped += 1;
        }
        o.lines = text.lines().count();
        if !o.changes.is_empty() {
            tracing::info!(
                changes = o.changes.len(),
                "Sparkplug: values seen during an outage before the restart will be replayed"
            );
        }
        o
    }

    /// Appends `new` changes to the file; rewrites it when it grew past twice
    /// what is kept.
    fn persist(&mut self, new: usize, tags: &[TagStatus], history: usize) {
        use std::io::Write;
        let Some(path) = self.file.clone() else {
            return;
        };
        let line = |(t, i, v): &(u64, usize, Option<Scalar>)| {
            let l = OutageLine {
                t: *t,
                s: tags.get(*i).map(|t| t.name.clone()).unwrap_or_default(),
                v: v.clone(),
            };
            serde_json::to_string(&l).unwrap_or_default()
        };
        let rewrite = self.lines + new > 2 * history.max(1);
        let (skip, append) = if rewrite {
            (0, false)
        } else {
            (self.changes.len() - new, true)
        };
        let mut out = String::new();
        for c in self.changes.iter().skip(skip) {
            out.push_str(&line(c));
            out.push('\n');
        }
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(&path)
            .and_then(|mut f| f.write_all(out.as_bytes()));
        match written {
            Ok(()) if rewrite => self.lines = self.changes.len(),
            Ok(()) => self.lines += new,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "Sparkplug: cannot keep outage values on disk; a restart would lose them")
            }
        }
    }

    fn clear_file(&mut self) {
        if let Some(p) = &self.file {
            let _ = std::fs::remove_file(p);
        }
        self.lines = 0;
    }
}

impl std::fmt::Debug for SparkplugLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparkplugLink")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl SparkplugLink {
    /// Records what changed since the last call while disconnected (the first call
    /// of an outage takes the values as they are).
    pub fn record(&self, now_ms: u64) {
        if self.cfg.history == 0 {
            return;
        }
        let tags = (self.tags)();
        let values: Vec<Option<Scalar>> = tags.iter().map(current).collect();
        let mut o = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        if o.last.len() != values.len() {
            o.last = values;
            return;
        }
        let mut new = 0;
        for (i, v) in values.into_iter().enumerate() {
            if !moved(&o.last[i], &v, self.cfg.deadband_of(&tags[i].name)) {
                continue;
            }
            if o.changes.len() >= self.cfg.history {
                o.changes.pop_front();
                o.dropped += 1;
            }
            o.changes.push_back((now_ms, i, v.clone()));
            o.last[i] = v;
            new += 1;
        }
        if new > 0 {
            let new = new.min(o.changes.len());
            o.persist(new, &tags, self.cfg.history);
        }
    }

    /// The changes recorded during the outage that ends now.
    pub fn take_outage(&self) -> Vec<(u64, usize, Option<Scalar>)> {
        let mut o = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        o.last.clear();
        o.clear_file();
        o.changes.drain(..).collect()
    }

    /// A new connection's edge node: the next `bdSeq`, today's tags.
    pub fn node(&self) -> EdgeNode {
        let bd = self
            .bd_seq
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_next();
        let mut n = EdgeNode::new(self.cfg.clone(), bd, &(self.tags)());
        n.set_ranges(&self.writes.ranges());
        n.alerts = self
            .detectors
            .iter()
            .map(|(a, d)| AlertSlot::new(a, d))
            .collect();
        n
    }
}

/// Milliseconds since the Unix epoch now (Sparkplug timestamps).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Quality property values (OPC DA codes, as Ignition reads them).
const GOOD: i32 = 192;
const BAD: i32 = 0;

#[derive(Debug)]
struct DeviceMetric {
    name: String,
    alias: u64,
    deadband: f64,
    datatype: DataType,
    unit: Option<String>,
    /// A writable tag's `min`/`max` (`engLow`/`engHigh` in its birth).
    range: Option<(f64, f64)>,
    /// What was last sent (`None`: null).
    sent: Option<Scalar>,
}

#[derive(Debug)]
struct Device {
    id: String,
    alive: bool,
    metrics: Vec<DeviceMetric>,
}

/// The metrics of one detector's alert state, after `Alerts/{asset}/{detector}/`.
const ALERT_METRICS: [(&str, DataType); 6] = [
    ("Active", DataType::Boolean),
    ("Severity", DataType::String),
    ("Score", DataType::Double),
    ("ETA_s", DataType::Double),
    ("Message", DataType::String),
    ("Id", DataType::String),
];
/// Node metric aliases start here (device metrics are 1..=tags).
const ALERT_ALIAS_BASE: u64 = 1 << 32;

/// What a detector's alert metrics say.
#[derive(Clone, Debug, PartialEq)]
struct AlertView([Option<Scalar>; 6]);

impl AlertView {
    fn of(a: Option<&Alert>) -> AlertView {
        let Some(a) = a else {
            return AlertView([
                Some(Scalar::Bool(false)),
                Some(Scalar::Text(String::new())),
                None,
                None,
                Some(Scalar::Text(String::new())),
                Some(Scalar::Text(String::new())),
            ]);
        };
        let finite = |x: f64| x.is_finite().then_some(Scalar::F64(x));
        AlertView([
            Some(Scalar::Bool(true)),
            Some(Scalar::Text(a.severity.as_str().to_string())),
            finite(a.score),
            a.eta_s.and_then(finite),
            Some(Scalar::Text(a.message.clone())),
            Some(Scalar::Text(a.id.to_string())),
        ])
    }
}

#[derive(Debug)]
struct AlertSlot {
    asset: String,
    detector: String,
    sent: Option<AlertView>,
}

impl AlertSlot {
    fn new(asset: &str, detector: &str) -> AlertSlot {
        AlertSlot {
            asset: asset.to_string(),
            detector: detector.to_string(),
            sent: None,
        }
    }

    fn is(&self, a: &Alert) -> bool {
        *a.asset == *self.asset && *a.detector == *self.detector
    }
}

/// What a command from the host asks.
#[derive(Debug, PartialEq)]
pub enum Command {
    Rebirth,
    /// DCMD: values for a device's tags (signal, value), and why the metrics
    /// that cannot be written were left out.
    Write {
        device: String,
        values: Vec<(String, f64)>,
        refused: Vec<String>,
    },
    /// Understood but not acted on, with why.
    Refused(String),
}

/// One connection's edge node state.
#[derive(Debug)]
pub struct EdgeNode {
    cfg: SparkplugConfig,
    bd_seq: u64,
    seq: u64,
    devices: Vec<Device>,
    alerts: Vec<AlertSlot>,
    /// The timestamp of the primary host's last `STATE`.
    host_ts: u64,
}

fn scalar(v: &TagValue) -> Scalar {
    match v {
        TagValue::Integer(i) => Scalar::I64(*i),
        TagValue::Number(x) => Scalar::F64(*x),
        TagValue::Bool(b) => Scalar::Bool(*b),
        TagValue::Text(s) => Scalar::Text(s.clone()),
    }
}

/// The value of the tag with `alias` (its index + 1) in `values`.
fn value_of(values: &[Option<Scalar>], alias: u64) -> Option<Scalar> {
    values.get(alias as usize - 1).cloned().flatten()
}

/// Whether `now` differs from `before` by more than `deadband` (numbers), or at
/// all (flags, texts, null).
fn moved(before: &Option<Scalar>, now: &Option<Scalar>, deadband: f64) -> bool {
    match (before, now) {
        (Some(Scalar::F64(a)), Some(Scalar::F64(b))) => (a - b).abs() > deadband,
        (Some(Scalar::I64(a)), Some(Scalar::I64(b))) => {
            a != b && (a - b).unsigned_abs() as f64 > deadband
        }
        (a, b) => a != b,
    }
}

/// The value a tag publishes: its value while good, else null.
fn current(t: &TagStatus) -> Option<Scalar> {
    t.value
        .as_ref()
        .filter(|_| t.quality == "good")
        .map(scalar)
        .filter(|s| !matches!(s, Scalar::F64(x) if !x.is_finite()))
}

impl EdgeNode {
    /// `tags`: every tag, in registration order (their order gives the aliases).
    pub fn new(cfg: SparkplugConfig, bd_seq: u64, tags: &[TagStatus]) -> EdgeNode {
        let mut devices: Vec<Device> = Vec::new();
        for (i, t) in tags.iter().enumerate() {
            let metric = DeviceMetric {
                name: t.name.clone(),
                alias: i as u64 + 1,
                deadband: cfg.deadband_of(&t.name),
                datatype: t
                    .value
                    .as_ref()
                    .map_or(DataType::Double, |v| scalar(v).datatype()),
                unit: t.unit.clone(),
                range: None,
                sent: None,
            };
            match devices.iter_mut().find(|d| d.id == t.driver) {
                Some(d) => d.metrics.push(metric),
                None => devices.push(Device {
                    id: t.driver.clone(),
                    alive: false,
                    metrics: vec![metric],
                }),
            }
        }
        EdgeNode {
            cfg,
            bd_seq: bd_seq % 256,
            seq: 0,
            devices,
            alerts: Vec::new(),
            host_ts: 0,
        }
    }

    /// The primary host's `STATE` topic, when births wait for it.
    pub fn state_topic(&self) -> Option<String> {
        let h = self.cfg.primary_host.as_ref()?;
        Some(format!("{}/STATE/{h}", super::wire::sparkplug::NAMESPACE))
    }

    /// Whether the primary host is online, when `payload` on `topic` is its
    /// `STATE` (`{"online": bool, "timestamp": ms}`) and not older than the last.
    pub fn host_state(&mut self, topic: &str, payload: &[u8]) -> Option<bool> {
        if self.state_topic().as_deref() != Some(topic) {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
        let online = v.get("online")?.as_bool()?;
        let ts = v
            .get("timestamp")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        if ts < self.host_ts {
            return None;
        }
        self.host_ts = ts;
        Some(online)
    }

    pub fn bd_seq(&self) -> u64 {
        self.bd_seq
    }

    /// How many devices (drivers) the node has.
    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    fn topic(&self, kind: MessageType, device: Option<&str>) -> String {
        topic(&self.cfg.group_id, kind, &self.cfg.edge_node_id, device)
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq = (self.seq + 1) % 256;
        s
    }

    fn bd_seq_metric(&self) -> Metric {
        Metric::named(
            BD_SEQ,
            None,
            DataType::Int64,
            Some(&Scalar::I64(self.bd_seq as i64)),
        )
    }

    /// The `NDEATH` registered as the connection's will.
    pub fn death(&self, now_ms: u64) -> Outgoing {
        let p = Payload {
            timestamp: Some(now_ms),
            metrics: vec![self.bd_seq_metric()],
            seq: None,
        };
        (self.topic(MessageType::NDeath, None), p.to_bytes())
    }

    /// `NBIRTH` (`seq` 0, with the alert metrics of `active`) and a `DBIRTH` per
    /// live device, from `tags`.
    pub fn births(&mut self, now_ms: u64, tags: &[TagStatus], active: &[Alert]) -> Vec<Outgoing> {
        for a in active {
            if !self.alerts.iter().any(|s| s.is(a)) {
                self.alerts.push(AlertSlot::new(&a.asset, &a.detector));
            }
        }
        self.seq = 0;
        let seq = self.next_seq();
        let mut rebirth =
            Metric::named(REBIRTH, None, DataType::Boolean, Some(&Scalar::Bool(false)));
        rebirth.timestamp = Some(now_ms);
        let mut metrics = vec![self.bd_seq_metric(), rebirth];
        for i in 0..self.alerts.len() {
            let view = AlertView::of(active.iter().find(|a| self.alerts[i].is(a)));
            metrics.extend(self.alert_metrics(i, &view, None, now_ms));
            self.alerts[i].sent = Some(view);
        }
        let nbirth = Payload {
            timestamp: Some(now_ms),
            metrics,
            seq: Some(seq),
        };
        let mut out = vec![(self.topic(MessageType::NBirth, None), nbirth.to_bytes())];
        let values: Vec<Option<Scalar>> = tags.iter().map(current).collect();
        for d in 0..self.devices.len() {
            self.devices[d].alive = false;
            if let Some(m) = self.device_birth(d, now_ms, &values) {
                out.push(m);
            }
        }
        out
    }

    /// A device's `DBIRTH` when any of its tags is good.
    /// `values`: every tag's [`current`] value, by tag index (alias − 1).
    fn device_birth(
        &mut self,
        d: usize,
        now_ms: u64,
        values: &[Option<Scalar>],
    ) -> Option<Outgoing> {
        let values: Vec<Option<Scalar>> = self.devices[d]
            .metrics
            .iter()
            .map(|m| value_of(values, m.alias))
            .collect();
        if values.iter().all(Option::is_none) {
            return None;
        }
        let seq = self.next_seq();
        let dev = &mut self.devices[d];
        dev.alive = true;
        let metrics = dev
            .metrics
            .iter_mut()
            .zip(values)
            .map(|(m, v)| {
                if let Some(v) = &v {
                    m.datatype = v.datatype();
                }
                let mut metric = Metric::named(&m.name, Some(m.alias), m.datatype, v.as_ref());
                metric.timestamp = Some(now_ms);
                let mut props = PropertySet::default();
                if let Some(u) = &m.unit {
                    props.string("engUnit", u);
                }
                if let Some((lo, hi)) = m.range {
                    props.double("engLow", lo);
                    props.double("engHigh", hi);
                }
                props.int("Quality", if v.is_some() { GOOD } else { BAD });
                metric.properties = Some(props);
                m.sent = v;
                metric
            })
            .collect();
        let p = Payload {
            timestamp: Some(now_ms),
            metrics,
            seq: Some(seq),
        };
        let topic = topic(
            &self.cfg.group_id,
            MessageType::DBirth,
            &self.cfg.edge_node_id,
            Some(&self.devices[d].id),
        );
        Some((topic, p.to_bytes()))
    }

    /// What changed since the last call: `DDATA` per live device with the metrics
    /// that moved beyond the deadband (or changed quality), `DDEATH` for a device
    /// whose tags all went bad, `DBIRTH` for one that came back.
    pub fn changes(&mut self, now_ms: u64, tags: &[TagStatus]) -> Vec<Outgoing> {
        let values: Vec<Option<Scalar>> = tags.iter().map(current).collect();
        let mut out = Vec::new();
        for d in 0..self.devices.len() {
            let alive_now = self.devices[d]
                .metrics
                .iter()
                .any(|m| value_of(&values, m.alias).is_some());
            match (self.devices[d].alive, alive_now) {
                (false, true) => out.extend(self.device_birth(d, now_ms, &values)),
                (true, false) => out.push(self.device_death(d, now_ms)),
                (true, true) => out.extend(self.device_data(d, now_ms, &values)),
                (false, false) => {}
            }
        }
        out
    }

    fn device_death(&mut self, d: usize, now_ms: u64) -> Outgoing {
        let seq = self.next_seq();
        self.devices[d].alive = false;
        let p = Payload {
            timestamp: Some(now_ms),
            metrics: Vec::new(),
            seq: Some(seq),
        };
        (
            self.topic(MessageType::DDeath, Some(&self.devices[d].id)),
            p.to_bytes(),
        )
    }

    fn device_data(
        &mut self,
        d: usize,
        now_ms: u64,
        values: &[Option<Scalar>],
    ) -> Option<Outgoing> {
        let mut metrics = Vec::new();
        for m in &mut self.devices[d].metrics {
            let now = value_of(values, m.alias);
            if !moved(&m.sent, &now, m.deadband) {
                continue;
            }
            let mut metric = Metric::aliased(m.alias, now.as_ref());
            metric.timestamp = Some(now_ms);
            if now.is_none() || m.sent.is_none() {
                let mut props = PropertySet::default();
                props.int("Quality", if now.is_some() { GOOD } else { BAD });
                metric.properties = Some(props);
            }
            m.sent = now;
            metrics.push(metric);
        }
        if metrics.is_empty() {
            return None;
        }
        let seq = self.next_seq();
        let p = Payload {
            timestamp: Some(now_ms),
            metrics,
            seq: Some(seq),
        };
        Some((
            self.topic(MessageType::DData, Some(&self.devices[d].id)),
            p.to_bytes(),
        ))
    }

    /// `DDATA` replaying `changes` (from [`SparkplugLink::take_outage`]) as
    /// historical metrics with the times they were seen, per device, in order.
    pub fn historical(&mut self, changes: &[(u64, usize, Option<Scalar>)]) -> Vec<Outgoing> {
        const PER_MESSAGE: usize = 500;
        let mut out = Vec::new();
        for d in 0..self.devices.len() {
            let aliases: Vec<u64> = self.devices[d].metrics.iter().map(|m| m.alias).collect();
            let mine: Vec<Metric> = changes
                .iter()
                .filter(|(_, i, _)| aliases.contains(&(*i as u64 + 1)))
                .map(|(t, i, v)| {
                    let mut m = Metric::aliased(*i as u64 + 1, v.as_ref());
                    m.timestamp = Some(*t);
                    m.is_historical = Some(true);
                    m
                })
                .collect();
            for chunk in mine.chunks(PER_MESSAGE) {
                let seq = self.next_seq();
                let p = Payload {
                    timestamp: chunk.last().and_then(|m| m.timestamp),
                    metrics: chunk.to_vec(),
                    seq: Some(seq),
                };
                out.push((
                    self.topic(MessageType::DData, Some(&self.devices[d].id)),
                    p.to_bytes(),
                ));
            }
        }
        out
    }

    /// The alert metrics of slot `i` showing `view`: all of them with names (a
    /// birth, `before` = `None`), or those that differ from `before` by alias.
    fn alert_metrics(
        &self,
        i: usize,
        view: &AlertView,
        before: Option<&AlertView>,
        now_ms: u64,
    ) -> Vec<Metric> {
        let slot = &self.alerts[i];
        let mut out = Vec::new();
        for (k, (leaf, t)) in ALERT_METRICS.iter().enumerate() {
            let alias = ALERT_ALIAS_BASE + (i * ALERT_METRICS.len() + k) as u64;
            let v = view.0[k].as_ref();
            let mut m = match before {
                None => Metric::named(
                    &format!("Alerts/{}/{}/{leaf}", slot.asset, slot.detector),
                    Some(alias),
                    *t,
                    v,
                ),
                Some(b) if b.0[k] != view.0[k] => Metric::aliased(alias, v),
                Some(_) => continue,
            };
            m.timestamp = Some(now_ms);
            out.push(m);
        }
        out
    }

    /// `NDATA` with the alert metrics that changed given the open alerts `active`;
    /// `None` when an alert names a detector the birth did not (a new `NBIRTH`
    /// must name it first).
    pub fn alert_changes(&mut self, now_ms: u64, active: &[Alert]) -> Option<Vec<Outgoing>> {
        if active.iter().any(|a| !self.alerts.iter().any(|s| s.is(a))) {
            return None;
        }
        let mut metrics = Vec::new();
        for i in 0..self.alerts.len() {
            let view = AlertView::of(active.iter().find(|a| self.alerts[i].is(a)));
            if self.alerts[i].sent.as_ref() == Some(&view) {
                continue;
            }
            metrics.extend(self.alert_metrics(i, &view, self.alerts[i].sent.as_ref(), now_ms));
            self.alerts[i].sent = Some(view);
        }
        if metrics.is_empty() {
            return Some(Vec::new());
        }
        let seq = self.next_seq();
        let p = Payload {
            timestamp: Some(now_ms),
            metrics,
            seq: Some(seq),
        };
        Some(vec![(self.topic(MessageType::NData, None), p.to_bytes())])
    }

    /// The engineering ranges of writable tags, by signal name.
    pub fn set_ranges(&mut self, ranges: &[(Arc<str>, f64, f64)]) {
        for m in self.devices.iter_mut().flat_map(|d| d.metrics.iter_mut()) {
            m.range = ranges
                .iter()
                .find(|(n, _, _)| **n == *m.name)
                .map(|(_, lo, hi)| (*lo, *hi));
        }
    }

    /// The topics commands arrive on (subscribe to both).
    pub fn command_topics(&self) -> [String; 2] {
        [
            self.topic(MessageType::NCmd, None),
            format!("{}/+", self.topic(MessageType::DCmd, None)),
        ]
    }

    /// Reads a command published on `topic`; `None` when it is not ours.
    pub fn command(&self, topic_name: &str, payload: &[u8]) -> Option<Command> {
        let ncmd = self.topic(MessageType::NCmd, None);
        let dcmd = self.topic(MessageType::DCmd, None);
        if topic_name == ncmd {
            let Some(p) = Payload::decode_bytes(payload) else {
                return Some(Command::Refused(
                    "NCMD payload is not a Sparkplug payload".into(),
                ));
            };
            let rebirth = p
                .metrics
                .iter()
                .any(|m| m.name.as_deref() == Some(REBIRTH) && m.as_bool() == Some(true));
            return Some(if rebirth {
                Command::Rebirth
            } else {
                Command::Refused("NCMD without Node Control/Rebirth = true".into())
            });
        }
        let device = topic_name.strip_prefix(&dcmd)?.strip_prefix('/')?;
        Some(self.device_command(device, payload))
    }

    /// A DCMD's metrics as tag writes: each named by its name or by the alias its
    /// DBIRTH gave it. Whether the tag may be written, and the value, is for the
    /// write path to check.
    fn device_command(&self, device: &str, payload: &[u8]) -> Command {
        if !self.cfg.dcmd_writes {
            return Command::Refused(format!(
                "DCMD to {device}: writes from Sparkplug are off; set [sparkplug] dcmd_writes = true to allow them"
            ));
        }
        let Some(d) = self.devices.iter().find(|d| d.id == device) else {
            return Command::Refused(format!("DCMD to {device}: no such device on this node"));
        };
        let Some(p) = Payload::decode_bytes(payload) else {
            return Command::Refused(format!("DCMD to {device}: not a Sparkplug payload"));
        };
        let mut values = Vec::new();
        let mut refused = Vec::new();
        for m in &p.metrics {
            let metric = match (&m.name, m.alias) {
                (Some(n), _) => d.metrics.iter().find(|x| &x.name == n),
                (None, Some(a)) => d.metrics.iter().find(|x| x.alias == a),
                (None, None) => None,
            };
            let label = m
                .name
                .clone()
                .or(m.alias.map(|a| format!("alias {a}")))
                .unwrap_or_else(|| "a metric without name or alias".into());
            match (metric, m.as_number()) {
                (None, _) => refused.push(format!("{label}: not a metric of {device}")),
                (Some(_), None) => {
                    refused.push(format!("{label}: the value is not a number or boolean"))
                }
                (Some(x), Some(v)) => values.push((x.name.clone(), v)),
            }
        }
        Command::Write {
            device: device.to_string(),
            values,
            refused,
        }
    }
}

/// `bdSeq` kept on disk: each connection takes the next value (0–255, wrapping),
/// written before it connects, so a restart or kill -9 never repeats the last.
#[derive(Debug)]
pub struct BdSeqFile {
    path: Option<PathBuf>,
    last: Option<u64>,
}

impl BdSeqFile {
    /// `dir`: where the agent keeps its state (the journal's directory); `None`
    /// keeps it in memory only (it then restarts at 0).
    pub fn open(dir: Option<&Path>) -> BdSeqFile {
        let path = dir.map(|d| d.join("sparkplug.bdseq"));
        let last = path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| s.trim().parse::<u64>().ok());
        BdSeqFile { path, last }
    }

    /// The next connection's `bdSeq`, persisted (a failed write is logged: the
    /// value is still used).
    pub fn take_next(&mut self) -> u64 {
        let v = self.last.map_or(0, |l| (l + 1) % 256);
        self.last = Some(v);
        if let Some(p) = &self.path {
            if let Err(e) = crate::state_file::write_atomic(p, format!("{v}\n").as_bytes()) {
                tracing::warn!(path = %p.display(), error = %e, "cannot keep the Sparkplug bdSeq");
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, driver: &str, value: Option<TagValue>, quality: &str) -> TagStatus {
        TagStatus {
            name: name.into(),
            value,
            unit: Some("degC".into()),
            quality: quality.into(),
            reason: None,
            age_s: None,
            value_age_s: None,
            driver: driver.into(),
            address: None,
            bad_samples: 0,
        }
    }

    fn node(tags: &[TagStatus]) -> EdgeNode {
        let cfg = SparkplugConfig {
            group_id: "plant".into(),
            edge_node_id: "gw1".into(),
            deadband: 0.5,
            deadbands: [("b.t".to_string(), 0.0)].into(),
            scan: Duration::from_secs(1),
            primary_host: Some("scada".into()),
            dcmd_writes: true,
            history: 100,
        };
        EdgeNode::new(cfg, 7, tags)
    }

    fn decode(m: &Outgoing) -> Payload {
        Payload::decode_bytes(&m.1).expect("a Sparkplug payload")
    }

    #[test]
    fn births_then_data_on_change_beyond_the_deadband_then_death_and_rebirth_of_a_device() {
        let n = |x: f64| Some(TagValue::Number(x));
        let mut tags = vec![
            tag("a.t", "plc", n(20.0), "good"),
            tag("a.u", "plc", Some(TagValue::Integer(-3)), "good"),
            tag("b.t", "sensor", n(1.0), "bad"),
        ];
        let mut e = node(&tags);
        e.set_ranges(&[(Arc::from("a.t"), 0.0, 120.0)]);
        let (_, will) = e.death(5);
        assert_eq!(
            Payload::decode_bytes(&will).expect("ndeath").metrics[0]
                .name
                .as_deref(),
            Some("bdSeq")
        );
        let births = e.births(10, &tags, &[]);
        assert_eq!(births.len(), 2, "NBIRTH and the live device only");
        assert_eq!(births[0].0, "spBv1.0/plant/NBIRTH/gw1");
        assert_eq!(births[1].0, "spBv1.0/plant/DBIRTH/gw1/plc");
        let nb = decode(&births[0]);
        assert_eq!(nb.seq, Some(0));
        let names: Vec<_> = nb.metrics.iter().filter_map(|m| m.name.clone()).collect();
        assert_eq!(names, ["bdSeq", REBIRTH]);
        let db = decode(&births[1]);
        assert_eq!((db.seq, db.metrics.len()), (Some(1), 2));
        assert_eq!(db.metrics[1].datatype, Some(DataType::Int64 as u32));
        let keys = |i: usize| db.metrics[i].properties.clone().unwrap_or_default().keys;
        assert_eq!(
            keys(0),
            ["engUnit", "engLow", "engHigh", "Quality"],
            "a writable tag's range"
        );
        assert_eq!(keys(1), ["engUnit", "Quality"]);
        // Below the deadband: nothing; beyond it: one DDATA with that metric.
        tags[0].value = n(20.4);
        assert!(e.changes(11, &tags).is_empty());
        assert_eq!(e.cfg.deadband_of("b.t"), 0.0, "a signal's own deadband");
        tags[0].value = n(21.0);
        let data = e.changes(12, &tags);
        assert_eq!(data.len(), 1);
        let dd = decode(&data[0]);
        assert_eq!(
            (dd.seq, dd.metrics[0].alias, dd.metrics[0].name.clone()),
            (Some(2), Some(1), None)
        );
        // The sensor comes up: DBIRTH; the PLC goes down: DDEATH.
        tags[2].quality = "good".into();
        tags[0].quality = "bad".into();
        tags[1].quality = "stale".into();
        let msgs = e.changes(13, &tags);
        let topics: Vec<&str> = msgs.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(
            topics,
            [
                "spBv1.0/plant/DDEATH/gw1/plc",
                "spBv1.0/plant/DBIRTH/gw1/sensor"
            ]
        );
        assert_eq!(decode(&msgs[1]).seq, Some(4));
    }

    #[test]
    fn seq_wraps_after_255() {
        let mut tags = vec![tag("a.t", "plc", Some(TagValue::Number(0.0)), "good")];
        let mut e = node(&tags);
        e.births(0, &tags, &[]);
        let mut last = 0;
        for i in 1..300 {
            tags[0].value = Some(TagValue::Number(f64::from(i)));
            let m = e.changes(i as u64, &tags);
            last = decode(&m[0]).seq.expect("seq");
            if i == 254 {
                assert_eq!(last, 255);
            }
            if i == 255 {
                assert_eq!(last, 0, "wraps");
            }
        }
        assert_eq!(last, 300 % 256);
    }

    #[test]
    fn rebirth_is_the_only_node_command() {
        let e = node(&[]);
        let cmd = Payload {
            timestamp: Some(1),
            metrics: vec![Metric::named(
                REBIRTH,
                None,
                DataType::Boolean,
                Some(&Scalar::Bool(true)),
            )],
            seq: None,
        };
        assert_eq!(
            e.command("spBv1.0/plant/NCMD/gw1", &cmd.to_bytes()),
            Some(Command::Rebirth)
        );
        assert!(matches!(
            e.command("spBv1.0/plant/NCMD/gw1", b"\xff\xff"),
            Some(Command::Refused(_))
        ));
        assert!(
            matches!(e.command("spBv1.0/plant/DCMD/gw1/plc", &cmd.to_bytes()), Some(Command::Refused(r)) if r.contains("no such device"))
        );
        assert_eq!(e.command("spBv1.0/plant/NCMD/other", &cmd.to_bytes()), None);
    }

    #[test]
    fn dcmd_metrics_by_name_or_alias_become_tag_writes() {
        let tags = [
            tag("plc.sp", "plc", Some(TagValue::Number(1.0)), "good"),
            tag("plc.run", "plc", Some(TagValue::Bool(false)), "good"),
        ];
        let e = node(&tags);
        let mut by_alias = Metric::aliased(2, Some(&Scalar::Bool(true)));
        by_alias.datatype = Some(DataType::Boolean as u32);
        let mut negative = Metric::named("plc.sp", None, DataType::Int32, None);
        negative.datatype = Some(2); // Int16
        negative.is_null = None;
        negative.value = Some(crate::delivery::wire::sparkplug::MetricValue::Int(
            0xFFFF_FFF6,
        ));
        let cmd = Payload {
            timestamp: Some(1),
            metrics: vec![
                Metric::named("plc.sp", None, DataType::Double, Some(&Scalar::F64(42.5))),
                by_alias,
                negative,
                Metric::named("plc.nope", None, DataType::Double, Some(&Scalar::F64(1.0))),
                Metric::named(
                    "plc.sp",
                    None,
                    DataType::String,
                    Some(&Scalar::Text("x".into())),
                ),
            ],
            seq: None,
        };
        let bytes = cmd.to_bytes();
        let Some(Command::Write {
            device,
            values,
            refused,
        }) = e.command("spBv1.0/plant/DCMD/gw1/plc", &bytes)
        else {
            panic!("a write");
        };
        assert_eq!(device, "plc");
        assert_eq!(
            values,
            vec![
                ("plc.sp".into(), 42.5),
                ("plc.run".into(), 1.0),
                ("plc.sp".into(), -10.0)
            ]
        );
        assert!(
            refused[0].contains("plc.nope: not a metric of plc"),
            "{refused:?}"
        );
        assert!(
            refused[1].contains("not a number or boolean"),
            "{refused:?}"
        );
        let mut off = node(&tags);
        off.cfg.dcmd_writes = false;
        assert!(
            matches!(off.command("spBv1.0/plant/DCMD/gw1/plc", &bytes), Some(Command::Refused(r)) if r.contains("dcmd_writes = true"))
        );
    }

    #[test]
    fn alerts_are_node_metrics_in_the_birth_and_in_ndata_when_they_change() {
        use crate::alert::{AlertId, AlertState, system_alert};
        use edge_models::Severity;
        let mut e = node(&[]);
        e.alerts = vec![AlertSlot::new("pump", "hot")];
        let birth = decode(&e.births(1, &[], &[])[0]);
        let names: Vec<_> = birth
            .metrics
            .iter()
            .filter_map(|m| m.name.clone())
            .collect();
        assert!(
            names.contains(&"Alerts/pump/hot/Active".to_string()),
            "{names:?}"
        );
        assert_eq!(names.len(), 2 + 6);
        assert_eq!(e.alert_changes(2, &[]), Some(Vec::new()), "nothing changed");
        let mut hot = system_alert(
            &Arc::from("gw"),
            AlertId(7),
            AlertId(7),
            "hot",
            Severity::Warning,
            AlertState::Raised,
            "too hot".into(),
            edge_driver_api::Timestamp::default(),
        );
        hot.asset = Arc::from("pump");
        let msgs = e
            .alert_changes(3, std::slice::from_ref(&hot))
            .expect("known detector");
        assert_eq!(msgs[0].0, "spBv1.0/plant/NDATA/gw1");
        let nd = decode(&msgs[0]);
        assert_eq!(nd.seq, Some(1));
        let active = nd
            .metrics
            .iter()
            .find(|m| m.alias == Some(ALERT_ALIAS_BASE))
            .expect("Active");
        assert_eq!(active.as_bool(), Some(true));
        // A system alert of a detector the birth did not name asks for a rebirth,
        // whose NBIRTH names it.
        let mut disk = hot.clone();
        disk.asset = Arc::from("gw");
        disk.detector = Arc::from("disk");
        assert_eq!(e.alert_changes(4, &[hot.clone(), disk.clone()]), None);
        let birth = decode(&e.births(5, &[], &[hot, disk])[0]);
        let names: Vec<_> = birth
            .metrics
            .iter()
            .filter_map(|m| m.name.clone())
            .collect();
        assert!(
            names.contains(&"Alerts/gw/disk/Severity".to_string()),
            "{names:?}"
        );
    }

    #[test]
    fn the_primary_host_state_is_read_in_order_and_others_are_ignored() {
        let mut e = node(&[]);
        let t = "spBv1.0/STATE/scada";
        assert_eq!(e.state_topic().as_deref(), Some(t));
        assert_eq!(
            e.host_state(t, br#"{"online": true, "timestamp": 10}"#),
            Some(true)
        );
        assert_eq!(
            e.host_state(t, br#"{"online": false, "timestamp": 5}"#),
            None,
            "older"
        );
        assert_eq!(
            e.host_state(t, br#"{"online": false, "timestamp": 11}"#),
            Some(false)
        );
        assert_eq!(e.host_state(t, b"not json"), None);
        assert_eq!(
            e.host_state(
                "spBv1.0/STATE/other",
                br#"{"online": true, "timestamp": 99}"#
            ),
            None
        );
    }

    #[test]
    fn an_outage_survives_a_restart_of_the_agent() {
        let dir = std::env::temp_dir().join(format!("edge-spb-outage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let tags = Arc::new(Mutex::new(vec![tag(
            "a.t",
            "plc",
            Some(TagValue::Number(1.0)),
            "good",
        )]));
        let names = vec!["a.t".to_string()];
        let link = |outage: Outage| {
            let source = tags.clone();
            SparkplugLink {
                cfg: node(&[]).cfg,
                tags: Arc::new(move || source.lock().expect("tags").clone()),
                alerts: Arc::new(Vec::new),
                detectors: Vec::new(),
                bd_seq: Mutex::new(BdSeqFile::open(None)),
                outage: Mutex::new(outage),
                writes: Arc::new(crate::inbound::Writes::none()),
            }
        };
        let first = link(Outage::open(Some(&dir), &names, 100));
        first.record(100);
        tags.lock().expect("tags")[0].value = Some(TagValue::Number(5.0));
        first.record(200);
        drop(first); // the agent stops (or is killed) during the outage
        let renamed = vec!["x.y".to_string(), "a.t".to_string()];
        let second = link(Outage::open(Some(&dir), &renamed, 100));
        let changes = second.take_outage();
        assert_eq!(
            changes,
            vec![(200, 1, Some(Scalar::F64(5.0)))],
            "by name, at today's index"
        );
        assert!(
            Outage::open(Some(&dir), &names, 100).changes.is_empty(),
            "taken: the file is gone"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn changes_during_an_outage_are_replayed_as_historical_data_with_their_times() {
        let tags = Arc::new(Mutex::new(vec![
            tag("a.t", "plc", Some(TagValue::Number(1.0)), "good"),
            tag("b.t", "sensor", Some(TagValue::Number(5.0)), "good"),
        ]));
        let source = tags.clone();
        let mut cfg = node(&[]).cfg;
        cfg.history = 2;
        let link = SparkplugLink {
            cfg,
            tags: Arc::new(move || source.lock().expect("tags").clone()),
            alerts: Arc::new(Vec::new),
            detectors: Vec::new(),
            bd_seq: Mutex::new(BdSeqFile::open(None)),
            outage: Mutex::new(Outage::default()),
            writes: Arc::new(crate::inbound::Writes::none()),
        };
        link.record(100); // the outage's baseline
        let set =
            |i: usize, x: f64| tags.lock().expect("tags")[i].value = Some(TagValue::Number(x));
        set(0, 1.2); // within the 0.5 deadband
        link.record(200);
        set(0, 3.0);
        link.record(300);
        set(1, 9.0);
        link.record(400);
        set(1, 10.0);
        link.record(500); // history 2: the oldest change goes
        assert_eq!(link.outage.lock().expect("outage").dropped, 1);
        let changes = link.take_outage();
        assert_eq!(
            changes.iter().map(|c| (c.0, c.1)).collect::<Vec<_>>(),
            [(400, 1), (500, 1)]
        );
        let current = tags.lock().expect("tags").clone();
        let mut e = link.node();
        e.births(600, &current, &[]);
        let msgs = e.historical(&changes);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].0, "spBv1.0/plant/DDATA/gw1/sensor");
        let p = decode(&msgs[0]);
        assert_eq!(p.seq, Some(3), "after NBIRTH and two DBIRTHs");
        assert!(
            p.metrics
                .iter()
                .all(|m| m.is_historical == Some(true) && m.alias == Some(2))
        );
        let times: Vec<_> = p.metrics.iter().map(|m| m.timestamp).collect();
        assert_eq!(times, [Some(400), Some(500)]);
        assert!(link.take_outage().is_empty(), "taken once");
    }

    #[test]
    fn bd_seq_grows_across_restarts_and_wraps() {
        let dir = std::env::temp_dir().join(format!("bdseq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let _ = std::fs::remove_file(dir.join("sparkplug.bdseq"));
        assert_eq!(BdSeqFile::open(Some(&dir)).take_next(), 0);
        let mut f = BdSeqFile::open(Some(&dir));
        assert_eq!(
            (f.take_next(), f.take_next()),
            (1, 2),
            "a restart continues"
        );
        std::fs::write(dir.join("sparkplug.bdseq"), "255\n").expect("write");
        assert_eq!(BdSeqFile::open(Some(&dir)).take_next(), 0, "wraps");
        assert_eq!(BdSeqFile::open(None).take_next(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
