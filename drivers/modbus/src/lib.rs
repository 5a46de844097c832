//! `modbus`: Modbus TCP devices through tokio-modbus.
//!
//! ```toml
//! [[drivers]]
//! name = "skid1"
//! kind = "modbus"
//! host = "192.0.2.10"
//! port = 502
//! unit = 1
//! poll = "1s"
//! timeout = "1s"
//! max_gap = 8            # unused registers allowed inside one request
//! max_registers = 125    # per request (lower it for devices that need smaller reads)
//!
//! [[drivers.tags]]
//! name = "skid1.discharge_pressure"   # the signal name
//! area = "holding"                    # coil | discrete | input | holding
//! address = 100                       # 0-based protocol address
//! type = "f32"                        # bool u16 i16 u32 i32 u64 i64 f32 f64
//! order = "CDAB"                      # ABCD | CDAB | BADC | DCBA
//! scale = 0.1                         # value = raw * scale + offset
//! offset = 0.0
//! unit = "bar"                        # engineering unit
//! ```
//!
//! Tags are coalesced into the fewest reads (same unit, area and poll period; gaps up
//! to `max_gap`; at most 125 registers / 2000 bits). Every request runs under
//! `timeout` (tokio-modbus has none). A Modbus exception makes the request's tags
//! bad-quality samples carrying the exception code, and polling goes on. A timeout or
//! a broken connection marks the tags bad and fails the driver as `Transient`, so the
//! supervisor reconnects with backoff (after a timeout the TCP stream may still
//! deliver the late reply, so it is not reused).
//!
//! Communication statistics are signals too (`<driver>.comm.rtt_ms`, `timeouts`,
//! `exceptions`, `connects`), with the link's health score and its parts
//! (`health`, `success_ratio`, `rtt_p95_ms`, `jitter`, `errors_per_min`, `poll_s`;
//! see [`edge_driver_api::health`]). While the score is below `[drivers.health]
//! warning`, every poll period stretches (up to `poll_max`) so a struggling device
//! is not hammered.

pub mod plan;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use edge_driver_api::config::{Span, TableReader};
use edge_driver_api::health::{CommStats, HealthConfig, comm_signal_decls};
use edge_driver_api::{
    BadReason, BoxFuture, Driver, DriverContext, DriverError, DriverFactory, Sample, SignalDecl,
    SignalId, SignalRegistry,
};
use tokio_modbus::client::Reader;
use tokio_modbus::prelude::SlaveContext;

pub use plan::{Area, DataType, Limits, Request, TagSpan, WordOrder, coalesce};

/// One configured tag.
#[derive(Clone, Debug, PartialEq)]
pub struct Tag {
    pub name: String,
    pub unit_id: u8,
    pub area: Area,
    pub address: u16,
    pub ty: DataType,
    pub order: WordOrder,
    pub scale: f64,
    pub offset: f64,
    pub eng_unit: Option<String>,
    pub poll: Duration,
    pub span: Span,
}

/// Validated `modbus` configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ModbusConfig {
    pub host: String,
    pub port: u16,
    pub timeout: Duration,
    pub limits: Limits,
    pub tags: Vec<Tag>,
    pub stats_prefix: String,
    pub poll: Duration,
    pub health: HealthConfig,
    pub span: Span,
}

impl ModbusConfig {
    /// Reads the driver-specific keys; `name` is the driver instance name (prefix of
    /// the communication-statistics signals).
    pub fn parse(r: &mut TableReader<'_>, name: &str) -> Option<ModbusConfig> {
        let host = r.req_string("host");
        let port = r
            .int_in("port", 1, 65535)
            .map(|v| v.value as u16)
            .unwrap_or(502);
        let unit = r.int_in("unit", 0, 255).map(|v| v.value as u8).unwrap_or(1);
        let poll = r
            .duration("poll")
            .map(|v| v.value)
            .unwrap_or(Duration::from_secs(1));
        let timeout = r
            .duration("timeout")
            .map(|v| v.value)
            .unwrap_or(Duration::from_secs(1));
        let max_gap = r
            .int_in("max_gap", 0, 125)
            .map(|v| v.value as u16)
            .unwrap_or(8);
        let max_registers = r
            .int_in("max_registers", 1, 125)
            .map(|v| v.value as u16)
            .unwrap_or(125);
        let max_bits = r
            .int_in("max_bits", 1, 2000)
            .map(|v| v.value as u16)
            .unwrap_or(2000);
        let default_order = r
            .choice("order", ORDERS)
            .map(|o| o.value)
            .unwrap_or(WordOrder::Abcd);
        let mut ok = true;
        if poll < Duration::from_millis(10) || timeout < Duration::from_millis(10) {
            r.table_error("`poll` and `timeout` must be at least 10ms")
                .emit();
            ok = false;
        }
        let health = HealthConfig::parse(r, poll, timeout);
        let mut tags = Vec::new();
        let readers = r.tables("tags");
        if readers.is_empty() {
            r.table_error("a modbus driver needs at least one tag")
                .hint("add [[drivers.tags]] with name, area, address and type")
                .emit();
            ok = false;
        }
        for mut t in readers {
            match parse_tag(&mut t, unit, poll, default_order) {
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
        ok.then(|| ModbusConfig {
            host: host.value,
            port,
            timeout,
            limits: Limits {
                max_gap,
                max_registers,
                max_bits,
            },
            tags,
            stats_prefix: name.to_string(),
            poll,
            health,
            span: r.span(),
        })
    }

    /// Tag signals, then the communication statistics.
    pub fn signals(&self) -> Vec<SignalDecl> {
        let mut out: Vec<SignalDecl> = self
            .tags
            .iter()
            .map(|t| SignalDecl {
                text: false,
                name: t.name.clone(),
                unit: t.eng_unit.clone(),
                span: t.span,
            })
            .collect();
        out.extend(comm_signal_decls(&self.stats_prefix, self.span));
        out
    }

    pub fn into_factory(self, registry: &SignalRegistry) -> Result<ModbusFactory, DriverError> {
        let id = |n: &str| {
            registry
                .get(n)
                .ok_or_else(|| DriverError::config(format!("signal `{n}` was not registered")))
        };
        let tag_ids = self
            .tags
            .iter()
            .map(|t| id(&t.name))
            .collect::<Result<Vec<_>, _>>()?;
        let stats = CommStats::new(&self.stats_prefix, self.health.clone(), self.poll, registry)?;
        let requests = coalesce(&self.spans(), self.limits);
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                DriverError::config(format!("cannot resolve {}:{}", self.host, self.port))
            })?;
        Ok(ModbusFactory {
            shared: Arc::new(Shared {
                addr,
                timeout: self.timeout,
                tags: self.tags,
                tag_ids,
                requests,
                stats,
                base_poll: self.poll,
            }),
        })
    }

    /// Number of read requests per cycle before (one per tag) and after coalescing.
    pub fn request_counts(&self) -> (usize, usize) {
        let spans = self.spans();
        (spans.len(), coalesce(&spans, self.limits).len())
    }

    /// What the coalescing planner needs of each tag.
    fn spans(&self) -> Vec<TagSpan> {
        self.tags
            .iter()
            .map(|t| TagSpan {
                unit: t.unit_id,
                area: t.area,
                address: t.address,
                width: if t.area.is_bit() { 1 } else { t.ty.width() },
                poll_ms: t.poll.as_millis() as u64,
            })
            .collect()
    }
}

const ORDERS: &[(&str, WordOrder)] = &[
    ("ABCD", WordOrder::Abcd),
    ("CDAB", WordOrder::Cdab),
    ("BADC", WordOrder::Badc),
    ("DCBA", WordOrder::Dcba),
];

fn parse_tag(t: &mut TableReader<'_>, unit: u8, poll: Duration, order: WordOrder) -> Option<Tag> {
    let name = t.req_string("name");
    let area = if t.has("area") {
        t.choice(
            "area",
            &[
                ("coil", Area::Coil),
                ("discrete", Area::DiscreteInput),
                ("input", Area::InputRegister),
                ("holding", Area::HoldingRegister),
            ],
        )
    } else {
        t.table_error("missing required key `area`")
            .expected("one of: coil, discrete, input, holding")
            .emit();
        None
    };
    let address = if t.has("address") {
        t.int_in("address", 0, 65535)
    } else {
        t.table_error("missing required key `address`")
            .expected("the 0-based protocol address (register 40001 is holding address 0)")
            .emit();
        None
    };
    let ty = t
        .choice(
            "type",
            &[
                ("bool", DataType::Bool),
                ("u16", DataType::U16),
                ("i16", DataType::I16),
                ("u32", DataType::U32),
                ("i32", DataType::I32),
                ("u64", DataType::U64),
                ("i64", DataType::I64),
                ("f32", DataType::F32),
                ("f64", DataType::F64),
            ],
        )
        .map(|v| v.value);
    let order = t.choice("order", ORDERS).map(|v| v.value).unwrap_or(order);
    let scale = t.f64("scale").map(|v| v.value).unwrap_or(1.0);
    let offset = t.f64("offset").map(|v| v.value).unwrap_or(0.0);
    let eng_unit = t.string("unit").map(|v| v.value);
    let unit_id = t
        .int_in("unit_id", 0, 255)
        .map(|v| v.value as u8)
        .unwrap_or(unit);
    let poll = t.duration("poll").map(|v| v.value).unwrap_or(poll);
    let (name, area, address) = (name?, area?.value, address?);
    let ty = match (area.is_bit(), ty) {
        (true, None | Some(DataType::Bool)) => DataType::Bool,
        (true, Some(other)) => {
            t.error(
                address.span,
                "type",
                format!("coils and discrete inputs are bits; `{other:?}` does not fit"),
            )
            .hint("remove `type` or set type = \"bool\"")
            .emit();
            return None;
        }
        (false, Some(ty)) => ty,
        (false, None) => DataType::U16,
    };
    let end = address.value + i64::from(ty.width());
    if end > 65536 {
        t.error(
            address.span,
            "address",
            format!("a {ty:?} at {} runs past address 65535", address.value),
        )
        .emit();
        return None;
    }
    Some(Tag {
        name: name.value,
        unit_id,
        area,
        address: address.value as u16,
        ty,
        order,
        scale,
        offset,
        eng_unit,
        poll,
        span: name.span,
    })
}

#[derive(Debug)]
struct Shared {
    addr: SocketAddr,
    timeout: Duration,
    tags: Vec<Tag>,
    tag_ids: Vec<SignalId>,
    requests: Vec<Request>,
    stats: CommStats,
    base_poll: Duration,
}

/// Creates Modbus TCP drivers (one connection each).
#[derive(Debug, Clone)]
pub struct ModbusFactory {
    shared: Arc<Shared>,
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
}

struct ModbusDriver {
    shared: Arc<Shared>,
}

impl Driver for ModbusDriver {
    fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<'static, Result<(), DriverError>> {
        Box::pin(run(self.shared, ctx))
    }
}

enum Outcome {
    Registers(Vec<u16>),
    Bits(Vec<bool>),
    Exception(u8),
}

async fn read(
    client: &mut tokio_modbus::client::Context,
    r: &Request,
) -> Result<Result<Outcome, u8>, tokio_modbus::Error> {
    client.set_slave(tokio_modbus::Slave(r.unit));
    let res = match r.area {
        Area::Coil => client
            .read_coils(r.start, r.count)
            .await?
            .map(Outcome::Bits),
        Area::DiscreteInput => client
            .read_discrete_inputs(r.start, r.count)
            .await?
            .map(Outcome::Bits),
        Area::InputRegister => client
            .read_input_registers(r.start, r.count)
            .await?
            .map(Outcome::Registers),
        Area::HoldingRegister => client
            .read_holding_registers(r.start, r.count)
            .await?
            .map(Outcome::Registers),
    };
    Ok(res.map_err(u8::from))
}

async fn run(sh: Arc<Shared>, ctx: DriverContext) -> Result<(), DriverError> {
    let mut batch: Vec<Sample> = Vec::with_capacity(sh.tags.len() + 16);
    let connect = tokio_modbus::client::tcp::connect(sh.addr);
    let connected = tokio::select! {
        _ = ctx.cancelled() => return Ok(()),
        r = tokio::time::timeout(sh.timeout, connect) => r,
    };
    let mut client = match connected {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            sh.stats.error();
            fail_all(&sh, &ctx, BadReason::Communication, &mut batch).await;
            return Err(
                DriverError::transient(format!("connect to {}: {e}", sh.addr)).with_source(e),
            );
        }
        Err(_) => {
            sh.stats.timeout();
            fail_all(&sh, &ctx, BadReason::Timeout, &mut batch).await;
            return Err(DriverError::transient(format!(
                "connect to {} timed out after {:?}",
                sh.addr, sh.timeout
            )));
        }
    };
    let connects = sh.stats.connected();
    tracing::info!(driver = ctx.name(), addr = %sh.addr, requests = sh.requests.len(), tags = sh.tags.len(), connects, "modbus connected");
    let start = tokio::time::Instant::now();
    let mut next_due: Vec<tokio::time::Instant> = vec![start; sh.requests.len()];
    let mut first = true;
    loop {
        let now = tokio::time::Instant::now();
        batch.clear();
        let mut rtt_ms = f64::NAN;
        // Adaptive polling stretches every request's period by the same factor.
        let stretch = sh.stats.poll_period().as_secs_f64() / sh.base_poll.as_secs_f64();
        for (ri, r) in sh.requests.iter().enumerate() {
            if next_due[ri] > now {
                continue;
            }
            let period = Duration::from_millis(r.poll_ms).mul_f64(stretch);
            // Next slot on the poll grid (skip missed ones rather than bursting).
            while next_due[ri] <= now {
                next_due[ri] += period;
            }
            let t0 = tokio::time::Instant::now();
            let res = tokio::select! {
                _ = ctx.cancelled() => return Ok(()),
                r = tokio::time::timeout(sh.timeout, read(&mut client, r)) => r,
            };
            let ts = ctx.clock().now();
            match res {
                Ok(Ok(Ok(outcome))) => {
                    let rtt = t0.elapsed();
                    sh.stats.success(rtt);
                    rtt_ms = rtt.as_secs_f64() * 1e3;
                    decode(&sh, r, &outcome, ts, &mut batch);
                }
                Ok(Ok(Err(code))) => {
                    // The device answered: the link is fine, the request was not.
                    let rtt = t0.elapsed();
                    sh.stats.success(rtt);
                    sh.stats.exception();
                    rtt_ms = rtt.as_secs_f64() * 1e3;
                    tracing::debug!(
                        driver = ctx.name(),
                        unit = r.unit,
                        start = r.start,
                        code,
                        "modbus exception"
                    );
                    decode(&sh, r, &Outcome::Exception(code), ts, &mut batch);
                }
                Ok(Err(e)) => {
                    sh.stats.error();
                    mark_bad(&sh, r, BadReason::Communication, ts, &mut batch);
                    sh.stats.push_samples(ts, f64::NAN, &mut batch);
                    let _ = ctx.send(&batch).await;
                    return Err(DriverError::transient(format!(
                        "modbus read from {}: {e}",
                        sh.addr
                    ))
                    .with_source(e));
                }
                Err(_) => {
                    sh.stats.timeout();
                    mark_bad(&sh, r, BadReason::Timeout, ts, &mut batch);
                    sh.stats.push_samples(ts, f64::NAN, &mut batch);
                    let _ = ctx.send(&batch).await;
                    return Err(DriverError::transient(format!(
                        "unit {} did not answer within {:?}; reconnecting",
                        r.unit, sh.timeout
                    )));
                }
            }
        }
        if !batch.is_empty() || first {
            let report = sh.stats.push_samples(ctx.clock().now(), rtt_ms, &mut batch);
            sh.stats.adapt(report.score);
            if ctx.send(&batch).await.is_err() {
                return Ok(());
            }
            first = false;
        }
        let wake = next_due
            .iter()
            .min()
            .copied()
            .unwrap_or(now + Duration::from_secs(1));
        tokio::select! {
            _ = ctx.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Every tag bad for `why`, plus the link statistics (a failed connection attempt).
async fn fail_all(sh: &Shared, ctx: &DriverContext, why: BadReason, batch: &mut Vec<Sample>) {
    let ts = ctx.clock().now();
    batch.clear();
    for id in &sh.tag_ids {
        batch.push(Sample::bad(ts, *id, why));
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
        out.push(Sample::bad(ts, sh.tag_ids[ti], why));
    }
}

fn decode(
    sh: &Shared,
    r: &Request,
    outcome: &Outcome,
    ts: edge_driver_api::Timestamp,
    out: &mut Vec<Sample>,
) {
    for &(ti, off) in &r.tags {
        let tag = &sh.tags[ti];
        let id = sh.tag_ids[ti];
        let off = usize::from(off);
        let raw = match outcome {
            Outcome::Exception(code) => {
                out.push(Sample::bad(ts, id, BadReason::DeviceException(*code)));
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
