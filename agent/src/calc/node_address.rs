//! A node's addresses as the agents publish them to each other: the
//! `margay.dev/ipv4Address` / `ipv6Address` annotations (address with the
//! prefix length of its interface, so peers can tell whether they share a
//! subnet), else the Node's status InternalIP (no prefix length known).
//! Routing (peers, next hops) and overlay (which subnet a node is in) both
//! read them through here.

use k8s_openapi::api::core::v1::Node;
use std::net::IpAddr;

pub const ANNOTATION_IPV4_ADDRESS: &str = "margay.dev/ipv4Address";
pub const ANNOTATION_IPV6_ADDRESS: &str = "margay.dev/ipv6Address";

/// A node's address with the prefix length of its interface, when known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeAddr {
    pub addr: IpAddr,
    /// `None`: learned without a prefix length (status InternalIP).
    pub prefix: Option<u8>,
}

impl NodeAddr {
    /// Parses `192.168.10.2/24` (with prefix) or a bare address (without).
    pub fn parse(s: &str) -> Option<NodeAddr> {
        let s = s.trim();
        match s.split_once('/') {
            Some((a, p)) => {
                let addr: IpAddr = a.parse().ok()?;
                let prefix: u8 = p.parse().ok()?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                (prefix <= max).then_some(NodeAddr {
                    addr,
                    prefix: Some(prefix),
                })
            }
            None => Some(NodeAddr {
                addr: s.parse().ok()?,
                prefix: None,
            }),
        }
    }
}

/// The Node's status InternalIPs, in order.
pub fn internal_ips(node: &Node) -> Vec<IpAddr> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|a| {
            a.iter()
                .filter(|a| a.type_ == "InternalIP")
                .filter_map(|a| a.address.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The node's address of one family: its annotation when it parses and is
/// of that family, else its first InternalIP of that family.
pub fn node_address(node: &Node, v4: bool) -> Option<NodeAddr> {
    let key = if v4 {
        ANNOTATION_IPV4_ADDRESS
    } else {
        ANNOTATION_IPV6_ADDRESS
    };
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .and_then(|s| NodeAddr::parse(s))
        .filter(|a| a.addr.is_ipv4() == v4)
        .or_else(|| {
            internal_ips(node)
                .into_iter()
                .find(|ip| ip.is_ipv4() == v4)
                .map(|addr| NodeAddr { addr, prefix: None })
        })
}
