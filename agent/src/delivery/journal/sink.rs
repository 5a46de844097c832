//! The journal as an alert sink: where alerts are *accepted*.
//!
//! Each alert becomes one record on the alert lane: a postcard [`Envelope`] holding
//! the alert's id, asset, creation time and its JSON document (what the uplink
//! publishes). The sink thread syncs whenever its queue runs empty, so a burst of
//! alerts shares one `fdatasync` (group commit); under sustained load
//! [`Journal::maybe_sync`] bounds the delay by the fsync policy.
//!
//! A full disk does not stop alerts: the journal evicts telemetry, events and then
//! its oldest alerts to store a new one (counted per lane). Only when it cannot take
//! an alert at all (nothing left to evict, an I/O error) is the alert kept in a
//! bounded in-memory backlog, retried on every delivery and flush. If the backlog
//! overflows, the oldest alert that is not a `system` alert is dropped and counted:
//! the alert that says the journal is failing is never the one lost. System alerts
//! are stored as priority records: after an outage the uplink sends them before
//! the rest of the backlog. Whatever is
//! still held when the sink is dropped is counted and logged once.
//!
//! Evictions are told upstream: the first eviction of an episode raises a `system`
//! alert (detector `journal_evictions`; Warning while only telemetry and events go,
//! Critical once alerts do), cleared after [`EVICTION_QUIET`] without one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::{Journal, JournalError, Lane};
use crate::alert::{Alert, AlertId, AlertState, IdGenerator, system_alert};
use crate::delivery::sink::AlertSink;
use crate::delivery::wire::{Envelope, json};
use edge_driver_api::Clock;
use edge_models::Severity;

/// How long without an eviction before the eviction alert clears.
pub const EVICTION_QUIET: Duration = Duration::from_secs(600);

/// A condition of the journal that `system` alerts report.
#[derive(Clone, Copy, Debug)]
enum Condition {
    /// The journal cannot store alerts (detector `journal`).
    Failing,
    /// The journal evicts records to store new ones (detector `journal_evictions`).
    Evicting,
}

impl Condition {
    fn component(self) -> &'static str {
        match self {
            Condition::Failing => "journal",
            Condition::Evicting => "journal_evictions",
        }
    }
}

/// An episode of `system` alerts about one condition of the journal.
#[derive(Debug, Default)]
struct Episode {
    id: Option<AlertId>,
    severity: Option<Severity>,
}

/// Why [`JournalSink::store`] failed.
#[derive(Debug)]
enum Stored {
    /// The journal did not take the record.
    Refused(JournalError),
    /// Taken, but the sync after it failed.
    NotSynced(JournalError),
}

impl Stored {
    fn into_io(self) -> std::io::Error {
        match self {
            Stored::Refused(e) | Stored::NotSynced(e) => std::io::Error::other(e),
        }
    }
}

/// Alerts into the journal.
#[derive(Debug)]
pub struct JournalSink {
    journal: Arc<Mutex<Journal>>,
    /// Records the journal could not take yet, and whether each is a system alert.
    backlog: VecDeque<(Vec<u8>, bool)>,
    max_backlog: usize,
    dropped: u64,
    failing: bool,
    /// Told about every append (the uplink waits on it).
    notify: Option<Arc<Notify>>,
    /// For alerts about the journal itself.
    identity: Option<(Arc<str>, Clock)>,
    ids: IdGenerator,
    /// The journal cannot store alerts.
    failing_episode: Episode,
    /// The journal is evicting records.
    evicting: Episode,
    /// Evictions per lane already told about, and when the last one was seen.
    evicted_seen: [u64; 3],
    last_eviction_ns: i64,
    system: Vec<Alert>,
}

impl JournalSink {
    pub fn new(journal: Arc<Mutex<Journal>>, max_backlog: usize) -> Self {
        let evicted_seen = journal.lock().map_or_else(
            |p| p.into_inner().counters().evicted,
            |j| j.counters().evicted,
        );
        JournalSink {
            journal,
            backlog: VecDeque::new(),
            max_backlog: max_backlog.max(1),
            dropped: 0,
            failing: false,
            notify: None,
            identity: None,
            ids: IdGenerator::new(),
            failing_episode: Episode::default(),
            evicting: Episode::default(),
            evicted_seen,
            last_eviction_ns: 0,
            system: Vec::new(),
        }
    }

    /// Raise a Critical `system` alert (asset = agent id, detector `journal`) while the
    /// journal cannot store alerts, and clear it when it can again.
    pub fn with_identity(mut self, agent_id: Arc<str>, clock: Clock) -> Self {
        self.identity = Some((agent_id, clock));
        self
    }

    fn raise(&mut self, state: AlertState, message: String) {
        self.system_alert(Condition::Failing, Severity::Critical, state, message);
    }

    /// A `system` alert about `condition`, in that condition's episode.
    fn system_alert(
        &mut self,
        condition: Condition,
        severity: Severity,
        state: AlertState,
        message: String,
    ) {
        let Some((agent, clock)) = &self.identity else {
            return;
        };
        let (agent, now) = (agent.clone(), clock.now());
        let id = self.ids.next(now.wall_ns);
        let ep = match condition {
            Condition::Failing => &mut self.failing_episode,
            Condition::Evicting => &mut self.evicting,
        };
        let episode = match state {
            AlertState::Raised => *ep.id.get_or_insert(id),
            AlertState::Cleared => ep.id.take().unwrap_or(id),
        };
        ep.severity = (state == AlertState::Raised).then_some(severity);
        self.system.push(system_alert(
            &agent,
            id,
            episode,
            condition.component(),
            severity,
            state,
            message,
            now,
        ));
    }

    /// Raises (or escalates) the eviction alert when the journal evicted records
    /// since the last look; clears it after [`EVICTION_QUIET`] without evictions.
    fn watch_evictions(&mut self, evicted: [u64; 3]) {
        let Some((_, clock)) = &self.identity else {
            return;
        };
        let now = clock.now().wall_ns;
        // Late acknowledgements lower the counts; only a rise is a new eviction.
        let grew = evicted
            .iter()
            .zip(self.evicted_seen)
            .any(|(now, seen)| *now > seen);
        self.evicted_seen = evicted;
        if grew {
            self.last_eviction_ns = now;
            let [alerts, events, telemetry] = evicted;
            let severity = if alerts > 0 {
                Severity::Critical
            } else {
                Severity::Warning
            };
            if self.evicting.severity < Some(severity) {
                self.system_alert(
                    Condition::Evicting,
                    severity,
                    AlertState::Raised,
                    format!(
                        "journal full: evicting the oldest records to store new ones \
                         ({telemetry} telemetry, {events} events, {alerts} alerts evicted so far)"
                    ),
                );
            }
        } else if self.evicting.id.is_some()
            && now.saturating_sub(self.last_eviction_ns) >= EVICTION_QUIET.as_nanos() as i64
        {
            let severity = self.evicting.severity.unwrap_or(Severity::Warning);
            self.system_alert(
                Condition::Evicting,
                severity,
                AlertState::Cleared,
                format!(
                    "journal no longer evicting ({} telemetry, {} events, {} alerts evicted in all)",
                    evicted[2], evicted[1], evicted[0]
                ),
            );
        }
    }

    /// Notifies `n` after every successful append.
    pub fn with_notify(mut self, n: Arc<Notify>) -> Self {
        self.notify = Some(n);
        self
    }

    /// Alerts lost because the journal failed for longer than the backlog could hold.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one record, wakes the uplink and watches for evictions. A record
    /// that was appended stays even if the sync after it fails (it is retried at the
    /// next one).
    /// `priority` records (system alerts) are sent before the rest of a backlog.
    fn store(&mut self, lane: Lane, rec: &[u8], priority: bool) -> Result<(), Stored> {
        let mut j = self.lock();
        if priority {
            j.append_priority(lane, rec)
        } else {
            j.append(lane, rec)
        }
        .map_err(Stored::Refused)?;
        let synced = j.maybe_sync();
        let evicted = j.counters().evicted;
        drop(j);
        if let Some(n) = &self.notify {
            n.notify_one();
        }
        self.watch_evictions(evicted);
        synced.map_err(Stored::NotSynced)
    }

    fn drain_backlog(&mut self) -> Result<(), JournalError> {
        while let Some((rec, system)) = self.backlog.front() {
            let r = if *system {
                self.lock().append_priority(Lane::Alert, rec)
            } else {
                self.lock().append(Lane::Alert, rec)
            };
            match r {
                Ok(_) => {
                    self.backlog.pop_front();
                    if let Some(n) = &self.notify {
                        n.notify_one();
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if std::mem::take(&mut self.failing) {
            tracing::info!("journal accepts alerts again; in-memory backlog written");
            let lost = self.dropped;
            self.raise(
                AlertState::Cleared,
                format!("journal stores alerts again; held alerts written ({lost} lost to the memory bound so far)"),
            );
        }
        Ok(())
    }

    fn keep(&mut self, rec: Vec<u8>, system: bool, e: &JournalError) {
        if !self.failing {
            tracing::error!(error = %e, disk_full = e.is_disk_full(),
                "journal cannot accept alerts; keeping them in memory (bounded) and retrying");
            self.failing = true;
            let what = if e.is_disk_full() {
                "the disk is full"
            } else {
                "of an I/O error"
            };
            self.raise(
                AlertState::Raised,
                format!(
                    "journal cannot store alerts because {what} ({e}); holding up to {} in memory and retrying",
                    self.max_backlog
                ),
            );
        }
        if self.backlog.len() == self.max_backlog {
            let victim = self.backlog.iter().position(|(_, sys)| !sys).unwrap_or(0);
            self.backlog.remove(victim);
            self.dropped += 1;
            tracing::error!(
                dropped = self.dropped,
                "alert backlog full while the journal is failing: oldest alert dropped"
            );
        }
        self.backlog.push_back((rec, system));
    }
}

impl AlertSink for JournalSink {
    fn name(&self) -> &str {
        "journal"
    }

    fn deliver(&mut self, alert: &Alert) -> std::io::Result<()> {
        let body = json::alert(alert).map_err(std::io::Error::other)?;
        let rec = Envelope::new(alert.id.0, &alert.asset, alert.time.wall_ns, body).encode();
        let system = alert.kind == "system";
        if let Err(e) = self.drain_backlog() {
            self.keep(rec, system, &e);
            return Err(std::io::Error::other(e));
        }
        match self.store(Lane::Alert, &rec, system) {
            Err(Stored::Refused(e)) => {
                self.keep(rec, system, &e);
                Err(std::io::Error::other(e))
            }
            other => other.map_err(Stored::into_io),
        }
    }

    /// Telemetry goes to the lowest-priority lane; it is not kept in memory when the
    /// journal fails (it is superseded by the next summary anyway).
    fn telemetry(&mut self, asset: &str, wall_ns: i64, body: &[u8]) -> std::io::Result<()> {
        let rec = Envelope::new(0, asset, wall_ns, body.to_vec()).encode();
        self.store(Lane::Telemetry, &rec, false)
            .map_err(Stored::into_io)
    }

    /// Driver events go to the event lane (between alerts and telemetry). Like
    /// telemetry they are not held in memory while the journal fails.
    fn event(&mut self, source: &str, wall_ns: i64, body: &[u8]) -> std::io::Result<()> {
        let rec = Envelope::new(0, source, wall_ns, body.to_vec()).encode();
        self.store(Lane::Event, &rec, false)
            .map_err(Stored::into_io)
    }

    /// Labels go to the alert lane (they are few and precious), routed to the
    /// labels topic by their key.
    fn label(&mut self, id: u128, wall_ns: i64, body: &[u8]) -> std::io::Result<()> {
        let key = crate::delivery::labels::LABELS_KEY;
        let rec = Envelope::new(id, key, wall_ns, body.to_vec()).encode();
        self.store(Lane::Alert, &rec, false)
            .map_err(Stored::into_io)
    }

    fn take_system_alerts(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.system)
    }

    /// Called when the alert queue is empty: sync everything (group commit).
    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.drain_backlog();
        let mut j = self.lock();
        let synced = j.sync();
        let evicted = j.counters().evicted;
        drop(j);
        self.watch_evictions(evicted);
        synced.map_err(std::io::Error::other)
    }
}

impl Drop for JournalSink {
    /// A last attempt to store what is held; what still cannot be is counted and
    /// logged once, never discarded silently.
    fn drop(&mut self) {
        let _ = self.drain_backlog();
        if !self.backlog.is_empty() {
            self.dropped += self.backlog.len() as u64;
            tracing::error!(
                alerts = self.backlog.len(),
                lost_in_all = self.dropped,
                "stopping with alerts the journal could not store: they are lost"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::journal::fs::MemFs;
    use crate::delivery::journal::{FsyncPolicy, JournalConfig};
    use edge_driver_api::Timestamp;

    fn alert(n: i64) -> Alert {
        let ts = Timestamp {
            wall_ns: n,
            mono_ns: n as u64,
            synced: true,
        };
        let mut ids = IdGenerator::with_seed(n as u64 + 1);
        let id = ids.next(n);
        let mut a = system_alert(
            &Arc::from("gw"),
            id,
            id,
            "test",
            Severity::Warning,
            AlertState::Raised,
            format!("alert {n}"),
            ts,
        );
        a.kind = "threshold";
        a
    }

    fn journal(fs: &MemFs) -> Arc<Mutex<Journal>> {
        journal_with(fs, 1 << 16)
    }

    /// A journal whose budget is far above what a test stores.
    fn journal_with(fs: &MemFs, segment_bytes: u64) -> Arc<Mutex<Journal>> {
        let cfg = JournalConfig {
            dir: "/j".into(),
            segment_bytes,
            max_disk: 1 << 30,
            fsync: FsyncPolicy::Always,
        };
        let (j, _) = Journal::open(cfg, Arc::new(fs.clone())).expect("open");
        Arc::new(Mutex::new(j))
    }

    fn messages(j: &Arc<Mutex<Journal>>) -> Vec<String> {
        j.lock()
            .expect("journal")
            .read(Lane::Alert, 0, 100)
            .expect("read")
            .iter()
            .map(|r| {
                let env = Envelope::decode(&r.payload).expect("envelope");
                serde_json::from_slice::<serde_json::Value>(&env.body).expect("json")["message"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_disk_raises_a_critical_system_alert_holds_alerts_and_recovers() {
        let fs = MemFs::new();
        let j = journal(&fs);
        let mut sink =
            JournalSink::new(j.clone(), 2).with_identity("gw".into(), Clock::virtual_from(0));
        // Nothing stored yet, so nothing to evict: the journal cannot take alerts.
        fs.set_space(Some(0));
        for n in 2..5 {
            assert!(sink.deliver(&alert(n)).is_err());
        }
        let raised = sink.take_system_alerts();
        assert_eq!(raised.len(), 1, "one alert per episode, not per failure");
        assert_eq!(
            (raised[0].severity, raised[0].state, raised[0].kind),
            (Severity::Critical, AlertState::Raised, "system")
        );
        assert!(
            raised[0].message.contains("disk is full"),
            "{}",
            raised[0].message
        );
        assert_eq!(
            sink.dropped(),
            1,
            "backlog bound 2: the oldest of three was dropped"
        );
        fs.set_space(None);
        sink.flush().expect("recovers");
        let cleared = sink.take_system_alerts();
        assert_eq!(cleared.len(), 1);
        assert_eq!(
            (cleared[0].state, cleared[0].episode),
            (AlertState::Cleared, raised[0].id)
        );
        assert_eq!(messages(&j), vec!["alert 3", "alert 4"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_system_alert_about_the_journal_is_never_the_one_dropped() {
        let fs = MemFs::new();
        let j = journal(&fs);
        let mut sink =
            JournalSink::new(j.clone(), 2).with_identity("gw".into(), Clock::virtual_from(0));
        fs.set_space(Some(0));
        assert!(sink.deliver(&alert(1)).is_err());
        let raised = sink.take_system_alerts();
        // The engine hands the system alert back to every sink, this one included.
        assert!(sink.deliver(&raised[0]).is_err());
        for n in 2..6 {
            assert!(sink.deliver(&alert(n)).is_err());
        }
        fs.set_space(None);
        sink.flush().expect("recovers");
        let stored = messages(&j);
        assert_eq!(stored.len(), 2, "{stored:?}");
        assert_eq!(stored[0], raised[0].message, "{stored:?}");
        assert_eq!(stored[1], "alert 5");
        assert_eq!(sink.dropped(), 4);
        let priority = j
            .lock()
            .expect("journal")
            .priority_pending(Lane::Alert, u64::MAX);
        assert_eq!(
            priority.len(),
            1,
            "the system alert goes before the backlog"
        );
    }

    #[test]
    fn a_full_disk_with_telemetry_stored_keeps_taking_alerts_by_evicting_it() {
        let fs = MemFs::new();
        let j = journal(&fs);
        let mut sink = JournalSink::new(j.clone(), 2);
        for n in 0..200 {
            sink.telemetry("pump", n, &[7; 200]).expect("telemetry");
        }
        fs.set_space(Some(0));
        for n in 1..=20 {
            sink.deliver(&alert(n))
                .expect("stored by evicting telemetry");
        }
        assert_eq!(messages(&j).len(), 20);
        let evicted = j.lock().expect("journal").stats().counters.evicted;
        assert!(evicted[Lane::Telemetry as usize] > 0, "{evicted:?}");
        assert_eq!(evicted[Lane::Alert as usize], 0, "{evicted:?}");
        assert_eq!(sink.dropped(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn evictions_raise_a_system_alert_that_escalates_with_alerts_and_clears_when_quiet() {
        let fs = MemFs::new();
        let j = journal_with(&fs, 4096);
        let mut sink =
            JournalSink::new(j.clone(), 8).with_identity("gw".into(), Clock::virtual_from(0));
        for n in 0..40 {
            sink.telemetry("pump", n, &[7; 500]).expect("telemetry");
        }
        fs.set_space(Some(0));
        sink.deliver(&alert(1))
            .expect("stored by evicting telemetry");
        let raised = sink.take_system_alerts();
        assert_eq!(raised.len(), 1, "{raised:#?}");
        assert_eq!(
            (&*raised[0].detector, raised[0].severity, raised[0].state),
            ("journal_evictions", Severity::Warning, AlertState::Raised)
        );
        // Only telemetry so far: more of it raises nothing new.
        sink.deliver(&alert(2)).expect("stored");
        assert!(sink.take_system_alerts().is_empty());
        // Alerts start to go: the same episode escalates to Critical.
        let mut escalated = Vec::new();
        for n in 3..400 {
            sink.deliver(&alert(n)).expect("stored by evicting");
            escalated.extend(sink.take_system_alerts());
        }
        assert_eq!(escalated.len(), 1, "{escalated:#?}");
        assert_eq!(
            (escalated[0].severity, escalated[0].episode),
            (Severity::Critical, raised[0].episode)
        );
        assert!(j.lock().expect("journal").counters().evicted[0] > 0);
        // Quiet for the whole period: cleared.
        fs.set_space(None);
        tokio::time::advance(EVICTION_QUIET).await;
        sink.flush().expect("flush");
        let cleared = sink.take_system_alerts();
        assert_eq!(cleared.len(), 1, "{cleared:#?}");
        assert_eq!(
            (cleared[0].state, cleared[0].episode),
            (AlertState::Cleared, raised[0].episode)
        );
    }
}
