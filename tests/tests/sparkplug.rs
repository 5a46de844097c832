//! The agent as a Sparkplug B edge node, against Mosquitto, with every message
//! decoded by pysparkplug (an independent implementation, the host side) and the
//! host's rebirth command encoded by it. Follows the edge-node assertions of the
//! Eclipse Sparkplug TCK that apply so far: session establishment (NDEATH will with
//! bdSeq, NBIRTH seq 0 with the same bdSeq and Node Control/Rebirth, a DBIRTH per
//! device before its DDATA, aliases defined by the births), send data (seq + 1 per
//! message), receive command (rebirth), termination (the will on kill -9, bdSeq + 1
//! at the next session, NDEATH on a clean stop).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use edge_agent_tests::{
    Mosquitto, PyModbus, Subscriber, TempDir, peer_python, spawn_agent, wait_until,
};
use serde_json::Value;

fn host_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/sparkplug_host.py")
}

/// Every Sparkplug message received so far, decoded by pysparkplug, in order.
fn decoded(sub: &Subscriber) -> Vec<Value> {
    let lines: String = sub
        .msgs
        .lock()
        .expect("test mutex")
        .iter()
        .filter(|(t, _, _)| t.starts_with("spBv1.0/"))
        .map(|(t, p, _)| format!("{t} {}\n", STANDARD.encode(p)))
        .collect();
    let mut child = Command::new(peer_python())
        .arg(host_script())
        .arg("decode")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("pysparkplug host");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(lines.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("pysparkplug decodes");
    assert!(out.status.success(), "pysparkplug failed to decode");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

fn of_type<'a>(msgs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    msgs.iter().filter(|m| m["type"] == kind).collect()
}

fn metric<'a>(m: &'a Value, name: &str) -> Option<&'a Value> {
    m["metrics"].as_array()?.iter().find(|x| x["name"] == name)
}

fn bd_seq(m: &Value) -> i64 {
    metric(m, "bdSeq")
        .and_then(|x| x["value"].as_i64())
        .unwrap_or_else(|| panic!("no bdSeq in {m}"))
}

fn config(dir: &TempDir, port: u16) -> std::path::PathBuf {
    config_with(dir, port, "")
}

fn config_with(dir: &TempDir, port: u16, drivers: &str) -> std::path::PathBuf {
    let src = format!(
        r#"
[agent]
id = "spb-gw"
[alerts]
console = false
[journal]
dir = "{journal}"
[uplink]
host = "127.0.0.1"
port = {port}
reconnect_initial = "100ms"
keep_alive = "5s"
[sparkplug]
group_id = "plant1"
scan = "200ms"
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
warning = 10.0
min_duration = "2s"
{drivers}"#,
        journal = dir.path().join("journal").display(),
    );
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, src).expect("config written");
    path
}

/// Replaces `from` by `to` in the configuration file `cfg`.
fn edit_config(cfg: &std::path::Path, from: &str, to: &str) {
    let src = std::fs::read_to_string(cfg).expect("config");
    assert!(src.contains(from), "{from} not in the config");
    std::fs::write(cfg, src.replace(from, to)).expect("config");
}

/// The default config, reconnecting every 300 ms at most (outage tests).
fn outage_config(dir: &TempDir, port: u16) -> std::path::PathBuf {
    let cfg = config(dir, port);
    edit_config(
        &cfg,
        "reconnect_initial = \"100ms\"",
        "reconnect_initial = \"100ms\"\nreconnect_max = \"300ms\"",
    );
    cfg
}

/// A Modbus driver `plc` on the pymodbus peer at `port` with `line1.temperature`
/// (an f32 at holding 3) and `extra` tags.
fn plc(port: u16, extra: &str) -> String {
    format!(
        r#"
[[drivers]]
name = "plc"
kind = "modbus"
host = "127.0.0.1"
port = {port}
poll = "200ms"
timeout = "300ms"
[[drivers.tags]]
name = "line1.temperature"
area = "holding"
address = 3
type = "f32"
unit = "degC"
{extra}"#
    )
}

/// What pysparkplug encodes for `args`.
fn host_says(args: &[&str]) -> Vec<u8> {
    let out = Command::new(peer_python())
        .arg(host_script())
        .args(args)
        .output()
        .expect("pysparkplug encodes");
    STANDARD
        .decode(String::from_utf8_lossy(&out.stdout).trim())
        .expect("base64")
}

async fn rebirth(port: u16) {
    let cmd = host_says(&["rebirth"]);
    publish(port, "spBv1.0/plant1/NCMD/spb-gw", cmd, false).await;
}

/// Publishes as the host (QoS 1), until the PUBACK.
async fn publish(port: u16, topic: &str, payload: Vec<u8>, retain: bool) {
    edge_agent_tests::publish_acked(port, "spb-host", topic, payload, retain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_node_session_births_sends_data_rebirths_and_dies_with_its_bd_seq() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "spb-sub", "spBv1.0/#").await;
    let dir = TempDir::new("sparkplug");
    let cfg = config(&dir, broker.port);
    let log = dir.path().join("agent.log");
    let mut agent = spawn_agent(&cfg, &log);

    wait_until("NBIRTH, DBIRTH and two DDATA", 30, || {
        sub.msgs
            .lock()
            .expect("test mutex")
            .iter()
            .filter(|(t, _, _)| t == "spBv1.0/plant1/DDATA/spb-gw/line")
            .count()
            >= 2
    })
    .await;
    let msgs = decoded(&sub);
    let nbirth = of_type(&msgs, "NBIRTH")[0];
    assert_eq!(nbirth["topic"], "spBv1.0/plant1/NBIRTH/spb-gw");
    assert_eq!(nbirth["seq"], 0, "{nbirth}");
    let first_bd = bd_seq(nbirth);
    let rebirth_metric = metric(nbirth, "Node Control/Rebirth").expect("rebirth metric");
    assert_eq!(rebirth_metric["datatype"], "BOOLEAN");
    let dbirth = of_type(&msgs, "DBIRTH")[0];
    assert_eq!(
        (dbirth["device"].as_str(), dbirth["seq"].as_i64()),
        (Some("line"), Some(1))
    );
    let temp = metric(dbirth, "pump.temperature").expect("the device's metrics");
    assert_eq!(temp["datatype"], "DOUBLE");
    assert!(
        temp["alias"].as_i64().is_some(),
        "births define aliases: {temp}"
    );
    // DDATA: seq continues by one, metrics by alias resolve to the birth's names.
    let data = of_type(&msgs, "DDATA");
    assert_eq!(data[0]["seq"], 2, "{}", data[0]);
    let seqs: Vec<i64> = msgs.iter().filter_map(|m| m["seq"].as_i64()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let named: Vec<&str> = data[0]["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(
        !named.is_empty() && named.iter().all(|n| n.starts_with("pump.")),
        "{named:?}"
    );

    // Alerts are node metrics: named in NBIRTH, changed by NDATA (aliases resolved
    // through the NBIRTH by pysparkplug).
    assert!(
        metric(nbirth, "Alerts/pump/hot/Active").is_some(),
        "{nbirth}"
    );
    let raised = |msgs: &[Value]| {
        msgs.iter()
            .filter(|m| m["type"] == "NBIRTH" || m["type"] == "NDATA")
            .any(|m| {
                metric(m, "Alerts/pump/hot/Active").is_some_and(|a| a["value"] == true)
                    && metric(m, "Alerts/pump/hot/Severity").is_none_or(|s| s["value"] == "warning")
            })
    };
    wait_until("the alert as node metrics", 20, || raised(&decoded(&sub))).await;
    let msgs = decoded(&sub);

    // Receive command: a rebirth from the host.
    let before = msgs.len();
    rebirth(broker.port).await;
    wait_until("a second NBIRTH", 10, || {
        of_type(&decoded(&sub), "NBIRTH").len() >= 2
    })
    .await;
    let msgs = decoded(&sub);
    let again = of_type(&msgs[before..], "NBIRTH")[0];
    assert_eq!(
        (again["seq"].as_i64(), bd_seq(again)),
        (Some(0), first_bd),
        "same session, seq reset"
    );

    // Termination: kill -9 → the broker sends the will: NDEATH with this bdSeq.
    agent.kill().expect("kill -9");
    let _ = agent.wait();
    wait_until("NDEATH from the will", 20, || {
        !of_type(&decoded(&sub), "NDEATH").is_empty()
    })
    .await;
    let msgs = decoded(&sub);
    assert_eq!(
        bd_seq(of_type(&msgs, "NDEATH")[0]),
        first_bd,
        "the will carries the session's bdSeq"
    );

    // The next session (after a kill -9) takes the next bdSeq.
    let mut agent = spawn_agent(&cfg, &log);
    wait_until("the next session's NBIRTH", 30, || {
        of_type(&decoded(&sub), "NBIRTH").len() >= 3
    })
    .await;
    let msgs = decoded(&sub);
    let third = *of_type(&msgs, "NBIRTH").last().expect("NBIRTH");
    assert_eq!(
        bd_seq(third),
        (first_bd + 1) % 256,
        "bdSeq + 1 after a restart"
    );

    // A clean stop publishes NDEATH itself (a clean DISCONNECT sends no will).
    let term = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let _ = agent.wait();
    wait_until("NDEATH on a clean stop", 20, || {
        of_type(&decoded(&sub), "NDEATH").len() >= 2
    })
    .await;
    let msgs = decoded(&sub);
    assert_eq!(bd_seq(of_type(&msgs, "NDEATH")[1]), bd_seq(third));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_plc_is_a_ddeath_and_its_return_a_new_dbirth_while_the_node_lives_on() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "spb-sub2", "spBv1.0/#").await;
    let mut peer = PyModbus::start(
        &serde_json::json!({"unit": 1, "tags": [{"area": "holding", "address": 3, "type": "f32", "value": 21.5}]}),
    );
    let dir = TempDir::new("sparkplug-dead");
    let modbus = plc(peer.port, "");
    let cfg = config_with(&dir, broker.port, &modbus);
    let mut agent = spawn_agent(&cfg, &dir.path().join("agent.log"));
    let on = |kind: &'static str, device: &'static str| {
        move |m: &Vec<Value>| {
            m.iter()
                .filter(|x| x["type"] == kind && x["device"] == device)
                .count()
        }
    };
    wait_until("the PLC's DBIRTH", 30, || {
        on("DBIRTH", "plc")(&decoded(&sub)) >= 1
    })
    .await;
    let msgs = decoded(&sub);
    let birth = msgs
        .iter()
        .find(|m| m["type"] == "DBIRTH" && m["device"] == "plc")
        .expect("DBIRTH");
    let t = metric(birth, "line1.temperature").expect("the PLC's tag");
    assert_eq!(
        (t["datatype"].as_str(), t["value"].as_f64()),
        (Some("DOUBLE"), Some(21.5))
    );

    peer.stop();
    wait_until("the PLC's DDEATH", 30, || {
        on("DDEATH", "plc")(&decoded(&sub)) >= 1
    })
    .await;
    let msgs = decoded(&sub);
    assert!(
        msgs.iter().all(|m| m["type"] != "NDEATH"),
        "the node lives on while one device is down"
    );
    wait_until("the sim device's data after the PLC died", 10, || {
        decoded(&sub)
            .iter()
            .skip_while(|m| m["type"] != "DDEATH")
            .any(|m| m["type"] == "DDATA" && m["device"] == "line")
    })
    .await;

    peer.spawn();
    wait_until("the PLC's new DBIRTH", 30, || {
        on("DBIRTH", "plc")(&decoded(&sub)) >= 2
    })
    .await;
    // seq runs on across the node's messages: no gap, no repeat.
    let seqs: Vec<i64> = decoded(&sub)
        .iter()
        .filter(|m| m["type"] != "NDEATH")
        .filter_map(|m| m["seq"].as_i64())
        .collect();
    for w in seqs.windows(2) {
        assert!(
            w[1] == (w[0] + 1) % 256 || w[1] == 0,
            "seq {} then {}",
            w[0],
            w[1]
        );
    }
    let _ = agent.kill();
    let _ = agent.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn births_wait_for_the_primary_host_and_its_going_offline_ends_the_session() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "spb-sub3", "spBv1.0/plant1/#").await;
    let dir = TempDir::new("sparkplug-host");
    let cfg = config(&dir, broker.port);
    let src = std::fs::read_to_string(&cfg).expect("config");
    let src = src.replace(
        "scan = \"200ms\"",
        "scan = \"200ms\"\nprimary_host = \"scada1\"",
    );
    std::fs::write(&cfg, src).expect("config");
    let mut agent = spawn_agent(&cfg, &dir.path().join("agent.log"));
    // Connected (the journal's status topic is not under spBv1.0), but silent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        decoded(&sub).is_empty(),
        "no birth before the host is online"
    );

    let state = "spBv1.0/STATE/scada1";
    publish(broker.port, state, host_says(&["state", "on"]), true).await;
    wait_until("NBIRTH once the host is online", 10, || {
        !of_type(&decoded(&sub), "NBIRTH").is_empty()
    })
    .await;
    let first = bd_seq(of_type(&decoded(&sub), "NBIRTH")[0]);

    publish(broker.port, state, host_says(&["state", "off"]), true).await;
    wait_until("NDEATH when the host goes offline", 10, || {
        !of_type(&decoded(&sub), "NDEATH").is_empty()
    })
    .await;
    assert_eq!(bd_seq(of_type(&decoded(&sub), "NDEATH")[0]), first);
    // Reconnected, waiting again: no new birth while the host is offline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(of_type(&decoded(&sub), "NBIRTH").len(), 1);

    publish(broker.port, state, host_says(&["state", "on"]), true).await;
    wait_until("a new session's NBIRTH", 10, || {
        of_type(&decoded(&sub), "NBIRTH").len() >= 2
    })
    .await;
    let msgs = decoded(&sub);
    let again = *of_type(&msgs, "NBIRTH").last().expect("NBIRTH");
    assert_eq!(bd_seq(again), (first + 1) % 256, "a new session");
    let _ = agent.kill();
    let _ = agent.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_broker_restart_the_next_bd_seq_births_and_the_values_seen_meanwhile_follow_as_history()
 {
    // The test's subscriber keeps its session and gets the QoS 0 messages sent
    // while it reconnects too.
    let mut broker =
        Mosquitto::configure(edge_agent_tests::free_port(), "queue_qos0_messages true\n");
    broker.spawn();
    let sub = Subscriber::start(broker.port, "spb-sub4", "spBv1.0/#").await;
    let dir = TempDir::new("sparkplug-outage");
    let cfg = outage_config(&dir, broker.port);
    let mut agent = spawn_agent(&cfg, &dir.path().join("agent.log"));
    wait_until("live DDATA", 30, || {
        !of_type(&decoded(&sub), "DDATA").is_empty()
    })
    .await;

    let ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64
    };
    let down = ms();
    broker.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let up = ms();
    broker.spawn();
    wait_until("historical DDATA after the new births", 30, || {
        decoded(&sub).iter().any(|m| {
            m["type"] == "DDATA"
                && m["metrics"]
                    .as_array()
                    .is_some_and(|ms| ms.iter().any(|x| x["is_historical"] == true))
        })
    })
    .await;
    let msgs = decoded(&sub);
    let second_birth = msgs
        .iter()
        .enumerate()
        .filter(|(_, m)| m["type"] == "NBIRTH")
        .nth(1)
        .map(|(i, _)| i)
        .expect("a second NBIRTH");
    let historical: Vec<&Value> = msgs
        .iter()
        .enumerate()
        .filter(|(_, m)| m["type"] == "DDATA")
        .flat_map(|(i, m)| {
            m["metrics"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |x| (i, x))
        })
        .filter(|(_, x)| x["is_historical"] == true)
        .map(|(i, x)| {
            assert!(i > second_birth, "historical data follows the births");
            x
        })
        .collect();
    assert!(
        historical.len() >= 5,
        "{} historical values",
        historical.len()
    );
    for x in &historical {
        let t = x["timestamp"].as_i64().expect("a time");
        assert!(
            t >= down - 1000 && t <= up + 1000,
            "{t} outside the outage {down}..{up}"
        );
        assert!(
            x["name"].as_str().is_some_and(|n| n.starts_with("pump.")),
            "{x}"
        );
    }
    let _ = agent.kill();
    let _ = agent.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dcmd_from_the_host_writes_the_plc_and_the_value_comes_back_in_ddata() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "spb-sub-dcmd", "spBv1.0/#").await;
    let audit = Subscriber::start(broker.port, "audit-sub", "edge/spb-gw/events/audit").await;
    let peer = PyModbus::start(&serde_json::json!({"unit": 1, "tags": [
        {"area": "holding", "address": 3, "type": "f32", "value": 21.5},
        {"area": "holding", "address": 10, "type": "i16", "value": 0}
    ]}));
    let dir = TempDir::new("sparkplug-dcmd");
    let modbus = plc(
        peer.port,
        r#"[[drivers.tags]]
name = "line1.setpoint"
area = "holding"
address = 10
type = "i16"
writable = true
min = -100
max = 100
"#,
    );
    let cfg = config_with(&dir, broker.port, &modbus);
    edit_config(
        &cfg,
        "scan = \"200ms\"",
        "scan = \"200ms\"\ndcmd_writes = true",
    );
    let mut agent = spawn_agent(&cfg, &dir.path().join("agent.log"));
    wait_until("the PLC's DBIRTH", 30, || {
        decoded(&sub)
            .iter()
            .any(|m| m["type"] == "DBIRTH" && m["device"] == "plc")
    })
    .await;
    let cmd = host_says(&[
        "dcmd",
        "line1.setpoint=-42:INT16",
        "line1.temperature=1.0:DOUBLE",
    ]);
    publish(broker.port, "spBv1.0/plant1/DCMD/spb-gw/plc", cmd, false).await;
    wait_until("the written setpoint in DDATA", 20, || {
        decoded(&sub).iter().any(|m| {
            m["type"] == "DDATA"
                && metric(m, "line1.setpoint").is_some_and(|x| x["value"].as_f64() == Some(-42.0))
        })
    })
    .await;
    assert_eq!(
        edge_agent_tests::modbus_peek(peer.port, 1, "holding", 10, 1),
        vec![u64::from((-42i16) as u16)],
        "the PLC holds the value the host wrote"
    );
    assert_eq!(
        edge_agent_tests::modbus_peek(peer.port, 1, "holding", 3, 2),
        vec![0x41AC, 0x0000],
        "a read-only tag is not written"
    );
    wait_until("both writes audited", 10, || {
        audit.json_on("edge/spb-gw/events/audit").len() >= 2
    })
    .await;
    let audited = audit.json_on("edge/spb-gw/events/audit");
    let by_signal = |s: &str| {
        audited
            .iter()
            .find(|a| a["signal"] == s)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(by_signal("line1.setpoint")["result"], "successful");
    assert_eq!(by_signal("line1.setpoint")["source"], "sparkplug");
    assert_eq!(by_signal("line1.temperature")["result"], "refused");
    let _ = agent.kill();
    let _ = agent.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_seen_during_an_outage_survive_a_kill_of_the_agent() {
    let mut broker =
        Mosquitto::configure(edge_agent_tests::free_port(), "queue_qos0_messages true\n");
    broker.spawn();
    let sub = Subscriber::start(broker.port, "spb-sub6", "spBv1.0/#").await;
    let dir = TempDir::new("sparkplug-outage-kill");
    let cfg = outage_config(&dir, broker.port);
    let log = dir.path().join("agent.log");
    let mut agent = spawn_agent(&cfg, &log);
    wait_until("live DDATA", 30, || {
        !of_type(&decoded(&sub), "DDATA").is_empty()
    })
    .await;
    let ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64
    };
    broker.stop();
    let down = ms();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The agent dies during the outage and a new one starts, still without a broker.
    let _ = agent.kill();
    let _ = agent.wait();
    let killed = ms();
    let mut agent = spawn_agent(&cfg, &log);
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.spawn();
    wait_until("historical DDATA after the new births", 30, || {
        decoded(&sub).iter().any(|m| {
            m["type"] == "DDATA"
                && m["metrics"]
                    .as_array()
                    .is_some_and(|ms| ms.iter().any(|x| x["is_historical"] == true))
        })
    })
    .await;
    let before_kill: Vec<i64> = decoded(&sub)
        .iter()
        .filter(|m| m["type"] == "DDATA")
        .flat_map(|m| m["metrics"].as_array().cloned().unwrap_or_default())
        .filter(|x| x["is_historical"] == true)
        .filter_map(|x| x["timestamp"].as_i64())
        .filter(|t| *t >= down - 1000 && *t <= killed)
        .collect();
    assert!(
        before_kill.len() >= 5,
        "values seen before the kill are replayed: {before_kill:?}"
    );
    let _ = agent.kill();
    let _ = agent.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_wraps_from_255_to_0_without_a_gap() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "spb-sub7", "spBv1.0/#").await;
    let dir = TempDir::new("sparkplug-seq");
    // Four devices changing every 100 ms, scanned every 100 ms: ~40 messages/s.
    let devices: String = (1..=3)
        .map(|i| {
            format!(
                "[[drivers]]\nname = \"line{i}\"\nkind = \"sim\"\ntick = \"100ms\"\n[[drivers.machines]]\nname = \"m{i}\"\nvibration_rate_hz = 10.0\n"
            )
        })
        .collect();
    let cfg = config_with(&dir, broker.port, &devices);
    edit_config(&cfg, "scan = \"200ms\"", "scan = \"100ms\"");
    let mut agent = spawn_agent(&cfg, &dir.path().join("agent.log"));
    let seqs = || -> Vec<i64> {
        decoded(&sub)
            .iter()
            .filter(|m| m["type"] != "NDEATH")
            .filter_map(|m| m["seq"].as_i64())
            .collect()
    };
    wait_until("seq to wrap past 255", 60, || {
        seqs().windows(2).any(|w| w == [255, 0])
    })
    .await;
    let s = seqs();
    assert_eq!(s[0], 0, "NBIRTH starts at 0");
    for w in s.windows(2) {
        assert_eq!(w[1], (w[0] + 1) % 256, "seq {} then {}", w[0], w[1]);
    }
    let _ = agent.kill();
    let _ = agent.wait();
}
