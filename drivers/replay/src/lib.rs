//! `replay`: plays recorded history as live signals, so a recording (or an `eval`
//! scenario's `signals.csv`) can be watched in the running agent: its windows,
//! detectors, models, alerts and web UI.
//!
//! ```toml
//! [[drivers]]
//! name = "history"
//! kind = "replay"
//! path = "/var/lib/edge-agent/pump-march.csv"   # or .jsonl / .ndjson
//! speed = 60.0     # recorded seconds per real second (default 1.0: real time)
//! loop = false     # start again after the last row (default false)
//! ```
//!
//! The file ([`table`]): CSV with a header `time,<signal>,...` (an empty cell is no
//! sample), or JSON lines `{"time": ..., "<signal>": ..., ...}` (`null` or absent:
//! no sample); `time` in seconds or RFC 3339. Each column is a signal named as in
//! the header. The file is read and checked when the configuration is (errors at
//! its `file:line:col`), and held in memory.
//!
//! Samples keep the recording's spacing on the agent's clock: row `t` is stamped
//! `start + t` and sent when `start + t / speed` comes (like the `sim` driver, a
//! replay faster than real time stamps ahead of the clock, so windows of "5m" hold
//! five recorded minutes). A restarted driver resumes where the replay stands; at
//! the end it stops producing (its tags go stale), or with `loop` starts again one
//! row spacing later.

pub mod table;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use edge_driver_api::config::{Span, TableReader};
use edge_driver_api::{
    BoxFuture, Driver, DriverContext, DriverError, DriverFactory, Sample, SignalDecl, SignalId,
    SignalRegistry,
};

pub use table::Table;

/// Largest batch handed to the sink in one call.
const MAX_BATCH: usize = 4096;

/// Validated `replay` driver configuration, with the file's table.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayConfig {
    pub path: PathBuf,
    pub speed: f64,
    pub looped: bool,
    pub table: Arc<Table>,
    span: Span,
}

impl ReplayConfig {
    /// Reads the driver-specific keys of a `[[drivers]]` table of kind `replay`,
    /// and the file they name.
    pub fn parse(r: &mut TableReader<'_>) -> Option<ReplayConfig> {
        let speed = r.f64_in("speed", 1e-3, 1e9).map_or(1.0, |s| s.value);
        let looped = r.bool("loop").is_some_and(|b| b.value);
        let path = r.req_string("path")?;
        let table = match table::read(std::path::Path::new(&path.value)) {
            Ok(t) => t,
            Err(errors) => {
                r.error(
                    path.span,
                    "path",
                    format!("the replay file is not usable:\n  {}", errors.join("\n  ")),
                )
                .hint(
                    "a CSV with the header time,<signal>,... (or JSON lines with \"time\"); \
                     a relative path is relative to the agent's working directory",
                )
                .emit();
                return None;
            }
        };
        Some(ReplayConfig {
            path: path.value.into(),
            speed,
            looped,
            table: Arc::new(table),
            span: r.span(),
        })
    }

    /// One signal per column of the file.
    pub fn signals(&self) -> Vec<SignalDecl> {
        let file = self.path.display();
        self.table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| SignalDecl {
                name: c.clone(),
                unit: None,
                span: self.span,
                text: false,
                address: Some(format!("{file} column {}", i + 2)),
            })
            .collect()
    }

    /// Builds the factory once all signals are interned.
    pub fn into_factory(self, registry: &SignalRegistry) -> Result<ReplayFactory, DriverError> {
        let ids = self
            .table
            .columns
            .iter()
            .map(|c| {
                registry
                    .get(c)
                    .ok_or_else(|| DriverError::config(format!("signal `{c}` was not registered")))
            })
            .collect::<Result<Vec<SignalId>, _>>()?;
        Ok(ReplayFactory {
            shared: Arc::new(Shared {
                table: self.table,
                ids,
                speed: self.speed,
                looped: self.looped,
                origin_ns: OnceLock::new(),
            }),
        })
    }
}

#[derive(Debug)]
struct Shared {
    table: Arc<Table>,
    ids: Vec<SignalId>,
    speed: f64,
    looped: bool,
    /// The agent-monotonic time of the recording's first row (set on first run).
    origin_ns: OnceLock<u64>,
}

impl Shared {
    /// Recorded seconds from one lap's first row to the next lap's: the duration
    /// plus the last row spacing (1 s for a single row).
    fn lap_s(&self) -> f64 {
        let t = &self.table.times;
        let gap = match t.len() {
            0 | 1 => 1.0,
            n => (t[n - 1] - t[n - 2]).max(1e-3),
        };
        self.table.duration_s() + gap
    }

    /// The recorded time of row `row` of lap `lap`.
    fn at(&self, lap: u64, row: usize) -> f64 {
        lap as f64 * self.lap_s() + self.table.times[row]
    }

    /// The first (lap, row) whose recorded time is at or after `t`.
    fn position(&self, t: f64) -> Option<(u64, usize)> {
        let lap_s = self.lap_s();
        let lap = if self.looped {
            (t / lap_s).floor().max(0.0) as u64
        } else {
            0
        };
        let within = t - lap as f64 * lap_s;
        let row = self.table.times.partition_point(|&x| x < within);
        if row < self.table.rows() {
            Some((lap, row))
        } else if self.looped {
            Some((lap + 1, 0))
        } else {
            None
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReplayFactory {
    shared: Arc<Shared>,
}

impl DriverFactory for ReplayFactory {
    fn kind(&self) -> &'static str {
        "replay"
    }

    fn create(&self) -> Result<Box<dyn Driver>, DriverError> {
        Ok(Box::new(ReplayDriver {
            shared: self.shared.clone(),
        }))
    }
}

struct ReplayDriver {
    shared: Arc<Shared>,
}

impl Driver for ReplayDriver {
    fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<'static, Result<(), DriverError>> {
        Box::pin(run(self.shared, ctx))
    }
}

async fn run(shared: Arc<Shared>, ctx: DriverContext) -> Result<(), DriverError> {
    let clock = ctx.clock().clone();
    let origin = *shared.origin_ns.get_or_init(|| clock.mono_ns());
    let speed = shared.speed;
    // Recorded seconds → the monotonic instant the row is due, and its stamp.
    let due = |t: f64| origin + (t / speed * 1e9) as u64;
    let stamp_ns = |t: f64| origin + (t * 1e9) as u64;
    let now_t = clock.mono_ns().saturating_sub(origin) as f64 * 1e-9 * speed;
    let Some((mut lap, mut row)) = shared.position(now_t) else {
        return idle(&ctx).await;
    };
    let cols = shared.ids.len();
    let mut batch: Vec<Sample> = Vec::with_capacity(MAX_BATCH);
    loop {
        let t = shared.at(lap, row);
        let due_ns = due(t);
        if due_ns > clock.mono_ns() {
            if !batch.is_empty() && ctx.send(&batch).await.is_err() {
                return Ok(());
            }
            batch.clear();
            tokio::select! {
                biased;
                _ = ctx.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(clock.instant_at(due_ns)) => {}
            }
        }
        let anchor = clock.anchor();
        let ts = anchor.at(stamp_ns(t));
        for (c, &id) in shared.ids.iter().enumerate() {
            if let Some(v) = shared.table.values[row * cols + c] {
                batch.push(Sample::new_f64(ts, id, v));
            }
        }
        if batch.len() + cols > MAX_BATCH {
            if ctx.send(&batch).await.is_err() {
                return Ok(());
            }
            batch.clear();
            if ctx.is_cancelled() {
                return Ok(());
            }
            tokio::task::yield_now().await;
        }
        row += 1;
        if row == shared.table.rows() {
            if !shared.looped {
                if !batch.is_empty() && ctx.send(&batch).await.is_err() {
                    return Ok(());
                }
                tracing::info!(driver = ctx.name(), "replay finished; its signals go stale");
                return idle(&ctx).await;
            }
            lap += 1;
            row = 0;
        }
    }
}

/// Waits for the end: a finished replay produces nothing more (returning would
/// have the supervisor start it again).
async fn idle(ctx: &DriverContext) -> Result<(), DriverError> {
    loop {
        tokio::select! {
            _ = ctx.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

#[cfg(test)]
mod tests;
