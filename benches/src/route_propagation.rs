//! `route-propagation`: from a pod ADD on one node until the route to its
//! address is in the kernel of every other node (p99), with the
//! node-to-node mesh and through a dedicated route reflector.
//!
//! Subject: Margay in a lab (`l2`, four nodes). The pods come from an IPPool
//! with `blockSize: 32`, so every pod is a new block and needs a new route
//! (with /26 blocks only a node's first pod does). The clock starts before
//! the CNI ADD (the plugin, the agent, IPAM in the API server), and stops
//! when a poller sees the route (proto 88) on the last other node: the
//! whole path a user waits for.
//!
//! Comparator: BIRD 2 → BIRD 2 in two namespaces, one prefix announced by
//! reconfiguring a static route on one (`birdc configure`) until the other
//! has installed it in its kernel — plain BGP propagation of one prefix
//! between two established speakers, the floor under what a BGP-routed CNI
//! (Calico's BIRD included) can do. Same machine, same run.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kube::api::{Api, PostParams};
use margay_api::resources::bgp::BGPConfigurationSpec;
use margay_api::{BGPConfiguration, BGPPeer, BGPPeerSpec, IPPool, IPPoolSpec};
use margay_lab::netns::{Netns, NetnsGuard, veth};
use margay_lab::pods::PodRuntime;
use margay_lab::pods::spec::PodSpec;
use margay_lab::{Lab, LabGuard, Topology, UpOptions};

use crate::figure::{Better, Figure, Goal, Measure};
use crate::{Benchmark, Context};

pub fn benchmark() -> Benchmark {
    Benchmark {
        name: "route-propagation",
        about: "pod ADD on one node until its route is installed on the others (p99), mesh and via a route reflector, against BIRD 2 → BIRD 2 propagation of one prefix",
        run,
    }
}

const POOL: &str = "bench-per-pod-blocks";
const POOL_CIDR: &str = "10.250.0.0/16";
const DEADLINE: Duration = Duration::from_secs(10);

/// The p-th percentile (nearest rank) of samples.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Watches proto-88 routes in 10.250.0.0/16 on some nodes and records when
/// each /32 first appeared on each.
struct RouteWatch {
    seen: Arc<Mutex<BTreeMap<(String, IpAddr), Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RouteWatch {
    fn start(nodes: Vec<(String, Netns)>) -> RouteWatch {
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                for (name, ns) in &nodes {
                    let out = ns
                        .ip(&["-o", "route", "show", "proto", "88", "root", POOL_CIDR])
                        .unwrap_or_default();
                    let now = Instant::now();
                    let Ok(mut g) = s.lock() else { return };
                    for l in out.lines() {
                        let dst = l.split_whitespace().next().unwrap_or("");
                        let ip = dst.split('/').next().and_then(|a| a.parse().ok());
                        if let Some(ip) = ip {
                            g.entry((name.clone(), ip)).or_insert(now);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        RouteWatch {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// When `ip` was first seen on every node of `on`.
    fn installed_everywhere(&self, ip: IpAddr, on: &[&str]) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(g) = self.seen.lock() {
                let times: Vec<Instant> = on
                    .iter()
                    .filter_map(|n| g.get(&(n.to_string(), ip)).copied())
                    .collect();
                if times.len() == on.len() {
                    return Ok(times.into_iter().max().unwrap_or_else(Instant::now));
                }
            }
            if Instant::now() > deadline {
                bail!("the route to {ip} did not reach {on:?} within {DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for RouteWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Pod ADDs on node1 (one at a time), each measured until its route is on
/// `others`; milliseconds.
fn measure_margay(
    rt: &PodRuntime,
    watch: &RouteWatch,
    prefix: &str,
    n: usize,
    others: &[&str],
) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    for i in 0..n {
        let spec = PodSpec::new("bench", &format!("{prefix}{i}"), "node1")
            .annotation("margay.dev/ipv4pools", &format!("[\"{POOL}\"]"));
        let t0 = Instant::now();
        let pod = rt.create_pod(&spec).context("creating a pod")?;
        let ip = pod.primary_ip().context("the pod has no address")?;
        let t1 = watch.installed_everywhere(ip, others)?;
        out.push(t1.saturating_duration_since(t0).as_secs_f64() * 1e3);
    }
    Ok(out)
}

fn api<T>(lab: &Lab, f: impl AsyncFnOnce(kube::Client) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let kubeconfig = lab.kubeconfig().context("no API server")?;
    rt.block_on(async {
        let c = margay_lab::nodes::client(&kubeconfig).await?;
        f(c).await
    })
}

fn margay(ctx: &Context, n: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let mut opts = UpOptions::new(ctx.work_dir.join("lab"));
    opts.nodes = 4;
    opts.topology = Topology::L2;
    let lab = LabGuard::up(&opts).context("lab up")?;
    api(&lab, async |c| {
        let mut spec = IPPoolSpec::new(POOL_CIDR);
        spec.block_size = Some(32);
        Api::<IPPool>::all(c)
            .create(&PostParams::default(), &IPPool::new(POOL, spec))
            .await?;
        Ok(())
    })?;
    let rt = PodRuntime::new(&lab)?;
    rt.create_namespace("bench", &BTreeMap::new())?;
    let nodes: Vec<(String, Netns)> = ["node2", "node3", "node4"]
        .iter()
        .map(|n| Ok((n.to_string(), lab.netns(n)?)))
        .collect::<Result<_, margay_lab::LabError>>()?;
    let watch = RouteWatch::start(nodes);
    // Warm-up (first pod on a node, first API calls), not measured.
    measure_margay(&rt, &watch, "warm-", 2, &["node2", "node3", "node4"])?;
    let mesh = measure_margay(&rt, &watch, "mesh-", n, &["node2", "node3", "node4"])?;

    // Mesh off, node4 a dedicated route reflector, the others its clients.
    api(&lab, async |c| {
        Api::<BGPConfiguration>::all(c.clone())
            .create(
                &PostParams::default(),
                &BGPConfiguration::new(
                    "default",
                    BGPConfigurationSpec {
                        node_to_node_mesh_enabled: Some(false),
                        ..Default::default()
                    },
                ),
            )
            .await?;
        Api::<BGPPeer>::all(c)
            .create(
                &PostParams::default(),
                &BGPPeer::new(
                    "peer-with-reflectors",
                    BGPPeerSpec {
                        node_selector: Some("all()".into()),
                        peer_selector: Some("has(margay.dev/route-reflector)".into()),
                        ..Default::default()
                    },
                ),
            )
            .await?;
        Ok(())
    })?;
    lab.stop_agent("node4")?;
    lab.start_agent_with("node4", &["--role", "route-reflector"].map(String::from))?;
    // Clients have their one session to the reflector up again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = ["node1", "node2", "node3"].iter().all(|n| {
            lab.netns(n)
                .ok()
                .and_then(|ns| {
                    ns.run(
                        "curl",
                        &["-sf", "--max-time", "2", "http://127.0.0.1:9099/bgp/peers"],
                    )
                    .ok()
                })
                .is_some_and(|b| {
                    b.matches("\"Established\"").count() == 1 && b.contains("\"route reflector\"")
                })
        });
        if ok {
            break;
        }
        if Instant::now() > deadline {
            bail!("the clients did not establish their sessions with the reflector");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    measure_margay(&rt, &watch, "rr-warm-", 1, &["node2", "node3"])?;
    let rr = measure_margay(&rt, &watch, "rr-", n, &["node2", "node3"])?;
    Ok((mesh, rr))
}

/// BIRD 2 in `a` announcing to BIRD 2 in `b`, which installs in its kernel.
fn bird(ctx: &Context, n: usize) -> anyhow::Result<Vec<f64>> {
    let a = NetnsGuard::create_unique("mbench-rp-a")?;
    let b = NetnsGuard::create_unique("mbench-rp-b")?;
    veth(&a, "eth0", &b, "eth0")?;
    a.ip(&["addr", "add", "10.99.0.1/24", "dev", "eth0"])?;
    b.ip(&["addr", "add", "10.99.0.2/24", "dev", "eth0"])?;
    let dir = ctx.work_dir.join("bird-rp");
    std::fs::create_dir_all(&dir)?;
    let conf = |me: Ipv4Addr, peer: Ipv4Addr, statics: &[Ipv4Addr], kernel: bool| {
        let mut s = format!(
            "router id {me};\nprotocol device {{ }}\nprotocol bgp peer1 {{ local {me} as 64512; neighbor {peer} as 64512; direct; ipv4 {{ import all; export all; }}; }}\n"
        );
        if kernel {
            s += "protocol kernel { ipv4 { import none; export all; }; }\n";
        }
        s += "protocol static statics { ipv4; ";
        for ip in statics {
            s += &format!("route {ip}/32 blackhole; ");
        }
        s += "}\n";
        s
    };
    let (ip_a, ip_b) = (Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 2));
    std::fs::write(dir.join("a.conf"), conf(ip_a, ip_b, &[], false))?;
    std::fs::write(dir.join("b.conf"), conf(ip_b, ip_a, &[], true))?;
    let mut pids = Vec::new();
    for (ns, name) in [(&a, "a"), (&b, "b")] {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns.name(), "bird", "-f", "-c"])
            .arg(dir.join(format!("{name}.conf")))
            .arg("-s")
            .arg(dir.join(format!("{name}.ctl")));
        pids.push(margay_lab::process::spawn_daemon(
            &mut c,
            &dir.join(format!("{name}.log")),
        )?);
    }
    struct Kill(Vec<i32>);
    impl Drop for Kill {
        fn drop(&mut self) {
            margay_lab::process::terminate(&self.0, Duration::from_secs(2));
        }
    }
    let _kill = Kill(pids);
    let birdc = |name: &str, cmd: &str| -> String {
        Command::new("birdc")
            .arg("-s")
            .arg(dir.join(format!("{name}.ctl")))
            .arg(cmd)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !birdc("a", "show protocols peer1").contains("Established") {
        if Instant::now() > deadline {
            bail!(
                "BIRD session did not come up: {}",
                birdc("a", "show protocols all peer1")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut statics = Vec::new();
    let mut out = Vec::new();
    for i in 0..(n + 2) {
        let ip = Ipv4Addr::new(10, 98, (i / 250) as u8, (i % 250 + 1) as u8);
        statics.push(ip);
        let t0 = Instant::now();
        std::fs::write(dir.join("a.conf"), conf(ip_a, ip_b, &statics, false))?;
        birdc("a", "configure");
        let want = format!("{ip} ");
        loop {
            let r = b.ip(&["-o", "route", "show", "root", "10.98.0.0/16"])?;
            if r.lines().any(|l| l.starts_with(&want)) {
                break;
            }
            if t0.elapsed() > DEADLINE {
                bail!("BIRD did not propagate {ip}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // The first two are warm-up, as for Margay.
        if i >= 2 {
            out.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(out)
}

fn run(ctx: &Context) -> anyhow::Result<Vec<Figure>> {
    let n = if ctx.quick { 5 } else { 40 };
    let (mesh, rr) = margay(ctx, n)?;
    let bird = bird(ctx, n)?;
    let (m99, r99, b99) = (
        percentile(&mesh, 99.0),
        percentile(&rr, 99.0),
        percentile(&bird, 99.0),
    );
    eprintln!(
        "route-propagation: p50/p99 mesh {:.0}/{m99:.0} ms, RR {:.0}/{r99:.0} ms, BIRD {:.1}/{b99:.1} ms",
        percentile(&mesh, 50.0),
        percentile(&rr, 50.0),
        percentile(&bird, 50.0),
    );
    Ok(vec![
        Figure::new(
            format!("pod ADD → route on the 3 other nodes, mesh, p99 of {n}"),
            Measure::new("margay (CNI ADD + IPAM + BGP + kernel)", m99, "ms"),
            Measure::new("BIRD 2 → BIRD 2, one prefix into the kernel", b99, "ms"),
            Better::Lower,
        )
        .with_goal(Goal::Absolute(300.0)),
        Figure::new(
            format!("pod ADD → route on the 2 other clients via a route reflector, p99 of {n}"),
            Measure::new("margay (CNI ADD + IPAM + BGP via RR + kernel)", r99, "ms"),
            Measure::new("BIRD 2 → BIRD 2, one prefix into the kernel", b99, "ms"),
            Better::Lower,
        )
        .with_goal(Goal::Absolute(500.0)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 99.0), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
