//! ONNX models through tract, with the ONNX-ML operators scikit-learn exports need.
//!
//! [`OnnxModel::load`] parses a model with our operators registered ([`ops`]),
//! optimizes it once and keeps the runnable plan. The batch axis stays symbolic,
//! so one loaded model scores one row or a batch of rows (several assets due at
//! once) with the same plan; a recurrent graph runs with batch 1, row by row, each
//! row on a fresh state. A [`Session`] keeps tract's per-run buffers between calls.
//! A panic inside tract, loading or running, is returned as an error.

pub mod dry_run;
#[cfg(feature = "onnx")]
pub mod fuse;
pub mod manifest;
#[cfg(feature = "onnx")]
pub mod ops;
#[cfg(feature = "onnx")]
mod runtime;
pub mod trees;
#[cfg(not(feature = "onnx"))]
mod unavailable;

#[cfg(feature = "onnx")]
pub use runtime::{OnnxModel, Session, framework};
#[cfg(not(feature = "onnx"))]
pub use unavailable::{OnnxModel, Session};

use std::fmt;

/// A model that failed to load or run, with the reason.
#[derive(Debug)]
pub struct OnnxError(pub String);

impl fmt::Display for OnnxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OnnxError {}

/// Element type of a model input or output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElemType {
    F32,
    F64,
    I64,
    I32,
    Other,
}

impl ElemType {
    pub fn name(self) -> &'static str {
        match self {
            ElemType::F32 => "float32",
            ElemType::F64 => "float64",
            ElemType::I64 => "int64",
            ElemType::I32 => "int32",
            ElemType::Other => "other",
        }
    }
}

/// A named input or output: its type and shape (`None` for the symbolic batch axis).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub elem: ElemType,
    pub shape: Vec<Option<usize>>,
}

/// One output of a run, flattened row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    F32 { shape: Vec<usize>, data: Vec<f32> },
    I64 { shape: Vec<usize>, data: Vec<i64> },
}

impl Output {
    pub fn shape(&self) -> &[usize] {
        match self {
            Output::F32 { shape, .. } | Output::I64 { shape, .. } => shape,
        }
    }

    /// Appends the rows of `next` (same type, same shape after the batch axis).
    pub fn append(&mut self, next: Output) -> Result<(), OnnxError> {
        let (shape, more) = match (self, next) {
            (Output::F32 { shape, data }, Output::F32 { shape: s, data: d }) => {
                data.extend(d);
                (shape, s)
            }
            (Output::I64 { shape, data }, Output::I64 { shape: s, data: d }) => {
                data.extend(d);
                (shape, s)
            }
            _ => return Err(OnnxError("an output changed its type between runs".into())),
        };
        if shape.is_empty() || shape.len() != more.len() || shape[1..] != more[1..] {
            return Err(OnnxError("an output changed its shape between runs".into()));
        }
        shape[0] += more[0];
        Ok(())
    }

    /// The values as `f64` (labels included).
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            Output::F32 { data, .. } => data.iter().map(|v| *v as f64).collect(),
            Output::I64 { data, .. } => data.iter().map(|v| *v as f64).collect(),
        }
    }
}
