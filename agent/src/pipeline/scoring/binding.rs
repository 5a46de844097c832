//! Bindings: how a model's inputs map to an asset's windows (`roles`), and a
//! binding's state in the pipeline (due rows, grading, drift, quarantine).

use std::sync::Arc;
use std::time::Duration;

use edge_models::Feature;
use edge_models::onnx::manifest::{InputSpec, ValidatedModel};

use super::drift::Drift;
use super::grading::Grader;
use super::store::{alert_meaning, meaning_name, model_ref};
use crate::alert::ModelAlertInfo;
use crate::delivery::wire::json::ModelEventInfo;

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
    /// A binding's inputs change drift state at most once per this much sample time.
    pub dwell: Duration,
}

/// `[[assets.models]]`: a model scoring one asset.
#[derive(Clone, Debug)]
pub struct ModelBindingCfg {
    /// Names its alerts (`detector`); `<name>.health` names its quarantine alerts.
    pub name: Arc<str>,
    /// Index into [`ModelStore::handles`](super::ModelStore::handles).
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
    /// Rows with a NaN or infinite input (warned about once).
    pub(crate) unusable_rows: u64,
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
        self.unusable_rows = old.unusable_rows;
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
