//! The session finite state machine of RFC 4271 §8, pure.
//!
//! [`Fsm::handle`] takes an [`Event`] (a timer fired, a TCP connection came
//! up or went away, a message arrived) and returns the [`Action`]s the
//! session task must perform (connect, send, close, arm a timer, process a
//! message, report the session up or down). Nothing here touches a socket
//! or a clock, so every transition is unit-tested.
//!
//! Beyond the RFC's single-connection machine it tracks a second connection
//! for collision resolution (§6.8): when both sides connect at once, the
//! connection initiated by the side with the higher BGP identifier is kept
//! and the other is closed with Cease 6/7. Resolution happens as soon as the
//! peer's identifier is known (its first OPEN on either connection).
//!
//! Also: RFC 6608 FSM error subcodes, the RFC 9687 send hold timer, and an
//! idle hold timer with exponential backoff between automatic restarts
//! (RFC 4271 §8.1.1 DampPeerOscillations) so a flapping peer cannot make us
//! spin.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::codec::{CeaseSubcode, FsmSubcode, MessageType, Notification, NotificationCode, Open};

/// RFC 4271 session states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum State {
    /// Not trying; waiting for start or for the idle hold timer.
    Idle,
    /// Waiting for our outgoing TCP connection.
    Connect,
    /// Waiting for the peer to connect (or for the connect retry timer).
    Active,
    /// OPEN sent, waiting for the peer's.
    OpenSent,
    /// OPENs exchanged, waiting for the peer's KEEPALIVE.
    OpenConfirm,
    /// Exchanging routes.
    Established,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Identifies one TCP connection of a session (assigned by the session task).
pub type ConnId = u64;

/// Timers the FSM arms through [`Action::StartTimer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Retry an outgoing connection.
    ConnectRetry,
    /// Nothing heard from the peer for the hold time.
    Hold,
    /// Time to send a KEEPALIVE.
    Keepalive,
    /// Nothing could be written for the send hold time (RFC 9687).
    SendHold,
    /// Backoff before an automatic restart.
    IdleHold,
    /// The session has been up long enough to forget past failures.
    Stable,
}

/// Inputs to the FSM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Administrative start (also resets the backoff).
    Start,
    /// Administrative stop: send `notification` (when a session is being
    /// set up or up) and stay in Idle until the next start.
    Stop(Notification),
    /// A TCP connection is up: our outgoing attempt succeeded, or the peer
    /// connected to us.
    TcpConnected {
        /// The connection.
        conn: ConnId,
        /// We initiated it.
        outgoing: bool,
    },
    /// Our outgoing connection attempt failed.
    TcpConnectFailed,
    /// A connection was closed by the peer or failed.
    TcpClosed {
        /// The connection.
        conn: ConnId,
    },
    /// A valid OPEN arrived (decoded and checked by the session task).
    OpenReceived {
        /// The connection.
        conn: ConnId,
        /// The peer's OPEN.
        open: Open,
    },
    /// A KEEPALIVE, UPDATE or ROUTE-REFRESH arrived. The FSM answers
    /// [`Action::Deliver`] when the session task should process it.
    MessageReceived {
        /// The connection.
        conn: ConnId,
        /// Which message.
        kind: MessageType,
    },
    /// A NOTIFICATION arrived (never answered).
    NotificationReceived {
        /// The connection.
        conn: ConnId,
        /// What the peer said.
        notification: Notification,
    },
    /// Decoding failed (header, OPEN or UPDATE error) or the session task
    /// found a reason to reset (prefix limit): send `notification` on
    /// `conn` and close it.
    ProtocolError {
        /// The connection.
        conn: ConnId,
        /// What to send.
        notification: Notification,
    },
    /// A timer fired.
    TimerExpired(Timer),
    /// Bytes were written to the peer: restarts the send hold timer.
    SendProgress,
}

/// Why an Established session (or an attempt) ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// Administrative stop.
    AdminStop(Notification),
    /// We sent this NOTIFICATION.
    NotificationSent(Notification),
    /// The peer sent this NOTIFICATION.
    NotificationReceived(Notification),
    /// Hold timer expired (we sent 4/0).
    HoldTimerExpired,
    /// Send hold timer expired (we tried to send 8/0).
    SendHoldTimerExpired,
    /// The TCP connection closed without a NOTIFICATION.
    ConnectionClosed,
}

impl DownReason {
    /// True when the session ended without a NOTIFICATION, or with one
    /// that RFC 8538 lets graceful restart cover (anything but Hard
    /// Reset) when both sides set the N bit: the helper then keeps the
    /// peer's routes.
    pub fn allows_graceful_restart(&self, notification_bit: bool) -> bool {
        match self {
            DownReason::ConnectionClosed => true,
            DownReason::AdminStop(_) => false,
            DownReason::HoldTimerExpired | DownReason::SendHoldTimerExpired => notification_bit,
            DownReason::NotificationSent(n) | DownReason::NotificationReceived(n) => {
                notification_bit && n.code != NotificationCode::Cease(CeaseSubcode::HardReset)
            }
        }
    }
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownReason::AdminStop(n) => write!(f, "administrative stop ({n})"),
            DownReason::NotificationSent(n) => write!(f, "sent {n}"),
            DownReason::NotificationReceived(n) => write!(f, "received {n}"),
            DownReason::HoldTimerExpired => write!(f, "hold timer expired"),
            DownReason::SendHoldTimerExpired => write!(f, "send hold timer expired"),
            DownReason::ConnectionClosed => write!(f, "connection closed"),
        }
    }
}

/// Outputs of the FSM, to be performed in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start an outgoing TCP connection (replacing any attempt in flight).
    Connect,
    /// Abandon the outgoing attempt in flight, if any.
    CancelConnect,
    /// Send our OPEN on the connection.
    SendOpen(ConnId),
    /// Send a KEEPALIVE.
    SendKeepalive(ConnId),
    /// Send a NOTIFICATION (then [`Action::Close`] follows).
    SendNotification(ConnId, Notification),
    /// Close the connection.
    Close(ConnId),
    /// Arm (or re-arm) a timer.
    StartTimer(Timer, Duration),
    /// Disarm a timer.
    StopTimer(Timer),
    /// Process the message just received (UPDATE or ROUTE-REFRESH).
    Deliver(ConnId),
    /// The session is Established on this connection.
    Established(ConnId),
    /// The Established session went down.
    Down(DownReason),
}

/// The FSM's fixed parameters (from the peer config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsmConfig {
    /// Our BGP identifier (collision resolution).
    pub local_id: Ipv4Addr,
    /// Never connect out.
    pub passive: bool,
    /// Hold time we propose, seconds.
    pub hold_time: u16,
    /// Keepalive interval override, seconds.
    pub keepalive_time: Option<u16>,
    /// Interval between outgoing attempts.
    pub connect_retry: Duration,
    /// Explicit send hold time in seconds (default: RFC 9687's, see
    /// [`crate::config::send_hold_for`]).
    pub send_hold_time: Option<u16>,
    /// Hold timer while waiting for the peer's OPEN (RFC 4271: 4 minutes).
    pub open_hold: Duration,
    /// First backoff step after a failure.
    pub idle_hold_base: Duration,
    /// Largest backoff step.
    pub idle_hold_max: Duration,
    /// How long a session must stay up for the backoff to reset.
    pub stable_time: Duration,
    /// We advertise graceful restart to this peer. When the peer did too,
    /// a new connection with a new OPEN while Established means the peer
    /// restarted (RFC 4724 §4.2): the old session ends without a
    /// NOTIFICATION (its routes go stale) and the new one takes over.
    pub graceful_restart: bool,
}

impl FsmConfig {
    /// The send hold time for a negotiated hold time (`None`: off).
    pub fn send_hold(&self, negotiated_hold: u16) -> Option<Duration> {
        crate::config::send_hold_for(self.send_hold_time, negotiated_hold)
    }

    /// Parameters from a peer's config.
    pub fn from_peer(local_id: Ipv4Addr, peer: &crate::config::PeerConfig) -> FsmConfig {
        FsmConfig {
            local_id,
            passive: peer.passive,
            hold_time: peer.hold_time,
            keepalive_time: peer.keepalive_time,
            connect_retry: Duration::from_secs(u64::from(peer.connect_retry_time)),
            send_hold_time: peer.send_hold_time,
            open_hold: Duration::from_secs(240),
            idle_hold_base: Duration::from_secs(1),
            idle_hold_max: Duration::from_secs(60),
            stable_time: Duration::from_secs(60),
            graceful_restart: peer.graceful_restart,
        }
    }
}

/// Where one connection is in the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Conn {
    id: ConnId,
    outgoing: bool,
    /// The peer's OPEN on this connection, once received.
    peer_open: Option<Open>,
    /// The peer's KEEPALIVE after the OPENs arrived (session Established).
    established: bool,
}

/// The session FSM of one peer.
#[derive(Clone, Debug)]
pub struct Fsm {
    cfg: FsmConfig,
    state: State,
    /// Administratively started.
    enabled: bool,
    /// The connection the state refers to.
    primary: Option<Conn>,
    /// A second connection in a collision, waiting to be resolved.
    secondary: Option<Conn>,
    /// Consecutive failures, for the idle hold backoff.
    failures: u32,
    /// Negotiated hold time of the current session.
    hold_time: u16,
    /// Why the last session or attempt ended.
    last_down: Option<DownReason>,
}

impl Fsm {
    /// A stopped FSM in Idle.
    pub fn new(cfg: FsmConfig) -> Fsm {
        Fsm {
            cfg,
            state: State::Idle,
            enabled: false,
            primary: None,
            secondary: None,
            failures: 0,
            hold_time: 0,
            last_down: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The connection the state refers to.
    pub fn connection(&self) -> Option<ConnId> {
        self.primary.as_ref().map(|c| c.id)
    }

    /// True when `conn` is one of the session's live connections.
    pub fn owns(&self, conn: ConnId) -> bool {
        self.primary.as_ref().is_some_and(|c| c.id == conn)
            || self.secondary.as_ref().is_some_and(|c| c.id == conn)
    }

    /// The peer's OPEN on the primary connection.
    pub fn peer_open(&self) -> Option<&Open> {
        self.primary.as_ref().and_then(|c| c.peer_open.as_ref())
    }

    /// The negotiated hold time (seconds; 0 = none).
    pub fn hold_time(&self) -> u16 {
        self.hold_time
    }

    /// The negotiated keepalive interval (seconds; 0 = none).
    pub fn keepalive_time(&self) -> u16 {
        keepalive_for(self.hold_time, self.cfg.keepalive_time)
    }

    /// Why the last session or attempt ended.
    pub fn last_down(&self) -> Option<&DownReason> {
        self.last_down.as_ref()
    }

    /// Consecutive failures counted for the backoff.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Applies an event; returns what to do.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Start => self.on_start(&mut out),
            Event::Stop(n) => self.on_stop(n, &mut out),
            Event::TcpConnected { conn, outgoing } => self.on_connected(conn, outgoing, &mut out),
            Event::TcpConnectFailed => self.on_connect_failed(&mut out),
            Event::TcpClosed { conn } => {
                self.fail_conn(conn, None, DownReason::ConnectionClosed, &mut out)
            }
            Event::OpenReceived { conn, open } => self.on_open(conn, open, &mut out),
            Event::MessageReceived { conn, kind } => self.on_message(conn, kind, &mut out),
            Event::NotificationReceived { conn, notification } => self.fail_conn(
                conn,
                None,
                DownReason::NotificationReceived(notification),
                &mut out,
            ),
            Event::ProtocolError { conn, notification } => self.fail_conn(
                conn,
                Some(notification.clone()),
                DownReason::NotificationSent(notification),
                &mut out,
            ),
            Event::TimerExpired(t) => self.on_timer(t, &mut out),
            Event::SendProgress => {
                if self.state == State::Established
                    && let Some(d) = self.cfg.send_hold(self.hold_time)
                {
                    out.push(Action::StartTimer(Timer::SendHold, d));
                }
            }
        }
        out
    }

    fn on_start(&mut self, out: &mut Vec<Action>) {
        self.enabled = true;
        self.failures = 0;
        if self.state == State::Idle {
            out.push(Action::StopTimer(Timer::IdleHold));
            self.begin(out);
        }
    }

    /// Leaves Idle: connect out (Connect) or wait for the peer (Active).
    fn begin(&mut self, out: &mut Vec<Action>) {
        if self.cfg.passive {
            self.state = State::Active;
        } else {
            self.state = State::Connect;
            out.push(Action::Connect);
            out.push(Action::StartTimer(
                Timer::ConnectRetry,
                self.cfg.connect_retry,
            ));
        }
    }

    fn on_stop(&mut self, n: Notification, out: &mut Vec<Action>) {
        self.enabled = false;
        let was_established = self.state == State::Established;
        for c in [self.primary.take(), self.secondary.take()]
            .into_iter()
            .flatten()
        {
            // A NOTIFICATION is only meaningful once our OPEN went out,
            // which happens as soon as a connection is up.
            out.push(Action::SendNotification(c.id, n.clone()));
            out.push(Action::Close(c.id));
        }
        out.push(Action::CancelConnect);
        self.stop_all_timers(out);
        self.state = State::Idle;
        let reason = DownReason::AdminStop(n);
        if was_established {
            out.push(Action::Down(reason.clone()));
        }
        self.last_down = Some(reason);
    }

    fn stop_all_timers(&self, out: &mut Vec<Action>) {
        for t in [
            Timer::ConnectRetry,
            Timer::Hold,
            Timer::Keepalive,
            Timer::SendHold,
            Timer::IdleHold,
            Timer::Stable,
        ] {
            out.push(Action::StopTimer(t));
        }
    }

    fn on_connected(&mut self, conn: ConnId, outgoing: bool, out: &mut Vec<Action>) {
        if !self.enabled {
            out.push(Action::Close(conn));
            return;
        }
        let c = Conn {
            id: conn,
            outgoing,
            peer_open: None,
            established: false,
        };
        match self.state {
            // Idle while backing off: the peer reconnecting is welcome
            // (the backoff is about our own attempts), as with passive
            // TCP establishment in RFC 4271 §8.1.1.
            State::Idle | State::Connect | State::Active => {
                if outgoing && self.state != State::Connect {
                    // A late result of an attempt we gave up on.
                    out.push(Action::Close(conn));
                    return;
                }
                if !outgoing {
                    out.push(Action::CancelConnect);
                }
                out.push(Action::StopTimer(Timer::ConnectRetry));
                out.push(Action::StopTimer(Timer::IdleHold));
                self.primary = Some(c);
                out.push(Action::SendOpen(conn));
                out.push(Action::StartTimer(Timer::Hold, self.cfg.open_hold));
                self.state = State::OpenSent;
            }
            State::OpenSent | State::OpenConfirm => {
                if self.secondary.is_some() {
                    out.push(Action::Close(conn));
                    return;
                }
                out.push(Action::SendOpen(conn));
                // The peer's identifier may already be known from the
                // primary's OPEN: then resolve right away.
                let known = self.primary.as_ref().and_then(|p| p.peer_open.clone());
                self.secondary = Some(c);
                if let Some(open) = known {
                    self.resolve_collision(open.bgp_id, out);
                }
            }
            State::Established => {
                if !outgoing && self.secondary.is_none() && self.restart_detectable() {
                    // Maybe the peer restarted: its OPEN will tell.
                    out.push(Action::SendOpen(conn));
                    self.secondary = Some(c);
                } else {
                    out.push(Action::SendNotification(conn, collision_notification()));
                    out.push(Action::Close(conn));
                }
            }
        }
    }

    fn on_connect_failed(&mut self, out: &mut Vec<Action>) {
        if self.state == State::Connect {
            // Wait in Active for the peer or the retry timer (running).
            self.state = State::Active;
            let _ = out;
        }
    }

    fn on_open(&mut self, conn: ConnId, open: Open, out: &mut Vec<Action>) {
        if self.secondary.as_ref().is_some_and(|c| c.id == conn) {
            if let Some(s) = self.secondary.as_mut() {
                if s.peer_open.is_some() {
                    let n = fsm_error(
                        FsmSubcode::UnexpectedMessageInOpenConfirm,
                        MessageType::Open,
                    );
                    self.drop_secondary(Some(n), out);
                    return;
                }
                s.peer_open = Some(open.clone());
            }
            if self.state == State::Established {
                // RFC 4724 §4.2: the peer restarted. End the old session
                // as if its connection had dropped; the new one carries on.
                if let Some(old) = self.connection() {
                    self.fail_conn(old, None, DownReason::ConnectionClosed, out);
                }
                return;
            }
            self.resolve_collision(open.bgp_id, out);
            return;
        }
        if !self.is_primary(conn) {
            return;
        }
        match self.state {
            State::OpenSent => {
                if let Some(p) = self.primary.as_mut() {
                    p.peer_open = Some(open.clone());
                }
                if self.secondary.is_some() {
                    self.resolve_collision(open.bgp_id, out);
                    if !self.is_primary(conn) {
                        // This connection lost; the other one carries on.
                        return;
                    }
                }
                self.open_confirm(conn, &open, out);
            }
            State::OpenConfirm => {
                let n = fsm_error(
                    FsmSubcode::UnexpectedMessageInOpenConfirm,
                    MessageType::Open,
                );
                self.fail_conn(conn, Some(n.clone()), DownReason::NotificationSent(n), out);
            }
            State::Established => {
                let n = fsm_error(
                    FsmSubcode::UnexpectedMessageInEstablished,
                    MessageType::Open,
                );
                self.fail_conn(conn, Some(n.clone()), DownReason::NotificationSent(n), out);
            }
            State::Idle | State::Connect | State::Active => {}
        }
    }

    /// OpenSent -> OpenConfirm on `conn` after the peer's `open`.
    fn open_confirm(&mut self, conn: ConnId, open: &Open, out: &mut Vec<Action>) {
        self.hold_time = self.cfg.hold_time.min(open.hold_time);
        out.push(Action::SendKeepalive(conn));
        self.arm_session_timers(out);
        self.state = State::OpenConfirm;
    }

    fn arm_session_timers(&self, out: &mut Vec<Action>) {
        if self.hold_time == 0 {
            out.push(Action::StopTimer(Timer::Hold));
            out.push(Action::StopTimer(Timer::Keepalive));
        } else {
            out.push(Action::StartTimer(Timer::Hold, secs(self.hold_time)));
            out.push(Action::StartTimer(
                Timer::Keepalive,
                secs(self.keepalive_time()),
            ));
        }
    }

    /// Keeps the connection initiated by the side with the higher BGP
    /// identifier (RFC 4271 §6.8) and closes the other with Cease 6/7.
    fn resolve_collision(&mut self, peer_id: Ipv4Addr, out: &mut Vec<Action>) {
        let (Some(p), Some(s)) = (&self.primary, &self.secondary) else {
            return;
        };
        let keep_outgoing = u32::from(self.cfg.local_id) > u32::from(peer_id);
        if p.outgoing == s.outgoing {
            // Two connections in the same direction: keep the older one.
            self.drop_secondary(Some(collision_notification()), out);
            return;
        }
        if p.outgoing == keep_outgoing {
            self.drop_secondary(Some(collision_notification()), out);
        } else {
            // The secondary wins: it becomes the session's connection.
            let loser = p.id;
            out.push(Action::SendNotification(loser, collision_notification()));
            out.push(Action::Close(loser));
            let winner = self.secondary.take();
            self.primary = winner;
            let open = self.primary.as_ref().and_then(|c| c.peer_open.clone());
            match open {
                Some(open) => {
                    let id = self.primary.as_ref().map_or(0, |c| c.id);
                    self.state = State::OpenSent;
                    self.open_confirm(id, &open, out);
                }
                None => {
                    self.state = State::OpenSent;
                    out.push(Action::StartTimer(Timer::Hold, self.cfg.open_hold));
                }
            }
        }
    }

    fn drop_secondary(&mut self, n: Option<Notification>, out: &mut Vec<Action>) {
        if let Some(s) = self.secondary.take() {
            if let Some(n) = n {
                out.push(Action::SendNotification(s.id, n));
            }
            out.push(Action::Close(s.id));
        }
    }

    /// Both sides advertised graceful restart on the current session.
    fn restart_detectable(&self) -> bool {
        self.cfg.graceful_restart
            && self
                .peer_open()
                .is_some_and(|o| o.capabilities.graceful_restart.is_some())
    }

    fn is_primary(&self, conn: ConnId) -> bool {
        self.primary.as_ref().is_some_and(|c| c.id == conn)
    }

    fn on_message(&mut self, conn: ConnId, kind: MessageType, out: &mut Vec<Action>) {
        if self.secondary.as_ref().is_some_and(|c| c.id == conn) {
            // Only an OPEN may arrive before the collision is resolved.
            let n = fsm_error(FsmSubcode::UnexpectedMessageInOpenSent, kind);
            self.drop_secondary(Some(n), out);
            return;
        }
        if !self.is_primary(conn) {
            return;
        }
        let unexpected = match (self.state, kind) {
            (State::OpenSent, _) => Some(FsmSubcode::UnexpectedMessageInOpenSent),
            (State::OpenConfirm, MessageType::Keepalive) => {
                self.establish(conn, out);
                None
            }
            (State::OpenConfirm, _) => Some(FsmSubcode::UnexpectedMessageInOpenConfirm),
            (State::Established, MessageType::Keepalive) => {
                self.restart_hold(out);
                None
            }
            (State::Established, MessageType::Update | MessageType::RouteRefresh) => {
                self.restart_hold(out);
                out.push(Action::Deliver(conn));
                None
            }
            (State::Established, _) => Some(FsmSubcode::UnexpectedMessageInEstablished),
            (State::Idle | State::Connect | State::Active, _) => None,
        };
        if let Some(sub) = unexpected {
            let n = fsm_error(sub, kind);
            self.fail_conn(conn, Some(n.clone()), DownReason::NotificationSent(n), out);
        }
    }

    fn establish(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        self.state = State::Established;
        if let Some(p) = self.primary.as_mut() {
            p.established = true;
        }
        // A connection still waiting in a collision loses to an
        // Established session (RFC 4271 §6.8).
        self.drop_secondary(Some(collision_notification()), out);
        self.restart_hold(out);
        if let Some(d) = self.cfg.send_hold(self.hold_time) {
            out.push(Action::StartTimer(Timer::SendHold, d));
        }
        out.push(Action::StartTimer(Timer::Stable, self.cfg.stable_time));
        out.push(Action::Established(conn));
    }

    fn restart_hold(&self, out: &mut Vec<Action>) {
        if self.hold_time != 0 {
            out.push(Action::StartTimer(Timer::Hold, secs(self.hold_time)));
        }
    }

    /// A connection failed or must be closed: if it is the session's
    /// connection, the session goes down (the secondary, if any, takes
    /// over); otherwise only that connection goes.
    fn fail_conn(
        &mut self,
        conn: ConnId,
        notify: Option<Notification>,
        reason: DownReason,
        out: &mut Vec<Action>,
    ) {
        if self.secondary.as_ref().is_some_and(|c| c.id == conn) {
            self.drop_secondary(notify, out);
            return;
        }
        if !self.is_primary(conn) {
            return;
        }
        if let Some(n) = notify {
            out.push(Action::SendNotification(conn, n));
        }
        out.push(Action::Close(conn));
        self.primary = None;
        if self.state == State::Established {
            out.push(Action::Down(reason.clone()));
        }
        self.last_down = Some(reason);
        if let Some(s) = self.secondary.take() {
            // The collision's other connection carries the session now.
            let open = s.peer_open.clone();
            let id = s.id;
            self.primary = Some(s);
            out.push(Action::StopTimer(Timer::SendHold));
            out.push(Action::StopTimer(Timer::Stable));
            self.state = State::OpenSent;
            match open {
                Some(open) => self.open_confirm(id, &open, out),
                None => out.push(Action::StartTimer(Timer::Hold, self.cfg.open_hold)),
            }
            return;
        }
        self.go_idle(out);
    }

    /// To Idle after a failure, with the backoff timer armed.
    fn go_idle(&mut self, out: &mut Vec<Action>) {
        for t in [
            Timer::ConnectRetry,
            Timer::Hold,
            Timer::Keepalive,
            Timer::SendHold,
            Timer::Stable,
        ] {
            out.push(Action::StopTimer(t));
        }
        out.push(Action::CancelConnect);
        self.state = State::Idle;
        self.hold_time = 0;
        self.failures = self.failures.saturating_add(1);
        if self.enabled {
            out.push(Action::StartTimer(Timer::IdleHold, self.idle_hold()));
        }
    }

    /// Backoff before the next automatic start: base, doubled per
    /// consecutive failure, capped.
    pub fn idle_hold(&self) -> Duration {
        let shift = self.failures.saturating_sub(1).min(16);
        self.cfg
            .idle_hold_base
            .saturating_mul(1u32 << shift)
            .min(self.cfg.idle_hold_max)
    }

    fn on_timer(&mut self, t: Timer, out: &mut Vec<Action>) {
        match (t, self.state) {
            (Timer::IdleHold, State::Idle) if self.enabled => self.begin(out),
            (Timer::ConnectRetry, State::Connect | State::Active) if !self.cfg.passive => {
                self.state = State::Connect;
                out.push(Action::Connect);
                out.push(Action::StartTimer(
                    Timer::ConnectRetry,
                    self.cfg.connect_retry,
                ));
            }
            (Timer::Hold, State::OpenSent | State::OpenConfirm | State::Established) => {
                if let Some(conn) = self.connection() {
                    let n = Notification::new(NotificationCode::HoldTimerExpired, Vec::new());
                    self.fail_conn(conn, Some(n), DownReason::HoldTimerExpired, out);
                }
            }
            (Timer::Keepalive, State::OpenConfirm | State::Established) => {
                if let Some(conn) = self.connection()
                    && self.hold_time != 0
                {
                    out.push(Action::SendKeepalive(conn));
                    out.push(Action::StartTimer(
                        Timer::Keepalive,
                        secs(self.keepalive_time()),
                    ));
                }
            }
            (Timer::SendHold, State::Established) => {
                if let Some(conn) = self.connection() {
                    // RFC 9687 §3: try to send 8/0, then close regardless.
                    let n = Notification::new(NotificationCode::SendHoldTimerExpired, Vec::new());
                    self.fail_conn(conn, Some(n), DownReason::SendHoldTimerExpired, out);
                }
            }
            (Timer::Stable, State::Established) => self.failures = 0,
            _ => {}
        }
    }
}

fn secs(s: u16) -> Duration {
    Duration::from_secs(u64::from(s))
}

/// Keepalive interval for a negotiated hold time: the configured value
/// when it is below the hold time, else a third of it (at least 1 s).
pub fn keepalive_for(hold: u16, configured: Option<u16>) -> u16 {
    if hold == 0 {
        return 0;
    }
    match configured {
        Some(k) if k > 0 && k < hold => k,
        _ => (hold / 3).max(1),
    }
}

/// RFC 6608 FSM error with the message type as data.
fn fsm_error(sub: FsmSubcode, kind: MessageType) -> Notification {
    Notification::new(NotificationCode::Fsm(sub), vec![kind.code()])
}

fn collision_notification() -> Notification {
    Notification::new(
        NotificationCode::Cease(CeaseSubcode::ConnectionCollisionResolution),
        Vec::new(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Capabilities;

    const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);

    fn cfg(passive: bool) -> FsmConfig {
        let mut peer = crate::config::PeerConfig::new("10.0.0.9".parse().expect("ip"), 65000);
        peer.passive = passive;
        peer.hold_time = 9;
        peer.connect_retry_time = 1;
        FsmConfig::from_peer(LOCAL, &peer)
    }

    fn open(id: [u8; 4], hold: u16) -> Open {
        Open::new(65000, hold, Ipv4Addr::from(id), Capabilities::default())
    }

    fn started(passive: bool) -> Fsm {
        let mut f = Fsm::new(cfg(passive));
        f.handle(Event::Start);
        f
    }

    fn established(conn: ConnId) -> Fsm {
        let mut f = started(false);
        f.handle(Event::TcpConnected {
            conn,
            outgoing: true,
        });
        f.handle(Event::OpenReceived {
            conn,
            open: open([10, 0, 0, 9], 30),
        });
        let a = f.handle(Event::MessageReceived {
            conn,
            kind: MessageType::Keepalive,
        });
        assert!(a.contains(&Action::Established(conn)), "{a:?}");
        f
    }

    fn sent_notification(actions: &[Action]) -> Option<(ConnId, NotificationCode)> {
        actions.iter().find_map(|a| match a {
            Action::SendNotification(c, n) => Some((*c, n.code)),
            _ => None,
        })
    }

    #[test]
    fn active_peer_connects_then_reaches_established() {
        let mut f = Fsm::new(cfg(false));
        let a = f.handle(Event::Start);
        assert_eq!(f.state(), State::Connect);
        assert!(a.contains(&Action::Connect));
        assert!(a.contains(&Action::StartTimer(
            Timer::ConnectRetry,
            Duration::from_secs(1)
        )));

        let a = f.handle(Event::TcpConnected {
            conn: 1,
            outgoing: true,
        });
        assert_eq!(f.state(), State::OpenSent);
        assert!(a.contains(&Action::SendOpen(1)));
        assert!(a.contains(&Action::StartTimer(Timer::Hold, Duration::from_secs(240))));

        let a = f.handle(Event::OpenReceived {
            conn: 1,
            open: open([10, 0, 0, 9], 30),
        });
        assert_eq!(f.state(), State::OpenConfirm);
        // Negotiated hold is the smaller proposal; keepalive a third of it.
        assert_eq!(f.hold_time(), 9);
        assert!(a.contains(&Action::SendKeepalive(1)));
        assert!(a.contains(&Action::StartTimer(Timer::Hold, Duration::from_secs(9))));
        assert!(a.contains(&Action::StartTimer(
            Timer::Keepalive,
            Duration::from_secs(3)
        )));

        let a = f.handle(Event::MessageReceived {
            conn: 1,
            kind: MessageType::Keepalive,
        });
        assert_eq!(f.state(), State::Established);
        assert!(a.contains(&Action::Established(1)));
        // RFC 9687 default: max(480, 2 * hold).
        assert!(a.contains(&Action::StartTimer(
            Timer::SendHold,
            Duration::from_secs(480)
        )));
    }

    #[test]
    fn passive_peer_never_connects_and_waits_in_active() {
        let mut f = Fsm::new(cfg(true));
        let a = f.handle(Event::Start);
        assert_eq!(f.state(), State::Active);
        assert!(!a.contains(&Action::Connect));
        let a = f.handle(Event::TimerExpired(Timer::ConnectRetry));
        assert!(!a.contains(&Action::Connect));
        let a = f.handle(Event::TcpConnected {
            conn: 7,
            outgoing: false,
        });
        assert_eq!(f.state(), State::OpenSent);
        assert!(a.contains(&Action::SendOpen(7)));
    }

    #[test]
    fn connect_failure_waits_in_active_and_retries_on_timer() {
        let mut f = started(false);
        f.handle(Event::TcpConnectFailed);
        assert_eq!(f.state(), State::Active);
        let a = f.handle(Event::TimerExpired(Timer::ConnectRetry));
        assert_eq!(f.state(), State::Connect);
        assert!(a.contains(&Action::Connect));
    }

    #[test]
    fn unexpected_messages_get_rfc6608_fsm_errors() {
        // OpenSent: a KEEPALIVE before the OPEN is 5/1.
        let mut f = started(false);
        f.handle(Event::TcpConnected {
            conn: 1,
            outgoing: true,
        });
        let a = f.handle(Event::MessageReceived {
            conn: 1,
            kind: MessageType::Keepalive,
        });
        assert_eq!(
            sent_notification(&a),
            Some((
                1,
                NotificationCode::Fsm(FsmSubcode::UnexpectedMessageInOpenSent)
            ))
        );
        assert!(a.contains(&Action::Close(1)));
        assert_eq!(f.state(), State::Idle);

        // OpenConfirm: an UPDATE is 5/2, with the message type as data.
        let mut f = started(false);
        f.handle(Event::TcpConnected {
            conn: 2,
            outgoing: true,
        });
        f.handle(Event::OpenReceived {
            conn: 2,
            open: open([10, 0, 0, 9], 9),
        });
        let a = f.handle(Event::MessageReceived {
            conn: 2,
            kind: MessageType::Update,
        });
        assert!(a.contains(&Action::SendNotification(
            2,
            Notification::new(
                NotificationCode::Fsm(FsmSubcode::UnexpectedMessageInOpenConfirm),
                vec![2]
            )
        )));
        assert!(!a.iter().any(|x| matches!(x, Action::Deliver(_))));

        // Established: a second OPEN is 5/3 and the session goes down.
        let mut f = established(3);
        let a = f.handle(Event::OpenReceived {
            conn: 3,
            open: open([10, 0, 0, 9], 9),
        });
        assert_eq!(
            sent_notification(&a),
            Some((
                3,
                NotificationCode::Fsm(FsmSubcode::UnexpectedMessageInEstablished)
            ))
        );
        assert!(a.iter().any(|x| matches!(x, Action::Down(_))));
    }

    #[test]
    fn updates_are_delivered_only_when_established() {
        let mut f = established(4);
        let a = f.handle(Event::MessageReceived {
            conn: 4,
            kind: MessageType::Update,
        });
        assert!(a.contains(&Action::Deliver(4)));
        assert!(a.contains(&Action::StartTimer(Timer::Hold, Duration::from_secs(9))));
        // A message on a connection that is not ours is ignored.
        let a = f.handle(Event::MessageReceived {
            conn: 99,
            kind: MessageType::Update,
        });
        assert!(a.is_empty());
    }

    #[test]
    fn hold_timer_expiry_sends_4_0_and_backs_off() {
        let mut f = established(1);
        let a = f.handle(Event::TimerExpired(Timer::Hold));
        assert_eq!(
            sent_notification(&a),
            Some((1, NotificationCode::HoldTimerExpired))
        );
        assert!(a.contains(&Action::Down(DownReason::HoldTimerExpired)));
        assert_eq!(f.state(), State::Idle);
        assert!(a.contains(&Action::StartTimer(Timer::IdleHold, Duration::from_secs(1))));
        // Automatic restart after the idle hold.
        let a = f.handle(Event::TimerExpired(Timer::IdleHold));
        assert_eq!(f.state(), State::Connect);
        assert!(a.contains(&Action::Connect));
    }

    #[test]
    fn send_hold_timer_expiry_sends_8_0_and_progress_rearms_it() {
        let mut f = established(1);
        let a = f.handle(Event::SendProgress);
        assert_eq!(
            a,
            vec![Action::StartTimer(
                Timer::SendHold,
                Duration::from_secs(480)
            )]
        );
        let a = f.handle(Event::TimerExpired(Timer::SendHold));
        assert_eq!(
            sent_notification(&a),
            Some((1, NotificationCode::SendHoldTimerExpired))
        );
        assert!(a.contains(&Action::Down(DownReason::SendHoldTimerExpired)));
        assert!(a.contains(&Action::Close(1)));
    }

    #[test]
    fn hold_time_zero_disables_keepalives_and_send_hold() {
        let mut f = started(false);
        f.handle(Event::TcpConnected {
            conn: 1,
            outgoing: true,
        });
        let a = f.handle(Event::OpenReceived {
            conn: 1,
            open: open([10, 0, 0, 9], 0),
        });
        assert!(a.contains(&Action::StopTimer(Timer::Hold)));
        assert!(a.contains(&Action::StopTimer(Timer::Keepalive)));
        let a = f.handle(Event::MessageReceived {
            conn: 1,
            kind: MessageType::Keepalive,
        });
        assert!(
            !a.iter()
                .any(|x| matches!(x, Action::StartTimer(Timer::SendHold, _)))
        );
        assert!(f.handle(Event::TimerExpired(Timer::Keepalive)).is_empty());
    }

    #[test]
    fn backoff_doubles_and_resets_after_a_stable_session() {
        let mut f = started(false);
        let mut holds = Vec::new();
        for conn in 1..=4 {
            f.handle(Event::TimerExpired(Timer::IdleHold));
            f.handle(Event::TcpConnected {
                conn,
                outgoing: true,
            });
            let a = f.handle(Event::TcpClosed { conn });
            holds.extend(a.iter().filter_map(|x| match x {
                Action::StartTimer(Timer::IdleHold, d) => Some(d.as_secs()),
                _ => None,
            }));
        }
        assert_eq!(holds, vec![1, 2, 4, 8]);
        f.handle(Event::TimerExpired(Timer::IdleHold));
        f.handle(Event::TcpConnected {
            conn: 9,
            outgoing: true,
        });
        f.handle(Event::OpenReceived {
            conn: 9,
            open: open([10, 0, 0, 9], 9),
        });
        f.handle(Event::MessageReceived {
            conn: 9,
            kind: MessageType::Keepalive,
        });
        f.handle(Event::TimerExpired(Timer::Stable));
        assert_eq!(f.failures(), 0);
    }

    #[test]
    fn collision_keeps_connection_of_higher_identifier() {
        // Peer id 10.0.0.9 > ours 10.0.0.5: keep the peer's (incoming)
        // connection, close ours with Cease 6/7.
        let mut f = started(false);
        f.handle(Event::TcpConnected {
            conn: 1,
            outgoing: true,
        });
        let a = f.handle(Event::TcpConnected {
            conn: 2,
            outgoing: false,
        });
        assert!(a.contains(&Action::SendOpen(2)));
        let a = f.handle(Event::OpenReceived {
            conn: 2,
            open: open([10, 0, 0, 9], 9),
        });
        assert_eq!(
            sent_notification(&a),
            Some((
                1,
                NotificationCode::Cease(CeaseSubcode::ConnectionCollisionResolution)
            ))
        );
        assert!(a.contains(&Action::Close(1)));
        assert_eq!(f.connection(), Some(2));
        assert_eq!(f.state(), State::OpenConfirm);
        f.handle(Event::MessageReceived {
            conn: 2,
            kind: MessageType::Keepalive,
        });
        assert_eq!(f.state(), State::Established);

        // Peer id 10.0.0.1 < ours: keep our outgoing connection.
        let mut f = started(false);
        f.handle(Event::TcpConnected {
            conn: 1,
            outgoing: true,
        });
        f.handle(Event::TcpConnected {
            conn: 2,
            outgoing: false,
        });
        let a = f.handle(Event::OpenReceived {
            conn: 1,
            open: open([10, 0, 0, 1], 9),
        });
        assert_eq!(
            sent_notification(&a),
            Some((
                2,
                NotificationCode::Cease(CeaseSubcode::ConnectionCollisionResolution)
            ))
        );
        assert_eq!(f.connection(), Some(1));
        assert_eq!(f.state(), State::OpenConfirm);
    }

    #[test]
    fn collision_resolved_when_second_connection_arrives_after_open() {
        // The peer's id is already known from the first connection's OPEN.
        let mut f = started(false);
        f.handle(Event::TcpConnected {
            conn: 1,
            outgoing: false,
        });
        f.handle(Event::OpenReceived {
            conn: 1,
            open: open([10, 0, 0, 1], 9),
        });
        assert_eq!(f.state(), State::OpenConfirm);
        // Our id is higher, so our late outgoing connection wins (the
        // state machine was in OpenConfirm, the new one is a collision).
        let a = f.handle(Event::TcpConnected {
            conn: 2,
            outgoing: true,
        });
        assert!(a.contains(&Action::Close(1)));
        assert_eq!(f.connection(), Some(2));
        assert_eq!(f.state(), State::OpenSent);
    }

    #[test]
    fn connection_while_established_is_refused_with_6_7() {
        let mut f = established(1);
        let a = f.handle(Event::TcpConnected {
            conn: 2,
            outgoing: false,
        });
        assert_eq!(
            sent_notification(&a),
            Some((
                2,
                NotificationCode::Cease(CeaseSubcode::ConnectionCollisionResolution)
            ))
        );
        assert_eq!(f.connection(), Some(1));
        assert_eq!(f.state(), State::Established);
    }

    #[test]
    fn new_open_while_established_is_a_graceful_restart_when_negotiated() {
        let gr_open = || {
            let caps = Capabilities {
                graceful_restart: Some(crate::codec::GracefulRestart {
                    restart_time: 30,
                    ..Default::default()
                }),
                ..Capabilities::default()
            };
            Open::new(65000, 9, Ipv4Addr::new(10, 0, 0, 9), caps)
        };
        let mut f = started(false);
        f.handle(Event::TcpConnected {
            conn: 1,
            outgoing: true,
        });
        f.handle(Event::OpenReceived {
            conn: 1,
            open: gr_open(),
        });
        f.handle(Event::MessageReceived {
            conn: 1,
            kind: MessageType::Keepalive,
        });
        assert_eq!(f.state(), State::Established);
        // The restarted peer connects again: we answer with our OPEN.
        let a = f.handle(Event::TcpConnected {
            conn: 2,
            outgoing: false,
        });
        assert_eq!(a, vec![Action::SendOpen(2)]);
        let a = f.handle(Event::OpenReceived {
            conn: 2,
            open: gr_open(),
        });
        // The old session ends without a NOTIFICATION, as a dropped
        // connection (so its routes are kept stale), and the new one is in
        // OpenConfirm.
        assert!(sent_notification(&a).is_none(), "{a:?}");
        assert!(a.contains(&Action::Close(1)));
        assert!(a.contains(&Action::Down(DownReason::ConnectionClosed)));
        assert!(a.contains(&Action::SendKeepalive(2)));
        assert_eq!(f.connection(), Some(2));
        assert_eq!(f.state(), State::OpenConfirm);

        // Without graceful restart on the session: Cease 6/7 as before.
        let mut f = established(1);
        let a = f.handle(Event::TcpConnected {
            conn: 2,
            outgoing: false,
        });
        assert!(a.contains(&Action::Close(2)));
    }

    #[test]
    fn stop_sends_the_given_notification_and_stays_idle() {
        let mut f = established(1);
        let n = Notification::shutdown(CeaseSubcode::AdministrativeShutdown, "maintenance");
        let a = f.handle(Event::Stop(n.clone()));
        assert!(a.contains(&Action::SendNotification(1, n.clone())));
        assert!(a.contains(&Action::Down(DownReason::AdminStop(n))));
        assert_eq!(f.state(), State::Idle);
        assert!(f.handle(Event::TimerExpired(Timer::IdleHold)).is_empty());
        let a = f.handle(Event::TcpConnected {
            conn: 5,
            outgoing: false,
        });
        assert_eq!(a, vec![Action::Close(5)]);
    }

    #[test]
    fn graceful_restart_applies_to_closes_not_hard_resets() {
        assert!(DownReason::ConnectionClosed.allows_graceful_restart(false));
        let cease = Notification::new(
            NotificationCode::Cease(CeaseSubcode::AdministrativeReset),
            vec![],
        );
        assert!(!DownReason::NotificationReceived(cease.clone()).allows_graceful_restart(false));
        assert!(DownReason::NotificationReceived(cease).allows_graceful_restart(true));
        let hard = Notification::new(NotificationCode::Cease(CeaseSubcode::HardReset), vec![]);
        assert!(!DownReason::NotificationSent(hard).allows_graceful_restart(true));
    }
}
