//! The IPAM bookkeeping kinds: `IPAMBlock`, `BlockAffinity`, `IPAMHandle` and
//! the singleton `IPAMConfiguration`. Blocks, affinities and handles are
//! written by Margay's IPAM only; operators read them (`kubectl get ipamblocks`).

use crate::names;
use crate::net::Cidr;
use crate::validate::{Problems, ValidationError};
use kube::CustomResource;
use kube::core::Duration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Prefix of `IPAMBlockSpec::affinity` for node affinity.
pub const HOST_AFFINITY_PREFIX: &str = "host:";

/// A block of addresses: the unit a node claims from a pool. Every write to a
/// block is a compare-and-swap on its `resourceVersion`, which is what makes
/// double allocation impossible.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "margay.dev",
    version = "v1",
    kind = "IPAMBlock",
    plural = "ipamblocks",
    doc = "A block of pod addresses and who holds each one. Written by Margay IPAM only.",
    derive = "PartialEq",
    printcolumn(name = "CIDR", type_ = "string", json_path = ".spec.cidr"),
    printcolumn(name = "Affinity", type_ = "string", json_path = ".spec.affinity"),
    printcolumn(name = "In use", type_ = "integer", json_path = ".spec.inUse"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct IPAMBlockSpec {
    /// The block's network; the object's name is derived from it.
    #[schemars(length(max = 43))]
    pub cidr: String,
    /// `host:<node>` when a node holds the block, absent when nobody does
    /// (its node was deleted while others still borrowed addresses from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 260))]
    pub affinity: Option<String>,
    /// Allocated addresses, sorted by ordinal. An ordinal not listed is free
    /// (unless cooling down).
    #[serde(default)]
    pub allocations: Vec<AllocationRecord>,
    /// Recently released ordinals that must not be reused yet
    /// (`IPAMConfiguration.spec.releasedAddressCooldown`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cooling: Vec<CoolingRecord>,
    /// Number of allocations; informational (for `kubectl get`), recomputed on
    /// every write.
    #[serde(default)]
    pub in_use: u32,
}

/// One allocated address of a block.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllocationRecord {
    /// Offset of the address from the block's network address.
    pub ordinal: u32,
    /// Who holds it: the container id for pods (CNI), or e.g.
    /// `vxlan-tunnel-addr-<node>` for a node's tunnel address.
    #[schemars(length(max = 512))]
    pub handle: String,
    /// The node that allocated it, when that is not the block's affinity
    /// (a borrowed address, or a block without affinity). Absent means the
    /// block's node: the common case costs no bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub node: Option<String>,
    /// The pod's namespace, for pod addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The pod's name, for pod addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// A released ordinal and when it was released.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoolingRecord {
    pub ordinal: u32,
    /// Unix time, seconds.
    pub released_at: i64,
}

impl IPAMBlockSpec {
    /// The node in `affinity`, if it is a host affinity.
    pub fn affine_node(&self) -> Option<&str> {
        self.affinity
            .as_deref()
            .and_then(|a| a.strip_prefix(HOST_AFFINITY_PREFIX))
    }
}

/// Check a block's internal consistency (what the allocator relies on).
pub fn validate_ipam_block(block: &IPAMBlock) -> Result<(), ValidationError> {
    let mut p = Problems::new("IPAMBlock", block.metadata.name.clone().unwrap_or_default());
    crate::resources::check_object_name(&mut p, &block.metadata);
    let s = &block.spec;
    let cidr = match Cidr::parse_strict(&s.cidr) {
        Ok(c) => Some(c),
        Err(e) => {
            p.add("spec.cidr", e.to_string());
            None
        }
    };
    if let (Some(cidr), Some(name)) = (cidr, &block.metadata.name)
        && *name != names::block_name(&cidr)
    {
        p.add(
            "metadata.name",
            format!("must be {:?} for CIDR {cidr}", names::block_name(&cidr)),
        );
    }
    if let Some(a) = &s.affinity
        && !a.starts_with(HOST_AFFINITY_PREFIX)
    {
        p.add(
            "spec.affinity",
            format!("{a:?}: allowed form is host:<node>"),
        );
    }
    let size = cidr.map(|c| c.size()).unwrap_or(u128::MAX);
    let mut seen = BTreeSet::new();
    for (i, a) in s.allocations.iter().enumerate() {
        if u128::from(a.ordinal) >= size {
            p.add(
                format!("spec.allocations[{i}].ordinal"),
                format!("{} is outside the block: allowed 0..{size}", a.ordinal),
            );
        }
        if !seen.insert(a.ordinal) {
            p.add(
                format!("spec.allocations[{i}].ordinal"),
                format!("ordinal {} is allocated twice", a.ordinal),
            );
        }
        if a.handle.is_empty() {
            p.add(format!("spec.allocations[{i}].handle"), "must not be empty");
        }
        if a.node.is_none() && s.affinity.is_none() {
            p.add(
                format!("spec.allocations[{i}].node"),
                "required in a block without affinity",
            );
        }
    }
    for (i, c) in s.cooling.iter().enumerate() {
        if seen.contains(&c.ordinal) {
            p.add(
                format!("spec.cooling[{i}].ordinal"),
                format!("ordinal {} is both allocated and cooling down", c.ordinal),
            );
        }
    }
    if s.in_use as usize != s.allocations.len() {
        p.add(
            "spec.inUse",
            format!(
                "{} but {} allocations are listed",
                s.in_use,
                s.allocations.len()
            ),
        );
    }
    p.finish()
}

/// State of a node's claim on a block.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AffinityState {
    /// Written before the block; the claim is not final until the block exists
    /// with this node's affinity. A crash here is recovered by the next claim or GC.
    Pending,
    /// The block exists and is this node's.
    Confirmed,
    /// Being released: no new allocations from the block.
    PendingDeletion,
}

/// A node's claim on a block.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "margay.dev",
    version = "v1",
    kind = "BlockAffinity",
    plural = "blockaffinities",
    doc = "A node's claim on an address block. Written by Margay IPAM only.",
    derive = "PartialEq",
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(name = "CIDR", type_ = "string", json_path = ".spec.cidr"),
    printcolumn(name = "State", type_ = "string", json_path = ".spec.state"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BlockAffinitySpec {
    #[schemars(length(min = 1, max = 253))]
    pub node: String,
    #[schemars(length(max = 43))]
    pub cidr: String,
    pub state: AffinityState,
}

pub fn validate_block_affinity(a: &BlockAffinity) -> Result<(), ValidationError> {
    let mut p = Problems::new("BlockAffinity", a.metadata.name.clone().unwrap_or_default());
    crate::resources::check_object_name(&mut p, &a.metadata);
    if a.spec.node.is_empty() {
        p.add("spec.node", "must not be empty");
    }
    match Cidr::parse_strict(&a.spec.cidr) {
        Err(e) => p.add("spec.cidr", e.to_string()),
        Ok(cidr) => {
            if let Some(name) = &a.metadata.name {
                let want = names::affinity_name(&a.spec.node, &cidr);
                if *name != want {
                    p.add("metadata.name", format!("must be {want:?}"));
                }
            }
        }
    }
    p.finish()
}

/// Index from a handle to the blocks holding its addresses. Margay writes one
/// only for addresses outside the allocating node's own blocks (borrowed or
/// explicitly requested); see docs/adr/0001-ipam-writes-per-allocation.md.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "margay.dev",
    version = "v1",
    kind = "IPAMHandle",
    plural = "ipamhandles",
    doc = "Where a handle's addresses outside its node's own blocks are. Written by Margay IPAM only.",
    derive = "PartialEq",
    printcolumn(name = "Handle", type_ = "string", json_path = ".spec.handleID"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct IPAMHandleSpec {
    /// The handle (the name may be a hash of it).
    #[serde(rename = "handleID")]
    #[schemars(length(min = 1, max = 512))]
    pub handle_id: String,
    /// The node that allocated.
    pub node: String,
    /// Block CIDR -> number of this handle's addresses in it.
    #[serde(default)]
    pub blocks: BTreeMap<String, u32>,
}

/// Cluster-wide IPAM settings. One object, named `default`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "margay.dev",
    version = "v1",
    kind = "IPAMConfiguration",
    plural = "ipamconfigurations",
    doc = "Cluster-wide IPAM settings; one object named default.",
    derive = "PartialEq",
    printcolumn(
        name = "StrictAffinity",
        type_ = "boolean",
        json_path = ".spec.strictAffinity"
    ),
    printcolumn(
        name = "MaxBlocksPerHost",
        type_ = "integer",
        json_path = ".spec.maxBlocksPerHost"
    )
)]
#[serde(rename_all = "camelCase")]
#[derive(Default)]
pub struct IPAMConfigurationSpec {
    /// Never hand out an address from another node's block: no borrowing, and a
    /// requested address must lie in one of the node's own blocks (or a free one).
    #[serde(default)]
    pub strict_affinity: bool,
    /// Most blocks one node may hold; 0 means no limit. When reached, the node
    /// borrows (unless strictAffinity) or fails.
    #[serde(default)]
    pub max_blocks_per_host: u32,
    /// Claim new blocks when a node's blocks are full (default true). When
    /// false, nodes only use blocks they have or borrow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_allocate_blocks: Option<bool>,
    /// How long a released address is kept out of use (default 0s: reused at
    /// once). Guards against stale conntrack/ARP/DNS pointing a new pod at an old
    /// pod's traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::resources::DURATION_PATTERN))]
    pub released_address_cooldown: Option<Duration>,
    /// How long an allocation must look leaked (pod or node gone) before the
    /// garbage collector releases it (default 15m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::resources::DURATION_PATTERN))]
    pub leak_grace_period: Option<Duration>,
}

/// Default `leakGracePeriod`, as Calico's.
pub const DEFAULT_LEAK_GRACE_PERIOD: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// Longest `releasedAddressCooldown` we accept.
pub const MAX_RELEASED_ADDRESS_COOLDOWN: std::time::Duration =
    std::time::Duration::from_secs(24 * 3600);

/// `IPAMConfiguration` with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedIpamConfig {
    pub strict_affinity: bool,
    /// `None` = unlimited.
    pub max_blocks_per_host: Option<u32>,
    pub auto_allocate_blocks: bool,
    pub released_address_cooldown: std::time::Duration,
    pub leak_grace_period: std::time::Duration,
}

impl Default for ResolvedIpamConfig {
    fn default() -> Self {
        ResolvedIpamConfig::from_spec(&IPAMConfigurationSpec::default())
    }
}

impl ResolvedIpamConfig {
    /// Apply defaults (an absent object means all defaults).
    pub fn from_spec(s: &IPAMConfigurationSpec) -> ResolvedIpamConfig {
        ResolvedIpamConfig {
            strict_affinity: s.strict_affinity,
            max_blocks_per_host: (s.max_blocks_per_host > 0).then_some(s.max_blocks_per_host),
            auto_allocate_blocks: s.auto_allocate_blocks.unwrap_or(true),
            released_address_cooldown: s
                .released_address_cooldown
                .map(std::time::Duration::from)
                .unwrap_or_default(),
            leak_grace_period: s
                .leak_grace_period
                .map(std::time::Duration::from)
                .unwrap_or(DEFAULT_LEAK_GRACE_PERIOD),
        }
    }
}

pub fn validate_ipam_configuration(c: &IPAMConfiguration) -> Result<(), ValidationError> {
    let mut p = Problems::new(
        "IPAMConfiguration",
        c.metadata.name.clone().unwrap_or_default(),
    );
    crate::resources::check_singleton_name(&mut p, &c.metadata);
    if let Some(d) = c.spec.released_address_cooldown {
        crate::resources::check_duration(
            &mut p,
            "spec.releasedAddressCooldown",
            d,
            std::time::Duration::ZERO,
            MAX_RELEASED_ADDRESS_COOLDOWN,
        );
    }
    if let Some(d) = c.spec.leak_grace_period {
        crate::resources::check_duration(
            &mut p,
            "spec.leakGracePeriod",
            d,
            std::time::Duration::ZERO,
            std::time::Duration::from_secs(7 * 24 * 3600),
        );
    }
    p.finish()
}

pub fn validate_ipam_handle(h: &IPAMHandle) -> Result<(), ValidationError> {
    let mut p = Problems::new("IPAMHandle", h.metadata.name.clone().unwrap_or_default());
    crate::resources::check_object_name(&mut p, &h.metadata);
    if h.spec.handle_id.is_empty() {
        p.add("spec.handleID", "must not be empty");
    } else if let Some(name) = &h.metadata.name {
        let want = names::handle_name(&h.spec.handle_id);
        if *name != want {
            p.add(
                "metadata.name",
                format!("must be {want:?} for handle {:?}", h.spec.handle_id),
            );
        }
    }
    for (i, (cidr, _)) in h.spec.blocks.iter().enumerate() {
        if let Err(e) = Cidr::parse_strict(cidr) {
            p.add(format!("spec.blocks[{i}]"), e.to_string());
        }
    }
    p.finish()
}
