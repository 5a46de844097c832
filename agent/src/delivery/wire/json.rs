//! The JSON documents the agent publishes (schemas in `agent/schema/`, all at
//! version 1): alerts (`alert.v1`), events (`event.v1`, driver text events and
//! model events), telemetry summaries and the status message (`status.v1`).

use edge_driver_api::Timestamp;
use serde::Serialize;

use crate::alert::{Alert, AlertTime};
use crate::delivery::journal::JournalStats;

/// The `time` object of every document.
pub fn time(ts: Timestamp) -> AlertTime {
    AlertTime::at(ts)
}

/// An alert document.
pub fn alert(a: &Alert) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(a)
}

/// An event as published (schema `agent/schema/event.v1.schema.json`).
#[derive(Debug, Serialize)]
pub struct EventJson<'a> {
    pub v: u32,
    pub agent_id: &'a str,
    pub driver: &'a str,
    pub signal: &'a str,
    pub kind: &'static str,
    pub value: &'a str,
    pub time: AlertTime,
    /// Model events only (`driver` = "models").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<&'a ModelEventInfo>,
}

/// What a model event is about.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ModelEventInfo {
    pub name: String,
    pub version: String,
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub z: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training_std: Option<f64>,
}

/// What an event says, before encoding.
#[derive(Clone, Copy, Debug)]
pub struct Event<'a> {
    pub agent_id: &'a str,
    /// The driver, or `models`.
    pub driver: &'a str,
    pub signal: &'a str,
    pub kind: &'static str,
    pub value: &'a str,
    pub ts: Timestamp,
    pub model: Option<&'a ModelEventInfo>,
}

/// An event document.
pub fn event(e: &Event<'_>) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&EventJson {
        v: 1,
        agent_id: e.agent_id,
        driver: e.driver,
        signal: e.signal,
        kind: e.kind,
        value: e.value,
        time: time(e.ts),
        model: e.model,
    })
}

/// The latest features of one signal's window, for a telemetry summary.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalSummary<'a> {
    pub signal: &'a str,
    pub window_end_mono_ns: u64,
    /// (feature name, value); a value that is not finite is published as null.
    pub features: Vec<(String, f64)>,
}

/// A telemetry document: one asset's signal summaries.
pub fn telemetry(
    agent_id: &str,
    asset: &str,
    now: Timestamp,
    signals: &[SignalSummary<'_>],
) -> serde_json::Result<Vec<u8>> {
    let mut by_signal = serde_json::Map::new();
    for s in signals {
        let feats: serde_json::Map<String, serde_json::Value> = s
            .features
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!(v.is_finite().then_some(*v))))
            .collect();
        by_signal.insert(
            s.signal.to_string(),
            serde_json::json!({
                "window_end_mono_ns": s.window_end_mono_ns,
                "features": feats,
            }),
        );
    }
    serde_json::to_vec(&serde_json::json!({
        "v": 1,
        "kind": "telemetry",
        "agent_id": agent_id,
        "asset": asset,
        "time": time(now),
        "signals": by_signal,
    }))
}

/// Who the status message is about.
#[derive(Clone, Copy, Debug)]
pub struct Identity<'a> {
    pub agent_id: &'a str,
    pub version: &'a str,
    pub config_hash: &'a str,
}

/// The status message (`agent/schema/status.v1.schema.json`): `online` or
/// `offline`, with the journal's counters when given (evictions and corruption
/// are reported upstream).
pub fn status(who: Identity<'_>, state: &str, journal: Option<&JournalStats>) -> Vec<u8> {
    let mut doc = serde_json::json!({
        "v": 1,
        "state": state,
        "agent_id": who.agent_id,
        "version": who.version,
        "config_hash": who.config_hash,
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
