//! Shared helpers for edge-agent's end-to-end tests.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

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
        Self::configure(port, "")
    }

    /// Configures a broker with extra configuration lines (e.g. a TLS listener).
    pub fn configure(port: u16, extra: &str) -> Self {
        let dir = TempDir::new("mosquitto");
        let conf = format!(
            "persistence true\npersistence_location {}/\nautosave_interval 0\nuser root\nlog_dest none\nmax_queued_messages 100000\nallow_anonymous true\nlistener {port} 127.0.0.1\n{extra}",
            dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf).expect("write mosquitto.conf");
        Mosquitto {
            port,
            dir,
            child: None,
        }
    }

    /// A broker with a plain listener (`port`) and a TLS listener (returned port)
    /// using `pki`; `require_client_cert` makes it mutual TLS.
    pub fn start_with_tls(pki: &TestPki, require_client_cert: bool) -> (Self, u16) {
        let tls_port = free_port();
        let extra = format!(
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
            pki.ca.display(),
            pki.server_cert.display(),
            pki.server_key.display(),
            require_client_cert
        );
        let mut m = Self::configure(free_port(), &extra);
        m.spawn();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "TLS listener did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        (m, tls_port)
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

/// The `edge-agent` binary of this build (built on demand when only this crate's
/// tests were asked for).
pub fn agent_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps/<test>")
        .to_path_buf();
    let bin = dir.join("edge-agent");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let profile_release = dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-q", "-p", "edge-agent", "--bin", "edge-agent"]);
        if profile_release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building edge-agent failed");
    }
    bin
}

/// Starts the agent binary (`run --config cfg`) with its log (stderr, level info)
/// appended to `log`.
pub fn spawn_agent(cfg: &Path, log: &Path) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("agent log");
    std::process::Command::new(agent_bin())
        .args(["run", "--config"])
        .arg(cfg)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start edge-agent")
}

/// A TCP proxy on 127.0.0.1 that can cut every connection through it at once,
/// discarding whatever it holds: a network flap in the middle of a publish.
/// Forwarding from client to server is slowed by `delay` per chunk so that there is
/// always data in flight to lose.
#[derive(Debug)]
pub struct CuttingProxy {
    pub port: u16,
    cut: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttingProxy {
    pub async fn start(upstream: u16, delay: std::time::Duration) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (cut, cut_rx) = tokio::sync::watch::channel(0u64);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    break;
                };
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                let mut rx = cut_rx.clone();
                rx.borrow_and_update();
                tokio::spawn(async move {
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async {
                        let mut buf = vec![0u8; 512];
                        loop {
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            tokio::time::sleep(delay).await;
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let down = async {
                        let mut buf = vec![0u8; 4096];
                        loop {
                            let n = match sr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    // Either direction ending, or a cut, drops both sockets.
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                        _ = rx.changed() => {}
                    }
                });
            }
        });
        CuttingProxy { port, cut, task }
    }

    /// Drops every open connection, with whatever data the proxy was holding.
    pub fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A throw-away PKI made with `openssl` for TLS tests: a CA, a server certificate for
/// 127.0.0.1/localhost and a client certificate.
#[derive(Debug)]
pub struct TestPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestPki {
    pub fn generate(dir: &Path) -> TestPki {
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl is installed (tests/run.sh installs it)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut a = vec!["req", "-x509"];
        a.extend_from_slice(&ec);
        a.extend_from_slice(&[
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=edge-agent test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        run(&a);
        for (name, cn, ext) in [
            (
                "server",
                "localhost",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "gw", "extendedKeyUsage=clientAuth\n"),
        ] {
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let crt = format!("{name}.crt");
            let extf = format!("{name}.ext");
            let subj = format!("/CN={cn}");
            std::fs::write(
                dir.join(&extf),
                format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n{ext}"),
            )
            .expect("write ext");
            let mut r = vec!["req"];
            r.extend_from_slice(&ec);
            r.extend_from_slice(&["-keyout", &key, "-out", &csr, "-subj", &subj]);
            run(&r);
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &extf,
            ]);
        }
        TestPki {
            ca: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
        }
    }
}

/// The Python of the test venv (`tests/.venv`, made by `tests/run.sh` with the pinned
/// peers from `tests/peers/requirements.txt`).
pub fn peer_python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run ./tests/run.sh, which creates the peers' Python venv",
        p.display()
    );
    p
}

/// A pymodbus TCP server on 127.0.0.1 serving `spec` (see tests/peers/modbus_server.py),
/// stopped when dropped.
#[derive(Debug)]
pub struct PyModbus {
    pub port: u16,
    spec: String,
    child: Option<std::process::Child>,
}

impl PyModbus {
    pub fn start(spec: &serde_json::Value) -> Self {
        Self::start_on(free_port(), spec)
    }

    pub fn start_on(port: u16, spec: &serde_json::Value) -> Self {
        let mut m = PyModbus {
            port,
            spec: spec.to_string(),
            child: None,
        };
        m.spawn();
        m
    }

    pub fn spawn(&mut self) {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/modbus_server.py");
        let mut child = std::process::Command::new(peer_python())
            .arg(script)
            .arg(self.port.to_string())
            .arg(&self.spec)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the pymodbus server");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        assert_eq!(line.trim(), "READY", "pymodbus did not start");
        self.child = Some(child);
        let serial = self.spec.contains("\"rtu\"");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        if serial {
            // Nothing to probe on a pty: give the server a moment to open it.
            std::thread::sleep(std::time::Duration::from_millis(500));
            return;
        }
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "pymodbus did not start on {}",
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What a Modbus server holds, read with pymodbus's own client
/// (tests/peers/modbus_peek.py): `area` is `coil` or `holding`.
pub fn modbus_peek(port: u16, unit: u8, area: &str, address: u16, count: u16) -> Vec<u64> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/modbus_peek.py");
    let out = std::process::Command::new(peer_python())
        .arg(script)
        .args([port.to_string(), unit.to_string(), area.to_string()])
        .args([address.to_string(), count.to_string()])
        .output()
        .expect("run modbus_peek.py");
    assert!(
        out.status.success(),
        "modbus_peek failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON list of values")
}

impl Drop for PyModbus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Python peer that talks on its stdin/stdout: started until it prints
/// `READY` (retrying while a just-killed one still holds the port), asked one
/// line at a time, killed when dropped.
#[derive(Debug)]
struct PeerProcess {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl PeerProcess {
    /// `peers/<script>` with `args`; `what` names it in failures; `quiet` drops
    /// its stderr (asyncua logs every session).
    fn start(script: &str, args: &[String], what: &str, quiet: bool) -> PeerProcess {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("peers")
            .join(script);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let mut child = std::process::Command::new(peer_python())
                .arg(&script)
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(if quiet {
                    std::process::Stdio::null()
                } else {
                    std::process::Stdio::inherit()
                })
                .spawn()
                .unwrap_or_else(|e| panic!("start the {what}: {e}"));
            let mut out = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
            let mut line = String::new();
            let _ = out.read_line(&mut line);
            if line.trim() == "READY" {
                let stdin = child.stdin.take().expect("piped stdin");
                return PeerProcess {
                    child,
                    stdin,
                    stdout: out,
                };
            }
            // The port may still be held by a just-killed server: retry.
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                std::time::Instant::now() < deadline,
                "the {what} did not start ({args:?}): {line}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// One command line on its stdin, its one-line answer.
    fn ask(&mut self, command: &str) -> String {
        use std::io::{BufRead, Write};
        writeln!(self.stdin, "{command}").expect("write to the peer");
        self.stdin.flush().expect("flush");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read reply");
        line.trim().to_string()
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A python-snap7 S7 server on 127.0.0.1 serving `spec` (see tests/peers/s7_server.py),
/// stopped when dropped.
#[derive(Debug)]
pub struct PySnap7 {
    pub port: u16,
    spec: String,
    process: Option<PeerProcess>,
}

impl PySnap7 {
    pub fn start(spec: &serde_json::Value) -> Self {
        Self::start_on(free_port(), spec)
    }

    pub fn start_on(port: u16, spec: &serde_json::Value) -> Self {
        let mut m = PySnap7 {
            port,
            spec: spec.to_string(),
            process: None,
        };
        m.spawn();
        m
    }

    /// Starts the server (again, on the same port) and waits until it listens.
    pub fn spawn(&mut self) {
        let args = [self.port.to_string(), self.spec.clone()];
        self.process = Some(PeerProcess::start(
            "s7_server.py",
            &args,
            "snap7 server",
            false,
        ));
    }

    /// Overwrites bytes of a served area (`area` is DB, MK, PE or PA).
    pub fn set(&mut self, area: &str, index: u16, offset: usize, bytes: &[u8]) {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            self.ask(&format!("set {area} {index} {offset} {hex}")),
            "OK"
        );
    }

    /// The `n` bytes at `offset` of a served area: what the PLC holds.
    pub fn get(&mut self, area: &str, index: u16, offset: usize, n: usize) -> Vec<u8> {
        let hex = self.ask(&format!("get {area} {index} {offset} {n}"));
        (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex from the server"))
            .collect()
    }

    fn ask(&mut self, command: &str) -> String {
        self.process.as_mut().expect("server running").ask(command)
    }

    pub fn stop(&mut self) {
        self.process = None;
    }
}

impl Drop for PySnap7 {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Messages received: (topic, payload, retained).
pub type Msgs = Arc<Mutex<Vec<(String, Vec<u8>, bool)>>>;

/// A persistent-session QoS 1 subscriber that survives broker restarts.
#[derive(Debug)]
pub struct Subscriber {
    pub msgs: Msgs,
    cancel: CancellationToken,
    subscribed: Arc<Notify>,
}

impl Subscriber {
    pub async fn start(port: u16, id: &str, filter: &str) -> Subscriber {
        let msgs: Msgs = Arc::default();
        let cancel = CancellationToken::new();
        let subscribed = Arc::new(Notify::new());
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_clean_session(false);
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut ev) = AsyncClient::new(opts, 100);
        let (m, c, s, filter) = (
            msgs.clone(),
            cancel.clone(),
            subscribed.clone(),
            filter.to_string(),
        );
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = c.cancelled() => break,
                    e = ev.poll() => match e {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => s.notify_one(),
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            m.lock().expect("test mutex").push((p.topic.clone(), p.payload.to_vec(), p.retain));
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        });
        let sub = Subscriber {
            msgs,
            cancel,
            subscribed,
        };
        tokio::time::timeout(Duration::from_secs(10), sub.subscribed.notified())
            .await
            .expect("subscribed within 10 s");
        sub
    }

    /// Payloads received on `topic`, parsed as JSON, in arrival order.
    pub fn json_on(&self, topic: &str) -> Vec<serde_json::Value> {
        self.msgs
            .lock()
            .expect("test mutex")
            .iter()
            .filter(|(t, _, _)| t == topic)
            .map(|(_, p, _)| serde_json::from_slice(p).expect("JSON payload"))
            .collect()
    }

    /// The `n` field of every payload on an alert topic, in arrival order (the test
    /// alerts' ids).
    pub fn alert_numbers(&self) -> Vec<u64> {
        self.msgs
            .lock()
            .expect("test mutex")
            .iter()
            .filter(|(t, _, _)| t.contains("/alerts/"))
            .map(|(_, p, _)| {
                let v: serde_json::Value = serde_json::from_slice(p).expect("alert JSON");
                v["n"].as_u64().expect("n")
            })
            .collect()
    }
}

/// A simulated plant at `speed`× real time whose two pumps' current spikes
/// `rate_per_hour` times an hour, each watched by a threshold detector: a steady
/// stream of alerts (the `[[drivers]]` and `[[assets]]` sections of a config).
pub fn spiking_plant_toml(speed: f64, rate_per_hour: f64) -> String {
    let mut out = format!(
        "[[drivers]]\nname = \"plant\"\nkind = \"sim\"\nspeed = {speed:.1}\ntick = \"1s\"\n",
    );
    for p in ["p1", "p2"] {
        out.push_str(&format!(
            "[[drivers.machines]]\nname = \"{p}\"\nvibration_rate_hz = 5.0\n\
             [[drivers.machines.faults]]\nkind = \"spikes\"\nsignal = \"current\"\n\
             magnitude = 30.0\nrate_per_hour = {rate_per_hour:.1}\n"
        ));
    }
    for p in ["p1", "p2"] {
        out.push_str(&format!(
            "[[assets]]\nname = \"{p}\"\n[[assets.signals]]\nsignal = \"{p}.current\"\n\
             window = {{ size = \"10s\", hop = \"10s\" }}\n[[assets.detectors]]\n\
             name = \"current-spike\"\nkind = \"threshold\"\nsignal = \"{p}.current\"\n\
             feature = \"max\"\nwarning = 25.0\n"
        ));
    }
    out
}

/// Alert ids in an agent's JSON-lines alert file (`[alerts] jsonl`), which it writes
/// right after the journal accepted each alert. A line torn by a kill is ignored.
pub fn accepted_alert_ids(path: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect()
}

/// An uplink to a broker on 127.0.0.1:`port` with short timeouts for tests: agent
/// `gw`, prefix `edge`, window 16, auto replay, reconnect 100–500 ms.
pub fn uplink_config(port: u16, client_id: &str) -> edge_agent::delivery::uplink::UplinkConfig {
    edge_agent::delivery::uplink::UplinkConfig {
        host: "127.0.0.1".into(),
        port,
        client_id: client_id.into(),
        agent_id: "gw".into(),
        topic_prefix: "edge".into(),
        keep_alive: Duration::from_secs(5),
        window: 16,
        replay_rate: edge_agent::delivery::uplink::ReplayRate::Auto,
        username: None,
        password: None,
        connect_timeout: Duration::from_secs(2),
        reconnect_initial: Duration::from_millis(100),
        reconnect_max: Duration::from_millis(500),
        version: "test".into(),
        config_hash: "0".into(),
        status_interval: Duration::from_secs(60),
        tls: None,
        sparkplug: None,
        commands: None,
    }
}

/// A sim pump whose bearing wears out within a minute of real time (speed 300): the
/// trend forecast, then the temperature thresholds raise alerts. `sections` goes
/// after `[alerts]` (`[ui]`, `[metrics]`), `drivers` after the sim driver.
pub fn wearing_pump_toml(id: &str, sections: &str, drivers: &str) -> String {
    format!(
        r#"
[agent]
id = "{id}"
shutdown_timeout = "5s"

[alerts]
console = false

{sections}

[[drivers]]
name = "plant"
kind = "sim"
speed = 300.0
[[drivers.machines]]
name = "pump"
rpm = 600
sample_rate_hz = 2.0
vibration_rate_hz = 10.0
[[drivers.machines.faults]]
kind = "bearing_wear"
start = "1m"
duration = "1h"
{drivers}
[[assets]]
name = "pump"
[[assets.signals]]
signal = "pump.temperature"
window = {{ size = "60s", hop = "10s" }}

[[assets.detectors]]
name = "temperature"
kind = "threshold"
signal = "pump.temperature"
warning = 75.0
critical = 85.0

[[assets.detectors]]
name = "temperature-forecast"
kind = "trend"
signal = "pump.temperature"
limit = 85.0
horizon = "2h"
lookback = "30m"
"#
    )
}

/// Polls `cond` every 20 ms; panics naming `what` after `secs` seconds.
pub async fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A linked pair of pseudo-terminals from socat: a serial line for RTU tests.
/// `a` and `b` are the two ends; stopped when dropped.
#[derive(Debug)]
pub struct PtyPair {
    pub a: PathBuf,
    pub b: PathBuf,
    _dir: TempDir,
    child: std::process::Child,
}

impl PtyPair {
    pub fn new() -> PtyPair {
        let dir = TempDir::new("pty");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let child = std::process::Command::new("socat")
            .arg("-d")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start socat (installed by tests/run.sh)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !(a.exists() && b.exists()) {
            assert!(
                std::time::Instant::now() < deadline,
                "socat made no pty pair"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        PtyPair {
            a,
            b,
            _dir: dir,
            child,
        }
    }
}

impl Default for PtyPair {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An aiocoap CoAP server on 127.0.0.1 (see tests/peers/coap_server.py), stopped when
/// dropped.
#[derive(Debug)]
pub struct PyCoap {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl PyCoap {
    pub fn start() -> Self {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
        let port = sock.local_addr().expect("local addr").port();
        drop(sock);
        let mut s = PyCoap { port, child: None };
        s.spawn();
        s
    }

    pub fn spawn(&mut self) {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/coap_server.py");
        let mut child = std::process::Command::new(peer_python())
            .arg(script)
            .arg(self.port.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the aiocoap server");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        assert_eq!(line.trim(), "READY", "aiocoap did not start");
        self.child = Some(child);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PyCoap {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Publishes as `client_id` with QoS 1 and waits for the broker's PUBACK.
pub async fn publish_acked(
    port: u16,
    client_id: &str,
    topic: &str,
    payload: Vec<u8>,
    retain: bool,
) {
    let (client, mut ev) = AsyncClient::new(MqttOptions::new(client_id, "127.0.0.1", port), 10);
    client
        .publish(topic, QoS::AtLeastOnce, retain, payload)
        .await
        .expect("queued");
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Event::Incoming(Packet::PubAck(_))) = ev.poll().await {
                break;
            }
        }
    })
    .await
    .expect("acknowledged");
}

/// A signing key pair from `edge-agent keygen` in `dir`: the private key file
/// and the public key (base64) for `[commands] public_keys`.
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let file = dir.join(format!("{name}.key"));
    let out = std::process::Command::new(agent_bin())
        .args(["keygen", "--name", name])
        .arg(&file)
        .output()
        .expect("run keygen");
    assert!(
        out.status.success(),
        "{} (the binary needs the `signer` feature: `cargo test --workspace` builds it so, \
         `cargo build -p edge-agent --features signer` does too)",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let public = text.split('"').nth(1).expect("the public key in quotes");
    (file, public.to_string())
}

/// A remote command request for `topic`, signed by `edge-agent sign-command`.
pub fn sign_command(key: &Path, name: &str, topic: &str, args: &serde_json::Value) -> Vec<u8> {
    let out = std::process::Command::new(agent_bin())
        .args(["sign-command", "--name", name, "--key"])
        .arg(key)
        .arg(topic)
        .arg(args.to_string())
        .output()
        .expect("run sign-command");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .as_bytes()
        .to_vec()
}

/// The zoo's bearing model (`models/zoo/bearing_mlp`): where it is, and a copy
/// into `models_dir/bearing_mlp` (remote deploys write beside it).
pub fn zoo_bearing_mlp() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/zoo/bearing_mlp")
}

pub fn copy_bearing_mlp(models_dir: &Path) -> PathBuf {
    let to = models_dir.join("bearing_mlp");
    std::fs::create_dir_all(&to).expect("models dir");
    for f in [
        "manifest.toml",
        "bearing_mlp.onnx",
        "reference.json",
        "quality.json",
    ] {
        std::fs::copy(zoo_bearing_mlp().join(f), to.join(f)).expect("copy the zoo model");
    }
    to
}

/// The sim pump as an asset with the windows the zoo's bearing model reads and
/// that model bound (`[models] dir` must hold it): `[[assets]]` TOML, the
/// non-vibration windows `window` long.
pub fn pump_asset_with_model(window: &str) -> String {
    format!(
        r#"[[assets]]
name = "pump"
[[assets.signals]]
signal = "pump.temperature"
window = {{ size = "{window}", hop = "{window}" }}
[[assets.signals]]
signal = "pump.vibration"
window = {{ size = 512, hop = 512 }}
bands = [{{ name = "shaft", lo_hz = 0.0, hi_hz = 60.0 }}, {{ name = "bearing", lo_hz = 60.0, hi_hz = 128.0 }}]
[[assets.signals]]
signal = "pump.current"
window = {{ size = "{window}", hop = "{window}" }}
[[assets.signals]]
signal = "pump.pressure"
window = {{ size = "{window}", hop = "{window}" }}
[[assets.models]]
name = "bearing"
manifest = "bearing_mlp/manifest.toml"
roles = {{ vibration = "pump.vibration", temperature = "pump.temperature", current = "pump.current", pressure = "pump.pressure" }}
"#
    )
}

/// FreeOpcUa's asyncua server (`peers/opcua_server.py`): the OPC UA driver's peer.
#[derive(Debug)]
pub struct PyOpcua {
    pub port: u16,
    args: Vec<String>,
    process: Option<PeerProcess>,
}

impl PyOpcua {
    /// No security, anonymous.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With the script's extra arguments (`--secure DIR`, `--items N`, ...).
    pub fn start_with(args: &[&str]) -> Self {
        let mut s = PyOpcua {
            port: free_port(),
            args: args.iter().map(|a| a.to_string()).collect(),
            process: None,
        };
        s.spawn();
        s
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("opc.tcp://127.0.0.1:{}/edge-test", self.port)
    }

    /// Starts the server (again, on the same port) and waits until it listens.
    pub fn spawn(&mut self) {
        let mut args = vec![self.port.to_string()];
        args.extend(self.args.iter().cloned());
        self.process = Some(PeerProcess::start(
            "opcua_server.py",
            &args,
            "asyncua server",
            true,
        ));
    }

    /// Writes a value (JSON) to variable `name` of Line1, keeping its type.
    pub fn set(&mut self, name: &str, json: &str) {
        assert_eq!(self.ask(&format!("set {name} {json}")), "OK");
    }

    /// The value of variable `name` of Line1 as the server holds it (JSON).
    pub fn get(&mut self, name: &str) -> String {
        self.ask(&format!("get {name}"))
    }

    /// Gives variable `name` of Line1 a status code (`BadSensorFailure`, `Good`).
    pub fn status(&mut self, name: &str, code: &str) {
        assert_eq!(self.ask(&format!("status {name} {code}")), "OK");
    }

    fn ask(&mut self, command: &str) -> String {
        self.process.as_mut().expect("server running").ask(command)
    }

    pub fn stop(&mut self) {
        self.process = None;
    }
}

impl Drop for PyOpcua {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the throughput benches share.
pub mod bench {
    use std::sync::atomic::{AtomicU64, Ordering};

    use edge_driver_api::{PushResult, Sample, SampleSink};
    use tokio::sync::Notify;

    /// CPU seconds of this process so far, at nanoseconds' resolution: every
    /// thread's time on a CPU (`/proc/self/task/*/schedstat`). The 10 ms ticks of
    /// `/proc/self/stat` are too coarse for a few thousand values a second.
    pub fn cpu_seconds() -> f64 {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return 0.0;
        };
        let ns: u64 = tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        ns as f64 / 1e9
    }

    /// A sink that takes everything and counts the good samples of the signals
    /// below `limit` (a driver's tags, not its link statistics).
    #[derive(Debug)]
    pub struct CountingSink {
        pub values: AtomicU64,
        limit: u32,
        notify: Notify,
    }

    impl CountingSink {
        pub fn new(limit: u32) -> CountingSink {
            CountingSink {
                values: AtomicU64::new(0),
                limit,
                notify: Notify::new(),
            }
        }

        pub fn count(&self) -> u64 {
            self.values.load(Ordering::Relaxed)
        }
    }

    /// Runs the driver `f` on one core (a current-thread runtime) until `warmup`
    /// values of its first `counted` signals came, then for `seconds`; returns the
    /// values per second and the process's CPU seconds per 1,000 values.
    pub fn run_driver(
        f: std::sync::Arc<dyn edge_driver_api::DriverFactory>,
        counted: u32,
        warmup: u64,
        seconds: f64,
    ) -> (f64, f64) {
        use std::time::{Duration, Instant};
        let sink = std::sync::Arc::new(CountingSink::new(counted));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let cancel = tokio_util::sync::CancellationToken::new();
            let ctx = edge_driver_api::DriverContext::new(
                "bench".into(),
                sink.clone(),
                cancel.clone(),
                edge_driver_api::Clock::system(),
            );
            let task = tokio::spawn(f.create().expect("driver").run(ctx));
            let t = Instant::now();
            while sink.count() < warmup {
                assert!(
                    t.elapsed() < Duration::from_secs(60),
                    "no values within 60 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let (t0, c0, n0) = (Instant::now(), cpu_seconds(), sink.count());
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
            let (dt, dc, dn) = (
                t0.elapsed().as_secs_f64(),
                cpu_seconds() - c0,
                sink.count() - n0,
            );
            cancel.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            (dn as f64 / dt, dc / (dn as f64 / 1000.0))
        })
    }

    impl SampleSink for CountingSink {
        fn try_push(&self, batch: &[Sample]) -> PushResult {
            let n = batch
                .iter()
                .filter(|s| s.signal.0 < self.limit && s.quality.is_good())
                .count();
            self.values.fetch_add(n as u64, Ordering::Relaxed);
            PushResult {
                accepted: batch.len(),
            }
        }
        fn space_available(&self) -> &Notify {
            &self.notify
        }
    }
}
