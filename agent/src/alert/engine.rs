//! The alert engine: turns detector evaluations into alert messages, one active
//! alert per (asset, detector), with rate limits and flap suppression (see the
//! module documentation of [`super`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use edge_driver_api::Timestamp;
use edge_models::{Evaluation, FeatureValues, Severity};

use super::message::message;
use super::trace::{DetectorTrace, TraceLink, TracePoint};
use super::*;

#[derive(Debug, Default)]
struct Slot {
    level: Option<Severity>,
    episode: Option<AlertId>,
    suppressed: bool,
    raises: VecDeque<f64>,
}

/// Counters of the engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub raised: u64,
    pub cleared: u64,
    pub suppressed: u64,
    pub by_severity: [u64; 4],
}

/// Turns evaluations into alerts.
#[derive(Debug)]
pub struct AlertEngine {
    agent_id: Arc<str>,
    limits: RateLimits,
    slots: Vec<Slot>,
    infos: Vec<DetectorInfo>,
    ids: IdGenerator,
    tokens: f64,
    last_refill: Option<f64>,
    stats: EngineStats,
    /// Where every evaluation is recorded, when something reads them (the UI).
    trace: TraceLink,
}

impl AlertEngine {
    pub fn new(
        agent_id: Arc<str>,
        limits: RateLimits,
        infos: Vec<DetectorInfo>,
        ids: IdGenerator,
    ) -> Self {
        let slots = infos
            .iter()
            .map(|_| Slot {
                raises: VecDeque::with_capacity(limits.flap_max_raises as usize + 1),
                ..Slot::default()
            })
            .collect();
        AlertEngine {
            agent_id,
            tokens: f64::from(limits.max_per_minute),
            limits,
            slots,
            infos,
            ids,
            last_refill: None,
            stats: EngineStats::default(),
            trace: TraceLink::default(),
        }
    }

    /// Records every evaluation from now on into `trace` (one series per detector).
    pub fn set_trace(&mut self, trace: Arc<DetectorTrace>) {
        self.trace.slots = self
            .infos
            .iter()
            .map(|i| trace.slot(&i.asset, &i.name, &i.signal, &i.feature_name, i.kind))
            .collect();
        self.trace.trace = Some(trace);
    }

    fn record(&self, det: usize, eval: &Evaluation, ts: Timestamp, features: &Snapshot<'_>) {
        let (Some(trace), Some(Some(slot))) = (&self.trace.trace, self.trace.slots.get(det)) else {
            return;
        };
        let value = match features {
            Snapshot::Window(f) => f.get(self.infos[det].feature),
            Snapshot::Row(..) => eval.score,
        };
        trace.record(
            *slot,
            TracePoint {
                mono_ns: ts.mono_ns,
                value: value as f32,
                score: eval.score as f32,
                limit: eval.limit as f32,
            },
        );
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    pub fn info(&self, detector: usize) -> &DetectorInfo {
        &self.infos[detector]
    }

    /// The model description of a model detector (to follow a new version or note
    /// why it is quarantined).
    pub fn model_info_mut(&mut self, detector: usize) -> Option<&mut ModelAlertInfo> {
        self.infos.get_mut(detector)?.model.as_mut()
    }

    /// The level a detector is at now.
    pub fn level(&self, detector: usize) -> Option<Severity> {
        self.slots.get(detector).and_then(|s| s.level)
    }

    /// The identity of a detector across configurations: (asset, name, kind).
    pub fn key(&self, detector: usize) -> (&str, &str, &str) {
        let i = &self.infos[detector];
        (&i.asset, &i.name, i.kind)
    }

    /// Number of detector slots (built-in detectors, then two per model binding).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Takes over what must not restart with a new configuration (see
    /// `Processor::adopt`): the alert id sequence (ids stay strictly increasing),
    /// the global rate budget and the counters.
    pub fn continue_from(&mut self, old: &mut AlertEngine) {
        std::mem::swap(&mut self.ids, &mut old.ids);
        self.tokens = old.tokens.min(f64::from(self.limits.max_per_minute));
        self.last_refill = old.last_refill;
        self.stats = old.stats;
    }

    /// Moves detector `from`'s alert state (level, open episode, flap history) of
    /// `old` into this engine's detector `to`: its detector continues unchanged.
    pub fn adopt_slot(&mut self, to: usize, old: &mut AlertEngine, from: usize) {
        if let (Some(dst), Some(src)) = (self.slots.get_mut(to), old.slots.get_mut(from)) {
            *dst = std::mem::take(src);
        }
    }

    /// Closes detector `det`'s open episode because a configuration reload removed
    /// or changed the detector: a `cleared` alert saying so, so that nothing
    /// upstream (or a latched stack light) waits for a clear that can no longer
    /// come. Ids come from `ids` (the engine that continues the sequence). `None`
    /// when the detector had nothing open (or its raise was suppressed).
    pub fn retire(
        &mut self,
        det: usize,
        ids: &mut AlertEngine,
        ts: Timestamp,
        why: &str,
    ) -> Option<Alert> {
        let slot = self.slots.get_mut(det)?;
        let prev = slot.level.take()?;
        let episode = slot.episode.take();
        if std::mem::take(&mut slot.suppressed) {
            return None;
        }
        let id = ids.ids.next(ts.wall_ns);
        ids.stats.cleared += 1;
        let eval = Evaluation {
            level: None,
            score: f64::NAN,
            limit: f64::NAN,
            forecast: None,
        };
        let mut alert = self.build(
            det,
            id,
            episode.unwrap_or(id),
            &eval,
            prev,
            None,
            AlertState::Cleared,
            ts,
            Snapshot::Row(&[], &[]),
        );
        let info = &self.infos[det];
        alert.message = format!("{}/{} {why}", info.asset, info.name);
        Some(alert)
    }

    fn refill(&mut self, t: f64) {
        let cap = f64::from(self.limits.max_per_minute);
        if let Some(last) = self.last_refill
            && t > last
        {
            self.tokens = (self.tokens + (t - last) * cap / 60.0).min(cap);
        }
        if self.last_refill.is_none_or(|l| t > l) {
            self.last_refill = Some(t);
        }
    }

    /// Feeds one evaluation of detector `det`; returns the alert to publish, if any.
    pub fn observe(
        &mut self,
        det: usize,
        eval: &Evaluation,
        ts: Timestamp,
        features: &FeatureValues,
    ) -> Option<Alert> {
        self.observe_with(det, eval, ts, Snapshot::Window(features))
    }

    /// [`AlertEngine::observe`] with any snapshot.
    pub fn observe_with(
        &mut self,
        det: usize,
        eval: &Evaluation,
        ts: Timestamp,
        features: Snapshot<'_>,
    ) -> Option<Alert> {
        self.record(det, eval, ts, &features);
        let t = ts.mono_secs();
        self.refill(t);
        let prev = self.slots[det].level;
        let new = eval.level;
        if prev == new {
            return None;
        }
        let flap_window = self.limits.flap_window_s;
        let flap_max = self.limits.flap_max_raises;
        let slot = &mut self.slots[det];
        slot.level = new;
        match (prev, new) {
            (None, Some(sev)) => {
                while slot.raises.front().is_some_and(|&r| t - r > flap_window) {
                    slot.raises.pop_front();
                }
                let flapping = flap_max > 0 && slot.raises.len() >= flap_max as usize;
                if slot.raises.len() >= flap_max as usize {
                    slot.raises.pop_front();
                }
                slot.raises.push_back(t);
                let over_budget = sev < Severity::Critical && self.tokens < 1.0;
                if (flapping && sev < Severity::Critical) || over_budget {
                    slot.suppressed = true;
                    self.stats.suppressed += 1;
                    return None;
                }
                if sev < Severity::Critical {
                    self.tokens -= 1.0;
                }
                slot.suppressed = false;
                let id = self.ids.next(ts.wall_ns);
                slot.episode = Some(id);
                Some(self.build(
                    det,
                    id,
                    id,
                    eval,
                    sev,
                    None,
                    AlertState::Raised,
                    ts,
                    features,
                ))
            }
            (Some(_), None) => {
                let episode = slot.episode.take();
                if std::mem::take(&mut slot.suppressed) {
                    self.stats.suppressed += 1;
                    return None;
                }
                let id = self.ids.next(ts.wall_ns);
                let prev_sev = prev?;
                Some(self.build(
                    det,
                    id,
                    episode.unwrap_or(id),
                    eval,
                    prev_sev,
                    None,
                    AlertState::Cleared,
                    ts,
                    features,
                ))
            }
            (Some(p), Some(sev)) => {
                if slot.suppressed {
                    if sev == Severity::Critical {
                        // Critical breaks through suppression: open a real episode.
                        slot.suppressed = false;
                        let id = self.ids.next(ts.wall_ns);
                        slot.episode = Some(id);
                        return Some(self.build(
                            det,
                            id,
                            id,
                            eval,
                            sev,
                            Some(p),
                            AlertState::Raised,
                            ts,
                            features,
                        ));
                    }
                    self.stats.suppressed += 1;
                    return None;
                }
                let id = self.ids.next(ts.wall_ns);
                let episode = slot.episode.unwrap_or(id);
                Some(self.build(
                    det,
                    id,
                    episode,
                    eval,
                    sev,
                    Some(p),
                    AlertState::Raised,
                    ts,
                    features,
                ))
            }
            (None, None) => None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        &mut self,
        det: usize,
        id: AlertId,
        episode: AlertId,
        eval: &Evaluation,
        severity: Severity,
        previous: Option<Severity>,
        state: AlertState,
        ts: Timestamp,
        features: Snapshot<'_>,
    ) -> Alert {
        match state {
            AlertState::Raised => {
                self.stats.raised += 1;
                self.stats.by_severity[severity as usize] += 1;
            }
            AlertState::Cleared => self.stats.cleared += 1,
        }
        let info = &self.infos[det];
        let mut snapshot = BTreeMap::new();
        match features {
            Snapshot::Window(features) => {
                for f in edge_models::features::SCALAR_FEATURES {
                    snapshot.insert(f.name().to_string(), features.get(f));
                }
                for (i, name) in info.band_names.iter().enumerate() {
                    snapshot.insert(
                        format!("band:{name}"),
                        features.bands().get(i).copied().unwrap_or(f64::NAN),
                    );
                }
            }
            Snapshot::Row(names, values) => {
                for (n, v) in names.iter().zip(values) {
                    snapshot.insert(n.to_string(), f64::from(*v));
                }
            }
        }
        Alert {
            v: ALERT_SCHEMA_VERSION,
            id,
            episode,
            agent_id: self.agent_id.clone(),
            asset: info.asset.clone(),
            detector: info.name.clone(),
            kind: info.kind,
            signals: match &info.model {
                Some(m) => m.signals.clone(),
                None => vec![info.signal.clone()],
            },
            feature: info.feature_name.clone(),
            severity,
            previous_severity: previous,
            state,
            score: eval.score,
            limit: eval.limit,
            eta_s: eval.eta_s(),
            eta_range_s: eval.forecast.and_then(|f| f.range_s),
            fit: eval.forecast.and_then(|f| f.fit),
            message: message(info, eval, severity, state),
            features: snapshot,
            time: AlertTime::at(ts),
            model: info.model.as_ref().map(|m| m.model.clone()),
        }
    }
}
