//! The nftables policy dataplane: NetworkPolicy and GlobalNetworkPolicy in
//! the `inet margay` table (layout: `margay_policy::nft::render`).
//!
//! One worker thread owns the policy state ([`PolicyCalc`]: inputs and the
//! compiler) and the table ([`NftDataplane`]: libnftables and raw netlink,
//! blocking calls, hence a thread and not a task). It takes messages from
//! the watches (`datastore::policy`), the endpoint service and start-up,
//! and runs *passes*: everything that arrived since the last pass is
//! compiled, the deltas merged, and applied in one kernel transaction.
//!
//! - Nothing is programmed before [`PolicyHandle::start`]: start-up calls
//!   it once every cache has synced and lost endpoints are recovered. The
//!   first pass is a reconcile: the table a previous run left is read back
//!   and only what differs is fixed (a restart never flushes working
//!   policy); a missing table is loaded whole.
//! - A CNI `Ready` asks [`PolicyHandle::program`]: the answer comes once the
//!   new endpoint's chains are in the kernel. Until then its interface is
//!   unknown to the table, which drops its traffic (fail closed).
//! - Every `refresh_interval` a reconcile repairs drift; a pass that fails
//!   is retried (as a reconcile) a second later.
//! - After a pass changed anything, tracked flows of local endpoints that
//!   the new policy would not allow as new connections are deleted
//!   (`calc::policy::flows_to_delete`), so established connections stop
//!   where a change denies them. The sweep follows the kernel commit (never
//!   delays it) and runs at most every [`SWEEP_MIN_INTERVAL`]: listing
//!   conntrack walks the kernel's whole hash table (shared by all network
//!   namespaces), which `perf` showed as most of the agent's CPU when it
//!   swept after every change of the `policy-latency` benchmark, and one
//!   sweep after a burst of changes judges every flow against the latest IR
//!   anyway.
//! - Every [`COUNTER_INTERVAL`] the per-endpoint drop counters are read.

pub mod metrics;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, PostParams};
use margay_policy::PolicyRef;
use margay_policy::nft::{DataplaneStats, Nft, NftDataplane, NftError, Renderer};
use tokio::sync::oneshot;

use crate::calc::endpoints::EndpointState;
use crate::calc::policy::{
    AppliedNames, LocalEndpointInfo, PolicyCalc, PolicyInput, flows_to_delete,
};
use crate::dataplane::SharedEndpoints;
use crate::dataplane::conntrack::Conntrack;
use crate::metrics::Metrics;
use metrics::{EndpointDirection, PathLabel, PolicyLabel, PolicyMetrics};

/// How often the drop counters are read back.
pub const COUNTER_INTERVAL: Duration = Duration::from_secs(5);
/// How soon a failed pass is retried.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// The least time between two conntrack sweeps; changes within it share
/// the next sweep (so a denied connection is cut at most this long after
/// its change is enforced).
pub const SWEEP_MIN_INTERVAL: Duration = Duration::from_millis(250);

/// Settings of the policy dataplane.
#[derive(Clone)]
pub struct PolicyConfig {
    pub node: String,
    /// Full read-back and repair this often (`None`: only on change).
    pub refresh_interval: Option<Duration>,
    /// Where to post a Warning Event when a policy is refused (`None`: log
    /// and metric only).
    pub events: Option<kube::Client>,
}

enum Msg {
    Input(PolicyInput, Instant),
    EndpointsChanged(Instant),
    Program {
        interface: String,
        pod: Option<Arc<Pod>>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Start(oneshot::Sender<Result<(), String>>),
}

/// Handle to the policy worker. Cheap to clone.
#[derive(Clone)]
pub struct PolicyHandle {
    tx: mpsc::Sender<Msg>,
}

impl PolicyHandle {
    /// A watch event; `false` when the worker is gone.
    pub fn input(&self, input: PolicyInput) -> bool {
        self.tx.send(Msg::Input(input, Instant::now())).is_ok()
    }

    /// The endpoint table changed (an endpoint became ready or was
    /// removed): the worker reads it again in its next pass.
    pub fn endpoints_changed(&self) {
        let _ = self.tx.send(Msg::EndpointsChanged(Instant::now()));
    }

    /// Programs the ready endpoint on `interface` and answers once its
    /// policy is in the kernel (an error when the kernel refused it). `pod`,
    /// when the caller has it, stands in for a watch event that may trail.
    /// The caller bounds the wait.
    pub async fn program(&self, interface: &str, pod: Option<Arc<Pod>>) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Program {
                interface: interface.to_string(),
                pod,
                reply,
            })
            .map_err(|_| "the policy worker has stopped".to_string())?;
        rx.await
            .unwrap_or_else(|_| Err("the policy worker has stopped".into()))
    }

    /// Starts programming (once every policy watch has listed): reconciles
    /// the table with the compiled policy. Answers when that is done.
    pub async fn start(&self) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Start(reply))
            .map_err(|_| "the policy worker has stopped".to_string())?;
        rx.await
            .unwrap_or_else(|_| Err("the policy worker has stopped".into()))
    }
}

/// Opens libnftables (in the calling thread's network namespace) and starts
/// the worker thread.
pub fn spawn(
    endpoints: SharedEndpoints,
    config: PolicyConfig,
    metrics: Metrics,
) -> Result<PolicyHandle, NftError> {
    let nft = Nft::open()?;
    let (tx, rx) = mpsc::channel();
    let runtime = tokio::runtime::Handle::try_current().ok();
    let worker = Worker {
        calc: PolicyCalc::new(),
        dp: NftDataplane::new(nft, Renderer::default()),
        applied: AppliedNames::default(),
        endpoints,
        metrics: metrics.policy.clone(),
        config,
        runtime,
        started: false,
        start_waiters: Vec::new(),
        program_waiters: Vec::new(),
        needs_reconcile: false,
        endpoints_dirty: None,
        last_stats: DataplaneStats::default(),
        conntrack: None,
        sweep_pending: false,
        last_sweep: None,
        reported_refused: BTreeMap::new(),
        drops_seen: BTreeMap::new(),
        next_refresh: None,
        next_counters: Instant::now() + COUNTER_INTERVAL,
        retry_at: None,
    };
    std::thread::Builder::new()
        .name("margay-policy".into())
        .spawn(move || worker.run(rx))
        .map_err(|_| NftError::Worker)?;
    Ok(PolicyHandle { tx })
}

struct Worker {
    calc: PolicyCalc,
    dp: NftDataplane,
    /// What the kernel holds by name after the last pass.
    applied: AppliedNames,
    endpoints: SharedEndpoints,
    metrics: PolicyMetrics,
    config: PolicyConfig,
    runtime: Option<tokio::runtime::Handle>,
    started: bool,
    start_waiters: Vec<oneshot::Sender<Result<(), String>>>,
    program_waiters: Vec<(String, oneshot::Sender<Result<(), String>>)>,
    /// The kernel's state is uncertain (a failed pass): next pass reconciles.
    needs_reconcile: bool,
    /// The endpoint table changed; when first noticed.
    endpoints_dirty: Option<Instant>,
    last_stats: DataplaneStats,
    conntrack: Option<Conntrack>,
    /// A change was committed that no sweep has judged flows against yet.
    sweep_pending: bool,
    last_sweep: Option<Instant>,
    reported_refused: BTreeMap<PolicyRef, String>,
    drops_seen: BTreeMap<EndpointDirection, (u64, u64)>,
    next_refresh: Option<Instant>,
    next_counters: Instant,
    retry_at: Option<Instant>,
}

/// What one pass did.
struct PassOutcome {
    /// Something in the kernel changed.
    changed: bool,
    error: Option<String>,
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        loop {
            let now = Instant::now();
            let next = [
                self.next_refresh,
                self.started.then_some(self.next_counters),
                self.retry_at,
                self.sweep_at(),
            ]
            .into_iter()
            .flatten()
            .min();
            let first = match next {
                Some(t) => rx.recv_timeout(t.saturating_duration_since(now)),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match first {
                Ok(m) => self.take(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            // Everything already queued joins this pass.
            while let Ok(m) = rx.try_recv() {
                self.take(m);
            }
            self.report_refused();
            if !self.started {
                self.try_start();
                continue;
            }
            let now = Instant::now();
            let refresh_due = self.next_refresh.is_some_and(|t| t <= now);
            let retry_due = self.retry_at.is_some_and(|t| t <= now);
            if refresh_due || retry_due || self.calc.pending() || self.endpoints_dirty.is_some() {
                let outcome = self.pass(refresh_due);
                self.answer_programs(&outcome);
                if outcome.changed {
                    self.sweep_pending = true;
                }
            }
            if self.sweep_at().is_some_and(|t| t <= Instant::now()) {
                self.sweep_conntrack();
            }
            if self.next_counters <= Instant::now() {
                self.read_counters();
                self.next_counters = Instant::now() + COUNTER_INTERVAL;
            }
        }
    }

    fn take(&mut self, m: Msg) {
        match m {
            Msg::Input(i, seen) => self.calc.input(i, seen),
            Msg::EndpointsChanged(t) => {
                self.endpoints_dirty.get_or_insert(t);
            }
            Msg::Program {
                interface,
                pod,
                reply,
            } => {
                if let Some(p) = pod {
                    self.calc.seed_pod(&p);
                }
                self.endpoints_dirty.get_or_insert_with(Instant::now);
                self.program_waiters.push((interface, reply));
            }
            Msg::Start(reply) => self.start_waiters.push(reply),
        }
    }

    fn local_endpoints(&self) -> Vec<LocalEndpointInfo> {
        let Ok(t) = self.endpoints.lock() else {
            return Vec::new();
        };
        t.iter()
            .filter(|e| e.state == EndpointState::Ready)
            .map(|e| LocalEndpointInfo {
                pod: margay_policy::PodKey::new(&e.pod.namespace, &e.pod.name),
                interface: e.host_interface.clone(),
                addresses: e.addresses.clone(),
            })
            .collect()
    }

    fn sync_endpoints(&mut self) {
        let seen = self.endpoints_dirty.take();
        let eps = self.local_endpoints();
        self.calc.set_local_endpoints(eps, seen);
    }

    /// The first pass, once asked and once every watch has listed.
    fn try_start(&mut self) {
        if self.start_waiters.is_empty() || !self.calc.synced() {
            return;
        }
        self.needs_reconcile = true;
        let outcome = self.pass(false);
        let result = match outcome.error {
            None => {
                self.started = true;
                self.next_refresh = self.config.refresh_interval.map(|d| Instant::now() + d);
                self.metrics.in_sync.set(1);
                tracing::info!(
                    endpoints = self.calc.ir().endpoints.len(),
                    chains = self.calc.ir().chains.len(),
                    sets = self.calc.ir().sets.len(),
                    "policy programmed from synced caches"
                );
                Ok(())
            }
            Some(e) => Err(e),
        };
        for w in self.start_waiters.drain(..) {
            let _ = w.send(result.clone());
        }
        self.retry_at = None;
        if self.started {
            self.sweep_conntrack();
        }
    }

    /// Brings the kernel to the current IR: the batched delta, or a
    /// reconcile when asked, when the last pass failed, or when the batch
    /// cannot be expressed exactly as a delta.
    fn pass(&mut self, refresh: bool) -> PassOutcome {
        self.sync_endpoints();
        let start = Instant::now();
        let (result, op, seen) = if refresh || self.needs_reconcile {
            let seen = self.calc.take_for_reconcile();
            (self.reconcile(refresh), "reconcile", seen)
        } else {
            let pass = self.calc.take_pass(&self.applied);
            match pass.delta {
                Some(d) if d.is_empty() => {
                    return PassOutcome {
                        changed: false,
                        error: None,
                    };
                }
                Some(d) => {
                    let r = self.dp.apply_delta(self.calc.ir(), &d);
                    if r.is_ok() {
                        self.applied.apply(&d);
                    }
                    (r.map(|()| true), "delta", pass.seen)
                }
                None => (self.reconcile(false), "reconcile", pass.seen),
            }
        };
        let elapsed = start.elapsed();
        self.metrics
            .transaction_duration
            .get_or_create(&PolicyMetrics::op(op))
            .observe(elapsed.as_secs_f64());
        self.count_stats();
        if refresh {
            self.next_refresh = self.config.refresh_interval.map(|d| Instant::now() + d);
        }
        match result {
            Ok(changed) => {
                self.needs_reconcile = false;
                self.retry_at = None;
                let done = Instant::now();
                for (kind, t) in seen {
                    self.metrics
                        .programming_latency
                        .get_or_create(&PolicyMetrics::trigger(kind))
                        .observe(done.saturating_duration_since(t).as_secs_f64());
                }
                self.update_gauges();
                PassOutcome {
                    changed,
                    error: None,
                }
            }
            Err(e) => {
                self.metrics.errors.inc();
                tracing::warn!(error = %e, op, "policy pass failed; retrying with a reconcile");
                self.needs_reconcile = true;
                self.retry_at = Some(Instant::now() + RETRY_INTERVAL);
                PassOutcome {
                    changed: true,
                    error: Some(e.to_string()),
                }
            }
        }
    }

    /// Reads the table back and fixes what differs; whether anything did.
    fn reconcile(&mut self, periodic: bool) -> Result<bool, NftError> {
        let report = self.dp.reconcile(self.calc.ir())?;
        self.applied = AppliedNames::of(self.calc.ir());
        let changed = report.changed_anything();
        if changed && periodic {
            self.metrics.repairs.inc();
            tracing::warn!(?report, "the policy table had drifted; repaired");
        } else if changed {
            tracing::info!(?report, "policy table reconciled");
        }
        Ok(changed)
    }

    fn count_stats(&mut self) {
        let s = self.dp.stats();
        let l = self.last_stats;
        for (path, n) in [
            ("netlink", s.netlink_batches - l.netlink_batches),
            ("libnftables", s.nft_batches - l.nft_batches),
        ] {
            if n > 0 {
                self.metrics
                    .transactions
                    .get_or_create(&PathLabel { path: path.into() })
                    .inc_by(n);
            }
        }
        self.metrics.fallbacks.inc_by(s.fallbacks - l.fallbacks);
        self.last_stats = s;
    }

    fn update_gauges(&self) {
        let ir = self.calc.ir();
        self.metrics.rules.set(ir.rule_count() as i64);
        self.metrics.sets.set(ir.sets.len() as i64);
        self.metrics.set_elements.set(ir.element_count() as i64);
        self.metrics.endpoints.set(ir.endpoints.len() as i64);
    }

    /// Answers `Ready`s whose endpoint is now in the kernel (or the pass
    /// failed); others keep waiting for the pod to become known.
    fn answer_programs(&mut self, outcome: &PassOutcome) {
        let waiting = std::mem::take(&mut self.program_waiters);
        for (iface, reply) in waiting {
            if let Some(e) = &outcome.error {
                let _ = reply.send(Err(format!("programming policy: {e}")));
            } else if self.calc.endpoint_compiled(&iface) {
                let _ = reply.send(Ok(()));
            } else if !reply.is_closed() {
                self.program_waiters.push((iface, reply));
            }
        }
    }

    /// Logs, counts and (once per change) posts an Event for policies the
    /// compiler refused; clears what was fixed or deleted.
    fn report_refused(&mut self) {
        let now = self.calc.refused().clone();
        if now == self.reported_refused {
            return;
        }
        for (r, why) in &now {
            if self.reported_refused.get(r) == Some(why) {
                continue;
            }
            tracing::warn!(policy = %r, error = %why, "policy refused; its previous version (if any) stays in force");
            self.metrics
                .refused
                .get_or_create(&PolicyLabel {
                    policy: r.to_string(),
                })
                .set(1);
            self.post_event(r, why);
        }
        for r in self.reported_refused.keys() {
            if !now.contains_key(r) {
                tracing::info!(policy = %r, "policy no longer refused");
                self.metrics.refused.remove(&PolicyLabel {
                    policy: r.to_string(),
                });
            }
        }
        self.reported_refused = now;
    }

    fn post_event(&self, r: &PolicyRef, why: &str) {
        let (Some(client), Some(rt)) = (self.config.events.clone(), self.runtime.clone()) else {
            return;
        };
        let (namespace, kind, api_version, name) = match r {
            PolicyRef::Kubernetes { namespace, name } => (
                namespace.clone(),
                "NetworkPolicy",
                "networking.k8s.io/v1",
                name.clone(),
            ),
            PolicyRef::Global { name } => (
                "default".to_string(),
                "GlobalNetworkPolicy",
                "margay.dev/v1",
                name.clone(),
            ),
        };
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let node = &self.config.node;
        let event = serde_json::json!({
            "metadata": {"generateName": format!("{name}."), "namespace": namespace},
            "involvedObject": {"kind": kind, "apiVersion": api_version, "name": name,
                               "namespace": if kind == "NetworkPolicy" { Some(&namespace) } else { None }},
            "reason": "PolicyRefused",
            "message": format!("margay-agent on {node} refused this policy; its previous version (if any) stays in force: {why}"),
            "type": "Warning",
            "source": {"component": "margay-agent", "host": node},
            "reportingComponent": "margay.dev/agent",
            "reportingInstance": node,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        });
        let Ok(event) = serde_json::from_value::<Event>(event) else {
            return;
        };
        rt.spawn(async move {
            let api: Api<Event> = Api::namespaced(client, &namespace);
            let params = PostParams::default();
            let post = api.create(&params, &event);
            if !matches!(
                tokio::time::timeout(Duration::from_secs(5), post).await,
                Ok(Ok(_))
            ) {
                tracing::debug!(policy = %name, "could not post the PolicyRefused event");
            }
        });
    }

    /// Deletes tracked flows the current policy denies.
    /// When the pending sweep may run (None: none pending).
    fn sweep_at(&self) -> Option<Instant> {
        if !self.sweep_pending {
            return None;
        }
        Some(match self.last_sweep {
            Some(t) => t + SWEEP_MIN_INTERVAL,
            None => Instant::now(),
        })
    }

    fn sweep_conntrack(&mut self) {
        self.sweep_pending = false;
        self.last_sweep = Some(Instant::now());
        if self.calc.ir().endpoints.is_empty() {
            return;
        }
        if self.conntrack.is_none() {
            match Conntrack::open() {
                Ok(c) => self.conntrack = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open conntrack; established connections are not cut on policy changes");
                    return;
                }
            }
        }
        let Some(ct) = self.conntrack.as_mut() else {
            return;
        };
        let flows = match ct.flows() {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "listing conntrack flows failed");
                self.conntrack = None;
                return;
            }
        };
        let tuples: Vec<_> = flows.iter().map(|f| f.tuple.clone()).collect();
        let victims = flows_to_delete(self.calc.ir(), &tuples, &node_addresses());
        for i in victims {
            let f = &flows[i];
            match ct.delete(f) {
                Ok(true) => {
                    self.metrics.conntrack_deleted.inc();
                    tracing::info!(src = %f.tuple.orig_src, dst = %f.tuple.reply_src, proto = f.tuple.protocol, dport = ?f.tuple.reply_sport, "deleted a tracked connection the policy now denies");
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "deleting a conntrack flow failed"),
            }
        }
    }

    /// Reads the endpoints' drop counters into the metrics.
    fn read_counters(&mut self) {
        let drops = match self.dp.drop_counters() {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "reading drop counters failed");
                return;
            }
        };
        let mut seen = BTreeMap::new();
        for (iface, d) in drops {
            let Some(ep) = self.calc.ir().endpoints.get(&iface) else {
                continue;
            };
            for (direction, packets, bytes) in [
                ("ingress", d.ingress_packets, d.ingress_bytes),
                ("egress", d.egress_packets, d.egress_bytes),
            ] {
                let labels = EndpointDirection {
                    namespace: ep.pod.namespace.clone(),
                    pod: ep.pod.name.clone(),
                    interface: iface.clone(),
                    direction: direction.into(),
                };
                let (lp, lb) = self.drops_seen.get(&labels).copied().unwrap_or((0, 0));
                // A counter below what was seen was recreated: count afresh.
                let dp = if packets >= lp { packets - lp } else { packets };
                let db = if bytes >= lb { bytes - lb } else { bytes };
                self.metrics
                    .dropped_packets
                    .get_or_create(&labels)
                    .inc_by(dp);
                self.metrics.dropped_bytes.get_or_create(&labels).inc_by(db);
                seen.insert(labels, (packets, bytes));
            }
        }
        for gone in self.drops_seen.keys().filter(|k| !seen.contains_key(*k)) {
            self.metrics.dropped_packets.remove(gone);
            self.metrics.dropped_bytes.remove(gone);
        }
        self.drops_seen = seen;
    }
}

/// The addresses of this network namespace's interfaces (the node's own).
fn node_addresses() -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur points into the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr is non-null and its family says its layout.
            unsafe {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        // s_addr is in network order: its bytes are the octets.
                        out.insert(IpAddr::from(sa.sin_addr.s_addr.to_ne_bytes()));
                    }
                    libc::AF_INET6 => {
                        let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        out.insert(IpAddr::from(sa.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}
