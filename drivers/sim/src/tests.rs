use super::*;
use edge_driver_api::Clock;
use edge_driver_api::config::{Diagnostics, parse_document, render};
use tokio_util::sync::CancellationToken;

fn parse(src: &str) -> Result<SimConfig, String> {
    let table = parse_document(src).map_err(|d| render("t.toml", src, &d))?;
    let diags = Diagnostics::new();
    let cfg = {
        let mut r = TableReader::new(&table, "drivers[0]", &diags);
        SimConfig::parse(&mut r)
    };
    if diags.is_empty() {
        cfg.ok_or_else(|| "no config".into())
    } else {
        Err(render("t.toml", src, &diags.into_vec()))
    }
}

fn factory(cfg: SimConfig) -> SimFactory {
    let mut reg = SignalRegistry::new();
    for d in cfg.signals() {
        reg.intern(&d, "sim").expect("unique");
    }
    cfg.into_factory(&reg).expect("factory")
}

async fn run_for(f: &SimFactory, secs: u64) -> (Vec<Sample>, Result<(), DriverError>) {
    let sink = Arc::new(edge_driver_api::testing::CollectSink::new());
    let cancel = CancellationToken::new();
    let ctx = DriverContext::new(
        "sim".into(),
        sink.clone(),
        cancel.clone(),
        Clock::virtual_from(0),
    );
    let driver = f.create().expect("create");
    let task = tokio::spawn(driver.run(ctx));
    tokio::time::sleep(Duration::from_secs(secs)).await;
    cancel.cancel();
    let res = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("driver stops promptly when cancelled")
        .expect("driver task does not panic");
    let samples = sink.take();
    (samples, res)
}

const ONE_MACHINE: &str = r#"
seed = 3
[[machines]]
name = "m1"
sample_rate_hz = 2.0
vibration_rate_hz = 50.0
"#;

#[tokio::test(start_paused = true)]
async fn produces_every_signal_at_its_rate_in_virtual_time() {
    let f = factory(parse(ONE_MACHINE).expect("valid"));
    let (samples, res) = run_for(&f, 10).await;
    assert!(res.is_ok());
    let count = |id: u32| samples.iter().filter(|s| s.signal == SignalId(id)).count();
    // t = 0..=10 s at 2 Hz and 50 Hz in 100 ms ticks (the tick at 10 s races the cancel).
    assert!((19..=21).contains(&count(0)), "{}", count(0));
    assert!((495..=501).contains(&count(1)), "{}", count(1));
    assert!(samples.iter().all(|s| s.quality.is_good()));
    let temps: Vec<_> = samples.iter().filter(|s| s.signal == SignalId(0)).collect();
    assert!(temps.windows(2).all(|w| w[0].ts.mono_ns < w[1].ts.mono_ns));
}

#[tokio::test(start_paused = true)]
async fn same_seed_gives_identical_samples() {
    let (a, _) = run_for(&factory(parse(ONE_MACHINE).expect("valid")), 5).await;
    let (b, _) = run_for(&factory(parse(ONE_MACHINE).expect("valid")), 5).await;
    let values = |v: &[Sample]| {
        v.iter()
            .map(|s| (s.signal, s.value.as_f64().to_bits()))
            .collect::<Vec<_>>()
    };
    assert_eq!(values(&a), values(&b));
}

#[tokio::test(start_paused = true)]
async fn link_loss_fault_fails_the_driver_as_transient() {
    let src = r#"
[[machines]]
name = "m1"
[[machines.faults]]
kind = "link_loss"
start = "3s"
duration = "1m"
"#;
    let f = factory(parse(src).expect("valid"));
    let (samples, res) = run_for(&f, 10).await;
    let err = res.expect_err("link loss is an error");
    assert_eq!(err.kind, edge_driver_api::ErrorKind::Transient);
    assert!(!samples.is_empty(), "samples before the loss are delivered");
}

#[tokio::test(start_paused = true)]
async fn speed_runs_simulated_time_faster_than_the_clock() {
    let src = "speed = 60.0\n[[machines]]\nname = \"m\"\nsample_rate_hz = 1.0\n";
    let f = factory(parse(src).expect("valid"));
    let (samples, _) = run_for(&f, 10).await;
    let temps: Vec<_> = samples.iter().filter(|s| s.signal == SignalId(0)).collect();
    // 10 real seconds at 60x = 600 simulated seconds.
    assert!((599..=601).contains(&temps.len()), "{}", temps.len());
    let last = temps.last().expect("samples").ts.mono_ns;
    assert!(last >= 599_000_000_000);
}

/// Counts and discards (a sim far behind produces more than a test should keep).
#[derive(Default)]
struct CountSink {
    n: std::sync::atomic::AtomicU64,
    notify: tokio::sync::Notify,
}

impl edge_driver_api::SampleSink for CountSink {
    fn try_push(&self, batch: &[Sample]) -> edge_driver_api::PushResult {
        self.n
            .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
        edge_driver_api::PushResult {
            accepted: batch.len(),
        }
    }
    fn space_available(&self) -> &tokio::sync::Notify {
        &self.notify
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sim_far_behind_real_time_still_stops_promptly_when_cancelled() {
    // 10^6 x speed at 100 kHz vibration: every pass falls further behind.
    let src = "speed = 1000000.0\n[[machines]]\nname = \"m\"\nvibration_rate_hz = 100000.0\n";
    let f = factory(parse(src).expect("valid"));
    let sink = Arc::new(CountSink::default());
    let cancel = CancellationToken::new();
    let ctx = DriverContext::new("sim".into(), sink.clone(), cancel.clone(), Clock::system());
    let task = tokio::spawn(f.create().expect("create").run(ctx));
    tokio::time::sleep(Duration::from_millis(300)).await;
    cancel.cancel();
    // Watched from this thread with std time: a driver that never yields could
    // starve the runtime's timers.
    let stopped = std::time::Instant::now();
    while !task.is_finished() {
        assert!(
            stopped.elapsed() < Duration::from_secs(2),
            "driver still running 2 s after cancel"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let res = task.await.expect("driver task does not panic");
    assert!(res.is_ok(), "{res:?}");
    assert!(sink.n.load(std::sync::atomic::Ordering::Relaxed) > 0);
}

#[test]
fn ground_truth_signals_are_declared_per_fault() {
    let src = r#"
[[machines]]
name = "m1"
ground_truth = true
[[machines.faults]]
kind = "bearing_wear"
start = "1h"
"#;
    let names: Vec<String> = parse(src)
        .expect("valid")
        .signals()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert!(names.contains(&"m1.truth.bearing_wear".to_string()));
    assert_eq!(names.len(), 5);
}

#[test]
fn bad_fault_configs_are_all_reported() {
    let src = r#"
[[machines]]
name = "m1"
[[machines.faults]]
kind = "bearing_waer"
[[machines.faults]]
kind = "stuck"
[[machines.faults]]
kind = "spikes"
signal = "presure"
"#;
    let err = parse(src).expect_err("invalid");
    assert!(err.contains("did you mean `bearing_wear`?"), "{err}");
    assert!(err.contains("fault `stuck` needs `signal`"), "{err}");
    assert!(err.contains("did you mean `pressure`?"), "{err}");
    assert!(err.contains("3 errors"), "{err}");
}
