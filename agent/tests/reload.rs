//! Configuration reload on a running agent: changed drivers restart with their new
//! settings, unchanged ones keep running, and what cannot be applied live changes
//! nothing.

use std::time::Duration;

use edge_agent::reload::ReloadError;
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
