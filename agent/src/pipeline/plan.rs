//! What a configuration asks of the pipeline: plain data, built by `config` and
//! read by the [`Processor`](super::Processor) when it is built.

use std::sync::Arc;

use edge_driver_api::SignalId;
use edge_models::{DetectorSpec, Feature, FeatureConfig, WindowSpec};

use super::scoring::ModelBindingCfg;

/// A window over one signal of an asset.
#[derive(Clone, Debug)]
pub struct WindowCfg {
    pub signal: SignalId,
    pub spec: WindowSpec,
    pub features: FeatureConfig,
}

/// A detector of an asset.
#[derive(Clone, Debug)]
pub struct DetectorCfg {
    pub name: Arc<str>,
    /// Index into the asset's windows.
    pub window: usize,
    pub feature: Feature,
    pub feature_name: String,
    pub spec: DetectorSpec,
    /// Index into the asset's windows of the signal that predicts this one (residual
    /// detectors: its window's same feature).
    pub predictor: Option<usize>,
    /// Judges while the asset's machine is stopped or settling too (`judge =
    /// "always"`: sensor health, e.g. a stuck sensor, is not about the machine).
    pub always: bool,
}

/// When an asset's machine is running, from one of its windows' mean: while it is
/// stopped, and for `settle_s` after it starts or its load steps, the asset's
/// detectors and models do not judge (they relearn normal at each change).
#[derive(Clone, Debug, PartialEq)]
pub struct RunningCfg {
    /// Index into the asset's windows.
    pub window: usize,
    /// Running while the window's mean is above this.
    pub above: f64,
    pub settle_s: f64,
    /// A change of the mean by more than this fraction from one window to the next
    /// is a load step.
    pub step: f64,
}

/// An asset: the signals of one machine, windowed together, and its detectors.
#[derive(Clone, Debug)]
pub struct AssetCfg {
    pub name: Arc<str>,
    pub windows: Vec<WindowCfg>,
    pub detectors: Vec<DetectorCfg>,
    /// Fault-prediction models scoring this asset.
    pub models: Vec<ModelBindingCfg>,
    /// The machine's operating regime (none: always judged).
    pub running: Option<RunningCfg>,
}
