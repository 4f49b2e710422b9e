//! Policies (NetworkPolicy, GlobalNetworkPolicy) translated into policy
//! chains over *set keys*: what each set stands for, independent of which
//! pods exist. The compiler turns keys into sets with elements.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use margay_api::names::{fnv1a64, is_port_name};
use margay_api::net::{Cidr, IpFamily};
use margay_api::resources::policy::{
    EntityRule, GlobalNetworkPolicy, GlobalRule, PolicyType, PortSpec, Protocol, RuleAction,
    validate_global_network_policy,
};
use margay_api::selector::Expr;
use margay_api::validate::Problems;
use margay_api::{Selector, ValidationError};

use crate::ir::{
    Action, AddrMatch, ChainId, Direction, PolicyChain, PolicyRef, Rule, RuleOrigin, SetId, SetKind,
};

/// Which namespaces a pod selection looks in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NsScope {
    /// Exactly this namespace (a NetworkPolicy's own).
    Named(String),
    /// Namespaces whose labels match.
    Matching(Expr),
}

/// A set of pods: those matching `pods` in the namespaces of `scope`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodSelection {
    pub scope: NsScope,
    pub pods: Expr,
}

impl PodSelection {
    /// Canonical text (selector `Display` is canonical).
    pub fn canonical(&self) -> String {
        match &self.scope {
            NsScope::Named(ns) => format!("ns={ns} pods={}", self.pods),
            NsScope::Matching(e) => format!("nssel={e} pods={}", self.pods),
        }
    }

    /// Whether the pod (with its namespace's labels) is selected.
    pub fn matches(
        &self,
        namespace: &str,
        ns_labels: Option<&BTreeMap<String, String>>,
        pod_labels: &BTreeMap<String, String>,
    ) -> bool {
        let ns_ok = match &self.scope {
            NsScope::Named(n) => n == namespace,
            NsScope::Matching(e) => match ns_labels {
                Some(l) => e.matches(l),
                None => e.matches(&BTreeMap::<String, String>::new()),
            },
        };
        ns_ok && self.pods.matches(pod_labels)
    }

    /// Whether membership depends on namespace labels.
    pub fn uses_namespace_labels(&self) -> bool {
        matches!(self.scope, NsScope::Matching(_))
    }
}

/// What a set stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SetKey {
    /// Addresses of the selected pods.
    Pods { sel: PodSelection, family: IpFamily },
    /// Addresses in any of `include` and in none of `except`.
    Nets {
        family: IpFamily,
        include: Vec<Cidr>,
        except: Vec<Cidr>,
    },
    /// `(address, protocol, port)` of each selected pod defining the named
    /// port `name` for `protocol`.
    NamedPort {
        sel: PodSelection,
        name: String,
        protocol: u8,
        family: IpFamily,
    },
}

fn fam_digit(f: IpFamily) -> char {
    match f {
        IpFamily::V4 => '4',
        IpFamily::V6 => '6',
    }
}

impl SetKey {
    pub fn canonical(&self) -> String {
        match self {
            SetKey::Pods { sel, family } => format!("pods {family} {}", sel.canonical()),
            SetKey::Nets {
                family,
                include,
                except,
            } => {
                let j = |v: &[Cidr]| v.iter().map(Cidr::to_string).collect::<Vec<_>>().join(",");
                format!("nets {family} {} except {}", j(include), j(except))
            }
            SetKey::NamedPort {
                sel,
                name,
                protocol,
                family,
            } => format!(
                "namedport {family} {name}/{} {}",
                Protocol::from_number(*protocol),
                sel.canonical()
            ),
        }
    }

    pub fn family(&self) -> IpFamily {
        match self {
            SetKey::Pods { family, .. }
            | SetKey::Nets { family, .. }
            | SetKey::NamedPort { family, .. } => *family,
        }
    }

    pub fn kind(&self) -> SetKind {
        match self {
            SetKey::Pods { .. } => SetKind::Addresses,
            SetKey::Nets { .. } => SetKind::Intervals,
            SetKey::NamedPort { .. } => SetKind::AddressProtocolPort,
        }
    }

    /// The stable set name.
    pub fn id(&self) -> SetId {
        let prefix = match self {
            SetKey::Pods { .. } => 'p',
            SetKey::Nets { .. } => 'n',
            SetKey::NamedPort { .. } => 'q',
        };
        let h = fnv1a64(self.canonical().as_bytes()) >> 16;
        SetId(format!("{prefix}{}-{h:012x}", fam_digit(self.family())))
    }
}

/// A policy translated: its subject, its chains by direction, and the keys
/// of every set its chains use.
#[derive(Debug, Clone, PartialEq)]
pub struct TranslatedPolicy {
    pub policy: PolicyRef,
    /// GlobalNetworkPolicy order (None: a NetworkPolicy, or a GNP without
    /// order, which sorts last).
    pub order: Option<f64>,
    pub subject: PodSelection,
    pub chains: BTreeMap<Direction, PolicyChain>,
    pub sets: BTreeMap<SetId, SetKey>,
}

impl TranslatedPolicy {
    pub fn is_global(&self) -> bool {
        matches!(self.policy, PolicyRef::Global { .. })
    }
}

/// Chain name of a policy in a direction.
pub fn chain_id(policy: &PolicyRef, d: Direction) -> ChainId {
    let (prefix, text) = match policy {
        PolicyRef::Kubernetes { namespace, name } => ('k', format!("{namespace}/{name}")),
        PolicyRef::Global { name } => ('g', name.clone()),
    };
    let h = fnv1a64(text.as_bytes()) >> 16;
    ChainId(format!("{prefix}-{h:012x}-{}", d.letter()))
}

struct Builder {
    policy: PolicyRef,
    sets: BTreeMap<SetId, SetKey>,
}

impl Builder {
    fn set(&mut self, key: SetKey) -> SetId {
        let id = key.id();
        self.sets.insert(id.clone(), key);
        id
    }
}

const FAMILIES: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

// ---------------------------------------------------------------- NetworkPolicy

/// The peers and ports of one NetworkPolicy rule, either direction.
type RawRule = (
    Option<Vec<NetworkPolicyPeer>>,
    Option<Vec<NetworkPolicyPort>>,
);

enum Peer {
    Any,
    Pods(PodSelection),
    Block { cidr: Cidr, except: Vec<Cidr> },
}

enum PortEntry {
    /// Any port of any protocol.
    Any,
    /// `protocol`, ports in the range (None: every port).
    Numeric(u8, Option<(u16, u16)>),
    /// A named port for `protocol`.
    Named(u8, String),
}

/// Translate a NetworkPolicy with the upstream semantics
/// (`shared/notes/networkpolicy-semantics.md`), checking what the API server
/// checks so that bad input gets a field-naming error.
pub fn translate_network_policy(np: &NetworkPolicy) -> Result<TranslatedPolicy, ValidationError> {
    let namespace = np.metadata.namespace.clone().unwrap_or_default();
    let name = np.metadata.name.clone().unwrap_or_default();
    let mut p = Problems::new("NetworkPolicy", format!("{namespace}/{name}"));
    if namespace.is_empty() {
        p.add(
            "metadata.namespace",
            "required: NetworkPolicy is namespaced",
        );
    }
    let policy = PolicyRef::Kubernetes {
        namespace: namespace.clone(),
        name,
    };
    let spec = np.spec.clone().unwrap_or_default();
    // An absent podSelector is the empty selector: every pod of the namespace.
    let pods = label_selector(
        &mut p,
        "spec.podSelector",
        &spec.pod_selector.clone().unwrap_or_default(),
    );
    let subject = PodSelection {
        scope: NsScope::Named(namespace.clone()),
        pods,
    };
    // policyTypes defaulting (DEF): Ingress always, Egress when egress rules exist.
    let types: Vec<PolicyType> = match &spec.policy_types {
        Some(t) if !t.is_empty() => {
            let mut v = Vec::new();
            for (i, s) in t.iter().enumerate() {
                match s.as_str() {
                    "Ingress" => v.push(PolicyType::Ingress),
                    "Egress" => v.push(PolicyType::Egress),
                    other => p.add(
                        format!("spec.policyTypes[{i}]"),
                        format!("{other:?}: allowed Ingress, Egress"),
                    ),
                }
            }
            v
        }
        _ => {
            let mut v = vec![PolicyType::Ingress];
            if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                v.push(PolicyType::Egress);
            }
            v
        }
    };
    let mut b = Builder {
        policy: policy.clone(),
        sets: BTreeMap::new(),
    };
    let mut chains = BTreeMap::new();
    for d in Direction::BOTH {
        let wanted = match d {
            Direction::Ingress => PolicyType::Ingress,
            Direction::Egress => PolicyType::Egress,
        };
        if !types.contains(&wanted) {
            continue;
        }
        let mut rules = Vec::new();
        // (peers, ports) of each rule.
        let raw: Vec<RawRule> = match d {
            Direction::Ingress => spec
                .ingress
                .iter()
                .flatten()
                .map(|r| (r.from.clone(), r.ports.clone()))
                .collect(),
            Direction::Egress => spec
                .egress
                .iter()
                .flatten()
                .map(|r| (r.to.clone(), r.ports.clone()))
                .collect(),
        };
        let peer_field = match d {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        };
        for (i, (peers, ports)) in raw.iter().enumerate() {
            let at = format!(
                "spec.{}[{i}]",
                if d == Direction::Ingress {
                    "ingress"
                } else {
                    "egress"
                }
            );
            let peers: Vec<Peer> = match peers {
                None => vec![Peer::Any],
                Some(v) if v.is_empty() => vec![Peer::Any],
                Some(v) => v
                    .iter()
                    .enumerate()
                    .filter_map(|(j, peer)| {
                        np_peer(&mut p, &format!("{at}.{peer_field}[{j}]"), peer, &namespace)
                    })
                    .collect(),
            };
            let ports: Vec<PortEntry> = match ports {
                None => vec![PortEntry::Any],
                Some(v) if v.is_empty() => vec![PortEntry::Any],
                Some(v) => v
                    .iter()
                    .enumerate()
                    .filter_map(|(j, port)| np_port(&mut p, &format!("{at}.ports[{j}]"), port))
                    .collect(),
            };
            let origin = RuleOrigin {
                policy: policy.clone(),
                direction: d,
                index: i,
            };
            for peer in &peers {
                for port in &ports {
                    np_rules(&mut b, &mut rules, &origin, &subject, d, peer, port);
                }
            }
        }
        chains.insert(
            d,
            PolicyChain {
                id: chain_id(&policy, d),
                policy: policy.clone(),
                direction: d,
                rules,
            },
        );
    }
    p.finish()?;
    Ok(TranslatedPolicy {
        policy,
        order: None,
        subject,
        chains,
        sets: b.sets,
    })
}

fn label_selector(
    p: &mut Problems,
    field: &str,
    sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> Expr {
    match Selector::from_label_selector(sel) {
        Ok(s) => s.expr().clone(),
        Err(e) => {
            p.add(format!("{field}.{}", e.field), e.message);
            // Matches nothing; the error makes the whole policy fail anyway.
            Expr::or(vec![])
        }
    }
}

fn np_peer(p: &mut Problems, at: &str, peer: &NetworkPolicyPeer, own_ns: &str) -> Option<Peer> {
    if let Some(block) = &peer.ip_block {
        if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
            p.add(
                at.to_string(),
                "ipBlock cannot be combined with podSelector or namespaceSelector in one peer",
            );
            return None;
        }
        let cidr = match Cidr::parse_loose(&block.cidr) {
            Ok((_, c)) => c,
            Err(e) => {
                p.add(format!("{at}.ipBlock.cidr"), e.to_string());
                return None;
            }
        };
        let mut except = Vec::new();
        for (k, x) in block.except.iter().flatten().enumerate() {
            match Cidr::parse_loose(x) {
                Ok((_, c)) if cidr.contains_cidr(&c) && c.prefix() > cidr.prefix() => {
                    except.push(c)
                }
                Ok((_, c)) => p.add(
                    format!("{at}.ipBlock.except[{k}]"),
                    format!("{c} must be a strict subset of cidr {cidr}"),
                ),
                Err(e) => p.add(format!("{at}.ipBlock.except[{k}]"), e.to_string()),
            }
        }
        except.sort();
        except.dedup();
        return Some(Peer::Block { cidr, except });
    }
    match (&peer.namespace_selector, &peer.pod_selector) {
        (None, None) => {
            p.add(
                at.to_string(),
                "must specify a peer: podSelector, namespaceSelector or ipBlock",
            );
            None
        }
        // namespaceSelector absent: the policy's own namespace.
        (None, Some(ps)) => Some(Peer::Pods(PodSelection {
            scope: NsScope::Named(own_ns.to_string()),
            pods: label_selector(p, &format!("{at}.podSelector"), ps),
        })),
        // namespaceSelector present ({} = every namespace); podSelector absent = all pods.
        (Some(ns), ps) => Some(Peer::Pods(PodSelection {
            scope: NsScope::Matching(label_selector(p, &format!("{at}.namespaceSelector"), ns)),
            pods: match ps {
                Some(ps) => label_selector(p, &format!("{at}.podSelector"), ps),
                None => Expr::All,
            },
        })),
    }
}

fn np_port(p: &mut Problems, at: &str, port: &NetworkPolicyPort) -> Option<PortEntry> {
    let protocol = match port.protocol.as_deref().unwrap_or("TCP") {
        "TCP" => Protocol::TCP,
        "UDP" => Protocol::UDP,
        "SCTP" => Protocol::SCTP,
        other => {
            p.add(
                format!("{at}.protocol"),
                format!("{other:?}: allowed TCP, UDP, SCTP"),
            );
            return None;
        }
    };
    match (&port.port, port.end_port) {
        (None, None) => Some(PortEntry::Numeric(protocol, None)),
        (None, Some(_)) => {
            p.add(format!("{at}.endPort"), "needs a numeric port");
            None
        }
        (Some(IntOrString::Int(n)), end) => {
            let Ok(first) = u16::try_from(*n)
                .map_err(|_| ())
                .and_then(|v| if v == 0 { Err(()) } else { Ok(v) })
            else {
                p.add(format!("{at}.port"), format!("{n}: allowed 1..=65535"));
                return None;
            };
            let last = match end {
                None => first,
                Some(e) => match u16::try_from(e) {
                    Ok(e) if e >= first => e,
                    _ => {
                        p.add(
                            format!("{at}.endPort"),
                            format!("{e}: must be >= port ({first}) and <= 65535"),
                        );
                        return None;
                    }
                },
            };
            Some(PortEntry::Numeric(protocol, Some((first, last))))
        }
        (Some(IntOrString::String(s)), end) => {
            if end.is_some() {
                p.add(format!("{at}.endPort"), "not allowed with a named port");
                return None;
            }
            if !is_port_name(s) {
                p.add(
                    format!("{at}.port"),
                    format!("{s:?} is not a port name (1-15 lowercase alphanumerics or '-', with a letter)"),
                );
                return None;
            }
            Some(PortEntry::Named(protocol, s.clone()))
        }
    }
}

/// The IR rules of one (peer, port) combination of a NetworkPolicy rule.
fn np_rules(
    b: &mut Builder,
    out: &mut Vec<Rule>,
    origin: &RuleOrigin,
    subject: &PodSelection,
    d: Direction,
    peer: &Peer,
    port: &PortEntry,
) {
    let family_free = matches!(peer, Peer::Any) && !matches!(port, PortEntry::Named(..));
    let families: Vec<Option<IpFamily>> = if family_free {
        vec![None]
    } else {
        FAMILIES.iter().copied().map(Some).collect()
    };
    for family in families {
        let mut r = Rule::new(origin.clone(), Action::Allow);
        r.family = family;
        // The remote end: source for ingress, destination for egress.
        match peer {
            Peer::Any => {}
            Peer::Pods(sel) => {
                let Some(f) = family else { continue };
                let id = b.set(SetKey::Pods {
                    sel: sel.clone(),
                    family: f,
                });
                remote(&mut r, d).push(AddrMatch {
                    set: id,
                    negated: false,
                });
            }
            Peer::Block { cidr, except } => {
                let Some(f) = family else { continue };
                if cidr.family() != f {
                    continue;
                }
                let id = b.set(SetKey::Nets {
                    family: f,
                    include: vec![*cidr],
                    except: except.clone(),
                });
                remote(&mut r, d).push(AddrMatch {
                    set: id,
                    negated: false,
                });
            }
        }
        match port {
            PortEntry::Any => {}
            PortEntry::Numeric(proto, range) => {
                r.protocol = Some(*proto);
                if let Some(rg) = range {
                    r.dst_ports.push(*rg);
                }
            }
            PortEntry::Named(proto, name) => {
                let Some(f) = family else { continue };
                // Resolved on the destination pod: the subject for ingress,
                // each peer pod for egress; never on non-pod destinations.
                let sel = match (d, peer) {
                    (Direction::Ingress, _) => subject.clone(),
                    (Direction::Egress, Peer::Pods(sel)) => sel.clone(),
                    (Direction::Egress, Peer::Any) => PodSelection {
                        scope: NsScope::Matching(Expr::All),
                        pods: Expr::All,
                    },
                    (Direction::Egress, Peer::Block { .. }) => continue,
                };
                r.protocol = Some(*proto);
                r.named_dst_port = Some(b.set(SetKey::NamedPort {
                    sel,
                    name: name.clone(),
                    protocol: *proto,
                    family: f,
                }));
            }
        }
        out.push(r);
    }
}

fn remote(r: &mut Rule, d: Direction) -> &mut Vec<AddrMatch> {
    match d {
        Direction::Ingress => &mut r.src,
        Direction::Egress => &mut r.dst,
    }
}

// ---------------------------------------------------------- GlobalNetworkPolicy

/// Translate a GlobalNetworkPolicy (validated first).
pub fn translate_global_policy(
    gnp: &GlobalNetworkPolicy,
) -> Result<TranslatedPolicy, ValidationError> {
    validate_global_network_policy(gnp)?;
    let name = gnp.metadata.name.clone().unwrap_or_default();
    let policy = PolicyRef::Global { name: name.clone() };
    let mut p = Problems::new("GlobalNetworkPolicy", name);
    let spec = gnp.spec.with_defaults();
    let sel = |p: &mut Problems, field: &str, s: Option<&str>| -> Expr {
        match Selector::parse(s.unwrap_or("")) {
            Ok(s) => s.expr().clone(),
            Err(e) => {
                p.add(field.to_string(), e.to_string());
                Expr::or(vec![])
            }
        }
    };
    let subject = PodSelection {
        scope: NsScope::Matching(sel(
            &mut p,
            "spec.namespaceSelector",
            spec.namespace_selector.as_deref(),
        )),
        pods: sel(&mut p, "spec.selector", spec.selector.as_deref()),
    };
    let mut b = Builder {
        policy: policy.clone(),
        sets: BTreeMap::new(),
    };
    let mut chains = BTreeMap::new();
    for t in spec.effective_types() {
        let (d, list) = match t {
            PolicyType::Ingress => (Direction::Ingress, &spec.ingress),
            PolicyType::Egress => (Direction::Egress, &spec.egress),
        };
        let mut rules = Vec::new();
        for (i, r) in list.iter().enumerate() {
            let origin = RuleOrigin {
                policy: b.policy.clone(),
                direction: d,
                index: i,
            };
            gnp_rules(
                &mut b,
                &mut p,
                &mut rules,
                origin,
                r,
                &format!(
                    "spec.{}[{i}]",
                    if d == Direction::Ingress {
                        "ingress"
                    } else {
                        "egress"
                    }
                ),
            );
        }
        chains.insert(
            d,
            PolicyChain {
                id: chain_id(&policy, d),
                policy: policy.clone(),
                direction: d,
                rules,
            },
        );
    }
    p.finish()?;
    Ok(TranslatedPolicy {
        policy,
        order: gnp.spec.order,
        subject,
        chains,
        sets: b.sets,
    })
}

/// One end of a GNP rule, resolved for one family.
struct End {
    addr: Vec<AddrMatch>,
    /// The pods the end selects (for named ports), if it selects pods.
    pods: Option<PodSelection>,
    ranges: Vec<(u16, u16)>,
    named: Vec<String>,
    not_ranges: Vec<(u16, u16)>,
}

fn gnp_end(
    b: &mut Builder,
    p: &mut Problems,
    at: &str,
    e: Option<&EntityRule>,
    family: IpFamily,
) -> Option<End> {
    let mut end = End {
        addr: Vec::new(),
        pods: None,
        ranges: Vec::new(),
        named: Vec::new(),
        not_ranges: Vec::new(),
    };
    let Some(e) = e else { return Some(end) };
    if e.selector.is_some() || e.namespace_selector.is_some() {
        let parse =
            |p: &mut Problems, field: &str, s: Option<&str>| match Selector::parse(s.unwrap_or(""))
            {
                Ok(s) => s.expr().clone(),
                Err(err) => {
                    p.add(format!("{at}.{field}"), err.to_string());
                    Expr::or(vec![])
                }
            };
        let sel = PodSelection {
            scope: NsScope::Matching(parse(
                p,
                "namespaceSelector",
                e.namespace_selector.as_deref(),
            )),
            pods: parse(p, "selector", e.selector.as_deref()),
        };
        end.addr.push(AddrMatch {
            set: b.set(SetKey::Pods {
                sel: sel.clone(),
                family,
            }),
            negated: false,
        });
        end.pods = Some(sel);
    }
    let cidrs = |v: &[String]| -> Vec<Cidr> {
        let mut c: Vec<Cidr> = v
            .iter()
            .filter_map(|s| Cidr::parse_strict(s).ok())
            .filter(|c| c.family() == family)
            .collect();
        c.sort();
        c.dedup();
        c
    };
    if !e.nets.is_empty() {
        let inc = cidrs(&e.nets);
        if inc.is_empty() {
            // Only other-family nets: this family can never match.
            return None;
        }
        end.addr.push(AddrMatch {
            set: b.set(SetKey::Nets {
                family,
                include: inc,
                except: Vec::new(),
            }),
            negated: false,
        });
    }
    let not = cidrs(&e.not_nets);
    if !not.is_empty() {
        end.addr.push(AddrMatch {
            set: b.set(SetKey::Nets {
                family,
                include: not,
                except: Vec::new(),
            }),
            negated: true,
        });
    }
    for v in &e.ports {
        match PortSpec::parse(v) {
            Ok(PortSpec::Range(a, z)) => end.ranges.push((a, z)),
            Ok(PortSpec::Named(n)) => end.named.push(n),
            Err(_) => {} // reported by validation
        }
    }
    for v in &e.not_ports {
        if let Ok(PortSpec::Range(a, z)) = PortSpec::parse(v) {
            end.not_ranges.push((a, z));
        }
    }
    Some(end)
}

fn gnp_rules(
    b: &mut Builder,
    p: &mut Problems,
    out: &mut Vec<Rule>,
    origin: RuleOrigin,
    r: &GlobalRule,
    at: &str,
) {
    let action = match r.action {
        Some(RuleAction::Allow) | None => Action::Allow,
        Some(RuleAction::Deny) => Action::Deny,
        Some(RuleAction::Pass) => Action::Pass,
        Some(RuleAction::Log) => Action::Log,
    };
    let protocol = r.protocol.as_ref().and_then(|v| Protocol::parse(v).ok());
    let pinned = match (r.ip_version, protocol) {
        (Some(4), _) | (_, Some(Protocol::Icmp)) => Some(IpFamily::V4),
        (Some(6), _) | (_, Some(Protocol::IcmpV6)) => Some(IpFamily::V6),
        _ => None,
    };
    let ends_need_family = [&r.source, &r.destination].iter().any(|e| {
        e.as_ref().is_some_and(|e| {
            e.selector.is_some()
                || e.namespace_selector.is_some()
                || !e.nets.is_empty()
                || !e.not_nets.is_empty()
                || e.ports
                    .iter()
                    .any(|v| matches!(PortSpec::parse(v), Ok(PortSpec::Named(_))))
        })
    });
    let families: Vec<Option<IpFamily>> = match (pinned, ends_need_family) {
        (Some(f), _) => vec![Some(f)],
        (None, true) => FAMILIES.iter().copied().map(Some).collect(),
        (None, false) => vec![None],
    };
    for family in families {
        let f = family.unwrap_or(IpFamily::V4);
        let Some(src) = gnp_end(b, p, &format!("{at}.source"), r.source.as_ref(), f) else {
            continue;
        };
        let Some(dst) = gnp_end(
            b,
            p,
            &format!("{at}.destination"),
            r.destination.as_ref(),
            f,
        ) else {
            continue;
        };
        let mut base = Rule::new(origin.clone(), action);
        base.family = family;
        base.protocol = protocol.map(Protocol::number);
        base.icmp = r.icmp.and_then(|i| i.type_.map(|t| (t, i.code)));
        base.src = src.addr.clone();
        base.dst = dst.addr.clone();
        base.src_ports = src.ranges.clone();
        base.not_src_ports = src.not_ranges.clone();
        base.not_dst_ports = dst.not_ranges.clone();
        // Destination ports: numbers and ranges in one rule, each named
        // port in a rule of its own (OR).
        if dst.named.is_empty() {
            base.dst_ports = dst.ranges.clone();
            out.push(base);
            continue;
        }
        if !dst.ranges.is_empty() {
            let mut numeric = base.clone();
            numeric.dst_ports = dst.ranges.clone();
            out.push(numeric);
        }
        let pods = dst.pods.clone().unwrap_or(PodSelection {
            scope: NsScope::Matching(Expr::All),
            pods: Expr::All,
        });
        let Some(proto) = protocol else { continue };
        for n in &dst.named {
            let mut named = base.clone();
            named.named_dst_port = Some(b.set(SetKey::NamedPort {
                sel: pods.clone(),
                name: n.clone(),
                protocol: proto.number(),
                family: f,
            }));
            out.push(named);
        }
    }
}
