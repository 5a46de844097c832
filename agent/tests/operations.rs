//! Operating a running agent: systemd's notify protocol and watchdog, `edge-agent
//! status`, `edge-agent models list` and the Prometheus endpoint, all against the
//! real binary.

use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edge-agent"))
}

/// Runs `edge-agent <args> --socket <sock>` to completion.
fn cli(args: &[&str], sock: &Path) -> std::process::Output {
    bin()
        .args(args)
        .arg("--socket")
        .arg(sock)
        .output()
        .unwrap_or_else(|e| panic!("edge-agent {args:?} runs: {e}"))
}

/// Kills the agent if a test fails half-way.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh directory of its own for each test (`tag`), removed by the test.
fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edge-agent-ops-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn config(dir: &Path) -> String {
    let zoo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/zoo");
    format!(
        r#"
[agent]
id = "ops-test"
shutdown_timeout = "10s"
control_socket = "{sock}"

[metrics]
listen = "127.0.0.1:0"

[alerts]
console = false

# /dev/null is a character device but no GPIO chip: the config is valid, the line
# cannot be requested, and the agent runs on and reports the output as failed.
[[alarms]]
name = "stack_red"
chip = "/dev/null"
line = 0
on = ["critical"]
latch = true

[journal]
dir = "{journal}"

[models]
dir = "{zoo}"

[[drivers]]
name = "plant"
kind = "sim"
seed = 3
tick = "100ms"

[[drivers.machines]]
name = "pump"
rpm = 1480
sample_rate_hz = 10.0
vibration_rate_hz = 256.0
nominal_temp_c = 55.0
nominal_current_a = 12.0
nominal_pressure_bar = 6.0

[[assets]]
name = "pump"

[[assets.signals]]
signal = "pump.temperature"
window = {{ size = "60s", hop = "10s" }}

[[assets.signals]]
signal = "pump.vibration"
window = {{ size = 512, hop = 512 }}
bands = [
  {{ name = "shaft", lo_hz = 0.0, hi_hz = 60.0 }},
  {{ name = "bearing", lo_hz = 60.0, hi_hz = 128.0 }},
]

[[assets.signals]]
signal = "pump.current"
window = {{ size = "60s", hop = "10s" }}

[[assets.signals]]
signal = "pump.pressure"
window = {{ size = "60s", hop = "10s" }}

[[assets.models]]
name = "wear"
manifest = "bearing_rf/manifest.toml"
roles = {{ vibration = "pump.vibration", temperature = "pump.temperature", current = "pump.current", pressure = "pump.pressure" }}
"#,
        sock = dir.join("control.sock").display(),
        journal = dir.join("journal").display(),
        zoo = zoo.display(),
    )
}

fn received(s: &UnixDatagram, into: &mut Vec<String>) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = s.recv(&mut buf) {
        into.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    out
}

#[test]
fn a_running_agent_reports_to_systemd_status_models_list_and_prometheus() {
    let dir = temp_dir("status");
    let cfg = dir.join("agent.toml");
    std::fs::write(&cfg, config(&dir)).expect("write config");
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    notify.set_nonblocking(true).expect("nonblocking");

    let log = std::fs::File::create(dir.join("agent.log")).expect("log file");
    let child = bin()
        .args(["run", "--log-format", "json", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starts");
    let mut agent = Agent(child);

    // systemd: READY once everything is up, then the watchdog every half second.
    let mut msgs = Vec::new();
    wait_for(
        "READY=1 and two watchdog pings",
        Duration::from_secs(30),
        || {
            received(&notify, &mut msgs);
            msgs.iter().any(|m| m.starts_with("READY=1"))
                && msgs.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2
        },
    );
    let ready = msgs
        .iter()
        .find(|m| m.starts_with("READY=1"))
        .expect("ready");
    assert!(ready.contains("STATUS=running: 1 drivers"), "{ready}");

    // edge-agent status, human and JSON.
    let sock = dir.join("control.sock");
    let out = cli(&["status"], &sock);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "agent ops-test",
        "plant",
        "running",
        "JOURNAL",
        "bearing_rf",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    wait_for("samples in the status", Duration::from_secs(20), || {
        let out = cli(&["status", "--json"], &sock);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
        v["drivers"][0]["samples"].as_u64().unwrap_or(0) > 0
            && v["drivers"][0]["last_sample_age_s"].as_f64().is_some()
            && v["pipeline"]["samples"].as_u64().unwrap_or(0) > 0
    });

    // An alarm output whose line cannot be requested is reported, not fatal.
    let out = cli(&["status"], &sock);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ALARMS    stack_red FAILED"), "{text}");
    let out = cli(&["alarms", "ack"], &sock);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("stack_red: FAILED"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // edge-agent models list.
    let out = cli(&["models", "list"], &sock);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("bearing_rf 1."), "{text}");
    assert!(text.contains("pump/wear: normal"), "{text}");
    let out = cli(&["models", "list", "--json"], &sock);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("models JSON");
    assert_eq!(v[0]["sha256"].as_str().map(str::len), Some(64), "{v}");

    // Prometheus: the address comes from the log (port 0 was asked for).
    let mut addr = String::new();
    wait_for(
        "the metrics address in the log",
        Duration::from_secs(10),
        || {
            let logs = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
            addr = logs
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find_map(|l| l["listen"].as_str().map(str::to_string))
                .unwrap_or_default();
            !addr.is_empty()
        },
    );
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let resp = http_get(&addr, "/metrics");
    assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
    assert!(resp.contains("text/plain; version=0.0.4"), "{resp}");
    for want in [
        "edge_agent_driver_up{driver=\"plant\",kind=\"sim\"} 1",
        "edge_agent_driver_samples_total{driver=\"plant\"}",
        "edge_agent_journal_records{lane=\"alert\"}",
        "edge_agent_model_quarantined{model=\"bearing_rf\",asset=\"pump\",binding=\"wear\"} 0",
        "edge_agent_alarm_output_failed{output=\"stack_red\"} 1",
    ] {
        assert!(resp.contains(want), "missing {want:?} in\n{resp}");
    }
    assert!(http_get(&addr, "/nope").starts_with("HTTP/1.1 404"));

    // systemctl reload (SIGHUP): the changed driver restarts, systemd hears
    // RELOADING then READY with the outcome.
    let pid = agent.0.id().to_string();
    let edited = config(&dir).replace("seed = 3", "seed = 4");
    std::fs::write(&cfg, edited).expect("edit config");
    let _ = Command::new("kill").args(["-HUP", &pid]).status();
    wait_for("the reload's READY", Duration::from_secs(20), || {
        received(&notify, &mut msgs);
        msgs.iter()
            .any(|m| m == "READY=1\nSTATUS=running; reloaded (1 drivers restarted)")
    });
    assert!(msgs.iter().any(|m| m == "RELOADING=1"), "{msgs:?}");

    // A second reload adds a detector to the asset: applied live, no driver restarts.
    let detector = "\n[[assets.detectors]]\nname = \"hot\"\nkind = \"threshold\"\nsignal = \"pump.temperature\"\nwarning = 90.0\n";
    let edited = config(&dir).replace("seed = 3", "seed = 4") + detector;
    std::fs::write(&cfg, edited).expect("edit config");
    let _ = Command::new("kill").args(["-HUP", &pid]).status();
    wait_for("the asset reload's READY", Duration::from_secs(20), || {
        received(&notify, &mut msgs);
        msgs.iter().any(|m| {
            m == "READY=1\nSTATUS=running; reloaded (0 drivers restarted, 1 detectors and 0 models new or changed)"
        })
    });

    // Graceful stop: STOPPING=1, exit 0, socket removed.
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = agent.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "agent did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    received(&notify, &mut msgs);
    assert!(msgs.iter().any(|m| m.starts_with("STOPPING=1")), "{msgs:?}");
    assert!(!sock.exists(), "the control socket is removed at exit");

    // With no agent, status says so and fails.
    let out = cli(&["status"], &sock);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot talk to the agent"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A model directory under `root/name`: `onnx` (from models/tests/fixtures),
/// a manifest reading `temperature, current, pressure` as `[batch, 3, 8]`, and
/// the fixture's onnxruntime outputs as its reference when there is one.
fn recurrent_model(root: &Path, name: &str, onnx: &str, version: &str) -> PathBuf {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures");
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("model dir");
    let bytes = std::fs::read(fixtures.join(onnx)).expect("fixture model");
    std::fs::write(dir.join("model.onnx"), &bytes).expect("copy model");
    let reference = fixtures.join(onnx.replace(".onnx", ".json"));
    let reference = match std::fs::copy(&reference, dir.join("reference.json")) {
        Ok(_) => "[reference]\nfile = \"reference.json\"\n",
        Err(_) => "",
    };
    let manifest = format!(
        r#"[model]
name = "{name}"
version = "{version}"
file = "model.onnx"
sha256 = "{sha}"

[input]
name = "window"
dtype = "float32"
window = {{ signals = ["temperature", "current", "pressure"], samples = 8 }}

[[outputs]]
name = "score"
meaning = "fault_probability"
column = 0

[alert]
output = "score"
direction = "above"
warning = 0.999
prefault = 0.9999

{reference}"#,
        sha = edge_models::onnx::manifest::sha256_hex(&bytes),
    );
    // Drift needs the training spread of each signal's window mean and std:
    // wide enough that the simulated pump never drifts.
    let mut manifest = manifest;
    for stat in [
        "temperature.mean",
        "temperature.std",
        "current.mean",
        "current.std",
        "pressure.mean",
        "pressure.std",
    ] {
        manifest +=
            &format!("\n[training.\"{stat}\"]\nmean = 0.0\nstd = 1000.0\nmin = -1e6\nmax = 1e6\n");
    }
    let path = dir.join("manifest.toml");
    std::fs::write(&path, manifest).expect("manifest");
    path
}

fn recurrent_config(dir: &Path, bindings: &[&str], extra: &str) -> String {
    let mut bound = String::new();
    for b in bindings {
        bound += &format!(
            "\n[[assets.models]]\nname = \"{b}\"\nevery = \"1s\"\nmanifest = \"{b}/manifest.toml\"\nroles = {{ temperature = \"pump.temperature\", current = \"pump.current\", pressure = \"pump.pressure\" }}\n"
        );
    }
    format!(
        r#"
[agent]
id = "recurrent-test"
shutdown_timeout = "10s"
control_socket = "{sock}"

[alerts]
console = false

[models]
dir = "{models}"
watch = "200ms"

[[drivers]]
name = "plant"
kind = "sim"
seed = 3
tick = "100ms"

[[drivers.machines]]
name = "pump"
sample_rate_hz = 10.0
vibration_rate_hz = 16.0

[[assets]]
name = "pump"

[[assets.signals]]
signal = "pump.temperature"
window = {{ size = "2s", hop = "1s" }}

[[assets.signals]]
signal = "pump.current"
window = {{ size = "2s", hop = "1s" }}

[[assets.signals]]
signal = "pump.pressure"
window = {{ size = "2s", hop = "1s" }}
{bound}{extra}"#,
        sock = dir.join("control.sock").display(),
        models = dir.join("models").display(),
    )
}

/// tract panicked on a common LSTM export (no `initial_h`) and on any model it
/// cannot size; the panic took down `check-config`, `run`, and the SIGHUP and
/// file-watch reloads after it. Now the LSTM runs, and a model that still trips
/// tract is a config error, a rejected version, a rejected reload — and the
/// next reload still works.
#[test]
fn a_model_that_panics_the_runtime_is_rejected_and_reloads_keep_working() {
    let dir = temp_dir("recurrent");
    let models = dir.join("models");
    let lstm = recurrent_model(
        &models,
        "lstm",
        "parity/lstm_without_initial_state.onnx",
        "1.0.0",
    );
    recurrent_model(
        &models,
        "broken",
        "broken/lstm_data_dependent_batch.onnx",
        "1.0.0",
    );
    let cfg = dir.join("agent.toml");

    // check-config: the broken model is a config error (exit 2, not 101), the
    // sound LSTM is still checked and valid.
    std::fs::write(&cfg, recurrent_config(&dir, &["lstm", "broken"], "")).expect("config");
    let out = bin()
        .arg("check-config")
        .arg(&cfg)
        .output()
        .expect("check-config runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("panicked while loading the model"), "{err}");
    assert!(
        !err.contains("lstm/manifest.toml"),
        "the sound model is not an error: {err}"
    );
    std::fs::write(&cfg, recurrent_config(&dir, &["lstm"], "")).expect("config");
    let out = bin()
        .arg("check-config")
        .arg(&cfg)
        .output()
        .expect("check-config runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("model lstm 1.0.0"), "{err}");

    // run: the LSTM scores rows.
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    notify.set_nonblocking(true).expect("nonblocking");
    let log = std::fs::File::create(dir.join("agent.log")).expect("log file");
    let child = bin()
        .args(["run", "--log-format", "json", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starts");
    let mut agent = Agent(child);
    let pid = agent.0.id().to_string();
    let sock = dir.join("control.sock");
    let mut msgs = Vec::new();
    wait_for("READY=1", Duration::from_secs(30), || {
        received(&notify, &mut msgs);
        msgs.iter().any(|m| m.starts_with("READY=1"))
    });
    let status = || -> serde_json::Value {
        serde_json::from_slice(&cli(&["status", "--json"], &sock).stdout).unwrap_or_default()
    };
    wait_for("rows scored by the LSTM", Duration::from_secs(30), || {
        status()["pipeline"]["model_rows"].as_u64().unwrap_or(0) >= 3
    });

    // The watcher sees a new version that trips tract: counted and reported.
    let sound = std::fs::read_to_string(&lstm).expect("manifest");
    let swapped = recurrent_model(
        &dir.join("staging"),
        "lstm",
        "broken/lstm_data_dependent_batch.onnx",
        "2.0.0",
    );
    std::fs::copy(
        dir.join("staging/lstm/model.onnx"),
        models.join("lstm/broken.onnx"),
    )
    .expect("copy");
    let next = std::fs::read_to_string(swapped)
        .expect("manifest")
        .replace("file = \"model.onnx\"", "file = \"broken.onnx\"");
    std::fs::write(&lstm, next).expect("new version");
    let models_json = || -> serde_json::Value {
        serde_json::from_slice(&cli(&["models", "list", "--json"], &sock).stdout)
            .unwrap_or_default()
    };
    wait_for(
        "the rejection in models list",
        Duration::from_secs(20),
        || models_json()[0]["rejections"].as_u64() == Some(1),
    );
    let m = models_json();
    assert_eq!(m[0]["version"], "1.0.0", "{m}");
    let why = m[0]["last_rejection"].as_str().unwrap_or_default();
    assert!(why.contains("panicked while loading the model"), "{m}");
    std::fs::write(&lstm, sound).expect("restore the manifest");

    // SIGHUP with the broken model bound: rejected, reported to systemd; the
    // next SIGHUP (a new detector) is still heard and applied.
    std::fs::write(&cfg, recurrent_config(&dir, &["lstm", "broken"], "")).expect("config");
    let _ = Command::new("kill").args(["-HUP", &pid]).status();
    wait_for(
        "the rejected reload's READY",
        Duration::from_secs(20),
        || {
            received(&notify, &mut msgs);
            msgs.iter()
                .any(|m| m.starts_with("READY=1\nSTATUS=running; reload rejected"))
        },
    );
    let detector = "\n[[assets.detectors]]\nname = \"hot\"\nkind = \"threshold\"\nsignal = \"pump.temperature\"\nwarning = 90.0\n";
    std::fs::write(&cfg, recurrent_config(&dir, &["lstm"], detector)).expect("config");
    let _ = Command::new("kill").args(["-HUP", &pid]).status();
    wait_for("the next reload's READY", Duration::from_secs(20), || {
        received(&notify, &mut msgs);
        msgs.iter().any(|m| {
            m == "READY=1\nSTATUS=running; reloaded (0 drivers restarted, 1 detectors and 0 models new or changed)"
        })
    });
    let rows = status()["pipeline"]["model_rows"].as_u64().unwrap_or(0);
    wait_for("the LSTM still scoring", Duration::from_secs(20), || {
        status()["pipeline"]["model_rows"].as_u64().unwrap_or(0) > rows
    });
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let code = wait_exit(&mut agent.0);
    assert!(code.success(), "{code:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "agent did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
