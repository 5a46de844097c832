//! Tree ensembles evaluated with caller-owned scratch allocate nothing once the
//! buffers have grown to the batch size (the gateway scores every window).
#![cfg(feature = "onnx")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use edge_models::onnx::trees::{
    NodeMode, PostTransform, TreeAttributes, TreeClassifier, TreeEnsemble, TreeScratch,
};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts calls on this thread.
#[allow(unsafe_code)] // a global allocator is the only way to count allocations
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

/// Two depth-1 trees over two features, voting for `targets` outputs.
fn stumps(targets: i64, post: PostTransform) -> TreeAttributes {
    let leaf = |t: i64| (0..targets).map(move |k| (t, k));
    let votes: Vec<(i64, i64, i64)> = [0i64, 1]
        .iter()
        .flat_map(|&tree| {
            [1i64, 2]
                .into_iter()
                .flat_map(move |n| leaf(tree).map(move |(t, k)| (t, n, k)))
        })
        .collect();
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
        leaf_treeids: votes.iter().map(|v| v.0).collect(),
        leaf_nodeids: votes.iter().map(|v| v.1).collect(),
        leaf_targetids: votes.iter().map(|v| v.2).collect(),
        leaf_weights: votes.iter().map(|v| 0.1 * (v.1 + 3 * v.2) as f32).collect(),
        base_values: vec![0.25; targets as usize],
        aggregate: None,
        post_transform: Some(post),
    }
}

fn batch(rows: usize) -> Vec<f32> {
    (0..rows * 2).map(|i| (i % 7) as f32 * 0.3 - 0.6).collect()
}

#[test]
fn regressors_allocate_nothing_in_steady_state() {
    for (targets, post) in [(1, PostTransform::None), (3, PostTransform::Softmax)] {
        let e = TreeEnsemble::build(&stumps(targets, post), targets as usize).expect("valid trees");
        let (mut out, mut scratch) = (Vec::new(), TreeScratch::default());
        let x = batch(64);
        e.regress_with(&x, 2, &mut out, &mut scratch)
            .expect("warm-up");
        let n = allocations_during(|| {
            for rows in [64, 1, 17, 64] {
                e.regress_with(&x[..rows * 2], 2, &mut out, &mut scratch)
                    .expect("eval");
            }
        });
        assert_eq!(n, 0, "{targets} targets: allocations after warm-up");
        assert_eq!(out.len(), 64 * targets as usize);
    }
}

#[test]
fn classifiers_allocate_nothing_in_steady_state() {
    for (classes, post) in [(2, PostTransform::Logistic), (3, PostTransform::Softmax)] {
        let attrs = stumps(classes, post);
        let c = TreeClassifier::build(&attrs, (0..classes).collect()).expect("valid trees");
        let (mut labels, mut probs, mut scratch) = (Vec::new(), Vec::new(), TreeScratch::default());
        let x = batch(64);
        c.classify_with(&x, 2, &mut labels, &mut probs, &mut scratch)
            .expect("warm-up");
        let n = allocations_during(|| {
            for rows in [64, 1, 17, 64] {
                c.classify_with(&x[..rows * 2], 2, &mut labels, &mut probs, &mut scratch)
                    .expect("eval");
            }
        });
        assert_eq!(n, 0, "{classes} classes: allocations after warm-up");
        assert_eq!(labels.len(), 64);
    }
}
