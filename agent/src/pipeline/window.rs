//! A window of one signal of an asset, as the pipeline holds it: the samples, the
//! features of the latest completed window, and the detectors that read them.

use std::sync::Arc;

use edge_models::{FeatureConfig, FeatureExtractor, FeatureValues, Frame, Window, WindowSpec};

pub(crate) struct WindowSlot {
    pub(crate) asset: Arc<str>,
    pub(crate) signal: Arc<str>,
    /// How the window is cut and what it computes: a reload keeps the window's
    /// state only when both are unchanged.
    pub(crate) spec: WindowSpec,
    pub(crate) feature_cfg: FeatureConfig,
    pub(crate) band_names: Vec<String>,
    /// At least one window completed (features are meaningful).
    pub(crate) seen: bool,
    pub(crate) window: Window,
    pub(crate) frame: Frame,
    pub(crate) extractor: FeatureExtractor,
    pub(crate) features: FeatureValues,
    /// Detectors evaluated when this window completes: `detectors[first..end]`.
    pub(crate) det_first: usize,
    pub(crate) det_end: usize,
    /// The asset's regime gate, if it has one (an index into the processor's gates).
    pub(crate) gate: Option<usize>,
}
