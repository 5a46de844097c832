//! The tract-backed model runtime (cargo feature `onnx`).

use std::fmt;
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::SimpleState;
use tract_onnx::tract_hir::infer::Factoid;
use tract_onnx::tract_hir::internal::DimLike;

use super::{ElemType, OnnxError, Output, Port, fuse, ops};

/// tract's errors carry a context chain; keep all of it.
fn chain(e: TractError) -> OnnxError {
    OnnxError(format!("{e:#}"))
}

/// The ONNX front end with our operators installed.
pub fn framework() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    ops::register(&mut onnx.op_register);
    onnx
}

fn elem_type(dt: DatumType) -> ElemType {
    match dt {
        DatumType::F32 => ElemType::F32,
        DatumType::F64 => ElemType::F64,
        DatumType::I64 => ElemType::I64,
        DatumType::I32 => ElemType::I32,
        _ => ElemType::Other,
    }
}

type Plan = Arc<TypedRunnableModel>;

/// A loaded, optimized ONNX model.
#[derive(Clone)]
pub struct OnnxModel {
    plan: Plan,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
    input_dt: DatumType,
    fused_trees: usize,
}

impl fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnnxModel")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish()
    }
}

fn port(name: String, fact: &TypedFact) -> Port {
    Port {
        name,
        elem: elem_type(fact.datum_type),
        shape: fact.shape.iter().map(|d| d.to_usize().ok()).collect(),
    }
}

impl OnnxModel {
    /// Parses, type-checks and optimizes a model. The first input must be a matrix
    /// `[batch, features]` (or a `[batch, ...]` tensor) of numbers. Per-tree chains
    /// summed into one score (skl2onnx's isolation forests) are fused into one tree
    /// ensemble first (see [`fuse`]).
    pub fn load(bytes: &[u8]) -> Result<OnnxModel, OnnxError> {
        OnnxModel::load_with(bytes, true)
    }

    /// [`OnnxModel::load`], with tree-sum fusion on or off (off only to compare).
    pub fn load_with(bytes: &[u8], fuse_trees: bool) -> Result<OnnxModel, OnnxError> {
        let onnx = framework();
        let mut proto = onnx
            .proto_model_for_read(&mut std::io::Cursor::new(bytes))
            .map_err(chain)?;
        let fused_trees = if fuse_trees {
            fuse::fuse_tree_sums(&onnx, &mut proto)
        } else {
            0
        };
        let mut model = onnx.model_for_proto_model(&proto).map_err(chain)?;
        if model.input_outlets().map_err(chain)?.len() != 1 {
            return Err(OnnxError(
                "the model must have exactly one input (the feature vector or window)".into(),
            ));
        }
        // Let the batch axis be symbolic whatever the file says.
        let fact = model.input_fact(0).map_err(chain)?.clone();
        let dt = fact.datum_type.concretize().unwrap_or(DatumType::F32);
        let rank = fact.shape.rank().concretize().map(|r| r as usize);
        let dims: Vec<Option<usize>> = match rank {
            Some(r) => (0..r)
                .map(|i| {
                    fact.shape
                        .dim(i)
                        .and_then(|d| d.concretize())
                        .and_then(|d| d.to_usize().ok())
                })
                .collect(),
            None => {
                return Err(OnnxError(
                    "the model's input has no declared rank; export it with a shape like [None, n_features]".into(),
                ));
            }
        };
        if dims.len() < 2 {
            return Err(OnnxError(format!(
                "the model's input has rank {}; expected [batch, features] or [batch, window, ...]",
                dims.len()
            )));
        }
        let batch = model.symbols.sym("batch");
        let mut shape: TVec<TDim> = tvec![batch.into()];
        for (i, d) in dims.iter().enumerate().skip(1) {
            match d {
                Some(d) => shape.push(d.to_dim()),
                None => {
                    return Err(OnnxError(format!(
                        "input axis {i} has no fixed size; only the batch axis may be dynamic"
                    )));
                }
            }
        }
        model
            .set_input_fact(0, InferenceFact::dt_shape(dt, shape))
            .map_err(chain)?;
        let typed = model.into_optimized().map_err(chain)?;
        let inputs = typed
            .input_outlets()
            .map_err(chain)?
            .iter()
            .map(|o| {
                let f = typed.outlet_fact(*o)?;
                Ok(port(typed.node(o.node).name.clone(), f))
            })
            .collect::<TractResult<Vec<_>>>()
            .map_err(chain)?;
        let outputs = typed
            .output_outlets()
            .map_err(chain)?
            .iter()
            .map(|o| {
                let f = typed.outlet_fact(*o)?;
                let name = typed
                    .outlet_label(*o)
                    .map(str::to_string)
                    .unwrap_or_else(|| typed.node(o.node).name.clone());
                Ok(port(name, f))
            })
            .collect::<TractResult<Vec<_>>>()
            .map_err(chain)?;
        let plan = typed.into_runnable().map_err(chain)?;
        Ok(OnnxModel {
            plan,
            inputs,
            outputs,
            input_dt: dt,
            fused_trees,
        })
    }

    pub fn inputs(&self) -> &[Port] {
        &self.inputs
    }

    /// Nodes in the optimized plan (what tract runs per call).
    pub fn plan_nodes(&self) -> usize {
        self.plan.model().nodes().len()
    }

    /// Trees folded into one ensemble at load (0 when nothing was fused).
    pub fn fused_trees(&self) -> usize {
        self.fused_trees
    }

    pub fn outputs(&self) -> &[Port] {
        &self.outputs
    }

    /// Values per row of the input (product of the non-batch axes).
    pub fn row_len(&self) -> usize {
        self.inputs[0].shape.iter().skip(1).flatten().product()
    }

    /// A session for repeated runs.
    pub fn session(&self) -> Result<Session, OnnxError> {
        Ok(Session {
            state: self.plan.spawn().map_err(chain)?,
            model: self.clone(),
        })
    }
}

/// Runs one model repeatedly, reusing tract's state.
pub struct Session {
    model: OnnxModel,
    state: SimpleState<TypedFact, Box<dyn TypedOp>>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("model", &self.model)
            .finish()
    }
}

impl Session {
    pub fn model(&self) -> &OnnxModel {
        &self.model
    }

    /// Runs `rows` rows of `x` (row-major, [`OnnxModel::row_len`] values each).
    pub fn run(&mut self, x: &[f32], rows: usize) -> Result<Vec<Output>, OnnxError> {
        let m = &self.model;
        let len = m.row_len();
        if x.len() != rows * len {
            return Err(OnnxError(format!(
                "{} values for {rows} rows of {len}",
                x.len()
            )));
        }
        let mut shape = vec![rows];
        shape.extend(m.inputs[0].shape.iter().skip(1).flatten());
        let t = Tensor::from_shape(&shape, x).map_err(chain)?;
        let t = if m.input_dt == DatumType::F32 {
            t
        } else {
            t.cast_to_dt(m.input_dt).map_err(chain)?.into_owned()
        };
        let out = self.state.run(tvec!(t.into_tvalue())).map_err(chain)?;
        out.into_iter()
            .map(|v| {
                let shape = v.shape().to_vec();
                let plain = v.try_as_plain_ram().map_err(chain)?;
                match v.datum_type() {
                    DatumType::I64 => Ok(Output::I64 {
                        shape,
                        data: plain.as_slice::<i64>().map_err(chain)?.to_vec(),
                    }),
                    _ => {
                        let c = v.cast_to::<f32>().map_err(chain)?;
                        let p = c.try_as_plain_ram().map_err(chain)?;
                        Ok(Output::F32 {
                            shape,
                            data: p.as_slice::<f32>().map_err(chain)?.to_vec(),
                        })
                    }
                }
            })
            .collect()
    }
}
