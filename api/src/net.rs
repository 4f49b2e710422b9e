//! IP networks (CIDRs) as the resource model and IPAM use them.
//!
//! A small type of our own rather than a dependency: IPAM needs exact control
//! over ordinals (offset of an address inside a block) and over the canonical
//! text form, which is also what resource names are derived from.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    /// Number of bits in an address of this family.
    pub fn bits(self) -> u8 {
        match self {
            IpFamily::V4 => 32,
            IpFamily::V6 => 128,
        }
    }

    pub fn of(ip: IpAddr) -> IpFamily {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

/// Why a CIDR string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not a CIDR: expected ADDRESS/PREFIX, e.g. 10.0.0.0/16 or fd00::/48")]
    Syntax(String),
    #[error("{0:?} is not a CIDR: the address part is not an IPv4 or IPv6 address")]
    Address(String),
    #[error("{input:?} is not a CIDR: prefix length must be 0..={max} for {family}")]
    Prefix {
        input: String,
        family: IpFamily,
        max: u8,
    },
    #[error("{input:?} has host bits set: the network address is {canonical}")]
    HostBits { input: String, canonical: Cidr },
}

/// An IP network: a network address and a prefix length, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// A network from any address inside it; host bits are cleared.
    pub fn new_truncating(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let family = IpFamily::of(addr);
        if prefix > family.bits() {
            return None;
        }
        let value = ip_to_u128(addr) & mask(family, prefix);
        Some(Cidr {
            addr: u128_to_ip(family, value),
            prefix,
        })
    }

    /// Parse `ADDRESS/PREFIX`, refusing host bits (so the text is canonical).
    pub fn parse_strict(s: &str) -> Result<Cidr, CidrError> {
        let parsed = Cidr::parse_loose(s)?;
        if parsed.0 != parsed.1.addr {
            return Err(CidrError::HostBits {
                input: s.to_string(),
                canonical: parsed.1,
            });
        }
        Ok(parsed.1)
    }

    /// Parse `ADDRESS/PREFIX`; returns the address as written and the network.
    pub fn parse_loose(s: &str) -> Result<(IpAddr, Cidr), CidrError> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| CidrError::Syntax(s.to_string()))?;
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::Address(s.to_string()))?;
        let family = IpFamily::of(ip);
        // Only plain decimal digits: "+1" or " 24" are refused like Go's net.ParseCIDR does.
        if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CidrError::Prefix {
                input: s.to_string(),
                family,
                max: family.bits(),
            });
        }
        let prefix: u8 = prefix.parse().map_err(|_| CidrError::Prefix {
            input: s.to_string(),
            family,
            max: family.bits(),
        })?;
        let cidr = Cidr::new_truncating(ip, prefix).ok_or_else(|| CidrError::Prefix {
            input: s.to_string(),
            family,
            max: family.bits(),
        })?;
        Ok((ip, cidr))
    }

    /// The single-address network `ip/32` or `ip/128`.
    pub fn host(ip: IpAddr) -> Cidr {
        Cidr {
            addr: ip,
            prefix: IpFamily::of(ip).bits(),
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn family(&self) -> IpFamily {
        IpFamily::of(self.addr)
    }

    /// log2 of the number of addresses.
    pub fn host_bits(&self) -> u8 {
        self.family().bits() - self.prefix
    }

    /// Number of addresses, saturating at `u128::MAX` for `::/0`.
    pub fn size(&self) -> u128 {
        let bits = self.host_bits();
        if bits >= 128 {
            u128::MAX
        } else {
            1u128 << bits
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        IpFamily::of(ip) == self.family()
            && ip_to_u128(ip) & mask(self.family(), self.prefix) == ip_to_u128(self.addr)
    }

    /// Whether `other` lies entirely inside `self`.
    pub fn contains_cidr(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains_cidr(other) || other.contains_cidr(self)
    }

    /// Offset of `ip` from the network address, if inside.
    pub fn ordinal_of(&self, ip: IpAddr) -> Option<u128> {
        if !self.contains(ip) {
            return None;
        }
        Some(ip_to_u128(ip) - ip_to_u128(self.addr))
    }

    /// The address at `ordinal`, if inside.
    pub fn nth(&self, ordinal: u128) -> Option<IpAddr> {
        if ordinal >= self.size() && self.host_bits() < 128 {
            return None;
        }
        Some(u128_to_ip(
            self.family(),
            ip_to_u128(self.addr).checked_add(ordinal)?,
        ))
    }

    /// The `index`-th subnet of length `prefix` inside this network.
    pub fn subnet(&self, prefix: u8, index: u128) -> Option<Cidr> {
        if prefix < self.prefix || prefix > self.family().bits() {
            return None;
        }
        let count_bits = prefix - self.prefix;
        if count_bits < 128 && index >= (1u128 << count_bits) {
            return None;
        }
        let step_bits = self.family().bits() - prefix;
        let offset = if step_bits >= 128 {
            0
        } else {
            index.checked_shl(u32::from(step_bits))?
        };
        Some(Cidr {
            addr: u128_to_ip(self.family(), ip_to_u128(self.addr) + offset),
            prefix,
        })
    }

    /// Number of subnets of length `prefix` (saturating).
    pub fn subnet_count(&self, prefix: u8) -> u128 {
        if prefix < self.prefix {
            return 0;
        }
        let bits = prefix - self.prefix;
        if bits >= 128 {
            u128::MAX
        } else {
            1u128 << bits
        }
    }

    /// Index of the subnet of length `prefix` containing `ip`.
    pub fn subnet_index_of(&self, prefix: u8, ip: IpAddr) -> Option<u128> {
        let offset = self.ordinal_of(ip)?;
        let step_bits = self.family().bits().checked_sub(prefix)?;
        Some(if step_bits >= 128 {
            0
        } else {
            offset >> step_bits
        })
    }

    /// A name usable as a Kubernetes object name (DNS-1123 subdomain):
    /// `10-0-0-0-26`, or for IPv6 the eight fully expanded groups,
    /// `fd00-0000-…-0000-122`, so that it never starts with a dash.
    pub fn to_object_name(&self) -> String {
        match self.addr {
            IpAddr::V4(a) => {
                let o = a.octets();
                format!("{}-{}-{}-{}-{}", o[0], o[1], o[2], o[3], self.prefix)
            }
            IpAddr::V6(a) => {
                let mut s = String::with_capacity(45);
                for g in a.segments() {
                    s.push_str(&format!("{g:04x}-"));
                }
                s.push_str(&self.prefix.to_string());
                s
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        Cidr::parse_strict(s)
    }
}

fn mask(family: IpFamily, prefix: u8) -> u128 {
    let bits = family.bits();
    if prefix == 0 {
        return 0;
    }
    let all = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    // prefix >= 1, so the host part is at most 127 bits and the shift is defined.
    let host = bits - prefix;
    all & !((1u128 << host) - 1)
}

/// The address as an unsigned number (IPv4 in the low 32 bits).
pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Inverse of [`ip_to_u128`]; IPv4 values are truncated to 32 bits.
pub fn u128_to_ip(family: IpFamily, value: u128) -> IpAddr {
    match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().expect("test CIDR")
    }

    #[test]
    fn parses_and_prints_canonically() {
        assert_eq!(c("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(c("fd00::/48").to_string(), "fd00::/48");
        assert_eq!(c("0.0.0.0/0").size(), 1u128 << 32);
        assert_eq!(c("::/0").size(), u128::MAX);
    }

    #[test]
    fn refuses_bad_text() {
        assert!(matches!(
            Cidr::parse_strict("10.0.0.1/8"),
            Err(CidrError::HostBits { .. })
        ));
        assert!(matches!(
            Cidr::parse_strict("10.0.0.0"),
            Err(CidrError::Syntax(_))
        ));
        assert!(matches!(
            Cidr::parse_strict("10.0.0.0/33"),
            Err(CidrError::Prefix { max: 32, .. })
        ));
        assert!(matches!(
            Cidr::parse_strict("fd00::/129"),
            Err(CidrError::Prefix { max: 128, .. })
        ));
        assert!(matches!(
            Cidr::parse_strict("10.0.0.0/+8"),
            Err(CidrError::Prefix { .. })
        ));
        assert!(matches!(
            Cidr::parse_strict("10.0.0/8"),
            Err(CidrError::Address(_))
        ));
        let err = Cidr::parse_strict("10.1.2.3/16").unwrap_err().to_string();
        assert!(err.contains("10.1.0.0/16"), "{err}");
    }

    #[test]
    fn masks_every_prefix_length() {
        let ip: IpAddr = "255.255.255.255".parse().unwrap();
        for p in 0..=32u8 {
            let n = Cidr::new_truncating(ip, p).unwrap();
            assert_eq!(
                n.addr()
                    .to_string()
                    .parse::<Ipv4Addr>()
                    .unwrap()
                    .to_bits()
                    .leading_ones(),
                u32::from(p)
            );
        }
        let ip6: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        for p in 0..=128u8 {
            let n = Cidr::new_truncating(ip6, p).unwrap();
            assert_eq!(ip_to_u128(n.addr()).leading_ones(), u32::from(p));
        }
    }

    #[test]
    fn containment_and_overlap() {
        assert!(c("10.0.0.0/8").contains("10.255.1.1".parse().unwrap()));
        assert!(!c("10.0.0.0/8").contains("11.0.0.0".parse().unwrap()));
        assert!(!c("10.0.0.0/8").contains("::a00:1".parse().unwrap()));
        assert!(c("10.0.0.0/8").overlaps(&c("10.1.0.0/16")));
        assert!(c("10.1.0.0/16").overlaps(&c("10.0.0.0/8")));
        assert!(!c("10.1.0.0/16").overlaps(&c("10.2.0.0/16")));
        assert!(!c("10.0.0.0/8").overlaps(&c("fd00::/8")));
    }

    #[test]
    fn subnets_and_ordinals() {
        let pool = c("10.0.0.0/24");
        assert_eq!(pool.subnet_count(26), 4);
        assert_eq!(pool.subnet(26, 3), Some(c("10.0.0.192/26")));
        assert_eq!(pool.subnet(26, 4), None);
        assert_eq!(
            pool.subnet_index_of(26, "10.0.0.130".parse().unwrap()),
            Some(2)
        );
        let block = c("10.0.0.64/26");
        assert_eq!(block.nth(0), Some("10.0.0.64".parse().unwrap()));
        assert_eq!(block.nth(63), Some("10.0.0.127".parse().unwrap()));
        assert_eq!(block.nth(64), None);
        assert_eq!(block.ordinal_of("10.0.0.100".parse().unwrap()), Some(36));
        let v6 = c("fd00::/120");
        assert_eq!(v6.subnet(122, 1), Some(c("fd00::40/122")));
    }

    #[test]
    fn object_names_are_dns_subdomains() {
        assert_eq!(c("10.0.0.64/26").to_object_name(), "10-0-0-64-26");
        assert_eq!(
            c("::/122").to_object_name(),
            "0000-0000-0000-0000-0000-0000-0000-0000-122"
        );
        assert_eq!(
            c("fd00::40/122").to_object_name(),
            "fd00-0000-0000-0000-0000-0000-0000-0040-122"
        );
    }
}
