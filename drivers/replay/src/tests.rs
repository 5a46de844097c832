use std::path::Path;

use super::*;
use edge_driver_api::Clock;
use edge_driver_api::config::{Diagnostics, parse_document, render};
use tokio_util::sync::CancellationToken;

/// A file under the system temp dir, removed on drop.
struct File(PathBuf);

impl File {
    fn new(name: &str, text: &str) -> File {
        let dir = std::env::temp_dir().join(format!("edge-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        File(p)
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn parse(keys: &str) -> Result<ReplayConfig, String> {
    let src = keys.to_string();
    let doc = parse_document(&src).map_err(|d| render("t.toml", &src, &d))?;
    let diags = Diagnostics::new();
    let cfg = {
        let mut r = TableReader::new(&doc, "drivers[0]", &diags);
        ReplayConfig::parse(&mut r)
    };
    if diags.is_empty() {
        cfg.ok_or_else(|| "no config".into())
    } else {
        Err(render("t.toml", &src, &diags.into_vec()))
    }
}

fn factory(cfg: ReplayConfig) -> (ReplayFactory, SignalRegistry) {
    let mut reg = SignalRegistry::new();
    for d in cfg.signals() {
        reg.intern(&d, "replay").expect("unique");
    }
    (cfg.into_factory(&reg).expect("factory"), reg)
}

/// Runs a driver for `secs` of (paused) tokio time; the samples and its result.
async fn run_for(f: &ReplayFactory, secs: u64) -> (Vec<Sample>, Result<(), DriverError>) {
    run_on(f, secs, Clock::virtual_from(0)).await
}

/// The same on `clock` (the agent's clock outlives a driver restart).
async fn run_on(
    f: &ReplayFactory,
    secs: u64,
    clock: Clock,
) -> (Vec<Sample>, Result<(), DriverError>) {
    let sink = Arc::new(edge_driver_api::testing::CollectSink::new());
    let cancel = CancellationToken::new();
    let ctx = DriverContext::new("replay".into(), sink.clone(), cancel.clone(), clock);
    let task = tokio::spawn(f.create().expect("create").run(ctx));
    tokio::time::sleep(Duration::from_secs(secs)).await;
    cancel.cancel();
    let res = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops promptly when cancelled")
        .expect("no panic");
    (sink.take(), res)
}

const CSV: &str = "time,pump.temperature,pump.current\n0,60,12\n10,61,\n20,62.5,12.4\n";

#[tokio::test(start_paused = true)]
async fn a_csv_is_played_with_its_spacing_at_the_speed_asked_and_then_goes_quiet() {
    let f = File::new("a.csv", CSV);
    let cfg = parse(&format!("path = {:?}\nspeed = 10.0\n", f.0)).expect("valid");
    let names: Vec<String> = cfg.signals().into_iter().map(|d| d.name).collect();
    assert_eq!(names, vec!["pump.temperature", "pump.current"]);
    let (fac, reg) = factory(cfg);
    // 20 recorded seconds at 10× take 2 s; run 10 s: nothing after the last row.
    let (samples, res) = run_for(&fac, 10).await;
    assert!(res.is_ok());
    let temp = edge_driver_api::testing::samples_of(&samples, &reg, "pump.temperature");
    let values: Vec<f64> = temp.iter().map(|s| s.value.as_f64()).collect();
    assert_eq!(values, vec![60.0, 61.0, 62.5], "every row, once");
    let t0 = temp[0].ts.mono_ns;
    let stamps: Vec<u64> = temp
        .iter()
        .map(|s| (s.ts.mono_ns - t0) / 1_000_000_000)
        .collect();
    assert_eq!(stamps, vec![0, 10, 20], "the recording's spacing");
    let current = edge_driver_api::testing::samples_of(&samples, &reg, "pump.current");
    assert_eq!(current.len(), 2, "an empty cell is no sample");
}

#[tokio::test(start_paused = true)]
async fn a_looped_replay_starts_again_one_spacing_after_its_last_row() {
    let f = File::new("b.csv", CSV);
    let (fac, reg) = factory(parse(&format!("path = {:?}\nloop = true\n", f.0)).expect("valid"));
    // Laps of 30 recorded seconds at real time: rows at 0, 10, 20, 30 (lap 2), 40, 50.
    let (samples, _) = run_for(&fac, 55).await;
    let temp = edge_driver_api::testing::samples_of(&samples, &reg, "pump.temperature");
    let values: Vec<f64> = temp.iter().map(|s| s.value.as_f64()).collect();
    assert_eq!(values, vec![60.0, 61.0, 62.5, 60.0, 61.0, 62.5]);
    let t0 = temp[0].ts.mono_ns;
    assert_eq!((temp[3].ts.mono_ns - t0) / 1_000_000_000, 30);
}

#[tokio::test(start_paused = true)]
async fn a_restarted_replay_resumes_where_it_stands() {
    let f = File::new("c.csv", CSV);
    let (fac, reg) = factory(parse(&format!("path = {:?}\n", f.0)).expect("valid"));
    let clock = Clock::virtual_from(0);
    let (first, _) = run_on(&fac, 5, clock.clone()).await;
    let (second, _) = run_on(&fac, 30, clock).await;
    let v = |s: &[Sample]| -> Vec<f64> {
        edge_driver_api::testing::samples_of(s, &reg, "pump.temperature")
            .iter()
            .map(|s| s.value.as_f64())
            .collect()
    };
    assert_eq!(v(&first), vec![60.0]);
    assert_eq!(v(&second), vec![61.0, 62.5], "no row twice, none skipped");
}

#[test]
fn json_lines_name_their_signals_and_null_is_no_sample() {
    let t = table::parse_json_lines(
        Path::new("x.jsonl"),
        "{\"time\": \"2026-03-01T00:00:00Z\", \"b\": 1.5, \"a\": 2}\n\
         {\"time\": \"2026-03-01T00:00:05Z\", \"a\": null}\n",
    )
    .expect("valid");
    assert_eq!(t.columns, vec!["a", "b"]);
    assert_eq!(t.times, vec![0.0, 5.0]);
    assert_eq!(
        (t.value(0, 0), t.value(0, 1), t.value(1, 0), t.value(1, 1)),
        (Some(2.0), Some(1.5), None, None)
    );
    assert_eq!(t.start_wall_ns, 1_772_323_200_000_000_000);
}

#[test]
fn bad_json_lines_are_errors_at_their_line_all_at_once() {
    let err = table::parse_json_lines(
        Path::new("x.jsonl"),
        "{\"time\": 0, \"a\": 1}\n[1]\n{\"time\": 5, \"a\": \"hot\"}\n{\"a\": 1}\nnot json\n\
         {\"time\": 2, \"a\": 1}\n",
    )
    .expect_err("invalid");
    let all = err.join("\n");
    for want in [
        "x.jsonl:2:1: each line must be a JSON object",
        "x.jsonl:3:1: `a` is not a number",
        "x.jsonl:4:1: `time` must be seconds",
        "x.jsonl:5:",
        "x.jsonl:6:1: time goes backwards",
    ] {
        assert!(all.contains(want), "{want} in:\n{all}");
    }
}

#[test]
fn a_missing_or_broken_file_is_a_config_error_at_path_that_names_the_data_line() {
    let err = parse("path = \"/nonexistent/replay.csv\"\n").expect_err("missing");
    assert!(
        err.contains("t.toml:1:8") && err.contains("cannot read it"),
        "{err}"
    );
    let f = File::new("d.csv", "time,a\n0,1\n1,warm\n");
    let err = parse(&format!("path = {:?}\n", f.0)).expect_err("broken");
    assert!(err.contains("d.csv:3:3: `warm` is not a number"), "{err}");
    let err = parse("speed = 2.0\n").expect_err("no path");
    assert!(err.contains("path"), "{err}");
}
