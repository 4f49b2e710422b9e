//! Comparing the routes the agent wants with the routes the kernel holds.
//!
//! A wanted route is right when the main table has a route to exactly the
//! pod address (/32, /128) out of the endpoint's interface, in link scope,
//! with [`ROUTE_PROTOCOL`](super::ROUTE_PROTOCOL). Right routes are left
//! alone (no flap, no churn on restart); wrong or missing ones are replaced;
//! routes carrying our protocol that nothing wants are deleted, but only when
//! the caller says the wanted set is complete (caches synced, endpoints known).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// A host route as read from the kernel's main table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelRoute {
    pub dst: IpAddr,
    pub prefix_len: u8,
    /// Output interface index (0: none, e.g. a multipath or blackhole route).
    pub oif: u32,
    pub protocol: u8,
    /// Whether the scope is `link`.
    pub link_scope: bool,
}

impl KernelRoute {
    pub fn is_host_route(&self) -> bool {
        self.prefix_len == if self.dst.is_ipv4() { 32 } else { 128 }
    }
}

/// What to do to the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePlan {
    /// Routes to add or replace: (address, interface index).
    pub replace: Vec<(IpAddr, u32)>,
    /// Our routes to delete.
    pub delete: Vec<KernelRoute>,
    /// Wanted routes already right.
    pub in_place: usize,
    /// Wanted routes whose interface does not exist (yet): nothing to do
    /// until it appears.
    pub missing_interface: Vec<(IpAddr, String)>,
}

impl RoutePlan {
    pub fn is_noop(&self) -> bool {
        self.replace.is_empty() && self.delete.is_empty()
    }
}

/// IPv4 host routes to pods are link-scoped; the kernel keeps no scope on
/// IPv6 routes (always "global"), so only IPv4 ones are checked.
fn scope_ok(r: &KernelRoute) -> bool {
    r.link_scope || r.dst.is_ipv6()
}

/// Works out the changes. `links` maps interface names to indexes;
/// `sweep` allows deleting our routes that nothing wants.
pub fn plan(
    wanted: &BTreeMap<IpAddr, String>,
    kernel: &[KernelRoute],
    links: &BTreeMap<String, u32>,
    protocol: u8,
    sweep: bool,
) -> RoutePlan {
    let mut out = RoutePlan::default();
    // Every kernel host route by destination: there may be several (ours and
    // another daemon's, or two of ours on different interfaces).
    let mut by_dst: BTreeMap<IpAddr, Vec<&KernelRoute>> = BTreeMap::new();
    for r in kernel.iter().filter(|r| r.is_host_route()) {
        by_dst.entry(r.dst).or_default().push(r);
    }
    let mut satisfied: BTreeSet<(IpAddr, u32)> = BTreeSet::new();
    for (ip, ifname) in wanted {
        let Some(&index) = links.get(ifname) else {
            out.missing_interface.push((*ip, ifname.clone()));
            continue;
        };
        let right = by_dst.get(ip).is_some_and(|rs| {
            rs.iter()
                .any(|r| r.oif == index && r.protocol == protocol && scope_ok(r))
        });
        if right {
            out.in_place += 1;
            satisfied.insert((*ip, index));
        } else {
            out.replace.push((*ip, index));
            satisfied.insert((*ip, index));
        }
    }
    for r in kernel.iter().filter(|r| r.protocol == protocol) {
        let wanted_here = satisfied.contains(&(r.dst, r.oif)) && r.is_host_route();
        if sweep && !wanted_here {
            out.delete.push(r.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u8 = 87;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn kr(dst: &str, oif: u32, protocol: u8) -> KernelRoute {
        let dst = ip(dst);
        KernelRoute {
            prefix_len: if dst.is_ipv4() { 32 } else { 128 },
            dst,
            oif,
            protocol,
            // As the kernel reports them: IPv6 routes carry no link scope.
            link_scope: dst.is_ipv4(),
        }
    }

    fn wanted(pairs: &[(&str, &str)]) -> BTreeMap<IpAddr, String> {
        pairs.iter().map(|(a, i)| (ip(a), i.to_string())).collect()
    }

    fn links(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(n, i)| (n.to_string(), *i)).collect()
    }

    #[test]
    fn right_routes_are_left_alone() {
        let w = wanted(&[("10.0.0.1", "mgya"), ("fd00::1", "mgya")]);
        let k = [kr("10.0.0.1", 5, P), kr("fd00::1", 5, P)];
        let p = plan(&w, &k, &links(&[("mgya", 5)]), P, true);
        assert!(p.is_noop(), "{p:?}");
        assert_eq!(p.in_place, 2);
    }

    #[test]
    fn missing_and_wrong_routes_are_replaced() {
        let w = wanted(&[
            ("10.0.0.1", "mgya"),
            ("10.0.0.2", "mgyb"),
            ("10.0.0.3", "mgyb"),
        ]);
        let mut not_link = kr("10.0.0.3", 6, P);
        not_link.link_scope = false;
        // 10.0.0.1 missing; 10.0.0.2 via the wrong interface; 10.0.0.3 wrong scope.
        let k = [kr("10.0.0.2", 5, P), not_link];
        let p = plan(&w, &k, &links(&[("mgya", 5), ("mgyb", 6)]), P, false);
        assert_eq!(
            p.replace,
            vec![
                (ip("10.0.0.1"), 5),
                (ip("10.0.0.2"), 6),
                (ip("10.0.0.3"), 6)
            ]
        );
        assert!(p.delete.is_empty(), "no sweep before sync: {p:?}");
    }

    #[test]
    fn a_route_of_another_protocol_is_taken_over() {
        let w = wanted(&[("10.0.0.1", "mgya")]);
        let k = [kr("10.0.0.1", 5, 4)];
        let p = plan(&w, &k, &links(&[("mgya", 5)]), P, true);
        assert_eq!(p.replace, vec![(ip("10.0.0.1"), 5)]);
        assert!(
            p.delete.is_empty(),
            "other protocols are not ours to delete"
        );
    }

    #[test]
    fn sweep_deletes_only_our_unwanted_routes_and_only_when_allowed() {
        let w = wanted(&[("10.0.0.1", "mgya")]);
        let k = [
            kr("10.0.0.1", 5, P),
            kr("10.0.0.9", 7, P),
            kr("10.0.0.8", 7, 4),
            kr("10.0.0.1", 9, P), // a stale duplicate on an old interface
        ];
        let l = links(&[("mgya", 5)]);
        let p = plan(&w, &k, &l, P, false);
        assert!(p.is_noop(), "{p:?}");
        let p = plan(&w, &k, &l, P, true);
        assert_eq!(p.delete, vec![kr("10.0.0.9", 7, P), kr("10.0.0.1", 9, P)]);
        assert!(p.replace.is_empty());
    }

    #[test]
    fn interfaces_not_there_yet_are_reported_not_programmed() {
        let w = wanted(&[("10.0.0.1", "mgya")]);
        let p = plan(&w, &[], &links(&[]), P, true);
        assert!(p.is_noop());
        assert_eq!(p.missing_interface, vec![(ip("10.0.0.1"), "mgya".into())]);
    }
}
