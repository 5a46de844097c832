//! Pure compute for edge-agent: windows over signals, window features, and the
//! built-in fault detectors. No I/O, no async, no allocation in steady state.
//!
//! Flow per signal: samples → [`Window`] → [`Frame`] → [`FeatureExtractor`] →
//! [`FeatureValues`] → [`Detector`]s → [`Evaluation`]s (turned into alerts by the agent).

pub mod detect;
pub mod features;
pub mod window;

pub use detect::{
    Curve, Detector, DetectorSpec, Direction, Evaluation, Fit, FlatLineSpec, Forecast,
    RateOfChangeSpec, ResidualSpec, Severity, ThresholdSpec, TrendSpec, ZScoreSpec,
};
pub use features::{Band, Feature, FeatureConfig, FeatureExtractor, FeatureValues, MAX_BANDS};
pub use window::{Frame, Window, WindowSpec};
#[cfg(feature = "manifest")]
pub mod onnx;
