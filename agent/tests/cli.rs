//! The `edge-agent` binary: subcommands, exit codes, graceful stop.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edge-agent"))
}

/// A file in this test run's scratch directory, removed (with the directory, once
/// empty) when dropped.
struct TempFile(std::path::PathBuf);

impl std::ops::Deref for TempFile {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempFile {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        if let Some(dir) = self.0.parent() {
            // Fails while another test's file is still there; the last one wins.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn temp_file(name: &str, contents: &str) -> TempFile {
    let dir = std::env::temp_dir().join(format!("edge-agent-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    std::fs::write(&p, contents).expect("write");
    TempFile(p)
}

#[test]
fn version_and_help_work() {
    let out = bin().arg("--version").output().expect("runs");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = bin().arg("--help").output().expect("runs");
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["run", "check-config", "print-default-config"] {
        assert!(help.contains(cmd), "{help}");
    }
}

#[test]
fn printed_default_config_passes_check_config() {
    let out = bin().arg("print-default-config").output().expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        text.lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .count()
            > 50,
        "fully commented"
    );
    let path = temp_file("default.toml", &text);
    let out = bin().arg("check-config").arg(&path).output().expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("OK"));
}

#[test]
fn invalid_config_exits_2_with_every_error_on_stderr() {
    let src = include_str!("config/bad/24-several-errors-reported-at-once.toml");
    let path = temp_file("bad.toml", src);
    let out = bin().arg("check-config").arg(&path).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 errors in"), "{err}");
    assert!(err.contains(&format!("{}:6:12", path.display())), "{err}");
    // `run` refuses the same file the same way, before starting anything.
    let out = bin()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let out = bin()
        .args(["check-config", "/nonexistent/edge-agent.toml"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[test]
fn list_signals_prints_every_signal() {
    let out = bin().arg("print-default-config").output().expect("runs");
    let path = temp_file("default-list.toml", &String::from_utf8_lossy(&out.stdout));
    let out = bin()
        .args(["check-config", "--list-signals"])
        .arg(&path)
        .output()
        .expect("runs");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("pump2.vibration\tm/s2\tplant"), "{listed}");
    assert!(listed.contains("host.disk.root.used_pct"), "{listed}");
}

#[test]
fn sigterm_stops_the_agent_gracefully_with_json_logs() {
    let mut child = bin()
        .args(["run", "--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    std::thread::sleep(Duration::from_millis(1500));
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = wait_for_exit(&mut child);
    let out = child.wait_with_output().expect("output");
    assert!(status.success(), "{status:?}");
    let logs = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["message"] == "edge-agent started"),
        "{logs}"
    );
    assert!(
        lines.iter().any(|l| l["message"] == "edge-agent stopped"),
        "{logs}"
    );
}

/// Waits at most 25 s for a stopping agent to exit; kills it and fails the test if
/// it does not.
fn wait_for_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        if started.elapsed() > Duration::from_secs(25) {
            let _ = child.kill();
            panic!("the agent did not exit within 25 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An MQTT broker that accepts one client, answers its CONNECT and then never
/// acknowledges anything: an agent connected to it takes its full uplink linger
/// (3 s waiting for the PUBACK of its "offline" status) to stop. Returns the port.
fn silent_broker() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        while let Ok((mut conn, _)) = listener.accept() {
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
                // Fixed header: packet type, then the remaining length (varint).
                let mut byte = [0u8; 1];
                if conn.read_exact(&mut byte).is_err() || byte[0] >> 4 != 1 {
                    return;
                }
                let (mut len, mut shift) = (0usize, 0);
                loop {
                    if conn.read_exact(&mut byte).is_err() {
                        return;
                    }
                    len |= usize::from(byte[0] & 0x7f) << shift;
                    shift += 7;
                    if byte[0] & 0x80 == 0 || shift > 21 {
                        break;
                    }
                }
                let mut connect = vec![0u8; len];
                if conn.read_exact(&mut connect).is_err() {
                    return;
                }
                // CONNACK: session not present, accepted.
                if conn.write_all(&[0x20, 0x02, 0x00, 0x00]).is_err() {
                    return;
                }
                let mut sink = [0u8; 4096];
                while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    port
}

/// The agent with its uplink on a silent broker: it takes more than 3 s to stop.
struct SlowStopper {
    child: std::process::Child,
    stderr: std::sync::mpsc::Receiver<String>,
    journal: std::path::PathBuf,
    _config: TempFile,
}

impl SlowStopper {
    /// Starts the agent and returns once its uplink is connected.
    fn start(name: &str) -> SlowStopper {
        let port = silent_broker();
        let journal = std::env::temp_dir().join(format!(
            "edge-agent-cli-{}-{name}-journal",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&journal);
        let config = temp_file(
            &format!("{name}.toml"),
            &format!(
                r#"
[agent]
id = "{name}"
control_socket = ""
[alerts]
console = false
[journal]
dir = "{journal}"
[uplink]
host = "127.0.0.1"
port = {port}
[[drivers]]
name = "host"
kind = "host"
"#,
                journal = journal.display()
            ),
        );
        let mut child = bin()
            .args(["run", "--log-format", "json", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts");
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let agent = SlowStopper {
            child,
            stderr: rx,
            journal,
            _config: config,
        };
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !seen.iter().any(|l: &String| l.contains("uplink connected")) {
            match agent
                .stderr
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => seen.push(l),
                Err(_) => panic!(
                    "the uplink did not connect within 20 s:\n{}",
                    seen.join("\n")
                ),
            }
        }
        agent
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits (at most 25 s) for the agent to exit; its exit status and the rest of
    /// its log.
    fn exit(&mut self) -> (std::process::ExitStatus, String) {
        let status = wait_for_exit(&mut self.child);
        let mut logs = String::new();
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_secs(5)) {
            logs.push_str(&l);
            logs.push('\n');
        }
        (status, logs)
    }
}

impl Drop for SlowStopper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.journal);
    }
}

#[test]
fn a_stop_request_sent_twice_at_once_still_stops_gracefully() {
    // `timeout`, shells and some supervisors signal the process and then its group.
    let mut agent = SlowStopper::start("twice");
    agent.sigterm();
    std::thread::sleep(Duration::from_millis(300));
    agent.sigterm();
    let (status, logs) = agent.exit();
    assert!(status.success(), "{status:?}\n{logs}");
    assert!(
        logs.contains("stop request repeated within 2 s: still stopping gracefully"),
        "{logs}"
    );
    assert!(logs.contains("edge-agent stopped"), "{logs}");
}

#[test]
fn a_stop_request_repeated_later_exits_at_once_with_130() {
    let mut agent = SlowStopper::start("again");
    agent.sigterm();
    // Still stopping: the uplink waits 3 s for the broker to acknowledge "offline".
    std::thread::sleep(Duration::from_millis(2300));
    agent.sigterm();
    let (status, logs) = agent.exit();
    assert_eq!(status.code(), Some(130), "{logs}");
    assert!(
        logs.contains("second stop request: exiting immediately"),
        "{logs}"
    );
    assert!(!logs.contains("edge-agent stopped"), "{logs}");
}
