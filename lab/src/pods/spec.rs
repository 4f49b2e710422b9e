//! What a pod is asked to be, and parsing the CLI's compact forms
//! (`tcp:80`, `http=tcp:80`, `8080=tcp:80`, `k=v,k2=v2`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A transport protocol a pod serves or a probe uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// As Kubernetes spells it (`TCP`, `UDP`).
    pub fn k8s(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

impl FromStr for Protocol {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Protocol, SpecError> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            _ => Err(SpecError(format!("protocol {s:?} is not tcp or udp"))),
        }
    }
}

/// A port a pod serves: `tcp:80`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortSpec {
    pub protocol: Protocol,
    pub port: u16,
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.protocol, self.port)
    }
}

impl FromStr for PortSpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<PortSpec, SpecError> {
        let (proto, port) = s
            .split_once(':')
            .ok_or_else(|| SpecError(format!("{s:?} is not PROTOCOL:PORT (e.g. tcp:80)")))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| SpecError(format!("{s:?}: port must be 1 to 65535")))?;
        Ok(PortSpec {
            protocol: proto.parse()?,
            port,
        })
    }
}

/// A malformed value on the command line or in a [`PodSpec`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

/// A pod to create.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Ports the pod's server answers on.
    pub serve: Vec<PortSpec>,
    /// Container port names (served too), so policies can name them.
    pub named_ports: BTreeMap<String, PortSpec>,
    /// `hostPort` mappings: host port -> container port (served too).
    pub host_ports: BTreeMap<u16, PortSpec>,
}

impl PodSpec {
    pub fn new(namespace: &str, name: &str, node: &str) -> PodSpec {
        PodSpec {
            namespace: namespace.to_string(),
            name: name.to_string(),
            node: node.to_string(),
            ..Default::default()
        }
    }

    pub fn label(mut self, k: &str, v: &str) -> PodSpec {
        self.labels.insert(k.to_string(), v.to_string());
        self
    }

    pub fn annotation(mut self, k: &str, v: &str) -> PodSpec {
        self.annotations.insert(k.to_string(), v.to_string());
        self
    }

    pub fn serve(mut self, protocol: Protocol, port: u16) -> PodSpec {
        self.serve.push(PortSpec { protocol, port });
        self
    }

    pub fn named_port(mut self, name: &str, protocol: Protocol, port: u16) -> PodSpec {
        self.named_ports
            .insert(name.to_string(), PortSpec { protocol, port });
        self
    }

    pub fn host_port(mut self, host_port: u16, protocol: Protocol, port: u16) -> PodSpec {
        self.host_ports
            .insert(host_port, PortSpec { protocol, port });
        self
    }

    /// Every port the server answers on, once each, sorted.
    pub fn served_ports(&self) -> Vec<PortSpec> {
        let mut all: Vec<PortSpec> = self
            .serve
            .iter()
            .chain(self.named_ports.values())
            .chain(self.host_ports.values())
            .copied()
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// Checks names before anything is created.
    pub fn validate(&self) -> Result<(), SpecError> {
        check_dns_label("namespace", &self.namespace)?;
        check_dns_subdomain("pod name", &self.name)?;
        for name in self.named_ports.keys() {
            // IANA_SVC_NAME: at most 15 lowercase alphanumerics and '-', a letter.
            let ok = !name.is_empty()
                && name.len() <= 15
                && name.chars().any(|c| c.is_ascii_lowercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !name.starts_with('-')
                && !name.ends_with('-');
            if !ok {
                return Err(SpecError(format!(
                    "port name {name:?} is not valid (1-15 lowercase letters, digits and '-', with a letter)"
                )));
            }
        }
        let mut named: BTreeMap<PortSpec, &str> = BTreeMap::new();
        for (n, p) in &self.named_ports {
            if let Some(other) = named.insert(*p, n) {
                return Err(SpecError(format!(
                    "port {p} is named both {other:?} and {n:?}"
                )));
            }
        }
        Ok(())
    }
}

/// `NS/NAME`.
pub fn parse_pod_ref(s: &str) -> Result<(String, String), SpecError> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(SpecError(format!("{s:?} is not NAMESPACE/NAME"))),
    }
}

/// `k=v,k2=v2` (also accepts several arguments each holding such a list).
pub fn parse_key_values(items: &[String]) -> Result<BTreeMap<String, String>, SpecError> {
    let mut out = BTreeMap::new();
    for item in items
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
    {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| SpecError(format!("{item:?} is not KEY=VALUE")))?;
        if k.is_empty() {
            return Err(SpecError(format!("{item:?} has an empty key")));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// `tcp:80,udp:81`.
pub fn parse_ports(items: &[String]) -> Result<Vec<PortSpec>, SpecError> {
    items
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

/// `NAME=tcp:80` (or `8080=tcp:80` for host ports, parsed by the caller).
pub fn parse_assignment(s: &str) -> Result<(String, PortSpec), SpecError> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| SpecError(format!("{s:?} is not NAME=PROTOCOL:PORT")))?;
    Ok((k.to_string(), v.parse()?))
}

fn check_dns_label(what: &str, s: &str) -> Result<(), SpecError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(SpecError(format!(
            "{what} {s:?} is not valid (lowercase letters, digits and '-', at most 63)"
        )))
    }
}

fn check_dns_subdomain(what: &str, s: &str) -> Result<(), SpecError> {
    if s.len() > 253 || s.split('.').any(|l| check_dns_label(what, l).is_err()) {
        return Err(SpecError(format!(
            "{what} {s:?} is not valid (lowercase letters, digits, '-' and '.', at most 253)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compact_forms() {
        assert_eq!(
            parse_ports(&["tcp:80,udp:81".into(), "TCP:8080".into()]).unwrap(),
            [
                PortSpec {
                    protocol: Protocol::Tcp,
                    port: 80
                },
                PortSpec {
                    protocol: Protocol::Udp,
                    port: 81
                },
                PortSpec {
                    protocol: Protocol::Tcp,
                    port: 8080
                },
            ]
        );
        assert!(parse_ports(&["sctp:80".into()]).is_err());
        assert!(parse_ports(&["tcp:0".into()]).is_err());
        assert!(parse_ports(&["80".into()]).is_err());
        let kv = parse_key_values(&["app=web,tier=front".into(), "x=".into()]).unwrap();
        assert_eq!(kv["app"], "web");
        assert_eq!(kv["x"], "");
        assert!(parse_key_values(&["novalue".into()]).is_err());
        assert_eq!(
            parse_assignment("http=tcp:80").unwrap(),
            (
                "http".to_string(),
                PortSpec {
                    protocol: Protocol::Tcp,
                    port: 80
                }
            )
        );
        assert_eq!(parse_pod_ref("x/a").unwrap(), ("x".into(), "a".into()));
        for bad in ["x", "/a", "x/", "x/a/b"] {
            assert!(parse_pod_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn served_ports_include_named_and_host_ports_once() {
        let spec = PodSpec::new("x", "a", "node1")
            .serve(Protocol::Tcp, 80)
            .named_port("http", Protocol::Tcp, 80)
            .named_port("dns", Protocol::Udp, 53)
            .host_port(8080, Protocol::Tcp, 81);
        assert_eq!(
            spec.served_ports(),
            [
                PortSpec {
                    protocol: Protocol::Tcp,
                    port: 80
                },
                PortSpec {
                    protocol: Protocol::Tcp,
                    port: 81
                },
                PortSpec {
                    protocol: Protocol::Udp,
                    port: 53
                },
            ]
        );
        spec.validate().unwrap();
    }

    #[test]
    fn validation_names_the_bad_value() {
        let e = PodSpec::new("X", "a", "n").validate().unwrap_err();
        assert!(e.0.contains("namespace \"X\""), "{e}");
        let e = PodSpec::new("x", "a_b", "n").validate().unwrap_err();
        assert!(e.0.contains("pod name"), "{e}");
        let e = PodSpec::new("x", "a", "n")
            .named_port("Http", Protocol::Tcp, 80)
            .validate()
            .unwrap_err();
        assert!(e.0.contains("\"Http\""), "{e}");
        let e = PodSpec::new("x", "a", "n")
            .named_port("a", Protocol::Tcp, 80)
            .named_port("b", Protocol::Tcp, 80)
            .validate()
            .unwrap_err();
        assert!(e.0.contains("tcp:80"), "{e}");
        PodSpec::new("x", "web-0.v1", "n").validate().unwrap();
    }
}
