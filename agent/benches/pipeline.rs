#![allow(clippy::print_stdout)] // a bench reports on stdout
//! Pipeline throughput and steady-state allocations.
//!
//! `cargo bench -p edge-agent --bench pipeline`
//!
//! 100 signals (25 simulated pumps × temperature, current, pressure, vibration), every
//! detector kind, FFT bands on vibration. One thread pushes sample batches into the
//! ring, drains them and runs the processor, like the agent's pipeline task. Reported:
//! * samples/s through ring → windows → features → detectors (one core);
//! * the same loop without the processor (sample generation + ring only) as the
//!   in-run baseline, and the ratio between the two (machines here are noisy);
//! * heap allocations per sample in steady state, from a counting global allocator.
//!
//! "full" is what the pipeline task does per batch: record the latest values
//! (`edge-agent tags`), then windows, features and detectors; "full + UI" also
//! records the web UI's history, every detector evaluation and every window's
//! features (`[ui]` configured).

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use edge_agent::alert::trace::DetectorTrace;
use edge_agent::alert::{IdGenerator, RateLimits};
use edge_agent::ingest::history::{HistoryConfig, SignalHistory};
use edge_agent::ingest::latest::LatestValues;
use edge_agent::ingest::ring::{OverflowPolicy, SampleRing};
use edge_agent::pipeline::Processor;
use edge_agent::pipeline::feature_history::FeatureHistory;
use edge_driver_api::{Sample, SignalId, Timestamp};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

#[allow(unsafe_code)]
// SAFETY: delegates every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MACHINES: usize = 25;
const RATE_HZ: u64 = 100;
const BATCH: usize = 4096;

fn config() -> String {
    let mut s = String::from(
        "[agent]\nid = \"bench\"\n[alerts]\nconsole = false\n[[drivers]]\nname = \"sim\"\nkind = \"sim\"\n",
    );
    for m in 0..MACHINES {
        let _ = write!(s, "[[drivers.machines]]\nname = \"m{m}\"\n");
    }
    for m in 0..MACHINES {
        let _ = write!(
            s,
            r#"
[[assets]]
name = "m{m}"
[[assets.signals]]
signal = "m{m}.temperature"
window = {{ size = "10s", hop = "10s" }}
[[assets.signals]]
signal = "m{m}.current"
window = {{ size = "10s", hop = "5s" }}
[[assets.signals]]
signal = "m{m}.pressure"
window = {{ size = "10s", hop = "10s" }}
[[assets.signals]]
signal = "m{m}.vibration"
window = {{ size = 512, hop = 256 }}
bands = [{{ name = "low", lo_hz = 0.0, hi_hz = 20.0 }}, {{ name = "high", lo_hz = 20.0, hi_hz = 50.0 }}]
[[assets.detectors]]
name = "t"
kind = "threshold"
signal = "m{m}.temperature"
warning = 1000.0
critical = 2000.0
[[assets.detectors]]
name = "tf"
kind = "trend"
signal = "m{m}.temperature"
limit = 1000.0
horizon = "1h"
[[assets.detectors]]
name = "z"
kind = "zscore"
signal = "m{m}.current"
warning_z = 50.0
[[assets.detectors]]
name = "f"
kind = "flatline"
signal = "m{m}.pressure"
[[assets.detectors]]
name = "r"
kind = "rate_of_change"
signal = "m{m}.pressure"
warning = 1000.0
[[assets.detectors]]
name = "v"
kind = "threshold"
signal = "m{m}.vibration"
feature = "band:high"
warning = 1000.0
"#
        );
    }
    s
}

/// Generates samples round-robin over all signals at RATE_HZ each.
struct Gen {
    n_signals: u32,
    next: u64,
    noise: Vec<f64>,
}

impl Gen {
    fn fill(&mut self, out: &mut Vec<Sample>) {
        out.clear();
        for _ in 0..BATCH {
            let i = self.next;
            self.next += 1;
            let sig = (i % u64::from(self.n_signals)) as u32;
            let k = i / u64::from(self.n_signals);
            let mono_ns = k * (1_000_000_000 / RATE_HZ);
            let v = 50.0 + self.noise[(i as usize) & 4095];
            out.push(Sample::new_f64(
                Timestamp {
                    wall_ns: mono_ns as i64,
                    mono_ns,
                    synced: true,
                },
                SignalId(sig),
                v,
            ));
        }
    }
}

/// What a run does with each drained batch.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Nothing (generation and ring only): the baseline.
    Base,
    Full,
    FullWithHistory,
}

fn run(samples: u64, mode: Mode) -> (f64, u64, u64) {
    let process = mode != Mode::Base;
    let cfg = edge_agent::config::parse("bench.toml", &config()).expect("bench config is valid");
    let n_signals = cfg.registry.len() as u32;
    assert_eq!(n_signals, 100);
    let mut proc = Processor::new(
        cfg.agent.id.clone(),
        &cfg.registry,
        &cfg.assets,
        &cfg.models,
        RateLimits::default(),
        IdGenerator::with_seed(1),
    );
    let ring = SampleRing::new(65_536, OverflowPolicy::DropOldest);
    // What the pipeline task records per batch for `edge-agent tags`.
    let latest = LatestValues::new(&cfg.registry, &Default::default());
    let history = (mode == Mode::FullWithHistory)
        .then(|| SignalHistory::new(HistoryConfig::default(), cfg.registry.len()));
    if mode == Mode::FullWithHistory {
        // The UI's evidence too: every evaluation and every window's features.
        proc.set_trace(Arc::new(DetectorTrace::new(HistoryConfig::default())));
        proc.set_feature_history(Arc::new(FeatureHistory::new(HistoryConfig::default())));
    }
    let mut gen_ = Gen {
        n_signals,
        next: 0,
        noise: (0..4096)
            .map(|i| ((i * 7919 % 4096) as f64 / 4096.0 - 0.5) * 2.0)
            .collect(),
    };
    let mut batch = Vec::with_capacity(BATCH);
    let mut drained = Vec::with_capacity(BATCH);
    let mut alerts = Vec::with_capacity(64);
    let mut sink = 0.0f64;
    let mut step = |proc: &mut Processor, alerts: &mut Vec<_>| {
        gen_.fill(&mut batch);
        ring.push_batch(&batch);
        ring.drain_into(&mut drained, BATCH);
        if process {
            latest.record(&drained);
            if let Some(h) = &history {
                h.record(&drained);
            }
            proc.ingest_batch(&drained, alerts);
            alerts.clear();
        } else {
            sink += drained.iter().map(|s| s.value.as_f64()).sum::<f64>();
        }
    };
    // Warm up: fill every window, plan every FFT, grow every buffer once.
    for _ in 0..(2_000_000 / BATCH as u64) {
        step(&mut proc, &mut alerts);
    }
    let a0 = ALLOCS.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let steps = samples / BATCH as u64;
    for _ in 0..steps {
        step(&mut proc, &mut alerts);
    }
    let secs = t0.elapsed().as_secs_f64();
    let allocs = ALLOCS.load(Ordering::Relaxed) - a0;
    std::hint::black_box(sink);
    let n = steps * BATCH as u64;
    let windows = proc.counters().windows.load(Ordering::Relaxed);
    (n as f64 / secs, allocs, windows.max(u64::from(process)))
}

fn main() {
    // `cargo bench` passes --bench; accept and ignore libtest-style arguments.
    let quick =
        std::env::args().any(|a| a == "--quick") || std::env::var_os("BENCH_QUICK").is_some();
    let samples: u64 = if quick { 4_000_000 } else { 40_000_000 };
    let (base, _, _) = run(samples, Mode::Base);
    let (full, allocs, windows) = run(samples, Mode::Full);
    let (full_ui, allocs_ui, _) = run(samples, Mode::FullWithHistory);
    let (base2, _, _) = run(samples, Mode::Base);
    let baseline = (base + base2) / 2.0;
    println!("pipeline bench: 100 signals, {samples} samples per run, batch {BATCH}, one thread");
    println!(
        "  machine: {} cores, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::env::consts::ARCH
    );
    println!(
        "  baseline (generate + ring only):        {:>8.2} M samples/s",
        baseline / 1e6
    );
    println!(
        "  full (ring → windows → features → det): {:>8.2} M samples/s",
        full / 1e6
    );
    println!(
        "  full / baseline:                        {:>8.3}",
        full / baseline
    );
    println!(
        "  full + UI history:                      {:>8.2} M samples/s ({:.3} of full, {allocs_ui} allocations)",
        full_ui / 1e6,
        full_ui / full
    );
    println!("  windows completed:                      {windows}");
    println!(
        "  heap allocations in steady state:       {allocs} ({:.6} per sample)",
        allocs as f64 / samples as f64
    );
}
