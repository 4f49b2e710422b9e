//! Behaviour of the codec's value types that the FSM and RIB rely on:
//! negotiation, the uniform reach/unreach view, AS path helpers, prefixes.

mod common;

use std::net::Ipv4Addr;

use common::*;
use margay_bgp::codec::*;

#[test]
fn negotiation_intersects_families_and_capabilities() {
    let ours = Open::new(
        4_200_000_000,
        90,
        LOCAL_ID,
        Capabilities {
            multiprotocol: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
            route_refresh: true,
            enhanced_route_refresh: true,
            ..Default::default()
        },
    );
    assert_eq!(ours.my_as, 23456, "AS_TRANS in the 2-octet field");
    assert_eq!(ours.asn(), 4_200_000_000);
    let theirs = Open {
        my_as: 65001,
        hold_time: 30,
        bgp_id: Ipv4Addr::new(10, 0, 0, 2),
        capabilities: Capabilities {
            multiprotocol: vec![Family::IPV4_UNICAST],
            route_refresh: true,
            ..Default::default()
        },
    };
    let ctx = SessionContext::negotiate(&ours, &theirs);
    assert_eq!(ctx.local_as, 4_200_000_000);
    assert_eq!(ctx.peer_as, 65001);
    assert!(!ctx.four_octet_as, "the peer did not advertise 4-octet AS");
    assert_eq!(ctx.families, vec![Family::IPV4_UNICAST]);
    assert!(ctx.route_refresh && !ctx.enhanced_route_refresh);
    assert!(!ctx.is_ibgp());
    // A peer without the multiprotocol capability speaks IPv4 unicast.
    let bare = Open {
        capabilities: Capabilities::default(),
        ..theirs
    };
    assert_eq!(
        SessionContext::negotiate(&ours, &bare).families,
        vec![Family::IPV4_UNICAST]
    );
}

#[test]
fn reach_and_unreach_present_classic_and_mp_alike() {
    let v4: Prefix = "10.1.0.0/16".parse().unwrap();
    let v6: Prefix = "2001:db8:1::/48".parse().unwrap();
    let gone4: Prefix = "10.9.0.0/16".parse().unwrap();
    let gone6: Prefix = "2001:db8:9::/48".parse().unwrap();
    let nh6 = NextHop::V6 {
        global: "2001:db8::1".parse().unwrap(),
        link_local: None,
    };
    let u = Update {
        withdrawn: vec![gone4],
        attributes: PathAttributes {
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
            ..Default::default()
        },
        mp_reach: Some(MpReach {
            family: Family::IPV6_UNICAST,
            next_hop: nh6,
            nlri: vec![v6],
        }),
        mp_unreach: Some(MpUnreach {
            family: Family::IPV6_UNICAST,
            withdrawn: vec![gone6],
        }),
        nlri: vec![v4],
    };
    let reach: Vec<_> = u.reach().collect();
    assert_eq!(reach.len(), 2);
    assert_eq!(
        (reach[0].family, reach[0].next_hop, reach[0].prefixes),
        (
            Family::IPV4_UNICAST,
            Some(NextHop::V4(Ipv4Addr::new(192, 0, 2, 1))),
            &[v4][..]
        )
    );
    assert_eq!(
        (reach[1].family, reach[1].next_hop, reach[1].prefixes),
        (Family::IPV6_UNICAST, Some(nh6), &[v6][..])
    );
    let unreach: Vec<_> = u
        .unreach()
        .map(|r| (r.family, r.prefixes.to_vec()))
        .collect();
    assert_eq!(
        unreach,
        vec![
            (Family::IPV4_UNICAST, vec![gone4]),
            (Family::IPV6_UNICAST, vec![gone6])
        ]
    );
    let all: Vec<_> = u.all_prefixes().map(|(f, p)| (f, *p)).collect();
    assert_eq!(all.len(), 4);
    assert!(u.has_announcements());
    assert_eq!(u.end_of_rib_family(), None);
}

#[test]
fn as_path_helpers() {
    let mut p = AsPath {
        segments: vec![
            AsSegment {
                kind: SegmentType::Sequence,
                asns: vec![65002, 65003],
            },
            AsSegment {
                kind: SegmentType::Set,
                asns: vec![65010, 65011, 65012],
            },
        ],
    };
    assert_eq!(p.path_len(), 3, "a set counts one");
    assert_eq!(p.first_asn(), Some(65002));
    assert_eq!(
        p.origin_asn(),
        None,
        "origin of a path ending in a set is unknown"
    );
    p.prepend(65001, 2);
    assert_eq!(p.segments[0].asns, vec![65001, 65001, 65002, 65003]);
    assert_eq!(p.path_len(), 5);
    let mut empty = AsPath::default();
    assert!(empty.is_empty());
    empty.prepend(64512, 1);
    assert_eq!(empty, AsPath::from_sequence([64512]));
    let confed = AsPath {
        segments: vec![AsSegment {
            kind: SegmentType::ConfedSequence,
            asns: vec![1, 2],
        }],
    };
    assert_eq!(confed.path_len(), 0);
    assert!(confed.contains(2));
}

#[test]
fn prefixes_mask_host_bits_and_parse() {
    let p: Prefix = "10.1.2.3/16".parse().unwrap();
    assert_eq!(p.to_string(), "10.1.0.0/16");
    assert!(p.contains(&"10.1.200.0/24".parse().unwrap()));
    assert!(!p.contains(&"10.2.0.0/24".parse().unwrap()));
    assert!(!p.contains(&"::/0".parse().unwrap()));
    assert_eq!(
        "2001:db8::1/32".parse::<Prefix>().unwrap().to_string(),
        "2001:db8::/32"
    );
    assert!(matches!(
        "10.0.0.0/33".parse::<Prefix>(),
        Err(PrefixError::LengthTooLarge { len: 33, max: 32 })
    ));
    assert!(matches!(
        "10.0.0.0".parse::<Prefix>(),
        Err(PrefixError::Syntax(_))
    ));
    assert!(
        Prefix::v4(Ipv4Addr::new(1, 2, 3, 4), 0)
            .unwrap()
            .is_default()
    );
}

#[test]
fn attribute_sets_are_hashable_for_interning() {
    use std::collections::HashSet;
    let a = PathAttributes {
        origin: Some(Origin::Igp),
        med: Some(5),
        ..Default::default()
    };
    let b = PathAttributes {
        med: Some(6),
        ..a.clone()
    };
    let set: HashSet<PathAttributes> = [a.clone(), b, a].into_iter().collect();
    assert_eq!(set.len(), 2);
}

#[test]
fn notification_codes_round_trip_through_pairs() {
    for code in 0..=255u8 {
        for subcode in 0..=255u8 {
            assert_eq!(
                NotificationCode::from_pair(code, subcode).pair(),
                (code, subcode)
            );
        }
    }
    assert_eq!(
        NotificationCode::from_pair(6, 7),
        NotificationCode::Cease(CeaseSubcode::ConnectionCollisionResolution)
    );
    assert_eq!(
        NotificationCode::from_pair(4, 0),
        NotificationCode::HoldTimerExpired
    );
    assert_eq!(
        NotificationCode::from_pair(8, 0),
        NotificationCode::SendHoldTimerExpired
    );
}
