//! `mqtt`: sensors that publish to an MQTT broker.
//!
//! ```toml
//! [[drivers]]
//! name = "sensors"
//! kind = "mqtt"
//! host = "127.0.0.1"
//! port = 1883
//! # client_id = "edge-agent-sensors"
//! # username = "gw"; password_file = "/etc/edge-agent/mqtt.pw"  (or password_env)
//! # tls = true; ca_file = "..."; cert_file/key_file (mutual TLS); server_name
//! qos = 1                  # subscription QoS (0 or 1)
//!
//! [[drivers.subscriptions]]
//! topic = "plant/+line/+machine/temp"     # +name / #name: named wildcards
//! format = "number"                        # number | text | json | senml
//! signal = "{line}.{machine}.temp"         # a template over the wildcard names
//! unit = "°C"
//!
//! [[drivers.subscriptions]]
//! topic = "plant/+line/env"
//! format = "json"
//! timestamp = "/ts"                        # optional pointer to the time
//! timestamp_unit = "ms"                    # s | ms
//! values = [{ pointer = "/temp", signal = "{line}.env.temp" },
//!           { pointer = "/hum", signal = "{line}.env.hum" }]
//!
//! [[drivers.subscriptions]]
//! topic = "senml/+dev"
//! format = "senml"
//! signal = "{dev}.{name}"                  # {name}: the record's base name + name
//! ```
//!
//! Templates declare *families* of signals ([`SignalPattern`]). A concrete name is
//! interned when the configuration uses it (an asset windows `l1.m7.temp`); values
//! for names nobody uses are counted (`<driver>.mqtt.unmapped`) and dropped, so a
//! flood of new topics cannot grow memory. Garbage payloads are counted
//! (`<driver>.mqtt.bad_payloads`); NaN and infinities become bad-quality samples.
//! A payload time (JSON pointer or SenML) sets the sample's wall time. Messages go to
//! the ring buffer, whose overflow policy bounds memory under a flood (dropped
//! samples are counted there).

pub mod topic;

pub use edge_driver_api::payload;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use edge_driver_api::config::{Span, TableReader};
use edge_driver_api::{
    BoxFuture, Driver, DriverContext, DriverError, DriverFactory, Sample, SignalDecl, SignalId,
    SignalPattern, SignalRegistry, Timestamp, render_template, template_placeholders,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

pub use payload::{Format, Found, Pointer, TimeUnit};
pub use topic::Filter;

/// One subscription.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscription {
    pub filter: Filter,
    pub format: Format,
    /// Signal templates (index = `Pointer::template`; one for the other formats).
    pub templates: Vec<String>,
    pub unit: Option<String>,
    pub span: Span,
}

/// Validated `mqtt` configuration.
#[derive(Clone, Debug)]
pub struct MqttConfig {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// TLS client configuration; plain TCP if `None`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub keep_alive: Duration,
    pub qos: u8,
    pub subscriptions: Vec<Subscription>,
    pub span: Span,
}

const STATS: [&str; 4] = ["messages", "bad_payloads", "unmapped", "connects"];

impl MqttConfig {
    pub fn parse(r: &mut TableReader<'_>, name: &str) -> Option<MqttConfig> {
        let mut ok = true;
        let host = r.req_string("host");
        let port = r
            .int_in("port", 1, 65535)
            .map(|v| v.value as u16)
            .unwrap_or(1883);
        let client_id = r
            .string("client_id")
            .map(|v| v.value)
            .unwrap_or_else(|| format!("edge-agent-{name}"));
        let username = r.string("username").map(|v| v.value);
        let password = edge_driver_api::tls::read_password(r);
        if password.is_some() && username.is_none() {
            r.table_error("a password is configured without `username`")
                .hint("add `username = ...`")
                .emit();
            ok = false;
        }
        let tls = edge_driver_api::tls::read_tls(r);
        let keep_alive = r
            .duration("keep_alive")
            .map(|v| v.value)
            .unwrap_or(Duration::from_secs(30));
        if keep_alive < Duration::from_secs(5) {
            r.table_error("`keep_alive` must be at least 5s").emit();
            ok = false;
        }
        let qos = r.int_in("qos", 0, 1).map(|v| v.value as u8).unwrap_or(1);
        let mut subscriptions = Vec::new();
        let readers = r.tables("subscriptions");
        if readers.is_empty() {
            r.table_error("an mqtt driver needs at least one subscription")
                .hint("add [[drivers.subscriptions]] with topic, format and signal")
                .emit();
            ok = false;
        }
        for mut s in readers {
            match parse_subscription(&mut s) {
                Some(sub) => subscriptions.push(sub),
                None => ok = false,
            }
        }
        let host = host?;
        ok.then(|| MqttConfig {
            name: name.to_string(),
            host: host.value,
            port,
            client_id,
            username,
            password,
            tls,
            keep_alive,
            qos,
            subscriptions,
            span: r.span(),
        })
    }

    /// The fixed signals: the driver's message statistics.
    pub fn signals(&self) -> Vec<SignalDecl> {
        STATS
            .iter()
            .map(|s| SignalDecl {
                name: format!("{}.mqtt.{s}", self.name),
                unit: None,
                span: self.span,
                text: false,
            })
            .collect()
    }

    /// The signal families the subscriptions' templates produce.
    pub fn patterns(&self) -> Vec<SignalPattern> {
        self.subscriptions
            .iter()
            .flat_map(|s| {
                s.templates.iter().map(|t| SignalPattern {
                    template: t.clone(),
                    unit: s.unit.clone(),
                    text: s.format == Format::Text,
                    span: s.span,
                })
            })
            .collect()
    }

    pub fn into_factory(self, registry: &SignalRegistry) -> Result<MqttFactory, DriverError> {
        let stat_ids = STATS
            .iter()
            .map(|s| {
                let n = format!("{}.mqtt.{s}", self.name);
                registry
                    .get(&n)
                    .ok_or_else(|| DriverError::config(format!("signal `{n}` was not registered")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Every concrete name interned for this driver's templates.
        let patterns = self.patterns();
        let mut known = HashMap::new();
        for i in 0..registry.len() {
            let id = SignalId(i as u32);
            let m = registry.meta(id);
            if *m.driver == *self.name && patterns.iter().any(|p| p.matches(&m.name)) {
                known.insert(m.name.to_string(), (id, m.text));
            }
        }
        Ok(MqttFactory {
            shared: Arc::new(Shared {
                cfg: self,
                stat_ids,
                known,
                messages: AtomicU64::new(0),
                bad_payloads: AtomicU64::new(0),
                unmapped: AtomicU64::new(0),
                connects: AtomicU64::new(0),
            }),
        })
    }
}

fn parse_subscription(s: &mut TableReader<'_>) -> Option<Subscription> {
    let topic = s.req_string("topic");
    let format_kind = s
        .choice(
            "format",
            &[("number", 0u8), ("text", 1), ("json", 2), ("senml", 3)],
        )
        .map(|v| v.value)
        .unwrap_or(0);
    let unit = s.string("unit").map(|v| v.value);
    let filter = match &topic {
        Some(t) => match Filter::parse(&t.value) {
            Ok(f) => Some(f),
            Err(msg) => {
                s.error(t.span, "topic", msg)
                    .expected("an MQTT filter; name wildcards to use them in signals, e.g. plant/+line/+machine/temp")
                    .emit();
                None
            }
        },
        None => None,
    };
    let mut templates = Vec::new();
    let mut spans = Vec::new();
    let format = if format_kind == 2 {
        let timestamp = s.string("timestamp");
        let unit = s
            .choice(
                "timestamp_unit",
                &[("s", TimeUnit::Seconds), ("ms", TimeUnit::Millis)],
            )
            .map(|v| v.value)
            .unwrap_or(TimeUnit::Seconds);
        let mut values = Vec::new();
        let vals = s.tables("values");
        if vals.is_empty() {
            s.table_error("a json subscription needs `values`")
                .hint("values = [{ pointer = \"/temp\", signal = \"{line}.temp\" }]")
                .emit();
            return None;
        }
        for mut v in vals {
            let (Some(p), Some(sig)) = (v.req_string("pointer"), v.req_string("signal")) else {
                return None;
            };
            if !(p.value.is_empty() || p.value.starts_with('/')) {
                v.error(p.span, "pointer", "a JSON pointer starts with `/`")
                    .expected("e.g. \"/temp\" or \"/env/hum\" (RFC 6901)")
                    .emit();
                return None;
            }
            values.push(Pointer {
                pointer: p.value,
                template: templates.len(),
            });
            templates.push(sig.value);
            spans.push(sig.span);
        }
        Format::Json {
            values,
            timestamp: timestamp.map(|t| (t.value, unit)),
        }
    } else {
        let sig = s.req_string("signal")?;
        templates.push(sig.value);
        spans.push(sig.span);
        match format_kind {
            1 => Format::Text,
            3 => Format::SenMl,
            _ => Format::Number,
        }
    };
    let filter = filter?;
    // Every placeholder must come from a named wildcard (or SenML's {name}).
    let names = filter.names();
    let mut ok = true;
    for (t, span) in templates.iter().zip(&spans) {
        match template_placeholders(t) {
            None => {
                s.error(*span, "signal", format!("`{t}`: unbalanced braces"))
                    .emit();
                ok = false;
            }
            Some(ph) => {
                for p in ph {
                    let from_senml = p == "name" && format == Format::SenMl;
                    if !names.contains(&p) && !from_senml {
                        s.error(
                            *span,
                            "signal",
                            format!("`{{{p}}}` is not a wildcard of the topic"),
                        )
                        .expected(format!(
                            "one of: {}",
                            if names.is_empty() {
                                "(the topic names no wildcards)".to_string()
                            } else {
                                names.join(", ")
                            }
                        ))
                        .hint("name a wildcard in the topic, e.g. plant/+line/temp → {line}")
                        .emit();
                        ok = false;
                    }
                }
            }
        }
    }
    ok.then(|| Subscription {
        filter,
        format,
        templates,
        unit,
        span: s.span(),
    })
}

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

impl DriverFactory for MqttFactory {
    fn kind(&self) -> &'static str {
        "mqtt"
    }
    fn create(&self) -> Result<Box<dyn Driver>, DriverError> {
        Ok(Box::new(MqttDriver {
            shared: self.shared.clone(),
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

async fn run(sh: Arc<Shared>, ctx: DriverContext) -> Result<(), DriverError> {
    let cfg = &sh.cfg;
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
    let (client, mut events) = AsyncClient::new(opts, 16);
    let qos = if cfg.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let filters: Vec<rumqttc::SubscribeFilter> = cfg
        .subscriptions
        .iter()
        .map(|s| rumqttc::SubscribeFilter::new(s.filter.broker_filter(), qos))
        .collect();
    let mut batch: Vec<Sample> = Vec::with_capacity(64);
    let mut caps = topic::Captures::default();
    let mut name = String::new();
    let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
    let mut warned_unmapped = 0u32;
    loop {
        let ev = tokio::select! {
            _ = ctx.cancelled() => {
                let _ = client.try_disconnect();
                return Ok(());
            }
            _ = stats_tick.tick() => {
                batch.clear();
                push_stats(&sh, ctx.clock().now(), &mut batch);
                if ctx.send(&batch).await.is_err() {
                    return Ok(());
                }
                continue;
            }
            ev = events.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let n = sh.connects.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::info!(driver = ctx.name(), broker = %format!("{}:{}", cfg.host, cfg.port), connects = n, "mqtt sensors connected");
                if client.try_subscribe_many(filters.clone()).is_err() {
                    return Err(DriverError::transient(
                        "cannot queue the subscription request",
                    ));
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
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
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                sh.messages.fetch_add(1, Ordering::Relaxed);
                batch.clear();
                let now = ctx.clock().now();
                for sub in &cfg.subscriptions {
                    if !sub.filter.matches(&p.topic, &mut caps) {
                        continue;
                    }
                    let mut bad = false;
                    let res = payload::parse(&sub.format, &p.payload, now.wall_ns, &mut |item| {
                        let mut captures: Vec<(&str, &str)> = caps.pairs().collect();
                        if let Some(n) = &item.name {
                            captures.push(("name", n.as_str()));
                        }
                        let template = &sub.templates[item.template.min(sub.templates.len() - 1)];
                        if !render_template(template, &captures, &mut name) {
                            bad = true;
                            return;
                        }
                        let Some(&(id, text)) = sh.known.get(name.as_str()) else {
                            sh.unmapped.fetch_add(1, Ordering::Relaxed);
                            if warned_unmapped < 16 {
                                warned_unmapped += 1;
                                tracing::info!(driver = ctx.name(), signal = %name, topic = %p.topic,
                                    "value for a signal no asset uses: counted and dropped (logged for the first 16)");
                            }
                            return;
                        };
                        let ts = Timestamp {
                            wall_ns: item.wall_ns.unwrap_or(now.wall_ns),
                            ..now
                        };
                        if !payload::deliver(item.value, text, id, ts, &ctx, &mut batch) {
                            bad = true;
                        }
                    });
                    if let Err(e) = res {
                        bad = true;
                        tracing::debug!(driver = ctx.name(), topic = %p.topic, error = ?e, "unreadable payload");
                    }
                    if bad {
                        sh.bad_payloads.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if !batch.is_empty() && ctx.send(&batch).await.is_err() {
                    return Ok(());
                }
            }
            Ok(_) => {}
            Err(e) => {
                return Err(DriverError::transient(format!(
                    "mqtt broker {}:{}: {e}",
                    cfg.host, cfg.port
                )));
            }
        }
    }
}
