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
    let mut t = text
        .trim()
        .parse::<Targets>()
        .map_err(|e| format!("`{text}` is not a log level or filter: {e}"))?;
    // The OPC UA stack logs each reconnect attempt, and at `error` a missing
    // client certificate even for sessions without security; the driver reports
    // what matters itself. A filter naming them (`opcua_client=debug`) shows them.
    if !text.contains("opcua") {
        for target in ["opcua_client", "opcua_core", "opcua_crypto", "opcua_types"] {
            t = t.with_target(target, tracing_subscriber::filter::LevelFilter::OFF);
        }
    }
    Ok(t)
}

/// The agent's own recent log lines, in memory, for the `log_upload` remote
/// operation: at most `capacity` lines (each cut at [`MAX_LINE`] bytes), the
/// oldest dropped first. Lines are plain text (no colours), with their wall time.
#[derive(Debug)]
pub struct LogRing {
    lines: std::sync::Mutex<std::collections::VecDeque<(i64, String)>>,
    capacity: usize,
    dropped: std::sync::atomic::AtomicU64,
}

/// Longest line kept.
pub const MAX_LINE: usize = 1024;

static RING: std::sync::OnceLock<std::sync::Arc<LogRing>> = std::sync::OnceLock::new();

/// The ring `init` installed, if any.
pub fn log_ring() -> Option<std::sync::Arc<LogRing>> {
    RING.get().cloned()
}

impl LogRing {
    pub fn new(capacity: usize) -> LogRing {
        LogRing {
            lines: std::sync::Mutex::new(std::collections::VecDeque::with_capacity(
                capacity.min(4096),
            )),
            capacity: capacity.max(1),
            dropped: Default::default(),
        }
    }

    fn push(&self, wall_ms: i64, mut line: String) {
        if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        let mut l = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if l.len() >= self.capacity {
            l.pop_front();
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        l.push_back((wall_ms, line));
    }

    /// The last `n` lines written at or after `since_ms` (oldest first).
    pub fn tail(&self, n: usize, since_ms: i64) -> Vec<String> {
        self.range(n, since_ms, i64::MAX)
    }

    /// The last `n` lines written from `from_ms` to `to_ms` (oldest first).
    pub fn range(&self, n: usize, from_ms: i64, to_ms: i64) -> Vec<String> {
        let l = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<String> = l
            .iter()
            .rev()
            .filter(|(t, _)| *t >= from_ms && *t <= to_ms)
            .take(n)
            .map(|(_, s)| s.clone())
            .collect();
        out.reverse();
        out
    }

    /// Lines dropped to make room since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// One formatted event: to stderr, and into the ring when there is one (one
/// writer for both, so the subscriber has one formatting layer).
#[derive(Debug)]
pub struct TeeLine {
    ring: Option<std::sync::Arc<LogRing>>,
    buf: Vec<u8>,
}

impl std::io::Write for TeeLine {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for TeeLine {
    fn drop(&mut self) {
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), &self.buf);
        let Some(ring) = &self.ring else { return };
        let text = String::from_utf8_lossy(&self.buf);
        let wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for line in text.lines().filter(|l| !l.is_empty()) {
            ring.push(wall_ms, strip_ansi(line));
        }
    }
}

/// `line` without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Tee {
    type Writer = TeeLine;
    fn make_writer(&'a self) -> TeeLine {
        TeeLine {
            ring: self.0.clone(),
            buf: Vec::with_capacity(160),
        }
    }
}

/// Writes formatted events to stderr and, with a ring, into it.
#[derive(Clone, Debug)]
pub struct Tee(pub Option<std::sync::Arc<LogRing>>);

/// Installs the global subscriber. `RUST_LOG` overrides `level` when set.
/// `ring_lines` > 0 also keeps the last lines in memory ([`log_ring`]).
pub fn init(level: &str, format: LogFormat, ring_lines: usize) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => parse_filter(&v),
        _ => parse_filter(level),
    }
    .map_err(anyhow::Error::msg)?;
    let ring = (ring_lines > 0).then(|| {
        let r = std::sync::Arc::new(LogRing::new(ring_lines));
        let _ = RING.set(r.clone());
        r
    });
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(Tee(ring))
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
    fn the_log_ring_keeps_the_last_lines_and_cuts_long_ones() {
        use std::io::Write as _;
        use tracing_subscriber::fmt::MakeWriter as _;
        let ring = std::sync::Arc::new(LogRing::new(3));
        let w = Tee(Some(ring.clone()));
        for i in 0..5 {
            let mut line = w.make_writer();
            writeln!(line, "line {i}").expect("write");
        }
        assert_eq!(ring.tail(10, 0), ["line 2", "line 3", "line 4"]);
        assert_eq!(ring.tail(1, 0), ["line 4"]);
        assert_eq!(ring.dropped(), 2);
        assert!(ring.tail(10, i64::MAX).is_empty());
        assert_eq!(
            ring.range(10, i64::MIN, 0),
            Vec::<String>::new(),
            "a time range before every line"
        );
        let mut long = w.make_writer();
        write!(long, "{}", "é".repeat(MAX_LINE)).expect("write");
        drop(long);
        assert!(ring.tail(1, 0)[0].len() <= MAX_LINE + '…'.len_utf8());
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m up"),
            "2026  INFO up"
        );
    }

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
