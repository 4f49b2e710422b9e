//! Policy inputs → [`margay_policy::Compiler`] → one delta per apply pass.
//!
//! [`PolicyCalc`] takes watch events (pods cluster-wide, namespaces,
//! NetworkPolicies, GlobalNetworkPolicies) and the local endpoint table, and
//! feeds the compiler. Each change yields an exact [`Delta`]; the deltas of
//! everything that arrived since the last pass are merged by [`DeltaBatch`]
//! into one, applied in one kernel transaction. Nothing here touches the
//! kernel: the policy dataplane (`dataplane::policy`) runs the passes.
//!
//! Rules that keep a pod from ever running unprotected or wrongly open:
//! - a local endpoint's addresses are the ones the agent allocated (the
//!   pod's `status.podIPs` is written only after CNI ADD returns);
//! - a policy the compiler refuses keeps its previous version in force
//!   ([`PolicyCalc::refused`] says which, and why);
//! - a re-list (after a watch failure) deletes what it no longer lists;
//! - pods that have finished (`Succeeded`, `Failed`) leave every set: their
//!   addresses may already belong to new pods.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use margay_api::GlobalNetworkPolicy;
use margay_policy::eval::{Packet, explain};
use margay_policy::ir::{ChainId, ElementChange, SetId};
use margay_policy::{Compiler, Delta, Ir, LocalEndpoint, Namespace, Pod, PodKey, PolicyRef};

/// One watch event, as kube's watcher reports it (a re-list is `InitStart`,
/// `InitApply`..., `InitDone`).
#[derive(Debug, Clone)]
pub enum Change<K> {
    Apply(K),
    Delete(K),
    InitStart,
    InitApply(K),
    InitDone,
}

impl<K> Change<K> {
    pub fn map<T>(self, f: impl FnOnce(K) -> T) -> Change<T> {
        match self {
            Change::Apply(o) => Change::Apply(f(o)),
            Change::Delete(o) => Change::Delete(f(o)),
            Change::InitStart => Change::InitStart,
            Change::InitApply(o) => Change::InitApply(f(o)),
            Change::InitDone => Change::InitDone,
        }
    }
}

/// The kinds policy watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pod,
    Namespace,
    NetworkPolicy,
    GlobalNetworkPolicy,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Pod,
        Kind::Namespace,
        Kind::NetworkPolicy,
        Kind::GlobalNetworkPolicy,
    ];

    /// As a metric label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Pod => "pod",
            Kind::Namespace => "namespace",
            Kind::NetworkPolicy => "networkpolicy",
            Kind::GlobalNetworkPolicy => "globalnetworkpolicy",
        }
    }
}

/// A watch event of any kind policy depends on (objects boxed: they are
/// large and differ in size).
#[derive(Debug, Clone)]
pub enum PolicyInput {
    Pod(Change<Box<core::Pod>>),
    Namespace(Change<Box<core::Namespace>>),
    NetworkPolicy(Change<Box<NetworkPolicy>>),
    GlobalNetworkPolicy(Change<Box<GlobalNetworkPolicy>>),
}

impl PolicyInput {
    pub fn pod(c: Change<core::Pod>) -> PolicyInput {
        PolicyInput::Pod(c.map(Box::new))
    }

    pub fn namespace(c: Change<core::Namespace>) -> PolicyInput {
        PolicyInput::Namespace(c.map(Box::new))
    }

    pub fn network_policy(c: Change<NetworkPolicy>) -> PolicyInput {
        PolicyInput::NetworkPolicy(c.map(Box::new))
    }

    pub fn global_network_policy(c: Change<GlobalNetworkPolicy>) -> PolicyInput {
        PolicyInput::GlobalNetworkPolicy(c.map(Box::new))
    }
}

impl PolicyInput {
    pub fn kind(&self) -> Kind {
        match self {
            PolicyInput::Pod(_) => Kind::Pod,
            PolicyInput::Namespace(_) => Kind::Namespace,
            PolicyInput::NetworkPolicy(_) => Kind::NetworkPolicy,
            PolicyInput::GlobalNetworkPolicy(_) => Kind::GlobalNetworkPolicy,
        }
    }
}

/// A ready local endpoint as policy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEndpointInfo {
    pub pod: PodKey,
    pub interface: String,
    pub addresses: Vec<IpAddr>,
}

// ---------------------------------------------------------------- batching

/// What a batch did to a set, relative to the kernel before the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetTouch {
    Added,
    Removed,
    /// Removed and added again within the batch: the kernel's elements are
    /// unknown here (the set kept them), so only a reconcile is exact.
    Recreated,
}

/// Deltas merged between two apply passes.
///
/// Each compiler delta is exact relative to the IR before it; a batch must
/// be exact relative to what the *kernel* holds, which is the IR at the last
/// applied pass. Element changes compose (add then remove cancels); sets,
/// chains and endpoints are remembered as "touched" and resolved at
/// [`DeltaBatch::finish`] from the final IR and what the kernel has.
#[derive(Debug, Clone, Default)]
pub struct DeltaBatch {
    sets: BTreeMap<SetId, SetTouch>,
    elements: BTreeMap<SetId, ElementChange>,
    chains: BTreeSet<ChainId>,
    endpoints: BTreeSet<String>,
}

/// What the kernel holds by name (after the last applied pass).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedNames {
    pub sets: BTreeSet<SetId>,
    pub chains: BTreeSet<ChainId>,
}

impl AppliedNames {
    pub fn of(ir: &Ir) -> AppliedNames {
        AppliedNames {
            sets: ir.sets.keys().cloned().collect(),
            chains: ir.chains.keys().cloned().collect(),
        }
    }

    /// After `d` (as returned by [`DeltaBatch::finish`]) reached the kernel.
    pub fn apply(&mut self, d: &Delta) {
        for s in &d.sets_removed {
            self.sets.remove(s);
        }
        self.sets.extend(d.sets_added.iter().cloned());
        for c in &d.chains_removed {
            self.chains.remove(c);
        }
        self.chains.extend(d.chains_upserted.iter().cloned());
    }
}

impl DeltaBatch {
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
            && self.elements.values().all(ElementChange::is_empty)
            && self.chains.is_empty()
            && self.endpoints.is_empty()
    }

    /// Adds the next delta (in the order the compiler produced them).
    pub fn push(&mut self, d: Delta) {
        for s in d.sets_removed {
            self.elements.remove(&s);
            let next = match self.sets.get(&s) {
                // Added and removed within the batch: the kernel never saw it
                // (or, if it had it, `finish` sees that from `applied`).
                Some(SetTouch::Added) => None,
                _ => Some(SetTouch::Removed),
            };
            match next {
                Some(t) => self.sets.insert(s, t),
                None => self.sets.remove(&s),
            };
        }
        for s in d.sets_added {
            self.elements.remove(&s);
            let next = match self.sets.get(&s) {
                Some(SetTouch::Removed | SetTouch::Recreated) => SetTouch::Recreated,
                _ => SetTouch::Added,
            };
            self.sets.insert(s, next);
        }
        for (s, ch) in d.elements {
            if self.sets.contains_key(&s) {
                // Added (rendered whole from the IR), removed, or recreated
                // (reconciled): element changes do not matter.
                continue;
            }
            let into = self.elements.entry(s).or_default();
            for e in ch.added {
                if !into.removed.remove(&e) {
                    into.added.insert(e);
                }
            }
            for e in ch.removed {
                if !into.added.remove(&e) {
                    into.removed.insert(e);
                }
            }
        }
        self.chains.extend(d.chains_upserted);
        self.chains.extend(d.chains_removed);
        self.endpoints.extend(d.endpoints_upserted);
        self.endpoints.extend(d.endpoints_removed);
    }

    /// The one delta taking the kernel (holding `applied`) to `ir`; `None`
    /// when only a reconcile can be exact (a set was deleted and created
    /// again within the batch, or the batch and `applied` disagree).
    pub fn finish(self, ir: &Ir, applied: &AppliedNames) -> Option<Delta> {
        let mut d = Delta::default();
        for (s, touch) in self.sets {
            let want = ir.sets.contains_key(&s);
            let have = applied.sets.contains(&s);
            match (want, have, touch) {
                (_, _, SetTouch::Recreated) if want && have => return None,
                (true, false, _) => {
                    d.sets_added.insert(s);
                }
                (false, true, _) => {
                    d.sets_removed.insert(s);
                }
                (false, false, _) => {}
                // In the IR and in the kernel but added by this batch: the
                // kernel's copy may hold elements the IR no longer has.
                (true, true, _) => return None,
            }
        }
        for (s, ch) in self.elements {
            if ch.is_empty() {
                continue;
            }
            if !ir.sets.contains_key(&s) || !applied.sets.contains(&s) {
                return None;
            }
            d.elements.insert(s, ch);
        }
        for c in self.chains {
            if ir.chains.contains_key(&c) {
                d.chains_upserted.insert(c);
            } else if applied.chains.contains(&c) {
                d.chains_removed.insert(c);
            }
        }
        for e in self.endpoints {
            if ir.endpoints.contains_key(&e) {
                d.endpoints_upserted.insert(e);
            } else {
                // The renderer deletes only endpoints the kernel has.
                d.endpoints_removed.insert(e);
            }
        }
        Some(d)
    }
}

// ---------------------------------------------------------------- inputs

/// A batch ready to apply.
#[derive(Debug)]
pub struct Pass {
    /// `None`: reconcile against the kernel instead (see [`DeltaBatch::finish`]).
    pub delta: Option<Delta>,
    /// When the changes in this pass were seen, by kind (for the programming
    /// latency metric); re-list events are not counted.
    pub seen: Vec<(&'static str, Instant)>,
}

/// The policy state of one node: inputs, the compiler, the batch since the
/// last pass.
#[derive(Debug, Default)]
pub struct PolicyCalc {
    compiler: Compiler,
    /// Pods as watched (before the local endpoint address override).
    watched: BTreeMap<PodKey, Pod>,
    namespaces: BTreeSet<String>,
    policies: BTreeSet<PolicyRef>,
    refused: BTreeMap<PolicyRef, String>,
    local: BTreeMap<PodKey, LocalEndpointInfo>,
    /// Keys listed so far by a re-list in progress, per kind.
    relisting: BTreeMap<Kind, BTreeSet<String>>,
    synced: BTreeSet<Kind>,
    batch: DeltaBatch,
    seen: Vec<(&'static str, Instant)>,
}

fn pod_key(p: &core::Pod) -> Option<PodKey> {
    Some(PodKey::new(
        p.metadata.namespace.clone()?,
        p.metadata.name.clone()?,
    ))
}

fn np_ref(np: &NetworkPolicy) -> Option<PolicyRef> {
    Some(PolicyRef::Kubernetes {
        namespace: np.metadata.namespace.clone()?,
        name: np.metadata.name.clone()?,
    })
}

fn gnp_ref(p: &GlobalNetworkPolicy) -> Option<PolicyRef> {
    Some(PolicyRef::Global {
        name: p.metadata.name.clone()?,
    })
}

/// A key of any kind as text (for re-list bookkeeping).
fn key_text(k: &PodKey) -> String {
    k.to_string()
}

fn ref_text(r: &PolicyRef) -> String {
    r.to_string()
}

impl PolicyCalc {
    pub fn new() -> PolicyCalc {
        PolicyCalc::default()
    }

    pub fn ir(&self) -> &Ir {
        self.compiler.ir()
    }

    pub fn compiler(&self) -> &Compiler {
        &self.compiler
    }

    /// Whether every kind has completed its first list.
    pub fn synced(&self) -> bool {
        Kind::ALL.iter().all(|k| self.synced.contains(k))
    }

    /// Policies the compiler refused (their previous version, if any, stays
    /// in force), with why.
    pub fn refused(&self) -> &BTreeMap<PolicyRef, String> {
        &self.refused
    }

    /// Whether the pod is known (watched or seeded).
    pub fn knows_pod(&self, key: &PodKey) -> bool {
        self.watched.contains_key(key)
    }

    fn push(&mut self, d: Delta, kind: &'static str, seen: Option<Instant>) {
        if d.is_empty() {
            return;
        }
        if let Some(t) = seen {
            self.seen.push((kind, t));
        }
        self.batch.push(d);
    }

    /// One watch event; `seen` is when it arrived.
    pub fn input(&mut self, input: PolicyInput, seen: Instant) {
        let kind = input.kind();
        match input {
            PolicyInput::Pod(c) => self.change(
                kind,
                c,
                seen,
                |s, o, t| s.pod_applied(o, t),
                |s, o, t| s.pod_deleted(o, t),
            ),
            PolicyInput::Namespace(c) => self.change(
                kind,
                c,
                seen,
                |s, o, t| s.ns_applied(o, t),
                |s, o, t| s.ns_deleted(o, t),
            ),
            PolicyInput::NetworkPolicy(c) => self.change(
                kind,
                c,
                seen,
                |s, o, t| s.np_applied(o, t),
                |s, o, t| s.policy_deleted_np(o, t),
            ),
            PolicyInput::GlobalNetworkPolicy(c) => self.change(
                kind,
                c,
                seen,
                |s, o, t| s.gnp_applied(o, t),
                |s, o, t| s.policy_deleted_gnp(o, t),
            ),
        }
    }

    fn change<K>(
        &mut self,
        kind: Kind,
        c: Change<Box<K>>,
        seen: Instant,
        applied: fn(&mut Self, &K, Option<Instant>) -> Option<String>,
        deleted: fn(&mut Self, &K, Option<Instant>),
    ) {
        match c {
            Change::Apply(o) => {
                applied(self, &o, Some(seen));
            }
            Change::Delete(o) => deleted(self, &o, Some(seen)),
            Change::InitStart => {
                self.relisting.insert(kind, BTreeSet::new());
            }
            Change::InitApply(o) => {
                if let Some(k) = applied(self, &o, None) {
                    self.relisting.entry(kind).or_default().insert(k);
                }
            }
            Change::InitDone => {
                let listed = self.relisting.remove(&kind).unwrap_or_default();
                self.forget_unlisted(kind, &listed);
                self.synced.insert(kind);
            }
        }
    }

    /// After a (re-)list: whatever it did not list is gone.
    fn forget_unlisted(&mut self, kind: Kind, listed: &BTreeSet<String>) {
        match kind {
            Kind::Pod => {
                let gone: Vec<PodKey> = self
                    .watched
                    .keys()
                    .filter(|k| !listed.contains(&key_text(k)))
                    .cloned()
                    .collect();
                for k in gone {
                    self.remove_pod(&k, None);
                }
            }
            Kind::Namespace => {
                let gone: Vec<String> = self
                    .namespaces
                    .iter()
                    .filter(|n| !listed.contains(*n))
                    .cloned()
                    .collect();
                for n in gone {
                    self.namespaces.remove(&n);
                    let d = self.compiler.remove_namespace(&n);
                    self.push(d, "namespace", None);
                }
            }
            Kind::NetworkPolicy | Kind::GlobalNetworkPolicy => {
                let global = kind == Kind::GlobalNetworkPolicy;
                let gone: Vec<PolicyRef> = self
                    .policies
                    .iter()
                    .filter(|r| matches!(r, PolicyRef::Global { .. }) == global)
                    .filter(|r| !listed.contains(&ref_text(r)))
                    .cloned()
                    .collect();
                for r in gone {
                    self.remove_policy(&r, None);
                }
            }
        }
    }

    // -------------------------------------------------------------- pods

    fn pod_applied(&mut self, p: &core::Pod, seen: Option<Instant>) -> Option<String> {
        let key = pod_key(p)?;
        let finished = p
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
        match Pod::from_k8s(p).filter(|_| !finished) {
            Some(pod) => {
                self.watched.insert(key.clone(), pod);
                self.refresh_pod(&key, seen);
            }
            // Host network or finished: not a pod-network pod (any more).
            None => self.remove_pod(&key, seen),
        }
        Some(key_text(&key))
    }

    fn pod_deleted(&mut self, p: &core::Pod, seen: Option<Instant>) {
        if let Some(k) = pod_key(p) {
            self.remove_pod(&k, seen);
        }
    }

    fn remove_pod(&mut self, key: &PodKey, seen: Option<Instant>) {
        if self.watched.remove(key).is_some() {
            let d = self.compiler.remove_pod(key);
            self.push(d, "pod", seen);
        }
    }

    /// Seeds a pod the watch has not delivered yet (a CNI `Ready` racing
    /// the watch): its object was read from the API by the caller.
    pub fn seed_pod(&mut self, p: &core::Pod) {
        if let Some(k) = pod_key(p)
            && !self.watched.contains_key(&k)
        {
            self.pod_applied(p, None);
        }
    }

    /// The pod as the compiler gets it: a local endpoint's addresses are
    /// the ones the agent allocated.
    fn refresh_pod(&mut self, key: &PodKey, seen: Option<Instant>) {
        let Some(mut pod) = self.watched.get(key).cloned() else {
            return;
        };
        if let Some(l) = self.local.get(key)
            && !l.addresses.is_empty()
        {
            pod.ips = l.addresses.clone();
            pod.ips.sort();
        }
        let d = self.compiler.upsert_pod(pod);
        self.push(d, "pod", seen);
    }

    // -------------------------------------------------------------- namespaces

    fn ns_applied(&mut self, n: &core::Namespace, seen: Option<Instant>) -> Option<String> {
        let ns = Namespace::from_k8s(n)?;
        let name = ns.name.clone();
        self.namespaces.insert(name.clone());
        let d = self.compiler.upsert_namespace(ns);
        self.push(d, "namespace", seen);
        Some(name)
    }

    fn ns_deleted(&mut self, n: &core::Namespace, seen: Option<Instant>) {
        if let Some(name) = &n.metadata.name
            && self.namespaces.remove(name)
        {
            let d = self.compiler.remove_namespace(name);
            self.push(d, "namespace", seen);
        }
    }

    // -------------------------------------------------------------- policies

    fn np_applied(&mut self, np: &NetworkPolicy, seen: Option<Instant>) -> Option<String> {
        let r = np_ref(np)?;
        let result = self.compiler.upsert_network_policy(np);
        self.policy_result(r, result, "networkpolicy", seen)
    }

    fn gnp_applied(&mut self, p: &GlobalNetworkPolicy, seen: Option<Instant>) -> Option<String> {
        let r = gnp_ref(p)?;
        let result = self.compiler.upsert_global_policy(p);
        self.policy_result(r, result, "globalnetworkpolicy", seen)
    }

    fn policy_result(
        &mut self,
        r: PolicyRef,
        result: Result<Delta, margay_api::ValidationError>,
        kind: &'static str,
        seen: Option<Instant>,
    ) -> Option<String> {
        self.policies.insert(r.clone());
        match result {
            Ok(d) => {
                self.refused.remove(&r);
                self.push(d, kind, seen);
            }
            Err(e) => {
                self.refused.insert(r.clone(), e.to_string());
            }
        }
        Some(ref_text(&r))
    }

    fn policy_deleted_np(&mut self, np: &NetworkPolicy, seen: Option<Instant>) {
        if let Some(r) = np_ref(np) {
            self.remove_policy(&r, seen);
        }
    }

    fn policy_deleted_gnp(&mut self, p: &GlobalNetworkPolicy, seen: Option<Instant>) {
        if let Some(r) = gnp_ref(p) {
            self.remove_policy(&r, seen);
        }
    }

    fn remove_policy(&mut self, r: &PolicyRef, seen: Option<Instant>) {
        self.policies.remove(r);
        self.refused.remove(r);
        let kind = match r {
            PolicyRef::Kubernetes { .. } => "networkpolicy",
            PolicyRef::Global { .. } => "globalnetworkpolicy",
        };
        let d = self.compiler.remove_policy(r);
        self.push(d, kind, seen);
    }

    // -------------------------------------------------------------- endpoints

    /// The ready local endpoints now (the whole table; differences from the
    /// last call are applied).
    pub fn set_local_endpoints(&mut self, now: Vec<LocalEndpointInfo>, seen: Option<Instant>) {
        let now: BTreeMap<PodKey, LocalEndpointInfo> =
            now.into_iter().map(|e| (e.pod.clone(), e)).collect();
        let gone: Vec<PodKey> = self
            .local
            .keys()
            .filter(|k| !now.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            self.local.remove(&k);
            let d = self.compiler.remove_local_endpoint(&k);
            self.push(d, "endpoint", seen);
            // Back to its watched addresses.
            self.refresh_pod(&k, seen);
        }
        for (k, e) in now {
            if self.local.get(&k) == Some(&e) {
                continue;
            }
            self.local.insert(k.clone(), e.clone());
            self.refresh_pod(&k, seen);
            let d = self.compiler.upsert_local_endpoint(LocalEndpoint {
                pod: k,
                interface: e.interface,
            });
            self.push(d, "endpoint", seen);
        }
    }

    /// Whether the endpoint on `interface` has its programs in the IR.
    pub fn endpoint_compiled(&self, interface: &str) -> bool {
        self.compiler.ir().endpoints.contains_key(interface)
    }

    /// Why a local endpoint has no programs yet (for error messages).
    pub fn endpoint_problem(&self, interface: &str) -> Option<String> {
        if self.endpoint_compiled(interface) {
            return None;
        }
        let Some(l) = self.local.values().find(|l| l.interface == interface) else {
            return Some(format!("no ready endpoint has host interface {interface}"));
        };
        if !self.watched.contains_key(&l.pod) {
            return Some(format!("pod {} is not known to policy yet", l.pod));
        }
        Some(format!("pod {} has no compiled policy", l.pod))
    }

    // -------------------------------------------------------------- passes

    /// Whether anything waits to be applied.
    pub fn pending(&self) -> bool {
        !self.batch.is_empty()
    }

    /// Takes the batch: the delta from the kernel's state (`applied`) to the
    /// current IR.
    pub fn take_pass(&mut self, applied: &AppliedNames) -> Pass {
        let batch = std::mem::take(&mut self.batch);
        Pass {
            delta: batch.finish(self.compiler.ir(), applied),
            seen: std::mem::take(&mut self.seen),
        }
    }

    /// Drops the batch (a reconcile is about to bring the kernel to the IR).
    pub fn take_for_reconcile(&mut self) -> Vec<(&'static str, Instant)> {
        self.batch = DeltaBatch::default();
        std::mem::take(&mut self.seen)
    }
}

// ---------------------------------------------------------------- conntrack

/// A tracked flow, as conntrack reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedFlow {
    pub protocol: u8,
    /// Original direction: who opened it.
    pub orig_src: IpAddr,
    pub orig_dst: IpAddr,
    pub orig_sport: Option<u16>,
    pub orig_dport: Option<u16>,
    /// Reply direction: after DNAT its source is the real destination.
    pub reply_src: IpAddr,
    pub reply_sport: Option<u16>,
    /// ICMP type and code of the original direction.
    pub icmp: Option<(u8, u8)>,
}

/// Flows (by index) that the current policy would not allow as new
/// connections: they are to be deleted, so established connections stop
/// where a change denies them. Flows from or to the node itself are left
/// alone (node traffic is always allowed), and so are flows that involve no
/// local endpoint (another node judges them).
pub fn flows_to_delete(
    ir: &Ir,
    flows: &[TrackedFlow],
    node_addrs: &BTreeSet<IpAddr>,
) -> Vec<usize> {
    let local: BTreeSet<IpAddr> = ir
        .endpoints
        .values()
        .flat_map(|e| e.ips.iter().copied())
        .collect();
    let mut out = Vec::new();
    for (i, f) in flows.iter().enumerate() {
        // Judged as the dataplane judged the first packet: after DNAT.
        let (src, dst) = (f.orig_src, f.reply_src);
        if node_addrs.contains(&src)
            || node_addrs.contains(&dst)
            || node_addrs.contains(&f.orig_dst)
        {
            continue;
        }
        if !local.contains(&src) && !local.contains(&dst) {
            continue;
        }
        let p = Packet {
            src,
            dst,
            protocol: f.protocol,
            src_port: f.orig_sport,
            dst_port: f.reply_sport,
            icmp: f.icmp,
        };
        if !explain(ir, &p).allowed() {
            out.push(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str, labels: &[(&str, &str)], ip: Option<&str>) -> core::Pod {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        let mut v = json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 80}]}]},
        });
        if let Some(ip) = ip {
            v["status"] = json!({"phase": "Running", "podIPs": [{"ip": ip}]});
        }
        serde_json::from_value(v).expect("pod")
    }

    fn ns(name: &str, labels: &[(&str, &str)]) -> core::Namespace {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
            .expect("namespace")
    }

    fn np(ns: &str, name: &str, spec: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
            .expect("np")
    }

    fn gnp(name: &str, spec: serde_json::Value) -> GlobalNetworkPolicy {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("gnp")
    }

    fn synced_calc() -> PolicyCalc {
        let mut c = PolicyCalc::new();
        let t = Instant::now();
        c.input(PolicyInput::namespace(Change::InitStart), t);
        c.input(
            PolicyInput::namespace(Change::InitApply(ns("x", &[("ns", "x")]))),
            t,
        );
        c.input(PolicyInput::namespace(Change::InitDone), t);
        c.input(PolicyInput::pod(Change::InitStart), t);
        c.input(
            PolicyInput::pod(Change::InitApply(pod(
                "x",
                "a",
                &[("pod", "a")],
                Some("10.0.0.2"),
            ))),
            t,
        );
        c.input(
            PolicyInput::pod(Change::InitApply(pod(
                "x",
                "b",
                &[("pod", "b")],
                Some("10.0.1.2"),
            ))),
            t,
        );
        c.input(PolicyInput::pod(Change::InitDone), t);
        for k in [Change::InitStart, Change::InitDone] {
            c.input(PolicyInput::network_policy(k.clone()), t);
        }
        for k in [Change::InitStart, Change::InitDone] {
            c.input(PolicyInput::global_network_policy(k.clone()), t);
        }
        c
    }

    fn local(pod: &str, iface: &str, ip: &str) -> LocalEndpointInfo {
        LocalEndpointInfo {
            pod: PodKey::new("x", pod),
            interface: iface.into(),
            addresses: vec![ip.parse().expect("ip")],
        }
    }

    #[test]
    fn synced_only_after_every_kind_listed() {
        let mut c = PolicyCalc::new();
        let t = Instant::now();
        for k in [Kind::Pod, Kind::Namespace, Kind::NetworkPolicy] {
            let input = match k {
                Kind::Pod => PolicyInput::pod(Change::InitDone),
                Kind::Namespace => PolicyInput::namespace(Change::InitDone),
                _ => PolicyInput::network_policy(Change::InitDone),
            };
            c.input(input, t);
            assert!(!c.synced());
        }
        c.input(PolicyInput::global_network_policy(Change::InitDone), t);
        assert!(c.synced());
    }

    #[test]
    fn local_endpoint_addresses_win_over_the_watched_pod() {
        let mut c = synced_calc();
        // x/a's status has no address yet; the agent allocated 10.0.9.9.
        c.input(
            PolicyInput::pod(Change::Apply(pod("x", "a", &[("pod", "a")], None))),
            Instant::now(),
        );
        c.set_local_endpoints(vec![local("a", "mgya", "10.0.9.9")], None);
        let ep = c.ir().endpoints.get("mgya").expect("endpoint compiled");
        assert_eq!(ep.ips, vec!["10.0.9.9".parse::<IpAddr>().expect("ip")]);
        // Still an endpoint after a pod update without addresses.
        c.input(
            PolicyInput::pod(Change::Apply(pod("x", "a", &[("pod", "z")], None))),
            Instant::now(),
        );
        assert_eq!(c.ir().endpoints["mgya"].ips.len(), 1);
        c.set_local_endpoints(vec![], None);
        assert!(c.ir().endpoints.is_empty());
        assert!(
            c.ir()
                .endpoint_by_ip("10.0.9.9".parse().expect("ip"))
                .is_none()
        );
    }

    #[test]
    fn an_unknown_pod_has_no_program_until_seeded_or_watched() {
        let mut c = synced_calc();
        c.set_local_endpoints(vec![local("new", "mgynew", "10.0.5.5")], None);
        assert!(!c.endpoint_compiled("mgynew"));
        assert_eq!(
            c.endpoint_problem("mgynew").as_deref(),
            Some("pod x/new is not known to policy yet")
        );
        c.seed_pod(&pod("x", "new", &[("pod", "new")], None));
        assert!(c.endpoint_compiled("mgynew"));
        assert_eq!(c.endpoint_problem("mgynew"), None);
    }

    #[test]
    fn a_refused_policy_keeps_its_previous_version() {
        let mut c = synced_calc();
        c.set_local_endpoints(vec![local("a", "mgya", "10.0.0.2")], None);
        let t = Instant::now();
        c.input(
            PolicyInput::global_network_policy(Change::Apply(gnp(
                "g",
                json!({"selector": "pod == 'a'", "ingress": [{"action": "Deny"}]}),
            ))),
            t,
        );
        let before = c.ir().clone();
        assert_eq!(before.chains.len(), 1);
        c.input(
            PolicyInput::global_network_policy(Change::Apply(gnp(
                "g",
                json!({"selector": "pod ==", "ingress": [{"action": "Allow"}]}),
            ))),
            t,
        );
        assert_eq!(c.ir(), &before, "the old version stays in force");
        let why = c
            .refused()
            .get(&PolicyRef::Global { name: "g".into() })
            .expect("reported");
        assert!(why.contains("selector"), "{why}");
        // Fixed: accepted, no longer reported.
        c.input(
            PolicyInput::global_network_policy(Change::Apply(gnp(
                "g",
                json!({"selector": "pod == 'a'", "ingress": [{"action": "Allow"}]}),
            ))),
            t,
        );
        assert!(c.refused().is_empty());
        assert_ne!(c.ir(), &before);
    }

    #[test]
    fn a_relist_forgets_what_it_no_longer_lists() {
        let mut c = synced_calc();
        let t = Instant::now();
        c.input(
            PolicyInput::network_policy(Change::Apply(np("x", "p", json!({"podSelector": {}})))),
            t,
        );
        c.set_local_endpoints(vec![local("a", "mgya", "10.0.0.2")], None);
        assert!(c.ir().endpoints["mgya"].ingress.kubernetes_isolated());
        // The watch broke; the re-list finds the policy and pod b gone.
        c.input(PolicyInput::network_policy(Change::InitStart), t);
        c.input(PolicyInput::network_policy(Change::InitDone), t);
        c.input(PolicyInput::pod(Change::InitStart), t);
        c.input(
            PolicyInput::pod(Change::InitApply(pod(
                "x",
                "a",
                &[("pod", "a")],
                Some("10.0.0.2"),
            ))),
            t,
        );
        c.input(PolicyInput::pod(Change::InitDone), t);
        assert!(!c.ir().endpoints["mgya"].ingress.any_policy());
        assert!(!c.knows_pod(&PodKey::new("x", "b")));
        assert!(c.knows_pod(&PodKey::new("x", "a")));
    }

    #[test]
    fn finished_pods_leave_every_set() {
        let mut c = synced_calc();
        let t = Instant::now();
        c.input(
            PolicyInput::network_policy(Change::Apply(np(
                "x",
                "from-b",
                json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
            ))),
            t,
        );
        let in_sets = |c: &PolicyCalc| {
            c.ir().sets.values().any(|s| {
                s.elements.contains(&margay_policy::ir::SetElem::Addr(
                    "10.0.1.2".parse().expect("ip"),
                ))
            })
        };
        assert!(in_sets(&c));
        let mut done = pod("x", "b", &[("pod", "b")], Some("10.0.1.2"));
        if let Some(s) = done.status.as_mut() {
            s.phase = Some("Succeeded".into());
        }
        c.input(PolicyInput::pod(Change::Apply(done)), t);
        assert!(!in_sets(&c));
    }

    /// The kernel as far as a delta can change it, following the renderer's
    /// semantics (`add set` keeps existing elements; removing what is not
    /// there fails).
    #[derive(Debug, Default, PartialEq)]
    struct Kernel {
        sets: BTreeMap<SetId, BTreeSet<margay_policy::ir::SetElem>>,
        chains: BTreeMap<ChainId, margay_policy::ir::PolicyChain>,
        endpoints: BTreeMap<String, margay_policy::ir::Endpoint>,
    }

    impl Kernel {
        fn of(ir: &Ir) -> Kernel {
            Kernel {
                sets: ir
                    .sets
                    .iter()
                    .map(|(k, s)| (k.clone(), s.elements.clone()))
                    .collect(),
                chains: ir.chains.clone(),
                endpoints: ir.endpoints.clone(),
            }
        }

        fn apply(&mut self, ir: &Ir, d: &Delta) -> Result<(), String> {
            for s in &d.sets_added {
                let e = self.sets.entry(s.clone()).or_default();
                e.extend(ir.sets[s].elements.iter().copied());
            }
            for (s, ch) in &d.elements {
                let set = self.sets.get_mut(s).ok_or(format!("no set {s}"))?;
                for e in &ch.removed {
                    if !set.remove(e) {
                        return Err(format!("{s}: removing absent {e:?}"));
                    }
                }
                set.extend(ch.added.iter().copied());
            }
            for c in &d.chains_upserted {
                self.chains.insert(c.clone(), ir.chains[c].clone());
            }
            for e in &d.endpoints_upserted {
                self.endpoints.insert(e.clone(), ir.endpoints[e].clone());
            }
            for e in &d.endpoints_removed {
                self.endpoints.remove(e);
            }
            for c in &d.chains_removed {
                self.chains.remove(c).ok_or(format!("no chain {c}"))?;
            }
            for s in &d.sets_removed {
                self.sets.remove(s).ok_or(format!("no set {s}"))?;
            }
            Ok(())
        }
    }

    /// A small deterministic generator (no dependency for one test).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) as usize) % n
        }
    }

    fn random_input(r: &mut Lcg) -> PolicyInput {
        let pods = ["a", "b", "c", "d"];
        let labels = ["a", "b", "c"];
        match r.next(7) {
            0 | 1 => {
                let p = pods[r.next(4)];
                let ip = format!("10.0.{}.{}", r.next(2), r.next(4) + 2);
                PolicyInput::pod(Change::Apply(pod(
                    ["x", "y"][r.next(2)],
                    p,
                    &[("pod", labels[r.next(3)])],
                    Some(&ip),
                )))
            }
            2 => PolicyInput::pod(Change::Delete(pod(
                ["x", "y"][r.next(2)],
                pods[r.next(4)],
                &[],
                None,
            ))),
            3 => PolicyInput::namespace(Change::Apply(ns(
                ["x", "y"][r.next(2)],
                &[("team", labels[r.next(3)])],
            ))),
            4 => {
                let peer = labels[r.next(3)];
                let spec = match r.next(3) {
                    0 => json!({"podSelector": {"matchLabels": {"pod": labels[r.next(3)]}},
                        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": peer}}}]}]}),
                    1 => json!({"podSelector": {}, "policyTypes": ["Egress"],
                        "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": peer}}}],
                                    "ports": [{"port": "http"}]}]}),
                    _ => {
                        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": [format!("10.0.{}.0/24", r.next(2))]}}]}]})
                    }
                };
                PolicyInput::network_policy(Change::Apply(np(
                    ["x", "y"][r.next(2)],
                    ["p", "q"][r.next(2)],
                    spec,
                )))
            }
            5 => PolicyInput::network_policy(Change::Delete(np(
                ["x", "y"][r.next(2)],
                ["p", "q"][r.next(2)],
                json!({}),
            ))),
            _ => {
                if r.next(2) == 0 {
                    PolicyInput::global_network_policy(Change::Apply(gnp(
                        "g",
                        json!({"order": r.next(2000), "selector": format!("pod == '{}'", labels[r.next(3)]),
                            "ingress": [{"action": "Deny", "source": {"selector": format!("pod == '{}'", labels[r.next(3)])}}, {"action": "Pass"}]}),
                    )))
                } else {
                    PolicyInput::global_network_policy(Change::Delete(gnp("g", json!({}))))
                }
            }
        }
    }

    #[test]
    fn batched_deltas_take_the_kernel_exactly_to_the_ir() {
        for seed in 0..40u64 {
            let mut r = Lcg(seed);
            let mut c = synced_calc();
            let mut applied = AppliedNames::of(c.ir());
            let mut kernel = Kernel::of(c.ir());
            let mut reconciles = 0;
            for _round in 0..30 {
                let n = 1 + r.next(8);
                for _ in 0..n {
                    let input = random_input(&mut r);
                    c.input(input, Instant::now());
                    if r.next(4) == 0 {
                        let mut eps = vec![];
                        for (p, ip) in [("a", "10.0.0.2"), ("b", "10.0.1.3")] {
                            if r.next(2) == 0 {
                                eps.push(local(p, &format!("mgy{p}"), ip));
                            }
                        }
                        c.set_local_endpoints(eps, None);
                    }
                }
                let pass = c.take_pass(&applied);
                match pass.delta {
                    Some(d) => {
                        kernel
                            .apply(c.ir(), &d)
                            .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{d:?}"));
                        applied.apply(&d);
                    }
                    None => {
                        reconciles += 1;
                        kernel = Kernel::of(c.ir());
                        applied = AppliedNames::of(c.ir());
                    }
                }
                assert_eq!(kernel, Kernel::of(c.ir()), "seed {seed}");
                assert_eq!(applied, AppliedNames::of(c.ir()), "seed {seed}");
                assert_eq!(c.ir(), &c.compiler().full_ir(), "seed {seed}");
            }
            assert!(
                reconciles < 30,
                "seed {seed}: batches should mostly be deltas"
            );
        }
    }

    #[test]
    fn flows_are_judged_after_dnat_and_node_traffic_is_left_alone() {
        let mut c = synced_calc();
        c.set_local_endpoints(
            vec![
                local("a", "mgya", "10.0.0.2"),
                local("b", "mgyb", "10.0.1.2"),
            ],
            None,
        );
        c.input(
            PolicyInput::network_policy(Change::Apply(np(
                "x",
                "a-80",
                json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 80}]}]}),
            ))),
            Instant::now(),
        );
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let flow = |src: &str, dst: &str, real_dst: &str, port: u16| TrackedFlow {
            protocol: 6,
            orig_src: ip(src),
            orig_dst: ip(dst),
            orig_sport: Some(40000),
            orig_dport: Some(port),
            reply_src: ip(real_dst),
            reply_sport: Some(port),
            icmp: None,
        };
        let flows = vec![
            flow("10.0.1.2", "10.0.0.2", "10.0.0.2", 80), // allowed
            flow("10.0.1.2", "10.0.0.2", "10.0.0.2", 81), // denied
            flow("10.0.1.2", "10.96.0.10", "10.0.0.2", 81), // denied, through a Service
            flow("10.0.1.2", "10.96.0.10", "10.0.0.2", 80), // allowed, through a Service
            flow("192.168.1.1", "10.0.0.2", "10.0.0.2", 81), // from the node: kept
            flow("10.7.0.1", "10.7.0.2", "10.7.0.2", 81), // no local endpoint: kept
        ];
        let node: BTreeSet<IpAddr> = [ip("192.168.1.1")].into();
        assert_eq!(flows_to_delete(c.ir(), &flows, &node), vec![1, 2]);
    }
}
