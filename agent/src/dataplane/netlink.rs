//! The agent's one netlink connection: dumps of links and routes, route
//! changes, and the kernel's link/route notifications (so a route someone
//! deletes is noticed at once, not at the next periodic resync).
//!
//! The socket belongs to the network namespace of the thread that opens it.

use crate::calc::mtu::LinkInfo;
use crate::calc::routes::KernelRoute;
use futures::StreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::sys::AsyncSocket;
use rtnetlink::{Handle, MulticastGroup, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Kernel notifications: each item means "something changed, look again".
pub type Notifications = futures::stream::BoxStream<'static, ()>;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening a netlink socket: {0}")]
    Open(#[from] std::io::Error),
    #[error("netlink: no answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("netlink {what}: {source}")]
    Request {
        what: String,
        source: rtnetlink::Error,
    },
}

/// A route-netlink handle.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens two sockets: one for requests and one subscribed to link and
    /// IPv4/IPv6 route notifications. They are apart because a burst of
    /// notifications can overflow a socket's buffer, and the kernel then drops
    /// whatever else was queued — on a shared socket, parts of our own dump
    /// replies, and the request would wait forever. An overflowed
    /// notification socket only costs a full pass (it reports the overrun).
    /// Must run inside a tokio runtime (the connection tasks are spawned on it).
    pub fn connect() -> Result<(Netlink, Notifications), NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        let (mut conn, _, messages) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Link,
            MulticastGroup::Ipv4Route,
            MulticastGroup::Ipv6Route,
        ])?;
        // Room for the burst of many pods starting at once; the kernel caps
        // it at net.core.rmem_max, which is fine (overruns are handled).
        if let Err(e) = conn.socket_mut().socket_mut().set_rx_buf_sz(4usize << 20) {
            tracing::debug!(error = %e, "could not enlarge the netlink notification buffer");
        }
        tokio::spawn(conn);
        Ok((Netlink { handle }, messages.map(|_| ()).boxed()))
    }

    /// Every link: index, name, MTU.
    pub async fn links(&self) -> Result<Vec<LinkInfo>, NetlinkError> {
        let mut out = Vec::new();
        let mut stream = self.handle.link().get().execute();
        while let Some(msg) = stream.next().await {
            let msg = msg.map_err(|source| NetlinkError::Request {
                what: "listing links".into(),
                source,
            })?;
            let mut name = None;
            let mut mtu = 0;
            for a in &msg.attributes {
                match a {
                    LinkAttribute::IfName(n) => name = Some(n.clone()),
                    LinkAttribute::Mtu(m) => mtu = *m,
                    _ => {}
                }
            }
            if let Some(name) = name {
                out.push(LinkInfo {
                    index: msg.header.index,
                    name,
                    mtu,
                });
            }
        }
        Ok(out)
    }

    /// Unicast routes of the main table, IPv4 and IPv6.
    pub async fn main_routes(&self) -> Result<Vec<KernelRoute>, NetlinkError> {
        let mut out = Vec::new();
        for query in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let mut stream = self.handle.route().get(query).execute();
            while let Some(msg) = stream.next().await {
                let msg = msg.map_err(|source| NetlinkError::Request {
                    what: "listing routes".into(),
                    source,
                })?;
                if let Some(r) = kernel_route(&msg) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// Output interfaces of the main table's default routes, IPv4 first.
    pub async fn default_route_oifs(&self) -> Result<Vec<u32>, NetlinkError> {
        let mut routes = self.main_routes_raw().await?;
        routes.sort_by_key(|m| m.header.address_family != AddressFamily::Inet);
        Ok(routes
            .iter()
            .filter(|m| m.header.destination_prefix_length == 0)
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                })
            })
            .collect())
    }

    async fn main_routes_raw(&self) -> Result<Vec<RouteMessage>, NetlinkError> {
        let mut out = Vec::new();
        for query in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let mut stream = self.handle.route().get(query).execute();
            while let Some(msg) = stream.next().await {
                let msg = msg.map_err(|source| NetlinkError::Request {
                    what: "listing routes".into(),
                    source,
                })?;
                if table_of(&msg) == u32::from(RouteHeader::RT_TABLE_MAIN) {
                    out.push(msg);
                }
            }
        }
        Ok(out)
    }

    /// Adds or replaces the host route to `dst` out of interface `oif`.
    pub async fn replace_host_route(
        &self,
        dst: IpAddr,
        oif: u32,
        protocol: u8,
    ) -> Result<(), NetlinkError> {
        let msg = host_route_message(dst, oif, protocol);
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(|source| NetlinkError::Request {
                what: format!("replacing the route to {dst} (ifindex {oif})"),
                source,
            })
    }

    /// Deletes a route; one already gone is not an error.
    pub async fn delete_route(&self, r: &KernelRoute) -> Result<(), NetlinkError> {
        let mut msg = host_route_message(r.dst, r.oif, r.protocol);
        msg.header.destination_prefix_length = r.prefix_len;
        if !r.link_scope {
            msg.header.scope = RouteScope::Universe;
        }
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e))
                if matches!(e.raw_code().abs(), libc::ESRCH | libc::ENOENT) =>
            {
                Ok(())
            }
            Err(source) => Err(NetlinkError::Request {
                what: format!("deleting the route to {}/{}", r.dst, r.prefix_len),
                source,
            }),
        }
    }
}

fn host_route_message(dst: IpAddr, oif: u32, protocol: u8) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = match dst {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::from(protocol);
    msg.header.scope = RouteScope::Link;
    msg.header.kind = RouteType::Unicast;
    msg.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(dst)));
    msg.attributes.push(RouteAttribute::Oif(oif));
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

/// A main-table unicast route with a destination, as the planner sees it.
fn kernel_route(msg: &RouteMessage) -> Option<KernelRoute> {
    if table_of(msg) != u32::from(RouteHeader::RT_TABLE_MAIN)
        || msg.header.kind != RouteType::Unicast
    {
        return None;
    }
    let mut dst = None;
    let mut oif = 0;
    for a in &msg.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(v4)) => dst = Some(IpAddr::V4(*v4)),
            RouteAttribute::Destination(RouteAddress::Inet6(v6)) => dst = Some(IpAddr::V6(*v6)),
            RouteAttribute::Oif(i) => oif = *i,
            _ => {}
        }
    }
    Some(KernelRoute {
        dst: dst?,
        prefix_len: msg.header.destination_prefix_length,
        oif,
        protocol: u8::from(msg.header.protocol),
        link_scope: msg.header.scope == RouteScope::Link,
    })
}
