//! What `edge-agent tags` says about tags that fail at the device, against
//! independent peers: a DB the S7 PLC (python-snap7) does not have, a resource the
//! CoAP server (aiocoap) does not serve, an OPC UA status code and node the
//! asyncua server does not have. Each is bad with the protocol's own words, and
//! only that tag; the others stay good.

use std::time::{Duration, Instant};

use edge_agent::RunOptions;
use edge_agent::ops::status::TagsReport;
use edge_agent_tests::{PyCoap, PySnap7, config};
use serde_json::json;

fn quality(r: &TagsReport, name: &str) -> (String, Option<String>) {
    let t = r
        .tags
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no {name} in {r:?}"));
    (t.quality.clone(), t.reason.clone())
}

/// The tags report once every one of `names` has been read (good or bad).
async fn read_all(handle: &edge_agent::AgentHandle, names: &[&str]) -> TagsReport {
    let start = Instant::now();
    loop {
        let r = handle.tags("");
        if names.iter().all(|n| quality(&r, n).0 != "no data") {
            return r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "tags never all read: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_s7_db_and_a_coap_404_are_bad_with_the_protocols_words() {
    let plc = PySnap7::start(&json!({"areas": [
        {"area": "DB", "index": 1, "size": 8, "values": [{"offset": 0, "type": "REAL", "value": 42.5}]}
    ]}));
    let coap = PyCoap::start();
    let toml = format!(
        r#"
[agent]
id = "gw"
control_socket = ""
[alerts]
console = false

[[drivers]]
name = "press"
kind = "s7"
host = "127.0.0.1"
port = {s7}
poll = "100ms"
timeout = "300ms"
[[drivers.tags]]
name = "press.temp"
address = "DB1.DBD0"
type = "REAL"
[[drivers.tags]]
name = "press.gone"
address = "DB99.DBW0"
type = "INT"

[[drivers]]
name = "field"
kind = "coap"
host = "127.0.0.1"
port = {coap}
ack_timeout = "200ms"
max_retransmit = 2
[[drivers.resources]]
path = "/temp"
poll = "200ms"
signal = "field.temp"
[[drivers.resources]]
path = "/missing"
poll = "200ms"
signal = "field.missing"
"#,
        s7 = plc.port,
        coap = coap.port
    );
    let handle =
        edge_agent::start(config("tags.toml", &toml), RunOptions::default()).expect("starts");
    let report = read_all(
        &handle,
        &["press.temp", "press.gone", "field.temp", "field.missing"],
    )
    .await;
    assert_eq!(quality(&report, "press.temp"), ("good".into(), None));
    assert_eq!(
        quality(&report, "press.gone"),
        (
            "bad".into(),
            Some("object does not exist (return code 0x0a)".into())
        )
    );
    assert_eq!(quality(&report, "field.temp"), ("good".into(), None));
    assert_eq!(
        quality(&report, "field.missing"),
        ("bad".into(), Some("4.04 Not Found".into()))
    );
    let addr = |n: &str| {
        report
            .tags
            .iter()
            .find(|t| t.name == n)
            .and_then(|t| t.address.clone())
    };
    assert_eq!(addr("press.gone").as_deref(), Some("DB99.DBW0 Int"));
    assert_eq!(addr("field.missing").as_deref(), Some("/missing"));
    tokio::time::timeout(Duration::from_secs(20), handle.stop())
        .await
        .expect("stops in time")
        .expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opcua_status_codes_and_unknown_nodes_are_bad_with_their_names() {
    let server = edge_agent_tests::PyOpcua::start();
    let toml = format!(
        r#"
[agent]
id = "gw"
control_socket = ""
[alerts]
console = false

[[drivers]]
name = "ua"
kind = "opcua"
endpoint = "{endpoint}"
publishing_interval = "100ms"
[[drivers.tags]]
name = "ua.temp"
node = "ns=2;s=Line1.Double"
[[drivers.tags]]
name = "ua.broken"
node = "ns=2;s=Line1.Broken"
[[drivers.tags]]
name = "ua.gone"
node = "ns=2;s=Line1.Gone"
[[drivers.tags]]
name = "ua.state"
node = "ns=2;s=Line1.String"
type = "text"
"#,
        endpoint = server.endpoint()
    );
    let handle =
        edge_agent::start(config("ua.toml", &toml), RunOptions::default()).expect("starts");
    let report = read_all(&handle, &["ua.temp", "ua.broken", "ua.gone"]).await;
    assert_eq!(quality(&report, "ua.temp"), ("good".into(), None));
    assert_eq!(
        quality(&report, "ua.broken"),
        ("bad".into(), Some("BadSensorFailure (0x808c)".into()))
    );
    assert_eq!(
        quality(&report, "ua.gone"),
        ("bad".into(), Some("BadNodeIdUnknown (0x8034)".into()))
    );
    let t = report
        .tags
        .iter()
        .find(|t| t.name == "ua.gone")
        .and_then(|t| t.address.clone());
    assert_eq!(t.as_deref(), Some("ns=2;s=Line1.Gone"));
    tokio::time::timeout(Duration::from_secs(20), handle.stop())
        .await
        .expect("stops in time")
        .expect("clean stop");
}
