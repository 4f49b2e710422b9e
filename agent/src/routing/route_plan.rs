//! Routes with protocol [`REMOTE_ROUTE_PROTOCOL`] as they should be and as
//! the kernel holds them, and the changes between the two (pure).
//!
//! Two kinds: routes to other nodes' prefixes (the speaker's best routes,
//! resolved through the [`RouteResolver`](crate::calc::remote_routes::RouteResolver))
//! and blackholes for this node's own affine blocks. Only what differs is
//! touched; ours that nothing wants are removed only once sweeping is on
//! (after BGP converged), so a restarted agent keeps forwarding.

use crate::calc::remote_routes::{RemotePath, RemoteRoute, RouteResolver};
use crate::routing::announce::Originated;
use margay_api::net::Cidr;
use std::collections::BTreeMap;
use std::net::IpAddr;

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

/// The proto-88 routes a node should hold: a blackhole per own affine
/// block, and (unless `install_learned` is false: a dedicated route
/// reflector) every learned best route the resolver can place — never one
/// for our own prefixes, nor a default route (the node's own default route
/// is not ours to replace).
pub fn wanted_routes(
    own: &Originated,
    learned: &BTreeMap<Cidr, Vec<IpAddr>>,
    install_learned: bool,
    resolver: &dyn RouteResolver,
) -> BTreeMap<Cidr, Route88> {
    let mut wanted: BTreeMap<Cidr, Route88> = own
        .blackholes
        .iter()
        .map(|c| (*c, Route88::Blackhole))
        .collect();
    if !install_learned {
        return wanted;
    }
    for (prefix, next_hops) in learned {
        if own.is_own(prefix) || prefix.prefix() == 0 {
            continue;
        }
        if let Some(r) = resolver.resolve(*prefix, next_hops) {
            wanted.insert(*prefix, Route88::from_remote(&r));
        }
    }
    wanted
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
    fn wanted_routes_skip_our_own_prefixes_the_default_route_and_unresolvable_ones() {
        use crate::calc::remote_routes::DirectResolver;
        let own = Originated {
            announce: [p("10.244.0.0/26"), p("10.244.9.7/32")].into(),
            blackholes: [p("10.244.0.0/26")].into(),
        };
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let learned = BTreeMap::from([
            (p("10.244.0.0/26"), vec![ip("10.0.0.2")]),
            (p("10.244.9.7/32"), vec![ip("10.0.0.2")]),
            (p("0.0.0.0/0"), vec![ip("10.0.0.254")]),
            (p("10.244.1.0/26"), vec![ip("10.0.0.2"), ip("10.0.0.3")]),
            (p("fd00:244::/122"), vec![ip("10.0.0.2")]),
        ]);
        let w = wanted_routes(&own, &learned, true, &DirectResolver);
        assert_eq!(
            w,
            BTreeMap::from([
                (p("10.244.0.0/26"), Route88::Blackhole),
                (p("10.244.1.0/26"), via(&["10.0.0.2", "10.0.0.3"])),
            ])
        );
        // A dedicated route reflector keeps only its blackholes.
        let rr = wanted_routes(&own, &learned, false, &DirectResolver);
        assert_eq!(
            rr,
            BTreeMap::from([(p("10.244.0.0/26"), Route88::Blackhole)])
        );
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
