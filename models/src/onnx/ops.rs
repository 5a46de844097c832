//! ONNX-ML operators registered into tract's ONNX operator registry.
//!
//! tract 0.23 lacks `TreeEnsembleRegressor`, `Scaler` and `LabelEncoder`, which
//! plain scikit-learn exports (skl2onnx) use for isolation forests, gradient
//! boosting regressors and `StandardScaler` pipelines; its `TreeEnsembleClassifier`
//! rejects gradient boosting's single `base_values` entry and derives binary labels
//! from un-expanded scores. [`register`] installs our own versions of all four, with
//! onnxruntime's semantics and flat, fast tree evaluation (see [`super::trees`]).

use std::sync::Arc;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_core::{args_1, as_op, op_as_typed_op, op_out_of_plan};
use tract_onnx::tract_hir::internal::*;

use super::trees::{
    Aggregate, NodeMode, PostTransform, TreeAttributes, TreeClassifier, TreeEnsemble, TreeScratch,
};

/// Installs (or replaces) our ONNX-ML operators.
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("TreeEnsembleClassifier", tree_classifier);
    reg.insert("TreeEnsembleRegressor", tree_regressor);
    reg.insert("Scaler", scaler);
    reg.insert("LabelEncoder", label_encoder);
}

fn ints(node: &NodeProto, name: &str) -> TractResult<Vec<i64>> {
    Ok(node
        .get_attr_opt_slice::<i64>(name)?
        .map(<[i64]>::to_vec)
        .unwrap_or_default())
}

fn floats(node: &NodeProto, name: &str) -> TractResult<Vec<f32>> {
    Ok(node
        .get_attr_opt_slice::<f32>(name)?
        .map(<[f32]>::to_vec)
        .unwrap_or_default())
}

fn reject_double_tensors(node: &NodeProto, names: &[&str]) -> TractResult<()> {
    for n in names {
        if node.attribute.iter().any(|a| a.name == *n) {
            bail!(
                "{} ({}): attribute {n} (double-precision trees) is not supported; \
                 export the model with float32 inputs",
                node.name,
                node.op_type
            );
        }
    }
    Ok(())
}

/// The tree attributes of `node`; `leaf` is `class_` or `target_`.
pub(crate) fn tree_attributes(node: &NodeProto, leaf: &str) -> TractResult<TreeAttributes> {
    reject_double_tensors(
        node,
        &[
            "nodes_values_as_tensor",
            "nodes_hitrates_as_tensor",
            "base_values_as_tensor",
            "class_weights_as_tensor",
            "target_weights_as_tensor",
        ],
    )?;
    let modes = node
        .get_attr_opt_tvec::<&str>("nodes_modes")?
        .unwrap_or_default()
        .iter()
        .map(|m| NodeMode::parse(m))
        .collect::<Result<Vec<_>, _>>()?;
    let ids = if leaf == "class_" {
        "class_ids"
    } else {
        "target_ids"
    };
    Ok(TreeAttributes {
        nodes_treeids: ints(node, "nodes_treeids")?,
        nodes_nodeids: ints(node, "nodes_nodeids")?,
        nodes_featureids: ints(node, "nodes_featureids")?,
        nodes_values: floats(node, "nodes_values")?,
        nodes_modes: modes,
        nodes_truenodeids: ints(node, "nodes_truenodeids")?,
        nodes_falsenodeids: ints(node, "nodes_falsenodeids")?,
        nodes_missing_value_tracks_true: ints(node, "nodes_missing_value_tracks_true")?,
        leaf_treeids: ints(node, &format!("{leaf}treeids"))?,
        leaf_nodeids: ints(node, &format!("{leaf}nodeids"))?,
        leaf_targetids: ints(node, ids)?,
        leaf_weights: floats(node, &format!("{leaf}weights"))?,
        base_values: floats(node, "base_values")?,
        aggregate: node
            .get_attr_opt::<&str>("aggregate_function")?
            .map(Aggregate::parse)
            .transpose()?,
        post_transform: node
            .get_attr_opt::<&str>("post_transform")?
            .map(PostTransform::parse)
            .transpose()?,
    })
}

/// The input as `f32` rows: `(data, rows, width)`.
fn rows_of(input: &Tensor) -> TractResult<(std::borrow::Cow<'_, Tensor>, usize, usize)> {
    let x = input.cast_to::<f32>()?;
    let (rows, width) = match *x.shape() {
        [n, w] => (n, w),
        [w] => (1, w),
        ref s => bail!("tree ensembles take [N, F] inputs, got shape {s:?}"),
    };
    Ok((x, rows, width))
}

fn batch_dim(inputs: &[&TypedFact]) -> TDim {
    match inputs[0].rank() {
        2 => inputs[0].shape[0].clone(),
        _ => 1.to_dim(),
    }
}

// ---------------------------------------------------------------- classifier

fn tree_classifier(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    if node
        .get_attr_opt_slice::<Vec<u8>>("classlabels_strings")?
        .is_some()
    {
        bail!(
            "{}: string class labels are not supported; train the classifier with integer labels",
            node.name
        );
    }
    let labels = ints(node, "classlabels_int64s")?;
    let attrs = tree_attributes(node, "class_")?;
    let c = TreeClassifier::build(&attrs, labels)
        .map_err(|e| format_err!("{} (TreeEnsembleClassifier): {e}", node.name))?;
    Ok((expand(ClassifierExpansion(Arc::new(c))), vec![]))
}

#[derive(Clone, Debug)]
struct ClassifierExpansion(Arc<TreeClassifier>);

impl Expansion for ClassifierExpansion {
    fn name(&self) -> StaticName {
        "TreeEnsembleClassifier".into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(2)
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 2)?;
        s.equals(&inputs[0].rank, 2)?;
        s.equals(&outputs[0].datum_type, DatumType::I64)?;
        s.equals(&outputs[1].datum_type, DatumType::F32)?;
        s.equals(&outputs[0].rank, 1)?;
        s.equals(&outputs[1].rank, 2)?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[1].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[1].shape[1], self.0.n_classes().to_dim())?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, ClassifierOp(self.0.clone()), inputs)
    }
}

/// The typed classifier: `X[N, F]` → `label[N]` (int64), `probabilities[N, C]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassifierOp(pub Arc<TreeClassifier>);

impl Op for ClassifierOp {
    fn name(&self) -> StaticName {
        "EdgeTreeEnsembleClassifier".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} trees, {} classes",
            self.0.ensemble.n_trees(),
            self.0.n_classes()
        )])
    }

    op_as_typed_op!();
}

impl ClassifierOp {
    fn run(&self, s: &mut TreeState, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let (x, rows, width) = rows_of(&input)?;
        let xs = x.try_as_plain_ram()?.as_slice::<f32>()?;
        self.0
            .classify_with(xs, width, &mut s.labels, &mut s.values, &mut s.scratch)?;
        let k = self.0.n_classes();
        Ok(tvec!(
            Tensor::from_shape(&[rows], &s.labels)?.into_tvalue(),
            Tensor::from_shape(&[rows, k], &s.values)?.into_tvalue()
        ))
    }
}

impl EvalOp for ClassifierOp {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        self.run(&mut TreeState::default(), inputs)
    }

    fn state(&self, _ctx: &EvalContext) -> TractResult<Option<Box<dyn OpState>>> {
        Ok(Some(Box::<TreeState>::default()))
    }
}

/// Per-session buffers of a tree op: after the first batch of a given size, a run
/// allocates only its output tensors.
#[derive(Clone, Debug, Default)]
struct TreeState {
    scratch: TreeScratch,
    values: Vec<f32>,
    labels: Vec<i64>,
}

impl OpState for TreeState {
    fn eval(
        &mut self,
        _ctx: &EvalContext,
        op: &dyn Op,
        inputs: TVec<TValue>,
    ) -> TractResult<TVec<TValue>> {
        if let Some(op) = op.downcast_ref::<ClassifierOp>() {
            op.run(self, inputs)
        } else if let Some(op) = op.downcast_ref::<RegressorOp>() {
            op.run(self, inputs)
        } else {
            bail!("tree scratch state attached to {}", op.name())
        }
    }

    fn reset_lanes(&mut self, _lanes: &[LaneId]) -> TractResult<()> {
        // Scratch only: nothing carries from one run to the next.
        Ok(())
    }
}

impl TypedOp for ClassifierOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let n = batch_dim(inputs);
        Ok(tvec!(
            i64::fact(std::slice::from_ref(&n)),
            f32::fact(&[n, self.0.n_classes().to_dim()])
        ))
    }

    as_op!();
}

// ----------------------------------------------------------------- regressor

fn tree_regressor(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let n_targets = node.get_attr_opt::<i64>("n_targets")?.unwrap_or(1);
    if !(1..=1 << 20).contains(&n_targets) {
        bail!("{}: n_targets {n_targets} is out of range", node.name);
    }
    let attrs = tree_attributes(node, "target_")?;
    let e = TreeEnsemble::build(&attrs, n_targets as usize)
        .map_err(|e| format_err!("{} (TreeEnsembleRegressor): {e}", node.name))?;
    Ok((expand(RegressorExpansion(Arc::new(e))), vec![]))
}

#[derive(Clone, Debug)]
struct RegressorExpansion(Arc<TreeEnsemble>);

impl Expansion for RegressorExpansion {
    fn name(&self) -> StaticName {
        "TreeEnsembleRegressor".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].rank, 2)?;
        s.equals(&outputs[0].datum_type, DatumType::F32)?;
        s.equals(&outputs[0].rank, 2)?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[0].shape[1], self.0.n_targets().to_dim())?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, RegressorOp(self.0.clone()), inputs)
    }
}

/// The typed regressor: `X[N, F]` → `Y[N, n_targets]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegressorOp(pub Arc<TreeEnsemble>);

impl Op for RegressorOp {
    fn name(&self) -> StaticName {
        "EdgeTreeEnsembleRegressor".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} trees, {} targets",
            self.0.n_trees(),
            self.0.n_targets()
        )])
    }

    op_as_typed_op!();
}

impl RegressorOp {
    fn run(&self, s: &mut TreeState, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let (x, rows, width) = rows_of(&input)?;
        let xs = x.try_as_plain_ram()?.as_slice::<f32>()?;
        self.0
            .regress_with(xs, width, &mut s.values, &mut s.scratch)?;
        Ok(tvec!(
            Tensor::from_shape(&[rows, self.0.n_targets()], &s.values)?.into_tvalue()
        ))
    }
}

impl EvalOp for RegressorOp {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        self.run(&mut TreeState::default(), inputs)
    }

    fn state(&self, _ctx: &EvalContext) -> TractResult<Option<Box<dyn OpState>>> {
        Ok(Some(Box::<TreeState>::default()))
    }
}

impl TypedOp for RegressorOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let n = batch_dim(inputs);
        Ok(tvec!(f32::fact(&[n, self.0.n_targets().to_dim()])))
    }

    as_op!();
}

// -------------------------------------------------------------------- scaler

fn scaler(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let offset = floats(node, "offset")?;
    let scale = floats(node, "scale")?;
    if offset.is_empty() && scale.is_empty() {
        bail!("{} (Scaler): neither offset nor scale is set", node.name);
    }
    let op = ScalerOp {
        offset: offset.iter().map(|v| v.to_bits()).collect(),
        scale: scale.iter().map(|v| v.to_bits()).collect(),
    };
    Ok((expand(op), vec![]))
}

/// `Y = (X - offset) * scale` along the last axis (onnxruntime's `Scaler`);
/// `offset` and `scale` have one value or one per column.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScalerOp {
    offset: Vec<u32>,
    scale: Vec<u32>,
}

impl ScalerOp {
    fn coef(v: &[u32], j: usize, default: f32) -> f32 {
        match v.len() {
            0 => default,
            1 => f32::from_bits(v[0]),
            _ => v.get(j).map_or(default, |b| f32::from_bits(*b)),
        }
    }
}

impl Expansion for ScalerOp {
    fn name(&self) -> StaticName {
        "Scaler".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, DatumType::F32)?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.clone(), inputs)
    }
}

impl Op for ScalerOp {
    fn name(&self) -> StaticName {
        "EdgeScaler".into()
    }

    op_as_typed_op!();
}

impl EvalOp for ScalerOp {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let x = input.cast_to::<f32>()?;
        let shape = x.shape().to_vec();
        let width = shape.last().copied().unwrap_or(1).max(1);
        let c = self.offset.len().max(self.scale.len());
        if c > 1 && c != width {
            bail!("Scaler has {c} coefficients but the input has {width} columns");
        }
        let xs = x.try_as_plain_ram()?.as_slice::<f32>()?;
        let out: Vec<f32> = xs
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let j = i % width;
                (v - Self::coef(&self.offset, j, 0.0)) * Self::coef(&self.scale, j, 1.0)
            })
            .collect();
        Ok(tvec!(Tensor::from_shape(&shape, &out)?.into_tvalue()))
    }
}

impl TypedOp for ScalerOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

// ------------------------------------------------------------- label encoder

fn label_encoder(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    for unsupported in [
        "keys_strings",
        "values_strings",
        "keys_tensor",
        "values_tensor",
    ] {
        if node.attribute.iter().any(|a| a.name == unsupported) {
            bail!(
                "{} (LabelEncoder): {unsupported} is not supported (numeric keys and values only)",
                node.name
            );
        }
    }
    let keys: Vec<Key> = match (
        node.get_attr_opt_slice::<i64>("keys_int64s")?,
        node.get_attr_opt_slice::<f32>("keys_floats")?,
    ) {
        (Some(k), None) => k.iter().map(|v| Key::Int(*v)).collect(),
        (None, Some(k)) => k.iter().map(|v| Key::Float(v.to_bits())).collect(),
        _ => bail!(
            "{} (LabelEncoder): exactly one of keys_int64s and keys_floats must be set",
            node.name
        ),
    };
    let values: Values = match (
        node.get_attr_opt_slice::<i64>("values_int64s")?,
        node.get_attr_opt_slice::<f32>("values_floats")?,
    ) {
        (Some(v), None) => Values::Int(v.to_vec()),
        (None, Some(v)) => Values::Float(v.iter().map(|x| x.to_bits()).collect()),
        _ => bail!(
            "{} (LabelEncoder): exactly one of values_int64s and values_floats must be set",
            node.name
        ),
    };
    if keys.len() != values.len() {
        bail!(
            "{} (LabelEncoder): {} keys but {} values",
            node.name,
            keys.len(),
            values.len()
        );
    }
    let default_int = node.get_attr_opt::<i64>("default_int64")?.unwrap_or(-1);
    let default_float = node.get_attr_opt::<f32>("default_float")?.unwrap_or(-0.0);
    // Sorted by key for binary search; the first of duplicate keys wins.
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by_key(|&i| keys[i]);
    order.dedup_by_key(|i| keys[*i]);
    let op = LabelEncoderOp {
        keys: order.iter().map(|&i| keys[i]).collect(),
        values: match &values {
            Values::Int(v) => Values::Int(order.iter().map(|&i| v[i]).collect()),
            Values::Float(v) => Values::Float(order.iter().map(|&i| v[i]).collect()),
        },
        default_int,
        default_float: default_float.to_bits(),
    };
    Ok((expand(op), vec![]))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    Int(i64),
    /// `f32` bits (compared exactly, as a map of floats does).
    Float(u32),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Values {
    Int(Vec<i64>),
    Float(Vec<u32>),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::Int(v) => v.len(),
            Values::Float(v) => v.len(),
        }
    }

    fn datum_type(&self) -> DatumType {
        match self {
            Values::Int(_) => DatumType::I64,
            Values::Float(_) => DatumType::F32,
        }
    }
}

/// Maps numeric keys to numeric values (ONNX-ML `LabelEncoder`, opset 2 and 3).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LabelEncoderOp {
    keys: Vec<Key>,
    values: Values,
    default_int: i64,
    default_float: u32,
}

impl LabelEncoderOp {
    fn find(&self, k: Key) -> Option<usize> {
        self.keys.binary_search(&k).ok()
    }
}

impl Expansion for LabelEncoderOp {
    fn name(&self) -> StaticName {
        "LabelEncoder".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, self.values.datum_type())?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.clone(), inputs)
    }
}

impl Op for LabelEncoderOp {
    fn name(&self) -> StaticName {
        "EdgeLabelEncoder".into()
    }

    op_as_typed_op!();
}

impl EvalOp for LabelEncoderOp {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = input.shape().to_vec();
        let float_keys = matches!(self.keys.first(), Some(Key::Float(_)));
        let keyed = if float_keys {
            input.cast_to::<f32>()?
        } else {
            input.cast_to::<i64>()?
        };
        let plain = keyed.try_as_plain_ram()?;
        let key_at = |i: usize, xf: &[f32], xi: &[i64]| {
            if float_keys {
                Key::Float(xf[i].to_bits())
            } else {
                Key::Int(xi[i])
            }
        };
        let (xf, xi): (&[f32], &[i64]) = if float_keys {
            (plain.as_slice::<f32>()?, &[])
        } else {
            (&[], plain.as_slice::<i64>()?)
        };
        let n = xf.len().max(xi.len());
        let out = match &self.values {
            Values::Int(v) => {
                let ys: Vec<i64> = (0..n)
                    .map(|i| {
                        self.find(key_at(i, xf, xi))
                            .map_or(self.default_int, |j| v[j])
                    })
                    .collect();
                Tensor::from_shape(&shape, &ys)?
            }
            Values::Float(v) => {
                let ys: Vec<f32> = (0..n)
                    .map(|i| {
                        let b = self
                            .find(key_at(i, xf, xi))
                            .map_or(self.default_float, |j| v[j]);
                        f32::from_bits(b)
                    })
                    .collect();
                Tensor::from_shape(&shape, &ys)?
            }
        };
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for LabelEncoderOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(
            self.values.datum_type().fact(inputs[0].shape.clone())
        ))
    }

    as_op!();
}
