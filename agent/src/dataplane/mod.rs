//! Effects on the kernel: host routes to local endpoints and their host-side
//! sysctls, kept equal to what [`calc`](crate::calc) wants.
//!
//! One task owns the netlink connection and runs reconcile passes: read
//! links and routes, plan with [`calc::routes::plan`], apply. A pass runs
//! when the endpoint service asks (a `Ready` or `Del`), when the kernel
//! reports a link or route change (so a route deleted by hand is back within
//! moments), and periodically (which also re-checks every sysctl). Routes are
//! recognised as ours by [`ROUTE_PROTOCOL`]; ours that nothing wants are
//! swept only after [`DataplaneHandle::enable_sweep`], which the agent calls
//! once its caches are in sync and its endpoints are known — so a restarted
//! agent never removes a live pod's route.

pub mod conntrack;
pub mod netlink;
pub mod policy;
pub mod sysctl;

use crate::calc::ROUTE_PROTOCOL;
use crate::calc::endpoints::EndpointTable;
use crate::calc::{mtu, routes, sysctls};
use crate::health::Health;
use crate::metrics::Metrics;
use futures::{FutureExt, StreamExt};
use netlink::{Netlink, NetlinkError, Notifications};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// The longest one reconcile pass may take before it is abandoned (and the
/// requests waiting on it told so).
const PASS_TIMEOUT: Duration = Duration::from_secs(30);

/// The endpoint table, shared by the endpoint service (writer) and the
/// dataplane (reader).
pub type SharedEndpoints = Arc<Mutex<EndpointTable>>;

/// Settings of the dataplane task.
#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    /// Full re-check of routes and sysctls this often (`None`: only on change).
    pub resync_interval: Option<Duration>,
    /// Pod MTU if configured; detected from the uplink otherwise.
    pub mtu: Option<u32>,
}

/// What one pass achieved, for the requests waiting on it.
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    /// Wanted interfaces that do not exist.
    pub missing_interfaces: BTreeSet<String>,
    /// Routes that could not be programmed, with why.
    pub failed_routes: BTreeMap<IpAddr, String>,
    /// Interfaces whose sysctls could not be set, with why.
    pub failed_interfaces: BTreeMap<String, String>,
    /// The pass could not read the kernel at all.
    pub error: Option<String>,
}

impl ApplyReport {
    /// Why the endpoint on `interface` with `addresses` is not programmed, if it is not.
    pub fn problem_with(&self, interface: &str, addresses: &[IpAddr]) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(e.clone());
        }
        if self.missing_interfaces.contains(interface) {
            return Some(format!("host interface {interface} does not exist"));
        }
        if let Some(e) = self.failed_interfaces.get(interface) {
            return Some(format!("sysctls of {interface}: {e}"));
        }
        addresses
            .iter()
            .find_map(|ip| self.failed_routes.get(ip))
            .map(|e| format!("route: {e}"))
    }
}

/// What the rest of the agent sees of the dataplane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataplaneStatus {
    pub mtu: u32,
    pub passes: u64,
    pub sweeping: bool,
}

enum Request {
    Apply {
        full: bool,
        reply: oneshot::Sender<ApplyReport>,
    },
    EnableSweep(oneshot::Sender<ApplyReport>),
    Links(oneshot::Sender<Vec<String>>),
    EncapOverhead(u32, oneshot::Sender<ApplyReport>),
}

/// Handle to the dataplane task.
#[derive(Clone)]
pub struct DataplaneHandle {
    tx: mpsc::UnboundedSender<Request>,
    status: watch::Receiver<DataplaneStatus>,
}

impl DataplaneHandle {
    /// Runs a pass (or joins one about to run) and reports its outcome.
    pub async fn apply(&self) -> ApplyReport {
        self.request(|reply| Request::Apply { full: false, reply })
            .await
    }

    /// A pass that also re-checks every sysctl (what the periodic resync does).
    pub async fn resync(&self) -> ApplyReport {
        self.request(|reply| Request::Apply { full: true, reply })
            .await
    }

    /// Allows sweeping our unwanted routes from now on, and runs a full pass.
    pub async fn enable_sweep(&self) -> ApplyReport {
        self.request(Request::EnableSweep).await
    }

    /// Sets the encapsulation overhead the pod MTU leaves room for (from
    /// overlay) and runs a pass, so the MTU the next pod gets reflects it.
    pub async fn set_encap_overhead(&self, overhead: u32) -> ApplyReport {
        self.request(|reply| Request::EncapOverhead(overhead, reply))
            .await
    }

    /// Names of the links in the dataplane's namespace; `None` if they could
    /// not be read.
    pub async fn link_names(&self) -> Option<Vec<String>> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Request::Links(tx)).ok()?;
        rx.await.ok()
    }

    pub fn status(&self) -> DataplaneStatus {
        *self.status.borrow()
    }

    async fn request(
        &self,
        make: impl FnOnce(oneshot::Sender<ApplyReport>) -> Request,
    ) -> ApplyReport {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(make(tx)).is_err() {
            return stopped();
        }
        rx.await.unwrap_or_else(|_| stopped())
    }
}

fn stopped() -> ApplyReport {
    ApplyReport {
        error: Some("the dataplane task has stopped".into()),
        ..ApplyReport::default()
    }
}

/// Opens the netlink connection (in the calling thread's network namespace)
/// and spawns the dataplane task on the current runtime.
pub fn spawn(
    endpoints: SharedEndpoints,
    config: DataplaneConfig,
    metrics: Metrics,
    health: Health,
) -> Result<DataplaneHandle, NetlinkError> {
    let (netlink, notifications) = Netlink::connect()?;
    let (tx, rx) = mpsc::unbounded_channel();
    let (status_tx, status) = watch::channel(DataplaneStatus {
        mtu: config.mtu.unwrap_or(mtu::FALLBACK_MTU),
        passes: 0,
        sweeping: false,
    });
    let dp = Dataplane {
        netlink,
        endpoints,
        config,
        metrics,
        health,
        status: status_tx,
        sweep: false,
        programmed: BTreeMap::new(),
        configured: BTreeMap::new(),
        passes: 0,
        encap_overhead: 0,
    };
    tokio::spawn(dp.run(rx, notifications));
    Ok(DataplaneHandle { tx, status })
}

struct Dataplane {
    netlink: Netlink,
    endpoints: SharedEndpoints,
    config: DataplaneConfig,
    metrics: Metrics,
    health: Health,
    status: watch::Sender<DataplaneStatus>,
    sweep: bool,
    /// Routes this task has seen right (to tell repairs from first programming).
    programmed: BTreeMap<IpAddr, u32>,
    /// Interfaces whose sysctls were set, with the ifindex they had then (a
    /// recreated interface gets a new index and is configured again).
    configured: BTreeMap<String, u32>,
    passes: u64,
    /// Bytes pods must leave for encapsulation (set by overlay).
    encap_overhead: u32,
}

impl Dataplane {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Request>, mut notes: Notifications) {
        let resync = self.config.resync_interval;
        let mut resync_tick = tokio::time::interval(resync.unwrap_or(Duration::from_secs(3600)));
        resync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync_tick.tick().await;
        let mut heartbeat = tokio::time::interval(Duration::from_secs(10));
        self.health.heartbeat();
        loop {
            let mut replies = Vec::new();
            let mut link_replies = Vec::new();
            let mut full = false;
            let trigger;
            tokio::select! {
                req = rx.recv() => {
                    let Some(req) = req else { return };
                    self.take(req, &mut replies, &mut link_replies, &mut full);
                    // Coalesce everything already queued into this one pass.
                    while let Ok(req) = rx.try_recv() {
                        self.take(req, &mut replies, &mut link_replies, &mut full);
                    }
                    if replies.is_empty() {
                        // Only questions about links: no pass needed.
                        self.answer_links(link_replies).await;
                        continue;
                    }
                    trigger = "request";
                }
                note = notes.next() => {
                    if note.is_none() {
                        tracing::error!("netlink notifications stopped; relying on periodic resync");
                        notes = futures::stream::pending().boxed();
                        continue;
                    }
                    // Drain the burst (a veth pair coming up is several messages).
                    while let Some(Some(())) = notes.next().now_or_never() {}
                    trigger = "kernel";
                }
                _ = resync_tick.tick(), if resync.is_some() => {
                    full = true;
                    trigger = "resync";
                }
                _ = heartbeat.tick() => {
                    self.health.heartbeat();
                    continue;
                }
            }
            self.health.heartbeat();
            let report = self.pass(full, trigger).await;
            for r in replies {
                let _ = r.send(report.clone());
            }
            self.answer_links(link_replies).await;
        }
    }

    async fn answer_links(&self, replies: Vec<oneshot::Sender<Vec<String>>>) {
        if replies.is_empty() {
            return;
        }
        // Callers decide what to keep from this list (endpoint recovery), so
        // a failed read must not look like "no links": they get nothing and
        // the channel closes, which `link_names` reports as an error.
        if let Ok(links) = self.netlink.links().await {
            let names: Vec<String> = links.into_iter().map(|l| l.name).collect();
            for r in replies {
                let _ = r.send(names.clone());
            }
        }
    }

    fn take(
        &mut self,
        req: Request,
        replies: &mut Vec<oneshot::Sender<ApplyReport>>,
        link_replies: &mut Vec<oneshot::Sender<Vec<String>>>,
        full: &mut bool,
    ) {
        match req {
            Request::Apply { full: f, reply } => {
                *full |= f;
                replies.push(reply);
            }
            Request::EnableSweep(reply) => {
                self.sweep = true;
                *full = true;
                replies.push(reply);
            }
            Request::Links(reply) => link_replies.push(reply),
            Request::EncapOverhead(o, reply) => {
                self.encap_overhead = o;
                replies.push(reply);
            }
        }
    }

    async fn pass(&mut self, full: bool, trigger: &str) -> ApplyReport {
        let start = Instant::now();
        // A kernel that stops answering must not wedge every CNI request.
        let outcome = tokio::time::timeout(PASS_TIMEOUT, self.reconcile(full)).await;
        let report = match outcome.unwrap_or(Err(NetlinkError::Timeout(PASS_TIMEOUT))) {
            Ok(r) => r,
            Err(e) => {
                self.metrics.route_table_errors.inc();
                tracing::warn!(error = %e, "dataplane pass failed");
                ApplyReport {
                    error: Some(e.to_string()),
                    ..ApplyReport::default()
                }
            }
        };
        self.passes += 1;
        self.metrics
            .dataplane_apply_duration
            .get_or_create(&Metrics::op(trigger))
            .observe(start.elapsed().as_secs_f64());
        report
    }

    async fn reconcile(&mut self, full: bool) -> Result<ApplyReport, NetlinkError> {
        let table = self.endpoints.lock().map(|t| t.clone()).unwrap_or_default();
        let wanted = table.wanted_routes();
        let links = self.netlink.links().await?;
        let kernel = self.netlink.main_routes().await?;
        let by_name: BTreeMap<String, u32> =
            links.iter().map(|l| (l.name.clone(), l.index)).collect();
        let plan = routes::plan(&wanted, &kernel, &by_name, ROUTE_PROTOCOL, self.sweep);
        let mut report = ApplyReport {
            missing_interfaces: plan
                .missing_interface
                .iter()
                .map(|(_, i)| i.clone())
                .collect(),
            ..ApplyReport::default()
        };
        for (ip, index) in &plan.replace {
            if self.programmed.get(ip) == Some(index) {
                self.metrics.route_table_repairs.inc();
                tracing::info!(%ip, ifindex = index, "repairing a missing or altered route");
            }
            match self
                .netlink
                .replace_host_route(*ip, *index, ROUTE_PROTOCOL)
                .await
            {
                Ok(()) => {
                    self.metrics
                        .route_table_changes
                        .get_or_create(&Metrics::op("replace"))
                        .inc();
                }
                Err(e) => {
                    self.metrics.route_table_errors.inc();
                    tracing::warn!(%ip, error = %e, "could not program route");
                    report.failed_routes.insert(*ip, e.to_string());
                }
            }
        }
        for r in &plan.delete {
            match self.netlink.delete_route(r).await {
                Ok(()) => {
                    tracing::info!(dst = %r.dst, prefix = r.prefix_len, ifindex = r.oif, "removed a route nothing wants");
                    self.metrics
                        .route_table_changes
                        .get_or_create(&Metrics::op("delete"))
                        .inc();
                }
                Err(e) => {
                    self.metrics.route_table_errors.inc();
                    tracing::warn!(dst = %r.dst, error = %e, "could not delete route");
                }
            }
        }
        self.programmed = wanted
            .iter()
            .filter(|(ip, _)| !report.failed_routes.contains_key(ip))
            .filter_map(|(ip, ifname)| by_name.get(ifname).map(|i| (*ip, *i)))
            .collect();
        self.metrics
            .route_table_routes
            .set(self.programmed.len() as i64);
        self.metrics
            .active_local_endpoints
            .set(table.ready_count() as i64);

        let interfaces = table.ready_interfaces();
        for (ifname, families) in &interfaces {
            let Some(&index) = by_name.get(ifname) else {
                continue;
            };
            if !full && self.configured.get(ifname) == Some(&index) {
                continue;
            }
            match sysctl::ensure(ifname, &sysctls::for_interface(ifname, *families)) {
                Ok(n) => {
                    if n > 0 {
                        self.metrics.sysctl_writes.inc_by(n as u64);
                        if self.configured.get(ifname) == Some(&index) {
                            tracing::info!(interface = %ifname, written = n, "repaired host-side sysctls");
                        }
                    }
                    self.configured.insert(ifname.clone(), index);
                }
                Err(e) => {
                    tracing::warn!(interface = %ifname, error = %e, "could not set sysctls");
                    report
                        .failed_interfaces
                        .insert(ifname.clone(), e.to_string());
                }
            }
        }
        self.configured.retain(|name, index| {
            interfaces.contains_key(name) && by_name.get(name) == Some(index)
        });

        let oifs = self.netlink.default_route_oifs().await?;
        let mtu = mtu::pod_mtu_with_overhead(self.config.mtu, &links, &oifs, self.encap_overhead);
        self.status.send_replace(DataplaneStatus {
            mtu,
            passes: self.passes + 1,
            sweeping: self.sweep,
        });
        Ok(report)
    }
}
