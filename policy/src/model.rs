//! The compiler's inputs besides the policies themselves: namespaces and pods
//! as far as policy cares (names, labels, addresses, named container ports),
//! and which pods are local endpoints on this node.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use margay_api::resources::policy::Protocol;

/// The label the control plane puts on every namespace (its own name), which
/// policies use to select a namespace by name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A namespace and its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl Namespace {
    /// A namespace with `labels`, plus `kubernetes.io/metadata.name` (set by
    /// the API server on every namespace; added here when the input lacks it).
    pub fn new(name: impl Into<String>, labels: BTreeMap<String, String>) -> Namespace {
        let name = name.into();
        let mut labels = labels;
        labels
            .entry(NAMESPACE_NAME_LABEL.to_string())
            .or_insert_with(|| name.clone());
        Namespace { name, labels }
    }

    pub fn from_k8s(ns: &k8s_openapi::api::core::v1::Namespace) -> Option<Namespace> {
        let name = ns.metadata.name.clone()?;
        Some(Namespace::new(
            name,
            ns.metadata.labels.clone().unwrap_or_default(),
        ))
    }
}

/// A pod by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl PodKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> PodKey {
        PodKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A named container port: what a policy's named port resolves to on this pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedPort {
    pub name: String,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP).
    pub protocol: u8,
    pub port: u16,
}

/// A pod as policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub key: PodKey,
    pub labels: BTreeMap<String, String>,
    /// The pod's addresses (one per family at most, in practice).
    pub ips: Vec<IpAddr>,
    /// Named container ports (unnamed ones cannot be referenced by name).
    pub named_ports: Vec<NamedPort>,
}

impl Pod {
    pub fn new(namespace: &str, name: &str) -> Pod {
        Pod {
            key: PodKey::new(namespace, name),
            labels: BTreeMap::new(),
            ips: Vec::new(),
            named_ports: Vec::new(),
        }
    }

    /// From a Kubernetes pod: addresses from `status.podIPs` (or `podIP`),
    /// named ports of every container and init container (sidecars serve
    /// too). Host-network pods have the node's address, not a pod address:
    /// they are left out (`None`), as the NetworkPolicy documentation allows
    /// (their traffic is node traffic). Also `None` without a name/namespace.
    pub fn from_k8s(pod: &k8s_openapi::api::core::v1::Pod) -> Option<Pod> {
        let namespace = pod.metadata.namespace.clone()?;
        let name = pod.metadata.name.clone()?;
        let spec = pod.spec.as_ref();
        if spec.and_then(|s| s.host_network).unwrap_or(false) {
            return None;
        }
        let mut ips: Vec<IpAddr> = Vec::new();
        if let Some(status) = &pod.status {
            for ip in status.pod_ips.iter().flatten() {
                if let Ok(a) = ip.ip.parse() {
                    ips.push(a);
                }
            }
            if ips.is_empty()
                && let Some(Ok(a)) = status.pod_ip.as_deref().map(str::parse)
            {
                ips.push(a);
            }
        }
        ips.sort();
        ips.dedup();
        let mut named_ports = Vec::new();
        if let Some(spec) = spec {
            let containers = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten());
            for c in containers {
                for p in c.ports.iter().flatten() {
                    let (Some(n), Ok(port)) = (&p.name, u16::try_from(p.container_port)) else {
                        continue;
                    };
                    let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
                        "UDP" => Protocol::UDP,
                        "SCTP" => Protocol::SCTP,
                        _ => Protocol::TCP,
                    };
                    named_ports.push(NamedPort {
                        name: n.clone(),
                        protocol,
                        port,
                    });
                }
            }
        }
        named_ports.sort();
        named_ports.dedup();
        Some(Pod {
            key: PodKey::new(namespace, name),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ips,
            named_ports,
        })
    }
}

/// A pod on this node that policy is enforced for, and its host-side interface.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalEndpoint {
    pub pod: PodKey,
    pub interface: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_from_kubernetes_object() {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {
                "containers": [{"name": "c", "ports": [
                    {"name": "http", "containerPort": 8080},
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    {"containerPort": 9000}
                ]}],
                "initContainers": [{"name": "side", "ports": [{"name": "sctp-x", "containerPort": 99, "protocol": "SCTP"}]}]
            },
            "status": {"podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}]}
        }))
        .expect("pod JSON");
        let p = Pod::from_k8s(&pod).expect("a pod-network pod");
        assert_eq!(p.key, PodKey::new("shop", "web"));
        assert_eq!(p.ips.len(), 2);
        assert_eq!(
            p.named_ports,
            vec![
                NamedPort {
                    name: "dns".into(),
                    protocol: 17,
                    port: 53
                },
                NamedPort {
                    name: "http".into(),
                    protocol: 6,
                    port: 8080
                },
                NamedPort {
                    name: "sctp-x".into(),
                    protocol: 132,
                    port: 99
                },
            ]
        );
        let mut host = pod.clone();
        if let Some(s) = host.spec.as_mut() {
            s.host_network = Some(true);
        }
        assert_eq!(
            Pod::from_k8s(&host),
            None,
            "hostNetwork pods are node traffic"
        );
    }

    #[test]
    fn namespace_gets_its_name_label() {
        let ns = Namespace::new("x", BTreeMap::new());
        assert_eq!(
            ns.labels.get(NAMESPACE_NAME_LABEL).map(String::as_str),
            Some("x")
        );
    }
}
