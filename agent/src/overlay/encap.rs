//! Which encapsulation traffic to a remote node's pods takes (pure).
//!
//! Per pool, VXLAN and IPIP each have a mode `Never | Always | CrossSubnet`
//! (the API refuses both on at once; should it happen anyway VXLAN wins).
//! `CrossSubnet` encapsulates only towards nodes outside our subnet; a node
//! whose prefix length is unknown (only its status InternalIP is known)
//! counts as another subnet, so it is never wrongly sent unencapsulated.

use margay_api::{EncapMode, ResolvedPool};

/// How packets to a remote node's pods leave this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Encap {
    Direct,
    Vxlan,
    Ipip,
}

/// VXLAN over IPv4: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const VXLAN_OVERHEAD_V4: u32 = 50;
/// VXLAN over IPv6: the outer header is 40 bytes instead of 20.
pub const VXLAN_OVERHEAD_V6: u32 = 70;
/// IPIP: one outer IPv4 header.
pub const IPIP_OVERHEAD: u32 = 20;

impl Encap {
    /// Bytes the encapsulation adds to each packet, over an underlay of the
    /// family of `underlay_v6`.
    pub fn overhead(self, underlay_v6: bool) -> u32 {
        match (self, underlay_v6) {
            (Encap::Direct, _) => 0,
            (Encap::Vxlan, false) => VXLAN_OVERHEAD_V4,
            (Encap::Vxlan, true) => VXLAN_OVERHEAD_V6,
            (Encap::Ipip, _) => IPIP_OVERHEAD,
        }
    }
}

pub use crate::calc::node_address::NodeAddr;

/// Whether two nodes share a subnet: same family, both prefix lengths known
/// and equal, and the same network under it.
pub fn same_subnet(local: &NodeAddr, remote: &NodeAddr) -> bool {
    let (Some(lp), Some(rp)) = (local.prefix, remote.prefix) else {
        return false;
    };
    if lp != rp || local.addr.is_ipv4() != remote.addr.is_ipv4() {
        return false;
    }
    let a = margay_api::net::Cidr::new_truncating(local.addr, lp);
    let b = margay_api::net::Cidr::new_truncating(remote.addr, rp);
    a.is_some() && a == b
}

/// The encapsulation for traffic from our pods' side to `pool`'s addresses
/// on the node at `remote`, seen from `local` (our address of the same
/// family, if we know it).
pub fn decide(pool: &ResolvedPool, local: Option<&NodeAddr>, remote: &NodeAddr) -> Encap {
    let cross_subnet = || match local {
        Some(l) => !same_subnet(l, remote),
        None => true,
    };
    let wants = |mode: EncapMode| match mode {
        EncapMode::Never => false,
        EncapMode::Always => true,
        EncapMode::CrossSubnet => cross_subnet(),
    };
    if wants(pool.vxlan_mode) {
        Encap::Vxlan
    } else if remote.addr.is_ipv4() && pool.cidr.addr().is_ipv4() && wants(pool.ipip_mode) {
        // IPIP carries IPv4 in IPv4 only.
        Encap::Ipip
    } else {
        Encap::Direct
    }
}

/// Which encapsulations some pool may use (to know which devices to keep
/// and what MTU overhead pods need), per pool family.
pub fn encaps_in_use(pools: &[ResolvedPool]) -> Vec<(Encap, bool)> {
    let mut out = Vec::new();
    // Disabled pools count: their existing pods still need their paths.
    for p in pools {
        let v6 = !p.cidr.addr().is_ipv4();
        if p.vxlan_mode.is_on() {
            out.push((Encap::Vxlan, v6));
        } else if p.ipip_mode.is_on() && !v6 {
            out.push((Encap::Ipip, v6));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The largest encapsulation overhead any pool in use may need: pods get
/// their MTU reduced by it (a pod cannot know which path a packet takes).
/// VXLAN for an IPv6 pool rides an IPv6 underlay.
pub fn max_overhead(pools: &[ResolvedPool]) -> u32 {
    encaps_in_use(pools)
        .into_iter()
        .map(|(e, v6)| e.overhead(v6))
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use margay_api::net::Cidr;

    pub(crate) fn pool(cidr: &str, vxlan: EncapMode, ipip: EncapMode, nat: bool) -> ResolvedPool {
        let cidr = Cidr::parse_strict(cidr).expect("cidr");
        ResolvedPool {
            name: format!("pool-{cidr}").replace(['/', '.', ':'], "-"),
            cidr,
            block_size: if cidr.addr().is_ipv4() { 26 } else { 122 },
            vxlan_mode: vxlan,
            ipip_mode: ipip,
            nat_outgoing: nat,
            node_selector: margay_api::Selector::parse("all()").expect("selector"),
            disabled: false,
            disable_bgp_export: false,
        }
    }

    fn a(s: &str) -> NodeAddr {
        NodeAddr::parse(s).expect("node addr")
    }

    #[test]
    fn parses_addresses_with_and_without_prefix_and_refuses_garbage() {
        assert_eq!(a("192.168.10.2/24").prefix, Some(24));
        assert_eq!(a("fd00:10::2/64").prefix, Some(64));
        assert_eq!(a("10.0.0.1").prefix, None);
        assert_eq!(NodeAddr::parse("10.0.0.1/33"), None);
        assert_eq!(NodeAddr::parse("nonsense/24"), None);
        assert_eq!(NodeAddr::parse(""), None);
    }

    #[test]
    fn same_subnet_needs_both_prefixes_equal_networks_and_family() {
        assert!(same_subnet(&a("10.0.1.1/24"), &a("10.0.1.2/24")));
        assert!(!same_subnet(&a("10.0.1.1/24"), &a("10.0.2.1/24")));
        assert!(
            !same_subnet(&a("10.0.1.1/24"), &a("10.0.1.2")),
            "unknown prefix"
        );
        assert!(!same_subnet(&a("10.0.1.1/24"), &a("10.0.1.2/16")));
        assert!(!same_subnet(&a("10.0.1.1/24"), &a("fd00::1/64")));
        assert!(same_subnet(&a("fd00:11::1/64"), &a("fd00:11::2/64")));
    }

    #[test]
    fn every_mode_against_same_and_other_subnet() {
        use EncapMode::*;
        let local = a("10.0.1.1/24");
        let same = a("10.0.1.2/24");
        let other = a("10.0.2.1/24");
        let unknown = a("10.0.1.3");
        let cases = [
            (Never, Never, Encap::Direct, Encap::Direct),
            (Always, Never, Encap::Vxlan, Encap::Vxlan),
            (CrossSubnet, Never, Encap::Direct, Encap::Vxlan),
            (Never, Always, Encap::Ipip, Encap::Ipip),
            (Never, CrossSubnet, Encap::Direct, Encap::Ipip),
            (Always, Always, Encap::Vxlan, Encap::Vxlan),
        ];
        for (vx, ip, to_same, to_other) in cases {
            let p = pool("10.244.0.0/16", vx, ip, false);
            assert_eq!(
                decide(&p, Some(&local), &same),
                to_same,
                "{vx:?}/{ip:?} same"
            );
            assert_eq!(
                decide(&p, Some(&local), &other),
                to_other,
                "{vx:?}/{ip:?} other"
            );
            assert_eq!(
                decide(&p, Some(&local), &unknown),
                to_other,
                "{vx:?}/{ip:?}: unknown prefix counts as another subnet"
            );
            assert_eq!(decide(&p, None, &same), to_other, "unknown local address");
        }
    }

    #[test]
    fn ipip_is_ipv4_only() {
        let p = pool("fd00:244::/48", EncapMode::Never, EncapMode::Always, false);
        assert_eq!(
            decide(&p, Some(&a("fd00:11::1/64")), &a("fd00:12::1/64")),
            Encap::Direct
        );
        assert_eq!(max_overhead(&[p]), 0);
    }

    #[test]
    fn overhead_is_the_largest_of_the_pools_in_use() {
        use EncapMode::*;
        assert_eq!(max_overhead(&[]), 0);
        assert_eq!(
            max_overhead(&[pool("10.244.0.0/16", Never, Never, false)]),
            0
        );
        assert_eq!(
            max_overhead(&[pool("10.244.0.0/16", Never, CrossSubnet, false)]),
            20
        );
        assert_eq!(
            max_overhead(&[
                pool("10.244.0.0/16", Never, Always, false),
                pool("10.245.0.0/16", CrossSubnet, Never, false)
            ]),
            50
        );
        assert_eq!(
            max_overhead(&[
                pool("10.244.0.0/16", Always, Never, false),
                pool("fd00:244::/48", Always, Never, false)
            ]),
            70
        );
    }
}
