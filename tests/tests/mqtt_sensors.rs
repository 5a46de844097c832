//! The MQTT sensor driver against Mosquitto: named wildcards into signal templates,
//! plain numbers, JSON pointers with a timestamp, SenML, text, garbage and NaN,
//! unmapped names counted, broker restart → reconnect and resubscribe, prompt cancel.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use edge_agent_tests::{Mosquitto, free_port};
use edge_driver_api::{
    BadReason, Clock, DriverContext, DriverEvent, DriverFactory, EventKind, EventSink, Quality,
    SignalRegistry, Value,
};
use edge_driver_mqtt::MqttConfig;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
struct Events(Mutex<Vec<DriverEvent>>);
impl EventSink for Events {
    fn try_send(&self, _driver: &str, ev: DriverEvent) -> bool {
        self.0.lock().expect("test mutex").push(ev);
        true
    }
}

/// Names an agent config would intern (assets using them).
const USED: [&str; 7] = [
    "l1.m1.temp",
    "l1.m2.temp",
    "l1.env.temp",
    "l1.env.hum",
    "d7.hum",
    "d7.temp",
    "l1.m1.state",
];

fn toml(port: u16) -> String {
    format!(
        r#"
host = "127.0.0.1"
port = {port}
[[subscriptions]]
topic = "plant/+line/+machine/temp"
signal = "{{line}}.{{machine}}.temp"
unit = "°C"
[[subscriptions]]
topic = "plant/+line/+machine/state"
format = "text"
signal = "{{line}}.{{machine}}.state"
[[subscriptions]]
topic = "plant/+line/env"
format = "json"
timestamp = "/ts"
timestamp_unit = "ms"
values = [{{ pointer = "/temp", signal = "{{line}}.env.temp" }}, {{ pointer = "/hum", signal = "{{line}}.env.hum" }}]
[[subscriptions]]
topic = "senml/+dev"
format = "senml"
signal = "{{dev}}.{{name}}"
"#
    )
}

fn factory(port: u16) -> (edge_driver_mqtt::MqttFactory, SignalRegistry) {
    let src = toml(port);
    let cfg = edge_driver_api::testing::parse_section(&src, |r| MqttConfig::parse(r, "sensors"));
    let mut reg = edge_driver_api::testing::registry(cfg.signals(), "sensors");
    let patterns = cfg.patterns();
    for n in USED {
        let p = patterns
            .iter()
            .find(|p| p.matches(n))
            .expect("a template makes it");
        reg.intern(&p.decl(n), "sensors").expect("unique");
    }
    (cfg.into_factory(&reg).expect("factory"), reg)
}

use edge_driver_api::testing::samples_of as of;

async fn publisher(port: u16) -> AsyncClient {
    let mut opts = MqttOptions::new(format!("pub-{}", free_port()), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut ev) = AsyncClient::new(opts, 1000);
    tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    client
}

async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_payloads_become_signals_through_topic_templates() {
    let mut broker = Mosquitto::start();
    let (f, reg) = factory(broker.port);
    let sink = Arc::new(edge_driver_api::testing::CollectSink::new());
    let events = Arc::new(Events::default());
    let cancel = CancellationToken::new();
    let ctx = DriverContext::new(
        "sensors".into(),
        sink.clone(),
        cancel.clone(),
        Clock::system(),
    )
    .with_events(events.clone());
    let task = tokio::spawn(f.create().expect("driver").run(ctx));
    wait_for("connect", 10, || {
        of(&sink.samples(), &reg, "sensors.mqtt.connects")
            .last()
            .is_some_and(|s| s.value.as_f64() >= 1.0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the SUBACK
    let p = publisher(broker.port).await;
    let q = QoS::AtLeastOnce;
    p.publish("plant/l1/m1/temp", q, false, "21.5")
        .await
        .expect("pub");
    p.publish("plant/l1/m2/temp", q, false, " 22 ")
        .await
        .expect("pub");
    p.publish("plant/l1/m1/temp", q, false, "NaN")
        .await
        .expect("pub");
    p.publish("plant/l1/m9/temp", q, false, "30")
        .await
        .expect("pub"); // nobody uses l1.m9.temp
    p.publish("plant/l1/m2/temp", q, false, "warm")
        .await
        .expect("pub"); // garbage
    p.publish(
        "plant/l1/env",
        q,
        false,
        r#"{"temp": 19.25, "hum": 41, "ts": 1795000000123}"#,
    )
    .await
    .expect("pub");
    p.publish(
        "senml/d7",
        q,
        false,
        r#"[{"bn":"","n":"hum","v":40.5},{"n":"temp","v":18.0,"u":"Cel"}]"#,
    )
    .await
    .expect("pub");
    p.publish("plant/l1/m1/state", q, false, "running")
        .await
        .expect("pub");
    p.publish("plant/l1/env", q, false, "{not json")
        .await
        .expect("pub");
    wait_for("every message", 10, || {
        of(&sink.samples(), &reg, "sensors.mqtt.messages")
            .last()
            .is_some_and(|s| s.value.as_f64() >= 9.0)
    })
    .await;
    let samples = sink.samples();
    let m1 = of(&samples, &reg, "l1.m1.temp");
    assert_eq!(m1[0].value, Value::F64(21.5));
    assert_eq!(m1[1].quality, Quality::Bad(BadReason::NotFinite));
    assert_eq!(of(&samples, &reg, "l1.m2.temp")[0].value, Value::F64(22.0));
    let env = of(&samples, &reg, "l1.env.temp");
    assert_eq!(env[0].value, Value::F64(19.25));
    assert_eq!(
        env[0].ts.wall_ns, 1_795_000_000_123_000_000,
        "the payload's time"
    );
    assert_eq!(of(&samples, &reg, "l1.env.hum")[0].value, Value::F64(41.0));
    assert_eq!(of(&samples, &reg, "d7.hum")[0].value, Value::F64(40.5));
    assert_eq!(of(&samples, &reg, "d7.temp")[0].value, Value::F64(18.0));
    let ev = events.0.lock().expect("test mutex").clone();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].kind, EventKind::Text("running".into()));
    let stat = |n: &str| {
        of(&sink.samples(), &reg, n)
            .last()
            .map(|s| s.value.as_f64())
    };
    wait_for("stats", 5, || {
        stat("sensors.mqtt.bad_payloads") == Some(2.0)
    })
    .await;
    assert_eq!(stat("sensors.mqtt.unmapped"), Some(1.0));

    // The broker restarts: the driver fails as Transient (the supervisor would
    // restart it); a new attempt connects and resubscribes.
    broker.restart();
    let res = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("notices")
        .expect("no panic");
    assert_eq!(
        res.expect_err("connection lost").kind,
        edge_driver_api::ErrorKind::Transient
    );
    let ctx = DriverContext::new(
        "sensors".into(),
        sink.clone(),
        cancel.clone(),
        Clock::system(),
    );
    let task = tokio::spawn(f.create().expect("driver").run(ctx));
    wait_for("reconnect", 10, || {
        stat("sensors.mqtt.connects") == Some(2.0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p = publisher(broker.port).await;
    p.publish("plant/l1/m1/temp", q, false, "23.75")
        .await
        .expect("pub");
    wait_for("a value after the restart", 10, || {
        of(&sink.samples(), &reg, "l1.m1.temp")
            .last()
            .is_some_and(|s| s.value == Value::F64(23.75))
    })
    .await;
    cancel.cancel();
    let res = tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("prompt")
        .expect("no panic");
    assert!(res.is_ok());
}

#[test]
fn assets_can_window_names_made_by_topic_templates() {
    let src = format!(
        r#"
[agent]
id = "gw"
[[drivers]]
name = "sensors"
kind = "mqtt"
{}
[[assets]]
name = "m1"
[[assets.signals]]
signal = "l1.m1.temp"
[[assets.detectors]]
name = "hot"
kind = "threshold"
signal = "l1.m1.temp"
warning = 60.0
"#,
        toml(1883).replace("[[subscriptions]]", "[[drivers.subscriptions]]")
    );
    let cfg = edge_agent_tests::config("mqtt.toml", &src);
    let id = cfg
        .registry
        .get("l1.m1.temp")
        .expect("interned from the template");
    assert_eq!(&*cfg.registry.meta(id).driver, "sensors");
    assert_eq!(cfg.registry.meta(id).unit.as_deref(), Some("°C"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensors_are_read_over_mutual_tls() {
    let dir = edge_agent_tests::TempDir::new("mqtt-sensors-tls");
    let pki = edge_agent_tests::TestPki::generate(dir.path());
    let (broker, tls_port) = Mosquitto::start_with_tls(&pki, true);
    let src = format!(
        "host = \"127.0.0.1\"\nport = {tls_port}\nserver_name = \"localhost\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n[[subscriptions]]\ntopic = \"plant/+line/+machine/temp\"\nsignal = \"{{line}}.{{machine}}.temp\"\n",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let cfg = edge_driver_api::testing::parse_section(&src, |r| MqttConfig::parse(r, "sensors"));
    let mut reg = edge_driver_api::testing::registry(cfg.signals(), "sensors");
    let p = cfg.patterns()[0].clone();
    reg.intern(&p.decl("l1.m1.temp"), "sensors")
        .expect("unique");
    let f = cfg.into_factory(&reg).expect("factory");
    let sink = Arc::new(edge_driver_api::testing::CollectSink::new());
    let cancel = CancellationToken::new();
    let ctx = DriverContext::new(
        "sensors".into(),
        sink.clone(),
        cancel.clone(),
        Clock::system(),
    );
    let task = tokio::spawn(f.create().expect("driver").run(ctx));
    wait_for("a TLS connection", 10, || {
        of(&sink.samples(), &reg, "sensors.mqtt.connects")
            .last()
            .is_some_and(|s| s.value.as_f64() >= 1.0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The publisher uses the plain listener of the same broker.
    let p = publisher(broker.port).await;
    p.publish("plant/l1/m1/temp", QoS::AtLeastOnce, false, "42.25")
        .await
        .expect("pub");
    wait_for("the value over TLS", 10, || {
        of(&sink.samples(), &reg, "l1.m1.temp")
            .last()
            .is_some_and(|s| s.value == Value::F64(42.25))
    })
    .await;
    cancel.cancel();
    let res = tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("prompt")
        .expect("no panic");
    assert!(res.is_ok());
}
