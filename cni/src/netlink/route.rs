//! Routes in the main table.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Netlink, NetlinkError};

/// A route to install through one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    pub destination: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    pub oif: u32,
    /// Link scope: the destination is directly on the interface.
    pub link_scope: bool,
}

/// A route the kernel holds in the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteEntry {
    pub destination: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub link_scope: bool,
}

fn family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

impl RouteSpec {
    /// The request that installs it, replacing a route to the same
    /// destination (so a repeated ADD converges instead of failing).
    pub fn add_message(&self) -> (RouteNetlinkMessage, u16, String) {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(self.destination);
        msg.header.destination_prefix_length = self.prefix_len;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = if self.link_scope {
            RouteScope::Link
        } else {
            RouteScope::Universe
        };
        if self.prefix_len > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(
                    self.destination,
                )));
        }
        if let Some(gw) = self.gateway {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        msg.attributes.push(RouteAttribute::Oif(self.oif));
        let via = self
            .gateway
            .map(|g| format!(" via {g}"))
            .unwrap_or_default();
        (
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            format!(
                "adding route {}/{}{via} on link {}",
                self.destination, self.prefix_len, self.oif
            ),
        )
    }
}

impl Netlink {
    /// Every route of one family in the main table.
    pub fn routes(&mut self, ipv6: bool) -> Result<Vec<RouteEntry>, NetlinkError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = if ipv6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let answers = self.query(RouteNetlinkMessage::GetRoute(msg), true, "listing routes")?;
        Ok(answers
            .into_iter()
            .filter_map(|m| {
                let RouteNetlinkMessage::NewRoute(r) = m else {
                    return None;
                };
                if r.header.table != RouteHeader::RT_TABLE_MAIN
                    && !r
                        .attributes
                        .iter()
                        .any(|a| matches!(a, RouteAttribute::Table(254)))
                {
                    return None;
                }
                let unspecified: IpAddr = if ipv6 {
                    std::net::Ipv6Addr::UNSPECIFIED.into()
                } else {
                    std::net::Ipv4Addr::UNSPECIFIED.into()
                };
                let mut entry = RouteEntry {
                    destination: unspecified,
                    prefix_len: r.header.destination_prefix_length,
                    gateway: None,
                    oif: None,
                    link_scope: r.header.scope == RouteScope::Link,
                };
                for attr in r.attributes {
                    match attr {
                        RouteAttribute::Destination(a) => {
                            if let Some(ip) = route_ip(a) {
                                entry.destination = ip;
                            }
                        }
                        RouteAttribute::Gateway(a) => entry.gateway = route_ip(a),
                        RouteAttribute::Oif(i) => entry.oif = Some(i),
                        _ => {}
                    }
                }
                Some(entry)
            })
            .collect())
    }
}

fn route_ip(a: RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(v4.into()),
        RouteAddress::Inet6(v6) => Some(v6.into()),
        _ => None,
    }
}
