//! Per-driver meters for status and metrics, fed on the way into the ring.
//!
//! Every driver's samples pass through a [`MeteredSink`] before the ring. It counts
//! them, notes when the driver last delivered, and picks the driver's communication
//! signals (`<driver>.comm.*`, see `edge_driver_api::health`) out of the batch: the
//! round-trip time goes into a fixed-bucket histogram, the cumulative timeout,
//! exception and connect counters and the health score are kept as their latest
//! values. The check per sample is one subtraction and one comparison (the ten comm
//! signals are registered consecutively); nothing is allocated.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use edge_driver_api::health::COMM_SIGNALS;
use edge_driver_api::{Clock, PushResult, Sample, SampleSink, SignalId, SignalRegistry};
use tokio::sync::Notify;

/// Upper bounds of the latency buckets, in seconds (Prometheus `le`), spanning a
/// fast Modbus TCP answer (sub-millisecond) to a struggling RTU line or PLC.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A fixed-bucket histogram of seconds, safe to observe from any thread.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    count: AtomicU64,
    /// Sum in nanoseconds (an integer, so that it can be added atomically).
    sum_ns: AtomicU64,
}

/// A consistent-enough copy of a [`Histogram`] (cumulative bucket counts).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSnapshot {
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_s: f64,
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        if !seconds.is_finite() || seconds < 0.0 {
            return;
        }
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                acc += b.load(Ordering::Relaxed);
                acc
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            count: self.count.load(Ordering::Relaxed),
            sum_s: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// Offsets into [`COMM_SIGNALS`].
const RTT: u32 = 0;
const TIMEOUTS: u32 = 1;
const EXCEPTIONS: u32 = 2;
const CONNECTS: u32 = 3;
const HEALTH: u32 = 4;

/// What one driver delivered, and how its link is doing.
#[derive(Debug)]
pub struct DriverMeter {
    /// Samples accepted by the ring (including those its overflow policy dropped).
    pub samples: AtomicU64,
    /// Monotonic nanoseconds (the agent clock) of the last delivery; `u64::MAX`
    /// before the first.
    last_push_ns: AtomicU64,
    /// The first of the driver's ten consecutive comm signals, if it has them.
    comm: Option<SignalId>,
    pub latency: Histogram,
    timeouts: AtomicU64,
    exceptions: AtomicU64,
    connects: AtomicU64,
    /// f64 bits; NaN until the driver reports a score.
    health: AtomicU64,
}

/// The link counters a driver reports (cumulative since start-up).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkCounters {
    pub timeouts: u64,
    pub exceptions: u64,
    pub connects: u64,
    /// 0–100, `None` until the first report (or for drivers without a link).
    pub health: Option<f64>,
}

impl DriverMeter {
    /// Finds the driver's comm signals in the registry (they exist for Modbus, S7
    /// and CoAP links).
    pub fn new(driver: &str, registry: &SignalRegistry) -> DriverMeter {
        let ids: Vec<Option<SignalId>> = COMM_SIGNALS
            .iter()
            .map(|(s, _)| registry.get(&format!("{driver}.comm.{s}")))
            .collect();
        let comm = match ids.first() {
            Some(Some(first))
                if ids
                    .iter()
                    .enumerate()
                    .all(|(i, id)| *id == Some(SignalId(first.0 + i as u32))) =>
            {
                Some(*first)
            }
            _ => None,
        };
        DriverMeter {
            samples: AtomicU64::new(0),
            last_push_ns: AtomicU64::new(u64::MAX),
            comm,
            latency: Histogram::default(),
            timeouts: AtomicU64::new(0),
            exceptions: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            health: AtomicU64::new(f64::NAN.to_bits()),
        }
    }

    /// Whether the driver reports link statistics.
    pub fn has_link(&self) -> bool {
        self.comm.is_some()
    }

    fn observe(&self, batch: &[Sample], now_ns: u64) {
        if batch.is_empty() {
            return;
        }
        self.samples
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.last_push_ns.store(now_ns, Ordering::Relaxed);
        let Some(first) = self.comm else { return };
        for s in batch {
            let k = s.signal.0.wrapping_sub(first.0);
            if k >= COMM_SIGNALS.len() as u32 || !s.quality.is_good() {
                continue;
            }
            let v = s.value.as_f64();
            match k {
                RTT => self.latency.observe(v / 1e3),
                TIMEOUTS => self.timeouts.store(v as u64, Ordering::Relaxed),
                EXCEPTIONS => self.exceptions.store(v as u64, Ordering::Relaxed),
                CONNECTS => self.connects.store(v as u64, Ordering::Relaxed),
                HEALTH => self.health.store(v.to_bits(), Ordering::Relaxed),
                _ => {}
            }
        }
    }

    /// Seconds since the driver last delivered, on `clock`; `None` before the first.
    pub fn last_sample_age(&self, clock: &Clock) -> Option<f64> {
        let at = self.last_push_ns.load(Ordering::Relaxed);
        (at != u64::MAX).then(|| clock.mono_ns().saturating_sub(at) as f64 / 1e9)
    }

    pub fn link(&self) -> LinkCounters {
        let h = f64::from_bits(self.health.load(Ordering::Relaxed));
        LinkCounters {
            timeouts: self.timeouts.load(Ordering::Relaxed),
            exceptions: self.exceptions.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
            health: h.is_finite().then_some(h),
        }
    }
}

/// The ring as one driver sees it: every accepted batch is metered.
pub struct MeteredSink {
    inner: Arc<dyn SampleSink>,
    meter: Arc<DriverMeter>,
    clock: Clock,
}

impl std::fmt::Debug for MeteredSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredSink")
            .field("meter", &self.meter)
            .finish_non_exhaustive()
    }
}

impl MeteredSink {
    pub fn new(inner: Arc<dyn SampleSink>, meter: Arc<DriverMeter>, clock: Clock) -> Self {
        MeteredSink {
            inner,
            meter,
            clock,
        }
    }
}

impl SampleSink for MeteredSink {
    fn try_push(&self, batch: &[Sample]) -> PushResult {
        let r = self.inner.try_push(batch);
        let taken = batch.get(..r.accepted).unwrap_or(batch);
        self.meter.observe(taken, self.clock.mono_ns());
        r
    }

    fn space_available(&self) -> &Notify {
        self.inner.space_available()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_driver_api::testing::CollectSink;
    use edge_driver_api::{Quality, SignalDecl, Timestamp};

    fn registry() -> SignalRegistry {
        let mut reg = SignalRegistry::new();
        let decl = |name: String| SignalDecl {
            name,
            unit: None,
            span: Default::default(),
            text: false,
            address: None,
        };
        reg.intern(&decl("plc.temp".into()), "plc")
            .expect("register");
        for (s, _) in COMM_SIGNALS {
            reg.intern(&decl(format!("plc.comm.{s}")), "plc")
                .expect("register");
        }
        reg
    }

    fn at(reg: &SignalRegistry, name: &str, v: f64) -> Sample {
        let id = reg.get(name).expect("registered");
        Sample::new_f64(Timestamp::default(), id, v)
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_skip_nonsense() {
        let h = Histogram::default();
        for v in [0.0004, 0.003, 0.003, 0.2, 7.0, f64::NAN, -1.0] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(s.cumulative.len(), LATENCY_BUCKETS.len() + 1);
        assert_eq!(s.cumulative[0], 1, "≤0.5 ms");
        assert_eq!(s.cumulative[3], 3, "≤5 ms");
        assert_eq!(s.cumulative[8], 4, "≤250 ms");
        assert_eq!(*s.cumulative.last().expect("+Inf"), 5);
        assert!((s.sum_s - 7.2064).abs() < 1e-6, "{}", s.sum_s);
    }

    #[test]
    fn metered_sink_counts_samples_and_reads_the_link_signals() {
        let reg = registry();
        let meter = Arc::new(DriverMeter::new("plc", &reg));
        assert!(meter.has_link());
        let ring = Arc::new(CollectSink::default());
        let sink = MeteredSink::new(ring.clone(), meter.clone(), Clock::system());
        assert_eq!(meter.last_sample_age(&Clock::system()), None);
        let mut bad = at(&reg, "plc.comm.timeouts", 99.0);
        bad.quality = Quality::Bad(edge_driver_api::BadReason::Timeout);
        let batch = [
            at(&reg, "plc.temp", 20.0),
            at(&reg, "plc.comm.rtt_ms", 4.0),
            at(&reg, "plc.comm.timeouts", 3.0),
            bad,
            at(&reg, "plc.comm.exceptions", 2.0),
            at(&reg, "plc.comm.connects", 1.0),
            at(&reg, "plc.comm.health", 87.5),
        ];
        assert_eq!(sink.try_push(&batch).accepted, batch.len());
        assert_eq!(meter.samples.load(Ordering::Relaxed), 7);
        assert!(meter.last_sample_age(&Clock::system()).is_some());
        assert_eq!(
            meter.link(),
            LinkCounters {
                timeouts: 3,
                exceptions: 2,
                connects: 1,
                health: Some(87.5)
            }
        );
        let l = meter.latency.snapshot();
        assert_eq!(
            (l.count, l.cumulative[3]),
            (1, 1),
            "4 ms is in the ≤5 ms bucket"
        );
    }

    #[test]
    fn a_driver_without_link_signals_is_only_counted() {
        let reg = registry();
        let meter = DriverMeter::new("sim", &reg);
        assert!(!meter.has_link());
        meter.observe(&[at(&reg, "plc.comm.health", 10.0)], 5);
        assert_eq!(meter.link().health, None);
        assert_eq!(meter.samples.load(Ordering::Relaxed), 1);
    }
}
