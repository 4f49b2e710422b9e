//! `policy explain` against the lab's API server: pods, namespaces, a
//! NetworkPolicy and GlobalNetworkPolicies (one refused), verdicts with the
//! deciding rule as text and JSON, and bad arguments named.

mod common;

use common::{api_with_crds, ctl, ctl_in, golden};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, Patch, PatchParams, PostParams};
use margay_api::GlobalNetworkPolicy;
use margay_lab::apiserver::TestApiServer;
use serde_json::json;

async fn namespace(api: &TestApiServer, name: &str) {
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"ns": name}}}))
            .unwrap();
    Api::<Namespace>::all(api.client())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
}

async fn pod(api: &TestApiServer, ns: &str, name: &str, ip: &str) {
    let pods: Api<Pod> = Api::namespaced(api.client(), ns);
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"pod": name}},
        "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "none",
                 "ports": [{"name": "http", "containerPort": 8080}]}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &p).await.expect("pod");
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("pod status");
}

async fn cluster(api: &TestApiServer) {
    namespace(api, "shop").await;
    namespace(api, "other").await;
    pod(api, "shop", "front", "10.244.0.2").await;
    pod(api, "shop", "db", "10.244.0.3").await;
    pod(api, "other", "probe", "10.244.1.2").await;
    let np: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "db-from-front", "namespace": "shop"},
        "spec": {"podSelector": {"matchLabels": {"pod": "db"}},
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "front"}}}],
                              "ports": [{"port": "http"}]}]}
    }))
    .unwrap();
    Api::<NetworkPolicy>::namespaced(api.client(), "shop")
        .create(&PostParams::default(), &np)
        .await
        .expect("network policy");
    ctl_in(
        api,
        &["apply", "-f", "-"],
        Some(
            "apiVersion: margay.dev/v1\nkind: GlobalNetworkPolicy\nmetadata: {name: no-udp-out}\nspec:\n  order: 10\n  namespaceSelector: ns == 'other'\n  egress:\n  - action: Deny\n    protocol: UDP\n  - action: Pass\n",
        ),
    )
    .expect(0);
    // margayctl refuses to write a bad selector; kubectl (or any client)
    // does not: the CRD schema only says "string". The compiler refuses it,
    // as every agent does.
    let broken: GlobalNetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "broken"},
        "spec": {"selector": "pod ==", "ingress": [{"action": "Allow"}]}
    }))
    .unwrap();
    Api::<GlobalNetworkPolicy>::all(api.client())
        .create(&PostParams::default(), &broken)
        .await
        .expect("global policy");
}

#[tokio::test(flavor = "multi_thread")]
async fn explains_verdicts_with_the_deciding_rule() {
    let api = api_with_crds().await;
    cluster(&api).await;

    let allowed = ctl(
        &api,
        &[
            "policy",
            "explain",
            "shop/front",
            "shop/db",
            "--port",
            "8080",
        ],
    )
    .expect(0);
    golden("policy-explain-allowed.txt", &allowed.stdout);

    let denied = ctl(
        &api,
        &[
            "policy",
            "explain",
            "other/probe",
            "shop/db",
            "--port",
            "8080",
        ],
    )
    .expect(0);
    golden("policy-explain-denied.txt", &denied.stdout);

    let udp = ctl(
        &api,
        &[
            "policy",
            "explain",
            "other/probe",
            "shop/front",
            "--port",
            "53",
            "--protocol",
            "udp",
            "-o",
            "json",
        ],
    )
    .expect(0);
    golden("policy-explain-udp.json", &udp.stdout);
    let v: serde_json::Value = serde_json::from_str(&udp.stdout).expect("JSON");
    assert_eq!(v["allowed"], false);
    assert_eq!(v["egress"]["decidedBy"], "rule");
    assert_eq!(v["egress"]["policy"], "GlobalNetworkPolicy no-udp-out");
    assert_eq!(v["egress"]["rule"], "egress[0]");
    assert_eq!(
        v["refusedPolicies"][0]["policy"],
        "GlobalNetworkPolicy broken"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_arguments_are_named() {
    let api = api_with_crds().await;
    cluster(&api).await;
    let r = ctl(
        &api,
        &[
            "policy",
            "explain",
            "shop/front",
            "shop/nope",
            "--port",
            "80",
        ],
    )
    .expect(1);
    assert!(
        r.stderr.contains("pod shop/nope does not exist"),
        "{}",
        r.stderr
    );
    let r = ctl(
        &api,
        &["policy", "explain", "front", "shop/db", "--port", "80"],
    )
    .expect(2);
    assert!(r.stderr.contains("FROM \"front\""), "{}", r.stderr);
    let r = ctl(
        &api,
        &[
            "policy",
            "explain",
            "shop/front",
            "shop/db",
            "--port",
            "70000",
        ],
    )
    .expect(2);
    assert!(r.stderr.contains("--port 70000"), "{}", r.stderr);
    let r = ctl(&api, &["policy", "explain", "shop/front", "shop/db"]).expect(2);
    assert!(r.stderr.contains("--port"), "{}", r.stderr);
    let r = ctl(
        &api,
        &[
            "policy",
            "explain",
            "shop/front",
            "shop/db",
            "--port",
            "80",
            "-6",
        ],
    )
    .expect(1);
    assert!(r.stderr.contains("no IPv6 address"), "{}", r.stderr);
}
