//! NetworkPolicy as the real API server treats it on write: `policyTypes` and
//! port `protocol` defaulting (`SetDefaults_NetworkPolicy`,
//! `SetDefaults_NetworkPolicyPort`) and `ValidateNetworkPolicySpec` (peers,
//! ipBlocks, ports, policyTypes). See shared notes §2, §3, §8, §9.

use std::net::IpAddr;

use serde_json::{Map, Value, json};

use super::admission::validate_label_selector;
use super::status::FieldError;

/// `SetDefaults_NetworkPolicy` and `SetDefaults_NetworkPolicyPort`.
pub(super) fn default_network_policy(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        obj["spec"] = json!({"podSelector": {}, "policyTypes": ["Ingress"]});
        return;
    };
    spec.entry("podSelector").or_insert_with(|| json!({}));
    let has_types = spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if !has_types {
        let has_egress = spec
            .get("egress")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        let types = if has_egress {
            json!(["Ingress", "Egress"])
        } else {
            json!(["Ingress"])
        };
        spec.insert("policyTypes".into(), types);
    }
    for dir in ["ingress", "egress"] {
        if let Some(Value::Array(rules)) = spec.get_mut(dir) {
            for rule in rules {
                if let Some(Value::Array(ports)) = rule.get_mut("ports") {
                    for p in ports {
                        if let Some(m) = p.as_object_mut() {
                            m.entry("protocol").or_insert_with(|| json!("TCP"));
                        }
                    }
                }
            }
        }
    }
}

/// Parses `a.b.c.d/n` or `x::/n` into (network address, prefix length).
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return None;
    }
    Some((mask(ip, len), len))
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            IpAddr::V4((u32::from(v4) & m).into())
        }
        IpAddr::V6(v6) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            IpAddr::V6((u128::from(v6) & m).into())
        }
    }
}

const CIDR_MSG: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

fn validate_ip_block(ipb: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let cidr_v = ipb.get("cidr").cloned().unwrap_or(Value::Null);
    let cidr = cidr_v.as_str().unwrap_or("");
    if cidr.is_empty() {
        errs.push(FieldError::required(format!("{path}.cidr"), ""));
        return;
    }
    let Some((net, len)) = parse_cidr(cidr) else {
        errs.push(FieldError::invalid(
            format!("{path}.cidr"),
            &cidr_v,
            CIDR_MSG,
        ));
        return;
    };
    for (i, ex_v) in ipb
        .get("except")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let p = format!("{path}.except[{i}]");
        let Some((ex_net, ex_len)) = ex_v.as_str().and_then(parse_cidr) else {
            errs.push(FieldError::invalid(p, ex_v, CIDR_MSG));
            continue;
        };
        let same_family = ex_net.is_ipv4() == net.is_ipv4();
        if !same_family || ex_len <= len || mask(ex_net, len) != net {
            errs.push(FieldError::invalid(
                p,
                ex_v,
                "must be a strict subset of `cidr`",
            ));
        }
    }
}

fn is_port_name(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 15 {
        return Err("must be no more than 15 characters");
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    {
        return Err("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if !b.iter().any(|c| c.is_ascii_lowercase()) {
        return Err("must contain at least one letter (a-z)");
    }
    if b[0] == b'-' || b[b.len() - 1] == b'-' || s.contains("--") {
        return Err("must not begin or end with a hyphen, nor contain adjacent hyphens");
    }
    Ok(())
}

const PORT_RANGE_MSG: &str = "must be between 1 and 65535, inclusive";

fn validate_np_port(port: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(proto) = port.get("protocol")
        && !matches!(proto.as_str(), Some("TCP" | "UDP" | "SCTP"))
    {
        errs.push(FieldError::not_supported(
            format!("{path}.protocol"),
            proto,
            &["SCTP", "TCP", "UDP"],
        ));
    }
    let end = port.get("endPort").filter(|v| !v.is_null());
    match port.get("port").filter(|v| !v.is_null()) {
        Some(p @ Value::Number(n)) => {
            let n = n.as_i64().unwrap_or(0);
            if !(1..=65535).contains(&n) {
                errs.push(FieldError::invalid(
                    format!("{path}.port"),
                    p,
                    PORT_RANGE_MSG,
                ));
            }
            if let Some(e) = end {
                let ev = e.as_i64().unwrap_or(0);
                if ev < n {
                    errs.push(FieldError::invalid(
                        format!("{path}.endPort"),
                        p,
                        "must be greater than or equal to `port`",
                    ));
                }
                if !(1..=65535).contains(&ev) {
                    errs.push(FieldError::invalid(
                        format!("{path}.endPort"),
                        e,
                        PORT_RANGE_MSG,
                    ));
                }
            }
        }
        Some(p @ Value::String(s)) => {
            if let Some(e) = end {
                errs.push(FieldError::invalid(
                    format!("{path}.endPort"),
                    e,
                    "may not be specified when `port` is non-numeric",
                ));
            }
            if let Err(why) = is_port_name(s) {
                errs.push(FieldError::invalid(format!("{path}.port"), p, why));
            }
        }
        Some(other) => errs.push(FieldError::invalid(
            format!("{path}.port"),
            other,
            "must be a port number or name",
        )),
        None => {
            if let Some(e) = end {
                errs.push(FieldError::invalid(
                    format!("{path}.endPort"),
                    e,
                    "may not be specified when `port` is not specified",
                ));
            }
        }
    }
}

/// Upstream `ValidateNetworkPolicySpec`: peers, ports, ipBlocks, policyTypes.
pub(super) fn validate_network_policy(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = obj
        .get("spec")
        .cloned()
        .unwrap_or(Value::Object(Map::new()));
    validate_label_selector(
        spec.get("podSelector").unwrap_or(&Value::Null),
        "spec.podSelector",
        &mut errs,
    );
    for (dir, peers_field) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in spec
            .get(dir)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            for (j, port) in rule
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                validate_np_port(port, &format!("spec.{dir}[{i}].ports[{j}]"), &mut errs);
            }
            for (j, peer) in rule
                .get(peers_field)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let p = format!("spec.{dir}[{i}].{peers_field}[{j}]");
                let set = |k: &str| peer.get(k).is_some_and(|v| !v.is_null());
                let mut count = 0;
                for sel in ["podSelector", "namespaceSelector"] {
                    if set(sel) {
                        count += 1;
                        validate_label_selector(&peer[sel], &format!("{p}.{sel}"), &mut errs);
                    }
                }
                if set("ipBlock") {
                    count += 1;
                    validate_ip_block(&peer["ipBlock"], &format!("{p}.ipBlock"), &mut errs);
                }
                if count == 0 {
                    errs.push(FieldError::required(p, "must specify a peer"));
                } else if count > 1 && set("ipBlock") {
                    errs.push(FieldError::forbidden(
                        p,
                        "may not specify both ipBlock and another peer",
                    ));
                }
            }
        }
    }
    let types = spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, t) in types.iter().enumerate() {
        if !matches!(t.as_str(), Some("Ingress" | "Egress")) {
            errs.push(FieldError::not_supported(
                format!("spec.policyTypes[{i}]"),
                t,
                &["Egress", "Ingress"],
            ));
        }
    }
    if types.len() > 2 {
        errs.push(FieldError::invalid(
            "spec.policyTypes",
            &Value::Array(types),
            "may not specify more than two policyTypes",
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::admission::{default_object, validate};
    use crate::apiserver::resources::{ResourceDef, builtins};

    fn def(resource: &str) -> ResourceDef {
        builtins()
            .into_iter()
            .find(|d| d.resource == resource)
            .unwrap()
    }

    fn np(spec: Value) -> Value {
        let mut o = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": "d"}, "spec": spec});
        default_object(&def("networkpolicies"), &mut o, &[]);
        o
    }

    #[test]
    fn policy_types_default_like_upstream() {
        assert_eq!(
            np(json!({"podSelector": {}}))["spec"]["policyTypes"],
            json!(["Ingress"])
        );
        assert_eq!(
            np(json!({"egress": [{}]}))["spec"]["policyTypes"],
            json!(["Ingress", "Egress"])
        );
        assert_eq!(
            np(json!({"egress": []}))["spec"]["policyTypes"],
            json!(["Ingress"])
        );
        assert_eq!(
            np(json!({"policyTypes": ["Egress"], "egress": [{}]}))["spec"]["policyTypes"],
            json!(["Egress"])
        );
        assert_eq!(
            np(json!({"ingress": [{"ports": [{"port": 80}]}]}))["spec"]["ingress"][0]["ports"][0]["protocol"],
            "TCP"
        );
    }

    fn np_errors(spec: Value) -> Vec<String> {
        validate(&def("networkpolicies"), &np(spec))
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn network_policy_validation() {
        assert!(np_errors(json!({"ingress": [{"from": [{"podSelector": {}}]}]})).is_empty());
        assert_eq!(
            np_errors(json!({"ingress": [{"from": [{}]}]})),
            vec!["spec.ingress[0].from[0]: Required value: must specify a peer"]
        );
        assert_eq!(
            np_errors(
                json!({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]})
            ),
            vec!["spec.egress[0].to[0]: Forbidden: may not specify both ipBlock and another peer"]
        );
        assert_eq!(
            np_errors(
                json!({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8", "11.0.0.0/16", "10.1.0.0/16"]}}]}]})
            ),
            vec![
                "spec.egress[0].to[0].ipBlock.except[0]: Invalid value: \"10.0.0.0/8\": must be a strict subset of `cidr`",
                "spec.egress[0].to[0].ipBlock.except[1]: Invalid value: \"11.0.0.0/16\": must be a strict subset of `cidr`",
            ]
        );
        assert_eq!(
            np_errors(json!({"ingress": [{"ports": [{"port": 90, "endPort": 80}]}]})),
            vec![
                "spec.ingress[0].ports[0].endPort: Invalid value: 90: must be greater than or equal to `port`"
            ]
        );
        assert_eq!(
            np_errors(json!({"ingress": [{"ports": [{"port": "http", "endPort": 80}]}]})).len(),
            1
        );
        assert_eq!(
            np_errors(json!({"ingress": [{"ports": [{"protocol": "ICMP"}]}]})).len(),
            1
        );
        assert_eq!(
            np_errors(json!({"egress": [{"to": [{"ipBlock": {"cidr": "nope"}}]}]})).len(),
            1
        );
    }
}
