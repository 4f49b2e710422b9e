//! Margay's BGP speaker. Knows nothing of Kubernetes.
//!
//! - [`codec`]: the wire codec (pure; message types, framing, RFC 7606
//!   decoding, encoding).
//! - [`config`], [`policy`]: speaker and peer settings, prefix filters.
//! - [`fsm`]: the RFC 4271 session state machine (pure).

pub mod codec;
pub mod config;
pub mod fsm;
pub mod policy;
pub mod rib;
