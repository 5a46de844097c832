//! The model zoo: every committed model validates against its manifest, and the
//! validation catches what an engineer can get wrong.
#![cfg(feature = "onnx")]

use std::path::{Path, PathBuf};

use edge_models::onnx::dry_run::dry_run;
use edge_models::onnx::manifest::{Manifest, ValidatedModel};

fn zoo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("zoo")
}

fn manifests() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(zoo())
        .expect("zoo")
        .filter_map(|e| {
            let p = e.ok()?.path().join("manifest.toml");
            p.exists().then_some(p)
        })
        .collect();
    v.sort();
    v
}

/// A scratch copy of one zoo model that a test may break.
struct Scratch(PathBuf);

impl Scratch {
    fn of(name: &str) -> Scratch {
        Scratch::copy(&zoo().join(name), name)
    }

    fn copy(from: &Path, name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "edge-zoo-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        for e in std::fs::read_dir(from).expect("model dir").flatten() {
            std::fs::copy(e.path(), dir.join(e.file_name())).expect("copy");
        }
        Scratch(dir)
    }

    fn manifest(&self) -> PathBuf {
        self.0.join("manifest.toml")
    }

    fn edit_reference(&self, f: impl FnOnce(&mut serde_json::Value)) {
        let r = self.0.join("reference.json");
        let mut doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&r).expect("read")).expect("json");
        f(&mut doc);
        std::fs::write(&r, doc.to_string()).expect("write");
    }

    fn edit_manifest(&self, f: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(self.manifest()).expect("read");
        std::fs::write(self.manifest(), f(text)).expect("write");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn errors(path: &Path) -> String {
    match ValidatedModel::load(path) {
        Ok(_) => panic!("{} should be rejected", path.display()),
        Err(errs) => errs
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[test]
fn the_zoo_holds_the_six_model_kinds() {
    let names: Vec<String> = manifests()
        .iter()
        .filter_map(|p| Some(p.parent()?.file_name()?.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(
        names,
        [
            "bearing_conv",
            "bearing_gbt",
            "bearing_mlp",
            "bearing_rf",
            "pump_iforest",
            "wear_linear"
        ]
    );
}

#[test]
fn every_zoo_model_matches_its_manifest_and_reference_outputs() {
    for m in manifests() {
        let v = ValidatedModel::load(&m).unwrap_or_else(|e| panic!("{}: {e:?}", m.display()));
        assert_eq!(v.sha256, v.manifest.model.sha256);
        assert_eq!(v.model.row_len(), v.manifest.input.row_len());
    }
}

#[test]
fn every_zoo_model_matches_onnxruntime_within_1e5() {
    for m in manifests() {
        let v = ValidatedModel::load(&m).unwrap_or_else(|e| panic!("{}: {e:?}", m.display()));
        let run = dry_run(
            &v.model,
            &v.manifest.outputs,
            &m.with_file_name("reference.json"),
            1e-5,
        );
        assert!(run.errors.is_empty(), "{}: {:#?}", m.display(), run.errors);
    }
}

#[test]
fn the_conv_model_reads_a_raw_vibration_window() {
    let v = ValidatedModel::load(&zoo().join("bearing_conv/manifest.toml")).expect("valid");
    let w = v.manifest.input.window.as_ref().expect("a raw window");
    assert_eq!(w.signals, ["vibration"]);
    assert_eq!(v.model.inputs()[0].shape[1..], [Some(1), Some(w.samples)]);
    assert_eq!(
        v.manifest.input.drift_inputs(),
        ["vibration.mean", "vibration.std"]
    );
    assert!(v.manifest.input.features.is_empty());
}

#[test]
fn raw_window_manifest_mistakes_are_reported_at_once() {
    let s = Scratch::of("bearing_conv");
    s.edit_manifest(|t| {
        t.replace("samples = 256", "samples = 200").replace(
            "[training.\"vibration.std\"]",
            "[training.\"vibration.rms\"]",
        )
    });
    let e = errors(&s.manifest());
    for want in [
        "window reads 1 signal(s) of 200 samples, a [batch, 1, 200] input, but the model's input is [batch, 1, 256]",
        "[training.\"vibration.std\"] is missing",
        "[training.\"vibration.rms\"] names a statistic",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    let s = Scratch::of("bearing_conv");
    s.edit_manifest(|t| {
        t.replace("window = {", "features = [\"vibration.rms\"]\nwindow = {")
            .replace(
                "signals = [\"vibration\"]",
                "signals = [\"vibration\", \"vibration\"]",
            )
    });
    let e = errors(&s.manifest());
    for want in [
        "has both `features` and `window`",
        "lists \"vibration\" twice",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

#[test]
fn a_changed_model_file_is_rejected_by_its_hash() {
    let s = Scratch::of("bearing_gbt");
    let f = s.0.join("bearing_gbt.onnx");
    let mut bytes = std::fs::read(&f).expect("read");
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&f, bytes).expect("write");
    let e = errors(&s.manifest());
    assert!(
        e.contains("has SHA-256") && e.contains("the file changed"),
        "{e}"
    );
}

#[test]
fn every_manifest_mistake_is_reported_at_once() {
    let s = Scratch::of("bearing_rf");
    s.edit_manifest(|t| {
        t.replace("\"current.std\", ", "")
            .replace("warning = 0.5", "warning = 0.9")
            .replace("name = \"X\"", "name = \"features\"")
    });
    let e = errors(&s.manifest());
    for want in [
        "lists 9 features but the model takes 10",
        "[training.\"current.std\"] names a feature that is not an input",
        "warning = 0.9 and prefault = 0.8 are in the wrong order",
        "[input] name \"features\", but the model's input is \"X\"",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

#[test]
fn a_dry_run_that_disagrees_with_the_reference_is_rejected() {
    let s = Scratch::of("wear_linear");
    s.edit_reference(|doc| {
        let data = &mut doc["outputs"]["variable"]["data"];
        for (i, by) in [(3, 0.5), (7, 2.0)] {
            let v = data[i].as_f64().expect("number");
            data[i] = serde_json::json!(v + by);
        }
    });
    let e = errors(&s.manifest());
    // Every mismatch counted, the largest one shown with its row.
    assert!(
        e.contains("dry run: output \"variable\": 2 of ") && e.contains("at row 7 column 0"),
        "{e}"
    );
}

#[test]
fn every_declared_output_must_be_in_the_reference() {
    let s = Scratch::of("bearing_gbt");
    s.edit_reference(|doc| {
        doc["outputs"]
            .as_object_mut()
            .expect("outputs")
            .remove("label");
    });
    let e = errors(&s.manifest());
    assert!(
        e.contains("the reference has no output \"label\" (it has probabilities)"),
        "{e}"
    );
}

#[test]
fn a_null_in_the_reference_is_a_mismatch_and_nan_must_be_spelled_out() {
    let s = Scratch::of("wear_linear");
    s.edit_reference(|doc| doc["outputs"]["variable"]["data"][2] = serde_json::Value::Null);
    let e = errors(&s.manifest());
    assert!(
        e.contains("1 of ") && e.contains("1 reference values are null or not numbers"),
        "{e}"
    );
    // "NaN" against our finite output is a mismatch too.
    let s = Scratch::of("wear_linear");
    s.edit_reference(|doc| doc["outputs"]["variable"]["data"][2] = serde_json::json!("NaN"));
    let e = errors(&s.manifest());
    assert!(e.contains("the reference \"NaN\""), "{e}");
}

#[test]
fn a_model_that_outputs_nan_on_finite_reference_inputs_fails_even_if_the_reference_agrees() {
    let fixture = zoo().join("../../tests/fixtures/nan_model");
    let s = Scratch::copy(&fixture, "nan_model");
    // sqrt(-x): a positive input gives NaN; the reference is made to expect it.
    s.edit_reference(|doc| {
        doc["inputs"][0] = serde_json::json!(1.0);
        doc["outputs"]["variable"]["data"][0] = serde_json::json!("NaN");
    });
    let e = errors(&s.manifest());
    assert!(
        e.contains("output \"variable\" is NaN on reference row 0, whose inputs are all finite"),
        "{e}"
    );
}

#[test]
fn a_passing_dry_run_reports_its_largest_difference_and_a_missing_reference_warns() {
    let v = ValidatedModel::load(&zoo().join("bearing_gbt/manifest.toml")).expect("valid");
    let run = v.dry_run.as_ref().expect("the zoo models have references");
    let lines = run.summary();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("output \"label\"") && l.contains("exact")),
        "{lines:?}"
    );
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    let s = Scratch::of("bearing_gbt");
    s.edit_manifest(|t| t.replace("[reference]\nfile = \"reference.json\"", ""));
    let v = ValidatedModel::load(&s.manifest()).expect("valid without a reference");
    assert!(v.dry_run.is_none());
    assert!(
        v.warnings.iter().any(|w| w.contains("no [reference]")),
        "{:?}",
        v.warnings
    );
}

#[test]
fn unknown_manifest_fields_point_at_their_line() {
    let p = Path::new("m.toml");
    let e = Manifest::parse(
        p,
        "[model]\nname = \"x\"\nversion = \"1\"\nfile = \"x.onnx\"\nsha256 = \"00\"\ncolour = \"red\"\n",
    )
    .expect_err("unknown field");
    assert!(e.message.contains("line 6"), "{}", e.message);
    assert!(e.message.contains("colour"), "{}", e.message);
}
