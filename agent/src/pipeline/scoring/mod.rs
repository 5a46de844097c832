//! Fault-prediction models in the agent: bindings from the config, versions that can
//! be swapped while the agent runs, and scoring inside the pipeline.
//!
//! ```text
//! [[assets.models]] ──► ModelBindingCfg ──► BindingSlot (pipeline: due rows, grading,
//!                                            drift, quarantine)
//! manifest + .onnx  ──► ModelHandle (current version, generation) ──► ModelRun
//!                       ▲ reload: watch tick or SIGHUP, validated before the swap
//! ```
//!
//! * **Rows.** When a window of one of a binding's signals completes and the binding
//!   is due (`every`, in sample time), the latest features of its windows are copied
//!   into its model's input buffer, in the manifest's order — or, for a raw-window
//!   model, the last `samples` samples of each of its signals' latest windows. A
//!   window holding fewer samples than that (a time window on a signal slower than
//!   planned) skips the row, and the skip is counted and logged once. Buffers keep
//!   their capacity: nothing is allocated per sample or per row in steady state.
//! * **Batched, off the async threads.** After each ring batch, the rows of every
//!   model are run together, one `Session::run` per model (all assets that bind the
//!   same model share a batch), on tokio's blocking pool. The pipeline waits for
//!   the result: samples keep arriving in the ring meanwhile, and a paused test
//!   clock cannot run ahead while the blocking task works.
//! * **Grades.** The manifest's `[alert]` thresholds grade the scored output; a
//!   level is taken after `confirm` consecutive rows at or beyond it (and left after
//!   `confirm` rows below it), so one odd row raises nothing.
//! * **Quarantine.** An output that is not finite, an error or a panic in the model
//!   counts against the binding; after `quarantine_after` in a row the binding stops
//!   scoring and raises a `model_health` Warning saying so. Its asset keeps its
//!   built-in detectors, which always run. A new version lifts the quarantine.
//! * **Drift.** Per input (for a raw-window model: per signal, the window's mean and
//!   standard deviation), an exponentially weighted mean over about `drift_rows`
//!   rows is compared with the manifest's training statistics: more than `drift_z`
//!   standard deviations from the training mean, or outside the training range
//!   widened by a quarter of it, is a `model_drift` event (and its return a
//!   `model_drift_cleared` event). A binding's inputs change state at most once
//!   per `drift_dwell` of sample time, so an input hovering at the edge of its
//!   range cannot flood the event stream.
//! * **Hot swap.** [`ModelHandle::reload`] loads and validates a changed manifest or
//!   model file completely (hash, ports, dry run, and the inputs of every binding)
//!   before it replaces the current version; a bad version is rejected and the old
//!   one keeps running. The pipeline picks a new version up between two batches,
//!   so no sample waits or is dropped for a swap.

mod binding;
mod drift;
mod grading;
mod run;
mod store;

pub use binding::{BindingInputs, DriftCfg, ModelBindingCfg, RoleWindow, resolve_inputs};
pub(crate) use binding::{BindingSlot, summarize};
pub use drift::{Drift, DriftChange};
pub use grading::Grader;
pub(crate) use grading::evaluation;
pub use run::InferenceJob;
pub(crate) use run::ModelRun;
pub use store::{
    LiveModels, ModelHandle, ModelStore, Reload, VersionEvent, meaning_name, model_ref,
    watch_models,
};

use std::sync::Arc;
use std::sync::atomic::Ordering;

use edge_driver_api::Timestamp;
use edge_models::onnx::manifest::ValidatedModel;
use edge_models::{Evaluation, Feature, Severity};

use super::counters::PipelineCounters;
use super::plan::AssetCfg;
use super::processor::flatten;
use super::window::WindowSlot;
use crate::alert::{Alert, AlertEngine, DetectorInfo, ModelRef, Snapshot};
use crate::delivery::sink::SinkMsg;

/// A binding's state, for status reports.
#[derive(Clone, Debug, PartialEq)]
pub struct BindingStatus {
    pub asset: String,
    pub binding: String,
    pub model: Option<ModelRef>,
    pub quarantined: bool,
    pub level: Option<Severity>,
    pub drifted: Vec<String>,
}

/// The models of a processor: one run per model file, one slot per binding, and
/// the rows due. The processor hands it every completed window; it grades the
/// scores through the processor's alert engine.
#[derive(Debug)]
pub struct ModelScorer {
    pub(crate) runs: Vec<ModelRun>,
    pub(crate) bindings: Vec<BindingSlot>,
    /// For window `w`: bindings `win_bind[win_bind_start[w]..win_bind_start[w+1]]`.
    win_bind_start: Vec<u32>,
    win_bind: Vec<u32>,
    pending_rows: usize,
    drift_changes: Vec<DriftChange>,
    /// Model events waiting for the sinks.
    pub(crate) events: Vec<SinkMsg>,
    agent_id: Arc<str>,
    /// Rows skipped since the last [`ModelScorer::take_short_rows`].
    short_rows: u64,
    /// Rows with a non-finite input since the last [`ModelScorer::take_unusable_rows`].
    unusable_rows: u64,
}

impl ModelScorer {
    /// The bindings of every asset; `asset_base[i]` is asset `i`'s first window.
    /// Each binding takes two engine slots (its alerts and its health), appended to
    /// `infos`.
    pub(crate) fn new(
        agent_id: Arc<str>,
        assets: &[AssetCfg],
        asset_base: &[usize],
        windows: usize,
        models: &ModelStore,
        infos: &mut Vec<DetectorInfo>,
    ) -> ModelScorer {
        let runs: Vec<ModelRun> = models
            .handles
            .iter()
            .map(|h| ModelRun::new(h.clone()))
            .collect();
        let mut bindings = Vec::new();
        let mut per_window: Vec<Vec<u32>> = vec![Vec::new(); windows];
        for (asset, &base) in assets.iter().zip(asset_base) {
            for b in &asset.models {
                let Some(run) = runs.get(b.model) else {
                    continue;
                };
                let Some(slot) = bind(asset, b, base, &run.model, infos) else {
                    continue;
                };
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
        ModelScorer {
            runs,
            bindings,
            win_bind_start,
            win_bind,
            pending_rows: 0,
            drift_changes: Vec::new(),
            events: Vec::new(),
            agent_id,
            short_rows: 0,
            unusable_rows: 0,
        }
    }

    /// No binding at all.
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// Window `wi` completed at `end`: copies the rows of the bindings it makes due.
    #[inline]
    pub(crate) fn window_completed(&mut self, wi: usize, end: Timestamp, windows: &[WindowSlot]) {
        let (Some(&b0), Some(&b1)) = (self.win_bind_start.get(wi), self.win_bind_start.get(wi + 1))
        else {
            return;
        };
        for k in b0..b1 {
            let bi = self.win_bind[k as usize] as usize;
            self.gather_row(bi, end, windows);
        }
    }

    /// Copies binding `bi`'s input row into its model's buffer when it is due.
    fn gather_row(&mut self, bi: usize, end: Timestamp, windows: &[WindowSlot]) {
        let b = &mut self.bindings[bi];
        if b.quarantined || end.mono_ns < b.next_due_ns {
            return;
        }
        if !b.ready.iter().all(|&w| windows[w as usize].seen) {
            return;
        }
        let Some(run) = self.runs.get_mut(b.run) else {
            return;
        };
        if run.session.is_none() {
            return;
        }
        let start = run.xs.len();
        match &b.inputs {
            BindingInputs::Features(cols) => {
                for (w, f) in cols {
                    run.xs.push(windows[*w].features.get(*f) as f32);
                }
            }
            BindingInputs::Raw {
                samples,
                windows: ws,
            } => {
                let n = *samples;
                if let Some(&w) = ws.iter().find(|&&w| windows[w].frame.len() < n) {
                    // Not due yet: the next window may be complete enough.
                    if b.short_rows == 0 {
                        tracing::warn!(asset = %b.asset, binding = %b.name, signal = %windows[w].signal, held = windows[w].frame.len(), needs = n, "a window holds fewer samples than the raw-window model reads; rows are skipped until it holds enough (lengthen the window or check the signal's rate)");
                    }
                    b.short_rows += 1;
                    self.short_rows += 1;
                    return;
                }
                for &w in ws {
                    let x = &windows[w].frame.x;
                    run.xs.extend(x[x.len() - n..].iter().map(|v| *v as f32));
                }
            }
        }
        b.next_due_ns = end.mono_ns.saturating_add(b.every_ns);
        // A NaN or infinite input (the kurtosis of a constant window, a broken
        // sensor) is not scored: ONNX runtimes turn NaN into confident finite
        // scores (tract's Sigmoid(NaN) is 4.8e-7).
        if run.xs[start..].iter().any(|v| !v.is_finite()) {
            run.xs.truncate(start);
            if b.unusable_rows == 0 {
                tracing::warn!(asset = %b.asset, binding = %b.name, "a model input is NaN or infinite; such rows are not scored (counted in model_rows_unusable_total)");
            }
            b.unusable_rows += 1;
            self.unusable_rows += 1;
            return;
        }
        run.rows.push((bi as u32, end));
        self.pending_rows += 1;
    }

    /// Rows skipped because a window was short, since the last call.
    pub(crate) fn take_short_rows(&mut self) -> u64 {
        std::mem::take(&mut self.short_rows)
    }

    /// Rows not scored because an input was NaN or infinite, since the last call.
    pub(crate) fn take_unusable_rows(&mut self) -> u64 {
        std::mem::take(&mut self.unusable_rows)
    }

    /// Model events (drift) waiting for the sinks.
    pub(crate) fn take_events(&mut self) -> std::vec::Drain<'_, SinkMsg> {
        self.events.drain(..)
    }

    pub fn inference_due(&self) -> bool {
        self.pending_rows > 0
    }

    pub fn take_inference(&mut self) -> InferenceJob {
        InferenceJob {
            runs: std::mem::take(&mut self.runs),
        }
    }

    /// Grades the scores of `job` into alerts, follows input drift and quarantines
    /// bindings whose model fails.
    pub(crate) fn finish_inference(
        &mut self,
        job: InferenceJob,
        engine: &mut AlertEngine,
        counters: &PipelineCounters,
        alerts: &mut Vec<Alert>,
    ) {
        self.runs = job.runs;
        self.pending_rows = 0;
        let (mut scored, mut bad) = (0u64, 0u64);
        for ri in 0..self.runs.len() {
            for k in 0..self.runs[ri].rows.len() {
                match self.grade_row(ri, k, engine, alerts) {
                    true => scored += 1,
                    false => bad += 1,
                }
            }
        }
        for run in &mut self.runs {
            run.xs.clear();
            run.rows.clear();
            run.result = Ok(Vec::new());
        }
        counters.model_rows.fetch_add(scored, Ordering::Relaxed);
        counters.model_errors.fetch_add(bad, Ordering::Relaxed);
    }

    /// Grades row `k` of run `ri`; `false` when its score was unusable.
    fn grade_row(
        &mut self,
        ri: usize,
        k: usize,
        engine: &mut AlertEngine,
        alerts: &mut Vec<Alert>,
    ) -> bool {
        let run = &self.runs[ri];
        let len = run.row_len;
        let (bi, ts) = run.rows[k];
        let b = &mut self.bindings[bi as usize];
        let row = run.xs.get(k * len..(k + 1) * len).unwrap_or(&[]);
        summarize(&b.inputs, row, &mut b.summary);
        let why = match run.value(k) {
            Ok(v) => {
                b.bad_streak = 0;
                let level = b.grader.grade(v);
                let eval = evaluation(&b.grader, level, v, &run.model);
                let snap = Snapshot::Row(&b.labels, &b.summary);
                if let Some(a) = engine.observe_with(b.det, &eval, ts, snap) {
                    alerts.push(a);
                }
                self.drift_changes.clear();
                b.drift
                    .update(ts.mono_secs(), &b.summary, &mut self.drift_changes);
                for c in &self.drift_changes {
                    self.events
                        .push(drift_event(&self.agent_id, b, &run.model, c, ts));
                }
                return true;
            }
            Err(why) => why,
        };
        b.bad_streak += 1;
        if b.bad_streak >= b.quarantine_after && !b.quarantined {
            b.quarantined = true;
            let note = format!(
                "{} rows in a row were unusable, the last because {why}",
                b.bad_streak
            );
            tracing::error!(asset = %b.asset, binding = %b.name, model = %run.model.manifest.model.name, %note, "model quarantined");
            if let Some(info) = engine.model_info_mut(b.health_det) {
                info.note = note;
            }
            let eval = health_eval(Some(Severity::Warning));
            let snap = Snapshot::Row(&b.labels, &b.summary);
            if let Some(a) = engine.observe_with(b.health_det, &eval, ts, snap) {
                alerts.push(a);
            }
        }
        false
    }

    /// Switches to model versions swapped in since the last call (between batches:
    /// no rows are pending). Lifts quarantines of the swapped models.
    pub(crate) fn follow_versions(
        &mut self,
        engine: &mut AlertEngine,
        counters: &PipelineCounters,
        now: Timestamp,
        alerts: &mut Vec<Alert>,
    ) {
        for ri in 0..self.runs.len() {
            let g = self.runs[ri].handle.generation();
            if g == self.runs[ri].generation {
                continue;
            }
            self.runs[ri].generation = g;
            if self.swap_in(ri) {
                counters.model_swaps.fetch_add(1, Ordering::Relaxed);
                self.retune_bindings(ri, engine, now, alerts);
            }
        }
    }

    /// Puts run `ri` on its handle's current version, if every binding of it can
    /// follow; `false` keeps the version in use.
    fn swap_in(&mut self, ri: usize) -> bool {
        let new = self.runs[ri].handle.current();
        let session = match new.model.session() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(model = %new.manifest.model.name, error = %e, "cannot start a session for the new model version; the old one keeps running");
                return false;
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
            return false;
        }
        let run = &mut self.runs[ri];
        run.row_len = new.manifest.input.row_len();
        run.model = new;
        run.session = Some(session);
        true
    }

    /// After a swap: the engine's model identity of every binding of run `ri`, and
    /// quarantines lifted.
    fn retune_bindings(
        &mut self,
        ri: usize,
        engine: &mut AlertEngine,
        now: Timestamp,
        alerts: &mut Vec<Alert>,
    ) {
        let new = self.runs[ri].model.clone();
        for b in self.bindings.iter_mut().filter(|b| b.run == ri) {
            let info = b.alert_info(&new);
            for det in [b.det, b.health_det] {
                if let Some(i) = engine.model_info_mut(det) {
                    i.model = info.model.clone();
                    i.meaning = info.meaning;
                }
            }
            tracing::info!(asset = %b.asset, binding = %b.name, version = %info.model.version, "model version in service");
            b.bad_streak = 0;
            if std::mem::take(&mut b.quarantined) {
                let eval = health_eval(None);
                if let Some(a) =
                    engine.observe_with(b.health_det, &eval, now, Snapshot::Row(&[], &[]))
                {
                    alerts.push(a);
                }
            }
        }
    }

    /// Per binding: asset, binding, model version, quarantined, level, drifted inputs.
    pub(crate) fn status(&self, engine: &AlertEngine) -> Vec<BindingStatus> {
        self.bindings
            .iter()
            .map(|b| BindingStatus {
                asset: b.asset.to_string(),
                binding: b.name.to_string(),
                model: self.runs.get(b.run).map(|r| model_ref(&r.model)),
                quarantined: b.quarantined,
                level: engine.level(b.det),
                drifted: b
                    .drift
                    .drifted()
                    .filter_map(|i| b.labels.get(i))
                    .map(|l| l.to_string())
                    .collect(),
            })
            .collect()
    }

    /// Takes over the state of `old`'s bindings that kept their settings, model
    /// file and version (see [`crate::pipeline::Processor::adopt`]); returns how
    /// many were kept and how many start fresh.
    pub(crate) fn adopt(
        &mut self,
        old: &mut ModelScorer,
        engine: &mut AlertEngine,
        old_engine: &mut AlertEngine,
    ) -> (usize, usize) {
        self.events.append(&mut old.events);
        let (mut kept, mut new) = (0, 0);
        let mut old_taken = vec![false; old.bindings.len()];
        for b in self.bindings.iter_mut() {
            let Some(run) = self.runs.get(b.run) else {
                continue;
            };
            let found = (0..old.bindings.len()).find(|&ob| {
                let o = &old.bindings[ob];
                !old_taken[ob]
                    && b.same_settings(o)
                    && old.runs.get(o.run).is_some_and(|r| {
                        r.handle.manifest_path == run.handle.manifest_path
                            && r.model.sha256 == run.model.sha256
                    })
            });
            let Some(ob) = found else {
                new += 1;
                continue;
            };
            old_taken[ob] = true;
            let o = &mut old.bindings[ob];
            b.continue_from(o);
            engine.adopt_slot(b.det, old_engine, o.det);
            engine.adopt_slot(b.health_det, old_engine, o.health_det);
            kept += 1;
        }
        (kept, new)
    }
}

/// A binding's slot in the pipeline, its two engine slots described in `infos`;
/// `None` when the model's inputs do not resolve (the config check resolved them
/// already, so this is logged, not expected).
fn bind(
    asset: &AssetCfg,
    b: &ModelBindingCfg,
    base: usize,
    m: &Arc<ValidatedModel>,
    infos: &mut Vec<DetectorInfo>,
) -> Option<BindingSlot> {
    let mut slot = BindingSlot {
        run: b.model,
        asset: asset.name.clone(),
        name: b.name.clone(),
        roles: b.roles.clone(),
        window_base: base,
        ready: Vec::new(),
        inputs: BindingInputs::Features(Vec::new()),
        labels: Vec::new(),
        summary: Vec::new(),
        short_rows: 0,
        unusable_rows: 0,
        every_ns: b.every.as_nanos() as u64,
        next_due_ns: 0,
        grader: Grader::new(m, b.confirm),
        drift: Drift::new(m, b.drift),
        det: infos.len(),
        health_det: infos.len() + 1,
        bad_streak: 0,
        quarantine_after: b.quarantine_after,
        quarantined: false,
        drift_cfg: b.drift,
    };
    if let Err(errs) = slot.follow(m) {
        tracing::error!(asset = %asset.name, model = %b.name, errors = ?errs, "model inputs do not resolve; the binding is off");
        return None;
    }
    let info = slot.alert_info(m);
    let signal = info
        .signals
        .first()
        .cloned()
        .unwrap_or_else(|| Arc::from(""));
    let entry = |name: Arc<str>, kind: &'static str, feature_name: String| DetectorInfo {
        asset: asset.name.clone(),
        name,
        kind,
        signal: signal.clone(),
        feature: Feature::Mean,
        feature_name,
        band_names: Vec::new(),
        model: Some(info.clone()),
        predictor: None,
    };
    infos.push(entry(b.name.clone(), "model", info.meaning.to_string()));
    let health = Arc::from(format!("{}.health", b.name).as_str());
    infos.push(entry(health, "model_health", "health".into()));
    Some(slot)
}

/// The event a change of an input's drift state becomes.
fn drift_event(
    agent_id: &str,
    b: &BindingSlot,
    m: &ValidatedModel,
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
    crate::delivery::events::model_event(agent_id, signal, kind, &text, ts, &info)
}

/// The evaluation behind a `model_health` alert: quarantined (Warning) or not.
fn health_eval(level: Option<Severity>) -> Evaluation {
    Evaluation {
        level,
        score: f64::NAN,
        limit: f64::NAN,
        forecast: None,
    }
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

#[cfg(all(test, feature = "onnx"))]
mod tests {
    use super::*;
    use edge_models::onnx::manifest::Direction;
    use std::path::{Path, PathBuf};

    fn zoo(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models/zoo")
            .join(name)
            .join("manifest.toml")
    }

    fn load(name: &str) -> ValidatedModel {
        ValidatedModel::load(&zoo(name)).expect("zoo model validates")
    }

    #[test]
    fn a_level_needs_confirm_rows_in_a_row() {
        let m = load("bearing_rf"); // warning 0.5, prefault 0.8
        let mut g = Grader::new(&m, 3);
        assert_eq!(g.grade(0.9), None);
        assert_eq!(g.grade(0.9), None);
        assert_eq!(g.grade(0.1), None, "an interrupted streak starts over");
        assert_eq!(g.grade(0.9), None);
        assert_eq!(g.grade(0.6), None);
        assert_eq!(
            g.grade(0.95),
            Some(Severity::Warning),
            "the level the whole streak agrees on"
        );
        for _ in 0..2 {
            assert_eq!(g.grade(0.85), Some(Severity::Warning));
        }
        assert_eq!(g.grade(0.85), Some(Severity::PreFault));
        assert_eq!(g.grade(0.2), Some(Severity::PreFault));
        assert_eq!(g.grade(0.2), Some(Severity::PreFault));
        assert_eq!(g.grade(0.2), None);
        assert_eq!(g.limit(Some(Severity::PreFault)), 0.8);
        assert_eq!(g.limit(None), 0.5);
    }

    #[test]
    fn below_thresholds_grade_low_scores() {
        let m = load("pump_iforest");
        assert_eq!(m.manifest.alert.direction, Direction::Below);
        let w = m.manifest.alert.warning.expect("warning");
        let mut g = Grader::new(&m, 1);
        assert_eq!(g.grade(w + 1.0), None);
        assert_eq!(g.grade(w - 1e-3), Some(Severity::Warning));
    }

    #[test]
    fn inputs_resolve_against_roles_with_every_problem_named() {
        let m = load("bearing_rf");
        let roles = vec![
            RoleWindow {
                role: "vibration".into(),
                signal: "p.vibration".into(),
                window: 1,
                bands: vec!["shaft".into()],
                capacity: 512,
            },
            RoleWindow {
                role: "temperature".into(),
                signal: "p.temperature".into(),
                window: 0,
                bands: vec![],
                capacity: 256,
            },
        ];
        let errs = resolve_inputs(&m.manifest.input, &roles).expect_err("incomplete");
        let text = errs.join("\n");
        assert!(text.contains("band:bearing"), "{text}");
        assert_eq!(
            text.matches("role `current`").count(),
            1,
            "one message per missing role, though two inputs use it: {text}"
        );
        assert!(text.contains("role `pressure`"), "{text}");
    }

    #[test]
    fn a_raw_window_model_needs_its_role_with_enough_samples() {
        let m = load("bearing_conv");
        let w = m.manifest.input.window.clone().expect("a raw-window model");
        let role = |capacity| RoleWindow {
            role: w.signals[0].clone(),
            signal: "p.vibration".into(),
            window: 2,
            bands: vec![],
            capacity,
        };
        assert_eq!(
            resolve_inputs(&m.manifest.input, &[role(512)]),
            Ok(BindingInputs::Raw {
                samples: w.samples,
                windows: vec![2]
            })
        );
        let short = resolve_inputs(&m.manifest.input, &[role(w.samples - 1)])
            .expect_err("a window too small")
            .join("\n");
        assert!(
            short.contains(&format!("at least {} samples", w.samples)),
            "{short}"
        );
        let none = resolve_inputs(&m.manifest.input, &[])
            .expect_err("no role")
            .join("\n");
        assert!(none.contains("role `vibration`"), "{none}");
    }

    #[test]
    fn raw_rows_are_summarized_per_signal_as_mean_and_std() {
        let inputs = BindingInputs::Raw {
            samples: 4,
            windows: vec![0, 1],
        };
        let mut out = Vec::new();
        summarize(&inputs, &[1.0, 3.0, 1.0, 3.0, 5.0, 5.0, 5.0, 5.0], &mut out);
        assert_eq!(out, vec![2.0, 1.0, 5.0, 0.0]);
        let feats = BindingInputs::Features(vec![]);
        summarize(&feats, &[7.0, 8.0], &mut out);
        assert_eq!(out, vec![7.0, 8.0], "a feature row is its own summary");
    }

    #[test]
    fn drift_is_flagged_once_cleared_with_hysteresis_and_changes_at_most_once_per_dwell() {
        let m = load("bearing_rf");
        let n = m.manifest.input.features.len();
        let mut d = Drift::new(
            &m,
            DriftCfg {
                z: 4.0,
                rows: 5,
                dwell: std::time::Duration::from_secs(600),
            },
        );
        let means: Vec<f32> = m
            .manifest
            .input
            .features
            .iter()
            .map(|f| m.manifest.training[f].mean as f32)
            .collect();
        let mut out = Vec::new();
        let mut t = 0.0;
        let mut feed = |d: &mut Drift, row: &[f32], out: &mut Vec<DriftChange>| {
            t += 10.0;
            d.update(t, row, out);
        };
        for _ in 0..50 {
            feed(&mut d, &means, &mut out);
        }
        assert!(out.is_empty(), "training means are not drift: {out:?}");
        // Pressure (the last input) reads 10 bar where training saw 5.5..6.5.
        let mut far = means.clone();
        far[n - 1] = 10.0;
        for _ in 0..50 {
            feed(&mut d, &far, &mut out);
        }
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].drifted && out[0].input == n - 1);
        assert!(out[0].z > 4.0);
        out.clear();
        for _ in 0..100 {
            feed(&mut d, &means, &mut out);
        }
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(!out[0].drifted);
        // NaN inputs are skipped, not drift.
        out.clear();
        let nan = vec![f32::NAN; n];
        for _ in 0..20 {
            feed(&mut d, &nan, &mut out);
        }
        assert!(out.is_empty());
        // In and out of range every 400 s (10 rows out, 30 back): without the
        // dwell that is 30 changes in 6000 s; with it, at most one per 600 s.
        out.clear();
        for i in 0..600 {
            feed(&mut d, if i % 40 < 10 { &far } else { &means }, &mut out);
        }
        assert!(out.len() >= 2, "it does drift: {out:?}");
        assert!(out.len() <= 11, "{} changes in 6000 s", out.len());
    }

    #[test]
    fn a_bad_version_is_rejected_and_the_old_one_kept() {
        let dir = std::env::temp_dir().join(format!("edge-models-reload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let src = zoo("bearing_rf");
        let src_dir = src.parent().expect("dir");
        for f in ["manifest.toml", "bearing_rf.onnx", "reference.json"] {
            std::fs::copy(src_dir.join(f), dir.join(f)).expect("copy");
        }
        let manifest = dir.join("manifest.toml");
        let h = ModelHandle::new(manifest.clone(), load("bearing_rf"), vec![]);
        assert_eq!(h.reload(false), Reload::Unchanged);
        assert_eq!(h.reload(true), Reload::Unchanged, "same content");
        // A truncated model file: hash mismatch, rejected, old version kept.
        let bytes = std::fs::read(dir.join("bearing_rf.onnx")).expect("read");
        std::fs::write(dir.join("bearing_rf.onnx"), &bytes[..bytes.len() / 2]).expect("write");
        match h.reload(false) {
            Reload::Rejected { kept, errors } => {
                assert_eq!(kept.name, "bearing_rf");
                assert!(errors.join(" ").contains("SHA-256"), "{errors:?}");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert_eq!(h.generation(), 0);
        assert!(h.last_rejection().is_some());
        // Fixed again, with a new version number: swapped.
        std::fs::write(dir.join("bearing_rf.onnx"), &bytes).expect("write");
        let text = std::fs::read_to_string(&manifest).expect("read");
        std::fs::write(
            &manifest,
            text.replace("version = \"1.0.0\"", "version = \"1.0.1\""),
        )
        .expect("write");
        match h.reload(false) {
            Reload::Swapped { from, to } => {
                assert_eq!(from.version, "1.0.0");
                assert_eq!(to.version, "1.0.1");
            }
            other => panic!("expected a swap, got {other:?}"),
        }
        assert_eq!(h.generation(), 1);
        assert_eq!(h.current().manifest.model.version, "1.0.1");
        // The version history says what happened, in order.
        let events: Vec<(String, String, bool)> = h
            .history()
            .into_iter()
            .map(|e| {
                (
                    e.event,
                    e.version,
                    e.detail.is_some_and(|d| d.contains("SHA-256")),
                )
            })
            .collect();
        assert_eq!(
            events,
            vec![
                ("loaded".into(), "1.0.0".into(), false),
                ("rejected".into(), String::new(), true),
                ("swapped".into(), "1.0.1".into(), false),
            ]
        );
        // Bounded: the oldest events go.
        std::fs::write(dir.join("bearing_rf.onnx"), &bytes[..10]).expect("write");
        for _ in 0..20 {
            assert!(matches!(h.reload(true), Reload::Rejected { .. }));
        }
        let history = h.history();
        assert_eq!(history.len(), store::VERSION_EVENTS);
        assert!(history.iter().all(|e| e.event == "rejected"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
