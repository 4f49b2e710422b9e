//! Two in-process speakers over loopback addresses (127.x.y.z, no
//! namespace needed): sessions, route exchange, withdrawals, status,
//! runtime peer changes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use margay_bgp::fsm::State;
use margay_bgp::{
    BestRouteEvent, LocalRoute, PeerConfig, PrefixFilter, RouteQuery, ShutdownMode, Speaker,
    SpeakerConfig, SpeakerHandle,
};
use tokio::sync::mpsc;

/// A unique 127.a.b.0/24 block per test (tests run in parallel).
fn block() -> [u8; 2] {
    let n = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    [(n % 250) as u8 + 2, ((n >> 8) % 250) as u8 + 2]
}

fn ip(b: [u8; 2], h: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, b[0], b[1], h))
}

async fn speaker(b: [u8; 2], h: u8, asn: u32) -> (SpeakerHandle, mpsc::Receiver<BestRouteEvent>) {
    let IpAddr::V4(rid) = ip(b, h) else {
        unreachable!()
    };
    let mut cfg = SpeakerConfig::new(rid, asn);
    cfg.listen = vec![SocketAddr::new(ip(b, h), 179)];
    cfg.graceful_restart.selection_deferral_time = 30;
    Speaker::start(cfg).await.expect("speaker starts")
}

fn peer(b: [u8; 2], local: u8, remote: u8, asn: u32) -> PeerConfig {
    let mut p = PeerConfig::new(ip(b, remote), asn);
    p.source_address = Some(ip(b, local));
    p.hold_time = 9;
    p.connect_retry_time = 1;
    p
}

async fn wait_for<T>(what: &str, deadline: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn established(h: &SpeakerHandle, addr: IpAddr) {
    wait_for(
        &format!("session with {addr} Established"),
        Duration::from_secs(30),
        async || {
            let peers = h.peers().await.ok()?;
            peers
                .iter()
                .find(|p| p.address == addr && p.state == State::Established)
                .map(|_| ())
        },
    )
    .await;
}

async fn next_event(rx: &mut mpsc::Receiver<BestRouteEvent>) -> BestRouteEvent {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("a best-route event in time")
        .expect("event stream open")
}

async fn next_route_event(rx: &mut mpsc::Receiver<BestRouteEvent>) -> BestRouteEvent {
    loop {
        match next_event(rx).await {
            BestRouteEvent::Converged => continue,
            ev => return ev,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ibgp_routes_flow_both_ways_and_withdrawals_follow() {
    let b = block();
    let (a, mut a_rx) = speaker(b, 1, 65000).await;
    let (c, mut c_rx) = speaker(b, 2, 65000).await;
    a.add_peer(peer(b, 1, 2, 65000)).await.expect("add peer");
    c.add_peer(peer(b, 2, 1, 65000)).await.expect("add peer");
    established(&a, ip(b, 2)).await;
    established(&c, ip(b, 1)).await;
    // Both sides sent End-of-RIB: the initial table is complete.
    assert_eq!(next_event(&mut c_rx).await, BestRouteEvent::Converged);

    a.announce(
        "10.1.0.0/24".parse().expect("prefix"),
        LocalRoute::default(),
    )
    .await
    .expect("announce");
    match next_route_event(&mut c_rx).await {
        BestRouteEvent::Best(r) => {
            assert_eq!(r.prefix.to_string(), "10.1.0.0/24");
            assert_eq!(r.next_hops, vec![ip(b, 1)]);
            assert_eq!(r.peer, ip(b, 1));
            assert!(!r.ebgp);
        }
        other => panic!(
            "expected a best route, got {other:?}; C's table: {:?}; C's peers: {:?}",
            c.routes(RouteQuery::LocRib).await,
            c.peers().await
        ),
    }
    c.announce(
        "10.2.0.0/24".parse().expect("prefix"),
        LocalRoute::default(),
    )
    .await
    .expect("announce");
    match next_route_event(&mut a_rx).await {
        BestRouteEvent::Best(r) => assert_eq!(r.next_hops, vec![ip(b, 2)]),
        other => panic!("expected a best route, got {other:?}"),
    }
    a.withdraw("10.1.0.0/24".parse().expect("prefix"))
        .await
        .expect("withdraw");
    match next_route_event(&mut c_rx).await {
        BestRouteEvent::Withdrawn(p) => assert_eq!(p.to_string(), "10.1.0.0/24"),
        other => panic!("expected a withdrawal, got {other:?}"),
    }

    let peers = c.peers().await.expect("peers");
    let p = &peers[0];
    let n = p.negotiated.as_ref().expect("negotiated");
    assert!(n.route_refresh && n.enhanced_route_refresh && n.four_octet_as);
    assert!(n.graceful_restart);
    assert_eq!(n.hold_time, 9);
    assert_eq!(p.prefixes.received[0], 0, "the withdrawn route is gone");
    assert_eq!(p.prefixes.advertised[0], 1);
    assert!(p.messages.updates_in >= 2);

    let loc = a.routes(RouteQuery::LocRib).await.expect("routes");
    assert!(
        loc.iter()
            .any(|r| r.prefix.to_string() == "10.2.0.0/24" && r.best)
    );
    let out = a
        .routes(RouteQuery::AdjOut(ip(b, 2)))
        .await
        .expect("adj-out");
    assert!(out.is_empty(), "nothing left to advertise: {out:?}");

    a.shutdown(ShutdownMode::Notify).await.expect("shutdown");
    wait_for(
        "session down after Cease",
        Duration::from_secs(30),
        async || {
            let peers = c.peers().await.ok()?;
            (peers[0].state != State::Established).then_some(())
        },
    )
    .await;
    let peers = c.peers().await.expect("peers");
    let err = peers[0].last_error.clone().unwrap_or_default();
    assert!(err.contains("6/2"), "Cease 6/2 expected, got {err:?}");
    c.shutdown(ShutdownMode::Notify).await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebgp_export_policy_and_runtime_peer_changes() {
    let b = block();
    let (a, _a_rx) = speaker(b, 1, 65001).await;
    let (c, mut c_rx) = speaker(b, 2, 65002).await;
    // No export policy on A's side: RFC 8212 says nothing goes out.
    let mut to_c = peer(b, 1, 2, 65002);
    to_c.as_path_prepend = 1;
    a.add_peer(to_c.clone()).await.expect("add");
    let mut to_a = peer(b, 2, 1, 65001);
    to_a.import = Some(PrefixFilter::accept_all());
    c.add_peer(to_a).await.expect("add");
    established(&a, ip(b, 2)).await;
    a.announce(
        "10.5.0.0/24".parse().expect("prefix"),
        LocalRoute::default(),
    )
    .await
    .expect("announce");
    let peers = a.peers().await.expect("peers");
    assert_eq!(peers[0].prefixes.advertised[0], 0, "RFC 8212 default");

    // Add an export policy at run time: no session reset needed.
    let transitions = peers[0].messages.established_transitions;
    to_c.export = Some(PrefixFilter::accept_all());
    a.update_peer(to_c).await.expect("update");
    match next_route_event(&mut c_rx).await {
        BestRouteEvent::Best(r) => {
            assert!(r.ebgp);
            assert_eq!(crate_as_path(&r), vec![65001, 65001]);
        }
        other => panic!("expected a best route, got {other:?}"),
    }
    let peers = a.peers().await.expect("peers");
    assert_eq!(peers[0].messages.established_transitions, transitions);

    // Removing the peer on A withdraws everything C learned from it.
    a.remove_peer(ip(b, 2)).await.expect("remove");
    match next_route_event(&mut c_rx).await {
        BestRouteEvent::Withdrawn(p) => assert_eq!(p.to_string(), "10.5.0.0/24"),
        other => panic!("expected a withdrawal, got {other:?}"),
    }
    assert!(a.peers().await.expect("peers").is_empty());
    let dup = c.add_peer(peer(b, 2, 1, 65001)).await;
    assert!(
        dup.is_err(),
        "a second peer with the same address is refused"
    );
    a.shutdown(ShutdownMode::Notify).await.expect("shutdown");
    c.shutdown(ShutdownMode::Notify).await.expect("shutdown");
}

fn crate_as_path(r: &margay_bgp::BestRoute) -> Vec<u32> {
    r.attrs
        .attrs
        .as_path
        .as_ref()
        .map(|p| p.segments.iter().flat_map(|s| s.asns.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_changes_leave_other_sessions_alone() {
    let b = block();
    let (a, _a_rx) = speaker(b, 1, 65000).await;
    let (p2, _r2) = speaker(b, 2, 65000).await;
    let (p3, _r3) = speaker(b, 3, 65000).await;
    a.add_peer(peer(b, 1, 2, 65000)).await.expect("add");
    a.add_peer(peer(b, 1, 3, 65000)).await.expect("add");
    p2.add_peer(peer(b, 2, 1, 65000)).await.expect("add");
    p3.add_peer(peer(b, 3, 1, 65000)).await.expect("add");
    established(&a, ip(b, 2)).await;
    established(&a, ip(b, 3)).await;
    let transitions = |peers: &[margay_bgp::PeerStatus], addr: IpAddr| {
        peers
            .iter()
            .find(|p| p.address == addr)
            .map(|p| (p.state, p.messages.established_transitions))
    };
    let before = transitions(&a.peers().await.expect("peers"), ip(b, 3));

    // A change that needs a reset (hold time), then removal and re-adding,
    // all on the session with .2.
    let mut changed = peer(b, 1, 2, 65000);
    changed.hold_time = 12;
    a.update_peer(changed).await.expect("update");
    wait_for(
        "the reset session back",
        Duration::from_secs(30),
        async || {
            let peers = a.peers().await.ok()?;
            let p = peers.iter().find(|p| p.address == ip(b, 2))?;
            (p.state == State::Established && p.messages.established_transitions == 2).then_some(())
        },
    )
    .await;
    a.remove_peer(ip(b, 2)).await.expect("remove");
    a.add_peer(peer(b, 1, 2, 65000)).await.expect("re-add");
    established(&a, ip(b, 2)).await;

    let after = transitions(&a.peers().await.expect("peers"), ip(b, 3));
    assert_eq!(before, after, "the session with .3 was touched");
    assert_eq!(after.map(|x| x.0), Some(State::Established));
    for s in [a, p2, p3] {
        s.shutdown(ShutdownMode::Notify).await.expect("shutdown");
    }
}
