//! Samples in: drivers deliver batches through a per-driver [`meter::MeteredSink`]
//! into the one bounded [`ring::SampleRing`]; the [`supervisor`] keeps every driver
//! running.

pub mod history;
pub mod latest;
pub mod means;
pub mod meter;
pub mod ring;
pub mod supervisor;
