//! Log output: human-readable (coloured on a terminal) or JSON lines, on stderr.
//! Alerts themselves go to the alert sinks, not the log.

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

/// A log filter: a level (`info`), or comma-separated `target=level` directives
/// with an optional default level (`warn,edge_agent::delivery=debug`).
pub fn parse_filter(text: &str) -> Result<Targets, String> {
    text.trim()
        .parse::<Targets>()
        .map_err(|e| format!("`{text}` is not a log level or filter: {e}"))
}

/// Installs the global subscriber. `RUST_LOG` overrides `level` when set.
pub fn init(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => parse_filter(&v),
        _ => parse_filter(level),
    }
    .map_err(anyhow::Error::msg)?;
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(layer.json().flatten_event(true).with_current_span(false))
            .try_init(),
        LogFormat::Human => registry
            .with(layer.with_ansi(std::io::stderr().is_terminal()))
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install logger: {e}"))
}

/// Sends panics to the log (JSON lines stay JSON lines) instead of raw stderr
/// text. Most are caught and reported where they happen (a driver is restarted,
/// a model is rejected or quarantined); this line says where one started.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let message = edge_driver_api::panic_message(info.payload());
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        tracing::error!(%location, %thread, panic = %message, "panic");
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn filters_are_a_level_or_target_directives() {
        let f = parse_filter("info").expect("a level");
        assert!(f.would_enable("edge_agent::delivery", &Level::INFO));
        assert!(!f.would_enable("edge_agent::delivery", &Level::DEBUG));
        let f = parse_filter("warn,edge_agent::delivery=debug").expect("directives");
        assert!(f.would_enable("edge_agent::delivery::uplink", &Level::DEBUG));
        assert!(!f.would_enable("edge_agent::pipeline", &Level::INFO));
        assert!(f.would_enable("rumqttc", &Level::WARN));
        for bad in ["edge_agent=loud", "info,=debug=x"] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }
}
