//! Sliding windows over one signal, count- or time-based.
//!
//! A window keeps the most recent samples of one signal in a fixed-capacity circular
//! buffer allocated once at start-up. When a window is complete it is copied into a
//! [`Frame`] (contiguous, time relative to the window's end) for the feature stage.
//!
//! * **Count**: `size` samples, a new frame every `hop` samples once `size` are in.
//! * **Time**: frames end on multiples of `hop` on the monotonic clock, so all signals
//!   of an asset close their windows at the same instants. A frame holds the samples
//!   with `end - size <= t < end`. A gap longer than a hop skips the empty windows.
//!   The buffer holds at most `max_samples`; beyond that the oldest sample is dropped
//!   and counted (a signal arriving faster than configured).

/// How a window is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowSpec {
    Count {
        size: usize,
        hop: usize,
    },
    Time {
        size_ns: u64,
        hop_ns: u64,
        /// Capacity of the buffer (samples).
        max_samples: usize,
    },
}

impl WindowSpec {
    /// Samples the buffer must hold.
    pub fn capacity(&self) -> usize {
        match *self {
            WindowSpec::Count { size, .. } => size,
            WindowSpec::Time { max_samples, .. } => max_samples,
        }
    }

    /// How many hops one window spans (a change shows fully after that many).
    pub fn hops_per_window(&self) -> usize {
        match *self {
            WindowSpec::Count { size, hop } => size.div_ceil(hop.max(1)),
            WindowSpec::Time {
                size_ns, hop_ns, ..
            } => size_ns.div_ceil(hop_ns.max(1)) as usize,
        }
    }
}

/// A completed window, contiguous, ready for feature extraction.
#[derive(Clone, Debug, Default)]
pub struct Frame {
    /// Monotonic time at which the window closed (ns).
    pub end_ns: u64,
    /// Sample times in seconds relative to `end_ns` (≤ 0).
    pub t: Vec<f64>,
    /// Sample values.
    pub x: Vec<f64>,
}

impl Frame {
    /// A frame whose buffers never reallocate for windows up to `capacity` samples.
    pub fn with_capacity(capacity: usize) -> Self {
        Frame {
            end_ns: 0,
            t: Vec::with_capacity(capacity),
            x: Vec::with_capacity(capacity),
        }
    }

    pub fn len(&self) -> usize {
        self.x.len()
    }

    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }

    /// Monotonic end time in seconds.
    pub fn end_secs(&self) -> f64 {
        self.end_ns as f64 * 1e-9
    }
}

/// One signal's window state.
#[derive(Debug)]
pub struct Window {
    spec: WindowSpec,
    ts: Box<[u64]>,
    xs: Box<[f64]>,
    head: usize,
    len: usize,
    pushed: u64,
    next_end_ns: Option<u64>,
    last_ts: Option<u64>,
    /// Time windows: since when data has come without a gap longer than the
    /// window. A window is emitted only when it is full: data since its start.
    since_ns: Option<u64>,
    warming: u64,
    overflowed: u64,
    out_of_order: u64,
    skipped_windows: u64,
}

impl Window {
    pub fn new(spec: WindowSpec) -> Self {
        let cap = spec.capacity().max(1);
        Window {
            spec,
            ts: vec![0; cap].into_boxed_slice(),
            xs: vec![0.0; cap].into_boxed_slice(),
            head: 0,
            len: 0,
            pushed: 0,
            next_end_ns: None,
            last_ts: None,
            since_ns: None,
            warming: 0,
            overflowed: 0,
            out_of_order: 0,
            skipped_windows: 0,
        }
    }

    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    /// Samples dropped because the time window held more than `max_samples`.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// Samples ignored because their time was before the previous sample's.
    pub fn out_of_order(&self) -> u64 {
        self.out_of_order
    }

    /// Time windows not emitted because data began (or resumed after a gap) after
    /// their start: a partly filled window would judge a machine on a few samples.
    pub fn warming(&self) -> u64 {
        self.warming
    }

    /// Time windows skipped over data gaps.
    pub fn skipped_windows(&self) -> u64 {
        self.skipped_windows
    }

    #[inline]
    fn cap(&self) -> usize {
        self.xs.len()
    }

    #[inline]
    fn push_raw(&mut self, t: u64, x: f64) {
        let cap = self.cap();
        let idx = (self.head + self.len) % cap;
        self.ts[idx] = t;
        self.xs[idx] = x;
        if self.len == cap {
            self.head = (self.head + 1) % cap;
        } else {
            self.len += 1;
        }
    }

    #[inline]
    fn pop_front(&mut self) {
        self.head = (self.head + 1) % self.cap();
        self.len -= 1;
    }

    /// Adds a sample at monotonic time `t_ns`. Returns `true` when a window completed;
    /// `frame` then holds it. Samples older than the previous one are ignored (counted).
    #[inline]
    pub fn push(&mut self, t_ns: u64, x: f64, frame: &mut Frame) -> bool {
        if let Some(last) = self.last_ts
            && t_ns < last
        {
            self.out_of_order += 1;
            return false;
        }
        let previous = self.last_ts.replace(t_ns);
        match self.spec {
            WindowSpec::Count { size, hop } => {
                self.push_raw(t_ns, x);
                self.pushed += 1;
                if self.pushed >= size as u64 && (self.pushed - size as u64) % hop as u64 == 0 {
                    self.fill_frame(t_ns, frame);
                    return true;
                }
                false
            }
            WindowSpec::Time {
                size_ns,
                hop_ns,
                max_samples,
            } => {
                let resumed = previous.is_some_and(|p| t_ns - p > size_ns);
                let mut emitted = false;
                let next_end = *self
                    .next_end_ns
                    .get_or_insert_with(|| (t_ns / hop_ns + 1) * hop_ns);
                if t_ns >= next_end {
                    let start = next_end.saturating_sub(size_ns);
                    while self.len > 0 && self.ts[self.head] < start {
                        self.pop_front();
                    }
                    let full = next_end >= size_ns && self.since_ns.is_some_and(|s| s <= start);
                    if self.len > 0 && full {
                        self.fill_frame(next_end, frame);
                        emitted = true;
                    } else if self.len > 0 {
                        self.warming += 1;
                    }
                    let mut new_end = next_end + hop_ns;
                    if t_ns >= new_end {
                        // A gap: jump to the window that will contain this sample.
                        let aligned = (t_ns / hop_ns + 1) * hop_ns;
                        self.skipped_windows += (aligned - new_end) / hop_ns;
                        new_end = aligned;
                    }
                    self.next_end_ns = Some(new_end);
                    // Samples before the next window's start are no longer needed.
                    let keep_from = new_end.saturating_sub(size_ns);
                    while self.len > 0 && self.ts[self.head] < keep_from {
                        self.pop_front();
                    }
                }
                if self.len == max_samples.max(1) {
                    self.overflowed += 1;
                }
                if resumed {
                    // The data stopped for longer than a window: fill again.
                    self.since_ns = None;
                }
                self.since_ns.get_or_insert(t_ns);
                self.push_raw(t_ns, x);
                emitted
            }
        }
    }

    fn fill_frame(&self, end_ns: u64, frame: &mut Frame) {
        frame.end_ns = end_ns;
        frame.t.clear();
        frame.x.clear();
        let cap = self.cap();
        for i in 0..self.len {
            let idx = (self.head + i) % cap;
            let dt = self.ts[idx] as i128 - end_ns as i128;
            frame.t.push(dt as f64 * 1e-9);
            frame.x.push(self.xs[idx]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn count_window_emits_every_hop_once_full() {
        let mut w = Window::new(WindowSpec::Count { size: 4, hop: 2 });
        let mut f = Frame::with_capacity(4);
        let mut emitted = Vec::new();
        for i in 0..10u64 {
            if w.push(i * S, i as f64, &mut f) {
                emitted.push(f.x.clone());
            }
        }
        assert_eq!(
            emitted,
            vec![
                vec![0.0, 1.0, 2.0, 3.0],
                vec![2.0, 3.0, 4.0, 5.0],
                vec![4.0, 5.0, 6.0, 7.0],
                vec![6.0, 7.0, 8.0, 9.0]
            ]
        );
        assert_eq!(f.t, vec![-3.0, -2.0, -1.0, 0.0]);
    }

    #[test]
    fn time_window_closes_on_hop_boundaries_with_overlap() {
        let mut w = Window::new(WindowSpec::Time {
            size_ns: 4 * S,
            hop_ns: 2 * S,
            max_samples: 16,
        });
        let mut f = Frame::with_capacity(16);
        let mut emitted = Vec::new();
        for i in 0..9u64 {
            if w.push(i * S, i as f64, &mut f) {
                emitted.push((f.end_ns / S, f.x.clone()));
            }
        }
        // The window ending at 2 s would start before the data: not full, not emitted.
        assert_eq!(w.warming(), 1);
        assert_eq!(
            emitted,
            vec![
                (4, vec![0.0, 1.0, 2.0, 3.0]),
                (6, vec![2.0, 3.0, 4.0, 5.0]),
                (8, vec![4.0, 5.0, 6.0, 7.0]),
            ]
        );
    }

    #[test]
    fn time_window_skips_gaps_and_counts_them() {
        let mut w = Window::new(WindowSpec::Time {
            size_ns: 2 * S,
            hop_ns: 2 * S,
            max_samples: 16,
        });
        let mut f = Frame::with_capacity(16);
        assert!(!w.push(2 * S, 1.0, &mut f));
        assert!(!w.push(3 * S, 1.5, &mut f));
        assert!(w.push(13 * S, 2.0, &mut f));
        assert_eq!(f.x, vec![1.0, 1.5]);
        assert_eq!(w.skipped_windows(), 4);
        // After the gap, the window [12, 14) holds data only from 13 s: it is not
        // full and is not judged; the next one is.
        assert!(!w.push(14 * S, 3.0, &mut f));
        assert_eq!(w.warming(), 1);
        assert!(!w.push(15 * S, 3.5, &mut f));
        assert!(w.push(16 * S, 4.0, &mut f));
        assert_eq!((f.end_ns / S, f.x.clone()), (16, vec![3.0, 3.5]));
    }

    #[test]
    fn tumbling_windows_of_samples_between_boundaries_keep_coming() {
        // hop = size: each emission empties the buffer; samples at x.3 s are still
        // continuous data, so every window after the first is full.
        let mut w = Window::new(WindowSpec::Time {
            size_ns: 10 * S,
            hop_ns: 10 * S,
            max_samples: 64,
        });
        let mut f = Frame::with_capacity(64);
        let mut ends = Vec::new();
        for i in 0..60u64 {
            if w.push(i * S + 3 * S / 10, 1.0, &mut f) {
                ends.push(f.end_ns / S);
            }
        }
        assert_eq!(ends, vec![20, 30, 40, 50]);
        assert_eq!(w.warming(), 1);
    }

    #[test]
    fn a_time_window_is_judged_only_once_full_also_after_a_restart() {
        let spec = WindowSpec::Time {
            size_ns: 30 * S,
            hop_ns: S,
            max_samples: 64,
        };
        let mut f = Frame::with_capacity(64);
        for start in [0, 100 * S + S / 2] {
            let mut w = Window::new(spec);
            let mut first = None;
            for i in 0..60u64 {
                let t = start + i * S;
                if w.push(t, 1.0, &mut f) && first.is_none() {
                    first = Some((f.end_ns, f.x.len()));
                }
            }
            let (end, n) = first.expect("a window once full");
            assert!(
                end >= start + 30 * S,
                "emitted at {end} before 30 s of data"
            );
            assert_eq!(n, 30, "a full window of 1 Hz samples");
        }
    }

    #[test]
    fn time_window_overflow_drops_oldest_and_counts() {
        let mut w = Window::new(WindowSpec::Time {
            size_ns: 10 * S,
            hop_ns: 10 * S,
            max_samples: 3,
        });
        let mut f = Frame::with_capacity(3);
        for i in 0..5u64 {
            w.push(i * S, i as f64, &mut f);
        }
        assert!(w.push(10 * S, 9.0, &mut f));
        assert_eq!(f.x, vec![2.0, 3.0, 4.0]);
        assert_eq!(w.overflowed(), 2);
    }

    #[test]
    fn out_of_order_samples_are_ignored_and_counted() {
        let mut w = Window::new(WindowSpec::Count { size: 2, hop: 1 });
        let mut f = Frame::with_capacity(2);
        w.push(5 * S, 1.0, &mut f);
        assert!(!w.push(4 * S, 2.0, &mut f));
        assert_eq!(w.out_of_order(), 1);
        assert!(w.push(6 * S, 3.0, &mut f));
        assert_eq!(f.x, vec![1.0, 3.0]);
    }
}
