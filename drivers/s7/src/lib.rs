//! `s7`: Siemens S7 PLCs over ISO-on-TCP (RFC 1006), with our own sans-IO codec.
//!
//! ```toml
//! [[drivers]]
//! name = "press3"
//! kind = "s7"
//! host = "192.0.2.20"
//! port = 102
//! rack = 0
//! slot = 1               # S7-300: 2; S7-1200/1500: 0 or 1
//! connection = "PG"      # PG | OP | S7 (basic)
//! # local_tsap = 0x0100  # instead of rack/slot, for CPs and S7-200-style TSAPs
//! # remote_tsap = 0x0301
//! poll = "1s"
//! timeout = "2s"
//! pdu_size = 480         # asked for; the PLC may grant less
//! max_items = 20         # items per request (Snap7-based devices accept 20)
//! max_gap = 16           # unused bytes allowed inside one merged read
//!
//! [[drivers.tags]]
//! name = "press3.oil_temp"
//! address = "DB10.DBD4"  # DB1.DBX0.0 DB1.DBB1 DB1.DBW2 DB1.DBD4 M0.1 MW10 I0.0/E0.0 Q0.0/A0.0 ...
//! type = "REAL"          # BOOL BYTE CHAR SINT USINT WORD UINT INT DWORD UDINT DINT REAL LREAL TIME DATE_AND_TIME STRING
//! # length = 20          # STRING: declared length (STRING[20]); default 254
//! scale = 1.0
//! offset = 0.0
//! unit = "°C"
//!
//! [drivers.health]       # optional: see edge_driver_api::health
//! warning = 75
//! critical = 60
//! ```
//!
//! S7-1200/1500 CPUs answer only with "Permit access with PUT/GET communication"
//! enabled and for DBs with "Optimized block access" switched off (absolute
//! addresses exist only then).
//!
//! Each cycle reads every tag with the fewest requests the negotiated PDU allows
//! ([`plan`]). An item-level error (e.g. a DB that does not exist) makes that tag a
//! bad-quality sample carrying the return code; a STRING tag is a text signal,
//! reported as an event when its value changes; if the failing item had merged
//! several tags, they are re-planned as separate items so a neighbour's bad address
//! cannot spoil good values. A timeout or a broken/garbled connection fails the
//! attempt as retryable; the supervisor reconnects with backoff, forever — a PLC
//! absent at start-up is never fatal. The link's health score
//! ([`edge_driver_api::health`]) slows polling while the link is sub-healthy.

pub mod addr;
pub mod client;
pub mod codec;
pub mod plan;
pub mod poll;
mod write;

/// Entry points for the fuzz targets in `fuzz/` (also run on the seed corpus and on
/// random bytes by the unit tests).
pub mod fuzzing {
    use crate::codec::{
        Cotp, decode_job, decode_read, decode_setup, decode_write, parse_cotp, parse_s7,
    };

    /// Runs every reply decoder on arbitrary bytes, as the client would on a frame
    /// it received. Must never panic.
    pub fn decode_reply(bytes: &[u8]) {
        let payload = match parse_cotp(bytes) {
            Ok(Cotp::Data { payload, .. }) => payload,
            _ => bytes,
        };
        if let Ok(len) = bytes
            .get(..4)
            .map(|h| crate::codec::tpkt_frame_len([h[0], h[1], h[2], h[3]]))
            .unwrap_or(Ok(0))
        {
            assert!(len <= crate::codec::MAX_FRAME);
        }
        if let Ok(pdu) = parse_s7(payload) {
            let mut items = Vec::new();
            for n in [0, 1, 3, 20] {
                if decode_read(&pdu, n, &mut items).is_ok() {
                    assert_eq!(items.len(), n);
                    for r in items.iter().flatten() {
                        // Every range handed out lies inside the data.
                        assert!(pdu.data.get(r.clone()).is_some());
                    }
                }
            }
            let _ = decode_write(&pdu, 2, &mut Vec::new());
            let _ = decode_setup(&pdu);
            let _ = decode_job(&pdu);
        }
    }
}

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use edge_driver_api::config::{Span, TableReader};
use edge_driver_api::health::{CommStats, HealthConfig, comm_signal_decls};
use edge_driver_api::{
    BadReason, BoxFuture, Driver, DriverContext, DriverError, DriverFactory, Sample, SignalDecl,
    SignalId, SignalRegistry, WritableTag, WriteLimits,
};
use tokio::io::{AsyncRead, AsyncWrite};

pub use addr::{Address, Area, DataType, S7Value};
pub use client::{ClientError, ConnectParams, ConnectionType, S7Client, rack_slot_tsap};

/// An item return code as the S7 protocol names it (`object does not exist
/// (return code 0x0a)` for a missing DB), for bad-quality reasons.
pub fn describe_exception(code: u16) -> String {
    match u8::try_from(code) {
        Ok(c) => codec::ItemError(c).to_string(),
        Err(_) => format!("return code {code:#x}"),
    }
}

/// One configured tag.
#[derive(Clone, Debug, PartialEq)]
pub struct Tag {
    pub name: String,
    pub address: Address,
    pub ty: DataType,
    pub scale: f64,
    pub offset: f64,
    pub eng_unit: Option<String>,
    pub span: Span,
    /// `writable = true` and its limits.
    pub write: Option<WriteLimits>,
}

/// Validated `s7` configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct S7Config {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub local_tsap: u16,
    pub remote_tsap: u16,
    pub poll: Duration,
    pub timeout: Duration,
    pub pdu_size: u16,
    pub max_items: usize,
    pub max_gap: u32,
    pub health: HealthConfig,
    pub tags: Vec<Tag>,
    pub span: Span,
}

impl S7Config {
    /// Reads the driver-specific keys of the `[[drivers]]` section named `name`.
    pub fn parse(r: &mut TableReader<'_>, name: &str) -> Option<S7Config> {
        let mut ok = true;
        let host = r.req_string("host");
        let port = r
            .int_in("port", 1, 65535)
            .map(|v| v.value as u16)
            .unwrap_or(102);
        let rack = r.int_in("rack", 0, 7).map(|v| v.value as u8).unwrap_or(0);
        let slot = r.int_in("slot", 0, 31).map(|v| v.value as u8).unwrap_or(1);
        let kind = r
            .choice(
                "connection",
                &[
                    ("PG", ConnectionType::Pg),
                    ("OP", ConnectionType::Op),
                    ("S7", ConnectionType::S7Basic),
                ],
            )
            .map(|v| v.value)
            .unwrap_or(ConnectionType::Pg);
        let local_tsap = r
            .int_in("local_tsap", 0, 0xFFFF)
            .map(|v| v.value as u16)
            .unwrap_or(0x0100);
        let remote_tsap = r.int_in("remote_tsap", 0, 0xFFFF).map(|v| v.value as u16);
        if remote_tsap.is_some() && (r.has("rack") || r.has("slot")) {
            r.table_error("both `remote_tsap` and `rack`/`slot` are set")
                .hint("use rack/slot for CPUs, or remote_tsap for a CP or a custom TSAP — not both")
                .emit();
            ok = false;
        }
        let remote_tsap = remote_tsap.unwrap_or_else(|| rack_slot_tsap(kind, rack, slot));
        let poll = r
            .duration("poll")
            .map(|v| v.value)
            .unwrap_or(Duration::from_secs(1));
        let timeout = r
            .duration("timeout")
            .map(|v| v.value)
            .unwrap_or(Duration::from_secs(2));
        if poll < Duration::from_millis(10) || timeout < Duration::from_millis(10) {
            r.table_error("`poll` and `timeout` must be at least 10ms")
                .emit();
            ok = false;
        }
        let pdu_size = r
            .int_in("pdu_size", 240, 960)
            .map(|v| v.value as u16)
            .unwrap_or(480);
        let max_items = r
            .int_in("max_items", 1, 255)
            .map(|v| v.value as usize)
            .unwrap_or(20);
        let max_gap = r
            .int_in("max_gap", 0, 1024)
            .map(|v| v.value as u32)
            .unwrap_or(16);
        let health = HealthConfig::parse(r, poll, timeout);
        let readers = r.tables("tags");
        if readers.is_empty() {
            r.table_error("an s7 driver needs at least one tag")
                .hint("add [[drivers.tags]] with name, address (e.g. \"DB1.DBD4\") and type (e.g. \"REAL\")")
                .emit();
            ok = false;
        }
        let mut tags = Vec::new();
        for mut t in readers {
            match parse_tag(&mut t) {
                Some(tag) => tags.push(tag),
                None => ok = false,
            }
        }
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
        ok.then(|| S7Config {
            name: name.to_string(),
            host: host.value,
            port,
            local_tsap,
            remote_tsap,
            poll,
            timeout,
            pdu_size,
            max_items,
            max_gap,
            health,
            tags,
            span: r.span(),
        })
    }

    /// Tag signals, then the communication statistics.
    pub fn signals(&self) -> Vec<SignalDecl> {
        let mut out: Vec<SignalDecl> = self
            .tags
            .iter()
            .map(|t| SignalDecl {
                text: matches!(t.ty, DataType::String(_)),
                name: t.name.clone(),
                unit: t.eng_unit.clone(),
                span: t.span,
                address: Some(format!("{} {:?}", t.address, t.ty)),
            })
            .collect();
        out.extend(comm_signal_decls(&self.name, self.span));
        out
    }

    /// Requests per cycle at a PDU size: one per tag unmerged vs. the plan.
    pub fn request_counts(&self, pdu_size: u16) -> (usize, usize) {
        let ranges = self.ranges(&vec![false; self.tags.len()]);
        let plan = plan::plan(&ranges, self.limits(pdu_size));
        (self.tags.len(), plan.requests.len())
    }

    pub(crate) fn limits(&self, pdu_size: u16) -> plan::Limits {
        plan::Limits {
            pdu_size,
            max_items: self.max_items,
            max_gap: self.max_gap,
        }
    }

    /// What the planner needs of each tag; `isolated[i]` keeps tag `i` unmerged.
    pub(crate) fn ranges(&self, isolated: &[bool]) -> Vec<plan::TagRange> {
        self.tags
            .iter()
            .zip(isolated)
            .map(|(t, &isolated)| plan::TagRange {
                area: t.address.area,
                start: t.address.byte,
                len: t.ty.size(),
                isolated,
            })
            .collect()
    }

    pub fn into_factory(self, registry: &SignalRegistry) -> Result<S7Factory, DriverError> {
        self.into_factory_with(registry, None)
    }

    /// Like [`S7Config::into_factory`], with another stream source than TCP (the
    /// fault-injection tests use an in-memory pipe).
    pub fn into_factory_with(
        self,
        registry: &SignalRegistry,
        connector: Option<Arc<dyn Connector>>,
    ) -> Result<S7Factory, DriverError> {
        let tag_ids = self
            .tags
            .iter()
            .map(|t| {
                registry.get(&t.name).ok_or_else(|| {
                    DriverError::config(format!("signal `{}` was not registered", t.name))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let stats = CommStats::new(&self.name, self.health.clone(), self.poll, registry)?;
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                DriverError::config(format!("cannot resolve {}:{}", self.host, self.port))
            })?;
        Ok(S7Factory {
            shared: Arc::new(Shared {
                addr,
                cfg: self,
                tag_ids,
                stats,
                connector,
            }),
        })
    }
}

fn parse_tag(t: &mut TableReader<'_>) -> Option<Tag> {
    let name = t.req_string("name");
    let address = t.req_string("address");
    let ty_s = t.string("type");
    let length = t.int_in("length", 1, 254).map(|v| v.value as u8);
    let scale = t.f64("scale").map(|v| v.value).unwrap_or(1.0);
    let offset = t.f64("offset").map(|v| v.value).unwrap_or(0.0);
    let eng_unit = t.string("unit").map(|v| v.value);
    let write = WriteLimits::parse(t);
    let (name, address) = (name?, address?);
    let addr = match Address::parse(&address.value) {
        Ok(a) => a,
        Err(msg) => {
            t.error(address.span, "address", msg)
                .expected("e.g. DB1.DBX0.0, DB1.DBW2, DB1.DBD4, MW10, M0.1, I0.0 (E0.0), QB4 (AB4)")
                .emit();
            return None;
        }
    };
    let ty = match &ty_s {
        None => DataType::default_for(addr.width),
        Some(s) => match DataType::parse(&s.value, length) {
            Some(ty) => ty,
            None => {
                t.error(s.span, "type", format!("unknown S7 type `{}`", s.value))
                    .expected(format!("one of: {}", addr::TYPE_NAMES.join(", ")))
                    .emit();
                return None;
            }
        },
    };
    let ty_span = ty_s.as_ref().map(|s| s.span).unwrap_or(address.span);
    if !ty.fits(addr.width) {
        t.error(
            ty_span,
            "type",
            format!("a {} ({} bytes) does not fit the address `{}`", ty.name(), ty.size(), address.value),
        )
        .hint("X addresses hold BOOL; W 2-byte types (INT, WORD, UINT); D 4-byte types (REAL, DINT, DWORD, UDINT, TIME); B any type by its first byte (LREAL, DATE_AND_TIME)")
        .emit();
        return None;
    }
    if addr.byte + ty.size() - 1 > addr::MAX_BYTE {
        t.error(
            address.span,
            "address",
            "the value runs past the largest S7 byte offset",
        )
        .emit();
        return None;
    }
    if write.is_some() && matches!(ty, DataType::String(_) | DataType::DateAndTime) {
        t.table_error(format!(
            "a {} tag cannot be written: writes take numbers and booleans",
            ty.name()
        ))
        .hint("remove `writable`")
        .emit();
        return None;
    }
    if write.is_some() && addr.area == Area::Inputs {
        t.error(
            address.span,
            "address",
            "inputs (I/E) are overwritten by the PLC's I/O scan; they cannot be written",
        )
        .hint("write a marker (M), an output (Q) or a data block (DB) instead")
        .emit();
        return None;
    }
    Some(Tag {
        name: name.value,
        address: addr,
        ty,
        scale,
        offset,
        eng_unit,
        span: name.span,
        write,
    })
}

/// Opens the byte stream to the PLC (tests put a fault-injecting pipe here).
pub trait Connector: Send + Sync + std::fmt::Debug + 'static {
    fn connect(&self) -> BoxFuture<'static, std::io::Result<Box<dyn Stream>>>;
}

/// A byte stream the client runs on.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

#[derive(Debug)]
struct Shared {
    addr: SocketAddr,
    cfg: S7Config,
    tag_ids: Vec<SignalId>,
    stats: CommStats,
    connector: Option<Arc<dyn Connector>>,
}

/// Creates S7 drivers (one connection each).
#[derive(Debug, Clone)]
pub struct S7Factory {
    shared: Arc<Shared>,
}

impl S7Factory {
    /// The link's communication statistics.
    pub fn stats(&self) -> &CommStats {
        &self.shared.stats
    }
}

impl DriverFactory for S7Factory {
    fn kind(&self) -> &'static str {
        "s7"
    }
    fn create(&self) -> Result<Box<dyn Driver>, DriverError> {
        Ok(Box::new(S7Driver {
            shared: self.shared.clone(),
        }))
    }

    fn writable(&self) -> Vec<WritableTag> {
        let sh = &self.shared;
        let tags = sh.cfg.tags.iter().map(|t| t.write.as_ref());
        edge_driver_api::write::writable_tags(tags.zip(sh.tag_ids.iter().copied()))
    }

    /// A TCP connect to the PLC's ISO-on-TCP port; a failure counts as a failed
    /// connection attempt.
    fn probe(&self, ctx: &DriverContext) -> Option<BoxFuture<'static, bool>> {
        let sh = self.shared.clone();
        if sh.connector.is_some() {
            return None;
        }
        let ctx = ctx.clone();
        Some(Box::pin(async move {
            let reachable = edge_driver_api::tcp_reachable(sh.addr, sh.cfg.timeout).await;
            if !reachable {
                sh.stats.error();
                let mut batch = Vec::with_capacity(sh.tag_ids.len() + 16);
                fail_cycle(&sh, &ctx, BadReason::Communication, &mut batch).await;
            }
            reachable
        }))
    }
}

struct S7Driver {
    shared: Arc<Shared>,
}

impl Driver for S7Driver {
    fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<'static, Result<(), DriverError>> {
        Box::pin(run(self.shared, ctx))
    }
}

fn client_error(sh: &Shared, e: ClientError) -> DriverError {
    let msg = format!("{} ({}): {e}", sh.cfg.name, sh.addr);
    match &e {
        ClientError::Io(_) | ClientError::Timeout(..) => DriverError::transient(msg),
        // Refusals, S7 error classes and garbled frames: the PLC answered wrongly.
        ClientError::Codec(_) => DriverError::device(msg),
    }
    .with_source(e)
}

/// Samples for every tag, all bad for `why`, plus the link statistics.
async fn fail_cycle(sh: &Shared, ctx: &DriverContext, why: BadReason, batch: &mut Vec<Sample>) {
    let ts = ctx.clock().now();
    batch.clear();
    for id in &sh.tag_ids {
        batch.push(Sample::bad(ts, *id, why));
    }
    sh.stats.push_samples(ts, f64::NAN, batch);
    let _ = ctx.send(batch).await;
}

async fn open(sh: &Shared) -> Result<Box<dyn Stream>, ClientError> {
    let t = sh.cfg.timeout;
    let fut = async {
        match &sh.connector {
            Some(c) => c.connect().await,
            None => {
                let s = tokio::net::TcpStream::connect(sh.addr).await?;
                s.set_nodelay(true)?;
                Ok(Box::new(s) as Box<dyn Stream>)
            }
        }
    };
    tokio::time::timeout(t, fut)
        .await
        .map_err(|_| ClientError::Timeout("the TCP connection", t))?
        .map_err(ClientError::Io)
}

async fn run(sh: Arc<Shared>, ctx: DriverContext) -> Result<(), DriverError> {
    let cfg = &sh.cfg;
    let mut batch: Vec<Sample> = Vec::with_capacity(cfg.tags.len() + 16);
    let params = ConnectParams {
        local_tsap: cfg.local_tsap,
        remote_tsap: cfg.remote_tsap,
        pdu_size: cfg.pdu_size,
        timeout: cfg.timeout,
    };
    let connected = tokio::select! {
        _ = ctx.cancelled() => return Ok(()),
        r = async {
            let stream = open(&sh).await?;
            S7Client::connect(stream, params).await
        } => r,
    };
    let mut client = match connected {
        Ok(c) => c,
        Err(e) => {
            if e.is_timeout() {
                sh.stats.timeout();
            } else {
                sh.stats.error();
            }
            fail_cycle(&sh, &ctx, BadReason::Communication, &mut batch).await;
            return Err(client_error(&sh, e));
        }
    };
    let connects = sh.stats.connected();
    let pdu_size = client.negotiated().pdu_size;
    let mut poller = poll::Poller::new(cfg, sh.tag_ids.clone(), pdu_size);
    tracing::info!(
        driver = cfg.name,
        addr = %sh.addr,
        pdu_size,
        requests = poller.plan().requests.len(),
        tags = cfg.tags.len(),
        connects,
        "s7 connected"
    );
    let mut next = tokio::time::Instant::now();
    loop {
        batch.clear();
        let res = tokio::select! {
            _ = ctx.cancelled() => { client.close().await; return Ok(()); }
            r = poller.cycle(&mut client, Some(&sh.stats), ctx.clock(), &mut batch) => r,
        };
        let rtt = match res {
            Ok(rtt) => rtt,
            Err(e) => {
                let why = if e.is_timeout() {
                    BadReason::Timeout
                } else {
                    BadReason::Communication
                };
                fail_cycle(&sh, &ctx, why, &mut batch).await;
                return Err(client_error(&sh, e));
            }
        };
        let ts = ctx.clock().now();
        for (id, text) in poller.text_changes() {
            ctx.emit_text(id, ts, text);
        }
        let last_rtt_ms = rtt.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
        let report = sh
            .stats
            .push_samples(ctx.clock().now(), last_rtt_ms, &mut batch);
        if ctx.send(&batch).await.is_err() {
            client.close().await;
            return Ok(());
        }
        let period = sh.stats.adapt(report.score);
        let now = tokio::time::Instant::now();
        next += period;
        if next <= now {
            // Overran (slow PLC or a longer period): restart the grid from now.
            next = now + period;
        }
        loop {
            tokio::select! {
                _ = ctx.cancelled() => { client.close().await; return Ok(()); }
                _ = tokio::time::sleep_until(next) => break,
                req = ctx.next_write() => {
                    if let Err(e) = write::perform(&sh, &mut client, req).await {
                        if e.is_timeout() { sh.stats.timeout() } else { sh.stats.error() }
                        return Err(client_error(&sh, e));
                    }
                }
            }
        }
    }
}
