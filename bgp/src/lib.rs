//! Margay's BGP speaker. Knows nothing of Kubernetes.
//!
//! - [`codec`]: the wire codec (pure; message types, framing, RFC 7606
//!   decoding, encoding).

pub mod codec;
