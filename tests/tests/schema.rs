//! Every payload kind validates against the JSON Schemas in `agent/schema/`.

use std::time::Duration;

use edge_agent::alert::{AlertEngine, DetectorInfo, IdGenerator, RateLimits};
use edge_agent_tests::{TempDir, config, read_alerts};
use edge_driver_api::{Clock, Timestamp};
use edge_models::{Evaluation, Feature, FeatureValues, Severity};
use serde_json::Value;

fn schema(name: &str) -> jsonschema::Validator {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/schema/").to_string() + name;
    let text = std::fs::read_to_string(&path).expect("schema file");
    let doc: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::validator_for(&doc).expect("schema compiles")
}

fn assert_valid(v: &jsonschema::Validator, doc: &Value) {
    let errors: Vec<String> = v
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{doc:#}\n{}", errors.join("\n"));
}

#[test]
fn alerts_of_every_kind_state_and_severity_match_the_schema() {
    let alert_schema = schema("alert.v1.schema.json");
    let kinds = edge_agent::config::detector_kinds();
    let infos: Vec<DetectorInfo> = kinds
        .iter()
        .map(|k| DetectorInfo {
            asset: "pump-1".into(),
            name: format!("det.{k}").into(),
            kind: k,
            signal: "pump-1.vibration".into(),
            feature: Feature::Band(0),
            feature_name: "band:bearing".into(),
            band_names: vec!["bearing".into()],
            model: None,
            predictor: (*k == "residual").then(|| "pump-1.current".into()),
        })
        .collect();
    let mut engine = AlertEngine::new(
        "gw-01".into(),
        RateLimits::default(),
        infos,
        IdGenerator::with_seed(3),
    );
    let features = FeatureValues::default(); // all NaN: must serialise as null
    let mut n = 0;
    for (det, kind) in kinds.iter().enumerate() {
        for (i, level) in [
            Some(Severity::Warning),
            Some(Severity::PreFault),
            Some(Severity::Critical),
            None,
        ]
        .into_iter()
        .enumerate()
        {
            let eval = Evaluation {
                level,
                score: if i == 1 { f64::INFINITY } else { 1.5 },
                limit: 2.0,
                forecast: (*kind == "trend").then_some(edge_models::Forecast {
                    eta_s: 3600.0,
                    range_s: Some((2400.0, f64::INFINITY)),
                    fit: Some(edge_models::Fit {
                        curve: edge_models::Curve::Quadratic {
                            a: 70.0,
                            b: 0.002,
                            c: 1e-7,
                        },
                        span_s: 3600.0,
                    }),
                }),
            };
            let ts = Timestamp {
                wall_ns: 1_795_000_000_000_000_000 + i as i64,
                mono_ns: i as u64,
                synced: i % 2 == 0,
            };
            if let Some(a) = engine.observe(det, &eval, ts, &features) {
                assert_valid(
                    &alert_schema,
                    &serde_json::to_value(&a).expect("serialises"),
                );
                n += 1;
            }
        }
    }
    assert_eq!(
        n,
        kinds.len() * 4,
        "raise, two level changes and a clear per detector"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn alerts_from_a_simulated_plant_match_the_schema() {
    let alert_schema = schema("alert.v1.schema.json");
    let dir = TempDir::new("schema");
    let jsonl = dir.path().join("alerts.jsonl");
    let src = format!(
        r#"
[agent]
id = "schema-gw"
[alerts]
console = false
jsonl = "{}"
[journal]
dir = "{}"
[telemetry]
interval = "10m"
[[drivers]]
name = "plant"
kind = "sim"
tick = "1s"
[[drivers.machines]]
name = "pump"
vibration_rate_hz = 10.0
[[drivers.machines.faults]]
kind = "bearing_wear"
start = "30m"
duration = "3h"
[[drivers.machines.faults]]
kind = "stuck"
signal = "pressure"
start = "20m"
duration = "30m"
[[assets]]
name = "pump"
[[assets.signals]]
signal = "pump.temperature"
[[assets.signals]]
signal = "pump.pressure"
[[assets.signals]]
signal = "pump.vibration"
window = {{ size = 64, hop = 64 }}
bands = [{{ name = "low", lo_hz = 0.0, hi_hz = 2.5 }}]
[[assets.detectors]]
name = "temp"
kind = "threshold"
signal = "pump.temperature"
warning = 70.0
critical = 85.0
[[assets.detectors]]
name = "temp-forecast"
kind = "trend"
signal = "pump.temperature"
limit = 85.0
horizon = "1h"
[[assets.detectors]]
name = "stuck"
kind = "flatline"
signal = "pump.pressure"
min_duration = "2m"
"#,
        jsonl.display(),
        dir.path().join("journal").display()
    );
    let handle = edge_agent::start(
        config("schema.toml", &src),
        edge_agent::RunOptions {
            clock: Some(Clock::virtual_from(0)),
            ..Default::default()
        },
    )
    .expect("starts");
    tokio::time::sleep(Duration::from_secs(4 * 3600)).await;
    tokio::time::timeout(Duration::from_secs(60), handle.stop())
        .await
        .expect("stops")
        .expect("clean");
    let alerts = read_alerts(&jsonl);
    assert!(alerts.len() >= 4, "{alerts:#?}");
    for a in &alerts {
        assert_valid(&alert_schema, a);
    }
    let kinds: std::collections::BTreeSet<&str> =
        alerts.iter().filter_map(|a| a["kind"].as_str()).collect();
    assert!(
        kinds.contains("trend") && kinds.contains("flatline") && kinds.contains("threshold"),
        "{kinds:?}"
    );
}

#[test]
fn status_messages_match_the_schema() {
    let status_schema = schema("status.v1.schema.json");
    let cfg = edge_agent::delivery::uplink::UplinkConfig {
        host: "127.0.0.1".into(),
        port: 1883,
        client_id: "gw-01".into(),
        agent_id: "gw-01".into(),
        topic_prefix: "edge".into(),
        keep_alive: Duration::from_secs(30),
        window: 8,
        replay_rate: edge_agent::delivery::uplink::ReplayRate::PerSecond(10),
        username: None,
        password: None,
        connect_timeout: Duration::from_secs(5),
        reconnect_initial: Duration::from_secs(1),
        reconnect_max: Duration::from_secs(5),
        version: edge_agent::VERSION.into(),
        config_hash: "0123456789abcdef".into(),
        status_interval: Duration::from_secs(60),
        tls: None,
        sparkplug: None,
        commands: None,
    };
    for state in ["online", "offline"] {
        let doc: Value = serde_json::from_slice(&cfg.status_payload(state, None)).expect("json");
        assert_valid(&status_schema, &doc);
    }
}

#[test]
fn driver_events_match_the_schema() {
    let event_schema = schema("event.v1.schema.json");
    let mut reg = edge_driver_api::SignalRegistry::new();
    let id = reg
        .intern(
            &edge_driver_api::SignalDecl {
                name: "press.recipe".into(),
                unit: None,
                span: Default::default(),
                text: true,
                address: None,
            },
            "press",
        )
        .expect("interned");
    let (tx, _rx) = tokio::sync::mpsc::channel(4);
    let events = edge_agent::delivery::events::AgentEvents::new("gw-01".into(), &reg, tx);
    for (text, synced) in [("Recipe A", true), ("", false), ("Süd \"3\"", true)] {
        let ev = edge_driver_api::DriverEvent {
            signal: id,
            ts: Timestamp {
                wall_ns: 1_795_000_000_123_000_000,
                mono_ns: 42,
                synced,
            },
            kind: edge_driver_api::EventKind::Text(text.into()),
        };
        let doc: Value =
            serde_json::from_slice(&events.body("press", &ev).expect("body")).expect("json");
        assert_valid(&event_schema, &doc);
        assert_eq!(doc["value"], text);
    }
}

/// The label schema with the alert schema it refers to registered.
fn label_schema() -> jsonschema::Validator {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/schema/");
    let read = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}{name}")).expect("schema"))
            .expect("JSON")
    };
    let registry = jsonschema::Registry::new()
        .add(
            "urn:edge-agent:schema:alert:v1",
            read("alert.v1.schema.json"),
        )
        .and_then(|r| r.prepare())
        .expect("alert schema registered");
    jsonschema::options()
        .with_registry(&registry)
        .build(&read("label.v1.schema.json"))
        .expect("schema compiles")
}

#[tokio::test]
async fn a_label_from_the_labeller_matches_the_schema() {
    use edge_agent::delivery::labels::{Labeller, LabelsConfig, Verdict};
    use edge_agent::delivery::recent::RecentAlerts;
    let recent = std::sync::Arc::new(RecentAlerts::with_capacity(10));
    let mut engine = AlertEngine::new(
        "gw-01".into(),
        RateLimits::default(),
        vec![DetectorInfo {
            asset: "pump-1".into(),
            name: "hot".into(),
            kind: "threshold",
            signal: "pump-1.temperature".into(),
            feature: Feature::Mean,
            feature_name: "mean".into(),
            band_names: vec![],
            model: None,
            predictor: None,
        }],
        IdGenerator::with_seed(3),
    );
    let eval = Evaluation {
        level: Some(Severity::Warning),
        score: 81.0,
        limit: 75.0,
        forecast: None,
    };
    let ts = Timestamp {
        wall_ns: 1_795_000_000_000_000_000,
        mono_ns: 1,
        synced: true,
    };
    let alert = engine
        .observe(0, &eval, ts, &FeatureValues::default())
        .expect("raised");
    recent.sink().deliver(&alert).expect("remembered");
    let (tx, _rx) = tokio::sync::mpsc::channel(4);
    let labeller = Labeller::new(
        "gw-01".into(),
        &LabelsConfig {
            dataset: None,
            remember: 10,
        },
        recent,
        Clock::system(),
        tx,
    );
    let v = label_schema();
    for (verdict, note) in [(Verdict::True, "bearing replaced"), (Verdict::Unsure, "")] {
        let label = labeller
            .label(&alert.id.to_string(), verdict, note)
            .expect("labelled");
        assert_valid(&v, &serde_json::to_value(&label).expect("JSON"));
    }
    let mut broken = serde_json::to_value(
        labeller
            .label(&alert.id.to_string(), Verdict::False, "")
            .expect("labelled"),
    )
    .expect("JSON");
    broken["alert"]["severity"] = "bad".into();
    assert!(!v.is_valid(&broken), "the alert inside is checked too");
}
