//! A failing driver is restarted with backoff while the others keep producing.

use std::time::Duration;

use edge_agent::RunOptions;
use edge_agent::ingest::supervisor::DriverState;
use edge_agent_tests::config;
use edge_driver_api::Clock;

const CONFIG: &str = r#"
[agent]
id = "sup"

[alerts]
console = false

[supervisor]
backoff_initial = "1s"
backoff_max = "8s"
healthy_after = "1m"

[[drivers]]
name = "steady"
kind = "sim"
tick = "1s"
[[drivers.machines]]
name = "s1"
sample_rate_hz = 1.0
vibration_rate_hz = 10.0

[[drivers]]
name = "flaky"
kind = "sim"
tick = "1s"
[[drivers.machines]]
name = "f1"
sample_rate_hz = 1.0
vibration_rate_hz = 10.0
[[drivers.machines.faults]]
kind = "link_loss"
start = "30s"
duration = "2m"
"#;

/// Samples per second of one simulated machine: three 1 Hz signals + 10 Hz vibration.
const RATE: f64 = 13.0;

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn failing_driver_is_restarted_with_backoff_while_others_keep_producing() {
    let handle = edge_agent::start(
        config("sup.toml", CONFIG),
        RunOptions {
            clock: Some(Clock::virtual_from(0)),
            ..RunOptions::default()
        },
    )
    .expect("starts");
    let flaky = handle
        .drivers()
        .iter()
        .find(|d| &*d.name == "flaky")
        .expect("flaky driver")
        .clone();
    let steady = handle
        .drivers()
        .iter()
        .find(|d| &*d.name == "steady")
        .expect("steady driver")
        .clone();
    let accepted = |h: &edge_agent::AgentHandle| h.ring_stats().accepted as f64;

    // Both drivers up.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let before = accepted(&handle);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let both = (accepted(&handle) - before) / 5.0;
    assert!((both - 2.0 * RATE).abs() <= 2.0, "both drivers: {both}/s");

    // During the link loss (30 s .. 150 s) only the steady driver produces, and the
    // flaky one is retried with growing delays.
    tokio::time::sleep(Duration::from_secs(35)).await; // t = 60 s
    let r0 = flaky.restarts.load(std::sync::atomic::Ordering::Relaxed);
    let a0 = accepted(&handle);
    tokio::time::sleep(Duration::from_secs(60)).await; // t = 120 s
    let during = (accepted(&handle) - a0) / 60.0;
    let r1 = flaky.restarts.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (during - RATE).abs() <= 0.5,
        "only the steady driver produces: {during}/s"
    );
    assert_eq!(steady.state(), DriverState::Running);
    assert_eq!(
        steady.restarts.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // Backoff 1, 2, 4, 8, 8, ... s with jitter in [d/2, d]: within 60 s at the cap
    // (8 s nominal) that is 7..=15 attempts, never the hundreds a busy loop would make.
    assert!(
        (7..=15).contains(&(r1 - r0)),
        "restarts in 60 s: {}",
        r1 - r0
    );
    assert!(flaky.last_error().is_some_and(|e| e.contains("link loss")));

    // After the link returns the flaky driver runs again.
    tokio::time::sleep(Duration::from_secs(60)).await; // t = 180 s
    assert_eq!(flaky.state(), DriverState::Running);
    let a2 = accepted(&handle);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after = (accepted(&handle) - a2) / 30.0;
    assert!((after - 2.0 * RATE).abs() <= 1.0, "both again: {after}/s");

    let report = tokio::time::timeout(Duration::from_secs(60), handle.stop())
        .await
        .expect("stops in time")
        .expect("clean stop");
    assert!(!report.shutdown_timed_out);
    assert_eq!(report.ring.dropped(), 0);
    let f = report
        .drivers
        .iter()
        .find(|d| d.name == "flaky")
        .expect("report");
    assert!(f.restarts >= 8, "{f:?}");
    assert_eq!(f.state, DriverState::Stopped);
}
