//! The MTU of pod interfaces. Configured, or the MTU of the host's uplink:
//! the interface of the IPv4 (else IPv6) default route, or failing that the
//! smallest MTU of the host's other links. When a pool in use encapsulates,
//! a detected MTU leaves room for the largest overhead (VXLAN 50, VXLAN over
//! IPv6 70, IPIP 20: see `overlay::encap`): a pod cannot know which path its
//! packets take. A configured MTU is taken as it is (the operator's call).

/// One host link as the MTU decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
}

/// Used when nothing can be learned from the host.
pub const FALLBACK_MTU: u32 = 1500;

/// Overlay devices: never the uplink (their MTU already has the overhead taken off).
const TUNNEL_DEVICES: [&str; 3] = ["vxlan.margay", "vxlan-v6.margay", "tunl0"];

/// Pod MTU with encapsulation `overhead` (0 when no pool encapsulates).
pub fn pod_mtu_with_overhead(
    configured: Option<u32>,
    links: &[LinkInfo],
    default_route_oifs: &[u32],
    overhead: u32,
) -> u32 {
    match configured {
        Some(m) => m,
        None => pod_mtu(None, links, default_route_oifs).saturating_sub(overhead),
    }
}

/// Pod MTU. `default_route_oifs`: output interfaces of default routes, IPv4 first.
pub fn pod_mtu(configured: Option<u32>, links: &[LinkInfo], default_route_oifs: &[u32]) -> u32 {
    if let Some(m) = configured {
        return m;
    }
    let candidate = |l: &&LinkInfo| {
        l.name != "lo"
            && !TUNNEL_DEVICES.contains(&l.name.as_str())
            && !l
                .name
                .starts_with(margay_api::endpoint::HOST_INTERFACE_PREFIX)
    };
    for oif in default_route_oifs {
        if let Some(l) = links.iter().filter(candidate).find(|l| l.index == *oif) {
            return l.mtu;
        }
    }
    links
        .iter()
        .filter(candidate)
        .map(|l| l.mtu)
        .min()
        .unwrap_or(FALLBACK_MTU)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(index: u32, name: &str, mtu: u32) -> LinkInfo {
        LinkInfo {
            index,
            name: name.into(),
            mtu,
        }
    }

    #[test]
    fn configured_wins_then_default_route_then_smallest_uplink() {
        let links = [
            l(1, "lo", 65536),
            l(2, "eth0", 9000),
            l(3, "eth1", 1400),
            l(4, "mgyabc", 1000),
        ];
        assert_eq!(pod_mtu(Some(1450), &links, &[2]), 1450);
        assert_eq!(pod_mtu(None, &links, &[2]), 9000);
        assert_eq!(
            pod_mtu(None, &links, &[]),
            1400,
            "pod interfaces do not count"
        );
        assert_eq!(pod_mtu(None, &[l(1, "lo", 65536)], &[]), FALLBACK_MTU);
    }

    #[test]
    fn encapsulation_overhead_comes_off_a_detected_mtu_only() {
        let links = [
            l(2, "eth0", 1500),
            l(5, "vxlan.margay", 1450),
            l(6, "tunl0", 1480),
        ];
        assert_eq!(pod_mtu(None, &links, &[]), 1500, "tunnels are no uplink");
        assert_eq!(pod_mtu_with_overhead(None, &links, &[2], 0), 1500);
        assert_eq!(pod_mtu_with_overhead(None, &links, &[2], 50), 1450);
        assert_eq!(pod_mtu_with_overhead(None, &links, &[2], 70), 1430);
        assert_eq!(pod_mtu_with_overhead(Some(1400), &links, &[2], 50), 1400);
    }
}
