//! Pods on a node, end to end in a lab: the lab's runtime execs the CNI
//! conflist the agent installed (margay + portmap + bandwidth), the real
//! agent allocates from IPAM in the API server and programs the node.
//! Needs root and the binaries (`cargo build -p margay-lab -p margay-cni -p
//! margay-agent`).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use margay_lab::netns::{self, Netns};
use margay_lab::pods::spec::{PodSpec, Protocol};
use margay_lab::pods::{MatrixOptions, PodError, PodRuntime};
use margay_lab::probe;
use margay_lab::topology::netns_prefix;
use margay_lab::{Lab, LabGuard, Topology, UpOptions};
use serde_json::Value;

fn lab(dir: &Path, nodes: usize) -> LabGuard {
    let mut opts = UpOptions::new(dir);
    opts.nodes = nodes;
    opts.topology = Topology::L2;
    LabGuard::up(&opts).expect("lab up")
}

fn kubectl(lab: &Lab, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(lab.kubeconfig().unwrap())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Addresses held in IPAM blocks, as the API server has them.
fn allocated_addresses(lab: &Lab) -> Vec<String> {
    let v: Value =
        serde_json::from_str(&kubectl(lab, &["get", "ipamblocks", "-o", "json"])).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| {
            let cidr = b["spec"]["cidr"].as_str().unwrap_or_default().to_string();
            b["spec"]["allocations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |a| format!("{cidr}+{}:{}", a["ordinal"], a["handle"]))
        })
        .collect()
}

fn mgy_links(ns: &Netns) -> Vec<String> {
    ns.ip(&["-o", "link", "show"])
        .unwrap()
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with("mgy"))
        .collect()
}

fn pod_namespaces(lab: &Lab) -> Vec<String> {
    let prefix = format!("{}pod-", netns_prefix(&lab.plan().id));
    netns::list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

fn serving(ns: &str, name: &str, node: &str) -> PodSpec {
    PodSpec::new(ns, name, node)
        .label("app", name)
        .serve(Protocol::Tcp, 80)
        .serve(Protocol::Udp, 81)
}

/// A TCP listener inside a node's namespace (the node's own address).
fn listen_in(ns: &Netns, addr: SocketAddr) -> TcpListener {
    let name = ns.name().to_string();
    std::thread::spawn(move || {
        probe::enter_netns(&name).unwrap();
        TcpListener::bind(addr).unwrap()
    })
    .join()
    .unwrap()
}

#[test]
fn pods_on_one_node_reach_each_other_and_their_node() {
    let dir = tempfile::tempdir().unwrap();
    let lab = lab(dir.path(), 2);
    let rt = PodRuntime::new(&lab).unwrap();
    rt.create_namespace("x", &[("team".into(), "a".into())].into())
        .unwrap();
    let pods = [
        rt.create_pod(&serving("x", "a", "node1")).unwrap(),
        rt.create_pod(&serving("x", "b", "node1")).unwrap(),
        rt.create_pod(&serving("y", "c", "node1").named_port("http", Protocol::Tcp, 8080))
            .unwrap(),
    ];
    let ips: BTreeSet<IpAddr> = pods.iter().map(|p| p.primary_ip().unwrap()).collect();
    assert_eq!(ips.len(), 3, "distinct addresses: {ips:?}");

    // kubectl shows them Running with their IPs on their node.
    let wide = kubectl(&lab, &["get", "pods", "-A", "-o", "wide"]);
    for p in &pods {
        let line = wide
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(p.name.as_str()))
            .unwrap_or_else(|| panic!("{} missing from:\n{wide}", p.key()));
        let ip = p.primary_ip().unwrap().to_string();
        for want in ["1/1", "Running", ip.as_str(), "node1"] {
            assert!(line.contains(want), "{want} not in {line:?}");
        }
    }
    let named = kubectl(
        &lab,
        &[
            "get",
            "pod",
            "-n",
            "y",
            "c",
            "-o",
            "jsonpath={.spec.containers[0].ports[*].name}",
        ],
    );
    assert_eq!(named.trim(), "http");

    // Every pod reaches every pod, TCP and UDP, in one parallel matrix.
    let m = rt
        .matrix(&MatrixOptions {
            ports: vec![80, 81],
            ..MatrixOptions::default()
        })
        .unwrap();
    for from in &m.pods {
        for to in &m.pods {
            assert_eq!(
                m.connected(from, to, 80, Protocol::Tcp),
                Some(true),
                "{from}->{to} tcp/80"
            );
            assert_eq!(
                m.connected(from, to, 81, Protocol::Udp),
                Some(true),
                "{from}->{to} udp/81"
            );
            // Nothing serves tcp/81: refused, reported as not connected.
            assert_eq!(
                m.connected(from, to, 81, Protocol::Tcp),
                Some(false),
                "{from}->{to} tcp/81"
            );
        }
    }

    // A pod reaches its node's own address.
    let node1 = lab.plan().node("node1").unwrap().clone();
    let node_ns = Netns::open(&node1.netns);
    let l = listen_in(&node_ns, SocketAddr::new(node1.ipv4.into(), 7000));
    let addr = l.local_addr().unwrap();
    assert!(
        rt.probe_address(&pods[0], addr, Protocol::Tcp, Duration::from_secs(2))
            .unwrap()
    );
    drop(l);

    // The CLI: exit 0 when it connects, 1 when not.
    let cli = |port: &str| {
        Command::new(env!("CARGO_BIN_EXE_margay-lab"))
            .args(["--state-dir", dir.path().to_str().unwrap()])
            .args(["probe", "x/a", "y/c", "--port", port, "--timeout", "500ms"])
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(cli("80"), Some(0));
    assert_eq!(cli("82"), Some(1));

    // CNI CHECK passes, then names a route someone removed.
    rt.check_pod("x", "a", Some("margay")).unwrap();
    Netns::open(&pods[0].netns)
        .ip(&["route", "del", "default"])
        .unwrap();
    let e = rt.check_pod("x", "a", Some("margay")).unwrap_err();
    assert_eq!(e.cni_code(), Some(100), "{e}");
    assert!(
        e.to_string()
            .contains("route 0.0.0.0/0 via 169.254.1.1 dev eth0 is missing"),
        "{e}"
    );

    for p in &pods {
        rt.delete_pod(&p.namespace, &p.name).unwrap();
    }
    assert!(mgy_links(&node_ns).is_empty());
    assert!(pod_namespaces(&lab).is_empty());
    assert_eq!(allocated_addresses(&lab), Vec::<String>::new());
    assert!(
        kubectl(&lab, &["get", "pods", "-A", "-o", "name"])
            .trim()
            .is_empty()
    );
}

#[test]
fn a_hundred_pods_created_and_deleted_concurrently_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let lab = lab(dir.path(), 1);
    let rt = PodRuntime::new(&lab).unwrap();
    const PODS: usize = 100;
    const THREADS: usize = 20;
    let created: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let rt = &rt;
                s.spawn(move || {
                    (t..PODS)
                        .step_by(THREADS)
                        .map(|i| {
                            let spec = PodSpec::new("load", &format!("p{i}"), "node1")
                                .serve(Protocol::Tcp, 80);
                            rt.create_pod(&spec).unwrap_or_else(|e| panic!("p{i}: {e}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(created.len(), PODS);
    let ips: BTreeSet<IpAddr> = created.iter().map(|p| p.primary_ip().unwrap()).collect();
    assert_eq!(ips.len(), PODS, "every pod its own address");
    let node_ns = lab.netns("node1").unwrap();
    assert_eq!(mgy_links(&node_ns).len(), PODS);
    assert_eq!(allocated_addresses(&lab).len(), PODS);

    std::thread::scope(|s| {
        for t in 0..THREADS {
            let rt = &rt;
            s.spawn(move || {
                for i in (t..PODS).step_by(THREADS) {
                    rt.delete_pod("load", &format!("p{i}"))
                        .unwrap_or_else(|e| panic!("p{i}: {e}"));
                }
            });
        }
    });
    assert_eq!(allocated_addresses(&lab), Vec::<String>::new());
    assert_eq!(mgy_links(&node_ns), Vec::<String>::new());
    assert!(pod_namespaces(&lab).is_empty());
    assert!(rt.pods().unwrap().is_empty());
}

#[test]
fn chained_with_portmap_and_bandwidth() {
    let dir = tempfile::tempdir().unwrap();
    let lab = lab(dir.path(), 2);
    let rt = PodRuntime::new(&lab).unwrap();
    let pod = rt
        .create_pod(
            &PodSpec::new("x", "web", "node1")
                .host_port(8080, Protocol::Tcp, 80)
                .annotation("kubernetes.io/ingress-bandwidth", "10M")
                .annotation("kubernetes.io/egress-bandwidth", "20M"),
        )
        .unwrap();
    let node1 = lab.plan().node("node1").unwrap().clone();
    let node1_ns = Netns::open(&node1.netns);

    // hostPort: node2 reaches the pod's server through node1's address.
    let node2 = lab.plan().node("node2").unwrap().netns.clone();
    let to = SocketAddr::new(node1.ipv4.into(), 8080);
    let echoed = std::thread::spawn(move || {
        probe::enter_netns(&node2).unwrap();
        probe::tcp_echo_here(to, b"through portmap", Duration::from_secs(2))
    })
    .join()
    .unwrap()
    .unwrap();
    assert!(echoed);

    // bandwidth: a token bucket on the host side (pod ingress) and an ifb
    // device shaping the pod's egress.
    let host_if = pod.result["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let qdisc = node1_ns.ip(&["link", "show", &host_if]).unwrap();
    assert!(qdisc.contains(&host_if));
    let tc = node1_ns.run("tc", &["qdisc", "show"]).unwrap();
    assert!(tc.contains(&format!("qdisc tbf 1: dev {host_if}")), "{tc}");
    assert!(tc.contains("rate 10Mbit"), "{tc}");
    assert!(tc.contains("rate 20Mbit"), "{tc}");
    let ifb: Vec<String> = node1_ns
        .ip(&["-o", "link", "show", "type", "ifb"])
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ifb.len(), 1, "{ifb:?}");

    // DEL runs in reverse through all three: nothing of theirs stays.
    rt.delete_pod("x", "web").unwrap();
    assert!(
        node1_ns
            .ip(&["-o", "link", "show", "type", "ifb"])
            .unwrap()
            .trim()
            .is_empty()
    );
    let nat = node1_ns.run("iptables", &["-t", "nat", "-S"]).unwrap();
    assert!(!nat.contains("CNI-DN-"), "{nat}");
    assert!(mgy_links(&node1_ns).is_empty());
    assert_eq!(allocated_addresses(&lab), Vec::<String>::new());
}

#[test]
fn an_add_while_the_agent_is_stopped_fails_clearly_and_leaks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lab = lab(dir.path(), 1);
    let rt = PodRuntime::new(&lab).unwrap();
    lab.stop_agent("node1").unwrap();
    let e = rt
        .create_pod(&serving("x", "a", "node1"))
        .expect_err("no agent, no pod");
    assert!(matches!(e, PodError::Cni { .. }), "{e}");
    assert_eq!(e.cni_code(), Some(11), "{e}");
    let socket = lab.node_files("node1").unwrap().cni_socket;
    assert!(
        e.to_string().contains(&format!(
            "the agent is not reachable at {}",
            socket.display()
        )) && e
            .to_string()
            .contains("is margay-agent running on this node?"),
        "{e}"
    );
    let node_ns = lab.netns("node1").unwrap();
    assert!(mgy_links(&node_ns).is_empty());
    assert!(pod_namespaces(&lab).is_empty());
    assert!(rt.pods().unwrap().is_empty());
    assert!(
        kubectl(&lab, &["get", "pods", "-A", "-o", "name"])
            .trim()
            .is_empty()
    );

    lab.start_agent("node1").unwrap();
    assert_eq!(allocated_addresses(&lab), Vec::<String>::new());
    let p = rt.create_pod(&serving("x", "a", "node1")).unwrap();
    assert!(p.primary_ip().is_some());
}

#[test]
fn killing_and_restarting_the_agent_leaves_pods_working() {
    let dir = tempfile::tempdir().unwrap();
    let lab = lab(dir.path(), 1);
    let rt = PodRuntime::new(&lab).unwrap();
    rt.create_pod(&serving("x", "a", "node1")).unwrap();
    rt.create_pod(&serving("x", "b", "node1")).unwrap();
    let all_connected = |rt: &PodRuntime| {
        let m = rt
            .matrix(&MatrixOptions {
                ports: vec![80, 81],
                timeout: Duration::from_secs(2),
                ..MatrixOptions::default()
            })
            .unwrap();
        let served: Vec<_> = m
            .results
            .iter()
            .filter(|r| {
                (r.protocol, r.port) == (Protocol::Tcp, 80)
                    || (r.protocol, r.port) == (Protocol::Udp, 81)
            })
            .collect();
        assert_eq!(served.len(), 8, "2 pods x 2 pods x 2 served ports");
        served.iter().all(|r| r.connected)
    };
    assert!(all_connected(&rt));
    lab.kill_agent("node1").unwrap();
    assert!(
        all_connected(&rt),
        "pods keep working while the agent is down"
    );
    lab.start_agent("node1").unwrap();
    assert!(all_connected(&rt), "and after it is back");
    // The restarted agent still knows them: DEL releases, a new pod works.
    rt.delete_pod("x", "a").unwrap();
    rt.create_pod(&serving("x", "c", "node1")).unwrap();
    assert!(all_connected(&rt));
    rt.delete_pod("x", "b").unwrap();
    rt.delete_pod("x", "c").unwrap();
    assert_eq!(allocated_addresses(&lab), Vec::<String>::new());
}

#[test]
fn dual_stack_pods_and_address_annotations() {
    let dir = tempfile::tempdir().unwrap();
    let lab = lab(dir.path(), 1);
    let pool = dir.path().join("v6pool.yaml");
    std::fs::write(
        &pool,
        "apiVersion: margay.dev/v1\nkind: IPPool\nmetadata:\n  name: v6\nspec:\n  cidr: fd00:244::/64\n",
    )
    .unwrap();
    kubectl(&lab, &["apply", "-f", pool.to_str().unwrap()]);
    let rt = PodRuntime::new(&lab).unwrap();
    let a = rt.create_pod(&serving("x", "a", "node1")).unwrap();
    let b = rt.create_pod(&serving("x", "b", "node1")).unwrap();
    for p in [&a, &b] {
        assert!(p.ip(false).is_some() && p.ip(true).is_some(), "{:?}", p.ips);
    }
    let wide = kubectl(
        &lab,
        &[
            "get",
            "pod",
            "-n",
            "x",
            "a",
            "-o",
            "jsonpath={.status.podIPs[*].ip}",
        ],
    );
    assert_eq!(
        wide.split_whitespace().collect::<Vec<_>>(),
        [a.ips[0].to_string(), a.ips[1].to_string()]
    );
    let m = rt
        .matrix(&MatrixOptions {
            ports: vec![80],
            protocols: vec![Protocol::Tcp],
            ipv6: true,
            ..MatrixOptions::default()
        })
        .unwrap();
    assert_eq!(m.results.len(), 4);
    assert!(m.results.iter().all(|r| r.connected), "{:#?}", m.results);

    // An address asked for by annotation is the one the pod gets.
    let c = rt
        .create_pod(
            &serving("x", "c", "node1").annotation("margay.dev/ipAddrs", "[\"10.244.77.7\"]"),
        )
        .unwrap();
    assert_eq!(c.ips, ["10.244.77.7".parse::<IpAddr>().unwrap()]);
    assert!(
        rt.probe(
            ("x", "a"),
            ("x", "c"),
            80,
            Protocol::Tcp,
            Duration::from_secs(2)
        )
        .unwrap()
    );
    for p in ["a", "b", "c"] {
        rt.delete_pod("x", p).unwrap();
    }
    assert_eq!(allocated_addresses(&lab), Vec::<String>::new());
}

#[test]
fn gc_releases_attachments_the_runtime_no_longer_knows() {
    let dir = tempfile::tempdir().unwrap();
    let lab = lab(dir.path(), 1);
    let rt = PodRuntime::new(&lab).unwrap();
    let kept = rt.create_pod(&serving("x", "kept", "node1")).unwrap();
    // An attachment the runtime lost track of: ADD run by hand, no record.
    let uid = rt
        .create_pod_object(&PodSpec::new("x", "lost", "node1"))
        .unwrap();
    let lost_ns = format!("{}pod-lost", netns_prefix(&lab.plan().id));
    Netns::create(&lost_ns).unwrap();
    let att = margay_lab::pods::cni::AttachmentParams {
        container_id: "lost0".into(),
        netns_path: format!("/run/netns/{lost_ns}"),
        ifname: "eth0".into(),
        args: margay_lab::pods::cni::k8s_cni_args("x", "lost", &uid, "lost0"),
    };
    let list = rt.node_conflist("node1", Duration::ZERO).unwrap();
    rt.cni_exec("node1")
        .unwrap()
        .add(&list, &att, &serde_json::Map::new())
        .unwrap();
    let node_ns = lab.netns("node1").unwrap();
    assert_eq!(allocated_addresses(&lab).len(), 2);
    assert_eq!(mgy_links(&node_ns).len(), 2);

    // The agent's list is 1.0.0, where GC does not exist (a no-op, as in
    // libcni); margay's GC through a 1.1.0 list.
    rt.gc_node("node1", None).unwrap();
    assert_eq!(allocated_addresses(&lab).len(), 2);
    let mut v11 = list.clone();
    v11.cni_version = "1.1.0".into();
    v11.plugins.truncate(1);
    rt.gc_node("node1", Some(&v11)).unwrap();
    let left = allocated_addresses(&lab);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].ends_with(&format!("\"{}/eth0\"", kept.container_id)),
        "{left:?}"
    );
    let kept_if = kept.result["interfaces"][0]["name"].as_str().unwrap();
    assert_eq!(mgy_links(&node_ns), [kept_if]);
    // The pod that stayed still works.
    assert!(
        rt.probe(
            ("x", "kept"),
            ("x", "kept"),
            80,
            Protocol::Tcp,
            Duration::from_secs(2)
        )
        .unwrap()
    );
}
