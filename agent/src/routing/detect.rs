//! Which address is this node's: `--node-ip`/`--node-ipv6` when given, else
//! autodetection like Calico's `IP_AUTODETECTION_METHOD`. Pure: the caller
//! lists the host's addresses (and the Node's InternalIPs).

use crate::routing::node::IfAddr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One address on one interface of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddr {
    pub ifname: String,
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// How to find the node address (`--ip-autodetection-method`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetectMethod {
    /// The first global address of the first usable interface.
    FirstFound,
    /// The first address of the first interface whose name matches.
    Interface(String),
    /// The first address inside one of these networks.
    Cidr(Vec<margay_api::net::Cidr>),
    /// The Node's `status.addresses` InternalIP (found on an interface for
    /// its prefix length).
    KubernetesInternalIp,
}

impl std::str::FromStr for DetectMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<DetectMethod, String> {
        let s = s.trim();
        if s == "first-found" {
            return Ok(DetectMethod::FirstFound);
        }
        if s == "kubernetes-internal-ip" {
            return Ok(DetectMethod::KubernetesInternalIp);
        }
        if let Some(re) = s.strip_prefix("interface=") {
            // Validate the pattern now, so a typo fails at start.
            simple_match(re, "").map_err(|e| format!("{s:?}: {e}"))?;
            return Ok(DetectMethod::Interface(re.to_string()));
        }
        if let Some(list) = s.strip_prefix("cidr=") {
            let cidrs = list
                .split(',')
                .map(|c| {
                    margay_api::net::Cidr::parse_strict(c.trim())
                        .map_err(|e| format!("{s:?}: {c:?} is not a CIDR: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(DetectMethod::Cidr(cidrs));
        }
        Err(format!(
            "{s:?}: allowed first-found, interface=REGEX, cidr=CIDR[,CIDR], kubernetes-internal-ip"
        ))
    }
}

/// Anchored matching of a small regex subset: literals, `.`, `*` (after an
/// atom), `|` alternatives and `^`/`$` (ignored: matching is whole-name).
/// Enough for interface patterns like `eth.*`, `ens[0-9]` is not supported
/// and is refused rather than misread.
fn simple_match(pattern: &str, name: &str) -> Result<bool, String> {
    for alt in pattern.split('|') {
        let alt = alt.trim_start_matches('^').trim_end_matches('$');
        if alt.contains(['[', ']', '(', ')', '+', '?', '{', '}', '\\']) {
            return Err(format!(
                "interface pattern {pattern:?}: only literals, '.', '*' and '|' are supported"
            ));
        }
        if glob(alt.as_bytes(), name.as_bytes()) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match p {
        [] => s.is_empty(),
        [a, b'*', rest @ ..] => {
            let mut i = 0;
            loop {
                if glob(rest, &s[i..]) {
                    return true;
                }
                if i < s.len() && (*a == b'.' || s[i] == *a) {
                    i += 1;
                } else {
                    return false;
                }
            }
        }
        [a, rest @ ..] => !s.is_empty() && (*a == b'.' || s[0] == *a) && glob(rest, &s[1..]),
    }
}

/// Interfaces first-found never picks (ours, container and virtual ones).
fn excluded(ifname: &str) -> bool {
    const PREFIXES: [&str; 12] = [
        "lo",
        "mgy",
        "vxlan",
        "tunl",
        "docker",
        "cbr",
        "dummy",
        "virbr",
        "lxcbr",
        "veth",
        "cni",
        "kube-ipvs",
    ];
    PREFIXES.iter().any(|p| ifname.starts_with(p))
}

fn usable(a: &HostAddr) -> bool {
    match a.addr {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// Picks the address of family `v4` (true: IPv4) by `method`.
pub fn detect(
    method: &DetectMethod,
    host: &[HostAddr],
    internal_ips: &[IpAddr],
    v4: bool,
) -> Option<IfAddr<IpAddr>> {
    let candidates = host.iter().filter(|a| a.addr.is_ipv4() == v4 && usable(a));
    let found = match method {
        DetectMethod::FirstFound => candidates.filter(|a| !excluded(&a.ifname)).min_by(|a, b| {
            // Stable choice whatever order the kernel lists them in.
            (a.ifname.as_str(), a.addr).cmp(&(b.ifname.as_str(), b.addr))
        }),
        DetectMethod::Interface(re) => candidates
            .filter(|a| simple_match(re, &a.ifname).unwrap_or(false))
            .min_by(|a, b| (a.ifname.as_str(), a.addr).cmp(&(b.ifname.as_str(), b.addr))),
        DetectMethod::Cidr(cidrs) => {
            let mut c: Vec<&HostAddr> = candidates
                .filter(|a| cidrs.iter().any(|c| c.contains(a.addr)))
                .collect();
            c.sort_by_key(|a| a.addr);
            c.into_iter().next()
        }
        DetectMethod::KubernetesInternalIp => {
            let ip = internal_ips.iter().find(|ip| ip.is_ipv4() == v4)?;
            return Some(
                host.iter()
                    .find(|a| a.addr == *ip)
                    .map(|a| IfAddr {
                        addr: a.addr,
                        prefix_len: Some(a.prefix_len),
                    })
                    .unwrap_or(IfAddr {
                        addr: *ip,
                        prefix_len: None,
                    }),
            );
        }
    }?;
    Some(IfAddr {
        addr: found.addr,
        prefix_len: Some(found.prefix_len),
    })
}

/// An explicit `--node-ip`: its prefix length from the interface holding it.
pub fn explicit(ip: IpAddr, host: &[HostAddr]) -> IfAddr<IpAddr> {
    IfAddr {
        addr: ip,
        prefix_len: host.iter().find(|a| a.addr == ip).map(|a| a.prefix_len),
    }
}

pub fn as_v4(a: IfAddr<IpAddr>) -> Option<IfAddr<Ipv4Addr>> {
    match a.addr {
        IpAddr::V4(v4) => Some(IfAddr {
            addr: v4,
            prefix_len: a.prefix_len,
        }),
        IpAddr::V6(_) => None,
    }
}

pub fn as_v6(a: IfAddr<IpAddr>) -> Option<IfAddr<Ipv6Addr>> {
    match a.addr {
        IpAddr::V6(v6) => Some(IfAddr {
            addr: v6,
            prefix_len: a.prefix_len,
        }),
        IpAddr::V4(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(ifname: &str, a: &str, l: u8) -> HostAddr {
        HostAddr {
            ifname: ifname.into(),
            addr: a.parse().expect("ip"),
            prefix_len: l,
        }
    }

    fn host() -> Vec<HostAddr> {
        vec![
            h("lo", "127.0.0.1", 8),
            h("mgy0123456789a", "169.254.1.1", 32),
            h("eth1", "192.168.5.2", 24),
            h("eth0", "10.0.0.2", 24),
            h("eth0", "fe80::1", 64),
            h("eth0", "fd00:10::2", 64),
        ]
    }

    #[test]
    fn each_method_picks_the_expected_address() {
        let m = |s: &str| s.parse::<DetectMethod>().expect("method");
        let pick = |meth: &str, v4| {
            detect(&m(meth), &host(), &["192.168.5.2".parse().expect("ip")], v4)
                .map(|a| a.to_string())
        };
        assert_eq!(pick("first-found", true).as_deref(), Some("10.0.0.2/24"));
        assert_eq!(pick("first-found", false).as_deref(), Some("fd00:10::2/64"));
        assert_eq!(
            pick("interface=eth1", true).as_deref(),
            Some("192.168.5.2/24")
        );
        assert_eq!(
            pick("interface=en.*|eth1", true).as_deref(),
            Some("192.168.5.2/24")
        );
        assert_eq!(pick("interface=wlan.*", true), None);
        assert_eq!(
            pick("cidr=192.168.0.0/16,172.16.0.0/12", true).as_deref(),
            Some("192.168.5.2/24")
        );
        assert_eq!(
            pick("kubernetes-internal-ip", true).as_deref(),
            Some("192.168.5.2/24")
        );
        assert_eq!(pick("kubernetes-internal-ip", false), None);
    }

    #[test]
    fn bad_methods_are_refused_with_what_is_allowed() {
        let e = "magic".parse::<DetectMethod>().unwrap_err();
        assert!(e.contains("allowed first-found"), "{e}");
        assert!("cidr=10.0.0.0/33".parse::<DetectMethod>().is_err());
        assert!("interface=eth[0-9]".parse::<DetectMethod>().is_err());
    }
}
