//! `margay-bgpd`'s pieces that tests and benchmarks also use: the config
//! file and the control socket protocol.

pub mod config;
pub mod control;
pub mod render;

pub use config::{Announcement, DaemonConfig, DaemonConfigError};
pub use control::{ControlError, Request, Response, request, serve};
