//! Shared helpers of the `netns_routing_*` tests: a lab with agents, pods
//! made through the real CNI plugin, the proto-88 routes of each node, the
//! agents' `/bgp/peers` status, and polling with a deadline.
//!
//! Needs the `margay-lab`, `margay-agent` and `margay-cni` binaries built
//! (`make test` builds every binary first).

#![allow(dead_code)]

use margay_agent::routing::status::PeersAnswer;
use margay_api::net::Cidr;
use margay_lab::netns::Netns;
use margay_lab::pods::spec::PodSpec;
use margay_lab::pods::{PodRecord, PodRuntime};
use margay_lab::topology::Topology;
use margay_lab::{LabGuard, UpOptions};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long BGP and the kernel may take to reflect a change before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn up(dir: &Path, nodes: usize, topology: Topology, ipv6: bool, args: &[&str]) -> LabGuard {
    let mut opts = UpOptions::new(dir);
    opts.nodes = nodes;
    opts.topology = topology;
    opts.ipv6_pool = ipv6;
    opts.agent_args = args.iter().map(|s| s.to_string()).collect();
    LabGuard::up(&opts).expect("lab up")
}

/// Polls `cond` until it holds; fails with `what` and the last detail after
/// [`DEADLINE`].
pub fn until(what: &str, mut cond: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match cond() {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("timed out waiting for {what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// `ip -o route show proto 88` of a node, normalised spaces (`-6` for IPv6).
pub fn routes88(node: &Netns, v6: bool) -> Vec<String> {
    let mut args = vec![];
    if v6 {
        args.push("-6");
    }
    args.extend(["-o", "route", "show", "proto", "88"]);
    node.ip(&args)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            l.replace('\\', " ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// The block (of `len` bits) an address is in.
pub fn block_of(ip: IpAddr, len: u8) -> Cidr {
    Cidr::new_truncating(ip, len).expect("block")
}

pub fn pod(rt: &PodRuntime, ns: &str, name: &str, node: &str) -> PodRecord {
    rt.create_pod(&PodSpec::new(ns, name, node))
        .unwrap_or_else(|e| panic!("creating pod {ns}/{name} on {node}: {e}"))
}

/// One ping from a pod's namespace.
pub fn pings(from: &PodRecord, to: IpAddr) -> Result<(), String> {
    let out = Netns::open(&from.netns)
        .command("ping")
        .args(["-c", "1", "-W", "1", &to.to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}/{} cannot ping {to}: {}",
            from.namespace,
            from.name,
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// `/bgp/peers` of a node's agent.
pub fn bgp_peers(node: &Netns) -> Result<PeersAnswer, String> {
    let body = node
        .run(
            "curl",
            &["-sf", "--max-time", "5", "http://127.0.0.1:9099/bgp/peers"],
        )
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
}

/// Every peer of `node` is Established and there are `n` of them, of `kind`.
pub fn established(node: &Netns, n: usize, kind: &str) -> Result<(), String> {
    let p = bgp_peers(node)?;
    let up: Vec<_> = p
        .peers
        .iter()
        .filter(|r| r.state == "Established" && r.peer_type == kind)
        .collect();
    if up.len() == n && p.peers.len() == n {
        Ok(())
    } else {
        Err(format!("{}: {:?}", node.name(), p.peers))
    }
}

/// A tokio runtime for API calls from a plain test thread.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn client(rt: &tokio::runtime::Runtime, lab: &margay_lab::Lab) -> kube::Client {
    rt.block_on(margay_lab::nodes::client(
        &lab.kubeconfig().expect("kubeconfig"),
    ))
    .expect("client")
}
