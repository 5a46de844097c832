//! The local web UI (`[ui]`): embedded pages (no CDN: the gateway has no
//! internet), a read-only JSON API, server-rendered SVG plots and a server-sent
//! event stream for live updates.
//!
//! | path | what |
//! |---|---|
//! | `/`, `/app.js`, `/app.css` | the single-page UI (overview, signals, alerts, models) |
//! | `/api/status` | the agent's status (as `edge-agent status --json`), history size, driver health series |
//! | `/api/tags?filter=` | live values (as `edge-agent tags --json`) |
//! | `/api/signal?name=&span=recent\|long` | one tag, its history, the detectors watching it and its windows' features |
//! | `/api/alerts` | active and recent alerts |
//! | `/api/models` | models (as `edge-agent models list --json`) with their training quality |
//! | `/api/alert?id=` | one alert, its episode and its evidence |
//! | `/plot/signal.svg?name=&span=` | a signal's history plot |
//! | `/plot/detector.svg?asset=&detector=&span=recent\|long` | a detector's last evaluations (its window feature or score) with its limit, or their means over `[ui] history` |
//! | `/plot/feature.svg?asset=&signal=&feature=` | a window feature over `[ui] history`, whether or not a detector reads it |
//! | `/alerts/{id}.svg` | an alert's evidence plot (a stable URL to link to) |
//! | `/events?tags=` | server-sent events: `status` every second, `tags` when asked |

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

mod plots;

use super::Site;
use super::body::Body;
use super::routes::{Query, Response, json, reply, text};
use crate::alert::Alert;
use crate::alert::trace::DetectorTrace;
use crate::delivery::recent::RecentAlerts;
use crate::ingest::history::{Series, SignalHistory, Span};
use crate::ops::status::{AgentStatus, StatusSource, TagsReport};
use crate::pipeline::feature_history::FeatureHistory;
use plots::{alert_svg, detector_svg, feature_svg, signal_svg, wall_ms};

/// Live event streams at once.
const STREAMS: usize = 8;
/// Driver health samples kept for the sparklines (one per [`HEALTH_EVERY`]).
const HEALTH_POINTS: usize = 60;
const HEALTH_EVERY: Duration = Duration::from_secs(5);
/// Longest accepted name or filter parameter.
const MAX_PARAM: usize = 256;

/// What the UI reads besides the status.
#[derive(Debug)]
pub struct UiState {
    pub history: Arc<SignalHistory>,
    pub alerts: Arc<RecentAlerts>,
    /// Every detector's recent evaluations (the evidence plots).
    pub trace: Arc<DetectorTrace>,
    /// Every window's features over hours.
    pub features: Arc<FeatureHistory>,
    /// Each driver's link health, oldest first (the overview's sparklines).
    health: Mutex<Vec<VecDeque<Option<f32>>>>,
    streams: Arc<Semaphore>,
    stop: CancellationToken,
}

impl UiState {
    pub fn new(
        history: Arc<SignalHistory>,
        trace: Arc<DetectorTrace>,
        features: Arc<FeatureHistory>,
        alerts: Arc<RecentAlerts>,
        stop: CancellationToken,
    ) -> UiState {
        UiState {
            history,
            alerts,
            trace,
            features,
            health: Mutex::new(Vec::new()),
            streams: Arc::new(Semaphore::new(STREAMS)),
            stop,
        }
    }

    /// Samples every driver's health every [`HEALTH_EVERY`] until stopped.
    pub fn spawn_health(self: &Arc<Self>, source: StatusSource) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEALTH_EVERY);
            loop {
                tokio::select! {
                    _ = me.stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now: Vec<Option<f32>> = source
                    .drivers
                    .iter()
                    .map(|(_, m)| m.link().health.map(|h| h as f32))
                    .collect();
                let mut h = me.health.lock().unwrap_or_else(|p| p.into_inner());
                h.resize_with(now.len(), VecDeque::new);
                for (ring, v) in h.iter_mut().zip(now) {
                    if ring.len() == HEALTH_POINTS {
                        ring.pop_front();
                    }
                    ring.push_back(v);
                }
            }
        });
    }
}

/// A UI route's handler.
pub type UiHandler = fn(&Site, &Arc<UiState>, &Query<'_>) -> Response;

/// The UI's routes (after [`super::routes::METRICS`]; only on a listener with a
/// UI).
pub const ROUTES: &[(&str, UiHandler)] = &[
    ("/", index),
    ("/app.js", app_js),
    ("/app.css", app_css),
    ("/api/status", api_status),
    ("/api/tags", api_tags),
    ("/api/signal", api_signal),
    ("/api/alerts", api_alerts),
    ("/api/models", api_models),
    ("/api/alert", api_alert),
    ("/plot/signal.svg", signal_svg),
    ("/plot/detector.svg", detector_svg),
    ("/plot/feature.svg", feature_svg),
    ("/alerts/", alert_svg),
    ("/events", events),
];

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = reply(StatusCode::OK, content_type, body);
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    r
}

fn index(_: &Site, _: &Arc<UiState>, _: &Query<'_>) -> Response {
    asset(
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    )
}

fn app_js(_: &Site, _: &Arc<UiState>, _: &Query<'_>) -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    )
}

fn app_css(_: &Site, _: &Arc<UiState>, _: &Query<'_>) -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/app.css"))
}

/// A parameter, bounded: `Err` is the 400 to send.
fn param<'q>(q: &'q Query<'_>, key: &str, required: bool) -> Result<&'q str, Response> {
    match q.get(key) {
        Some(v) if v.len() > MAX_PARAM => Err(text(
            StatusCode::BAD_REQUEST,
            format!("`{key}` is longer than {MAX_PARAM} bytes\n"),
        )),
        Some(v) => Ok(v),
        None if required => Err(text(
            StatusCode::BAD_REQUEST,
            format!("missing query parameter `{key}`\n"),
        )),
        None => Ok(""),
    }
}

fn span(q: &Query<'_>) -> Result<Span, Response> {
    match q.get("span") {
        None | Some("recent") => Ok(Span::Recent),
        Some("long") => Ok(Span::Long),
        Some(_) => Err(text(
            StatusCode::BAD_REQUEST,
            "`span` is `recent` or `long`\n",
        )),
    }
}

#[derive(Serialize)]
struct UiStatus<'a> {
    #[serde(flatten)]
    status: &'a AgentStatus,
    history_bytes: usize,
    history_signals: usize,
    /// Window features over hours: windows recorded and bytes.
    feature_windows: usize,
    feature_history_bytes: usize,
    /// Detector evaluations (the last ones and hours of means).
    trace_bytes: usize,
    /// Per driver (same order as `drivers`), link health oldest first.
    health_series: Vec<Vec<Option<f32>>>,
    health_every_s: u64,
}

fn status_json(source: &StatusSource, ui: &UiState) -> serde_json::Result<Vec<u8>> {
    let status = source.snapshot();
    let (feature_windows, feature_history_bytes) = ui.features.size();
    let health = ui.health.lock().unwrap_or_else(|p| p.into_inner());
    serde_json::to_vec(&UiStatus {
        status: &status,
        history_bytes: ui.history.bytes(),
        history_signals: ui.history.signals(),
        feature_windows,
        feature_history_bytes,
        trace_bytes: ui.trace.bytes(),
        health_series: health.iter().map(|r| r.iter().copied().collect()).collect(),
        health_every_s: HEALTH_EVERY.as_secs(),
    })
}

fn api_status(site: &Site, ui: &Arc<UiState>, _: &Query<'_>) -> Response {
    match status_json(&site.source, ui) {
        Ok(v) => reply(StatusCode::OK, "application/json", v),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

fn api_tags(site: &Site, _: &Arc<UiState>, q: &Query<'_>) -> Response {
    match param(q, "filter", false) {
        Ok(f) => json(&site.source.tags(f)),
        Err(r) => r,
    }
}

/// A signal by exact name, or the 404 to send.
fn signal(site: &Site, q: &Query<'_>) -> Result<(usize, String), Response> {
    let name = param(q, "name", true)?;
    match site.source.latest.find(name) {
        Some(i) => Ok((i, name.to_string())),
        None => Err(text(
            StatusCode::NOT_FOUND,
            format!(
                "no signal `{}`; /api/tags lists them\n",
                name.escape_debug()
            ),
        )),
    }
}

fn series(site: &Site, ui: &UiState, signal: usize, span: Span) -> Series {
    let c = &site.source.clock;
    ui.history
        .series(signal, span, c.mono_ns(), c.now().wall_ns)
}

fn api_signal(site: &Site, ui: &Arc<UiState>, q: &Query<'_>) -> Response {
    let ((i, name), sp) = match signal(site, q).and_then(|s| Ok((s, span(q)?))) {
        Ok(v) => v,
        Err(r) => return r,
    };
    #[derive(Serialize)]
    struct One {
        tag: Option<crate::ingest::latest::TagStatus>,
        series: Series,
        /// The detectors watching it whose evaluations are plotted.
        detectors: Vec<crate::alert::trace::TracedDetector>,
        /// Its windows (one per asset) and the features recorded.
        windows: Vec<crate::pipeline::feature_history::SignalWindows>,
    }
    let tag = site
        .source
        .tags(&name)
        .tags
        .into_iter()
        .find(|t| t.name == name);
    json(&One {
        tag,
        series: series(site, ui, i, sp),
        detectors: ui.trace.on_signal(&name),
        windows: ui.features.on_signal(&name),
    })
}

#[derive(Serialize)]
struct AlertList {
    active: Vec<Alert>,
    recent: Vec<Alert>,
}

fn api_alerts(_: &Site, ui: &Arc<UiState>, _: &Query<'_>) -> Response {
    json(&AlertList {
        active: ui.alerts.active(),
        recent: ui.alerts.recent(),
    })
}

/// Largest `quality.json` read.
const MAX_QUALITY: u64 = 64 * 1024;

/// A model's training quality: `quality.json` next to its manifest (the zoo's
/// held-out evaluation), if there is one.
fn quality(manifest: &str) -> Option<serde_json::Value> {
    use std::io::Read as _;
    let path = std::path::Path::new(manifest)
        .parent()?
        .join("quality.json");
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_QUALITY)
        .read_to_string(&mut text)
        .ok()?;
    serde_json::from_str(&text).ok()
}

fn api_models(site: &Site, _: &Arc<UiState>, _: &Query<'_>) -> Response {
    #[derive(Serialize)]
    struct Model {
        #[serde(flatten)]
        info: crate::ops::status::ModelInfo,
        quality: Option<serde_json::Value>,
    }
    let models: Vec<Model> = site
        .source
        .snapshot()
        .models
        .into_iter()
        .map(|info| Model {
            quality: quality(&info.manifest),
            info,
        })
        .collect();
    json(&models)
}

/// An alert by id, or the 4xx to send.
fn alert(ui: &UiState, id: &str) -> Result<Alert, Response> {
    if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(text(
            StatusCode::BAD_REQUEST,
            "an alert id is 26 letters and digits\n",
        ));
    }
    ui.alerts.find(id).ok_or_else(|| {
        text(
            StatusCode::NOT_FOUND,
            format!(
                "no alert {id} among the last {} kept\n",
                ui.alerts.capacity()
            ),
        )
    })
}

fn api_alert(site: &Site, ui: &Arc<UiState>, q: &Query<'_>) -> Response {
    let a = match param(q, "id", true).and_then(|id| alert(ui, id)) {
        Ok(a) => a,
        Err(r) => return r,
    };
    #[derive(Serialize)]
    struct Evidence {
        episode: Vec<Alert>,
        /// The detector's last evaluations: `[t_ms, value, score, limit]`.
        evaluations: Vec<(i64, f32, f32, f32)>,
        /// The model binding's state now (model alerts).
        binding: Option<crate::ops::status::BindingInfo>,
        plot: String,
        alert: Alert,
    }
    let binding = a.model.as_ref().and_then(|m| {
        site.source
            .snapshot()
            .models
            .into_iter()
            .filter(|mi| mi.name == m.name)
            .flat_map(|mi| mi.bindings)
            .find(|b| *b.asset == *a.asset && *b.binding == *a.detector)
    });
    let anchor = site.source.clock.anchor();
    let evaluations = ui
        .trace
        .series(&a.asset, &a.detector)
        .into_iter()
        .map(|p| (wall_ms(&anchor, p.mono_ns), p.value, p.score, p.limit))
        .collect();
    json(&Evidence {
        episode: ui.alerts.episode(a.episode),
        evaluations,
        binding,
        plot: format!("/alerts/{}.svg", a.id),
        alert: a,
    })
}

/// `/events`: `status` at once and every second, and `tags` (filtered by
/// `tags=`) when asked; ends when the client goes or the agent stops.
fn events(site: &Site, ui: &Arc<UiState>, q: &Query<'_>) -> Response {
    let filter = match q.get("tags").map(|_| param(q, "tags", false)) {
        None => None,
        Some(Ok(f)) => Some(f.to_string()),
        Some(Err(r)) => return r,
    };
    let Ok(permit) = ui.streams.clone().try_acquire_owned() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{STREAMS} live views are open already; close one\n"),
        );
    };
    let (tx, rx) = mpsc::channel::<Bytes>(2);
    let (source, ui) = (site.source.clone(), ui.clone());
    tokio::spawn(async move {
        let _permit = permit;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let _ = tx.send(Bytes::from_static(b"retry: 2000\n\n")).await;
        loop {
            tokio::select! {
                _ = ui.stop.cancelled() => return,
                _ = tx.closed() => return,
                _ = tick.tick() => {}
            }
            let mut chunk = Vec::with_capacity(4096);
            if let Ok(s) = status_json(&source, &ui) {
                event(&mut chunk, "status", &s);
            }
            if let Some(f) = &filter {
                let report: TagsReport = source.tags(f);
                if let Ok(t) = serde_json::to_vec(&report) {
                    event(&mut chunk, "tags", &t);
                }
            }
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
        }
    });
    let mut r = reply(StatusCode::OK, "text/event-stream", Body::Stream(rx));
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    r
}

/// One server-sent event (`data` is JSON: one line).
fn event(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}
