//! Address families: AFI, SAFI and the pair of them.
//!
//! AFI and SAFI are open registries (a peer may advertise families we do not
//! speak), so they are newtypes over the wire value with named constants for
//! the ones Margay uses, rather than closed enums.

use std::fmt;

/// Address Family Identifier (IANA registry, 2 octets on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Afi(pub u16);

impl Afi {
    /// IPv4.
    pub const IPV4: Afi = Afi(1);
    /// IPv6.
    pub const IPV6: Afi = Afi(2);
}

/// Subsequent Address Family Identifier (IANA registry, 1 octet on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Safi(pub u8);

impl Safi {
    /// Unicast forwarding.
    pub const UNICAST: Safi = Safi(1);
    /// Multicast RPF.
    pub const MULTICAST: Safi = Safi(2);
}

/// An AFI/SAFI pair: the unit of multiprotocol negotiation, End-of-RIB,
/// route refresh and graceful restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Family {
    /// Address family.
    pub afi: Afi,
    /// Subsequent address family.
    pub safi: Safi,
}

impl Family {
    /// IPv4 unicast: the family of the classic UPDATE fields (RFC 4271).
    pub const IPV4_UNICAST: Family = Family::new(Afi::IPV4, Safi::UNICAST);
    /// IPv6 unicast over MP_REACH/MP_UNREACH (RFC 4760, RFC 2545).
    pub const IPV6_UNICAST: Family = Family::new(Afi::IPV6, Safi::UNICAST);

    /// A family from its parts.
    pub const fn new(afi: Afi, safi: Safi) -> Family {
        Family { afi, safi }
    }

    /// True when NLRI of this family are plain IP prefixes (AFI IPv4/IPv6,
    /// SAFI unicast/multicast), the only NLRI encoding this codec decodes.
    pub fn has_prefix_nlri(self) -> bool {
        matches!(self.afi, Afi::IPV4 | Afi::IPV6)
            && matches!(self.safi, Safi::UNICAST | Safi::MULTICAST)
    }

    /// Maximum prefix length in bits for prefix families (32 or 128).
    pub fn max_prefix_len(self) -> Option<u8> {
        match self.afi {
            Afi::IPV4 => Some(32),
            Afi::IPV6 => Some(128),
            _ => None,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let afi = match self.afi {
            Afi::IPV4 => "ipv4".to_string(),
            Afi::IPV6 => "ipv6".to_string(),
            Afi(other) => format!("afi{other}"),
        };
        let safi = match self.safi {
            Safi::UNICAST => "unicast".to_string(),
            Safi::MULTICAST => "multicast".to_string(),
            Safi(other) => format!("safi{other}"),
        };
        write!(f, "{afi}-{safi}")
    }
}
