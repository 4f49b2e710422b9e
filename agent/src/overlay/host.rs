//! What overlay learns about its own host (pure): our prefix lengths from
//! the interfaces holding our node addresses, and the underlay MTU.

use super::encap::NodeAddr;
use super::nodes::NodeInfo;
use crate::calc::mtu::FALLBACK_MTU;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One host address: (address, prefix length, ifindex).
pub type HostAddr = (IpAddr, u8, u32);

/// Our node addresses get the prefix length of the interface holding them
/// when the Node does not say (only its InternalIP is known yet).
pub fn fill_prefixes(local: &mut NodeInfo, addrs: &[HostAddr]) {
    for slot in [&mut local.ipv4, &mut local.ipv6] {
        if let Some(a) = slot
            && a.prefix.is_none()
            && let Some((_, p, _)) = addrs.iter().find(|(ip, _, _)| *ip == a.addr)
        {
            a.prefix = Some(*p);
        }
    }
}

/// The MTU of the link holding `addr` (the underlay the tunnels ride);
/// [`FALLBACK_MTU`] when it cannot be told. `links`: name → (index, MTU).
pub fn underlay_mtu(
    addr: Option<&NodeAddr>,
    addrs: &[HostAddr],
    links: &BTreeMap<String, (u32, u32)>,
) -> u32 {
    addr.and_then(|a| addrs.iter().find(|(ip, _, _)| *ip == a.addr))
        .and_then(|(_, _, idx)| links.values().find(|(i, _)| i == idx))
        .map(|(_, mtu)| *mtu)
        .unwrap_or(FALLBACK_MTU)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_mtu_come_from_the_interface_holding_the_node_address() {
        let addrs: Vec<HostAddr> = vec![
            ("10.0.1.1".parse().expect("ip"), 24, 2),
            ("fd00:11::1".parse().expect("ip"), 64, 2),
            ("10.244.0.0".parse().expect("ip"), 32, 5),
        ];
        let links: BTreeMap<String, (u32, u32)> = [
            ("eth0".to_string(), (2, 9000)),
            ("vxlan.margay".to_string(), (5, 8950)),
        ]
        .into();
        let mut local = NodeInfo {
            name: "n1".into(),
            ipv4: NodeAddr::parse("10.0.1.1"),
            ipv6: NodeAddr::parse("fd00:11::1/48"),
            ..NodeInfo::default()
        };
        fill_prefixes(&mut local, &addrs);
        assert_eq!(local.ipv4, NodeAddr::parse("10.0.1.1/24"));
        assert_eq!(
            local.ipv6,
            NodeAddr::parse("fd00:11::1/48"),
            "an annotated prefix wins"
        );
        assert_eq!(underlay_mtu(local.ipv4.as_ref(), &addrs, &links), 9000);
        assert_eq!(
            underlay_mtu(NodeAddr::parse("10.9.9.9").as_ref(), &addrs, &links),
            FALLBACK_MTU
        );
        assert_eq!(underlay_mtu(None, &addrs, &links), FALLBACK_MTU);
    }
}
