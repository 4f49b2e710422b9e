//! Host-side sysctls of an endpoint interface, Calico style: the pod's
//! default gateway 169.254.1.1 is answered by proxy ARP on the host side
//! (without the usual random delay), the host forwards for it, and for IPv6
//! the host answers neighbour solicitations for the pod's gateway.

use super::endpoints::Families;

/// One sysctl: its path under `/proc/sys` and the value it must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    pub path: String,
    pub value: &'static str,
}

/// The sysctls `ifname` needs.
pub fn for_interface(ifname: &str, families: Families) -> Vec<Sysctl> {
    let s = |path: String, value| Sysctl { path, value };
    let mut out = Vec::new();
    if families.v4 {
        out.push(s(format!("net/ipv4/conf/{ifname}/proxy_arp"), "1"));
        out.push(s(format!("net/ipv4/neigh/{ifname}/proxy_delay"), "0"));
        out.push(s(format!("net/ipv4/conf/{ifname}/forwarding"), "1"));
    }
    if families.v6 {
        out.push(s(format!("net/ipv6/conf/{ifname}/proxy_ndp"), "1"));
        out.push(s(format!("net/ipv6/conf/{ifname}/forwarding"), "1"));
        // The pod's IPv6 default route points at this side's link-local address.
        out.push(s(format!("net/ipv6/conf/{ifname}/disable_ipv6"), "0"));
    }
    out
}

/// Whether `ifname` is a safe path component (what the kernel accepts as a
/// link name); anything else is refused before it becomes a path.
pub fn is_valid_ifname(ifname: &str) -> bool {
    !ifname.is_empty()
        && ifname.len() <= 15
        && ifname != "."
        && ifname != ".."
        && !ifname.contains(['/', ':'])
        && !ifname.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_decide_the_sysctls() {
        let v4 = for_interface(
            "mgy1",
            Families {
                v4: true,
                v6: false,
            },
        );
        assert!(
            v4.iter()
                .any(|s| s.path == "net/ipv4/conf/mgy1/proxy_arp" && s.value == "1")
        );
        assert!(
            v4.iter()
                .any(|s| s.path == "net/ipv4/neigh/mgy1/proxy_delay" && s.value == "0")
        );
        assert!(v4.iter().all(|s| !s.path.contains("ipv6")));
        let both = for_interface("mgy1", Families { v4: true, v6: true });
        assert!(
            both.iter()
                .any(|s| s.path == "net/ipv6/conf/mgy1/proxy_ndp")
        );
        assert!(for_interface("mgy1", Families::default()).is_empty());
    }

    #[test]
    fn interface_names_that_would_escape_the_path_are_refused() {
        assert!(is_valid_ifname("mgy0123456789a"));
        assert!(!is_valid_ifname("../../etc"));
        assert!(!is_valid_ifname(".."));
        assert!(!is_valid_ifname(""));
        assert!(!is_valid_ifname("waytoolonginterfacename"));
    }
}
