//! `mqtt`: sensors that publish to an MQTT broker.
//!
//! ```toml
//! [[drivers]]
//! name = "sensors"
//! kind = "mqtt"
//! host = "127.0.0.1"
//! port = 1883
//! # client_id = "edge-agent-sensors"
//! # username = "gw"; password_file = "/etc/edge-agent/mqtt.pw"  (or password_env)
//! # tls = true; ca_file = "..."; cert_file/key_file (mutual TLS); server_name
//! qos = 1                  # subscription QoS (0 or 1)
//!
//! [[drivers.subscriptions]]
//! topic = "plant/+line/+machine/temp"     # +name / #name: named wildcards
//! format = "number"                        # number | text | json | senml
//! signal = "{line}.{machine}.temp"         # a template over the wildcard names
//! unit = "°C"
//!
//! [[drivers.subscriptions]]
//! topic = "plant/+line/env"
//! format = "json"
//! timestamp = "/ts"                        # optional pointer to the time
//! timestamp_unit = "ms"                    # s | ms
//! values = [{ pointer = "/temp", signal = "{line}.env.temp" },
//!           { pointer = "/hum", signal = "{line}.env.hum" }]
//!
//! [[drivers.subscriptions]]
//! topic = "senml/+dev"
//! format = "senml"
//! signal = "{dev}.{name}"                  # {name}: the record's base name + name
//! ```
//!
//! Templates declare *families* of signals ([`SignalPattern`]). A concrete name is
//! interned when the configuration uses it (an asset windows `l1.m7.temp`); values
//! for names nobody uses are counted (`<driver>.mqtt.unmapped`) and dropped, so a
//! flood of new topics cannot grow memory. Garbage payloads are counted
//! (`<driver>.mqtt.bad_payloads`); NaN and infinities become bad-quality samples.
//! A payload time (JSON pointer or SenML) sets the sample's wall time. Messages go to
//! the ring buffer, whose overflow policy bounds memory under a flood (dropped
//! samples are counted there).

pub mod config;
mod driver;
pub mod topic;

pub use edge_driver_api::payload;

pub use config::{MqttConfig, Subscription};
pub use driver::MqttFactory;
pub use payload::{Format, Found, Pointer, TimeUnit};
pub use topic::Filter;
