//! The sample ring: the one bounded buffer between drivers and the pipeline.
//!
//! Design:
//! * Storage is a pool of fixed-size `heapless::Deque` chunks of [`CHUNK`] samples,
//!   all allocated at construction (`capacity / CHUNK + 1` of them). Memory is fixed by
//!   construction; pushing and draining never allocate. (One heapless deque of the
//!   whole capacity would have to be built on the stack first: 64 Ki samples is ~3 MB,
//!   more than a thread's stack in debug builds.)
//! * Producers are driver tasks ([`SampleSink::try_push`]); the single consumer is the
//!   pipeline ([`SampleRing::drain_into`]). A `std::sync::Mutex` guards the chunks; each
//!   critical section is one batch copy, no awaits inside.
//! * Overflow policy when full:
//!   - `drop_oldest`: evict the oldest sample for each new one (fresh data wins);
//!   - `drop_newest`: discard the incoming samples (history wins);
//!   - `block`: accept what fits and make the producer wait for the consumer.
//!
//!   Every dropped sample is counted per policy.
//! * Wake-ups: `data` is `notify_one` (one consumer; a stored permit means no lost
//!   wake-up); `space` is `notify_waiters` after each drain, and producers register
//!   before trying (see `DriverContext::send`).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use edge_driver_api::{PushResult, Sample, SampleSink};
use heapless::Deque;
use tokio::sync::Notify;

/// Samples per chunk.
pub const CHUNK: usize = 1024;

type Chunk = Deque<Sample, CHUNK>;

/// What to do when the ring is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverflowPolicy {
    DropOldest,
    DropNewest,
    Block,
}

impl OverflowPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            OverflowPolicy::DropOldest => "drop_oldest",
            OverflowPolicy::DropNewest => "drop_newest",
            OverflowPolicy::Block => "block",
        }
    }
}

#[derive(Debug)]
struct Inner {
    chunks: VecDeque<Box<Chunk>>,
    free: Vec<Box<Chunk>>,
    len: usize,
}

impl Inner {
    #[inline]
    fn push_back(&mut self, s: Sample) -> bool {
        if self.chunks.back().is_none_or(|c| c.is_full()) {
            let Some(chunk) = self.free.pop() else {
                return false;
            };
            self.chunks.push_back(chunk);
        }
        match self.chunks.back_mut() {
            Some(c) => {
                // Cannot fail: the back chunk was checked or replaced above.
                let ok = c.push_back(s).is_ok();
                self.len += usize::from(ok);
                ok
            }
            None => false,
        }
    }

    #[inline]
    fn pop_front(&mut self) -> Option<Sample> {
        let front = self.chunks.front_mut()?;
        let s = front.pop_front();
        if front.is_empty()
            && let Some(c) = self.chunks.pop_front()
        {
            self.free.push(c);
        }
        if s.is_some() {
            self.len -= 1;
        }
        s
    }
}

/// Counters of the ring (monotonic since start).
#[derive(Debug, Default)]
pub struct RingCounters {
    pub accepted: AtomicU64,
    pub dropped_oldest: AtomicU64,
    pub dropped_newest: AtomicU64,
    /// Times a producer found the ring full under the `block` policy.
    pub producer_waits: AtomicU64,
    pub drained: AtomicU64,
    pub high_water: AtomicUsize,
}

/// A point-in-time copy of the counters: what `status` serialises, `/metrics`
/// renders and the stats log prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RingStats {
    pub capacity: usize,
    pub len: usize,
    pub accepted: u64,
    pub dropped_oldest: u64,
    pub dropped_newest: u64,
    pub producer_waits: u64,
    pub drained: u64,
    pub high_water: usize,
}

impl RingStats {
    pub fn dropped(&self) -> u64 {
        self.dropped_oldest + self.dropped_newest
    }
}

/// The bounded sample buffer.
#[derive(Debug)]
pub struct SampleRing {
    inner: Mutex<Inner>,
    capacity: usize,
    policy: OverflowPolicy,
    data: Notify,
    space: Notify,
    counters: RingCounters,
}

impl SampleRing {
    /// A ring holding exactly `capacity` samples (≥ 1).
    pub fn new(capacity: usize, policy: OverflowPolicy) -> Self {
        let capacity = capacity.max(1);
        // A partly drained front chunk plus a partly filled back chunk can need one
        // chunk more than capacity / CHUNK.
        let n_chunks = capacity.div_ceil(CHUNK) + 1;
        let free: Vec<Box<Chunk>> = (0..n_chunks).map(|_| Box::new(Deque::new())).collect();
        SampleRing {
            inner: Mutex::new(Inner {
                chunks: VecDeque::with_capacity(n_chunks),
                free,
                len: 0,
            }),
            capacity,
            policy,
            data: Notify::new(),
            space: Notify::new(),
            counters: RingCounters::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn policy(&self) -> OverflowPolicy {
        self.policy
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock can only come from a bug in this module;
        // the data is plain samples, so continuing with it is safe.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pushes a batch according to the overflow policy; see [`PushResult`].
    pub fn push_batch(&self, batch: &[Sample]) -> PushResult {
        if batch.is_empty() {
            return PushResult { accepted: 0 };
        }
        let mut inner = self.lock();
        let mut taken = 0;
        let mut dropped_old = 0u64;
        let mut dropped_new = 0u64;
        for s in batch {
            if inner.len >= self.capacity {
                match self.policy {
                    OverflowPolicy::DropOldest => {
                        if inner.pop_front().is_some() {
                            dropped_old += 1;
                        }
                    }
                    OverflowPolicy::DropNewest => {
                        dropped_new += (batch.len() - taken) as u64;
                        taken = batch.len();
                        break;
                    }
                    OverflowPolicy::Block => break,
                }
            }
            if !inner.push_back(*s) {
                // Unreachable with the chunk count chosen in `new`; treat as full.
                dropped_new += 1;
            }
            taken += 1;
        }
        let len = inner.len;
        drop(inner);
        let c = &self.counters;
        let stored = taken as u64 - dropped_new;
        c.accepted.fetch_add(stored, Ordering::Relaxed);
        c.dropped_oldest.fetch_add(dropped_old, Ordering::Relaxed);
        c.dropped_newest.fetch_add(dropped_new, Ordering::Relaxed);
        c.high_water.fetch_max(len, Ordering::Relaxed);
        if taken < batch.len() {
            c.producer_waits.fetch_add(1, Ordering::Relaxed);
        }
        if stored > 0 {
            self.data.notify_one();
        }
        PushResult { accepted: taken }
    }

    /// Moves up to `max` samples (oldest first) into `out`, which is cleared first.
    /// `out` should have capacity ≥ `max` so this never allocates.
    pub fn drain_into(&self, out: &mut Vec<Sample>, max: usize) -> usize {
        out.clear();
        let mut inner = self.lock();
        while out.len() < max {
            match inner.pop_front() {
                Some(s) => out.push(s),
                None => break,
            }
        }
        drop(inner);
        let n = out.len();
        if n > 0 {
            self.counters.drained.fetch_add(n as u64, Ordering::Relaxed);
            self.space.notify_waiters();
        }
        n
    }

    /// Waits until samples may be available (returns at once if a push happened since
    /// the last wait).
    pub async fn wait_for_data(&self) {
        self.data.notified().await
    }

    pub fn stats(&self) -> RingStats {
        let c = &self.counters;
        RingStats {
            capacity: self.capacity,
            len: self.len(),
            accepted: c.accepted.load(Ordering::Relaxed),
            dropped_oldest: c.dropped_oldest.load(Ordering::Relaxed),
            dropped_newest: c.dropped_newest.load(Ordering::Relaxed),
            producer_waits: c.producer_waits.load(Ordering::Relaxed),
            drained: c.drained.load(Ordering::Relaxed),
            high_water: c.high_water.load(Ordering::Relaxed),
        }
    }
}

impl SampleSink for SampleRing {
    fn try_push(&self, batch: &[Sample]) -> PushResult {
        self.push_batch(batch)
    }
    fn space_available(&self) -> &Notify {
        &self.space
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_driver_api::{SignalId, Timestamp};
    use proptest::prelude::*;

    fn s(i: u64) -> Sample {
        Sample::new_f64(
            Timestamp {
                wall_ns: 0,
                mono_ns: i,
                synced: true,
            },
            SignalId(0),
            i as f64,
        )
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u16),
        Drain(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u16..3000).prop_map(Op::Push),
            (0u16..3000).prop_map(Op::Drain),
        ]
    }

    fn policy() -> impl Strategy<Value = OverflowPolicy> {
        prop_oneof![
            Just(OverflowPolicy::DropOldest),
            Just(OverflowPolicy::DropNewest),
            Just(OverflowPolicy::Block),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// The ring behaves exactly like a VecDeque with the same policy, and every
        /// sample is accounted for.
        #[test]
        fn ring_matches_a_vecdeque_model(cap in 1usize..5000, pol in policy(), ops in proptest::collection::vec(op(), 1..60)) {
            let ring = SampleRing::new(cap, pol);
            let mut model: VecDeque<u64> = VecDeque::new();
            let (mut next, mut dropped, mut refused, mut offered) = (0u64, 0u64, 0u64, 0u64);
            let mut out = Vec::with_capacity(3000);
            for op in ops {
                match op {
                    Op::Push(n) => {
                        let batch: Vec<Sample> = (next..next + u64::from(n)).map(s).collect();
                        offered += u64::from(n);
                        let r = ring.push_batch(&batch);
                        let mut taken = 0;
                        for i in next..next + u64::from(n) {
                            if model.len() >= cap {
                                match pol {
                                    OverflowPolicy::DropOldest => { model.pop_front(); dropped += 1; }
                                    OverflowPolicy::DropNewest => { dropped += 1; taken += 1; continue; }
                                    OverflowPolicy::Block => break,
                                }
                            }
                            model.push_back(i);
                            taken += 1;
                        }
                        prop_assert_eq!(r.accepted, taken);
                        refused += u64::from(n) - taken as u64;
                        next += u64::from(n);
                    }
                    Op::Drain(n) => {
                        ring.drain_into(&mut out, usize::from(n));
                        let want: Vec<u64> = (0..usize::from(n)).map_while(|_| model.pop_front()).collect();
                        let got: Vec<u64> = out.iter().map(|x| x.ts.mono_ns).collect();
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(ring.len(), model.len());
                prop_assert!(ring.len() <= cap);
            }
            let st = ring.stats();
            prop_assert_eq!(st.dropped(), dropped);
            // Stored samples leave by draining or by eviction; offered samples are
            // stored, discarded on arrival, or refused (block policy).
            prop_assert_eq!(st.accepted, st.drained + st.len as u64 + st.dropped_oldest);
            prop_assert_eq!(offered, st.accepted + st.dropped_newest + refused);
        }
    }

    #[test]
    fn drop_oldest_keeps_the_freshest_samples() {
        let ring = SampleRing::new(3, OverflowPolicy::DropOldest);
        let batch: Vec<Sample> = (0..5).map(s).collect();
        assert_eq!(ring.push_batch(&batch).accepted, 5);
        let mut out = Vec::new();
        ring.drain_into(&mut out, 10);
        assert_eq!(
            out.iter().map(|x| x.ts.mono_ns).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert_eq!(ring.stats().dropped_oldest, 2);
    }

    #[test]
    fn block_refuses_what_does_not_fit_without_dropping() {
        let ring = SampleRing::new(2, OverflowPolicy::Block);
        let batch: Vec<Sample> = (0..5).map(s).collect();
        assert_eq!(ring.push_batch(&batch).accepted, 2);
        assert_eq!(ring.stats().dropped(), 0);
        assert_eq!(ring.stats().producer_waits, 1);
    }

    #[test]
    fn steady_state_push_and_drain_do_not_allocate_new_chunks() {
        let ring = SampleRing::new(4096, OverflowPolicy::DropOldest);
        let batch: Vec<Sample> = (0..1000).map(s).collect();
        let mut out = Vec::with_capacity(5000);
        for _ in 0..100 {
            ring.push_batch(&batch);
            ring.push_batch(&batch);
            ring.drain_into(&mut out, 1500);
        }
        let inner = ring.lock();
        // Every chunk is either in use or back in the pool: none lost, none added.
        assert_eq!(inner.chunks.len() + inner.free.len(), 4096 / CHUNK + 1);
    }
}
