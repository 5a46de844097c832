//! The simulated machines: deterministic signal models with ground-truth faults.
//!
//! Every value is a pure function of `(seed, machine, signal, sample index)`: noise
//! comes from a counter-based generator (SplitMix64 of the index), so a run is
//! reproducible whatever the batching, the speed, or driver restarts.
//!
//! A machine is a motor-driven pump:
//! * `temperature` (degC): ambient + load heating + a ±2 degC daily cycle; bearing
//!   wear adds up to +40 degC following the wear severity.
//! * `vibration` (m/s2, raw waveform): 1×, 2×, 3× shaft-speed harmonics and broadband
//!   noise; bearing wear adds an amplitude-modulated outer-race defect tone at
//!   3.57× shaft speed and high-frequency noise, both growing with severity.
//! * `current` (A): nominal + slow load variation; wear adds friction current.
//! * `pressure` (bar): nominal; a leak decays it exponentially towards `nominal − magnitude`.
//!
//! Bearing-wear severity grows as the square of elapsed fault time over its duration
//! (slow start, accelerating), the usual shape of run-to-failure data.
//!
//! Operating regime: the machine runs at load 1 (nominal) unless
//! [`MachineParams::load_steps`] change it. Load scales the current, the pressure
//! and the vibration; temperature follows the load's heating with a first-order lag
//! ([`THERMAL_TAU_S`]); load 0 is a stopped machine (no current, no vibration, the
//! pressure of a stopped pump, cooling towards ambient). These are normal operation,
//! not faults: detectors must not alarm on them.

use std::f64::consts::PI;

/// One of a machine's physical signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Quantity {
    Temperature,
    Vibration,
    Current,
    Pressure,
}

impl Quantity {
    pub const ALL: [Quantity; 4] = [
        Quantity::Temperature,
        Quantity::Vibration,
        Quantity::Current,
        Quantity::Pressure,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Quantity::Temperature => "temperature",
            Quantity::Vibration => "vibration",
            Quantity::Current => "current",
            Quantity::Pressure => "pressure",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Quantity::Temperature => "degC",
            Quantity::Vibration => "m/s2",
            Quantity::Current => "A",
            Quantity::Pressure => "bar",
        }
    }

    pub fn parse(s: &str) -> Option<Quantity> {
        Quantity::ALL.into_iter().find(|q| q.name() == s)
    }

    fn salt(self) -> u64 {
        match self {
            Quantity::Temperature => 0x7465_6d70,
            Quantity::Vibration => 0x7669_6272,
            Quantity::Current => 0x6375_7272,
            Quantity::Pressure => 0x7072_6573,
        }
    }
}

/// A fault scenario and its parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FaultKind {
    /// Growing high-band vibration, temperature drift and friction current.
    BearingWear,
    /// Pressure decays by `magnitude` bar with time constant duration/3.
    Leak { magnitude: f64 },
    /// The signal freezes at its value when the fault starts.
    Stuck { quantity: Quantity },
    /// Random spikes of ±`magnitude` at `rate_per_hour` on average.
    Spikes {
        quantity: Quantity,
        magnitude: f64,
        rate_per_hour: f64,
    },
    /// Noise multiplied by `factor`.
    NoiseBurst { quantity: Quantity, factor: f64 },
    /// A constant offset of `magnitude`.
    Step { quantity: Quantity, magnitude: f64 },
    /// The "device link" fails: the driver returns transient errors while active.
    LinkLoss,
}

impl FaultKind {
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::BearingWear => "bearing_wear",
            FaultKind::Leak { .. } => "leak",
            FaultKind::Stuck { .. } => "stuck",
            FaultKind::Spikes { .. } => "spikes",
            FaultKind::NoiseBurst { .. } => "noise_burst",
            FaultKind::Step { .. } => "step",
            FaultKind::LinkLoss => "link_loss",
        }
    }
}

/// A fault active from `start_s` for `duration_s` of simulated time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub start_s: f64,
    /// For bearing wear and leaks: the time to full severity (the fault then stays).
    /// For the others: how long the fault lasts (infinite if unset).
    pub duration_s: f64,
}

impl Fault {
    /// Ground truth: 0 when absent, up to 1 at full severity.
    pub fn severity(&self, t: f64) -> f64 {
        if t < self.start_s {
            return 0.0;
        }
        let elapsed = t - self.start_s;
        match self.kind {
            FaultKind::BearingWear => {
                let w = (elapsed / self.duration_s.max(1e-9)).min(1.0);
                w * w
            }
            FaultKind::Leak { .. } => 1.0 - (-elapsed / (self.duration_s / 3.0).max(1e-9)).exp(),
            _ => {
                if elapsed < self.duration_s {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }

    fn active(&self, t: f64) -> bool {
        self.severity(t) > 0.0
    }
}

/// Time constant of the temperature's response to the load (seconds).
pub const THERMAL_TAU_S: f64 = 900.0;
/// Temperature rise from load heating at nominal load (degC above ambient).
const LOAD_HEATING_C: f64 = 20.0;

/// From `at_s` on, the machine runs at `load` (1 = nominal, 0 = stopped).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadStep {
    pub at_s: f64,
    pub load: f64,
}

/// Static parameters of a simulated machine.
#[derive(Clone, Debug, PartialEq)]
pub struct MachineParams {
    pub rpm: f64,
    /// Temperature at nominal load, settled.
    pub nominal_temp_c: f64,
    pub nominal_current_a: f64,
    pub nominal_pressure_bar: f64,
    /// Multiplies every noise level.
    pub noise: f64,
    /// Changes of operating load, in time order (none: nominal load throughout).
    pub load_steps: Vec<LoadStep>,
}

impl Default for MachineParams {
    fn default() -> Self {
        MachineParams {
            rpm: 1480.0,
            nominal_temp_c: 55.0,
            nominal_current_a: 12.0,
            nominal_pressure_bar: 6.0,
            noise: 1.0,
            load_steps: Vec::new(),
        }
    }
}

/// A deterministic machine model.
#[derive(Clone, Debug)]
pub struct Machine {
    pub params: MachineParams,
    pub faults: Vec<Fault>,
    seed: u64,
}

#[inline]
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in (0, 1).
#[inline]
fn uniform(key: u64) -> f64 {
    ((splitmix64(key) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// Standard normal from two hashed uniforms (Box–Muller).
#[inline]
fn normal(key: u64) -> f64 {
    let u1 = uniform(key);
    let u2 = uniform(key ^ 0xA5A5_A5A5_A5A5_A5A5);
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

impl Machine {
    /// `seed` should differ per machine (the driver mixes in the machine index).
    pub fn new(params: MachineParams, faults: Vec<Fault>, seed: u64) -> Self {
        Machine {
            params,
            faults,
            seed: splitmix64(seed),
        }
    }

    #[inline]
    fn key(&self, q: Quantity, k: u64, stream: u64) -> u64 {
        splitmix64(self.seed ^ q.salt().wrapping_mul(0x1000_0000_01B3) ^ stream.rotate_left(47))
            .wrapping_add(k.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// The operating load at `t` (1 = nominal, 0 = stopped).
    pub fn load(&self, t: f64) -> f64 {
        self.params
            .load_steps
            .iter()
            .take_while(|s| s.at_s <= t)
            .last()
            .map_or(1.0, |s| s.load)
    }

    /// The load's heating at `t` as a fraction of nominal: each load change
    /// approaches its new level exponentially (first-order thermal lag).
    fn thermal(&self, t: f64) -> f64 {
        let mut prev = 1.0;
        let mut heat = 1.0;
        for s in self.params.load_steps.iter().take_while(|s| s.at_s <= t) {
            heat += (s.load - prev) * (1.0 - (-(t - s.at_s) / THERMAL_TAU_S).exp());
            prev = s.load;
        }
        heat
    }

    /// The bearing temperature at `t` without sensor noise: nominal, load heating
    /// (with the thermal lag), the daily swing, and wear (+40 degC at full wear,
    /// while the machine turns).
    pub fn temperature_c(&self, t: f64) -> f64 {
        let running = if self.load(t) > 0.0 { 1.0 } else { 0.0 };
        let daily = 2.0 * (2.0 * PI * t / 86_400.0).sin();
        let heating = LOAD_HEATING_C * (self.thermal(t) - 1.0);
        self.params.nominal_temp_c + heating + daily + 40.0 * self.wear(t) * running
    }

    /// Bearing-wear severity at `t` (0 if the machine has no such fault).
    pub fn wear(&self, t: f64) -> f64 {
        self.faults
            .iter()
            .filter(|f| matches!(f.kind, FaultKind::BearingWear))
            .map(|f| f.severity(t))
            .fold(0.0, f64::max)
    }

    /// Whether a link-loss fault is active at `t`.
    pub fn link_lost(&self, t: f64) -> bool {
        self.faults
            .iter()
            .any(|f| matches!(f.kind, FaultKind::LinkLoss) && f.active(t))
    }

    /// When the current link loss ends (if one is active at `t`).
    pub fn link_restored_at(&self, t: f64) -> Option<f64> {
        self.faults
            .iter()
            .filter(|f| matches!(f.kind, FaultKind::LinkLoss) && f.active(t))
            .map(|f| f.start_s + f.duration_s)
            .reduce(f64::max)
    }

    /// Value of quantity `q` for sample index `k` taken at time `t` (seconds).
    pub fn value(&self, q: Quantity, k: u64, t: f64, rate_hz: f64) -> f64 {
        // A stuck sensor repeats the value of the sample at the fault's start.
        for f in &self.faults {
            if let FaultKind::Stuck { quantity } = f.kind
                && quantity == q
                && f.active(t)
            {
                let k0 = (f.start_s * rate_hz).ceil().max(0.0) as u64;
                let t0 = k0 as f64 / rate_hz;
                return self.clean_value(q, k0, t0, rate_hz);
            }
        }
        self.clean_value(q, k, t, rate_hz)
    }

    fn clean_value(&self, q: Quantity, k: u64, t: f64, rate_hz: f64) -> f64 {
        let p = &self.params;
        let mut noise_factor = p.noise;
        let mut offset = 0.0;
        for f in &self.faults {
            if !f.active(t) {
                continue;
            }
            match f.kind {
                FaultKind::NoiseBurst { quantity, factor } if quantity == q => {
                    noise_factor *= factor
                }
                FaultKind::Step {
                    quantity,
                    magnitude,
                } if quantity == q => offset += magnitude,
                FaultKind::Spikes {
                    quantity,
                    magnitude,
                    rate_per_hour,
                } if quantity == q => {
                    let p_spike = rate_per_hour / 3600.0 / rate_hz.max(1e-9);
                    if uniform(self.key(q, k, 3)) < p_spike {
                        let sign = if uniform(self.key(q, k, 4)) < 0.5 {
                            -1.0
                        } else {
                            1.0
                        };
                        offset += sign * magnitude;
                    }
                }
                _ => {}
            }
        }
        let n = |stream| normal(self.key(q, k, stream));
        let f0 = p.rpm / 60.0;
        let load = self.load(t);
        let running = if load > 0.0 { 1.0 } else { 0.0 };
        // Wear shows only while the machine turns.
        let wear = self.wear(t) * running;
        let base = match q {
            Quantity::Temperature => self.temperature_c(t) + 0.15 * noise_factor * n(1),
            Quantity::Vibration => {
                let w = 2.0 * PI * f0 * t;
                let harmonics =
                    1.0 * w.sin() + 0.35 * (2.0 * w + 0.4).sin() + 0.15 * (3.0 * w + 1.1).sin();
                let bpfo = 3.57 * f0;
                let defect = wear * 3.0 * (1.0 + 0.5 * w.sin()) * (2.0 * PI * bpfo * t).sin();
                let hf = wear * 1.5 * n(2);
                let turning = running * (0.6 + 0.4 * load);
                turning * harmonics + defect + hf + 0.2 * noise_factor * n(1)
            }
            Quantity::Current => {
                let swing = 0.4 * (2.0 * PI * t / 5_400.0).sin();
                let drawn = running * (p.nominal_current_a * (0.3 + 0.7 * load) + swing);
                drawn + 1.5 * wear + 0.08 * noise_factor * n(1)
            }
            Quantity::Pressure => {
                let head = if running > 0.0 {
                    0.5 + 0.5 * load
                } else {
                    0.05
                };
                let mut v = p.nominal_pressure_bar * head + 0.02 * noise_factor * n(1);
                for f in &self.faults {
                    if let FaultKind::Leak { magnitude } = f.kind {
                        v -= magnitude * f.severity(t);
                    }
                }
                v
            }
        };
        base + offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(faults: Vec<Fault>) -> Machine {
        Machine::new(MachineParams::default(), faults, 7)
    }

    #[test]
    fn values_are_deterministic_per_index() {
        let a = machine(vec![]);
        let b = machine(vec![]);
        for k in 0..100 {
            let t = k as f64;
            assert_eq!(
                a.value(Quantity::Temperature, k, t, 1.0),
                b.value(Quantity::Temperature, k, t, 1.0)
            );
        }
        let c = Machine::new(MachineParams::default(), vec![], 8);
        assert_ne!(
            a.value(Quantity::Current, 3, 3.0, 1.0),
            c.value(Quantity::Current, 3, 3.0, 1.0)
        );
    }

    #[test]
    fn noise_is_roughly_standard_normal() {
        let n = 20_000u64;
        let xs: Vec<f64> = (0..n).map(|k| normal(splitmix64(k))).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
    }

    #[test]
    fn bearing_wear_heats_the_bearing_over_its_duration() {
        let m = machine(vec![Fault {
            kind: FaultKind::BearingWear,
            start_s: 100.0,
            duration_s: 1000.0,
        }]);
        let before = m.value(Quantity::Temperature, 50, 50.0, 1.0);
        let after = m.value(Quantity::Temperature, 1100, 1100.0, 1.0);
        assert!(after - before > 35.0, "{before} -> {after}");
        assert_eq!(m.wear(1100.0), 1.0);
        assert_eq!(m.wear(600.0), 0.25);
    }

    #[test]
    fn a_stop_cools_the_machine_and_cuts_its_current_and_a_restart_warms_it_again() {
        let params = MachineParams {
            load_steps: vec![
                LoadStep {
                    at_s: 1000.0,
                    load: 0.0,
                },
                LoadStep {
                    at_s: 10_000.0,
                    load: 1.0,
                },
            ],
            ..MachineParams::default()
        };
        let m = Machine::new(params, vec![], 7);
        let nominal = machine(vec![]);
        let temp = |m: &Machine, t: f64| m.value(Quantity::Temperature, t as u64, t, 1.0);
        // Before the stop: exactly the machine without load steps.
        assert_eq!(temp(&m, 500.0), temp(&nominal, 500.0));
        // One time constant after the stop, ~63 % of the load heating is gone.
        let cooled = temp(&nominal, 1900.0) - temp(&m, 1900.0);
        assert!((cooled - 20.0 * 0.632).abs() < 1.0, "{cooled}");
        assert!(m.value(Quantity::Current, 2000, 2000.0, 1.0).abs() < 0.5);
        // Long after the restart, back to nominal.
        assert!((temp(&m, 20_000.0) - temp(&nominal, 20_000.0)).abs() < 0.1);
        assert_eq!(m.load(5000.0), 0.0);
        assert_eq!(m.load(10_000.0), 1.0);
    }

    #[test]
    fn stuck_sensor_repeats_one_value() {
        let m = machine(vec![Fault {
            kind: FaultKind::Stuck {
                quantity: Quantity::Pressure,
            },
            start_s: 10.0,
            duration_s: 5.0,
        }]);
        let v: Vec<f64> = (10..15)
            .map(|k| m.value(Quantity::Pressure, k, k as f64, 1.0))
            .collect();
        assert!(v.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            m.value(Quantity::Pressure, 15, 15.0, 1.0),
            m.value(Quantity::Pressure, 16, 16.0, 1.0)
        );
    }

    #[test]
    fn leak_decays_pressure_towards_the_leak_magnitude() {
        let m = machine(vec![Fault {
            kind: FaultKind::Leak { magnitude: 2.0 },
            start_s: 0.0,
            duration_s: 300.0,
        }]);
        let late = m.value(Quantity::Pressure, 3000, 3000.0, 1.0);
        assert!((late - 4.0).abs() < 0.1, "{late}");
    }

    fn std_of(v: &[f64]) -> f64 {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    }

    #[test]
    fn spikes_arrive_at_about_the_configured_rate_with_the_configured_size() {
        let m = machine(vec![Fault {
            kind: FaultKind::Spikes {
                quantity: Quantity::Current,
                magnitude: 10.0,
                rate_per_hour: 60.0,
            },
            start_s: 0.0,
            duration_s: f64::INFINITY,
        }]);
        // 10 hours at 1 Hz: expect ~600 spikes of ±10 A on a 12 A signal.
        let spikes = (0..36_000u64)
            .map(|k| m.value(Quantity::Current, k, k as f64, 1.0))
            .filter(|v| (v - 12.0).abs() > 5.0)
            .count();
        assert!((500..=700).contains(&spikes), "{spikes}");
    }

    #[test]
    fn noise_burst_multiplies_noise_only_while_active() {
        let m = machine(vec![Fault {
            kind: FaultKind::NoiseBurst {
                quantity: Quantity::Pressure,
                factor: 10.0,
            },
            start_s: 1000.0,
            duration_s: 1000.0,
        }]);
        let quiet: Vec<f64> = (0..1000u64)
            .map(|k| m.value(Quantity::Pressure, k, k as f64, 1.0))
            .collect();
        let loud: Vec<f64> = (1000..2000u64)
            .map(|k| m.value(Quantity::Pressure, k, k as f64, 1.0))
            .collect();
        let after: Vec<f64> = (2000..3000u64)
            .map(|k| m.value(Quantity::Pressure, k, k as f64, 1.0))
            .collect();
        let ratio = std_of(&loud) / std_of(&quiet);
        assert!((8.0..12.0).contains(&ratio), "{ratio}");
        assert!(std_of(&after) / std_of(&quiet) < 1.3);
    }

    #[test]
    fn step_adds_an_offset_for_its_duration() {
        let m = machine(vec![Fault {
            kind: FaultKind::Step {
                quantity: Quantity::Temperature,
                magnitude: 5.0,
            },
            start_s: 100.0,
            duration_s: 100.0,
        }]);
        let clean = machine(vec![]);
        for k in [50u64, 150, 250] {
            let d = m.value(Quantity::Temperature, k, k as f64, 1.0)
                - clean.value(Quantity::Temperature, k, k as f64, 1.0);
            let want = if k == 150 { 5.0 } else { 0.0 };
            assert!((d - want).abs() < 1e-12, "t={k}: {d}");
        }
    }

    #[test]
    fn link_loss_has_an_end() {
        let m = machine(vec![Fault {
            kind: FaultKind::LinkLoss,
            start_s: 10.0,
            duration_s: 20.0,
        }]);
        assert!(!m.link_lost(5.0));
        assert!(m.link_lost(15.0));
        assert_eq!(m.link_restored_at(15.0), Some(30.0));
        assert!(!m.link_lost(30.0));
    }
}
