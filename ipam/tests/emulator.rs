//! IPAM on the Kubernetes API (the lab's API emulator), through `KubeStore`:
//! the concurrent stress run (10 nodes, 10 000 operations, injected 409s, API
//! latency, allocations killed mid-flight, nodes deleted, then GC), claims
//! interrupted between their writes, an unreachable API server, and the
//! generated CRDs as `kubectl` sees them.

mod common;
#[path = "common/stress.rs"]
mod stress;

use k8s_openapi::api::core::v1::{Container, Namespace, Node, Pod, PodSpec};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use margay_api::{IPPool, IPPoolSpec};
use margay_ipam::store::instrumented::InstrumentedStore;
use margay_ipam::store::kube::KubeStore;
use margay_ipam::{
    AllocateRequest, Allocator, IpamError, IpamStore, ManualClock, StoreError, audit,
};
use margay_lab::apiserver::TestApiServer;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use stress::{PodRegistry, StressConfig, assert_stress_ok, node_name, run_stress};

async fn api_server() -> TestApiServer {
    let server = match TestApiServer::start().await {
        Ok(s) => s,
        Err(e) => panic!("starting the API emulator: {e}"),
    };
    let crds: Api<CustomResourceDefinition> = Api::all(server.client());
    for crd in margay_api::crds::all_crds() {
        if let Err(e) = crds.create(&PostParams::default(), &crd).await {
            panic!("installing CRD {:?}: {e}", crd.metadata.name);
        }
    }
    server
}

async fn create_node(client: &kube::Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut node = Node::default();
    node.metadata.name = Some(name.to_string());
    node.metadata.labels = Some(BTreeMap::from([(
        "kubernetes.io/hostname".to_string(),
        name.to_string(),
    )]));
    if let Err(e) = nodes.create(&PostParams::default(), &node).await {
        panic!("creating Node {name}: {e}");
    }
}

async fn create_pool(store: &KubeStore, name: &str, cidr: &str, block_size: u8) {
    let mut spec = IPPoolSpec::new(cidr);
    spec.block_size = Some(block_size);
    if let Err(e) = store.create(&IPPool::new(name, spec)).await {
        panic!("creating IPPool {name}: {e}");
    }
}

/// Pods as Pod objects on the API server, where the GC looks for them.
struct KubePods(kube::Client);

impl PodRegistry for KubePods {
    async fn started(&self, ns: &str, name: &str, node: &str, _ips: &[IpAddr]) {
        let pods: Api<Pod> = Api::namespaced(self.0.clone(), ns);
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.to_string());
        pod.metadata.namespace = Some(ns.to_string());
        pod.spec = Some(PodSpec {
            node_name: Some(node.to_string()),
            containers: vec![Container {
                name: "app".into(),
                image: Some("registry.invalid/app".into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        if let Err(e) = pods.create(&PostParams::default(), &pod).await {
            panic!("creating Pod {ns}/{name}: {e}");
        }
    }

    async fn deleted(&self, ns: &str, name: &str) {
        let pods: Api<Pod> = Api::namespaced(self.0.clone(), ns);
        match pods.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => panic!("deleting Pod {ns}/{name}: {e}"),
        }
    }

    async fn delete_node(&self, node: &str) {
        let nodes: Api<Node> = Api::all(self.0.clone());
        if let Err(e) = nodes.delete(node, &DeleteParams::default()).await {
            panic!("deleting Node {node}: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_ten_thousand_operations_through_the_api() {
    let server = api_server().await;
    let client = server.client();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some("stress".into());
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");

    let cfg = StressConfig {
        nodes: 10,
        ops: 10_000,
        max_live_per_node: 16,
        kill_every: 89,
        delete_nodes: 2,
        seed: 0xa11c,
    };
    for i in 0..cfg.nodes {
        create_node(&client, &node_name(i)).await;
    }
    let kube_store = KubeStore::new(client.clone());
    // 128 addresses in 8 blocks for 10 nodes: claims race, nodes borrow, the
    // pool runs out now and then.
    create_pool(&kube_store, "stress", "10.9.0.0/25", 28).await;
    let store = Arc::new(InstrumentedStore::new(kube_store));
    store.inject_conflicts(0.05, 7);
    server.set_latency(Duration::from_millis(1));
    let clock = Arc::new(ManualClock::new(common::T0));
    let r = run_stress(
        store.clone(),
        clock,
        Arc::new(KubePods(client.clone())),
        cfg.clone(),
    )
    .await;
    let counts = store.counts();
    println!("{r:?}\n{counts:?}");
    assert!(counts.injected_conflicts > 50, "{counts:?}");
    assert!(
        counts.lost_races > 0,
        "no real 409s between nodes: {counts:?}"
    );
    assert_stress_ok(&r, &cfg);
}

/// A node dying between any two writes of a block claim, on the real API
/// path: after a restart the same request completes, and nothing dangles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_interrupted_between_writes_recover() {
    let server = api_server().await;
    let client = server.client();
    let kube_store = KubeStore::new(client.clone());
    create_pool(&kube_store, "p", "10.6.0.0/24", 26).await;
    let clock = Arc::new(ManualClock::new(common::T0));
    for crash_after in 0..3u64 {
        // A fresh node each time, so the allocation needs a claim.
        let node = format!("n{crash_after}");
        create_node(&client, &node).await;
        let req = AllocateRequest::pod_v4("cid", &node, "default", "cid");
        let dying = Arc::new(InstrumentedStore::new(kube_store.clone()));
        dying.crash_after_writes(crash_after);
        let err = Allocator::new(dying.clone(), clock.clone())
            .allocate(&req)
            .await
            .expect_err("crashed");
        assert!(dying.has_crashed(), "crash_after={crash_after}: {err}");
        let a = Allocator::new(kube_store.clone(), clock.clone());
        let got = a
            .allocate(&req)
            .await
            .expect("after restart")
            .ipv4
            .expect("v4");
        assert_eq!(
            a.affine_blocks(&node).await.expect("blocks"),
            vec![got.block]
        );
        common::assert_sound(&audit(&kube_store).await.expect("audit"));
    }
}

/// While the API server resets every connection (crashed or unreachable),
/// allocation fails with `Unavailable` and changes nothing; afterwards it
/// works. Two clients: one without kube's default retries, and the default
/// one (which retries some failures with backoff for minutes) bounded by
/// `with_call_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_api_server_fails_cleanly() {
    let server = api_server().await;
    let client = server.client();
    create_node(&client, "n1").await;
    let kube_store = KubeStore::new(client.clone());
    create_pool(&kube_store, "p", "10.7.0.0/24", 26).await;
    let mut config = kube::Config::new(server.url().parse().expect("server URL"));
    config.default_retry = false;
    let no_retry = kube::Client::try_from(config).expect("client");
    let clock = Arc::new(ManualClock::new(common::T0));
    let stores = [
        KubeStore::new(no_retry),
        KubeStore::new(client.clone()).with_call_timeout(Duration::from_millis(300)),
    ];
    let req = AllocateRequest::pod_v4("cid", "n1", "default", "cid");
    server.set_refusing(true);
    for store in &stores {
        match Allocator::new(store.clone(), clock.clone())
            .allocate(&req)
            .await
        {
            Err(IpamError::Store(StoreError::Unavailable(_))) => {}
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
    server.set_refusing(false);
    let report = audit(&kube_store).await.expect("audit");
    assert_eq!((report.blocks, report.allocations), (0, 0));
    Allocator::new(stores[1].clone(), clock)
        .allocate(&req)
        .await
        .expect("allocate once the server answers");
}

fn kubectl(server: &TestApiServer, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut cmd = server.kubectl();
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write manifest");
    }
    let out = child.wait_with_output().expect("kubectl finishes");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The generated CRDs as an operator meets them: valid pools apply and list
/// with the printer columns; values the schema forbids are refused server side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_valid_pools_and_the_server_refuses_bad_ones() {
    let server = Arc::new(api_server().await);
    let s = server.clone();
    tokio::task::spawn_blocking(move || {
        let pool = |name: &str, extra: &str| {
            format!("apiVersion: margay.dev/v1\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n  cidr: 10.244.0.0/16\n{extra}")
        };
        let (ok, out, err) = kubectl(&s, &["apply", "-f", "-"], Some(&pool("good", "  vxlanMode: CrossSubnet\n  natOutgoing: true\n")));
        assert!(ok, "apply failed: {out}{err}");
        let (ok, out, err) = kubectl(&s, &["get", "ippools"], None);
        assert!(ok, "{err}");
        let header = out.lines().next().unwrap_or_default();
        for col in ["NAME", "CIDR", "VXLAN", "IPIP", "NAT", "DISABLED", "AGE"] {
            assert!(header.contains(col), "column {col} missing: {out}");
        }
        assert!(out.contains("10.244.0.0/16") && out.contains("CrossSubnet"), "{out}");

        let (ok, _, err) = kubectl(&s, &["apply", "-f", "-"], Some(&pool("bad-mode", "  vxlanMode: Sometimes\n")));
        assert!(!ok, "an unknown vxlanMode was accepted");
        assert!(err.contains("vxlanMode") && err.contains("Never"), "{err}");
        let (ok, _, err) = kubectl(&s, &["apply", "-f", "-"], Some(&pool("bad-block", "  blockSize: 200\n")));
        assert!(!ok, "blockSize 200 was accepted");
        assert!(err.contains("blockSize"), "{err}");
        let peer = "apiVersion: margay.dev/v1\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 192.0.2.1\n  asNumber: 0\n";
        let (ok, _, err) = kubectl(&s, &["apply", "-f", "-"], Some(peer));
        assert!(!ok, "asNumber 0 was accepted");
        assert!(err.contains("asNumber"), "{err}");
    })
    .await
    .expect("kubectl checks");
}
