//! The margay.dev kinds as the CLI knows them: the names a user may type
//! (kind, plural, singular, short names, calicoctl's abbreviations), how to
//! reach them on the API, their printer columns and how to validate them.

use crate::check::{DocError, decode_and_validate, normal_spec};
use kube::core::ApiResource;
use margay_api::resources::{agent, bgp, ipam, ippool, policy};
use serde_json::Value;

/// One printer column of a kind (from its CRD's additionalPrinterColumns).
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub type_: String,
    pub json_path: String,
    /// 0: shown in tables; more: only with `-o wide`.
    pub priority: i32,
}

/// What the CLI knows of a kind.
#[derive(Debug, Clone, Copy)]
pub struct KindInfo {
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    /// Extra names accepted on the command line (short names, calicoctl's).
    pub aliases: &'static [&'static str],
    /// Written by Margay's IPAM only: writes need `--allow-ipam-writes`.
    pub ipam_internal: bool,
    /// Decode (strictly: unknown fields are errors) and run the kind's
    /// `validate_*`.
    pub validate: fn(&Value) -> Result<(), DocError>,
    /// The object's `spec` as the typed model writes it (defaults made
    /// explicit), to tell "unchanged" from "configured"; `None` if it does
    /// not decode.
    pub normal_spec: fn(&Value) -> Option<Value>,
}

impl KindInfo {
    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: margay_api::GROUP.into(),
            version: margay_api::VERSION.into(),
            api_version: format!("{}/{}", margay_api::GROUP, margay_api::VERSION),
            kind: self.kind.into(),
            plural: self.plural.into(),
        }
    }

    /// `ippool.margay.dev`, as kubectl names objects in messages.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.singular, margay_api::GROUP)
    }

    /// Printer columns from the generated CRD (the same `kubectl get` shows).
    pub fn columns(&self) -> Vec<Column> {
        let crd = margay_api::crds::all_crds()
            .into_iter()
            .find(|c| c.spec.names.kind == self.kind);
        let Some(crd) = crd else { return Vec::new() };
        crd.spec
            .versions
            .first()
            .and_then(|v| v.additional_printer_columns.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|c| Column {
                name: c.name,
                type_: c.type_,
                json_path: c.json_path,
                priority: c.priority.unwrap_or(0),
            })
            .collect()
    }
}

macro_rules! validator {
    ($ty:ty, $f:path) => {{
        fn v(value: &Value) -> Result<(), DocError> {
            decode_and_validate::<$ty>(value, $f)
        }
        v
    }};
}

/// Every kind, in the order `docs` and `diags` list them.
pub const KINDS: &[KindInfo] = &[
    KindInfo {
        kind: "IPPool",
        plural: "ippools",
        singular: "ippool",
        aliases: &["pool", "pools", "ipp", "ipps"],
        ipam_internal: false,
        validate: validator!(margay_api::IPPool, ippool::validate_ip_pool),
        normal_spec: normal_spec::<margay_api::IPPool>,
    },
    KindInfo {
        kind: "BGPConfiguration",
        plural: "bgpconfigurations",
        singular: "bgpconfiguration",
        aliases: &["bgpconfig", "bgpconfigs"],
        ipam_internal: false,
        validate: validator!(
            margay_api::BGPConfiguration,
            bgp::validate_bgp_configuration
        ),
        normal_spec: normal_spec::<margay_api::BGPConfiguration>,
    },
    KindInfo {
        kind: "BGPPeer",
        plural: "bgppeers",
        singular: "bgppeer",
        aliases: &["bgpp", "bgpps", "bp", "bps"],
        ipam_internal: false,
        validate: validator!(margay_api::BGPPeer, bgp::validate_bgp_peer),
        normal_spec: normal_spec::<margay_api::BGPPeer>,
    },
    KindInfo {
        kind: "GlobalNetworkPolicy",
        plural: "globalnetworkpolicies",
        singular: "globalnetworkpolicy",
        aliases: &["gnp", "gnps"],
        ipam_internal: false,
        validate: validator!(
            margay_api::GlobalNetworkPolicy,
            policy::validate_global_network_policy
        ),
        normal_spec: normal_spec::<margay_api::GlobalNetworkPolicy>,
    },
    KindInfo {
        kind: "AgentConfiguration",
        plural: "agentconfigurations",
        singular: "agentconfiguration",
        aliases: &["agentconfig", "agentconfigs"],
        ipam_internal: false,
        validate: validator!(
            margay_api::AgentConfiguration,
            agent::validate_agent_configuration
        ),
        normal_spec: normal_spec::<margay_api::AgentConfiguration>,
    },
    KindInfo {
        kind: "IPAMConfiguration",
        plural: "ipamconfigurations",
        singular: "ipamconfiguration",
        aliases: &["ipamconfig", "ipamconfigs"],
        ipam_internal: false,
        validate: validator!(
            margay_api::IPAMConfiguration,
            ipam::validate_ipam_configuration
        ),
        normal_spec: normal_spec::<margay_api::IPAMConfiguration>,
    },
    KindInfo {
        kind: "IPAMBlock",
        plural: "ipamblocks",
        singular: "ipamblock",
        aliases: &[],
        ipam_internal: true,
        validate: validator!(margay_api::IPAMBlock, ipam::validate_ipam_block),
        normal_spec: normal_spec::<margay_api::IPAMBlock>,
    },
    KindInfo {
        kind: "BlockAffinity",
        plural: "blockaffinities",
        singular: "blockaffinity",
        aliases: &[],
        ipam_internal: true,
        validate: validator!(margay_api::BlockAffinity, ipam::validate_block_affinity),
        normal_spec: normal_spec::<margay_api::BlockAffinity>,
    },
    KindInfo {
        kind: "IPAMHandle",
        plural: "ipamhandles",
        singular: "ipamhandle",
        aliases: &[],
        ipam_internal: true,
        validate: validator!(margay_api::IPAMHandle, ipam::validate_ipam_handle),
        normal_spec: normal_spec::<margay_api::IPAMHandle>,
    },
];

/// The kind a user typed: kind, plural, singular or alias, any case, with or
/// without `.margay.dev`.
pub fn lookup(name: &str) -> Option<&'static KindInfo> {
    let lower = name.to_ascii_lowercase();
    let bare = lower
        .strip_suffix(".margay.dev")
        .or_else(|| lower.strip_suffix(".margay.dev/v1"))
        .unwrap_or(&lower);
    KINDS.iter().find(|k| {
        k.kind.eq_ignore_ascii_case(bare)
            || k.plural == bare
            || k.singular == bare
            || k.aliases.contains(&bare)
    })
}

/// The kind of a document's `kind` field (exact, as the API demands).
pub fn by_kind(kind: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.kind == kind)
}

/// Error for an unknown kind name, listing what is accepted.
pub fn unknown_kind(name: &str) -> anyhow::Error {
    crate::exit::usage(format!(
        "unknown kind {name:?}: allowed {}",
        KINDS
            .iter()
            .map(|k| k.plural)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_like_calicoctl() {
        for (typed, kind) in [
            ("ippools", "IPPool"),
            ("IPPool", "IPPool"),
            ("pool", "IPPool"),
            ("ippools.margay.dev", "IPPool"),
            ("bgppeer", "BGPPeer"),
            ("bp", "BGPPeer"),
            ("gnp", "GlobalNetworkPolicy"),
            ("globalnetworkpolicies", "GlobalNetworkPolicy"),
            ("bgpconfig", "BGPConfiguration"),
            ("blockaffinities", "BlockAffinity"),
        ] {
            assert_eq!(lookup(typed).map(|k| k.kind), Some(kind), "{typed}");
        }
        assert!(lookup("pods").is_none());
        assert!(lookup("networkpolicy").is_none());
    }

    #[test]
    fn every_crd_has_a_kind_entry_and_columns() {
        let crds = margay_api::crds::all_crds();
        assert_eq!(crds.len(), KINDS.len());
        for crd in crds {
            let k = by_kind(&crd.spec.names.kind).expect("kind known to the CLI");
            assert_eq!(k.plural, crd.spec.names.plural);
            assert_eq!(Some(k.singular), crd.spec.names.singular.as_deref());
            for short in crd.spec.names.short_names.unwrap_or_default() {
                assert_eq!(lookup(&short).map(|x| x.kind), Some(k.kind), "{short}");
            }
            assert!(!k.columns().is_empty(), "{}", k.kind);
        }
    }
}
