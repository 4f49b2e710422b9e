//! The runtime's `CNI_*` environment, parsed and checked per command.

use std::path::PathBuf;

use crate::error::CniError;

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }
}

/// The Kubernetes arguments kubelet's runtimes put in `CNI_ARGS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct K8sArgs {
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    pub infra_container_id: Option<String>,
}

/// One invocation's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    /// Set for ADD, DEL and CHECK.
    pub container_id: String,
    /// `CNI_NETNS`: required for ADD and CHECK, optional for DEL.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub k8s: K8sArgs,
}

/// Parses the environment through `get` (so tests need not touch the real one).
pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<Invocation, CniError> {
    let non_empty = |k: &str| get(k).filter(|v| !v.is_empty());
    let command = match non_empty("CNI_COMMAND") {
        None => {
            return Err(CniError::invalid_env(
                "CNI_COMMAND is not set (this program is a CNI plugin, run by a container runtime)",
            ));
        }
        Some(c) => Command::parse(&c).ok_or_else(|| {
            CniError::invalid_env(format!(
                "CNI_COMMAND={c:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION"
            ))
        })?,
    };
    let attachment = matches!(command, Command::Add | Command::Del | Command::Check);
    let mut inv = Invocation {
        command,
        container_id: String::new(),
        netns: non_empty("CNI_NETNS").map(PathBuf::from),
        ifname: String::new(),
        k8s: parse_args(&get("CNI_ARGS").unwrap_or_default())?,
    };
    if !attachment {
        return Ok(inv);
    }
    let mut missing = Vec::new();
    match non_empty("CNI_CONTAINERID") {
        Some(id) if valid_container_id(&id) => inv.container_id = id,
        Some(id) => {
            return Err(CniError::invalid_env(format!(
                "CNI_CONTAINERID={id:?} is not valid (letters, digits, '_', '.', '-', starting with a letter or digit)"
            )));
        }
        None => missing.push("CNI_CONTAINERID"),
    }
    match non_empty("CNI_IFNAME") {
        Some(name) if valid_ifname(&name) => inv.ifname = name,
        Some(name) => {
            return Err(CniError::invalid_env(format!(
                "CNI_IFNAME={name:?} is not a valid interface name (1 to 15 characters, no '/', ':' or spaces, not '.' or '..')"
            )));
        }
        None => missing.push("CNI_IFNAME"),
    }
    if command != Command::Del && inv.netns.is_none() {
        missing.push("CNI_NETNS");
    }
    if !missing.is_empty() {
        return Err(CniError::invalid_env(format!(
            "{} not set (required for {command:?})",
            missing.join(", ")
        )));
    }
    Ok(inv)
}

/// `CNI_ARGS`: `K=V;K=V`. Unknown keys are ignored (runtimes pass
/// `IgnoreUnknown=1` and keys for other plugins).
pub fn parse_args(s: &str) -> Result<K8sArgs, CniError> {
    let mut k8s = K8sArgs::default();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(CniError::invalid_env(format!(
                "CNI_ARGS: {pair:?} is not KEY=VALUE"
            )));
        };
        let v = (!v.is_empty()).then(|| v.to_string());
        match k {
            "K8S_POD_NAMESPACE" => k8s.pod_namespace = v,
            "K8S_POD_NAME" => k8s.pod_name = v,
            "K8S_POD_UID" => k8s.pod_uid = v,
            "K8S_POD_INFRA_CONTAINER_ID" => k8s.infra_container_id = v,
            _ => {}
        }
    }
    Ok(k8s)
}

fn valid_container_id(id: &str) -> bool {
    id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn parses_an_add_with_kubernetes_args() {
        let inv = parse(env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=front-0;K8S_POD_UID=u-1;K8S_POD_INFRA_CONTAINER_ID=abc123",
            ),
        ]))
        .unwrap();
        assert_eq!(inv.command, Command::Add);
        assert_eq!(inv.container_id, "abc123");
        assert_eq!(inv.netns, Some(PathBuf::from("/run/netns/x")));
        assert_eq!(inv.k8s.pod_namespace.as_deref(), Some("web"));
        assert_eq!(inv.k8s.pod_name.as_deref(), Some("front-0"));
        assert_eq!(inv.k8s.pod_uid.as_deref(), Some("u-1"));
    }

    #[test]
    fn names_every_missing_variable() {
        let e = parse(env(&[("CNI_COMMAND", "ADD")])).unwrap_err();
        assert_eq!(e.code, 4);
        for v in ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"] {
            assert!(e.msg.contains(v), "{}", e.msg);
        }
        // DEL does not need a namespace.
        let inv = parse(env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .unwrap();
        assert_eq!(inv.netns, None);
    }

    #[test]
    fn rejects_bad_values_by_name() {
        let e = parse(env(&[("CNI_COMMAND", "ATTACH")])).unwrap_err();
        assert!(e.msg.contains("CNI_COMMAND=\"ATTACH\""), "{}", e.msg);
        let e = parse(env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "-bad"),
            ("CNI_NETNS", "/x"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .unwrap_err();
        assert!(e.msg.contains("CNI_CONTAINERID"), "{}", e.msg);
        let e = parse(env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_NETNS", "/x"),
            ("CNI_IFNAME", "a-very-long-interface-name"),
        ]))
        .unwrap_err();
        assert!(e.msg.contains("CNI_IFNAME"), "{}", e.msg);
        let e = parse_args("K8S_POD_NAME").unwrap_err();
        assert!(e.msg.contains("CNI_ARGS"), "{}", e.msg);
    }

    #[test]
    fn version_status_and_gc_need_no_attachment() {
        for c in ["VERSION", "STATUS", "GC"] {
            assert!(parse(env(&[("CNI_COMMAND", c)])).is_ok(), "{c}");
        }
    }
}
