//! What an IPAM operation decides from besides blocks: the pools (validated,
//! defaults applied), the cluster IPAM configuration and the node's labels.

use crate::error::IpamError;
use crate::store::{IpamStore, NodeInfo};
use margay_api::net::{Cidr, IpFamily};
use margay_api::resources::ipam::ResolvedIpamConfig;
use margay_api::resources::ippool::validate_ip_pools;
use margay_api::{IPAMConfiguration, IPPool, ResolvedPool};
use std::net::IpAddr;

/// Name of the `IPAMConfiguration` object that is read.
pub const IPAM_CONFIG_NAME: &str = "default";

pub(crate) struct Pools {
    /// Valid pools, sorted by name.
    pub pools: Vec<ResolvedPool>,
}

impl Pools {
    /// Read the pools; pools that fail validation (or overlap another) are
    /// skipped with a warning, never used.
    pub async fn load<S: IpamStore>(store: &S) -> Result<Pools, IpamError> {
        let raw: Vec<IPPool> = store.list(None).await?;
        let mut bad = std::collections::BTreeSet::new();
        if let Err(errs) = validate_ip_pools(&raw) {
            for e in errs {
                tracing::warn!(error = %e, "ignoring invalid IPPool");
                bad.insert(e.name);
            }
        }
        let mut pools: Vec<ResolvedPool> = raw
            .iter()
            .filter(|p| !bad.contains(p.metadata.name.as_deref().unwrap_or_default()))
            .filter_map(|p| ResolvedPool::from_pool(p).ok())
            .collect();
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Pools { pools })
    }

    pub fn by_name_or_cidr(&self, key: &str) -> Option<&ResolvedPool> {
        self.pools
            .iter()
            .find(|p| p.name == key || p.cidr.to_string() == key)
    }

    pub fn containing(&self, ip: IpAddr) -> Option<&ResolvedPool> {
        self.pools.iter().find(|p| p.cidr.contains(ip))
    }

    /// The pool a block belongs to (block inside pool, same block size).
    pub fn of_block(&self, block: &Cidr) -> Option<&ResolvedPool> {
        self.pools
            .iter()
            .find(|p| p.cidr.contains_cidr(block) && p.block_size == block.prefix())
    }

    /// Pools `node` may get new addresses of `family` from: enabled, selecting
    /// the node; or exactly the `requested` ones (by name or CIDR), which must
    /// all qualify.
    pub fn candidates(
        &self,
        family: IpFamily,
        node: &NodeInfo,
        requested: &[String],
    ) -> Result<Vec<&ResolvedPool>, IpamError> {
        if requested.is_empty() {
            let found: Vec<&ResolvedPool> = self
                .pools
                .iter()
                .filter(|p| {
                    p.family() == family && !p.disabled && p.node_selector.matches(&node.labels)
                })
                .collect();
            if found.is_empty() {
                return Err(IpamError::NoPool {
                    family,
                    node: node.name.clone(),
                });
            }
            return Ok(found);
        }
        let mut out = Vec::new();
        for key in requested {
            let pool = self
                .by_name_or_cidr(key)
                .ok_or_else(|| IpamError::PoolNotFound(key.clone()))?;
            if pool.family() != family {
                return Err(IpamError::PoolWrongFamily {
                    pool: pool.name.clone(),
                    actual: pool.family(),
                    wanted: family,
                });
            }
            if pool.disabled {
                return Err(IpamError::PoolDisabled {
                    pool: pool.name.clone(),
                });
            }
            if !pool.node_selector.matches(&node.labels) {
                return Err(IpamError::PoolNotForNode {
                    pool: pool.name.clone(),
                    node: node.name.clone(),
                    selector: pool.node_selector.to_string(),
                });
            }
            out.push(pool);
        }
        Ok(out)
    }

    /// Whether `node` may still get new addresses from `block`.
    pub fn usable_by(&self, block: &Cidr, node: &NodeInfo) -> bool {
        self.of_block(block)
            .is_some_and(|p| !p.disabled && p.node_selector.matches(&node.labels))
    }
}

pub(crate) async fn load_config<S: IpamStore>(store: &S) -> Result<ResolvedIpamConfig, IpamError> {
    let cfg: Option<IPAMConfiguration> = store.get(IPAM_CONFIG_NAME).await?;
    Ok(cfg
        .map(|c| ResolvedIpamConfig::from_spec(&c.spec))
        .unwrap_or_default())
}
