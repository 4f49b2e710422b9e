//! Routes with protocol [`REMOTE_ROUTE_PROTOCOL`] as they should be and as
//! the kernel holds them, and the changes between the two (pure).
//!
//! Two kinds: routes to other nodes' prefixes (the speaker's best routes,
//! resolved through the [`RouteResolver`](crate::calc::remote_routes::RouteResolver))
//! and blackholes for this node's own affine blocks. Only what differs is
//! touched; ours that nothing wants are removed only once sweeping is on
//! (after BGP converged), so a restarted agent keeps forwarding.

use crate::calc::remote_routes::{RemotePath, RemoteRoute};
use margay_api::net::Cidr;
use std::collections::BTreeMap;

/// `rtm_protocol` of routes to remote blocks and of our blocks' blackholes
/// (87 is the local endpoints'). Each owner sweeps only its own number.
pub const REMOTE_ROUTE_PROTOCOL: u8 = 88;

/// One proto-88 route, without kernel details (interface names, not indexes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route88 {
    Blackhole,
    /// Paths sorted, MTU if set.
    Remote {
        paths: Vec<RemotePath>,
        mtu: Option<u32>,
    },
}

impl Route88 {
    pub fn from_remote(r: &RemoteRoute) -> Route88 {
        let mut paths = r.paths.clone();
        paths.sort();
        paths.dedup();
        Route88::Remote { paths, mtu: r.mtu }
    }
}

/// What to do to the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteChanges {
    pub replace: Vec<(Cidr, Route88)>,
    pub delete: Vec<(Cidr, Route88)>,
}

impl RouteChanges {
    pub fn is_empty(&self) -> bool {
        self.replace.is_empty() && self.delete.is_empty()
    }
}

/// The changes turning `kernel` into `wanted`; extra routes are deleted
/// only when `sweep`.
pub fn plan(
    wanted: &BTreeMap<Cidr, Route88>,
    kernel: &BTreeMap<Cidr, Route88>,
    sweep: bool,
) -> RouteChanges {
    let mut c = RouteChanges::default();
    for (prefix, w) in wanted {
        if kernel.get(prefix) != Some(w) {
            c.replace.push((*prefix, w.clone()));
        }
    }
    if sweep {
        for (prefix, k) in kernel {
            if !wanted.contains_key(prefix) {
                c.delete.push((*prefix, k.clone()));
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Cidr {
        s.parse().expect("cidr")
    }

    fn via(gws: &[&str]) -> Route88 {
        Route88::Remote {
            paths: gws
                .iter()
                .map(|g| RemotePath::Direct {
                    gateway: g.parse().expect("ip"),
                })
                .collect(),
            mtu: None,
        }
    }

    #[test]
    fn only_what_differs_changes_and_extras_go_only_when_sweeping() {
        let wanted = BTreeMap::from([
            (p("10.244.1.0/26"), via(&["10.0.0.2"])),
            (p("10.244.2.0/26"), via(&["10.0.0.3", "10.0.0.4"])),
            (p("10.244.0.0/26"), Route88::Blackhole),
        ]);
        let kernel = BTreeMap::from([
            (p("10.244.1.0/26"), via(&["10.0.0.2"])),
            (p("10.244.2.0/26"), via(&["10.0.0.3"])),
            (p("10.244.9.0/26"), via(&["10.0.0.9"])),
        ]);
        let c = plan(&wanted, &kernel, false);
        let replaced: Vec<String> = c.replace.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(replaced, ["10.244.0.0/26", "10.244.2.0/26"]);
        assert!(c.delete.is_empty(), "no sweep before convergence");
        let c = plan(&wanted, &kernel, true);
        assert_eq!(c.delete, vec![(p("10.244.9.0/26"), via(&["10.0.0.9"]))]);
        assert!(plan(&wanted, &wanted, true).is_empty());
    }
}
