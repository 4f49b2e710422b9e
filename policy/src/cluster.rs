//! Explaining a connection between two pods of a cluster, from a snapshot
//! of its objects (what `margayctl policy explain` and the lab do).
//!
//! The snapshot is compiled exactly as an agent compiles its inputs, with
//! *every* pod as a local endpoint (host interface named as the CNI plugin
//! names it). A connection is judged the way the dataplane judges it: the
//! source's egress program (on the source's node) and the destination's
//! ingress program (on the destination's node); both must allow. Policy
//! chains and sets are the same on every node, so one compilation answers
//! for any pair, wherever the pods run.

use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use margay_api::ValidationError;
use margay_api::endpoint::host_interface_name;
use margay_api::net::IpFamily;
use margay_api::resources::policy::{GlobalNetworkPolicy, Protocol};

use crate::compiler::Compiler;
use crate::eval::{Packet, Verdict, evaluate};
use crate::ir::{Direction, PolicyRef};
use crate::model::{LocalEndpoint, Namespace, Pod, PodKey};

/// The objects policy depends on, as read from the API.
#[derive(Debug, Clone, Default)]
pub struct ClusterSnapshot {
    pub namespaces: Vec<core::Namespace>,
    pub pods: Vec<core::Pod>,
    pub network_policies: Vec<NetworkPolicy>,
    pub global_policies: Vec<GlobalNetworkPolicy>,
}

/// Why a pair cannot be explained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error(
        "pod {0} does not exist (or uses the host network, whose traffic is node traffic and not subject to pod policy)"
    )]
    UnknownPod(PodKey),
    #[error("pod {pod} has no {family} address yet (status.podIPs is empty)")]
    NoAddress { pod: PodKey, family: IpFamily },
    #[error("port {0} is out of range: 1 to 65535")]
    BadPort(u32),
}

/// The verdict on a connection from one pod to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairExplanation {
    pub from: PodKey,
    pub to: PodKey,
    pub packet: Packet,
    /// The source's egress program.
    pub egress: Verdict,
    /// The destination's ingress program.
    pub ingress: Verdict,
}

impl PairExplanation {
    /// Allowed when both ends allow.
    pub fn allowed(&self) -> bool {
        self.egress.allowed && self.ingress.allowed
    }

    /// The verdict that decides: the first end that denies, else the
    /// destination's ingress (the last check a new connection passes).
    pub fn deciding(&self) -> (Direction, &Verdict) {
        if !self.egress.allowed {
            (Direction::Egress, &self.egress)
        } else {
            (Direction::Ingress, &self.ingress)
        }
    }
}

fn yes_no(v: &Verdict) -> &'static str {
    if v.allowed { "allow" } else { "deny" }
}

impl fmt::Display for PairExplanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.packet;
        let proto = Protocol::from_number(p.protocol);
        writeln!(
            f,
            "{} ({}) -> {} ({}) {proto}/{}: {}",
            self.from,
            p.src,
            self.to,
            p.dst,
            p.dst_port.unwrap_or(0),
            if self.allowed() { "ALLOWED" } else { "DENIED" }
        )?;
        writeln!(
            f,
            "  egress of {}: {} — {}",
            self.from,
            yes_no(&self.egress),
            self.egress.decided_by
        )?;
        write!(
            f,
            "  ingress of {}: {} — {}",
            self.to,
            yes_no(&self.ingress),
            self.ingress.decided_by
        )?;
        for (dir, v) in [("egress", &self.egress), ("ingress", &self.ingress)] {
            for l in &v.logged {
                write!(f, "\n  ({dir}: logged by {l})")?;
            }
        }
        Ok(())
    }
}

/// A compiled cluster snapshot, ready to explain any pair of its pods.
#[derive(Debug, Clone)]
pub struct ClusterExplainer {
    compiler: Compiler,
    refused: Vec<(PolicyRef, ValidationError)>,
}

impl ClusterExplainer {
    /// Compiles the snapshot; policies the compiler refuses are left out
    /// and listed by [`ClusterExplainer::refused`] (an agent keeps their
    /// previous version, which a snapshot does not have).
    pub fn new(snapshot: &ClusterSnapshot) -> ClusterExplainer {
        let mut c = Compiler::new();
        for ns in &snapshot.namespaces {
            if let Some(n) = Namespace::from_k8s(ns) {
                c.upsert_namespace(n);
            }
        }
        for pod in &snapshot.pods {
            if let Some(p) = Pod::from_k8s(pod) {
                let ep = LocalEndpoint {
                    interface: host_interface_name(&p.key.namespace, &p.key.name),
                    pod: p.key.clone(),
                };
                c.upsert_pod(p);
                c.upsert_local_endpoint(ep);
            }
        }
        let mut refused = Vec::new();
        for np in &snapshot.network_policies {
            if let Err(e) = c.upsert_network_policy(np) {
                refused.push((
                    PolicyRef::Kubernetes {
                        namespace: np.metadata.namespace.clone().unwrap_or_default(),
                        name: np.metadata.name.clone().unwrap_or_default(),
                    },
                    e,
                ));
            }
        }
        for gnp in &snapshot.global_policies {
            if let Err(e) = c.upsert_global_policy(gnp) {
                refused.push((
                    PolicyRef::Global {
                        name: gnp.metadata.name.clone().unwrap_or_default(),
                    },
                    e,
                ));
            }
        }
        ClusterExplainer {
            compiler: c,
            refused,
        }
    }

    /// Policies left out because the compiler refused them.
    pub fn refused(&self) -> &[(PolicyRef, ValidationError)] {
        &self.refused
    }

    pub fn compiler(&self) -> &Compiler {
        &self.compiler
    }

    /// A new connection from `from` to `to` on `port` (IP protocol number
    /// `protocol`: 6 TCP, 17 UDP, 132 SCTP), over IPv4 unless `family` says
    /// otherwise.
    pub fn explain(
        &self,
        from: &PodKey,
        to: &PodKey,
        protocol: u8,
        port: u32,
        family: IpFamily,
    ) -> Result<PairExplanation, ExplainError> {
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or(ExplainError::BadPort(port))?;
        let ir = self.compiler.ir();
        let endpoint = |k: &PodKey| {
            ir.endpoints
                .get(&host_interface_name(&k.namespace, &k.name))
                .filter(|e| &e.pod == k)
                .ok_or_else(|| ExplainError::UnknownPod(k.clone()))
        };
        let (src_ep, dst_ep) = (endpoint(from)?, endpoint(to)?);
        let addr = |k: &PodKey, ips: &[IpAddr]| {
            ips.iter()
                .copied()
                .find(|ip| IpFamily::of(*ip) == family)
                .ok_or_else(|| ExplainError::NoAddress {
                    pod: k.clone(),
                    family,
                })
        };
        let packet = Packet {
            protocol,
            ..Packet::tcp(addr(from, &src_ep.ips)?, addr(to, &dst_ep.ips)?, port)
        };
        Ok(PairExplanation {
            from: from.clone(),
            to: to.clone(),
            egress: evaluate(ir, src_ep, Direction::Egress, &packet),
            ingress: evaluate(ir, dst_ep, Direction::Ingress, &packet),
            packet,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::DecidedBy;
    use crate::ir::Action;
    use serde_json::json;

    fn snapshot() -> ClusterSnapshot {
        let ns = |n: &str| -> core::Namespace {
            serde_json::from_value(json!({"metadata": {"name": n, "labels": {"ns": n}}}))
                .expect("namespace")
        };
        let pod = |n: &str, name: &str, ip: &str| -> core::Pod {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": n, "labels": {"pod": name}},
                "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
                "status": {"podIPs": [{"ip": ip}]}
            }))
            .expect("pod")
        };
        ClusterSnapshot {
            namespaces: vec![ns("x"), ns("y")],
            pods: vec![
                pod("x", "a", "10.244.0.2"),
                pod("x", "b", "10.244.1.2"),
                pod("y", "a", "10.244.2.2"),
            ],
            network_policies: vec![
                serde_json::from_value(json!({
                    "metadata": {"name": "only-b", "namespace": "x"},
                    "spec": {"podSelector": {"matchLabels": {"pod": "a"}},
                             "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}],
                                          "ports": [{"port": "http"}]}]}
                }))
                .expect("np"),
            ],
            global_policies: vec![
                serde_json::from_value(json!({
                    "metadata": {"name": "deny-y-egress"},
                    "spec": {"order": 10, "namespaceSelector": "ns == 'y'",
                             "egress": [{"action": "Deny", "protocol": "UDP"}, {"action": "Pass"}]}
                }))
                .expect("gnp"),
                serde_json::from_value(json!({
                    "metadata": {"name": "broken"},
                    "spec": {"selector": "pod ==", "ingress": [{"action": "Allow"}]}
                }))
                .expect("gnp"),
            ],
        }
    }

    fn key(s: &str) -> PodKey {
        let (n, p) = s.split_once('/').expect("ns/pod");
        PodKey::new(n, p)
    }

    #[test]
    fn explains_both_ends_and_names_the_deciding_rule() {
        let e = ClusterExplainer::new(&snapshot());
        assert_eq!(e.refused().len(), 1, "{:?}", e.refused());
        assert_eq!(
            e.refused()[0].0,
            PolicyRef::Global {
                name: "broken".into()
            }
        );

        let ok = e
            .explain(&key("x/b"), &key("x/a"), 6, 8080, IpFamily::V4)
            .expect("explain");
        assert!(ok.allowed(), "{ok}");
        assert_eq!(ok.egress.decided_by, DecidedBy::NoPolicy);
        let (dir, v) = ok.deciding();
        assert_eq!(dir, Direction::Ingress);
        match &v.decided_by {
            DecidedBy::Rule { origin, action } => {
                assert_eq!(*action, Action::Allow);
                assert_eq!(
                    origin.policy,
                    PolicyRef::Kubernetes {
                        namespace: "x".into(),
                        name: "only-b".into()
                    }
                );
                assert_eq!(origin.index, 0);
            }
            other => panic!("{other:?}"),
        }
        let text = ok.to_string();
        assert!(
            text.contains("ALLOWED") && text.contains("NetworkPolicy x/only-b ingress[0]"),
            "{text}"
        );

        // Other port: the named port does not cover it; end of policies.
        let no = e
            .explain(&key("x/b"), &key("x/a"), 6, 8081, IpFamily::V4)
            .expect("explain");
        assert!(!no.allowed());
        assert_eq!(no.deciding().1.decided_by, DecidedBy::EndOfPolicies);

        // The source's egress decides first: a GNP Deny on y's UDP.
        let udp = e
            .explain(&key("y/a"), &key("x/b"), 17, 53, IpFamily::V4)
            .expect("explain");
        assert!(!udp.allowed());
        assert_eq!(udp.deciding().0, Direction::Egress);
        assert!(
            udp.to_string()
                .contains("Deny by GlobalNetworkPolicy deny-y-egress egress[0]"),
            "{udp}"
        );
        // TCP passes the GNP; no NetworkPolicy isolates y/a's egress.
        let tcp = e
            .explain(&key("y/a"), &key("x/b"), 6, 80, IpFamily::V4)
            .expect("explain");
        assert!(tcp.allowed(), "{tcp}");
        assert!(matches!(
            tcp.egress.decided_by,
            DecidedBy::PassedToKubernetes { .. }
        ));
    }

    #[test]
    fn bad_pairs_are_named() {
        let e = ClusterExplainer::new(&snapshot());
        assert_eq!(
            e.explain(&key("x/zz"), &key("x/a"), 6, 80, IpFamily::V4),
            Err(ExplainError::UnknownPod(key("x/zz")))
        );
        assert_eq!(
            e.explain(&key("x/a"), &key("x/b"), 6, 80, IpFamily::V6),
            Err(ExplainError::NoAddress {
                pod: key("x/a"),
                family: IpFamily::V6
            })
        );
        assert_eq!(
            e.explain(&key("x/a"), &key("x/b"), 6, 70000, IpFamily::V4),
            Err(ExplainError::BadPort(70000))
        );
    }
}
