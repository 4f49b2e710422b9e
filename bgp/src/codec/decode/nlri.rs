//! NLRI prefix lists (RFC 4271 §4.3, RFC 4760 §5).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::codec::family::Afi;
use crate::codec::prefix::Prefix;

/// Why a prefix list could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NlriError {
    /// Length octet above 32 / 128.
    LengthTooLarge,
    /// The prefix's octets run past the field.
    Overrun,
    /// An AFI this decoder has no prefix format for.
    UnsupportedAfi,
}

impl NlriError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            NlriError::LengthTooLarge => "prefix length larger than the address family allows",
            NlriError::Overrun => "prefix overruns the NLRI field",
            NlriError::UnsupportedAfi => "NLRI of an address family without prefix encoding",
        }
    }
}

/// Parses a list of `<length, prefix>` pairs. Allocation is bounded by the
/// input: each prefix takes at least one octet.
pub(crate) fn parse_prefixes(afi: Afi, mut buf: &[u8]) -> Result<Vec<Prefix>, NlriError> {
    let max_len = match afi {
        Afi::IPV4 => 32u8,
        Afi::IPV6 => 128u8,
        _ => return Err(NlriError::UnsupportedAfi),
    };
    let mut out = Vec::with_capacity(buf.len().min(1024) / 2);
    while let Some((&len, rest)) = buf.split_first() {
        if len > max_len {
            return Err(NlriError::LengthTooLarge);
        }
        let octets = usize::from(len).div_ceil(8);
        let Some(bytes) = rest.get(..octets) else {
            return Err(NlriError::Overrun);
        };
        let prefix = if max_len == 32 {
            let mut a = [0u8; 4];
            a[..octets].copy_from_slice(bytes);
            Prefix::v4(Ipv4Addr::from(a), len)
        } else {
            let mut a = [0u8; 16];
            a[..octets].copy_from_slice(bytes);
            Prefix::v6(Ipv6Addr::from(a), len)
        };
        // The length was checked above, so construction cannot fail.
        out.push(prefix.map_err(|_| NlriError::LengthTooLarge)?);
        buf = &rest[octets..];
    }
    Ok(out)
}
