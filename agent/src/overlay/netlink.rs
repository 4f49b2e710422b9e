//! Effects: the overlay devices, their addresses and their neighbour/FDB
//! entries, over route netlink. The messages are built by small functions
//! of their own so their bytes can be checked without a kernel (IPIP, which
//! this kernel lacks, is tested that way).

use super::nodes::Mac;
use super::vxlan::{KernelVxlan, VxlanDevice};
use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

#[derive(Debug, thiserror::Error)]
pub enum OverlayNetlinkError {
    #[error("opening a netlink socket: {0}")]
    Open(#[from] std::io::Error),
    #[error("netlink {what}: {source}")]
    Request {
        what: String,
        source: rtnetlink::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn req(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> OverlayNetlinkError {
    let what = what.into();
    move |source| OverlayNetlinkError::Request { what, source }
}

fn gone(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if matches!(m.raw_code().abs(), libc::ENOENT | libc::ESRCH | libc::ENODEV | libc::EADDRNOTAVAIL))
}

/// The `RTM_NEWLINK` message creating the VXLAN device.
pub fn vxlan_link_message(d: &VxlanDevice) -> Result<LinkMessage, OverlayNetlinkError> {
    let IpAddr::V4(local) = d.local else {
        return Err(OverlayNetlinkError::Invalid(format!(
            "{}: an IPv6 underlay address ({}) needs the IPv6 device",
            d.name, d.local
        )));
    };
    Ok(LinkVxlan::new(&d.name, d.vni)
        .port(d.port)
        .local(local)
        .learning(false)
        .mtu(d.mtu)
        .address(d.mac.0.to_vec())
        .up()
        .build())
}

/// The `RTM_NEWLINK` message creating an IPIP device: `tunl0` is the
/// kernel's fallback device of the ipip module (it appears when the module
/// loads); asking for it by name with kind `ipip` and no remote makes it a
/// "collect any remote" tunnel, which is what onlink routes through it need.
pub fn ipip_link_message(name: &str, mtu: u32) -> LinkMessage {
    rtnetlink::LinkIpIp::new(name)
        .remote(Ipv4Addr::UNSPECIFIED)
        .mtu(mtu)
        .up()
        .build()
}

/// `RTM_NEWNEIGH` for a permanent neighbour entry on `index`.
pub fn neighbour_message(index: u32, ip: IpAddr, mac: Mac) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family(ip);
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.attributes
        .push(NeighbourAttribute::Destination(neigh_addr(ip)));
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    m
}

/// `RTM_NEWNEIGH` (family bridge) for an FDB entry of the VXLAN device:
/// frames to `mac` go in UDP to `dst`. `NTF_SELF`: the device's own FDB.
pub fn fdb_message(index: u32, mac: Mac, dst: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    m.attributes
        .push(NeighbourAttribute::Destination(neigh_addr(dst)));
    m
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn neigh_addr(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

/// In bridge-family (FDB) messages the destination comes unparsed.
fn ip_of(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(v) => Some(IpAddr::V4(*v)),
        NeighbourAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        NeighbourAddress::Other(b) => match b.len() {
            4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    }
}

fn mac_of(b: &[u8]) -> Option<Mac> {
    <[u8; 6]>::try_from(b).ok().map(Mac)
}

/// A route-netlink handle for overlay's devices.
#[derive(Clone)]
pub struct OverlayNetlink {
    handle: Handle,
}

impl OverlayNetlink {
    /// Opens its own socket (in the calling thread's namespace); must run
    /// inside a tokio runtime.
    pub fn connect() -> Result<OverlayNetlink, OverlayNetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(OverlayNetlink { handle })
    }

    /// Every link: name → (index, MTU).
    pub async fn links(&self) -> Result<BTreeMap<String, (u32, u32)>, OverlayNetlinkError> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(req("listing links"))?;
        Ok(msgs
            .iter()
            .filter_map(|m| {
                let mut name = None;
                let mut mtu = 0;
                for a in &m.attributes {
                    match a {
                        LinkAttribute::IfName(n) => name = Some(n.clone()),
                        LinkAttribute::Mtu(x) => mtu = *x,
                        _ => {}
                    }
                }
                name.map(|n| (n, (m.header.index, mtu)))
            })
            .collect())
    }

    /// Every address on the host: (address, prefix length, ifindex).
    pub async fn addresses(&self) -> Result<Vec<(IpAddr, u8, u32)>, OverlayNetlinkError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(req("listing addresses"))?;
        Ok(msgs
            .iter()
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => {
                        Some((*ip, m.header.prefix_len, m.header.index))
                    }
                    _ => None,
                })
            })
            .collect())
    }

    /// The link called `name` as a VXLAN device, if it exists.
    pub async fn vxlan(&self, name: &str) -> Result<Option<KernelVxlan>, OverlayNetlinkError> {
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        let msg = match stream.try_next().await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(None),
            Err(e) if gone(&e) => return Ok(None),
            Err(e) => return Err(req(format!("reading link {name}"))(e)),
        };
        let mut k = KernelVxlan {
            index: msg.header.index,
            vni: None,
            port: None,
            local: None,
            learning: None,
            mtu: 0,
            mac: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            addrs: BTreeSet::new(),
        };
        for a in &msg.attributes {
            match a {
                LinkAttribute::Mtu(m) => k.mtu = *m,
                LinkAttribute::Address(b) => k.mac = mac_of(b),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Data(InfoData::Vxlan(v)) = i {
                            for x in v {
                                match x {
                                    InfoVxlan::Id(id) => k.vni = Some(*id),
                                    InfoVxlan::Port(p) => k.port = Some(*p),
                                    InfoVxlan::Local(l) => k.local = Some(IpAddr::V4(*l)),
                                    InfoVxlan::Local6(l) => k.local = Some(IpAddr::V6(*l)),
                                    InfoVxlan::Learning(l) => k.learning = Some(*l),
                                    _ => {}
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        k.addrs = self
            .addresses()
            .await?
            .into_iter()
            .filter(|(_, _, i)| *i == k.index)
            .map(|(ip, p, _)| (ip, p))
            .collect();
        Ok(Some(k))
    }

    pub async fn create_link(
        &self,
        msg: LinkMessage,
        what: &str,
    ) -> Result<(), OverlayNetlinkError> {
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(req(format!("creating {what}")))
    }

    pub async fn delete_link(&self, index: u32) -> Result<(), OverlayNetlinkError> {
        match self.handle.link().del(index).execute().await {
            Err(e) if !gone(&e) => Err(req(format!("deleting link {index}"))(e)),
            _ => Ok(()),
        }
    }

    /// Sets MTU, MAC and/or up on an existing link.
    pub async fn set_link(
        &self,
        index: u32,
        mtu: Option<u32>,
        mac: Option<Mac>,
        up: bool,
    ) -> Result<(), OverlayNetlinkError> {
        let mut b = LinkUnspec::new_with_index(index);
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        if let Some(m) = mac {
            b = b.address(m.0.to_vec());
        }
        if up {
            b = b.up();
        }
        self.handle
            .link()
            .set(b.build())
            .execute()
            .await
            .map_err(req(format!("setting link {index}")))
    }

    pub async fn add_address(
        &self,
        index: u32,
        ip: IpAddr,
        prefix: u8,
    ) -> Result<(), OverlayNetlinkError> {
        self.handle
            .address()
            .add(index, ip, prefix)
            .replace()
            .execute()
            .await
            .map_err(req(format!("adding {ip}/{prefix} to link {index}")))
    }

    pub async fn del_address(
        &self,
        index: u32,
        ip: IpAddr,
        prefix: u8,
    ) -> Result<(), OverlayNetlinkError> {
        let mut m = AddressMessage::default();
        m.header.family = family(ip);
        m.header.index = index;
        m.header.prefix_len = prefix;
        m.attributes.push(AddressAttribute::Local(ip));
        m.attributes.push(AddressAttribute::Address(ip));
        match self.handle.address().del(m).execute().await {
            Err(e) if !gone(&e) => Err(req(format!("deleting {ip}/{prefix} from link {index}"))(e)),
            _ => Ok(()),
        }
    }

    /// Permanent neighbour entries on `index` (of both families).
    pub async fn neighbours(
        &self,
        index: u32,
    ) -> Result<BTreeMap<IpAddr, Mac>, OverlayNetlinkError> {
        let msgs: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(req("listing neighbours"))?;
        Ok(msgs
            .iter()
            // Only permanent unicast entries are ours to manage; the kernel's
            // own (IPv6 multicast, incomplete lookups) are left alone.
            .filter(|m| {
                m.header.ifindex == index
                    && m.header.family != AddressFamily::Bridge
                    && m.header.state == NeighbourState::Permanent
            })
            .filter_map(|m| {
                let mut ip = None;
                let mut mac = None;
                for a in &m.attributes {
                    match a {
                        NeighbourAttribute::Destination(a) => ip = ip_of(a),
                        NeighbourAttribute::LinkLayerAddress(b) => mac = mac_of(b),
                        _ => {}
                    }
                }
                let ip = ip?;
                (!ip.is_multicast()).then_some((ip, mac?))
            })
            .collect())
    }

    /// FDB entries of the VXLAN device `index`: (MAC, destination).
    pub async fn fdb(&self, index: u32) -> Result<BTreeSet<(Mac, IpAddr)>, OverlayNetlinkError> {
        let msgs: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(req("listing FDB entries"))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.ifindex == index)
            .filter_map(|m| {
                let mut dst = None;
                let mut mac = None;
                for a in &m.attributes {
                    match a {
                        NeighbourAttribute::Destination(a) => dst = ip_of(a),
                        NeighbourAttribute::LinkLayerAddress(b) => mac = mac_of(b),
                        _ => {}
                    }
                }
                Some((mac?, dst?))
            })
            .collect())
    }

    pub async fn set_neighbour(
        &self,
        index: u32,
        ip: IpAddr,
        mac: Mac,
    ) -> Result<(), OverlayNetlinkError> {
        let mut r = self.handle.neighbours().add(index, ip).replace();
        *r.message_mut() = neighbour_message(index, ip, mac);
        r.execute()
            .await
            .map_err(req(format!("setting neighbour {ip} → {mac}")))
    }

    pub async fn del_neighbour(&self, index: u32, ip: IpAddr) -> Result<(), OverlayNetlinkError> {
        let mut m = NeighbourMessage::default();
        m.header.family = family(ip);
        m.header.ifindex = index;
        m.attributes
            .push(NeighbourAttribute::Destination(neigh_addr(ip)));
        match self.handle.neighbours().del(m).execute().await {
            Err(e) if !gone(&e) => Err(req(format!("deleting neighbour {ip}"))(e)),
            _ => Ok(()),
        }
    }

    /// Adds an FDB entry. `append` semantics (NLM_F_APPEND, what `bridge
    /// fdb append` does) would allow one MAC towards several nodes; a MAC
    /// belongs to one node, so replace.
    pub async fn set_fdb(
        &self,
        index: u32,
        mac: Mac,
        dst: IpAddr,
    ) -> Result<(), OverlayNetlinkError> {
        let mut r = self.handle.neighbours().add_bridge(index, &mac.0).replace();
        *r.message_mut() = fdb_message(index, mac, dst);
        r.execute()
            .await
            .map_err(req(format!("setting FDB {mac} → {dst}")))
    }

    pub async fn del_fdb(
        &self,
        index: u32,
        mac: Mac,
        dst: IpAddr,
    ) -> Result<(), OverlayNetlinkError> {
        match self
            .handle
            .neighbours()
            .del(fdb_message(index, mac, dst))
            .execute()
            .await
        {
            Err(e) if !gone(&e) => Err(req(format!("deleting FDB {mac} → {dst}"))(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::{InfoIpTunnel, InfoKind};
    use rtnetlink::packet_core::{Emitable, Parseable};

    /// The attributes of a link message as the kernel would read them
    /// (emitted to bytes and parsed back).
    fn round_trip(m: &LinkMessage) -> (Vec<u8>, LinkMessage) {
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        let parsed = LinkMessage::parse(buf.as_slice()).expect("parse link message");
        (buf, parsed)
    }

    fn infos(m: &LinkMessage) -> Vec<LinkInfo> {
        m.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(i) => Some(i.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// Finds `needle` in `hay` (to check raw attribute bytes).
    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn ipip_device_message_asks_for_an_any_remote_ipip_tunl0() {
        let m = ipip_link_message("tunl0", 1480);
        let (bytes, parsed) = round_trip(&m);
        assert!(
            parsed
                .attributes
                .contains(&LinkAttribute::IfName("tunl0".into()))
        );
        assert!(parsed.attributes.contains(&LinkAttribute::Mtu(1480)));
        assert!(parsed.header.flags.contains(LinkFlags::Up));
        let info = infos(&parsed);
        assert!(info.contains(&LinkInfo::Kind(InfoKind::IpIp)), "{info:?}");
        let data = info
            .iter()
            .find_map(|i| match i {
                LinkInfo::Data(InfoData::IpTunnel(d)) => Some(d.clone()),
                _ => None,
            })
            .expect("ipip info data");
        assert!(
            data.contains(&InfoIpTunnel::Remote(IpAddr::V4(Ipv4Addr::UNSPECIFIED))),
            "{data:?}"
        );
        // IFLA_MTU (4) with 1480, and IFLA_INFO_KIND "ipip\0" on the wire.
        let mut mtu_attr = vec![8u8, 0, 4, 0];
        mtu_attr.extend_from_slice(&1480u32.to_ne_bytes());
        assert!(contains(&bytes, &mtu_attr));
        assert!(contains(&bytes, b"ipip\0"));
    }

    #[test]
    fn vxlan_device_message_carries_vni_port_local_and_no_learning() {
        let d = VxlanDevice {
            name: "vxlan.margay".into(),
            vni: 4096,
            port: 4789,
            local: "10.0.1.1".parse().expect("ip"),
            mtu: 1450,
            mac: Mac([2, 1, 2, 3, 4, 5]),
            addr: "10.244.0.0".parse().expect("ip"),
        };
        let (bytes, parsed) = round_trip(&vxlan_link_message(&d).expect("message"));
        assert!(
            parsed
                .attributes
                .contains(&LinkAttribute::Address(vec![2, 1, 2, 3, 4, 5]))
        );
        assert!(parsed.attributes.contains(&LinkAttribute::Mtu(1450)));
        let data = infos(&parsed)
            .into_iter()
            .find_map(|i| match i {
                LinkInfo::Data(InfoData::Vxlan(v)) => Some(v),
                _ => None,
            })
            .expect("vxlan data");
        for want in [
            InfoVxlan::Id(4096),
            InfoVxlan::Port(4789),
            InfoVxlan::Local("10.0.1.1".parse().expect("ip")),
            InfoVxlan::Learning(false),
        ] {
            assert!(data.contains(&want), "{want:?} in {data:?}");
        }
        // The port goes big-endian on the wire (IFLA_VXLAN_PORT = 15).
        assert!(contains(&bytes, &[6, 0, 15, 0, 0x12, 0xb5]));
        let mut v6 = d.clone();
        v6.local = "fd00::1".parse().expect("ip");
        assert!(vxlan_link_message(&v6).is_err());
    }

    #[test]
    fn fdb_and_neighbour_messages() {
        let mac = Mac([2, 0, 0, 0, 0, 7]);
        let f = fdb_message(9, mac, "10.0.2.3".parse().expect("ip"));
        let mut buf = vec![0u8; f.buffer_len()];
        f.emit(&mut buf);
        // ndmsg: family AF_BRIDGE (7), ifindex 9, state NUD_PERMANENT (0x80), flags NTF_SELF (0x02).
        assert_eq!(buf[0], 7);
        assert_eq!(&buf[4..8], &9i32.to_ne_bytes());
        assert_eq!(&buf[8..10], &0x80u16.to_ne_bytes());
        assert_eq!(buf[10], 0x02);
        assert!(contains(&buf, &[2, 0, 0, 0, 0, 7]));
        assert!(contains(&buf, &[10, 0, 2, 3]));
        let parsed = NeighbourMessage::parse(buf.as_slice()).expect("parse");
        assert_eq!(parsed.header.family, AddressFamily::Bridge);

        let n = neighbour_message(9, "10.244.2.0".parse().expect("ip"), mac);
        let mut buf = vec![0u8; n.buffer_len()];
        n.emit(&mut buf);
        assert_eq!(buf[0], libc::AF_INET as u8);
        assert_eq!(&buf[8..10], &0x80u16.to_ne_bytes());
        assert!(contains(&buf, &[10, 244, 2, 0]));
    }
}
