//! The agent's own sections: `[agent]`, `[log]`, `[ring]`, `[supervisor]`,
//! `[alerts]`, `[metrics]` and `[telemetry]`, one reader each.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use edge_driver_api::config::{TableReader, closest};
use edge_models::Feature;

use super::check_name;
use crate::alert::RateLimits;
use crate::ingest::ring::OverflowPolicy;
use crate::ingest::supervisor::BackoffConfig;
use crate::ops::control::ControlSocket;
use crate::ops::logging::LogFormat;
use crate::ops::metrics::MetricsSection;
use crate::pipeline::TelemetryConfig;

#[derive(Clone, Debug)]
pub struct AgentSection {
    pub id: Arc<str>,
    pub shutdown_timeout: Duration,
    pub stats_interval: Duration,
    /// Where `edge-agent status` reads the running agent.
    pub control_socket: crate::ops::control::ControlSocket,
}

#[derive(Clone, Debug)]
pub struct LogSection {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Clone, Debug)]
pub struct RingSection {
    pub capacity: usize,
    pub overflow: OverflowPolicy,
    /// Samples the pipeline takes from the ring per step.
    pub batch: usize,
}

#[derive(Clone, Debug)]
pub struct AlertsSection {
    pub limits: RateLimits,
    pub console: bool,
    pub jsonl: Option<PathBuf>,
    /// Bound of the channel from the pipeline to the sinks.
    pub queue: usize,
}

/// `[agent]` (required).
pub(super) fn agent(root: &mut TableReader<'_>) -> Option<AgentSection> {
    {
        let section = root.table("agent");
        match section {
            Some(mut a) => {
                let id = a.req_string("id");
                let id_ok = id.as_ref().is_some_and(|id| check_name(&a, "id", id));
                let shutdown_timeout = a
                    .duration("shutdown_timeout")
                    .map(|d| d.value)
                    .unwrap_or(Duration::from_secs(20));
                let stats_interval = a
                    .duration("stats_interval")
                    .map(|d| d.value)
                    .unwrap_or(Duration::from_secs(60));
                let control_socket = match a.string("control_socket") {
                    None => ControlSocket::Default,
                    Some(p) if p.value.is_empty() => ControlSocket::Off,
                    Some(p) => ControlSocket::At(PathBuf::from(p.value)),
                };
                id.filter(|_| id_ok).map(|id| AgentSection {
                    id: Arc::from(id.value.as_str()),
                    shutdown_timeout,
                    stats_interval: stats_interval.max(Duration::from_secs(1)),
                    control_socket,
                })
            }
            None => {
                if !root.has("agent") {
                    root.table_error("missing required section [agent]")
                        .expected("an [agent] table with at least `id`")
                        .hint("add:\n\n      [agent]\n      id = \"gateway-01\"\n")
                        .emit();
                }
                None
            }
        }
    }
}

/// `[log]`.
pub(super) fn log(root: &mut TableReader<'_>) -> LogSection {
    match root.table("log") {
        Some(mut l) => {
            let level = l
                .string("level")
                .map(|s| s.value)
                .unwrap_or_else(|| "info".into());
            if crate::ops::logging::parse_filter(&level).is_err() {
                l.error(
                    l.span(),
                    "level",
                    format!("`{level}` is not a log level or filter"),
                )
                .expected(
                    "error, warn, info, debug, trace, or a filter like \"info,edge_agent=debug\"",
                )
                .emit();
            }
            let format = l
                .choice(
                    "format",
                    &[("human", LogFormat::Human), ("json", LogFormat::Json)],
                )
                .map(|f| f.value)
                .unwrap_or(LogFormat::Human);
            LogSection { level, format }
        }
        None => LogSection {
            level: "info".into(),
            format: LogFormat::Human,
        },
    }
}

/// `[ring]`.
pub(super) fn ring(root: &mut TableReader<'_>) -> RingSection {
    match root.table("ring") {
        Some(mut r) => {
            let capacity = r
                .int_in("capacity", 1024, 16 * 1024 * 1024)
                .map(|v| v.value as usize)
                .unwrap_or(65_536);
            let overflow = r
                .choice(
                    "overflow",
                    &[
                        ("drop_oldest", OverflowPolicy::DropOldest),
                        ("drop_newest", OverflowPolicy::DropNewest),
                        ("block", OverflowPolicy::Block),
                    ],
                )
                .map(|v| v.value)
                .unwrap_or(OverflowPolicy::DropOldest);
            let batch = r
                .int_in("batch", 1, 65_536)
                .map(|v| v.value as usize)
                .unwrap_or(4096);
            RingSection {
                capacity,
                overflow,
                batch,
            }
        }
        None => RingSection {
            capacity: 65_536,
            overflow: OverflowPolicy::DropOldest,
            batch: 4096,
        },
    }
}

/// `[supervisor]`: driver restart backoff.
pub(super) fn supervisor(root: &mut TableReader<'_>) -> BackoffConfig {
    match root.table("supervisor") {
        Some(mut s) => {
            let d = BackoffConfig::default();
            let initial = s
                .duration("backoff_initial")
                .map(|v| v.value)
                .unwrap_or(d.initial);
            let max = s.duration("backoff_max");
            let healthy_after = s
                .duration("healthy_after")
                .map(|v| v.value)
                .unwrap_or(d.healthy_after);
            let max_v = max.as_ref().map(|m| m.value).unwrap_or(d.max);
            if let Some(m) = &max
                && m.value < initial
            {
                s.error(
                    m.span,
                    "backoff_max",
                    "`backoff_max` is shorter than `backoff_initial`",
                )
                .hint("make backoff_max ≥ backoff_initial")
                .emit();
            }
            BackoffConfig {
                initial: initial.max(Duration::from_millis(1)),
                max: max_v.max(initial),
                healthy_after,
            }
        }
        None => BackoffConfig::default(),
    }
}

/// `[alerts]`: rate limits, console, JSON lines, the sink queue.
pub(super) fn alerts(root: &mut TableReader<'_>) -> AlertsSection {
    match root.table("alerts") {
        Some(mut a) => {
            let d = RateLimits::default();
            AlertsSection {
                limits: RateLimits {
                    max_per_minute: a
                        .int_in("max_per_minute", 1, 1_000_000)
                        .map(|v| v.value as u32)
                        .unwrap_or(d.max_per_minute),
                    flap_window_s: a
                        .duration("flap_window")
                        .map(|v| v.value.as_secs_f64())
                        .unwrap_or(d.flap_window_s),
                    flap_max_raises: a
                        .int_in("flap_max_raises", 0, 1_000_000)
                        .map(|v| v.value as u32)
                        .unwrap_or(d.flap_max_raises),
                },
                console: a.bool("console").map(|v| v.value).unwrap_or(true),
                jsonl: a.string("jsonl").map(|v| PathBuf::from(v.value)),
                queue: a
                    .int_in("queue", 1, 1_000_000)
                    .map(|v| v.value as usize)
                    .unwrap_or(1024),
            }
        }
        None => AlertsSection {
            limits: RateLimits::default(),
            console: true,
            jsonl: None,
            queue: 1024,
        },
    }
}

/// `[metrics]`: the Prometheus endpoint (off unless present).
pub(super) fn metrics(root: &mut TableReader<'_>) -> Option<MetricsSection> {
    root.table("metrics").and_then(|mut m| {
        let enabled = m.bool("enabled").map(|b| b.value).unwrap_or(true);
        let allow_remote = m.bool("allow_remote").map(|b| b.value).unwrap_or(false);
        let default: std::net::SocketAddr = ([127, 0, 0, 1], 9464).into();
        let listen = match m.string("listen") {
            None => default,
            Some(l) => match l.value.parse::<std::net::SocketAddr>() {
                Ok(a) if a.ip().is_loopback() || allow_remote => a,
                Ok(a) => {
                    m.error(
                        l.span,
                        "listen",
                        format!("{a} is not a loopback address"),
                    )
                    .expected("127.0.0.1:<port> or [::1]:<port>")
                    .hint("the endpoint is unauthenticated; scrape it through a local Prometheus agent, or set `allow_remote = true` if a firewall protects it")
                    .emit();
                    return None;
                }
                Err(_) => {
                    m.error(l.span, "listen", format!("`{}` is not an address and port", l.value))
                        .expected("an IP address and port, e.g. \"127.0.0.1:9464\"")
                        .emit();
                    return None;
                }
            },
        };
        let per_tag = m.bool("per_tag").map(|b| b.value).unwrap_or(false);
        enabled.then_some(crate::ops::metrics::MetricsSection { listen, per_tag })
    })
}

/// `[telemetry]`: periodic feature summaries.
pub(super) fn telemetry(root: &mut TableReader<'_>) -> Option<TelemetryConfig> {
    root.table("telemetry").and_then(|mut t| {
        let interval = t.req_duration("interval")?;
        if interval.value < Duration::from_secs(1) {
            t.error(
                interval.span,
                "interval",
                "telemetry interval must be at least 1s",
            )
            .hint("summaries every minute or more are typical")
            .emit();
            return None;
        }
        let features = match t.strings("features") {
            None => edge_models::features::SCALAR_FEATURES.to_vec(),
            Some(list) => {
                let mut out = Vec::new();
                for f in list {
                    match Feature::parse(&f.value, &[]) {
                        Ok(feat) => out.push(feat),
                        Err(msg) => {
                            let mut b = t.error(f.span, "features", msg).expected(
                                "scalar feature names; bands are included with `bands = true`",
                            );
                            if let Some(best) = closest(&f.value, Feature::all_names().into_iter())
                            {
                                b = b.hint(format!("did you mean `{best}`?"));
                            }
                            b.emit();
                        }
                    }
                }
                out
            }
        };
        let bands = t.bool("bands").map(|b| b.value).unwrap_or(true);
        Some(crate::pipeline::TelemetryConfig {
            interval: interval.value,
            features,
            bands,
        })
    })
}

/// `[labels]` (the alert feedback loop; off unless present).
pub(super) fn labels(root: &mut TableReader<'_>) -> Option<crate::delivery::labels::LabelsConfig> {
    let mut l = root.table("labels")?;
    let remember = l
        .int_in("remember", 10, 100_000)
        .map_or(500, |v| v.value as usize);
    let dataset = l.string("dataset").and_then(|d| {
        let path = std::path::PathBuf::from(&d.value);
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        if dir.is_some_and(|p| !p.is_dir()) {
            l.error(
                d.span,
                "dataset",
                format!("the directory of `{}` does not exist", d.value),
            )
            .hint("create it (writable by the agent's user), e.g. /var/lib/edge-agent/labels.jsonl")
            .emit();
            return None;
        }
        Some(path)
    });
    Some(crate::delivery::labels::LabelsConfig { dataset, remember })
}
