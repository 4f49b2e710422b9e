//! Shared helpers for the codec tests: raw message builders (to make
//! malformed input byte by byte) and proptest strategies for every message.
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

use margay_bgp::codec::*;
use proptest::collection::vec;
use proptest::prelude::*;

pub const LOCAL_AS: u32 = 64512;
pub const PEER_AS: u32 = 64513;
pub const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// eBGP, 4-octet AS, IPv4 + IPv6 unicast.
pub fn ebgp() -> SessionContext {
    SessionContext::new(LOCAL_AS, PEER_AS)
}

/// iBGP, 4-octet AS, IPv4 + IPv6 unicast.
pub fn ibgp() -> SessionContext {
    SessionContext::new(LOCAL_AS, LOCAL_AS)
}

/// eBGP with a 2-octet (OLD) peer.
pub fn ebgp_two_octet() -> SessionContext {
    SessionContext {
        four_octet_as: false,
        ..ebgp()
    }
}

/// A whole message: header + body.
pub fn message(type_code: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(type_code);
    m.extend_from_slice(body);
    m
}

/// One path attribute (Extended Length chosen from the value's size unless
/// `flags` already has it).
pub fn attr(flags: u8, type_code: u8, value: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    if flags & attr_flags::EXTENDED_LENGTH != 0 || value.len() > 255 {
        a.push(flags | attr_flags::EXTENDED_LENGTH);
        a.push(type_code);
        a.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        a.push(flags);
        a.push(type_code);
        a.push(value.len() as u8);
    }
    a.extend_from_slice(value);
    a
}

pub const WK: u8 = attr_flags::TRANSITIVE;
pub const OPT: u8 = attr_flags::OPTIONAL;
pub const OPT_TRANS: u8 = attr_flags::OPTIONAL | attr_flags::TRANSITIVE;

/// ORIGIN IGP.
pub fn origin() -> Vec<u8> {
    attr(WK, attr_type::ORIGIN, &[0])
}

/// AS_PATH of one AS_SEQUENCE with 4-octet ASNs (empty path for `[]`).
pub fn as_path4(asns: &[u32]) -> Vec<u8> {
    if asns.is_empty() {
        return attr(WK, attr_type::AS_PATH, &[]);
    }
    let mut v = vec![2, asns.len() as u8];
    for a in asns {
        v.extend_from_slice(&a.to_be_bytes());
    }
    attr(WK, attr_type::AS_PATH, &v)
}

/// AS_PATH of one AS_SEQUENCE with 2-octet ASNs.
pub fn as_path2(asns: &[u16]) -> Vec<u8> {
    let mut v = vec![2, asns.len() as u8];
    for a in asns {
        v.extend_from_slice(&a.to_be_bytes());
    }
    attr(WK, attr_type::AS_PATH, &v)
}

/// NEXT_HOP.
pub fn next_hop(a: [u8; 4]) -> Vec<u8> {
    attr(WK, attr_type::NEXT_HOP, &a)
}

/// The attributes every IPv4 announcement needs (eBGP, 4-octet).
pub fn mandatory() -> Vec<u8> {
    [origin(), as_path4(&[PEER_AS]), next_hop([192, 0, 2, 9])].concat()
}

/// An UPDATE body from its three sections.
pub fn update_body(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    b.extend_from_slice(withdrawn);
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(nlri);
    b
}

/// 10.0.0.0/8 as NLRI.
pub const NLRI_10_8: [u8; 2] = [8, 10];

/// An IPv6 MP_REACH_NLRI value for 2001:db8::/32 with the given next hop.
pub fn mp_reach_v6(nh: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 2, 1, nh.len() as u8];
    v.extend_from_slice(nh);
    v.push(0);
    v.extend_from_slice(nlri);
    v
}

/// 2001:db8::/32 as NLRI.
pub const NLRI_2001_DB8: [u8; 5] = [32, 0x20, 0x01, 0x0d, 0xb8];

/// A valid global IPv6 next hop, 2001:db8::1.
pub fn v6_next_hop() -> Vec<u8> {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)
        .octets()
        .to_vec()
}

/// An OPEN body.
pub fn open_body(version: u8, my_as: u16, hold: u16, id: [u8; 4], params: &[u8]) -> Vec<u8> {
    let mut b = vec![version];
    b.extend_from_slice(&my_as.to_be_bytes());
    b.extend_from_slice(&hold.to_be_bytes());
    b.extend_from_slice(&id);
    b.push(params.len() as u8);
    b.extend_from_slice(params);
    b
}

/// An optional parameter of type 2 holding the given capability TLVs.
pub fn cap_param(caps: &[u8]) -> Vec<u8> {
    let mut p = vec![2, caps.len() as u8];
    p.extend_from_slice(caps);
    p
}

/// The OPEN check Margay would run for an eBGP peer in PEER_AS.
pub fn open_check() -> OpenCheck {
    OpenCheck {
        local_as: LOCAL_AS,
        local_id: LOCAL_ID,
        peer_as: Some(PEER_AS),
    }
}

// ---- proptest strategies ----

pub fn arb_v4_prefix() -> impl Strategy<Value = Prefix> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, l)| Prefix::v4(Ipv4Addr::from(a), l).unwrap())
}

pub fn arb_v6_prefix() -> impl Strategy<Value = Prefix> {
    (any::<u128>(), 0u8..=128).prop_map(|(a, l)| Prefix::v6(Ipv6Addr::from(a), l).unwrap())
}

pub fn arb_ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

/// A usable unicast IPv4 next hop (first octet 1..=223, not 127).
pub fn arb_unicast_v4() -> impl Strategy<Value = Ipv4Addr> {
    (1u8..=223, any::<[u8; 3]>()).prop_map(|(a, [b, c, d])| Ipv4Addr::new(a, b, c, d))
}

/// Non-zero ASNs (RFC 7607), with some above 65535.
pub fn arb_asn() -> impl Strategy<Value = u32> {
    prop_oneof![1u32..=65535, 65536u32..=u32::MAX]
}

pub fn arb_as_path(confed: bool, sets: bool) -> impl Strategy<Value = AsPath> {
    let kind = if !sets {
        Just(SegmentType::Sequence).boxed()
    } else if confed {
        prop_oneof![
            Just(SegmentType::Sequence),
            Just(SegmentType::Set),
            Just(SegmentType::ConfedSequence),
            Just(SegmentType::ConfedSet)
        ]
        .boxed()
    } else {
        prop_oneof![Just(SegmentType::Sequence), Just(SegmentType::Set)].boxed()
    };
    vec(
        (kind, vec(arb_asn(), 1..8)).prop_map(|(kind, asns)| AsSegment { kind, asns }),
        0..4,
    )
    .prop_map(|segments| AsPath { segments })
}

/// Attribute type codes that neither codec interprets, for unknown
/// optional transitive attributes.
pub fn arb_unknown_type() -> impl Strategy<Value = u8> {
    prop_oneof![200u8..=254, 100u8..=120]
}

pub struct AttrOpts {
    /// Generate confederation segments (rustbgpd-wire does not model them).
    pub confed: bool,
    /// Allow duplicate large communities (rustbgpd-wire removes them).
    pub dup_large: bool,
    /// Generate AS_SET segments (rustbgpd-wire applies RFC 9774 to them).
    pub sets: bool,
}

pub fn arb_attributes(opts: AttrOpts) -> impl Strategy<Value = PathAttributes> {
    let large = if opts.dup_large {
        vec(any::<(u32, u32, u32)>(), 0..4).boxed()
    } else {
        proptest::collection::btree_set(any::<(u32, u32, u32)>(), 0..4)
            .prop_map(|s| s.into_iter().collect::<Vec<_>>())
            .boxed()
    };
    let unknown =
        proptest::collection::btree_map(arb_unknown_type(), vec(any::<u8>(), 0..300), 0..3)
            .prop_map(|m| {
                m.into_iter()
                    .map(|(type_code, value)| RawAttribute {
                        flags: attr_flags::OPTIONAL | attr_flags::TRANSITIVE | attr_flags::PARTIAL,
                        type_code,
                        value,
                    })
                    .collect::<Vec<_>>()
            });
    (
        (
            proptest::option::of(prop_oneof![
                Just(Origin::Igp),
                Just(Origin::Egp),
                Just(Origin::Incomplete)
            ]),
            proptest::option::of(arb_as_path(opts.confed, opts.sets)),
            proptest::option::of(arb_unicast_v4()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            any::<bool>(),
        ),
        (
            proptest::option::of(
                (arb_asn(), arb_ipv4()).prop_map(|(asn, address)| Aggregator { asn, address }),
            ),
            vec(any::<u32>().prop_map(Community), 0..6),
            large,
            proptest::option::of(arb_ipv4()),
            vec(arb_ipv4(), 0..4),
            unknown,
        ),
    )
        .prop_map(
            |(
                (origin, as_path, next_hop, med, local_pref, atomic_aggregate),
                (aggregator, communities, large, originator_id, cluster_list, unknown),
            )| {
                PathAttributes {
                    origin,
                    as_path,
                    next_hop,
                    med,
                    local_pref,
                    atomic_aggregate,
                    aggregator,
                    communities,
                    large_communities: large
                        .into_iter()
                        .map(|(global, local1, local2)| LargeCommunity {
                            global,
                            local1,
                            local2,
                        })
                        .collect(),
                    originator_id,
                    cluster_list,
                    unknown,
                }
            },
        )
}

pub fn arb_v6_unicast() -> impl Strategy<Value = Ipv6Addr> {
    (0x2000u16..=0x3fff, any::<[u16; 7]>())
        .prop_map(|(a, r)| Ipv6Addr::new(a, r[0], r[1], r[2], r[3], r[4], r[5], r[6]))
}

pub fn arb_mp_reach() -> impl Strategy<Value = MpReach> {
    prop_oneof![
        (arb_unicast_v4(), vec(arb_v4_prefix(), 1..20)).prop_map(|(nh, nlri)| MpReach {
            family: Family::IPV4_UNICAST,
            next_hop: NextHop::V4(nh),
            nlri
        }),
        (
            arb_v6_unicast(),
            proptest::option::of(
                any::<u128>().prop_map(|x| Ipv6Addr::from(
                    (0xfe80u128 << 112) | (x & 0xffff_ffff_ffff_ffff)
                ))
            ),
            vec(arb_v6_prefix(), 1..20)
        )
            .prop_map(|(global, link_local, nlri)| MpReach {
                family: Family::IPV6_UNICAST,
                next_hop: NextHop::V6 { global, link_local },
                nlri
            }),
    ]
}

pub fn arb_mp_unreach() -> impl Strategy<Value = MpUnreach> {
    prop_oneof![
        vec(arb_v4_prefix(), 0..20).prop_map(|withdrawn| MpUnreach {
            family: Family::IPV4_UNICAST,
            withdrawn
        }),
        vec(arb_v6_prefix(), 0..20).prop_map(|withdrawn| MpUnreach {
            family: Family::IPV6_UNICAST,
            withdrawn
        }),
    ]
}

/// A well-formed UPDATE as an iBGP peer could send it (so every attribute
/// is kept by the decoder); mandatory attributes present when routes are
/// announced.
pub fn arb_update(opts: AttrOpts) -> impl Strategy<Value = Update> {
    (
        vec(arb_v4_prefix(), 0..30),
        arb_attributes(opts),
        proptest::option::of(arb_mp_reach()),
        proptest::option::of(arb_mp_unreach()),
        vec(arb_v4_prefix(), 0..30),
        arb_unicast_v4(),
        arb_as_path(false, false),
    )
        .prop_map(
            |(withdrawn, mut attributes, mp_reach, mp_unreach, nlri, nh, path)| {
                let announces = !nlri.is_empty() || mp_reach.is_some();
                if announces {
                    attributes.origin.get_or_insert(Origin::Igp);
                    attributes.as_path.get_or_insert(path);
                }
                if !nlri.is_empty() {
                    attributes.next_hop.get_or_insert(nh);
                }
                Update {
                    withdrawn,
                    attributes,
                    mp_reach,
                    mp_unreach,
                    nlri,
                }
            },
        )
}

pub fn arb_family() -> impl Strategy<Value = Family> {
    (any::<u16>(), any::<u8>()).prop_map(|(a, s)| Family::new(Afi(a), Safi(s)))
}

pub fn arb_capabilities() -> impl Strategy<Value = Capabilities> {
    let gr = (
        any::<bool>(),
        any::<bool>(),
        0u16..=4095,
        vec((arb_family(), any::<bool>()), 0..4),
    )
        .prop_map(
            |(restart_state, notification, restart_time, fams)| GracefulRestart {
                restart_state,
                notification,
                restart_time,
                families: fams
                    .into_iter()
                    .map(|(family, forwarding_state)| GracefulRestartFamily {
                        family,
                        forwarding_state,
                    })
                    .collect(),
            },
        );
    let known = [
        capability_code::MULTIPROTOCOL,
        capability_code::ROUTE_REFRESH,
        capability_code::GRACEFUL_RESTART,
        capability_code::FOUR_OCTET_AS,
        capability_code::ENHANCED_ROUTE_REFRESH,
    ];
    let unknown = vec(
        (
            any::<u8>().prop_filter("unknown code", move |c| !known.contains(c)),
            vec(any::<u8>(), 0..20),
        )
            .prop_map(|(code, value)| RawCapability { code, value }),
        0..3,
    );
    (
        proptest::collection::btree_set(arb_family(), 0..4),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(1u32..=u32::MAX),
        proptest::option::of(gr),
        unknown,
    )
        .prop_map(
            |(
                mp,
                route_refresh,
                enhanced_route_refresh,
                four_octet_as,
                graceful_restart,
                unknown,
            )| {
                Capabilities {
                    multiprotocol: mp.into_iter().collect(),
                    route_refresh,
                    enhanced_route_refresh,
                    four_octet_as,
                    graceful_restart,
                    unknown,
                }
            },
        )
}

pub fn arb_open() -> impl Strategy<Value = Open> {
    (
        1u16..=u16::MAX,
        prop_oneof![Just(0u16), 3u16..=u16::MAX],
        1u32..=u32::MAX,
        arb_capabilities(),
    )
        .prop_map(|(my_as, hold_time, id, capabilities)| Open {
            my_as,
            hold_time,
            bgp_id: Ipv4Addr::from(id),
            capabilities,
        })
}

pub fn arb_notification() -> impl Strategy<Value = Notification> {
    (any::<u8>(), any::<u8>(), vec(any::<u8>(), 0..100))
        .prop_map(|(c, s, data)| Notification::new(NotificationCode::from_pair(c, s), data))
}

pub fn arb_route_refresh() -> impl Strategy<Value = RouteRefresh> {
    (arb_family(), any::<u8>()).prop_map(|(family, st)| RouteRefresh {
        family,
        subtype: RouteRefreshSubtype::from_u8(st),
    })
}
