//! The latest value of every signal, its quality and why it is bad: what
//! `edge-agent tags` shows.
//!
//! Sized once at start-up, one slot per registered signal (the registry does not
//! grow while the agent runs). The pipeline task records each batch it drains
//! under one lock, with nothing allocated per sample; text signals are recorded
//! from the driver event path (a copy only when a text changes). Readers take a
//! [`LatestValues::snapshot`].
//!
//! A tag's quality, as shown:
//! - `bad` with the reason of its last sample (`timeout`, `exception 2 (illegal
//!   data address)`, `4.04 Not Found`, `unreadable payload`...), the last good
//!   value still shown with its age;
//! - `stale` when its value is good but old: the driver is not running, or no
//!   sample came for 5 times the tag's usual interval (and at least 5 s);
//! - `no data` before its first sample.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use edge_driver_api::{
    BadReason, DriverEvent, EventKind, EventSink, Quality, Sample, SignalId, SignalRegistry,
    Timestamp, Value,
};
use serde::{Deserialize, Serialize};

/// Names a device's exception code for people (`exception 2 (illegal data
/// address)`, `4.04 Not Found`); each driver kind brings its own.
pub type DescribeFn = fn(u16) -> String;

/// The reasons a sample is not good, as counted and as `/metrics` labels them.
pub const REASONS: [&str; 9] = [
    "communication",
    "timeout",
    "exception",
    "out_of_range",
    "not_finite",
    "sensor_fault",
    "unreadable",
    "other",
    "stale",
];

fn reason_index(q: Quality) -> Option<usize> {
    Some(match q {
        Quality::Good => return None,
        Quality::Bad(BadReason::Communication) => 0,
        Quality::Bad(BadReason::Timeout) => 1,
        Quality::Bad(BadReason::DeviceException(_)) => 2,
        Quality::Bad(BadReason::OutOfRange) => 3,
        Quality::Bad(BadReason::NotFinite) => 4,
        Quality::Bad(BadReason::SensorFault) => 5,
        Quality::Bad(BadReason::Decode) => 6,
        Quality::Bad(BadReason::Other) => 7,
        Quality::Stale => 8,
    })
}

/// Samples over which a tag's usual interval is measured (then measured again,
/// so a changed poll rate is followed).
const EPOCH: u32 = 8;

/// A tag that has not changed for this many of its usual intervals is stale.
const STALE_INTERVALS: f64 = 5.0;
/// ... and never sooner than this.
const STALE_MIN_NS: f64 = 5e9;

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// The last sample of any quality.
    last: Option<Timestamp>,
    quality: Quality,
    /// The last good value and when it was read.
    good: Option<(Value, Timestamp)>,
    /// Mean interval between samples over the last completed epoch of
    /// [`EPOCH`] samples, ns (0: not known yet); integer work per sample only.
    interval_ns: u64,
    epoch_start_ns: u64,
    epoch_n: u32,
    /// Bad samples by [`REASONS`] index.
    bad: [u32; REASONS.len()],
}

impl Slot {
    #[inline]
    fn record(&mut self, s: &Sample) {
        let t = s.ts.mono_ns;
        if self.epoch_n == 0 {
            self.epoch_start_ns = t;
        } else if self.epoch_n == EPOCH {
            self.interval_ns = t.saturating_sub(self.epoch_start_ns) / u64::from(EPOCH);
            self.epoch_start_ns = t;
            self.epoch_n = 0;
        }
        self.epoch_n += 1;
        self.last = Some(s.ts);
        self.quality = s.quality;
        match reason_index(s.quality) {
            None => self.good = Some((s.value, s.ts)),
            Some(i) => self.bad[i] = self.bad[i].saturating_add(1),
        }
    }
}

/// What the agent knows about a signal that does not change.
#[derive(Clone, Debug)]
struct TagMeta {
    name: Arc<str>,
    unit: Option<Arc<str>>,
    driver: Arc<str>,
    address: Option<Arc<str>>,
    text: bool,
    exceptions: Option<DescribeFn>,
}

/// A tag's value: a number, a flag or a text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TagValue {
    Integer(i64),
    Number(f64),
    Bool(bool),
    Text(String),
}

/// One tag as `edge-agent tags` shows it (the control socket's `tags` answer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TagStatus {
    pub name: String,
    /// The last good value (also while the tag is bad or stale).
    pub value: Option<TagValue>,
    pub unit: Option<String>,
    /// `good`, `bad`, `stale` or `no data`.
    pub quality: String,
    /// Why it is not good.
    pub reason: Option<String>,
    /// Seconds since the last sample of any quality.
    pub age_s: Option<f64>,
    /// Seconds since the value shown was read.
    pub value_age_s: Option<f64>,
    pub driver: String,
    pub address: Option<String>,
    /// Bad samples since start.
    pub bad_samples: u64,
}

/// How many tags are in each quality (`edge-agent status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagCounts {
    pub total: usize,
    pub good: usize,
    pub bad: usize,
    pub stale: usize,
    pub no_data: usize,
}

/// The latest value of every signal.
#[derive(Debug)]
pub struct LatestValues {
    meta: Vec<TagMeta>,
    slots: Mutex<Vec<Slot>>,
    texts: Mutex<Vec<Option<(String, Timestamp)>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LatestValues {
    /// One slot per signal of `registry`; `kinds` maps a driver name to how its
    /// kind names exception codes.
    pub fn new(registry: &SignalRegistry, kinds: &HashMap<&str, DescribeFn>) -> LatestValues {
        let meta: Vec<TagMeta> = (0..registry.len())
            .map(|i| {
                let m = registry.meta(SignalId(i as u32));
                TagMeta {
                    name: m.name.clone(),
                    unit: m.unit.clone(),
                    driver: m.driver.clone(),
                    address: m.address.clone(),
                    text: m.text,
                    exceptions: kinds.get(&*m.driver).copied(),
                }
            })
            .collect();
        let texts = meta.iter().map(|_| None).collect();
        LatestValues {
            slots: Mutex::new(vec![Slot::default(); meta.len()]),
            texts: Mutex::new(texts),
            meta,
        }
    }

    /// Signals in all.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// The index of the signal called `name` (exactly).
    pub fn find(&self, name: &str) -> Option<usize> {
        self.meta.iter().position(|m| &*m.name == name)
    }

    /// The name of signal `i`.
    pub fn name(&self, i: usize) -> Option<Arc<str>> {
        self.meta.get(i).map(|m| m.name.clone())
    }

    /// The unit of signal `i`.
    pub fn unit(&self, i: usize) -> Option<Arc<str>> {
        self.meta.get(i).and_then(|m| m.unit.clone())
    }

    /// The last good value of signal `i` (the old value a write replaces).
    pub fn last_good(&self, i: usize) -> Option<f64> {
        lock(&self.slots)
            .get(i)
            .and_then(|s| s.good)
            .map(|(v, _)| v.as_f64())
    }

    /// Records a batch of samples (the pipeline task, once per batch).
    pub fn record(&self, batch: &[Sample]) {
        let mut slots = lock(&self.slots);
        for s in batch {
            if let Some(slot) = slots.get_mut(s.signal.index()) {
                slot.record(s);
            }
        }
    }

    /// Records a driver event (a text signal's new value).
    pub fn record_event(&self, ev: &DriverEvent) {
        let EventKind::Text(text) = &ev.kind;
        let mut texts = lock(&self.texts);
        if let Some(t) = texts.get_mut(ev.signal.index()) {
            match t {
                Some((old, ts)) => {
                    old.clear();
                    old.push_str(text);
                    *ts = ev.ts;
                }
                None => *t = Some((text.clone(), ev.ts)),
            }
        }
    }

    /// Every tag whose name matches `filter` (see [`name_matches`]), in
    /// registration order; `driver_state` gives each driver's state (`running`...)
    /// and `now_mono_ns` is the agent clock's monotonic time.
    pub fn snapshot(
        &self,
        filter: &str,
        now_mono_ns: u64,
        driver_state: &dyn Fn(&str) -> Option<&'static str>,
    ) -> Vec<TagStatus> {
        let slots = lock(&self.slots).clone();
        let texts = lock(&self.texts);
        self.meta
            .iter()
            .zip(slots.iter().zip(texts.iter()))
            .filter(|(m, _)| name_matches(filter, &m.name))
            .map(|(m, (slot, text))| {
                let state = driver_state(&m.driver);
                tag_status(m, slot, text.as_ref(), now_mono_ns, state)
            })
            .collect()
    }

    /// How many tags are good, bad, stale or without data (as [`Self::snapshot`]
    /// judges them), without building the tags.
    pub fn counts(
        &self,
        now_mono_ns: u64,
        driver_state: &dyn Fn(&str) -> Option<&'static str>,
    ) -> TagCounts {
        let slots = lock(&self.slots).clone();
        let texts = lock(&self.texts);
        let mut c = TagCounts {
            total: self.meta.len(),
            ..TagCounts::default()
        };
        for (m, (slot, text)) in self.meta.iter().zip(slots.iter().zip(texts.iter())) {
            let (last, _) = times(m, slot, text.as_ref());
            match judge(m, slot, last, now_mono_ns, driver_state(&m.driver)).0 {
                "good" => c.good += 1,
                "bad" => c.bad += 1,
                "stale" => c.stale += 1,
                _ => c.no_data += 1,
            }
        }
        c
    }

    /// Bad samples per (driver, reason), for `/metrics`: bounded by drivers × 9.
    pub fn bad_by_driver(&self) -> Vec<(Arc<str>, &'static str, u64)> {
        let slots = lock(&self.slots);
        let mut out: Vec<(Arc<str>, &'static str, u64)> = Vec::new();
        for (m, slot) in self.meta.iter().zip(slots.iter()) {
            for (i, n) in slot.bad.iter().enumerate() {
                match out
                    .iter_mut()
                    .find(|(d, r, _)| *d == m.driver && *r == REASONS[i])
                {
                    Some(e) => e.2 += u64::from(*n),
                    None => out.push((m.driver.clone(), REASONS[i], u64::from(*n))),
                }
            }
        }
        out
    }

    /// Bad samples per (tag, reason) with at least one, for `/metrics` when
    /// `[metrics] per_tag` asks for them.
    pub fn bad_by_tag(&self) -> Vec<(Arc<str>, &'static str, u64)> {
        let slots = lock(&self.slots);
        let mut out = Vec::new();
        for (m, slot) in self.meta.iter().zip(slots.iter()) {
            for (i, n) in slot.bad.iter().enumerate().filter(|(_, n)| **n > 0) {
                out.push((m.name.clone(), REASONS[i], u64::from(*n)));
            }
        }
        out
    }
}

fn secs(now_mono_ns: u64, ts: Timestamp) -> f64 {
    now_mono_ns.saturating_sub(ts.mono_ns) as f64 / 1e9
}

fn tag_value(v: Value) -> TagValue {
    match v {
        Value::F64(x) => TagValue::Number(x),
        Value::I64(x) => TagValue::Integer(x),
        Value::Bool(b) => TagValue::Bool(b),
    }
}

/// When a tag was last heard of (a sample of any quality, or its text), and
/// when the value shown was read.
fn times(
    m: &TagMeta,
    slot: &Slot,
    text: Option<&(String, Timestamp)>,
) -> (Option<Timestamp>, Option<Timestamp>) {
    let value_ts = match (text, slot.good) {
        (Some((_, ts)), _) if m.text => Some(*ts),
        (_, good) => good.map(|(_, ts)| ts),
    };
    let last = match (slot.last, value_ts) {
        (Some(a), Some(b)) => Some(if a.mono_ns >= b.mono_ns { a } else { b }),
        (a, b) => a.or(b),
    };
    (last, value_ts)
}

fn tag_status(
    m: &TagMeta,
    slot: &Slot,
    text: Option<&(String, Timestamp)>,
    now: u64,
    state: Option<&str>,
) -> TagStatus {
    let value = match (text, slot.good) {
        (Some((t, _)), _) if m.text => Some(TagValue::Text(t.clone())),
        (_, good) => good.map(|(v, _)| tag_value(v)),
    };
    let (last, value_ts) = times(m, slot, text);
    let (quality, reason) = judge(m, slot, last, now, state);
    TagStatus {
        name: m.name.to_string(),
        value,
        unit: m.unit.as_deref().map(str::to_string),
        quality: quality.into(),
        reason,
        age_s: last.map(|t| secs(now, t)),
        value_age_s: value_ts.map(|t| secs(now, t)),
        driver: m.driver.to_string(),
        address: m.address.as_deref().map(str::to_string),
        bad_samples: slot.bad.iter().map(|n| u64::from(*n)).sum(),
    }
}

/// The quality shown, and why it is not good.
fn judge(
    m: &TagMeta,
    slot: &Slot,
    last: Option<Timestamp>,
    now: u64,
    state: Option<&str>,
) -> (&'static str, Option<String>) {
    let down = state.filter(|s| *s != "running");
    let Some(last) = last else {
        let why = down.map_or("not read yet".to_string(), |s| format!("driver {s}"));
        return ("no data", Some(why));
    };
    if let Quality::Bad(r) = slot.quality
        && slot.last.is_some_and(|l| l.mono_ns >= last.mono_ns)
    {
        return ("bad", Some(describe(r, m.exceptions)));
    }
    if slot.quality == Quality::Stale {
        return ("stale", Some("the device marked the value stale".into()));
    }
    if let Some(s) = down {
        return (
            "stale",
            Some(format!("driver {s}: the value is the last one read")),
        );
    }
    let age = now.saturating_sub(last.mono_ns) as f64;
    let usual = slot.interval_ns as f64;
    if usual > 0.0 && age > (STALE_INTERVALS * usual).max(STALE_MIN_NS) {
        return (
            "stale",
            Some(format!(
                "no new value for {:.0} s (usually every {:.1} s)",
                age / 1e9,
                usual / 1e9
            )),
        );
    }
    ("good", None)
}

/// A bad reason in words; exception codes named by the driver kind.
pub fn describe(r: BadReason, exceptions: Option<DescribeFn>) -> String {
    match r {
        BadReason::Communication => "communication failed".into(),
        BadReason::Timeout => "timeout".into(),
        BadReason::DeviceException(c) => match exceptions {
            Some(f) => f(c),
            None => format!("device exception {c}"),
        },
        BadReason::OutOfRange => "out of the sensor's range".into(),
        BadReason::NotFinite => "not a finite number".into(),
        BadReason::SensorFault => "sensor fault".into(),
        BadReason::Decode => "unreadable payload".into(),
        BadReason::Other => "bad (see the log)".into(),
    }
}

/// Whether `name` matches `filter`: empty matches all; with `*` or `?` a glob
/// over the whole name; otherwise a substring. Case-insensitive.
pub fn name_matches(filter: &str, name: &str) -> bool {
    if filter.is_empty() {
        return true;
    }
    let f: Vec<char> = filter.to_lowercase().chars().collect();
    let n: Vec<char> = name.to_lowercase().chars().collect();
    if !f.iter().any(|c| *c == '*' || *c == '?') {
        let f: String = f.into_iter().collect();
        return name.to_lowercase().contains(&f);
    }
    glob(&f, &n)
}

fn glob(f: &[char], n: &[char]) -> bool {
    // Iterative wildcard match with backtracking to the last `*`.
    let (mut fi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match f.get(fi) {
            Some('*') => {
                star = Some((fi, ni));
                fi += 1;
            }
            Some(c) if *c == '?' || *c == n[ni] => {
                fi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sf, sn)) => {
                    fi = sf + 1;
                    ni = sn + 1;
                    star = Some((sf, sn + 1));
                }
                None => return false,
            },
        }
    }
    f[fi..].iter().all(|c| *c == '*')
}

/// The drivers' event sink, recording text values on the way to the journal.
#[derive(Debug)]
pub struct TextTap {
    pub latest: Arc<LatestValues>,
    pub inner: Arc<dyn EventSink>,
}

impl EventSink for TextTap {
    fn try_send(&self, driver: &str, ev: DriverEvent) -> bool {
        self.latest.record_event(&ev);
        self.inner.try_send(driver, ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_driver_api::SignalDecl;

    fn registry() -> SignalRegistry {
        let mut reg = SignalRegistry::new();
        for (name, text) in [
            ("plc.temp", false),
            ("plc.speed", false),
            ("plc.recipe", true),
        ] {
            let decl = SignalDecl {
                name: name.into(),
                unit: Some("degC".into()),
                span: Default::default(),
                text,
                address: Some(format!("holding {}", name.len())),
            };
            reg.intern(&decl, "plc").expect("register");
        }
        reg
    }

    fn at(ms: u64) -> Timestamp {
        Timestamp {
            wall_ns: ms as i64 * 1_000_000,
            mono_ns: ms * 1_000_000,
            synced: true,
        }
    }

    fn latest() -> LatestValues {
        let modbus: DescribeFn = |c| format!("exception {c} (named)");
        LatestValues::new(&registry(), &HashMap::from([("plc", modbus)]))
    }

    fn running(_: &str) -> Option<&'static str> {
        Some("running")
    }

    fn one(
        l: &LatestValues,
        name: &str,
        now_ms: u64,
        state: &dyn Fn(&str) -> Option<&'static str>,
    ) -> TagStatus {
        let mut v = l.snapshot(name, now_ms * 1_000_000, state);
        assert_eq!(v.len(), 1, "{v:?}");
        v.remove(0)
    }

    #[test]
    fn a_good_value_is_shown_with_its_age_unit_driver_and_address() {
        let l = latest();
        l.record(&[Sample::new_f64(at(1000), SignalId(0), 21.5)]);
        let t = one(&l, "plc.temp", 1500, &running);
        assert_eq!(t.value, Some(TagValue::Number(21.5)));
        assert_eq!((t.quality.as_str(), t.reason), ("good", None));
        assert_eq!(t.age_s, Some(0.5));
        assert_eq!(t.unit.as_deref(), Some("degC"));
        assert_eq!(t.address.as_deref(), Some("holding 8"));
        assert_eq!(t.driver, "plc");
    }

    #[test]
    fn a_bad_sample_shows_its_reason_and_keeps_the_last_good_value() {
        let l = latest();
        l.record(&[Sample::new_f64(at(1000), SignalId(0), 21.5)]);
        l.record(&[Sample::bad(
            at(2000),
            SignalId(0),
            BadReason::DeviceException(2),
        )]);
        let t = one(&l, "plc.temp", 2000, &running);
        assert_eq!(t.quality, "bad");
        assert_eq!(t.reason.as_deref(), Some("exception 2 (named)"));
        assert_eq!(t.value, Some(TagValue::Number(21.5)));
        assert_eq!((t.age_s, t.value_age_s), (Some(0.0), Some(1.0)));
        assert_eq!(t.bad_samples, 1);
        l.record(&[Sample::bad(at(3000), SignalId(0), BadReason::Timeout)]);
        assert_eq!(
            one(&l, "plc.temp", 3000, &running).reason.as_deref(),
            Some("timeout")
        );
        let counts = l.counts(3_000_000_000, &running);
        assert_eq!((counts.total, counts.bad, counts.no_data), (3, 1, 2));
        // Good again: the reason goes, the count stays.
        l.record(&[Sample::new_f64(at(4000), SignalId(0), 22.0)]);
        let t = one(&l, "plc.temp", 4000, &running);
        assert_eq!((t.quality.as_str(), t.bad_samples), ("good", 2));
    }

    #[test]
    fn a_value_is_stale_when_its_driver_is_down_or_it_stopped_changing() {
        let l = latest();
        for i in 0..10 {
            l.record(&[Sample::new_f64(at(1000 * i), SignalId(1), i as f64)]);
        }
        // Every second; 5 s without a sample is not yet stale, 5.5 s is.
        assert_eq!(one(&l, "plc.speed", 14_000, &running).quality, "good");
        let t = one(&l, "plc.speed", 14_500, &running);
        assert_eq!(t.quality, "stale");
        assert_eq!(
            t.reason.as_deref(),
            Some("no new value for 6 s (usually every 1.0 s)")
        );
        let backing_off = |_: &str| Some("backing_off");
        let t = one(&l, "plc.speed", 9_100, &backing_off);
        assert_eq!(t.quality, "stale");
        assert!(
            t.reason
                .as_deref()
                .is_some_and(|r| r.starts_with("driver backing_off")),
            "{t:?}"
        );
        assert_eq!(
            one(&l, "plc.temp", 9_100, &backing_off).reason.as_deref(),
            Some("driver backing_off")
        );
        assert_eq!(one(&l, "plc.temp", 9_100, &running).quality, "no data");
    }

    #[test]
    fn text_signals_show_their_text() {
        let l = latest();
        l.record_event(&DriverEvent {
            signal: SignalId(2),
            ts: at(500),
            kind: EventKind::Text("<script>alert(1)</script>".into()),
        });
        let t = one(&l, "recipe", 1000, &running);
        assert_eq!(
            t.value,
            Some(TagValue::Text("<script>alert(1)</script>".into()))
        );
        assert_eq!(t.quality, "good");
    }

    #[test]
    fn names_match_by_substring_or_glob_ignoring_case() {
        for (f, n, want) in [
            ("", "a.b", true),
            ("TEMP", "plc.temp", true),
            ("plc.*", "plc.temp", true),
            ("*.temp", "plc.temp", true),
            ("*.tem", "plc.temp", false),
            ("p?c.*p", "plc.temp", true),
            ("*a*b*c", "xaxxbyyc", true),
            ("*a*b*c", "xaxxbyyd", false),
            ("speed", "plc.temp", false),
        ] {
            assert_eq!(name_matches(f, n), want, "{f} ~ {n}");
        }
    }

    #[test]
    fn bad_samples_are_counted_by_driver_and_reason_and_by_tag() {
        let l = latest();
        l.record(&[
            Sample::bad(at(1), SignalId(0), BadReason::Timeout),
            Sample::bad(at(1), SignalId(1), BadReason::Timeout),
            Sample::bad(at(2), SignalId(1), BadReason::Decode),
        ]);
        let by_driver = l.bad_by_driver();
        assert_eq!(by_driver.len(), REASONS.len());
        let count = |r: &str| by_driver.iter().find(|(_, x, _)| *x == r).map(|e| e.2);
        assert_eq!(
            (count("timeout"), count("unreadable"), count("other")),
            (Some(2), Some(1), Some(0))
        );
        let by_tag = l.bad_by_tag();
        assert_eq!(by_tag.len(), 3);
        assert!(
            by_tag
                .iter()
                .any(|(n, r, c)| &**n == "plc.speed" && *r == "unreadable" && *c == 1)
        );
    }
}
