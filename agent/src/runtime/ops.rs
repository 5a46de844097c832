//! Starting the operations side: the control socket, the metrics endpoint,
//! systemd's readiness and watchdog, and the periodic stats log line. None of them
//! can stop the agent: an endpoint that cannot be opened is logged and left out.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::RunOptions;
use crate::config::Config;
use crate::ops::control::ControlSocket;
use crate::ops::status::StatusSource;
use crate::pipeline::PipelineCounters;

/// Opens the control socket and the metrics endpoint, and tells systemd the agent
/// is ready.
pub(crate) fn start(
    config: &Config,
    opts: &RunOptions,
    source: &StatusSource,
    counters: &Arc<PipelineCounters>,
    drivers: usize,
    shutdown: &CancellationToken,
) {
    open_control_socket(config, opts, source, shutdown);
    open_metrics(config, source, shutdown);
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

fn open_metrics(config: &Config, source: &StatusSource, shutdown: &CancellationToken) {
    let Some(m) = &config.metrics else {
        return;
    };
    let listener = std::net::TcpListener::bind(m.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std);
    match listener {
        Ok(l) => {
            tracing::info!(listen = %l.local_addr().map_or(m.listen, |a| a), "Prometheus metrics at /metrics");
            tokio::spawn(crate::ops::metrics::serve(
                l,
                source.clone(),
                m.per_tag,
                shutdown.clone(),
            ));
        }
        Err(e) => tracing::error!(
            listen = %m.listen, error = %e,
            "cannot open the metrics endpoint; the agent runs without it"
        ),
    }
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
