//! The uplink: forwards journal records to the central MQTT broker and releases each
//! one only when the broker acknowledged that exact publish (QoS 1 PUBACK).
//!
//! # Design
//!
//! * **The journal is the source of truth.** Every connection starts from a fresh
//!   rumqttc client and event loop, and re-reads every unreleased record from the
//!   journal. rumqttc's own in-flight and "pending from the last session" state is
//!   never relied on (it is dropped with the event loop), so nothing depends on
//!   rumqttc re-sending correctly after a broken connection. Duplicates after a
//!   reconnect are possible (at-least-once); every message carries its alert id.
//! * **Correlating PUBACKs.** rumqttc assigns packet ids itself and reports each
//!   publish as `Outgoing::Publish(pkid)`, in the order the requests were queued. We
//!   queue requests in a FIFO of targets (journal record or status message), pop one
//!   per `Outgoing::Publish`, and map `pkid → target`; `PubAck(pkid)` releases the
//!   record. rumqttc's in-flight limit is four times our window, so its packet-id
//!   slots cannot collide; if it ever reports a collision (`AwaitAck`) or a publish we
//!   did not queue, the connection is dropped and restarted from the journal rather
//!   than risk releasing the wrong record.
//! * **Order.** Lanes in priority order (alerts, events, telemetry). After a
//!   reconnect, records appended since the connection came up ("live") go first; the
//!   backlog from before follows at `replay_rate` messages per second, so a returning
//!   gateway does not flood the broker. Within live and within backlog, order is by
//!   sequence number.
//! * **Status.** A retained `{prefix}/{agent}/status` topic: `online` (with version and
//!   config hash) on every connect, `offline` as the last will and on a clean stop.
//! * Credentials come from a file or an environment variable and are never logged.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::journal::sink::Envelope;
use crate::journal::{Journal, JournalStats, Lane};
use crate::supervisor::{BackoffConfig, Jitter};

/// Uplink settings (validated).
#[derive(Clone)]
pub struct UplinkConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub agent_id: String,
    pub topic_prefix: String,
    pub keep_alive: Duration,
    /// Publishes awaiting PUBACK at most.
    pub window: u16,
    /// Backlog messages per second after a reconnect.
    pub replay_rate: u32,
    pub username: Option<String>,
    pub password: Option<String>,
    pub connect_timeout: Duration,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    pub version: String,
    pub config_hash: String,
    /// How often the retained status (with journal counters) is refreshed.
    pub status_interval: Duration,
    /// TLS client configuration (CA roots, optional client certificate); plain TCP if `None`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

pub use edge_driver_api::tls::build_tls;

impl std::fmt::Debug for UplinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("topic_prefix", &self.topic_prefix)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl UplinkConfig {
    pub fn status_topic(&self) -> String {
        format!("{}/{}/status", self.topic_prefix, self.agent_id)
    }

    pub fn record_topic(&self, lane: Lane, asset: &str) -> String {
        let kind = match lane {
            Lane::Alert => "alerts",
            Lane::Event => "events",
            Lane::Telemetry => "telemetry",
        };
        format!("{}/{}/{kind}/{asset}", self.topic_prefix, self.agent_id)
    }
}

/// Counters of the uplink.
#[derive(Debug, Default)]
pub struct UplinkStats {
    pub connected: AtomicBool,
    pub connects: AtomicU64,
    pub published: AtomicU64,
    pub acked: AtomicU64,
    pub in_flight: AtomicU64,
    /// Records that could not be decoded (released so they do not block the lane).
    pub undeliverable: AtomicU64,
    pub connection_errors: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Record(Lane, u64),
    Status,
}

/// Per-connection replay cursors of one lane.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    /// Next live seq to send (records appended after the connection came up).
    live: u64,
    /// Next backlog seq to send; the backlog ends at `live_start`.
    backlog: u64,
    live_start: u64,
}

/// The JSON of a status message (`agent/schema/status.v1.schema.json`); with the
/// journal's counters when given (evictions and corruption are reported upstream).
pub fn status_payload(cfg: &UplinkConfig, state: &str) -> Vec<u8> {
    status_doc(cfg, state, None)
}

fn status_doc(cfg: &UplinkConfig, state: &str, journal: Option<&JournalStats>) -> Vec<u8> {
    let mut doc = serde_json::json!({
        "v": 1,
        "state": state,
        "agent_id": cfg.agent_id,
        "version": cfg.version,
        "config_hash": cfg.config_hash,
    });
    if let Some(j) = journal {
        let lanes =
            |v: [u64; 3]| serde_json::json!({ "alert": v[0], "event": v[1], "telemetry": v[2] });
        doc["journal"] = serde_json::json!({
            "bytes": j.bytes,
            "pending": lanes(j.pending),
            "evicted": lanes(j.counters.evicted),
            "corrupt": j.counters.corrupt,
            "torn": j.counters.torn,
            "quarantined": j.counters.quarantined,
        });
    }
    serde_json::to_vec(&doc).unwrap_or_default()
}

fn lock(j: &Mutex<Journal>) -> std::sync::MutexGuard<'_, Journal> {
    j.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs until `cancel`; `wake` is notified when the journal has new records.
pub async fn run_uplink(
    cfg: UplinkConfig,
    journal: Arc<Mutex<Journal>>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    stats: Arc<UplinkStats>,
) {
    let mut failures: u32 = 0;
    let backoff = BackoffConfig {
        initial: cfg.reconnect_initial,
        max: cfg.reconnect_max,
        healthy_after: Duration::ZERO,
    };
    let mut jitter = Jitter::new(&cfg.client_id);
    loop {
        if cancel.is_cancelled() {
            break;
        }
        let connects_before = stats.connects.load(Ordering::Relaxed);
        let outcome = connection(&cfg, &journal, &wake, &cancel, &stats).await;
        // A connection that came up and then broke starts the backoff afresh.
        if stats.connects.load(Ordering::Relaxed) > connects_before {
            failures = 0;
        }
        match outcome {
            Ok(Stop::Cancelled) => break,
            Ok(Stop::Reconnect(why)) => {
                tracing::warn!(reason = %why, "uplink connection restarted");
                failures = 0;
            }
            Err(e) => {
                stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                if failures == 0 {
                    tracing::warn!(host = %cfg.host, port = cfg.port, error = %e, "uplink cannot reach the broker; alerts stay in the journal");
                } else {
                    tracing::debug!(error = %e, attempt = failures, "uplink connection failed again");
                }
                failures = failures.saturating_add(1);
            }
        }
        stats.connected.store(false, Ordering::Relaxed);
        stats.in_flight.store(0, Ordering::Relaxed);
        let delay = if failures == 0 {
            Duration::from_millis(100)
        } else {
            backoff.jittered(failures - 1, &mut jitter)
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

enum Stop {
    Cancelled,
    Reconnect(String),
}

async fn connection(
    cfg: &UplinkConfig,
    journal: &Arc<Mutex<Journal>>,
    wake: &Notify,
    cancel: &CancellationToken,
    stats: &UplinkStats,
) -> Result<Stop, String> {
    let mut opts = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    opts.set_keep_alive(cfg.keep_alive);
    opts.set_clean_session(false);
    opts.set_inflight(cfg.window.saturating_mul(4).max(4));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    opts.set_last_will(LastWill::new(
        cfg.status_topic(),
        status_payload(cfg, "offline"),
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(tls) = &cfg.tls {
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.clone(),
        )));
    }
    if let Some(user) = &cfg.username {
        opts.set_credentials(user.clone(), cfg.password.clone().unwrap_or_default());
    }
    let window = usize::from(cfg.window.max(1));
    let (client, mut eventloop) = AsyncClient::new(opts, window * 2 + 8);

    // Connect (rumqttc connects on the first poll).
    let connack = tokio::select! {
        _ = cancel.cancelled() => return Ok(Stop::Cancelled),
        r = tokio::time::timeout(cfg.connect_timeout, eventloop.poll()) => r,
    };
    match connack {
        Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) if ack.code == ConnectReturnCode::Success => {
        }
        Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
            return Err(format!("broker refused the connection: {:?}", ack.code));
        }
        Ok(Ok(other)) => return Err(format!("unexpected first packet {other:?}")),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("no CONNACK within {:?}", cfg.connect_timeout)),
    }
    stats.connected.store(true, Ordering::Relaxed);
    stats.connects.fetch_add(1, Ordering::Relaxed);

    // Cursors: everything unreleased is re-sent; live records first.
    let mut cursors: Vec<Cursor> = {
        let j = lock(journal);
        Lane::ALL
            .iter()
            .map(|&l| {
                let first = j.acked(l) + 1;
                let live_start = j.next_seq(l);
                Cursor {
                    live: live_start,
                    backlog: first,
                    live_start,
                }
            })
            .collect()
    };
    let pending_backlog: u64 = cursors.iter().map(|c| c.live_start - c.backlog).sum();
    tracing::info!(host = %cfg.host, port = cfg.port, backlog = pending_backlog, "uplink connected");

    let mut queued: VecDeque<Target> = VecDeque::new();
    let mut in_flight: HashMap<u16, Target> = HashMap::new();
    let mut outstanding = 0usize;
    let online = |j: &Mutex<Journal>| status_doc(cfg, "online", Some(&lock(j).stats()));
    if client
        .try_publish(cfg.status_topic(), QoS::AtLeastOnce, true, online(journal))
        .is_err()
    {
        return Err("request queue closed".into());
    }
    let mut status_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + cfg.status_interval,
        cfg.status_interval,
    );
    queued.push_back(Target::Status);
    outstanding += 1;

    let rate = f64::from(cfg.replay_rate.max(1));
    let mut tokens = rate.min(f64::from(cfg.window));
    let mut last_refill = tokio::time::Instant::now();
    let mut stopping = false;

    loop {
        // Refill the replay budget.
        let now = tokio::time::Instant::now();
        tokens = (tokens + (now - last_refill).as_secs_f64() * rate).min(rate.max(1.0));
        last_refill = now;
        let mut backlog_waiting = false;
        // Fill the window: per lane, live first, then backlog within the budget.
        if !stopping {
            'fill: for lane in Lane::ALL {
                let li = lane as usize;
                while outstanding < window {
                    let c = cursors[li];
                    let want = window - outstanding;
                    let live = lock(journal)
                        .read(lane, c.live, want)
                        .map_err(|e| e.to_string())?;
                    if live.is_empty() {
                        break;
                    }
                    for rec in live {
                        if publish_record(cfg, &client, lane, &rec, &mut queued, journal, stats)? {
                            outstanding += 1;
                        }
                        cursors[li].live = rec.seq + 1;
                    }
                }
                while outstanding < window && cursors[li].backlog < cursors[li].live_start {
                    if tokens < 1.0 {
                        backlog_waiting = true;
                        break 'fill;
                    }
                    let c = cursors[li];
                    let want = (window - outstanding).min(tokens as usize).max(1);
                    let recs: Vec<_> = lock(journal)
                        .read(lane, c.backlog, want)
                        .map_err(|e| e.to_string())?
                        .into_iter()
                        .filter(|r| r.seq < c.live_start)
                        .collect();
                    if recs.is_empty() {
                        cursors[li].backlog = c.live_start;
                        break;
                    }
                    for rec in recs {
                        if publish_record(cfg, &client, lane, &rec, &mut queued, journal, stats)? {
                            outstanding += 1;
                            tokens -= 1.0;
                        }
                        cursors[li].backlog = rec.seq + 1;
                    }
                }
            }
        }
        stats.in_flight.store(outstanding as u64, Ordering::Relaxed);
        if stopping && outstanding == 0 {
            let _ = client.try_disconnect();
            // Let the DISCONNECT go out.
            let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
            return Ok(Stop::Cancelled);
        }
        let refill_in =
            Duration::from_secs_f64((1.0 - tokens).max(0.0) / rate).max(Duration::from_millis(5));
        tokio::select! {
            ev = eventloop.poll() => match ev {
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    let Some(t) = queued.pop_front() else {
                        return Ok(Stop::Reconnect(format!("publish {pkid} that was not queued")));
                    };
                    in_flight.insert(pkid, t);
                }
                Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => {
                    return Ok(Stop::Reconnect(format!("packet id collision on {pkid}")));
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => match in_flight.remove(&ack.pkid) {
                    Some(Target::Record(lane, seq)) => {
                        lock(journal).ack(lane, seq).map_err(|e| e.to_string())?;
                        stats.acked.fetch_add(1, Ordering::Relaxed);
                        outstanding = outstanding.saturating_sub(1);
                    }
                    Some(Target::Status) => outstanding = outstanding.saturating_sub(1),
                    None => tracing::debug!(pkid = ack.pkid, "PUBACK for an unknown packet id"),
                },
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            },
            _ = wake.notified(), if !stopping => {}
            _ = status_tick.tick(), if !stopping && outstanding < window => {
                // Refresh the retained status with the journal's counters.
                if client.try_publish(cfg.status_topic(), QoS::AtLeastOnce, true, online(journal)).is_ok() {
                    queued.push_back(Target::Status);
                    outstanding += 1;
                }
            }
            _ = tokio::time::sleep(refill_in), if backlog_waiting && !stopping => {}
            _ = cancel.cancelled(), if !stopping => {
                // Clean stop: say offline (retained), wait briefly for what is in flight.
                stopping = true;
                if client.try_publish(cfg.status_topic(), QoS::AtLeastOnce, true, status_payload(cfg, "offline")).is_ok() {
                    queued.push_back(Target::Status);
                    outstanding += 1;
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(3)), if stopping => {
                let _ = client.try_disconnect();
                return Ok(Stop::Cancelled);
            }
        }
    }
}

fn publish_record(
    cfg: &UplinkConfig,
    client: &AsyncClient,
    lane: Lane,
    rec: &crate::journal::Record,
    queued: &mut VecDeque<Target>,
    journal: &Mutex<Journal>,
    stats: &UplinkStats,
) -> Result<bool, String> {
    let Some(env) = Envelope::decode(&rec.payload) else {
        // Not decodable: release it so it cannot block the lane forever.
        tracing::error!(
            lane = lane.name(),
            seq = rec.seq,
            "undecodable journal record skipped"
        );
        stats.undeliverable.fetch_add(1, Ordering::Relaxed);
        lock(journal)
            .ack(lane, rec.seq)
            .map_err(|e| e.to_string())?;
        return Ok(false);
    };
    client
        .try_publish(
            cfg.record_topic(lane, &env.asset),
            QoS::AtLeastOnce,
            false,
            env.body,
        )
        .map_err(|e| format!("request queue: {e}"))?;
    queued.push_back(Target::Record(lane, rec.seq));
    stats.published.fetch_add(1, Ordering::Relaxed);
    Ok(true)
}
