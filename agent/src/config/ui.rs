//! `[ui]`: the local web UI (feature `ui`). Off unless the section is present;
//! loopback unless told otherwise, and a listen address beyond loopback needs both
//! authentication (`users_file`) and TLS (`tls_cert` + `tls_key`).

use std::net::SocketAddr;

use edge_driver_api::config::TableReader;

use crate::ingest::history::HistoryConfig;

/// `[ui]`, validated: its users and TLS files are read (so `check-config`
/// vouches for them).
#[derive(Debug)]
pub struct UiSection {
    pub listen: SocketAddr,
    pub history: HistoryConfig,
    pub guard: crate::ops::http::Guard,
}

#[cfg(feature = "ui")]
const DEFAULT_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 9480);

/// Reads `[ui]` (errors reported on `root`).
#[cfg(feature = "ui")]
pub(super) fn read(root: &mut TableReader<'_>) -> Option<UiSection> {
    let mut u = root.table("ui")?;
    let enabled = u.bool("enabled").map(|b| b.value).unwrap_or(true);
    // Every key is read before any early return (an unread key is reported as
    // unknown).
    let listen = listen(&mut u);
    let history = history(&mut u);
    let guard = guard(&mut u, listen)?;
    enabled.then_some(UiSection {
        listen: listen?.0,
        history: history?,
        guard,
    })
}

#[cfg(not(feature = "ui"))]
pub(super) fn read(root: &mut TableReader<'_>) -> Option<UiSection> {
    let mut u = root.table("ui")?;
    u.skip_unknown_check();
    u.table_error("this build has no web UI")
        .hint("use a build with the `ui` feature (the default), or remove [ui]; `edge-agent status` and `edge-agent tags` show the same")
        .emit();
    None
}

/// The address and its span.
#[cfg(feature = "ui")]
fn listen(u: &mut TableReader<'_>) -> Option<(SocketAddr, edge_driver_api::config::Span)> {
    let span = u.span();
    match u.string("listen") {
        None => Some((DEFAULT_LISTEN.into(), span)),
        Some(l) => match l.value.parse::<SocketAddr>() {
            Ok(a) => Some((a, l.span)),
            Err(_) => {
                u.error(
                    l.span,
                    "listen",
                    format!("`{}` is not an address and port", l.value),
                )
                .expected("an IP address and port, e.g. \"127.0.0.1:9480\"")
                .emit();
                None
            }
        },
    }
}

#[cfg(feature = "ui")]
fn history(u: &mut TableReader<'_>) -> Option<HistoryConfig> {
    let d = HistoryConfig::default();
    let points = u
        .int_in("history_points", 10, 1000)
        .map_or(d.points, |p| p.value as usize);
    let long = match u.duration("history") {
        None => d.long,
        Some(h) if h.value.as_secs() < 600 || h.value.as_secs() > 7 * 86_400 => {
            u.error(h.span, "history", "history must be between 10m and 7d")
                .hint("the recent view always covers 5 minutes; `history` is the long view")
                .emit();
            return None;
        }
        Some(h) => h.value,
    };
    Some(HistoryConfig {
        recent: d.recent,
        long,
        points,
    })
}

/// Users and TLS, required beyond loopback.
#[cfg(feature = "ui")]
fn guard(
    u: &mut TableReader<'_>,
    listen: Option<(SocketAddr, edge_driver_api::config::Span)>,
) -> Option<crate::ops::http::Guard> {
    use crate::ops::http::{Guard, auth::Users, tls};
    let users_file = u.string("users_file");
    let cert = u.string("tls_cert");
    let key = u.string("tls_key");
    let (listen, span) = listen?;
    if !listen.ip().is_loopback() && (users_file.is_none() || cert.is_none() || key.is_none()) {
        u.error(span, "listen", format!("{listen} is reachable from the network, but the UI has no users and TLS"))
            .expected("`users_file` and `tls_cert` + `tls_key` for any address beyond 127.0.0.1 / ::1")
            .hint("create the users file with `edge-agent ui-password NAME >> /etc/edge-agent/ui-users`; or keep the default 127.0.0.1:9480 and reach it through an SSH tunnel")
            .emit();
        return None;
    }
    let users = match &users_file {
        None => None,
        Some(f) => match std::fs::read_to_string(&f.value)
            .map_err(|e| format!("cannot read {}: {e}", f.value))
            .and_then(|t| Users::parse(&t))
        {
            Ok(users) => Some(std::sync::Arc::new(users)),
            Err(e) => {
                u.error(f.span, "users_file", e)
                    .hint("one `name:pbkdf2-sha256:...` line per user, written by `edge-agent ui-password NAME`; readable by the agent's user only (mode 0640)")
                    .emit();
                return None;
            }
        },
    };
    let tls = match (&cert, &key) {
        (None, None) => None,
        (Some(c), Some(k)) => match tls::acceptor(c.value.as_ref(), k.value.as_ref()) {
            Ok(a) => Some(a),
            Err(e) => {
                u.error(c.span, "tls_cert", e)
                    .hint("PEM files readable by the agent's user: the certificate chain (leaf first) and its private key")
                    .emit();
                return None;
            }
        },
        (Some(c), None) | (None, Some(c)) => {
            u.error(
                c.span,
                "tls_cert",
                "TLS needs both `tls_cert` and `tls_key`",
            )
            .emit();
            return None;
        }
    };
    Some(Guard { tls, users })
}
