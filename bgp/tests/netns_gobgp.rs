//! Interop with GoBGP 3: iBGP mesh (IPv4 and IPv6), route refresh, route
//! reflection in both roles, graceful restart.

mod interop;

use std::fmt::Write as _;

use interop::*;
use margay_bgp::RouteQuery;
use margay_bgp::config::AddressFamily;
use margay_bgp::daemon::Request;
use serde_json::Value;

const AS: u32 = 65000;

fn global(node: &Node) -> String {
    format!(
        "[global.config]\n  as = {AS}\n  router-id = \"{}\"\n  local-address-list = [\"{}\", \"{}\"]\n",
        node.v4, node.v4, node.v6
    )
}

/// A neighbor block; `rr` makes it our route-reflector client.
fn gobgp_neighbor(addr: impl std::fmt::Display, family: &str, rr: Option<&str>) -> String {
    let mut s = format!(
        "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{addr}\"\n    peer-as = {AS}\n  \
         [neighbors.timers.config]\n    connect-retry = 1\n    hold-time = 9\n    keepalive-interval = 3\n  \
         [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = 30\n  \
         [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{family}\"\n    \
         [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n"
    );
    if let Some(cluster) = rr {
        let _ = write!(
            s,
            "  [neighbors.route-reflector.config]\n    route-reflector-client = true\n    route-reflector-cluster-id = \"{cluster}\"\n"
        );
    }
    s
}

fn attr(path: &Value, type_code: u64) -> Option<&Value> {
    path["attrs"]
        .as_array()?
        .iter()
        .find(|a| a["type"].as_u64() == Some(type_code))
}

/// GoBGP's best path for `prefix` learned from a peer.
fn gobgp_best(g: &GoBgp, family: &str, prefix: &str) -> Result<Value, String> {
    let paths = g.paths(family, prefix);
    paths
        .iter()
        .find(|p| p["best"] == true)
        .cloned()
        .ok_or_else(|| format!("GoBGP has no best path for {prefix}: {paths:?}"))
}

fn next_hop(path: &Value) -> String {
    if let Some(nh) = attr(path, 3).and_then(|a| a["nexthop"].as_str()) {
        return nh.to_string();
    }
    attr(path, 14)
        .and_then(|a| a["nexthop"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn add_route(g: &GoBgp, family: &str, prefix: &str) {
    let out = g.gobgp(&["global", "rib", "add", prefix, "-a", family]);
    assert!(!out.contains("exited"), "gobgp global rib add: {out}");
}

#[test]
fn gobgp_ibgp_mesh_ipv4_ipv6_withdrawals_and_route_refresh() {
    let lab = Lab::new("gm", 2);
    let (m, g) = (&lab.nodes[0], &lab.nodes[1]);
    let toml = global(g)
        + &gobgp_neighbor(m.v4, "ipv4-unicast", None)
        + &gobgp_neighbor(m.v6, "ipv6-unicast", None);
    let gobgp = GoBgp::start(g, &toml);
    add_route(&gobgp, "ipv4", "10.40.0.0/24");
    add_route(&gobgp, "ipv6", "fd00:40::/64");

    let mut cfg = margay_config(m, AS);
    let mut p4 = fast_peer(g.v4, AS);
    p4.families = vec![AddressFamily::Ipv4Unicast];
    let mut p6 = fast_peer(g.v6, AS);
    p6.families = vec![AddressFamily::Ipv6Unicast];
    cfg.peers = vec![p4, p6];
    cfg.announce = vec![announcement("10.1.0.0/24"), announcement("fd00:1::/64")];
    let margay = Margay::start(m, &cfg);
    let diag = || format!("{}\n{}", margay.diag(), gobgp.diag());
    margay.wait_established(g.v4, || gobgp.diag());
    margay.wait_established(g.v6, || gobgp.diag());

    wait(
        "GoBGP's routes in margay",
        SLOW,
        || {
            let a = margay.best("10.40.0.0/24")?;
            let b = margay.best("fd00:40::/64")?;
            if a.next_hop == Some(g.v4.into()) && b.next_hop == Some(g.v6.into()) {
                Ok(())
            } else {
                Err(format!("{a:?}\n{b:?}"))
            }
        },
        diag,
    );
    wait(
        "margay's routes in GoBGP",
        SLOW,
        || {
            let a = gobgp_best(&gobgp, "ipv4", "10.1.0.0/24")?;
            let b = gobgp_best(&gobgp, "ipv6", "fd00:1::/64")?;
            if next_hop(&a) == m.v4.to_string() && next_hop(&b) == m.v6.to_string() {
                Ok(())
            } else {
                Err(format!("{a}\n{b}"))
            }
        },
        diag,
    );

    margay.announce("10.2.0.0/24");
    margay.withdraw("10.1.0.0/24");
    wait(
        "GoBGP follows margay's changes",
        SLOW,
        || {
            gobgp_best(&gobgp, "ipv4", "10.2.0.0/24")?;
            match gobgp_best(&gobgp, "ipv4", "10.1.0.0/24") {
                Ok(p) => Err(format!("withdrawn route still there: {p}")),
                Err(_) => Ok(()),
            }
        },
        diag,
    );
    gobgp.gobgp(&["global", "rib", "del", "10.40.0.0/24", "-a", "ipv4"]);
    wait(
        "margay forgets GoBGP's withdrawn route",
        SLOW,
        || match margay.best("10.40.0.0/24") {
            Ok(r) => Err(format!("still there: {r:?}")),
            Err(_) => Ok(()),
        },
        diag,
    );
    add_route(&gobgp, "ipv4", "10.40.0.0/24");
    wait(
        "GoBGP's route is back",
        SLOW,
        || margay.best("10.40.0.0/24").map(|_| ()),
        diag,
    );

    let before = margay.peer(g.v4).expect("peer").messages;
    margay
        .request(&Request::Refresh {
            peer: g.v4.into(),
            family: AddressFamily::Ipv4Unicast,
        })
        .expect("refresh");
    wait(
        "GoBGP answers our ROUTE-REFRESH",
        SLOW,
        || {
            let now = margay.peer(g.v4)?.messages;
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
    // (GoBGP's `softresetin` re-applies policy to its own Adj-RIB-In
    // without sending ROUTE-REFRESH, so the other direction is covered
    // by the BIRD and FRR tests.)
    wait(
        "GoBGP keeps margay's route after the refresh",
        SLOW,
        || gobgp_best(&gobgp, "ipv4", "10.2.0.0/24").map(|_| ()),
        diag,
    );
}

#[test]
fn gobgp_route_reflector_with_margay_as_client() {
    let lab = Lab::new("gc", 3);
    let (m, rr, c2) = (&lab.nodes[0], &lab.nodes[1], &lab.nodes[2]);
    let toml = global(rr)
        + &gobgp_neighbor(m.v4, "ipv4-unicast", Some("10.255.0.1"))
        + &gobgp_neighbor(c2.v4, "ipv4-unicast", Some("10.255.0.1"));
    let g_rr = GoBgp::start(rr, &toml);
    let g_c2 = GoBgp::start(
        c2,
        &(global(c2) + &gobgp_neighbor(rr.v4, "ipv4-unicast", None)),
    );
    add_route(&g_c2, "ipv4", "10.41.0.0/24");

    let mut cfg = margay_config(m, AS);
    cfg.peers = vec![fast_peer(rr.v4, AS)];
    cfg.announce = vec![announcement("10.1.0.0/24")];
    let margay = Margay::start(m, &cfg);
    let diag = || format!("{}\n{}\n{}", margay.diag(), g_rr.diag(), g_c2.diag());
    margay.wait_established(rr.v4, || g_rr.diag());

    wait(
        "client2's route reflected to margay",
        SLOW,
        || {
            let r = margay.best("10.41.0.0/24")?;
            let ok = r.next_hop == Some(c2.v4.into())
                && r.originator_id == Some(c2.v4)
                && r.cluster_list == vec!["10.255.0.1".parse::<std::net::Ipv4Addr>().expect("ip")];
            if ok { Ok(()) } else { Err(format!("{r:?}")) }
        },
        diag,
    );
    wait(
        "margay's route at client2 via the reflector",
        SLOW,
        || {
            let p = gobgp_best(&g_c2, "ipv4", "10.1.0.0/24")?;
            let originator = attr(&p, 9).map(|a| a["value"].clone());
            if next_hop(&p) == m.v4.to_string() && originator == Some(Value::from(m.v4.to_string()))
            {
                Ok(())
            } else {
                Err(p.to_string())
            }
        },
        diag,
    );
    // Whatever the reflector sends back of our own route is rejected.
    let adj = margay
        .routes(RouteQuery::AdjIn(rr.v4.into()))
        .expect("adj-in");
    for r in adj.iter().filter(|r| r.prefix.to_string() == "10.1.0.0/24") {
        assert_eq!(
            r.rejected,
            Some(margay_bgp::rib::Rejection::OriginatorLoop),
            "{r:?}"
        );
    }
}

#[test]
fn margay_route_reflector_for_two_gobgp_clients() {
    let lab = Lab::new("gr", 3);
    let (m, c1, c2) = (&lab.nodes[0], &lab.nodes[1], &lab.nodes[2]);
    let mut gs = Vec::new();
    for (n, prefix) in [(c1, "10.41.0.0/24"), (c2, "10.42.0.0/24")] {
        let g = GoBgp::start(
            n,
            &(global(n) + &gobgp_neighbor(m.v4, "ipv4-unicast", None)),
        );
        add_route(&g, "ipv4", prefix);
        gs.push(g);
    }
    let mut cfg = margay_config(m, AS);
    cfg.cluster_id = Some("10.255.0.9".parse().expect("ip"));
    for n in [c1, c2] {
        let mut p = fast_peer(n.v4, AS);
        p.route_reflector_client = true;
        cfg.peers.push(p);
    }
    let margay = Margay::start(m, &cfg);
    let diag = || format!("{}\n{}\n{}", margay.diag(), gs[0].diag(), gs[1].diag());
    margay.wait_established(c1.v4, diag);
    margay.wait_established(c2.v4, diag);
    for (from, to, prefix) in [(c1, &gs[1], "10.41.0.0/24"), (c2, &gs[0], "10.42.0.0/24")] {
        wait(
            &format!("{prefix} reflected"),
            SLOW,
            || {
                let p = gobgp_best(to, "ipv4", prefix)?;
                let originator = attr(&p, 9).map(|a| a["value"].clone());
                let clusters = attr(&p, 10).map(|a| a["value"].clone());
                if next_hop(&p) == from.v4.to_string()
                    && originator == Some(Value::from(from.v4.to_string()))
                    && clusters == Some(serde_json::json!(["10.255.0.9"]))
                {
                    Ok(())
                } else {
                    Err(p.to_string())
                }
            },
            diag,
        );
    }
    for (g, own) in [(&gs[0], "10.41.0.0/24"), (&gs[1], "10.42.0.0/24")] {
        let n = g.paths("ipv4", own).len();
        assert_eq!(n, 1, "{own} came back to its originator\n{}", diag());
    }
}

#[test]
fn gobgp_graceful_restart_both_roles() {
    let lab = Lab::new("gg", 2);
    let (m, g) = (&lab.nodes[0], &lab.nodes[1]);
    let mut gobgp = GoBgp::start(
        g,
        &(global(g) + &gobgp_neighbor(m.v4, "ipv4-unicast", None)),
    );
    add_route(&gobgp, "ipv4", "10.40.0.0/24");
    let mut cfg = margay_config(m, AS);
    cfg.graceful_restart.restart_time = 60;
    cfg.peers = vec![fast_peer(g.v4, AS)];
    cfg.announce = vec![announcement("10.1.0.0/24")];
    let mut margay = Margay::start(m, &cfg);
    margay.wait_established(g.v4, || gobgp.diag());
    wait(
        "GoBGP learns margay's route",
        SLOW,
        || gobgp_best(&gobgp, "ipv4", "10.1.0.0/24").map(|_| ()),
        || gobgp.diag(),
    );

    margay.kill();
    wait_peer_stale(
        "GoBGP keeps margay's route as stale",
        true,
        || gobgp_best(&gobgp, "ipv4", "10.1.0.0/24"),
        || gobgp.diag(),
    );
    margay.restart(&["--restarting"]);
    margay.wait_established(g.v4, || gobgp.diag());
    wait_peer_stale(
        "End-of-RIB clears the stale flag",
        false,
        || gobgp_best(&gobgp, "ipv4", "10.1.0.0/24"),
        || format!("{}\n{}", margay.diag(), gobgp.diag()),
    );

    wait(
        "margay learned GoBGP's route",
        SLOW,
        || margay.best("10.40.0.0/24").map(|_| ()),
        || margay.diag(),
    );
    gobgp.kill();
    margay.wait_stale(
        "margay holds GoBGP's route as stale",
        "10.40.0.0/24",
        true,
        || margay.diag(),
    );
    gobgp.spawn(&["-r"]);
    add_route(&gobgp, "ipv4", "10.40.0.0/24");
    margay.wait_stale("GoBGP's route fresh again", "10.40.0.0/24", false, || {
        format!("{}\n{}", margay.diag(), gobgp.diag())
    });
}
