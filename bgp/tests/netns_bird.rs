//! Interop with BIRD 2: iBGP mesh (IPv4 and IPv6), route refresh, route
//! reflection in both roles, graceful restart.

mod interop;

use interop::*;
use margay_bgp::config::AddressFamily;
use margay_bgp::daemon::Request;

const AS: u32 = 65000;

fn bird_peer(name: &str, local: &str, neighbor: &str, channel: &str, extra: &str) -> String {
    format!(
        "protocol bgp {name} {{\n  local {local} as {AS};\n  neighbor {neighbor} as {AS};\n  \
         hold time 9; keepalive time 3; connect retry time 1; connect delay time 1;\n  \
         direct; graceful restart on; graceful restart time 30;\n  {extra}\n  \
         {channel} {{ import all; export where source = RTS_STATIC || source = RTS_BGP; }};\n}}\n"
    )
}

#[test]
fn bird_ibgp_mesh_ipv4_ipv6_withdrawals_and_route_refresh() {
    let lab = Lab::new("bm", 2);
    let (m, b) = (&lab.nodes[0], &lab.nodes[1]);
    let mut conf = bird_base(b, &["10.20.0.0/24"], &["fd00:20::/64"]);
    conf += &bird_peer("margay4", &b.v4.to_string(), &m.v4.to_string(), "ipv4", "");
    conf += &bird_peer("margay6", &b.v6.to_string(), &m.v6.to_string(), "ipv6", "");
    let bird = Bird::start(b, &conf);

    let mut cfg = margay_config(m, AS);
    let mut p4 = fast_peer(b.v4, AS);
    p4.families = vec![AddressFamily::Ipv4Unicast];
    let mut p6 = fast_peer(b.v6, AS);
    p6.families = vec![AddressFamily::Ipv6Unicast];
    cfg.peers = vec![p4, p6];
    cfg.announce = vec![announcement("10.1.0.0/24"), announcement("fd00:1::/64")];
    let margay = Margay::start(m, &cfg);
    let diag = || format!("{}\n{}", margay.diag(), bird.diag());

    margay.wait_established(b.v4, || bird.diag());
    margay.wait_established(b.v6, || bird.diag());

    // BIRD's routes reach margay, with BIRD as next hop.
    wait(
        "BIRD's IPv4 route in margay",
        SLOW,
        || {
            let r = margay.best("10.20.0.0/24")?;
            if r.next_hop == Some(b.v4.into()) {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        },
        diag,
    );
    wait(
        "BIRD's IPv6 route in margay",
        SLOW,
        || {
            let r = margay.best("fd00:20::/64")?;
            if r.next_hop == Some(b.v6.into()) {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        },
        diag,
    );
    // Margay's routes reach BIRD (and its kernel), with margay as next hop.
    let has = |prefix: &str, v6: bool, gw: String| {
        let routes = bird.kernel_routes(v6);
        if routes.iter().any(|(p, g)| p == prefix && *g == gw) {
            Ok(())
        } else {
            Err(format!("BIRD's kernel routes: {routes:?}"))
        }
    };
    wait(
        "margay's IPv4 route in BIRD",
        SLOW,
        || has("10.1.0.0/24", false, m.v4.to_string()),
        diag,
    );
    wait(
        "margay's IPv6 route in BIRD",
        SLOW,
        || has("fd00:1::/64", true, m.v6.to_string()),
        diag,
    );

    // Changes at run time, both ways.
    margay.announce("10.2.0.0/24");
    margay.withdraw("10.1.0.0/24");
    wait(
        "BIRD learns 10.2.0.0/24 and forgets 10.1.0.0/24",
        SLOW,
        || {
            let routes = bird.kernel_routes(false);
            let p: Vec<&str> = routes.iter().map(|(p, _)| p.as_str()).collect();
            if p.contains(&"10.2.0.0/24") && !p.contains(&"10.1.0.0/24") {
                Ok(())
            } else {
                Err(format!("{p:?}"))
            }
        },
        diag,
    );
    bird.birdc("disable announce4");
    wait(
        "margay forgets BIRD's withdrawn route",
        SLOW,
        || match margay.best("10.20.0.0/24") {
            Ok(r) => Err(format!("still there: {r:?}")),
            Err(_) => Ok(()),
        },
        diag,
    );
    bird.birdc("enable announce4");
    wait(
        "BIRD's route is back",
        SLOW,
        || margay.best("10.20.0.0/24").map(|_| ()),
        diag,
    );

    // Route refresh, margay asking: BIRD answers with its routes again.
    let before = margay.peer(b.v4).expect("peer").messages;
    margay
        .request(&Request::Refresh {
            peer: b.v4.into(),
            family: AddressFamily::Ipv4Unicast,
        })
        .expect("refresh");
    wait(
        "BIRD re-sends after our ROUTE-REFRESH",
        SLOW,
        || {
            let now = margay.peer(b.v4)?.messages;
            if now.route_refresh_out > before.route_refresh_out
                && now.updates_in > before.updates_in
            {
                Ok(())
            } else {
                Err(format!("before {before:?}\nnow {now:?}"))
            }
        },
        diag,
    );
    // BIRD asking (`reload out` on BIRD's side is an import reload: it
    // sends us ROUTE-REFRESH); margay re-sends inside BoRR/EoRR and BIRD
    // keeps the route.
    let before = margay.peer(b.v4).expect("peer").messages;
    bird.birdc("reload in margay4");
    wait(
        "margay answers BIRD's ROUTE-REFRESH",
        SLOW,
        || {
            let now = margay.peer(b.v4)?.messages;
            if now.route_refresh_in > before.route_refresh_in
                && now.updates_out > before.updates_out
            {
                Ok(())
            } else {
                Err(format!("before {before:?}\nnow {now:?}"))
            }
        },
        diag,
    );
    wait(
        "BIRD still has margay's route after the refresh",
        SLOW,
        || has("10.2.0.0/24", false, m.v4.to_string()),
        diag,
    );
    assert!(margay.best("10.20.0.0/24").is_ok(), "{}", diag());
}

#[test]
fn bird_route_reflector_with_margay_as_client() {
    let lab = Lab::new("bc", 3);
    let (m, rr, c2) = (&lab.nodes[0], &lab.nodes[1], &lab.nodes[2]);
    let mut conf = bird_base(rr, &[], &[]);
    conf += "define CLUSTER = 10.255.0.1;\n";
    for (name, n) in [("margay", m), ("client2", c2)] {
        conf += &bird_peer(
            name,
            &rr.v4.to_string(),
            &n.v4.to_string(),
            "ipv4",
            "rr client; rr cluster id 10.255.0.1;",
        );
    }
    let bird_rr = Bird::start(rr, &conf);
    let mut conf2 = bird_base(c2, &["10.21.0.0/24"], &[]);
    conf2 += &bird_peer(
        "reflector",
        &c2.v4.to_string(),
        &rr.v4.to_string(),
        "ipv4",
        "",
    );
    let bird_c2 = Bird::start(c2, &conf2);

    let mut cfg = margay_config(m, AS);
    cfg.peers = vec![fast_peer(rr.v4, AS)];
    cfg.announce = vec![announcement("10.1.0.0/24")];
    let margay = Margay::start(m, &cfg);
    let diag = || format!("{}\n{}\n{}", margay.diag(), bird_rr.diag(), bird_c2.diag());
    margay.wait_established(rr.v4, || bird_rr.diag());

    // The other client's route, reflected: its next hop, ORIGINATOR_ID
    // and the reflector's cluster id.
    wait(
        "client2's route reflected to margay",
        SLOW,
        || {
            let r = margay.best("10.21.0.0/24")?;
            let ok = r.next_hop == Some(c2.v4.into())
                && r.originator_id == Some(c2.v4)
                && r.cluster_list == vec!["10.255.0.1".parse::<std::net::Ipv4Addr>().expect("ip")];
            if ok { Ok(()) } else { Err(format!("{r:?}")) }
        },
        diag,
    );
    // Margay's route reaches the other client through the reflector.
    wait(
        "margay's route at client2",
        SLOW,
        || {
            let r = bird_c2.kernel_routes(false);
            if r.iter()
                .any(|(p, g)| p == "10.1.0.0/24" && *g == m.v4.to_string())
            {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        },
        diag,
    );
    let all = bird_c2.route_all("10.1.0.0/24");
    assert!(
        all.contains(&format!("BGP.originator_id: {}", m.v4)),
        "{all}\n{}",
        diag()
    );
}

#[test]
fn margay_route_reflector_for_two_bird_clients() {
    let lab = Lab::new("br", 3);
    let (m, c1, c2) = (&lab.nodes[0], &lab.nodes[1], &lab.nodes[2]);
    let mut birds = Vec::new();
    for (n, prefix) in [(c1, "10.21.0.0/24"), (c2, "10.22.0.0/24")] {
        let mut conf = bird_base(n, &[prefix], &[]);
        conf += &bird_peer(
            "reflector",
            &n.v4.to_string(),
            &m.v4.to_string(),
            "ipv4",
            "",
        );
        birds.push(Bird::start(n, &conf));
    }
    let mut cfg = margay_config(m, AS);
    cfg.cluster_id = Some("10.255.0.9".parse().expect("ip"));
    for n in [c1, c2] {
        let mut p = fast_peer(n.v4, AS);
        p.route_reflector_client = true;
        cfg.peers.push(p);
    }
    let margay = Margay::start(m, &cfg);
    let diag = || {
        format!(
            "{}\n{}\n{}",
            margay.diag(),
            birds[0].diag(),
            birds[1].diag()
        )
    };
    margay.wait_established(c1.v4, diag);
    margay.wait_established(c2.v4, diag);

    for (from, to, prefix) in [
        (c1, &birds[1], "10.21.0.0/24"),
        (c2, &birds[0], "10.22.0.0/24"),
    ] {
        wait(
            &format!("{prefix} reflected"),
            SLOW,
            || {
                let r = to.kernel_routes(false);
                if r.iter()
                    .any(|(p, g)| p == prefix && *g == from.v4.to_string())
                {
                    Ok(())
                } else {
                    Err(format!("{r:?}"))
                }
            },
            diag,
        );
        let all = to.route_all(prefix);
        assert!(
            all.contains(&format!("BGP.originator_id: {}", from.v4)),
            "{all}\n{}",
            diag()
        );
        assert!(
            all.contains("BGP.cluster_list: 10.255.0.9"),
            "{all}\n{}",
            diag()
        );
    }
    // A client's own route is never reflected back to it.
    for (b, own) in [(&birds[0], "10.21.0.0/24"), (&birds[1], "10.22.0.0/24")] {
        let r = b.kernel_routes(false);
        assert!(
            !r.iter().any(|(p, _)| p == own),
            "{own} came back: {r:?}\n{}",
            diag()
        );
    }
    let adv = margay.peer(c1.v4).expect("peer").prefixes.advertised[0];
    assert_eq!(adv, 1, "{}", diag());
}

#[test]
fn bird_graceful_restart_both_roles() {
    let lab = Lab::new("bg", 2);
    let (m, b) = (&lab.nodes[0], &lab.nodes[1]);
    let mut conf = bird_base(b, &["10.20.0.0/24"], &[]);
    conf += &bird_peer("margay", &b.v4.to_string(), &m.v4.to_string(), "ipv4", "");
    let mut bird = Bird::start(b, &conf);
    let mut cfg = margay_config(m, AS);
    cfg.graceful_restart.restart_time = 60;
    cfg.peers = vec![fast_peer(b.v4, AS)];
    cfg.announce = vec![announcement("10.1.0.0/24")];
    let mut margay = Margay::start(m, &cfg);
    margay.wait_established(b.v4, || bird.diag());
    let bird_has = |bird: &Bird| {
        let r = bird.kernel_routes(false);
        if r.iter().any(|(p, _)| p == "10.1.0.0/24") {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    };
    wait(
        "BIRD learns margay's route",
        SLOW,
        || bird_has(&bird),
        || bird.diag(),
    );

    // Margay restarts: BIRD keeps the route (stale) while margay is gone.
    margay.kill();
    wait(
        "BIRD notices margay is gone",
        SLOW,
        || match bird.protocol_up("margay") {
            Ok(()) => Err("still Established".into()),
            Err(_) => Ok(()),
        },
        || bird.diag(),
    );
    // BIRD shows no per-route stale flag; it reports the restart on the
    // protocol and keeps the route in its table (and the kernel).
    let proto = bird.birdc("show protocols all margay");
    assert!(
        proto.contains("graceful restart active"),
        "BIRD is not helping margay's restart:\n{proto}"
    );
    bird_has(&bird)
        .unwrap_or_else(|e| panic!("BIRD dropped margay's route at once: {e}\n{}", bird.diag()));
    margay.restart(&["--restarting"]);
    margay.wait_established(b.v4, || bird.diag());
    wait(
        "End-of-RIB ends BIRD's graceful restart",
        SLOW,
        || {
            let proto = bird.birdc("show protocols all margay");
            if proto.contains("graceful restart active") {
                Err(proto)
            } else {
                bird_has(&bird)
            }
        },
        || format!("{}\n{}", margay.diag(), bird.diag()),
    );

    // BIRD restarts: margay (helper) keeps BIRD's route stale, then the
    // new session's End-of-RIB refreshes it.
    wait(
        "margay learned BIRD's route",
        SLOW,
        || margay.best("10.20.0.0/24").map(|_| ()),
        || margay.diag(),
    );
    bird.kill();
    margay.wait_stale(
        "margay holds BIRD's route as stale",
        "10.20.0.0/24",
        true,
        || margay.diag(),
    );
    bird.spawn(&["-R"]);
    margay.wait_stale("BIRD's route fresh again", "10.20.0.0/24", false, || {
        format!("{}\n{}", margay.diag(), bird.diag())
    });
    wait(
        "BIRD relearns margay's route",
        SLOW,
        || bird_has(&bird),
        || bird.diag(),
    );
}
