//! Configuration reload on a running agent: changed drivers restart with their new
//! settings, unchanged ones keep running, and what cannot be applied live changes
//! nothing.

use std::time::Duration;

use edge_agent::runtime::reload::ReloadError;
use edge_agent::{RunOptions, config};

fn text(b_seed: u64, extra_machine: bool, ring: u32) -> String {
    let extra = if extra_machine {
        "\n[[drivers.machines]]\nname = \"fan\"\n"
    } else {
        ""
    };
    format!(
        r#"
[agent]
id = "reload-test"
shutdown_timeout = "5s"

[ring]
capacity = {ring}

[alerts]
console = false

[[drivers]]
name = "a"
kind = "sim"
seed = 1
tick = "50ms"
[[drivers.machines]]
name = "pump"
vibration_rate_hz = 16.0

[[drivers]]
name = "b"
kind = "sim"
seed = {b_seed}
tick = "50ms"
[[drivers.machines]]
name = "motor"
vibration_rate_hz = 16.0
{extra}"#
    )
}

fn parse(t: &str) -> edge_agent::Config {
    config::parse("reload.toml", t).unwrap_or_else(|e| panic!("{}", e.rendered))
}

async fn samples_of(handle: &edge_agent::AgentHandle, driver: &str) -> u64 {
    handle
        .status()
        .drivers
        .iter()
        .find(|d| d.name == driver)
        .map_or(0, |d| d.samples)
}

async fn wait_for_samples(handle: &edge_agent::AgentHandle, driver: &str, more_than: u64) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while samples_of(handle, driver).await <= more_than {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("driver {driver} delivered nothing new"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_restarts_only_changed_drivers_and_refuses_what_needs_a_restart() {
    let handle =
        edge_agent::start(parse(&text(2, false, 4096)), RunOptions::default()).expect("starts");
    wait_for_samples(&handle, "a", 0).await;
    wait_for_samples(&handle, "b", 0).await;
    let reloader = handle.reloader();

    // The same file again: nothing to do.
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        reloader.apply(parse(&text(2, false, 4096))),
    )
    .await
    .expect("reload in time")
    .expect("applies");
    assert!(r.restarted.is_empty());
    assert_eq!(r.unchanged, 2);

    // Driver b gets a new seed: only b restarts; a keeps delivering throughout.
    let a_before = samples_of(&handle, "a").await;
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        reloader.apply(parse(&text(3, false, 4096))),
    )
    .await
    .expect("reload in time")
    .expect("applies");
    assert_eq!(r.restarted, ["b"]);
    assert_eq!(r.unchanged, 1);
    wait_for_samples(&handle, "a", a_before).await;
    let b_after = samples_of(&handle, "b").await;
    wait_for_samples(&handle, "b", b_after).await;

    // A new machine means new signals: refused, nothing changes.
    let e = reloader
        .apply(parse(&text(3, true, 4096)))
        .await
        .expect_err("new signals need a restart");
    assert!(
        matches!(&e, ReloadError::SignalsChanged(what) if what.contains("fan.temperature")),
        "{e}"
    );
    assert!(e.to_string().contains("systemctl restart"), "{e}");

    // Another section changed: refused, even though driver b changed too.
    let e = reloader
        .apply(parse(&text(4, false, 8192)))
        .await
        .expect_err("[ring] needs a restart");
    assert_eq!(e, ReloadError::NeedsRestart(vec!["ring".into()]));

    // The agent runs on and stops cleanly.
    let a_now = samples_of(&handle, "a").await;
    wait_for_samples(&handle, "a", a_now).await;
    let report = tokio::time::timeout(Duration::from_secs(15), handle.stop())
        .await
        .expect("stops in time")
        .expect("report");
    assert!(!report.shutdown_timed_out);
    assert_eq!(report.ring.dropped(), 0);
    assert!(report.drivers.iter().all(|d| d.panics == 0));
}

/// One pump, its four signals windowed like the zoo's models expect, a temperature
/// threshold at `limit` and the bearing_rf model confirming over `confirm` rows.
#[cfg(feature = "onnx")]
fn asset_text(limit: f64, confirm: u32, ring: u32, alerts: &std::path::Path) -> String {
    let zoo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/zoo");
    format!(
        r#"
[agent]
id = "reload-assets"
shutdown_timeout = "5s"

[ring]
capacity = {ring}

[alerts]
console = false
jsonl = "{alerts}"

[models]
dir = "{zoo}"

[[drivers]]
name = "plant"
kind = "sim"
seed = 5
tick = "50ms"
[[drivers.machines]]
name = "pump"
sample_rate_hz = 10.0
vibration_rate_hz = 64.0

[[assets]]
name = "pump"
[[assets.signals]]
signal = "pump.temperature"
window = {{ size = 10, hop = 10 }}
[[assets.signals]]
signal = "pump.vibration"
window = {{ size = 64, hop = 64 }}
bands = [
  {{ name = "shaft", lo_hz = 0.0, hi_hz = 16.0 }},
  {{ name = "bearing", lo_hz = 16.0, hi_hz = 32.0 }},
]
[[assets.signals]]
signal = "pump.current"
window = {{ size = 10, hop = 10 }}
[[assets.signals]]
signal = "pump.pressure"
window = {{ size = 10, hop = 10 }}

[[assets.detectors]]
name = "hot"
kind = "threshold"
signal = "pump.temperature"
warning = {limit:?}

[[assets.models]]
name = "wear"
manifest = "bearing_rf/manifest.toml"
confirm = {confirm}
roles = {{ vibration = "pump.vibration", temperature = "pump.temperature", current = "pump.current", pressure = "pump.pressure" }}
"#,
        zoo = zoo.display(),
        alerts = alerts.display(),
    )
}

#[cfg(feature = "onnx")]
async fn wait_until(
    handle: &edge_agent::AgentHandle,
    what: &str,
    f: impl Fn(&edge_agent::pipeline::PipelineSnapshot) -> bool,
) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while !f(&handle.pipeline()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[cfg(feature = "onnx")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asset_reload_applies_new_limits_live_and_keeps_unchanged_models_running() {
    let jsonl =
        std::env::temp_dir().join(format!("edge-agent-reload-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&jsonl);
    let handle = edge_agent::start(
        parse(&asset_text(1000.0, 2, 65536, &jsonl)),
        RunOptions::default(),
    )
    .expect("starts");
    wait_until(&handle, "scored rows", |p| p.model_rows > 0).await;
    assert_eq!(handle.pipeline().alerts, 0, "nothing is near 1000 °C");
    let reloader = handle.reloader();

    // The limit drops below the pump's temperature: the next window raises.
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        reloader.apply(parse(&asset_text(10.0, 2, 65536, &jsonl))),
    )
    .await
    .expect("reload in time")
    .expect("an [[assets]] change applies live");
    assert!(r.restarted.is_empty(), "no driver restarts: {r:?}");
    let a = r.assets.expect("the pipeline took the new assets");
    assert_eq!((a.windows_kept, a.windows_new), (4, 0), "{a:?}");
    assert_eq!((a.detectors_kept, a.detectors_new), (0, 1), "{a:?}");
    assert_eq!((a.bindings_kept, a.bindings_new), (1, 0), "{a:?}");
    wait_until(&handle, "the new limit's alert", |p| p.alerts > 0).await;
    let rows = handle.pipeline().model_rows;
    wait_until(&handle, "more scored rows", |p| p.model_rows > rows).await;

    // A binding setting changes: that binding starts fresh, the detector carries on.
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        reloader.apply(parse(&asset_text(10.0, 3, 65536, &jsonl))),
    )
    .await
    .expect("reload in time")
    .expect("applies");
    let a = r.assets.expect("the pipeline took the new assets");
    assert_eq!((a.detectors_kept, a.bindings_new), (1, 1), "{a:?}");
    let closed_by_reload = a.alerts_closed;
    assert_eq!(handle.models().handles.len(), 1);

    // [ring] still needs a restart, even alongside an asset change.
    let e = reloader
        .apply(parse(&asset_text(20.0, 3, 4096, &jsonl)))
        .await
        .expect_err("[ring] needs a restart");
    assert_eq!(e, ReloadError::NeedsRestart(vec!["ring".into()]));

    let rows = handle.pipeline().model_rows;
    wait_until(&handle, "rows after the last reload", |p| {
        p.model_rows > rows
    })
    .await;
    let report = tokio::time::timeout(Duration::from_secs(15), handle.stop())
        .await
        .expect("stops in time")
        .expect("report");
    assert!(!report.shutdown_timed_out);
    assert_eq!(
        report.ring.dropped(),
        0,
        "no sample lost across the reloads"
    );
    assert_eq!(
        report.pipeline.samples, report.ring.accepted,
        "every sample processed"
    );

    // What went out: `hot` raised once and stayed open across the binding change
    // (its detector carried on). Only the fresh binding's open alerts were closed,
    // each saying why (the model reads windows unlike its training data here, so it
    // may well have raised).
    let text = std::fs::read_to_string(&jsonl).expect("alert file");
    let _ = std::fs::remove_file(&jsonl);
    let alerts: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON alert per line"))
        .collect();
    let of = |det: &str, state: &str| {
        alerts
            .iter()
            .filter(|a| a["detector"] == det && a["state"] == state)
            .count()
    };
    assert_eq!(of("hot", "raised"), 1, "{text}");
    assert_eq!(of("hot", "cleared"), 0, "{text}");
    let closed: Vec<&serde_json::Value> = alerts
        .iter()
        .filter(|a| {
            a["message"]
                .as_str()
                .is_some_and(|m| m.contains("configuration reload"))
        })
        .collect();
    assert_eq!(closed.len(), closed_by_reload, "{text}");
    for c in closed {
        assert!(
            c["detector"]
                .as_str()
                .is_some_and(|d| d.starts_with("wear")),
            "{c}"
        );
        assert_eq!(c["state"], "cleared");
    }
}
