//! What this node originates, from the IPAM blocks and pools (pure):
//! its affine blocks, aggregated as the block CIDR (announced while the
//! affinity lasts, even when empty, like Calico), and the addresses its pods
//! borrowed from blocks affine to other nodes, as /32 (/128). Pools with
//! `disableBGPExport` are not announced. Every affine block also gets a
//! blackhole route here, so traffic to its unused addresses stops on this
//! node instead of bouncing along the default route.

use margay_api::net::Cidr;
use margay_api::{IPAMBlock, ResolvedPool};
use std::collections::BTreeSet;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Originated {
    /// Prefixes to announce over BGP.
    pub announce: BTreeSet<Cidr>,
    /// Our affine blocks (blackhole routes), announced or not.
    pub blackholes: BTreeSet<Cidr>,
}

impl Originated {
    /// Prefixes that are ours: never installed from what peers send.
    pub fn is_own(&self, prefix: &Cidr) -> bool {
        self.announce.contains(prefix) || self.blackholes.contains(prefix)
    }
}

fn exported(pools: &[ResolvedPool], cidr: &Cidr) -> bool {
    // A block outside every pool (its pool was deleted) is still ours
    // while affine; announce it unless a pool holding it says not to.
    !pools
        .iter()
        .any(|p| p.disable_bgp_export && p.cidr.contains_cidr(cidr))
}

pub fn originated(node: &str, blocks: &[IPAMBlock], pools: &[ResolvedPool]) -> Originated {
    let mut out = Originated::default();
    for b in blocks {
        let Ok(cidr) = Cidr::parse_strict(&b.spec.cidr) else {
            continue;
        };
        let affine = b.spec.affine_node();
        if affine == Some(node) {
            out.blackholes.insert(cidr);
            if exported(pools, &cidr) {
                out.announce.insert(cidr);
            }
            continue;
        }
        for a in &b.spec.allocations {
            if a.node.as_deref() != Some(node) {
                continue;
            }
            if let Some(ip) = cidr.nth(u128::from(a.ordinal)) {
                let host = Cidr::host(ip);
                if exported(pools, &host) {
                    out.announce.insert(host);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use margay_api::{AllocationRecord, IPAMBlockSpec, IPPool, IPPoolSpec};

    fn block(cidr: &str, node: &str, allocs: &[(u32, &str)]) -> IPAMBlock {
        IPAMBlock::new(
            &cidr.replace(['.', '/', ':'], "-"),
            IPAMBlockSpec {
                cidr: cidr.into(),
                affinity: Some(format!("host:{node}")),
                allocations: allocs
                    .iter()
                    .map(|(o, n)| AllocationRecord {
                        ordinal: *o,
                        handle: format!("h{o}"),
                        node: Some(n.to_string()),
                        namespace: None,
                        pod: None,
                    })
                    .collect(),
                cooling: Vec::new(),
                in_use: allocs.len() as u32,
            },
        )
    }

    fn pool(name: &str, cidr: &str, no_export: bool) -> ResolvedPool {
        let mut spec = IPPoolSpec::new(cidr);
        spec.disable_bgp_export = no_export;
        ResolvedPool::from_pool(&IPPool::new(name, spec)).expect("pool")
    }

    fn s(set: &BTreeSet<Cidr>) -> Vec<String> {
        set.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn own_blocks_even_empty_and_borrowed_addresses_as_host_routes() {
        let blocks = [
            block("10.244.0.0/26", "a", &[(1, "a"), (2, "b")]),
            block("10.244.0.64/26", "b", &[(5, "a"), (6, "b")]),
            block("10.244.0.128/26", "a", &[]),
        ];
        let pools = [pool("p", "10.244.0.0/16", false)];
        let a = originated("a", &blocks, &pools);
        assert_eq!(
            s(&a.announce),
            ["10.244.0.0/26", "10.244.0.69/32", "10.244.0.128/26"]
        );
        assert_eq!(s(&a.blackholes), ["10.244.0.0/26", "10.244.0.128/26"]);
        let b = originated("b", &blocks, &pools);
        assert_eq!(s(&b.announce), ["10.244.0.2/32", "10.244.0.64/26"]);
        assert!(b.is_own(&"10.244.0.64/26".parse().expect("cidr")));
        assert!(!b.is_own(&"10.244.0.0/26".parse().expect("cidr")));
    }

    #[test]
    fn pools_with_bgp_export_disabled_are_blackholed_but_not_announced() {
        let blocks = [block("10.245.0.0/26", "a", &[])];
        let pools = [pool("quiet", "10.245.0.0/16", true)];
        let a = originated("a", &blocks, &pools);
        assert!(a.announce.is_empty());
        assert_eq!(s(&a.blackholes), ["10.245.0.0/26"]);
    }
}
