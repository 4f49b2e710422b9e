//! NAT outgoing per pool.
