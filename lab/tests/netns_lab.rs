//! The lab itself: building, reaching, isolating and tearing down clusters of
//! network namespaces. Needs root.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use margay_lab::netns::{self, Netns};
use margay_lab::topology::netns_prefix;
use margay_lab::{Lab, LabError, LabGuard, Topology, UpOptions, handwired, process};

fn bare(dir: &Path, nodes: usize, topology: Topology) -> UpOptions {
    UpOptions {
        nodes,
        topology,
        state_dir: dir.to_path_buf(),
        bare: true,
        agents: false,
        ipv6_pool: false,
        agent_args: Vec::new(),
    }
}

fn root_links() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let mut links: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
        .collect();
    links.sort();
    links
}

fn lab_namespaces(id: &str) -> Vec<String> {
    let prefix = netns_prefix(id);
    netns::list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

fn pings(ns: &Netns, to: IpAddr) -> bool {
    let out = ns
        .command("ping")
        .args(["-c", "1", "-W", "2", &to.to_string()])
        .output()
        .unwrap();
    out.status.success()
}

/// Every node reaches every other node over IPv4 and IPv6.
fn assert_full_reachability(lab: &Lab) {
    for from in &lab.plan().nodes {
        let ns = Netns::open(&from.netns);
        for to in &lab.plan().nodes {
            if from.name == to.name {
                continue;
            }
            for addr in [IpAddr::V4(to.ipv4), IpAddr::V6(to.ipv6)] {
                assert!(
                    pings(&ns, addr),
                    "{} cannot reach {} at {addr}",
                    from.name,
                    to.name
                );
            }
        }
    }
}

#[test]
fn up_then_down_leaves_no_namespace_link_or_process() {
    let dir = tempfile::tempdir().unwrap();
    let links_before = root_links();
    let lab = Lab::up(&bare(dir.path(), 3, Topology::L2)).unwrap();
    let id = lab.plan().id.clone();
    assert_eq!(
        lab_namespaces(&id).len(),
        5,
        "fabric, router and three nodes"
    );
    // A process the lab did not start itself, living in a node namespace.
    let mut sleeper = lab
        .exec_command("node2", &["sleep".into(), "300".into()])
        .unwrap()
        .spawn()
        .unwrap();
    let sleeper_pid = sleeper.id() as i32;
    assert!(process::alive(sleeper_pid));

    let report = Lab::down(dir.path()).unwrap();
    assert_eq!(report.namespaces.len(), 5);
    assert!(lab_namespaces(&id).is_empty());
    assert_eq!(root_links(), links_before, "root namespace links changed");
    assert!(
        !process::alive(sleeper_pid),
        "process in a node namespace survived down"
    );
    sleeper.wait().unwrap();
    assert!(matches!(Lab::open(dir.path()), Err(LabError::NotUp(_))));
}

#[test]
fn nodes_reach_each_other_in_the_l2_topology() {
    let dir = tempfile::tempdir().unwrap();
    let lab = LabGuard::up(&bare(dir.path(), 3, Topology::L2)).unwrap();
    assert!(lab.plan().nodes.iter().all(|n| n.subnet == 0));
    assert_full_reachability(&lab);
}

#[test]
fn nodes_reach_each_other_across_the_router_in_the_routed_topology() {
    let dir = tempfile::tempdir().unwrap();
    let lab = LabGuard::up(&bare(dir.path(), 3, Topology::Routed)).unwrap();
    assert_full_reachability(&lab);
    // node1 and node2 share subnet a; node3 is one router hop away.
    let node1 = lab.netns("node1").unwrap();
    let route = |to: &str| node1.ip(&["route", "get", to]).unwrap();
    assert!(
        !route("10.0.1.2").contains(" via "),
        "same subnet goes direct"
    );
    assert!(
        route("10.0.2.3").contains("via 10.0.1.254"),
        "other subnet goes via the router"
    );
}

#[test]
fn two_labs_in_parallel_do_not_collide() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let labs: Vec<LabGuard> = std::thread::scope(|s| {
        let handles: Vec<_> = dirs
            .iter()
            .map(|d| s.spawn(|| LabGuard::up(&bare(d.path(), 2, Topology::L2)).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (a, b) = (&labs[0], &labs[1]);
    assert_ne!(a.plan().id, b.plan().id);
    let a_ns = lab_namespaces(&a.plan().id);
    let b_ns = lab_namespaces(&b.plan().id);
    assert_eq!((a_ns.len(), b_ns.len()), (4, 4));
    assert!(a_ns.iter().all(|n| !b_ns.contains(n)));
    for lab in &labs {
        assert_full_reachability(lab);
    }
    // Taking one down leaves the other intact.
    let a_id = a.plan().id.clone();
    drop(labs);
    assert!(lab_namespaces(&a_id).is_empty());
}

#[test]
fn a_second_up_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _lab = LabGuard::up(&bare(dir.path(), 1, Topology::L2)).unwrap();
    let err = Lab::up(&bare(dir.path(), 1, Topology::L2)).unwrap_err();
    assert!(matches!(err, LabError::AlreadyUp(_)), "{err}");
    assert!(err.to_string().contains("margay-lab down"), "{err}");
}

#[test]
fn down_after_a_crashed_up_still_removes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let id = margay_lab::state::StateDir::open(dir.path())
        .unwrap()
        .lab_id();
    let mut up = Command::new(env!("CARGO_BIN_EXE_margay-lab"))
        .args(["up", "--bare", "--nodes", "60", "--state-dir"])
        .arg(dir.path())
        .spawn()
        .unwrap();
    // Kill `up` once it has built part of the lab.
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab_namespaces(&id).len() < 6 {
        assert!(Instant::now() < deadline, "up never started building");
        std::thread::sleep(Duration::from_millis(5));
    }
    up.kill().unwrap();
    up.wait().unwrap();
    assert!(!lab_namespaces(&id).is_empty());

    let out = Command::new(env!("CARGO_BIN_EXE_margay-lab"))
        .args(["down", "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        lab_namespaces(&id).is_empty(),
        "left: {:?}",
        lab_namespaces(&id)
    );
}

#[test]
fn exec_runs_in_the_node_namespace_and_names_unknown_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let lab = LabGuard::up(&bare(dir.path(), 2, Topology::L2)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_margay-lab"))
        .args(["exec", "--state-dir"])
        .arg(dir.path())
        .args([
            "node2", "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("10.0.0.2/24"));

    let err = lab.exec_command("node9", &["true".into()]).unwrap_err();
    assert!(err.to_string().contains("node1, node2"), "{err}");
}

#[test]
fn hand_wired_calico_style_pods_reach_each_other_across_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let lab = LabGuard::up(&bare(dir.path(), 2, Topology::L2)).unwrap();
    let (n1, n2) = (lab.plan().nodes[0].clone(), lab.plan().nodes[1].clone());
    let prefix = netns_prefix(&lab.plan().id);
    let a = handwired::wire_pod(
        &Netns::open(&n1.netns),
        &format!("{prefix}pod-a"),
        "mgyhanda",
        "10.244.1.2".parse().unwrap(),
    )
    .unwrap();
    let b = handwired::wire_pod(
        &Netns::open(&n2.netns),
        &format!("{prefix}pod-b"),
        "mgyhandb",
        "10.244.2.2".parse().unwrap(),
    )
    .unwrap();
    handwired::route_to(&Netns::open(&n1.netns), b.ip, n2.ipv4).unwrap();
    handwired::route_to(&Netns::open(&n2.netns), a.ip, n1.ipv4).unwrap();
    assert!(
        pings(&a.netns, IpAddr::V4(b.ip)),
        "pod a cannot reach pod b"
    );
    assert!(
        pings(&b.netns, IpAddr::V4(n2.ipv4)),
        "pod b cannot reach its node"
    );
    // The pod namespaces carry the lab prefix, so `down` removes them too.
    drop(lab);
    assert!(!a.netns.exists() && !b.netns.exists());
}

#[test]
fn up_serves_the_api_to_kubectl_and_to_the_nodes_and_down_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = UpOptions::new(dir.path());
    opts.nodes = 2;
    opts.topology = Topology::Routed;
    // This test is about the API server; agents have tests of their own.
    opts.agents = false;
    let lab = LabGuard::up(&opts).unwrap();

    // kubectl on this machine sees the registered nodes with their addresses.
    let kubeconfig = lab.kubeconfig().expect("a kubeconfig");
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "nodes", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut seen: Vec<(String, String)> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let name = n["metadata"]["name"].as_str().unwrap().to_string();
            let ip = n["status"]["addresses"][0]["address"]
                .as_str()
                .unwrap()
                .to_string();
            (name, ip)
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("node1".to_string(), "10.0.1.1".to_string()),
            ("node2".to_string(), "10.0.2.2".to_string())
        ]
    );

    // A node in the second subnet reaches the API server across the router.
    let url = format!("http://{}/api/v1/nodes/node1", lab.plan().api_address());
    let body = lab
        .netns("node2")
        .unwrap()
        .run("curl", &["-sf", "--max-time", "5", &url])
        .unwrap();
    assert!(body.contains("\"name\":\"node1\""), "{body}");

    let status = lab.status();
    let api = status
        .processes
        .iter()
        .find(|p| p.role == "apiserver")
        .expect("apiserver process");
    assert!(api.running);
    let pid = api.pid;
    drop(lab);
    assert!(!process::alive(pid), "the API server outlived down");
}
