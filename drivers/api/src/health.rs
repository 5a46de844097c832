//! Communication health of a device link: statistics, a 0–100 score, grades and
//! adaptive polling. Shared by every polling driver (Modbus, S7, ...).
//!
//! # What is measured
//! Every request a driver makes ends in one of: **success** (with its round-trip
//! time), **timeout**, or **error** (broken connection, refused connection, garbage
//! reply). Successful connections after the first count as **reconnects**.
//! Item-level answers such as a Modbus exception or an S7 "object does not exist"
//! are *not* link failures — the link carried the answer — and do not lower the score.
//! Neither is a silent device on a shared bus while its neighbours answer
//! ([`CommStats::device_timeout`]): per-device backoff handles that.
//!
//! Outcomes land in 30 time buckets covering the sliding `window` (default 5 min).
//! Older buckets weigh less: a bucket `k` buckets old has weight `1 − k/30`, so a
//! burst of failures fades out linearly over one window instead of falling off a
//! cliff. Memory is fixed (one histogram per bucket; nothing allocates per request).
//!
//! # The score
//! With weighted counts over the window:
//!
//! | term | formula | cap |
//! |---|---|---|
//! | failures | `200 · (1 − success_ratio)` | 100 |
//! | latency | `20 · clamp((p95 − rtt_good) / (rtt_bad − rtt_good), 0, 1)` | 20 |
//! | jitter | `10 · clamp((cv − 0.5) / 1.5, 0, 1) · clamp(std / rtt_good, 0, 1)`, `cv = std/mean` of RTT (≥ 5 samples) | 10 |
//! | error density | `2 · (timeouts + errors) per minute` | 20 |
//! | reconnects | `2 · reconnects` | 20 |
//!
//! `score = clamp(100 − Σ terms, 0, 100)`; 100 when nothing has been measured yet.
//! `rtt_bad` is the request timeout. A dead device scores 0. Polling once a second,
//! 5 % timed-out requests (each followed by a reconnect) score about 70 —
//! **sub-healthy** (below `warning`, default 75); 10 % score about 48, below
//! `critical` (default 60).
//!
//! **A dead link** — no success since its first failure — loses one point per
//! second it has been down, whatever the window holds: `score ≤ 100 − seconds
//! down`. So every protocol's dead peer is sub-healthy (Warning) after 25 s and
//! critical after 40 s with the default limits, however long the link was healthy
//! before and however fast it polled. While a failed driver waits to reconnect,
//! the supervisor's probes (a TCP connect a second) count as failed connection
//! attempts and keep the link's samples coming.
//!
//! # Adaptive polling
//! [`AdaptivePoll`] doubles the poll period after each cycle with a failed request
//! while the score is below `warning`, up to `poll_max`, and halves it back after
//! each clean cycle once the score is at least `warning + 10`, so a struggling PLC
//! is not hammered and noise around the limit does not flap it. A link back from an
//! outage (down [`OUTAGE`] or longer) halves on every clean cycle whatever the
//! window score, which still remembers the outage for minutes: from `poll_max` =
//! 10 × `poll` full rate is back after three clean cycles (10 s → 5 → 2 → 1).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Span, TableReader};
use crate::driver::DriverError;
use crate::sample::{Sample, SignalId};
use crate::signal::{SignalDecl, SignalRegistry};
use crate::time::Timestamp;

const BUCKETS: usize = 30;
/// RTT histogram: bin `i` holds RTTs in `[50 µs · 2^(i/4), 50 µs · 2^((i+1)/4))`
/// (19 % wide bins up to 52 s); percentiles are clamped to the largest RTT seen.
const BINS: usize = 80;
const BIN_BASE_MS: f64 = 0.05;

/// `[drivers.health]`: how a driver's link is scored and how polling adapts.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthConfig {
    /// Sliding window the score looks at.
    pub window: Duration,
    /// Below this score the link is sub-healthy (Warning).
    pub warning: f64,
    /// Below this score the link is critical.
    pub critical: f64,
    /// Round-trip p95 at or under which latency costs nothing.
    pub rtt_good: Duration,
    /// Round-trip p95 at which the latency term is full (the request timeout).
    pub rtt_bad: Duration,
    /// Whether polling slows down while the link is sub-healthy.
    pub adaptive: bool,
    /// Slowest poll period adaptive polling backs off to.
    pub poll_max: Duration,
    /// Whether the agent raises alerts from the score.
    pub alerts: bool,
}

impl HealthConfig {
    /// Defaults for a driver polling every `poll` with request timeout `timeout`.
    pub fn defaults(poll: Duration, timeout: Duration) -> HealthConfig {
        HealthConfig {
            window: Duration::from_secs(300),
            warning: 75.0,
            critical: 60.0,
            rtt_good: (timeout / 10).max(Duration::from_millis(1)),
            rtt_bad: timeout,
            adaptive: true,
            poll_max: (poll * 8).max(Duration::from_secs(10)),
            alerts: true,
        }
    }

    /// Reads the optional `health` sub-table of a driver section.
    pub fn parse(r: &mut TableReader<'_>, poll: Duration, timeout: Duration) -> HealthConfig {
        let mut c = HealthConfig::defaults(poll, timeout);
        let Some(mut h) = r.table("health") else {
            return c;
        };
        if let Some(v) = h.duration("window") {
            if v.value < Duration::from_secs(30) {
                h.error(v.span, "window", "the health window is shorter than 30s")
                    .expected("a duration of at least 30s, e.g. \"5m\"")
                    .emit();
            } else {
                c.window = v.value;
            }
        }
        if let Some(v) = h.f64_in("warning", 0.0, 100.0) {
            c.warning = v.value;
        }
        if let Some(v) = h.f64_in("critical", 0.0, 100.0) {
            if v.value >= c.warning {
                h.error(
                    v.span,
                    "critical",
                    format!(
                        "critical score {} is not below the warning score {}",
                        v.value, c.warning
                    ),
                )
                .hint("scores fall as the link degrades: e.g. warning = 75, critical = 60")
                .emit();
            } else {
                c.critical = v.value;
            }
        }
        if let Some(v) = h.duration("rtt_good") {
            if v.value >= timeout {
                h.error(
                    v.span,
                    "rtt_good",
                    "`rtt_good` is not below the request timeout",
                )
                .expected(format!("less than timeout ({timeout:?})"))
                .emit();
            } else {
                c.rtt_good = v.value;
            }
        }
        if let Some(v) = h.bool("adaptive_poll") {
            c.adaptive = v.value;
        }
        if let Some(v) = h.duration("poll_max") {
            if v.value < poll {
                h.error(
                    v.span,
                    "poll_max",
                    "`poll_max` is shorter than the poll period",
                )
                .expected(format!("at least poll ({poll:?})"))
                .emit();
            } else {
                c.poll_max = v.value;
            }
        }
        if let Some(v) = h.bool("alerts") {
            c.alerts = v.value;
        }
        c
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    ok: u32,
    timeouts: u32,
    errors: u32,
    reconnects: u32,
    rtt_sum: f64,
    rtt_sumsq: f64,
    rtt_max: f64,
    hist: [u32; BINS],
}

impl Bucket {
    const EMPTY: Bucket = Bucket {
        ok: 0,
        timeouts: 0,
        errors: 0,
        reconnects: 0,
        rtt_sum: 0.0,
        rtt_sumsq: 0.0,
        rtt_max: 0.0,
        hist: [0; BINS],
    };
}

/// Health figures of one link at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HealthReport {
    pub score: f64,
    /// Weighted share of requests that succeeded (1.0 when none were made).
    pub success_ratio: f64,
    /// 95th percentile round-trip time (NaN without successes).
    pub rtt_p95_ms: f64,
    /// std/mean of round-trip times (NaN with fewer than 5).
    pub jitter: f64,
    /// Weighted timeouts + errors per minute.
    pub errors_per_min: f64,
    /// Weighted reconnects in the window.
    pub reconnects: f64,
}

/// Sliding-window link statistics (see the module documentation).
#[derive(Clone, Debug)]
pub struct LinkHealth {
    bucket_len: Duration,
    rtt_good_ms: f64,
    rtt_bad_ms: f64,
    buckets: [Bucket; BUCKETS],
    /// Index of the newest bucket.
    head: usize,
    /// Start of the newest bucket.
    head_start: Instant,
    created: Instant,
    connected_once: bool,
    /// The first failure since the last success: the link is down since then.
    down_since: Option<Instant>,
    /// A down period of at least [`OUTAGE`] ended and nothing failed since.
    recovering: bool,
}

/// A link that carried nothing for this long was down (an outage), not just
/// unlucky: its return puts polling back to full rate at once.
pub const OUTAGE: Duration = Duration::from_secs(5);

impl LinkHealth {
    pub fn new(cfg: &HealthConfig, now: Instant) -> LinkHealth {
        LinkHealth {
            bucket_len: (cfg.window / BUCKETS as u32).max(Duration::from_millis(100)),
            rtt_good_ms: cfg.rtt_good.as_secs_f64() * 1e3,
            rtt_bad_ms: (cfg.rtt_bad.as_secs_f64() * 1e3)
                .max(cfg.rtt_good.as_secs_f64() * 1e3 + 1.0),
            buckets: [Bucket::EMPTY; BUCKETS],
            head: 0,
            head_start: now,
            created: now,
            connected_once: false,
            down_since: None,
            recovering: false,
        }
    }

    /// Moves the newest bucket forward to `now`, clearing buckets that expire.
    fn advance(&mut self, now: Instant) -> &mut Bucket {
        let elapsed = now.saturating_duration_since(self.head_start);
        let steps = (elapsed.as_nanos() / self.bucket_len.as_nanos().max(1)) as usize;
        if steps > 0 {
            for _ in 0..steps.min(BUCKETS) {
                self.head = (self.head + 1) % BUCKETS;
                self.buckets[self.head] = Bucket::EMPTY;
            }
            self.head_start += self.bucket_len * steps as u32;
        }
        &mut self.buckets[self.head]
    }

    pub fn record_success(&mut self, now: Instant, rtt: Duration) {
        if let Some(since) = self.down_since.take() {
            self.recovering |= now.saturating_duration_since(since) >= OUTAGE;
        }
        let ms = rtt.as_secs_f64() * 1e3;
        let b = self.advance(now);
        b.ok += 1;
        b.rtt_sum += ms;
        b.rtt_sumsq += ms * ms;
        b.rtt_max = b.rtt_max.max(ms);
        b.hist[bin(ms)] += 1;
    }

    pub fn record_timeout(&mut self, now: Instant) {
        self.failed(now);
        self.advance(now).timeouts += 1;
    }

    /// A failed request or connection attempt that was not a timeout.
    pub fn record_error(&mut self, now: Instant) {
        self.failed(now);
        self.advance(now).errors += 1;
    }

    fn failed(&mut self, now: Instant) {
        self.down_since.get_or_insert(now);
        self.recovering = false;
    }

    /// Seconds the link has been down (0 while its last outcome was a success).
    pub fn down_for(&self, now: Instant) -> Duration {
        self.down_since
            .map_or(Duration::ZERO, |d| now.saturating_duration_since(d))
    }

    /// A connection was established; every one after the first is a reconnect.
    pub fn record_connect(&mut self, now: Instant) {
        if self.connected_once {
            self.advance(now).reconnects += 1;
        }
        self.connected_once = true;
    }

    /// The figures and score at `now`.
    pub fn report(&mut self, now: Instant) -> HealthReport {
        self.advance(now);
        let (mut ok, mut fail, mut errs, mut rec) = (0.0, 0.0, 0.0, 0.0);
        let (mut n, mut sum, mut sumsq) = (0.0, 0.0, 0.0);
        let mut hist = [0.0f64; BINS];
        let mut rtt_max = 0.0f64;
        let mut span_s = 0.0;
        let blen = self.bucket_len.as_secs_f64();
        let now_s = now.saturating_duration_since(self.created).as_secs_f64();
        let head_s = self
            .head_start
            .saturating_duration_since(self.created)
            .as_secs_f64();
        for age in 0..BUCKETS {
            let b = &self.buckets[(self.head + BUCKETS - age) % BUCKETS];
            let w = 1.0 - age as f64 / BUCKETS as f64;
            // Time this bucket covered since the statistics began (the newest is partial).
            let (lo, hi) = if age == 0 {
                (head_s, now_s)
            } else {
                (head_s - age as f64 * blen, head_s - (age - 1) as f64 * blen)
            };
            let covered = (hi - lo.max(0.0)).max(0.0);
            span_s += w * covered;
            ok += w * f64::from(b.ok);
            fail += w * f64::from(b.timeouts + b.errors);
            errs += w * f64::from(b.timeouts + b.errors);
            rec += w * f64::from(b.reconnects);
            n += w * f64::from(b.ok);
            sum += w * b.rtt_sum;
            sumsq += w * b.rtt_sumsq;
            rtt_max = rtt_max.max(b.rtt_max);
            for (h, &c) in hist.iter_mut().zip(&b.hist) {
                *h += w * f64::from(c);
            }
        }
        let total = ok + fail;
        let success_ratio = if total > 0.0 { ok / total } else { 1.0 };
        let rtt_p95_ms = percentile(&hist, n, 0.95).min(rtt_max);
        let mean = if n > 0.0 { sum / n } else { f64::NAN };
        let jitter = if n >= 5.0 && mean > 0.0 {
            ((sumsq / n - mean * mean).max(0.0)).sqrt() / mean
        } else {
            f64::NAN
        };
        // At least a minute of denominator so that one early error is not "60/min".
        let errors_per_min = errs / (span_s / 60.0).max(1.0);
        let mut penalty = (200.0 * (1.0 - success_ratio)).min(100.0);
        if rtt_p95_ms.is_finite() {
            penalty += 20.0
                * ((rtt_p95_ms - self.rtt_good_ms) / (self.rtt_bad_ms - self.rtt_good_ms))
                    .clamp(0.0, 1.0);
        }
        if jitter.is_finite() {
            // Relative jitter matters only once it is large in absolute terms too:
            // 0.2 ± 0.2 ms on a LAN is noise, not a symptom.
            let std_ms = jitter * mean;
            penalty += 10.0
                * ((jitter - 0.5) / 1.5).clamp(0.0, 1.0)
                * (std_ms / self.rtt_good_ms).clamp(0.0, 1.0);
        }
        penalty += (2.0 * errors_per_min).min(20.0);
        penalty += (2.0 * rec).min(20.0);
        // A dead link loses a point a second whatever the window holds.
        let down_cap = 100.0 - self.down_for(now).as_secs_f64();
        HealthReport {
            score: (100.0 - penalty).min(down_cap).clamp(0.0, 100.0),
            success_ratio,
            rtt_p95_ms,
            jitter,
            errors_per_min,
            reconnects: rec,
        }
    }
}

fn bin(ms: f64) -> usize {
    if ms.is_nan() || ms <= BIN_BASE_MS {
        return 0;
    }
    ((4.0 * (ms / BIN_BASE_MS).log2()) as usize).min(BINS - 1)
}

fn bin_edges(i: usize) -> (f64, f64) {
    (
        BIN_BASE_MS * 2f64.powf(i as f64 / 4.0),
        BIN_BASE_MS * 2f64.powf((i + 1) as f64 / 4.0),
    )
}

/// The `q` quantile of a weighted log histogram, interpolated geometrically in its bin.
fn percentile(hist: &[f64; BINS], n: f64, q: f64) -> f64 {
    if n <= 0.0 {
        return f64::NAN;
    }
    let target = q * n;
    let mut cum = 0.0;
    for (i, &c) in hist.iter().enumerate() {
        if c > 0.0 && cum + c >= target {
            let (lo, hi) = bin_edges(i);
            let frac = ((target - cum) / c).clamp(0.0, 1.0);
            return lo * (hi / lo).powf(frac);
        }
        cum += c;
    }
    bin_edges(BINS - 1).1
}

/// Grade of a score against a driver's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grade {
    Healthy,
    SubHealthy,
    Critical,
}

impl HealthConfig {
    pub fn grade(&self, score: f64) -> Grade {
        if score < self.critical {
            Grade::Critical
        } else if score < self.warning {
            Grade::SubHealthy
        } else {
            Grade::Healthy
        }
    }
}

/// Poll-period control from the health score (see the module documentation).
#[derive(Clone, Debug)]
pub struct AdaptivePoll {
    base: Duration,
    max_factor: u32,
    factor: u32,
    warning: f64,
    enabled: bool,
}

impl AdaptivePoll {
    pub fn new(base: Duration, cfg: &HealthConfig) -> AdaptivePoll {
        let max_factor = (cfg.poll_max.as_secs_f64() / base.as_secs_f64().max(1e-3))
            .floor()
            .clamp(1.0, 1024.0) as u32;
        AdaptivePoll {
            base,
            max_factor,
            factor: 1,
            warning: cfg.warning,
            enabled: cfg.adaptive,
        }
    }

    /// Feeds the latest score and whether the cycle since the last call was clean
    /// (no request failed) and follows an outage the link has come back from;
    /// returns the poll period to use next.
    pub fn update(&mut self, score: f64, clean: bool, recovering: bool) -> Duration {
        if self.enabled {
            if !clean && score < self.warning {
                self.factor = (self.factor * 2).min(self.max_factor);
            } else if clean && (recovering || score >= self.warning + 10.0) {
                self.factor = (self.factor / 2).max(1);
            }
        }
        self.period()
    }

    pub fn period(&self) -> Duration {
        self.base * self.factor
    }

    /// How many times the base period polling is stretched to (1 when healthy);
    /// drivers with several poll periods stretch each by it.
    pub fn factor(&self) -> u32 {
        self.factor
    }
}

/// Names and units of the communication signals every polling driver publishes,
/// as `<driver>.comm.<name>`.
pub const COMM_SIGNALS: [(&str, &str); 10] = [
    ("rtt_ms", "ms"),
    ("timeouts", ""),
    ("exceptions", ""),
    ("connects", ""),
    ("health", "%"),
    ("success_ratio", ""),
    ("rtt_p95_ms", "ms"),
    ("jitter", ""),
    ("errors_per_min", "1/min"),
    ("poll_s", "s"),
];

/// The name of a driver's health-score signal.
pub fn health_signal(driver: &str) -> String {
    format!("{driver}.comm.health")
}

/// Signal declarations of [`COMM_SIGNALS`] for a driver.
pub fn comm_signal_decls(driver: &str, span: Span) -> Vec<SignalDecl> {
    COMM_SIGNALS
        .iter()
        .map(|(s, unit)| SignalDecl {
            text: false,
            name: format!("{driver}.comm.{s}"),
            unit: (!unit.is_empty()).then(|| unit.to_string()),
            span,
            address: Some("link statistics".into()),
        })
        .collect()
}

/// A link's counters, health window and signal ids; lives in a driver factory so
/// that it survives reconnects (and the supervisor's restarts).
#[derive(Debug)]
pub struct CommStats {
    ids: [SignalId; 10],
    health: Mutex<LinkHealth>,
    /// Survives reconnects, like the statistics: a flapping link stays backed off.
    poll: Mutex<AdaptivePoll>,
    pub cfg: HealthConfig,
    timeouts: AtomicU64,
    exceptions: AtomicU64,
    connects: AtomicU64,
    /// Failed requests and connection attempts, and how many the last
    /// [`CommStats::adapt`] had seen (a cycle is clean when none came since).
    failures: AtomicU64,
    failures_adapted: AtomicU64,
}

impl CommStats {
    /// `base_poll` is the driver's configured poll period.
    pub fn new(
        driver: &str,
        cfg: HealthConfig,
        base_poll: Duration,
        registry: &SignalRegistry,
    ) -> Result<CommStats, DriverError> {
        let mut ids = [SignalId(0); 10];
        for (id, (s, _)) in ids.iter_mut().zip(COMM_SIGNALS) {
            let name = format!("{driver}.comm.{s}");
            *id = registry.get(&name).ok_or_else(|| {
                DriverError::config(format!("signal `{name}` was not registered"))
            })?;
        }
        Ok(CommStats {
            ids,
            health: Mutex::new(LinkHealth::new(&cfg, Instant::now())),
            poll: Mutex::new(AdaptivePoll::new(base_poll, &cfg)),
            cfg,
            timeouts: AtomicU64::new(0),
            exceptions: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            failures_adapted: AtomicU64::new(0),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut LinkHealth) -> R) -> R {
        // A panic while holding this lock cannot leave the statistics inconsistent
        // in a way that matters; keep going with whatever is there.
        let mut g = self.health.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    pub fn success(&self, rtt: Duration) {
        self.with(|h| h.record_success(Instant::now(), rtt));
    }
    pub fn timeout(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.with(|h| h.record_timeout(Instant::now()));
    }
    pub fn error(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.with(|h| h.record_error(Instant::now()));
    }
    /// A timeout of one device on a shared link whose other devices answer (a dead
    /// slave on an RTU bus): counted as a timeout, not scored against the link.
    pub fn device_timeout(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }
    /// The link was re-opened for a reason that is not the link's fault (after a
    /// device timeout): counted as a connect, not scored as a reconnect.
    pub fn reopened(&self) -> u64 {
        self.connects.fetch_add(1, Ordering::Relaxed) + 1
    }
    /// An item-level device answer (exception / return code): counted, not scored.
    pub fn exception(&self) {
        self.exceptions.fetch_add(1, Ordering::Relaxed);
    }
    /// A connection was established; returns how many so far.
    pub fn connected(&self) -> u64 {
        self.with(|h| h.record_connect(Instant::now()));
        self.connects.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The poll period to use now.
    pub fn poll_period(&self) -> Duration {
        self.poll.lock().unwrap_or_else(|p| p.into_inner()).period()
    }

    /// The adaptive-polling stretch factor (see [`AdaptivePoll::factor`]).
    pub fn poll_factor(&self) -> u32 {
        self.poll.lock().unwrap_or_else(|p| p.into_inner()).factor()
    }

    /// Feeds a score to adaptive polling, with whether the cycle since the last
    /// call was clean; returns the poll period to use next.
    pub fn adapt(&self, score: f64) -> Duration {
        let failures = self.failures.load(Ordering::Relaxed);
        let clean = self.failures_adapted.swap(failures, Ordering::Relaxed) == failures;
        let recovering = self.with(|h| h.recovering);
        let mut poll = self.poll.lock().unwrap_or_else(|p| p.into_inner());
        let period = poll.update(score, clean, recovering);
        if poll.factor() == 1 && recovering {
            self.with(|h| h.recovering = false);
        }
        period
    }

    pub fn report(&self) -> HealthReport {
        self.with(|h| h.report(Instant::now()))
    }

    /// Whether the link is down: its last request or connection attempt failed.
    pub fn link_down(&self) -> bool {
        self.with(|h| h.down_since.is_some())
    }

    /// Appends the communication samples (`last_rtt_ms` NaN when no request
    /// succeeded since the last call) and returns the report they came from.
    pub fn push_samples(
        &self,
        ts: Timestamp,
        last_rtt_ms: f64,
        out: &mut Vec<Sample>,
    ) -> HealthReport {
        let r = self.report();
        let poll = self.poll_period();
        let vals = [
            last_rtt_ms,
            self.timeouts.load(Ordering::Relaxed) as f64,
            self.exceptions.load(Ordering::Relaxed) as f64,
            self.connects.load(Ordering::Relaxed) as f64,
            r.score,
            r.success_ratio,
            r.rtt_p95_ms,
            r.jitter,
            r.errors_per_min,
            poll.as_secs_f64(),
        ];
        for (id, v) in self.ids.iter().zip(vals) {
            if v.is_finite() {
                out.push(Sample::new_f64(ts, *id, v));
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> HealthConfig {
        HealthConfig::defaults(Duration::from_secs(1), Duration::from_secs(1))
    }

    /// Drives a link for `secs` seconds of one request per second; `fail(i)` decides
    /// whether request `i` times out (and is followed by a reconnect).
    fn drive(
        h: &mut LinkHealth,
        t: &mut Instant,
        secs: u32,
        rtt_ms: u64,
        fail: impl Fn(u32) -> bool,
    ) {
        for i in 0..secs {
            *t += Duration::from_secs(1);
            if fail(i) {
                h.record_timeout(*t);
                h.record_connect(*t);
            } else {
                h.record_success(*t, Duration::from_millis(rtt_ms));
            }
        }
    }

    #[test]
    fn a_fresh_or_clean_link_scores_100() {
        let mut t = Instant::now();
        let mut h = LinkHealth::new(&cfg(), t);
        assert_eq!(h.report(t).score, 100.0);
        h.record_connect(t);
        drive(&mut h, &mut t, 600, 5, |_| false);
        let r = h.report(t);
        assert_eq!(r.score, 100.0);
        assert_eq!(r.success_ratio, 1.0);
        assert!((r.rtt_p95_ms - 5.0).abs() < 1.0, "{r:?}");
        assert!(r.jitter < 0.01);
    }

    #[test]
    fn five_percent_timeouts_grade_sub_healthy_and_ten_percent_critical() {
        let c = cfg();
        for (every, grade) in [(20, Grade::SubHealthy), (10, Grade::Critical)] {
            let mut t = Instant::now();
            let mut h = LinkHealth::new(&c, t);
            h.record_connect(t);
            drive(&mut h, &mut t, 600, 5, |i| i % every == 0);
            let r = h.report(t);
            assert_eq!(c.grade(r.score), grade, "1 in {every}: {r:?}");
        }
    }

    #[test]
    fn a_dead_device_scores_zero() {
        let mut t = Instant::now();
        let mut h = LinkHealth::new(&cfg(), t);
        for _ in 0..10 {
            t += Duration::from_secs(2);
            h.record_error(t);
        }
        assert_eq!(h.report(t).score, 0.0);
    }

    #[test]
    fn slow_and_jittery_replies_cost_points_without_failures() {
        let mut t = Instant::now();
        let mut h = LinkHealth::new(&cfg(), t);
        for i in 0..300u64 {
            t += Duration::from_secs(1);
            // 100 ms or 900 ms: p95 near the 1 s timeout, cv ≈ 0.8.
            let ms = if i % 2 == 0 { 100 } else { 900 };
            h.record_success(t, Duration::from_millis(ms));
        }
        let r = h.report(t);
        assert_eq!(r.success_ratio, 1.0);
        assert!(r.rtt_p95_ms > 700.0 && r.rtt_p95_ms < 1100.0, "{r:?}");
        assert!(r.score < 90.0 && r.score > 70.0, "{r:?}");
    }

    #[test]
    fn failures_fade_out_over_one_window() {
        let c = cfg();
        let mut t = Instant::now();
        let mut h = LinkHealth::new(&c, t);
        h.record_connect(t);
        drive(&mut h, &mut t, 60, 5, |_| true);
        let dead = h.report(t).score;
        assert_eq!(dead, 0.0);
        drive(&mut h, &mut t, 120, 5, |_| false);
        let mid = h.report(t).score;
        drive(&mut h, &mut t, 120, 5, |_| false);
        let late = h.report(t).score;
        drive(&mut h, &mut t, 120, 5, |_| false);
        let healed = h.report(t).score;
        assert!(
            dead < mid && mid < late && late <= healed,
            "{dead} {mid} {late} {healed}"
        );
        assert_eq!(healed, 100.0);
    }

    #[test]
    fn adaptive_poll_backs_off_to_the_floor_and_recovers() {
        let mut c = cfg();
        c.poll_max = Duration::from_secs(8);
        let mut p = AdaptivePoll::new(Duration::from_secs(1), &c);
        // Failing cycles at 50, then clean ones.
        let cycles = [
            (50.0, false),
            (50.0, false),
            (50.0, false),
            (50.0, false),
            (50.0, true),
            (80.0, true),
            (90.0, true),
            (90.0, true),
            (90.0, true),
            (90.0, true),
        ];
        let periods: Vec<u64> = cycles
            .iter()
            .map(|&(s, clean)| p.update(s, clean, false).as_secs())
            .collect();
        // Halving needs a clean cycle at warning + 10 = 85; 80 (or 50) holds it.
        assert_eq!(periods, [2, 4, 8, 8, 8, 8, 4, 2, 1, 1]);
        c.adaptive = false;
        let mut p = AdaptivePoll::new(Duration::from_secs(1), &c);
        assert_eq!(p.update(0.0, false, false), Duration::from_secs(1));
    }

    #[test]
    fn a_link_back_from_an_outage_polls_at_full_rate_after_three_clean_cycles() {
        let mut c = cfg();
        c.poll_max = Duration::from_secs(10);
        let mut p = AdaptivePoll::new(Duration::from_secs(1), &c);
        for _ in 0..6 {
            p.update(10.0, false, false);
        }
        assert_eq!(p.period(), Duration::from_secs(10));
        // The window still scores the outage (40), but the cycles are clean.
        let back: Vec<u64> = (0..3)
            .map(|_| p.update(40.0, true, true).as_secs())
            .collect();
        assert_eq!(back, [5, 2, 1]);
    }

    #[test]
    fn a_dead_link_is_warning_within_30_s_and_critical_within_60_s_whatever_came_before() {
        let c = cfg();
        // Ten minutes healthy at 10 requests a second, then dead: one failed
        // attempt a second (the supervisor's probes), or none at all.
        for attempts in [true, false] {
            let mut t = Instant::now();
            let mut h = LinkHealth::new(&c, t);
            h.record_connect(t);
            for _ in 0..6000 {
                t += Duration::from_millis(100);
                h.record_success(t, Duration::from_millis(2));
            }
            let dead = t;
            h.record_timeout(t);
            let mut grade_at = |secs: u64| {
                while t < dead + Duration::from_secs(secs) {
                    t += Duration::from_secs(1);
                    if attempts {
                        h.record_error(t);
                    }
                }
                c.grade(h.report(t).score)
            };
            assert_eq!(grade_at(20), Grade::Healthy, "attempts: {attempts}");
            assert_eq!(grade_at(30), Grade::SubHealthy, "attempts: {attempts}");
            assert_eq!(grade_at(60), Grade::Critical, "attempts: {attempts}");
        }
    }

    #[test]
    fn an_outage_that_ends_marks_the_link_recovering_until_it_fails_again() {
        let mut t = Instant::now();
        let mut h = LinkHealth::new(&cfg(), t);
        h.record_timeout(t);
        t += Duration::from_secs(2);
        h.record_success(t, Duration::from_millis(1));
        assert!(!h.recovering, "2 s down is not an outage");
        h.record_timeout(t);
        t += Duration::from_secs(30);
        assert_eq!(h.down_for(t), Duration::from_secs(30));
        h.record_success(t, Duration::from_millis(1));
        assert!(h.recovering);
        assert_eq!(h.down_for(t), Duration::ZERO);
        h.record_error(t);
        assert!(!h.recovering);
    }

    #[test]
    fn percentile_of_a_spread_is_in_the_right_bin() {
        let mut t = Instant::now();
        let mut h = LinkHealth::new(&cfg(), t);
        for i in 1..=100u64 {
            t += Duration::from_millis(100);
            h.record_success(t, Duration::from_millis(i));
        }
        let p95 = h.report(t).rtt_p95_ms;
        assert!((80.0..=115.0).contains(&p95), "{p95}");
    }
}
