//! One test per row of `shared/notes/bgp-malformed.md` that concerns
//! decoding (named `row_…` after the row). Rows that belong to the FSM or
//! the RIB have a test of the helper the codec gives them.

mod common;

use std::net::Ipv4Addr;

use common::*;
use margay_bgp::codec::*;

/// Frames and decodes a whole message.
fn receive(bytes: &[u8], ctx: &SessionContext) -> Result<Received, DecodeError> {
    let mut f = Framer::new();
    f.push(bytes);
    match f.next_frame()? {
        Some(frame) => decode_message(&frame, ctx),
        None => panic!("framer waited for more bytes on a complete message"),
    }
}

fn reset_code(r: Result<Received, DecodeError>) -> (u8, u8) {
    match r {
        Err(DecodeError::Reset(n)) => n.code.pair(),
        other => panic!("expected a session reset, got {other:?}"),
    }
}

fn header_only_error(header: &[u8]) -> DecodeError {
    let mut f = Framer::new();
    f.push(header);
    f.next_frame()
        .expect_err("header error reported without waiting for a body")
}

fn update(attrs: &[u8], nlri: &[u8], ctx: &SessionContext) -> DecodedUpdate {
    decode_update(&update_body(&[], attrs, nlri), ctx)
}

fn class(d: &DecodedUpdate) -> DispositionClass {
    d.disposition.class()
}

fn reset_pair(d: &DecodedUpdate) -> (u8, u8) {
    match &d.disposition {
        Disposition::SessionReset(n) => n.code.pair(),
        other => panic!("expected reset, got {other:?} ({:?})", d.faults),
    }
}

// ---------------------------------------------------------------- header

#[test]
fn row_marker_not_all_ones() {
    let mut m = message(4, &[]);
    m[3] = 0xfe;
    assert_eq!(reset_code(receive(&m, &ebgp())), (1, 1));
    // Detected before the header is complete: nothing to wait for.
    assert!(matches!(header_only_error(&m[..5]), DecodeError::Reset(n) if n.code.pair() == (1, 1)));
}

#[test]
fn row_bad_message_length() {
    let header = |len: u16, t: u8| {
        let mut h = vec![0xff; 16];
        h.extend_from_slice(&len.to_be_bytes());
        h.push(t);
        h
    };
    // < 19, > 4096, below OPEN 29 / UPDATE 23, KEEPALIVE != 19: each reported
    // from the header alone with the length field as data.
    for (len, t) in [
        (18u16, 4u8),
        (0, 2),
        (4097, 2),
        (65535, 1),
        (28, 1),
        (22, 2),
        (20, 4),
        (4096, 4),
    ] {
        match header_only_error(&header(len, t)) {
            DecodeError::Reset(n) => {
                assert_eq!(n.code.pair(), (1, 2), "len {len} type {t}");
                assert_eq!(n.data, len.to_be_bytes().to_vec());
            }
            other => panic!("len {len} type {t}: {other:?}"),
        }
    }
    // NOTIFICATION below 21 octets: malformed NOTIFICATION, never answered.
    assert!(matches!(
        header_only_error(&header(20, 3)),
        DecodeError::MalformedNotification(_)
    ));
    // ROUTE-REFRESH != 23: 1/2 without enhanced route refresh.
    let ctx = SessionContext {
        enhanced_route_refresh: false,
        ..ebgp()
    };
    assert_eq!(reset_code(receive(&message(5, &[0, 1, 0]), &ctx)), (1, 2));
    assert_eq!(
        reset_code(receive(&message(5, &[0, 1, 0, 1, 0]), &ctx)),
        (1, 2)
    );
    // The smallest legal messages pass.
    assert_eq!(receive(&message(4, &[]), &ebgp()), Ok(Received::Keepalive));
}

#[test]
fn row_unknown_message_type() {
    let m = message(9, &[1, 2, 3]);
    match receive(&m, &ebgp()) {
        Err(DecodeError::Reset(n)) => {
            assert_eq!(n.code.pair(), (1, 3));
            assert_eq!(n.data, vec![9]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn row_message_split_across_reads_several_per_read_one_byte_at_a_time() {
    let ctx = ebgp();
    let body = update_body(&[], &mandatory(), &NLRI_10_8);
    let stream = [message(4, &[]), message(2, &body), message(4, &[])].concat();
    for chunk in [1, 2, 7, 19, 20, 1000] {
        let mut f = Framer::new();
        let mut types = Vec::new();
        for piece in stream.chunks(chunk) {
            f.push(piece);
            while let Some(frame) = f.next_frame().unwrap() {
                types.push(frame.message_type);
                decode_message(&frame, &ctx).unwrap();
            }
        }
        assert_eq!(
            types,
            [
                MessageType::Keepalive,
                MessageType::Update,
                MessageType::Keepalive
            ]
        );
        assert_eq!(f.buffered(), 0);
    }
}

// ---------------------------------------------------------------- OPEN

fn four_octet_cap(asn: u32) -> Vec<u8> {
    let mut c = vec![65, 4];
    c.extend_from_slice(&asn.to_be_bytes());
    c
}

fn open(body: &[u8]) -> Result<Open, (u8, u8)> {
    decode_open(body, &open_check()).map_err(|n| n.code.pair())
}

#[test]
fn row_open_version_not_4() {
    let body = open_body(3, PEER_AS as u16, 90, [10, 0, 0, 2], &[]);
    let n = decode_open(&body, &open_check()).unwrap_err();
    assert_eq!(n.code.pair(), (2, 1));
    assert_eq!(n.data, vec![0, 4], "data: the version we support");
}

#[test]
fn row_open_my_as_0_four_octet_as_0_or_as_mismatch() {
    assert_eq!(open(&open_body(4, 0, 90, [10, 0, 0, 2], &[])), Err((2, 2)));
    let p = cap_param(&four_octet_cap(0));
    assert_eq!(
        open(&open_body(4, 23456, 90, [10, 0, 0, 2], &p)),
        Err((2, 2))
    );
    assert_eq!(
        open(&open_body(4, 65000, 90, [10, 0, 0, 2], &[])),
        Err((2, 2))
    );
    let p = cap_param(&four_octet_cap(4_200_000_000));
    assert_eq!(
        open(&open_body(4, 23456, 90, [10, 0, 0, 2], &p)),
        Err((2, 2))
    );
    // The configured AS in the 4-octet capability behind AS_TRANS is fine.
    let check = OpenCheck {
        peer_as: Some(4_200_000_000),
        ..open_check()
    };
    let o = decode_open(&open_body(4, 23456, 90, [10, 0, 0, 2], &p), &check).unwrap();
    assert_eq!(o.asn(), 4_200_000_000);
}

#[test]
fn row_open_hold_time_1_or_2() {
    for hold in [1, 2] {
        assert_eq!(
            open(&open_body(4, PEER_AS as u16, hold, [10, 0, 0, 2], &[])),
            Err((2, 6))
        );
    }
    for hold in [0, 3, 65535] {
        assert_eq!(
            open(&open_body(4, PEER_AS as u16, hold, [10, 0, 0, 2], &[]))
                .unwrap()
                .hold_time,
            hold
        );
    }
}

#[test]
fn row_open_bgp_identifier_0_or_ours_on_ibgp() {
    assert_eq!(
        open(&open_body(4, PEER_AS as u16, 90, [0, 0, 0, 0], &[])),
        Err((2, 3))
    );
    let ibgp_check = OpenCheck {
        peer_as: Some(LOCAL_AS),
        ..open_check()
    };
    let ours = LOCAL_ID.octets();
    let n = decode_open(&open_body(4, LOCAL_AS as u16, 90, ours, &[]), &ibgp_check).unwrap_err();
    assert_eq!(n.code.pair(), (2, 3));
    // Our identifier on eBGP is allowed (RFC 6286 §2.2).
    let check = OpenCheck {
        local_id: Ipv4Addr::from(ours),
        ..open_check()
    };
    assert!(decode_open(&open_body(4, PEER_AS as u16, 90, ours, &[]), &check).is_ok());
}

#[test]
fn row_open_optional_parameter_or_capability_overruns() {
    // Optional parameters length says 10, only 4 octets follow.
    let mut body = open_body(4, PEER_AS as u16, 90, [10, 0, 0, 2], &[2, 2, 2, 0]);
    body[9] = 10;
    assert_eq!(open(&body), Err((2, 0)));
    // A parameter whose length runs past the parameters.
    assert_eq!(
        open(&open_body(
            4,
            PEER_AS as u16,
            90,
            [10, 0, 0, 2],
            &[2, 9, 2, 0]
        )),
        Err((2, 0))
    );
    // A capability whose length runs past its parameter.
    assert_eq!(
        open(&open_body(
            4,
            PEER_AS as u16,
            90,
            [10, 0, 0, 2],
            &cap_param(&[65, 4, 0, 0])
        )),
        Err((2, 0))
    );
    // Multiprotocol capability of the wrong length.
    assert_eq!(
        open(&open_body(
            4,
            PEER_AS as u16,
            90,
            [10, 0, 0, 2],
            &cap_param(&[1, 3, 0, 1, 0])
        )),
        Err((2, 0))
    );
    // Trailing octets after the parameters.
    let mut body = open_body(4, PEER_AS as u16, 90, [10, 0, 0, 2], &[]);
    body.push(0);
    assert_eq!(open(&body), Err((2, 0)));
}

#[test]
fn row_open_unknown_optional_parameter() {
    let n = open(&open_body(
        4,
        PEER_AS as u16,
        90,
        [10, 0, 0, 2],
        &[1, 2, 0, 0],
    ));
    assert_eq!(n, Err((2, 4)));
}

#[test]
fn row_open_unknown_capability_ignored() {
    let caps = [
        vec![1, 4, 0, 2, 0, 1],
        vec![99, 3, 1, 2, 3],
        four_octet_cap(PEER_AS),
    ]
    .concat();
    let o = open(&open_body(
        4,
        PEER_AS as u16,
        90,
        [10, 0, 0, 2],
        &cap_param(&caps),
    ))
    .unwrap();
    assert_eq!(o.capabilities.multiprotocol, vec![Family::IPV6_UNICAST]);
    assert_eq!(
        o.capabilities.unknown,
        vec![RawCapability {
            code: 99,
            value: vec![1, 2, 3]
        }]
    );
    assert_eq!(o.capabilities.four_octet_as, Some(PEER_AS));
}

#[test]
fn open_capabilities_of_real_peers_decode() {
    // Graceful restart with R and N bits, 120 s, IPv4 unicast forwarding
    // preserved; route refresh; enhanced route refresh; RFC 9072 extended
    // optional parameters.
    let caps = [
        vec![64, 6, 0xc0, 120, 0, 1, 1, 0x80],
        vec![2, 0],
        vec![70, 0],
    ]
    .concat();
    let mut params = vec![2];
    params.extend_from_slice(&(caps.len() as u16).to_be_bytes());
    params.extend_from_slice(&caps);
    let mut body = open_body(4, PEER_AS as u16, 90, [10, 0, 0, 2], &[]);
    body.pop();
    body.extend_from_slice(&[255, 255]);
    body.extend_from_slice(&(params.len() as u16).to_be_bytes());
    body.extend_from_slice(&params);
    let o = open(&body).unwrap();
    let gr = o.capabilities.graceful_restart.unwrap();
    assert!(gr.restart_state && gr.notification);
    assert_eq!(gr.restart_time, 120);
    assert_eq!(
        gr.families,
        vec![GracefulRestartFamily {
            family: Family::IPV4_UNICAST,
            forwarding_state: true
        }]
    );
    assert!(o.capabilities.route_refresh && o.capabilities.enhanced_route_refresh);
}

// ------------------------------------------------- ROUTE-REFRESH, NOTIFICATION

#[test]
fn row_route_refresh_bad_length_and_non_negotiated_family() {
    // Enhanced route refresh negotiated: 7/1 with the whole message as data.
    let m = message(5, &[0, 1, 1, 1, 9]);
    match receive(&m, &ebgp()) {
        Err(DecodeError::Reset(n)) => {
            assert_eq!(n.code.pair(), (7, 1));
            assert_eq!(n.data, m);
        }
        other => panic!("{other:?}"),
    }
    // A family that was not negotiated: ignored.
    let ctx = SessionContext {
        families: vec![Family::IPV4_UNICAST],
        ..ebgp()
    };
    assert!(matches!(
        receive(&message(5, &[0, 2, 0, 1]), &ctx),
        Ok(Received::Ignored(_))
    ));
    // An unknown subtype: ignored (RFC 7313 §5).
    assert!(matches!(
        receive(&message(5, &[0, 1, 7, 1]), &ctx),
        Ok(Received::Ignored(_))
    ));
    assert_eq!(
        receive(&message(5, &[0, 1, 1, 1]), &ctx),
        Ok(Received::RouteRefresh(RouteRefresh {
            family: Family::IPV4_UNICAST,
            subtype: RouteRefreshSubtype::BeginningOfRouteRefresh
        }))
    );
}

#[test]
fn row_malformed_notification_is_never_answered() {
    // Too short a NOTIFICATION (header says 20): close, no NOTIFICATION back.
    let mut m = message(3, &[6]);
    assert!(matches!(
        receive(&m, &ebgp()),
        Err(DecodeError::MalformedNotification(_))
    ));
    m.truncate(19);
    assert!(matches!(
        receive(&message(3, &[]), &ebgp()),
        Err(DecodeError::MalformedNotification(_))
    ));
    // A Cease/Shutdown whose text length overruns: decoded, the text is an
    // error for the log, nothing to answer.
    let Ok(Received::Notification(n)) = receive(&message(3, &[6, 2, 50, b'h', b'i']), &ebgp())
    else {
        panic!("notification expected")
    };
    assert!(matches!(
        n.shutdown_text(),
        Some(Err(ShutdownTextError::Truncated {
            declared: 50,
            available: 2
        }))
    ));
    // A good RFC 8203 shutdown communication.
    let Ok(Received::Notification(n)) = receive(&message(3, &[6, 2, 3, b'b', b'y', b'e']), &ebgp())
    else {
        panic!()
    };
    assert_eq!(n.shutdown_text(), Some(Ok("bye")));
    // Long text is cut to 255 octets at a character boundary.
    let long = "é".repeat(200);
    let n = Notification::shutdown(CeaseSubcode::AdministrativeReset, &long);
    assert_eq!(n.data[0], 254);
    assert_eq!(n.shutdown_text(), Some(Ok(&long[..254])));
}

// ---------------------------------------------------------------- UPDATE

#[test]
fn row_withdrawn_or_total_attribute_length_overruns() {
    // Withdrawn length 10 with 2 octets present.
    let d = decode_update(&[0, 10, 8, 10], &ebgp());
    assert_eq!(reset_pair(&d), (3, 1));
    // Total attribute length 200 with 10 present.
    let mut body = update_body(&[], &mandatory(), &[]);
    body[3] = 200;
    assert_eq!(reset_pair(&decode_update(&body, &ebgp())), (3, 1));
    // Body too short for the two length fields.
    assert_eq!(reset_pair(&decode_update(&[0, 0, 0], &ebgp())), (3, 1));
}

#[test]
fn row_attribute_header_truncated_or_overruns_section() {
    // Two octets left where an attribute header needs three.
    let attrs = [mandatory(), vec![0x40, 1]].concat();
    let d = update(&attrs, &NLRI_10_8, &ebgp());
    assert_eq!(class(&d), DispositionClass::TreatAsWithdraw);
    assert_eq!(
        d.update.nlri.len(),
        1,
        "NLRI still located from the total length"
    );
    // An attribute whose length runs past the section.
    let attrs = [mandatory(), vec![0xc0, 8, 12, 0, 0, 0, 1]].concat();
    assert_eq!(
        class(&update(&attrs, &NLRI_10_8, &ebgp())),
        DispositionClass::TreatAsWithdraw
    );
    // Extended length attribute with one length octet.
    let attrs = [mandatory(), vec![0xd0, 8, 0]].concat();
    assert_eq!(
        class(&update(&attrs, &NLRI_10_8, &ebgp())),
        DispositionClass::TreatAsWithdraw
    );
}

#[test]
fn row_nlri_prefix_length_too_long_or_overruns() {
    // Classic NLRI: /33 and a /24 missing an octet: reset 3/10.
    assert_eq!(
        reset_pair(&update(&mandatory(), &[33, 10, 0, 0, 0, 0], &ebgp())),
        (3, 10)
    );
    assert_eq!(
        reset_pair(&update(&mandatory(), &[24, 10, 0], &ebgp())),
        (3, 10)
    );
    // Withdrawn routes field likewise.
    assert_eq!(
        reset_pair(&decode_update(
            &update_body(&[40, 1, 2, 3, 4, 5], &[], &[]),
            &ebgp()
        )),
        (3, 10)
    );
    // Inside MP_REACH: AFI/SAFI disable (with the 3/9 to send if resetting).
    let mp = mp_reach_v6(&v6_next_hop(), &[129, 0]);
    let attrs = [origin(), as_path4(&[PEER_AS]), attr(OPT, 14, &mp)].concat();
    let d = update(&attrs, &[], &ebgp());
    match &d.disposition {
        Disposition::AfiSafiDisable {
            family,
            notification,
        } => {
            assert_eq!(*family, Family::IPV6_UNICAST);
            assert_eq!(notification.code.pair(), (3, 9));
        }
        other => panic!("{other:?}"),
    }
    // Inside MP_UNREACH, an overrun.
    let attrs = attr(OPT, 15, &[0, 2, 1, 64, 0x20, 0x01]);
    assert_eq!(
        class(&update(&attrs, &[], &ebgp())),
        DispositionClass::AfiSafiDisable
    );
}

#[test]
fn row_attribute_flag_conflicts() {
    // ORIGIN marked optional.
    let attrs = [
        attr(OPT_TRANS, 1, &[0]),
        as_path4(&[PEER_AS]),
        next_hop([192, 0, 2, 9]),
    ]
    .concat();
    let d = update(&attrs, &NLRI_10_8, &ebgp());
    assert_eq!(class(&d), DispositionClass::TreatAsWithdraw);
    // MED marked transitive; COMMUNITIES marked well-known (then unknown
    // well-known? no: known type, so a flag conflict).
    let attrs = [mandatory(), attr(OPT_TRANS, 4, &[0, 0, 0, 1])].concat();
    assert_eq!(
        class(&update(&attrs, &NLRI_10_8, &ebgp())),
        DispositionClass::TreatAsWithdraw
    );
    let attrs = [mandatory(), attr(WK, 8, &[0, 0, 0, 1])].concat();
    assert_eq!(
        class(&update(&attrs, &NLRI_10_8, &ebgp())),
        DispositionClass::TreatAsWithdraw
    );
    // The Partial and Extended Length bits are not conflicts.
    let attrs = [
        mandatory(),
        attr(
            OPT_TRANS | attr_flags::PARTIAL | attr_flags::EXTENDED_LENGTH,
            8,
            &[0, 0, 0, 1],
        ),
    ]
    .concat();
    let d = update(&attrs, &NLRI_10_8, &ebgp());
    assert_eq!(class(&d), DispositionClass::Accept);
    assert_eq!(d.update.attributes.communities, vec![Community(1)]);
}

#[test]
fn row_mp_reach_or_mp_unreach_twice() {
    let mp = mp_reach_v6(&v6_next_hop(), &NLRI_2001_DB8);
    let attrs = [
        origin(),
        as_path4(&[PEER_AS]),
        attr(OPT, 14, &mp),
        attr(OPT, 14, &mp),
    ]
    .concat();
    assert_eq!(reset_pair(&update(&attrs, &[], &ebgp())), (3, 1));
    let un = attr(OPT, 15, &[0, 2, 1]);
    assert_eq!(
        reset_pair(&update(&[un.clone(), un].concat(), &[], &ebgp())),
        (3, 1)
    );
}

#[test]
fn row_other_attribute_twice_keeps_first() {
    let attrs = [
        mandatory(),
        attr(OPT, 4, &[0, 0, 0, 5]),
        attr(OPT, 4, &[0, 0, 0, 9]),
    ]
    .concat();
    let d = update(&attrs, &NLRI_10_8, &ebgp());
    assert_eq!(d.update.attributes.med, Some(5));
    assert_eq!(class(&d), DispositionClass::AttributeDiscard);
}

#[test]
fn row_origin_as_path_or_next_hop_missing() {
    let without = |skip: u8| -> Vec<u8> {
        [
            (1u8, origin()),
            (2, as_path4(&[PEER_AS])),
            (3, next_hop([192, 0, 2, 9])),
        ]
        .into_iter()
        .filter(|(t, _)| *t != skip)
        .flat_map(|(_, a)| a)
        .collect()
    };
    for t in [1, 2, 3] {
        let d = update(&without(t), &NLRI_10_8, &ebgp());
        assert_eq!(
            class(&d),
            DispositionClass::TreatAsWithdraw,
            "missing type {t}"
        );
        assert!(d.faults.iter().any(|f| f.type_code == Some(t)));
    }
    // NEXT_HOP is not needed for MP_REACH-only announcements.
    let mp = mp_reach_v6(&v6_next_hop(), &NLRI_2001_DB8);
    let attrs = [origin(), as_path4(&[PEER_AS]), attr(OPT, 14, &mp)].concat();
    assert_eq!(
        class(&update(&attrs, &[], &ebgp())),
        DispositionClass::Accept
    );
    // Nor any attribute for a pure withdrawal.
    let d = decode_update(&update_body(&NLRI_10_8, &[], &[]), &ebgp());
    assert_eq!(class(&d), DispositionClass::Accept);
}

#[test]
fn row_unrecognised_well_known_attribute() {
    let unknown = attr(WK, 99, &[1, 2]);
    let d = update(
        &[mandatory(), unknown.clone()].concat(),
        &NLRI_10_8,
        &ebgp(),
    );
    match &d.disposition {
        Disposition::SessionReset(n) => {
            assert_eq!(n.code.pair(), (3, 2));
            assert_eq!(n.data, unknown, "data: the attribute");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn row_unknown_optional_non_transitive_dropped() {
    let d = update(
        &[mandatory(), attr(OPT, 99, &[1, 2])].concat(),
        &NLRI_10_8,
        &ebgp(),
    );
    assert_eq!(class(&d), DispositionClass::Accept);
    assert!(d.update.attributes.unknown.is_empty());
}

#[test]
fn row_unknown_optional_transitive_kept_with_partial() {
    let d = update(
        &[mandatory(), attr(OPT_TRANS, 99, &[1, 2])].concat(),
        &NLRI_10_8,
        &ebgp(),
    );
    assert_eq!(class(&d), DispositionClass::Accept);
    assert_eq!(
        d.update.attributes.unknown,
        vec![RawAttribute {
            flags: OPT_TRANS | attr_flags::PARTIAL,
            type_code: 99,
            value: vec![1, 2]
        }]
    );
    // Passed on with Partial set.
    let bytes = encode_to_vec(&Message::Update(d.update), &ebgp()).unwrap();
    assert!(
        bytes
            .windows(5)
            .any(|w| w == [OPT_TRANS | attr_flags::PARTIAL, 99, 2, 1, 2])
    );
}

#[test]
fn row_several_errors_keep_the_strongest() {
    // discard (ATOMIC_AGGREGATE length 1) + withdraw (bad ORIGIN) -> withdraw
    let attrs = [
        attr(WK, 1, &[7]),
        as_path4(&[PEER_AS]),
        next_hop([192, 0, 2, 9]),
        attr(WK, 6, &[1]),
    ]
    .concat();
    let d = update(&attrs, &NLRI_10_8, &ebgp());
    assert_eq!(class(&d), DispositionClass::TreatAsWithdraw);
    assert_eq!(d.faults.len(), 2);
    // ... + AFI/SAFI disable (bad MP_REACH NLRI) -> disable
    let mp = attr(OPT, 14, &mp_reach_v6(&v6_next_hop(), &[200]));
    let d = update(&[attrs.clone(), mp.clone()].concat(), &NLRI_10_8, &ebgp());
    assert_eq!(class(&d), DispositionClass::AfiSafiDisable);
    // ... + reset (unrecognised well-known) -> reset, whatever the order
    let d = update(
        &[attr(WK, 99, &[]), attrs, mp].concat(),
        &NLRI_10_8,
        &ebgp(),
    );
    assert_eq!(reset_pair(&d), (3, 2));
    // Ordering of the classes themselves.
    use DispositionClass::*;
    let order = [
        Accept,
        AttributeDiscard,
        IgnoreRoutes,
        TreatAsWithdraw,
        AfiSafiDisable,
        SessionReset,
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn row_empty_update_or_empty_mp_unreach_is_end_of_rib() {
    let d = decode_update(&[0, 0, 0, 0], &ebgp());
    assert_eq!(class(&d), DispositionClass::Accept);
    assert_eq!(d.update.end_of_rib_family(), Some(Family::IPV4_UNICAST));
    let d = update(&attr(OPT, 15, &[0, 2, 1]), &[], &ebgp());
    assert_eq!(class(&d), DispositionClass::Accept);
    assert_eq!(d.update.end_of_rib_family(), Some(Family::IPV6_UNICAST));
    // Not an EoR when anything else is present.
    let d = update(
        &[origin(), attr(OPT, 15, &[0, 2, 1])].concat(),
        &[],
        &ebgp(),
    );
    assert_eq!(d.update.end_of_rib_family(), None);
}

#[test]
fn row_origin_length_not_1_or_value_above_2() {
    for value in [&[][..], &[0, 0][..], &[3][..]] {
        let attrs = [
            attr(WK, 1, value),
            as_path4(&[PEER_AS]),
            next_hop([192, 0, 2, 9]),
        ]
        .concat();
        let d = update(&attrs, &NLRI_10_8, &ebgp());
        assert_eq!(
            class(&d),
            DispositionClass::TreatAsWithdraw,
            "ORIGIN {value:?}"
        );
        assert_eq!(d.update.attributes.origin, None);
    }
}

#[test]
fn row_as_path_bad_segment_type_zero_length_overrun_trailing_byte() {
    let bad: [&[u8]; 5] = [
        &[5, 1, 0, 0, 0xfc, 1],       // segment type 5
        &[2, 0],                      // zero-length segment
        &[2, 2, 0, 0, 0xfc, 1],       // two ASNs announced, one present
        &[2, 1, 0, 0, 0xfc, 1, 2],    // a trailing octet
        &[2, 1, 0, 0, 0xfc, 1, 2, 0], // a trailing zero-length segment
    ];
    for value in bad {
        let attrs = [origin(), attr(WK, 2, value), next_hop([192, 0, 2, 9])].concat();
        let d = update(&attrs, &NLRI_10_8, &ebgp());
        assert_eq!(
            class(&d),
            DispositionClass::TreatAsWithdraw,
            "AS_PATH {value:?}"
        );
    }
    // Confederation segments from an external peer.
    let attrs = [
        origin(),
        attr(WK, 2, &[3, 1, 0, 0, 0xfc, 1]),
        next_hop([192, 0, 2, 9]),
    ]
    .concat();
    assert_eq!(
        class(&update(&attrs, &NLRI_10_8, &ebgp())),
        DispositionClass::TreatAsWithdraw
    );
    assert_eq!(
        class(&update(&attrs, &NLRI_10_8, &ibgp())),
        DispositionClass::Accept
    );
}

#[test]
fn row_as_0_in_as_path() {
    let attrs = [origin(), as_path4(&[PEER_AS, 0]), next_hop([192, 0, 2, 9])].concat();
    assert_eq!(
        class(&update(&attrs, &NLRI_10_8, &ebgp())),
        DispositionClass::TreatAsWithdraw
    );
}

#[test]
fn row_first_as_not_peer_as_and_own_as_in_path_helpers_for_rib() {
    // These checks belong to the RIB (configurable, not a decode error);
    // the codec hands over the 4-octet path and these helpers.
    let attrs = [
        origin(),
        as_path4(&[65001, LOCAL_AS, 65003]),
        next_hop([192, 0, 2, 9]),
    ]
    .concat();
    let d = update(&attrs, &NLRI_10_8, &ebgp());
    assert_eq!(class(&d), DispositionClass::Accept);
    let path = d.update.attributes.as_path.unwrap();
    assert_eq!(path.first_asn(), Some(65001));
    assert_ne!(path.first_asn(), Some(PEER_AS));
    assert!(path.contains(LOCAL_AS));
    assert_eq!(path.origin_asn(), Some(65003));
}

#[test]
fn row_as4_path_from_four_octet_speaker_malformed_or_longer_is_ignored() {
    let as4 = |segs: &[u8]| attr(OPT_TRANS, 17, segs);
    // From a 4-octet speaker: ignored, AS_PATH stands.
    let attrs = [mandatory(), as4(&[2, 1, 0, 0, 0xfd, 0xe8])].concat();
    let d = update(&attrs, &NLRI_10_8, &ebgp());
    assert_eq!(
        d.update.attributes.as_path,
        Some(AsPath::from_sequence([PEER_AS]))
    );
    assert_ne!(class(&d), DispositionClass::TreatAsWithdraw);
    // 2-octet session: AS_PATH [65001 AS_TRANS], AS4_PATH [4200000000].
    let ctx = SessionContext {
        peer_as: 65001,
        ..ebgp_two_octet()
    };
    let base = [
        origin(),
        as_path2(&[65001, 23456]),
        next_hop([192, 0, 2, 9]),
    ]
    .concat();
    let good = as4(&[2, 1, 0xfa, 0x56, 0xea, 0x00]);
    let d = update(&[base.clone(), good].concat(), &NLRI_10_8, &ctx);
    assert_eq!(class(&d), DispositionClass::Accept);
    assert_eq!(
        d.update.attributes.as_path,
        Some(AsPath::from_sequence([65001, 4_200_000_000]))
    );
    // Malformed AS4_PATH (overrun): ignored, path keeps AS_TRANS, route kept.
    let d = update(
        &[base.clone(), as4(&[2, 2, 0xfa, 0x56, 0xea, 0x00])].concat(),
        &NLRI_10_8,
        &ctx,
    );
    assert_eq!(
        d.update.attributes.as_path,
        Some(AsPath::from_sequence([65001, 23456]))
    );
    assert_eq!(class(&d), DispositionClass::AttributeDiscard);
    // AS4_PATH longer than AS_PATH: ignored.
    let long = as4(&[2, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]);
    let d = update(&[base, long].concat(), &NLRI_10_8, &ctx);
    assert_eq!(
        d.update.attributes.as_path,
        Some(AsPath::from_sequence([65001, 23456]))
    );
    assert_eq!(class(&d), DispositionClass::AttributeDiscard);
}

#[test]
fn row_next_hop_length_not_4_or_semantically_invalid() {
    let attrs = [origin(), as_path4(&[PEER_AS]), attr(WK, 3, &[192, 0, 2])].concat();
    assert_eq!(
        class(&update(&attrs, &NLRI_10_8, &ebgp())),
        DispositionClass::TreatAsWithdraw
    );
    for bad in [[0, 0, 0, 0], [224, 0, 0, 5], [255, 255, 255, 255]] {
        let attrs = [origin(), as_path4(&[PEER_AS]), next_hop(bad)].concat();
        let d = update(&attrs, &NLRI_10_8, &ebgp());
        assert_eq!(
            class(&d),
            DispositionClass::IgnoreRoutes,
            "next hop {bad:?}"
        );
    }
    // An IPv6 next hop that is multicast: ignore the routes.
    let mp = mp_reach_v6(
        &"ff02::1".parse::<std::net::Ipv6Addr>().unwrap().octets(),
        &NLRI_2001_DB8,
    );
    let attrs = [origin(), as_path4(&[PEER_AS]), attr(OPT, 14, &mp)].concat();
    assert_eq!(
        class(&update(&attrs, &[], &ebgp())),
        DispositionClass::IgnoreRoutes
    );
}

#[test]
fn row_med_length_not_4_local_pref_ibgp_length_or_ebgp() {
    let d = update(
        &[mandatory(), attr(OPT, 4, &[0, 0, 1])].concat(),
        &NLRI_10_8,
        &ebgp(),
    );
    assert_eq!(class(&d), DispositionClass::TreatAsWithdraw);
    let ibgp_attrs = [origin(), as_path4(&[]), next_hop([192, 0, 2, 9])].concat();
    let d = update(
        &[ibgp_attrs.clone(), attr(WK, 5, &[0, 0, 0, 100, 0])].concat(),
        &NLRI_10_8,
        &ibgp(),
    );
    assert_eq!(class(&d), DispositionClass::TreatAsWithdraw);
    let d = update(
        &[ibgp_attrs, attr(WK, 5, &[0, 0, 0, 100])].concat(),
        &NLRI_10_8,
        &ibgp(),
    );
    assert_eq!(
        (class(&d), d.update.attributes.local_pref),
        (DispositionClass::Accept, Some(100))
    );
    // From eBGP, any LOCAL_PREF is discarded, even a malformed one.
    for value in [&[0, 0, 0, 100][..], &[1][..]] {
        let d = update(
            &[mandatory(), attr(WK, 5, value)].concat(),
            &NLRI_10_8,
            &ebgp(),
        );
        assert_eq!(class(&d), DispositionClass::AttributeDiscard);
        assert_eq!(d.update.attributes.local_pref, None);
    }
}

#[test]
fn row_atomic_aggregate_and_aggregator_malformed_discarded() {
    let d = update(
        &[mandatory(), attr(WK, 6, &[0])].concat(),
        &NLRI_10_8,
        &ebgp(),
    );
    assert_eq!(class(&d), DispositionClass::AttributeDiscard);
    assert!(!d.update.attributes.atomic_aggregate);
    // 4-octet session wants 8 octets; 6 is wrong here.
    let d = update(
        &[mandatory(), attr(OPT_TRANS, 7, &[0xfd, 0xe9, 10, 0, 0, 1])].concat(),
        &NLRI_10_8,
        &ebgp(),
    );
    assert_eq!(
        (class(&d), d.update.attributes.aggregator),
        (DispositionClass::AttributeDiscard, None)
    );
    // ... and 6 is right for a 2-octet session.
    let ctx = ebgp_two_octet();
    let attrs = [
        origin(),
        as_path2(&[PEER_AS as u16]),
        next_hop([192, 0, 2, 9]),
        attr(OPT_TRANS, 7, &[0xfd, 0xe9, 10, 0, 0, 1]),
    ]
    .concat();
    let d = update(&attrs, &NLRI_10_8, &ctx);
    assert_eq!(
        d.update.attributes.aggregator,
        Some(Aggregator {
            asn: 65001,
            address: Ipv4Addr::new(10, 0, 0, 1)
        })
    );
    // AS 0.
    let d = update(
        &[mandatory(), attr(OPT_TRANS, 7, &[0, 0, 0, 0, 10, 0, 0, 1])].concat(),
        &NLRI_10_8,
        &ebgp(),
    );
    assert_eq!(class(&d), DispositionClass::AttributeDiscard);
}

#[test]
fn row_communities_or_large_communities_bad_length() {
    for value in [&[][..], &[0, 0, 1][..], &[0, 0, 0, 1, 2][..]] {
        let d = update(
            &[mandatory(), attr(OPT_TRANS, 8, value)].concat(),
            &NLRI_10_8,
            &ebgp(),
        );
        assert_eq!(
            class(&d),
            DispositionClass::TreatAsWithdraw,
            "COMMUNITIES {value:?}"
        );
    }
    for len in [0usize, 11, 13, 25] {
        let d = update(
            &[mandatory(), attr(OPT_TRANS, 32, &vec![1; len])].concat(),
            &NLRI_10_8,
            &ebgp(),
        );
        assert_eq!(
            class(&d),
            DispositionClass::TreatAsWithdraw,
            "LARGE_COMMUNITY len {len}"
        );
    }
    let d = update(
        &[
            mandatory(),
            attr(OPT_TRANS, 32, &[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]),
        ]
        .concat(),
        &NLRI_10_8,
        &ebgp(),
    );
    assert_eq!(
        d.update.attributes.large_communities,
        vec![LargeCommunity {
            global: 1,
            local1: 2,
            local2: 3
        }]
    );
}

#[test]
fn row_originator_id_cluster_list_from_ebgp_or_bad_length_on_ibgp() {
    let d = update(
        &[
            mandatory(),
            attr(OPT, 9, &[10, 0, 0, 1]),
            attr(OPT, 10, &[10, 0, 0, 2]),
        ]
        .concat(),
        &NLRI_10_8,
        &ebgp(),
    );
    assert_eq!(class(&d), DispositionClass::AttributeDiscard);
    assert_eq!(
        (
            d.update.attributes.originator_id,
            d.update.attributes.cluster_list.len()
        ),
        (None, 0)
    );
    let base = [origin(), as_path4(&[]), next_hop([192, 0, 2, 9])].concat();
    let d = update(
        &[base.clone(), attr(OPT, 9, &[10, 0, 0])].concat(),
        &NLRI_10_8,
        &ibgp(),
    );
    assert_eq!(class(&d), DispositionClass::TreatAsWithdraw);
    let d = update(
        &[base.clone(), attr(OPT, 10, &[10, 0, 0, 1, 2])].concat(),
        &NLRI_10_8,
        &ibgp(),
    );
    assert_eq!(class(&d), DispositionClass::TreatAsWithdraw);
    let d = update(
        &[
            base,
            attr(OPT, 9, &[10, 0, 0, 1]),
            attr(OPT, 10, &[10, 0, 0, 2, 10, 0, 0, 3]),
        ]
        .concat(),
        &NLRI_10_8,
        &ibgp(),
    );
    assert_eq!(class(&d), DispositionClass::Accept);
    assert_eq!(
        d.update.attributes.originator_id,
        Some(Ipv4Addr::new(10, 0, 0, 1))
    );
    assert_eq!(
        d.update.attributes.cluster_list,
        vec![Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)]
    );
}

#[test]
fn row_mp_reach_next_hop_length_wrong_or_bad_nlri() {
    for nh_len in [4usize, 15, 17, 31, 33] {
        let mp = mp_reach_v6(&vec![0x20; nh_len], &NLRI_2001_DB8);
        let attrs = [origin(), as_path4(&[PEER_AS]), attr(OPT, 14, &mp)].concat();
        let d = update(&attrs, &[], &ebgp());
        assert_eq!(
            class(&d),
            DispositionClass::AfiSafiDisable,
            "next hop length {nh_len}"
        );
    }
    // IPv4 AFI with a 16-octet next hop (RFC 8950 not negotiated).
    let mut mp = vec![0, 1, 1, 16];
    mp.extend_from_slice(&v6_next_hop());
    mp.extend_from_slice(&[0, 8, 10]);
    let attrs = [origin(), as_path4(&[PEER_AS]), attr(OPT, 14, &mp)].concat();
    assert_eq!(
        class(&update(&attrs, &[], &ebgp())),
        DispositionClass::AfiSafiDisable
    );
    // Too short to hold AFI/SAFI: the family is unknown, so reset 3/9.
    let attrs = [origin(), as_path4(&[PEER_AS]), attr(OPT, 14, &[0, 2])].concat();
    assert_eq!(reset_pair(&update(&attrs, &[], &ebgp())), (3, 9));
    // A family that was not negotiated: ignored.
    let ctx = SessionContext {
        families: vec![Family::IPV4_UNICAST],
        ..ebgp()
    };
    let mp = mp_reach_v6(&v6_next_hop(), &NLRI_2001_DB8);
    let attrs = [origin(), as_path4(&[PEER_AS]), attr(OPT, 14, &mp)].concat();
    let d = update(&attrs, &[], &ctx);
    assert_eq!(
        (class(&d), d.update.mp_reach),
        (DispositionClass::AttributeDiscard, None)
    );
}

#[test]
fn row_prefix_limit_notification_for_fsm() {
    // The check is the FSM's; the codec builds the RFC 4486 NOTIFICATION.
    let n = Notification::max_prefixes(Family::IPV6_UNICAST, 1000);
    assert_eq!(n.code.pair(), (6, 1));
    assert_eq!(n.data, vec![0, 2, 1, 0, 0, 0x03, 0xe8]);
}

#[test]
fn row_huge_as_path_and_hostile_sizes_are_bounded() {
    // The largest AS_PATH a 4096-octet UPDATE can hold decodes (and a
    // longer one cannot arrive: the framer caps messages at 4096).
    let asns: Vec<u32> = (1..=1000).collect();
    let mut value = Vec::new();
    for chunk in asns.chunks(255) {
        value.push(2);
        value.push(chunk.len() as u8);
        for a in chunk {
            value.extend_from_slice(&a.to_be_bytes());
        }
    }
    let attrs = [origin(), attr(WK, 2, &value), next_hop([192, 0, 2, 9])].concat();
    let body = update_body(&[], &attrs, &NLRI_10_8);
    let m = message(2, &body);
    assert!(m.len() <= 4096);
    let Ok(Received::Update(d)) = receive(&m, &ebgp()) else {
        panic!()
    };
    assert_eq!(d.update.attributes.as_path.unwrap().asn_count(), 1000);
    // A body of thousands of hostile attributes: faults stay capped.
    let junk: Vec<u8> = (0..1000).flat_map(|_| attr(WK, 6, &[1])).collect();
    let d = decode_update(&update_body(&[], &junk, &[]), &ebgp());
    assert!(d.faults.len() <= MAX_FAULTS);
    // The framer holds at most one partial message after draining.
    let mut f = Framer::new();
    f.push(&message(2, &body)[..4000]);
    assert_eq!(f.next_frame(), Ok(None));
    assert_eq!(f.buffered(), 4000);
}
