//! Allocator behaviour against the in-memory store: blocks, borrowing, strict
//! affinity, pools and selectors, requested addresses, release, cooldown,
//! crash recovery, write counts.

mod common;

use common::{Cluster, ip};
use margay_api::net::{Cidr, IpFamily};
use margay_api::{IPAMConfigurationSpec, IPAMHandle, IPPoolSpec};
use margay_ipam::store::instrumented::InstrumentedStore;
use margay_ipam::{AddressRequest, AllocateRequest, Allocator, IpamError, IpamStore, audit};
use std::sync::Arc;

fn req(handle: &str, node: &str) -> AllocateRequest {
    AllocateRequest::pod_v4(handle, node, "default", &format!("pod-{handle}"))
}

fn req_v6(handle: &str, node: &str) -> AllocateRequest {
    AllocateRequest {
        ipv4: None,
        ipv6: Some(AddressRequest::any()),
        ..req(handle, node)
    }
}

async fn v4(
    a: &Allocator<Arc<margay_ipam::store::memory::MemoryStore>>,
    handle: &str,
    node: &str,
) -> std::net::IpAddr {
    match a.allocate(&req(handle, node)).await {
        Ok(got) => got.ipv4.expect("an IPv4 address").ip,
        Err(e) => panic!("allocating {handle} on {node}: {e}"),
    }
}

#[tokio::test]
async fn common_case_is_one_write_and_a_new_block_three() {
    let c = Cluster::new(&["n1"]);
    c.add_pool("p4", "10.0.0.0/16", None).await;
    let a = c.allocator();
    let before = c.store.write_count();
    let first = a.allocate(&req("h0", "n1")).await.expect("first");
    let first = first.ipv4.expect("v4");
    assert_eq!(
        c.store.write_count() - before,
        3,
        "claim: pending affinity, block, confirm"
    );
    assert_eq!(first.block.prefix(), 26);
    assert!(!first.borrowed);
    assert_eq!(first.pool.as_deref(), Some("p4"));
    for i in 1..64 {
        let before = c.store.write_count();
        let got = v4(&a, &format!("h{i}"), "n1").await;
        assert!(first.block.contains(got));
        assert_eq!(
            c.store.write_count() - before,
            1,
            "allocation {i} in an own block with room"
        );
    }
    // Block full: the next one claims another block.
    let got = a.allocate(&req("h64", "n1")).await.expect("second block");
    assert_ne!(got.ipv4.as_ref().map(|x| x.block), Some(first.block));
    assert_eq!(a.affine_blocks("n1").await.expect("blocks").len(), 2);
    assert!(
        audit(&c.store)
            .await
            .expect("audit")
            .orphan_blocks
            .is_empty()
    );
}

#[tokio::test]
async fn dual_stack_in_one_request_and_idempotent_retry() {
    let c = Cluster::new(&["n1"]);
    c.add_pool("p4", "10.1.0.0/16", None).await;
    c.add_pool("p6", "fd00:1::/64", None).await;
    let a = c.allocator();
    let r = AllocateRequest {
        ipv6: Some(AddressRequest::any()),
        ..req("cid-1", "n1")
    };
    let got = a.allocate(&r).await.expect("dual stack");
    let v4 = got.ipv4.clone().expect("v4");
    let v6 = got.ipv6.clone().expect("v6");
    assert_eq!(v4.block.prefix(), 26);
    assert_eq!(v6.block.prefix(), 122);
    assert!(v6.ip.is_ipv6() && v4.ip.is_ipv4());
    // A retried CNI ADD with the same handle gets the same addresses, no writes.
    let before = c.store.write_count();
    let again = a.allocate(&r).await.expect("retry");
    assert_eq!(
        again.addresses().collect::<Vec<_>>(),
        got.addresses().collect::<Vec<_>>()
    );
    assert_eq!(c.store.write_count(), before);
    let mut held = a.handle_addresses("cid-1", "n1").await.expect("lookup");
    held.sort();
    assert_eq!(held, vec![v4.ip, v6.ip]);
}

#[tokio::test]
async fn failure_of_one_family_rolls_back_the_other() {
    let c = Cluster::new(&["n1"]);
    c.add_pool("p4", "10.1.0.0/16", None).await;
    let a = c.allocator();
    let r = AllocateRequest {
        ipv6: Some(AddressRequest::any()),
        ..req("cid-1", "n1")
    };
    let err = a.allocate(&r).await.expect_err("no IPv6 pool");
    assert!(
        matches!(
            err,
            IpamError::NoPool {
                family: IpFamily::V6,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        a.handle_addresses("cid-1", "n1")
            .await
            .expect("lookup")
            .is_empty()
    );
    assert_eq!(audit(&c.store).await.expect("audit").allocations, 0);
}

#[tokio::test]
async fn exhaustion_borrowing_and_its_handle_index() {
    // 2 blocks of 4 addresses.
    let c = Cluster::new(&["n1", "n2"]);
    c.add_pool("small", "10.2.0.0/29", Some(30)).await;
    let a = c.allocator();
    let mut n1 = Vec::new();
    for i in 0..5 {
        n1.push(v4(&a, &format!("a{i}"), "n1").await);
    }
    assert_eq!(a.affine_blocks("n1").await.expect("blocks").len(), 2);
    // No free block left: n2 borrows one address of n1's, two writes.
    let before = c.store.write_count();
    let got = a.allocate(&req("b0", "n2")).await.expect("borrow");
    let b0 = got.ipv4.expect("v4");
    assert!(b0.borrowed);
    assert_eq!(
        c.store.write_count() - before,
        2,
        "handle index, then block"
    );
    let index: Option<IPAMHandle> = c.store.get("b0").await.expect("get");
    assert_eq!(
        index.expect("index").spec.blocks.get(&b0.block.to_string()),
        Some(&1)
    );
    for i in 1..3 {
        v4(&a, &format!("b{i}"), "n2").await;
    }
    let err = a.allocate(&req("b3", "n2")).await.expect_err("pool full");
    match &err {
        IpamError::Exhausted { pools, node, .. } => {
            assert_eq!(pools, &vec!["small".to_string()]);
            assert_eq!(node, "n2");
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("small"), "{err}");
    // Release on n2 by handle finds the borrowed address through the index.
    let released = a.release_handle("b0", Some("n2")).await.expect("release");
    assert_eq!(released, vec![b0.ip]);
    let index: Option<IPAMHandle> = c.store.get("b0").await.expect("get");
    assert!(index.is_none(), "index deleted with its last address");
    assert!(
        a.release_handle("b0", Some("n2"))
            .await
            .expect("again")
            .is_empty()
    );
    let report = audit(&c.store).await.expect("audit");
    common::assert_sound(&report);
    assert_eq!(report.allocations, 7);
}

#[tokio::test]
async fn strict_affinity_forbids_borrowing() {
    let c = Cluster::new(&["n1", "n2"]);
    c.add_pool("small", "10.2.0.0/29", Some(30)).await;
    c.set_config(IPAMConfigurationSpec {
        strict_affinity: true,
        ..Default::default()
    })
    .await;
    let a = c.allocator();
    for i in 0..5 {
        v4(&a, &format!("a{i}"), "n1").await;
    }
    let err = a.allocate(&req("b0", "n2")).await.expect_err("strict");
    assert!(err.to_string().contains("strictAffinity"), "{err}");
    // A requested address in n1's block is refused too.
    let in_n1 = a.handle_addresses("a0", "n1").await.expect("lookup")[0];
    let mut r = req("b1", "n2");
    r.ipv4 = Some(AddressRequest::Specific(in_n1));
    assert!(matches!(
        a.allocate(&r).await,
        Err(IpamError::StrictAffinity { owner: Some(o), .. }) if o == "n1"
    ));
    // n1 still uses its own free address.
    v4(&a, "a5", "n1").await;
}

#[tokio::test]
async fn max_blocks_per_host_then_borrow_or_fail() {
    let c = Cluster::new(&["n1", "n2"]);
    c.add_pool("p", "10.3.0.0/28", Some(30)).await;
    c.set_config(IPAMConfigurationSpec {
        max_blocks_per_host: 1,
        ..Default::default()
    })
    .await;
    let a = c.allocator();
    for i in 0..4 {
        v4(&a, &format!("a{i}"), "n1").await;
    }
    v4(&a, "b0", "n2").await; // n2 claims its one block
    // n1 is at its limit: borrows from n2.
    let got = a.allocate(&req("a4", "n1")).await.expect("borrow");
    assert!(got.ipv4.expect("v4").borrowed);
    assert_eq!(a.affine_blocks("n1").await.expect("blocks").len(), 1);
    c.set_config(IPAMConfigurationSpec {
        max_blocks_per_host: 1,
        strict_affinity: true,
        ..Default::default()
    })
    .await;
    let err = a
        .allocate(&req("a5", "n1"))
        .await
        .expect_err("limit + strict");
    assert!(err.to_string().contains("maxBlocksPerHost=1"), "{err}");
}

#[tokio::test]
async fn pools_selectors_disabled_and_requested() {
    let c = Cluster::new(&[]);
    c.store.put_node("na", &[("zone", "a")]);
    c.store.put_node("nb", &[("zone", "b")]);
    let mut pa = IPPoolSpec::new("10.10.0.0/24");
    pa.node_selector = Some("zone == 'a'".into());
    c.put_pool("pool-a", pa).await;
    let mut pb = IPPoolSpec::new("10.20.0.0/24");
    pb.node_selector = Some("zone == 'b'".into());
    c.put_pool("pool-b", pb).await;
    let mut off = IPPoolSpec::new("10.30.0.0/24");
    off.disabled = true;
    c.put_pool("pool-off", off).await;
    c.add_pool("pool-6", "fd00:30::/120", None).await;
    let a = c.allocator();

    let got = v4(&a, "x", "na").await;
    assert!(Cidr::parse_strict("10.10.0.0/24").unwrap().contains(got));
    let got = v4(&a, "y", "nb").await;
    assert!(Cidr::parse_strict("10.20.0.0/24").unwrap().contains(got));

    let with_pools = |h: &str, node: &str, pools: &[&str]| AllocateRequest {
        ipv4: Some(AddressRequest::Auto {
            pools: pools.iter().map(|p| p.to_string()).collect(),
        }),
        ..req(h, node)
    };
    assert!(matches!(
        a.allocate(&with_pools("z1", "na", &["pool-b"])).await,
        Err(IpamError::PoolNotForNode { pool, .. }) if pool == "pool-b"
    ));
    assert!(matches!(
        a.allocate(&with_pools("z2", "na", &["pool-off"])).await,
        Err(IpamError::PoolDisabled { pool }) if pool == "pool-off"
    ));
    assert!(matches!(
        a.allocate(&with_pools("z3", "na", &["nope"])).await,
        Err(IpamError::PoolNotFound(p)) if p == "nope"
    ));
    assert!(matches!(
        a.allocate(&with_pools("z4", "na", &["pool-6"])).await,
        Err(IpamError::PoolWrongFamily { .. })
    ));
    // By CIDR works as well as by name.
    let got = a
        .allocate(&with_pools("z5", "na", &["10.10.0.0/24"]))
        .await
        .expect("by cidr");
    assert_eq!(got.ipv4.expect("v4").pool.as_deref(), Some("pool-a"));
    // A specific address in a disabled pool is allowed.
    let mut r = req("z6", "na");
    r.ipv4 = Some(AddressRequest::Specific(ip("10.30.0.9")));
    let got = a.allocate(&r).await.expect("specific in disabled pool");
    assert_eq!(got.ipv4.expect("v4").ip, ip("10.30.0.9"));
    assert!(matches!(
        a.allocate(&req("z7", "ghost")).await,
        Err(IpamError::NodeNotFound(n)) if n == "ghost"
    ));
}

#[tokio::test]
async fn requested_addresses() {
    let c = Cluster::new(&["n1", "n2"]);
    c.add_pool("p", "10.4.0.0/24", None).await;
    let a = c.allocator();
    let specific = |h: &str, node: &str, addr: &str| AllocateRequest {
        ipv4: Some(AddressRequest::Specific(ip(addr))),
        ..req(h, node)
    };
    // In a block nobody holds: the block is claimed for the node.
    let got = a
        .allocate(&specific("s1", "n1", "10.4.0.70"))
        .await
        .expect("claim");
    let got = got.ipv4.expect("v4");
    assert_eq!((got.ip, got.borrowed), (ip("10.4.0.70"), false));
    assert_eq!(got.block.to_string(), "10.4.0.64/26");
    // In the node's own block: one write.
    let before = c.store.write_count();
    a.allocate(&specific("s2", "n1", "10.4.0.71"))
        .await
        .expect("own block");
    assert_eq!(c.store.write_count() - before, 1);
    // Taken.
    assert!(matches!(
        a.allocate(&specific("s3", "n2", "10.4.0.70")).await,
        Err(IpamError::AddressInUse { handle, .. }) if handle == "s1"
    ));
    // In n1's block from n2: borrowed.
    let got = a
        .allocate(&specific("s4", "n2", "10.4.0.72"))
        .await
        .expect("borrow");
    assert!(got.ipv4.expect("v4").borrowed);
    // Outside every pool.
    assert!(matches!(
        a.allocate(&specific("s5", "n1", "192.168.0.1")).await,
        Err(IpamError::AddressNotInPool(_))
    ));
    // The same handle asking for another address than it holds.
    assert!(matches!(
        a.allocate(&specific("s1", "n1", "10.4.0.80")).await,
        Err(IpamError::HandleHoldsOther { .. })
    ));
    // Wrong family in the request.
    let mut bad = req("s6", "n1");
    bad.ipv4 = Some(AddressRequest::Specific(ip("fd00::1")));
    assert!(matches!(
        a.allocate(&bad).await,
        Err(IpamError::InvalidRequest(_))
    ));
    common::assert_sound(&audit(&c.store).await.expect("audit"));
}

#[tokio::test]
async fn release_by_address_is_idempotent_and_cooldown_delays_reuse() {
    let c = Cluster::new(&["n1"]);
    c.add_pool("p", "10.5.0.0/30", Some(30)).await;
    c.set_config(IPAMConfigurationSpec {
        released_address_cooldown: Some(std::time::Duration::from_secs(60).into()),
        ..Default::default()
    })
    .await;
    let a = c.allocator();
    let mut got = Vec::new();
    for i in 0..4 {
        got.push(v4(&a, &format!("h{i}"), "n1").await);
    }
    let holder = a
        .release_address(got[1])
        .await
        .expect("release")
        .expect("was allocated");
    assert_eq!(holder.handle, "h1");
    assert!(a.release_address(got[1]).await.expect("again").is_none());
    // Cooling down: the pool is "full" for 60 s.
    assert!(matches!(
        a.allocate(&req("late", "n1")).await,
        Err(IpamError::Exhausted { .. })
    ));
    let mut r = req("late", "n1");
    r.ipv4 = Some(AddressRequest::Specific(got[1]));
    assert!(matches!(
        a.allocate(&r).await,
        Err(IpamError::AddressCoolingDown { .. })
    ));
    c.clock.advance(60);
    assert_eq!(v4(&a, "late", "n1").await, got[1]);
}

#[tokio::test]
async fn v6_blocks_and_release_without_node_hint() {
    let c = Cluster::new(&["n1"]);
    c.add_pool("p6", "fd00:5::/120", None).await;
    let a = c.allocator();
    let got = a.allocate(&req_v6("h", "n1")).await.expect("v6");
    let v6 = got.ipv6.expect("v6");
    assert_eq!(v6.block.prefix(), 122);
    assert_eq!(
        a.release_handle("h", None).await.expect("release"),
        vec![v6.ip]
    );
    assert_eq!(audit(&c.store).await.expect("audit").allocations, 0);
}

/// A node dying between the writes of a block claim loses nothing: after a
/// restart the claim is finished, a retried request gets the same address,
/// and no object is left dangling.
#[tokio::test]
async fn crash_between_claim_writes_is_recovered() {
    for crash_after in 0..3u64 {
        let c = Cluster::new(&["n1"]);
        c.add_pool("p", "10.6.0.0/24", None).await;
        let dying = Arc::new(InstrumentedStore::new(c.store.clone()));
        dying.crash_after_writes(crash_after);
        let a = Allocator::new(dying.clone(), c.clock.clone());
        let err = a.allocate(&req("cid", "n1")).await.expect_err("crashed");
        assert!(dying.has_crashed(), "crash_after={crash_after}: {err}");

        let a = c.allocator(); // restarted
        let got = a.allocate(&req("cid", "n1")).await.expect("after restart");
        let got = got.ipv4.expect("v4");
        // Nothing was leaked or duplicated, and the claim is complete.
        let report = audit(&c.store).await.expect("audit");
        common::assert_sound(&report);
        assert_eq!(report.allocations, 1, "crash_after={crash_after}");
        assert_eq!(
            a.affine_blocks("n1").await.expect("blocks"),
            vec![got.block]
        );
    }
}

#[tokio::test]
async fn node_names_longer_than_label_values_work() {
    let long = format!("node-{}", "x".repeat(80));
    let c = Cluster::new(&[long.as_str()]);
    c.add_pool("p", "10.7.0.0/24", None).await;
    let a = c.allocator();
    v4(&a, "h1", &long).await;
    let before = c.store.write_count();
    v4(&a, "h2", &long).await;
    assert_eq!(
        c.store.write_count() - before,
        1,
        "found its block through the hashed label"
    );
    common::assert_sound(&audit(&c.store).await.expect("audit"));
}
