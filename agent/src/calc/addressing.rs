//! What a pod asks IPAM for. By default one address of each family that has
//! an enabled pool selecting the node. Annotations (Calico's, under
//! `margay.dev/`) override:
//!
//! | annotation (pod) | value | effect |
//! |---|---|---|
//! | `margay.dev/ipAddrs` | JSON list, e.g. `["10.244.1.7"]` | exactly these addresses (one per family at most) |
//! | `margay.dev/ipv4pools` | JSON list of IPPool names or CIDRs | IPv4 address from these pools |
//! | `margay.dev/ipv6pools` | JSON list of IPPool names or CIDRs | IPv6 address from these pools |
//!
//! `margay.dev/ipv4pools` / `ipv6pools` on the pod's Namespace apply to every
//! pod in it that does not say otherwise. A pool annotation asks for its
//! family even where no pool selects the node by default.

use margay_api::ResolvedPool;
use margay_api::net::IpFamily;
use margay_ipam::AddressRequest;
use std::collections::BTreeMap;
use std::net::IpAddr;

pub const IP_ADDRS_ANNOTATION: &str = "margay.dev/ipAddrs";
pub const IPV4_POOLS_ANNOTATION: &str = "margay.dev/ipv4pools";
pub const IPV6_POOLS_ANNOTATION: &str = "margay.dev/ipv6pools";
/// Written by the agent on Ready: the pod's first address, and all of them comma-separated.
pub const POD_IP_ANNOTATION: &str = "margay.dev/podIP";
pub const POD_IPS_ANNOTATION: &str = "margay.dev/podIPs";

/// The address requests for one pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodAddressing {
    pub ipv4: Option<AddressRequest>,
    pub ipv6: Option<AddressRequest>,
}

/// A bad annotation, naming the object and the annotation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: annotation {annotation}: {message}")]
pub struct AnnotationError {
    pub object: String,
    pub annotation: &'static str,
    pub message: String,
}

/// Decides what to allocate. `pod_object`/`ns_object` name the objects for
/// errors (`Pod default/web`, `Namespace default`).
pub fn decide(
    pod_object: &str,
    pod_annotations: &BTreeMap<String, String>,
    ns_object: &str,
    ns_annotations: &BTreeMap<String, String>,
    pools: &[ResolvedPool],
    node_labels: &BTreeMap<String, String>,
) -> Result<PodAddressing, AnnotationError> {
    if let Some(raw) = pod_annotations.get(IP_ADDRS_ANNOTATION) {
        return specific(pod_object, raw);
    }
    let pools_from = |ann: &'static str| -> Result<Option<Vec<String>>, AnnotationError> {
        if let Some(raw) = pod_annotations.get(ann) {
            return string_list(pod_object, ann, raw).map(Some);
        }
        if let Some(raw) = ns_annotations.get(ann) {
            return string_list(ns_object, ann, raw).map(Some);
        }
        Ok(None)
    };
    let mut out = PodAddressing::default();
    for (family, ann) in [
        (IpFamily::V4, IPV4_POOLS_ANNOTATION),
        (IpFamily::V6, IPV6_POOLS_ANNOTATION),
    ] {
        let req = match pools_from(ann)? {
            Some(pools) if pools.is_empty() => {
                return Err(AnnotationError {
                    object: pod_object.to_string(),
                    annotation: ann,
                    message: "an empty list: name at least one IPPool (or leave it out)".into(),
                });
            }
            Some(pools) => Some(AddressRequest::Auto { pools }),
            None => has_default_pool(pools, family, node_labels).then(AddressRequest::any),
        };
        match family {
            IpFamily::V4 => out.ipv4 = req,
            IpFamily::V6 => out.ipv6 = req,
        }
    }
    Ok(out)
}

fn has_default_pool(
    pools: &[ResolvedPool],
    family: IpFamily,
    node_labels: &BTreeMap<String, String>,
) -> bool {
    pools
        .iter()
        .any(|p| !p.disabled && p.cidr.family() == family && p.node_selector.matches(node_labels))
}

fn string_list(
    object: &str,
    annotation: &'static str,
    raw: &str,
) -> Result<Vec<String>, AnnotationError> {
    serde_json::from_str::<Vec<String>>(raw).map_err(|e| AnnotationError {
        object: object.to_string(),
        annotation,
        message: format!(
            "{raw:?} is not a JSON list of strings ({e}); e.g. [\"default-ipv4-ippool\"]"
        ),
    })
}

fn specific(object: &str, raw: &str) -> Result<PodAddressing, AnnotationError> {
    let err = |message: String| AnnotationError {
        object: object.to_string(),
        annotation: IP_ADDRS_ANNOTATION,
        message,
    };
    let list = string_list(object, IP_ADDRS_ANNOTATION, raw)?;
    let mut out = PodAddressing::default();
    for s in &list {
        let ip: IpAddr = s
            .trim()
            .parse()
            .map_err(|_| err(format!("{s:?} is not an IP address")))?;
        let slot = match ip {
            IpAddr::V4(_) => &mut out.ipv4,
            IpAddr::V6(_) => &mut out.ipv6,
        };
        if slot.is_some() {
            return Err(err(format!(
                "more than one {} address: allowed one per family",
                IpFamily::of(ip)
            )));
        }
        *slot = Some(AddressRequest::Specific(ip));
    }
    if out.ipv4.is_none() && out.ipv6.is_none() {
        return Err(err("an empty list: give at least one address".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use margay_api::{IPPool, IPPoolSpec};

    fn pool(name: &str, cidr: &str, selector: Option<&str>, disabled: bool) -> ResolvedPool {
        let mut p = IPPool::new(name, IPPoolSpec::new(cidr));
        p.spec.node_selector = selector.map(str::to_string);
        p.spec.disabled = disabled;
        ResolvedPool::from_pool(&p).unwrap()
    }

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_follow_the_pools_that_select_the_node() {
        let pools = [
            pool("v4", "10.244.0.0/16", None, false),
            pool("v6", "fd00:244::/48", Some("zone == 'b'"), false),
        ];
        let none = ann(&[]);
        let a = decide(
            "Pod d/p",
            &none,
            "Namespace d",
            &none,
            &pools,
            &ann(&[("zone", "a")]),
        )
        .unwrap();
        assert_eq!(a.ipv4, Some(AddressRequest::any()));
        assert_eq!(a.ipv6, None);
        let b = decide(
            "Pod d/p",
            &none,
            "Namespace d",
            &none,
            &pools,
            &ann(&[("zone", "b")]),
        )
        .unwrap();
        assert_eq!(b.ipv6, Some(AddressRequest::any()));
        let disabled = [pool("v4", "10.244.0.0/16", None, true)];
        let c = decide("Pod d/p", &none, "Namespace d", &none, &disabled, &none).unwrap();
        assert_eq!(c, PodAddressing::default());
    }

    #[test]
    fn pod_annotations_win_over_namespace_annotations() {
        let pools = [pool("v4", "10.244.0.0/16", None, false)];
        let ns = ann(&[(IPV4_POOLS_ANNOTATION, r#"["ns-pool"]"#)]);
        let a = decide("Pod d/p", &ann(&[]), "Namespace d", &ns, &pools, &ann(&[])).unwrap();
        assert_eq!(
            a.ipv4,
            Some(AddressRequest::Auto {
                pools: vec!["ns-pool".into()]
            })
        );
        let pod = ann(&[(IPV4_POOLS_ANNOTATION, r#"["pod-pool"]"#)]);
        let b = decide("Pod d/p", &pod, "Namespace d", &ns, &pools, &ann(&[])).unwrap();
        assert_eq!(
            b.ipv4,
            Some(AddressRequest::Auto {
                pools: vec!["pod-pool".into()]
            })
        );
        let v6 = ann(&[(IPV6_POOLS_ANNOTATION, r#"["fd00:1::/64"]"#)]);
        let c = decide("Pod d/p", &v6, "Namespace d", &ann(&[]), &pools, &ann(&[])).unwrap();
        assert_eq!(
            c.ipv6,
            Some(AddressRequest::Auto {
                pools: vec!["fd00:1::/64".into()]
            })
        );
        assert_eq!(c.ipv4, Some(AddressRequest::any()));
    }

    #[test]
    fn requested_addresses_are_exact_and_one_per_family() {
        let pod = ann(&[(IP_ADDRS_ANNOTATION, r#"["10.244.9.9", "fd00::9"]"#)]);
        let a = decide("Pod d/p", &pod, "Namespace d", &ann(&[]), &[], &ann(&[])).unwrap();
        assert_eq!(
            a.ipv4,
            Some(AddressRequest::Specific("10.244.9.9".parse().unwrap()))
        );
        assert_eq!(
            a.ipv6,
            Some(AddressRequest::Specific("fd00::9".parse().unwrap()))
        );
        let two = ann(&[(IP_ADDRS_ANNOTATION, r#"["10.0.0.1","10.0.0.2"]"#)]);
        let e = decide("Pod d/p", &two, "Namespace d", &ann(&[]), &[], &ann(&[])).unwrap_err();
        assert!(
            e.to_string().contains("Pod d/p") && e.to_string().contains(IP_ADDRS_ANNOTATION),
            "{e}"
        );
    }

    #[test]
    fn malformed_annotations_name_the_object_and_annotation() {
        let bad = ann(&[(IP_ADDRS_ANNOTATION, "10.0.0.1")]);
        let e = decide("Pod d/p", &bad, "Namespace d", &ann(&[]), &[], &ann(&[])).unwrap_err();
        assert_eq!(e.annotation, IP_ADDRS_ANNOTATION);
        let bad_ip = ann(&[(IP_ADDRS_ANNOTATION, r#"["not-an-ip"]"#)]);
        assert!(decide("Pod d/p", &bad_ip, "Namespace d", &ann(&[]), &[], &ann(&[])).is_err());
        let ns_bad = ann(&[(IPV4_POOLS_ANNOTATION, "{}")]);
        let e = decide("Pod d/p", &ann(&[]), "Namespace d", &ns_bad, &[], &ann(&[])).unwrap_err();
        assert_eq!(e.object, "Namespace d");
        let empty = ann(&[(IPV4_POOLS_ANNOTATION, "[]")]);
        assert!(decide("Pod d/p", &empty, "Namespace d", &ann(&[]), &[], &ann(&[])).is_err());
    }
}
