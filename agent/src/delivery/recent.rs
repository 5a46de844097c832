//! The alerts a local reader can look at (the web UI): the active ones (the last
//! message of every open episode) and the most recent ones, bounded. Another
//! [`AlertSink`], so it sees exactly what was delivered, system alerts included.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use super::sink::AlertSink;
use crate::alert::{Alert, AlertId, AlertState};

/// Recent alerts kept (raises, escalations and clears).
pub const RECENT: usize = 100;
/// Open episodes kept (one per detector that is raised; more means a bug or a
/// storm, and the oldest is forgotten).
const ACTIVE: usize = 256;

#[derive(Debug, Default)]
struct Inner {
    recent: VecDeque<Alert>,
    active: Vec<Alert>,
}

/// Shared between the sink thread (writer) and the UI and the labeller (readers).
#[derive(Debug)]
pub struct RecentAlerts {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl Default for RecentAlerts {
    fn default() -> Self {
        RecentAlerts::with_capacity(RECENT)
    }
}

impl RecentAlerts {
    /// Keeps the last `capacity` messages (at least 1).
    pub fn with_capacity(capacity: usize) -> RecentAlerts {
        RecentAlerts {
            capacity: capacity.max(1),
            inner: Mutex::default(),
        }
    }

    /// Messages kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, a: &Alert) {
        let mut g = self.lock();
        if g.recent.len() >= self.capacity {
            g.recent.pop_front();
        }
        g.recent.push_back(a.clone());
        g.active.retain(|o| o.episode != a.episode);
        if a.state == AlertState::Raised {
            if g.active.len() == ACTIVE {
                g.active.remove(0);
            }
            g.active.push(a.clone());
        }
    }

    /// Open episodes (their last message), most severe first.
    pub fn active(&self) -> Vec<Alert> {
        let mut a = self.lock().active.clone();
        a.sort_by(|x, y| y.severity.cmp(&x.severity).then(y.id.cmp(&x.id)));
        a
    }

    /// Recent messages, newest first.
    pub fn recent(&self) -> Vec<Alert> {
        self.lock().recent.iter().rev().cloned().collect()
    }

    /// The alert with this id (as displayed), if still kept; for an episode's id
    /// (the id of its first raise), that raise.
    pub fn find(&self, id: &str) -> Option<Alert> {
        let g = self.lock();
        let hit = |a: &&Alert| a.id.to_string() == id;
        g.recent
            .iter()
            .find(hit)
            .or_else(|| g.active.iter().find(hit))
            .or_else(|| g.recent.iter().find(|a| a.episode.to_string() == id))
            .cloned()
    }

    /// The messages of the episode `episode` still kept, oldest first.
    pub fn episode(&self, episode: AlertId) -> Vec<Alert> {
        self.lock()
            .recent
            .iter()
            .filter(|a| a.episode == episode)
            .cloned()
            .collect()
    }

    /// The sink that feeds it.
    pub fn sink(self: &Arc<Self>) -> Box<dyn AlertSink> {
        Box::new(RecentSink(self.clone()))
    }
}

#[derive(Debug)]
struct RecentSink(Arc<RecentAlerts>);

impl AlertSink for RecentSink {
    fn name(&self) -> &str {
        "recent"
    }
    fn deliver(&mut self, alert: &Alert) -> std::io::Result<()> {
        self.0.push(alert);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::system_alert;
    use edge_driver_api::Timestamp;
    use edge_models::detect::Severity;

    fn alert(id: u128, episode: u128, det: &str, sev: Severity, state: AlertState) -> Alert {
        system_alert(
            &Arc::from("gw"),
            AlertId(id),
            AlertId(episode),
            det,
            sev,
            state,
            String::new(),
            Timestamp::default(),
        )
    }

    #[test]
    fn an_episode_is_active_until_it_clears_and_recent_alerts_are_bounded() {
        let r = Arc::new(RecentAlerts::default());
        let mut sink = r.sink();
        let send = |sink: &mut Box<dyn AlertSink>, a: Alert| sink.deliver(&a).expect("deliver");
        send(
            &mut sink,
            alert(1, 1, "hot", Severity::Warning, AlertState::Raised),
        );
        send(
            &mut sink,
            alert(2, 2, "disk", Severity::Critical, AlertState::Raised),
        );
        send(
            &mut sink,
            alert(3, 1, "hot", Severity::PreFault, AlertState::Raised),
        );
        let active: Vec<u128> = r.active().iter().map(|a| a.id.0).collect();
        assert_eq!(
            active,
            vec![2, 3],
            "most severe first, the episode's last message"
        );
        send(
            &mut sink,
            alert(4, 2, "disk", Severity::Critical, AlertState::Cleared),
        );
        assert_eq!(
            r.active().iter().map(|a| a.id.0).collect::<Vec<_>>(),
            vec![3]
        );
        assert_eq!(r.episode(AlertId(1)).len(), 2);
        assert_eq!(r.find(&AlertId(2).to_string()).map(|a| a.id.0), Some(2));
        for i in 10..(10 + RECENT as u128) {
            send(
                &mut sink,
                alert(i, i, "x", Severity::Info, AlertState::Cleared),
            );
        }
        assert_eq!(r.recent().len(), RECENT);
        assert_eq!(r.recent()[0].id.0, 9 + RECENT as u128, "newest first");
        assert!(r.find(&AlertId(2).to_string()).is_none(), "forgotten");
        assert_eq!(r.active().len(), 1, "the open episode stays active");
    }
}
