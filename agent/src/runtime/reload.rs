//! Configuration reload (SIGHUP, `systemctl reload`) without a restart.
//!
//! The new file is parsed and validated in full first; an invalid one changes
//! nothing. What a running agent can take over live:
//!
//! * **drivers** whose `[[drivers]]` section changed (a PLC's address, a poll period,
//!   tags that keep their signal names): only those are stopped (with the usual
//!   grace) and started again with the new settings. Unchanged drivers, the ring,
//!   the pipeline, the journal and the uplink keep running; no sample of an
//!   unchanged driver is lost.
//! * **assets** (`[[assets]]`, `[models]`): the pipeline gets a new processor
//!   between two batches. Windows, detectors and model bindings that did not
//!   change keep their state and open alerts; changed ones start fresh, and an
//!   alert a changed or removed detector left open is closed with a `cleared`
//!   alert saying so (see `Processor::adopt`). No sample is lost: the ring holds
//!   them while the pipeline switches.
//! * **models**: new versions are validated and swapped in (see `models`).
//!
//! What needs a restart, and is reported as such (the old settings stay in force):
//! a different set of signals (drivers or tags added, removed or renamed), and any
//! other section (`[agent]`, `[ring]`, `[alerts]`, `[journal]`, `[uplink]`, ...).
//! The reload then applies nothing rather than half of the file, so the running
//! agent always matches one whole, valid configuration (the old one, or the old one
//! with changed driver sections).

use std::sync::Arc;

use super::drivers::{DriverSet, SignalKey, signal_keys};
use crate::alert::{IdGenerator, RateLimits};
use crate::config::{Config, Fingerprints};
use crate::pipeline::scoring::LiveModels;
use crate::pipeline::{AdoptReport, Processor, Reconfigure};

/// What a reload did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Drivers stopped and started with their new settings.
    pub restarted: Vec<String>,
    pub unchanged: usize,
    /// Set when the pipeline took a new asset configuration: what carried over.
    pub assets: Option<AdoptReport>,
}

/// Sections a running agent takes over (besides `[[drivers]]`).
const LIVE_SECTIONS: &[&str] = &["assets", "models"];

/// Why a reload applied nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    #[error(
        "the signals changed ({0}); this needs a restart (systemctl restart edge-agent). The running configuration stays in force"
    )]
    SignalsChanged(String),
    #[error(
        "[{}] changed; only [[drivers]], [[assets]], [models] and model files can be reloaded, the rest needs a restart (systemctl restart edge-agent). The running configuration stays in force",
        .0.join("], [")
    )]
    NeedsRestart(Vec<String>),
    #[error("the agent is shutting down")]
    ShuttingDown,
}

fn describe_signal_change(old: &[SignalKey], new: &[SignalKey]) -> String {
    let added: Vec<&str> = new
        .iter()
        .filter(|n| !old.iter().any(|o| o.name == n.name))
        .map(|n| &*n.name)
        .collect();
    let removed: Vec<&str> = old
        .iter()
        .filter(|o| !new.iter().any(|n| n.name == o.name))
        .map(|o| &*o.name)
        .collect();
    let list = |v: &[&str]| {
        let mut s = v.iter().take(5).copied().collect::<Vec<_>>().join(", ");
        if v.len() > 5 {
            s.push_str(&format!(" and {} more", v.len() - 5));
        }
        s
    };
    match (added.is_empty(), removed.is_empty()) {
        (false, false) => format!("added {}; removed {}", list(&added), list(&removed)),
        (false, true) => format!("added {}", list(&added)),
        (true, false) => format!("removed {}", list(&removed)),
        (true, true) => "units, order or producing drivers of signals differ".into(),
    }
}

/// What a reload needs to build and hand over a new pipeline processor.
#[derive(Clone)]
pub(crate) struct PipelineLink {
    pub tx: tokio::sync::mpsc::Sender<Reconfigure>,
    pub models: Arc<LiveModels>,
    pub agent_id: Arc<str>,
    pub limits: RateLimits,
}

/// Applies new configurations to a running agent. Cheap to clone.
#[derive(Clone)]
pub struct ConfigReloader {
    pub(crate) set: Arc<DriverSet>,
    pub(crate) pipeline: PipelineLink,
}

impl std::fmt::Debug for ConfigReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigReloader").finish_non_exhaustive()
    }
}

impl ConfigReloader {
    /// Applies `new` (already validated) or explains why it cannot be applied live.
    pub async fn apply(&self, new: Config) -> Result<ReloadReport, ReloadError> {
        let set = &self.set;
        let _one = set.busy.lock().await;
        if set.spawner.parent.is_cancelled() {
            return Err(ReloadError::ShuttingDown);
        }
        let new_signals = signal_keys(&new.registry);
        if new_signals != set.signals {
            return Err(ReloadError::SignalsChanged(describe_signal_change(
                &set.signals,
                &new_signals,
            )));
        }
        let old = set
            .fingerprints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let sections = old.changed_sections(&new.fingerprints);
        let fixed: Vec<String> = sections
            .iter()
            .filter(|s| !LIVE_SECTIONS.contains(&s.as_str()))
            .cloned()
            .collect();
        if !fixed.is_empty() {
            return Err(ReloadError::NeedsRestart(fixed));
        }
        let mut report = ReloadReport::default();
        // A driver's section also holds its link-health alerting (an asset of its
        // own), so a changed driver rebuilds the processor too. What did not change
        // carries over (see `Processor::adopt`).
        let drivers_changed = new
            .drivers
            .iter()
            .any(|d| old.drivers.get(&*d.name) != new.fingerprints.drivers.get(&*d.name));
        if !sections.is_empty() || drivers_changed {
            report.assets = Some(self.reload_assets(&new).await?);
        }
        self.restart_changed_drivers(&old, &new, &mut report).await;
        *set.fingerprints.lock().unwrap_or_else(|p| p.into_inner()) = new.fingerprints.clone();
        Ok(report)
    }

    /// Hands the pipeline a processor for `new`'s assets; what it carried over.
    async fn reload_assets(&self, new: &Config) -> Result<AdoptReport, ReloadError> {
        let link = &self.pipeline;
        let processor = Processor::new(
            link.agent_id.clone(),
            &new.registry,
            &new.assets,
            &new.models,
            link.limits.clone(),
            IdGenerator::new(),
        );
        let (done, adopted) = tokio::sync::oneshot::channel();
        link.tx
            .send(Reconfigure {
                processor: Box::new(processor),
                done,
            })
            .await
            .map_err(|_| ReloadError::ShuttingDown)?;
        let adopted = adopted.await.map_err(|_| ReloadError::ShuttingDown)?;
        link.models.set(new.models.clone());
        Ok(adopted)
    }

    /// Stops and starts again every driver whose section changed.
    async fn restart_changed_drivers(
        &self,
        old: &Fingerprints,
        new: &Config,
        report: &mut ReloadReport,
    ) {
        let set = &self.set;
        for d in &new.drivers {
            if old.drivers.get(&*d.name) == new.fingerprints.drivers.get(&*d.name) {
                report.unchanged += 1;
                continue;
            }
            // Stop the old instance (its supervisor gives it the grace period, then
            // aborts it), outside the lock.
            let (token, task) = {
                let mut running = set.lock();
                let Some(r) = running.iter_mut().find(|r| r.name == d.name) else {
                    continue;
                };
                (r.token.clone(), r.task.take())
            };
            token.cancel();
            if let Some(t) = task {
                let _ = t.await;
            }
            let mut running = set.lock();
            if let Some(r) = running.iter_mut().find(|r| r.name == d.name) {
                let next = set.spawner.spawn(
                    d.name.clone(),
                    d.factory.clone(),
                    r.status.clone(),
                    r.meter.clone(),
                );
                *r = next;
                tracing::info!(driver = %d.name, "driver restarted with its new settings");
                report.restarted.push(d.name.to_string());
            }
        }
    }
}
