//! The renderer against the kernel: full loads, deltas and reconcile in a
//! network namespace of the test's own.

mod common;

use std::path::PathBuf;

use common::*;
use margay_lab::netns::NetnsGuard;
use margay_policy::nft::{Nft, NftDataplane, Renderer};

fn dataplane(ns: &NetnsGuard) -> NftDataplane {
    let nft = Nft::open_in_netns(&PathBuf::from("/run/netns").join(ns.name()))
        .unwrap_or_else(|e| panic!("libnftables: {e}"));
    NftDataplane::new(nft, Renderer::default())
}

fn policies(c: &mut margay_policy::Compiler) {
    apply(
        c,
        r#"
metadata: {name: web, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}, {ipBlock: {cidr: 10.0.0.0/16, except: [10.0.2.0/24]}}]
    ports: [{port: serve-80-tcp}, {port: 81, endPort: 90, protocol: UDP}]
  egress:
  - to: [{podSelector: {}}]
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
    destination: {ports: [81, "8000:8080"], notPorts: [8001]}
  - action: Pass
  egress:
  - action: Allow
    protocol: ICMP
    icmp: {type: 8, code: 0}
  - action: Pass
    ipVersion: 6
"#,
    );
    apply_global(
        c,
        r#"
metadata: {name: default-deny}
spec:
  selector: all()
  namespaceSelector: "ns != 'z'"
  types: [Ingress, Egress]
  egress:
  - action: Allow
    protocol: UDP
    destination: {selector: "pod == 'c'", ports: [53, serve-80-udp]}
"#,
    );
}

#[test]
fn full_load_reads_back_identical() {
    let ns = NetnsGuard::create_unique("mgy-pol").expect("netns");
    let mut dp = dataplane(&ns);
    let mut c = cluster();
    policies(&mut c);
    dp.apply_full(c.ir())
        .unwrap_or_else(|e| panic!("{e}\n{}", Renderer::default().full(c.ir())));
    let r = dp.reconcile(c.ir()).expect("reconcile");
    assert!(
        !r.changed_anything(),
        "fresh table differs from the IR: {r:?}"
    );
    if std::env::var_os("MGY_DUMP").is_some() {
        eprintln!("{}", dp.nft().run("list table inet margay").unwrap());
    }
}
