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
