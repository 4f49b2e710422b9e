//! Renderer golden tests: the nft text of a small, fixed IR (full table and
//! a delta) is compared with files under `tests/golden/`. A change in the
//! rendering shows up as a reviewable diff; `UPDATE_GOLDEN=1 cargo nextest
//! run -p margay-policy render_golden` rewrites the files.

mod common;

use std::path::PathBuf;

use common::*;
use margay_policy::nft::Renderer;
use margay_policy::nft::render::pass_chains;
use margay_policy::{Compiler, LocalEndpoint, Namespace, Pod, PodKey};

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden file");
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 to create)", path.display()));
    assert!(
        expected == actual,
        "{} differs from the rendering (UPDATE_GOLDEN=1 to accept):\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

fn small() -> Compiler {
    let mut c = Compiler::new();
    c.upsert_namespace(Namespace::new("shop", labels(&[("team", "web")])));
    for (name, ip, app) in [("front", "10.1.0.2", "front"), ("db", "10.1.0.3", "db")] {
        let mut p = Pod::new("shop", name);
        p.labels = labels(&[("app", app)]);
        p.ips = vec![ip.parse().expect("ip")];
        p.named_ports = vec![margay_policy::NamedPort {
            name: "sql".into(),
            protocol: 6,
            port: 5432,
        }];
        c.upsert_pod(p);
        c.upsert_local_endpoint(LocalEndpoint {
            pod: PodKey::new("shop", name),
            interface: format!("mgy{name}"),
        });
    }
    apply(
        &mut c,
        r#"
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: front}}}, {ipBlock: {cidr: 192.168.0.0/16, except: [192.168.1.0/24]}}]
    ports: [{port: sql}, {port: 9100, endPort: 9102}]
"#,
    );
    apply_global(
        &mut c,
        r#"
metadata: {name: guard}
spec:
  order: 10
  ingress:
  - action: Log
  - action: Deny
    protocol: UDP
    source: {notNets: ["10.0.0.0/8"]}
    destination: {ports: [53], notPorts: ["54:60"]}
  - action: Pass
  egress:
  - action: Allow
    protocol: ICMPv6
    icmp: {type: 128, code: 0}
  - action: Pass
"#,
    );
    apply_global(
        &mut c,
        "metadata: {name: default-deny}\nspec:\n  types: [Egress]\n",
    );
    c
}

#[test]
fn full_table() {
    let c = small();
    golden("full.nft", &Renderer::default().full(c.ir()));
}

#[test]
fn delta_of_label_change_and_policy_edit() {
    let mut c = small();
    let before = pass_chains(c.ir());
    let mut d = c.upsert_pod({
        let mut p = c.pod(&PodKey::new("shop", "front")).cloned().expect("pod");
        p.labels = labels(&[("app", "other")]);
        p
    });
    let d2 = c.remove_policy(&margay_policy::PolicyRef::Global {
        name: "default-deny".into(),
    });
    // Merge the two deltas as an agent batching changes would.
    d.chains_removed.extend(d2.chains_removed);
    d.endpoints_upserted.extend(d2.endpoints_upserted);
    golden("delta.nft", &Renderer::default().delta(c.ir(), &d, &before));
}
