//! A lab for policy tests in the upstream layout: namespaces x, y, z
//! (label `ns=<name>`) with pods a, b, c (label `pod=<name>`), serving TCP
//! and UDP on 80 and 81 under the named ports `serve-80-tcp` etc., placed on
//! the nodes as [`Placement`] says; real agents enforce policy applied with
//! real `kubectl`.
//!
//! [`PolicyLab::check`] is the heart of every case: the expected verdict of
//! every ordered pair (pod to itself excluded, as upstream) on every port
//! and protocol must equal (1) what `margay_policy::ClusterExplainer` says
//! from a snapshot of the API — the IR the agents compile — and (2) what
//! real probes see, once the agents have caught up (probes are retried
//! until they match or a deadline passes).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams};
use margay_api::GlobalNetworkPolicy;
use margay_api::net::IpFamily;
use margay_lab::pods::spec::{PodSpec, Protocol};
use margay_lab::pods::{MatrixOptions, PodRecord, PodRuntime};
use margay_lab::{LabGuard, UpOptions};
use margay_policy::{ClusterExplainer, ClusterSnapshot, PodKey};

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];
pub const PORTS: [u16; 2] = [80, 81];
pub const PROTOCOLS: [Protocol; 2] = [Protocol::Tcp, Protocol::Udp];
/// How long a probe waits: a dropped probe costs this once (probes run in
/// parallel).
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(400);
/// How long agents may take to enforce a change before a case fails.
pub const ENFORCE_DEADLINE: Duration = Duration::from_secs(15);

/// Where the nine pods run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Round robin over the nodes: every namespace spans every node, so
    /// there are same-node and cross-node pairs.
    Spread,
    /// All on node1 (for a lab without routes between nodes).
    SameNode,
}

impl Placement {
    /// `MARGAY_POLICY_PLACEMENT=same-node` or `spread` (the default).
    pub fn from_env() -> Placement {
        match std::env::var("MARGAY_POLICY_PLACEMENT").as_deref() {
            Ok("same-node") => Placement::SameNode,
            _ => Placement::Spread,
        }
    }
}

/// `ns/pod` split.
pub fn split(p: &str) -> (&str, &str) {
    p.split_once('/').expect("ns/pod")
}

pub fn ns_of(p: &str) -> &str {
    split(p).0
}

pub fn pod_of(p: &str) -> &str {
    split(p).1
}

pub fn all_pods() -> Vec<String> {
    NAMESPACES
        .iter()
        .flat_map(|n| PODS.iter().map(move |p| format!("{n}/{p}")))
        .collect()
}

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
    }
}

pub struct PolicyLab {
    pub lab: LabGuard,
    pub rt: PodRuntime,
    pub pods: BTreeMap<String, PodRecord>,
    pub placement: Placement,
    kubectl_cache: tempfile::TempDir,
    tokio: tokio::runtime::Runtime,
    client: kube::Client,
    _dir: tempfile::TempDir,
}

impl PolicyLab {
    /// A lab of `nodes` nodes with agents (extra agent flags: `agent_args`)
    /// and the nine pods.
    pub fn up(placement: Placement, nodes: usize, agent_args: &[&str]) -> PolicyLab {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut opts = UpOptions::new(dir.path());
        opts.nodes = nodes;
        opts.agent_args = agent_args.iter().map(|s| s.to_string()).collect();
        let lab = LabGuard::up(&opts).expect("lab up");
        let rt = PodRuntime::new(&lab).expect("pod runtime");
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio");
        let client = tokio
            .block_on(margay_lab::nodes::client(
                &lab.kubeconfig().expect("kubeconfig"),
            ))
            .expect("client");
        let mut me = PolicyLab {
            lab,
            rt,
            pods: BTreeMap::new(),
            placement,
            kubectl_cache: tempfile::tempdir().expect("tempdir"),
            tokio,
            client,
            _dir: dir,
        };
        for n in NAMESPACES {
            me.rt
                .create_namespace(n, &[("ns".to_string(), n.to_string())].into())
                .expect("namespace");
        }
        let node_names = me.lab.node_names();
        let specs: Vec<PodSpec> = all_pods()
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (n, name) = split(p);
                let node = match placement {
                    Placement::Spread => &node_names[i % node_names.len()],
                    Placement::SameNode => &node_names[0],
                };
                let mut s = PodSpec::new(n, name, node).label("pod", name);
                for port in PORTS {
                    for proto in PROTOCOLS {
                        s = s.named_port(&format!("serve-{port}-{proto}"), proto, port);
                    }
                }
                s
            })
            .collect();
        // Created concurrently: the runtime is shareable across threads.
        let records: Vec<PodRecord> = std::thread::scope(|s| {
            let hs: Vec<_> = specs
                .iter()
                .map(|spec| s.spawn(|| me.rt.create_pod(spec)))
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("thread").expect("pod create"))
                .collect()
        });
        for r in records {
            me.pods.insert(r.key(), r);
        }
        me.route_between_nodes();
        me
    }

    /// Waits until every node routes every remote pod via the node that
    /// holds it: the agents' BGP-learned block routes (protocol 88), so
    /// cross-node pairs go through the real path.
    fn route_between_nodes(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        for node in self.lab.node_names() {
            let ns = self.lab.netns(&node).expect("node netns");
            for p in self.pods.values().filter(|p| p.node != node) {
                let ip = p.primary_ip().expect("pod ip");
                let via = self.lab.node(&p.node).expect("node").ipv4;
                loop {
                    let routes = ns
                        .ip(&["route", "show", "proto", "88", "match", &ip.to_string()])
                        .unwrap_or_default();
                    if routes.lines().any(|l| l.contains(&format!("via {via} "))) {
                        break;
                    }
                    assert!(
                        std::time::Instant::now() < deadline,
                        "{node} has no BGP route to {ip} via {via}: {routes:?}"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        }
    }

    pub fn ip(&self, pod: &str) -> IpAddr {
        self.pods[pod].primary_ip().expect("pod ip")
    }

    pub fn node_of(&self, pod: &str) -> &str {
        &self.pods[pod].node
    }

    /// Runs kubectl against the lab's API server; panics with its output
    /// when it fails.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let kubeconfig: PathBuf = self.lab.kubeconfig().expect("kubeconfig");
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(self.kubectl_cache.path())
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl");
        if let Some(input) = stdin {
            let mut si = child.stdin.take().expect("stdin");
            si.write_all(input.as_bytes()).expect("write stdin");
        }
        let out = child.wait_with_output().expect("kubectl output");
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            stdin.unwrap_or("")
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f -`.
    pub fn apply(&self, yaml: &str) {
        self.kubectl(&["apply", "-f", "-"], Some(yaml));
    }

    /// Deletes every NetworkPolicy and GlobalNetworkPolicy.
    pub fn delete_all_policies(&self) {
        self.kubectl(
            &[
                "delete",
                "networkpolicies,globalnetworkpolicies",
                "--all",
                "--all-namespaces",
            ],
            None,
        );
    }

    /// What policy depends on, as the API has it now.
    pub fn snapshot(&self) -> ClusterSnapshot {
        let c = self.client.clone();
        self.tokio.block_on(async move {
            let lp = ListParams::default();
            ClusterSnapshot {
                namespaces: Api::<Namespace>::all(c.clone())
                    .list(&lp)
                    .await
                    .expect("namespaces")
                    .items,
                pods: Api::<Pod>::all(c.clone())
                    .list(&lp)
                    .await
                    .expect("pods")
                    .items,
                network_policies: Api::<NetworkPolicy>::all(c.clone())
                    .list(&lp)
                    .await
                    .expect("network policies")
                    .items,
                global_policies: Api::<GlobalNetworkPolicy>::all(c)
                    .list(&lp)
                    .await
                    .expect("global policies")
                    .items,
            }
        })
    }

    /// The agent metrics of a node.
    pub fn metrics(&self, node: &str) -> String {
        self.lab
            .netns(node)
            .expect("netns")
            .run(
                "curl",
                &["-sf", "--max-time", "5", "http://127.0.0.1:9091/metrics"],
            )
            .expect("metrics")
    }

    /// Polls a node's metrics until `cond` holds (panics after the
    /// enforcement deadline).
    pub fn wait_metrics(&self, node: &str, what: &str, cond: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + ENFORCE_DEADLINE;
        loop {
            let m = self.metrics(node);
            if cond(&m) {
                return;
            }
            assert!(Instant::now() < deadline, "{node}: {what}:\n{m}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every pair on every port and protocol: the expectation, the
    /// explainer and the probes must agree (see the module docs).
    pub fn check(&self, step: &str, expect: impl Fn(&str, &str, Protocol, u16) -> bool) {
        self.check_explain(step, &expect);
        self.check_probes(step, expect);
    }

    /// The explainer over an API snapshot against the expectation.
    pub fn check_explain(&self, step: &str, expect: &impl Fn(&str, &str, Protocol, u16) -> bool) {
        let explainer = ClusterExplainer::new(&self.snapshot());
        let pods = all_pods();
        let mut wrong = Vec::new();
        let mut allowed = 0;
        for from in &pods {
            for to in &pods {
                if from == to {
                    continue;
                }
                for proto in PROTOCOLS {
                    for port in PORTS {
                        let (fk, tk) = (split(from), split(to));
                        let e = explainer
                            .explain(
                                &PodKey::new(fk.0, fk.1),
                                &PodKey::new(tk.0, tk.1),
                                proto_number(proto),
                                u32::from(port),
                                IpFamily::V4,
                            )
                            .unwrap_or_else(|err| panic!("{step}: explain {from} -> {to}: {err}"));
                        let want = expect(from, to, proto, port);
                        allowed += usize::from(want);
                        if e.allowed() != want {
                            wrong.push(format!("want {}: {e}", verdict(want)));
                        }
                    }
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "{step}: the explainer disagrees with the expectation on {} probes:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
        eprintln!("{step}: explainer agrees ({allowed}/288 allowed)");
    }

    /// Probes every pair until they match the expectation (agents enforce
    /// asynchronously) or the deadline passes.
    pub fn check_probes(&self, step: &str, expect: impl Fn(&str, &str, Protocol, u16) -> bool) {
        let opts = MatrixOptions {
            ports: PORTS.to_vec(),
            protocols: PROTOCOLS.to_vec(),
            timeout: PROBE_TIMEOUT,
            ..Default::default()
        };
        let deadline = Instant::now() + ENFORCE_DEADLINE;
        let mut rounds = 0;
        loop {
            rounds += 1;
            let m = self.rt.matrix(&opts).expect("matrix");
            let mut diffs = Vec::new();
            for r in &m.results {
                if let Some(e) = &r.error {
                    diffs.push(format!("{} -> {}: probe error {e}", r.from, r.to));
                    continue;
                }
                let want = r.from == r.to || expect(&r.from, &r.to, r.protocol, r.port);
                if r.connected != want {
                    diffs.push(format!(
                        "{} ({}) -> {} ({}) {}/{}: probe {}, want {}",
                        r.from,
                        self.node_of(&r.from),
                        r.to,
                        self.node_of(&r.to),
                        r.protocol,
                        r.port,
                        verdict(r.connected),
                        verdict(want)
                    ));
                }
            }
            if diffs.is_empty() {
                eprintln!("{step}: probes agree (rounds: {rounds})");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{step}: probes still differ after {ENFORCE_DEADLINE:?} ({} pairs):\n{}\n{}",
                diffs.len(),
                diffs.join("\n"),
                m.render_table()
            );
        }
    }
}

fn verdict(b: bool) -> &'static str {
    if b { "allow" } else { "deny" }
}
