//! The per-node agent (Felix + BIRD in one): watches the API, programs routes
//! (later tunnels and nftables, and runs the BGP speaker), and serves the CNI
//! endpoint socket.
//!
//! Layout, following the data flow in DESIGN.md:
//! - [`datastore`]: kube-rs reflectors (local pods, nodes, namespaces, Margay CRDs);
//! - [`calc`]: pure decisions (endpoint table, route plans, sysctls, addressing, MTU);
//! - [`dataplane`]: effects on the kernel (routes, sysctls) reconciled against what it holds;
//! - [`endpoint_service`]: the unix socket the CNI plugin calls;
//! - [`routing`]: BGP between nodes (speaker glue, proto-88 kernel routes, `/bgp/` status);
//! - [`config`], [`health`], [`metrics`]: configuration, `/livez` `/readyz`, `/metrics`.

pub mod agent;
pub mod calc;
pub mod config;
pub mod dataplane;
pub mod datastore;
pub mod endpoint_service;
pub mod endpoint_store;
pub mod health;
pub mod http;
pub mod ipam_gc;
pub mod logging;
pub mod metrics;
pub mod nat;
pub mod overlay;
pub mod routing;
