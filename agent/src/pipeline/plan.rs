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
}

/// An asset: the signals of one machine, windowed together, and its detectors.
#[derive(Clone, Debug)]
pub struct AssetCfg {
    pub name: Arc<str>,
    pub windows: Vec<WindowCfg>,
    pub detectors: Vec<DetectorCfg>,
    /// Fault-prediction models scoring this asset.
    pub models: Vec<ModelBindingCfg>,
}
