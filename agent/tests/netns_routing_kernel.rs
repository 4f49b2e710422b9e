//! The proto-88 route effects against the kernel, in a namespace of their
//! own: ECMP (multipath) and single-path routes, IPv4 and IPv6, blackholes,
//! read back exactly as written (so a restarted agent that adopts them sees
//! nothing to change), replaced in place, deleted; other protocols' routes
//! are neither read nor touched; the host's addresses are listed for node
//! address detection.

use margay_agent::calc::remote_routes::RemotePath;
use margay_agent::routing::kernel::RouteKernel;
use margay_agent::routing::route_plan::Route88;
use margay_api::net::Cidr;
use margay_lab::netns::NetnsGuard;
use std::collections::BTreeMap;

fn direct(gws: &[&str]) -> Route88 {
    Route88::Remote {
        paths: gws
            .iter()
            .map(|g| RemotePath::Direct {
                gateway: g.parse().expect("ip"),
            })
            .collect(),
        mtu: None,
    }
}

fn p(s: &str) -> Cidr {
    s.parse().expect("cidr")
}

#[test]
fn routes_are_written_read_back_replaced_and_deleted() {
    let ns = NetnsGuard::create_unique("mrt-kernel").expect("netns");
    let peer = NetnsGuard::create_unique("mrt-kpeer").expect("netns");
    margay_lab::netns::veth(&ns, "eth0", &peer, "eth0").expect("veth");
    ns.ip(&["addr", "add", "10.0.0.1/24", "dev", "eth0"])
        .expect("addr");
    ns.ip(&["addr", "add", "fd00:10::1/64", "dev", "eth0", "nodad"])
        .expect("addr6");
    // Someone else's route: never ours.
    ns.ip(&[
        "route",
        "add",
        "10.9.0.0/24",
        "via",
        "10.0.0.9",
        "proto",
        "static",
    ])
    .expect("static route");
    let name = ns.name().to_string();
    let result = std::thread::spawn(move || {
        margay_lab::probe::enter_netns(&name).expect("enter");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let k = RouteKernel::connect().expect("netlink");
            let want = BTreeMap::from([
                (p("10.244.1.0/26"), direct(&["10.0.0.2"])),
                (p("10.244.2.0/26"), direct(&["10.0.0.3", "10.0.0.4"])),
                (p("10.244.0.0/26"), Route88::Blackhole),
                (p("fd00:244::40/122"), direct(&["fd00:10::2"])),
                (p("fd00:244::80/122"), direct(&["fd00:10::3", "fd00:10::4"])),
            ]);
            for (prefix, r) in &want {
                k.replace(*prefix, r).await.expect("replace");
            }
            let held = k.routes().await.expect("read");
            assert_eq!(held, want, "read back as written (ECMP included)");
            // Replacing changes the route in place.
            k.replace(p("10.244.2.0/26"), &direct(&["10.0.0.5"]))
                .await
                .expect("replace");
            let held = k.routes().await.expect("read");
            assert_eq!(held[&p("10.244.2.0/26")], direct(&["10.0.0.5"]));
            for (prefix, r) in &held {
                k.delete(*prefix, r).await.expect("delete");
            }
            assert!(k.routes().await.expect("read").is_empty());
            // Deleting what is gone is fine.
            k.delete(p("10.244.1.0/26"), &direct(&["10.0.0.2"]))
                .await
                .expect("idempotent delete");
            let addrs = k.host_addresses().await.expect("addresses");
            assert!(
                addrs.iter().any(|a| a.ifname == "eth0"
                    && a.addr.to_string() == "10.0.0.1"
                    && a.prefix_len == 24),
                "{addrs:?}"
            );
        });
    })
    .join();
    // The other protocol's route is still there.
    let left = ns
        .ip(&["route", "show", "proto", "static"])
        .expect("routes");
    assert!(left.contains("10.9.0.0/24"), "{left}");
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
