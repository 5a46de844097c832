//! The web UI in a real browser (Debian's chromium through chromedriver, driven by
//! selenium from `tests/browser/ui_browser.py`), against the real binary: a sim
//! pump wearing out fast (live values, a trend alert) and a pymodbus peer serving a
//! temperature and a string holding `<script>…`, stopped before the browser comes.
//! A second agent serves a UI guarded by users and TLS. Screenshots go to
//! `$CARGO_TARGET_TMPDIR/web_ui_browser/`.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use edge_agent_tests::{
    PyModbus, TempDir, TestPki, free_port, peer_python, spawn_agent, wearing_pump_toml,
};
use serde_json::{Value, json};

const SCRIPT: &str = "<script>alert(1)</script>";

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn plant(ui: &str, modbus_port: Option<u16>) -> String {
    let modbus = modbus_port.map_or(String::new(), |port| {
        format!(
            r#"
[[drivers]]
name = "plc"
kind = "modbus"
host = "127.0.0.1"
port = {port}
poll = "200ms"
timeout = "300ms"

[[drivers.tags]]
name = "line1.temperature"
area = "holding"
address = 100
type = "f32"
unit = "degC"

[[drivers.tags]]
name = "line1.recipe"
area = "holding"
address = 200
type = "string"
length = 16
"#
        )
    });
    // The zoo's bearing model bound to the pump (the models page).
    let zoo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/zoo");
    let sections = format!("{ui}\n[models]\ndir = \"{}\"\n", zoo.display());
    wearing_pump_toml("browser-test", &sections, &modbus)
        + r#"
[[assets.signals]]
signal = "pump.vibration"
window = { size = 64, hop = 64 }
bands = [
  { name = "shaft", lo_hz = 0.0, hi_hz = 2.0 },
  { name = "bearing", lo_hz = 2.0, hi_hz = 5.0 },
]
[[assets.signals]]
signal = "pump.current"
window = { size = "60s", hop = "10s" }
[[assets.signals]]
signal = "pump.pressure"
window = { size = "60s", hop = "10s" }

[[assets.models]]
name = "wear"
manifest = "bearing_rf/manifest.toml"
roles = { vibration = "pump.vibration", temperature = "pump.temperature", current = "pump.current", pressure = "pump.pressure" }
"#
}

fn get_json(port: u16, path: &str) -> Option<Value> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    serde_json::from_str(out.split_once("\r\n\r\n")?.1).ok()
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn tag(doc: &Value, name: &str) -> Option<Value> {
    doc["tags"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == name)
        .cloned()
}

fn start(dir: &Path, name: &str, text: &str) -> Agent {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, text).expect("config");
    Agent(spawn_agent(&cfg, &dir.join(format!("{name}.log"))))
}

#[test]
fn the_ui_in_a_real_browser_shows_live_values_bad_tags_escaped_payloads_and_alert_evidence() {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: ./tests/run.sh installs chromium and chromium-driver"
        );
    }
    let dir = TempDir::new("ui-browser");
    let spec = json!({"unit": 1, "tags": [
        {"area": "holding", "address": 100, "type": "f32", "value": 21.5},
        {"area": "holding", "address": 200, "type": "string", "length": 16, "value": SCRIPT},
    ]});
    let mut peer = PyModbus::start(&spec);
    let port = free_port();
    let _agent = start(
        dir.path(),
        "agent",
        &plant(
            &format!("[ui]\nlisten = \"127.0.0.1:{port}\""),
            Some(peer.port),
        ),
    );
    wait_for("the Modbus tags read", 30, || {
        let doc = get_json(port, "/api/tags?filter=line1")?;
        (tag(&doc, "line1.recipe")?["value"] == SCRIPT
            && tag(&doc, "line1.temperature")?["quality"] == "good")
            .then_some(())
    });
    peer.stop();
    wait_for("the dead peer's tag to go bad", 30, || {
        let t = tag(
            &get_json(port, "/api/tags?filter=line1")?,
            "line1.temperature",
        )?;
        (t["quality"] != "good").then_some(())
    });
    let trend = wait_for("a trend alert", 60, || {
        let l = get_json(port, "/api/alerts")?;
        l["recent"]
            .as_array()?
            .iter()
            .find(|a| a["kind"] == "trend")
            .and_then(|a| a["id"].as_str().map(str::to_string))
    });

    // The guarded UI: users and TLS (on loopback here: the rules are the same).
    let pki = TestPki::generate(dir.path());
    let users = dir.path().join("ui-users");
    let line = edge_agent::ops::http::auth::hash_line("ops", "correct horse").expect("hash");
    std::fs::write(&users, format!("{line}\n")).expect("users");
    let guarded_port = free_port();
    let _guarded = start(
        dir.path(),
        "guarded",
        &plant(
            &format!(
                "[ui]\nlisten = \"127.0.0.1:{guarded_port}\"\nusers_file = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"",
                users.display(),
                pki.server_cert.display(),
                pki.server_key.display()
            ),
            None,
        ),
    );
    wait_for("the guarded UI to listen", 20, || {
        std::net::TcpStream::connect(("127.0.0.1", guarded_port)).ok()
    });

    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web_ui_browser");
    let params = json!({
        "url": format!("http://127.0.0.1:{port}"),
        "guarded_url": format!("https://127.0.0.1:{guarded_port}"),
        "out_dir": out_dir,
        "live_signal": "pump.temperature",
        "bad_tag": "line1.temperature",
        "script_tag": "line1.recipe",
        "script_text": SCRIPT,
        "trend_alert": trend,
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/ui_browser.py");
    let mut child = std::process::Command::new(peer_python())
        .arg(script)
        .arg(params.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the browser test");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the browser test did not finish within 3 minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut out = String::new();
    let mut err = String::new();
    let _ = child.stdout.take().map(|mut s| s.read_to_string(&mut out));
    let _ = child.stderr.take().map(|mut s| s.read_to_string(&mut err));
    eprintln!("{out}");
    assert!(status.success(), "browser checks failed:\n{out}\n{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        9,
        "{out}"
    );
    for shot in [
        "overview", "signals", "signal", "alert", "models", "guarded",
    ] {
        assert!(
            out_dir.join(format!("{shot}.png")).exists(),
            "no {shot} screenshot"
        );
    }
}
