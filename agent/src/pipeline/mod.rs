//! The processing pipeline: ring → windows → features → detectors → alert engine.
//!
//! | file | holds |
//! |---|---|
//! | [`plan`] | what a configuration asks of the pipeline: assets, windows, detectors, telemetry |
//! | [`processor`] | the hot path: [`Processor`] routes each sample to its windows and runs detectors when one completes |
//! | [`scoring`] | fault-prediction models: the [`scoring::ModelScorer`] the processor hands completed windows to |
//! | [`adopt`] | a reload's new processor taking over the state of the old one |
//! | [`telemetry`] | periodic feature summaries |
//! | [`task`] | [`run_pipeline`], the task around the processor |
//! | [`counters`] | the pipeline's counters, read by status, metrics and the stats log |
//!
//! [`Processor`] is synchronous and allocation-free per sample: routing is an array
//! lookup by signal id, windows and feature buffers are allocated at construction, and
//! detectors run once per completed window. Alerts (rare) are the only allocations.
//!
//! [`run_pipeline`] drains the ring in batches, processes them, and hands alerts to
//! the sink channel (awaiting space: alerts are never dropped; back-pressure lands
//! on the ring, whose overflow policy decides).

pub mod adopt;
pub mod counters;
pub mod feature_history;
pub mod plan;
pub mod processor;
mod regime;
pub mod scoring;
pub mod task;
pub mod telemetry;
mod window;

pub use adopt::{AdoptReport, Reconfigure};
pub use counters::{PipelineCounters, PipelineSnapshot};
pub use plan::{AssetCfg, DetectorCfg, RunningCfg, WindowCfg};
pub use processor::Processor;
pub use scoring::BindingStatus;
pub use task::{PipelineTask, run_pipeline};
pub use telemetry::TelemetryConfig;
