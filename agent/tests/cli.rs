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
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(25) {
            let _ = child.kill();
            panic!("agent did not stop within 25 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
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
