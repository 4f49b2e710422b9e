//! `margay-lab up` with agents, driven over the real endpoint socket against
//! the real API (the lab's emulator): three agents come up ready, a pod goes
//! through Add / Ready / Del (wired by the test as the CNI plugin would), a
//! route deleted by hand is repaired, and an agent killed with SIGKILL and
//! started again leaves the pod's route untouched and adopts it.
//!
//! Needs the `margay-lab` and `margay-agent` binaries built
//! (`cargo build -p margay-lab -p margay-agent`; `make test` does).

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use margay_agent::calc::ROUTE_PROTOCOL;
use margay_agent::endpoint_service::call;
use margay_api::endpoint::{
    Allocation, Attachment, EndpointInfo, PodRef, Request, Response, codes, host_interface_name,
};
use margay_api::{IPAMBlock, net::Cidr};
use margay_lab::netns::Netns;
use margay_lab::topology::netns_prefix;
use margay_lab::{Lab, LabGuard, UpOptions};
use serde_json::json;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn up(dir: &Path, nodes: usize) -> LabGuard {
    let mut opts = UpOptions::new(dir);
    opts.nodes = nodes;
    LabGuard::up(&opts).unwrap()
}

async fn client(lab: &Lab) -> kube::Client {
    margay_lab::nodes::client(&lab.kubeconfig().unwrap())
        .await
        .unwrap()
}

async fn create_pod(client: &kube::Client, ns: &str, name: &str, node: &str) -> Pod {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "none"}]},
    }))
    .unwrap();
    Api::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap()
}

fn attachment(cid: &str) -> Attachment {
    Attachment {
        container_id: cid.into(),
        ifname: "eth0".into(),
    }
}

fn pod_ref(ns: &str, name: &str) -> PodRef {
    PodRef {
        namespace: ns.into(),
        name: name.into(),
        uid: None,
    }
}

async fn ok(socket: &Path, req: Request) -> serde_json::Value {
    match call(socket, &req).await.unwrap() {
        Response::Ok(v) => v,
        Response::Error(e) => panic!("{req:?} failed: {e:?}"),
    }
}

/// Wires the pod the way the plugin does: veth (host side `host_if`, pod side
/// eth0), the /32, and the default route via 169.254.1.1.
fn wire(node: &Netns, pod_netns: &str, host_if: &str, ip: IpAddr) -> Netns {
    let pod = Netns::create(pod_netns).unwrap();
    margay_lab::netns::veth(node, host_if, &pod, "eth0").unwrap();
    pod.ip(&["link", "set", "lo", "up"]).unwrap();
    pod.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])
        .unwrap();
    pod.ip(&[
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ])
    .unwrap();
    pod.ip(&[
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ])
    .unwrap();
    pod
}

fn our_routes(node: &Netns) -> Vec<String> {
    node.ip(&["-o", "route", "show", "proto", &ROUTE_PROTOCOL.to_string()])
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn pings(from: &Netns, to: &str) -> bool {
    from.command("ping")
        .args(["-c", "1", "-W", "2", to])
        .output()
        .unwrap()
        .status
        .success()
}

async fn until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Every (handle, address) IPAM holds.
async fn allocations(client: &kube::Client) -> Vec<(String, IpAddr)> {
    let blocks: Vec<IPAMBlock> = Api::<IPAMBlock>::all(client.clone())
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    let mut out = Vec::new();
    for b in blocks {
        let cidr = Cidr::parse_strict(&b.spec.cidr).unwrap();
        for a in &b.spec.allocations {
            out.push((a.handle.clone(), cidr.nth(u128::from(a.ordinal)).unwrap()));
        }
    }
    out
}

fn metrics(node: &Netns) -> String {
    node.run(
        "curl",
        &["-sf", "--max-time", "5", "http://127.0.0.1:9091/metrics"],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_starts_ready_agents_and_a_pod_goes_through_add_ready_del() {
    let dir = tempfile::tempdir().unwrap();
    let lab = up(dir.path(), 3);
    for node in lab.node_names() {
        let files = lab.node_files(&node).unwrap();
        assert!(lab.agent_pid(&node).unwrap().is_some(), "{node}: no agent");
        assert_eq!(
            ok(&files.cni_socket, Request::Status).await,
            serde_json::Value::Null
        );
        let conflist: serde_json::Value = serde_json::from_slice(
            &std::fs::read(files.cni_conf_dir.join("10-margay.conflist")).unwrap(),
        )
        .unwrap();
        assert_eq!(conflist["plugins"][0]["type"], "margay");
        assert_eq!(
            conflist["plugins"][0]["socket"],
            files.cni_socket.display().to_string()
        );
        let readyz = lab
            .netns(&node)
            .unwrap()
            .run(
                "curl",
                &["-sf", "--max-time", "5", "http://127.0.0.1:9099/readyz"],
            )
            .unwrap();
        assert_eq!(readyz.trim(), "ok");
    }

    let kube = client(&lab).await;
    create_pod(&kube, "default", "web-1", "node1").await;
    let node1 = lab.netns("node1").unwrap();
    let socket = lab.node_files("node1").unwrap().cni_socket;
    let att = attachment("c0ffee01");

    // Add: an address from the default pool, the host interface name, the MTU.
    let add = Request::Add {
        attachment: att.clone(),
        pod: pod_ref("default", "web-1"),
        netns: "/run/netns/x".into(),
    };
    let alloc: Allocation = serde_json::from_value(ok(&socket, add.clone()).await).unwrap();
    assert_eq!(
        alloc.host_interface,
        host_interface_name("default", "web-1")
    );
    assert_eq!(alloc.mtu, 1500, "the lab's uplink MTU");
    assert_eq!(alloc.addresses.len(), 1, "{alloc:?}");
    let ip: IpAddr = alloc.addresses[0].trim_end_matches("/32").parse().unwrap();
    assert!(Cidr::parse_strict("10.244.0.0/16").unwrap().contains(ip));
    // A retried Add gives the same answer and allocates nothing more.
    let again: Allocation = serde_json::from_value(ok(&socket, add).await).unwrap();
    assert_eq!(again, alloc);
    let held: Vec<_> = allocations(&kube).await;
    assert_eq!(held, vec![("c0ffee01/eth0".to_string(), ip)]);

    // Ready: route with our protocol, sysctls, and the pod reaches its node.
    let pod_ns = wire(
        &node1,
        &format!("{}pod-web-1", netns_prefix(&lab.plan().id)),
        &alloc.host_interface,
        ip,
    );
    ok(
        &socket,
        Request::Ready {
            attachment: att.clone(),
            pod: pod_ref("default", "web-1"),
            host_interface: alloc.host_interface.clone(),
            addresses: alloc.addresses.clone(),
            mac: None,
        },
    )
    .await;
    assert_eq!(
        our_routes(&node1),
        vec![format!("{ip} dev {} scope link", alloc.host_interface)]
    );
    let proxy_arp = node1
        .run(
            "sysctl",
            &[
                "-n",
                &format!("net.ipv4.conf.{}.proxy_arp", alloc.host_interface),
            ],
        )
        .unwrap();
    assert_eq!(proxy_arp.trim(), "1");
    let node1_ip = lab.node("node1").unwrap().ipv4.to_string();
    assert!(pings(&pod_ns, &node1_ip), "the pod cannot reach its node");

    // The pod's addresses are written where users look for them.
    let pods: Api<Pod> = Api::namespaced(kube.clone(), "default");
    until("the podIPs annotation", async || {
        let p = pods.get("web-1").await.unwrap();
        p.metadata
            .annotations
            .unwrap_or_default()
            .get("margay.dev/podIPs")
            == Some(&ip.to_string())
    })
    .await;

    // Check answers what the agent holds.
    let info: EndpointInfo = serde_json::from_value(
        ok(
            &socket,
            Request::Check {
                attachment: att.clone(),
                pod: pod_ref("default", "web-1"),
            },
        )
        .await,
    )
    .unwrap();
    assert_eq!(info.addresses, alloc.addresses);

    // A route deleted by hand comes back within moments.
    node1.ip(&["route", "del", &format!("{ip}/32")]).unwrap();
    until("the route to be repaired", async || {
        !our_routes(&node1).is_empty()
    })
    .await;
    assert!(pings(&pod_ns, &node1_ip));

    let m = metrics(&node1);
    assert!(
        m.contains("margay_cni_requests_total{op=\"add\",result=\"ok\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("margay_ipam_operations_total{op=\"allocate\",result=\"ok\"} 1"),
        "{m}"
    );
    assert!(m.contains("margay_active_local_endpoints 1"), "{m}");

    // Del: released, route gone, idempotent, unknown attachments succeed.
    node1.ip(&["link", "del", &alloc.host_interface]).unwrap();
    // (Check now names what is missing.)
    match call(
        &socket,
        &Request::Check {
            attachment: att.clone(),
            pod: pod_ref("default", "web-1"),
        },
    )
    .await
    .unwrap()
    {
        Response::Error(e) => {
            assert_eq!(e.code, codes::IO_FAILURE);
            assert!(
                e.msg.contains(&format!(
                    "host interface {} does not exist",
                    alloc.host_interface
                )),
                "{}",
                e.msg
            );
        }
        other => panic!("{other:?}"),
    }
    ok(
        &socket,
        Request::Del {
            attachment: att.clone(),
            pod: None,
        },
    )
    .await;
    assert!(allocations(&kube).await.is_empty());
    assert!(our_routes(&node1).is_empty());
    ok(
        &socket,
        Request::Del {
            attachment: att.clone(),
            pod: None,
        },
    )
    .await;
    ok(
        &socket,
        Request::Del {
            attachment: attachment("never-seen"),
            pod: None,
        },
    )
    .await;
    // AgentConfiguration changes apply while the agent runs: the log level.
    let cfg: margay_api::AgentConfiguration = serde_json::from_value(json!({
        "apiVersion": "margay.dev/v1", "kind": "AgentConfiguration",
        "metadata": {"name": "node.node1"},
        "spec": {"logLevel": "Debug"},
    }))
    .unwrap();
    Api::<margay_api::AgentConfiguration>::all(kube.clone())
        .create(&PostParams::default(), &cfg)
        .await
        .unwrap();
    let log = lab.state_dir().join("logs/agent-node1.log");
    until("the new log level", async || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("log level changed level=\"debug\"")
    })
    .await;
    match call(
        &socket,
        &Request::Check {
            attachment: att,
            pod: pod_ref("default", "web-1"),
        },
    )
    .await
    .unwrap()
    {
        Response::Error(e) => assert_eq!(e.code, codes::UNKNOWN_CONTAINER),
        other => panic!("{other:?}"),
    }
}

/// `ip monitor route` in a namespace, recording what it sees.
struct RouteMonitor {
    child: Child,
    out: std::path::PathBuf,
}

impl RouteMonitor {
    fn start(ns: &Netns, dir: &Path) -> RouteMonitor {
        let out = dir.join("monitor.log");
        let child = Command::new("ip")
            .args(["-n", ns.name(), "monitor", "route"])
            .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let m = RouteMonitor { child, out };
        m.wait_subscribed(ns);
        m
    }

    /// Changes a sentinel route until the monitor reports it: from then on
    /// it sees every change.
    fn wait_subscribed(&self, ns: &Netns) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let _ = ns.ip(&["route", "replace", "10.255.255.1/32", "dev", "lo"]);
            let _ = ns.ip(&["route", "del", "10.255.255.1/32", "dev", "lo"]);
            if self.text().contains("10.255.255.1") {
                return;
            }
            assert!(Instant::now() < deadline, "ip monitor did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for RouteMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_restarts_without_touching_pod_routes_and_a_stopped_one_refuses_adds() {
    let dir = tempfile::tempdir().unwrap();
    let lab = up(dir.path(), 1);
    let kube = client(&lab).await;
    let node1 = lab.netns("node1").unwrap();
    let socket = lab.node_files("node1").unwrap().cni_socket;
    create_pod(&kube, "default", "db-0", "node1").await;
    let att = attachment("feed01");
    let alloc: Allocation = serde_json::from_value(
        ok(
            &socket,
            Request::Add {
                attachment: att.clone(),
                pod: pod_ref("default", "db-0"),
                netns: String::new(),
            },
        )
        .await,
    )
    .unwrap();
    let ip: IpAddr = alloc.addresses[0].trim_end_matches("/32").parse().unwrap();
    let pod_ns = wire(
        &node1,
        &format!("{}pod-db-0", netns_prefix(&lab.plan().id)),
        &alloc.host_interface,
        ip,
    );
    ok(
        &socket,
        Request::Ready {
            attachment: att.clone(),
            pod: pod_ref("default", "db-0"),
            host_interface: alloc.host_interface.clone(),
            addresses: alloc.addresses.clone(),
            mac: None,
        },
    )
    .await;
    let routes = our_routes(&node1);
    assert_eq!(routes.len(), 1);

    let mon_dir = tempfile::tempdir().unwrap();
    let monitor = RouteMonitor::start(&node1, mon_dir.path());
    let old_pid = lab.agent_pid("node1").unwrap().unwrap();
    lab.kill_agent("node1").unwrap();
    assert!(lab.agent_pid("node1").unwrap().is_none());
    // A stale route of ours, as if an endpoint was deleted while no agent ran.
    let stale = "10.244.250.250";
    node1
        .ip(&[
            "route",
            "add",
            &format!("{stale}/32"),
            "dev",
            &alloc.host_interface,
            "proto",
            &ROUTE_PROTOCOL.to_string(),
            "scope",
            "link",
        ])
        .unwrap();
    // While it is down: the pod still works, and an ADD fails fast and clearly.
    assert!(pings(&pod_ns, &lab.node("node1").unwrap().ipv4.to_string()));
    assert!(
        call(&socket, &Request::Status).await.is_err(),
        "nobody should answer on the socket"
    );

    let new_pid = lab.start_agent("node1").unwrap();
    assert_ne!(new_pid, old_pid);
    // Ready means caches synced and the first sweep done: the stale route is
    // gone, the pod's route was never touched.
    assert_eq!(our_routes(&node1), routes);
    let seen = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let t = monitor.text();
            if t.contains(stale) || Instant::now() > deadline {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert!(seen.contains(stale), "the sweep was not seen: {seen}");
    assert!(
        !seen.contains(&format!("{ip} ")),
        "the pod's route flapped: {seen}"
    );
    assert!(pings(&pod_ns, &lab.node("node1").unwrap().ipv4.to_string()));

    // The restarted agent knows the endpoint (adopted from its records).
    let info: EndpointInfo = serde_json::from_value(
        ok(
            &socket,
            Request::Check {
                attachment: att.clone(),
                pod: pod_ref("default", "db-0"),
            },
        )
        .await,
    )
    .unwrap();
    assert_eq!(info.addresses, alloc.addresses);

    // Its record lost too: recovered from IPAM and the kernel, still untouched.
    lab.stop_agent("node1").unwrap();
    std::fs::remove_dir_all(lab.node_files("node1").unwrap().agent_dir.join("endpoints")).unwrap();
    lab.start_agent("node1").unwrap();
    assert_eq!(our_routes(&node1), routes);
    ok(
        &socket,
        Request::Check {
            attachment: att.clone(),
            pod: pod_ref("default", "db-0"),
        },
    )
    .await;
    assert!(
        !monitor.text().contains(&format!("{ip} ")),
        "the pod's route flapped: {}",
        monitor.text()
    );

    // A stopped agent: an ADD cannot even connect (the plugin reports it), and nothing is allocated.
    lab.stop_agent("node1").unwrap();
    create_pod(&kube, "default", "late", "node1").await;
    let before = allocations(&kube).await;
    assert!(
        call(
            &socket,
            &Request::Add {
                attachment: attachment("late01"),
                pod: pod_ref("default", "late"),
                netns: String::new()
            }
        )
        .await
        .is_err()
    );
    assert_eq!(allocations(&kube).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_pods_leave_nothing_behind_and_annotations_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let lab = up(dir.path(), 1);
    let kube = client(&lab).await;
    let node1 = lab.netns("node1").unwrap();
    let socket = lab.node_files("node1").unwrap().cni_socket;
    let prefix = netns_prefix(&lab.plan().id);

    // 100 pods at once: Add, wire, Ready, then Del, all concurrently.
    const N: usize = 100;
    for i in 0..N {
        create_pod(&kube, "default", &format!("p{i}"), "node1").await;
    }
    let mut tasks = Vec::new();
    for i in 0..N {
        let socket = socket.clone();
        let node = Netns::open(node1.name());
        let pod_netns = format!("{prefix}pod-p{i}");
        tasks.push(tokio::spawn(async move {
            let att = attachment(&format!("cc{i:04}"));
            let pod = pod_ref("default", &format!("p{i}"));
            let alloc: Allocation = serde_json::from_value(
                ok(
                    &socket,
                    Request::Add {
                        attachment: att.clone(),
                        pod: pod.clone(),
                        netns: String::new(),
                    },
                )
                .await,
            )
            .unwrap();
            let ip: IpAddr = alloc.addresses[0].trim_end_matches("/32").parse().unwrap();
            let host_if = alloc.host_interface.clone();
            let pod_ns = tokio::task::spawn_blocking(move || wire(&node, &pod_netns, &host_if, ip))
                .await
                .unwrap();
            ok(
                &socket,
                Request::Ready {
                    attachment: att.clone(),
                    pod,
                    host_interface: alloc.host_interface.clone(),
                    addresses: alloc.addresses.clone(),
                    mac: None,
                },
            )
            .await;
            (att, ip, alloc.host_interface, pod_ns)
        }));
    }
    let mut pods = Vec::new();
    for t in tasks {
        pods.push(t.await.unwrap());
    }
    let mut ips: Vec<IpAddr> = pods.iter().map(|p| p.1).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), N, "an address was handed out twice");
    assert_eq!(our_routes(&node1).len(), N);
    assert_eq!(allocations(&kube).await.len(), N);

    let mut dels = Vec::new();
    for (att, _, host_if, pod_ns) in pods {
        let socket = socket.clone();
        let node = Netns::open(node1.name());
        dels.push(tokio::spawn(async move {
            // As the plugin does: the interface goes, then the agent forgets.
            tokio::task::spawn_blocking(move || {
                node.ip(&["link", "del", &host_if]).unwrap();
                pod_ns.delete().unwrap();
            })
            .await
            .unwrap();
            ok(
                &socket,
                Request::Del {
                    attachment: att,
                    pod: None,
                },
            )
            .await;
        }));
    }
    for d in dels {
        d.await.unwrap();
    }
    assert!(
        allocations(&kube).await.is_empty(),
        "{:?}",
        allocations(&kube).await
    );
    assert!(our_routes(&node1).is_empty());
    let links = node1.ip(&["-o", "link", "show"]).unwrap();
    assert!(!links.contains("mgy"), "{links}");

    // Annotations: a requested address, a requested pool, and a bad one.
    let pods: Api<Pod> = Api::namespaced(kube.clone(), "default");
    for (name, ann) in [
        ("fixed", json!({"margay.dev/ipAddrs": "[\"10.244.77.7\"]"})),
        (
            "pooled",
            json!({"margay.dev/ipv4pools": "[\"default-ipv4-ippool\"]"}),
        ),
        ("broken", json!({"margay.dev/ipAddrs": "10.244.77.8"})),
        (
            "elsewhere",
            json!({"margay.dev/ipv4pools": "[\"no-such-pool\"]"}),
        ),
    ] {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "annotations": ann},
            "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "none"}]},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let add = |cid: &str, name: &str| Request::Add {
        attachment: attachment(cid),
        pod: pod_ref("default", name),
        netns: String::new(),
    };
    let fixed: Allocation = serde_json::from_value(ok(&socket, add("f1", "fixed")).await).unwrap();
    assert_eq!(fixed.addresses, vec!["10.244.77.7/32".to_string()]);
    let pooled: Allocation =
        serde_json::from_value(ok(&socket, add("f2", "pooled")).await).unwrap();
    assert_eq!(pooled.addresses.len(), 1);
    match call(&socket, &add("f3", "broken")).await.unwrap() {
        Response::Error(e) => {
            assert_eq!(e.code, codes::INVALID_NETWORK_CONFIG);
            assert!(
                e.msg.contains("Pod default/broken") && e.msg.contains("margay.dev/ipAddrs"),
                "{}",
                e.msg
            );
        }
        other => panic!("{other:?}"),
    }
    match call(&socket, &add("f4", "elsewhere")).await.unwrap() {
        Response::Error(e) => assert!(e.msg.contains("no-such-pool"), "{}", e.msg),
        other => panic!("{other:?}"),
    }
    match call(&socket, &add("f5", "no-such-pod")).await.unwrap() {
        Response::Error(e) => assert!(e.msg.contains("Pod default/no-such-pod"), "{}", e.msg),
        other => panic!("{other:?}"),
    }
    // Failed ADDs leaked nothing.
    assert_eq!(allocations(&kube).await.len(), 2);

    // GC: only f1 is still valid; f2's allocation goes.
    let report = ok(
        &socket,
        Request::Gc {
            valid_attachments: vec![attachment("f1")],
        },
    )
    .await;
    assert_eq!(report["released"], json!(["f2/eth0"]));
    let left = allocations(&kube).await;
    assert_eq!(
        left,
        vec![("f1/eth0".to_string(), "10.244.77.7".parse().unwrap())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_pod_gets_both_families_and_reaches_its_node_over_ipv6() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = UpOptions::new(dir.path());
    opts.nodes = 1;
    opts.ipv6_pool = true;
    let lab = LabGuard::up(&opts).unwrap();
    let kube = client(&lab).await;
    let node1 = lab.netns("node1").unwrap();
    let socket = lab.node_files("node1").unwrap().cni_socket;
    create_pod(&kube, "default", "dual", "node1").await;
    let att = attachment("d0a1");
    // `up` created the IPv6 pool before the agents started: both families at once.
    let alloc: Allocation = serde_json::from_value(
        ok(
            &socket,
            Request::Add {
                attachment: att.clone(),
                pod: pod_ref("default", "dual"),
                netns: String::new(),
            },
        )
        .await,
    )
    .unwrap();
    assert_eq!(alloc.addresses.len(), 2, "{alloc:?}");
    let v4: IpAddr = alloc.addresses[0].trim_end_matches("/32").parse().unwrap();
    let v6: IpAddr = alloc.addresses[1].trim_end_matches("/128").parse().unwrap();
    assert!(
        v6.is_ipv6() && Cidr::parse_strict("fd00:244::/48").unwrap().contains(v6),
        "{alloc:?}"
    );

    let pod_ns = wire(
        &node1,
        &format!("{}pod-dual", netns_prefix(&lab.plan().id)),
        &alloc.host_interface,
        v4,
    );
    pod_ns
        .ip(&[
            "-6",
            "addr",
            "add",
            &format!("{v6}/128"),
            "dev",
            "eth0",
            "nodad",
        ])
        .unwrap();
    // The pod's IPv6 default route goes via the host side's link-local address.
    let mut host_ll = String::new();
    until("the host side's link-local address", async || {
        let out = node1
            .ip(&[
                "-6",
                "-o",
                "addr",
                "show",
                "dev",
                &alloc.host_interface,
                "scope",
                "link",
            ])
            .unwrap();
        host_ll = out
            .split_whitespace()
            .skip_while(|w| *w != "inet6")
            .nth(1)
            .unwrap_or_default()
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        !host_ll.is_empty()
    })
    .await;
    pod_ns
        .ip(&[
            "-6", "route", "add", "default", "via", &host_ll, "dev", "eth0",
        ])
        .unwrap();
    ok(
        &socket,
        Request::Ready {
            attachment: att.clone(),
            pod: pod_ref("default", "dual"),
            host_interface: alloc.host_interface.clone(),
            addresses: alloc.addresses.clone(),
            mac: None,
        },
    )
    .await;
    let v6_routes = node1
        .ip(&[
            "-6",
            "-o",
            "route",
            "show",
            "proto",
            &ROUTE_PROTOCOL.to_string(),
        ])
        .unwrap();
    assert!(
        v6_routes.contains(&format!("{v6} dev {}", alloc.host_interface)),
        "{v6_routes}"
    );
    let node_v6 = lab.node("node1").unwrap().ipv6.to_string();
    assert!(
        pings(&pod_ns, &node_v6),
        "the pod cannot reach its node over IPv6"
    );
    assert!(pings(&pod_ns, &lab.node("node1").unwrap().ipv4.to_string()));
    ok(
        &socket,
        Request::Del {
            attachment: att,
            pod: None,
        },
    )
    .await;
    assert!(allocations(&kube).await.is_empty());
}

/// The holder of the IPAM GC Lease, if any.
async fn gc_leader(kube: &kube::Client) -> Option<String> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(kube.clone(), "kube-system");
    leases
        .get_opt(margay_agent::ipam_gc::LEASE_NAME)
        .await
        .unwrap()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

/// Allocates for a pod through `node`'s agent, then deletes the Pod object
/// without a CNI DEL: a leak for the collector to find.
async fn leak(lab: &Lab, kube: &kube::Client, node: &str, name: &str) -> IpAddr {
    create_pod(kube, "default", name, node).await;
    let socket = lab.node_files(node).unwrap().cni_socket;
    let alloc: Allocation = serde_json::from_value(
        ok(
            &socket,
            Request::Add {
                attachment: attachment(&format!("leak-{name}")),
                pod: pod_ref("default", name),
                netns: String::new(),
            },
        )
        .await,
    )
    .unwrap();
    Api::<Pod>::namespaced(kube.clone(), "default")
        .delete(name, &Default::default())
        .await
        .unwrap();
    alloc.addresses[0].trim_end_matches("/32").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_elected_agent_collects_leaked_addresses_and_another_takes_over_when_it_dies() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = UpOptions::new(dir.path());
    opts.agent_args = ["--ipam-gc-interval", "1s", "--ipam-gc-lease-duration", "2s"]
        .map(String::from)
        .to_vec();
    let lab = LabGuard::up(&opts).unwrap();
    let kube = client(&lab).await;
    // Leaks are released at once (no grace period) in this test.
    let config: margay_api::IPAMConfiguration = serde_json::from_value(json!({
        "apiVersion": "margay.dev/v1", "kind": "IPAMConfiguration",
        "metadata": {"name": "default"},
        "spec": {"leakGracePeriod": "0s"},
    }))
    .unwrap();
    Api::<margay_api::IPAMConfiguration>::all(kube.clone())
        .create(&PostParams::default(), &config)
        .await
        .unwrap();

    let mut leader = None;
    until("a leader", async || {
        leader = gc_leader(&kube).await;
        leader.is_some()
    })
    .await;
    let leader = leader.unwrap();
    assert!(lab.node_names().contains(&leader), "{leader}");
    // Exactly one agent says it leads.
    until("only the Lease holder to report leading", async || {
        let mut leading = Vec::new();
        for n in lab.node_names() {
            if metrics(&lab.netns(&n).unwrap())
                .lines()
                .any(|l| l == "margay_ipam_gc_leader 1")
            {
                leading.push(n);
            }
        }
        leading == vec![leader.clone()]
    })
    .await;

    // A leak on another node is collected by the leader.
    let other = lab.node_names().into_iter().find(|n| *n != leader).unwrap();
    let ip = leak(&lab, &kube, &other, "leaky-1").await;
    assert!(allocations(&kube).await.iter().any(|(_, a)| *a == ip));
    until("the leak to be collected", async || {
        allocations(&kube).await.is_empty()
    })
    .await;

    // The leader dies: another agent takes the Lease over and collects.
    lab.kill_agent(&leader).unwrap();
    let mut next = None;
    until("a new leader", async || {
        next = gc_leader(&kube).await.filter(|l| *l != leader);
        next.is_some()
    })
    .await;
    let next = next.unwrap();
    let ip = leak(&lab, &kube, &next, "leaky-2").await;
    assert!(allocations(&kube).await.iter().any(|(_, a)| *a == ip));
    until("the second leak to be collected", async || {
        allocations(&kube).await.is_empty()
    })
    .await;
    until("the reclamation to be counted", async || {
        metrics(&lab.netns(&next).unwrap()).contains("margay_ipam_gc_reclamations_total 1")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_fails_fast_and_clearly_while_the_api_server_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = UpOptions::new(dir.path());
    opts.nodes = 1;
    opts.agent_args = ["--api-timeout", "1s"].map(String::from).to_vec();
    let lab = LabGuard::up(&opts).unwrap();
    let kube = client(&lab).await;
    let socket = lab.node_files("node1").unwrap().cni_socket;
    create_pod(&kube, "default", "patient", "node1").await;
    // The API server stops answering (SIGSTOP: connections hang, as with an
    // overloaded server). Whether the agent finds the pod in its cache or has
    // to GET it, the ADD must come back with "try again later", not hang.
    let api_pid = lab
        .status()
        .processes
        .iter()
        .find(|p| p.role == "apiserver")
        .unwrap()
        .pid;
    struct Cont(i32);
    impl Drop for Cont {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the lab's own API server process.
            unsafe { libc::kill(self.0, libc::SIGCONT) };
        }
    }
    // SAFETY: as above; `Cont` resumes it even if the test fails.
    unsafe { libc::kill(api_pid, libc::SIGSTOP) };
    let cont = Cont(api_pid);
    let add = Request::Add {
        attachment: attachment("p0"),
        pod: pod_ref("default", "patient"),
        netns: String::new(),
    };
    match call(&socket, &add).await.unwrap() {
        Response::Error(e) => {
            assert_eq!(e.code, codes::TRY_AGAIN_LATER, "{e:?}");
            assert!(e.msg.contains("Pod default/patient"), "{}", e.msg);
        }
        other => panic!("an ADD succeeded without the API: {other:?}"),
    }
    drop(cont);
    // Once the API answers again, the retried ADD works.
    let mut done = false;
    until("the ADD to work again", async || {
        if let Response::Ok(_) = call(&socket, &add).await.unwrap() {
            done = true;
        }
        done
    })
    .await;
    assert_eq!(allocations(&kube).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_of_pods_gone_without_a_del_are_released_and_no_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = UpOptions::new(dir.path());
    opts.nodes = 1;
    opts.agent_args = ["--endpoint-cleanup-interval", "1s"]
        .map(String::from)
        .to_vec();
    let lab = LabGuard::up(&opts).unwrap();
    let kube = client(&lab).await;
    let node1 = lab.netns("node1").unwrap();
    let socket = lab.node_files("node1").unwrap().cni_socket;
    let prefix = netns_prefix(&lab.plan().id);
    let pods: Api<Pod> = Api::namespaced(kube.clone(), "default");
    let mut wired = Vec::new();
    for name in ["gone", "no-object", "no-veth"] {
        create_pod(&kube, "default", name, "node1").await;
        let att = attachment(&format!("gc-{name}"));
        let alloc: Allocation = serde_json::from_value(
            ok(
                &socket,
                Request::Add {
                    attachment: att.clone(),
                    pod: pod_ref("default", name),
                    netns: String::new(),
                },
            )
            .await,
        )
        .unwrap();
        let ip: IpAddr = alloc.addresses[0].trim_end_matches("/32").parse().unwrap();
        let pod_ns = wire(
            &node1,
            &format!("{prefix}pod-{name}"),
            &alloc.host_interface,
            ip,
        );
        ok(
            &socket,
            Request::Ready {
                attachment: att,
                pod: pod_ref("default", name),
                host_interface: alloc.host_interface.clone(),
                addresses: alloc.addresses.clone(),
                mac: None,
            },
        )
        .await;
        wired.push((name, alloc.host_interface, pod_ns));
    }
    for (name, host_if, pod_ns) in &wired {
        // "gone": interface and object both gone, no DEL. "no-object": the
        // object is gone but the pod is still wired. "no-veth": the reverse.
        if *name != "no-object" {
            node1.ip(&["link", "del", host_if]).unwrap();
            pod_ns.delete().unwrap();
        }
        if *name != "no-veth" {
            pods.delete(name, &Default::default()).await.unwrap();
        }
    }
    until("the gone pod's address to be released", async || {
        !allocations(&kube)
            .await
            .iter()
            .any(|(h, _)| h == "gc-gone/eth0")
    })
    .await;
    // The others stay, through two more cleanup rounds.
    let counter = |name: &str| -> u64 {
        metrics(&node1)
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let seen = counter("margay_endpoint_cleanup_rounds_total");
    until("two more cleanup rounds", async || {
        counter("margay_endpoint_cleanup_rounds_total") >= seen + 2
    })
    .await;
    assert_eq!(counter("margay_endpoints_forgotten_total"), 1);
    let mut handles: Vec<String> = allocations(&kube)
        .await
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    handles.sort();
    assert_eq!(handles, ["gc-no-object/eth0", "gc-no-veth/eth0"]);
    ok(
        &socket,
        Request::Check {
            attachment: attachment("gc-no-object"),
            pod: pod_ref("default", "no-object"),
        },
    )
    .await;
    match call(
        &socket,
        &Request::Check {
            attachment: attachment("gc-gone"),
            pod: pod_ref("default", "gone"),
        },
    )
    .await
    .unwrap()
    {
        Response::Error(e) => assert_eq!(e.code, codes::UNKNOWN_CONTAINER),
        other => panic!("{other:?}"),
    }
}
