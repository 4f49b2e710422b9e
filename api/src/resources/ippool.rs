//! `IPPool`: a range pods get addresses from, cut into blocks.

use crate::net::{Cidr, IpFamily};
use crate::selector::Selector;
use crate::validate::{Problems, ValidationError};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default block prefix length for IPv4 pools (64 addresses).
pub const DEFAULT_BLOCK_SIZE_V4: u8 = 26;
/// Default block prefix length for IPv6 pools (64 addresses).
pub const DEFAULT_BLOCK_SIZE_V6: u8 = 122;
/// Allowed block prefix lengths, as in Calico.
pub const BLOCK_SIZE_RANGE_V4: std::ops::RangeInclusive<u8> = 20..=32;
pub const BLOCK_SIZE_RANGE_V6: std::ops::RangeInclusive<u8> = 116..=128;

/// Loose shape check the API server can do; the Rust validation does the rest.
const CIDR_PATTERN: &str = r"^([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}/[0-9]{1,2}|[0-9a-fA-F:.]*:[0-9a-fA-F:.]*/[0-9]{1,3})$";

// An encapsulation mode for traffic between nodes. (A `//` comment: a doc
// comment here would replace the field descriptions in the CRD schema.)
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum EncapMode {
    /// Never encapsulate: pod traffic is routed natively (BGP).
    #[default]
    Never,
    /// Always encapsulate traffic to other nodes.
    Always,
    /// Encapsulate only when the destination node is in another subnet.
    CrossSubnet,
}

impl EncapMode {
    pub fn is_on(self) -> bool {
        self != EncapMode::Never
    }
}

/// A pool of pod addresses. Nodes claim blocks of `blockSize` out of `cidr`
/// and hand out single addresses from them.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "margay.dev",
    version = "v1",
    kind = "IPPool",
    plural = "ippools",
    shortname = "pool",
    doc = "A pool of pod addresses, cut into blocks that nodes claim.",
    derive = "PartialEq",
    printcolumn(name = "CIDR", type_ = "string", json_path = ".spec.cidr"),
    printcolumn(name = "Block", type_ = "integer", json_path = ".spec.blockSize"),
    printcolumn(name = "VXLAN", type_ = "string", json_path = ".spec.vxlanMode"),
    printcolumn(name = "IPIP", type_ = "string", json_path = ".spec.ipipMode"),
    printcolumn(name = "NAT", type_ = "boolean", json_path = ".spec.natOutgoing"),
    printcolumn(name = "Disabled", type_ = "boolean", json_path = ".spec.disabled"),
    printcolumn(
        name = "Selector",
        type_ = "string",
        json_path = ".spec.nodeSelector",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.vxlanMode) || !has(self.ipipMode) || self.vxlanMode == 'Never' || self.ipipMode == 'Never'",
        "message": "vxlanMode and ipipMode cannot both be enabled: set one of them to Never"
    },
    {
        "rule": "!has(self.blockSize) || (self.cidr.contains(':') ? (self.blockSize >= 116 && self.blockSize <= 128) : (self.blockSize >= 20 && self.blockSize <= 32))",
        "message": "blockSize must be 20..32 for an IPv4 pool and 116..128 for an IPv6 pool"
    },
    {
        "rule": "!has(oldSelf.blockSize) || has(self.blockSize)",
        "message": "blockSize cannot be removed once set (it is immutable)"
    }
]))]
pub struct IPPoolSpec {
    /// The pool's network, e.g. `10.244.0.0/16` or `fd00:10:244::/56`. Host bits
    /// must be zero. Immutable: to move a pool, create a new one and disable this one.
    #[schemars(length(max = 43), regex(pattern = CIDR_PATTERN))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "cidr is immutable: create a new pool and disable this one"}
    ]))]
    pub cidr: String,

    /// Prefix length of the blocks nodes claim: 20..32 for IPv4 (default 26),
    /// 116..128 for IPv6 (default 122). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 20, max = 128))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "blockSize is immutable"}
    ]))]
    pub block_size: Option<u8>,

    /// VXLAN encapsulation between nodes (default Never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_mode: Option<EncapMode>,

    /// IP-in-IP encapsulation between nodes, IPv4 only (default Never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip_mode: Option<EncapMode>,

    /// Masquerade traffic from pods in this pool to destinations outside all pools.
    #[serde(default)]
    pub nat_outgoing: bool,

    /// Which nodes may claim blocks from this pool (selector string over node
    /// labels, default `all()`). Existing blocks of a node that no longer matches
    /// keep their addresses; no new ones are handed out from them, and they are
    /// released once empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub node_selector: Option<String>,

    /// No new addresses from this pool. Existing allocations stay.
    #[serde(default)]
    pub disabled: bool,

    /// Do not announce this pool's blocks over BGP.
    #[serde(default, rename = "disableBGPExport")]
    pub disable_bgp_export: bool,
}

impl IPPoolSpec {
    /// A spec with only the CIDR set.
    pub fn new(cidr: impl Into<String>) -> IPPoolSpec {
        IPPoolSpec {
            cidr: cidr.into(),
            block_size: None,
            vxlan_mode: None,
            ipip_mode: None,
            nat_outgoing: false,
            node_selector: None,
            disabled: false,
            disable_bgp_export: false,
        }
    }

    /// The spec with every defaulted field filled in: `blockSize` by family,
    /// both modes `Never`, `nodeSelector` `all()`. Call after validation (an
    /// unparsable CIDR keeps `blockSize` unset).
    pub fn with_defaults(&self) -> IPPoolSpec {
        let mut s = self.clone();
        if s.block_size.is_none()
            && let Ok(cidr) = Cidr::parse_strict(&s.cidr)
        {
            s.block_size = Some(default_block_size(cidr.family()));
        }
        s.vxlan_mode.get_or_insert(EncapMode::Never);
        s.ipip_mode.get_or_insert(EncapMode::Never);
        s.node_selector.get_or_insert_with(|| "all()".to_string());
        s
    }
}

pub fn default_block_size(family: IpFamily) -> u8 {
    match family {
        IpFamily::V4 => DEFAULT_BLOCK_SIZE_V4,
        IpFamily::V6 => DEFAULT_BLOCK_SIZE_V6,
    }
}

/// An `IPPool` checked and with defaults applied: what IPAM and the agent use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPool {
    pub name: String,
    pub cidr: Cidr,
    pub block_size: u8,
    pub vxlan_mode: EncapMode,
    pub ipip_mode: EncapMode,
    pub nat_outgoing: bool,
    pub node_selector: Selector,
    pub disabled: bool,
    pub disable_bgp_export: bool,
}

impl ResolvedPool {
    /// Validate `pool` alone and resolve it.
    pub fn from_pool(pool: &IPPool) -> Result<ResolvedPool, ValidationError> {
        validate_ip_pool(pool)?;
        let name = pool.metadata.name.clone().unwrap_or_default();
        let s = pool.spec.with_defaults();
        // validate_ip_pool checked that both parse; map errors anyway rather than unwrap.
        let invalid = |field: &str, message: String| {
            ValidationError::single("IPPool", name.clone(), field, message)
        };
        let cidr = Cidr::parse_strict(&s.cidr).map_err(|e| invalid("spec.cidr", e.to_string()))?;
        let node_selector = Selector::parse(s.node_selector.as_deref().unwrap_or(""))
            .map_err(|e| invalid("spec.nodeSelector", e.to_string()))?;
        Ok(ResolvedPool {
            name: name.clone(),
            cidr,
            block_size: s.block_size.unwrap_or(default_block_size(cidr.family())),
            vxlan_mode: s.vxlan_mode.unwrap_or_default(),
            ipip_mode: s.ipip_mode.unwrap_or_default(),
            nat_outgoing: s.nat_outgoing,
            node_selector,
            disabled: s.disabled,
            disable_bgp_export: s.disable_bgp_export,
        })
    }

    pub fn family(&self) -> IpFamily {
        self.cidr.family()
    }

    /// Number of addresses in one block.
    pub fn block_len(&self) -> u128 {
        1u128 << (self.family().bits() - self.block_size)
    }

    /// The block (of this pool's block size) that contains `ip`, if in the pool.
    pub fn block_containing(&self, ip: std::net::IpAddr) -> Option<Cidr> {
        if !self.cidr.contains(ip) {
            return None;
        }
        Cidr::new_truncating(ip, self.block_size)
    }
}

/// Ranges no pool may overlap: pods there would be unreachable or break the host.
fn reserved_ranges() -> Vec<(Cidr, &'static str)> {
    [
        ("127.0.0.0/8", "IPv4 loopback"),
        ("169.254.0.0/16", "IPv4 link-local"),
        ("224.0.0.0/4", "IPv4 multicast"),
        ("::1/128", "IPv6 loopback"),
        ("fe80::/10", "IPv6 link-local"),
        ("ff00::/8", "IPv6 multicast"),
    ]
    .into_iter()
    .filter_map(|(c, what)| c.parse().ok().map(|c| (c, what)))
    .collect()
}

/// Check one pool on its own. See [`validate_ip_pools`] for overlaps.
pub fn validate_ip_pool(pool: &IPPool) -> Result<(), ValidationError> {
    let mut p = Problems::new("IPPool", pool.metadata.name.clone().unwrap_or_default());
    crate::resources::check_object_name(&mut p, &pool.metadata);
    let s = &pool.spec;
    match Cidr::parse_strict(&s.cidr) {
        Err(e) => p.add("spec.cidr", e.to_string()),
        Ok(cidr) => {
            let (range, fam) = match cidr.family() {
                IpFamily::V4 => (BLOCK_SIZE_RANGE_V4, IpFamily::V4),
                IpFamily::V6 => (BLOCK_SIZE_RANGE_V6, IpFamily::V6),
            };
            let block = s.block_size.unwrap_or(default_block_size(fam));
            if !range.contains(&block) {
                p.add(
                    "spec.blockSize",
                    format!(
                        "{block} is out of range for an {fam} pool: allowed {}..={}",
                        range.start(),
                        range.end()
                    ),
                );
            } else if block < cidr.prefix() {
                p.add(
                    "spec.blockSize",
                    format!(
                        "{block} is shorter than the pool prefix /{}: blocks must fit inside the pool (allowed {}..={})",
                        cidr.prefix(),
                        cidr.prefix().max(*range.start()),
                        range.end()
                    ),
                );
            }
            for (r, what) in reserved_ranges() {
                if r.overlaps(&cidr) {
                    p.add(
                        "spec.cidr",
                        format!("{cidr} overlaps the {what} range {r}; pools must not"),
                    );
                }
            }
            if fam == IpFamily::V6 && s.ipip_mode.is_some_and(EncapMode::is_on) {
                p.add(
                    "spec.ipipMode",
                    "IP-in-IP carries IPv4 only: must be Never for an IPv6 pool (use vxlanMode)",
                );
            }
        }
    }
    if s.vxlan_mode.is_some_and(EncapMode::is_on) && s.ipip_mode.is_some_and(EncapMode::is_on) {
        p.add(
            "spec.vxlanMode",
            "vxlanMode and ipipMode cannot both be enabled: set one of them to Never",
        );
    }
    if let Some(sel) = &s.node_selector
        && let Err(e) = Selector::parse(sel)
    {
        p.add("spec.nodeSelector", e.to_string());
    }
    p.finish()
}

/// Check a set of pools together: each alone, and no two overlapping.
/// Returns one error per invalid pool.
pub fn validate_ip_pools(pools: &[IPPool]) -> Result<(), Vec<ValidationError>> {
    let mut errors: Vec<ValidationError> = Vec::new();
    let mut parsed: Vec<(String, Cidr)> = Vec::new();
    for pool in pools {
        let name = pool.metadata.name.clone().unwrap_or_default();
        let mut own = match validate_ip_pool(pool) {
            Ok(()) => Problems::new("IPPool", name.clone()),
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if let Ok(cidr) = Cidr::parse_strict(&pool.spec.cidr) {
            for (other, other_cidr) in &parsed {
                if other_cidr.overlaps(&cidr) {
                    own.add(
                        "spec.cidr",
                        format!("{cidr} overlaps IPPool {other:?} ({other_cidr}); pools must be disjoint"),
                    );
                }
            }
            parsed.push((name, cidr));
        }
        if let Err(e) = own.finish() {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
