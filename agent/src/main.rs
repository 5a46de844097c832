#![allow(clippy::print_stdout)] // a CLI prints on stdout
//! The `edge-agent` command.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use edge_agent::config;
use edge_agent::ops::logging;
use edge_agent::ops::logging::LogFormat;
use edge_agent::ops::status::{AgentStatus, TagsReport};

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
    /// Measure detection quality: replay labelled scenarios (a directory per
    /// scenario: signals.csv and labels.toml) through the configuration's
    /// windows, detectors, models and alert engine in virtual time, and report
    /// recall, precision, false alarms per healthy hour, lead times and ETA errors.
    /// The configuration's drivers are replaced by the replay. Exit code 0 when it
    /// ran (quality is reported, not asserted), 2 for a bad config or scenario.
    Eval {
        /// Configuration file (its assets, detectors, models and alert limits).
        #[arg(long, short)]
        config: PathBuf,
        /// Directory of scenarios.
        #[arg(long)]
        scenarios: PathBuf,
        /// Also write the report as JSON (the README documents its fields).
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also write one SVG timeline per scenario into this directory.
        #[arg(long)]
        plots: Option<PathBuf>,
    },
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
    /// Every tag of a running agent: its latest value, unit, quality (good, bad
    /// with the reason, stale, no data), age, driver and address.
    Tags {
        /// Only tags whose name contains this (or matches it, with `*` and `?`);
        /// case-insensitive.
        filter: Option<String>,
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print the raw JSON document instead of the table.
        #[arg(long)]
        json: bool,
        /// Refresh every `--every` seconds until interrupted.
        #[arg(long)]
        watch: bool,
        /// Seconds between refreshes with `--watch`.
        #[arg(long, default_value_t = 1.0)]
        every: f64,
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
    /// Alerts of a running agent.
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// Write VALUE to the writable tag SIGNAL of a running agent (its tag says
    /// `writable = true` with `min`/`max` or `allowed`). The value goes to the
    /// device through the driver that reads it, between two polls; the answer says
    /// the old value, the result (successful, refused with why, failed with why),
    /// the value read back (`verify = true`) and the latency. Every write is
    /// audited on the events lane (`events/audit`) with your uid.
    /// Exit code 0 when it was written, 1 when refused or failed.
    Write {
        signal: String,
        /// A number, or true/false (on/off) for a switch.
        #[arg(allow_hyphen_values = true)]
        value: String,
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print the raw JSON write report.
        #[arg(long)]
        json: bool,
    },
    #[cfg(feature = "signer")]
    /// Make an Ed25519 key pair for signing remote commands: the private key
    /// (PKCS#8, base64) goes to FILE (mode 0600, for the central system that
    /// signs), the public key is printed as the `[commands] public_keys` line
    /// every gateway needs.
    Keygen {
        file: PathBuf,
        /// The key's name in `public_keys`.
        #[arg(long, default_value = "central")]
        name: String,
    },
    /// Print a signed remote-command request for TOPIC
    /// (`{prefix}/{agent}/cmd/{op}/{id}`) with ARGS (JSON, `{}` by default),
    /// timestamped now: publish it as is, e.g. `mosquitto_pub -t TOPIC -m "$(...)"`.
    #[cfg(feature = "signer")]
    #[command(name = "sign-command")]
    Sign {
        topic: String,
        #[arg(default_value = "{}")]
        args: String,
        /// The private key file from `edge-agent keygen`.
        #[arg(long)]
        key: PathBuf,
        /// The key's name in the gateways' `public_keys`.
        #[arg(long, default_value = "central")]
        name: String,
    },
    /// Print a web UI users-file line for NAME (`[ui] users_file`): the password
    /// is read from standard input (one line), salted and hashed (PBKDF2-SHA256),
    /// never stored or shown. Append it: `edge-agent ui-password ops >> ui-users`.
    #[cfg(feature = "ui")]
    UiPassword { name: String },
    /// OPC UA servers.
    #[cfg(feature = "opcua")]
    Opcua {
        #[command(subcommand)]
        command: OpcuaCommand,
    },
}

#[cfg(feature = "opcua")]
#[derive(Subcommand, Debug)]
enum OpcuaCommand {
    /// Print a server's variables as `[[drivers.tags]]` entries, ready to paste
    /// into the driver's section: every variable under NODE (the Objects folder
    /// by default), DEPTH levels down, with its NodeId, its type and a signal
    /// name from its browse path. Connects like the driver DRIVER of CONFIG
    /// (security, user, certificates), or to ENDPOINT without security.
    Browse {
        /// `opc.tcp://host:port/path` (no security, anonymous).
        #[arg(long, required_unless_present = "config")]
        endpoint: Option<String>,
        /// A config file whose `opcua` driver section says how to connect.
        #[arg(long, requires = "driver", conflicts_with = "endpoint")]
        config: Option<PathBuf>,
        /// The driver's name in CONFIG.
        #[arg(long)]
        driver: Option<String>,
        /// Where to start: a NodeId (`ns=2;s=Line1`).
        #[arg(long)]
        node: Option<String>,
        #[arg(long, default_value_t = 3)]
        depth: u32,
        /// Prefix of the signal names (`plc` gives `plc.line1.temp`).
        #[arg(long, default_value = "")]
        prefix: String,
    },
}

#[derive(Subcommand, Debug)]
enum AlertsCommand {
    /// Say whether an alert was right: `true` (a real problem), `false` (a false
    /// alarm) or `unsure`. The label, with the alert and the features it was raised
    /// on, goes to the `[labels] dataset` and upstream to `{prefix}/{agent}/labels`.
    Label {
        /// The alert's id (or its episode's), as the console, the UI and the
        /// alert JSON show it.
        id: String,
        #[arg(value_parser = ["true", "false", "unsure"])]
        verdict: String,
        /// Why (up to 200 characters, or fewer that fit 256 bytes).
        #[arg(long)]
        note: Option<String>,
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print the label document.
        #[arg(long)]
        json: bool,
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
fn query<T: serde::de::DeserializeOwned>(
    socket: Option<&Path>,
    command: &str,
) -> Result<T, ExitCode> {
    edge_agent::ops::control::query(socket, command).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    })
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Status { socket, json } => status(socket.as_deref(), json),
        Command::Tags {
            filter,
            socket,
            json,
            watch,
            every,
        } => tags(
            socket.as_deref(),
            filter.as_deref().unwrap_or(""),
            json,
            watch,
            every,
        ),
        Command::Models {
            command: ModelsCommand::List { socket, json },
        } => models_list(socket.as_deref(), json),
        Command::Alarms {
            command: AlarmsCommand::Ack { socket },
        } => alarms_ack(socket.as_deref()),
        Command::Alerts {
            command:
                AlertsCommand::Label {
                    id,
                    verdict,
                    note,
                    socket,
                    json,
                },
        } => alerts_label(socket.as_deref(), &id, &verdict, note.as_deref(), json),
        Command::Write {
            signal,
            value,
            socket,
            json,
        } => write_tag(socket.as_deref(), &signal, &value, json),
        #[cfg(feature = "signer")]
        Command::Keygen { file, name } => keygen(&file, &name),
        #[cfg(feature = "signer")]
        Command::Sign {
            topic,
            args,
            key,
            name,
        } => sign_command(&topic, &args, &key, &name),
        Command::PrintDefaultConfig => {
            print!("{}", config::DEFAULT_CONFIG);
            ExitCode::SUCCESS
        }
        Command::CheckConfig { file, list_signals } => check_config(&file, list_signals),
        Command::Eval {
            config,
            scenarios,
            json,
            plots,
        } => eval(&config, &scenarios, json.as_deref(), plots.as_deref()),
        Command::Run {
            config,
            log_format,
            log_level,
        } => run(config, log_format, log_level),
        #[cfg(feature = "ui")]
        Command::UiPassword { name } => ui_password(&name),
        #[cfg(feature = "opcua")]
        Command::Opcua {
            command:
                OpcuaCommand::Browse {
                    endpoint,
                    config,
                    driver,
                    node,
                    depth,
                    prefix,
                },
        } => opcua_browse(endpoint, config, driver, node, depth, &prefix),
    }
}

/// `edge-agent opcua browse`: tag entries on stdout, a summary on stderr.
#[cfg(feature = "opcua")]
fn opcua_browse(
    endpoint: Option<String>,
    config: Option<PathBuf>,
    driver: Option<String>,
    node: Option<String>,
    depth: u32,
    prefix: &str,
) -> ExitCode {
    use edge_agent::ops::opcua;
    let cfg = match (endpoint, config, driver) {
        (Some(e), _, _) => edge_driver_opcua::anonymous(&e),
        (None, Some(c), Some(d)) => opcua::driver_config(&c, &d),
        _ => Err("give --endpoint, or --config and --driver".to_string()),
    };
    match cfg.and_then(|c| opcua::browse(&c, node.as_deref(), depth, prefix)) {
        Ok((tags, n)) => {
            print!("{tags}");
            eprintln!("{n} variables");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `edge-agent ui-password NAME`: a users-file line, the password from stdin.
#[cfg(feature = "ui")]
fn ui_password(name: &str) -> ExitCode {
    if name.is_empty() || name.contains(':') || name.chars().any(char::is_whitespace) {
        eprintln!("error: a user name is not empty and has no `:` or spaces");
        return ExitCode::from(2);
    }
    let mut pw = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut pw) {
        eprintln!("error: cannot read the password from standard input: {e}");
        return ExitCode::FAILURE;
    }
    let pw = pw.trim_end_matches(['\n', '\r']);
    if pw.chars().count() < 8 {
        eprintln!("error: the password must have at least 8 characters");
        return ExitCode::from(2);
    }
    match edge_agent::ops::http::auth::hash_line(name, pw) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: no random salt (/dev/urandom): {e}");
            ExitCode::FAILURE
        }
    }
}

/// `edge-agent eval`.
fn eval(config: &Path, scenarios: &Path, json: Option<&Path>, plots: Option<&Path>) -> ExitCode {
    let cfg = match config::load_file(config) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
    };
    let report = match edge_agent::eval::run(&cfg, scenarios, plots) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    print!("{}", edge_agent::eval::table(&report));
    if let Some(path) = json {
        let doc = serde_json::to_vec_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(path, doc) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

/// `edge-agent status`.
fn status(socket: Option<&Path>, json: bool) -> ExitCode {
    match query::<AgentStatus>(socket, "status") {
        Ok(s) if json => {
            println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(s) => {
            print!("{}", s.render());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `edge-agent tags`: once, or refreshed until interrupted (`--watch`).
fn tags(socket: Option<&Path>, filter: &str, json: bool, watch: bool, every: f64) -> ExitCode {
    use std::io::{IsTerminal, Write};
    let filter: String = filter.chars().filter(|c| !c.is_control()).collect();
    if filter.len() > 200 {
        eprintln!(
            "error: the filter is {} bytes long; at most 200",
            filter.len()
        );
        return ExitCode::from(2);
    }
    let every = std::time::Duration::from_secs_f64(every.clamp(0.1, 3600.0));
    let terminal = std::io::stdout().is_terminal();
    loop {
        let report = match query::<TagsReport>(socket, &format!("tags {filter}")) {
            Ok(r) => r,
            Err(code) => return code,
        };
        let text = if json {
            serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
        } else {
            edge_agent::ops::status::render_tags(&report, &filter)
        };
        let mut out = std::io::stdout().lock();
        // Redraw in place on a terminal; blocks one after the other in a pipe.
        let clear = if watch && terminal {
            "\x1b[H\x1b[2J"
        } else {
            ""
        };
        if write!(out, "{clear}{text}")
            .and_then(|_| out.flush())
            .is_err()
        {
            return ExitCode::SUCCESS; // the reader went away (`| head`)
        }
        if !watch {
            return ExitCode::SUCCESS;
        }
        drop(out);
        std::thread::sleep(every);
        if !terminal {
            println!();
        }
    }
}

/// `edge-agent models list`.
fn models_list(socket: Option<&Path>, json: bool) -> ExitCode {
    match query::<AgentStatus>(socket, "status") {
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
    }
}

/// `edge-agent alarms ack`.
/// `edge-agent alerts label ID VERDICT [--note TEXT]`.
/// `edge-agent keygen FILE`.
#[cfg(feature = "signer")]
fn keygen(file: &Path, name: &str) -> ExitCode {
    match edge_agent::inbound::commands::keygen(file) {
        Ok(public) => {
            println!(
                "private key written to {} (keep it on the signing system only)",
                file.display()
            );
            println!("[commands]\npublic_keys = {{ {name} = \"{public}\" }}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `edge-agent sign-command TOPIC ARGS --key FILE`.
#[cfg(feature = "signer")]
fn sign_command(topic: &str, args: &str, key: &Path, name: &str) -> ExitCode {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    match edge_agent::inbound::commands::sign_file(key, name, topic, args, now_ms) {
        Ok(payload) => {
            println!("{payload}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `edge-agent write SIGNAL VALUE`.
fn write_tag(socket: Option<&Path>, signal: &str, value: &str, json: bool) -> ExitCode {
    if signal.is_empty()
        || signal.contains(char::is_whitespace)
        || value.contains(char::is_whitespace)
    {
        eprintln!("error: a signal name and a value have no spaces");
        return ExitCode::from(2);
    }
    let command = format!("write {signal} {value}");
    if command.len() > 255 {
        eprintln!("error: the signal name is too long");
        return ExitCode::from(2);
    }
    let report = match query::<serde_json::Value>(socket, &command) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let ok = report["result"] == "successful";
    if json {
        println!("{report}");
    } else {
        let num = |k: &str| {
            report[k]
                .as_f64()
                .map_or("?".to_string(), |v| v.to_string())
        };
        let mut line = format!(
            "{} {signal} = {} (was {}) in {:.1} ms",
            report["result"].as_str().unwrap_or("?"),
            num("value"),
            num("old"),
            report["latency_ms"].as_f64().unwrap_or(f64::NAN),
        );
        if report["read_back"].is_number() {
            line.push_str(&format!(", read back {}", num("read_back")));
        }
        if let Some(why) = report["reason"].as_str() {
            line.push_str(&format!(": {why}"));
        }
        println!("{line}");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn alerts_label(
    socket: Option<&Path>,
    id: &str,
    verdict: &str,
    note: Option<&str>,
    json: bool,
) -> ExitCode {
    if id.is_empty() || id.contains(char::is_whitespace) {
        eprintln!("error: an alert id has no spaces");
        return ExitCode::from(2);
    }
    // One control-socket line holds at most 256 bytes with its newline.
    let mut command = format!("label {id} {verdict} ");
    let mut cut = false;
    for c in note.unwrap_or("").chars().take(200) {
        let c = if c.is_control() { ' ' } else { c };
        if command.len() + c.len_utf8() > 255 {
            cut = true;
            break;
        }
        command.push(c);
    }
    if cut {
        eprintln!("warning: the note was shortened to fit one command line");
    }
    let label = match query::<serde_json::Value>(socket, command.trim_end()) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if json {
        println!("{label}");
    } else {
        println!(
            "labelled {} {}/{} ({}) as {} [label {}]",
            label["alert"]["id"].as_str().unwrap_or(id),
            label["alert"]["asset"].as_str().unwrap_or("?"),
            label["alert"]["detector"].as_str().unwrap_or("?"),
            label["alert"]["message"].as_str().unwrap_or(""),
            label["verdict"].as_str().unwrap_or(verdict),
            label["id"].as_str().unwrap_or("?"),
        );
    }
    ExitCode::SUCCESS
}

fn alarms_ack(socket: Option<&Path>) -> ExitCode {
    let s = match query::<AgentStatus>(socket, "ack") {
        Ok(s) => s,
        Err(code) => return code,
    };
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

/// `edge-agent check-config`: exit 2 with every problem, or a summary.
fn check_config(file: &Path, list_signals: bool) -> ExitCode {
    let cfg = match config::load_file(file) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprint!("{}", e.rendered);
            return ExitCode::from(2);
        }
    };
    if list_signals {
        for i in 0..cfg.registry.len() {
            let m = cfg.registry.meta(edge_driver_api::SignalId(i as u32));
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
        for line in m.dry_run.iter().flat_map(|d| d.summary()) {
            eprintln!("  {line}");
        }
        for w in &m.warnings {
            eprintln!("  warning: {w}");
        }
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

/// `edge-agent run`: the configuration (or the built-in demo), logging, then the
/// service until it stops.
fn run(
    path: Option<PathBuf>,
    log_format: Option<LogFormatArg>,
    log_level: Option<String>,
) -> ExitCode {
    let loaded = match &path {
        Some(p) => config::load_file(p),
        None => config::parse("<built-in default config>", config::DEFAULT_CONFIG),
    };
    let cfg = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprint!("{}", e.rendered);
            if recovered(path.as_deref(), "the configuration is invalid") {
                return run_again();
            }
            return ExitCode::from(2);
        }
    };
    let format = match log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Human) => LogFormat::Human,
        None => cfg.log.format,
    };
    let level = log_level.unwrap_or_else(|| cfg.log.level.clone());
    // The last lines in memory for the `log_upload` remote operation.
    let ring_lines = cfg
        .commands
        .as_ref()
        .filter(|c| {
            c.operations
                .contains(&edge_agent::inbound::commands::Operation::LogUpload)
        })
        .map_or(0, |c| c.log_lines);
    if let Err(e) = logging::init(&level, format, ring_lines) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    logging::log_panics();
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
    let served = runtime.block_on(edge_agent::runtime::service::serve(cfg, path.clone()));
    drop(runtime);
    match served {
        Ok(report) if report.restart_requested => run_again(),
        Ok(report) if report.shutdown_timed_out => ExitCode::FAILURE,
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            let e = format!("{e:#}");
            tracing::error!(error = %e, "edge-agent failed");
            if recovered(path.as_deref(), &e) {
                return run_again();
            }
            ExitCode::FAILURE
        }
    }
}

/// Whether a remote `config_update` caused the failure to start and the
/// previous configuration is back (see `runtime::remote::recover_start`).
fn recovered(path: Option<&Path>, error: &str) -> bool {
    path.is_some_and(|p| edge_agent::runtime::remote::recover_start(p, error))
}

/// Executes this binary again with the same arguments (a remote restart or a
/// rollback): same PID, so systemd keeps following the service.
fn run_again() -> ExitCode {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot find the agent's executable to run it again: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(exe = %exe.display(), "running the agent again");
    let err = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .exec();
    eprintln!("error: cannot run {} again: {err}", exe.display());
    ExitCode::FAILURE
}
