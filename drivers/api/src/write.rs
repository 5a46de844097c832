//! Writes to devices: what a tag accepts and how a write reaches the driver that
//! owns the tag's connection.
//!
//! * A tag is writable only when its section says `writable = true`; `min`/`max`
//!   bound the value in engineering units, `allowed = [0, 1, 4]` lists the only
//!   accepted values (booleans and enumerations), `verify = true` reads the value
//!   back after writing, `min_interval` refuses a second write sooner than that.
//!   [`WriteLimits::parse`] reads these keys the same way for every driver kind.
//! * The agent checks a request against the limits before it reaches a driver;
//!   the driver only encodes and performs it ([`WriteRequest`] through
//!   [`DriverContext::next_write`](crate::DriverContext::next_write)), between
//!   two polls on the connection it already owns, so a write never races a read.
//! * Every request is answered exactly once through its reply channel: by the
//!   driver, or by the supervisor while the driver is down ("not connected"), or
//!   by dropping it (the caller's timeout then says so). Nobody waits forever.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::config::TableReader;
use crate::sample::SignalId;

/// `writable = true` and its limits, as a tag's section gives them.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteLimits {
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// When not empty: the only values accepted.
    pub allowed: Vec<f64>,
    /// Read the tag back after writing and fail when it differs.
    pub verify: bool,
    /// A second write of the tag sooner than this is refused.
    pub min_interval: Duration,
}

/// The keys [`WriteLimits::parse`] reads (for drivers that must know them).
pub const WRITE_KEYS: [&str; 6] = [
    "writable",
    "min",
    "max",
    "allowed",
    "verify",
    "min_interval",
];

impl WriteLimits {
    /// Reads `writable`, `min`, `max`, `allowed`, `verify`, `min_interval` of a tag
    /// table. `None` when the tag is not writable; limits without `writable = true`
    /// are an error (they would silently do nothing).
    pub fn parse(t: &mut TableReader<'_>) -> Option<WriteLimits> {
        let writable = t.bool("writable").map(|b| b.value).unwrap_or(false);
        let min = t.f64("min");
        let max = t.f64("max");
        let allowed = t.f64s("allowed");
        let verify = t.bool("verify");
        let min_interval = t.duration("min_interval");
        if !writable {
            let stray = [
                min.as_ref().map(|v| ("min", v.span)),
                max.as_ref().map(|v| ("max", v.span)),
                allowed
                    .as_ref()
                    .and_then(|a| a.first().map(|v| ("allowed", v.span))),
                verify.as_ref().map(|v| ("verify", v.span)),
                min_interval.as_ref().map(|v| ("min_interval", v.span)),
            ];
            for (key, span) in stray.into_iter().flatten() {
                t.error(
                    span,
                    key,
                    format!("`{key}` limits writes, but this tag is not writable"),
                )
                .hint("add `writable = true` to allow writes to this tag, or remove the key")
                .emit();
            }
            return None;
        }
        if let (Some(lo), Some(hi)) = (&min, &max)
            && lo.value > hi.value
        {
            t.error(
                hi.span,
                "max",
                format!("`max` ({}) is below `min` ({})", hi.value, lo.value),
            )
            .hint("swap them")
            .emit();
        }
        let allowed: Vec<f64> = allowed
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.value)
            .collect();
        if min.is_none() && max.is_none() && allowed.is_empty() {
            t.table_error("a writable tag needs `min` and `max`, or `allowed`")
                .expected("`min = ...` and `max = ...`, or `allowed = [...]`")
                .hint("bound what the centre may write: e.g. `min = 0.0` and `max = 100.0`, or `allowed = [0, 1]` for a switch")
                .emit();
        }
        Some(WriteLimits {
            min: min.map(|v| v.value),
            max: max.map(|v| v.value),
            allowed,
            verify: verify.map(|v| v.value).unwrap_or(false),
            min_interval: min_interval.map(|v| v.value).unwrap_or(Duration::ZERO),
        })
    }

    /// Why `value` may not be written, if it may not.
    pub fn check(&self, value: f64) -> Result<(), String> {
        if !value.is_finite() {
            return Err(format!("{value} is not a finite number"));
        }
        if !self.allowed.is_empty() && !self.allowed.contains(&value) {
            let list: Vec<String> = self.allowed.iter().map(|v| v.to_string()).collect();
            return Err(format!(
                "{value} is not one of the allowed values [{}]",
                list.join(", ")
            ));
        }
        if let Some(lo) = self.min
            && value < lo
        {
            return Err(format!("{value} is below the tag's minimum {lo}"));
        }
        if let Some(hi) = self.max
            && value > hi
        {
            return Err(format!("{value} is above the tag's maximum {hi}"));
        }
        Ok(())
    }
}

/// A writable tag of a driver: its signal and limits.
#[derive(Clone, Debug, PartialEq)]
pub struct WritableTag {
    pub signal: SignalId,
    pub limits: WriteLimits,
}

/// The writable ones among a driver's tags, given as (their limits when
/// writable, their signal): what [`crate::DriverFactory::writable`] returns.
pub fn writable_tags<'a>(
    tags: impl IntoIterator<Item = (Option<&'a WriteLimits>, SignalId)>,
) -> Vec<WritableTag> {
    tags.into_iter()
        .filter_map(|(limits, signal)| {
            limits.map(|l| WritableTag {
                signal,
                limits: l.clone(),
            })
        })
        .collect()
}

/// Why a write did not happen (or did not take).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WriteError {
    pub kind: WriteFailure,
    pub message: String,
}

/// The kinds of [`WriteError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFailure {
    /// The value cannot be encoded for the tag's type (e.g. 70000 into a u16).
    Encode,
    /// The device refused it (Modbus exception, S7 return code, CoAP 4.xx/5.xx).
    Device,
    /// No answer, or the connection is down.
    Communication,
    /// The device took the write, but reading back gave another value.
    Verify,
}

impl WriteFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteFailure::Encode => "encode",
            WriteFailure::Device => "device",
            WriteFailure::Communication => "communication",
            WriteFailure::Verify => "verify",
        }
    }
}

impl WriteError {
    pub fn new(kind: WriteFailure, message: impl Into<String>) -> Self {
        WriteError {
            kind,
            message: message.into(),
        }
    }
}

/// A write that reached the device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WriteDone {
    /// The value read back (with `verify`), in engineering units.
    pub read_back: Option<f64>,
}

/// One write for a driver: an already checked value in engineering units.
#[derive(Debug)]
pub struct WriteRequest {
    pub signal: SignalId,
    pub value: f64,
    pub verify: bool,
    reply: oneshot::Sender<Result<WriteDone, WriteError>>,
}

impl WriteRequest {
    /// A request and the receiver of its answer.
    pub fn new(
        signal: SignalId,
        value: f64,
        verify: bool,
    ) -> (
        WriteRequest,
        oneshot::Receiver<Result<WriteDone, WriteError>>,
    ) {
        let (tx, rx) = oneshot::channel();
        (
            WriteRequest {
                signal,
                value,
                verify,
                reply: tx,
            },
            rx,
        )
    }

    /// Answers the request (a caller that gave up is no error).
    pub fn answer(self, result: Result<WriteDone, WriteError>) {
        let _ = self.reply.send(result);
    }
}

/// A driver's queue of writes. The agent keeps the sending side; the receiving
/// side outlives the driver's attempts (the running attempt takes requests, the
/// supervisor answers them while the driver is down).
#[derive(Debug)]
pub struct WriteInbox {
    rx: Mutex<mpsc::Receiver<WriteRequest>>,
}

/// How many writes may wait for one driver; more are refused at once.
pub const WRITE_QUEUE: usize = 16;

impl WriteInbox {
    /// The inbox and the sender the agent routes writes through.
    pub fn new() -> (Arc<WriteInbox>, mpsc::Sender<WriteRequest>) {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        (Arc::new(WriteInbox { rx: Mutex::new(rx) }), tx)
    }

    /// The next request; pending while there is none (and forever once the agent
    /// dropped the sender).
    pub async fn next(&self) -> WriteRequest {
        let mut rx = self.rx.lock().await;
        match rx.recv().await {
            Some(r) => r,
            None => std::future::pending().await,
        }
    }

    /// Answers every waiting request with `why` (the driver is down).
    pub fn refuse_waiting(&self, why: &str) {
        let Ok(mut rx) = self.rx.try_lock() else {
            return;
        };
        while let Ok(r) = rx.try_recv() {
            r.answer(Err(WriteError::new(WriteFailure::Communication, why)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Diagnostics, parse_document};

    fn limits(toml: &str) -> (Option<WriteLimits>, Vec<String>) {
        let doc = parse_document(toml).expect("test toml");
        let diags = Diagnostics::new();
        let out = {
            let mut r = TableReader::new(&doc, "tag", &diags);
            r.skip_unknown_check();
            WriteLimits::parse(&mut r)
        };
        (
            out,
            diags.into_vec().into_iter().map(|d| d.message).collect(),
        )
    }

    #[test]
    fn a_writable_tag_checks_its_range_and_allowed_values() {
        let (l, errs) = limits("writable = true\nmin = 0\nmax = 10.5\n");
        assert!(errs.is_empty(), "{errs:?}");
        let l = l.expect("writable");
        assert!(l.check(0.0).is_ok() && l.check(10.5).is_ok());
        assert!(
            l.check(-0.1)
                .expect_err("refused")
                .contains("below the tag's minimum 0")
        );
        assert!(
            l.check(11.0)
                .expect_err("refused")
                .contains("above the tag's maximum 10.5")
        );
        assert!(
            l.check(f64::NAN)
                .expect_err("refused")
                .contains("not a finite number")
        );
        let (l, _) = limits("writable = true\nallowed = [0, 1]\n");
        let l = l.expect("writable");
        assert!(l.check(1.0).is_ok());
        assert!(
            l.check(2.0)
                .expect_err("refused")
                .contains("not one of the allowed values [0, 1]")
        );
    }

    #[test]
    fn limits_without_writable_and_unbounded_writes_are_errors() {
        let (l, errs) = limits("min = 0\n");
        assert!(l.is_none());
        assert!(errs[0].contains("this tag is not writable"), "{errs:?}");
        let (_, errs) = limits("writable = true\n");
        assert!(
            errs[0].contains("needs `min` and `max`, or `allowed`"),
            "{errs:?}"
        );
        let (_, errs) = limits("writable = true\nmin = 5\nmax = 1\n");
        assert!(errs[0].contains("below `min`"), "{errs:?}");
        let (l, errs) = limits("");
        assert!(l.is_none() && errs.is_empty());
    }

    #[tokio::test]
    async fn waiting_writes_are_refused_while_the_driver_is_down() {
        let (inbox, tx) = WriteInbox::new();
        let (req, rx) = WriteRequest::new(SignalId(0), 1.0, false);
        tx.try_send(req).expect("room");
        inbox.refuse_waiting("driver plc is down: connection refused");
        let got = tokio::time::timeout(Duration::from_secs(1), rx)
            .await
            .expect("answered")
            .expect("sent");
        let e = got.expect_err("refused");
        assert_eq!(e.kind, WriteFailure::Communication);
        assert!(e.message.contains("connection refused"));
    }
}
