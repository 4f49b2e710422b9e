//! The network configuration the runtime passes on stdin (one plugin's
//! request configuration, derived from the conflist).

use std::path::PathBuf;
use std::time::Duration;

use margay_api::endpoint::{Attachment, DEFAULT_SOCKET, codes};
use serde_json::Value;

use crate::error::CniError;
use crate::result::{CniResult, Dns};

/// The CNI spec versions this plugin speaks.
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0.0", "1.1.0"];

/// How long the plugin waits for one answer from the agent unless configured:
/// `Ready` waits for the pod's routes and policy, which the agent bounds itself.
pub const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The plugin's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    /// The network's name (the conflist's `name`).
    pub name: String,
    /// `socket`: the agent's endpoint socket.
    pub socket: PathBuf,
    /// `agentTimeoutSeconds`.
    pub agent_timeout: Duration,
    /// `dns`: passed through into the result.
    pub dns: Dns,
    pub prev_result: Option<CniResult>,
    /// `cni.dev/valid-attachments` (GC).
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// The `cniVersion` of a configuration, if it has one (for error output when the
/// rest does not parse).
pub fn version_of(stdin: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(stdin)
        .ok()?
        .get("cniVersion")?
        .as_str()
        .map(str::to_string)
}

/// Parses and checks a configuration. Every error names the field.
pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
    let v: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::decode(format!(
            "the network configuration on stdin is not JSON: {e}"
        ))
    })?;
    let obj = v.as_object().ok_or_else(|| {
        CniError::decode("the network configuration on stdin is not a JSON object")
    })?;
    let string = |key: &str| -> Result<Option<String>, CniError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(CniError::invalid_config(format!(
                "network configuration field {key:?} must be a string, got {other}"
            ))),
        }
    };
    let cni_version = string("cniVersion")?.ok_or_else(|| {
        CniError::invalid_config("network configuration field \"cniVersion\" is missing")
    })?;
    if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
        return Err(CniError::new(
            codes::INCOMPATIBLE_VERSION,
            format!(
                "margay speaks CNI {}; the network configuration asks for cniVersion {cni_version:?}",
                SUPPORTED_VERSIONS.join(" and ")
            ),
        ));
    }
    let name = string("name")?.filter(|n| !n.is_empty()).ok_or_else(|| {
        CniError::invalid_config("network configuration field \"name\" is missing")
    })?;
    match string("type")?.as_deref() {
        Some("margay") => {}
        other => {
            return Err(CniError::invalid_config(format!(
                "network configuration field \"type\" is {other:?}; this plugin is \"margay\""
            )));
        }
    }
    if let Some(ipam) = obj.get("ipam") {
        return Err(CniError::new(
            codes::UNSUPPORTED_FIELD,
            format!(
                "network configuration field \"ipam\" ({ipam}) is not supported: margay-agent allocates pod addresses from IPPools (a pod can ask for an address or a pool with annotations; see docs/cni.md)"
            ),
        ));
    }
    let socket = match string("socket")? {
        Some(s) if s.starts_with('/') => PathBuf::from(s),
        Some(s) => {
            return Err(CniError::invalid_config(format!(
                "network configuration field \"socket\" must be an absolute path, got {s:?}"
            )));
        }
        None => PathBuf::from(DEFAULT_SOCKET),
    };
    let agent_timeout = match obj.get("agentTimeoutSeconds") {
        None | Some(Value::Null) => DEFAULT_AGENT_TIMEOUT,
        Some(Value::Number(n)) if n.as_f64().is_some_and(|s| s > 0.0 && s <= 3600.0) => {
            Duration::from_secs_f64(n.as_f64().unwrap_or(30.0))
        }
        Some(other) => {
            return Err(CniError::invalid_config(format!(
                "network configuration field \"agentTimeoutSeconds\" must be a number of seconds between 0 and 3600, got {other}"
            )));
        }
    };
    let dns = match obj.get("dns") {
        None | Some(Value::Null) => Dns::default(),
        Some(d) => serde_json::from_value(d.clone()).map_err(|e| {
            CniError::invalid_config(format!("network configuration field \"dns\": {e}"))
        })?,
    };
    let prev_result = match obj.get("prevResult") {
        None | Some(Value::Null) => None,
        Some(p) => Some(CniResult::from_value(p)?),
    };
    let valid_attachments = match obj.get("cni.dev/valid-attachments") {
        None | Some(Value::Null) => None,
        Some(list) => Some(parse_attachments(list)?),
    };
    Ok(NetConf {
        cni_version,
        name,
        socket,
        agent_timeout,
        dns,
        prev_result,
        valid_attachments,
    })
}

fn parse_attachments(list: &Value) -> Result<Vec<Attachment>, CniError> {
    let bad = |what: String| {
        CniError::invalid_config(format!(
            "network configuration field \"cni.dev/valid-attachments\": {what}"
        ))
    };
    let items = list
        .as_array()
        .ok_or_else(|| bad(format!("must be a list, got {list}")))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let field = |k: &str| {
                item.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("entry {i} has no string {k:?}")))
            };
            Ok(Attachment {
                container_id: field("containerID")?,
                ifname: field("ifname")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(v: Value) -> Result<NetConf, CniError> {
        parse(v.to_string().as_bytes())
    }

    #[test]
    fn parses_the_fields_and_defaults() {
        let c = conf(json!({
            "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "margay",
            "socket": "/var/lib/lab/node1/cni.sock",
            "runtimeConfig": {"portMappings": []},
            "dns": {"nameservers": ["10.96.0.10"]}
        }))
        .unwrap();
        assert_eq!(c.cni_version, "1.0.0");
        assert_eq!(c.name, "k8s-pod-network");
        assert_eq!(c.socket, PathBuf::from("/var/lib/lab/node1/cni.sock"));
        assert_eq!(c.agent_timeout, DEFAULT_AGENT_TIMEOUT);
        assert_eq!(c.dns.nameservers, ["10.96.0.10"]);
        assert!(c.prev_result.is_none());
        let c = conf(
            json!({"cniVersion": "1.1.0", "name": "n", "type": "margay", "agentTimeoutSeconds": 2}),
        )
        .unwrap();
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.agent_timeout, Duration::from_secs(2));
    }

    #[test]
    fn refuses_other_versions_with_code_1() {
        let e = conf(json!({"cniVersion": "0.4.0", "name": "n", "type": "margay"})).unwrap_err();
        assert_eq!(e.code, 1);
        assert!(
            e.msg.contains("0.4.0") && e.msg.contains("1.0.0"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn names_the_bad_field() {
        let cases = [
            (json!({"name": "n", "type": "margay"}), 7, "cniVersion"),
            (json!({"cniVersion": "1.0.0", "type": "margay"}), 7, "name"),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "calico"}),
                7,
                "type",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "margay", "socket": "rel/x"}),
                7,
                "socket",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "margay", "agentTimeoutSeconds": -1}),
                7,
                "agentTimeoutSeconds",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "margay", "ipam": {"type": "host-local"}}),
                2,
                "ipam",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "margay", "cni.dev/valid-attachments": [{"ifname": "eth0"}]}),
                7,
                "containerID",
            ),
        ];
        for (v, code, field) in cases {
            let e = conf(v.clone()).unwrap_err();
            assert_eq!(e.code, code, "{v}");
            assert!(e.msg.contains(field), "{v}: {}", e.msg);
        }
        assert_eq!(parse(b"{not json").unwrap_err().code, 6);
    }

    #[test]
    fn reads_prev_result_and_valid_attachments() {
        let c = conf(json!({
            "cniVersion": "1.1.0", "name": "n", "type": "margay",
            "prevResult": {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.1/32"}]},
            "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]
        }))
        .unwrap();
        assert_eq!(c.prev_result.unwrap().ips[0].address, "10.0.0.1/32");
        assert_eq!(
            c.valid_attachments.unwrap(),
            [Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }]
        );
        assert_eq!(
            version_of(br#"{"cniVersion":"1.0.0"}"#).as_deref(),
            Some("1.0.0")
        );
    }
}
