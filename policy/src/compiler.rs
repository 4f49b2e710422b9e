//! The compiler: holds the inputs (namespaces, pods, policies, local
//! endpoints) and the [`Ir`] they compile to, and keeps the IR current as
//! inputs change, returning for each change the [`Delta`] a renderer applies.
//!
//! Incremental by construction, because each IR part depends on few inputs:
//! - a set's elements depend on its key and on pods (and their namespace's
//!   labels): a pod change re-tests that pod against every set, a namespace
//!   label change re-tests that namespace's pods;
//! - a policy chain depends only on its policy: only policy changes touch
//!   chains;
//! - an endpoint program depends on its pod's labels, its namespace's labels
//!   and the policies that select it: recomputed for the touched endpoints
//!   only, and on a policy change for the local endpoints its old or new
//!   version selects (no other endpoint's program mentions it).
//!
//! [`Compiler::full_ir`] recompiles everything from scratch; the tests check
//! that every incremental step lands on the same IR.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use margay_api::ValidationError;
use margay_api::net::{Cidr, IpFamily, ip_to_u128, u128_to_ip};
use margay_api::resources::policy::{GlobalNetworkPolicy, KUBERNETES_POLICY_ORDER};

use crate::ir::{
    Delta, Direction, ElementChange, Endpoint, EndpointProgram, IpSet, Ir, PolicyRef, SetElem,
    SetId,
};
use crate::model::{LocalEndpoint, Namespace, Pod, PodKey};
use crate::translate::{
    PodSelection, SetKey, TranslatedPolicy, translate_global_policy, translate_network_policy,
};

/// Inputs and the IR compiled from them.
#[derive(Debug, Clone, Default)]
pub struct Compiler {
    namespaces: BTreeMap<String, Namespace>,
    pods: BTreeMap<PodKey, Pod>,
    policies: BTreeMap<PolicyRef, TranslatedPolicy>,
    /// Local endpoints: pod → host interface.
    local: BTreeMap<PodKey, String>,
    /// Every set key in use and how many policies use it.
    keys: BTreeMap<SetId, (SetKey, usize)>,
    ir: Ir,
    /// Endpoint programs computed so far (work done, for tests and
    /// profiling: a change should recompute only what it can affect).
    endpoint_recomputes: u64,
}

impl Compiler {
    pub fn new() -> Compiler {
        Compiler::default()
    }

    /// The current IR.
    pub fn ir(&self) -> &Ir {
        &self.ir
    }

    pub fn pod(&self, key: &PodKey) -> Option<&Pod> {
        self.pods.get(key)
    }

    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.values()
    }

    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.get(name)
    }

    pub fn policy(&self, p: &PolicyRef) -> Option<&TranslatedPolicy> {
        self.policies.get(p)
    }

    /// How many endpoint programs the incremental steps have recomputed
    /// (a counter of work, not of changes).
    pub fn endpoint_recomputes(&self) -> u64 {
        self.endpoint_recomputes
    }

    // ------------------------------------------------------------ changes

    /// A namespace was added or its labels changed.
    pub fn upsert_namespace(&mut self, ns: Namespace) -> Delta {
        let name = ns.name.clone();
        if self.namespaces.get(&name) == Some(&ns) {
            return Delta::default();
        }
        self.namespaces.insert(name.clone(), ns);
        self.namespace_changed(&name)
    }

    pub fn remove_namespace(&mut self, name: &str) -> Delta {
        if self.namespaces.remove(name).is_none() {
            return Delta::default();
        }
        self.namespace_changed(name)
    }

    /// A pod was added, or its labels, addresses or ports changed.
    pub fn upsert_pod(&mut self, pod: Pod) -> Delta {
        let key = pod.key.clone();
        let old = self.pods.insert(key.clone(), pod);
        if old.as_ref() == self.pods.get(&key) {
            return Delta::default();
        }
        let mut d = Delta::default();
        self.refresh_pod_in_sets(&key, old.as_ref(), &mut d);
        self.refresh_endpoint(&key, &mut d);
        d
    }

    pub fn remove_pod(&mut self, key: &PodKey) -> Delta {
        let Some(old) = self.pods.remove(key) else {
            return Delta::default();
        };
        let mut d = Delta::default();
        self.refresh_pod_in_sets(key, Some(&old), &mut d);
        self.refresh_endpoint(key, &mut d);
        d
    }

    /// The pod is an endpoint on this node, behind `interface`.
    pub fn upsert_local_endpoint(&mut self, ep: LocalEndpoint) -> Delta {
        if self.local.get(&ep.pod) == Some(&ep.interface) {
            return Delta::default();
        }
        let mut d = Delta::default();
        if let Some(old_if) = self.local.insert(ep.pod.clone(), ep.interface.clone())
            && self.ir.endpoints.remove(&old_if).is_some()
        {
            d.endpoints_removed.insert(old_if);
        }
        self.refresh_endpoint(&ep.pod, &mut d);
        d
    }

    pub fn remove_local_endpoint(&mut self, pod: &PodKey) -> Delta {
        let mut d = Delta::default();
        if let Some(iface) = self.local.remove(pod)
            && self.ir.endpoints.remove(&iface).is_some()
        {
            d.endpoints_removed.insert(iface);
        }
        d
    }

    /// A NetworkPolicy was created or changed. Invalid policies are refused
    /// whole, and the previous version (if any) stays in force.
    pub fn upsert_network_policy(&mut self, np: &NetworkPolicy) -> Result<Delta, ValidationError> {
        let t = translate_network_policy(np)?;
        Ok(self.upsert_translated(t))
    }

    pub fn upsert_global_policy(
        &mut self,
        gnp: &GlobalNetworkPolicy,
    ) -> Result<Delta, ValidationError> {
        let t = translate_global_policy(gnp)?;
        Ok(self.upsert_translated(t))
    }

    pub fn remove_policy(&mut self, policy: &PolicyRef) -> Delta {
        let Some(old) = self.policies.remove(policy) else {
            return Delta::default();
        };
        let mut d = Delta::default();
        for c in old.chains.values() {
            self.ir.chains.remove(&c.id);
            d.chains_removed.insert(c.id.clone());
        }
        self.refresh_endpoints_selected_by(&[&old.subject], &mut d);
        self.release_keys(&old, &mut d);
        d
    }

    fn upsert_translated(&mut self, t: TranslatedPolicy) -> Delta {
        let mut d = Delta::default();
        if self.policies.get(&t.policy) == Some(&t) {
            return d;
        }
        // New keys first, so chains never refer to a missing set.
        for (id, key) in &t.sets {
            self.acquire_key(id, key, &mut d);
        }
        let old = self.policies.insert(t.policy.clone(), t.clone());
        for (dir, c) in &t.chains {
            let _ = dir;
            if self.ir.chains.get(&c.id) != Some(c) {
                self.ir.chains.insert(c.id.clone(), c.clone());
                d.chains_upserted.insert(c.id.clone());
            }
        }
        if let Some(old) = &old {
            for c in old.chains.values() {
                if !t.chains.values().any(|n| n.id == c.id) {
                    self.ir.chains.remove(&c.id);
                    d.chains_removed.insert(c.id.clone());
                }
            }
        }
        match &old {
            Some(o) => self.refresh_endpoints_selected_by(&[&o.subject, &t.subject], &mut d),
            None => self.refresh_endpoints_selected_by(&[&t.subject], &mut d),
        }
        if let Some(old) = &old {
            self.release_keys(old, &mut d);
        }
        d
    }

    fn acquire_key(&mut self, id: &SetId, key: &SetKey, d: &mut Delta) {
        if let Some((_, n)) = self.keys.get_mut(id) {
            *n += 1;
            return;
        }
        self.keys.insert(id.clone(), (key.clone(), 1));
        let set = self.build_set(id, key);
        self.ir.sets.insert(id.clone(), set);
        d.sets_removed.remove(id);
        d.sets_added.insert(id.clone());
    }

    fn release_keys(&mut self, old: &TranslatedPolicy, d: &mut Delta) {
        for id in old.sets.keys() {
            let gone = match self.keys.get_mut(id) {
                Some((_, n)) => {
                    *n -= 1;
                    *n == 0
                }
                None => false,
            };
            if gone {
                self.keys.remove(id);
                self.ir.sets.remove(id);
                d.elements.remove(id);
                if !d.sets_added.remove(id) {
                    d.sets_removed.insert(id.clone());
                }
            }
        }
    }

    fn namespace_changed(&mut self, name: &str) -> Delta {
        let mut d = Delta::default();
        let in_ns: Vec<PodKey> = self
            .pods
            .range(PodKey::new(name, "")..)
            .take_while(|(k, _)| k.namespace == name)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &in_ns {
            let pod = self.pods.get(key).cloned();
            // Same pod, other namespace labels: compare against what the
            // sets hold, which was computed with the old labels.
            self.refresh_pod_in_sets(key, pod.as_ref(), &mut d);
            self.refresh_endpoint(key, &mut d);
        }
        d
    }

    // ------------------------------------------------------- recomputation

    /// Re-test one pod against every pod-derived set. `old` is the pod as
    /// the sets last saw it (its elements are removed unless still wanted).
    fn refresh_pod_in_sets(&mut self, key: &PodKey, old: Option<&Pod>, d: &mut Delta) {
        let new = self.pods.get(key).cloned();
        let new = new.as_ref();
        let ns_labels = self
            .namespaces
            .get(&key.namespace)
            .map(|n| n.labels.clone());
        let ns_labels = ns_labels.as_ref();
        let keys: Vec<(SetId, SetKey)> = self
            .keys
            .iter()
            .filter(|(_, (k, _))| !matches!(k, SetKey::Nets { .. }))
            .map(|(id, (k, _))| (id.clone(), k.clone()))
            .collect();
        for (id, k) in keys {
            let Some(set) = self.ir.sets.get(&id) else {
                continue;
            };
            // Elements the old pod could have contributed, whatever labels
            // the sets were computed with.
            let stale: BTreeSet<SetElem> = old
                .map(|p| pod_candidate_elements(&k, p))
                .unwrap_or_default();
            let wanted: BTreeSet<SetElem> = new
                .map(|p| pod_elements(&k, p, ns_labels))
                .unwrap_or_default();
            let mut change = ElementChange::default();
            for e in stale.difference(&wanted) {
                if set.elements.contains(e) && !self.other_pod_has(&k, key, e) {
                    change.removed.insert(*e);
                }
            }
            for e in &wanted {
                if !set.elements.contains(e) {
                    change.added.insert(*e);
                }
            }
            if change.is_empty() {
                continue;
            }
            if let Some(set) = self.ir.sets.get_mut(&id) {
                for e in &change.removed {
                    set.elements.remove(e);
                }
                set.elements.extend(change.added.iter().copied());
            }
            if !d.sets_added.contains(&id) {
                merge_change(d.elements.entry(id).or_default(), change);
            }
        }
    }

    /// Whether another pod contributes element `e` to the set of key `k`
    /// (two pods briefly holding one address during churn).
    fn other_pod_has(&self, k: &SetKey, except: &PodKey, e: &SetElem) -> bool {
        let ip = match e {
            SetElem::Addr(a) | SetElem::AddrProtoPort(a, ..) => *a,
            SetElem::Range(..) => return false,
        };
        self.pods.values().any(|p| {
            &p.key != except
                && p.ips.contains(&ip)
                && pod_elements(
                    k,
                    p,
                    self.namespaces.get(&p.key.namespace).map(|n| &n.labels),
                )
                .contains(e)
        })
    }

    /// Recompute the local endpoints one of `subjects` selects: after a
    /// policy change, those its old or new version selects. An endpoint
    /// neither selects has no chain of that policy in its programs before
    /// or after, and every other input of its programs is unchanged, so
    /// recomputing it would give the same programs (the differential tests
    /// check this against [`Compiler::full_ir`]). With hundreds of local
    /// endpoints and a policy selecting a few, this is most of the work of
    /// a policy change saved.
    fn refresh_endpoints_selected_by(&mut self, subjects: &[&PodSelection], d: &mut Delta) {
        let keys: Vec<PodKey> = self
            .local
            .keys()
            .filter(|k| {
                let Some(pod) = self.pods.get(*k) else {
                    // Unknown pod: no programs, whatever the policies.
                    return false;
                };
                let ns_labels = self.namespaces.get(&k.namespace).map(|n| &n.labels);
                subjects
                    .iter()
                    .any(|s| s.matches(&k.namespace, ns_labels, &pod.labels))
            })
            .cloned()
            .collect();
        for k in keys {
            self.refresh_endpoint(&k, d);
        }
    }

    /// Recompute the endpoint of `pod` if it is local.
    fn refresh_endpoint(&mut self, pod: &PodKey, d: &mut Delta) {
        let Some(iface) = self.local.get(pod).cloned() else {
            return;
        };
        self.endpoint_recomputes += 1;
        let new = self.compute_endpoint(pod, &iface);
        let old = self.ir.endpoints.get(&iface);
        if old == new.as_ref() {
            return;
        }
        match new {
            Some(ep) => {
                self.ir.endpoints.insert(iface.clone(), ep);
                d.endpoints_removed.remove(&iface);
                d.endpoints_upserted.insert(iface);
            }
            None => {
                self.ir.endpoints.remove(&iface);
                d.endpoints_upserted.remove(&iface);
                d.endpoints_removed.insert(iface);
            }
        }
    }

    /// The endpoint's programs; None while its pod is unknown (the renderer
    /// then drops its traffic as an unknown interface).
    fn compute_endpoint(&self, key: &PodKey, iface: &str) -> Option<Endpoint> {
        let pod = self.pods.get(key)?;
        let ns_labels = self.namespaces.get(&key.namespace).map(|n| &n.labels);
        let mut ingress = EndpointProgram::default();
        let mut egress = EndpointProgram::default();
        let mut globals: Vec<(&TranslatedPolicy, f64)> = Vec::new();
        for t in self.policies.values() {
            if !t.subject.matches(&key.namespace, ns_labels, &pod.labels) {
                continue;
            }
            if t.is_global() {
                globals.push((t, t.order.unwrap_or(f64::INFINITY)));
            } else {
                for (dir, c) in &t.chains {
                    program_mut(&mut ingress, &mut egress, *dir)
                        .kubernetes
                        .push(c.id.clone());
                }
            }
        }
        // Order, then name (ADR 0003). PolicyRef orders by name already.
        globals.sort_by(|a, b| {
            a.1.total_cmp(&b.1)
                .then_with(|| a.0.policy.cmp(&b.0.policy))
        });
        for (t, order) in globals {
            for (dir, c) in &t.chains {
                let prog = program_mut(&mut ingress, &mut egress, *dir);
                if c.has_pass() {
                    prog.passing.insert(c.id.clone());
                }
                if order < KUBERNETES_POLICY_ORDER {
                    prog.before.push(c.id.clone());
                } else {
                    prog.after.push(c.id.clone());
                }
            }
        }
        Some(Endpoint {
            pod: key.clone(),
            interface: iface.to_string(),
            ips: pod.ips.clone(),
            ingress,
            egress,
        })
    }

    fn build_set(&self, id: &SetId, key: &SetKey) -> IpSet {
        let elements = match key {
            SetKey::Nets {
                include, except, ..
            } => net_ranges(include, except),
            _ => self
                .pods
                .values()
                .flat_map(|p| {
                    pod_elements(
                        key,
                        p,
                        self.namespaces.get(&p.key.namespace).map(|n| &n.labels),
                    )
                })
                .collect(),
        };
        IpSet {
            id: id.clone(),
            family: key.family(),
            kind: key.kind(),
            description: key.canonical(),
            elements,
        }
    }

    /// The IR recompiled from scratch from the current inputs.
    pub fn full_ir(&self) -> Ir {
        let mut ir = Ir::default();
        for (id, (key, _)) in &self.keys {
            ir.sets.insert(id.clone(), self.build_set(id, key));
        }
        for t in self.policies.values() {
            for c in t.chains.values() {
                ir.chains.insert(c.id.clone(), c.clone());
            }
        }
        for (pod, iface) in &self.local {
            if let Some(ep) = self.compute_endpoint(pod, iface) {
                ir.endpoints.insert(iface.clone(), ep);
            }
        }
        ir
    }
}

fn program_mut<'a>(
    ingress: &'a mut EndpointProgram,
    egress: &'a mut EndpointProgram,
    d: Direction,
) -> &'a mut EndpointProgram {
    match d {
        Direction::Ingress => ingress,
        Direction::Egress => egress,
    }
}

fn merge_change(into: &mut ElementChange, ch: ElementChange) {
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

/// The elements `pod` contributes to the set of `key`.
fn pod_elements(
    key: &SetKey,
    pod: &Pod,
    ns_labels: Option<&BTreeMap<String, String>>,
) -> BTreeSet<SetElem> {
    match key {
        SetKey::Nets { .. } => BTreeSet::new(),
        SetKey::Pods { sel, family } => {
            if !sel.matches(&pod.key.namespace, ns_labels, &pod.labels) {
                return BTreeSet::new();
            }
            pod.ips
                .iter()
                .filter(|ip| IpFamily::of(**ip) == *family)
                .map(|ip| SetElem::Addr(*ip))
                .collect()
        }
        SetKey::NamedPort {
            sel,
            name,
            protocol,
            family,
        } => {
            if !sel.matches(&pod.key.namespace, ns_labels, &pod.labels) {
                return BTreeSet::new();
            }
            named_elements(pod, name, *protocol, *family)
        }
    }
}

/// The elements `pod` would contribute if selected (to remove on change).
fn pod_candidate_elements(key: &SetKey, pod: &Pod) -> BTreeSet<SetElem> {
    match key {
        SetKey::Nets { .. } => BTreeSet::new(),
        SetKey::Pods { family, .. } => pod
            .ips
            .iter()
            .filter(|ip| IpFamily::of(**ip) == *family)
            .map(|ip| SetElem::Addr(*ip))
            .collect(),
        SetKey::NamedPort {
            name,
            protocol,
            family,
            ..
        } => named_elements(pod, name, *protocol, *family),
    }
}

fn named_elements(pod: &Pod, name: &str, protocol: u8, family: IpFamily) -> BTreeSet<SetElem> {
    let mut out = BTreeSet::new();
    for np in &pod.named_ports {
        if np.name == name && np.protocol == protocol {
            for ip in pod.ips.iter().filter(|ip| IpFamily::of(**ip) == family) {
                out.insert(SetElem::AddrProtoPort(*ip, protocol, np.port));
            }
        }
    }
    out
}

/// `include` minus `except` as disjoint, merged inclusive ranges.
pub fn net_ranges(include: &[Cidr], except: &[Cidr]) -> BTreeSet<SetElem> {
    let Some(family) = include.first().map(Cidr::family) else {
        return BTreeSet::new();
    };
    let span = |c: &Cidr| {
        let a = ip_to_u128(c.addr());
        let last = if c.host_bits() == 128 {
            u128::MAX
        } else {
            a + ((1u128 << c.host_bits()) - 1)
        };
        (a, last)
    };
    let mut ranges: Vec<(u128, u128)> = include.iter().map(span).collect();
    ranges.sort();
    // Merge overlapping or adjacent ranges.
    let mut merged: Vec<(u128, u128)> = Vec::new();
    for (a, z) in ranges {
        match merged.last_mut() {
            Some((_, lz)) if a <= lz.saturating_add(1) => *lz = (*lz).max(z),
            _ => merged.push((a, z)),
        }
    }
    for ex in except {
        let (ea, ez) = span(ex);
        let mut next = Vec::new();
        for (a, z) in merged {
            if ez < a || ea > z {
                next.push((a, z));
                continue;
            }
            if ea > a {
                next.push((a, ea - 1));
            }
            if ez < z {
                next.push((ez + 1, z));
            }
        }
        merged = next;
    }
    merged
        .into_iter()
        .map(|(a, z)| SetElem::Range(u128_to_ip(family, a), u128_to_ip(family, z)))
        .collect()
}
