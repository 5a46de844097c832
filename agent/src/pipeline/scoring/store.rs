//! Model versions: one [`ModelHandle`] per model file, swapped while the agent runs
//! after a complete validation; the [`ModelStore`] of a configuration and the
//! watcher that reloads changed files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use edge_models::onnx::manifest::{Meaning, ValidatedModel};

use super::binding::{RoleWindow, resolve_inputs};
use crate::alert::ModelRef;
use crate::delivery::wire::json::ModelEventInfo;

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

pub(crate) fn alert_meaning(m: &ValidatedModel) -> Meaning {
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

/// Version events kept per model (older ones are dropped).
pub const VERSION_EVENTS: usize = 16;

/// One event in a model's version history: `loaded` (at start), `swapped` (to
/// `version`), `rejected` (`version` was offered and refused: `detail` says why;
/// the one in service stays).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VersionEvent {
    /// Wall-clock time, Unix milliseconds.
    pub at_ms: i64,
    pub event: String,
    pub version: String,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl VersionEvent {
    fn now(event: &str, m: Option<&ValidatedModel>, detail: Option<String>) -> VersionEvent {
        let at_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        VersionEvent {
            at_ms,
            event: event.into(),
            version: m.map_or_else(String::new, |m| m.manifest.model.version.clone()),
            sha256: m.map_or_else(String::new, |m| m.sha256.to_ascii_lowercase()),
            detail,
        }
    }
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
    /// The last [`VERSION_EVENTS`] loads, swaps and rejections, oldest first.
    history: Mutex<std::collections::VecDeque<VersionEvent>>,
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
        let loaded = VersionEvent::now("loaded", Some(&model), None);
        ModelHandle {
            manifest_path,
            current: Mutex::new(Arc::new(model)),
            generation: AtomicU64::new(0),
            bindings,
            seen: Mutex::new(seen),
            swaps: AtomicU64::new(0),
            rejections: AtomicU64::new(0),
            last_rejection: Mutex::new(None),
            history: Mutex::new([loaded].into()),
        }
    }

    /// The version history, oldest first.
    pub fn history(&self) -> Vec<VersionEvent> {
        lock(&self.history).iter().cloned().collect()
    }

    fn note(&self, e: VersionEvent) {
        let mut h = lock(&self.history);
        if h.len() == VERSION_EVENTS {
            h.pop_front();
        }
        h.push_back(e);
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

    /// Loads the version at `manifest` (not in service) and checks it completely,
    /// against this model's bindings too: what `reload` would do before a swap.
    /// Blocking. Every problem found, if any.
    pub fn dry_run(&self, manifest: &std::path::Path) -> Result<ValidatedModel, Vec<String>> {
        let loaded = std::panic::catch_unwind(|| ValidatedModel::load(manifest));
        let new = match loaded {
            Ok(Ok(m)) => m,
            Ok(Err(errs)) => return Err(errs.into_iter().map(|e| e.message).collect()),
            Err(p) => {
                let what = edge_driver_api::panic_message(&*p);
                return Err(vec![format!("validating it panicked: {what}")]);
            }
        };
        let errs: Vec<String> = self
            .bindings
            .iter()
            .filter_map(|roles| resolve_inputs(&new.manifest.input, roles).err())
            .flatten()
            .collect();
        if errs.is_empty() { Ok(new) } else { Err(errs) }
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
        let reject = |errors: Vec<String>, offered: Option<&ValidatedModel>| {
            self.rejections.fetch_add(1, Ordering::Relaxed);
            let why = errors.join("; ");
            self.note(VersionEvent::now("rejected", offered, Some(why.clone())));
            *lock(&self.last_rejection) = Some(why);
            Reload::Rejected {
                kept: model_ref(&cur),
                errors,
            }
        };
        // The runtime contains tract's panics; this catches any other, so a bad
        // version is always a counted rejection and the watcher keeps watching.
        let loaded = std::panic::catch_unwind(|| ValidatedModel::load(&self.manifest_path));
        let new = match loaded {
            Ok(Ok(m)) => m,
            Ok(Err(errs)) => return reject(errs.into_iter().map(|e| e.message).collect(), None),
            Err(p) => {
                let what = edge_driver_api::panic_message(&*p);
                return reject(vec![format!("validating it panicked: {what}")], None);
            }
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
            return reject(errs, Some(&new));
        }
        let to = model_ref(&new);
        self.note(VersionEvent::now("swapped", Some(&new), None));
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
    events: tokio::sync::mpsc::WeakSender<crate::delivery::sink::SinkMsg>,
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
                let _ = tx.try_send(crate::delivery::events::model_event(
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
