//! The log driver on a real file: a PLC server's log with timeouts, rotated by
//! rename mid-run; counts per window and the captured latencies.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use edge_driver_api::testing::CollectSink;
use edge_driver_api::{BadReason, Clock, DriverContext, DriverFactory, Quality};
use edge_driver_log::LogConfig;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_in_a_rotating_log_become_counts_and_latencies() {
    let dir = std::env::temp_dir().join(format!("edge-logdrv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("plc.log");
    let mut w = std::fs::File::create(&path).expect("create");
    writeln!(w, "timeout after 999ms (before start: not counted)").expect("write");
    let src = format!(
        r#"
paths = ["{}"]
interval = "20ms"
window = "300ms"
[[rules]]
name = "timeout"
regex = 'timeout after (?P<ms>\S+)ms'
unit = "ms"
[[rules]]
name = "reconnect"
regex = 'reconnect(ed|ing)'
"#,
        path.display()
    );
    let cfg = edge_driver_api::testing::parse_section(&src, |r| LogConfig::parse(r, "plclog"));
    let reg = edge_driver_api::testing::registry(cfg.signals(), "plclog");
    assert_eq!(
        reg.meta(reg.get("plclog.timeout.ms").expect("capture signal"))
            .unit
            .as_deref(),
        Some("ms")
    );
    let f = cfg.into_factory(&reg).expect("factory");
    let sink = Arc::new(CollectSink::new());
    let cancel = CancellationToken::new();
    let ctx = DriverContext::new(
        "plclog".into(),
        sink.clone(),
        cancel.clone(),
        Clock::system(),
    );
    let task = tokio::spawn(f.create().expect("driver").run(ctx));
    tokio::time::sleep(Duration::from_millis(100)).await;
    writeln!(w, "12:00:01 read DB1 ok").expect("write");
    writeln!(w, "12:00:02 timeout after 120ms").expect("write");
    writeln!(w, "12:00:03 timeout after 340ms").expect("write");
    writeln!(w, "12:00:04 reconnecting").expect("write");
    // Rotation by rename: the old file's last line is still read.
    writeln!(w, "12:00:05 timeout after 560ms").expect("write");
    std::fs::rename(&path, dir.join("plc.log.1")).expect("rotate");
    let mut w = std::fs::File::create(&path).expect("new file");
    writeln!(w, "12:00:06 timeout after ?ms").expect("write");
    writeln!(w, "12:00:07 reconnected").expect("write");
    tokio::time::sleep(Duration::from_millis(800)).await;
    cancel.cancel();
    let res = tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("prompt")
        .expect("no panic");
    assert!(res.is_ok());

    let samples = sink.samples();
    let of = |n: &str| {
        let id = reg.get(n).expect("signal");
        samples
            .iter()
            .filter(|s| s.signal == id)
            .copied()
            .collect::<Vec<_>>()
    };
    let ms: Vec<_> = of("plclog.timeout.ms");
    let good: Vec<f64> = ms.iter().filter_map(|s| s.usable_f64()).collect();
    assert_eq!(good, [120.0, 340.0, 560.0]);
    assert_eq!(
        ms.last().map(|s| s.quality),
        Some(Quality::Bad(BadReason::Decode))
    );
    let total = |n: &str| of(n).iter().map(|s| s.value.as_f64()).sum::<f64>();
    assert_eq!(
        total("plclog.timeout.count"),
        4.0,
        "per-window counts add up"
    );
    assert_eq!(total("plclog.reconnect.count"), 2.0);
    assert!(
        of("plclog.timeout.count")
            .iter()
            .any(|s| s.value.as_f64() == 0.0),
        "quiet windows report 0"
    );
    assert_eq!(
        of("plclog.rotations").last().map(|s| s.value.as_f64()),
        Some(1.0)
    );
    assert_eq!(
        of("plclog.lines").last().map(|s| s.value.as_f64()),
        Some(7.0)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The journal source runs `journalctl --follow`; here a stand-in script on the same
/// command line (no systemd journal in the test sandbox) checks the arguments and
/// feeds lines. A missing journalctl leaves the driver running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_units_are_followed_through_journalctl() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("edge-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let args = dir.join("args");
    let script = dir.join("journalctl");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" > {}\necho '12:00 timeout after 250ms'\necho '12:01 link reconnecting'\nexec sleep 30\n",
            args.display()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for (journalctl, expect_value) in [
        (script.display().to_string(), true),
        ("/nonexistent/journalctl".into(), false),
    ] {
        let src = format!(
            "journal_units = [\"plc.service\"]\njournalctl = \"{journalctl}\"\ninterval = \"20ms\"\nwindow = \"200ms\"\n[[rules]]\nname = \"timeout\"\nregex = 'timeout after (?P<ms>\\d+)ms'\n"
        );
        let cfg = edge_driver_api::testing::parse_section(&src, |r| LogConfig::parse(r, "j"));
        let reg = edge_driver_api::testing::registry(cfg.signals(), "j");
        let f = cfg.into_factory(&reg).expect("factory");
        let sink = Arc::new(CollectSink::new());
        let cancel = CancellationToken::new();
        let ctx = DriverContext::new("j".into(), sink.clone(), cancel.clone(), Clock::system());
        let task = tokio::spawn(f.create().expect("driver").run(ctx));
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!task.is_finished(), "the driver keeps running");
        cancel.cancel();
        let res = tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("prompt")
            .expect("no panic");
        assert!(res.is_ok());
        let id = reg.get("j.timeout.ms").expect("signal");
        let ms: Vec<f64> = sink
            .samples()
            .iter()
            .filter(|s| s.signal == id)
            .filter_map(|s| s.usable_f64())
            .collect();
        if expect_value {
            assert_eq!(ms, [250.0]);
            let a = std::fs::read_to_string(&args).expect("journalctl ran");
            assert!(
                a.contains("--follow")
                    && a.contains("--unit=plc.service")
                    && a.contains("--output=cat"),
                "{a}"
            );
        } else {
            assert!(ms.is_empty());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
