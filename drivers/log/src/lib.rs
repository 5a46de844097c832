//! `log`: keywords in log files become signals — the way a gateway spots a
//! degrading link in a PLC server's log before it fails.
//!
//! ```toml
//! [[drivers]]
//! name = "plclog"
//! kind = "log"
//! paths = ["/var/log/plc-server.log"]
//! interval = "1s"        # how often the files are read
//! window = "10s"         # match counts are per window
//! from = "end"           # end | start: where to begin in a file found at start-up
//! journal_units = ["plc-server.service"]   # also follow these units in the systemd journal
//!
//! [[drivers.rules]]
//! name = "timeout"
//! regex = 'timeout after (?P<ms>\d+)ms'
//! unit = "ms"           # optional: engineering unit of the capture signals
//! ```
//!
//! Every rule gives `<driver>.<rule>.count` — matches in the last `window`, emitted
//! at the end of every window (0 included, so a quiet log is visible) — and one
//! signal per named capture, `<driver>.<rule>.<capture>`, with the captured number
//! of every matching line (a capture that is not a number is a bad-quality sample).
//! Files are followed across rotation by rename (the old file is read to its end
//! first), truncation and deletion, like `tail -F`; a line longer than 64 KiB is cut,
//! and at most 4 MiB are read per file per interval, so a runaway log cannot stall
//! the agent. Matching is linear-time (the `regex` crate): a hostile line cannot hang
//! a rule. `<driver>.lines` counts lines read, `<driver>.rotations` rotations seen.
//!
//! `journal_units` adds the systemd journal as a source, through
//! `journalctl --follow --lines=0 --output=cat --unit=...` (path in `journalctl`).
//! Where there is no journal (no `journalctl`, or it exits), the driver says so once,
//! keeps following its files and retries every 30 s.

pub mod follow;

use std::sync::Arc;
use std::time::Duration;

use edge_driver_api::config::{Span, TableReader};
use edge_driver_api::{
    BadReason, BoxFuture, Driver, DriverContext, DriverError, DriverFactory, Sample, SignalDecl,
    SignalId, SignalRegistry,
};
use regex::Regex;

pub use follow::{Follower, From};

/// One keyword rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub regex: Regex,
    /// The named captures, each a numeric signal.
    pub captures: Vec<Capture>,
    pub span: Span,
}

/// A rule's named capture group.
#[derive(Clone, Debug)]
pub struct Capture {
    pub name: String,
    /// Index of the group in the regex (unnamed groups count too).
    pub group: usize,
    pub unit: Option<String>,
}

/// Validated `log` configuration.
#[derive(Clone, Debug)]
pub struct LogConfig {
    pub name: String,
    pub paths: Vec<std::path::PathBuf>,
    pub interval: Duration,
    pub window: Duration,
    pub from: From,
    pub journal_units: Vec<String>,
    pub journalctl: std::path::PathBuf,
    pub rules: Vec<Rule>,
    pub span: Span,
}

const MAX_LINE: usize = 64 * 1024;
const BUDGET: usize = 4 * 1024 * 1024;

impl LogConfig {
    pub fn parse(r: &mut TableReader<'_>, name: &str) -> Option<LogConfig> {
        let mut ok = true;
        let paths: Vec<String> = r
            .strings("paths")
            .map(|v| v.into_iter().map(|s| s.value).collect())
            .unwrap_or_default();
        let journal_units: Vec<String> = r
            .strings("journal_units")
            .map(|v| v.into_iter().map(|s| s.value).collect())
            .unwrap_or_default();
        let journalctl = r
            .string("journalctl")
            .map(|v| v.value)
            .unwrap_or_else(|| "journalctl".into());
        if paths.is_empty() && journal_units.is_empty() {
            r.table_error("a log driver needs `paths` or `journal_units`")
                .hint("paths = [\"/var/log/plc-server.log\"], journal_units = [\"plc-server.service\"]")
                .emit();
            ok = false;
        }
        let interval = r
            .duration("interval")
            .map(|v| v.value)
            .unwrap_or(Duration::from_secs(1));
        let window = r
            .duration("window")
            .map(|v| v.value)
            .unwrap_or(Duration::from_secs(10));
        if interval < Duration::from_millis(10) || window < interval {
            r.table_error("`interval` must be at least 10ms and `window` at least `interval`")
                .emit();
            ok = false;
        }
        let from = r
            .choice("from", &[("end", From::End), ("start", From::Start)])
            .map(|v| v.value)
            .unwrap_or(From::End);
        let mut rules = Vec::new();
        let readers = r.tables("rules");
        if readers.is_empty() {
            r.table_error("a log driver needs at least one rule")
                .hint("[[drivers.rules]] name = \"timeout\" regex = 'timeout after (?P<ms>\\d+)ms'")
                .emit();
            ok = false;
        }
        for mut t in readers {
            let rname = t.req_string("name");
            let re = t.req_string("regex");
            let unit = t.string("unit").map(|v| v.value);
            let (Some(rname), Some(re)) = (rname, re) else {
                ok = false;
                continue;
            };
            if !rname
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                t.error(
                    rname.span,
                    "name",
                    format!("`{}` is not a valid rule name", rname.value),
                )
                .expected("A-Z a-z 0-9 _ - (it becomes part of signal names)")
                .emit();
                ok = false;
                continue;
            }
            let regex = match Regex::new(&re.value) {
                Ok(x) => x,
                Err(e) => {
                    t.error(re.span, "regex", format!("invalid regular expression: {e}"))
                        .hint("syntax of the Rust `regex` crate; name captures with (?P<name>...)")
                        .emit();
                    ok = false;
                    continue;
                }
            };
            let captures: Vec<Capture> = regex
                .capture_names()
                .enumerate()
                .filter_map(|(group, n)| {
                    n.map(|n| Capture {
                        name: n.to_string(),
                        group,
                        unit: unit.clone(),
                    })
                })
                .collect();
            rules.push(Rule {
                name: rname.value,
                regex,
                captures,
                span: rname.span,
            });
        }
        ok.then(|| LogConfig {
            name: name.to_string(),
            paths: paths.into_iter().map(Into::into).collect(),
            interval,
            window,
            from,
            journal_units,
            journalctl: journalctl.into(),
            rules,
            span: r.span(),
        })
    }

    pub fn signals(&self) -> Vec<SignalDecl> {
        let mut sources: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
        sources.extend(self.journal_units.iter().map(|u| format!("journal {u}")));
        let file = sources.join(", ");
        let decl = |name: String, unit: Option<String>, span: Span, at: String| SignalDecl {
            name,
            unit,
            span,
            text: false,
            address: Some(at),
        };
        let mut out = vec![
            decl(
                format!("{}.lines", self.name),
                None,
                self.span,
                format!("{file}: lines"),
            ),
            decl(
                format!("{}.rotations", self.name),
                None,
                self.span,
                format!("{file}: rotations"),
            ),
        ];
        for r in &self.rules {
            out.push(decl(
                format!("{}.{}.count", self.name, r.name),
                None,
                r.span,
                format!("{file}: rule {}", r.name),
            ));
            for c in &r.captures {
                out.push(decl(
                    format!("{}.{}.{}", self.name, r.name, c.name),
                    c.unit.clone(),
                    r.span,
                    format!("{file}: rule {}, capture {}", r.name, c.name),
                ));
            }
        }
        out
    }

    pub fn into_factory(self, registry: &SignalRegistry) -> Result<LogFactory, DriverError> {
        let id = |n: String| {
            registry
                .get(&n)
                .ok_or_else(|| DriverError::config(format!("signal `{n}` was not registered")))
        };
        let lines_id = id(format!("{}.lines", self.name))?;
        let rotations_id = id(format!("{}.rotations", self.name))?;
        let mut count_ids = Vec::new();
        let mut capture_ids = Vec::new();
        for r in &self.rules {
            count_ids.push(id(format!("{}.{}.count", self.name, r.name))?);
            capture_ids.push(
                r.captures
                    .iter()
                    .map(|c| id(format!("{}.{}.{}", self.name, r.name, c.name)))
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
        Ok(LogFactory {
            shared: Arc::new(Shared {
                cfg: self,
                lines_id,
                rotations_id,
                count_ids,
                capture_ids,
            }),
        })
    }
}

#[derive(Debug)]
struct Shared {
    cfg: LogConfig,
    lines_id: SignalId,
    rotations_id: SignalId,
    count_ids: Vec<SignalId>,
    capture_ids: Vec<Vec<SignalId>>,
}

impl Shared {
    /// Capture positions for each rule that has named captures, reused line after
    /// line so matching allocates nothing.
    fn capture_slots(&self) -> Vec<Option<regex::CaptureLocations>> {
        self.cfg
            .rules
            .iter()
            .map(|r| (!r.captures.is_empty()).then(|| r.regex.capture_locations()))
            .collect()
    }
}

/// Creates log drivers.
#[derive(Debug, Clone)]
pub struct LogFactory {
    shared: Arc<Shared>,
}

impl DriverFactory for LogFactory {
    fn kind(&self) -> &'static str {
        "log"
    }
    fn create(&self) -> Result<Box<dyn Driver>, DriverError> {
        Ok(Box::new(LogDriver {
            shared: self.shared.clone(),
        }))
    }
}

struct LogDriver {
    shared: Arc<Shared>,
}

impl Driver for LogDriver {
    fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<'static, Result<(), DriverError>> {
        Box::pin(run(self.shared, ctx))
    }
}

/// Applies every rule to one line. A rule without captures only asks whether the
/// line matches (the regex engine's fastest question); one with captures fills its
/// slot in `slots` (from [`Shared::capture_slots`]), so no line allocates.
fn apply_rules(
    sh: &Shared,
    line: &str,
    ts: edge_driver_api::Timestamp,
    counts: &mut [u64],
    slots: &mut [Option<regex::CaptureLocations>],
    batch: &mut Vec<Sample>,
) {
    for (ri, (rule, slot)) in sh.cfg.rules.iter().zip(slots.iter_mut()).enumerate() {
        let Some(locs) = slot else {
            if rule.regex.is_match(line) {
                counts[ri] += 1;
            }
            continue;
        };
        if rule.regex.captures_read(locs, line).is_none() {
            continue;
        }
        counts[ri] += 1;
        for (c, &id) in rule.captures.iter().zip(&sh.capture_ids[ri]) {
            if let Some((start, end)) = locs.get(c.group) {
                match line[start..end].trim().parse::<f64>() {
                    Ok(v) => batch.push(Sample::new_f64(ts, id, v)),
                    Err(_) => batch.push(Sample::bad(ts, id, BadReason::Decode)),
                }
            }
        }
    }
}

type JournalLines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>;

/// Starts `journalctl --follow` for the configured units.
fn open_journal(cfg: &LogConfig) -> std::io::Result<(tokio::process::Child, JournalLines)> {
    use tokio::io::AsyncBufReadExt;
    let mut cmd = tokio::process::Command::new(&cfg.journalctl);
    cmd.args(["--follow", "--lines=0", "--output=cat", "--no-pager"]);
    for u in &cfg.journal_units {
        cmd.arg(format!("--unit={u}"));
    }
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("journalctl without stdout"))?;
    Ok((child, tokio::io::BufReader::new(out).lines()))
}

async fn run(sh: Arc<Shared>, ctx: DriverContext) -> Result<(), DriverError> {
    let cfg = &sh.cfg;
    let mut files: Vec<Follower> = cfg
        .paths
        .iter()
        .map(|p| Follower::new(p.clone(), cfg.from, MAX_LINE))
        .collect();
    let mut counts = vec![0u64; cfg.rules.len()];
    let mut slots = sh.capture_slots();
    let mut lines_total = 0u64;
    let mut batch: Vec<Sample> = Vec::with_capacity(256);
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut window_end = tokio::time::Instant::now() + cfg.window;
    let mut warned: Vec<bool> = vec![false; files.len()];
    // The systemd journal: a child process, retried every 30 s when it is missing.
    let mut journal: Option<(tokio::process::Child, JournalLines)> = None;
    let mut journal_retry = tokio::time::Instant::now();
    let mut journal_warned = false;
    loop {
        if !cfg.journal_units.is_empty()
            && journal.is_none()
            && tokio::time::Instant::now() >= journal_retry
        {
            match open_journal(cfg) {
                Ok(j) => {
                    journal = Some(j);
                    journal_warned = false;
                }
                Err(e) => {
                    if !std::mem::replace(&mut journal_warned, true) {
                        tracing::warn!(driver = ctx.name(), journalctl = %cfg.journalctl.display(), error = %e,
                            "systemd journal not available; following files only, retrying every 30 s");
                    }
                    journal_retry = tokio::time::Instant::now() + Duration::from_secs(30);
                }
            }
        }
        let journal_line = async {
            match journal.as_mut() {
                Some((_, lines)) => lines.next_line().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ctx.cancelled() => return Ok(()),
            _ = tick.tick() => {}
            l = journal_line => {
                match l {
                    Ok(Some(line)) => {
                        lines_total += 1;
                        batch.clear();
                        let ts = ctx.clock().now();
                        let mut cut = line.len().min(MAX_LINE);
                        while !line.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        apply_rules(&sh, &line[..cut], ts, &mut counts, &mut slots, &mut batch);
                        if !batch.is_empty() && ctx.send(&batch).await.is_err() {
                            return Ok(());
                        }
                    }
                    _ => {
                        tracing::warn!(driver = ctx.name(), "journalctl ended; restarting it in 30 s");
                        journal = None;
                        journal_retry = tokio::time::Instant::now() + Duration::from_secs(30);
                    }
                }
                continue;
            }
        }
        batch.clear();
        let ts = ctx.clock().now();
        for (fi, f) in files.iter_mut().enumerate() {
            let res = f.poll(BUDGET, &mut |line| {
                lines_total += 1;
                apply_rules(&sh, line, ts, &mut counts, &mut slots, &mut batch);
            });
            match res {
                Ok(()) => warned[fi] = false,
                Err(e) => {
                    // An unreadable file (permissions, I/O) is logged once per
                    // episode and retried; the other files go on.
                    if !std::mem::replace(&mut warned[fi], true) {
                        tracing::warn!(driver = ctx.name(), path = %f.path().display(), error = %e, "cannot read log file; retrying");
                    }
                }
            }
        }
        let now = tokio::time::Instant::now();
        if now >= window_end {
            let rotations: u64 = files.iter().map(|f| f.rotations + f.truncations).sum();
            for (c, id) in counts.iter_mut().zip(&sh.count_ids) {
                batch.push(Sample::new_f64(ts, *id, *c as f64));
                *c = 0;
            }
            batch.push(Sample::new_f64(ts, sh.lines_id, lines_total as f64));
            batch.push(Sample::new_f64(ts, sh.rotations_id, rotations as f64));
            while window_end <= now {
                window_end += cfg.window;
            }
        }
        if !batch.is_empty() && ctx.send(&batch).await.is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_driver_api::testing::{parse_section, registry};

    fn shared(rules: &str) -> (Shared, SignalRegistry) {
        let src = format!("paths = [\"/nonexistent/x.log\"]\n{rules}");
        let cfg = parse_section(&src, |r| LogConfig::parse(r, "app"));
        let reg = registry(cfg.signals(), "app");
        let f = cfg.into_factory(&reg).expect("factory");
        let sh = Arc::try_unwrap(f.shared).expect("only handle");
        (sh, reg)
    }

    #[test]
    fn captures_are_read_by_group_not_by_position_among_names() {
        // An unnamed group between the named ones, and a named group that does not
        // take part in every match.
        let (sh, reg) = shared(
            r#"
[[rules]]
name = "xfer"
regex = 'took (?P<ms>\d+)ms( \(retry (?P<tries>\d+)\))?'
[[rules]]
name = "err"
regex = 'ERROR'
"#,
        );
        let mut counts = vec![0; 2];
        let mut slots = sh.capture_slots();
        let mut batch = Vec::new();
        let ts = edge_driver_api::Timestamp::default();
        for line in ["took 12ms", "ERROR took 40ms (retry 3)", "nothing here"] {
            apply_rules(&sh, line, ts, &mut counts, &mut slots, &mut batch);
        }
        assert_eq!(counts, [2, 1]);
        let ms = reg.get("app.xfer.ms").expect("ms");
        let tries = reg.get("app.xfer.tries").expect("tries");
        let got: Vec<(SignalId, f64)> =
            batch.iter().map(|s| (s.signal, s.value.as_f64())).collect();
        assert_eq!(got, [(ms, 12.0), (ms, 40.0), (tries, 3.0)]);
    }
}
