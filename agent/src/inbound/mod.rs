//! From the centre (or an operator) to the gateway: everything that asks the
//! agent to act enters here.
//!
//! * [`write`]: writes to device tags. A request names a signal and a value; it is
//!   checked against the tag's `writable`/`min`/`max`/`allowed`/`min_interval`,
//!   handed to the driver that owns the tag's connection, and audited (who, what,
//!   the old value, the result, the latency) whether it was done, refused or failed.
//!
//! * [`commands`]: remote operations over MQTT (`[commands]`): allow-list,
//!   Ed25519 signatures with a replay window, statuses and audit; what each
//!   operation does is a table the composition root fills.
//!
//! Sources: `edge-agent write` on the control socket (`ops/control.rs`) and
//! Sparkplug DCMD (`delivery/uplink`). This module depends on the drivers' API and
//! on what the agent ingested, never on delivery: the audit trail leaves through a
//! function the composition root gives it, so data flows one way (delivery →
//! inbound → drivers).

pub mod commands;
pub mod write;

pub use write::{Audit, WriteOrder, WriteReport, WriteRoutes, WriteSource, Writes};
