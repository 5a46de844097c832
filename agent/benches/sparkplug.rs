#![allow(clippy::print_stdout)] // a bench reports on stdout
//! The Sparkplug B node's scan in the 1,000-tag budget scenario (4 drivers), each
//! figure next to a baseline measured in the same run (machines here are noisy):
//!
//! * one `scan` (`EdgeNode::changes`) with 10 % of the tags changed beyond the
//!   deadband, against the baseline of cloning the tag snapshot it reads (what the
//!   tag source hands it every scan);
//! * the births (`NBIRTH` + 4 `DBIRTH`s) and their bytes;
//! * replaying a 10,000-change outage as historical `DDATA`.
//!
//! `cargo bench -p edge-agent --bench sparkplug`

use std::time::{Duration, Instant};

use edge_agent::delivery::sparkplug::{EdgeNode, SparkplugConfig};
use edge_agent::delivery::wire::sparkplug::Scalar;
use edge_agent::ingest::latest::{TagStatus, TagValue};

const TAGS: usize = 1_000;
const DRIVERS: usize = 4;

fn tags() -> Vec<TagStatus> {
    (0..TAGS)
        .map(|i| TagStatus {
            name: format!("line{}.tag{i:04}", i % DRIVERS),
            value: Some(TagValue::Number(i as f64)),
            unit: Some("degC".into()),
            quality: "good".into(),
            reason: None,
            age_s: Some(0.1),
            value_age_s: Some(0.1),
            driver: format!("plc{}", i % DRIVERS),
            address: Some(format!("holding:{i}")),
            bad_samples: 0,
        })
        .collect()
}

fn config() -> SparkplugConfig {
    SparkplugConfig {
        group_id: "plant1".into(),
        edge_node_id: "gw1".into(),
        deadband: 0.5,
        deadbands: Default::default(),
        scan: Duration::from_secs(1),
        primary_host: None,
        history: 10_000,
        dcmd_writes: false,
    }
}

/// Mean time of `f` over `n` runs.
fn time(n: u32, mut f: impl FnMut(u32)) -> Duration {
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    start.elapsed() / n
}

fn main() {
    let mut snapshot = tags();
    let mut node = EdgeNode::new(config(), 0, &snapshot);
    let births = node.births(0, &snapshot, &[]);
    let birth_bytes: usize = births.iter().map(|m| m.1.len()).sum();
    let birth_time = time(20, |_| {
        std::hint::black_box(node.births(0, &snapshot, &[]));
    });
    let clone_time = time(200, |_| {
        std::hint::black_box(snapshot.clone());
    });
    let mut bytes = 0usize;
    let n = 200;
    let scan_time = time(n, |k| {
        // 10 % of the tags move by 1 (beyond the 0.5 deadband).
        for (i, t) in snapshot.iter_mut().enumerate() {
            if (i + k as usize) % 10 == 0 {
                t.value = Some(TagValue::Number(i as f64 + f64::from(k)));
            }
        }
        let msgs = node.changes(u64::from(k), &snapshot);
        bytes += msgs.iter().map(|m| m.1.len()).sum::<usize>();
    });
    let outage: Vec<(u64, usize, Option<Scalar>)> = (0..10_000)
        .map(|i| (i as u64, i % TAGS, Some(Scalar::F64(i as f64))))
        .collect();
    let mut hist_bytes = 0;
    let hist_time = time(20, |_| {
        let msgs = node.historical(&outage);
        hist_bytes = msgs.iter().map(|m| m.1.len()).sum::<usize>();
    });
    println!("sparkplug node, {TAGS} tags on {DRIVERS} drivers");
    println!(
        "  scan with 100 changes: {:>8.1} µs, {} bytes of DDATA (baseline: cloning the 1,000-tag snapshot {:.1} µs; ratio {:.2})",
        scan_time.as_secs_f64() * 1e6,
        bytes / n as usize,
        clone_time.as_secs_f64() * 1e6,
        scan_time.as_secs_f64() / clone_time.as_secs_f64()
    );
    println!(
        "  births (NBIRTH + {DRIVERS} DBIRTH): {:>8.1} µs, {birth_bytes} bytes",
        birth_time.as_secs_f64() * 1e6
    );
    println!(
        "  10,000-change outage as historical DDATA: {:>8.1} µs, {hist_bytes} bytes",
        hist_time.as_secs_f64() * 1e6
    );
}
