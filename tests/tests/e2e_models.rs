#![allow(clippy::print_stdout)] // reports the measured lead times
//! Fault-prediction models end to end, in virtual time: the real agent runs the
//! zoo's models (`models/zoo/`) on a simulated pump with the windows they were
//! trained on. Covers alerts before the threshold alarm, a quiet healthy run,
//! hot swap under load (good and bad versions), quarantine of a model that returns
//! NaN, and input drift events.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edge_agent::RunOptions;
use edge_agent::alert::Alert;
use edge_agent::delivery::sink::AlertSink;
use edge_agent_tests::{TempDir, config, read_alerts};
use edge_driver_api::Clock;

fn zoo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/zoo")
}

const ROLES: &str = r#"roles = { vibration = "pump.vibration", temperature = "pump.temperature", current = "pump.current", pressure = "pump.pressure" }"#;

/// A pump like the training runs' (`models/train/examples/run_to_failure.rs`): the
/// same windows and bands, machine parameters inside the training ranges.
fn plant(jsonl: &Path, models_dir: &Path, faults: &str, models: &str) -> String {
    format!(
        r#"
[agent]
id = "e2e-models"
shutdown_timeout = "30s"

[alerts]
console = false
jsonl = "{jsonl}"

[models]
dir = "{dir}"

[[drivers]]
name = "plant"
kind = "sim"
seed = 11
tick = "1s"

[[drivers.machines]]
name = "pump"
rpm = 1480
sample_rate_hz = 1.0
vibration_rate_hz = 256.0
nominal_temp_c = 55.0
nominal_current_a = 12.0
nominal_pressure_bar = 6.0
noise = 1.0
{faults}

[[assets]]
name = "pump"

[[assets.signals]]
signal = "pump.temperature"
window = {{ size = "60s", hop = "10s" }}

[[assets.signals]]
signal = "pump.vibration"
window = {{ size = 512, hop = 512 }}
bands = [
  {{ name = "shaft", lo_hz = 0.0, hi_hz = 60.0 }},
  {{ name = "bearing", lo_hz = 60.0, hi_hz = 128.0 }},
]

[[assets.signals]]
signal = "pump.current"
window = {{ size = "60s", hop = "10s" }}

[[assets.signals]]
signal = "pump.pressure"
window = {{ size = "60s", hop = "10s" }}

[[assets.detectors]]
name = "temperature"
kind = "threshold"
signal = "pump.temperature"
warning = 75.0
critical = 85.0
hysteresis = 2.0
min_duration = "30s"
{models}
"#,
        jsonl = jsonl.display(),
        dir = models_dir.display(),
    )
}

fn binding(name: &str, manifest: &str) -> String {
    format!("\n[[assets.models]]\nname = \"{name}\"\nmanifest = \"{manifest}\"\n{ROLES}\n")
}

/// Keeps every event the agent publishes.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<serde_json::Value>>>);

impl Events {
    fn of_kind(&self, kind: &str) -> Vec<serde_json::Value> {
        self.0
            .lock()
            .expect("events lock")
            .iter()
            .filter(|e| e["kind"] == kind)
            .cloned()
            .collect()
    }
}

impl AlertSink for Events {
    fn name(&self) -> &str {
        "test-events"
    }
    fn deliver(&mut self, _alert: &Alert) -> std::io::Result<()> {
        Ok(())
    }
    fn event(&mut self, _source: &str, _wall_ns: i64, body: &[u8]) -> std::io::Result<()> {
        let v = serde_json::from_slice(body).map_err(std::io::Error::other)?;
        self.0.lock().expect("events lock").push(v);
        Ok(())
    }
}

fn options(events: &Events) -> RunOptions {
    RunOptions {
        clock: Some(Clock::virtual_from(1_795_000_000_000_000_000)),
        id_seed: Some(3),
        extra_sinks: vec![Box::new(events.clone())],
        ..RunOptions::default()
    }
}

async fn stop(handle: edge_agent::AgentHandle) -> edge_agent::RunReport {
    let report = tokio::time::timeout(Duration::from_secs(60), handle.stop())
        .await
        .expect("agent stops within its shutdown timeout")
        .expect("clean stop");
    assert_eq!(
        report.ring.dropped(),
        0,
        "samples dropped: {:?}",
        report.ring
    );
    assert!(!report.shutdown_timed_out);
    report
}

fn mono_h(a: &serde_json::Value) -> f64 {
    a["time"]["mono_ns"].as_u64().expect("mono_ns") as f64 / 3.6e12
}

fn first_raise<'a>(
    alerts: &'a [serde_json::Value],
    detector: &str,
) -> Option<&'a serde_json::Value> {
    alerts
        .iter()
        .find(|a| a["detector"] == detector && a["state"] == "raised")
}

/// Bearing wear from 1 h to 7 h.
const WEAR: &str = r#"
[[drivers.machines.faults]]
kind = "bearing_wear"
start = "1h"
duration = "6h"
"#;

/// The fault classifiers: three on window features, one (the 1-D conv) on the raw
/// vibration samples.
const MODELS: [(&str, &str); 4] = [
    ("bearing-rf", "bearing_rf/manifest.toml"),
    ("bearing-gbt", "bearing_gbt/manifest.toml"),
    ("bearing-mlp", "bearing_mlp/manifest.toml"),
    ("bearing-conv", "bearing_conv/manifest.toml"),
];

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn bearing_wear_models_alert_before_the_temperature_alarm() {
    let dir = TempDir::new("models-wear");
    let jsonl = dir.path().join("alerts.jsonl");
    let models: String = MODELS.iter().map(|(n, m)| binding(n, m)).collect();
    let src = plant(&jsonl, &zoo(), WEAR, &models);
    let events = Events::default();
    let handle = edge_agent::start(config("models.toml", &src), options(&events)).expect("starts");
    tokio::time::sleep(Duration::from_secs(8 * 3600)).await;
    let report = stop(handle).await;
    let alerts = read_alerts(&jsonl);
    let alarm = alerts
        .iter()
        .find(|a| a["detector"] == "temperature" && a["state"] == "raised")
        .unwrap_or_else(|| panic!("the wear never reached the 75 °C alarm: {alerts:#?}"));
    let t_alarm = mono_h(alarm);
    for (name, _) in MODELS {
        let raise = first_raise(&alerts, name)
            .unwrap_or_else(|| panic!("{name} never alerted: {alerts:#?}"));
        let lead = t_alarm - mono_h(raise);
        println!(
            "{name}: {} at {:.2} h, temperature alarm at {t_alarm:.2} h: lead {lead:.2} h ({})",
            raise["severity"],
            mono_h(raise),
            raise["message"]
        );
        assert!(
            lead > 0.25,
            "{name} alerted only {lead:.2} h before the alarm"
        );
        assert_eq!(raise["kind"], "model");
        assert_eq!(raise["feature"], "fault_probability");
        assert_eq!(raise["signals"].as_array().map(Vec::len), Some(4));
        let model = &raise["model"];
        assert_eq!(model["version"], "1.0.0");
        assert_eq!(model["sha256"].as_str().map(str::len), Some(64));
        // The alert shows the model's input row, or for the raw-window model
        // the window's mean and standard deviation.
        let shown = if name == "bearing-conv" {
            "vibration.std"
        } else {
            "vibration.band:bearing"
        };
        assert!(
            raise["features"][shown].is_number(),
            "the alert carries the model's inputs: {raise}"
        );
        assert!(raise["score"].as_f64().is_some_and(|p| p >= 0.5));
    }
    // Four models scored every 10 s of the 8 h (minus the first minute).
    let rows = report.pipeline.model_rows;
    assert!(
        (8 * 360 * 4 - 40..=8 * 360 * 4).contains(&rows),
        "rows scored: {rows}"
    );
    assert_eq!(report.pipeline.model_errors, 0);
    assert_eq!(
        report.pipeline.model_rows_skipped, 0,
        "the 512-sample vibration window always holds the conv model's 256"
    );
    assert!(events.of_kind("model_rejected").is_empty());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_healthy_pump_stays_quiet_under_every_model() {
    let dir = TempDir::new("models-healthy");
    let jsonl = dir.path().join("alerts.jsonl");
    let mut models: String = MODELS.iter().map(|(n, m)| binding(n, m)).collect();
    models.push_str(&binding("wear", "wear_linear/manifest.toml"));
    let src = plant(&jsonl, &zoo(), "", &models);
    let events = Events::default();
    let handle = edge_agent::start(config("models.toml", &src), options(&events)).expect("starts");
    tokio::time::sleep(Duration::from_secs(12 * 3600)).await;
    let report = stop(handle).await;
    let alerts = read_alerts(&jsonl);
    assert!(alerts.is_empty(), "false alarms: {alerts:#?}");
    assert!(
        events.of_kind("model_drift").is_empty(),
        "a healthy pump inside the training ranges drifted: {:#?}",
        events.of_kind("model_drift")
    );
    assert!(report.pipeline.model_rows >= 12 * 360 * 5 - 50);
    assert_eq!(report.pipeline.model_errors, 0);
}

/// A stuck vibration sensor makes the window constant: its kurtosis and crest are
/// undefined (NaN). tract would turn those NaN inputs into a confident score; the
/// rows are not scored and are counted instead.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn rows_with_a_nan_input_are_not_scored_and_are_counted() {
    let dir = TempDir::new("models-nan-input");
    let jsonl = dir.path().join("alerts.jsonl");
    let stuck = r#"
[[drivers.machines.faults]]
kind = "stuck"
signal = "vibration"
start = "1h"
"#;
    let src = plant(
        &jsonl,
        &zoo(),
        stuck,
        &binding("rf", "bearing_rf/manifest.toml"),
    );
    let events = Events::default();
    let handle = edge_agent::start(config("models.toml", &src), options(&events)).expect("starts");
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    let report = stop(handle).await;
    let alerts = read_alerts(&jsonl);
    let p = &report.pipeline;
    // Rows every 10 s: about an hour scored, then two hours of NaN kurtosis.
    assert!(p.model_rows >= 300 && p.model_rows <= 400, "{p:?}");
    assert!(p.model_rows_unusable >= 600, "{p:?}");
    assert_eq!(p.model_errors, 0, "not a model failure: no quarantine");
    assert!(
        alerts
            .iter()
            .all(|a| a["detector"] != "rf" && a["detector"] != "rf.health"),
        "{alerts:#?}"
    );
}

const VIBRATION_WINDOW: &str = "window = { size = 512, hop = 512 }";

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_window_shorter_than_the_raw_model_reads_skips_rows_and_counts_them() {
    let dir = TempDir::new("models-short");
    let jsonl = dir.path().join("alerts.jsonl");
    // Half-second windows hold 128 samples at 256 Hz; the conv model reads 256.
    // The buffer may hold 512, so the config is accepted.
    let src = plant(
        &jsonl,
        &zoo(),
        "",
        &binding("conv", "bearing_conv/manifest.toml"),
    )
    .replace(
        VIBRATION_WINDOW,
        r#"window = { size = "500ms", hop = "500ms", max_samples = 512 }"#,
    );
    assert!(!src.contains(VIBRATION_WINDOW));
    let events = Events::default();
    let handle = edge_agent::start(config("models.toml", &src), options(&events)).expect("starts");
    tokio::time::sleep(Duration::from_secs(600)).await;
    let report = stop(handle).await;
    assert_eq!(report.pipeline.model_rows, 0);
    assert_eq!(
        report.pipeline.model_errors, 0,
        "a short window is not a model error"
    );
    assert!(
        report.pipeline.model_rows_skipped >= 500,
        "every completed window was a skipped row: {:?}",
        report.pipeline
    );
    assert!(read_alerts(&jsonl).is_empty(), "nothing to quarantine");
}

#[test]
fn a_window_that_can_never_hold_the_raw_model_samples_is_a_config_error() {
    let src = plant(
        Path::new("/nonexistent/alerts.jsonl"),
        &zoo(),
        "",
        &binding("conv", "bearing_conv/manifest.toml"),
    )
    .replace(VIBRATION_WINDOW, "window = { size = 128, hop = 128 }");
    let e = match edge_agent::config::parse("models.toml", &src) {
        Ok(_) => panic!("a 128-sample window accepted for a 256-sample model"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("the last 256 samples of role `vibration`")
            && e.contains("at least 256 samples"),
        "{e}"
    );
    assert!(
        e.contains("models.toml:"),
        "the error points into the file: {e}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn inputs_outside_the_training_data_raise_a_drift_event() {
    let dir = TempDir::new("models-drift");
    let jsonl = dir.path().join("alerts.jsonl");
    // Pressure at 9 bar: the training runs saw 5.5 to 6.5.
    let src = plant(
        &jsonl,
        &zoo(),
        "",
        &binding("bearing-rf", "bearing_rf/manifest.toml"),
    )
    .replace("nominal_pressure_bar = 6.0", "nominal_pressure_bar = 9.0");
    let events = Events::default();
    let handle = edge_agent::start(config("models.toml", &src), options(&events)).expect("starts");
    tokio::time::sleep(Duration::from_secs(3600)).await;
    stop(handle).await;
    let drift = events.of_kind("model_drift");
    assert_eq!(drift.len(), 1, "{drift:#?}");
    let d = &drift[0];
    assert_eq!(d["driver"], "models");
    assert_eq!(d["signal"], "pump.pressure");
    assert_eq!(d["model"]["feature"], "pressure.mean");
    assert_eq!(d["model"]["binding"], "bearing-rf");
    assert!(d["model"]["z"].as_f64().is_some_and(|z| z > 4.0), "{d}");
    assert!(
        d["value"].as_str().is_some_and(|v| v.contains("drifted")),
        "{d}"
    );
}

/// Copies a zoo model into `dir/<name>/`.
fn copy_model(name: &str, dir: &Path) -> PathBuf {
    let to = dir.join(name);
    std::fs::create_dir_all(&to).expect("model dir");
    for e in std::fs::read_dir(zoo().join(name)).expect("zoo dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
    to.join("manifest.toml")
}

fn set_version(manifest: &Path, version: &str) {
    let text = std::fs::read_to_string(manifest).expect("manifest");
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("version = ") {
            out.push_str(&format!("version = \"{version}\""));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    std::fs::write(manifest, out).expect("write manifest");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hot_swaps_under_load_lose_no_sample_and_keep_the_old_model_on_a_bad_file() {
    let dir = TempDir::new("models-swap");
    let jsonl = dir.path().join("alerts.jsonl");
    let models_dir = dir.path().join("models");
    let manifest = copy_model("bearing_rf", &models_dir);
    let src = plant(
        &jsonl,
        &models_dir,
        WEAR,
        &binding("bearing-rf", "bearing_rf/manifest.toml"),
    );
    let events = Events::default();
    let handle = edge_agent::start(config("models.toml", &src), options(&events)).expect("starts");
    let onnx = models_dir.join("bearing_rf/bearing_rf.onnx");
    let good = std::fs::read(&onnx).expect("model bytes");
    let mut swaps = 0;
    // Eight hours in steps of 20 simulated minutes, a new version at every step;
    // the fifth step writes a truncated model file instead.
    for step in 1..=24 {
        tokio::time::sleep(Duration::from_secs(20 * 60)).await;
        if step == 5 {
            std::fs::write(&onnx, &good[..good.len() / 3]).expect("bad file");
        } else {
            std::fs::write(&onnx, &good).expect("good file");
            set_version(&manifest, &format!("1.0.{step}"));
            swaps += 1;
        }
        handle.reload_models();
        // Let the watcher load and validate (a blocking task: the clock holds).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let current = handle.models().handles[0].current();
        if step == 5 {
            assert_eq!(
                current.manifest.model.version, "1.0.4",
                "a bad file must not replace the running model"
            );
            assert!(handle.models().handles[0].last_rejection().is_some());
        } else {
            assert_eq!(current.manifest.model.version, format!("1.0.{step}"));
        }
    }
    assert_eq!(
        handle.models().handles[0]
            .swaps
            .load(std::sync::atomic::Ordering::Relaxed),
        swaps
    );
    // The pipeline follows a new version at its next batch.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let report = stop(handle).await;
    assert_eq!(report.pipeline.model_swaps, swaps, "{:?}", report.pipeline);
    // Scoring never paused: every 10 s of the 8 h has a row.
    assert!(
        report.pipeline.model_rows >= 8 * 360 - 10,
        "rows: {}",
        report.pipeline.model_rows
    );
    // 8 h of 3 signals at 1 Hz and vibration at 256 Hz, none lost.
    let expected = 8 * 3600 * (3 + 256);
    assert!(
        report.pipeline.samples as f64 >= expected as f64 * 0.9999,
        "samples {} of {expected}",
        report.pipeline.samples
    );
    assert_eq!(report.pipeline.unusable, 0);
    let rejected = events.of_kind("model_rejected");
    assert_eq!(rejected.len(), 1, "{rejected:#?}");
    assert!(
        rejected[0]["value"]
            .as_str()
            .is_some_and(|v| v.contains("SHA-256") && v.contains("1.0.4 keeps running")),
        "{}",
        rejected[0]
    );
    assert_eq!(events.of_kind("model_swapped").len() as u64, swaps);
    // Alerts name the version that raised them.
    let alerts = read_alerts(&jsonl);
    let raise = first_raise(&alerts, "bearing-rf").expect("the wear is detected");
    let v = raise["model"]["version"].as_str().expect("version");
    assert!(v.starts_with("1.0."), "{raise}");
    assert_ne!(v, "1.0.0", "raised after swaps began: {raise}");
}

/// A model that loads cleanly (hash, ports and its reference rows check out) and
/// returns NaN for every real row: `tests/fixtures/nan_model/make.py`.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_model_that_returns_nan_is_quarantined_and_the_builtin_detectors_carry_on() {
    let dir = TempDir::new("models-quarantine");
    let jsonl = dir.path().join("alerts.jsonl");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let src = plant(
        &jsonl,
        &fixtures,
        WEAR,
        &binding("scorer", "nan_model/manifest.toml"),
    );
    let events = Events::default();
    let handle = edge_agent::start(config("models.toml", &src), options(&events)).expect("starts");
    tokio::time::sleep(Duration::from_secs(7 * 3600)).await;
    let status = handle.status();
    let report = stop(handle).await;
    let alerts = read_alerts(&jsonl);

    // Quarantined after `quarantine_after` (3) unusable rows in a row, once.
    let health: Vec<_> = alerts
        .iter()
        .filter(|a| a["detector"] == "scorer.health")
        .collect();
    assert_eq!(health.len(), 1, "{health:#?}");
    let q = health[0];
    assert_eq!(q["kind"], "model_health");
    assert_eq!(q["severity"], "warning");
    assert_eq!(q["state"], "raised");
    assert_eq!(q["model"]["name"], "nan_in_service");
    let msg = q["message"].as_str().unwrap_or_default();
    assert!(msg.contains("quarantined"), "{msg}");
    assert!(mono_h(q) < 0.1, "quarantined late: {} h", mono_h(q));
    // The model raised nothing itself; its errors stopped at the quarantine.
    assert!(
        alerts.iter().all(|a| a["detector"] != "scorer"),
        "{alerts:#?}"
    );
    assert_eq!(report.pipeline.model_errors, 3);
    let binding = &status.models[0].bindings[0];
    assert!(binding.quarantined, "{status:#?}");
    // The asset's own detectors still work: the wear reaches the 75 °C alarm.
    assert!(
        first_raise(&alerts, "temperature").is_some(),
        "the built-in detectors stopped: {alerts:#?}"
    );
}

/// The "update the sha256" hint is given for a hash mismatch only: for any other
/// problem with a model it would send the user the wrong way.
#[test]
fn only_a_hash_mismatch_suggests_updating_the_sha256() {
    let dir = TempDir::new("models-hints");
    let manifest = copy_model("bearing_rf", dir.path());
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    let check = |manifest_text: String| {
        std::fs::write(&manifest, manifest_text).expect("write manifest");
        let src = plant(
            &dir.path().join("alerts.jsonl"),
            dir.path(),
            "",
            &binding("rf", "bearing_rf/manifest.toml"),
        );
        match edge_agent::config::parse("models.toml", &src) {
            Ok(_) => panic!("a broken model was accepted"),
            Err(e) => e.to_string(),
        }
    };
    let sha = text
        .lines()
        .find_map(|l| l.strip_prefix("sha256 = "))
        .expect("a sha256 line")
        .trim_matches('"')
        .to_string();
    let wrong_hash = check(text.replace(&sha, &"0".repeat(64)));
    assert!(wrong_hash.contains("has SHA-256"), "{wrong_hash}");
    assert!(wrong_hash.contains("sha256sum"), "{wrong_hash}");
    let file = text
        .lines()
        .find_map(|l| l.strip_prefix("file = "))
        .expect("a file line")
        .trim_matches('"')
        .to_string();
    let missing_file = check(text.replace(&file, "nowhere.onnx"));
    assert!(
        missing_file.contains("cannot read the model file"),
        "{missing_file}"
    );
    assert!(!missing_file.contains("sha256"), "{missing_file}");
}
