//! `AgentConfiguration`: settings of `margay-agent` (Margay's equivalent of
//! Calico's FelixConfiguration). The object named `default` applies to every
//! node; an object named `node.<nodename>` overrides, field by field, the
//! fields it sets for that one node.
//!
//! Every field is optional; [`ResolvedAgentConfig::merge`] applies the
//! override, then the defaults documented on each field.

use crate::validate::{Problems, ValidationError};
use kube::CustomResource;
use kube::core::Duration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration as StdDuration;

/// Name of the cluster-wide object.
pub const AGENT_CONFIG_DEFAULT_NAME: &str = "default";
/// Prefix of per-node override objects.
pub const AGENT_CONFIG_NODE_PREFIX: &str = "node.";

// Log verbosity.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum LogLevel {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

// Log line format.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Settings of `margay-agent`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[kube(
    group = "margay.dev",
    version = "v1",
    kind = "AgentConfiguration",
    plural = "agentconfigurations",
    doc = "Settings of margay-agent: `default` for all nodes, `node.<nodename>` overrides for one node.",
    derive = "PartialEq",
    printcolumn(name = "LogLevel", type_ = "string", json_path = ".spec.logLevel"),
    printcolumn(name = "MTU", type_ = "integer", json_path = ".spec.mtu"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfigurationSpec {
    /// Log verbosity (default Info).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<LogLevel>,
    /// Log line format (default Text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// Port of the `/livez` and `/readyz` endpoints (default 9099).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub health_port: Option<u16>,
    /// Port of the Prometheus `/metrics` endpoint (default 9091); 0 turns metrics off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_port: Option<u16>,
    /// MTU of pod interfaces, 576..=9216. Unset (default): the smallest MTU of the
    /// host's uplinks minus the overhead of the encapsulation in use (VXLAN 50,
    /// IPIP 20 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 576, max = 9216))]
    pub mtu: Option<u32>,
    /// How often the route manager re-reads the kernel routing table and repairs
    /// drift (default 90s; 0s: only on change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::resources::DURATION_PATTERN))]
    pub route_refresh_interval: Option<Duration>,
    /// How often the nftables manager re-reads its table and repairs drift
    /// (default 90s; 0s: only on change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::resources::DURATION_PATTERN))]
    pub dataplane_refresh_interval: Option<Duration>,
    /// VXLAN network identifier of `vxlan.margay` (default 4096), 1..=16777215.
    /// The device exists only while some pool uses vxlanMode.
    #[serde(default, rename = "vxlanVNI", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16777215))]
    pub vxlan_vni: Option<u32>,
    /// UDP port of VXLAN (default 4789).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub vxlan_port: Option<u16>,
    /// MTU of `vxlan.margay` (default: uplink MTU - 50).
    #[serde(default, rename = "vxlanMTU", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 576, max = 9216))]
    pub vxlan_mtu: Option<u32>,
    /// MTU of `tunl0` (default: uplink MTU - 20). The device exists only while
    /// some pool uses ipipMode.
    #[serde(default, rename = "ipipMTU", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 576, max = 9216))]
    pub ipip_mtu: Option<u32>,
    /// How long CNI ADD waits for the pod's policy to be programmed before it
    /// returns (default 10s; 0s: do not wait). On timeout ADD fails, so the pod
    /// never runs without its policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::resources::DURATION_PATTERN))]
    pub cni_policy_wait_timeout: Option<Duration>,
}

/// The agent's configuration for one node, every field decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedAgentConfig {
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    pub health_port: u16,
    /// `None`: metrics off.
    pub metrics_port: Option<u16>,
    /// `None`: detect.
    pub mtu: Option<u32>,
    /// `None`: only on change.
    pub route_refresh_interval: Option<StdDuration>,
    pub dataplane_refresh_interval: Option<StdDuration>,
    pub vxlan_vni: u32,
    pub vxlan_port: u16,
    pub vxlan_mtu: Option<u32>,
    pub ipip_mtu: Option<u32>,
    /// `None`: do not wait.
    pub cni_policy_wait_timeout: Option<StdDuration>,
}

impl Default for ResolvedAgentConfig {
    fn default() -> Self {
        ResolvedAgentConfig::merge(None, None)
    }
}

fn nonzero(d: StdDuration) -> Option<StdDuration> {
    (!d.is_zero()).then_some(d)
}

impl ResolvedAgentConfig {
    /// `node` (the `node.<name>` object) wins over `global` (`default`) field by
    /// field; anything neither sets takes its default.
    pub fn merge(
        global: Option<&AgentConfigurationSpec>,
        node: Option<&AgentConfigurationSpec>,
    ) -> ResolvedAgentConfig {
        macro_rules! pick {
            ($f:ident) => {
                node.and_then(|n| n.$f.clone())
                    .or_else(|| global.and_then(|g| g.$f.clone()))
            };
        }
        let dur = |d: Option<Duration>, default: u64| {
            nonzero(
                d.map(StdDuration::from)
                    .unwrap_or(StdDuration::from_secs(default)),
            )
        };
        ResolvedAgentConfig {
            log_level: pick!(log_level).unwrap_or_default(),
            log_format: pick!(log_format).unwrap_or_default(),
            health_port: pick!(health_port).unwrap_or(9099),
            metrics_port: match pick!(metrics_port) {
                Some(0) => None,
                Some(p) => Some(p),
                None => Some(9091),
            },
            mtu: pick!(mtu),
            route_refresh_interval: dur(pick!(route_refresh_interval), 90),
            dataplane_refresh_interval: dur(pick!(dataplane_refresh_interval), 90),
            vxlan_vni: pick!(vxlan_vni).unwrap_or(4096),
            vxlan_port: pick!(vxlan_port).unwrap_or(4789),
            vxlan_mtu: pick!(vxlan_mtu),
            ipip_mtu: pick!(ipip_mtu),
            cni_policy_wait_timeout: dur(pick!(cni_policy_wait_timeout), 10),
        }
    }
}

/// The name of the override object for `node`.
pub fn agent_config_name_for_node(node: &str) -> String {
    format!("{AGENT_CONFIG_NODE_PREFIX}{node}")
}

pub fn validate_agent_configuration(c: &AgentConfiguration) -> Result<(), ValidationError> {
    let name = c.metadata.name.clone().unwrap_or_default();
    let mut p = Problems::new("AgentConfiguration", name.clone());
    let node_ok = name
        .strip_prefix(AGENT_CONFIG_NODE_PREFIX)
        .is_some_and(crate::names::is_dns_subdomain);
    if name != AGENT_CONFIG_DEFAULT_NAME && !node_ok {
        p.add(
            "metadata.name",
            format!("{name:?}: allowed \"default\" or \"node.<nodename>\""),
        );
    }
    let s = &c.spec;
    if s.health_port == Some(0) {
        p.add("spec.healthPort", "0 is not a port: allowed 1..=65535");
    }
    if let (Some(h), Some(m)) = (s.health_port, s.metrics_port)
        && h == m
    {
        p.add(
            "spec.metricsPort",
            format!("{m} is also healthPort: they must differ"),
        );
    }
    for (field, v) in [
        ("spec.mtu", s.mtu),
        ("spec.vxlanMTU", s.vxlan_mtu),
        ("spec.ipipMTU", s.ipip_mtu),
    ] {
        if let Some(v) = v
            && !(576..=9216).contains(&v)
        {
            p.add(field, format!("{v} is out of range: allowed 576..=9216"));
        }
    }
    if let Some(v) = s.vxlan_vni
        && !(1..=16_777_215).contains(&v)
    {
        p.add(
            "spec.vxlanVNI",
            format!("{v} is out of range: allowed 1..=16777215"),
        );
    }
    if s.vxlan_port == Some(0) {
        p.add("spec.vxlanPort", "0 is not a port: allowed 1..=65535");
    }
    let day = StdDuration::from_secs(24 * 3600);
    for (field, d) in [
        ("spec.routeRefreshInterval", s.route_refresh_interval),
        (
            "spec.dataplaneRefreshInterval",
            s.dataplane_refresh_interval,
        ),
    ] {
        if let Some(d) = d {
            crate::resources::check_duration(&mut p, field, d, StdDuration::ZERO, day);
        }
    }
    if let Some(d) = s.cni_policy_wait_timeout {
        crate::resources::check_duration(
            &mut p,
            "spec.cniPolicyWaitTimeout",
            d,
            StdDuration::ZERO,
            StdDuration::from_secs(300),
        );
    }
    p.finish()
}
