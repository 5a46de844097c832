//! Labelled run-to-failure data for training fault models (`models/train/`), with
//! the `sim` driver's physics and the agent's own windows and feature code
//! (`edge_models::Window` and `FeatureExtractor`), so a model sees in training
//! exactly what it sees on the gateway.
//!
//! The windows are those of the pump assets in `agent/default-config.toml` (a test
//! in `tests/tests/training_features.rs` holds the two together), and the zoo's
//! reference rows are regenerated from here and compared with what the models were
//! trained on.
//!
//! A run is fully determined by `(seed, run)`: training data uses seed 1, held-out
//! data seed 1000. Every other run develops bearing wear; the others stay healthy.

pub mod scenarios;

use edge_models::{
    Band, Feature, FeatureConfig, FeatureExtractor, FeatureValues, Frame, Window, WindowSpec,
};

use edge_driver_sim::physics::{Fault, FaultKind, Machine, MachineParams, Quantity};

/// The feature models' inputs: (signal, feature) in column order.
pub const COLUMNS: [(&str, &str); 10] = [
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

/// Seconds between two rows of a run.
pub const STEP_S: u64 = 10;

/// How a quantity is sampled and windowed: (sample rate, window, feature config).
pub fn window_config(q: Quantity) -> (f64, WindowSpec, FeatureConfig) {
    if q == Quantity::Vibration {
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
        )
    }
}

/// One quantity's samples, windows and latest features.
#[derive(Debug)]
struct Stream {
    q: Quantity,
    rate_hz: f64,
    k: u64,
    window: Window,
    frame: Frame,
    fx: FeatureExtractor,
    latest: FeatureValues,
    bands: Vec<String>,
}

impl Stream {
    fn new(q: Quantity) -> Stream {
        let (rate_hz, spec, cfg) = window_config(q);
        let cap = spec.capacity();
        Stream {
            q,
            rate_hz,
            k: 0,
            bands: cfg.bands.iter().map(|b| b.name.clone()).collect(),
            window: Window::new(spec),
            frame: Frame::with_capacity(cap),
            fx: FeatureExtractor::new(cfg, cap),
            latest: FeatureValues::default(),
        }
    }

    /// Feeds every sample up to (excluding) `t_s`.
    fn advance(&mut self, m: &Machine, t_s: f64) {
        loop {
            let t = self.k as f64 / self.rate_hz;
            if t >= t_s {
                break;
            }
            let x = m.value(self.q, self.k, t, self.rate_hz);
            if self.window.push((t * 1e9) as u64, x, &mut self.frame) {
                self.fx.compute(&self.frame, &mut self.latest);
            }
            self.k += 1;
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

/// One simulated run of one pump, advanced row by row.
#[derive(Debug)]
pub struct Run {
    machine: Machine,
    faulty: bool,
    streams: Vec<Stream>,
    t_s: u64,
}

impl Run {
    /// Run `run` of `seed`: machine parameters drawn inside the training ranges,
    /// bearing wear in every other run (starting after 1 to 4 h, lasting 4 to 8 h).
    pub fn new(seed: u64, run: u64) -> Run {
        let r = |i| unit(seed.wrapping_add(run), i);
        let faulty = run % 2 == 0;
        let params = MachineParams {
            rpm: 1440.0 + 80.0 * r(1),
            nominal_temp_c: 50.0 + 10.0 * r(2),
            nominal_current_a: 11.0 + 2.0 * r(3),
            nominal_pressure_bar: 5.5 + r(4),
            noise: 0.8 + 0.5 * r(5),
            load_steps: Vec::new(),
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
        Run {
            machine: Machine::new(params, faults, splitmix(seed ^ run)),
            faulty,
            streams: Quantity::ALL.iter().map(|q| Stream::new(*q)).collect(),
            t_s: 0,
        }
    }

    /// Whether the run develops the fault.
    pub fn faulty(&self) -> bool {
        self.faulty
    }

    /// Seconds simulated so far (a multiple of [`STEP_S`]).
    pub fn t_s(&self) -> u64 {
        self.t_s
    }

    /// Bearing-wear severity now (0 healthy .. 1 worn out).
    pub fn wear(&self) -> f64 {
        self.machine.wear(self.t_s as f64)
    }

    /// Simulates the next [`STEP_S`] seconds.
    pub fn step(&mut self) {
        self.t_s += STEP_S;
        let t = self.t_s as f64;
        for s in &mut self.streams {
            s.advance(&self.machine, t);
        }
    }

    /// Steps until `t_s` (a multiple of [`STEP_S`]).
    pub fn advance_to(&mut self, t_s: u64) {
        while self.t_s < t_s {
            self.step();
        }
    }

    fn stream(&self, q: Quantity) -> &Stream {
        self.streams
            .iter()
            .find(|s| s.q == q)
            .expect("a run has a stream for every quantity")
    }

    /// The latest value of `<signal>.<feature>` (e.g. `vibration.band:bearing`).
    pub fn feature(&self, signal: &str, feature: &str) -> Result<f64, String> {
        let q = Quantity::parse(signal).ok_or_else(|| format!("unknown signal {signal:?}"))?;
        let s = self.stream(q);
        let bands: Vec<&str> = s.bands.iter().map(String::as_str).collect();
        let f = Feature::parse(feature, &bands)?;
        Ok(s.latest.get(f))
    }

    /// The feature row of [`COLUMNS`].
    pub fn row(&self) -> Result<Vec<f64>, String> {
        COLUMNS.iter().map(|(s, f)| self.feature(s, f)).collect()
    }

    /// The last `n` samples of the latest completed vibration window: what the agent
    /// copies into a raw-window model's input. `None` while the window holds fewer.
    pub fn raw_vibration(&self, n: usize) -> Option<&[f64]> {
        let x = &self.stream(Quantity::Vibration).frame.x;
        x.len().checked_sub(n).map(|start| &x[start..])
    }
}
