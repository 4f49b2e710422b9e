//! `ipam check`: `margay_ipam::audit` over the live state, each leaked
//! address explained (which node or pod is gone), as text and as a JSON
//! report that `ipam release --from-report` acts on.

use super::load;
use crate::cli::IpamCheckArgs;
use crate::client::ApiClient;
use crate::exit;
use anyhow::Context;
use margay_ipam::store::kube::KubeStore;
use margay_ipam::{Audit, IpamStore};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// `kind` of the report file.
pub const REPORT_KIND: &str = "IPAMCheckReport";

/// The report `ipam check -o FILE` writes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub kind: String,
    pub version: u32,
    pub checked_at: String,
    pub server: String,
    pub summary: Summary,
    pub leaked_addresses: Vec<LeakedAddress>,
    pub duplicate_addresses: Vec<String>,
    pub overlapping_blocks: Vec<String>,
    pub orphan_blocks: Vec<String>,
    pub dangling_affinities: Vec<String>,
    pub unindexed_addresses: Vec<AddressHandle>,
    pub stale_handles: Vec<String>,
    pub corrupt: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allocations: Vec<Allocation>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub blocks: usize,
    pub allocations: usize,
    pub nodes: usize,
    pub pods: usize,
    pub problems: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LeakedAddress {
    pub ip: String,
    pub handle: String,
    pub block: String,
    /// The node that allocated it.
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AddressHandle {
    pub ip: String,
    pub handle: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    pub ip: String,
    pub handle: String,
    pub block: String,
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

impl Report {
    pub fn problem_count(&self) -> usize {
        self.leaked_addresses.len()
            + self.duplicate_addresses.len()
            + self.overlapping_blocks.len()
            + self.orphan_blocks.len()
            + self.dangling_affinities.len()
            + self.unindexed_addresses.len()
            + self.stale_handles.len()
            + self.corrupt.len()
    }
}

/// Runs the audit and explains it.
pub async fn build_report(c: &ApiClient, all_ips: bool) -> anyhow::Result<Report> {
    let store = KubeStore::new(c.client.clone());
    let audit: Audit = margay_ipam::audit(&store)
        .await
        .with_context(|| format!("auditing IPAM on {}", c.url))?;
    let nodes: BTreeSet<String> = store
        .list_nodes()
        .await
        .context("listing Nodes")?
        .into_iter()
        .map(|n| n.name)
        .collect();
    let pods: BTreeSet<(String, String)> = store
        .list_pods()
        .await
        .context("listing Pods")?
        .into_iter()
        .map(|p| (p.namespace, p.name))
        .collect();
    let state = load(c).await?;
    // ip -> (block, holder)
    let mut holders = BTreeMap::new();
    for b in &state.blocks {
        for (ip, h) in b.allocations() {
            holders.insert(ip, (b.cidr().to_string(), h.clone()));
        }
    }
    let leaked = audit
        .leaked
        .iter()
        .map(|(ip, handle)| {
            let (block, holder) = holders.get(ip).cloned().unwrap_or_else(|| {
                // Audit and our read are two reads: it may have gone meanwhile.
                let gone = margay_ipam::Holder {
                    handle: handle.clone(),
                    node: String::new(),
                    namespace: None,
                    pod: None,
                };
                (String::new(), gone)
            });
            let reason = if !nodes.contains(&holder.node) {
                format!("node {:?} does not exist", holder.node)
            } else if let (Some(ns), Some(p)) = (&holder.namespace, &holder.pod) {
                if pods.contains(&(ns.clone(), p.clone())) {
                    "leaked".to_string()
                } else {
                    format!("pod {ns}/{p} does not exist")
                }
            } else {
                "leaked".to_string()
            };
            LeakedAddress {
                ip: ip.to_string(),
                handle: handle.clone(),
                block,
                node: holder.node.clone(),
                namespace: holder.namespace.clone(),
                pod: holder.pod.clone(),
                reason,
            }
        })
        .collect();
    let pair = |(ip, h): &(IpAddr, String)| AddressHandle {
        ip: ip.to_string(),
        handle: h.clone(),
    };
    let mut r = Report {
        kind: REPORT_KIND.into(),
        version: 1,
        checked_at: jiff::Timestamp::now().to_string(),
        server: c.url.clone(),
        summary: Summary {
            blocks: audit.blocks,
            allocations: audit.allocations,
            nodes: nodes.len(),
            pods: pods.len(),
            problems: 0,
        },
        leaked_addresses: leaked,
        duplicate_addresses: audit
            .duplicate_addresses
            .iter()
            .map(|i| i.to_string())
            .collect(),
        overlapping_blocks: audit
            .overlapping_blocks
            .iter()
            .map(|c| c.to_string())
            .collect(),
        orphan_blocks: audit.orphan_blocks.iter().map(|c| c.to_string()).collect(),
        dangling_affinities: audit.dangling_affinities.clone(),
        unindexed_addresses: audit.unindexed.iter().map(pair).collect(),
        stale_handles: audit.stale_handles.clone(),
        corrupt: audit.corrupt.clone(),
        allocations: Vec::new(),
    };
    if all_ips {
        r.allocations = holders
            .iter()
            .map(|(ip, (block, h))| Allocation {
                ip: ip.to_string(),
                handle: h.handle.clone(),
                block: block.clone(),
                node: h.node.clone(),
                pod: match (&h.namespace, &h.pod) {
                    (Some(ns), Some(p)) => Some(format!("{ns}/{p}")),
                    _ => None,
                },
            })
            .collect();
    }
    r.summary.problems = r.problem_count();
    Ok(r)
}

/// The human-readable account.
pub fn render_text(r: &Report) -> String {
    let mut out = String::from("Checking IPAM for inconsistencies...\n");
    out.push_str(&format!(
        "Found {} blocks with {} allocated addresses; {} nodes and {} pods exist.\n",
        r.summary.blocks, r.summary.allocations, r.summary.nodes, r.summary.pods
    ));
    if !r.allocations.is_empty() {
        out.push_str("Allocated addresses:\n");
        for a in &r.allocations {
            out.push_str(&format!(
                "  {}  block {}  node {}  handle {:?}{}\n",
                a.ip,
                a.block,
                a.node,
                a.handle,
                a.pod
                    .as_ref()
                    .map(|p| format!("  pod {p}"))
                    .unwrap_or_default()
            ));
        }
    }
    let section = |out: &mut String, title: &str, items: Vec<String>, why: &str| {
        if items.is_empty() {
            return;
        }
        out.push_str(&format!("{title} ({}): {why}\n", items.len()));
        for i in items {
            out.push_str(&format!("  {i}\n"));
        }
    };
    section(
        &mut out,
        "Leaked addresses",
        r.leaked_addresses
            .iter()
            .map(|l| {
                format!(
                    "{}  handle {:?}  node {}{}  ({})",
                    l.ip,
                    l.handle,
                    l.node,
                    match (&l.namespace, &l.pod) {
                        (Some(ns), Some(p)) => format!("  pod {ns}/{p}"),
                        _ => String::new(),
                    },
                    l.reason
                )
            })
            .collect(),
        "allocated to a node or pod that no longer exists",
    );
    section(
        &mut out,
        "Duplicate addresses",
        r.duplicate_addresses.clone(),
        "held in two blocks at once",
    );
    section(
        &mut out,
        "Overlapping blocks",
        r.overlapping_blocks.clone(),
        "blocks that overlap another block",
    );
    section(
        &mut out,
        "Orphan blocks",
        r.orphan_blocks.clone(),
        "empty without affinity, or affine to a missing node, or without a confirmed BlockAffinity",
    );
    section(
        &mut out,
        "Dangling affinities",
        r.dangling_affinities.clone(),
        "BlockAffinity objects without their node's block",
    );
    section(
        &mut out,
        "Unindexed addresses",
        r.unindexed_addresses
            .iter()
            .map(|a| format!("{}  handle {:?}", a.ip, a.handle))
            .collect(),
        "outside their node's blocks and missing from their IPAMHandle",
    );
    section(
        &mut out,
        "Stale handles",
        r.stale_handles.clone(),
        "IPAMHandle objects naming no allocation",
    );
    section(
        &mut out,
        "Corrupt objects",
        r.corrupt.clone(),
        "cannot be decoded",
    );
    match r.summary.problems {
        0 => out.push_str("Check complete: no problems found.\n"),
        n => out.push_str(&format!(
            "Check complete: {n} problem{} found.\n",
            if n == 1 { "" } else { "s" }
        )),
    }
    out
}

pub async fn run(c: &ApiClient, a: &IpamCheckArgs) -> anyhow::Result<u8> {
    let report = build_report(c, a.show_all_ips).await?;
    let json = crate::output::json(&report)?;
    match &a.output {
        Some(p) if p.as_os_str() == "-" => print!("{json}"),
        Some(p) => {
            print!("{}", render_text(&report));
            std::fs::write(p, &json).with_context(|| format!("writing {}", p.display()))?;
            println!("Report written to {}", p.display());
        }
        None => print!("{}", render_text(&report)),
    }
    Ok(if report.summary.problems == 0 {
        exit::OK
    } else {
        exit::PROBLEMS
    })
}
