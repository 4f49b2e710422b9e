//! How a pod is wired, Calico style, worked out without touching the kernel:
//! the pod's addresses as /32 and /128 on its interface, a link route to
//! 169.254.1.1 and default routes via it (IPv4) and via the host side's fixed
//! link-local address (IPv6); the host side has the MAC ee:ee:ee:ee:ee:ee,
//! and answers ARP for 169.254.1.1 by proxy (the agent turns that on).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::CniError;
use crate::netlink::{AddressSpec, RouteSpec};
use crate::result::{CniResult, Dns, Interface, IpConfig, Route, has_v1_1_fields};

/// The IPv4 gateway every pod routes through; nothing owns it.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The host side's MAC: the same on every pod's veth, so a pod's neighbour
/// entry for its gateway never goes stale across restarts.
pub const HOST_MAC: [u8; 6] = [0xee; 6];

/// The host side's IPv6 link-local address: the EUI-64 address of
/// [`HOST_MAC`], put there by the plugin (not the kernel) so it exists, without
/// duplicate address detection, before the pod's first packet.
pub const HOST_LINK_LOCAL_V6: Ipv6Addr =
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);

/// One pod address from the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodAddress {
    pub ip: IpAddr,
    pub prefix_len: u8,
}

impl std::fmt::Display for PodAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix_len)
    }
}

/// Parses the agent's `10.244.0.5/32` style addresses; a pod address must be a
/// single host (/32 or /128).
pub fn parse_addresses(addresses: &[String]) -> Result<Vec<PodAddress>, CniError> {
    if addresses.is_empty() {
        return Err(CniError::io(
            "the agent allocated no address for the pod (is an IPPool configured?)",
        ));
    }
    addresses
        .iter()
        .map(|a| {
            let bad = || {
                CniError::decode(format!(
                    "the agent sent {a:?} as a pod address; expected ADDRESS/32 or ADDRESS/128"
                ))
            };
            let (ip, len) = a.split_once('/').ok_or_else(bad)?;
            let ip: IpAddr = ip.parse().map_err(|_| bad())?;
            let prefix_len: u8 = len.parse().map_err(|_| bad())?;
            let host_len = if ip.is_ipv4() { 32 } else { 128 };
            if prefix_len != host_len {
                return Err(bad());
            }
            Ok(PodAddress { ip, prefix_len })
        })
        .collect()
}

/// The pod side's addresses and routes, and what the result reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WiringPlan {
    pub addresses: Vec<PodAddress>,
}

impl WiringPlan {
    pub fn new(addresses: Vec<PodAddress>) -> WiringPlan {
        WiringPlan { addresses }
    }

    pub fn has_v4(&self) -> bool {
        self.addresses.iter().any(|a| a.ip.is_ipv4())
    }

    pub fn has_v6(&self) -> bool {
        self.addresses.iter().any(|a| a.ip.is_ipv6())
    }

    /// Addresses to put on the pod's interface `oif`.
    pub fn pod_addresses(&self, oif: u32) -> Vec<AddressSpec> {
        self.addresses
            .iter()
            .map(|a| AddressSpec {
                index: oif,
                address: a.ip,
                prefix_len: a.prefix_len,
                nodad: a.ip.is_ipv6(),
            })
            .collect()
    }

    /// Routes to install in the pod through `oif`, in the order they must go in
    /// (the link route before the default route that uses it).
    pub fn pod_routes(&self, oif: u32) -> Vec<RouteSpec> {
        let mut routes = Vec::new();
        if self.has_v4() {
            routes.push(RouteSpec {
                destination: GATEWAY_V4.into(),
                prefix_len: 32,
                gateway: None,
                oif,
                link_scope: true,
            });
            routes.push(RouteSpec {
                destination: Ipv4Addr::UNSPECIFIED.into(),
                prefix_len: 0,
                gateway: Some(GATEWAY_V4.into()),
                oif,
                link_scope: false,
            });
        }
        if self.has_v6() {
            routes.push(RouteSpec {
                destination: Ipv6Addr::UNSPECIFIED.into(),
                prefix_len: 0,
                gateway: Some(HOST_LINK_LOCAL_V6.into()),
                oif,
                link_scope: false,
            });
        }
        routes
    }

    /// The host side's own address (IPv6 pods only).
    pub fn host_addresses(&self, host_index: u32) -> Vec<AddressSpec> {
        if !self.has_v6() {
            return Vec::new();
        }
        vec![AddressSpec {
            index: host_index,
            address: HOST_LINK_LOCAL_V6.into(),
            prefix_len: 64,
            nodad: true,
        }]
    }

    /// This plugin's part of the ADD result: host interface first, then the
    /// pod's, whose index the addresses name.
    pub fn result(&self, wired: &Wired<'_>, cni_version: &str, dns: &Dns) -> CniResult {
        let v11 = has_v1_1_fields(cni_version);
        let mtu = v11.then_some(wired.mtu);
        let mut routes = Vec::new();
        for r in self.pod_routes(0) {
            // A link-scoped route has no gateway; 1.0.0 cannot say "scope link",
            // and a route without `gw` there means "via the address's gateway",
            // so it is reported only from 1.1.0 on.
            if r.link_scope && !v11 {
                continue;
            }
            routes.push(Route {
                dst: format!("{}/{}", r.destination, r.prefix_len),
                gw: r.gateway.map(|g| g.to_string()),
                scope: r.link_scope.then_some(253),
                ..Default::default()
            });
        }
        CniResult {
            cni_version: cni_version.to_string(),
            interfaces: vec![
                Interface {
                    name: wired.host_interface.to_string(),
                    mac: Some(format_mac(&HOST_MAC)),
                    mtu,
                    ..Default::default()
                },
                Interface {
                    name: wired.pod_interface.to_string(),
                    mac: Some(format_mac(&wired.pod_mac)),
                    mtu,
                    sandbox: Some(wired.netns.to_string()),
                    ..Default::default()
                },
            ],
            ips: self
                .addresses
                .iter()
                .map(|a| IpConfig {
                    address: a.to_string(),
                    gateway: Some(match a.ip {
                        IpAddr::V4(_) => GATEWAY_V4.to_string(),
                        IpAddr::V6(_) => HOST_LINK_LOCAL_V6.to_string(),
                    }),
                    interface: Some(1),
                })
                .collect(),
            routes,
            dns: dns.clone(),
        }
    }
}

/// What ADD built, for the result.
#[derive(Debug, Clone)]
pub struct Wired<'a> {
    pub host_interface: &'a str,
    pub pod_interface: &'a str,
    pub pod_mac: [u8; 6],
    pub netns: &'a str,
    pub mtu: u32,
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A random unicast, locally administered MAC for the pod side.
pub fn random_mac(random: [u8; 6]) -> [u8; 6] {
    let mut mac = random;
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// The alias the host side carries: which attachment it belongs to, so DEL
/// and GC never delete a newer sandbox's interface of the same pod.
pub fn host_alias(container_id: &str, ifname: &str) -> String {
    format!("margay:{container_id}:{ifname}")
}

/// The attachment named by a host-side alias.
pub fn parse_host_alias(alias: &str) -> Option<(&str, &str)> {
    let rest = alias.strip_prefix("margay:")?;
    rest.rsplit_once(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(addrs: &[&str]) -> WiringPlan {
        let addrs: Vec<String> = addrs.iter().map(|s| s.to_string()).collect();
        WiringPlan::new(parse_addresses(&addrs).unwrap())
    }

    #[test]
    fn the_host_link_local_is_the_eui64_address_of_the_host_mac() {
        // EUI-64: flip the universal/local bit of the first byte, put ff:fe in
        // the middle.
        let m = HOST_MAC;
        let eui = [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]];
        let seg = HOST_LINK_LOCAL_V6.segments();
        for i in 0..4 {
            assert_eq!(seg[4 + i], u16::from_be_bytes([eui[2 * i], eui[2 * i + 1]]));
        }
    }

    #[test]
    fn only_host_addresses_are_accepted() {
        for bad in ["10.0.0.1/24", "10.0.0.1", "fd00::1/64", "x/32", ""] {
            let e = parse_addresses(&[bad.to_string()]).unwrap_err();
            assert_eq!(e.code, 6, "{bad}");
        }
        assert!(parse_addresses(&[]).is_err());
    }

    #[test]
    fn dual_stack_routes_in_order() {
        let p = plan(&["10.244.0.5/32", "fd00:244::5/128"]);
        let routes = p.pod_routes(7);
        assert_eq!(routes.len(), 3);
        assert_eq!(routes[0].destination, IpAddr::from(GATEWAY_V4));
        assert!(routes[0].link_scope);
        assert_eq!(routes[1].gateway, Some(GATEWAY_V4.into()));
        assert_eq!(routes[2].gateway, Some(HOST_LINK_LOCAL_V6.into()));
        assert!(routes.iter().all(|r| r.oif == 7));
        let addrs = p.pod_addresses(7);
        assert!(!addrs[0].nodad && addrs[1].nodad);
        assert_eq!(p.host_addresses(3).len(), 1);
        assert!(plan(&["10.244.0.5/32"]).host_addresses(3).is_empty());
    }

    #[test]
    fn result_per_version() {
        let p = plan(&["10.244.0.5/32", "fd00:244::5/128"]);
        let wired = Wired {
            host_interface: "mgy0123456789a",
            pod_interface: "eth0",
            pod_mac: [2, 0, 0, 0, 0, 1],
            netns: "/run/netns/p",
            mtu: 1480,
        };
        let r = p.result(&wired, "1.1.0", &Dns::default());
        assert_eq!(r.interfaces[0].name, "mgy0123456789a");
        assert_eq!(r.interfaces[0].sandbox, None);
        assert_eq!(r.interfaces[1].sandbox.as_deref(), Some("/run/netns/p"));
        assert_eq!(r.interfaces[1].mac.as_deref(), Some("02:00:00:00:00:01"));
        assert_eq!(r.interfaces[1].mtu, Some(1480));
        assert_eq!(r.ips[1].address, "fd00:244::5/128");
        assert_eq!(
            r.ips[1].gateway.as_deref(),
            Some("fe80::ecee:eeff:feee:eeee")
        );
        assert!(r.ips.iter().all(|ip| ip.interface == Some(1)));
        assert_eq!(r.routes.len(), 3);
        assert_eq!(r.routes[0].scope, Some(253));
        let r = p.result(&wired, "1.0.0", &Dns::default());
        assert_eq!(r.routes.len(), 2, "no scope-link route in 1.0.0");
        assert_eq!(r.interfaces[1].mtu, None);
        assert_eq!(r.routes[0].dst, "0.0.0.0/0");
        assert_eq!(r.routes[1].dst, "::/0");
    }

    #[test]
    fn macs_and_aliases() {
        let m = random_mac([0xff; 6]);
        assert_eq!(m[0] & 0x01, 0, "unicast");
        assert_eq!(m[0] & 0x02, 0x02, "locally administered");
        assert_eq!(format_mac(&HOST_MAC), "ee:ee:ee:ee:ee:ee");
        let a = host_alias("abc.1-2", "eth0");
        assert_eq!(parse_host_alias(&a), Some(("abc.1-2", "eth0")));
        assert_eq!(parse_host_alias("something else"), None);
    }
}
