//! Bringing the kernel's VXLAN device and its peer entries to what
//! [`vxlan`](super::vxlan) plans (effects; the decisions are pure there).

use super::netlink::{OverlayNetlink, OverlayNetlinkError, vxlan_link_message};
use super::vxlan::{self, Peer, VxlanDevice};

/// What one reconcile changed (zero everywhere: the kernel was right).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VxlanChanges {
    pub index: u32,
    pub device: usize,
    pub peers: usize,
}

/// Removes the device called `name` if it exists; `true` if it did.
pub async fn remove_vxlan(nl: &OverlayNetlink, name: &str) -> Result<bool, OverlayNetlinkError> {
    let have = nl.vxlan(name).await?;
    let plan = vxlan::plan_device(None, have.as_ref());
    if let Some(index) = plan.delete {
        tracing::info!(device = name, "removing the VXLAN device");
        nl.delete_link(index).await?;
        return Ok(true);
    }
    Ok(false)
}

/// Makes the device `want` and its entries for exactly `peers` exist,
/// adopting what is already right.
pub async fn reconcile_vxlan(
    nl: &OverlayNetlink,
    want: &VxlanDevice,
    peers: &[Peer],
) -> Result<VxlanChanges, OverlayNetlinkError> {
    let have = nl.vxlan(&want.name).await?;
    let plan = vxlan::plan_device(Some(want), have.as_ref());
    let mut changes = VxlanChanges::default();
    if let Some(index) = plan.delete {
        tracing::info!(device = %want.name, "the device's VNI, port, local address or learning differ: recreating it");
        nl.delete_link(index).await?;
        changes.device += 1;
    }
    if plan.create {
        tracing::info!(device = %want.name, local = %want.local, mtu = want.mtu, "creating the VXLAN device");
        nl.create_link(vxlan_link_message(want)?, &want.name)
            .await?;
        changes.device += 1;
    } else if let Some(h) = &have
        && (plan.set_mtu.is_some() || plan.set_mac.is_some() || plan.set_up)
    {
        tracing::info!(device = %want.name, mtu = ?plan.set_mtu, mac = ?plan.set_mac.map(|m| m.to_string()), up = plan.set_up, "fixing the VXLAN device");
        nl.set_link(h.index, plan.set_mtu, plan.set_mac, plan.set_up)
            .await?;
        changes.device += 1;
    }
    let index = match (&have, plan.create) {
        (Some(h), false) => h.index,
        _ => nl
            .vxlan(&want.name)
            .await?
            .map(|h| h.index)
            .ok_or_else(|| {
                OverlayNetlinkError::Invalid(format!("{} vanished after creation", want.name))
            })?,
    };
    changes.index = index;
    for (ip, p) in &plan.del_addrs {
        nl.del_address(index, *ip, *p).await?;
        changes.device += 1;
    }
    if let Some((ip, p)) = plan.add_addr {
        nl.add_address(index, ip, p).await?;
        changes.device += 1;
    }

    let plan = vxlan::plan_peers(peers, &nl.neighbours(index).await?, &nl.fdb(index).await?);
    if !plan.is_empty() {
        tracing::info!(?plan, "updating VXLAN peers");
    }
    // FDB before neighbours when adding (a neighbour entry without its FDB
    // entry blackholes), neighbours before FDB when removing.
    for ip in &plan.neigh_del {
        nl.del_neighbour(index, *ip).await?;
    }
    for (mac, dst) in &plan.fdb_del {
        nl.del_fdb(index, *mac, *dst).await?;
    }
    for (mac, dst) in &plan.fdb_set {
        nl.set_fdb(index, *mac, *dst).await?;
    }
    for (ip, mac) in &plan.neigh_set {
        nl.set_neighbour(index, *ip, *mac).await?;
    }
    changes.peers =
        plan.neigh_set.len() + plan.neigh_del.len() + plan.fdb_set.len() + plan.fdb_del.len();
    Ok(changes)
}
