//! NAT outgoing as nftables wants it (pure): which CIDRs go in which set,
//! the table script, reading the kernel's table back, and the smallest
//! change between the two.
//!
//! Per family one table of our own (`ip margay-nat`, `ip6 margay-nat`; the
//! `inet margay` table belongs to the policy dataplane, which deletes what it
//! does not know there):
//!
//! ```text
//! table ip margay-nat {
//!   set nat-pools { type ipv4_addr; flags interval; }   # pools with natOutgoing
//!   set all-pools { type ipv4_addr; flags interval; }   # every pool
//!   chain postrouting {
//!     type nat hook postrouting priority srcnat; policy accept;
//!     ip saddr @nat-pools ip daddr != @all-pools masquerade comment "margay-nat-v1"
//!   }
//! }
//! ```
//!
//! Pod-to-pod traffic across nodes (destination in a pool) keeps the pod's
//! source; only traffic to destinations outside every pool is masqueraded.
//! Pool changes add and delete set elements one by one; the chain is rebuilt
//! only when it is not what this version renders.

use margay_api::ResolvedPool;
use margay_api::net::{Cidr, IpFamily};
use serde_json::Value;
use std::collections::BTreeSet;

pub const TABLE: &str = "margay-nat";
pub const NAT_SET: &str = "nat-pools";
pub const ALL_SET: &str = "all-pools";
pub const CHAIN: &str = "postrouting";
/// Marks the rule this version renders; another comment (or another rule
/// count) means the chain is rebuilt.
pub const RULE_COMMENT: &str = "margay-nat-v1";

/// The sets of one family.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NatSets {
    pub nat: BTreeSet<Cidr>,
    pub all: BTreeSet<Cidr>,
}

/// nft's family keyword.
pub fn family_name(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "ip",
        IpFamily::V6 => "ip6",
    }
}

/// What the pools want for `family`; `None`: no pool of the family has
/// natOutgoing, so the table should not exist.
pub fn wanted(pools: &[ResolvedPool], family: IpFamily) -> Option<NatSets> {
    let of_family: Vec<&ResolvedPool> =
        pools.iter().filter(|p| p.cidr.family() == family).collect();
    // Disabled pools still hold pods: they keep their NAT.
    let nat = collapse(of_family.iter().filter(|p| p.nat_outgoing).map(|p| p.cidr));
    if nat.is_empty() {
        return None;
    }
    Some(NatSets {
        nat,
        all: collapse(of_family.iter().map(|p| p.cidr)),
    })
}

/// Drops CIDRs inside others (an interval set refuses overlapping elements).
fn collapse(cidrs: impl Iterator<Item = Cidr>) -> BTreeSet<Cidr> {
    let all: BTreeSet<Cidr> = cidrs.collect();
    all.iter()
        .filter(|c| !all.iter().any(|o| o != *c && o.contains_cidr(c)))
        .copied()
        .collect()
}

fn elements(cidrs: &BTreeSet<Cidr>) -> String {
    cidrs
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn set_block(name: &str, family: IpFamily, cidrs: &BTreeSet<Cidr>) -> String {
    let ty = match family {
        IpFamily::V4 => "ipv4_addr",
        IpFamily::V6 => "ipv6_addr",
    };
    let elems = if cidrs.is_empty() {
        String::new()
    } else {
        format!(" elements = {{ {} }};", elements(cidrs))
    };
    format!("  set {name} {{ type {ty}; flags interval;{elems} }}\n")
}

/// The whole table, replacing whatever is there in one transaction.
pub fn render_table(family: IpFamily, sets: &NatSets) -> String {
    let fam = family_name(family);
    let addr = fam; // `ip saddr` / `ip6 saddr`
    format!(
        "table {fam} {TABLE} {{}}\ndelete table {fam} {TABLE}\ntable {fam} {TABLE} {{\n{}{}  chain {CHAIN} {{\n    type nat hook postrouting priority srcnat; policy accept;\n    {addr} saddr @{NAT_SET} {addr} daddr != @{ALL_SET} masquerade comment \"{RULE_COMMENT}\"\n  }}\n}}\n",
        set_block(NAT_SET, family, &sets.nat),
        set_block(ALL_SET, family, &sets.all),
    )
}

/// Removes the table (it is ours alone); harmless when it does not exist.
pub fn render_delete(family: IpFamily) -> String {
    let fam = family_name(family);
    format!("table {fam} {TABLE} {{}}\ndelete table {fam} {TABLE}\n")
}

/// Our table as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelNat {
    pub sets: NatSets,
    /// Both sets exist.
    pub has_sets: bool,
    /// Comments of the chain's rules, in order (`None` for a rule without).
    pub rules: Vec<Option<String>>,
    pub has_chain: bool,
}

/// Reads `nft -j list table FAMILY margay-nat` output.
pub fn parse_kernel(json: &str) -> Option<KernelNat> {
    let v: Value = serde_json::from_str(json).ok()?;
    let mut k = KernelNat::default();
    let mut seen_sets = 0;
    for item in v.get("nftables")?.as_array()? {
        if let Some(s) = item.get("set") {
            let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
            let elems = s
                .get("elem")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(parse_elem).collect())
                .unwrap_or_default();
            match name {
                NAT_SET => {
                    k.sets.nat = elems;
                    seen_sets += 1;
                }
                ALL_SET => {
                    k.sets.all = elems;
                    seen_sets += 1;
                }
                _ => {}
            }
        } else if let Some(c) = item.get("chain") {
            if c.get("name").and_then(Value::as_str) == Some(CHAIN) {
                k.has_chain = true;
            }
        } else if let Some(r) = item.get("rule")
            && r.get("chain").and_then(Value::as_str) == Some(CHAIN)
        {
            k.rules
                .push(r.get("comment").and_then(Value::as_str).map(str::to_string));
        }
    }
    k.has_sets = seen_sets == 2;
    Some(k)
}

/// One set element: `"10.0.0.1"`, `{"prefix": {"addr": .., "len": ..}}` or
/// `{"range": [lo, hi]}` (a range is no CIDR of ours: ignored, so removed).
fn parse_elem(v: &Value) -> Option<Cidr> {
    if let Some(s) = v.as_str() {
        return Some(Cidr::host(s.parse().ok()?));
    }
    let v = v.get("elem").and_then(|e| e.get("val")).unwrap_or(v);
    let p = v.get("prefix")?;
    let addr = p.get("addr")?.as_str()?.parse().ok()?;
    let len = u8::try_from(p.get("len")?.as_u64()?).ok()?;
    Cidr::new_truncating(addr, len)
}

/// The nft script taking the kernel from `have` to `want` (`None`: nothing
/// to do).
pub fn plan(family: IpFamily, want: Option<&NatSets>, have: Option<&KernelNat>) -> Option<String> {
    let fam = family_name(family);
    let Some(want) = want else {
        return have.map(|_| render_delete(family));
    };
    let Some(have) = have
        .filter(|h| h.has_sets && h.has_chain && h.rules == vec![Some(RULE_COMMENT.to_string())])
    else {
        return Some(render_table(family, want));
    };
    let mut script = String::new();
    for (set, w, h) in [
        (NAT_SET, &want.nat, &have.sets.nat),
        (ALL_SET, &want.all, &have.sets.all),
    ] {
        // Deletions first: a new element may overlap an old one.
        let del: BTreeSet<Cidr> = h.difference(w).copied().collect();
        let add: BTreeSet<Cidr> = w.difference(h).copied().collect();
        if !del.is_empty() {
            script.push_str(&format!(
                "delete element {fam} {TABLE} {set} {{ {} }}\n",
                elements(&del)
            ));
        }
        if !add.is_empty() {
            script.push_str(&format!(
                "add element {fam} {TABLE} {set} {{ {} }}\n",
                elements(&add)
            ));
        }
    }
    (!script.is_empty()).then_some(script)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::encap::tests::pool;
    use margay_api::EncapMode::Never;

    fn c(s: &str) -> Cidr {
        s.parse().expect("cidr")
    }

    fn pools() -> Vec<ResolvedPool> {
        vec![
            pool("10.244.0.0/16", Never, Never, true),
            pool("10.245.0.0/16", Never, Never, false),
            pool("fd00:244::/48", Never, Never, false),
        ]
    }

    #[test]
    fn sets_per_family_and_no_table_without_nat() {
        let w = wanted(&pools(), IpFamily::V4).expect("v4 nat");
        assert_eq!(w.nat, [c("10.244.0.0/16")].into());
        assert_eq!(w.all, [c("10.244.0.0/16"), c("10.245.0.0/16")].into());
        assert_eq!(wanted(&pools(), IpFamily::V6), None);
        let nested = vec![
            pool("10.244.0.0/16", Never, Never, true),
            pool("10.244.8.0/24", Never, Never, true),
        ];
        assert_eq!(
            wanted(&nested, IpFamily::V4).expect("nat").nat,
            [c("10.244.0.0/16")].into()
        );
    }

    #[test]
    fn table_script_masquerades_pool_sources_to_non_pool_destinations() {
        let s = render_table(IpFamily::V4, &wanted(&pools(), IpFamily::V4).expect("nat"));
        assert!(
            s.starts_with("table ip margay-nat {}\ndelete table ip margay-nat\n"),
            "{s}"
        );
        assert!(
            s.contains(
                "set nat-pools { type ipv4_addr; flags interval; elements = { 10.244.0.0/16 }; }"
            ),
            "{s}"
        );
        assert!(
            s.contains("elements = { 10.244.0.0/16, 10.245.0.0/16 }"),
            "{s}"
        );
        assert!(s.contains("type nat hook postrouting priority srcnat; policy accept;"));
        assert!(
            s.contains(
                "ip saddr @nat-pools ip daddr != @all-pools masquerade comment \"margay-nat-v1\""
            ),
            "{s}"
        );
    }

    fn kernel_json(nat: &[&str], all: &[&str], comments: &[Option<&str>]) -> String {
        let elem = |s: &&str| {
            let (a, l) = s.split_once('/').expect("cidr");
            serde_json::json!({"prefix": {"addr": a, "len": l.parse::<u64>().expect("len")}})
        };
        let mut items = vec![
            serde_json::json!({"metainfo": {"version": "1.0.6"}}),
            serde_json::json!({"table": {"family": "ip", "name": TABLE}}),
            serde_json::json!({"set": {"family": "ip", "name": NAT_SET, "table": TABLE, "elem": nat.iter().map(elem).collect::<Vec<_>>()}}),
            serde_json::json!({"set": {"family": "ip", "name": ALL_SET, "table": TABLE, "elem": all.iter().map(elem).collect::<Vec<_>>()}}),
            serde_json::json!({"chain": {"family": "ip", "table": TABLE, "name": CHAIN}}),
        ];
        for cm in comments {
            let mut r =
                serde_json::json!({"family": "ip", "table": TABLE, "chain": CHAIN, "expr": []});
            if let Some(cm) = cm {
                r["comment"] = serde_json::json!(cm);
            }
            items.push(serde_json::json!({"rule": r}));
        }
        serde_json::json!({"nftables": items}).to_string()
    }

    #[test]
    fn a_right_table_is_left_alone_and_pool_changes_are_element_deltas() {
        let want = wanted(&pools(), IpFamily::V4).expect("nat");
        let have = parse_kernel(&kernel_json(
            &["10.244.0.0/16"],
            &["10.244.0.0/16", "10.245.0.0/16"],
            &[Some(RULE_COMMENT)],
        ))
        .expect("parse");
        assert_eq!(have.sets, want);
        assert_eq!(plan(IpFamily::V4, Some(&want), Some(&have)), None);

        let stale = parse_kernel(&kernel_json(
            &["10.244.0.0/16", "10.9.0.0/16"],
            &["10.244.0.0/16"],
            &[Some(RULE_COMMENT)],
        ))
        .expect("parse");
        let p = plan(IpFamily::V4, Some(&want), Some(&stale)).expect("a change");
        assert_eq!(
            p,
            "delete element ip margay-nat nat-pools { 10.9.0.0/16 }\nadd element ip margay-nat all-pools { 10.245.0.0/16 }\n"
        );
    }

    #[test]
    fn a_wrong_chain_is_rebuilt_and_an_unwanted_table_deleted() {
        let want = wanted(&pools(), IpFamily::V4).expect("nat");
        for rules in [
            vec![],
            vec![None],
            vec![Some(RULE_COMMENT), Some("x")],
            vec![Some("old")],
        ] {
            let have = parse_kernel(&kernel_json(&["10.244.0.0/16"], &["10.244.0.0/16"], &rules))
                .expect("parse");
            let p = plan(IpFamily::V4, Some(&want), Some(&have)).expect("rebuild");
            assert!(p.contains("delete table ip margay-nat"), "{p}");
        }
        assert!(
            plan(IpFamily::V4, Some(&want), None)
                .expect("create")
                .contains("masquerade")
        );
        let have = parse_kernel(&kernel_json(&[], &[], &[])).expect("parse");
        assert_eq!(
            plan(IpFamily::V4, None, Some(&have)),
            Some(render_delete(IpFamily::V4))
        );
        assert_eq!(plan(IpFamily::V4, None, None), None);
        assert_eq!(parse_kernel("not json"), None);
    }
}
