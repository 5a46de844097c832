#![allow(clippy::print_stdout)] // a CLI prints on stdout
//! The `edge-agent` command.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use edge_agent::RunOptions;
use edge_agent::config;
use edge_agent::ops::logging;
use edge_agent::ops::logging::LogFormat;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "edge-agent",
    version,
    about = "Edge gateway agent: reads industrial devices, predicts faults locally, forwards alerts",
    long_about = None,
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormatArg {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent.
    Run {
        /// Configuration file. Without it, the built-in demo configuration runs
        /// (simulated machines and this gateway's own health).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Log format (overrides [log] format).
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
        /// Log level or filter (overrides [log] level; RUST_LOG overrides both).
        #[arg(long)]
        log_level: Option<String>,
    },
    /// Validate a configuration file without running; all problems are reported.
    CheckConfig {
        file: PathBuf,
        /// Also print every signal the configured drivers produce.
        #[arg(long)]
        list_signals: bool,
    },
    /// Print the fully commented default configuration.
    PrintDefaultConfig,
    /// Show what a running agent is doing: drivers, last samples, link health,
    /// ring, alerts, journal backlog, uplink and models.
    Status {
        /// The agent's control socket (default: where `run` puts it; see
        /// `[agent] control_socket`).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print the raw JSON document instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Models of a running agent.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Local alarm outputs (GPIO) of a running agent.
    Alarms {
        #[command(subcommand)]
        command: AlarmsCommand,
    },
}

#[derive(Subcommand, Debug)]
enum AlarmsCommand {
    /// Acknowledge latched alarm outputs: they switch off unless their alerts are
    /// still active.
    Ack {
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ModelsCommand {
    /// List the models a running agent has loaded, their versions, hashes and the
    /// state of every binding (normal, alerting, quarantined, drifting).
    List {
        #[arg(long)]
        socket: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

/// Sends `command` to a running agent through its control socket; exit 1 when
/// none answers.
fn query(
    socket: Option<&std::path::Path>,
    command: &str,
) -> Result<edge_agent::ops::status::AgentStatus, ExitCode> {
    edge_agent::ops::control::query(socket, command).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Status { socket, json } => match query(socket.as_deref(), "status") {
            Ok(s) if json => {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Ok(s) => {
                print!("{}", s.render());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Models {
            command: ModelsCommand::List { socket, json },
        } => match query(socket.as_deref(), "status") {
            Ok(s) if json => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&s.models).unwrap_or_default()
                );
                ExitCode::SUCCESS
            }
            Ok(s) => {
                print!("{}", edge_agent::ops::status::render_models(&s.models));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Alarms {
            command: AlarmsCommand::Ack { socket },
        } => match query(socket.as_deref(), "ack") {
            Ok(s) => {
                for a in &s.alarms {
                    println!(
                        "{}: {}",
                        a.name,
                        match (a.failed, a.on) {
                            (true, _) => "FAILED (GPIO line cannot be driven)",
                            (_, true) => "on (its alerts are still active)",
                            _ => "off",
                        }
                    );
                }
                if s.alarms.is_empty() {
                    println!("this agent has no alarm outputs");
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::PrintDefaultConfig => {
            print!("{}", config::DEFAULT_CONFIG);
            ExitCode::SUCCESS
        }
        Command::CheckConfig { file, list_signals } => match config::load_file(&file) {
            Ok(cfg) => {
                if list_signals {
                    for i in 0..cfg.registry.len() {
                        let id = edge_driver_api::SignalId(i as u32);
                        let m = cfg.registry.meta(id);
                        println!(
                            "{}\t{}\t{}{}",
                            m.name,
                            m.unit.as_deref().unwrap_or(""),
                            m.driver,
                            if m.text { "\ttext" } else { "" }
                        );
                    }
                }
                for h in &cfg.models.handles {
                    let m = h.current();
                    eprintln!(
                        "model {} {} (sha256 {}) from {}: valid",
                        m.manifest.model.name,
                        m.manifest.model.version,
                        m.sha256,
                        h.manifest_path.display()
                    );
                }
                eprintln!(
                    "{}: OK ({} drivers, {} signals, {} assets, {} detectors, {} models)",
                    file.display(),
                    cfg.drivers.len(),
                    cfg.registry.len(),
                    cfg.assets.len(),
                    cfg.assets.iter().map(|a| a.detectors.len()).sum::<usize>(),
                    cfg.models.handles.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{}", e.rendered);
                ExitCode::from(2)
            }
        },
        Command::Run {
            config: path,
            log_format,
            log_level,
        } => {
            let loaded = match &path {
                Some(p) => config::load_file(p),
                None => config::parse("<built-in default config>", config::DEFAULT_CONFIG),
            };
            let cfg = match loaded {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{}", e.rendered);
                    return ExitCode::from(2);
                }
            };
            let format = match log_format {
                Some(LogFormatArg::Json) => LogFormat::Json,
                Some(LogFormatArg::Human) => LogFormat::Human,
                None => cfg.log.format,
            };
            let level = log_level.unwrap_or_else(|| cfg.log.level.clone());
            if let Err(e) = logging::init(&level, format) {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
            if path.is_none() {
                tracing::info!(
                    "no --config given: running the built-in demo configuration (see `edge-agent print-default-config`)"
                );
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("edge-agent")
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(async move {
                let shutdown = CancellationToken::new();
                let signals = shutdown.clone();
                tokio::spawn(async move {
                    wait_for_stop_signal().await;
                    tracing::info!("stop requested");
                    signals.cancel();
                    let first = std::time::Instant::now();
                    loop {
                        wait_for_stop_signal().await;
                        // One request often arrives twice: `timeout`, shells and some
                        // supervisors signal the process and then its whole group.
                        // Only a request made again later skips the graceful drain.
                        if first.elapsed() >= std::time::Duration::from_secs(2) {
                            break;
                        }
                        tracing::info!("stop request repeated within 2 s: still stopping gracefully (send it again to exit at once)");
                    }
                    tracing::warn!("second stop request: exiting immediately");
                    std::process::exit(130);
                });
                let systemd = edge_agent::ops::sdnotify::Notifier::from_env().map(std::sync::Arc::new);
                let reload = std::sync::Arc::new(tokio::sync::Notify::new());
                let opts = RunOptions {
                    reload_models: Some(reload.clone()),
                    default_control_socket: true,
                    watchdog: systemd
                        .as_ref()
                        .and_then(|_| edge_agent::ops::sdnotify::watchdog_period()),
                    systemd: systemd.clone(),
                    ..RunOptions::default()
                };
                let handle = edge_agent::start(cfg, opts)?;
                // SIGHUP (systemctl reload): re-read the config file and apply its
                // driver changes, then load new model versions.
                {
                    use tokio::signal::unix::{SignalKind, signal};
                    let reloader = handle.reloader();
                    match signal(SignalKind::hangup()) {
                        Ok(mut hup) => {
                            tokio::spawn(async move {
                                while hup.recv().await.is_some() {
                                    if let Some(n) = &systemd {
                                        n.send("RELOADING=1");
                                    }
                                    let status = reload_config(path.as_deref(), &reloader).await;
                                    // Model versions are validated and swapped in the
                                    // background; the old ones serve until then.
                                    reload.notify_one();
                                    if let Some(n) = &systemd {
                                        n.send(&format!("READY=1\nSTATUS={status}"));
                                    }
                                }
                            });
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP"),
                    }
                }
                let token = handle.shutdown_token();
                tokio::spawn(trim_start_up_text(token.clone()));
                tokio::select! {
                    _ = shutdown.cancelled() => token.cancel(),
                    _ = token.cancelled() => {}
                }
                handle.wait().await
            });
            match result {
                Ok(report) if report.shutdown_timed_out => ExitCode::FAILURE,
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "edge-agent failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Pages the start-up code (config parser, model loader) out of the resident set
/// once the agent is up, and again every 10 minutes (a reload or a model swap runs
/// the loader again). See `edge_agent::ops::memory`.
async fn trim_start_up_text(stop: tokio_util::sync::CancellationToken) {
    let mut first = true;
    loop {
        let wait = if first { 30 } else { 600 };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(wait)) => {}
        }
        match tokio::task::spawn_blocking(edge_agent::ops::memory::trim_own_text).await {
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
async fn reload_config(
    path: Option<&std::path::Path>,
    reloader: &edge_agent::runtime::reload::ConfigReloader,
) -> String {
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
