//! The overlay task: from the datastore (nodes, pools) and the host's
//! addresses to the VXLAN device, its peers, our Node's tunnel annotations,
//! the resolver's inputs and the encapsulation overhead pods must leave room
//! for. One pass at a time; a pass runs when the datastore changes and
//! periodically (which repairs what someone changed by hand).
//!
//! On start it adopts what the kernel holds: a device with the right
//! VNI/port/local address is kept (only a wrong MTU, MAC, state or address is
//! fixed), and only wrong or stale neighbour/FDB entries are touched.

use super::dataplane::{reconcile_vxlan, remove_vxlan};
use super::encap::{Encap, max_overhead};
use super::host::{fill_prefixes, underlay_mtu};
use super::netlink::{OverlayNetlink, OverlayNetlinkError, ipip_link_message};
use super::nodes::{self, Mac, NodeDirectory, NodeInfo, Vtep};
use super::resolver::{IPIP_IFNAME, OverlayInputs, OverlayResolver, VXLAN_IFNAME};
use super::vxlan::{self, VXLAN_PORT, VXLAN_VNI, VxlanDevice};
use crate::calc::remote_routes::RouteResolver;
use crate::datastore::Datastore;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use margay_api::ResolvedPool;
use margay_ipam::store::kube::KubeStore;
use margay_ipam::{AddressRequest, AllocateRequest, Allocator};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The IPAM handle of a node's VXLAN tunnel address (Calico's naming).
pub fn vxlan_handle(node: &str) -> String {
    format!("vxlan-tunnel-addr-{node}")
}

/// The IPAM handle of a node's IPIP tunnel address.
pub fn ipip_handle(node: &str) -> String {
    format!("ipip-tunnel-addr-{node}")
}

/// Salt for the VTEP MAC of the IPv4 device (the IPv6 device would use 6).
const MAC_SALT_V4: u8 = 4;

/// Settings of the overlay task.
#[derive(Debug, Clone)]
pub struct OverlayConfig {
    pub node: String,
    /// Full pass this often even without changes (repairs).
    pub refresh_interval: Duration,
}

/// What the rest of the agent sees of overlay.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OverlayStatus {
    pub passes: u64,
    pub vxlan_device: bool,
    pub ipip_device: bool,
    /// Encapsulation overhead pods leave room for (as on `overhead`).
    pub overhead: u32,
    /// The last pass's problem, if it had one.
    pub error: Option<String>,
}

/// Handle to the overlay task (see the issue-7 split: routing's route
/// programmer takes `resolver` and `changed`).
pub struct OverlayHandle {
    pub resolver: Arc<dyn RouteResolver>,
    /// Bumped whenever the resolver's inputs change.
    pub changed: watch::Receiver<u64>,
    /// Bytes of encapsulation overhead pod MTUs must leave room for.
    pub overhead: watch::Receiver<u32>,
    pub status: watch::Receiver<OverlayStatus>,
    pub task: JoinHandle<()>,
}

/// Starts the overlay task on the current runtime. It waits for the
/// datastore to sync before touching anything.
pub fn start(
    cfg: OverlayConfig,
    datastore: Datastore,
    client: Client,
    allocator: Allocator<KubeStore>,
) -> Result<OverlayHandle, OverlayNetlinkError> {
    let netlink = OverlayNetlink::connect()?;
    let resolver = OverlayResolver::default();
    let (changed_tx, changed) = watch::channel(0u64);
    let (overhead_tx, overhead) = watch::channel(0u32);
    let (status_tx, status) = watch::channel(OverlayStatus::default());
    let mut worker = Worker {
        cfg,
        datastore,
        nodes_api: Api::all(client),
        allocator,
        netlink,
        resolver: resolver.clone(),
        vtep_v4: None,
        ipip_addr: None,
        passes: 0,
    };
    let task = tokio::spawn(async move {
        worker.datastore.wait_synced().await;
        let mut changes = worker.datastore.changes();
        let mut tick = tokio::time::interval(worker.cfg.refresh_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let (changed, outcome) = worker.pass().await;
            if let Err(e) = &outcome {
                tracing::warn!(error = %e, "overlay pass failed");
            }
            let overhead_now = max_overhead(&worker.datastore.resolved_pools());
            overhead_tx.send_if_modified(|o| std::mem::replace(o, overhead_now) != overhead_now);
            // Partial passes count too: what did change is worth re-resolving.
            if changed {
                changed_tx.send_modify(|g| *g += 1);
            }
            worker.passes += 1;
            let (vx, ipip) = (
                worker
                    .netlink
                    .vxlan(VXLAN_IFNAME)
                    .await
                    .ok()
                    .flatten()
                    .is_some(),
                worker.link_exists(IPIP_IFNAME).await,
            );
            status_tx.send_replace(OverlayStatus {
                passes: worker.passes,
                vxlan_device: vx,
                ipip_device: ipip,
                overhead: overhead_now,
                error: outcome.err().map(|e| e.to_string()),
            });
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tick.tick() => {}
            }
            // A burst of watch events makes one pass.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    Ok(OverlayHandle {
        resolver: Arc::new(resolver),
        changed,
        overhead,
        status,
        task,
    })
}

/// Hands overlay's encapsulation overhead to the dataplane (which works
/// out the pod MTU) whenever it changes.
pub async fn follow_overhead(
    mut overhead: watch::Receiver<u32>,
    dataplane: crate::dataplane::DataplaneHandle,
) {
    loop {
        let o = *overhead.borrow_and_update();
        let report = dataplane.set_encap_overhead(o).await;
        if let Some(e) = report.error {
            tracing::warn!(error = %e, overhead = o, "dataplane pass after an MTU overhead change failed");
        }
        if overhead.changed().await.is_err() {
            return;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error(transparent)]
    Netlink(#[from] OverlayNetlinkError),
    #[error("IPAM: allocating the {what} tunnel address: {source}")]
    Ipam {
        what: &'static str,
        source: margay_ipam::IpamError,
    },
    #[error("annotating Node {node}: {source}")]
    Annotate { node: String, source: kube::Error },
    #[error("{0}")]
    NoAddress(String),
}

struct Worker {
    cfg: OverlayConfig,
    datastore: Datastore,
    nodes_api: Api<Node>,
    allocator: Allocator<KubeStore>,
    netlink: OverlayNetlink,
    resolver: OverlayResolver,
    vtep_v4: Option<IpAddr>,
    ipip_addr: Option<IpAddr>,
    passes: u64,
}

impl Worker {
    async fn link_exists(&self, name: &str) -> bool {
        self.netlink
            .links()
            .await
            .map(|l| l.contains_key(name))
            .unwrap_or(false)
    }

    /// One pass: whether the resolver's inputs changed, and how it went.
    async fn pass(&mut self) -> (bool, Result<(), OverlayError>) {
        match self.pass_inner().await {
            Ok((changed, None)) => (changed, Ok(())),
            Ok((changed, Some(e))) => (changed, Err(e)),
            Err(e) => (false, Err(e)),
        }
    }

    async fn pass_inner(&mut self) -> Result<(bool, Option<OverlayError>), OverlayError> {
        let pools = self.datastore.resolved_pools();
        let me = self.cfg.node.clone();
        let all: Vec<NodeInfo> = self
            .datastore
            .nodes
            .state()
            .iter()
            .map(|n| NodeInfo::from_node(n))
            .collect();
        let mut local = all
            .iter()
            .find(|n| n.name == me)
            .cloned()
            .unwrap_or_else(|| NodeInfo {
                name: me.clone(),
                ..NodeInfo::default()
            });
        let addrs = self.netlink.addresses().await?;
        let links = self.netlink.links().await?;
        fill_prefixes(&mut local, &addrs);
        let underlay_v4 = underlay_mtu(local.ipv4.as_ref(), &addrs, &links);
        let underlay_v6 = underlay_mtu(local.ipv6.as_ref(), &addrs, &links);
        let mut inputs = OverlayInputs {
            local: local.clone(),
            nodes: NodeDirectory::new(all.into_iter().filter(|n| n.name != me)),
            pools: pools.clone(),
            underlay_mtu_v4: underlay_v4,
            underlay_mtu_v6: underlay_v6,
        };

        let mut first_error = None;
        match self.vxlan_v4(&mut inputs, &pools, underlay_v4).await {
            Ok(()) => {}
            Err(e) => first_error = Some(e),
        }
        if let Err(e) = self.ipip(&pools, underlay_v4).await {
            tracing::warn!(error = %e, "IPIP device");
            first_error.get_or_insert(e);
        }
        let changed = self.resolver.set(inputs);
        Ok((changed, first_error))
    }

    /// The IPv4 VXLAN device, our VTEP and annotations, and the peers.
    async fn vxlan_v4(
        &mut self,
        inputs: &mut OverlayInputs,
        pools: &[ResolvedPool],
        underlay: u32,
    ) -> Result<(), OverlayError> {
        let vx_pools: Vec<String> = pools
            .iter()
            .filter(|p| p.cidr.addr().is_ipv4() && p.vxlan_mode.is_on() && !p.disabled)
            .map(|p| p.name.clone())
            .collect();
        let wanted = !vx_pools.is_empty();
        if !wanted {
            remove_vxlan(&self.netlink, VXLAN_IFNAME).await?;
            if self.vtep_v4.take().is_some() || inputs.local.vtep_v4.is_some() {
                self.annotate(&[
                    (nodes::ANNOTATION_VXLAN_ADDR, None),
                    (nodes::ANNOTATION_VXLAN_MAC, None),
                ])
                .await?;
                if let Err(e) = self
                    .allocator
                    .release_handle(&vxlan_handle(&self.cfg.node), Some(&self.cfg.node))
                    .await
                {
                    tracing::warn!(error = %e, "could not release the VXLAN tunnel address");
                }
            }
            inputs.local.vtep_v4 = None;
            return Ok(());
        }
        let Some(local) = inputs.local.ipv4 else {
            return Err(OverlayError::NoAddress(format!(
                "Node {}: no IPv4 address known (annotation {} or status InternalIP): cannot run VXLAN",
                self.cfg.node,
                nodes::ANNOTATION_IPV4_ADDRESS
            )));
        };
        let addr =
            match self.vtep_v4 {
                Some(a) => a,
                None => {
                    let req = AllocateRequest {
                        handle: vxlan_handle(&self.cfg.node),
                        node: self.cfg.node.clone(),
                        namespace: None,
                        pod: None,
                        ipv4: Some(AddressRequest::Auto { pools: vx_pools }),
                        ipv6: None,
                    };
                    let a = self.allocator.allocate(&req).await.map_err(|source| {
                        OverlayError::Ipam {
                            what: "VXLAN",
                            source,
                        }
                    })?;
                    let ip = a.ipv4.map(|a| a.ip).ok_or_else(|| {
                        OverlayError::NoAddress("IPAM returned no IPv4 VXLAN tunnel address".into())
                    })?;
                    tracing::info!(%ip, "VXLAN tunnel address");
                    self.vtep_v4 = Some(ip);
                    ip
                }
            };
        let mac = Mac::for_node(&self.cfg.node, MAC_SALT_V4);
        let want = VxlanDevice {
            name: VXLAN_IFNAME.into(),
            vni: VXLAN_VNI,
            port: VXLAN_PORT,
            local: local.addr,
            mtu: underlay.saturating_sub(Encap::Vxlan.overhead(false)),
            mac,
            addr,
        };
        let vtep = Vtep { addr, mac };
        if inputs.local.vtep_v4 != Some(vtep) {
            let (a, m) = (addr.to_string(), mac.to_string());
            self.annotate(&[
                (nodes::ANNOTATION_VXLAN_ADDR, Some(a.as_str())),
                (nodes::ANNOTATION_VXLAN_MAC, Some(m.as_str())),
            ])
            .await?;
            inputs.local.vtep_v4 = Some(vtep);
        }
        let peers = vxlan::wanted_peers(inputs, true);
        reconcile_vxlan(&self.netlink, &want, &peers).await?;
        Ok(())
    }

    /// `tunl0` when some IPv4 pool uses IPIP: created (if the kernel can),
    /// MTU set, our tunnel address on it. Removal is left to the module's
    /// owner: `tunl0` is the kernel's fallback device and cannot be deleted.
    async fn ipip(&mut self, pools: &[ResolvedPool], underlay: u32) -> Result<(), OverlayError> {
        let ipip_pools: Vec<String> = pools
            .iter()
            .filter(|p| {
                p.cidr.addr().is_ipv4()
                    && p.ipip_mode.is_on()
                    && !p.vxlan_mode.is_on()
                    && !p.disabled
            })
            .map(|p| p.name.clone())
            .collect();
        if ipip_pools.is_empty() {
            return Ok(());
        }
        let mtu = underlay.saturating_sub(Encap::Ipip.overhead(false));
        let links = self.netlink.links().await?;
        let index = match links.get(IPIP_IFNAME) {
            Some((index, have_mtu)) => {
                if *have_mtu != mtu {
                    self.netlink.set_link(*index, Some(mtu), None, true).await?;
                }
                *index
            }
            None => {
                self.netlink
                    .create_link(ipip_link_message(IPIP_IFNAME, mtu), IPIP_IFNAME)
                    .await?;
                self.netlink
                    .links()
                    .await?
                    .get(IPIP_IFNAME)
                    .map(|(i, _)| *i)
                    .ok_or_else(|| {
                        OverlayError::NoAddress(format!("{IPIP_IFNAME} vanished after creation"))
                    })?
            }
        };
        let addr =
            match self.ipip_addr {
                Some(a) => a,
                None => {
                    let req = AllocateRequest {
                        handle: ipip_handle(&self.cfg.node),
                        node: self.cfg.node.clone(),
                        namespace: None,
                        pod: None,
                        ipv4: Some(AddressRequest::Auto { pools: ipip_pools }),
                        ipv6: None,
                    };
                    let a = self.allocator.allocate(&req).await.map_err(|source| {
                        OverlayError::Ipam {
                            what: "IPIP",
                            source,
                        }
                    })?;
                    let ip = a.ipv4.map(|a| a.ip).ok_or_else(|| {
                        OverlayError::NoAddress("IPAM returned no IPv4 IPIP tunnel address".into())
                    })?;
                    self.ipip_addr = Some(ip);
                    ip
                }
            };
        let has = self
            .netlink
            .addresses()
            .await?
            .iter()
            .any(|(ip, p, i)| *i == index && *ip == addr && *p == 32);
        if !has {
            self.netlink.add_address(index, addr, 32).await?;
        }
        let want = addr.to_string();
        let node_has = self
            .datastore
            .node(&self.cfg.node)
            .and_then(|n| n.metadata.annotations.clone())
            .and_then(|a| a.get(nodes::ANNOTATION_IPIP_ADDR).cloned());
        if node_has.as_deref() != Some(want.as_str()) {
            self.annotate(&[(nodes::ANNOTATION_IPIP_ADDR, Some(want.as_str()))])
                .await?;
        }
        Ok(())
    }

    /// JSON merge patch of our Node's annotations: only these keys (`None`
    /// removes one), never anyone else's.
    async fn annotate(&self, kv: &[(&str, Option<&str>)]) -> Result<(), OverlayError> {
        let ann: BTreeMap<&str, Option<&str>> = kv.iter().copied().collect();
        let patch = serde_json::json!({"metadata": {"annotations": ann}});
        self.nodes_api
            .patch(
                &self.cfg.node,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map(|_| ())
            .map_err(|source| OverlayError::Annotate {
                node: self.cfg.node.clone(),
                source,
            })
    }
}
