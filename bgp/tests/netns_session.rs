//! Session and error handling against a hand-driven peer: the rows of
//! bgp-malformed.md that belong to the session FSM and the RIB, and the
//! RFC 7606 actions a malformed UPDATE gets end to end. Each test runs a
//! speaker inside a namespace of its own (loopback only).

mod raw;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use margay_bgp::codec::{
    CeaseSubcode, FsmSubcode, HeaderSubcode, Message, NotificationCode, OpenSubcode,
    RouteRefreshSubcode, UpdateSubcode,
};
use margay_bgp::fsm::State;
use margay_bgp::{
    LocalRoute, PeerConfig, PrefixFilter, RouteQuery, ShutdownMode, Speaker, SpeakerConfig,
    SpeakerHandle,
};
use raw::*;

const LOCAL_AS: u32 = 65000;
const PEER_AS: u32 = 65001;
const SPEAKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

async fn speaker(peers: Vec<PeerConfig>) -> SpeakerHandle {
    let mut cfg = SpeakerConfig::new(SPEAKER, LOCAL_AS);
    cfg.listen = vec![addr(SPEAKER, 179)];
    let (h, _best) = Speaker::start(cfg).await.expect("speaker");
    for p in peers {
        h.add_peer(p).await.expect("add peer");
    }
    h
}

/// A passive eBGP peer accepting everything (the raw peer connects).
fn ebgp_peer(ip: Ipv4Addr) -> PeerConfig {
    let mut p = PeerConfig::new(IpAddr::V4(ip), PEER_AS);
    p.passive = true;
    p.hold_time = 9;
    p.import = Some(PrefixFilter::accept_all());
    p.export = Some(PrefixFilter::accept_all());
    p
}

async fn connect(from: Ipv4Addr) -> RawPeer {
    RawPeer::connect(addr(from, 0), addr(SPEAKER, 179)).await
}

async fn established_peer(from: Ipv4Addr) -> RawPeer {
    let mut r = connect(from).await;
    r.handshake(open(PEER_AS, 9, from)).await;
    r
}

async fn wait_for<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let end = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn has_route(h: &SpeakerHandle, prefix: &str) -> bool {
    h.routes(RouteQuery::LocRib)
        .await
        .expect("routes")
        .iter()
        .any(|r| r.prefix.to_string() == prefix && r.best && r.rejected.is_none())
}

async fn state(h: &SpeakerHandle, ip: Ipv4Addr) -> State {
    h.peers()
        .await
        .expect("peers")
        .into_iter()
        .find(|p| p.address == IpAddr::V4(ip))
        .map(|p| p.state)
        .expect("peer exists")
}

fn valid(prefix: [u8; 4], len: u8) -> Vec<u8> {
    update(
        &[],
        &[origin_igp(), as_path(&[PEER_AS]), next_hop(PEER)],
        &nlri(prefix, len),
    )
}

#[test]
fn malformed_attributes_get_the_rfc7606_action_without_a_reset() {
    let ns = namespace("mbs7606", &[]);
    in_netns(&ns, || async {
        let h = speaker(vec![ebgp_peer(PEER)]).await;
        let mut r = established_peer(PEER).await;

        r.send_raw(&valid([10, 1, 0, 0], 24)).await;
        wait_for("a valid route", async || {
            has_route(&h, "10.1.0.0/24").await.then_some(())
        })
        .await;

        // ORIGIN with the optional bit: flag conflict, treat-as-withdraw
        // (RFC 7606 §3c): the route goes away, the session stays.
        r.send_raw(&update(
            &[],
            &[attr(0xc0, 1, &[0]), as_path(&[PEER_AS]), next_hop(PEER)],
            &nlri([10, 1, 0, 0], 24),
        ))
        .await;
        wait_for("treat-as-withdraw", async || {
            (!has_route(&h, "10.1.0.0/24").await).then_some(())
        })
        .await;

        let withdraw_cases: Vec<(&str, Vec<u8>)> = vec![
            // AS 0 in AS_PATH (RFC 7607).
            (
                "10.2.0.0/24",
                update(
                    &[],
                    &[origin_igp(), as_path(&[PEER_AS, 0]), next_hop(PEER)],
                    &nlri([10, 2, 0, 0], 24),
                ),
            ),
            // MED of 3 octets.
            (
                "10.3.0.0/24",
                update(
                    &[],
                    &[
                        origin_igp(),
                        as_path(&[PEER_AS]),
                        next_hop(PEER),
                        attr(0x80, 4, &[0, 0, 1]),
                    ],
                    &nlri([10, 3, 0, 0], 24),
                ),
            ),
            // NEXT_HOP missing with IPv4 NLRI.
            (
                "10.4.0.0/24",
                update(
                    &[],
                    &[origin_igp(), as_path(&[PEER_AS])],
                    &nlri([10, 4, 0, 0], 24),
                ),
            ),
            // COMMUNITIES not a multiple of 4.
            (
                "10.5.0.0/24",
                update(
                    &[],
                    &[
                        origin_igp(),
                        as_path(&[PEER_AS]),
                        next_hop(PEER),
                        attr(0xc0, 8, &[0, 1, 0]),
                    ],
                    &nlri([10, 5, 0, 0], 24),
                ),
            ),
            // AS_PATH segment of type 7.
            (
                "10.6.0.0/24",
                update(
                    &[],
                    &[
                        origin_igp(),
                        attr(0x40, 2, &[7, 1, 0, 0, 0xfd, 0xe9]),
                        next_hop(PEER),
                    ],
                    &nlri([10, 6, 0, 0], 24),
                ),
            ),
            // ORIGIN value 5.
            (
                "10.7.0.0/24",
                update(
                    &[],
                    &[attr(0x40, 1, &[5]), as_path(&[PEER_AS]), next_hop(PEER)],
                    &nlri([10, 7, 0, 0], 24),
                ),
            ),
        ];
        for (prefix, bytes) in &withdraw_cases {
            r.send_raw(bytes).await;
            let _ = prefix;
        }
        // ATOMIC_AGGREGATE with a value: the attribute is discarded, the
        // route kept (§7.6). Unknown optional attributes: non-transitive
        // dropped, transitive kept with Partial; the route stands.
        r.send_raw(&update(
            &[],
            &[
                origin_igp(),
                as_path(&[PEER_AS]),
                next_hop(PEER),
                attr(0x40, 6, &[1]),
                attr(0x80, 200, &[1, 2]),
                attr(0xc0, 201, &[3]),
            ],
            &nlri([10, 8, 0, 0], 24),
        ))
        .await;
        wait_for("the discard-attribute route", async || {
            has_route(&h, "10.8.0.0/24").await.then_some(())
        })
        .await;
        // UPDATEs are processed in order, so the earlier ones are done.
        for (prefix, _) in &withdraw_cases {
            assert!(
                !has_route(&h, prefix).await,
                "{prefix} should have been treated as withdrawn"
            );
        }
        // Our own AS in the path: a loop, rejected without an error.
        r.send_raw(&update(
            &[],
            &[origin_igp(), as_path(&[PEER_AS, LOCAL_AS]), next_hop(PEER)],
            &nlri([10, 9, 0, 0], 24),
        ))
        .await;
        // eBGP path not starting with the peer's AS: withdrawn.
        r.send_raw(&update(
            &[],
            &[origin_igp(), as_path(&[65099]), next_hop(PEER)],
            &nlri([10, 10, 0, 0], 24),
        ))
        .await;
        // An empty UPDATE is End-of-RIB, not an error.
        r.send_raw(&update(&[], &[], &[])).await;
        let adj = wait_for("the looped routes in the Adj-RIB-In", async || {
            let adj = h.routes(RouteQuery::AdjIn(IpAddr::V4(PEER))).await.ok()?;
            let n = adj.iter().filter(|x| x.rejected.is_some()).count();
            (n >= 2).then_some(adj)
        })
        .await;
        let reason = |p: &str| {
            adj.iter()
                .find(|x| x.prefix.to_string() == p)
                .and_then(|x| x.rejected)
        };
        assert_eq!(
            reason("10.9.0.0/24"),
            Some(margay_bgp::rib::Rejection::AsLoop)
        );
        assert_eq!(
            reason("10.10.0.0/24"),
            Some(margay_bgp::rib::Rejection::FirstAsMismatch)
        );

        let p = &h.peers().await.expect("peers")[0];
        assert_eq!(p.state, State::Established, "no reset: {:?}", p.last_error);
        assert!(p.messages.malformed_updates_in >= 8, "{:?}", p.messages);
        assert_eq!(p.messages.notifications_out, 0);
        h.shutdown(ShutdownMode::Notify).await.expect("shutdown");
    });
}

/// Each case on a fresh connection: (what we send after the handshake,
/// the NOTIFICATION code we expect).
#[test]
fn malformed_messages_reset_the_session_with_the_right_notification() {
    let ns = namespace("mbsreset", &[]);
    in_netns(&ns, || async {
        let h = speaker(vec![ebgp_peer(PEER)]).await;
        let mp_reach = attr(
            0x90,
            14,
            &[
                0, 2, 1, 16, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 64, 0xfd, 0, 0,
                1, 0, 0, 0, 0,
            ],
        );
        let cases: Vec<(&str, Vec<u8>, NotificationCode)> = vec![
            (
                "NLRI length 33",
                update(
                    &[],
                    &[origin_igp(), as_path(&[PEER_AS]), next_hop(PEER)],
                    &[33, 10, 0, 0, 0, 0],
                ),
                NotificationCode::Update(UpdateSubcode::InvalidNetworkField),
            ),
            (
                "MP_REACH twice",
                update(
                    &[],
                    &[
                        origin_igp(),
                        as_path(&[PEER_AS]),
                        mp_reach.clone(),
                        mp_reach.clone(),
                    ],
                    &[],
                ),
                NotificationCode::Update(UpdateSubcode::MalformedAttributeList),
            ),
            (
                "withdrawn length overruns the message",
                message(2, &[0, 200, 0, 0]),
                NotificationCode::Update(UpdateSubcode::MalformedAttributeList),
            ),
            (
                "unrecognised well-known attribute",
                update(
                    &[],
                    &[
                        origin_igp(),
                        as_path(&[PEER_AS]),
                        next_hop(PEER),
                        attr(0x40, 99, &[1]),
                    ],
                    &nlri([10, 1, 0, 0], 24),
                ),
                NotificationCode::Update(UpdateSubcode::UnrecognizedWellKnownAttribute),
            ),
            (
                "marker not all ones",
                {
                    let mut m = message(4, &[]);
                    m[3] = 0;
                    m
                },
                NotificationCode::MessageHeader(HeaderSubcode::ConnectionNotSynchronized),
            ),
            (
                "length below 19",
                {
                    let mut m = message(4, &[]);
                    m[17] = 18;
                    m
                },
                NotificationCode::MessageHeader(HeaderSubcode::BadMessageLength),
            ),
            (
                "unknown message type",
                message(9, &[]),
                NotificationCode::MessageHeader(HeaderSubcode::BadMessageType),
            ),
            (
                "ROUTE-REFRESH of 3 octets with enhanced refresh",
                message(5, &[0, 1, 0]),
                NotificationCode::RouteRefresh(RouteRefreshSubcode::InvalidMessageLength),
            ),
            (
                "OPEN while Established",
                margay_bgp::codec::encode_to_vec(
                    &Message::Open(open(PEER_AS, 9, PEER)),
                    &margay_bgp::codec::SessionContext::new(PEER_AS, LOCAL_AS),
                )
                .expect("encode"),
                NotificationCode::Fsm(FsmSubcode::UnexpectedMessageInEstablished),
            ),
        ];
        for (what, bytes, expected) in cases {
            let mut r = established_peer(PEER).await;
            r.send_raw(&bytes).await;
            let n = r.expect_notification().await;
            assert_eq!(n.code, expected, "{what}: got {n}");
            r.expect_silent_close().await;
        }
        // A malformed NOTIFICATION is never answered: the speaker closes.
        let mut r = established_peer(PEER).await;
        r.send_raw(&message(3, &[6])).await;
        r.expect_silent_close().await;
        h.shutdown(ShutdownMode::Notify).await.expect("shutdown");
    });
}

#[test]
fn open_errors_and_fsm_errors_before_established() {
    let ns = namespace("mbsopen", &[]);
    const IBGP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
    in_netns(&ns, || async {
        let mut ib = PeerConfig::new(IpAddr::V4(IBGP), LOCAL_AS);
        ib.passive = true;
        let h = speaker(vec![ebgp_peer(PEER), ib]).await;
        let ctx = margay_bgp::codec::SessionContext::new(PEER_AS, LOCAL_AS);
        let enc = |m: &Message| margay_bgp::codec::encode_to_vec(m, &ctx).expect("encode");

        // OPEN errors (the speaker's OPEN arrives first, then its verdict).
        let mut v3 = enc(&Message::Open(open(PEER_AS, 9, PEER)));
        v3[19] = 3;
        let cases: Vec<(&str, Ipv4Addr, Vec<u8>, NotificationCode)> = vec![
            (
                "version 3",
                PEER,
                v3,
                NotificationCode::Open(OpenSubcode::UnsupportedVersionNumber),
            ),
            (
                "hold time 2",
                PEER,
                enc(&Message::Open(open(PEER_AS, 2, PEER))),
                NotificationCode::Open(OpenSubcode::UnacceptableHoldTime),
            ),
            (
                "wrong AS",
                PEER,
                enc(&Message::Open(open(65002, 9, PEER))),
                NotificationCode::Open(OpenSubcode::BadPeerAs),
            ),
            (
                "iBGP peer using our identifier",
                IBGP,
                enc(&Message::Open(open(LOCAL_AS, 9, SPEAKER))),
                NotificationCode::Open(OpenSubcode::BadBgpIdentifier),
            ),
            (
                "identifier 0",
                PEER,
                enc(&Message::Open(open(PEER_AS, 9, Ipv4Addr::UNSPECIFIED))),
                NotificationCode::Open(OpenSubcode::BadBgpIdentifier),
            ),
            // RFC 6608: KEEPALIVE in OpenSent.
            (
                "KEEPALIVE before OPEN",
                PEER,
                enc(&Message::Keepalive),
                NotificationCode::Fsm(FsmSubcode::UnexpectedMessageInOpenSent),
            ),
        ];
        for (what, from, bytes, expected) in cases {
            let mut r = connect(from).await;
            r.send_raw(&bytes).await;
            let n = r.expect_notification().await;
            assert_eq!(n.code, expected, "{what}: got {n}");
        }
        // RFC 6608: UPDATE in OpenConfirm (after both OPENs, before the
        // KEEPALIVE).
        let mut r = connect(PEER).await;
        r.send(&Message::Open(open(PEER_AS, 9, PEER))).await;
        r.send_raw(&valid([10, 1, 0, 0], 24)).await;
        let n = r.expect_notification().await;
        assert_eq!(
            n.code,
            NotificationCode::Fsm(FsmSubcode::UnexpectedMessageInOpenConfirm)
        );
        assert_eq!(n.data, vec![2], "the offending message type");
        h.shutdown(ShutdownMode::Notify).await.expect("shutdown");
    });
}

#[test]
fn hold_timer_expiry_sends_4_0() {
    let ns = namespace("mbshold", &[]);
    in_netns(&ns, || async {
        let mut p = ebgp_peer(PEER);
        p.hold_time = 3;
        let h = speaker(vec![p]).await;
        let mut r = connect(PEER).await;
        r.handshake(open(PEER_AS, 3, PEER)).await;
        // Say nothing more: after 3 s the speaker gives up.
        let n = r.expect_notification().await;
        assert_eq!(n.code, NotificationCode::HoldTimerExpired);
        let peers = h.peers().await.expect("peers");
        assert_ne!(peers[0].state, State::Established);
        assert!(
            peers[0]
                .last_error
                .as_deref()
                .unwrap_or("")
                .contains("hold timer")
        );
        h.shutdown(ShutdownMode::Notify).await.expect("shutdown");
    });
}

#[test]
fn prefix_limit_sends_cease_6_1_with_family_and_limit() {
    let ns = namespace("mbslimit", &[]);
    in_netns(&ns, || async {
        let mut p = ebgp_peer(PEER);
        p.max_prefixes = Some(2);
        let h = speaker(vec![p]).await;
        let mut r = established_peer(PEER).await;
        r.send_raw(&update(
            &[],
            &[origin_igp(), as_path(&[PEER_AS]), next_hop(PEER)],
            &[
                nlri([10, 1, 0, 0], 24),
                nlri([10, 2, 0, 0], 24),
                nlri([10, 3, 0, 0], 24),
            ]
            .concat(),
        ))
        .await;
        let n = r.expect_notification().await;
        assert_eq!(
            n.code,
            NotificationCode::Cease(CeaseSubcode::MaximumPrefixesReached)
        );
        assert_eq!(n.data, vec![0, 1, 1, 0, 0, 0, 2], "AFI 1, SAFI 1, limit 2");
        wait_for("the peer's routes gone", async || {
            h.routes(RouteQuery::LocRib)
                .await
                .ok()?
                .is_empty()
                .then_some(())
        })
        .await;
        h.shutdown(ShutdownMode::Notify).await.expect("shutdown");
    });
}

#[test]
fn connection_collision_keeps_the_higher_identifier_and_sends_6_7() {
    let ns = namespace("mbscoll", &[]);
    in_netns(&ns, || async {
        // The speaker connects out to the raw peer while the raw peer
        // connects in. The raw peer's identifier (127.0.0.2) is higher
        // than the speaker's (127.0.0.1): the peer's connection wins.
        let listener = tokio::net::TcpListener::bind(addr(PEER, 179))
            .await
            .expect("listen");
        let mut p = ebgp_peer(PEER);
        p.passive = false;
        p.connect_retry_time = 1;
        let h = speaker(vec![p]).await;
        let (theirs, _) = listener.accept().await.expect("speaker connects");
        let mut theirs = RawPeer::from(theirs);
        // The speaker's OPEN on its connection: that connection is now
        // the session's (OpenSent) before ours arrives.
        let f = theirs.recv().await.expect("the speaker's OPEN");
        assert_eq!(f.message_type, margay_bgp::codec::MessageType::Open);
        let mut ours = connect(PEER).await;
        // OPEN on our connection first: the speaker learns our identifier
        // and resolves the collision at once.
        ours.send(&Message::Open(open(PEER_AS, 9, PEER))).await;
        let n = theirs.expect_notification().await;
        assert_eq!(
            n.code,
            NotificationCode::Cease(CeaseSubcode::ConnectionCollisionResolution)
        );
        // The surviving connection completes.
        ours.send(&Message::Keepalive).await;
        wait_for("Established on the peer's connection", async || {
            (state(&h, PEER).await == State::Established).then_some(())
        })
        .await;
        h.shutdown(ShutdownMode::Notify).await.expect("shutdown");
    });
}

#[test]
fn send_hold_timer_ends_a_session_whose_peer_stops_reading() {
    // Tiny socket buffers, so a few hundred UPDATEs fill them.
    let ns = namespace(
        "mbssend",
        &[
            ("net.ipv4.tcp_wmem", "4096 4096 4096"),
            ("net.ipv4.tcp_rmem", "4096 4096 4096"),
        ],
    );
    in_netns(&ns, || async {
        let mut p = ebgp_peer(PEER);
        p.send_hold_time = Some(3);
        let h = speaker(vec![p]).await;
        let mut r = established_peer(PEER).await;
        // Distinct attributes per route: one UPDATE each.
        for i in 0..3000u32 {
            let route = LocalRoute {
                med: Some(i),
                ..LocalRoute::default()
            };
            let prefix = format!("10.{}.{}.0/24", i / 256, i % 256);
            h.announce(prefix.parse().expect("prefix"), route)
                .await
                .expect("announce");
        }
        // Keep our side alive (KEEPALIVEs) but never read.
        let deadline = Instant::now() + WAIT;
        loop {
            let peers = h.peers().await.expect("peers");
            if peers[0].state != State::Established {
                let err = peers[0].last_error.clone().unwrap_or_default();
                assert!(
                    err.contains("send hold timer"),
                    "ended for another reason: {err}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "the send hold timer never fired");
            let _ =
                tokio::time::timeout(Duration::from_millis(200), r.send(&Message::Keepalive)).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        h.shutdown(ShutdownMode::Notify).await.expect("shutdown");
    });
}

#[test]
fn a_peer_reconnecting_while_established_is_a_graceful_restart() {
    let ns = namespace("mbsgr", &[]);
    in_netns(&ns, || async {
        let h = speaker(vec![ebgp_peer(PEER)]).await;
        let gr_open = |restarted: bool| {
            let mut o = open(PEER_AS, 9, PEER);
            o.capabilities.graceful_restart = Some(margay_bgp::codec::GracefulRestart {
                restart_state: restarted,
                notification: false,
                restart_time: 30,
                families: vec![margay_bgp::codec::GracefulRestartFamily {
                    family: margay_bgp::codec::Family::IPV4_UNICAST,
                    forwarding_state: restarted,
                }],
            });
            o
        };
        let mut old = connect(PEER).await;
        old.handshake(gr_open(false)).await;
        old.send_raw(&valid([10, 1, 0, 0], 24)).await;
        wait_for("the route", async || {
            has_route(&h, "10.1.0.0/24").await.then_some(())
        })
        .await;

        // The peer restarts without the old connection closing (a crash
        // the TCP stack never reported): a new connection, a new OPEN.
        let mut new = connect(PEER).await;
        new.handshake(gr_open(true)).await;
        old.expect_silent_close().await;
        let stale = wait_for("the route kept as stale", async || {
            let r = h.routes(RouteQuery::LocRib).await.ok()?;
            r.into_iter()
                .find(|x| x.prefix.to_string() == "10.1.0.0/24" && x.stale)
        })
        .await;
        assert!(stale.best);
        // End-of-RIB without the route: the stale copy goes.
        new.send_raw(&update(&[], &[], &[])).await;
        wait_for("the stale route flushed", async || {
            (!has_route(&h, "10.1.0.0/24").await).then_some(())
        })
        .await;
        assert_eq!(state(&h, PEER).await, State::Established);
        h.shutdown(ShutdownMode::Notify).await.expect("shutdown");
    });
}
