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
    /// The graph has a recurrent operator (see [`is_recurrent`]): loaded with a
    /// batch of 1 and run row by row, each row on a fresh state.
    recurrent: bool,
}

/// Recurrent operators. tract builds their initial state from the batch size
/// when the file leaves `initial_h`/`initial_c` out (a common export), and it
/// panics (`UndeterminedSymbol("batch")`) when that size is a symbol; and the
/// scan it runs them in carries its hidden state from one call to the next (for
/// streaming), where every row we score is a window of its own.
const RECURRENT_OPS: [&str; 3] = ["LSTM", "GRU", "RNN"];

/// Top-level nodes only: a recurrent layer inside a `Loop`/`If` body is not
/// seen (and, if tract trips on it, the load fails cleanly through [`contained`]).
fn is_recurrent(proto: &tract_onnx::pb::ModelProto) -> bool {
    proto.graph.as_ref().is_some_and(|g| {
        g.node
            .iter()
            .any(|n| n.domain.is_empty() && RECURRENT_OPS.contains(&n.op_type.as_str()))
    })
}

/// Runs `f`, turning a panic inside tract into an error: no model file, however
/// broken, may take the agent down. `Err((e, true))` marks a panic (the caller's
/// tract state may be half-updated); its message says what tract tripped on.
fn contained<T>(
    doing: &str,
    f: impl FnOnce() -> Result<T, OnnxError>,
) -> Result<T, (OnnxError, bool)> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|e| (e, false)),
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            let e = format!("the ONNX runtime (tract) panicked while {doing} the model: {what}");
            Err((OnnxError(e), true))
        }
    }
}

impl fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnnxModel")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish()
    }
}

/// A port; with a fixed batch (a recurrent graph) its first axis is still
/// reported open, since [`Session::run`] takes any number of rows.
fn port(name: String, fact: &TypedFact, fixed_batch: bool) -> Port {
    let open = |i: usize, d: &TDim| (i > 0 || !fixed_batch).then(|| d.to_usize().ok())?;
    Port {
        name,
        elem: elem_type(fact.datum_type),
        shape: fact
            .shape
            .iter()
            .enumerate()
            .map(|(i, d)| open(i, d))
            .collect(),
    }
}

impl OnnxModel {
    /// Parses, type-checks and optimizes a model. The first input must be a matrix
    /// `[batch, features]` (or a `[batch, ...]` tensor) of numbers. Per-tree chains
    /// summed into one score (skl2onnx's isolation forests) are fused into one tree
    /// ensemble first (see [`fuse`]).
    /// A panic inside tract is returned as an error.
    pub fn load(bytes: &[u8]) -> Result<OnnxModel, OnnxError> {
        OnnxModel::load_with(bytes, true)
    }

    /// [`OnnxModel::load`], with tree-sum fusion on or off (off only to compare).
    pub fn load_with(bytes: &[u8], fuse_trees: bool) -> Result<OnnxModel, OnnxError> {
        contained("loading", || OnnxModel::load_uncontained(bytes, fuse_trees)).map_err(|e| e.0)
    }

    fn load_uncontained(bytes: &[u8], fuse_trees: bool) -> Result<OnnxModel, OnnxError> {
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
        let recurrent = is_recurrent(&proto);
        let batch = if recurrent {
            1.to_dim()
        } else {
            model.symbols.sym("batch").into()
        };
        let mut shape: TVec<TDim> = tvec![batch];
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
                Ok(port(typed.node(o.node).name.clone(), f, recurrent))
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
                Ok(port(name, f, recurrent))
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
            recurrent,
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
        let state = contained("starting", || self.plan.spawn().map_err(chain)).map_err(|e| e.0)?;
        Ok(Session {
            state,
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
    /// A panic inside tract is returned as an error, and the session's state is
    /// rebuilt (the panic may have left it half-updated).
    pub fn run(&mut self, x: &[f32], rows: usize) -> Result<Vec<Output>, OnnxError> {
        let len = self.model.row_len();
        if x.len() != rows * len {
            return Err(OnnxError(format!(
                "{} values for {rows} rows of {len}",
                x.len()
            )));
        }
        let run = contained("running", || {
            if self.model.recurrent {
                self.run_rows(x, rows)
            } else {
                self.run_batch(x, rows)
            }
        });
        run.map_err(|(e, panicked)| {
            if panicked && let Ok(state) = self.model.plan.spawn() {
                self.state = state;
            }
            e
        })
    }

    /// A recurrent graph: one row at a time, each on a fresh state.
    fn run_rows(&mut self, x: &[f32], rows: usize) -> Result<Vec<Output>, OnnxError> {
        if rows == 0 {
            return Err(OnnxError("no rows to run".into()));
        }
        let mut all: Vec<Output> = Vec::new();
        for row in x.chunks(self.model.row_len()) {
            self.state = self.model.plan.spawn().map_err(chain)?;
            let outs = self.run_batch(row, 1)?;
            if all.is_empty() {
                all = outs;
            } else {
                all.iter_mut()
                    .zip(outs)
                    .try_for_each(|(a, o)| a.append(o))?;
            }
        }
        Ok(all)
    }

    fn run_batch(&mut self, x: &[f32], rows: usize) -> Result<Vec<Output>, OnnxError> {
        let m = &self.model;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_the_runtime_becomes_an_error_that_says_so() {
        let r: Result<(), _> = contained("running", || panic!("tract tripped"));
        let (e, panicked) = r.expect_err("a panic is an error");
        assert!(panicked);
        assert_eq!(
            e.0,
            "the ONNX runtime (tract) panicked while running the model: tract tripped"
        );
        let n = 3;
        let r: Result<(), _> = contained("loading", || panic!("formatted {n}"));
        assert!(
            r.expect_err("error")
                .0
                .0
                .ends_with("loading the model: formatted 3")
        );
        let r = contained("loading", || Err::<(), _>(OnnxError("plain".into())));
        let (e, panicked) = r.expect_err("error");
        assert!(!panicked && e.0 == "plain");
    }
}
