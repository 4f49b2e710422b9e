//! The benchmark runner behind `make bench`: named benchmarks, each reporting
//! figures measured against a comparator in the same run, printed and written
//! into `docs/performance.md`.
//!
//! Adding a benchmark: a module with `pub fn benchmark() -> Benchmark`, listed
//! in [`registry`]. Micro-benchmarks use criterion inside their crate; macro
//! ones drive the lab through `margay_lab`.

pub mod agent_rss;
pub mod apiserver;
pub mod baseline;
pub mod bgp_gen;
pub mod bgp_load;
pub mod bgp_sessions;
pub mod cni;
pub mod figure;
pub mod ipam;
pub mod iperf;
pub mod nftmon;
pub mod pod_throughput;
pub mod policy;
pub mod policy_latency;
pub mod report;
pub mod route_propagation;

use std::path::PathBuf;

pub use figure::{Better, Figure, Goal, Measure};

/// What a benchmark gets to work with.
#[derive(Debug, Clone)]
pub struct Context {
    /// Shorter runs (fewer rounds, smaller inputs) for smoke-testing the harness.
    pub quick: bool,
    /// A scratch directory, removed after the run.
    pub work_dir: PathBuf,
}

/// A named benchmark.
#[derive(Debug, Clone, Copy)]
pub struct Benchmark {
    pub name: &'static str,
    /// One line: what is measured against what.
    pub about: &'static str,
    pub run: fn(&Context) -> anyhow::Result<Vec<Figure>>,
}

/// Every benchmark, in the order `make bench` runs them.
pub fn registry() -> Vec<Benchmark> {
    vec![
        baseline::benchmark(),
        apiserver::benchmark(),
        ipam::benchmark(),
        agent_rss::benchmark(),
        cni::benchmark(),
        policy::programming(),
        policy::throughput(),
        policy_latency::benchmark(),
        bgp_load::benchmark(),
        bgp_sessions::benchmark(),
        route_propagation::benchmark(),
        pod_throughput::benchmark(),
    ]
}
