//! `BGPConfiguration` (cluster-wide BGP settings) and `BGPPeer` (who to peer with).

use crate::net::Cidr;
use crate::selector::Selector;
use crate::validate::{AS_RANGE, Problems, ValidationError};
use kube::CustomResource;
use kube::core::Duration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

/// Default AS of the cluster (private range), as Calico's.
pub const DEFAULT_AS_NUMBER: u32 = 64512;
pub const DEFAULT_BGP_PORT: u16 = 179;
/// Graceful-restart time when not configured.
pub const DEFAULT_MAX_RESTART_TIME: std::time::Duration = std::time::Duration::from_secs(120);

/// Cluster-wide BGP settings. One object, named `default`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[kube(
    group = "margay.dev",
    version = "v1",
    kind = "BGPConfiguration",
    plural = "bgpconfigurations",
    doc = "Cluster-wide BGP settings; one object named default.",
    derive = "PartialEq",
    printcolumn(name = "AS", type_ = "integer", json_path = ".spec.asNumber"),
    printcolumn(
        name = "Mesh",
        type_ = "boolean",
        json_path = ".spec.nodeToNodeMeshEnabled"
    ),
    printcolumn(name = "Port", type_ = "integer", json_path = ".spec.listenPort")
)]
#[serde(rename_all = "camelCase")]
pub struct BGPConfigurationSpec {
    /// The nodes' AS number (default 64512), 1..4294967295.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4294967295u32))]
    pub as_number: Option<u32>,
    /// Every node peers with every other node (default true). Turn off when
    /// using route reflectors (`BGPPeer` with selectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_to_node_mesh_enabled: Option<bool>,
    /// TCP port the agents' BGP speakers listen on (default 179).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub listen_port: Option<u16>,
    /// Graceful-restart time peers keep our routes for while we restart
    /// (default 120s), for the node-to-node mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::resources::DURATION_PATTERN))]
    pub node_mesh_max_restart_time: Option<Duration>,
    /// Service cluster IP ranges to announce from every node.
    #[serde(
        default,
        rename = "serviceClusterIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_cluster_ips: Vec<ServiceCidr>,
    /// Service external IP ranges to announce from every node.
    #[serde(
        default,
        rename = "serviceExternalIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_external_ips: Vec<ServiceCidr>,
    /// LoadBalancer IP ranges to announce.
    #[serde(
        default,
        rename = "serviceLoadBalancerIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_load_balancer_ips: Vec<ServiceCidr>,
    /// Named communities, referenced from `prefixAdvertisements`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<Community>,
    /// Communities to attach to announcements of given prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_advertisements: Vec<PrefixAdvertisement>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct ServiceCidr {
    #[schemars(length(max = 43))]
    pub cidr: String,
}

/// A named BGP community: standard `aa:nn` (two 16-bit numbers) or large
/// `aa:nn:mm` (three 32-bit numbers).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Community {
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    #[schemars(regex(pattern = r"^[0-9]+:[0-9]+(:[0-9]+)?$"))]
    pub value: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct PrefixAdvertisement {
    #[schemars(length(max = 43))]
    pub cidr: String,
    /// Community names from `communities`, or literal `aa:nn` / `aa:nn:mm` values.
    #[serde(default)]
    pub communities: Vec<String>,
}

/// A parsed community value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CommunityValue {
    Standard(u16, u16),
    Large(u32, u32, u32),
}

impl CommunityValue {
    pub fn parse(s: &str) -> Result<CommunityValue, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = || {
            format!(
                "{s:?} is not a community: allowed aa:nn (each 0..=65535) or aa:nn:mm (each 0..=4294967295)"
            )
        };
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !parts.iter().all(|p| digits(p)) {
            return Err(bad());
        }
        match parts.as_slice() {
            [a, b] => Ok(CommunityValue::Standard(
                a.parse().map_err(|_| bad())?,
                b.parse().map_err(|_| bad())?,
            )),
            [a, b, c] => Ok(CommunityValue::Large(
                a.parse().map_err(|_| bad())?,
                b.parse().map_err(|_| bad())?,
                c.parse().map_err(|_| bad())?,
            )),
            _ => Err(bad()),
        }
    }
}

/// `BGPConfiguration` with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBgpConfig {
    pub as_number: u32,
    pub node_to_node_mesh: bool,
    pub listen_port: u16,
    pub node_mesh_max_restart_time: std::time::Duration,
}

impl ResolvedBgpConfig {
    pub fn from_spec(s: &BGPConfigurationSpec) -> ResolvedBgpConfig {
        ResolvedBgpConfig {
            as_number: s.as_number.unwrap_or(DEFAULT_AS_NUMBER),
            node_to_node_mesh: s.node_to_node_mesh_enabled.unwrap_or(true),
            listen_port: s.listen_port.unwrap_or(DEFAULT_BGP_PORT),
            node_mesh_max_restart_time: s
                .node_mesh_max_restart_time
                .map(std::time::Duration::from)
                .unwrap_or(DEFAULT_MAX_RESTART_TIME),
        }
    }
}

pub fn validate_bgp_configuration(c: &BGPConfiguration) -> Result<(), ValidationError> {
    let mut p = Problems::new(
        "BGPConfiguration",
        c.metadata.name.clone().unwrap_or_default(),
    );
    crate::resources::check_singleton_name(&mut p, &c.metadata);
    let s = &c.spec;
    if s.as_number == Some(0) {
        p.add(
            "spec.asNumber",
            format!("0 is not an AS number: allowed {AS_RANGE}"),
        );
    }
    if s.listen_port == Some(0) {
        p.add("spec.listenPort", "0 is not a port: allowed 1..=65535");
    }
    if let Some(d) = s.node_mesh_max_restart_time {
        crate::resources::check_duration(
            &mut p,
            "spec.nodeMeshMaxRestartTime",
            d,
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(4095),
        );
    }
    for (field, list) in [
        ("spec.serviceClusterIPs", &s.service_cluster_ips),
        ("spec.serviceExternalIPs", &s.service_external_ips),
        ("spec.serviceLoadBalancerIPs", &s.service_load_balancer_ips),
    ] {
        for (i, c) in list.iter().enumerate() {
            if let Err(e) = Cidr::parse_strict(&c.cidr) {
                p.add(format!("{field}[{i}].cidr"), e.to_string());
            }
        }
    }
    let mut names = BTreeSet::new();
    for (i, c) in s.communities.iter().enumerate() {
        if c.name.is_empty() {
            p.add(format!("spec.communities[{i}].name"), "must not be empty");
        } else if !names.insert(c.name.as_str()) {
            p.add(
                format!("spec.communities[{i}].name"),
                format!("{:?} is defined twice", c.name),
            );
        }
        if let Err(e) = CommunityValue::parse(&c.value) {
            p.add(format!("spec.communities[{i}].value"), e);
        }
    }
    for (i, adv) in s.prefix_advertisements.iter().enumerate() {
        if let Err(e) = Cidr::parse_strict(&adv.cidr) {
            p.add(
                format!("spec.prefixAdvertisements[{i}].cidr"),
                e.to_string(),
            );
        }
        for (j, c) in adv.communities.iter().enumerate() {
            if !names.contains(c.as_str()) && CommunityValue::parse(c).is_err() {
                p.add(
                    format!("spec.prefixAdvertisements[{i}].communities[{j}]"),
                    format!(
                        "{c:?} is neither a name from spec.communities nor a value aa:nn / aa:nn:mm"
                    ),
                );
            }
        }
    }
    p.finish()
}

// Where the local end of a session binds (plain comment: see EncapMode).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum SourceAddress {
    /// Use the node's address as the source (default).
    #[default]
    UseNodeIP,
    /// Let the kernel choose.
    #[serde(rename = "None")]
    Kernel,
}

// What next hop to put on routes sent to the peer (plain comment: see EncapMode).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum NextHopMode {
    /// Self for eBGP, unchanged for iBGP (BGP's normal behaviour).
    #[default]
    Auto,
    /// Always this node.
    #[serde(rename = "Self")]
    SelfAddress,
    /// Never change the next hop.
    Keep,
}

/// A reference to a key of a Secret in the agent's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A TCP-MD5 password for the session, from a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BGPPassword {
    pub secret_key_ref: SecretKeyRef,
}

/// A BGP peering: which nodes (`node` / `nodeSelector`, default all) peer with
/// which peers (`peerIP` with `asNumber`, or other Margay nodes picked by
/// `peerSelector`, e.g. route reflectors).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[kube(
    group = "margay.dev",
    version = "v1",
    kind = "BGPPeer",
    plural = "bgppeers",
    doc = "A BGP peering between Margay nodes and a router or other nodes.",
    derive = "PartialEq",
    printcolumn(name = "PeerIP", type_ = "string", json_path = ".spec.peerIP"),
    printcolumn(name = "AS", type_ = "integer", json_path = ".spec.asNumber"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(
        name = "NodeSelector",
        type_ = "string",
        json_path = ".spec.nodeSelector",
        priority = 1
    ),
    printcolumn(
        name = "PeerSelector",
        type_ = "string",
        json_path = ".spec.peerSelector",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.peerIP) != has(self.peerSelector)", "message": "set exactly one of peerIP and peerSelector"},
    {"rule": "!(has(self.node) && has(self.nodeSelector))", "message": "set at most one of node and nodeSelector"},
    {"rule": "!has(self.peerIP) || has(self.asNumber)", "message": "asNumber is required with peerIP"},
    {"rule": "!has(self.peerSelector) || !has(self.asNumber)", "message": "asNumber must not be set with peerSelector: the selected nodes' AS is used"}
]))]
pub struct BGPPeerSpec {
    /// Only this node peers (default: all nodes, or `nodeSelector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub node: Option<String>,
    /// Only nodes matching this selector peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub node_selector: Option<String>,
    /// The peer's address, optionally with a port: `192.0.2.1`,
    /// `192.0.2.1:1790`, `fd00::1` or `[fd00::1]:1790`.
    #[serde(default, rename = "peerIP", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 47))]
    pub peer_ip: Option<String>,
    /// Peer with the Margay nodes matching this selector instead of `peerIP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub peer_selector: Option<String>,
    /// The peer's AS, 1..4294967295. Required with `peerIP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4294967295u32))]
    pub as_number: Option<u32>,
    /// TCP-MD5 password from a Secret in the agent's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<BGPPassword>,
    /// Source address of the session (default UseNodeIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<SourceAddress>,
    /// GTSM (RFC 5082): accept the peer only this many hops away, 1..255.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 255))]
    pub ttl_security: Option<u8>,
    /// Graceful-restart time to advertise (default 120s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::resources::DURATION_PATTERN))]
    pub max_restart_time: Option<Duration>,
    /// Keepalive interval (default 30s; the hold time is three times it), 1s..21845s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::resources::DURATION_PATTERN))]
    pub keepalive_time: Option<Duration>,
    /// Next hop on routes sent to this peer (default Auto).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_mode: Option<NextHopMode>,
    /// Tear the session down when the peer sends more prefixes than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_prefixes: Option<u32>,
}

/// `peerIP` parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddress {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl PeerAddress {
    /// Parse `ip`, `ipv4:port` or `[ipv6]:port`.
    pub fn parse(s: &str) -> Result<PeerAddress, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(PeerAddress { ip, port: None });
        }
        match s.parse::<SocketAddr>() {
            Ok(sa) if sa.port() != 0 => Ok(PeerAddress {
                ip: sa.ip(),
                port: Some(sa.port()),
            }),
            Ok(_) => Err(format!("{s:?}: port 0 is not allowed: allowed 1..=65535")),
            Err(_) => Err(format!(
                "{s:?} is not a peer address: allowed IPv4, IPv4:port, IPv6 or [IPv6]:port"
            )),
        }
    }

    /// The address to connect to, with `default_port` when none was given.
    pub fn socket_addr(&self, default_port: u16) -> SocketAddr {
        SocketAddr::new(self.ip, self.port.unwrap_or(default_port))
    }
}

pub fn validate_bgp_peer(peer: &BGPPeer) -> Result<(), ValidationError> {
    let mut p = Problems::new("BGPPeer", peer.metadata.name.clone().unwrap_or_default());
    crate::resources::check_object_name(&mut p, &peer.metadata);
    let s = &peer.spec;
    match (&s.peer_ip, &s.peer_selector) {
        (None, None) => p.add("spec.peerIP", "set exactly one of peerIP and peerSelector"),
        (Some(_), Some(_)) => p.add(
            "spec.peerSelector",
            "set exactly one of peerIP and peerSelector",
        ),
        _ => {}
    }
    if let Some(ip) = &s.peer_ip {
        if let Err(e) = PeerAddress::parse(ip) {
            p.add("spec.peerIP", e);
        }
        if s.as_number.is_none() {
            p.add(
                "spec.asNumber",
                format!("required with peerIP: allowed {AS_RANGE}"),
            );
        }
    }
    if s.peer_selector.is_some() && s.as_number.is_some() {
        p.add(
            "spec.asNumber",
            "must not be set with peerSelector: the selected nodes' AS is used",
        );
    }
    if s.as_number == Some(0) {
        p.add(
            "spec.asNumber",
            format!("0 is not an AS number: allowed {AS_RANGE}"),
        );
    }
    if s.node.is_some() && s.node_selector.is_some() {
        p.add(
            "spec.nodeSelector",
            "set at most one of node and nodeSelector",
        );
    }
    if let Some(n) = &s.node
        && !crate::names::is_dns_subdomain(n)
    {
        p.add(
            "spec.node",
            format!("{n:?} is not a node name (DNS subdomain)"),
        );
    }
    for (field, sel) in [
        ("spec.nodeSelector", &s.node_selector),
        ("spec.peerSelector", &s.peer_selector),
    ] {
        if let Some(sel) = sel
            && let Err(e) = Selector::parse(sel)
        {
            p.add(field, e.to_string());
        }
    }
    if let Some(pw) = &s.password {
        if pw.secret_key_ref.name.is_empty() {
            p.add("spec.password.secretKeyRef.name", "must not be empty");
        }
        if pw.secret_key_ref.key.is_empty() {
            p.add("spec.password.secretKeyRef.key", "must not be empty");
        }
    }
    if s.ttl_security == Some(0) {
        p.add("spec.ttlSecurity", "0 hops is meaningless: allowed 1..=255");
    }
    if let Some(d) = s.keepalive_time {
        // Hold time (3 x keepalive) is a 16-bit count of seconds in OPEN.
        crate::resources::check_duration(
            &mut p,
            "spec.keepaliveTime",
            d,
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(21845),
        );
    }
    if let Some(d) = s.max_restart_time {
        // The restart time is a 12-bit field of the graceful-restart capability.
        crate::resources::check_duration(
            &mut p,
            "spec.maxRestartTime",
            d,
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(4095),
        );
    }
    if s.max_prefixes == Some(0) {
        p.add(
            "spec.maxPrefixes",
            "0 would drop every session: allowed 1..=4294967295 or unset",
        );
    }
    p.finish()
}
