//! RIB behaviour: import checks, decision, reflection, graceful restart,
//! prefix limits, policy changes.

use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::codec::{AsPath, MpReach, MpUnreach, Origin};

const AS: u32 = 65000;
const RID: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);
const CLUSTER: Ipv4Addr = Ipv4Addr::new(10, 255, 255, 1);

fn rib(multipath: bool) -> Rib {
    Rib::new(RibConfig {
        local_as: AS,
        router_id: RID,
        cluster_id: CLUSTER,
        multipath,
    })
}

fn pfx(s: &str) -> Prefix {
    s.parse().expect("prefix")
}

fn addr(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
}

fn policy(n: u8, asn: u32) -> PeerPolicy {
    let mut c = crate::config::PeerConfig::new(addr(n), asn);
    if asn != AS {
        c.import = Some(PrefixFilter::accept_all());
        c.export = Some(PrefixFilter::accept_all());
    }
    PeerPolicy::from_config(&c)
}

fn up(rib: &mut Rib, id: PeerId, n: u8) -> Vec<RibOutput> {
    rib.peer_up(
        id,
        SessionInfo {
            router_id: Ipv4Addr::new(1, 1, 1, n),
            families: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
            local_address: addr(100),
            preserved: None,
        },
    )
}

fn attrs(path: &[u32]) -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence(path.iter().copied())),
        ..PathAttributes::default()
    }
}

fn announce(nh: u8, a: PathAttributes, prefixes: &[&str]) -> Update {
    let mut a = a;
    a.next_hop = Some(Ipv4Addr::new(10, 0, 0, nh));
    Update {
        attributes: a,
        nlri: prefixes.iter().map(|s| pfx(s)).collect(),
        ..Update::default()
    }
}

fn withdraw(prefixes: &[&str]) -> Update {
    Update {
        withdrawn: prefixes.iter().map(|s| pfx(s)).collect(),
        ..Update::default()
    }
}

fn adverts(out: &[RibOutput], peer: PeerId) -> Vec<(Prefix, bool)> {
    out.iter()
        .filter_map(|o| match o {
            RibOutput::Advertise {
                peer: p,
                prefix,
                attrs,
            } if *p == peer => Some((*prefix, attrs.is_some())),
            _ => None,
        })
        .collect()
}

fn advert_attrs(out: &[RibOutput], peer: PeerId, prefix: &str) -> Option<AttrRef> {
    out.iter().find_map(|o| match o {
        RibOutput::Advertise {
            peer: p,
            prefix: x,
            attrs,
        } if *p == peer && *x == pfx(prefix) => attrs.clone(),
        _ => None,
    })
}

#[test]
fn ibgp_routes_reach_loc_rib_and_withdrawals_remove_them() {
    let mut r = rib(false);
    let a = r.add_peer(policy(1, AS));
    up(&mut r, a, 1);
    let (out, limit) = r.apply_update(a, &announce(1, attrs(&[]), &["10.1.0.0/24", "10.2.0.0/24"]));
    assert!(limit.is_none());
    assert!(out.contains(&RibOutput::BestChanged(pfx("10.1.0.0/24"))));
    let best = r.best_route(&pfx("10.1.0.0/24")).expect("best");
    assert_eq!(best.next_hops, vec![addr(1)]);
    assert_eq!(best.peer, addr(1));
    assert_eq!(r.counters(a).map(|c| c.accepted[0]), Some(2));

    let (out, _) = r.apply_update(a, &withdraw(&["10.1.0.0/24"]));
    assert_eq!(out, vec![RibOutput::BestChanged(pfx("10.1.0.0/24"))]);
    assert!(r.best_route(&pfx("10.1.0.0/24")).is_none());
    assert_eq!(r.counters(a).map(|c| c.received[0]), Some(1));
}

#[test]
fn own_as_in_path_is_rejected_without_error() {
    let mut r = rib(false);
    let e = r.add_peer(policy(11, 65011));
    up(&mut r, e, 11);
    let (out, _) = r.apply_update(e, &announce(11, attrs(&[65011, AS, 7]), &["10.3.0.0/24"]));
    assert!(out.is_empty());
    let inn = r.adj_rib_in(e);
    assert_eq!(inn.len(), 1);
    assert_eq!(inn[0].rejected, Some(Rejection::AsLoop));
    let c = r.counters(e).expect("counters");
    assert_eq!((c.received[0], c.accepted[0]), (1, 0));
}

#[test]
fn originator_id_equal_to_ours_and_our_cluster_id_are_loops() {
    let mut r = rib(false);
    let a = r.add_peer(policy(1, AS));
    up(&mut r, a, 1);
    let mut own = attrs(&[]);
    own.originator_id = Some(RID);
    r.apply_update(a, &announce(1, own, &["10.4.0.0/24"]));
    let mut clustered = attrs(&[]);
    clustered.originator_id = Some(Ipv4Addr::new(1, 2, 3, 4));
    clustered.cluster_list = vec![Ipv4Addr::new(7, 7, 7, 7), CLUSTER];
    r.apply_update(a, &announce(1, clustered, &["10.5.0.0/24"]));
    let reasons: Vec<_> = r.adj_rib_in(a).iter().map(|v| v.rejected).collect();
    assert_eq!(
        reasons,
        vec![
            Some(Rejection::OriginatorLoop),
            Some(Rejection::ClusterLoop)
        ]
    );
    assert!(r.best_routes().is_empty());
}

#[test]
fn ebgp_first_as_must_be_the_peer_and_ibgp_attributes_are_dropped() {
    let mut r = rib(false);
    let e = r.add_peer(policy(11, 65011));
    up(&mut r, e, 11);
    r.apply_update(e, &announce(11, attrs(&[65099]), &["10.6.0.0/24"]));
    assert_eq!(
        r.adj_rib_in(e)[0].rejected,
        Some(Rejection::FirstAsMismatch)
    );
    let mut a = attrs(&[65011]);
    a.local_pref = Some(500);
    a.originator_id = Some(RID);
    r.apply_update(e, &announce(11, a, &["10.7.0.0/24"]));
    let best = r.best_route(&pfx("10.7.0.0/24")).expect("accepted");
    assert_eq!(best.attrs.attrs.local_pref, None);
    assert_eq!(best.attrs.attrs.originator_id, None);
}

#[test]
fn rfc8212_ebgp_without_import_policy_accepts_nothing() {
    let mut r = rib(false);
    let c = crate::config::PeerConfig::new(addr(11), 65011);
    let e = r.add_peer(PeerPolicy::from_config(&c));
    up(&mut r, e, 11);
    r.apply_update(e, &announce(11, attrs(&[65011]), &["10.8.0.0/24"]));
    assert_eq!(r.adj_rib_in(e)[0].rejected, Some(Rejection::Policy));
    // Giving it a policy re-evaluates what it already sent.
    let mut c2 = c.clone();
    c2.import = Some(PrefixFilter::accept_within([pfx("10.0.0.0/8")]));
    let out = r.update_peer(e, PeerPolicy::from_config(&c2));
    assert!(out.contains(&RibOutput::BestChanged(pfx("10.8.0.0/24"))));
    assert!(r.best_route(&pfx("10.8.0.0/24")).is_some());
}

#[test]
fn prefix_limit_is_reported_with_family_and_limit() {
    let mut r = rib(false);
    let mut p = policy(1, AS);
    p.max_prefixes = Some(2);
    let a = r.add_peer(p);
    up(&mut r, a, 1);
    let (_, limit) = r.apply_update(a, &announce(1, attrs(&[]), &["10.1.0.0/24", "10.2.0.0/24"]));
    assert!(limit.is_none());
    let (_, limit) = r.apply_update(a, &announce(1, attrs(&[]), &["10.3.0.0/24"]));
    assert_eq!(
        limit,
        Some(PrefixLimitExceeded {
            family: Family::IPV4_UNICAST,
            limit: 2
        })
    );
}

#[test]
fn route_reflector_reflects_between_clients_with_originator_and_cluster_list() {
    let mut r = rib(false);
    let mut c1p = policy(1, AS);
    c1p.rr_client = true;
    let mut c2p = policy(2, AS);
    c2p.rr_client = true;
    let c1 = r.add_peer(c1p);
    let c2 = r.add_peer(c2p);
    let n = r.add_peer(policy(3, AS));
    let n2 = r.add_peer(policy(4, AS));
    for (id, k) in [(c1, 1), (c2, 2), (n, 3), (n2, 4)] {
        up(&mut r, id, k);
    }
    let (out, _) = r.apply_update(c1, &announce(1, attrs(&[]), &["10.10.0.0/24"]));
    // To the other client and to the non-clients, never back to c1.
    assert_eq!(adverts(&out, c1), vec![]);
    assert_eq!(adverts(&out, c2), vec![(pfx("10.10.0.0/24"), true)]);
    assert_eq!(adverts(&out, n), vec![(pfx("10.10.0.0/24"), true)]);
    let a = advert_attrs(&out, c2, "10.10.0.0/24").expect("reflected");
    assert_eq!(a.attrs.originator_id, Some(Ipv4Addr::new(1, 1, 1, 1)));
    assert_eq!(a.attrs.cluster_list, vec![CLUSTER]);
    assert_eq!(a.next_hop, Some(NextHop::V4(Ipv4Addr::new(10, 0, 0, 1))));

    // A non-client's route goes to clients only.
    let (out, _) = r.apply_update(n, &announce(3, attrs(&[]), &["10.11.0.0/24"]));
    assert_eq!(adverts(&out, c1).len(), 1);
    assert_eq!(adverts(&out, c2).len(), 1);
    assert!(adverts(&out, n2).is_empty(), "iBGP split horizon");

    // Withdrawal follows the same paths.
    let (out, _) = r.apply_update(c1, &withdraw(&["10.10.0.0/24"]));
    assert_eq!(adverts(&out, c2), vec![(pfx("10.10.0.0/24"), false)]);
    assert_eq!(adverts(&out, n), vec![(pfx("10.10.0.0/24"), false)]);
    assert_eq!(r.counters(c2).map(|c| c.advertised[0]), Some(1));
}

#[test]
fn without_reflection_ibgp_routes_are_not_passed_on() {
    let mut r = rib(false);
    let a = r.add_peer(policy(1, AS));
    let b = r.add_peer(policy(2, AS));
    up(&mut r, a, 1);
    up(&mut r, b, 2);
    let (out, _) = r.apply_update(a, &announce(1, attrs(&[]), &["10.12.0.0/24"]));
    assert!(adverts(&out, b).is_empty());
}

#[test]
fn local_routes_go_to_every_ibgp_peer_and_ebgp_with_prepend() {
    let mut r = rib(false);
    let i = r.add_peer(policy(1, AS));
    let mut ep = policy(11, 65011);
    ep.as_path_prepend = 1;
    let e = r.add_peer(ep);
    up(&mut r, i, 1);
    up(&mut r, e, 11);
    let local = RouteAttrs {
        attrs: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::default()),
            ..PathAttributes::default()
        },
        next_hop: None,
    };
    let out = r.announce_local(&pfx("10.20.0.0/26"), local);
    assert!(
        !out.iter().any(|o| matches!(o, RibOutput::BestChanged(_))),
        "our own routes are not news to the agent"
    );
    let to_i = advert_attrs(&out, i, "10.20.0.0/26").expect("to ibgp");
    assert_eq!(
        to_i.next_hop,
        Some(NextHop::V4(Ipv4Addr::new(10, 0, 0, 100)))
    );
    assert_eq!(to_i.attrs.local_pref, Some(100));
    let to_e = advert_attrs(&out, e, "10.20.0.0/26").expect("to ebgp");
    assert_eq!(to_e.attrs.as_path, Some(AsPath::from_sequence([AS, AS])));
    // Our own route is not a "best route learned from a peer".
    assert!(r.best_route(&pfx("10.20.0.0/26")).is_none());
    let out = r.withdraw_local(&pfx("10.20.0.0/26"));
    assert_eq!(adverts(&out, i), vec![(pfx("10.20.0.0/26"), false)]);
    assert_eq!(adverts(&out, e), vec![(pfx("10.20.0.0/26"), false)]);
}

#[test]
fn a_new_session_gets_the_whole_table() {
    let mut r = rib(false);
    let a = r.add_peer(policy(1, AS));
    up(&mut r, a, 1);
    r.apply_update(a, &announce(1, attrs(&[]), &["10.1.0.0/24"]));
    let local = RouteAttrs {
        attrs: attrs(&[]),
        next_hop: None,
    };
    r.announce_local(&pfx("10.30.0.0/24"), local);
    let mut cp = policy(2, AS);
    cp.rr_client = true;
    let c = r.add_peer(cp);
    let out = up(&mut r, c, 2);
    let mut got = adverts(&out, c);
    got.sort();
    assert_eq!(
        got,
        vec![(pfx("10.1.0.0/24"), true), (pfx("10.30.0.0/24"), true)]
    );
    assert_eq!(r.counters(c).map(|x| x.advertised[0]), Some(2));
}

#[test]
fn graceful_restart_helper_keeps_stale_routes_until_end_of_rib() {
    let mut r = rib(false);
    let a = r.add_peer(policy(1, AS));
    up(&mut r, a, 1);
    r.apply_update(a, &announce(1, attrs(&[]), &["10.1.0.0/24", "10.2.0.0/24"]));
    let out = r.peer_down(a, &[Family::IPV4_UNICAST]);
    assert!(out.is_empty(), "stale routes stay: {out:?}");
    let best = r.best_route(&pfx("10.1.0.0/24")).expect("kept");
    assert!(best.stale);
    // Back, preserving IPv4; re-announces one prefix only.
    r.peer_up(
        a,
        SessionInfo {
            router_id: Ipv4Addr::new(1, 1, 1, 1),
            families: vec![Family::IPV4_UNICAST],
            local_address: addr(100),
            preserved: Some(vec![Family::IPV4_UNICAST]),
        },
    );
    r.apply_update(a, &announce(1, attrs(&[]), &["10.1.0.0/24"]));
    assert!(!r.best_route(&pfx("10.1.0.0/24")).expect("fresh").stale);
    assert!(
        r.best_route(&pfx("10.2.0.0/24"))
            .expect("still stale")
            .stale
    );
    let out = r.end_of_stale(a, Some(Family::IPV4_UNICAST));
    assert_eq!(out, vec![RibOutput::BestChanged(pfx("10.2.0.0/24"))]);
    assert!(r.best_route(&pfx("10.2.0.0/24")).is_none());
    assert!(!r.has_stale(a));
}

#[test]
fn stale_routes_flushed_when_peer_comes_back_without_forwarding_state() {
    let mut r = rib(false);
    let a = r.add_peer(policy(1, AS));
    up(&mut r, a, 1);
    r.apply_update(a, &announce(1, attrs(&[]), &["10.1.0.0/24"]));
    r.peer_down(a, &[Family::IPV4_UNICAST]);
    let out = r.peer_up(
        a,
        SessionInfo {
            router_id: Ipv4Addr::new(1, 1, 1, 1),
            families: vec![Family::IPV4_UNICAST],
            local_address: addr(100),
            preserved: Some(vec![]),
        },
    );
    assert!(out.contains(&RibOutput::BestChanged(pfx("10.1.0.0/24"))));
    assert!(r.best_route(&pfx("10.1.0.0/24")).is_none());
}

#[test]
fn session_down_without_graceful_restart_withdraws_everything() {
    let mut r = rib(false);
    let a = r.add_peer(policy(1, AS));
    let mut cp = policy(2, AS);
    cp.rr_client = true;
    let c = r.add_peer(cp);
    up(&mut r, a, 1);
    up(&mut r, c, 2);
    r.apply_update(a, &announce(1, attrs(&[]), &["10.1.0.0/24"]));
    let out = r.peer_down(a, &[]);
    assert_eq!(adverts(&out, c), vec![(pfx("10.1.0.0/24"), false)]);
    assert_eq!(r.counters(a).map(|x| x.received), Some([0, 0]));
}

#[test]
fn restarting_speaker_defers_advertisements() {
    let mut r = rib(false);
    r.set_deferring(true);
    let a = r.add_peer(policy(1, AS));
    let mut cp = policy(2, AS);
    cp.rr_client = true;
    let c = r.add_peer(cp);
    assert!(up(&mut r, a, 1).is_empty());
    up(&mut r, c, 2);
    let (out, _) = r.apply_update(a, &announce(1, attrs(&[]), &["10.1.0.0/24"]));
    assert!(adverts(&out, c).is_empty());
    r.end_deferral();
    let out = r.export_all(c, Family::IPV4_UNICAST);
    assert_eq!(adverts(&out, c), vec![(pfx("10.1.0.0/24"), true)]);
}

#[test]
fn multipath_reports_every_equal_next_hop() {
    let mut r = rib(true);
    let a = r.add_peer(policy(1, AS));
    let b = r.add_peer(policy(2, AS));
    up(&mut r, a, 1);
    up(&mut r, b, 2);
    r.apply_update(a, &announce(1, attrs(&[7]), &["10.1.0.0/24"]));
    let (out, _) = r.apply_update(b, &announce(2, attrs(&[8]), &["10.1.0.0/24"]));
    // Best stays with peer 1 (lower router id) but the set grew.
    assert_eq!(out, vec![RibOutput::BestChanged(pfx("10.1.0.0/24"))]);
    let best = r.best_route(&pfx("10.1.0.0/24")).expect("best");
    assert_eq!(best.next_hops, vec![addr(1), addr(2)]);
    // A longer path drops out of the set.
    r.apply_update(b, &announce(2, attrs(&[8, 9]), &["10.1.0.0/24"]));
    assert_eq!(
        r.best_route(&pfx("10.1.0.0/24")).expect("best").next_hops,
        vec![addr(1)]
    );
}

#[test]
fn ipv6_routes_over_mp_reach_and_unreach() {
    let mut r = rib(false);
    let a = r.add_peer(policy(1, AS));
    up(&mut r, a, 1);
    let nh = NextHop::V6 {
        global: "fd00::1".parse().expect("v6"),
        link_local: None,
    };
    let u = Update {
        attributes: attrs(&[]),
        mp_reach: Some(MpReach {
            family: Family::IPV6_UNICAST,
            next_hop: nh,
            nlri: vec![pfx("fd00:10::/64")],
        }),
        ..Update::default()
    };
    r.apply_update(a, &u);
    let best = r.best_route(&pfx("fd00:10::/64")).expect("v6 best");
    assert_eq!(
        best.next_hops,
        vec!["fd00::1".parse::<IpAddr>().expect("v6")]
    );
    assert_eq!(r.counters(a).map(|c| c.accepted), Some([0, 1]));
    let u = Update {
        mp_unreach: Some(MpUnreach {
            family: Family::IPV6_UNICAST,
            withdrawn: vec![pfx("fd00:10::/64")],
        }),
        ..Update::default()
    };
    r.apply_update(a, &u);
    assert!(r.best_route(&pfx("fd00:10::/64")).is_none());
}

#[test]
fn export_policy_change_withdraws_what_no_longer_passes() {
    let mut r = rib(false);
    let e = r.add_peer(policy(11, 65011));
    up(&mut r, e, 11);
    let local = RouteAttrs {
        attrs: attrs(&[]),
        next_hop: None,
    };
    r.announce_local(&pfx("10.40.0.0/24"), local.clone());
    r.announce_local(&pfx("10.41.0.0/24"), local);
    assert_eq!(r.counters(e).map(|c| c.advertised[0]), Some(2));
    let mut p = policy(11, 65011);
    p.export = Some(PrefixFilter::accept_within([pfx("10.40.0.0/16")]));
    let out = r.update_peer(e, p);
    let mut got = adverts(&out, e);
    got.sort();
    assert_eq!(
        got,
        vec![(pfx("10.40.0.0/24"), true), (pfx("10.41.0.0/24"), false)]
    );
    assert_eq!(r.counters(e).map(|c| c.advertised[0]), Some(1));
}

#[test]
fn removing_a_peer_withdraws_its_routes_and_frees_its_slot() {
    let mut r = rib(false);
    let a = r.add_peer(policy(1, AS));
    up(&mut r, a, 1);
    r.apply_update(a, &announce(1, attrs(&[]), &["10.1.0.0/24"]));
    let out = r.remove_peer(a);
    assert_eq!(out, vec![RibOutput::BestChanged(pfx("10.1.0.0/24"))]);
    assert_eq!(r.prefix_count(), 0);
    assert_eq!(r.add_peer(policy(2, AS)), a, "slot reused");
}

#[test]
fn attribute_sets_are_shared_between_prefixes() {
    let mut r = rib(false);
    let a = r.add_peer(policy(1, AS));
    up(&mut r, a, 1);
    let many: Vec<String> = (0..200)
        .map(|i| format!("10.{}.{}.0/24", i / 250, i % 250))
        .collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    r.apply_update(a, &announce(1, attrs(&[]), &refs));
    assert_eq!(r.prefix_count(), 200);
    assert_eq!(r.attribute_sets(), 1);
}
