#![allow(clippy::print_stdout)] // reports the measured recovery times
//! Devices that die and come back, against independent peers (pymodbus,
//! python-snap7, aiocoap), all three at once with the default supervisor and
//! health settings:
//! * every protocol's dead link is graded the same way: Warning within 30 s and
//!   Critical within 60 s of the peer's death (`score ≤ 100 − seconds down`);
//! * after a 60 s outage, values flow again within seconds of the peer's return
//!   (the supervisor's probes cut the backoff short) and polling is back to full
//!   rate within 10 s (adaptive polling speeds up on clean cycles, not on the
//!   five-minute score).
//!
//! The figures are printed (`--nocapture`) and go in the README.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use edge_agent::RunOptions;
use edge_agent_tests::{PyCoap, PyModbus, PySnap7, TempDir, config, read_alerts};
use serde_json::json;

const DRIVERS: [(&str, &str); 3] = [
    ("plc", "plc.temp"),
    ("press", "press.temp"),
    ("field", "field.temp"),
];

fn toml(modbus: u16, s7: u16, coap: u16, jsonl: &std::path::Path) -> String {
    format!(
        r#"
[agent]
id = "gw"
control_socket = ""
[alerts]
jsonl = "{jsonl}"
console = false

[[drivers]]
name = "plc"
kind = "modbus"
host = "127.0.0.1"
port = {modbus}
poll = "1s"
timeout = "500ms"
[[drivers.tags]]
name = "plc.temp"
area = "holding"
address = 100
type = "f32"

[[drivers]]
name = "press"
kind = "s7"
host = "127.0.0.1"
port = {s7}
poll = "1s"
timeout = "500ms"
[[drivers.tags]]
name = "press.temp"
address = "DB1.DBD0"
type = "REAL"

[[drivers]]
name = "field"
kind = "coap"
host = "127.0.0.1"
port = {coap}
ack_timeout = "200ms"
max_retransmit = 1
[[drivers.resources]]
path = "/temp"
poll = "1s"
signal = "field.temp"
"#,
        jsonl = jsonl.display()
    )
}

/// When each driver's link alert was first raised at `severity`, seconds after `t0`.
fn link_alert_times(
    jsonl: &std::path::Path,
    severity: &str,
    t0_wall_ns: i64,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for a in read_alerts(jsonl) {
        let asset = a["asset"].as_str().unwrap_or_default();
        if a["detector"] != "comm_health" || a["severity"] != severity || a["state"] != "raised" {
            continue;
        }
        let Some(driver) = asset.strip_suffix(".link") else {
            continue;
        };
        if let Some(ns) = a["time"]["wall_ns"].as_i64() {
            let s = (ns - t0_wall_ns) as f64 / 1e9;
            out.entry(driver.to_string()).or_insert(s);
        }
    }
    out
}

fn wall_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_peers_are_graded_alike_and_come_back_at_full_rate_within_seconds() {
    let mut modbus = PyModbus::start(&json!({"unit": 1, "tags": [
        {"area": "holding", "address": 100, "type": "f32", "value": 21.5}
    ]}));
    let mut s7 = PySnap7::start(&json!({"areas": [
        {"area": "DB", "index": 1, "size": 8, "values": [{"offset": 0, "type": "REAL", "value": 42.5}]}
    ]}));
    let mut coap = PyCoap::start();
    let dir = TempDir::new("recovery");
    let jsonl = dir.path().join("alerts.jsonl");
    let cfg = config(
        "recovery.toml",
        &toml(modbus.port, s7.port, coap.port, &jsonl),
    );
    let handle = edge_agent::start(cfg, RunOptions::default()).expect("starts");
    let good = |name: &str| {
        handle
            .tags(name)
            .tags
            .iter()
            .any(|t| t.name == name && t.quality == "good" && t.age_s.is_some_and(|a| a < 1.5))
    };
    let full_rate = |driver: &str| {
        let name = format!("{driver}.comm.poll_s");
        handle.tags(&name).tags.iter().any(|t| {
            t.name == name
                && matches!(t.value, Some(edge_agent::ingest::latest::TagValue::Number(p)) if p <= 1.0)
        })
    };
    let start = Instant::now();
    while !DRIVERS.iter().all(|(_, tag)| good(tag)) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "values never flowed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(15)).await;

    // Every peer dies at once, for 60 s.
    let died = wall_ns();
    modbus.stop();
    s7.stop();
    coap.stop();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let warning = link_alert_times(&jsonl, "warning", died);
    let critical = link_alert_times(&jsonl, "critical", died);

    // Back, on the same ports.
    let back = Instant::now();
    modbus.spawn();
    s7.spawn();
    coap.spawn();
    let mut first_value: BTreeMap<&str, f64> = BTreeMap::new();
    let mut full: BTreeMap<&str, f64> = BTreeMap::new();
    while (first_value.len() < DRIVERS.len() || full.len() < DRIVERS.len())
        && back.elapsed() < Duration::from_secs(60)
    {
        for (driver, tag) in DRIVERS {
            if !first_value.contains_key(driver) && good(tag) {
                first_value.insert(driver, back.elapsed().as_secs_f64());
            }
            if first_value.contains_key(driver) && !full.contains_key(driver) && full_rate(driver) {
                full.insert(driver, back.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("after the peers died (s): warning {warning:?}, critical {critical:?}");
    println!("after the peers returned (s): first value {first_value:?}, full poll rate {full:?}");
    for (driver, _) in DRIVERS {
        let c = critical.get(driver).copied();
        // A link may go straight to Critical: that is Warning too.
        let w = match (warning.get(driver).copied(), c) {
            (Some(w), Some(c)) => Some(w.min(c)),
            (w, c) => w.or(c),
        };
        assert!(w.is_some_and(|w| w <= 30.0), "{driver}: warning at {w:?} s");
        assert!(
            c.is_some_and(|c| c <= 60.0),
            "{driver}: critical at {c:?} s"
        );
        let v = first_value.get(driver).copied();
        assert!(
            v.is_some_and(|v| v <= 3.0),
            "{driver}: first value after {v:?} s"
        );
        let f = full.get(driver).copied();
        assert!(
            f.is_some_and(|f| f <= 12.0),
            "{driver}: full rate after {f:?} s"
        );
    }
    tokio::time::timeout(Duration::from_secs(20), handle.stop())
        .await
        .expect("stops in time")
        .expect("clean stop");
}
