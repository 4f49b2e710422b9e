//! The intermediate representation both readers share: the nftables renderer
//! (`crate::nft`) and the evaluator (`crate::eval`). What one reads the other
//! reads, so what `policy explain` says is what the kernel enforces.
//!
//! Shape (one node):
//! - [`IpSet`]s, named by a stable [`SetId`] derived from what they stand
//!   for (a selector pair, a CIDR list, a named port over a selector): pod
//!   addresses, address intervals, or `(address, protocol, port)` triples;
//! - one [`PolicyChain`] per policy and direction: an ordered list of
//!   [`Rule`]s over those sets. Chains do not depend on which endpoint runs
//!   them, so a policy is one chain however many pods it selects;
//! - one [`EndpointProgram`] per local endpoint and direction: which policy
//!   chains run, in which order (ADR 0003), and the defaults.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use margay_api::net::IpFamily;

use crate::model::PodKey;

/// Direction seen from the endpoint a program belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Into the endpoint.
    Ingress,
    /// Out of the endpoint.
    Egress,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    /// One letter for object names: `i` / `e`.
    pub fn letter(self) -> char {
        match self {
            Direction::Ingress => 'i',
            Direction::Egress => 'e',
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// Which policy a chain or rule comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyRef {
    /// A `networking.k8s.io/v1` NetworkPolicy.
    Kubernetes { namespace: String, name: String },
    /// A `margay.dev/v1` GlobalNetworkPolicy.
    Global { name: String },
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyRef::Kubernetes { namespace, name } => {
                write!(f, "NetworkPolicy {namespace}/{name}")
            }
            PolicyRef::Global { name } => write!(f, "GlobalNetworkPolicy {name}"),
        }
    }
}

/// Name of an IP set, stable for what the set stands for: `p4-…` pod
/// addresses, `n4-…` intervals, `q4-…` named-port triples (`6` for IPv6),
/// followed by 12 hex digits of a hash of the definition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SetId(pub String);

impl fmt::Display for SetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Name of a chain: `k-…` (NetworkPolicy) / `g-…` (GlobalNetworkPolicy)
/// policy chains, `-i` / `-e` by direction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChainId(pub String);

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the elements of a set are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetKind {
    /// Single addresses (pod IPs).
    Addresses,
    /// Disjoint inclusive address ranges (CIDRs minus excepts).
    Intervals,
    /// `(address, protocol, port)`: named ports resolved per pod.
    AddressProtocolPort,
}

/// One element of a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetElem {
    Addr(IpAddr),
    /// Inclusive range `first..=last`.
    Range(IpAddr, IpAddr),
    AddrProtoPort(IpAddr, u8, u16),
}

/// An IP set: what it stands for (for `explain` and debugging) and its
/// current elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    pub id: SetId,
    pub family: IpFamily,
    pub kind: SetKind,
    /// Human-readable definition, e.g. `pods ns=x pod=app == 'web'`.
    pub description: String,
    pub elements: BTreeSet<SetElem>,
}

impl IpSet {
    /// Whether an address (or address, protocol and port) is in the set.
    pub fn contains(&self, addr: IpAddr, protocol: u8, port: Option<u16>) -> bool {
        match self.kind {
            SetKind::Addresses => self.elements.contains(&SetElem::Addr(addr)),
            // Elements are disjoint ranges: the candidate is the last one
            // starting at or before addr.
            SetKind::Intervals => self
                .elements
                .range(..=SetElem::Range(addr, max_of(addr)))
                .next_back()
                .is_some_and(|e| matches!(e, SetElem::Range(a, z) if *a <= addr && addr <= *z)),
            SetKind::AddressProtocolPort => port.is_some_and(|p| {
                self.elements
                    .contains(&SetElem::AddrProtoPort(addr, protocol, p))
            }),
        }
    }
}

fn max_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::BROADCAST),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(u128::MAX)),
    }
}

/// An address test on one end of a packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AddrMatch {
    pub set: SetId,
    /// True: the address must *not* be in the set (`notNets`).
    pub negated: bool,
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
    /// Leave the GlobalNetworkPolicies: the NetworkPolicies decide alone.
    Pass,
    /// Log and continue with the next rule.
    Log,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "Allow",
            Action::Deny => "Deny",
            Action::Pass => "Pass",
            Action::Log => "Log",
        })
    }
}

/// Where a rule came from: the policy, the direction and the index of the
/// rule in that policy's `ingress` / `egress` list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleOrigin {
    pub policy: PolicyRef,
    pub direction: Direction,
    pub index: usize,
}

impl fmt::Display for RuleOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}[{}]", self.policy, self.direction, self.index)
    }
}

/// One rule: every given test must hold (AND). A policy rule with several
/// peers or port entries (OR) becomes several IR rules with the same origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    pub origin: RuleOrigin,
    pub action: Action,
    /// Only packets of this family (implied by any address test).
    pub family: Option<IpFamily>,
    /// IP protocol number.
    pub protocol: Option<u8>,
    pub src: Vec<AddrMatch>,
    pub dst: Vec<AddrMatch>,
    /// Source port in one of these inclusive ranges (empty: any).
    pub src_ports: Vec<(u16, u16)>,
    pub not_src_ports: Vec<(u16, u16)>,
    /// Destination port in one of these inclusive ranges (empty: any).
    pub dst_ports: Vec<(u16, u16)>,
    pub not_dst_ports: Vec<(u16, u16)>,
    /// `(destination address, protocol, destination port)` in this set:
    /// a named port resolved per destination pod.
    pub named_dst_port: Option<SetId>,
    /// ICMP type and optional code.
    pub icmp: Option<(u8, Option<u8>)>,
}

impl Rule {
    pub fn new(origin: RuleOrigin, action: Action) -> Rule {
        Rule {
            origin,
            action,
            family: None,
            protocol: None,
            src: Vec::new(),
            dst: Vec::new(),
            src_ports: Vec::new(),
            not_src_ports: Vec::new(),
            dst_ports: Vec::new(),
            not_dst_ports: Vec::new(),
            named_dst_port: None,
            icmp: None,
        }
    }

    /// Every set the rule refers to.
    pub fn sets(&self) -> impl Iterator<Item = &SetId> {
        self.src
            .iter()
            .chain(&self.dst)
            .map(|m| &m.set)
            .chain(self.named_dst_port.as_ref())
    }
}

/// The rules of one policy in one direction, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyChain {
    pub id: ChainId,
    pub policy: PolicyRef,
    pub direction: Direction,
    pub rules: Vec<Rule>,
}

impl PolicyChain {
    pub fn has_pass(&self) -> bool {
        self.rules.iter().any(|r| r.action == Action::Pass)
    }
}

/// What runs for one endpoint in one direction (ADR 0003):
/// 1. `before`: GlobalNetworkPolicies with order < 1000, by (order, name);
///    the first Allow/Deny decides; Pass jumps to step 4; Log goes on;
/// 2. `kubernetes`: the NetworkPolicies selecting the endpoint: any rule
///    that matches allows;
/// 3. `after`: the other GlobalNetworkPolicies (order ≥ 1000 or none), as in
///    step 1, except that Pass ends with the Kubernetes default of step 4;
/// 4. if nothing decided: drop when any policy above applied, else allow.
///    After a Pass: the NetworkPolicies alone (allow when one matches, drop
///    when some select the endpoint, else allow).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointProgram {
    pub before: Vec<ChainId>,
    pub kubernetes: Vec<ChainId>,
    pub after: Vec<ChainId>,
    /// The chains of `before` and `after` that have Pass rules. Part of the
    /// program because the rendered endpoint chain depends on it: a policy
    /// gaining its first Pass rule changes the endpoints it applies to.
    pub passing: BTreeSet<ChainId>,
}

impl EndpointProgram {
    /// Whether any policy applies (if not, everything is allowed).
    pub fn any_policy(&self) -> bool {
        !(self.before.is_empty() && self.kubernetes.is_empty() && self.after.is_empty())
    }

    /// Whether NetworkPolicies isolate the endpoint in this direction.
    pub fn kubernetes_isolated(&self) -> bool {
        !self.kubernetes.is_empty()
    }

    /// The verdict when no rule decided: false (drop) when a policy applied.
    pub fn default_allows(&self) -> bool {
        !self.any_policy()
    }

    /// The verdict after a Pass when no NetworkPolicy rule allowed.
    pub fn pass_default_allows(&self) -> bool {
        !self.kubernetes_isolated()
    }

    pub fn chains(&self) -> impl Iterator<Item = &ChainId> {
        self.before
            .iter()
            .chain(&self.kubernetes)
            .chain(&self.after)
    }
}

/// A local endpoint's programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub pod: PodKey,
    pub interface: String,
    pub ips: Vec<IpAddr>,
    pub ingress: EndpointProgram,
    pub egress: EndpointProgram,
}

impl Endpoint {
    pub fn program(&self, d: Direction) -> &EndpointProgram {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// Everything one node enforces.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ir {
    pub sets: BTreeMap<SetId, IpSet>,
    pub chains: BTreeMap<ChainId, PolicyChain>,
    /// By host-side interface name.
    pub endpoints: BTreeMap<String, Endpoint>,
}

impl Ir {
    /// The local endpoint holding `ip`, if any.
    pub fn endpoint_by_ip(&self, ip: IpAddr) -> Option<&Endpoint> {
        self.endpoints.values().find(|e| e.ips.contains(&ip))
    }

    /// Number of rules over all policy chains (a metric).
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(|c| c.rules.len()).sum()
    }

    /// Number of elements over all sets (a metric).
    pub fn element_count(&self) -> usize {
        self.sets.values().map(|s| s.elements.len()).sum()
    }
}

/// Element changes of one set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ElementChange {
    pub added: BTreeSet<SetElem>,
    pub removed: BTreeSet<SetElem>,
}

impl ElementChange {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// What changed in the [`Ir`] after one or more inputs changed: what a
/// renderer must apply, element by element where it can.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delta {
    /// New sets (their elements are in the IR).
    pub sets_added: BTreeSet<SetId>,
    /// Sets no longer used by any chain.
    pub sets_removed: BTreeSet<SetId>,
    /// Element changes of sets that exist before and after.
    pub elements: BTreeMap<SetId, ElementChange>,
    /// Policy chains created or whose rules changed.
    pub chains_upserted: BTreeSet<ChainId>,
    pub chains_removed: BTreeSet<ChainId>,
    /// Endpoints (by interface) created or whose programs changed.
    pub endpoints_upserted: BTreeSet<String>,
    pub endpoints_removed: BTreeSet<String>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.sets_added.is_empty()
            && self.sets_removed.is_empty()
            && self.elements.values().all(ElementChange::is_empty)
            && self.chains_upserted.is_empty()
            && self.chains_removed.is_empty()
            && self.endpoints_upserted.is_empty()
            && self.endpoints_removed.is_empty()
    }

    /// Whether only set elements change (no chain or endpoint rewrite).
    pub fn elements_only(&self) -> bool {
        self.sets_added.is_empty()
            && self.sets_removed.is_empty()
            && self.chains_upserted.is_empty()
            && self.chains_removed.is_empty()
            && self.endpoints_upserted.is_empty()
            && self.endpoints_removed.is_empty()
    }

    /// The delta between two IRs (full reconcile of the model; also what the
    /// incremental compiler is tested against).
    pub fn between(old: &Ir, new: &Ir) -> Delta {
        let mut d = Delta::default();
        for (id, set) in &new.sets {
            match old.sets.get(id) {
                None => {
                    d.sets_added.insert(id.clone());
                }
                Some(o) if o.kind != set.kind || o.family != set.family => {
                    // Same name, other shape: cannot happen with hashed names
                    // unless the hash collides; replace the set.
                    d.sets_removed.insert(id.clone());
                    d.sets_added.insert(id.clone());
                }
                Some(o) => {
                    let ch = ElementChange {
                        added: set.elements.difference(&o.elements).copied().collect(),
                        removed: o.elements.difference(&set.elements).copied().collect(),
                    };
                    if !ch.is_empty() {
                        d.elements.insert(id.clone(), ch);
                    }
                }
            }
        }
        for id in old.sets.keys() {
            if !new.sets.contains_key(id) {
                d.sets_removed.insert(id.clone());
            }
        }
        for (id, c) in &new.chains {
            if old.chains.get(id) != Some(c) {
                d.chains_upserted.insert(id.clone());
            }
        }
        for id in old.chains.keys() {
            if !new.chains.contains_key(id) {
                d.chains_removed.insert(id.clone());
            }
        }
        for (k, e) in &new.endpoints {
            if old.endpoints.get(k) != Some(e) {
                d.endpoints_upserted.insert(k.clone());
            }
        }
        for k in old.endpoints.keys() {
            if !new.endpoints.contains_key(k) {
                d.endpoints_removed.insert(k.clone());
            }
        }
        d
    }
}
