//! Remote operations (`[commands]`): the table of what each operation does, the
//! health gate of `config_update` and `restart`, and their rollback.
//!
//! * `config_update`: the new TOML is checked exactly as `check-config` does
//!   (every error at `file:line:col` in the failure's reason), the running file is
//!   kept as `<file>.previous`, the new one written atomically (tmp, fsync,
//!   rename), then applied live when the reload can (drivers, assets, models) or
//!   by a restart otherwise. Either way the agent must come back **healthy**
//!   within `health_window`: every driver running, the pipeline moving and the
//!   uplink connected. If it does not, the previous file is restored and applied
//!   (live, or by another restart) and the command fails with what was unhealthy.
//! * `restart`: a clean stop (journal flushed), then the same binary is executed
//!   again with the same arguments (same PID: systemd keeps following it); the
//!   command succeeds once the new process is healthy.
//! * Across a restart the command is kept in `<file>.command.json` (its id, what
//!   was done, whether it was rolled back); the new process finishes it. A new
//!   configuration that cannot even start the agent is rolled back before the
//!   agent gives up ([`recover_start`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::reload::ConfigReloader;
use crate::config;
use crate::inbound::commands::{Command, Handler, OpResult, Operation, Operations};
use crate::inbound::{WriteOrder, WriteSource, Writes};
use crate::ops::status::StatusSource;
use crate::state_file::{sidecar, write_atomic};
use edge_models::onnx::manifest::sha256_hex;

/// A command that a restart interrupts, finished by the next process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub op: Operation,
    pub id: String,
    /// `applied` (the new file is in place) or `rolled_back` (the previous one is).
    pub stage: String,
    /// Why it was rolled back.
    pub reason: Option<String>,
    /// Processes started for it (a crash loop during the health gate rolls back).
    pub starts: u32,
}

/// Where a command waits across a restart: beside the configuration file.
pub fn pending_path(config_file: &Path) -> PathBuf {
    sidecar(config_file, ".command.json")
}

fn previous_path(config_file: &Path) -> PathBuf {
    sidecar(config_file, ".previous")
}

pub fn read_pending(config_file: &Path) -> Option<Pending> {
    let text = std::fs::read_to_string(pending_path(config_file)).ok()?;
    serde_json::from_str(&text).ok()
}

fn save_pending(config_file: &Path, p: &Pending) -> std::io::Result<()> {
    let body = serde_json::to_vec(p).map_err(std::io::Error::other)?;
    write_atomic(&pending_path(config_file), &body)
}

fn clear_pending(config_file: &Path) {
    let _ = std::fs::remove_file(pending_path(config_file));
}

/// Puts the previous configuration back; the reason is kept for the report.
fn roll_back(config_file: &Path, p: &mut Pending, reason: String) -> std::io::Result<()> {
    std::fs::rename(previous_path(config_file), config_file)?;
    p.stage = "rolled_back".into();
    p.reason = Some(reason);
    save_pending(config_file, p)
}

/// Called when the agent cannot start with its configuration file: if a
/// `config_update` put that file there, the previous one is restored and `true`
/// says to try again.
pub fn recover_start(config_file: &Path, error: &str) -> bool {
    let Some(mut p) = read_pending(config_file) else {
        return false;
    };
    if p.op != Operation::ConfigUpdate || p.stage != "applied" {
        return false;
    }
    let reason = format!("the agent could not start with the new configuration: {error}");
    tracing::error!("{reason}; rolling back to the previous configuration");
    roll_back(config_file, &mut p, reason).is_ok()
}

/// What the operations need of the running agent.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // handles of the running agent
pub struct Parts {
    /// The configuration file (`None`: the built-in demo configuration).
    pub file: Option<PathBuf>,
    pub reloader: ConfigReloader,
    pub source: StatusSource,
    pub writes: Arc<Writes>,
    pub health_window: Duration,
    /// Set before the agent stops to be executed again.
    pub restart: Arc<AtomicBool>,
    pub shutdown: CancellationToken,
}

/// Why the agent is not healthy now (`pipeline_before`: the samples the pipeline
/// had processed when the check started; `restarts_before`: each driver's
/// restarts at the previous look, which a driver that failed since has moved).
/// Also each driver's restarts now.
fn unhealthy(
    source: &StatusSource,
    pipeline_before: u64,
    restarts_before: &[(String, u64)],
) -> (Option<String>, Vec<(String, u64)>) {
    let s = source.snapshot();
    let mut why = Vec::new();
    for d in &s.drivers {
        let err = d.last_error.as_deref().unwrap_or("");
        let restarted = restarts_before
            .iter()
            .any(|(n, r)| *n == d.name && *r != d.restarts);
        if d.state != "running" {
            why.push(
                format!("driver {} is {} {err}", d.name, d.state)
                    .trim_end()
                    .to_string(),
            );
        } else if restarted {
            why.push(format!("driver {} failed and restarted", d.name));
        }
    }
    if s.pipeline.counts.samples <= pipeline_before {
        why.push("the pipeline processed no samples".into());
    }
    if s.uplink.as_ref().is_some_and(|u| !u.connected) {
        why.push("the uplink is not connected".into());
    }
    let restarts = s
        .drivers
        .iter()
        .map(|d| (d.name.clone(), d.restarts))
        .collect();
    ((!why.is_empty()).then(|| why.join("; ")), restarts)
}

/// Waits up to `window` for the agent to be healthy — every driver running
/// without a failure, the pipeline moving and the uplink connected, at every
/// look (4 a second) for a stable stretch (a third of the window, at most 2 s):
/// a driver that keeps failing is `running` for a moment at each attempt, and
/// one look must not take that for health. Why not, if it never was.
async fn health_gate(source: &StatusSource, window: Duration) -> Result<Duration, String> {
    let stable = (window / 3).min(Duration::from_secs(2));
    let before = source.snapshot().pipeline.counts.samples;
    let start = tokio::time::Instant::now();
    let mut last = String::new();
    let mut since: Option<tokio::time::Instant> = None;
    let mut restarts = Vec::new();
    while start.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (why, now) = unhealthy(source, before, &restarts);
        restarts = now;
        match why {
            Some(w) => {
                last = w;
                since = None;
            }
            None => {
                let from = *since.get_or_insert_with(tokio::time::Instant::now);
                if from.elapsed() >= stable {
                    return Ok(start.elapsed());
                }
            }
        }
    }
    if last.is_empty() {
        last = format!("it was never healthy for {stable:?} in a row");
    }
    Err(format!("not healthy within {window:?}: {last}"))
}

fn handler<F, Fut>(parts: &Arc<Parts>, f: F) -> Handler
where
    F: Fn(Arc<Parts>, Command) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = OpResult> + Send + 'static,
{
    let parts = parts.clone();
    let f = Arc::new(f);
    Arc::new(move |cmd| {
        let (parts, f) = (parts.clone(), f.clone());
        Box::pin(async move { f(parts, cmd).await })
    })
}

/// The table of operations.
pub fn operations(parts: Parts, labels: Option<Handler>) -> Operations {
    let parts = Arc::new(parts);
    let mut t = Operations::default();
    t.0.insert(
        Operation::ConfigSnapshot,
        handler(&parts, |p, _| async move { snapshot(&p) }),
    );
    t.0.insert(
        Operation::ConfigUpdate,
        handler(&parts, |p, c| async move { update(&p, c).await }),
    );
    t.0.insert(
        Operation::Restart,
        handler(&parts, |p, c| async move { restart(&p, c) }),
    );
    t.0.insert(
        Operation::Write,
        handler(&parts, |p, c| async move { write(&p, c).await }),
    );
    let models = parts.source.models.clone();
    t.0.insert(Operation::ModelDeploy, {
        let m = models.clone();
        Arc::new(move |c| Box::pin(super::deploy::deploy(m.clone(), c)))
    });
    t.0.insert(
        Operation::ModelRollback,
        Arc::new(move |c| Box::pin(super::deploy::rollback(models.clone(), c))),
    );
    t.0.insert(
        Operation::LogUpload,
        handler(&parts, |_, c| async move { log_upload(&c) }),
    );
    let labels = labels.unwrap_or_else(|| {
        Arc::new(|_| {
            Box::pin(async {
                Err(
                    "labels are off on this agent: add a [labels] section to its configuration"
                        .into(),
                )
            })
        })
    });
    t.0.insert(Operation::AlertLabel, labels);
    t
}

/// `alert_label`: `{"alert_id", "verdict": "true"|"false"|"unsure", "note"}`.
pub fn label_handler(labeller: Arc<crate::delivery::labels::Labeller>) -> Handler {
    Arc::new(move |c: Command| {
        let labeller = labeller.clone();
        Box::pin(async move {
            use crate::delivery::labels::Verdict;
            let id = c.args["alert_id"]
                .as_str()
                .ok_or("`args.alert_id` is missing")?;
            let verdict = c.args["verdict"].as_str().and_then(Verdict::parse).ok_or(
                "`args.verdict` must be \"true\" (a real problem), \"false\" (a false alarm) or \"unsure\"",
            )?;
            let note = c.args["note"].as_str().unwrap_or("");
            let label = labeller.label(id, verdict, note)?;
            Ok(Some(
                serde_json::to_value(&label).map_err(|e| e.to_string())?,
            ))
        })
    })
}

/// The most a `log_upload` result holds (it travels as one MQTT message).
const LOG_UPLOAD_MAX: usize = 512 * 1024;

/// `log_upload`: `{"lines": N, "since_s": S}` or `{"from_ms", "to_ms"}` (Unix
/// milliseconds), all optional: the last 200 lines by default.
fn log_upload(c: &Command) -> OpResult {
    let ring = crate::ops::logging::log_ring().ok_or(
        "no log lines are kept: this agent was not started by `edge-agent run` with log_upload allowed",
    )?;
    let n = c.args["lines"].as_u64().unwrap_or(200) as usize;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let from = match (c.args["since_s"].as_f64(), c.args["from_ms"].as_i64()) {
        (Some(s), _) => now - (s * 1e3) as i64,
        (None, Some(f)) => f,
        (None, None) => i64::MIN,
    };
    let to = c.args["to_ms"].as_i64().unwrap_or(i64::MAX);
    let mut lines = ring.range(n, from, to);
    let mut size: usize = lines.iter().map(|l| l.len() + 4).sum();
    let mut cut = 0;
    while size > LOG_UPLOAD_MAX && !lines.is_empty() {
        size -= lines.remove(0).len() + 4;
        cut += 1;
    }
    Ok(Some(
        json!({"lines": lines, "cut_to_fit": cut, "dropped_since_start": ring.dropped()}),
    ))
}

fn file_of(p: &Parts) -> Result<&Path, String> {
    p.file
        .as_deref()
        .ok_or_else(|| "the agent runs its built-in configuration: there is no file".to_string())
}

/// `config_snapshot`: the running file, its hash.
fn snapshot(p: &Parts) -> OpResult {
    let file = file_of(p)?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    Ok(Some(json!({
        "file": file.display().to_string(),
        "sha256": sha256_hex(text.as_bytes()),
        "toml": text,
    })))
}

/// `write`: `{"signal", "value"}`.
async fn write(p: &Parts, c: Command) -> OpResult {
    let signal = c.args["signal"]
        .as_str()
        .ok_or("`args.signal` (a string) is missing")?;
    let value = match &c.args["value"] {
        Value::Bool(b) => f64::from(u8::from(*b)),
        v => v
            .as_f64()
            .ok_or("`args.value` (a number or boolean) is missing")?,
    };
    let order = WriteOrder {
        signal: signal.to_string(),
        value,
        source: WriteSource::Command,
        by: format!(
            "command {} ({})",
            c.id,
            c.key.as_deref().unwrap_or("unsigned")
        ),
    };
    let report = p.writes.write(order).await;
    let doc = serde_json::to_value(&report).map_err(|e| e.to_string())?;
    match report.is_successful() {
        true => Ok(Some(doc)),
        false => Err(format!(
            "{}: {}",
            report.result,
            report.reason.unwrap_or_default()
        )),
    }
}

/// `restart`: finished by the next process once it is healthy.
fn restart(p: &Parts, c: Command) -> OpResult {
    let file = file_of(p)?;
    let pending = Pending {
        op: Operation::Restart,
        id: c.id,
        stage: "applied".into(),
        reason: None,
        starts: 0,
    };
    save_pending(file, &pending)
        .map_err(|e| format!("cannot keep the command across the restart: {e}"))?;
    request_restart(p);
    Ok(None)
}

fn request_restart(p: &Parts) {
    tracing::warn!("restarting on a remote command");
    p.restart.store(true, Ordering::SeqCst);
    p.shutdown.cancel();
}

/// `config_update`: `{"toml": "...", "sha256": "<of the file it replaces>"}`.
async fn update(p: &Parts, c: Command) -> OpResult {
    let file = file_of(p)?;
    let text = c.args["toml"]
        .as_str()
        .ok_or("`args.toml` (the new file, as a string) is missing")?;
    let current =
        std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    if let Some(expect) = c.args["sha256"].as_str()
        && expect != sha256_hex(&current)
    {
        return Err(format!(
            "the running file changed since it was read (sha256 {} is not {expect}); take a new config_snapshot",
            sha256_hex(&current)
        ));
    }
    let name = file.display().to_string();
    let new = config::parse(&name, text).map_err(|e| {
        format!(
            "the new configuration is invalid ({} errors):\n{}",
            e.diagnostics.len(),
            e.rendered
        )
    })?;
    write_atomic(&previous_path(file), &current)
        .map_err(|e| format!("cannot keep the previous file: {e}"))?;
    write_atomic(file, text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    let sha = sha256_hex(text.as_bytes());
    match p.reloader.apply(new).await {
        Ok(r) => {
            tracing::info!(restarted = ?r.restarted, "remote configuration applied live");
            live_gate(p, file, &sha).await
        }
        Err(why) => {
            tracing::info!(reason = %why, "the new configuration needs a restart");
            let pending = Pending {
                op: Operation::ConfigUpdate,
                id: c.id,
                stage: "applied".into(),
                reason: None,
                starts: 0,
            };
            save_pending(file, &pending)
                .map_err(|e| format!("cannot keep the command across the restart: {e}"))?;
            request_restart(p);
            Ok(None)
        }
    }
}

/// After a live reload: healthy within the window, or the previous file back.
async fn live_gate(p: &Parts, file: &Path, sha: &str) -> OpResult {
    match health_gate(&p.source, p.health_window).await {
        Ok(after) => Ok(Some(
            json!({"applied": "reload", "sha256": sha, "healthy_after_s": after.as_secs_f64()}),
        )),
        Err(why) => {
            std::fs::rename(previous_path(file), file)
                .map_err(|e| format!("{why}; and the rollback failed: {e}"))?;
            let back = config::load_file(file).map_err(|e| {
                format!("{why}; the previous file no longer loads:\n{}", e.rendered)
            })?;
            match p.reloader.apply(back).await {
                Ok(_) => Err(format!("{why}; rolled back to the previous configuration")),
                Err(e) => Err(format!(
                    "{why}; the previous file is back in place but could not be applied live ({e}): restart the agent"
                )),
            }
        }
    }
}

/// In a process started for a pending command: finish it. `report` publishes
/// the command's final status.
pub async fn resume(p: Parts, report: impl Fn(Operation, &str, Result<Value, String>)) {
    let Some(file) = p.file.clone() else { return };
    let Some(mut pending) = read_pending(&file) else {
        return;
    };
    pending.starts += 1;
    let _ = save_pending(&file, &pending);
    let gate = health_gate(&p.source, p.health_window).await;
    let rolled_back = pending.stage == "rolled_back";
    let outcome = match (&gate, pending.op, rolled_back) {
        (_, _, true) => Err(format!(
            "{}; rolled back to the previous configuration",
            pending.reason.clone().unwrap_or_default()
        )),
        (Ok(after), Operation::ConfigUpdate, false) => {
            let sha = std::fs::read(&file)
                .map(|b| sha256_hex(&b))
                .unwrap_or_default();
            Ok(json!({"applied": "restart", "sha256": sha, "healthy_after_s": after.as_secs_f64()}))
        }
        (Ok(after), _, false) => Ok(json!({"healthy_after_s": after.as_secs_f64()})),
        (Err(why), Operation::ConfigUpdate, false) => {
            // Back to the previous file, by another restart.
            if roll_back(&file, &mut pending, why.clone()).is_ok() {
                request_restart(&p);
                return;
            }
            Err(format!("{why}; the rollback failed"))
        }
        (Err(why), _, false) => Err(why.clone()),
    };
    clear_pending(&file);
    report(pending.op, &pending.id, outcome);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_that_fails_after_an_update_puts_the_previous_file_back() {
        let dir = std::env::temp_dir().join(format!("edge-remote-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("agent.toml");
        std::fs::write(&file, "new").expect("write");
        std::fs::write(previous_path(&file), "old").expect("write");
        assert!(
            !recover_start(&file, "boom"),
            "nothing pending: nothing to do"
        );
        let p = Pending {
            op: Operation::ConfigUpdate,
            id: "u1".into(),
            stage: "applied".into(),
            reason: None,
            starts: 1,
        };
        save_pending(&file, &p).expect("saved");
        assert!(recover_start(&file, "cannot open the journal"));
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "old");
        let after = read_pending(&file).expect("kept");
        assert_eq!(after.stage, "rolled_back");
        assert!(
            after
                .reason
                .as_deref()
                .unwrap_or("")
                .contains("cannot open the journal")
        );
        assert!(!recover_start(&file, "again"), "rolled back once only");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
