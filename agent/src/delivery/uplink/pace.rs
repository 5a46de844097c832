//! Pacing of the backlog replay: how many backlog publishes may be in flight, or
//! sent, right now. Live records are never paced.

use std::time::Duration;

use tokio::time::Instant;

use super::ReplayRate;

/// PUBACK latency above `CONGESTED_FACTOR` × the fastest seen (plus
/// [`CONGESTED_SLACK`]) is congestion: the backlog's share of the window halves.
const CONGESTED_FACTOR: u32 = 4;
const CONGESTED_SLACK: Duration = Duration::from_millis(20);
/// PUBACK latency within `PROMPT_FACTOR` × the fastest seen (plus [`PROMPT_SLACK`])
/// lets the backlog's share grow by one.
const PROMPT_FACTOR: u32 = 2;
const PROMPT_SLACK: Duration = Duration::from_millis(5);
/// Backlog publishes in flight when a connection starts (auto pacing).
const INITIAL_SHARE: f64 = 4.0;

/// The backlog pacing of one connection.
#[derive(Debug)]
pub(super) enum Pacer {
    /// A fixed rate: a token bucket of backlog messages per second.
    Rate(Budget),
    /// Auto: additive increase, multiplicative decrease of the backlog's in-flight
    /// share on PUBACK latency.
    Adaptive(Adaptive),
}

impl Pacer {
    pub(super) fn new(rate: ReplayRate, window: u16) -> Pacer {
        match rate {
            ReplayRate::PerSecond(r) => Pacer::Rate(Budget::new(r, window)),
            ReplayRate::Auto => Pacer::Adaptive(Adaptive::new(window)),
        }
    }

    /// Backlog publishes that may be sent now, with `in_flight` backlog publishes
    /// not yet acknowledged.
    pub(super) fn allowance(&mut self, in_flight: usize) -> usize {
        match self {
            Pacer::Rate(b) => {
                b.refill();
                b.tokens as usize
            }
            Pacer::Adaptive(a) => (a.share as usize).saturating_sub(in_flight),
        }
    }

    /// `n` backlog publishes were sent.
    pub(super) fn sent(&mut self, n: usize) {
        if let Pacer::Rate(b) = self {
            b.tokens = (b.tokens - n as f64).max(0.0);
        }
    }

    /// A backlog publish was acknowledged after `latency`.
    pub(super) fn acked(&mut self, latency: Duration) {
        if let Pacer::Adaptive(a) = self {
            a.acked(latency);
        }
    }

    /// When a fixed rate will allow the next backlog publish (`None` for auto
    /// pacing, which waits for PUBACKs).
    pub(super) fn next_in(&self) -> Option<Duration> {
        match self {
            Pacer::Rate(b) => Some(b.refill_in()),
            Pacer::Adaptive(_) => None,
        }
    }
}

/// Replay budget: backlog messages per second, as tokens.
#[derive(Debug)]
pub(super) struct Budget {
    rate: f64,
    tokens: f64,
    last_refill: Instant,
}

impl Budget {
    fn new(replay_rate: u32, window: u16) -> Budget {
        let rate = f64::from(replay_rate.max(1));
        Budget {
            rate,
            tokens: rate.min(f64::from(window)),
            last_refill: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        self.tokens = (self.tokens + (now - self.last_refill).as_secs_f64() * self.rate)
            .min(self.rate.max(1.0));
        self.last_refill = now;
    }

    /// Until at least one token is there.
    fn refill_in(&self) -> Duration {
        Duration::from_secs_f64((1.0 - self.tokens).max(0.0) / self.rate)
            .max(Duration::from_millis(5))
    }
}

/// The backlog's share of the window under auto pacing.
#[derive(Debug)]
pub(super) struct Adaptive {
    share: f64,
    /// A quarter of the window stays for live records.
    max: f64,
    fastest: Option<Duration>,
    last_cut: Option<Instant>,
}

impl Adaptive {
    fn new(window: u16) -> Adaptive {
        let max = f64::from((window - window / 4).max(1));
        Adaptive {
            share: INITIAL_SHARE.min(max),
            max,
            fastest: None,
            last_cut: None,
        }
    }

    fn acked(&mut self, latency: Duration) {
        let fastest = *self
            .fastest
            .insert(self.fastest.map_or(latency, |f| f.min(latency)));
        if latency > fastest * CONGESTED_FACTOR + CONGESTED_SLACK {
            // At most one cut per round trip: the acks of one congested window are
            // one signal, not many.
            let now = Instant::now();
            if self
                .last_cut
                .is_none_or(|t| now - t >= latency.max(Duration::from_millis(1)))
            {
                self.share = (self.share / 2.0).max(1.0);
                self.last_cut = Some(now);
            }
        } else if latency <= fastest * PROMPT_FACTOR + PROMPT_SLACK {
            self.share = (self.share + 1.0).min(self.max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_pacing_grows_on_prompt_pubacks_up_to_three_quarters_of_the_window() {
        let mut p = Pacer::new(ReplayRate::Auto, 32);
        assert_eq!(p.allowance(0), 4);
        for _ in 0..100 {
            p.acked(Duration::from_micros(200));
        }
        assert_eq!(p.allowance(0), 24, "a quarter of 32 stays for live records");
        assert_eq!(p.allowance(20), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn auto_pacing_halves_once_per_round_trip_when_pubacks_slow_down() {
        let mut p = Pacer::new(ReplayRate::Auto, 64);
        for _ in 0..100 {
            p.acked(Duration::from_millis(1));
        }
        assert_eq!(p.allowance(0), 48);
        // A congested window: many slow acks at once count as one signal.
        for _ in 0..10 {
            p.acked(Duration::from_millis(200));
        }
        assert_eq!(p.allowance(0), 24);
        tokio::time::advance(Duration::from_millis(250)).await;
        p.acked(Duration::from_millis(200));
        assert_eq!(p.allowance(0), 12);
        for _ in 0..5 {
            p.acked(Duration::from_millis(1));
        }
        assert_eq!(p.allowance(0), 17, "prompt again: additive increase");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fixed_rate_allows_that_many_per_second() {
        let mut p = Pacer::new(ReplayRate::PerSecond(100), 32);
        assert_eq!(p.allowance(0), 32);
        p.sent(32);
        assert_eq!(p.allowance(0), 0);
        assert!(p.next_in().is_some());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(p.allowance(0), 10);
    }
}
