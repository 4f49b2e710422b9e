//! What the decoder and encoder need to know about the session.

use std::net::Ipv4Addr;

use super::family::Family;
use super::message::Open;

/// The negotiated state of an Established session that decoding and
/// encoding UPDATEs depend on. Add-path is not supported (always off).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionContext {
    /// Our AS.
    pub local_as: u32,
    /// The peer's AS (from its OPEN).
    pub peer_as: u32,
    /// Both sides advertised the 4-octet AS capability: AS_PATH and
    /// AGGREGATOR carry 4-octet ASNs and AS4_* attributes are not used.
    pub four_octet_as: bool,
    /// Families both sides advertised (IPv4 unicast when neither sent the
    /// multiprotocol capability).
    pub families: Vec<Family>,
    /// Both sides advertised route refresh.
    pub route_refresh: bool,
    /// Both sides advertised enhanced route refresh.
    pub enhanced_route_refresh: bool,
}

impl SessionContext {
    /// A context with 4-octet AS on and IPv4 and IPv6 unicast, for tests,
    /// tools, and encoding before negotiation.
    pub fn new(local_as: u32, peer_as: u32) -> SessionContext {
        SessionContext {
            local_as,
            peer_as,
            four_octet_as: true,
            families: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
            route_refresh: true,
            enhanced_route_refresh: true,
        }
    }

    /// The context that results from exchanging `local` and `remote` OPENs.
    pub fn negotiate(local: &Open, remote: &Open) -> SessionContext {
        let ours = local.capabilities.families();
        let theirs = remote.capabilities.families();
        let families = ours
            .iter()
            .copied()
            .filter(|f| theirs.contains(f))
            .collect();
        let (l, r) = (&local.capabilities, &remote.capabilities);
        SessionContext {
            local_as: local.asn(),
            peer_as: remote.asn(),
            four_octet_as: l.four_octet_as.is_some() && r.four_octet_as.is_some(),
            families,
            route_refresh: l.route_refresh && r.route_refresh,
            enhanced_route_refresh: l.enhanced_route_refresh && r.enhanced_route_refresh,
        }
    }

    /// Internal BGP: both ends in the same AS.
    pub fn is_ibgp(&self) -> bool {
        self.local_as == self.peer_as
    }

    /// True when `family` was negotiated.
    pub fn has_family(&self, family: Family) -> bool {
        self.families.contains(&family)
    }
}

/// What a received OPEN is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenCheck {
    /// Our AS (an OPEN from the same AS is iBGP).
    pub local_as: u32,
    /// Our BGP identifier (an iBGP peer must not use it, RFC 6286).
    pub local_id: Ipv4Addr,
    /// The AS configured for the peer; `None` accepts any AS (dynamic peers).
    pub peer_as: Option<u32>,
}
