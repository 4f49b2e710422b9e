//! GlobalNetworkPolicy and NetworkPolicy through real `kubectl` against the
//! lab's API server: the generated CRD installs, objects apply and read back
//! with their printer columns, the schema refuses bad enums, and what comes
//! back compiles to the IR.

use std::io::Write;
use std::process::{Output, Stdio};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use margay_api::GlobalNetworkPolicy;
use margay_lab::apiserver::TestApiServer;
use margay_policy::{Compiler, PolicyRef};

fn kubectl(api: &TestApiServer, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = api.kubectl();
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("kubectl runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("kubectl finishes")
}

fn ok(api: &TestApiServer, args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl(api, args, stdin);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_apply_with_kubectl_and_compile() {
    let api = TestApiServer::start().await.expect("API server");
    let crd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/crds/globalnetworkpolicies.margay.dev.yaml"
    );
    let api2 = &api;
    tokio::task::block_in_place(|| {
        ok(api2, &["apply", "-f", crd], None);
        ok(
            api2,
            &["apply", "-f", "-"],
            Some(
                r#"
apiVersion: margay.dev/v1
kind: GlobalNetworkPolicy
metadata: {name: guard}
spec:
  order: 10
  selector: "app == 'db'"
  types: [Ingress]
  ingress:
  - action: Deny
    protocol: TCP
    source: {nets: ["192.0.2.0/24"]}
    destination: {ports: [5432, "8000:8080", metrics]}
  - action: Pass
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  egress: [{to: [{namespaceSelector: {}}]}]
"#,
            ),
        );
        let table = ok(api2, &["get", "gnp"], None);
        assert!(
            table.contains("ORDER") && table.contains("guard") && table.contains("10"),
            "{table}"
        );
        let bad = kubectl(
            api2,
            &["apply", "-f", "-"],
            Some(
                "apiVersion: margay.dev/v1\nkind: GlobalNetworkPolicy\nmetadata: {name: bad}\nspec:\n  ingress: [{action: Maybe}]\n",
            ),
        );
        assert!(!bad.status.success(), "an unknown action was accepted");

        let gnp: GlobalNetworkPolicy =
            serde_json::from_str(&ok(api2, &["get", "gnp", "guard", "-o", "json"], None))
                .expect("GNP JSON");
        let np: NetworkPolicy = serde_json::from_str(&ok(
            api2,
            &["get", "networkpolicy", "db", "-n", "shop", "-o", "json"],
            None,
        ))
        .expect("NP JSON");
        let mut c = Compiler::new();
        c.upsert_global_policy(&gnp).expect("GNP compiles");
        c.upsert_network_policy(&np).expect("NP compiles");
        // The NetworkPolicy had egress rules and no policyTypes: both
        // directions (defaulted by the server or by the compiler alike).
        let t = c
            .policy(&PolicyRef::Kubernetes {
                namespace: "shop".into(),
                name: "db".into(),
            })
            .expect("translated");
        assert_eq!(t.chains.len(), 2);
        let g = c
            .policy(&PolicyRef::Global {
                name: "guard".into(),
            })
            .expect("translated");
        // Deny with ports 5432 + range, and the named port: two IR rules;
        // then Pass.
        let rules = &g.chains.values().next().expect("ingress").rules;
        assert_eq!(rules.len(), 3, "{rules:?}");
    });
}
