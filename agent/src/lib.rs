//! edge-agent: reads industrial devices, computes windowed features, runs fault
//! detectors locally and raises graded alerts.
//!
//! Modules, in data-flow order: [`ring`] (bounded sample buffer) → [`pipeline`]
//! (windows, features, detectors) → [`alert`] (engine, ids, rate limits) → [`sink`]
//! (console, JSON lines; the journal plugs in here). [`config`] validates the TOML
//! file, [`supervisor`] keeps drivers running, [`runtime`] wires it all together.
//! Operations: [`meter`] and [`status`] describe a running agent, read through the
//! [`control`] socket (`edge-agent status`) and the Prometheus endpoint
//! ([`metrics`]); [`sdnotify`] talks to systemd.

pub mod alarm;
pub mod alert;
pub mod config;
pub mod control;
pub mod events;
pub mod journal;
pub mod logging;
pub mod memory;
pub mod meter;
pub mod metrics;
pub mod models;
pub mod pipeline;
pub mod reload;
pub mod ring;
pub mod runtime;
pub mod sdnotify;
pub mod sink;
pub mod status;
pub mod supervisor;
pub mod uplink;

pub use config::{Config, ConfigError};
pub use runtime::{AgentHandle, RunOptions, RunReport, run, start};

/// The agent's version, as built.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
