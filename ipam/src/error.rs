//! Errors of allocation, release and garbage collection. Those a user can
//! cause name the pool, node, address or handle involved.

use crate::block::BlockError;
use crate::store::StoreError;
use margay_api::net::IpFamily;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Corrupt(#[from] BlockError),
    #[error("invalid IPAM request: {0}")]
    InvalidRequest(String),
    #[error("node {0:?} does not exist")]
    NodeNotFound(String),
    #[error("no enabled {family} IPPool selects node {node:?}")]
    NoPool { family: IpFamily, node: String },
    #[error("IPPool {0:?} does not exist (or is invalid)")]
    PoolNotFound(String),
    #[error("IPPool {pool:?} is disabled: no new addresses are handed out from it")]
    PoolDisabled { pool: String },
    #[error("IPPool {pool:?} does not select node {node:?} (nodeSelector {selector})")]
    PoolNotForNode {
        pool: String,
        node: String,
        selector: String,
    },
    #[error("IPPool {pool:?} is an {actual} pool; the request wants {wanted}")]
    PoolWrongFamily {
        pool: String,
        actual: IpFamily,
        wanted: IpFamily,
    },
    #[error("no free {family} address for node {node:?} in IPPools {pools:?}{hint}")]
    Exhausted {
        family: IpFamily,
        node: String,
        pools: Vec<String>,
        /// Why borrowing or claiming was not tried, if it was not.
        hint: String,
    },
    #[error("{0} is not in any IPPool")]
    AddressNotInPool(IpAddr),
    #[error("{ip} is already allocated (handle {handle:?})")]
    AddressInUse { ip: IpAddr, handle: String },
    #[error(
        "{ip} was released recently and is cooling down (IPAMConfiguration releasedAddressCooldown)"
    )]
    AddressCoolingDown { ip: IpAddr },
    #[error(
        "{ip} lies in block {block} of node {owner:?}; strictAffinity forbids using another node's block"
    )]
    StrictAffinity {
        ip: IpAddr,
        block: String,
        owner: Option<String>,
    },
    #[error("handle {handle:?} already holds {existing}; cannot also take {requested}")]
    HandleHoldsOther {
        handle: String,
        existing: IpAddr,
        requested: IpAddr,
    },
    #[error("gave up on {what} after {attempts} attempts lost to concurrent writers")]
    Contention { what: String, attempts: u32 },
}
