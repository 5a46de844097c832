//! Helpers for testing drivers: a sink that keeps every sample it is given.
//!
//! Used by the driver crates' tests and the shared conformance tests; not by the
//! agent at run time.

use std::sync::Mutex;

use tokio::sync::Notify;

use crate::driver::{PushResult, SampleSink};
use crate::sample::Sample;

/// Accepts everything, keeps it in order.
#[derive(Debug, Default)]
pub struct CollectSink {
    samples: Mutex<Vec<Sample>>,
    notify: Notify,
}

impl CollectSink {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything received so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes everything received so far.
    pub fn take(&self) -> Vec<Sample> {
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn len(&self) -> usize {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SampleSink for CollectSink {
    fn try_push(&self, batch: &[Sample]) -> PushResult {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(batch);
        PushResult {
            accepted: batch.len(),
        }
    }
    fn space_available(&self) -> &Notify {
        &self.notify
    }
}
