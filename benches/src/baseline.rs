//! `baseline-iperf3`: TCP throughput between two lab nodes, and between two pods
//! on those nodes wired by hand the Calico way (static /32 routes, proxy-ARP
//! veths, no agent). Later dataplane figures are ratios against the pod path.

use std::net::IpAddr;

use margay_lab::netns::Netns;
use margay_lab::topology::netns_prefix;
use margay_lab::{LabGuard, Topology, UpOptions, handwired};

use crate::figure::{Better, Figure, Measure, median};
use crate::iperf::{IperfServer, tcp_throughput};
use crate::{Benchmark, Context};

pub fn benchmark() -> Benchmark {
    Benchmark {
        name: "baseline-iperf3",
        about: "iperf3 node to node and pod to pod over a hand-wired Calico-style path",
        run,
    }
}

fn run(ctx: &Context) -> anyhow::Result<Vec<Figure>> {
    let lab = LabGuard::up(&UpOptions {
        nodes: 2,
        topology: Topology::L2,
        state_dir: ctx.work_dir.join("baseline-lab"),
        bare: true,
        agents: false,
        ipv6_pool: false,
        agent_args: Vec::new(),
    })?;
    let (n1, n2) = (&lab.plan().nodes[0], &lab.plan().nodes[1]);
    let (node1, node2) = (Netns::open(&n1.netns), Netns::open(&n2.netns));
    let prefix = netns_prefix(&lab.plan().id);
    let pod_a = handwired::wire_pod(
        &node1,
        &format!("{prefix}pod-a"),
        "mgyhanda",
        "10.244.1.2".parse()?,
    )?;
    let pod_b = handwired::wire_pod(
        &node2,
        &format!("{prefix}pod-b"),
        "mgyhandb",
        "10.244.2.2".parse()?,
    )?;
    handwired::route_to(&node1, pod_b.ip, n2.ipv4)?;
    handwired::route_to(&node2, pod_a.ip, n1.ipv4)?;

    let _node_server = IperfServer::start(&node2, 5201)?;
    let _pod_server = IperfServer::start(&pod_b.netns, 5201)?;
    let (rounds, secs) = if ctx.quick { (1, 2) } else { (3, 4) };
    let (mut nodes, mut pods) = (Vec::new(), Vec::new());
    // Alternate the two paths so drift in machine load hits both alike.
    for _ in 0..rounds {
        nodes.push(tcp_throughput(&node1, IpAddr::V4(n2.ipv4), 5201, secs)? / 1e9);
        pods.push(tcp_throughput(&pod_a.netns, IpAddr::V4(pod_b.ip), 5201, secs)? / 1e9);
    }
    Ok(vec![Figure::new(
        "TCP throughput across nodes",
        Measure::new("hand-wired pod to pod", median(&mut pods), "Gbit/s"),
        Measure::new("node to node", median(&mut nodes), "Gbit/s"),
        Better::Higher,
    )])
}
