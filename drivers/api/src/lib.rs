//! Contracts shared by every edge-agent driver.
//!
//! A driver turns a device protocol into [`Sample`] batches and hands them to a
//! [`SampleSink`] through its [`DriverContext`]. The agent owns the sink (its ring
//! buffer), the cancellation tree and the clock; the driver owns its connection.
//!
//! This crate depends on nothing else of ours so that every driver crate, and the
//! agent, agree on one vocabulary.

pub mod config;
pub mod driver;
pub mod event;
pub mod fuzzing;
pub mod health;
#[cfg(feature = "payload")]
pub mod payload;
pub mod sample;
pub mod signal;
pub mod testing;
pub mod time;
#[cfg(feature = "tls")]
pub mod tls;
pub mod write;

pub use driver::{
    BoxFuture, Cancelled, Driver, DriverContext, DriverError, DriverFactory, ErrorKind, PushResult,
    SampleSink, panic_message, tcp_reachable,
};
pub use event::{DriverEvent, EventKind, EventSink, TextChanges};
pub use sample::{BadReason, Quality, Sample, SignalId, Value};
pub use signal::{
    DuplicateSignal, SignalDecl, SignalMeta, SignalPattern, SignalRegistry, render_template,
    template_placeholders,
};
pub use time::{Clock, ClockAnchor, Timestamp};
pub use write::{
    WritableTag, WriteDone, WriteError, WriteFailure, WriteInbox, WriteLimits, WriteRequest,
};
