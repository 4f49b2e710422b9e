//! Overlays in a lab cluster (`routed` topology: node1 and node2 in subnet
//! a, node3 in subnet b, joined by the router namespace), through the real
//! agents, CNI plugin and API:
//!
//! - VXLAN CrossSubnet: every node gets `vxlan.margay` with its VTEP (from
//!   IPAM) and Node annotations; neighbour/FDB entries exist only towards
//!   nodes in the other subnet; pods get MTU 1450; in the fabric, traffic
//!   between pods of the same subnet is plain (pod addresses kept) and across
//!   subnets is UDP 4789.
//! - VXLAN Always: the same-subnet pair is encapsulated too.
//! - NAT outgoing: a pod reaching a client outside every pool (behind the
//!   router) is seen with its node's address; pod-to-pod keeps pod addresses.
//!
//! Routes to other nodes' blocks come from the agents' BGP mesh through
//! overlay's resolver; the test checks node1's against what the resolver
//! says from the cluster's annotations (`margay.dev/ipv4Address` from
//! routing, the VTEPs from overlay) and pools.
//!
//! Needs `margay-lab`, `margay-agent` and `margay-cni` built.

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use margay_agent::calc::remote_routes::RemotePath;
use margay_agent::overlay::nodes::{NodeDirectory, NodeInfo};
use margay_agent::overlay::resolver::OverlayInputs;
use margay_api::net::Cidr;
use margay_api::{IPAMBlock, IPPool, ResolvedPool};
use margay_lab::netns::{Netns, NetnsGuard, veth};
use margay_lab::pods::PodRuntime;
use margay_lab::pods::spec::PodSpec;
use margay_lab::pool_options::{Encapsulation, PoolOptions};
use margay_lab::{Lab, LabGuard, Topology, UpOptions};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn client(rt: &tokio::runtime::Runtime, lab: &Lab) -> kube::Client {
    rt.block_on(margay_lab::nodes::client(
        &lab.kubeconfig().expect("kubeconfig"),
    ))
    .expect("client")
}

fn nodes(
    rt: &tokio::runtime::Runtime,
    c: &kube::Client,
) -> BTreeMap<String, BTreeMap<String, String>> {
    let api: Api<Node> = Api::all(c.clone());
    rt.block_on(api.list(&ListParams::default()))
        .expect("nodes")
        .items
        .into_iter()
        .map(|n| {
            (
                n.metadata.name.unwrap_or_default(),
                n.metadata.annotations.unwrap_or_default(),
            )
        })
        .collect()
}

/// Routing's agent side publishes each node's address with its prefix
/// length; overlay's subnet decisions need them.
fn wait_node_addresses(rt: &tokio::runtime::Runtime, c: &kube::Client, lab: &Lab) {
    for n in &lab.plan().nodes {
        let want = format!("{}/24", n.ipv4);
        poll(
            "the nodes' margay.dev/ipv4Address",
            Duration::from_secs(60),
            || (nodes(rt, c).get(&n.name)?.get("margay.dev/ipv4Address")? == &want).then_some(()),
        );
    }
}

/// Whether an `ip -o route` line is `block` through `path`.
fn route_is(line: &str, block: &Cidr, path: &RemotePath) -> bool {
    let t: Vec<&str> = line.split_whitespace().collect();
    let after = |k: &str| {
        t.iter()
            .position(|w| *w == k)
            .and_then(|i| t.get(i + 1))
            .copied()
    };
    let (gw, dev, onlink) = match path {
        RemotePath::Direct { gateway } => (gateway.to_string(), "eth0".to_string(), false),
        RemotePath::Tunnel { ifname, gateway } => (gateway.to_string(), ifname.clone(), true),
    };
    t.first() == Some(&block.to_string().as_str())
        && after("via") == Some(gw.as_str())
        && after("dev") == Some(dev.as_str())
        && (!onlink || t.contains(&"onlink"))
}

/// Waits until `node`'s protocol-88 routes (programmed from BGP through the
/// resolver) are exactly what the resolver says for every remote block.
fn wait_routes_as_resolved(
    lab: &Lab,
    rt: &tokio::runtime::Runtime,
    c: &kube::Client,
    node: &str,
) -> Vec<(Cidr, RemotePath)> {
    let ns = lab.netns(node).expect("netns");
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let resolved = resolve_as(rt, c, node);
        last = ns
            .ip(&["-o", "route", "show", "proto", "88"])
            .unwrap_or(last);
        if !resolved.is_empty()
            && resolved
                .iter()
                .all(|(b, p)| last.lines().any(|l| route_is(l, b, p)))
        {
            return resolved;
        }
        assert!(
            Instant::now() < deadline,
            "routes on {node} never matched {resolved:?}:\n{last}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Node → (VTEP address, VTEP MAC), once every node has published one.
fn wait_vteps(
    rt: &tokio::runtime::Runtime,
    c: &kube::Client,
    lab: &Lab,
) -> BTreeMap<String, (String, String)> {
    poll(
        "every node's VTEP annotations and device",
        Duration::from_secs(60),
        || {
            let all = nodes(rt, c);
            let vteps: BTreeMap<String, (String, String)> = all
                .iter()
                .filter_map(|(n, a)| {
                    Some((
                        n.clone(),
                        (
                            a.get("margay.dev/vxlanTunnelAddr")?.clone(),
                            a.get("margay.dev/vxlanTunnelMac")?.clone(),
                        ),
                    ))
                })
                .collect();
            let devices = lab.plan().nodes.iter().all(|n| {
                Netns::open(&n.netns)
                    .ip(&["link", "show", "vxlan.margay"])
                    .is_ok()
            });
            (vteps.len() == lab.plan().nodes.len() && devices).then_some(vteps)
        },
    )
}

/// What node `me`'s resolver says for every other node's blocks: the
/// agent's `OverlayResolver` inputs built from the API as the agent builds
/// them.
fn resolve_as(rt: &tokio::runtime::Runtime, c: &kube::Client, me: &str) -> Vec<(Cidr, RemotePath)> {
    let nodes: Vec<NodeInfo> = rt
        .block_on(Api::<Node>::all(c.clone()).list(&ListParams::default()))
        .expect("nodes")
        .items
        .iter()
        .map(NodeInfo::from_node)
        .collect();
    let pools: Vec<ResolvedPool> = rt
        .block_on(Api::<IPPool>::all(c.clone()).list(&ListParams::default()))
        .expect("pools")
        .items
        .iter()
        .filter_map(|p| ResolvedPool::from_pool(p).ok())
        .collect();
    let inputs = OverlayInputs {
        local: nodes.iter().find(|n| n.name == me).cloned().expect("me"),
        nodes: NodeDirectory::new(nodes.iter().filter(|n| n.name != me).cloned()),
        pools,
        underlay_mtu_v4: 1500,
        underlay_mtu_v6: 1500,
    };
    let mut out = Vec::new();
    for b in rt
        .block_on(Api::<IPAMBlock>::all(c.clone()).list(&ListParams::default()))
        .expect("blocks")
        .items
    {
        let Some(owner) = b.spec.affine_node().filter(|o| *o != me) else {
            continue;
        };
        let node_ip = nodes
            .iter()
            .find(|n| n.name == owner)
            .and_then(|n| n.ipv4)
            .expect("owner address")
            .addr;
        let cidr = Cidr::parse_strict(&b.spec.cidr).expect("block cidr");
        let route = inputs.resolve(cidr, &[node_ip]).expect("resolved");
        assert_eq!(route.paths.len(), 1);
        if matches!(route.paths[0], RemotePath::Tunnel { .. }) {
            assert_eq!(route.mtu, Some(1450));
        }
        out.push((cidr, route.paths[0].clone()));
    }
    out
}

fn block_owner(rt: &tokio::runtime::Runtime, c: &kube::Client, block: &Cidr) -> String {
    rt.block_on(Api::<IPAMBlock>::all(c.clone()).list(&ListParams::default()))
        .expect("blocks")
        .items
        .into_iter()
        .find(|b| b.spec.cidr == block.to_string())
        .and_then(|b| b.spec.affine_node().map(str::to_string))
        .unwrap_or_default()
}

/// A tcpdump that has attached (it said "listening on").
struct Capture(Child);

impl Capture {
    fn start(ns: &Netns, iface: &str, filter: &str) -> Capture {
        let mut child = ns
            .command("tcpdump")
            .args(["-i", iface, "-n", "-l", filter])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump");
        let stderr = child.stderr.take().expect("stderr");
        let mut reader = BufReader::new(stderr);
        let mut said = String::new();
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).expect("tcpdump stderr");
            said.push_str(&line);
            assert!(n > 0, "tcpdump ended: {said}");
            if line.contains("listening on") {
                break;
            }
        }
        Capture(child)
    }

    fn stop(mut self) -> String {
        // SIGTERM: tcpdump flushes and exits.
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let out = std::mem::replace(
            &mut self.0,
            std::process::Command::new("true").spawn().expect("true"),
        );
        String::from_utf8_lossy(&out.wait_with_output().expect("tcpdump output").stdout).to_string()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ping(rt: &PodRuntime, from: &str, to: std::net::IpAddr) -> bool {
    let p = rt.pod("ov", from).expect("pod");
    Netns::open(&p.netns)
        .run(
            "ping",
            &["-c", "2", "-i", "0.2", "-W", "2", &to.to_string()],
        )
        .is_ok()
}

fn pod_ip(rt: &PodRuntime, name: &str) -> std::net::IpAddr {
    rt.pod("ov", name).expect("pod").primary_ip().expect("ip")
}

fn up_routed() -> LabGuard {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let mut opts = UpOptions::new(&dir);
    opts.nodes = 3;
    opts.topology = Topology::Routed;
    opts.agent_args = vec!["--dataplane-refresh-interval".into(), "2s".into()];
    LabGuard::up(&opts).expect("lab up")
}

#[test]
fn vxlan_cross_subnet_then_always_and_nat_outgoing() {
    let lab = up_routed();
    let tokio = rt();
    let c = client(&tokio, &lab);
    wait_node_addresses(&tokio, &c, &lab);
    lab.configure_default_pool(PoolOptions {
        encapsulation: Encapsulation::VxlanCrossSubnet,
        nat_outgoing: true,
    })
    .expect("pool");
    let vteps = wait_vteps(&tokio, &c, &lab);

    // Peers: node1 has node3 only (node2 shares its subnet); node3 has both.
    let neigh = |node: &str| {
        lab.netns(node)
            .expect("netns")
            .ip(&["neigh", "show", "dev", "vxlan.margay", "nud", "permanent"])
            .expect("neigh")
    };
    let n1 = poll("node1's peer entries", Duration::from_secs(30), || {
        let n = neigh("node1");
        n.contains(&vteps["node3"].0).then_some(n)
    });
    assert!(
        !n1.contains(&format!("{} ", vteps["node2"].0)),
        "node2 shares node1's subnet: {n1}"
    );
    poll("node3's peer entries", Duration::from_secs(30), || {
        let n = neigh("node3");
        (n.contains(&vteps["node1"].0) && n.contains(&vteps["node2"].0)).then_some(())
    });
    let fdb = lab
        .netns("node1")
        .expect("netns")
        .run("bridge", &["fdb", "show", "dev", "vxlan.margay"])
        .expect("fdb");
    assert!(
        fdb.contains(&format!("{} dst 10.0.2.3", vteps["node3"].1)),
        "{fdb}"
    );
    let dev = lab
        .netns("node1")
        .expect("netns")
        .ip(&["-d", "link", "show", "vxlan.margay"])
        .expect("link");
    assert!(
        dev.contains("mtu 1450")
            && dev.contains("vxlan id 4096")
            && dev.contains("local 10.0.1.1")
            && dev.contains("dstport 4789")
            && dev.contains("nolearning"),
        "{dev}"
    );

    let pods = PodRuntime::new(&lab).expect("pod runtime");
    pods.create_namespace("ov", &BTreeMap::new())
        .expect("namespace");
    for (p, n) in [("p1", "node1"), ("p2", "node2"), ("p3", "node3")] {
        pods.create_pod(&PodSpec::new("ov", p, n)).expect("pod");
    }
    // Pods leave room for VXLAN.
    let p1 = pods.pod("ov", "p1").expect("p1");
    let mtu = Netns::open(&p1.netns)
        .ip(&["link", "show", "eth0"])
        .expect("eth0");
    assert!(mtu.contains("mtu 1450"), "{mtu}");

    // The routes BGP installed on node1 are what node1's resolver (the
    // agent's code, fed the cluster's real Node annotations and pools) says
    // for every remote block: direct within the subnet, VXLAN across.
    let resolved = wait_routes_as_resolved(&lab, &tokio, &c, "node1");
    for (block, path) in &resolved {
        let tunnel = matches!(path, RemotePath::Tunnel { .. });
        let other_subnet = block_owner(&tokio, &c, block) == "node3";
        assert_eq!(tunnel, other_subnet, "{block}: {path:?}");
    }

    let fabric = lab.netns("fabric").expect("fabric");
    // Same subnet: plain, pod addresses kept.
    let cap = Capture::start(&fabric, "node1", "udp port 4789 or icmp");
    assert!(ping(&pods, "p1", pod_ip(&pods, "p2")), "p1 -> p2");
    let seen = cap.stop();
    assert!(!seen.contains(".4789"), "no VXLAN within a subnet: {seen}");
    assert!(
        seen.contains(&format!(
            "{} > {}: ICMP echo request",
            pod_ip(&pods, "p1"),
            pod_ip(&pods, "p2")
        )),
        "{seen}"
    );
    // Across subnets: VXLAN between the node addresses.
    let cap = Capture::start(&fabric, "node1", "udp port 4789 or icmp");
    assert!(ping(&pods, "p1", pod_ip(&pods, "p3")), "p1 -> p3");
    let seen = cap.stop();
    assert!(
        seen.contains("10.0.1.1") && seen.contains("10.0.2.3.4789"),
        "VXLAN across subnets: {seen}"
    );
    assert!(ping(&pods, "p3", pod_ip(&pods, "p2")), "p3 -> p2");

    // An agent restart adopts the device and its entries as they are.
    let ifindex = |lab: &Lab| {
        lab.netns("node3")
            .expect("netns")
            .ip(&["-o", "link", "show", "vxlan.margay"])
            .expect("link")
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let before = (ifindex(&lab), neigh("node3"));
    lab.restart_agent("node3").expect("restart");
    assert!(
        ping(&pods, "p3", pod_ip(&pods, "p1")),
        "p3 -> p1 after the restart"
    );
    assert_eq!(
        (ifindex(&lab), neigh("node3")),
        before,
        "restart changed the device or its peers"
    );

    // NAT outgoing: a client behind the router, outside every pool.
    let client_ns = NetnsGuard::create_unique("ovnat-client").expect("client netns");
    let router = lab.netns("router").expect("router");
    veth(&router, "to-client", &client_ns, "eth0").expect("veth");
    router
        .ip(&["addr", "add", "192.168.77.254/24", "dev", "to-client"])
        .expect("router addr");
    client_ns
        .ip(&["addr", "add", "192.168.77.1/24", "dev", "eth0"])
        .expect("client addr");
    client_ns
        .ip(&["route", "add", "default", "via", "192.168.77.254"])
        .expect("client route");
    let cap = Capture::start(&client_ns, "eth0", "icmp");
    let client_ip: std::net::IpAddr = "192.168.77.1".parse().expect("ip");
    assert!(
        ping(&pods, "p1", client_ip),
        "p1 -> client (the router has no route to the pools: only NAT answers)"
    );
    let seen = cap.stop();
    assert!(
        seen.contains("10.0.1.1 > 192.168.77.1: ICMP echo request"),
        "seen as node1: {seen}"
    );
    assert!(!seen.contains(&pod_ip(&pods, "p1").to_string()), "{seen}");

    // VXLAN Always: node1 now tunnels to node2 as well.
    lab.configure_default_pool(PoolOptions {
        encapsulation: Encapsulation::VxlanAlways,
        nat_outgoing: true,
    })
    .expect("pool");
    poll("node1's entry for node2", Duration::from_secs(30), || {
        neigh("node1")
            .contains(&format!("{} ", vteps["node2"].0))
            .then_some(())
    });
    let resolved = wait_routes_as_resolved(&lab, &tokio, &c, "node1");
    assert!(
        resolved
            .iter()
            .all(|(_, p)| matches!(p, RemotePath::Tunnel { .. })),
        "{resolved:?}"
    );
    let cap = Capture::start(&fabric, "node1", "udp port 4789 or icmp");
    assert!(
        ping(&pods, "p1", pod_ip(&pods, "p2")),
        "p1 -> p2 through VXLAN"
    );
    let seen = cap.stop();
    assert!(
        seen.contains("10.0.1.2.4789"),
        "VXLAN within the subnet too: {seen}"
    );
    // Every echo request between the pods is the inner packet of a VXLAN one.
    let lines: Vec<&str> = seen.lines().collect();
    let inner = format!(
        "{} > {}: ICMP echo request",
        pod_ip(&pods, "p1"),
        pod_ip(&pods, "p2")
    );
    let requests: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains(&inner))
        .collect();
    assert!(!requests.is_empty(), "{seen}");
    for i in requests {
        assert!(
            i > 0 && lines[i - 1].contains("4789: VXLAN"),
            "not encapsulated: {seen}"
        );
    }
}

/// IPIP needs the kernel's ipip module; this kernel may lack it.
fn kernel_has_ipip() -> Result<(), String> {
    let probe = NetnsGuard::create_unique("ovipip-probe").map_err(|e| e.to_string())?;
    probe
        .ip(&["link", "add", "probe0", "type", "ipip", "remote", "any"])
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn ipip_cross_subnet_device_and_address() {
    if let Err(why) = kernel_has_ipip() {
        eprintln!(
            "SKIPPED ipip_cross_subnet_device_and_address: this kernel cannot create IPIP devices (`ip link add type ipip` failed: {why}); the IPIP code is covered by the netlink message tests"
        );
        return;
    }
    let lab = up_routed();
    let tokio = rt();
    let c = client(&tokio, &lab);
    wait_node_addresses(&tokio, &c, &lab);
    lab.configure_default_pool(PoolOptions {
        encapsulation: Encapsulation::IpipCrossSubnet,
        nat_outgoing: false,
    })
    .expect("pool");
    for n in lab.node_names() {
        let link = poll("tunl0 with its MTU", Duration::from_secs(60), || {
            let l = lab
                .netns(&n)
                .expect("netns")
                .ip(&["link", "show", "tunl0"])
                .ok()?;
            l.contains("mtu 1480").then_some(l)
        });
        assert!(link.contains("UP"), "{link}");
        let addr = poll(
            "the IPIP tunnel address annotation",
            Duration::from_secs(30),
            || {
                nodes(&tokio, &c)
                    .get(&n)?
                    .get("margay.dev/ipipTunnelAddr")
                    .cloned()
            },
        );
        let on_dev = lab
            .netns(&n)
            .expect("netns")
            .ip(&["-4", "addr", "show", "dev", "tunl0"])
            .expect("addr");
        assert!(on_dev.contains(&format!("{addr}/32")), "{on_dev}");
    }
}
