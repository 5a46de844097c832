#![allow(clippy::print_stdout)] // reports the measured re-registration time
//! The CoAP driver against aiocoap: GET polling of text, JSON, CBOR, SenML (JSON and
//! CBOR), a Block2 transfer, Observe with confirmable notifications, a missing
//! resource (4.04) as bad quality, a server gone and back (re-registration), and
//! silence (no ICMP) as timeouts after the RFC 7252 retransmissions.

use std::sync::Arc;
use std::time::Duration;

use edge_agent_tests::PyCoap;
use edge_driver_api::{
    BadReason, Clock, DriverContext, DriverFactory, Quality, SignalRegistry, Value,
};
use edge_driver_coap::CoapConfig;
use tokio_util::sync::CancellationToken;

const SENML_NAMES: [&str; 4] = ["f.dev:hum", "f.dev:temp", "f.dev:press", "f.dev:door"];

fn factory(port: u16) -> (edge_driver_coap::CoapFactory, SignalRegistry) {
    let src = format!(
        r#"
host = "127.0.0.1"
port = {port}
ack_timeout = "200ms"
max_retransmit = 2
[[resources]]
path = "/temp"
poll = "200ms"
signal = "f.temp"
[[resources]]
path = "/json"
poll = "200ms"
format = "json"
values = [{{ pointer = "/t", signal = "f.json.t" }}, {{ pointer = "/h", signal = "f.json.h" }}]
[[resources]]
path = "/cbor"
poll = "200ms"
format = "cbor"
values = [{{ pointer = "/t", signal = "f.cbor.t" }}]
[[resources]]
path = "/senml"
poll = "200ms"
format = "senml"
signal = "f.{{name}}"
[[resources]]
path = "/senml-cbor"
poll = "200ms"
format = "senml_cbor"
signal = "f.{{name}}"
[[resources]]
path = "/big"
poll = "500ms"
format = "json"
values = [{{ pointer = "/v", signal = "f.big" }}]
[[resources]]
path = "/counter"
mode = "observe"
observe_timeout = "2s"
signal = "f.counter"
[[resources]]
path = "/missing"
poll = "500ms"
signal = "f.missing"
"#
    );
    let cfg = edge_driver_api::testing::parse_section(&src, |r| CoapConfig::parse(r, "f"));
    let mut reg = edge_driver_api::testing::registry(cfg.signals(), "f");
    let pats = cfg.patterns();
    for n in SENML_NAMES {
        let p = pats.iter().find(|p| p.matches(n)).expect("template");
        reg.intern(&p.decl(n), "f").expect("unique");
    }
    (cfg.into_factory(&reg).expect("factory"), reg)
}

use edge_driver_api::testing::samples_of as of;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_and_observes_every_payload_format_from_aiocoap() {
    let mut server = PyCoap::start();
    let (f, reg) = factory(server.port);
    let sink = Arc::new(edge_driver_api::testing::CollectSink::new());
    let cancel = CancellationToken::new();
    let ctx = DriverContext::new("f".into(), sink.clone(), cancel.clone(), Clock::system());
    let task = tokio::spawn(f.create().expect("driver").run(ctx.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let samples = sink.samples();
    let last = |n: &str| {
        of(&samples, &reg, n)
            .last()
            .copied()
            .unwrap_or_else(|| panic!("no sample for {n}"))
    };
    assert_eq!(last("f.temp").value, Value::F64(21.5));
    assert_eq!(last("f.json.t").value, Value::F64(19.25));
    assert_eq!(last("f.json.h").value, Value::F64(41.0));
    assert_eq!(last("f.cbor.t").value, Value::F64(18.5));
    assert_eq!(last("f.dev:hum").value, Value::F64(40.5));
    assert_eq!(last("f.dev:temp").value, Value::F64(18.0));
    assert_eq!(last("f.dev:press").value, Value::F64(1.25));
    assert_eq!(last("f.dev:door").value, Value::Bool(true));
    assert_eq!(
        last("f.big").value,
        Value::F64(7.5),
        "the value after 3 kB came through Block2"
    );
    // 4.04 = class 4 · 32 + 4.
    assert_eq!(
        last("f.missing").quality,
        Quality::Bad(BadReason::DeviceException(132))
    );
    // Observe: notifications every 200 ms, counting up.
    let counter: Vec<f64> = of(&samples, &reg, "f.counter")
        .iter()
        .filter_map(|s| s.usable_f64())
        .collect();
    assert!(counter.len() >= 8, "{counter:?}");
    assert!(counter.windows(2).all(|w| w[1] > w[0]), "{counter:?}");

    // The server goes away and comes back (a new process: the observation is gone):
    // polls time out meanwhile, and the observation is registered again.
    server.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Nothing listens: ICMP port unreachable fails the exchanges at once.
    assert_eq!(
        of(&sink.samples(), &reg, "f.temp")
            .last()
            .map(|s| s.quality),
        Some(Quality::Bad(BadReason::Communication))
    );
    server.spawn();
    let before = of(&sink.samples(), &reg, "f.counter").len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let samples = sink.samples();
    assert_eq!(
        of(&samples, &reg, "f.temp").last().map(|s| s.value),
        Some(Value::F64(21.5))
    );
    let after: Vec<f64> = of(&samples, &reg, "f.counter")[before..]
        .iter()
        .filter_map(|s| s.usable_f64())
        .collect();
    assert!(
        after.len() >= 5,
        "notifications again after re-registration: {after:?}"
    );
    cancel.cancel();
    let res = tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("prompt")
        .expect("no panic");
    assert!(res.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_device_gets_rfc7252_retransmissions_then_times_out() {
    // Swallows every datagram, answers nothing (no ICMP either).
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = sock.local_addr().expect("addr").port();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let seen = Arc::new(std::sync::Mutex::new(
        Vec::<(std::time::Instant, Vec<u8>)>::new(),
    ));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s2, st2) = (seen.clone(), stop.clone());
    let th = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !st2.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(n) = sock.recv(&mut buf) {
                s2.lock()
                    .expect("mutex")
                    .push((std::time::Instant::now(), buf[..n].to_vec()));
            }
        }
    });
    let src = format!(
        "host = \"127.0.0.1\"\nport = {port}\nack_timeout = \"100ms\"\nmax_retransmit = 2\n[[resources]]\npath = \"/temp\"\npoll = \"10s\"\nsignal = \"s.temp\"\n"
    );
    let cfg = edge_driver_api::testing::parse_section(&src, |r| CoapConfig::parse(r, "s"));
    let reg = edge_driver_api::testing::registry(cfg.signals(), "s");
    let f = cfg.into_factory(&reg).expect("factory");
    let sink = Arc::new(edge_driver_api::testing::CollectSink::new());
    let cancel = CancellationToken::new();
    let ctx = DriverContext::new("s".into(), sink.clone(), cancel.clone(), Clock::system());
    let task = tokio::spawn(f.create().expect("driver").run(ctx));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("prompt");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = th.join();
    // The GETs (code 0.01); a link that went down is also pinged (empty
    // confirmable messages), which are not retransmissions.
    let seen: Vec<(std::time::Instant, Vec<u8>)> = seen
        .lock()
        .expect("mutex")
        .iter()
        .filter(|(_, d)| d.len() > 1 && d[1] == 0x01)
        .cloned()
        .collect();
    // One request + 2 retransmissions, same message id, growing gaps.
    assert_eq!(seen.len(), 3, "{} datagrams", seen.len());
    assert!(
        seen.iter().all(|(_, d)| d[2..4] == seen[0].1[2..4]),
        "same message id"
    );
    let gaps: Vec<f64> = seen
        .windows(2)
        .map(|w| (w[1].0 - w[0].0).as_secs_f64())
        .collect();
    assert!(
        gaps[0] >= 0.09 && gaps[1] >= 1.8 * gaps[0] * 0.9,
        "{gaps:?}"
    );
    let temp = of(&sink.samples(), &reg, "s.temp");
    assert_eq!(
        temp.last().map(|s| s.quality),
        Some(Quality::Bad(BadReason::Timeout))
    );
}

/// An observation lives in the server: a restarted server forgets it and sends
/// nothing more. With the default `observe_timeout` (5 min) the driver used to
/// wait that long before registering again (270 s without data); now it pings a
/// server it observes every few seconds and registers again as soon as a
/// restarted one answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observation_is_registered_again_within_seconds_of_a_server_restart() {
    let mut server = PyCoap::start();
    let src = format!(
        "host = \"127.0.0.1\"\nport = {}\nack_timeout = \"200ms\"\nmax_retransmit = 1\n[[resources]]\npath = \"/counter\"\nmode = \"observe\"\nsignal = \"f.counter\"\n",
        server.port
    );
    let cfg = edge_driver_api::testing::parse_section(&src, |r| CoapConfig::parse(r, "f"));
    let reg = edge_driver_api::testing::registry(cfg.signals(), "f");
    let f = cfg.into_factory(&reg).expect("factory");
    let sink = Arc::new(edge_driver_api::testing::CollectSink::new());
    let cancel = CancellationToken::new();
    let ctx = DriverContext::new("f".into(), sink.clone(), cancel.clone(), Clock::system());
    let task = tokio::spawn(f.create().expect("driver").run(ctx));
    let good = |samples: &[edge_driver_api::Sample]| {
        of(samples, &reg, "f.counter")
            .iter()
            .filter(|s| s.usable_f64().is_some())
            .count()
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(good(&sink.samples()) >= 5, "observing");

    server.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.spawn();
    let back = std::time::Instant::now();
    let before = good(&sink.samples());
    while good(&sink.samples()) < before + 3 {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "no notification within 10 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "notifications again {:.1} s after the server restarted",
        back.elapsed().as_secs_f64()
    );
    cancel.cancel();
    let res = tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("prompt")
        .expect("no panic");
    assert!(res.is_ok());
}

/// aiocoap answers in its default representation (often text) unless asked:
/// `format = "json"`/`"cbor"` send the matching Accept option, `accept` sets
/// another, and a payload the format cannot read is bad quality ("unreadable
/// payload" in `edge-agent tags`), not silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_cbor_resources_ask_for_their_format_with_accept() {
    let server = PyCoap::start();
    let src = format!(
        r#"
host = "127.0.0.1"
port = {}
ack_timeout = "200ms"
[[resources]]
path = "/multi"
poll = "200ms"
format = "json"
values = [{{ pointer = "/t", signal = "n.json" }}]
[[resources]]
path = "/multi"
poll = "200ms"
format = "cbor"
values = [{{ pointer = "/t", signal = "n.cbor" }}]
[[resources]]
path = "/multi"
poll = "200ms"
signal = "n.text"
[[resources]]
path = "/multi"
poll = "200ms"
accept = 999
signal = "n.refused"
[[resources]]
path = "/temp"
poll = "200ms"
format = "json"
values = [{{ pointer = "/t", signal = "n.unreadable" }}]
"#,
        server.port
    );
    let cfg = edge_driver_api::testing::parse_section(&src, |r| CoapConfig::parse(r, "n"));
    let reg = edge_driver_api::testing::registry(cfg.signals(), "n");
    let f = cfg.into_factory(&reg).expect("factory");
    let sink = Arc::new(edge_driver_api::testing::CollectSink::new());
    let cancel = CancellationToken::new();
    let ctx = DriverContext::new("n".into(), sink.clone(), cancel.clone(), Clock::system());
    let task = tokio::spawn(f.create().expect("driver").run(ctx));
    tokio::time::sleep(Duration::from_secs(2)).await;
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("prompt");
    let samples = sink.samples();
    let last = |n: &str| of(&samples, &reg, n).last().copied();
    for n in ["n.json", "n.cbor", "n.text"] {
        assert_eq!(last(n).map(|s| s.value), Some(Value::F64(19.5)), "{n}");
    }
    assert_eq!(
        last("n.refused").map(|s| s.quality),
        Some(Quality::Bad(BadReason::DeviceException(0x86))),
        "4.06 Not Acceptable"
    );
    assert_eq!(
        last("n.unreadable").map(|s| s.quality),
        Some(Quality::Bad(BadReason::Decode))
    );
}
