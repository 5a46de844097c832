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

/// The whole agent (simulated plant → detectors → engine → journal → uplink) with
/// its journal on a partition that is nearly full, the broker down, then back. The
/// oracle: every alert the agent accepted (its JSON-lines file, on another disk) is
/// either received by the broker's subscriber, still waiting in the journal, or one
/// of exactly as many records as the journal counts as evicted — nothing else is
/// lost — and the eviction is reported upstream by a system alert.
#[allow(clippy::print_stdout)] // the figures, shown with --nocapture
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_on_a_nearly_full_partition_loses_nothing_it_does_not_count_as_evicted() {
    let fs = SmallFs::mount(2 << 20);
    // Someone else's files leave the journal 48 KiB.
    fs.fill();
    let filler = std::fs::OpenOptions::new()
        .write(true)
        .open(fs.mount.join("filler"))
        .expect("filler");
    let len = filler.metadata().expect("metadata").len();
    filler.set_len(len - 48 * 1024).expect("free 48 KiB");
    drop(filler);

    let port = edge_agent_tests::free_port();
    let mut broker = Mosquitto::start_on(port);
    let sub = Subscriber::start(port, "sub-agent-full", "edge/#").await;
    broker.stop();
    let dir = TempDir::new("agent-full");
    let jsonl = dir.path().join("alerts.jsonl");
    let journal_dir = fs.mount.join("journal");
    let cfg_path = dir.path().join("agent.toml");
    std::fs::write(&cfg_path, agent_config(&jsonl, &journal_dir, port)).expect("config");

    let mut agent = std::process::Command::new(edge_agent_tests::agent_bin())
        .args(["run", "--config"])
        .arg(&cfg_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start edge-agent");
    // The outage: alerts keep coming and outgrow the 48 KiB.
    tokio::time::sleep(Duration::from_secs(8)).await;
    broker.spawn();
    wait_until("the backlog delivered", 60, || {
        sub.json_on("edge/gw-full/status")
            .iter()
            .any(|s| s["state"] == "online" && s["journal"]["pending"]["alert"] == 0)
    })
    .await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let stopped = tokio::task::spawn_blocking(move || agent.wait())
        .await
        .expect("join")
        .expect("agent exits");
    assert!(stopped.success(), "{stopped:?}");

    let accepted = edge_agent_tests::accepted_alert_ids(&jsonl);
    let received: Vec<(String, serde_json::Value)> = sub
        .msgs
        .lock()
        .expect("test mutex")
        .iter()
        .filter(|(t, _, _)| t.contains("/alerts/"))
        .filter_map(|(_, p, _)| serde_json::from_slice::<serde_json::Value>(p).ok())
        .filter_map(|v| Some((v["id"].as_str()?.to_string(), v)))
        .collect();
    let distinct: BTreeSet<&String> = received.iter().map(|(id, _)| id).collect();
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
    let evicted = evicted(&j);
    let kept: BTreeSet<String> = distinct
        .iter()
        .map(|s| s.to_string())
        .chain(waiting)
        .collect();
    assert!(
        kept.is_subset(&accepted),
        "received or stored alerts the agent never accepted"
    );
    let unaccounted = accepted.len() as u64 - kept.len() as u64;
    println!(
        "agent on a full partition: {} accepted, {} received ({} duplicates), {} evicted",
        accepted.len(),
        distinct.len(),
        received.len() - distinct.len(),
        evicted
    );
    assert!(evicted > 0, "the partition was meant to fill up");
    assert_eq!(
        unaccounted, evicted,
        "every accepted alert is received, waiting, or counted as evicted"
    );
    assert!(
        received
            .iter()
            .any(|(_, v)| v["kind"] == "system" && v["detector"] == "journal_evictions"),
        "the eviction was reported upstream"
    );
    assert_eq!(
        received.first().map(|(_, v)| v["kind"].clone()),
        Some(serde_json::json!("system")),
        "the system alerts of the outage arrive before its backlog"
    );
}

fn agent_config(jsonl: &Path, journal: &Path, port: u16) -> String {
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
segment_size = "16KiB"
fsync = "200ms"
[uplink]
host = "127.0.0.1"
port = {port}
reconnect_initial = "50ms"
reconnect_max = "200ms"
{plant}"#,
        jsonl = jsonl.display(),
        journal = journal.display(),
        plant = edge_agent_tests::spiking_plant_toml(600.0),
    )
}
