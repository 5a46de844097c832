//! The pipeline's counters: bumped by the processor (in batches, off the
//! per-sample path), read by status, metrics and the stats log.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use super::scoring::BindingStatus;
use crate::ingest::meter::Histogram;

crate::counters! {
    /// Counters of the processor.
    pub struct PipelineCounters => PipelineSnapshot {
        /// Samples the pipeline processed.
        samples: counter "pipeline_samples_total",
        /// Samples of bad quality or not finite (not windowed).
        unusable: counter "pipeline_unusable_samples_total",
        /// Samples of signals no asset windows.
        unrouted: counter "pipeline_unrouted_samples_total",
        /// Feature windows completed.
        windows: counter "pipeline_windows_total",
        /// Detector evaluations (one per detector per completed window).
        evaluations: counter "pipeline_detector_evaluations_total",
        /// Windows not judged because their asset's machine was stopped or settling
        /// after a start or a load step (`[[assets]] running`).
        gated: counter "pipeline_gated_windows_total",
        /// Alert messages the engine emitted (raised, escalated and cleared).
        alerts: counter "pipeline_alerts_total",
        /// Telemetry summaries dropped because the sinks were busy.
        telemetry_dropped: counter "telemetry_dropped_total",
        /// Feature rows scored by models.
        model_rows: counter "model_rows_total",
        /// Model outputs that were unusable (not finite, an error or a panic).
        model_errors: counter "model_errors_total",
        /// Raw-window model rows skipped: a window held fewer samples than the model reads.
        model_rows_skipped: counter "model_rows_skipped_total",
        /// Model rows not scored because an input was NaN or infinite.
        model_rows_unusable: counter "model_rows_unusable_total",
        /// Model versions swapped in while running.
        model_swaps: counter "model_swaps_total",
        /// Model events (drift) dropped because the sinks were busy.
        events_dropped: counter "model_events_dropped_total",
    }
    extra {
        /// Wall time of each model batch (every model due, run off the async threads).
        pub model_latency: Histogram,
        /// Bumped on every turn of the pipeline loop (at least once a second while it
        /// is alive): the systemd watchdog is fed only while it moves.
        pub heartbeat: AtomicU64,
        /// The model bindings' state after the latest batch (for status reports).
        pub bindings: Mutex<Vec<BindingStatus>>,
    }
}
