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
//!   backlog from before follows in the window's free slots, paced by
//!   [`ReplayRate`]: by default (`auto`) as fast as the broker acknowledges without
//!   its PUBACK latency growing (the backlog's share of the window grows by one per
//!   prompt PUBACK and halves when PUBACKs slow down, and a quarter of the window is
//!   always left to live records), or at a fixed rate. Within live and within
//!   backlog, order is by sequence number.
//! * **Status.** A retained `{prefix}/{agent}/status` topic: `online` (with version and
//!   config hash) on every connect, `offline` as the last will and on a clean stop.
//! * **Sparkplug B** (`[sparkplug]`, [`crate::delivery::sparkplug`]): the will is the
//!   node's `NDEATH` instead (MQTT has one will per connection; the status topic then
//!   says `offline` on a clean stop only); after CONNACK the node subscribes to its
//!   commands and publishes its births, then `DDATA` every `scan`. Sparkplug messages
//!   are QoS 0 (as the specification asks) and take no place in the window.
//! * Credentials come from a file or an environment variable and are never logged.

mod pace;
mod session;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::delivery::journal::{Journal, JournalError, JournalStats};
use crate::delivery::wire::{Topics, json};
use crate::ingest::supervisor::{BackoffConfig, Jitter};
use session::{Session, Stop};

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
    /// How fast the backlog found at connect is replayed.
    pub replay_rate: ReplayRate,
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
    /// Also a Sparkplug B edge node (`[sparkplug]`): its will is then `NDEATH`.
    pub sparkplug: Option<Arc<crate::delivery::sparkplug::SparkplugLink>>,
    /// Remote operations (`[commands]`): requests go to their executor.
    pub commands: Option<CommandLink>,
}

/// Where remote-operation requests go, and what the agent announces.
#[derive(Clone, Debug)]
pub struct CommandLink {
    /// Where requests arrive (`{prefix}/{agent}/cmd/`, then `{op}/{id}`).
    pub base: String,
    /// The retained capabilities document (`{prefix}/{agent}/capabilities`).
    pub capabilities: Vec<u8>,
    /// Requests (topic, payload) to the executor; full: dropped and counted.
    pub tx: tokio::sync::mpsc::Sender<(String, Vec<u8>)>,
}

pub use edge_driver_api::tls::build_tls;

/// How fast the backlog found at connect is replayed (live records always go first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayRate {
    /// As fast as the broker acknowledges without its PUBACK latency growing.
    Auto,
    /// At most this many backlog messages per second.
    PerSecond(u32),
}

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
            .field("sparkplug", &self.sparkplug)
            .finish_non_exhaustive()
    }
}

impl UplinkConfig {
    /// This agent's topics.
    pub fn topics(&self) -> Topics<'_> {
        Topics {
            prefix: &self.topic_prefix,
            agent_id: &self.agent_id,
        }
    }

    /// The retained status message (`online` with the journal's counters, or
    /// `offline`).
    pub fn status_payload(&self, state: &str, journal: Option<&JournalStats>) -> Vec<u8> {
        let who = json::Identity {
            agent_id: &self.agent_id,
            version: &self.version,
            config_hash: &self.config_hash,
        };
        json::status(who, state, journal)
    }
}

crate::counters! {
    /// Counters of the uplink.
    pub struct UplinkStats => UplinkSnapshot {
        /// Connections to the broker.
        connects: counter "uplink_connects_total",
        /// Records published to the broker.
        published: counter "uplink_published_total",
        /// Records the broker acknowledged (and the journal released).
        acked: counter "uplink_acked_total",
        /// Publishes sent and not yet acknowledged.
        in_flight: gauge "uplink_in_flight",
        sparkplug_published: counter "uplink_sparkplug_published_total",
        sparkplug_rebirths: counter "uplink_sparkplug_rebirths_total",
        sparkplug_commands_refused: counter "uplink_sparkplug_commands_refused_total",
        /// Remote-operation requests dropped because the executor's queue was full.
        commands_dropped: counter "uplink_commands_dropped_total",
        /// Journal records that could not be decoded (released so they do not block the lane).
        undeliverable: counter "uplink_undeliverable_records_total",
        /// Broker connection errors.
        connection_errors: counter "uplink_connection_errors_total",
    }
    extra {
        /// While connected to the broker.
        pub connected: AtomicBool,
    }
}

/// Why a connection to the broker ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("broker refused the connection: {0:?}")]
    Refused(rumqttc::ConnectReturnCode),
    #[error("unexpected first packet {0}")]
    UnexpectedFirstPacket(String),
    #[error("no CONNACK within {0:?}")]
    NoConnAck(Duration),
    #[error(transparent)]
    Connection(Box<rumqttc::ConnectionError>),
    #[error("request queue: {0}")]
    RequestQueue(Box<rumqttc::ClientError>),
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
}

// rumqttc's errors are large; boxed, the happy path's `Result`s stay small.
impl From<rumqttc::ConnectionError> for UplinkError {
    fn from(e: rumqttc::ConnectionError) -> Self {
        UplinkError::Connection(Box::new(e))
    }
}

impl From<rumqttc::ClientError> for UplinkError {
    fn from(e: rumqttc::ClientError) -> Self {
        UplinkError::RequestQueue(Box::new(e))
    }
}

impl UplinkError {
    /// What is wrong, for people: which kind of failure (the uplink logs again
    /// only when it changes) and a sentence that says what to check.
    pub fn explain(&self, host: &str, port: u16) -> (&'static str, String) {
        use rumqttc::{ConnectionError as C, StateError as S};
        let at = format!("{host}:{port}");
        let not_mqtt = || {
            format!(
                "the server on {at} is not an MQTT broker (it answered with something that is not MQTT); check [uplink] host and port (MQTT 1883, MQTT over TLS 8883) and tls"
            )
        };
        match self {
            UplinkError::Refused(code) => (
                "refused",
                format!(
                    "the broker on {at} refused the connection ({code:?}); check username, password and client_id"
                ),
            ),
            UplinkError::UnexpectedFirstPacket(_) => ("not_mqtt", not_mqtt()),
            UplinkError::NoConnAck(t) => (
                "silent",
                format!(
                    "the server on {at} accepted the connection but did not answer the MQTT CONNECT within {t:?} (not an MQTT broker, or one that expects TLS?)"
                ),
            ),
            UplinkError::Connection(c) => match &**c {
                C::MqttState(S::Deserialization(_) | S::WrongPacket) | C::NotConnAck(_) => {
                    ("not_mqtt", not_mqtt())
                }
                C::NetworkTimeout | C::FlushTimeout => (
                    "silent",
                    format!(
                        "the server on {at} accepted the connection but did not answer the MQTT CONNECT (not an MQTT broker, or one that expects TLS?)"
                    ),
                ),
                C::ConnectionRefused(code) => (
                    "refused",
                    format!(
                        "the broker on {at} refused the connection ({code:?}); check username, password and client_id"
                    ),
                ),
                C::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => (
                    "unreachable",
                    format!("nothing listens on {at} (connection refused); is the broker running?"),
                ),
                C::Tls(e) => ("tls", format!("TLS with {at} failed: {e}")),
                other => (
                    "unreachable",
                    format!("cannot reach the broker on {at}: {other}"),
                ),
            },
            other => ("other", other.to_string()),
        }
    }
}

fn lock(j: &Mutex<Journal>) -> std::sync::MutexGuard<'_, Journal> {
    j.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long a connection must last for its end to reset the reconnect backoff.
const HEALTHY_CONNECTION: Duration = Duration::from_secs(10);

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
    // The kind of the last failure logged: one warning per change of state.
    let mut logged: Option<&'static str> = None;
    loop {
        if cancel.is_cancelled() {
            break;
        }
        let connects_before = stats.connects.load(Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        let outcome = Session::run(&cfg, &journal, &wake, &cancel, &stats).await;
        // A connection that was up for a while and then broke starts the backoff
        // afresh; one that dies young (a broker or proxy that accepts and then
        // fails) counts as a failure, so the backoff keeps growing.
        let connected = stats.connects.load(Ordering::Relaxed) > connects_before;
        let healthy = connected && started.elapsed() >= HEALTHY_CONNECTION;
        if connected {
            // A new state since the last warning: the next failure is news.
            logged = None;
        }
        match outcome {
            Ok(Stop::Cancelled) => break,
            Ok(Stop::Reconnect(why)) => {
                tracing::warn!(reason = %why, "uplink connection restarted");
                logged = None;
            }
            Err(e) => {
                stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                let (kind, why) = e.explain(&cfg.host, cfg.port);
                if logged != Some(kind) {
                    tracing::warn!(error = %e, "uplink: {why}; alerts stay in the journal, retrying with backoff");
                    logged = Some(kind);
                } else {
                    tracing::debug!(error = %e, attempt = failures, "uplink connection failed again");
                }
            }
        }
        failures = if healthy {
            0
        } else {
            failures.saturating_add(1)
        };
        stats.connected.store(false, Ordering::Relaxed);
        stats.in_flight.store(0, Ordering::Relaxed);
        let delay = if failures == 0 {
            Duration::from_millis(100)
        } else {
            backoff.jittered(failures - 1, &mut jitter)
        };
        if !wait_recording(&cfg, delay, &cancel).await {
            break;
        }
    }
}

/// Waits `delay` before the next attempt (`false` when cancelled); a Sparkplug
/// node records what changes meanwhile, to replay it after the next births.
async fn wait_recording(cfg: &UplinkConfig, delay: Duration, cancel: &CancellationToken) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    let Some(link) = cfg.sparkplug.as_ref() else {
        return tokio::select! {
            _ = cancel.cancelled() => false,
            _ = &mut sleep => true,
        };
    };
    let mut tick = tokio::time::interval(link.cfg.scan);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = &mut sleep => return true,
            _ = tick.tick() => link.record(crate::delivery::sparkplug::now_ms()),
        }
    }
}
