//! Modbus RTU against pymodbus: several slaves on one serial line (a socat pty
//! pair), a dead slave that does not stall the others (per-slave backoff), string
//! tags as text events, and RTU framing over TCP (serial-to-Ethernet gateways).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use edge_agent_tests::{PtyPair, PyModbus};
use edge_driver_api::{
    BadReason, Clock, DriverContext, DriverEvent, DriverFactory, EventKind, EventSink, Quality,
    SignalRegistry,
};
use edge_driver_modbus::ModbusConfig;
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
struct Events(Mutex<Vec<(String, DriverEvent)>>);

impl EventSink for Events {
    fn try_send(&self, driver: &str, ev: DriverEvent) -> bool {
        self.0
            .lock()
            .expect("test mutex")
            .push((driver.to_string(), ev));
        true
    }
}

fn factory(toml: &str) -> (edge_driver_modbus::ModbusFactory, SignalRegistry) {
    let cfg = edge_driver_api::testing::parse_section(toml, |r| ModbusConfig::parse(r, "bus"));
    let reg = edge_driver_api::testing::registry(cfg.signals(), "bus");
    (cfg.into_factory(&reg).expect("factory"), reg)
}

use edge_driver_api::testing::samples_of as of;

fn spec(transport: &str, device: Option<&std::path::Path>) -> serde_json::Value {
    json!({
        "transport": transport,
        "device": device.map(|d| d.display().to_string()),
        "units": [1, 2],
        "silent_missing": true,
        "tags": [
            {"area": "holding", "address": 0, "type": "f32", "order": "CDAB", "value": 12.5},
            {"area": "holding", "address": 2, "type": "i16", "value": -42},
            {"area": "input", "address": 10, "type": "u32", "value": 3_000_000_000u64},
            {"area": "holding", "address": 20, "type": "string", "length": 5, "order": "BADC", "value": "Batch 7"},
        ]
    })
}

const TAGS: &str = r#"
[[tags]]
name = "s1.flow"
address = 0
area = "holding"
type = "f32"
order = "CDAB"
unit_id = 1
[[tags]]
name = "s1.level"
address = 2
area = "holding"
type = "i16"
unit_id = 1
[[tags]]
name = "s2.energy"
address = 10
area = "input"
type = "u32"
unit_id = 2
[[tags]]
name = "s2.batch"
address = 20
area = "holding"
type = "string"
length = 5
order = "BADC"
unit_id = 2
[[tags]]
name = "s9.dead"
address = 0
area = "holding"
unit_id = 9
"#;

async fn run_and_check(toml: String) {
    let (f, reg) = factory(&toml);
    let sink = Arc::new(edge_driver_api::testing::CollectSink::new());
    let events = Arc::new(Events::default());
    let cancel = CancellationToken::new();
    let ctx = DriverContext::new("bus".into(), sink.clone(), cancel.clone(), Clock::system())
        .with_events(events.clone());
    let task = tokio::spawn(f.create().expect("driver").run(ctx));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let samples = sink.samples();
    let flow = of(&samples, &reg, "s1.flow");
    let energy = of(&samples, &reg, "s2.energy");
    // The live slaves kept being polled while the dead one timed out (backed off).
    assert!(flow.len() >= 12, "{} flow samples in 4 s", flow.len());
    assert!(flow.iter().all(|s| s.value.as_f64() == 12.5), "{flow:?}");
    assert_eq!(
        of(&samples, &reg, "s1.level")
            .last()
            .map(|s| s.value.as_f64()),
        Some(-42.0)
    );
    assert_eq!(
        energy.last().map(|s| s.value.as_f64()),
        Some(3_000_000_000.0)
    );
    let dead = of(&samples, &reg, "s9.dead");
    assert!(
        !dead.is_empty()
            && dead
                .iter()
                .all(|s| s.quality == Quality::Bad(BadReason::Timeout)),
        "{dead:?}"
    );
    // The dead slave was asked rarely: 1 s, 2 s backoff → at most 3 timeouts.
    let timeouts = of(&samples, &reg, "bus.comm.timeouts")
        .last()
        .map(|s| s.value.as_f64());
    assert!(
        timeouts.is_some_and(|t| (1.0..=3.0).contains(&t)),
        "{timeouts:?}"
    );
    // A dead slave among live ones is that slave's problem, not the link's: the
    // link stays healthy and keeps its poll rate.
    let health = of(&samples, &reg, "bus.comm.health")
        .last()
        .map(|s| s.value.as_f64());
    assert!(health.is_some_and(|h| h >= 90.0), "{health:?}");
    let poll = of(&samples, &reg, "bus.comm.poll_s")
        .last()
        .map(|s| s.value.as_f64());
    assert_eq!(poll, Some(0.1));
    // The string tag: one event (unchanged afterwards).
    let ev = events.0.lock().expect("test mutex").clone();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].1.kind, EventKind::Text("Batch 7".into()));
    assert_eq!(ev[0].1.signal, reg.get("s2.batch").expect("signal"));
    cancel.cancel();
    let res = tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("exits promptly")
        .expect("no panic");
    assert!(res.is_ok(), "{res:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_slaves_on_a_serial_line_and_a_dead_one_does_not_stall_them() {
    let pty = PtyPair::new();
    let _server = PyModbus::start(&spec("rtu", Some(&pty.b)));
    let toml = format!(
        "transport = \"rtu\"\ndevice = \"{}\"\nbaud = 19200\nparity = \"none\"\npoll = \"100ms\"\ntimeout = \"300ms\"\nslave_backoff = \"1s\"\n{TAGS}",
        pty.a.display()
    );
    run_and_check(toml).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_framing_over_tcp_reads_the_same_values() {
    let server = PyModbus::start(&spec("rtu_over_tcp", None));
    let toml = format!(
        "transport = \"rtu_over_tcp\"\nhost = \"127.0.0.1\"\nport = {}\npoll = \"100ms\"\ntimeout = \"300ms\"\nslave_backoff = \"1s\"\n{TAGS}",
        server.port
    );
    run_and_check(toml).await;
}
