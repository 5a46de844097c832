//! Writes to device tags: the checks, the route to the driver that owns the tag,
//! and the audit of every request.
//!
//! A request is refused (nothing reaches the device) when the signal is unknown,
//! not writable, the value is outside `min`/`max` or not `allowed`, or the tag was
//! written less than `min_interval` ago. Otherwise it waits in the driver's queue
//! (at most [`edge_driver_api::write::WRITE_QUEUE`]) until the driver's next gap
//! between polls; the driver encodes it for its protocol, writes, optionally reads
//! back, and answers. A driver that is down answers at once (its supervisor does);
//! nothing waits longer than [`WRITE_DEADLINE`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use edge_driver_api::{
    Clock, SignalId, WritableTag, WriteFailure, WriteLimits, WriteRequest, write::WRITE_QUEUE,
};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::alert::AlertTime;
use crate::ingest::latest::LatestValues;

/// The longest a write may take, from the request to the driver's answer.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// Where a write came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteSource {
    /// `edge-agent write` on the control socket.
    Cli,
    /// A Sparkplug DCMD from a host application.
    Sparkplug,
    /// A `write` operation over MQTT.
    Command,
}

/// A request to write `value` to `signal`.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteOrder {
    pub signal: String,
    pub value: f64,
    pub source: WriteSource,
    /// Who asked: `uid 1000` on the control socket, the host's id over MQTT.
    pub by: String,
}

/// How a write went: the audit record, the CLI's answer and a command's status.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WriteReport {
    pub v: u32,
    #[serde(rename = "type")]
    pub kind: String,
    pub agent_id: String,
    pub signal: String,
    /// The driver that owns the tag (when the signal is known).
    pub driver: Option<String>,
    pub value: f64,
    /// The tag's last good value before the write.
    pub old: Option<f64>,
    /// What reading back gave (`verify = true`).
    pub read_back: Option<f64>,
    /// `successful`, `refused` (nothing reached the device) or `failed`.
    pub result: String,
    pub reason: Option<String>,
    /// `encode`, `device`, `communication`, `verify` (a failed write).
    pub failure: Option<String>,
    /// From the request to the driver's answer.
    pub latency_ms: f64,
    pub source: WriteSource,
    pub by: String,
    pub time: AlertTime,
}

impl WriteReport {
    pub fn is_successful(&self) -> bool {
        self.result == "successful"
    }
}

/// Where every [`WriteReport`] goes (the events lane, through the composition root).
pub type Audit = Box<dyn Fn(&WriteReport) + Send + Sync>;

/// One writable tag's way to its driver.
#[derive(Clone, Debug)]
struct Route {
    driver: Arc<str>,
    limits: WriteLimits,
    tx: mpsc::Sender<WriteRequest>,
}

/// The writable tags of the running drivers; a driver (re)started by a reload
/// replaces its own.
#[derive(Debug, Default)]
pub struct WriteRoutes {
    routes: RwLock<HashMap<SignalId, Route>>,
}

impl WriteRoutes {
    /// Routes `tags` to `driver`'s queue, replacing what the driver had.
    pub fn set_driver(
        &self,
        driver: &Arc<str>,
        tx: mpsc::Sender<WriteRequest>,
        tags: Vec<WritableTag>,
    ) {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        routes.retain(|_, r| r.driver != *driver);
        for t in tags {
            routes.insert(
                t.signal,
                Route {
                    driver: driver.clone(),
                    limits: t.limits,
                    tx: tx.clone(),
                },
            );
        }
    }

    /// Forgets `driver`'s tags (restarted without writable tags).
    pub fn remove_driver(&self, driver: &str) {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        routes.retain(|_, r| &*r.driver != driver);
    }

    fn get(&self, signal: SignalId) -> Option<Route> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        routes.get(&signal).cloned()
    }

    /// How many tags can be written.
    pub fn len(&self) -> usize {
        self.routes.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Writes by result, for `/metrics` and the status.
#[derive(Debug, Default)]
pub struct WriteCounters {
    pub successful: AtomicU64,
    pub refused: AtomicU64,
    pub failed: AtomicU64,
}

/// Performs writes for every source.
pub struct Writes {
    agent_id: Arc<str>,
    pub routes: Arc<WriteRoutes>,
    latest: Arc<LatestValues>,
    /// When each tag was last handed to its driver (kept across driver restarts).
    last: Mutex<HashMap<SignalId, tokio::time::Instant>>,
    audit: Audit,
    clock: Clock,
    pub counters: WriteCounters,
}

impl std::fmt::Debug for Writes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writes")
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

/// What a request became before it reached a driver, or the driver's answer.
enum Outcome {
    Refused(String),
    Failed(WriteFailure, String),
    Done(Option<f64>),
}

impl Writes {
    pub fn new(
        agent_id: Arc<str>,
        routes: Arc<WriteRoutes>,
        latest: Arc<LatestValues>,
        clock: Clock,
        audit: Audit,
    ) -> Writes {
        Writes {
            agent_id,
            routes,
            latest,
            last: Mutex::new(HashMap::new()),
            audit,
            clock,
            counters: WriteCounters::default(),
        }
    }

    /// Every writable tag with both `min` and `max`: (signal name, min, max), the
    /// engineering range a Sparkplug host shows.
    pub fn ranges(&self) -> Vec<(Arc<str>, f64, f64)> {
        let routes = self.routes.routes.read().unwrap_or_else(|p| p.into_inner());
        routes
            .iter()
            .filter_map(|(id, r)| {
                let name = self.latest.name(id.index())?;
                Some((name, r.limits.min?, r.limits.max?))
            })
            .collect()
    }

    /// Writes nothing: every signal is unknown (for tests of other parts).
    #[cfg(test)]
    pub fn none() -> Writes {
        let latest = LatestValues::new(&edge_driver_api::SignalRegistry::new(), &HashMap::new());
        let audit: Audit = Box::new(|_| {});
        Writes::new(
            "t".into(),
            Arc::default(),
            Arc::new(latest),
            Clock::system(),
            audit,
        )
    }

    /// Writes, and reports how it went (also to the audit trail). Never waits
    /// longer than [`WRITE_DEADLINE`].
    pub async fn write(&self, order: WriteOrder) -> WriteReport {
        let start = tokio::time::Instant::now();
        let index = self.latest.find(&order.signal);
        let old = index.and_then(|i| self.latest.last_good(i));
        let route = index.and_then(|i| self.routes.get(SignalId(i as u32)));
        let outcome = match (index, &route) {
            (None, _) => Outcome::Refused(format!(
                "no signal named `{}`; `edge-agent tags` lists them",
                order.signal
            )),
            (Some(_), None) => Outcome::Refused(format!(
                "`{}` is not writable; to allow writes add `writable = true` with `min`/`max` (or `allowed`) to its tag",
                order.signal
            )),
            (Some(i), Some(r)) => self.perform(SignalId(i as u32), r, order.value).await,
        };
        let report = self.report(&order, route.as_ref(), old, outcome, start.elapsed());
        let counter = match report.result.as_str() {
            "successful" => &self.counters.successful,
            "refused" => &self.counters.refused,
            _ => &self.counters.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::info!(signal = %report.signal, value = report.value, result = %report.result,
            reason = report.reason.as_deref().unwrap_or(""), source = ?report.source, by = %report.by,
            latency_ms = report.latency_ms, "write");
        (self.audit)(&report);
        report
    }

    /// Checks the value and the rate, then hands it to the driver and waits.
    async fn perform(&self, signal: SignalId, r: &Route, value: f64) -> Outcome {
        if let Err(why) = r.limits.check(value) {
            return Outcome::Refused(why);
        }
        if let Err(why) = self.take_slot(signal, &r.limits) {
            return Outcome::Refused(why);
        }
        let (req, rx) = WriteRequest::new(signal, value, r.limits.verify);
        if let Err(e) = r.tx.try_send(req) {
            let why = match e {
                mpsc::error::TrySendError::Full(_) => format!(
                    "{WRITE_QUEUE} writes are already waiting for driver {}; try again",
                    r.driver
                ),
                mpsc::error::TrySendError::Closed(_) => format!("driver {} is stopped", r.driver),
            };
            return Outcome::Failed(WriteFailure::Communication, why);
        }
        match tokio::time::timeout(WRITE_DEADLINE, rx).await {
            Ok(Ok(Ok(done))) => Outcome::Done(done.read_back),
            Ok(Ok(Err(e))) => Outcome::Failed(e.kind, e.message),
            Ok(Err(_)) => Outcome::Failed(
                WriteFailure::Communication,
                format!("driver {} stopped before answering", r.driver),
            ),
            Err(_) => Outcome::Failed(
                WriteFailure::Communication,
                format!(
                    "no answer from driver {} within {WRITE_DEADLINE:?}",
                    r.driver
                ),
            ),
        }
    }

    /// Refuses a write sooner than the tag's `min_interval` after the last one.
    fn take_slot(&self, signal: SignalId, limits: &WriteLimits) -> Result<(), String> {
        let now = tokio::time::Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = last.get(&signal) {
            let since = now.saturating_duration_since(*t);
            if since < limits.min_interval {
                return Err(format!(
                    "written {:.1} s ago; this tag accepts one write per {:?}",
                    since.as_secs_f64(),
                    limits.min_interval
                ));
            }
        }
        last.insert(signal, now);
        Ok(())
    }

    fn report(
        &self,
        order: &WriteOrder,
        route: Option<&Route>,
        old: Option<f64>,
        outcome: Outcome,
        took: Duration,
    ) -> WriteReport {
        let (result, reason, failure, read_back) = match outcome {
            Outcome::Refused(why) => ("refused", Some(why), None, None),
            Outcome::Failed(kind, why) => {
                ("failed", Some(why), Some(kind.as_str().to_string()), None)
            }
            Outcome::Done(rb) => ("successful", None, None, rb),
        };
        WriteReport {
            v: 1,
            kind: "write".into(),
            agent_id: self.agent_id.to_string(),
            signal: order.signal.clone(),
            driver: route.map(|r| r.driver.to_string()),
            value: order.value,
            old,
            read_back,
            result: result.into(),
            reason,
            failure,
            latency_ms: took.as_secs_f64() * 1e3,
            source: order.source,
            by: order.by.clone(),
            time: AlertTime::at(self.clock.now()),
        }
    }
}

/// Parses a value as an operator types it: a number, or `true`/`false`/`on`/`off`.
pub fn parse_value(s: &str) -> Option<f64> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "on" => Some(1.0),
        "false" | "off" => Some(0.0),
        t => t.parse::<f64>().ok().filter(|v| v.is_finite()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_driver_api::{SignalDecl, SignalRegistry, WriteDone, WriteError, WriteInbox};

    fn setup(limits: WriteLimits) -> (Writes, Arc<WriteInbox>, Arc<Mutex<Vec<WriteReport>>>) {
        let mut reg = SignalRegistry::new();
        for name in ["plc.setpoint", "plc.temp"] {
            let decl = SignalDecl {
                name: name.into(),
                unit: None,
                span: Default::default(),
                text: false,
                address: None,
            };
            reg.intern(&decl, "plc").expect("fresh");
        }
        let latest = Arc::new(LatestValues::new(&reg, &HashMap::new()));
        let routes = Arc::new(WriteRoutes::default());
        let (inbox, tx) = WriteInbox::new();
        routes.set_driver(
            &Arc::from("plc"),
            tx,
            vec![WritableTag {
                signal: SignalId(0),
                limits,
            }],
        );
        let audited = Arc::new(Mutex::new(Vec::new()));
        let a = audited.clone();
        let audit: Audit = Box::new(move |r| a.lock().expect("test").push(r.clone()));
        (
            Writes::new("gw".into(), routes, latest, Clock::virtual_from(0), audit),
            inbox,
            audited,
        )
    }

    fn limits() -> WriteLimits {
        WriteLimits {
            min: Some(0.0),
            max: Some(100.0),
            allowed: Vec::new(),
            verify: false,
            min_interval: Duration::from_secs(5),
        }
    }

    fn order(signal: &str, value: f64) -> WriteOrder {
        WriteOrder {
            signal: signal.into(),
            value,
            source: WriteSource::Cli,
            by: "uid 0".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_reaches_the_driver_and_is_audited() {
        let (w, inbox, audited) = setup(limits());
        let driver = tokio::spawn(async move {
            let r = inbox.next().await;
            assert_eq!((r.signal, r.value), (SignalId(0), 42.0));
            r.answer(Ok(WriteDone { read_back: None }));
        });
        let rep = w.write(order("plc.setpoint", 42.0)).await;
        assert!(rep.is_successful(), "{rep:?}");
        assert_eq!(rep.driver.as_deref(), Some("plc"));
        driver.await.expect("driver task");
        assert_eq!(audited.lock().expect("test").len(), 1);
        assert_eq!(w.counters.successful.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn out_of_range_unknown_and_read_only_writes_are_refused_with_a_reason() {
        let (w, _inbox, audited) = setup(limits());
        let rep = w.write(order("plc.setpoint", 101.0)).await;
        assert_eq!(rep.result, "refused");
        assert!(
            rep.reason
                .as_deref()
                .unwrap_or("")
                .contains("above the tag's maximum 100")
        );
        let rep = w.write(order("plc.temp", 1.0)).await;
        assert!(
            rep.reason
                .as_deref()
                .unwrap_or("")
                .contains("is not writable")
        );
        let rep = w.write(order("plc.nope", 1.0)).await;
        assert!(
            rep.reason
                .as_deref()
                .unwrap_or("")
                .contains("no signal named")
        );
        assert_eq!(
            audited.lock().expect("test").len(),
            3,
            "refusals are audited too"
        );
        assert_eq!(w.counters.refused.load(Ordering::Relaxed), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_write_within_min_interval_is_refused() {
        let (w, inbox, _) = setup(limits());
        tokio::spawn(async move {
            loop {
                inbox.next().await.answer(Ok(WriteDone { read_back: None }));
            }
        });
        assert!(w.write(order("plc.setpoint", 1.0)).await.is_successful());
        let rep = w.write(order("plc.setpoint", 2.0)).await;
        assert!(
            rep.reason
                .as_deref()
                .unwrap_or("")
                .contains("accepts one write per 5s"),
            "{rep:?}"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(w.write(order("plc.setpoint", 3.0)).await.is_successful());
    }

    #[tokio::test(start_paused = true)]
    async fn a_driver_that_never_answers_fails_the_write_at_the_deadline() {
        let (w, _inbox, _) = setup(limits());
        let rep = w.write(order("plc.setpoint", 1.0)).await;
        assert_eq!(rep.result, "failed");
        assert_eq!(rep.failure.as_deref(), Some("communication"));
        assert!(
            rep.reason
                .as_deref()
                .unwrap_or("")
                .contains("no answer from driver plc within 10s")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_device_refusal_is_a_failed_write_with_the_drivers_reason() {
        let (w, inbox, _) = setup(limits());
        tokio::spawn(async move {
            let r = inbox.next().await;
            r.answer(Err(WriteError::new(
                WriteFailure::Device,
                "exception 2 (illegal data address)",
            )));
        });
        let rep = w.write(order("plc.setpoint", 1.0)).await;
        assert_eq!(
            (rep.result.as_str(), rep.failure.as_deref()),
            ("failed", Some("device"))
        );
        assert!(
            rep.reason
                .as_deref()
                .unwrap_or("")
                .contains("illegal data address")
        );
    }

    #[test]
    fn values_parse_as_numbers_or_switch_words() {
        assert_eq!(parse_value("42.5"), Some(42.5));
        assert_eq!(parse_value("ON"), Some(1.0));
        assert_eq!(parse_value("false"), Some(0.0));
        assert_eq!(parse_value("NaN"), None);
        assert_eq!(parse_value("x"), None);
    }
}
