//! Labelled run-to-failure data for training fault models (`models/train/`).
//!
//! Simulates pumps with the same physics as the `sim` driver and computes window
//! features with the same code as the agent (`edge_models::Window` and
//! `FeatureExtractor`, with the windows of `agent/default-config.toml`), so a
//! model trained on this CSV sees in training exactly what it sees on the gateway.
//!
//! ```text
//! cargo run --release -p edge-driver-sim --example run_to_failure -- \
//!     --runs 40 --hours 12 --seed 1 --out data.csv
//! ```
//!
//! One row per 10 s of simulated time per run: the run, the time, the ground truth
//! (bearing-wear severity 0..1, whether the run ever develops the fault) and the
//! features named `<signal>.<feature>`, as a model manifest names them.
//!
//! With `--raw-out FILE`, the raw vibration windows a raw-window model reads are
//! written too: at every row whose time is a multiple of `--raw-every` seconds
//! (default 60), the last `--raw-samples` (default 256) samples of the latest
//! completed vibration window, as little-endian `f32`. That is what the agent copies
//! into a raw-window model's input, so training and gateway see the same values.

use std::io::Write;

use edge_driver_sim::physics::{Fault, FaultKind, Machine, MachineParams, Quantity};
use edge_models::{
    Band, Feature, FeatureConfig, FeatureExtractor, FeatureValues, Frame, Window, WindowSpec,
};

/// The model inputs: (signal, feature) in column order.
const COLUMNS: [(&str, &str); 10] = [
    ("vibration", "rms"),
    ("vibration", "kurtosis"),
    ("vibration", "crest"),
    ("vibration", "band:shaft"),
    ("vibration", "band:bearing"),
    ("temperature", "mean"),
    ("temperature", "slope"),
    ("current", "mean"),
    ("current", "std"),
    ("pressure", "mean"),
];

struct Stream {
    q: Quantity,
    rate_hz: f64,
    window: Window,
    frame: Frame,
    fx: FeatureExtractor,
    latest: FeatureValues,
    bands: Vec<&'static str>,
}

impl Stream {
    fn new(q: Quantity) -> Stream {
        let (rate_hz, spec, cfg, bands) = if q == Quantity::Vibration {
            let bands = vec![
                Band {
                    name: "shaft".into(),
                    lo_hz: 0.0,
                    hi_hz: 60.0,
                },
                Band {
                    name: "bearing".into(),
                    lo_hz: 60.0,
                    hi_hz: 128.0,
                },
            ];
            (
                256.0,
                WindowSpec::Count {
                    size: 512,
                    hop: 512,
                },
                FeatureConfig {
                    bands,
                    ..FeatureConfig::default()
                },
                vec!["shaft", "bearing"],
            )
        } else {
            (
                1.0,
                WindowSpec::Time {
                    size_ns: 60_000_000_000,
                    hop_ns: 10_000_000_000,
                    max_samples: 256,
                },
                FeatureConfig::default(),
                vec![],
            )
        };
        let cap = spec.capacity();
        Stream {
            q,
            rate_hz,
            window: Window::new(spec),
            frame: Frame::with_capacity(cap),
            fx: FeatureExtractor::new(cfg, cap),
            latest: FeatureValues::default(),
            bands,
        }
    }

    /// Feeds every sample up to (excluding) `t_s`.
    fn advance(&mut self, m: &Machine, k: &mut u64, t_s: f64) {
        loop {
            let t = *k as f64 / self.rate_hz;
            if t >= t_s {
                break;
            }
            let x = m.value(self.q, *k, t, self.rate_hz);
            if self.window.push((t * 1e9) as u64, x, &mut self.frame) {
                self.fx.compute(&self.frame, &mut self.latest);
            }
            *k += 1;
        }
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(seed: u64, i: u64) -> f64 {
    (splitmix(seed ^ i.wrapping_mul(0xA24B_AED4_963E_E407)) >> 11) as f64 / (1u64 << 53) as f64
}

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
    let sink: Box<dyn Write> = match &out {
        Some(p) => Box::new(std::fs::File::create(p)?),
        None => Box::new(std::io::stdout()),
    };
    let mut w = std::io::BufWriter::new(sink);
    let mut raw = match &raw_out {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p)?)),
        None => None,
    };
    if raw_every == 0 || raw_every % 10 != 0 {
        return Err("--raw-every must be a positive multiple of 10 (seconds)".into());
    }
    write!(w, "run,t_s,wear,faulty")?;
    for (s, f) in COLUMNS {
        write!(w, ",{s}.{f}")?;
    }
    writeln!(w)?;
    for run in 0..runs {
        let r = |i| unit(seed.wrapping_add(run), i);
        // Every other run develops bearing wear; the others stay healthy.
        let faulty = run % 2 == 0;
        let params = MachineParams {
            rpm: 1440.0 + 80.0 * r(1),
            nominal_temp_c: 50.0 + 10.0 * r(2),
            nominal_current_a: 11.0 + 2.0 * r(3),
            nominal_pressure_bar: 5.5 + r(4),
            noise: 0.8 + 0.5 * r(5),
        };
        let faults = if faulty {
            vec![Fault {
                kind: FaultKind::BearingWear,
                start_s: 3600.0 * (1.0 + 3.0 * r(6)),
                duration_s: 3600.0 * (4.0 + 4.0 * r(7)),
            }]
        } else {
            vec![]
        };
        let m = Machine::new(params, faults, splitmix(seed ^ run));
        let mut streams: Vec<(Stream, u64)> =
            Quantity::ALL.iter().map(|q| (Stream::new(*q), 0)).collect();
        let mut t = 10.0;
        let mut step = 1u64;
        while t <= hours * 3600.0 {
            for (s, k) in streams.iter_mut() {
                s.advance(&m, k, t);
            }
            if t >= 60.0 {
                write!(w, "{run},{t},{:.6},{}", m.wear(t), u8::from(faulty))?;
                for (sig, feat) in COLUMNS {
                    let q = Quantity::parse(sig).ok_or("unknown quantity")?;
                    let s = &streams.iter().find(|(s, _)| s.q == q).ok_or("stream")?.0;
                    let f = Feature::parse(feat, &s.bands)?;
                    write!(w, ",{}", s.latest.get(f))?;
                }
                writeln!(w)?;
                if let Some(raw) = raw.as_mut()
                    && (step * 10) % raw_every == 0
                {
                    let s = &streams
                        .iter()
                        .find(|(s, _)| s.q == Quantity::Vibration)
                        .ok_or("stream")?
                        .0;
                    let x = &s.frame.x;
                    if x.len() < raw_samples {
                        return Err(format!(
                            "the vibration window holds {} samples, fewer than --raw-samples {raw_samples}",
                            x.len()
                        )
                        .into());
                    }
                    for v in &x[x.len() - raw_samples..] {
                        raw.write_all(&(*v as f32).to_le_bytes())?;
                    }
                }
            }
            t += 10.0;
            step += 1;
        }
    }
    w.flush()?;
    if let Some(raw) = raw.as_mut() {
        raw.flush()?;
    }
    Ok(())
}
