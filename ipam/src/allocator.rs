//! Allocation and release of addresses. The decisions are made on objects as
//! read, and every change is a compare-and-swap, so two allocators (on two
//! nodes, or two tasks on one node) can never hand out one address twice.
//!
//! Write cost (see docs/adr/0001-ipam-writes-per-allocation.md):
//! - address from one of the node's blocks with room: **one** write (the block);
//! - a new block: three (affinity pending, block with the address, affinity confirmed);
//! - borrowed from another node's block, or a requested address in one: two
//!   (the `IPAMHandle` index first, then the block);
//! - release: one per block holding the handle's addresses (+1 for an `IPAMHandle`).

use crate::block::{Block, Holder, TakeError};
use crate::cas::{Edit, Outcome, modify};
use crate::claim::{Claim, FirstAllocation, claim_block, confirm_affinity, write_block};
use crate::clock::Clock;
use crate::context::{Pools, load_config};
use crate::error::IpamError;
use crate::store::{IpamStore, NodeInfo, StoreError};
use margay_api::names::{NODE_LABEL, block_name, fnv1a64, handle_name, node_label_value};
use margay_api::net::{Cidr, IpFamily};
use margay_api::resources::ipam::ResolvedIpamConfig;
use margay_api::{AffinityState, BlockAffinity, IPAMBlock, IPAMHandle, IPAMHandleSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

/// What to allocate for one address family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressRequest {
    /// Any free address, from these pools (names or CIDRs) or, if empty, from
    /// any enabled pool that selects the node.
    Auto { pools: Vec<String> },
    /// Exactly this address (it must be inside a pool; disabled pools allowed).
    Specific(IpAddr),
}

impl AddressRequest {
    pub fn any() -> AddressRequest {
        AddressRequest::Auto { pools: Vec::new() }
    }
}

/// One allocation request: a handle, who it is for, and what it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocateRequest {
    /// The container id (or another stable id for non-pod addresses).
    pub handle: String,
    /// The node allocating.
    pub node: String,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub ipv4: Option<AddressRequest>,
    pub ipv6: Option<AddressRequest>,
}

impl AllocateRequest {
    /// A pod address request for any IPv4 address.
    pub fn pod_v4(handle: &str, node: &str, namespace: &str, pod: &str) -> AllocateRequest {
        AllocateRequest {
            handle: handle.to_string(),
            node: node.to_string(),
            namespace: Some(namespace.to_string()),
            pod: Some(pod.to_string()),
            ipv4: Some(AddressRequest::any()),
            ipv6: None,
        }
    }

    fn holder(&self) -> Holder {
        Holder {
            handle: self.handle.clone(),
            node: self.node.clone(),
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
        }
    }

    fn check(&self) -> Result<(), IpamError> {
        let bad = |m: &str| Err(IpamError::InvalidRequest(m.to_string()));
        if self.handle.is_empty() {
            return bad("handle must not be empty");
        }
        if self.node.is_empty() {
            return bad("node must not be empty");
        }
        if self.ipv4.is_none() && self.ipv6.is_none() {
            return bad("ask for at least one of ipv4 and ipv6");
        }
        if let Some(AddressRequest::Specific(ip)) = &self.ipv4
            && !ip.is_ipv4()
        {
            return Err(IpamError::InvalidRequest(format!("ipv4 request for {ip}")));
        }
        if let Some(AddressRequest::Specific(ip)) = &self.ipv6
            && !ip.is_ipv6()
        {
            return Err(IpamError::InvalidRequest(format!("ipv6 request for {ip}")));
        }
        Ok(())
    }
}

/// One allocated address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocatedAddress {
    pub ip: IpAddr,
    pub block: Cidr,
    /// The pool of the block, when it still exists.
    pub pool: Option<String>,
    /// In a block not affine to the node: needs its own /32 (/128) route.
    pub borrowed: bool,
}

/// The addresses of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocation {
    pub ipv4: Option<AllocatedAddress>,
    pub ipv6: Option<AllocatedAddress>,
}

impl Allocation {
    fn set(&mut self, family: IpFamily, a: AllocatedAddress) {
        match family {
            IpFamily::V4 => self.ipv4 = Some(a),
            IpFamily::V6 => self.ipv6 = Some(a),
        }
    }

    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ipv4.iter().chain(self.ipv6.iter()).map(|a| a.ip)
    }
}

/// A node's affinity and its block, as read at the start of an operation.
struct OwnBlock {
    affinity: BlockAffinity,
    cidr: Cidr,
    block: Option<IPAMBlock>,
}

/// How many times an allocation re-reads the node's blocks when concurrent
/// requests changed them under it.
const OWN_BLOCK_ROUNDS: usize = 4;

/// Whether two reads of a node's blocks saw the same blocks at the same versions.
fn same_blocks(a: &[OwnBlock], b: &[OwnBlock]) -> bool {
    let key = |v: &[OwnBlock]| {
        let mut k: Vec<(Cidr, Option<String>)> = v
            .iter()
            .map(|e| {
                let rv = e
                    .block
                    .as_ref()
                    .and_then(|b| b.metadata.resource_version.clone());
                (e.cidr, rv)
            })
            .collect();
        k.sort();
        k
    };
    key(a) == key(b)
}

/// The allocator. Cheap to clone when its store is (e.g. `Arc<S>`).
#[derive(Clone)]
pub struct Allocator<S> {
    store: S,
    clock: Arc<dyn Clock>,
}

impl<S: IpamStore> Allocator<S> {
    pub fn new(store: S, clock: Arc<dyn Clock>) -> Allocator<S> {
        Allocator { store, clock }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Allocate what `req` asks for. Idempotent per handle: if the handle
    /// already holds an address of a family (a retried CNI ADD), that address
    /// is returned and nothing is written. If one family fails, addresses
    /// newly taken for the other are released again.
    pub async fn allocate(&self, req: &AllocateRequest) -> Result<Allocation, IpamError> {
        req.check()?;
        // Everything this decision reads, fetched at once: over a network
        // round trip this is two waits (these, then the node's blocks), not six.
        let (node, pools, config, own, index) = tokio::try_join!(
            async {
                self.store
                    .get_node(&req.node)
                    .await?
                    .ok_or_else(|| IpamError::NodeNotFound(req.node.clone()))
            },
            Pools::load(&self.store),
            load_config(&self.store),
            self.own_blocks(&req.node),
            async {
                Ok::<_, IpamError>(
                    self.store
                        .get::<IPAMHandle>(&handle_name(&req.handle))
                        .await?,
                )
            },
        )?;
        self.finish_interrupted_claims(&req.node, &own).await?;
        let existing = self
            .find_handle(&req.handle, &req.node, &own, index)
            .await?;

        let mut result = Allocation::default();
        let mut taken: Vec<IpAddr> = Vec::new();
        for (family, want) in [(IpFamily::V4, &req.ipv4), (IpFamily::V6, &req.ipv6)] {
            let Some(want) = want else { continue };
            if let Some(ex) = existing.iter().find(|a| IpFamily::of(a.ip) == family) {
                if let AddressRequest::Specific(ip) = want
                    && *ip != ex.ip
                {
                    self.roll_back(&taken).await;
                    return Err(IpamError::HandleHoldsOther {
                        handle: req.handle.clone(),
                        existing: ex.ip,
                        requested: *ip,
                    });
                }
                let mut ex = ex.clone();
                ex.pool = pools.of_block(&ex.block).map(|p| p.name.clone());
                result.set(family, ex);
                continue;
            }
            let got = match want {
                AddressRequest::Auto { pools: wanted } => {
                    self.allocate_auto(req, &node, &pools, &config, &own, family, wanted)
                        .await
                }
                AddressRequest::Specific(ip) => {
                    self.allocate_specific(req, &pools, &config, *ip).await
                }
            };
            match got {
                Ok(a) => {
                    taken.push(a.ip);
                    result.set(family, a);
                }
                Err(e) => {
                    self.roll_back(&taken).await;
                    return Err(e);
                }
            }
        }
        Ok(result)
    }

    /// Confirm pending affinities whose block exists and is the node's: a
    /// claim that was interrupted after creating the block.
    async fn finish_interrupted_claims(
        &self,
        node: &str,
        own: &[OwnBlock],
    ) -> Result<(), IpamError> {
        for e in own {
            if e.affinity.spec.state == AffinityState::Pending
                && e.block.as_ref().and_then(|b| b.spec.affine_node()) == Some(node)
            {
                let name = e.affinity.metadata.name.clone().unwrap_or_default();
                confirm_affinity(&self.store, &name).await?;
            }
        }
        Ok(())
    }

    async fn roll_back(&self, taken: &[IpAddr]) {
        for ip in taken {
            if let Err(e) = self.release_address(*ip).await {
                // The handle stays recorded on the address, so the GC frees it
                // once the pod is gone.
                tracing::warn!(%ip, error = %e, "could not roll back a partial allocation");
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn allocate_auto(
        &self,
        req: &AllocateRequest,
        node: &NodeInfo,
        pools: &Pools,
        config: &ResolvedIpamConfig,
        own: &[OwnBlock],
        family: IpFamily,
        wanted: &[String],
    ) -> Result<AllocatedAddress, IpamError> {
        let candidates = pools.candidates(family, node, wanted)?;
        let pool_of = |c: &Cidr| {
            candidates
                .iter()
                .find(|p| p.cidr.contains_cidr(c) && p.block_size == c.prefix())
                .map(|p| p.name.clone())
        };
        let holder = req.holder();
        let now = self.clock.now();
        let cooldown = cooldown_secs(config);

        // Steps 1 and 2 run again when they find nothing but the node's blocks
        // changed since `own` was read: concurrent requests on this node may
        // have claimed blocks that still have room.
        let mut fresh: Option<Vec<OwnBlock>> = None;
        let mut hint = String::new();
        for round in 0..OWN_BLOCK_ROUNDS {
            let own: &[OwnBlock] = fresh.as_deref().unwrap_or(own);
            hint.clear();
            // 1. The node's own blocks.
            for entry in own {
                if entry.cidr.family() != family
                    || entry.affinity.spec.state == AffinityState::PendingDeletion
                {
                    continue;
                }
                let Some(pool) = pool_of(&entry.cidr) else {
                    continue;
                };
                let Some(obj) = &entry.block else { continue };
                if obj.spec.affine_node() != Some(req.node.as_str()) {
                    continue;
                }
                let name = block_name(&entry.cidr);
                if let Some(ip) = self
                    .allocate_in_block(
                        &name,
                        Some(obj.clone()),
                        &holder,
                        Some(&req.node),
                        now,
                        cooldown,
                    )
                    .await?
                {
                    return Ok(AllocatedAddress {
                        ip,
                        block: entry.cidr,
                        pool: Some(pool),
                        borrowed: false,
                    });
                }
            }

            // 2. A new block.
            // Blocks the node really holds: an interrupted claim (pending affinity,
            // no block) does not count against maxBlocksPerHost.
            let held = own
                .iter()
                .filter(|e| {
                    e.affinity.spec.state != AffinityState::PendingDeletion
                        && e.block.as_ref().and_then(|b| b.spec.affine_node())
                            == Some(req.node.as_str())
                })
                .count();
            if !config.auto_allocate_blocks {
                hint.push_str("; autoAllocateBlocks is false");
            } else if let Some(max) = config.max_blocks_per_host.filter(|&m| held >= m as usize) {
                hint.push_str(&format!("; the node holds maxBlocksPerHost={max} blocks"));
            } else {
                let first = FirstAllocation {
                    holder: holder.clone(),
                    ip: None,
                };
                for pool in &candidates {
                    // A claim can hand back a block of ours that concurrent
                    // allocations on this node (a sibling request that claimed it
                    // at the same moment) have filled already; then claim another.
                    for _ in 0..crate::claim::MAX_CLAIM_ATTEMPTS {
                        match claim_block(&self.store, pool, &req.node, None, Some(&first)).await? {
                            Claim::Claimed { cidr, ip: Some(ip) } => {
                                return Ok(AllocatedAddress {
                                    ip,
                                    block: cidr,
                                    pool: Some(pool.name.clone()),
                                    borrowed: false,
                                });
                            }
                            Claim::Claimed { cidr, ip: None } => {
                                // Adopted a block of ours: left by an interrupted
                                // claim, or just created by a sibling request.
                                let name = block_name(&cidr);
                                if let Some(ip) = self
                                    .allocate_in_block(
                                        &name,
                                        None,
                                        &holder,
                                        Some(&req.node),
                                        now,
                                        cooldown,
                                    )
                                    .await?
                                {
                                    return Ok(AllocatedAddress {
                                        ip,
                                        block: cidr,
                                        pool: Some(pool.name.clone()),
                                        borrowed: false,
                                    });
                                }
                                // Full already: claim another only if the node may
                                // hold one more (siblings' claims count too).
                                if let Some(max) = config.max_blocks_per_host {
                                    let now_held = self
                                        .own_blocks(&req.node)
                                        .await?
                                        .iter()
                                        .filter(|e| {
                                            e.block.as_ref().and_then(|b| b.spec.affine_node())
                                                == Some(req.node.as_str())
                                        })
                                        .count();
                                    if now_held >= max as usize {
                                        hint.push_str(&format!(
                                            "; the node holds maxBlocksPerHost={max} blocks"
                                        ));
                                        break;
                                    }
                                }
                            }
                            Claim::Lost | Claim::NoFreeBlock => break,
                        }
                    }
                }
            }
            if round + 1 == OWN_BLOCK_ROUNDS {
                break;
            }
            let now_own = self.own_blocks(&req.node).await?;
            if same_blocks(own, &now_own) {
                break;
            }
            fresh = Some(now_own);
        }

        // 3. Borrow one address from another node's block.
        if config.strict_affinity {
            hint.push_str("; strictAffinity forbids borrowing from other nodes' blocks");
        } else if let Some(a) = self
            .borrow(req, &candidates, family, &holder, now, cooldown)
            .await?
        {
            return Ok(a);
        }
        Err(IpamError::Exhausted {
            family,
            node: req.node.clone(),
            pools: candidates.iter().map(|p| p.name.clone()).collect(),
            hint,
        })
    }

    async fn borrow(
        &self,
        req: &AllocateRequest,
        candidates: &[&margay_api::ResolvedPool],
        family: IpFamily,
        holder: &Holder,
        now: i64,
        cooldown: i64,
    ) -> Result<Option<AllocatedAddress>, IpamError> {
        let blocks: Vec<IPAMBlock> = self.store.list(None).await?;
        let mut options: Vec<(Cidr, String, IPAMBlock)> = Vec::new();
        for obj in blocks {
            let Ok(mut b) = Block::from_spec(&obj.spec) else {
                continue;
            };
            let cidr = b.cidr();
            if cidr.family() != family || b.affinity() == Some(req.node.as_str()) {
                continue;
            }
            let Some(pool) = candidates
                .iter()
                .find(|p| p.cidr.contains_cidr(&cidr) && p.block_size == cidr.prefix())
            else {
                continue;
            };
            b.expire_cooling(now, cooldown);
            if b.free_count() > 0 {
                options.push((cidr, pool.name.clone(), obj));
            }
        }
        if options.is_empty() {
            return Ok(None);
        }
        // Spread borrowers over the lenders instead of all racing for one block.
        let start = (fnv1a64(req.node.as_bytes()) as usize) % options.len();
        options.rotate_left(start);
        for (cidr, pool, obj) in options {
            self.handle_add(&req.handle, &req.node, &cidr).await?;
            let name = block_name(&cidr);
            match self
                .allocate_in_block(&name, Some(obj), holder, None, now, cooldown)
                .await?
            {
                Some(ip) => {
                    return Ok(Some(AllocatedAddress {
                        ip,
                        block: cidr,
                        pool: Some(pool),
                        borrowed: true,
                    }));
                }
                None => self.handle_remove(&req.handle, &cidr, 1).await?,
            }
        }
        Ok(None)
    }

    async fn allocate_specific(
        &self,
        req: &AllocateRequest,
        pools: &Pools,
        config: &ResolvedIpamConfig,
        ip: IpAddr,
    ) -> Result<AllocatedAddress, IpamError> {
        let pool = pools
            .containing(ip)
            .ok_or(IpamError::AddressNotInPool(ip))?;
        let cidr = pool
            .block_containing(ip)
            .ok_or(IpamError::AddressNotInPool(ip))?;
        let name = block_name(&cidr);
        let holder = req.holder();
        let now = self.clock.now();
        let cooldown = cooldown_secs(config);
        for _ in 0..crate::claim::MAX_CLAIM_ATTEMPTS {
            let Some(obj) = self.store.get::<IPAMBlock>(&name).await? else {
                let first = FirstAllocation {
                    holder: holder.clone(),
                    ip: Some(ip),
                };
                match claim_block(&self.store, pool, &req.node, Some(cidr), Some(&first)).await? {
                    Claim::Claimed { ip: Some(got), .. } => {
                        return Ok(AllocatedAddress {
                            ip: got,
                            block: cidr,
                            pool: Some(pool.name.clone()),
                            borrowed: false,
                        });
                    }
                    // Either way the block exists now: take the address in it.
                    Claim::Claimed { ip: None, .. } | Claim::Lost | Claim::NoFreeBlock => continue,
                }
            };
            let owner = obj.spec.affine_node().map(str::to_string);
            let own = owner.as_deref() == Some(req.node.as_str());
            if !own && config.strict_affinity {
                return Err(IpamError::StrictAffinity {
                    ip,
                    block: cidr.to_string(),
                    owner,
                });
            }
            if !own {
                self.handle_add(&req.handle, &req.node, &cidr).await?;
            }
            let outcome = modify(&self.store, &name, Some(obj), |o: &mut IPAMBlock| {
                let mut b = Block::from_spec(&o.spec)?;
                if (b.affinity() == Some(req.node.as_str())) != own {
                    // Affinity changed under us: start over.
                    return Ok(Edit::Leave(Err(None)));
                }
                b.expire_cooling(now, cooldown);
                match b.take(ip, holder.clone()) {
                    Ok(()) => {
                        write_block(o, &b);
                        Ok(Edit::Write(Ok(())))
                    }
                    Err(TakeError::InUse(h)) if h.handle == req.handle => Ok(Edit::Leave(Ok(()))),
                    Err(TakeError::InUse(h)) => {
                        Ok(Edit::Leave(Err(Some(IpamError::AddressInUse {
                            ip,
                            handle: h.handle,
                        }))))
                    }
                    Err(TakeError::CoolingDown { .. }) => {
                        Ok(Edit::Leave(Err(Some(IpamError::AddressCoolingDown { ip }))))
                    }
                    Err(TakeError::OutsideBlock) => {
                        Ok(Edit::Leave(Err(Some(IpamError::AddressNotInPool(ip)))))
                    }
                }
            })
            .await?;
            let result = match outcome {
                Outcome::Written(_, r) | Outcome::Left(_, r) => r,
                Outcome::Missing => Err(None),
            };
            match result {
                Ok(()) => {
                    return Ok(AllocatedAddress {
                        ip,
                        block: cidr,
                        pool: Some(pool.name.clone()),
                        borrowed: !own,
                    });
                }
                Err(e) => {
                    if !own {
                        self.handle_remove(&req.handle, &cidr, 1).await?;
                    }
                    if let Some(e) = e {
                        return Err(e);
                    }
                }
            }
        }
        Err(IpamError::Contention {
            what: format!("allocating {ip}"),
            attempts: crate::claim::MAX_CLAIM_ATTEMPTS,
        })
    }

    /// Take the lowest free address of block `name` (CAS, re-read on conflict).
    /// With `affine_to`, only while the block is still that node's.
    async fn allocate_in_block(
        &self,
        name: &str,
        initial: Option<IPAMBlock>,
        holder: &Holder,
        affine_to: Option<&str>,
        now: i64,
        cooldown: i64,
    ) -> Result<Option<IpAddr>, IpamError> {
        let outcome = modify(&self.store, name, initial, |o: &mut IPAMBlock| {
            let mut b = Block::from_spec(&o.spec)?;
            if affine_to.is_some() && b.affinity() != affine_to {
                return Ok(Edit::Leave(None));
            }
            b.expire_cooling(now, cooldown);
            match b.allocate(holder.clone()) {
                Some(ip) => {
                    write_block(o, &b);
                    Ok(Edit::Write(Some(ip)))
                }
                None => Ok(Edit::Leave(None)),
            }
        })
        .await?;
        Ok(match outcome {
            Outcome::Written(_, ip) | Outcome::Left(_, ip) => ip,
            Outcome::Missing => None,
        })
    }

    /// Release one address. Idempotent: `Ok(None)` if it was not allocated.
    pub async fn release_address(&self, ip: IpAddr) -> Result<Option<Holder>, IpamError> {
        let config = load_config(&self.store).await?;
        let now = self.clock.now();
        let cooldown = cooldown_secs(&config);
        let Some(cidr) = self.block_of(ip).await? else {
            return Ok(None);
        };
        let outcome = modify(
            &self.store,
            &block_name(&cidr),
            None,
            |o: &mut IPAMBlock| {
                let mut b = Block::from_spec(&o.spec)?;
                b.expire_cooling(now, cooldown);
                let affinity = b.affinity().map(str::to_string);
                match b.release(ip, now, cooldown > 0) {
                    Some(h) => {
                        write_block(o, &b);
                        Ok(Edit::Write(Some((h, affinity))))
                    }
                    None => Ok(Edit::Leave(None)),
                }
            },
        )
        .await?;
        match outcome {
            Outcome::Written(_, Some((holder, affinity))) => {
                if affinity.as_deref() != Some(holder.node.as_str()) {
                    self.handle_remove(&holder.handle, &cidr, 1).await?;
                }
                Ok(Some(holder))
            }
            _ => Ok(None),
        }
    }

    /// Release every address of `handle`. With `node` (the node that
    /// allocated, e.g. on CNI DEL) only that node's blocks and the handle's
    /// index are read; without, every block. Idempotent.
    pub async fn release_handle(
        &self,
        handle: &str,
        node: Option<&str>,
    ) -> Result<Vec<IpAddr>, IpamError> {
        let mut initial: BTreeMap<String, IPAMBlock> = BTreeMap::new();
        match node {
            Some(n) => {
                for e in self.own_blocks(n).await? {
                    if let Some(b) = e.block {
                        initial.insert(block_name(&e.cidr), b);
                    }
                }
            }
            None => {
                for b in self.store.list::<IPAMBlock>(None).await? {
                    if b.spec.allocations.iter().any(|a| a.handle == handle)
                        && let Some(name) = b.metadata.name.clone()
                    {
                        initial.insert(name, b);
                    }
                }
            }
        }
        let names: Vec<String> = initial.keys().cloned().collect();
        self.release_handle_in(handle, &names, initial).await
    }

    /// Release `handle` in the named blocks and in the blocks of its
    /// `IPAMHandle`, then delete that index.
    pub(crate) async fn release_handle_in(
        &self,
        handle: &str,
        blocks: &[String],
        mut initial: BTreeMap<String, IPAMBlock>,
    ) -> Result<Vec<IpAddr>, IpamError> {
        let config = load_config(&self.store).await?;
        let now = self.clock.now();
        let cooldown = cooldown_secs(&config);
        let mut released = Vec::new();
        let mut names: BTreeSet<String> = blocks.iter().cloned().collect();
        let hname = handle_name(handle);
        for _ in 0..crate::cas::MAX_CAS_ATTEMPTS {
            let index: Option<IPAMHandle> = self.store.get(&hname).await?;
            if let Some(h) = &index
                && h.spec.handle_id == handle
            {
                for cidr in h.spec.blocks.keys() {
                    if let Ok(c) = Cidr::parse_strict(cidr) {
                        names.insert(block_name(&c));
                    }
                }
            }
            for name in std::mem::take(&mut names) {
                let outcome = modify(
                    &self.store,
                    &name,
                    initial.remove(&name),
                    |o: &mut IPAMBlock| {
                        let mut b = Block::from_spec(&o.spec)?;
                        b.expire_cooling(now, cooldown);
                        let ips = b.release_handle(handle, now, cooldown > 0);
                        if ips.is_empty() {
                            Ok(Edit::Leave(ips))
                        } else {
                            write_block(o, &b);
                            Ok(Edit::Write(ips))
                        }
                    },
                )
                .await?;
                if let Outcome::Written(_, ips) = outcome {
                    released.extend(ips);
                }
            }
            let Some(h) = index.filter(|h| h.spec.handle_id == handle) else {
                return Ok(released);
            };
            let rv = h.metadata.resource_version.clone().unwrap_or_default();
            match self.store.delete::<IPAMHandle>(&hname, &rv).await {
                Ok(()) | Err(StoreError::NotFound { .. }) => return Ok(released),
                // Changed meanwhile: go round once more with its new blocks.
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention {
            what: format!("releasing handle {handle:?}"),
            attempts: crate::cas::MAX_CAS_ATTEMPTS,
        })
    }

    /// The addresses `handle` holds (for CNI CHECK and tests).
    pub async fn handle_addresses(
        &self,
        handle: &str,
        node: &str,
    ) -> Result<Vec<IpAddr>, IpamError> {
        let (own, index) = tokio::try_join!(self.own_blocks(node), async {
            Ok::<_, IpamError>(self.store.get::<IPAMHandle>(&handle_name(handle)).await?)
        })?;
        Ok(self
            .find_handle(handle, node, &own, index)
            .await?
            .into_iter()
            .map(|a| a.ip)
            .collect())
    }

    /// The blocks `node` holds with a confirmed affinity (what it announces).
    pub async fn affine_blocks(&self, node: &str) -> Result<Vec<Cidr>, IpamError> {
        Ok(self
            .own_blocks(node)
            .await?
            .into_iter()
            .filter(|e| {
                e.affinity.spec.state == AffinityState::Confirmed
                    && e.block.as_ref().and_then(|b| b.spec.affine_node()) == Some(node)
            })
            .map(|e| e.cidr)
            .collect())
    }

    async fn own_blocks(&self, node: &str) -> Result<Vec<OwnBlock>, IpamError> {
        let affs: Vec<BlockAffinity> = self.store.list(Some(&node_label_value(node))).await?;
        let mut wanted = Vec::with_capacity(affs.len());
        for a in affs {
            if a.spec.node != node {
                continue; // a hashed label value shared by another node name
            }
            let Ok(cidr) = Cidr::parse_strict(&a.spec.cidr) else {
                tracing::warn!(affinity = ?a.metadata.name, "ignoring BlockAffinity with a bad CIDR");
                continue;
            };
            wanted.push((a, cidr));
        }
        // The blocks are independent reads: fetch them concurrently.
        let mut out =
            futures::future::try_join_all(wanted.into_iter().map(|(affinity, cidr)| async move {
                let block = self.store.get::<IPAMBlock>(&block_name(&cidr)).await?;
                Ok::<_, IpamError>(OwnBlock {
                    affinity,
                    cidr,
                    block,
                })
            }))
            .await?;
        out.sort_by_key(|e| e.cidr);
        Ok(out)
    }

    /// Where `handle` already holds addresses: the node's own blocks, and the
    /// blocks its `IPAMHandle` index names.
    async fn find_handle(
        &self,
        handle: &str,
        node: &str,
        own: &[OwnBlock],
        index: Option<IPAMHandle>,
    ) -> Result<Vec<AllocatedAddress>, IpamError> {
        let mut found = Vec::new();
        let mut seen = BTreeSet::new();
        for e in own {
            let Some(obj) = &e.block else { continue };
            seen.insert(e.cidr);
            if !obj.spec.allocations.iter().any(|a| a.handle == handle) {
                continue;
            }
            let b = Block::from_spec(&obj.spec)?;
            for ip in b.addresses_of(handle) {
                found.push(AllocatedAddress {
                    ip,
                    block: e.cidr,
                    pool: None,
                    borrowed: b.affinity() != Some(node),
                });
            }
        }
        if let Some(h) = index.filter(|h| h.spec.handle_id == handle) {
            for cidr in h.spec.blocks.keys() {
                let Ok(c) = Cidr::parse_strict(cidr) else {
                    continue;
                };
                if !seen.insert(c) {
                    continue;
                }
                let Some(obj) = self.store.get::<IPAMBlock>(&block_name(&c)).await? else {
                    continue;
                };
                let b = Block::from_spec(&obj.spec)?;
                for ip in b.addresses_of(handle) {
                    found.push(AllocatedAddress {
                        ip,
                        block: c,
                        pool: None,
                        borrowed: b.affinity() != Some(node),
                    });
                }
            }
        }
        Ok(found)
    }

    /// The block that holds `ip`: by its pool's block size, or, for a pool
    /// since deleted, by searching the blocks.
    async fn block_of(&self, ip: IpAddr) -> Result<Option<Cidr>, IpamError> {
        let pools = Pools::load(&self.store).await?;
        if let Some(c) = pools.containing(ip).and_then(|p| p.block_containing(ip)) {
            return Ok(Some(c));
        }
        let blocks: Vec<IPAMBlock> = self.store.list(None).await?;
        Ok(blocks
            .iter()
            .filter_map(|b| Cidr::parse_strict(&b.spec.cidr).ok())
            .find(|c| c.contains(ip)))
    }

    /// Record in `handle`'s index that it holds one more address in `cidr`.
    /// Written before the block, so an address outside the node's own blocks
    /// is always findable by handle.
    async fn handle_add(&self, handle: &str, node: &str, cidr: &Cidr) -> Result<(), IpamError> {
        let name = handle_name(handle);
        let key = cidr.to_string();
        for _ in 0..crate::cas::MAX_CAS_ATTEMPTS {
            let outcome = modify(&self.store, &name, None, |h: &mut IPAMHandle| {
                if h.spec.handle_id != handle {
                    return Err(IpamError::InvalidRequest(format!(
                        "handle {handle:?} collides with handle {:?} on IPAMHandle name {name:?}",
                        h.spec.handle_id
                    )));
                }
                *h.spec.blocks.entry(key.clone()).or_insert(0) += 1;
                Ok(Edit::Write(()))
            })
            .await?;
            if !matches!(outcome, Outcome::Missing) {
                return Ok(());
            }
            let mut obj = IPAMHandle::new(
                &name,
                IPAMHandleSpec {
                    handle_id: handle.to_string(),
                    node: node.to_string(),
                    blocks: BTreeMap::from([(key.clone(), 1)]),
                },
            );
            obj.metadata.labels = Some(BTreeMap::from([(
                NODE_LABEL.to_string(),
                node_label_value(node),
            )]));
            match self.store.create(&obj).await {
                Ok(_) => return Ok(()),
                Err(StoreError::AlreadyExists { .. }) => continue,
                Err(e) if e.is_race() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention {
            what: format!("IPAMHandle {name:?}"),
            attempts: crate::cas::MAX_CAS_ATTEMPTS,
        })
    }

    /// Undo [`Self::handle_add`]; deletes the index when it becomes empty.
    async fn handle_remove(&self, handle: &str, cidr: &Cidr, count: u32) -> Result<(), IpamError> {
        let name = handle_name(handle);
        let key = cidr.to_string();
        let outcome = modify(&self.store, &name, None, |h: &mut IPAMHandle| {
            if h.spec.handle_id != handle {
                return Ok(Edit::Leave(()));
            }
            let Some(n) = h.spec.blocks.get_mut(&key) else {
                return Ok(Edit::Leave(()));
            };
            *n = n.saturating_sub(count);
            if *n == 0 {
                h.spec.blocks.remove(&key);
            }
            Ok(Edit::Write(()))
        })
        .await?;
        if let Outcome::Written(h, ()) | Outcome::Left(h, ()) = outcome
            && h.spec.handle_id == handle
            && h.spec.blocks.is_empty()
            && let Some(rv) = h.metadata.resource_version.as_deref()
        {
            match self.store.delete::<IPAMHandle>(&name, rv).await {
                Ok(()) => {}
                Err(e) if e.is_race() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

pub(crate) fn cooldown_secs(config: &ResolvedIpamConfig) -> i64 {
    config.released_address_cooldown.as_secs() as i64
}
