//! MQTT sensor ingest on one core: messages/s through the real driver (subscribe,
//! topic template, JSON parse, two pointers, samples into a sink) from Mosquitto,
//! against a bare rumqttc subscriber that only receives the same stream (baseline,
//! measured in the same run).
//!
//!     cargo bench -p edge-agent-tests --bench mqtt_ingest
//!
//! Two publisher connections in their own threads flood `plant/<line>/env` with
//! QoS 0 JSON. Each receiver runs on a current-thread runtime (one core).
#![allow(clippy::print_stdout)] // a bench reports on stdout

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edge_agent_tests::Mosquitto;
use edge_driver_api::config::{Diagnostics, TableReader, parse_document};
use edge_driver_api::{
    Clock, DriverContext, DriverFactory, PushResult, Sample, SampleSink, SignalRegistry,
};
use edge_driver_mqtt::MqttConfig;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const SECONDS: f64 = 3.0;

#[derive(Debug, Default)]
struct Counting {
    samples: AtomicU64,
    notify: Notify,
}
impl SampleSink for Counting {
    fn try_push(&self, batch: &[Sample]) -> PushResult {
        self.samples
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        PushResult {
            accepted: batch.len(),
        }
    }
    fn space_available(&self) -> &Notify {
        &self.notify
    }
}

/// Resident set size of this process in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds of the calling thread (utime + stime from /proc/thread-self/stat).
fn thread_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

fn flood(port: u16, stop: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    (0..2)
        .map(|k| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("rt");
                rt.block_on(async move {
                    let mut opts = MqttOptions::new(format!("flood-{k}"), "127.0.0.1", port);
                    opts.set_keep_alive(Duration::from_secs(30));
                    let (client, mut ev) = AsyncClient::new(opts, 10_000);
                    tokio::spawn(async move { while ev.poll().await.is_ok() {} });
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let body = format!(
                            r#"{{"temp": {}.5, "hum": {}, "ts": {}}}"#,
                            i % 90,
                            i % 100,
                            1_795_000_000_000u64 + i
                        );
                        if client
                            .publish(
                                format!("plant/l{}/env", i % 8),
                                QoS::AtMostOnce,
                                false,
                                body,
                            )
                            .await
                            .is_err()
                        {
                            return;
                        }
                        i += 1;
                    }
                });
            })
        })
        .collect()
}

/// (messages/s, share of one core the receiving thread used, RSS KiB after 1 s and
/// at the end of the flood)
fn driver_rate(port: u16) -> (f64, f64, u64, u64) {
    let src = format!(
        "host = \"127.0.0.1\"\nport = {port}\nqos = 0\n[[subscriptions]]\ntopic = \"plant/+line/env\"\nformat = \"json\"\ntimestamp = \"/ts\"\ntimestamp_unit = \"ms\"\nvalues = [{{ pointer = \"/temp\", signal = \"{{line}}.temp\" }}, {{ pointer = \"/hum\", signal = \"{{line}}.hum\" }}]\n"
    );
    let table = parse_document(&src).expect("toml");
    let diags = Diagnostics::new();
    let cfg = {
        let mut r = TableReader::new(&table, "drivers[0]", &diags);
        MqttConfig::parse(&mut r, "bench").expect("config")
    };
    let mut reg = SignalRegistry::new();
    for d in cfg.signals() {
        reg.intern(&d, "bench").expect("unique");
    }
    let pats = cfg.patterns();
    for l in 0..8 {
        for s in ["temp", "hum"] {
            let n = format!("l{l}.{s}");
            let p = pats.iter().find(|p| p.matches(&n)).expect("pattern");
            reg.intern(&p.decl(&n), "bench").expect("unique");
        }
    }
    let f = cfg.into_factory(&reg).expect("factory");
    let sink = Arc::new(Counting::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let cancel = CancellationToken::new();
        let ctx = DriverContext::new(
            "bench".into(),
            sink.clone(),
            cancel.clone(),
            Clock::system(),
        );
        let task = tokio::spawn(f.create().expect("driver").run(ctx));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stop = Arc::new(AtomicBool::new(false));
        let threads = flood(port, stop.clone());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (t0, n0, c0) = (
            Instant::now(),
            sink.samples.load(Ordering::Relaxed),
            thread_cpu(),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_early = rss_kib();
        tokio::time::sleep(Duration::from_secs_f64(SECONDS - 1.0)).await;
        let rss_late = rss_kib();
        let (dt, dn) = (
            t0.elapsed().as_secs_f64(),
            sink.samples.load(Ordering::Relaxed) - n0,
        );
        let busy = (thread_cpu() - c0) / dt;
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            let _ = t.join();
        }
        cancel.cancel();
        let _ = task.await;
        // Two samples per message; the once-a-second statistics are negligible.
        (dn as f64 / 2.0 / dt, busy, rss_early, rss_late)
    })
}

fn baseline_rate(port: u16) -> (f64, f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let mut opts = MqttOptions::new("baseline", "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut ev) = AsyncClient::new(opts, 16);
        client
            .subscribe("plant/+/env", QoS::AtMostOnce)
            .await
            .expect("subscribe");
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        let rx = tokio::spawn(async move {
            while let Ok(e) = ev.poll().await {
                if let Event::Incoming(Packet::Publish(_)) = e {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stop = Arc::new(AtomicBool::new(false));
        let threads = flood(port, stop.clone());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (t0, n0, c0) = (Instant::now(), count.load(Ordering::Relaxed), thread_cpu());
        tokio::time::sleep(Duration::from_secs_f64(SECONDS)).await;
        let (dt, dn) = (
            t0.elapsed().as_secs_f64(),
            count.load(Ordering::Relaxed) - n0,
        );
        let busy = (thread_cpu() - c0) / dt;
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            let _ = t.join();
        }
        rx.abort();
        (dn as f64 / dt, busy)
    })
}

fn main() {
    let broker = Mosquitto::start();
    println!("mqtt_ingest: JSON payloads (2 pointers + timestamp), QoS 0, {SECONDS} s each");
    let (base, base_busy) = baseline_rate(broker.port);
    let (ours, busy, rss_early, rss_late) = driver_rate(broker.port);
    println!(
        "bare rumqttc subscriber {base:>9.0} msg/s at {:>3.0}% of a core | edge-agent mqtt driver {ours:>9.0} msg/s at {:>3.0}% of a core | ratio {:.2}",
        base_busy * 100.0,
        busy * 100.0,
        ours / base
    );
    println!(
        "CPU per message: baseline {:.2} us, driver {:.2} us (driver/baseline {:.2})",
        base_busy / base * 1e6,
        busy / ours * 1e6,
        (busy / ours) / (base_busy / base)
    );
    println!(
        "bench process RSS during the driver's flood: {rss_early} KiB after 1 s, {rss_late} KiB after {SECONDS} s"
    );
}
