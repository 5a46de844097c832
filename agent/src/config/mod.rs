//! The agent's configuration: one TOML file.
//!
//! Two stages:
//! 1. `edge_driver_api::config` parses the text into a spanned tree; section readers
//!    pull typed values out of it and record a diagnostic for every problem (wrong
//!    type, unknown key, bad value) without stopping.
//! 2. Validation across sections: duplicate names, references from detectors to
//!    signals, features and bands, window shapes. Signals are interned to ids here.
//!
//! The result is either a [`Config`] of validated values, or every diagnostic at once,
//! rendered as `file:line:col` with the key path, what was expected and a hint.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use edge_models::onnx::manifest::ValidatedModel;

use crate::pipeline::scoring::{
    DriftCfg, ModelBindingCfg, ModelHandle, ModelStore, RoleWindow, resolve_inputs,
};
use std::sync::Arc;
use std::time::Duration;

use edge_driver_api::config::{
    Diagnostic, Diagnostics, NodeValue, Span, Spanned, TableReader, closest, parse_document, render,
};
use edge_driver_api::health::HealthConfig;
use edge_driver_api::{
    DriverError, DriverFactory, SignalDecl, SignalId, SignalPattern, SignalRegistry,
};
use edge_models::{
    Band, DetectorSpec, Direction, Feature, FeatureConfig, FlatLineSpec, MAX_BANDS,
    RateOfChangeSpec, Severity, ThresholdSpec, TrendSpec, WindowSpec, ZScoreSpec,
};

use crate::alert::RateLimits;
use crate::ingest::ring::OverflowPolicy;
use crate::ingest::supervisor::BackoffConfig;

/// The commented default configuration (simulated plant + the gateway's own health).
pub const DEFAULT_CONFIG: &str = include_str!("../../default-config.toml");

use crate::ops::logging::LogFormat;
use crate::pipeline::{AssetCfg, DetectorCfg, WindowCfg};

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

/// Where and how alerts are stored before forwarding.
#[derive(Clone, Debug)]
pub struct JournalSection {
    /// The journal's own settings (dir, sizes, fsync policy).
    pub store: crate::delivery::journal::JournalConfig,
    /// Alerts kept in memory while the journal cannot take them.
    pub backlog: usize,
}

/// Where alerts are forwarded (MQTT, from the journal).
pub type UplinkSection = crate::delivery::uplink::UplinkConfig;

/// Structural hashes of a configuration's parts (values only: moving a section or
/// editing a comment changes nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprints {
    /// Each `[[drivers]]` section by its name.
    pub drivers: std::collections::BTreeMap<String, u64>,
    /// Every other top-level key (`agent`, `assets`, `uplink`, ...).
    pub sections: std::collections::BTreeMap<String, u64>,
}

impl Fingerprints {
    fn of(root: &edge_driver_api::config::Table) -> Fingerprints {
        use edge_driver_api::config::NodeValue;
        let mut f = Fingerprints::default();
        for e in &root.entries {
            match (&*e.key, &e.node.value) {
                ("drivers", NodeValue::Array(items)) => {
                    for item in items {
                        if let NodeValue::Table(t) = &item.value
                            && let Some(name) = t.get("name")
                            && let NodeValue::Str(n) = &name.node.value
                        {
                            f.drivers.insert(n.clone(), hash_node(&item.value));
                        }
                    }
                }
                (k, v) => {
                    f.sections.insert(k.to_string(), hash_node(v));
                }
            }
        }
        f
    }

    /// Top-level sections whose content differs (added, removed or changed).
    pub fn changed_sections(&self, other: &Fingerprints) -> Vec<String> {
        let mut keys: Vec<&String> = self.sections.keys().chain(other.sections.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|k| self.sections.get(*k) != other.sections.get(*k))
            .cloned()
            .collect()
    }
}

fn hash_node(v: &edge_driver_api::config::NodeValue) -> u64 {
    use edge_driver_api::config::NodeValue;
    use std::hash::{Hash, Hasher};
    fn feed(v: &NodeValue, h: &mut std::collections::hash_map::DefaultHasher) {
        match v {
            NodeValue::Str(s) => (0u8, s).hash(h),
            NodeValue::Int(i) => (1u8, i).hash(h),
            NodeValue::Float(x) => (2u8, x.to_bits()).hash(h),
            NodeValue::Bool(b) => (3u8, b).hash(h),
            NodeValue::Datetime(s) => (4u8, s).hash(h),
            NodeValue::Array(items) => {
                (5u8, items.len()).hash(h);
                for i in items {
                    feed(&i.value, h);
                }
            }
            NodeValue::Table(t) => {
                (6u8, t.entries.len()).hash(h);
                for e in &t.entries {
                    e.key.hash(h);
                    feed(&e.node.value, h);
                }
            }
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    feed(v, &mut h);
    h.finish()
}

/// A configured driver instance.
#[derive(Clone)]
pub struct DriverInstance {
    pub name: Arc<str>,
    pub kind: &'static str,
    pub factory: Arc<dyn DriverFactory>,
}

impl std::fmt::Debug for DriverInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverInstance")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    pub file: String,
    pub agent: AgentSection,
    pub log: LogSection,
    pub ring: RingSection,
    pub supervisor: BackoffConfig,
    pub alerts: AlertsSection,
    pub journal: Option<JournalSection>,
    pub uplink: Option<UplinkSection>,
    pub telemetry: Option<crate::pipeline::TelemetryConfig>,
    /// The Prometheus endpoint (off unless `[metrics]` is present).
    pub metrics: Option<crate::ops::metrics::MetricsSection>,
    /// Local alarm outputs (GPIO).
    pub alarms: Vec<crate::delivery::alarm::AlarmOutputCfg>,
    /// FNV-1a hash of the configuration text (reported in the uplink's birth message).
    pub hash: String,
    /// What each part of the file says, to tell what a reload changes.
    pub fingerprints: Fingerprints,
    pub registry: SignalRegistry,
    pub drivers: Vec<DriverInstance>,
    pub assets: Vec<AssetCfg>,
    /// Every model the assets bind, loaded and validated.
    pub models: Arc<crate::pipeline::scoring::ModelStore>,
}

/// An invalid configuration: every problem, rendered.
#[derive(Debug, thiserror::Error)]
#[error("{rendered}")]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
    pub rendered: String,
}

/// Reads and validates a config file.
pub fn load_file(path: &std::path::Path) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(src) => parse(&name, &src),
        Err(e) => {
            let d = Diagnostic::new(Span::default(), "", format!("cannot read config file: {e}"))
                .hint("check the path and that the agent's user may read it");
            Err(ConfigError {
                rendered: format!("error: cannot read config file `{name}`: {e}\n"),
                diagnostics: vec![d],
            })
        }
    }
}

/// Parses and validates config text; `file` names it in messages.
pub fn parse(file: &str, src: &str) -> Result<Config, ConfigError> {
    let fail = |diags: Vec<Diagnostic>| ConfigError {
        rendered: render(file, src, &diags),
        diagnostics: diags,
    };
    let table = parse_document(src).map_err(fail)?;
    let diags = Diagnostics::new();
    let mut cfg = read_root(file, &table, &diags);
    if let Some(c) = cfg.as_mut() {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in src.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        c.hash = format!("{h:016x}");
        c.fingerprints = Fingerprints::of(&table);
        if let Some(u) = c.uplink.as_mut() {
            u.config_hash = c.hash.clone();
        }
    }
    if !diags.is_empty() {
        return Err(fail(diags.into_vec()));
    }
    cfg.ok_or_else(|| {
        fail(vec![Diagnostic::new(
            Span::default(),
            "",
            "configuration is incomplete",
        )])
    })
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

const NAME_EXPECTED: &str = "1-64 characters from A-Z a-z 0-9 _ - . (names end up in MQTT topics)";

fn check_name(r: &TableReader<'_>, key: &'static str, v: &Spanned<String>) -> bool {
    if valid_name(&v.value) {
        return true;
    }
    r.error(v.span, key, format!("`{}` is not a valid {key}", v.value))
        .expected(NAME_EXPECTED)
        .emit();
    false
}

/// A driver section parsed by its crate, before signal interning.
trait ParsedDriver {
    fn signals(&self) -> Vec<SignalDecl>;
    /// The link-health settings of a polling driver (which then publishes
    /// `<name>.comm.health`).
    fn link_health(&self) -> Option<&HealthConfig> {
        None
    }
    /// Families of signals named at run time (e.g. from MQTT topics); concrete
    /// names are interned when an asset uses them.
    fn patterns(&self) -> Vec<SignalPattern> {
        Vec::new()
    }
    fn into_factory(
        self: Box<Self>,
        registry: &SignalRegistry,
    ) -> Result<Arc<dyn DriverFactory>, DriverError>;
}

/// `ParsedDriver` for a driver crate's config type: `signals` and `into_factory`
/// by the crate's inherent functions, optionally link health and signal patterns.
macro_rules! parsed_driver {
    ($feat:literal, $ty:ty $(, health = $h:ident)? $(, patterns = $p:ident)?) => {
        #[cfg(feature = $feat)]
        impl ParsedDriver for $ty {
            fn signals(&self) -> Vec<SignalDecl> {
                <$ty>::signals(self)
            }
            $(
                fn link_health(&self) -> Option<&HealthConfig> {
                    Some(&self.$h)
                }
            )?
            $(
                fn patterns(&self) -> Vec<SignalPattern> {
                    <$ty>::$p(self)
                }
            )?
            fn into_factory(
                self: Box<Self>,
                registry: &SignalRegistry,
            ) -> Result<Arc<dyn DriverFactory>, DriverError> {
                Ok(Arc::new(<$ty>::into_factory(*self, registry)?))
            }
        }
    };
}

parsed_driver!("sim", edge_driver_sim::SimConfig);
parsed_driver!("host", edge_driver_host::HostConfig);
parsed_driver!("modbus", edge_driver_modbus::ModbusConfig, health = health);
parsed_driver!("s7", edge_driver_s7::S7Config, health = health);
parsed_driver!("mqtt", edge_driver_mqtt::MqttConfig, patterns = patterns);
parsed_driver!("log", edge_driver_log::LogConfig);
parsed_driver!(
    "coap",
    edge_driver_coap::CoapConfig,
    health = health,
    patterns = patterns
);

/// Driver kinds compiled into this build.
#[allow(clippy::vec_init_then_push)] // each push is behind its own cargo feature
pub fn driver_kinds() -> Vec<&'static str> {
    let mut v = Vec::new();
    #[cfg(feature = "sim")]
    v.push("sim");
    #[cfg(feature = "host")]
    v.push("host");
    #[cfg(feature = "modbus")]
    v.push("modbus");
    #[cfg(feature = "s7")]
    v.push("s7");
    #[cfg(feature = "mqtt")]
    v.push("mqtt");
    #[cfg(feature = "log")]
    v.push("log");
    #[cfg(feature = "coap")]
    v.push("coap");
    v
}

/// Kinds edge-agent knows of but that this build does not include.
const OTHER_KINDS: &[&str] = &["sim", "host", "modbus", "s7", "coap", "mqtt", "log"];

fn parse_driver(kind: &str, name: &str, r: &mut TableReader<'_>) -> Option<Box<dyn ParsedDriver>> {
    let _ = name;
    match kind {
        #[cfg(feature = "modbus")]
        "modbus" => edge_driver_modbus::ModbusConfig::parse(r, name)
            .map(|c| Box::new(c) as Box<dyn ParsedDriver>),
        #[cfg(feature = "coap")]
        "coap" => edge_driver_coap::CoapConfig::parse(r, name)
            .map(|c| Box::new(c) as Box<dyn ParsedDriver>),
        #[cfg(feature = "log")]
        "log" => {
            edge_driver_log::LogConfig::parse(r, name).map(|c| Box::new(c) as Box<dyn ParsedDriver>)
        }
        #[cfg(feature = "mqtt")]
        "mqtt" => edge_driver_mqtt::MqttConfig::parse(r, name)
            .map(|c| Box::new(c) as Box<dyn ParsedDriver>),
        #[cfg(feature = "s7")]
        "s7" => {
            edge_driver_s7::S7Config::parse(r, name).map(|c| Box::new(c) as Box<dyn ParsedDriver>)
        }
        #[cfg(feature = "sim")]
        "sim" => edge_driver_sim::SimConfig::parse(r).map(|c| Box::new(c) as Box<dyn ParsedDriver>),
        #[cfg(feature = "host")]
        "host" => {
            edge_driver_host::HostConfig::parse(r).map(|c| Box::new(c) as Box<dyn ParsedDriver>)
        }
        _ => {
            r.skip_unknown_check();
            None
        }
    }
}

fn read_root(
    file: &str,
    table: &edge_driver_api::config::Table,
    diags: &Diagnostics,
) -> Option<Config> {
    let mut root = TableReader::new(table, "", diags);

    // [agent]
    let agent = {
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
                    None => crate::ops::control::ControlSocket::Default,
                    Some(p) if p.value.is_empty() => crate::ops::control::ControlSocket::Off,
                    Some(p) => crate::ops::control::ControlSocket::At(PathBuf::from(p.value)),
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
    };

    // [log]
    let log = match root.table("log") {
        Some(mut l) => {
            let level = l
                .string("level")
                .map(|s| s.value)
                .unwrap_or_else(|| "info".into());
            if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
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
    };

    // [ring]
    let ring = match root.table("ring") {
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
    };

    // [supervisor]
    let supervisor = match root.table("supervisor") {
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
    };

    // [alerts]
    let alerts = match root.table("alerts") {
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
    };

    // [journal]
    let journal = root.table("journal").and_then(|mut j| {
        let dir = j.req_string("dir");
        let max_disk = j.size("max_disk").map(|v| v.value).unwrap_or(64 << 20);
        let segment = j.size("segment_size");
        let segment_bytes = segment.as_ref().map(|v| v.value).unwrap_or(1 << 20);
        let mut ok = true;
        if let Some(seg) = &segment
            && !(4096..=256 << 20).contains(&seg.value)
        {
            j.error(seg.span, "segment_size", format!("segment_size {} is out of range", seg.value))
                .expected("between 4KiB and 256MiB")
                .emit();
            ok = false;
        }
        if max_disk < 2 * segment_bytes {
            j.table_error(format!("max_disk ({max_disk} bytes) must hold at least two segments of {segment_bytes} bytes"))
                .hint("raise max_disk or lower segment_size")
                .emit();
            ok = false;
        }
        let fsync = match j.node("fsync") {
            None => Some(crate::delivery::journal::FsyncPolicy::Always),
            Some(n) => match &n.value {
                NodeValue::Str(s) if s == "always" => Some(crate::delivery::journal::FsyncPolicy::Always),
                NodeValue::Str(s) => match edge_driver_api::config::parse_duration(s) {
                    Ok(d) if !d.is_zero() => Some(crate::delivery::journal::FsyncPolicy::Interval(d)),
                    _ => {
                        j.error(n.span, "fsync", format!("`{s}` is not an fsync policy"))
                            .expected("\"always\" or an interval such as \"100ms\"")
                            .emit();
                        None
                    }
                },
                other => {
                    j.error(n.span, "fsync", format!("`fsync` has the wrong type: found {}", other.type_name()))
                        .expected("\"always\" or an interval such as \"100ms\"")
                        .emit();
                    None
                }
            },
        };
        let backlog = j.int_in("memory_backlog", 1, 10_000_000).map(|v| v.value as usize).unwrap_or(10_000);
        let dir = dir?;
        if !ok {
            return None;
        }
        Some(JournalSection {
            store: crate::delivery::journal::JournalConfig {
                dir: PathBuf::from(dir.value),
                max_disk,
                segment_bytes,
                fsync: fsync?,
            },
            backlog,
        })
    });

    // [[alarms]]
    let alarms = crate::delivery::alarm::parse(&mut root);

    // [metrics]
    let metrics = root.table("metrics").and_then(|mut m| {
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
        enabled.then_some(crate::ops::metrics::MetricsSection { listen })
    });

    // [telemetry]
    let telemetry = root.table("telemetry").and_then(|mut t| {
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
    });

    // [uplink]
    let has_journal = journal.is_some() || root.has("journal");
    let uplink = root.table("uplink").and_then(|mut u| {
        let host = u.req_string("host");
        let port = u
            .int_in("port", 1, 65535)
            .map(|v| v.value as u16)
            .unwrap_or(1883);
        let client_id = u.string("client_id");
        if let Some(c) = &client_id
            && (c.value.is_empty() || c.value.len() > 128)
        {
            u.error(c.span, "client_id", "client_id must be 1-128 characters")
                .emit();
        }
        let topic_prefix = u
            .string("topic_prefix")
            .map(|v| v.value)
            .unwrap_or_else(|| "edge".into());
        if topic_prefix.is_empty()
            || topic_prefix.contains(['+', '#'])
            || topic_prefix.ends_with('/')
        {
            u.error(
                u.span(),
                "topic_prefix",
                format!("`{topic_prefix}` cannot be a topic prefix"),
            )
            .expected("a non-empty topic without wildcards (+, #) or a trailing /")
            .emit();
        }
        let keep_alive = u.duration("keep_alive");
        if let Some(k) = &keep_alive
            && !(Duration::from_secs(5)..=Duration::from_secs(65_535)).contains(&k.value)
        {
            u.error(
                k.span,
                "keep_alive",
                "keep_alive must be between 5s and 65535s",
            )
            .hint("MQTT keep-alive is in whole seconds; 30s to 60s suits most gateways")
            .emit();
        }
        let window = u
            .int_in("window", 1, 1000)
            .map(|v| v.value as u16)
            .unwrap_or(32);
        let replay_rate = u
            .int_in("replay_rate", 1, 1_000_000)
            .map(|v| v.value as u32)
            .unwrap_or(100);
        let username = u.string("username").map(|v| v.value);
        let password = edge_driver_api::tls::read_password(&mut u);
        if password.is_some() && username.is_none() {
            u.table_error("a password is configured without `username`")
                .hint("add `username = ...`")
                .emit();
        }
        let status_interval = u
            .duration("status_interval")
            .map(|v| v.value)
            .unwrap_or(Duration::from_secs(60));
        let connect_timeout = u
            .duration("connect_timeout")
            .map(|v| v.value)
            .unwrap_or(Duration::from_secs(10));
        let reconnect_initial = u
            .duration("reconnect_initial")
            .map(|v| v.value)
            .unwrap_or(Duration::from_secs(1));
        let reconnect_max = u
            .duration("reconnect_max")
            .map(|v| v.value)
            .unwrap_or(Duration::from_secs(60));
        let tls = edge_driver_api::tls::read_tls(&mut u);
        if !has_journal {
            u.table_error(
                "the uplink forwards alerts from the journal, but no [journal] is configured",
            )
            .hint("add a [journal] section with `dir = ...`")
            .emit();
        }
        let host = host?;
        Some(crate::delivery::uplink::UplinkConfig {
            host: host.value,
            port,
            client_id: client_id.map(|c| c.value).unwrap_or_default(),
            agent_id: String::new(),
            topic_prefix,
            keep_alive: keep_alive
                .map(|k| k.value)
                .unwrap_or(Duration::from_secs(30)),
            window,
            replay_rate,
            username,
            password,
            connect_timeout: connect_timeout.max(Duration::from_millis(100)),
            reconnect_initial: reconnect_initial.max(Duration::from_millis(10)),
            reconnect_max: reconnect_max.max(reconnect_initial),
            version: crate::VERSION.to_string(),
            config_hash: String::new(),
            status_interval: status_interval.max(Duration::from_secs(1)),
            tls,
        })
    });

    // [[drivers]]
    let mut registry = SignalRegistry::new();
    let mut parsed: Vec<(Spanned<String>, &'static str, Box<dyn ParsedDriver>)> = Vec::new();
    let mut driver_names: Vec<Spanned<String>> = Vec::new();
    let driver_readers = root.tables("drivers");
    if driver_readers.is_empty() && !root.has("drivers") {
        root.table_error("no drivers configured")
            .expected("at least one [[drivers]] section")
            .hint("add e.g. [[drivers]] name = \"host\" kind = \"host\"")
            .emit();
    }
    for mut d in driver_readers {
        let name = d.req_string("name");
        if let Some(n) = &name {
            if !check_name(&d, "name", n) {
                continue;
            }
            if driver_names.iter().any(|x| x.value == n.value) {
                d.error(
                    n.span,
                    "name",
                    format!("driver name `{}` is used twice", n.value),
                )
                .hint("give every [[drivers]] section its own name")
                .emit();
            } else {
                driver_names.push(n.clone());
            }
        }
        let kinds = driver_kinds();
        let kind = d.req_string("kind");
        let kind = kind.and_then(|k| {
            if let Some(found) = kinds.iter().find(|x| **x == k.value) {
                return Some(*found);
            }
            let mut b = d.error(k.span, "kind", format!("unknown driver kind `{}`", k.value));
            if OTHER_KINDS.contains(&k.value.as_str()) {
                b = b
                    .expected(format!(
                        "one of the kinds in this build: {}",
                        kinds.join(", ")
                    ))
                    .hint(format!(
                        "the `{}` driver is not part of this build",
                        k.value
                    ));
            } else {
                b = b.expected(format!("one of: {}", kinds.join(", ")));
                if let Some(best) = closest(
                    &k.value,
                    kinds.iter().copied().chain(OTHER_KINDS.iter().copied()),
                ) {
                    b = b.hint(format!("did you mean `{best}`?"));
                }
            }
            b.emit();
            None
        });
        match (name, kind) {
            (Some(name), Some(kind)) => {
                if let Some(p) = parse_driver(kind, &name.value, &mut d) {
                    parsed.push((name, kind, p));
                }
            }
            _ => d.skip_unknown_check(),
        }
    }
    for (name, _, p) in &parsed {
        // One diagnostic per declaration site (a sim machine declares several signals).
        let mut dups: Vec<(Span, String, Vec<String>)> = Vec::new();
        for decl in p.signals() {
            if let Err(dup) = registry.intern(&decl, &name.value) {
                match dups
                    .iter_mut()
                    .find(|(sp, first, _)| *sp == decl.span && *first == dup.first_driver)
                {
                    Some((_, _, names)) => names.push(dup.name),
                    None => dups.push((decl.span, dup.first_driver, vec![dup.name])),
                }
            }
        }
        for (span, first, names) in dups {
            let what = if names.len() == 1 {
                format!("duplicate signal `{}`", names[0])
            } else {
                format!("duplicate signals `{}`", names.join("`, `"))
            };
            diags.push(
                Diagnostic::new(span, format!("drivers.{}", name.value), format!("{what}: already produced by driver `{first}`"))
                    .hint("signal names must be unique across all drivers; rename the machine, prefix or tag"),
            );
        }
    }

    // Signal families of run-time-named signals, per driver.
    let patterns: Vec<(String, SignalPattern)> = parsed
        .iter()
        .flat_map(|(name, _, p)| p.patterns().into_iter().map(|pt| (name.value.clone(), pt)))
        .collect();

    // [models]
    let config_dir = Path::new(file)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let (models_dir, models_watch) = match root.table("models") {
        Some(mut m) => {
            let dir = m
                .string("dir")
                .map(|d| config_dir.join(d.value))
                .unwrap_or_else(|| config_dir.clone());
            let watch = m.duration("watch").map(|d| d.value);
            (dir, watch)
        }
        None => (config_dir.clone(), None),
    };
    let mut loader = ModelLoader {
        base: models_dir,
        entries: Vec::new(),
    };

    // [[assets]]
    let mut assets = Vec::new();
    let mut asset_names: HashSet<String> = HashSet::new();
    for mut a in root.tables("assets") {
        if let Some(asset) = read_asset(
            &mut a,
            &mut registry,
            &patterns,
            &mut asset_names,
            &mut loader,
        ) {
            assets.push(asset);
        }
    }
    // One implicit asset per polling driver: its link-health score against the
    // driver's [drivers.health] limits (Warning "sub-healthy", Critical).
    for (name, _, p) in &parsed {
        if let Some(h) = p.link_health().filter(|h| h.alerts) {
            let asset = link_asset_name(&name.value);
            if !asset_names.insert(asset.clone()) {
                diags.push(
                    Diagnostic::new(
                        name.span,
                        format!("drivers.{}", name.value),
                        format!(
                            "asset name `{asset}` is reserved for the link health of driver `{}`",
                            name.value
                        ),
                    )
                    .hint("rename that [[assets]] section, or set [drivers.health] alerts = false"),
                );
                continue;
            }
            if let Some(signal) = registry.get(&edge_driver_api::health::health_signal(&name.value))
            {
                assets.push(link_health_asset(asset, signal, h));
            }
        }
    }
    drop(root);

    if !diags.is_empty() {
        return None;
    }
    let mut drivers = Vec::new();
    for (name, kind, p) in parsed {
        match p.into_factory(&registry) {
            Ok(factory) => drivers.push(DriverInstance {
                name: Arc::from(name.value.as_str()),
                kind,
                factory,
            }),
            Err(e) => diags.push(Diagnostic::new(
                name.span,
                format!("drivers.{}", name.value),
                e.to_string(),
            )),
        }
    }
    let agent = agent?;
    let uplink = uplink.map(|mut u| {
        u.agent_id = agent.id.to_string();
        if u.client_id.is_empty() {
            u.client_id = agent.id.to_string();
        }
        u
    });
    Some(Config {
        file: file.to_string(),
        agent,
        log,
        ring,
        supervisor,
        alerts,
        journal,
        uplink,
        telemetry,
        metrics,
        alarms,
        hash: String::new(),
        fingerprints: Fingerprints::default(),
        registry,
        drivers,
        assets,
        models: Arc::new(ModelStore {
            handles: loader
                .entries
                .into_iter()
                .filter_map(|(path, model, roles)| {
                    Some(Arc::new(ModelHandle::new(path, model?, roles)))
                })
                .collect(),
            watch: models_watch.filter(|d| !d.is_zero()),
        }),
    })
}

fn read_window(w: &mut TableReader<'_>) -> Option<WindowSpec> {
    let size = w.node("size");
    let hop = w.node("hop");
    let (Some(size), Some(hop)) = (size, hop) else {
        w.table_error("a window needs both `size` and `hop`")
            .expected("size = 256, hop = 128 (samples) or size = \"60s\", hop = \"10s\" (time)")
            .emit();
        return None;
    };
    enum Len {
        Count(i64),
        Time(Duration),
    }
    let max_samples = w
        .int_in("max_samples", 2, 1_000_000)
        .map(|v| v.value as usize);
    let read = |key: &str, node: &edge_driver_api::config::Node| -> Option<Len> {
        match &node.value {
            NodeValue::Int(n) => Some(Len::Count(*n)),
            NodeValue::Str(s) => match edge_driver_api::config::parse_duration(s) {
                Ok(d) => Some(Len::Time(d)),
                Err(msg) => {
                    w.error(
                        node.span,
                        key,
                        format!("window {key} \"{s}\" is not a duration: {msg}"),
                    )
                    .expected("a sample count (integer) or a duration string like \"10s\"")
                    .emit();
                    None
                }
            },
            other => {
                w.error(
                    node.span,
                    key,
                    format!(
                        "window {key} has the wrong type: found {}",
                        other.type_name()
                    ),
                )
                .expected("a sample count (integer) or a duration string like \"10s\"")
                .emit();
                None
            }
        }
    };
    let (s, h) = (read("size", size)?, read("hop", hop)?);
    match (s, h) {
        (Len::Count(s), Len::Count(h)) => {
            if !(2..=65_536).contains(&s) {
                w.error(
                    size.span,
                    "size",
                    format!("window size {s} is out of range"),
                )
                .expected("between 2 and 65536 samples")
                .emit();
                return None;
            }
            if h < 1 {
                w.error(hop.span, "hop", "window hop must be at least 1 sample")
                    .emit();
                return None;
            }
            if h > s {
                w.error(hop.span, "hop", format!("window hop ({h}) is larger than its size ({s})"))
                    .expected("hop ≤ size")
                    .hint("samples between windows would never be looked at; hop = size gives back-to-back windows")
                    .emit();
                return None;
            }
            Some(WindowSpec::Count {
                size: s as usize,
                hop: h as usize,
            })
        }
        (Len::Time(s), Len::Time(h)) => {
            if h.is_zero() || s.is_zero() {
                w.error(
                    hop.span,
                    "hop",
                    "window size and hop must be longer than zero",
                )
                .emit();
                return None;
            }
            if h > s {
                w.error(
                    hop.span,
                    "hop",
                    format!("window hop ({}) is larger than its size ({})", fmt_dur(h), fmt_dur(s)),
                )
                .expected("hop ≤ size")
                .hint("samples between windows would never be looked at; hop = size gives back-to-back windows")
                .emit();
                return None;
            }
            Some(WindowSpec::Time {
                size_ns: s.as_nanos() as u64,
                hop_ns: h.as_nanos() as u64,
                max_samples: max_samples.unwrap_or(4096),
            })
        }
        _ => {
            w.error(
                hop.span,
                "hop",
                "window `size` and `hop` must both be sample counts or both durations",
            )
            .expected("size = 256, hop = 128 or size = \"60s\", hop = \"10s\"")
            .emit();
            None
        }
    }
}

fn fmt_dur(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// The implicit asset that carries a driver's link-health alerts.
pub fn link_asset_name(driver: &str) -> String {
    format!("{driver}.link")
}

fn link_health_asset(name: String, signal: SignalId, h: &HealthConfig) -> AssetCfg {
    AssetCfg {
        name: Arc::from(name.as_str()),
        windows: vec![WindowCfg {
            signal,
            spec: WindowSpec::Time {
                size_ns: 5_000_000_000,
                hop_ns: 5_000_000_000,
                max_samples: 1024,
            },
            features: FeatureConfig::default(),
        }],
        detectors: vec![DetectorCfg {
            name: Arc::from("comm_health"),
            window: 0,
            feature: Feature::Last,
            feature_name: "last".into(),
            spec: DetectorSpec::Threshold(ThresholdSpec {
                direction: Direction::Below,
                warning: Some(h.warning),
                critical: Some(h.critical),
                hysteresis: 5.0,
                min_duration_s: 0.0,
            }),
        }],
        models: Vec::new(),
    }
}

/// Models met while reading the assets: each manifest is loaded and validated once,
/// however many assets bind it.
struct ModelLoader {
    base: PathBuf,
    /// (manifest path, the model or `None` when it failed, the roles of each binding).
    entries: Vec<(PathBuf, Option<ValidatedModel>, Vec<Vec<RoleWindow>>)>,
}

impl ModelLoader {
    /// The index of a validated model; `Err` carries its problems the first time
    /// (and nothing after, so one broken file is reported once).
    fn load(&mut self, manifest: &str) -> Result<usize, Vec<String>> {
        let path = self.base.join(manifest);
        if let Some(i) = self.entries.iter().position(|(p, _, _)| *p == path) {
            return match &self.entries[i].1 {
                Some(_) => Ok(i),
                None => Err(Vec::new()),
            };
        }
        match ValidatedModel::load(&path) {
            Ok(m) => {
                self.entries.push((path, Some(m), Vec::new()));
                Ok(self.entries.len() - 1)
            }
            Err(errs) => {
                self.entries.push((path.clone(), None, Vec::new()));
                Err(errs
                    .into_iter()
                    .map(|e| format!("{}: {}", e.file.display(), e.message))
                    .collect())
            }
        }
    }
}

/// A window of an asset, as detectors and model bindings refer to it.
struct AssetWindow {
    signal: String,
    bands: Vec<String>,
    /// The most samples it holds.
    capacity: usize,
}

fn read_model_binding(
    m: &mut TableReader<'_>,
    window_signals: &[AssetWindow],
    loader: &mut ModelLoader,
    names: &mut HashSet<String>,
) -> Option<ModelBindingCfg> {
    if !cfg!(feature = "onnx") {
        m.error(
            m.span(),
            "manifest",
            "this edge-agent was built without ONNX support, so it cannot run models".to_string(),
        )
        .hint("remove the [[assets.models]] entries, or install a build with the `onnx` feature (the default build has it)")
        .emit();
        return None;
    }
    let mut ok = true;
    let manifest = m.req_string("manifest");
    let name = m.string("name");
    if let Some(n) = &name {
        if !valid_name(&n.value) || n.value.len() > 57 {
            m.error(n.span, "name", format!("`{}` is not a valid model binding name", n.value))
                .expected("1-57 characters from A-Z a-z 0-9 _ - . (`.health` is appended for its quarantine alerts)")
                .emit();
            ok = false;
        }
    }
    let every = m
        .duration("every")
        .map(|d| d.value)
        .unwrap_or(Duration::from_secs(10));
    let confirm = m
        .int_in("confirm", 1, 1000)
        .map(|v| v.value as u32)
        .unwrap_or(3);
    let quarantine_after = m
        .int_in("quarantine_after", 1, 1000)
        .map(|v| v.value as u32)
        .unwrap_or(3);
    let drift_z = m
        .f64_in("drift_z", 0.1, 1e9)
        .map(|v| v.value)
        .unwrap_or(4.0);
    let drift_rows = m
        .int_in("drift_rows", 1, 1_000_000)
        .map(|v| v.value as u32)
        .unwrap_or(30);
    // roles = { vibration = "pump1.vibration", ... }
    let mut roles = Vec::new();
    let roles_span = m.node("roles").map(|n| n.span);
    match m.node("roles") {
        None => {
            m.table_error("missing required key `roles`")
                .expected("a table from the model's roles to this asset's signals, e.g. roles = { vibration = \"pump1.vibration\" }")
                .emit();
            ok = false;
        }
        Some(node) => match &node.value {
            NodeValue::Table(t) => {
                for e in &t.entries {
                    let NodeValue::Str(sig) = &e.node.value else {
                        m.error(
                            e.node.span,
                            "roles",
                            format!("role `{}` must name a signal", e.key),
                        )
                        .expected("a signal name (a string)")
                        .emit();
                        ok = false;
                        continue;
                    };
                    let Some(wi) = window_signals.iter().position(|w| w.signal == *sig) else {
                        m.error(
                            e.node.span,
                            "roles",
                            format!("role `{}` names `{sig}`, which has no window in this asset", e.key),
                        )
                        .hint(format!(
                            "add [[assets.signals]] signal = \"{sig}\" (with its window and bands) to this asset"
                        ))
                        .emit();
                        ok = false;
                        continue;
                    };
                    roles.push(RoleWindow {
                        role: e.key.clone(),
                        signal: Arc::from(sig.as_str()),
                        window: wi,
                        bands: window_signals[wi].bands.clone(),
                        capacity: window_signals[wi].capacity,
                    });
                }
            }
            other => {
                m.error(
                    node.span,
                    "roles",
                    format!("`roles` has the wrong type: found {}", other.type_name()),
                )
                .expected("a table, e.g. roles = { vibration = \"pump1.vibration\" }")
                .emit();
                ok = false;
            }
        },
    }
    let manifest = manifest?;
    let idx = match loader.load(&manifest.value) {
        Ok(i) => i,
        Err(errs) => {
            for e in errs {
                m.error(manifest.span, "manifest", e)
                    .hint("fix the model or its manifest, or run `edge-agent check-config` after updating the sha256")
                    .emit();
            }
            return None;
        }
    };
    let model = loader.entries[idx].1.as_ref()?;
    if let Err(errs) = resolve_inputs(&model.manifest.input, &roles) {
        for e in errs {
            m.error(roles_span.unwrap_or(manifest.span), "roles", e)
                .emit();
        }
        ok = false;
    }
    let name = name
        .map(|n| n.value)
        .unwrap_or_else(|| model.manifest.model.name.clone());
    if !names.insert(name.clone()) {
        m.error(
            m.span(),
            "name",
            format!("model binding `{name}` is used twice in this asset"),
        )
        .hint("give each [[assets.models]] its own `name`")
        .emit();
        ok = false;
    }
    if !ok {
        return None;
    }
    loader.entries[idx].2.push(roles.clone());
    Some(ModelBindingCfg {
        name: Arc::from(name.as_str()),
        model: idx,
        roles,
        every,
        confirm,
        quarantine_after,
        drift: DriftCfg {
            z: drift_z,
            rows: drift_rows,
        },
    })
}

fn read_asset(
    a: &mut TableReader<'_>,
    registry: &mut SignalRegistry,
    patterns: &[(String, SignalPattern)],
    names: &mut HashSet<String>,
    loader: &mut ModelLoader,
) -> Option<AssetCfg> {
    let name = a.req_string("name");
    let mut ok = true;
    if let Some(n) = &name {
        ok &= check_name(a, "name", n);
        if !names.insert(n.value.clone()) {
            a.error(
                n.span,
                "name",
                format!("asset name `{}` is used twice", n.value),
            )
            .hint("merge the two [[assets]] sections or rename one")
            .emit();
            ok = false;
        }
    }
    // Windows, one per signal.
    let mut windows: Vec<WindowCfg> = Vec::new();
    let mut window_signals: Vec<AssetWindow> = Vec::new();
    for mut s in a.tables("signals") {
        let Some(sig) = s.req_string("signal") else {
            ok = false;
            continue;
        };
        // A name of a run-time family (an MQTT topic template) is interned now.
        if registry.get(&sig.value).is_none()
            && let Some((driver, p)) = patterns.iter().find(|(_, p)| p.matches(&sig.value))
        {
            let _ = registry.intern(&p.decl(&sig.value), driver);
        }
        let Some(id) = resolve_signal(&s, "signal", &sig, registry) else {
            ok = false;
            continue;
        };
        if registry.meta(id).text {
            s.error(
                sig.span,
                "signal",
                format!("`{}` is a text signal; it has no numbers to window", sig.value),
            )
            .hint("text signals (e.g. S7 STRING tags) are published as events when they change; remove this entry")
            .emit();
            ok = false;
            continue;
        }
        if window_signals.iter().any(|w| w.signal == sig.value) {
            s.error(
                sig.span,
                "signal",
                format!("signal `{}` is listed twice in this asset", sig.value),
            )
            .hint("one [[assets.signals]] entry per signal")
            .emit();
            ok = false;
            continue;
        }
        let spec = match s.table("window") {
            Some(mut w) => read_window(&mut w),
            None => Some(WindowSpec::Time {
                size_ns: 60_000_000_000,
                hop_ns: 10_000_000_000,
                max_samples: 4096,
            }),
        };
        let max_samples = s
            .int_in("max_samples", 2, 1_000_000)
            .map(|v| v.value as usize);
        let ewma_alpha = s
            .f64_in("ewma_alpha", 1e-6, 1.0)
            .map(|v| v.value)
            .unwrap_or(0.1);
        let mut bands = Vec::new();
        for mut b in s.tables("bands") {
            let bname = b.req_string("name");
            let lo = b.req_f64("lo_hz");
            let hi = b.req_f64("hi_hz");
            if let (Some(bname), Some(lo), Some(hi)) = (bname, lo, hi) {
                if lo.value < 0.0 || hi.value <= lo.value {
                    b.error(
                        hi.span,
                        "hi_hz",
                        format!(
                            "band `{}` is empty: [{}, {}) Hz",
                            bname.value, lo.value, hi.value
                        ),
                    )
                    .expected("0 ≤ lo_hz < hi_hz")
                    .emit();
                    ok = false;
                } else if bands.iter().any(|x: &Band| x.name == bname.value) {
                    b.error(
                        bname.span,
                        "name",
                        format!("band `{}` is defined twice", bname.value),
                    )
                    .emit();
                    ok = false;
                } else {
                    bands.push(Band {
                        name: bname.value,
                        lo_hz: lo.value,
                        hi_hz: hi.value,
                    });
                }
            } else {
                ok = false;
            }
        }
        if bands.len() > MAX_BANDS {
            s.error(
                s.span(),
                "bands",
                format!("{} bands configured", bands.len()),
            )
            .expected(format!("at most {MAX_BANDS} bands per signal"))
            .emit();
            ok = false;
        }
        let Some(mut spec) = spec else {
            ok = false;
            continue;
        };
        if let (WindowSpec::Time { max_samples: m, .. }, Some(ms)) = (&mut spec, max_samples) {
            *m = ms;
        }
        window_signals.push(AssetWindow {
            signal: sig.value.clone(),
            bands: bands.iter().map(|b| b.name.clone()).collect(),
            capacity: spec.capacity(),
        });
        windows.push(WindowCfg {
            signal: id,
            spec,
            features: FeatureConfig { ewma_alpha, bands },
        });
    }
    // Detectors.
    let mut detectors = Vec::new();
    let mut det_names: HashSet<String> = HashSet::new();
    for mut d in a.tables("detectors") {
        match read_detector(&mut d, registry, &window_signals, &mut det_names) {
            Some(det) => detectors.push(det),
            None => ok = false,
        }
    }
    // Models.
    let mut models = Vec::new();
    let mut model_names: HashSet<String> = HashSet::new();
    for mut m in a.tables("models") {
        match read_model_binding(&mut m, &window_signals, loader, &mut model_names) {
            Some(b) => models.push(b),
            None => ok = false,
        }
    }
    for b in &models {
        if det_names.contains(&*b.name) {
            a.error(
                a.span(),
                "models",
                format!(
                    "model binding `{}` has the name of a detector of this asset",
                    b.name
                ),
            )
            .hint("alerts are named by detector; rename one of them")
            .emit();
            ok = false;
        }
    }
    let name = name?;
    ok.then(|| AssetCfg {
        name: Arc::from(name.value.as_str()),
        windows,
        detectors,
        models,
    })
}

fn resolve_signal(
    r: &TableReader<'_>,
    key: &'static str,
    sig: &Spanned<String>,
    registry: &SignalRegistry,
) -> Option<SignalId> {
    if let Some(id) = registry.get(&sig.value) {
        return Some(id);
    }
    let mut b = r
        .error(sig.span, key, format!("unknown signal `{}`", sig.value))
        .expected("the name of a signal produced by one of the [[drivers]]");
    b = match closest(&sig.value, registry.names()) {
        Some(best) => b.hint(format!("did you mean `{best}`?")),
        None => {
            b.hint("run `edge-agent check-config --list-signals FILE` to see every signal name")
        }
    };
    b.emit();
    None
}

const DETECTOR_KINDS: &[&str] = &["threshold", "zscore", "trend", "flatline", "rate_of_change"];

fn read_direction(d: &mut TableReader<'_>) -> Direction {
    d.choice(
        "direction",
        &[("above", Direction::Above), ("below", Direction::Below)],
    )
    .map(|v| v.value)
    .unwrap_or(Direction::Above)
}

fn read_detector(
    d: &mut TableReader<'_>,
    registry: &SignalRegistry,
    windows: &[AssetWindow],
    names: &mut HashSet<String>,
) -> Option<DetectorCfg> {
    let name = d.req_string("name");
    let mut ok = true;
    if let Some(n) = &name {
        ok &= check_name(d, "name", n);
        if !names.insert(n.value.clone()) {
            d.error(
                n.span,
                "name",
                format!("detector name `{}` is used twice in this asset", n.value),
            )
            .hint("detector names identify alerts; make them unique within the asset")
            .emit();
            ok = false;
        }
    }
    let kinds: Vec<(&str, &str)> = DETECTOR_KINDS.iter().map(|k| (*k, *k)).collect();
    let kind = if d.has("kind") {
        d.choice("kind", &kinds).map(|k| k.value)
    } else {
        d.table_error("missing required key `kind`")
            .expected(format!("one of: {}", DETECTOR_KINDS.join(", ")))
            .emit();
        None
    };
    // Signal → window of this asset.
    let signal = d.req_string("signal");
    let window = signal.as_ref().and_then(|sig| {
        resolve_signal(d, "signal", sig, registry)?;
        let idx = windows.iter().position(|w| w.signal == sig.value);
        if idx.is_none() {
            d.error(
                sig.span,
                "signal",
                format!("signal `{}` has no window in this asset", sig.value),
            )
            .hint(format!(
                "add [[assets.signals]] signal = \"{}\" (with its window) to this asset",
                sig.value
            ))
            .emit();
        }
        idx
    });
    let default_feature = match kind {
        Some("flatline") => "p2p",
        _ => "mean",
    };
    let feature_s = d.string("feature");
    let feature_name = feature_s
        .as_ref()
        .map(|f| f.value.clone())
        .unwrap_or_else(|| default_feature.to_string());
    let feature = window.and_then(|w| {
        let bands: Vec<&str> = windows[w].bands.iter().map(String::as_str).collect();
        match Feature::parse(&feature_name, &bands) {
            Ok(f) => Some(f),
            Err(msg) => {
                let span = feature_s.as_ref().map(|f| f.span).unwrap_or(d.span());
                let mut b = d
                    .error(span, "feature", msg)
                    .expected(format!("one of: {}", Feature::all_names().join(", ")));
                if let Some(best) = closest(&feature_name, Feature::all_names().into_iter()) {
                    b = b.hint(format!("did you mean `{best}`?"));
                } else if feature_name.starts_with("band:") {
                    b = b.hint("define the band under the signal's `bands = [{ name = ..., lo_hz = ..., hi_hz = ... }]`");
                }
                b.emit();
                None
            }
        }
    });
    let spec = match kind {
        Some("threshold") => {
            let direction = read_direction(d);
            let warning = d.f64("warning");
            let critical = d.f64("critical");
            let hysteresis = d
                .f64_in("hysteresis", 0.0, f64::MAX)
                .map(|v| v.value)
                .unwrap_or(0.0);
            let min_duration = d
                .duration("min_duration")
                .map(|v| v.value.as_secs_f64())
                .unwrap_or(0.0);
            if warning.is_none() && critical.is_none() && !d.has("warning") && !d.has("critical") {
                d.table_error("a threshold detector needs `warning`, `critical` or both")
                    .hint("e.g. warning = 75.0, critical = 85.0")
                    .emit();
                ok = false;
            }
            if let (Some(w), Some(c)) = (&warning, &critical) {
                let wrong = match direction {
                    Direction::Above => w.value >= c.value,
                    Direction::Below => w.value <= c.value,
                };
                if wrong {
                    let rel = if direction == Direction::Above {
                        "below"
                    } else {
                        "above"
                    };
                    d.error(
                        c.span,
                        "critical",
                        format!(
                            "critical limit {} is not beyond the warning limit {}",
                            c.value, w.value
                        ),
                    )
                    .expected(format!(
                        "for direction = \"{}\" the warning limit lies {rel} the critical one",
                        if direction == Direction::Above {
                            "above"
                        } else {
                            "below"
                        }
                    ))
                    .hint("swap the limits, or set direction = \"below\" for low-limit alarms")
                    .emit();
                    ok = false;
                }
            }
            Some(DetectorSpec::Threshold(ThresholdSpec {
                direction,
                warning: warning.map(|v| v.value),
                critical: critical.map(|v| v.value),
                hysteresis,
                min_duration_s: min_duration,
            }))
        }
        Some("zscore") => {
            let warning_z = d
                .f64_in("warning_z", 0.1, 1e6)
                .map(|v| v.value)
                .unwrap_or(4.0);
            let critical_z = d.f64_in("critical_z", 0.1, 1e6);
            if let Some(c) = &critical_z
                && c.value <= warning_z
            {
                d.error(
                    c.span,
                    "critical_z",
                    "`critical_z` must be larger than `warning_z`",
                )
                .emit();
                ok = false;
            }
            Some(DetectorSpec::ZScore(ZScoreSpec {
                alpha: d
                    .f64_in("alpha", 1e-6, 1.0)
                    .map(|v| v.value)
                    .unwrap_or(0.05),
                warning_z,
                critical_z: critical_z.map(|v| v.value),
                warmup: d
                    .int_in("warmup", 1, 1_000_000)
                    .map(|v| v.value as u32)
                    .unwrap_or(30),
                min_std: d
                    .f64_in("min_std", 0.0, f64::MAX)
                    .map(|v| v.value)
                    .unwrap_or(1e-9),
                min_count: d
                    .int_in("min_count", 1, 1_000_000)
                    .map(|v| v.value as u32)
                    .unwrap_or(2),
            }))
        }
        Some("trend") => {
            let direction = read_direction(d);
            let limit = d.req_f64("limit");
            let horizon = d.req_duration("horizon");
            let lookback = d
                .duration("lookback")
                .map(|v| v.value.as_secs_f64())
                .unwrap_or(3600.0);
            let severity = d
                .choice(
                    "severity",
                    &[
                        ("warning", Severity::Warning),
                        ("prefault", Severity::PreFault),
                        ("critical", Severity::Critical),
                    ],
                )
                .map(|v| v.value)
                .unwrap_or(Severity::PreFault);
            let min_points = d
                .int_in("min_points", 3, 64)
                .map(|v| v.value as usize)
                .unwrap_or(10);
            let min_count = d
                .int_in("min_count", 1, 1_000_000)
                .map(|v| v.value as u32)
                .unwrap_or(3);
            match (limit, horizon) {
                (Some(l), Some(h)) => Some(DetectorSpec::Trend(TrendSpec {
                    direction,
                    limit: l.value,
                    horizon_s: h.value.as_secs_f64(),
                    lookback_s: lookback,
                    min_points,
                    min_count,
                    severity,
                })),
                _ => None,
            }
        }
        Some("flatline") => Some(DetectorSpec::FlatLine(FlatLineSpec {
            epsilon: d
                .f64_in("epsilon", 0.0, f64::MAX)
                .map(|v| v.value)
                .unwrap_or(1e-9),
            min_duration_s: d
                .duration("min_duration")
                .map(|v| v.value.as_secs_f64())
                .unwrap_or(300.0),
            severity: d
                .choice(
                    "severity",
                    &[
                        ("warning", Severity::Warning),
                        ("critical", Severity::Critical),
                    ],
                )
                .map(|v| v.value)
                .unwrap_or(Severity::Warning),
        })),
        Some("rate_of_change") => {
            let per = d
                .duration("per")
                .map(|v| v.value.as_secs_f64())
                .unwrap_or(1.0)
                .max(1e-9);
            let warning = d.f64_in("warning", 0.0, f64::MAX).map(|v| v.value / per);
            let critical = d.f64_in("critical", 0.0, f64::MAX).map(|v| v.value / per);
            if warning.is_none() && critical.is_none() && !d.has("warning") && !d.has("critical") {
                d.table_error("a rate_of_change detector needs `warning`, `critical` or both")
                    .hint("e.g. warning = 5.0, per = \"1m\"")
                    .emit();
                ok = false;
            }
            Some(DetectorSpec::RateOfChange(RateOfChangeSpec {
                warning,
                critical,
            }))
        }
        _ => {
            d.skip_unknown_check();
            None
        }
    };
    let (name, window, feature, spec) = (name?, window?, feature?, spec?);
    ok.then(|| DetectorCfg {
        name: Arc::from(name.value.as_str()),
        window,
        feature,
        feature_name,
        spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_parses_and_uses_every_detector_kind() {
        let cfg = match parse("default-config.toml", DEFAULT_CONFIG) {
            Ok(c) => c,
            Err(e) => panic!("default config is invalid:\n{e}"),
        };
        assert!(!cfg.drivers.is_empty());
        let kinds: HashSet<&str> = cfg
            .assets
            .iter()
            .flat_map(|a| a.detectors.iter().map(|d| d.spec.kind()))
            .collect();
        for k in DETECTOR_KINDS {
            assert!(kinds.contains(k), "default config lacks a {k} detector");
        }
    }

    #[test]
    fn names_are_checked_for_topic_safety() {
        assert!(valid_name("gw-01.line_2"));
        assert!(!valid_name("gw/01"));
        assert!(!valid_name("gw+"));
        assert!(!valid_name(""));
    }

    #[test]
    #[cfg(not(feature = "onnx"))]
    fn a_model_binding_in_a_build_without_onnx_is_a_config_error() {
        let src = format!(
            "{DEFAULT_CONFIG}\n[[assets.models]]\nmanifest = \"bearing_rf/manifest.toml\"\nroles = {{ vibration = \"pump2.vibration\" }}\n"
        );
        let e = match parse("edge-agent.toml", &src) {
            Ok(_) => panic!("a model binding accepted without ONNX support"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("built without ONNX support"), "{e}");
        assert!(e.contains("edge-agent.toml:"), "points into the file: {e}");
    }
}
