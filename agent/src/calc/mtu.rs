//! The MTU of pod interfaces. Configured, or the MTU of the host's uplink:
//! the interface of the IPv4 (else IPv6) default route, or failing that the
//! smallest MTU of the host's other links. Encapsulation overhead (VXLAN 50,
//! IPIP 20) comes with overlay support.

/// One host link as the MTU decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
}

/// Used when nothing can be learned from the host.
pub const FALLBACK_MTU: u32 = 1500;

/// Pod MTU. `default_route_oifs`: output interfaces of default routes, IPv4 first.
pub fn pod_mtu(configured: Option<u32>, links: &[LinkInfo], default_route_oifs: &[u32]) -> u32 {
    if let Some(m) = configured {
        return m;
    }
    let candidate = |l: &&LinkInfo| {
        l.name != "lo"
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
}
