//! The long view of values that arrive at window or evaluation rate (window
//! features, detector evaluations): per time bucket, the mean of each of a few
//! columns. At that rate a bucket holds a handful of values, so a mean per column
//! is what a plot over hours needs, at a third of a min/max/mean bucket's size.
//!
//! Memory is fixed when the ring is made: `points × columns` means (f32) and counts
//! (u16), plus a bucket number per point.

use std::time::Duration;

use super::history::Series;

/// Means of `columns` values per bucket, over the last `points` buckets.
#[derive(Debug)]
pub struct MeanRing {
    width_ns: u64,
    points: usize,
    columns: usize,
    /// The bucket number + 1 each slot holds (0: never written).
    nos: Vec<u64>,
    /// `points × columns` running means and their counts.
    means: Vec<f32>,
    counts: Vec<u16>,
}

impl MeanRing {
    /// Buckets of `span / points` (at least 1 ms).
    pub fn new(span: Duration, points: usize, columns: usize) -> MeanRing {
        let points = points.max(2);
        MeanRing {
            width_ns: (span.as_nanos() as u64 / points as u64).max(1_000_000),
            points,
            columns,
            nos: vec![0; points],
            means: vec![0.0; points * columns],
            counts: vec![0; points * columns],
        }
    }

    /// Bytes held (fixed).
    pub fn bytes(&self) -> usize {
        self.nos.len() * std::mem::size_of::<u64>()
            + self.means.len() * std::mem::size_of::<f32>()
            + self.counts.len() * std::mem::size_of::<u16>()
    }

    pub fn columns(&self) -> usize {
        self.columns
    }

    /// Adds one value per column (extra values are ignored, missing ones and
    /// non-finite ones count as absent) at agent-monotonic time `mono_ns`. A value
    /// older than the bucket its slot holds now is dropped.
    pub fn record(&mut self, mono_ns: u64, values: impl IntoIterator<Item = f64>) {
        let no = mono_ns / self.width_ns + 1;
        let slot = (no % self.points as u64) as usize;
        let row = slot * self.columns..(slot + 1) * self.columns;
        match self.nos[slot] {
            held if held == no => {}
            held if held > no => return,
            _ => {
                self.nos[slot] = no;
                self.means[row.clone()].fill(0.0);
                self.counts[row.clone()].fill(0);
            }
        }
        let cells = self.means[row.clone()]
            .iter_mut()
            .zip(&mut self.counts[row]);
        for ((mean, n), v) in cells.zip(values) {
            if !v.is_finite() || *n == u16::MAX {
                continue;
            }
            *n += 1;
            *mean += (v as f32 - *mean) / f32::from(*n);
        }
    }

    /// Column `column`'s buckets up to now (or the newest bucket, when that is
    /// ahead: a simulation faster than real time), oldest first, from the first
    /// bucket with a value; `now` is the agent clock's (mono, wall) time. The
    /// mean is in the series' mean (min and max are `None`).
    pub fn series(&self, column: usize, now_mono_ns: u64, now_wall_ns: i64) -> Series {
        let newest = self.nos.iter().copied().max().unwrap_or(0);
        let now_no = (now_mono_ns / self.width_ns + 1).max(newest);
        let first = now_no.saturating_sub(self.points as u64 - 1).max(1);
        let points = (first..=now_no)
            .map(|no| {
                let slot = (no % self.points as u64) as usize;
                let i = slot * self.columns + column;
                let held = self.nos[slot] == no && column < self.columns && self.counts[i] > 0;
                let start = (no - 1) * self.width_ns;
                // Signed: a simulation faster than real time runs ahead.
                let wall = now_wall_ns + (start as i64 - now_mono_ns as i64);
                (wall / 1_000_000, None, None, held.then(|| self.means[i]))
            })
            .skip_while(|p| p.3.is_none())
            .collect();
        Series {
            bucket_s: self.width_ns as f64 / 1e9,
            points,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn each_bucket_holds_the_mean_of_each_column_and_old_buckets_are_reused() {
        // 10 buckets of 1 s.
        let mut r = MeanRing::new(Duration::from_secs(10), 10, 2);
        r.record(2 * S, [1.0, 10.0]);
        r.record(2 * S + S / 2, [3.0, f64::NAN]);
        r.record(4 * S, [5.0, 20.0]);
        let s = r.series(0, 4 * S + S / 2, 1_000_000 * 1_000_000);
        assert_eq!(s.bucket_s, 1.0);
        let means: Vec<_> = s.points.iter().map(|p| p.3).collect();
        assert_eq!(
            means,
            vec![Some(2.0), None, Some(5.0)],
            "from the first value"
        );
        assert_eq!(s.points[0].0, 1_000_000 - 2_500, "bucket start, wall ms");
        let c1: Vec<_> = r.series(1, 4 * S, 0).points.iter().map(|p| p.3).collect();
        assert_eq!(c1, vec![Some(10.0), None, Some(20.0)], "NaN is absent");
        // 10 s later the slot of second 2 holds second 12.
        r.record(12 * S, [7.0, 7.0]);
        let s = r.series(0, 12 * S, 0);
        assert_eq!(s.points.len(), 9, "seconds 4..=12");
        assert_eq!(s.points.last().map(|p| p.3), Some(Some(7.0)));
        // A value for a bucket that has been overwritten is dropped.
        r.record(2 * S, [100.0, 100.0]);
        assert!(
            r.series(0, 12 * S, 0)
                .points
                .iter()
                .all(|p| p.3 != Some(100.0))
        );
    }

    #[test]
    fn memory_is_fixed_when_made() {
        let mut r = MeanRing::new(Duration::from_secs(7200), 100, 16);
        let before = r.bytes();
        assert_eq!(before, 100 * 8 + 100 * 16 * (4 + 2));
        for i in 0..10_000u64 {
            r.record(i * S, (0..20).map(|c| c as f64));
        }
        assert_eq!(r.bytes(), before);
    }
}
