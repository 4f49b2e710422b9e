//! Garbage collection of IPAM state, one pass at a time:
//!
//! - **leaked allocations**: an address whose node is gone, or whose pod is
//!   gone / moved to another node / reports other IPs. It must look leaked
//!   for the whole `leakGracePeriod`, is re-checked against fresh reads of the
//!   node and pod just before release, and all addresses of its handle are
//!   released together (and only if all look leaked);
//! - **empty blocks**: released (block deleted, affinity removed) when seen
//!   empty and unchanged (same `resourceVersion`) on two consecutive passes,
//!   and only if the node is gone, the pool no longer serves the node, or the
//!   node has another block with room (a live node keeps one block);
//! - **affinities** pending or pointing at a block that is not the node's,
//!   after a timeout; pending ones whose block is the node's are confirmed;
//! - **blocks of deleted nodes** still holding others' borrowed addresses
//!   lose their affinity (the block stays until empty);
//! - **handle indexes** naming no allocation, after a timeout.
//!
//! The collector keeps what it has seen between passes in memory; a restarted
//! collector simply starts its grace periods again (it errs on the side of
//! keeping addresses).

use crate::allocator::Allocator;
use crate::block::{Block, Holder};
use crate::cas::{Edit, Outcome, modify};
use crate::claim::{confirm_affinity, write_block};
use crate::clock::Clock;
use crate::context::{Pools, load_config};
use crate::error::IpamError;
use crate::store::{IpamStore, NodeInfo, PodInfo};
use margay_api::names::{affinity_name, block_name, handle_name};
use margay_api::net::Cidr;
use margay_api::{AffinityState, BlockAffinity, IPAMBlock, IPAMHandle};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

/// Timeouts of the collector's own (not user-configured) checks.
#[derive(Debug, Clone)]
pub struct GcSettings {
    /// How long an affinity may stay pending without its block, or point at a
    /// block that is not its node's, before it is deleted. A claim takes three
    /// writes, so this only needs to outlast a slow API server.
    pub stale_affinity_timeout_secs: i64,
    /// How long an `IPAMHandle` may name no allocation before it is deleted
    /// (it is written just before the block it indexes).
    pub stale_handle_timeout_secs: i64,
}

impl Default for GcSettings {
    fn default() -> Self {
        GcSettings {
            stale_affinity_timeout_secs: 60,
            stale_handle_timeout_secs: 60,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Handles released as leaked, with their addresses.
    pub leaks_released: Vec<(String, Vec<IpAddr>)>,
    /// Handles that look leaked but are still inside their grace period.
    pub leak_suspects: usize,
    pub blocks_released: Vec<Cidr>,
    /// Blocks of deleted nodes that lost their affinity (others still borrow).
    pub blocks_orphaned: Vec<Cidr>,
    pub affinities_deleted: Vec<String>,
    pub affinities_confirmed: Vec<String>,
    pub handles_deleted: Vec<String>,
    /// Objects skipped this pass (corrupt, or a write failed); retried next pass.
    pub problems: Vec<String>,
}

impl GcReport {
    /// Whether the pass changed anything.
    pub fn did_work(&self) -> bool {
        !(self.leaks_released.is_empty()
            && self.blocks_released.is_empty()
            && self.blocks_orphaned.is_empty()
            && self.affinities_deleted.is_empty()
            && self.affinities_confirmed.is_empty()
            && self.handles_deleted.is_empty())
    }
}

#[derive(Default)]
struct Memory {
    pass: u64,
    /// handle -> first time it looked leaked.
    leak_suspects: HashMap<String, i64>,
    /// block name -> (pass it was seen empty, resourceVersion then).
    empty_seen: HashMap<String, (u64, String)>,
    /// affinity name -> (first time stale, resourceVersion then).
    stale_affinities: HashMap<String, (i64, String)>,
    /// handle object name -> (first time stale, resourceVersion then).
    stale_handles: HashMap<String, (i64, String)>,
}

/// One allocation as seen by the collector.
struct Seen {
    block: String,
    ip: IpAddr,
    holder: Holder,
}

pub struct GarbageCollector<S> {
    allocator: Allocator<S>,
    clock: Arc<dyn Clock>,
    settings: GcSettings,
    memory: Memory,
}

impl<S: IpamStore> GarbageCollector<S> {
    pub fn new(store: S, clock: Arc<dyn Clock>, settings: GcSettings) -> GarbageCollector<S> {
        GarbageCollector {
            allocator: Allocator::new(store, clock.clone()),
            clock,
            settings,
            memory: Memory::default(),
        }
    }

    fn store(&self) -> &S {
        self.allocator.store()
    }

    /// Run one pass. Errors reading the state abort the pass; errors on single
    /// objects are reported and retried next pass.
    pub async fn run_pass(&mut self) -> Result<GcReport, IpamError> {
        self.memory.pass += 1;
        let now = self.clock.now();
        let config = load_config(self.store()).await?;
        let pools = Pools::load(self.store()).await?;
        let nodes: BTreeMap<String, NodeInfo> = self
            .store()
            .list_nodes()
            .await?
            .into_iter()
            .map(|n| (n.name.clone(), n))
            .collect();
        let pods: HashMap<(String, String), PodInfo> = self
            .store()
            .list_pods()
            .await?
            .into_iter()
            .map(|p| ((p.namespace.clone(), p.name.clone()), p))
            .collect();
        let mut report = GcReport::default();
        let mut blocks: BTreeMap<String, (IPAMBlock, Block)> = BTreeMap::new();
        for obj in self.store().list::<IPAMBlock>(None).await? {
            let name = obj.metadata.name.clone().unwrap_or_default();
            match Block::from_spec(&obj.spec) {
                Ok(b) => {
                    blocks.insert(name, (obj, b));
                }
                Err(e) => report.problems.push(e.to_string()),
            }
        }
        let affinities: Vec<BlockAffinity> = self.store().list(None).await?;
        let handles: Vec<IPAMHandle> = self.store().list(None).await?;

        let mut by_handle: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
        for (name, (_, b)) in &blocks {
            for (ip, h) in b.allocations() {
                by_handle.entry(h.handle.clone()).or_default().push(Seen {
                    block: name.clone(),
                    ip,
                    holder: h.clone(),
                });
            }
        }

        self.collect_leaks(
            &by_handle,
            &nodes,
            &pods,
            config.leak_grace_period.as_secs() as i64,
            now,
            &mut report,
        )
        .await;
        // Cooling entries that have run out no longer keep a block alive.
        let cooldown = crate::allocator::cooldown_secs(&config);
        for (_, b) in blocks.values_mut() {
            b.expire_cooling(now, cooldown);
        }
        let touched = self
            .collect_empty_blocks(&blocks, &affinities, &nodes, &pools, &mut report)
            .await;
        self.collect_affinities(&blocks, &affinities, &nodes, &touched, now, &mut report)
            .await;
        self.collect_handles(&by_handle, &handles, now, &mut report)
            .await;
        Ok(report)
    }

    async fn collect_leaks(
        &mut self,
        by_handle: &BTreeMap<String, Vec<Seen>>,
        nodes: &BTreeMap<String, NodeInfo>,
        pods: &HashMap<(String, String), PodInfo>,
        grace: i64,
        now: i64,
        report: &mut GcReport,
    ) {
        self.memory
            .leak_suspects
            .retain(|h, _| by_handle.contains_key(h));
        for (handle, seen) in by_handle {
            let leaked = seen.iter().all(|s| {
                looks_leaked(
                    s,
                    nodes.contains_key(&s.holder.node),
                    pod_of(&s.holder).and_then(|k| pods.get(&k)),
                )
            });
            if !leaked {
                self.memory.leak_suspects.remove(handle);
                continue;
            }
            let first = *self
                .memory
                .leak_suspects
                .entry(handle.clone())
                .or_insert(now);
            if now - first < grace {
                report.leak_suspects += 1;
                continue;
            }
            // Re-check every address against fresh reads before releasing.
            match self.still_leaked(seen).await {
                Ok(true) => {}
                Ok(false) => {
                    self.memory.leak_suspects.remove(handle);
                    continue;
                }
                Err(e) => {
                    report
                        .problems
                        .push(format!("re-checking handle {handle:?}: {e}"));
                    continue;
                }
            }
            let names: Vec<String> = seen
                .iter()
                .map(|s| s.block.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            match self
                .allocator
                .release_handle_in(handle, &names, BTreeMap::new())
                .await
            {
                Ok(ips) => {
                    tracing::info!(%handle, ?ips, "released leaked addresses");
                    report.leaks_released.push((handle.clone(), ips));
                    self.memory.leak_suspects.remove(handle);
                }
                Err(e) => report
                    .problems
                    .push(format!("releasing handle {handle:?}: {e}")),
            }
        }
    }

    async fn still_leaked(&self, seen: &[Seen]) -> Result<bool, IpamError> {
        for s in seen {
            let node_exists = self.store().get_node(&s.holder.node).await?.is_some();
            let pod = match pod_of(&s.holder) {
                Some((ns, name)) => self.store().get_pod(&ns, &name).await?,
                None => None,
            };
            if !looks_leaked(s, node_exists, pod.as_ref()) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Returns the names of blocks and affinities it wrote.
    async fn collect_empty_blocks(
        &mut self,
        blocks: &BTreeMap<String, (IPAMBlock, Block)>,
        affinities: &[BlockAffinity],
        nodes: &BTreeMap<String, NodeInfo>,
        pools: &Pools,
        report: &mut GcReport,
    ) -> BTreeSet<String> {
        let mut touched = BTreeSet::new();
        let pass = self.memory.pass;
        let affinity_by_name: HashMap<&str, &BlockAffinity> = affinities
            .iter()
            .filter_map(|a| a.metadata.name.as_deref().map(|n| (n, a)))
            .collect();
        let mut seen_now = HashMap::new();
        for (name, (obj, b)) in blocks {
            if !b.is_empty() {
                continue;
            }
            let release = match b.affinity() {
                None => true,
                Some(n) => match nodes.get(n) {
                    None => true,
                    Some(node) if !pools.usable_by(&b.cidr(), node) => true,
                    Some(node) => has_spare_room(blocks, b, node, pools),
                },
            };
            if !release {
                continue;
            }
            let rv = obj.metadata.resource_version.clone().unwrap_or_default();
            let twice = matches!(
                self.memory.empty_seen.get(name),
                Some((p, r)) if *p + 1 == pass && *r == rv
            );
            if !twice {
                seen_now.insert(name.clone(), (pass, rv));
                continue;
            }
            let aff = b
                .affinity()
                .map(|n| affinity_name(n, &b.cidr()))
                .and_then(|an| affinity_by_name.get(an.as_str()).copied().cloned());
            if let Some(a) = &aff {
                touched.insert(a.metadata.name.clone().unwrap_or_default());
            }
            touched.insert(name.clone());
            match self.release_empty_block(name, &rv, aff).await {
                Ok(true) => report.blocks_released.push(b.cidr()),
                Ok(false) => {}
                Err(e) => report
                    .problems
                    .push(format!("releasing block {}: {e}", b.cidr())),
            }
        }
        self.memory.empty_seen = seen_now;
        touched
    }

    /// Affinity to pendingDeletion, delete the block if still unchanged,
    /// delete the affinity; if the block changed meanwhile, put the affinity
    /// back. Returns whether the block went.
    async fn release_empty_block(
        &self,
        name: &str,
        rv: &str,
        affinity: Option<BlockAffinity>,
    ) -> Result<bool, IpamError> {
        let mut aff = None;
        if let Some(a) = affinity {
            let aname = a.metadata.name.clone().unwrap_or_default();
            match modify(self.store(), &aname, Some(a), |a: &mut BlockAffinity| {
                a.spec.state = AffinityState::PendingDeletion;
                Ok(Edit::Write(()))
            })
            .await?
            {
                Outcome::Written(a, ()) | Outcome::Left(a, ()) => aff = Some(a),
                Outcome::Missing => {}
            }
        }
        match self.store().delete::<IPAMBlock>(name, rv).await {
            Ok(()) => {}
            Err(e) if e.is_race() => {
                // Somebody allocated (or it went already): undo the marking.
                if let Some(a) = aff {
                    let aname = a.metadata.name.clone().unwrap_or_default();
                    modify(self.store(), &aname, None, |a: &mut BlockAffinity| {
                        if a.spec.state == AffinityState::PendingDeletion {
                            a.spec.state = AffinityState::Confirmed;
                            Ok(Edit::Write(()))
                        } else {
                            Ok(Edit::Leave(()))
                        }
                    })
                    .await?;
                }
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(a) = aff {
            let aname = a.metadata.name.clone().unwrap_or_default();
            let arv = a.metadata.resource_version.clone().unwrap_or_default();
            match self.store().delete::<BlockAffinity>(&aname, &arv).await {
                Ok(()) => {}
                // Re-claimed meanwhile (claim_block revives pendingDeletion); leave it.
                Err(e) if e.is_race() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    async fn collect_affinities(
        &mut self,
        blocks: &BTreeMap<String, (IPAMBlock, Block)>,
        affinities: &[BlockAffinity],
        nodes: &BTreeMap<String, NodeInfo>,
        touched: &BTreeSet<String>,
        now: i64,
        report: &mut GcReport,
    ) {
        let mut still_stale = HashMap::new();
        for a in affinities {
            let Some(name) = a.metadata.name.clone() else {
                continue;
            };
            if touched.contains(&name) {
                continue;
            }
            let rv = a.metadata.resource_version.clone().unwrap_or_default();
            let block = Cidr::parse_strict(&a.spec.cidr)
                .ok()
                .and_then(|c| blocks.get(&block_name(&c)));
            let ours = block.is_some_and(|(_, b)| b.affinity() == Some(a.spec.node.as_str()));
            let node_alive = nodes.contains_key(&a.spec.node);

            if ours && !node_alive {
                // A deleted node's block that others still borrow from (an
                // empty one is released above): detach it once the node's own
                // addresses are gone, so nothing is left pointing at the node.
                if let Some((obj, b)) = block
                    && b.has_allocations()
                    && !b.allocations().any(|(_, h)| h.node == a.spec.node)
                {
                    match self.detach_block(obj, &a.spec.node, &name, &rv).await {
                        Ok(true) => report.blocks_orphaned.push(b.cidr()),
                        Ok(false) => {}
                        Err(e) => report
                            .problems
                            .push(format!("detaching block {}: {e}", b.cidr())),
                    }
                }
                continue;
            }
            if ours {
                match a.spec.state {
                    AffinityState::Confirmed => {}
                    AffinityState::Pending => match confirm_affinity(self.store(), &name).await {
                        Ok(()) => report.affinities_confirmed.push(name.clone()),
                        Err(e) => report.problems.push(format!("confirming {name}: {e}")),
                    },
                    // Left by a release that lost its race after marking: once
                    // stale long enough, the block is the node's again.
                    AffinityState::PendingDeletion => {
                        if self.stale_for(&name, &rv, now, &mut still_stale)
                            >= self.settings.stale_affinity_timeout_secs
                        {
                            let r = modify(self.store(), &name, None, |a: &mut BlockAffinity| {
                                if a.spec.state == AffinityState::PendingDeletion {
                                    a.spec.state = AffinityState::Confirmed;
                                    Ok(Edit::Write(()))
                                } else {
                                    Ok(Edit::Leave(()))
                                }
                            })
                            .await;
                            match r {
                                Ok(_) => report.affinities_confirmed.push(name.clone()),
                                Err(e) => report.problems.push(format!("restoring {name}: {e}")),
                            }
                        }
                    }
                }
                continue;
            }
            // Not backed by a block of this node.
            if self.stale_for(&name, &rv, now, &mut still_stale)
                < self.settings.stale_affinity_timeout_secs
            {
                continue;
            }
            match self.store().delete::<BlockAffinity>(&name, &rv).await {
                Ok(()) => report.affinities_deleted.push(name.clone()),
                Err(e) if e.is_race() => {}
                Err(e) => report.problems.push(format!("deleting {name}: {e}")),
            }
        }
        self.memory.stale_affinities = still_stale;
    }

    /// Seconds `name` has been stale at `rv` (0 when first seen or changed).
    fn stale_for(
        &self,
        name: &str,
        rv: &str,
        now: i64,
        next: &mut HashMap<String, (i64, String)>,
    ) -> i64 {
        let first = match self.memory.stale_affinities.get(name) {
            Some((t, r)) if r == rv => *t,
            _ => now,
        };
        next.insert(name.to_string(), (first, rv.to_string()));
        now - first
    }

    /// Clear the affinity of `node`'s block (CAS) and delete the affinity.
    async fn detach_block(
        &self,
        obj: &IPAMBlock,
        node: &str,
        affinity: &str,
        affinity_rv: &str,
    ) -> Result<bool, IpamError> {
        let name = obj.metadata.name.clone().unwrap_or_default();
        let outcome = modify(
            self.store(),
            &name,
            Some(obj.clone()),
            |o: &mut IPAMBlock| {
                let mut b = Block::from_spec(&o.spec)?;
                if b.affinity() != Some(node) || b.allocations().any(|(_, h)| h.node == node) {
                    return Ok(Edit::Leave(false));
                }
                b.set_affinity(None);
                write_block(o, &b);
                Ok(Edit::Write(true))
            },
        )
        .await?;
        let detached = matches!(outcome, Outcome::Written(_, true));
        if detached {
            match self
                .store()
                .delete::<BlockAffinity>(affinity, affinity_rv)
                .await
            {
                Ok(()) => {}
                Err(e) if e.is_race() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(detached)
    }

    async fn collect_handles(
        &mut self,
        by_handle: &BTreeMap<String, Vec<Seen>>,
        handles: &[IPAMHandle],
        now: i64,
        report: &mut GcReport,
    ) {
        let mut still_stale = HashMap::new();
        for h in handles {
            let Some(name) = h.metadata.name.clone() else {
                continue;
            };
            if by_handle.contains_key(&h.spec.handle_id) && name == handle_name(&h.spec.handle_id) {
                continue;
            }
            let rv = h.metadata.resource_version.clone().unwrap_or_default();
            let first = match self.memory.stale_handles.get(&name) {
                Some((t, r)) if *r == rv => *t,
                _ => now,
            };
            still_stale.insert(name.clone(), (first, rv.clone()));
            if now - first < self.settings.stale_handle_timeout_secs {
                continue;
            }
            match self.store().delete::<IPAMHandle>(&name, &rv).await {
                Ok(()) => report.handles_deleted.push(name.clone()),
                Err(e) if e.is_race() => {}
                Err(e) => report
                    .problems
                    .push(format!("deleting IPAMHandle {name}: {e}")),
            }
        }
        self.memory.stale_handles = still_stale;
    }
}

fn pod_of(h: &Holder) -> Option<(String, String)> {
    match (&h.namespace, &h.pod) {
        (Some(ns), Some(p)) => Some((ns.clone(), p.clone())),
        _ => None,
    }
}

/// Whether an allocation looks leaked: its node is gone; or it is a pod's
/// and the pod is gone, runs on another node, or reports IPs not including
/// this one. A pod that has not reported IPs yet keeps its address (the
/// kubelet writes status after CNI ADD returns). Non-pod addresses (tunnel
/// addresses) live as long as their node.
fn looks_leaked(s: &Seen, node_exists: bool, pod: Option<&PodInfo>) -> bool {
    if !node_exists {
        return true;
    }
    if pod_of(&s.holder).is_none() {
        return false;
    }
    match pod {
        None => true,
        Some(p) => {
            p.node.as_deref().is_some_and(|n| n != s.holder.node)
                || (!p.ips.is_empty() && !p.ips.contains(&s.ip))
        }
    }
}

/// Whether `node` has, besides the empty block `b`, a block of the same
/// family it can allocate from with room — a non-empty one, or an empty one
/// ordered before `b` (so of several empty blocks the first is kept).
fn has_spare_room(
    blocks: &BTreeMap<String, (IPAMBlock, Block)>,
    b: &Block,
    node: &NodeInfo,
    pools: &Pools,
) -> bool {
    blocks.values().any(|(_, other)| {
        other.cidr() != b.cidr()
            && other.affinity() == Some(node.name.as_str())
            && other.cidr().family() == b.cidr().family()
            && pools.usable_by(&other.cidr(), node)
            && other.free_count() > 0
            && (other.has_allocations() || other.cidr() < b.cidr())
    })
}
