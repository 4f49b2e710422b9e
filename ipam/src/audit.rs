//! A read-only check of the whole IPAM state against its invariants, for
//! tests, `margayctl ipam check` and the GC's own verification.

use crate::block::Block;
use crate::error::IpamError;
use crate::store::IpamStore;
use margay_api::names::{affinity_name, block_name, handle_name};
use margay_api::net::Cidr;
use margay_api::{AffinityState, BlockAffinity, IPAMBlock, IPAMHandle};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

/// Everything found wrong (and a few counts). See [`Audit::is_clean`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    pub blocks: usize,
    pub allocations: usize,
    /// An address held in two blocks (overlapping blocks): must never happen.
    pub duplicate_addresses: Vec<IpAddr>,
    /// Blocks that overlap another block.
    pub overlapping_blocks: Vec<Cidr>,
    /// Blocks nobody can use or clean up: empty without affinity, affine to a
    /// node that does not exist, or whose node has no confirmed affinity for it.
    pub orphan_blocks: Vec<Cidr>,
    /// Affinities without a block of their node.
    pub dangling_affinities: Vec<String>,
    /// Allocations of nodes that do not exist, or of pods that do not.
    pub leaked: Vec<(IpAddr, String)>,
    /// Addresses outside their node's blocks that their handle's index does
    /// not list (release by handle on the node would miss them).
    pub unindexed: Vec<(IpAddr, String)>,
    /// Handle indexes naming no allocation.
    pub stale_handles: Vec<String>,
    pub corrupt: Vec<String>,
}

impl Audit {
    /// No duplicates, leaks, orphans, dangling or stale objects, or corruption.
    pub fn is_clean(&self) -> bool {
        self.duplicate_addresses.is_empty()
            && self.overlapping_blocks.is_empty()
            && self.orphan_blocks.is_empty()
            && self.dangling_affinities.is_empty()
            && self.leaked.is_empty()
            && self.unindexed.is_empty()
            && self.stale_handles.is_empty()
            && self.corrupt.is_empty()
    }
}

pub async fn audit<S: IpamStore>(store: &S) -> Result<Audit, IpamError> {
    let mut a = Audit::default();
    let nodes: BTreeSet<String> = store
        .list_nodes()
        .await?
        .into_iter()
        .map(|n| n.name)
        .collect();
    let pods: BTreeSet<(String, String)> = store
        .list_pods()
        .await?
        .into_iter()
        .map(|p| (p.namespace, p.name))
        .collect();
    let mut blocks = Vec::new();
    for obj in store.list::<IPAMBlock>(None).await? {
        match Block::from_spec(&obj.spec) {
            Ok(b) => {
                let want = block_name(&b.cidr());
                if obj.metadata.name.as_deref() != Some(want.as_str()) {
                    a.corrupt.push(format!(
                        "IPAMBlock {:?} holds {}: its name must be {want:?}",
                        obj.metadata.name.as_deref().unwrap_or(""),
                        b.cidr()
                    ));
                }
                blocks.push(b)
            }
            Err(e) => a.corrupt.push(e.to_string()),
        }
    }
    blocks.sort_by_key(|b| b.cidr());
    let affinities: Vec<BlockAffinity> = store.list(None).await?;
    let aff_by_name: HashMap<String, &BlockAffinity> = affinities
        .iter()
        .filter_map(|x| x.metadata.name.clone().map(|n| (n, x)))
        .collect();
    let handles: Vec<IPAMHandle> = store.list(None).await?;
    let index: HashMap<String, &IPAMHandle> = handles
        .iter()
        .filter_map(|h| h.metadata.name.clone().map(|n| (n, h)))
        .collect();

    a.blocks = blocks.len();
    for w in blocks.windows(2) {
        if w[0].cidr().overlaps(&w[1].cidr()) {
            a.overlapping_blocks.push(w[1].cidr());
        }
    }
    let mut seen_ips = BTreeSet::new();
    let mut handles_in_use = BTreeSet::new();
    for b in &blocks {
        let orphan = match b.affinity() {
            None => !b.has_allocations(),
            Some(n) => {
                !nodes.contains(n)
                    || !aff_by_name
                        .get(&affinity_name(n, &b.cidr()))
                        .is_some_and(|x| {
                            x.spec.node == n && x.spec.state == AffinityState::Confirmed
                        })
            }
        };
        if orphan {
            a.orphan_blocks.push(b.cidr());
        }
        for (ip, h) in b.allocations() {
            a.allocations += 1;
            handles_in_use.insert(h.handle.clone());
            if !seen_ips.insert(ip) {
                a.duplicate_addresses.push(ip);
            }
            let pod_gone = match (&h.namespace, &h.pod) {
                (Some(ns), Some(p)) => !pods.contains(&(ns.clone(), p.clone())),
                _ => false,
            };
            if !nodes.contains(&h.node) || pod_gone {
                a.leaked.push((ip, h.handle.clone()));
            }
            if b.affinity() != Some(h.node.as_str()) {
                let listed = index.get(&handle_name(&h.handle)).is_some_and(|x| {
                    x.spec.handle_id == h.handle
                        && x.spec.blocks.contains_key(&b.cidr().to_string())
                });
                if !listed {
                    a.unindexed.push((ip, h.handle.clone()));
                }
            }
        }
    }
    let by_cidr: BTreeMap<Cidr, &Block> = blocks.iter().map(|b| (b.cidr(), b)).collect();
    for x in &affinities {
        let ok = Cidr::parse_strict(&x.spec.cidr)
            .ok()
            .filter(|c| x.metadata.name.as_deref() == Some(affinity_name(&x.spec.node, c).as_str()))
            .and_then(|c| by_cidr.get(&c))
            .is_some_and(|b| b.affinity() == Some(x.spec.node.as_str()));
        if !ok {
            a.dangling_affinities
                .push(x.metadata.name.clone().unwrap_or_default());
        }
    }
    for h in &handles {
        if !handles_in_use.contains(&h.spec.handle_id) {
            a.stale_handles
                .push(h.metadata.name.clone().unwrap_or_default());
        }
    }
    Ok(a)
}
