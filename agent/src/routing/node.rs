//! What routing needs to know about a Node, read from its object: its
//! addresses (the `margay.dev/ipv4Address` / `ipv6Address` annotations, else
//! the status InternalIPs), AS override, route-reflector cluster id, labels.
//! Pure: the annotations are the contract between agents.

use crate::calc::node_address::node_address;
use k8s_openapi::api::core::v1::Node;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use crate::calc::node_address::{
    ANNOTATION_IPV4_ADDRESS as ANN_IPV4, ANNOTATION_IPV6_ADDRESS as ANN_IPV6,
};
pub const ANN_AS: &str = "margay.dev/asNumber";
pub const ANN_RR_CLUSTER_ID: &str = "margay.dev/routeReflectorClusterID";
pub const ANN_AGENT_VERSION: &str = "margay.dev/agent-version";
/// Label set on route reflectors, so `BGPPeer.peerSelector` can pick them.
pub const LABEL_RR: &str = "margay.dev/route-reflector";

/// An address with the prefix length of its interface (`None`: unknown,
/// e.g. taken from the Node's status; treat as "another subnet").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IfAddr<A> {
    pub addr: A,
    pub prefix_len: Option<u8>,
}

impl<A: std::fmt::Display> std::fmt::Display for IfAddr<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.prefix_len {
            Some(p) => write!(f, "{}/{p}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// A node as routing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ipv4: Option<IfAddr<Ipv4Addr>>,
    pub ipv6: Option<IfAddr<Ipv6Addr>>,
    /// Per-node AS override.
    pub as_number: Option<u32>,
    /// Set when the node is a route reflector.
    pub rr_cluster_id: Option<Ipv4Addr>,
}

impl NodeInfo {
    pub fn from_node(node: &Node) -> NodeInfo {
        let ann = node.metadata.annotations.clone().unwrap_or_default();
        let ipv4 = node_address(node, true).and_then(|a| match a.addr {
            IpAddr::V4(addr) => Some(IfAddr {
                addr,
                prefix_len: a.prefix,
            }),
            IpAddr::V6(_) => None,
        });
        let ipv6 = node_address(node, false).and_then(|a| match a.addr {
            IpAddr::V6(addr) => Some(IfAddr {
                addr,
                prefix_len: a.prefix,
            }),
            IpAddr::V4(_) => None,
        });
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            ipv4,
            ipv6,
            as_number: ann.get(ANN_AS).and_then(|s| s.trim().parse().ok()),
            rr_cluster_id: ann
                .get(ANN_RR_CLUSTER_ID)
                .and_then(|s| s.trim().parse().ok()),
        }
    }

    /// The address other nodes peer with (IPv4 first, as Calico's mesh).
    pub fn peering_address(&self) -> Option<IpAddr> {
        self.ipv4
            .map(|a| IpAddr::V4(a.addr))
            .or(self.ipv6.map(|a| IpAddr::V6(a.addr)))
    }

    pub fn is_route_reflector(&self) -> bool {
        self.rr_cluster_id.is_some()
    }

    /// The node's addresses, for "is this next hop a node" questions.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let mut v = Vec::new();
        if let Some(a) = self.ipv4 {
            v.push(IpAddr::V4(a.addr));
        }
        if let Some(a) = self.ipv6 {
            v.push(IpAddr::V6(a.addr));
        }
        v
    }
}

/// What this agent records on its own Node (annotations, and labels).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Registration {
    pub ipv4: Option<IfAddr<Ipv4Addr>>,
    pub ipv6: Option<IfAddr<Ipv6Addr>>,
    pub as_number: Option<u32>,
    pub rr_cluster_id: Option<Ipv4Addr>,
}

impl Registration {
    /// The JSON merge patch of the Node's metadata: only our keys, a `null`
    /// removing one we no longer want (others' keys are never touched).
    /// With `rr_flag` false the route-reflector keys are left as they are:
    /// an administrator may set them on the Node (Calico's way).
    pub fn merge_patch(&self, rr_flag: bool) -> serde_json::Value {
        let opt = |v: Option<String>| v.map_or(serde_json::Value::Null, serde_json::Value::from);
        let mut p = serde_json::json!({
            "metadata": {
                "annotations": {
                    ANN_IPV4: opt(self.ipv4.map(|a| a.to_string())),
                    ANN_IPV6: opt(self.ipv6.map(|a| a.to_string())),
                    ANN_AS: opt(self.as_number.map(|a| a.to_string())),
                    ANN_RR_CLUSTER_ID: opt(self.rr_cluster_id.map(|a| a.to_string())),
                    ANN_AGENT_VERSION: env!("CARGO_PKG_VERSION"),
                },
                "labels": {
                    LABEL_RR: if self.rr_cluster_id.is_some() {
                        serde_json::Value::from("true")
                    } else {
                        serde_json::Value::Null
                    },
                },
            }
        });
        if self.as_number.is_none() {
            // Not overridden by a flag: an annotation set by hand stays.
            if let Some(a) = p["metadata"]["annotations"].as_object_mut() {
                a.remove(ANN_AS);
            }
        }
        if !rr_flag {
            if let Some(a) = p["metadata"]["annotations"].as_object_mut() {
                a.remove(ANN_RR_CLUSTER_ID);
            }
            if let Some(m) = p["metadata"].as_object_mut() {
                m.remove("labels");
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).expect("node")
    }

    #[test]
    fn annotations_win_and_status_internal_ip_is_the_fallback_without_a_prefix() {
        let n = node(json!({
            "metadata": {"name": "n1", "annotations": {
                ANN_IPV4: "10.0.0.1/24", ANN_AS: "65001", ANN_RR_CLUSTER_ID: "1.0.0.1"}},
            "status": {"addresses": [
                {"type": "InternalIP", "address": "10.9.9.9"},
                {"type": "InternalIP", "address": "fd00::9"}]}
        }));
        let i = NodeInfo::from_node(&n);
        assert_eq!(
            i.ipv4.map(|a| a.to_string()).as_deref(),
            Some("10.0.0.1/24")
        );
        assert_eq!(i.ipv6.map(|a| a.to_string()).as_deref(), Some("fd00::9"));
        assert_eq!(i.as_number, Some(65001));
        assert!(i.is_route_reflector());
        assert_eq!(i.peering_address(), Some("10.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn registration_patch_sets_ours_and_clears_what_is_no_longer_true() {
        let r = Registration {
            ipv4: Some(IfAddr {
                addr: "10.0.0.2".parse().expect("ip"),
                prefix_len: Some(24),
            }),
            ..Default::default()
        };
        let p = r.merge_patch(true);
        assert_eq!(p["metadata"]["annotations"][ANN_IPV4], "10.0.0.2/24");
        let ann = p["metadata"]["annotations"].as_object().expect("map");
        assert!(
            ann[ANN_RR_CLUSTER_ID].is_null(),
            "a former reflector stops being one"
        );
        assert!(p["metadata"]["labels"][LABEL_RR].is_null());
        // Without the flag the administrator's keys are left alone.
        let p = r.merge_patch(false);
        let ann = p["metadata"]["annotations"].as_object().expect("map");
        assert!(!ann.contains_key(ANN_RR_CLUSTER_ID));
        assert!(p["metadata"].get("labels").is_none());
        let rr = Registration {
            rr_cluster_id: Some("1.1.1.1".parse().expect("ip")),
            ..r
        };
        assert_eq!(rr.merge_patch(true)["metadata"]["labels"][LABEL_RR], "true");
    }
}
