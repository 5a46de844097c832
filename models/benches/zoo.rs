//! Per-inference latency and throughput of every zoo model (and the parity
//! fixtures), ours against onnxruntime on the same inputs in the same run.
//!
//! ```text
//! models/train/setup.sh
//! cargo bench -p edge-models --bench zoo
//! ```
//!
//! Ours: `Session::run` (tract plan + our ONNX-ML operators), including building
//! the input tensor and copying the outputs out. onnxruntime: `InferenceSession.run`
//! from Python with one intra-op thread (`models/train/bench_ort.py`), which
//! includes the Python binding's per-call cost (a few microseconds) — keep that in
//! mind for the smallest models. Figures are medians of repeated timed loops;
//! compare the ratios, not the absolute numbers (these machines are noisy).

#![allow(clippy::print_stdout)] // A bench binary reports on stdout.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use edge_models::onnx::OnnxModel;

fn models() -> Vec<(String, PathBuf, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(root.join("zoo")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let onnx = e.path().join(format!("{name}.onnx"));
            if onnx.exists() {
                v.push((name, onnx, e.path().join("reference.json")));
            }
        }
    }
    let parity = root.join("tests/fixtures/parity");
    if let Ok(rd) = std::fs::read_dir(&parity) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "onnx") {
                let stem = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                v.push((
                    format!("sklearn/{stem}"),
                    p.clone(),
                    p.with_extension("json"),
                ));
            }
        }
    }
    v.sort();
    // `ZOO_ONLY=name` restricts the run (for profiling one model).
    if let Ok(only) = std::env::var("ZOO_ONLY") {
        v.retain(|(n, _, _)| n.contains(&only));
    }
    v
}

/// Median seconds per call of `f` over `rounds` timed loops of `iters` calls.
fn time_it(mut f: impl FnMut(), iters: usize, rounds: usize) -> f64 {
    for _ in 0..iters.min(200) {
        f();
    }
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_secs_f64() / iters as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[rounds / 2]
}

fn iters_for(one: Duration) -> usize {
    // About 50 ms per timed loop.
    ((0.05 / one.as_secs_f64().max(1e-7)) as usize).clamp(5, 200_000)
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let list = models();
    let mut ours = Vec::new();
    for (name, path, reference) in &list {
        let bytes = std::fs::read(path).expect("model file");
        let model = OnnxModel::load(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let refdoc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(reference).expect("reference"))
                .expect("reference JSON");
        let xs: Vec<f32> = refdoc["inputs"]
            .as_array()
            .expect("inputs")
            .iter()
            .map(|v| v.as_f64().unwrap_or(0.0) as f32)
            .collect();
        let w = model.row_len();
        let one: Vec<f32> = xs[..w].to_vec();
        let batch: Vec<f32> = xs.iter().copied().cycle().take(64 * w).collect();
        let mut s = model.session().expect("session");
        let t = Instant::now();
        s.run(&one, 1).expect("run");
        let n1 = iters_for(t.elapsed());
        let b1 = time_it(|| drop(s.run(&one, 1).expect("run")), n1, 7);
        let n64 = iters_for(Duration::from_secs_f64(b1 * 64.0));
        let b64 = time_it(|| drop(s.run(&batch, 64).expect("run")), n64, 7);
        ours.push((name.clone(), path.clone(), b1, b64));
    }
    let py = root.join("train/.venv/bin/python");
    let ort: serde_json::Value = if py.exists() {
        let args: Vec<String> = list
            .iter()
            .flat_map(|(n, p, r)| [n.clone(), p.display().to_string(), r.display().to_string()])
            .collect();
        let out = Command::new(&py)
            .arg(root.join("train/bench_ort.py"))
            .args(&args)
            .output()
            .expect("run bench_ort.py");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("bench_ort.py JSON")
    } else {
        eprintln!(
            "models/train/.venv is missing (run models/train/setup.sh): no onnxruntime column"
        );
        serde_json::Value::Null
    };
    println!(
        "{:<26} {:>11} {:>11} {:>7} {:>12} {:>12} {:>7} {:>13}",
        "model",
        "ours b1 µs",
        "ort b1 µs",
        "ratio",
        "ours b64 µs",
        "ort b64 µs",
        "ratio",
        "ours rows/s"
    );
    for (name, _, b1, b64) in ours {
        let o1 = ort[&name]["b1"].as_f64();
        let o64 = ort[&name]["b64"].as_f64();
        let fmt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.1}", v * 1e6));
        let ratio = |a: f64, b: Option<f64>| b.map_or("-".into(), |b| format!("{:.2}", a / b));
        println!(
            "{:<26} {:>11.1} {:>11} {:>7} {:>12.1} {:>12} {:>7} {:>13.0}",
            name,
            b1 * 1e6,
            fmt(o1),
            ratio(b1, o1),
            b64 * 1e6,
            fmt(o64),
            ratio(b64, o64),
            64.0 / b64
        );
    }
}
