//! The unit of data that flows from drivers into the agent.

use crate::time::Timestamp;

/// A signal name interned to a small integer at start-up (see [`crate::SignalRegistry`]).
///
/// The pipeline indexes its per-signal state by this id, so lookups on the hot path are
/// an array index, never a string hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SignalId(pub u32);

impl SignalId {
    /// The id as an index into per-signal tables.
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A value read from a device. `Copy` on purpose: samples move through the ring buffer
/// without allocating.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    F64(f64),
    I64(i64),
    Bool(bool),
}

impl Value {
    /// The value as a float for feature computation (`true` = 1.0).
    #[inline]
    pub fn as_f64(self) -> f64 {
        match self {
            Value::F64(v) => v,
            Value::I64(v) => v as f64,
            Value::Bool(b) => {
                if b {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }
}

/// Why a sample is not trustworthy. Device-level problems are data, not reconnect reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BadReason {
    /// The request could not be sent or the connection broke.
    Communication,
    /// The device did not answer in time.
    Timeout,
    /// The device answered with a protocol exception / return code (the code is kept).
    DeviceException(u16),
    /// The device reported a value outside the sensor's range.
    OutOfRange,
    /// The value was NaN or infinite.
    NotFinite,
    /// The device flagged its sensor as faulty.
    SensorFault,
    /// The reply could not be decoded into the configured type.
    Decode,
    /// Anything else; the driver logs the details.
    Other,
}

/// Quality of a sample, in the spirit of OPC quality codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Quality {
    #[default]
    Good,
    Bad(BadReason),
    /// The value is the last known one, not a fresh reading.
    Stale,
}

impl Quality {
    #[inline]
    pub fn is_good(self) -> bool {
        matches!(self, Quality::Good)
    }
}

/// One reading of one signal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub ts: Timestamp,
    pub signal: SignalId,
    pub value: Value,
    pub quality: Quality,
}

impl Sample {
    /// A good-quality numeric sample. A non-finite value is downgraded to
    /// `Bad(NotFinite)` so that NaN never reaches the feature stage as "good".
    #[inline]
    pub fn new_f64(ts: Timestamp, signal: SignalId, value: f64) -> Self {
        let quality = if value.is_finite() {
            Quality::Good
        } else {
            Quality::Bad(BadReason::NotFinite)
        };
        Sample {
            ts,
            signal,
            value: Value::F64(value),
            quality,
        }
    }

    /// A bad-quality sample: the device or link failed for this signal.
    #[inline]
    pub fn bad(ts: Timestamp, signal: SignalId, reason: BadReason) -> Self {
        Sample {
            ts,
            signal,
            value: Value::F64(f64::NAN),
            quality: Quality::Bad(reason),
        }
    }

    /// The numeric value if the sample is good and finite.
    #[inline]
    pub fn usable_f64(&self) -> Option<f64> {
        if !self.quality.is_good() {
            return None;
        }
        let v = self.value.as_f64();
        v.is_finite().then_some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts() -> Timestamp {
        Timestamp {
            wall_ns: 0,
            mono_ns: 0,
            synced: true,
        }
    }

    #[test]
    fn non_finite_values_are_never_good() {
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let s = Sample::new_f64(ts(), SignalId(0), v);
            assert_eq!(s.quality, Quality::Bad(BadReason::NotFinite));
            assert_eq!(s.usable_f64(), None);
        }
        assert_eq!(
            Sample::new_f64(ts(), SignalId(0), 1.5).usable_f64(),
            Some(1.5)
        );
    }

    #[test]
    fn sample_stays_small_enough_for_the_ring() {
        // The ring stores samples by value; keep them within one cache line.
        assert!(std::mem::size_of::<Sample>() <= 64);
    }
}
