//! Draining a journal backlog to Mosquitto at QoS 1: messages/s from the journal
//! through the uplink (read, publish, PUBACK, release) against a bare rumqttc client
//! that publishes the same payloads with the same in-flight window and only counts
//! PUBACKs (baseline, same broker, same run), and the uplink's peak RSS.
//!
//!     cargo bench -p edge-agent-tests --bench uplink_drain [-- --quick]
//!
//! The journal lives in cargo's target tmp dir with `fsync = "200ms"`.
#![allow(clippy::print_stdout)] // a bench reports on stdout

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_agent::delivery::journal::fs::StdFs;
use edge_agent::delivery::journal::{FsyncPolicy, Journal, JournalConfig, Lane};
use edge_agent::delivery::uplink::{ReplayRate, UplinkConfig, UplinkStats, run_uplink};
use edge_agent::delivery::wire::Envelope;
use edge_agent_tests::Mosquitto;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The bare client's window and the large uplink window.
const WINDOW: u16 = 256;
/// The uplink's default window.
const DEFAULT_WINDOW: u16 = 32;

fn body(n: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "v": 1, "n": n, "asset": "pump-1", "detector": "bearing_temp", "kind": "threshold",
        "severity": "critical", "state": "raised", "score": 86.5, "limit": 85.0,
        "message": "mean(pump-1.temperature) = 86.5 beyond critical limit 85",
    }))
    .expect("json")
}

fn journal(dir: &std::path::Path, n: u64) -> Arc<Mutex<Journal>> {
    let _ = std::fs::remove_dir_all(dir);
    let (mut j, _) = Journal::open(
        JournalConfig {
            dir: dir.to_path_buf(),
            segment_bytes: 4 << 20,
            max_disk: 1 << 34,
            fsync: FsyncPolicy::Interval(Duration::from_millis(200)),
        },
        Arc::new(StdFs),
    )
    .expect("journal opens");
    for i in 1..=n {
        let env = Envelope::new(u128::from(i), "pump-1", 0, body(i));
        j.append(Lane::Alert, &env.encode()).expect("append");
    }
    j.sync().expect("sync");
    Arc::new(Mutex::new(j))
}

fn uplink_config(port: u16, window: u16, replay_rate: ReplayRate) -> UplinkConfig {
    UplinkConfig {
        host: "127.0.0.1".into(),
        port,
        client_id: "bench-drain".into(),
        agent_id: "gw".into(),
        topic_prefix: "edge".into(),
        keep_alive: Duration::from_secs(30),
        window,
        replay_rate,
        username: None,
        password: None,
        connect_timeout: Duration::from_secs(5),
        reconnect_initial: Duration::from_millis(100),
        reconnect_max: Duration::from_secs(1),
        version: "bench".into(),
        config_hash: "0".into(),
        status_interval: Duration::from_secs(600),
        tls: None,
        sparkplug: None,
        commands: None,
    }
}

/// The uplink drains `n` records; messages/s from connect to the last release.
async fn drain(port: u16, n: u64, window: u16, replay_rate: ReplayRate) -> f64 {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("drain-bench");
    let j = journal(&dir, n);
    let cancel = CancellationToken::new();
    let stats = Arc::new(UplinkStats::default());
    let t = Instant::now();
    let task = tokio::spawn(run_uplink(
        uplink_config(port, window, replay_rate),
        j.clone(),
        Arc::new(Notify::new()),
        cancel.clone(),
        stats.clone(),
    ));
    while j.lock().expect("journal").acked(Lane::Alert) < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    let _ = std::fs::remove_dir_all(&dir);
    rate
}

/// A bare client: the same payloads, at most `WINDOW` unacknowledged.
async fn bare(port: u16, n: u64) -> f64 {
    // A thousand distinct payloads, reused: the same bytes on the wire without
    // holding the whole backlog in memory.
    let payloads: Vec<Vec<u8>> = (1..=1000).map(body).collect();
    let mut opts = MqttOptions::new("bench-bare", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(WINDOW);
    let (client, mut ev) = AsyncClient::new(opts, usize::from(WINDOW) * 2);
    let t = Instant::now();
    let (mut sent, mut acked, mut outstanding) = (0u64, 0u64, 0u64);
    while acked < n {
        while sent < n && outstanding < u64::from(WINDOW) {
            let topic = "edge/gw/alerts/pump-1".to_string();
            if client
                .try_publish(
                    topic,
                    QoS::AtLeastOnce,
                    false,
                    payloads[sent as usize % payloads.len()].clone(),
                )
                .is_err()
            {
                break;
            }
            sent += 1;
            outstanding += 1;
        }
        match ev.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                acked += 1;
                outstanding -= 1;
            }
            Ok(_) => {}
            Err(e) => panic!("bare client: {e}"),
        }
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    let quick =
        std::env::args().any(|a| a == "--quick") || std::env::var_os("BENCH_QUICK").is_some();
    let n: u64 = if quick { 20_000 } else { 100_000 };
    let broker = Mosquitto::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let b1 = bare(broker.port, n).await;
        let wide = drain(broker.port, n, WINDOW, ReplayRate::Auto).await;
        let default = drain(broker.port, n, DEFAULT_WINDOW, ReplayRate::Auto).await;
        let b2 = bare(broker.port, n).await;
        let baseline = (b1 + b2) / 2.0;
        let limited = drain(broker.port, n / 10, DEFAULT_WINDOW, ReplayRate::PerSecond(1000)).await;
        println!("uplink drain bench: {n} alerts (~300 B) to Mosquitto at QoS 1, one core");
        println!("  bare rumqttc publisher, window {WINDOW}: {baseline:>10.0} msg/s (baseline)");
        println!(
            "  uplink, window {WINDOW}, replay auto:    {wide:>10.0} msg/s   ratio {:.3}",
            wide / baseline
        );
        println!(
            "  uplink, defaults (window {DEFAULT_WINDOW}, auto):  {default:>10.0} msg/s   ratio {:.3}",
            default / baseline
        );
        println!("  uplink, replay_rate = 1000:        {limited:>10.0} msg/s");
        println!(
            "  peak RSS of the bench process (journal, uplink, clients): {:.1} MiB",
            peak_rss_mib()
        );
    });
}
