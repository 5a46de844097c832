//! The Prometheus endpoint (`[metrics]`, off by default, loopback unless told
//! otherwise): `GET /metrics` in the text exposition format 0.0.4.
//!
//! Served by [`crate::ops::http`] (hyper); rendered from the same [`AgentStatus`]
//! that `edge-agent status` prints, so the two always agree.

use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::counters::Metric;
use crate::ingest::latest::LatestValues;
use crate::ingest::meter::{HistogramSnapshot, LATENCY_BUCKETS};
use crate::ops::status::AgentStatus;

/// `[metrics]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsSection {
    pub listen: SocketAddr,
    /// Also bad samples per tag and reason (`per_tag = true`): one series per bad
    /// tag and reason, so off by default.
    pub per_tag: bool,
}

const SEVERITIES: [&str; 4] = ["info", "warning", "prefault", "critical"];

/// Escapes a label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP edge_agent_{name} {help}");
        let _ = writeln!(self.0, "# TYPE edge_agent_{name} {kind}");
    }
    fn line(&mut self, name: &str, labels: &str, v: f64) {
        let _ = if labels.is_empty() {
            writeln!(self.0, "edge_agent_{name} {v}")
        } else {
            writeln!(self.0, "edge_agent_{name}{{{labels}}} {v}")
        };
    }
    fn one(&mut self, name: &str, kind: &str, help: &str, v: f64) {
        self.head(name, kind, help);
        self.line(name, "", v);
    }
    /// A component's counters (see [`crate::counters`]), one metric each.
    fn counters(&mut self, metrics: &[Metric]) {
        for m in metrics {
            self.one(m.name, m.kind.as_str(), m.help.trim(), m.value as f64);
        }
    }
    fn histogram(&mut self, name: &str, labels: &str, h: &HistogramSnapshot) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, c) in h.cumulative.iter().enumerate() {
            let le = LATENCY_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(
                self.0,
                "edge_agent_{name}_bucket{{{labels}{sep}le=\"{le}\"}} {c}"
            );
        }
        let braces = |l: &str| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{{{l}}}")
            }
        };
        let _ = writeln!(
            self.0,
            "edge_agent_{name}_sum{} {}",
            braces(labels),
            h.sum_s
        );
        let _ = writeln!(
            self.0,
            "edge_agent_{name}_count{} {}",
            braces(labels),
            h.count
        );
    }
}

/// Renders every metric. Names follow the Prometheus conventions: a
/// `edge_agent_` prefix, base units (`_seconds`, `_bytes`), `_total` counters.
pub fn render(s: &AgentStatus, model_latency: &HistogramSnapshot) -> String {
    let mut o = Out(String::with_capacity(8192));
    o.head("info", "gauge", "Agent version and id (always 1).");
    o.line(
        "info",
        &format!(
            "agent=\"{}\",version=\"{}\"",
            label(&s.agent),
            label(&s.version)
        ),
        1.0,
    );
    o.one(
        "uptime_seconds",
        "gauge",
        "Seconds since the agent started.",
        s.uptime_s,
    );

    drivers(&mut o, s);
    ring_and_pipeline(&mut o, s, model_latency);
    alerts(&mut o, s);
    alarms(&mut o, s);
    journal(&mut o, s);
    uplink(&mut o, s);
    writes(&mut o, s);
    o.0
}

/// Writable tags and writes by result.
fn writes(o: &mut Out, s: &AgentStatus) {
    o.one(
        "writable_tags",
        "gauge",
        "Tags that may be written (`writable = true`).",
        s.writes.writable as f64,
    );
    o.head(
        "writes_total",
        "counter",
        "Writes to device tags by result (refused: nothing reached the device).",
    );
    let w = &s.writes;
    for (result, n) in [
        ("successful", w.successful),
        ("refused", w.refused),
        ("failed", w.failed),
    ] {
        o.line("writes_total", &format!("result=\"{result}\""), n as f64);
    }
}

/// Driver state, samples, errors, link health and poll latency.
fn drivers(o: &mut Out, s: &AgentStatus) {
    let d = |n: &str| format!("driver=\"{}\"", label(n));
    o.head(
        "driver_up",
        "gauge",
        "1 while the driver runs, 0 while it backs off, failed or stopped.",
    );
    for x in &s.drivers {
        let l = format!("{},kind=\"{}\"", d(&x.name), label(&x.kind));
        o.line("driver_up", &l, f64::from(u8::from(x.state == "running")));
    }
    o.head(
        "driver_samples_total",
        "counter",
        "Samples the driver delivered to the ring buffer.",
    );
    for x in &s.drivers {
        o.line("driver_samples_total", &d(&x.name), x.samples as f64);
    }
    o.head(
        "driver_last_sample_age_seconds",
        "gauge",
        "Seconds since the driver last delivered samples.",
    );
    for x in &s.drivers {
        if let Some(a) = x.last_sample_age_s {
            o.line("driver_last_sample_age_seconds", &d(&x.name), a);
        }
    }
    o.head(
        "driver_restarts_total",
        "counter",
        "Times the supervisor restarted the driver after an error or panic.",
    );
    for x in &s.drivers {
        o.line("driver_restarts_total", &d(&x.name), x.restarts as f64);
    }
    o.head(
        "driver_errors_total",
        "counter",
        "Device communication errors by kind (timeout: no answer; exception: the device refused an item).",
    );
    for x in s.drivers.iter().filter(|x| x.latency.is_some()) {
        for (kind, v) in [("timeout", x.timeouts), ("exception", x.exceptions)] {
            o.line(
                "driver_errors_total",
                &format!("{},kind=\"{kind}\"", d(&x.name)),
                v as f64,
            );
        }
        o.line(
            "driver_errors_total",
            &format!("{},kind=\"panic\"", d(&x.name)),
            x.panics as f64,
        );
    }
    o.head(
        "driver_connects_total",
        "counter",
        "Connections the driver opened to its device (the first one included).",
    );
    for x in s.drivers.iter().filter(|x| x.latency.is_some()) {
        o.line("driver_connects_total", &d(&x.name), x.connects as f64);
    }
    o.head(
        "driver_link_health",
        "gauge",
        "Link health score 0-100 (below 75 Warning, below 60 Critical by default).",
    );
    for x in &s.drivers {
        if let Some(h) = x.health {
            o.line("driver_link_health", &d(&x.name), h);
        }
    }
    o.head(
        "driver_poll_latency_seconds",
        "histogram",
        "Round-trip time of the driver's device requests.",
    );
    for x in &s.drivers {
        if let Some(h) = &x.latency {
            o.histogram("driver_poll_latency_seconds", &d(&x.name), h);
        }
    }
}

/// The ring buffer, the pipeline's counters and the models.
fn ring_and_pipeline(o: &mut Out, s: &AgentStatus, model_latency: &HistogramSnapshot) {
    let r = &s.ring;
    o.one(
        "ring_capacity_samples",
        "gauge",
        "Samples the ring buffer holds at most.",
        r.capacity as f64,
    );
    o.one(
        "ring_samples",
        "gauge",
        "Samples waiting in the ring buffer.",
        r.len as f64,
    );
    o.one(
        "ring_high_water_samples",
        "gauge",
        "Most samples the ring buffer has held at once.",
        r.high_water as f64,
    );
    o.head(
        "ring_dropped_samples_total",
        "counter",
        "Samples the ring buffer's overflow policy dropped.",
    );
    o.line(
        "ring_dropped_samples_total",
        "policy=\"drop_oldest\"",
        r.dropped_oldest as f64,
    );
    o.line(
        "ring_dropped_samples_total",
        "policy=\"drop_newest\"",
        r.dropped_newest as f64,
    );
    o.counters(&s.pipeline.counts.metrics());
    o.head(
        "model_batch_seconds",
        "histogram",
        "Wall time of one batch of model inferences.",
    );
    o.histogram("model_batch_seconds", "", model_latency);
    o.head(
        "model_quarantined",
        "gauge",
        "1 while a model binding is quarantined (its asset runs on the built-in detectors).",
    );
    for m in &s.models {
        for b in &m.bindings {
            o.line(
                "model_quarantined",
                &format!(
                    "model=\"{}\",asset=\"{}\",binding=\"{}\"",
                    label(&m.name),
                    label(&b.asset),
                    label(&b.binding)
                ),
                f64::from(u8::from(b.quarantined)),
            );
        }
    }
}

/// Alerts raised and cleared, and sink failures.
fn alerts(o: &mut Out, s: &AgentStatus) {
    o.head(
        "alerts_raised_total",
        "counter",
        "Alerts raised or escalated, by severity.",
    );
    for (sev, v) in SEVERITIES.iter().zip(s.alerts.raised) {
        o.line(
            "alerts_raised_total",
            &format!("severity=\"{sev}\""),
            v as f64,
        );
    }
    o.one(
        "alerts_cleared_total",
        "counter",
        "Alerts cleared.",
        s.alerts.cleared as f64,
    );
    o.one(
        "alert_sink_failures_total",
        "counter",
        "Failed deliveries to an alert sink (console, file, journal).",
        s.alerts.sink_failures as f64,
    );
}

/// Local alarm outputs (GPIO).
fn alarms(o: &mut Out, s: &AgentStatus) {
    if !s.alarms.is_empty() {
        o.head(
            "alarm_output_on",
            "gauge",
            "1 while a local alarm output (GPIO) is on.",
        );
        for a in &s.alarms {
            o.line(
                "alarm_output_on",
                &format!("output=\"{}\"", label(&a.name)),
                f64::from(u8::from(a.on)),
            );
        }
        o.head(
            "alarm_output_failed",
            "gauge",
            "1 while a local alarm output's GPIO line cannot be driven.",
        );
        for a in &s.alarms {
            o.line(
                "alarm_output_failed",
                &format!("output=\"{}\"", label(&a.name)),
                f64::from(u8::from(a.failed)),
            );
        }
    }
}

/// The journal: size, pending and evicted records per lane.
fn journal(o: &mut Out, s: &AgentStatus) {
    if let Some(j) = &s.journal {
        o.one(
            "journal_bytes",
            "gauge",
            "Bytes the journal occupies on disk.",
            j.bytes as f64,
        );
        o.one(
            "journal_segments",
            "gauge",
            "Journal segment files.",
            j.segments as f64,
        );
        let lanes = [
            ("alert", &j.alert),
            ("event", &j.event),
            ("telemetry", &j.telemetry),
        ];
        o.head(
            "journal_records",
            "gauge",
            "Records not yet acknowledged by the broker, by lane.",
        );
        for (n, l) in lanes {
            o.line(
                "journal_records",
                &format!("lane=\"{n}\""),
                l.pending as f64,
            );
        }
        o.head(
            "journal_oldest_unacked_age_seconds",
            "gauge",
            "Age of the oldest record the broker has not acknowledged, by lane.",
        );
        for (n, l) in lanes {
            if let Some(a) = l.oldest_unacked_age_s {
                o.line(
                    "journal_oldest_unacked_age_seconds",
                    &format!("lane=\"{n}\""),
                    a,
                );
            }
        }
        o.head(
            "journal_evicted_records_total",
            "counter",
            "Unacknowledged records evicted to stay within max_disk, by lane.",
        );
        for (n, l) in lanes {
            o.line(
                "journal_evicted_records_total",
                &format!("lane=\"{n}\""),
                l.evicted as f64,
            );
        }
        o.one(
            "journal_corrupt_records_total",
            "counter",
            "Journal frames skipped for a bad checksum or sequence.",
            j.corrupt as f64,
        );
    }
}

/// The uplink: connection and counters.
fn uplink(o: &mut Out, s: &AgentStatus) {
    if let Some(u) = &s.uplink {
        o.one(
            "uplink_connected",
            "gauge",
            "1 while connected to the central broker.",
            f64::from(u8::from(u.connected)),
        );
        o.counters(&u.counts.metrics());
    }
}

/// Bad samples by driver and reason (bounded: drivers × 9 series), and with
/// `per_tag` by tag and reason (only the tags that had some).
pub fn render_quality(latest: &LatestValues, per_tag: bool) -> String {
    let mut o = Out(String::new());
    o.head(
        "bad_samples_total",
        "counter",
        "Samples of bad quality, by driver and reason (timeout, exception, unreadable, ...).",
    );
    for (driver, reason, n) in latest.bad_by_driver() {
        let l = format!("driver=\"{}\",reason=\"{reason}\"", label(&driver));
        o.line("bad_samples_total", &l, n as f64);
    }
    if per_tag {
        o.head(
            "tag_bad_samples_total",
            "counter",
            "Samples of bad quality, by tag and reason ([metrics] per_tag = true).",
        );
        for (tag, reason, n) in latest.bad_by_tag() {
            let l = format!("tag=\"{}\",reason=\"{reason}\"", label(&tag));
            o.line("tag_bad_samples_total", &l, n as f64);
        }
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::status::{DriverInfo, JournalInfo, LaneInfo, UplinkInfo};

    /// Every sample line is `name{labels} value`, every name was declared by a
    /// `# TYPE` line before it, and counters end in `_total`.
    fn check_exposition(text: &str) {
        let mut declared: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let (n, k) = (it.next().expect("name"), it.next().expect("kind"));
                if k == "counter" {
                    assert!(n.ends_with("_total"), "counter {n} must end in _total");
                }
                declared.push((n.into(), k.into()));
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name = line.split(['{', ' ']).next().expect("name");
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| declared.iter().any(|(n, k)| n == b && k == "histogram"))
                .unwrap_or(name);
            assert!(
                declared.iter().any(|(n, _)| n == base),
                "{name} has no # TYPE line"
            );
            let value = line.rsplit(' ').next().expect("value");
            assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
        }
    }

    #[test]
    fn metrics_follow_the_exposition_format_and_naming_conventions() {
        let mut h = crate::ingest::meter::Histogram::default();
        h.observe(0.003);
        let s = AgentStatus {
            agent: "gw \"1\"".into(),
            version: "0.1.0".into(),
            drivers: vec![
                DriverInfo {
                    name: "plc".into(),
                    kind: "s7".into(),
                    state: "running".into(),
                    samples: 10,
                    last_sample_age_s: Some(0.5),
                    health: Some(88.0),
                    timeouts: 2,
                    latency: Some(h.snapshot()),
                    ..DriverInfo::default()
                },
                DriverInfo {
                    name: "sim".into(),
                    kind: "sim".into(),
                    state: "backing_off".into(),
                    ..DriverInfo::default()
                },
            ],
            journal: Some(JournalInfo {
                alert: LaneInfo {
                    pending: 4,
                    evicted: 0,
                    oldest_unacked_age_s: Some(12.0),
                },
                ..JournalInfo::default()
            }),
            uplink: Some(UplinkInfo {
                connected: true,
                ..UplinkInfo::default()
            }),
            ..AgentStatus::default()
        };
        h = crate::ingest::meter::Histogram::default();
        let text = render(&s, &h.snapshot());
        check_exposition(&text);
        for want in [
            "edge_agent_info{agent=\"gw \\\"1\\\"\",version=\"0.1.0\"} 1",
            "edge_agent_driver_up{driver=\"plc\",kind=\"s7\"} 1",
            "edge_agent_driver_up{driver=\"sim\",kind=\"sim\"} 0",
            "edge_agent_driver_errors_total{driver=\"plc\",kind=\"timeout\"} 2",
            "edge_agent_driver_poll_latency_seconds_bucket{driver=\"plc\",le=\"0.005\"} 1",
            "edge_agent_driver_poll_latency_seconds_bucket{driver=\"plc\",le=\"+Inf\"} 1",
            "edge_agent_driver_poll_latency_seconds_count{driver=\"plc\"} 1",
            "edge_agent_driver_link_health{driver=\"plc\"} 88",
            "edge_agent_journal_records{lane=\"alert\"} 4",
            "edge_agent_journal_oldest_unacked_age_seconds{lane=\"alert\"} 12",
            "edge_agent_uplink_connected 1",
            "edge_agent_alerts_raised_total{severity=\"critical\"} 0",
            "edge_agent_model_batch_seconds_count 0",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(
            !text.contains("driver_errors_total{driver=\"sim\""),
            "a driver without a link has no link errors"
        );
    }

    #[test]
    fn bad_samples_are_counted_by_driver_and_reason_and_per_tag_only_when_asked() {
        use edge_driver_api::{BadReason, Sample, SignalDecl, SignalId, SignalRegistry, Timestamp};
        let mut reg = SignalRegistry::new();
        for name in ["plc.a", "plc.\"b\""] {
            let decl = SignalDecl {
                name: name.into(),
                unit: None,
                span: Default::default(),
                text: false,
                address: None,
            };
            reg.intern(&decl, "plc").expect("register");
        }
        let latest = LatestValues::new(&reg, &Default::default());
        let ts = Timestamp::default();
        latest.record(&[
            Sample::bad(ts, SignalId(0), BadReason::Timeout),
            Sample::bad(ts, SignalId(1), BadReason::DeviceException(2)),
        ]);
        let text = render_quality(&latest, false);
        check_exposition(&text);
        assert!(
            text.contains("edge_agent_bad_samples_total{driver=\"plc\",reason=\"timeout\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("edge_agent_bad_samples_total{driver=\"plc\",reason=\"exception\"} 1"),
            "{text}"
        );
        assert!(!text.contains("tag_bad_samples_total"), "{text}");
        let text = render_quality(&latest, true);
        check_exposition(&text);
        assert!(
            text.contains(
                "edge_agent_tag_bad_samples_total{tag=\"plc.\\\"b\\\"\",reason=\"exception\"} 1"
            ),
            "{text}"
        );
        assert_eq!(
            text.matches("edge_agent_tag_bad_samples_total{").count(),
            2,
            "{text}"
        );
    }
}
