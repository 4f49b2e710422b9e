//! Margay's BGP speaker. Knows nothing of Kubernetes.
//!
//! - [`codec`]: the wire codec (pure; message types, framing, RFC 7606
//!   decoding, encoding).
//! - [`config`], [`policy`]: speaker and peer settings, prefix filters.
//! - [`fsm`]: the RFC 4271 session state machine (pure).
//! - [`rib`]: Adj-RIB-In / Loc-RIB / computed Adj-RIB-Out, decision
//!   process, route reflection, graceful-restart stale handling (pure).
//! - [`session`]: the per-peer task and its sockets (effects).
//! - [`speaker`]: the API the agent uses ([`Speaker::start`],
//!   [`SpeakerHandle`], [`BestRouteEvent`]).
//! - [`daemon`]: `margay-bgpd`'s config file and control socket.
//!
//! `docs/bgp.md` in the repository describes the design, the API contract
//! and the tests.

pub mod codec;
pub mod config;
pub mod daemon;
pub mod fsm;
pub mod policy;
pub mod rib;
pub mod session;
pub mod speaker;
pub mod status;

pub use codec::{Community, Family, LargeCommunity, Origin, Prefix};
pub use config::{AddressFamily, ConfigError, GracefulRestartConfig, PeerConfig, SpeakerConfig};
pub use policy::{FilterAction, PrefixFilter, PrefixRule};
pub use rib::{BestRoute, RouteAttrs, RouteView};
pub use speaker::{
    BestRouteEvent, LocalRoute, RouteQuery, ShutdownMode, Speaker, SpeakerError, SpeakerHandle,
};
pub use status::PeerStatus;
