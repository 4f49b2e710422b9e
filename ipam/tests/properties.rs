//! Property tests of the allocator invariants over random operation sequences
//! (allocate any/specific/dual-stack, release by handle or address, GC passes
//! with time moving, node deletion, strict affinity / maxBlocksPerHost /
//! reuse cooldown changes):
//!
//! - no address is in two allocations;
//! - every address is inside its block, every block inside a pool;
//! - the store holds exactly the (handle, address) pairs the model expects,
//!   so a release gives back exactly what was taken;
//! - without strict affinity, block limit or cooling addresses an allocation
//!   fails only when the family's pool is really full;
//! - the GC never releases a live pod's address, releases every address of a
//!   deleted node, and after everything is released leaves no orphan.

mod common;

use common::Cluster;
use margay_api::net::{Cidr, IpFamily};
use margay_api::{IPAMConfigurationSpec, IPPool};
use margay_ipam::{
    AddressRequest, AllocateRequest, GarbageCollector, GcSettings, IpamError, IpamStore, audit,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

const NODES: [&str; 3] = ["n0", "n1", "n2"];
const POOL4: &str = "10.0.0.0/28";
const POOL6: &str = "fd00::/124";
const POOL_SIZE: usize = 16;

#[derive(Debug, Clone)]
enum Op {
    Alloc {
        node: usize,
        v4: bool,
        v6: bool,
    },
    AllocSpecific {
        node: usize,
        offset: u8,
        v6: bool,
    },
    ReleaseHandle {
        pick: usize,
        with_node: bool,
    },
    ReleaseAddress {
        pick: usize,
    },
    Gc {
        advance: i64,
    },
    DeleteNode {
        node: usize,
    },
    Config {
        strict: bool,
        max_blocks: u32,
        cooldown: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, any::<bool>(), any::<bool>())
            .prop_map(|(node, a, b)| Op::Alloc { node, v4: a || !b, v6: b }),
        2 => (0..3usize, 0..16u8, any::<bool>())
            .prop_map(|(node, offset, v6)| Op::AllocSpecific { node, offset, v6 }),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(pick, with_node)| Op::ReleaseHandle { pick, with_node }),
        2 => any::<usize>().prop_map(|pick| Op::ReleaseAddress { pick }),
        2 => prop_oneof![Just(0i64), Just(30), Just(1000)].prop_map(|advance| Op::Gc { advance }),
        1 => (0..3usize).prop_map(|node| Op::DeleteNode { node }),
        1 => (any::<bool>(), 0..3u32, prop_oneof![Just(0u64), Just(0), Just(60)])
            .prop_map(|(strict, max_blocks, cooldown)| Op::Config { strict, max_blocks, cooldown }),
    ]
}

/// What the test believes is allocated.
#[derive(Default)]
struct Model {
    /// handle -> (node, addresses)
    handles: BTreeMap<String, (String, Vec<IpAddr>)>,
    /// Handles of deleted nodes: the GC may (must, eventually) release them.
    doomed: BTreeSet<String>,
    next: u64,
    strict: bool,
    /// maxBlocksPerHost or releasedAddressCooldown set.
    limited: bool,
    deleted_nodes: BTreeSet<String>,
}

impl Model {
    fn pairs(&self) -> BTreeSet<(String, IpAddr)> {
        self.handles
            .iter()
            .flat_map(|(h, (_, ips))| ips.iter().map(move |ip| (h.clone(), *ip)))
            .collect()
    }

    fn count(&self, family: IpFamily) -> usize {
        self.handles
            .values()
            .flat_map(|(_, ips)| ips.iter())
            .filter(|ip| IpFamily::of(**ip) == family)
            .count()
    }

    fn holder_of(&self, ip: IpAddr) -> Option<&str> {
        self.handles
            .iter()
            .find(|(_, (_, ips))| ips.contains(&ip))
            .map(|(h, _)| h.as_str())
    }
}

async fn store_pairs(c: &Cluster) -> BTreeSet<(String, IpAddr)> {
    let blocks: Vec<margay_api::IPAMBlock> = c.store.list(None).await.expect("list");
    let mut out = BTreeSet::new();
    for b in blocks {
        let block = margay_ipam::Block::from_spec(&b.spec).expect("block decodes");
        for (ip, h) in block.allocations() {
            out.insert((h.handle.clone(), ip));
        }
    }
    out
}

/// Released addresses still cooling down, over all blocks.
async fn cooling(c: &Cluster) -> usize {
    let blocks: Vec<margay_api::IPAMBlock> = c.store.list(None).await.expect("list");
    blocks.iter().map(|b| b.spec.cooling.len()).sum()
}

async fn check_invariants(c: &Cluster, model: &Model) -> Result<(), TestCaseError> {
    let a = audit(&c.store)
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(a.duplicate_addresses.is_empty(), "duplicates: {:?}", a);
    prop_assert!(a.overlapping_blocks.is_empty(), "{:?}", a);
    prop_assert!(a.corrupt.is_empty(), "{:?}", a);
    prop_assert!(a.unindexed.is_empty(), "{:?}", a);
    let pools: Vec<IPPool> = c.store.list(None).await.expect("pools");
    let pool_cidrs: Vec<Cidr> = pools
        .iter()
        .map(|p| p.spec.cidr.parse().expect("pool cidr"))
        .collect();
    let blocks: Vec<margay_api::IPAMBlock> = c.store.list(None).await.expect("list");
    for b in &blocks {
        let block = margay_ipam::Block::from_spec(&b.spec).expect("decodes");
        prop_assert!(
            pool_cidrs.iter().any(|p| p.contains_cidr(&block.cidr())),
            "block {} outside pools",
            block.cidr()
        );
        for (ip, _) in block.allocations() {
            prop_assert!(block.cidr().contains(ip));
        }
    }
    let in_store = store_pairs(c).await;
    prop_assert_eq!(&in_store, &model.pairs());
    Ok(())
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let c = Cluster::new(&NODES);
    c.add_pool("p4", POOL4, Some(30)).await;
    c.add_pool("p6", POOL6, Some(126)).await;
    let alloc = c.allocator();
    let mut gc = GarbageCollector::new(c.store.clone(), c.clock.clone(), GcSettings::default());
    let mut m = Model::default();
    let pool4: Cidr = POOL4.parse().expect("cidr");
    let pool6: Cidr = POOL6.parse().expect("cidr");

    for op in ops {
        match op {
            Op::Alloc { node, v4, v6 } => {
                let node = NODES[node];
                if m.deleted_nodes.contains(node) {
                    continue;
                }
                m.next += 1;
                let handle = format!("h{}", m.next);
                let r = AllocateRequest {
                    handle: handle.clone(),
                    node: node.into(),
                    namespace: Some("default".into()),
                    pod: Some(handle.clone()),
                    ipv4: v4.then(AddressRequest::any),
                    ipv6: v6.then(AddressRequest::any),
                };
                match alloc.allocate(&r).await {
                    Ok(got) => {
                        let ips: Vec<IpAddr> = got.addresses().collect();
                        for ip in &ips {
                            prop_assert!(m.holder_of(*ip).is_none(), "{ip} handed out twice");
                        }
                        c.put_pod("default", &handle, node, &ips);
                        m.handles.insert(handle, (node.into(), ips));
                    }
                    Err(IpamError::Exhausted { family, .. }) => {
                        if !m.strict && !m.limited && cooling(&c).await == 0 {
                            prop_assert_eq!(m.count(family), POOL_SIZE, "exhausted with room left");
                        }
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("allocate: {e}"))),
                }
            }
            Op::AllocSpecific { node, offset, v6 } => {
                let node = NODES[node];
                if m.deleted_nodes.contains(node) {
                    continue;
                }
                m.next += 1;
                let handle = format!("h{}", m.next);
                let want = if v6 {
                    pool6.nth(offset.into())
                } else {
                    pool4.nth(offset.into())
                }
                .expect("inside pool");
                let mut r = AllocateRequest::pod_v4(&handle, node, "default", &handle);
                if v6 {
                    r.ipv4 = None;
                    r.ipv6 = Some(AddressRequest::Specific(want));
                } else {
                    r.ipv4 = Some(AddressRequest::Specific(want));
                }
                match alloc.allocate(&r).await {
                    Ok(got) => {
                        let ips: Vec<IpAddr> = got.addresses().collect();
                        prop_assert_eq!(&ips, &vec![want]);
                        prop_assert!(m.holder_of(want).is_none(), "{want} handed out twice");
                        c.put_pod("default", &handle, node, &ips);
                        m.handles.insert(handle, (node.into(), ips));
                    }
                    Err(IpamError::AddressInUse { handle: h, .. }) => {
                        prop_assert_eq!(m.holder_of(want), Some(h.as_str()));
                    }
                    Err(IpamError::StrictAffinity { .. }) => prop_assert!(m.strict),
                    Err(IpamError::AddressCoolingDown { .. }) => {
                        prop_assert!(cooling(&c).await > 0)
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("allocate {want}: {e}"))),
                }
            }
            Op::ReleaseHandle { pick, with_node } => {
                if m.handles.is_empty() {
                    continue;
                }
                let (h, (node, mut ips)) = m
                    .handles
                    .iter()
                    .nth(pick % m.handles.len())
                    .map(|(h, v)| (h.clone(), v.clone()))
                    .expect("picked");
                let hint = with_node.then_some(node.as_str());
                let mut got = alloc
                    .release_handle(&h, hint)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                got.sort();
                ips.sort();
                prop_assert_eq!(got, ips, "release of {} gave back something else", h);
                m.handles.remove(&h);
                m.doomed.remove(&h);
                c.store.delete_pod("default", &h);
            }
            Op::ReleaseAddress { pick } => {
                let all: Vec<(String, IpAddr)> = m.pairs().into_iter().collect();
                if all.is_empty() {
                    continue;
                }
                let (h, ip) = all[pick % all.len()].clone();
                let holder = alloc
                    .release_address(ip)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(holder.map(|x| x.handle), Some(h.clone()));
                prop_assert!(
                    alloc
                        .release_address(ip)
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?
                        .is_none()
                );
                if let Some((node, ips)) = m.handles.get_mut(&h) {
                    ips.retain(|x| *x != ip);
                    let (node, left) = (node.clone(), ips.clone());
                    if left.is_empty() {
                        m.handles.remove(&h);
                        m.doomed.remove(&h);
                        c.store.delete_pod("default", &h);
                    } else if !m.doomed.contains(&h) {
                        c.put_pod("default", &h, &node, &left);
                    }
                }
            }
            Op::Gc { advance } => {
                c.clock.advance(advance);
                let r = gc
                    .run_pass()
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(r.problems.is_empty(), "{:?}", r.problems);
                for (h, ips) in &r.leaks_released {
                    prop_assert!(
                        m.doomed.contains(h),
                        "GC released live handle {} ({:?})",
                        h,
                        ips
                    );
                    m.handles.remove(h);
                    m.doomed.remove(h);
                }
            }
            Op::DeleteNode { node } => {
                let node = NODES[node];
                c.store.delete_node(node);
                m.deleted_nodes.insert(node.into());
                for (h, (n, _)) in &m.handles {
                    if n == node {
                        m.doomed.insert(h.clone());
                        c.store.delete_pod("default", h);
                    }
                }
            }
            Op::Config {
                strict,
                max_blocks,
                cooldown,
            } => {
                m.strict = strict;
                m.limited = max_blocks > 0 || cooldown > 0;
                c.set_config(IPAMConfigurationSpec {
                    strict_affinity: strict,
                    max_blocks_per_host: max_blocks,
                    released_address_cooldown: (cooldown > 0)
                        .then(|| std::time::Duration::from_secs(cooldown).into()),
                    ..Default::default()
                })
                .await;
            }
        }
        check_invariants(&c, &m).await?;
    }

    // Release everything the live nodes hold; the GC takes the rest.
    for (h, (node, _)) in m.handles.clone() {
        if !m.doomed.contains(&h) {
            alloc
                .release_handle(&h, Some(&node))
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            m.handles.remove(&h);
            c.store.delete_pod("default", &h);
        }
    }
    for _ in 0..4 {
        c.clock.advance(1000);
        let r = gc
            .run_pass()
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (h, _) in &r.leaks_released {
            prop_assert!(m.doomed.remove(h), "released non-doomed {}", h);
            m.handles.remove(h);
        }
    }
    prop_assert!(
        m.doomed.is_empty(),
        "deleted nodes' handles not collected: {:?}",
        m.doomed
    );
    let a = audit(&c.store)
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(a.is_clean(), "{:?}", a);
    prop_assert_eq!(a.allocations, 0);
    // A live node keeps at most one (empty) block per family.
    let blocks: Vec<margay_api::IPAMBlock> = c.store.list(None).await.expect("list");
    let mut per_node: BTreeMap<(String, bool), usize> = BTreeMap::new();
    for b in &blocks {
        let node = b.spec.affine_node().unwrap_or("").to_string();
        prop_assert!(
            !m.deleted_nodes.contains(&node),
            "block of deleted node {} left",
            node
        );
        *per_node
            .entry((node, b.spec.cidr.contains(':')))
            .or_default() += 1;
    }
    prop_assert!(per_node.values().all(|&n| n <= 1), "{:?}", per_node);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn allocator_invariants_hold(ops in prop::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        rt.block_on(run(ops))?;
    }
}
