//! Overlays: VXLAN and IPIP between nodes, per IPPool (`Never | Always |
//! CrossSubnet`).
//!
//! - [`encap`]: which encapsulation a pool wants towards a node (pure);
//! - [`host`]: our prefix lengths and the underlay MTU from the host (pure);
//! - [`nodes`]: nodes' addresses and VTEPs from their `Node` objects (pure);
//! - [`resolver`]: [`OverlayResolver`](resolver::OverlayResolver), the
//!   [`RouteResolver`](crate::calc::remote_routes::RouteResolver) routing's
//!   route programmer asks how to reach a remote block (pure);
//! - [`vxlan`]: the VXLAN device and per-peer entries wanted, and the plan
//!   from the kernel's (pure);
//! - [`dataplane`]: applying those plans to the kernel (effects);
//! - [`netlink`]: the devices, addresses, neighbour and FDB entries (effects);
//! - [`service`]: the task tying them together, [`start`] and
//!   [`OverlayHandle`].

pub mod dataplane;
pub mod encap;
pub mod host;
pub mod netlink;
pub mod nodes;
pub mod resolver;
pub mod service;
pub mod vxlan;

pub use service::{OverlayConfig, OverlayHandle, OverlayStatus, start};
