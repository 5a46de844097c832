//! The `[[drivers]]` section of an MQTT sensor driver: the broker and the
//! subscriptions, each a topic filter, a payload format and signal templates.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use edge_driver_api::config::{Span, TableReader};
use edge_driver_api::{
    DriverError, SignalDecl, SignalId, SignalPattern, SignalRegistry, template_placeholders,
};

use crate::driver::MqttFactory;
use crate::payload::{Format, Pointer, TimeUnit};
use crate::topic::Filter;

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
                address: Some("message statistics".into()),
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
                    address: Some(s.filter.broker_filter()),
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
        Ok(MqttFactory::new(self, stat_ids, known))
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
