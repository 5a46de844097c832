//! The feedback loop end to end: an alert raised by the real agent is labelled
//! with `edge-agent alerts label` (the real binary, over the control socket); the
//! label, with the alert and its features, lands in the local dataset and on the
//! broker's `{prefix}/{agent}/labels` topic through the journal (Mosquitto).

use std::time::Duration;

use edge_agent_tests::{Mosquitto, Subscriber, TempDir, agent_bin, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_reaches_the_dataset_and_the_broker_with_its_alert() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "sub-labels", "edge/#").await;
    let dir = TempDir::new("labels");
    let socket = dir.path().join("agent.sock");
    let dataset = dir.path().join("labels.jsonl");
    let src = format!(
        r#"
[agent]
id = "label-gw"
control_socket = "{socket}"
[alerts]
console = false
[journal]
dir = "{journal}"
[uplink]
host = "127.0.0.1"
port = {port}
reconnect_initial = "100ms"
[labels]
dataset = "{dataset}"
remember = 50
[[drivers]]
name = "plant"
kind = "sim"
speed = 600.0
tick = "1s"
[[drivers.machines]]
name = "pump"
vibration_rate_hz = 10.0
[[drivers.machines.faults]]
kind = "stuck"
signal = "pressure"
start = "1m"
duration = "5m"
[[assets]]
name = "pump"
[[assets.signals]]
signal = "pump.pressure"
[[assets.detectors]]
name = "pressure-stuck"
kind = "flatline"
signal = "pump.pressure"
min_duration = "1m"
"#,
        socket = socket.display(),
        journal = dir.path().join("journal").display(),
        port = broker.port,
        dataset = dataset.display(),
    );
    let cfg = edge_agent_tests::config("agent.toml", &src);
    let h = edge_agent::start(cfg, edge_agent::RunOptions::default()).expect("agent starts");
    wait_until("the stuck sensor's alert on the broker", 20, || {
        !sub.json_on("edge/label-gw/alerts/pump").is_empty()
    })
    .await;
    let alert = sub.json_on("edge/label-gw/alerts/pump")[0].clone();
    let id = alert["id"].as_str().expect("id").to_string();

    // The CLI, as an operator would run it.
    let run = |args: Vec<String>| {
        let socket = socket.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(agent_bin())
                .args(args)
                .arg("--socket")
                .arg(&socket)
                .output()
                .expect("edge-agent runs")
        })
    };
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        run(vec![
            "alerts".into(),
            "label".into(),
            id.clone(),
            "false".into(),
            "--note".into(),
            "sensor was being recalibrated".into(),
        ]),
    )
    .await
    .expect("answers")
    .expect("joined");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("labelled {id} pump/pressure-stuck")),
        "{stdout}"
    );

    wait_until("the label on the broker", 20, || {
        !sub.json_on("edge/label-gw/labels").is_empty()
    })
    .await;
    let published = sub.json_on("edge/label-gw/labels")[0].clone();
    let stored: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&dataset)
            .expect("dataset")
            .lines()
            .next()
            .expect("one line"),
    )
    .expect("JSON");
    assert_eq!(
        published, stored,
        "the same label upstream and in the dataset"
    );
    assert_eq!(stored["verdict"], "false");
    assert_eq!(stored["note"], "sensor was being recalibrated");
    assert_eq!(stored["alert"], alert, "the whole alert, features included");
    assert!(stored["alert"]["features"]["p2p"].is_number(), "{stored}");

    // An alert it does not know, and a bad verdict: clear errors, nothing stored.
    let out = run(vec![
        "alerts".into(),
        "label".into(),
        "01NOSUCHALERT".into(),
        "true".into(),
    ])
    .await
    .expect("joined");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("among the last 50"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(vec!["alerts".into(), "label".into(), id, "maybe".into()])
        .await
        .expect("joined");
    assert!(!out.status.success(), "clap refuses the verdict");
    assert_eq!(
        std::fs::read_to_string(&dataset)
            .expect("dataset")
            .lines()
            .count(),
        1
    );
    tokio::time::timeout(Duration::from_secs(30), h.stop())
        .await
        .expect("stops")
        .expect("clean stop");
}
