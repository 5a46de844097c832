//! `modbus`: Modbus TCP, RTU (serial) and RTU over TCP through tokio-modbus.
//!
//! ```toml
//! [[drivers]]
//! name = "skid1"
//! kind = "modbus"
//! transport = "tcp"      # tcp | rtu | rtu_over_tcp
//! host = "192.0.2.10"    # tcp, rtu_over_tcp
//! port = 502
//! # device = "/dev/ttyUSB0"   # rtu: the serial port
//! # baud = 19200              # rtu: 9600 by default
//! # parity = "even"           # rtu: none | even | odd (Modbus default: even)
//! # data_bits = 8
//! # stop_bits = 1
//! unit = 1               # default unit (slave) id of the tags
//! poll = "1s"
//! timeout = "1s"
//! max_gap = 8            # unused registers allowed inside one request
//! max_registers = 125    # per request (lower it for devices that need smaller reads)
//! slave_backoff = "1s"   # a silent slave is skipped for this long, doubling...
//! slave_backoff_max = "1m"   # ...up to this
//!
//! [[drivers.tags]]
//! name = "skid1.discharge_pressure"   # the signal name
//! area = "holding"                    # coil | discrete | input | holding
//! address = 100                       # 0-based protocol address
//! type = "f32"                        # bool u16 i16 u32 i32 u64 i64 f32 f64 string
//! order = "CDAB"                      # ABCD | CDAB | BADC | DCBA
//! scale = 0.1                         # value = raw * scale + offset
//! offset = 0.0
//! unit = "bar"                        # engineering unit
//! # unit_id = 2                       # another slave on the same link
//! # length = 10                       # string: registers (2 characters each)
//! ```
//!
//! Tags are coalesced into the fewest reads (same unit, area and poll period; gaps up
//! to `max_gap`; at most 125 registers / 2000 bits). Every request runs under
//! `timeout` (tokio-modbus has none). A Modbus exception makes the request's tags
//! bad-quality samples carrying the exception code, and polling goes on.
//!
//! A slave that does not answer (timeout) or answers garbage is put in **backoff**:
//! its requests are skipped — its tags reported bad — for `slave_backoff`, doubling
//! up to `slave_backoff_max`, while the other slaves on the link keep being polled.
//! The link itself is re-opened after such a failure (a late reply would otherwise
//! be taken for the next one). A broken connection fails the driver as `Transient`
//! and the supervisor reconnects with backoff.
//!
//! `string` tags are text signals: reported as events when their value changes.
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
    SignalId, SignalRegistry, TextChanges,
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

/// Serial line settings of an RTU link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialSettings {
    pub device: String,
    pub baud: u32,
    pub parity: Parity,
    pub data_bits: u8,
    pub stop_bits: u8,
}

/// Serial parity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
}

/// How the driver reaches its devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp {
        host: String,
        port: u16,
    },
    /// RTU frames (with CRC) over a TCP stream, as serial-to-Ethernet gateways do.
    RtuOverTcp {
        host: String,
        port: u16,
    },
    Rtu(SerialSettings),
}

impl Transport {
    fn describe(&self) -> String {
        match self {
            Transport::Tcp { host, port } => format!("tcp://{host}:{port}"),
            Transport::RtuOverTcp { host, port } => format!("rtu+tcp://{host}:{port}"),
            Transport::Rtu(s) => format!("rtu://{} ({} baud)", s.device, s.baud),
        }
    }
}

/// Validated `modbus` configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ModbusConfig {
    pub transport: Transport,
    pub timeout: Duration,
    pub slave_backoff: Duration,
    pub slave_backoff_max: Duration,
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
        let kind = r
            .choice(
                "transport",
                &[("tcp", 0u8), ("rtu", 1u8), ("rtu_over_tcp", 2u8)],
            )
            .map(|v| v.value)
            .unwrap_or(if r.has("device") { 1 } else { 0 });
        let mut ok = true;
        let transport = if kind == 1 {
            let device = r.req_string("device");
            let baud = r
                .int_in("baud", 50, 4_000_000)
                .map(|v| v.value as u32)
                .unwrap_or(9600);
            let parity = r
                .choice(
                    "parity",
                    &[
                        ("none", Parity::None),
                        ("even", Parity::Even),
                        ("odd", Parity::Odd),
                    ],
                )
                .map(|v| v.value)
                .unwrap_or(Parity::Even);
            let data_bits = r
                .int_in("data_bits", 7, 8)
                .map(|v| v.value as u8)
                .unwrap_or(8);
            let stop_bits = r
                .int_in("stop_bits", 1, 2)
                .map(|v| v.value as u8)
                .unwrap_or(1);
            for k in ["host", "port"] {
                if let Some(node) = r.node(k) {
                    r.error(node.span, k, format!("`{k}` does not apply to transport = \"rtu\""))
                        .hint("an RTU link is a serial `device`; use transport = \"rtu_over_tcp\" for a serial-to-Ethernet gateway")
                        .emit();
                    ok = false;
                }
            }
            device.map(|d| {
                Transport::Rtu(SerialSettings {
                    device: d.value,
                    baud,
                    parity,
                    data_bits,
                    stop_bits,
                })
            })
        } else {
            let host = r.req_string("host");
            let port = r
                .int_in("port", 1, 65535)
                .map(|v| v.value as u16)
                .unwrap_or(502);
            if let Some(h) = &host
                && (h.value.as_str(), port).to_socket_addrs().is_err()
            {
                r.error(h.span, "host", format!("cannot resolve `{}`", h.value))
                    .expected("an IP address or a resolvable host name")
                    .emit();
                ok = false;
            }
            host.map(|h| {
                if kind == 2 {
                    Transport::RtuOverTcp {
                        host: h.value,
                        port,
                    }
                } else {
                    Transport::Tcp {
                        host: h.value,
                        port,
                    }
                }
            })
        };
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
        let slave_backoff = r
            .duration("slave_backoff")
            .map(|v| v.value)
            .unwrap_or(Duration::from_secs(1));
        let slave_backoff_max = r
            .duration("slave_backoff_max")
            .map(|v| v.value)
            .unwrap_or(Duration::from_secs(60))
            .max(slave_backoff);
        if poll < Duration::from_millis(1) || timeout < Duration::from_millis(10) {
            r.table_error("`poll` must be at least 1ms and `timeout` at least 10ms")
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
        let transport = transport?;
        ok.then(|| ModbusConfig {
            transport,
            timeout,
            slave_backoff,
            slave_backoff_max,
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
                text: matches!(t.ty, DataType::String(_)),
                name: t.name.clone(),
                unit: t.eng_unit.clone(),
                span: t.span,
            })
            .collect();
        out.extend(comm_signal_decls(&self.stats_prefix, self.span));
        out
    }

    pub fn into_factory(self, registry: &SignalRegistry) -> Result<ModbusFactory, DriverError> {
        self.into_factory_with(registry, None)
    }

    /// Like [`ModbusConfig::into_factory`], with another stream source than the
    /// configured one (fault-injection tests use an in-memory pipe; the framing
    /// still follows `transport`).
    pub fn into_factory_with(
        self,
        registry: &SignalRegistry,
        connector: Option<Arc<dyn Connector>>,
    ) -> Result<ModbusFactory, DriverError> {
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
        let addr = match &self.transport {
            Transport::Tcp { host, port } | Transport::RtuOverTcp { host, port } => Some(
                (host.as_str(), *port)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| DriverError::config(format!("cannot resolve {host}:{port}")))?,
            ),
            Transport::Rtu(_) => None,
        };
        let text_slot = {
            let mut n = 0;
            self.tags
                .iter()
                .map(|t| {
                    matches!(t.ty, DataType::String(_)).then(|| {
                        n += 1;
                        n - 1
                    })
                })
                .collect()
        };
        Ok(ModbusFactory {
            shared: Arc::new(Shared {
                addr,
                link: self.transport.describe(),
                transport: self.transport,
                connector,
                slave_backoff: self.slave_backoff,
                slave_backoff_max: self.slave_backoff_max,
                text_slot,
                timeout: self.timeout,
                tags: self.tags,
                tag_ids,
                requests,
                stats,
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
                ("string", DataType::String(0)),
            ],
        )
        .map(|v| v.value);
    let length = t.int_in("length", 1, 125).map(|v| v.value as u16);
    let order_set = t.choice("order", ORDERS);
    let order_span = order_set.as_ref().map(|o| o.span);
    let order = order_set.map(|v| v.value).unwrap_or(order);
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
        (false, Some(DataType::String(_))) => {
            let Some(n) = length else {
                t.table_error("a string tag needs `length`")
                    .expected("the number of registers (2 characters each), 1..=125")
                    .emit();
                return None;
            };
            if matches!(order, WordOrder::Cdab | WordOrder::Dcba) {
                let span = order_span.unwrap_or(address.span);
                t.error(span, "order", "strings are read register by register")
                    .expected("ABCD (high byte first) or BADC (bytes swapped in each register)")
                    .emit();
                return None;
            }
            DataType::String(n)
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

/// Opens the byte stream to the device (tests put a fault-injecting pipe here).
pub trait Connector: Send + Sync + std::fmt::Debug + 'static {
    fn connect(&self) -> BoxFuture<'static, std::io::Result<Box<dyn Stream>>>;
}

/// A byte stream tokio-modbus runs on.
pub trait Stream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + std::fmt::Debug + 'static
{
}
impl<T> Stream for T where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + std::fmt::Debug + 'static
{
}

#[derive(Debug)]
struct Shared {
    addr: Option<SocketAddr>,
    link: String,
    transport: Transport,
    connector: Option<Arc<dyn Connector>>,
    slave_backoff: Duration,
    slave_backoff_max: Duration,
    /// Per tag: its slot among the string tags.
    text_slot: Vec<Option<usize>>,
    timeout: Duration,
    tags: Vec<Tag>,
    tag_ids: Vec<SignalId>,
    requests: Vec<Request>,
    stats: CommStats,
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

/// Opens the link and wraps it in tokio-modbus framing.
async fn open(sh: &Shared) -> std::io::Result<tokio_modbus::client::Context> {
    use tokio_modbus::client::{rtu, tcp};
    let slave = tokio_modbus::Slave(0);
    if let Some(c) = &sh.connector {
        let stream = c.connect().await?;
        return Ok(match sh.transport {
            Transport::Tcp { .. } => tcp::attach_slave(stream, slave),
            _ => rtu::attach_slave(stream, slave),
        });
    }
    match &sh.transport {
        Transport::Tcp { .. } => {
            let addr = sh.addr.ok_or_else(|| std::io::Error::other("no address"))?;
            tcp::connect_slave(addr, slave).await
        }
        Transport::RtuOverTcp { .. } => {
            let addr = sh.addr.ok_or_else(|| std::io::Error::other("no address"))?;
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(rtu::attach_slave(stream, slave))
        }
        Transport::Rtu(s) => {
            use tokio_serial::SerialPortBuilderExt;
            let port = tokio_serial::new(&s.device, s.baud)
                .parity(match s.parity {
                    Parity::None => tokio_serial::Parity::None,
                    Parity::Even => tokio_serial::Parity::Even,
                    Parity::Odd => tokio_serial::Parity::Odd,
                })
                .data_bits(if s.data_bits == 7 {
                    tokio_serial::DataBits::Seven
                } else {
                    tokio_serial::DataBits::Eight
                })
                .stop_bits(if s.stop_bits == 2 {
                    tokio_serial::StopBits::Two
                } else {
                    tokio_serial::StopBits::One
                })
                .open_native_async()
                .map_err(std::io::Error::other)?;
            Ok(rtu::attach_slave(port, slave))
        }
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

async fn run(sh: Arc<Shared>, ctx: DriverContext) -> Result<(), DriverError> {
    let mut batch: Vec<Sample> = Vec::with_capacity(sh.tags.len() + 16);
    let mut slaves = [SlaveState::default(); 256];
    let mut texts = Texts {
        changes: TextChanges::new(sh.text_slot.iter().flatten().count()),
        scratch: String::new(),
    };
    let mut client: Option<tokio_modbus::client::Context> = None;
    // Re-opened after one slave's timeout while others answer: not a link failure.
    let mut quiet_reopen = false;
    let start = tokio::time::Instant::now();
    let mut next_due: Vec<tokio::time::Instant> = vec![start; sh.requests.len()];
    let mut first = true;
    loop {
        if client.is_none() {
            let connected = tokio::select! {
                _ = ctx.cancelled() => return Ok(()),
                r = tokio::time::timeout(sh.timeout, open(&sh)) => r,
            };
            match connected {
                Ok(Ok(c)) => {
                    let connects = if std::mem::take(&mut quiet_reopen) {
                        sh.stats.reopened()
                    } else {
                        sh.stats.connected()
                    };
                    tracing::info!(driver = ctx.name(), link = %sh.link, requests = sh.requests.len(), tags = sh.tags.len(), connects, "modbus connected");
                    client = Some(c);
                }
                Ok(Err(e)) => {
                    sh.stats.error();
                    fail_all(&sh, &ctx, BadReason::Communication, &mut batch).await;
                    return Err(
                        DriverError::transient(format!("open {}: {e}", sh.link)).with_source(e)
                    );
                }
                Err(_) => {
                    sh.stats.timeout();
                    fail_all(&sh, &ctx, BadReason::Timeout, &mut batch).await;
                    return Err(DriverError::transient(format!(
                        "open {} timed out after {:?}",
                        sh.link, sh.timeout
                    )));
                }
            }
        }
        let Some(link) = client.as_mut() else {
            continue;
        };
        let now = tokio::time::Instant::now();
        batch.clear();
        let mut rtt_ms = f64::NAN;
        let mut reopen = false;
        // Adaptive polling stretches every request's period by the same factor.
        let stretch = f64::from(sh.stats.poll_factor());
        for (ri, r) in sh.requests.iter().enumerate() {
            if next_due[ri] > now {
                continue;
            }
            let period = Duration::from_millis(r.poll_ms).mul_f64(stretch);
            // Next slot on the poll grid (skip missed ones rather than bursting).
            while next_due[ri] <= now {
                next_due[ri] += period;
            }
            let ts = ctx.clock().now();
            let slave = &mut slaves[usize::from(r.unit)];
            if slave.until.is_some_and(|u| u > now) {
                let why = slave.why.unwrap_or(BadReason::Timeout);
                mark_bad(&sh, r, why, ts, &mut batch);
                continue;
            }
            let t0 = tokio::time::Instant::now();
            let res = tokio::select! {
                _ = ctx.cancelled() => return Ok(()),
                r = tokio::time::timeout(sh.timeout, read(link, r)) => r,
            };
            let ts = ctx.clock().now();
            match res {
                Ok(Ok(Ok(outcome))) => {
                    let rtt = t0.elapsed();
                    sh.stats.success(rtt);
                    rtt_ms = rtt.as_secs_f64() * 1e3;
                    slave.ok(now);
                    decode(&sh, r, &outcome, ts, &mut batch, &mut texts, &ctx);
                }
                Ok(Ok(Err(code))) => {
                    // The device answered: the link is fine, the request was not.
                    let rtt = t0.elapsed();
                    sh.stats.success(rtt);
                    sh.stats.exception();
                    rtt_ms = rtt.as_secs_f64() * 1e3;
                    slave.ok(now);
                    tracing::debug!(
                        driver = ctx.name(),
                        unit = r.unit,
                        start = r.start,
                        code,
                        "modbus exception"
                    );
                    decode(
                        &sh,
                        r,
                        &Outcome::Exception(code),
                        ts,
                        &mut batch,
                        &mut texts,
                        &ctx,
                    );
                }
                Ok(Err(tokio_modbus::Error::Transport(e))) => {
                    sh.stats.error();
                    mark_bad(&sh, r, BadReason::Communication, ts, &mut batch);
                    sh.stats.push_samples(ts, f64::NAN, &mut batch);
                    let _ = ctx.send(&batch).await;
                    return Err(
                        DriverError::transient(format!("modbus read on {}: {e}", sh.link))
                            .with_source(e),
                    );
                }
                Ok(Err(tokio_modbus::Error::Protocol(e))) => {
                    // A reply for another unit or transaction, or of the wrong
                    // function: the framing can no longer be trusted.
                    sh.stats.error();
                    let d = slave.fail(&sh, now, BadReason::Communication);
                    mark_bad(&sh, r, BadReason::Communication, ts, &mut batch);
                    tracing::warn!(driver = ctx.name(), unit = r.unit, error = %e, backoff = ?d, "modbus reply does not match the request; re-opening the link");
                    reopen = true;
                    break;
                }
                Err(_) => {
                    let d = slave.fail(&sh, now, BadReason::Timeout);
                    let within = sh.timeout * 4 + sh.stats.poll_period() * 2;
                    if others_alive(&slaves, r.unit, now, within) {
                        sh.stats.device_timeout();
                        quiet_reopen = true;
                    } else {
                        sh.stats.timeout();
                    }
                    mark_bad(&sh, r, BadReason::Timeout, ts, &mut batch);
                    tracing::warn!(driver = ctx.name(), unit = r.unit, timeout = ?sh.timeout, backoff = ?d, "modbus slave did not answer; skipping it for a while");
                    // A late reply would be taken for the next request's: re-open.
                    reopen = true;
                    break;
                }
            }
        }
        if reopen {
            client = None;
        }
        if !batch.is_empty() || first {
            let report = sh.stats.push_samples(ctx.clock().now(), rtt_ms, &mut batch);
            sh.stats.adapt(report.score);
            if ctx.send(&batch).await.is_err() {
                return Ok(());
            }
            first = false;
        }
        if reopen {
            continue;
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
