//! NAT outgoing per pool: pods of a `natOutgoing` pool reaching anything
//! outside every pool leave with the node's address (masquerade); traffic
//! between pods, also across nodes, keeps the pod address.
//!
//! - [`rules`]: sets, table script, kernel read-back and plan (pure);
//! - [`start`]: the task keeping `ip margay-nat` / `ip6 margay-nat` right,
//!   on pool changes and periodically (repairs), adopting a right table on
//!   start (effects, through libnftables).

pub mod rules;

use crate::datastore::Datastore;
use margay_api::ResolvedPool;
use margay_api::net::IpFamily;
use margay_policy::nft::{Nft, NftError};
use std::time::Duration;
use tokio::task::JoinHandle;

/// What one reconcile did, per family: the script it ran, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatReport {
    pub applied: Vec<String>,
}

/// Reads our tables and brings them to what `pools` want.
pub fn reconcile(nft: &Nft, pools: &[ResolvedPool]) -> Result<NatReport, NftError> {
    let mut report = NatReport::default();
    for family in [IpFamily::V4, IpFamily::V6] {
        let want = rules::wanted(pools, family);
        let fam = rules::family_name(family);
        // A missing table is an error from nft: that just means "none".
        let have = nft
            .run_json(&format!("list table {fam} {}", rules::TABLE))
            .ok()
            .and_then(|j| rules::parse_kernel(&j));
        if let Some(script) = rules::plan(family, want.as_ref(), have.as_ref()) {
            nft.run(&script)?;
            report.applied.push(script);
        }
    }
    Ok(report)
}

/// Starts the NAT task: after the datastore syncs, a reconcile on every
/// pool change and every `refresh`.
pub fn start(datastore: Datastore, refresh: Duration) -> Result<JoinHandle<()>, NftError> {
    let nft = Nft::open()?;
    Ok(tokio::spawn(async move {
        datastore.wait_synced().await;
        let mut changes = datastore.changes();
        let mut tick = tokio::time::interval(refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<Vec<ResolvedPool>> = None;
        loop {
            let pools = datastore.resolved_pools();
            match reconcile(&nft, &pools) {
                Ok(r) => {
                    for s in &r.applied {
                        tracing::info!(script = %s, "NAT outgoing updated");
                    }
                    last = Some(pools);
                }
                Err(e) => tracing::warn!(error = %e, "NAT outgoing reconcile failed"),
            }
            // Wait for a pool change (other datastore changes are ignored)
            // or the periodic repair.
            loop {
                tokio::select! {
                    r = changes.changed() => {
                        if r.is_err() { return; }
                        if last.as_ref() != Some(&datastore.resolved_pools()) { break; }
                    }
                    _ = tick.tick() => break,
                }
            }
        }
    }))
}
