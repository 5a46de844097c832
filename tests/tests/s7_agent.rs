//! The agent reading a python-snap7 PLC, end to end:
//! * link health drives alerts: a Critical `comm_health` alert on the implicit
//!   `<driver>.link` asset when the PLC disappears, cleared once it is back and the
//!   failures aged out;
//! * a STRING tag reaches the broker as events, on first read and on change.

use std::time::{Duration, Instant};

use edge_agent::RunOptions;
use edge_agent_tests::{Mosquitto, PySnap7, Subscriber, TempDir, config, read_alerts};
use serde_json::json;

fn link_alerts(path: &std::path::Path) -> Vec<serde_json::Value> {
    read_alerts(path)
        .into_iter()
        .filter(|a| a["asset"] == "press.link" && a["detector"] == "comm_health")
        .collect()
}

async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanishing_plc_raises_critical_link_health_and_clears_on_return() {
    let mut plc = PySnap7::start(&json!({"areas": [
        {"area": "DB", "index": 1, "size": 8, "values": [{"offset": 0, "type": "REAL", "value": 42.5}]}
    ]}));
    let dir = TempDir::new("s7-health");
    let jsonl = dir.path().join("alerts.jsonl");
    let toml = format!(
        r#"
[agent]
id = "gw"
[alerts]
console = false
jsonl = "{jsonl}"
[supervisor]
backoff_initial = "200ms"
backoff_max = "1s"
[[drivers]]
name = "press"
kind = "s7"
host = "127.0.0.1"
port = {port}
poll = "100ms"
timeout = "300ms"
[drivers.health]
window = "30s"
[[drivers.tags]]
name = "press.temp"
address = "DB1.DBD0"
type = "REAL"
"#,
        jsonl = jsonl.display(),
        port = plc.port
    );
    let handle =
        edge_agent::start(config("s7.toml", &toml), RunOptions::default()).expect("starts");

    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        link_alerts(&jsonl).is_empty(),
        "a healthy link raises nothing"
    );

    plc.stop();
    wait_for("a critical link alert", Duration::from_secs(30), || {
        link_alerts(&jsonl)
            .iter()
            .any(|a| a["state"] == "raised" && a["severity"] == "critical")
    })
    .await;

    plc.spawn();
    wait_for("the link alert to clear", Duration::from_secs(90), || {
        link_alerts(&jsonl).iter().any(|a| a["state"] == "cleared")
    })
    .await;

    let report = tokio::time::timeout(Duration::from_secs(20), handle.stop())
        .await
        .expect("stops in time")
        .expect("clean stop");
    let _ = report;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_string_tag_reaches_the_broker_as_events_when_it_changes() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "sub-s7", "edge/#").await;
    let mut plc = PySnap7::start(&json!({"areas": [
        {"area": "DB", "index": 1, "size": 32, "values": [
            {"offset": 0, "type": "REAL", "value": 1.0},
            {"offset": 4, "type": "STRING", "max": 20, "value": "Recipe A"}]}
    ]}));
    let dir = TempDir::new("s7-events");
    let toml = format!(
        r#"
[agent]
id = "gw"
[alerts]
console = false
[journal]
dir = "{journal}"
[uplink]
host = "127.0.0.1"
port = {mqtt}
reconnect_initial = "100ms"
[[drivers]]
name = "press"
kind = "s7"
host = "127.0.0.1"
port = {port}
poll = "100ms"
[[drivers.tags]]
name = "press.temp"
address = "DB1.DBD0"
type = "REAL"
[[drivers.tags]]
name = "press.recipe"
address = "DB1.DBB4"
type = "STRING"
length = 20
"#,
        journal = dir.path().join("journal").display(),
        mqtt = broker.port,
        port = plc.port
    );
    let handle =
        edge_agent::start(config("s7.toml", &toml), RunOptions::default()).expect("starts");
    let events = || sub.json_on("edge/gw/events/press");
    wait_for("the first value", Duration::from_secs(15), || {
        !events().is_empty()
    })
    .await;
    // Polled ten times a second, but unchanged: still one event.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(events().len(), 1, "{:?}", events());
    let mut s = vec![20u8, 8];
    s.extend_from_slice(b"Recipe B");
    plc.set("DB", 1, 4, &s);
    wait_for("the changed value", Duration::from_secs(15), || {
        events().len() >= 2
    })
    .await;
    let got = events();
    assert_eq!(got[0]["value"], "Recipe A");
    assert_eq!(got[1]["value"], "Recipe B");
    assert_eq!(got[1]["signal"], "press.recipe");
    assert_eq!(got[1]["driver"], "press");
    assert_eq!(got[1]["kind"], "text");
    let report = tokio::time::timeout(Duration::from_secs(20), handle.stop())
        .await
        .expect("stops in time")
        .expect("clean stop");
    assert!(!report.shutdown_timed_out);
}
