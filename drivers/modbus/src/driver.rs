//! The driver: polls the coalesced requests on their grid, backs off silent
//! slaves, re-opens the link when its framing can no longer be trusted, and turns
//! replies into samples.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use edge_driver_api::health::CommStats;
use edge_driver_api::{
    BadReason, BoxFuture, Driver, DriverContext, DriverError, DriverFactory, Sample, SignalId,
    TextChanges, WritableTag,
};

use crate::client::{Connector, Outcome, open, read};
use crate::config::{Tag, Transport};
use crate::plan::{self, Request};
use crate::write::LinkAfter;

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) link: String,
    pub(crate) transport: Transport,
    pub(crate) connector: Option<Arc<dyn Connector>>,
    pub(crate) slave_backoff: Duration,
    pub(crate) slave_backoff_max: Duration,
    /// Per tag: its slot among the string tags.
    pub(crate) text_slot: Vec<Option<usize>>,
    pub(crate) timeout: Duration,
    pub(crate) tags: Vec<Tag>,
    pub(crate) tag_ids: Vec<SignalId>,
    pub(crate) requests: Vec<Request>,
    pub(crate) stats: CommStats,
    /// FC15/FC16 for every write.
    pub(crate) write_multiple: bool,
}

/// Creates Modbus TCP drivers (one connection each).
#[derive(Debug, Clone)]
pub struct ModbusFactory {
    pub(crate) shared: Arc<Shared>,
}

impl ModbusFactory {
    /// Requests per cycle after coalescing.
    pub fn requests(&self) -> &[Request] {
        &self.shared.requests
    }
}

impl DriverFactory for ModbusFactory {
    fn kind(&self) -> &'static str {
        "modbus"
    }
    fn create(&self) -> Result<Box<dyn Driver>, DriverError> {
        Ok(Box::new(ModbusDriver {
            shared: self.shared.clone(),
        }))
    }

    fn writable(&self) -> Vec<WritableTag> {
        let sh = &self.shared;
        let tags = sh.tags.iter().map(|t| t.write.as_ref());
        edge_driver_api::write::writable_tags(tags.zip(sh.tag_ids.iter().copied()))
    }

    /// A TCP connect to the device (Modbus TCP, RTU over TCP); a failure counts
    /// as a failed connection attempt. Serial links have nothing cheap to try.
    fn probe(&self, ctx: &DriverContext) -> Option<BoxFuture<'static, bool>> {
        let sh = self.shared.clone();
        let addr = match (&sh.connector, &sh.transport) {
            (None, Transport::Tcp { .. } | Transport::RtuOverTcp { .. }) => sh.addr?,
            _ => return None,
        };
        let ctx = ctx.clone();
        Some(Box::pin(async move {
            let reachable = edge_driver_api::tcp_reachable(addr, sh.timeout).await;
            if !reachable {
                sh.stats.error();
                let mut batch = Vec::with_capacity(sh.tags.len() + 16);
                fail_all(&sh, &ctx, BadReason::Communication, &mut batch).await;
            }
            reachable
        }))
    }
}

struct ModbusDriver {
    shared: Arc<Shared>,
}

impl Driver for ModbusDriver {
    fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<'static, Result<(), DriverError>> {
        Box::pin(run(self.shared, ctx))
    }
}

/// Backoff state of one slave (unit id) on the link.
#[derive(Clone, Copy, Debug, Default)]
struct SlaveState {
    failures: u32,
    until: Option<tokio::time::Instant>,
    last_ok: Option<tokio::time::Instant>,
    /// Why it is backed off (reported for its tags meanwhile).
    why: Option<BadReason>,
}

impl SlaveState {
    fn fail(&mut self, sh: &Shared, now: tokio::time::Instant, why: BadReason) -> Duration {
        self.why = Some(why);
        let d = sh
            .slave_backoff
            .saturating_mul(1u32 << self.failures.min(16))
            .min(sh.slave_backoff_max);
        self.failures = self.failures.saturating_add(1);
        self.until = Some(now + d);
        d
    }

    fn ok(&mut self, now: tokio::time::Instant) {
        *self = SlaveState {
            last_ok: Some(now),
            ..SlaveState::default()
        };
    }
}

/// Whether another slave than `unit` answered recently: then a timeout of `unit` is
/// that slave's problem, not the link's.
fn others_alive(
    slaves: &[SlaveState; 256],
    unit: u8,
    now: tokio::time::Instant,
    within: Duration,
) -> bool {
    slaves.iter().enumerate().any(|(u, s)| {
        u != usize::from(unit)
            && s.last_ok
                .is_some_and(|t| now.saturating_duration_since(t) <= within)
    })
}

/// One attempt of the driver: the link, every slave's backoff and the poll grid.
struct Poller<'a> {
    sh: &'a Shared,
    ctx: &'a DriverContext,
    batch: Vec<Sample>,
    slaves: [SlaveState; 256],
    texts: Texts,
    /// Re-opened after one slave's timeout while others answer: not a link failure.
    quiet_reopen: bool,
    /// Per request: when it is next due.
    next_due: Vec<tokio::time::Instant>,
}

/// How one request went.
enum Step {
    /// Answered (data or a device exception): its round trip in ms.
    Answered(f64),
    /// Its slave is backed off; its tags were reported bad.
    Skipped,
    /// The link must be re-opened before the next request.
    Reopen,
    Cancelled,
    Failed(DriverError),
}

async fn run(sh: Arc<Shared>, ctx: DriverContext) -> Result<(), DriverError> {
    let mut p = Poller {
        sh: &sh,
        ctx: &ctx,
        batch: Vec::with_capacity(sh.tags.len() + 16),
        slaves: [SlaveState::default(); 256],
        texts: Texts {
            changes: TextChanges::new(sh.text_slot.iter().flatten().count()),
            scratch: String::new(),
        },
        quiet_reopen: false,
        next_due: vec![tokio::time::Instant::now(); sh.requests.len()],
    };
    let mut client: Option<tokio_modbus::client::Context> = None;
    let mut first = true;
    loop {
        let link = match client.as_mut() {
            Some(link) => link,
            None => match p.connect().await? {
                Some(c) => client.insert(c),
                None => return Ok(()),
            },
        };
        let now = tokio::time::Instant::now();
        p.batch.clear();
        let mut rtt_ms = f64::NAN;
        let mut reopen = false;
        for ri in 0..sh.requests.len() {
            if !p.take_due(ri, now) {
                continue;
            }
            match p.request(link, ri, now).await {
                Step::Answered(rtt) => rtt_ms = rtt,
                Step::Skipped => {}
                Step::Reopen => {
                    reopen = true;
                    break;
                }
                Step::Cancelled => return Ok(()),
                Step::Failed(e) => return Err(e),
            }
        }
        if reopen {
            client = None;
        }
        if !p.batch.is_empty() || first {
            let report = sh
                .stats
                .push_samples(ctx.clock().now(), rtt_ms, &mut p.batch);
            sh.stats.adapt(report.score);
            if ctx.send(&p.batch).await.is_err() {
                return Ok(());
            }
            first = false;
        }
        if reopen {
            continue;
        }
        let wake = p
            .next_due
            .iter()
            .min()
            .copied()
            .unwrap_or(now + Duration::from_secs(1));
        tokio::select! {
            _ = ctx.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(wake) => {}
            req = ctx.next_write() => {
                let Some(link) = client.as_mut() else {
                    let why = format!("the link to {} is being re-opened; try again", sh.link);
                    req.answer(Err(edge_driver_api::WriteError::new(edge_driver_api::WriteFailure::Communication, why)));
                    continue;
                };
                match crate::write::perform(&sh, link, req).await {
                    LinkAfter::Fine => {}
                    LinkAfter::Reopen => client = None,
                    LinkAfter::Broken(e) => {
                        sh.stats.error();
                        return Err(DriverError::transient(format!("modbus write on {}: {e}", sh.link)));
                    }
                }
            }
        }
    }
}

impl Poller<'_> {
    /// Opens the link; `None` when cancelled meanwhile. A failure reports every
    /// tag bad and ends the attempt (the supervisor reconnects with backoff).
    async fn connect(&mut self) -> Result<Option<tokio_modbus::client::Context>, DriverError> {
        let sh = self.sh;
        let connected = tokio::select! {
            _ = self.ctx.cancelled() => return Ok(None),
            r = tokio::time::timeout(sh.timeout, open(sh)) => r,
        };
        match connected {
            Ok(Ok(c)) => {
                let connects = if std::mem::take(&mut self.quiet_reopen) {
                    sh.stats.reopened()
                } else {
                    sh.stats.connected()
                };
                tracing::info!(driver = self.ctx.name(), link = %sh.link, requests = sh.requests.len(), tags = sh.tags.len(), connects, "modbus connected");
                Ok(Some(c))
            }
            Ok(Err(e)) => {
                sh.stats.error();
                fail_all(sh, self.ctx, BadReason::Communication, &mut self.batch).await;
                Err(DriverError::transient(format!("open {}: {e}", sh.link)).with_source(e))
            }
            Err(_) => {
                sh.stats.timeout();
                fail_all(sh, self.ctx, BadReason::Timeout, &mut self.batch).await;
                Err(DriverError::transient(format!(
                    "open {} timed out after {:?}",
                    sh.link, sh.timeout
                )))
            }
        }
    }

    /// Whether request `ri` is due at `now`; if so it moves to its next slot on the
    /// poll grid (missed slots are skipped rather than burst). Adaptive polling
    /// stretches every request's period by the same factor.
    fn take_due(&mut self, ri: usize, now: tokio::time::Instant) -> bool {
        if self.next_due[ri] > now {
            return false;
        }
        let stretch = f64::from(self.sh.stats.poll_factor());
        let period = Duration::from_millis(self.sh.requests[ri].poll_ms).mul_f64(stretch);
        while self.next_due[ri] <= now {
            self.next_due[ri] += period;
        }
        true
    }

    /// Runs request `ri` (unless its slave is backed off) and turns the reply
    /// into samples.
    async fn request(
        &mut self,
        link: &mut tokio_modbus::client::Context,
        ri: usize,
        now: tokio::time::Instant,
    ) -> Step {
        let (sh, ctx) = (self.sh, self.ctx);
        let r = &sh.requests[ri];
        let ts = ctx.clock().now();
        let slave = &mut self.slaves[usize::from(r.unit)];
        if slave.until.is_some_and(|u| u > now) {
            let why = slave.why.unwrap_or(BadReason::Timeout);
            mark_bad(sh, r, why, ts, &mut self.batch);
            return Step::Skipped;
        }
        let t0 = tokio::time::Instant::now();
        let res = tokio::select! {
            _ = ctx.cancelled() => return Step::Cancelled,
            r = tokio::time::timeout(sh.timeout, read(link, r)) => r,
        };
        let ts = ctx.clock().now();
        match res {
            Ok(Ok(outcome)) => {
                // Data, or an exception: the device answered, the link is fine.
                let rtt = t0.elapsed();
                sh.stats.success(rtt);
                slave.ok(now);
                let outcome = match outcome {
                    Ok(o) => o,
                    Err(code) => {
                        sh.stats.exception();
                        tracing::debug!(
                            driver = ctx.name(),
                            unit = r.unit,
                            start = r.start,
                            code,
                            "modbus exception"
                        );
                        Outcome::Exception(code)
                    }
                };
                decode(sh, r, &outcome, ts, &mut self.batch, &mut self.texts, ctx);
                Step::Answered(rtt.as_secs_f64() * 1e3)
            }
            Err(_) => self.timed_out(r, now, ts),
            Ok(Err(tokio_modbus::Error::Transport(e))) => {
                sh.stats.error();
                mark_bad(sh, r, BadReason::Communication, ts, &mut self.batch);
                sh.stats.push_samples(ts, f64::NAN, &mut self.batch);
                let _ = ctx.send(&self.batch).await;
                let cause = link_failure(&e);
                Step::Failed(
                    DriverError::transient(format!("modbus read on {}: {cause}", sh.link))
                        .with_source(e),
                )
            }
            Ok(Err(tokio_modbus::Error::Protocol(e))) => {
                // A reply for another unit or transaction, or of the wrong
                // function: the framing can no longer be trusted.
                sh.stats.error();
                let d = slave.fail(sh, now, BadReason::Communication);
                mark_bad(sh, r, BadReason::Communication, ts, &mut self.batch);
                tracing::warn!(driver = ctx.name(), unit = r.unit, error = %e, backoff = ?d, "modbus reply does not match the request; re-opening the link");
                Step::Reopen
            }
        }
    }

    /// A slave did not answer: it is backed off, and the link re-opened (a late
    /// reply would be taken for the next request's). While other slaves answer,
    /// it is that slave's problem, not the link's.
    fn timed_out(
        &mut self,
        r: &Request,
        now: tokio::time::Instant,
        ts: edge_driver_api::Timestamp,
    ) -> Step {
        let sh = self.sh;
        let d = self.slaves[usize::from(r.unit)].fail(sh, now, BadReason::Timeout);
        let within = sh.timeout * 4 + sh.stats.poll_period() * 2;
        if others_alive(&self.slaves, r.unit, now, within) {
            sh.stats.device_timeout();
            self.quiet_reopen = true;
        } else {
            sh.stats.timeout();
        }
        mark_bad(sh, r, BadReason::Timeout, ts, &mut self.batch);
        tracing::warn!(driver = self.ctx.name(), unit = r.unit, timeout = ?sh.timeout, backoff = ?d, "modbus slave did not answer; skipping it for a while");
        Step::Reopen
    }
}

/// What broke the link, in words. tokio-modbus reports a connection the device
/// closed (end of stream) as the thread's last OS error, whatever it was
/// ("Resource temporarily unavailable (os error 11)", "Success (os error 0)"):
/// name the real causes.
fn link_failure(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    if e.raw_os_error() == Some(0) {
        // "Success (os error 0)": no OS error at all, the stream just ended.
        return "the device closed the connection".into();
    }
    match e.kind() {
        K::WouldBlock | K::UnexpectedEof => "the device closed the connection".into(),
        K::ConnectionReset => "the device reset the connection".into(),
        K::ConnectionAborted | K::BrokenPipe | K::NotConnected => {
            "the connection was closed (broken pipe)".into()
        }
        K::TimedOut => "the connection timed out".into(),
        _ => e.to_string(),
    }
}

/// Every tag bad for `why`, plus the link statistics (a failed connection attempt).
async fn fail_all(sh: &Shared, ctx: &DriverContext, why: BadReason, batch: &mut Vec<Sample>) {
    let ts = ctx.clock().now();
    batch.clear();
    for (id, text) in sh.tag_ids.iter().zip(&sh.text_slot) {
        if text.is_none() {
            batch.push(Sample::bad(ts, *id, why));
        }
    }
    sh.stats.push_samples(ts, f64::NAN, batch);
    let _ = ctx.send(batch).await;
}

fn mark_bad(
    sh: &Shared,
    r: &Request,
    why: BadReason,
    ts: edge_driver_api::Timestamp,
    out: &mut Vec<Sample>,
) {
    for &(ti, _) in &r.tags {
        if sh.text_slot[ti].is_none() {
            out.push(Sample::bad(ts, sh.tag_ids[ti], why));
        }
    }
}

/// Last values of the string tags, and a buffer to decode into.
#[derive(Debug)]
struct Texts {
    changes: TextChanges,
    scratch: String,
}

fn decode(
    sh: &Shared,
    r: &Request,
    outcome: &Outcome,
    ts: edge_driver_api::Timestamp,
    out: &mut Vec<Sample>,
    texts: &mut Texts,
    ctx: &DriverContext,
) {
    for &(ti, off) in &r.tags {
        let tag = &sh.tags[ti];
        let id = sh.tag_ids[ti];
        let off = usize::from(off);
        if let Some(slot) = sh.text_slot[ti] {
            let regs = match outcome {
                Outcome::Registers(regs) => regs.get(off..off + usize::from(tag.ty.width())),
                _ => None,
            };
            match regs {
                Some(regs) => {
                    plan::decode_string(regs, tag.order, &mut texts.scratch);
                    if let Some(v) = texts.changes.update(slot, &texts.scratch) {
                        ctx.emit_text(id, ts, v);
                    }
                }
                None => texts.changes.forget(slot),
            }
            continue;
        }
        let raw = match outcome {
            Outcome::Exception(code) => {
                out.push(Sample::bad(
                    ts,
                    id,
                    BadReason::DeviceException((*code).into()),
                ));
                continue;
            }
            Outcome::Bits(bits) => bits.get(off).map(|b| f64::from(u8::from(*b))),
            Outcome::Registers(regs) => regs
                .get(off..off + usize::from(tag.ty.width()))
                .and_then(|w| plan::decode_registers(w, tag.ty, tag.order)),
        };
        match raw {
            Some(v) => out.push(Sample::new_f64(ts, id, v * tag.scale + tag.offset)),
            None => out.push(Sample::bad(ts, id, BadReason::Decode)),
        }
    }
}
