//! `margayctl`, the calicoctl-style command-line tool.
//!
//! Empty so far; the margayctl issue fills it.
