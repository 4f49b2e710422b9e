//! The VXLAN device and its per-peer entries as they should be, and what to
//! change in the kernel to get there (pure).
//!
//! No learning and no multicast: every remote VTEP is known from its Node's
//! annotations, so each gets a permanent neighbour entry (VTEP address →
//! VTEP MAC, so the kernel never ARPs over the tunnel) and an FDB entry
//! (VTEP MAC → node address, where the UDP packet goes).

use super::encap::{Encap, decide};
use super::nodes::{Mac, Vtep};
use super::resolver::OverlayInputs;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Calico's VNI and the IANA port.
pub const VXLAN_VNI: u32 = 4096;
pub const VXLAN_PORT: u16 = 4789;

/// The device as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanDevice {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    /// Our node address: the outer source.
    pub local: IpAddr,
    pub mtu: u32,
    pub mac: Mac,
    /// Our VTEP address, put on the device as a host address.
    pub addr: IpAddr,
}

/// What the kernel has under the device's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelVxlan {
    pub index: u32,
    /// `None`: the link exists but is no VXLAN device (someone else's).
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub local: Option<IpAddr>,
    pub learning: Option<bool>,
    pub mtu: u32,
    pub mac: Option<Mac>,
    pub up: bool,
    pub addrs: BTreeSet<(IpAddr, u8)>,
}

/// Changes to the device itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DevicePlan {
    /// Delete the link first (its VNI, port, local address or learning
    /// differ, which cannot be changed in place).
    pub delete: Option<u32>,
    pub create: bool,
    pub set_mtu: Option<u32>,
    pub set_mac: Option<Mac>,
    pub set_up: bool,
    pub add_addr: Option<(IpAddr, u8)>,
    pub del_addrs: Vec<(IpAddr, u8)>,
}

fn is_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v) if v.segments()[0] & 0xffc0 == 0xfe80)
}

fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// From what the kernel has to `want` (`None`: no device wanted).
pub fn plan_device(want: Option<&VxlanDevice>, have: Option<&KernelVxlan>) -> DevicePlan {
    let mut plan = DevicePlan::default();
    let Some(want) = want else {
        plan.delete = have.map(|h| h.index);
        return plan;
    };
    let want_addr = (want.addr, host_prefix(want.addr));
    let reusable = have.filter(|h| {
        h.vni == Some(want.vni)
            && h.port == Some(want.port)
            && h.local == Some(want.local)
            && h.learning == Some(false)
    });
    match (have, reusable) {
        (_, Some(h)) => {
            plan.set_mtu = (h.mtu != want.mtu).then_some(want.mtu);
            plan.set_mac = (h.mac != Some(want.mac)).then_some(want.mac);
            plan.set_up = !h.up;
            plan.add_addr = (!h.addrs.contains(&want_addr)).then_some(want_addr);
            plan.del_addrs = h
                .addrs
                .iter()
                .filter(|a| **a != want_addr && !is_link_local(a.0))
                .copied()
                .collect();
        }
        (h, None) => {
            plan.delete = h.map(|h| h.index);
            plan.create = true;
            plan.add_addr = Some(want_addr);
        }
    }
    plan
}

/// A remote VTEP we send to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub vtep: Vtep,
    /// The remote node's address: the outer destination.
    pub node: IpAddr,
}

/// Every remote node some pool of the family reaches through VXLAN, with
/// its VTEP (nodes without one yet are left out until they publish it).
pub fn wanted_peers(inputs: &OverlayInputs, v4: bool) -> Vec<Peer> {
    let mut out = BTreeSet::new();
    let pools: Vec<_> = inputs
        .pools
        .iter()
        .filter(|p| p.cidr.addr().is_ipv4() == v4 && p.vxlan_mode.is_on())
        .collect();
    for n in inputs.nodes.iter() {
        let (Some(addr), Some(vtep)) = (n.addr(v4), n.vtep(v4)) else {
            continue;
        };
        if pools
            .iter()
            .any(|p| decide(p, inputs.local.addr(v4), addr) == Encap::Vxlan)
        {
            out.insert(Peer {
                vtep: *vtep,
                node: addr.addr,
            });
        }
    }
    out.into_iter().collect()
}

/// Neighbour and FDB changes on the device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerPlan {
    pub neigh_set: Vec<(IpAddr, Mac)>,
    pub neigh_del: Vec<IpAddr>,
    pub fdb_set: Vec<(Mac, IpAddr)>,
    pub fdb_del: Vec<(Mac, IpAddr)>,
}

impl PeerPlan {
    pub fn is_empty(&self) -> bool {
        self.neigh_set.is_empty()
            && self.neigh_del.is_empty()
            && self.fdb_set.is_empty()
            && self.fdb_del.is_empty()
    }
}

/// `neighbours`: permanent neighbour entries on the device; `fdb`: its
/// FDB entries (MAC → destination). Only what differs is changed.
pub fn plan_peers(
    peers: &[Peer],
    neighbours: &BTreeMap<IpAddr, Mac>,
    fdb: &BTreeSet<(Mac, IpAddr)>,
) -> PeerPlan {
    let want_neigh: BTreeMap<IpAddr, Mac> =
        peers.iter().map(|p| (p.vtep.addr, p.vtep.mac)).collect();
    let want_fdb: BTreeSet<(Mac, IpAddr)> = peers.iter().map(|p| (p.vtep.mac, p.node)).collect();
    PeerPlan {
        neigh_set: want_neigh
            .iter()
            .filter(|(ip, mac)| neighbours.get(ip) != Some(mac))
            .map(|(ip, mac)| (*ip, *mac))
            .collect(),
        neigh_del: neighbours
            .keys()
            .filter(|ip| !want_neigh.contains_key(ip))
            .copied()
            .collect(),
        fdb_set: want_fdb.difference(fdb).copied().collect(),
        fdb_del: fdb.difference(&want_fdb).copied().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::encap::NodeAddr;
    use crate::overlay::encap::tests::pool;
    use crate::overlay::nodes::{NodeDirectory, NodeInfo};
    use margay_api::EncapMode;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn want() -> VxlanDevice {
        VxlanDevice {
            name: "vxlan.margay".into(),
            vni: VXLAN_VNI,
            port: VXLAN_PORT,
            local: ip("10.0.1.1"),
            mtu: 1450,
            mac: Mac([2, 0, 0, 0, 0, 1]),
            addr: ip("10.244.0.0"),
        }
    }

    fn have() -> KernelVxlan {
        KernelVxlan {
            index: 7,
            vni: Some(VXLAN_VNI),
            port: Some(VXLAN_PORT),
            local: Some(ip("10.0.1.1")),
            learning: Some(false),
            mtu: 1450,
            mac: Some(Mac([2, 0, 0, 0, 0, 1])),
            up: true,
            addrs: [(ip("10.244.0.0"), 32)].into(),
        }
    }

    #[test]
    fn a_right_device_is_left_alone() {
        assert_eq!(
            plan_device(Some(&want()), Some(&have())),
            DevicePlan::default()
        );
    }

    #[test]
    fn mtu_mac_state_and_addresses_are_fixed_in_place() {
        let mut h = have();
        h.mtu = 1500;
        h.mac = Some(Mac([2, 9, 9, 9, 9, 9]));
        h.up = false;
        h.addrs = [(ip("10.244.5.0"), 32), (ip("fe80::1"), 64)].into();
        let p = plan_device(Some(&want()), Some(&h));
        assert_eq!(p.delete, None);
        assert!(!p.create);
        assert_eq!(p.set_mtu, Some(1450));
        assert_eq!(p.set_mac, Some(want().mac));
        assert!(p.set_up);
        assert_eq!(p.add_addr, Some((ip("10.244.0.0"), 32)));
        assert_eq!(p.del_addrs, vec![(ip("10.244.5.0"), 32)]);
    }

    #[test]
    fn a_device_with_other_vni_port_local_or_learning_is_recreated() {
        for change in [
            |h: &mut KernelVxlan| h.vni = Some(1),
            |h: &mut KernelVxlan| h.port = Some(8472),
            |h: &mut KernelVxlan| h.local = Some("10.0.9.9".parse().expect("ip")),
            |h: &mut KernelVxlan| h.learning = Some(true),
            |h: &mut KernelVxlan| h.vni = None,
        ] {
            let mut h = have();
            change(&mut h);
            let p = plan_device(Some(&want()), Some(&h));
            assert_eq!(p.delete, Some(7));
            assert!(p.create);
        }
        let p = plan_device(Some(&want()), None);
        assert!(p.create && p.delete.is_none());
        assert_eq!(plan_device(None, Some(&have())).delete, Some(7));
        assert_eq!(plan_device(None, None), DevicePlan::default());
    }

    #[test]
    fn peers_are_the_nodes_a_vxlan_pool_tunnels_to() {
        let node = |name: &str, addr: &str, vtep: Option<u8>| NodeInfo {
            name: name.into(),
            ipv4: NodeAddr::parse(addr),
            vtep_v4: vtep.map(|m| Vtep {
                addr: ip(&format!("10.244.{m}.0")),
                mac: Mac([2, 0, 0, 0, 0, m]),
            }),
            ..NodeInfo::default()
        };
        let mut inputs = OverlayInputs {
            local: node("n1", "10.0.1.1/24", Some(0)),
            nodes: NodeDirectory::new([
                node("n2", "10.0.1.2/24", Some(1)),
                node("n3", "10.0.2.3/24", Some(2)),
                node("n4", "10.0.2.4/24", None),
            ]),
            pools: vec![pool(
                "10.244.0.0/16",
                EncapMode::CrossSubnet,
                EncapMode::Never,
                false,
            )],
            underlay_mtu_v4: 1500,
            underlay_mtu_v6: 1500,
        };
        let peers = wanted_peers(&inputs, true);
        assert_eq!(
            peers.iter().map(|p| p.node).collect::<Vec<_>>(),
            vec![ip("10.0.2.3")]
        );
        inputs.pools[0].vxlan_mode = EncapMode::Always;
        assert_eq!(wanted_peers(&inputs, true).len(), 2);
        inputs.pools[0].vxlan_mode = EncapMode::Never;
        assert!(wanted_peers(&inputs, true).is_empty());
    }

    #[test]
    fn peer_plan_changes_only_what_differs_and_removes_gone_nodes() {
        let peer = |m: u8, node: &str| Peer {
            vtep: Vtep {
                addr: ip(&format!("10.244.{m}.0")),
                mac: Mac([2, 0, 0, 0, 0, m]),
            },
            node: ip(node),
        };
        let peers = [peer(1, "10.0.2.1"), peer(2, "10.0.2.2")];
        let neighbours: BTreeMap<IpAddr, Mac> = [
            (ip("10.244.1.0"), Mac([2, 0, 0, 0, 0, 1])),
            (ip("10.244.2.0"), Mac([2, 0, 0, 0, 0, 9])),
            (ip("10.244.3.0"), Mac([2, 0, 0, 0, 0, 3])),
        ]
        .into();
        let fdb: BTreeSet<(Mac, IpAddr)> = [
            (Mac([2, 0, 0, 0, 0, 1]), ip("10.0.2.1")),
            (Mac([2, 0, 0, 0, 0, 2]), ip("10.0.2.9")),
        ]
        .into();
        let p = plan_peers(&peers, &neighbours, &fdb);
        assert_eq!(
            p.neigh_set,
            vec![(ip("10.244.2.0"), Mac([2, 0, 0, 0, 0, 2]))]
        );
        assert_eq!(p.neigh_del, vec![ip("10.244.3.0")]);
        assert_eq!(p.fdb_set, vec![(Mac([2, 0, 0, 0, 0, 2]), ip("10.0.2.2"))]);
        assert_eq!(p.fdb_del, vec![(Mac([2, 0, 0, 0, 0, 2]), ip("10.0.2.9"))]);
        let done = plan_peers(
            &peers,
            &peers.iter().map(|p| (p.vtep.addr, p.vtep.mac)).collect(),
            &peers.iter().map(|p| (p.vtep.mac, p.node)).collect(),
        );
        assert!(done.is_empty());
    }
}
