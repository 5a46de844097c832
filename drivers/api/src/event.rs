//! Events: values that are not samples. A text signal (an S7 STRING, a Modbus
//! string, a recipe or batch name) is reported when it changes, as an event on the
//! journal's event lane, not as a windowed sample.

use crate::sample::SignalId;
use crate::time::Timestamp;

/// One event from a driver.
#[derive(Clone, Debug, PartialEq)]
pub struct DriverEvent {
    pub signal: SignalId,
    pub ts: Timestamp,
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// A text signal took a new value (also sent for the first reading).
    Text(String),
}

/// Where drivers put events (the agent forwards them to the journal's event lane).
/// Never waits: a full queue drops the event, counts it and returns `false`.
pub trait EventSink: Send + Sync + std::fmt::Debug + 'static {
    fn try_send(&self, driver: &str, ev: DriverEvent) -> bool;
}

/// Keeps the last value per text signal and tells whether a new one differs, so a
/// driver reports changes only. Allocates only when a value changes.
#[derive(Debug, Default, Clone)]
pub struct TextChanges {
    last: Vec<Option<String>>,
}

impl TextChanges {
    /// `n` text slots (e.g. one per string tag).
    pub fn new(n: usize) -> TextChanges {
        TextChanges {
            last: vec![None; n],
        }
    }

    /// Records `value` in `slot`; returns it if it differs from the previous one.
    pub fn update(&mut self, slot: usize, value: &str) -> Option<&str> {
        let cur = self.last.get_mut(slot)?;
        if cur.as_deref() == Some(value) {
            return None;
        }
        match cur {
            Some(s) => {
                s.clear();
                s.push_str(value);
            }
            None => *cur = Some(value.to_string()),
        }
        cur.as_deref()
    }

    /// The last value of `slot`.
    pub fn get(&self, slot: usize) -> Option<&str> {
        self.last.get(slot)?.as_deref()
    }

    /// Forgets `slot` (after a failed read: the next good one is reported again).
    pub fn forget(&mut self, slot: usize) {
        if let Some(s) = self.last.get_mut(slot) {
            *s = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_are_reported() {
        let mut t = TextChanges::new(2);
        assert_eq!(t.update(0, "A"), Some("A"));
        assert_eq!(t.update(0, "A"), None);
        assert_eq!(t.update(1, "A"), Some("A"));
        assert_eq!(t.update(0, "B"), Some("B"));
        t.forget(0);
        assert_eq!(t.update(0, "B"), Some("B"));
        assert_eq!(t.update(5, "x"), None);
    }
}
