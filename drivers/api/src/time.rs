//! Time as the agent sees it.
//!
//! Gateways often boot without a battery-backed clock and get wall time from NTP
//! minutes later (or never). Every [`Timestamp`] therefore carries:
//! * `mono_ns`: monotonic nanoseconds since the agent started. Ordering, windows and
//!   rates use only this; it never jumps.
//! * `wall_ns`: Unix-epoch nanoseconds as the system clock said (or, for a virtual
//!   clock, origin + monotonic time). For humans and upstream systems.
//! * `synced`: whether the kernel reported the wall clock as synchronised when the
//!   sample was taken, so consumers can distrust wall times from an unsynced box.
//!
//! The monotonic base is `tokio::time::Instant`, so tests that call
//! `tokio::time::pause()` run the whole agent in virtual, accelerated time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When a sample was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Timestamp {
    /// Unix-epoch nanoseconds (wall clock; may jump, may be wrong if `!synced`).
    pub wall_ns: i64,
    /// Nanoseconds since the agent's clock origin (monotonic).
    pub mono_ns: u64,
    /// The wall clock was synchronised when this timestamp was taken.
    pub synced: bool,
}

impl Timestamp {
    /// Monotonic time in seconds (the unit features and detectors work in).
    #[inline]
    pub fn mono_secs(&self) -> f64 {
        self.mono_ns as f64 * 1e-9
    }
}

/// Wall-clock offset captured by [`Clock::anchor`]: stamps any monotonic instant
/// without reading the clocks again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockAnchor {
    wall_minus_mono: i64,
    synced: bool,
}

impl ClockAnchor {
    /// The timestamp of monotonic instant `mono_ns`.
    #[inline]
    pub fn at(&self, mono_ns: u64) -> Timestamp {
        Timestamp {
            wall_ns: self
                .wall_minus_mono
                .saturating_add(i64::try_from(mono_ns).unwrap_or(i64::MAX)),
            mono_ns,
            synced: self.synced,
        }
    }
}

#[derive(Debug)]
enum Mode {
    /// Wall time from the system clock.
    System,
    /// Wall time = origin + monotonic elapsed; for tests and accelerated simulation.
    Virtual { wall_origin_ns: i64 },
}

#[derive(Debug)]
struct Inner {
    origin: tokio::time::Instant,
    mode: Mode,
    synced: AtomicBool,
}

/// The agent's clock. Cheap to clone; all clones share one origin.
#[derive(Clone, Debug)]
pub struct Clock {
    inner: Arc<Inner>,
}

impl Clock {
    /// A clock on the system's wall time; `synced` starts from the kernel's view.
    pub fn system() -> Self {
        let synced = kernel_clock_synchronised().unwrap_or(false);
        Clock {
            inner: Arc::new(Inner {
                origin: tokio::time::Instant::now(),
                mode: Mode::System,
                synced: AtomicBool::new(synced),
            }),
        }
    }

    /// A clock whose wall time is `wall_origin_ns` plus monotonic elapsed time.
    /// Deterministic under `tokio::time::pause()`; always reports `synced`.
    pub fn virtual_from(wall_origin_ns: i64) -> Self {
        Clock {
            inner: Arc::new(Inner {
                origin: tokio::time::Instant::now(),
                mode: Mode::Virtual { wall_origin_ns },
                synced: AtomicBool::new(true),
            }),
        }
    }

    /// Whether this clock derives wall time from monotonic time.
    pub fn is_virtual(&self) -> bool {
        matches!(self.inner.mode, Mode::Virtual { .. })
    }

    /// Monotonic nanoseconds since the origin.
    #[inline]
    pub fn mono_ns(&self) -> u64 {
        duration_ns(self.inner.origin.elapsed())
    }

    /// The tokio instant corresponding to a monotonic timestamp.
    pub fn instant_at(&self, mono_ns: u64) -> tokio::time::Instant {
        self.inner.origin + Duration::from_nanos(mono_ns)
    }

    /// Now.
    pub fn now(&self) -> Timestamp {
        let mono_ns = self.mono_ns();
        let wall_ns = match self.inner.mode {
            Mode::System => system_wall_ns(),
            Mode::Virtual { wall_origin_ns } => {
                wall_origin_ns.saturating_add(i64::try_from(mono_ns).unwrap_or(i64::MAX))
            }
        };
        Timestamp {
            wall_ns,
            mono_ns,
            synced: self.is_synced(),
        }
    }

    /// A timestamp for a monotonic instant that is not "now" (e.g. a simulated sample
    /// time). Wall time is extrapolated from the current offset between the clocks.
    /// To stamp many samples, take one [`Clock::anchor`] and use it for all of them.
    pub fn at_mono(&self, mono_ns: u64) -> Timestamp {
        self.anchor().at(mono_ns)
    }

    /// The current offset between wall and monotonic time (reads the clocks once).
    pub fn anchor(&self) -> ClockAnchor {
        let now = self.now();
        ClockAnchor {
            wall_minus_mono: now
                .wall_ns
                .saturating_sub(i64::try_from(now.mono_ns).unwrap_or(i64::MAX)),
            synced: now.synced,
        }
    }

    /// Whether the wall clock is currently believed synchronised.
    #[inline]
    pub fn is_synced(&self) -> bool {
        self.inner.synced.load(Ordering::Relaxed)
    }

    /// Re-reads the kernel's synchronisation state (system clocks only) and returns it.
    pub fn refresh_sync(&self) -> bool {
        if let Mode::System = self.inner.mode {
            let now = kernel_clock_synchronised().unwrap_or(false);
            self.inner.synced.store(now, Ordering::Relaxed);
        }
        self.is_synced()
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn system_wall_ns() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        // A clock set before 1970: report it as such rather than failing.
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

/// Asks the kernel whether an NTP/PTP daemon (chrony, ntpd, systemd-timesyncd) is
/// disciplining the clock: `adjtimex` in read-only mode, `STA_UNSYNC` clear and no
/// `TIME_ERROR` state. `None` where the call is unavailable.
#[allow(unsafe_code)]
pub fn kernel_clock_synchronised() -> Option<bool> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `timex` is a plain C struct for which all-zero is a valid value;
        // with `modes == 0` adjtimex only reads the kernel state into it.
        let (state, status) = unsafe {
            let mut tx: libc::timex = std::mem::zeroed();
            let state = libc::adjtimex(&mut tx);
            (state, tx.status)
        };
        if state < 0 {
            return None;
        }
        Some(state != libc::TIME_ERROR && status & libc::STA_UNSYNC == 0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm); `m` in 1..=12, `d` in 1..=31.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn virtual_clock_advances_with_paused_tokio_time() {
        let clock = Clock::virtual_from(1_000_000_000);
        assert_eq!(clock.now().mono_ns, 0);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let now = clock.now();
        assert_eq!(now.mono_ns, 3600 * 1_000_000_000);
        assert_eq!(now.wall_ns, 1_000_000_000 + 3600 * 1_000_000_000);
        assert!(now.synced);
        assert_eq!(clock.at_mono(5).wall_ns, 1_000_000_005);
    }

    #[test]
    fn kernel_sync_query_does_not_fail_on_linux() {
        // Whatever the machine's state, the query itself must work on Linux.
        #[cfg(target_os = "linux")]
        assert!(kernel_clock_synchronised().is_some());
    }
}
