//! IP prefixes as carried in NLRI and withdrawn-routes fields.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::family::Afi;

/// An IPv4 or IPv6 prefix with its host bits cleared.
///
/// The invariant (length within the family's maximum, host bits zero) is
/// kept by the constructors, so two prefixes that route the same addresses
/// always compare and hash equal. RFC 4271 says trailing bits of an NLRI
/// prefix are irrelevant; the decoder masks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// A prefix length larger than the address family allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// Length above 32 (IPv4) or 128 (IPv6).
    #[error("prefix length {len} is larger than {max} for this address family")]
    LengthTooLarge {
        /// The offending length.
        len: u8,
        /// The family maximum.
        max: u8,
    },
    /// Text that is not `ADDRESS/LENGTH`.
    #[error("prefix {0:?} is not of the form ADDRESS/LENGTH")]
    Syntax(String),
}

impl Prefix {
    /// A prefix from an address and a length; host bits are cleared.
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, PrefixError> {
        match addr {
            IpAddr::V4(a) => Prefix::v4(a, len),
            IpAddr::V6(a) => Prefix::v6(a, len),
        }
    }

    /// An IPv4 prefix; host bits are cleared.
    pub fn v4(addr: Ipv4Addr, len: u8) -> Result<Prefix, PrefixError> {
        if len > 32 {
            return Err(PrefixError::LengthTooLarge { len, max: 32 });
        }
        let mask = if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        };
        let bits = u32::from(addr) & mask;
        Ok(Prefix {
            addr: IpAddr::V4(Ipv4Addr::from(bits)),
            len,
        })
    }

    /// An IPv6 prefix; host bits are cleared.
    pub fn v6(addr: Ipv6Addr, len: u8) -> Result<Prefix, PrefixError> {
        if len > 128 {
            return Err(PrefixError::LengthTooLarge { len, max: 128 });
        }
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(len))
        };
        let bits = u128::from(addr) & mask;
        Ok(Prefix {
            addr: IpAddr::V6(Ipv6Addr::from(bits)),
            len,
        })
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// True for the default route (length 0).
    pub fn is_default(&self) -> bool {
        self.len == 0
    }

    /// The AFI this prefix belongs to.
    pub fn afi(&self) -> Afi {
        match self.addr {
            IpAddr::V4(_) => Afi::IPV4,
            IpAddr::V6(_) => Afi::IPV6,
        }
    }

    /// True for IPv4.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// True when `self` covers `other` (same family, shorter or equal length,
    /// same leading bits).
    pub fn contains(&self, other: &Prefix) -> bool {
        if self.len > other.len {
            return false;
        }
        match (self.addr, other.addr) {
            (IpAddr::V4(_), IpAddr::V4(b)) => Prefix::v4(b, self.len).is_ok_and(|p| p == *self),
            (IpAddr::V6(_), IpAddr::V6(b)) => Prefix::v6(b, self.len).is_ok_and(|p| p == *self),
            _ => false,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Prefix, PrefixError> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| PrefixError::Syntax(s.to_string()))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| PrefixError::Syntax(s.to_string()))?;
        let len: u8 = len
            .parse()
            .map_err(|_| PrefixError::Syntax(s.to_string()))?;
        Prefix::new(addr, len)
    }
}
