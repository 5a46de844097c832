#![allow(clippy::print_stdout)] // prints the alerts compared
//! The `replay` driver in the running agent: a detection-quality benchmark
//! scenario (`signals.csv`) played live through the benchmark's configuration
//! raises the same alerts, at the same recorded times, as `edge-agent eval`
//! scores on it, so what a user watches in a replay is what eval measured.

use std::time::Duration;

use edge_agent::RunOptions;
use edge_agent_tests::{TempDir, config, read_alerts};
use edge_driver_api::Clock;

fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_scenario_replayed_live_raises_the_alerts_eval_scores_at_the_same_times() {
    let dir = TempDir::new("replay");
    // A bearing-wear run of the benchmark (seed 1), ~10 recorded hours.
    let scenario = edge_train::scenarios::benchmark(1).swap_remove(0);
    edge_train::scenarios::write_all(std::slice::from_ref(&scenario), dir.path()).expect("written");
    let scen_dir = dir.path().join("bearing_wear_00");
    let bench = std::fs::read_to_string(root().join("models/eval/agent.toml")).expect("config");
    let cfg = edge_agent::config::parse("agent.toml", &bench).expect("valid");
    let report = edge_agent::eval::run(&cfg, dir.path(), None).expect("eval runs");
    let scored = &report.scenarios[0];
    assert!(scored.detected, "{:?}", scored.alerts);

    // The same configuration with the plant replaced by a replay of the file.
    let jsonl = dir.path().join("alerts.jsonl");
    let live = bench
        .replace(
            "[[drivers]]\nname = \"plant\"\nkind = \"sim\"\n[[drivers.machines]]\nname = \"pump\"\n",
            &format!(
                "[[drivers]]\nname = \"history\"\nkind = \"replay\"\npath = {:?}\nspeed = 100.0\n",
                scen_dir.join("signals.csv")
            ),
        )
        .replace(
            "[alerts]\nconsole = false\n",
            &format!("[alerts]\nconsole = false\njsonl = {jsonl:?}\n"),
        );
    assert!(
        live.contains("kind = \"replay\""),
        "the plant section moved"
    );
    let clock = Clock::virtual_from(1_795_000_000_000_000_000);
    // Paused time: the driver starts, and stamps its first row, at this instant.
    let first_row_ns = clock.mono_ns();
    let opts = RunOptions {
        clock: Some(clock),
        id_seed: Some(1),
        ..RunOptions::default()
    };
    let h = edge_agent::start(config("live.toml", &live), opts).expect("agent starts");
    let recorded = scored
        .alerts
        .last()
        .map_or(0.0, |a| a.t_s)
        .max(scenario.hours * 3600.0);
    tokio::time::sleep(Duration::from_secs_f64(recorded / 100.0 + 60.0)).await;
    let report = tokio::time::timeout(Duration::from_secs(60), h.stop())
        .await
        .expect("stops")
        .expect("clean stop");
    assert_eq!(report.ring.dropped(), 0);
    let alerts = read_alerts(&jsonl);
    // Recorded seconds of an alert: its window's end on the agent's monotonic axis
    // less the first row's stamp.
    let live: Vec<(String, String, String, i64)> = alerts
        .iter()
        .map(|a| {
            let mono = a["time"]["mono_ns"].as_u64().expect("mono_ns");
            (
                a["detector"].as_str().unwrap_or("").to_string(),
                a["severity"].as_str().unwrap_or("").to_string(),
                a["state"].as_str().unwrap_or("").to_string(),
                ((mono - first_row_ns) as f64 / 1e9).round() as i64,
            )
        })
        .collect();
    let eval: Vec<(String, String, String, i64)> = scored
        .alerts
        .iter()
        .map(|a| {
            (
                a.detector.to_string(),
                a.severity.as_str().to_string(),
                a.state.to_string(),
                a.t_s.round() as i64,
            )
        })
        .collect();
    println!("{} alerts live and in eval: {live:?}", live.len());
    assert_eq!(live, eval, "live replay against eval");
}
