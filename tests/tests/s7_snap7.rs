//! The S7 driver against python-snap7's server (the C Snap7 library — an independent
//! implementation): every data type read exactly as served from DB, M, I and Q;
//! many tags packed into few PDUs; bad addresses as bad quality for that tag only;
//! a PLC that disappears and returns; prompt exit on cancel; writes and STRINGs
//! through the client.

use std::sync::Arc;
use std::time::Duration;

use edge_agent_tests::PySnap7;
use edge_driver_api::{
    BadReason, Clock, DriverContext, DriverFactory, ErrorKind, Quality, Sample, SignalRegistry,
    Value,
};
use edge_driver_s7::codec::{ItemError, ItemSpec};
use edge_driver_s7::{ConnectParams, ConnectionType, S7Client, S7Config, rack_slot_tsap};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// (type, offset in DB1, served value, expected sample value)
fn db1_values() -> Vec<(&'static str, usize, serde_json::Value, f64)> {
    vec![
        ("BYTE", 0, json!(254), 254.0),
        ("CHAR", 1, json!(65), 65.0),
        ("SINT", 2, json!(-100), -100.0),
        ("USINT", 3, json!(200), 200.0),
        ("WORD", 4, json!(65_000), 65_000.0),
        ("UINT", 6, json!(54_321), 54_321.0),
        ("INT", 8, json!(-12_345), -12_345.0),
        ("DWORD", 10, json!(4_000_000_000u64), 4_000_000_000.0),
        ("UDINT", 14, json!(3_000_000_001u64), 3_000_000_001.0),
        ("DINT", 18, json!(-2_000_000_001), -2_000_000_001.0),
        ("REAL", 22, json!(21.75), 21.75),
        ("LREAL", 26, json!(-98_765.432_1), -98_765.432_1),
        ("TIME", 34, json!(-86_400_000), -86_400_000.0),
        // 2026-11-22 05:01:19.123 → Unix seconds (PLC local time, unzoned).
        (
            "DATE_AND_TIME",
            38,
            json!("2026-11-22 05:01:19.123"),
            1_795_323_679.123,
        ),
    ]
}

fn address(ty: &str, off: usize) -> String {
    match ty {
        "BYTE" | "CHAR" | "SINT" | "USINT" | "LREAL" | "DATE_AND_TIME" => format!("DB1.DBB{off}"),
        "WORD" | "UINT" | "INT" => format!("DB1.DBW{off}"),
        _ => format!("DB1.DBD{off}"),
    }
}

fn spec() -> serde_json::Value {
    let mut db1: Vec<serde_json::Value> = db1_values()
        .into_iter()
        .map(|(ty, off, v, _)| json!({"offset": off, "type": ty, "value": v}))
        .collect();
    db1.push(json!({"offset": 46, "bit": 3, "type": "BOOL", "value": true}));
    db1.push(json!({"offset": 48, "type": "STRING", "max": 16, "value": "Presse Süd 3"}));
    // DB2: 100 REALs, 8 bytes apart (scattered tags for the packing test).
    let db2: Vec<serde_json::Value> = (0..100)
        .map(|i| json!({"offset": i * 8, "type": "REAL", "value": i as f64 * 1.5}))
        .collect();
    json!({"areas": [
        {"area": "DB", "index": 1, "size": 80, "values": db1},
        {"area": "DB", "index": 2, "size": 800, "values": db2},
        {"area": "MK", "size": 64, "values": [
            {"offset": 10, "type": "INT", "value": -7},
            {"offset": 0, "bit": 1, "type": "BOOL", "value": true},
            {"offset": 20, "type": "REAL", "value": 3.25}]},
        {"area": "PE", "size": 16, "values": [
            {"offset": 0, "bit": 0, "type": "BOOL", "value": true},
            {"offset": 2, "type": "WORD", "value": 4660}]},
        {"area": "PA", "size": 16, "values": [
            {"offset": 1, "bit": 7, "type": "BOOL", "value": true},
            {"offset": 4, "type": "DINT", "value": 123456}]},
    ]})
}

type Expected = Vec<(String, Option<f64>, Quality)>;

fn driver_toml(port: u16) -> (String, Expected) {
    let mut toml = format!(
        "host = \"127.0.0.1\"\nport = {port}\nrack = 0\nslot = 1\npoll = \"100ms\"\ntimeout = \"500ms\"\nmax_gap = 0\n"
    );
    let mut expect = Vec::new();
    let mut tag = |name: &str, addr: &str, ty: Option<&str>, want: Option<f64>, q: Quality| {
        toml += &format!("[[tags]]\nname = \"{name}\"\naddress = \"{addr}\"\n");
        if let Some(ty) = ty {
            toml += &format!("type = \"{ty}\"\n");
        }
        expect.push((name.to_string(), want, q));
    };
    for (ty, off, _, want) in db1_values() {
        tag(
            &format!("plc.db1.{ty}"),
            &address(ty, off),
            Some(ty),
            Some(want),
            Quality::Good,
        );
    }
    let good = Quality::Good;
    tag("plc.db1.bool", "DB1.DBX46.3", None, Some(1.0), good);
    tag("plc.db1.bool_off", "DB1.DBX46.2", None, Some(0.0), good);
    tag("plc.m.int", "MW10", Some("INT"), Some(-7.0), good);
    tag("plc.m.bit", "M0.1", None, Some(1.0), good);
    tag("plc.m.real", "MD20", Some("REAL"), Some(3.25), good);
    tag("plc.i.bit", "E0.0", None, Some(1.0), good);
    tag("plc.i.word", "IW2", None, Some(4660.0), good);
    tag("plc.q.bit", "A1.7", None, Some(1.0), good);
    tag("plc.q.dint", "QD4", Some("DINT"), Some(123_456.0), good);
    for i in 0..100 {
        tag(
            &format!("plc.db2.r{i}"),
            &format!("DB2.DBD{}", i * 8),
            Some("REAL"),
            Some(i as f64 * 1.5),
            good,
        );
    }
    // A DB that does not exist, and a read past the end of DB1 merged with a good
    // neighbour (which must stay good: the driver splits the refused read).
    tag("plc.db1.w76", "DB1.DBW76", None, Some(0.0), good);
    let missing = Quality::Bad(BadReason::DeviceException(0x0A));
    tag("plc.db99", "DB99.DBW0", None, None, missing);
    tag(
        "plc.db1.past_end",
        "DB1.DBD78",
        Some("REAL"),
        None,
        Quality::Bad(BadReason::DeviceException(0x05)),
    );
    (toml, expect)
}

fn factory(toml: &str) -> (edge_driver_s7::S7Factory, SignalRegistry, S7Config) {
    let cfg = edge_driver_api::testing::parse_section(toml, |r| S7Config::parse(r, "plc"));
    let reg = edge_driver_api::testing::registry(cfg.signals(), "plc");
    (cfg.clone().into_factory(&reg).expect("factory"), reg, cfg)
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
async fn reads_every_type_and_area_exactly_as_snap7_serves_them() {
    let port = edge_agent_tests::free_port();
    let mut server = PySnap7::start_on(port, &spec());
    let (toml, expect) = driver_toml(port);
    let (f, reg, cfg) = factory(&toml);
    let (tags, requests) = cfg.request_counts(480);
    assert_eq!(tags, expect.len());
    // 127 tags as 127 items (max_gap 0), at most 20 items per request.
    assert!(requests <= 8, "{requests} requests for {tags} tags");
    let sink = Arc::new(edge_driver_api::testing::CollectSink::new());
    let cancel = CancellationToken::new();
    let ctx = DriverContext::new("plc".into(), sink.clone(), cancel.clone(), Clock::system());
    let task = tokio::spawn(f.create().expect("driver").run(ctx.clone()));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    {
        let samples = sink.samples();
        for (name, want, quality) in &expect {
            let s = last(&samples, &reg, name);
            assert_eq!(s.quality, *quality, "{name}");
            if let Some(w) = want {
                assert_eq!(s.value.as_f64(), *w, "{name}");
            }
        }
        assert_eq!(
            last(&samples, &reg, "plc.db1.bool").value,
            Value::Bool(true)
        );
        // Item errors are answers, not link failures.
        assert_eq!(
            last(&samples, &reg, "plc.comm.success_ratio")
                .value
                .as_f64(),
            1.0
        );
        let health = last(&samples, &reg, "plc.comm.health")
            .usable_f64()
            .expect("health");
        assert!(health >= 95.0, "{health}");
        assert!(
            last(&samples, &reg, "plc.comm.exceptions")
                .usable_f64()
                .is_some_and(|n| n >= 2.0)
        );
    }
    // A value changes in the PLC: the next poll reads it.
    server.set("DB", 1, 22, &55.5f32.to_be_bytes());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        last(&sink.samples(), &reg, "plc.db1.REAL").value.as_f64(),
        55.5
    );

    // The PLC disappears: the attempt fails as Transient, tags go bad.
    server.stop();
    let res = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("driver notices")
        .expect("no panic");
    assert_eq!(res.expect_err("connection lost").kind, ErrorKind::Transient);
    assert!(
        !last(&sink.samples(), &reg, "plc.db1.REAL")
            .quality
            .is_good()
    );
    let down = tokio::time::timeout(
        Duration::from_secs(5),
        f.create().expect("driver").run(ctx.clone()),
    )
    .await
    .expect("connect attempt ends");
    assert_eq!(down.expect_err("refused").kind, ErrorKind::Transient);
    // It returns: a new attempt reads again.
    server.spawn();
    let before = sink.len();
    let task = tokio::spawn(f.create().expect("driver").run(ctx.clone()));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let samples = sink.samples();
    assert!(samples.len() > before);
    assert_eq!(last(&samples, &reg, "plc.db2.r99").value.as_f64(), 148.5);
    assert!(
        last(&samples, &reg, "plc.comm.connects")
            .usable_f64()
            .is_some_and(|n| n >= 2.0)
    );
    let health = last(&samples, &reg, "plc.comm.health")
        .usable_f64()
        .expect("health");
    assert!(health < 100.0, "the outage costs health: {health}");
    // Cancel: exits promptly.
    cancel.cancel();
    let res = tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("exits promptly")
        .expect("no panic");
    assert!(res.is_ok());
}

async fn connect(port: u16) -> S7Client<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tcp");
    let params = ConnectParams {
        local_tsap: 0x0100,
        remote_tsap: rack_slot_tsap(ConnectionType::Pg, 0, 1),
        pdu_size: 480,
        timeout: Duration::from_secs(2),
    };
    tokio::time::timeout(Duration::from_secs(5), S7Client::connect(stream, params))
        .await
        .expect("in time")
        .expect("connects")
}

#[tokio::test]
async fn client_reads_strings_and_writes_values_back() {
    let server = PySnap7::start(&spec());
    let mut c = connect(server.port).await;
    assert_eq!(c.negotiated().pdu_size, 480);
    let mut out = Vec::new();
    let data = c
        .read(
            &[ItemSpec::bytes(edge_driver_s7::Area::Db(1), 48, 18)],
            &mut out,
        )
        .await
        .expect("read")
        .to_vec();
    let range = out[0].clone().expect("item ok");
    let v =
        edge_driver_s7::addr::decode_value(edge_driver_s7::DataType::String(16), 0, &data[range])
            .expect("string");
    assert_eq!(v, edge_driver_s7::S7Value::Text("Presse Süd 3".into()));
    // Write an INT and a bit, read them back.
    let mut res = Vec::new();
    let bit = ItemSpec {
        area: edge_driver_s7::Area::Flags,
        kind: edge_driver_s7::codec::ItemKind::Bit,
        start: 5,
        bit: 6,
        len: 1,
    };
    let int = ItemSpec::bytes(edge_driver_s7::Area::Db(1), 8, 2);
    let missing = ItemSpec::bytes(edge_driver_s7::Area::Db(99), 0, 2);
    c.write(
        &[
            (int, &(-4242i16).to_be_bytes()),
            (bit, &[1]),
            (missing, &[0, 0]),
        ],
        &mut res,
    )
    .await
    .expect("write");
    assert_eq!(res[0], Ok(()));
    assert_eq!(res[1], Ok(()));
    assert!(matches!(res[2], Err(ItemError(_))), "{res:?}");
    let data = c
        .read(
            &[int, ItemSpec::bytes(edge_driver_s7::Area::Flags, 5, 1)],
            &mut out,
        )
        .await
        .expect("read back")
        .to_vec();
    assert_eq!(
        &data[out[0].clone().expect("ok")],
        &(-4242i16).to_be_bytes()
    );
    assert_eq!(data[out[1].clone().expect("ok")][0], 1 << 6);
    c.close().await;
}
