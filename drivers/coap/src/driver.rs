//! The driver: polls and observes the resources, re-registers silent
//! observations, and turns payloads into samples.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use coap_lite::{MessageClass, Packet, ResponseType};
use edge_driver_api::health::CommStats;
use edge_driver_api::payload::{self, Format};
use edge_driver_api::{
    BadReason, BoxFuture, Driver, DriverContext, DriverError, DriverFactory, Sample, SignalId,
    Timestamp, WritableTag, render_template,
};
use tokio::net::UdpSocket;

use crate::config::{CoapConfig, Mode, Resource};
use crate::exchange::{Conn, Failure, block2, code_byte};

/// The largest response body taken (block-wise transfers included).
pub(crate) const MAX_BODY: usize = 256 * 1024;

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) addr: SocketAddr,
    pub(crate) cfg: CoapConfig,
    pub(crate) stats: CommStats,
    pub(crate) known: std::collections::HashMap<String, (SignalId, bool)>,
}

/// Creates CoAP drivers (one UDP socket each).
#[derive(Debug, Clone)]
pub struct CoapFactory {
    pub(crate) shared: Arc<Shared>,
}

impl DriverFactory for CoapFactory {
    fn kind(&self) -> &'static str {
        "coap"
    }
    fn create(&self) -> Result<Box<dyn Driver>, DriverError> {
        Ok(Box::new(CoapDriver {
            shared: self.shared.clone(),
        }))
    }

    fn writable(&self) -> Vec<WritableTag> {
        let sh = &self.shared;
        sh.cfg
            .resources
            .iter()
            .filter_map(|r| {
                let limits = r.write.clone()?;
                let (signal, _) = *sh.known.get(r.templates.first()?)?;
                Some(WritableTag { signal, limits })
            })
            .collect()
    }
}

struct CoapDriver {
    shared: Arc<Shared>,
}

impl Driver for CoapDriver {
    fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<'static, Result<(), DriverError>> {
        Box::pin(run(self.shared, ctx))
    }
}

/// Per-resource state.
struct ResState {
    next: tokio::time::Instant,
    token: Vec<u8>,
    last_notification: tokio::time::Instant,
    registered: bool,
    last_observe_seq: Option<u32>,
}

fn decode(
    sh: &Shared,
    res: &Resource,
    body: &[u8],
    ctx: &DriverContext,
    name: &mut String,
    out: &mut Vec<Sample>,
) {
    let now = ctx.clock().now();
    let mut found = 0usize;
    let r = payload::parse(&res.format, body, now.wall_ns, &mut |item| {
        found += 1;
        let template = &res.templates[item.template.min(res.templates.len() - 1)];
        let caps: Vec<(&str, &str)> = item
            .name
            .as_deref()
            .map(|n| vec![("name", n)])
            .unwrap_or_default();
        if !render_template(template, &caps, name) {
            return;
        }
        let Some(&(id, text)) = sh.known.get(name.as_str()) else {
            return;
        };
        let ts = Timestamp {
            wall_ns: item.wall_ns.unwrap_or(now.wall_ns),
            ..now
        };
        payload::deliver(item.value, text, id, ts, ctx, out);
    });
    // A document without any of the configured pointers is another
    // representation than the one configured (a server answering text "21.5" to
    // a JSON resource): unreadable, not silence.
    let none_found = found == 0 && matches!(res.format, Format::Json { .. } | Format::Cbor { .. });
    if let Err(e) = r {
        tracing::debug!(driver = ctx.name(), path = %res.path, error = ?e, "unreadable CoAP payload");
        mark_bad(sh, res, BadReason::Decode, now, out);
    } else if none_found {
        tracing::debug!(driver = ctx.name(), path = %res.path, "CoAP payload has none of the configured pointers");
        mark_bad(sh, res, BadReason::Decode, now, out);
    }
}

fn mark_bad(sh: &Shared, res: &Resource, why: BadReason, ts: Timestamp, out: &mut Vec<Sample>) {
    for t in &res.templates {
        if let Some(&(id, false)) = sh.known.get(t.as_str()) {
            out.push(Sample::bad(ts, id, why));
        }
    }
}

/// Per-driver-attempt state: the socket, every resource's state, the batch.
struct Session<'a> {
    sh: &'a Shared,
    ctx: &'a DriverContext,
    conn: Conn,
    states: Vec<ResState>,
    batch: Vec<Sample>,
    /// Scratch for rendered signal names.
    name: String,
    /// When registered observations are next checked (a ping).
    next_check: tokio::time::Instant,
}

async fn run(sh: Arc<Shared>, ctx: DriverContext) -> Result<(), DriverError> {
    let conn = open(&sh).await?;
    sh.stats.connected();
    let start = tokio::time::Instant::now();
    let mut s = Session {
        sh: &sh,
        ctx: &ctx,
        conn,
        states: Vec::with_capacity(sh.cfg.resources.len()),
        batch: Vec::with_capacity(64),
        name: String::new(),
        next_check: start + OBSERVE_CHECK,
    };
    for _ in &sh.cfg.resources {
        let token = s.conn.next_token();
        s.states.push(ResState {
            next: start,
            token,
            last_notification: start,
            registered: false,
            last_observe_seq: None,
        });
    }
    let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        // Notifications that arrive outside a request are handled here too.
        let wake = s.wake().unwrap_or(start + Duration::from_secs(1));
        s.conn.buf.resize(64 * 1024, 0);
        tokio::select! {
            _ = ctx.cancelled() => return Ok(()),
            _ = stats_tick.tick() => {
                s.batch.clear();
                s.check_liveness().await;
                let report = sh.stats.push_samples(ctx.clock().now(), f64::NAN, &mut s.batch);
                sh.stats.adapt(report.score);
                if ctx.send(&s.batch).await.is_err() { return Ok(()); }
                continue;
            }
            r = s.conn.sock.recv(&mut s.conn.buf) => {
                let Ok(n) = r else { continue };
                let Ok(p) = Packet::from_bytes(&s.conn.buf[..n]) else { continue };
                s.batch.clear();
                s.conn.ack(&p).await;
                handle_notification(&sh, &ctx, &mut s.states, &p, &mut s.name, &mut s.batch);
                if !s.batch.is_empty() && ctx.send(&s.batch).await.is_err() { return Ok(()); }
                continue;
            }
            req = ctx.next_write() => {
                let mut pending = Vec::new();
                crate::write::perform(&sh, &mut s.conn, req, &mut pending).await;
                s.handle_notifications(&pending);
                continue;
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = tokio::time::Instant::now();
        for i in 0..sh.cfg.resources.len() {
            if !s.due(i, now) {
                continue;
            }
            s.request(i).await;
            if !s.batch.is_empty() && ctx.send(&s.batch).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// A UDP socket connected to the server.
async fn open(sh: &Shared) -> Result<Conn, DriverError> {
    let bind: SocketAddr = if sh.addr.is_ipv4() {
        "0.0.0.0:0"
            .parse()
            .map_err(|_| DriverError::fatal("bind address"))?
    } else {
        "[::]:0"
            .parse()
            .map_err(|_| DriverError::fatal("bind address"))?
    };
    let sock = UdpSocket::bind(bind).await.map_err(|e| {
        DriverError::transient(format!("cannot open a UDP socket: {e}")).with_source(e)
    })?;
    sock.connect(sh.addr).await.map_err(|e| {
        DriverError::transient(format!("cannot address {}: {e}", sh.addr)).with_source(e)
    })?;
    Ok(Conn {
        sock,
        mid: (std::process::id() as u16).wrapping_mul(7919),
        token: u64::from(std::process::id()) << 16,
        buf: vec![0u8; 64 * 1024],
    })
}

/// How often a server whose observations are registered is pinged: the longest
/// a server restart (which forgets them) goes unnoticed.
const OBSERVE_CHECK: Duration = Duration::from_secs(3);

impl Session<'_> {
    /// Notifications that arrived during an exchange, into the batch.
    fn handle_notifications(&mut self, packets: &[Packet]) {
        for p in packets {
            let (sh, ctx) = (self.sh, self.ctx);
            handle_notification(
                sh,
                ctx,
                &mut self.states,
                p,
                &mut self.name,
                &mut self.batch,
            );
        }
    }

    /// Pings the server (once a second, from the statistics tick) while the link
    /// is down, and every [`OBSERVE_CHECK`] while observations are registered. A
    /// down link that answers gets every resource polled and every observation
    /// registered now, not at the next stretched poll or after `observe_timeout`;
    /// a silent one counts a timeout and its observations are re-registered once
    /// it answers again.
    async fn check_liveness(&mut self) {
        let now = tokio::time::Instant::now();
        let down = self.sh.stats.link_down();
        let observing = self.states.iter().any(|s| s.registered);
        let check_due = observing && now >= self.next_check;
        if !(down || check_due) {
            return;
        }
        self.next_check = now + OBSERVE_CHECK;
        let mut other = Vec::new();
        let wait = self.sh.cfg.ack_timeout.mul_f64(1.5);
        let alive = self.conn.ping(wait, &mut other).await;
        self.handle_notifications(&other);
        if !alive {
            self.sh.stats.timeout();
            for st in &mut self.states {
                st.registered = false;
            }
            return;
        }
        if down {
            tracing::info!(
                driver = self.ctx.name(),
                "coap server answers again; polling and registering now"
            );
            for st in &mut self.states {
                st.next = now;
                st.registered = false;
            }
        }
    }

    /// When the next resource is due: a poll, a registration, or an observation
    /// that has been silent for `observe_timeout`.
    fn wake(&self) -> Option<tokio::time::Instant> {
        self.states
            .iter()
            .zip(&self.sh.cfg.resources)
            .map(|(s, r)| match r.mode {
                Mode::Poll => s.next,
                Mode::Observe if !s.registered => s.next,
                Mode::Observe => s.last_notification + r.observe_timeout,
            })
            .min()
    }

    fn due(&self, i: usize, now: tokio::time::Instant) -> bool {
        let (st, res) = (&self.states[i], &self.sh.cfg.resources[i]);
        match res.mode {
            Mode::Poll => st.next <= now,
            Mode::Observe => {
                (!st.registered && st.next <= now)
                    || (st.registered && st.last_notification + res.observe_timeout <= now)
            }
        }
    }

    /// GETs resource `i` (registering an observation, or again after silence),
    /// turns the answer into samples in the batch, and schedules the next one.
    async fn request(&mut self, i: usize) {
        let (sh, ctx) = (self.sh, self.ctx);
        let res = &sh.cfg.resources[i];
        let observe = res.mode == Mode::Observe;
        if observe && self.states[i].registered {
            tracing::info!(driver = ctx.name(), path = %res.path, "no notification within observe_timeout; registering again");
        }
        let token = if observe {
            self.states[i].token.clone()
        } else {
            self.conn.next_token()
        };
        let t0 = tokio::time::Instant::now();
        self.batch.clear();
        let outcome = self.fetch(i, &token).await;
        let ts = ctx.clock().now();
        let now = tokio::time::Instant::now();
        match outcome {
            Ok(body) => {
                sh.stats.success(t0.elapsed());
                decode(sh, res, &body, ctx, &mut self.name, &mut self.batch);
                if observe {
                    self.states[i].registered = true;
                    self.states[i].last_notification = now;
                }
            }
            Err(f) => {
                let why = failure_reason(sh, ctx, f, t0);
                mark_bad(sh, res, why, ts, &mut self.batch);
                if observe {
                    self.states[i].registered = false;
                }
            }
        }
        // Adaptive polling stretches every resource's period by the same factor.
        self.states[i].next = now + res.poll * sh.stats.poll_factor();
    }

    /// The whole body of resource `i`, block by block (Block2). Notifications
    /// that arrive meanwhile are handled on the way.
    async fn fetch(&mut self, i: usize, token: &[u8]) -> Result<Vec<u8>, Failure> {
        let sh = self.sh;
        let res = &sh.cfg.resources[i];
        let observe = res.mode == Mode::Observe;
        let mut body: Vec<u8> = Vec::new();
        let mut block = None;
        loop {
            let mut pending: Vec<Packet> = Vec::new();
            let r = self
                .conn
                .get(
                    sh,
                    res,
                    token,
                    observe && block.is_none(),
                    block,
                    &mut pending,
                )
                .await;
            self.handle_notifications(&pending);
            let p = r?;
            match append_block(&mut body, &p)? {
                Some(next) => block = Some(next),
                None => {
                    if observe {
                        self.states[i].last_observe_seq =
                            p.get_observe_value().and_then(Result::ok);
                    }
                    return Ok(body);
                }
            }
        }
    }
}

/// Adds a response's payload to the body being assembled; the number of the
/// next Block2 block to ask for, or `None` when the body is whole. A body over
/// [`MAX_BODY`] is refused.
pub(crate) fn append_block(body: &mut Vec<u8>, p: &Packet) -> Result<Option<u32>, Failure> {
    body.extend_from_slice(&p.payload);
    if body.len() > MAX_BODY {
        return Err(Failure::TooLarge);
    }
    Ok(match block2(p) {
        Some((num, true)) => Some(num.saturating_add(1)),
        _ => None,
    })
}

/// RFC 7641 §3.4: whether notification `seq` is newer than `last` (24-bit
/// sequence numbers that wrap).
pub(crate) fn is_newer(seq: u32, last: u32) -> bool {
    (seq > last && seq - last < (1 << 23)) || (seq < last && last - seq > (1 << 23))
}

/// Counts a failed exchange and says what its signals are reported as.
fn failure_reason(
    sh: &Shared,
    ctx: &DriverContext,
    f: Failure,
    t0: tokio::time::Instant,
) -> BadReason {
    match f {
        Failure::Timeout => {
            sh.stats.timeout();
            BadReason::Timeout
        }
        Failure::Code(c) => {
            sh.stats.success(t0.elapsed());
            sh.stats.exception();
            BadReason::DeviceException(c.into())
        }
        Failure::TooLarge => {
            sh.stats.exception();
            BadReason::Decode
        }
        Failure::Io(e) => {
            sh.stats.error();
            tracing::debug!(driver = ctx.name(), error = %e, "coap send/receive failed");
            BadReason::Communication
        }
    }
}

/// An Observe notification for one of our registrations (already acknowledged):
/// decode it and note the time (re-registration watches it).
fn handle_notification(
    sh: &Shared,
    ctx: &DriverContext,
    states: &mut [ResState],
    p: &Packet,
    name: &mut String,
    out: &mut Vec<Sample>,
) {
    if !matches!(p.header.code, MessageClass::Response(_)) {
        return;
    }
    let Some(i) = states.iter().position(|s| s.token == p.get_token()) else {
        return;
    };
    let res = &sh.cfg.resources[i];
    if res.mode != Mode::Observe {
        return;
    }
    // RFC 7641 §3.4: drop notifications older than the newest seen.
    if let Some(seq) = p.get_observe_value().and_then(Result::ok) {
        if states[i]
            .last_observe_seq
            .is_some_and(|last| !is_newer(seq, last))
        {
            return;
        }
        states[i].last_observe_seq = Some(seq);
    }
    states[i].last_notification = tokio::time::Instant::now();
    states[i].registered = true;
    match p.header.code {
        MessageClass::Response(ResponseType::Content) => {
            sh.stats.success(Duration::ZERO);
            decode(sh, res, &p.payload, ctx, name, out);
        }
        MessageClass::Response(_) => {
            // The server ended the observation with an error: register again.
            states[i].registered = false;
            mark_bad(
                sh,
                res,
                BadReason::DeviceException(code_byte(p.header.code).into()),
                ctx.clock().now(),
                out,
            );
        }
        _ => {}
    }
}
