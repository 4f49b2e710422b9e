//! `policy-latency`: how long a policy change takes to be enforced in the
//! kernel of every node, in a 3-node lab with real agents, 500 pods and 200
//! NetworkPolicies:
//!
//! - `kubectl apply` of a new NetworkPolicy → its chain committed in the
//!   `inet margay` table of all three nodes;
//! - `kubectl label pod` (a label that makes the pod a peer of a policy, or
//!   stops it being one) → the pod's address added to (removed from) the
//!   peer set in all three kernels.
//!
//! "Enforced" is observed from the kernel's side: each node's nf_tables
//! change notifications (`nftmon`), which the kernel sends only when a
//! transaction commits; a change is enforced when the last node has it.
//! Each change is made twice: through the API client, the clock starting as
//! the request is sent (the API write included, kubectl's start-up not),
//! and with kubectl, the clock starting as kubectl is spawned (reported
//! against kubectl alone, start → exit). The API write alone and the
//! agents' own programming-latency histograms (watch event → kernel) are
//! reported too, to show where the time goes.
//!
//! Comparator: the kernel's own cost of the same change, programmed the way
//! the agent programs it (same compiler, same `NftDataplane`) in a scratch
//! namespace holding the same table as node1, with no watch, no batching and
//! no other node: what the end-to-end time is made of at the bottom.
//!
//! The pods: `REAL_PODS` (all 500 by default; `MARGAY_BENCH_REAL_PODS`
//! lowers it) real ones spread over the nodes (network namespace, CNI ADD
//! through the agent, a server: local endpoints whose programs a policy
//! change recomputes), any rest Pod objects with addresses in
//! `status.podIPs` (all an agent sees of a pod on another node); the
//! policies select pods by `app` label in 5 namespaces, with pod-and-namespace
//! peers and named ports.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use margay_api::GlobalNetworkPolicy;
use margay_api::endpoint::host_interface_name;
use margay_lab::netns::NetnsGuard;
use margay_lab::pods::PodRuntime;
use margay_lab::pods::spec::{PodSpec, Protocol};
use margay_lab::{LabGuard, Topology, UpOptions};
use margay_policy::nft::{Nft, NftDataplane, Renderer};
use margay_policy::translate::chain_id;
use margay_policy::{ClusterSnapshot, Compiler, Direction, LocalEndpoint, PodKey, PolicyRef};
use serde_json::json;

use crate::figure::{Better, Figure, Goal, Measure};
use crate::nftmon::{self, Change};
use crate::{Benchmark, Context};

const NODES: usize = 3;
const NAMESPACES: usize = 5;
const APPS: usize = 50;
/// Pods created for real (network namespace, CNI ADD through the agent, a
/// server process): local endpoints whose programs every policy change
/// recomputes. The rest of the 500 are Pod objects with addresses, which is
/// all an agent sees of pods on other nodes.
const REAL_PODS: usize = 500;
/// Overrides [`REAL_PODS`] (where creating them all would take too long).
const REAL_PODS_ENV: &str = "MARGAY_BENCH_REAL_PODS";
/// How long one change may take before the run fails.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(20);

pub fn benchmark() -> Benchmark {
    Benchmark {
        name: "policy-latency",
        about: "policy apply and pod label change → enforced in every node's kernel (3 nodes, 500 pods, 200 policies), against the kernel's own cost of the same change",
        run,
    }
}

fn ns(i: usize) -> String {
    format!("bench-{}", i % NAMESPACES)
}

fn node(i: usize) -> String {
    format!("node{}", i % NODES + 1)
}

/// Addresses of the Pod objects: outside every pool, so they never collide
/// with the real pods'.
fn fake_ip(k: usize) -> String {
    format!("10.245.{}.{}", k / 250, k % 250 + 1)
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Bench {
    lab: LabGuard,
    tokio: tokio::runtime::Runtime,
    client: kube::Client,
    kubeconfig: PathBuf,
    kubectl_cache: tempfile::TempDir,
}

impl Bench {
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<()> {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.kubectl_cache.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("running kubectl")?;
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .context("kubectl stdin")?
                .write_all(input.as_bytes())?;
        }
        drop(child.stdin.take());
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    async fn snapshot(&self) -> anyhow::Result<ClusterSnapshot> {
        let c = &self.client;
        let lp = ListParams::default();
        Ok(ClusterSnapshot {
            namespaces: Api::<Namespace>::all(c.clone()).list(&lp).await?.items,
            pods: Api::<Pod>::all(c.clone()).list(&lp).await?.items,
            network_policies: Api::<NetworkPolicy>::all(c.clone()).list(&lp).await?.items,
            global_policies: Api::<GlobalNetworkPolicy>::all(c.clone())
                .list(&lp)
                .await?
                .items,
        })
    }

    fn metrics_text(&self, node: &str) -> anyhow::Result<String> {
        Ok(self.lab.netns(node)?.run(
            "curl",
            &["-sf", "--max-time", "5", "http://127.0.0.1:9091/metrics"],
        )?)
    }

    /// The agents' own programming-latency histograms (watch event seen →
    /// kernel), by trigger, summed over the nodes.
    fn agent_histograms(&self) -> anyhow::Result<Totals> {
        let mut all = Totals::new();
        for n in self.lab.node_names() {
            for (trigger, (sum, count)) in parse_histograms(
                &self.metrics_text(&n)?,
                "margay_policy_programming_latency_seconds",
            ) {
                let e = all.entry(trigger).or_default();
                e.0 += sum;
                e.1 += count;
            }
        }
        Ok(all)
    }

    /// A metric's value on a node (0 when absent).
    fn metric(&self, node: &str, name: &str) -> anyhow::Result<f64> {
        let text = self.metrics_text(node)?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0))
    }
}

/// A histogram's sum (seconds) and count, per trigger label.
type Totals = BTreeMap<String, (f64, f64)>;

/// `NAME_sum{trigger="T"} S` and `NAME_count{trigger="T"} C` lines.
fn parse_histograms(text: &str, name: &str) -> Totals {
    let mut out = Totals::new();
    for line in text.lines() {
        for (suffix, sum) in [("_sum{trigger=\"", true), ("_count{trigger=\"", false)] {
            let Some(rest) = line.strip_prefix(&format!("{name}{suffix}")) else {
                continue;
            };
            let Some((trigger, value)) = rest.split_once("\"} ") else {
                continue;
            };
            let Ok(v) = value.trim().parse::<f64>() else {
                continue;
            };
            let e = out.entry(trigger.to_string()).or_default();
            if sum {
                e.0 = v;
            } else {
                e.1 = v;
            }
        }
    }
    out
}

/// Mean (ms) and count of the observations made between `before` and
/// `after` of one trigger.
fn mean_between(before: &Totals, after: &Totals, trigger: &str) -> Option<(f64, f64)> {
    let (s1, c1) = after.get(trigger).copied()?;
    let (s0, c0) = before.get(trigger).copied().unwrap_or_default();
    let n = c1 - c0;
    (n > 0.0).then(|| ((s1 - s0) / n * 1e3, n))
}

async fn create_objects(client: &kube::Client, pods: usize, policies: usize) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..pods)
        .map(|k| {
            let client = client.clone();
            async move {
                let api: Api<Pod> = Api::namespaced(client, &ns(k));
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("p-{k}"), "namespace": ns(k),
                                 "labels": {"app": format!("a{}", k % APPS)}},
                    "spec": {"nodeName": node(k), "containers": [{"name": "c", "image": "none",
                             "ports": [{"name": "http", "containerPort": 8080}]}]}
                }))?;
                api.create(&PostParams::default(), &pod).await?;
                let ip = fake_ip(k);
                let status =
                    json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}});
                api.patch_status(
                    &format!("p-{k}"),
                    &PatchParams::default(),
                    &Patch::Merge(&status),
                )
                .await?;
                Ok(())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<()>>()?;
    let mut all: Vec<NetworkPolicy> = (0..policies)
        .map(|i| {
            serde_json::from_value(json!({
                "metadata": {"name": format!("np-{i}"), "namespace": ns(i)},
                "spec": {
                    "podSelector": {"matchLabels": {"app": format!("a{}", i % APPS)}},
                    "ingress": [{
                        "from": [{"podSelector": {"matchLabels": {"app": format!("a{}", (i + 1) % APPS)}},
                                  "namespaceSelector": {"matchLabels": {"team": format!("t{}", (i + 2) % NAMESPACES)}}}],
                        "ports": [{"port": "http"}, {"port": 9000 + (i % 10)}]
                    }]
                }
            }))
            .map_err(anyhow::Error::from)
        })
        .collect::<anyhow::Result<_>>()?;
    // The peer of the label-change measurement.
    all.push(serde_json::from_value(json!({
        "metadata": {"name": "from-probes", "namespace": ns(1)},
        "spec": {"podSelector": {},
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "probe"}},
                                        "namespaceSelector": {}}]}]}
    }))?);
    for np in all {
        let namespace = np.metadata.namespace.clone().unwrap_or_default();
        Api::<NetworkPolicy>::namespaced(client.clone(), &namespace)
            .create(&PostParams::default(), &np)
            .await?;
    }
    Ok(())
}

fn run(ctx: &Context) -> anyhow::Result<Vec<Figure>> {
    let (n_pods, n_real, n_policies, rounds) = if ctx.quick {
        (60, 6, 20, 10)
    } else {
        let real = match std::env::var(REAL_PODS_ENV) {
            Ok(v) => v
                .parse()
                .with_context(|| format!("{REAL_PODS_ENV}={v:?}: not a number"))?,
            Err(_) => REAL_PODS,
        };
        (500, real, 200, 100)
    };
    if n_real == 0 || n_real > n_pods {
        bail!("{REAL_PODS_ENV}: between 1 and {n_pods} real pods");
    }
    let t_setup = Instant::now();
    let lab = LabGuard::up(&UpOptions {
        nodes: NODES,
        topology: Topology::L2,
        state_dir: ctx.work_dir.join("policy-lab"),
        bare: false,
        agents: true,
        ipv6_pool: false,
        agent_args: Vec::new(),
    })?;
    let kubeconfig = lab.kubeconfig().context("the lab has no API server")?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client = tokio.block_on(margay_lab::nodes::client(&kubeconfig))?;
    let b = Bench {
        lab,
        tokio,
        client,
        kubeconfig,
        kubectl_cache: tempfile::tempdir()?,
    };
    let rt = PodRuntime::new(&b.lab)?;
    for i in 0..NAMESPACES {
        rt.create_namespace(&ns(i), &[("team".to_string(), format!("t{i}"))].into())?;
    }
    let t_real = Instant::now();
    let mut real = Vec::new();
    for j in 0..n_real {
        let spec = PodSpec::new(&ns(j), &format!("real-{j}"), &node(j))
            .label("app", &format!("a{}", j % APPS))
            .named_port("http", Protocol::Tcp, 80);
        real.push(rt.create_pod(&spec)?);
    }
    eprintln!(
        "policy-latency: {n_real} real pods (netns + CNI ADD + server) in {:.1} s; {} API-only Pod objects, {n_policies} policies ...",
        t_real.elapsed().as_secs_f64(),
        n_pods - n_real
    );
    let t_objects = Instant::now();
    b.tokio
        .block_on(create_objects(&b.client, n_pods - n_real, n_policies))?;
    eprintln!(
        "policy-latency: API objects created in {:.1} s",
        t_objects.elapsed().as_secs_f64()
    );

    // Every agent has compiled and programmed everything.
    let snapshot = b.tokio.block_on(b.snapshot())?;
    let mut full = Compiler::new();
    load(&mut full, &snapshot, &[])?;
    let (want_rules, want_elements) = (
        full.ir().rule_count() as f64,
        full.ir().element_count() as f64,
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    for n in b.lab.node_names() {
        loop {
            let rules = b.metric(&n, "margay_policy_rules")?;
            let elements = b.metric(&n, "margay_nft_set_elements")?;
            if rules == want_rules && elements == want_elements {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{n} has {rules} rules / {elements} elements, not {want_rules} / {want_elements}"
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    eprintln!(
        "policy-latency: every node programmed ({want_rules} rules, {want_elements} set elements); setup took {:.1} s",
        t_setup.elapsed().as_secs_f64()
    );

    // Kernel-side observers on every node.
    let (ktx, krx) = mpsc::channel();
    let mut monitors = Vec::new();
    for (i, n) in b.lab.node_names().iter().enumerate() {
        let path = PathBuf::from("/run/netns").join(b.lab.netns(n)?.name());
        monitors.push(nftmon::spawn(&path, i, ktx.clone())?);
    }
    let nodes = b.lab.node_names().len();
    // When `kernel` was first seen committed on each node; the latest of
    // those is when the change is enforced everywhere.
    let enforced = |what: &str, kernel: &dyn Fn(&Change) -> bool| -> anyhow::Result<Instant> {
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        let mut t_nodes: BTreeMap<usize, Instant> = BTreeMap::new();
        while t_nodes.len() < nodes {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "{what}: not enforced within {CHANGE_TIMEOUT:?} (seen on nodes {:?})",
                    t_nodes.keys().collect::<Vec<_>>()
                );
            }
            if let Ok((tag, t, c)) = krx.recv_timeout(left)
                && kernel(&c)
            {
                t_nodes.entry(tag).or_insert(t);
            }
        }
        t_nodes.into_values().max().context("no nodes")
    };
    // Notifications of earlier changes are not this change's.
    let drain = || while krx.try_recv().is_ok() {};

    // 1. A new NetworkPolicy, written once through the API client (the
    // clock starts as the request is sent, so the API write is included)
    // and once with `kubectl apply` (the clock starts as kubectl is
    // spawned), each deleted again before the next.
    let probe_policy = |r: usize| -> serde_json::Value {
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": format!("probe-{r}"), "namespace": ns(r)},
            "spec": {"podSelector": {"matchLabels": {"app": format!("a{}", r % APPS)}},
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": format!("a{}", (r + 3) % APPS)}}}],
                                  "ports": [{"port": "http"}]}]}
        })
    };
    let hist_start = b.agent_histograms()?;
    // How long the API request itself takes (request → response).
    let mut api_writes = Vec::new();
    let mut policy_api = Vec::new();
    let mut policy_kubectl = Vec::new();
    let mut kubectl_alone = Vec::new();
    for r in 0..rounds {
        let name = format!("probe-{r}");
        let chain = chain_id(
            &PolicyRef::Kubernetes {
                namespace: ns(r),
                name: name.clone(),
            },
            Direction::Ingress,
        )
        .0;
        let api = Api::<NetworkPolicy>::namespaced(b.client.clone(), &ns(r));
        let added = |c: &Change| matches!(c, Change::Chain { name: n, added: true } if *n == chain);
        let removed =
            |c: &Change| matches!(c, Change::Chain { name: n, added: false } if *n == chain);
        let np: NetworkPolicy = serde_json::from_value(probe_policy(r))?;

        drain();
        let t0 = Instant::now();
        b.tokio.block_on(api.create(&PostParams::default(), &np))?;
        api_writes.push(ms(t0.elapsed()));
        let t = enforced(&format!("policy {name} (API)"), &added)?;
        policy_api.push(ms(t.saturating_duration_since(t0)));
        b.tokio
            .block_on(api.delete(&name, &DeleteParams::default()))?;
        enforced(&format!("deletion of {name}"), &removed)?;

        drain();
        let t0 = Instant::now();
        b.kubectl(&["apply", "-f", "-"], Some(&probe_policy(r).to_string()))?;
        let t_exit = Instant::now();
        let t = enforced(&format!("policy {name} (kubectl)"), &added)?;
        policy_kubectl.push(ms(t.saturating_duration_since(t0)));
        kubectl_alone.push(ms(t_exit.saturating_duration_since(t0)));
        b.tokio
            .block_on(api.delete(&name, &DeleteParams::default()))?;
        enforced(&format!("deletion of {name}"), &removed)?;
    }

    // 2. A pod label change: pod real-0 becomes a peer of `from-probes`
    // (`role=probe`), then stops being one; through the API client and
    // with `kubectl label`, alternately adding and removing.
    let probe = real.first().context("no real pod")?;
    let (probe_ns, probe_pod) = (probe.namespace.clone(), probe.name.as_str());
    let probe_ip: IpAddr = probe.primary_ip().context("real-0 has no address")?;
    let pods = Api::<Pod>::namespaced(b.client.clone(), &probe_ns);
    let hist_policies = b.agent_histograms()?;
    let mut label_api = Vec::new();
    let mut label_kubectl = Vec::new();
    let mut label_kubectl_alone = Vec::new();
    for r in 0..2 * rounds {
        let add = r % 2 == 0;
        let what = format!("label change {r}");
        drain();
        let t0 = Instant::now();
        if r % 4 < 2 {
            let patch =
                json!({"metadata": {"labels": {"role": if add { Some("probe") } else { None }}}});
            b.tokio.block_on(pods.patch(
                probe_pod,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            ))?;
            api_writes.push(ms(t0.elapsed()));
            let t = enforced(&what, &|c| c.touches_ip(probe_ip, add))?;
            label_api.push(ms(t.saturating_duration_since(t0)));
        } else {
            let label = if add { "role=probe" } else { "role-" };
            b.kubectl(
                &[
                    "label",
                    "pod",
                    "-n",
                    &probe_ns,
                    probe_pod,
                    label,
                    "--overwrite",
                ],
                None,
            )?;
            let t_exit = Instant::now();
            let t = enforced(&what, &|c| c.touches_ip(probe_ip, add))?;
            label_kubectl.push(ms(t.saturating_duration_since(t0)));
            label_kubectl_alone.push(ms(t_exit.saturating_duration_since(t0)));
        }
    }
    drop(monitors);
    let hist_labels = b.agent_histograms()?;
    // The agents' share: from their watch event to the kernel, as their
    // own histogram has it (every change of the kind, deletions included).
    let agent_policy = mean_between(&hist_start, &hist_policies, "networkpolicy");
    let agent_label = mean_between(&hist_policies, &hist_labels, "pod");
    eprintln!(
        "policy-latency: agents' own histograms, mean (ms, observations over the nodes): NetworkPolicy {agent_policy:?}, pod {agent_label:?}"
    );

    // The comparator: the same changes, programmed by the same code into the
    // same table (node1's), without the agent around it.
    let snapshot = b.tokio.block_on(b.snapshot())?;
    let node1_pods: Vec<PodKey> = real
        .iter()
        .filter(|p| p.node == "node1")
        .map(|p| PodKey::new(&p.namespace, &p.name))
        .collect();
    let mut c = Compiler::new();
    load(&mut c, &snapshot, &node1_pods)?;
    let scratch = NetnsGuard::create_unique("mgy-bench-raw")?;
    let mut dp = NftDataplane::new(
        Nft::open_in_netns(&PathBuf::from("/run/netns").join(scratch.name()))?,
        Renderer::default(),
    );
    dp.apply_full(c.ir())?;
    let mut raw_policy = Vec::new();
    for r in 0..rounds {
        let np: NetworkPolicy = serde_json::from_value(probe_policy(r))?;
        let t = Instant::now();
        let d = c.upsert_network_policy(&np)?;
        dp.apply_delta(c.ir(), &d)?;
        raw_policy.push(ms(t.elapsed()));
        let d = c.remove_policy(&PolicyRef::Kubernetes {
            namespace: ns(r),
            name: format!("probe-{r}"),
        });
        dp.apply_delta(c.ir(), &d)?;
    }
    let mut raw_label = Vec::new();
    let key = PodKey::new(&probe_ns, probe_pod);
    for r in 0..rounds {
        let mut p = c.pod(&key).cloned().context("the probe pod")?;
        if r % 2 == 0 {
            p.labels.insert("role".into(), "probe".into());
        } else {
            p.labels.remove("role");
        }
        let t = Instant::now();
        let d = c.upsert_pod(p);
        dp.apply_delta(c.ir(), &d)?;
        raw_label.push(ms(t.elapsed()));
    }
    if dp.stats().fallbacks > 0 {
        bail!("the comparator's deltas fell back to reconciles: not comparable");
    }

    let api_note = "API request → enforced on all 3 nodes";
    let raw_note = "the same change: compile + kernel transaction alone";
    let kubectl_note = "kubectl start → enforced on all 3 nodes";
    let alone_note = "kubectl alone (start → exit)";
    let fig = |metric: &str, subject: (&str, &[f64], f64), comparator: (&str, &[f64], f64)| {
        Figure::new(
            metric,
            Measure::new(subject.0, percentile(subject.1, subject.2), "ms"),
            Measure::new(comparator.0, percentile(comparator.1, comparator.2), "ms"),
            Better::Lower,
        )
    };
    let mut figures = vec![
        fig(
            &format!(
                "new NetworkPolicy → enforced, p99 ({} changes)",
                policy_api.len()
            ),
            (api_note, &policy_api, 99.0),
            (raw_note, &raw_policy, 99.0),
        )
        .with_goal(Goal::Absolute(150.0)),
        fig(
            "new NetworkPolicy → enforced, p50",
            (api_note, &policy_api, 50.0),
            (raw_note, &raw_policy, 50.0),
        ),
        fig(
            &format!(
                "`kubectl apply` of a NetworkPolicy → enforced, p99 ({} changes)",
                policy_kubectl.len()
            ),
            (kubectl_note, &policy_kubectl, 99.0),
            (alone_note, &kubectl_alone, 99.0),
        )
        .with_goal(Goal::Absolute(150.0)),
        fig(
            &format!(
                "pod label change → enforced, p99 ({} changes)",
                label_api.len()
            ),
            (api_note, &label_api, 99.0),
            (raw_note, &raw_label, 99.0),
        )
        .with_goal(Goal::Absolute(150.0)),
        fig(
            "pod label change → enforced, p50",
            (api_note, &label_api, 50.0),
            (raw_note, &raw_label, 50.0),
        ),
        fig(
            &format!(
                "`kubectl label pod` → enforced, p99 ({} changes)",
                label_kubectl.len()
            ),
            (kubectl_note, &label_kubectl, 99.0),
            (alone_note, &label_kubectl_alone, 99.0),
        )
        .with_goal(Goal::Absolute(150.0)),
    ];
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let all_api: Vec<f64> = policy_api.iter().chain(&label_api).copied().collect();
    figures.push(Figure::new(
        format!("the API write alone, mean ({} writes)", api_writes.len()),
        Measure::new("API request → response", mean(&api_writes), "ms"),
        Measure::new(api_note, mean(&all_api), "ms"),
        Better::Lower,
    ));
    for (what, agent, end_to_end) in [
        ("NetworkPolicy changes", agent_policy, &policy_api),
        ("pod label changes", agent_label, &label_api),
    ] {
        if let Some((agent_ms, n)) = agent {
            figures.push(Figure::new(
                format!("{what}: the agents' share, mean ({n} observations)"),
                Measure::new("agents: watch event → kernel", agent_ms, "ms"),
                Measure::new(api_note, mean(end_to_end), "ms"),
                Better::Lower,
            ));
        }
    }
    Ok(figures)
}

/// Loads a snapshot into a compiler, with `local` pods as local endpoints
/// (named as the CNI plugin names their interfaces).
fn load(c: &mut Compiler, s: &ClusterSnapshot, local: &[PodKey]) -> anyhow::Result<()> {
    for n in &s.namespaces {
        if let Some(n) = margay_policy::Namespace::from_k8s(n) {
            c.upsert_namespace(n);
        }
    }
    for p in &s.pods {
        if let Some(p) = margay_policy::Pod::from_k8s(p) {
            c.upsert_pod(p);
        }
    }
    for k in local {
        c.upsert_local_endpoint(LocalEndpoint {
            pod: k.clone(),
            interface: host_interface_name(&k.namespace, &k.name),
        });
    }
    for np in &s.network_policies {
        c.upsert_network_policy(np)?;
    }
    for g in &s.global_policies {
        c.upsert_global_policy(g)?;
    }
    Ok(())
}
