//! Effects: proto-88 routes in the main table (dump, replace, delete) and
//! the host's addresses (for node address detection), over rtnetlink.

use crate::calc::remote_routes::RemotePath;
use crate::routing::detect::HostAddr;
use crate::routing::route_plan::{REMOTE_ROUTE_PROTOCOL, Route88};
use futures::StreamExt;
use margay_api::net::Cidr;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric, RouteNextHop,
    RouteNextHopFlags, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, thiserror::Error)]
#[error("netlink {what}: {message}")]
pub struct KernelError {
    pub what: String,
    pub message: String,
}

fn err(what: impl Into<String>, e: impl std::fmt::Display) -> KernelError {
    KernelError {
        what: what.into(),
        message: e.to_string(),
    }
}

#[derive(Clone)]
pub struct RouteKernel {
    handle: Handle,
}

impl RouteKernel {
    /// Must run inside a tokio runtime (the connection task is spawned on it).
    pub fn connect() -> Result<RouteKernel, KernelError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| err("connect", e))?;
        tokio::spawn(conn);
        Ok(RouteKernel { handle })
    }

    async fn link_names(&self) -> Result<BTreeMap<u32, String>, KernelError> {
        let mut out = BTreeMap::new();
        let mut s = self.handle.link().get().execute();
        while let Some(m) = s.next().await {
            let m = m.map_err(|e| err("listing links", e))?;
            for a in &m.attributes {
                if let LinkAttribute::IfName(n) = a {
                    out.insert(m.header.index, n.clone());
                }
            }
        }
        Ok(out)
    }

    async fn link_index(&self, name: &str) -> Result<u32, KernelError> {
        self.link_names()
            .await?
            .into_iter()
            .find(|(_, n)| n == name)
            .map(|(i, _)| i)
            .ok_or_else(|| err(format!("finding link {name}"), "no such link"))
    }

    /// Every global address of the host, with its interface.
    pub async fn host_addresses(&self) -> Result<Vec<HostAddr>, KernelError> {
        let names = self.link_names().await?;
        let mut out = Vec::new();
        let mut s = self.handle.address().get().execute();
        while let Some(m) = s.next().await {
            let m = m.map_err(|e| err("listing addresses", e))?;
            let Some(ifname) = names.get(&m.header.index) else {
                continue;
            };
            let addr = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(addr) = addr {
                out.push(HostAddr {
                    ifname: ifname.clone(),
                    addr,
                    prefix_len: m.header.prefix_len,
                });
            }
        }
        Ok(out)
    }

    /// Our routes in the main table.
    pub async fn routes(&self) -> Result<BTreeMap<Cidr, Route88>, KernelError> {
        let names = self.link_names().await?;
        let mut out = BTreeMap::new();
        for query in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let mut s = self.handle.route().get(query).execute();
            while let Some(m) = s.next().await {
                let m = m.map_err(|e| err("listing routes", e))?;
                if u8::from(m.header.protocol) != REMOTE_ROUTE_PROTOCOL || table_of(&m) != 254 {
                    continue;
                }
                let Some((p, r)) = parse(&m, &names) else {
                    continue;
                };
                // Older kernels dump IPv6 ECMP routes one leg per message.
                match (out.get_mut(&p), r) {
                    (Some(Route88::Remote { paths, .. }), Route88::Remote { paths: more, .. }) => {
                        paths.extend(more);
                        paths.sort();
                        paths.dedup();
                    }
                    (_, r) => {
                        out.insert(p, r);
                    }
                }
            }
        }
        Ok(out)
    }

    pub async fn replace(&self, prefix: Cidr, route: &Route88) -> Result<(), KernelError> {
        let mut msg = base(prefix);
        match route {
            Route88::Blackhole => msg.header.kind = RouteType::BlackHole,
            Route88::Remote { paths, mtu } => {
                if let Some(m) = mtu {
                    msg.attributes
                        .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(*m)]));
                }
                match paths.as_slice() {
                    [] => return Err(err(format!("route {prefix}"), "no path")),
                    [one] => {
                        let (gw, oif, onlink) = self.leg(one).await?;
                        msg.attributes.push(RouteAttribute::Gateway(gw));
                        if let Some(i) = oif {
                            msg.attributes.push(RouteAttribute::Oif(i));
                        }
                        if onlink {
                            msg.header.flags |= RouteFlags::Onlink;
                        }
                    }
                    many => {
                        let mut hops = Vec::new();
                        for p in many {
                            let (gw, oif, onlink) = self.leg(p).await?;
                            let mut nh = RouteNextHop::default();
                            nh.interface_index = oif.unwrap_or(0);
                            if onlink {
                                nh.flags |= RouteNextHopFlags::Onlink;
                            }
                            nh.attributes.push(RouteAttribute::Gateway(gw));
                            hops.push(nh);
                        }
                        msg.attributes.push(RouteAttribute::MultiPath(hops));
                    }
                }
            }
        }
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(|e| err(format!("replacing the route to {prefix}"), e))
    }

    pub async fn delete(&self, prefix: Cidr, route: &Route88) -> Result<(), KernelError> {
        let mut msg = base(prefix);
        if *route == Route88::Blackhole {
            msg.header.kind = RouteType::BlackHole;
        }
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e))
                if matches!(e.raw_code().abs(), libc::ESRCH | libc::ENOENT) =>
            {
                Ok(())
            }
            Err(e) => Err(err(format!("deleting the route to {prefix}"), e)),
        }
    }

    async fn leg(&self, p: &RemotePath) -> Result<(RouteAddress, Option<u32>, bool), KernelError> {
        Ok(match p {
            RemotePath::Direct { gateway } => (RouteAddress::from(*gateway), None, false),
            RemotePath::Tunnel { ifname, gateway } => (
                RouteAddress::from(*gateway),
                Some(self.link_index(ifname).await?),
                true,
            ),
        })
    }
}

fn base(prefix: Cidr) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = if prefix.addr().is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    msg.header.destination_prefix_length = prefix.prefix();
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::from(REMOTE_ROUTE_PROTOCOL);
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    msg.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(
            prefix.addr(),
        )));
    msg
}

fn table_of(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table))
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn path(gw: IpAddr, oif: u32, onlink: bool, names: &BTreeMap<u32, String>) -> RemotePath {
    match names.get(&oif) {
        Some(ifname) if onlink => RemotePath::Tunnel {
            ifname: ifname.clone(),
            gateway: gw,
        },
        _ => RemotePath::Direct { gateway: gw },
    }
}

fn parse(m: &RouteMessage, names: &BTreeMap<u32, String>) -> Option<(Cidr, Route88)> {
    let mut dst = match m.header.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        _ => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let (mut gw, mut oif, mut mtu, mut multi) = (None, 0, None, Vec::new());
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = ip_of(d)?,
            RouteAttribute::Gateway(g) => gw = ip_of(g),
            RouteAttribute::Oif(i) => oif = *i,
            RouteAttribute::Metrics(ms) => {
                mtu = ms.iter().find_map(|x| match x {
                    RouteMetric::Mtu(v) => Some(*v),
                    _ => None,
                })
            }
            RouteAttribute::MultiPath(hops) => {
                for h in hops {
                    let g = h.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Gateway(g) => ip_of(g),
                        _ => None,
                    });
                    if let Some(g) = g {
                        multi.push(path(
                            g,
                            h.interface_index,
                            h.flags.contains(RouteNextHopFlags::Onlink),
                            names,
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    let prefix = Cidr::new_truncating(dst, m.header.destination_prefix_length)?;
    if m.header.kind == RouteType::BlackHole {
        return Some((prefix, Route88::Blackhole));
    }
    let mut paths = multi;
    if let Some(g) = gw {
        paths.push(path(
            g,
            oif,
            m.header.flags.contains(RouteFlags::Onlink),
            names,
        ));
    }
    paths.sort();
    paths.dedup();
    Some((prefix, Route88::Remote { paths, mtu }))
}
