//! The control socket: how `edge-agent status` and `edge-agent models list` read a
//! running agent.
//!
//! A Unix stream socket (mode 0660, so the agent's user and group can read it; root
//! always can). Protocol: the client sends one command line, the agent answers with
//! one JSON document and closes. Commands: `status` (an [`crate::ops::status::AgentStatus`]), `tags
//! [FILTER]` (every tag's latest value and quality, a
//! [`crate::ops::status::TagsReport`]), `ack` (acknowledge latched alarm
//! outputs, then the status), `label ID VERDICT [NOTE]` and `write SIGNAL VALUE`
//! (a writable tag, through [`crate::inbound::write`]: checked, audited with the
//! caller's uid; the answer is the write report). Nothing else can be changed
//! through it.
//!
//! Where it lives ([`ControlSocket::Default`]): `$RUNTIME_DIRECTORY/control.sock`
//! under systemd (`RuntimeDirectory=edge-agent`, i.e. `/run/edge-agent`), otherwise
//! `/run/edge-agent/control.sock` for root, `$XDG_RUNTIME_DIR/edge-agent/control.sock`
//! or `/tmp/edge-agent-<uid>/control.sock`. The commands look in the same places.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use crate::ops::status::StatusSource;

/// `[agent] control_socket`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ControlSocket {
    /// The standard place (see the module docs), when the command asks for it.
    #[default]
    Default,
    /// `control_socket = ""`.
    Off,
    At(PathBuf),
}

fn uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Where the agent puts its socket when none is configured.
pub fn default_path() -> PathBuf {
    if let Some(d) = std::env::var_os("RUNTIME_DIRECTORY") {
        // systemd may pass several, separated by ':'; ours is the first.
        let d = d.to_string_lossy();
        let first = d.split(':').next().unwrap_or(&d);
        return Path::new(first).join("control.sock");
    }
    candidates()
        .into_iter()
        .next()
        .unwrap_or_else(|| PathBuf::from("/run/edge-agent/control.sock"))
}

/// The places to look for a running agent's socket, most likely first.
pub fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let uid = uid();
    if uid == Some(0) || Path::new("/run/edge-agent").is_dir() {
        out.push(PathBuf::from("/run/edge-agent/control.sock"));
    }
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
        out.push(Path::new(&x).join("edge-agent/control.sock"));
    }
    out.push(PathBuf::from(format!(
        "/tmp/edge-agent-{}/control.sock",
        uid.unwrap_or(0)
    )));
    out
}

/// Binds the socket, replacing a stale file left by an agent that died, but never
/// one another running agent answers on.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another agent answers on this socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(l)
}

/// Answers commands until `stop`, then removes the socket file.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    source: StatusSource,
    stop: CancellationToken,
) {
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let source = source.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let work = async {
                let by = match stream.peer_cred() {
                    Ok(c) => format!("uid {}", c.uid()),
                    Err(_) => "control socket".to_string(),
                };
                let mut reader = BufReader::new(stream);
                let mut bytes = Vec::with_capacity(64);
                // One short line; a client that sends more is cut off. Bytes that
                // are not UTF-8 make an unknown command, not a dropped connection.
                let mut limited = tokio::io::AsyncReadExt::take(&mut reader, 256);
                limited.read_until(b'\n', &mut bytes).await?;
                let reply = match parse_request(&bytes) {
                    Request::Status => serde_json::to_string(&source.snapshot())
                        .unwrap_or_else(|e| error_json(&e.to_string())),
                    Request::Tags(filter) => serde_json::to_string(&source.tags(&filter))
                        .unwrap_or_else(|e| error_json(&e.to_string())),
                    Request::Ack => {
                        source.alarms.acknowledge();
                        tracing::info!("alarm outputs acknowledged");
                        // The sink thread applies it within its next idle tick.
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                        serde_json::to_string(&source.snapshot())
                            .unwrap_or_else(|e| error_json(&e.to_string()))
                    }
                    Request::Label { id, verdict, note } => label(&source, &id, &verdict, &note),
                    Request::Write { signal, value } => write(&source, signal, &value, by).await,
                    Request::Unknown(line) => error_json(&format!(
                        "unknown command `{line}`; the commands are `status`, `tags [FILTER]`, `ack`, `label ID true|false|unsure [NOTE]` and `write SIGNAL VALUE`"
                    )),
                };
                let mut stream = reader.into_inner();
                stream.write_all(reply.as_bytes()).await?;
                stream.write_all(b"\n").await?;
                stream.shutdown().await
            };
            match tokio::time::timeout(ANSWER_WITHIN, work).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "control socket: client failed"),
                Err(_) => tracing::debug!("control socket: slow client dropped"),
            }
        });
    }
    let _ = std::fs::remove_file(&path);
}

/// The longest the socket works on one command (a write may wait for its
/// device up to [`crate::inbound::write::WRITE_DEADLINE`]).
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

/// Writes a tag; the write report, or why the value is not one.
async fn write(source: &StatusSource, signal: String, value: &str, by: String) -> String {
    use crate::inbound::write::{WriteOrder, WriteSource, parse_value};
    let Some(value) = parse_value(value) else {
        return error_json(&format!(
            "`{}` is not a value: write a number (42, -1.5) or true/false",
            value.escape_debug()
        ));
    };
    let order = WriteOrder {
        signal,
        value,
        source: WriteSource::Cli,
        by,
    };
    let report = source.writes.write(order).await;
    serde_json::to_string(&report).unwrap_or_else(|e| error_json(&e.to_string()))
}

/// A command line of the control socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Status,
    /// `tags [FILTER]`.
    Tags(String),
    Ack,
    /// `label ID VERDICT [NOTE]`: an operator's verdict on an alert.
    Label {
        id: String,
        verdict: String,
        note: String,
    },
    /// `write SIGNAL VALUE`: a value for a writable tag.
    Write {
        signal: String,
        value: String,
    },
    /// Anything else: its first 64 characters, for the error message.
    Unknown(String),
}

/// Labels an alert; the label document, or why not.
fn label(source: &StatusSource, id: &str, verdict: &str, note: &str) -> String {
    use crate::delivery::labels::Verdict;
    let Some(labeller) = &source.labels else {
        return error_json("labels are off: add a [labels] section to the configuration");
    };
    let Some(v) = Verdict::parse(verdict) else {
        return error_json(&format!(
            "`{}` is not a verdict: true (a real problem), false (a false alarm) or unsure",
            verdict.escape_debug()
        ));
    };
    match labeller.label(id, v, note) {
        Ok(l) => serde_json::to_string(&l).unwrap_or_else(|e| error_json(&e.to_string())),
        Err(e) => error_json(&e),
    }
}

/// Parses one command line (at most 256 bytes, possibly not UTF-8, possibly
/// without its newline). Never fails: what is not a command is `Unknown`.
pub fn parse_request(bytes: &[u8]) -> Request {
    let line = String::from_utf8_lossy(bytes);
    let line = line.trim();
    let (command, arg) = line.split_once(' ').unwrap_or((line, ""));
    match (command, arg.trim()) {
        ("status", "") => Request::Status,
        ("tags", filter) => Request::Tags(filter.to_string()),
        ("ack", "") => Request::Ack,
        ("label", rest) => {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next()) {
                (Some(id), Some(verdict)) if !id.is_empty() => Request::Label {
                    id: id.to_string(),
                    verdict: verdict.to_string(),
                    note: parts.next().unwrap_or("").trim().to_string(),
                },
                _ => Request::Unknown(line.chars().take(64).collect()),
            }
        }
        ("write", rest) => match rest.split_once(' ') {
            Some((signal, value)) if !value.trim().is_empty() => Request::Write {
                signal: signal.to_string(),
                value: value.trim().to_string(),
            },
            _ => Request::Unknown(line.chars().take(64).collect()),
        },
        _ => Request::Unknown(line.chars().take(64).collect()),
    }
}

fn error_json(msg: &str) -> String {
    serde_json::json!({ "error": msg }).to_string()
}

/// Why a running agent could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(
        "no running edge-agent found (looked for {looked}); is it running? Under systemd: `systemctl status edge-agent`. Otherwise pass --socket"
    )]
    NotRunning { looked: String },
    #[error("cannot talk to the agent on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the agent on {path} answered: {message}")]
    Agent { path: PathBuf, message: String },
}

/// Sends `command` (`status`, `ack`: an [`crate::ops::status::AgentStatus`] comes back; `tags
/// FILTER`: a [`crate::ops::status::TagsReport`]) to the agent on `socket` (or the
/// first of [`candidates`] that exists) and reads the answer.
pub fn query<T: serde::de::DeserializeOwned>(
    socket: Option<&Path>,
    command: &str,
) -> Result<T, QueryError> {
    let path = match socket {
        Some(p) => p.to_path_buf(),
        None => {
            let c = candidates();
            match c.iter().find(|p| p.exists()) {
                Some(p) => p.clone(),
                None => {
                    return Err(QueryError::NotRunning {
                        looked: c
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
        }
    };
    let io = |source| QueryError::Io {
        path: path.clone(),
        source,
    };
    let mut s = std::os::unix::net::UnixStream::connect(&path).map_err(io)?;
    s.set_read_timeout(Some(ANSWER_WITHIN + Duration::from_secs(1)))
        .map_err(io)?;
    s.write_all(format!("{command}\n").as_bytes()).map_err(io)?;
    let mut reply = String::new();
    std::io::BufReader::new(s.take(16 << 20))
        .read_line(&mut reply)
        .map_err(io)?;
    let value: serde_json::Value = serde_json::from_str(&reply).map_err(|e| io(e.into()))?;
    if let Some(msg) = value.get("error").and_then(|m| m.as_str()) {
        return Err(QueryError::Agent {
            path,
            message: msg.to_string(),
        });
    }
    serde_json::from_value(value).map_err(|e| io(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_command_carries_the_signal_and_the_value() {
        assert_eq!(
            parse_request(b"write plc.setpoint -42.5\n"),
            Request::Write {
                signal: "plc.setpoint".into(),
                value: "-42.5".into()
            }
        );
        assert!(matches!(
            parse_request(b"write plc.setpoint"),
            Request::Unknown(_)
        ));
        assert!(matches!(parse_request(b"write"), Request::Unknown(_)));
    }

    #[test]
    fn a_label_command_carries_the_id_the_verdict_and_the_note() {
        assert_eq!(
            parse_request(b"label 01M96 false pump was stopped for cleaning\n"),
            Request::Label {
                id: "01M96".into(),
                verdict: "false".into(),
                note: "pump was stopped for cleaning".into(),
            }
        );
        assert_eq!(
            parse_request(b"label 01M96 true"),
            Request::Label {
                id: "01M96".into(),
                verdict: "true".into(),
                note: String::new(),
            }
        );
        assert!(matches!(parse_request(b"label 01M96"), Request::Unknown(_)));
        assert!(matches!(parse_request(b"label"), Request::Unknown(_)));
    }
}
