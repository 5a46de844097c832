//! Remote operations over MQTT against Mosquitto and the real binary: the
//! retained capabilities, signed requests (keys and signatures made with
//! `edge-agent keygen` / `sign-command`) and their statuses, rejection of
//! unsigned, forged, replayed and not-allowed requests (each audited), a
//! configuration applied live, one that needs a restart (the same process runs
//! again and reports once healthy), and a bad one that rolls back by itself.

use std::path::{Path, PathBuf};

use edge_agent_tests::{Mosquitto, Subscriber, TempDir, spawn_agent, wait_until};
use serde_json::Value;

struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn schema(name: &str) -> jsonschema::Validator {
    let path = format!(
        "{}/../agent/schema/{name}.schema.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("schema file"))
        .expect("schema is JSON");
    jsonschema::validator_for(&doc).expect("schema compiles")
}

fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    edge_agent_tests::keygen(dir, name)
}

fn signed(key: &Path, name: &str, topic: &str, args: &Value) -> Vec<u8> {
    edge_agent_tests::sign_command(key, name, topic, args)
}

async fn publish(port: u16, topic: &str, payload: Vec<u8>) {
    edge_agent_tests::publish_acked(port, "central", topic, payload, false).await;
}

/// An agent `gw` with a journal, the uplink to `port` and `[commands]` allowing
/// `operations` signed by `public`, then `rest`.
fn with_commands(dir: &Path, port: u16, public: &str, operations: &str, rest: &str) -> String {
    format!(
        r#"[agent]
id = "gw"
control_socket = ""
[alerts]
console = false
[journal]
dir = "{journal}"
[uplink]
host = "127.0.0.1"
port = {port}
reconnect_initial = "100ms"
[commands]
enabled = true
operations = {operations}
public_keys = {{ central = "{public}" }}
{rest}"#,
        journal = dir.join("journal").display()
    )
}

fn config(dir: &Path, port: u16, public: &str, extra: &str) -> String {
    let ops = r#"["config_snapshot", "config_update", "restart", "log_upload", "write"]"#;
    let rest = format!(
        r#"health_window = "4s"
[[drivers]]
name = "line"
kind = "sim"
tick = "100ms"
[[drivers.machines]]
name = "pump"
vibration_rate_hz = 10.0
[[assets]]
name = "pump"
[[assets.signals]]
signal = "pump.temperature"
window = {{ size = "1s", hop = "1s" }}
[[assets.detectors]]
name = "hot"
kind = "threshold"
signal = "pump.temperature"
warning = 90.0
{extra}"#
    );
    with_commands(dir, port, public, ops, &rest)
}

/// The statuses of command `id` so far (on `.../cmd/{op}/{id}/status`).
fn statuses(sub: &Subscriber, id: &str) -> Vec<Value> {
    let suffix = format!("/{id}/status");
    sub.msgs
        .lock()
        .expect("msgs")
        .iter()
        .filter(|(t, _, _)| t.starts_with("edge/gw/cmd/") && t.ends_with(&suffix))
        .filter_map(|(_, p, _)| serde_json::from_slice(p).ok())
        .collect()
}

fn last_status(sub: &Subscriber, id: &str) -> String {
    statuses(sub, id)
        .last()
        .and_then(|v| v["status"].as_str().map(str::to_string))
        .unwrap_or_default()
}

async fn finished(sub: &Subscriber, id: &str, secs: u64) -> Value {
    wait_until(&format!("command {id} finished"), secs, || {
        matches!(
            last_status(sub, id).as_str(),
            "successful" | "failed" | "rejected"
        )
    })
    .await;
    statuses(sub, id).last().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_commands_run_and_unsigned_forged_replayed_or_not_allowed_ones_are_rejected() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "central-sub", "edge/gw/#").await;
    let dir = TempDir::new("commands");
    let (key, public) = keygen(dir.path(), "central");
    let (stranger, _) = keygen(dir.path(), "stranger");
    let cfg = dir.path().join("agent.toml");
    let text = config(dir.path(), broker.port, &public, "");
    std::fs::write(&cfg, &text).expect("config");
    let _agent = Agent(spawn_agent(&cfg, &dir.path().join("agent.log")));
    wait_until("the retained capabilities", 20, || {
        sub.msgs
            .lock()
            .expect("msgs")
            .iter()
            .any(|(t, _, _)| t == "edge/gw/capabilities")
    })
    .await;
    let caps = sub
        .json_on("edge/gw/capabilities")
        .pop()
        .expect("capabilities");
    assert_eq!(
        caps["operations"],
        serde_json::json!([
            "config_snapshot",
            "config_update",
            "restart",
            "log_upload",
            "write"
        ])
    );
    assert_eq!(caps["require_signature"], true);

    let topic = "edge/gw/cmd/config_snapshot/s1";
    let good = signed(&key, "central", topic, &serde_json::json!({}));
    publish(broker.port, topic, good.clone()).await;
    let done = finished(&sub, "s1", 20).await;
    assert_eq!(done["status"], "successful", "{done}");
    assert_eq!(done["result"]["toml"], text.as_str());
    let (status_schema, caps_schema) = (schema("command-status.v1"), schema("capabilities.v1"));
    assert!(caps_schema.is_valid(&caps), "{caps}");
    for s in statuses(&sub, "s1") {
        let errors: Vec<String> = status_schema
            .iter_errors(&s)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{s}: {errors:?}");
    }
    let request_schema = schema("command-request.v1");
    let sent: Value = serde_json::from_slice(&good).expect("json");
    assert!(request_schema.is_valid(&sent), "{sent}");
    let inner: Value =
        serde_json::from_str(sent["request"].as_str().expect("request")).expect("json");
    assert!(request_schema.is_valid(&inner), "{inner}");
    let seq: Vec<String> = statuses(&sub, "s1")
        .iter()
        .filter_map(|s| s["status"].as_str().map(str::to_string))
        .collect();
    assert_eq!(seq, ["accepted", "executing", "successful"]);

    let topic_log = "edge/gw/cmd/log_upload/l1";
    let ask = signed(
        &key,
        "central",
        topic_log,
        &serde_json::json!({"lines": 50}),
    );
    publish(broker.port, topic_log, ask).await;
    let logs = finished(&sub, "l1", 20).await;
    assert_eq!(logs["status"], "successful", "{logs}");
    let lines = logs["result"]["lines"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        lines
            .iter()
            .any(|l| l.as_str().unwrap_or("").contains("command accepted")),
        "the agent's own recent log: {lines:?}"
    );
    assert!(lines.len() <= 50);

    publish(broker.port, topic, good).await;
    // The replay gets no status of its own (same id): its audit event says why.
    publish(
        broker.port,
        "edge/gw/cmd/config_snapshot/s2",
        br#"{"ts": 0, "args": {}}"#.to_vec(),
    )
    .await;
    let forged = signed(
        &stranger,
        "central",
        "edge/gw/cmd/config_snapshot/s3",
        &serde_json::json!({}),
    );
    publish(broker.port, "edge/gw/cmd/config_snapshot/s3", forged).await;
    let rollback = signed(
        &key,
        "central",
        "edge/gw/cmd/model_rollback/s4",
        &serde_json::json!({"model": "bearing_mlp"}),
    );
    publish(broker.port, "edge/gw/cmd/model_rollback/s4", rollback).await;
    for (id, why) in [
        ("s2", "unsigned"),
        ("s3", "does not verify"),
        ("s4", "not in this agent's [commands] operations"),
    ] {
        let r = finished(&sub, id, 10).await;
        assert_eq!(r["status"], "rejected", "{r}");
        assert!(r["reason"].as_str().unwrap_or("").contains(why), "{r}");
    }
    for s in ["s2", "s3", "s4"].iter().flat_map(|id| statuses(&sub, id)) {
        assert!(status_schema.is_valid(&s), "{s}");
    }
    // An allowed write to a tag that is not writable: runs, and fails with the
    // write path's reason (the write report is audited too).
    let write = signed(
        &key,
        "central",
        "edge/gw/cmd/write/s5",
        &serde_json::json!({"signal": "pump.temperature", "value": 1}),
    );
    publish(broker.port, "edge/gw/cmd/write/s5", write).await;
    let r = finished(&sub, "s5", 10).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap_or("")
            .contains("refused: `pump.temperature` is not writable"),
        "{r}"
    );
    wait_until("every request audited", 10, || {
        sub.json_on("edge/gw/events/audit")
            .iter()
            .filter(|a| a["type"] == "command")
            .count()
            >= 10
    })
    .await;
    let audit = sub.json_on("edge/gw/events/audit");
    let replay = audit
        .iter()
        .find(|a| a["id"] == "s1" && a["result"] == "rejected")
        .expect("the replay is audited");
    assert!(
        replay["reason"]
            .as_str()
            .unwrap_or("")
            .contains("already received"),
        "{replay}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_updates_apply_live_or_by_restart_and_a_bad_one_rolls_back() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "central-sub2", "edge/gw/#").await;
    let dir = TempDir::new("commands-update");
    let (key, public) = keygen(dir.path(), "central");
    let cfg = dir.path().join("agent.toml");
    let v1 = config(dir.path(), broker.port, &public, "");
    std::fs::write(&cfg, &v1).expect("config");
    let mut agent = Agent(spawn_agent(&cfg, &dir.path().join("agent.log")));
    let pid = agent.0.id();
    wait_until("connected", 20, || {
        !sub.json_on("edge/gw/capabilities").is_empty()
    })
    .await;
    let update = |id: &str, toml: &str| {
        let topic = format!("edge/gw/cmd/config_update/{id}");
        let payload = signed(&key, "central", &topic, &serde_json::json!({"toml": toml}));
        (topic, payload)
    };

    // An invalid file: failed with every error, nothing changed.
    let (t, p) = update("u0", &v1.replace("warning = 90.0", "warning = \"hot\""));
    publish(broker.port, &t, p).await;
    let r = finished(&sub, "u0", 20).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert!(
        r["reason"].as_str().unwrap_or("").contains("agent.toml:"),
        "{r}"
    );
    assert_eq!(std::fs::read_to_string(&cfg).expect("read"), v1);

    // A detector's limit: applied live.
    let v2 = v1.replace("warning = 90.0", "warning = 95.0");
    let (t, p) = update("u1", &v2);
    publish(broker.port, &t, p).await;
    let r = finished(&sub, "u1", 30).await;
    assert_eq!(r["status"], "successful", "{r}");
    assert_eq!(r["result"]["applied"], "reload", "{r}");
    assert_eq!(std::fs::read_to_string(&cfg).expect("read"), v2);

    // A new driver: applied by running the agent again (same process id).
    let v3 = v2.replace(
        "[[assets]]",
        "[[drivers]]\nname = \"host\"\nkind = \"host\"\ninterval = \"1s\"\n[[assets]]",
    );
    let (t, p) = update("u2", &v3);
    publish(broker.port, &t, p).await;
    let r = finished(&sub, "u2", 40).await;
    assert_eq!(r["status"], "successful", "{r}");
    assert_eq!(r["result"]["applied"], "restart", "{r}");
    assert_eq!(agent.0.id(), pid);
    assert!(agent.0.try_wait().expect("wait").is_none(), "still running");

    // A driver that can never connect: unhealthy after the restart, rolled back.
    let dead = edge_agent_tests::free_port();
    let v4 = v3.replace(
        "[[assets]]",
        &format!("[[drivers]]\nname = \"plc\"\nkind = \"modbus\"\nhost = \"127.0.0.1\"\nport = {dead}\ntimeout = \"200ms\"\n[[drivers.tags]]\nname = \"plc.level\"\narea = \"holding\"\naddress = 0\n[[assets]]"),
    );
    let (t, p) = update("u3", &v4);
    publish(broker.port, &t, p).await;
    let r = finished(&sub, "u3", 60).await;
    assert_eq!(r["status"], "failed", "{r}");
    let why = r["reason"].as_str().unwrap_or("");
    assert!(
        why.contains("not healthy within 4s") && why.contains("driver plc"),
        "{r}"
    );
    assert!(
        why.contains("rolled back to the previous configuration"),
        "{r}"
    );
    assert_eq!(
        std::fs::read_to_string(&cfg).expect("read"),
        v3,
        "the previous file is back"
    );
    assert!(agent.0.try_wait().expect("wait").is_none(), "still running");

    // A restart on request.
    let topic = "edge/gw/cmd/restart/r1";
    publish(
        broker.port,
        topic,
        signed(&key, "central", topic, &serde_json::json!({})),
    )
    .await;
    let r = finished(&sub, "r1", 40).await;
    assert_eq!(r["status"], "successful", "{r}");
    assert_eq!(agent.0.id(), pid);
    let _ = &mut agent;
}

fn model_plant(dir: &Path, port: u16, public: &str) -> String {
    let rest = format!(
        r#"[models]
dir = "{models}"
[[drivers]]
name = "plant"
kind = "sim"
tick = "1s"
[[drivers.machines]]
name = "pump"
{assets}"#,
        assets = edge_agent_tests::pump_asset_with_model("60s"),
        models = dir.join("models").display(),
    );
    with_commands(
        dir,
        port,
        public,
        r#"["model_deploy", "model_rollback"]"#,
        &rest,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_is_deployed_in_parts_dry_run_checked_and_rolled_back_remotely() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "central-sub3", "edge/gw/#").await;
    let dir = TempDir::new("commands-models");
    let (key, public) = keygen(dir.path(), "central");
    let zoo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/zoo/bearing_mlp");
    let models = dir.path().join("models/bearing_mlp");
    std::fs::create_dir_all(&models).expect("models dir");
    for f in [
        "manifest.toml",
        "bearing_mlp.onnx",
        "reference.json",
        "quality.json",
    ] {
        std::fs::copy(zoo.join(f), models.join(f)).expect("copy the zoo model");
    }
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, model_plant(dir.path(), broker.port, &public)).expect("config");
    let _agent = Agent(spawn_agent(&cfg, &dir.path().join("agent.log")));
    wait_until("connected", 30, || {
        !sub.json_on("edge/gw/capabilities").is_empty()
    })
    .await;
    let manifest = std::fs::read_to_string(zoo.join("manifest.toml")).expect("manifest");
    let onnx = std::fs::read(zoo.join("bearing_mlp.onnx")).expect("onnx");
    let b64 = base64::engine::general_purpose::STANDARD;
    let sha = |b: &[u8]| -> String {
        sha2::Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect()
    };
    let send = |id: &str, op: &str, args: Value| {
        let topic = format!("edge/gw/cmd/{op}/{id}");
        let p = signed(&key, "central", &topic, &args);
        (topic, p)
    };

    let v11 = manifest.replace("version = \"1.0.0\"", "version = \"1.1.0\"");
    let (t, p) = send(
        "d1",
        "model_deploy",
        serde_json::json!({
            "model": "bearing_mlp", "manifest": v11, "onnx": b64.encode(&onnx), "sha256": sha(&onnx)
        }),
    );
    publish(broker.port, &t, p).await;
    let r = finished(&sub, "d1", 30).await;
    assert_eq!(r["status"], "successful", "{r}");
    assert_eq!(
        (r["result"]["from"].as_str(), r["result"]["to"].as_str()),
        (Some("1.0.0"), Some("1.1.0")),
        "{r}"
    );
    let in_service = std::fs::read_to_string(models.join("manifest.toml")).expect("manifest");
    let versioned = format!("bearing_mlp.{}.onnx", &sha(&onnx)[..12]);
    assert!(in_service.contains(&versioned), "{in_service}");
    assert!(models.join("manifest.toml.previous").exists());

    // Corrupted in transit: refused before anything is written.
    let (t, p) = send(
        "d2",
        "model_deploy",
        serde_json::json!({
            "model": "bearing_mlp", "manifest": v11, "onnx": b64.encode(&onnx[..100]), "sha256": sha(&onnx)
        }),
    );
    publish(broker.port, &t, p).await;
    let r = finished(&sub, "d2", 30).await;
    assert!(
        r["reason"]
            .as_str()
            .unwrap_or("")
            .contains("corrupted or incomplete"),
        "{r}"
    );

    // Not a model at all: the dry run refuses it; 1.1.0 keeps running.
    let junk = b"this is not an ONNX model".to_vec();
    let bad = manifest
        .replace(&sha(&onnx), &sha(&junk))
        .replace("version = \"1.0.0\"", "version = \"6.6.6\"");
    let (t, p) = send(
        "d3",
        "model_deploy",
        serde_json::json!({
            "model": "bearing_mlp", "manifest": bad, "onnx": b64.encode(&junk), "sha256": sha(&junk)
        }),
    );
    publish(broker.port, &t, p).await;
    let r = finished(&sub, "d3", 30).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap_or("")
            .contains("dry run; nothing changed"),
        "{r}"
    );
    assert_eq!(
        std::fs::read_to_string(models.join("manifest.toml")).expect("manifest"),
        in_service
    );

    // 1.2.0 in three parts.
    let v12 = manifest.replace("version = \"1.0.0\"", "version = \"1.2.0\"");
    let text = b64.encode(&onnx);
    let cut = text.len() / 3;
    let pieces = [&text[..cut], &text[cut..2 * cut], &text[2 * cut..]];
    for (i, piece) in pieces.iter().enumerate() {
        let id = format!("p{}", i + 1);
        let (t, p) = send(
            &id,
            "model_deploy",
            serde_json::json!({
                "model": "bearing_mlp", "manifest": v12, "onnx": piece, "sha256": sha(&onnx),
                "upload": "v12", "part": i + 1, "parts": 3
            }),
        );
        publish(broker.port, &t, p).await;
        let r = finished(&sub, &id, 30).await;
        assert_eq!(r["status"], "successful", "{r}");
    }
    let r = statuses(&sub, "p3").last().cloned().unwrap_or_default();
    assert_eq!(r["result"]["to"], "1.2.0", "{r}");
    assert_eq!(
        statuses(&sub, "p1").last().cloned().unwrap_or_default()["result"]["received_part"],
        1
    );

    let (t, p) = send(
        "rb",
        "model_rollback",
        serde_json::json!({"model": "bearing_mlp"}),
    );
    publish(broker.port, &t, p).await;
    let r = finished(&sub, "rb", 30).await;
    assert_eq!(r["status"], "successful", "{r}");
    assert_eq!(
        (r["result"]["from"].as_str(), r["result"]["to"].as_str()),
        (Some("1.2.0"), Some("1.1.0")),
        "{r}"
    );
}
