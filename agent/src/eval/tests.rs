use std::path::PathBuf;

use super::scenario;
use super::*;
use edge_driver_replay::table::parse_rfc3339;

/// A scenario directory under a fresh temporary directory.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!(
            "edge-eval-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Dir(p)
    }

    fn scenario(&self, name: &str, csv: &str, labels: &str) -> PathBuf {
        let d = self.0.join(name);
        std::fs::create_dir_all(&d).expect("scenario dir");
        std::fs::write(d.join("signals.csv"), csv).expect("csv");
        std::fs::write(d.join("labels.toml"), labels).expect("labels");
        d
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A configuration of one simulated pump whose asset section goes on with `asset`.
fn pump_config(asset: &str) -> Config {
    let src = format!(
        "[agent]\nid = \"eval\"\n[alerts]\nconsole = false\n\
         [[drivers]]\nname = \"plant\"\nkind = \"sim\"\n[[drivers.machines]]\nname = \"pump\"\n\
         [[assets]]\nname = \"pump\"\n{asset}"
    );
    crate::config::parse("agent.toml", &src).expect("valid config")
}

fn config() -> Config {
    pump_config(
        r#"
[[assets.signals]]
signal = "pump.temperature"
window = { size = "10s", hop = "10s" }
[[assets.detectors]]
name = "hot"
kind = "threshold"
signal = "pump.temperature"
feature = "mean"
warning = 75.0
critical = 85.0
"#,
    )
}

/// 1 Hz rows of `f(t)` for `secs` seconds.
fn csv(secs: u32, f: impl Fn(f64) -> f64) -> String {
    let mut out = String::from("time,pump.temperature\n");
    for t in 0..secs {
        out.push_str(&format!("{t},{}\n", f(f64::from(t))));
    }
    out
}

#[test]
fn rfc3339_times_parse_with_fractions_and_offsets() {
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        parse_rfc3339("2026-01-01T00:00:00Z"),
        Some(1_767_225_600_000_000_000)
    );
    assert_eq!(
        parse_rfc3339("2026-01-01T01:00:00.5+01:00"),
        Some(1_767_225_600_500_000_000)
    );
    assert_eq!(
        parse_rfc3339("2024-02-29T12:00:00Z"),
        Some(1_709_208_000_000_000_000)
    );
    for bad in [
        "2026-13-01T00:00:00Z",
        "2026-01-01 00:00",
        "yesterday",
        "2026-01-01T00:00:00",
    ] {
        assert_eq!(parse_rfc3339(bad), None, "{bad}");
    }
}

#[test]
fn a_scenario_reads_seconds_or_rfc3339_times_and_empty_cells() {
    let d = Dir::new("read");
    let p = d.scenario(
        "a",
        "time,pump.temperature,pump.current\n\
         2026-01-01T00:00:00Z,60,\n2026-01-01T00:00:01.5Z,,12.5\n",
        "failure_at = \"2026-01-01T00:10:00Z\"\nonset_at = 120\nasset = \"pump\"\nrestarts = [60]\n",
    );
    let s = scenario::load(&p).expect("valid scenario");
    assert_eq!(s.columns, vec!["pump.temperature", "pump.current"]);
    assert_eq!(s.times, vec![0.0, 1.5]);
    assert_eq!(
        (s.value(0, 0), s.value(0, 1), s.value(1, 1)),
        (Some(60.0), None, Some(12.5))
    );
    assert_eq!(s.labels.failure_at_s, Some(600.0));
    assert_eq!(s.labels.onset_at_s, Some(120.0));
    assert_eq!(s.labels.asset.as_deref(), Some("pump"));
    assert_eq!(s.labels.restarts_s, vec![60.0]);
}

#[test]
fn scenario_errors_point_at_file_line_and_column_all_at_once() {
    let d = Dir::new("errors");
    let p = d.scenario(
        "bad",
        "time,pump.temperature\n0,60\n1,hot\n0.5,61\nnoon,62\n",
        "healthy = true\n",
    );
    let errors = scenario::load(&p).expect_err("three problems");
    let csv = p.join("signals.csv").display().to_string();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors[0].starts_with(&format!("{csv}:3:3: `hot` is not a number")),
        "{errors:#?}"
    );
    assert!(
        errors[1].starts_with(&format!("{csv}:4:1: time goes backwards")),
        "{errors:#?}"
    );
    assert!(
        errors[2].starts_with(&format!("{csv}:5:1: `noon` is not a time")),
        "{errors:#?}"
    );

    let p = d.scenario(
        "labels",
        "time,pump.temperature\n0,60\n",
        "healthy = true\nfailure_at = 5\nonest_at = 1\n",
    );
    let errors = scenario::load(&p).expect_err("label problems").join("\n");
    assert!(
        errors.contains("either `healthy = true` or `failure_at"),
        "{errors}"
    );
    assert!(errors.contains("unknown key `onest_at`"), "{errors}");
    assert!(errors.contains("labels.toml:"), "{errors}");
}

/// Scenario `fault`: warm from 100 s (the fault's onset, +0.1 degC/s from 60),
/// hot from 300 s; the failure at 400 s.
fn overheating(d: &Dir) {
    d.scenario(
        "fault",
        &csv(600, |t| {
            if t < 100.0 {
                60.0
            } else {
                60.0 + (t - 100.0) * 0.1
            }
        }),
        "failure_at = 400\nonset_at = 100\nasset = \"pump\"\nkind = \"overheat\"\n",
    );
}

#[test]
fn a_fault_caught_before_failure_scores_its_lead_and_a_healthy_alert_is_false() {
    let d = Dir::new("score");
    overheating(&d);
    // A healthy hour with one hot spell.
    d.scenario(
        "healthy",
        &csv(3600, |t| {
            if (1000.0..1100.0).contains(&t) {
                80.0
            } else {
                60.0
            }
        }),
        "healthy = true\n",
    );
    let r = run(&config(), &d.0, None).expect("runs");
    let fault = &r.scenarios[0];
    assert_eq!(fault.name, "fault");
    assert!(fault.detected);
    assert_eq!(fault.first_severity, Some("warning"));
    // mean(10 s window) > 75 once the value passes ~75.5: t ≈ 255 s, the window ends at 260.
    assert_eq!(fault.first_alert_s, Some(260.0));
    assert_eq!(fault.lead_s, Some(140.0));
    assert_eq!(
        (fault.true_alerts, fault.false_alerts),
        (1, 0),
        "the escalation is the same episode"
    );
    let healthy = &r.scenarios[1];
    assert_eq!((healthy.false_alerts, healthy.detected), (1, false));
    let o = &r.overall;
    assert_eq!(o.recall, Some(1.0));
    assert_eq!(o.precision, Some(0.5));
    let hours = 100.0 / 3600.0 + 3599.0 / 3600.0;
    assert!(
        (o.healthy_hours - hours).abs() < 1e-9,
        "{}",
        o.healthy_hours
    );
    assert!((o.false_alarms_per_hour.expect("rate") - 1.0 / hours).abs() < 1e-9);
    assert_eq!(o.median_lead_s, Some(140.0));
    assert_eq!(o.warmup_alerts, 0);
    assert!(
        table(&r).contains("recall                 100.0 %"),
        "{}",
        table(&r)
    );
}

#[test]
fn no_alert_is_raised_before_a_window_is_full_also_after_a_restart() {
    let d = Dir::new("warmup");
    // Hot all along, from 5 s past a window boundary (the first row has no sample);
    // the agent restarts at 35 s.
    let mut rows = String::from("time,pump.temperature\n0,\n");
    for t in 5..80 {
        rows.push_str(&format!("{t},90\n"));
    }
    d.scenario("hot", &rows, "healthy = true\nrestarts = [35]\n");
    let r = run(&config(), &d.0, None).expect("runs");
    let s = &r.scenarios[0];
    let raises: Vec<f64> = s
        .alerts
        .iter()
        .filter(|a| a.new_episode)
        .map(|a| a.t_s)
        .collect();
    // The first full windows are [10, 20) and, after the restart, [40, 50).
    assert_eq!(raises, vec![20.0, 50.0], "{:?}", s.alerts);
    assert_eq!(s.warmup_alerts, 0);
    assert_eq!(s.false_alerts, 2);
}

#[test]
fn columns_naming_no_configured_signal_are_an_error_or_a_warning() {
    let d = Dir::new("columns");
    d.scenario("a", "time,boiler.temp\n0,1\n", "healthy = true\n");
    let e = run(&config(), &d.0, None)
        .expect_err("no known column")
        .to_string();
    assert!(e.contains("no column names a signal"), "{e}");
    let d = Dir::new("columns2");
    d.scenario(
        "a",
        "time,pump.temperature,boiler.temp\n0,1,2\n",
        "healthy = true\n",
    );
    let r = run(&config(), &d.0, None).expect("runs");
    assert_eq!(r.warnings.len(), 1);
    assert!(r.warnings[0].contains("`boiler.temp`"), "{:?}", r.warnings);
}

/// The demo's current z-score on a pump that changes load and stops, with and
/// without `running`.
fn regime_config(running: &str) -> Config {
    pump_config(&format!(
        r#"{running}
[[assets.signals]]
signal = "pump.current"
window = {{ size = "10s", hop = "10s" }}
[[assets.detectors]]
name = "current-anomaly"
kind = "zscore"
signal = "pump.current"
feature = "mean"
warning_z = 6.0
min_std = 0.05
"#
    ))
}

#[test]
fn a_load_step_and_a_stop_are_not_alarms_once_the_asset_knows_when_it_runs() {
    let d = Dir::new("regime");
    // 12 A with a little noise; 7 A from 600 s (a load step), stopped from 1200 s,
    // back at 12 A from 1800 s.
    let current = |t: f64| {
        let noise = if (t as u64) % 2 == 0 { 0.05 } else { -0.05 };
        match t {
            t if t < 600.0 => 12.0 + noise,
            t if t < 1200.0 => 7.0 + noise,
            t if t < 1800.0 => 0.0,
            _ => 12.0 + noise,
        }
    };
    d.scenario(
        "load",
        &csv(3000, current).replace("pump.temperature", "pump.current"),
        "healthy = true\n",
    );
    let plain = run(&regime_config(""), &d.0, None).expect("runs");
    assert!(
        plain.scenarios[0].false_alerts >= 2,
        "without `running` the step and the stop raise: {:?}",
        plain.scenarios[0].alerts
    );
    let aware = run(
        &regime_config(r#"running = { signal = "pump.current", above = 2.0, settle = "2m" }"#),
        &d.0,
        None,
    )
    .expect("runs");
    assert_eq!(
        aware.scenarios[0].false_alerts, 0,
        "{:?}",
        aware.scenarios[0].alerts
    );
}

#[test]
fn a_plot_shows_each_signal_the_labels_and_every_alert() {
    let d = Dir::new("plot");
    overheating(&d);
    let plots = d.0.join("plots");
    let r = run(&config(), &d.0, Some(&plots)).expect("runs");
    let svg = std::fs::read_to_string(plots.join("fault.svg")).expect("one SVG per scenario");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(
        svg.contains(">pump.temperature</text>"),
        "a panel per signal"
    );
    assert!(svg.contains(">onset</text>") && svg.contains(">failure</text>"));
    let marks = svg.matches("<rect x=").count() - 1; // less the panel's frame
    assert_eq!(
        marks,
        r.scenarios[0].alerts.len(),
        "a mark per alert message"
    );
    assert!(
        svg.contains("#e6b800") && svg.contains("#d62728"),
        "warning and critical colours"
    );
    assert!(
        svg.contains("stroke-dasharray=\"2,3\""),
        "the alert limits on the panel"
    );
    assert!(!svg.contains("NaN"), "{svg}");
}

#[test]
fn an_accelerating_fault_gets_the_curve_s_eta_and_its_interval_is_scored_and_drawn() {
    let d = Dir::new("eta");
    // Wear from 600 s: 60 + 25·((t − 600)/1800)² crosses 85 at t = 2400 s.
    d.scenario(
        "wear",
        &csv(2700, |t| {
            let e = ((t - 600.0) / 1800.0).max(0.0);
            60.0 + 25.0 * e * e
        }),
        "failure_at = 2400\nonset_at = 600\nasset = \"pump\"\n",
    );
    let cfg = pump_config(
        r#"
[[assets.signals]]
signal = "pump.temperature"
window = { size = "10s", hop = "10s" }
[[assets.detectors]]
name = "forecast"
kind = "trend"
signal = "pump.temperature"
feature = "mean"
limit = 85.0
horizon = "15m"
lookback = "10m"
"#,
    );
    let plots = d.0.join("plots");
    let r = run(&cfg, &d.0, Some(&plots)).expect("runs");
    let s = &r.scenarios[0];
    let err = s.eta_error.expect("an ETA scored");
    assert!(
        err.abs() < 0.1,
        "the quadratic's ETA: {err} ({:?})",
        s.alerts
    );
    assert_eq!(s.eta_in_range, Some(true), "{:?}", s.alerts);
    assert_eq!(r.overall.eta_interval_coverage, Some(1.0));
    let svg = std::fs::read_to_string(plots.join("wear.svg")).expect("plot");
    assert!(svg.contains("class=\"eta-range\""), "the interval drawn");
}

#[test]
fn operators_labels_give_a_precision_and_the_true_problems_no_longer_raised() {
    let d = Dir::new("operator");
    overheating(&d);
    let start = edge_driver_replay::table::DEFAULT_START_NS;
    let line = |det: &str, t: i64, verdict: &str| {
        format!(
            "{{\"v\":1,\"verdict\":\"{verdict}\",\"alert\":{{\"asset\":\"pump\",\"detector\":\"{det}\",\"time\":{{\"wall_ns\":{}}}}}}}\n",
            start + t * 1_000_000_000
        )
    };
    // The warning at 260 s was a false alarm (labelled 30 s off: still that one);
    // a problem labelled true at 500 s raises nothing now; another detector's
    // label matches nothing here.
    let labels = line("hot", 290, "false") + &line("hot", 500, "true") + &line("cold", 260, "true");
    std::fs::write(d.0.join("fault").join(operator::FILE), labels).expect("labels");
    let r = run(&config(), &d.0, None).expect("runs");
    let m = r.scenarios[0].operator_labels.clone().expect("compared");
    assert_eq!(
        (m.labels, m.matched_true, m.matched_false, m.true_missed),
        (3, 0, 1, 2),
        "{:?}",
        r.scenarios[0].alerts
    );
    assert_eq!(r.overall.labelled_precision, Some(0.0));
    assert_eq!(r.overall.labelled_true_missed, 2);
    assert!(table(&r).contains("operators' labels      precision 0.0 %; 2 problem(s)"));
    // A broken line is an error at its line.
    std::fs::write(
        d.0.join("fault").join(operator::FILE),
        "{\"verdict\":\"maybe\"}\n",
    )
    .expect("w");
    let err = run(&config(), &d.0, None).expect_err("bad labels");
    assert!(
        format!("{err}").contains("alert-labels.jsonl:1:1: not a label"),
        "{err}"
    );
}

/// A pump whose pressure follows its current (a load change) and, in `leak`, then
/// loses 2 bar at constant load; 1 Hz rows of current and pressure.
fn pump_rows(secs: u32, load: impl Fn(f64) -> f64, leak: impl Fn(f64) -> f64) -> String {
    let mut out = String::from("time,pump.current,pump.pressure\n");
    for t in 0..secs {
        let t = f64::from(t);
        let noise = if (t as u64) % 2 == 0 { 0.02 } else { -0.02 };
        let l = load(t);
        let (i, p) = if l > 0.0 {
            (12.0 * (0.3 + 0.7 * l), 6.0 * (0.5 + 0.5 * l) - leak(t))
        } else {
            (0.0, 0.3)
        };
        out.push_str(&format!("{t},{},{}\n", i + noise, p + noise));
    }
    out
}

fn residual_config() -> Config {
    pump_config(
        r#"running = { signal = "pump.current", above = 2.0, settle = "1m" }
[[assets.signals]]
signal = "pump.current"
window = { size = "10s", hop = "10s" }
[[assets.signals]]
signal = "pump.pressure"
window = { size = "10s", hop = "10s" }
[[assets.detectors]]
name = "pressure-vs-load"
kind = "residual"
signal = "pump.pressure"
predictor = "pump.current"
direction = "below"
warning = 0.8
learn = 3
[[assets.detectors]]
name = "pressure-low"
kind = "threshold"
signal = "pump.pressure"
direction = "below"
warning = 3.0
"#,
    )
}

#[test]
fn a_leak_at_part_load_is_raised_against_the_current_and_load_changes_are_not() {
    let d = Dir::new("residual");
    // Full load, half load from 600 s, stopped 1200–1500 s, 0.7 from 1500 s.
    let load = |t: f64| match t {
        t if t < 600.0 => 1.0,
        t if t < 1200.0 => 0.5,
        t if t < 1500.0 => 0.0,
        _ => 0.7,
    };
    d.scenario(
        "healthy",
        &pump_rows(2400, load, |_| 0.0),
        "healthy = true\n",
    );
    // At half load (4.5 bar) a 1.2 bar leak leaves 3.3 bar: above the low limit.
    d.scenario(
        "leak",
        &pump_rows(
            1200,
            |t| if t < 600.0 { 1.0 } else { 0.5 },
            |t| (1.2 * (t - 900.0) / 200.0).clamp(0.0, 1.2),
        ),
        "failure_at = 1150\nonset_at = 900\nasset = \"pump\"\n",
    );
    let r = run(&residual_config(), &d.0, None).expect("runs");
    let healthy = &r.scenarios[0];
    assert_eq!(healthy.false_alerts, 0, "{:?}", healthy.alerts);
    let leak = &r.scenarios[1];
    assert!(leak.detected, "{:?}", leak.alerts);
    let first = &leak.alerts[0];
    assert_eq!(&*first.detector, "pressure-vs-load", "{:?}", leak.alerts);
}

#[test]
fn a_sensor_stuck_while_the_machine_is_stopped_is_raised_only_when_judged_always() {
    let d = Dir::new("always");
    // Stopped from 300 s; the pressure sensor freezes at 600 s.
    let mut rows = String::from("time,pump.current,pump.pressure\n");
    for t in 0..2400u32 {
        let n = if t % 2 == 0 { 0.02 } else { -0.02 };
        let (i, p) = if t < 300 {
            (12.0 + n, 6.0 + n)
        } else {
            (n, 0.3 + n)
        };
        let p = if t >= 600 { 0.3 } else { p };
        rows.push_str(&format!("{t},{i},{p}\n"));
    }
    d.scenario(
        "stuck",
        &rows,
        "failure_at = 2000\nonset_at = 600\nasset = \"pump\"\n",
    );
    let stuck = |judge: &str| {
        pump_config(&format!(
            r#"running = {{ signal = "pump.current", above = 2.0, settle = "1m" }}
[[assets.signals]]
signal = "pump.current"
window = {{ size = "10s", hop = "10s" }}
[[assets.signals]]
signal = "pump.pressure"
window = {{ size = "10s", hop = "10s" }}
[[assets.detectors]]
name = "pressure-stuck"
kind = "flatline"
signal = "pump.pressure"
min_duration = "5m"
{judge}
"#
        ))
    };
    let gated = run(&stuck(""), &d.0, None).expect("runs");
    assert!(
        !gated.scenarios[0].detected,
        "{:?}",
        gated.scenarios[0].alerts
    );
    let always = run(&stuck("judge = \"always\""), &d.0, None).expect("runs");
    assert!(
        always.scenarios[0].detected,
        "{:?}",
        always.scenarios[0].alerts
    );
}
