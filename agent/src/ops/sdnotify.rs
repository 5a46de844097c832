//! systemd's notification protocol (`sd_notify(3)`) and watchdog, without libsystemd.
//!
//! With `Type=notify` systemd passes `$NOTIFY_SOCKET` (a datagram socket, a path or
//! an abstract name starting with `@`). The agent sends `READY=1` once its config
//! is loaded, its journal is open and its drivers are started, `RELOADING=1` /
//! `READY=1` around a SIGHUP reload, `STOPPING=1` when it begins to shut down, and
//! `STATUS=...` lines that `systemctl status` shows.
//!
//! With `WatchdogSec=` systemd also passes `$WATCHDOG_USEC`. The agent sends
//! `WATCHDOG=1` every half of that period — but only while the pipeline's heartbeat
//! (bumped on every turn of its loop, at least once a second) is moving. A stalled
//! pipeline therefore stops feeding the watchdog, and systemd kills and restarts the
//! agent; the journal makes that restart lossless.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A connection to systemd's notification socket.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: std::os::unix::net::SocketAddr,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; `None` when the agent is not run by systemd with
    /// `Type=notify` (or the socket cannot be used, which is logged).
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        match Notifier::connect(std::path::Path::new(&path)) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(socket = ?path, error = %e, "cannot use systemd's NOTIFY_SOCKET");
                None
            }
        }
    }

    pub fn connect(path: &std::path::Path) -> io::Result<Notifier> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = path.as_os_str().as_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)?
            }
            None => std::os::unix::net::SocketAddr::from_pathname(path)?,
        };
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        Ok(Notifier { sock, addr })
    }

    /// Sends one notification (newline-separated `KEY=value` assignments).
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.sock
            .send_to_addr(state.as_bytes(), &self.addr)
            .map(|_| ())
    }

    /// Like [`Self::notify`], logging instead of failing: a notification that cannot
    /// be sent must never stop the agent.
    pub fn send(&self, state: &str) {
        if let Err(e) = self.notify(state) {
            tracing::warn!(error = %e, state, "systemd notification failed");
        }
    }
}

/// The watchdog period systemd asked for (`$WATCHDOG_USEC`), if it is meant for
/// this process (`$WATCHDOG_PID`, when set, is our pid).
pub fn watchdog_period() -> Option<Duration> {
    parse_watchdog(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if pid.is_some_and(|p| p.trim().parse::<u32>().ok() != Some(me)) {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Sends `WATCHDOG=1` every `period / 2` while `heartbeat` moves; stops at `stop`.
///
/// While the heartbeat stands still the pings stop (and the stall is logged once),
/// so systemd's watchdog fires after `period`. Pings resume if the pipeline does.
pub async fn feed_watchdog(
    notifier: Arc<Notifier>,
    period: Duration,
    pipeline: Arc<crate::pipeline::PipelineCounters>,
    stop: CancellationToken,
) {
    let beat = || pipeline.heartbeat.load(Ordering::Relaxed);
    let every = (period / 2).max(Duration::from_millis(10));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = beat();
    let mut stalled = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = beat();
        if now != last {
            last = now;
            if stalled {
                tracing::warn!("pipeline moves again; feeding the systemd watchdog");
                stalled = false;
            }
            notifier.send("WATCHDOG=1");
        } else if !stalled {
            stalled = true;
            tracing::error!(
                ?period,
                "pipeline has not moved for {every:?}; no longer feeding the systemd watchdog"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::PipelineCounters;

    fn socket(dir: &std::path::Path) -> (UnixDatagram, std::path::PathBuf) {
        let path = dir.join("notify.sock");
        let s = UnixDatagram::bind(&path).expect("bind");
        s.set_nonblocking(true).expect("nonblocking");
        (s, path)
    }

    fn received(s: &UnixDatagram) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = s.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("edge-sdnotify-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn notifications_reach_a_path_socket() {
        let dir = temp_dir("path");
        let (s, path) = socket(&dir);
        let n = Notifier::connect(&path).expect("connect");
        n.send("READY=1\nSTATUS=running");
        assert_eq!(received(&s), ["READY=1\nSTATUS=running"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn notifications_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("edge-agent-test-{}", std::process::id());
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract");
        let s = UnixDatagram::bind_addr(&addr).expect("bind");
        s.set_nonblocking(true).expect("nonblocking");
        let n = Notifier::connect(std::path::Path::new(&format!("@{name}"))).expect("connect");
        n.send("STOPPING=1");
        assert_eq!(received(&s), ["STOPPING=1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_is_fed_only_while_the_pipeline_moves() {
        let dir = temp_dir("watchdog");
        let (s, path) = socket(&dir);
        let n = Arc::new(Notifier::connect(&path).expect("connect"));
        let counters = Arc::new(PipelineCounters::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(feed_watchdog(
            n,
            Duration::from_secs(10),
            counters.clone(),
            stop.clone(),
        ));
        // A live pipeline beats at least once a second: pings every 5 s.
        for _ in 0..20 {
            counters.heartbeat.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let live = received(&s);
        assert!(
            (3..=5).contains(&live.len()) && live.iter().all(|m| m == "WATCHDOG=1"),
            "{live:?}"
        );
        // The pipeline stalls. The first check after the last beat still sees it
        // (at most one ping); after that none for longer than the watchdog period,
        // so systemd kills the agent.
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(received(&s).len() <= 1);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(received(&s), Vec::<String>::new());
        // It moves again: pings resume.
        for _ in 0..11 {
            counters.heartbeat.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(!received(&s).is_empty());
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("watchdog task stops")
            .expect("no panic");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn watchdog_period_is_read_for_this_process_only() {
        let p = |usec, pid| parse_watchdog(usec, pid, 42);
        assert_eq!(
            p(Some("30000000"), Some("42")),
            Some(Duration::from_secs(30))
        );
        assert_eq!(p(Some("30000000"), None), Some(Duration::from_secs(30)));
        assert_eq!(
            p(Some("30000000"), Some("1")),
            None,
            "another process's watchdog"
        );
        assert_eq!(p(Some("0"), None), None);
        assert_eq!(p(Some("soon"), None), None);
        assert_eq!(p(None, Some("42")), None);
    }
}
