//! Policy compilation: Kubernetes NetworkPolicy and Margay GlobalNetworkPolicy
//! compiled into one IR ([`ir`]), read by the nftables renderer ([`nft`]) and
//! by the evaluator ([`eval`]) behind `margayctl policy explain`: what we
//! explain is what we enforce.
//!
//! - [`model`]: inputs besides policies (namespaces, pods, local endpoints);
//! - [`translate`]: one policy → chains over set keys (upstream NetworkPolicy
//!   semantics; GlobalNetworkPolicy as in ADR 0003);
//! - [`compiler`]: inputs → [`ir::Ir`], incrementally, with a [`ir::Delta`]
//!   per change;
//! - [`eval`]: is this packet allowed, and by which rule;
//! - [`cluster`]: the same for two pods of a cluster snapshot (`policy
//!   explain`);
//! - [`nft`]: the IR as an `inet margay` nftables table, and the kernel
//!   backend (libnftables in-process, ADR 0004).

pub mod cluster;
pub mod compiler;
pub mod eval;
pub mod ir;
pub mod model;
pub mod nft;
pub mod translate;

pub use cluster::{ClusterExplainer, ClusterSnapshot, ExplainError, PairExplanation};
pub use compiler::Compiler;
pub use ir::{Delta, Direction, Ir, PolicyRef};
pub use model::{LocalEndpoint, NamedPort, Namespace, Pod, PodKey};
