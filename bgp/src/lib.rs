//! Margay's BGP speaker. Knows nothing of Kubernetes.
//!
//! Empty so far; the BGP speaker issue fills it.
