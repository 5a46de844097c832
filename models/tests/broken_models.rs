//! Model files that trip tract itself: loading them is an error the agent can
//! report (a config error, a rejected version), never a panic that takes the
//! process down. Fixtures come from `models/train/recurrent.py`.
#![cfg(feature = "onnx")]

use std::path::Path;

use edge_models::onnx::OnnxModel;

#[test]
fn a_model_that_makes_tract_panic_while_loading_is_an_error() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/broken/lstm_data_dependent_batch.onnx");
    let bytes = std::fs::read(path).expect("fixture");
    let err = OnnxModel::load(&bytes).expect_err("the model cannot be sized");
    assert!(
        err.0
            .contains("the ONNX runtime (tract) panicked while loading the model"),
        "{err}"
    );
    // The process is still usable: a sound model loads after it.
    let sound = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity/lstm_without_initial_state.onnx");
    OnnxModel::load(&std::fs::read(sound).expect("fixture")).expect("a sound model loads");
}
