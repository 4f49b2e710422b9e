//! The shape of a lab cluster, worked out from its size and topology without
//! touching the kernel: namespaces, bridges, links, addresses and routes.
//!
//! Addressing (the same in every lab; labs are isolated by namespaces):
//! - `l2`: one subnet `lan`, 10.0.0.0/24 and fd00:10::/64; node *i* is .*i*.
//! - `routed`: subnets `a` (10.0.1.0/24, fd00:11::/64) and `b` (10.0.2.0/24,
//!   fd00:12::/64); the first ⌈N/2⌉ nodes sit in `a`, the rest in `b`, so a
//!   3-node lab has two nodes that share a subnet and one that does not.
//! - The router namespace is .254 (`::254`) on every subnet, the nodes' default
//!   gateway, and hosts the API server on its first address, port 6443.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// The most nodes a lab holds (addresses are .1 to .N of a /24 below .254).
pub const MAX_NODES: usize = 200;

/// Port the API server listens on inside the lab.
pub const API_PORT: u16 = 6443;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    /// All nodes on one bridged subnet.
    L2,
    /// Nodes split across two subnets joined by a router.
    Routed,
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Topology::L2 => "l2",
            Topology::Routed => "routed",
        })
    }
}

/// One L2 segment of the fabric: a bridge in the fabric namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub name: String,
    /// Bridge in the fabric namespace.
    pub bridge: String,
    pub ipv4: Ipv4Addr,
    pub ipv4_prefix: u8,
    pub ipv6: Ipv6Addr,
    pub ipv6_prefix: u8,
    /// The router's addresses on this subnet (the default gateway).
    pub gateway_v4: Ipv4Addr,
    pub gateway_v6: Ipv6Addr,
    /// Router-side interface name (in the router namespace).
    pub router_if: String,
    /// Fabric-side end of the router's link.
    pub fabric_if: String,
}

impl Subnet {
    /// The host address `host` inside this subnet.
    pub fn host_v4(&self, host: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.ipv4.octets();
        Ipv4Addr::new(a, b, c, host)
    }

    pub fn host_v6(&self, host: u16) -> Ipv6Addr {
        let mut seg = self.ipv6.segments();
        seg[7] = host;
        Ipv6Addr::from(seg)
    }

    pub fn cidr_v4(&self) -> String {
        format!("{}/{}", self.ipv4, self.ipv4_prefix)
    }

    pub fn cidr_v6(&self) -> String {
        format!("{}/{}", self.ipv6, self.ipv6_prefix)
    }
}

/// One node: a namespace with `eth0` on a subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    /// Kubernetes node name (`node1`...).
    pub name: String,
    pub netns: String,
    /// Index into [`Plan::subnets`].
    pub subnet: usize,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    /// The node's link's end in the fabric namespace (named after the node).
    pub fabric_if: String,
}

/// Everything a lab consists of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub id: String,
    pub topology: Topology,
    pub fabric_netns: String,
    pub router_netns: String,
    pub subnets: Vec<Subnet>,
    pub nodes: Vec<NodePlan>,
}

/// Why a lab cannot be planned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("--nodes must be between 1 and {MAX_NODES}, got {0}")]
    NodeCount(usize),
    #[error("lab id must be 1 to 8 lowercase hex digits, got {0:?}")]
    BadId(String),
}

/// Prefix shared by every namespace of the lab `id`; `down` removes whatever
/// carries it, so a crashed `up` is still cleaned up.
pub fn netns_prefix(id: &str) -> String {
    format!("mlab-{id}-")
}

fn subnet(name: &str, third_octet: u8, v6_net: u16, bridge: &str) -> Subnet {
    let ipv4 = Ipv4Addr::new(10, 0, third_octet, 0);
    let ipv6 = Ipv6Addr::new(0xfd00, v6_net, 0, 0, 0, 0, 0, 0);
    let mut s = Subnet {
        name: name.to_string(),
        bridge: bridge.to_string(),
        ipv4,
        ipv4_prefix: 24,
        ipv6,
        ipv6_prefix: 64,
        gateway_v4: ipv4,
        gateway_v6: ipv6,
        router_if: format!("eth-{name}"),
        fabric_if: format!("rtr-{name}"),
    };
    s.gateway_v4 = s.host_v4(254);
    s.gateway_v6 = s.host_v6(0x254);
    s
}

/// Works out the lab `id` with `nodes` nodes in `topology`.
pub fn plan(id: &str, nodes: usize, topology: Topology) -> Result<Plan, PlanError> {
    if !(1..=MAX_NODES).contains(&nodes) {
        return Err(PlanError::NodeCount(nodes));
    }
    if id.is_empty()
        || id.len() > 8
        || !id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    {
        return Err(PlanError::BadId(id.to_string()));
    }
    let prefix = netns_prefix(id);
    let subnets = match topology {
        Topology::L2 => vec![subnet("lan", 0, 0x10, "br0")],
        Topology::Routed => vec![subnet("a", 1, 0x11, "br-a"), subnet("b", 2, 0x12, "br-b")],
    };
    let in_first = nodes.div_ceil(subnets.len());
    let nodes = (1..=nodes)
        .map(|i| {
            let subnet = if i <= in_first { 0 } else { 1 };
            let s = &subnets[subnet];
            let name = format!("node{i}");
            NodePlan {
                netns: format!("{prefix}{name}"),
                subnet,
                ipv4: s.host_v4(i as u8),
                ipv6: s.host_v6(i as u16),
                fabric_if: name.clone(),
                name,
            }
        })
        .collect();
    Ok(Plan {
        id: id.to_string(),
        topology,
        fabric_netns: format!("{prefix}fabric"),
        router_netns: format!("{prefix}router"),
        subnets,
        nodes,
    })
}

impl Plan {
    /// Every namespace of the lab, fabric first.
    pub fn namespaces(&self) -> Vec<&str> {
        let mut all = vec![self.fabric_netns.as_str(), self.router_netns.as_str()];
        all.extend(self.nodes.iter().map(|n| n.netns.as_str()));
        all
    }

    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn subnet_of(&self, node: &NodePlan) -> &Subnet {
        &self.subnets[node.subnet]
    }

    /// Where nodes reach the API server.
    pub fn api_address(&self) -> std::net::SocketAddr {
        (self.subnets[0].gateway_v4, API_PORT).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l2_puts_every_node_on_one_subnet() {
        let p = plan("abc123", 3, Topology::L2).unwrap();
        assert_eq!(p.subnets.len(), 1);
        let addrs: Vec<_> = p.nodes.iter().map(|n| n.ipv4.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert_eq!(p.nodes[2].ipv6.to_string(), "fd00:10::3");
        assert!(p.nodes.iter().all(|n| n.subnet == 0));
        assert_eq!(p.api_address().to_string(), "10.0.0.254:6443");
    }

    #[test]
    fn routed_splits_nodes_so_two_share_a_subnet_and_one_does_not() {
        let p = plan("abc123", 3, Topology::Routed).unwrap();
        let where_: Vec<_> = p
            .nodes
            .iter()
            .map(|n| (n.subnet, n.ipv4.to_string()))
            .collect();
        assert_eq!(
            where_,
            [
                (0, "10.0.1.1".into()),
                (0, "10.0.1.2".into()),
                (1, "10.0.2.3".into())
            ]
        );
        assert_eq!(p.subnets[1].gateway_v6.to_string(), "fd00:12::254");
        let p4 = plan("abc123", 4, Topology::Routed).unwrap();
        assert_eq!(p4.nodes.iter().filter(|n| n.subnet == 1).count(), 2);
    }

    #[test]
    fn names_are_prefixed_by_the_lab_id_and_fit_interface_limits() {
        let p = plan("abc123", MAX_NODES, Topology::Routed).unwrap();
        for ns in p.namespaces() {
            assert!(ns.starts_with("mlab-abc123-"), "{ns}");
        }
        // Linux interface names are at most 15 bytes.
        for n in &p.nodes {
            assert!(n.fabric_if.len() <= 15);
        }
        for s in &p.subnets {
            assert!(s.router_if.len() <= 15 && s.fabric_if.len() <= 15 && s.bridge.len() <= 15);
        }
    }

    #[test]
    fn rejects_bad_sizes_and_ids() {
        assert_eq!(plan("ab", 0, Topology::L2), Err(PlanError::NodeCount(0)));
        assert_eq!(
            plan("ab", MAX_NODES + 1, Topology::L2),
            Err(PlanError::NodeCount(MAX_NODES + 1))
        );
        assert!(matches!(
            plan("AB!", 1, Topology::L2),
            Err(PlanError::BadId(_))
        ));
    }
}
