//! Interop with FRR 8: iBGP mesh (IPv4 and IPv6), route refresh, route
//! reflection in both roles (FRR reflects a client's own routes back:
//! margay must drop them), graceful restart, and eBGP to an FRR "top of
//! rack" with TCP MD5 and GTSM.

mod interop;

use std::fmt::Write as _;

use interop::*;
use margay_bgp::config::AddressFamily;
use margay_bgp::daemon::Request;
use margay_bgp::{PrefixFilter, RouteQuery};

const AS: u32 = 65000;

/// An frr.conf for `node` in `asn` with short timers.
fn frr_conf(node: &Node, asn: u32, body: &str) -> String {
    format!(
        "frr defaults traditional\nhostname frr{i}\n!\nrouter bgp {asn}\n bgp router-id {id}\n \
         no bgp ebgp-requires-policy\n no bgp network import-check\n bgp graceful-restart\n \
         bgp graceful-restart restart-time 30\n timers bgp 1 3\n{body}!\n",
        i = node.index,
        id = node.v4
    )
}

fn neighbor(addr: impl std::fmt::Display, asn: u32) -> String {
    format!(" neighbor {addr} remote-as {asn}\n neighbor {addr} timers connect 1\n")
}

/// (prefix, next hop, path json) of FRR's best paths.
fn frr_best(frr: &Frr, family: &str, prefix: &str) -> Result<serde_json::Value, String> {
    let v = frr.json(&format!("show bgp {family} unicast {prefix} json"));
    let paths = v["paths"].as_array().cloned().unwrap_or_default();
    paths
        .into_iter()
        .find(|p| p["bestpath"]["overall"] == true || p["bestpath"] == true)
        .ok_or_else(|| format!("FRR has no best path for {prefix}: {v}"))
}

fn frr_next_hop(path: &serde_json::Value) -> String {
    path["nexthops"][0]["ip"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn frr_ibgp_mesh_ipv4_ipv6_withdrawals_and_route_refresh() {
    let lab = Lab::new("fm", 2);
    let (m, f) = (&lab.nodes[0], &lab.nodes[1]);
    let mut body = neighbor(m.v4, AS) + &neighbor(m.v6, AS);
    body += " address-family ipv4 unicast\n  network 10.30.0.0/24\n  neighbor 10.0.0.1 activate\n  no neighbor fd00::1 activate\n exit-address-family\n";
    body += " address-family ipv6 unicast\n  network fd00:30::/64\n  neighbor fd00::1 activate\n exit-address-family\n";
    let frr = Frr::start(f, &frr_conf(f, AS, &body));

    let mut cfg = margay_config(m, AS);
    let mut p4 = fast_peer(f.v4, AS);
    p4.families = vec![AddressFamily::Ipv4Unicast];
    let mut p6 = fast_peer(f.v6, AS);
    p6.families = vec![AddressFamily::Ipv6Unicast];
    cfg.peers = vec![p4, p6];
    cfg.announce = vec![announcement("10.1.0.0/24"), announcement("fd00:1::/64")];
    let margay = Margay::start(m, &cfg);
    let diag = || format!("{}\n{}", margay.diag(), frr.diag());
    margay.wait_established(f.v4, || frr.diag());
    margay.wait_established(f.v6, || frr.diag());

    wait(
        "FRR's routes in margay",
        SLOW,
        || {
            let a = margay.best("10.30.0.0/24")?;
            let b = margay.best("fd00:30::/64")?;
            if a.next_hop == Some(f.v4.into()) && b.next_hop == Some(f.v6.into()) {
                Ok(())
            } else {
                Err(format!("{a:?}\n{b:?}"))
            }
        },
        diag,
    );
    wait(
        "margay's routes in FRR",
        SLOW,
        || {
            let a = frr_best(&frr, "ipv4", "10.1.0.0/24")?;
            let b = frr_best(&frr, "ipv6", "fd00:1::/64")?;
            if frr_next_hop(&a) == m.v4.to_string() && frr_next_hop(&b) == m.v6.to_string() {
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
        "FRR follows margay's changes",
        SLOW,
        || {
            frr_best(&frr, "ipv4", "10.2.0.0/24")?;
            match frr_best(&frr, "ipv4", "10.1.0.0/24") {
                Ok(p) => Err(format!("withdrawn route still there: {p}")),
                Err(_) => Ok(()),
            }
        },
        diag,
    );
    frr.configure(&[
        "router bgp 65000",
        "address-family ipv4 unicast",
        "no network 10.30.0.0/24",
    ]);
    wait(
        "margay forgets FRR's withdrawn route",
        SLOW,
        || match margay.best("10.30.0.0/24") {
            Ok(r) => Err(format!("still there: {r:?}")),
            Err(_) => Ok(()),
        },
        diag,
    );

    frr.configure(&[
        "router bgp 65000",
        "address-family ipv4 unicast",
        "network 10.30.0.0/24",
    ]);
    wait(
        "FRR's route is back",
        SLOW,
        || margay.best("10.30.0.0/24").map(|_| ()),
        diag,
    );

    let before = margay.peer(f.v4).expect("peer").messages;
    margay
        .request(&Request::Refresh {
            peer: f.v4.into(),
            family: AddressFamily::Ipv4Unicast,
        })
        .expect("refresh");
    wait(
        "FRR answers our ROUTE-REFRESH",
        SLOW,
        || {
            let now = margay.peer(f.v4)?.messages;
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
    let before = margay.peer(f.v4).expect("peer").messages;
    frr.vtysh("clear bgp ipv4 unicast 10.0.0.1 soft in");
    wait(
        "margay answers FRR's ROUTE-REFRESH",
        SLOW,
        || {
            let now = margay.peer(f.v4)?.messages;
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
        "FRR keeps margay's route after the refresh",
        SLOW,
        || frr_best(&frr, "ipv4", "10.2.0.0/24").map(|_| ()),
        diag,
    );
}

#[test]
fn frr_route_reflector_with_margay_as_client_drops_its_own_reflected_routes() {
    let lab = Lab::new("fc", 3);
    let (m, rr, c2) = (&lab.nodes[0], &lab.nodes[1], &lab.nodes[2]);
    let mut body = String::from(" bgp cluster-id 10.255.0.1\n");
    body += &neighbor(m.v4, AS);
    body += &neighbor(c2.v4, AS);
    let _ = write!(
        body,
        " address-family ipv4 unicast\n  neighbor {} route-reflector-client\n  neighbor {} route-reflector-client\n exit-address-family\n",
        m.v4, c2.v4
    );
    let frr_rr = Frr::start(rr, &frr_conf(rr, AS, &body));
    let body2 = neighbor(rr.v4, AS)
        + " address-family ipv4 unicast\n  network 10.31.0.0/24\n exit-address-family\n";
    let frr_c2 = Frr::start(c2, &frr_conf(c2, AS, &body2));

    let mut cfg = margay_config(m, AS);
    cfg.peers = vec![fast_peer(rr.v4, AS)];
    cfg.announce = vec![announcement("10.1.0.0/24")];
    let margay = Margay::start(m, &cfg);
    let diag = || format!("{}\n{}\n{}", margay.diag(), frr_rr.diag(), frr_c2.diag());
    margay.wait_established(rr.v4, || frr_rr.diag());

    wait(
        "client2's route reflected to margay",
        SLOW,
        || {
            let r = margay.best("10.31.0.0/24")?;
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
            let p = frr_best(&frr_c2, "ipv4", "10.1.0.0/24")?;
            if frr_next_hop(&p) == m.v4.to_string() && p["originatorId"] == m.v4.to_string() {
                Ok(())
            } else {
                Err(p.to_string())
            }
        },
        diag,
    );
    // FRR reflects margay's own route back to it: it arrives, carries our
    // router id as ORIGINATOR_ID, and is rejected (RFC 4456 §8).
    wait(
        "margay's own route came back and was rejected",
        SLOW,
        || {
            let adj = margay.routes(RouteQuery::AdjIn(rr.v4.into()))?;
            let own = adj.iter().find(|r| r.prefix.to_string() == "10.1.0.0/24");
            match own {
                Some(r)
                    if r.rejected == Some(margay_bgp::rib::Rejection::OriginatorLoop)
                        && !r.best =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        },
        diag,
    );
    let best = margay.best("10.1.0.0/24").expect("own route");
    assert_eq!(best.peer, None, "our own route stays best: {best:?}");
}

#[test]
fn margay_route_reflector_for_two_frr_clients() {
    let lab = Lab::new("fr", 3);
    let (m, c1, c2) = (&lab.nodes[0], &lab.nodes[1], &lab.nodes[2]);
    let mut frrs = Vec::new();
    for (n, prefix) in [(c1, "10.31.0.0/24"), (c2, "10.32.0.0/24")] {
        let body = neighbor(m.v4, AS)
            + &format!(" address-family ipv4 unicast\n  network {prefix}\n exit-address-family\n");
        frrs.push(Frr::start(n, &frr_conf(n, AS, &body)));
    }
    let mut cfg = margay_config(m, AS);
    cfg.cluster_id = Some("10.255.0.9".parse().expect("ip"));
    for n in [c1, c2] {
        let mut p = fast_peer(n.v4, AS);
        p.route_reflector_client = true;
        cfg.peers.push(p);
    }
    let margay = Margay::start(m, &cfg);
    let diag = || format!("{}\n{}\n{}", margay.diag(), frrs[0].diag(), frrs[1].diag());
    margay.wait_established(c1.v4, diag);
    margay.wait_established(c2.v4, diag);
    for (from, to, prefix) in [
        (c1, &frrs[1], "10.31.0.0/24"),
        (c2, &frrs[0], "10.32.0.0/24"),
    ] {
        wait(
            &format!("{prefix} reflected"),
            SLOW,
            || {
                let p = frr_best(to, "ipv4", prefix)?;
                let cl = p["clusterList"]["list"].clone();
                if frr_next_hop(&p) == from.v4.to_string()
                    && p["originatorId"] == from.v4.to_string()
                    && cl == serde_json::json!(["10.255.0.9"])
                {
                    Ok(())
                } else {
                    Err(p.to_string())
                }
            },
            diag,
        );
    }
    // Nothing reflected back to the originator: FRR sees only its own path.
    for (f, own) in [(&frrs[0], "10.31.0.0/24"), (&frrs[1], "10.32.0.0/24")] {
        let v = f.json(&format!("show bgp ipv4 unicast {own} json"));
        let n = v["paths"].as_array().map_or(0, Vec::len);
        assert_eq!(n, 1, "{own} came back: {v}\n{}", diag());
    }
}

#[test]
fn frr_graceful_restart_both_roles() {
    let lab = Lab::new("fg", 2);
    let (m, f) = (&lab.nodes[0], &lab.nodes[1]);
    let body = String::from(" bgp graceful-restart preserve-fw-state\n")
        + &neighbor(m.v4, AS)
        + " address-family ipv4 unicast\n  network 10.30.0.0/24\n exit-address-family\n";
    let conf = frr_conf(f, AS, &body);
    let frr = Frr::start(f, &conf);
    let mut cfg = margay_config(m, AS);
    cfg.graceful_restart.restart_time = 60;
    cfg.peers = vec![fast_peer(f.v4, AS)];
    cfg.announce = vec![announcement("10.1.0.0/24")];
    let mut margay = Margay::start(m, &cfg);
    margay.wait_established(f.v4, || frr.diag());
    wait(
        "FRR learns margay's route",
        SLOW,
        || frr_best(&frr, "ipv4", "10.1.0.0/24").map(|_| ()),
        || frr.diag(),
    );

    margay.kill();
    wait_peer_stale(
        "FRR keeps margay's route as stale",
        true,
        || frr_best(&frr, "ipv4", "10.1.0.0/24"),
        || frr.diag(),
    );
    margay.restart(&["--restarting"]);
    margay.wait_established(f.v4, || frr.diag());
    wait_peer_stale(
        "End-of-RIB clears the stale flag",
        false,
        || frr_best(&frr, "ipv4", "10.1.0.0/24"),
        || format!("{}\n{}", margay.diag(), frr.diag()),
    );

    // FRR's bgpd dies and comes back (zebra keeps forwarding, FRR says
    // so with the F bit): margay keeps its route until FRR's End-of-RIB.
    wait(
        "margay learned FRR's route",
        SLOW,
        || margay.best("10.30.0.0/24").map(|_| ()),
        || margay.diag(),
    );
    frr.kill_bgpd();
    margay.wait_stale(
        "margay holds FRR's route as stale",
        "10.30.0.0/24",
        true,
        || margay.diag(),
    );
    frr.restart_bgpd(&[]);
    margay.wait_stale("FRR's route fresh again", "10.30.0.0/24", false, || {
        format!("{}\n{}", margay.diag(), frr.diag())
    });
}

#[test]
fn frr_top_of_rack_ebgp_with_md5_and_gtsm() {
    let lab = Lab::new("ft", 2);
    let (m, tor) = (&lab.nodes[0], &lab.nodes[1]);
    let body = format!(
        " neighbor {m} remote-as 65000\n neighbor {m} timers connect 1\n neighbor {m} password s3cret\n \
         neighbor {m} ttl-security hops 1\n address-family ipv4 unicast\n  network 10.100.0.0/24\n exit-address-family\n",
        m = m.v4
    );
    let frr = Frr::start(tor, &frr_conf(tor, 65100, &body));
    let mut cfg = margay_config(m, AS);
    let mut p = fast_peer(tor.v4, 65100);
    p.md5_password = Some("s3cret".into());
    p.ttl_security = true;
    p.import = Some(PrefixFilter::accept_all());
    p.export = Some(PrefixFilter::accept_within(["10.1.0.0/16"
        .parse()
        .expect("prefix")]));
    cfg.peers = vec![p.clone()];
    cfg.announce = vec![announcement("10.1.0.0/24"), announcement("10.99.0.0/24")];
    let margay = Margay::start(m, &cfg);
    let diag = || format!("{}\n{}", margay.diag(), frr.diag());
    // FRR drops unsigned segments and segments with TTL below 254, so an
    // Established session means margay signs and sends with TTL 255.
    margay.wait_established(tor.v4, || frr.diag());
    wait(
        "the ToR's route in margay over eBGP",
        SLOW,
        || {
            let r = margay.best("10.100.0.0/24")?;
            if r.as_path == "65100" && r.next_hop == Some(tor.v4.into()) {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        },
        diag,
    );
    wait(
        "margay's allowed route at the ToR",
        SLOW,
        || {
            let p = frr_best(&frr, "ipv4", "10.1.0.0/24")?;
            if p["aspath"]["string"] == "65000" && frr_next_hop(&p) == m.v4.to_string() {
                Ok(())
            } else {
                Err(p.to_string())
            }
        },
        diag,
    );
    assert!(
        frr_best(&frr, "ipv4", "10.99.0.0/24").is_err(),
        "the export filter let 10.99.0.0/24 through\n{}",
        diag()
    );

    // A wrong password (changed at run time) keeps the session down: the
    // ToR's kernel drops our segments.
    p.md5_password = Some("wrong".into());
    let mut cfg2 = cfg.clone();
    cfg2.peers = vec![p.clone()];
    std::fs::write(
        &margay.config,
        serde_saphyr::to_string(&cfg2).expect("yaml"),
    )
    .expect("write config");
    margay.reload();
    wait(
        "session down with the wrong password",
        SLOW,
        || {
            let s = margay.peer(tor.v4)?;
            if s.state != margay_bgp::fsm::State::Established {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        },
        diag,
    );
    wait(
        "the ToR's kernel counts bad MD5 signatures",
        SLOW,
        || {
            let out = run(std::process::Command::new("ip").args([
                "netns",
                "exec",
                tor.name(),
                "nstat",
                "-az",
                "TcpExtTCPMD5Failure",
            ]));
            let n: u64 = out
                .lines()
                .find(|l| l.starts_with("TcpExtTCPMD5Failure"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if n > 0 { Ok(()) } else { Err(out) }
        },
        diag,
    );
    std::fs::write(&margay.config, serde_saphyr::to_string(&cfg).expect("yaml"))
        .expect("write config");
    margay.reload();
    margay.wait_established(tor.v4, || frr.diag());
}
