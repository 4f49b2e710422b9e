//! The speaker: the library API the agent programs against.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use margay_bgp::{Speaker, SpeakerConfig, PeerConfig, LocalRoute, BestRouteEvent};
//! let mut cfg = SpeakerConfig::new("10.0.0.1".parse()?, 64512);
//! cfg.listen = vec!["0.0.0.0:179".parse()?];
//! let (speaker, mut best) = Speaker::start(cfg).await?;
//! speaker.add_peer(PeerConfig::new("10.0.0.2".parse()?, 64512)).await?;
//! speaker.announce("10.244.1.0/26".parse()?, LocalRoute::default()).await?;
//! while let Some(ev) = best.recv().await {
//!     match ev {
//!         BestRouteEvent::Best(route) => println!("{} via {:?}", route.prefix, route.next_hops),
//!         BestRouteEvent::Withdrawn(prefix) => println!("{prefix} gone"),
//!         BestRouteEvent::Converged => println!("initial table complete"),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! One task (the speaker task) owns the [`Rib`] and the peer table; each
//! peer has its own session task ([`crate::session`]). [`SpeakerHandle`]
//! methods send a command to the speaker task and wait for its answer, so
//! they are cheap to call from anywhere and never touch shared state.
//!
//! Best-route changes reach the agent through a bounded channel. The
//! speaker never blocks on it: changed prefixes are remembered (coalesced)
//! and sent as room appears, each event carrying the prefix's state at the
//! time it is sent. Dropping the receiver is fine (`margay-bgpd` does).

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::codec::{
    AsPath, CeaseSubcode, Community, Family, LargeCommunity, NextHop, Notification,
    NotificationCode, Origin, PathAttributes, Prefix, RouteRefreshSubtype,
};
use crate::config::{AddressFamily, ConfigError, PeerConfig, SpeakerConfig};
use crate::fsm::DownReason;
use crate::rib::{
    BestRoute, PeerId, PeerPolicy, Rib, RibConfig, RibOutput, RouteAttrs, RouteView, SessionInfo,
};
use crate::session::outbox::Marker;
use crate::session::{
    self, EstablishedInfo, SessionCommand, SessionEvent, SessionHandle, SessionParams, socket,
};
use crate::status::PeerStatus;

/// Capacity of the best-route channel.
pub const BEST_ROUTE_CHANNEL: usize = 1024;
/// Capacity of the channel from sessions to the speaker (the backpressure
/// on reading from peers). An event carries at most one socket read's worth
/// of UPDATEs (64 KiB on the wire), so this bounds decoded routes in flight
/// to about a megabyte of wire data.
const SESSION_EVENTS: usize = 16;

/// A change of the best route learned from peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BestRouteEvent {
    /// The prefix's best route is now this (with every ECMP next hop).
    Best(BestRoute),
    /// No peer offers a usable route for the prefix any more (or our own
    /// announcement of it is the best route).
    Withdrawn(Prefix),
    /// Sent once: every peer present has sent End-of-RIB for all its
    /// families (or the selection deferral time passed). Routes the agent
    /// installed before a restart and has not seen again since can go.
    Converged,
}

/// A route we originate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalRoute {
    /// Next hop; `None` (usual) means our address on each session.
    pub next_hop: Option<IpAddr>,
    /// ORIGIN (default IGP).
    pub origin: Option<Origin>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF sent to iBGP peers (default 100).
    pub local_pref: Option<u32>,
    /// Standard communities.
    pub communities: Vec<Community>,
    /// Large communities.
    pub large_communities: Vec<LargeCommunity>,
}

impl LocalRoute {
    fn attrs(&self, prefix: &Prefix) -> Result<RouteAttrs, SpeakerError> {
        let next_hop = match (self.next_hop, prefix.is_ipv4()) {
            (None, _) => None,
            (Some(IpAddr::V4(a)), true) => Some(NextHop::V4(a)),
            (Some(IpAddr::V6(a)), false) => Some(NextHop::V6 {
                global: a,
                link_local: None,
            }),
            (Some(nh), _) => {
                return Err(SpeakerError::Invalid(format!(
                    "route {prefix}: next_hop {nh} is not of the prefix's address family"
                )));
            }
        };
        Ok(RouteAttrs {
            attrs: PathAttributes {
                origin: Some(self.origin.unwrap_or(Origin::Igp)),
                as_path: Some(AsPath::default()),
                med: self.med,
                local_pref: self.local_pref,
                communities: self.communities.clone(),
                large_communities: self.large_communities.clone(),
                ..PathAttributes::default()
            },
            next_hop,
        })
    }
}

/// Which routes `routes()` returns.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "table", content = "peer")]
pub enum RouteQuery {
    /// Every path of every prefix, best ones marked (Loc-RIB).
    LocRib,
    /// What a peer sent us (Adj-RIB-In), rejected paths included.
    AdjIn(IpAddr),
    /// What we send a peer (Adj-RIB-Out).
    AdjOut(IpAddr),
}

/// How to stop the speaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Cease / Administrative Shutdown to every peer: they drop our routes.
    Notify,
    /// Close every session without a NOTIFICATION: peers that negotiated
    /// graceful restart keep our routes for the restart time, so a new
    /// speaker started with `graceful_restart.restarting` takes over
    /// without traffic loss.
    GracefulRestart,
}

/// Errors of the API.
#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A request the speaker cannot satisfy (unknown peer, duplicate...).
    #[error("{0}")]
    Invalid(String),
    /// A listen socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The speaker task has stopped.
    #[error("the BGP speaker has stopped")]
    Stopped,
}

type Reply<T> = oneshot::Sender<Result<T, SpeakerError>>;

enum Command {
    AddPeer(Box<PeerConfig>, Reply<()>),
    UpdatePeer(Box<PeerConfig>, Reply<()>),
    RemovePeer(IpAddr, Reply<()>),
    Announce(Prefix, LocalRoute, Reply<()>),
    Withdraw(Prefix, Reply<()>),
    Peers(Reply<Vec<PeerStatus>>),
    Routes(RouteQuery, Reply<Vec<RouteView>>),
    BestRoutes(Reply<Vec<BestRoute>>),
    Refresh(IpAddr, AddressFamily, Reply<()>),
    Shutdown(ShutdownMode, Reply<()>),
}

/// Handle on a running speaker. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SpeakerHandle {
    tx: mpsc::UnboundedSender<Command>,
}

/// Entry point.
pub struct Speaker;

impl Speaker {
    /// Validates `cfg`, opens the listen sockets and starts the speaker
    /// task. Returns the handle and the best-route event stream.
    pub async fn start(
        cfg: SpeakerConfig,
    ) -> Result<(SpeakerHandle, mpsc::Receiver<BestRouteEvent>), SpeakerError> {
        cfg.validate()?;
        let mut listeners = Vec::new();
        for addr in &cfg.listen {
            let l = socket::listen(*addr).map_err(|source| SpeakerError::Listen {
                addr: *addr,
                source,
            })?;
            listeners.push(l);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (best_tx, best_rx) = mpsc::channel(BEST_ROUTE_CHANNEL);
        let (ev_tx, ev_rx) = mpsc::channel(SESSION_EVENTS);
        let mut rib = Rib::new(RibConfig {
            local_as: cfg.asn,
            router_id: cfg.router_id,
            cluster_id: cfg.effective_cluster_id(),
            multipath: cfg.multipath,
        });
        rib.set_deferring(cfg.graceful_restart.restarting);
        let deferral = Duration::from_secs(u64::from(cfg.graceful_restart.selection_deferral_time));
        let task = SpeakerTask {
            params: SessionParams {
                router_id: cfg.router_id,
                local_as: cfg.asn,
                graceful_restart: cfg.graceful_restart.clone(),
            },
            cfg,
            rib,
            peers: HashMap::new(),
            keys: HashMap::new(),
            next_key: 1,
            ev_tx,
            best_tx,
            pending_best: BTreeSet::new(),
            converged: false,
            converge_deadline: Instant::now() + deferral,
            listeners,
            listener_fds: Vec::new(),
        };
        tokio::spawn(task.run(rx, ev_rx));
        Ok((SpeakerHandle { tx }, best_rx))
    }
}

impl SpeakerHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).map_err(|_| SpeakerError::Stopped)?;
        rx.await.map_err(|_| SpeakerError::Stopped)?
    }

    /// Adds a peer and starts its session. Fails if the config is invalid
    /// or a peer with that address exists.
    pub async fn add_peer(&self, peer: PeerConfig) -> Result<(), SpeakerError> {
        self.call(|r| Command::AddPeer(Box::new(peer), r)).await
    }

    /// Changes a peer's settings. Policy-only changes (filters, next hop
    /// self, prepend, prefix limit) apply without touching the session;
    /// others reset it. Other peers are never affected.
    pub async fn update_peer(&self, peer: PeerConfig) -> Result<(), SpeakerError> {
        self.call(|r| Command::UpdatePeer(Box::new(peer), r)).await
    }

    /// Removes a peer (Cease / Peer De-configured) and withdraws its routes.
    pub async fn remove_peer(&self, address: IpAddr) -> Result<(), SpeakerError> {
        self.call(|r| Command::RemovePeer(address, r)).await
    }

    /// Originates (or changes) a route.
    pub async fn announce(&self, prefix: Prefix, route: LocalRoute) -> Result<(), SpeakerError> {
        self.call(|r| Command::Announce(prefix, route, r)).await
    }

    /// Stops originating a route (no error if it was not).
    pub async fn withdraw(&self, prefix: Prefix) -> Result<(), SpeakerError> {
        self.call(|r| Command::Withdraw(prefix, r)).await
    }

    /// Every peer's state, counters and negotiated capabilities.
    pub async fn peers(&self) -> Result<Vec<PeerStatus>, SpeakerError> {
        self.call(Command::Peers).await
    }

    /// Routes of a table.
    pub async fn routes(&self, query: RouteQuery) -> Result<Vec<RouteView>, SpeakerError> {
        self.call(|r| Command::Routes(query, r)).await
    }

    /// The current best route of every prefix learned from peers (what
    /// the event stream has described, as a snapshot).
    pub async fn best_routes(&self) -> Result<Vec<BestRoute>, SpeakerError> {
        self.call(Command::BestRoutes).await
    }

    /// Asks a peer to re-send its routes of a family (ROUTE-REFRESH).
    pub async fn refresh(&self, peer: IpAddr, family: AddressFamily) -> Result<(), SpeakerError> {
        self.call(|r| Command::Refresh(peer, family, r)).await
    }

    /// Stops every session and the speaker task.
    pub async fn shutdown(&self, mode: ShutdownMode) -> Result<(), SpeakerError> {
        self.call(|r| Command::Shutdown(mode, r)).await
    }
}

/// Graceful restart bookkeeping of one peer.
#[derive(Debug, Default)]
struct PeerGr {
    /// Until when we keep its stale routes while it is down.
    restart_deadline: Option<Instant>,
    /// Until when we keep them once it is back without End-of-RIB.
    stale_deadline: Option<Instant>,
}

struct PeerEntry {
    id: PeerId,
    cfg: PeerConfig,
    session: SessionHandle,
    /// Set while Established.
    established: Option<EstablishedInfo>,
    /// Families whose End-of-RIB arrived in the current session.
    eor: Vec<Family>,
    gr: PeerGr,
}

struct SpeakerTask {
    cfg: SpeakerConfig,
    params: SessionParams,
    rib: Rib,
    peers: HashMap<IpAddr, PeerEntry>,
    /// Session key -> peer address.
    keys: HashMap<u64, IpAddr>,
    next_key: u64,
    ev_tx: mpsc::Sender<SessionEvent>,
    best_tx: mpsc::Sender<BestRouteEvent>,
    /// Prefixes whose best route changed and the agent has not been told.
    pending_best: BTreeSet<Prefix>,
    converged: bool,
    converge_deadline: Instant,
    listeners: Vec<TcpListener>,
    /// Descriptors of the listening sockets and whether each is IPv4.
    listener_fds: Vec<(std::os::fd::RawFd, bool)>,
}

impl SpeakerTask {
    async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<Command>,
        mut events: mpsc::Receiver<SessionEvent>,
    ) {
        let listeners = std::mem::take(&mut self.listeners);
        // MD5 keys live on the listening sockets, which the accept tasks
        // own; they stay open until shutdown, so their descriptors do too.
        self.listener_fds = listeners
            .iter()
            .map(|l| {
                (
                    l.as_raw_fd(),
                    l.local_addr().map(|a| a.is_ipv4()).unwrap_or(true),
                )
            })
            .collect();
        let (acc_tx, mut accepted) = mpsc::channel(16);
        let mut acceptors = Vec::new();
        for l in listeners {
            let tx = acc_tx.clone();
            acceptors.push(tokio::spawn(accept_loop(l, tx)));
        }
        drop(acc_tx);
        loop {
            self.check_converged();
            let deadline = self.next_deadline();
            let want_best = !self.pending_best.is_empty() && !self.best_tx.is_closed();
            let best_tx = self.best_tx.clone();
            tokio::select! {
                biased;
                c = cmds.recv() => match c {
                    Some(Command::Shutdown(mode, reply)) => {
                        self.shutdown(mode).await;
                        for a in &acceptors {
                            a.abort();
                        }
                        let _ = reply.send(Ok(()));
                        return;
                    }
                    Some(c) => self.on_command(c),
                    None => {
                        self.shutdown(ShutdownMode::Notify).await;
                        for a in &acceptors {
                            a.abort();
                        }
                        return;
                    }
                },
                Some(ev) = events.recv() => self.on_session_event(ev),
                Some((stream, remote)) = accepted.recv() => self.on_accept(stream, remote),
                _ = sleep_until(deadline), if deadline.is_some() => self.on_deadlines(),
                permit = best_tx.reserve(), if want_best => {
                    if let Ok(permit) = permit {
                        self.send_best(permit);
                    }
                }
            }
        }
    }

    fn on_command(&mut self, c: Command) {
        match c {
            Command::AddPeer(cfg, reply) => {
                let _ = reply.send(self.add_peer(*cfg));
            }
            Command::UpdatePeer(cfg, reply) => {
                let _ = reply.send(self.update_peer(*cfg));
            }
            Command::RemovePeer(addr, reply) => {
                let _ = reply.send(self.remove_peer(addr));
            }
            Command::Announce(prefix, route, reply) => {
                let r = route.attrs(&prefix).map(|attrs| {
                    let out = self.rib.announce_local(&prefix, attrs);
                    self.apply(out);
                });
                let _ = reply.send(r);
            }
            Command::Withdraw(prefix, reply) => {
                let out = self.rib.withdraw_local(&prefix);
                self.apply(out);
                let _ = reply.send(Ok(()));
            }
            Command::Peers(reply) => {
                let _ = reply.send(Ok(self.peer_statuses()));
            }
            Command::Routes(q, reply) => {
                let _ = reply.send(self.routes(q));
            }
            Command::BestRoutes(reply) => {
                let _ = reply.send(Ok(self.rib.best_routes()));
            }
            Command::Refresh(addr, family, reply) => {
                let r = match self.peers.get(&addr) {
                    Some(p) => {
                        p.session
                            .send(SessionCommand::SendRouteRefresh(family.family()));
                        Ok(())
                    }
                    None => Err(unknown_peer(addr)),
                };
                let _ = reply.send(r);
            }
            Command::Shutdown(..) => {}
        }
    }

    fn add_peer(&mut self, cfg: PeerConfig) -> Result<(), SpeakerError> {
        cfg.validate(self.cfg.asn)?;
        if self.peers.contains_key(&cfg.address) {
            return Err(SpeakerError::Invalid(format!(
                "peer {} already exists (use update_peer)",
                cfg.address
            )));
        }
        if cfg.md5_password.is_some() {
            self.set_listener_md5(cfg.address, cfg.md5_password.as_deref());
        }
        let id = self.rib.add_peer(PeerPolicy::from_config(&cfg));
        let key = self.next_key;
        self.next_key += 1;
        let session = session::spawn(key, cfg.clone(), self.params.clone(), self.ev_tx.clone());
        session.send(SessionCommand::Start);
        info!(peer = %cfg.address, asn = cfg.asn, "peer added");
        self.keys.insert(key, cfg.address);
        self.peers.insert(
            cfg.address,
            PeerEntry {
                id,
                cfg,
                session,
                established: None,
                eor: Vec::new(),
                gr: PeerGr::default(),
            },
        );
        Ok(())
    }

    fn update_peer(&mut self, cfg: PeerConfig) -> Result<(), SpeakerError> {
        cfg.validate(self.cfg.asn)?;
        let Some(entry) = self.peers.get_mut(&cfg.address) else {
            return Err(unknown_peer(cfg.address));
        };
        let reset = entry.cfg.needs_reset(&cfg);
        let md5_changed = entry.cfg.md5_password != cfg.md5_password;
        let id = entry.id;
        entry.cfg = cfg.clone();
        if reset {
            entry.session.send(SessionCommand::Reconfigure(cfg.clone()));
        }
        if md5_changed {
            self.set_listener_md5(cfg.address, cfg.md5_password.as_deref());
        }
        let out = self.rib.update_peer(id, PeerPolicy::from_config(&cfg));
        self.apply(out);
        Ok(())
    }

    fn remove_peer(&mut self, addr: IpAddr) -> Result<(), SpeakerError> {
        let Some(entry) = self.peers.remove(&addr) else {
            return Err(unknown_peer(addr));
        };
        self.keys.remove(&entry.session.key);
        let n = Notification::new(
            NotificationCode::Cease(CeaseSubcode::PeerDeconfigured),
            Vec::new(),
        );
        entry.session.send(SessionCommand::Stop(n));
        entry.session.send(SessionCommand::Shutdown {
            graceful_restart: false,
        });
        if entry.cfg.md5_password.is_some() {
            self.set_listener_md5(addr, None);
        }
        let out = self.rib.remove_peer(entry.id);
        self.apply(out);
        info!(peer = %addr, "peer removed");
        Ok(())
    }

    fn set_listener_md5(&self, peer: IpAddr, password: Option<&str>) {
        for &(fd, v4) in &self.listener_fds {
            if v4 == peer.is_ipv4()
                && let Err(e) = socket::set_md5(fd, peer, password)
            {
                warn!(%peer, "cannot set TCP MD5 key on listener: {e}");
            }
        }
    }

    fn on_accept(&mut self, stream: tokio::net::TcpStream, remote: SocketAddr) {
        let ip = canonical(remote.ip());
        match self.peers.get(&ip) {
            Some(p) => p.session.send(SessionCommand::Incoming(stream)),
            None => debug!(%remote, "connection from an unknown address refused"),
        }
    }

    fn on_session_event(&mut self, ev: SessionEvent) {
        match ev {
            SessionEvent::Established { key, info } => self.on_established(key, *info),
            SessionEvent::Down { key, reason } => self.on_down(key, reason),
            SessionEvent::Updates { key, updates } => {
                let Some(p) = self.entry(key) else { return };
                let (id, addr) = (p.id, p.cfg.address);
                let mut exceeded = None;
                let mut out = Vec::new();
                for update in &updates {
                    let (o, x) = self.rib.apply_update(id, update);
                    out.extend(o);
                    if x.is_some() {
                        exceeded = x;
                        break;
                    }
                }
                self.apply(out);
                if let Some(x) = exceeded {
                    warn!(peer = %addr, family = %x.family, limit = x.limit, "prefix limit exceeded");
                    if let Some(p) = self.peers.get(&addr) {
                        p.session
                            .send(SessionCommand::Reset(Notification::max_prefixes(
                                x.family, x.limit,
                            )));
                    }
                }
            }
            SessionEvent::EndOfRib { key, family } => {
                let Some(p) = self.entry_mut(key) else { return };
                if !p.eor.contains(&family) {
                    p.eor.push(family);
                }
                let id = p.id;
                debug!(peer = %p.cfg.address, %family, "End-of-RIB received");
                let out = self.rib.end_of_stale(id, Some(family));
                self.apply(out);
                if !self.rib.has_stale(id)
                    && let Some(p) = self.entry_mut(key)
                {
                    p.gr.stale_deadline = None;
                }
            }
            SessionEvent::RouteRefresh { key, refresh } => {
                let Some(p) = self.entry(key) else { return };
                let id = p.id;
                let enhanced = p
                    .established
                    .as_ref()
                    .is_some_and(|e| e.ctx.enhanced_route_refresh);
                let outbox = p.session.outbox.clone();
                match refresh.subtype {
                    RouteRefreshSubtype::Request => {
                        if self.rib.is_deferring() {
                            return;
                        }
                        if enhanced {
                            outbox.push_marker(Marker::BeginRefresh(refresh.family));
                        }
                        let out = self.rib.export_all(id, refresh.family);
                        self.apply(out);
                        if enhanced {
                            outbox.push_marker(Marker::EndRefresh(refresh.family));
                        }
                    }
                    RouteRefreshSubtype::BeginningOfRouteRefresh => {
                        self.rib.mark_stale(id, refresh.family);
                    }
                    RouteRefreshSubtype::EndOfRouteRefresh => {
                        let out = self.rib.end_of_stale(id, Some(refresh.family));
                        self.apply(out);
                    }
                    RouteRefreshSubtype::Other(_) => {}
                }
            }
        }
    }

    fn entry(&self, key: u64) -> Option<&PeerEntry> {
        self.keys.get(&key).and_then(|a| self.peers.get(a))
    }

    fn entry_mut(&mut self, key: u64) -> Option<&mut PeerEntry> {
        let a = *self.keys.get(&key)?;
        self.peers.get_mut(&a)
    }

    fn on_established(&mut self, key: u64, info: EstablishedInfo) {
        let stale_time =
            Duration::from_secs(u64::from(self.cfg.graceful_restart.stale_routes_time));
        let Some(p) = self.entry_mut(key) else { return };
        let preserved = info
            .peer_open
            .capabilities
            .graceful_restart
            .as_ref()
            .map(|g| {
                g.families
                    .iter()
                    .filter(|f| f.forwarding_state)
                    .map(|f| f.family)
                    .collect::<Vec<_>>()
            });
        let preserved = if info.graceful_restart() {
            preserved
        } else {
            Some(Vec::new())
        };
        let session_info = SessionInfo {
            router_id: info.peer_open.bgp_id,
            families: info.ctx.families.clone(),
            local_address: canonical(info.local.ip()),
            preserved,
        };
        let families = info.ctx.families.clone();
        p.eor.clear();
        p.gr.restart_deadline = None;
        p.established = Some(info);
        let (id, outbox) = (p.id, p.session.outbox.clone());
        let out = self.rib.peer_up(id, session_info);
        self.apply(out);
        if !self.rib.is_deferring() {
            for f in families {
                outbox.push_marker(Marker::EndOfRib(f));
            }
        }
        let stale = self.rib.has_stale(id);
        if let Some(p) = self.entry_mut(key) {
            p.gr.stale_deadline = stale.then(|| Instant::now() + stale_time);
        }
    }

    fn on_down(&mut self, key: u64, reason: DownReason) {
        let Some(p) = self.entry_mut(key) else { return };
        let info = p.established.take();
        p.eor.clear();
        let id = p.id;
        let max_prefix = matches!(&reason, DownReason::NotificationSent(n)
            if n.code == NotificationCode::Cease(CeaseSubcode::MaximumPrefixesReached));
        let mut keep = Vec::new();
        let mut restart_time = 0u16;
        if let Some(info) = &info
            && info.graceful_restart()
            && !max_prefix
            && reason.allows_graceful_restart(false)
            && let Some(g) = &info.peer_open.capabilities.graceful_restart
        {
            keep = g
                .families
                .iter()
                .map(|f| f.family)
                .filter(|f| info.ctx.families.contains(f))
                .collect();
            restart_time = g.restart_time;
        }
        if !keep.is_empty() {
            info!(peer = %p.cfg.address, restart_time, "peer restarting: keeping its routes as stale");
            p.gr.restart_deadline =
                Some(Instant::now() + Duration::from_secs(u64::from(restart_time)));
        }
        p.gr.stale_deadline = None;
        let out = self.rib.peer_down(id, &keep);
        self.apply(out);
    }

    /// Distributes RIB outputs: best changes to the agent's queue, adverts
    /// to the peers' outboxes.
    fn apply(&mut self, out: Vec<RibOutput>) {
        if out.is_empty() {
            return;
        }
        let adverts = out.iter().any(|o| matches!(o, RibOutput::Advertise { .. }));
        let by_id: HashMap<PeerId, std::sync::Arc<session::outbox::Outbox>> = if adverts {
            self.peers
                .values()
                .map(|p| (p.id, p.session.outbox.clone()))
                .collect()
        } else {
            HashMap::new()
        };
        let track_best = !self.best_tx.is_closed();
        for o in out {
            match o {
                RibOutput::BestChanged(p) => {
                    if track_best {
                        self.pending_best.insert(p);
                    }
                }
                RibOutput::Advertise {
                    peer,
                    prefix,
                    attrs,
                } => {
                    if let Some(ob) = by_id.get(&peer) {
                        ob.push_route(prefix, attrs);
                    }
                }
            }
        }
    }

    fn send_best(&mut self, permit: mpsc::Permit<'_, BestRouteEvent>) {
        let Some(p) = self.pending_best.pop_first() else {
            return;
        };
        let ev = match self.rib.best_route(&p) {
            Some(r) => BestRouteEvent::Best(r),
            None => BestRouteEvent::Withdrawn(p),
        };
        permit.send(ev);
    }

    fn check_converged(&mut self) {
        if self.converged {
            return;
        }
        let all_eor = !self.peers.is_empty()
            && self.peers.values().all(|p| {
                p.established
                    .as_ref()
                    .is_some_and(|e| e.ctx.families.iter().all(|f| p.eor.contains(f)))
            });
        if !all_eor && Instant::now() < self.converge_deadline {
            return;
        }
        self.converged = true;
        info!("initial routing table complete");
        if self.rib.is_deferring() {
            self.rib.end_deferral();
            let established: Vec<(PeerId, Vec<Family>, std::sync::Arc<session::outbox::Outbox>)> =
                self.peers
                    .values()
                    .filter_map(|p| {
                        p.established
                            .as_ref()
                            .map(|e| (p.id, e.ctx.families.clone(), p.session.outbox.clone()))
                    })
                    .collect();
            for (id, families, outbox) in established {
                for f in families {
                    let out = self.rib.export_all(id, f);
                    self.apply(out);
                    outbox.push_marker(Marker::EndOfRib(f));
                }
            }
        }
        if !self.best_tx.is_closed() {
            // Sent through the same queue as route events, after them.
            let _ = self.best_tx.try_send(BestRouteEvent::Converged);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = (!self.converged).then_some(self.converge_deadline);
        for p in self.peers.values() {
            for x in [p.gr.restart_deadline, p.gr.stale_deadline]
                .into_iter()
                .flatten()
            {
                d = Some(d.map_or(x, |c| c.min(x)));
            }
        }
        d
    }

    fn on_deadlines(&mut self) {
        let now = Instant::now();
        let mut flush = Vec::new();
        for p in self.peers.values_mut() {
            if p.gr.restart_deadline.is_some_and(|d| d <= now) {
                p.gr.restart_deadline = None;
                info!(peer = %p.cfg.address, "restart time over: dropping its stale routes");
                flush.push(p.id);
            }
            if p.gr.stale_deadline.is_some_and(|d| d <= now) {
                p.gr.stale_deadline = None;
                info!(peer = %p.cfg.address, "no End-of-RIB in time: dropping its stale routes");
                flush.push(p.id);
            }
        }
        for id in flush {
            let out = self.rib.end_of_stale(id, None);
            self.apply(out);
        }
    }

    fn peer_statuses(&self) -> Vec<PeerStatus> {
        let now = SystemTime::now();
        let mut v: Vec<PeerStatus> = self
            .peers
            .values()
            .map(|p| {
                let s = p.session.status();
                PeerStatus {
                    address: p.cfg.address,
                    asn: p.cfg.asn,
                    description: p.cfg.description.clone(),
                    ebgp: p.cfg.is_ebgp(self.cfg.asn),
                    route_reflector_client: p.cfg.route_reflector_client,
                    state: s.state,
                    since_unix: s
                        .since
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                    seconds_in_state: now.duration_since(s.since).map_or(0, |d| d.as_secs()),
                    router_id: s.router_id,
                    local_address: s.local,
                    remote_address: s.remote,
                    negotiated: s.negotiated,
                    messages: s.counters,
                    prefixes: self.rib.counters(p.id).unwrap_or_default(),
                    graceful_restart_helper: p.gr.restart_deadline.is_some()
                        || self.rib.has_stale(p.id),
                    last_error: s.last_error,
                }
            })
            .collect();
        v.sort_by_key(|p| p.address);
        v
    }

    fn routes(&mut self, q: RouteQuery) -> Result<Vec<RouteView>, SpeakerError> {
        match q {
            RouteQuery::LocRib => Ok(self.rib.loc_rib()),
            RouteQuery::AdjIn(a) => {
                let id = self.peers.get(&a).ok_or_else(|| unknown_peer(a))?.id;
                Ok(self.rib.adj_rib_in(id))
            }
            RouteQuery::AdjOut(a) => {
                let id = self.peers.get(&a).ok_or_else(|| unknown_peer(a))?.id;
                Ok(self.rib.adj_rib_out(id))
            }
        }
    }

    async fn shutdown(&mut self, mode: ShutdownMode) {
        let graceful = mode == ShutdownMode::GracefulRestart;
        let peers: Vec<PeerEntry> = self.peers.drain().map(|(_, p)| p).collect();
        for p in &peers {
            p.session.send(SessionCommand::Shutdown {
                graceful_restart: graceful,
            });
        }
        for p in peers {
            let _ = tokio::time::timeout(Duration::from_secs(5), p.session.join()).await;
        }
        info!(graceful_restart = graceful, "speaker stopped");
    }
}

async fn accept_loop(l: TcpListener, tx: mpsc::Sender<(tokio::net::TcpStream, SocketAddr)>) {
    loop {
        match l.accept().await {
            Ok((s, remote)) => {
                if tx.send((s, remote)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// IPv4-mapped IPv6 addresses as IPv4 (a dual-stack socket reports them).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn unknown_peer(a: IpAddr) -> SpeakerError {
    SpeakerError::Invalid(format!("no peer with address {a}"))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
