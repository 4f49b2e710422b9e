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

#[test]
fn element_deltas_go_over_netlink_and_match_the_kernel() {
    let ns = NetnsGuard::create_unique("mgy-pol").expect("netns");
    let mut dp = dataplane(&ns);
    let mut c = cluster();
    policies(&mut c);
    dp.apply_full(c.ir()).expect("full load");
    // A pod on another node, v4 and v6, with named ports, joining selectors.
    let remote = || {
        let mut p = make_pod("y", "remote");
        p.labels = labels(&[("pod", "c")]);
        p.ips = vec!["10.0.1.9".parse().unwrap(), "fd00::1:9".parse().unwrap()];
        p
    };
    let d = c.upsert_pod(remote());
    assert!(d.elements_only(), "{d:?}");
    let kinds: Vec<char> = d
        .elements
        .keys()
        .map(|id| id.0.as_bytes()[0] as char)
        .collect();
    assert!(kinds.contains(&'p') && kinds.contains(&'q'), "{d:?}");
    let before = dp.stats();
    dp.apply_delta(c.ir(), &d).expect("netlink delta");
    let after = dp.stats();
    assert_eq!(after.netlink_batches, before.netlink_batches + 1);
    assert_eq!(
        (after.nft_batches, after.fallbacks),
        (before.nft_batches, 0)
    );
    let listing = dp.nft().run("list table inet margay").expect("list");
    for want in ["10.0.1.9 . udp . 80", "fd00::1:9 . udp . 80", "fd00::1:9"] {
        assert!(listing.contains(want), "{want} missing:\n{listing}");
    }
    assert!(!dp.reconcile(c.ir()).expect("reconcile").changed_anything());

    let key = margay_policy::PodKey::new("y", "remote");
    let d = c.remove_pod(&key);
    dp.apply_delta(c.ir(), &d).expect("netlink delta");
    assert_eq!(dp.stats().fallbacks, 0);
    let listing = dp.nft().run("list table inet margay").expect("list");
    assert!(!listing.contains("10.0.1.9"), "{listing}");
    assert!(!dp.reconcile(c.ir()).expect("reconcile").changed_anything());

    // Drift: the element vanishes behind our back; the delta deleting it is
    // refused by the kernel as a whole, and the dataplane falls back to a
    // reconcile that lands on the IR.
    let d = c.upsert_pod(remote());
    dp.apply_delta(c.ir(), &d).expect("netlink delta");
    let (set, _) = d.elements.iter().next().expect("a changed set");
    let elem = c.ir().sets[set]
        .elements
        .iter()
        .find(|e| format!("{e:?}").contains("10.0.1.9") || format!("{e:?}").contains("fd00::1:9"))
        .copied()
        .expect("elem");
    dp.nft()
        .run(&format!(
            "delete element inet margay {set} {{ {} }}",
            margay_policy::nft::render::elem_text(&elem)
        ))
        .expect("foreign delete");
    let d = c.remove_pod(&key);
    dp.apply_delta(c.ir(), &d).expect("delta with fallback");
    assert_eq!(dp.stats().fallbacks, 1, "{:?}", dp.stats());
    assert!(!dp.reconcile(c.ir()).expect("reconcile").changed_anything());
}
