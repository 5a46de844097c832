//! The `[[drivers]]` section of a CoAP driver: the server and its resources.

use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use edge_driver_api::config::{Span, TableReader};
use edge_driver_api::health::{CommStats, HealthConfig, comm_signal_decls};
use edge_driver_api::payload::{Format, Pointer, TimeUnit};
use edge_driver_api::{
    DriverError, SignalDecl, SignalId, SignalPattern, SignalRegistry, WriteLimits,
    template_placeholders,
};

use crate::driver::{CoapFactory, Shared};

/// Poll or observe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Poll,
    Observe,
}

/// One resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub path: String,
    /// The Content-Format asked for (the Accept option); `None` sends none.
    pub accept: Option<u16>,
    pub mode: Mode,
    pub poll: Duration,
    pub observe_timeout: Duration,
    pub format: Format,
    pub templates: Vec<String>,
    pub unit: Option<String>,
    pub span: Span,
    /// `writable = true` and its limits (a `number` resource only).
    pub write: Option<WriteLimits>,
    /// How a write is sent: PUT (`write_method = "put"`, the default) or POST.
    pub write_post: bool,
}

/// Validated `coap` configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct CoapConfig {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub ack_timeout: Duration,
    pub max_retransmit: u32,
    pub health: HealthConfig,
    pub resources: Vec<Resource>,
    pub span: Span,
}

impl CoapConfig {
    pub fn parse(r: &mut TableReader<'_>, name: &str) -> Option<CoapConfig> {
        let mut ok = true;
        let host = r.req_string("host");
        let port = r
            .int_in("port", 1, 65535)
            .map(|v| v.value as u16)
            .unwrap_or(5683);
        let ack_timeout = r
            .duration("ack_timeout")
            .map(|v| v.value)
            .unwrap_or(Duration::from_secs(2));
        let max_retransmit = r
            .int_in("max_retransmit", 0, 10)
            .map(|v| v.value as u32)
            .unwrap_or(4);
        if ack_timeout < Duration::from_millis(10) {
            r.table_error("`ack_timeout` must be at least 10ms").emit();
            ok = false;
        }
        // The exchange lifetime bounds a request: the "timeout" of health scoring.
        let exchange = ack_timeout.mul_f64(1.5) * ((1u32 << max_retransmit.min(10)) * 2 - 1);
        let mut resources = Vec::new();
        let readers = r.tables("resources");
        if readers.is_empty() {
            r.table_error("a coap driver needs at least one resource")
                .hint("add [[drivers.resources]] with path, format and signal")
                .emit();
            ok = false;
        }
        let mut fastest = Duration::from_secs(3600);
        for mut t in readers {
            match parse_resource(&mut t) {
                Some(res) => {
                    fastest = fastest.min(res.poll);
                    resources.push(res);
                }
                None => ok = false,
            }
        }
        let health = HealthConfig::parse(r, fastest, exchange);
        let host = host?;
        if (host.value.as_str(), port).to_socket_addrs().is_err() {
            r.error(
                host.span,
                "host",
                format!("cannot resolve `{}`", host.value),
            )
            .expected("an IP address or a resolvable host name")
            .emit();
            ok = false;
        }
        ok.then(|| CoapConfig {
            name: name.to_string(),
            host: host.value,
            port,
            ack_timeout,
            max_retransmit,
            health,
            resources,
            span: r.span(),
        })
    }

    /// Fixed signals: every concrete resource signal, then the link statistics.
    pub fn signals(&self) -> Vec<SignalDecl> {
        let mut out = Vec::new();
        for r in &self.resources {
            for t in &r.templates {
                if template_placeholders(t).is_some_and(|p| p.is_empty()) {
                    out.push(SignalDecl {
                        name: t.clone(),
                        unit: r.unit.clone(),
                        span: r.span,
                        text: r.format == Format::Text,
                        address: Some(r.path.clone()),
                    });
                }
            }
        }
        out.extend(comm_signal_decls(&self.name, self.span));
        out
    }

    /// SenML templates with `{name}`: signal families.
    pub fn patterns(&self) -> Vec<SignalPattern> {
        self.resources
            .iter()
            .flat_map(|r| {
                r.templates
                    .iter()
                    .filter(|t| template_placeholders(t).is_some_and(|p| !p.is_empty()))
                    .map(|t| SignalPattern {
                        template: t.clone(),
                        unit: r.unit.clone(),
                        text: false,
                        span: r.span,
                        address: Some(r.path.clone()),
                    })
            })
            .collect()
    }

    pub fn into_factory(self, registry: &SignalRegistry) -> Result<CoapFactory, DriverError> {
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                DriverError::config(format!("cannot resolve {}:{}", self.host, self.port))
            })?;
        let fastest = self
            .resources
            .iter()
            .map(|r| r.poll)
            .min()
            .unwrap_or(Duration::from_secs(1));
        let stats = CommStats::new(&self.name, self.health.clone(), fastest, registry)?;
        // Name → id for everything this driver may produce.
        let mut known = std::collections::HashMap::new();
        for i in 0..registry.len() {
            let id = SignalId(i as u32);
            let m = registry.meta(id);
            if *m.driver == *self.name {
                known.insert(m.name.to_string(), (id, m.text));
            }
        }
        Ok(CoapFactory {
            shared: Arc::new(Shared {
                addr,
                cfg: self,
                stats,
                known,
            }),
        })
    }
}

/// Content-Formats by name (RFC 7252 §12.3, RFC 8428).
const CONTENT_FORMATS: [(&str, u16); 5] = [
    ("text", 0),
    ("json", 50),
    ("cbor", 60),
    ("senml+json", 110),
    ("senml+cbor", 112),
];

/// `accept`: a Content-Format name or number; by default the one `format`
/// decodes (a server that serves several representations, as aiocoap can, may
/// otherwise answer in its default one, often text), none for `number`/`text`.
fn parse_accept(t: &mut TableReader<'_>, kind: u8) -> Option<u16> {
    let default = match kind {
        2 => Some(50),
        3 => Some(60),
        4 => Some(110),
        5 => Some(112),
        _ => None,
    };
    let is_number = match t.node("accept") {
        None => return default,
        Some(n) => matches!(n.value, edge_driver_api::config::NodeValue::Int(_)),
    };
    if is_number {
        return t.int_in("accept", 0, 65535).map(|n| n.value as u16);
    }
    let names: Vec<(&str, Option<u16>)> = CONTENT_FORMATS
        .iter()
        .map(|(n, v)| (*n, Some(*v)))
        .chain([("none", None)])
        .collect();
    t.choice("accept", &names).map_or(default, |v| v.value)
}

fn parse_resource(t: &mut TableReader<'_>) -> Option<Resource> {
    let path = t.req_string("path");
    let mode = t
        .choice("mode", &[("poll", Mode::Poll), ("observe", Mode::Observe)])
        .map(|v| v.value)
        .unwrap_or(Mode::Poll);
    let poll = t
        .duration("poll")
        .map(|v| v.value)
        .unwrap_or(Duration::from_secs(1));
    let observe_timeout = t
        .duration("observe_timeout")
        .map(|v| v.value)
        .unwrap_or(Duration::from_secs(300));
    let kind = t
        .choice(
            "format",
            &[
                ("number", 0u8),
                ("text", 1),
                ("json", 2),
                ("cbor", 3),
                ("senml", 4),
                ("senml_cbor", 5),
            ],
        )
        .map(|v| v.value)
        .unwrap_or(0);
    let unit = t.string("unit").map(|v| v.value);
    let mut templates = Vec::new();
    let format = if kind == 2 || kind == 3 {
        let ts = t.string("timestamp");
        let tu = t
            .choice(
                "timestamp_unit",
                &[("s", TimeUnit::Seconds), ("ms", TimeUnit::Millis)],
            )
            .map(|v| v.value)
            .unwrap_or(TimeUnit::Seconds);
        let mut values = Vec::new();
        let vals = t.tables("values");
        if vals.is_empty() {
            t.table_error("a json/cbor resource needs `values`")
                .hint("values = [{ pointer = \"/t\", signal = \"dev.temp\" }]")
                .emit();
            return None;
        }
        for mut v in vals {
            let (Some(p), Some(sig)) = (v.req_string("pointer"), v.req_string("signal")) else {
                return None;
            };
            values.push(Pointer {
                pointer: p.value,
                template: templates.len(),
            });
            templates.push(sig.value);
        }
        let timestamp = ts.map(|s| (s.value, tu));
        if kind == 2 {
            Format::Json { values, timestamp }
        } else {
            Format::Cbor { values, timestamp }
        }
    } else {
        let sig = t.req_string("signal")?;
        let senml = kind == 4 || kind == 5;
        match template_placeholders(&sig.value) {
            Some(p) if p.iter().all(|x| *x == "name") && (senml || p.is_empty()) => {}
            _ => {
                t.error(
                    sig.span,
                    "signal",
                    format!(
                        "`{}`: only SenML resources take a template, and only `{{name}}`",
                        sig.value
                    ),
                )
                .expected("a signal name, or for senml a template such as \"dev.{name}\"")
                .emit();
                return None;
            }
        }
        templates.push(sig.value);
        match kind {
            1 => Format::Text,
            4 => Format::SenMl,
            5 => Format::SenMlCbor,
            _ => Format::Number,
        }
    };
    let accept = parse_accept(t, kind);
    let write = WriteLimits::parse(t);
    let write_post = t
        .choice("write_method", &[("put", false), ("post", true)])
        .map(|v| v.value)
        .unwrap_or(false);
    if write.is_some() && kind != 0 {
        t.table_error("only a `number` resource can be written")
            .hint("remove `writable`, or write through a resource with format = \"number\"")
            .emit();
        return None;
    }
    let path = path?;
    if !path.value.starts_with('/') {
        t.error(path.span, "path", "a resource path starts with `/`")
            .emit();
        return None;
    }
    Some(Resource {
        path: path.value,
        accept,
        mode,
        poll,
        observe_timeout,
        format,
        templates,
        unit,
        span: t.span(),
        write,
        write_post,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_driver_api::config::{Diagnostics, TableReader, parse_document};

    /// The `accept` of the one resource of `resource` (its TOML lines), and the
    /// diagnostics' messages.
    fn accept(resource: &str) -> (Option<u16>, Vec<String>) {
        let toml = format!("host = \"127.0.0.1\"\n[[resources]]\npath = \"/x\"\n{resource}");
        let table = parse_document(&toml).expect("TOML");
        let diags = Diagnostics::new();
        let cfg = {
            let mut r = TableReader::new(&table, "drivers[0]", &diags);
            CoapConfig::parse(&mut r, "d")
        };
        let msgs = diags.into_vec().into_iter().map(|d| d.message).collect();
        (cfg.and_then(|c| c.resources[0].accept), msgs)
    }

    #[test]
    fn accept_follows_the_format_and_can_be_set_by_name_or_number() {
        let json = "format = \"json\"\nvalues = [{ pointer = \"/t\", signal = \"d.t\" }]\n";
        assert_eq!(accept(json), (Some(50), vec![]));
        assert_eq!(
            accept("format = \"senml\"\nsignal = \"d.{name}\"\n"),
            (Some(110), vec![])
        );
        assert_eq!(accept("signal = \"d.t\"\n"), (None, vec![]));
        assert_eq!(
            accept("signal = \"d.t\"\naccept = \"cbor\"\n"),
            (Some(60), vec![])
        );
        assert_eq!(
            accept("signal = \"d.t\"\naccept = 11050\n"),
            (Some(11050), vec![])
        );
        assert_eq!(
            accept(&format!("{json}accept = \"none\"\n")),
            (None, vec![])
        );
        let (_, errs) = accept("signal = \"d.t\"\naccept = \"xml\"\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
    }
}
