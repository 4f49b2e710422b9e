//! Local endpoints: one per pod network attachment, from CNI `Add` to `Del`.
//!
//! An endpoint is `Allocated` after `Add` (it holds addresses in IPAM, the
//! plugin is wiring the pod) and `Ready` after `Ready` (the host side exists
//! and must carry its routes and sysctls). Only ready endpoints want routes,
//! so a half-done ADD never gets a route to an interface that may never come.

use margay_api::endpoint::{Attachment, PodRef};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Key of an endpoint: `container_id/ifname`. Neither part may contain `/`
/// (CNI restricts container ids to `[A-Za-z0-9_.-]`, Linux interface names
/// exclude `/`), so the key splits back unambiguously.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EndpointKey(String);

impl EndpointKey {
    pub fn of(a: &Attachment) -> EndpointKey {
        EndpointKey(format!("{}/{}", a.container_id, a.ifname))
    }

    /// Parses a key (or an IPAM handle written by this agent) back.
    pub fn parse(s: &str) -> Option<EndpointKey> {
        let (cid, ifname) = s.split_once('/')?;
        let ok = !cid.is_empty()
            && !ifname.is_empty()
            && !ifname.contains('/')
            && cid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        ok.then(|| EndpointKey(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn attachment(&self) -> Attachment {
        let (cid, ifname) = self.0.split_once('/').unwrap_or((&self.0, ""));
        Attachment {
            container_id: cid.to_string(),
            ifname: ifname.to_string(),
        }
    }

    /// The IPAM handle of the attachment's addresses: the key itself.
    pub fn ipam_handle(&self) -> &str {
        &self.0
    }
}

/// Whether the plugin has finished wiring the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EndpointState {
    Allocated,
    Ready,
}

/// What the agent knows of one endpoint; also its on-disk record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub attachment: Attachment,
    pub pod: PodRef,
    pub host_interface: String,
    pub addresses: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub netns: String,
    pub state: EndpointState,
}

impl Endpoint {
    pub fn key(&self) -> EndpointKey {
        EndpointKey::of(&self.attachment)
    }

    /// Addresses with their host prefix, as the wire protocol carries them.
    pub fn address_strings(&self) -> Vec<String> {
        self.addresses.iter().map(|ip| host_cidr(*ip)).collect()
    }
}

/// `10.244.0.5/32`, `fd00::5/128`.
pub fn host_cidr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
}

/// A route the agent wants: the host route to one pod address through its
/// host-side interface.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WantedRoute {
    pub dst: IpAddr,
    pub interface: String,
}

/// All local endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointTable {
    endpoints: BTreeMap<EndpointKey, Endpoint>,
}

impl EndpointTable {
    pub fn new() -> EndpointTable {
        EndpointTable::default()
    }

    pub fn from_records(records: impl IntoIterator<Item = Endpoint>) -> EndpointTable {
        let mut t = EndpointTable::new();
        for e in records {
            t.upsert(e);
        }
        t
    }

    /// Insert or replace; returns whether anything changed.
    pub fn upsert(&mut self, e: Endpoint) -> bool {
        let key = e.key();
        if self.endpoints.get(&key) == Some(&e) {
            return false;
        }
        self.endpoints.insert(key, e);
        true
    }

    pub fn remove(&mut self, key: &EndpointKey) -> Option<Endpoint> {
        self.endpoints.remove(key)
    }

    pub fn get(&self, key: &EndpointKey) -> Option<&Endpoint> {
        self.endpoints.get(key)
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.values()
    }

    pub fn ready_count(&self) -> usize {
        self.iter()
            .filter(|e| e.state == EndpointState::Ready)
            .count()
    }

    /// The routes ready endpoints want, one per address. Should two endpoints
    /// claim one address (an IPAM bug or a stale record), the one whose key
    /// sorts first wins, so the answer does not depend on insertion order.
    pub fn wanted_routes(&self) -> BTreeMap<IpAddr, String> {
        let mut out = BTreeMap::new();
        for e in self.iter().filter(|e| e.state == EndpointState::Ready) {
            for ip in &e.addresses {
                out.entry(*ip).or_insert_with(|| e.host_interface.clone());
            }
        }
        out
    }

    /// Host-side interfaces of ready endpoints, with the address families
    /// they carry (for sysctls).
    pub fn ready_interfaces(&self) -> BTreeMap<String, Families> {
        let mut out: BTreeMap<String, Families> = BTreeMap::new();
        for e in self.iter().filter(|e| e.state == EndpointState::Ready) {
            let f = out.entry(e.host_interface.clone()).or_default();
            for ip in &e.addresses {
                match ip {
                    IpAddr::V4(_) => f.v4 = true,
                    IpAddr::V6(_) => f.v6 = true,
                }
            }
        }
        out
    }
}

/// Which address families an interface carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Families {
    pub v4: bool,
    pub v6: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn ep(cid: &str, pod: &str, ips: &[&str], state: EndpointState) -> Endpoint {
        Endpoint {
            attachment: Attachment {
                container_id: cid.into(),
                ifname: "eth0".into(),
            },
            pod: PodRef {
                namespace: "default".into(),
                name: pod.into(),
                uid: None,
            },
            host_interface: margay_api::endpoint::host_interface_name("default", pod),
            addresses: ips.iter().map(|s| s.parse().unwrap()).collect(),
            mac: None,
            netns: String::new(),
            state,
        }
    }

    #[test]
    fn keys_round_trip_and_reject_what_is_not_ours() {
        let k = EndpointKey::of(&Attachment {
            container_id: "abc-1.2_3".into(),
            ifname: "eth0".into(),
        });
        assert_eq!(k.as_str(), "abc-1.2_3/eth0");
        assert_eq!(EndpointKey::parse(k.as_str()), Some(k.clone()));
        assert_eq!(k.attachment().container_id, "abc-1.2_3");
        assert_eq!(k.attachment().ifname, "eth0");
        assert_eq!(EndpointKey::parse("vxlan-tunnel-addr-node1"), None);
        assert_eq!(EndpointKey::parse("a/b/c"), None);
        assert_eq!(EndpointKey::parse("a b/eth0"), None);
        assert_eq!(EndpointKey::parse("/eth0"), None);
    }

    #[test]
    fn only_ready_endpoints_want_routes_and_order_does_not_matter() {
        let a = ep("a", "pa", &["10.0.0.1", "fd00::1"], EndpointState::Ready);
        let b = ep("b", "pb", &["10.0.0.2"], EndpointState::Allocated);
        let c = ep("c", "pc", &["10.0.0.3"], EndpointState::Ready);
        let t1 = EndpointTable::from_records([a.clone(), b.clone(), c.clone()]);
        let t2 = EndpointTable::from_records([c.clone(), b, a.clone()]);
        assert_eq!(t1.wanted_routes(), t2.wanted_routes());
        let w = t1.wanted_routes();
        assert_eq!(w.len(), 3);
        assert_eq!(w[&"10.0.0.1".parse::<IpAddr>().unwrap()], a.host_interface);
        assert!(!w.contains_key(&"10.0.0.2".parse::<IpAddr>().unwrap()));
        let ifs = t1.ready_interfaces();
        assert_eq!(ifs[&a.host_interface], Families { v4: true, v6: true });
        assert_eq!(
            ifs[&c.host_interface],
            Families {
                v4: true,
                v6: false
            }
        );
        assert_eq!(t1.ready_count(), 2);
    }

    #[test]
    fn a_contested_address_goes_to_the_first_key_whatever_the_order() {
        let a = ep("a", "pa", &["10.0.0.1"], EndpointState::Ready);
        let b = ep("b", "pb", &["10.0.0.1"], EndpointState::Ready);
        let w1 = EndpointTable::from_records([a.clone(), b.clone()]).wanted_routes();
        let w2 = EndpointTable::from_records([b, a.clone()]).wanted_routes();
        assert_eq!(w1, w2);
        assert_eq!(w1.values().next(), Some(&a.host_interface));
    }

    #[test]
    fn spurious_updates_change_nothing() {
        let a = ep("a", "pa", &["10.0.0.1"], EndpointState::Ready);
        let mut t = EndpointTable::new();
        assert!(t.upsert(a.clone()));
        assert!(!t.upsert(a.clone()));
        assert!(t.remove(&a.key()).is_some());
        assert!(t.remove(&a.key()).is_none());
        assert!(t.is_empty());
    }
}
