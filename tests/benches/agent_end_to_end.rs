//! The whole agent (release build) at full tilt against Mosquitto: a simulated
//! plant raising alerts as fast as it can, detectors, alert engine, journal,
//! uplink. Reports
//!
//! * alerts/s accepted (journal + JSON-lines file) and delivered (received by a
//!   subscriber) with `fsync = "200ms"` and with `fsync = "always"`, over the
//!   steady part of the run, and the agent's peak RSS;
//! * a backlog built with the broker down, then drained: alerts, seconds, msg/s,
//!   and the agent's RSS before and at its peak during the drain (sampled every
//!   20 ms from `/proc/<pid>/status`), while live alerts keep coming.
//!
//!     cargo bench -p edge-agent-tests --bench agent_end_to_end [-- --quick]
#![allow(clippy::print_stdout)] // a bench reports on stdout

use std::path::Path;
use std::time::{Duration, Instant};

use edge_agent_tests::{Mosquitto, Subscriber, TempDir};

/// Pumps in the simulated plant.
const MACHINES: usize = 20;

/// A plant of [`MACHINES`] pumps whose current spikes about half of the 10 s
/// windows, each watched by a threshold detector, at `speed`× real time.
fn plant(speed: f64) -> String {
    let mut out = format!(
        "[[drivers]]\nname = \"plant\"\nkind = \"sim\"\nspeed = {speed:.1}\ntick = \"1s\"\n"
    );
    for i in 0..MACHINES {
        out.push_str(&format!(
            "[[drivers.machines]]\nname = \"p{i}\"\nvibration_rate_hz = 1.0\n\
             [[drivers.machines.faults]]\nkind = \"spikes\"\nsignal = \"current\"\n\
             magnitude = 30.0\nrate_per_hour = 250.0\n"
        ));
    }
    for i in 0..MACHINES {
        out.push_str(&format!(
            "[[assets]]\nname = \"p{i}\"\n[[assets.signals]]\nsignal = \"p{i}.current\"\n\
             window = {{ size = \"10s\", hop = \"10s\" }}\n[[assets.detectors]]\n\
             name = \"current-spike\"\nkind = \"threshold\"\nsignal = \"p{i}.current\"\n\
             feature = \"max\"\nwarning = 25.0\n"
        ));
    }
    out
}

fn config(dir: &Path, port: u16, fsync: &str, speed: f64) -> std::path::PathBuf {
    let toml = format!(
        r#"
[agent]
id = "gw-bench"
[alerts]
console = false
jsonl = "{dir}/alerts.jsonl"
max_per_minute = 1000000
flap_max_raises = 0
[journal]
dir = "{dir}/journal"
fsync = "{fsync}"
[uplink]
host = "127.0.0.1"
port = {port}
reconnect_initial = "50ms"
reconnect_max = "200ms"
{plant}"#,
        dir = dir.display(),
        plant = plant(speed),
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, toml).expect("config");
    path
}

/// Starts the agent on `cfg` (its log next to it) and checks that it runs.
fn start(cfg: &Path) -> std::process::Child {
    let log = cfg.with_extension("log");
    let mut agent = edge_agent_tests::spawn_agent(cfg, &log);
    std::thread::sleep(Duration::from_millis(500));
    if let Ok(Some(status)) = agent.try_wait() {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        panic!("the agent stopped at start ({status}):\n{log}");
    }
    agent
}

fn stop(mut agent: std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let _ = agent.wait();
}

/// A field of `/proc/<pid>/status` in MiB (`VmRSS`, `VmHWM`).
fn proc_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn accepted(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("alerts.jsonl"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn received(sub: &Subscriber) -> usize {
    sub.msgs
        .lock()
        .expect("bench mutex")
        .iter()
        .filter(|(t, _, _)| t.contains("/alerts/"))
        .count()
}

/// Steady-state alerts/s accepted and delivered with `fsync`, and the peak RSS.
async fn live(fsync: &str, speed: f64, secs: u64) -> (f64, f64, f64) {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, &format!("sub-{fsync}"), "edge/#").await;
    let dir = TempDir::new("bench-e2e");
    let agent = start(&config(dir.path(), broker.port, fsync, speed));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (a0, r0, t0) = (accepted(dir.path()), received(&sub), Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let dt = t0.elapsed().as_secs_f64();
    let (a1, r1) = (accepted(dir.path()), received(&sub));
    let rss = proc_mib(agent.id(), "VmHWM");
    stop(agent);
    ((a1 - a0) as f64 / dt, (r1 - r0) as f64 / dt, rss)
}

/// Builds a backlog for `outage` with the broker down, then drains it.
async fn drain(speed: f64, outage: Duration) {
    let port = edge_agent_tests::free_port();
    let mut broker = Mosquitto::start_on(port);
    let sub = Subscriber::start(port, "sub-drain", "edge/#").await;
    broker.stop();
    let dir = TempDir::new("bench-e2e-drain");
    let agent = start(&config(dir.path(), port, "200ms", speed));
    let pid = agent.id();
    tokio::time::sleep(outage).await;
    let backlog = accepted(dir.path());
    let before = proc_mib(pid, "VmRSS");
    let t = Instant::now();
    broker.spawn();
    let mut peak = before;
    let deadline = Instant::now() + Duration::from_secs(300);
    // The backlog goes out oldest first: it is delivered once as many alerts as it
    // held have arrived (live alerts follow it).
    while received(&sub) < backlog && Instant::now() < deadline {
        peak = peak.max(proc_mib(pid, "VmRSS"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let live = accepted(dir.path()) - backlog;
    stop(agent);
    println!(
        "  drain: {backlog} alerts held after {} s down, delivered in {secs:.1} s ({:.0} msg/s) \
         while {live} live alerts were accepted; RSS {before:.1} MiB before, peak {peak:.1} MiB while draining",
        outage.as_secs(),
        backlog as f64 / secs
    );
}

fn main() {
    let quick =
        std::env::args().any(|a| a == "--quick") || std::env::var_os("BENCH_QUICK").is_some();
    let (secs, outage) = if quick { (5, 10) } else { (20, 60) };
    let speed: f64 = std::env::var("BENCH_SPEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000.0);
    // The bench measures the release binary: build it (a no-op when up to date).
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "-q",
            "--release",
            "-p",
            "edge-agent",
            "--bin",
            "edge-agent",
        ])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building edge-agent failed");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        println!(
            "agent end to end: {MACHINES} simulated pumps at {speed}x, threshold detectors, \
             journal, uplink to Mosquitto (QoS 1)"
        );
        for fsync in ["200ms", "always"] {
            let (acc, del, rss) = live(fsync, speed, secs).await;
            println!(
                "  fsync = {fsync:>6}: {acc:>7.0} alerts/s accepted, {del:>7.0}/s delivered, peak RSS {rss:.1} MiB"
            );
        }
        drain(speed, Duration::from_secs(outage)).await;
    });
}
