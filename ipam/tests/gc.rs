//! Garbage collection: leaked allocations (grace period, fresh re-check, whole
//! handles), empty blocks (two passes), node deletion, nodeSelector changes,
//! stale affinities and handle indexes.

mod common;

use common::{Cluster, ip};
use margay_api::{AffinityState, BlockAffinity, IPAMHandle, IPPoolSpec};
use margay_ipam::store::instrumented::InstrumentedStore;
use margay_ipam::store::memory::MemoryStore;
use margay_ipam::store::{NodeInfo, PodInfo, StoreResult, StoredKind};
use margay_ipam::{
    AddressRequest, AllocateRequest, Allocator, GarbageCollector, GcSettings, IpamStore, audit,
};
use std::net::IpAddr;
use std::sync::Arc;

const GRACE: i64 = 15 * 60;

fn gc(c: &Cluster) -> GarbageCollector<Arc<MemoryStore>> {
    GarbageCollector::new(c.store.clone(), c.clock.clone(), GcSettings::default())
}

async fn alloc(c: &Cluster, handle: &str, node: &str) -> IpAddr {
    let r = AllocateRequest::pod_v4(handle, node, "default", handle);
    match c.allocator().allocate(&r).await {
        Ok(a) => a.ipv4.expect("v4").ip,
        Err(e) => panic!("allocate {handle}: {e}"),
    }
}

/// Allocate and register the pod as running there with that address.
async fn pod(c: &Cluster, name: &str, node: &str) -> IpAddr {
    let got = alloc(c, name, node).await;
    c.put_pod("default", name, node, &[got]);
    got
}

#[tokio::test]
async fn leaked_allocation_waits_for_grace_period() {
    let c = Cluster::new(&["n1"]);
    c.add_pool("p", "10.0.0.0/24", None).await;
    let live = pod(&c, "live", "n1").await;
    let gone = alloc(&c, "gone", "n1").await; // no pod: CNI DEL never came
    let mut g = gc(&c);
    let r = g.run_pass().await.expect("pass");
    assert_eq!(r.leak_suspects, 1);
    assert!(r.leaks_released.is_empty());
    c.clock.advance(GRACE - 1);
    assert!(g.run_pass().await.expect("pass").leaks_released.is_empty());
    c.clock.advance(1);
    let r = g.run_pass().await.expect("pass");
    assert_eq!(r.leaks_released, vec![("gone".to_string(), vec![gone])]);
    let a = audit(&c.store).await.expect("audit");
    assert!(a.is_clean(), "{a:?}");
    assert_eq!(a.allocations, 1);
    assert_eq!(
        c.allocator()
            .handle_addresses("live", "n1")
            .await
            .expect("lookup"),
        vec![live]
    );
}

#[tokio::test]
async fn pod_checks_moved_pods_other_ips_and_unreported_ips() {
    let c = Cluster::new(&["n1", "n2"]);
    c.add_pool("p", "10.0.0.0/24", None).await;
    let moved = alloc(&c, "moved", "n1").await;
    c.put_pod("default", "moved", "n2", &[]); // rescheduled (same name, other node)
    alloc(&c, "other-ip", "n1").await;
    c.put_pod("default", "other-ip", "n1", &[ip("10.0.0.250")]);
    let starting = alloc(&c, "starting", "n1").await;
    c.put_pod("default", "starting", "n1", &[]); // kubelet has not reported IPs yet
    let mut g = gc(&c);
    g.run_pass().await.expect("pass");
    c.clock.advance(GRACE);
    let r = g.run_pass().await.expect("pass");
    let mut handles: Vec<&str> = r.leaks_released.iter().map(|(h, _)| h.as_str()).collect();
    handles.sort();
    assert_eq!(handles, vec!["moved", "other-ip"]);
    let a = c.allocator();
    assert_eq!(
        a.handle_addresses("starting", "n1").await.expect("lookup"),
        vec![starting]
    );
    assert!(
        a.handle_addresses("moved", "n1")
            .await
            .expect("lookup")
            .is_empty()
    );
    let _ = moved;
}

#[tokio::test]
async fn a_handle_goes_only_when_all_its_addresses_look_leaked() {
    let c = Cluster::new(&["n1"]);
    c.add_pool("p4", "10.0.0.0/24", None).await;
    c.add_pool("p6", "fd00::/120", None).await;
    let r = AllocateRequest {
        ipv6: Some(AddressRequest::any()),
        ..AllocateRequest::pod_v4("ds", "n1", "default", "ds")
    };
    let got = c.allocator().allocate(&r).await.expect("dual stack");
    let (v4, v6) = (got.ipv4.expect("v4").ip, got.ipv6.expect("v6").ip);
    // The pod reports only its IPv4 address: the IPv6 one looks leaked, the
    // IPv4 one does not, so neither is released.
    c.put_pod("default", "ds", "n1", &[v4]);
    let mut g = gc(&c);
    g.run_pass().await.expect("pass");
    c.clock.advance(2 * GRACE);
    let r = g.run_pass().await.expect("pass");
    assert!(r.leaks_released.is_empty(), "{r:?}");
    // Pod gone: both go, together.
    c.store.delete_pod("default", "ds");
    g.run_pass().await.expect("pass");
    c.clock.advance(GRACE);
    let r = g.run_pass().await.expect("pass");
    assert_eq!(r.leaks_released.len(), 1);
    let mut ips = r.leaks_released[0].1.clone();
    ips.sort();
    assert_eq!(ips, vec![v4, v6]);
}

/// A store whose pod list is a stale cache: the GC must re-check each leak
/// with a fresh read before releasing it.
struct StalePodList(Arc<MemoryStore>);

impl IpamStore for StalePodList {
    async fn get<K: StoredKind>(&self, name: &str) -> StoreResult<Option<K>> {
        self.0.get(name).await
    }
    async fn list<K: StoredKind>(&self, l: Option<&str>) -> StoreResult<Vec<K>> {
        self.0.list(l).await
    }
    async fn create<K: StoredKind>(&self, o: &K) -> StoreResult<K> {
        self.0.create(o).await
    }
    async fn replace<K: StoredKind>(&self, o: &K) -> StoreResult<K> {
        self.0.replace(o).await
    }
    async fn delete<K: StoredKind>(&self, n: &str, rv: &str) -> StoreResult<()> {
        self.0.delete::<K>(n, rv).await
    }
    async fn get_node(&self, n: &str) -> StoreResult<Option<NodeInfo>> {
        self.0.get_node(n).await
    }
    async fn list_nodes(&self) -> StoreResult<Vec<NodeInfo>> {
        self.0.list_nodes().await
    }
    async fn get_pod(&self, ns: &str, n: &str) -> StoreResult<Option<PodInfo>> {
        self.0.get_pod(ns, n).await
    }
    async fn list_pods(&self) -> StoreResult<Vec<PodInfo>> {
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn release_is_rechecked_against_fresh_reads() {
    let c = Cluster::new(&["n1"]);
    c.add_pool("p", "10.0.0.0/24", None).await;
    let live = pod(&c, "live", "n1").await;
    let mut g = GarbageCollector::new(
        StalePodList(c.store.clone()),
        c.clock.clone(),
        GcSettings::default(),
    );
    g.run_pass().await.expect("pass");
    c.clock.advance(GRACE);
    let r = g.run_pass().await.expect("pass");
    assert!(
        r.leaks_released.is_empty(),
        "released a live pod's address: {r:?}"
    );
    assert_eq!(
        c.allocator()
            .handle_addresses("live", "n1")
            .await
            .expect("lookup"),
        vec![live]
    );
}

#[tokio::test]
async fn empty_blocks_go_after_two_unchanged_passes_and_a_node_keeps_one() {
    let c = Cluster::new(&["n1"]);
    c.add_pool("p", "10.0.0.0/24", Some(30)).await;
    let a = c.allocator();
    let mut ips = Vec::new();
    for i in 0..8 {
        ips.push(pod(&c, &format!("p{i}"), "n1").await);
    }
    assert_eq!(a.affine_blocks("n1").await.expect("blocks").len(), 2);
    // Empty the block holding the last four, and make room in the first.
    for i in 3..8 {
        a.release_handle(&format!("p{i}"), Some("n1"))
            .await
            .expect("release");
        c.store.delete_pod("default", &format!("p{i}"));
    }
    let mut g = gc(&c);
    assert!(
        g.run_pass().await.expect("pass").blocks_released.is_empty(),
        "first sighting"
    );
    // Touched between passes (allocate + release): seen again from scratch.
    let r = AllocateRequest {
        ipv4: Some(AddressRequest::Specific(ips[5])),
        ..AllocateRequest::pod_v4("tmp", "n1", "default", "tmp")
    };
    a.allocate(&r).await.expect("specific");
    a.release_handle("tmp", Some("n1")).await.expect("release");
    assert!(
        g.run_pass().await.expect("pass").blocks_released.is_empty(),
        "changed since"
    );
    let r = g.run_pass().await.expect("pass");
    assert_eq!(r.blocks_released.len(), 1, "{r:?}");
    assert_eq!(a.affine_blocks("n1").await.expect("blocks").len(), 1);
    // Empty the last block too: a live node keeps it.
    for i in 0..3 {
        a.release_handle(&format!("p{i}"), Some("n1"))
            .await
            .expect("release");
        c.store.delete_pod("default", &format!("p{i}"));
    }
    for _ in 0..3 {
        assert!(g.run_pass().await.expect("pass").blocks_released.is_empty());
    }
    assert_eq!(a.affine_blocks("n1").await.expect("blocks").len(), 1);
    let report = audit(&c.store).await.expect("audit");
    assert!(report.is_clean(), "{report:?}");
}

#[tokio::test]
async fn deleted_node_loses_its_addresses_then_its_blocks() {
    let c = Cluster::new(&["n1", "n2"]);
    c.add_pool("p", "10.0.0.0/28", Some(30)).await; // 4 blocks of 4
    // n2 takes three blocks (the third not full), n1 the fourth; then n1
    // borrows from n2's third block.
    for i in 0..9 {
        pod(&c, &format!("b{i}"), "n2").await;
    }
    for i in 0..4 {
        pod(&c, &format!("a{i}"), "n1").await;
    }
    let borrowed = {
        let r = AllocateRequest::pod_v4("a-borrow", "n1", "default", "a-borrow");
        let got = c
            .allocator()
            .allocate(&r)
            .await
            .expect("borrow")
            .ipv4
            .expect("v4");
        assert!(got.borrowed);
        c.put_pod("default", "a-borrow", "n1", &[got.ip]);
        got
    };
    // n2 dies with its pods.
    c.store.delete_node("n2");
    for i in 0..9 {
        c.store.delete_pod("default", &format!("b{i}"));
    }
    let mut g = gc(&c);
    g.run_pass().await.expect("pass");
    c.clock.advance(GRACE);
    let r = g.run_pass().await.expect("pass");
    assert_eq!(r.leaks_released.len(), 9, "{r:?}");
    // Next passes: n2's empty blocks go; the one n1 borrows from is detached.
    for _ in 0..3 {
        g.run_pass().await.expect("pass");
    }
    let a = audit(&c.store).await.expect("audit");
    assert!(a.is_clean(), "{a:?}");
    let affs: Vec<BlockAffinity> = c.store.list(None).await.expect("list");
    assert!(affs.iter().all(|x| x.spec.node == "n1"), "{affs:?}");
    assert_eq!(
        a.blocks, 2,
        "n1's block and the detached one n1 borrows from"
    );
    // n1 releases the borrowed address: the detached block goes too.
    c.allocator()
        .release_handle("a-borrow", Some("n1"))
        .await
        .expect("release");
    c.store.delete_pod("default", "a-borrow");
    for _ in 0..2 {
        g.run_pass().await.expect("pass");
    }
    let a = audit(&c.store).await.expect("audit");
    assert!(a.is_clean(), "{a:?}");
    assert_eq!(a.blocks, 1);
    let _ = borrowed;
}

#[tokio::test]
async fn node_selector_change_moves_new_allocations_and_frees_old_blocks() {
    let c = Cluster::new(&[]);
    c.store.put_node("n1", &[("zone", "a")]);
    let mut pa = IPPoolSpec::new("10.10.0.0/24");
    pa.node_selector = Some("zone == 'a'".into());
    c.put_pool("pool-a", pa).await;
    let mut pb = IPPoolSpec::new("10.20.0.0/24");
    pb.node_selector = Some("zone == 'b'".into());
    c.put_pool("pool-b", pb.clone()).await;
    let old = pod(&c, "old", "n1").await;
    assert!(old.to_string().starts_with("10.10."));
    // The node moves to zone b.
    c.store.put_node("n1", &[("zone", "b")]);
    let new = pod(&c, "new", "n1").await;
    assert!(new.to_string().starts_with("10.20."), "{new}");
    let a = c.allocator();
    assert_eq!(a.affine_blocks("n1").await.expect("blocks").len(), 2);
    // The old block keeps its live address...
    let mut g = gc(&c);
    for _ in 0..3 {
        assert!(g.run_pass().await.expect("pass").blocks_released.is_empty());
    }
    // ...and goes once empty, although it is the node's only pool-a block.
    a.release_handle("old", Some("n1")).await.expect("release");
    c.store.delete_pod("default", "old");
    g.run_pass().await.expect("pass");
    let r = g.run_pass().await.expect("pass");
    assert_eq!(r.blocks_released.len(), 1);
    assert!(r.blocks_released[0].to_string().starts_with("10.10."));
    assert!(audit(&c.store).await.expect("audit").is_clean());
}

#[tokio::test]
async fn interrupted_claims_and_borrows_are_cleaned_up() {
    let c = Cluster::new(&["n1", "n2"]);
    c.add_pool("p", "10.0.0.0/29", Some(30)).await;
    // n1 dies right after writing a pending affinity and never comes back to it.
    let dying = Arc::new(InstrumentedStore::new(c.store.clone()));
    dying.crash_after_writes(1);
    let r = AllocateRequest::pod_v4("x", "n1", "default", "x");
    Allocator::new(dying.clone(), c.clock.clone())
        .allocate(&r)
        .await
        .expect_err("crash");
    let affs: Vec<BlockAffinity> = c.store.list(None).await.expect("list");
    assert_eq!(affs.len(), 1);
    assert_eq!(affs[0].spec.state, AffinityState::Pending);

    // n2 fills both blocks; n1 dies after writing a borrow's handle index.
    for i in 0..8 {
        pod(&c, &format!("b{i}"), "n2").await;
    }
    c.allocator()
        .release_handle("b0", Some("n2"))
        .await
        .expect("release");
    c.store.delete_pod("default", "b0");
    let dying = Arc::new(InstrumentedStore::new(c.store.clone()));
    dying.crash_after_writes(1);
    let r = AllocateRequest::pod_v4("y", "n1", "default", "y");
    Allocator::new(dying, c.clock.clone())
        .allocate(&r)
        .await
        .expect_err("crash");
    let h: Option<IPAMHandle> = c.store.get("y").await.expect("get");
    assert!(h.is_some(), "the index was written before the crash");

    let mut g = gc(&c);
    let settings = GcSettings::default();
    g.run_pass().await.expect("pass");
    assert!(!audit(&c.store).await.expect("audit").is_clean());
    c.clock.advance(
        settings
            .stale_affinity_timeout_secs
            .max(settings.stale_handle_timeout_secs),
    );
    let r = g.run_pass().await.expect("pass");
    assert_eq!(r.affinities_deleted.len(), 1, "{r:?}");
    assert_eq!(r.handles_deleted, vec!["y".to_string()]);
    let a = audit(&c.store).await.expect("audit");
    assert!(a.is_clean(), "{a:?}");
}

#[tokio::test]
async fn empty_block_is_kept_while_the_nodes_other_blocks_are_full() {
    let c = Cluster::new(&["n1"]);
    c.add_pool("p", "10.0.0.0/24", Some(30)).await;
    let a = c.allocator();
    for i in 0..8 {
        pod(&c, &format!("p{i}"), "n1").await;
    }
    // The second block empties; the first is full, so the node would need a
    // block again at once: keep it.
    for i in 4..8 {
        a.release_handle(&format!("p{i}"), Some("n1"))
            .await
            .expect("release");
        c.store.delete_pod("default", &format!("p{i}"));
    }
    let mut g = gc(&c);
    for _ in 0..3 {
        assert!(g.run_pass().await.expect("pass").blocks_released.is_empty());
    }
    assert_eq!(a.affine_blocks("n1").await.expect("blocks").len(), 2);
}
