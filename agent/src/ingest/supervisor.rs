//! Driver supervision.
//!
//! Each driver instance gets one supervising task. For every attempt it asks the
//! driver's factory for a fresh driver and runs it in its *own* task, so a panic in
//! driver code is caught (as a `JoinError`) and never reaches the supervisor, the
//! pipeline or another driver.
//!
//! After a failure the supervisor waits `backoff` and tries again:
//! * `Transient` / `Device` errors, panics and unexpected returns: retried forever with
//!   exponential backoff (`initial · 2^n`, capped at `max`) and "equal jitter" (a
//!   random delay in `[d/2, d]`), so a plant full of gateways does not reconnect in
//!   lock-step after a network outage;
//! * `Config` / `Fatal` errors: the driver is stopped and reported; others go on;
//! * an attempt that ran for `healthy_after` resets the backoff;
//! * while it waits, the supervisor probes the device every second when the driver
//!   can (a TCP connect: [`DriverFactory::probe`]) and restarts it as soon as the
//!   device answers, so values flow again within about a second of a device's
//!   return however long the outage was, while a dead device only sees a SYN a
//!   second and full reconnects at the backoff's pace.
//!
//! Ownership: the supervisor task owns the driver's cancellation token (a child of the
//! agent's driver token). On cancellation it gives the running attempt `grace` to
//! return, then aborts it.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use edge_driver_api::{
    Clock, DriverContext, DriverError, DriverFactory, SampleSink, WriteError, WriteFailure,
    WriteInbox,
};
use tokio_util::sync::CancellationToken;

/// Restart policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    pub initial: Duration,
    pub max: Duration,
    pub healthy_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
            healthy_after: Duration::from_secs(30),
        }
    }
}

impl BackoffConfig {
    /// The un-jittered delay before attempt `n` (0-based count of consecutive failures).
    pub fn base_delay(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.min(31));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before retry `n`: [`Self::base_delay`] scaled into `[d/2, d]`
    /// ("equal jitter").
    pub(crate) fn jittered(&self, n: u32, jitter: &mut Jitter) -> Duration {
        self.base_delay(n).mul_f64(0.5 + 0.5 * jitter.next())
    }
}

/// Where a driver is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverState {
    Starting,
    Running,
    BackingOff,
    /// Stopped for good after a Config or Fatal error.
    Failed,
    Stopped,
}

/// Shared, readable status of one supervised driver.
#[derive(Debug)]
pub struct DriverStatus {
    pub name: Arc<str>,
    pub kind: &'static str,
    pub restarts: AtomicU64,
    pub panics: AtomicU64,
    state: Mutex<(DriverState, Option<String>)>,
}

impl DriverStatus {
    pub fn new(name: Arc<str>, kind: &'static str) -> Self {
        DriverStatus {
            name,
            kind,
            restarts: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            state: Mutex::new((DriverState::Starting, None)),
        }
    }

    fn set(&self, state: DriverState, err: Option<String>) {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        g.0 = state;
        if err.is_some() {
            g.1 = err;
        }
    }

    pub fn state(&self) -> DriverState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    pub fn last_error(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }
}

/// Small PRNG for jitter (no need for cryptographic quality).
#[derive(Debug)]
pub(crate) struct Jitter(u64);

impl Jitter {
    /// Seeded from `name` and the clock, so that gateways and drivers differ.
    pub(crate) fn new(name: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Jitter(h ^ u64::from(t) | 1)
    }
    /// Uniform in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Everything one supervised driver needs.
pub struct Supervised {
    pub name: Arc<str>,
    pub factory: Arc<dyn DriverFactory>,
    pub sink: Arc<dyn SampleSink>,
    pub clock: Clock,
    pub backoff: BackoffConfig,
    /// How long a cancelled driver may take to return before it is aborted.
    pub grace: Duration,
    pub status: Arc<DriverStatus>,
    /// Where the driver's events go.
    pub events: Option<Arc<dyn edge_driver_api::EventSink>>,
    /// The driver's writes (a driver with writable tags).
    pub writes: Option<Arc<WriteInbox>>,
}

impl std::fmt::Debug for Supervised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervised")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Supervised {
    /// What a driver attempt (or a probe) gets: the sink, clock, events, `cancel`.
    fn context(&self, cancel: &CancellationToken) -> DriverContext {
        let ctx = DriverContext::new(
            self.name.clone(),
            self.sink.clone(),
            cancel.clone(),
            self.clock.clone(),
        );
        let ctx = match &self.events {
            Some(e) => ctx.with_events(e.clone()),
            None => ctx,
        };
        match &self.writes {
            Some(w) => ctx.with_writes(w.clone()),
            None => ctx,
        }
    }

    /// Answers every write that arrives with why the driver cannot take it,
    /// for as long as it is awaited (while the driver is down).
    async fn refuse_writes(&self) {
        let Some(inbox) = &self.writes else {
            return std::future::pending().await;
        };
        loop {
            let r = inbox.next().await;
            let why = match self.status.last_error() {
                Some(e) => format!("driver {} is not connected: {e}", self.name),
                None => format!("driver {} is not connected", self.name),
            };
            r.answer(Err(WriteError::new(WriteFailure::Communication, why)));
        }
    }
}

enum Outcome {
    Cancelled,
    Failed(DriverError),
    Panicked(String),
    Returned,
}

/// Runs one driver until `cancel` fires or it fails permanently.
pub async fn supervise(sv: Supervised, cancel: CancellationToken) {
    let mut failures: u32 = 0;
    // A probe failed since the device was last found reachable (see `wait_or_probe`).
    let mut seen_down = false;
    let mut jitter = Jitter::new(&sv.name);
    let name = sv.name.clone();
    loop {
        if cancel.is_cancelled() {
            break;
        }
        sv.status.set(DriverState::Running, None);
        let started = tokio::time::Instant::now();
        let outcome = match sv.factory.create() {
            Ok(driver) => {
                let ctx = sv.context(&cancel);
                let mut handle = tokio::spawn(driver.run(ctx));
                let joined = tokio::select! {
                    r = &mut handle => r,
                    _ = cancel.cancelled() => match tokio::time::timeout(sv.grace, &mut handle).await {
                        Ok(r) => r,
                        Err(_) => {
                            handle.abort();
                            tracing::warn!(driver = %name, grace = ?sv.grace, "driver did not stop in time; aborted");
                            break;
                        }
                    },
                };
                match joined {
                    Ok(Ok(())) if cancel.is_cancelled() => Outcome::Cancelled,
                    Ok(Ok(())) => Outcome::Returned,
                    Ok(Err(e)) => Outcome::Failed(e),
                    Err(je) if je.is_panic() => {
                        Outcome::Panicked(edge_driver_api::panic_message(&*je.into_panic()))
                    }
                    Err(_) => Outcome::Cancelled,
                }
            }
            Err(e) => Outcome::Failed(e),
        };
        if started.elapsed() >= sv.backoff.healthy_after {
            failures = 0;
        }
        match outcome {
            Outcome::Cancelled => break,
            Outcome::Failed(e) if !e.kind.is_retryable() => {
                tracing::error!(driver = %name, kind = e.kind.as_str(), error = %e,
                    "driver stopped permanently; the other drivers keep running");
                sv.status.set(DriverState::Failed, Some(e.to_string()));
                // Writes keep getting an answer (why) until the agent stops.
                if sv.writes.is_some() {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = sv.refuse_writes() => {}
                    }
                }
                return;
            }
            Outcome::Failed(e) => {
                tracing::warn!(driver = %name, kind = e.kind.as_str(), error = %e, "driver failed; will retry");
                sv.status.set(DriverState::BackingOff, Some(e.to_string()));
            }
            Outcome::Panicked(msg) => {
                sv.status.panics.fetch_add(1, Ordering::Relaxed);
                tracing::error!(driver = %name, panic = %msg, "driver panicked; will retry");
                sv.status
                    .set(DriverState::BackingOff, Some(format!("panic: {msg}")));
            }
            Outcome::Returned => {
                tracing::warn!(driver = %name, "driver returned without being cancelled; will restart");
                sv.status.set(
                    DriverState::BackingOff,
                    Some("returned unexpectedly".into()),
                );
            }
        }
        let delay = sv.backoff.jittered(failures, &mut jitter);
        failures = failures.saturating_add(1);
        sv.status.restarts.fetch_add(1, Ordering::Relaxed);
        tracing::info!(driver = %name, delay_ms = delay.as_millis() as u64, attempt = failures, "restarting driver after backoff");
        let waited = tokio::select! {
            w = wait_or_probe(&sv, delay, &cancel, &mut seen_down) => w,
            _ = sv.refuse_writes() => Wait::Cancelled,
        };
        match waited {
            Wait::Cancelled => break,
            Wait::Elapsed => {}
            Wait::Reachable(after) => {
                tracing::info!(driver = %name, after_ms = after.as_millis() as u64, "device reachable again; reconnecting now");
            }
        }
    }
    sv.status.set(DriverState::Stopped, None);
}

/// How often a failed driver's device is probed during the backoff.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

enum Wait {
    Cancelled,
    Elapsed,
    /// A probe found the device reachable this long into the wait.
    Reachable(Duration),
}

/// Waits out `delay`, probing the device every [`PROBE_EVERY`] when its factory
/// can (see [`DriverFactory::probe`]). A probe that succeeds after one failed
/// (`seen_down`, kept across waits) ends the wait early: the device came back.
/// Each shortcut needs a new failed probe, so a device reachable all along (its
/// port open, its protocol failing) gets none: the backoff paces it.
async fn wait_or_probe(
    sv: &Supervised,
    delay: Duration,
    cancel: &CancellationToken,
    seen_down: &mut bool,
) -> Wait {
    let start = tokio::time::Instant::now();
    let deadline = start + delay;
    let mut next = start + PROBE_EVERY;
    while next < deadline {
        tokio::select! {
            _ = cancel.cancelled() => return Wait::Cancelled,
            _ = tokio::time::sleep_until(next) => {}
        }
        let ctx = sv.context(cancel);
        let Some(probe) = sv.factory.probe(&ctx) else {
            break;
        };
        // A probe that hangs gives up at the next one.
        let reachable = tokio::select! {
            _ = cancel.cancelled() => return Wait::Cancelled,
            r = tokio::time::timeout(PROBE_EVERY, probe) => r.unwrap_or(false),
        };
        if reachable && *seen_down {
            *seen_down = false;
            return Wait::Reachable(start.elapsed());
        }
        *seen_down |= !reachable;
        next = (next + PROBE_EVERY).max(tokio::time::Instant::now());
    }
    tokio::select! {
        _ = cancel.cancelled() => Wait::Cancelled,
        _ = tokio::time::sleep_until(deadline) => Wait::Elapsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::ring::{OverflowPolicy, SampleRing};
    use edge_driver_api::ErrorKind;
    use edge_driver_api::{BoxFuture, Driver};
    use std::sync::atomic::AtomicU32;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            healthy_after: Duration::from_secs(10),
        };
        let d: Vec<u128> = (0..6).map(|n| b.base_delay(n).as_millis()).collect();
        assert_eq!(d, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.base_delay(1000), Duration::from_secs(1));
    }

    /// Fails with `kind` on every attempt, recording when each attempt started.
    struct Failing {
        kind: ErrorKind,
        attempts: Arc<Mutex<Vec<tokio::time::Instant>>>,
        panic: bool,
    }
    struct FailingDriver {
        kind: ErrorKind,
        panic: bool,
    }
    impl Driver for FailingDriver {
        fn run(
            self: Box<Self>,
            _ctx: DriverContext,
        ) -> BoxFuture<'static, Result<(), DriverError>> {
            Box::pin(async move {
                if self.panic {
                    panic!("boom");
                }
                Err(DriverError::new(self.kind, "device unplugged"))
            })
        }
    }
    impl DriverFactory for Failing {
        fn kind(&self) -> &'static str {
            "failing"
        }
        fn create(&self) -> Result<Box<dyn Driver>, DriverError> {
            self.attempts
                .lock()
                .expect("test mutex")
                .push(tokio::time::Instant::now());
            Ok(Box::new(FailingDriver {
                kind: self.kind,
                panic: self.panic,
            }))
        }
    }

    fn supervised(
        kind: ErrorKind,
        panic: bool,
    ) -> (Supervised, Arc<Mutex<Vec<tokio::time::Instant>>>) {
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let sv = Supervised {
            name: "failing".into(),
            factory: Arc::new(Failing {
                kind,
                attempts: attempts.clone(),
                panic,
            }),
            sink: Arc::new(SampleRing::new(1024, OverflowPolicy::DropOldest)),
            clock: Clock::virtual_from(0),
            backoff: BackoffConfig {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(16),
                healthy_after: Duration::from_secs(60),
            },
            grace: Duration::from_secs(1),
            status: Arc::new(DriverStatus::new("failing".into(), "failing")),
            events: None,
            writes: None,
        };
        (sv, attempts)
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_with_jittered_exponential_backoff() {
        let (sv, attempts) = supervised(ErrorKind::Transient, false);
        let status = sv.status.clone();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(supervise(sv, cancel.clone()));
        tokio::time::sleep(Duration::from_secs(100)).await;
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops")
            .expect("no panic");
        let at = attempts.lock().expect("test mutex").clone();
        let gaps: Vec<f64> = at.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        assert!(gaps.len() >= 6, "{gaps:?}");
        for (n, g) in gaps.iter().enumerate() {
            let base = (1u64 << n.min(4)) as f64;
            assert!(
                *g >= base / 2.0 - 1e-6 && *g <= base + 1e-6,
                "gap {n} = {g}, base {base}"
            );
        }
        assert_eq!(status.state(), DriverState::Stopped);
        assert!(status.restarts.load(Ordering::Relaxed) >= 6);
    }

    /// A device that is down until `up` is set; the driver fails while it is
    /// down and runs until cancelled once it is up; the probe reports `reachable`.
    struct Probed {
        up: Arc<std::sync::atomic::AtomicBool>,
        reachable: Arc<std::sync::atomic::AtomicBool>,
        attempts: Arc<Mutex<Vec<tokio::time::Instant>>>,
    }
    impl DriverFactory for Probed {
        fn kind(&self) -> &'static str {
            "probed"
        }
        fn create(&self) -> Result<Box<dyn Driver>, DriverError> {
            self.attempts
                .lock()
                .expect("test mutex")
                .push(tokio::time::Instant::now());
            if self.up.load(Ordering::SeqCst) {
                Ok(Box::new(Forever))
            } else {
                Ok(Box::new(FailingDriver {
                    kind: ErrorKind::Transient,
                    panic: false,
                }))
            }
        }
        fn probe(&self, _ctx: &DriverContext) -> Option<BoxFuture<'static, bool>> {
            let r = self.reachable.clone();
            Some(Box::pin(async move { r.load(Ordering::SeqCst) }))
        }
    }
    struct Forever;
    impl Driver for Forever {
        fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<'static, Result<(), DriverError>> {
            Box::pin(async move {
                ctx.cancelled().await;
                Ok(())
            })
        }
    }

    type Flag = Arc<std::sync::atomic::AtomicBool>;
    type Attempts = Arc<Mutex<Vec<tokio::time::Instant>>>;

    fn probed(up: bool, reachable: bool) -> (Supervised, Flag, Flag, Attempts) {
        let (mut sv, attempts) = supervised(ErrorKind::Transient, false);
        let up = Arc::new(std::sync::atomic::AtomicBool::new(up));
        let reachable = Arc::new(std::sync::atomic::AtomicBool::new(reachable));
        sv.factory = Arc::new(Probed {
            up: up.clone(),
            reachable: reachable.clone(),
            attempts: attempts.clone(),
        });
        (sv, up, reachable, attempts)
    }

    #[tokio::test(start_paused = true)]
    async fn a_device_back_after_a_long_outage_is_reconnected_within_a_probe() {
        let (sv, up, reachable, attempts) = probed(false, false);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(supervise(sv, cancel.clone()));
        // 70 s down: the backoff has grown to its 16 s cap.
        tokio::time::sleep(Duration::from_secs(70)).await;
        let before = attempts.lock().expect("test mutex").len();
        let back = tokio::time::Instant::now();
        up.store(true, Ordering::SeqCst);
        reachable.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(20)).await;
        let at = attempts.lock().expect("test mutex").clone();
        assert_eq!(at.len(), before + 1, "one reconnect, then it runs: {at:?}");
        let waited = at[before] - back;
        assert!(
            waited <= PROBE_EVERY,
            "reconnected {waited:?} after the device came back"
        );
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops")
            .expect("no panic");
    }

    #[tokio::test(start_paused = true)]
    async fn a_device_whose_port_answers_but_whose_protocol_fails_keeps_its_backoff() {
        // Reachable all along, failing all along: probes give no shortcut.
        let (sv, _up, _reachable, attempts) = probed(false, true);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(supervise(sv, cancel.clone()));
        tokio::time::sleep(Duration::from_secs(100)).await;
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops")
            .expect("no panic");
        let at = attempts.lock().expect("test mutex").clone();
        let gaps: Vec<f64> = at.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        for (n, g) in gaps.iter().enumerate() {
            let base = (1u64 << n.min(4)) as f64;
            assert!(
                *g >= base / 2.0 - 1e-6,
                "gap {n} = {g}, base {base}: {gaps:?}"
            );
        }
        assert!(at.len() <= 15, "{gaps:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn config_errors_stop_the_driver_for_good() {
        let (sv, attempts) = supervised(ErrorKind::Config, false);
        let status = sv.status.clone();
        let task = tokio::spawn(supervise(sv, CancellationToken::new()));
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("returns")
            .expect("no panic");
        assert_eq!(attempts.lock().expect("test mutex").len(), 1);
        assert_eq!(status.state(), DriverState::Failed);
        assert!(
            status
                .last_error()
                .is_some_and(|e| e.contains("device unplugged"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_driver_is_restarted_not_propagated() {
        let (sv, attempts) = supervised(ErrorKind::Transient, true);
        let status = sv.status.clone();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(supervise(sv, cancel.clone()));
        tokio::time::sleep(Duration::from_secs(10)).await;
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops")
            .expect("supervisor survives");
        assert!(attempts.lock().expect("test mutex").len() >= 3);
        assert!(status.panics.load(Ordering::Relaxed) >= 3);
    }

    struct Stubborn(Arc<AtomicU32>);
    struct StubbornDriver;
    impl Driver for StubbornDriver {
        fn run(
            self: Box<Self>,
            _ctx: DriverContext,
        ) -> BoxFuture<'static, Result<(), DriverError>> {
            // Ignores cancellation entirely.
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            })
        }
    }
    impl DriverFactory for Stubborn {
        fn kind(&self) -> &'static str {
            "stubborn"
        }
        fn create(&self) -> Result<Box<dyn Driver>, DriverError> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(Box::new(StubbornDriver))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_driver_ignoring_cancellation_is_aborted_after_the_grace_period() {
        let (mut sv, _) = supervised(ErrorKind::Transient, false);
        sv.factory = Arc::new(Stubborn(Arc::new(AtomicU32::new(0))));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(supervise(sv, cancel.clone()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t0 = tokio::time::Instant::now();
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops")
            .expect("no panic");
        assert!(t0.elapsed() <= Duration::from_millis(1100));
    }
}
