//! Who this node peers with, from (nodes, BGPConfiguration, BGPPeers, own
//! node): a pure function, so the agent applies its result as a diff and
//! sessions whose settings did not change are never touched.
//!
//! As Calico: the node-to-node mesh (every other node) unless
//! `nodeToNodeMeshEnabled: false`; plus every `BGPPeer` that applies to this
//! node (no `node`/`nodeSelector`: global; else node specific). A `BGPPeer`
//! with `peerSelector` is symmetric: the nodes it applies to peer with the
//! selected nodes *and* the selected nodes peer back with them — that is how
//! route reflectors (selected by the `margay.dev/route-reflector` label) get
//! their clients. A route reflector treats a peer node as its client unless
//! that node is a reflector of the same cluster id.

use crate::routing::node::NodeInfo;
use margay_api::resources::bgp::{ResolvedBgpConfig, SecretKeyRef, SourceAddress};
use margay_api::{BGPPeer, PeerAddress, Selector};
use margay_bgp::{AddressFamily, PeerConfig, Prefix, PrefixFilter};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Why we peer with someone (the `type` column of `margayctl node status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum PeerKind {
    #[serde(rename = "node-to-node mesh")]
    Mesh,
    #[serde(rename = "global")]
    Global,
    #[serde(rename = "node specific")]
    NodeSpecific,
    /// A route reflector this node is a client of.
    #[serde(rename = "route reflector")]
    RouteReflector,
    /// A client of this node (a route reflector).
    #[serde(rename = "route reflector client")]
    RouteReflectorClient,
}

impl PeerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerKind::Mesh => "node-to-node mesh",
            PeerKind::Global => "global",
            PeerKind::NodeSpecific => "node specific",
            PeerKind::RouteReflector => "route reflector",
            PeerKind::RouteReflectorClient => "route reflector client",
        }
    }
}

/// One session this node wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPeer {
    pub config: PeerConfig,
    pub kind: PeerKind,
    /// The node it is, when it is one (for withdrawing a deleted node).
    pub node: Option<String>,
}

/// The peers, and what could not be honoured (named by object and field).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPlan {
    pub peers: BTreeMap<IpAddr, DesiredPeer>,
    pub problems: Vec<String>,
}

/// Everything [`plan_peers`] looks at.
pub struct PeerInputs<'a> {
    pub me: &'a NodeInfo,
    pub nodes: &'a [NodeInfo],
    pub config: &'a ResolvedBgpConfig,
    pub bgp_peers: &'a [BGPPeer],
    /// Secret values by (secret name, key).
    pub secrets: &'a BTreeMap<(String, String), String>,
    /// Prefixes we may export to eBGP peers (the exported pools).
    pub export_pools: &'a [Prefix],
}

/// The secrets `bgp_peers` refer to (to fetch before planning).
pub fn secret_refs(bgp_peers: &[BGPPeer]) -> Vec<SecretKeyRef> {
    let mut v: Vec<SecretKeyRef> = bgp_peers
        .iter()
        .filter_map(|p| p.spec.password.as_ref().map(|p| p.secret_key_ref.clone()))
        .collect();
    v.sort_by(|a, b| (&a.name, &a.key).cmp(&(&b.name, &b.key)));
    v.dedup();
    v
}

fn local_as(inputs: &PeerInputs) -> u32 {
    inputs.me.as_number.unwrap_or(inputs.config.as_number)
}

/// A session with another Margay node.
fn node_peer(inputs: &PeerInputs, other: &NodeInfo, kind: PeerKind) -> Option<DesiredPeer> {
    let me = inputs.me;
    let address = other.peering_address()?;
    let mut c = PeerConfig::new(address, other.as_number.unwrap_or(inputs.config.as_number));
    c.port = inputs.config.listen_port;
    c.description = other.name.clone();
    // Our end of the session: our address of the same family.
    c.source_address = match address {
        IpAddr::V4(_) => me.ipv4.map(|a| IpAddr::V4(a.addr)),
        IpAddr::V6(_) => me.ipv6.map(|a| IpAddr::V6(a.addr)),
    };
    if address.is_ipv4() {
        c.ipv6_next_hop = me.ipv6.map(|a| a.addr);
    }
    let reflects = me.rr_cluster_id.is_some() && other.rr_cluster_id != me.rr_cluster_id;
    c.route_reflector_client = reflects;
    let kind = if reflects {
        PeerKind::RouteReflectorClient
    } else if other.is_route_reflector() && !me.is_route_reflector() {
        PeerKind::RouteReflector
    } else {
        kind
    };
    if c.asn != local_as(inputs) {
        // Nodes in different ASes: send them our pools only (RFC 8212
        // would otherwise send nothing) and take theirs.
        c.export = Some(PrefixFilter::accept_within(
            inputs.export_pools.iter().copied(),
        ));
        c.import = Some(PrefixFilter::accept_all());
    }
    Some(DesiredPeer {
        config: c,
        kind,
        node: Some(other.name.clone()),
    })
}

fn applies_to(p: &BGPPeer, node: &NodeInfo) -> Result<bool, String> {
    let name = p.metadata.name.as_deref().unwrap_or("");
    match (&p.spec.node, &p.spec.node_selector) {
        (Some(n), _) => Ok(*n == node.name),
        (None, Some(sel)) => Selector::parse(sel)
            .map(|s| s.matches(&node.labels))
            .map_err(|e| format!("BGPPeer {name} field spec.nodeSelector: {e}")),
        (None, None) => Ok(true),
    }
}

/// The sessions this node wants.
pub fn plan_peers(inputs: &PeerInputs) -> PeerPlan {
    let mut plan = PeerPlan::default();
    let me = inputs.me;
    let others = || inputs.nodes.iter().filter(move |n| n.name != me.name);
    if inputs.config.node_to_node_mesh {
        for n in others() {
            if let Some(p) = node_peer(inputs, n, PeerKind::Mesh) {
                plan.peers.entry(p.config.address).or_insert(p);
            }
        }
    }
    let mut bgp_peers: Vec<&BGPPeer> = inputs.bgp_peers.iter().collect();
    bgp_peers.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for bp in bgp_peers {
        let name = bp.metadata.name.clone().unwrap_or_default();
        let s = &bp.spec;
        let kind = if s.node.is_some() || s.node_selector.is_some() {
            PeerKind::NodeSpecific
        } else {
            PeerKind::Global
        };
        let mine = match applies_to(bp, me) {
            Ok(m) => m,
            Err(e) => {
                plan.problems.push(e);
                continue;
            }
        };
        if let Some(ip) = &s.peer_ip {
            if !mine {
                continue;
            }
            match external_peer(inputs, &name, bp, ip, kind) {
                Ok(p) => {
                    plan.peers.entry(p.config.address).or_insert(p);
                }
                Err(e) => plan.problems.push(e),
            }
            continue;
        }
        let Some(sel) = &s.peer_selector else {
            continue;
        };
        let sel = match Selector::parse(sel) {
            Ok(s) => s,
            Err(e) => {
                plan.problems
                    .push(format!("BGPPeer {name} field spec.peerSelector: {e}"));
                continue;
            }
        };
        for n in others() {
            // This node applies and n is selected, or the reverse.
            let forward = mine && sel.matches(&n.labels);
            let backward = sel.matches(&me.labels) && applies_to(bp, n).unwrap_or(false);
            if !(forward || backward) {
                continue;
            }
            if let Some(mut p) = node_peer(inputs, n, kind) {
                apply_common(&mut p.config, bp);
                plan.peers.entry(p.config.address).or_insert(p);
            }
        }
    }
    plan
}

/// Settings every BGPPeer may carry.
fn apply_common(c: &mut PeerConfig, bp: &BGPPeer) {
    let s = &bp.spec;
    if let Some(k) = s.keepalive_time {
        let k = std::time::Duration::from(k).as_secs().clamp(1, 21845) as u16;
        c.keepalive_time = Some(k);
        c.hold_time = k.saturating_mul(3);
    }
    if let Some(m) = s.max_prefixes {
        c.max_prefixes = Some(m);
    }
    if s.source_address == Some(SourceAddress::Kernel) {
        c.source_address = None;
    }
}

fn external_peer(
    inputs: &PeerInputs,
    name: &str,
    bp: &BGPPeer,
    ip: &str,
    kind: PeerKind,
) -> Result<DesiredPeer, String> {
    let s = &bp.spec;
    let addr =
        PeerAddress::parse(ip).map_err(|e| format!("BGPPeer {name} field spec.peerIP: {e}"))?;
    let asn = s
        .as_number
        .ok_or_else(|| format!("BGPPeer {name} field spec.asNumber: required with peerIP"))?;
    let me = inputs.me;
    let mut c = PeerConfig::new(addr.ip, asn);
    c.port = addr
        .port
        .unwrap_or(margay_api::resources::bgp::DEFAULT_BGP_PORT);
    c.description = format!("BGPPeer {name}");
    c.source_address = match addr.ip {
        IpAddr::V4(_) => me.ipv4.map(|a| IpAddr::V4(a.addr)),
        IpAddr::V6(_) => me.ipv6.map(|a| IpAddr::V6(a.addr)),
    };
    if addr.ip.is_ipv4() {
        c.ipv6_next_hop = me.ipv6.map(|a| a.addr);
    }
    apply_common(&mut c, bp);
    match s.ttl_security {
        None => {}
        Some(1) => c.ttl_security = true,
        Some(n) => {
            return Err(format!(
                "BGPPeer {name} field spec.ttlSecurity: {n} hops is not supported, only 1 (directly connected)"
            ));
        }
    }
    if let Some(pw) = &s.password {
        let r = &pw.secret_key_ref;
        let value = inputs
            .secrets
            .get(&(r.name.clone(), r.key.clone()))
            .ok_or_else(|| {
                format!(
                    "BGPPeer {name} field spec.password.secretKeyRef: secret {} key {} not found",
                    r.name, r.key
                )
            })?;
        c.md5_password = Some(value.clone());
    }
    if asn != local_as(inputs) {
        // eBGP: export our pools, take everything (RFC 8212 defaults would
        // exchange nothing).
        c.export = Some(PrefixFilter::accept_within(
            inputs.export_pools.iter().copied(),
        ));
        c.import = Some(PrefixFilter::accept_all());
    }
    c.families = vec![AddressFamily::Ipv4Unicast, AddressFamily::Ipv6Unicast];
    Ok(DesiredPeer {
        config: c,
        kind,
        node: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::node::IfAddr;
    use margay_api::BGPPeerSpec;

    fn node(name: &str, ip: &str, rr: Option<&str>) -> NodeInfo {
        let mut labels = BTreeMap::new();
        if rr.is_some() {
            labels.insert(
                crate::routing::node::LABEL_RR.to_string(),
                "true".to_string(),
            );
        }
        NodeInfo {
            name: name.into(),
            labels,
            ipv4: Some(IfAddr {
                addr: ip.parse().expect("ip"),
                prefix_len: Some(24),
            }),
            ipv6: None,
            as_number: None,
            rr_cluster_id: rr.map(|r| r.parse().expect("id")),
        }
    }

    fn cfg(mesh: bool) -> ResolvedBgpConfig {
        ResolvedBgpConfig::from_spec(&margay_api::BGPConfigurationSpec {
            node_to_node_mesh_enabled: Some(mesh),
            ..Default::default()
        })
    }

    fn bgp_peer(name: &str, spec: BGPPeerSpec) -> BGPPeer {
        BGPPeer::new(name, spec)
    }

    fn plan(me: &NodeInfo, nodes: &[NodeInfo], mesh: bool, peers: &[BGPPeer]) -> PeerPlan {
        let secrets =
            BTreeMap::from([(("bgp".to_string(), "pw".to_string()), "s3cret".to_string())]);
        plan_peers(&PeerInputs {
            me,
            nodes,
            config: &cfg(mesh),
            bgp_peers: peers,
            secrets: &secrets,
            export_pools: &["10.244.0.0/16".parse().expect("prefix")],
        })
    }

    #[test]
    fn mesh_peers_with_every_other_node_over_ibgp() {
        let nodes = [
            node("a", "10.0.0.1", None),
            node("b", "10.0.0.2", None),
            node("c", "10.0.0.3", None),
        ];
        let p = plan(&nodes[0], &nodes, true, &[]);
        let addrs: Vec<String> = p.peers.keys().map(|a| a.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.2", "10.0.0.3"]);
        let b = &p.peers[&"10.0.0.2".parse::<IpAddr>().expect("ip")];
        assert_eq!(b.kind, PeerKind::Mesh);
        assert_eq!(b.config.asn, 64512);
        assert!(!b.config.route_reflector_client);
        assert_eq!(
            b.config.source_address,
            Some("10.0.0.1".parse().expect("ip"))
        );
        assert_eq!(b.node.as_deref(), Some("b"));
    }

    #[test]
    fn route_reflector_peer_selector_is_symmetric_and_rrs_of_one_cluster_are_not_clients() {
        let nodes = [
            node("rr1", "10.0.0.1", Some("1.0.0.1")),
            node("rr2", "10.0.0.2", Some("1.0.0.1")),
            node("c1", "10.0.0.3", None),
            node("c2", "10.0.0.4", None),
        ];
        let peers = [bgp_peer(
            "to-rrs",
            BGPPeerSpec {
                node_selector: Some("all()".into()),
                peer_selector: Some(format!("has({})", crate::routing::node::LABEL_RR)),
                ..Default::default()
            },
        )];
        // A client peers with both reflectors, not with the other client.
        let c1 = plan(&nodes[2], &nodes, false, &peers);
        let kinds: Vec<(String, PeerKind)> = c1
            .peers
            .values()
            .map(|p| (p.config.address.to_string(), p.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("10.0.0.1".to_string(), PeerKind::RouteReflector),
                ("10.0.0.2".to_string(), PeerKind::RouteReflector)
            ]
        );
        // A reflector reflects to both clients and peers plainly with rr2.
        let rr1 = plan(&nodes[0], &nodes, false, &peers);
        let got: Vec<(String, bool)> = rr1
            .peers
            .values()
            .map(|p| {
                (
                    p.config.address.to_string(),
                    p.config.route_reflector_client,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.2".to_string(), false),
                ("10.0.0.3".to_string(), true),
                ("10.0.0.4".to_string(), true)
            ]
        );
        assert!(c1.problems.is_empty() && rr1.problems.is_empty());
    }

    #[test]
    fn external_peers_get_password_ttl_and_ebgp_export_of_the_pools_only() {
        let nodes = [node("a", "10.0.0.1", None), node("b", "10.0.0.2", None)];
        let tor = bgp_peer(
            "tor",
            BGPPeerSpec {
                node: Some("a".into()),
                peer_ip: Some("10.0.0.254".into()),
                as_number: Some(65000),
                ttl_security: Some(1),
                max_prefixes: Some(100),
                password: Some(margay_api::resources::bgp::BGPPassword {
                    secret_key_ref: SecretKeyRef {
                        name: "bgp".into(),
                        key: "pw".into(),
                    },
                }),
                ..Default::default()
            },
        );
        let a = plan(&nodes[0], &nodes, true, std::slice::from_ref(&tor));
        let t = &a.peers[&"10.0.0.254".parse::<IpAddr>().expect("ip")];
        assert_eq!(t.kind, PeerKind::NodeSpecific);
        assert_eq!(t.config.md5_password.as_deref(), Some("s3cret"));
        assert!(t.config.ttl_security);
        assert_eq!(t.config.max_prefixes, Some(100));
        let export = t.config.export.as_ref().expect("export filter");
        assert_eq!(
            export.action(&"10.244.1.0/26".parse().expect("p")),
            margay_bgp::FilterAction::Accept
        );
        assert_eq!(
            export.action(&"192.168.0.0/24".parse().expect("p")),
            margay_bgp::FilterAction::Reject
        );
        assert_eq!(t.kind, PeerKind::NodeSpecific);
        // Keepalive sets the hold time to three times it; sourceAddress None
        // lets the kernel choose.
        let mut timed = tor.clone();
        timed.spec.keepalive_time = Some(kube::core::Duration::from(
            std::time::Duration::from_secs(10),
        ));
        timed.spec.source_address = Some(SourceAddress::Kernel);
        let a = plan(&nodes[0], &nodes, true, std::slice::from_ref(&timed));
        let t = &a.peers[&"10.0.0.254".parse::<IpAddr>().expect("ip")];
        assert_eq!(
            (t.config.keepalive_time, t.config.hold_time),
            (Some(10), 30)
        );
        assert_eq!(t.config.source_address, None);
        // More than one hop of TTL security cannot be honoured: said, skipped.
        let mut far = tor.clone();
        far.spec.ttl_security = Some(2);
        let a = plan(&nodes[0], &nodes, true, std::slice::from_ref(&far));
        assert_eq!(a.peers.len(), 1);
        assert!(
            a.problems[0].contains("spec.ttlSecurity"),
            "{:?}",
            a.problems
        );
        // Node b is not selected by `node: a`.
        let b = plan(&nodes[1], &nodes, true, std::slice::from_ref(&tor));
        assert_eq!(b.peers.len(), 1);
        // A missing secret is reported by object and field, the peer skipped.
        let mut bad = tor;
        bad.spec.password.as_mut().expect("pw").secret_key_ref.key = "nope".into();
        let a = plan(&nodes[0], &nodes, true, &[bad]);
        assert_eq!(a.peers.len(), 1);
        assert!(
            a.problems[0].contains("BGPPeer tor field spec.password"),
            "{:?}",
            a.problems
        );
    }
}
