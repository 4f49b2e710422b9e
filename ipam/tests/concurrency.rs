//! Ten nodes allocating and releasing concurrently on two threads against the
//! in-memory store, with 10% of writes refused as conflicts, every call a
//! scheduling point, and allocations killed mid-flight. (The same run against
//! the API emulator is in `emulator.rs`.)

mod common;
#[path = "common/stress.rs"]
mod stress;

use common::Cluster;
use margay_ipam::PodInfo;
use margay_ipam::store::instrumented::InstrumentedStore;
use margay_ipam::store::memory::MemoryStore;
use std::net::IpAddr;
use std::sync::Arc;
use stress::{PodRegistry, StressConfig, assert_stress_ok, node_name, run_stress};

struct MemoryPods(Arc<MemoryStore>);

impl PodRegistry for MemoryPods {
    async fn started(&self, ns: &str, name: &str, node: &str, ips: &[IpAddr]) {
        self.0.put_pod(PodInfo {
            namespace: ns.into(),
            name: name.into(),
            node: Some(node.into()),
            ips: ips.to_vec(),
        });
    }
    async fn deleted(&self, ns: &str, name: &str) {
        self.0.delete_pod(ns, name);
    }
    async fn delete_node(&self, node: &str) {
        self.0.delete_node(node);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_ten_thousand_operations_with_conflicts_and_kills() {
    let cfg = StressConfig {
        nodes: 10,
        ops: 10_000,
        max_live_per_node: 16,
        kill_every: 97,
        delete_nodes: 2,
        seed: 0x5eed,
    };
    let names: Vec<String> = (0..cfg.nodes).map(node_name).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let c = Cluster::new(&refs);
    // 128 addresses in 8 blocks for 10 nodes: claims race, nodes borrow, the
    // pool runs out now and then.
    c.add_pool("stress", "10.9.0.0/25", Some(28)).await;
    let store = Arc::new(InstrumentedStore::new(c.store.clone()));
    store.inject_conflicts(0.10, 42);
    store.set_yield(true);
    let r = run_stress(
        store.clone(),
        c.clock.clone(),
        Arc::new(MemoryPods(c.store.clone())),
        cfg.clone(),
    )
    .await;
    let counts = store.counts();
    println!("{r:?}\n{counts:?}");
    assert!(counts.injected_conflicts > 100, "{counts:?}");
    assert!(
        counts.lost_races > 0,
        "no real races between nodes: {counts:?}"
    );
    assert!(r.exhausted > 0, "the pool never ran out: {r:?}");
    assert_stress_ok(&r, &cfg);
}

/// Many allocations at once on one node whose blocks are all full: sibling
/// requests race to claim new blocks, and a request that adopts a block a
/// sibling just claimed — and finds it already full — claims another instead
/// of reporting the pool exhausted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_allocations_on_one_node_never_report_a_pool_with_room_exhausted() {
    let c = Cluster::new(&["node-a"]);
    // 16 blocks of 16 addresses: 200 allocations need 13 of them.
    c.add_pool("p", "10.7.0.0/24", Some(28)).await;
    let store = Arc::new(InstrumentedStore::new(c.store.clone()));
    store.set_yield(true);
    let alloc = Arc::new(margay_ipam::Allocator::new(store.clone(), c.clock.clone()));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let alloc = alloc.clone();
            tokio::spawn(async move {
                let req = margay_ipam::AllocateRequest::pod_v4(
                    &format!("h{i}"),
                    "node-a",
                    "ns",
                    &format!("p{i}"),
                );
                alloc.allocate(&req).await
            })
        })
        .collect();
    let mut ips = std::collections::BTreeSet::new();
    for t in tasks {
        let got = t
            .await
            .unwrap()
            .expect("the pool has room for every request");
        ips.insert(got.ipv4.expect("an IPv4 address").ip);
    }
    assert_eq!(ips.len(), 200, "every allocation got its own address");
}
