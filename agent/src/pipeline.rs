//! The processing pipeline: ring → windows → features → detectors → alert engine.
//!
//! [`Processor`] is synchronous and allocation-free per sample: routing is an array
//! lookup by signal id, windows and feature buffers are allocated at construction, and
//! detectors run once per completed window. Alerts (rare) are the only allocations.
//!
//! [`run_pipeline`] is the task around it: it drains the ring in batches, processes
//! them, and hands alerts to the sink channel (awaiting space: alerts are never
//! dropped; back-pressure lands on the ring, whose overflow policy decides).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use edge_driver_api::{Sample, SignalRegistry, Timestamp};
use edge_models::{
    Detector, DetectorSpec, FeatureConfig, FeatureExtractor, FeatureValues, Frame, Window,
    WindowSpec,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::alert::{
    Alert, AlertEngine, DetectorInfo, EngineStats, IdGenerator, RateLimits, Snapshot,
};
use crate::config::AssetCfg;
use crate::models::{
    BindingInputs, BindingSlot, Drift, DriftChange, Grader, InferenceJob, ModelRun, ModelStore,
    evaluation, summarize,
};
use crate::ring::SampleRing;
use crate::sink::SinkMsg;

struct WindowSlot {
    asset: Arc<str>,
    signal: Arc<str>,
    /// How the window is cut and what it computes: a reload keeps the window's
    /// state only when both are unchanged.
    spec: WindowSpec,
    feature_cfg: FeatureConfig,
    band_names: Vec<String>,
    /// At least one window completed (features are meaningful).
    seen: bool,
    window: Window,
    frame: Frame,
    extractor: FeatureExtractor,
    features: FeatureValues,
    /// Detectors evaluated when this window completes: `detectors[first..end]`.
    det_first: usize,
    det_end: usize,
}

struct DetectorSlot {
    detector: Detector,
    feature: edge_models::Feature,
    spec: DetectorSpec,
}

/// Counters of the processor.
#[derive(Debug, Default)]
pub struct PipelineCounters {
    pub samples: AtomicU64,
    /// Samples with bad/stale quality or non-finite values (not windowed).
    pub unusable: AtomicU64,
    /// Samples of signals no asset windows.
    pub unrouted: AtomicU64,
    pub windows: AtomicU64,
    pub evaluations: AtomicU64,
    pub alerts: AtomicU64,
    /// Telemetry summaries dropped because the sinks were busy.
    pub telemetry_dropped: AtomicU64,
    /// Rows scored by models, and rows whose score was unusable (not finite, an
    /// error or a panic).
    pub model_rows: AtomicU64,
    pub model_errors: AtomicU64,
    /// Raw-window model rows skipped because a window held too few samples.
    pub model_rows_skipped: AtomicU64,
    /// Model versions swapped in while running.
    pub model_swaps: AtomicU64,
    /// Model events (drift) dropped because the sinks were busy.
    pub events_dropped: AtomicU64,
    /// Wall time of each model batch (every model due, run off the async threads).
    pub model_latency: crate::meter::Histogram,
    /// Bumped on every turn of the pipeline loop (at least once a second while it
    /// is alive): the systemd watchdog is fed only while it moves.
    pub heartbeat: AtomicU64,
    /// The model bindings' state after the latest batch (for status reports).
    pub bindings: std::sync::Mutex<Vec<BindingStatus>>,
}

/// The synchronous core of the pipeline.
pub struct Processor {
    /// For signal id `i`: window indices `route_ids[route_start[i]..route_start[i+1]]`.
    route_start: Vec<u32>,
    route_ids: Vec<u32>,
    windows: Vec<WindowSlot>,
    detectors: Vec<DetectorSlot>,
    engine: AlertEngine,
    counters: Arc<PipelineCounters>,
    /// Models: one run per model file, one slot per binding.
    runs: Vec<ModelRun>,
    bindings: Vec<BindingSlot>,
    /// For window `w`: bindings `win_bind[win_bind_start[w]..win_bind_start[w+1]]`.
    win_bind_start: Vec<u32>,
    win_bind: Vec<u32>,
    pending_rows: usize,
    drift_changes: Vec<DriftChange>,
    /// Model events waiting for the sinks.
    events: Vec<SinkMsg>,
    agent_id: Arc<str>,
    // Local counts, published in batches to keep atomics off the per-sample path.
    local_samples: u64,
    local_unusable: u64,
    local_unrouted: u64,
    local_windows: u64,
    local_evals: u64,
    local_short_rows: u64,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("windows", &self.windows.len())
            .field("detectors", &self.detectors.len())
            .finish_non_exhaustive()
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
        let mut windows = Vec::new();
        let mut detectors = Vec::new();
        let mut infos = Vec::new();
        let mut per_signal: Vec<Vec<u32>> = vec![Vec::new(); registry.len()];
        let mut asset_base = Vec::with_capacity(assets.len());
        for asset in assets {
            asset_base.push(windows.len());
            for (wi, w) in asset.windows.iter().enumerate() {
                let det_first = detectors.len();
                for d in asset.detectors.iter().filter(|d| d.window == wi) {
                    detectors.push(DetectorSlot {
                        detector: Detector::new(d.spec.clone()),
                        feature: d.feature,
                        spec: d.spec.clone(),
                    });
                    infos.push(DetectorInfo {
                        asset: asset.name.clone(),
                        name: d.name.clone(),
                        kind: d.spec.kind(),
                        signal: Arc::from(registry.name(w.signal)),
                        feature: d.feature,
                        feature_name: d.feature_name.clone(),
                        band_names: w.features.bands.iter().map(|b| b.name.clone()).collect(),
                        model: None,
                    });
                }
                let cap = w.spec.capacity();
                per_signal[w.signal.index()].push(windows.len() as u32);
                windows.push(WindowSlot {
                    asset: asset.name.clone(),
                    signal: Arc::from(registry.name(w.signal)),
                    spec: w.spec,
                    feature_cfg: w.features.clone(),
                    band_names: w.features.bands.iter().map(|b| b.name.clone()).collect(),
                    seen: false,
                    window: Window::new(w.spec),
                    frame: Frame::with_capacity(cap),
                    extractor: FeatureExtractor::new(w.features.clone(), cap),
                    features: FeatureValues::default(),
                    det_first,
                    det_end: detectors.len(),
                });
            }
        }
        let (route_start, route_ids) = flatten(&per_signal);
        // Models: engine slots after the built-in detectors, two per binding.
        let runs: Vec<ModelRun> = models
            .handles
            .iter()
            .map(|h| ModelRun::new(h.clone()))
            .collect();
        let mut bindings = Vec::new();
        let mut per_window: Vec<Vec<u32>> = vec![Vec::new(); windows.len()];
        for (asset, base) in assets.iter().zip(&asset_base) {
            for b in &asset.models {
                let Some(run) = runs.get(b.model) else {
                    continue;
                };
                let m = run.model.clone();
                let mut slot = BindingSlot {
                    run: b.model,
                    asset: asset.name.clone(),
                    name: b.name.clone(),
                    roles: b.roles.clone(),
                    window_base: *base,
                    ready: Vec::new(),
                    inputs: BindingInputs::Features(Vec::new()),
                    labels: Vec::new(),
                    summary: Vec::new(),
                    short_rows: 0,
                    every_ns: b.every.as_nanos() as u64,
                    next_due_ns: 0,
                    grader: Grader::new(&m, b.confirm),
                    drift: Drift::new(&m, b.drift),
                    det: infos.len(),
                    health_det: infos.len() + 1,
                    bad_streak: 0,
                    quarantine_after: b.quarantine_after,
                    quarantined: false,
                    drift_cfg: b.drift,
                };
                if let Err(errs) = slot.follow(&m) {
                    // The config check resolved these already.
                    tracing::error!(asset = %asset.name, model = %b.name, errors = ?errs, "model inputs do not resolve; the binding is off");
                    continue;
                }
                let info = slot.alert_info(&m);
                let signal = info
                    .signals
                    .first()
                    .cloned()
                    .unwrap_or_else(|| Arc::from(""));
                infos.push(DetectorInfo {
                    asset: asset.name.clone(),
                    name: b.name.clone(),
                    kind: "model",
                    signal: signal.clone(),
                    feature: edge_models::Feature::Mean,
                    feature_name: info.meaning.to_string(),
                    band_names: Vec::new(),
                    model: Some(info.clone()),
                });
                infos.push(DetectorInfo {
                    asset: asset.name.clone(),
                    name: Arc::from(format!("{}.health", b.name).as_str()),
                    kind: "model_health",
                    signal,
                    feature: edge_models::Feature::Mean,
                    feature_name: "health".into(),
                    band_names: Vec::new(),
                    model: Some(info),
                });
                // Every window a role names, not only those this version reads: a
                // new version may read other roles (or raw samples instead of
                // features) without rebuilding the routes.
                let mut routed: Vec<usize> = slot.roles.iter().map(|r| base + r.window).collect();
                routed.sort_unstable();
                routed.dedup();
                for w in routed {
                    if let Some(list) = per_window.get_mut(w) {
                        list.push(bindings.len() as u32);
                    }
                }
                bindings.push(slot);
            }
        }
        let (win_bind_start, win_bind) = flatten(&per_window);
        Processor {
            route_start,
            route_ids,
            windows,
            detectors,
            engine: AlertEngine::new(agent_id.clone(), limits, infos, ids),
            counters: Arc::new(PipelineCounters::default()),
            runs,
            bindings,
            win_bind_start,
            win_bind,
            pending_rows: 0,
            drift_changes: Vec::new(),
            events: Vec::new(),
            agent_id,
            local_samples: 0,
            local_unusable: 0,
            local_unrouted: 0,
            local_windows: 0,
            local_evals: 0,
            local_short_rows: 0,
        }
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
        self.local_samples += 1;
        let Some(x) = s.usable_f64() else {
            self.local_unusable += 1;
            return;
        };
        let sig = s.signal.index();
        let (Some(&a), Some(&b)) = (self.route_start.get(sig), self.route_start.get(sig + 1))
        else {
            self.local_unrouted += 1;
            return;
        };
        if a == b {
            self.local_unrouted += 1;
            return;
        }
        for r in a..b {
            let wi = self.route_ids[r as usize] as usize;
            let slot = &mut self.windows[wi];
            if !slot.window.push(s.ts.mono_ns, x, &mut slot.frame) {
                continue;
            }
            self.local_windows += 1;
            slot.seen = true;
            slot.extractor.compute(&slot.frame, &mut slot.features);
            let end = Timestamp {
                mono_ns: slot.frame.end_ns,
                wall_ns: s.ts.wall_ns - (s.ts.mono_ns as i64 - slot.frame.end_ns as i64),
                synced: s.ts.synced,
            };
            for di in slot.det_first..slot.det_end {
                let d = &mut self.detectors[di];
                let value = slot.features.get(d.feature);
                if let Some(eval) = d.detector.evaluate(slot.features.t_end, value) {
                    self.local_evals += 1;
                    if let Some(alert) = self.engine.observe(di, &eval, end, &slot.features) {
                        alerts.push(alert);
                    }
                }
            }
            // Model rows due with this window.
            let (b0, b1) = (
                self.win_bind_start[wi] as usize,
                self.win_bind_start[wi + 1] as usize,
            );
            for k in b0..b1 {
                let bi = self.win_bind[k] as usize;
                let b = &mut self.bindings[bi];
                if b.quarantined || end.mono_ns < b.next_due_ns {
                    continue;
                }
                if !b.ready.iter().all(|&w| self.windows[w as usize].seen) {
                    continue;
                }
                let Some(run) = self.runs.get_mut(b.run) else {
                    continue;
                };
                if run.session.is_none() {
                    continue;
                }
                match &b.inputs {
                    BindingInputs::Features(cols) => {
                        for (w, f) in cols {
                            run.xs.push(self.windows[*w].features.get(*f) as f32);
                        }
                    }
                    BindingInputs::Raw { samples, windows } => {
                        let n = *samples;
                        if let Some(&w) = windows.iter().find(|&&w| self.windows[w].frame.len() < n)
                        {
                            // Not due yet: the next window may be complete enough.
                            if b.short_rows == 0 {
                                tracing::warn!(asset = %b.asset, binding = %b.name, signal = %self.windows[w].signal, held = self.windows[w].frame.len(), needs = n, "a window holds fewer samples than the raw-window model reads; rows are skipped until it holds enough (lengthen the window or check the signal's rate)");
                            }
                            b.short_rows += 1;
                            self.local_short_rows += 1;
                            continue;
                        }
                        for &w in windows {
                            let x = &self.windows[w].frame.x;
                            run.xs.extend(x[x.len() - n..].iter().map(|v| *v as f32));
                        }
                    }
                }
                b.next_due_ns = end.mono_ns.saturating_add(b.every_ns);
                run.rows.push((bi as u32, end));
                self.pending_rows += 1;
            }
        }
    }

    /// Whether model rows wait for [`Processor::take_inference`].
    pub fn inference_due(&self) -> bool {
        self.pending_rows > 0
    }

    /// The rows due, with the models' sessions, to run on a blocking thread. Give
    /// the job back with [`Processor::finish_inference`] before the next batch.
    pub fn take_inference(&mut self) -> InferenceJob {
        InferenceJob {
            runs: std::mem::take(&mut self.runs),
        }
    }

    /// Takes the scores back: grades them into alerts, follows input drift and
    /// quarantines bindings whose model fails.
    pub fn finish_inference(&mut self, job: InferenceJob, alerts: &mut Vec<Alert>) {
        self.runs = job.runs;
        self.pending_rows = 0;
        let mut scored = 0u64;
        let mut bad = 0u64;
        for ri in 0..self.runs.len() {
            let run = &self.runs[ri];
            let len = run.row_len;
            for (k, &(bi, ts)) in run.rows.iter().enumerate() {
                let b = &mut self.bindings[bi as usize];
                let row = run.xs.get(k * len..(k + 1) * len).unwrap_or(&[]);
                summarize(&b.inputs, row, &mut b.summary);
                match run.value(k) {
                    Ok(v) => {
                        scored += 1;
                        b.bad_streak = 0;
                        let level = b.grader.grade(v);
                        let eval = evaluation(&b.grader, level, v, &run.model);
                        if let Some(a) = self.engine.observe_with(
                            b.det,
                            &eval,
                            ts,
                            Snapshot::Row(&b.labels, &b.summary),
                        ) {
                            alerts.push(a);
                        }
                        self.drift_changes.clear();
                        b.drift.update(&b.summary, &mut self.drift_changes);
                        for c in &self.drift_changes {
                            self.events
                                .push(drift_event(&self.agent_id, b, &run.model, c, ts));
                        }
                    }
                    Err(why) => {
                        bad += 1;
                        b.bad_streak += 1;
                        if b.bad_streak >= b.quarantine_after && !b.quarantined {
                            b.quarantined = true;
                            let note = format!(
                                "{} rows in a row were unusable, the last because {why}",
                                b.bad_streak
                            );
                            tracing::error!(asset = %b.asset, binding = %b.name, model = %run.model.manifest.model.name, %note, "model quarantined");
                            if let Some(info) = self.engine.model_info_mut(b.health_det) {
                                info.note = note;
                            }
                            let eval = health_eval(Some(edge_models::Severity::Warning));
                            if let Some(a) = self.engine.observe_with(
                                b.health_det,
                                &eval,
                                ts,
                                Snapshot::Row(&b.labels, &b.summary),
                            ) {
                                alerts.push(a);
                            }
                        }
                    }
                }
            }
        }
        for run in &mut self.runs {
            run.xs.clear();
            run.rows.clear();
            run.result = Ok(Vec::new());
        }
        self.counters
            .model_rows
            .fetch_add(scored, Ordering::Relaxed);
        self.counters.model_errors.fetch_add(bad, Ordering::Relaxed);
    }

    /// Switches to model versions swapped in since the last call (between batches:
    /// no rows are pending). Lifts quarantines of the swapped models.
    pub fn follow_model_versions(&mut self, now: Timestamp, alerts: &mut Vec<Alert>) {
        for ri in 0..self.runs.len() {
            let g = self.runs[ri].handle.generation();
            if g == self.runs[ri].generation {
                continue;
            }
            let new = self.runs[ri].handle.current();
            self.runs[ri].generation = g;
            let session = match new.model.session() {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(model = %new.manifest.model.name, error = %e, "cannot start a session for the new model version; the old one keeps running");
                    continue;
                }
            };
            let mut ok = true;
            for b in self.bindings.iter_mut().filter(|b| b.run == ri) {
                if let Err(errs) = b.follow(&new) {
                    tracing::error!(binding = %b.name, errors = ?errs, "new model version does not fit the binding");
                    ok = false;
                }
            }
            if !ok {
                // Back to the version in use (validated against these bindings).
                let old = self.runs[ri].model.clone();
                for b in self.bindings.iter_mut().filter(|b| b.run == ri) {
                    let _ = b.follow(&old);
                }
                continue;
            }
            let run = &mut self.runs[ri];
            run.model = new.clone();
            run.session = Some(session);
            run.row_len = new.manifest.input.row_len();
            self.counters.model_swaps.fetch_add(1, Ordering::Relaxed);
            for b in self.bindings.iter_mut().filter(|b| b.run == ri) {
                let info = b.alert_info(&new);
                for det in [b.det, b.health_det] {
                    if let Some(i) = self.engine.model_info_mut(det) {
                        i.model = info.model.clone();
                        i.meaning = info.meaning;
                    }
                }
                tracing::info!(asset = %b.asset, binding = %b.name, version = %info.model.version, "model version in service");
                b.bad_streak = 0;
                if std::mem::take(&mut b.quarantined) {
                    let eval = health_eval(None);
                    if let Some(a) =
                        self.engine
                            .observe_with(b.health_det, &eval, now, Snapshot::Row(&[], &[]))
                    {
                        alerts.push(a);
                    }
                }
            }
        }
    }

    /// Per binding: (asset, binding, model version, quarantined, drifted inputs).
    pub fn model_status(&self) -> Vec<BindingStatus> {
        self.bindings
            .iter()
            .map(|b| {
                let m = &self.runs.get(b.run).map(|r| r.model.clone());
                BindingStatus {
                    asset: b.asset.to_string(),
                    binding: b.name.to_string(),
                    model: m.as_ref().map(|m| crate::models::model_ref(m)),
                    quarantined: b.quarantined,
                    level: self.engine.level(b.det),
                    drifted: b
                        .drift
                        .drifted()
                        .filter_map(|i| b.labels.get(i))
                        .map(|l| l.to_string())
                        .collect(),
                }
            })
            .collect()
    }

    /// Makes [`Self::model_status`] readable from other threads (status reports).
    pub fn publish_model_status(&self) {
        if self.bindings.is_empty() {
            return;
        }
        let status = self.model_status();
        *self
            .counters
            .bindings
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = status;
    }

    /// Per-asset summaries of the latest window features (JSON documents), for the
    /// telemetry lane. Signals without a completed window yet are left out.
    pub fn telemetry(
        &self,
        agent_id: &str,
        now: Timestamp,
        cfg: &TelemetryConfig,
    ) -> Vec<(Arc<str>, Vec<u8>)> {
        let mut by_asset: Vec<(Arc<str>, serde_json::Map<String, serde_json::Value>)> = Vec::new();
        for w in self.windows.iter().filter(|w| w.seen) {
            let mut feats = serde_json::Map::new();
            for f in &cfg.features {
                feats.insert(
                    f.name().to_string(),
                    serde_json::json!(finite(w.features.get(*f))),
                );
            }
            if cfg.bands {
                for (i, b) in w.band_names.iter().enumerate() {
                    let v = w.features.bands().get(i).copied().unwrap_or(f64::NAN);
                    feats.insert(format!("band:{b}"), serde_json::json!(finite(v)));
                }
            }
            let entry = serde_json::json!({
                "window_end_mono_ns": (w.features.t_end * 1e9) as u64,
                "features": feats,
            });
            match by_asset.iter_mut().find(|(a, _)| *a == w.asset) {
                Some((_, m)) => {
                    m.insert(w.signal.to_string(), entry);
                }
                None => {
                    let mut m = serde_json::Map::new();
                    m.insert(w.signal.to_string(), entry);
                    by_asset.push((w.asset.clone(), m));
                }
            }
        }
        by_asset
            .into_iter()
            .map(|(asset, signals)| {
                let doc = serde_json::json!({
                    "v": 1,
                    "kind": "telemetry",
                    "agent_id": agent_id,
                    "asset": &*asset,
                    "time": {
                        "wall": crate::alert::rfc3339(now.wall_ns),
                        "wall_ns": now.wall_ns,
                        "mono_ns": now.mono_ns,
                        "clock_synced": now.synced,
                    },
                    "signals": signals,
                });
                (asset, serde_json::to_vec(&doc).unwrap_or_default())
            })
            .collect()
    }

    /// Takes over from `old`, the processor of the configuration this one replaces
    /// (a reload that changed `[[assets]]`), between two batches.
    ///
    /// Whatever did not change keeps running as if nothing happened: a window with
    /// the same asset, signal, cut and features keeps its samples; a detector with
    /// the same name, settings and window keeps its state and its open alert; a
    /// model binding with the same settings and model version keeps its grading,
    /// drift and quarantine state. Everything else starts fresh, and an alert left
    /// open by a removed or changed detector is closed with a `cleared` alert that
    /// says why (appended to `alerts`), so nothing upstream waits for a clear that
    /// can no longer come. Alert ids continue their sequence and the counters stay
    /// the same objects (metrics and status keep reading them).
    pub fn adopt(
        &mut self,
        mut old: Processor,
        now: Timestamp,
        alerts: &mut Vec<Alert>,
    ) -> AdoptReport {
        old.publish(0);
        self.counters = old.counters.clone();
        self.engine.continue_from(&mut old.engine);
        self.events.append(&mut old.events);
        let mut report = AdoptReport::default();

        // Windows: new index -> old index.
        let mut taken = vec![false; old.windows.len()];
        let mut from_old: Vec<Option<usize>> = vec![None; self.windows.len()];
        for (ni, w) in self.windows.iter_mut().enumerate() {
            let found = old.windows.iter().enumerate().position(|(oi, o)| {
                !taken[oi]
                    && o.asset == w.asset
                    && o.signal == w.signal
                    && o.spec == w.spec
                    && o.feature_cfg == w.feature_cfg
            });
            let Some(oi) = found else {
                report.windows_new += 1;
                continue;
            };
            taken[oi] = true;
            from_old[ni] = Some(oi);
            let o = &mut old.windows[oi];
            std::mem::swap(&mut w.window, &mut o.window);
            std::mem::swap(&mut w.frame, &mut o.frame);
            std::mem::swap(&mut w.extractor, &mut o.extractor);
            std::mem::swap(&mut w.features, &mut o.features);
            w.seen = o.seen;
            report.windows_kept += 1;
        }

        // Built-in detectors: engine slot i is detector i.
        let old_window_of = |d: usize| {
            old.windows
                .iter()
                .position(|w| (w.det_first..w.det_end).contains(&d))
        };
        let mut old_det_taken = vec![false; old.detectors.len()];
        for (ni, was) in from_old.iter().enumerate() {
            let (first, end) = (self.windows[ni].det_first, self.windows[ni].det_end);
            for di in first..end {
                let found = was.and_then(|ow| {
                    (0..old.detectors.len()).find(|&od| {
                        !old_det_taken[od]
                            && old_window_of(od) == Some(ow)
                            && old.engine.key(od) == self.engine.key(di)
                            && old.detectors[od].spec == self.detectors[di].spec
                            && old.detectors[od].feature == self.detectors[di].feature
                    })
                });
                let Some(od) = found else {
                    report.detectors_new += 1;
                    continue;
                };
                old_det_taken[od] = true;
                std::mem::swap(
                    &mut self.detectors[di].detector,
                    &mut old.detectors[od].detector,
                );
                self.engine.adopt_slot(di, &mut old.engine, od);
                report.detectors_kept += 1;
            }
        }

        // Model bindings: same settings and the same model file and version.
        let mut old_bind_taken = vec![false; old.bindings.len()];
        for b in self.bindings.iter_mut() {
            let Some(run) = self.runs.get(b.run) else {
                continue;
            };
            let found = (0..old.bindings.len()).find(|&ob| {
                let o = &old.bindings[ob];
                !old_bind_taken[ob]
                    && b.same_settings(o)
                    && old.runs.get(o.run).is_some_and(|r| {
                        r.handle.manifest_path == run.handle.manifest_path
                            && r.model.sha256 == run.model.sha256
                    })
            });
            let Some(ob) = found else {
                report.bindings_new += 1;
                continue;
            };
            old_bind_taken[ob] = true;
            let o = &mut old.bindings[ob];
            b.continue_from(o);
            self.engine.adopt_slot(b.det, &mut old.engine, o.det);
            self.engine
                .adopt_slot(b.health_det, &mut old.engine, o.health_det);
            report.bindings_kept += 1;
        }

        // Whatever is still open in the old engine can no longer clear.
        let before = alerts.len();
        for det in 0..old.engine.len() {
            if let Some(a) = old.engine.retire(
                det,
                &mut self.engine,
                now,
                "closed: a configuration reload changed or removed this detector",
            ) {
                alerts.push(a);
            }
        }
        report.alerts_closed = alerts.len() - before;
        self.counters
            .alerts
            .fetch_add(report.alerts_closed as u64, Ordering::Relaxed);
        report
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

    fn publish(&mut self, new_alerts: u64) {
        let c = &self.counters;
        c.samples
            .fetch_add(std::mem::take(&mut self.local_samples), Ordering::Relaxed);
        c.unusable
            .fetch_add(std::mem::take(&mut self.local_unusable), Ordering::Relaxed);
        c.unrouted
            .fetch_add(std::mem::take(&mut self.local_unrouted), Ordering::Relaxed);
        c.windows
            .fetch_add(std::mem::take(&mut self.local_windows), Ordering::Relaxed);
        c.evaluations
            .fetch_add(std::mem::take(&mut self.local_evals), Ordering::Relaxed);
        c.model_rows_skipped.fetch_add(
            std::mem::take(&mut self.local_short_rows),
            Ordering::Relaxed,
        );
        c.alerts.fetch_add(new_alerts, Ordering::Relaxed);
    }
}

/// What a reload's [`Processor::adopt`] carried over and what starts fresh.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdoptReport {
    pub windows_kept: usize,
    pub windows_new: usize,
    pub detectors_kept: usize,
    pub detectors_new: usize,
    pub bindings_kept: usize,
    pub bindings_new: usize,
    /// Open alerts closed because their detector was changed or removed.
    pub alerts_closed: usize,
}

/// A new processor for the running pipeline (see [`Processor::adopt`]); the
/// pipeline answers on `done` once it is in service.
#[derive(Debug)]
pub struct Reconfigure {
    pub processor: Box<Processor>,
    pub done: tokio::sync::oneshot::Sender<AdoptReport>,
}

/// A binding's state, for status reports.
#[derive(Clone, Debug, PartialEq)]
pub struct BindingStatus {
    pub asset: String,
    pub binding: String,
    pub model: Option<crate::alert::ModelRef>,
    pub quarantined: bool,
    pub level: Option<edge_models::Severity>,
    pub drifted: Vec<String>,
}

fn drift_event(
    agent_id: &str,
    b: &BindingSlot,
    m: &edge_models::onnx::manifest::ValidatedModel,
    c: &DriftChange,
    ts: Timestamp,
) -> SinkMsg {
    let label = b.labels.get(c.input).map(|l| &**l).unwrap_or("?");
    let signal = label
        .split_once('.')
        .and_then(|(role, _)| b.roles.iter().find(|r| r.role == role))
        .map(|r| &*r.signal)
        .unwrap_or(label);
    let stats = b.drift.stats(c.input).copied();
    let mut info = b.event_info(m);
    info.feature = Some(label.to_string());
    info.z = finite(c.z);
    info.recent_mean = finite(c.recent_mean);
    info.training_mean = stats.map(|s| s.mean);
    info.training_std = stats.map(|s| s.std);
    let (kind, text) = if c.drifted {
        (
            "model_drift",
            format!(
                "{}/{}: input {label} drifted out of {}'s training data: recent mean {:.4} is {:.1} σ from the training mean {:.4}; its scores are less trustworthy",
                b.asset,
                b.name,
                m.manifest.model.name,
                c.recent_mean,
                c.z,
                stats.map(|s| s.mean).unwrap_or(f64::NAN)
            ),
        )
    } else {
        (
            "model_drift_cleared",
            format!(
                "{}/{}: input {label} is back within {}'s training data (recent mean {:.4})",
                b.asset, b.name, m.manifest.model.name, c.recent_mean
            ),
        )
    };
    crate::events::model_event(agent_id, signal, kind, &text, ts, &info)
}

/// The evaluation behind a `model_health` alert: quarantined (Warning) or not.
fn health_eval(level: Option<edge_models::Severity>) -> edge_models::Evaluation {
    edge_models::Evaluation {
        level,
        score: f64::NAN,
        limit: f64::NAN,
        eta_s: None,
    }
}

fn flatten(lists: &[Vec<u32>]) -> (Vec<u32>, Vec<u32>) {
    let mut start = Vec::with_capacity(lists.len() + 1);
    let mut ids = Vec::new();
    for l in lists {
        start.push(ids.len() as u32);
        ids.extend_from_slice(l);
    }
    start.push(ids.len() as u32);
    (start, ids)
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Periodic feature summaries.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetryConfig {
    pub interval: std::time::Duration,
    pub features: Vec<edge_models::Feature>,
    pub bands: bool,
}

/// Drains the ring until `stop` is cancelled *and* the ring is empty.
///
/// `stop` is cancelled by the runtime only after every driver has returned, so the
/// final drain sees every sample that was accepted.
#[allow(clippy::too_many_arguments)]
pub async fn run_pipeline(
    mut processor: Processor,
    ring: Arc<SampleRing>,
    tx: mpsc::Sender<SinkMsg>,
    batch_size: usize,
    stop: CancellationToken,
    clock: edge_driver_api::Clock,
    agent_id: Arc<str>,
    telemetry: Option<TelemetryConfig>,
    mut reconfigure: mpsc::Receiver<Reconfigure>,
) -> Processor {
    let mut batch: Vec<Sample> = Vec::with_capacity(batch_size);
    let mut alerts: Vec<Alert> = Vec::with_capacity(64);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let tele_every = telemetry
        .as_ref()
        .map(|t| t.interval)
        .unwrap_or(std::time::Duration::from_secs(3600));
    let mut tele = tokio::time::interval_at(tokio::time::Instant::now() + tele_every, tele_every);
    tele.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    processor.publish_model_status();
    let mut next: Option<Reconfigure> = None;
    loop {
        processor.counters.heartbeat.fetch_add(1, Ordering::Relaxed);
        // A reload's new processor, between two batches (no rows are pending).
        if let Some(r) = next.take().or_else(|| reconfigure.try_recv().ok()) {
            let old = std::mem::replace(&mut processor, *r.processor);
            let report = processor.adopt(old, clock.now(), &mut alerts);
            processor.publish_model_status();
            tracing::info!(?report, "asset configuration in service");
            send_alerts(&tx, &mut alerts).await;
            let _ = r.done.send(report);
        }
        let n = ring.drain_into(&mut batch, batch_size);
        if n == 0 {
            if stop.is_cancelled() {
                break;
            }
            tokio::select! {
                _ = ring.wait_for_data() => {}
                _ = stop.cancelled() => {}
                Some(r) = reconfigure.recv() => next = Some(r),
                _ = tick.tick() => {
                    // Sinks retry and sync even when no alert arrives. Only into an
                    // empty queue: a lagging sink thread has work anyway, and a queue
                    // full of ticks would make the next alert wait.
                    if tx.capacity() == tx.max_capacity() {
                        let _ = tx.try_send(SinkMsg::Tick);
                    }
                }
                _ = tele.tick(), if telemetry.is_some() => {
                    if let Some(cfg) = &telemetry {
                        for (asset, body) in processor.telemetry(&agent_id, clock.now(), cfg) {
                            let msg = SinkMsg::Telemetry { asset, wall_ns: clock.now().wall_ns, body };
                            // Telemetry never blocks the pipeline: drop it if the sinks lag.
                            if tx.try_send(msg).is_err() {
                                processor.counters.telemetry_dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
            continue;
        }
        processor.ingest_batch(&batch, &mut alerts);
        if processor.inference_due() {
            let mut job = processor.take_inference();
            let started = std::time::Instant::now();
            // Off the async threads; `run` catches a model's panics itself.
            job = match tokio::task::spawn_blocking(move || {
                job.run();
                job
            })
            .await
            {
                Ok(job) => job,
                Err(e) => {
                    tracing::error!(error = %e, "model inference task failed; models are off");
                    InferenceJob { runs: Vec::new() }
                }
            };
            processor
                .counters
                .model_latency
                .observe(started.elapsed().as_secs_f64());
            processor.finish_inference(job, &mut alerts);
            processor.publish_model_status();
            for ev in processor.events.drain(..) {
                if tx.try_send(ev).is_err() {
                    processor
                        .counters
                        .events_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        send_alerts(&tx, &mut alerts).await;
        // Let drivers and sinks run between large batches.
        tokio::task::yield_now().await;
    }
    processor
}

/// Queues every alert of `alerts` (emptying it) for the sink thread.
async fn send_alerts(tx: &mpsc::Sender<SinkMsg>, alerts: &mut Vec<Alert>) {
    for a in alerts.drain(..) {
        if !send_alert(tx, SinkMsg::Alert(Box::new(a))).await {
            tracing::error!("alert sinks are gone; alerts can no longer be delivered");
        }
    }
}

/// Queues an alert for the sink thread, waiting while its queue is full.
///
/// The wait is a blocking task rather than an async `send`: the sink thread does
/// real file I/O, and while the pipeline waits for it tokio must not see an idle
/// runtime. Under a paused clock (the virtual-time tests) an idle runtime advances
/// time, the drivers produce hours of samples in a moment, and the ring overflows
/// although nothing was slow in simulated time. A blocking task holds the clock
/// still until the disk has caught up. In production this path only runs when the
/// sinks lag, and it costs one pooled thread for the duration of the wait.
/// Returns `false` when the sink thread is gone.
async fn send_alert(tx: &mpsc::Sender<SinkMsg>, msg: SinkMsg) -> bool {
    use tokio::sync::mpsc::error::TrySendError;
    match tx.try_send(msg) {
        Ok(()) => true,
        Err(TrySendError::Closed(_)) => false,
        Err(TrySendError::Full(msg)) => {
            let tx = tx.clone();
            tokio::task::spawn_blocking(move || tx.blocking_send(msg).is_ok())
                .await
                .unwrap_or(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::AlertState;
    use std::time::Duration;

    /// One sim machine (only its signals are used: samples are fed by hand) and one
    /// asset with count windows of 4 samples over temperature and pressure.
    fn asset_config(press_warning: f64, temp_window: usize, extra: &str) -> String {
        format!(
            r#"
[agent]
id = "adopt-test"

[[drivers]]
name = "plant"
kind = "sim"
[[drivers.machines]]
name = "pump"

[[assets]]
name = "pump"
[[assets.signals]]
signal = "pump.temperature"
window = {{ size = {temp_window}, hop = {temp_window} }}
[[assets.signals]]
signal = "pump.pressure"
window = {{ size = 4, hop = 4 }}
[[assets.detectors]]
name = "hot"
kind = "threshold"
signal = "pump.temperature"
warning = 60.0
[[assets.detectors]]
name = "press"
kind = "threshold"
signal = "pump.pressure"
warning = {press_warning}
{extra}"#
        )
    }

    fn processor(text: &str) -> (Processor, SignalRegistry) {
        let cfg =
            crate::config::parse("adopt.toml", text).unwrap_or_else(|e| panic!("{}", e.rendered));
        let p = Processor::new(
            cfg.agent.id.clone(),
            &cfg.registry,
            &cfg.assets,
            &cfg.models,
            RateLimits::default(),
            IdGenerator::with_seed(7),
        );
        (p, cfg.registry)
    }

    /// `n` samples of `signal` with value `v`, one a second from `*t`.
    fn feed(
        p: &mut Processor,
        reg: &SignalRegistry,
        t: &mut u64,
        signal: &str,
        v: f64,
        n: usize,
    ) -> Vec<Alert> {
        let id = reg.get(signal).expect("signal exists");
        let mut alerts = Vec::new();
        for _ in 0..n {
            *t += 1_000_000_000;
            let ts = Timestamp {
                mono_ns: *t,
                wall_ns: *t as i64,
                synced: true,
            };
            p.ingest_batch(&[Sample::new_f64(ts, id, v)], &mut alerts);
        }
        alerts
    }

    fn at(t: u64) -> Timestamp {
        Timestamp {
            mono_ns: t,
            wall_ns: t as i64,
            synced: true,
        }
    }

    #[test]
    fn a_reload_keeps_unchanged_detectors_open_and_closes_the_alerts_of_changed_ones() {
        let (mut p, reg) = processor(&asset_config(5.0, 4, ""));
        let mut t = 0;
        let hot = feed(&mut p, &reg, &mut t, "pump.temperature", 70.0, 4);
        let press = feed(&mut p, &reg, &mut t, "pump.pressure", 7.0, 4);
        assert_eq!((hot.len(), press.len()), (1, 1), "{hot:?} {press:?}");
        let counters = p.counters();

        // `press` gets a higher limit, a new detector `cold` appears, `hot` stays.
        let cold = "[[assets.detectors]]\nname = \"cold\"\nkind = \"threshold\"\nsignal = \"pump.temperature\"\nwarning = 10.0\ndirection = \"below\"\n";
        let (mut q, _) = processor(&asset_config(10.0, 4, cold));
        let mut closed = Vec::new();
        let report = q.adopt(p, at(t), &mut closed);
        assert_eq!(
            report,
            AdoptReport {
                windows_kept: 2,
                windows_new: 0,
                detectors_kept: 1,
                detectors_new: 2,
                bindings_kept: 0,
                bindings_new: 0,
                alerts_closed: 1,
            }
        );
        assert!(
            Arc::ptr_eq(&counters, &q.counters()),
            "metrics keep reading the same counters"
        );
        let [c] = &closed[..] else {
            panic!("{closed:?}")
        };
        assert_eq!(
            (&*c.detector, c.state, c.episode),
            ("press", AlertState::Cleared, press[0].id)
        );
        assert!(c.message.contains("configuration reload"), "{}", c.message);
        assert!(c.id > press[0].id, "ids continue their sequence");

        // `hot` is still open: more heat raises nothing, cooling clears its episode.
        assert!(feed(&mut q, &reg, &mut t, "pump.temperature", 70.0, 4).is_empty());
        let cleared = feed(&mut q, &reg, &mut t, "pump.temperature", 50.0, 4);
        let [h] = &cleared[..] else {
            panic!("{cleared:?}")
        };
        assert_eq!(
            (&*h.detector, h.state, h.episode),
            ("hot", AlertState::Cleared, hot[0].id)
        );
        assert!(h.id > c.id);
        // The new `press` judges by its new limit: 7 bar is normal now.
        assert!(feed(&mut q, &reg, &mut t, "pump.pressure", 7.0, 8).is_empty());
        assert_eq!(q.engine_stats().raised, 2);
        assert_eq!(q.engine_stats().cleared, 2);
    }

    #[test]
    fn a_reload_keeps_the_samples_of_unchanged_windows_and_restarts_changed_ones() {
        let (mut p, reg) = processor(&asset_config(5.0, 4, ""));
        let mut t = 0;
        // Half of each window before the reload.
        feed(&mut p, &reg, &mut t, "pump.temperature", 20.0, 2);
        feed(&mut p, &reg, &mut t, "pump.pressure", 2.0, 2);
        // The temperature window becomes 6 samples long; pressure is unchanged.
        let (mut q, _) = processor(&asset_config(5.0, 6, ""));
        let report = q.adopt(p, at(t), &mut Vec::new());
        assert_eq!((report.windows_kept, report.windows_new), (1, 1));
        // `hot` reads the changed window: it starts fresh.
        assert_eq!((report.detectors_kept, report.detectors_new), (1, 1));
        let windows = |q: &Processor| q.counters().windows.load(Ordering::Relaxed);
        feed(&mut q, &reg, &mut t, "pump.pressure", 2.0, 2);
        assert_eq!(
            windows(&q),
            1,
            "the pressure window completes with its first two samples"
        );
        feed(&mut q, &reg, &mut t, "pump.temperature", 20.0, 4);
        assert_eq!(
            windows(&q),
            1,
            "the new temperature window has only four of six"
        );
        feed(&mut q, &reg, &mut t, "pump.temperature", 20.0, 2);
        assert_eq!(windows(&q), 2);
    }

    #[test]
    fn removing_an_asset_closes_its_open_alerts() {
        let (mut p, reg) = processor(&asset_config(5.0, 4, ""));
        let mut t = 0;
        let raised = feed(&mut p, &reg, &mut t, "pump.temperature", 70.0, 4);
        assert_eq!(raised.len(), 1);
        let none = "[agent]\nid = \"adopt-test\"\n[[drivers]]\nname = \"plant\"\nkind = \"sim\"\n[[drivers.machines]]\nname = \"pump\"\n";
        let (mut q, _) = processor(none);
        let mut closed = Vec::new();
        let report = q.adopt(p, at(t), &mut closed);
        assert_eq!(report.alerts_closed, 1);
        assert_eq!(closed[0].episode, raised[0].id);
        assert_eq!(
            q.counters().alerts.load(Ordering::Relaxed),
            2,
            "the raise and the close"
        );
        assert!(feed(&mut q, &reg, &mut t, "pump.temperature", 70.0, 8).is_empty());
    }

    /// The regression behind a flaky end-to-end run: an alert waiting for a full
    /// sink queue let tokio's paused clock run ahead (hours of simulated samples in
    /// a few real milliseconds of disk I/O) and the ring overflowed.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn waiting_for_a_full_sink_queue_holds_the_virtual_clock() {
        let (tx, mut rx) = mpsc::channel::<SinkMsg>(1);
        tx.try_send(SinkMsg::Tick).expect("room for one");
        // A pending timer: an idle runtime would jump straight to it.
        let timer = tokio::spawn(tokio::time::sleep(Duration::from_secs(3600)));
        let t0 = tokio::time::Instant::now();
        let slow_disk = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let first = rx.blocking_recv().is_some();
            let second = rx.blocking_recv().is_some();
            first && second
        });
        let sent = tokio::time::timeout(Duration::from_secs(10), send_alert(&tx, SinkMsg::Tick))
            .await
            .expect("the sink thread drains within 10 s");
        assert!(sent);
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "the virtual clock advanced {:?} while the sink thread was busy",
            t0.elapsed()
        );
        drop(tx);
        assert!(slow_disk.join().expect("sink thread"));
        timer.abort();
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn an_alert_for_a_closed_sink_queue_reports_failure() {
        let (tx, rx) = mpsc::channel::<SinkMsg>(1);
        drop(rx);
        let sent = tokio::time::timeout(Duration::from_secs(1), send_alert(&tx, SinkMsg::Tick))
            .await
            .expect("returns at once");
        assert!(!sent);
    }
}
