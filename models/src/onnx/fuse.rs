//! Tree-sum fusion: a rewrite of the ONNX graph before tract sees it.
//!
//! skl2onnx exports an isolation forest as one single-tree `TreeEnsembleRegressor`
//! per tree (its output is the leaf's node id), followed by ~25 element-wise nodes
//! per tree (`Cast`, two `LabelEncoder`s for path length and leaf size, the
//! average-path-length formula), all summed by one `Sum`. A 50-tree forest is 1,360
//! nodes: tract plans, allocates and runs each of them, which makes it slower than
//! onnxruntime at batch 64 and costs ~20 MB of memory.
//!
//! Every per-tree chain is a function of the leaf the row lands in, and a tree has
//! finitely many leaves. So the chain can be *tabulated*: evaluate it once, at load,
//! on every leaf value of its tree, and store the result as that leaf's weight. The
//! `Sum` of all chains then becomes one multi-tree `TreeEnsembleRegressor` (sum
//! aggregate) on the original input, which [`super::trees`] evaluates with batch
//! traversal. The tabulation runs the original nodes through tract itself, so the
//! fused model computes exactly what the unfused graph computes, leaf by leaf.
//!
//! The rewrite applies only where it is provably row-wise: the chain's nodes must be
//! element-wise operators (plus `Cast`, `LabelEncoder`, and `Reshape` to `[-1, 1]`)
//! whose other inputs are single-value constants, nothing outside the chain may read
//! its intermediate values, and the tree must be a single tree with one target and
//! no post-transform. Anything else is left untouched and runs unfused.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, type_proto,
};
use tract_onnx::tract_hir::internal::*;

use super::ops::tree_attributes;
use super::trees::TreeAttributes;

const ML: &str = "ai.onnx.ml";

/// Element-wise operators of the default domain a chain may contain.
const ROW_WISE: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Max",
    "Min",
    "Pow",
    "Equal",
    "Greater",
    "Less",
    "GreaterOrEqual",
    "LessOrEqual",
    "Not",
    "And",
    "Or",
    "Xor",
    "Neg",
    "Abs",
    "Log",
    "Exp",
    "Sqrt",
    "Reciprocal",
    "Floor",
    "Ceil",
    "Sigmoid",
    "Tanh",
    "Identity",
    "Cast",
    "Where",
];

/// Rewrites every fusible `Sum` of per-tree chains in `model` into one tree
/// ensemble. Returns the number of trees folded. On any doubt the model is left
/// as it was (the unfused graph is always correct, only slower).
pub fn fuse_tree_sums(onnx: &tract_onnx::Onnx, model: &mut ModelProto) -> usize {
    let mut fused = 0;
    let mut tried: HashSet<String> = HashSet::new();
    loop {
        let Some(graph) = model.graph.as_ref() else {
            return fused;
        };
        let index = Index::new(graph);
        let next = graph.node.iter().enumerate().find(|(_, n)| {
            n.op_type == "Sum" && n.domain.is_empty() && !tried.contains(&n.output[0])
        });
        let Some((sum_at, sum)) = next else {
            return fused;
        };
        tried.insert(sum.output[0].clone());
        let Some(plan) = plan(graph, &index, sum_at) else {
            continue;
        };
        let Ok(weights) = tabulate(onnx, model, &plan) else {
            continue;
        };
        let Some(node) = fused_node(graph, &plan, &weights) else {
            continue;
        };
        let trees = plan.chains.len();
        let graph = model
            .graph
            .as_mut()
            .expect("checked above: the model has a graph");
        apply(graph, &plan, node);
        fused += trees;
    }
}

/// Who produces and who reads each value of a graph.
struct Index<'g> {
    producer: HashMap<&'g str, usize>,
    readers: HashMap<&'g str, Vec<usize>>,
    inits: HashMap<&'g str, &'g TensorProto>,
    graph_inputs: HashSet<&'g str>,
    graph_outputs: HashSet<&'g str>,
}

impl<'g> Index<'g> {
    fn new(g: &'g GraphProto) -> Index<'g> {
        let mut producer = HashMap::new();
        let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in g.node.iter().enumerate() {
            for o in &n.output {
                producer.insert(o.as_str(), i);
            }
            for x in &n.input {
                readers.entry(x.as_str()).or_default().push(i);
            }
        }
        let inits: HashMap<&str, &TensorProto> =
            g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        Index {
            producer,
            readers,
            graph_inputs: g
                .input
                .iter()
                .map(|v| v.name.as_str())
                .filter(|n| !inits.contains_key(n))
                .collect(),
            inits,
            graph_outputs: g.output.iter().map(|v| v.name.as_str()).collect(),
        }
    }
}

/// One tree and the chain of nodes from its output to one input of the `Sum`.
struct Chain {
    tree: usize,
    /// Chain nodes (not the tree), in graph order.
    nodes: Vec<usize>,
    /// The value the `Sum` reads.
    end: String,
    /// The graph input the tree reads, directly or through `gather`.
    root: String,
    /// The `Gather` feeding the tree, if any.
    gather: Option<Gather>,
    parsed: SingleTree,
}

/// A `Gather` between the graph input and a tree.
struct Gather {
    node: usize,
    /// The column of the graph input each of the tree's feature ids reads.
    columns: Vec<i64>,
}

/// A single-tree, single-target regressor, parsed once.
struct SingleTree {
    attrs: TreeAttributes,
    /// Output of each leaf, as bits: (index into the node lists, value).
    leaves: Vec<(usize, u32)>,
    /// The distinct leaf outputs, sorted: what the tree's output can be.
    leaf_values: Vec<u32>,
}

struct Plan {
    sum: usize,
    base: String,
    chains: Vec<Chain>,
}

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

fn elements(t: &TensorProto) -> i64 {
    t.dims.iter().product()
}

/// The int64 values of an initializer, for small index tensors.
fn int_values(t: &TensorProto) -> Option<Vec<i64>> {
    if !t.int64_data.is_empty() {
        return Some(t.int64_data.clone());
    }
    if !t.raw_data.is_empty() && t.raw_data.len() % 8 == 0 && t.data_type == 7 {
        return Some(
            t.raw_data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("chunks_exact(8) yields 8 bytes")))
                .collect(),
        );
    }
    None
}

fn plan(g: &GraphProto, ix: &Index<'_>, sum: usize) -> Option<Plan> {
    let s = &g.node[sum];
    if s.output.len() != 1 || s.input.is_empty() {
        return None;
    }
    let distinct: HashSet<&str> = s.input.iter().map(String::as_str).collect();
    if distinct.len() != s.input.len() {
        return None;
    }
    let chains = s
        .input
        .iter()
        .map(|end| chain(g, ix, sum, end))
        .collect::<Option<Vec<Chain>>>()?;
    // Every tree must read the same input for one ensemble to replace them.
    let base = chains.first()?.root.clone();
    if chains.iter().any(|c| c.root != base) {
        return None;
    }
    Some(Plan { sum, base, chains })
}

/// The chain ending at `end`: walks up from the `Sum` input to one tree.
fn chain(g: &GraphProto, ix: &Index<'_>, sum: usize, end: &str) -> Option<Chain> {
    let mut nodes: Vec<usize> = Vec::new();
    let mut tree: Option<usize> = None;
    let mut stack = vec![*ix.producer.get(end)?];
    let mut seen = HashSet::new();
    while let Some(i) = stack.pop() {
        if !seen.insert(i) {
            continue;
        }
        let n = &g.node[i];
        if n.op_type == "TreeEnsembleRegressor" && n.domain == ML {
            if tree.replace(i).is_some_and(|t| t != i) {
                return None;
            }
            continue;
        }
        let row_wise = (n.domain.is_empty() && ROW_WISE.contains(&n.op_type.as_str()))
            || (n.domain == ML && n.op_type == "LabelEncoder");
        let reshape = n.domain.is_empty() && n.op_type == "Reshape";
        if !row_wise && !reshape {
            return None;
        }
        for (k, x) in n.input.iter().enumerate() {
            if x.is_empty() {
                continue;
            }
            if let Some(t) = ix.inits.get(x.as_str()) {
                let ok = if reshape && k == 1 {
                    int_values(t).is_some_and(|v| v == [-1, 1])
                } else {
                    elements(t) == 1 && t.dims.len() <= 2
                };
                if !ok {
                    return None;
                }
            } else if let Some(&p) = ix.producer.get(x.as_str()) {
                stack.push(p);
            } else {
                // A graph input: the chain would not be a function of the leaf alone.
                return None;
            }
        }
        if reshape && n.input.len() != 2 {
            return None;
        }
        nodes.push(i);
    }
    let tree = tree?;
    // Nothing outside the chain may read what the chain or its tree computes.
    let inside: HashSet<usize> = nodes.iter().copied().collect();
    for &i in nodes.iter().chain(std::iter::once(&tree)) {
        for o in &g.node[i].output {
            if ix.graph_outputs.contains(o.as_str()) {
                return None;
            }
            for r in ix.readers.get(o.as_str()).map(Vec::as_slice).unwrap_or(&[]) {
                let to_sum = *r == sum && o == end;
                if !inside.contains(r) && !to_sum {
                    return None;
                }
            }
        }
    }
    if ix.readers.get(end).map_or(0, Vec::len) != 1 {
        return None;
    }
    let t = &g.node[tree];
    if t.input.len() != 1 || t.output.len() != 1 {
        return None;
    }
    let parsed = single_tree(t)?;
    let (root, gather) = tree_input(g, ix, &t.input[0])?;
    nodes.sort_unstable();
    Some(Chain {
        tree,
        nodes,
        end: end.to_string(),
        root,
        gather,
        parsed,
    })
}

/// What a tree reads: a graph input, directly or through a `Gather` of constant,
/// non-negative column indices.
fn tree_input(g: &GraphProto, ix: &Index<'_>, input: &str) -> Option<(String, Option<Gather>)> {
    let Some(&p) = ix.producer.get(input) else {
        return ix
            .graph_inputs
            .contains(input)
            .then(|| (input.to_string(), None));
    };
    let gn = &g.node[p];
    if gn.op_type != "Gather" || !gn.domain.is_empty() || gn.input.len() != 2 {
        return None;
    }
    if attr(gn, "axis").map_or(0, |a| a.i) != 1 || !ix.graph_inputs.contains(gn.input[0].as_str()) {
        return None;
    }
    let idx = int_values(ix.inits.get(gn.input[1].as_str())?)?;
    if idx.iter().any(|&i| i < 0) {
        return None;
    }
    Some((
        gn.input[0].clone(),
        Some(Gather {
            node: p,
            columns: idx,
        }),
    ))
}

/// `t` parsed, with its leaf outputs; `None` if it is not a single-tree,
/// single-target regressor without post-transform.
fn single_tree(t: &NodeProto) -> Option<SingleTree> {
    if attr(t, "n_targets").is_some_and(|a| a.i != 1) {
        return None;
    }
    if attr(t, "post_transform").is_some_and(|a| a.s != b"NONE") {
        return None;
    }
    if attr(t, "aggregate_function").is_some_and(|a| a.s != b"SUM" && a.s != b"AVERAGE") {
        return None;
    }
    let a = tree_attributes(t, "target_").ok()?;
    let first = *a.nodes_treeids.first()?;
    if a.nodes_treeids.iter().any(|&id| id != first) || a.leaf_targetids.iter().any(|&id| id != 0) {
        return None;
    }
    let base = match a.base_values.as_slice() {
        [] => 0.0,
        [b] => *b,
        _ => return None,
    };
    let leaves: Vec<(usize, u32)> = (0..a.nodes_modes.len())
        .filter(|&i| a.nodes_modes[i].is_none())
        .map(|i| {
            let id = a.nodes_nodeids[i];
            let v = a
                .leaf_nodeids
                .iter()
                .zip(&a.leaf_weights)
                .filter(|(n, _)| **n == id)
                .fold(base, |acc, (_, w)| acc + w);
            (i, v.to_bits())
        })
        .collect();
    let mut leaf_values: Vec<u32> = leaves.iter().map(|l| l.1).collect();
    leaf_values.sort_unstable();
    leaf_values.dedup();
    (!leaf_values.is_empty()).then_some(SingleTree {
        attrs: a,
        leaves,
        leaf_values,
    })
}

fn value_info(name: &str, rows: usize) -> ValueInfoProto {
    let dim = |v: i64| Dimension {
        value: Some(dimension::Value::DimValue(v)),
        ..Default::default()
    };
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1, // FLOAT
                shape: Some(TensorShapeProto {
                    dim: vec![dim(rows as i64), dim(1)],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Runs every chain on all of its tree's leaf values, through tract, in one model.
/// Returns, per chain, the chain's output for each entry of `leaf_values`.
fn tabulate(
    onnx: &tract_onnx::Onnx,
    model: &ModelProto,
    plan: &Plan,
) -> TractResult<Vec<Vec<f32>>> {
    let g = model.graph.as_ref().context("no graph")?;
    let mut members: Vec<usize> = plan
        .chains
        .iter()
        .flat_map(|c| c.nodes.iter().copied())
        .collect();
    members.sort_unstable();
    members.dedup();
    let used: HashSet<&str> = members
        .iter()
        .flat_map(|&i| g.node[i].input.iter().map(String::as_str))
        .collect();
    let graph = GraphProto {
        name: "tree-sum tabulation".into(),
        node: members.iter().map(|&i| g.node[i].clone()).collect(),
        initializer: g
            .initializer
            .iter()
            .filter(|t| used.contains(t.name.as_str()))
            .cloned()
            .collect(),
        input: plan
            .chains
            .iter()
            .map(|c| value_info(&g.node[c.tree].output[0], c.parsed.leaf_values.len()))
            .collect(),
        output: plan
            .chains
            .iter()
            .map(|c| value_info(&c.end, c.parsed.leaf_values.len()))
            .collect(),
        ..Default::default()
    };
    let eval = ModelProto {
        graph: Some(graph),
        ir_version: model.ir_version,
        opset_import: model.opset_import.clone(),
        ..Default::default()
    };
    // Run once, so typed but not optimized: the optimizer's passes over ~1,300
    // nodes would cost more than the run, and page in code the agent never needs
    // again (it shows in RSS as touched binary text).
    let runnable = onnx
        .model_for_proto_model(&eval)?
        .into_typed()?
        .into_runnable()?;
    let inputs = plan
        .chains
        .iter()
        .map(|c| {
            let v: Vec<f32> = c
                .parsed
                .leaf_values
                .iter()
                .map(|b| f32::from_bits(*b))
                .collect();
            Ok(Tensor::from_shape(&[v.len(), 1], &v)?.into_tvalue())
        })
        .collect::<TractResult<TVec<_>>>()?;
    let outputs = runnable.run(inputs)?;
    plan.chains
        .iter()
        .zip(outputs)
        .map(|(c, o)| {
            ensure!(
                o.shape() == [c.parsed.leaf_values.len(), 1],
                "chain output shape {:?}",
                o.shape()
            );
            let o = o.cast_to::<f32>()?;
            Ok(o.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
        })
        .collect()
}

fn ints_attr(name: &str, ints: Vec<i64>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints,
        ..Default::default()
    }
}

fn floats_attr(name: &str, floats: Vec<f32>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Floats as i32,
        floats,
        ..Default::default()
    }
}

fn string_attr(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: s.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// One `TreeEnsembleRegressor` holding every chain's tree, each leaf weighted with
/// the chain's value for it.
fn fused_node(g: &GraphProto, plan: &Plan, weights: &[Vec<f32>]) -> Option<NodeProto> {
    let mut n = FusedAttrs::default();
    for (t, (c, w)) in plan.chains.iter().zip(weights).enumerate() {
        let a = &c.parsed.attrs;
        let modes = attr(&g.node[c.tree], "nodes_modes")?;
        if modes.strings.len() != a.nodes_nodeids.len() {
            return None;
        }
        let tracks = &a.nodes_missing_value_tracks_true;
        for i in 0..a.nodes_nodeids.len() {
            let feature = match (&c.gather, a.nodes_modes[i]) {
                (Some(gather), Some(_)) => *gather
                    .columns
                    .get(usize::try_from(a.nodes_featureids[i]).ok()?)?,
                _ => a.nodes_featureids[i],
            };
            n.treeids.push(t as i64);
            n.nodeids.push(a.nodes_nodeids[i]);
            n.featureids.push(feature);
            n.values.push(a.nodes_values[i]);
            n.modes.push(modes.strings[i].clone());
            n.trues.push(a.nodes_truenodeids[i]);
            n.falses.push(a.nodes_falsenodeids[i]);
            n.tracks.push(tracks.get(i).copied().unwrap_or(0));
        }
        for &(i, value) in &c.parsed.leaves {
            let k = c.parsed.leaf_values.binary_search(&value).ok()?;
            n.leaf_trees.push(t as i64);
            n.leaf_nodes.push(a.nodes_nodeids[i]);
            n.leaf_weights.push(w[k]);
        }
    }
    let sum = &g.node[plan.sum];
    let leaves = n.leaf_trees.len();
    Some(NodeProto {
        name: format!(
            "{}_fused_trees",
            if sum.name.is_empty() {
                &sum.output[0]
            } else {
                &sum.name
            }
        ),
        op_type: "TreeEnsembleRegressor".into(),
        domain: ML.into(),
        input: vec![plan.base.clone()],
        output: vec![sum.output[0].clone()],
        attribute: vec![
            AttributeProto {
                name: "n_targets".into(),
                r#type: AttributeType::Int as i32,
                i: 1,
                ..Default::default()
            },
            string_attr("aggregate_function", "SUM"),
            string_attr("post_transform", "NONE"),
            ints_attr("nodes_treeids", n.treeids),
            ints_attr("nodes_nodeids", n.nodeids),
            ints_attr("nodes_featureids", n.featureids),
            floats_attr("nodes_values", n.values),
            AttributeProto {
                name: "nodes_modes".into(),
                r#type: AttributeType::Strings as i32,
                strings: n.modes,
                ..Default::default()
            },
            ints_attr("nodes_truenodeids", n.trues),
            ints_attr("nodes_falsenodeids", n.falses),
            ints_attr("nodes_missing_value_tracks_true", n.tracks),
            ints_attr("target_treeids", n.leaf_trees),
            ints_attr("target_nodeids", n.leaf_nodes),
            ints_attr("target_ids", vec![0; leaves]),
            floats_attr("target_weights", n.leaf_weights),
        ],
        ..Default::default()
    })
}

#[derive(Default)]
struct FusedAttrs {
    treeids: Vec<i64>,
    nodeids: Vec<i64>,
    featureids: Vec<i64>,
    values: Vec<f32>,
    modes: Vec<Vec<u8>>,
    trues: Vec<i64>,
    falses: Vec<i64>,
    tracks: Vec<i64>,
    leaf_trees: Vec<i64>,
    leaf_nodes: Vec<i64>,
    leaf_weights: Vec<f32>,
}

/// Replaces the `Sum` with `node`, drops the chains and their trees, then any
/// `Gather` nothing reads any more.
fn apply(g: &mut GraphProto, plan: &Plan, node: NodeProto) {
    let mut drop: HashSet<usize> = HashSet::new();
    for c in &plan.chains {
        drop.insert(c.tree);
        drop.extend(c.nodes.iter().copied());
    }
    let gathers: HashSet<usize> = plan
        .chains
        .iter()
        .filter_map(|c| c.gather.as_ref().map(|g| g.node))
        .collect();
    let mut node = Some(node);
    let old = std::mem::take(&mut g.node);
    let mut kept: Vec<(usize, NodeProto)> = Vec::with_capacity(old.len());
    for (i, n) in old.into_iter().enumerate() {
        if i == plan.sum {
            kept.push((i, node.take().expect("the Sum appears once")));
        } else if !drop.contains(&i) {
            kept.push((i, n));
        }
    }
    let read: HashSet<String> = kept
        .iter()
        .flat_map(|(_, n)| n.input.iter().cloned())
        .chain(g.output.iter().map(|v| v.name.clone()))
        .collect();
    g.node = kept
        .into_iter()
        .filter(|(i, n)| !gathers.contains(i) || n.output.iter().any(|o| read.contains(o)))
        .map(|(_, n)| n)
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::Framework;

    fn forest() -> (tract_onnx::Onnx, ModelProto) {
        let onnx = super::super::framework();
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/zoo/pump_iforest/pump_iforest.onnx"
        );
        let proto = onnx.proto_model_for_path(path).expect("zoo model parses");
        (onnx, proto)
    }

    fn graph(p: &mut ModelProto) -> &mut GraphProto {
        p.graph.as_mut().expect("graph")
    }

    #[test]
    fn the_whole_forest_becomes_one_node() {
        let (onnx, mut p) = forest();
        let before = graph(&mut p).node.len();
        assert_eq!(fuse_tree_sums(&onnx, &mut p), 50);
        let g = graph(&mut p);
        assert!(g.node.len() < 20, "{before} nodes became {}", g.node.len());
        let trees: Vec<_> = g
            .node
            .iter()
            .filter(|n| n.op_type == "TreeEnsembleRegressor")
            .collect();
        assert_eq!(trees.len(), 1);
        assert!(
            !g.node
                .iter()
                .any(|n| n.op_type == "Gather" || n.op_type == "Sum")
        );
        // The rewritten model is still a model tract loads.
        onnx.model_for_proto_model(&p).expect("fused model parses");
    }

    #[test]
    fn a_chain_value_read_outside_the_chain_blocks_fusion() {
        let (onnx, mut p) = forest();
        let g = graph(&mut p);
        let depth = g
            .node
            .iter()
            .find(|n| n.op_type == "Sum")
            .expect("sum")
            .input[3]
            .clone();
        let mut extra = g.output[0].clone();
        extra.name = depth;
        g.output.push(extra);
        assert_eq!(fuse_tree_sums(&onnx, &mut p), 0);
    }

    #[test]
    fn a_constant_with_several_values_blocks_fusion() {
        let (onnx, mut p) = forest();
        let g = graph(&mut p);
        let c = g
            .initializer
            .iter_mut()
            .find(|t| t.name == "eqp_log0_Addcst")
            .expect("the forest's Euler-constant initializer");
        assert_eq!(c.dims, [1]);
        // Two values: the chain would no longer be a function of one row's leaf.
        c.dims = vec![2];
        let first = c.float_data.first().copied().unwrap_or(0.5772);
        c.float_data = vec![first, first];
        c.raw_data.clear();
        assert_eq!(fuse_tree_sums(&onnx, &mut p), 0);
    }

    #[test]
    fn a_forest_tree_with_a_post_transform_is_left_alone() {
        let (onnx, mut p) = forest();
        let g = graph(&mut p);
        let t = g
            .node
            .iter_mut()
            .find(|n| n.op_type == "TreeEnsembleRegressor")
            .expect("a tree");
        t.attribute.retain(|a| a.name != "post_transform");
        t.attribute.push(string_attr("post_transform", "LOGISTIC"));
        assert_eq!(fuse_tree_sums(&onnx, &mut p), 0);
    }
}
