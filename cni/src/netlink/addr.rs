//! Interface addresses.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Netlink, NetlinkError};

/// An address to put on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressSpec {
    pub index: u32,
    pub address: IpAddr,
    pub prefix_len: u8,
    /// Skip duplicate address detection (IPv6): the address is ours alone
    /// (IPAM says so, or it is the fixed link-local on a point-to-point veth)
    /// and must be usable at once.
    pub nodad: bool,
}

/// An address the kernel holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressEntry {
    pub index: u32,
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl AddressSpec {
    /// The request that adds it, or updates it if it is there already.
    pub fn add_message(&self) -> (RouteNetlinkMessage, u16, String) {
        let mut msg = AddressMessage::default();
        msg.header.index = self.index;
        msg.header.prefix_len = self.prefix_len;
        msg.header.family = match self.address {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.attributes.push(AddressAttribute::Local(self.address));
        msg.attributes.push(AddressAttribute::Address(self.address));
        if self.nodad {
            msg.header.flags = AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        (
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            format!(
                "adding address {}/{} to link {}",
                self.address, self.prefix_len, self.index
            ),
        )
    }
}

impl Netlink {
    /// Every address in the namespace.
    pub fn addresses(&mut self) -> Result<Vec<AddressEntry>, NetlinkError> {
        let answers = self.query(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            true,
            "listing addresses",
        )?;
        Ok(answers
            .into_iter()
            .filter_map(|m| {
                let RouteNetlinkMessage::NewAddress(a) = m else {
                    return None;
                };
                let address = a.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                });
                let address = address.or_else(|| {
                    a.attributes.iter().find_map(|attr| match attr {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })
                })?;
                Some(AddressEntry {
                    index: a.header.index,
                    address,
                    prefix_len: a.header.prefix_len,
                })
            })
            .collect())
    }
}
