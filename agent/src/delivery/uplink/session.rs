//! One connection to the broker: connect, say online, then keep a window of
//! publishes in flight from the journal and release each record on its PUBACK.
//! Every connection starts from a fresh client and the journal's cursors (see the
//! module documentation of [`super`]).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pace::Pacer;
use super::{UplinkConfig, UplinkError, UplinkStats, lock};
use crate::delivery::journal::{Journal, Lane, Record};
use crate::delivery::sparkplug::{Command, EdgeNode, Outgoing as SpbMessage, now_ms};
use crate::delivery::wire::Envelope;
use crate::inbound::{WriteOrder, WriteSource};

/// How a connection ended without an error.
pub(super) enum Stop {
    Cancelled,
    /// Our bookkeeping and rumqttc's disagree: start over from the journal.
    Reconnect(Desync),
}

/// A disagreement between our publish bookkeeping and rumqttc's.
#[derive(Debug, thiserror::Error)]
pub(super) enum Desync {
    #[error("publish {0} that was not queued")]
    Unqueued(u16),
    #[error("packet id collision on {0}")]
    Collision(u16),
    #[error("the Sparkplug primary host went offline")]
    PrimaryHostOffline,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Record(Lane, u64),
    Status,
    /// A Sparkplug message (QoS 0: no PUBACK).
    Sparkplug,
}

/// Per-connection replay cursors of one lane.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    /// Next live seq to send (records appended after the connection came up).
    live: u64,
    /// Next backlog seq to send; the backlog ends at `live_start`.
    backlog: u64,
    live_start: u64,
}

pub(super) struct Session<'a> {
    cfg: &'a UplinkConfig,
    journal: &'a Arc<Mutex<Journal>>,
    stats: &'a UplinkStats,
    client: AsyncClient,
    window: usize,
    cursors: Vec<Cursor>,
    /// Publishes requested from rumqttc, in order, not yet given a packet id.
    queued: VecDeque<Target>,
    /// Publishes with a packet id, and when they went out.
    in_flight: HashMap<u16, (Target, Instant)>,
    outstanding: usize,
    /// Backlog publishes not yet acknowledged.
    backlog_in_flight: usize,
    /// Backlog records sent ahead of their turn (priority records), per lane.
    sent_early: [BTreeSet<u64>; 3],
    pacer: Pacer,
    stopping: bool,
    /// The backlog found at connect is still being replayed: when it is all
    /// released, the retained status is refreshed at once (not at the next
    /// `status_interval`), so it does not report a backlog that is gone.
    draining: bool,
    /// The Sparkplug edge node of this connection.
    node: Option<EdgeNode>,
    /// Sparkplug births went out (with a primary host: once it is online).
    born: bool,
    /// What the primary host's last `STATE` said.
    host_online: Option<bool>,
}

impl<'a> Session<'a> {
    /// Connects and forwards until `cancel` or an error.
    pub(super) async fn run(
        cfg: &'a UplinkConfig,
        journal: &'a Arc<Mutex<Journal>>,
        wake: &Notify,
        cancel: &CancellationToken,
        stats: &'a UplinkStats,
    ) -> Result<Stop, UplinkError> {
        let window = usize::from(cfg.window.max(1));
        let node = cfg.sparkplug.as_ref().map(|l| l.node());
        // Room for a window of publishes, the status, and a birth or scan burst
        // with the outage's history (500 changes per message).
        let spb = node.as_ref().map_or(0, |n| {
            let history = cfg.sparkplug.as_ref().map_or(0, |l| l.cfg.history);
            2 * (n.devices() + 1) + history / 500 + n.devices() + 1
        });
        let (client, mut eventloop) =
            AsyncClient::new(options(cfg, node.as_ref()), window * 2 + 8 + spb);
        // Connect (rumqttc connects on the first poll).
        let connack = tokio::select! {
            _ = cancel.cancelled() => return Ok(Stop::Cancelled),
            r = tokio::time::timeout(cfg.connect_timeout, eventloop.poll()) => r,
        };
        match connack {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack))))
                if ack.code == ConnectReturnCode::Success => {}
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                return Err(UplinkError::Refused(ack.code));
            }
            Ok(Ok(other)) => return Err(UplinkError::UnexpectedFirstPacket(format!("{other:?}"))),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(UplinkError::NoConnAck(cfg.connect_timeout)),
        }
        stats.connected.store(true, Ordering::Relaxed);
        stats.connects.fetch_add(1, Ordering::Relaxed);
        let mut s = Session {
            cfg,
            journal,
            stats,
            client,
            window,
            cursors: cursors(&lock(journal)),
            queued: VecDeque::new(),
            in_flight: HashMap::new(),
            outstanding: 0,
            backlog_in_flight: 0,
            sent_early: Default::default(),
            pacer: Pacer::new(cfg.replay_rate, cfg.window),
            stopping: false,
            draining: false,
            node,
            born: false,
            host_online: None,
        };
        let backlog: u64 = s.cursors.iter().map(|c| c.live_start - c.backlog).sum();
        s.draining = backlog > 0;
        tracing::info!(host = %cfg.host, port = cfg.port, backlog, "uplink connected");
        s.publish_status("online")?;
        s.subscribe_commands()?;
        s.subscribe_sparkplug()?;
        s.birth()?;
        s.send_priority()?;
        s.forward(&mut eventloop, wake, cancel).await
    }

    /// Remote operations: subscribes to the requests and announces, retained,
    /// what this agent accepts.
    fn subscribe_commands(&mut self) -> Result<(), UplinkError> {
        let Some(link) = &self.cfg.commands else {
            return Ok(());
        };
        self.client
            .try_subscribe(format!("{}+/+", link.base), QoS::AtLeastOnce)?;
        let topic = format!(
            "{}/{}/capabilities",
            self.cfg.topic_prefix, self.cfg.agent_id
        );
        self.client
            .try_publish(topic, QoS::AtLeastOnce, true, link.capabilities.clone())?;
        self.queued.push_back(Target::Status);
        self.outstanding += 1;
        Ok(())
    }

    /// A remote-operation request: to the executor, which checks and runs it.
    fn on_request(&self, topic: &str, payload: &[u8]) -> bool {
        let Some(link) = &self.cfg.commands else {
            return false;
        };
        if !topic.starts_with(&link.base) {
            return false;
        }
        if link
            .tx
            .try_send((topic.to_string(), payload.to_vec()))
            .is_err()
        {
            self.stats.commands_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%topic, "remote command dropped: the executor's queue is full");
        }
        true
    }

    /// Sparkplug: subscribes to the node's commands and its primary host's state.
    fn subscribe_sparkplug(&mut self) -> Result<(), UplinkError> {
        let Some(node) = &self.node else {
            return Ok(());
        };
        for t in node.command_topics().into_iter().chain(node.state_topic()) {
            self.client.try_subscribe(t, QoS::AtLeastOnce)?;
        }
        Ok(())
    }

    /// Sparkplug: publishes the births, unless a primary host is not online yet.
    fn birth(&mut self) -> Result<(), UplinkError> {
        let Some(link) = &self.cfg.sparkplug else {
            return Ok(());
        };
        let Some(node) = self.node.as_mut() else {
            return Ok(());
        };
        if node.state_topic().is_some() && !self.born && self.host_online != Some(true) {
            tracing::info!("Sparkplug births wait for the primary host's STATE online");
            return Ok(());
        }
        let (tags, active) = ((link.tags)(), (link.alerts)());
        self.born = true;
        let mut births = node.births(now_ms(), &tags, &active);
        for (topic, payload) in births.iter().filter(|(_, p)| p.len() > 1 << 20) {
            tracing::warn!(
                %topic,
                bytes = payload.len(),
                "Sparkplug birth larger than 1 MiB: many brokers refuse such packets by default (EMQX: 1 MB); raise the broker's maximum packet size, or split the driver's tags over several drivers"
            );
        }
        // What changed while disconnected, after the births, flagged historical.
        let outage = link.take_outage();
        births.extend(node.historical(&outage));
        tracing::info!(
            bd_seq = node.bd_seq(),
            messages = births.len(),
            "Sparkplug births"
        );
        self.publish_sparkplug(births)
    }

    /// Sparkplug: the changes since the last scan.
    fn scan(&mut self) -> Result<(), UplinkError> {
        let (Some(link), Some(node)) = (&self.cfg.sparkplug, self.node.as_mut()) else {
            return Ok(());
        };
        if !self.born {
            return Ok(());
        }
        let now = now_ms();
        let mut msgs = node.changes(now, &(link.tags)());
        match node.alert_changes(now, &(link.alerts)()) {
            Some(alerts) => msgs.extend(alerts),
            // An alert of a detector the birth did not name: born again with it.
            None => {
                self.publish_sparkplug(msgs)?;
                return self.birth();
            }
        }
        self.publish_sparkplug(msgs)
    }

    fn publish_sparkplug(&mut self, msgs: Vec<SpbMessage>) -> Result<(), UplinkError> {
        for (topic, payload) in msgs {
            self.client
                .try_publish(topic, QoS::AtMostOnce, false, payload)?;
            self.queued.push_back(Target::Sparkplug);
            self.stats
                .sparkplug_published
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// A message on a subscribed topic: the primary host's state or a command.
    fn on_message(&mut self, topic: &str, payload: &[u8]) -> Result<Option<Desync>, UplinkError> {
        match self
            .node
            .as_mut()
            .and_then(|n| n.host_state(topic, payload))
        {
            Some(true) => {
                self.host_online = Some(true);
                if !self.born {
                    tracing::info!("Sparkplug primary host online");
                    self.birth()?;
                }
                return Ok(None);
            }
            Some(false) => {
                self.host_online = Some(false);
                if self.born {
                    // End the session: the host will see it die and be born again.
                    if let Some(n) = &self.node {
                        let death = n.death(now_ms());
                        self.publish_sparkplug(vec![death])?;
                    }
                    return Ok(Some(Desync::PrimaryHostOffline));
                }
                return Ok(None);
            }
            None => {}
        }
        self.on_command(topic, payload)?;
        Ok(None)
    }

    /// A Sparkplug command.
    fn on_command(&mut self, topic: &str, payload: &[u8]) -> Result<(), UplinkError> {
        let Some(cmd) = self.node.as_ref().and_then(|n| n.command(topic, payload)) else {
            return Ok(());
        };
        match cmd {
            Command::Rebirth => {
                self.stats
                    .sparkplug_rebirths
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!("Sparkplug rebirth requested");
                self.birth()
            }
            Command::Write {
                device,
                values,
                refused,
            } => {
                for why in &refused {
                    self.stats
                        .sparkplug_commands_refused
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%topic, reason = %why, "Sparkplug DCMD metric refused");
                }
                self.spawn_writes(topic, device, values);
                Ok(())
            }
            Command::Refused(why) => {
                self.stats
                    .sparkplug_commands_refused
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%topic, reason = %why, "Sparkplug command refused");
                Ok(())
            }
        }
    }

    /// A DCMD's writes, in order, off the connection's loop (a write may wait
    /// for its device for seconds). Each is audited by the write path; the new
    /// values reach the host in DDATA.
    fn spawn_writes(&self, topic: &str, device: String, values: Vec<(String, f64)>) {
        let Some(link) = &self.cfg.sparkplug else {
            return;
        };
        let writes = link.writes.clone();
        let by = match &link.cfg.primary_host {
            Some(h) => format!("sparkplug host {h} ({topic})"),
            None => format!("sparkplug ({topic})"),
        };
        tokio::spawn(async move {
            for (signal, value) in values {
                let order = WriteOrder {
                    signal,
                    value,
                    source: WriteSource::Sparkplug,
                    by: by.clone(),
                };
                let r = writes.write(order).await;
                if !r.is_successful() {
                    tracing::warn!(%device, signal = %r.signal, reason = r.reason.as_deref().unwrap_or(""), "Sparkplug DCMD write not done");
                }
            }
        });
    }

    /// The connection's main loop.
    async fn forward(
        &mut self,
        eventloop: &mut EventLoop,
        wake: &Notify,
        cancel: &CancellationToken,
    ) -> Result<Stop, UplinkError> {
        let every = self.cfg.status_interval;
        let mut status_tick = tokio::time::interval_at(Instant::now() + every, every);
        let scan_every = self
            .cfg
            .sparkplug
            .as_ref()
            .map_or(Duration::from_secs(3600), |l| l.cfg.scan);
        let mut scan_tick = tokio::time::interval_at(Instant::now() + scan_every, scan_every);
        scan_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let sparkplug = self.node.is_some();
        loop {
            let backlog_waiting = if self.stopping {
                false
            } else {
                self.fill_window()?
            };
            self.stats
                .in_flight
                .store(self.outstanding as u64, Ordering::Relaxed);
            if self.draining && self.outstanding == 0 && !backlog_waiting && self.backlog_sent() {
                self.draining = false;
                tracing::info!("uplink backlog delivered");
                self.publish_status("online")?;
            }
            if self.stopping && self.outstanding == 0 {
                let _ = self.client.try_disconnect();
                // Let the DISCONNECT go out.
                let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
                return Ok(Stop::Cancelled);
            }
            // A fixed rate wakes the loop when it allows more; auto pacing and a
            // full window wait for PUBACKs.
            let refill_in = self.pacer.next_in();
            let paced = backlog_waiting && refill_in.is_some();
            let refill_in = refill_in.unwrap_or(Duration::from_secs(3600));
            let stopping = self.stopping;
            tokio::select! {
                ev = eventloop.poll() => {
                    if let Some(stop) = self.on_event(ev?)? {
                        return Ok(Stop::Reconnect(stop));
                    }
                }
                _ = wake.notified(), if !stopping => {}
                _ = status_tick.tick(), if !stopping && self.outstanding < self.window => {
                    // Refresh the retained status with the journal's counters (a
                    // full request queue skips one refresh).
                    let _ = self.publish_status("online");
                }
                _ = tokio::time::sleep(refill_in), if paced && !stopping => {}
                _ = scan_tick.tick(), if sparkplug && !stopping => self.scan()?,
                _ = cancel.cancelled(), if !stopping => {
                    // Clean stop: say offline (retained), wait briefly for what is in flight.
                    self.stopping = true;
                    // A clean DISCONNECT sends no will: the node's death goes first.
                    if let Some(n) = &self.node {
                        let death = n.death(now_ms());
                        let _ = self.publish_sparkplug(vec![death]);
                    }
                    let _ = self.publish_status("offline");
                }
                _ = tokio::time::sleep(Duration::from_secs(3)), if stopping => {
                    let _ = self.client.try_disconnect();
                    return Ok(Stop::Cancelled);
                }
            }
        }
    }

    /// Sends the backlog's priority records (system alerts about the agent, such as
    /// a full disk) before the rest of it; live records go first anyway.
    fn send_priority(&mut self) -> Result<(), UplinkError> {
        for lane in Lane::ALL {
            let li = lane as usize;
            let seqs = lock(self.journal).priority_pending(lane, self.cursors[li].live_start);
            for seq in seqs {
                if self.outstanding >= self.window {
                    return Ok(());
                }
                let rec = lock(self.journal).read(lane, seq, 1)?.into_iter().next();
                let Some(rec) = rec.filter(|r| r.seq == seq) else {
                    continue;
                };
                if self.publish_record(lane, &rec)? {
                    self.outstanding += 1;
                    self.backlog_in_flight += 1;
                }
                self.sent_early[li].insert(seq);
            }
        }
        Ok(())
    }

    /// Whether every lane's backlog from before the connection has been sent.
    fn backlog_sent(&self) -> bool {
        self.cursors.iter().all(|c| c.backlog >= c.live_start)
    }

    /// Publishes the retained status (`online` carries the journal's counters).
    fn publish_status(&mut self, state: &str) -> Result<(), UplinkError> {
        let journal = (state == "online").then(|| lock(self.journal).stats());
        let body = self.cfg.status_payload(state, journal.as_ref());
        self.client
            .try_publish(self.cfg.topics().status(), QoS::AtLeastOnce, true, body)?;
        self.queued.push_back(Target::Status);
        self.outstanding += 1;
        Ok(())
    }

    /// Fills the window: per lane in priority order, live records first, then the
    /// backlog within the replay budget. `true` when backlog waits for the budget.
    fn fill_window(&mut self) -> Result<bool, UplinkError> {
        for lane in Lane::ALL {
            self.send_live(lane)?;
            if self.send_backlog(lane)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn send_live(&mut self, lane: Lane) -> Result<(), UplinkError> {
        let li = lane as usize;
        while self.outstanding < self.window {
            let want = self.window - self.outstanding;
            let live = lock(self.journal).read(lane, self.cursors[li].live, want)?;
            if live.is_empty() {
                break;
            }
            for rec in live {
                if self.publish_record(lane, &rec)? {
                    self.outstanding += 1;
                }
                self.cursors[li].live = rec.seq + 1;
            }
        }
        Ok(())
    }

    /// `true` when the pacing held back backlog that the window had room for.
    fn send_backlog(&mut self, lane: Lane) -> Result<bool, UplinkError> {
        let li = lane as usize;
        while self.outstanding < self.window
            && self.cursors[li].backlog < self.cursors[li].live_start
        {
            let allowed = self.pacer.allowance(self.backlog_in_flight);
            if allowed == 0 {
                return Ok(true);
            }
            let c = self.cursors[li];
            let want = (self.window - self.outstanding).min(allowed);
            let recs: Vec<Record> = lock(self.journal)
                .read(lane, c.backlog, want)?
                .into_iter()
                .filter(|r| r.seq < c.live_start)
                .collect();
            if recs.is_empty() {
                self.cursors[li].backlog = c.live_start;
                break;
            }
            for rec in recs {
                // A priority record already went out at connect.
                if self.sent_early[li].contains(&rec.seq) {
                    self.cursors[li].backlog = rec.seq + 1;
                    continue;
                }
                if self.publish_record(lane, &rec)? {
                    self.outstanding += 1;
                    self.backlog_in_flight += 1;
                    self.pacer.sent(1);
                }
                self.cursors[li].backlog = rec.seq + 1;
            }
        }
        Ok(false)
    }

    /// Queues one record's publish; `false` when the record could not be decoded
    /// (it is released so that it cannot block its lane forever).
    fn publish_record(&mut self, lane: Lane, rec: &Record) -> Result<bool, UplinkError> {
        let Some(env) = Envelope::decode(&rec.payload) else {
            tracing::error!(
                lane = lane.name(),
                seq = rec.seq,
                "undecodable journal record skipped"
            );
            self.stats.undeliverable.fetch_add(1, Ordering::Relaxed);
            lock(self.journal).ack(lane, rec.seq);
            return Ok(false);
        };
        let topic = self.cfg.topics().record(lane, &env.asset);
        self.client
            .try_publish(topic, QoS::AtLeastOnce, false, env.body)?;
        self.queued.push_back(Target::Record(lane, rec.seq));
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Follows one event of the connection: packet ids of our publishes, PUBACKs.
    fn on_event(&mut self, ev: Event) -> Result<Option<Desync>, UplinkError> {
        match ev {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let Some(t) = self.queued.pop_front() else {
                    return Ok(Some(Desync::Unqueued(pkid)));
                };
                if t != Target::Sparkplug {
                    self.in_flight.insert(pkid, (t, Instant::now()));
                }
            }
            Event::Incoming(Packet::Publish(p)) => {
                if self.on_request(&p.topic, &p.payload) {
                    return Ok(None);
                }
                if let Some(stop) = self.on_message(&p.topic, &p.payload)? {
                    return Ok(Some(stop));
                }
            }
            Event::Outgoing(Outgoing::AwaitAck(pkid)) => return Ok(Some(Desync::Collision(pkid))),
            Event::Incoming(Packet::PubAck(ack)) => match self.in_flight.remove(&ack.pkid) {
                Some((Target::Record(lane, seq), sent)) => {
                    lock(self.journal).ack(lane, seq);
                    self.stats.acked.fetch_add(1, Ordering::Relaxed);
                    self.outstanding = self.outstanding.saturating_sub(1);
                    if seq < self.cursors[lane as usize].live_start {
                        self.backlog_in_flight = self.backlog_in_flight.saturating_sub(1);
                        self.pacer.acked(sent.elapsed());
                    }
                }
                Some((Target::Status, _)) => {
                    self.outstanding = self.outstanding.saturating_sub(1);
                }
                Some((Target::Sparkplug, _)) => {}
                None => tracing::debug!(pkid = ack.pkid, "PUBACK for an unknown packet id"),
            },
            _ => {}
        }
        Ok(None)
    }
}

/// A fresh client's options: the last will says `offline`, or is the Sparkplug
/// node's `NDEATH` (QoS 1, not retained, this connection's `bdSeq`).
fn options(cfg: &UplinkConfig, node: Option<&EdgeNode>) -> MqttOptions {
    let mut opts = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    opts.set_keep_alive(cfg.keep_alive);
    opts.set_clean_session(false);
    opts.set_inflight(cfg.window.saturating_mul(4).max(4));
    // A Sparkplug DBIRTH holds every metric of a driver (~70 bytes each): room for
    // large drivers; the JSON records are small.
    let outgoing = if node.is_some() { 64 << 20 } else { 1 << 20 };
    opts.set_max_packet_size(1 << 20, outgoing);
    let will = match node {
        Some(n) => {
            let (topic, payload) = n.death(now_ms());
            LastWill::new(topic, payload, QoS::AtLeastOnce, false)
        }
        None => LastWill::new(
            cfg.topics().status(),
            cfg.status_payload("offline", None),
            QoS::AtLeastOnce,
            true,
        ),
    };
    opts.set_last_will(will);
    if let Some(tls) = &cfg.tls {
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.clone(),
        )));
    }
    if let Some(user) = &cfg.username {
        opts.set_credentials(user.clone(), cfg.password.clone().unwrap_or_default());
    }
    opts
}

/// Everything unreleased is re-sent; live records (appended from now on) first.
fn cursors(j: &Journal) -> Vec<Cursor> {
    Lane::ALL
        .iter()
        .map(|&l| {
            let live_start = j.next_seq(l);
            Cursor {
                live: live_start,
                backlog: j.acked(l) + 1,
                live_start,
            }
        })
        .collect()
}
