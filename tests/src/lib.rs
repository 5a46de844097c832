//! Shared helpers for edge-agent's end-to-end tests.

use std::path::{Path, PathBuf};

use edge_agent::Config;

/// Parses a config from text, panicking with the rendered diagnostics if invalid.
pub fn config(name: &str, src: &str) -> Config {
    match edge_agent::config::parse(name, src) {
        Ok(c) => c,
        Err(e) => panic!("test config {name} is invalid:\n{e}"),
    }
}

/// A fresh, empty directory for one test (removed on drop).
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("edge-agent-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads a JSON-lines alert file.
pub fn read_alerts(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).expect("every alert line is JSON"))
        .collect()
}

/// A Mosquitto broker on 127.0.0.1, stopped (by PID) when dropped.
///
/// Sessions and queued messages persist across [`Mosquitto::restart`] (the broker
/// saves them on a clean stop), so a test subscriber with a persistent session sees
/// everything that was acknowledged to the publisher.
#[derive(Debug)]
pub struct Mosquitto {
    pub port: u16,
    dir: TempDir,
    child: Option<std::process::Child>,
}

/// A free TCP port on 127.0.0.1 (bound and released; the broker takes it next).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

fn mosquitto_bin() -> PathBuf {
    for p in [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "mosquitto is not installed: run ./tests/run.sh, which installs it (Debian package `mosquitto`)"
    );
}

impl Mosquitto {
    /// Starts a broker on a free port.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Configures a broker for `port` without starting it.
    pub fn stopped_on(port: u16) -> Self {
        let dir = TempDir::new("mosquitto");
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 0\nuser root\nlog_dest none\nmax_queued_messages 100000\n",
            dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf).expect("write mosquitto.conf");
        Mosquitto {
            port,
            dir,
            child: None,
        }
    }

    pub fn start_on(port: u16) -> Self {
        let mut m = Self::stopped_on(port);
        m.spawn();
        m
    }

    /// Starts the broker (again) on the same port and waits until it accepts TCP.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let child = std::process::Command::new(mosquitto_bin())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "mosquitto did not start on port {}",
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Stops the broker: SIGTERM (it saves its state), then waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
