//! Packing many prefixes into UPDATEs that each fit in 4096 octets.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use common::*;
use margay_bgp::codec::*;

fn attrs() -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence([64512, 65001])),
        next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
        communities: vec![Community::new(64512, 1)],
        ..Default::default()
    }
}

fn decode_all(updates: &[Update], ctx: &SessionContext) -> Vec<Update> {
    updates
        .iter()
        .map(|u| {
            let bytes = encode_to_vec(&Message::Update(u.clone()), ctx).expect("each UPDATE fits");
            assert!(bytes.len() <= MAX_MESSAGE_LEN);
            let d = decode_update(&bytes[HEADER_LEN..], ctx);
            assert_eq!(d.disposition, Disposition::Accept);
            d.update
        })
        .collect()
}

#[test]
fn ipv4_announcements_fill_messages_and_keep_every_prefix() {
    let ctx = ebgp();
    let prefixes: Vec<Prefix> = (0..5000u32)
        .map(|i| Prefix::v4(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap())
        .collect();
    let updates =
        pack::announcements(&attrs(), Family::IPV4_UNICAST, None, &prefixes, &ctx).unwrap();
    // 4 octets per /24: roughly 1000 per message.
    assert!(
        updates.len() >= 5 && updates.len() <= 6,
        "{} messages",
        updates.len()
    );
    let got: Vec<Prefix> = decode_all(&updates, &ctx)
        .into_iter()
        .flat_map(|u| u.nlri)
        .collect();
    assert_eq!(got, prefixes);
}

#[test]
fn ipv6_announcements_and_withdrawals_use_mp_attributes() {
    let ctx = ebgp();
    let prefixes: Vec<Prefix> = (0..3000u128)
        .map(|i| Prefix::v6(Ipv6Addr::from((0x2001_0db8u128 << 96) | (i << 64)), 64).unwrap())
        .collect();
    let nh = NextHop::V6 {
        global: "2001:db8::1".parse().unwrap(),
        link_local: None,
    };
    let updates =
        pack::announcements(&attrs(), Family::IPV6_UNICAST, Some(nh), &prefixes, &ctx).unwrap();
    let decoded = decode_all(&updates, &ctx);
    assert!(
        decoded
            .iter()
            .all(|u| u.nlri.is_empty() && u.attributes.next_hop.is_none())
    );
    let got: Vec<Prefix> = decoded
        .into_iter()
        .flat_map(|u| u.mp_reach.unwrap().nlri)
        .collect();
    assert_eq!(got, prefixes);

    let w = pack::withdrawals(Family::IPV6_UNICAST, &prefixes, &ctx).unwrap();
    let got: Vec<Prefix> = decode_all(&w, &ctx)
        .into_iter()
        .flat_map(|u| u.mp_unreach.unwrap().withdrawn)
        .collect();
    assert_eq!(got, prefixes);
    // Without a next hop an MP family cannot be announced.
    assert!(pack::announcements(&attrs(), Family::IPV6_UNICAST, None, &prefixes, &ctx).is_err());
}

#[test]
fn ipv4_withdrawals_and_empty_input() {
    let ctx = ebgp();
    let prefixes: Vec<Prefix> = (0..2000u32)
        .map(|i| Prefix::v4(Ipv4Addr::from(i << 12), 20).unwrap())
        .collect();
    let w = pack::withdrawals(Family::IPV4_UNICAST, &prefixes, &ctx).unwrap();
    let got: Vec<Prefix> = decode_all(&w, &ctx)
        .into_iter()
        .flat_map(|u| u.withdrawn)
        .collect();
    assert_eq!(got, prefixes);
    assert!(
        pack::withdrawals(Family::IPV4_UNICAST, &[], &ctx)
            .unwrap()
            .is_empty()
    );
}
