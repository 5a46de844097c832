//! A downsampled history of every signal, for the web UI's plots: per signal two
//! rings of buckets (min, max and mean of the good samples in each), a recent one
//! (minutes, fine buckets) and a long one (hours, coarse buckets).
//!
//! Memory is fixed at start-up: signals × points × 2 rings × 12 bytes, allocated and
//! written once (so it is resident and counted from the start, not discovered
//! hours later), reported by [`SignalHistory::bytes`]. The pipeline task records
//! each batch it drains under one lock, with nothing allocated per sample.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use edge_driver_api::{Quality, Sample};
use serde::{Deserialize, Serialize};

/// How much history is kept (`[ui] history`, `history_points`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Span of the recent ring.
    pub recent: Duration,
    /// Span of the long ring.
    pub long: Duration,
    /// Buckets per ring.
    pub points: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            recent: Duration::from_secs(300),
            long: Duration::from_secs(7200),
            points: 100,
        }
    }
}

/// One finished bucket: the min, max and mean of its good samples (NaN: none).
#[derive(Clone, Copy, Debug)]
struct Bucket {
    min: f32,
    max: f32,
    mean: f32,
}

const EMPTY: Bucket = Bucket {
    min: f32::NAN,
    max: f32::NAN,
    mean: f32::NAN,
};

/// The bucket a signal is filling: updated per sample without touching the ring
/// (no division on the per-sample path), written to the ring when the next bucket
/// starts.
#[derive(Clone, Copy, Debug)]
struct Head {
    /// Bucket number (mono time / width) + 1; 0: nothing recorded yet.
    no: u64,
    /// Mono time at which this bucket ends.
    end_ns: u64,
    /// Its place in the signal's ring.
    slot: u32,
    n: u32,
    sum: f64,
    min: f32,
    max: f32,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            no: 0,
            end_ns: 0,
            slot: 0,
            n: 0,
            sum: 0.0,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
        }
    }
}

impl Head {
    fn bucket(&self) -> Bucket {
        if self.n == 0 {
            return EMPTY;
        }
        Bucket {
            min: self.min,
            max: self.max,
            mean: (self.sum / f64::from(self.n)) as f32,
        }
    }
}

#[derive(Debug)]
struct Ring {
    width_ns: u64,
    points: usize,
    /// `points` buckets per signal, signal after signal.
    buckets: Vec<Bucket>,
    heads: Vec<Head>,
}

impl Ring {
    fn new(span: Duration, points: usize, signals: usize) -> Ring {
        let width_ns = (span.as_nanos() as u64 / points as u64).max(1_000_000);
        Ring {
            width_ns,
            points,
            buckets: vec![EMPTY; signals * points],
            heads: vec![Head::default(); signals],
        }
    }

    #[inline]
    fn record(&mut self, signal: usize, mono_ns: u64, v: f32) {
        let Some(head) = self.heads.get_mut(signal) else {
            return;
        };
        if mono_ns >= head.end_ns || head.no == 0 {
            let no = mono_ns / self.width_ns + 1;
            if no < head.no {
                return;
            }
            if no > head.no {
                let base = signal * self.points;
                let Some(ring) = self.buckets.get_mut(base..base + self.points) else {
                    return;
                };
                start_bucket(ring, head, no, self.width_ns);
            }
        } else if mono_ns + self.width_ns < head.end_ns {
            return; // older than the bucket being filled: out of order, dropped
        }
        head.n += 1;
        head.sum += f64::from(v);
        head.min = head.min.min(v);
        head.max = head.max.max(v);
    }

    /// The buckets of `signal` up to now (or its newest sample, when that is
    /// ahead: a simulation faster than real time), oldest first: (bucket start
    /// mono ns, bucket).
    fn read(&self, signal: usize, now_mono_ns: u64) -> Vec<(u64, Bucket)> {
        let Some(head) = self.heads.get(signal) else {
            return Vec::new();
        };
        let base = signal * self.points;
        let now_no = (now_mono_ns / self.width_ns + 1).max(head.no);
        let first = now_no.saturating_sub(self.points as u64 - 1).max(1);
        (first..=now_no)
            .map(|no| {
                let b = if no == head.no {
                    head.bucket()
                } else if no < head.no && head.no - no < self.points as u64 {
                    self.buckets[base + (no % self.points as u64) as usize]
                } else {
                    EMPTY
                };
                ((no - 1) * self.width_ns, b)
            })
            .collect()
    }
}

/// Closes `head`'s bucket into `ring`, empties the buckets skipped since, and
/// starts bucket `no`.
fn start_bucket(ring: &mut [Bucket], head: &mut Head, no: u64, width_ns: u64) {
    let points = ring.len() as u64;
    if head.no > 0 {
        ring[head.slot as usize] = head.bucket();
        let gap = (no - head.no).min(points);
        for k in 1..gap {
            ring[((no - k) % points) as usize] = EMPTY;
        }
    }
    *head = Head {
        no,
        end_ns: no * width_ns,
        slot: (no % points) as u32,
        ..Head::default()
    };
    ring[head.slot as usize] = EMPTY;
}

/// Which ring to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    Recent,
    Long,
}

/// One bucket as plotted: `[t_ms, min, max, mean]`, `None` (JSON `null`) when
/// empty.
pub type Point = (i64, Option<f32>, Option<f32>, Option<f32>);

/// A signal's plot data: buckets oldest first, times in wall-clock milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub bucket_s: f64,
    pub points: Vec<Point>,
}

/// Every signal's history.
#[derive(Debug)]
pub struct SignalHistory {
    rings: Mutex<[Ring; 2]>,
    signals: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SignalHistory {
    pub fn new(config: HistoryConfig, signals: usize) -> SignalHistory {
        let points = config.points.max(2);
        SignalHistory {
            rings: Mutex::new([
                Ring::new(config.recent, points, signals),
                Ring::new(config.long, points, signals),
            ]),
            signals,
        }
    }

    /// Bytes held (fixed at start-up).
    pub fn bytes(&self) -> usize {
        let r = lock(&self.rings);
        r.iter()
            .map(|r| {
                r.buckets.len() * std::mem::size_of::<Bucket>()
                    + r.heads.len() * std::mem::size_of::<Head>()
            })
            .sum()
    }

    pub fn signals(&self) -> usize {
        self.signals
    }

    /// Records the good samples of a batch (the pipeline task, once per batch).
    pub fn record(&self, batch: &[Sample]) {
        let mut rings = lock(&self.rings);
        for s in batch {
            if s.quality != Quality::Good {
                continue;
            }
            let v = s.value.as_f64() as f32;
            for r in rings.iter_mut() {
                r.record(s.signal.index(), s.ts.mono_ns, v);
            }
        }
    }

    /// `signal`'s buckets in `span`; `now` is the agent clock's (mono, wall) time.
    pub fn series(&self, signal: usize, span: Span, now_mono_ns: u64, now_wall_ns: i64) -> Series {
        let rings = lock(&self.rings);
        let r = &rings[span as usize];
        let opt = |v: f32| v.is_finite().then_some(v);
        Series {
            bucket_s: r.width_ns as f64 / 1e9,
            points: r
                .read(signal, now_mono_ns)
                .into_iter()
                .map(|(t, b)| {
                    // Signed: a simulation faster than real time runs ahead.
                    let wall = now_wall_ns + (t as i64 - now_mono_ns as i64);
                    (wall / 1_000_000, opt(b.min), opt(b.max), opt(b.mean))
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_driver_api::{SignalId, Timestamp};

    fn sample(signal: u32, secs: f64, v: f64) -> Sample {
        let ts = Timestamp {
            wall_ns: 0,
            mono_ns: (secs * 1e9) as u64,
            synced: true,
        };
        Sample::new_f64(ts, SignalId(signal), v)
    }

    fn config() -> HistoryConfig {
        HistoryConfig {
            recent: Duration::from_secs(10),
            long: Duration::from_secs(100),
            points: 10,
        }
    }

    #[test]
    fn buckets_hold_the_min_max_and_mean_of_their_good_samples() {
        let h = SignalHistory::new(config(), 2);
        let mut bad = sample(0, 2.5, 0.0);
        bad.quality = Quality::Stale;
        h.record(&[
            sample(0, 2.1, 1.0),
            sample(0, 2.5, 5.0),
            bad,
            sample(1, 2.2, 9.0),
        ]);
        h.record(&[sample(0, 2.9, 3.0), sample(0, 4.0, 7.0)]);
        let s = h.series(0, Span::Recent, 4_500_000_000, 1_000_000_000_000);
        assert_eq!(s.bucket_s, 1.0);
        assert_eq!(s.points.len(), 5, "buckets since the clock's origin");
        let at = |sec: i64| {
            s.points
                .iter()
                .find(|p| p.0 == 1_000_000 - 4_500 + sec * 1000)
                .copied()
        };
        assert_eq!(
            at(2),
            Some((1_000_000 - 2_500, Some(1.0), Some(5.0), Some(3.0)))
        );
        assert_eq!(at(3).map(|p| p.3), Some(None), "no sample in 3–4 s");
        assert_eq!(at(4).map(|p| p.3), Some(Some(7.0)));
        // The long ring has one 10 s bucket with all four good samples.
        let l = h.series(0, Span::Long, 4_500_000_000, 0);
        assert_eq!(
            l.points.last().map(|p| (p.1, p.2, p.3)),
            Some((Some(1.0), Some(7.0), Some(4.0)))
        );
        let other = h.series(1, Span::Recent, 4_500_000_000, 0);
        assert_eq!(other.points.iter().filter(|p| p.3.is_some()).count(), 1);
    }

    #[test]
    fn a_ring_forgets_what_is_older_than_its_span_and_clears_skipped_buckets() {
        let h = SignalHistory::new(config(), 1);
        for i in 0..10 {
            h.record(&[sample(0, f64::from(i) + 0.5, f64::from(i))]);
        }
        // 25 s later: everything left the 10 s ring; a gap of empty buckets.
        h.record(&[sample(0, 35.5, 42.0)]);
        let s = h.series(0, Span::Recent, 35_600_000_000, 0);
        let values: Vec<_> = s.points.iter().filter_map(|p| p.3).collect();
        assert_eq!(values, vec![42.0]);
        // Out of order into an older bucket: dropped, nothing panics.
        h.record(&[sample(0, 1.0, 99.0)]);
        assert_eq!(h.series(0, Span::Recent, 35_600_000_000, 0), s);
        // An unknown signal is ignored.
        h.record(&[sample(7, 36.0, 1.0)]);
        assert!(
            h.series(7, Span::Recent, 36_000_000_000, 0)
                .points
                .iter()
                .all(|p| p.3.is_none())
        );
    }

    #[test]
    fn memory_is_fixed_by_the_config() {
        let h = SignalHistory::new(HistoryConfig::default(), 1000);
        // 1,000 signals × 100 points × 2 rings × 12 bytes, plus the heads (40 bytes).
        assert_eq!(h.bytes(), 1000 * 100 * 2 * 12 + 2 * 1000 * 40);
        h.record(&[sample(3, 1.0, 1.0)]);
        assert_eq!(h.bytes(), 1000 * 100 * 2 * 12 + 2 * 1000 * 40);
    }
}
