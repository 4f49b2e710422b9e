//! Links: the veth pair, looking interfaces up, deleting them.

use std::fs::File;
use std::os::fd::AsRawFd;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};

use super::{Netlink, NetlinkError};

/// A veth pair to create: one end here, the other directly in the pod's
/// namespace (never in ours first, so a crash cannot leave it on the host
/// under the pod's name).
pub struct VethSpec<'a> {
    pub host_name: &'a str,
    pub host_mac: [u8; 6],
    /// Recorded on the host end so DEL and GC recognise whose it is.
    pub host_alias: &'a str,
    /// Turn off the kernel's own IPv6 link-local address on the host end; the
    /// plugin adds a fixed one itself.
    pub host_no_auto_link_local: bool,
    pub pod_name: &'a str,
    pub pod_mac: [u8; 6],
    pub pod_netns: &'a File,
    pub mtu: u32,
}

/// What the kernel says about one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEntry {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub up: bool,
    pub alias: Option<String>,
    /// `veth`, `dummy`, ...
    pub kind: Option<String>,
    /// For a veth: its peer's index (in the peer's namespace).
    pub peer_index: Option<u32>,
}

fn up_header(msg: &mut LinkMessage) {
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
}

impl Netlink {
    /// Creates the pair. The host end is then named, tagged and brought up
    /// here; the pod end is brought up by the caller inside the pod (a veth
    /// end cannot be brought up while its pair is being created).
    pub fn create_veth(&mut self, spec: &VethSpec<'_>) -> Result<(), NetlinkError> {
        let mut peer = LinkMessage::default();
        peer.attributes = vec![
            LinkAttribute::IfName(spec.pod_name.to_string()),
            LinkAttribute::Address(spec.pod_mac.to_vec()),
            LinkAttribute::Mtu(spec.mtu),
            LinkAttribute::NetNsFd(spec.pod_netns.as_raw_fd()),
        ];
        let mut host = LinkMessage::default();
        host.attributes = vec![
            LinkAttribute::IfName(spec.host_name.to_string()),
            LinkAttribute::Address(spec.host_mac.to_vec()),
            LinkAttribute::Mtu(spec.mtu),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
            ]),
        ];
        // Alias, address generation mode and "up" are applied by a change
        // (SETLINK) addressed by name, sent in the same write as the creation.
        let mut set = LinkMessage::default();
        up_header(&mut set);
        set.attributes = vec![
            LinkAttribute::IfName(spec.host_name.to_string()),
            LinkAttribute::IfAlias(spec.host_alias.to_string()),
        ];
        if spec.host_no_auto_link_local {
            set.attributes
                .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                    vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
                )]));
        }
        let results = self.batch(vec![
            (
                RouteNetlinkMessage::NewLink(host),
                NLM_F_CREATE | NLM_F_EXCL,
                format!(
                    "creating veth {} with peer {} in the pod",
                    spec.host_name, spec.pod_name
                ),
            ),
            (
                RouteNetlinkMessage::SetLink(set),
                0,
                format!("configuring and bringing up {}", spec.host_name),
            ),
        ])?;
        for r in results {
            r?;
        }
        Ok(())
    }

    /// The request that brings link `index` up.
    pub fn up_message(index: u32, name: &str) -> (RouteNetlinkMessage, u16, String) {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        up_header(&mut msg);
        (
            RouteNetlinkMessage::SetLink(msg),
            0,
            format!("bringing up {name}"),
        )
    }

    pub fn set_alias(&mut self, index: u32, alias: &str) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes = vec![LinkAttribute::IfAlias(alias.to_string())];
        self.request(
            RouteNetlinkMessage::SetLink(msg),
            0,
            &format!("setting the alias of link {index}"),
        )
    }

    /// The link named `name`, or `None` if there is none.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<LinkEntry>, NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.attributes = vec![LinkAttribute::IfName(name.to_string())];
        match self.query(
            RouteNetlinkMessage::GetLink(msg),
            false,
            &format!("looking up link {name}"),
        ) {
            Ok(answers) => Ok(answers.into_iter().find_map(link_entry)),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link in the namespace.
    pub fn links(&mut self) -> Result<Vec<LinkEntry>, NetlinkError> {
        let answers = self.query(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            true,
            "listing links",
        )?;
        Ok(answers.into_iter().filter_map(link_entry).collect())
    }

    /// Deletes a link (for a veth, both ends go). Already gone is success.
    pub fn delete_link(&mut self, index: u32, name: &str) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.request(
            RouteNetlinkMessage::DelLink(msg),
            0,
            &format!("deleting link {name}"),
        ) {
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(()),
            other => other,
        }
    }
}

fn link_entry(msg: RouteNetlinkMessage) -> Option<LinkEntry> {
    let RouteNetlinkMessage::NewLink(link) = msg else {
        return None;
    };
    let mut entry = LinkEntry {
        index: link.header.index,
        name: String::new(),
        mac: None,
        mtu: None,
        up: link.header.flags.contains(LinkFlags::Up),
        alias: None,
        kind: None,
        peer_index: None,
    };
    for attr in link.attributes {
        match attr {
            LinkAttribute::IfName(n) => entry.name = n,
            LinkAttribute::Address(a) if a.len() == 6 => {
                entry.mac = Some([a[0], a[1], a[2], a[3], a[4], a[5]]);
            }
            LinkAttribute::Mtu(m) => entry.mtu = Some(m),
            LinkAttribute::IfAlias(a) => entry.alias = Some(a),
            LinkAttribute::Link(i) => entry.peer_index = Some(i),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(k) = info {
                        entry.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Some(entry)
}
