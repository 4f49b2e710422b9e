//! `margay-lab`: clusters built from network namespaces on one machine, the
//! Kubernetes API emulator they use, and the scenarios that drive them.

pub mod apiserver;
