//! The driver contract.
//!
//! * The agent validates a driver's configuration and turns it into a
//!   [`DriverFactory`]. The supervisor asks the factory for a fresh [`Driver`] for
//!   every attempt, so a driver that failed (or panicked) restarts from a clean state.
//! * [`Driver::run`] owns the connection, polls or subscribes, and sends sample
//!   batches through [`DriverContext::send`]. It returns `Ok(())` only when cancelled.
//! * Device input never panics a driver. Failures come back as [`DriverError`] with
//!   an [`ErrorKind`] so the supervisor can decide on backoff without knowing the
//!   protocol. A device exception for one tag is a bad-quality sample, not an error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::event::{DriverEvent, EventKind, EventSink};
use crate::sample::{Sample, SignalId};
use crate::time::{Clock, Timestamp};
use crate::write::{WritableTag, WriteInbox, WriteRequest};

/// A boxed, sendable future (what trait objects return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How the supervisor should treat a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Network or link trouble: reconnect with backoff.
    Transient,
    /// The device misbehaves (garbage replies, protocol violations): back off, retry.
    Device,
    /// The configuration cannot work against this device: stop this driver, report it.
    Config,
    /// A bug or an unrecoverable local condition: stop this driver, report it.
    Fatal,
}

impl ErrorKind {
    /// Whether the supervisor restarts the driver after this error.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Transient | ErrorKind::Device)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Device => "device",
            ErrorKind::Config => "config",
            ErrorKind::Fatal => "fatal",
        }
    }
}

/// A driver failure.
#[derive(Debug, thiserror::Error)]
#[error("{} error: {message}", kind.as_str())]
pub struct DriverError {
    pub kind: ErrorKind,
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl DriverError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        DriverError {
            kind,
            message: message.into(),
            source: None,
        }
    }
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }
    pub fn device(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Device, message)
    }
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }
    pub fn fatal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Fatal, message)
    }
    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

/// The message a panic carried (`panic!("..")` gives a `&str`, a formatted
/// panic a `String`); for logs and error reports of caught panics.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

/// How much of a batch a sink took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushResult {
    /// Samples taken from the front of the batch (dropped-by-policy samples count as
    /// taken: the sink accounted for them). Less than the batch length only when the
    /// sink's policy is to make producers wait.
    pub accepted: usize,
}

/// Where drivers put samples: the agent's ring buffer.
pub trait SampleSink: Send + Sync + 'static {
    /// Pushes without waiting.
    fn try_push(&self, batch: &[Sample]) -> PushResult;
    /// Notified whenever space may have become available (after the consumer drains).
    fn space_available(&self) -> &Notify;
}

/// The batch could not be delivered because the driver was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

/// Everything a running driver gets from the agent. Cheap to clone.
#[derive(Clone)]
pub struct DriverContext {
    name: Arc<str>,
    sink: Arc<dyn SampleSink>,
    cancel: CancellationToken,
    clock: Clock,
    events: Option<Arc<dyn EventSink>>,
    writes: Option<Arc<WriteInbox>>,
}

impl std::fmt::Debug for DriverContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverContext")
            .field("name", &self.name)
            .field("cancelled", &self.cancel.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl DriverContext {
    /// `cancel` is a child of the agent's cancellation tree, owned by the supervisor.
    pub fn new(
        name: Arc<str>,
        sink: Arc<dyn SampleSink>,
        cancel: CancellationToken,
        clock: Clock,
    ) -> Self {
        DriverContext {
            name,
            sink,
            cancel,
            clock,
            events: None,
            writes: None,
        }
    }

    /// Where this driver's writes come from (without one, none ever come).
    pub fn with_writes(mut self, writes: Arc<WriteInbox>) -> Self {
        self.writes = Some(writes);
        self
    }

    /// The next write for this driver; pending while there is none. A driver
    /// that supports writes selects on this between its polls and answers each
    /// request it takes.
    pub async fn next_write(&self) -> WriteRequest {
        match &self.writes {
            Some(w) => w.next().await,
            None => std::future::pending().await,
        }
    }

    /// Where this driver's events go (without one, events are discarded).
    pub fn with_events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = Some(events);
        self
    }

    /// Reports a new value of a text signal. Never waits; `false` if it was dropped
    /// (no event sink, or its queue is full — the sink counts those).
    pub fn emit_text(&self, signal: SignalId, ts: Timestamp, text: &str) -> bool {
        match &self.events {
            Some(e) => e.try_send(
                &self.name,
                DriverEvent {
                    signal,
                    ts,
                    kind: EventKind::Text(text.to_string()),
                },
            ),
            None => false,
        }
    }

    /// The driver instance's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the driver must stop.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Delivers a batch. Never waits under the drop policies; under `block` it waits
    /// for space, and gives up only if the driver is cancelled meanwhile.
    pub async fn send(&self, mut batch: &[Sample]) -> Result<(), Cancelled> {
        loop {
            // Register interest before trying, so a drain between the try and the
            // await cannot be missed.
            let notified = self.sink.space_available().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let taken = self.sink.try_push(batch).accepted.min(batch.len());
            batch = &batch[taken..];
            if batch.is_empty() {
                return Ok(());
            }
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Err(Cancelled),
                _ = &mut notified => {}
            }
        }
    }
}

/// A running device connection.
pub trait Driver: Send + 'static {
    /// Runs until cancelled (`Ok`) or until it fails (`Err`).
    fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<'static, Result<(), DriverError>>;
}

/// Builds drivers from a validated configuration; one call per (re)start.
pub trait DriverFactory: Send + Sync + 'static {
    /// The driver kind, e.g. `"sim"`.
    fn kind(&self) -> &'static str;
    /// A fresh driver. Errors here are treated like errors from `run`.
    fn create(&self) -> Result<Box<dyn Driver>, DriverError>;

    /// A cheap check that the device is reachable again (a TCP connect, no
    /// protocol session), which the supervisor runs about once a second while it
    /// waits to restart a failed driver: `true` ends the wait at once, so values
    /// flow again within a probe of the device's return while the backoff still
    /// paces the full reconnects a dead device would otherwise get. A failed
    /// probe should be reported through `ctx` as a failed connection attempt
    /// (bad tags, link statistics), so a dead link keeps reporting while the
    /// driver is down. `None` (the default): no cheap check; the backoff decides.
    fn probe(&self, ctx: &DriverContext) -> Option<BoxFuture<'static, bool>> {
        let _ = ctx;
        None
    }

    /// The tags the agent may write through this driver (`writable = true`). A
    /// driver that lists any takes them from [`DriverContext::next_write`].
    fn writable(&self) -> Vec<WritableTag> {
        Vec::new()
    }
}

/// Whether a TCP connection to `addr` opens within `timeout` (it is closed at
/// once): the reachability probe of TCP drivers.
pub async fn tcp_reachable(
    addr: impl tokio::net::ToSocketAddrs,
    timeout: std::time::Duration,
) -> bool {
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::SignalId;
    use crate::time::Timestamp;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A sink that takes at most `room` samples until drained.
    struct TinySink {
        room: Mutex<usize>,
        notify: Notify,
    }
    impl SampleSink for TinySink {
        fn try_push(&self, batch: &[Sample]) -> PushResult {
            let mut room = self.room.lock().expect("test mutex");
            let n = batch.len().min(*room);
            *room -= n;
            PushResult { accepted: n }
        }
        fn space_available(&self) -> &Notify {
            &self.notify
        }
    }

    fn batch(n: usize) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample::new_f64(Timestamp::default(), SignalId(0), i as f64))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn send_waits_for_space_and_resumes_after_drain() {
        let sink = Arc::new(TinySink {
            room: Mutex::new(2),
            notify: Notify::new(),
        });
        let ctx = DriverContext::new(
            "t".into(),
            sink.clone(),
            CancellationToken::new(),
            Clock::virtual_from(0),
        );
        let b = batch(5);
        let send = tokio::spawn(async move { ctx.send(&b).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!send.is_finished());
        *sink.room.lock().expect("test mutex") = 10;
        sink.notify.notify_waiters();
        let res = tokio::time::timeout(Duration::from_secs(1), send).await;
        assert!(matches!(res, Ok(Ok(Ok(())))));
        assert_eq!(*sink.room.lock().expect("test mutex"), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn send_gives_up_when_cancelled_while_blocked() {
        let sink = Arc::new(TinySink {
            room: Mutex::new(0),
            notify: Notify::new(),
        });
        let cancel = CancellationToken::new();
        let ctx = DriverContext::new("t".into(), sink, cancel.clone(), Clock::virtual_from(0));
        let b = batch(1);
        let send = tokio::spawn(async move { ctx.send(&b).await });
        cancel.cancel();
        let res = tokio::time::timeout(Duration::from_secs(1), send).await;
        assert!(matches!(res, Ok(Ok(Err(Cancelled)))));
    }

    #[test]
    fn only_transient_and_device_errors_are_retried() {
        assert!(ErrorKind::Transient.is_retryable());
        assert!(ErrorKind::Device.is_retryable());
        assert!(!ErrorKind::Config.is_retryable());
        assert!(!ErrorKind::Fatal.is_retryable());
    }
}
