//! The agent's HTTP side on hyper's HTTP/1 server: the Prometheus endpoint
//! (`[metrics]`) and the local web UI (`[ui]`, feature `ui`).
//!
//! One server loop for both ([`serve`]): each listener gets a [`Site`] (what it
//! serves: the route table in [`routes`]) and its [`Guard`] (TLS and
//! authentication, for a UI bound beyond loopback). Limits: request heads of at
//! most 16 KiB read within 5 s (hyper answers 431/408 itself), at most 32
//! connections at a time (more are closed at once rather than queued), at most 8
//! live event streams. Every response is built from the same [`StatusSource`] that
//! `edge-agent status` reads, so the three always agree.

#[cfg(feature = "ui")]
pub mod auth;
pub mod body;
#[cfg(feature = "ui")]
pub mod plot;
pub mod routes;
#[cfg(feature = "ui")]
pub mod tls;
#[cfg(feature = "ui")]
pub mod ui;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::ops::status::StatusSource;

/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 32;
/// A request head must arrive within this.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head (request line and headers).
const MAX_HEAD: usize = 16 * 1024;

/// What a listener serves.
#[derive(Debug)]
pub struct Site {
    pub source: StatusSource,
    /// `/metrics` also per tag (`[metrics] per_tag`).
    pub per_tag: bool,
    /// The web UI (its pages, API and event stream); `None`: `/metrics` only.
    #[cfg(feature = "ui")]
    pub ui: Option<Arc<ui::UiState>>,
}

/// TLS and authentication in front of a site (a UI bound beyond loopback).
#[derive(Clone, Default)]
pub struct Guard {
    #[cfg(feature = "ui")]
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    #[cfg(feature = "ui")]
    pub users: Option<Arc<auth::Users>>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Guard");
        #[cfg(feature = "ui")]
        d.field("tls", &self.tls.is_some())
            .field("users", &self.users.as_ref().map(|u| u.len()));
        d.finish()
    }
}

/// Serves `site` on `listener` until `stop`; open connections are closed
/// gracefully (event streams end).
pub async fn serve(listener: TcpListener, site: Arc<Site>, guard: Guard, stop: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "http: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "http: too many connections, closed");
            continue;
        };
        let (site, guard, stop) = (site.clone(), guard.clone(), stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            #[cfg(feature = "ui")]
            if let Some(tls) = &guard.tls {
                match tokio::time::timeout(HEAD_TIMEOUT, tls.accept(stream)).await {
                    Ok(Ok(s)) => connection(s, site, guard, stop).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "http: TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "http: TLS handshake timed out"),
                }
                return;
            }
            connection(stream, site, guard, stop).await;
        });
    }
}

/// One HTTP/1 connection (keep-alive), closed gracefully on `stop`.
async fn connection<S>(stream: S, site: Arc<Site>, guard: Guard, stop: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let (site, guard) = (site.clone(), guard.clone());
        async move { Ok::<_, Infallible>(routes::handle(&site, &guard, &req)) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "http: connection ended with an error");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}

/// Binds `addr` (non-blocking, for tokio).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    TcpListener::from_std(l)
}
