//! The driver: one session, monitored items in a subscription (or a Read per
//! poll), the session's own reconnects watched for link health and bad quality.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use edge_driver_api::health::CommStats;
use edge_driver_api::{
    BadReason, BoxFuture, Driver, DriverContext, DriverError, DriverFactory, Sample, SignalId,
    WritableTag, WriteError, WriteFailure,
};
use futures_util::StreamExt;
use opcua::client::transport::TcpConnector;
use opcua::client::{
    MonitoredItemMap, OnSubscriptionNotificationCore, Session, SessionConnectMode,
    SessionEventLoop, SessionPollResult,
};
use opcua::types::{
    AttributeId, DataChangeFilter, DataChangeTrigger, DataValue, DeadbandType, ExtensionObject,
    MonitoredItemCreateRequest, MonitoringMode, MonitoringParameters, NodeId, NotificationMessage,
    NumericRange, QualifiedName, ReadValueId, StatusCode, TimestampsToReturn, VariableId,
};
use tokio::sync::mpsc;

use crate::client;
use crate::config::{Acquisition, Deadband, OpcuaConfig, Tag};
use crate::convert;
use crate::nodes;

/// Notification batches waiting for the driver task (a batch per publish response).
const NOTIFY_QUEUE: usize = 1024;
/// How often a subscription's link is timed with a Read of the server state.
const HEALTH_READ: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: OpcuaConfig,
    pub(crate) stats: CommStats,
    /// Per tag, its signals (one, or one per array element).
    pub(crate) ids: Vec<Box<[SignalId]>>,
}

/// Creates OPC UA drivers (one session each).
#[derive(Debug, Clone)]
pub struct OpcuaFactory {
    pub(crate) shared: Arc<Shared>,
}

impl DriverFactory for OpcuaFactory {
    fn kind(&self) -> &'static str {
        "opcua"
    }
    fn create(&self) -> Result<Box<dyn Driver>, DriverError> {
        Ok(Box::new(OpcuaDriver {
            shared: self.shared.clone(),
        }))
    }
    fn writable(&self) -> Vec<WritableTag> {
        let sh = &self.shared;
        edge_driver_api::write::writable_tags(
            sh.cfg
                .tags
                .iter()
                .zip(&sh.ids)
                .filter_map(|(t, ids)| Some((t.write.as_ref(), *ids.first()?))),
        )
    }
    fn probe(&self, ctx: &DriverContext) -> Option<BoxFuture<'static, bool>> {
        let sh = self.shared.clone();
        let ctx = ctx.clone();
        Some(Box::pin(async move {
            let addr = (sh.cfg.host.clone(), sh.cfg.port);
            let reachable = edge_driver_api::tcp_reachable(addr, sh.cfg.timeout).await;
            if !reachable {
                sh.stats.error();
                let _ = ctx
                    .send(&all_bad(&sh, &ctx, BadReason::Communication))
                    .await;
            }
            reachable
        }))
    }
}

struct OpcuaDriver {
    shared: Arc<Shared>,
}

impl Driver for OpcuaDriver {
    fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<'static, Result<(), DriverError>> {
        Box::pin(run(self.shared, ctx))
    }
}

/// Bad samples for every numeric tag, then the link statistics.
fn all_bad(sh: &Shared, ctx: &DriverContext, why: BadReason) -> Vec<Sample> {
    let now = ctx.clock().now();
    let mut out = Vec::with_capacity(sh.ids.len() + 16);
    for (tag, ids) in sh.cfg.tags.iter().zip(&sh.ids) {
        convert::bad(tag, ids, now, why, &mut out);
    }
    sh.stats.push_samples(now, f64::NAN, &mut out);
    out
}

/// What the session's event loop reports to the driver.
#[derive(Debug)]
enum Link {
    Connected { new_session: bool },
    Lost(StatusCode),
    Failed(StatusCode),
    Ended(StatusCode),
}

/// Runs the session's event loop (connects, reconnects, publishes) on its own
/// task, reporting what happens; aborted when dropped.
struct EventTask(tokio::task::JoinHandle<()>);

impl Drop for EventTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn spawn_events(ev: SessionEventLoop<TcpConnector>, tx: mpsc::UnboundedSender<Link>) -> EventTask {
    EventTask(tokio::spawn(async move {
        let stream = ev.enter();
        tokio::pin!(stream);
        loop {
            let link = match stream.next().await {
                None => Link::Ended(StatusCode::Good),
                Some(Err(code)) => Link::Ended(code),
                Some(Ok(SessionPollResult::Reconnected(mode))) => Link::Connected {
                    new_session: matches!(mode, SessionConnectMode::NewSession(_)),
                },
                Some(Ok(SessionPollResult::ConnectionLost(c))) => Link::Lost(c),
                Some(Ok(SessionPollResult::ReconnectFailed(c))) => Link::Failed(c),
                Some(Ok(_)) => continue,
            };
            let end = matches!(link, Link::Ended(_));
            if tx.send(link).is_err() || end {
                return;
            }
        }
    }))
}

/// The subscription's callback: hands each publish response's data changes to
/// the driver task (nothing is decoded twice, nothing waits here).
struct Notifier {
    tx: mpsc::Sender<Vec<(u32, DataValue)>>,
    dropped: Arc<AtomicU64>,
}

impl OnSubscriptionNotificationCore for Notifier {
    fn on_subscription_notification(&mut self, n: NotificationMessage, _: MonitoredItemMap<'_>) {
        let Some((changes, _)) = n.into_notifications() else {
            return;
        };
        let batch: Vec<(u32, DataValue)> = changes
            .into_iter()
            .flat_map(|c| c.monitored_items.into_iter().flatten())
            .map(|m| (m.client_handle, m.value))
            .collect();
        if !batch.is_empty() && self.tx.try_send(batch).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One connected attempt.
struct Attempt<'a> {
    sh: &'a Shared,
    ctx: &'a DriverContext,
    session: Arc<Session>,
    /// Per tag, its node (`None`: its browse path did not resolve).
    nodes: Vec<Option<NodeId>>,
    /// What is read or monitored, made once from `nodes`: the tags with a node
    /// and, beside them, their Value attributes (a slice of them is one call).
    read_tags: Vec<usize>,
    read_ids: Vec<ReadValueId>,
    /// Per tag, the last value delivered from a subscription (source time,
    /// status, value), so a re-created subscription's first values are not
    /// delivered twice.
    last: Vec<Option<(i64, u32, u64)>>,
    batch: Vec<Sample>,
    /// The last value of each text signal (by signal index).
    texts: edge_driver_api::TextChanges,
    /// Whether the session is connected now (the link is not timed while not).
    connected: bool,
    /// Items per Read / CreateMonitoredItems call.
    per_call: usize,
}

async fn run(sh: Arc<Shared>, ctx: DriverContext) -> Result<(), DriverError> {
    let (session, events) = tokio::select! {
        _ = ctx.cancelled() => return Ok(()),
        r = connect(&sh) => r,
    }
    .inspect_err(|_| sh.stats.error())?;
    let (etx, mut erx) = mpsc::unbounded_channel();
    let _task = spawn_events(events, etx);
    let first = tokio::select! {
        _ = ctx.cancelled() => return Ok(()),
        e = tokio::time::timeout(sh.cfg.timeout * 3, erx.recv()) => e,
    };
    match first {
        Ok(Some(Link::Connected { .. })) => {}
        Ok(Some(Link::Failed(c) | Link::Lost(c) | Link::Ended(c))) => {
            sh.stats.error();
            return Err(client::classify(
                &sh.cfg,
                c,
                "the session could not be opened",
            ));
        }
        Ok(None) | Err(_) => {
            sh.stats.timeout();
            return Err(DriverError::transient(format!(
                "{}: no session within {:?}",
                sh.cfg.endpoint,
                sh.cfg.timeout * 3
            )));
        }
    }
    sh.stats.connected();
    tracing::info!(driver = ctx.name(), endpoint = %sh.cfg.endpoint, policy = sh.cfg.policy.name(), mode = client::mode_name(sh.cfg.mode), "OPC UA session open");
    let mut a = Attempt {
        sh: &sh,
        ctx: &ctx,
        session,
        nodes: Vec::new(),
        read_tags: Vec::new(),
        read_ids: Vec::new(),
        last: vec![None; sh.cfg.tags.len()],
        batch: Vec::with_capacity(sh.cfg.tags.len() + 16),
        texts: edge_driver_api::TextChanges::new(
            sh.ids
                .iter()
                .flatten()
                .map(|id| id.index() + 1)
                .max()
                .unwrap_or(0),
        ),
        connected: true,
        per_call: sh.cfg.max_items_per_call,
    };
    let r = a.serve(&mut erx).await;
    a.close().await;
    r
}

async fn connect(
    sh: &Shared,
) -> Result<(Arc<Session>, SessionEventLoop<TcpConnector>), DriverError> {
    // Making the first client certificate (an RSA key) takes seconds on a
    // gateway's core: not on the runtime's threads.
    let cfg = sh.cfg.clone();
    let c = tokio::task::spawn_blocking(move || client::build_client(&cfg))
        .await
        .map_err(|e| DriverError::device(format!("OPC UA client set-up panicked: {e}")))??;
    client::open(&c, &sh.cfg).await
}

impl Attempt<'_> {
    async fn serve(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<Link>,
    ) -> Result<(), DriverError> {
        let cfg = &self.sh.cfg;
        self.per_call = self.operation_limit().await;
        self.nodes = nodes::resolve(&self.session, &cfg.tags, cfg.timeout).await;
        (self.read_tags, self.read_ids) = self
            .nodes
            .iter()
            .zip(&cfg.tags)
            .enumerate()
            .filter_map(|(i, (node, tag))| Some((i, read_value_id(node.clone()?, tag))))
            .unzip();
        self.report_unresolved().await;
        let (ntx, mut nrx) = mpsc::channel(NOTIFY_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        if cfg.acquisition == Acquisition::Subscribe {
            let notifier = Notifier {
                tx: ntx,
                dropped: dropped.clone(),
            };
            self.subscribe(notifier).await?;
        } else {
            drop(ntx);
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut next_poll = tokio::time::Instant::now();
        let mut next_health = tokio::time::Instant::now() + HEALTH_READ;
        let polling = cfg.acquisition == Acquisition::Poll;
        loop {
            tokio::select! {
                _ = self.ctx.cancelled() => return Ok(()),
                Some(values) = nrx.recv() => {
                    self.deliver(&values, true);
                    if self.flush().await.is_err() { return Ok(()); }
                }
                e = events.recv() => self.on_link(e).await?,
                req = self.ctx.next_write() => {
                    if self.connected {
                        crate::write::perform(self.sh, &self.session, &self.nodes, req).await;
                    } else {
                        req.answer(Err(WriteError::new(
                            WriteFailure::Communication,
                            format!("{} is not connected; the session is reconnecting", cfg.endpoint),
                        )));
                    }
                }
                _ = tokio::time::sleep_until(next_poll), if polling && self.connected => {
                    self.poll().await;
                    next_poll = tokio::time::Instant::now() + self.sh.stats.poll_period();
                }
                _ = tick.tick() => {
                    if !polling && self.connected && tokio::time::Instant::now() >= next_health {
                        self.time_link().await;
                        next_health = tokio::time::Instant::now() + HEALTH_READ;
                    }
                    let n = dropped.swap(0, Ordering::Relaxed);
                    if n > 0 {
                        tracing::warn!(driver = self.ctx.name(), batches = n, "OPC UA notifications dropped: the agent could not keep up");
                    }
                    let report = self.sh.stats.push_samples(self.ctx.clock().now(), f64::NAN, &mut self.batch);
                    self.sh.stats.adapt(report.score);
                    if self.flush().await.is_err() { return Ok(()); }
                }
            }
        }
    }

    /// What the session's event loop reported.
    async fn on_link(&mut self, e: Option<Link>) -> Result<(), DriverError> {
        match e {
            Some(Link::Connected { new_session }) => {
                self.connected = true;
                self.sh.stats.connected();
                // The stack's publish loop of a new connection waits for a trigger
                // before its first Publish (async-opcua 0.19): without one, a
                // transferred or re-created subscription would stay silent.
                self.session.trigger_publish_now();
                tracing::info!(driver = self.ctx.name(), new_session, "OPC UA session back");
            }
            Some(Link::Lost(c) | Link::Failed(c)) => {
                // A lost connection (it comes while connected) is said once; each
                // failed reconnect only scores the link and keeps the tags bad.
                let status = crate::convert::status_name(c);
                if self.connected {
                    tracing::warn!(
                        driver = self.ctx.name(),
                        status,
                        "OPC UA connection lost; reconnecting"
                    );
                } else {
                    tracing::debug!(driver = self.ctx.name(), status, "OPC UA reconnect failed");
                }
                self.connected = false;
                self.sh.stats.error();
                let bad = all_bad(self.sh, self.ctx, BadReason::Communication);
                let _ = self.ctx.send(&bad).await;
            }
            Some(Link::Ended(c)) => {
                return Err(DriverError::transient(format!(
                    "{}: the session ended ({})",
                    self.sh.cfg.endpoint,
                    crate::convert::status_name(c)
                )));
            }
            None => return Err(DriverError::transient("the OPC UA event loop stopped")),
        }
        Ok(())
    }

    /// The server's limit on items per call, if it states one below ours.
    async fn operation_limit(&self) -> usize {
        let cfg = &self.sh.cfg;
        let node = match cfg.acquisition {
            Acquisition::Subscribe => {
                VariableId::Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall
            }
            Acquisition::Poll => {
                VariableId::Server_ServerCapabilities_OperationLimits_MaxNodesPerRead
            }
        };
        let ids = [ReadValueId::new_value(node.into())];
        let read = self.session.read(&ids, TimestampsToReturn::Neither, 0.0);
        let limit = match tokio::time::timeout(cfg.timeout, read).await {
            Ok(Ok(v)) => v
                .first()
                .and_then(|dv| dv.value.as_ref())
                .and_then(|v| match v {
                    opcua::types::Variant::UInt32(n) => Some(*n as usize),
                    _ => None,
                }),
            _ => None,
        };
        match limit {
            Some(n) if n > 0 => n.min(cfg.max_items_per_call),
            _ => cfg.max_items_per_call,
        }
    }

    /// Tags whose browse path did not resolve: bad, with the reason logged once.
    async fn report_unresolved(&mut self) {
        let now = self.ctx.clock().now();
        for (i, node) in self.nodes.iter().enumerate() {
            if node.is_none() {
                let tag = &self.sh.cfg.tags[i];
                tracing::warn!(driver = self.ctx.name(), tag = %tag.name, path = %tag.node, "OPC UA browse path not found on the server");
                convert::bad(
                    tag,
                    &self.sh.ids[i],
                    now,
                    convert::code(StatusCode::BadNoMatch),
                    &mut self.batch,
                );
            }
        }
        let _ = self.flush().await;
    }

    async fn subscribe(&mut self, notifier: Notifier) -> Result<(), DriverError> {
        let cfg = &self.sh.cfg;
        let keep_alive = 10u32;
        let lifetime =
            (keep_alive * 3).max((60_000 / cfg.publishing_interval.as_millis().max(1)) as u32);
        let sub = self
            .session
            .create_subscription(
                cfg.publishing_interval,
                lifetime,
                keep_alive,
                0,
                0,
                true,
                notifier,
            )
            .await
            .map_err(|e| {
                DriverError::device(format!("{}: CreateSubscription failed: {e}", cfg.endpoint))
            })?;
        let n = self.per_call.max(1);
        for (tags, ids) in self.read_tags.chunks(n).zip(self.read_ids.chunks(n)) {
            let reqs: Vec<MonitoredItemCreateRequest> = tags
                .iter()
                .zip(ids)
                .map(|(i, rv)| monitored_item(*i, rv.clone(), &cfg.tags[*i]))
                .collect();
            let t0 = tokio::time::Instant::now();
            let res = self
                .session
                .create_monitored_items(sub, TimestampsToReturn::Both, reqs)
                .await
                .map_err(|e| {
                    DriverError::device(format!(
                        "{}: CreateMonitoredItems failed: {e}",
                        cfg.endpoint
                    ))
                })?;
            self.sh.stats.success(t0.elapsed());
            let now = self.ctx.clock().now();
            for (i, r) in tags.iter().zip(&res) {
                if r.result.status_code.is_bad() {
                    let tag = &cfg.tags[*i];
                    self.sh.stats.exception();
                    tracing::warn!(driver = self.ctx.name(), tag = %tag.name, node = %tag.node, status = crate::convert::status_name(r.result.status_code), "OPC UA monitored item refused");
                    convert::bad(
                        tag,
                        &self.sh.ids[*i],
                        now,
                        convert::code(r.result.status_code),
                        &mut self.batch,
                    );
                }
            }
        }
        tracing::info!(
            driver = self.ctx.name(),
            items = self.read_ids.len(),
            per_call = self.per_call,
            "OPC UA subscription created"
        );
        let _ = self.flush().await;
        Ok(())
    }

    /// One Read of every tag, in batches.
    async fn poll(&mut self) {
        let sh = self.sh;
        let n = self.per_call.max(1);
        let mut start = 0;
        while start < self.read_ids.len() {
            let end = (start + n).min(self.read_ids.len());
            let t0 = tokio::time::Instant::now();
            let read = self
                .session
                .read(&self.read_ids[start..end], TimestampsToReturn::Both, 0.0);
            let failed = match tokio::time::timeout(sh.cfg.timeout, read).await {
                Ok(Ok(values)) => {
                    sh.stats.success(t0.elapsed());
                    let tags = &self.read_tags[start..end];
                    let vals: Vec<(u32, DataValue)> = tags
                        .iter()
                        .zip(values)
                        .map(|(i, dv)| (*i as u32 + 1, dv))
                        .collect();
                    self.deliver(&vals, false);
                    None
                }
                Ok(Err(e)) => {
                    sh.stats.error();
                    tracing::debug!(driver = self.ctx.name(), error = %e, "OPC UA Read failed");
                    Some(BadReason::Communication)
                }
                Err(_) => {
                    sh.stats.timeout();
                    Some(BadReason::Timeout)
                }
            };
            if let Some(why) = failed {
                let now = self.ctx.clock().now();
                for &i in &self.read_tags[start..end] {
                    convert::bad(&sh.cfg.tags[i], &sh.ids[i], now, why, &mut self.batch);
                }
            }
            if self.flush().await.is_err() {
                return;
            }
            start = end;
        }
    }

    /// Times a Read of the server's state: the link-health sample of a subscription.
    async fn time_link(&mut self) {
        let node: NodeId = VariableId::Server_ServerStatus_State.into();
        let t0 = tokio::time::Instant::now();
        let ids = [ReadValueId::new_value(node)];
        let read = self.session.read(&ids, TimestampsToReturn::Neither, 0.0);
        match tokio::time::timeout(self.sh.cfg.timeout, read).await {
            Ok(Ok(_)) => self.sh.stats.success(t0.elapsed()),
            Ok(Err(_)) => self.sh.stats.error(),
            Err(_) => self.sh.stats.timeout(),
        }
    }

    /// Converts values (client handle = tag index + 1) into the batch.
    fn deliver(&mut self, values: &[(u32, DataValue)], dedup: bool) {
        let now = self.ctx.clock().now();
        for (handle, dv) in values {
            let Some(i) = (*handle as usize)
                .checked_sub(1)
                .filter(|i| *i < self.sh.ids.len())
            else {
                continue;
            };
            if dedup && self.repeated(i, dv) {
                continue;
            }
            let mut out = convert::Out {
                ctx: self.ctx,
                texts: &mut self.texts,
                samples: &mut self.batch,
            };
            convert::deliver(&self.sh.cfg.tags[i], &self.sh.ids[i], dv, now, &mut out);
        }
    }

    /// Whether `dv` is the value last delivered for tag `i` (same source time,
    /// status and value): what a re-created subscription sends first.
    fn repeated(&mut self, i: usize, dv: &DataValue) -> bool {
        let Some(src) = dv.source_timestamp.as_ref().and_then(convert::unix_ns) else {
            return false;
        };
        let status = dv.status.map(|s| s.bits()).unwrap_or(0);
        let value = dv.value.as_ref().map(fingerprint).unwrap_or(0);
        let key = Some((src, status, value));
        if self.last[i] == key {
            return true;
        }
        self.last[i] = key;
        false
    }

    async fn flush(&mut self) -> Result<(), edge_driver_api::Cancelled> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let r = self.ctx.send(&self.batch).await;
        self.batch.clear();
        r
    }

    /// Closes the session politely (briefly: cancellation must stay prompt).
    async fn close(&self) {
        let _ = tokio::time::timeout(Duration::from_millis(500), self.session.disconnect()).await;
    }
}

/// A value's identity for duplicate detection.
fn fingerprint(v: &opcua::types::Variant) -> u64 {
    use std::hash::{Hash, Hasher};
    match convert::number(v) {
        Some(n) => n.as_f64().to_bits(),
        None => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            v.to_string().hash(&mut h);
            h.finish()
        }
    }
}

/// The Value attribute of a tag's node (its slice for an array tag).
fn read_value_id(node_id: NodeId, tag: &Tag) -> ReadValueId {
    let range = tag.index_range();
    ReadValueId {
        node_id,
        attribute_id: AttributeId::Value as u32,
        index_range: if range.is_empty() {
            NumericRange::None
        } else {
            range.parse().unwrap_or(NumericRange::None)
        },
        data_encoding: QualifiedName::null(),
    }
}

/// A monitored item for tag `i` (client handle `i + 1`).
fn monitored_item(i: usize, item: ReadValueId, tag: &Tag) -> MonitoredItemCreateRequest {
    let filter = match tag.deadband {
        None => ExtensionObject::null(),
        Some(d) => {
            let (kind, value) = match d {
                Deadband::Absolute(v) => (DeadbandType::Absolute, v),
                Deadband::Percent(v) => (DeadbandType::Percent, v),
            };
            ExtensionObject::from_message(DataChangeFilter {
                trigger: DataChangeTrigger::StatusValue,
                deadband_type: kind as u32,
                deadband_value: value,
            })
        }
    };
    MonitoredItemCreateRequest::new(
        item,
        MonitoringMode::Reporting,
        MonitoringParameters {
            client_handle: i as u32 + 1,
            sampling_interval: tag.sampling.as_secs_f64() * 1000.0,
            filter,
            queue_size: tag.queue_size,
            discard_oldest: true,
        },
    )
}
