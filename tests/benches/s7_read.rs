//! S7 read throughput: 1,000 REAL values per cycle from python-snap7's server, read
//! by our driver's poller and by python-snap7's client (the C Snap7 library) in the
//! same run. Reports items/s of each and the ratio (these machines are noisy:
//! compare ratios, not absolute figures).
//!
//!     cargo bench -p edge-agent-tests --bench s7_read
//!
//! Scenarios: `contiguous` (DB1.DBD0..DBD3996, merged into PDU-sized items) and
//! `scattered` (DB2.DBD0, DBD8, ... — 1,000 separate items, 20 per request).
//! Needs the test venv (`./tests/run.sh` makes it).
#![allow(clippy::print_stdout)] // a bench reports on stdout

use std::time::{Duration, Instant};

use edge_agent_tests::{PySnap7, peer_python};
use edge_driver_api::config::{Diagnostics, TableReader, parse_document};
use edge_driver_api::{Clock, SignalId};
use edge_driver_s7::poll::Poller;
use edge_driver_s7::{ConnectParams, ConnectionType, S7Client, S7Config, rack_slot_tsap};
use serde_json::json;

const SECONDS: f64 = 3.0;

fn config(scenario: &str) -> S7Config {
    let (db, stride, gap) = if scenario == "contiguous" {
        (1, 4, 16)
    } else {
        (2, 8, 0)
    };
    let mut toml = format!("host = \"127.0.0.1\"\nmax_gap = {gap}\n");
    for i in 0..1000 {
        toml += &format!(
            "[[tags]]\nname = \"r{i}\"\naddress = \"DB{db}.DBD{}\"\ntype = \"REAL\"\n",
            i * stride
        );
    }
    let table = parse_document(&toml).expect("toml");
    let diags = Diagnostics::new();
    let mut r = TableReader::new(&table, "drivers[0]", &diags);
    let cfg = S7Config::parse(&mut r, "bench").expect("config");
    drop(r);
    assert!(diags.is_empty());
    cfg
}

async fn ours(port: u16, scenario: &str) -> (f64, usize) {
    let cfg = config(scenario);
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tcp");
    stream.set_nodelay(true).expect("nodelay");
    let params = ConnectParams {
        local_tsap: 0x0100,
        remote_tsap: rack_slot_tsap(ConnectionType::Pg, 0, 1),
        pdu_size: 480,
        timeout: Duration::from_secs(2),
    };
    let mut client = S7Client::connect(stream, params).await.expect("connect");
    let ids: Vec<SignalId> = (0..1000).map(SignalId).collect();
    let mut poller = Poller::new(&cfg, ids, client.negotiated().pdu_size);
    let requests = poller.plan().requests.len();
    let clock = Clock::system();
    let mut out = Vec::with_capacity(1000);
    poller
        .cycle(&mut client, None, &clock, &mut out)
        .await
        .expect("cycle");
    assert_eq!(out[999].value.as_f64(), 999.0 * 0.5);
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < SECONDS {
        out.clear();
        poller
            .cycle(&mut client, None, &clock, &mut out)
            .await
            .expect("cycle");
        n += 1;
    }
    (n as f64 * 1000.0 / t0.elapsed().as_secs_f64(), requests)
}

fn theirs(port: u16, scenario: &str) -> f64 {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/s7_client_bench.py");
    let out = std::process::Command::new(peer_python())
        .arg(script)
        .arg(port.to_string())
        .arg(scenario)
        .arg(SECONDS.to_string())
        .output()
        .expect("run the python-snap7 client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v["cycles"].as_f64().expect("cycles") * 1000.0 / v["seconds"].as_f64().expect("seconds")
}

fn main() {
    let db1: Vec<_> = (0..1000)
        .map(|i| json!({"offset": i * 4, "type": "REAL", "value": i as f64 * 0.5}))
        .collect();
    let db2: Vec<_> = (0..1000)
        .map(|i| json!({"offset": i * 8, "type": "REAL", "value": i as f64 * 0.5}))
        .collect();
    let server = PySnap7::start(&json!({"areas": [
        {"area": "DB", "index": 1, "size": 4000, "values": db1},
        {"area": "DB", "index": 2, "size": 8000, "values": db2},
    ]}));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("s7_read: 1,000 REALs per cycle, {SECONDS} s each, python-snap7 server on loopback");
    for scenario in ["contiguous", "scattered"] {
        let base = theirs(server.port, scenario);
        let (ours, requests) = rt.block_on(ours(server.port, scenario));
        println!(
            "{scenario:>10}: edge-agent {ours:>9.0} items/s ({requests} requests/cycle) | python-snap7 {base:>9.0} items/s | ratio {:.2}",
            ours / base
        );
    }
}
