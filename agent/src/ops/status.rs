//! What a running agent reports about itself: `edge-agent status`, `edge-agent
//! models list` (through the control socket) and the Prometheus endpoint all read
//! one [`AgentStatus`], built on demand from the live counters by a
//! [`StatusSource`].

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use edge_driver_api::Clock;
use serde::{Deserialize, Serialize};

pub use super::tags::{TagsReport, render_tags};
use crate::delivery::journal::{Journal, Lane};
use crate::delivery::sink::SinkCounters;
use crate::delivery::uplink::{UplinkSnapshot, UplinkStats};
use crate::delivery::wire::Envelope;
use crate::ingest::latest::{LatestValues, TagCounts};
use crate::ingest::meter::{DriverMeter, HistogramSnapshot};
use crate::ingest::ring::{RingStats, SampleRing};
use crate::ingest::supervisor::{DriverState, DriverStatus};
use crate::pipeline::scoring::LiveModels;
use crate::pipeline::{PipelineCounters, PipelineSnapshot};

/// A running agent at one instant. Serialised as JSON on the control socket.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub agent: String,
    pub version: String,
    pub uptime_s: f64,
    /// Config file the agent runs (or `<built-in default config>`).
    pub config: String,
    pub drivers: Vec<DriverInfo>,
    pub ring: RingStats,
    pub pipeline: PipelineInfo,
    pub alerts: AlertInfo,
    pub journal: Option<JournalInfo>,
    pub uplink: Option<UplinkInfo>,
    pub models: Vec<ModelInfo>,
    #[serde(default)]
    pub alarms: Vec<AlarmInfo>,
    /// Tags by quality (`edge-agent tags` lists them).
    #[serde(default)]
    pub tags: TagCounts,
    /// Where the web UI answers (`[ui]`), e.g. `http://127.0.0.1:9480/`.
    #[serde(default)]
    pub ui: Option<String>,
    /// Writes to device tags since start.
    #[serde(default)]
    pub writes: WriteInfo,
}

/// Writable tags and writes by result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteInfo {
    pub writable: usize,
    pub successful: u64,
    pub refused: u64,
    pub failed: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AlarmInfo {
    pub name: String,
    pub on: bool,
    /// On only because it latched (its alerts cleared); `edge-agent alarms ack`
    /// turns it off.
    pub latched: bool,
    /// The GPIO line could not be requested or driven.
    pub failed: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DriverInfo {
    pub name: String,
    pub kind: String,
    /// starting, running, backing_off, failed, stopped.
    pub state: String,
    pub restarts: u64,
    pub panics: u64,
    pub last_error: Option<String>,
    pub samples: u64,
    pub last_sample_age_s: Option<f64>,
    /// Link health 0–100 (Modbus, S7, CoAP links).
    pub health: Option<f64>,
    pub timeouts: u64,
    pub exceptions: u64,
    pub connects: u64,
    /// Request round-trip times (only for drivers with a link).
    #[serde(skip)]
    pub latency: Option<HistogramSnapshot>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PipelineInfo {
    /// The pipeline's counters.
    #[serde(flatten)]
    pub counts: PipelineSnapshot,
    /// Mean wall time of a model batch, seconds.
    pub model_batch_mean_s: Option<f64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertInfo {
    /// Raised or escalated alerts delivered, by severity: info, warning, prefault,
    /// critical.
    pub raised: [u64; 4],
    pub cleared: u64,
    pub sink_failures: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LaneInfo {
    pub pending: u64,
    pub evicted: u64,
    /// Age of the oldest record the broker has not acknowledged.
    pub oldest_unacked_age_s: Option<f64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JournalInfo {
    pub bytes: u64,
    pub segments: u64,
    pub alert: LaneInfo,
    pub event: LaneInfo,
    pub telemetry: LaneInfo,
    pub corrupt: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UplinkInfo {
    pub connected: bool,
    /// The uplink's counters.
    #[serde(flatten)]
    pub counts: UplinkSnapshot,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub manifest: String,
    pub swaps: u64,
    pub rejections: u64,
    pub last_rejection: Option<String>,
    /// Loads, swaps and rejections, oldest first (the last 16).
    #[serde(default)]
    pub history: Vec<crate::pipeline::scoring::VersionEvent>,
    pub bindings: Vec<BindingInfo>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BindingInfo {
    pub asset: String,
    pub binding: String,
    pub quarantined: bool,
    /// Current alert level of the binding (`None`: normal).
    pub level: Option<String>,
    pub drifted: Vec<String>,
}

/// The live parts a status is read from. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StatusSource {
    pub agent: Arc<str>,
    pub config_file: Arc<str>,
    pub clock: Clock,
    pub started_ns: u64,
    pub ring: Arc<SampleRing>,
    pub counters: Arc<PipelineCounters>,
    pub drivers: Vec<(Arc<DriverStatus>, Arc<DriverMeter>)>,
    pub journal: Option<Arc<Mutex<Journal>>>,
    pub uplink: Option<Arc<UplinkStats>>,
    pub sinks: Arc<SinkCounters>,
    pub models: Arc<LiveModels>,
    pub alarms: Arc<crate::delivery::alarm::AlarmState>,
    pub latest: Arc<LatestValues>,
    /// The web UI's address, once it listens.
    pub ui_url: Arc<std::sync::OnceLock<String>>,
    /// Labels alerts (`[labels]`).
    pub labels: Option<Arc<crate::delivery::labels::Labeller>>,
    /// Writes to device tags (`edge-agent write`).
    pub writes: Arc<crate::inbound::Writes>,
}

fn state_name(s: DriverState) -> &'static str {
    match s {
        DriverState::Starting => "starting",
        DriverState::Running => "running",
        DriverState::BackingOff => "backing_off",
        DriverState::Failed => "failed",
        DriverState::Stopped => "stopped",
    }
}

impl StatusSource {
    fn driver_states(&self) -> Vec<(Arc<str>, &'static str)> {
        self.drivers
            .iter()
            .map(|(st, _)| (st.name.clone(), state_name(st.state())))
            .collect()
    }

    fn tag_counts(&self) -> TagCounts {
        let states = self.driver_states();
        let state = |d: &str| states.iter().find(|(n, _)| &**n == d).map(|(_, s)| *s);
        self.latest.counts(self.clock.mono_ns(), &state)
    }

    /// The latest value of every tag whose name matches `filter` (see
    /// [`crate::ingest::latest::name_matches`]).
    pub fn tags(&self, filter: &str) -> TagsReport {
        let states = self.driver_states();
        let state = |d: &str| states.iter().find(|(n, _)| &**n == d).map(|(_, s)| *s);
        TagsReport {
            agent: self.agent.to_string(),
            total: self.latest.len(),
            tags: self.latest.snapshot(filter, self.clock.mono_ns(), &state),
        }
    }

    pub fn snapshot(&self) -> AgentStatus {
        let now_ns = self.clock.mono_ns();
        let wall_now = self.clock.now().wall_ns;
        let drivers = self
            .drivers
            .iter()
            .map(|(st, m)| {
                let link = m.link();
                DriverInfo {
                    name: st.name.to_string(),
                    kind: st.kind.to_string(),
                    state: state_name(st.state()).into(),
                    restarts: st.restarts.load(Ordering::Relaxed),
                    panics: st.panics.load(Ordering::Relaxed),
                    last_error: st.last_error(),
                    samples: m.samples.load(Ordering::Relaxed),
                    last_sample_age_s: m.last_sample_age(&self.clock),
                    health: link.health,
                    timeouts: link.timeouts,
                    exceptions: link.exceptions,
                    connects: link.connects,
                    latency: m.has_link().then(|| m.latency.snapshot()),
                }
            })
            .collect();
        let r = self.ring.stats();
        let c = &self.counters;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let batches = c.model_latency.snapshot();
        let journal = self.journal.as_ref().map(|j| {
            let mut j = j.lock().unwrap_or_else(|p| p.into_inner());
            let s = j.stats();
            let mut lane = |l: Lane| LaneInfo {
                pending: s.pending[l as usize],
                evicted: s.counters.evicted[l as usize],
                oldest_unacked_age_s: oldest_unacked(&mut j, l)
                    .map(|w| (wall_now.saturating_sub(w)).max(0) as f64 / 1e9),
            };
            JournalInfo {
                bytes: s.bytes,
                segments: s.segments as u64,
                alert: lane(Lane::Alert),
                event: lane(Lane::Event),
                telemetry: lane(Lane::Telemetry),
                corrupt: s.counters.corrupt,
            }
        });
        let bindings = self
            .counters
            .bindings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let models = self
            .models
            .get()
            .handles
            .iter()
            .map(|h| {
                let m = h.current();
                let name = m.manifest.model.name.clone();
                ModelInfo {
                    version: m.manifest.model.version.clone(),
                    sha256: m.sha256.clone(),
                    manifest: h.manifest_path.display().to_string(),
                    swaps: h.swaps.load(Ordering::Relaxed),
                    rejections: h.rejections.load(Ordering::Relaxed),
                    last_rejection: h.last_rejection(),
                    history: h.history(),
                    bindings: bindings
                        .iter()
                        .filter(|b| b.model.as_ref().is_some_and(|r| r.name == name))
                        .map(|b| BindingInfo {
                            asset: b.asset.clone(),
                            binding: b.binding.clone(),
                            quarantined: b.quarantined,
                            level: b.level.map(|l| l.as_str().to_string()),
                            drifted: b.drifted.clone(),
                        })
                        .collect(),
                    name,
                }
            })
            .collect();
        let sinks = &self.sinks;
        AgentStatus {
            agent: self.agent.to_string(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_s: now_ns.saturating_sub(self.started_ns) as f64 / 1e9,
            config: self.config_file.to_string(),
            drivers,
            ring: r,
            pipeline: PipelineInfo {
                counts: c.snapshot(),
                model_batch_mean_s: (batches.count > 0)
                    .then(|| batches.sum_s / batches.count as f64),
            },
            alerts: AlertInfo {
                raised: std::array::from_fn(|i| load(&sinks.raised[i])),
                cleared: load(&sinks.cleared),
                sink_failures: load(&sinks.failures),
            },
            journal,
            uplink: self.uplink.as_ref().map(|u| UplinkInfo {
                connected: u.connected.load(Ordering::Relaxed),
                counts: u.snapshot(),
            }),
            models,
            alarms: self
                .alarms
                .outputs
                .iter()
                .map(|o| AlarmInfo {
                    name: o.name.to_string(),
                    on: o.on.load(Ordering::Relaxed),
                    latched: o.latched.load(Ordering::Relaxed),
                    failed: o.failed.load(Ordering::Relaxed),
                })
                .collect(),
            tags: self.tag_counts(),
            writes: WriteInfo {
                writable: self.writes.routes.len(),
                successful: load(&self.writes.counters.successful),
                refused: load(&self.writes.counters.refused),
                failed: load(&self.writes.counters.failed),
            },
            ui: self.ui_url.get().cloned(),
        }
    }
}

/// Creation time (wall ns) of the oldest record of `lane` not yet released.
fn oldest_unacked(j: &mut Journal, lane: Lane) -> Option<i64> {
    let first = j.acked(lane) + 1;
    let rec = j.read(lane, first, 1).ok()?.into_iter().next()?;
    Envelope::decode(&rec.payload).map(|e| e.created_wall_ns)
}

fn age(s: Option<f64>) -> String {
    match s {
        None => "never".into(),
        Some(s) if s < 120.0 => format!("{s:.1} s ago"),
        Some(s) if s < 7200.0 => format!("{:.0} min ago", s / 60.0),
        Some(s) => format!("{:.1} h ago", s / 3600.0),
    }
}

impl AgentStatus {
    /// The human summary `edge-agent status` prints.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "edge-agent {} · agent {} · up {} · config {}",
            self.version,
            self.agent,
            age(Some(self.uptime_s)).trim_end_matches(" ago"),
            self.config
        );
        let _ = writeln!(o, "\nDRIVERS");
        let _ = writeln!(
            o,
            "  {:<16} {:<6} {:<12} {:>10} {:>14} {:>7} {:>8} {:>9}",
            "name", "kind", "state", "samples", "last sample", "health", "timeouts", "restarts"
        );
        for d in &self.drivers {
            let health = d.health.map_or("-".into(), |h| format!("{h:.0}"));
            let _ = writeln!(
                o,
                "  {:<16} {:<6} {:<12} {:>10} {:>14} {:>7} {:>8} {:>9}",
                d.name,
                d.kind,
                d.state,
                d.samples,
                age(d.last_sample_age_s),
                health,
                d.timeouts,
                d.restarts
            );
            if let Some(e) = &d.last_error
                && d.state != "running"
            {
                let _ = writeln!(o, "    last error: {e}");
            }
        }
        let r = &self.ring;
        let _ = writeln!(
            o,
            "\nRING      {}/{} samples (high water {}), dropped {} oldest / {} newest",
            r.len, r.capacity, r.high_water, r.dropped_oldest, r.dropped_newest
        );
        let p = &self.pipeline.counts;
        let _ = writeln!(
            o,
            "PIPELINE  {} samples, {} windows, {} unusable, {} unrouted",
            p.samples, p.windows, p.unusable, p.unrouted
        );
        let t = &self.tags;
        let _ = writeln!(
            o,
            "TAGS      {} good, {} bad, {} stale, {} without data (edge-agent tags)",
            t.good, t.bad, t.stale, t.no_data
        );
        let w = &self.writes;
        if w.writable > 0 {
            let _ = writeln!(
                o,
                "WRITES    {} writable tags; {} written, {} refused, {} failed (audited on events/audit)",
                w.writable, w.successful, w.refused, w.failed
            );
        }
        let a = &self.alerts;
        let _ = writeln!(
            o,
            "ALERTS    raised {} warning, {} prefault, {} critical ({} info); {} cleared",
            a.raised[1], a.raised[2], a.raised[3], a.raised[0], a.cleared
        );
        match &self.journal {
            Some(j) => {
                let lane = |l: &LaneInfo| match l.oldest_unacked_age_s {
                    Some(s) => format!("{} pending, oldest {}", l.pending, age(Some(s))),
                    None => format!("{} pending", l.pending),
                };
                let _ = writeln!(
                    o,
                    "JOURNAL   {} bytes in {} segments; alerts {}; events {}; telemetry {}",
                    j.bytes,
                    j.segments,
                    lane(&j.alert),
                    lane(&j.event),
                    lane(&j.telemetry)
                );
                let evicted = j.alert.evicted + j.event.evicted + j.telemetry.evicted;
                if evicted > 0 {
                    let _ = writeln!(
                        o,
                        "          evicted to stay within max_disk: {} alerts, {} events, {} telemetry",
                        j.alert.evicted, j.event.evicted, j.telemetry.evicted
                    );
                }
            }
            None => {
                let _ = writeln!(o, "JOURNAL   not configured");
            }
        }
        match &self.uplink {
            Some(u) => {
                let _ = writeln!(
                    o,
                    "UPLINK    {}; {} published, {} acknowledged, {} in flight, {} connects, {} errors",
                    if u.connected {
                        "connected"
                    } else {
                        "DISCONNECTED"
                    },
                    u.counts.published,
                    u.counts.acked,
                    u.counts.in_flight,
                    u.counts.connects,
                    u.counts.connection_errors
                );
            }
            None => {
                let _ = writeln!(o, "UPLINK    not configured");
            }
        }
        if let Some(url) = &self.ui {
            let _ = writeln!(o, "UI        {url}");
        }
        if !self.alarms.is_empty() {
            let list: Vec<String> = self
                .alarms
                .iter()
                .map(|a| {
                    let state = match (a.failed, a.on, a.latched) {
                        (true, _, _) => "FAILED",
                        (_, true, true) => "ON (latched; edge-agent alarms ack)",
                        (_, true, false) => "ON",
                        _ => "off",
                    };
                    format!("{} {state}", a.name)
                })
                .collect();
            let _ = writeln!(o, "ALARMS    {}", list.join(", "));
        }
        if !self.models.is_empty() {
            let _ = writeln!(o, "\nMODELS");
            o.push_str(&render_models(&self.models));
        }
        o
    }
}

/// The table `edge-agent models list` prints.
pub fn render_models(models: &[ModelInfo]) -> String {
    let mut o = String::new();
    if models.is_empty() {
        o.push_str("  no models are bound\n");
    }
    for m in models {
        let _ = writeln!(
            o,
            "  {} {}  sha256 {}  swaps {}  rejected {}",
            m.name,
            m.version,
            m.sha256.get(..12).unwrap_or(&m.sha256),
            m.swaps,
            m.rejections
        );
        let _ = writeln!(o, "    manifest {}", m.manifest);
        if let Some(r) = &m.last_rejection {
            let _ = writeln!(o, "    last rejected version: {r}");
        }
        for b in &m.bindings {
            let mut state = if b.quarantined {
                "QUARANTINED (built-in detectors only)".to_string()
            } else {
                b.level.clone().unwrap_or_else(|| "normal".into())
            };
            if !b.drifted.is_empty() {
                let _ = write!(state, "; drifting: {}", b.drifted.join(", "));
            }
            let _ = writeln!(o, "    {}/{}: {}", b.asset, b.binding, state);
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_what_an_engineer_looks_for_first() {
        let s = AgentStatus {
            agent: "gw-1".into(),
            version: "0.1.0".into(),
            uptime_s: 3700.0,
            config: "/etc/edge-agent/edge-agent.toml".into(),
            drivers: vec![DriverInfo {
                name: "press".into(),
                kind: "s7".into(),
                state: "backing_off".into(),
                last_error: Some("connection refused".into()),
                health: Some(41.0),
                timeouts: 12,
                ..DriverInfo::default()
            }],
            journal: Some(JournalInfo {
                alert: LaneInfo {
                    pending: 3,
                    evicted: 0,
                    oldest_unacked_age_s: Some(600.0),
                },
                ..JournalInfo::default()
            }),
            uplink: Some(UplinkInfo::default()),
            ui: Some("https://10.0.0.5:9480/".into()),
            writes: WriteInfo {
                writable: 2,
                successful: 5,
                refused: 1,
                failed: 0,
            },
            models: vec![ModelInfo {
                name: "bearing_rf".into(),
                version: "1.0.0".into(),
                sha256: "0123456789abcdef".into(),
                bindings: vec![BindingInfo {
                    asset: "pump1".into(),
                    binding: "wear".into(),
                    quarantined: true,
                    ..BindingInfo::default()
                }],
                ..ModelInfo::default()
            }],
            ..AgentStatus::default()
        };
        let text = s.render();
        for want in [
            "agent gw-1",
            "up 62 min",
            "backing_off",
            "last error: connection refused",
            "41",
            "alerts 3 pending, oldest 10 min ago",
            "UPLINK    DISCONNECTED",
            "bearing_rf 1.0.0  sha256 0123456789ab",
            "pump1/wear: QUARANTINED",
            "UI        https://10.0.0.5:9480/",
            "WRITES    2 writable tags; 5 written, 1 refused, 0 failed",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        let json = serde_json::to_string(&s).expect("serialise");
        let back: AgentStatus = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.drivers[0].health, Some(41.0));
    }
}
