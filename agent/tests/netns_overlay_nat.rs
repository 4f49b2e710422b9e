//! NAT outgoing against the kernel in namespaces of the test's own: a
//! "node" routing between a "pod" (10.244.0.5, a natOutgoing pool), a pod
//! of another node ("peer", 10.244.1.5, same pool) and an "ext" host outside
//! every pool (192.168.50.1). The pod reaches ext with the node's address
//! and the peer with its own; a second reconcile adopts the table; pool
//! changes are set-element deltas; a hand-broken chain is rebuilt; no NAT
//! pool left removes the table.

use margay_agent::nat::{self, rules};
use margay_api::net::Cidr;
use margay_api::{EncapMode, ResolvedPool, Selector};
use margay_lab::netns::{Netns, NetnsGuard, veth};
use margay_policy::nft::Nft;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn pool(name: &str, cidr: &str, nat: bool) -> ResolvedPool {
    ResolvedPool {
        name: name.into(),
        cidr: Cidr::parse_strict(cidr).expect("cidr"),
        block_size: 26,
        vxlan_mode: EncapMode::Never,
        ipip_mode: EncapMode::Never,
        nat_outgoing: nat,
        node_selector: Selector::parse("all()").expect("selector"),
        disabled: false,
        disable_bgp_export: false,
    }
}

struct Net {
    node: NetnsGuard,
    pod: NetnsGuard,
    peer: NetnsGuard,
    ext: NetnsGuard,
}

fn net() -> Net {
    let n = Net {
        node: NetnsGuard::create_unique("onat-node").expect("ns"),
        pod: NetnsGuard::create_unique("onat-pod").expect("ns"),
        peer: NetnsGuard::create_unique("onat-peer").expect("ns"),
        ext: NetnsGuard::create_unique("onat-ext").expect("ns"),
    };
    let setup = |ns: &Netns, args: &[&str]| ns.ip(args).expect("ip");
    veth(&n.node, "to-pod", &n.pod, "eth0").expect("veth");
    veth(&n.node, "to-peer", &n.peer, "eth0").expect("veth");
    veth(&n.node, "to-ext", &n.ext, "eth0").expect("veth");
    setup(&n.node, &["addr", "add", "10.0.0.1/24", "dev", "to-pod"]);
    setup(&n.node, &["addr", "add", "10.0.1.1/24", "dev", "to-peer"]);
    setup(
        &n.node,
        &["addr", "add", "192.168.50.254/24", "dev", "to-ext"],
    );
    setup(
        &n.node,
        &["route", "add", "10.244.0.5/32", "via", "10.0.0.2"],
    );
    setup(
        &n.node,
        &["route", "add", "10.244.1.0/26", "via", "10.0.1.2"],
    );
    setup(&n.pod, &["addr", "add", "10.0.0.2/24", "dev", "eth0"]);
    setup(&n.pod, &["addr", "add", "10.244.0.5/32", "dev", "eth0"]);
    setup(
        &n.pod,
        &[
            "route",
            "add",
            "default",
            "via",
            "10.0.0.1",
            "src",
            "10.244.0.5",
        ],
    );
    setup(&n.peer, &["addr", "add", "10.0.1.2/24", "dev", "eth0"]);
    setup(&n.peer, &["addr", "add", "10.244.1.5/32", "dev", "eth0"]);
    setup(
        &n.peer,
        &[
            "route",
            "add",
            "default",
            "via",
            "10.0.1.1",
            "src",
            "10.244.1.5",
        ],
    );
    // ext knows no route back to the pools: only a masqueraded packet gets an answer.
    setup(&n.ext, &["addr", "add", "192.168.50.1/24", "dev", "eth0"]);
    n.node
        .sysctls(&[("net.ipv4.ip_forward", "1")])
        .expect("forwarding");
    n
}

fn nft_in(ns: &Netns) -> Nft {
    Nft::open_in_netns(&std::path::Path::new("/run/netns").join(ns.name())).expect("nft")
}

/// Pings `dst` from the pod until `watch` (tcpdump on its eth0) has seen an
/// echo request; returns the source address it saw.
fn source_seen_by(n: &Net, watch: &Netns, dst: &str) -> String {
    let mut dump = watch
        .command("tcpdump")
        .args([
            "-i",
            "eth0",
            "-n",
            "-c",
            "1",
            "-l",
            "icmp[icmptype] == icmp-echo",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tcpdump");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let _ = n.pod.run("ping", &["-c", "1", "-W", "1", dst]);
        if dump.try_wait().expect("tcpdump").is_some() {
            break;
        }
    }
    let _ = dump.kill();
    let out = dump.wait_with_output().expect("tcpdump output");
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    // "12:00:00.000 IP 192.168.50.254 > 192.168.50.1: ICMP echo request, ..."
    line.split_whitespace()
        .skip_while(|w| *w != "IP")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn masquerades_to_outside_keeps_pod_sources_between_pods_and_adopts() {
    let n = net();
    let nft = nft_in(&n.node);
    let pools = vec![
        pool("a", "10.244.0.0/16", true),
        pool("b", "10.245.0.0/16", false),
    ];
    let first = nat::reconcile(&nft, &pools).expect("reconcile");
    assert_eq!(first.applied.len(), 1, "{first:?}");

    assert_eq!(source_seen_by(&n, &n.ext, "192.168.50.1"), "192.168.50.254");
    assert_eq!(source_seen_by(&n, &n.peer, "10.244.1.5"), "10.244.0.5");

    // An agent restart finds the table right and changes nothing.
    let again = nat::reconcile(&nft, &pools).expect("reconcile");
    assert!(again.applied.is_empty(), "{again:?}");

    // A pool change is an element change, not a new table.
    let handle_before = n
        .node
        .run(
            "nft",
            &["-a", "list", "chain", "ip", "margay-nat", "postrouting"],
        )
        .expect("list");
    let mut changed = pools.clone();
    changed.push(pool("c", "10.246.0.0/16", true));
    let r = nat::reconcile(&nft, &changed).expect("reconcile");
    assert_eq!(r.applied.len(), 1);
    assert!(
        r.applied[0].starts_with("add element ip margay-nat"),
        "{r:?}"
    );
    let set = n
        .node
        .run("nft", &["list", "set", "ip", "margay-nat", "nat-pools"])
        .expect("set");
    assert!(
        set.contains("10.246.0.0/16") && set.contains("10.244.0.0/16"),
        "{set}"
    );
    let handle_after = n
        .node
        .run(
            "nft",
            &["-a", "list", "chain", "ip", "margay-nat", "postrouting"],
        )
        .expect("list");
    assert_eq!(handle_before, handle_after, "the chain was left alone");

    // Someone flushes the chain: the next pass rebuilds it.
    n.node
        .run(
            "nft",
            &["flush", "chain", "ip", "margay-nat", "postrouting"],
        )
        .expect("flush");
    let r = nat::reconcile(&nft, &changed).expect("reconcile");
    assert!(r.applied.iter().any(|s| s.contains("masquerade")), "{r:?}");
    assert_eq!(source_seen_by(&n, &n.ext, "192.168.50.1"), "192.168.50.254");

    // No NAT pool left: the table goes.
    let none = vec![pool("a", "10.244.0.0/16", false)];
    nat::reconcile(&nft, &none).expect("reconcile");
    assert!(
        n.node
            .run("nft", &["list", "table", "ip", rules::TABLE])
            .is_err()
    );
}
