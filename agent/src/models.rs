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
//!   `model_drift_cleared` event).
//! * **Hot swap.** [`ModelHandle::reload`] loads and validates a changed manifest or
//!   model file completely (hash, ports, dry run, and the inputs of every binding)
//!   before it replaces the current version; a bad version is rejected and the old
//!   one keeps running. The pipeline picks a new version up between two batches,
//!   so no sample waits or is dropped for a swap.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use edge_driver_api::Timestamp;
use edge_models::onnx::manifest::{Direction, FeatureStats, InputSpec, Meaning, ValidatedModel};
use edge_models::onnx::{Output, Session};
use edge_models::{Evaluation, Feature, Severity};

use crate::alert::{ModelAlertInfo, ModelRef};
use crate::events::ModelEventInfo;

/// `[models]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelsSection {
    /// Where relative manifest paths are looked up.
    pub dir: PathBuf,
    /// How often bound manifests and model files are checked for a new version
    /// (`None`: only on SIGHUP).
    pub watch: Option<Duration>,
}

/// One role of a binding: the asset window the model's `<role>.<feature>` inputs read.
#[derive(Clone, Debug, PartialEq)]
pub struct RoleWindow {
    pub role: String,
    pub signal: Arc<str>,
    /// The window's index within its asset.
    pub window: usize,
    pub bands: Vec<String>,
    /// The most samples the window holds (its size, or a time window's
    /// `max_samples`).
    pub capacity: usize,
}

/// Input drift settings of a binding.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DriftCfg {
    /// Standard deviations from the training mean that count as drift.
    pub z: f64,
    /// Rows the recent mean is taken over (and the warm-up before any verdict).
    pub rows: u32,
}

/// `[[assets.models]]`: a model scoring one asset.
#[derive(Clone, Debug)]
pub struct ModelBindingCfg {
    /// Names its alerts (`detector`); `<name>.health` names its quarantine alerts.
    pub name: Arc<str>,
    /// Index into [`ModelStore::handles`].
    pub model: usize,
    pub roles: Vec<RoleWindow>,
    /// Score at most this often (sample time).
    pub every: Duration,
    pub confirm: u32,
    pub quarantine_after: u32,
    pub drift: DriftCfg,
}

/// What a binding copies into its model's input row. Window indices are relative
/// to the asset when resolved, global once placed in the pipeline.
#[derive(Clone, Debug, PartialEq)]
pub enum BindingInputs {
    /// One feature of one window per column.
    Features(Vec<(usize, Feature)>),
    /// The last `samples` samples of each window, one window per channel.
    Raw { samples: usize, windows: Vec<usize> },
}

impl BindingInputs {
    /// The windows a row reads.
    pub fn windows(&self) -> Vec<usize> {
        let mut v: Vec<usize> = match self {
            BindingInputs::Features(f) => f.iter().map(|(w, _)| *w).collect(),
            BindingInputs::Raw { windows, .. } => windows.clone(),
        };
        v.sort_unstable();
        v.dedup();
        v
    }

    fn offset(self, base: usize) -> BindingInputs {
        match self {
            BindingInputs::Features(f) => {
                BindingInputs::Features(f.into_iter().map(|(w, x)| (base + w, x)).collect())
            }
            BindingInputs::Raw { samples, windows } => BindingInputs::Raw {
                samples,
                windows: windows.into_iter().map(|w| base + w).collect(),
            },
        }
    }
}

/// Finds the window a role names; a missing role is reported once.
fn role_window<'a>(
    roles: &'a [RoleWindow],
    role: &'a str,
    input: &str,
    missing: &mut Vec<&'a str>,
    errs: &mut Vec<String>,
) -> Option<&'a RoleWindow> {
    if let Some(rw) = roles.iter().find(|r| r.role == role) {
        return Some(rw);
    }
    // One message per missing role, not per input that uses it.
    if !missing.contains(&role) {
        missing.push(role);
        let known: Vec<&str> = roles.iter().map(|r| r.role.as_str()).collect();
        errs.push(format!(
            "the model reads role `{role}` ({input}) but `roles` maps only {}; add {role} = \"<signal>\"",
            if known.is_empty() {
                "nothing".to_string()
            } else {
                known.join(", ")
            }
        ));
    }
    None
}

/// Maps a manifest's inputs to the asset windows a binding's `roles` name: each
/// `<role>.<feature>` to (window, feature), or each raw-window signal to its window
/// (which must hold at least the samples the model reads).
pub fn resolve_inputs(
    input: &InputSpec,
    roles: &[RoleWindow],
) -> Result<BindingInputs, Vec<String>> {
    let mut errs = Vec::new();
    let mut missing: Vec<&str> = Vec::new();
    if let Some(w) = &input.window {
        let mut windows = Vec::with_capacity(w.signals.len());
        for role in &w.signals {
            let Some(rw) = role_window(roles, role, "raw window", &mut missing, &mut errs) else {
                continue;
            };
            if rw.capacity < w.samples {
                errs.push(format!(
                    "the model reads the last {} samples of role `{role}`, but the window of `{}` holds at most {}; make that window at least {} samples (`size` of a count window, `max_samples` of a time window)",
                    w.samples, rw.signal, rw.capacity, w.samples
                ));
                continue;
            }
            windows.push(rw.window);
        }
        return if errs.is_empty() {
            Ok(BindingInputs::Raw {
                samples: w.samples,
                windows,
            })
        } else {
            Err(errs)
        };
    }
    let features = &input.features;
    let mut out = Vec::with_capacity(features.len());
    for f in features {
        let Some((role, feat)) = f.split_once('.') else {
            errs.push(format!("input {f:?} is not <role>.<feature>"));
            continue;
        };
        let Some(rw) = role_window(
            roles,
            role,
            &format!("input {f:?}"),
            &mut missing,
            &mut errs,
        ) else {
            continue;
        };
        let bands: Vec<&str> = rw.bands.iter().map(String::as_str).collect();
        match Feature::parse(feat, &bands) {
            Ok(x) => out.push((rw.window, x)),
            Err(m) => errs.push(format!(
                "input {f:?} on signal `{}`: {m}{}",
                rw.signal,
                if feat.starts_with("band:") {
                    "; define the band under that signal's `bands`"
                } else {
                    ""
                }
            )),
        }
    }
    if errs.is_empty() {
        Ok(BindingInputs::Features(out))
    } else {
        Err(errs)
    }
}

/// The values drift is judged on and an alert shows, from one input row: the row
/// itself, or each raw window's mean and standard deviation.
pub(crate) fn summarize(inputs: &BindingInputs, row: &[f32], out: &mut Vec<f32>) {
    out.clear();
    match inputs {
        BindingInputs::Features(_) => out.extend_from_slice(row),
        BindingInputs::Raw { samples, .. } => {
            for w in row.chunks(*samples.max(&1)) {
                let n = w.len().max(1) as f64;
                let mean = w.iter().map(|v| f64::from(*v)).sum::<f64>() / n;
                let var = w
                    .iter()
                    .map(|v| (f64::from(*v) - mean).powi(2))
                    .sum::<f64>()
                    / n;
                out.push(mean as f32);
                out.push(var.sqrt() as f32);
            }
        }
    }
}

/// What `meaning` an output has, as alerts name it.
pub fn meaning_name(m: Meaning) -> &'static str {
    match m {
        Meaning::FaultProbability => "fault_probability",
        Meaning::AnomalyScore => "anomaly_score",
        Meaning::PredictedValue => "predicted_value",
        Meaning::RemainingTimeS => "remaining_time_s",
        Meaning::Label => "label",
        Meaning::Other => "other",
    }
}

/// The identity of a model version.
pub fn model_ref(m: &ValidatedModel) -> ModelRef {
    ModelRef {
        name: m.manifest.model.name.clone(),
        version: m.manifest.model.version.clone(),
        sha256: m.sha256.to_ascii_lowercase(),
    }
}

fn alert_meaning(m: &ValidatedModel) -> Meaning {
    m.manifest
        .outputs
        .iter()
        .find(|o| o.name == m.manifest.alert.output)
        .map(|o| o.meaning)
        .unwrap_or(Meaning::Other)
}

/// Sizes and modification times of a manifest and the files it names: a cheap
/// "did anything change" for the watcher.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Fingerprint(Vec<(PathBuf, Option<(u64, SystemTime)>)>);

fn stat(p: &Path) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.len(), m.modified().ok()?))
}

fn fingerprint(manifest: &Path) -> Fingerprint {
    let mut v = vec![(manifest.to_path_buf(), stat(manifest))];
    let dir = manifest.parent().unwrap_or(Path::new("."));
    if let Some(doc) = std::fs::read_to_string(manifest)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
    {
        for section in ["model", "reference"] {
            if let Some(f) = doc
                .get(section)
                .and_then(|s| s.get("file"))
                .and_then(|f| f.as_str())
            {
                let p = dir.join(f);
                let s = stat(&p);
                v.push((p, s));
            }
        }
    }
    Fingerprint(v)
}

/// The result of [`ModelHandle::reload`].
#[derive(Clone, Debug, PartialEq)]
pub enum Reload {
    Unchanged,
    Swapped { from: ModelRef, to: ModelRef },
    Rejected { kept: ModelRef, errors: Vec<String> },
}

/// One model file (with its manifest), shared by every binding of it; its version
/// can be swapped while the agent runs.
#[derive(Debug)]
pub struct ModelHandle {
    pub manifest_path: PathBuf,
    current: Mutex<Arc<ValidatedModel>>,
    generation: AtomicU64,
    /// The roles of every binding, to check a new version's inputs against.
    bindings: Vec<Vec<RoleWindow>>,
    seen: Mutex<Fingerprint>,
    pub swaps: AtomicU64,
    pub rejections: AtomicU64,
    last_rejection: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ModelHandle {
    pub fn new(
        manifest_path: PathBuf,
        model: ValidatedModel,
        bindings: Vec<Vec<RoleWindow>>,
    ) -> ModelHandle {
        let seen = fingerprint(&manifest_path);
        ModelHandle {
            manifest_path,
            current: Mutex::new(Arc::new(model)),
            generation: AtomicU64::new(0),
            bindings,
            seen: Mutex::new(seen),
            swaps: AtomicU64::new(0),
            rejections: AtomicU64::new(0),
            last_rejection: Mutex::new(None),
        }
    }

    /// The version in service.
    pub fn current(&self) -> Arc<ValidatedModel> {
        lock(&self.current).clone()
    }

    /// Bumped by every swap.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Why the last new version was rejected, if it was.
    pub fn last_rejection(&self) -> Option<String> {
        lock(&self.last_rejection).clone()
    }

    /// Loads the manifest and model again when their files changed (or always with
    /// `force`), validates the new version completely and swaps it in. Blocking: it
    /// reads files and optimizes the model.
    pub fn reload(&self, force: bool) -> Reload {
        let fp = fingerprint(&self.manifest_path);
        {
            let mut seen = lock(&self.seen);
            if !force && *seen == fp {
                return Reload::Unchanged;
            }
            *seen = fp;
        }
        let cur = self.current();
        let reject = |errors: Vec<String>| {
            self.rejections.fetch_add(1, Ordering::Relaxed);
            *lock(&self.last_rejection) = Some(errors.join("; "));
            Reload::Rejected {
                kept: model_ref(&cur),
                errors,
            }
        };
        let new = match ValidatedModel::load(&self.manifest_path) {
            Ok(m) => m,
            Err(errs) => return reject(errs.into_iter().map(|e| e.message).collect()),
        };
        if new.sha256.eq_ignore_ascii_case(&cur.sha256) && new.manifest == cur.manifest {
            return Reload::Unchanged;
        }
        let errs: Vec<String> = self
            .bindings
            .iter()
            .filter_map(|roles| resolve_inputs(&new.manifest.input, roles).err())
            .flatten()
            .collect();
        if !errs.is_empty() {
            return reject(errs);
        }
        let to = model_ref(&new);
        *lock(&self.current) = Arc::new(new);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.swaps.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_rejection) = None;
        Reload::Swapped {
            from: model_ref(&cur),
            to,
        }
    }
}

/// Every model the configuration binds.
#[derive(Debug, Default)]
pub struct ModelStore {
    pub handles: Vec<Arc<ModelHandle>>,
    pub watch: Option<Duration>,
}

/// The running agent's models. A configuration reload that changes `[[assets]]`
/// or `[models]` replaces the whole store (its models validated by the new
/// configuration's check); the watcher, the status report and the pipeline follow.
#[derive(Debug)]
pub struct LiveModels(Mutex<Arc<ModelStore>>);

impl LiveModels {
    pub fn new(store: Arc<ModelStore>) -> LiveModels {
        LiveModels(Mutex::new(store))
    }

    /// The store in service now.
    pub fn get(&self) -> Arc<ModelStore> {
        lock(&self.0).clone()
    }

    pub fn set(&self, store: Arc<ModelStore>) {
        *lock(&self.0) = store;
    }
}

/// Reloads changed models: every `store.watch` (files changed) and whenever
/// `reload` is notified (SIGHUP: every model, changed or not). Swaps and
/// rejections are logged and published as `model_swapped` / `model_rejected`
/// events. Holds only a weak sender, so it never keeps the sink queue open.
/// Follows the store in service: a reload may replace it, or change `watch`.
pub async fn watch_models(
    live: Arc<LiveModels>,
    reload: Arc<tokio::sync::Notify>,
    stop: tokio_util::sync::CancellationToken,
    events: tokio::sync::mpsc::WeakSender<crate::sink::SinkMsg>,
    agent_id: Arc<str>,
    clock: edge_driver_api::Clock,
) {
    let interval = |watch: Option<Duration>| {
        let every = watch.unwrap_or(Duration::from_secs(3600));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    };
    let mut watch = live.get().watch;
    let mut tick = interval(watch);
    loop {
        let force = tokio::select! {
            _ = stop.cancelled() => return,
            _ = reload.notified() => true,
            _ = tick.tick(), if watch.is_some() => false,
        };
        let store = live.get();
        if store.watch != watch {
            watch = store.watch;
            tick = interval(watch);
        }
        if force {
            tracing::info!(models = store.handles.len(), "reloading models");
        }
        for h in &store.handles {
            let handle = h.clone();
            let outcome = match tokio::task::spawn_blocking(move || handle.reload(force)).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!(error = %e, manifest = %h.manifest_path.display(), "model reload failed");
                    continue;
                }
            };
            let (kind, text, info) = match outcome {
                Reload::Unchanged => continue,
                Reload::Swapped { from, to } => {
                    tracing::info!(manifest = %h.manifest_path.display(), from = %from.version, to = %to.version, sha256 = %to.sha256, "new model version validated; swapping");
                    let text = format!(
                        "model {} {} replaces {} (sha256 {})",
                        to.name, to.version, from.version, to.sha256
                    );
                    ("model_swapped", text, to)
                }
                Reload::Rejected { kept, errors } => {
                    tracing::error!(manifest = %h.manifest_path.display(), kept = %kept.version, errors = ?errors, "new model version rejected; the old one keeps running");
                    let text = format!(
                        "new version of model {} rejected, {} keeps running: {}",
                        kept.name,
                        kept.version,
                        errors.join("; ")
                    );
                    ("model_rejected", text, kept)
                }
            };
            let info = ModelEventInfo {
                name: info.name.clone(),
                version: info.version,
                sha256: info.sha256,
                ..ModelEventInfo::default()
            };
            if let Some(tx) = events.upgrade() {
                let _ = tx.try_send(crate::events::model_event(
                    &agent_id,
                    &info.name,
                    kind,
                    &text,
                    clock.now(),
                    &info,
                ));
            }
        }
    }
}

/// Grades a model's score with the manifest's thresholds.
#[derive(Clone, Debug, PartialEq)]
pub struct Grader {
    above: bool,
    /// (severity, threshold), by increasing severity.
    levels: Vec<(Severity, f64)>,
    confirm: u32,
    level: Option<Severity>,
    streak: u32,
    /// The least severe level of the current streak towards a change.
    streak_level: Option<Severity>,
}

impl Grader {
    pub fn new(m: &ValidatedModel, confirm: u32) -> Grader {
        let a = &m.manifest.alert;
        let levels = [
            (Severity::Warning, a.warning),
            (Severity::PreFault, a.prefault),
            (Severity::Critical, a.critical),
        ]
        .into_iter()
        .filter_map(|(s, t)| t.map(|t| (s, t)))
        .collect();
        Grader {
            above: a.direction == Direction::Above,
            levels,
            confirm: confirm.max(1),
            level: None,
            streak: 0,
            streak_level: None,
        }
    }

    /// Follows a new version's thresholds, keeping the current level.
    pub fn retune(&mut self, m: &ValidatedModel) {
        let level = self.level;
        *self = Grader::new(m, self.confirm);
        self.level = level;
    }

    fn raw(&self, v: f64) -> Option<Severity> {
        let mut r = None;
        for &(s, t) in &self.levels {
            if (self.above && v >= t) || (!self.above && v <= t) {
                r = Some(s);
            }
        }
        r
    }

    /// The level after one more score.
    pub fn grade(&mut self, v: f64) -> Option<Severity> {
        let raw = self.raw(v);
        if raw == self.level {
            self.streak = 0;
            return self.level;
        }
        let rising = raw > self.level;
        let same_direction = self.streak > 0 && (self.streak_level > self.level) == rising;
        if same_direction {
            self.streak += 1;
            // The level the whole streak agrees on.
            self.streak_level = if rising {
                self.streak_level.min(raw)
            } else {
                self.streak_level.max(raw)
            };
        } else {
            self.streak = 1;
            self.streak_level = raw;
        }
        if self.streak >= self.confirm {
            self.level = self.streak_level;
            self.streak = 0;
        }
        self.level
    }

    /// The threshold of `level` (or of the lowest level when normal).
    pub fn limit(&self, level: Option<Severity>) -> f64 {
        level
            .and_then(|l| self.levels.iter().find(|(s, _)| *s == l))
            .or(self.levels.first())
            .map(|(_, t)| *t)
            .unwrap_or(f64::NAN)
    }
}

/// A change of an input's drift state.
#[derive(Clone, Debug, PartialEq)]
pub struct DriftChange {
    pub input: usize,
    pub drifted: bool,
    pub z: f64,
    pub recent_mean: f64,
}

/// Input drift against the training statistics.
#[derive(Clone, Debug)]
pub struct Drift {
    cfg: DriftCfg,
    alpha: f64,
    stats: Vec<FeatureStats>,
    mean: Vec<f64>,
    count: Vec<u32>,
    drifted: Vec<bool>,
}

impl Drift {
    pub fn new(m: &ValidatedModel, cfg: DriftCfg) -> Drift {
        let stats: Vec<FeatureStats> = m
            .manifest
            .input
            .drift_inputs()
            .iter()
            .map(|f| {
                m.manifest.training.get(f).copied().unwrap_or(FeatureStats {
                    mean: 0.0,
                    std: f64::INFINITY,
                    min: f64::NEG_INFINITY,
                    max: f64::INFINITY,
                })
            })
            .collect();
        let n = stats.len();
        Drift {
            cfg,
            alpha: 2.0 / (f64::from(cfg.rows.max(1)) + 1.0),
            stats,
            mean: vec![0.0; n],
            count: vec![0; n],
            drifted: vec![false; n],
        }
    }

    /// Inputs currently out of the training distribution.
    pub fn drifted(&self) -> impl Iterator<Item = usize> + '_ {
        self.drifted
            .iter()
            .enumerate()
            .filter(|(_, d)| **d)
            .map(|(i, _)| i)
    }

    pub fn stats(&self, input: usize) -> Option<&FeatureStats> {
        self.stats.get(input)
    }

    /// Takes one input row; changes of state are appended to `out`.
    pub fn update(&mut self, row: &[f32], out: &mut Vec<DriftChange>) {
        for (i, x) in row.iter().enumerate().take(self.stats.len()) {
            let x = f64::from(*x);
            if !x.is_finite() {
                continue;
            }
            let m = if self.count[i] == 0 {
                x
            } else {
                self.mean[i] + self.alpha * (x - self.mean[i])
            };
            self.mean[i] = m;
            self.count[i] = self.count[i].saturating_add(1);
            if self.count[i] < self.cfg.rows {
                continue;
            }
            let s = &self.stats[i];
            let z = (m - s.mean).abs() / s.std.max(1e-9 * s.mean.abs().max(1.0));
            let range = (s.max - s.min).max(0.0);
            let outside = m < s.min - 0.25 * range || m > s.max + 0.25 * range;
            let inside = m >= s.min && m <= s.max;
            let now = if self.drifted[i] {
                // Hysteresis: back only when well inside.
                !(z < 0.75 * self.cfg.z && inside)
            } else {
                z > self.cfg.z || outside
            };
            if now != self.drifted[i] {
                self.drifted[i] = now;
                out.push(DriftChange {
                    input: i,
                    drifted: now,
                    z,
                    recent_mean: m,
                });
            }
        }
    }
}

/// One model in the pipeline: its version in use, a session and the rows due.
#[derive(Debug)]
pub(crate) struct ModelRun {
    pub(crate) handle: Arc<ModelHandle>,
    pub(crate) generation: u64,
    pub(crate) model: Arc<ValidatedModel>,
    pub(crate) session: Option<Session>,
    pub(crate) row_len: usize,
    pub(crate) xs: Vec<f32>,
    /// (binding slot, time of the row).
    pub(crate) rows: Vec<(u32, Timestamp)>,
    pub(crate) result: Result<Vec<Output>, String>,
}

impl ModelRun {
    pub(crate) fn new(handle: Arc<ModelHandle>) -> ModelRun {
        let model = handle.current();
        let session = match model.model.session() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(model = %model.manifest.model.name, error = %e, "cannot start a model session");
                None
            }
        };
        ModelRun {
            generation: handle.generation(),
            row_len: model.manifest.input.row_len(),
            handle,
            model,
            session,
            xs: Vec::new(),
            rows: Vec::new(),
            result: Ok(Vec::new()),
        }
    }

    /// The scored value of row `k`.
    pub(crate) fn value(&self, k: usize) -> Result<f64, String> {
        let outs = self.result.as_ref().map_err(Clone::clone)?;
        let out = outs
            .get(self.model.alert_output)
            .ok_or_else(|| "the model returned too few outputs".to_string())?;
        let rows = self.rows.len().max(1);
        let v = match out {
            Output::F32 { data, .. } => {
                let width = data.len() / rows;
                data.get(k * width + self.model.alert_column)
                    .map(|v| f64::from(*v))
            }
            Output::I64 { data, .. } => {
                let width = data.len() / rows;
                data.get(k * width + self.model.alert_column)
                    .map(|v| *v as f64)
            }
        };
        let v = v.ok_or_else(|| "the model returned fewer rows than it was given".to_string())?;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(format!("it returned {v}"))
        }
    }
}

/// The rows of every model, run on a blocking thread.
#[derive(Debug)]
pub struct InferenceJob {
    pub(crate) runs: Vec<ModelRun>,
}

impl InferenceJob {
    /// Runs every model that has rows. A panic inside a model is caught and turned
    /// into an error for its rows (its session is then rebuilt).
    pub fn run(&mut self) {
        for r in self.runs.iter_mut().filter(|r| !r.rows.is_empty()) {
            let rows = r.rows.len();
            r.result = match r.session.as_mut() {
                None => Err("the model has no session".into()),
                Some(s) => {
                    let xs = &r.xs;
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.run(xs, rows)))
                    {
                        Ok(Ok(o)) => Ok(o),
                        Ok(Err(e)) => Err(format!("it failed: {e}")),
                        Err(p) => {
                            let what = p
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| p.downcast_ref::<String>().cloned())
                                .unwrap_or_else(|| "a panic".into());
                            r.session = r.model.model.session().ok();
                            Err(format!("it panicked: {what}"))
                        }
                    }
                }
            };
        }
    }
}

/// Per binding, in the pipeline.
#[derive(Debug)]
pub(crate) struct BindingSlot {
    pub(crate) run: usize,
    pub(crate) asset: Arc<str>,
    pub(crate) name: Arc<str>,
    pub(crate) roles: Vec<RoleWindow>,
    /// The asset's first window, globally (role windows are asset-relative).
    pub(crate) window_base: usize,
    /// Global indices of the windows the binding reads.
    pub(crate) ready: Vec<u32>,
    /// What a row copies (global window indices).
    pub(crate) inputs: BindingInputs,
    /// Names of [`BindingSlot::summary`]'s values.
    pub(crate) labels: Vec<Arc<str>>,
    /// The last row's drift inputs (see [`summarize`]).
    pub(crate) summary: Vec<f32>,
    /// Rows skipped because a window held fewer samples than a raw-window model
    /// reads.
    pub(crate) short_rows: u64,
    pub(crate) every_ns: u64,
    pub(crate) next_due_ns: u64,
    pub(crate) grader: Grader,
    pub(crate) drift: Drift,
    pub(crate) det: usize,
    pub(crate) health_det: usize,
    pub(crate) bad_streak: u32,
    pub(crate) quarantine_after: u32,
    pub(crate) quarantined: bool,
    pub(crate) drift_cfg: DriftCfg,
}

impl BindingSlot {
    /// Whether `other` (of another configuration) is the same binding with the same
    /// settings, so that a reload can carry its state over.
    pub(crate) fn same_settings(&self, other: &BindingSlot) -> bool {
        self.asset == other.asset
            && self.name == other.name
            && self.roles == other.roles
            && self.every_ns == other.every_ns
            && self.quarantine_after == other.quarantine_after
            && self.drift_cfg == other.drift_cfg
            && self.grader.confirm == other.grader.confirm
    }

    /// Carries `old`'s running state over (see [`BindingSlot::same_settings`]).
    pub(crate) fn continue_from(&mut self, old: &mut BindingSlot) {
        std::mem::swap(&mut self.grader, &mut old.grader);
        std::mem::swap(&mut self.drift, &mut old.drift);
        std::mem::swap(&mut self.summary, &mut old.summary);
        self.short_rows = old.short_rows;
        self.next_due_ns = old.next_due_ns;
        self.bad_streak = old.bad_streak;
        self.quarantined = old.quarantined;
    }
}

impl BindingSlot {
    /// Points the slot at a model version (inputs, labels, thresholds, drift).
    pub(crate) fn follow(&mut self, m: &ValidatedModel) -> Result<(), Vec<String>> {
        let inputs = resolve_inputs(&m.manifest.input, &self.roles)?;
        self.inputs = inputs.offset(self.window_base);
        self.ready = self.inputs.windows().iter().map(|w| *w as u32).collect();
        self.labels = m
            .manifest
            .input
            .drift_inputs()
            .iter()
            .map(|f| Arc::from(f.as_str()))
            .collect();
        self.summary = Vec::with_capacity(self.labels.len());
        self.grader.retune(m);
        self.drift = Drift::new(m, self.drift_cfg);
        Ok(())
    }

    pub(crate) fn alert_info(&self, m: &ValidatedModel) -> ModelAlertInfo {
        ModelAlertInfo {
            model: model_ref(m),
            signals: self.roles.iter().map(|r| r.signal.clone()).collect(),
            meaning: meaning_name(alert_meaning(m)),
            note: String::new(),
        }
    }

    pub(crate) fn event_info(&self, m: &ValidatedModel) -> ModelEventInfo {
        let r = model_ref(m);
        ModelEventInfo {
            name: r.name,
            version: r.version,
            sha256: r.sha256,
            asset: Some(self.asset.to_string()),
            binding: Some(self.name.to_string()),
            ..ModelEventInfo::default()
        }
    }
}

/// The evaluation a graded score becomes.
pub(crate) fn evaluation(
    grader: &Grader,
    level: Option<Severity>,
    v: f64,
    m: &ValidatedModel,
) -> Evaluation {
    Evaluation {
        level,
        score: v,
        limit: grader.limit(level),
        eta_s: (alert_meaning(m) == Meaning::RemainingTimeS).then_some(v.max(0.0)),
    }
}

#[cfg(all(test, feature = "onnx"))]
mod tests {
    use super::*;

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
    fn drift_is_flagged_once_and_cleared_with_hysteresis() {
        let m = load("bearing_rf");
        let n = m.manifest.input.features.len();
        let mut d = Drift::new(&m, DriftCfg { z: 4.0, rows: 5 });
        let means: Vec<f32> = m
            .manifest
            .input
            .features
            .iter()
            .map(|f| m.manifest.training[f].mean as f32)
            .collect();
        let mut out = Vec::new();
        for _ in 0..50 {
            d.update(&means, &mut out);
        }
        assert!(out.is_empty(), "training means are not drift: {out:?}");
        // Pressure (the last input) reads 10 bar where training saw 5.5..6.5.
        let mut far = means.clone();
        far[n - 1] = 10.0;
        for _ in 0..50 {
            d.update(&far, &mut out);
        }
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].drifted && out[0].input == n - 1);
        assert!(out[0].z > 4.0);
        out.clear();
        for _ in 0..100 {
            d.update(&means, &mut out);
        }
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(!out[0].drifted);
        // NaN inputs are skipped, not drift.
        out.clear();
        let nan = vec![f32::NAN; n];
        for _ in 0..20 {
            d.update(&nan, &mut out);
        }
        assert!(out.is_empty());
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
        let _ = std::fs::remove_dir_all(&dir);
    }
}
