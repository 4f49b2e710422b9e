//! [`OverlayResolver`]: routes to remote pod blocks through the overlay a
//! pool asks for (pure: a snapshot of nodes, pools and MTUs in, routes out).

use super::encap::{Encap, NodeAddr, decide};
use super::nodes::{NodeDirectory, NodeInfo};
use crate::calc::remote_routes::{RemotePath, RemoteRoute, RouteResolver};
use margay_api::ResolvedPool;
use margay_api::net::Cidr;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

/// The VXLAN device for IPv4 pools (IPv4 underlay).
pub const VXLAN_IFNAME: &str = "vxlan.margay";
/// The VXLAN device for IPv6 pools (IPv6 underlay).
pub const VXLAN_V6_IFNAME: &str = "vxlan-v6.margay";
/// The IPIP device (the kernel's fallback tunnel, as Calico uses it).
pub const IPIP_IFNAME: &str = "tunl0";

/// Everything a resolution depends on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OverlayInputs {
    /// Our own node (its addresses decide what "same subnet" means).
    pub local: NodeInfo,
    /// Every other node.
    pub nodes: NodeDirectory,
    pub pools: Vec<ResolvedPool>,
    /// MTU of the IPv4 and IPv6 underlay (the uplink).
    pub underlay_mtu_v4: u32,
    pub underlay_mtu_v6: u32,
}

impl OverlayInputs {
    /// The pool `prefix` belongs to (a block lies inside one pool).
    pub fn pool_of(&self, prefix: &Cidr) -> Option<&ResolvedPool> {
        self.pools.iter().find(|p| p.cidr.contains_cidr(prefix))
    }

    /// How the leg to the node at `next_hop` goes for `pool`, and the path.
    /// `None`: it must be encapsulated but the node's VTEP is not known yet.
    pub fn path(
        &self,
        pool: Option<&ResolvedPool>,
        next_hop: IpAddr,
    ) -> Option<(Encap, RemotePath)> {
        let direct = (Encap::Direct, RemotePath::Direct { gateway: next_hop });
        let Some(pool) = pool else {
            return Some(direct);
        };
        let v4 = next_hop.is_ipv4();
        let remote = self.nodes.by_addr(next_hop);
        let remote_addr = remote
            .and_then(|n| n.addr(v4).filter(|a| a.addr == next_hop).copied())
            .unwrap_or(NodeAddr {
                addr: next_hop,
                prefix: None,
            });
        match decide(pool, self.local.addr(v4), &remote_addr) {
            Encap::Direct => Some(direct),
            Encap::Vxlan => {
                // A next hop that is no node we know (an external router)
                // has no VTEP: the packet cannot be encapsulated to it.
                let vtep = remote?.vtep(v4)?;
                let ifname = if v4 { VXLAN_IFNAME } else { VXLAN_V6_IFNAME };
                Some((
                    Encap::Vxlan,
                    RemotePath::Tunnel {
                        ifname: ifname.into(),
                        gateway: vtep.addr,
                    },
                ))
            }
            Encap::Ipip => Some((
                Encap::Ipip,
                RemotePath::Tunnel {
                    ifname: IPIP_IFNAME.into(),
                    gateway: next_hop,
                },
            )),
        }
    }

    /// The route for `prefix` learned with `next_hops`.
    pub fn resolve(&self, prefix: Cidr, next_hops: &[IpAddr]) -> Option<RemoteRoute> {
        let v4 = prefix.addr().is_ipv4();
        let pool = self.pool_of(&prefix);
        let underlay = if v4 {
            self.underlay_mtu_v4
        } else {
            self.underlay_mtu_v6
        };
        let mut mtu: Option<u32> = None;
        let mut paths = Vec::new();
        for &nh in next_hops.iter().filter(|nh| nh.is_ipv4() == v4) {
            let Some((encap, path)) = self.path(pool, nh) else {
                continue;
            };
            if encap != Encap::Direct {
                let m = underlay.saturating_sub(encap.overhead(!v4));
                mtu = Some(mtu.map_or(m, |x| x.min(m)));
            }
            paths.push(path);
        }
        paths.sort();
        paths.dedup();
        (!paths.is_empty()).then_some(RemoteRoute { prefix, paths, mtu })
    }
}

/// The resolver routing's route programmer holds; overlay swaps its inputs
/// (and bumps the generation it hands out) when they change.
#[derive(Debug, Clone, Default)]
pub struct OverlayResolver {
    inputs: Arc<RwLock<Arc<OverlayInputs>>>,
}

impl OverlayResolver {
    pub fn new(inputs: OverlayInputs) -> OverlayResolver {
        OverlayResolver {
            inputs: Arc::new(RwLock::new(Arc::new(inputs))),
        }
    }

    /// The inputs now.
    pub fn inputs(&self) -> Arc<OverlayInputs> {
        match self.inputs.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces the inputs; `true` when they differ from the previous ones.
    pub fn set(&self, inputs: OverlayInputs) -> bool {
        let mut g = match self.inputs.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if **g == inputs {
            return false;
        }
        *g = Arc::new(inputs);
        true
    }
}

impl RouteResolver for OverlayResolver {
    fn resolve(&self, prefix: Cidr, next_hops: &[IpAddr]) -> Option<RemoteRoute> {
        self.inputs().resolve(prefix, next_hops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::encap::tests::pool;
    use crate::overlay::nodes::{Mac, Vtep};
    use margay_api::EncapMode::{self, *};

    fn node(name: &str, v4: &str, vtep: Option<(&str, u8)>) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            ipv4: NodeAddr::parse(v4),
            ipv6: None,
            vtep_v4: vtep.map(|(a, m)| Vtep {
                addr: a.parse().expect("ip"),
                mac: Mac([2, 0, 0, 0, 0, m]),
            }),
            vtep_v6: None,
        }
    }

    fn inputs(vx: EncapMode, ipip: EncapMode) -> OverlayInputs {
        OverlayInputs {
            local: node("n1", "10.0.1.1/24", Some(("10.244.0.0", 1))),
            nodes: NodeDirectory::new([
                node("n2", "10.0.1.2/24", Some(("10.244.1.0", 2))),
                node("n3", "10.0.2.3/24", Some(("10.244.2.0", 3))),
                node("n4", "10.0.2.4/24", None),
            ]),
            pools: vec![pool("10.244.0.0/16", vx, ipip, false)],
            underlay_mtu_v4: 1500,
            underlay_mtu_v6: 1500,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().expect("cidr")
    }

    #[test]
    fn cross_subnet_vxlan_tunnels_only_to_the_other_subnet() {
        let i = inputs(CrossSubnet, Never);
        let same = i
            .resolve(cidr("10.244.1.0/26"), &[ip("10.0.1.2")])
            .expect("route");
        assert_eq!(
            same.paths,
            vec![RemotePath::Direct {
                gateway: ip("10.0.1.2")
            }]
        );
        assert_eq!(same.mtu, None);
        let other = i
            .resolve(cidr("10.244.2.0/26"), &[ip("10.0.2.3")])
            .expect("route");
        assert_eq!(
            other.paths,
            vec![RemotePath::Tunnel {
                ifname: VXLAN_IFNAME.into(),
                gateway: ip("10.244.2.0")
            }]
        );
        assert_eq!(other.mtu, Some(1450));
    }

    #[test]
    fn vxlan_without_a_known_vtep_cannot_be_resolved_yet() {
        let i = inputs(Always, Never);
        assert_eq!(i.resolve(cidr("10.244.3.0/26"), &[ip("10.0.2.4")]), None);
        // An ECMP leg without a VTEP is left out, the others stay.
        let r = i
            .resolve(cidr("10.244.3.0/26"), &[ip("10.0.2.4"), ip("10.0.2.3")])
            .expect("route");
        assert_eq!(r.paths.len(), 1);
    }

    #[test]
    fn ipip_goes_to_the_node_address_through_tunl0() {
        let i = inputs(Never, Always);
        let r = i
            .resolve(cidr("10.244.1.0/26"), &[ip("10.0.1.2")])
            .expect("route");
        assert_eq!(
            r.paths,
            vec![RemotePath::Tunnel {
                ifname: IPIP_IFNAME.into(),
                gateway: ip("10.0.1.2")
            }]
        );
        assert_eq!(r.mtu, Some(1480));
    }

    #[test]
    fn prefixes_outside_every_pool_and_unknown_next_hops() {
        let i = inputs(Always, Never);
        let r = i
            .resolve(cidr("192.168.50.0/24"), &[ip("10.0.2.3")])
            .expect("route");
        assert_eq!(
            r.paths,
            vec![RemotePath::Direct {
                gateway: ip("10.0.2.3")
            }]
        );
        // A pool prefix behind a router that is no node: no VTEP, no route.
        assert_eq!(i.resolve(cidr("10.244.9.0/26"), &[ip("10.0.2.254")]), None);
        let never = inputs(Never, Never);
        assert_eq!(
            never
                .resolve(cidr("10.244.9.0/26"), &[ip("10.0.2.254")])
                .expect("route")
                .paths,
            vec![RemotePath::Direct {
                gateway: ip("10.0.2.254")
            }]
        );
    }

    #[test]
    fn resolver_reports_whether_its_inputs_changed() {
        let r = OverlayResolver::new(inputs(Never, Never));
        assert!(!r.set(inputs(Never, Never)));
        assert!(r.set(inputs(Always, Never)));
        let route = r
            .resolve(cidr("10.244.1.0/26"), &[ip("10.0.1.2")])
            .expect("route");
        assert_eq!(route.mtu, Some(1450));
    }
}
