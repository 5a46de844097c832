//! `sim`: deterministic simulated machines for demos, tests and model training
//! (`models/train` computes the zoo's training data from [`physics`]).
//!
//! ```toml
//! [[drivers]]
//! name = "plant"
//! kind = "sim"
//! seed = 42
//! speed = 1.0            # simulated seconds per real second
//! tick = "100ms"         # how often a batch is produced (simulated time)
//!
//! [[drivers.machines]]
//! name = "pump1"         # signals: pump1.temperature, .vibration, .current, .pressure
//! rpm = 1480
//! sample_rate_hz = 1.0
//! vibration_rate_hz = 256.0
//!
//! [[drivers.machines.faults]]
//! kind = "bearing_wear"
//! start = "2h"
//! duration = "10h"
//! ```
//!
//! Simulated time starts when the driver first runs and keeps going across restarts
//! (a restarted driver skips the samples it missed, as a real device would). Under
//! `tokio::time::pause()` the simulation runs as fast as the CPU allows.

pub mod physics;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use edge_driver_api::config::{Span, TableReader};
use edge_driver_api::{
    BoxFuture, Driver, DriverContext, DriverError, DriverFactory, Sample, SignalDecl, SignalId,
    SignalRegistry,
};

pub use physics::{Fault, FaultKind, Machine, MachineParams, Quantity};

/// Largest batch handed to the sink in one call.
const MAX_BATCH: usize = 4096;

/// One machine's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct MachineConfig {
    pub name: String,
    pub span: Span,
    pub params: MachineParams,
    pub sample_rate_hz: f64,
    pub vibration_rate_hz: f64,
    pub faults: Vec<Fault>,
    /// Also emit `{machine}.truth.{fault}` signals with the fault severity (0..1).
    pub ground_truth: bool,
}

/// Validated `sim` driver configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    pub seed: u64,
    pub speed: f64,
    pub tick: Duration,
    pub machines: Vec<MachineConfig>,
}

const FAULT_KINDS: &[&str] = &[
    "bearing_wear",
    "leak",
    "stuck",
    "spikes",
    "noise_burst",
    "step",
    "link_loss",
];

impl SimConfig {
    /// Reads the driver-specific keys of a `[[drivers]]` table of kind `sim`.
    pub fn parse(r: &mut TableReader<'_>) -> Option<SimConfig> {
        let seed = r
            .int_in("seed", 0, i64::MAX)
            .map(|s| s.value as u64)
            .unwrap_or(1);
        let speed = r.f64_in("speed", 1e-3, 1e6).map(|s| s.value).unwrap_or(1.0);
        let tick = r
            .duration("tick")
            .map(|d| d.value)
            .unwrap_or(Duration::from_millis(100));
        let mut ok = true;
        if tick.is_zero() {
            r.error(r.span(), "tick", "`tick` must be longer than zero")
                .hint("use e.g. tick = \"100ms\"")
                .emit();
            ok = false;
        }
        let machine_readers = r.tables("machines");
        if machine_readers.is_empty() && !r.has("machines") {
            r.table_error("a sim driver needs at least one machine")
                .hint("add a [[drivers.machines]] section with a `name`")
                .emit();
            ok = false;
        }
        let mut machines = Vec::new();
        for mut m in machine_readers {
            match parse_machine(&mut m) {
                Some(mc) => machines.push(mc),
                None => ok = false,
            }
        }
        ok.then_some(SimConfig {
            seed,
            speed,
            tick,
            machines,
        })
    }

    /// The signals this driver produces.
    pub fn signals(&self) -> Vec<SignalDecl> {
        let mut out = Vec::new();
        for m in &self.machines {
            for q in Quantity::ALL {
                out.push(SignalDecl {
                    text: false,
                    name: format!("{}.{}", m.name, q.name()),
                    unit: Some(q.unit().to_string()),
                    span: m.span,
                    address: Some(format!("simulated {} {}", m.name, q.name())),
                });
            }
            if m.ground_truth {
                for f in &m.faults {
                    out.push(SignalDecl {
                        text: false,
                        name: format!("{}.truth.{}", m.name, f.kind.name()),
                        unit: None,
                        span: m.span,
                        address: Some(format!("simulated {} fault ground truth", m.name)),
                    });
                }
            }
        }
        out
    }

    /// Builds the factory once all signals are interned.
    pub fn into_factory(self, registry: &SignalRegistry) -> Result<SimFactory, DriverError> {
        let mut machines = Vec::with_capacity(self.machines.len());
        for (i, m) in self.machines.into_iter().enumerate() {
            let id = |suffix: &str| {
                let name = format!("{}.{}", m.name, suffix);
                registry.get(&name).ok_or_else(|| {
                    DriverError::config(format!("signal `{name}` was not registered"))
                })
            };
            let mut streams = Vec::new();
            for q in Quantity::ALL {
                let rate = if q == Quantity::Vibration {
                    m.vibration_rate_hz
                } else {
                    m.sample_rate_hz
                };
                streams.push(Stream {
                    id: id(q.name())?,
                    what: StreamKind::Quantity(q),
                    rate_hz: rate,
                });
            }
            if m.ground_truth {
                for (fi, f) in m.faults.iter().enumerate() {
                    streams.push(Stream {
                        id: id(&format!("truth.{}", f.kind.name()))?,
                        what: StreamKind::Truth(fi),
                        rate_hz: m.sample_rate_hz,
                    });
                }
            }
            let seed = self.seed ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
            machines.push(SimMachine {
                machine: Machine::new(m.params, m.faults, seed),
                streams,
            });
        }
        Ok(SimFactory {
            shared: Arc::new(Shared {
                machines,
                speed: self.speed,
                tick: self.tick,
                origin_ns: OnceLock::new(),
            }),
        })
    }
}

fn parse_machine(m: &mut TableReader<'_>) -> Option<MachineConfig> {
    let name = m.req_string("name");
    if let Some(n) = &name
        && (n.value.is_empty() || n.value.contains(char::is_whitespace))
    {
        m.error(
            n.span,
            "name",
            format!(
                "machine name `{}` must be non-empty and have no spaces",
                n.value
            ),
        )
        .hint("signal names are built as `{machine}.{quantity}`, e.g. `pump1.temperature`")
        .emit();
    }
    let defaults = MachineParams::default();
    let params = MachineParams {
        rpm: m
            .f64_in("rpm", 1.0, 100_000.0)
            .map(|v| v.value)
            .unwrap_or(defaults.rpm),
        nominal_temp_c: m
            .f64_in("nominal_temp_c", -50.0, 500.0)
            .map(|v| v.value)
            .unwrap_or(defaults.nominal_temp_c),
        nominal_current_a: m
            .f64_in("nominal_current_a", 0.0, 10_000.0)
            .map(|v| v.value)
            .unwrap_or(defaults.nominal_current_a),
        nominal_pressure_bar: m
            .f64_in("nominal_pressure_bar", 0.0, 1000.0)
            .map(|v| v.value)
            .unwrap_or(defaults.nominal_pressure_bar),
        noise: m
            .f64_in("noise", 0.0, 100.0)
            .map(|v| v.value)
            .unwrap_or(defaults.noise),
        load_steps: Vec::new(),
    };
    let sample_rate_hz = m
        .f64_in("sample_rate_hz", 1e-3, 10_000.0)
        .map(|v| v.value)
        .unwrap_or(1.0);
    let vibration_rate_hz = m
        .f64_in("vibration_rate_hz", 1e-3, 100_000.0)
        .map(|v| v.value)
        .unwrap_or(256.0);
    let ground_truth = m.bool("ground_truth").map(|v| v.value).unwrap_or(false);
    let mut faults = Vec::new();
    let mut ok = name.is_some();
    for mut f in m.tables("faults") {
        match parse_fault(&mut f) {
            Some(fault) => faults.push(fault),
            None => ok = false,
        }
    }
    let name = name?;
    ok.then_some(MachineConfig {
        name: name.value,
        span: name.span,
        params,
        sample_rate_hz,
        vibration_rate_hz,
        faults,
        ground_truth,
    })
}

fn parse_fault(f: &mut TableReader<'_>) -> Option<Fault> {
    let kinds: Vec<(&str, &str)> = FAULT_KINDS.iter().map(|k| (*k, *k)).collect();
    let kind = if f.has("kind") {
        f.choice("kind", &kinds)
    } else {
        f.table_error("missing required key `kind`")
            .expected(format!("one of: {}", FAULT_KINDS.join(", ")))
            .emit();
        None
    };
    let start = f
        .duration("start")
        .map(|d| d.value.as_secs_f64())
        .unwrap_or(0.0);
    let duration = f.duration("duration").map(|d| d.value.as_secs_f64());
    let quantity_choices: Vec<(&str, Quantity)> =
        Quantity::ALL.iter().map(|q| (q.name(), *q)).collect();
    let kind = kind?.value;
    let mut quantity = || {
        if !f.has("signal") {
            f.table_error(format!("fault `{kind}` needs `signal`"))
                .expected("one of: temperature, vibration, current, pressure")
                .emit();
            return None;
        }
        f.choice("signal", &quantity_choices).map(|q| q.value)
    };
    let kind = match kind {
        "bearing_wear" => FaultKind::BearingWear,
        "link_loss" => FaultKind::LinkLoss,
        "leak" => FaultKind::Leak {
            magnitude: f
                .f64_in("magnitude", 0.0, 1e6)
                .map(|v| v.value)
                .unwrap_or(2.0),
        },
        "stuck" => FaultKind::Stuck {
            quantity: quantity()?,
        },
        "spikes" => {
            let q = quantity()?;
            FaultKind::Spikes {
                quantity: q,
                magnitude: f.f64("magnitude").map(|v| v.value).unwrap_or(10.0),
                rate_per_hour: f
                    .f64_in("rate_per_hour", 0.0, 1e7)
                    .map(|v| v.value)
                    .unwrap_or(6.0),
            }
        }
        "noise_burst" => {
            let q = quantity()?;
            FaultKind::NoiseBurst {
                quantity: q,
                factor: f
                    .f64_in("magnitude", 0.0, 1e6)
                    .map(|v| v.value)
                    .unwrap_or(10.0),
            }
        }
        "step" => {
            let q = quantity()?;
            FaultKind::Step {
                quantity: q,
                magnitude: f.f64("magnitude").map(|v| v.value).unwrap_or(5.0),
            }
        }
        _ => return None,
    };
    let duration_s = match (kind, duration) {
        (_, Some(d)) => d,
        (FaultKind::BearingWear, None) => 8.0 * 3600.0,
        (FaultKind::Leak { .. }, None) => 3600.0,
        _ => f64::INFINITY,
    };
    Some(Fault {
        kind,
        start_s: start,
        duration_s,
    })
}

#[derive(Debug, Clone, Copy)]
enum StreamKind {
    Quantity(Quantity),
    Truth(usize),
}

#[derive(Debug, Clone, Copy)]
struct Stream {
    id: SignalId,
    what: StreamKind,
    rate_hz: f64,
}

#[derive(Debug)]
struct SimMachine {
    machine: Machine,
    streams: Vec<Stream>,
}

#[derive(Debug)]
struct Shared {
    machines: Vec<SimMachine>,
    speed: f64,
    tick: Duration,
    /// Monotonic time of simulated t = 0; set by the first run, kept across restarts.
    origin_ns: OnceLock<u64>,
}

/// Creates sim drivers; all of them share one simulated timeline.
#[derive(Debug, Clone)]
pub struct SimFactory {
    shared: Arc<Shared>,
}

impl DriverFactory for SimFactory {
    fn kind(&self) -> &'static str {
        "sim"
    }

    fn create(&self) -> Result<Box<dyn Driver>, DriverError> {
        Ok(Box::new(SimDriver {
            shared: self.shared.clone(),
        }))
    }
}

struct SimDriver {
    shared: Arc<Shared>,
}

impl Driver for SimDriver {
    fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<'static, Result<(), DriverError>> {
        Box::pin(run(self.shared, ctx))
    }
}

async fn run(shared: Arc<Shared>, ctx: DriverContext) -> Result<(), DriverError> {
    let clock = ctx.clock().clone();
    let origin = *shared.origin_ns.get_or_init(|| clock.mono_ns());
    let speed = shared.speed;
    let sim_now = |mono: u64| mono.saturating_sub(origin) as f64 * 1e-9 * speed;
    let start_t = sim_now(clock.mono_ns());
    // Next sample index per stream: continue from "now" (samples missed while the
    // driver was down are not invented).
    let mut next: Vec<Vec<u64>> = shared
        .machines
        .iter()
        .map(|m| {
            m.streams
                .iter()
                .map(|s| (start_t * s.rate_hz).ceil() as u64)
                .collect()
        })
        .collect();
    let mut batch: Vec<Sample> = Vec::with_capacity(MAX_BATCH);
    let tick_real = shared.tick.div_f64(speed);
    let mut tick_no: u64 = 0;
    let first_instant = clock.instant_at(clock.mono_ns());
    loop {
        let t = sim_now(clock.mono_ns());
        // One clock read per tick; every sample of the tick is stamped from it.
        let anchor = clock.anchor();
        for (m, next_k) in shared.machines.iter().zip(next.iter_mut()) {
            if m.machine.link_lost(t) {
                let until = m.machine.link_restored_at(t).unwrap_or(t);
                return Err(DriverError::transient(format!(
                    "simulated link loss to machine (restored at t={until:.0}s)"
                )));
            }
            for (s, k) in m.streams.iter().zip(next_k.iter_mut()) {
                loop {
                    let ts = *k as f64 / s.rate_hz;
                    if ts > t {
                        break;
                    }
                    let v = match s.what {
                        StreamKind::Quantity(q) => m.machine.value(q, *k, ts, s.rate_hz),
                        StreamKind::Truth(fi) => m.machine.faults[fi].severity(ts),
                    };
                    // Sample time is simulated time on the monotonic axis (ahead of
                    // the real monotonic clock when `speed` > 1).
                    let stamp = anchor.at(origin + (ts * 1e9) as u64);
                    batch.push(Sample::new_f64(stamp, s.id, v));
                    *k += 1;
                    if batch.len() == MAX_BATCH {
                        if ctx.send(&batch).await.is_err() {
                            return Ok(());
                        }
                        batch.clear();
                        // A pass far behind (high `speed` on a slow CPU) can be
                        // millions of samples: stay cancellable and let the other
                        // tasks of the worker run between batches.
                        if ctx.is_cancelled() {
                            return Ok(());
                        }
                        tokio::task::yield_now().await;
                    }
                }
            }
        }
        if !batch.is_empty() {
            if ctx.send(&batch).await.is_err() {
                return Ok(());
            }
            batch.clear();
        }
        tick_no += 1;
        let deadline =
            first_instant + Duration::from_secs_f64(tick_real.as_secs_f64() * tick_no as f64);
        tokio::select! {
            biased;
            _ = ctx.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

#[cfg(test)]
mod tests;
