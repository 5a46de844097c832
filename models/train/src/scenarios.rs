//! The detection-quality benchmark (`models/eval/`): labelled scenarios in the
//! format `edge-agent eval` reads (`signals.csv` + `labels.toml` per directory),
//! generated from the `sim` driver's physics, fully determined by a seed.
//!
//! One pump (`pump.temperature`, `pump.current`, `pump.pressure`, a row every
//! 10 s) per scenario:
//!
//! | kind | n | what happens | `failure_at` |
//! |---|---|---|---|
//! | `bearing_wear` | 20 | wear from 1–8 h, accelerating over 2–10 h (+40 degC at full wear) | the bearing reaches 85 degC (its trip temperature; sensor noise aside) |
//! | `leak` | 10 | pressure decays by 1.5–3 bar over 1–6 h | 95 % of the loss |
//! | `sensor_stuck` | 6 | the temperature or pressure sensor freezes | 1 h after (the deadline to flag it) |
//! | `sensor_drift` | 6 | the temperature sensor drifts up 2–6 degC/h | when it reads 15 degC high |
//! | healthy | 30 | 17 h of normal operation | — |
//!
//! Every run has the operating life a plant has: load steps (0.5–1.1 of nominal
//! every 1–4 h), stop/start cycles (15–90 min stopped), a daily ambient swing of
//! 3–6 degC, machines of different nominal values and noise. Healthy runs add
//! nuisances that are not faults: noise bursts, current spikes from a bad
//! contact, data dropouts of 1–10 min, agent restarts. The ≥ 500 healthy hours
//! measure false alarms; the faults' onsets are labelled so that their run-up
//! counts as healthy time too.

use std::fmt::Write as _;
use std::path::Path;

use edge_driver_sim::physics::{Fault, FaultKind, LoadStep, Machine, MachineParams, Quantity};

/// A worn bearing fails when it reaches this temperature (the demo's critical
/// limit): its trip point, whatever its machine's nominal temperature and load.
pub const TRIP_C: f64 = 85.0;

/// Seconds between rows.
pub const ROW_S: u64 = 10;
/// The columns after `time`.
pub const SIGNALS: [(&str, Quantity); 3] = [
    ("pump.temperature", Quantity::Temperature),
    ("pump.current", Quantity::Current),
    ("pump.pressure", Quantity::Pressure),
];

/// A deterministic stream of uniform numbers in [0, 1) (SplitMix64).
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> f64 {
        let z = crate::splitmix(self.0);
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next()
    }

    fn count(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next() * f64::from(hi - lo + 1)) as u32
    }
}

/// A sensor fault, applied to what the sensor reports (not to the machine).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Sensor {
    /// Reports the value it had at `at_s` from then on.
    Stuck { q: Quantity, at_s: f64 },
    /// Reads `rate` degC/h too high from `at_s` on.
    Drift { at_s: f64, rate_per_h: f64 },
}

/// One scenario, before it is written.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub kind: &'static str,
    pub hours: f64,
    machine_params: MachineParams,
    faults: Vec<Fault>,
    sensor: Option<Sensor>,
    ambient_c: f64,
    ambient_phase: f64,
    dropouts: Vec<(f64, f64)>,
    pub restarts_s: Vec<f64>,
    pub onset_s: Option<f64>,
    pub failure_s: Option<f64>,
    /// Seeds the machine's noise.
    machine_seed: u64,
}

/// Load steps over `[0, until_s)`: changes every 1–4 h and 0–2 stops.
fn operating_life(d: &mut Draw, until_s: f64, stops: u32) -> Vec<LoadStep> {
    let mut steps = Vec::new();
    let mut t = d.range(0.5, 3.0) * 3600.0;
    while t < until_s {
        steps.push(LoadStep {
            at_s: t,
            load: d.range(0.5, 1.1),
        });
        t += d.range(1.0, 4.0) * 3600.0;
    }
    for _ in 0..stops {
        let at = d.range(0.1, 0.9) * until_s;
        let len = d.range(0.25, 1.5) * 3600.0;
        let resume = steps
            .iter()
            .take_while(|s| s.at_s <= at + len)
            .last()
            .map_or(1.0, |s| s.load);
        steps.retain(|s| s.at_s < at || s.at_s > at + len);
        steps.push(LoadStep {
            at_s: at,
            load: 0.0,
        });
        steps.push(LoadStep {
            at_s: at + len,
            load: resume,
        });
    }
    steps.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    steps
}

fn params(d: &mut Draw, load_steps: Vec<LoadStep>) -> MachineParams {
    MachineParams {
        rpm: d.range(1400.0, 1550.0),
        nominal_temp_c: d.range(48.0, 60.0),
        nominal_current_a: d.range(10.0, 14.0),
        nominal_pressure_bar: d.range(5.0, 7.0),
        noise: d.range(0.5, 2.0),
        load_steps,
    }
}

impl Scenario {
    fn base(d: &mut Draw, name: String, kind: &'static str, hours: f64, life_until_s: f64) -> Self {
        let stops = d.count(0, 2);
        let steps = operating_life(d, life_until_s, stops);
        Scenario {
            name,
            kind,
            hours,
            machine_params: params(d, steps),
            faults: Vec::new(),
            sensor: None,
            ambient_c: d.range(3.0, 6.0),
            ambient_phase: d.range(0.0, 86_400.0),
            dropouts: Vec::new(),
            restarts_s: Vec::new(),
            onset_s: None,
            failure_s: None,
            machine_seed: 0,
        }
    }

    fn bearing_wear(d: &mut Draw, i: usize) -> Self {
        let onset = d.range(1.0, 8.0) * 3600.0;
        let duration = d.range(2.0, 10.0) * 3600.0;
        let mut s = Self::base(
            d,
            format!("bearing_wear_{i:02}"),
            "bearing_wear",
            0.0,
            onset,
        );
        s.faults.push(Fault {
            kind: FaultKind::BearingWear,
            start_s: onset,
            duration_s: duration,
        });
        let failure = s.overheats_at(onset, onset + duration);
        s.hours = (failure + 900.0) / 3600.0;
        (s.onset_s, s.failure_s) = (Some(onset), Some(failure));
        s
    }

    /// When the bearing (sensor noise aside) first reaches [`TRIP_C`] between
    /// `from` and `to` (severity grows as (elapsed/duration)²): its failure. `to`
    /// when it never does (full wear).
    fn overheats_at(&self, from: f64, to: f64) -> f64 {
        let m = Machine::new(self.machine_params.clone(), self.faults.clone(), 0);
        let ambient = |t: f64| {
            self.ambient_c
                * (2.0 * std::f64::consts::PI * (t + self.ambient_phase) / 86_400.0).sin()
        };
        let steps = ((to - from) / ROW_S as f64).ceil() as u64;
        (0..=steps)
            .map(|k| from + (k * ROW_S) as f64)
            .find(|&t| m.temperature_c(t) + ambient(t) >= TRIP_C)
            .unwrap_or(to)
    }

    fn leak(d: &mut Draw, i: usize) -> Self {
        let onset = d.range(1.0, 8.0) * 3600.0;
        let duration = d.range(1.0, 6.0) * 3600.0;
        // Severity 1 − exp(−3e/duration) reaches 95 % at e = duration (ln 20 ≈ 3).
        let failure = onset + duration;
        let mut s = Self::base(
            d,
            format!("leak_{i:02}"),
            "leak",
            (failure + 900.0) / 3600.0,
            onset,
        );
        s.faults.push(Fault {
            kind: FaultKind::Leak {
                magnitude: d.range(1.5, 3.0),
            },
            start_s: onset,
            duration_s: duration,
        });
        (s.onset_s, s.failure_s) = (Some(onset), Some(failure));
        s
    }

    fn stuck(d: &mut Draw, i: usize) -> Self {
        let at = d.range(2.0, 6.0) * 3600.0;
        let deadline = at + 3600.0;
        let mut s = Self::base(
            d,
            format!("sensor_stuck_{i:02}"),
            "sensor_stuck",
            (deadline + 600.0) / 3600.0,
            at,
        );
        let q = if i % 2 == 0 {
            Quantity::Temperature
        } else {
            Quantity::Pressure
        };
        s.sensor = Some(Sensor::Stuck { q, at_s: at });
        (s.onset_s, s.failure_s) = (Some(at), Some(deadline));
        s
    }

    fn drift(d: &mut Draw, i: usize) -> Self {
        let at = d.range(2.0, 6.0) * 3600.0;
        let rate = d.range(2.0, 6.0);
        let failure = at + 15.0 / rate * 3600.0;
        let mut s = Self::base(
            d,
            format!("sensor_drift_{i:02}"),
            "sensor_drift",
            (failure + 600.0) / 3600.0,
            at,
        );
        s.sensor = Some(Sensor::Drift {
            at_s: at,
            rate_per_h: rate,
        });
        (s.onset_s, s.failure_s) = (Some(at), Some(failure));
        s
    }

    fn healthy(d: &mut Draw, i: usize) -> Self {
        let hours = 17.0;
        let end = hours * 3600.0;
        let mut s = Self::base(d, format!("healthy_{i:02}"), "healthy", hours, end);
        for _ in 0..d.count(0, 2) {
            let q = if d.next() < 0.5 {
                Quantity::Temperature
            } else {
                Quantity::Current
            };
            s.faults.push(Fault {
                kind: FaultKind::NoiseBurst {
                    quantity: q,
                    factor: d.range(3.0, 6.0),
                },
                start_s: d.range(0.05, 0.95) * end,
                duration_s: d.range(600.0, 1800.0),
            });
        }
        if d.next() < 0.3 {
            s.faults.push(Fault {
                kind: FaultKind::Spikes {
                    quantity: Quantity::Current,
                    magnitude: d.range(3.0, 6.0),
                    rate_per_hour: d.range(2.0, 10.0),
                },
                start_s: 0.0,
                duration_s: f64::INFINITY,
            });
        }
        for _ in 0..d.count(1, 3) {
            s.dropouts
                .push((d.range(0.05, 0.95) * end, d.range(60.0, 600.0)));
        }
        for _ in 0..d.count(0, 2) {
            s.restarts_s
                .push((d.range(0.1, 0.9) * end / 10.0).round() * 10.0);
        }
        s.restarts_s.sort_by(f64::total_cmp);
        s
    }

    /// What the sensors report at row `k` (time `t`), `None` during a dropout.
    fn row(&self, m: &Machine, k: u64, t: f64) -> Option<[f64; 3]> {
        if self.dropouts.iter().any(|&(a, len)| t >= a && t < a + len) {
            return None;
        }
        let rate = 1.0 / ROW_S as f64;
        let read = |q: Quantity, k: u64, t: f64| {
            let mut v = m.value(q, k, t, rate);
            if q == Quantity::Temperature {
                v += self.ambient_c
                    * (2.0 * std::f64::consts::PI * (t + self.ambient_phase) / 86_400.0).sin();
            }
            v
        };
        let mut out = [0.0; 3];
        for (slot, (_, q)) in out.iter_mut().zip(SIGNALS) {
            *slot = match self.sensor {
                Some(Sensor::Stuck { q: sq, at_s }) if sq == q && t >= at_s => {
                    let k0 = (at_s / ROW_S as f64).ceil() as u64;
                    read(q, k0, k0 as f64 * ROW_S as f64)
                }
                Some(Sensor::Drift { at_s, rate_per_h })
                    if q == Quantity::Temperature && t >= at_s =>
                {
                    read(q, k, t) + rate_per_h * (t - at_s) / 3600.0
                }
                _ => read(q, k, t),
            };
        }
        Some(out)
    }

    fn csv(&self) -> String {
        let m = Machine::new(
            self.machine_params.clone(),
            self.faults.clone(),
            self.machine_seed,
        );
        let rows = (self.hours * 3600.0 / ROW_S as f64) as u64;
        let mut out = String::with_capacity(rows as usize * 32);
        out.push_str("time");
        for (name, _) in SIGNALS {
            out.push(',');
            out.push_str(name);
        }
        out.push('\n');
        for k in 0..rows {
            let t = (k * ROW_S) as f64;
            let _ = write!(out, "{}", k * ROW_S);
            match self.row(&m, k, t) {
                Some(v) => {
                    let _ = writeln!(out, ",{:.3},{:.3},{:.3}", v[0], v[1], v[2]);
                }
                None => out.push_str(",,,\n"),
            }
        }
        out
    }

    fn labels(&self) -> String {
        let mut out = String::new();
        match (self.onset_s, self.failure_s) {
            (Some(o), Some(f)) => {
                let _ = writeln!(
                    out,
                    "failure_at = {f:.0}\nonset_at = {o:.0}\nasset = \"pump\"\nkind = \"{}\"",
                    self.kind
                );
            }
            _ => out.push_str("healthy = true\n"),
        }
        if !self.restarts_s.is_empty() {
            let list: Vec<String> = self.restarts_s.iter().map(|r| format!("{r:.0}")).collect();
            let _ = writeln!(out, "restarts = [{}]", list.join(", "));
        }
        out
    }

    /// Writes `<dir>/<name>/signals.csv` and `labels.toml`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let d = dir.join(&self.name);
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join("signals.csv"), self.csv())?;
        std::fs::write(d.join("labels.toml"), self.labels())
    }
}

/// Every scenario of the benchmark for `seed`, in a fixed order.
pub fn benchmark(seed: u64) -> Vec<Scenario> {
    let mut d = Draw(seed);
    let mut out = Vec::new();
    out.extend((0..20).map(|i| Scenario::bearing_wear(&mut d, i)));
    out.extend((0..10).map(|i| Scenario::leak(&mut d, i)));
    out.extend((0..6).map(|i| Scenario::stuck(&mut d, i)));
    out.extend((0..6).map(|i| Scenario::drift(&mut d, i)));
    out.extend((0..30).map(|i| Scenario::healthy(&mut d, i)));
    for (i, s) in out.iter_mut().enumerate() {
        s.machine_seed = seed.wrapping_mul(1_000).wrapping_add(i as u64);
    }
    out
}

/// The CI subset: one in six of every kind (12 scenarios).
pub fn subset(seed: u64) -> Vec<Scenario> {
    benchmark(seed).into_iter().step_by(6).collect()
}

/// Writes `scenarios` under `dir`.
pub fn write_all(scenarios: &[Scenario], dir: &Path) -> std::io::Result<()> {
    scenarios.iter().try_for_each(|s| s.write(dir))
}
