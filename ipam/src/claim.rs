//! Claiming a block for a node. Three writes, in an order that survives a
//! crash between any two of them:
//!
//! 1. create `BlockAffinity` *pending* (named from node and CIDR, so a
//!    restarted node finds and reuses it);
//! 2. create the `IPAMBlock` with the node's affinity and the first allocation
//!    already inside — creation is atomic and fails if the block exists, so of
//!    two nodes racing for one CIDR exactly one wins, and the loser removes its
//!    pending affinity and tries another CIDR;
//! 3. mark the affinity *confirmed*.
//!
//! A crash after 1 leaves a pending affinity without a block: the next claim
//! by that node adopts it, or the garbage collector removes it after a timeout.
//! A crash after 2 leaves a pending affinity whose block is the node's: the
//! next allocation (or the GC) confirms it.

use crate::block::{Block, Holder, TakeError};
use crate::cas::{Edit, Outcome, modify};
use crate::error::IpamError;
use crate::store::{IpamStore, StoreError};
use margay_api::names::{NODE_LABEL, affinity_name, block_name, fnv1a64, node_label_value};
use margay_api::net::Cidr;
use margay_api::{AffinityState, BlockAffinity, BlockAffinitySpec, IPAMBlock, ResolvedPool};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Attempts at finding an unclaimed block before giving up.
pub const MAX_CLAIM_ATTEMPTS: u32 = 16;

pub(crate) enum Claim {
    /// The block is the node's; `ip` is the first allocation if one was asked
    /// for and there was room.
    Claimed { cidr: Cidr, ip: Option<IpAddr> },
    /// Another node holds the wanted block.
    Lost,
    /// The pool has no block left that nobody holds.
    NoFreeBlock,
}

/// What to put in the new block right away.
pub(crate) struct FirstAllocation {
    pub holder: Holder,
    /// A specific address, or the lowest free one.
    pub ip: Option<IpAddr>,
}

fn labels_for(node: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(NODE_LABEL.to_string(), node_label_value(node))])
}

pub(crate) fn new_block_object(cidr: &Cidr, block: &Block) -> IPAMBlock {
    let mut obj = IPAMBlock::new(&block_name(cidr), block.to_spec());
    if let Some(node) = block.affinity() {
        obj.metadata.labels = Some(labels_for(node));
    }
    obj
}

/// Store `block` into `obj`, keeping the node label in step with the affinity.
pub(crate) fn write_block(obj: &mut IPAMBlock, block: &Block) {
    obj.spec = block.to_spec();
    let labels = obj.metadata.labels.get_or_insert_with(BTreeMap::new);
    match block.affinity() {
        Some(node) => {
            labels.insert(NODE_LABEL.to_string(), node_label_value(node));
        }
        None => {
            labels.remove(NODE_LABEL);
        }
    }
}

/// Claim `want`, or any unclaimed block of `pool`, for `node`.
pub(crate) async fn claim_block<S: IpamStore>(
    store: &S,
    pool: &ResolvedPool,
    node: &str,
    want: Option<Cidr>,
    first: Option<&FirstAllocation>,
) -> Result<Claim, IpamError> {
    let mut excluded = BTreeSet::new();
    for _ in 0..MAX_CLAIM_ATTEMPTS {
        let cidr = match want {
            Some(c) => c,
            None => match find_unclaimed_block(store, pool, node, &excluded).await? {
                Some(c) => c,
                None => return Ok(Claim::NoFreeBlock),
            },
        };

        // 1. Pending affinity.
        let aff_name = affinity_name(node, &cidr);
        let mut aff = BlockAffinity::new(
            &aff_name,
            BlockAffinitySpec {
                node: node.to_string(),
                cidr: cidr.to_string(),
                state: AffinityState::Pending,
            },
        );
        aff.metadata.labels = Some(labels_for(node));
        let aff = match store.create(&aff).await {
            Ok(a) => a,
            Err(StoreError::AlreadyExists { .. }) => {
                // Ours from an earlier attempt (the name holds node and CIDR).
                // If the GC is deleting it, take it back to pending.
                match modify(store, &aff_name, None, |a: &mut BlockAffinity| {
                    if a.spec.state == AffinityState::PendingDeletion {
                        a.spec.state = AffinityState::Pending;
                        Ok(Edit::Write(()))
                    } else {
                        Ok(Edit::Leave(()))
                    }
                })
                .await?
                {
                    Outcome::Written(a, ()) | Outcome::Left(a, ()) => a,
                    Outcome::Missing => continue,
                }
            }
            // A create can also lose a race without the name being taken
            // (a server-side conflict): just try again.
            Err(e) if e.is_race() => continue,
            Err(e) => return Err(e.into()),
        };

        // 2. The block, with the first allocation in it.
        let mut block = Block::new(cidr, Some(node))?;
        let mut ip = None;
        if let Some(f) = first {
            ip = match f.ip {
                Some(want_ip) => match block.take(want_ip, f.holder.clone()) {
                    Ok(()) => Some(want_ip),
                    Err(TakeError::OutsideBlock) => {
                        return Err(IpamError::InvalidRequest(format!(
                            "{want_ip} is not inside block {cidr}"
                        )));
                    }
                    Err(_) => None,
                },
                None => block.allocate(f.holder.clone()),
            };
        }
        match store.create(&new_block_object(&cidr, &block)).await {
            Ok(_) => {}
            Err(StoreError::AlreadyExists { .. }) => {
                let existing: Option<IPAMBlock> = store.get(&block_name(&cidr)).await?;
                let ours = match &existing {
                    Some(b) => b.spec.affine_node() == Some(node),
                    None => false,
                };
                if ours {
                    // Created by an earlier attempt of ours: confirm, and the
                    // caller allocates inside it as in any own block.
                    confirm_affinity(store, &aff_name).await?;
                    return Ok(Claim::Claimed { cidr, ip: None });
                }
                // Somebody else's (or deleted meanwhile): withdraw our claim.
                if let Some(rv) = aff.metadata.resource_version.as_deref() {
                    match store.delete::<BlockAffinity>(&aff_name, rv).await {
                        Ok(()) => {}
                        Err(e) if e.is_race() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                if want.is_some() {
                    return Ok(Claim::Lost);
                }
                excluded.insert(cidr);
                continue;
            }
            // Not created; the pending affinity is ours and is adopted on the retry.
            Err(e) if e.is_race() => continue,
            Err(e) => return Err(e.into()),
        }

        // 3. Confirm.
        confirm_affinity(store, &aff_name).await?;
        return Ok(Claim::Claimed { cidr, ip });
    }
    Err(IpamError::Contention {
        what: format!("claiming a block of IPPool {:?}", pool.name),
        attempts: MAX_CLAIM_ATTEMPTS,
    })
}

/// Mark a pending affinity confirmed (no-op if it already is; error-free if
/// it vanished, since a confirmed block without affinity object is repaired
/// by the GC).
pub(crate) async fn confirm_affinity<S: IpamStore>(store: &S, name: &str) -> Result<(), IpamError> {
    modify(store, name, None, |a: &mut BlockAffinity| {
        if a.spec.state == AffinityState::Pending {
            a.spec.state = AffinityState::Confirmed;
            Ok(Edit::Write(()))
        } else {
            Ok(Edit::Leave(()))
        }
    })
    .await?;
    Ok(())
}

/// A block CIDR of `pool` with no `IPAMBlock`. The search starts at an offset
/// derived from the node name, so nodes claiming at the same moment mostly
/// try different blocks instead of all racing for the first free one.
async fn find_unclaimed_block<S: IpamStore>(
    store: &S,
    pool: &ResolvedPool,
    node: &str,
    excluded: &BTreeSet<Cidr>,
) -> Result<Option<Cidr>, IpamError> {
    let blocks: Vec<IPAMBlock> = store.list(None).await?;
    let used: BTreeSet<Cidr> = blocks
        .iter()
        .filter_map(|b| Cidr::parse_strict(&b.spec.cidr).ok())
        .filter(|c| pool.cidr.contains_cidr(c))
        .collect();
    let count = pool.cidr.subnet_count(pool.block_size);
    if count == 0 {
        return Ok(None);
    }
    let start = u128::from(fnv1a64(node.as_bytes())) % count;
    // Pigeonhole: among used+excluded+1 consecutive candidates one is free,
    // if the pool has that many blocks at all.
    let tries = count.min((used.len() + excluded.len() + 1) as u128);
    for i in 0..tries {
        let index = (start + i) % count;
        if let Some(c) = pool.cidr.subnet(pool.block_size, index)
            && !used.contains(&c)
            && !excluded.contains(&c)
        {
            return Ok(Some(c));
        }
    }
    Ok(None)
}
