//! Driver events (text signals that changed) → the sink thread → the journal's
//! event lane → the uplink's `events/<driver>` topic.
//!
//! Drivers never wait for this path: [`AgentEvents::try_send`] drops and counts an
//! event when the sink queue is full. The sender is closed after the drivers have
//! stopped, so the sink thread can finish at shutdown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use edge_driver_api::{DriverEvent, EventKind, EventSink, SignalRegistry};
use tokio::sync::mpsc;

use super::sink::SinkMsg;
use super::wire::json::{self, ModelEventInfo};

/// A model event as a sink message (source `models`).
pub fn model_event(
    agent_id: &str,
    signal: &str,
    kind: &'static str,
    value: &str,
    ts: edge_driver_api::Timestamp,
    info: &ModelEventInfo,
) -> SinkMsg {
    let body = json::event(&json::Event {
        agent_id,
        driver: "models",
        signal,
        kind,
        value,
        ts,
        model: Some(info),
    });
    SinkMsg::Event {
        source: Arc::from("models"),
        wall_ns: ts.wall_ns,
        body: body.unwrap_or_default(),
    }
}

/// The agent's [`EventSink`].
#[derive(Debug)]
pub struct AgentEvents {
    agent_id: Arc<str>,
    names: Vec<Arc<str>>,
    tx: Mutex<Option<mpsc::Sender<SinkMsg>>>,
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
}

impl AgentEvents {
    pub fn new(agent_id: Arc<str>, registry: &SignalRegistry, tx: mpsc::Sender<SinkMsg>) -> Self {
        let names = (0..registry.len())
            .map(|i| {
                registry
                    .meta(edge_driver_api::SignalId(i as u32))
                    .name
                    .clone()
            })
            .collect();
        AgentEvents {
            agent_id,
            names,
            tx: Mutex::new(Some(tx)),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Drops the sender (after the drivers stopped) so the sink channel can close.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// The JSON body of an event.
    pub fn body(&self, driver: &str, ev: &DriverEvent) -> Option<Vec<u8>> {
        let signal = self.names.get(ev.signal.index())?;
        let EventKind::Text(value) = &ev.kind;
        json::event(&json::Event {
            agent_id: &self.agent_id,
            driver,
            signal,
            kind: "text",
            value,
            ts: ev.ts,
            model: None,
        })
        .ok()
    }
}

impl EventSink for AgentEvents {
    fn try_send(&self, driver: &str, ev: DriverEvent) -> bool {
        let Some(body) = self.body(driver, &ev) else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let msg = SinkMsg::Event {
            source: Arc::from(driver),
            wall_ns: ev.ts.wall_ns,
            body,
        };
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let ok = guard.as_ref().is_some_and(|tx| tx.try_send(msg).is_ok());
        drop(guard);
        if ok {
            self.sent.fetch_add(1, Ordering::Relaxed);
        } else {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(driver, dropped = n, "event queue full: event dropped");
            }
        }
        ok
    }
}
