//! The zoo's models were trained on features (and raw windows) computed by
//! `edge_train` (`models/train`); the agent computes them with the same
//! `edge_models` code over the windows of its config. These tests hold the two
//! together: the training windows are the default config's pump windows, and the
//! reference rows each model was checked with still come out of the sim and the
//! feature code today, to 1e-6. A change to the physics, a window or a feature
//! definition that would silently shift what the models see fails here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use edge_driver_sim::physics::Quantity;
use edge_models::WindowSpec;
use edge_train::{COLUMNS, Run, window_config};

fn zoo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/zoo")
}

fn reference(model: &str) -> serde_json::Value {
    let p = zoo().join(model).join("reference.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("read reference")).expect("json")
}

/// Reference rows simulated at most this far into their run: enough rows (healthy
/// and worn runs, several machines) to catch a drift, in a few seconds of test.
const HORIZON_S: u64 = 2 * 3600;

/// The reference rows within [`HORIZON_S`]: (seed, run) -> [(t_s, row index)].
fn rows_to_check(doc: &serde_json::Value) -> BTreeMap<(u64, u64), Vec<(u64, usize)>> {
    let ids = doc["row_ids"]
        .as_array()
        .expect("reference.json has row_ids (models/train/train.py writes them)");
    assert_eq!(ids.len() as u64, doc["rows"].as_u64().expect("rows"));
    let mut by_run: BTreeMap<(u64, u64), Vec<(u64, usize)>> = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        let n = |k: usize| id[k].as_u64().expect("integer id");
        if n(2) <= HORIZON_S {
            by_run.entry((n(0), n(1))).or_default().push((n(2), i));
        }
    }
    for rows in by_run.values_mut() {
        rows.sort_unstable();
    }
    by_run
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-6 * want.abs().max(1.0)
}

#[test]
fn the_feature_models_share_one_set_of_reference_rows() {
    let rf = reference("bearing_rf");
    for model in ["bearing_gbt", "bearing_mlp", "pump_iforest", "wear_linear"] {
        let doc = reference(model);
        assert_eq!(doc["row_ids"], rf["row_ids"], "{model}");
        assert_eq!(doc["inputs"], rf["inputs"], "{model}");
    }
}

#[test]
fn the_feature_reference_rows_regenerate_from_the_sim() {
    // The feature models share their reference rows (checked above).
    for model in ["bearing_rf"] {
        let doc = reference(model);
        let width = doc["width"].as_u64().expect("width") as usize;
        assert_eq!(width, COLUMNS.len(), "{model}");
        let inputs = doc["inputs"].as_array().expect("inputs");
        let by_run = rows_to_check(&doc);
        let checked: usize = by_run.values().map(Vec::len).sum();
        assert!(
            checked >= 8,
            "{model}: only {checked} rows within the horizon"
        );
        for ((seed, run), rows) in by_run {
            let mut r = Run::new(seed, run);
            for (t, i) in rows {
                r.advance_to(t);
                let row = r.row().expect("feature row");
                for (c, (got, (sig, feat))) in row.iter().zip(COLUMNS).enumerate() {
                    let want = inputs[i * width + c].as_f64().expect("number");
                    // The reference holds the training data's float32.
                    let got = f64::from(*got as f32);
                    assert!(
                        close(got, want),
                        "{model}: run {run} of seed {seed} at {t} s: {sig}.{feat} is {got}, the model was trained on {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn the_raw_window_reference_rows_regenerate_from_the_sim() {
    let doc = reference("bearing_conv");
    let width = doc["width"].as_u64().expect("width") as usize;
    let inputs = doc["inputs"].as_array().expect("inputs");
    let by_run = rows_to_check(&doc);
    assert!(by_run.values().map(Vec::len).sum::<usize>() >= 4);
    for ((seed, run), rows) in by_run {
        let mut r = Run::new(seed, run);
        for (t, i) in rows {
            r.advance_to(t);
            let w = r.raw_vibration(width).expect("a full window");
            for (k, got) in w.iter().enumerate() {
                let want = inputs[i * width + k].as_f64().expect("number");
                assert!(
                    close(f64::from(*got as f32), want),
                    "run {run} at {t} s: sample {k} is {got}, the model was trained on {want}"
                );
            }
        }
    }
}

#[test]
fn training_windows_are_the_default_configs_pump_windows() {
    let cfg = edge_agent::config::parse("default-config.toml", edge_agent::config::DEFAULT_CONFIG)
        .expect("the default config is valid");
    let pump = cfg
        .assets
        .iter()
        .find(|a| &*a.name == "pump1")
        .expect("the default config has pump1");
    for q in Quantity::ALL {
        let signal = format!("pump1.{}", q.name());
        let w = pump
            .windows
            .iter()
            .find(|w| cfg.registry.name(w.signal) == signal)
            .unwrap_or_else(|| panic!("pump1 windows {signal}"));
        let (rate_hz, spec, features) = window_config(q);
        assert_eq!(w.features, features, "{signal}: bands and EWMA");
        match (w.spec, spec) {
            (WindowSpec::Count { .. }, WindowSpec::Count { .. }) => {
                assert_eq!(w.spec, spec, "{signal}")
            }
            (
                WindowSpec::Time {
                    size_ns,
                    hop_ns,
                    max_samples,
                },
                WindowSpec::Time {
                    size_ns: s,
                    hop_ns: h,
                    max_samples: m,
                },
            ) => {
                assert_eq!((size_ns, hop_ns), (s, h), "{signal}");
                // The buffer bound differs; both must hold a whole window.
                let held = (rate_hz * size_ns as f64 * 1e-9).ceil() as usize;
                assert!(held <= max_samples && held <= m, "{signal}");
            }
            (a, b) => panic!("{signal}: the agent windows {a:?}, training {b:?}"),
        }
    }
}
