//! The pure part of the agent: events in, desired dataplane state out. Nothing
//! here touches the kernel, the API or the filesystem, so every decision is
//! unit-tested fast and depends only on the current state (never on the order
//! events arrived in).
//!
//! - [`endpoints`]: the table of local endpoints and the routes it wants;
//! - [`routes`]: comparing wanted routes with the kernel's (mark and sweep);
//! - [`sysctls`]: host-side sysctls each endpoint interface needs;
//! - [`addressing`]: what to ask IPAM for, from pod/namespace annotations and pools;
//! - [`mtu`]: the pod MTU from the host's links.
//! - [`node_address`]: the addresses nodes publish to each other.
//! - [`remote_routes`]: how routes to other nodes' pod blocks leave this node;
//! - [`lease`]: leader election steps (who runs cluster-wide IPAM GC).
//! - [`policy`]: policy inputs into the compiler, deltas batched per pass,
//!   which tracked flows a policy change denies.

pub mod addressing;
pub mod endpoints;
pub mod lease;
pub mod mtu;
pub mod node_address;
pub mod policy;
pub mod remote_routes;
pub mod routes;
pub mod sysctls;

/// The route protocol number (`rtm_protocol`) of every route the agent
/// programs for a local endpoint. The agent owns exactly the routes carrying it:
/// it repairs them, and on start sweeps those no endpoint wants. 87 is unused
/// by iproute2's `rt_protos` and by the routing daemons we know of (Felix uses
/// 80, BIRD 12, FRR 186-192). `ip route show proto 87` lists them.
pub const ROUTE_PROTOCOL: u8 = 87;
