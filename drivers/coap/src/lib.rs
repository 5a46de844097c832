//! `coap`: CoAP devices (RFC 7252) over UDP with coap-lite: GET polling and Observe
//! (RFC 7641), confirmable requests with RFC 7252 retransmission, block-wise
//! transfer of large responses (RFC 7959 Block2).
//!
//! ```toml
//! [[drivers]]
//! name = "field"
//! kind = "coap"
//! host = "192.0.2.30"
//! port = 5683
//! ack_timeout = "2s"       # RFC 7252 ACK_TIMEOUT; retransmissions double it
//! max_retransmit = 4
//!
//! [[drivers.resources]]
//! path = "/sensors/temp"
//! mode = "poll"            # poll | observe
//! poll = "1s"
//! format = "number"        # number | text | json | cbor | senml | senml_cbor
//! signal = "field.temp"
//! unit = "°C"
//!
//! [[drivers.resources]]
//! path = "/env"
//! mode = "observe"
//! observe_timeout = "5m"   # re-register when no notification came for this long
//! format = "json"
//! values = [{ pointer = "/t", signal = "field.env.temp" }]
//!
//! [[drivers.resources]]
//! path = "/pack"
//! format = "senml"
//! signal = "field.{name}"  # {name}: the SenML record's resolved name
//! ```
//!
//! A request that gets no answer after the retransmissions makes its signals
//! bad-quality (timeout); an error response (4.04, 5.03...) makes them bad with the
//! response code (class·32 + detail, e.g. 4.04 → 132); polling goes on. Confirmable
//! notifications are acknowledged (aiocoap, for one, drops observers that do not).
//! The link's health score covers every exchange.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use edge_driver_api::config::{Span, TableReader};
use edge_driver_api::health::{CommStats, HealthConfig, comm_signal_decls};
use edge_driver_api::payload::{self, Format, Pointer, TimeUnit};
use edge_driver_api::{
    BadReason, BoxFuture, Driver, DriverContext, DriverError, DriverFactory, Sample, SignalDecl,
    SignalId, SignalPattern, SignalRegistry, Timestamp, render_template, template_placeholders,
};
use tokio::net::UdpSocket;

/// Poll or observe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Poll,
    Observe,
}

/// One resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub path: String,
    pub mode: Mode,
    pub poll: Duration,
    pub observe_timeout: Duration,
    pub format: Format,
    pub templates: Vec<String>,
    pub unit: Option<String>,
    pub span: Span,
}

/// Validated `coap` configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct CoapConfig {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub ack_timeout: Duration,
    pub max_retransmit: u32,
    pub health: HealthConfig,
    pub resources: Vec<Resource>,
    pub span: Span,
}

const MAX_BODY: usize = 256 * 1024;

impl CoapConfig {
    pub fn parse(r: &mut TableReader<'_>, name: &str) -> Option<CoapConfig> {
        let mut ok = true;
        let host = r.req_string("host");
        let port = r
            .int_in("port", 1, 65535)
            .map(|v| v.value as u16)
            .unwrap_or(5683);
        let ack_timeout = r
            .duration("ack_timeout")
            .map(|v| v.value)
            .unwrap_or(Duration::from_secs(2));
        let max_retransmit = r
            .int_in("max_retransmit", 0, 10)
            .map(|v| v.value as u32)
            .unwrap_or(4);
        if ack_timeout < Duration::from_millis(10) {
            r.table_error("`ack_timeout` must be at least 10ms").emit();
            ok = false;
        }
        // The exchange lifetime bounds a request: the "timeout" of health scoring.
        let exchange = ack_timeout.mul_f64(1.5) * ((1u32 << max_retransmit.min(10)) * 2 - 1);
        let mut resources = Vec::new();
        let readers = r.tables("resources");
        if readers.is_empty() {
            r.table_error("a coap driver needs at least one resource")
                .hint("add [[drivers.resources]] with path, format and signal")
                .emit();
            ok = false;
        }
        let mut fastest = Duration::from_secs(3600);
        for mut t in readers {
            match parse_resource(&mut t) {
                Some(res) => {
                    fastest = fastest.min(res.poll);
                    resources.push(res);
                }
                None => ok = false,
            }
        }
        let health = HealthConfig::parse(r, fastest, exchange);
        let host = host?;
        if (host.value.as_str(), port).to_socket_addrs().is_err() {
            r.error(
                host.span,
                "host",
                format!("cannot resolve `{}`", host.value),
            )
            .expected("an IP address or a resolvable host name")
            .emit();
            ok = false;
        }
        ok.then(|| CoapConfig {
            name: name.to_string(),
            host: host.value,
            port,
            ack_timeout,
            max_retransmit,
            health,
            resources,
            span: r.span(),
        })
    }

    /// Fixed signals: every concrete resource signal, then the link statistics.
    pub fn signals(&self) -> Vec<SignalDecl> {
        let mut out = Vec::new();
        for r in &self.resources {
            for t in &r.templates {
                if template_placeholders(t).is_some_and(|p| p.is_empty()) {
                    out.push(SignalDecl {
                        name: t.clone(),
                        unit: r.unit.clone(),
                        span: r.span,
                        text: r.format == Format::Text,
                    });
                }
            }
        }
        out.extend(comm_signal_decls(&self.name, self.span));
        out
    }

    /// SenML templates with `{name}`: signal families.
    pub fn patterns(&self) -> Vec<SignalPattern> {
        self.resources
            .iter()
            .flat_map(|r| {
                r.templates
                    .iter()
                    .filter(|t| template_placeholders(t).is_some_and(|p| !p.is_empty()))
                    .map(|t| SignalPattern {
                        template: t.clone(),
                        unit: r.unit.clone(),
                        text: false,
                        span: r.span,
                    })
            })
            .collect()
    }

    pub fn into_factory(self, registry: &SignalRegistry) -> Result<CoapFactory, DriverError> {
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                DriverError::config(format!("cannot resolve {}:{}", self.host, self.port))
            })?;
        let fastest = self
            .resources
            .iter()
            .map(|r| r.poll)
            .min()
            .unwrap_or(Duration::from_secs(1));
        let stats = CommStats::new(&self.name, self.health.clone(), fastest, registry)?;
        // Name → id for everything this driver may produce.
        let mut known = std::collections::HashMap::new();
        for i in 0..registry.len() {
            let id = SignalId(i as u32);
            let m = registry.meta(id);
            if *m.driver == *self.name {
                known.insert(m.name.to_string(), (id, m.text));
            }
        }
        Ok(CoapFactory {
            shared: Arc::new(Shared {
                addr,
                cfg: self,
                stats,
                known,
            }),
        })
    }
}

fn parse_resource(t: &mut TableReader<'_>) -> Option<Resource> {
    let path = t.req_string("path");
    let mode = t
        .choice("mode", &[("poll", Mode::Poll), ("observe", Mode::Observe)])
        .map(|v| v.value)
        .unwrap_or(Mode::Poll);
    let poll = t
        .duration("poll")
        .map(|v| v.value)
        .unwrap_or(Duration::from_secs(1));
    let observe_timeout = t
        .duration("observe_timeout")
        .map(|v| v.value)
        .unwrap_or(Duration::from_secs(300));
    let kind = t
        .choice(
            "format",
            &[
                ("number", 0u8),
                ("text", 1),
                ("json", 2),
                ("cbor", 3),
                ("senml", 4),
                ("senml_cbor", 5),
            ],
        )
        .map(|v| v.value)
        .unwrap_or(0);
    let unit = t.string("unit").map(|v| v.value);
    let mut templates = Vec::new();
    let format = if kind == 2 || kind == 3 {
        let ts = t.string("timestamp");
        let tu = t
            .choice(
                "timestamp_unit",
                &[("s", TimeUnit::Seconds), ("ms", TimeUnit::Millis)],
            )
            .map(|v| v.value)
            .unwrap_or(TimeUnit::Seconds);
        let mut values = Vec::new();
        let vals = t.tables("values");
        if vals.is_empty() {
            t.table_error("a json/cbor resource needs `values`")
                .hint("values = [{ pointer = \"/t\", signal = \"dev.temp\" }]")
                .emit();
            return None;
        }
        for mut v in vals {
            let (Some(p), Some(sig)) = (v.req_string("pointer"), v.req_string("signal")) else {
                return None;
            };
            values.push(Pointer {
                pointer: p.value,
                template: templates.len(),
            });
            templates.push(sig.value);
        }
        let timestamp = ts.map(|s| (s.value, tu));
        if kind == 2 {
            Format::Json { values, timestamp }
        } else {
            Format::Cbor { values, timestamp }
        }
    } else {
        let sig = t.req_string("signal")?;
        let senml = kind == 4 || kind == 5;
        match template_placeholders(&sig.value) {
            Some(p) if p.iter().all(|x| *x == "name") && (senml || p.is_empty()) => {}
            _ => {
                t.error(
                    sig.span,
                    "signal",
                    format!(
                        "`{}`: only SenML resources take a template, and only `{{name}}`",
                        sig.value
                    ),
                )
                .expected("a signal name, or for senml a template such as \"dev.{name}\"")
                .emit();
                return None;
            }
        }
        templates.push(sig.value);
        match kind {
            1 => Format::Text,
            4 => Format::SenMl,
            5 => Format::SenMlCbor,
            _ => Format::Number,
        }
    };
    let path = path?;
    if !path.value.starts_with('/') {
        t.error(path.span, "path", "a resource path starts with `/`")
            .emit();
        return None;
    }
    Some(Resource {
        path: path.value,
        mode,
        poll,
        observe_timeout,
        format,
        templates,
        unit,
        span: t.span(),
    })
}

#[derive(Debug)]
struct Shared {
    addr: SocketAddr,
    cfg: CoapConfig,
    stats: CommStats,
    known: std::collections::HashMap<String, (SignalId, bool)>,
}

/// Creates CoAP drivers (one UDP socket each).
#[derive(Debug, Clone)]
pub struct CoapFactory {
    shared: Arc<Shared>,
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
}

struct CoapDriver {
    shared: Arc<Shared>,
}

impl Driver for CoapDriver {
    fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<'static, Result<(), DriverError>> {
        Box::pin(run(self.shared, ctx))
    }
}

/// Why an exchange failed.
#[derive(Debug)]
enum Failure {
    Timeout,
    Io(std::io::Error),
    /// An error response code (class·32 + detail).
    Code(u8),
    TooLarge,
}

/// The socket with message-id / token bookkeeping.
struct Conn {
    sock: UdpSocket,
    mid: u16,
    token: u64,
    buf: Vec<u8>,
}

fn code_byte(c: MessageClass) -> u8 {
    u8::from(c)
}

fn ack_for(p: &Packet) -> Option<Vec<u8>> {
    let mut a = Packet::new();
    a.header.set_type(MessageType::Acknowledgement);
    a.header.message_id = p.header.message_id;
    a.header.code = MessageClass::Empty;
    a.to_bytes().ok()
}

impl Conn {
    /// Acknowledges a confirmable message (best effort: a lost ACK is retransmitted).
    async fn ack(&self, p: &Packet) {
        if p.header.get_type() == MessageType::Confirmable
            && let Some(a) = ack_for(p)
        {
            let _ = self.sock.send(&a).await;
        }
    }

    fn next_mid(&mut self) -> u16 {
        self.mid = self.mid.wrapping_add(1);
        self.mid
    }

    fn next_token(&mut self) -> Vec<u8> {
        self.token = self.token.wrapping_add(1);
        self.token.to_be_bytes()[4..].to_vec()
    }

    /// One confirmable GET (with optional Observe / Block2), retransmitted per RFC
    /// 7252 §4.2. Packets that are not the answer go to `other`.
    async fn get(
        &mut self,
        sh: &Shared,
        path: &str,
        token: &[u8],
        observe: bool,
        block: Option<u32>,
        other: &mut Vec<Packet>,
    ) -> Result<Packet, Failure> {
        let mut req = Packet::new();
        req.header.set_type(MessageType::Confirmable);
        req.header.code = MessageClass::Request(RequestType::Get);
        let mid = self.next_mid();
        req.header.message_id = mid;
        req.set_token(token.to_vec());
        if observe {
            req.set_observe_value(0);
        }
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            req.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        if let Some(num) = block {
            // Block2: NUM, M=0, SZX=6 (1024 bytes).
            let v = (num << 4) | 6;
            let bytes = v.to_be_bytes();
            let first = bytes.iter().position(|&b| b != 0).unwrap_or(3);
            req.add_option(CoapOption::Block2, bytes[first..].to_vec());
        }
        let bytes = req.to_bytes().map_err(|_| Failure::TooLarge)?;
        let mut timeout = sh.cfg.ack_timeout.mul_f64(1.0 + 0.5 * jitter(mid));
        let mut acked = false;
        let mut sent = 0u32;
        loop {
            if !acked {
                self.sock.send(&bytes).await.map_err(Failure::Io)?;
                sent += 1;
            }
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                self.buf.resize(64 * 1024, 0);
                let n = match tokio::time::timeout_at(deadline, self.sock.recv(&mut self.buf)).await
                {
                    Err(_) => break,
                    Ok(Err(e)) => return Err(Failure::Io(e)),
                    Ok(Ok(n)) => n,
                };
                let Ok(p) = Packet::from_bytes(&self.buf[..n]) else {
                    continue; // garbage datagram: ignore
                };
                let is_ours = p.get_token() == token;
                match (p.header.get_type(), is_ours) {
                    (MessageType::Acknowledgement, _) if p.header.message_id == mid => {
                        if p.header.code == MessageClass::Empty {
                            // Separate response follows.
                            acked = true;
                            continue;
                        }
                        return finish(p);
                    }
                    (MessageType::Confirmable | MessageType::NonConfirmable, true)
                        if matches!(p.header.code, MessageClass::Response(_)) =>
                    {
                        self.ack(&p).await;
                        return finish(p);
                    }
                    _ => {
                        // Not the answer (a notification, most likely): acknowledge
                        // it here, handle it after the exchange.
                        self.ack(&p).await;
                        other.push(p);
                    }
                }
            }
            if acked {
                // Waited a whole (doubled) interval for the separate response.
                if sent > sh.cfg.max_retransmit + 1 {
                    return Err(Failure::Timeout);
                }
                sent += 1;
                timeout *= 2;
                continue;
            }
            if sent > sh.cfg.max_retransmit {
                return Err(Failure::Timeout);
            }
            timeout *= 2;
        }
    }
}

fn finish(p: Packet) -> Result<Packet, Failure> {
    match p.header.code {
        MessageClass::Response(ResponseType::Content)
        | MessageClass::Response(ResponseType::Valid) => Ok(p),
        MessageClass::Response(_) => Err(Failure::Code(code_byte(p.header.code))),
        _ => Err(Failure::Code(0)),
    }
}

/// A deterministic 0..1 factor from the message id (ACK_RANDOM_FACTOR spread).
fn jitter(mid: u16) -> f64 {
    f64::from(mid.wrapping_mul(40503) >> 4) / 4096.0
}

fn block2(p: &Packet) -> Option<(u32, bool)> {
    let v = p.get_first_option(CoapOption::Block2)?;
    if v.len() > 3 {
        return None;
    }
    let mut x = 0u32;
    for b in v {
        x = (x << 8) | u32::from(*b);
    }
    Some((x >> 4, x & 0x08 != 0))
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
    let r = payload::parse(&res.format, body, now.wall_ns, &mut |item| {
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
    if let Err(e) = r {
        tracing::debug!(driver = ctx.name(), path = %res.path, error = ?e, "unreadable CoAP payload");
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

async fn run(sh: Arc<Shared>, ctx: DriverContext) -> Result<(), DriverError> {
    let cfg = &sh.cfg;
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
    let mut conn = Conn {
        sock,
        mid: (std::process::id() as u16).wrapping_mul(7919),
        token: u64::from(std::process::id()) << 16,
        buf: vec![0u8; 64 * 1024],
    };
    sh.stats.connected();
    let start = tokio::time::Instant::now();
    let mut states: Vec<ResState> = cfg
        .resources
        .iter()
        .map(|_| ResState {
            next: start,
            token: Vec::new(),
            last_notification: start,
            registered: false,
            last_observe_seq: None,
        })
        .collect();
    for st in &mut states {
        st.token = conn.next_token();
    }
    let mut batch: Vec<Sample> = Vec::with_capacity(64);
    let mut name = String::new();
    let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        // Notifications that arrive outside a request are handled here too.
        let wake = states
            .iter()
            .zip(&cfg.resources)
            .map(|(s, r)| match r.mode {
                Mode::Poll => s.next,
                Mode::Observe if !s.registered => s.next,
                Mode::Observe => s.last_notification + r.observe_timeout,
            })
            .min()
            .unwrap_or(start + Duration::from_secs(1));
        conn.buf.resize(64 * 1024, 0);
        tokio::select! {
            _ = ctx.cancelled() => return Ok(()),
            _ = stats_tick.tick() => {
                batch.clear();
                let report = sh.stats.push_samples(ctx.clock().now(), f64::NAN, &mut batch);
                sh.stats.adapt(report.score);
                if ctx.send(&batch).await.is_err() { return Ok(()); }
                continue;
            }
            r = conn.sock.recv(&mut conn.buf) => {
                let Ok(n) = r else { continue };
                let Ok(p) = Packet::from_bytes(&conn.buf[..n]) else { continue };
                batch.clear();
                conn.ack(&p).await;
                handle_notification(&sh, &ctx, &mut states, &p, &mut name, &mut batch);
                if !batch.is_empty() && ctx.send(&batch).await.is_err() { return Ok(()); }
                continue;
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = tokio::time::Instant::now();
        for (i, res) in cfg.resources.iter().enumerate() {
            let due = match res.mode {
                Mode::Poll => states[i].next <= now,
                Mode::Observe => {
                    (!states[i].registered && states[i].next <= now)
                        || (states[i].registered
                            && states[i].last_notification + res.observe_timeout <= now)
                }
            };
            if !due {
                continue;
            }
            let observe = res.mode == Mode::Observe;
            if observe && states[i].registered {
                tracing::info!(driver = ctx.name(), path = %res.path, "no notification within observe_timeout; registering again");
            }
            let token = if observe {
                states[i].token.clone()
            } else {
                conn.next_token()
            };
            let t0 = tokio::time::Instant::now();
            batch.clear();
            let mut body: Vec<u8> = Vec::new();
            let mut block = None;
            let outcome = loop {
                let mut pending: Vec<Packet> = Vec::new();
                let r = conn
                    .get(
                        &sh,
                        &res.path,
                        &token,
                        observe && block.is_none(),
                        block,
                        &mut pending,
                    )
                    .await;
                for p in &pending {
                    handle_notification(&sh, &ctx, &mut states, p, &mut name, &mut batch);
                }
                match r {
                    Ok(p) => {
                        body.extend_from_slice(&p.payload);
                        if body.len() > MAX_BODY {
                            break Err(Failure::TooLarge);
                        }
                        match block2(&p) {
                            Some((num, true)) => {
                                block = Some(num + 1);
                                continue;
                            }
                            _ => {
                                if observe {
                                    states[i].last_observe_seq =
                                        p.get_observe_value().and_then(Result::ok);
                                }
                                break Ok(());
                            }
                        }
                    }
                    Err(f) => break Err(f),
                }
            };
            let ts = ctx.clock().now();
            let now2 = tokio::time::Instant::now();
            match outcome {
                Ok(()) => {
                    sh.stats.success(t0.elapsed());
                    decode(&sh, res, &body, &ctx, &mut name, &mut batch);
                    if observe {
                        states[i].registered = true;
                        states[i].last_notification = now2;
                    }
                }
                Err(f) => {
                    let why = match f {
                        Failure::Timeout => {
                            sh.stats.timeout();
                            BadReason::Timeout
                        }
                        Failure::Code(c) => {
                            sh.stats.success(t0.elapsed());
                            sh.stats.exception();
                            BadReason::DeviceException(c)
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
                    };
                    mark_bad(&sh, res, why, ts, &mut batch);
                    if observe {
                        states[i].registered = false;
                    }
                }
            }
            // Adaptive polling stretches every resource's period by the same factor.
            let period = res.poll * sh.stats.poll_factor();
            states[i].next = now2 + period;
            if !batch.is_empty() && ctx.send(&batch).await.is_err() {
                return Ok(());
            }
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
        if let Some(last) = states[i].last_observe_seq {
            let newer =
                (seq > last && seq - last < (1 << 23)) || (seq < last && last - seq > (1 << 23));
            if !newer {
                return;
            }
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
                BadReason::DeviceException(code_byte(p.header.code)),
                ctx.clock().now(),
                out,
            );
        }
        _ => {}
    }
}
