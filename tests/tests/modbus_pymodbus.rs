//! The Modbus TCP driver against pymodbus: every data type in every word order read
//! exactly as served, coils and discrete inputs, exceptions as bad quality for the
//! affected tags only, peer restart → reconnect, prompt exit on cancel.

use std::sync::Arc;
use std::time::Duration;

use edge_agent_tests::PyModbus;
use edge_driver_api::{
    BadReason, Clock, DriverContext, DriverFactory, ErrorKind, Quality, Sample, SignalRegistry,
};
use edge_driver_modbus::ModbusConfig;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const TYPES: [&str; 8] = ["u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64"];
const ORDERS: [&str; 4] = ["ABCD", "CDAB", "BADC", "DCBA"];

fn value_for(ty: &str, i: usize) -> f64 {
    match ty {
        "u16" => 40_000.0 + i as f64,
        "i16" => -12_345.0 - i as f64,
        "u32" => 3_000_000_000.0 + i as f64,
        "i32" => -2_000_000_000.0 + i as f64,
        "u64" => 9_007_199_254_740_000.0 + i as f64,
        "i64" => -9_007_199_254_740_000.0 - i as f64,
        "f32" => 1234.5 + i as f64 * 0.25,
        _ => -98_765.432_1 - i as f64,
    }
}

fn width(ty: &str) -> usize {
    match ty {
        "u16" | "i16" => 1,
        "u32" | "i32" | "f32" => 2,
        _ => 4,
    }
}

/// Expected (tag name, value, quality).
type Expected = Vec<(String, Option<f64>, Quality)>;

/// (server spec, driver TOML, expected values per tag name)
fn scenario(port: u16) -> (serde_json::Value, String, Expected) {
    let mut tags = Vec::new();
    let mut toml = format!(
        "host = \"127.0.0.1\"\nport = {port}\nunit = 1\npoll = \"200ms\"\ntimeout = \"500ms\"\n"
    );
    let mut expect = Vec::new();
    let mut addr = 0usize;
    for (ti, ty) in TYPES.iter().enumerate() {
        for (oi, order) in ORDERS.iter().enumerate() {
            let v = value_for(ty, ti * 4 + oi);
            let area = if oi % 2 == 0 { "holding" } else { "input" };
            tags.push(
                json!({"area": area, "address": addr, "type": ty, "order": order, "value": v}),
            );
            let name = format!("plc.{ty}.{order}");
            toml += &format!(
                "[[tags]]\nname = \"{name}\"\narea = \"{area}\"\naddress = {addr}\ntype = \"{ty}\"\norder = \"{order}\"\n"
            );
            let want = if *ty == "f32" { (v as f32) as f64 } else { v };
            expect.push((name, Some(want), Quality::Good));
            addr += width(ty) + 1;
        }
    }
    // Scale and offset.
    tags.push(json!({"area": "holding", "address": 400, "type": "i16", "value": -215}));
    toml += "[[tags]]\nname = \"plc.scaled\"\narea = \"holding\"\naddress = 400\ntype = \"i16\"\nscale = 0.1\noffset = 273.15\nunit = \"K\"\n";
    expect.push((
        "plc.scaled".into(),
        Some(-215.0 * 0.1 + 273.15),
        Quality::Good,
    ));
    // Bits.
    tags.push(json!({"area": "coil", "address": 7, "type": "bool", "value": 1}));
    tags.push(json!({"area": "discrete", "address": 9, "type": "bool", "value": 1}));
    toml += "[[tags]]\nname = \"plc.coil7\"\narea = \"coil\"\naddress = 7\n";
    toml += "[[tags]]\nname = \"plc.coil8\"\narea = \"coil\"\naddress = 8\n";
    toml += "[[tags]]\nname = \"plc.di9\"\narea = \"discrete\"\naddress = 9\n";
    expect.push(("plc.coil7".into(), Some(1.0), Quality::Good));
    expect.push(("plc.coil8".into(), Some(0.0), Quality::Good));
    expect.push(("plc.di9".into(), Some(1.0), Quality::Good));
    // Past the end of the served block (addresses 0..999): exception 2, this tag only.
    toml += "[[tags]]\nname = \"plc.missing\"\narea = \"holding\"\naddress = 998\ntype = \"f64\"\n";
    expect.push((
        "plc.missing".into(),
        None,
        Quality::Bad(BadReason::DeviceException(2)),
    ));
    // A unit the server does not serve: exception 4, this tag only.
    toml += "[[tags]]\nname = \"plc.unit2\"\narea = \"holding\"\naddress = 0\nunit_id = 2\n";
    expect.push((
        "plc.unit2".into(),
        None,
        Quality::Bad(BadReason::DeviceException(4)),
    ));
    (json!({"unit": 1, "tags": tags}), toml, expect)
}

fn factory(
    toml: &str,
) -> (
    edge_driver_modbus::ModbusFactory,
    SignalRegistry,
    (usize, usize),
) {
    let cfg = edge_driver_api::testing::parse_section(toml, |r| ModbusConfig::parse(r, "plc"));
    let counts = cfg.request_counts();
    let reg = edge_driver_api::testing::registry(cfg.signals(), "plc");
    (cfg.into_factory(&reg).expect("factory"), reg, counts)
}

fn last(samples: &[Sample], reg: &SignalRegistry, name: &str) -> Sample {
    let id = reg.get(name).expect("registered");
    *samples
        .iter()
        .rev()
        .find(|s| s.signal == id)
        .unwrap_or_else(|| panic!("no sample for {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_every_type_and_word_order_exactly_as_pymodbus_serves_them() {
    let port = edge_agent_tests::free_port();
    let (spec, toml, expect) = scenario(port);
    let mut server = PyModbus::start_on(port, &spec);
    let (f, reg, (before, after)) = factory(&toml);
    assert_eq!(before, expect.len());
    // holding + input blocks, holding 400, holding 998, coils, discrete inputs, unit 2.
    assert_eq!(after, 7, "{after} requests for {before} tags");
    let sink = Arc::new(edge_driver_api::testing::CollectSink::new());
    let cancel = CancellationToken::new();
    let ctx = DriverContext::new("plc".into(), sink.clone(), cancel.clone(), Clock::system());
    let task = tokio::spawn(f.create().expect("driver").run(ctx.clone()));
    tokio::time::sleep(Duration::from_millis(900)).await;
    {
        let samples = sink.samples();
        for (name, want, quality) in &expect {
            let s = last(&samples, &reg, name);
            assert_eq!(s.quality, *quality, "{name}");
            if let Some(w) = want {
                assert_eq!(s.value.as_f64(), *w, "{name}");
            }
        }
        assert!(
            last(&samples, &reg, "plc.comm.rtt_ms")
                .usable_f64()
                .is_some_and(|r| r > 0.0)
        );
        assert!(
            last(&samples, &reg, "plc.comm.exceptions")
                .usable_f64()
                .is_some_and(|n| n >= 2.0)
        );
    }

    // Peer goes away: the driver fails as Transient (the supervisor would back off).
    server.stop();
    let res = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("driver notices")
        .expect("no panic");
    assert_eq!(res.expect_err("connection lost").kind, ErrorKind::Transient);
    // While it is down, a new attempt fails fast as Transient too.
    let down = tokio::time::timeout(
        Duration::from_secs(5),
        f.create().expect("driver").run(ctx.clone()),
    )
    .await
    .expect("connect attempt ends");
    assert_eq!(down.expect_err("refused").kind, ErrorKind::Transient);
    // Peer back: a new attempt reads again.
    server.spawn();
    let before = sink.len();
    let task = tokio::spawn(f.create().expect("driver").run(ctx.clone()));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let samples = sink.samples();
    assert!(samples.len() > before);
    assert_eq!(last(&samples, &reg, "plc.f32.CDAB").quality, Quality::Good);
    assert!(
        last(&samples, &reg, "plc.comm.connects")
            .usable_f64()
            .is_some_and(|n| n >= 2.0)
    );
    // Cancel: exits promptly.
    cancel.cancel();
    let res = tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("exits promptly")
        .expect("no panic");
    assert!(res.is_ok());
}
