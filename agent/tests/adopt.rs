//! The processor across a reload: what `adopt` keeps and what it closes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use edge_driver_api::{Sample, SignalRegistry, Timestamp};

use edge_agent::alert::{Alert, AlertState, IdGenerator, RateLimits};
use edge_agent::pipeline::{AdoptReport, Processor};

/// One sim machine (only its signals are used: samples are fed by hand) and one
/// asset with count windows of 4 samples over temperature and pressure.
fn asset_config(press_warning: f64, temp_window: usize, extra: &str) -> String {
    format!(
        r#"
[agent]
id = "adopt-test"

[[drivers]]
name = "plant"
kind = "sim"
[[drivers.machines]]
name = "pump"

[[assets]]
name = "pump"
[[assets.signals]]
signal = "pump.temperature"
window = {{ size = {temp_window}, hop = {temp_window} }}
[[assets.signals]]
signal = "pump.pressure"
window = {{ size = 4, hop = 4 }}
[[assets.detectors]]
name = "hot"
kind = "threshold"
signal = "pump.temperature"
warning = 60.0
[[assets.detectors]]
name = "press"
kind = "threshold"
signal = "pump.pressure"
warning = {press_warning}
{extra}"#
    )
}

fn processor(text: &str) -> (Processor, SignalRegistry) {
    let cfg =
        edge_agent::config::parse("adopt.toml", text).unwrap_or_else(|e| panic!("{}", e.rendered));
    let p = Processor::new(
        cfg.agent.id.clone(),
        &cfg.registry,
        &cfg.assets,
        &cfg.models,
        RateLimits::default(),
        IdGenerator::with_seed(7),
    );
    (p, cfg.registry)
}

/// `n` samples of `signal` with value `v`, one a second from `*t`.
fn feed(
    p: &mut Processor,
    reg: &SignalRegistry,
    t: &mut u64,
    signal: &str,
    v: f64,
    n: usize,
) -> Vec<Alert> {
    let id = reg.get(signal).expect("signal exists");
    let mut alerts = Vec::new();
    for _ in 0..n {
        *t += 1_000_000_000;
        let ts = Timestamp {
            mono_ns: *t,
            wall_ns: *t as i64,
            synced: true,
        };
        p.ingest_batch(&[Sample::new_f64(ts, id, v)], &mut alerts);
    }
    alerts
}

fn at(t: u64) -> Timestamp {
    Timestamp {
        mono_ns: t,
        wall_ns: t as i64,
        synced: true,
    }
}

#[test]
fn a_reload_keeps_unchanged_detectors_open_and_closes_the_alerts_of_changed_ones() {
    let (mut p, reg) = processor(&asset_config(5.0, 4, ""));
    let mut t = 0;
    let hot = feed(&mut p, &reg, &mut t, "pump.temperature", 70.0, 4);
    let press = feed(&mut p, &reg, &mut t, "pump.pressure", 7.0, 4);
    assert_eq!((hot.len(), press.len()), (1, 1), "{hot:?} {press:?}");
    let counters = p.counters();

    // `press` gets a higher limit, a new detector `cold` appears, `hot` stays.
    let cold = "[[assets.detectors]]\nname = \"cold\"\nkind = \"threshold\"\nsignal = \"pump.temperature\"\nwarning = 10.0\ndirection = \"below\"\n";
    let (mut q, _) = processor(&asset_config(10.0, 4, cold));
    let mut closed = Vec::new();
    let report = q.adopt(p, at(t), &mut closed);
    assert_eq!(
        report,
        AdoptReport {
            windows_kept: 2,
            windows_new: 0,
            detectors_kept: 1,
            detectors_new: 2,
            bindings_kept: 0,
            bindings_new: 0,
            alerts_closed: 1,
        }
    );
    assert!(
        Arc::ptr_eq(&counters, &q.counters()),
        "metrics keep reading the same counters"
    );
    let [c] = &closed[..] else {
        panic!("{closed:?}")
    };
    assert_eq!(
        (&*c.detector, c.state, c.episode),
        ("press", AlertState::Cleared, press[0].id)
    );
    assert!(c.message.contains("configuration reload"), "{}", c.message);
    assert!(c.id > press[0].id, "ids continue their sequence");

    // `hot` is still open: more heat raises nothing, cooling clears its episode.
    assert!(feed(&mut q, &reg, &mut t, "pump.temperature", 70.0, 4).is_empty());
    let cleared = feed(&mut q, &reg, &mut t, "pump.temperature", 50.0, 4);
    let [h] = &cleared[..] else {
        panic!("{cleared:?}")
    };
    assert_eq!(
        (&*h.detector, h.state, h.episode),
        ("hot", AlertState::Cleared, hot[0].id)
    );
    assert!(h.id > c.id);
    // The new `press` judges by its new limit: 7 bar is normal now.
    assert!(feed(&mut q, &reg, &mut t, "pump.pressure", 7.0, 8).is_empty());
    assert_eq!(q.engine_stats().raised, 2);
    assert_eq!(q.engine_stats().cleared, 2);
}

#[test]
fn a_reload_keeps_the_samples_of_unchanged_windows_and_restarts_changed_ones() {
    let (mut p, reg) = processor(&asset_config(5.0, 4, ""));
    let mut t = 0;
    // Half of each window before the reload.
    feed(&mut p, &reg, &mut t, "pump.temperature", 20.0, 2);
    feed(&mut p, &reg, &mut t, "pump.pressure", 2.0, 2);
    // The temperature window becomes 6 samples long; pressure is unchanged.
    let (mut q, _) = processor(&asset_config(5.0, 6, ""));
    let report = q.adopt(p, at(t), &mut Vec::new());
    assert_eq!((report.windows_kept, report.windows_new), (1, 1));
    // `hot` reads the changed window: it starts fresh.
    assert_eq!((report.detectors_kept, report.detectors_new), (1, 1));
    let windows = |q: &Processor| q.counters().windows.load(Ordering::Relaxed);
    feed(&mut q, &reg, &mut t, "pump.pressure", 2.0, 2);
    assert_eq!(
        windows(&q),
        1,
        "the pressure window completes with its first two samples"
    );
    feed(&mut q, &reg, &mut t, "pump.temperature", 20.0, 4);
    assert_eq!(
        windows(&q),
        1,
        "the new temperature window has only four of six"
    );
    feed(&mut q, &reg, &mut t, "pump.temperature", 20.0, 2);
    assert_eq!(windows(&q), 2);
}

#[test]
fn removing_an_asset_closes_its_open_alerts() {
    let (mut p, reg) = processor(&asset_config(5.0, 4, ""));
    let mut t = 0;
    let raised = feed(&mut p, &reg, &mut t, "pump.temperature", 70.0, 4);
    assert_eq!(raised.len(), 1);
    let none = "[agent]\nid = \"adopt-test\"\n[[drivers]]\nname = \"plant\"\nkind = \"sim\"\n[[drivers.machines]]\nname = \"pump\"\n";
    let (mut q, _) = processor(none);
    let mut closed = Vec::new();
    let report = q.adopt(p, at(t), &mut closed);
    assert_eq!(report.alerts_closed, 1);
    assert_eq!(closed[0].episode, raised[0].id);
    assert_eq!(
        q.counters().alerts.load(Ordering::Relaxed),
        2,
        "the raise and the close"
    );
    assert!(feed(&mut q, &reg, &mut t, "pump.temperature", 70.0, 8).is_empty());
}
