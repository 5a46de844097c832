#![allow(clippy::print_stdout)] // reports the measured counts
//! kill -9 of the agent binary at arbitrary points while it raises alerts and while it
//! replays its backlog: every alert the journal accepted must reach the subscriber
//! (duplicates allowed, with the same id).

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_agent_tests::{Mosquitto, TempDir, agent_bin};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// Iterations of start → random delay → SIGKILL. More in `tests/soak.sh`.
fn iterations() -> usize {
    std::env::var("EDGE_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

fn config(dir: &std::path::Path, port: u16) -> String {
    format!(
        r#"
[agent]
id = "crashy"
shutdown_timeout = "10s"
[alerts]
console = false
jsonl = "{jsonl}"
max_per_minute = 1000000
flap_max_raises = 0
[journal]
dir = "{journal}"
segment_size = "16KiB"
[uplink]
host = "127.0.0.1"
port = {port}
window = 8
replay_rate = "auto"
reconnect_initial = "50ms"
reconnect_max = "200ms"
{plant}"#,
        jsonl = dir.join("alerts.jsonl").display(),
        journal = dir.join("journal").display(),
        plant = edge_agent_tests::spiking_plant_toml(300.0, 120.0),
    )
}

fn spawn_agent(cfg: &std::path::Path) -> Child {
    Command::new(agent_bin())
        .args(["run", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start edge-agent")
}

struct KillOnDrop(Option<Child>);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn kill_9_during_ingest_and_replay_loses_no_accepted_alert() {
    let mut broker = Mosquitto::start();
    let dir = TempDir::new("crash");
    let cfg_path = dir.path().join("agent.toml");
    std::fs::write(&cfg_path, config(dir.path(), broker.port)).expect("write config");

    // Persistent QoS 1 subscriber, collecting alert ids.
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut opts = MqttOptions::new("crash-sub", "127.0.0.1", broker.port);
    opts.set_clean_session(false);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = Client::new(opts, 100);
    client
        .subscribe("edge/crashy/alerts/#", QoS::AtLeastOnce)
        .expect("subscribe");
    let (rx, sub_ready) = (received.clone(), Arc::new(Mutex::new(false)));
    let ready = sub_ready.clone();
    std::thread::spawn(move || {
        for ev in conn.iter() {
            match ev {
                Ok(Event::Incoming(Packet::SubAck(_))) => *ready.lock().expect("m") = true,
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload)
                        && let Some(id) = v["id"].as_str()
                    {
                        rx.lock().expect("m").push(id.to_string());
                    }
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    });
    let t0 = Instant::now();
    while !*sub_ready.lock().expect("m") {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "subscriber never subscribed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // Deterministic "random" kill points between 50 ms and 700 ms.
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    let n = iterations();
    for i in 0..n {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_millis(50 + rng % 650);
        let mut agent = KillOnDrop(Some(spawn_agent(&cfg_path)));
        std::thread::sleep(delay);
        if let Some(c) = agent.0.as_mut() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
        agent.0 = None;
        // Every few rounds the broker restarts too (sessions persist).
        if i % 7 == 6 {
            broker.restart();
        }
    }
    let accepted_before_final =
        edge_agent_tests::accepted_alert_ids(&dir.path().join("alerts.jsonl"));
    assert!(
        accepted_before_final.len() >= n,
        "the scenario raised too few alerts: {}",
        accepted_before_final.len()
    );

    // A final run replays the backlog; every accepted alert must arrive.
    let mut agent = KillOnDrop(Some(spawn_agent(&cfg_path)));
    let deadline = Instant::now() + Duration::from_secs(60);
    let missing = loop {
        let got: BTreeSet<String> = received.lock().expect("m").iter().cloned().collect();
        let missing: Vec<String> = accepted_before_final.difference(&got).cloned().collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if let Some(c) = agent.0.as_mut() {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let _ = c.wait();
    }
    agent.0 = None;
    let got = received.lock().expect("m").clone();
    let distinct: BTreeSet<&String> = got.iter().collect();
    println!(
        "kill -9 x{n}: {} alerts accepted before the final run, {} messages received ({} distinct, {} duplicates)",
        accepted_before_final.len(),
        got.len(),
        distinct.len(),
        got.len() - distinct.len()
    );
    assert!(
        missing.is_empty(),
        "{} accepted alerts never reached the broker: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    // The ack cursor is written on every acknowledgement, so a kill re-sends at most
    // the window that was in flight (8), as does a broker restart.
    let restarts = n / 7;
    let dups = got.len() - distinct.len();
    assert!(
        dups <= (n + restarts + 1) * 8,
        "{dups} duplicates after {n} kills and {restarts} broker restarts (window 8)"
    );
}
