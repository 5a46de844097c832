//! Tree-sum fusion: skl2onnx's isolation forests (one tree and ~25 element-wise
//! nodes per tree, summed) load as one tree ensemble and compute what the unfused
//! graph computes.
#![cfg(feature = "onnx")]

use std::path::{Path, PathBuf};

use edge_models::onnx::{OnnxModel, Output};

fn path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn bytes(rel: &str) -> Vec<u8> {
    std::fs::read(path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

const FORESTS: [&str; 2] = [
    "zoo/pump_iforest/pump_iforest.onnx",
    "tests/fixtures/parity/isolation_forest.onnx",
];

/// Deterministic rows around the training range, with NaN and extremes mixed in.
fn rows(n: usize, width: usize) -> Vec<f32> {
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n * width)
        .map(|i| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            match i % 97 {
                13 => f32::NAN,
                29 => 1e30,
                41 => -1e30,
                _ => (u - 0.5) * 8.0,
            }
        })
        .collect()
}

/// The model at `rel` loaded with and without fusion.
fn fused_and_plain(rel: &str) -> (OnnxModel, OnnxModel) {
    let b = bytes(rel);
    let fused = OnnxModel::load(&b).expect("fused load");
    let plain = OnnxModel::load_with(&b, false).expect("unfused load");
    (fused, plain)
}

#[test]
fn isolation_forests_load_as_one_tree_ensemble() {
    for rel in FORESTS {
        let (fused, plain) = fused_and_plain(rel);
        assert!(
            fused.fused_trees() >= 10,
            "{rel}: {} trees fused",
            fused.fused_trees()
        );
        assert_eq!(plain.fused_trees(), 0);
        assert!(
            fused.plan_nodes() * 20 < plain.plan_nodes(),
            "{rel}: {} plan nodes fused, {} unfused",
            fused.plan_nodes(),
            plain.plan_nodes()
        );
    }
}

#[test]
fn fused_isolation_forests_match_the_unfused_graph_row_for_row() {
    for rel in FORESTS {
        let (fused, plain) = fused_and_plain(rel);
        let width = fused.row_len();
        let (mut fs, mut ps) = (
            fused.session().expect("session"),
            plain.session().expect("session"),
        );
        for n in [1, 7, 64] {
            let x = rows(n, width);
            let (a, b) = (
                fs.run(&x, n).expect("fused run"),
                ps.run(&x, n).expect("unfused run"),
            );
            assert_eq!(a.len(), b.len());
            for (a, b) in a.iter().zip(&b) {
                assert_eq!(a.shape(), b.shape(), "{rel}: shapes");
                match (a, b) {
                    (Output::I64 { data: a, .. }, Output::I64 { data: b, .. }) => {
                        assert_eq!(a, b, "{rel}: labels")
                    }
                    (Output::F32 { data: a, .. }, Output::F32 { data: b, .. }) => {
                        for (i, (x, y)) in a.iter().zip(b).enumerate() {
                            assert!(
                                (x - y).abs() <= 1e-6,
                                "{rel}: row {i}: {x} fused, {y} unfused"
                            );
                        }
                    }
                    _ => panic!("{rel}: output types differ"),
                }
            }
        }
    }
}

#[test]
fn other_tree_models_are_not_rewritten() {
    for rel in [
        "tests/fixtures/parity/rf_binary.onnx",
        "tests/fixtures/parity/gbt_regressor.onnx",
        "zoo/bearing_rf/bearing_rf.onnx",
    ] {
        let m = OnnxModel::load(&bytes(rel)).expect("load");
        assert_eq!(m.fused_trees(), 0, "{rel}");
    }
}
