//! Fault injection against an in-process S7 fake (our codec's server side over an
//! in-memory pipe), under paused tokio time so every run is identical:
//! latency, dropped replies, garbage, truncated frames, wrong PDU references and
//! resets mid-frame — and the health score, grades and poll back-off they cause.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use edge_driver_api::health::Grade;
use edge_driver_api::testing::CollectSink;
use edge_driver_api::{
    BoxFuture, Clock, DriverContext, DriverFactory, ErrorKind, Quality, Sample, SignalRegistry,
};
use edge_driver_s7::codec::{self, Cotp, Job, Negotiated};
use edge_driver_s7::{Connector, S7Config, S7Factory, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Normal,
    /// Replies with bytes that are not TPKT.
    Garbage,
    /// Sends half of the reply, then nothing.
    Truncate,
    /// Replies to another PDU reference.
    WrongRef,
    /// Sends half of the reply, then closes the connection.
    Reset,
}

#[derive(Debug)]
struct Faults {
    mode: Mode,
    /// Reply latency.
    delay: Duration,
    /// Drop every n-th read reply (0 = never).
    drop_every: u32,
    reads: u32,
    /// Read requests served, ever.
    served: u32,
}

#[derive(Debug, Clone)]
struct Fake {
    faults: Arc<Mutex<Faults>>,
    memory: Arc<Vec<u8>>,
}

impl Fake {
    fn new() -> Fake {
        let mut memory = vec![0u8; 64];
        for i in 0..16 {
            memory[i * 4..i * 4 + 4].copy_from_slice(&(i as f32 * 0.5).to_be_bytes());
        }
        Fake {
            faults: Arc::new(Mutex::new(Faults {
                mode: Mode::Normal,
                delay: Duration::from_millis(2),
                drop_every: 0,
                reads: 0,
                served: 0,
            })),
            memory: Arc::new(memory),
        }
    }

    fn set(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.faults.lock().expect("faults"));
    }

    fn served(&self) -> u32 {
        self.faults.lock().expect("faults").served
    }

    async fn serve(self, mut io: DuplexStream) {
        let mut frame = Vec::new();
        let mut out = Vec::new();
        loop {
            let mut hdr = [0u8; 4];
            if io.read_exact(&mut hdr).await.is_err() {
                return;
            }
            let Ok(len) = codec::tpkt_frame_len(hdr) else {
                return;
            };
            frame.clear();
            frame.extend_from_slice(&hdr);
            frame.resize(len, 0);
            if io.read_exact(&mut frame[4..]).await.is_err() {
                return;
            }
            out.clear();
            let (mode, delay, drop) = match codec::parse_cotp(&frame) {
                Ok(Cotp::ConnectRequest { src_ref }) => {
                    codec::encode_connect_confirm(&mut out, src_ref);
                    (Mode::Normal, Duration::ZERO, false)
                }
                Ok(Cotp::Data { payload, .. }) => {
                    let Ok(pdu) = codec::parse_s7(payload) else {
                        return;
                    };
                    match codec::decode_job(&pdu) {
                        Ok(Job::Setup { .. }) => {
                            let n = Negotiated {
                                max_amq_calling: 1,
                                max_amq_called: 1,
                                pdu_size: 240,
                            };
                            codec::encode_setup_ack(&mut out, pdu.pdu_ref, n);
                            (Mode::Normal, Duration::ZERO, false)
                        }
                        Ok(Job::Read(items)) => {
                            let mut f = self.faults.lock().expect("faults");
                            f.reads += 1;
                            f.served += 1;
                            let drop = f.drop_every > 0 && f.reads % f.drop_every == 0;
                            let replies: Vec<Result<&[u8], codec::ItemError>> = items
                                .iter()
                                .map(|it| {
                                    let (s, e) = (
                                        it.start as usize,
                                        it.start as usize + usize::from(it.len),
                                    );
                                    self.memory.get(s..e).ok_or(codec::ItemError(0x05))
                                })
                                .collect();
                            let r = if f.mode == Mode::WrongRef {
                                pdu.pdu_ref.wrapping_add(7)
                            } else {
                                pdu.pdu_ref
                            };
                            codec::encode_read_ack(&mut out, r, &replies);
                            (f.mode, f.delay, drop)
                        }
                        _ => return,
                    }
                }
                _ => return,
            };
            tokio::time::sleep(delay).await;
            if drop {
                continue;
            }
            match mode {
                Mode::Normal | Mode::WrongRef => {
                    if io.write_all(&out).await.is_err() {
                        return;
                    }
                }
                Mode::Garbage => {
                    let _ = io.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
                }
                Mode::Truncate => {
                    let _ = io.write_all(&out[..out.len() / 2]).await;
                }
                Mode::Reset => {
                    let _ = io.write_all(&out[..out.len() / 2]).await;
                    return;
                }
            }
        }
    }
}

impl Connector for Fake {
    fn connect(&self) -> BoxFuture<'static, std::io::Result<Box<dyn Stream>>> {
        let fake = self.clone();
        Box::pin(async move {
            let (client, server) = tokio::io::duplex(16 * 1024);
            tokio::spawn(fake.serve(server));
            Ok(Box::new(client) as Box<dyn Stream>)
        })
    }
}

const TOML: &str = r#"
host = "127.0.0.1"
poll = "1s"
timeout = "500ms"
[health]
poll_max = "8s"
[[tags]]
name = "plc.r0"
address = "DB1.DBD0"
type = "REAL"
[[tags]]
name = "plc.r15"
address = "DB1.DBD60"
type = "REAL"
"#;

fn setup(fake: &Fake) -> (S7Factory, SignalRegistry, S7Config) {
    let cfg = edge_driver_api::testing::parse_section(TOML, |r| S7Config::parse(r, "plc"));
    let reg = edge_driver_api::testing::registry(cfg.signals(), "plc");
    let f = cfg
        .clone()
        .into_factory_with(&reg, Some(Arc::new(fake.clone())))
        .expect("factory");
    (f, reg, cfg)
}

fn last(samples: &[Sample], reg: &SignalRegistry, name: &str) -> Sample {
    let id = reg.get(name).expect("registered");
    *samples
        .iter()
        .rev()
        .find(|s| s.signal == id)
        .unwrap_or_else(|| panic!("no sample for {name}"))
}

/// Runs the driver like the supervisor does: restart 1 s after every failure.
fn supervise(f: S7Factory, ctx: DriverContext) -> tokio::task::JoinHandle<Vec<ErrorKind>> {
    tokio::spawn(async move {
        let mut errors = Vec::new();
        loop {
            match f.create().expect("driver").run(ctx.clone()).await {
                Ok(()) => return errors,
                Err(e) => errors.push(e.kind),
            }
            tokio::select! {
                _ = ctx.cancelled() => return errors,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn health_grades_and_poll_backoff_follow_injected_faults() {
    let fake = Fake::new();
    let (f, reg, cfg) = setup(&fake);
    let sink = Arc::new(CollectSink::new());
    let cancel = CancellationToken::new();
    let ctx = DriverContext::new(
        "plc".into(),
        sink.clone(),
        cancel.clone(),
        Clock::virtual_from(0),
    );
    let task = supervise(f, ctx);
    let score = |s: &CollectSink| last(&s.samples(), &reg, "plc.comm.health").value.as_f64();
    let poll = |s: &CollectSink| last(&s.samples(), &reg, "plc.comm.poll_s").value.as_f64();

    // Healthy: full marks, base poll rate, values exact.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(score(&sink), 100.0);
    assert_eq!(poll(&sink), 1.0);
    assert_eq!(last(&sink.samples(), &reg, "plc.r15").value.as_f64(), 7.5);
    let healthy_rate = fake.served();
    assert!(
        (115..=121).contains(&healthy_rate),
        "{healthy_rate} reads in 2 min"
    );

    // Slow replies (300 ms of a 500 ms timeout): the score drops, still healthy.
    fake.set(|f| f.delay = Duration::from_millis(300));
    tokio::time::sleep(Duration::from_secs(120)).await;
    let slow = score(&sink);
    let p95 = last(&sink.samples(), &reg, "plc.comm.rtt_p95_ms")
        .value
        .as_f64();
    assert!((250.0..=310.0).contains(&p95), "p95 {p95}");
    assert!(
        slow < 100.0 && cfg.health.grade(slow) == Grade::Healthy,
        "{slow}"
    );
    assert_eq!(poll(&sink), 1.0);

    // One reply in three lost: timeouts, reconnects → critical, polling backs off.
    fake.set(|f| {
        f.delay = Duration::from_millis(2);
        f.drop_every = 3;
    });
    tokio::time::sleep(Duration::from_secs(120)).await;
    let bad = score(&sink);
    assert_eq!(cfg.health.grade(bad), Grade::Critical, "{bad}");
    assert_eq!(poll(&sink), 8.0, "poll backs off to poll_max");
    let before = fake.served();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let backed_off = fake.served() - before;
    assert!(
        backed_off <= 12,
        "{backed_off} reads/min while critical (60 when healthy)"
    );
    // Tags that timed out are bad, never stale-good.
    let samples = sink.samples();
    let id = reg.get("plc.r0").expect("signal");
    assert!(
        samples
            .iter()
            .any(|s| s.signal == id
                && s.quality == Quality::Bad(edge_driver_api::BadReason::Timeout))
    );

    // Faults gone: the score climbs back as failures age out, polling returns.
    fake.set(|f| f.drop_every = 0);
    tokio::time::sleep(Duration::from_secs(420)).await;
    let healed = score(&sink);
    assert!(healed >= 85.0, "{healed}");
    assert_eq!(poll(&sink), 1.0);

    cancel.cancel();
    let errors = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .expect("no panic");
    assert!(
        errors.iter().all(|k| *k == ErrorKind::Transient),
        "{errors:?}"
    );
    assert!(!errors.is_empty());
}

/// One attempt against the fake in `mode`: returns the driver's error kind.
async fn attempt(mode: Mode) -> (ErrorKind, Vec<Sample>, SignalRegistry) {
    let fake = Fake::new();
    let (f, reg, _) = setup(&fake);
    fake.set(|f| f.mode = mode);
    let sink = Arc::new(CollectSink::new());
    let ctx = DriverContext::new(
        "plc".into(),
        sink.clone(),
        CancellationToken::new(),
        Clock::virtual_from(0),
    );
    let res = tokio::time::timeout(
        Duration::from_secs(10),
        f.create().expect("driver").run(ctx),
    )
    .await
    .expect("the attempt ends");
    (res.expect_err("fails").kind, sink.samples(), reg)
}

#[tokio::test(start_paused = true)]
async fn malformed_replies_fail_the_attempt_with_the_right_kind_and_bad_tags() {
    for (mode, kind) in [
        (Mode::Garbage, ErrorKind::Device),
        (Mode::WrongRef, ErrorKind::Device),
        (Mode::Truncate, ErrorKind::Transient),
        (Mode::Reset, ErrorKind::Transient),
    ] {
        let (got, samples, reg) = attempt(mode).await;
        assert_eq!(got, kind, "{mode:?}");
        let s = last(&samples, &reg, "plc.r0");
        assert!(!s.quality.is_good(), "{mode:?}: {s:?}");
        assert!(
            last(&samples, &reg, "plc.comm.health").value.as_f64() < 100.0,
            "{mode:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn cancel_exits_promptly_even_while_a_reply_is_outstanding() {
    let fake = Fake::new();
    let (f, _reg, _) = setup(&fake);
    fake.set(|f| f.delay = Duration::from_secs(3600));
    let sink = Arc::new(CollectSink::new());
    let cancel = CancellationToken::new();
    let ctx = DriverContext::new("plc".into(), sink, cancel.clone(), Clock::virtual_from(0));
    let task = tokio::spawn(f.create().expect("driver").run(ctx));
    tokio::time::sleep(Duration::from_millis(100)).await;
    cancel.cancel();
    let res = tokio::time::timeout(Duration::from_millis(300), task)
        .await
        .expect("prompt")
        .expect("no panic");
    assert!(res.is_ok());
}
