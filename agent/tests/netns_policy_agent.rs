//! The agent's policy dataplane around the truth tables: CNI ADD returns
//! only once the new pod's policy is in the kernel (and fails cleanly when
//! it cannot be), a restarted agent adopts the table it finds without
//! rewriting it, drift is repaired by the periodic reconcile, established
//! connections stop where a change denies them, and drops are counted per
//! endpoint.
//!
//! Needs the `margay-lab`, `margay-agent` and `margay-cni` binaries built.

mod policy_lab;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use margay_api::endpoint::host_interface_name;
use margay_lab::netns::Netns;
use margay_lab::pods::cni::{AttachmentParams, k8s_cni_args};
use margay_lab::pods::spec::{PodSpec, Protocol};
use margay_lab::topology::netns_prefix;
use policy_lab::{ENFORCE_DEADLINE, Placement, PolicyLab, ns_of};
use serde_json::Map;

fn np(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: \"{ns}\"}}\nspec:\n{spec}\n"
    )
}

/// `nft -a list table inet margay` in a node, counter values blanked (they
/// move with traffic; everything else, handles included, must not).
fn table(lab: &PolicyLab, node: &str) -> String {
    let out = lab
        .lab
        .netns(node)
        .expect("netns")
        .run("nft", &["-a", "list", "table", "inet", "margay"])
        .expect("nft list");
    out.lines()
        .map(|l| match l.find("packets ") {
            Some(i) => format!("{}packets _", &l[..i]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Polls until `cond` holds.
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + ENFORCE_DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A pod attachment run through CNI by hand (as a runtime would), to see
/// the kernel the moment ADD returns.
struct Attachment {
    params: AttachmentParams,
    netns: Netns,
}

impl Attachment {
    fn new(lab: &PolicyLab, ns: &str, name: &str, uid: &str) -> Attachment {
        let prefix = netns_prefix(&lab.lab.plan().id);
        let netns = Netns::create(&format!("{prefix}pod-{ns}_{name}")).expect("pod netns");
        let container_id = format!("{:0>64}", format!("{name}{}", std::process::id()));
        Attachment {
            params: AttachmentParams {
                netns_path: format!("/run/netns/{}", netns.name()),
                ifname: "eth0".into(),
                args: k8s_cni_args(ns, name, uid, &container_id),
                container_id,
            },
            netns,
        }
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let _ = self.netns.delete();
    }
}

#[test]
fn cni_add_waits_for_policy_and_restarts_adopt_the_table() {
    let lab = PolicyLab::up(
        Placement::SameNode,
        1,
        &[
            "--cni-policy-wait-timeout",
            "3s",
            "--dataplane-refresh-interval",
            "1s",
        ],
    );
    lab.apply(&np(
        "x",
        "from-b",
        "  podSelector: {}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]",
    ));
    let expect = |f: &str, t: &str, _: Protocol, _: u16| ns_of(t) != "x" || f == "x/b";
    lab.check("x isolated, open to x/b", expect);
    let node = "node1";
    let node_ns = lab.lab.netns(node).expect("netns");
    let exec = lab.rt.cni_exec(node).expect("cni exec");
    let list = lab
        .rt
        .node_conflist(node, margay_lab::pods::CONFIG_WAIT)
        .expect("conflist");

    // ADD returns only once the pod's chains are in the table: the very
    // listing taken right after shows them, with the policy in them.
    let uid = lab
        .rt
        .create_pod_object(&PodSpec::new("x", "new", node).label("pod", "new"))
        .expect("pod object");
    let att = Attachment::new(&lab, "x", "new", &uid);
    exec.add(&list, &att.params, &Map::new()).expect("ADD");
    let iface = host_interface_name("x", "new");
    let now = table(&lab, node);
    assert!(
        now.contains(&format!("\"{iface}\" : jump e-{iface}-i")),
        "{iface} is not dispatched yet when ADD returned:\n{now}"
    );
    let chain = now
        .split(&format!("chain e-{iface}-i {{"))
        .nth(1)
        .and_then(|c| c.split('}').next())
        .unwrap_or_default()
        .to_string();
    assert!(
        chain.contains("jump k-") && chain.contains(&format!("counter name \"d-{iface}-i\" drop")),
        "the new pod's ingress chain lacks its policy:\n{chain}"
    );
    exec.del(&list, &att.params, &Map::new(), None)
        .expect("DEL");
    until("the deleted endpoint to leave the table", || {
        !table(&lab, node).contains(&iface)
    });
    drop(att);

    // A pod whose policy can never be compiled (a host-network pod, whose
    // traffic is node traffic: a stand-in for "not programmed in time"):
    // ADD fails after cniPolicyWaitTimeout, naming why, and leaves nothing.
    lab.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: hostnet, namespace: x}\nspec:\n  nodeName: node1\n  hostNetwork: true\n  containers: [{name: c, image: none}]\n",
    );
    let uid = lab
        .kubectl(
            &[
                "get",
                "pod",
                "-n",
                "x",
                "hostnet",
                "-o",
                "jsonpath={.metadata.uid}",
            ],
            None,
        )
        .trim()
        .to_string();
    let att = Attachment::new(&lab, "x", "hostnet", &uid);
    let err = exec
        .add(&list, &att.params, &Map::new())
        .expect_err("ADD must fail");
    assert_eq!(err.code(), Some(11), "{err}");
    assert!(
        err.to_string().contains("cniPolicyWaitTimeout") && err.to_string().contains("x/hostnet"),
        "{err}"
    );
    let hostnet_if = host_interface_name("x", "hostnet");
    let links = node_ns.ip(&["-o", "link"]).expect("links");
    assert!(!links.contains(&hostnet_if), "left behind: {links}");
    let blocks = lab.kubectl(&["get", "ipamblocks", "-o", "json"], None);
    assert!(
        !blocks.contains(&att.params.container_id),
        "the address was not given back:\n{blocks}"
    );
    drop(att);

    // A killed agent leaves policy in force; started again, it adopts the
    // table as it is (same objects, same handles: nothing rewritten).
    let before = table(&lab, node);
    lab.lab.kill_agent(node).expect("kill");
    lab.check_probes("agent killed: policy stays in force", expect);
    lab.lab.start_agent(node).expect("start");
    assert_eq!(before, table(&lab, node), "the restart rewrote the table");
    lab.check_probes("agent back", expect);

    // Drift (an endpoint's dispatch entry deleted by hand) is repaired by
    // the periodic reconcile.
    let xa = host_interface_name("x", "a");
    node_ns
        .run(
            "nft",
            &[
                "delete",
                "element",
                "inet",
                "margay",
                "to-pod",
                &format!("{{ \"{xa}\" }}"),
            ],
        )
        .expect("nft delete element");
    until("the periodic reconcile to repair the table", || {
        table(&lab, node).contains(&format!("\"{xa}\" : jump e-{xa}-i"))
    });
    lab.wait_metrics(node, "counts the repair", |m| {
        m.lines()
            .any(|l| l.starts_with("margay_nft_reconcile_repairs_total ") && !l.ends_with(" 0"))
    });
    lab.check_probes("after the repair", expect);
}

/// A TCP connection from `from`'s namespace to `to` port 80 (the pod
/// servers echo).
fn connect(lab: &PolicyLab, from: &str, to: &str) -> TcpStream {
    let netns = lab.pods[from].netns.clone();
    let addr = SocketAddr::new(lab.ip(to), 80);
    std::thread::spawn(move || {
        margay_lab::probe::enter_netns(&netns).expect("setns");
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect")
    })
    .join()
    .expect("thread")
}

/// Whether `payload` comes back over the connection within the probe
/// timeout.
fn echoes(s: &mut TcpStream, payload: &[u8]) -> bool {
    if s.write_all(payload).is_err() {
        return false;
    }
    let _ = s.set_read_timeout(Some(policy_lab::PROBE_TIMEOUT));
    let mut got = vec![0u8; payload.len()];
    s.read_exact(&mut got).is_ok() && got == payload
}

#[test]
fn established_connections_stop_where_a_change_denies_them() {
    // x/a, x/c on node1; x/b, y/a on node2 (with spread placement).
    let lab = PolicyLab::up(Placement::from_env(), 2, &[]);
    let mut same_node = connect(&lab, "x/c", "x/a");
    let mut cross_node = connect(&lab, "y/a", "x/a");
    let mut kept = connect(&lab, "x/b", "x/a");
    for (i, s) in [&mut same_node, &mut cross_node, &mut kept]
        .into_iter()
        .enumerate()
    {
        assert!(echoes(s, format!("hello {i}").as_bytes()), "connection {i}");
    }

    lab.apply(&np(
        "x",
        "a-from-b",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]",
    ));
    lab.check("x/a only from x/b", |f, t, _, _| t != "x/a" || f == "x/b");

    // New connections are judged by the policy; the established ones the
    // change denies are cut (their conntrack entries deleted, and their
    // next segments are not SYNs), the allowed one goes on.
    let mut n = 0u32;
    until("the denied connections to stop", || {
        n += 1;
        !echoes(&mut same_node, format!("same {n}").as_bytes())
            && !echoes(&mut cross_node, format!("cross {n}").as_bytes())
    });
    assert!(!echoes(&mut same_node, b"still cut"));
    assert!(!echoes(&mut cross_node, b"still cut"));
    assert!(
        echoes(&mut kept, b"still allowed"),
        "the allowed connection broke"
    );
    let a_node = lab.node_of("x/a").to_string();
    lab.wait_metrics(&a_node, "counts the deleted flows", |m| {
        m.lines().any(|l| {
            l.starts_with("margay_conntrack_flows_deleted_total ")
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) >= Some(2.0)
        })
    });

    // Drops decided by x/a's policy are counted for x/a's ingress (the
    // denied probes of the check above), read back from the kernel.
    lab.wait_metrics(&a_node, "counts x/a's ingress drops", |m| {
        m.lines().any(|l| {
            l.starts_with("margay_policy_dropped_packets_total{")
                && l.contains("namespace=\"x\"")
                && l.contains("pod=\"a\"")
                && l.contains("direction=\"ingress\"")
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) > Some(0.0)
        })
    });
}
