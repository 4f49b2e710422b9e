//! `pod-throughput`: iperf3 TCP between pods on two nodes through Margay
//! (agents, CNI plugin, pods' routes; remote block routes as the route
//! programmer resolves them), divided by the same path wired by hand with
//! static routes in the same lab and run, once direct and once through VXLAN
//! (`vxlanMode: Always`; the hand-wired path gets its own VXLAN device with
//! static FDB/neighbour entries and pods of the same MTU).

use std::net::{IpAddr, Ipv4Addr};

use anyhow::Context as _;
use margay_lab::netns::Netns;
use margay_lab::pods::PodRuntime;
use margay_lab::pods::spec::PodSpec;
use margay_lab::pool_options::{Encapsulation, PoolOptions};
use margay_lab::topology::netns_prefix;
use margay_lab::{LabGuard, Topology, UpOptions, handwired};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::figure::{Better, Figure, Goal, Measure, median};
use crate::iperf::{IperfServer, tcp_throughput};
use crate::{Benchmark, Context};

pub fn benchmark() -> Benchmark {
    Benchmark {
        name: "pod-throughput",
        about: "iperf3 pod to pod across nodes through Margay vs hand-wired static routes, direct and VXLAN",
        run,
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        if Instant::now() > deadline {
            anyhow::bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Waits until `node` has the agent's BGP-learned route (protocol 88)
/// covering `to`, leaving through `dev` when given.
fn wait_bgp_route(node: &Netns, to: IpAddr, dev: Option<&str>) -> anyhow::Result<()> {
    wait_for(&format!("{}'s BGP route to {to}", node.name()), || {
        node.ip(&["route", "show", "proto", "88", "match", &to.to_string()])
            .is_ok_and(|out| {
                out.lines().any(|l| {
                    !l.starts_with("blackhole")
                        && dev.is_none_or(|d| l.contains(&format!("dev {d} ")))
                })
            })
    })
}

/// A hand-made VXLAN device between the two nodes (VNI 4097, port 4790, so
/// it never meets Margay's), with static entries for the peer.
fn hand_vxlan(
    node: &Netns,
    local: Ipv4Addr,
    addr: &str,
    mac: &str,
    peer: (Ipv4Addr, &str, &str),
) -> anyhow::Result<()> {
    let local = local.to_string();
    node.ip(&[
        "link",
        "add",
        "vxlan.hand",
        "type",
        "vxlan",
        "id",
        "4097",
        "dstport",
        "4790",
        "local",
        &local,
        "nolearning",
    ])?;
    node.ip(&[
        "link",
        "set",
        "vxlan.hand",
        "address",
        mac,
        "mtu",
        "1450",
        "up",
    ])?;
    node.ip(&["addr", "add", &format!("{addr}/32"), "dev", "vxlan.hand"])?;
    let (peer_node, peer_addr, peer_mac) = peer;
    node.ip(&[
        "neigh",
        "replace",
        peer_addr,
        "lladdr",
        peer_mac,
        "dev",
        "vxlan.hand",
        "nud",
        "permanent",
    ])?;
    node.run(
        "bridge",
        &[
            "fdb",
            "replace",
            peer_mac,
            "dev",
            "vxlan.hand",
            "dst",
            &peer_node.to_string(),
            "self",
            "permanent",
        ],
    )?;
    Ok(())
}

fn measure(
    rounds: usize,
    secs: u32,
    margay: (&Netns, IpAddr),
    hand: (&Netns, IpAddr),
) -> anyhow::Result<(f64, f64)> {
    let (mut m, mut h) = (Vec::new(), Vec::new());
    // Alternate the two paths, and which goes first (ABBA), so drift in
    // machine load hits both alike.
    for round in 0..rounds {
        if round % 2 == 0 {
            m.push(tcp_throughput(margay.0, margay.1, 5201, secs)? / 1e9);
            h.push(tcp_throughput(hand.0, hand.1, 5201, secs)? / 1e9);
        } else {
            h.push(tcp_throughput(hand.0, hand.1, 5201, secs)? / 1e9);
            m.push(tcp_throughput(margay.0, margay.1, 5201, secs)? / 1e9);
        }
    }
    Ok((median(&mut m), median(&mut h)))
}

fn run(ctx: &Context) -> anyhow::Result<Vec<Figure>> {
    let mut opts = UpOptions::new(ctx.work_dir.join("pod-throughput-lab"));
    opts.nodes = 2;
    opts.topology = Topology::L2;
    let lab = LabGuard::up(&opts)?;
    let (n1, n2) = (lab.plan().nodes[0].clone(), lab.plan().nodes[1].clone());
    let (node1, node2) = (Netns::open(&n1.netns), Netns::open(&n2.netns));
    let prefix = netns_prefix(&lab.plan().id);
    let (rounds, secs) = if ctx.quick { (1, 2) } else { (8, 3) };
    let pods = PodRuntime::new(&lab)?;
    pods.create_namespace("bench", &BTreeMap::new())?;

    // Hand-wired pods (outside every pool; interface names the agent does
    // not own), direct static routes.
    let hand_a = handwired::wire_pod(
        &node1,
        &format!("{prefix}hand-a"),
        "hwa",
        "10.250.1.2".parse()?,
    )?;
    let hand_b = handwired::wire_pod(
        &node2,
        &format!("{prefix}hand-b"),
        "hwb",
        "10.250.2.2".parse()?,
    )?;
    handwired::route_to(&node1, hand_b.ip, n2.ipv4)?;
    handwired::route_to(&node2, hand_a.ip, n1.ipv4)?;

    // Direct.
    let a = pods.create_pod(&PodSpec::new("bench", "direct-a", &n1.name))?;
    let b = pods.create_pod(&PodSpec::new("bench", "direct-b", &n2.name))?;
    // Routes between the two pods' blocks come from the agents' BGP mesh.
    wait_bgp_route(&node1, b.primary_ip().context("pod address")?, None)?;
    wait_bgp_route(&node2, a.primary_ip().context("pod address")?, None)?;
    let (a_ns, b_ip) = (
        Netns::open(&a.netns),
        b.primary_ip().context("pod address")?,
    );
    let direct = {
        let _m = IperfServer::start(&Netns::open(&b.netns), 5201)?;
        let _h = IperfServer::start(&hand_b.netns, 5201)?;
        measure(
            rounds,
            secs,
            (&a_ns, b_ip),
            (&hand_a.netns, IpAddr::V4(hand_b.ip)),
        )?
    };

    // VXLAN: the pool encapsulates; new pods get the smaller MTU.
    lab.configure_default_pool(PoolOptions {
        encapsulation: Encapsulation::VxlanAlways,
        nat_outgoing: false,
    })?;
    wait_for("both VXLAN devices", || {
        [&node1, &node2]
            .iter()
            .all(|n| n.ip(&["link", "show", "vxlan.margay"]).is_ok())
    })?;
    let a = pods.create_pod(&PodSpec::new("bench", "vxlan-a", &n1.name))?;
    let b = pods.create_pod(&PodSpec::new("bench", "vxlan-b", &n2.name))?;
    // The same BGP routes, now resolved through the VXLAN device.
    let via = Some("vxlan.margay");
    wait_bgp_route(&node1, b.primary_ip().context("pod address")?, via)?;
    wait_bgp_route(&node2, a.primary_ip().context("pod address")?, via)?;
    hand_vxlan(
        &node1,
        n1.ipv4,
        "10.251.0.1",
        "02:00:00:00:0a:01",
        (n2.ipv4, "10.251.0.2", "02:00:00:00:0a:02"),
    )?;
    hand_vxlan(
        &node2,
        n2.ipv4,
        "10.251.0.2",
        "02:00:00:00:0a:02",
        (n1.ipv4, "10.251.0.1", "02:00:00:00:0a:01"),
    )?;
    let hand_c = handwired::wire_pod(
        &node1,
        &format!("{prefix}hand-c"),
        "hwc",
        "10.250.1.3".parse()?,
    )?;
    let hand_d = handwired::wire_pod(
        &node2,
        &format!("{prefix}hand-d"),
        "hwd",
        "10.250.2.3".parse()?,
    )?;
    for (p, _) in [(&hand_c, 0), (&hand_d, 0)] {
        p.netns.ip(&["link", "set", "eth0", "mtu", "1450"])?;
    }
    node1.ip(&[
        "route",
        "add",
        "10.250.2.3/32",
        "via",
        "10.251.0.2",
        "dev",
        "vxlan.hand",
        "onlink",
    ])?;
    node2.ip(&[
        "route",
        "add",
        "10.250.1.3/32",
        "via",
        "10.251.0.1",
        "dev",
        "vxlan.hand",
        "onlink",
    ])?;
    let (a_ns, b_ip) = (
        Netns::open(&a.netns),
        b.primary_ip().context("pod address")?,
    );
    let vxlan = {
        let _m = IperfServer::start(&Netns::open(&b.netns), 5201)?;
        let _h = IperfServer::start(&hand_d.netns, 5201)?;
        measure(
            rounds,
            secs,
            (&a_ns, b_ip),
            (&hand_c.netns, IpAddr::V4(hand_d.ip)),
        )?
    };

    Ok(vec![
        Figure::new(
            "Pod to pod TCP across nodes, direct",
            Measure::new("Margay", direct.0, "Gbit/s"),
            Measure::new("hand-wired static routes", direct.1, "Gbit/s"),
            Better::Higher,
        )
        .with_goal(Goal::Ratio(0.97)),
        Figure::new(
            "Pod to pod TCP across nodes, VXLAN",
            Measure::new("Margay (vxlanMode Always)", vxlan.0, "Gbit/s"),
            Measure::new("hand-wired VXLAN, static routes", vxlan.1, "Gbit/s"),
            Better::Higher,
        )
        .with_goal(Goal::Ratio(0.97)),
    ])
}
