//! The uplink against a real Mosquitto broker: delivery, release on PUBACK only,
//! broker outages and restarts without loss, retained status with last will.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edge_agent::delivery::journal::fs::StdFs;
use edge_agent::delivery::journal::{FsyncPolicy, Journal, JournalConfig, Lane};
use edge_agent::delivery::uplink::{UplinkConfig, UplinkStats, run_uplink};
use edge_agent::delivery::wire::Envelope;
use edge_agent_tests::{Mosquitto, Subscriber, TempDir, wait_until};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Views of what the test subscriber received.
trait Received {
    fn statuses(&self) -> Vec<(String, bool)>;
}

impl Received for Subscriber {
    fn statuses(&self) -> Vec<(String, bool)> {
        self.msgs
            .lock()
            .expect("test mutex")
            .iter()
            .filter(|(t, _, _)| t.ends_with("/status"))
            .map(|(_, p, r)| {
                let v: serde_json::Value = serde_json::from_slice(p).expect("status JSON");
                (v["state"].as_str().unwrap_or_default().to_string(), *r)
            })
            .collect()
    }
}

fn journal(dir: &std::path::Path) -> Arc<Mutex<Journal>> {
    let (j, _) = Journal::open(
        JournalConfig {
            dir: dir.to_path_buf(),
            segment_bytes: 16 * 1024,
            max_disk: 64 << 20,
            fsync: FsyncPolicy::Always,
        },
        Arc::new(StdFs),
    )
    .expect("journal opens");
    Arc::new(Mutex::new(j))
}

fn append(j: &Mutex<Journal>, wake: &Notify, range: std::ops::Range<u64>) {
    let mut g = j.lock().expect("journal mutex");
    for n in range {
        let body = serde_json::to_vec(&serde_json::json!({ "v": 1, "n": n, "asset": "pump" }))
            .expect("json");
        let env = Envelope {
            v: 1,
            id: u128::from(n),
            asset: "pump".into(),
            created_wall_ns: 0,
            body,
        };
        g.append(Lane::Alert, &env.encode()).expect("append");
    }
    g.sync().expect("sync");
    drop(g);
    wake.notify_one();
}

fn config(port: u16) -> UplinkConfig {
    edge_agent_tests::uplink_config(port, "gw-test")
}

struct Running {
    cancel: CancellationToken,
    stats: Arc<UplinkStats>,
    task: tokio::task::JoinHandle<()>,
}

fn start(cfg: UplinkConfig, j: Arc<Mutex<Journal>>, wake: Arc<Notify>) -> Running {
    let cancel = CancellationToken::new();
    let stats = Arc::new(UplinkStats::default());
    let task = tokio::spawn(run_uplink(cfg, j, wake, cancel.clone(), stats.clone()));
    Running {
        cancel,
        stats,
        task,
    }
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("uplink stops within 10 s")
            .expect("uplink task does not panic");
    }
}

fn acked(j: &Mutex<Journal>) -> u64 {
    j.lock().expect("journal mutex").acked(Lane::Alert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_the_broker_in_order_and_are_released_on_puback() {
    let broker = Mosquitto::start();
    let dir = TempDir::new("uplink-basic");
    let j = journal(dir.path());
    let wake = Arc::new(Notify::new());
    let sub = Subscriber::start(broker.port, "sub-basic", "edge/#").await;
    append(&j, &wake, 1..51);
    let up = start(config(broker.port), j.clone(), wake.clone());
    wait_until("50 alerts delivered", 20, || {
        sub.alert_numbers().len() >= 50
    })
    .await;
    assert_eq!(
        sub.alert_numbers(),
        (1..51).collect::<Vec<_>>(),
        "in order, once each"
    );
    wait_until("all released", 10, || acked(&j) == 50).await;
    // Live alerts keep flowing on the same connection.
    append(&j, &wake, 51..61);
    wait_until("live alerts", 10, || sub.alert_numbers().len() >= 60).await;
    wait_until("live released", 10, || acked(&j) == 60).await;
    assert_eq!(
        up.stats.connects.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    up.stop().await;
    // Birth then a clean "offline".
    // (the drain's status refresh is also "online", so wait for the last one)
    wait_until("offline status", 5, || {
        sub.statuses().last().is_some_and(|s| s.0 == "offline")
    })
    .await;
    let st = sub.statuses();
    assert_eq!(st.first().map(|s| s.0.as_str()), Some("online"), "{st:?}");
    // The birth message reports the journal's backlog and loss counters upstream.
    let birth: serde_json::Value = sub
        .msgs
        .lock()
        .expect("test mutex")
        .iter()
        .find(|(t, _, _)| t.ends_with("/status"))
        .map(|(_, p, _)| serde_json::from_slice(p).expect("json"))
        .expect("birth");
    assert_eq!(birth["journal"]["pending"]["alert"], 50, "{birth:#}");
    assert_eq!(birth["journal"]["evicted"]["telemetry"], 0, "{birth:#}");
    assert_eq!(st.last().map(|s| s.0.as_str()), Some("offline"), "{st:?}");
    // The drain refreshed the retained status at once (status_interval is a minute).
    let drained = sub
        .msgs
        .lock()
        .expect("test mutex")
        .iter()
        .filter(|(t, _, _)| t.ends_with("/status"))
        .map(|(_, p, _)| serde_json::from_slice::<serde_json::Value>(p).expect("json"))
        .any(|v| v["state"] == "online" && v["journal"]["pending"]["alert"] == 0);
    assert!(drained, "no status after the backlog drained: {st:?}");
    // A late subscriber gets the retained status.
    let late = Subscriber::start(broker.port, "sub-late", "edge/gw/status").await;
    wait_until("retained status", 5, || !late.statuses().is_empty()).await;
    assert_eq!(late.statuses()[0], ("offline".to_string(), true));
    // Released segments were deleted; what remains is at most the open one.
    let segs = std::fs::read_dir(dir.path().join("alert"))
        .expect("lane dir")
        .count();
    assert!(segs <= 2, "{segs} files left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_released_while_the_broker_is_unreachable() {
    let port = edge_agent_tests::free_port();
    let dir = TempDir::new("uplink-down");
    let j = journal(dir.path());
    let wake = Arc::new(Notify::new());
    append(&j, &wake, 1..21);
    let up = start(config(port), j.clone(), wake.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(acked(&j), 0);
    assert!(
        up.stats
            .connection_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
    up.stop().await;
    // Still all there after a restart of the journal.
    drop(j);
    let j = journal(dir.path());
    assert_eq!(
        j.lock()
            .expect("journal mutex")
            .read(Lane::Alert, 0, 100)
            .expect("read")
            .len(),
        20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_resumes_after_broker_restart_without_loss() {
    let port = edge_agent_tests::free_port();
    let mut broker = Mosquitto::start_on(port);
    // The subscriber's persistent session exists before anything is published.
    let sub = Subscriber::start(port, "sub-restart", "edge/#").await;
    broker.stop();
    let dir = TempDir::new("uplink-restart");
    let j = journal(dir.path());
    let wake = Arc::new(Notify::new());
    // Outage: alerts keep coming while the broker is down and the uplink retries.
    append(&j, &wake, 1..101);
    let up = start(config(port), j.clone(), wake.clone());
    for chunk in 0..10u64 {
        tokio::time::sleep(Duration::from_millis(80)).await;
        append(&j, &wake, 101 + chunk * 10..111 + chunk * 10);
    }
    assert_eq!(acked(&j), 0);
    assert!(
        up.stats
            .connection_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
    broker.spawn();
    wait_until("backlog delivered", 30, || acked(&j) == 200).await;
    // Restart the broker repeatedly while alerts keep coming.
    let producer = {
        let (j, wake) = (j.clone(), wake.clone());
        tokio::spawn(async move {
            for chunk in 0..20u64 {
                let from = 201 + chunk * 10;
                append(&j, &wake, from..from + 10);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        broker.restart();
    }
    producer.await.expect("producer");
    wait_until("everything released", 60, || acked(&j) == 400).await;
    wait_until("everything received", 30, || {
        sub.alert_numbers()
            .into_iter()
            .collect::<BTreeSet<_>>()
            .len()
            == 400
    })
    .await;
    let ids = sub.alert_numbers();
    let distinct: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(distinct, (1..401).collect::<BTreeSet<_>>(), "no alert lost");
    // The backlog accumulated during the outage arrived in order.
    let mut seen = BTreeSet::new();
    let first_200: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|&n| n <= 200 && seen.insert(n))
        .collect();
    assert_eq!(first_200, (1..201).collect::<Vec<_>>(), "backlog in order");
    let dups = ids.len() - distinct.len();
    assert!(
        dups <= 3 * 16 + 16,
        "duplicates only from in-flight windows: {dups}"
    );
    // At least one reconnect after the first connection (restarts during a backoff
    // may be missed by the client, which is fine).
    assert!(up.stats.connects.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    up.stop().await;
}

/// The whole agent in real time: simulated faults → detectors → journal → broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_alerts_flow_from_the_simulator_through_the_journal_to_the_broker() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "sub-agent", "edge/#").await;
    let dir = TempDir::new("uplink-agent");
    let src = format!(
        r#"
[agent]
id = "e2e-gw"
[alerts]
console = false
jsonl = "{jsonl}"
[journal]
dir = "{journal}"
[uplink]
host = "127.0.0.1"
port = {port}
reconnect_initial = "100ms"
[telemetry]
interval = "1s"
[[drivers]]
name = "plant"
kind = "sim"
speed = 600.0
tick = "1s"
[[drivers.machines]]
name = "pump"
vibration_rate_hz = 10.0
[[drivers.machines.faults]]
kind = "stuck"
signal = "pressure"
start = "1m"
duration = "5m"
[[assets]]
name = "pump"
[[assets.signals]]
signal = "pump.pressure"
[[assets.detectors]]
name = "pressure-stuck"
kind = "flatline"
signal = "pump.pressure"
min_duration = "1m"
"#,
        jsonl = dir.path().join("alerts.jsonl").display(),
        journal = dir.path().join("journal").display(),
        port = broker.port
    );
    let cfg = edge_agent_tests::config("agent.toml", &src);
    let handle = edge_agent::start(cfg, edge_agent::RunOptions::default()).expect("agent starts");
    // 600x: the stuck sensor is flagged after ~2.5 simulated minutes and cleared
    // after ~6 (well under a second of real time each).
    let mqtt_alerts = || {
        sub.msgs
            .lock()
            .expect("test mutex")
            .iter()
            .filter(|(t, _, _)| t == "edge/e2e-gw/alerts/pump")
            .map(|(_, p, _)| serde_json::from_slice::<serde_json::Value>(p).expect("alert JSON"))
            .collect::<Vec<_>>()
    };
    wait_until("raise and clear on the broker", 20, || {
        mqtt_alerts().len() >= 2
    })
    .await;
    let report = tokio::time::timeout(Duration::from_secs(30), handle.stop())
        .await
        .expect("stops")
        .expect("clean stop");
    assert!(!report.shutdown_timed_out);
    let file = edge_agent_tests::read_alerts(&dir.path().join("alerts.jsonl"));
    let got = mqtt_alerts();
    assert_eq!(
        got[..2],
        file[..2],
        "the broker got exactly the alerts the agent raised"
    );
    assert_eq!(got[0]["state"], "raised");
    assert_eq!(got[1]["state"], "cleared");
    assert_eq!(got[0]["agent_id"], "e2e-gw");
    // Everything delivered was released from the journal.
    let j = journal(&dir.path().join("journal"));
    assert!(
        j.lock()
            .expect("journal mutex")
            .read(Lane::Alert, 0, 100)
            .expect("read")
            .len()
            <= file.len() - 2
    );
}

/// Connections cut in the middle of publishes (data lost in flight) never lose an
/// alert: a record is released only on the PUBACK for its own publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_flaps_mid_publish_lose_nothing() {
    let broker = Mosquitto::start();
    let proxy = edge_agent_tests::CuttingProxy::start(broker.port, Duration::from_millis(15)).await;
    let sub = Subscriber::start(broker.port, "sub-flaps", "edge/#").await;
    let dir = TempDir::new("uplink-flaps");
    let j = journal(dir.path());
    let wake = Arc::new(Notify::new());
    let up = start(config(proxy.port), j.clone(), wake.clone());
    let producer = {
        let (j, wake) = (j.clone(), wake.clone());
        tokio::spawn(async move {
            for chunk in 0..30u64 {
                append(&j, &wake, 1 + chunk * 10..11 + chunk * 10);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    // Every cut hits a new live connection (cutting on a clock instead made the
    // count of reconnects depend on the backoff and the machine's load).
    let connects = || up.stats.connects.load(std::sync::atomic::Ordering::Relaxed);
    let mut seen = 0;
    for _ in 0..12 {
        wait_until("a new connection", 10, || connects() > seen).await;
        seen = connects();
        tokio::time::sleep(Duration::from_millis(60)).await;
        proxy.cut_all();
    }
    producer.await.expect("producer");
    wait_until("everything released", 60, || acked(&j) == 300).await;
    wait_until("everything received", 30, || {
        sub.alert_numbers()
            .into_iter()
            .collect::<BTreeSet<_>>()
            .len()
            == 300
    })
    .await;
    assert!(connects() >= 12, "{} connections", connects());
    up.stop().await;
}

/// Mutual TLS: with the CA and a client certificate the uplink delivers; without the
/// client certificate the broker refuses it and nothing is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_delivers_and_a_missing_client_certificate_releases_nothing() {
    let pki_dir = TempDir::new("pki");
    let pki = edge_agent_tests::TestPki::generate(pki_dir.path());
    let (broker, tls_port) = Mosquitto::start_with_tls(&pki, true);
    let sub = Subscriber::start(broker.port, "sub-tls", "edge/#").await;

    // No client certificate: refused.
    let dir = TempDir::new("uplink-tls-refused");
    let j = journal(dir.path());
    let wake = Arc::new(Notify::new());
    append(&j, &wake, 1..11);
    let mut cfg = config(tls_port);
    cfg.tls = Some(
        edge_agent::delivery::uplink::build_tls(Some(&pki.ca), None, None, None)
            .expect("tls config"),
    );
    let up = start(cfg.clone(), j.clone(), wake.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(acked(&j), 0);
    assert!(
        up.stats
            .connection_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    up.stop().await;

    // With the client certificate: delivered and released.
    cfg.tls = Some(
        edge_agent::delivery::uplink::build_tls(
            Some(&pki.ca),
            Some(&pki.client_cert),
            Some(&pki.client_key),
            None,
        )
        .expect("mTLS config"),
    );
    let up = start(cfg, j.clone(), wake.clone());
    wait_until("released over mTLS", 20, || acked(&j) == 10).await;
    wait_until("received", 10, || sub.alert_numbers().len() >= 10).await;
    assert_eq!(sub.alert_numbers(), (1..11).collect::<Vec<_>>());
    up.stop().await;
}

#[test]
fn tls_configuration_errors_are_clear() {
    let pki_dir = TempDir::new("pki-bad");
    let pki = edge_agent_tests::TestPki::generate(pki_dir.path());
    let err = edge_agent::delivery::uplink::build_tls(
        Some(&pki_dir.path().join("missing.pem")),
        None,
        None,
        None,
    )
    .expect_err("missing CA");
    assert!(err.contains("cannot read CA file"), "{err}");
    let err =
        edge_agent::delivery::uplink::build_tls(Some(&pki.ca), Some(&pki.client_cert), None, None)
            .expect_err("cert without key");
    assert!(err.contains("needs both"), "{err}");
    let err = edge_agent::delivery::uplink::build_tls(
        Some(&pki.ca),
        Some(&pki.client_cert),
        Some(&pki.server_key),
        None,
    )
    .expect_err("mismatched key");
    assert!(err.contains("do not work together"), "{err}");
}

/// `server_name` verifies the certificate against that name, not the host dialled:
/// the right name connects, a wrong one is refused (and nothing is released).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_name_overrides_the_host_for_verification() {
    let pki_dir = TempDir::new("pki-name");
    let pki = edge_agent_tests::TestPki::generate(pki_dir.path());
    let (broker, tls_port) = Mosquitto::start_with_tls(&pki, false);
    let _ = broker.port;
    let dir = TempDir::new("uplink-name");
    let j = journal(dir.path());
    let wake = Arc::new(Notify::new());
    append(&j, &wake, 1..4);
    let mut cfg = config(tls_port);
    cfg.tls = Some(
        edge_agent::delivery::uplink::build_tls(Some(&pki.ca), None, None, Some("wrong.example"))
            .expect("tls"),
    );
    let up = start(cfg.clone(), j.clone(), wake.clone());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(acked(&j), 0, "a certificate for another name is refused");
    up.stop().await;
    cfg.tls = Some(
        edge_agent::delivery::uplink::build_tls(Some(&pki.ca), None, None, Some("localhost"))
            .expect("tls"),
    );
    let up = start(cfg, j.clone(), wake.clone());
    wait_until("released", 20, || acked(&j) == 3).await;
    up.stop().await;
}

/// A peer that completes the MQTT handshake and then sends garbage: every connection
/// dies young, so the reconnect backoff must keep growing instead of restarting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_accepts_and_then_fails_is_retried_with_growing_backoff() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let peer = {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut sock, _)) = listener.accept().await {
                accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut buf = [0u8; 512];
                    let _ = tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf)).await;
                    // CONNACK (accepted), then bytes that are no MQTT packet.
                    let _ = sock.write_all(&[0x20, 0x02, 0x00, 0x00]).await;
                    let _ = sock.write_all(&[0xff; 16]).await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                });
            }
        })
    };
    let dir = TempDir::new("uplink-young");
    let j = journal(dir.path());
    let wake = Arc::new(Notify::new());
    append(&j, &wake, 1..11);
    let mut cfg = config(port);
    cfg.reconnect_initial = Duration::from_millis(200);
    cfg.reconnect_max = Duration::from_secs(5);
    let up = start(cfg, j.clone(), wake.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    up.stop().await;
    peer.abort();
    let n = accepted.load(std::sync::atomic::Ordering::Relaxed);
    // Backoff 200, 400, 800, 1600 ms (jittered): about five connections in 3 s; a
    // backoff that restarts after each handshake would make twenty or more.
    assert!((2..=7).contains(&n), "{n} connections in 3 s");
    assert_eq!(acked(&j), 0, "nothing is released by a broken peer");
}

/// A system alert stored during an outage (the disk is full, records were evicted)
/// reaches the broker before the backlog of older alerts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_alert_from_the_outage_arrives_before_the_older_backlog() {
    let broker = Mosquitto::start();
    let dir = TempDir::new("uplink-priority");
    let j = journal(dir.path());
    let wake = Arc::new(Notify::new());
    let sub = Subscriber::start(broker.port, "sub-priority", "edge/#").await;
    append(&j, &wake, 1..301);
    {
        let body = serde_json::to_vec(&serde_json::json!({ "v": 1, "n": 9999, "asset": "gw" }))
            .expect("json");
        let env = Envelope::new(9999, "gw", 0, body);
        let mut g = j.lock().expect("journal mutex");
        g.append_priority(Lane::Alert, &env.encode())
            .expect("append");
        g.sync().expect("sync");
    }
    append(&j, &wake, 301..311);
    let mut cfg = config(broker.port);
    cfg.window = 4;
    let up = start(cfg, j.clone(), wake.clone());
    wait_until("everything delivered", 20, || {
        sub.alert_numbers().len() >= 311
    })
    .await;
    let ids = sub.alert_numbers();
    assert_eq!(ids.first(), Some(&9999), "{:?}", &ids[..ids.len().min(10)]);
    let rest: Vec<u64> = ids[1..].to_vec();
    assert_eq!(
        rest,
        (1..311).collect::<Vec<_>>(),
        "the rest in order, once each"
    );
    wait_until("all released", 10, || acked(&j) == 311).await;
    up.stop().await;
}
