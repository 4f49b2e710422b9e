//! `GlobalNetworkPolicy`: cluster-wide, ordered policy with Allow / Deny /
//! Pass / Log rules and Calico-style selectors, evaluated before (or, by
//! `order`, after) Kubernetes NetworkPolicies. How the two combine is ADR 0003
//! (`docs/adr/0003-policy-evaluation-order.md`); compilation is in
//! `margay-policy`.
//!
//! Field semantics follow Calico's `projectcalico.org/v3` GlobalNetworkPolicy
//! where Margay supports the field; unsupported Calico fields (tiers,
//! serviceAccountSelector, HTTP match, host endpoints, preDNAT, doNotTrack)
//! are absent rather than accepted and ignored.

use crate::net::{Cidr, IpFamily};
use crate::selector::Selector;
use crate::validate::{Problems, ValidationError};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The `order` Kubernetes NetworkPolicies take when GlobalNetworkPolicies are
/// sorted around them (Calico's value). A GNP with a smaller order is
/// evaluated before them; one with a larger or equal order, or none, after.
pub const KUBERNETES_POLICY_ORDER: f64 = 1000.0;

/// Which traffic a policy applies to, seen from the selected endpoint.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum PolicyType {
    /// Traffic into the selected endpoints.
    Ingress,
    /// Traffic out of the selected endpoints.
    Egress,
}

// What a matching rule does. (A `//` comment: a doc comment here would replace
// the field description in the CRD schema.)
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RuleAction {
    /// Allow the connection; evaluation ends.
    Allow,
    /// Drop the packet; evaluation ends.
    Deny,
    /// Skip the remaining GlobalNetworkPolicies: the Kubernetes
    /// NetworkPolicies decide alone.
    Pass,
    /// Log the packet (kernel log, prefix `margay <policy> <rule>`) and go on
    /// with the next rule.
    Log,
}

/// A cluster-wide policy: an ordered list of rules applied to the pods that
/// `selector` and `namespaceSelector` select.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[kube(
    group = "margay.dev",
    version = "v1",
    kind = "GlobalNetworkPolicy",
    plural = "globalnetworkpolicies",
    shortname = "gnp",
    doc = "Cluster-wide ordered network policy (Allow/Deny/Pass/Log) over Calico-style selectors.",
    derive = "PartialEq",
    printcolumn(name = "Order", type_ = "number", json_path = ".spec.order"),
    printcolumn(name = "Selector", type_ = "string", json_path = ".spec.selector"),
    printcolumn(
        name = "NamespaceSelector",
        type_ = "string",
        json_path = ".spec.namespaceSelector",
        priority = 1
    ),
    printcolumn(
        name = "Types",
        type_ = "string",
        json_path = ".spec.types",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct GlobalNetworkPolicySpec {
    /// Precedence: policies with a lower order are evaluated first; ties are
    /// broken by name. Kubernetes NetworkPolicies sit at order 1000: a policy
    /// below 1000 is evaluated before them, one at or above 1000 (or without
    /// an order) after them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,

    /// Which pods the policy applies to (selector string over pod labels,
    /// default `all()`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub selector: Option<String>,

    /// Restricts the policy to pods in namespaces whose labels match
    /// (selector string over namespace labels, default `all()`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub namespace_selector: Option<String>,

    /// Directions the policy applies to. Default: `Ingress`, plus `Egress`
    /// when there are egress rules; `Egress` alone when there are egress rules
    /// and no ingress rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2))]
    pub types: Option<Vec<PolicyType>>,

    /// Rules for traffic into the selected pods, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<GlobalRule>,

    /// Rules for traffic out of the selected pods, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<GlobalRule>,
}

/// One rule: when every given criterion matches, `action` is taken.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.action)", "message": "action is required: one of Allow, Deny, Pass, Log"}
]))]
pub struct GlobalRule {
    pub action: Option<RuleAction>,
    /// `TCP`, `UDP`, `SCTP`, `ICMP`, `ICMPv6`, `UDPLite` or a protocol number
    /// 1..255. Absent: any protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_or_string")]
    pub protocol: Option<IntOrString>,
    /// 4 or 6: the rule matches only that IP version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 4, max = 6))]
    pub ip_version: Option<u8>,
    /// ICMP type and code (needs protocol ICMP or ICMPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpMatch>,
    /// Conditions on the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<EntityRule>,
    /// Conditions on the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<EntityRule>,
}

/// ICMP type and optional code.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub struct IcmpMatch {
    #[serde(rename = "type")]
    #[schemars(range(min = 0, max = 254))]
    pub type_: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u8>,
}

/// One end of a connection. Every given field must match (AND).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntityRule {
    /// Pods whose labels match (selector string). With `namespaceSelector`,
    /// only pods in the matching namespaces; without, pods in every namespace.
    /// Pods only: never node or external addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub selector: Option<String>,
    /// Pods in namespaces whose labels match (selector string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub namespace_selector: Option<String>,
    /// The address is in one of these CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<String>,
    /// The address is in none of these CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_nets: Vec<String>,
    /// The port is one of these: numbers, ranges `"80:90"` (inclusive), or
    /// (destination only) named container ports. Needs protocol TCP, UDP or SCTP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "int_or_string_list")]
    pub ports: Vec<IntOrString>,
    /// The port is none of these (numbers and ranges only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "int_or_string_list")]
    pub not_ports: Vec<IntOrString>,
}

// The schema of Kubernetes' IntOrString (k8s-openapi implements JsonSchema
// for it only behind a feature that would rebuild it for this alone).
fn int_or_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"x-kubernetes-int-or-string": true})
}

fn int_or_string_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "array", "items": {"x-kubernetes-int-or-string": true}})
}

/// A transport protocol a rule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    IcmpV6,
    UdpLite,
    Other(u8),
}

impl Protocol {
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const SCTP: u8 = 132;
    pub const ICMP: u8 = 1;
    pub const ICMPV6: u8 = 58;
    pub const UDPLITE: u8 = 136;

    /// From an IP protocol number; the named ones come back named.
    pub fn from_number(n: u8) -> Protocol {
        match n {
            Self::TCP => Protocol::Tcp,
            Self::UDP => Protocol::Udp,
            Self::SCTP => Protocol::Sctp,
            Self::ICMP => Protocol::Icmp,
            Self::ICMPV6 => Protocol::IcmpV6,
            Self::UDPLITE => Protocol::UdpLite,
            other => Protocol::Other(other),
        }
    }

    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => Self::TCP,
            Protocol::Udp => Self::UDP,
            Protocol::Sctp => Self::SCTP,
            Protocol::Icmp => Self::ICMP,
            Protocol::IcmpV6 => Self::ICMPV6,
            Protocol::UdpLite => Self::UDPLITE,
            Protocol::Other(n) => n,
        }
    }

    /// Whether the protocol has ports (what `ports` can match on).
    pub fn has_ports(self) -> bool {
        matches!(
            self,
            Protocol::Tcp | Protocol::Udp | Protocol::Sctp | Protocol::UdpLite
        )
    }

    /// Parse a Kubernetes/Calico protocol field: a name (case-insensitive for
    /// the named ones, as Calico) or a number 1..=255.
    pub fn parse(v: &IntOrString) -> Result<Protocol, String> {
        match v {
            IntOrString::Int(n) => match u8::try_from(*n) {
                Ok(n) if n >= 1 => Ok(Protocol::from_number(n)),
                _ => Err(format!(
                    "{n} is not a protocol number: allowed 1..=255 or TCP, UDP, SCTP, ICMP, ICMPv6, UDPLite"
                )),
            },
            IntOrString::String(s) => match s.to_ascii_lowercase().as_str() {
                "tcp" => Ok(Protocol::Tcp),
                "udp" => Ok(Protocol::Udp),
                "sctp" => Ok(Protocol::Sctp),
                "icmp" => Ok(Protocol::Icmp),
                "icmpv6" => Ok(Protocol::IcmpV6),
                "udplite" => Ok(Protocol::UdpLite),
                other => match other.parse::<u8>() {
                    Ok(n) if n >= 1 => Ok(Protocol::from_number(n)),
                    _ => Err(format!(
                        "{s:?} is not a protocol: allowed TCP, UDP, SCTP, ICMP, ICMPv6, UDPLite or a number 1..=255"
                    )),
                },
            },
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Protocol::Tcp => f.write_str("TCP"),
            Protocol::Udp => f.write_str("UDP"),
            Protocol::Sctp => f.write_str("SCTP"),
            Protocol::Icmp => f.write_str("ICMP"),
            Protocol::IcmpV6 => f.write_str("ICMPv6"),
            Protocol::UdpLite => f.write_str("UDPLite"),
            Protocol::Other(n) => write!(f, "{n}"),
        }
    }
}

/// One entry of `ports` / `notPorts`, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortSpec {
    /// An inclusive range (a single port is `first == last`).
    Range(u16, u16),
    /// A named container port, resolved per destination pod.
    Named(String),
}

impl PortSpec {
    /// Parse `80`, `"80"`, `"80:90"` or a port name.
    pub fn parse(v: &IntOrString) -> Result<PortSpec, String> {
        match v {
            IntOrString::Int(n) => match u16::try_from(*n) {
                Ok(p) if p >= 1 => Ok(PortSpec::Range(p, p)),
                _ => Err(format!("{n} is not a port: allowed 1..=65535")),
            },
            IntOrString::String(s) => {
                if let Some((a, b)) = s.split_once(':') {
                    let parse = |x: &str| x.parse::<u16>().ok().filter(|p| *p >= 1);
                    match (parse(a), parse(b)) {
                        (Some(a), Some(b)) if a <= b => Ok(PortSpec::Range(a, b)),
                        (Some(_), Some(_)) => Err(format!(
                            "{s:?} is not a port range: the first port must not exceed the last"
                        )),
                        _ => Err(format!(
                            "{s:?} is not a port range: expected FIRST:LAST with ports 1..=65535"
                        )),
                    }
                } else if let Ok(p) = s.parse::<u16>() {
                    if p >= 1 {
                        Ok(PortSpec::Range(p, p))
                    } else {
                        Err(format!("{s:?} is not a port: allowed 1..=65535"))
                    }
                } else if crate::names::is_port_name(s) {
                    Ok(PortSpec::Named(s.clone()))
                } else {
                    Err(format!(
                        "{s:?} is neither a port, a range FIRST:LAST nor a port name (1-15 lowercase alphanumerics or '-', with a letter, no '--', no '-' at either end)"
                    ))
                }
            }
        }
    }
}

impl GlobalNetworkPolicySpec {
    /// The directions the policy applies to, with the default applied.
    pub fn effective_types(&self) -> Vec<PolicyType> {
        if let Some(t) = &self.types {
            let set: BTreeSet<PolicyType> = t.iter().copied().collect();
            return set.into_iter().collect();
        }
        match (self.ingress.is_empty(), self.egress.is_empty()) {
            (true, false) => vec![PolicyType::Egress],
            (false, false) => vec![PolicyType::Ingress, PolicyType::Egress],
            _ => vec![PolicyType::Ingress],
        }
    }

    /// The spec with defaults filled in: `types`, `selector` and
    /// `namespaceSelector` (`all()`).
    pub fn with_defaults(&self) -> GlobalNetworkPolicySpec {
        let mut s = self.clone();
        s.types = Some(self.effective_types());
        s.selector.get_or_insert_with(|| "all()".into());
        s.namespace_selector.get_or_insert_with(|| "all()".into());
        s
    }
}

/// Check a GlobalNetworkPolicy; every problem is reported with its field.
pub fn validate_global_network_policy(p: &GlobalNetworkPolicy) -> Result<(), ValidationError> {
    let mut problems = Problems::new(
        "GlobalNetworkPolicy",
        p.metadata.name.clone().unwrap_or_default(),
    );
    crate::resources::check_object_name(&mut problems, &p.metadata);
    let s = &p.spec;
    if let Some(o) = s.order
        && !o.is_finite()
    {
        problems.add("spec.order", format!("{o} is not a finite number"));
    }
    check_selector(&mut problems, "spec.selector", s.selector.as_deref());
    check_selector(
        &mut problems,
        "spec.namespaceSelector",
        s.namespace_selector.as_deref(),
    );
    if let Some(types) = &s.types {
        let set: BTreeSet<_> = types.iter().collect();
        if set.len() != types.len() {
            problems.add("spec.types", "lists a type twice");
        }
        if !s.ingress.is_empty() && !set.contains(&PolicyType::Ingress) {
            problems.add(
                "spec.ingress",
                "ingress rules given but spec.types does not include Ingress: add it or remove the rules",
            );
        }
        if !s.egress.is_empty() && !set.contains(&PolicyType::Egress) {
            problems.add(
                "spec.egress",
                "egress rules given but spec.types does not include Egress: add it or remove the rules",
            );
        }
    }
    for (i, r) in s.ingress.iter().enumerate() {
        check_rule(&mut problems, &format!("spec.ingress[{i}]"), r);
    }
    for (i, r) in s.egress.iter().enumerate() {
        check_rule(&mut problems, &format!("spec.egress[{i}]"), r);
    }
    problems.finish()
}

fn check_selector(p: &mut Problems, field: &str, sel: Option<&str>) {
    if let Some(sel) = sel
        && let Err(e) = Selector::parse(sel)
    {
        p.add(field, e.to_string());
    }
}

fn check_rule(p: &mut Problems, at: &str, r: &GlobalRule) {
    if r.action.is_none() {
        p.add(
            format!("{at}.action"),
            "required: one of Allow, Deny, Pass, Log",
        );
    }
    let protocol = match &r.protocol {
        None => None,
        Some(v) => match Protocol::parse(v) {
            Ok(proto) => Some(proto),
            Err(e) => {
                p.add(format!("{at}.protocol"), e);
                None
            }
        },
    };
    let family = match r.ip_version {
        None => None,
        Some(4) => Some(IpFamily::V4),
        Some(6) => Some(IpFamily::V6),
        Some(v) => {
            p.add(format!("{at}.ipVersion"), format!("{v}: allowed 4 or 6"));
            None
        }
    };
    match (protocol, family) {
        (Some(Protocol::Icmp), Some(IpFamily::V6)) => p.add(
            format!("{at}.protocol"),
            "ICMP is IPv4 only but ipVersion is 6: use ICMPv6",
        ),
        (Some(Protocol::IcmpV6), Some(IpFamily::V4)) => p.add(
            format!("{at}.protocol"),
            "ICMPv6 is IPv6 only but ipVersion is 4: use ICMP",
        ),
        _ => {}
    }
    if let Some(icmp) = &r.icmp {
        if !matches!(protocol, Some(Protocol::Icmp | Protocol::IcmpV6)) {
            p.add(
                format!("{at}.icmp"),
                "needs protocol ICMP or ICMPv6 in the same rule",
            );
        }
        match icmp.type_ {
            None => p.add(format!("{at}.icmp.type"), "required when icmp is given"),
            Some(255) => p.add(format!("{at}.icmp.type"), "255: allowed 0..=254"),
            Some(_) => {}
        }
    }
    // The families the rule's CIDRs belong to must agree with each other and
    // with ipVersion: a rule cannot match an IPv4 and an IPv6 address at once.
    let mut families: BTreeSet<IpFamily> = family.into_iter().collect();
    for (end, e) in [("source", &r.source), ("destination", &r.destination)] {
        let Some(e) = e else { continue };
        let at = format!("{at}.{end}");
        check_selector(p, &format!("{at}.selector"), e.selector.as_deref());
        check_selector(
            p,
            &format!("{at}.namespaceSelector"),
            e.namespace_selector.as_deref(),
        );
        for (field, nets) in [("nets", &e.nets), ("notNets", &e.not_nets)] {
            let mut fams = BTreeSet::new();
            for (i, n) in nets.iter().enumerate() {
                match Cidr::parse_strict(n) {
                    Ok(c) => {
                        fams.insert(c.family());
                    }
                    Err(e) => p.add(format!("{at}.{field}[{i}]"), e.to_string()),
                }
            }
            if field == "nets" && fams.len() == 1 {
                families.extend(fams);
            }
        }
        for (field, ports) in [("ports", &e.ports), ("notPorts", &e.not_ports)] {
            if !ports.is_empty() && !protocol.is_some_and(Protocol::has_ports) {
                p.add(
                    format!("{at}.{field}"),
                    "ports need protocol TCP, UDP, SCTP or UDPLite in the same rule",
                );
            }
            for (i, v) in ports.iter().enumerate() {
                match PortSpec::parse(v) {
                    Ok(PortSpec::Named(n)) if end == "source" || field == "notPorts" => p.add(
                        format!("{at}.{field}[{i}]"),
                        format!(
                            "{n:?}: named ports are allowed only in destination.ports (numbers and ranges here)"
                        ),
                    ),
                    Ok(_) => {}
                    Err(e) => p.add(format!("{at}.{field}[{i}]"), e),
                }
            }
        }
    }
    if families.len() > 1 {
        p.add(
            at.to_string(),
            "mixes IPv4 and IPv6 (ipVersion, nets): a rule matches one family; split it in two",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gnp(yaml: &str) -> GlobalNetworkPolicy {
        serde_saphyr::from_str(yaml).expect("test YAML parses")
    }

    #[test]
    fn types_default_from_rules() {
        let s = |ing: usize, eg: usize| GlobalNetworkPolicySpec {
            ingress: vec![GlobalRule::default(); ing],
            egress: vec![GlobalRule::default(); eg],
            ..Default::default()
        };
        assert_eq!(s(0, 0).effective_types(), vec![PolicyType::Ingress]);
        assert_eq!(s(1, 0).effective_types(), vec![PolicyType::Ingress]);
        assert_eq!(s(0, 1).effective_types(), vec![PolicyType::Egress]);
        assert_eq!(
            s(1, 1).effective_types(),
            vec![PolicyType::Ingress, PolicyType::Egress]
        );
    }

    #[test]
    fn valid_policy_passes() {
        let p = gnp(r#"
apiVersion: margay.dev/v1
kind: GlobalNetworkPolicy
metadata: {name: deny-bad}
spec:
  order: 10
  selector: "app == 'db'"
  namespaceSelector: "has(team)"
  types: [Ingress, Egress]
  ingress:
  - action: Deny
    source: {nets: ["192.0.2.0/24"], notNets: ["192.0.2.1/32"]}
  - action: Allow
    protocol: TCP
    destination: {ports: [5432, "8000:8080", "metrics"]}
  - action: Log
  - action: Pass
  egress:
  - action: Allow
    protocol: ICMP
    icmp: {type: 8, code: 0}
  - action: Allow
    protocol: 17
    destination: {selector: "k8s-app == 'kube-dns'", ports: [53]}
"#);
        assert_eq!(validate_global_network_policy(&p), Ok(()));
    }

    #[test]
    fn every_problem_names_its_field() {
        let p = gnp(r#"
metadata: {name: Bad_Name}
spec:
  order: .nan
  selector: "app =="
  types: [Egress]
  ingress:
  - protocol: XTP
  - action: Allow
    destination: {ports: [80]}
  - action: Allow
    protocol: ICMPv6
    ipVersion: 4
    icmp: {code: 1}
  - action: Deny
    protocol: TCP
    source: {ports: ["http"], nets: ["10.0.0.1/8", "fd00::/8"]}
    destination: {nets: ["10.0.0.0/8"], notPorts: ["0"], ports: ["90:80"]}
  - action: Allow
    ipVersion: 6
    source: {nets: ["10.0.0.0/8"]}
"#);
        let err = validate_global_network_policy(&p).expect_err("invalid");
        let fields: Vec<&str> = err.errors.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "metadata.name",
            "spec.order",
            "spec.selector",
            "spec.ingress",
            "spec.ingress[0].action",
            "spec.ingress[0].protocol",
            "spec.ingress[1].destination.ports",
            "spec.ingress[2].protocol",
            "spec.ingress[2].icmp.type",
            "spec.ingress[3].source.ports[0]",
            "spec.ingress[3].source.nets[0]",
            "spec.ingress[3].destination.notPorts[0]",
            "spec.ingress[3].destination.ports[0]",
            "spec.ingress[4]",
        ] {
            assert!(fields.contains(&f), "no error for {f}: {err}");
        }
    }

    #[test]
    fn ports_parse() {
        let s = |x: &str| PortSpec::parse(&IntOrString::String(x.into()));
        assert_eq!(s("80"), Ok(PortSpec::Range(80, 80)));
        assert_eq!(s("80:90"), Ok(PortSpec::Range(80, 90)));
        assert_eq!(s("http-alt"), Ok(PortSpec::Named("http-alt".into())));
        assert!(s("90:80").is_err());
        assert!(s("0").is_err());
        assert!(s("Not_A_Name").is_err());
        assert!(PortSpec::parse(&IntOrString::Int(65536)).is_err());
        assert_eq!(
            PortSpec::parse(&IntOrString::Int(65535)),
            Ok(PortSpec::Range(65535, 65535))
        );
    }

    #[test]
    fn protocols_parse() {
        let s = |x: &str| Protocol::parse(&IntOrString::String(x.into()));
        assert_eq!(s("TCP"), Ok(Protocol::Tcp));
        assert_eq!(s("icmpv6"), Ok(Protocol::IcmpV6));
        assert_eq!(Protocol::parse(&IntOrString::Int(132)), Ok(Protocol::Sctp));
        assert_eq!(
            Protocol::parse(&IntOrString::Int(47)),
            Ok(Protocol::Other(47))
        );
        assert!(Protocol::parse(&IntOrString::Int(0)).is_err());
        assert!(Protocol::parse(&IntOrString::Int(256)).is_err());
        assert!(s("XTP").is_err());
    }
}
