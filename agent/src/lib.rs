//! edge-agent: reads industrial devices, computes windowed features, runs fault
//! detectors locally and raises graded alerts.
//!
//! Each folder is one role; data flows down this list, and a module only imports
//! from those listed before it (checked by `rust_structure.py cycles agent/src`):
//!
//! | module | role |
//! |---|---|
//! | [`ingest`] | drivers' samples in: the bounded [`ingest::ring`], per-driver [`ingest::meter`]s, the driver [`ingest::supervisor`] |
//! | [`alert`] | the alert engine (grading, ids, hysteresis, rate limits) and alert messages |
//! | [`delivery`] | where alerts and events go: sinks, GPIO alarm outputs, the journal, the uplink, and [`delivery::wire`], every upstream encoding and topic |
//! | [`pipeline`] | the hot path (ring → windows → features → detectors → engine), its plan, reload adoption, telemetry, and [`pipeline::scoring`] (ONNX model bindings) |
//! | [`ops`] | what operates a running agent: status, control socket, Prometheus metrics, systemd, logging, memory trim |
//! | [`config`] | the TOML file: one reader per section, one table of driver kinds; produces each component's settings |
//! | [`eval`] | detection quality: labelled scenarios replayed through the real pipeline in virtual time, scored |
//! | [`runtime`] | the composition root: starts every part, reloads, stops |
//! | [`fuzzing`] | entry points of the fuzz targets (journal segments, control requests) |
//!
//! `main.rs` is the command line only.

pub mod alert;
pub mod config;
pub mod counters;
pub mod delivery;
pub mod eval;
pub mod fuzzing;
pub mod inbound;
pub mod ingest;
pub mod ops;
pub mod pipeline;
pub mod runtime;
pub mod state_file;

pub use config::{Config, ConfigError};
pub use runtime::{AgentHandle, RunOptions, RunReport, run, start};

/// The agent's version, as built.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
