//! Write latency to a real Modbus server (pymodbus, tests/.venv): 50 writable
//! holding registers written one after the other, as a DCMD or a script writing a
//! recipe does, through every layer — the control socket (`edge-agent write`),
//! the checks, the driver's queue and its gap between polls, FC6 on the wire —
//! and, as the baseline of the same run, a bare tokio-modbus FC6 on its own
//! connection to the same server. Also with `verify = true` (a read back).
//!
//!     ./tests/run.sh --no-run   # once: the peers' venv
//!     cargo bench -p edge-agent-tests --bench write_latency
//!
//! Reports per write mean / p50 / p95 (ms) and the time for all 50 tags; compare
//! the lines of one run (these machines are noisy). Neuron publishes 91 ms on
//! average for 50 tags.
#![allow(clippy::print_stdout)] // a bench reports on stdout

use std::time::{Duration, Instant};

use edge_agent::RunOptions;
use edge_agent::inbound::{WriteOrder, WriteSource};
use edge_agent_tests::{PyModbus, TempDir, config};
use tokio_modbus::client::Writer as _;

const TAGS: u16 = 50;
const ROUNDS: usize = 10;

fn summary(name: &str, mut ms: Vec<f64>, per_round: &[f64]) {
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    let q = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    let round = per_round.iter().sum::<f64>() / per_round.len() as f64;
    println!(
        "{name:<44} per write mean {mean:6.2} ms  p50 {:6.2}  p95 {:6.2}  | 50 tags {round:7.1} ms",
        q(0.5),
        q(0.95)
    );
}

fn toml(port: u16, sock: &std::path::Path) -> String {
    let mut s = format!(
        "[agent]\nid = \"bench\"\ncontrol_socket = \"{}\"\n[alerts]\nconsole = false\n\
         [[drivers]]\nname = \"plc\"\nkind = \"modbus\"\nhost = \"127.0.0.1\"\nport = {port}\npoll = \"1s\"\n",
        sock.display()
    );
    for i in 0..TAGS {
        for (prefix, base, verify) in [("w", 0, false), ("v", 100, true)] {
            s.push_str(&format!(
                "[[drivers.tags]]\nname = \"plc.{prefix}{i}\"\narea = \"holding\"\naddress = {}\n\
                 writable = true\nmin = 0\nmax = 60000\nverify = {verify}\n",
                base + i
            ));
        }
    }
    s
}

async fn through_socket(sock: &std::path::Path, prefix: &str, round: usize) -> (Vec<f64>, f64) {
    let mut ms = Vec::new();
    let t0 = Instant::now();
    for i in 0..TAGS {
        let sock = sock.to_path_buf();
        let cmd = format!("write plc.{prefix}{i} {}", round * 100 + usize::from(i));
        let t = Instant::now();
        let r = tokio::task::spawn_blocking(move || {
            edge_agent::ops::control::query::<serde_json::Value>(Some(&sock), &cmd)
        })
        .await
        .expect("task")
        .expect("report");
        assert_eq!(r["result"], "successful", "{r}");
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    (ms, t0.elapsed().as_secs_f64() * 1e3)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let spec = serde_json::json!({"unit": 1, "tags": [{"area": "holding", "address": 0, "type": "u16", "value": 0}]});
    let peer = PyModbus::start(&spec);
    let dir = TempDir::new("write-bench");
    let sock = dir.path().join("control.sock");
    let handle = edge_agent::start(
        config("bench.toml", &toml(peer.port, &sock)),
        RunOptions::default(),
    )
    .expect("agent starts");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Baseline: a bare FC6 on its own connection.
    let addr = format!("127.0.0.1:{}", peer.port).parse().expect("addr");
    let mut bare = tokio_modbus::client::tcp::connect_slave(addr, tokio_modbus::Slave(1))
        .await
        .expect("connect");
    let (mut ms, mut rounds) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let t0 = Instant::now();
        for i in 0..TAGS {
            let t = Instant::now();
            bare.write_single_register(200 + i, (round as u16) * 100 + i)
                .await
                .expect("io")
                .expect("no exception");
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        rounds.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    summary("bare tokio-modbus FC6 (baseline)", ms, &rounds);

    let (mut ms, mut rounds) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let t0 = Instant::now();
        for i in 0..TAGS {
            let order = WriteOrder {
                signal: format!("plc.w{i}"),
                value: f64::from((round as u16) * 100 + i),
                source: WriteSource::Command,
                by: "bench".into(),
            };
            let t = Instant::now();
            let r = handle.write(order).await;
            assert!(r.is_successful(), "{r:?}");
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        rounds.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    summary("agent write path (in process)", ms, &rounds);

    for (name, prefix) in [
        ("edge-agent write (control socket)", "w"),
        ("edge-agent write, verify = true", "v"),
    ] {
        let (mut all, mut rounds) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let (ms, total) = through_socket(&sock, prefix, round).await;
            all.extend(ms);
            rounds.push(total);
        }
        summary(name, all, &rounds);
    }
    let _ = tokio::time::timeout(Duration::from_secs(20), handle.stop()).await;
}
