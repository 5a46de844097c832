//! The detection-quality benchmark's CI subset (12 of its 72 scenarios, from
//! `edge_train::scenarios::subset`) replayed by `eval` with the benchmark's
//! configuration (`models/eval/agent.toml`), held to the figures recorded in
//! `models/eval/subset-baseline.json` within the margins below. A change that
//! makes detection better passes (then record the new figures: the failure message
//! prints them); one that makes it worse beyond a margin fails.
//!
//! Margins (the subset has 7 faults and 112 healthy hours):
//! * recall may not drop (one missed fault more is a regression);
//! * precision may drop by at most 0.05;
//! * false alarms per healthy hour may rise by at most 0.02 (about two alerts);
//! * the median absolute ETA error may rise by at most 0.05;
//! * the share of first forecasts whose interval holds the actual remaining time
//!   may drop by at most 0.25 (one of the subset's four ETAs);
//! * no alert during warm-up, ever.

use std::path::Path;

use edge_agent_tests::TempDir;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

#[test]
fn the_benchmark_subset_does_not_regress_beyond_its_margins() {
    let dir = TempDir::new("quality");
    edge_train::scenarios::write_all(&edge_train::scenarios::subset(1), dir.path())
        .expect("scenarios written");
    let cfg = edge_agent::config::load_file(&root().join("models/eval/agent.toml"))
        .expect("the benchmark config is valid");
    let report = edge_agent::eval::run(&cfg, dir.path(), None).expect("eval runs");
    let o = &report.overall;
    let now = serde_json::json!({
        "recall": o.recall,
        "precision": o.precision,
        "false_alarms_per_hour": o.false_alarms_per_hour,
        "median_abs_eta_error": o.median_abs_eta_error,
        "eta_interval_coverage": o.eta_interval_coverage,
        "warmup_alerts": o.warmup_alerts,
    });
    let base: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("models/eval/subset-baseline.json"))
            .expect("baseline"),
    )
    .expect("baseline JSON");
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let table = edge_agent::eval::table(&report);
    let explain =
        format!("\n{table}\nnow: {now}\nrecorded (models/eval/subset-baseline.json): {base}\n");
    assert_eq!(o.scenarios, 12, "{explain}");
    assert_eq!(o.warmup_alerts, 0, "alerts during warm-up{explain}");
    assert!(
        f(&now, "recall") >= f(&base, "recall"),
        "recall dropped{explain}"
    );
    assert!(
        f(&now, "precision") >= f(&base, "precision") - 0.05,
        "precision dropped{explain}"
    );
    assert!(
        f(&now, "false_alarms_per_hour") <= f(&base, "false_alarms_per_hour") + 0.02,
        "more false alarms{explain}"
    );
    assert!(
        f(&now, "median_abs_eta_error") <= f(&base, "median_abs_eta_error") + 0.05,
        "ETAs got worse{explain}"
    );
    assert!(
        f(&now, "eta_interval_coverage") >= f(&base, "eta_interval_coverage") - 0.25,
        "ETA intervals hold the truth less often{explain}"
    );
}
