//! The IR in the kernel: rendering to nftables ([`render`]), libnftables
//! in-process ([`libnft`]), and the dataplane that applies full tables and
//! deltas and reconciles against what the kernel holds ([`dataplane`]), and
//! raw netlink batches for hash-set element changes ([`netlink`]).

pub mod dataplane;
pub mod libnft;
pub mod netlink;
pub mod render;

pub use dataplane::{DataplaneStats, NftDataplane, ReconcileReport};
pub use libnft::{Nft, NftError};
pub use render::{RenderConfig, Renderer};
