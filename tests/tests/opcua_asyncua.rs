#![allow(clippy::print_stdout)] // reports the measured recovery time
//! The OPC UA driver against FreeOpcUa's asyncua server: every scalar type by
//! subscription and by polling Read, source timestamps, Bad and Uncertain status
//! codes, a NodeId that does not exist, a browse path, an array slice; every
//! security policy with user and password (an untrusted server refused with how
//! to trust it, a wrong password refused); a server restart and a cut
//! connection (values back, no duplicates, the times reported); garbage and a close in the handshake;
//! `edge-agent opcua browse` output that `check-config` accepts.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_agent_tests::{PyOpcua, TempDir, agent_bin, free_port};
use edge_driver_api::testing::{CollectSink, samples_of};
use edge_driver_api::{
    BadReason, Clock, DriverContext, DriverError, DriverEvent, DriverFactory, EventKind, EventSink,
    Quality, SignalRegistry, Value,
};
use edge_driver_opcua::OpcuaConfig;
use tokio_util::sync::CancellationToken;

/// Text values the driver emitted.
#[derive(Debug, Default)]
struct Texts(Mutex<Vec<(String, String)>>);

impl EventSink for Texts {
    fn try_send(&self, _driver: &str, ev: DriverEvent) -> bool {
        let EventKind::Text(t) = ev.kind;
        self.0
            .lock()
            .expect("mutex")
            .push((format!("{}", ev.signal.0), t));
        true
    }
}

fn factory(toml: &str) -> (edge_driver_opcua::OpcuaFactory, SignalRegistry) {
    let cfg = edge_driver_api::testing::parse_section(toml, |r| OpcuaConfig::parse(r, "ua"));
    let reg = edge_driver_api::testing::registry(cfg.signals(), "ua");
    (cfg.into_factory(&reg).expect("factory"), reg)
}

/// Every kind of tag the test server has.
fn tags() -> String {
    let mut s = String::new();
    for name in [
        "Bool",
        "SByte",
        "Byte",
        "Int16",
        "UInt16",
        "Int32",
        "UInt32",
        "Int64",
        "UInt64",
        "Float",
        "Double",
        "DateTime",
        "Counter",
        "Stamped",
        "Broken",
        "Uncertain",
    ] {
        s.push_str(&format!(
            "[[tags]]\nname = \"ua.{}\"\nnode = \"ns=2;s=Line1.{name}\"\n",
            name.to_lowercase()
        ));
    }
    s.push_str("[[tags]]\nname = \"ua.string\"\nnode = \"ns=2;s=Line1.String\"\ntype = \"text\"\n");
    s.push_str("[[tags]]\nname = \"ua.numeric\"\nnode = \"ns=2;i=1001\"\n");
    s.push_str("[[tags]]\nname = \"ua.by_path\"\npath = \"2:Line1/2:Double\"\n");
    s.push_str("[[tags]]\nname = \"ua.bad_path\"\npath = \"2:Line1/2:Nope\"\n");
    s.push_str("[[tags]]\nname = \"ua.missing\"\nnode = \"ns=2;s=Line1.Nope\"\n");
    s.push_str(
        "[[tags]]\nname = \"ua.arr\"\nnode = \"ns=2;s=Line1.Array\"\nindex = 1\nelements = 2\n",
    );
    s
}

struct Run {
    sink: Arc<CollectSink>,
    texts: Arc<Texts>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), DriverError>>,
}

fn start(f: &dyn DriverFactory) -> Run {
    let sink = Arc::new(CollectSink::new());
    let texts = Arc::new(Texts::default());
    let cancel = CancellationToken::new();
    let ctx = DriverContext::new("ua".into(), sink.clone(), cancel.clone(), Clock::system())
        .with_events(texts.clone());
    let task = tokio::spawn(f.create().expect("driver").run(ctx));
    Run {
        sink,
        texts,
        cancel,
        task,
    }
}

impl Run {
    async fn stop(self) -> Result<(), DriverError> {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .expect("the driver stops within 2 s of cancel")
            .expect("no panic")
    }
}

async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn last(run: &Run, reg: &SignalRegistry, name: &str) -> Option<edge_driver_api::Sample> {
    samples_of(&run.sink.samples(), reg, name).last().copied()
}

/// Every expected value, exactly.
fn check_values(run: &Run, reg: &SignalRegistry) {
    let expect = [
        ("ua.bool", Value::Bool(true)),
        ("ua.sbyte", Value::I64(-5)),
        ("ua.byte", Value::I64(200)),
        ("ua.int16", Value::I64(-1234)),
        ("ua.uint16", Value::I64(54321)),
        ("ua.int32", Value::I64(-123456)),
        ("ua.uint32", Value::I64(4_000_000_000)),
        ("ua.int64", Value::I64(-9_000_000_000)),
        ("ua.uint64", Value::I64(9_000_000_000_000_000_000)),
        ("ua.float", Value::F64(1.5)),
        ("ua.double", Value::F64(21.25)),
        ("ua.datetime", Value::F64(1_767_323_045.0)),
        ("ua.numeric", Value::F64(42.0)),
        ("ua.by_path", Value::F64(21.25)),
        ("ua.stamped", Value::F64(7.0)),
        ("ua.arr.0", Value::F64(2.0)),
        ("ua.arr.1", Value::F64(3.0)),
    ];
    for (name, v) in expect {
        let s = last(run, reg, name).unwrap_or_else(|| panic!("no sample of {name}"));
        assert_eq!(s.quality, Quality::Good, "{name}");
        assert_eq!(s.value, v, "{name}");
    }
    // The server's source timestamp is the sample's time.
    let stamped = last(run, reg, "ua.stamped").expect("stamped");
    assert_eq!(stamped.ts.wall_ns, 1_767_323_045_000_000_000);
    // Bad and Uncertain status codes: bad quality with the code.
    let code = |n: &str| last(run, reg, n).map(|s| s.quality);
    assert_eq!(
        code("ua.broken"),
        Some(Quality::Bad(BadReason::DeviceException(0x808C)))
    );
    assert_eq!(
        code("ua.uncertain"),
        Some(Quality::Bad(BadReason::DeviceException(0x4090)))
    );
    // A node that does not exist: that tag only.
    assert_eq!(
        code("ua.missing"),
        Some(Quality::Bad(BadReason::DeviceException(0x8034)))
    );
    assert_eq!(
        code("ua.bad_path"),
        Some(Quality::Bad(BadReason::DeviceException(0x806F)))
    );
    // Text arrives as an event.
    let string_id = reg.get("ua.string").expect("id").0.to_string();
    assert!(
        run.texts
            .0
            .lock()
            .expect("mutex")
            .iter()
            .any(|(id, t)| *id == string_id && t == "running"),
        "the String value as text"
    );
}

fn everything_there(run: &Run, reg: &SignalRegistry) -> bool {
    [
        "ua.double",
        "ua.arr.1",
        "ua.missing",
        "ua.bad_path",
        "ua.broken",
        "ua.uncertain",
        "ua.datetime",
    ]
    .iter()
    .all(|n| last(run, reg, n).is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribes_to_every_scalar_type_of_asyncua_with_exact_values() {
    let mut server = PyOpcua::start();
    let (f, reg) = factory(&format!(
        "endpoint = \"{}\"\npublishing_interval = \"100ms\"\n{}",
        server.endpoint(),
        tags()
    ));
    let run = start(&f);
    wait_for("every tag", 20, || everything_there(&run, &reg)).await;
    check_values(&run, &reg);
    // Changes arrive: the counter moves, a written value comes through.
    let counts = |run: &Run| {
        samples_of(&run.sink.samples(), &reg, "ua.counter")
            .iter()
            .map(|s| s.value)
            .collect::<Vec<_>>()
    };
    wait_for("the counter to move", 10, || counts(&run).len() >= 5).await;
    let c = counts(&run);
    assert!(
        c.windows(2).all(|w| w[0] != w[1]),
        "every notification a change: {c:?}"
    );
    server.set("Double", "23.75");
    wait_for("the new Double", 10, || {
        last(&run, &reg, "ua.double").is_some_and(|s| s.value == Value::F64(23.75))
    })
    .await;
    // A status code that turns bad while subscribed.
    server.status("Float", "BadOutOfService");
    wait_for("Float to turn bad", 10, || {
        last(&run, &reg, "ua.float")
            .is_some_and(|s| s.quality == Quality::Bad(BadReason::DeviceException(0x808D)))
    })
    .await;
    // Link statistics flow like every polling driver's.
    wait_for("the link health", 10, || {
        last(&run, &reg, "ua.comm.health").is_some_and(|s| s.value.as_f64() > 0.0)
    })
    .await;
    assert!(run.stop().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_every_scalar_type_with_read_when_configured() {
    let server = PyOpcua::start();
    let (f, reg) = factory(&format!(
        "endpoint = \"{}\"\nacquisition = \"poll\"\npoll = \"100ms\"\nmax_items_per_call = 4\n{}",
        server.endpoint(),
        tags()
    ));
    let run = start(&f);
    wait_for("every tag", 20, || everything_there(&run, &reg)).await;
    check_values(&run, &reg);
    // Polled: samples keep coming while nothing changes; a text is an event
    // only when it changes, not at every poll.
    let n = samples_of(&run.sink.samples(), &reg, "ua.double").len();
    wait_for("more polls", 10, || {
        samples_of(&run.sink.samples(), &reg, "ua.double").len() >= n + 3
    })
    .await;
    assert_eq!(
        run.texts.0.lock().expect("mutex").len(),
        1,
        "one text event"
    );
    assert!(run.stop().await.is_ok());
    drop(server);
}

const BASIC: (&str, &str) = ("Basic256Sha256", "SignAndEncrypt");

/// A driver section for the secure server.
fn secure_toml(
    endpoint: &str,
    pki: &std::path::Path,
    pw_file: &std::path::Path,
    (policy, mode): (&str, &str),
) -> String {
    format!(
        "endpoint = \"{endpoint}\"\nsecurity_policy = \"{policy}\"\nsecurity_mode = \"{mode}\"\nusername = \"edge\"\npassword_file = \"{}\"\npki_dir = \"{}\"\npublishing_interval = \"100ms\"\ntimeout = \"3s\"\n[[tags]]\nname = \"ua.double\"\nnode = \"ns=2;s=Line1.Double\"\n[[tags]]\nname = \"ua.counter\"\nnode = \"ns=2;s=Line1.Counter\"\n",
        pw_file.display(),
        pki.display()
    )
}

/// Waits for Line1.Double's value on `ua.double`; a driver that gives up fails the
/// test with its error.
async fn wait_for_value(run: &Run, reg: &SignalRegistry, what: &str) {
    let t0 = Instant::now();
    while !last(run, reg, "ua.double").is_some_and(|s| s.value == Value::F64(21.25)) {
        assert!(!run.task.is_finished(), "{what}: the driver gave up");
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "timed out waiting for a value {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Makes a client certificate (`client.der`) and key (`client.pem`) in argv[1]
/// with application URI argv[2], with asyncua's own certificate generator.
const MAKE_CLIENT_CERT: &str = r#"
import asyncio, pathlib, sys
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID
d = pathlib.Path(sys.argv[1])
asyncio.run(setup_self_signed_certificate(d / "client.pem", d / "client.der", sys.argv[2],
    "127.0.0.1", [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": "plant client"}))
"#;

/// One driver attempt that must fail; its error.
async fn failed_attempt(f: &dyn DriverFactory) -> DriverError {
    let sink = Arc::new(CollectSink::new());
    let ctx = DriverContext::new("ua".into(), sink, CancellationToken::new(), Clock::system());
    tokio::time::timeout(
        Duration::from_secs(30),
        f.create().expect("driver").run(ctx),
    )
    .await
    .expect("the attempt ends")
    .expect_err("the attempt fails")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_security_policy_with_user_and_password_after_trusting_the_server() {
    let dir = TempDir::new("opcua-secure");
    let server_dir = dir.path().join("server");
    let server = PyOpcua::start_with(&["--secure", server_dir.to_str().expect("utf-8")]);
    let pki = dir.path().join("pki");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").expect("password file");

    // 1. The server is not trusted yet: refused, with how to trust it.
    let (f, _) = factory(&secure_toml(&server.endpoint(), &pki, &pw, BASIC));
    // Every attempt says so, not only the first.
    for _ in 0..2 {
        let e = failed_attempt(&f).await;
        assert!(e.kind.is_retryable(), "{e}");
        assert!(
            e.message.contains("not trusted") && e.message.contains("rejected"),
            "{e}"
        );
    }
    let rejected: Vec<_> = std::fs::read_dir(pki.join("rejected"))
        .expect("rejected dir")
        .collect();
    assert_eq!(
        rejected.len(),
        1,
        "the server's certificate saved for review"
    );

    // 2. Trusted (its certificate dropped in trusted/ under any name): values flow,
    //    signed and encrypted, as user `edge`.
    std::fs::copy(
        server_dir.join("server.der"),
        pki.join("trusted/plant-server.der"),
    )
    .expect("trust");
    for security in [
        BASIC,
        ("Basic256Sha256", "Sign"),
        ("Aes128_Sha256_RsaOaep", "SignAndEncrypt"),
        ("Aes256_Sha256_RsaPss", "SignAndEncrypt"),
    ] {
        let mode = format!("{security:?}");
        let (f, reg2) = factory(&secure_toml(&server.endpoint(), &pki, &pw, security));
        let run = start(&f);
        wait_for_value(&run, &reg2, &mode).await;
        assert!(run.stop().await.is_ok());
    }

    // 3. The client's own certificate and key (made by the peer's Python stack), with
    //    the application URI they carry; a URI they do not carry is a config error.
    let made = std::process::Command::new(edge_agent_tests::peer_python())
        .args(["-c", MAKE_CLIENT_CERT])
        .arg(dir.path())
        .arg("urn:edge-agent:plant-client")
        .status()
        .expect("run python");
    assert!(made.success());
    let own = |uri: &str| {
        secure_toml(&server.endpoint(), &pki, &pw, BASIC).replace(
            "username = ",
            &format!(
                "application_uri = \"{uri}\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\nusername = ",
                dir.path().join("client.der").display(),
                dir.path().join("client.pem").display()
            ),
        )
    };
    let (f, reg3) = factory(&own("urn:edge-agent:plant-client"));
    let run = start(&f);
    wait_for_value(&run, &reg3, "with the client's own certificate").await;
    assert!(run.stop().await.is_ok());
    let wrong = own("urn:edge-agent:other");
    let table = edge_driver_api::config::parse_document(&wrong).expect("toml");
    let diags = edge_driver_api::config::Diagnostics::new();
    let parsed = {
        let mut r = edge_driver_api::config::TableReader::new(&table, "drivers[0]", &diags);
        OpcuaConfig::parse(&mut r, "ua")
    };
    assert!(parsed.is_none());
    let msgs: Vec<String> = diags.into_vec().into_iter().map(|d| d.message).collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("does not carry the application URI")),
        "{msgs:?}"
    );

    // 4. A wrong password: refused, said so, never logged.
    std::fs::write(&pw, "wrong\n").expect("password file");
    let (f, _) = factory(&secure_toml(&server.endpoint(), &pki, &pw, BASIC));
    let e = failed_attempt(&f).await;
    assert!(
        e.message.contains("refused the user name or password"),
        "{e}"
    );
    assert!(!e.message.contains("wrong"), "{e}");
    drop(server);
}

/// The counter (a new value every 100 ms) and the value with a fixed source
/// time, subscribed at `endpoint`.
fn counter_and_stamped(endpoint: &str) -> String {
    format!(
        "endpoint = \"{endpoint}\"\npublishing_interval = \"100ms\"\ntimeout = \"1s\"\n[[tags]]\nname = \"ua.counter\"\nnode = \"ns=2;s=Line1.Counter\"\n[[tags]]\nname = \"ua.stamped\"\nnode = \"ns=2;s=Line1.Stamped\"\n"
    )
}

/// How many good samples of `name` came.
fn good(run: &Run, reg: &SignalRegistry, name: &str) -> usize {
    samples_of(&run.sink.samples(), reg, name)
        .iter()
        .filter(|s| s.quality.is_good())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_brings_values_back_within_seconds_without_duplicates() {
    let mut server = PyOpcua::start();
    let (f, reg) = factory(&counter_and_stamped(&server.endpoint()));
    let run = start(&f);
    let good_counter = |run: &Run| good(run, &reg, "ua.counter");
    wait_for("the counter", 20, || good_counter(&run) >= 3).await;
    server.stop();
    wait_for("the outage as bad quality", 20, || {
        last(&run, &reg, "ua.counter").is_some_and(|s| !s.quality.is_good())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.spawn();
    let listening = Instant::now();
    let before = good_counter(&run);
    wait_for("values after the restart", 30, || {
        good_counter(&run) > before
            && last(&run, &reg, "ua.counter").is_some_and(|s| s.quality.is_good())
    })
    .await;
    let back = listening.elapsed();
    println!(
        "opcua: values flow {:.2} s after the restarted server listens",
        back.as_secs_f64()
    );
    // The stamped value (same source time, same value after the restart) once only.
    assert_eq!(
        good(&run, &reg, "ua.stamped"),
        1,
        "no duplicate after the subscription came back"
    );
    // One driver attempt throughout: the session reconnected by itself.
    assert!(!run.task.is_finished());
    assert!(run.stop().await.is_ok());
    assert!(back < Duration::from_secs(10), "took {back:?}");
}

/// A TCP server that answers every connection with `reply` (then closes).
async fn fake_server(reply: &'static [u8]) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await;
                let _ = s.write_all(reply).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_or_a_close_in_the_handshake_is_a_retryable_error_not_a_panic() {
    let garbage = fake_server(b"HTTP/1.1 400 Bad Request\r\n\r\n\x00\xff\xfe garbage").await;
    let closes = fake_server(b"").await;
    // A valid-looking ACK header with an absurd length, then nothing.
    let lying = fake_server(b"ACKF\xff\xff\xff\x7f").await;
    for (what, port) in [
        ("garbage", garbage),
        ("a close", closes),
        ("a lying header", lying),
        ("nothing", free_port()),
    ] {
        let (f, reg) = factory(&format!(
            "endpoint = \"opc.tcp://127.0.0.1:{port}\"\ntimeout = \"1s\"\n[[tags]]\nname = \"ua.x\"\nnode = \"ns=2;s=X\"\n"
        ));
        let sink = Arc::new(CollectSink::new());
        let ctx = DriverContext::new(
            "ua".into(),
            sink.clone(),
            CancellationToken::new(),
            Clock::system(),
        );
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::spawn(f.create().expect("driver").run(ctx)),
        )
        .await
        .unwrap_or_else(|_| panic!("{what}: the attempt must end"))
        .unwrap_or_else(|p| panic!("{what}: panicked: {p}"));
        let e = r.expect_err("no session");
        assert!(e.kind.is_retryable(), "{what}: {e:?}");
        assert!(
            sink.samples()
                .iter()
                .all(|s| !s.quality.is_good() || reg.name(s.signal).contains(".comm.")),
            "{what}: no good value"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_prints_tags_that_check_config_accepts() {
    let server = PyOpcua::start();
    let out = tokio::task::spawn_blocking({
        let ep = server.endpoint();
        move || {
            std::process::Command::new(agent_bin())
                .args([
                    "opcua",
                    "browse",
                    "--endpoint",
                    &ep,
                    "--node",
                    "ns=2;s=Line1",
                    "--depth",
                    "2",
                    "--prefix",
                    "plc",
                ])
                .output()
                .expect("run browse")
        }
    });
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("browse ends")
        .expect("join");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("name = \"plc.double\"\nnode = \"ns=2;s=Line1.Double\"\n"),
        "{text}"
    );
    assert!(
        text.contains("name = \"plc.numeric\"\nnode = \"ns=2;i=1001\"\n"),
        "{text}"
    );
    assert!(
        text.contains("name = \"plc.string\"\nnode = \"ns=2;s=Line1.String\"\ntype = \"text\"\n"),
        "{text}"
    );
    assert!(text.contains("# Array: Double array"), "{text}");
    // Pasted into a driver section, it is a valid configuration.
    let dir = TempDir::new("opcua-browse");
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\nid = \"gw\"\n\n[[drivers]]\nname = \"plc\"\nkind = \"opcua\"\nendpoint = \"{}\"\n\n{text}",
            server.endpoint()
        ),
    )
    .expect("config");
    let check = std::process::Command::new(agent_bin())
        .args(["check-config"])
        .arg(&cfg)
        .output()
        .expect("check-config");
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_connection_resumes_the_subscription_without_duplicates() {
    let server = PyOpcua::start();
    let proxy = edge_agent_tests::CuttingProxy::start(server.port, Duration::ZERO).await;
    let (f, reg) = factory(&counter_and_stamped(&format!(
        "opc.tcp://127.0.0.1:{}/edge-test",
        proxy.port
    )));
    let run = start(&f);
    let good_counter = |run: &Run| good(run, &reg, "ua.counter");
    wait_for("the counter", 20, || good_counter(&run) >= 3).await;
    proxy.cut_all();
    let cut = Instant::now();
    wait_for("the break as bad quality", 20, || {
        last(&run, &reg, "ua.counter").is_some_and(|s| !s.quality.is_good())
    })
    .await;
    let before = good_counter(&run);
    wait_for("values after the break", 20, || {
        good_counter(&run) > before + 2
            && last(&run, &reg, "ua.counter").is_some_and(|s| s.quality.is_good())
    })
    .await;
    println!(
        "opcua: values flow {:.2} s after the connection was cut",
        cut.elapsed().as_secs_f64()
    );
    assert_eq!(
        good(&run, &reg, "ua.stamped"),
        1,
        "no duplicate after the session came back"
    );
    assert!(!run.task.is_finished());
    assert!(run.stop().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_take_the_nodes_type_are_checked_and_read_back() {
    use edge_driver_api::{WriteFailure, WriteInbox, WriteRequest};
    let mut server = PyOpcua::start();
    let (f, reg) = factory(&format!(
        "endpoint = \"{}\"\npublishing_interval = \"100ms\"\n\
         [[tags]]\nname = \"ua.setpoint\"\nnode = \"ns=2;s=Line1.Setpoint\"\nwritable = true\nmin = 0\nmax = 100\nverify = true\n\
         [[tags]]\nname = \"ua.mode\"\nnode = \"ns=2;s=Line1.Mode\"\nwritable = true\nallowed = [1, 2, 70000]\n\
         [[tags]]\nname = \"ua.double\"\nnode = \"ns=2;s=Line1.Double\"\nwritable = true\nmin = 0\nmax = 100\n",
        server.endpoint()
    ));
    assert_eq!(f.writable().len(), 3);
    let (inbox, tx) = WriteInbox::new();
    let sink = Arc::new(CollectSink::new());
    let cancel = CancellationToken::new();
    let ctx = DriverContext::new("ua".into(), sink.clone(), cancel.clone(), Clock::system())
        .with_writes(inbox);
    let task = tokio::spawn(f.create().expect("driver").run(ctx));
    wait_for("the session", 20, || {
        samples_of(&sink.samples(), &reg, "ua.setpoint")
            .iter()
            .any(|s| s.quality.is_good())
    })
    .await;
    let write = |name: &str, value: f64| {
        let (req, rx) = WriteRequest::new(reg.get(name).expect("signal"), value, true);
        let tx = tx.clone();
        async move {
            tx.send(req).await.expect("queued");
            tokio::time::timeout(Duration::from_secs(10), rx)
                .await
                .expect("answered in time")
                .expect("answered")
        }
    };
    // A Double with its read back; the server holds it.
    let done = write("ua.setpoint", 72.5).await.expect("written");
    assert_eq!(done.read_back, Some(72.5));
    assert_eq!(server.get("Setpoint"), "72.5");
    // An Int16: written as an Int16 (the server would refuse a Double).
    write("ua.mode", 2.0).await.expect("written");
    assert_eq!(server.get("Mode"), "2");
    // Out of the node's type: refused before anything is sent.
    let e = write("ua.mode", 70000.0)
        .await
        .expect_err("does not fit an Int16");
    assert_eq!(e.kind, WriteFailure::Encode, "{e}");
    assert_eq!(server.get("Mode"), "2");
    // A node the server does not let clients write: the server's refusal, named.
    let e = write("ua.double", 5.0)
        .await
        .expect_err("read-only on the server");
    assert_eq!(e.kind, WriteFailure::Device, "{e}");
    assert!(
        e.message.contains("BadUserAccessDenied") || e.message.contains("BadNotWritable"),
        "{e}"
    );
    assert_eq!(server.get("Double"), "21.25");
    cancel.cancel();
    let r = tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("stops")
        .expect("no panic");
    assert!(r.is_ok());
}
