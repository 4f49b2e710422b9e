//! The IR in the kernel: rendering to nftables ([`render`]), libnftables
//! in-process ([`libnft`]), and the dataplane that applies full tables and
//! deltas and reconciles against what the kernel holds ([`dataplane`]).

pub mod dataplane;
pub mod libnft;
pub mod render;

pub use dataplane::{NftDataplane, ReconcileReport};
pub use libnft::{Nft, NftError};
pub use render::{RenderConfig, Renderer};
