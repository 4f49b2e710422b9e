//! Block-based IPAM: pools cut into blocks claimed by node affinity, with every
//! write a compare-and-swap so no address is ever handed out twice.
//!
//! Empty so far; the IPAM issue fills it.
