//! Entry points of the fuzz targets in `fuzz/` (`cargo fuzz`, feature
//! `fuzzing`), also run on the kept corpora by the unit tests below: the whole
//! response path — tokio-modbus's TCP or RTU framing, then our decoding of
//! registers and bits into typed values, strings and bad-quality samples — on
//! arbitrary reply bytes. The driver must never panic and never stall on them.

use std::sync::Arc;
use std::time::Duration;

use edge_driver_api::testing::{CollectSink, parse_section, registry};
use edge_driver_api::{BoxFuture, Clock, DriverContext, DriverFactory};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Connector, ModbusConfig, Stream};

/// The tags every reply is decoded for: every type, word orders, a string,
/// bits, two units (so requests go to different slaves).
const TAGS: &str = r#"
[[tags]]
name = "f.u16"
area = "holding"
address = 0
[[tags]]
name = "f.f32"
area = "holding"
address = 1
type = "f32"
order = "CDAB"
[[tags]]
name = "f.i64"
area = "input"
address = 0
type = "i64"
order = "DCBA"
[[tags]]
name = "f.text"
area = "holding"
address = 10
type = "string"
length = 4
[[tags]]
name = "f.coil"
area = "coil"
address = 3
[[tags]]
name = "f.unit2"
area = "holding"
address = 0
unit_id = 2
type = "f64"
"#;

/// Answers every request with `reply` (a fuzz input), whatever was asked; with
/// `echo_tid` the reply's first two bytes become the request's transaction id,
/// as a device's would, so the fuzzer reaches the decoding behind the MBAP check.
#[derive(Debug)]
struct Replay(Arc<Vec<u8>>, bool);

impl Connector for Replay {
    fn connect(&self) -> BoxFuture<'static, std::io::Result<Box<dyn Stream>>> {
        let (reply, echo_tid) = (self.0.clone(), self.1);
        Box::pin(async move {
            let (client, mut server) = tokio::io::duplex(4096);
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                let mut out = reply.to_vec();
                while let Ok(n) = server.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    if echo_tid && n >= 2 && out.len() >= 2 {
                        out[..2].copy_from_slice(&buf[..2]);
                    }
                    if server.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
            Ok(Box::new(client) as Box<dyn Stream>)
        })
    }
}

/// A current-thread runtime in paused time, made once per thread: building
/// one per input would cost more than the input.
fn runtime() -> Option<&'static tokio::runtime::Runtime> {
    thread_local! {
        static RT: Option<&'static tokio::runtime::Runtime> = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .ok()
            .map(|rt| &*Box::leak(Box::new(rt)));
    }
    RT.with(|rt| *rt)
}

/// Runs the driver for 1.2 s of virtual time (two poll cycles) against a
/// device that answers every request with `reply`, framed as `transport` (`tcp`
/// or `rtu_over_tcp`).
fn run(reply: &[u8], transport: &str) {
    let Some(rt) = runtime() else {
        return;
    };
    thread_local! {
        static CONFIGS: Vec<(String, ModbusConfig)> = ["tcp", "rtu_over_tcp"]
            .iter()
            .map(|t| {
                let toml = format!(
                    "host = \"127.0.0.1\"\ntransport = \"{t}\"\npoll = \"1s\"\ntimeout = \"200ms\"\nslave_backoff = \"1s\"\n{TAGS}"
                );
                (t.to_string(), parse_section(&toml, |r| ModbusConfig::parse(r, "f")))
            })
            .collect();
    }
    let Some(cfg) = CONFIGS.with(|c| {
        c.iter()
            .find(|(t, _)| t == transport)
            .map(|(_, c)| c.clone())
    }) else {
        return;
    };
    let reg = registry(cfg.signals(), "f");
    let device = Replay(Arc::new(reply.to_vec()), transport == "tcp");
    let Ok(factory) = cfg.into_factory_with(&reg, Some(Arc::new(device))) else {
        return;
    };
    rt.block_on(async move {
        let sink = Arc::new(CollectSink::new());
        let cancel = tokio_util::sync::CancellationToken::new();
        let ctx = DriverContext::new(
            "f".into(),
            sink.clone(),
            cancel.clone(),
            Clock::virtual_from(0),
        );
        let Ok(driver) = factory.create() else {
            return;
        };
        let task = tokio::spawn(driver.run(ctx));
        tokio::time::sleep(Duration::from_millis(1200)).await;
        cancel.cancel();
        // A driver that does not return promptly once cancelled is a stall; one
        // whose task panicked (caught by tokio, so check) is a crash.
        let ended = tokio::time::timeout(Duration::from_secs(2), task).await;
        let joined = ended.expect("the driver did not stop after cancellation");
        assert!(joined.is_ok(), "the driver panicked");
        for s in sink.samples() {
            assert!(s.signal.index() < reg.len());
        }
    });
}

/// A Modbus TCP (MBAP-framed) reply.
pub fn tcp_reply(bytes: &[u8]) {
    run(bytes, "tcp");
}

/// A Modbus RTU (CRC-framed) reply, over a TCP stream.
pub fn rtu_reply(bytes: &[u8]) {
    run(bytes, "rtu_over_tcp");
}

#[cfg(test)]
mod tests {
    fn replay(target: &str, f: fn(&[u8])) {
        edge_driver_api::testing::replay_corpus(env!("CARGO_MANIFEST_DIR"), target, f);
    }

    #[test]
    fn the_tcp_reply_corpus_runs_through_the_driver_without_panic() {
        replay("tcp_reply", super::tcp_reply);
    }

    #[test]
    fn the_rtu_reply_corpus_runs_through_the_driver_without_panic() {
        replay("rtu_reply", super::rtu_reply);
    }
}
