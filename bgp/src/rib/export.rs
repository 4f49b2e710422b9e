//! What we advertise to a peer, and with which attributes (pure).
//!
//! There is no stored Adj-RIB-Out: what a peer should hold for a prefix is
//! a function of the prefix's best path and the peer's settings, so it is
//! computed when the best path changes (and for `routes` queries). That
//! saves a copy of the table per peer, which matters with 200 peers; the
//! session's outbound queue holds only what has not been sent yet.
//!
//! Rules, in order: never back to the peer the path came from; honour
//! NO_ADVERTISE and NO_EXPORT; iBGP-learned paths go to iBGP peers only
//! through route reflection (RFC 4456 §6: a client's routes go to everyone,
//! a non-client's to clients only); the export policy (RFC 8212 default on
//! eBGP); an eBGP peer whose AS is already in the path gets nothing.

use std::net::{IpAddr, Ipv4Addr};

use super::attrs::RouteAttrs;
use super::decision::DEFAULT_LOCAL_PREF;
use super::table::{LOCAL, Path, PeerId};
use crate::codec::{Community, NextHop, Prefix};
use crate::policy::{FilterAction, PrefixFilter, effective_action};

/// What the export rules need to know about the receiving peer.
#[derive(Clone, Debug)]
pub struct ExportTarget<'a> {
    /// The receiving peer's id.
    pub id: PeerId,
    /// In another AS.
    pub ebgp: bool,
    /// Its AS.
    pub asn: u32,
    /// Our route-reflector client.
    pub rr_client: bool,
    /// Its BGP identifier (from its OPEN).
    pub router_id: Ipv4Addr,
    /// Rewrite the next hop to ours on routes that are not reflected.
    pub next_hop_self: bool,
    /// Extra prepends on eBGP.
    pub as_path_prepend: u8,
    /// Export policy.
    pub export: Option<&'a PrefixFilter>,
    /// Our address on the session.
    pub local_address: IpAddr,
    /// IPv6 next hop to use when the session is IPv4.
    pub ipv6_next_hop: Option<std::net::Ipv6Addr>,
}

/// What we know about where a path came from.
#[derive(Clone, Copy, Debug)]
pub struct ExportSource {
    /// LOCAL for our own routes.
    pub id: PeerId,
    /// From an eBGP peer.
    pub ebgp: bool,
    /// From a route-reflector client.
    pub rr_client: bool,
    /// The source peer's BGP identifier.
    pub router_id: Ipv4Addr,
}

/// Speaker-wide values the rules use.
#[derive(Clone, Copy, Debug)]
pub struct ExportContext {
    /// Our AS.
    pub local_as: u32,
    /// Our cluster id (for CLUSTER_LIST).
    pub cluster_id: Ipv4Addr,
}

/// The decision for one path to one peer, before attributes are built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportPlan {
    /// Next hop to set (`None`: keep the path's).
    pub next_hop: Option<NextHop>,
    /// iBGP-learned path sent to an iBGP peer: add ORIGINATOR_ID and our
    /// cluster id.
    pub reflect: bool,
}

/// Decides whether `path` for `prefix` goes to `to`, and how.
pub fn plan(
    prefix: &Prefix,
    path: &Path,
    from: &ExportSource,
    to: &ExportTarget<'_>,
) -> Option<ExportPlan> {
    if from.id == to.id && from.id != LOCAL {
        return None;
    }
    let a = &path.attrs.attrs;
    if a.communities.contains(&Community::NO_ADVERTISE) {
        return None;
    }
    if to.ebgp && a.communities.contains(&Community::NO_EXPORT) {
        return None;
    }
    let from_ibgp = from.id != LOCAL && !from.ebgp;
    let reflect = from_ibgp && !to.ebgp;
    if reflect && !from.rr_client && !to.rr_client {
        // iBGP split horizon: a non-client's route never goes to another
        // non-client.
        return None;
    }
    if reflect && a.originator_id == Some(to.router_id) {
        // The peer would drop its own route (RFC 4456 §8); do not send it.
        return None;
    }
    if effective_action(to.export, to.ebgp, prefix) == FilterAction::Reject {
        return None;
    }
    if to.ebgp && a.as_path.as_ref().is_some_and(|p| p.contains(to.asn)) {
        return None;
    }
    let rewrite = to.ebgp || path.attrs.next_hop.is_none() || (to.next_hop_self && !reflect);
    let next_hop = if rewrite {
        Some(self_next_hop(prefix, to)?)
    } else {
        None
    };
    Some(ExportPlan { next_hop, reflect })
}

/// Our next hop for `prefix` on the session to `to`, if we have one of the
/// right family.
fn self_next_hop(prefix: &Prefix, to: &ExportTarget<'_>) -> Option<NextHop> {
    match (prefix.is_ipv4(), to.local_address) {
        (true, IpAddr::V4(a)) => Some(NextHop::V4(a)),
        (true, IpAddr::V6(_)) => None,
        (false, IpAddr::V6(a)) => Some(NextHop::V6 {
            global: to.ipv6_next_hop.unwrap_or(a),
            link_local: None,
        }),
        (false, IpAddr::V4(_)) => to.ipv6_next_hop.map(|global| NextHop::V6 {
            global,
            link_local: None,
        }),
    }
}

/// Builds the attributes sent for `path` under `plan`.
pub fn attributes(
    ctx: &ExportContext,
    path: &Path,
    from: &ExportSource,
    to: &ExportTarget<'_>,
    plan: &ExportPlan,
) -> RouteAttrs {
    let mut out = RouteAttrs::clone(&path.attrs);
    if let Some(nh) = plan.next_hop {
        out.next_hop = Some(nh);
    }
    if to.ebgp {
        let mut as_path = out.attrs.as_path.take().unwrap_or_default();
        as_path.prepend(ctx.local_as, 1 + usize::from(to.as_path_prepend));
        out.attrs.as_path = Some(as_path);
        out.attrs.local_pref = None;
        out.attrs.originator_id = None;
        out.attrs.cluster_list.clear();
        if from.id != LOCAL {
            // A MED is only meaningful to the AS it was sent to
            // (RFC 4271 §5.1.4); keep only our own.
            out.attrs.med = None;
        }
    } else {
        if out.attrs.local_pref.is_none() {
            out.attrs.local_pref = Some(DEFAULT_LOCAL_PREF);
        }
        if out.attrs.as_path.is_none() {
            out.attrs.as_path = Some(Default::default());
        }
        if plan.reflect {
            if out.attrs.originator_id.is_none() {
                out.attrs.originator_id = Some(from.router_id);
            }
            out.attrs.cluster_list.insert(0, ctx.cluster_id);
        }
    }
    if out.attrs.origin.is_none() {
        out.attrs.origin = Some(crate::codec::Origin::Igp);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{AsPath, Origin, PathAttributes};
    use std::sync::Arc;

    const CTX: ExportContext = ExportContext {
        local_as: 65000,
        cluster_id: Ipv4Addr::new(10, 255, 0, 1),
    };

    fn path(peer: PeerId, as_path: &[u32], communities: Vec<Community>) -> Path {
        Path {
            attrs: Arc::new(RouteAttrs {
                attrs: PathAttributes {
                    origin: Some(Origin::Igp),
                    as_path: Some(AsPath::from_sequence(as_path.iter().copied())),
                    med: Some(7),
                    communities,
                    ..PathAttributes::default()
                },
                next_hop: if peer == LOCAL {
                    None
                } else {
                    Some(NextHop::V4(Ipv4Addr::new(10, 0, 0, peer as u8)))
                },
            }),
            peer,
            flags: 0,
            rejected: None,
        }
    }

    fn source(id: PeerId, ebgp: bool, rr_client: bool) -> ExportSource {
        ExportSource {
            id,
            ebgp,
            rr_client,
            router_id: Ipv4Addr::new(1, 1, 1, id as u8),
        }
    }

    fn target(id: PeerId, ebgp: bool, rr_client: bool) -> ExportTarget<'static> {
        ExportTarget {
            id,
            ebgp,
            asn: if ebgp { 65100 + id } else { 65000 },
            rr_client,
            router_id: Ipv4Addr::new(1, 1, 1, id as u8),
            next_hop_self: false,
            as_path_prepend: 0,
            export: None,
            local_address: "10.0.0.100".parse().expect("ip"),
            ipv6_next_hop: None,
        }
    }

    fn pfx() -> Prefix {
        "10.9.0.0/24".parse().expect("prefix")
    }

    #[test]
    fn ibgp_split_horizon_and_reflection_rules() {
        let p = path(1, &[], vec![]);
        let nonclient = source(1, false, false);
        let client = source(2, false, true);
        // Non-client to non-client: never.
        assert!(plan(&pfx(), &p, &nonclient, &target(3, false, false)).is_none());
        // Non-client to client: reflected.
        let pl = plan(&pfx(), &p, &nonclient, &target(3, false, true)).expect("to client");
        assert!(pl.reflect);
        // Client to non-client and to another client: reflected.
        assert!(plan(&pfx(), &p, &client, &target(3, false, false)).is_some());
        assert!(plan(&pfx(), &p, &client, &target(4, false, true)).is_some());
        // Never back to where it came from.
        assert!(plan(&pfx(), &p, &client, &target(2, false, true)).is_none());
    }

    #[test]
    fn reflection_sets_originator_and_prepends_cluster_id() {
        let p = path(2, &[], vec![]);
        let from = source(2, false, true);
        let to = target(3, false, true);
        let pl = plan(&pfx(), &p, &from, &to).expect("reflected");
        let a = attributes(&CTX, &p, &from, &to, &pl);
        assert_eq!(a.attrs.originator_id, Some(Ipv4Addr::new(1, 1, 1, 2)));
        assert_eq!(a.attrs.cluster_list, vec![CTX.cluster_id]);
        assert_eq!(a.attrs.local_pref, Some(100));
        // The reflector does not touch the next hop.
        assert_eq!(a.next_hop, p.attrs.next_hop);
        // A path already carrying the target's id as originator is not sent.
        let mut looped = RouteAttrs::clone(&p.attrs);
        looped.attrs.originator_id = Some(to.router_id);
        let p2 = Path {
            attrs: Arc::new(looped),
            ..p
        };
        assert!(plan(&pfx(), &p2, &from, &to).is_none());
    }

    #[test]
    fn ebgp_prepends_sets_next_hop_self_and_strips_ibgp_attributes() {
        let mut to = target(11, true, false);
        to.as_path_prepend = 2;
        let all = PrefixFilter::accept_all();
        to.export = Some(&all);
        let mut attrs = RouteAttrs::clone(&path(1, &[65001], vec![]).attrs);
        attrs.attrs.local_pref = Some(300);
        attrs.attrs.originator_id = Some(Ipv4Addr::new(9, 9, 9, 9));
        attrs.attrs.cluster_list = vec![Ipv4Addr::new(8, 8, 8, 8)];
        let p = Path {
            attrs: Arc::new(attrs),
            peer: 1,
            flags: 0,
            rejected: None,
        };
        let from = source(1, false, true);
        let pl = plan(&pfx(), &p, &from, &to).expect("exported");
        let a = attributes(&CTX, &p, &from, &to, &pl);
        assert_eq!(
            a.attrs.as_path,
            Some(AsPath::from_sequence([65000, 65000, 65000, 65001]))
        );
        assert_eq!(a.next_hop, Some(NextHop::V4(Ipv4Addr::new(10, 0, 0, 100))));
        assert_eq!(a.attrs.local_pref, None);
        assert_eq!(a.attrs.originator_id, None);
        assert!(a.attrs.cluster_list.is_empty());
        assert_eq!(a.attrs.med, None, "a learned MED is not passed to eBGP");
    }

    #[test]
    fn rfc8212_no_export_policy_means_nothing_to_ebgp() {
        let p = path(LOCAL, &[], vec![]);
        let from = source(LOCAL, false, false);
        assert!(plan(&pfx(), &p, &from, &target(11, true, false)).is_none());
        // iBGP without policy: everything.
        let pl = plan(&pfx(), &p, &from, &target(3, false, false)).expect("ibgp");
        assert_eq!(
            pl.next_hop,
            Some(NextHop::V4(Ipv4Addr::new(10, 0, 0, 100))),
            "own routes go out with our address"
        );
    }

    #[test]
    fn well_known_communities_and_as_loops() {
        let all = PrefixFilter::accept_all();
        let mut ebgp = target(11, true, false);
        ebgp.export = Some(&all);
        let from = source(LOCAL, false, false);
        let no_export = path(LOCAL, &[], vec![Community::NO_EXPORT]);
        assert!(plan(&pfx(), &no_export, &from, &ebgp).is_none());
        assert!(plan(&pfx(), &no_export, &from, &target(3, false, false)).is_some());
        let no_adv = path(LOCAL, &[], vec![Community::NO_ADVERTISE]);
        assert!(plan(&pfx(), &no_adv, &from, &target(3, false, false)).is_none());
        let ebgp_from = source(12, true, false);
        let looped = path(12, &[65200, ebgp.asn], vec![]);
        assert!(plan(&pfx(), &looped, &ebgp_from, &ebgp).is_none());
    }

    #[test]
    fn ipv6_next_hop_self_needs_an_ipv6_address() {
        let p6: Prefix = "fd00:9::/64".parse().expect("v6");
        let p = path(LOCAL, &[], vec![]);
        let from = source(LOCAL, false, false);
        let to = target(3, false, false);
        assert!(plan(&p6, &p, &from, &to).is_none());
        let mut to = target(3, false, false);
        to.ipv6_next_hop = Some("fd00::100".parse().expect("v6"));
        let pl = plan(&p6, &p, &from, &to).expect("configured v6 next hop");
        assert!(matches!(pl.next_hop, Some(NextHop::V6 { .. })));
    }
}
