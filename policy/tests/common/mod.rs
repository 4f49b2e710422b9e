//! The upstream e2e layout, evaluated purely: namespaces x, y, z (label
//! `ns=<name>`), pods a, b, c in each (label `pod=<name>`), serving TCP and
//! UDP on 80 and 81 with named ports `serve-80-tcp` etc., all local.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use margay_api::GlobalNetworkPolicy;
use margay_policy::eval::{Explanation, Packet, explain};
use margay_policy::{Compiler, Delta, LocalEndpoint, NamedPort, Namespace, Pod, PodKey};

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn pod_ip(ns: &str, pod: &str) -> IpAddr {
    let n = NAMESPACES.iter().position(|x| *x == ns).unwrap_or(9);
    let p = PODS.iter().position(|x| *x == pod).unwrap_or(9);
    format!("10.0.{n}.{}", p + 2).parse().expect("ip")
}

pub fn iface(ns: &str, pod: &str) -> String {
    margay_api::endpoint::host_interface_name(ns, pod)
}

pub fn serving_ports() -> Vec<NamedPort> {
    let mut v = Vec::new();
    for port in [80u16, 81] {
        for (proto, pname) in [(6u8, "tcp"), (17, "udp"), (132, "sctp")] {
            v.push(NamedPort {
                name: format!("serve-{port}-{pname}"),
                protocol: proto,
                port,
            });
        }
    }
    v
}

pub fn make_pod(ns: &str, name: &str) -> Pod {
    let mut p = Pod::new(ns, name);
    p.labels = labels(&[("pod", name)]);
    p.ips = vec![pod_ip(ns, name)];
    p.named_ports = serving_ports();
    p
}

/// The x/y/z × a/b/c cluster, every pod local to this node.
pub fn cluster() -> Compiler {
    let mut c = Compiler::new();
    for ns in NAMESPACES {
        c.upsert_namespace(Namespace::new(ns, labels(&[("ns", ns)])));
        for pod in PODS {
            c.upsert_pod(make_pod(ns, pod));
            c.upsert_local_endpoint(LocalEndpoint {
                pod: PodKey::new(ns, pod),
                interface: iface(ns, pod),
            });
        }
    }
    c
}

pub fn np(yaml: &str) -> NetworkPolicy {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("bad test YAML: {e}\n{yaml}"))
}

pub fn gnp(yaml: &str) -> GlobalNetworkPolicy {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("bad test YAML: {e}\n{yaml}"))
}

pub fn apply(c: &mut Compiler, yaml: &str) -> Delta {
    c.upsert_network_policy(&np(yaml))
        .unwrap_or_else(|e| panic!("policy refused: {e}"))
}

pub fn apply_global(c: &mut Compiler, yaml: &str) -> Delta {
    c.upsert_global_policy(&gnp(yaml))
        .unwrap_or_else(|e| panic!("policy refused: {e}"))
}

/// Every pod as "ns/pod".
pub fn all_pods() -> Vec<String> {
    NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |p| format!("{ns}/{p}")))
        .collect()
}

pub fn split(p: &str) -> (&str, &str) {
    p.split_once('/').expect("ns/pod")
}

pub fn packet(proto: &str, from: &str, to: &str, port: u16) -> Packet {
    let (fs, fp) = split(from);
    let (ts, tp) = split(to);
    let (s, d) = (pod_ip(fs, fp), pod_ip(ts, tp));
    match proto {
        "tcp" => Packet::tcp(s, d, port),
        "udp" => Packet::udp(s, d, port),
        "sctp" => Packet::sctp(s, d, port),
        other => panic!("protocol {other}"),
    }
}

pub fn explain_pair(c: &Compiler, proto: &str, from: &str, to: &str, port: u16) -> Explanation {
    explain(c.ir(), &packet(proto, from, to, port))
}

/// Compare the whole 9×9 matrix (diagonal excluded, as upstream) with
/// `expected(from, to)`; panics listing every wrong pair.
pub fn check_matrix(c: &Compiler, proto: &str, port: u16, expected: impl Fn(&str, &str) -> bool) {
    // The incremental IR must equal a fresh compile at every check.
    assert_eq!(
        c.ir(),
        &c.full_ir(),
        "incremental IR drifted from a full compile"
    );
    let mut wrong = Vec::new();
    for from in all_pods() {
        for to in all_pods() {
            if from == to {
                continue;
            }
            let got = explain_pair(c, proto, &from, &to, port).allowed();
            let want = expected(&from, &to);
            if got != want {
                wrong.push(format!(
                    "{from} -> {to} {proto}/{port}: got {}, want {}",
                    if got { "allow" } else { "deny" },
                    if want { "allow" } else { "deny" }
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong pairs:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

pub fn ns_of(p: &str) -> &str {
    split(p).0
}

pub fn pod_of(p: &str) -> &str {
    split(p).1
}
