//! `margay-lab`: clusters built from network namespaces on one machine, the
//! Kubernetes API emulator they use, and the scenarios that drive them.
//!
//! The library is what tests and benchmarks use: [`Lab::up`] /
//! [`LabGuard::up`] build a cluster, [`netns`] creates and drives namespaces,
//! [`handwired`] wires Calico-style pods by hand for baselines.

pub mod agents;
pub mod apiserver;
pub mod binaries;
pub mod cmd;
pub mod handwired;
pub mod kubeconfig;
mod lab;
pub mod netns;
pub mod nodes;
pub mod pods;
pub mod pool_options;
pub mod probe;
pub mod process;
pub mod state;
pub mod topology;

use std::path::{Path, PathBuf};

pub use lab::{DownReport, Lab, LabGuard, NodeStatus, ProcessStatus, Status, UpOptions};
pub use topology::Topology;

/// Everything that can go wrong driving a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("a lab is already up in {dir} (run `margay-lab down --state-dir {dir}` first)", dir = .0.display())]
    AlreadyUp(PathBuf),
    #[error("no lab is up in {dir} (run `margay-lab up --state-dir {dir}`)", dir = .0.display())]
    NotUp(PathBuf),
    #[error("no node named {name:?} in this lab (nodes: {known}; also: router, fabric)")]
    UnknownNode { name: String, known: String },
    #[error("no command given (usage: margay-lab exec NODE -- CMD [ARGS...])")]
    EmptyCommand,
    #[error(
        "binary {0:?} not found next to this program, in $MARGAY_BIN_DIR or on $PATH (run `cargo build --workspace --bins`)"
    )]
    MissingBinary(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Command(#[from] cmd::CommandError),
    #[error(transparent)]
    Plan(#[from] topology::PlanError),
    #[error("API server: {0}")]
    ApiServer(String),
    #[error("agent: {0}")]
    Agent(String),
}

impl LabError {
    pub fn io(path: &Path, source: std::io::Error) -> LabError {
        LabError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
