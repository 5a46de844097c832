//! Writes to devices against independent peers: pymodbus (checked with pymodbus's
//! own client), python-snap7 (checked in the server's memory) and aiocoap. Each
//! test writes through the control socket as `edge-agent write` does, and checks
//! that the peer holds the value afterwards, that out-of-range and read-only
//! writes are refused with a reason before anything reaches the device, that a
//! device's refusal and a dead peer give a failed status (not a hang), and that
//! every write is audited on the events lane.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_agent::RunOptions;
use edge_agent::alert::Alert;
use edge_agent::delivery::sink::AlertSink;
use edge_agent_tests::{PyCoap, PyModbus, PySnap7, TempDir, agent_bin, config, modbus_peek};
use serde_json::{Value, json};

/// The audit events the agent emitted.
#[derive(Clone, Default)]
struct Audit(Arc<Mutex<Vec<Value>>>);

impl AlertSink for Audit {
    fn name(&self) -> &str {
        "test-audit"
    }
    fn deliver(&mut self, _alert: &Alert) -> std::io::Result<()> {
        Ok(())
    }
    fn event(&mut self, source: &str, _wall_ns: i64, body: &[u8]) -> std::io::Result<()> {
        if source == "audit" {
            let v = serde_json::from_slice(body).map_err(std::io::Error::other)?;
            self.0.lock().expect("audit lock").push(v);
        }
        Ok(())
    }
}

impl Audit {
    fn all(&self) -> Vec<Value> {
        self.0.lock().expect("audit lock").clone()
    }

    /// The audit events once there are `n` (they reach the sinks a moment after
    /// the write's answer).
    async fn at_least(&self, n: usize) -> Vec<Value> {
        let start = Instant::now();
        while self.all().len() < n {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{} of {n} audited: {:?}",
                self.all().len(),
                self.all()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.all()
    }
}

/// `write SIGNAL VALUE` on the control socket: the write report.
async fn write(sock: &Path, signal: &str, value: &str) -> Value {
    let sock = sock.to_path_buf();
    let cmd = format!("write {signal} {value}");
    let asked = tokio::task::spawn_blocking(move || {
        edge_agent::ops::control::query::<Value>(Some(&sock), &cmd)
    });
    tokio::time::timeout(Duration::from_secs(20), asked)
        .await
        .expect("the agent answers within 20 s")
        .expect("query task")
        .expect("a write report")
}

/// An agent with `drivers`, its control socket at `sock`, audit events to `audit`.
fn start(name: &str, sock: &Path, drivers: &str, audit: &Audit) -> edge_agent::AgentHandle {
    let toml = format!(
        "[agent]\nid = \"gw\"\ncontrol_socket = \"{}\"\n[alerts]\nconsole = false\n{drivers}",
        sock.display()
    );
    let opts = RunOptions {
        extra_sinks: vec![Box::new(audit.clone())],
        ..RunOptions::default()
    };
    edge_agent::start(config(name, &toml), opts).expect("agent starts")
}

async fn wait_good(handle: &edge_agent::AgentHandle, names: &[&str]) {
    let start = Instant::now();
    loop {
        let r = handle.tags("");
        let good = names
            .iter()
            .all(|n| r.tags.iter().any(|t| t.name == *n && t.quality == "good"));
        if good {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "tags never good: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stop(handle: edge_agent::AgentHandle) {
    tokio::time::timeout(Duration::from_secs(20), handle.stop())
        .await
        .expect("stops in time")
        .expect("clean stop");
}

fn reason(r: &Value) -> &str {
    r["reason"].as_str().unwrap_or("")
}

fn write_schema() -> jsonschema::Validator {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../agent/schema/write.v1.schema.json"
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("schema file"))
        .expect("schema is JSON");
    jsonschema::validator_for(&doc).expect("schema compiles")
}

fn socket(dir: &TempDir) -> PathBuf {
    dir.path().join("control.sock")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_writes_reach_pymodbus_and_refusals_say_why() {
    let peer = PyModbus::start(&json!({"unit": 1, "tags": [
        {"area": "holding", "address": 100, "type": "u16", "value": 0},
        {"area": "holding", "address": 110, "type": "f32", "order": "CDAB", "value": 1.0},
        {"area": "holding", "address": 120, "type": "i16", "value": 7},
        {"area": "coil", "address": 5, "value": false}
    ]}));
    let dir = TempDir::new("writes-modbus");
    let sock = socket(&dir);
    let toml = format!(
        r#"
[[drivers]]
name = "plc"
kind = "modbus"
host = "127.0.0.1"
port = {port}
poll = "200ms"
timeout = "500ms"

[[drivers.tags]]
name = "plc.setpoint"
area = "holding"
address = 100
type = "u16"
scale = 0.1
writable = true
min = 0.0
max = 120.0
verify = true

[[drivers.tags]]
name = "plc.speed"
area = "holding"
address = 110
type = "f32"
order = "CDAB"
writable = true
min = -50.0
max = 50.0

[[drivers.tags]]
name = "plc.count"
area = "holding"
address = 120
type = "i16"

[[drivers.tags]]
name = "plc.run"
area = "coil"
address = 5
writable = true
allowed = [0, 1]

[[drivers.tags]]
name = "plc.beyond"
area = "holding"
address = 2000
writable = true
min = 0
max = 10

# The same device for FC15/FC16 only (devices without FC5/FC6).
[[drivers]]
name = "plc2"
kind = "modbus"
host = "127.0.0.1"
port = {port}
poll = "200ms"
timeout = "500ms"
write_multiple = true

[[drivers.tags]]
name = "plc2.valve"
area = "coil"
address = 7
writable = true
allowed = [0, 1]

[[drivers.tags]]
name = "plc2.limit"
area = "holding"
address = 130
writable = true
min = 0
max = 1000
"#,
        port = peer.port
    );
    let audit = Audit::default();
    let handle = start("writes-modbus.toml", &sock, &toml, &audit);
    wait_good(
        &handle,
        &[
            "plc.setpoint",
            "plc.speed",
            "plc.run",
            "plc2.valve",
            "plc2.limit",
        ],
    )
    .await;

    let r = write(&sock, "plc.setpoint", "42.3").await;
    assert_eq!(r["result"], "successful", "{r}");
    assert_eq!(r["old"], 0.0);
    let back = r["read_back"].as_f64().expect("verified");
    assert!((back - 42.3).abs() < 1e-9, "{r}");
    assert_eq!(modbus_peek(peer.port, 1, "holding", 100, 1), vec![423]);

    let r = write(&sock, "plc.speed", "-12.5").await;
    assert_eq!(r["result"], "successful", "{r}");
    // -12.5 as f32 is 0xC1480000; CDAB puts the low word first.
    assert_eq!(
        modbus_peek(peer.port, 1, "holding", 110, 2),
        vec![0x0000, 0xC148]
    );

    let r = write(&sock, "plc.run", "true").await;
    assert_eq!(r["result"], "successful", "{r}");
    assert_eq!(modbus_peek(peer.port, 1, "coil", 5, 1), vec![1]);

    // FC15 and FC16 for one coil and one register.
    let r = write(&sock, "plc2.valve", "1").await;
    assert_eq!(r["result"], "successful", "{r}");
    assert_eq!(modbus_peek(peer.port, 1, "coil", 7, 1), vec![1]);
    let r = write(&sock, "plc2.limit", "777").await;
    assert_eq!(r["result"], "successful", "{r}");
    assert_eq!(modbus_peek(peer.port, 1, "holding", 130, 1), vec![777]);

    // Refused before the wire: the peer keeps its values.
    let r = write(&sock, "plc.setpoint", "130").await;
    assert_eq!(r["result"], "refused");
    assert!(reason(&r).contains("above the tag's maximum 120"), "{r}");
    let r = write(&sock, "plc.count", "3").await;
    assert_eq!(r["result"], "refused");
    assert!(reason(&r).contains("is not writable"), "{r}");
    let r = write(&sock, "plc.run", "2").await;
    assert!(
        reason(&r).contains("not one of the allowed values [0, 1]"),
        "{r}"
    );
    assert_eq!(modbus_peek(peer.port, 1, "holding", 100, 1), vec![423]);
    assert_eq!(modbus_peek(peer.port, 1, "holding", 120, 1), vec![7]);

    // The device refuses: exception 2 for an address it does not have.
    let r = write(&sock, "plc.beyond", "1").await;
    assert_eq!(
        (r["result"].as_str(), r["failure"].as_str()),
        (Some("failed"), Some("device")),
        "{r}"
    );
    assert!(reason(&r).contains("illegal data address"), "{r}");

    // The value comes back through the poll.
    wait_value(&handle, "plc.speed", -12.5).await;

    // A dead peer: failed with why, promptly.
    drop(peer);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let t0 = Instant::now();
    let r = write(&sock, "plc.speed", "1").await;
    assert_eq!(r["result"], "failed", "{r}");
    assert_eq!(r["failure"], "communication", "{r}");
    assert!(
        t0.elapsed() < Duration::from_secs(11),
        "answered within the write deadline"
    );

    let audited = audit.at_least(10).await;
    let results: Vec<&str> = audited
        .iter()
        .filter_map(|a| a["result"].as_str())
        .collect();
    assert_eq!(
        results,
        [
            "successful",
            "successful",
            "successful",
            "successful",
            "successful",
            "refused",
            "refused",
            "refused",
            "failed",
            "failed"
        ],
        "every write is audited: {audited:?}"
    );
    assert!(
        audited
            .iter()
            .all(|a| a["by"].as_str().is_some_and(|b| b.starts_with("uid ")))
    );
    assert_eq!(audited[0]["signal"], "plc.setpoint");
    assert_eq!(audited[0]["source"], "cli");
    let schema = write_schema();
    for a in &audited {
        let errors: Vec<String> = schema.iter_errors(a).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{a:#}: {errors:?}");
    }
    stop(handle).await;
}

async fn wait_value(handle: &edge_agent::AgentHandle, name: &str, want: f64) {
    let start = Instant::now();
    loop {
        let r = handle.tags(name);
        let v = r.tags.first().and_then(|t| match &t.value {
            Some(edge_agent::ingest::latest::TagValue::Number(x)) => Some(*x),
            Some(edge_agent::ingest::latest::TagValue::Integer(x)) => Some(*x as f64),
            _ => None,
        });
        if v == Some(want) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{name} never read {want}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s7_writes_reach_the_snap7_plcs_memory() {
    let mut plc = PySnap7::start(&json!({"areas": [
        {"area": "DB", "index": 1, "size": 16, "values": [
            {"offset": 0, "type": "INT", "value": 0},
            {"offset": 4, "type": "REAL", "value": 1.0},
            {"offset": 8, "bit": 3, "type": "BOOL", "value": false},
            {"offset": 8, "bit": 4, "type": "BOOL", "value": true}
        ]}
    ]}));
    let dir = TempDir::new("writes-s7");
    let sock = socket(&dir);
    let toml = format!(
        r#"
[[drivers]]
name = "press"
kind = "s7"
host = "127.0.0.1"
port = {port}
poll = "200ms"
timeout = "500ms"

[[drivers.tags]]
name = "press.level"
address = "DB1.DBW0"
type = "INT"
scale = 0.1
writable = true
min = -100.0
max = 100.0

[[drivers.tags]]
name = "press.temp_sp"
address = "DB1.DBD4"
type = "REAL"
writable = true
min = 0.0
max = 300.0
verify = true

[[drivers.tags]]
name = "press.pump"
address = "DB1.DBX8.3"
writable = true
allowed = [0, 1]

[[drivers.tags]]
name = "press.gone"
address = "DB9.DBW0"
type = "INT"
writable = true
min = 0
max = 10
"#,
        port = plc.port
    );
    let audit = Audit::default();
    let handle = start("writes-s7.toml", &sock, &toml, &audit);
    wait_good(&handle, &["press.level", "press.temp_sp", "press.pump"]).await;

    let r = write(&sock, "press.level", "-12.3").await;
    assert_eq!(r["result"], "successful", "{r}");
    assert_eq!(plc.get("DB", 1, 0, 2), (-123i16).to_be_bytes());

    let r = write(&sock, "press.temp_sp", "212.5").await;
    assert_eq!(r["result"], "successful", "{r}");
    assert_eq!(r["read_back"], 212.5);
    assert_eq!(plc.get("DB", 1, 4, 4), 212.5f32.to_be_bytes());

    // A BIT item: bit 3 set, bit 4 of the same byte left alone.
    let r = write(&sock, "press.pump", "1").await;
    assert_eq!(r["result"], "successful", "{r}");
    assert_eq!(plc.get("DB", 1, 8, 1), [0b0001_1000]);

    let r = write(&sock, "press.temp_sp", "301").await;
    assert!(reason(&r).contains("above the tag's maximum 300"), "{r}");
    let r = write(&sock, "press.gone", "1").await;
    assert_eq!(
        (r["result"].as_str(), r["failure"].as_str()),
        (Some("failed"), Some("device")),
        "{r}"
    );
    assert!(reason(&r).contains("object does not exist"), "{r}");
    assert_eq!(plc.get("DB", 1, 4, 4), 212.5f32.to_be_bytes());

    plc.stop();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = write(&sock, "press.level", "1").await;
    assert_eq!(
        (r["result"].as_str(), r["failure"].as_str()),
        (Some("failed"), Some("communication")),
        "{r}"
    );
    assert_eq!(audit.at_least(6).await.len(), 6, "every write is audited");
    stop(handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coap_puts_reach_aiocoap_and_a_read_only_resource_refuses() {
    let coap = PyCoap::start();
    let dir = TempDir::new("writes-coap");
    let sock = socket(&dir);
    let toml = format!(
        r#"
[[drivers]]
name = "field"
kind = "coap"
host = "127.0.0.1"
port = {port}
ack_timeout = "300ms"
max_retransmit = 2

[[drivers.resources]]
path = "/setpoint"
poll = "200ms"
signal = "field.setpoint"
writable = true
min = 0
max = 100
verify = true

[[drivers.resources]]
path = "/temp"
poll = "200ms"
signal = "field.temp"
writable = true
write_method = "post"
min = 0
max = 100
"#,
        port = coap.port
    );
    let audit = Audit::default();
    let handle = start("writes-coap.toml", &sock, &toml, &audit);
    wait_good(&handle, &["field.setpoint", "field.temp"]).await;

    let r = write(&sock, "field.setpoint", "55.5").await;
    assert_eq!(r["result"], "successful", "{r}");
    assert_eq!(r["read_back"], 55.5, "aiocoap serves the value written");
    wait_value(&handle, "field.setpoint", 55.5).await;

    let r = write(&sock, "field.temp", "20").await;
    assert_eq!(
        (r["result"].as_str(), r["failure"].as_str()),
        (Some("failed"), Some("device")),
        "{r}"
    );
    assert!(reason(&r).contains("4.05 Method Not Allowed"), "{r}");

    drop(coap);
    let r = write(&sock, "field.setpoint", "1").await;
    assert_eq!(
        (r["result"].as_str(), r["failure"].as_str()),
        (Some("failed"), Some("communication")),
        "{r}"
    );
    assert_eq!(audit.at_least(3).await.len(), 3);
    stop(handle).await;
}

/// `edge-agent write` (the binary) against a running agent: the line it prints
/// and its exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_command_prints_the_result_and_fails_on_refusal() {
    let peer = PyModbus::start(&json!({"unit": 1, "tags": [
        {"area": "holding", "address": 100, "type": "u16", "value": 5}
    ]}));
    let dir = TempDir::new("writes-cli");
    let sock = socket(&dir);
    let toml = format!(
        r#"
[[drivers]]
name = "plc"
kind = "modbus"
host = "127.0.0.1"
port = {port}
poll = "200ms"
[[drivers.tags]]
name = "plc.setpoint"
area = "holding"
address = 100
writable = true
min = 0
max = 100
"#,
        port = peer.port
    );
    let handle = start("writes-cli.toml", &sock, &toml, &Audit::default());
    wait_good(&handle, &["plc.setpoint"]).await;
    let run = |value: &'static str| {
        let sock = sock.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(agent_bin())
                .args(["write", "plc.setpoint", value, "--socket"])
                .arg(&sock)
                .output()
                .expect("run edge-agent write")
        })
    };
    let ok = tokio::time::timeout(Duration::from_secs(20), run("17"))
        .await
        .expect("in time")
        .expect("task");
    let line = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{line}");
    assert!(
        line.starts_with("successful plc.setpoint = 17 (was 5) in "),
        "{line}"
    );
    assert_eq!(modbus_peek(peer.port, 1, "holding", 100, 1), vec![17]);
    let bad = tokio::time::timeout(Duration::from_secs(20), run("-1"))
        .await
        .expect("in time")
        .expect("task");
    let line = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{line}");
    assert!(
        line.contains("refused plc.setpoint = -1") && line.contains("below the tag's minimum 0"),
        "{line}"
    );
    stop(handle).await;
}
