//! Labelled run-to-failure data for training fault models (`models/train/`).
//!
//! Simulates pumps with the same physics as the `sim` driver and computes window
//! features with the same code as the agent ([`edge_train`], with
//! the windows of `agent/default-config.toml`), so a model trained on this CSV sees
//! in training exactly what it sees on the gateway.
//!
//! ```text
//! cargo run --release -p edge-train --example run_to_failure -- \
//!     --runs 40 --hours 12 --seed 1 --out data.csv
//! ```
//!
//! One row per 10 s of simulated time per run (from the first minute on): the run,
//! the time, the ground truth (bearing-wear severity 0..1, whether the run ever
//! develops the fault) and the features named `<signal>.<feature>`, as a model
//! manifest names them.
//!
//! With `--raw-out FILE`, the raw vibration windows a raw-window model reads are
//! written too: at every row whose time is a multiple of `--raw-every` seconds
//! (default 60), the last `--raw-samples` (default 256) samples of the latest
//! completed vibration window, as little-endian `f32`. That is what the agent copies
//! into a raw-window model's input, so training and gateway see the same values.

use std::io::Write;

use edge_train::{COLUMNS, Run, STEP_S};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut runs = 40u64;
    let mut hours = 12.0f64;
    let mut seed = 1u64;
    let mut out: Option<String> = None;
    let mut raw_out: Option<String> = None;
    let mut raw_every = 60u64;
    let mut raw_samples = 256usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--runs" => runs = v.parse()?,
            "--hours" => hours = v.parse()?,
            "--seed" => seed = v.parse()?,
            "--out" => out = Some(v),
            "--raw-out" => raw_out = Some(v),
            "--raw-every" => raw_every = v.parse()?,
            "--raw-samples" => raw_samples = v.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if raw_every == 0 || raw_every % STEP_S != 0 {
        return Err(
            format!("--raw-every must be a positive multiple of {STEP_S} (seconds)").into(),
        );
    }
    let sink: Box<dyn Write> = match &out {
        Some(p) => Box::new(std::fs::File::create(p)?),
        None => Box::new(std::io::stdout()),
    };
    let mut w = std::io::BufWriter::new(sink);
    let mut raw = match &raw_out {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p)?)),
        None => None,
    };
    write!(w, "run,t_s,wear,faulty")?;
    for (s, f) in COLUMNS {
        write!(w, ",{s}.{f}")?;
    }
    writeln!(w)?;
    let end_s = (hours * 3600.0) as u64;
    for run in 0..runs {
        let mut r = Run::new(seed, run);
        while r.t_s() + STEP_S <= end_s {
            r.step();
            let t = r.t_s();
            if t < 60 {
                continue;
            }
            write!(w, "{run},{t},{:.6},{}", r.wear(), u8::from(r.faulty()))?;
            for v in r.row()? {
                write!(w, ",{v}")?;
            }
            writeln!(w)?;
            if let Some(raw) = raw.as_mut()
                && t % raw_every == 0
            {
                let x = r.raw_vibration(raw_samples).ok_or_else(|| {
                    format!("the vibration window holds fewer than --raw-samples {raw_samples}")
                })?;
                for v in x {
                    raw.write_all(&(*v as f32).to_le_bytes())?;
                }
            }
        }
    }
    w.flush()?;
    if let Some(raw) = raw.as_mut() {
        raw.flush()?;
    }
    Ok(())
}
