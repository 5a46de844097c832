//! Starting the operations side: the control socket, the metrics endpoint, the web
//! UI, systemd's readiness and watchdog, and the periodic stats log line. None of
//! them can stop the agent: an endpoint that cannot be opened is logged and left
//! out.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::RunOptions;
use crate::alert::trace::DetectorTrace;
use crate::config::Config;
use crate::delivery::recent::RecentAlerts;
use crate::ingest::history::SignalHistory;
use crate::ops::control::ControlSocket;
use crate::ops::http::{Guard, Site};
use crate::ops::status::StatusSource;
use crate::pipeline::PipelineCounters;
use crate::pipeline::feature_history::FeatureHistory;

/// What the web UI reads that the pipeline and the sinks feed: every signal's
/// history, every detector's evaluations, every window's features and the recent
/// alerts. Sized once from
/// `[ui]`; `None` without it (always, in a build without the `ui` feature, where
/// `[ui]` is a config error).
#[derive(Debug)]
pub(crate) struct UiParts {
    pub history: Arc<SignalHistory>,
    pub trace: Arc<DetectorTrace>,
    pub features: Arc<FeatureHistory>,
    /// The runtime's recent alerts (shared with the labeller).
    #[cfg_attr(
        not(feature = "ui"),
        expect(dead_code, reason = "only the web UI reads it")
    )]
    pub alerts: Arc<RecentAlerts>,
}

pub(crate) fn ui_parts(config: &Config, recent: Option<&Arc<RecentAlerts>>) -> Option<UiParts> {
    let u = config.ui.as_ref()?;
    Some(UiParts {
        history: Arc::new(SignalHistory::new(u.history, config.registry.len())),
        trace: Arc::new(DetectorTrace::new(u.history)),
        features: Arc::new(FeatureHistory::new(u.history)),
        alerts: recent.cloned().unwrap_or_default(),
    })
}

/// The alerts remembered for the UI, for labelling and for the Sparkplug alert
/// metrics (`None` without any): the last 100, or `[labels] remember` when more.
pub(crate) fn recent_alerts(config: &Config) -> Option<Arc<RecentAlerts>> {
    let ui = (config.ui.is_some() || config.sparkplug.is_some())
        .then_some(crate::delivery::recent::RECENT);
    let labels = config.labels.as_ref().map(|l| l.remember);
    let n = ui.into_iter().chain(labels).max()?;
    Some(Arc::new(RecentAlerts::with_capacity(n)))
}

/// Where the HTTP endpoints listen (the addresses actually bound: port 0 asks
/// for any free port).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    pub metrics: Option<std::net::SocketAddr>,
    pub ui: Option<std::net::SocketAddr>,
}

/// Opens the control socket, the metrics endpoint and the UI, and tells systemd
/// the agent is ready.
pub(crate) fn start(
    config: &Config,
    opts: &RunOptions,
    source: &StatusSource,
    ui: Option<&UiParts>,
    counters: &Arc<PipelineCounters>,
    drivers: usize,
    shutdown: &CancellationToken,
) -> Endpoints {
    open_control_socket(config, opts, source, shutdown);
    let endpoints = Endpoints {
        metrics: open_metrics(config, source, shutdown),
        ui: open_ui(config, source, ui, shutdown),
    };
    if let Some(n) = &opts.systemd {
        if let Some(period) = opts.watchdog {
            tokio::spawn(crate::ops::sdnotify::feed_watchdog(
                n.clone(),
                period,
                counters.clone(),
                shutdown.clone(),
            ));
        }
        n.send(&format!(
            "READY=1\nSTATUS=running: {} drivers, {} signals, {} assets",
            drivers,
            config.registry.len(),
            config.assets.len()
        ));
    }
    endpoints
}

fn open_control_socket(
    config: &Config,
    opts: &RunOptions,
    source: &StatusSource,
    shutdown: &CancellationToken,
) {
    let path = match &config.agent.control_socket {
        ControlSocket::At(p) => p.clone(),
        ControlSocket::Default if opts.default_control_socket => {
            crate::ops::control::default_path()
        }
        _ => return,
    };
    match crate::ops::control::bind(&path) {
        Ok(l) => {
            tracing::info!(socket = %path.display(), "control socket open (edge-agent status)");
            tokio::spawn(crate::ops::control::serve(
                l,
                path,
                source.clone(),
                shutdown.clone(),
            ));
        }
        Err(e) => tracing::warn!(
            socket = %path.display(), error = %e,
            "cannot open the control socket; `edge-agent status` will not reach this agent (set [agent] control_socket)"
        ),
    }
}

fn open_metrics(
    config: &Config,
    source: &StatusSource,
    shutdown: &CancellationToken,
) -> Option<std::net::SocketAddr> {
    let m = config.metrics.as_ref()?;
    match crate::ops::http::bind(m.listen) {
        Ok(l) => {
            let addr = l.local_addr().map_or(m.listen, |a| a);
            tracing::info!(listen = %addr, "Prometheus metrics at /metrics");
            let site = Site {
                source: source.clone(),
                per_tag: m.per_tag,
                #[cfg(feature = "ui")]
                ui: None,
            };
            tokio::spawn(crate::ops::http::serve(
                l,
                Arc::new(site),
                Guard::default(),
                shutdown.clone(),
            ));
            Some(addr)
        }
        Err(e) => {
            tracing::error!(
                listen = %m.listen, error = %e,
                "cannot open the metrics endpoint; the agent runs without it"
            );
            None
        }
    }
}

#[cfg(feature = "ui")]
fn open_ui(
    config: &Config,
    source: &StatusSource,
    ui: Option<&UiParts>,
    shutdown: &CancellationToken,
) -> Option<std::net::SocketAddr> {
    let (Some(u), Some(parts)) = (&config.ui, ui) else {
        return None;
    };
    let state = Arc::new(crate::ops::http::ui::UiState::new(
        parts.history.clone(),
        parts.trace.clone(),
        parts.features.clone(),
        parts.alerts.clone(),
        shutdown.clone(),
    ));
    match crate::ops::http::bind(u.listen) {
        Ok(l) => {
            let addr = l.local_addr().map_or(u.listen, |a| a);
            let scheme = if u.guard.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let url = format!("{scheme}://{addr}/");
            tracing::info!(
                %url, history_bytes = state.history.bytes(),
                authenticated = u.guard.users.is_some(), "web UI open"
            );
            let _ = source.ui_url.set(url);
            state.spawn_health(source.clone());
            let site = Site {
                source: source.clone(),
                per_tag: config.metrics.as_ref().is_some_and(|m| m.per_tag),
                ui: Some(state.clone()),
            };
            tokio::spawn(crate::ops::http::serve(
                l,
                Arc::new(site),
                u.guard.clone(),
                shutdown.clone(),
            ));
            Some(addr)
        }
        Err(e) => {
            tracing::error!(
                listen = %u.listen, error = %e,
                "cannot open the web UI; the agent runs without it"
            );
            None
        }
    }
}

#[cfg(not(feature = "ui"))]
fn open_ui(
    _: &Config,
    _: &StatusSource,
    _: Option<&UiParts>,
    _: &CancellationToken,
) -> Option<std::net::SocketAddr> {
    None
}

/// Logs a `stats` line every `every`, read from the same status as `edge-agent
/// status` and the metrics endpoint; notes changes of the wall clock's
/// synchronisation.
pub(crate) fn spawn_stats(
    source: StatusSource,
    every: std::time::Duration,
    token: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        let mut was_synced = source.clock.is_synced();
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tick.tick() => {}
            }
            let synced = source.clock.refresh_sync();
            if synced != was_synced {
                tracing::info!(synced, "wall clock synchronisation changed");
                was_synced = synced;
            }
            let s = source.snapshot();
            let (p, r) = (&s.pipeline.counts, &s.ring);
            let down: Vec<&str> = s
                .drivers
                .iter()
                .filter(|d| d.state != "running")
                .map(|d| d.name.as_str())
                .collect();
            tracing::info!(
                samples = p.samples, windows = p.windows,
                alerts = s.alerts.raised.iter().sum::<u64>(), cleared = s.alerts.cleared,
                unusable = p.unusable, ring_len = r.len, ring_high_water = r.high_water,
                ring_dropped = r.dropped_oldest + r.dropped_newest, drivers_down = ?down,
                clock_synced = synced, "stats"
            );
        }
    })
}
