//! The `margay` CNI plugin.
//!
//! Empty so far; the pods-on-a-node issue fills it.
