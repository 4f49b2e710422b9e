//! The routing task: registers the node, runs the BGP speaker, keeps its
//! peers and announcements equal to what the API says (applied as diffs, so
//! unchanged sessions are never touched), and keeps the proto-88 kernel
//! routes equal to the speaker's best routes.
//!
//! Restart without disruption: routes found in the kernel at start are
//! adopted (left alone, changed only where they differ) and the speaker
//! starts as "restarting" (graceful restart: its peers keep our routes and
//! keep forwarding); routes nobody wants any more are swept only after the
//! speaker reports [`BestRouteEvent::Converged`] (or `sweep_timeout`). On
//! shutdown sessions are closed without a NOTIFICATION and kernel routes stay.

use crate::calc::remote_routes::RouteResolver;
use crate::datastore::Datastore;
use crate::routing::announce::{Originated, originated};
use crate::routing::detect::{self, as_v4, as_v6};
use crate::routing::kernel::RouteKernel;
use crate::routing::node::{NodeInfo, Registration};
use crate::routing::peers::{DesiredPeer, PeerInputs, PeerKind, plan_peers, secret_refs};
use crate::routing::route_plan;
use crate::routing::status::{self, BgpStatus, PeersAnswer, Snapshot};
use crate::routing::watch::RoutingCaches;
use crate::routing::{Role, RoutingSettings};
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use margay_api::BGPConfiguration;
use margay_api::net::Cidr;
use margay_api::resources::bgp::ResolvedBgpConfig;
use margay_bgp::{
    BestRouteEvent, LocalRoute, Prefix, RouteQuery, ShutdownMode, Speaker, SpeakerConfig,
    SpeakerHandle,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How often status is refreshed and the kernel re-read without a change.
const TICK: Duration = Duration::from_secs(2);
/// Least time between status refreshes prompted by route changes.
const STATUS_MIN_INTERVAL: Duration = Duration::from_millis(500);
/// How long a restarting speaker waits for its peers' End-of-RIB.
const SELECTION_DEFERRAL: u16 = 60;

/// The running routing task.
#[derive(Clone)]
pub struct RoutingHandle {
    speaker: Arc<Mutex<Option<SpeakerHandle>>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl RoutingHandle {
    /// Closes every session without a NOTIFICATION (peers that negotiated
    /// graceful restart keep our routes), stops the tasks; kernel routes stay.
    pub async fn shutdown(&self) {
        let speaker = self.speaker.lock().ok().and_then(|mut s| s.take());
        if let Some(s) = speaker {
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                s.shutdown(ShutdownMode::GracefulRestart),
            )
            .await;
        }
        self.abort();
    }

    pub fn abort(&self) {
        if let Ok(mut t) = self.tasks.lock() {
            for t in t.drain(..) {
                t.abort();
            }
        }
    }
}

/// Everything the routing task needs from the agent.
pub struct RoutingInputs {
    pub settings: RoutingSettings,
    pub node: String,
    pub client: Client,
    pub datastore: Datastore,
    pub status: BgpStatus,
    pub resolver: Arc<dyn RouteResolver>,
    pub metrics: crate::routing::metrics::RoutingMetrics,
    /// Bumped by the resolver's owner when its inputs change.
    pub resolver_changed: watch::Receiver<u64>,
    /// Becomes true once the agent's datastore caches have synced.
    pub synced: watch::Receiver<bool>,
}

/// Starts the routing task on the current runtime.
pub fn start(inputs: RoutingInputs) -> RoutingHandle {
    let handle = RoutingHandle {
        speaker: Arc::new(Mutex::new(None)),
        tasks: Arc::new(Mutex::new(Vec::new())),
    };
    let mut tasks = Vec::new();
    let caches = RoutingCaches::start(inputs.client.clone(), &mut tasks);
    let h = handle.clone();
    tasks.push(tokio::spawn(async move {
        run(inputs, caches, h).await;
    }));
    if let Ok(mut t) = handle.tasks.lock() {
        t.extend(tasks);
    }
    handle
}

fn to_prefix(c: &Cidr) -> Option<Prefix> {
    Prefix::new(c.addr(), c.prefix()).ok()
}

fn to_cidr(p: &Prefix) -> Option<Cidr> {
    Cidr::new_truncating(p.addr(), p.prefix_len())
}

fn bgp_config(caches: &RoutingCaches) -> ResolvedBgpConfig {
    let spec = caches
        .bgp_configs
        .state()
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("default"))
        .map(|c: &Arc<BGPConfiguration>| c.spec.clone())
        .unwrap_or_default();
    ResolvedBgpConfig::from_spec(&spec)
}

/// Detects the node's addresses and records them on its Node.
async fn register(
    s: &RoutingSettings,
    node: &str,
    client: &Client,
    kernel: &RouteKernel,
    datastore: &Datastore,
) -> Result<Registration, String> {
    let host = kernel.host_addresses().await.map_err(|e| e.to_string())?;
    let internal: Vec<IpAddr> = datastore
        .node(node)
        .and_then(|n| n.status.clone())
        .and_then(|st| st.addresses)
        .map(|a| {
            a.iter()
                .filter(|a| a.type_ == "InternalIP")
                .filter_map(|a| a.address.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let ipv4 = match s.node_ip {
        Some(ip) => Some(detect::explicit(ip, &host)),
        None => detect::detect(&s.autodetect_v4, &host, &internal, true),
    }
    .and_then(as_v4)
    .ok_or_else(|| {
        format!(
            "node {node}: no IPv4 address found (method {:?}); set --node-ip or --ip-autodetection-method",
            s.autodetect_v4
        )
    })?;
    let ipv6 = match (s.node_ipv6, &s.autodetect_v6) {
        (Some(ip), _) => Some(detect::explicit(ip, &host)),
        (None, Some(m)) => detect::detect(m, &host, &internal, false),
        (None, None) => None,
    }
    .and_then(as_v6);
    // `--role route-reflector` records the cluster id; without it an
    // administrator may have made the node a reflector on its Node object
    // (and may have set its AS there).
    let own = datastore.node(node).map(|n| NodeInfo::from_node(&n));
    let rr_flag = s.role == Role::RouteReflector;
    let reg = Registration {
        ipv4: Some(ipv4),
        ipv6,
        as_number: s.as_number.or(own.as_ref().and_then(|n| n.as_number)),
        rr_cluster_id: if rr_flag {
            Some(s.rr_cluster_id.unwrap_or(ipv4.addr))
        } else {
            own.as_ref().and_then(|n| n.rr_cluster_id)
        },
    };
    let api: Api<Node> = Api::all(client.clone());
    api.patch(
        node,
        &PatchParams::default(),
        &Patch::Merge(&reg.merge_patch(rr_flag)),
    )
    .await
    .map_err(|e| format!("patching Node {node}: {e}"))?;
    Ok(reg)
}

struct State {
    node: String,
    role: Role,
    reg: Registration,
    speaker: SpeakerHandle,
    kernel: RouteKernel,
    resolver: Arc<dyn RouteResolver>,
    metrics: crate::routing::metrics::RoutingMetrics,
    client: Client,
    secrets_namespace: String,
    secrets: BTreeMap<(String, String), String>,
    secrets_read: Option<Instant>,
    applied: BTreeMap<IpAddr, DesiredPeer>,
    announced: BTreeSet<Cidr>,
    learned: BTreeMap<Cidr, Vec<IpAddr>>,
    /// Routes this run installed (deleted when unwanted, sweep or not).
    installed: BTreeSet<Cidr>,
    sweep: bool,
    problems: Vec<String>,
    /// Routes the kernel refused, with why (logged once per reason).
    failed: BTreeMap<Cidr, String>,
}

async fn run(inputs: RoutingInputs, caches: RoutingCaches, handle: RoutingHandle) {
    let RoutingInputs {
        settings,
        node,
        client,
        datastore,
        status,
        resolver,
        metrics,
        mut resolver_changed,
        mut synced,
    } = inputs;
    status.set(Snapshot {
        peers: PeersAnswer {
            node: node.clone(),
            ..Default::default()
        },
        ..Default::default()
    });
    // kube's `Store::wait_until_ready` wakes only its last waiter, and the
    // agent's start-up waits on the datastore's stores: it tells us instead.
    let _ = synced.wait_for(|s| *s).await;
    caches.wait_synced().await;
    tracing::debug!("routing: caches in sync");
    let kernel = loop {
        match RouteKernel::connect() {
            Ok(k) => break k,
            Err(e) => tracing::warn!(error = %e, "routing: netlink"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    // Routes of a previous run mean this start is a restart.
    let adopted = loop {
        match kernel.routes().await {
            Ok(r) => break r,
            Err(e) => tracing::warn!(error = %e, "routing: reading our routes"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let restarting = !adopted.is_empty();
    tracing::debug!(
        routes = adopted.len(),
        "routing: read the kernel's proto 88 routes"
    );
    let reg = loop {
        match register(&settings, &node, &client, &kernel, &datastore).await {
            Ok(r) => break r,
            Err(e) => tracing::warn!(error = %e, "routing: node registration; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let Some(v4) = reg.ipv4 else { return };
    let cfg = bgp_config(&caches);
    let asn = reg.as_number.unwrap_or(cfg.as_number);
    let mut sc = SpeakerConfig::new(v4.addr, asn);
    sc.multipath = true;
    sc.cluster_id = reg.rr_cluster_id;
    sc.graceful_restart.restart_time = cfg.node_mesh_max_restart_time.as_secs().min(4095) as u16;
    sc.graceful_restart.restarting = restarting;
    sc.graceful_restart.selection_deferral_time = SELECTION_DEFERRAL;
    let port = cfg.listen_port;
    let (speaker, mut best) = loop {
        let mut with_v6 = sc.clone();
        with_v6.listen = vec![
            SocketAddr::from(([0, 0, 0, 0], port)),
            SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), port),
        ];
        match Speaker::start(with_v6).await {
            Ok(s) => break s,
            Err(e) => tracing::debug!(error = %e, "BGP over IPv6 unavailable; IPv4 only"),
        }
        let mut v4_only = sc.clone();
        v4_only.listen = vec![SocketAddr::from(([0, 0, 0, 0], port))];
        match Speaker::start(v4_only).await {
            Ok(s) => break s,
            Err(e) => tracing::error!(error = %e, "could not start the BGP speaker; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    tracing::info!(router_id = %v4.addr, asn, restarting, adopted = adopted.len(), role = ?settings.role, "BGP speaker started");
    if let Ok(mut s) = handle.speaker.lock() {
        *s = Some(speaker.clone());
    }
    let mut st = State {
        node: node.clone(),
        role: settings.role,
        reg,
        speaker,
        kernel,
        resolver,
        metrics,
        client,
        secrets_namespace: settings.secrets_namespace.clone(),
        secrets: BTreeMap::new(),
        secrets_read: None,
        applied: BTreeMap::new(),
        announced: BTreeSet::new(),
        learned: BTreeMap::new(),
        installed: BTreeSet::new(),
        sweep: false,
        problems: Vec::new(),
        failed: BTreeMap::new(),
    };
    let started = Instant::now();
    let mut ds_changes = datastore.changes();
    let mut api_changes = caches.changes.clone();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut config_warned = false;
    let mut last_status = Instant::now();
    loop {
        st.reconcile(&datastore, &caches).await;
        let cfg_now = bgp_config(&caches);
        if !config_warned
            && (cfg_now.listen_port != port || st.reg.as_number.unwrap_or(cfg_now.as_number) != asn)
        {
            config_warned = true;
            tracing::warn!(
                "BGPConfiguration default changed the AS number or port; restart the agent to apply it"
            );
        }
        let mut refresh_status = false;
        tokio::select! {
            ev = best.recv() => match ev {
                Some(ev) => {
                    st.on_best(ev);
                    // Take whatever else is queued before touching the kernel.
                    drain(&mut best, &mut st);
                    // Routes changed: status follows soon, at most twice a second.
                    refresh_status = last_status.elapsed() > STATUS_MIN_INTERVAL;
                }
                None => {
                    tracing::error!("the BGP speaker stopped");
                    return;
                }
            },
            _ = ds_changes.changed() => {}
            _ = api_changes.changed() => {}
            _ = resolver_changed.changed() => {}
            _ = tick.tick() => refresh_status = true,
        }
        if !st.sweep && started.elapsed() > settings.sweep_timeout {
            tracing::info!("BGP did not converge within the sweep timeout; sweeping stale routes");
            st.sweep = true;
        }
        if refresh_status {
            status.set(st.snapshot(asn).await);
            last_status = Instant::now();
        }
    }
}

fn drain(best: &mut mpsc::Receiver<BestRouteEvent>, st: &mut State) {
    while let Ok(ev) = best.try_recv() {
        st.on_best(ev);
    }
}

impl State {
    fn on_best(&mut self, ev: BestRouteEvent) {
        match ev {
            BestRouteEvent::Best(r) => {
                if let Some(c) = to_cidr(&r.prefix) {
                    self.learned.insert(c, r.next_hops.clone());
                }
            }
            BestRouteEvent::Withdrawn(p) => {
                if let Some(c) = to_cidr(&p) {
                    self.learned.remove(&c);
                }
            }
            BestRouteEvent::Converged => {
                tracing::info!("BGP converged; sweeping stale routes");
                self.sweep = true;
            }
        }
    }

    fn me(&self, nodes: &[NodeInfo]) -> NodeInfo {
        let mut me = nodes
            .iter()
            .find(|n| n.name == self.node)
            .cloned()
            .unwrap_or(NodeInfo {
                name: self.node.clone(),
                labels: BTreeMap::new(),
                ipv4: None,
                ipv6: None,
                as_number: None,
                rr_cluster_id: None,
            });
        // What we registered is the truth, even before the watch shows it.
        me.ipv4 = self.reg.ipv4;
        me.ipv6 = self.reg.ipv6;
        me.as_number = self.reg.as_number;
        me.rr_cluster_id = self.reg.rr_cluster_id;
        if me.rr_cluster_id.is_some() {
            me.labels.insert(
                crate::routing::node::LABEL_RR.to_string(),
                "true".to_string(),
            );
        }
        me
    }

    async fn read_secrets(&mut self, caches: &RoutingCaches) {
        let peers: Vec<_> = caches
            .bgp_peers
            .state()
            .iter()
            .map(|p| (**p).clone())
            .collect();
        let refs = secret_refs(&peers);
        let fresh = self
            .secrets_read
            .is_some_and(|t| t.elapsed() < Duration::from_secs(30))
            && refs
                .iter()
                .all(|r| self.secrets.contains_key(&(r.name.clone(), r.key.clone())));
        if refs.is_empty() || fresh {
            return;
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.secrets_namespace);
        let mut out = BTreeMap::new();
        for r in refs {
            match api.get_opt(&r.name).await {
                Ok(Some(s)) => {
                    let v = s
                        .data
                        .as_ref()
                        .and_then(|d| d.get(&r.key))
                        .and_then(|b| String::from_utf8(b.0.clone()).ok())
                        .or_else(|| s.string_data.as_ref().and_then(|d| d.get(&r.key).cloned()));
                    if let Some(v) = v {
                        out.insert((r.name.clone(), r.key.clone()), v);
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(secret = %r.name, error = %e, "reading a BGP password"),
            }
        }
        self.secrets = out;
        self.secrets_read = Some(Instant::now());
    }

    async fn reconcile(&mut self, datastore: &Datastore, caches: &RoutingCaches) {
        let nodes: Vec<NodeInfo> = datastore
            .nodes
            .state()
            .iter()
            .map(|n| NodeInfo::from_node(n))
            .collect();
        let me = self.me(&nodes);
        let pools = datastore.resolved_pools();
        let export_pools: Vec<Prefix> = pools
            .iter()
            .filter(|p| !p.disable_bgp_export)
            .filter_map(|p| to_prefix(&p.cidr))
            .collect();
        self.read_secrets(caches).await;
        let bgp_peers: Vec<_> = caches
            .bgp_peers
            .state()
            .iter()
            .map(|p| (**p).clone())
            .collect();
        let cfg = bgp_config(caches);
        let plan = plan_peers(&PeerInputs {
            me: &me,
            nodes: &nodes,
            config: &cfg,
            bgp_peers: &bgp_peers,
            secrets: &self.secrets,
            export_pools: &export_pools,
        });
        if plan.problems != self.problems {
            for p in &plan.problems {
                tracing::warn!(problem = %p, "BGP peer configuration");
            }
            self.problems = plan.problems.clone();
        }
        self.apply_peers(plan.peers).await;

        let blocks: Vec<_> = caches
            .blocks
            .state()
            .iter()
            .map(|b| (**b).clone())
            .collect();
        let own = originated(&self.node, &blocks, &pools);
        self.apply_announcements(&own).await;
        self.apply_kernel(&own).await;
    }

    async fn apply_peers(&mut self, wanted: BTreeMap<IpAddr, DesiredPeer>) {
        let gone: Vec<IpAddr> = self
            .applied
            .keys()
            .filter(|a| !wanted.contains_key(a))
            .copied()
            .collect();
        for a in gone {
            match self.speaker.remove_peer(a).await {
                Ok(()) => {
                    tracing::info!(peer = %a, "removed BGP peer");
                    self.applied.remove(&a);
                }
                Err(e) => tracing::warn!(peer = %a, error = %e, "removing BGP peer"),
            }
        }
        for (a, p) in wanted {
            let result = match self.applied.get(&a) {
                None => self.speaker.add_peer(p.config.clone()).await,
                Some(old) if old.config != p.config => {
                    self.speaker.update_peer(p.config.clone()).await
                }
                Some(_) => {
                    // Same session; only the label may differ.
                    self.applied.insert(a, p);
                    continue;
                }
            };
            match result {
                Ok(()) => {
                    tracing::info!(peer = %a, kind = p.kind.as_str(), "BGP peer configured");
                    self.applied.insert(a, p);
                }
                Err(e) => tracing::warn!(peer = %a, error = %e, "configuring BGP peer"),
            }
        }
    }

    async fn apply_announcements(&mut self, own: &Originated) {
        let gone: Vec<Cidr> = self.announced.difference(&own.announce).copied().collect();
        for c in gone {
            let Some(p) = to_prefix(&c) else { continue };
            match self.speaker.withdraw(p).await {
                Ok(()) => {
                    tracing::debug!(prefix = %c, "withdrawn");
                    self.announced.remove(&c);
                }
                Err(e) => tracing::warn!(prefix = %c, error = %e, "withdrawing"),
            }
        }
        let new: Vec<Cidr> = own.announce.difference(&self.announced).copied().collect();
        for c in new {
            let Some(p) = to_prefix(&c) else { continue };
            match self.speaker.announce(p, LocalRoute::default()).await {
                Ok(()) => {
                    tracing::debug!(prefix = %c, "announced");
                    self.announced.insert(c);
                }
                Err(e) => tracing::warn!(prefix = %c, error = %e, "announcing"),
            }
        }
    }

    async fn apply_kernel(&mut self, own: &Originated) {
        let wanted = route_plan::wanted_routes(
            own,
            &self.learned,
            self.role == Role::Node,
            self.resolver.as_ref(),
        );
        let held = match self.kernel.routes().await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "reading proto 88 routes");
                return;
            }
        };
        let mut changes = route_plan::plan(&wanted, &held, true);
        if !self.sweep {
            // Before convergence only what this run installed may go.
            changes.delete.retain(|(p, _)| self.installed.contains(p));
        }
        for (p, r) in &changes.replace {
            match self.kernel.replace(*p, r).await {
                Ok(()) => {
                    tracing::debug!(prefix = %p, route = ?r, "route programmed");
                    self.installed.insert(*p);
                    self.failed.remove(p);
                    self.count_change("replace");
                }
                Err(e) => {
                    self.metrics.kernel_route_errors.inc();
                    // Retried every pass; said once per reason (a next hop
                    // in another subnet without an overlay fails each time).
                    let e = e.to_string();
                    if self.failed.get(p) != Some(&e) {
                        tracing::warn!(error = %e, "programming a route");
                        self.failed.insert(*p, e);
                    }
                }
            }
        }
        for (p, r) in &changes.delete {
            match self.kernel.delete(*p, r).await {
                Ok(()) => {
                    tracing::debug!(prefix = %p, "route removed");
                    self.installed.remove(p);
                    self.count_change("delete");
                }
                Err(e) => {
                    self.metrics.kernel_route_errors.inc();
                    tracing::warn!(error = %e, "removing a route");
                }
            }
        }
        // Routes that are no longer wanted are no longer failing either.
        self.failed.retain(|p, _| wanted.contains_key(p));
        let held_now = held.len() as i64
            + changes
                .replace
                .iter()
                .filter(|(p, _)| !held.contains_key(p))
                .count() as i64
            - changes.delete.len() as i64;
        self.metrics.kernel_routes.set(held_now.max(0));
        self.metrics
            .announced_prefixes
            .set(self.announced.len() as i64);
        self.metrics.learned_prefixes.set(self.learned.len() as i64);
    }

    fn count_change(&self, op: &str) {
        self.metrics
            .kernel_route_changes
            .get_or_create(&crate::routing::metrics::RouteOp { op: op.into() })
            .inc();
    }

    async fn snapshot(&self, asn: u32) -> Snapshot {
        let kinds: BTreeMap<IpAddr, PeerKind> =
            self.applied.iter().map(|(a, p)| (*a, p.kind)).collect();
        let peers = self.speaker.peers().await.unwrap_or_default();
        self.metrics.peers.clear();
        for p in &peers {
            self.metrics
                .peers
                .get_or_create(&crate::routing::metrics::PeerState {
                    state: format!("{:?}", p.state),
                })
                .inc();
        }
        let mut snap = Snapshot {
            peers: PeersAnswer {
                node: self.node.clone(),
                router_id: self.reg.ipv4.map(|a| a.addr.to_string()),
                asn: Some(asn),
                route_reflector_cluster_id: self.reg.rr_cluster_id.map(|c| c.to_string()),
                running: true,
                peers: peers
                    .iter()
                    .map(|p| status::row(p, kinds.get(&p.address).copied()))
                    .collect(),
            },
            loc_rib: self
                .speaker
                .routes(RouteQuery::LocRib)
                .await
                .unwrap_or_default(),
            ..Default::default()
        };
        for p in &peers {
            if let Ok(r) = self.speaker.routes(RouteQuery::AdjIn(p.address)).await {
                snap.received.insert(p.address, r);
            }
            if let Ok(r) = self.speaker.routes(RouteQuery::AdjOut(p.address)).await {
                snap.advertised.insert(p.address, r);
            }
        }
        snap
    }
}
