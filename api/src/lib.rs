//! Margay's resource model: the `margay.dev/v1` kinds, label and Calico-style
//! selectors, and validation with errors that name the object and field.
//!
//! - [`resources`]: the kinds (`IPPool`, `IPAMBlock`, `BlockAffinity`,
//!   `IPAMHandle`, `IPAMConfiguration`, `BGPConfiguration`, `BGPPeer`,
//!   `AgentConfiguration`, `GlobalNetworkPolicy`), each with `validate_*` and defaults;
//! - [`selector`]: one selector engine for selector strings and `LabelSelector`s;
//! - [`net`]: CIDRs; [`names`]: derived object names;
//! - [`crds`]: the generated CustomResourceDefinitions;
//! - [`endpoint`]: the protocol between the CNI plugin and the agent.

pub mod crds;
pub mod endpoint;
pub mod names;
pub mod net;
pub mod resources;
pub mod selector;
pub mod validate;

/// The API group of every Margay kind.
pub const GROUP: &str = "margay.dev";
/// The version of every Margay kind.
pub const VERSION: &str = "v1";

pub use resources::agent::{AgentConfiguration, AgentConfigurationSpec, ResolvedAgentConfig};
pub use resources::bgp::{
    BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec, PeerAddress,
};
pub use resources::ipam::{
    AffinityState, AllocationRecord, BlockAffinity, BlockAffinitySpec, IPAMBlock, IPAMBlockSpec,
    IPAMConfiguration, IPAMConfigurationSpec, IPAMHandle, IPAMHandleSpec, ResolvedIpamConfig,
};
pub use resources::ippool::{EncapMode, IPPool, IPPoolSpec, ResolvedPool};
pub use resources::policy::{
    EntityRule, GlobalNetworkPolicy, GlobalNetworkPolicySpec, GlobalRule, IcmpMatch, PolicyType,
    PortSpec, Protocol, RuleAction, validate_global_network_policy,
};
pub use selector::{Expr, Labels, Selector, SelectorError};
pub use validate::{FieldError, ValidationError};
