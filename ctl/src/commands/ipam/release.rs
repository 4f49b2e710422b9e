//! `ipam release --from-report FILE`: releases the leaked addresses an
//! `ipam check` report lists, after checking each again against the live
//! state. A dry run unless `--yes`.

use super::check::{REPORT_KIND, Report, build_report};
use super::load;
use crate::cli::IpamReleaseArgs;
use crate::client::ApiClient;
use crate::exit;
use anyhow::Context;
use margay_ipam::store::kube::KubeStore;
use margay_ipam::{Allocator, SystemClock};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What to do with one handle of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every address it holds now is still leaked: release them all.
    Release(Vec<String>),
    /// It holds no address any more.
    AlreadyReleased,
    /// Something changed since the report: leave it.
    Skip(String),
}

/// Decides per handle from the report and a fresh check: release only when
/// every address the report names is still leaked under that handle, and
/// every address the handle holds now is leaked too.
pub fn decide(
    report: &Report,
    fresh: &Report,
    held_now: &BTreeMap<String, BTreeSet<String>>,
) -> BTreeMap<String, Decision> {
    let still_leaked: BTreeSet<(String, String)> = fresh
        .leaked_addresses
        .iter()
        .map(|l| (l.ip.clone(), l.handle.clone()))
        .collect();
    let mut by_handle: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in &report.leaked_addresses {
        by_handle
            .entry(l.handle.clone())
            .or_default()
            .push(l.ip.clone());
    }
    by_handle
        .into_iter()
        .map(|(handle, ips)| {
            let now: BTreeSet<String> = held_now.get(&handle).cloned().unwrap_or_default();
            let d = if now.is_empty() {
                Decision::AlreadyReleased
            } else if let Some(ip) = ips
                .iter()
                .find(|ip| !still_leaked.contains(&((*ip).clone(), handle.clone())))
            {
                Decision::Skip(format!(
                    "{ip} is no longer leaked under this handle (pod or node back, or address reused)"
                ))
            } else if let Some(ip) = now
                .iter()
                .find(|ip| !still_leaked.contains(&((*ip).clone(), handle.clone())))
            {
                Decision::Skip(format!("the handle also holds {ip}, which is in use"))
            } else {
                Decision::Release(now.into_iter().collect())
            };
            (handle, d)
        })
        .collect()
}

pub async fn run(c: &ApiClient, a: &IpamReleaseArgs) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(&a.from_report)
        .with_context(|| format!("reading {}", a.from_report.display()))?;
    let report: Report = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not an `ipam check -o FILE` report",
            a.from_report.display()
        )
    })?;
    if report.kind != REPORT_KIND {
        anyhow::bail!(
            "{}: kind {:?}: expected {REPORT_KIND}",
            a.from_report.display(),
            report.kind
        );
    }
    if report.leaked_addresses.is_empty() {
        println!("The report lists no leaked addresses: nothing to release.");
        return Ok(exit::OK);
    }
    // Check again now: the report may be old.
    let fresh = build_report(c, false).await?;
    let state = load(c).await?;
    let mut held_now: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for b in &state.blocks {
        for (ip, h) in b.allocations() {
            held_now
                .entry(h.handle.clone())
                .or_default()
                .insert(ip.to_string());
        }
    }
    let decisions = decide(&report, &fresh, &held_now);
    let allocator = Allocator::new(KubeStore::new(c.client.clone()), Arc::new(SystemClock));
    let mut failures = 0;
    let mut would = 0;
    for (handle, d) in &decisions {
        match d {
            Decision::AlreadyReleased => println!("handle {handle:?}: already released"),
            Decision::Skip(why) => println!("handle {handle:?}: skipped: {why}"),
            Decision::Release(ips) if !a.yes => {
                would += ips.len();
                println!("handle {handle:?}: would release {}", ips.join(", "));
            }
            Decision::Release(_) => match allocator.release_handle(handle, None).await {
                Ok(released) => {
                    let list: Vec<String> = released.iter().map(|i| i.to_string()).collect();
                    println!("handle {handle:?}: released {}", list.join(", "));
                }
                Err(e) => {
                    eprintln!("error: handle {handle:?}: {e}");
                    failures += 1;
                }
            },
        }
    }
    if !a.yes {
        println!(
            "Dry run: {would} address{} would be released. Run again with --yes to release.",
            if would == 1 { "" } else { "es" }
        );
    }
    Ok(if failures > 0 { exit::ERROR } else { exit::OK })
}

#[cfg(test)]
mod tests {
    use super::super::check::{LeakedAddress, Summary};
    use super::*;

    fn report(leaks: &[(&str, &str)]) -> Report {
        Report {
            kind: REPORT_KIND.into(),
            version: 1,
            checked_at: String::new(),
            server: String::new(),
            summary: Summary {
                blocks: 0,
                allocations: 0,
                nodes: 0,
                pods: 0,
                problems: leaks.len(),
            },
            leaked_addresses: leaks
                .iter()
                .map(|(ip, h)| LeakedAddress {
                    ip: ip.to_string(),
                    handle: h.to_string(),
                    block: String::new(),
                    node: "n".into(),
                    namespace: None,
                    pod: None,
                    reason: String::new(),
                })
                .collect(),
            duplicate_addresses: vec![],
            overlapping_blocks: vec![],
            orphan_blocks: vec![],
            dangling_affinities: vec![],
            unindexed_addresses: vec![],
            stale_handles: vec![],
            corrupt: vec![],
            allocations: vec![],
        }
    }

    fn held(pairs: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (h, ip) in pairs {
            m.entry(h.to_string()).or_default().insert(ip.to_string());
        }
        m
    }

    #[test]
    fn releases_only_what_is_still_leaked_under_the_same_handle() {
        let old = report(&[
            ("10.0.0.1", "a"),
            ("10.0.0.2", "b"),
            ("10.0.0.3", "c"),
            ("10.0.0.4", "d"),
        ]);
        // a: still leaked. b: gone. c: its address now belongs to another handle.
        // d: still leaked, but the handle also holds a live address.
        let fresh = report(&[("10.0.0.1", "a"), ("10.0.0.4", "d")]);
        let now = held(&[
            ("a", "10.0.0.1"),
            ("x", "10.0.0.3"),
            ("d", "10.0.0.4"),
            ("d", "10.0.0.9"),
        ]);
        let d = decide(&old, &fresh, &now);
        assert_eq!(d["a"], Decision::Release(vec!["10.0.0.1".into()]));
        assert_eq!(d["b"], Decision::AlreadyReleased);
        assert_eq!(d["c"], Decision::AlreadyReleased);
        assert!(
            matches!(&d["d"], Decision::Skip(why) if why.contains("10.0.0.9")),
            "{:?}",
            d["d"]
        );
        let fresh_none = report(&[]);
        let d = decide(&old, &fresh_none, &now);
        assert!(matches!(&d["a"], Decision::Skip(_)));
    }
}
