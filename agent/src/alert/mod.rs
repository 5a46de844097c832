//! Alerts and the alert engine.
//!
//! The engine turns detector level changes into [`Alert`] messages:
//! * one active alert per (asset, detector); a change of level emits a `raised`
//!   message with the new severity (and the previous one), a return to normal emits
//!   `cleared`. All messages of one episode share `episode` (the id of the first raise).
//! * every message has its own unique, time-ordered [`AlertId`] (ULID: 48-bit
//!   milliseconds + 80 random bits, strictly increasing within a process), so upstream
//!   consumers can drop duplicates of at-least-once delivery by id.
//! * rate limiting: a (asset, detector) that raised `flap_max_raises` times within
//!   `flap_window` is flapping; further raises of it are suppressed until it calms
//!   down, and so is their clear. A global budget of `max_per_minute` raises is shared
//!   by everything below Critical; Critical is never suppressed. Every suppressed
//!   message is counted.
//!
//! Severity order: Info < Warning < PreFault < Critical (see `edge_models::detect`).

mod engine;
mod message;
pub mod trace;

pub use engine::{AlertEngine, EngineStats};
pub use message::{human_duration, num, rfc3339, system_alert};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use edge_driver_api::Timestamp;
use edge_models::{Curve, Feature, FeatureValues, Fit, Severity};
use serde::Serialize;

/// Version of the alert JSON schema (`schema/alert.v1.json` once published upstream).
pub const ALERT_SCHEMA_VERSION: u32 = 1;

/// A unique, time-ordered id (ULID, Crockford base32 when displayed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlertId(pub u128);

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

impl fmt::Display for AlertId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 26];
        for (i, b) in buf.iter_mut().enumerate() {
            let shift = 125 - 5 * i as u32;
            *b = CROCKFORD[((self.0 >> shift) & 0x1f) as usize];
        }
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for AlertId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Generates ULIDs; strictly increasing within the process.
#[derive(Debug)]
pub struct IdGenerator {
    last: u128,
    rng: u64,
}

impl IdGenerator {
    /// Seeded from the kernel's random source (falls back to time and pid).
    pub fn new() -> Self {
        let mut seed = [0u8; 8];
        let from_kernel = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
            .is_ok();
        let seed = if from_kernel {
            u64::from_le_bytes(seed)
        } else {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            t ^ u64::from(std::process::id()).rotate_left(32)
        };
        Self::with_seed(seed)
    }

    pub fn with_seed(seed: u64) -> Self {
        IdGenerator {
            last: 0,
            rng: seed | 1,
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A new id for wall time `wall_ns`.
    pub fn next(&mut self, wall_ns: i64) -> AlertId {
        let ms = (wall_ns.max(0) / 1_000_000) as u128 & ((1u128 << 48) - 1);
        let random = ((u128::from(self.next_random()) << 16)
            ^ u128::from(self.next_random() >> 48))
            & ((1u128 << 80) - 1);
        let mut id = (ms << 80) | random;
        if id <= self.last {
            id = self.last + 1;
        }
        self.last = id;
        AlertId(id)
    }
}

impl Default for IdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

/// Raised or cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Raised,
    Cleared,
}

/// Serialises a severity by its name (`"prefault"`).
pub(crate) fn ser_severity<S: serde::Serializer>(s: &Severity, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

fn ser_opt_severity<S: serde::Serializer>(s: &Option<Severity>, ser: S) -> Result<S::Ok, S::Error> {
    match s {
        Some(s) => ser.serialize_str(s.as_str()),
        None => ser.serialize_none(),
    }
}

/// `{"model", "a", "b", "c", "span_s"}`: `line` a + b·τ, `quadratic` a + b·τ + c·τ²,
/// `exponential` a + b·e^(c·τ), τ seconds after the alert, fitted on [−span_s, 0].
pub(crate) fn ser_fit<S: serde::Serializer>(f: &Option<Fit>, ser: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let Some(f) = f else {
        return ser.serialize_none();
    };
    let (a, b, c) = match f.curve {
        Curve::Line { level, slope } => (level, slope, 0.0),
        Curve::Quadratic { a, b, c } => (a, b, c),
        Curve::Growth { base, amp, k } => (base, amp, k),
    };
    let mut m = ser.serialize_map(Some(5))?;
    m.serialize_entry("model", f.curve.model())?;
    m.serialize_entry("a", &a)?;
    m.serialize_entry("b", &b)?;
    m.serialize_entry("c", &c)?;
    m.serialize_entry("span_s", &f.span_s)?;
    m.end()
}

/// When an alert happened.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertTime {
    /// RFC 3339 UTC wall time.
    pub wall: String,
    pub wall_ns: i64,
    /// Agent-monotonic nanoseconds (orderable even when the wall clock is wrong).
    pub mono_ns: u64,
    pub clock_synced: bool,
}

impl AlertTime {
    /// The `time` of a message at `ts`.
    pub fn at(ts: Timestamp) -> AlertTime {
        AlertTime {
            wall: rfc3339(ts.wall_ns),
            wall_ns: ts.wall_ns,
            mono_ns: ts.mono_ns,
            clock_synced: ts.synced,
        }
    }
}

/// One alert message.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    /// Schema version.
    pub v: u32,
    pub id: AlertId,
    /// Id of the raise that opened this episode.
    pub episode: AlertId,
    pub agent_id: Arc<str>,
    pub asset: Arc<str>,
    /// Detector instance name (unique within the asset).
    pub detector: Arc<str>,
    /// Detector kind: a built-in kind (`config::detector_kinds`), `model`, `model_health`
    /// or `system`.
    pub kind: &'static str,
    pub signals: Vec<Arc<str>>,
    pub feature: String,
    #[serde(serialize_with = "ser_severity")]
    pub severity: Severity,
    #[serde(serialize_with = "ser_opt_severity")]
    pub previous_severity: Option<Severity>,
    pub state: AlertState,
    /// The detector's score (feature value, z-score, rate, or ETA seconds for trends).
    pub score: f64,
    pub limit: f64,
    /// Predicted seconds until the limit is crossed (trend detectors).
    pub eta_s: Option<f64>,
    /// The forecast's interval: earliest and latest seconds (the latest `null` in
    /// JSON when unbounded).
    pub eta_range_s: Option<(f64, f64)>,
    /// The curve the ETA comes from (trend alerts): the evidence plot draws it.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_fit")]
    pub fit: Option<Fit>,
    pub message: String,
    /// The window features (or the model's inputs) at the time of the alert.
    pub features: BTreeMap<String, f64>,
    pub time: AlertTime,
    /// The model version that raised it (model alerts only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRef>,
}

impl Alert {
    /// One-line human rendering for the console.
    pub fn human_line(&self) -> String {
        let state = match self.state {
            AlertState::Raised => "RAISED ",
            AlertState::Cleared => "CLEARED",
        };
        format!(
            "{} {:<8} {} {}/{}: {} [id {}]",
            self.time.wall,
            self.severity.as_str().to_uppercase(),
            state,
            self.asset,
            self.detector,
            self.message,
            self.id
        )
    }
}

/// Rate limits.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimits {
    pub max_per_minute: u32,
    pub flap_window_s: f64,
    pub flap_max_raises: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            max_per_minute: 120,
            flap_window_s: 600.0,
            flap_max_raises: 5,
        }
    }
}

/// Static description of one detector instance, for building alerts.
#[derive(Clone, Debug)]
pub struct DetectorInfo {
    pub asset: Arc<str>,
    pub name: Arc<str>,
    pub kind: &'static str,
    pub signal: Arc<str>,
    pub feature: Feature,
    pub feature_name: String,
    /// Names of the signal's bands, for the feature snapshot.
    pub band_names: Vec<String>,
    /// Set for the detectors of a fault-prediction model (kinds `model` and
    /// `model_health`).
    pub model: Option<ModelAlertInfo>,
    /// The signal that predicts this one (residual detectors).
    pub predictor: Option<Arc<str>>,
}

/// What a model's alerts say about the model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelAlertInfo {
    pub model: ModelRef,
    /// Every signal the model reads.
    pub signals: Vec<Arc<str>>,
    /// What the scored output means, e.g. `fault_probability`.
    pub meaning: &'static str,
    /// Why a model is quarantined (kind `model_health`).
    pub note: String,
}

/// The model version behind an alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModelRef {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

/// The values an alert carries as its `features` snapshot.
#[derive(Clone, Copy, Debug)]
pub enum Snapshot<'a> {
    /// A window's features (built-in detectors).
    Window(&'a FeatureValues),
    /// A model's input row: names and values, in the manifest's order.
    Row(&'a [Arc<str>], &'a [f32]),
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_models::Evaluation;

    fn info() -> DetectorInfo {
        DetectorInfo {
            asset: "pump1".into(),
            name: "overtemp".into(),
            kind: "threshold",
            signal: "pump1.temperature".into(),
            feature: Feature::Mean,
            feature_name: "mean".into(),
            band_names: vec![],
            model: None,
            predictor: None,
        }
    }

    fn eval(level: Option<Severity>) -> Evaluation {
        Evaluation {
            level,
            score: 1.0,
            limit: 1.0,
            forecast: None,
        }
    }

    fn ts(secs: f64) -> Timestamp {
        Timestamp {
            wall_ns: 1_700_000_000_000_000_000 + (secs * 1e9) as i64,
            mono_ns: (secs * 1e9) as u64,
            synced: true,
        }
    }

    fn engine(limits: RateLimits) -> AlertEngine {
        AlertEngine::new("gw".into(), limits, vec![info()], IdGenerator::with_seed(1))
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(1_700_000_000_123_000_000),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn ids_are_unique_and_strictly_increasing_even_within_one_millisecond() {
        let mut g = IdGenerator::with_seed(7);
        let ids: Vec<AlertId> = (0..1000).map(|_| g.next(5_000_000)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(ids[0].to_string().len(), 26);
        assert!(ids[0].to_string().starts_with("0000000005"));
    }

    #[test]
    fn one_episode_raise_escalate_clear_shares_an_episode_id() {
        let mut e = engine(RateLimits::default());
        let f = FeatureValues::default();
        let a = e
            .observe(0, &eval(Some(Severity::Warning)), ts(1.0), &f)
            .expect("raised");
        assert!(
            e.observe(0, &eval(Some(Severity::Warning)), ts(2.0), &f)
                .is_none()
        );
        let b = e
            .observe(0, &eval(Some(Severity::Critical)), ts(3.0), &f)
            .expect("escalated");
        let c = e.observe(0, &eval(None), ts(4.0), &f).expect("cleared");
        assert_eq!(
            (a.state, b.state, c.state),
            (AlertState::Raised, AlertState::Raised, AlertState::Cleared)
        );
        assert_eq!(b.previous_severity, Some(Severity::Warning));
        assert_eq!(c.severity, Severity::Critical);
        assert_eq!(a.episode, a.id);
        assert_eq!(b.episode, a.id);
        assert_eq!(c.episode, a.id);
        assert!(a.id < b.id && b.id < c.id);
        let json = serde_json::to_value(&b).expect("serialises");
        assert_eq!(json["severity"], "critical");
        assert_eq!(json["previous_severity"], "warning");
        assert_eq!(json["v"], 1);
    }

    #[test]
    fn flapping_detector_is_suppressed_but_critical_breaks_through() {
        let mut e = engine(RateLimits {
            max_per_minute: 1000,
            flap_window_s: 100.0,
            flap_max_raises: 2,
        });
        let f = FeatureValues::default();
        let mut emitted = 0;
        for i in 0..10 {
            let t = i as f64 * 2.0;
            emitted += usize::from(
                e.observe(0, &eval(Some(Severity::Warning)), ts(t), &f)
                    .is_some(),
            );
            emitted += usize::from(e.observe(0, &eval(None), ts(t + 1.0), &f).is_some());
        }
        // Two raise/clear pairs, then suppressed.
        assert_eq!(emitted, 4);
        assert_eq!(e.stats().suppressed, 16);
        let crit = e.observe(0, &eval(Some(Severity::Critical)), ts(30.0), &f);
        assert!(crit.is_some());
    }

    #[test]
    fn global_budget_limits_non_critical_raises() {
        let infos = (0..10)
            .map(|i| DetectorInfo {
                name: format!("d{i}").into(),
                ..info()
            })
            .collect();
        let limits = RateLimits {
            max_per_minute: 3,
            flap_window_s: 1.0,
            flap_max_raises: 100,
        };
        let mut e = AlertEngine::new("gw".into(), limits, infos, IdGenerator::with_seed(1));
        let f = FeatureValues::default();
        let n = (0..10)
            .filter(|&d| {
                e.observe(d, &eval(Some(Severity::Warning)), ts(1.0), &f)
                    .is_some()
            })
            .count();
        assert_eq!(n, 3);
        assert!(
            e.observe(9, &eval(Some(Severity::Critical)), ts(1.0), &f)
                .is_some()
        );
    }

    #[test]
    fn numbers_for_humans() {
        assert_eq!(num(75.13081), "75.1308");
        assert_eq!(num(85.0), "85");
        assert_eq!(num(1e-9), "1e-9");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(-2.5), "-2.5");
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(12.4), "12s");
        assert_eq!(human_duration(250.0), "4m 10s");
        assert_eq!(human_duration(5000.0), "1h 23m");
        assert_eq!(human_duration(90000.0), "1d 1h");
    }
}
