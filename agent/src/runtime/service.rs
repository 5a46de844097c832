//! The agent as a service (what `edge-agent run` does): start it, stop it
//! gracefully on SIGTERM/SIGINT (at once on a repeated request), reload the
//! configuration and models on SIGHUP, talk to systemd, and page start-up code out
//! of the resident set.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::reload::ConfigReloader;
use super::{RunOptions, RunReport};
use crate::config::{self, Config};
use crate::ops::sdnotify::{self, Notifier};

/// Runs `cfg` (read from `path`, if from a file) until a stop request; returns
/// the run's report.
pub async fn serve(cfg: Config, path: Option<PathBuf>) -> anyhow::Result<RunReport> {
    for h in &cfg.models.handles {
        for w in &h.current().warnings {
            tracing::warn!(manifest = %h.manifest_path.display(), "{w}");
        }
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signals(shutdown.clone()));
    let systemd = Notifier::from_env().map(Arc::new);
    let reload = Arc::new(Notify::new());
    let opts = RunOptions {
        reload_models: Some(reload.clone()),
        default_control_socket: true,
        watchdog: systemd.as_ref().and_then(|_| sdnotify::watchdog_period()),
        systemd: systemd.clone(),
        ..RunOptions::default()
    };
    let handle = super::start(cfg, opts)?;
    reload_on_sighup(path, handle.reloader(), reload, systemd);
    let token = handle.shutdown_token();
    tokio::spawn(trim_start_up_text(token.clone()));
    tokio::select! {
        _ = shutdown.cancelled() => token.cancel(),
        _ = token.cancelled() => {}
    }
    handle.wait().await
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT; exits at once on a second
/// request made 2 s or more later.
async fn stop_on_signals(shutdown: CancellationToken) {
    wait_for_stop_signal().await;
    tracing::info!("stop requested");
    shutdown.cancel();
    let first = std::time::Instant::now();
    loop {
        wait_for_stop_signal().await;
        // One request often arrives twice: `timeout`, shells and some
        // supervisors signal the process and then its whole group.
        // Only a request made again later skips the graceful drain.
        if first.elapsed() >= Duration::from_secs(2) {
            break;
        }
        tracing::info!(
            "stop request repeated within 2 s: still stopping gracefully (send it again to exit at once)"
        );
    }
    tracing::warn!("second stop request: exiting immediately");
    std::process::exit(130);
}

/// SIGHUP (systemctl reload): re-read the config file and apply its changes, then
/// load new model versions.
fn reload_on_sighup(
    path: Option<PathBuf>,
    reloader: ConfigReloader,
    models: Arc<Notify>,
    systemd: Option<Arc<Notifier>>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP");
            return;
        }
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            if let Some(n) = &systemd {
                n.send("RELOADING=1");
            }
            // On a task of its own: a panic while reloading is reported and the
            // next SIGHUP is still heard.
            let (p, r) = (path.clone(), reloader.clone());
            let status = match tokio::spawn(async move { reload_config(p.as_deref(), &r).await })
                .await
            {
                Ok(status) => status,
                Err(e) => {
                    let what = match e.try_into_panic() {
                        Ok(p) => edge_driver_api::panic_message(&*p),
                        Err(e) => e.to_string(),
                    };
                    tracing::error!(error = %what, "the reload failed; the running configuration stays in force");
                    "running; reload failed (see the log)".to_string()
                }
            };
            // Model versions are validated and swapped in the background; the
            // old ones serve until then.
            models.notify_one();
            if let Some(n) = &systemd {
                n.send(&format!("READY=1\nSTATUS={status}"));
            }
        }
    });
}

/// Pages the start-up code (config parser, model loader) out of the resident set
/// once the agent is up, and again every 10 minutes (a reload or a model swap runs
/// the loader again). See [`crate::ops::memory`].
async fn trim_start_up_text(stop: CancellationToken) {
    let mut first = true;
    loop {
        let wait = if first { 30 } else { 600 };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
        }
        match tokio::task::spawn_blocking(crate::ops::memory::trim_own_text).await {
            Ok(Ok(t)) if first => tracing::debug!(
                mappings = t.mappings,
                bytes = t.bytes,
                "start-up code paged out"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot page out start-up code (kernel before 5.4?); RSS stays higher, nothing else changes");
                return;
            }
            Err(_) => return,
        }
        first = false;
    }
}

/// Re-reads the config file and applies what can be applied live; returns a line for
/// systemd's status. Never fails the agent: a bad file is reported and ignored.
async fn reload_config(path: Option<&Path>, reloader: &ConfigReloader) -> String {
    let Some(path) = path else {
        tracing::info!("SIGHUP: reloading models (the built-in config has no file to re-read)");
        return "running; models reloaded".into();
    };
    tracing::info!(config = %path.display(), "SIGHUP: reloading the configuration and models");
    match config::load_file(path) {
        Err(e) => {
            tracing::error!(
                "the new configuration is invalid; the running one stays in force:\n{}",
                e.rendered
            );
            format!(
                "running; reload rejected: {} config errors",
                e.diagnostics.len()
            )
        }
        Ok(new) => match reloader.apply(new).await {
            Ok(r) => {
                match &r.assets {
                    Some(a) => tracing::info!(
                        restarted = ?r.restarted, unchanged = r.unchanged,
                        windows_kept = a.windows_kept, windows_new = a.windows_new,
                        detectors_kept = a.detectors_kept, detectors_new = a.detectors_new,
                        models_kept = a.bindings_kept, models_new = a.bindings_new,
                        alerts_closed = a.alerts_closed,
                        "configuration reloaded"
                    ),
                    None => tracing::info!(
                        restarted = ?r.restarted, unchanged = r.unchanged,
                        "configuration reloaded"
                    ),
                }
                let assets = match &r.assets {
                    Some(a) if a.windows_new + a.detectors_new + a.bindings_new > 0 => format!(
                        ", {} detectors and {} models new or changed",
                        a.detectors_new, a.bindings_new
                    ),
                    _ => String::new(),
                };
                format!(
                    "running; reloaded ({} drivers restarted{assets})",
                    r.restarted.len()
                )
            }
            Err(e) => {
                tracing::warn!("configuration not reloaded: {e}");
                "running; reload needs a restart".into()
            }
        },
    }
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
