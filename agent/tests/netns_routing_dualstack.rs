//! Dual stack in the `l2` mesh: an IPv4 and an IPv6 pool; the IPv6 blocks
//! travel over the (IPv4) sessions with MP-BGP, next hop the node's IPv6
//! address, and IPv6 pods reach each other across nodes.

mod routing_lab;

use margay_lab::pods::PodRuntime;
use margay_lab::topology::Topology;
use routing_lab::*;

#[test]
fn ipv6_pods_reach_each_other_over_mp_bgp_routes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = up(dir.path(), 2, Topology::L2, true, &[]);
    let rt = PodRuntime::new(&lab).expect("pod runtime");
    let p1 = pod(&rt, "default", "p1", "node1");
    let p2 = pod(&rt, "default", "p2", "node2");
    let v6 = |p: &margay_lab::pods::PodRecord| p.ip(true).expect("an IPv6 address");
    let (a1, a2) = (v6(&p1), v6(&p2));
    for (node, other_pod, other_node) in [("node1", a2, "node2"), ("node2", a1, "node1")] {
        let ns = lab.netns(node).expect("netns");
        let gw = lab.node(other_node).expect("node").ipv6;
        let block = block_of(other_pod, 122);
        until(&format!("{node}: IPv6 route to {block}"), || {
            let have = routes88(&ns, true);
            let want = format!("{block} via {gw} dev eth0");
            have.iter()
                .any(|l| l.starts_with(&want))
                .then_some(())
                .ok_or(format!("no {want:?} in {have:?}"))
        });
        // The IPv4 block came over the same session.
        let v4block = block_of(
            if node == "node1" { &p2 } else { &p1 }
                .ip(false)
                .expect("an IPv4 address"),
            26,
        );
        until(&format!("{node}: IPv4 route to {v4block}"), || {
            let have = routes88(&ns, false);
            have.iter()
                .any(|l| l.starts_with(&v4block.to_string()))
                .then_some(())
                .ok_or(format!("{have:?}"))
        });
    }
    until("p1 -> p2 over IPv6", || pings(&p1, a2));
    until("p2 -> p1 over IPv6", || pings(&p2, a1));
}
