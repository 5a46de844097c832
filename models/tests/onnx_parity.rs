//! Plain scikit-learn exports (skl2onnx) load and match onnxruntime.
//!
//! Fixtures come from `models/train/parity.py`: each `<name>.onnx` with a
//! `<name>.json` holding the inputs and onnxruntime's outputs. Scores must agree
//! within 1e-5, labels exactly.
#![cfg(feature = "onnx")]

use std::path::{Path, PathBuf};

use edge_models::onnx::{OnnxModel, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity")
}

fn num(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn check(name: &str) {
    let dir = fixtures();
    let bytes = std::fs::read(dir.join(format!("{name}.onnx"))).expect("model file");
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{name}.json"))).expect("reference file"),
    )
    .expect("reference JSON");
    let model = OnnxModel::load(&bytes).unwrap_or_else(|e| panic!("{name} loads: {e}"));
    let rows = reference["rows"].as_u64().expect("rows") as usize;
    let x: Vec<f32> = reference["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|v| num(v) as f32)
        .collect();
    let mut session = model.session().expect("session");
    let outs = session
        .run(&x, rows)
        .unwrap_or_else(|e| panic!("{name} runs: {e}"));
    let want = reference["outputs"].as_object().expect("outputs");
    assert_eq!(outs.len(), want.len(), "{name}: number of outputs");
    for (port, out) in model.outputs().iter().zip(&outs) {
        let r = &want[&port.name];
        let shape: Vec<usize> = r["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_u64().expect("dim") as usize)
            .collect();
        // onnxruntime reports regressor outputs as [N, 1]; labels as [N].
        assert_eq!(out.shape(), &shape[..], "{name}.{}: shape", port.name);
        let data: Vec<f64> = r["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(num)
            .collect();
        match out {
            Output::I64 { data: got, .. } => {
                let got: Vec<f64> = got.iter().map(|v| *v as f64).collect();
                assert_eq!(got, data, "{name}.{}: labels", port.name);
            }
            Output::F32 { data: got, .. } => {
                for (i, (g, w)) in got.iter().zip(&data).enumerate() {
                    let g = *g as f64;
                    let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-5 * w.abs().max(1.0);
                    assert!(ok, "{name}.{}[{i}]: ours {g}, onnxruntime {w}", port.name);
                }
            }
        }
    }
}

#[test]
fn random_forest_binary_matches_onnxruntime_including_labels() {
    check("rf_binary");
}

#[test]
fn random_forest_multiclass_matches_onnxruntime() {
    check("rf_multiclass");
}

#[test]
fn random_forest_regressor_matches_onnxruntime() {
    check("rf_regressor");
}

#[test]
fn gradient_boosting_binary_with_one_base_value_matches_onnxruntime() {
    check("gbt_binary");
}

#[test]
fn gradient_boosting_multiclass_matches_onnxruntime() {
    check("gbt_multiclass");
}

#[test]
fn gradient_boosting_regressor_matches_onnxruntime() {
    check("gbt_regressor");
}

#[test]
fn isolation_forest_with_label_encoders_matches_onnxruntime() {
    check("isolation_forest");
}

#[test]
fn standard_scaler_and_mlp_pipeline_matches_onnxruntime() {
    check("scaler_mlp");
}

#[test]
fn linear_regression_matches_onnxruntime() {
    check("linear_regression");
}

#[test]
fn an_lstm_without_initial_state_loads_and_matches_onnxruntime() {
    check("lstm_without_initial_state");
}

#[test]
fn a_gru_without_initial_state_loads_and_matches_onnxruntime() {
    check("gru_without_initial_state");
}

/// tract's scan carries a recurrent layer's state from one call to the next (for
/// streaming); every window we score stands alone, so a session must not.
#[test]
fn a_recurrent_model_scores_every_call_on_a_fresh_state() {
    let dir = fixtures();
    let bytes = std::fs::read(dir.join("lstm_without_initial_state.onnx")).expect("model file");
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("lstm_without_initial_state.json")).expect("reference"),
    )
    .expect("reference JSON");
    let x: Vec<f32> = reference["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|v| num(v) as f32)
        .collect();
    let want = reference["outputs"]["score"]["data"]
        .as_array()
        .expect("scores");
    let model = OnnxModel::load(&bytes).expect("loads");
    let len = model.row_len();
    let mut session = model.session().expect("session");
    for (i, w) in want.iter().enumerate().take(4) {
        let out = session.run(&x[i * len..(i + 1) * len], 1).expect("runs");
        let got = out[0].to_f64()[0];
        assert!(
            (got - num(w)).abs() <= 1e-5,
            "call {i}: ours {got}, onnxruntime {w}"
        );
    }
}

#[test]
fn every_fixture_has_a_test() {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .expect("fixtures")
        .filter_map(|e| {
            let p = e.ok()?.path();
            if p.extension()? != "onnx" {
                return None;
            }
            Some(p.file_stem()?.to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    let covered = [
        "gbt_binary",
        "gbt_multiclass",
        "gbt_regressor",
        "gru_without_initial_state",
        "isolation_forest",
        "linear_regression",
        "lstm_without_initial_state",
        "rf_binary",
        "rf_multiclass",
        "rf_regressor",
        "scaler_mlp",
    ];
    assert_eq!(names, covered);
}
