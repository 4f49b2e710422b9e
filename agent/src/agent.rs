//! Wiring the agent together and its start-up order:
//!
//! 1. health and metrics servers (not ready yet);
//! 2. endpoint records from the state directory into the endpoint table;
//! 3. the dataplane task — it keeps recorded endpoints' routes right at once,
//!    but sweeps nothing yet;
//! 4. the reflectors, and the endpoint socket (answering "not ready, retry"
//!    to ADDs until step 5 is done; DEL works from the start);
//! 5. once every cache has synced: endpoints whose record was lost are
//!    recovered from IPAM and the kernel, sweeping is enabled with a full
//!    pass, the policy table is reconciled with the compiled policy (see
//!    `dataplane::policy`), the agent reports ready and installs the CNI
//!    conflist.
//!
//! On shutdown the agent stops serving and removes its socket; routes,
//! sysctls and the conflist stay, so pods keep working while it is away.

use crate::calc::endpoints::{Endpoint, EndpointKey, EndpointState, EndpointTable};
use crate::config::{Settings, install_conflist};
use crate::dataplane::policy::{PolicyConfig, PolicyHandle};
use crate::dataplane::{self, DataplaneConfig, DataplaneHandle, SharedEndpoints};
use crate::datastore::Datastore;
use crate::endpoint_service::{self, handler::EndpointHandler};
use crate::endpoint_store::EndpointStore;
use crate::health::Health;
use crate::metrics::Metrics;
use kube::Client;
use margay_api::IPAMBlock;
use margay_api::endpoint::{PodRef, host_interface_name};
use margay_ipam::store::kube::KubeStore;
use margay_ipam::{Allocator, IpamStore, SystemClock};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("listening on {what} {addr}: {source}")]
    Listen {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("state directory {path}: {source}")]
    State {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Netlink(#[from] dataplane::netlink::NetlinkError),
    #[error("nftables: {0}")]
    Nft(#[from] margay_policy::nft::NftError),
    #[error("overlay: {0}")]
    Overlay(String),
}

/// A running agent's parts, for tests that drive it in-process.
pub struct RunningAgent {
    pub metrics: Metrics,
    pub health: Health,
    pub dataplane: DataplaneHandle,
    pub endpoints: SharedEndpoints,
    pub policy: PolicyHandle,
    pub routing: Option<crate::routing::runner::RoutingHandle>,
    pub overlay: crate::overlay::OverlayHandle,
    tasks: Vec<JoinHandle<()>>,
    socket: std::path::PathBuf,
}

impl RunningAgent {
    /// Stops serving and removes the socket; leaves the dataplane as it is.
    pub fn stop(self) {
        if let Some(r) = &self.routing {
            r.abort();
        }
        for t in &self.tasks {
            t.abort();
        }
        self.overlay.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Starts the agent on the current runtime; returns once everything is
/// spawned (readiness follows later, see [`Health`]).
pub async fn start(
    settings: &Settings,
    client: Client,
    logs: Option<crate::logging::LogControl>,
) -> Result<RunningAgent, AgentError> {
    let metrics = Metrics::new();
    let health = Health::new();
    let mut tasks = Vec::new();

    let h = health.clone();
    let bgp_status = crate::routing::status::BgpStatus::default();
    let bs = bgp_status.clone();
    tasks.push(
        serve_http(
            "health",
            settings.health_listen,
            Arc::new(move |p: &str| bs.answer(p).unwrap_or_else(|| h.answer(p))),
        )
        .await?,
    );
    if let Some(addr) = settings.metrics_listen {
        let m = metrics.clone();
        tasks.push(
            serve_http(
                "metrics",
                addr,
                Arc::new(move |p: &str| match p {
                    "/metrics" => crate::http::Answer {
                        status: hyper::StatusCode::OK,
                        content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        body: m.encode(),
                    },
                    _ => crate::http::Answer::text(hyper::StatusCode::NOT_FOUND, "try /metrics\n"),
                }),
            )
            .await?,
        );
    }

    let state_err = |source| AgentError::State {
        path: settings.state_dir.display().to_string(),
        source,
    };
    let records = EndpointStore::open(&settings.state_dir).map_err(state_err)?;
    let loaded = records.load().map_err(state_err)?;
    tracing::info!(endpoints = loaded.len(), "loaded endpoint records");
    let endpoints: SharedEndpoints = Arc::new(Mutex::new(EndpointTable::from_records(loaded)));

    let dp = dataplane::spawn(
        endpoints.clone(),
        DataplaneConfig {
            resync_interval: settings.route_refresh_interval,
            mtu: settings.mtu,
        },
        metrics.clone(),
        health.clone(),
    )?;
    // Recorded endpoints get their routes back now, before the API answers.
    let first = dp.apply().await;
    if let Some(e) = &first.error {
        tracing::warn!(error = %e, "first dataplane pass failed");
    }

    // Policy: the worker now (it programs nothing before start-up step 5
    // tells it to), its watches with the other reflectors.
    let policy = dataplane::policy::spawn(
        endpoints.clone(),
        PolicyConfig {
            node: settings.node_name.clone(),
            refresh_interval: settings.dataplane_refresh_interval,
            events: Some(client.clone()),
        },
        metrics.clone(),
    )?;
    tasks.extend(crate::datastore::policy::start(client.clone(), &policy));

    let datastore = Datastore::start(client.clone(), &settings.node_name);
    // Start-up step 5 says when the caches synced.
    let (synced_tx, synced) = tokio::sync::watch::channel(false);
    let store = KubeStore::new(client.clone()).with_call_timeout(settings.api_timeout);
    let allocator = Allocator::new(store, Arc::new(SystemClock));
    // Overlay (VXLAN/IPIP, the resolver routing's programmer takes) and NAT
    // outgoing: both wait for the caches, then follow pools and nodes.
    let overlay_refresh = settings
        .dataplane_refresh_interval
        .unwrap_or(std::time::Duration::from_secs(90));
    let overlay = crate::overlay::start(
        crate::overlay::OverlayConfig {
            node: settings.node_name.clone(),
            refresh_interval: overlay_refresh,
        },
        datastore.clone(),
        client.clone(),
        allocator.clone(),
    )
    .map_err(|e| AgentError::Overlay(e.to_string()))?;
    tasks.push(tokio::spawn(crate::overlay::service::follow_overhead(
        overlay.overhead.clone(),
        dp.clone(),
    )));
    tasks.push(crate::nat::start(datastore.clone(), overlay_refresh)?);
    // BGP: learned routes leave through the overlay's resolver (direct,
    // VXLAN or IPIP per pool and node), re-resolved when its inputs change.
    let routing = settings.routing.enabled.then(|| {
        crate::routing::runner::start(crate::routing::runner::RoutingInputs {
            settings: settings.routing.clone(),
            node: settings.node_name.clone(),
            client: client.clone(),
            datastore: datastore.clone(),
            status: bgp_status.clone(),
            resolver: overlay.resolver.clone(),
            metrics: metrics.routing.clone(),
            resolver_changed: overlay.changed.clone(),
            synced,
        })
    });
    let handler = Arc::new(
        EndpointHandler::new(
            settings.node_name.clone(),
            client.clone(),
            allocator.clone(),
            datastore.clone(),
            endpoints.clone(),
            records.clone(),
            dp.clone(),
            metrics.clone(),
            health.clone(),
            settings.api_timeout,
        )
        .with_policy(policy.clone(), settings.cni_policy_wait_timeout),
    );
    let listener =
        endpoint_service::bind(&settings.cni_socket).map_err(|source| AgentError::Listen {
            what: "the endpoint socket",
            addr: settings.cni_socket.display().to_string(),
            source,
        })?;
    tracing::info!(socket = %settings.cni_socket.display(), "serving the endpoint socket");
    if let Some(every) = settings.endpoint_cleanup_interval {
        let handler = handler.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                handler.forget_endpoints_of_gone_pods().await;
            }
        }));
    }
    tasks.push(tokio::spawn(endpoint_service::serve(
        listener,
        handler,
        metrics.clone(),
    )));

    if let Some(cfg) = settings.ipam_gc.clone() {
        tasks.push(tokio::spawn(crate::ipam_gc::run(
            client.clone(),
            settings.node_name.clone(),
            cfg,
            metrics.clone(),
        )));
    }

    tasks.push(tokio::spawn(become_ready(StartUp {
        settings: settings.clone(),
        health: health.clone(),
        metrics: metrics.clone(),
        dataplane: dp.clone(),
        endpoints: endpoints.clone(),
        policy: policy.clone(),
        datastore,
        allocator,
        records,
        logs,
        synced: synced_tx,
        overlay_status: overlay.status.clone(),
    })));

    Ok(RunningAgent {
        metrics,
        health,
        dataplane: dp,
        endpoints,
        policy,
        routing,
        overlay,
        tasks,
        socket: settings.cni_socket.clone(),
    })
}

/// What start-up step 5 needs.
struct StartUp {
    settings: Settings,
    health: Health,
    metrics: Metrics,
    dataplane: DataplaneHandle,
    endpoints: SharedEndpoints,
    policy: PolicyHandle,
    datastore: Datastore,
    allocator: Allocator<KubeStore>,
    records: EndpointStore,
    logs: Option<crate::logging::LogControl>,
    synced: tokio::sync::watch::Sender<bool>,
    overlay_status: tokio::sync::watch::Receiver<crate::overlay::OverlayStatus>,
}

/// Start-up step 5: caches in sync, lost endpoints recovered, sweep on,
/// ready, conflist installed; then keeps the reflectors alive.
async fn become_ready(s: StartUp) {
    s.health
        .set_ready(false, "waiting for the datastore caches to sync");
    s.datastore.wait_synced().await;
    tracing::info!("datastore caches in sync");
    s.metrics.datastore_in_sync.set(1);
    let _ = s.synced.send(true);
    // Sweeping before recovery could delete the routes of live pods whose
    // record was lost: retry until recovery has looked at everything.
    while !recover_lost_endpoints(
        &s.settings.node_name,
        &s.allocator,
        &s.dataplane,
        &s.endpoints,
        &s.records,
    )
    .await
    {
        s.health
            .set_ready(false, "recovering endpoints from IPAM and the kernel");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    if let Some(e) = s.dataplane.enable_sweep().await.error {
        s.health.set_ready(false, &format!("dataplane: {e}"));
    }
    // Sweeping stays on once asked for; the first full pass that works (and
    // so reports sweeping) makes the agent ready.
    loop {
        if s.dataplane.resync().await.error.is_none() && s.dataplane.status().sweeping {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    // No pod may start before the policy table holds the compiled policy
    // (a restart adopts the table it finds and fixes what differs).
    // Pods must get the MTU the pools' encapsulation leaves room for: wait
    // for overlay's first pass (it publishes the overhead) and the dataplane
    // pass that follows it.
    s.health
        .set_ready(false, "waiting for the overlay's first pass");
    let mut overlay_status = s.overlay_status.clone();
    let overhead = overlay_status
        .wait_for(|st| st.passes > 0)
        .await
        .map(|st| st.overhead)
        .unwrap_or(0);
    let _ = s.dataplane.set_encap_overhead(overhead).await;
    s.health
        .set_ready(false, "programming policy from the synced caches");
    while let Err(e) = s.policy.start().await {
        s.health.set_ready(false, &format!("policy: {e}"));
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    s.health.set_ready(true, "ready");
    tracing::info!(mtu = s.dataplane.status().mtu, "agent ready");
    if let Some(logs) = s.logs.filter(|_| !s.settings.log_level_pinned) {
        tokio::spawn(follow_log_level(
            s.datastore.clone(),
            s.settings.node_name.clone(),
            logs,
        ));
    }
    if let Some(path) = &s.settings.cni_conflist {
        match install_conflist(path, &s.settings.cni_socket) {
            Ok(true) => tracing::info!(path = %path.display(), "installed the CNI conflist"),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "could not install the CNI conflist")
            }
        }
    }
    // The reflectors live as long as the datastore: as long as the agent.
    std::future::pending::<()>().await;
}

/// Runs the agent until `shutdown` completes.
pub async fn run(
    settings: &Settings,
    client: Client,
    logs: crate::logging::LogControl,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let agent = start(settings, client, Some(logs)).await?;
    shutdown.await;
    tracing::info!("shutting down; routes and pods stay as they are");
    if let Some(r) = &agent.routing {
        // Peers keep our routes (graceful restart) while we are away.
        r.shutdown().await;
    }
    agent.stop();
    Ok(())
}

/// Applies `AgentConfiguration.logLevel` changes as they arrive.
async fn follow_log_level(datastore: Datastore, node: String, logs: crate::logging::LogControl) {
    let mut changes = datastore.changes();
    let mut current = datastore.agent_config(&node).log_level;
    while changes.changed().await.is_ok() {
        let level = datastore.agent_config(&node).log_level;
        if level != current {
            current = level;
            logs.set_level(level);
        }
    }
}

async fn serve_http(
    what: &'static str,
    addr: std::net::SocketAddr,
    route: Arc<dyn Fn(&str) -> crate::http::Answer + Send + Sync>,
) -> Result<JoinHandle<()>, AgentError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Listen {
            what,
            addr: addr.to_string(),
            source,
        })?;
    tracing::info!(%addr, "serving {what}");
    Ok(tokio::spawn(crate::http::serve(listener, route)))
}

/// Endpoints IPAM says this node holds, whose host interface exists, but of
/// which the agent has no record (its state directory was lost): recorded
/// again as ready, so the sweep that follows keeps their routes. `false`
/// when IPAM or the kernel could not be read.
async fn recover_lost_endpoints(
    node: &str,
    allocator: &Allocator<KubeStore>,
    dp: &DataplaneHandle,
    endpoints: &SharedEndpoints,
    records: &EndpointStore,
) -> bool {
    let blocks: Vec<IPAMBlock> = match allocator.store().list(None).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "could not list IPAM blocks to recover endpoints");
            return false;
        }
    };
    let known: BTreeSet<EndpointKey> = endpoints
        .lock()
        .map(|t| t.iter().map(Endpoint::key).collect())
        .unwrap_or_default();
    let Some(links) = dp.link_names().await else {
        tracing::warn!("could not read the links to recover endpoints");
        return false;
    };
    let links: BTreeSet<String> = links.into_iter().collect();
    let mut found: BTreeMap<EndpointKey, Endpoint> = BTreeMap::new();
    for b in &blocks {
        let Ok(cidr) = margay_api::net::Cidr::parse_strict(&b.spec.cidr) else {
            continue;
        };
        for a in &b.spec.allocations {
            if a.node.as_deref().or(b.spec.affine_node()) != Some(node) {
                continue;
            }
            let (Some(key), Some(ns), Some(pod)) =
                (EndpointKey::parse(&a.handle), &a.namespace, &a.pod)
            else {
                continue;
            };
            if known.contains(&key) {
                continue;
            }
            let iface = host_interface_name(ns, pod);
            let Some(ip): Option<IpAddr> = cidr.nth(u128::from(a.ordinal)) else {
                continue;
            };
            if !links.contains(&iface) {
                continue;
            }
            found
                .entry(key.clone())
                .or_insert_with(|| Endpoint {
                    attachment: key.attachment(),
                    pod: PodRef {
                        namespace: ns.clone(),
                        name: pod.clone(),
                        uid: None,
                    },
                    host_interface: iface,
                    addresses: Vec::new(),
                    mac: None,
                    netns: String::new(),
                    state: EndpointState::Ready,
                })
                .addresses
                .push(ip);
        }
    }
    for (key, e) in found {
        tracing::warn!(endpoint = key.as_str(), addresses = ?e.addresses, "recovered an endpoint with no record from IPAM and the kernel");
        if let Err(err) = records.save(&e) {
            tracing::warn!(endpoint = key.as_str(), error = %err, "could not write the recovered record");
        }
        if let Ok(mut t) = endpoints.lock() {
            t.upsert(e);
        }
    }
    true
}
