//! `ipam show | check | release | configure` against the lab's API server,
//! with addresses allocated by the real allocator and a leak made on
//! purpose (a pod deleted without its address being released).

mod common;

use common::{api_with_crds, ctl, ctl_in, golden, stable};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use margay_api::IPAMConfiguration;
use margay_ipam::store::kube::KubeStore;
use margay_ipam::{AllocateRequest, Allocator, SystemClock};
use margay_lab::apiserver::TestApiServer;
use serde_json::json;
use std::sync::Arc;

async fn node(api: &TestApiServer, name: &str) {
    let nodes: Api<Node> = Api::all(api.client());
    let n: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    nodes
        .create(&PostParams::default(), &n)
        .await
        .expect("node");
}

async fn pod(api: &TestApiServer, name: &str, node: &str) {
    let pods: Api<Pod> = Api::namespaced(api.client(), "default");
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &p).await.expect("pod");
}

/// Two nodes, a pool, three pods with addresses; then pod `gone` is deleted
/// without releasing its address: a leak.
async fn cluster_with_a_leak(api: &TestApiServer) -> Allocator<KubeStore> {
    ctl_in(
        api,
        &["apply", "-f", "-"],
        Some("apiVersion: margay.dev/v1\nkind: IPPool\nmetadata: {name: pool}\nspec: {cidr: 10.10.0.0/24, blockSize: 26}\n"),
    )
    .expect(0);
    node(api, "node1").await;
    node(api, "node2").await;
    let alloc = Allocator::new(KubeStore::new(api.client()), Arc::new(SystemClock));
    for (handle, n, p) in [
        ("c-web/eth0", "node1", "web"),
        ("c-gone/eth0", "node1", "gone"),
        ("c-db/eth0", "node2", "db"),
    ] {
        pod(api, p, n).await;
        alloc
            .allocate(&AllocateRequest::pod_v4(handle, n, "default", p))
            .await
            .expect("allocate");
    }
    let pods: Api<Pod> = Api::namespaced(api.client(), "default");
    pods.delete("gone", &DeleteParams::default())
        .await
        .expect("delete pod");
    alloc
}

#[tokio::test(flavor = "multi_thread")]
async fn show_check_release_fix_a_leak() {
    let api = api_with_crds().await;
    let alloc = cluster_with_a_leak(&api).await;
    let url = api.url();

    let out = ctl(&api, &["ipam", "show"]).expect(0);
    golden("ipam-show.txt", &out.stdout);
    let out = ctl(&api, &["ipam", "show", "--show-blocks"]).expect(0);
    golden("ipam-show-blocks.txt", &out.stdout);
    let out = ctl(&api, &["ipam", "show", "--node", "node2", "-o", "json"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let blocks = v["pools"][0]["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 1, "{v}");
    assert_eq!(blocks[0]["affinity"], "node2");
    assert_eq!(blocks[0]["inUse"], 1);
    assert_eq!(v["pools"][0]["inUse"], 3);
    assert_eq!(v["pools"][0]["total"], 256);

    // check finds the leak: exit code 3, a text account and a report file.
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let out = ctl(&api, &["ipam", "check", "-o", report.to_str().unwrap()]).expect(3);
    golden(
        "ipam-check-leak.txt",
        &out.stdout.replace(report.to_str().unwrap(), "report.json"),
    );
    let text = std::fs::read_to_string(&report).unwrap();
    golden("ipam-check-report.json", &stable(&text, &url));
    let leaked_ip = {
        let r: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(r["leakedAddresses"].as_array().unwrap().len(), 1);
        r["leakedAddresses"][0]["ip"].as_str().unwrap().to_string()
    };
    let held = alloc
        .handle_addresses("c-gone/eth0", "node1")
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].to_string(), leaked_ip);

    // Dry run: says what it would do, changes nothing.
    let out = ctl(
        &api,
        &["ipam", "release", "--from-report", report.to_str().unwrap()],
    )
    .expect(0);
    assert!(
        out.stdout.contains(&format!("would release {leaked_ip}"))
            && out.stdout.contains("Dry run"),
        "{}",
        out.stdout
    );
    assert_eq!(
        alloc
            .handle_addresses("c-gone/eth0", "node1")
            .await
            .unwrap()
            .len(),
        1
    );

    // For real: the leaked address goes, the live ones stay.
    let out = ctl(
        &api,
        &[
            "ipam",
            "release",
            "--from-report",
            report.to_str().unwrap(),
            "--yes",
        ],
    )
    .expect(0);
    assert!(
        out.stdout.contains(&format!("released {leaked_ip}")),
        "{}",
        out.stdout
    );
    assert!(
        alloc
            .handle_addresses("c-gone/eth0", "node1")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        alloc
            .handle_addresses("c-web/eth0", "node1")
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        alloc
            .handle_addresses("c-db/eth0", "node2")
            .await
            .unwrap()
            .len(),
        1
    );
    let out = ctl(&api, &["ipam", "check"]).expect(0);
    assert!(out.stdout.contains("no problems found"), "{}", out.stdout);

    // The old report again: nothing left to do.
    let out = ctl(
        &api,
        &[
            "ipam",
            "release",
            "--from-report",
            report.to_str().unwrap(),
            "--yes",
        ],
    )
    .expect(0);
    assert!(out.stdout.contains("already released"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn release_rechecks_a_report_that_went_stale() {
    let api = api_with_crds().await;
    let alloc = cluster_with_a_leak(&api).await;
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    ctl(&api, &["ipam", "check", "-o", report.to_str().unwrap()]).expect(3);
    // The pod comes back (same name) before the release: its address is no
    // longer leaked, so it must not be released.
    pod(&api, "gone", "node1").await;
    let out = ctl(
        &api,
        &[
            "ipam",
            "release",
            "--from-report",
            report.to_str().unwrap(),
            "--yes",
        ],
    )
    .expect(0);
    assert!(out.stdout.contains("skipped"), "{}", out.stdout);
    assert_eq!(
        alloc
            .handle_addresses("c-gone/eth0", "node1")
            .await
            .unwrap()
            .len(),
        1
    );
    // A node that disappears leaks everything on it, and its block is orphaned.
    let nodes: Api<Node> = Api::all(api.client());
    nodes
        .delete("node2", &DeleteParams::default())
        .await
        .unwrap();
    let out = ctl(&api, &["ipam", "check", "-o", "-"]).expect(3);
    let r: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        r["leakedAddresses"][0]["reason"],
        "node \"node2\" does not exist"
    );
    assert_eq!(r["orphanBlocks"].as_array().unwrap().len(), 1, "{r}");
    // Not a report: refused.
    let bogus = dir.path().join("bogus.json");
    std::fs::write(&bogus, "{\"kind\": \"Other\"}").unwrap();
    ctl(
        &api,
        &["ipam", "release", "--from-report", bogus.to_str().unwrap()],
    )
    .expect(1);
    ctl(&api, &["ipam", "release"]).expect(2);
}

#[tokio::test(flavor = "multi_thread")]
async fn configure_strict_affinity() {
    let api = api_with_crds().await;
    let out = ctl(&api, &["ipam", "configure", "--strict-affinity", "true"]).expect(0);
    assert!(
        out.stdout
            .contains("created: strictAffinity true (was false)"),
        "{}",
        out.stdout
    );
    let cfgs: Api<IPAMConfiguration> = Api::all(api.client());
    assert!(cfgs.get("default").await.unwrap().spec.strict_affinity);
    let out = ctl(&api, &["ipam", "configure", "--strict-affinity", "true"]).expect(0);
    assert!(out.stdout.contains("unchanged"), "{}", out.stdout);
    ctl(
        &api,
        &[
            "ipam",
            "configure",
            "--strict-affinity",
            "false",
            "--max-blocks-per-host",
            "4",
        ],
    )
    .expect(0);
    let spec = cfgs.get("default").await.unwrap().spec;
    assert!(!spec.strict_affinity);
    assert_eq!(spec.max_blocks_per_host, 4);
    let out = ctl(&api, &["ipam", "show", "--show-configuration"]).expect(0);
    golden("ipam-show-configuration.txt", &out.stdout);
    ctl(&api, &["ipam", "configure"]).expect(2);
    ctl(&api, &["ipam", "configure", "--strict-affinity", "maybe"]).expect(2);
}
