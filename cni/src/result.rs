//! The spec's ADD result, read from `prevResult` and written per version.
//!
//! 1.1.0 added `mtu`, `socketPath` and `pciID` to interfaces and `mtu`,
//! `advmss`, `priority`, `table` and `scope` to routes; a 1.0.0 result carries
//! none of them.

use serde::{Deserialize, Serialize};

use crate::error::CniError;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    #[serde(rename = "pciID", default, skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR notation.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self == &Dns::default()
    }
}

/// Whether a version has the 1.1.0 additions.
pub fn has_v1_1_fields(cni_version: &str) -> bool {
    cni_version != "1.0.0"
}

impl CniResult {
    /// Reads a `prevResult`.
    pub fn from_value(v: &serde_json::Value) -> Result<CniResult, CniError> {
        serde_json::from_value(v.clone())
            .map_err(|e| CniError::decode(format!("prevResult is not a CNI result: {e}")))
    }

    /// The result as the spec's JSON for `cni_version`.
    pub fn render(&self, cni_version: &str) -> serde_json::Value {
        let mut r = self.clone();
        r.cni_version = cni_version.to_string();
        if !has_v1_1_fields(cni_version) {
            for i in &mut r.interfaces {
                i.mtu = None;
                i.socket_path = None;
                i.pci_id = None;
            }
            for route in &mut r.routes {
                route.mtu = None;
                route.advmss = None;
                route.priority = None;
                route.table = None;
                route.scope = None;
            }
        }
        serde_json::to_value(&r).unwrap_or_default()
    }

    /// Appends `other`'s interfaces, addresses and routes after this result's,
    /// renumbering `other`'s interface indexes: how a plugin that is not first
    /// in a chain adds to its `prevResult`.
    pub fn merge(mut self, other: CniResult) -> CniResult {
        let offset = self.interfaces.len();
        self.interfaces.extend(other.interfaces);
        self.ips.extend(other.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + offset);
            ip
        }));
        self.routes.extend(other.routes);
        if self.dns.is_empty() {
            self.dns = other.dns;
        }
        self
    }

    /// The addresses this result puts on the interface `ifname` in `sandbox`.
    pub fn addresses_on(&self, ifname: &str, sandbox: &str) -> Vec<String> {
        self.ips
            .iter()
            .filter(|ip| {
                ip.interface
                    .and_then(|i| self.interfaces.get(i))
                    .is_some_and(|i| i.name == ifname && i.sandbox.as_deref() == Some(sandbox))
            })
            .map(|ip| ip.address.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> CniResult {
        CniResult {
            cni_version: String::new(),
            interfaces: vec![
                Interface {
                    name: "mgy0123456789a".into(),
                    mac: Some("ee:ee:ee:ee:ee:ee".into()),
                    mtu: Some(1450),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("02:11:22:33:44:55".into()),
                    mtu: Some(1450),
                    sandbox: Some("/run/netns/p".into()),
                    ..Default::default()
                },
            ],
            ips: vec![IpConfig {
                address: "10.244.0.5/32".into(),
                gateway: Some("169.254.1.1".into()),
                interface: Some(1),
            }],
            routes: vec![
                Route {
                    dst: "169.254.1.1/32".into(),
                    scope: Some(253),
                    ..Default::default()
                },
                Route {
                    dst: "0.0.0.0/0".into(),
                    gw: Some("169.254.1.1".into()),
                    ..Default::default()
                },
            ],
            dns: Dns::default(),
        }
    }

    #[test]
    fn renders_1_1_0_with_mtu_and_scope() {
        assert_eq!(
            sample().render("1.1.0"),
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [
                    {"name": "mgy0123456789a", "mac": "ee:ee:ee:ee:ee:ee", "mtu": 1450},
                    {"name": "eth0", "mac": "02:11:22:33:44:55", "mtu": 1450, "sandbox": "/run/netns/p"}
                ],
                "ips": [{"address": "10.244.0.5/32", "gateway": "169.254.1.1", "interface": 1}],
                "routes": [
                    {"dst": "169.254.1.1/32", "scope": 253},
                    {"dst": "0.0.0.0/0", "gw": "169.254.1.1"}
                ],
                "dns": {}
            })
        );
    }

    #[test]
    fn renders_1_0_0_without_the_1_1_0_fields() {
        let v = sample().render("1.0.0");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert!(v["interfaces"][1].get("mtu").is_none());
        assert!(v["routes"][0].get("scope").is_none());
        assert_eq!(v["interfaces"][1]["sandbox"], "/run/netns/p");
    }

    #[test]
    fn merging_renumbers_interface_indexes_and_keeps_earlier_dns() {
        let prev = CniResult {
            interfaces: vec![Interface {
                name: "lo".into(),
                sandbox: Some("/run/netns/p".into()),
                ..Default::default()
            }],
            ips: vec![IpConfig {
                address: "127.0.0.1/8".into(),
                gateway: None,
                interface: Some(0),
            }],
            dns: Dns {
                nameservers: vec!["10.96.0.10".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let merged = prev.merge(sample());
        assert_eq!(merged.interfaces.len(), 3);
        assert_eq!(merged.ips[1].interface, Some(2));
        assert_eq!(merged.dns.nameservers, ["10.96.0.10"]);
        assert_eq!(
            merged.addresses_on("eth0", "/run/netns/p"),
            ["10.244.0.5/32"]
        );
        assert!(merged.addresses_on("eth0", "/run/netns/other").is_empty());
    }

    #[test]
    fn reads_a_result_written_by_another_plugin() {
        let v = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/run/netns/p"}],
            "ips": [{"address": "fd00::5/128", "interface": 0}],
            "dns": {"nameservers": ["fd00::a"]}
        });
        let r = CniResult::from_value(&v).unwrap();
        assert_eq!(r.ips[0].address, "fd00::5/128");
        assert_eq!(r.dns.nameservers, ["fd00::a"]);
        let e = CniResult::from_value(&json!({"ips": "x"})).unwrap_err();
        assert_eq!(e.code, 6);
    }
}
