//! The benchmark's measurement functions count API calls right (no timing is
//! checked): one write per allocation in an own block, two when borrowing,
//! one read and one write for the floor.

mod common;

use common::Cluster;
use margay_ipam::bench::{allocations_in_own_blocks, borrowed_allocations, read_and_cas_floor};
use margay_ipam::store::instrumented::InstrumentedStore;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measurements_count_api_calls() {
    let nodes: Vec<String> = (0..4).map(|i| format!("bench-{i}")).collect();
    let borrowers: Vec<String> = (0..2).map(|i| format!("borrower-{i}")).collect();
    let all: Vec<&str> = nodes
        .iter()
        .chain(borrowers.iter())
        .map(String::as_str)
        .collect();
    let c = Cluster::new(&all);
    c.add_pool("p", "10.50.0.0/16", Some(24)).await;
    let store = Arc::new(InstrumentedStore::new(c.store.clone()));
    store.set_yield(true);

    let own = allocations_in_own_blocks(store.clone(), c.clock.clone(), &nodes, 50)
        .await
        .expect("own blocks");
    assert_eq!(own.operations, 200);
    assert_eq!(own.writes_per_op, 1.0, "{own:?}");
    assert!(own.per_node_per_sec > 0.0);

    let borrowed = borrowed_allocations(store.clone(), c.clock.clone(), &nodes[0], &borrowers, 20)
        .await
        .expect("borrowed");
    assert_eq!(borrowed.writes_per_op, 2.0, "{borrowed:?}");

    let floor = read_and_cas_floor(store.clone(), &nodes, 30)
        .await
        .expect("floor");
    assert_eq!(
        (floor.writes_per_op, floor.reads_per_op),
        (1.0, 1.0),
        "{floor:?}"
    );

    // Everything was cleaned up behind the measurements.
    let a = margay_ipam::audit(&c.store).await.expect("audit");
    assert_eq!(a.allocations, 0, "{a:?}");
    println!("own: {own:?}\nborrowed: {borrowed:?}\nfloor: {floor:?}");
}
