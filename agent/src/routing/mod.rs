//! BGP routing between nodes (the BIRD half of calico-node, in-process):
//!
//! - [`detect`], [`node`]: this node's addresses and what it records on its
//!   Node object (`margay.dev/ipv4Address` ...), and reading other nodes';
//! - [`peers`]: who to peer with, from nodes, BGPConfiguration and BGPPeers;
//! - [`announce`]: which prefixes this node originates, and its blackholes;
//! - [`route_plan`]: the proto-88 routes wanted vs. held (pure);
//! - [`kernel`]: rtnetlink effects for those routes and the host addresses;
//! - [`status`]: `/bgp/...` JSON on the health listener; [`metrics`]: `margay_bgp_*`;
//! - [`watch`]: reflectors for IPAM blocks and the BGP kinds;
//! - [`runner`]: the task that ties them to the `margay_bgp` speaker.
//!
//! Everything but `kernel`, `watch` and `runner` is pure and unit-tested.

pub mod announce;
pub mod detect;
pub mod kernel;
pub mod metrics;
pub mod node;
pub mod peers;
pub mod route_plan;
pub mod runner;
pub mod status;
pub mod watch;

use std::net::{IpAddr, Ipv4Addr};

/// What the agent is on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Role {
    /// A node that runs pods: announces its blocks, installs learned routes.
    #[default]
    Node,
    /// A route reflector: reflects between clients; does not install routes
    /// to pods (it may still run the endpoint service).
    RouteReflector,
}

/// Routing settings (flags, see `config.rs`).
#[derive(Debug, Clone)]
pub struct RoutingSettings {
    pub enabled: bool,
    pub role: Role,
    pub node_ip: Option<IpAddr>,
    pub node_ipv6: Option<IpAddr>,
    pub autodetect_v4: detect::DetectMethod,
    /// `None`: no IPv6 address unless `node_ipv6` is given.
    pub autodetect_v6: Option<detect::DetectMethod>,
    /// Route reflector cluster id (default: the router id) when `role` is
    /// route-reflector.
    pub rr_cluster_id: Option<Ipv4Addr>,
    /// Per-node AS override, recorded on the Node.
    pub as_number: Option<u32>,
    /// Namespace of the Secrets BGPPeer passwords refer to.
    pub secrets_namespace: String,
    /// Sweep stale proto-88 routes after this long even if BGP has not
    /// converged.
    pub sweep_timeout: std::time::Duration,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        RoutingSettings {
            enabled: true,
            role: Role::Node,
            node_ip: None,
            node_ipv6: None,
            autodetect_v4: detect::DetectMethod::FirstFound,
            autodetect_v6: Some(detect::DetectMethod::FirstFound),
            rr_cluster_id: None,
            as_number: None,
            secrets_namespace: "kube-system".into(),
            sweep_timeout: std::time::Duration::from_secs(120),
        }
    }
}
