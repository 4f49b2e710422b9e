//! The `l2` topology with three agents in the default node-to-node mesh:
//! every node learns the others' pod blocks over BGP and installs them with
//! protocol 88 via the owning node; pods reach pods across nodes; a block
//! whose last address is released keeps its route until the block itself is
//! released; a deleted Node has its routes withdrawn everywhere.

mod routing_lab;

use kube::api::{Api, DeleteParams};
use margay_api::IPAMBlock;
use margay_lab::pods::PodRuntime;
use margay_lab::topology::Topology;
use routing_lab::*;
use std::net::IpAddr;

#[test]
fn l2_mesh_pods_reach_pods_across_nodes_over_bgp_routes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = up(dir.path(), 3, Topology::L2, false, &[]);
    let rt = PodRuntime::new(&lab).expect("pod runtime");
    let nodes = lab.node_names();
    let pods: Vec<_> = nodes
        .iter()
        .map(|n| pod(&rt, "default", &format!("p-{n}"), n))
        .collect();
    let addr = |n: &str| IpAddr::V4(lab.node(n).expect("node").ipv4);
    let ip_of = |i: usize| pods[i].primary_ip().expect("pod ip");

    for n in &nodes {
        let ns = lab.netns(n).expect("netns");
        until(&format!("{n}: mesh sessions up"), || {
            established(&ns, 2, "node-to-node mesh")
        });
    }
    // Each node: a blackhole for its own block, a route via the owner for
    // every other node's block.
    for (i, n) in nodes.iter().enumerate() {
        let ns = lab.netns(n).expect("netns");
        until(&format!("{n}: proto 88 routes"), || {
            let have = routes88(&ns, false);
            for (j, m) in nodes.iter().enumerate() {
                let block = block_of(ip_of(j), 26);
                let want = if i == j {
                    format!("blackhole {block}")
                } else {
                    format!("{block} via {} dev eth0", addr(m))
                };
                if !have.iter().any(|l| l.starts_with(&want)) {
                    return Err(format!("no {want:?} in {have:?}"));
                }
            }
            Ok(())
        });
    }
    // Metrics: two sessions up, three blocks in the kernel (two learned, one
    // blackhole) on node1.
    let node1 = lab.netns("node1").expect("netns");
    until("node1's BGP metrics", || {
        let m = node1
            .run(
                "curl",
                &["-sf", "--max-time", "5", "http://127.0.0.1:9091/metrics"],
            )
            .map_err(|e| e.to_string())?;
        (m.contains("margay_bgp_peers{state=\"Established\"} 2")
            && m.contains("margay_bgp_kernel_routes 3")
            && m.contains("margay_bgp_learned_prefixes 2"))
        .then_some(())
        .ok_or(m)
    });
    for (i, from) in pods.iter().enumerate() {
        for (j, to) in pods.iter().enumerate() {
            if i != j {
                until(&format!("{} -> {}", from.name, to.name), || {
                    pings(from, ip_of(j))
                });
            }
        }
    }

    // The last address of node2's block goes: the block stays affine, so its
    // route stays on the others until the block itself is released.
    let block2 = block_of(ip_of(1), 26);
    let kube_rt = runtime();
    let client = client(&kube_rt, &lab);
    let blocks: Api<IPAMBlock> = Api::all(client.clone());
    // Every agent recorded its addresses, with the prefix length, on its Node.
    let node_objs = kube_rt
        .block_on(
            Api::<k8s_openapi::api::core::v1::Node>::all(client.clone()).list(&Default::default()),
        )
        .expect("nodes");
    for n in node_objs.items {
        let name = n.metadata.name.clone().unwrap_or_default();
        let plan = lab.node(&name).expect("lab node");
        let ann = n.metadata.annotations.unwrap_or_default();
        assert_eq!(
            ann.get("margay.dev/ipv4Address").map(String::as_str),
            Some(format!("{}/24", plan.ipv4).as_str()),
            "{name}"
        );
        assert_eq!(
            ann.get("margay.dev/ipv6Address").map(String::as_str),
            Some(format!("{}/64", plan.ipv6).as_str()),
            "{name}"
        );
        assert!(ann.contains_key("margay.dev/agent-version"), "{name}");
    }
    rt.delete_pod("default", "p-node2").expect("delete pod");
    until("the address released in IPAM", || {
        let list = kube_rt
            .block_on(blocks.list(&Default::default()))
            .map_err(|e| e.to_string())?;
        let b = list
            .items
            .iter()
            .find(|b| b.spec.cidr == block2.to_string())
            .ok_or("block gone")?;
        if b.spec.allocations.is_empty() && b.spec.affine_node() == Some("node2") {
            Ok(())
        } else {
            Err(format!("{:?}", b.spec))
        }
    });
    let node3 = lab.netns("node3").expect("netns");
    let via2 = format!("{block2} via {} dev eth0", addr("node2"));
    // The agents have seen the release (the pod's local route is gone on
    // node2) and a full pass since; the block route is still everywhere.
    let node2 = lab.netns("node2").expect("netns");
    until("node2's endpoint route removed", || {
        let r = node2
            .ip(&["-o", "route", "show", "proto", "87"])
            .unwrap_or_default();
        if r.contains(&ip_of(1).to_string()) {
            Err(r)
        } else {
            Ok(())
        }
    });
    for ns in [&node1, &node3] {
        let have = routes88(ns, false);
        assert!(
            have.iter().any(|l| l.starts_with(&via2)),
            "{}: the empty but affine block lost its route: {have:?}",
            ns.name()
        );
    }
    // Releasing the block withdraws it everywhere, and node2's blackhole goes.
    let name = kube_rt
        .block_on(blocks.list(&Default::default()))
        .expect("list")
        .items
        .into_iter()
        .find(|b| b.spec.cidr == block2.to_string())
        .and_then(|b| b.metadata.name)
        .expect("block name");
    kube_rt
        .block_on(blocks.delete(&name, &DeleteParams::default()))
        .expect("delete block");
    for ns in [&node1, &node3, &node2] {
        until(&format!("{}: {block2} withdrawn", ns.name()), || {
            let have = routes88(ns, false);
            if have.iter().any(|l| l.contains(&block2.to_string())) {
                Err(format!("{have:?}"))
            } else {
                Ok(())
            }
        });
    }
    // node1 <-> node3 still fine.
    until("node1 pod -> node3 pod", || pings(&pods[0], ip_of(2)));
}

#[test]
fn a_deleted_node_has_its_routes_withdrawn_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = up(dir.path(), 3, Topology::L2, false, &[]);
    let rt = PodRuntime::new(&lab).expect("pod runtime");
    let p3 = pod(&rt, "default", "p3", "node3");
    let block3 = block_of(p3.primary_ip().expect("ip"), 26);
    let node1 = lab.netns("node1").expect("netns");
    let node2 = lab.netns("node2").expect("netns");
    for ns in [&node1, &node2] {
        until(&format!("{}: route to {block3}", ns.name()), || {
            let have = routes88(ns, false);
            if have
                .iter()
                .any(|l| l.starts_with(&format!("{block3} via 10.0.0.3")))
            {
                Ok(())
            } else {
                Err(format!("{have:?}"))
            }
        });
    }
    let kube_rt = runtime();
    let client = client(&kube_rt, &lab);
    let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(client);
    kube_rt
        .block_on(api.delete("node3", &DeleteParams::default()))
        .expect("delete node3");
    for ns in [&node1, &node2] {
        until(&format!("{}: {block3} withdrawn", ns.name()), || {
            let have = routes88(ns, false);
            if have.iter().any(|l| l.contains(&block3.to_string())) {
                return Err(format!("{have:?}"));
            }
            // And the session to the gone node is removed, the other kept.
            established(ns, 1, "node-to-node mesh")
        });
    }
}

#[test]
fn routed_topology_peers_across_subnets_through_the_router() {
    // Nodes 1 and 2 share subnet a, node3 sits in b: the mesh sessions to
    // node3 cross the router (multihop, no TTL security); within subnet a
    // the routes go straight to the node and pods talk. (Routes to node3's
    // block need the overlay: CrossSubnet is the overlay's to test.)
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = up(dir.path(), 3, Topology::Routed, false, &[]);
    let rt = PodRuntime::new(&lab).expect("pod runtime");
    let p1 = pod(&rt, "default", "p1", "node1");
    let p2 = pod(&rt, "default", "p2", "node2");
    for n in ["node1", "node2", "node3"] {
        let ns = lab.netns(n).expect("netns");
        until(&format!("{n}: both mesh sessions up"), || {
            established(&ns, 2, "node-to-node mesh")
        });
    }
    let node1 = lab.netns("node1").expect("netns");
    let block2 = block_of(p2.primary_ip().expect("ip"), 26);
    until("node1 routes node2's block straight to node2", || {
        let have = routes88(&node1, false);
        have.iter()
            .any(|l| l.starts_with(&format!("{block2} via 10.0.1.2 dev eth0")))
            .then_some(())
            .ok_or(format!("{have:?}"))
    });
    until("p1 -> p2", || pings(&p1, p2.primary_ip().expect("ip")));
}

#[test]
fn a_borrowed_address_is_announced_as_a_host_route_by_the_borrowing_node() {
    // A pool of two /31 blocks: node1 and node2 take one each, node3 finds
    // no free block and borrows an address from one of them. node3
    // announces it as a /32, which wins over the lender's block route (and
    // over the lender's own blackhole), so node3's pod is reachable.
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = up(dir.path(), 3, Topology::L2, false, &[]);
    let kube_rt = runtime();
    let client = client(&kube_rt, &lab);
    kube_rt.block_on(async {
        let mut spec = margay_api::IPPoolSpec::new("10.251.0.0/30");
        spec.block_size = Some(31);
        Api::<margay_api::IPPool>::all(client.clone())
            .create(
                &kube::api::PostParams::default(),
                &margay_api::IPPool::new("tiny", spec),
            )
            .await
            .expect("pool");
    });
    let rt = PodRuntime::new(&lab).expect("pod runtime");
    let tiny = |name: &str, node: &str| {
        rt.create_pod(
            &margay_lab::pods::spec::PodSpec::new("default", name, node)
                .annotation("margay.dev/ipv4pools", "[\"tiny\"]"),
        )
        .unwrap_or_else(|e| panic!("pod {name}: {e}"))
    };
    let p1 = tiny("t1", "node1");
    let p2 = tiny("t2", "node2");
    let p3 = tiny("t3", "node3");
    let ip3 = p3.primary_ip().expect("ip");
    assert!(
        ["10.251.0.0", "10.251.0.1", "10.251.0.2", "10.251.0.3"]
            .contains(&ip3.to_string().as_str()),
        "{ip3}"
    );
    let host3 = format!("{ip3} via 10.0.0.3 dev eth0");
    for n in ["node1", "node2"] {
        let ns = lab.netns(n).expect("netns");
        until(&format!("{n}: /32 to the borrowed {ip3} via node3"), || {
            let have = routes88(&ns, false);
            have.iter()
                .any(|l| l.starts_with(&host3))
                .then_some(())
                .ok_or(format!("{have:?}"))
        });
    }
    // node3 announces no block of that pool (it has none).
    let node3 = lab.netns("node3").expect("netns");
    let have3 = routes88(&node3, false);
    assert!(
        !have3.iter().any(|l| l.starts_with("blackhole 10.251.")),
        "{have3:?}"
    );
    until("t1 -> t3 (borrowed)", || pings(&p1, ip3));
    until("t2 -> t3 (borrowed)", || pings(&p2, ip3));
    until("t3 -> t1", || pings(&p3, p1.primary_ip().expect("ip")));
}
