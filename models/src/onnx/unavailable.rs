//! A build without the ONNX runtime (cargo feature `onnx` off): manifests still
//! parse and check, but no model loads. [`OnnxModel::load`] says so, and since no
//! [`OnnxModel`] can exist, neither can a [`Session`]: both types are uninhabited,
//! so every method past loading is statically unreachable.

use std::convert::Infallible;

use super::{OnnxError, Output, Port};

/// Why nothing loads in this build.
pub const NO_RUNTIME: &str = "this build has no ONNX runtime: rebuild edge-agent with the `onnx` cargo feature (on by default)";

/// A loaded model; never constructed without the `onnx` feature.
#[derive(Clone, Debug)]
pub struct OnnxModel(Infallible);

impl OnnxModel {
    pub fn load(_bytes: &[u8]) -> Result<OnnxModel, OnnxError> {
        Err(OnnxError(NO_RUNTIME.into()))
    }

    pub fn load_with(_bytes: &[u8], _fuse_trees: bool) -> Result<OnnxModel, OnnxError> {
        Err(OnnxError(NO_RUNTIME.into()))
    }

    pub fn inputs(&self) -> &[Port] {
        match self.0 {}
    }

    pub fn outputs(&self) -> &[Port] {
        match self.0 {}
    }

    pub fn row_len(&self) -> usize {
        match self.0 {}
    }

    pub fn plan_nodes(&self) -> usize {
        match self.0 {}
    }

    pub fn fused_trees(&self) -> usize {
        match self.0 {}
    }

    pub fn session(&self) -> Result<Session, OnnxError> {
        match self.0 {}
    }
}

/// A model's run state; never constructed without the `onnx` feature.
#[derive(Debug)]
pub struct Session(Infallible);

impl Session {
    pub fn model(&self) -> &OnnxModel {
        match self.0 {}
    }

    pub fn run(&mut self, _x: &[f32], _rows: usize) -> Result<Vec<Output>, OnnxError> {
        match self.0 {}
    }
}
