//! A fleet on one machine: 50 agents (the real binary, sim drivers, small
//! configurations; `EDGE_FLEET_AGENTS` changes the count) against one Mosquitto.
//! The centre pushes a signed `config_update` to all of them (applied live), then
//! a bad one (a PLC nobody can reach: applied by a restart, unhealthy, rolled
//! back by another restart) that must fail and roll back everywhere. Prints the
//! completion times, the broker's message rate seen by the centre and every
//! agent's RSS:
//!
//!     cargo test -p edge-agent-tests --release --test fleet -- --nocapture
#![allow(clippy::print_stdout)] // the test reports its figures

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_agent_tests::{Mosquitto, TempDir, free_port, spawn_agent};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

struct Fleet(Vec<std::process::Child>);

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// What the centre received: (topic, payload, when).
type Seen = Arc<Mutex<Vec<(String, Vec<u8>, Instant)>>>;

async fn centre(port: u16) -> (Seen, AsyncClient) {
    let seen: Seen = Arc::default();
    let mut opts = MqttOptions::new("centre", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut ev) = AsyncClient::new(opts, 1000);
    client
        .subscribe("edge/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let (s, ready) = (seen.clone(), Arc::new(tokio::sync::Notify::new()));
    let r = ready.clone();
    tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => r.notify_one(),
                Ok(Event::Incoming(Packet::Publish(p))) => s.lock().expect("seen").push((
                    p.topic.clone(),
                    p.payload.to_vec(),
                    Instant::now(),
                )),
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready.notified())
        .await
        .expect("the centre subscribed");
    (seen, client)
}

fn config(dir: &Path, id: &str, port: u16, public: &str, extra: &str) -> String {
    format!(
        r#"[agent]
id = "{id}"
control_socket = ""
[alerts]
console = false
[journal]
dir = "{journal}"
[uplink]
host = "127.0.0.1"
port = {port}
reconnect_initial = "200ms"
[commands]
enabled = true
operations = ["config_update", "model_deploy"]
public_keys = {{ central = "{public}" }}
health_window = "5s"
[models]
dir = "{models}"
[[drivers]]
name = "line"
kind = "sim"
tick = "500ms"
[[drivers.machines]]
name = "pump"
{assets}[[assets.detectors]]
name = "hot"
kind = "threshold"
signal = "pump.temperature"
warning = 90.0
{extra}"#,
        journal = dir.join("journal").display(),
        models = dir.join("models").display(),
        assets = edge_agent_tests::pump_asset_with_model("2s"),
    )
}

fn zoo() -> PathBuf {
    edge_agent_tests::zoo_bearing_mlp()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn sign(key: &Path, topic: &str, args: &Value) -> Vec<u8> {
    edge_agent_tests::sign_command(key, "central", topic, args)
}

/// Per agent, the final status of command `id` and when it arrived.
fn finals(seen: &Seen, op: &str, id: &str) -> HashMap<String, (Value, Instant)> {
    let suffix = format!("/cmd/{op}/{id}/status");
    let mut out = HashMap::new();
    for (t, p, at) in seen.lock().expect("seen").iter() {
        if !t.ends_with(&suffix) {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<Value>(p) else {
            continue;
        };
        if matches!(
            v["status"].as_str(),
            Some("successful" | "failed" | "rejected")
        ) {
            out.entry(v["agent_id"].as_str().unwrap_or("").to_string())
                .or_insert((v, *at));
        }
    }
    out
}

fn quantiles(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let q = |p: f64| xs[((xs.len() - 1) as f64 * p).round() as usize];
    (q(0.5), q(0.95), q(1.0))
}

/// Deploys bearing_mlp 1.1.0 (the zoo's model, a new version number) to every agent.
async fn deploy_model(
    client: &AsyncClient,
    seen: &Seen,
    key: &Path,
    ids: &[String],
) -> (HashMap<String, (Value, Instant)>, Vec<f64>, f64) {
    use base64::Engine as _;
    let manifest = std::fs::read_to_string(zoo().join("manifest.toml"))
        .expect("manifest")
        .replace("version = \"1.0.0\"", "version = \"1.1.0\"");
    let onnx = std::fs::read(zoo().join("bearing_mlp.onnx")).expect("onnx");
    let sha = manifest
        .lines()
        .find_map(|l| l.strip_prefix("sha256 = \""))
        .map(|r| r.trim_end_matches('"').to_string())
        .expect("the manifest's sha256");
    let args = serde_json::json!({
        "model": "bearing_mlp",
        "manifest": manifest,
        "onnx": base64::engine::general_purpose::STANDARD.encode(onnx),
        "sha256": sha,
    });
    let payloads: Vec<(String, Vec<u8>)> = ids
        .iter()
        .map(|a| {
            let topic = format!("edge/{a}/cmd/model_deploy/m1");
            (topic.clone(), sign(key, &topic, &args))
        })
        .collect();
    send_and_wait(client, seen, ids, "model_deploy", "m1", payloads, 120).await
}

/// Publishes `payloads` and waits for every agent's final status of `id`.
async fn send_and_wait(
    client: &AsyncClient,
    seen: &Seen,
    ids: &[String],
    op: &str,
    id: &str,
    payloads: Vec<(String, Vec<u8>)>,
    secs: u64,
) -> (HashMap<String, (Value, Instant)>, Vec<f64>, f64) {
    let before = seen.lock().expect("seen").len();
    let start = Instant::now();
    for (topic, p) in payloads {
        client
            .publish(topic, QoS::AtLeastOnce, false, p)
            .await
            .expect("queued");
    }
    let deadline = start + Duration::from_secs(secs);
    loop {
        let f = finals(seen, op, id);
        if f.len() == ids.len() {
            let took: Vec<f64> = f
                .values()
                .map(|(_, at)| (*at - start).as_secs_f64())
                .collect();
            let msgs = seen.lock().expect("seen").len() - before;
            let rate = msgs as f64 / start.elapsed().as_secs_f64();
            return (f, took, rate);
        }
        assert!(
            Instant::now() < deadline,
            "{op} {id}: {} of {} agents finished",
            f.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Pushes `toml_of(agent)` to every agent as command `id`; waits for every
/// final status; the statuses and the seconds each took.
async fn rollout(
    client: &AsyncClient,
    seen: &Seen,
    key: &Path,
    ids: &[String],
    id: &str,
    toml_of: impl Fn(&str) -> String,
    secs: u64,
) -> (HashMap<String, (Value, Instant)>, Vec<f64>, f64) {
    let payloads: Vec<(String, Vec<u8>)> = ids
        .iter()
        .map(|a| {
            let topic = format!("edge/{a}/cmd/config_update/{id}");
            let p = sign(key, &topic, &serde_json::json!({"toml": toml_of(a)}));
            (topic, p)
        })
        .collect();
    send_and_wait(client, seen, ids, "config_update", id, payloads, secs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_takes_a_config_update_and_rolls_a_bad_one_back_everywhere() {
    let n: usize = std::env::var("EDGE_FLEET_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let broker = Mosquitto::start();
    let (seen, client) = centre(broker.port).await;
    let root = TempDir::new("fleet");
    let (key, public) = edge_agent_tests::keygen(root.path(), "central");
    let ids: Vec<String> = (0..n).map(|i| format!("gw{i:03}")).collect();
    let dirs: Vec<PathBuf> = ids.iter().map(|a| root.path().join(a)).collect();
    let mut fleet = Fleet(Vec::new());
    let started = Instant::now();
    for (a, d) in ids.iter().zip(&dirs) {
        let models = d.join("models/bearing_mlp");
        std::fs::create_dir_all(&models).expect("agent dir");
        for f in [
            "manifest.toml",
            "bearing_mlp.onnx",
            "reference.json",
            "quality.json",
        ] {
            std::fs::copy(zoo().join(f), models.join(f)).expect("copy the zoo model");
        }
        let cfg = d.join("agent.toml");
        std::fs::write(&cfg, config(d, a, broker.port, &public, "")).expect("config");
        fleet.0.push(spawn_agent(&cfg, &d.join("agent.log")));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let up = seen
            .lock()
            .expect("seen")
            .iter()
            .filter(|(t, _, _)| t.ends_with("/capabilities"))
            .count();
        if up >= n {
            break;
        }
        assert!(Instant::now() < deadline, "{up} of {n} agents connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connected = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss: Vec<f64> = fleet
        .0
        .iter()
        .map(|c| rss_kib(c.id()) as f64 / 1024.0)
        .collect();
    let pids: Vec<u32> = fleet.0.iter().map(|c| c.id()).collect();

    // A good update, applied live.
    let dir_of = |a: &str| root.path().join(a);
    let good = |a: &str| {
        config(&dir_of(a), a, broker.port, &public, "").replace("warning = 90.0", "warning = 92.5")
    };
    let (f, took_good, rate_good) = rollout(&client, &seen, &key, &ids, "u1", good, 120).await;
    for (a, (v, _)) in &f {
        assert_eq!(v["status"], "successful", "{a}: {v}");
        assert_eq!(v["result"]["applied"], "reload", "{a}: {v}");
    }
    for d in &dirs {
        let text = std::fs::read_to_string(d.join("agent.toml")).expect("read");
        assert!(text.contains("warning = 92.5"));
    }

    // A new model version, to every agent.
    let (f, took_model, rate_model) = deploy_model(&client, &seen, &key, &ids).await;
    for (a, (v, _)) in &f {
        assert_eq!(v["status"], "successful", "{a}: {v}");
        assert_eq!(v["result"]["to"], "1.1.0", "{a}: {v}");
    }

    // A bad update: a PLC nobody can reach; each agent restarts, stays unhealthy,
    // rolls back and restarts again.
    let dead = free_port();
    let plc = format!(
        "[[drivers]]\nname = \"plc\"\nkind = \"modbus\"\nhost = \"127.0.0.1\"\nport = {dead}\ntimeout = \"200ms\"\n[[drivers.tags]]\nname = \"plc.level\"\narea = \"holding\"\naddress = 0\n"
    );
    let bad = |a: &str| good(a).replace("[[assets]]", &format!("{plc}[[assets]]"));
    let (f, took_bad, rate_bad) = rollout(&client, &seen, &key, &ids, "u2", bad, 240).await;
    for (a, (v, _)) in &f {
        assert_eq!(v["status"], "failed", "{a}: {v}");
        let why = v["reason"].as_str().unwrap_or("");
        assert!(
            why.contains("rolled back to the previous configuration"),
            "{a}: {v}"
        );
    }
    for (a, d) in ids.iter().zip(&dirs) {
        let text = std::fs::read_to_string(d.join("agent.toml")).expect("read");
        assert_eq!(text, good(a), "{a} runs the previous file again");
    }
    for (c, pid) in fleet.0.iter_mut().zip(&pids) {
        assert!(
            c.try_wait().expect("wait").is_none(),
            "agent {pid} still runs"
        );
    }

    let (g50, g95, gmax) = quantiles(took_good);
    let (b50, b95, bmax) = quantiles(took_bad);
    let (m50, m95, mmax) = quantiles(took_model);
    let (r50, _, rmax) = quantiles(rss.clone());
    let rmean = rss.iter().sum::<f64>() / rss.len() as f64;
    println!("fleet of {n} agents on one Mosquitto: all connected after {connected:.1} s");
    println!(
        "good config_update (live):     p50 {g50:.2} s  p95 {g95:.2} s  all {gmax:.2} s  centre received {rate_good:.0} msg/s"
    );
    println!(
        "model_deploy (bearing_mlp 1.1.0): p50 {m50:.2} s  p95 {m95:.2} s  all {mmax:.2} s  centre received {rate_model:.0} msg/s"
    );
    println!(
        "bad config_update (rollback):  p50 {b50:.2} s  p95 {b95:.2} s  all {bmax:.2} s  centre received {rate_bad:.0} msg/s"
    );
    println!("RSS per agent: mean {rmean:.1} MiB  p50 {r50:.1} MiB  max {rmax:.1} MiB");
}
