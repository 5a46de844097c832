//! The running drivers: each one supervised, fed into the ring through its meter,
//! and restartable on its own by a reload.

use std::sync::{Arc, Mutex};

use edge_driver_api::{Clock, SignalRegistry, WriteInbox};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Fingerprints;
use crate::inbound::WriteRoutes;
use crate::ingest::meter::{DriverMeter, MeteredSink};
use crate::ingest::ring::SampleRing;
use crate::ingest::supervisor::{BackoffConfig, DriverStatus, Supervised, supervise};

/// What every driver's supervisor gets besides its own factory.
pub(crate) struct Spawner {
    pub ring: Arc<SampleRing>,
    pub clock: Clock,
    pub backoff: BackoffConfig,
    pub grace: std::time::Duration,
    pub events: Arc<dyn edge_driver_api::EventSink>,
    /// Parent of every driver's token (cancelled at shutdown).
    pub parent: CancellationToken,
    /// Where writes find the driver that owns a writable tag.
    pub writes: Arc<WriteRoutes>,
}

pub(crate) struct RunningDriver {
    pub name: Arc<str>,
    pub token: CancellationToken,
    pub task: Option<JoinHandle<()>>,
    pub status: Arc<DriverStatus>,
    pub meter: Arc<DriverMeter>,
}

impl Spawner {
    pub fn spawn(
        &self,
        name: Arc<str>,
        factory: Arc<dyn edge_driver_api::DriverFactory>,
        status: Arc<DriverStatus>,
        meter: Arc<DriverMeter>,
    ) -> RunningDriver {
        let token = self.parent.child_token();
        let writable = factory.writable();
        let writes = if writable.is_empty() {
            self.writes.remove_driver(&name);
            None
        } else {
            let (inbox, tx) = WriteInbox::new();
            self.writes.set_driver(&name, tx, writable);
            Some(inbox)
        };
        let sv = Supervised {
            name: name.clone(),
            factory,
            sink: Arc::new(MeteredSink::new(
                self.ring.clone(),
                meter.clone(),
                self.clock.clone(),
            )),
            clock: self.clock.clone(),
            backoff: self.backoff,
            grace: self.grace,
            status: status.clone(),
            events: Some(self.events.clone()),
            writes,
        };
        let task = tokio::spawn(supervise(sv, token.clone()));
        RunningDriver {
            name,
            token,
            task: Some(task),
            status,
            meter,
        }
    }
}

/// The running drivers and what the running configuration said.
pub(crate) struct DriverSet {
    pub spawner: Spawner,
    pub running: Mutex<Vec<RunningDriver>>,
    pub fingerprints: Mutex<Fingerprints>,
    pub(crate) signals: Vec<SignalKey>,
    /// One reload at a time.
    pub(crate) busy: tokio::sync::Mutex<()>,
}

/// A signal as the pipeline knows it: a reload must keep every one of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SignalKey {
    pub(crate) name: Arc<str>,
    unit: Option<Arc<str>>,
    driver: Arc<str>,
    text: bool,
}

pub(crate) fn signal_keys(reg: &SignalRegistry) -> Vec<SignalKey> {
    (0..reg.len())
        .map(|i| {
            let m = reg.meta(edge_driver_api::SignalId(i as u32));
            SignalKey {
                name: m.name.clone(),
                unit: m.unit.clone(),
                driver: m.driver.clone(),
                text: m.text,
            }
        })
        .collect()
}

impl DriverSet {
    pub fn new(spawner: Spawner, fingerprints: Fingerprints, registry: &SignalRegistry) -> Self {
        DriverSet {
            spawner,
            running: Mutex::new(Vec::new()),
            fingerprints: Mutex::new(fingerprints),
            signals: signal_keys(registry),
            busy: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RunningDriver>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a supervised driver and keeps it in the set.
    pub fn start(
        &self,
        name: Arc<str>,
        factory: Arc<dyn edge_driver_api::DriverFactory>,
        status: Arc<DriverStatus>,
        meter: Arc<DriverMeter>,
    ) {
        let running = self.spawner.spawn(name, factory, status, meter);
        self.lock().push(running);
    }

    /// Every driver's status and meter, in start order (a reload keeps both).
    pub fn meters(&self) -> Vec<(Arc<DriverStatus>, Arc<DriverMeter>)> {
        self.lock()
            .iter()
            .map(|r| (r.status.clone(), r.meter.clone()))
            .collect()
    }

    /// Every supervisor task (for shutdown: the caller awaits them).
    pub fn take_tasks(&self) -> Vec<JoinHandle<()>> {
        self.lock()
            .iter_mut()
            .filter_map(|d| d.task.take())
            .collect()
    }
}
