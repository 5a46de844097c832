//! The journal on a real, full filesystem (a small tmpfs, like a gateway's data
//! partition) with a real broker: alerts keep being accepted while the broker is
//! down (the journal evicts its oldest to make room, counting each), a restart on
//! the still-full disk recovers, and once the broker is back everything that was
//! kept arrives, acknowledgements succeed on the full disk, and delivery frees
//! space so that nothing more is evicted.
//!
//! Mounting a tmpfs needs root (CI and `tests/run.sh` run as root).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edge_agent::delivery::journal::fs::StdFs;
use edge_agent::delivery::journal::{FsyncPolicy, Journal, JournalConfig, Lane};
use edge_agent::delivery::uplink::{UplinkConfig, UplinkStats, run_uplink};
use edge_agent::delivery::wire::Envelope;
use edge_agent_tests::{Mosquitto, Subscriber, TempDir, wait_until};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// `cmd` as root: directly when we are root, else through password-less sudo.
fn privileged(cmd: &str) -> std::process::Command {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if root {
        std::process::Command::new(cmd)
    } else {
        let mut c = std::process::Command::new("sudo");
        c.args(["-n", cmd]);
        c
    }
}

/// A tmpfs of a fixed size, unmounted when dropped.
struct SmallFs {
    mount: PathBuf,
    _dir: TempDir,
}

impl SmallFs {
    fn mount(bytes: u64) -> SmallFs {
        let dir = TempDir::new("small-fs");
        let mount = dir.path().join("data");
        std::fs::create_dir_all(&mount).expect("mount point");
        let status = privileged("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0777"),
                "tmpfs",
            ])
            .arg(&mount)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a {bytes}-byte tmpfs at {} (this test needs root or password-less sudo, as in CI and tests/run.sh)",
            mount.display()
        );
        SmallFs { mount, _dir: dir }
    }

    /// Fills what is left with a file, so that the disk is completely full.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.mount.join("filler")).expect("filler");
        let block = vec![0xa5u8; 4096];
        while f.write_all(&block).is_ok() {}
        let mut byte = [0u8; 1];
        while f.write_all(&byte).is_ok() {
            byte[0] = byte[0].wrapping_add(1);
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = privileged("umount").arg(&self.mount).status();
    }
}

fn journal(dir: &Path) -> Arc<Mutex<Journal>> {
    let (j, _) = Journal::open(
        JournalConfig {
            dir: dir.to_path_buf(),
            segment_bytes: 16 * 1024,
            // The default budget: far more than the filesystem holds.
            max_disk: 64 << 20,
            fsync: FsyncPolicy::Interval(Duration::from_millis(200)),
        },
        Arc::new(StdFs),
    )
    .expect("the journal opens, even on a full disk");
    Arc::new(Mutex::new(j))
}

/// Appends alerts `range`; every one must be accepted.
fn append(j: &Mutex<Journal>, range: std::ops::Range<u64>) {
    let mut g = j.lock().expect("journal mutex");
    for n in range {
        let body = serde_json::to_vec(&serde_json::json!({
            "v": 1, "n": n, "asset": "pump",
            "message": "temperature(pump.temperature) = 86.5 beyond critical limit 85",
        }))
        .expect("json");
        let env = Envelope::new(u128::from(n), "pump", 0, body);
        if let Err(e) = g.append(Lane::Alert, &env.encode()) {
            panic!("alert {n} was refused on a full disk: {e}");
        }
    }
    g.sync().expect("sync");
}

/// The ids of the alerts waiting in the journal, oldest first.
fn waiting_ids(j: &Mutex<Journal>) -> Vec<u128> {
    let mut g = j.lock().expect("journal mutex");
    g.read(Lane::Alert, 0, usize::MAX)
        .expect("read")
        .iter()
        .map(|r| Envelope::decode(&r.payload).expect("envelope").id)
        .collect()
}

fn kept(j: &Mutex<Journal>) -> Vec<u64> {
    waiting_ids(j).into_iter().map(|id| id as u64).collect()
}

fn evicted(j: &Mutex<Journal>) -> u64 {
    j.lock().expect("journal mutex").stats().counters.evicted[Lane::Alert as usize]
}

fn uplink_config(port: u16) -> UplinkConfig {
    let mut cfg = edge_agent_tests::uplink_config(port, "gw-full");
    cfg.window = 64;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_partition_keeps_accepting_alerts_and_delivers_all_it_kept_once_the_broker_returns()
 {
    let fs = SmallFs::mount(1 << 20);
    let dir = fs.mount.join("journal");
    let port = edge_agent_tests::free_port();
    let mut broker = Mosquitto::start_on(port);
    let sub = Subscriber::start(port, "sub-full", "edge/#").await;
    broker.stop();

    // The broker is down: 8,000 alerts (~1.5 MB) do not fit the 1 MiB partition.
    let j = journal(&dir);
    append(&j, 1..8001);
    let lost = evicted(&j);
    let before_restart = kept(&j);
    assert!(lost > 0, "the partition was meant to fill up");
    assert_eq!(
        before_restart.len() as u64 + lost,
        8000,
        "every accepted alert is kept or counted as evicted"
    );
    assert_eq!(
        before_restart,
        ((8001 - before_restart.len() as u64)..8001).collect::<Vec<_>>(),
        "the oldest were evicted, the newest kept, in order"
    );

    // Whatever space is left goes to another program; then the agent restarts.
    fs.fill();
    drop(j);
    let j = journal(&dir);
    assert_eq!(
        kept(&j),
        before_restart,
        "a restart on a full disk loses nothing"
    );
    assert_eq!(evicted(&j), lost, "the eviction count is persistent");

    // The broker returns: everything kept is delivered and released on the full disk.
    broker.spawn();
    let wake = Arc::new(Notify::new());
    let cancel = CancellationToken::new();
    let stats = Arc::new(UplinkStats::default());
    let task = tokio::spawn(run_uplink(
        uplink_config(port),
        j.clone(),
        wake.clone(),
        cancel.clone(),
        stats.clone(),
    ));
    let last = 8000;
    wait_until("the backlog released", 60, || {
        j.lock().expect("journal mutex").acked(Lane::Alert) == last
    })
    .await;
    wait_until("the backlog received", 30, || {
        sub.alert_numbers()
            .into_iter()
            .collect::<BTreeSet<_>>()
            .len()
            == before_restart.len()
    })
    .await;
    let got = sub.alert_numbers();
    let distinct: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(
        distinct,
        before_restart.iter().copied().collect::<BTreeSet<_>>(),
        "exactly what was kept"
    );
    assert_eq!(got.len(), distinct.len(), "no duplicates on a clean run");
    assert_eq!(
        stats.connects.load(Ordering::Relaxed),
        1,
        "acknowledging on a full disk does not drop the connection"
    );

    // Delivery freed the space: new alerts go in without evicting anything.
    append(&j, 8001..8501);
    wake.notify_one();
    assert_eq!(
        evicted(&j),
        lost,
        "nothing more evicted once delivery freed space"
    );
    wait_until("live alerts delivered", 30, || {
        j.lock().expect("journal mutex").acked(Lane::Alert) == 8500
    })
    .await;
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("uplink stops")
        .expect("uplink does not panic");
    assert!(
        !std::fs::read_dir(dir.join("alert"))
            .expect("lane dir")
            .any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "tmp"))),
        "no temporary files left behind"
    );
}

/// How an outage on a small partition is staged for the whole agent.
struct Outage {
    /// Size of the tmpfs.
    size: u64,
    /// Bytes left free by someone else's file (None: the journal has it all).
    free: Option<u64>,
    /// Speed of the simulated plant (alerts/s grow with it).
    speed: f64,
    /// How long the broker is down.
    down: Duration,
    /// Stop and start the agent this far into the outage (on the still-full disk).
    restart_after: Option<Duration>,
    segment_size: &'static str,
}

/// What an [`Outage`] produced.
#[derive(Debug)]
struct Figures {
    accepted: usize,
    received: usize,
    duplicates: usize,
    max_copies: usize,
    evicted: u64,
    waiting: usize,
    connects: usize,
    /// The alerts received, in order of arrival.
    arrivals: Vec<serde_json::Value>,
    /// The agent's log (every run, appended).
    log: String,
}

async fn stop_agent(agent: std::process::Child) {
    let mut agent = agent;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let stopped = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || agent.wait()),
    )
    .await
    .expect("the agent stops within 30 s")
    .expect("join")
    .expect("agent exits");
    assert!(stopped.success(), "{stopped:?}");
}

/// Runs the whole agent (simulated plant → detectors → engine → journal → uplink)
/// with its journal on a small partition through `o`, then the broker returns.
async fn agent_through_an_outage(o: &Outage) -> Figures {
    let fs = SmallFs::mount(o.size);
    if let Some(free) = o.free {
        fs.fill();
        let filler = std::fs::OpenOptions::new()
            .write(true)
            .open(fs.mount.join("filler"))
            .expect("filler");
        let len = filler.metadata().expect("metadata").len();
        filler.set_len(len - free).expect("free space");
    }
    let port = edge_agent_tests::free_port();
    let mut broker = Mosquitto::start_on(port);
    let sub = Subscriber::start(port, "sub-agent-full", "edge/#").await;
    broker.stop();
    let dir = TempDir::new("agent-full");
    let jsonl = dir.path().join("alerts.jsonl");
    let log = dir.path().join("agent.log");
    let journal_dir = fs.mount.join("journal");
    let cfg_path = dir.path().join("agent.toml");
    let toml = agent_config(&jsonl, &journal_dir, port, o.speed, o.segment_size);
    std::fs::write(&cfg_path, toml).expect("config");

    let mut agent = edge_agent_tests::spawn_agent(&cfg_path, &log);
    match o.restart_after {
        Some(at) => {
            tokio::time::sleep(at).await;
            stop_agent(agent).await;
            agent = edge_agent_tests::spawn_agent(&cfg_path, &log);
            tokio::time::sleep(o.down.saturating_sub(at)).await;
        }
        None => tokio::time::sleep(o.down).await,
    }
    broker.spawn();
    wait_until("the backlog delivered", 120, || {
        sub.json_on("edge/gw-full/status")
            .iter()
            .any(|s| s["state"] == "online" && s["journal"]["pending"]["alert"] == 0)
    })
    .await;
    stop_agent(agent).await;

    let accepted = edge_agent_tests::accepted_alert_ids(&jsonl);
    let arrivals: Vec<serde_json::Value> = sub
        .msgs
        .lock()
        .expect("test mutex")
        .iter()
        .filter(|(t, _, _)| t.contains("/alerts/"))
        .filter_map(|(_, p, _)| serde_json::from_slice::<serde_json::Value>(p).ok())
        .collect();
    let mut copies: std::collections::BTreeMap<String, usize> = Default::default();
    for v in &arrivals {
        if let Some(id) = v["id"].as_str() {
            *copies.entry(id.to_string()).or_default() += 1;
        }
    }
    let (j, _) = Journal::open(
        JournalConfig {
            dir: journal_dir.clone(),
            segment_bytes: 16 * 1024,
            max_disk: 64 << 20,
            fsync: FsyncPolicy::Always,
        },
        Arc::new(StdFs),
    )
    .expect("the journal opens after the agent");
    let j = Mutex::new(j);
    let waiting: BTreeSet<String> = waiting_ids(&j)
        .into_iter()
        .map(|id| edge_agent::alert::AlertId(id).to_string())
        .collect();
    let kept: BTreeSet<String> = copies.keys().cloned().chain(waiting.clone()).collect();
    assert!(
        kept.is_subset(&accepted),
        "received or stored alerts the agent never accepted"
    );
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    Figures {
        accepted: accepted.len(),
        received: copies.len(),
        duplicates: arrivals.len() - copies.len(),
        max_copies: copies.values().copied().max().unwrap_or(0),
        evicted: evicted(&j),
        waiting: waiting.len(),
        connects: log.matches("uplink connected").count(),
        arrivals,
        log,
    }
}

/// Checks the promises of the full-disk design on what an outage produced: every
/// accepted alert is received, waiting, or counted as evicted; the eviction is
/// reported upstream, by a system alert that arrives before the backlog; no
/// acknowledgement failed and the uplink did not loop.
fn check(f: &Figures) {
    let kept = (f.received + f.waiting) as u64;
    assert!(f.evicted > 0, "the partition was meant to fill up: {f:?}");
    assert_eq!(
        f.accepted as u64 - kept,
        f.evicted,
        "every accepted alert is received, waiting, or counted as evicted"
    );
    assert!(
        f.arrivals
            .iter()
            .any(|v| v["kind"] == "system" && v["detector"] == "journal_evictions"),
        "the eviction was reported upstream"
    );
    assert_eq!(
        f.arrivals.first().map(|v| v["kind"].clone()),
        Some(serde_json::json!("system")),
        "the system alerts of the outage arrive before its backlog"
    );
    let failed_acks: Vec<&str> = f
        .log
        .lines()
        .filter(|l| l.contains("ACK") && l.contains("No space left"))
        .collect();
    assert!(
        failed_acks.is_empty(),
        "acknowledgements failed on the full disk: {failed_acks:?}"
    );
}

/// The whole agent with its journal on a partition that is nearly full, the broker
/// down, then back. The oracle: every alert the agent accepted (its JSON-lines
/// file, on another disk) is either received by the broker's subscriber, still
/// waiting in the journal, or one of exactly as many records as the journal counts
/// as evicted — nothing else is lost — and the eviction is reported upstream by a
/// system alert.
#[allow(clippy::print_stdout)] // the figures, shown with --nocapture
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_on_a_nearly_full_partition_loses_nothing_it_does_not_count_as_evicted() {
    let f = agent_through_an_outage(&Outage {
        size: 2 << 20,
        free: Some(48 * 1024),
        speed: 300.0,
        down: Duration::from_secs(8),
        restart_after: None,
        segment_size: "16KiB",
    })
    .await;
    println!(
        "agent on a full partition: {} accepted, {} received ({} duplicates), {} evicted, {} connects",
        f.accepted, f.received, f.duplicates, f.evicted, f.connects
    );
    check(&f);
    assert_eq!(f.connects, 1, "one connection once the broker is back");
}

/// The field report's scenario, at its scale (about 3 minutes): a 3 MiB data
/// partition and the default 64 MiB `max_disk`, the broker down for 90 s at ~110
/// alerts/s, and the agent restarted on the still-full disk halfway through.
/// Prints the figures; run with
/// `cargo test -p edge-agent-tests --test journal_full_disk -- --ignored --nocapture`.
#[allow(clippy::print_stdout)] // the figures
#[ignore = "three minutes; run by hand for the figures"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_mib_partition_through_a_90_s_outage_at_110_alerts_per_second() {
    let started = std::time::Instant::now();
    let f = agent_through_an_outage(&Outage {
        size: 3 << 20,
        free: None,
        speed: 1100.0,
        down: Duration::from_secs(90),
        restart_after: Some(Duration::from_secs(45)),
        segment_size: "64KiB",
    })
    .await;
    println!(
        "3 MiB partition, 90 s outage, restart at 45 s: {} accepted ({:.0}/s), {} received, \
         {} duplicates (max {} copies of one id), {} evicted, {} waiting, {} connects \
         (2 runs), first arrival {}:{}, {:.0} s in all",
        f.accepted,
        f.accepted as f64 / 90.0,
        f.received,
        f.duplicates,
        f.max_copies,
        f.evicted,
        f.waiting,
        f.connects,
        f.arrivals
            .first()
            .map_or("-".into(), |v| v["kind"].to_string()),
        f.arrivals
            .first()
            .map_or("-".into(), |v| v["detector"].to_string()),
        started.elapsed().as_secs_f64(),
    );
    check(&f);
    assert!(
        f.connects <= 3,
        "no reconnect loop: {} connects",
        f.connects
    );
}

fn agent_config(jsonl: &Path, journal: &Path, port: u16, speed: f64, segment: &str) -> String {
    format!(
        r#"
[agent]
id = "gw-full"
[alerts]
console = false
jsonl = "{jsonl}"
max_per_minute = 1000000
flap_max_raises = 0
[journal]
dir = "{journal}"
segment_size = "{segment}"
fsync = "200ms"
[uplink]
host = "127.0.0.1"
port = {port}
reconnect_initial = "50ms"
reconnect_max = "200ms"
{plant}"#,
        jsonl = jsonl.display(),
        journal = journal.display(),
        plant = edge_agent_tests::spiking_plant_toml(speed, 600.0),
    )
}
