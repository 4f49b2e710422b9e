//! Policy compilation: NetworkPolicy and GlobalNetworkPolicy into one IR, read by
//! the nftables renderer and by the evaluator behind `policy explain`.
//!
//! Empty so far; the policy issue fills it.
