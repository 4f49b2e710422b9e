//! The session task: one tokio task per peer owns its FSM, its TCP
//! connections (at most two, during a collision) and its timers.
//!
//! It turns socket bytes and timer deadlines into [`Event`]s for the pure
//! [`Fsm`], performs the [`Action`]s it returns, decodes UPDATEs (applying
//! the codec's RFC 7606 disposition) and hands routes to the speaker task
//! over a bounded channel, which is the backpressure: a busy speaker slows
//! reading from the socket, and TCP slows the peer. The other direction
//! never blocks the speaker: it fills the peer's [`Outbox`], which this
//! task drains only when the connection's small write queue has room.

pub mod conn;
pub mod outbox;
pub mod socket;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::codec::{
    CeaseSubcode, DecodeError, Disposition, Family, Frame, GracefulRestart, GracefulRestartFamily,
    Message, MessageType, MpUnreach, NextHop, Notification, NotificationCode, Open, OpenCheck,
    Prefix, Received, RouteRefresh, RouteRefreshSubtype, SessionContext, Update, decode_keepalive,
    decode_message, decode_notification, decode_open, encode_to_vec, pack,
};
use crate::config::{AddressFamily, GracefulRestartConfig, PeerConfig};
use crate::fsm::{Action, ConnId, DownReason, Event, Fsm, FsmConfig, State, Timer};
use crate::rib::AttrRef;
use crate::status::{MessageCounters, Negotiated, PeerGracefulRestart};
use conn::{ConnEvent, Connection};
use outbox::{Marker, OutItem, Outbox};

/// Routes taken from the outbox per write.
const BATCH: usize = 2048;

/// How long a closing connection may take to flush its last NOTIFICATION.
const LINGER: Duration = Duration::from_secs(2);

/// Speaker-wide values every session needs.
#[derive(Clone, Debug)]
pub struct SessionParams {
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Our AS.
    pub local_as: u32,
    /// Graceful restart settings.
    pub graceful_restart: GracefulRestartConfig,
}

/// Orders from the speaker to a session (never blocks the speaker).
#[derive(Debug)]
pub enum SessionCommand {
    /// Administrative start.
    Start,
    /// Administrative stop with this NOTIFICATION.
    Stop(Notification),
    /// The peer connected to our listener.
    Incoming(TcpStream),
    /// Reset the session with this NOTIFICATION (prefix limit).
    Reset(Notification),
    /// Ask the peer to re-send its routes.
    SendRouteRefresh(Family),
    /// New settings that need the session torn down and started again.
    Reconfigure(PeerConfig),
    /// End the task: with `graceful_restart`, drop connections without a
    /// NOTIFICATION (peers keep our routes); otherwise send Cease.
    Shutdown {
        /// Close without NOTIFICATION.
        graceful_restart: bool,
    },
}

/// What a session tells the speaker.
#[derive(Debug)]
pub enum SessionEvent {
    /// The session is Established.
    Established {
        /// Which session.
        key: u64,
        /// Details.
        info: Box<EstablishedInfo>,
    },
    /// The Established session went down.
    Down {
        /// Which session.
        key: u64,
        /// Why.
        reason: DownReason,
    },
    /// Routes (withdrawals and announcements) to apply, in order.
    Updates {
        /// Which session.
        key: u64,
        /// The UPDATEs, after their RFC 7606 dispositions.
        updates: Vec<Update>,
    },
    /// End-of-RIB from the peer.
    EndOfRib {
        /// Which session.
        key: u64,
        /// The family.
        family: Family,
    },
    /// The peer sent ROUTE-REFRESH (request, BoRR or EoRR).
    RouteRefresh {
        /// Which session.
        key: u64,
        /// The message.
        refresh: RouteRefresh,
    },
}

/// What the speaker learns when a session comes up.
#[derive(Clone, Debug)]
pub struct EstablishedInfo {
    /// Our end.
    pub local: SocketAddr,
    /// The peer's end.
    pub remote: SocketAddr,
    /// The peer's OPEN.
    pub peer_open: Open,
    /// Our OPEN.
    pub our_open: Open,
    /// The negotiated context.
    pub ctx: SessionContext,
}

impl EstablishedInfo {
    /// Both sides advertised graceful restart.
    pub fn graceful_restart(&self) -> bool {
        self.peer_open.capabilities.graceful_restart.is_some()
            && self.our_open.capabilities.graceful_restart.is_some()
    }
}

/// State shared with the speaker for `peers()`.
#[derive(Clone, Debug)]
pub struct SessionStatus {
    /// FSM state.
    pub state: State,
    /// When it entered the state.
    pub since: SystemTime,
    /// Message counters.
    pub counters: MessageCounters,
    /// Why the last session or attempt ended.
    pub last_error: Option<String>,
    /// Our end of the session's connection.
    pub local: Option<SocketAddr>,
    /// The peer's end.
    pub remote: Option<SocketAddr>,
    /// The peer's BGP identifier.
    pub router_id: Option<Ipv4Addr>,
    /// Negotiated capabilities while Established.
    pub negotiated: Option<Negotiated>,
}

/// The speaker's handle on a running session task.
#[derive(Debug)]
pub struct SessionHandle {
    /// Unique per task (a re-added peer gets a new key).
    pub key: u64,
    cmd: mpsc::UnboundedSender<SessionCommand>,
    /// The peer's outbound queue.
    pub outbox: Arc<Outbox>,
    /// Live status.
    pub status: Arc<Mutex<SessionStatus>>,
    task: JoinHandle<()>,
}

impl SessionHandle {
    /// Sends a command (ignored if the task has ended).
    pub fn send(&self, c: SessionCommand) {
        let _ = self.cmd.send(c);
    }

    /// A snapshot of the status.
    pub fn status(&self) -> SessionStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits for the task to end (after [`SessionCommand::Shutdown`]).
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

/// Starts the session task for `cfg` (in Idle; send
/// [`SessionCommand::Start`]).
pub fn spawn(
    key: u64,
    cfg: PeerConfig,
    params: SessionParams,
    events: mpsc::Sender<SessionEvent>,
) -> SessionHandle {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    // Each event is at most one 64 KiB read's frames: a few in flight
    // keep the pipeline busy without buffering a table.
    let (conn_tx, conn_rx) = mpsc::channel(4);
    let outbox = Arc::new(Outbox::new());
    let status = Arc::new(Mutex::new(SessionStatus {
        state: State::Idle,
        since: SystemTime::now(),
        counters: MessageCounters::default(),
        last_error: None,
        local: None,
        remote: None,
        router_id: None,
        negotiated: None,
    }));
    let session = Session {
        key,
        fsm: Fsm::new(fsm_config(&params, &cfg)),
        cfg,
        params,
        timers: HashMap::new(),
        conns: HashMap::new(),
        next_conn: 1,
        connect_task: None,
        connect_attempt: 0,
        conn_tx,
        events,
        outbox: Arc::clone(&outbox),
        status: Arc::clone(&status),
        ctx: None,
        our_opens: HashMap::new(),
        epoch: Instant::now(),
        restart_bit: true,
        pending_updates: Vec::new(),
    };
    let task = tokio::spawn(session.run(cmd_rx, conn_rx));
    SessionHandle {
        key,
        cmd: cmd_tx,
        outbox,
        status,
        task,
    }
}

struct Session {
    key: u64,
    cfg: PeerConfig,
    params: SessionParams,
    fsm: Fsm,
    timers: HashMap<Timer, Instant>,
    conns: HashMap<ConnId, Connection>,
    next_conn: ConnId,
    connect_task: Option<JoinHandle<()>>,
    connect_attempt: u64,
    conn_tx: mpsc::Sender<ConnEvent>,
    events: mpsc::Sender<SessionEvent>,
    outbox: Arc<Outbox>,
    status: Arc<Mutex<SessionStatus>>,
    /// Negotiated context while Established.
    ctx: Option<SessionContext>,
    /// The OPEN we sent on each connection.
    our_opens: HashMap<ConnId, Open>,
    epoch: Instant,
    /// Set the Restart State bit (only until the first session after a
    /// restart is up, RFC 4724 §3).
    restart_bit: bool,
    /// UPDATEs decoded but not yet handed to the speaker.
    pending_updates: Vec<Update>,
}

/// How a step of the loop ended.
enum Flow {
    Continue,
    Exit,
}

impl Session {
    async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<SessionCommand>,
        mut conn_events: mpsc::Receiver<ConnEvent>,
    ) {
        loop {
            let deadline = self.timers.values().min().copied();
            let writer = self
                .established_conn()
                .filter(|_| !self.outbox.is_empty())
                .map(|c| c.writer());
            let idle_established = self.established_conn().is_some() && writer.is_none();
            let outbox = Arc::clone(&self.outbox);
            let flow = tokio::select! {
                biased;
                c = cmds.recv() => match c {
                    Some(c) => self.on_command(c).await,
                    None => {
                        self.shutdown(false);
                        Flow::Exit
                    }
                },
                Some(ev) = conn_events.recv() => {
                    self.on_conn_event(ev).await;
                    Flow::Continue
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.on_timers().await;
                    Flow::Continue
                }
                permit = reserve(writer.clone()), if writer.is_some() => {
                    if let Some(permit) = permit {
                        self.send_batch(permit);
                    }
                    Flow::Continue
                }
                _ = outbox.notified(), if idle_established => Flow::Continue,
            };
            if let Flow::Exit = flow {
                return;
            }
        }
    }

    fn established_conn(&self) -> Option<&Connection> {
        if self.fsm.state() != State::Established {
            return None;
        }
        self.fsm.connection().and_then(|id| self.conns.get(&id))
    }

    fn set_status(&self, f: impl FnOnce(&mut SessionStatus)) {
        let mut g = self.status.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g);
    }

    async fn on_command(&mut self, c: SessionCommand) -> Flow {
        match c {
            SessionCommand::Start => self.step(Event::Start, None).await,
            SessionCommand::Stop(n) => self.step(Event::Stop(n), None).await,
            SessionCommand::Incoming(stream) => self.incoming(stream).await,
            SessionCommand::Reset(n) => {
                if let Some(conn) = self.fsm.connection() {
                    self.step(
                        Event::ProtocolError {
                            conn,
                            notification: n,
                        },
                        None,
                    )
                    .await;
                }
            }
            SessionCommand::SendRouteRefresh(family) => self.send_route_refresh(family),
            SessionCommand::Reconfigure(cfg) => {
                let n = Notification::new(
                    NotificationCode::Cease(CeaseSubcode::OtherConfigurationChange),
                    Vec::new(),
                );
                self.step(Event::Stop(n), None).await;
                self.fsm = Fsm::new(fsm_config(&self.params, &cfg));
                self.cfg = cfg;
                self.step(Event::Start, None).await;
            }
            SessionCommand::Shutdown { graceful_restart } => {
                if graceful_restart {
                    self.shutdown(true);
                } else {
                    let n = Notification::shutdown(
                        CeaseSubcode::AdministrativeShutdown,
                        "speaker shutting down",
                    );
                    self.step(Event::Stop(n), None).await;
                    self.shutdown(false);
                }
                return Flow::Exit;
            }
        }
        Flow::Continue
    }

    /// Ends the task's connections (flushing unless `abort`).
    fn shutdown(&mut self, abort: bool) {
        if let Some(t) = self.connect_task.take() {
            t.abort();
        }
        for (_, c) in self.conns.drain() {
            if abort {
                c.abort();
            } else {
                c.close(LINGER);
            }
        }
    }

    async fn incoming(&mut self, stream: TcpStream) {
        if let Err(e) = socket::prepare_accepted(&stream, &self.cfg) {
            warn!(peer = %self.cfg.address, "cannot set options on accepted connection: {e}");
            return;
        }
        self.adopt(stream, false).await;
    }

    async fn adopt(&mut self, stream: TcpStream, outgoing: bool) {
        let id = self.next_conn;
        self.next_conn += 1;
        match Connection::spawn(id, stream, outgoing, self.conn_tx.clone(), self.epoch) {
            Ok(c) => {
                debug!(peer = %self.cfg.address, conn = id, outgoing, local = %c.local, "connection up");
                self.conns.insert(id, c);
                self.step(Event::TcpConnected { conn: id, outgoing }, None)
                    .await;
            }
            Err(e) => warn!(peer = %self.cfg.address, "connection unusable: {e}"),
        }
    }

    async fn on_conn_event(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Connected(attempt, result) => {
                if attempt != self.connect_attempt {
                    return;
                }
                self.connect_task = None;
                match result {
                    Ok(stream) => self.adopt(stream, true).await,
                    Err(e) => {
                        debug!(peer = %self.cfg.address, "connect failed: {e}");
                        self.set_status(|s| s.last_error = Some(format!("connect: {e}")));
                        self.step(Event::TcpConnectFailed, None).await;
                    }
                }
            }
            ConnEvent::Frames(conn, frames) => {
                for frame in frames {
                    self.on_frame(conn, frame).await;
                }
                self.flush_updates().await;
            }
            ConnEvent::Malformed(conn, e) => self.on_decode_error(conn, e).await,
            ConnEvent::Closed(conn, why) => {
                if self.fsm.owns(conn) {
                    debug!(peer = %self.cfg.address, conn, "connection ended: {why}");
                    self.set_status(|s| s.last_error = Some(why));
                    self.step(Event::TcpClosed { conn }, None).await;
                }
            }
        }
    }

    async fn on_decode_error(&mut self, conn: ConnId, e: DecodeError) {
        match e {
            DecodeError::Reset(n) => {
                warn!(peer = %self.cfg.address, "malformed message: sending {n}");
                self.step(
                    Event::ProtocolError {
                        conn,
                        notification: n,
                    },
                    None,
                )
                .await;
            }
            DecodeError::MalformedNotification(why) => {
                // RFC 4271 §6.4: never answer a NOTIFICATION.
                warn!(peer = %self.cfg.address, "malformed NOTIFICATION ({why}); closing");
                self.set_status(|s| s.last_error = Some(format!("malformed NOTIFICATION: {why}")));
                self.step(Event::TcpClosed { conn }, None).await;
            }
        }
    }

    fn open_check(&self) -> OpenCheck {
        OpenCheck {
            local_as: self.params.local_as,
            local_id: self.params.router_id,
            peer_as: Some(self.cfg.asn),
        }
    }

    async fn on_frame(&mut self, conn: ConnId, frame: Frame) {
        if !self.fsm.owns(conn) {
            return;
        }
        match frame.message_type {
            MessageType::Open => {
                self.count(|c| c.opens_in += 1);
                match decode_open(&frame.body, &self.open_check()) {
                    Ok(open) => {
                        self.set_status(|s| s.router_id = Some(open.bgp_id));
                        self.step(Event::OpenReceived { conn, open }, None).await
                    }
                    Err(n) => {
                        warn!(peer = %self.cfg.address, "bad OPEN: sending {n}");
                        self.step(
                            Event::ProtocolError {
                                conn,
                                notification: n,
                            },
                            None,
                        )
                        .await
                    }
                }
            }
            MessageType::Notification => {
                self.count(|c| c.notifications_in += 1);
                match decode_notification(&frame.body) {
                    Ok(n) => {
                        info!(peer = %self.cfg.address, "received {n}");
                        self.set_status(|s| s.last_error = Some(format!("received {n}")));
                        self.step(
                            Event::NotificationReceived {
                                conn,
                                notification: n,
                            },
                            None,
                        )
                        .await
                    }
                    Err(e) => self.on_decode_error(conn, e).await,
                }
            }
            MessageType::Keepalive => {
                self.count(|c| c.keepalives_in += 1);
                match decode_keepalive(&frame.body) {
                    Ok(()) => {
                        self.step(
                            Event::MessageReceived {
                                conn,
                                kind: MessageType::Keepalive,
                            },
                            None,
                        )
                        .await
                    }
                    Err(n) => {
                        self.step(
                            Event::ProtocolError {
                                conn,
                                notification: n,
                            },
                            None,
                        )
                        .await
                    }
                }
            }
            kind @ (MessageType::Update | MessageType::RouteRefresh) => {
                if kind == MessageType::Update {
                    self.count(|c| c.updates_in += 1);
                } else {
                    self.count(|c| c.route_refresh_in += 1);
                }
                self.step(Event::MessageReceived { conn, kind }, Some(&frame))
                    .await
            }
        }
    }

    fn count(&self, f: impl FnOnce(&mut MessageCounters)) {
        self.set_status(|s| f(&mut s.counters));
    }

    /// Feeds an event to the FSM and performs the resulting actions.
    async fn step(&mut self, event: Event, frame: Option<&Frame>) {
        let actions = self.fsm.handle(event);
        self.perform(actions, frame).await;
        let state = self.fsm.state();
        self.set_status(|s| {
            if s.state != state {
                s.state = state;
                s.since = SystemTime::now();
            }
        });
    }

    /// Performs actions. Boxed because delivering a frame can trigger a
    /// protocol error, which steps the FSM again.
    fn perform<'a>(
        &'a mut self,
        actions: Vec<Action>,
        frame: Option<&'a Frame>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            for a in actions {
                match a {
                    Action::Connect => self.connect(),
                    Action::CancelConnect => {
                        if let Some(t) = self.connect_task.take() {
                            t.abort();
                        }
                        self.connect_attempt += 1;
                    }
                    Action::SendOpen(conn) => {
                        let open = self.our_open();
                        self.our_opens.insert(conn, open.clone());
                        self.send_message(conn, &Message::Open(open));
                        self.count(|c| c.opens_out += 1);
                    }
                    Action::SendKeepalive(conn) => {
                        self.send_message(conn, &Message::Keepalive);
                        self.count(|c| c.keepalives_out += 1);
                    }
                    Action::SendNotification(conn, n) => {
                        self.send_message(conn, &Message::Notification(n.clone()));
                        self.count(|c| c.notifications_out += 1);
                        if self.fsm.connection() == Some(conn) || !self.fsm.owns(conn) {
                            self.set_status(|s| s.last_error = Some(format!("sent {n}")));
                        }
                    }
                    Action::Close(conn) => {
                        self.our_opens.remove(&conn);
                        if let Some(c) = self.conns.remove(&conn) {
                            c.close(LINGER);
                        }
                    }
                    Action::StartTimer(t, d) => {
                        self.timers.insert(t, Instant::now() + d);
                    }
                    Action::StopTimer(t) => {
                        self.timers.remove(&t);
                    }
                    Action::Deliver(conn) => {
                        if let Some(f) = frame {
                            self.deliver(conn, f).await;
                        }
                    }
                    Action::Established(conn) => self.established(conn).await,
                    Action::Down(reason) => {
                        // Routes received before the end still count (the
                        // speaker decides what to keep).
                        self.flush_updates().await;
                        info!(peer = %self.cfg.address, "session down: {reason}");
                        self.ctx = None;
                        self.outbox.clear();
                        self.set_status(|s| {
                            s.negotiated = None;
                            s.last_error = Some(reason.to_string());
                        });
                        let _ = self
                            .events
                            .send(SessionEvent::Down {
                                key: self.key,
                                reason,
                            })
                            .await;
                    }
                }
            }
        })
    }

    fn connect(&mut self) {
        if let Some(t) = self.connect_task.take() {
            t.abort();
        }
        self.connect_attempt += 1;
        let attempt = self.connect_attempt;
        let cfg = self.cfg.clone();
        let tx = self.conn_tx.clone();
        let timeout = Duration::from_secs(u64::from(cfg.connect_retry_time.max(1)));
        self.connect_task = Some(tokio::spawn(async move {
            let r = socket::connect(&cfg, timeout).await;
            let _ = tx.send(ConnEvent::Connected(attempt, r)).await;
        }));
    }

    fn our_open(&self) -> Open {
        let families = self.cfg.family_list();
        let mut caps = crate::codec::Capabilities {
            multiprotocol: families.clone(),
            route_refresh: true,
            enhanced_route_refresh: true,
            ..Default::default()
        };
        let gr = &self.params.graceful_restart;
        if gr.enabled && self.cfg.graceful_restart {
            caps.graceful_restart = Some(GracefulRestart {
                restart_state: gr.restarting && self.restart_bit,
                // Without the N bit (RFC 8538) a NOTIFICATION always ends
                // graceful restart, which keeps "Cease" meaning "forget".
                notification: false,
                restart_time: gr.restart_time,
                families: families
                    .iter()
                    .map(|&family| GracefulRestartFamily {
                        family,
                        forwarding_state: gr.restarting,
                    })
                    .collect(),
            });
        }
        Open::new(
            self.params.local_as,
            self.cfg.hold_time,
            self.params.router_id,
            caps,
        )
    }

    fn encode_ctx(&self) -> SessionContext {
        self.ctx
            .clone()
            .unwrap_or_else(|| SessionContext::new(self.params.local_as, self.cfg.asn))
    }

    fn send_message(&self, conn: ConnId, msg: &Message) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        match encode_to_vec(msg, &self.encode_ctx()) {
            Ok(bytes) => {
                if !c.send_now(bytes) {
                    debug!(peer = %self.cfg.address, "write queue full; {:?} dropped", msg.message_type());
                }
            }
            Err(e) => {
                warn!(peer = %self.cfg.address, "cannot encode {:?}: {e}", msg.message_type())
            }
        }
    }

    fn send_route_refresh(&mut self, family: Family) {
        let Some(conn) = self.established_conn().map(|c| c.id) else {
            return;
        };
        if !self
            .ctx
            .as_ref()
            .is_some_and(|c| c.route_refresh && c.has_family(family))
        {
            debug!(peer = %self.cfg.address, "route refresh for {family} not negotiated");
            return;
        }
        self.send_message(conn, &Message::RouteRefresh(RouteRefresh::request(family)));
        self.count(|c| c.route_refresh_out += 1);
    }

    async fn established(&mut self, conn: ConnId) {
        let (Some(c), Some(peer_open), Some(our_open)) = (
            self.conns.get(&conn),
            self.fsm.peer_open().cloned(),
            self.our_opens.get(&conn).cloned(),
        ) else {
            return;
        };
        let ctx = SessionContext::negotiate(&our_open, &peer_open);
        let info = EstablishedInfo {
            local: c.local,
            remote: c.remote,
            peer_open: peer_open.clone(),
            our_open,
            ctx: ctx.clone(),
        };
        info!(peer = %self.cfg.address, local = %c.local, "session established");
        self.restart_bit = false;
        let negotiated = negotiated(&info, self.fsm.hold_time(), self.fsm.keepalive_time());
        let (local, remote) = (c.local, c.remote);
        self.set_status(|s| {
            s.negotiated = Some(negotiated);
            s.local = Some(local);
            s.remote = Some(remote);
            s.router_id = Some(peer_open.bgp_id);
            s.counters.established_transitions += 1;
        });
        self.ctx = Some(ctx);
        let _ = self
            .events
            .send(SessionEvent::Established {
                key: self.key,
                info: Box::new(info),
            })
            .await;
    }

    /// Processes a delivered UPDATE or ROUTE-REFRESH.
    async fn deliver(&mut self, conn: ConnId, frame: &Frame) {
        let Some(ctx) = self.ctx.as_ref() else { return };
        match decode_message(frame, ctx) {
            Ok(Received::Update(d)) => {
                if !d.faults.is_empty() {
                    self.count(|c| c.malformed_updates_in += 1);
                    for f in &d.faults {
                        warn!(
                            peer = %self.cfg.address,
                            attribute = ?f.type_code,
                            action = ?f.action,
                            "malformed UPDATE: {}", f.reason
                        );
                    }
                }
                let update = match d.disposition {
                    Disposition::Accept | Disposition::AttributeDiscard => {
                        if d.disposition == Disposition::Accept
                            && let Some(family) = d.update.end_of_rib_family()
                        {
                            self.flush_updates().await;
                            let _ = self
                                .events
                                .send(SessionEvent::EndOfRib {
                                    key: self.key,
                                    family,
                                })
                                .await;
                            return;
                        }
                        d.update
                    }
                    Disposition::IgnoreRoutes => Update {
                        nlri: Vec::new(),
                        mp_reach: None,
                        ..d.update
                    },
                    Disposition::TreatAsWithdraw => as_withdrawals(&d.update),
                    Disposition::AfiSafiDisable { notification, .. }
                    | Disposition::SessionReset(notification) => {
                        // Per-family disabling is not implemented: reset,
                        // as RFC 7606 §5.3 allows.
                        self.step(Event::ProtocolError { conn, notification }, None)
                            .await;
                        return;
                    }
                };
                // Batched: sent when the read's frames are done, or before
                // any other event so order is kept.
                self.pending_updates.push(update);
            }
            Ok(Received::RouteRefresh(refresh)) => {
                self.flush_updates().await;
                let _ = self
                    .events
                    .send(SessionEvent::RouteRefresh {
                        key: self.key,
                        refresh,
                    })
                    .await;
            }
            Ok(Received::Ignored(why)) => debug!(peer = %self.cfg.address, "ignored: {why}"),
            Ok(other) => debug!(peer = %self.cfg.address, "unexpected delivery {other:?}"),
            Err(e) => self.on_decode_error(conn, e).await,
        }
    }

    /// Hands the UPDATEs decoded so far to the speaker.
    async fn flush_updates(&mut self) {
        if self.pending_updates.is_empty() {
            return;
        }
        let updates = std::mem::take(&mut self.pending_updates);
        let _ = self
            .events
            .send(SessionEvent::Updates {
                key: self.key,
                updates,
            })
            .await;
    }

    async fn on_timers(&mut self) {
        let now = Instant::now();
        let due: Vec<Timer> = self
            .timers
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in due {
            self.timers.remove(&t);
            if t == Timer::SendHold
                && let Some(c) = self.established_conn()
                && let Some(limit) = self.cfg.effective_send_hold(self.fsm.hold_time())
                && c.last_progress() + limit > now
            {
                // Writes completed since the timer was armed: re-arm.
                self.step(Event::SendProgress, None).await;
                continue;
            }
            self.step(Event::TimerExpired(t), None).await;
        }
    }

    /// Encodes a batch from the outbox into one write.
    fn send_batch(&mut self, permit: mpsc::OwnedPermit<Vec<u8>>) {
        let Some(ctx) = self.ctx.clone() else { return };
        let items = self.outbox.take(BATCH);
        let mut buf = Vec::new();
        let mut updates = 0u64;
        let mut refresh = 0u64;
        let mut group = Grouper::default();
        for item in items {
            match item {
                OutItem::Route(p, attrs) => group.add(p, attrs),
                OutItem::Marker(m) => {
                    updates += group.flush(&ctx, &mut buf, &self.cfg.address);
                    let msg = match m {
                        Marker::EndOfRib(f) => {
                            updates += 1;
                            Message::Update(Update::end_of_rib(f))
                        }
                        Marker::BeginRefresh(family) | Marker::EndRefresh(family) => {
                            refresh += 1;
                            let subtype = if matches!(m, Marker::BeginRefresh(_)) {
                                RouteRefreshSubtype::BeginningOfRouteRefresh
                            } else {
                                RouteRefreshSubtype::EndOfRouteRefresh
                            };
                            Message::RouteRefresh(RouteRefresh { family, subtype })
                        }
                    };
                    if let Ok(b) = encode_to_vec(&msg, &ctx) {
                        buf.extend_from_slice(&b);
                    }
                }
            }
        }
        updates += group.flush(&ctx, &mut buf, &self.cfg.address);
        self.count(|c| {
            c.updates_out += updates;
            c.route_refresh_out += refresh;
        });
        if !buf.is_empty() {
            permit.send(buf);
        }
    }
}

/// Collects a batch's routes into UPDATEs: withdrawals per family,
/// announcements per (family, attribute set), in first-seen order.
#[derive(Default)]
struct Grouper {
    withdraw: Vec<(Family, Vec<Prefix>)>,
    announce: Vec<(Family, AttrRef, Vec<Prefix>)>,
}

impl Grouper {
    fn add(&mut self, p: Prefix, attrs: Option<AttrRef>) {
        let family = if p.is_ipv4() {
            Family::IPV4_UNICAST
        } else {
            Family::IPV6_UNICAST
        };
        match attrs {
            None => match self.withdraw.iter_mut().find(|(f, _)| *f == family) {
                Some((_, v)) => v.push(p),
                None => self.withdraw.push((family, vec![p])),
            },
            Some(a) => {
                // Consecutive prefixes usually share the last set.
                match self
                    .announce
                    .iter_mut()
                    .rev()
                    .find(|(f, x, _)| *f == family && Arc::ptr_eq(x, &a))
                {
                    Some((_, _, v)) => v.push(p),
                    None => self.announce.push((family, a, vec![p])),
                }
            }
        }
    }

    /// Appends the UPDATEs to `buf`; returns how many.
    fn flush(&mut self, ctx: &SessionContext, buf: &mut Vec<u8>, peer: &IpAddr) -> u64 {
        let mut n = 0;
        let mut emit = |updates: Result<Vec<Update>, crate::codec::EncodeError>| match updates {
            Ok(us) => {
                for u in us {
                    match encode_to_vec(&Message::Update(u), ctx) {
                        Ok(b) => {
                            buf.extend_from_slice(&b);
                            n += 1;
                        }
                        Err(e) => warn!(%peer, "cannot encode UPDATE: {e}"),
                    }
                }
            }
            Err(e) => warn!(%peer, "cannot pack UPDATE: {e}"),
        };
        for (family, prefixes) in self.withdraw.drain(..) {
            emit(pack::withdrawals(family, &prefixes, ctx));
        }
        for (family, attrs, prefixes) in self.announce.drain(..) {
            let mut pa = attrs.attrs.clone();
            let next_hop = attrs.next_hop;
            if family == Family::IPV4_UNICAST {
                pa.next_hop = match next_hop {
                    Some(NextHop::V4(a)) => Some(a),
                    _ => {
                        warn!(%peer, "no IPv4 next hop for {} prefixes", prefixes.len());
                        continue;
                    }
                };
            }
            emit(pack::announcements(&pa, family, next_hop, &prefixes, ctx));
        }
        n
    }
}

/// RFC 7606 treat-as-withdraw: every prefix the UPDATE touched, withdrawn.
fn as_withdrawals(u: &Update) -> Update {
    let mut out = Update::default();
    let mut v6: Vec<Prefix> = Vec::new();
    for (family, p) in u.all_prefixes() {
        if family == Family::IPV4_UNICAST {
            out.withdrawn.push(*p);
        } else if family == Family::IPV6_UNICAST {
            v6.push(*p);
        }
    }
    if !v6.is_empty() {
        out.mp_unreach = Some(MpUnreach {
            family: Family::IPV6_UNICAST,
            withdrawn: v6,
        });
    }
    out
}

fn negotiated(info: &EstablishedInfo, hold: u16, keepalive: u16) -> Negotiated {
    let fam = |fs: &[Family]| -> Vec<AddressFamily> {
        fs.iter()
            .filter_map(|f| AddressFamily::from_family(*f))
            .collect()
    };
    let peer_gr = info
        .peer_open
        .capabilities
        .graceful_restart
        .as_ref()
        .map(|g| PeerGracefulRestart {
            restart_time: g.restart_time,
            restart_state: g.restart_state,
            preserved: fam(&g
                .families
                .iter()
                .filter(|f| f.forwarding_state)
                .map(|f| f.family)
                .collect::<Vec<_>>()),
        });
    Negotiated {
        families: fam(&info.ctx.families),
        four_octet_as: info.ctx.four_octet_as,
        route_refresh: info.ctx.route_refresh,
        enhanced_route_refresh: info.ctx.enhanced_route_refresh,
        graceful_restart: info.graceful_restart(),
        peer_graceful_restart: peer_gr,
        hold_time: hold,
        keepalive_time: keepalive,
    }
}

/// The FSM's parameters for a peer: graceful restart only when the
/// speaker has it on too.
fn fsm_config(params: &SessionParams, cfg: &PeerConfig) -> FsmConfig {
    let mut f = FsmConfig::from_peer(params.router_id, cfg);
    f.graceful_restart &= params.graceful_restart.enabled;
    f
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

async fn reserve(w: Option<mpsc::Sender<Vec<u8>>>) -> Option<mpsc::OwnedPermit<Vec<u8>>> {
    match w {
        Some(w) => w.reserve_owned().await.ok(),
        None => std::future::pending().await,
    }
}
