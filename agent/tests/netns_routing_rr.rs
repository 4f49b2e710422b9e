//! Route reflectors in the `l2` topology: the node-to-node mesh off, one
//! dedicated reflector (`--role route-reflector`) and every other node its
//! client through a `BGPPeer` with a `peerSelector`; then a second reflector
//! sharing the cluster id, and the first killed: pods keep talking, and a
//! block announced after the kill still reaches every client.

mod routing_lab;

use kube::api::{Api, PostParams};
use margay_api::resources::bgp::BGPConfigurationSpec;
use margay_api::{BGPConfiguration, BGPPeer, BGPPeerSpec};
use margay_lab::pods::PodRuntime;
use margay_lab::topology::Topology;
use routing_lab::*;

const RR_ARGS: [&str; 4] = [
    "--role",
    "route-reflector",
    "--route-reflector-cluster-id",
    "10.255.0.1",
];

fn rr_args() -> Vec<String> {
    RR_ARGS.iter().map(|s| s.to_string()).collect()
}

#[test]
fn clients_learn_each_other_through_reflectors_and_survive_losing_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = up(dir.path(), 5, Topology::L2, false, &[]);
    let kube_rt = runtime();
    let client = client(&kube_rt, &lab);
    kube_rt.block_on(async {
        Api::<BGPConfiguration>::all(client.clone())
            .create(
                &PostParams::default(),
                &BGPConfiguration::new(
                    "default",
                    BGPConfigurationSpec {
                        node_to_node_mesh_enabled: Some(false),
                        ..Default::default()
                    },
                ),
            )
            .await
            .expect("BGPConfiguration");
        Api::<BGPPeer>::all(client.clone())
            .create(
                &PostParams::default(),
                &BGPPeer::new(
                    "peer-with-reflectors",
                    BGPPeerSpec {
                        node_selector: Some("all()".into()),
                        peer_selector: Some("has(margay.dev/route-reflector)".into()),
                        ..Default::default()
                    },
                ),
            )
            .await
            .expect("BGPPeer");
    });
    lab.stop_agent("node4").expect("stop");
    lab.start_agent_with("node4", &rr_args())
        .expect("node4 as RR");

    let rt = PodRuntime::new(&lab).expect("pod runtime");
    let p1 = pod(&rt, "default", "p1", "node1");
    let p2 = pod(&rt, "default", "p2", "node2");
    let ip1 = p1.primary_ip().expect("ip");
    let ip2 = p2.primary_ip().expect("ip");
    let node1 = lab.netns("node1").expect("netns");
    let node2 = lab.netns("node2").expect("netns");
    let node4 = lab.netns("node4").expect("netns");

    until("node1 peers only with the reflector", || {
        established(&node1, 1, "route reflector")
    });
    until("the reflector serves four clients", || {
        established(&node4, 4, "route reflector client")
    });
    let block1 = block_of(ip1, 26);
    let block2 = block_of(ip2, 26);
    // Reflected routes keep the originating node as next hop.
    until("node1 routes node2's block via node2", || {
        let have = routes88(&node1, false);
        let want = format!("{block2} via 10.0.0.2 dev eth0");
        have.iter()
            .any(|l| l.starts_with(&want))
            .then_some(())
            .ok_or(format!("{have:?}"))
    });
    until("node2 routes node1's block via node1", || {
        let have = routes88(&node2, false);
        let want = format!("{block1} via 10.0.0.1 dev eth0");
        have.iter()
            .any(|l| l.starts_with(&want))
            .then_some(())
            .ok_or(format!("{have:?}"))
    });
    until("p1 -> p2", || pings(&p1, ip2));
    until("p2 -> p1", || pings(&p2, ip1));
    // The dedicated reflector knows the blocks but installs no pod routes.
    // (Status is a snapshot refreshed every couple of seconds: poll.)
    until("the reflector's RIB holds both blocks", || {
        let rib = node4
            .run(
                "curl",
                &["-sf", "--max-time", "5", "http://127.0.0.1:9099/bgp/routes"],
            )
            .map_err(|e| e.to_string())?;
        (rib.contains(&block1.to_string()) && rib.contains(&block2.to_string()))
            .then_some(())
            .ok_or(rib)
    });
    let held = routes88(&node4, false);
    assert!(
        !held.iter().any(|l| l.contains(&block1.to_string())),
        "a route reflector installed a pod route: {held:?}"
    );

    // A second reflector with the same cluster id; then the first dies.
    lab.stop_agent("node5").expect("stop");
    lab.start_agent_with("node5", &rr_args())
        .expect("node5 as RR");
    until("node1 peers with both reflectors", || {
        established(&node1, 2, "route reflector")
    });
    lab.kill_agent("node4").expect("kill node4's agent");
    until("p1 -> p2 with one reflector gone", || pings(&p1, ip2));
    // A block that appears now is announced through node5 only.
    let p3 = pod(&rt, "default", "p3", "node3");
    let ip3 = p3.primary_ip().expect("ip");
    until(
        "p1 -> p3 (node3's new block, via the remaining reflector)",
        || pings(&p1, ip3),
    );
    until("p3 -> p2", || pings(&p3, ip2));
}
