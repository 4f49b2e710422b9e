//! BGP messages (RFC 4271 §4) as values.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::attributes::{AS_TRANS, PathAttributes};
use super::capabilities::Capabilities;
use super::family::Family;
use super::notification::Notification;
use super::prefix::Prefix;

/// The fixed header length (marker, length, type).
pub const HEADER_LEN: usize = 19;
/// Largest message without the extended message capability (RFC 4271).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// The BGP version this codec speaks.
pub const BGP_VERSION: u8 = 4;

/// Message type octet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// 1.
    Open,
    /// 2.
    Update,
    /// 3.
    Notification,
    /// 4.
    Keepalive,
    /// 5 (RFC 2918).
    RouteRefresh,
}

impl MessageType {
    /// From the type octet; `None` for unknown types (header error 1/3).
    pub fn from_code(code: u8) -> Option<MessageType> {
        match code {
            1 => Some(MessageType::Open),
            2 => Some(MessageType::Update),
            3 => Some(MessageType::Notification),
            4 => Some(MessageType::Keepalive),
            5 => Some(MessageType::RouteRefresh),
            _ => None,
        }
    }

    /// The type octet.
    pub fn code(self) -> u8 {
        match self {
            MessageType::Open => 1,
            MessageType::Update => 2,
            MessageType::Notification => 3,
            MessageType::Keepalive => 4,
            MessageType::RouteRefresh => 5,
        }
    }

    /// Smallest legal total length (header included) for this type.
    pub fn min_len(self) -> usize {
        match self {
            MessageType::Open => 29,
            MessageType::Update => 23,
            MessageType::Notification => 21,
            MessageType::Keepalive => 19,
            // The ROUTE-REFRESH decoder checks the exact length itself, since
            // the right error (1/2 or 7/1) depends on the subtype (RFC 7313).
            MessageType::RouteRefresh => 19,
        }
    }
}

/// A BGP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE.
    Update(Update),
    /// NOTIFICATION.
    Notification(Notification),
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH.
    RouteRefresh(RouteRefresh),
}

impl Message {
    /// The message's type.
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Open(_) => MessageType::Open,
            Message::Update(_) => MessageType::Update,
            Message::Notification(_) => MessageType::Notification,
            Message::Keepalive => MessageType::Keepalive,
            Message::RouteRefresh(_) => MessageType::RouteRefresh,
        }
    }
}

/// An OPEN message. The version is always 4 (anything else is rejected by
/// the decoder and never produced by the encoder).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Open {
    /// The 2-octet "My Autonomous System" field: the AS, or AS_TRANS when the
    /// AS does not fit (the real AS is then in the 4-octet AS capability).
    pub my_as: u16,
    /// Proposed hold time in seconds (0, or at least 3).
    pub hold_time: u16,
    /// BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// Capabilities (carried in optional parameter type 2).
    pub capabilities: Capabilities,
}

impl Open {
    /// An OPEN for `asn`: sets `my_as` (AS_TRANS above 65535) and the 4-octet
    /// AS capability, which Margay always advertises.
    pub fn new(asn: u32, hold_time: u16, bgp_id: Ipv4Addr, mut capabilities: Capabilities) -> Open {
        let my_as = u16::try_from(asn).unwrap_or(AS_TRANS as u16);
        capabilities.four_octet_as = Some(asn);
        Open {
            my_as,
            hold_time,
            bgp_id,
            capabilities,
        }
    }

    /// The sender's AS: the 4-octet AS capability when present, else `my_as`.
    pub fn asn(&self) -> u32 {
        self.capabilities
            .four_octet_as
            .unwrap_or(u32::from(self.my_as))
    }
}

/// The next hop of an MP_REACH_NLRI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NextHop {
    /// IPv4 next hop (4 octets).
    V4(Ipv4Addr),
    /// IPv6 next hop: global (16 octets) and optionally link-local (32
    /// octets in all, RFC 2545 §3).
    V6 {
        /// Global address.
        global: Ipv6Addr,
        /// Link-local address, when the peer shares a link with us.
        link_local: Option<Ipv6Addr>,
    },
}

/// MP_REACH_NLRI (RFC 4760 §3): routes of one family with their next hop.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MpReach {
    /// The family (AFI/SAFI) of every prefix in `nlri`.
    pub family: Family,
    /// Next hop.
    pub next_hop: NextHop,
    /// Announced prefixes.
    pub nlri: Vec<Prefix>,
}

/// MP_UNREACH_NLRI (RFC 4760 §4): withdrawals of one family. Empty
/// `withdrawn` in an otherwise empty UPDATE is that family's End-of-RIB.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MpUnreach {
    /// The family.
    pub family: Family,
    /// Withdrawn prefixes.
    pub withdrawn: Vec<Prefix>,
}

/// An UPDATE message.
///
/// IPv4 unicast routes may come in the classic fields (`withdrawn`, `nlri`
/// with the NEXT_HOP attribute) or in MP_REACH/MP_UNREACH; other families
/// only in the latter. [`Update::reach`] and [`Update::unreach`] present
/// both uniformly, so the RIB need not care which form a peer used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    /// Withdrawn IPv4 unicast prefixes (classic field).
    pub withdrawn: Vec<Prefix>,
    /// Path attributes (without MP_REACH/MP_UNREACH).
    pub attributes: PathAttributes,
    /// MP_REACH_NLRI.
    pub mp_reach: Option<MpReach>,
    /// MP_UNREACH_NLRI.
    pub mp_unreach: Option<MpUnreach>,
    /// Announced IPv4 unicast prefixes (classic field).
    pub nlri: Vec<Prefix>,
}

/// Announced routes of one family, as [`Update::reach`] yields them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reach<'a> {
    /// The family.
    pub family: Family,
    /// The next hop for these prefixes (`None` for classic IPv4 NLRI without
    /// a NEXT_HOP attribute, which the decoder treats as withdraw).
    pub next_hop: Option<NextHop>,
    /// The prefixes.
    pub prefixes: &'a [Prefix],
}

/// Withdrawn routes of one family, as [`Update::unreach`] yields them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unreach<'a> {
    /// The family.
    pub family: Family,
    /// The prefixes.
    pub prefixes: &'a [Prefix],
}

impl Update {
    /// The End-of-RIB marker for `family` (RFC 4724 §2): an empty UPDATE
    /// for IPv4 unicast, an UPDATE with only an empty MP_UNREACH otherwise.
    pub fn end_of_rib(family: Family) -> Update {
        if family == Family::IPV4_UNICAST {
            Update::default()
        } else {
            Update {
                mp_unreach: Some(MpUnreach {
                    family,
                    withdrawn: Vec::new(),
                }),
                ..Update::default()
            }
        }
    }

    /// The family whose End-of-RIB this UPDATE is, if it is one.
    pub fn end_of_rib_family(&self) -> Option<Family> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() || self.mp_reach.is_some() {
            return None;
        }
        match &self.mp_unreach {
            None if self.attributes.is_empty() => Some(Family::IPV4_UNICAST),
            // RFC 4724 §2: MP_UNREACH with no withdrawn routes, and nothing else.
            Some(un) if un.withdrawn.is_empty() && self.attributes.is_empty() => Some(un.family),
            _ => None,
        }
    }

    /// Announced routes, classic IPv4 first, then MP_REACH.
    pub fn reach(&self) -> impl Iterator<Item = Reach<'_>> {
        let classic = (!self.nlri.is_empty()).then(|| Reach {
            family: Family::IPV4_UNICAST,
            next_hop: self.attributes.next_hop.map(NextHop::V4),
            prefixes: &self.nlri,
        });
        let mp = self.mp_reach.as_ref().map(|r| Reach {
            family: r.family,
            next_hop: Some(r.next_hop),
            prefixes: &r.nlri,
        });
        classic.into_iter().chain(mp)
    }

    /// Withdrawn routes, classic IPv4 first, then MP_UNREACH.
    pub fn unreach(&self) -> impl Iterator<Item = Unreach<'_>> {
        let classic = (!self.withdrawn.is_empty()).then(|| Unreach {
            family: Family::IPV4_UNICAST,
            prefixes: &self.withdrawn,
        });
        let mp = self
            .mp_unreach
            .as_ref()
            .filter(|u| !u.withdrawn.is_empty())
            .map(|u| Unreach {
                family: u.family,
                prefixes: &u.withdrawn,
            });
        classic.into_iter().chain(mp)
    }

    /// Every prefix the UPDATE touches, announced or withdrawn, with its
    /// family: what a treat-as-withdraw disposition withdraws (RFC 7606 §2).
    pub fn all_prefixes(&self) -> impl Iterator<Item = (Family, &Prefix)> {
        let reach = self
            .reach()
            .flat_map(|r| r.prefixes.iter().map(move |p| (r.family, p)));
        let unreach = self
            .unreach()
            .flat_map(|u| u.prefixes.iter().map(move |p| (u.family, p)));
        unreach.chain(reach)
    }

    /// True when the UPDATE announces at least one prefix.
    pub fn has_announcements(&self) -> bool {
        !self.nlri.is_empty() || self.mp_reach.as_ref().is_some_and(|r| !r.nlri.is_empty())
    }
}

/// ROUTE-REFRESH subtype (RFC 7313 §3; 0 is a plain RFC 2918 request).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteRefreshSubtype {
    /// 0: route refresh request.
    Request,
    /// 1: Beginning of Route Refresh (BoRR).
    BeginningOfRouteRefresh,
    /// 2: End of Route Refresh (EoRR).
    EndOfRouteRefresh,
    /// Any other value: the message must be ignored (RFC 7313 §5).
    Other(u8),
}

impl RouteRefreshSubtype {
    /// From the wire octet.
    pub fn from_u8(value: u8) -> RouteRefreshSubtype {
        match value {
            0 => RouteRefreshSubtype::Request,
            1 => RouteRefreshSubtype::BeginningOfRouteRefresh,
            2 => RouteRefreshSubtype::EndOfRouteRefresh,
            other => RouteRefreshSubtype::Other(other),
        }
    }

    /// The wire octet.
    pub fn to_u8(self) -> u8 {
        match self {
            RouteRefreshSubtype::Request => 0,
            RouteRefreshSubtype::BeginningOfRouteRefresh => 1,
            RouteRefreshSubtype::EndOfRouteRefresh => 2,
            RouteRefreshSubtype::Other(other) => other,
        }
    }
}

/// A ROUTE-REFRESH message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteRefresh {
    /// The family to refresh.
    pub family: Family,
    /// Request, BoRR or EoRR.
    pub subtype: RouteRefreshSubtype,
}

impl RouteRefresh {
    /// A plain refresh request for `family`.
    pub fn request(family: Family) -> RouteRefresh {
        RouteRefresh {
            family,
            subtype: RouteRefreshSubtype::Request,
        }
    }
}
