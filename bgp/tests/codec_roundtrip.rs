//! Round-trip properties: everything the encoder writes decodes back to the
//! same value, for every message type, and the framer cuts any byte stream
//! of messages correctly however it is split.

mod common;

use common::*;
use margay_bgp::codec::*;
use proptest::prelude::*;

fn frame_one(bytes: &[u8]) -> Frame {
    let mut f = Framer::new();
    f.push(bytes);
    let frame = f
        .next_frame()
        .expect("valid header")
        .expect("whole message");
    assert_eq!(f.buffered(), 0, "one message, nothing left over");
    frame
}

/// Encode, frame, decode; returns what came back.
fn round_trip(msg: &Message, ctx: &SessionContext) -> Option<Received> {
    let bytes = match encode_to_vec(msg, ctx) {
        Ok(b) => b,
        Err(EncodeError::TooLong { .. }) => return None,
        Err(e) => panic!("encoding failed: {e}"),
    };
    assert!(bytes.len() <= MAX_MESSAGE_LEN);
    Some(decode_message(&frame_one(&bytes), ctx).expect("decodes"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn update_round_trips_four_octet(update in arb_update(AttrOpts { confed: true, dup_large: true, sets: true })) {
        let ctx = ibgp();
        if let Some(got) = round_trip(&Message::Update(update.clone()), &ctx) {
            let Received::Update(d) = got else { panic!("not an update: {got:?}") };
            prop_assert_eq!(&d.faults, &vec![]);
            prop_assert_eq!(d.disposition, Disposition::Accept);
            prop_assert_eq!(d.update, update);
        }
    }

    #[test]
    fn update_round_trips_two_octet_via_as4_path(update in arb_update(AttrOpts { confed: false, dup_large: true, sets: true })) {
        // To an OLD speaker, ASNs above 65535 go out as AS_TRANS with
        // AS4_PATH / AS4_AGGREGATOR; decoding folds them back.
        let ctx = SessionContext { four_octet_as: false, ..ibgp() };
        if let Some(got) = round_trip(&Message::Update(update.clone()), &ctx) {
            let Received::Update(d) = got else { panic!("not an update: {got:?}") };
            prop_assert_eq!(d.disposition, Disposition::Accept, "faults {:?}", d.faults);
            prop_assert_eq!(d.update, update);
        }
    }

    #[test]
    fn open_round_trips(open in arb_open()) {
        let got = round_trip(&Message::Open(open.clone()), &ibgp()).expect("OPEN fits");
        prop_assert_eq!(got, Received::Open(open));
    }

    #[test]
    fn notification_round_trips(n in arb_notification()) {
        let got = round_trip(&Message::Notification(n.clone()), &ibgp()).expect("fits");
        prop_assert_eq!(got, Received::Notification(n));
    }

    #[test]
    fn route_refresh_round_trips(rr in arb_route_refresh()) {
        let ctx = SessionContext { families: vec![rr.family], ..ibgp() };
        let got = round_trip(&Message::RouteRefresh(rr), &ctx).expect("fits");
        match rr.subtype {
            RouteRefreshSubtype::Other(_) => prop_assert!(matches!(got, Received::Ignored(_))),
            _ => prop_assert_eq!(got, Received::RouteRefresh(rr)),
        }
        // The raw decoder returns the message whatever the subtype.
        let bytes = encode_to_vec(&Message::RouteRefresh(rr), &ctx).unwrap();
        prop_assert_eq!(decode_route_refresh(&bytes[19..], true), Ok(rr));
    }

    #[test]
    fn framer_cuts_any_split(
        updates in proptest::collection::vec(arb_update(AttrOpts { confed: true, dup_large: true, sets: true }), 1..5),
        cuts in proptest::collection::vec(1usize..300, 1..40),
    ) {
        let ctx = ibgp();
        let mut msgs: Vec<Message> = updates.into_iter().map(Message::Update).collect();
        msgs.push(Message::Keepalive);
        msgs.push(Message::Notification(Notification::shutdown(CeaseSubcode::AdministrativeShutdown, "bye")));
        let mut stream = Vec::new();
        let mut sent = Vec::new();
        for m in msgs {
            if encode_message(&m, &ctx, &mut stream).is_ok() {
                sent.push(m);
            }
        }
        // Feed the stream in chunks of the generated sizes, cycling.
        let mut framer = Framer::new();
        let mut got = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < stream.len() {
            let n = cuts[i % cuts.len()].min(stream.len() - pos);
            framer.push(&stream[pos..pos + n]);
            pos += n;
            i += 1;
            while let Some(frame) = framer.next_frame().expect("valid stream") {
                got.push(frame);
            }
        }
        prop_assert_eq!(framer.buffered(), 0);
        prop_assert_eq!(got.len(), sent.len());
        for (frame, m) in got.iter().zip(&sent) {
            let decoded = decode_message(frame, &ctx).expect("decodes");
            match (decoded, m) {
                (Received::Update(d), Message::Update(u)) => prop_assert_eq!(&d.update, u),
                (Received::Keepalive, Message::Keepalive) => {}
                (Received::Notification(n), Message::Notification(e)) => prop_assert_eq!(&n, e),
                (d, m) => prop_assert!(false, "decoded {d:?} for sent {m:?}"),
            }
        }
    }
}

#[test]
fn framer_one_byte_at_a_time_and_several_per_read() {
    let ctx = ibgp();
    let update = Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence([65001, 4_200_000_000])),
            next_hop: Some("192.0.2.1".parse().unwrap()),
            ..Default::default()
        },
        nlri: vec![
            "10.1.0.0/16".parse().unwrap(),
            "10.2.3.0/24".parse().unwrap(),
        ],
        ..Default::default()
    };
    let mut stream = Vec::new();
    for m in [
        Message::Keepalive,
        Message::Update(update.clone()),
        Message::Keepalive,
    ] {
        encode_message(&m, &ctx, &mut stream).unwrap();
    }
    // One byte at a time.
    let mut f = Framer::new();
    let mut frames = Vec::new();
    for b in &stream {
        f.push(std::slice::from_ref(b));
        while let Some(fr) = f.next_frame().unwrap() {
            frames.push(fr);
        }
    }
    assert_eq!(frames.len(), 3);
    let Ok(Received::Update(d)) = decode_message(&frames[1], &ctx) else {
        panic!("update expected")
    };
    assert_eq!(d.update, update);
    // All three in one read.
    let mut f = Framer::new();
    f.push(&stream);
    let kinds: Vec<_> = std::iter::from_fn(|| f.next_frame().unwrap())
        .map(|fr| fr.message_type)
        .collect();
    assert_eq!(
        kinds,
        vec![
            MessageType::Keepalive,
            MessageType::Update,
            MessageType::Keepalive
        ]
    );
    // The borrowing splitter agrees.
    let first = split_frame(&stream).unwrap().unwrap();
    assert_eq!(
        (first.message_type, first.wire_len),
        (MessageType::Keepalive, 19)
    );
    assert_eq!(split_frame(&stream[..18]).unwrap(), None);
}

#[test]
fn end_of_rib_markers_encode_and_are_detected() {
    let ctx = ibgp();
    for family in [Family::IPV4_UNICAST, Family::IPV6_UNICAST] {
        let bytes = encode_to_vec(&Message::Update(Update::end_of_rib(family)), &ctx).unwrap();
        let Ok(Received::Update(d)) = decode_message(&frame_one(&bytes), &ctx) else {
            panic!()
        };
        assert_eq!(d.disposition, Disposition::Accept);
        assert_eq!(d.update.end_of_rib_family(), Some(family));
    }
    // The IPv4 marker is the 23-octet empty UPDATE.
    let v4 = encode_to_vec(
        &Message::Update(Update::end_of_rib(Family::IPV4_UNICAST)),
        &ctx,
    )
    .unwrap();
    assert_eq!(v4.len(), 23);
}

#[test]
fn attribute_over_255_octets_gets_extended_length_and_partial() {
    let ctx = ibgp();
    let mut a = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence(1..=100)),
        next_hop: Some("192.0.2.1".parse().unwrap()),
        ..Default::default()
    };
    // An unknown optional transitive attribute received without Partial.
    a.unknown.push(RawAttribute {
        flags: OPT_TRANS,
        type_code: 222,
        value: vec![7; 300],
    });
    let update = Update {
        attributes: a,
        nlri: vec!["10.0.0.0/8".parse().unwrap()],
        ..Default::default()
    };
    let bytes = encode_to_vec(&Message::Update(update), &ctx).unwrap();
    // Walk the attributes: AS_PATH (402 octets) and type 222 are extended.
    let body = &bytes[19..];
    let alen = u16::from_be_bytes([body[2], body[3]]) as usize;
    let mut attrs = &body[4..4 + alen];
    let mut seen = Vec::new();
    while !attrs.is_empty() {
        let (flags, t) = (attrs[0], attrs[1]);
        let ext = flags & attr_flags::EXTENDED_LENGTH != 0;
        let (len, hdr) = if ext {
            (u16::from_be_bytes([attrs[2], attrs[3]]) as usize, 4)
        } else {
            (attrs[2] as usize, 3)
        };
        assert_eq!(
            ext,
            len > 255,
            "type {t}: extended length exactly when > 255"
        );
        seen.push((t, flags));
        attrs = &attrs[hdr + len..];
    }
    let flags_of = |t: u8| seen.iter().find(|(x, _)| *x == t).unwrap().1;
    assert_eq!(flags_of(attr_type::ORIGIN), WK);
    assert_eq!(
        flags_of(attr_type::AS_PATH),
        WK | attr_flags::EXTENDED_LENGTH
    );
    assert_eq!(
        flags_of(222),
        OPT_TRANS | attr_flags::PARTIAL | attr_flags::EXTENDED_LENGTH
    );
}

#[test]
fn two_octet_peer_gets_as_trans_and_as4_path() {
    let ctx = ebgp_two_octet();
    let update = Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence([64512, 4_200_000_001, 65001])),
            next_hop: Some("192.0.2.1".parse().unwrap()),
            aggregator: Some(Aggregator {
                asn: 4_200_000_002,
                address: "192.0.2.7".parse().unwrap(),
            }),
            ..Default::default()
        },
        nlri: vec!["10.0.0.0/8".parse().unwrap()],
        ..Default::default()
    };
    let bytes = encode_to_vec(&Message::Update(update.clone()), &ctx).unwrap();
    let body = &bytes[19..];
    // AS_PATH: segment of 3 two-octet ASNs with AS_TRANS in the middle.
    let as_path = [WK, 2, 8, 2, 3, 0xfc, 0x00, 0x5b, 0xa0, 0xfd, 0xe9];
    assert!(
        body.windows(as_path.len()).any(|w| w == as_path),
        "AS_PATH with AS_TRANS"
    );
    // AS4_PATH (17) and AS4_AGGREGATOR (18) are present, optional transitive.
    assert!(body.windows(3).any(|w| w == [OPT_TRANS, 17, 14]));
    assert!(body.windows(3).any(|w| w == [OPT_TRANS, 18, 8]));
    // AGGREGATOR carries AS_TRANS.
    assert!(body.windows(5).any(|w| w == [OPT_TRANS, 7, 6, 0x5b, 0xa0]));
    let Ok(Received::Update(d)) = decode_message(&frame_one(&bytes), &ctx) else {
        panic!()
    };
    assert_eq!(d.update, update);
    // A 4-octet peer gets no AS4_* attributes.
    let bytes = encode_to_vec(&Message::Update(update), &ebgp()).unwrap();
    assert!(!bytes[19..].windows(2).any(|w| w == [OPT_TRANS, 17]));
}
