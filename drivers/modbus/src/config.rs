//! The `[[drivers]]` section of a Modbus driver: link, polling and tags.

use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use edge_driver_api::config::{Span, TableReader};
use edge_driver_api::health::{CommStats, HealthConfig, comm_signal_decls};
use edge_driver_api::{DriverError, SignalDecl, SignalRegistry, WriteLimits};

use crate::client::Connector;
use crate::driver::{ModbusFactory, Shared};
use crate::plan::{Area, DataType, Limits, TagSpan, WordOrder, coalesce};

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
    /// `writable = true` and its limits.
    pub write: Option<WriteLimits>,
}

impl Tag {
    /// The tag's address as the config wrote it: `holding 100 f32, unit 1`.
    pub fn describe(&self) -> String {
        let area = match self.area {
            Area::Coil => "coil",
            Area::DiscreteInput => "discrete",
            Area::InputRegister => "input",
            Area::HoldingRegister => "holding",
        };
        let ty = match self.ty {
            DataType::String(n) => format!("string({n})"),
            other => format!("{other:?}").to_lowercase(),
        };
        format!("{area} {} {ty}, unit {}", self.address, self.unit_id)
    }
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
    /// Write with FC15/FC16 even one coil or register (devices without FC5/FC6).
    pub write_multiple: bool,
}

impl ModbusConfig {
    /// Reads the driver-specific keys; `name` is the driver instance name (prefix of
    /// the communication-statistics signals).
    pub fn parse(r: &mut TableReader<'_>, name: &str) -> Option<ModbusConfig> {
        let (transport, mut ok) = parse_transport(r);
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
        let write_multiple = r.bool("write_multiple").map(|v| v.value).unwrap_or(false);
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
            write_multiple,
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
                address: Some(t.describe()),
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
                write_multiple: self.write_multiple,
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

/// `transport` and its keys: a serial `device` (rtu) or `host` and `port`; and
/// whether they were all valid.
fn parse_transport(r: &mut TableReader<'_>) -> (Option<Transport>, bool) {
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
    (transport, ok)
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
    let write = WriteLimits::parse(t);
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
    if write.is_some()
        && (matches!(area, Area::DiscreteInput | Area::InputRegister)
            || matches!(ty, DataType::String(_)))
    {
        t.table_error("only coils and holding registers with a number type can be written")
            .hint("remove `writable`, or point the tag at a coil or holding register")
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
        write,
    })
}
