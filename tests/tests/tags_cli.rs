//! `edge-agent tags`: what every device reports right now, against an independent
//! Modbus server (pymodbus) and through the real binary and control socket: values
//! exactly as served, a missing register as bad quality with the exception named,
//! a text tag, a dead peer as bad with the last good value kept, the name filter,
//! the JSON document, and bad requests on the socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use edge_agent_tests::{PyModbus, TempDir, agent_bin, spawn_agent};
use serde_json::{Value, json};

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(port: u16, sock: &Path) -> String {
    format!(
        r#"
[agent]
id = "tags-test"
control_socket = "{sock}"
shutdown_timeout = "5s"

[alerts]
console = false

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
name = "line1.count"
area = "input"
address = 10
type = "u32"

[[drivers.tags]]
name = "line1.recipe"
area = "holding"
address = 200
type = "string"
length = 8

[[drivers.tags]]
name = "line1.missing"
area = "holding"
address = 998
type = "f64"
"#,
        sock = sock.display()
    )
}

fn tags(sock: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(agent_bin())
        .arg("tags")
        .args(args)
        .arg("--socket")
        .arg(sock)
        .output()
        .expect("edge-agent tags runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tags_json(sock: &Path) -> Value {
    let (ok, out, err) = tags(sock, &["--json"]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("JSON: {e}\n{out}"))
}

fn tag<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["tags"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {doc}"))
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends one raw line to the control socket, returns the answer.
fn raw(sock: &Path, line: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = s.write_all(line);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn tags_show_live_values_bad_quality_with_the_reason_and_a_dead_peer() {
    let dir = TempDir::new("tags-cli");
    let spec = json!({"unit": 1, "tags": [
        {"area": "holding", "address": 100, "type": "f32", "value": 21.5},
        {"area": "input", "address": 10, "type": "u32", "value": 4_000_000_000u64},
        {"area": "holding", "address": 200, "type": "string", "length": 8, "value": "Batch <7>"},
    ]});
    let mut peer = PyModbus::start(&spec);
    let sock: PathBuf = dir.path().join("control.sock");
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, config(peer.port, &sock)).expect("config");
    let _agent = Agent(spawn_agent(&cfg, &dir.path().join("agent.log")));

    wait_for("every tag read", 30, || {
        sock.exists() && {
            let doc = tags_json(&sock);
            [
                "line1.temperature",
                "line1.count",
                "line1.recipe",
                "line1.missing",
            ]
            .iter()
            .all(|n| tag(&doc, n)["quality"] != "no data")
        }
    });
    let doc = tags_json(&sock);
    assert_eq!(doc["agent"], "tags-test");
    let t = tag(&doc, "line1.temperature");
    assert_eq!(
        (t["value"].as_f64(), t["quality"].as_str()),
        (Some(21.5), Some("good")),
        "{t}"
    );
    assert_eq!(t["unit"], "degC");
    assert_eq!(t["driver"], "plc");
    assert_eq!(t["address"], "holding 100 f32, unit 1");
    assert!(t["age_s"].as_f64().is_some_and(|a| a < 5.0), "{t}");
    let c = tag(&doc, "line1.count");
    assert_eq!(c["value"].as_f64(), Some(4e9), "{c}");
    let r = tag(&doc, "line1.recipe");
    assert_eq!(r["value"], "Batch <7>", "{r}");
    let m = tag(&doc, "line1.missing");
    assert_eq!(m["quality"], "bad", "{m}");
    assert_eq!(m["reason"], "exception 2 (illegal data address)", "{m}");
    assert!(
        m["value"].is_null() && m["bad_samples"].as_u64() > Some(0),
        "{m}"
    );

    // The table: every tag, then filtered by a glob and by a substring.
    let (ok, out, err) = tags(&sock, &[]);
    assert!(ok, "{err}");
    assert!(
        out.lines().next().is_some_and(|l| l.starts_with("TAG")),
        "{out}"
    );
    assert!(
        out.contains("BAD: exception 2 (illegal data address)"),
        "{out}"
    );
    assert!(out.contains("\"Batch <7>\""), "{out}");
    assert!(out.contains("14 tags, "), "{out}");
    assert!(out.contains("4000000000"), "integers as integers: {out}");
    let (ok, out, err) = tags(&sock, &["line1.*e*"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("line1.temperature") && out.contains("21.5") && out.contains("good"),
        "{out}"
    );
    assert!(
        out.contains("line1.recipe") && !out.contains("line1.count"),
        "{out}"
    );
    assert!(out.contains("2 of 14 tags match `line1.*e*`"), "{out}");
    let (_, out, _) = tags(&sock, &["TEMP"]);
    assert!(out.contains("1 of 14 tags match `TEMP`"), "{out}");
    let (ok, out, _) = tags(&sock, &["no-such-tag"]);
    assert!(ok && out.contains("no tag matches `no-such-tag`"), "{out}");

    // --watch into a pipe: a fresh table every --every seconds, one after the other.
    let mut watch = Command::new(agent_bin())
        .args([
            "tags",
            "line1.temperature",
            "--watch",
            "--every",
            "0.2",
            "--socket",
        ])
        .arg(&sock)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("tags --watch runs");
    std::thread::sleep(Duration::from_millis(1500));
    let _ = watch.kill();
    let out = watch.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&out.stdout);
    let tables = text.lines().filter(|l| l.starts_with("TAG")).count();
    assert!(tables >= 3, "{tables} tables in 1.5 s:\n{text}");
    assert!(!text.contains('\x1b'), "no terminal codes into a pipe");

    // The peer goes away: the value stays, marked bad with why.
    peer.stop();
    wait_for("the dead peer in tags", 20, || {
        tag(&tags_json(&sock), "line1.temperature")["quality"] == "bad"
    });
    let t = tag(&tags_json(&sock), "line1.temperature").clone();
    let reason = t["reason"].as_str().unwrap_or_default();
    assert!(
        reason == "timeout" || reason == "communication failed",
        "{t}"
    );
    assert_eq!(
        t["value"].as_f64(),
        Some(21.5),
        "the last good value stays: {t}"
    );

    // Bad requests get an error, never a crash; the socket keeps answering.
    let unknown = raw(&sock, b"frobnicate\n");
    assert!(
        unknown.contains("unknown command `frobnicate`"),
        "{unknown}"
    );
    // A flood without a newline: cut at 256 bytes and answered (or the
    // connection dropped); either way the agent is unharmed.
    let huge = raw(&sock, &[b'x'; 100_000]);
    assert!(
        huge.is_empty() || huge.contains("unknown command"),
        "{huge}"
    );
    let binary = raw(&sock, &[0xff, 0xfe, 0x00, b'\n']);
    assert!(binary.contains("error"), "{binary}");
    let one: Value = serde_json::from_str(&raw(&sock, b"tags line1.count\n")).expect("JSON");
    assert_eq!(one["tags"].as_array().map(Vec::len), Some(1), "{one}");
    assert_eq!(
        one["total"].as_u64(),
        Some(4 + 10),
        "4 tags and the link statistics: {one}"
    );
}
