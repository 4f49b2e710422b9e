//! `ipam show`: per pool (and per block) total, in-use and free addresses,
//! with the block's affinity, in calicoctl's boxed layout.

use super::{IpamState, load, with_percent};
use crate::cli::{IpamShowArgs, OutputFormat};
use crate::client::{ApiClient, api_error};
use crate::exit;
use crate::output::{self, Align};
use kube::api::Api;
use margay_api::IPAMConfiguration;
use margay_api::resources::ipam::ResolvedIpamConfig;
use serde::Serialize;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub pools: Vec<PoolUsage>,
    /// With --node: addresses the node holds in other nodes' blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub borrowed: Option<Vec<Borrowed>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configuration: Option<Configuration>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUsage {
    pub name: String,
    pub cidr: String,
    pub total: u128,
    pub in_use: u128,
    pub free: u128,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks: Option<Vec<BlockUsage>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockUsage {
    pub cidr: String,
    /// The node holding the block, if any.
    pub affinity: Option<String>,
    pub total: u128,
    pub in_use: u128,
    pub free: u128,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Borrowed {
    pub ip: String,
    pub block: String,
    pub block_affinity: Option<String>,
    pub handle: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Configuration {
    pub strict_affinity: bool,
    /// 0: no limit.
    pub max_blocks_per_host: u32,
    pub auto_allocate_blocks: bool,
}

/// Works the figures out from the stored state.
pub fn usage(state: &IpamState, a: &IpamShowArgs) -> Usage {
    let show_blocks = a.show_blocks || a.node.is_some();
    let pools = state
        .pools
        .iter()
        .map(|p| {
            let blocks: Vec<&margay_ipam::Block> = state
                .blocks
                .iter()
                .filter(|b| p.cidr.contains_cidr(&b.cidr()))
                .collect();
            let in_use: u128 = blocks.iter().map(|b| b.in_use() as u128).sum();
            let total = p.cidr.size();
            PoolUsage {
                name: p.name.clone(),
                cidr: p.cidr.to_string(),
                total,
                in_use,
                free: total.saturating_sub(in_use),
                blocks: show_blocks.then(|| {
                    blocks
                        .iter()
                        .filter(|b| a.node.is_none() || b.affinity() == a.node.as_deref())
                        .map(|b| {
                            let total = b.cidr().size();
                            let used = b.in_use() as u128;
                            BlockUsage {
                                cidr: b.cidr().to_string(),
                                affinity: b.affinity().map(str::to_string),
                                total,
                                in_use: used,
                                free: total.saturating_sub(used),
                            }
                        })
                        .collect()
                }),
            }
        })
        .collect();
    let borrowed = a.node.as_ref().map(|node| {
        state
            .blocks
            .iter()
            .filter(|b| b.affinity() != Some(node.as_str()))
            .flat_map(|b| {
                b.allocations()
                    .filter(|(_, h)| h.node == *node)
                    .map(|(ip, h)| Borrowed {
                        ip: ip.to_string(),
                        block: b.cidr().to_string(),
                        block_affinity: b.affinity().map(str::to_string),
                        handle: h.handle.clone(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    });
    Usage {
        pools,
        borrowed,
        configuration: None,
    }
}

/// The boxed table.
pub fn render_table(u: &Usage) -> String {
    let mut rows = Vec::new();
    for p in &u.pools {
        rows.push(vec![
            "IP Pool".to_string(),
            p.cidr.clone(),
            String::new(),
            p.total.to_string(),
            with_percent(p.in_use, p.total),
            with_percent(p.free, p.total),
        ]);
        for b in p.blocks.iter().flatten() {
            rows.push(vec![
                "Block".to_string(),
                b.cidr.clone(),
                b.affinity.clone().unwrap_or_else(|| "<none>".into()),
                b.total.to_string(),
                with_percent(b.in_use, b.total),
                with_percent(b.free, b.total),
            ]);
        }
    }
    for x in u.borrowed.iter().flatten() {
        rows.push(vec![
            "Borrowed".to_string(),
            x.ip.clone(),
            x.block_affinity.clone().unwrap_or_else(|| "<none>".into()),
            "1".into(),
            "1".into(),
            String::new(),
        ]);
    }
    let mut out = output::boxed_table(
        &[
            "GROUPING",
            "CIDR",
            "AFFINITY",
            "IPS TOTAL",
            "IPS IN USE",
            "IPS FREE",
        ],
        &[
            Align::Left,
            Align::Left,
            Align::Left,
            Align::Right,
            Align::Left,
            Align::Left,
        ],
        &rows,
    );
    if let Some(c) = &u.configuration {
        out.push_str(&output::boxed_table(
            &["PROPERTY", "VALUE"],
            &[Align::Left, Align::Left],
            &[
                vec!["StrictAffinity".into(), c.strict_affinity.to_string()],
                vec![
                    "MaxBlocksPerHost".into(),
                    if c.max_blocks_per_host == 0 {
                        "0 (no limit)".into()
                    } else {
                        c.max_blocks_per_host.to_string()
                    },
                ],
                vec![
                    "AutoAllocateBlocks".into(),
                    c.auto_allocate_blocks.to_string(),
                ],
            ],
        ));
    }
    out
}

pub async fn run(c: &ApiClient, a: &IpamShowArgs) -> anyhow::Result<u8> {
    let state = load(c).await?;
    for (name, problem) in &state.bad_pools {
        eprintln!("warning: IPPool {name:?} is invalid and not shown: {problem}");
    }
    let mut u = usage(&state, a);
    if a.show_configuration {
        let api: Api<IPAMConfiguration> = Api::all(c.client.clone());
        let cfg = api
            .get_opt(margay_ipam::IPAM_CONFIG_NAME)
            .await
            .map_err(|e| api_error(&c.url, "reading IPAMConfiguration default", e))?;
        let spec = cfg.map(|c| c.spec).unwrap_or_default();
        let r = ResolvedIpamConfig::from_spec(&spec);
        u.configuration = Some(Configuration {
            strict_affinity: r.strict_affinity,
            max_blocks_per_host: r.max_blocks_per_host.unwrap_or(0),
            auto_allocate_blocks: r.auto_allocate_blocks,
        });
    }
    match a.output {
        OutputFormat::Table | OutputFormat::Wide => print!("{}", render_table(&u)),
        OutputFormat::Yaml => print!("{}", output::yaml(&u)?),
        OutputFormat::Json => print!("{}", output::json(&u)?),
    }
    Ok(exit::OK)
}
