//! The web UI and `/metrics` over HTTP (hyper), against a real agent on the sim
//! driver: every endpoint, live values and history, alerts and their evidence
//! plot, the event stream, bad requests (4xx, never a panic, the server keeps
//! serving), and the security rules: loopback by default, a remote bind refused
//! without users and TLS, and a guarded UI that answers only over TLS with the
//! right password.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use edge_agent::RunOptions;
use edge_agent_tests::{TempDir, TestPki, config, wait_until, wearing_pump_toml};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The wearing pump (alerts within a minute) with `/metrics` and `ui`.
fn plant(ui: &str) -> String {
    wearing_pump_toml(
        "ui-test",
        &format!("[metrics]\nlisten = \"127.0.0.1:0\"\n\n{ui}"),
        "",
    )
}

/// An HTTP/1.1 answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("JSON: {e}\n{}", self.body))
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, request: &[u8]) -> Answer {
    s.write_all(request).await.expect("send");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("the server answers and closes within 10 s");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// Sends raw bytes and reads the whole answer (the request asks to close).
async fn raw(addr: SocketAddr, request: &[u8]) -> Answer {
    let s = TcpStream::connect(addr).await.expect("connect");
    exchange(s, request).await
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

fn ui_addr(h: &edge_agent::AgentHandle) -> SocketAddr {
    h.endpoints().ui.expect("the UI listens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_serves_pages_live_values_history_and_metrics_with_a_strict_csp() {
    let cfg = config("ui.toml", &plant("[ui]\nlisten = \"127.0.0.1:0\""));
    let h = edge_agent::start(cfg, RunOptions::default()).expect("agent starts");
    let addr = ui_addr(&h);
    assert!(addr.ip().is_loopback());
    wait_until("a temperature value", 20, || {
        h.tags("pump.temperature").tags[0].value.is_some()
    })
    .await;

    let page = get(addr, "/").await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.body.contains("<script src=\"/app.js\""),
        "{}",
        page.body
    );
    let csp = page.header("content-security-policy").expect("a CSP");
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(
        page.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    for (path, ty) in [("/app.js", "text/javascript"), ("/app.css", "text/css")] {
        let a = get(addr, path).await;
        assert_eq!(a.status, 200);
        assert!(
            a.header("content-type").is_some_and(|t| t.starts_with(ty)),
            "{a:?}"
        );
    }
    let total: usize = ["/", "/app.js", "/app.css"]
        .iter()
        .map(|p| include_bytes_len(p))
        .sum();
    assert!(total < 300 * 1024, "the UI is {total} bytes");

    let status = get(addr, "/api/status").await.json();
    assert_eq!(status["agent"], "ui-test");
    assert_eq!(
        status["ui"],
        format!("http://{addr}/"),
        "status says where the UI is"
    );
    assert!(
        h.status()
            .render()
            .contains(&format!("UI        http://{addr}/"))
    );
    assert_eq!(status["drivers"][0]["state"], "running");
    // 1 signal … the history is sized for every registered signal, 2 rings.
    assert!(
        status["history_bytes"].as_u64().is_some_and(|b| b > 0),
        "{status}"
    );

    let tags = get(addr, "/api/tags?filter=pump.temp").await.json();
    assert_eq!(tags["tags"].as_array().map(Vec::len), Some(1), "{tags}");
    assert_eq!(tags["tags"][0]["quality"], "good");

    // History: buckets with min ≤ mean ≤ max, and they fill as time passes.
    let one = get(addr, "/api/signal?name=pump.temperature").await.json();
    assert_eq!(one["tag"]["unit"], "degC");
    let filled = |v: &Value| {
        v["series"]["points"]
            .as_array()
            .map_or(0, |p| p.iter().filter(|q| !q[3].is_null()).count())
    };
    assert!(filled(&one) > 0, "{one}");
    for q in one["series"]["points"].as_array().into_iter().flatten() {
        if let (Some(lo), Some(m), Some(hi)) = (q[1].as_f64(), q[3].as_f64(), q[2].as_f64()) {
            assert!(lo <= m && m <= hi, "{q}");
        }
    }
    let long = get(addr, "/api/signal?name=pump.temperature&span=long")
        .await
        .json();
    assert!(long["series"]["bucket_s"].as_f64() > one["series"]["bucket_s"].as_f64());

    let svg = get(addr, "/plot/signal.svg?name=pump.temperature").await;
    assert_eq!(svg.header("content-type").as_deref(), Some("image/svg+xml"));
    assert!(svg.body.starts_with("<svg") && svg.body.contains("class=\"mean\""));

    // /metrics on the UI's listener and on its own.
    let m = get(addr, "/metrics").await;
    assert!(
        m.body
            .contains("edge_agent_driver_up{driver=\"plant\",kind=\"sim\"} 1")
    );
    let own = get(h.endpoints().metrics.expect("metrics"), "/metrics").await;
    assert!(own.body.contains("edge_agent_uptime_seconds"));
    assert_eq!(
        get(h.endpoints().metrics.expect("metrics"), "/")
            .await
            .status,
        404,
        "no UI there"
    );
    h.stop().await.expect("stops");
}

/// The size of an embedded asset, as served.
fn include_bytes_len(path: &str) -> usize {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src/ops/http/ui/assets");
    let file = match path {
        "/" => "index.html",
        "/app.js" => "app.js",
        _ => "app.css",
    };
    std::fs::metadata(dir.join(file)).map_or(0, |m| m.len() as usize)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_4xx_and_the_server_keeps_serving() {
    let cfg = config("ui.toml", &plant("[ui]\nlisten = \"127.0.0.1:0\""));
    let h = edge_agent::start(cfg, RunOptions::default()).expect("agent starts");
    let addr = ui_addr(&h);
    let huge = "x".repeat(20_000);
    let long_name = "y".repeat(300);
    for (path, want) in [
        ("/api/signal?name=no.such.signal", 404),
        ("/api/signal", 400),
        ("/api/signal?name=pump.temperature&span=forever", 400),
        ("/api/tags?filter=%zz", 400),
        (&format!("/api/tags?filter={long_name}") as &str, 400),
        (&format!("/api/tags?filter={huge}"), 431),
        ("/api/alert?id=", 400),
        ("/api/alert?id=<script>", 400),
        ("/api/alert?id=01M96AD5NXTQ10HP7S9E024R4Z", 404),
        ("/alerts/..%2f..%2fetc%2fpasswd.svg", 400),
        ("/alerts/01M96AD5NXTQ10HP7S9E024R4Z.svg", 404),
        ("/plot/signal.svg?name=nope", 404),
        ("/plot/detector.svg?asset=pump", 400),
        ("/plot/detector.svg?asset=pump&detector=nope", 404),
        ("/nope", 404),
    ] {
        let a = get(addr, path).await;
        assert_eq!(a.status, want, "{} → {a:?}", &path[..path.len().min(80)]);
    }
    let post = raw(
        addr,
        b"POST /api/status HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow").as_deref(), Some("GET, HEAD"));
    let garbage = raw(addr, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").await;
    assert!(garbage.status == 400 || garbage.status == 0, "{garbage:?}");
    let head = raw(
        addr,
        b"HEAD /api/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    // A client that sends half a request and stalls is dropped; others are served.
    let stalled = TcpStream::connect(addr).await.expect("connect");
    let mut stalled = stalled;
    stalled
        .write_all(b"GET /api/status HTTP/1.1\r\nHo")
        .await
        .expect("send");
    assert_eq!(get(addr, "/api/status").await.status, 200, "still serving");
    drop(stalled);
    h.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_their_evidence_plot_are_served_at_a_stable_url() {
    let cfg = config("ui.toml", &plant("[ui]\nlisten = \"127.0.0.1:0\""));
    let h = edge_agent::start(cfg, RunOptions::default()).expect("agent starts");
    let addr = ui_addr(&h);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let alerts = loop {
        let alerts = get(addr, "/api/alerts").await.json();
        let kinds: Vec<&str> = alerts["recent"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["kind"].as_str())
            .collect();
        if kinds.contains(&"trend") && kinds.contains(&"threshold") {
            break alerts;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no trend and threshold alerts: {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        alerts["active"].as_array().is_some_and(|a| !a.is_empty()),
        "{alerts}"
    );
    let trend = alerts["recent"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["kind"] == "trend"))
        .expect("a trend alert")
        .clone();
    let id = trend["id"].as_str().expect("id");
    let ev = get(addr, &format!("/api/alert?id={id}")).await.json();
    assert_eq!(ev["alert"]["id"], id);
    assert_eq!(ev["plot"], format!("/alerts/{id}.svg"));
    assert!(
        ev["alert"]["features"]["mean"].is_number(),
        "the window behind it: {ev}"
    );
    assert!(ev["episode"].as_array().is_some_and(|e| !e.is_empty()));
    let svg = get(addr, &format!("/alerts/{id}.svg")).await;
    assert_eq!(svg.status, 200);
    assert!(
        svg.body.contains("limit 85"),
        "the limit line: {}",
        svg.body
    );
    assert!(
        svg.body.contains("predicted crossing"),
        "the forecast: {}",
        svg.body
    );
    assert!(
        svg.body.contains("class=\"eta-range\"") && svg.body.contains("between "),
        "the crossing's interval: {}",
        svg.body
    );
    assert!(
        svg.body.contains("class=\"forecast\""),
        "the fitted curve: {}",
        svg.body
    );
    let fit = &ev["alert"]["fit"];
    assert!(
        ["line", "quadratic", "exponential"].contains(&fit["model"].as_str().unwrap_or(""))
            && fit["span_s"].as_f64().is_some_and(|s| s > 0.0),
        "the curve behind the ETA: {ev}"
    );
    let range = &ev["alert"]["eta_range_s"];
    let eta = ev["alert"]["eta_s"].as_f64().expect("an ETA");
    assert!(
        range[0].as_f64().is_some_and(|lo| lo <= eta)
            && range[1].as_f64().is_none_or(|hi| hi >= eta),
        "the interval holds the ETA: {ev}"
    );
    assert!(svg.body.contains("class=\"mean\""), "the series around it");
    assert!(
        svg.body.contains("mean per window"),
        "the detector's own input: {}",
        svg.body
    );
    let evals = ev["evaluations"].as_array().expect("evaluations");
    assert!(!evals.is_empty(), "{ev}");
    let last = &evals[evals.len() - 1];
    assert_eq!(
        last[3].as_f64(),
        Some(85.0),
        "the limit it was held against: {last}"
    );

    // Hours of it: the detector's evaluations and every window feature, read
    // by a detector or not.
    let long = get(
        addr,
        "/plot/detector.svg?asset=pump&detector=temperature-forecast&span=long",
    )
    .await;
    assert_eq!(long.status, 200, "{}", long.body);
    assert!(
        long.body.contains("class=\"mean\"")
            && long.body.contains("limit 85")
            && long.body.contains("mean per 72s"),
        "the long view: {}",
        long.body
    );
    let one = get(addr, "/api/signal?name=pump.temperature").await.json();
    let features = &one["windows"][0]["features"];
    assert_eq!(one["windows"][0]["asset"], "pump", "{one}");
    assert!(
        ["mean", "std", "kurtosis", "slope"].iter().all(|f| features
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == f))),
        "{one}"
    );
    // No detector reads the window's std.
    let std = get(
        addr,
        "/plot/feature.svg?asset=pump&signal=pump.temperature&feature=std",
    )
    .await;
    assert_eq!(std.status, 200, "{}", std.body);
    assert!(
        std.body.contains("class=\"mean\"")
            && std.body.contains("std(pump.temperature) per window"),
        "{}",
        std.body
    );
    for (path, want) in [
        (
            "/plot/feature.svg?asset=pump&signal=pump.temperature&feature=nope",
            404,
        ),
        ("/plot/feature.svg?asset=pump&signal=pump.temperature", 400),
        (
            "/plot/feature.svg?asset=nope&signal=pump.temperature&feature=mean",
            404,
        ),
        (
            "/plot/detector.svg?asset=pump&detector=temperature&span=forever",
            400,
        ),
    ] {
        assert_eq!(get(addr, path).await.status, want, "{path}");
    }
    h.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_sends_status_every_second_and_tags_when_asked() {
    let cfg = config("ui.toml", &plant("[ui]\nlisten = \"127.0.0.1:0\""));
    let h = edge_agent::start(cfg, RunOptions::default()).expect("agent starts");
    let addr = ui_addr(&h);
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /events?tags=pump HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    while String::from_utf8_lossy(&got)
        .matches("event: status")
        .count()
        < 2
    {
        let n = tokio::time::timeout_at(until, s.read(&mut buf))
            .await
            .expect("two status events within 15 s")
            .expect("read");
        assert!(n > 0, "stream ended early");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("content-type: text/event-stream"), "{text}");
    assert!(text.contains("event: tags\ndata: {"), "{text}");
    assert!(text.contains("\"pump.temperature\""), "{text}");
    drop(s);
    // Streams are bounded; a closed one frees its place.
    let mut open = Vec::new();
    for _ in 0..8 {
        let mut c = TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("send");
        let mut b = [0u8; 256];
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read(&mut b)).await;
        open.push(c);
    }
    let ninth = get(addr, "/events").await;
    assert_eq!(ninth.status, 503, "{ninth:?}");
    open.clear();
    wait_for_status(addr, "/events", 200).await;
    h.stop().await.expect("stops");
}

/// Polls until `path` answers `want` (the first bytes of a stream suffice).
async fn wait_for_status(addr: SocketAddr, path: &str, want: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = TcpStream::connect(addr).await.expect("connect");
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("send");
        let mut b = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut b))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
        if String::from_utf8_lossy(&b[..n]).starts_with(&format!("HTTP/1.1 {want}")) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never answered {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn config_error(src: &str) -> String {
    match edge_agent::config::parse("ui.toml", src) {
        Ok(_) => panic!("accepted:\n{src}"),
        Err(e) => e.rendered,
    }
}

#[test]
fn a_ui_beyond_loopback_needs_users_and_tls() {
    let dir = TempDir::new("ui-remote");
    let pki = TestPki::generate(dir.path());
    let users = dir.path().join("ui-users");
    let line = edge_agent::ops::http::auth::hash_line("ops", "correct horse").expect("hash");
    std::fs::write(&users, format!("{line}\n")).expect("users");
    let bare = config_error(&plant("[ui]\nlisten = \"0.0.0.0:9480\""));
    assert!(
        bare.contains("ui.toml:13:10"),
        "points at the listen value: {bare}"
    );
    assert!(
        bare.contains("reachable from the network") && bare.contains("users_file"),
        "{bare}"
    );
    assert!(bare.contains("edge-agent ui-password"), "says how: {bare}");
    let no_tls = config_error(&plant(&format!(
        "[ui]\nlisten = \"0.0.0.0:9480\"\nusers_file = \"{}\"",
        users.display()
    )));
    assert!(no_tls.contains("tls_cert"), "{no_tls}");
    let garbage = dir.path().join("garbage-users");
    std::fs::write(&garbage, "ops:secret\n").expect("write");
    let bad_users = config_error(&plant(&format!(
        "[ui]\nusers_file = \"{}\"",
        garbage.display()
    )));
    assert!(bad_users.contains("line 1: not five fields"), "{bad_users}");
    let half_tls = config_error(&plant(&format!(
        "[ui]\ntls_cert = \"{}\"",
        pki.server_cert.display()
    )));
    assert!(
        half_tls.contains("both `tls_cert` and `tls_key`"),
        "{half_tls}"
    );
    // Everything given: accepted, and the password never appears in the config.
    let full = plant(&format!(
        "[ui]\nlisten = \"0.0.0.0:9480\"\nusers_file = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"",
        users.display(),
        pki.server_cert.display(),
        pki.server_key.display()
    ));
    assert!(edge_agent::config::parse("ui.toml", &full).is_ok());
}

fn tls_client(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(c.expect("cert")).expect("add");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_ui_answers_only_over_tls_and_only_with_the_right_password() {
    use base64::Engine as _;
    let dir = TempDir::new("ui-guard");
    let pki = TestPki::generate(dir.path());
    let users = dir.path().join("ui-users");
    let line = edge_agent::ops::http::auth::hash_line("ops", "correct horse").expect("hash");
    std::fs::write(&users, format!("# UI users\n{line}\n")).expect("users");
    let cfg = config(
        "ui.toml",
        &plant(&format!(
            "[ui]\nlisten = \"127.0.0.1:0\"\nusers_file = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"",
            users.display(),
            pki.server_cert.display(),
            pki.server_key.display()
        )),
    );
    let h = edge_agent::start(cfg, RunOptions::default()).expect("agent starts");
    let addr = ui_addr(&h);
    let tls = tls_client(&pki.ca);
    let https = |auth: Option<String>| {
        let tls = tls.clone();
        async move {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            let s = tls.connect(name, tcp).await.expect("TLS handshake");
            let auth = auth
                .map(|a| format!("Authorization: {a}\r\n"))
                .unwrap_or_default();
            exchange(
                s,
                format!(
                    "GET /api/status HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
        }
    };
    let basic = |u: &str, p: &str| {
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        ))
    };
    let none = https(None).await;
    assert_eq!(none.status, 401, "{none:?}");
    assert!(
        none.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Basic"))
    );
    assert!(
        !none.body.contains("ui-test"),
        "nothing leaks: {}",
        none.body
    );
    assert_eq!(https(basic("ops", "wrong horse")).await.status, 401);
    assert_eq!(https(basic("root", "correct horse")).await.status, 401);
    assert_eq!(https(Some("Bearer abc".into())).await.status, 401);
    let ok = https(basic("ops", "correct horse")).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json()["agent"], "ui-test");
    // Plain HTTP to the TLS port gets no page.
    let plain = get(addr, "/api/status").await;
    assert_ne!(plain.status, 200, "{plain:?}");
    h.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_models_page_shows_versions_bindings_and_training_quality() {
    let zoo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/zoo");
    let text = format!(
        r#"
[agent]
id = "ui-models"

[alerts]
console = false

[ui]
listen = "127.0.0.1:0"

[models]
dir = "{zoo}"

[[drivers]]
name = "plant"
kind = "sim"
[[drivers.machines]]
name = "pump"
sample_rate_hz = 10.0
vibration_rate_hz = 256.0

[[assets]]
name = "pump"
[[assets.signals]]
signal = "pump.temperature"
window = {{ size = "10s", hop = "5s" }}
[[assets.signals]]
signal = "pump.vibration"
window = {{ size = 512, hop = 512 }}
bands = [
  {{ name = "shaft", lo_hz = 0.0, hi_hz = 60.0 }},
  {{ name = "bearing", lo_hz = 60.0, hi_hz = 128.0 }},
]
[[assets.signals]]
signal = "pump.current"
window = {{ size = "10s", hop = "5s" }}
[[assets.signals]]
signal = "pump.pressure"
window = {{ size = "10s", hop = "5s" }}

[[assets.models]]
name = "wear"
manifest = "bearing_rf/manifest.toml"
roles = {{ vibration = "pump.vibration", temperature = "pump.temperature", current = "pump.current", pressure = "pump.pressure" }}
"#,
        zoo = zoo.display()
    );
    let h = edge_agent::start(config("models.toml", &text), RunOptions::default()).expect("starts");
    let models = get(ui_addr(&h), "/api/models").await.json();
    let m = &models[0];
    assert_eq!(m["name"], "bearing_rf", "{models}");
    assert_eq!(m["sha256"].as_str().map(str::len), Some(64));
    assert_eq!(m["bindings"][0]["binding"], "wear");
    let want: Value = serde_json::from_str(
        &std::fs::read_to_string(zoo.join("bearing_rf/quality.json")).expect("quality.json"),
    )
    .expect("JSON");
    assert_eq!(m["quality"], want, "the zoo's held-out evaluation");
    assert_eq!(m["history"][0]["event"], "loaded", "{models}");
    assert_eq!(m["history"][0]["version"], m["version"]);
    // The binding's scores over hours, once it has scored.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let scores = loop {
        let r = get(
            ui_addr(&h),
            "/plot/detector.svg?asset=pump&detector=wear&span=long",
        )
        .await;
        if r.status == 200 {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never scored: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        scores.body.contains("model score") && scores.body.contains("class=\"mean\""),
        "{}",
        scores.body
    );
    h.stop().await.expect("stops");
}
