//! Grading a model's score with its manifest's thresholds, confirmed over rows.

use edge_models::onnx::manifest::{Direction, Meaning, ValidatedModel};
use edge_models::{Evaluation, Forecast, Severity};

use super::store::alert_meaning;

/// Grades a model's score with the manifest's thresholds.
#[derive(Clone, Debug, PartialEq)]
pub struct Grader {
    above: bool,
    /// (severity, threshold), by increasing severity.
    levels: Vec<(Severity, f64)>,
    pub(crate) confirm: u32,
    level: Option<Severity>,
    streak: u32,
    /// The least severe level of the current streak towards a change.
    streak_level: Option<Severity>,
}

impl Grader {
    pub fn new(m: &ValidatedModel, confirm: u32) -> Grader {
        let a = &m.manifest.alert;
        let levels = [
            (Severity::Warning, a.warning),
            (Severity::PreFault, a.prefault),
            (Severity::Critical, a.critical),
        ]
        .into_iter()
        .filter_map(|(s, t)| t.map(|t| (s, t)))
        .collect();
        Grader {
            above: a.direction == Direction::Above,
            levels,
            confirm: confirm.max(1),
            level: None,
            streak: 0,
            streak_level: None,
        }
    }

    /// Follows a new version's thresholds, keeping the current level.
    pub fn retune(&mut self, m: &ValidatedModel) {
        let level = self.level;
        *self = Grader::new(m, self.confirm);
        self.level = level;
    }

    fn raw(&self, v: f64) -> Option<Severity> {
        let mut r = None;
        for &(s, t) in &self.levels {
            if (self.above && v >= t) || (!self.above && v <= t) {
                r = Some(s);
            }
        }
        r
    }

    /// The level after one more score.
    pub fn grade(&mut self, v: f64) -> Option<Severity> {
        let raw = self.raw(v);
        if raw == self.level {
            self.streak = 0;
            return self.level;
        }
        let rising = raw > self.level;
        let same_direction = self.streak > 0 && (self.streak_level > self.level) == rising;
        if same_direction {
            self.streak += 1;
            // The level the whole streak agrees on.
            self.streak_level = if rising {
                self.streak_level.min(raw)
            } else {
                self.streak_level.max(raw)
            };
        } else {
            self.streak = 1;
            self.streak_level = raw;
        }
        if self.streak >= self.confirm {
            self.level = self.streak_level;
            self.streak = 0;
        }
        self.level
    }

    /// The threshold of `level` (or of the lowest level when normal).
    pub fn limit(&self, level: Option<Severity>) -> f64 {
        level
            .and_then(|l| self.levels.iter().find(|(s, _)| *s == l))
            .or(self.levels.first())
            .map(|(_, t)| *t)
            .unwrap_or(f64::NAN)
    }
}

/// The evaluation a graded score becomes.
pub(crate) fn evaluation(
    grader: &Grader,
    level: Option<Severity>,
    v: f64,
    m: &ValidatedModel,
) -> Evaluation {
    Evaluation {
        level,
        score: v,
        limit: grader.limit(level),
        forecast: (alert_meaning(m) == Meaning::RemainingTimeS).then_some(Forecast {
            eta_s: v.max(0.0),
            range_s: None,
            fit: None,
        }),
    }
}
