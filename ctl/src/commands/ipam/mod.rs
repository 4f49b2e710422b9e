//! `ipam show | check | release | configure`.

pub mod check;
pub mod configure;
pub mod release;
pub mod show;

use crate::cli::IpamCommand;
use crate::client::{ApiClient, api_error};
use kube::api::{Api, ListParams};
use margay_api::{IPAMBlock, IPPool, ResolvedPool};
use margay_ipam::Block;

pub async fn run(c: &ApiClient, cmd: IpamCommand) -> anyhow::Result<u8> {
    match cmd {
        IpamCommand::Show(a) => show::run(c, &a).await,
        IpamCommand::Check(a) => check::run(c, &a).await,
        IpamCommand::Release(a) => release::run(c, &a).await,
        IpamCommand::Configure(a) => configure::run(c, &a).await,
    }
}

/// Pools and blocks as stored, decoded.
pub struct IpamState {
    /// Valid pools, by name.
    pub pools: Vec<ResolvedPool>,
    /// Pools that fail validation: `(name, problem)`.
    pub bad_pools: Vec<(String, String)>,
    /// Decodable blocks, by CIDR.
    pub blocks: Vec<Block>,
    /// Blocks that do not decode.
    pub corrupt: Vec<String>,
}

pub async fn load(c: &ApiClient) -> anyhow::Result<IpamState> {
    let pools: Api<IPPool> = Api::all(c.client.clone());
    let blocks: Api<IPAMBlock> = Api::all(c.client.clone());
    let raw_pools = pools
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error(&c.url, "listing IPPools", e))?;
    let raw_blocks = blocks
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error(&c.url, "listing IPAMBlocks", e))?;
    let mut state = IpamState {
        pools: Vec::new(),
        bad_pools: Vec::new(),
        blocks: Vec::new(),
        corrupt: Vec::new(),
    };
    for p in &raw_pools.items {
        match ResolvedPool::from_pool(p) {
            Ok(r) => state.pools.push(r),
            Err(e) => state
                .bad_pools
                .push((p.metadata.name.clone().unwrap_or_default(), e.to_string())),
        }
    }
    state.pools.sort_by(|a, b| a.name.cmp(&b.name));
    for b in &raw_blocks.items {
        match Block::from_spec(&b.spec) {
            Ok(block) => state.blocks.push(block),
            Err(e) => state.corrupt.push(e.to_string()),
        }
    }
    state.blocks.sort_by_key(|b| b.cidr());
    Ok(state)
}

/// `n (p%)` as calicoctl prints counts.
pub fn with_percent(n: u128, total: u128) -> String {
    if total == 0 {
        return format!("{n}");
    }
    let pct = (n as f64) * 100.0 / (total as f64);
    format!("{n} ({pct:.0}%)")
}
