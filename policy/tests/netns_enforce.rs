//! The key invariant, in the kernel: what the evaluator explains is what
//! nftables enforces. A network namespace acts as the node; the nine pods of
//! the x/y/z × a/b/c layout are wired to it by hand (Calico style); real TCP
//! and UDP traffic crosses it, and for every ordered pair, port and protocol
//! the kernel's verdict must equal the evaluator's — after full loads, after
//! incremental deltas, after someone else edited our table, and with another
//! table's forward chain in the same hooks.

mod common;

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use common::*;
use margay_lab::handwired;
use margay_lab::netns::{Netns, NetnsGuard};
use margay_policy::eval::explain;
use margay_policy::nft::{Nft, NftDataplane, Renderer};
use margay_policy::{Compiler, PodKey, PolicyRef};

const PORTS: [u16; 2] = [80, 81];
/// How long a probe waits before calling the connection dropped.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

fn netns_path(ns: &Netns) -> PathBuf {
    PathBuf::from("/run/netns").join(ns.name())
}

/// Run `f` on a thread that entered `ns` (sockets it creates live there).
fn in_netns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_path_buf();
    thread::spawn(move || {
        let file = std::fs::File::open(&ns).expect("open netns");
        // SAFETY: setns on a valid netns fd, for this thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {}", ns.display());
        f()
    })
    .join()
    .expect("netns thread")
}

/// TCP and UDP servers on 80 and 81 in a pod (UDP echoes).
struct Servers {
    stop: Arc<AtomicBool>,
}

impl Servers {
    fn start(pod: &Path) -> Servers {
        let stop = Arc::new(AtomicBool::new(false));
        for port in PORTS {
            let tcp = in_netns(pod, move || {
                TcpListener::bind(("0.0.0.0", port)).expect("bind tcp")
            });
            tcp.set_nonblocking(true).expect("nonblocking");
            let s = stop.clone();
            thread::spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    match tcp.accept() {
                        Ok((mut c, _)) => {
                            let _ = c.set_read_timeout(Some(Duration::from_millis(50)));
                            let _ = c.read(&mut [0u8; 8]);
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
            let udp = in_netns(pod, move || {
                UdpSocket::bind(("0.0.0.0", port)).expect("bind udp")
            });
            udp.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            let s = stop.clone();
            thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !s.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = udp.recv_from(&mut buf) {
                        let _ = udp.send_to(&buf[..n], from);
                    }
                }
            });
        }
        Servers { stop }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Whether a new connection from the pod namespace `from` to `to:port` gets
/// through (UDP: an echo comes back).
fn probe(from: &Path, proto: &'static str, to: IpAddr, port: u16) -> bool {
    let addr = SocketAddr::new(to, port);
    match proto {
        "tcp" => {
            let sock = in_netns(from, move || {
                TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).map(|_| ())
            });
            sock.is_ok()
        }
        _ => {
            let sock = in_netns(from, || UdpSocket::bind(("0.0.0.0", 0)).expect("bind"));
            sock.set_read_timeout(Some(PROBE_TIMEOUT)).expect("timeout");
            if sock.send_to(b"ping", addr).is_err() {
                return false;
            }
            let mut buf = [0u8; 16];
            matches!(sock.recv_from(&mut buf), Ok((4, _)))
        }
    }
}

/// A node namespace with the nine pods wired to it.
struct Node {
    node: NetnsGuard,
    pods: Vec<(String, OwnedNs)>,
    _servers: Vec<Servers>,
}

impl Node {
    fn build() -> Node {
        let node = NetnsGuard::create_unique("mgy-node").expect("node netns");
        node.sysctls(&[("net.ipv4.ip_forward", "1")])
            .expect("forwarding");
        // An uplink that goes nowhere: proxy ARP answers for 169.254.1.1 only
        // when the node has a route to it out of another interface, and the
        // node needs an address of its own to reach its pods from.
        for args in [
            &[
                "link", "add", "upl0", "type", "veth", "peer", "name", "upl1",
            ][..],
            &["link", "set", "upl0", "up"],
            &["link", "set", "upl1", "up"],
            &["addr", "add", "192.168.200.1/32", "dev", "upl0"],
            &["route", "add", "default", "dev", "upl0"],
        ] {
            node.ip(args).expect("node uplink");
        }
        let mut pods = Vec::new();
        let mut servers = Vec::new();
        for p in all_pods() {
            let (ns, pod) = split(&p);
            let guard_name = margay_lab::netns::unique_name(&format!("mgy-{ns}{pod}"));
            let IpAddr::V4(ip) = pod_ip(ns, pod) else {
                unreachable!()
            };
            let wired = handwired::wire_pod(&node, &guard_name, &iface(ns, pod), ip)
                .unwrap_or_else(|e| panic!("wiring {p}: {e}"));
            // Own the pod namespace so it goes even if the test fails.
            let guard = OwnedNs(wired.netns);
            servers.push(Servers::start(&netns_path(&guard)));
            pods.push((p.clone(), guard));
        }
        Node {
            node,
            pods,
            _servers: servers,
        }
    }

    fn dataplane(&self) -> NftDataplane {
        let nft = Nft::open_in_netns(&netns_path(&self.node)).expect("libnftables");
        NftDataplane::new(nft, Renderer::default())
    }

    fn pod_path(&self, p: &str) -> PathBuf {
        let ns = &self.pods.iter().find(|(n, _)| n == p).expect("pod").1;
        netns_path(ns)
    }

    /// Probe every pair concurrently; compare with the evaluator.
    fn check(&self, c: &Compiler, what: &str) {
        let mut jobs = Vec::new();
        for from in all_pods() {
            for to in all_pods() {
                if from == to {
                    continue;
                }
                for proto in ["tcp", "udp"] {
                    for port in PORTS {
                        let want = explain(c.ir(), &packet(proto, &from, &to, port)).allowed();
                        let src = self.pod_path(&from);
                        let (ts, tp) = split(&to);
                        let dst = pod_ip(ts, tp);
                        let label = format!("{from} -> {to} {proto}/{port}");
                        jobs.push((
                            label,
                            want,
                            thread::spawn(move || probe(&src, proto, dst, port)),
                        ));
                    }
                }
            }
        }
        let mut wrong = Vec::new();
        let mut allowed = 0;
        for (label, want, h) in jobs {
            let got = h.join().expect("probe thread");
            allowed += usize::from(got);
            if got != want {
                wrong.push(format!(
                    "{label}: kernel {}, evaluator {}",
                    if got { "allows" } else { "drops" },
                    if want { "allows" } else { "drops" }
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "{what}: kernel and evaluator disagree on {} of 288 probes:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
        eprintln!("{what}: 288 probes agree ({allowed} allowed)");
    }
}

/// A pod namespace (created by `handwired`), deleted on drop so a failing
/// test leaves nothing behind.
struct OwnedNs(Netns);

impl std::ops::Deref for OwnedNs {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.0
    }
}

impl Drop for OwnedNs {
    fn drop(&mut self) {
        if let Err(e) = self.0.delete() {
            eprintln!("warning: could not delete {}: {e}", self.0.name());
        }
    }
}

fn policies(c: &mut Compiler) {
    apply(
        c,
        r#"
metadata: {name: web, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}, {ipBlock: {cidr: 10.0.0.0/16, except: [10.0.2.0/24]}}]
    ports: [{port: serve-80-tcp}, {port: 81, endPort: 90, protocol: UDP}]
"#,
    );
    apply(
        c,
        r#"
metadata: {name: egress, namespace: y}
spec:
  podSelector: {matchLabels: {pod: c}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {matchLabels: {ns: z}}}]
  - ports: [{port: 81, protocol: UDP}]
"#,
    );
    apply_global(
        c,
        r#"
metadata: {name: guard}
spec:
  order: 10
  selector: "pod == 'b'"
  ingress:
  - action: Log
  - action: Deny
    protocol: TCP
    source: {nets: ["10.0.2.0/24"], notNets: ["10.0.2.4/32"]}
    destination: {ports: [81]}
  - action: Pass
    source: {namespaceSelector: "ns == 'x'"}
  - action: Allow
    protocol: UDP
"#,
    );
    apply_global(
        c,
        r#"
metadata: {name: default-deny-z}
spec:
  selector: all()
  namespaceSelector: "ns == 'z'"
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: "pod == 'a'"}
    destination: {ports: [serve-80-tcp]}
"#,
    );
}

#[test]
fn kernel_verdicts_equal_the_evaluator() {
    let node = Node::build();
    let mut dp = node.dataplane();
    let mut c = cluster();
    dp.apply_full(c.ir()).expect("empty load");
    node.check(&c, "no policy");

    policies(&mut c);
    dp.apply_full(c.ir()).expect("full load");
    node.check(&c, "policies, full load");

    // Incremental: label changes (pod, namespace), a policy update and a
    // deletion, each applied as a delta.
    let mut xc = make_pod("y", "b");
    xc.labels.insert("pod".into(), "c".into());
    let d = c.upsert_pod(xc);
    dp.apply_delta(c.ir(), &d).expect("delta");
    let d = c.upsert_namespace(margay_policy::Namespace::new("y", labels(&[("ns", "z")])));
    dp.apply_delta(c.ir(), &d).expect("delta");
    node.check(&c, "after label changes (deltas)");
    assert!(
        !dp.reconcile(c.ir()).expect("reconcile").changed_anything(),
        "deltas left drift"
    );

    let d = c.remove_policy(&PolicyRef::Global {
        name: "guard".into(),
    });
    dp.apply_delta(c.ir(), &d).expect("delta");
    let d = apply(
        &mut c,
        r#"
metadata: {name: web, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{podSelector: {matchLabels: {pod: c}}, namespaceSelector: {}}]}]
"#,
    );
    dp.apply_delta(c.ir(), &d).expect("delta");
    let d = c.remove_pod(&PodKey::new("z", "c"));
    dp.apply_delta(c.ir(), &d).expect("delta");
    let d = c.upsert_pod(make_pod("z", "c"));
    dp.apply_delta(c.ir(), &d).expect("delta");
    node.check(&c, "after policy update and deletion (deltas)");
    assert!(
        !dp.reconcile(c.ir()).expect("reconcile").changed_anything(),
        "deltas left drift"
    );
}

#[test]
fn reconcile_repairs_foreign_edits_and_coexists_with_another_table() {
    let node = Node::build();
    let mut dp = node.dataplane();
    let mut c = cluster();
    policies(&mut c);
    dp.apply_full(c.ir()).expect("full load");
    // Someone else's table with its own forward chain, counting everything
    // and dropping nothing of ours (like kube-proxy's or iptables-nft's).
    dp.nft()
        .run(
            "add table ip other\n\
             add chain ip other forward { type filter hook forward priority -5; policy accept; }\n\
             add rule ip other forward counter\n\
             add chain ip other post { type filter hook forward priority 50; policy accept; }\n\
             add rule ip other post ct state new counter",
        )
        .expect("foreign table");
    node.check(&c, "with a foreign table");

    // Edits to our table: a rule inserted into a policy chain, a set element
    // removed, a set element added, a dispatch entry deleted, a chain of
    // ours deleted, a stray chain added.
    let ir = c.ir();
    let chain = ir.chains.keys().next().expect("a chain").clone();
    let set = ir
        .sets
        .values()
        .find(|s| !s.elements.is_empty() && s.kind == margay_policy::ir::SetKind::Addresses)
        .expect("a set with elements");
    let elem = margay_policy::nft::render::elem_text(set.elements.iter().next().expect("elem"));
    let victim = iface("z", "a");
    dp.nft()
        .run(&format!(
            "insert rule inet margay {chain} accept\n\
             delete element inet margay {} {{ {elem} }}\n\
             add element inet margay {} {{ 10.9.9.9 }}\n\
             delete element inet margay to-pod {{ \"{victim}\" }}\n\
             add chain inet margay stray\n\
             add rule inet margay stray drop\n\
             add counter inet margay d-mgystray-i",
            set.id, set.id
        ))
        .expect("foreign edits");
    let r = dp.reconcile(c.ir()).expect("reconcile");
    assert!(!r.full_reload, "a surgical repair was possible: {r:?}");
    assert_eq!(r.elements_added, 1, "{r:?}");
    assert_eq!(r.elements_removed, 1, "{r:?}");
    assert_eq!(r.chains_rewritten, 1, "{r:?}");
    assert_eq!(r.chains_deleted, 1, "{r:?}");
    assert_eq!(r.map_elements_fixed, 1, "{r:?}");
    assert_eq!(r.counters_fixed, 1, "the stray counter goes: {r:?}");
    assert!(!dp.reconcile(c.ir()).expect("reconcile").changed_anything());
    node.check(&c, "after reconcile repaired foreign edits");

    // The other table is still there and saw the traffic.
    let other = dp.nft().run("list table ip other").expect("other table");
    assert!(other.contains("counter packets"), "{other}");

    // A broken skeleton (base chain gone) is replaced whole.
    dp.nft()
        .run("delete chain inet margay ingress")
        .expect("delete base");
    let r = dp.reconcile(c.ir()).expect("reconcile");
    assert!(r.full_reload, "{r:?}");
    node.check(&c, "after full reload");
}

#[test]
fn node_reaches_its_pods_and_unknown_interfaces_are_dropped() {
    let node = Node::build();
    let mut dp = node.dataplane();
    let mut c = cluster();
    apply(
        &mut c,
        "metadata: {name: deny, namespace: x}\nspec: {podSelector: {}, policyTypes: [Ingress, Egress]}",
    );
    // y/a is not (yet) a known endpoint: its interface must drop both ways.
    c.remove_local_endpoint(&PodKey::new("y", "a"));
    dp.apply_full(c.ir()).expect("load");
    let node_path = netns_path(&node.node);
    let xa = match pod_ip("x", "a") {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    // The node (kubelet probes) reaches an isolated pod.
    assert!(
        probe(&node_path, "tcp", IpAddr::V4(xa), 80),
        "node to isolated pod"
    );
    // Unknown interface: nothing in or out, even to unisolated pods.
    assert!(!probe(&node.pod_path("y/a"), "tcp", pod_ip("z", "a"), 80));
    assert!(!probe(&node.pod_path("z/a"), "tcp", pod_ip("y", "a"), 80));
    // Known, unisolated pods still talk.
    assert!(probe(&node.pod_path("z/a"), "tcp", pod_ip("z", "b"), 80));

    // Drops decided by an endpoint's chains are counted per endpoint and
    // direction: z/a -> x/a dies at x/a's ingress, x/b -> z/b at x/b's
    // egress; nothing is counted for endpoints that dropped nothing.
    let before = dp.drop_counters().expect("counters");
    assert!(!probe(&node.pod_path("z/a"), "tcp", pod_ip("x", "a"), 80));
    assert!(!probe(&node.pod_path("x/b"), "udp", pod_ip("z", "b"), 81));
    let after = dp.drop_counters().expect("counters");
    let xa =
        |m: &std::collections::BTreeMap<String, margay_policy::nft::dataplane::EndpointDrops>,
         p: &str| {
            m.get(&iface(split(p).0, split(p).1))
                .copied()
                .unwrap_or_default()
        };
    assert!(
        xa(&after, "x/a").ingress_packets > xa(&before, "x/a").ingress_packets,
        "{after:?}"
    );
    assert!(
        xa(&after, "x/b").egress_packets > xa(&before, "x/b").egress_packets,
        "{after:?}"
    );
    assert_eq!(xa(&after, "z/b"), xa(&before, "z/b"), "{after:?}");
    assert_eq!(
        after.len(),
        8,
        "every known endpoint has its counters: {after:?}"
    );
}
