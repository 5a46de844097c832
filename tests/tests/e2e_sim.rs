#![allow(clippy::print_stdout)] // reports the measured lead time
//! End to end on simulated machines, in virtual time: the real agent (config parser,
//! sim driver, supervisor, ring, pipeline, detectors, alert engine, JSONL sink) runs
//! under `tokio::time::pause()`, so a simulated day takes seconds.

use std::time::Duration;

use edge_agent::RunOptions;
use edge_agent_tests::{TempDir, config, read_alerts};
use edge_driver_api::Clock;

/// A pump asset with every detector kind, parameterised by its faults.
fn plant(jsonl: &std::path::Path, faults: &str) -> String {
    format!(
        r#"
[agent]
id = "e2e"
shutdown_timeout = "30s"

[alerts]
console = false
jsonl = "{jsonl}"

[[drivers]]
name = "plant"
kind = "sim"
seed = 7
tick = "1s"

[[drivers.machines]]
name = "pump"
rpm = 600
sample_rate_hz = 1.0
vibration_rate_hz = 100.0
{faults}

[[assets]]
name = "pump"

[[assets.signals]]
signal = "pump.temperature"
window = {{ size = "60s", hop = "10s" }}

[[assets.signals]]
signal = "pump.vibration"
window = {{ size = 500, hop = 500 }}
bands = [
  {{ name = "shaft", lo_hz = 0.0, hi_hz = 30.0 }},
  {{ name = "bearing", lo_hz = 30.0, hi_hz = 50.0 }},
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

[[assets.detectors]]
name = "temperature-forecast"
kind = "trend"
signal = "pump.temperature"
limit = 85.0
horizon = "2h"
lookback = "1h"

[[assets.detectors]]
name = "bearing-vibration"
kind = "threshold"
signal = "pump.vibration"
feature = "band:bearing"
warning = 0.5
critical = 2.0
min_duration = "1m"

[[assets.detectors]]
name = "current-anomaly"
kind = "zscore"
signal = "pump.current"
warning_z = 6.0
critical_z = 12.0
min_std = 0.02

[[assets.detectors]]
name = "pressure-stuck"
kind = "flatline"
signal = "pump.pressure"
min_duration = "5m"

[[assets.detectors]]
name = "pressure-drop"
kind = "rate_of_change"
signal = "pump.pressure"
warning = 0.5
per = "1m"
"#,
        jsonl = jsonl.display()
    )
}

async fn run_for(src: &str, hours: u64) -> edge_agent::RunReport {
    let cfg = config("e2e.toml", src);
    let opts = RunOptions {
        clock: Some(Clock::virtual_from(1_795_000_000_000_000_000)),
        id_seed: Some(1),
        ..RunOptions::default()
    };
    let handle = edge_agent::start(cfg, opts).expect("agent starts");
    tokio::time::sleep(Duration::from_secs(hours * 3600)).await;
    let report = tokio::time::timeout(Duration::from_secs(60), handle.stop())
        .await
        .expect("agent stops within its shutdown timeout")
        .expect("clean stop");
    // Detection results below assume every sample was processed.
    assert_eq!(
        report.ring.dropped(),
        0,
        "the ring dropped samples: {:?}",
        report.ring
    );
    assert!(!report.shutdown_timed_out);
    report
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn healthy_machine_runs_24_simulated_hours_without_alerts() {
    let dir = TempDir::new("healthy");
    let jsonl = dir.path().join("alerts.jsonl");
    let report = run_for(&plant(&jsonl, ""), 24).await;
    let alerts = read_alerts(&jsonl);
    assert!(
        alerts.is_empty(),
        "false alarms on a healthy machine: {alerts:#?}"
    );
    // 24 h of 3 slow signals at 1 Hz and vibration at 100 Hz.
    let expected = 24 * 3600 * 103;
    assert!(
        report.pipeline.samples as f64 > expected as f64 * 0.999,
        "{report:?}"
    );
    assert_eq!(report.ring.dropped(), 0);
    assert_eq!(report.pipeline.unusable, 0);
    assert!(report.pipeline.evaluations > 50_000, "{report:?}");
    assert!(!report.shutdown_timed_out);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn bearing_wear_raises_a_prefault_forecast_before_the_critical_threshold() {
    let dir = TempDir::new("wear");
    let jsonl = dir.path().join("alerts.jsonl");
    let faults = r#"
[[drivers.machines.faults]]
kind = "bearing_wear"
start = "2h"
duration = "10h"
"#;
    run_for(&plant(&jsonl, faults), 14).await;
    let alerts = read_alerts(&jsonl);
    let find = |det: &str, sev: &str| {
        alerts
            .iter()
            .find(|a| a["detector"] == det && a["severity"] == sev && a["state"] == "raised")
            .unwrap_or_else(|| panic!("no raised {sev} from {det} in {alerts:#?}"))
            .clone()
    };
    let prefault = find("temperature-forecast", "prefault");
    let critical = find("temperature", "critical");
    let mono =
        |a: &serde_json::Value| a["time"]["mono_ns"].as_u64().expect("mono_ns") as f64 * 1e-9;
    let (t_pre, t_crit) = (mono(&prefault), mono(&critical));
    let eta = prefault["eta_s"].as_f64().expect("prefault carries an ETA");
    let lead = t_crit - t_pre;
    println!(
        "bearing wear: PreFault at {:.2} h (ETA {:.0} min), Critical at {:.2} h: lead time {:.0} min",
        t_pre / 3600.0,
        eta / 60.0,
        t_crit / 3600.0,
        lead / 60.0
    );
    assert!(t_pre < t_crit, "the forecast must come first");
    assert!(lead >= 30.0 * 60.0, "lead time only {lead:.0}s");
    assert!(eta > 0.0 && eta <= 2.0 * 3600.0, "eta {eta}");
    // The forecast is about the same physical limit the threshold enforces.
    assert_eq!(prefault["limit"], 85.0);
    assert_eq!(prefault["asset"], "pump");
    assert!(
        prefault["features"]["mean"]
            .as_f64()
            .is_some_and(|m| m < 85.0)
    );
    // Vibration in the bearing band rises too.
    find("bearing-vibration", "warning");
    // No alert of any kind before the fault starts.
    assert!(alerts.iter().all(|a| mono(a) > 2.0 * 3600.0), "{alerts:#?}");
    // Ids are unique and time-ordered.
    let ids: Vec<&str> = alerts
        .iter()
        .map(|a| a["id"].as_str().expect("id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn stuck_sensor_and_leak_are_detected_and_cleared() {
    let dir = TempDir::new("stuck");
    let jsonl = dir.path().join("alerts.jsonl");
    let faults = r#"
[[drivers.machines.faults]]
kind = "stuck"
signal = "pressure"
start = "1h"
duration = "30m"

[[drivers.machines.faults]]
kind = "leak"
start = "3h"
duration = "6m"
magnitude = 2.0
"#;
    run_for(&plant(&jsonl, faults), 4).await;
    let alerts = read_alerts(&jsonl);
    let of = |det: &str| {
        alerts
            .iter()
            .filter(|a| a["detector"] == det)
            .collect::<Vec<_>>()
    };
    let stuck = of("pressure-stuck");
    assert_eq!(stuck.len(), 2, "raised then cleared: {stuck:#?}");
    assert_eq!(stuck[0]["state"], "raised");
    assert_eq!(stuck[1]["state"], "cleared");
    assert_eq!(stuck[1]["episode"], stuck[0]["id"]);
    let t = |a: &serde_json::Value| a["time"]["mono_ns"].as_u64().expect("mono") as f64 / 3600e9;
    assert!(
        t(stuck[0]) > 1.0 + 5.0 / 60.0 && t(stuck[0]) < 1.25,
        "{}",
        t(stuck[0])
    );
    assert!(t(stuck[1]) > 1.5 && t(stuck[1]) < 1.6, "{}", t(stuck[1]));
    let drop = of("pressure-drop");
    assert!(
        drop.iter()
            .any(|a| a["state"] == "raised" && t(a) > 3.0 && t(a) < 3.2),
        "{drop:#?}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_alert_is_accepted_into_the_journal_and_survives_a_restart() {
    use edge_agent::delivery::journal::fs::StdFs;
    use edge_agent::delivery::journal::{FsyncPolicy, Journal, JournalConfig, Lane};
    use edge_agent::delivery::wire::Envelope;
    let dir = TempDir::new("journal");
    let jsonl = dir.path().join("alerts.jsonl");
    let jdir = dir.path().join("journal");
    let faults = r#"
[[drivers.machines.faults]]
kind = "bearing_wear"
start = "1h"
duration = "6h"
"#;
    let src = plant(&jsonl, faults).replace(
        "[[drivers]]",
        &format!(
            "[journal]\ndir = \"{}\"\nsegment_size = \"8KiB\"\nmax_disk = \"1MiB\"\n\n[[drivers]]",
            jdir.display()
        ),
    );
    let report = run_for(&src, 9).await;
    let alerts = read_alerts(&jsonl);
    assert!(alerts.len() >= 4, "{alerts:#?}");
    assert_eq!(report.sink_failures, 0);
    let (mut j, rep) = Journal::open(
        JournalConfig {
            dir: jdir.clone(),
            segment_bytes: 8192,
            max_disk: 1 << 20,
            fsync: FsyncPolicy::Always,
        },
        std::sync::Arc::new(StdFs),
    )
    .expect("journal reopens");
    assert_eq!((rep.corrupt, rep.torn, rep.quarantined.len()), (0, 0, 0));
    let records = j.read(Lane::Alert, 0, usize::MAX).expect("read");
    let from_journal: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            let env = Envelope::decode(&r.payload).expect("envelope");
            let doc: serde_json::Value = serde_json::from_slice(&env.body).expect("json body");
            assert_eq!(doc["asset"], env.asset.as_str());
            doc
        })
        .collect();
    assert_eq!(
        from_journal, alerts,
        "the journal holds exactly the alerts, in order"
    );
    assert!(records.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn full_disk_budget_evicts_telemetry_before_any_alert_and_counts_it() {
    use edge_agent::delivery::journal::fs::StdFs;
    use edge_agent::delivery::journal::{FsyncPolicy, Journal, JournalConfig, Lane};
    let dir = TempDir::new("budget");
    let jsonl = dir.path().join("alerts.jsonl");
    let jdir = dir.path().join("journal");
    let faults = r#"
[[drivers.machines.faults]]
kind = "bearing_wear"
start = "1h"
duration = "6h"
"#;
    // No uplink: nothing is ever released, so the 96 KiB budget fills up with
    // telemetry (a summary every 10 s) while alerts keep coming.
    let src = plant(&jsonl, faults).replace(
        "[[drivers]]",
        &format!(
            "[journal]\ndir = \"{}\"\nsegment_size = \"8KiB\"\nmax_disk = \"96KiB\"\n\n[telemetry]\ninterval = \"10s\"\nfeatures = [\"mean\", \"std\", \"max\"]\n\n[[drivers]]",
            jdir.display()
        ),
    );
    let report = run_for(&src, 9).await;
    assert_eq!(report.sink_failures, 0);
    let alerts = read_alerts(&jsonl);
    assert!(alerts.len() >= 4);
    let (mut j, _) = Journal::open(
        JournalConfig {
            dir: jdir,
            segment_bytes: 8192,
            max_disk: 96 * 1024,
            fsync: FsyncPolicy::Always,
        },
        std::sync::Arc::new(StdFs),
    )
    .expect("reopens");
    let st = j.stats();
    assert!(st.bytes <= 96 * 1024, "{st:?}");
    assert!(
        st.counters.evicted[Lane::Telemetry as usize] > 100,
        "telemetry was evicted: {st:?}"
    );
    assert_eq!(
        st.counters.evicted[Lane::Alert as usize],
        0,
        "no alert evicted: {st:?}"
    );
    assert_eq!(
        j.read(Lane::Alert, 0, usize::MAX).expect("read").len(),
        alerts.len(),
        "every alert kept"
    );
    let tele = j.read(Lane::Telemetry, 0, 1).expect("read");
    let env = edge_agent::delivery::wire::Envelope::decode(&tele[0].payload).expect("envelope");
    let doc: serde_json::Value = serde_json::from_slice(&env.body).expect("telemetry JSON");
    assert_eq!(doc["kind"], "telemetry");
    assert!(
        doc["signals"]["pump.temperature"]["features"]["mean"]
            .as_f64()
            .is_some(),
        "{doc:#}"
    );
}
