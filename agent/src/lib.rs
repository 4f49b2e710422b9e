//! The per-node agent: watches the API, programs routes, tunnels and nftables,
//! runs the BGP speaker and serves the CNI socket.
//!
//! Empty so far; the pods-on-a-node issue starts it.
