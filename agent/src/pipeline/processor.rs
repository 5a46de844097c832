//! The hot path: each sample goes to the windows of its signal; a completed window
//! computes its features, runs its detectors through the alert engine and hands
//! the window to the model scorer.
//!
//! Nothing here allocates per sample: routes are flat arrays indexed by signal id,
//! windows and feature buffers are sized when the processor is built, and counts
//! are kept locally and published once per batch.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use edge_driver_api::{Sample, SignalRegistry, Timestamp};
use edge_models::{
    Detector, DetectorSpec, Feature, FeatureExtractor, FeatureValues, Frame, Window,
};

use super::counters::PipelineCounters;
use super::feature_history::FeatureHistory;
use super::plan::AssetCfg;
use super::regime::Gate;
use super::scoring::{BindingStatus, InferenceJob, ModelScorer, ModelStore};
use super::window::WindowSlot;
use crate::alert::{Alert, AlertEngine, DetectorInfo, EngineStats, IdGenerator, RateLimits};

pub(crate) struct DetectorSlot {
    pub(crate) detector: Detector,
    pub(crate) feature: Feature,
    pub(crate) spec: DetectorSpec,
    /// The pipeline's index of the predictor's window (residual detectors).
    pub(crate) predictor: Option<usize>,
    /// Judges while the asset's regime gate holds the others.
    pub(crate) always: bool,
}

/// Counts kept off the atomics on the per-sample path, published per batch.
#[derive(Debug, Default)]
struct LocalCounts {
    samples: u64,
    unusable: u64,
    unrouted: u64,
    windows: u64,
    evaluations: u64,
    /// Windows not judged: the asset's machine was stopped or settling.
    gated: u64,
}

/// The synchronous core of the pipeline.
pub struct Processor {
    /// For signal id `i`: window indices `route_ids[route_start[i]..route_start[i+1]]`.
    route_start: Vec<u32>,
    route_ids: Vec<u32>,
    pub(crate) windows: Vec<WindowSlot>,
    pub(crate) detectors: Vec<DetectorSlot>,
    /// The regime gates of the assets that have one.
    pub(crate) gates: Vec<Gate>,
    pub(crate) engine: AlertEngine,
    pub(crate) scorer: ModelScorer,
    pub(crate) counters: Arc<PipelineCounters>,
    /// Where each window's features are recorded for the UI (its slot there).
    features: Option<(Arc<FeatureHistory>, Vec<Option<usize>>)>,
    local: LocalCounts,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("windows", &self.windows.len())
            .field("detectors", &self.detectors.len())
            .finish_non_exhaustive()
    }
}

/// The windows and detectors of every asset, and how samples reach them.
struct WindowPlan {
    windows: Vec<WindowSlot>,
    detectors: Vec<DetectorSlot>,
    gates: Vec<Gate>,
    /// Per signal id, the windows it feeds.
    per_signal: Vec<Vec<u32>>,
    /// Per asset, the index of its first window.
    asset_base: Vec<usize>,
}

impl WindowPlan {
    /// Engine slot `i` is detector `i`: `infos` gets one entry per detector.
    fn build(
        registry: &SignalRegistry,
        assets: &[AssetCfg],
        infos: &mut Vec<DetectorInfo>,
    ) -> Self {
        let mut plan = WindowPlan {
            windows: Vec::new(),
            detectors: Vec::new(),
            gates: Vec::new(),
            per_signal: vec![Vec::new(); registry.len()],
            asset_base: Vec::with_capacity(assets.len()),
        };
        for asset in assets {
            let base = plan.windows.len();
            let det_base = plan.detectors.len();
            plan.asset_base.push(base);
            for (wi, w) in asset.windows.iter().enumerate() {
                let det_first = plan.detectors.len();
                let signal: Arc<str> = Arc::from(registry.name(w.signal));
                let band_names: Vec<String> =
                    w.features.bands.iter().map(|b| b.name.clone()).collect();
                for d in asset.detectors.iter().filter(|d| d.window == wi) {
                    plan.detectors.push(DetectorSlot {
                        detector: Detector::new(d.spec.clone()),
                        feature: d.feature,
                        spec: d.spec.clone(),
                        predictor: d.predictor.map(|p| base + p),
                        always: d.always,
                    });
                    infos.push(DetectorInfo {
                        asset: asset.name.clone(),
                        name: d.name.clone(),
                        kind: d.spec.kind(),
                        signal: signal.clone(),
                        feature: d.feature,
                        feature_name: d.feature_name.clone(),
                        band_names: band_names.clone(),
                        model: None,
                        predictor: d
                            .predictor
                            .map(|p| Arc::from(registry.name(asset.windows[p].signal))),
                    });
                }
                let cap = w.spec.capacity();
                plan.per_signal[w.signal.index()].push(plan.windows.len() as u32);
                plan.windows.push(WindowSlot {
                    asset: asset.name.clone(),
                    signal,
                    spec: w.spec,
                    feature_cfg: w.features.clone(),
                    band_names,
                    seen: false,
                    window: Window::new(w.spec),
                    frame: Frame::with_capacity(cap),
                    extractor: FeatureExtractor::new(w.features.clone(), cap),
                    features: FeatureValues::default(),
                    det_first,
                    det_end: plan.detectors.len(),
                    gate: None,
                });
            }
            if let Some(r) = &asset.running {
                let g = plan.gates.len();
                let dets = det_base..plan.detectors.len();
                let lag = asset.windows[r.window].spec.hops_per_window();
                plan.gates
                    .push(Gate::new(r.clone(), base + r.window, lag, dets));
                for w in &mut plan.windows[base..] {
                    w.gate = Some(g);
                }
            }
        }
        plan
    }
}

impl Processor {
    pub fn new(
        agent_id: Arc<str>,
        registry: &SignalRegistry,
        assets: &[AssetCfg],
        models: &ModelStore,
        limits: RateLimits,
        ids: IdGenerator,
    ) -> Self {
        let mut infos = Vec::new();
        let plan = WindowPlan::build(registry, assets, &mut infos);
        // Models: engine slots after the built-in detectors, two per binding.
        let scorer = ModelScorer::new(
            agent_id.clone(),
            assets,
            &plan.asset_base,
            plan.windows.len(),
            models,
            &mut infos,
        );
        let (route_start, route_ids) = flatten(&plan.per_signal);
        Processor {
            route_start,
            route_ids,
            windows: plan.windows,
            detectors: plan.detectors,
            gates: plan.gates,
            engine: AlertEngine::new(agent_id, limits, infos, ids),
            scorer,
            counters: Arc::new(PipelineCounters::default()),
            features: None,
            local: LocalCounts::default(),
        }
    }

    /// Records every detector evaluation into `trace` (the UI's alert evidence).
    pub fn set_trace(&mut self, trace: Arc<crate::alert::trace::DetectorTrace>) {
        self.engine.set_trace(trace);
    }

    /// Records every completed window's features into `history` (the UI's plots).
    pub fn set_feature_history(&mut self, history: Arc<FeatureHistory>) {
        let slots = self
            .windows
            .iter()
            .map(|w| history.slot(&w.asset, &w.signal, &w.band_names))
            .collect();
        self.features = Some((history, slots));
    }

    pub fn counters(&self) -> Arc<PipelineCounters> {
        self.counters.clone()
    }

    pub fn engine_stats(&self) -> EngineStats {
        self.engine.stats()
    }

    /// Processes one sample; alerts are appended to `alerts`.
    #[inline]
    pub fn ingest(&mut self, s: &Sample, alerts: &mut Vec<Alert>) {
        self.local.samples += 1;
        let Some(x) = s.usable_f64() else {
            self.local.unusable += 1;
            return;
        };
        let sig = s.signal.index();
        let (Some(&a), Some(&b)) = (self.route_start.get(sig), self.route_start.get(sig + 1))
        else {
            self.local.unrouted += 1;
            return;
        };
        if a == b {
            self.local.unrouted += 1;
            return;
        }
        for r in a..b {
            let wi = self.route_ids[r as usize] as usize;
            if let Some(end) = self.push(wi, s, x, alerts) {
                self.scorer.window_completed(wi, end, &self.windows);
            }
        }
    }

    /// Adds a sample to window `wi`; when that completes the window, computes its
    /// features and runs its detectors, and returns the window's end (`None` also
    /// while the asset's regime gate holds its judgement: models skip it too).
    #[inline]
    fn push(
        &mut self,
        wi: usize,
        s: &Sample,
        x: f64,
        alerts: &mut Vec<Alert>,
    ) -> Option<Timestamp> {
        let slot = &mut self.windows[wi];
        if !slot.window.push(s.ts.mono_ns, x, &mut slot.frame) {
            return None;
        }
        self.local.windows += 1;
        slot.seen = true;
        slot.extractor.compute(&slot.frame, &mut slot.features);
        if let Some((h, slots)) = &self.features
            && let Some(&Some(at)) = slots.get(wi)
        {
            h.record(at, slot.frame.end_ns, &slot.features);
        }
        let end = Timestamp {
            mono_ns: slot.frame.end_ns,
            wall_ns: s.ts.wall_ns - (s.ts.mono_ns as i64 - slot.frame.end_ns as i64),
            synced: s.ts.synced,
        };
        let mut judging = true;
        if let Some(g) = slot.gate {
            let gate = &mut self.gates[g];
            let t = slot.features.t_end;
            if gate.window == wi && gate.observe(t, slot.features.get(Feature::Mean)) {
                for d in &mut self.detectors[gate.detectors.clone()] {
                    d.detector.relearn();
                }
            }
            judging = gate.judging(t);
            if !judging {
                self.local.gated += 1;
            }
        }
        self.run_detectors(wi, end, judging, alerts);
        judging.then_some(end)
    }

    /// Runs window `wi`'s detectors (only those that judge `always` unless
    /// `judging`) through the alert engine.
    fn run_detectors(&mut self, wi: usize, end: Timestamp, judging: bool, alerts: &mut Vec<Alert>) {
        let slot = &self.windows[wi];
        for di in slot.det_first..slot.det_end {
            let d = &mut self.detectors[di];
            if !judging && !d.always {
                continue;
            }
            let value = slot.features.get(d.feature);
            let p = d.predictor.map_or(f64::NAN, |p| {
                predictor_value(&self.windows[p], d.feature, slot.features.t_end)
            });
            if let Some(eval) = d.detector.evaluate_with(slot.features.t_end, value, p) {
                self.local.evaluations += 1;
                if let Some(alert) = self.engine.observe(di, &eval, end, &slot.features) {
                    alerts.push(alert);
                }
            }
        }
    }

    /// Processes a batch and publishes the counters.
    pub fn ingest_batch(&mut self, batch: &[Sample], alerts: &mut Vec<Alert>) {
        if let Some(first) = batch.first() {
            self.follow_model_versions(first.ts, alerts);
        }
        for s in batch {
            self.ingest(s, alerts);
        }
        self.publish(alerts.len() as u64);
    }

    /// Whether model rows wait for [`Processor::take_inference`].
    pub fn inference_due(&self) -> bool {
        self.scorer.inference_due()
    }

    /// The rows due, with the models' sessions, to run on a blocking thread. Give
    /// the job back with [`Processor::finish_inference`] before the next batch.
    pub fn take_inference(&mut self) -> InferenceJob {
        self.scorer.take_inference()
    }

    /// Takes the scores back: grades them into alerts, follows input drift and
    /// quarantines bindings whose model fails.
    pub fn finish_inference(&mut self, job: InferenceJob, alerts: &mut Vec<Alert>) {
        self.scorer
            .finish_inference(job, &mut self.engine, &self.counters, alerts);
    }

    /// Switches to model versions swapped in since the last call (between batches:
    /// no rows are pending). Lifts quarantines of the swapped models.
    pub fn follow_model_versions(&mut self, now: Timestamp, alerts: &mut Vec<Alert>) {
        self.scorer
            .follow_versions(&mut self.engine, &self.counters, now, alerts);
    }

    /// Per binding: (asset, binding, model version, quarantined, drifted inputs).
    pub fn model_status(&self) -> Vec<BindingStatus> {
        self.scorer.status(&self.engine)
    }

    /// Makes [`Self::model_status`] readable from other threads (status reports).
    pub fn publish_model_status(&self) {
        if self.scorer.is_empty() {
            return;
        }
        let status = self.model_status();
        *self
            .counters
            .bindings
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = status;
    }

    /// Model events (drift) waiting for the sinks.
    pub fn take_events(&mut self) -> std::vec::Drain<'_, crate::delivery::sink::SinkMsg> {
        self.scorer.take_events()
    }

    pub(crate) fn publish(&mut self, new_alerts: u64) {
        let c = &self.counters;
        let l = std::mem::take(&mut self.local);
        c.samples.fetch_add(l.samples, Ordering::Relaxed);
        c.unusable.fetch_add(l.unusable, Ordering::Relaxed);
        c.unrouted.fetch_add(l.unrouted, Ordering::Relaxed);
        c.windows.fetch_add(l.windows, Ordering::Relaxed);
        c.evaluations.fetch_add(l.evaluations, Ordering::Relaxed);
        c.gated.fetch_add(l.gated, Ordering::Relaxed);
        c.model_rows_skipped
            .fetch_add(self.scorer.take_short_rows(), Ordering::Relaxed);
        c.model_rows_unusable
            .fetch_add(self.scorer.take_unusable_rows(), Ordering::Relaxed);
        c.alerts.fetch_add(new_alerts, Ordering::Relaxed);
    }
}

/// The predictor window's `feature` for a window ending at `t`: NaN when it has
/// not completed within one of its hops of `t` (a stale predictor explains nothing).
fn predictor_value(p: &WindowSlot, feature: Feature, t: f64) -> f64 {
    let hop = match p.spec {
        edge_models::WindowSpec::Time { hop_ns, .. } => hop_ns as f64 * 1e-9,
        // A count window's hop has no duration: its last window's span instead.
        edge_models::WindowSpec::Count { .. } => -p.frame.t.first().copied().unwrap_or(0.0),
    };
    if p.seen && (t - p.features.t_end).abs() <= hop {
        p.features.get(feature)
    } else {
        f64::NAN
    }
}

/// Per-item lists as one flat array and the start of each item's run in it.
pub(crate) fn flatten(lists: &[Vec<u32>]) -> (Vec<u32>, Vec<u32>) {
    let mut start = Vec::with_capacity(lists.len() + 1);
    let mut ids = Vec::new();
    for l in lists {
        start.push(ids.len() as u32);
        ids.extend_from_slice(l);
    }
    start.push(ids.len() as u32);
    (start, ids)
}
