//! The running driver: one broker connection, its subscriptions, and the decoding
//! of every message into samples of the configured signals.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use edge_driver_api::{
    BoxFuture, Driver, DriverContext, DriverError, DriverFactory, Sample, SignalId, Timestamp,
    render_template,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeFilter};

use crate::config::MqttConfig;
use crate::payload;
use crate::topic;

/// Unmapped signals logged (once each, at info) before the driver only counts them.
const UNMAPPED_LOGGED: u32 = 16;

#[derive(Debug)]
struct Shared {
    cfg: MqttConfig,
    stat_ids: Vec<SignalId>,
    /// Concrete signal names of this driver's templates → (id, text).
    known: HashMap<String, (SignalId, bool)>,
    messages: AtomicU64,
    bad_payloads: AtomicU64,
    unmapped: AtomicU64,
    connects: AtomicU64,
}

/// Creates MQTT sensor drivers (one broker connection each).
#[derive(Debug, Clone)]
pub struct MqttFactory {
    shared: Arc<Shared>,
}

impl MqttFactory {
    /// `stat_ids` in the order of the statistics; `known` every concrete name the
    /// configuration interned for this driver's templates.
    pub(crate) fn new(
        cfg: MqttConfig,
        stat_ids: Vec<SignalId>,
        known: HashMap<String, (SignalId, bool)>,
    ) -> MqttFactory {
        MqttFactory {
            shared: Arc::new(Shared {
                cfg,
                stat_ids,
                known,
                messages: AtomicU64::new(0),
                bad_payloads: AtomicU64::new(0),
                unmapped: AtomicU64::new(0),
                connects: AtomicU64::new(0),
            }),
        }
    }
}

impl DriverFactory for MqttFactory {
    fn kind(&self) -> &'static str {
        "mqtt"
    }
    fn create(&self) -> Result<Box<dyn Driver>, DriverError> {
        Ok(Box::new(MqttDriver {
            shared: self.shared.clone(),
        }))
    }

    /// A TCP connect to the broker.
    fn probe(&self, _ctx: &DriverContext) -> Option<BoxFuture<'static, bool>> {
        let sh = self.shared.clone();
        Some(Box::pin(async move {
            let addr = (sh.cfg.host.as_str(), sh.cfg.port);
            edge_driver_api::tcp_reachable(addr, std::time::Duration::from_secs(1)).await
        }))
    }
}

struct MqttDriver {
    shared: Arc<Shared>,
}

impl Driver for MqttDriver {
    fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<'static, Result<(), DriverError>> {
        Box::pin(run(self.shared, ctx))
    }
}

fn push_stats(sh: &Shared, ts: Timestamp, out: &mut Vec<Sample>) {
    let vals = [
        sh.messages.load(Ordering::Relaxed),
        sh.bad_payloads.load(Ordering::Relaxed),
        sh.unmapped.load(Ordering::Relaxed),
        sh.connects.load(Ordering::Relaxed),
    ];
    for (id, v) in sh.stat_ids.iter().zip(vals) {
        out.push(Sample::new_f64(ts, *id, v as f64));
    }
}

/// A fresh connection's options (clean session: the subscriptions are made again
/// on every ConnAck).
fn options(cfg: &MqttConfig) -> MqttOptions {
    let mut opts = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    opts.set_keep_alive(cfg.keep_alive);
    opts.set_clean_session(true);
    opts.set_max_packet_size(256 * 1024, 256 * 1024);
    if let Some(u) = &cfg.username {
        opts.set_credentials(u.clone(), cfg.password.clone().unwrap_or_default());
    }
    if let Some(tls) = &cfg.tls {
        opts.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.clone()),
        ));
    }
    opts
}

fn filters(cfg: &MqttConfig) -> Vec<SubscribeFilter> {
    let qos = if cfg.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    cfg.subscriptions
        .iter()
        .map(|s| SubscribeFilter::new(s.filter.broker_filter(), qos))
        .collect()
}

async fn run(sh: Arc<Shared>, ctx: DriverContext) -> Result<(), DriverError> {
    let cfg = &sh.cfg;
    let (client, mut events) = AsyncClient::new(options(cfg), 16);
    let filters = filters(cfg);
    let mut decoder = Decoder::new(&sh);
    let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let ev = tokio::select! {
            _ = ctx.cancelled() => {
                let _ = client.try_disconnect();
                return Ok(());
            }
            _ = stats_tick.tick() => {
                decoder.batch.clear();
                push_stats(&sh, ctx.clock().now(), &mut decoder.batch);
                if ctx.send(&decoder.batch).await.is_err() {
                    return Ok(());
                }
                continue;
            }
            ev = events.poll() => ev,
        };
        let packet = match ev {
            Ok(Event::Incoming(p)) => p,
            Ok(_) => continue,
            Err(e) => {
                return Err(DriverError::transient(format!(
                    "mqtt broker {}:{}: {e}",
                    cfg.host, cfg.port
                )));
            }
        };
        match packet {
            Packet::ConnAck(_) => subscribe(&sh, &ctx, &client, &filters)?,
            Packet::SubAck(ack) => check_suback(&ctx, &ack)?,
            Packet::Publish(p) => {
                decoder.decode(&ctx, &p);
                if !decoder.batch.is_empty() && ctx.send(&decoder.batch).await.is_err() {
                    return Ok(());
                }
            }
            _ => {}
        }
    }
}

fn subscribe(
    sh: &Shared,
    ctx: &DriverContext,
    client: &AsyncClient,
    filters: &[SubscribeFilter],
) -> Result<(), DriverError> {
    let cfg = &sh.cfg;
    let n = sh.connects.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::info!(driver = ctx.name(), broker = %format!("{}:{}", cfg.host, cfg.port), connects = n, "mqtt sensors connected");
    client
        .try_subscribe_many(filters.to_vec())
        .map_err(|_| DriverError::transient("cannot queue the subscription request"))
}

fn check_suback(ctx: &DriverContext, ack: &rumqttc::SubAck) -> Result<(), DriverError> {
    use rumqttc::SubscribeReasonCode;
    if ack
        .return_codes
        .iter()
        .any(|c| matches!(c, SubscribeReasonCode::Failure))
    {
        return Err(DriverError::config(format!(
            "the broker refused a subscription of driver `{}` (check the ACL for its topics)",
            ctx.name()
        )));
    }
    Ok(())
}

/// Turns messages into samples; its buffers live as long as the connection loop, so
/// a message allocates only what its payload format needs.
struct Decoder<'a> {
    sh: &'a Shared,
    batch: Vec<Sample>,
    caps: topic::Captures,
    name: String,
    warned_unmapped: u32,
}

impl<'a> Decoder<'a> {
    fn new(sh: &'a Shared) -> Decoder<'a> {
        Decoder {
            sh,
            batch: Vec::with_capacity(64),
            caps: topic::Captures::default(),
            name: String::new(),
            warned_unmapped: 0,
        }
    }

    /// Decodes one message into `self.batch` through every subscription it matches.
    fn decode(&mut self, ctx: &DriverContext, p: &rumqttc::Publish) {
        self.sh.messages.fetch_add(1, Ordering::Relaxed);
        self.batch.clear();
        let now = ctx.clock().now();
        for sub in &self.sh.cfg.subscriptions {
            if !sub.filter.matches(&p.topic, &mut self.caps) {
                continue;
            }
            let mut bad = false;
            let (caps, name, batch) = (&self.caps, &mut self.name, &mut self.batch);
            let (sh, warned) = (self.sh, &mut self.warned_unmapped);
            let res = payload::parse(&sub.format, &p.payload, now.wall_ns, &mut |item| {
                let mut captures: Vec<(&str, &str)> = caps.pairs().collect();
                if let Some(n) = &item.name {
                    captures.push(("name", n.as_str()));
                }
                let template = &sub.templates[item.template.min(sub.templates.len() - 1)];
                if !render_template(template, &captures, name) {
                    bad = true;
                    return;
                }
                let Some(&(id, text)) = sh.known.get(name.as_str()) else {
                    sh.unmapped.fetch_add(1, Ordering::Relaxed);
                    if *warned < UNMAPPED_LOGGED {
                        *warned += 1;
                        tracing::info!(driver = ctx.name(), signal = %name, topic = %p.topic,
                            "value for a signal no asset uses: counted and dropped (logged for the first 16)");
                    }
                    return;
                };
                let ts = Timestamp {
                    wall_ns: item.wall_ns.unwrap_or(now.wall_ns),
                    ..now
                };
                if !payload::deliver(item.value, text, id, ts, ctx, batch) {
                    bad = true;
                }
            });
            if let Err(e) = res {
                bad = true;
                tracing::debug!(driver = ctx.name(), topic = %p.topic, error = ?e, "unreadable payload");
            }
            if bad {
                self.sh.bad_payloads.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
