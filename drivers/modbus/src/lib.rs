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
//!
//! [[drivers.tags]]
//! name = "skid1.setpoint"
//! area = "holding"
//! address = 200
//! type = "u16"
//! scale = 0.1
//! writable = true                     # `edge-agent write`, Sparkplug DCMD, commands
//! min = 0.0                           # engineering units; or allowed = [0, 1]
//! max = 120.0
//! verify = true                       # read back after writing
//! min_interval = "1s"                 # refuse a second write sooner
//! ```
//!
//! Writes go to coils (FC5) and holding registers (FC6, FC16 for values wider
//! than a register); `write_multiple = true` on the driver uses FC15/FC16 for
//! every write, for devices that implement only those. A write waits for the gap
//! after the current poll cycle, runs under `timeout`, and is answered with the
//! device's exception when it refuses.
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

mod client;
mod config;
mod driver;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod plan;
mod write;

pub use client::{Connector, Stream};
pub use config::{ModbusConfig, Parity, SerialSettings, Tag, Transport};
pub use driver::ModbusFactory;
pub use plan::{Area, DataType, Limits, Request, TagSpan, WordOrder, coalesce};

/// A Modbus exception code as the spec names it, for bad-quality reasons.
pub fn describe_exception(code: u16) -> String {
    let name = match code {
        0x01 => "illegal function",
        0x02 => "illegal data address",
        0x03 => "illegal data value",
        0x04 => "server device failure",
        0x05 => "acknowledge",
        0x06 => "server device busy",
        0x08 => "memory parity error",
        0x0A => "gateway path unavailable",
        0x0B => "gateway target device failed to respond",
        _ => "unknown exception",
    };
    format!("exception {code} ({name})")
}
