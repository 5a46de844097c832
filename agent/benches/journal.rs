#![allow(clippy::print_stdout)] // a bench reports on stdout
//! Journal throughput on the real filesystem, each figure next to a baseline measured
//! in the same run (machines here are noisy):
//!
//! * appends/s with `fsync = "200ms"` and with `fsync = "always"` (group commit: one
//!   `fdatasync` per 64 appends), against plain `write` of the same framed bytes to
//!   one file with the same syncs;
//! * acknowledgements/s (cursor cell updates, segment deletion);
//! * start-up recovery of a large journal: time and peak RSS of `Journal::open`.
//!
//! `cargo bench -p edge-agent --bench journal` (1 GiB recovery; `--quick` or
//! `BENCH_QUICK=1`: 128 MiB). Files go to `JOURNAL_BENCH_DIR` or cargo's target
//! tmp dir: put them on the disk you want measured (a tmpfs makes fsync free).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_agent::delivery::journal::fs::StdFs;
use edge_agent::delivery::journal::{FsyncPolicy, Journal, JournalConfig, Lane};

const PAYLOAD: usize = 200;

fn config(dir: &Path, fsync: FsyncPolicy, max_disk: u64) -> JournalConfig {
    JournalConfig {
        dir: dir.to_path_buf(),
        segment_bytes: 16 << 20,
        max_disk,
        fsync,
    }
}

fn fresh(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("bench dir");
}

/// Appends `n` records as the alert sink does (append, then `maybe_sync`), then a
/// final sync; appends per second.
fn journal_appends(dir: &Path, fsync: FsyncPolicy, n: u64) -> f64 {
    fresh(dir);
    let (mut j, _) =
        Journal::open(config(dir, fsync, 1 << 40), Arc::new(StdFs)).expect("journal opens");
    let payload = [0x5au8; PAYLOAD];
    let t = Instant::now();
    for _ in 0..n {
        j.append(Lane::Alert, &payload).expect("append");
        j.maybe_sync().expect("sync");
    }
    j.sync().expect("sync");
    n as f64 / t.elapsed().as_secs_f64()
}

/// The same bytes written to one plain file with the same sync points.
fn plain_appends(dir: &Path, fsync: FsyncPolicy, n: u64) -> f64 {
    fresh(dir);
    let mut f = std::fs::File::create(dir.join("plain")).expect("plain file");
    let frame = [0x5au8; PAYLOAD + 16];
    let mut last = Instant::now();
    let mut unsynced = 0u32;
    let t = Instant::now();
    for _ in 0..n {
        f.write_all(&frame).expect("write");
        unsynced += 1;
        let due = match fsync {
            FsyncPolicy::Always => unsynced >= 64 || last.elapsed() >= Duration::from_millis(20),
            FsyncPolicy::Interval(d) => last.elapsed() >= d,
        };
        if due {
            f.sync_data().expect("sync");
            last = Instant::now();
            unsynced = 0;
        }
    }
    f.sync_data().expect("sync");
    n as f64 / t.elapsed().as_secs_f64()
}

/// Acknowledges every record of an `n`-record journal in order; acks per second.
fn acks(dir: &Path, n: u64) -> f64 {
    fresh(dir);
    let mut cfg = config(
        dir,
        FsyncPolicy::Interval(Duration::from_millis(200)),
        1 << 40,
    );
    cfg.segment_bytes = 1 << 20;
    let (mut j, _) = Journal::open(cfg, Arc::new(StdFs)).expect("journal opens");
    let payload = [0x5au8; PAYLOAD];
    for _ in 0..n {
        j.append(Lane::Alert, &payload).expect("append");
    }
    j.sync().expect("sync");
    let t = Instant::now();
    for seq in 1..=n {
        j.ack(Lane::Alert, seq);
    }
    j.sync().expect("sync");
    n as f64 / t.elapsed().as_secs_f64()
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Writes a journal of `bytes`, then times its recovery; (seconds, records, peak RSS
/// during recovery in KiB).
fn recovery(dir: &Path, bytes: u64) -> (f64, u64, u64) {
    fresh(dir);
    let cfg = config(dir, FsyncPolicy::Interval(Duration::from_secs(1)), 1 << 40);
    {
        let (mut j, _) = Journal::open(cfg.clone(), Arc::new(StdFs)).expect("journal opens");
        let payload = [0x5au8; 1000];
        let n = bytes / (payload.len() as u64 + 16);
        for _ in 0..n {
            j.append(Lane::Alert, &payload).expect("append");
        }
        j.sync().expect("sync");
    }
    // Reset the peak RSS, so that it covers recovery alone.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let t = Instant::now();
    let (j, report) = Journal::open(cfg, Arc::new(StdFs)).expect("journal recovers");
    let secs = t.elapsed().as_secs_f64();
    let rss = peak_rss_kib();
    drop(j);
    (secs, report.records, rss)
}

fn main() {
    let quick =
        std::env::args().any(|a| a == "--quick") || std::env::var_os("BENCH_QUICK").is_some();
    let root: PathBuf = std::env::var_os("JOURNAL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("journal-bench"));
    let dir = root.join("j");
    let (n_interval, n_always, n_acks) = if quick {
        (200_000, 20_000, 100_000)
    } else {
        (1_000_000, 100_000, 500_000)
    };
    let recovery_bytes: u64 = if quick { 128 << 20 } else { 1 << 30 };
    let interval = FsyncPolicy::Interval(Duration::from_millis(200));

    println!(
        "journal bench: {PAYLOAD}-byte records, files in {}",
        root.display()
    );
    let j_int = journal_appends(&dir, interval, n_interval);
    let p_int = plain_appends(&dir, interval, n_interval);
    println!(
        "  appends, fsync 200ms:   {:>10.0}/s   plain file {:>10.0}/s   ratio {:.3}",
        j_int,
        p_int,
        j_int / p_int
    );
    let j_al = journal_appends(&dir, FsyncPolicy::Always, n_always);
    let p_al = plain_appends(&dir, FsyncPolicy::Always, n_always);
    println!(
        "  appends, fsync always:  {:>10.0}/s   plain file {:>10.0}/s   ratio {:.3}",
        j_al,
        p_al,
        j_al / p_al
    );
    println!("  acknowledgements:       {:>10.0}/s", acks(&dir, n_acks));
    let (secs, records, rss) = recovery(&dir, recovery_bytes);
    println!(
        "  recovery of {} MiB ({records} records): {secs:.2} s, peak RSS {:.1} MiB",
        recovery_bytes >> 20,
        rss as f64 / 1024.0
    );
    let _ = std::fs::remove_dir_all(&root);
}
