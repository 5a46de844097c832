//! The delivery sections: `[journal]`, `[uplink]` and `[[alarms]]`, one reader each.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use edge_driver_api::SignalRegistry;
use edge_driver_api::config::{NodeValue, Span, Spanned, TableReader};
use edge_models::Severity;

use crate::delivery::alarm::AlarmOutputCfg;
use crate::delivery::journal::{FsyncPolicy, JournalConfig};
use crate::delivery::sparkplug::SparkplugConfig;
use crate::delivery::uplink::ReplayRate;

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

/// `[journal]`.
pub(super) fn journal(root: &mut TableReader<'_>) -> Option<JournalSection> {
    root.table("journal").and_then(|mut j| {
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
            None => Some(FsyncPolicy::Always),
            Some(n) => match &n.value {
                NodeValue::Str(s) if s == "always" => Some(FsyncPolicy::Always),
                NodeValue::Str(s) => match edge_driver_api::config::parse_duration(s) {
                    Ok(d) if !d.is_zero() => Some(FsyncPolicy::Interval(d)),
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
            store: JournalConfig {
                dir: PathBuf::from(dir.value),
                max_disk,
                segment_bytes,
                fsync: fsync?,
            },
            backlog,
        })
    })
}

/// `[uplink]`; it forwards from the journal, so it needs one.
pub(super) fn uplink(root: &mut TableReader<'_>, has_journal: bool) -> Option<UplinkSection> {
    root.table("uplink").and_then(|mut u| {
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
        let replay_rate = read_replay_rate(&mut u);
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
            sparkplug: None,
            commands: None,
        })
    })
}

/// `[sparkplug]`: `group_id` (required), `edge_node_id` (default: the agent's id),
/// `deadband` (0: every change), `scan` (`"1s"`), `primary_host` (none),
/// `history` (10,000 changes kept while disconnected). Needs `[uplink]`.
/// Each `deadbands` key (a signal name) with where it is, to check once the
/// signals are known.
pub(super) type SignalKeys = Vec<(String, Span)>;

pub(super) fn sparkplug(
    root: &mut TableReader<'_>,
    has_uplink: bool,
) -> Option<(SparkplugConfig, SignalKeys)> {
    let mut t = root.table("sparkplug")?;
    let mut ok = true;
    let mut id = |t: &mut TableReader<'_>, key: &'static str, v: Option<Spanned<String>>| {
        let v = v?;
        if crate::delivery::wire::sparkplug::valid_id(&v.value) {
            return Some(v.value);
        }
        t.error(
            v.span,
            key,
            format!("`{}` is not a valid Sparkplug id", v.value),
        )
        .expected("not empty, without `/`, `+` or `#` (ids are topic levels)")
        .emit();
        ok = false;
        None
    };
    let group = t.req_string("group_id");
    let group_id = id(&mut t, "group_id", group);
    let node = t.string("edge_node_id");
    let edge_node_id = id(&mut t, "edge_node_id", node).unwrap_or_default();
    let host = t.string("primary_host");
    let primary_host = id(&mut t, "primary_host", host);
    let deadband = t.f64_in("deadband", 0.0, f64::MAX).map_or(0.0, |v| v.value);
    let history = t
        .int_in("history", 0, 10_000_000)
        .map_or(10_000, |v| v.value as usize);
    let dcmd_writes = t.bool("dcmd_writes").is_some_and(|v| v.value);
    let (deadbands, keys) = deadbands(&mut t);
    ok &= deadbands.is_some();
    let scan = t
        .duration("scan")
        .map_or(Duration::from_secs(1), |v| v.value)
        .max(Duration::from_millis(100));
    if !has_uplink {
        t.table_error("Sparkplug B travels over the uplink, but no [uplink] is configured")
            .hint("add an [uplink] section with the broker's `host` (and a [journal])")
            .emit();
        ok = false;
    }
    let group_id = group_id?;
    ok.then_some((
        SparkplugConfig {
            group_id,
            edge_node_id,
            deadband,
            deadbands: deadbands.unwrap_or_default(),
            scan,
            primary_host,
            history,
            dcmd_writes,
        },
        keys,
    ))
}

/// Each of `keys` names a signal of `registry` (once the drivers are read).
pub(super) fn check_signals(root: &TableReader<'_>, keys: &SignalKeys, registry: &SignalRegistry) {
    for (name, span) in keys {
        if registry.get(name).is_none() {
            root.error(
                *span,
                "sparkplug.deadbands",
                format!("unknown signal `{name}`"),
            )
            .hint("run `edge-agent check-config --list-signals FILE` to see every signal name")
            .emit();
        }
    }
}

/// `deadbands = { "signal" = 0.5, ... }`: per signal, ≥ 0.
fn deadbands(
    t: &mut TableReader<'_>,
) -> (Option<std::collections::HashMap<String, f64>>, SignalKeys) {
    let mut out = std::collections::HashMap::new();
    let mut keys = Vec::new();
    let Some(node) = t.node("deadbands") else {
        return (Some(out), keys);
    };
    let NodeValue::Table(table) = &node.value else {
        t.error(
            node.span,
            "deadbands",
            "`deadbands` is a table of signal = deadband",
        )
        .hint("e.g. deadbands = { \"pump1.temperature\" = 0.5 }")
        .emit();
        return (None, keys);
    };
    let mut ok = true;
    for e in &table.entries {
        let v = match e.node.value {
            NodeValue::Float(x) if x >= 0.0 && x.is_finite() => x,
            NodeValue::Int(i) if i >= 0 => i as f64,
            _ => {
                t.error(
                    e.node.span,
                    "deadbands",
                    format!("the deadband of `{}` must be a number ≥ 0", e.key),
                )
                .hint("a deadband is in the signal's own units, e.g. 0.5; 0 sends every change")
                .emit();
                ok = false;
                continue;
            }
        };
        out.insert(e.key.clone(), v);
        keys.push((e.key.clone(), e.key_span));
    }
    (ok.then_some(out), keys)
}

/// Reads every `[[alarms]]` entry; problems are reported as config diagnostics (a
/// chip that does not exist among them, so `check-config` catches a wrong device
/// before the service starts).
pub(super) fn alarms(root: &mut TableReader<'_>) -> Vec<AlarmOutputCfg> {
    let mut out: Vec<AlarmOutputCfg> = Vec::new();
    for mut t in root.tables("alarms") {
        let name = t.req_string("name");
        let chip = t.req_string("chip");
        let line = t.int_in("line", 0, 65_535);
        if line.is_none() && !t.has("line") {
            t.table_error("missing `line`")
                .expected("the line offset on the chip, e.g. `line = 17`")
                .hint("`gpioinfo` lists every chip's lines and their names")
                .emit();
        }
        let names = [
            ("info", Severity::Info),
            ("warning", Severity::Warning),
            ("prefault", Severity::PreFault),
            ("critical", Severity::Critical),
        ];
        let mut on = Vec::new();
        match t.strings("on") {
            Some(list) => {
                for sev in list {
                    match names.iter().find(|(n, _)| *n == sev.value) {
                        Some((_, s)) => on.push(*s),
                        None => t
                            .error(sev.span, "on", format!("`{}` is not a severity", sev.value))
                            .expected("info, warning, prefault or critical")
                            .emit(),
                    }
                }
                if on.is_empty() {
                    t.table_error("`on` lists no severity")
                        .expected("e.g. `on = [\"critical\"]`")
                        .emit();
                }
            }
            None => t
                .table_error("missing `on`")
                .expected("the severities that switch the output on, e.g. `on = [\"critical\"]`")
                .emit(),
        }
        let active_low = t.bool("active_low").is_some_and(|b| b.value);
        let latch = t.bool("latch").is_some_and(|b| b.value);
        if let Some(c) = &chip {
            use std::os::unix::fs::FileTypeExt;
            match std::fs::metadata(&c.value) {
                Ok(m) if m.file_type().is_char_device() => {}
                Ok(_) => t
                    .error(c.span, "chip", format!("{} is not a character device", c.value))
                    .expected("a GPIO chip such as /dev/gpiochip0")
                    .emit(),
                Err(e) => t
                    .error(c.span, "chip", format!("GPIO chip {} cannot be opened: {e}", c.value))
                    .expected("an existing GPIO chip such as /dev/gpiochip0")
                    .hint("`gpiodetect` (or `ls /dev/gpiochip*`) lists the chips; on a Raspberry Pi 5 the header is /dev/gpiochip4, on earlier models /dev/gpiochip0")
                    .emit(),
            }
        }
        if !cfg!(feature = "gpio") {
            t.table_error("this build has no GPIO support")
                .hint("build with the `gpio` feature (on by default)")
                .emit();
        }
        if let Some(n) = &name
            && out.iter().any(|o| *o.name == *n.value)
        {
            t.error(
                n.span,
                "name",
                format!("a second alarm output named `{}`", n.value),
            )
            .expected("unique names")
            .emit();
        }
        if let (Some(name), Some(chip), Some(line)) = (name, chip, line)
            && !on.is_empty()
        {
            if let Some(other) = out
                .iter()
                .find(|o| o.chip.as_os_str() == chip.value.as_str() && o.line == line.value as u32)
            {
                t.error(
                    line.span,
                    "line",
                    format!(
                        "line {} of {} is already `{}`",
                        line.value, chip.value, other.name
                    ),
                )
                .expected("one output per line")
                .emit();
                continue;
            }
            out.push(AlarmOutputCfg {
                name: Arc::from(name.value.as_str()),
                chip: PathBuf::from(chip.value),
                line: line.value as u32,
                on,
                active_low,
                latch,
            });
        }
    }
    out
}

/// The Sparkplug node of agent `id`: its `edge_node_id` unless configured.
pub(super) fn sparkplug_for_agent(mut s: SparkplugConfig, id: &str) -> SparkplugConfig {
    if s.edge_node_id.is_empty() {
        s.edge_node_id = id.to_string();
    }
    s
}

/// The uplink of agent `id`: its `agent_id`, and its `client_id` unless configured.
pub(super) fn for_agent(mut u: UplinkSection, id: &str) -> UplinkSection {
    u.agent_id = id.to_string();
    if u.client_id.is_empty() {
        u.client_id = id.to_string();
    }
    u
}

/// `replay_rate`: `"auto"` (the default) or backlog messages per second.
fn read_replay_rate(u: &mut TableReader<'_>) -> ReplayRate {
    let is_text = u
        .node("replay_rate")
        .is_some_and(|n| matches!(n.value, NodeValue::Str(_)));
    if !is_text {
        return u
            .int_in("replay_rate", 1, 1_000_000)
            .map_or(ReplayRate::Auto, |v| ReplayRate::PerSecond(v.value as u32));
    }
    match u.string("replay_rate") {
        Some(v) if v.value == "auto" => ReplayRate::Auto,
        Some(v) => {
            u.error(
                v.span,
                "replay_rate",
                format!("`{}` is not a replay rate", v.value),
            )
            .expected("\"auto\" or backlog messages per second (1 to 1000000)")
            .hint("\"auto\" replays as fast as the broker acknowledges without its PUBACK latency growing")
            .emit();
            ReplayRate::Auto
        }
        None => ReplayRate::Auto,
    }
}
