//! Remote operations over MQTT (`[commands]`): requests on
//! `{prefix}/{agent}/cmd/{op}/{id}`, statuses on `.../{id}/status`.
//!
//! * **Off unless enabled**, and only the operations of the allow-list.
//! * **Signed**: a request may (with `require_signature`, must) carry an Ed25519
//!   signature by one of the configured public keys over `topic + "\n" +
//!   request`, where `request` is the exact JSON text `{"ts": ms, "args": {...}}`
//!   sent as a string: `{"key": "central", "sig": "<base64>", "request": "..."}`.
//!   Signing the topic binds the signature to this agent, operation and id; the
//!   timestamp must lie within `replay_window` of the agent's clock, and an id
//!   seen within the window is refused (the ids are kept on disk, so a restart
//!   does not reopen the window). Unsigned requests are the bare `{"ts", "args"}`.
//! * **Statuses**: `rejected` (never acted on: malformed, not allowed, unsigned,
//!   a bad signature, replayed, stale) or `accepted` → `executing` →
//!   `successful` | `failed`, each with a reason when not successful and the
//!   operation's `result`. They travel through the journal's event lane like
//!   events (at least once, in order), to the request's topic + `/status`.
//! * **Audit**: every request, accepted or not, is an audit event
//!   (`events/audit`, `type = "command"`).
//! * Operations run one at a time, in arrival order, from the table the
//!   composition root builds ([`Operations`]): this module knows how to check
//!   and report a command, not what it does.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use edge_driver_api::{BoxFuture, Clock};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::alert::AlertTime;

/// The operations a gateway can run remotely.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    ConfigSnapshot,
    ConfigUpdate,
    Restart,
    Write,
    AlertLabel,
    LogUpload,
    ModelDeploy,
    ModelRollback,
}

impl Operation {
    pub const ALL: [Operation; 8] = [
        Operation::ConfigSnapshot,
        Operation::ConfigUpdate,
        Operation::Restart,
        Operation::Write,
        Operation::AlertLabel,
        Operation::LogUpload,
        Operation::ModelDeploy,
        Operation::ModelRollback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::ConfigSnapshot => "config_snapshot",
            Operation::ConfigUpdate => "config_update",
            Operation::Restart => "restart",
            Operation::Write => "write",
            Operation::AlertLabel => "alert_label",
            Operation::LogUpload => "log_upload",
            Operation::ModelDeploy => "model_deploy",
            Operation::ModelRollback => "model_rollback",
        }
    }

    pub fn parse(s: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// `[commands]` settings (validated).
#[derive(Clone, Debug, PartialEq)]
pub struct CommandsConfig {
    /// The allow-list.
    pub operations: Vec<Operation>,
    pub require_signature: bool,
    /// Named Ed25519 public keys (32 bytes each).
    pub keys: Vec<(String, [u8; 32])>,
    pub replay_window: Duration,
    /// How long `config_update` and `restart` give the agent to come back healthy.
    pub health_window: Duration,
    /// Log lines kept in memory for `log_upload`.
    pub log_lines: usize,
}

/// A request as it arrived: its topic and payload.
pub type Incoming = (String, Vec<u8>);

/// A checked request, ready to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    pub op: Operation,
    pub id: String,
    pub args: Value,
    /// The key that signed it, if any.
    pub key: Option<String>,
    pub ts_ms: i64,
}

/// Why a request was rejected (never acted on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub op: String,
    pub id: String,
    pub reason: String,
    pub key: Option<String>,
}

/// A status of one command.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    pub v: u32,
    pub agent_id: String,
    pub op: String,
    pub id: String,
    /// `rejected`, `accepted`, `executing`, `successful`, `failed`.
    pub status: String,
    pub reason: Option<String>,
    pub result: Option<Value>,
    pub time: AlertTime,
}

/// What an operation returns: its result, or why it failed. `Ok(None)`: the
/// operation continues in the next process (a restart), which reports it.
pub type OpResult = Result<Option<Value>, String>;

/// One operation's implementation.
pub type Handler = Arc<dyn Fn(Command) -> BoxFuture<'static, OpResult> + Send + Sync>;

/// The table of operations this agent can run (the composition root fills it).
#[derive(Clone, Default)]
pub struct Operations(pub HashMap<Operation, Handler>);

impl std::fmt::Debug for Operations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// Where statuses and audit events go: `(source, body)` onto the events lane
/// (source `#cmd/{op}/{id}/status` for a status, `audit` for the audit event).
pub type Emit = Arc<dyn Fn(String, Vec<u8>) + Send + Sync>;

/// Requests by what became of them.
#[derive(Debug, Default)]
pub struct CommandCounters {
    pub rejected: AtomicU64,
    pub successful: AtomicU64,
    pub failed: AtomicU64,
}

/// The largest request taken: a config file fits many times over; a model file
/// larger than ~3 MB goes in parts (`model_deploy`).
pub const MAX_REQUEST: usize = 4 << 20;

/// Ids seen within the replay window, kept on disk across restarts.
#[derive(Debug)]
pub struct ReplayGuard {
    path: Option<PathBuf>,
    seen: VecDeque<(i64, String)>,
    window_ms: i64,
}

impl ReplayGuard {
    /// `path`: where the ids are kept (`None`: memory only).
    pub fn open(path: Option<PathBuf>, window: Duration) -> ReplayGuard {
        let seen = path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str::<VecDeque<(i64, String)>>(&t).ok())
            .unwrap_or_default();
        ReplayGuard {
            path,
            seen,
            window_ms: window.as_millis() as i64,
        }
    }

    /// Refuses a stale or future `ts`, or an `id` already seen; records it.
    pub fn check(&mut self, id: &str, ts_ms: i64, now_ms: i64) -> Result<(), String> {
        if (now_ms - ts_ms).abs() > self.window_ms {
            return Err(format!(
                "its timestamp is {:.0} s from the agent's clock, outside the replay window of {} s (check both clocks)",
                (now_ms - ts_ms) as f64 / 1e3,
                self.window_ms / 1000
            ));
        }
        while self
            .seen
            .front()
            .is_some_and(|(t, _)| now_ms - t > 2 * self.window_ms)
        {
            self.seen.pop_front();
        }
        if self.seen.iter().any(|(_, s)| s == id) {
            return Err(format!("command id `{id}` was already received (a replay)"));
        }
        self.seen.push_back((ts_ms.max(now_ms), id.to_string()));
        if self.seen.len() > 10_000 {
            self.seen.pop_front();
        }
        self.save();
        Ok(())
    }

    fn save(&self) {
        let Some(p) = &self.path else { return };
        let ok = serde_json::to_vec(&self.seen)
            .ok()
            .is_some_and(|b| crate::state_file::write_atomic(p, &b).is_ok());
        if !ok {
            tracing::warn!(path = %p.display(), "cannot keep the seen command ids on disk; a restart forgets them");
        }
    }
}

/// Checks requests: topic, allow-list, signature, replay.
#[derive(Debug)]
pub struct Gate {
    cfg: CommandsConfig,
    /// `{prefix}/{agent}/cmd/`.
    base: String,
    replay: ReplayGuard,
}

/// A signed request's envelope.
#[derive(Deserialize)]
struct Signed {
    key: String,
    sig: String,
    request: String,
}

/// The request itself.
#[derive(Deserialize)]
struct Request {
    ts: i64,
    #[serde(default)]
    args: Value,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Gate {
    pub fn new(cfg: CommandsConfig, prefix: &str, agent_id: &str, replay: ReplayGuard) -> Gate {
        Gate {
            cfg,
            base: format!("{prefix}/{agent_id}/cmd/"),
            replay,
        }
    }

    /// Where requests arrive: `{prefix}/{agent}/cmd/`, then `{op}/{id}`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Checks one request (`now_ms`: the agent's wall clock).
    pub fn check(&mut self, topic: &str, payload: &[u8], now_ms: i64) -> Result<Command, Rejected> {
        let rest = topic.strip_prefix(&self.base).unwrap_or("");
        let (op_name, id) = rest.split_once('/').unwrap_or((rest, ""));
        let reject = |reason: String, key: Option<String>| Rejected {
            op: op_name.to_string(),
            id: id.to_string(),
            reason,
            key,
        };
        if !valid_id(id) {
            return Err(reject(
                "the command id (the topic's last level) must be 1-64 letters, digits, `-`, `_` or `.`".into(),
                None,
            ));
        }
        let Some(op) = Operation::parse(op_name) else {
            let known: Vec<&str> = Operation::ALL.iter().map(|o| o.as_str()).collect();
            return Err(reject(
                format!(
                    "unknown operation `{op_name}`; this agent knows {}",
                    known.join(", ")
                ),
                None,
            ));
        };
        if !self.cfg.operations.contains(&op) {
            return Err(reject(
                format!("`{op_name}` is not in this agent's [commands] operations"),
                None,
            ));
        }
        if payload.len() > MAX_REQUEST {
            return Err(reject(
                format!("the request is larger than {MAX_REQUEST} bytes"),
                None,
            ));
        }
        let (request, key) = self
            .authenticate(topic, payload)
            .map_err(|(r, k)| reject(r, k))?;
        let req: Request = serde_json::from_str(&request).map_err(|e| {
            reject(
                format!("the request is not {{\"ts\": ms, \"args\": {{...}}}}: {e}"),
                key.clone(),
            )
        })?;
        self.replay
            .check(id, req.ts, now_ms)
            .map_err(|r| reject(r, key.clone()))?;
        Ok(Command {
            op,
            id: id.to_string(),
            args: req.args,
            key,
            ts_ms: req.ts,
        })
    }

    /// The request text and the key that signed it; unsigned ones only when the
    /// configuration allows them.
    fn authenticate(
        &self,
        topic: &str,
        payload: &[u8],
    ) -> Result<(String, Option<String>), (String, Option<String>)> {
        let text = std::str::from_utf8(payload)
            .map_err(|_| ("the request is not UTF-8".to_string(), None))?;
        let doc: Value = serde_json::from_str(text)
            .map_err(|e| (format!("the request is not JSON: {e}"), None))?;
        if doc.get("sig").is_none() {
            if self.cfg.require_signature {
                return Err((
                    "unsigned: this agent requires an Ed25519 signature (`key`, `sig`, `request`)"
                        .into(),
                    None,
                ));
            }
            return Ok((text.to_string(), None));
        }
        let s: Signed = serde_json::from_value(doc).map_err(|e| {
            (
                format!("a signed request is {{\"key\", \"sig\", \"request\"}}: {e}"),
                None,
            )
        })?;
        let who = Some(s.key.clone());
        let Some((_, public)) = self.cfg.keys.iter().find(|(n, _)| *n == s.key) else {
            return Err((format!("unknown key `{}`", s.key), who));
        };
        let sig = base64::engine::general_purpose::STANDARD
            .decode(s.sig.trim())
            .map_err(|_| ("`sig` is not base64".to_string(), who.clone()))?;
        let signed = signing_input(topic, &s.request);
        let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public);
        key.verify(&signed, &sig).map_err(|_| {
            (
                format!("the signature does not verify with key `{}`", s.key),
                who.clone(),
            )
        })?;
        Ok((s.request, who))
    }

    pub fn config(&self) -> &CommandsConfig {
        &self.cfg
    }
}

/// What a signature covers: the topic (agent, operation, id) and the request text.
pub fn signing_input(topic: &str, request: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(topic.len() + 1 + request.len());
    m.extend_from_slice(topic.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(request.as_bytes());
    m
}

/// Publishes statuses and audit events of commands.
#[derive(Clone)]
pub struct Reporter {
    pub agent_id: Arc<str>,
    pub emit: Emit,
    pub clock: Clock,
    pub counters: Arc<CommandCounters>,
}

impl Reporter {
    fn status(
        &self,
        op: &str,
        id: &str,
        status: &str,
        reason: Option<String>,
        result: Option<Value>,
    ) {
        let doc = Status {
            v: 1,
            agent_id: self.agent_id.to_string(),
            op: op.to_string(),
            id: id.to_string(),
            status: status.to_string(),
            reason,
            result,
            time: AlertTime::at(self.clock.now()),
        };
        if let Ok(body) = serde_json::to_vec(&doc) {
            (self.emit)(format!("#cmd/{op}/{id}/status"), body);
        }
    }

    fn audit(&self, op: &str, id: &str, key: Option<&str>, result: &str, reason: Option<&str>) {
        let doc = serde_json::json!({
            "v": 1,
            "type": "command",
            "agent_id": &*self.agent_id,
            "op": op,
            "id": id,
            "key": key,
            "result": result,
            "reason": reason,
            "time": AlertTime::at(self.clock.now()),
        });
        if let Ok(body) = serde_json::to_vec(&doc) {
            (self.emit)("audit".into(), body);
        }
    }

    /// Reports the outcome of a command an earlier process started (a restart).
    pub fn report(&self, op: Operation, id: &str, outcome: Result<Value, String>) {
        self.finish(op.as_str(), id, None, outcome.map(Some));
    }

    fn finish(&self, op: &str, id: &str, key: Option<&str>, outcome: OpResult) {
        match outcome {
            Ok(None) => tracing::info!(op, id, "command continues after the restart"),
            Ok(Some(result)) => {
                self.counters.successful.fetch_add(1, Ordering::Relaxed);
                tracing::info!(op, id, "command successful");
                self.audit(op, id, key, "successful", None);
                self.status(op, id, "successful", None, Some(result));
            }
            Err(why) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(op, id, reason = %why, "command failed");
                self.audit(op, id, key, "failed", Some(&why));
                self.status(op, id, "failed", Some(why), None);
            }
        }
    }
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

/// Runs commands: checks each on arrival (`rejected` or `accepted` at once),
/// then executes them one at a time.
#[derive(Debug)]
pub struct Executor {
    pub gate: Gate,
    pub ops: Operations,
    pub reporter: Reporter,
}

impl Executor {
    /// Checks requests as they arrive and runs them in order until `stop`.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Incoming>, stop: CancellationToken) {
        let (queue_tx, mut queue) = mpsc::channel::<Command>(32);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                got = rx.recv() => {
                    let Some((topic, payload)) = got else { return };
                    self.arrive(&topic, &payload, &queue_tx);
                }
                Some(cmd) = queue.recv() => {
                    let op = cmd.op.as_str();
                    let (id, key) = (cmd.id.clone(), cmd.key.clone());
                    self.reporter.status(op, &id, "executing", None, None);
                    let outcome = match self.ops.0.get(&cmd.op) {
                        Some(h) => {
                            let h = h.clone();
                            // A panicking operation fails its command, not the agent.
                            match tokio::spawn(h(cmd)).await {
                                Ok(r) => r,
                                Err(e) => Err(format!("the operation failed unexpectedly: {e}")),
                            }
                        }
                        None => Err(format!("`{op}` is not available in this build")),
                    };
                    self.reporter.finish(op, &id, key.as_deref(), outcome);
                }
            }
        }
    }

    fn arrive(&mut self, topic: &str, payload: &[u8], queue: &mpsc::Sender<Command>) {
        let rep = &self.reporter;
        let now_ms = rep.clock.now().wall_ns / 1_000_000;
        match self.gate.check(topic, payload, now_ms) {
            Err(r) => {
                rep.counters.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%topic, reason = %r.reason, key = r.key.as_deref().unwrap_or(""), "command rejected");
                rep.audit(&r.op, &r.id, r.key.as_deref(), "rejected", Some(&r.reason));
                if valid_id(&r.id) && Operation::parse(&r.op).is_some() {
                    rep.status(&r.op, &r.id, "rejected", Some(r.reason), None);
                }
            }
            Ok(cmd) => {
                let (op, id, key) = (cmd.op.as_str(), cmd.id.clone(), cmd.key.clone());
                tracing::info!(op, id = %id, key = key.as_deref().unwrap_or(""), "command accepted");
                rep.audit(op, &id, key.as_deref(), "accepted", None);
                rep.status(op, &id, "accepted", None, None);
                if queue.try_send(cmd).is_err() {
                    let why = "32 commands are already waiting; try again later";
                    rep.finish(op, &id, key.as_deref(), Err(why.into()));
                }
            }
        }
    }
}

/// What this agent accepts: published retained on `{prefix}/{agent}/capabilities`.
pub fn capabilities(agent_id: &str, prefix: &str, cfg: &CommandsConfig) -> Value {
    serde_json::json!({
        "v": 1,
        "agent_id": agent_id,
        "version": env!("CARGO_PKG_VERSION"),
        "operations": cfg.operations.iter().map(|o| o.as_str()).collect::<Vec<_>>(),
        "require_signature": cfg.require_signature,
        "keys": cfg.keys.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        "replay_window_s": cfg.replay_window.as_secs(),
        "health_window_s": cfg.health_window.as_secs(),
        "request_topic": format!("{prefix}/{agent_id}/cmd/{{op}}/{{id}}"),
        "status_topic": format!("{prefix}/{agent_id}/cmd/{{op}}/{{id}}/status"),
    })
}

#[cfg(any(test, feature = "signer"))]
/// A signed request: `{"key", "sig", "request"}` with `request` =
/// `{"ts": now_ms, "args": ARGS}` (what central systems send; also
/// `edge-agent sign-command`).
pub fn sign(
    key: &ring::signature::Ed25519KeyPair,
    name: &str,
    topic: &str,
    args: &Value,
    now_ms: i64,
) -> String {
    let request = serde_json::json!({"ts": now_ms, "args": args}).to_string();
    let sig = key.sign(&signing_input(topic, &request));
    let sig = base64::engine::general_purpose::STANDARD.encode(sig.as_ref());
    serde_json::json!({"key": name, "sig": sig, "request": request}).to_string()
}

#[cfg(any(test, feature = "signer"))]
/// Signs with the private key in `file` (from [`keygen`]); `args` is JSON text.
pub fn sign_file(
    file: &std::path::Path,
    name: &str,
    topic: &str,
    args: &str,
    now_ms: i64,
) -> Result<String, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| format!("{} is not a key from `edge-agent keygen`", file.display()))?;
    let key = ring::signature::Ed25519KeyPair::from_pkcs8(&der)
        .map_err(|_| format!("{} is not an Ed25519 PKCS#8 key", file.display()))?;
    let args: Value = serde_json::from_str(args).map_err(|e| format!("ARGS is not JSON: {e}"))?;
    Ok(sign(&key, name, topic, &args, now_ms))
}

#[cfg(any(test, feature = "signer"))]
/// Makes a key pair: the private key (PKCS#8, base64) into `file` (mode 0600,
/// not overwritten), the public key (base64 of its 32 bytes) returned.
pub fn keygen(file: &std::path::Path) -> Result<String, String> {
    use ring::signature::KeyPair as _;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let rng = ring::rand::SystemRandom::new();
    let der = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| "no randomness available".to_string())?;
    let key = ring::signature::Ed25519KeyPair::from_pkcs8(der.as_ref())
        .map_err(|_| "a fresh key did not parse".to_string())?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| {
            format!(
                "cannot create {}: {e} (an existing key is never overwritten)",
                file.display()
            )
        })?;
    writeln!(f, "{}", b64.encode(der.as_ref()))
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    Ok(b64.encode(key.public_key().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    const NOW: i64 = 1_796_000_000_000;

    fn pair(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).expect("a seed makes a key")
    }

    fn gate(require: bool) -> Gate {
        let public: [u8; 32] = pair(7).public_key().as_ref().try_into().expect("32 bytes");
        let cfg = CommandsConfig {
            operations: vec![Operation::Write, Operation::ConfigSnapshot],
            require_signature: require,
            keys: vec![("central".into(), public)],
            replay_window: Duration::from_secs(300),
            health_window: Duration::from_secs(60),
            log_lines: 100,
        };
        Gate::new(
            cfg,
            "edge",
            "gw1",
            ReplayGuard::open(None, Duration::from_secs(300)),
        )
    }

    #[test]
    fn what_sign_produces_the_gate_accepts() {
        let mut g = gate(true);
        let topic = "edge/gw1/cmd/write/s9";
        let payload = sign(
            &pair(7),
            "central",
            topic,
            &serde_json::json!({"signal": "a", "value": 1}),
            NOW,
        );
        assert!(g.check(topic, payload.as_bytes(), NOW).is_ok());
    }

    fn signed(key: &Ed25519KeyPair, name: &str, topic: &str, request: &str) -> Vec<u8> {
        let sig = key.sign(&signing_input(topic, request));
        let sig = base64::engine::general_purpose::STANDARD.encode(sig.as_ref());
        serde_json::to_vec(&serde_json::json!({"key": name, "sig": sig, "request": request}))
            .expect("json")
    }

    #[test]
    fn a_signed_request_is_accepted_once() {
        let mut g = gate(true);
        let topic = "edge/gw1/cmd/write/c1";
        let req = format!(r#"{{"ts": {NOW}, "args": {{"signal": "plc.sp", "value": 4}}}}"#);
        let payload = signed(&pair(7), "central", topic, &req);
        let cmd = g.check(topic, &payload, NOW + 1000).expect("accepted");
        assert_eq!(
            (cmd.op, cmd.id.as_str(), cmd.key.as_deref()),
            (Operation::Write, "c1", Some("central"))
        );
        assert_eq!(cmd.args["value"], 4);
        let again = g.check(topic, &payload, NOW + 2000).expect_err("replayed");
        assert!(again.reason.contains("already received"), "{again:?}");
    }

    #[test]
    fn forged_moved_stale_and_unsigned_requests_are_rejected_with_why() {
        let mut g = gate(true);
        let topic = "edge/gw1/cmd/write/c2";
        let req = format!(r#"{{"ts": {NOW}, "args": {{}}}}"#);
        let by_stranger = signed(&pair(9), "central", topic, &req);
        assert!(
            g.check(topic, &by_stranger, NOW)
                .expect_err("forged")
                .reason
                .contains("does not verify")
        );
        // A valid signature for another agent's topic does not carry over.
        let elsewhere = signed(&pair(7), "central", "edge/gw2/cmd/write/c2", &req);
        assert!(
            g.check(topic, &elsewhere, NOW)
                .expect_err("moved")
                .reason
                .contains("does not verify")
        );
        let stale = signed(&pair(7), "central", topic, &req);
        let e = g.check(topic, &stale, NOW + 301_000).expect_err("stale");
        assert!(e.reason.contains("outside the replay window"), "{e:?}");
        let bare = req.as_bytes();
        assert!(
            g.check(topic, bare, NOW)
                .expect_err("unsigned")
                .reason
                .starts_with("unsigned")
        );
        let unknown = signed(&pair(7), "other", topic, &req);
        assert!(
            g.check(topic, &unknown, NOW)
                .expect_err("key")
                .reason
                .contains("unknown key `other`")
        );
    }

    #[test]
    fn operations_outside_the_allow_list_and_bad_ids_are_rejected() {
        let mut g = gate(false);
        let req = format!(r#"{{"ts": {NOW}}}"#);
        let e = g
            .check("edge/gw1/cmd/restart/r1", req.as_bytes(), NOW)
            .expect_err("not allowed");
        assert!(
            e.reason
                .contains("not in this agent's [commands] operations"),
            "{e:?}"
        );
        let e = g
            .check("edge/gw1/cmd/format_disk/r1", req.as_bytes(), NOW)
            .expect_err("unknown");
        assert!(e.reason.contains("unknown operation"), "{e:?}");
        let e = g
            .check("edge/gw1/cmd/write/a b", req.as_bytes(), NOW)
            .expect_err("bad id");
        assert!(e.reason.contains("command id"), "{e:?}");
        assert!(
            g.check("edge/gw1/cmd/config_snapshot/s1", req.as_bytes(), NOW)
                .is_ok()
        );
    }

    #[test]
    fn seen_ids_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("edge-replay-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("commands.seen");
        let w = Duration::from_secs(300);
        ReplayGuard::open(Some(path.clone()), w)
            .check("x1", NOW, NOW)
            .expect("first");
        let mut after = ReplayGuard::open(Some(path), w);
        assert!(after.check("x1", NOW, NOW + 5).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
