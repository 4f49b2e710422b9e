//! Routes to pod blocks on other nodes: the seam between what BGP learned
//! and how the packets leave this node.
//!
//! BGP (the `routing` side of the agent) knows *which* prefixes live behind
//! *which* node addresses. Whether a packet to such a prefix goes straight to
//! the node, through the VXLAN device or through the IPIP tunnel depends on
//! the pool's encapsulation mode and on whether the node shares our subnet
//! (the `overlay` side). A [`RouteResolver`] turns the former into the
//! latter; the kernel route programmer installs what it returns.

use margay_api::net::Cidr;
use std::net::IpAddr;

/// One way out for a remote prefix (one ECMP leg).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RemotePath {
    /// Straight to the node (it shares a link with us): `via GATEWAY`.
    Direct { gateway: IpAddr },
    /// Through a tunnel device: `via GATEWAY dev IFNAME onlink`. For VXLAN the
    /// gateway is the remote node's VTEP address, for IPIP the node address.
    Tunnel { ifname: String, gateway: IpAddr },
}

/// A route to a remote prefix as it should be in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRoute {
    pub prefix: Cidr,
    /// Sorted, deduplicated; several legs make an ECMP route.
    pub paths: Vec<RemotePath>,
    /// Route MTU (`mtu` metric), when the path needs a smaller one than the
    /// underlay's (encapsulation overhead).
    pub mtu: Option<u32>,
}

/// Decides how traffic to `prefix`, learned with `next_hops` (node
/// addresses, every best ECMP next hop), leaves this node.
pub trait RouteResolver: Send + Sync {
    /// `None`: the route cannot be installed yet (e.g. the remote node's
    /// VTEP is not known); the programmer asks again when the resolver says
    /// its inputs changed.
    fn resolve(&self, prefix: Cidr, next_hops: &[IpAddr]) -> Option<RemoteRoute>;
}

/// No overlay: every next hop is reached directly.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectResolver;

impl RouteResolver for DirectResolver {
    fn resolve(&self, prefix: Cidr, next_hops: &[IpAddr]) -> Option<RemoteRoute> {
        let mut paths: Vec<RemotePath> = next_hops
            .iter()
            .filter(|nh| nh.is_ipv4() == prefix.addr().is_ipv4())
            .map(|&gateway| RemotePath::Direct { gateway })
            .collect();
        paths.sort();
        paths.dedup();
        (!paths.is_empty()).then_some(RemoteRoute {
            prefix,
            paths,
            mtu: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_resolver_keeps_same_family_next_hops_sorted_once() {
        let prefix: Cidr = "10.244.1.0/26".parse().expect("cidr");
        let a: IpAddr = "192.168.0.3".parse().expect("ip");
        let b: IpAddr = "192.168.0.2".parse().expect("ip");
        let v6: IpAddr = "fd00::2".parse().expect("ip");
        let r = DirectResolver
            .resolve(prefix, &[a, b, a, v6])
            .expect("a route");
        assert_eq!(
            r.paths,
            vec![
                RemotePath::Direct { gateway: b },
                RemotePath::Direct { gateway: a }
            ]
        );
        assert_eq!(DirectResolver.resolve(prefix, &[v6]), None);
    }
}
