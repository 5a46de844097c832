//! Tree ensembles (ONNX-ML `TreeEnsembleClassifier` / `TreeEnsembleRegressor`)
//! evaluated from flat node arrays.
//!
//! The ONNX attributes describe nodes as parallel lists keyed by `(tree id, node
//! id)`. [`TreeEnsemble::build`] checks them once (every child exists, every tree is
//! a tree: no cycle, no shared node, bounded depth) and lays each tree out as a
//! contiguous run of 16-byte nodes in depth-first order, so a traversal touches a
//! few cache lines and indexes without hashing. A leaf is a node whose two children
//! are itself, so a descent needs no leaf test: eight rows descend a tree in
//! lockstep for the tree's depth (their independent load chains overlap instead of
//! waiting on each other), with an early exit once all eight sit in leaves. Trees
//! are the outer loop and rows the inner one, so a tree's nodes stay in cache while
//! the rows of a batch descend it.
//!
//! Results follow onnxruntime's CPU kernels, which is what skl2onnx exports are
//! validated against: scores accumulate in `f32` in tree order, and the binary
//! classifier cases (one voting class, one `base_values` entry, mixed-sign weights
//! from gradient boosting) produce the same labels and two-column probabilities.

use std::fmt;

/// `leaf_of[i]` for a decision node.
const NOT_LEAF: u32 = u32::MAX;
/// Rows descending a tree together.
const LANES: usize = 16;
/// Marks a node whose missing (NaN) input goes to the true branch.
const NAN_TRUE: u32 = 1 << 31;
/// Deepest tree accepted (scikit-learn trees are far shallower; this bounds a
/// traversal even for a hostile file).
pub const MAX_DEPTH: usize = 4096;

/// How a node compares its feature with its threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeMode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
}

impl NodeMode {
    /// Parses an ONNX mode string; `Ok(None)` is a leaf.
    pub fn parse(s: &str) -> Result<Option<NodeMode>, TreeError> {
        Ok(Some(match s {
            "BRANCH_LEQ" => NodeMode::Leq,
            "BRANCH_LT" => NodeMode::Lt,
            "BRANCH_GTE" => NodeMode::Gte,
            "BRANCH_GT" => NodeMode::Gt,
            "BRANCH_EQ" => NodeMode::Eq,
            "BRANCH_NEQ" => NodeMode::Neq,
            "LEAF" => return Ok(None),
            other => return Err(TreeError(format!("unknown node mode {other:?}"))),
        }))
    }

    #[inline(always)]
    fn test(self, x: f32, t: f32) -> bool {
        match self {
            NodeMode::Leq => x <= t,
            NodeMode::Lt => x < t,
            NodeMode::Gte => x >= t,
            NodeMode::Gt => x > t,
            NodeMode::Eq => x == t,
            NodeMode::Neq => x != t,
        }
    }
}

/// How the leaf values of the trees are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

impl Aggregate {
    pub fn parse(s: &str) -> Result<Aggregate, TreeError> {
        match s {
            "SUM" => Ok(Aggregate::Sum),
            "AVERAGE" => Ok(Aggregate::Average),
            "MIN" => Ok(Aggregate::Min),
            "MAX" => Ok(Aggregate::Max),
            other => Err(TreeError(format!("unknown aggregate_function {other:?}"))),
        }
    }
}

/// What is applied to the aggregated scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PostTransform {
    None,
    Softmax,
    Logistic,
    SoftmaxZero,
    Probit,
}

impl PostTransform {
    pub fn parse(s: &str) -> Result<PostTransform, TreeError> {
        match s {
            "NONE" => Ok(PostTransform::None),
            "SOFTMAX" => Ok(PostTransform::Softmax),
            "LOGISTIC" => Ok(PostTransform::Logistic),
            "SOFTMAX_ZERO" => Ok(PostTransform::SoftmaxZero),
            "PROBIT" => Ok(PostTransform::Probit),
            other => Err(TreeError(format!("unknown post_transform {other:?}"))),
        }
    }
}

/// An ensemble that cannot be built, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeError(pub String);

impl fmt::Display for TreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TreeError {}

fn err<T>(msg: impl Into<String>) -> Result<T, TreeError> {
    Err(TreeError(msg.into()))
}

/// The ONNX attributes of a tree ensemble, as parallel lists.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TreeAttributes {
    pub nodes_treeids: Vec<i64>,
    pub nodes_nodeids: Vec<i64>,
    pub nodes_featureids: Vec<i64>,
    pub nodes_values: Vec<f32>,
    /// `None` for a leaf.
    pub nodes_modes: Vec<Option<NodeMode>>,
    pub nodes_truenodeids: Vec<i64>,
    pub nodes_falsenodeids: Vec<i64>,
    /// May be empty (no node sends NaN to the true branch).
    pub nodes_missing_value_tracks_true: Vec<i64>,
    /// `target_*` for a regressor, `class_*` for a classifier.
    pub leaf_treeids: Vec<i64>,
    pub leaf_nodeids: Vec<i64>,
    pub leaf_targetids: Vec<i64>,
    pub leaf_weights: Vec<f32>,
    pub base_values: Vec<f32>,
    pub aggregate: Option<Aggregate>,
    pub post_transform: Option<PostTransform>,
}

/// One decision node: 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Node {
    /// Feature index; bit 31 set when NaN goes to the true branch.
    feature: u32,
    threshold: u32,
    /// Child indices into `nodes` (a leaf's children are itself).
    yes: u32,
    no: u32,
}

/// Flattened, validated trees.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TreeEnsemble {
    nodes: Vec<Node>,
    /// Mode per node, only when the ensemble mixes modes.
    modes: Option<Vec<NodeMode>>,
    uniform_mode: NodeMode,
    roots: Vec<u32>,
    /// Depth of each tree (longest root-to-leaf path, in edges).
    depths: Vec<u32>,
    /// Leaf id of each node (`NOT_LEAF` for a decision node).
    leaf_of: Vec<u32>,
    /// When every leaf of a sum or average has exactly one vote, all for the same
    /// target (regressors, boosting, binary random forests, isolation trees): that
    /// target and each leaf's weight.
    single: Option<(u32, Vec<u32>)>,
    /// Leaf `i`'s votes are `votes[leaf_start[i]..leaf_start[i + 1]]`.
    leaf_start: Vec<u32>,
    votes: Vec<(u32, u32)>,
    n_targets: usize,
    n_features: usize,
    aggregate: Aggregate,
    post_transform: PostTransform,
    base_values: Vec<u32>,
}

impl TreeEnsemble {
    /// Checks and flattens `attrs` for `n_targets` outputs per row.
    pub fn build(attrs: &TreeAttributes, n_targets: usize) -> Result<TreeEnsemble, TreeError> {
        let n = attrs.nodes_treeids.len();
        let lens = [
            ("nodes_nodeids", attrs.nodes_nodeids.len()),
            ("nodes_featureids", attrs.nodes_featureids.len()),
            ("nodes_values", attrs.nodes_values.len()),
            ("nodes_modes", attrs.nodes_modes.len()),
            ("nodes_truenodeids", attrs.nodes_truenodeids.len()),
            ("nodes_falsenodeids", attrs.nodes_falsenodeids.len()),
        ];
        for (name, len) in lens {
            if len != n {
                return err(format!(
                    "{name} has {len} entries but nodes_treeids has {n}"
                ));
            }
        }
        let tracks = &attrs.nodes_missing_value_tracks_true;
        if !tracks.is_empty() && tracks.len() != n {
            return err(format!(
                "nodes_missing_value_tracks_true has {} entries but nodes_treeids has {n}",
                tracks.len()
            ));
        }
        let m = attrs.leaf_treeids.len();
        if attrs.leaf_nodeids.len() != m
            || attrs.leaf_targetids.len() != m
            || attrs.leaf_weights.len() != m
        {
            return err(
                "the leaf vote lists (tree ids, node ids, target ids, weights) differ in length",
            );
        }
        if n == 0 {
            return err("the ensemble has no nodes");
        }
        if n_targets == 0 {
            return err("the ensemble has no target or class");
        }
        if n >= (u32::MAX / 2) as usize || m >= u32::MAX as usize {
            return err("the ensemble is too large");
        }

        // (tree id, node id) -> index into the attribute lists.
        let mut key: Vec<(i64, i64, usize)> = (0..n)
            .map(|i| (attrs.nodes_treeids[i], attrs.nodes_nodeids[i], i))
            .collect();
        key.sort_unstable();
        if let Some(w) = key
            .windows(2)
            .find(|w| w[0].0 == w[1].0 && w[0].1 == w[1].1)
        {
            return err(format!("tree {} declares node {} twice", w[0].0, w[0].1));
        }
        let find = |tree: i64, node: i64| -> Option<usize> {
            key.binary_search_by(|k| (k.0, k.1).cmp(&(tree, node)))
                .ok()
                .map(|p| key[p].2)
        };

        // Votes per attribute index of their leaf.
        let mut votes_of: Vec<Vec<(u32, f32)>> = vec![Vec::new(); n];
        for j in 0..m {
            let (t, nd) = (attrs.leaf_treeids[j], attrs.leaf_nodeids[j]);
            let Some(i) = find(t, nd) else {
                return err(format!(
                    "a leaf vote names node {nd} of tree {t}, which does not exist"
                ));
            };
            let target = attrs.leaf_targetids[j];
            if target < 0 || target as usize >= n_targets {
                return err(format!(
                    "a leaf vote is for target {target}, outside 0..{n_targets}"
                ));
            }
            votes_of[i].push((target as u32, attrs.leaf_weights[j]));
        }

        // Trees in ascending id order (the order onnxruntime accumulates in).
        let mut tree_ids: Vec<i64> = attrs.nodes_treeids.clone();
        tree_ids.sort_unstable();
        tree_ids.dedup();

        let mut modes_seen: Option<NodeMode> = None;
        let mut mixed = false;
        for md in attrs.nodes_modes.iter().flatten() {
            match modes_seen {
                None => modes_seen = Some(*md),
                Some(s) if s != *md => mixed = true,
                _ => {}
            }
        }

        let mut out = TreeEnsemble {
            nodes: Vec::with_capacity(n),
            modes: mixed.then(Vec::new),
            uniform_mode: modes_seen.unwrap_or(NodeMode::Leq),
            roots: Vec::with_capacity(tree_ids.len()),
            depths: Vec::with_capacity(tree_ids.len()),
            leaf_of: Vec::with_capacity(n),
            single: None,
            leaf_start: vec![0],
            votes: Vec::with_capacity(m),
            n_targets,
            n_features: 0,
            aggregate: attrs.aggregate.unwrap_or(Aggregate::Sum),
            post_transform: attrs.post_transform.unwrap_or(PostTransform::None),
            base_values: attrs.base_values.iter().map(|v| v.to_bits()).collect(),
        };
        let mut visited = vec![false; n];
        for &tree in &tree_ids {
            let Some(root) = find(tree, 0) else {
                return err(format!("tree {tree} has no node 0 (its root)"));
            };
            let mut depth = 0;
            let r = out.place(
                attrs,
                tree,
                root,
                0,
                &mut depth,
                &find,
                &mut visited,
                &votes_of,
            )?;
            out.roots.push(r);
            out.depths.push(depth as u32);
        }
        if let Some(i) = visited.iter().position(|v| !v) {
            return err(format!(
                "node {} of tree {} is not reachable from its root",
                attrs.nodes_nodeids[i], attrs.nodes_treeids[i]
            ));
        }
        let n_leaves = out.leaf_start.len() - 1;
        let one_vote = (0..n_leaves).all(|l| out.leaf_start[l + 1] - out.leaf_start[l] == 1);
        let first_target = out.votes.first().map_or(0, |v| v.0);
        if one_vote
            && out.votes.iter().all(|v| v.0 == first_target)
            && matches!(out.aggregate, Aggregate::Sum | Aggregate::Average)
        {
            out.single = Some((first_target, out.votes.iter().map(|v| v.1).collect()));
        }
        Ok(out)
    }

    /// Lays out the subtree at attribute index `i` depth-first; returns its index.
    #[allow(clippy::too_many_arguments)]
    fn place(
        &mut self,
        attrs: &TreeAttributes,
        tree: i64,
        i: usize,
        depth: usize,
        max_depth: &mut usize,
        find: &dyn Fn(i64, i64) -> Option<usize>,
        visited: &mut [bool],
        votes_of: &[Vec<(u32, f32)>],
    ) -> Result<u32, TreeError> {
        if depth > MAX_DEPTH {
            return err(format!("tree {tree} is deeper than {MAX_DEPTH} levels"));
        }
        if std::mem::replace(&mut visited[i], true) {
            return err(format!(
                "node {} of tree {tree} is reached twice (the tree has a cycle or a shared node)",
                attrs.nodes_nodeids[i]
            ));
        }
        *max_depth = (*max_depth).max(depth);
        let Some(mode) = attrs.nodes_modes[i] else {
            let leaf = (self.leaf_start.len() - 1) as u32;
            self.votes
                .extend(votes_of[i].iter().map(|&(t, w)| (t, w.to_bits())));
            self.leaf_start.push(self.votes.len() as u32);
            let me = self.nodes.len() as u32;
            self.nodes.push(Node {
                feature: 0,
                threshold: 0,
                yes: me,
                no: me,
            });
            self.leaf_of.push(leaf);
            if let Some(m) = self.modes.as_mut() {
                m.push(NodeMode::Leq);
            }
            return Ok(me);
        };
        let feature = attrs.nodes_featureids[i];
        if !(0..(1 << 24)).contains(&feature) {
            return err(format!(
                "node {} of tree {tree} tests feature {feature}",
                attrs.nodes_nodeids[i]
            ));
        }
        self.n_features = self.n_features.max(feature as usize + 1);
        let nan_true = attrs
            .nodes_missing_value_tracks_true
            .get(i)
            .is_some_and(|&v| v != 0);
        let me = self.nodes.len();
        self.nodes.push(Node {
            feature: feature as u32 | if nan_true { NAN_TRUE } else { 0 },
            threshold: attrs.nodes_values[i].to_bits(),
            yes: 0,
            no: 0,
        });
        self.leaf_of.push(NOT_LEAF);
        if let Some(m) = self.modes.as_mut() {
            m.push(mode);
        }
        let mut child = |id: i64, side: &str| -> Result<u32, TreeError> {
            let Some(c) = find(tree, id) else {
                return err(format!(
                    "node {} of tree {tree} has a {side} child {id} that does not exist",
                    attrs.nodes_nodeids[i]
                ));
            };
            self.place(
                attrs,
                tree,
                c,
                depth + 1,
                max_depth,
                find,
                visited,
                votes_of,
            )
        };
        let yes = child(attrs.nodes_truenodeids[i], "true")?;
        let no = child(attrs.nodes_falsenodeids[i], "false")?;
        self.nodes[me].yes = yes;
        self.nodes[me].no = no;
        Ok(me as u32)
    }

    /// Number of input features the trees read (the highest index + 1).
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    pub fn n_targets(&self) -> usize {
        self.n_targets
    }

    pub fn n_trees(&self) -> usize {
        self.roots.len()
    }

    pub fn post_transform(&self) -> PostTransform {
        self.post_transform
    }

    pub fn base_values(&self) -> impl Iterator<Item = f32> + '_ {
        self.base_values.iter().map(|b| f32::from_bits(*b))
    }

    /// One step down from node `i` for row `x` (a leaf stays where it is).
    #[inline(always)]
    fn step(&self, i: u32, x: &[f32]) -> u32 {
        let n = &self.nodes[i as usize];
        let v = x[(n.feature & !NAN_TRUE) as usize];
        let t = f32::from_bits(n.threshold);
        let mode = match &self.modes {
            None => self.uniform_mode,
            Some(m) => m[i as usize],
        };
        let go = mode.test(v, t) | (v.is_nan() & (n.feature & NAN_TRUE != 0));
        if go { n.yes } else { n.no }
    }

    /// The leaf tree `t` sends one row to.
    #[inline(always)]
    fn leaf(&self, t: usize, x: &[f32]) -> u32 {
        let mut i = self.roots[t];
        loop {
            let leaf = self.leaf_of[i as usize];
            if leaf != NOT_LEAF {
                return leaf;
            }
            i = self.step(i, x);
        }
    }

    /// The leaves tree `t` sends `LANES` rows to.
    #[inline(always)]
    fn leaves(&self, t: usize, rows: &[&[f32]; LANES]) -> [u32; LANES] {
        let mut idx = [self.roots[t]; LANES];
        for d in 0..self.depths[t] {
            for l in 0..LANES {
                idx[l] = self.step(idx[l], rows[l]);
            }
            // Unbalanced trees: stop once every row sits in a leaf.
            if d % 4 == 3 && idx.iter().all(|&i| self.leaf_of[i as usize] != NOT_LEAF) {
                break;
            }
        }
        idx.map(|i| self.leaf_of[i as usize])
    }

    /// Aggregated raw scores (before base values and transforms) of `rows` rows of
    /// `width` features: `scores` and `has` get `rows * n_targets` entries.
    pub fn raw_scores(
        &self,
        x: &[f32],
        width: usize,
        scores: &mut Vec<f32>,
        has: &mut Vec<bool>,
    ) -> Result<usize, TreeError> {
        if width < self.n_features {
            return err(format!(
                "the input has {width} features; the trees read {}",
                self.n_features
            ));
        }
        let rows = x.len().checked_div(width).unwrap_or(0);
        let k = self.n_targets;
        scores.clear();
        scores.resize(rows * k, 0.0);
        has.clear();
        has.resize(rows * k, false);
        // Trees outside, rows inside, eight rows in lockstep.
        for r0 in (0..rows).step_by(LANES) {
            let n_live = (rows - r0).min(LANES);
            // A short last group repeats its last row; the extra lanes are ignored.
            let lane_rows: [&[f32]; LANES] = std::array::from_fn(|l| {
                let r = r0 + l.min(n_live - 1);
                &x[r * width..(r + 1) * width]
            });
            for t in 0..self.roots.len() {
                let leaves = if n_live == 1 {
                    let mut l = [0; LANES];
                    l[0] = self.leaf(t, lane_rows[0]);
                    l
                } else {
                    self.leaves(t, &lane_rows)
                };
                if let Some((target, single)) = &self.single {
                    for (l, leaf) in leaves.iter().enumerate().take(n_live) {
                        scores[(r0 + l) * k + *target as usize] +=
                            f32::from_bits(single[*leaf as usize]);
                    }
                    continue;
                }
                for (l, leaf) in leaves.iter().enumerate().take(n_live) {
                    let leaf = *leaf as usize;
                    let r = r0 + l;
                    let votes = &self.votes
                        [self.leaf_start[leaf] as usize..self.leaf_start[leaf + 1] as usize];
                    for &(target, w) in votes {
                        let w = f32::from_bits(w);
                        let o = r * k + target as usize;
                        let s = &mut scores[o];
                        *s = match self.aggregate {
                            Aggregate::Sum | Aggregate::Average => *s + w,
                            Aggregate::Min if has[o] => s.min(w),
                            Aggregate::Max if has[o] => s.max(w),
                            Aggregate::Min | Aggregate::Max => w,
                        };
                        has[o] = true;
                    }
                }
            }
        }
        if let Some((target, _)) = &self.single {
            for r in 0..rows {
                has[r * k + *target as usize] = true;
            }
        }
        Ok(rows)
    }

    /// Regressor outputs: `rows * n_targets` values.
    pub fn regress(&self, x: &[f32], width: usize, out: &mut Vec<f32>) -> Result<(), TreeError> {
        self.regress_with(x, width, out, &mut TreeScratch::default())
    }

    /// [`TreeEnsemble::regress`] with caller-owned scratch: allocation-free once
    /// `out` and `scratch` have grown to the batch size.
    pub fn regress_with(
        &self,
        x: &[f32],
        width: usize,
        out: &mut Vec<f32>,
        scratch: &mut TreeScratch,
    ) -> Result<(), TreeError> {
        let TreeScratch { has, base, row } = scratch;
        let rows = self.raw_scores(x, width, out, has)?;
        let k = self.n_targets;
        base.clear();
        base.extend(self.base_values());
        let n_trees = self.roots.len() as f32;
        row.clear();
        row.resize(k, 0.0);
        let row_buf = row;
        for r in 0..rows {
            let s = &mut out[r * k..(r + 1) * k];
            let h = &has[r * k..(r + 1) * k];
            if k == 1 {
                let origin = if base.len() == 1 { base[0] } else { 0.0 };
                let v = match self.aggregate {
                    Aggregate::Sum => s[0] + origin,
                    Aggregate::Average => s[0] / n_trees + origin,
                    Aggregate::Min | Aggregate::Max => {
                        if h[0] {
                            s[0] + origin
                        } else {
                            origin
                        }
                    }
                };
                s[0] = if self.post_transform == PostTransform::Probit {
                    probit(v)
                } else {
                    v
                };
                continue;
            }
            let use_base = base.len() == k;
            for j in 0..k {
                let b = if use_base { base[j] } else { 0.0 };
                row_buf[j] = match self.aggregate {
                    Aggregate::Sum => s[j] + b,
                    Aggregate::Average => s[j] / n_trees + b,
                    Aggregate::Min | Aggregate::Max => b + if h[j] { s[j] } else { 0.0 },
                };
            }
            transform_many(row_buf, self.post_transform);
            s.copy_from_slice(row_buf);
        }
        Ok(())
    }
}

/// Per-caller working memory of [`TreeEnsemble::regress_with`] and
/// [`TreeClassifier::classify_with`], kept between calls so a steady batch size
/// allocates nothing.
#[derive(Clone, Debug, Default)]
pub struct TreeScratch {
    has: Vec<bool>,
    base: Vec<f32>,
    row: Vec<f32>,
}

/// A classifier: a tree ensemble over class indices plus onnxruntime's rules for
/// turning class scores into a label and probabilities.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TreeClassifier {
    pub ensemble: TreeEnsemble,
    pub labels: Vec<i64>,
    /// Two classes and every vote for the same one (gradient boosting, and random
    /// forests exported with one probability column).
    binary_case: bool,
    weights_all_positive: bool,
}

impl TreeClassifier {
    pub fn build(attrs: &TreeAttributes, labels: Vec<i64>) -> Result<TreeClassifier, TreeError> {
        if labels.is_empty() {
            return err("the classifier has no class labels");
        }
        let ensemble = TreeEnsemble::build(attrs, labels.len())?;
        let mut voted: Vec<i64> = attrs.leaf_targetids.clone();
        voted.sort_unstable();
        voted.dedup();
        Ok(TreeClassifier {
            binary_case: labels.len() == 2 && voted.len() == 1,
            weights_all_positive: attrs.leaf_weights.iter().all(|w| *w >= 0.0),
            ensemble,
            labels,
        })
    }

    pub fn n_classes(&self) -> usize {
        self.labels.len()
    }

    /// Labels (`rows`) and probabilities (`rows * n_classes`) for `x`.
    pub fn classify(
        &self,
        x: &[f32],
        width: usize,
        labels: &mut Vec<i64>,
        probs: &mut Vec<f32>,
    ) -> Result<(), TreeError> {
        self.classify_with(x, width, labels, probs, &mut TreeScratch::default())
    }

    /// [`TreeClassifier::classify`] with caller-owned scratch: allocation-free once
    /// the buffers have grown to the batch size.
    pub fn classify_with(
        &self,
        x: &[f32],
        width: usize,
        labels: &mut Vec<i64>,
        probs: &mut Vec<f32>,
        scratch: &mut TreeScratch,
    ) -> Result<(), TreeError> {
        let TreeScratch {
            has,
            base,
            row: buf,
        } = scratch;
        let rows = self.ensemble.raw_scores(x, width, probs, has)?;
        let k = self.labels.len();
        base.clear();
        base.extend(self.ensemble.base_values());
        labels.clear();
        for r in 0..rows {
            let s = &mut probs[r * k..(r + 1) * k];
            let h = &mut has[r * k..(r + 1) * k];
            buf.clear();
            let label = if k > 2 {
                for (j, b) in base.iter().enumerate().take(k) {
                    s[j] += b;
                    h[j] = true;
                }
                let mut best: Option<usize> = None;
                for j in 0..k {
                    if h[j] && best.is_none_or(|b| s[j] > s[b]) {
                        best = Some(j);
                    }
                }
                buf.extend_from_slice(s);
                transform_many(buf, self.ensemble.post_transform);
                self.labels[best.unwrap_or(0)]
            } else {
                self.binary(s, h, base, buf)
            };
            labels.push(label);
            s.copy_from_slice(&buf[..k]);
        }
        Ok(())
    }

    /// The two-class rules; leaves two probabilities (or `k` values) in `buf`.
    fn binary(&self, s: &mut [f32], h: &mut [bool], base: &[f32], buf: &mut Vec<f32>) -> i64 {
        let k = s.len();
        // `extra`: how a single score becomes two columns (onnxruntime's
        // `add_second_class`); `None` = nothing to add.
        let mut extra: Option<u8> = None;
        let (mut s0, h0) = (s[0], h[0]);
        let (mut s1, h1) = if k == 2 { (s[1], h[1]) } else { (0.0, false) };
        let mut two = k == 2;
        match base.len() {
            2 => {
                if h1 {
                    s1 = base[1] + s0;
                    s0 = -s1;
                } else {
                    s1 += base[1];
                    s0 += base[0];
                }
            }
            1 => {
                s0 += base[0];
                if !h1 {
                    two = false;
                }
            }
            0 => {
                extra = Some(3);
                if !h1 {
                    two = false;
                }
            }
            _ => {}
        }
        let pos = if two && h1 {
            s1
        } else if h0 {
            s0
        } else {
            0.0
        };
        let label = if self.binary_case {
            let (label, e) = match (self.weights_all_positive, pos) {
                (true, p) if p > 0.5 => (self.labels[1], 0),
                (true, _) => (self.labels[0], 1),
                (false, p) if p > 0.0 => (self.labels[1], 2),
                (false, _) => (self.labels[0], 3),
            };
            extra = Some(e);
            label
        } else if pos > 0.0 {
            1
        } else {
            0
        };
        let pt = self.ensemble.post_transform;
        if two {
            buf.push(s0);
            buf.push(s1);
            transform_many(buf, pt);
        } else if pt == PostTransform::Probit {
            buf.push(probit(s0));
            buf.push(0.0);
        } else {
            match extra {
                Some(0 | 1) => {
                    buf.push(1.0 - s0);
                    buf.push(s0);
                }
                Some(2 | 3) if pt == PostTransform::Logistic => {
                    buf.push(logistic(-s0));
                    buf.push(logistic(s0));
                }
                Some(2) => {
                    buf.push(-s0);
                    buf.push(s0);
                }
                Some(_) => {
                    buf.push(s0);
                    buf.push(-s0);
                }
                None => {
                    buf.push(s0);
                    buf.push(0.0);
                }
            }
        }
        buf.resize(k.max(2), 0.0);
        label
    }
}

fn transform_many(v: &mut [f32], pt: PostTransform) {
    match pt {
        PostTransform::None => {}
        PostTransform::Logistic => v.iter_mut().for_each(|x| *x = logistic(*x)),
        PostTransform::Probit => v.iter_mut().for_each(|x| *x = probit(*x)),
        PostTransform::Softmax => {
            let max = v.iter().copied().fold(f32::MIN, f32::max);
            let mut sum = 0.0;
            for x in v.iter_mut() {
                *x = (*x - max).exp();
                sum += *x;
            }
            v.iter_mut().for_each(|x| *x /= sum);
        }
        PostTransform::SoftmaxZero => {
            let max = v.iter().copied().fold(f32::MIN, f32::max);
            let exp_neg_max = (-max).exp();
            let mut sum = 0.0;
            for x in v.iter_mut() {
                if x.abs() > 1e-7 {
                    *x = (*x - max).exp();
                    sum += *x;
                } else {
                    *x *= exp_neg_max;
                }
            }
            v.iter_mut().for_each(|x| *x /= sum);
        }
    }
}

/// The logistic function as onnxruntime computes it (symmetric, in `f32`).
#[inline]
pub fn logistic(x: f32) -> f32 {
    let v = 1.0 / (1.0 + (-x.abs()).exp());
    if x < 0.0 { 1.0 - v } else { v }
}

/// `sqrt(2) * erfinv(2x - 1)` with Winitzki's approximation, as onnxruntime does.
pub fn probit(x: f32) -> f32 {
    let y = x * 2.0 - 1.0;
    let sgn = if y < 0.0 { -1.0f32 } else { 1.0 };
    let z = (1.0 - y) * (1.0 + y);
    let ln = z.ln();
    let v = 2.0 / (std::f32::consts::PI * 0.147) + 0.5 * ln;
    let v2 = 1.0 / 0.147 * ln;
    let v3 = -v + (v * v - v2).sqrt();
    std::f32::consts::SQRT_2 * sgn * v3.sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two stumps on feature 0 and 1: tree 0 votes 1.0 if x0 <= 0.5 else 2.0;
    /// tree 1 votes 10.0 if x1 <= 0.0 else 20.0.
    fn stumps() -> TreeAttributes {
        TreeAttributes {
            nodes_treeids: vec![0, 0, 0, 1, 1, 1],
            nodes_nodeids: vec![0, 1, 2, 0, 1, 2],
            nodes_featureids: vec![0, 0, 0, 1, 0, 0],
            nodes_values: vec![0.5, 0.0, 0.0, 0.0, 0.0, 0.0],
            nodes_modes: vec![
                Some(NodeMode::Leq),
                None,
                None,
                Some(NodeMode::Leq),
                None,
                None,
            ],
            nodes_truenodeids: vec![1, 0, 0, 1, 0, 0],
            nodes_falsenodeids: vec![2, 0, 0, 2, 0, 0],
            nodes_missing_value_tracks_true: vec![],
            leaf_treeids: vec![0, 0, 1, 1],
            leaf_nodeids: vec![1, 2, 1, 2],
            leaf_targetids: vec![0, 0, 0, 0],
            leaf_weights: vec![1.0, 2.0, 10.0, 20.0],
            base_values: vec![],
            aggregate: None,
            post_transform: None,
        }
    }

    #[test]
    fn regressor_sums_tree_votes_per_row() {
        let e = TreeEnsemble::build(&stumps(), 1).expect("valid");
        let mut out = Vec::new();
        e.regress(&[0.0, 0.0, 1.0, 1.0, 0.5, -3.0], 2, &mut out)
            .expect("eval");
        assert_eq!(out, vec![11.0, 22.0, 11.0]);
        assert_eq!(e.n_features(), 2);
        assert_eq!(e.n_trees(), 2);
    }

    #[test]
    fn average_min_and_max_aggregate_like_onnxruntime() {
        let x = [1.0, -1.0];
        let mut a = stumps();
        a.base_values = vec![0.5];
        for (agg, want) in [
            (Aggregate::Average, 6.0 + 0.5),
            (Aggregate::Min, 2.0 + 0.5),
            (Aggregate::Max, 10.0 + 0.5),
        ] {
            a.aggregate = Some(agg);
            let e = TreeEnsemble::build(&a, 1).expect("valid");
            let mut out = Vec::new();
            e.regress(&x, 2, &mut out).expect("eval");
            assert_eq!(out, vec![want], "{agg:?}");
        }
    }

    #[test]
    fn nan_follows_the_missing_value_track() {
        let mut a = stumps();
        let e = TreeEnsemble::build(&a, 1).expect("valid");
        let mut out = Vec::new();
        e.regress(&[f32::NAN, f32::NAN], 2, &mut out).expect("eval");
        assert_eq!(out, vec![22.0], "NaN fails every comparison: false branch");
        a.nodes_missing_value_tracks_true = vec![1, 0, 0, 0, 0, 0];
        let e = TreeEnsemble::build(&a, 1).expect("valid");
        e.regress(&[f32::NAN, f32::NAN], 2, &mut out).expect("eval");
        assert_eq!(out, vec![21.0]);
    }

    #[test]
    fn malformed_trees_are_rejected_with_the_reason() {
        let mut cyc = stumps();
        cyc.nodes_truenodeids[0] = 0;
        let e = TreeEnsemble::build(&cyc, 1).expect_err("cycle");
        assert!(e.0.contains("reached twice"), "{e}");

        let mut dangling = stumps();
        dangling.nodes_falsenodeids[3] = 9;
        let e = TreeEnsemble::build(&dangling, 1).expect_err("dangling");
        assert!(e.0.contains("child 9 that does not exist"), "{e}");

        let mut short = stumps();
        short.nodes_values.pop();
        let e = TreeEnsemble::build(&short, 1).expect_err("short");
        assert!(e.0.contains("nodes_values has 5 entries"), "{e}");

        let mut far = stumps();
        far.leaf_targetids[0] = 3;
        let e = TreeEnsemble::build(&far, 1).expect_err("target");
        assert!(e.0.contains("target 3"), "{e}");

        let e = TreeEnsemble::build(&stumps(), 1).expect("valid");
        let mut out = Vec::new();
        let e = e.regress(&[0.0], 1, &mut out).expect_err("narrow input");
        assert!(e.0.contains("the trees read 2"), "{e}");
    }

    #[test]
    fn gradient_boosting_binary_uses_one_base_value_and_logistic() {
        let mut a = stumps();
        a.leaf_weights = vec![-1.0, 1.0, -0.5, 0.5];
        a.base_values = vec![0.25];
        a.post_transform = Some(PostTransform::Logistic);
        let c = TreeClassifier::build(&a, vec![0, 1]).expect("valid");
        let (mut labels, mut probs) = (Vec::new(), Vec::new());
        c.classify(&[0.0, 0.0, 1.0, 1.0], 2, &mut labels, &mut probs)
            .expect("eval");
        let raw0 = -1.0f32 - 0.5 + 0.25;
        let raw1 = 1.0f32 + 0.5 + 0.25;
        assert_eq!(labels, vec![0, 1]);
        assert_eq!(
            probs,
            vec![
                logistic(-raw0),
                logistic(raw0),
                logistic(-raw1),
                logistic(raw1)
            ]
        );
    }

    #[test]
    fn multiclass_takes_the_first_highest_score() {
        let mut a = stumps();
        a.leaf_targetids = vec![0, 2, 1, 2];
        a.post_transform = Some(PostTransform::Softmax);
        let c = TreeClassifier::build(&a, vec![7, 8, 9]).expect("valid");
        let (mut labels, mut probs) = (Vec::new(), Vec::new());
        c.classify(&[0.0, 0.0, 1.0, 1.0], 2, &mut labels, &mut probs)
            .expect("eval");
        assert_eq!(labels, vec![8, 9]);
        let sum: f32 = probs[..3].iter().sum();
        assert!((sum - 1.0).abs() < 1e-6);
    }

    #[test]
    fn probit_and_logistic_match_known_values() {
        assert!((probit(0.5)).abs() < 1e-6);
        assert!((probit(0.975) - 1.959_964).abs() < 5e-3);
        assert_eq!(logistic(0.0), 0.5);
        assert!((logistic(-3.0) + logistic(3.0) - 1.0).abs() < 1e-7);
    }
}
