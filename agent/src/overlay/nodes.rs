//! What overlay needs to know of each node, from its `Node` object (pure):
//! its addresses (with prefix length, from routing's annotations, else the
//! status InternalIP without one) and its VXLAN tunnel endpoint.

use super::encap::NodeAddr;
use crate::calc::node_address::node_address;
use k8s_openapi::api::core::v1::Node;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

pub use crate::calc::node_address::{ANNOTATION_IPV4_ADDRESS, ANNOTATION_IPV6_ADDRESS};
pub const ANNOTATION_VXLAN_MAC: &str = "margay.dev/vxlanTunnelMac";
pub const ANNOTATION_VXLAN_ADDR: &str = "margay.dev/vxlanTunnelAddr";
pub const ANNOTATION_VXLAN_MAC_V6: &str = "margay.dev/vxlanTunnelMacV6";
pub const ANNOTATION_VXLAN_ADDR_V6: &str = "margay.dev/vxlanTunnelAddrV6";
pub const ANNOTATION_IPIP_ADDR: &str = "margay.dev/ipipTunnelAddr";

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub fn parse(s: &str) -> Option<Mac> {
        let mut out = [0u8; 6];
        let mut parts = s.trim().split(':');
        for b in &mut out {
            let p = parts.next()?;
            if p.len() != 2 {
                return None;
            }
            *b = u8::from_str_radix(p, 16).ok()?;
        }
        parts.next().is_none().then_some(Mac(out))
    }

    /// A stable, locally administered unicast MAC for `node`'s VTEP: the
    /// same node name always gives the same MAC (a restarted agent, or a
    /// rebuilt device, keeps the peers' FDB entries valid).
    pub fn for_node(node: &str, salt: u8) -> Mac {
        // FNV-1a: stable across Rust versions, unlike DefaultHasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in node.bytes().chain([salt]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let b = h.to_be_bytes();
        // Locally administered (bit 1) and unicast (bit 0 clear).
        Mac([(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// A node's VXLAN tunnel endpoint (one per family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vtep {
    pub addr: IpAddr,
    pub mac: Mac,
}

/// One node as overlay sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    pub name: String,
    pub ipv4: Option<NodeAddr>,
    pub ipv6: Option<NodeAddr>,
    pub vtep_v4: Option<Vtep>,
    pub vtep_v6: Option<Vtep>,
}

impl NodeInfo {
    /// From a `Node` object; unparsable annotations are ignored (logged by
    /// the caller that sees them change), never fatal.
    pub fn from_node(node: &Node) -> NodeInfo {
        let name = node.metadata.name.clone().unwrap_or_default();
        let ann = node.metadata.annotations.clone().unwrap_or_default();
        NodeInfo {
            ipv4: node_address(node, true),
            ipv6: node_address(node, false),
            vtep_v4: vtep(&ann, ANNOTATION_VXLAN_ADDR, ANNOTATION_VXLAN_MAC, true),
            vtep_v6: vtep(
                &ann,
                ANNOTATION_VXLAN_ADDR_V6,
                ANNOTATION_VXLAN_MAC_V6,
                false,
            ),
            name,
        }
    }

    pub fn addr(&self, v4: bool) -> Option<&NodeAddr> {
        if v4 {
            self.ipv4.as_ref()
        } else {
            self.ipv6.as_ref()
        }
    }

    pub fn vtep(&self, v4: bool) -> Option<&Vtep> {
        if v4 {
            self.vtep_v4.as_ref()
        } else {
            self.vtep_v6.as_ref()
        }
    }
}

fn vtep(ann: &BTreeMap<String, String>, addr_key: &str, mac_key: &str, v4: bool) -> Option<Vtep> {
    let addr: IpAddr = ann.get(addr_key)?.trim().parse().ok()?;
    let mac = Mac::parse(ann.get(mac_key)?)?;
    (addr.is_ipv4() == v4).then_some(Vtep { addr, mac })
}

/// Every node but ours, found by name or by address (BGP gives next hops,
/// which are node addresses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeDirectory {
    by_name: BTreeMap<String, NodeInfo>,
    by_addr: BTreeMap<IpAddr, String>,
}

impl NodeDirectory {
    pub fn new(nodes: impl IntoIterator<Item = NodeInfo>) -> NodeDirectory {
        let mut d = NodeDirectory::default();
        for n in nodes {
            for a in [n.ipv4, n.ipv6].into_iter().flatten() {
                d.by_addr.insert(a.addr, n.name.clone());
            }
            d.by_name.insert(n.name.clone(), n);
        }
        d
    }

    pub fn by_addr(&self, ip: IpAddr) -> Option<&NodeInfo> {
        self.by_addr.get(&ip).and_then(|n| self.by_name.get(n))
    }

    pub fn get(&self, name: &str) -> Option<&NodeInfo> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &NodeInfo> {
        self.by_name.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn node(name: &str, ann: &[(&str, &str)], internal: &[&str]) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "annotations": ann.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            },
            "status": {
                "addresses": internal.iter().map(|a| serde_json::json!({"type": "InternalIP", "address": a})).collect::<Vec<_>>(),
            }
        }))
        .expect("node json")
    }

    #[test]
    fn mac_round_trips_and_node_macs_are_stable_local_unicast() {
        let m = Mac::parse("02:ab:00:10:ff:01").expect("mac");
        assert_eq!(m.to_string(), "02:ab:00:10:ff:01");
        assert_eq!(Mac::parse("02:ab:00:10:ff"), None);
        assert_eq!(Mac::parse("02:ab:00:10:ff:01:02"), None);
        assert_eq!(Mac::parse("02:ab:00:10:ff:zz"), None);
        let a = Mac::for_node("node-1", 4);
        assert_eq!(a, Mac::for_node("node-1", 4));
        assert_ne!(a, Mac::for_node("node-2", 4));
        assert_ne!(a, Mac::for_node("node-1", 6));
        assert_eq!(a.0[0] & 0x03, 0x02, "locally administered unicast");
    }

    #[test]
    fn annotations_win_over_internal_ip_which_has_no_prefix() {
        let n = NodeInfo::from_node(&node(
            "n1",
            &[
                (ANNOTATION_IPV4_ADDRESS, "10.0.1.1/24"),
                (ANNOTATION_VXLAN_ADDR, "10.244.1.0"),
                (ANNOTATION_VXLAN_MAC, "02:00:00:00:00:01"),
            ],
            &["10.0.1.9", "fd00:11::1"],
        ));
        assert_eq!(n.ipv4, NodeAddr::parse("10.0.1.1/24"));
        assert_eq!(n.ipv6, NodeAddr::parse("fd00:11::1"));
        assert_eq!(
            n.vtep_v4,
            Some(Vtep {
                addr: "10.244.1.0".parse().expect("ip"),
                mac: Mac([2, 0, 0, 0, 0, 1])
            })
        );
        assert_eq!(n.vtep_v6, None);
    }

    #[test]
    fn bad_annotations_are_ignored() {
        let n = NodeInfo::from_node(&node(
            "n1",
            &[
                (ANNOTATION_IPV4_ADDRESS, "fd00::1/64"),
                (ANNOTATION_VXLAN_ADDR, "10.244.1.0"),
                (ANNOTATION_VXLAN_MAC, "not a mac"),
            ],
            &["10.0.1.9"],
        ));
        assert_eq!(n.ipv4, NodeAddr::parse("10.0.1.9"), "wrong family ignored");
        assert_eq!(n.vtep_v4, None);
    }

    #[test]
    fn directory_finds_nodes_by_any_address() {
        let d = NodeDirectory::new([
            NodeInfo::from_node(&node("a", &[], &["10.0.1.1", "fd00::1"])),
            NodeInfo::from_node(&node("b", &[], &["10.0.1.2"])),
        ]);
        assert_eq!(
            d.by_addr("fd00::1".parse().expect("ip"))
                .map(|n| n.name.as_str()),
            Some("a")
        );
        assert_eq!(
            d.by_addr("10.0.1.2".parse().expect("ip"))
                .map(|n| n.name.as_str()),
            Some("b")
        );
        assert!(d.by_addr("10.0.1.3".parse().expect("ip")).is_none());
    }
}
