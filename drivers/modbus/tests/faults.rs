//! Fault injection against an in-process Modbus TCP fake over an in-memory pipe,
//! under paused time: truncated frames, wrong unit id, wrong transaction id, slow
//! replies, no reply, a reset mid-frame. Bad device input never crashes or stalls
//! the driver; each fault maps to the documented quality and error kind.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use edge_driver_api::testing::CollectSink;
use edge_driver_api::{
    BadReason, BoxFuture, Clock, DriverContext, DriverFactory, ErrorKind, Quality, Sample,
    SignalRegistry,
};
use edge_driver_modbus::{Connector, ModbusConfig, ModbusFactory, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    Truncated,
    WrongUnit,
    WrongTransaction,
    Slow,
    NoReply,
    ResetMidFrame,
    /// Reads the request and closes the connection without a reply.
    CloseAfterRequest,
}

#[derive(Debug, Clone)]
struct Fake {
    fault: Arc<Mutex<Fault>>,
    served: Arc<Mutex<u32>>,
}

impl Fake {
    fn new(f: Fault) -> Fake {
        Fake {
            fault: Arc::new(Mutex::new(f)),
            served: Arc::new(Mutex::new(0)),
        }
    }

    async fn serve(self, mut io: DuplexStream) {
        loop {
            let mut req = [0u8; 12];
            if io.read_exact(&mut req).await.is_err() {
                return;
            }
            *self.served.lock().expect("mutex") += 1;
            let (tid, unit, count) = (
                u16::from_be_bytes([req[0], req[1]]),
                req[6],
                u16::from_be_bytes([req[10], req[11]]),
            );
            let mut pdu = vec![req[7], (count * 2) as u8];
            for i in 0..count {
                pdu.extend_from_slice(&(1000 + i).to_be_bytes());
            }
            let fault = *self.fault.lock().expect("mutex");
            let (tid, unit) = match fault {
                Fault::WrongUnit => (tid, unit.wrapping_add(1)),
                Fault::WrongTransaction => (tid.wrapping_add(1), unit),
                _ => (tid, unit),
            };
            let mut frame = Vec::new();
            frame.extend_from_slice(&tid.to_be_bytes());
            frame.extend_from_slice(&[0, 0]);
            frame.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
            frame.push(unit);
            frame.extend_from_slice(&pdu);
            match fault {
                Fault::NoReply => continue,
                Fault::CloseAfterRequest => return,
                Fault::Truncated => {
                    let _ = io.write_all(&frame[..frame.len() - 3]).await;
                }
                Fault::ResetMidFrame => {
                    let _ = io.write_all(&frame[..5]).await;
                    return;
                }
                Fault::Slow => {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    if io.write_all(&frame).await.is_err() {
                        return;
                    }
                }
                _ => {
                    if io.write_all(&frame).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

impl Connector for Fake {
    fn connect(&self) -> BoxFuture<'static, std::io::Result<Box<dyn Stream>>> {
        let fake = self.clone();
        Box::pin(async move {
            let (client, server) = tokio::io::duplex(4096);
            tokio::spawn(fake.serve(server));
            Ok(Box::new(client) as Box<dyn Stream>)
        })
    }
}

const TOML: &str = r#"
host = "127.0.0.1"
poll = "1s"
timeout = "500ms"
slave_backoff = "2s"
[[tags]]
name = "d.a"
area = "holding"
address = 0
[[tags]]
name = "d.b"
area = "holding"
address = 1
"#;

fn setup(fake: &Fake) -> (ModbusFactory, SignalRegistry) {
    let cfg = edge_driver_api::testing::parse_section(TOML, |r| ModbusConfig::parse(r, "d"));
    let reg = edge_driver_api::testing::registry(cfg.signals(), "d");
    let f = cfg
        .into_factory_with(&reg, Some(Arc::new(fake.clone())))
        .expect("factory");
    (f, reg)
}

use edge_driver_api::testing::samples_of as of;

/// Runs the driver for `secs` against a fake with `fault`; returns the samples and
/// how the run ended (`None`: still running, then cancelled).
async fn run_with(
    fault: Fault,
    secs: u64,
) -> (Vec<Sample>, SignalRegistry, Option<ErrorKind>, u32) {
    let fake = Fake::new(fault);
    let (f, reg) = setup(&fake);
    let sink = Arc::new(CollectSink::new());
    let cancel = CancellationToken::new();
    let ctx = DriverContext::new(
        "d".into(),
        sink.clone(),
        cancel.clone(),
        Clock::virtual_from(0),
    );
    let mut task = tokio::spawn(f.create().expect("driver").run(ctx));
    let ended = tokio::select! {
        r = &mut task => Some(r.expect("no panic").expect_err("only cancellation ends it cleanly").kind),
        _ = tokio::time::sleep(Duration::from_secs(secs)) => None,
    };
    if ended.is_none() {
        cancel.cancel();
        let r = tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("prompt exit")
            .expect("no panic");
        assert!(r.is_ok());
    }
    let served = *fake.served.lock().expect("mutex");
    (sink.samples(), reg, ended, served)
}

#[tokio::test(start_paused = true)]
async fn a_healthy_device_reads_exact_values() {
    let (samples, reg, ended, _) = run_with(Fault::None, 5).await;
    assert_eq!(ended, None);
    let a = of(&samples, &reg, "d.a");
    assert_eq!(a.len(), 5);
    assert!(a.iter().all(|s| s.value.as_f64() == 1000.0));
    assert_eq!(
        of(&samples, &reg, "d.b").last().map(|s| s.value.as_f64()),
        Some(1001.0)
    );
}

#[tokio::test(start_paused = true)]
async fn slow_replies_within_the_timeout_are_values_with_their_rtt() {
    let (samples, reg, ended, _) = run_with(Fault::Slow, 5).await;
    assert_eq!(ended, None);
    assert!(
        of(&samples, &reg, "d.a")
            .iter()
            .all(|s| s.value.as_f64() == 1000.0)
    );
    let rtt = of(&samples, &reg, "d.comm.rtt_ms")
        .last()
        .map(|s| s.value.as_f64());
    assert!(rtt.is_some_and(|r| (400.0..500.0).contains(&r)), "{rtt:?}");
}

#[tokio::test(start_paused = true)]
async fn silence_and_garbled_replies_mark_tags_bad_and_back_off_without_stopping() {
    for (fault, why) in [
        (Fault::NoReply, BadReason::Timeout),
        (Fault::Truncated, BadReason::Timeout),
        (Fault::WrongUnit, BadReason::Communication),
        (Fault::WrongTransaction, BadReason::Communication),
    ] {
        let (samples, reg, ended, served) = run_with(fault, 30).await;
        assert_eq!(ended, None, "{fault:?}: the driver keeps running");
        let a = of(&samples, &reg, "d.a");
        assert!(
            !a.is_empty() && a.iter().all(|s| s.quality == Quality::Bad(why)),
            "{fault:?}: {a:?}"
        );
        // Backoff 2, 4, 8, 16 s: the device is asked ~5 times in 30 s, not 30.
        assert!(
            (3..=6).contains(&served),
            "{fault:?}: {served} requests in 30 s"
        );
        let health = of(&samples, &reg, "d.comm.health")
            .last()
            .map(|s| s.value.as_f64());
        assert!(health.is_some_and(|h| h < 60.0), "{fault:?}: {health:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_reset_mid_frame_fails_the_attempt_as_transient() {
    let (samples, reg, ended, _) = run_with(Fault::ResetMidFrame, 5).await;
    assert_eq!(ended, Some(ErrorKind::Transient));
    assert!(
        of(&samples, &reg, "d.a")
            .iter()
            .all(|s| !s.quality.is_good())
    );
}

#[tokio::test(start_paused = true)]
async fn a_connection_the_device_closes_is_named_as_such() {
    // tokio-modbus turns the end of the stream into the thread's last OS error
    // ("Resource temporarily unavailable (os error 11)"); the driver says what
    // happened.
    let fake = Fake::new(Fault::CloseAfterRequest);
    let (f, _reg) = setup(&fake);
    let sink = Arc::new(CollectSink::new());
    let ctx = DriverContext::new(
        "d".into(),
        sink,
        CancellationToken::new(),
        Clock::virtual_from(0),
    );
    let run = f.create().expect("driver").run(ctx);
    let err = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the attempt ends")
        .expect_err("a closed connection fails the attempt");
    assert_eq!(err.kind, ErrorKind::Transient);
    let text = err.to_string();
    assert!(text.contains("the device closed the connection"), "{text}");
    assert!(!text.contains("os error"), "{text}");
}
