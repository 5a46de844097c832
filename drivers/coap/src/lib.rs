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
//!
//! [[drivers.resources]]
//! path = "/actuators/valve"
//! format = "number"
//! signal = "field.valve"
//! writable = true          # PUT the value as text/plain (write_method = "post" for POST)
//! min = 0
//! max = 100
//! verify = true            # GET it back after the write
//! ```
//!
//! A request that gets no answer after the retransmissions makes its signals
//! bad-quality (timeout); an error response (4.04, 5.03...) makes them bad with the
//! response code (class·32 + detail, e.g. 4.04 → 132); polling goes on. Confirmable
//! notifications are acknowledged (aiocoap, for one, drops observers that do not).
//! The link's health score covers every exchange.

mod config;
mod driver;
mod exchange;
pub mod fuzzing;
mod write;

pub use config::{CoapConfig, Mode, Resource};
pub use driver::CoapFactory;

/// A response code byte (class·32 + detail) as RFC 7252 writes it, with its
/// name: `4.04 Not Found`.
pub fn describe_exception(code: u16) -> String {
    let name = match code {
        0x80 => "Bad Request",
        0x81 => "Unauthorized",
        0x82 => "Bad Option",
        0x83 => "Forbidden",
        0x84 => "Not Found",
        0x85 => "Method Not Allowed",
        0x86 => "Not Acceptable",
        0x8C => "Precondition Failed",
        0x8D => "Request Entity Too Large",
        0x8F => "Unsupported Content-Format",
        0xA0 => "Internal Server Error",
        0xA1 => "Not Implemented",
        0xA2 => "Bad Gateway",
        0xA3 => "Service Unavailable",
        0xA4 => "Gateway Timeout",
        0xA5 => "Proxying Not Supported",
        _ => "",
    };
    let code = format!("{}.{:02}", code >> 5, code & 0x1F);
    if name.is_empty() {
        code
    } else {
        format!("{code} {name}")
    }
}
