//! Block-based IPAM: pools cut into blocks claimed by node affinity, with every
//! write a compare-and-swap so no address is ever handed out twice.
//!
//! - [`Allocator`]: allocate (IPv4 and/or IPv6, any or a requested address,
//!   from any or requested pools), release by handle or address;
//! - [`GarbageCollector`]: leaked allocations, empty blocks, stale affinities
//!   and handle indexes;
//! - [`audit()`]: check the stored state against the invariants;
//! - [`store`]: the storage trait (the only effect) and its implementations:
//!   in memory, on the Kubernetes API, and an instrumented wrapper.
//!
//! The block format and write protocol are described in [`block`],
//! [`allocator`] and `claim`; docs/adr/0001-ipam-writes-per-allocation.md
//! explains where handles are stored.

pub mod allocator;
pub mod audit;
pub mod bench;
pub mod block;
mod cas;
mod claim;
pub mod clock;
mod context;
pub mod error;
pub mod gc;
pub mod store;

pub use allocator::{AddressRequest, AllocateRequest, AllocatedAddress, Allocation, Allocator};
pub use audit::{Audit, audit};
pub use block::{Block, Holder};
pub use cas::MAX_CAS_ATTEMPTS;
pub use clock::{Clock, ManualClock, SystemClock};
pub use context::IPAM_CONFIG_NAME;
pub use error::IpamError;
pub use gc::{GarbageCollector, GcReport, GcSettings};
pub use store::{IpamStore, NodeInfo, PodInfo, StoreError};
