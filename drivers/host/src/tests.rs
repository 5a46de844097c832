use super::*;
use edge_driver_api::config::{Diagnostics, parse_document, render};
use edge_driver_api::{Clock, Quality};
use tokio_util::sync::CancellationToken;

fn parse(src: &str) -> Result<HostConfig, String> {
    let table = parse_document(src).map_err(|d| render("t.toml", src, &d))?;
    let diags = Diagnostics::new();
    let cfg = {
        let mut r = TableReader::new(&table, "drivers[0]", &diags);
        HostConfig::parse(&mut r)
    };
    if diags.is_empty() {
        cfg.ok_or_else(|| "no config".into())
    } else {
        Err(render("t.toml", src, &diags.into_vec()))
    }
}

/// A fake /proc and /sys tree with one thermal zone; returns its root.
fn fake_tree(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("edge-host-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("proc")).expect("mkdir");
    std::fs::create_dir_all(root.join("sys/class/thermal/thermal_zone0")).expect("mkdir");
    std::fs::write(
        root.join("proc/stat"),
        "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n",
    )
    .expect("write");
    std::fs::write(
        root.join("proc/meminfo"),
        "MemTotal:        1000 kB\nMemFree:          100 kB\nMemAvailable:     250 kB\n",
    )
    .expect("write");
    std::fs::write(root.join("proc/loadavg"), "0.50 0.25 0.10 1/100 1234\n").expect("write");
    std::fs::write(
        root.join("sys/class/thermal/thermal_zone0/type"),
        "cpu-thermal\n",
    )
    .expect("write");
    std::fs::write(root.join("sys/class/thermal/thermal_zone0/temp"), "48500\n").expect("write");
    root
}

#[test]
fn parses_proc_formats() {
    assert_eq!(parse_cpu("cpu  10 0 10 70 10 0 0 0\n"), Some((20, 100)));
    assert_eq!(
        parse_mem("MemTotal: 200 kB\nMemAvailable: 50 kB\n"),
        Some(75.0)
    );
    // Old kernels without MemAvailable.
    assert_eq!(
        parse_mem("MemTotal: 100 kB\nMemFree: 10 kB\nBuffers: 10 kB\nCached: 20 kB\n"),
        Some(60.0)
    );
    assert_eq!(parse_load("1.5 1.0 0.5 2/3 4"), Some([1.5, 1.0, 0.5]));
    assert_eq!(parse_cpu("garbage"), None);
    assert_eq!(parse_mem(""), None);
}

#[test]
fn root_disk_usage_is_a_percentage() {
    let pct = disk_used_pct(Path::new("/")).expect("statvfs on /");
    assert!((0.0..=100.0).contains(&pct));
    assert_eq!(disk_used_pct(Path::new("/definitely/not/here")), None);
}

#[tokio::test(start_paused = true)]
async fn reads_every_metric_and_reports_missing_ones_as_bad_quality() {
    let root = fake_tree("all");
    let src = format!(
        "interval = \"1s\"\nmounts = [\"/\", \"/definitely/not/here\"]\nproc_root = \"{}\"\nsys_root = \"{}\"\n",
        root.join("proc").display(),
        root.join("sys").display()
    );
    let cfg = parse(&src).expect("valid");
    let decls = cfg.signals();
    let names: Vec<&str> = decls.iter().map(|d| d.name.as_str()).collect();
    assert!(names.contains(&"host.temp.cpu-thermal_c"), "{names:?}");
    assert!(names.contains(&"host.disk.definitely_not_here.used_pct"));
    let mut reg = SignalRegistry::new();
    for d in &decls {
        reg.intern(d, "host").expect("unique");
    }
    let factory = cfg.into_factory(&reg).expect("factory");
    let sink = Arc::new(edge_driver_api::testing::CollectSink::new());
    let cancel = CancellationToken::new();
    let ctx = DriverContext::new(
        "host".into(),
        sink.clone(),
        cancel.clone(),
        Clock::virtual_from(0),
    );
    let task = tokio::spawn(factory.create().expect("create").run(ctx));
    // Let the first reading happen, then make the CPU busy for the second one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(root.join("proc/stat"), "cpu  150 0 150 900 0 0 0 0 0 0\n").expect("write");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cancel.cancel();
    let res = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .expect("no panic");
    assert!(res.is_ok());
    let samples = sink.samples();
    let last = |name: &str| {
        let id = reg.get(name).expect("registered");
        samples
            .iter()
            .rev()
            .find(|s| s.signal == id)
            .copied()
            .expect("sample present")
    };
    // (50+50) busy of 200 total jiffies.
    assert_eq!(last("host.cpu.usage_pct").usable_f64(), Some(50.0));
    assert_eq!(last("host.mem.used_pct").usable_f64(), Some(75.0));
    assert_eq!(last("host.load.5m").usable_f64(), Some(0.25));
    assert_eq!(last("host.temp.cpu-thermal_c").usable_f64(), Some(48.5));
    assert!(last("host.disk.root.used_pct").usable_f64().is_some());
    assert_eq!(
        last("host.disk.definitely_not_here.used_pct").quality,
        Quality::Bad(BadReason::Other)
    );
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn missing_proc_files_do_not_prevent_start() {
    let root = std::env::temp_dir().join(format!("edge-host-empty-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("mkdir");
    let src = format!("proc_root = \"{0}\"\nsys_root = \"{0}\"\n", root.display());
    let cfg = parse(&src).expect("valid");
    // No thermal zones found: just the fixed signals and the root disk.
    assert_eq!(cfg.signals().len(), 6);
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn bad_mounts_are_reported() {
    let err =
        parse("mounts = [\"data\", \"/\", \"/\"]\ninterval = \"10ms\"\n").expect_err("invalid");
    assert!(err.contains("not an absolute path"), "{err}");
    assert!(err.contains("listed twice"), "{err}");
    assert!(err.contains("at least 100ms"), "{err}");
}
