//! The shared driver conformance suite: the same checks for every field driver
//! against its real peer.
//!
//! 1. connect and read: every expected signal carries exactly the value the peer
//!    serves;
//! 2. peer gone: the driver reports it (bad-quality samples or a failed attempt of a
//!    *retryable* kind), never panics, never a Config/Fatal error;
//! 3. peer back: values again, through the supervisor's restart loop;
//! 4. cancel: the driver returns `Ok` promptly;
//! 5. nothing there at all: the first attempt's outcome is retryable or bad quality.
//!
//! Each case supplies its peer (start / stop / restart), the driver configuration and
//! the expected values; the suite drives the driver the way the agent's supervisor
//! does (a failed attempt is retried after a short pause).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use edge_agent_tests::{Mosquitto, PyCoap, PyModbus, PyOpcua, PySnap7, free_port};
use edge_driver_api::testing::CollectSink;
use edge_driver_api::{
    Clock, DriverContext, DriverError, DriverFactory, ErrorKind, SignalDecl, SignalPattern,
    SignalRegistry, Value,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// A real peer the suite can stop and start again (same address).
trait Peer: Send {
    fn stop(&mut self);
    fn start(&mut self);
}

impl Peer for PyModbus {
    fn stop(&mut self) {
        PyModbus::stop(self)
    }
    fn start(&mut self) {
        self.spawn()
    }
}
impl Peer for PySnap7 {
    fn stop(&mut self) {
        PySnap7::stop(self)
    }
    fn start(&mut self) {
        self.spawn()
    }
}
impl Peer for PyOpcua {
    fn stop(&mut self) {
        PyOpcua::stop(self)
    }
    fn start(&mut self) {
        self.spawn()
    }
}
impl Peer for PyCoap {
    fn stop(&mut self) {
        PyCoap::stop(self)
    }
    fn start(&mut self) {
        self.spawn()
    }
}

/// Mosquitto plus a publisher task that publishes the sensor value every 100 ms.
struct MqttPeer {
    broker: Mosquitto,
    publisher: Option<tokio::task::JoinHandle<()>>,
}

impl MqttPeer {
    fn new() -> MqttPeer {
        let mut p = MqttPeer {
            broker: Mosquitto::start(),
            publisher: None,
        };
        p.publish();
        p
    }
    fn publish(&mut self) {
        let port = self.broker.port;
        self.publisher = Some(tokio::spawn(async move {
            loop {
                let mut opts = rumqttc::MqttOptions::new(
                    format!("conf-pub-{}", free_port()),
                    "127.0.0.1",
                    port,
                );
                opts.set_keep_alive(Duration::from_secs(5));
                let (c, mut ev) = rumqttc::AsyncClient::new(opts, 10);
                let pump = tokio::spawn(async move { while ev.poll().await.is_ok() {} });
                loop {
                    if c.publish("conf/l1/temp", rumqttc::QoS::AtMostOnce, false, "21.5")
                        .await
                        .is_err()
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if pump.is_finished() {
                        break;
                    }
                }
                pump.abort();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
}

impl Peer for MqttPeer {
    fn stop(&mut self) {
        self.broker.stop();
    }
    fn start(&mut self) {
        self.broker.spawn();
    }
}

impl Drop for MqttPeer {
    fn drop(&mut self) {
        if let Some(p) = self.publisher.take() {
            p.abort();
        }
    }
}

/// One driver under test.
struct Case {
    name: &'static str,
    peer: Box<dyn Peer>,
    factory: Arc<dyn DriverFactory>,
    registry: SignalRegistry,
    expect: Vec<(&'static str, Value)>,
    /// A factory for the same driver pointed at a port where nothing listens.
    nothing_there: Arc<dyn DriverFactory>,
}

/// Parses a driver section with `parse`, interns its signals (and the names of
/// `pattern_names` from its patterns), and builds the factory with `build`.
fn build<C>(
    toml: &str,
    parse: impl Fn(&mut edge_driver_api::config::TableReader<'_>) -> Option<C>,
    signals: impl Fn(&C) -> Vec<SignalDecl>,
    patterns: impl Fn(&C) -> Vec<SignalPattern>,
    pattern_names: &[&str],
    factory: impl Fn(C, &SignalRegistry) -> Result<Arc<dyn DriverFactory>, DriverError>,
) -> (Arc<dyn DriverFactory>, SignalRegistry) {
    let cfg = edge_driver_api::testing::parse_section(toml, parse);
    let mut reg = edge_driver_api::testing::registry(signals(&cfg), "dut");
    let pats = patterns(&cfg);
    for n in pattern_names {
        let p = pats.iter().find(|p| p.matches(n)).expect("a pattern");
        reg.intern(&p.decl(n), "dut").expect("unique");
    }
    (factory(cfg, &reg).expect("factory"), reg)
}

fn modbus(port: u16) -> (Arc<dyn DriverFactory>, SignalRegistry) {
    let toml = format!(
        "host = \"127.0.0.1\"\nport = {port}\npoll = \"100ms\"\ntimeout = \"300ms\"\n[[tags]]\nname = \"dut.f\"\narea = \"holding\"\naddress = 3\ntype = \"f32\"\n"
    );
    build(
        &toml,
        |r| edge_driver_modbus::ModbusConfig::parse(r, "dut"),
        |c| c.signals(),
        |_| Vec::new(),
        &[],
        |c, reg| Ok(Arc::new(c.into_factory(reg)?)),
    )
}

fn s7(port: u16) -> (Arc<dyn DriverFactory>, SignalRegistry) {
    let toml = format!(
        "host = \"127.0.0.1\"\nport = {port}\npoll = \"100ms\"\ntimeout = \"300ms\"\n[[tags]]\nname = \"dut.f\"\naddress = \"DB1.DBD4\"\ntype = \"REAL\"\n"
    );
    build(
        &toml,
        |r| edge_driver_s7::S7Config::parse(r, "dut"),
        |c| c.signals(),
        |_| Vec::new(),
        &[],
        |c, reg| Ok(Arc::new(c.into_factory(reg)?)),
    )
}

fn coap(port: u16) -> (Arc<dyn DriverFactory>, SignalRegistry) {
    let toml = format!(
        "host = \"127.0.0.1\"\nport = {port}\nack_timeout = \"100ms\"\nmax_retransmit = 1\n[[resources]]\npath = \"/temp\"\npoll = \"100ms\"\nsignal = \"dut.f\"\n"
    );
    build(
        &toml,
        |r| edge_driver_coap::CoapConfig::parse(r, "dut"),
        |c| c.signals(),
        |c| c.patterns(),
        &[],
        |c, reg| Ok(Arc::new(c.into_factory(reg)?)),
    )
}

fn mqtt(port: u16) -> (Arc<dyn DriverFactory>, SignalRegistry) {
    let toml = format!(
        "host = \"127.0.0.1\"\nport = {port}\nkeep_alive = \"5s\"\n[[subscriptions]]\ntopic = \"conf/+line/temp\"\nsignal = \"{{line}}.f\"\n"
    );
    build(
        &toml,
        |r| edge_driver_mqtt::MqttConfig::parse(r, "dut"),
        |c| c.signals(),
        |c| c.patterns(),
        &["l1.f"],
        |c, reg| Ok(Arc::new(c.into_factory(reg)?)),
    )
}

fn opcua(port: u16) -> (Arc<dyn DriverFactory>, SignalRegistry) {
    let toml = format!(
        "endpoint = \"opc.tcp://127.0.0.1:{port}/edge-test\"\npublishing_interval = \"100ms\"\ntimeout = \"1s\"\n[[tags]]\nname = \"dut.f\"\nnode = \"ns=2;s=Line1.Double\"\n"
    );
    build(
        &toml,
        |r| edge_driver_opcua::OpcuaConfig::parse(r, "dut"),
        |c| c.signals(),
        |_| Vec::new(),
        &[],
        |c, reg| Ok(Arc::new(c.into_factory(reg)?)),
    )
}

async fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    // Modbus TCP: 21.5 as f32 at holding 3.
    let pm = PyModbus::start(
        &json!({"unit": 1, "tags": [{"area": "holding", "address": 3, "type": "f32", "value": 21.5}]}),
    );
    let (factory, registry) = modbus(pm.port);
    out.push(Case {
        name: "modbus",
        factory,
        registry,
        peer: Box::new(pm),
        expect: vec![("dut.f", Value::F64(21.5))],
        nothing_there: modbus(free_port()).0,
    });
    // S7: 21.5 as REAL at DB1.DBD4.
    let ps = PySnap7::start(
        &json!({"areas": [{"area": "DB", "index": 1, "size": 16, "values": [{"offset": 4, "type": "REAL", "value": 21.5}]}]}),
    );
    let (factory, registry) = s7(ps.port);
    out.push(Case {
        name: "s7",
        factory,
        registry,
        peer: Box::new(ps),
        expect: vec![("dut.f", Value::F64(21.5))],
        nothing_there: s7(free_port()).0,
    });
    // CoAP: /temp serves "21.5".
    let pc = PyCoap::start();
    let (factory, registry) = coap(pc.port);
    out.push(Case {
        name: "coap",
        factory,
        registry,
        peer: Box::new(pc),
        expect: vec![("dut.f", Value::F64(21.5))],
        nothing_there: coap(free_port()).0,
    });
    // MQTT sensors: "21.5" published on conf/l1/temp every 100 ms.
    let pq = MqttPeer::new();
    let (factory, registry) = mqtt(pq.broker.port);
    out.push(Case {
        name: "mqtt",
        factory,
        registry,
        peer: Box::new(pq),
        expect: vec![("l1.f", Value::F64(21.5))],
        nothing_there: mqtt(free_port()).0,
    });
    // OPC UA: Line1.Double of the asyncua server is 21.25.
    let po = PyOpcua::start();
    let (factory, registry) = opcua(po.port);
    out.push(Case {
        name: "opcua",
        factory,
        registry,
        peer: Box::new(po),
        expect: vec![("dut.f", Value::F64(21.25))],
        nothing_there: opcua(free_port()).0,
    });
    out
}

/// Runs the driver like the supervisor: retry 200 ms after a failed attempt;
/// records the kinds of the failures.
fn supervise(
    f: Arc<dyn DriverFactory>,
    ctx: DriverContext,
    kinds: Arc<std::sync::Mutex<Vec<ErrorKind>>>,
    attempts: Arc<AtomicU32>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            attempts.fetch_add(1, Ordering::Relaxed);
            let run = tokio::spawn(f.create().expect("driver").run(ctx.clone()));
            match run.await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => kinds.lock().expect("mutex").push(e.kind),
                Err(p) => panic!("the driver panicked: {p}"),
            }
            tokio::select! {
                _ = ctx.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    })
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_driver_passes_the_conformance_suite() {
    for mut c in cases().await {
        let name = c.name;
        let sink = Arc::new(CollectSink::new());
        let cancel = CancellationToken::new();
        let ctx = DriverContext::new("dut".into(), sink.clone(), cancel.clone(), Clock::system());
        let kinds = Arc::new(std::sync::Mutex::new(Vec::new()));
        let attempts = Arc::new(AtomicU32::new(0));
        let task = supervise(c.factory.clone(), ctx, kinds.clone(), attempts.clone());
        let ids: Vec<_> = c
            .expect
            .iter()
            .map(|(n, v)| (c.registry.get(n).expect("signal"), *v))
            .collect();
        let latest_good = |sink: &CollectSink| {
            let s = sink.samples();
            ids.iter().all(|(id, v)| {
                s.iter()
                    .rev()
                    .find(|x| x.signal == *id)
                    .is_some_and(|x| x.quality.is_good() && x.value == *v)
            })
        };
        // 1. Values exactly as served.
        wait_until(&format!("{name}: values"), Duration::from_secs(15), || {
            latest_good(&sink)
        })
        .await;
        // 2. Peer gone: bad quality or retryable failures; never Config/Fatal.
        c.peer.stop();
        let before = sink.len();
        wait_until(
            &format!("{name}: the outage noticed"),
            Duration::from_secs(20),
            || {
                let s = sink.samples();
                let bad = s[before.min(s.len())..]
                    .iter()
                    .any(|x| ids.iter().any(|(id, _)| x.signal == *id) && !x.quality.is_good());
                bad || !kinds.lock().expect("mutex").is_empty()
            },
        )
        .await;
        // 3. Peer back: values again.
        c.peer.start();
        let n = sink.len();
        wait_until(
            &format!("{name}: values after the restart"),
            Duration::from_secs(30),
            || sink.len() > n && latest_good(&sink),
        )
        .await;
        for k in kinds.lock().expect("mutex").iter() {
            assert!(k.is_retryable(), "{name}: a peer outage gave a {k:?} error");
        }
        // 4. Cancel: prompt, clean.
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .unwrap_or_else(|_| panic!("{name}: did not stop within 2 s of cancel"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // 5. Nothing there: the first attempt fails retryably or reports bad quality.
        let sink = Arc::new(CollectSink::new());
        let cancel = CancellationToken::new();
        let ctx = DriverContext::new("dut".into(), sink.clone(), cancel.clone(), Clock::system());
        let run = tokio::spawn(c.nothing_there.create().expect("driver").run(ctx));
        tokio::time::sleep(Duration::from_secs(2)).await;
        if run.is_finished() {
            let r = run
                .await
                .unwrap_or_else(|e| panic!("{name}: panicked: {e}"));
            let e = r.expect_err("an attempt against nothing cannot succeed");
            assert!(
                e.kind.is_retryable(),
                "{name}: nothing listening gave {:?}: {e}",
                e.kind
            );
        } else {
            // Still trying (UDP, or a subscriber waiting to connect): it must say so
            // in its samples if it has any, and stop on cancel.
            assert!(
                sink.samples().iter().all(|s| !s.quality.is_good()
                    || c.registry.name(s.signal).contains(".comm.")
                    || c.registry.name(s.signal).contains(".mqtt.")),
                "{name}: good values from nothing"
            );
            cancel.cancel();
            let r = tokio::time::timeout(Duration::from_secs(2), run)
                .await
                .expect("prompt")
                .expect("no panic");
            assert!(r.is_ok(), "{name}: {r:?}");
        }
        eprintln!(
            "conformance: {name} passed ({} attempts)",
            attempts.load(Ordering::Relaxed)
        );
    }
}
