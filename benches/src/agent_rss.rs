//! `agent-rss`: resident memory of `margay-agent` holding 100 local endpoints
//! (pods added through its endpoint socket, wired as the CNI plugin wires
//! them, routes and sysctls programmed), against the same agent with none.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use margay_api::endpoint::{Allocation, Attachment, PodRef, Request, Response};
use margay_lab::netns::{self, Netns};
use margay_lab::topology::netns_prefix;
use margay_lab::{LabGuard, Topology, UpOptions, agents};

use crate::figure::{Better, Figure, Goal, Measure};
use crate::{Benchmark, Context};

pub fn benchmark() -> Benchmark {
    Benchmark {
        name: "agent-rss",
        about: "margay-agent resident memory with 100 local endpoints, against the same agent with none",
        run,
    }
}

fn run(ctx: &Context) -> anyhow::Result<Vec<Figure>> {
    let lab = LabGuard::up(&UpOptions {
        nodes: 1,
        topology: Topology::L2,
        state_dir: ctx.work_dir.join("agent-rss-lab"),
        bare: false,
        agents: true,
        ipv6_pool: false,
        agent_args: Vec::new(),
    })?;
    let pid = lab
        .agent_pid("node1")?
        .ok_or_else(|| anyhow::anyhow!("no agent running on node1"))?;
    let socket = lab.node_files("node1")?.cni_socket;
    let node = lab.netns("node1")?;
    let prefix = netns_prefix(&lab.plan().id);
    let count = if ctx.quick { 20 } else { 100 };

    let idle = steady_rss_mib(pid)?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let kubeconfig = lab
        .kubeconfig()
        .ok_or_else(|| anyhow::anyhow!("lab without API server"))?;
    rt.block_on(async {
        let client = margay_lab::nodes::client(&kubeconfig).await?;
        let pods: Api<Pod> = Api::namespaced(client, "default");
        for i in 0..count {
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("rss-{i}"), "namespace": "default",
                             "labels": {"app": "rss", "index": i.to_string()}},
                "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "none",
                         "ports": [{"containerPort": 80}]}]},
            }))?;
            pods.create(&PostParams::default(), &pod).await?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    for i in 0..count {
        add_endpoint(
            &socket,
            &node,
            &format!("{prefix}pod-rss-{i}"),
            &format!("rss-{i}"),
        )?;
    }
    let loaded = steady_rss_mib(pid)?;

    Ok(vec![
        Figure::new(
            format!("agent RSS with {count} endpoints"),
            Measure::new(format!("margay-agent, {count} endpoints"), loaded, "MiB"),
            Measure::new("margay-agent, no endpoints", idle, "MiB"),
            Better::Lower,
        )
        .with_goal(Goal::Absolute(30.0)),
    ])
}

/// Add, wire (veth, /32, default via 169.254.1.1) and Ready, as the plugin does.
fn add_endpoint(
    socket: &std::path::Path,
    node: &Netns,
    pod_netns: &str,
    pod: &str,
) -> anyhow::Result<()> {
    let attachment = Attachment {
        container_id: format!("bench-{pod}"),
        ifname: "eth0".into(),
    };
    let pod_ref = PodRef {
        namespace: "default".into(),
        name: pod.into(),
        uid: None,
    };
    let alloc: Allocation = match agents::request(
        socket,
        &Request::Add {
            attachment: attachment.clone(),
            pod: pod_ref.clone(),
            netns: String::new(),
        },
    )? {
        Response::Ok(v) => serde_json::from_value(v)?,
        Response::Error(e) => anyhow::bail!("Add {pod}: {}", e.msg),
    };
    let ip: IpAddr = alloc.addresses[0]
        .split('/')
        .next()
        .unwrap_or_default()
        .parse()?;
    let pod_ns = Netns::create(pod_netns)?;
    netns::veth(node, &alloc.host_interface, &pod_ns, "eth0")?;
    pod_ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
    pod_ns.ip(&[
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ])?;
    pod_ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ])?;
    match agents::request(
        socket,
        &Request::Ready {
            attachment,
            pod: pod_ref,
            host_interface: alloc.host_interface,
            addresses: alloc.addresses,
            mac: None,
        },
    )? {
        Response::Ok(_) => Ok(()),
        Response::Error(e) => anyhow::bail!("Ready {pod}: {}", e.msg),
    }
}

/// The largest of a few VmRSS samples over a second: the agent's steady
/// footprint once the burst of work has settled.
fn steady_rss_mib(pid: i32) -> anyhow::Result<f64> {
    let mut max = 0u64;
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(200));
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| anyhow::anyhow!("no VmRSS for pid {pid}"))?;
        max = max.max(kib);
    }
    Ok(max as f64 / 1024.0)
}
