//! Model manifests: the TOML file beside each `.onnx` that says what the model
//! reads, what its outputs mean, when it should alert and what its training data
//! looked like — and [`ValidatedModel::load`], which checks a manifest against its
//! model file (hash, ports, shapes, a dry run on the reference inputs) before
//! anything uses it. Every mismatch is reported, not just the first.
//!
//! ```toml
//! [model]
//! name = "bearing_rf"
//! version = "1.0.0"
//! file = "bearing_rf.onnx"
//! sha256 = "…"
//!
//! [input]
//! name = "X"
//! dtype = "float32"
//! features = ["vibration.rms", "temperature.mean"]   # <role>.<feature>, in order
//! # or, for a model on raw samples (input shape [batch, signals, samples]):
//! # window = { signals = ["vibration"], samples = 256 }
//!
//! [[outputs]]
//! name = "probabilities"
//! meaning = "fault_probability"   # | anomaly_score | predicted_value | remaining_time_s | label | other
//! column = 1
//!
//! [alert]
//! output = "probabilities"
//! direction = "above"             # or "below" (anomaly scores)
//! warning = 0.5
//! prefault = 0.8                  # and/or critical
//!
//! [reference]
//! file = "reference.json"         # inputs + expected outputs for the dry run
//!
//! [training."vibration.rms"]
//! mean = 1.19
//! std = 0.74
//! min = 0.74
//! max = 3.05
//! ```
//!
//! A raw-window model's training statistics describe its windows rather than single
//! samples: `[training."<role>.mean"]` and `[training."<role>.std"]`, the spread of
//! each training window's mean and standard deviation, per signal. Drift is judged on
//! those two, which is what moves when a sensor is offset, rescaled or swapped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::OnnxModel;
use super::dry_run::{DryRun, dry_run};

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub model: ModelInfo,
    pub input: InputSpec,
    pub outputs: Vec<OutputSpec>,
    pub alert: AlertSpec,
    #[serde(default)]
    pub reference: Option<ReferenceSpec>,
    #[serde(default)]
    pub training: BTreeMap<String, FeatureStats>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub file: String,
    pub sha256: String,
    #[serde(default)]
    pub trained_with: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    #[serde(default = "float32")]
    pub dtype: String,
    /// `<role>.<feature>` per column (a model on window features).
    #[serde(default)]
    pub features: Vec<String>,
    /// Or: the latest samples of some signals (a model on raw windows).
    #[serde(default)]
    pub window: Option<RawWindowSpec>,
}

/// `[input] window`: the model reads the last `samples` samples of each signal's
/// window, as a `[batch, signals, samples]` tensor (signals in this order).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindowSpec {
    /// Role names, bound to asset signals like the roles of `features`.
    pub signals: Vec<String>,
    pub samples: usize,
}

/// The most samples per signal a raw-window model may read.
pub const MAX_WINDOW_SAMPLES: usize = 65_536;

impl InputSpec {
    /// Values per input row.
    pub fn row_len(&self) -> usize {
        match &self.window {
            Some(w) => w.signals.len() * w.samples,
            None => self.features.len(),
        }
    }

    /// What drift is judged on, and what an alert's snapshot shows: the features
    /// themselves, or each raw-window signal's window mean and standard deviation.
    pub fn drift_inputs(&self) -> Vec<String> {
        match &self.window {
            Some(w) => w
                .signals
                .iter()
                .flat_map(|r| [format!("{r}.mean"), format!("{r}.std")])
                .collect(),
            None => self.features.clone(),
        }
    }
}

fn float32() -> String {
    "float32".into()
}

/// What an output means (drives how it becomes an alert and how it is shown).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Meaning {
    FaultProbability,
    AnomalyScore,
    PredictedValue,
    RemainingTimeS,
    Label,
    Other,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub name: String,
    pub meaning: Meaning,
    /// The column to read when the output has one column per class.
    #[serde(default)]
    pub column: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Above,
    Below,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSpec {
    pub output: String,
    pub direction: Direction,
    #[serde(default)]
    pub warning: Option<f64>,
    #[serde(default)]
    pub prefault: Option<f64>,
    #[serde(default)]
    pub critical: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceSpec {
    pub file: String,
    /// Allowed absolute difference (relative above 1) in the dry run.
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
}

fn default_tolerance() -> f64 {
    1e-4
}

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureStats {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

/// A manifest problem, with the file it is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    pub file: PathBuf,
    pub message: String,
    /// The model file's hash is not the manifest's (a new file, or the manifest of
    /// another version): the one problem that updating `sha256` can fix.
    pub hash_mismatch: bool,
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

impl Manifest {
    /// Parses a manifest. Syntax and unknown fields are reported with their line and
    /// column.
    pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
        toml::from_str(text).map_err(|e| ManifestError {
            file: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
            hash_mismatch: false,
        })
    }

    /// Checks that need no model file: thresholds, statistics, names.
    pub fn check(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if self.model.name.trim().is_empty() {
            errs.push("[model] name is empty".into());
        }
        if self.model.sha256.len() != 64
            || !self.model.sha256.bytes().all(|b| b.is_ascii_hexdigit())
        {
            errs.push(format!(
                "[model] sha256 {:?} is not 64 hex digits; put `sha256sum {}` there",
                self.model.sha256, self.model.file
            ));
        }
        if self.input.dtype != "float32" {
            errs.push(format!(
                "[input] dtype {:?}: only float32 inputs are supported",
                self.input.dtype
            ));
        }
        if self.input.window.is_some() && !self.input.features.is_empty() {
            errs.push(
                "[input] has both `features` and `window`: a model reads either window features or raw samples; keep the one it was trained on".into(),
            );
        }
        match &self.input.window {
            Some(w) => {
                if w.signals.is_empty() {
                    errs.push("[input] window.signals is empty: name the roles whose samples the model reads, e.g. [\"vibration\"]".into());
                }
                let mut seen = std::collections::BTreeSet::new();
                for r in &w.signals {
                    if !seen.insert(r) {
                        errs.push(format!("[input] window.signals lists {r:?} twice"));
                    }
                    if r.is_empty() || r.contains('.') {
                        errs.push(format!(
                            "[input] window.signals entry {r:?} must be a role name without dots, e.g. \"vibration\""
                        ));
                    }
                }
                if w.samples == 0 || w.samples > MAX_WINDOW_SAMPLES {
                    errs.push(format!(
                        "[input] window.samples = {} is out of range: 1 to {MAX_WINDOW_SAMPLES}",
                        w.samples
                    ));
                }
            }
            None if self.input.features.is_empty() => errs.push(
                "[input] needs `features = [\"<role>.<feature>\", ...]` or `window = { signals = [...], samples = N }`".into(),
            ),
            None => {}
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.input.features {
            if !seen.insert(f) {
                errs.push(format!("[input] feature {f:?} is listed twice"));
            }
            if f.split_once('.')
                .is_none_or(|(r, x)| r.is_empty() || x.is_empty())
            {
                errs.push(format!(
                    "[input] feature {f:?} must be <role>.<feature>, e.g. \"vibration.rms\""
                ));
            }
        }
        let monitored = self.input.drift_inputs();
        for f in &monitored {
            match self.training.get(f) {
                None => errs.push(format!(
                    "[training.\"{f}\"] is missing: drift detection needs mean, std, min and max of {}",
                    if self.input.window.is_some() {
                        "each window signal's window mean and window std"
                    } else {
                        "every input feature"
                    }
                )),
                Some(s) => {
                    let sane = s.std >= 0.0 && s.mean.is_finite() && s.min <= s.max;
                    if !sane {
                        errs.push(format!(
                            "[training.\"{f}\"] needs finite values with std >= 0 and min <= max"
                        ));
                    }
                }
            }
        }
        for k in self.training.keys() {
            if !monitored.contains(k) {
                errs.push(format!(
                    "[training.\"{k}\"] names {} that is not an input",
                    if self.input.window.is_some() {
                        "a statistic (<role>.mean or <role>.std of a window signal)"
                    } else {
                        "a feature"
                    }
                ));
            }
        }
        if !self.outputs.iter().any(|o| o.name == self.alert.output) {
            errs.push(format!(
                "[alert] output {:?} is not one of the [[outputs]]",
                self.alert.output
            ));
        }
        let levels: Vec<(&str, f64)> = [
            ("warning", self.alert.warning),
            ("prefault", self.alert.prefault),
            ("critical", self.alert.critical),
        ]
        .into_iter()
        .filter_map(|(n, v)| v.map(|v| (n, v)))
        .collect();
        if levels.is_empty() {
            errs.push("[alert] sets no threshold: give warning, prefault and/or critical".into());
        }
        for w in levels.windows(2) {
            let ordered = match self.alert.direction {
                Direction::Above => w[0].1 < w[1].1,
                Direction::Below => w[0].1 > w[1].1,
            };
            if !ordered {
                errs.push(format!(
                    "[alert] {} = {} and {} = {} are in the wrong order for direction {:?}",
                    w[0].0, w[0].1, w[1].0, w[1].1, self.alert.direction
                ));
            }
        }
        if levels.iter().any(|(_, v)| !v.is_finite()) {
            errs.push("[alert] thresholds must be finite".into());
        }
        errs
    }
}

/// SHA-256 of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A model that passed every check: the manifest, the loaded model and its hash.
#[derive(Clone, Debug)]
pub struct ValidatedModel {
    pub manifest: Manifest,
    pub model: OnnxModel,
    pub sha256: String,
    pub manifest_path: PathBuf,
    /// Index of the alert output among the model's outputs, and the column read.
    pub alert_output: usize,
    pub alert_column: usize,
    /// The dry run on the reference (`None` without `[reference]`).
    pub dry_run: Option<DryRun>,
    /// What passed but deserves a look (`check-config` prints these).
    pub warnings: Vec<String>,
}

impl ValidatedModel {
    /// Loads a manifest and its model, and checks everything: the manifest itself,
    /// the file's hash, the input name and width, every declared output, and (when
    /// the manifest has a reference) a dry run that must reproduce the reference
    /// outputs. Returns every problem found.
    pub fn load(manifest_path: &Path) -> Result<ValidatedModel, Vec<ManifestError>> {
        let fail = |m: String| ManifestError {
            file: manifest_path.to_path_buf(),
            message: m,
            hash_mismatch: false,
        };
        let text = std::fs::read_to_string(manifest_path)
            .map_err(|e| vec![fail(format!("cannot read the manifest: {e}"))])?;
        let manifest = Manifest::parse(manifest_path, &text).map_err(|e| vec![e])?;
        let mut errs: Vec<String> = manifest.check();
        let dir = manifest_path.parent().unwrap_or(Path::new("."));
        let model_path = dir.join(&manifest.model.file);
        let bytes = std::fs::read(&model_path).map_err(|e| {
            vec![fail(format!(
                "cannot read the model file {}: {e}",
                model_path.display()
            ))]
        })?;
        let sha = sha256_hex(&bytes);
        if !sha.eq_ignore_ascii_case(&manifest.model.sha256) {
            let mismatch = ManifestError {
                hash_mismatch: true,
                ..fail(format!(
                    "{} has SHA-256 {sha} but the manifest says {}: the file changed, or the manifest belongs to another version",
                    manifest.model.file, manifest.model.sha256
                ))
            };
            return Err(errs.into_iter().map(fail).chain([mismatch]).collect());
        }
        let model = match OnnxModel::load(&bytes) {
            Ok(m) => m,
            Err(e) => {
                errs.push(format!("{} does not load: {e}", manifest.model.file));
                return Err(errs.into_iter().map(fail).collect());
            }
        };
        let input = &model.inputs()[0];
        if input.name != manifest.input.name {
            errs.push(format!(
                "[input] name {:?}, but the model's input is {:?}",
                manifest.input.name, input.name
            ));
        }
        match &manifest.input.window {
            None if model.row_len() != manifest.input.features.len() => errs.push(format!(
                "[input] lists {} features but the model takes {} values per row",
                manifest.input.features.len(),
                model.row_len()
            )),
            None => {}
            Some(w) => {
                let dims: Vec<Option<usize>> = input.shape.iter().skip(1).copied().collect();
                if dims != [Some(w.signals.len()), Some(w.samples)] {
                    let shown: Vec<String> = dims
                        .iter()
                        .map(|d| d.map_or("?".into(), |d| d.to_string()))
                        .collect();
                    errs.push(format!(
                        "[input] window reads {} signal(s) of {} samples, a [batch, {}, {}] input, but the model's input is [batch, {}]",
                        w.signals.len(),
                        w.samples,
                        w.signals.len(),
                        w.samples,
                        shown.join(", ")
                    ));
                }
            }
        }
        for o in &manifest.outputs {
            if !model.outputs().iter().any(|p| p.name == o.name) {
                let names: Vec<&str> = model.outputs().iter().map(|p| p.name.as_str()).collect();
                errs.push(format!(
                    "[[outputs]] {:?} is not an output of the model (it has {})",
                    o.name,
                    names.join(", ")
                ));
            }
        }
        let alert_output = model
            .outputs()
            .iter()
            .position(|p| p.name == manifest.alert.output);
        let spec = manifest
            .outputs
            .iter()
            .find(|o| o.name == manifest.alert.output);
        let alert_column = spec.and_then(|s| s.column).unwrap_or(0);
        if let Some(i) = alert_output {
            let width: usize = model.outputs()[i].shape.iter().skip(1).flatten().product();
            if alert_column >= width.max(1) {
                errs.push(format!(
                    "[[outputs]] {:?} column {alert_column} is out of range: the output has {width} column(s)",
                    manifest.alert.output
                ));
            }
        }
        let mut dry = None;
        if errs.is_empty()
            && let Some(r) = &manifest.reference
        {
            let run = dry_run(&model, &manifest.outputs, &dir.join(&r.file), r.tolerance);
            errs.extend(run.errors.iter().cloned());
            dry = Some(run);
        }
        let mut warnings = Vec::new();
        if manifest.reference.is_none() {
            warnings.push(
                "no [reference]: nothing checks that the file computes what it was trained to; add `[reference] file = \"reference.json\"` with inputs and the expected outputs (models/train writes one)"
                    .to_string(),
            );
        }
        match (errs.is_empty(), alert_output) {
            (true, Some(alert_output)) => Ok(ValidatedModel {
                manifest,
                model,
                sha256: sha,
                manifest_path: manifest_path.to_path_buf(),
                alert_output,
                alert_column,
                dry_run: dry,
                warnings,
            }),
            _ => Err(errs.into_iter().map(fail).collect()),
        }
    }
}
