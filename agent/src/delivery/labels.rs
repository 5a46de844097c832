//! The feedback loop: an operator says whether an alert was right (`edge-agent
//! alerts label ID true|false|unsure [--note TEXT]`). A label is one JSON document
//! (schema `agent/schema/label.v1.schema.json`): the verdict, the note, when, and
//! the whole alert it judges, with the window features or the model's input row
//! it was raised on, so it is a training example on its own. It is
//!
//! * appended to the local dataset (`[labels] dataset`, JSON lines, synced), which
//!   `models/train` can retrain from;
//! * journalled on the alert lane and published to `{prefix}/{agent_id}/labels`
//!   when `[journal]`/`[uplink]` are configured (routed by [`LABELS_KEY`]).
//!
//! Only alerts the agent still remembers can be labelled (the last `[labels]
//! remember` messages; their features are not kept anywhere else).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use edge_driver_api::Clock;
use serde::Serialize;
use tokio::sync::mpsc;

use super::recent::RecentAlerts;
use super::sink::SinkMsg;
use crate::alert::{Alert, AlertTime, IdGenerator};

/// The journal's routing key of a label record: `#` is in no asset name, so the
/// uplink can tell labels from alerts on the same lane.
pub const LABELS_KEY: &str = "#labels";

/// Longest note kept (characters).
pub const MAX_NOTE: usize = 200;

/// `[labels]`.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelsConfig {
    /// The local dataset (JSON lines), if any.
    pub dataset: Option<PathBuf>,
    /// Alert messages remembered to be labelled.
    pub remember: usize,
}

/// What the operator says of an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// A real problem (a true alarm).
    True,
    /// Nothing was wrong (a false alarm).
    False,
    Unsure,
}

impl Verdict {
    pub fn parse(s: &str) -> Option<Verdict> {
        match s {
            "true" => Some(Verdict::True),
            "false" => Some(Verdict::False),
            "unsure" => Some(Verdict::Unsure),
            _ => None,
        }
    }
}

/// A label as stored and published.
#[derive(Clone, Debug, Serialize)]
pub struct Label {
    pub v: u32,
    /// This label's own id (ULID).
    pub id: String,
    pub agent_id: Arc<str>,
    pub verdict: Verdict,
    pub note: Option<String>,
    /// When it was given.
    pub time: AlertTime,
    /// The alert judged, as it was raised (its features included).
    pub alert: Alert,
}

/// Labels alerts the agent remembers.
#[derive(Debug)]
pub struct Labeller {
    agent_id: Arc<str>,
    recent: Arc<RecentAlerts>,
    dataset: Option<PathBuf>,
    /// Serialises dataset appends.
    file: Mutex<()>,
    ids: Mutex<IdGenerator>,
    clock: Clock,
    /// The sink thread (journal → uplink); weak, so the labeller does not keep the
    /// sink thread alive at shutdown.
    tx: mpsc::WeakSender<SinkMsg>,
}

impl Labeller {
    pub fn new(
        agent_id: Arc<str>,
        config: &LabelsConfig,
        recent: Arc<RecentAlerts>,
        clock: Clock,
        tx: mpsc::Sender<SinkMsg>,
    ) -> Labeller {
        Labeller {
            agent_id,
            recent,
            dataset: config.dataset.clone(),
            file: Mutex::new(()),
            ids: Mutex::new(IdGenerator::new()),
            clock,
            tx: tx.downgrade(),
        }
    }

    /// Labels alert `id` (an alert's or its episode's id): appends the label to the
    /// dataset, then queues it for the journal and the uplink. The error says why
    /// nothing was recorded.
    pub fn label(&self, id: &str, verdict: Verdict, note: &str) -> Result<Label, String> {
        let alert = self.recent.find(id).ok_or_else(|| {
            format!(
                "no alert `{}` among the last {} this agent remembers; `edge-agent status` and the web UI list recent alerts",
                id.escape_debug(),
                self.recent.capacity()
            )
        })?;
        let now = self.clock.now();
        let label_id = self
            .ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next(now.wall_ns);
        let note = note.trim();
        let label = Label {
            v: 1,
            id: label_id.to_string(),
            agent_id: self.agent_id.clone(),
            verdict,
            note: (!note.is_empty()).then(|| note.chars().take(MAX_NOTE).collect()),
            time: AlertTime::at(now),
            alert,
        };
        let body = serde_json::to_vec(&label).map_err(|e| e.to_string())?;
        if let Some(path) = &self.dataset {
            self.append(path, &body)
                .map_err(|e| format!("cannot append to the dataset {}: {e}", path.display()))?;
        }
        let msg = SinkMsg::Label {
            id: label_id.0,
            wall_ns: now.wall_ns,
            body,
        };
        let queued = self.tx.upgrade().is_some_and(|tx| tx.try_send(msg).is_ok());
        if !queued {
            tracing::warn!(
                label = %label.id,
                "the alert queue is full or closed: the label is in the dataset only"
            );
        }
        tracing::info!(
            label = %label.id, alert = %label.alert.id, verdict = ?verdict,
            "alert labelled"
        );
        Ok(label)
    }

    fn append(&self, path: &std::path::Path, body: &[u8]) -> std::io::Result<()> {
        let _one = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let mut line = Vec::with_capacity(body.len() + 1);
        line.extend_from_slice(body);
        line.push(b'\n');
        f.write_all(&line)?;
        f.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertId, AlertState, system_alert};
    use edge_driver_api::Timestamp;
    use edge_models::detect::Severity;

    fn raised(id: u128) -> Alert {
        let mut a = system_alert(
            &Arc::from("gw"),
            AlertId(id),
            AlertId(id),
            "hot",
            Severity::Warning,
            AlertState::Raised,
            "hot".into(),
            Timestamp {
                wall_ns: 1_795_000_000_000_000_000,
                mono_ns: 5,
                synced: true,
            },
        );
        a.features.insert("mean".into(), 81.5);
        a
    }

    #[tokio::test]
    async fn a_label_goes_to_the_dataset_and_the_sink_thread_with_its_alert() {
        let dir = std::env::temp_dir().join(format!("edge-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let dataset = dir.join("labels.jsonl");
        let _ = std::fs::remove_file(&dataset);
        let recent = Arc::new(RecentAlerts::with_capacity(10));
        let mut sink = recent.sink();
        let a = raised(7 << 80);
        sink.deliver(&a).expect("remembered");
        let (tx, mut rx) = mpsc::channel(4);
        let cfg = LabelsConfig {
            dataset: Some(dataset.clone()),
            remember: 10,
        };
        // The sink thread's side holds the channel open (the labeller's is weak).
        let l = Labeller::new(Arc::from("gw"), &cfg, recent, Clock::system(), tx.clone());
        let id = a.id.to_string();
        let label = l
            .label(&id, Verdict::False, &"x".repeat(300))
            .expect("labelled");
        assert_eq!(label.note.as_deref().map(str::len), Some(MAX_NOTE));
        let line = std::fs::read_to_string(&dataset).expect("dataset");
        let doc: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
        assert_eq!(doc["verdict"], "false");
        assert_eq!(doc["alert"]["id"], id.as_str());
        assert_eq!(doc["alert"]["features"]["mean"], 81.5, "the training row");
        match rx.try_recv() {
            Ok(SinkMsg::Label { body, .. }) => {
                assert_eq!(
                    serde_json::from_slice::<serde_json::Value>(&body).ok(),
                    Some(doc)
                );
            }
            other => panic!("expected a label for the journal, got {other:?}"),
        }
        drop(tx);
        l.label(&id, Verdict::True, "")
            .expect("closed sink thread: dataset only");
        assert_eq!(
            std::fs::read_to_string(&dataset)
                .expect("dataset")
                .lines()
                .count(),
            2
        );
        let err = l.label("01NOPE", Verdict::True, "").expect_err("unknown");
        assert!(err.contains("last 10"), "{err}");
        assert_eq!(Verdict::parse("unsure"), Some(Verdict::Unsure));
        assert_eq!(Verdict::parse("yes"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
