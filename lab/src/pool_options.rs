//! The default pool's encapsulation and NAT outgoing (`margay-lab up
//! --encapsulation … --nat-outgoing`, or [`Lab::configure_default_pool`]
//! afterwards): a JSON merge patch of `default-ipv4-ippool`'s spec. The
//! agents follow pool changes (devices, routes, pod MTU for new pods).

use crate::LabError;
use crate::agents::DEFAULT_POOL_NAME;
use kube::api::{Api, Patch, PatchParams};
use margay_api::IPPool;
use std::path::Path;

/// Encapsulation of the default pool (names as on the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Encapsulation {
    /// No encapsulation: routed natively.
    #[default]
    Never,
    /// VXLAN to every other node.
    VxlanAlways,
    /// VXLAN only to nodes in another subnet.
    VxlanCrossSubnet,
    /// IP-in-IP to every other node.
    IpipAlways,
    /// IP-in-IP only to nodes in another subnet.
    IpipCrossSubnet,
}

impl Encapsulation {
    /// `(vxlanMode, ipipMode)` of the pool spec.
    pub fn modes(self) -> (&'static str, &'static str) {
        match self {
            Encapsulation::Never => ("Never", "Never"),
            Encapsulation::VxlanAlways => ("Always", "Never"),
            Encapsulation::VxlanCrossSubnet => ("CrossSubnet", "Never"),
            Encapsulation::IpipAlways => ("Never", "Always"),
            Encapsulation::IpipCrossSubnet => ("Never", "CrossSubnet"),
        }
    }
}

/// What to set on the default IPv4 pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolOptions {
    pub encapsulation: Encapsulation,
    pub nat_outgoing: bool,
}

impl PoolOptions {
    /// The merge patch for the pool.
    pub fn patch(&self) -> serde_json::Value {
        let (vxlan, ipip) = self.encapsulation.modes();
        serde_json::json!({"spec": {
            "vxlanMode": vxlan,
            "ipipMode": ipip,
            "natOutgoing": self.nat_outgoing,
        }})
    }
}

/// Patches the default IPv4 pool (on a thread of its own, so it works
/// inside or outside an async runtime).
pub fn configure_default_pool(kubeconfig: &Path, opts: PoolOptions) -> Result<(), LabError> {
    let kubeconfig = kubeconfig.to_path_buf();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LabError::ApiServer(format!("tokio runtime: {e}")))?;
        rt.block_on(async {
            let client = crate::nodes::client(&kubeconfig).await?;
            let pools: Api<IPPool> = Api::all(client);
            pools
                .patch(
                    DEFAULT_POOL_NAME,
                    &PatchParams::default(),
                    &Patch::Merge(opts.patch()),
                )
                .await
                .map(|_| ())
                .map_err(|e| {
                    LabError::ApiServer(format!("patching IPPool {DEFAULT_POOL_NAME}: {e}"))
                })
        })
    })
    .join()
    .map_err(|_| LabError::ApiServer("patching the default pool panicked".into()))?
}

/// Static routes to every other node's IPAM blocks on every node, the way
/// Margay's route programmer resolves them (`via VTEP dev vxlan.margay
/// onlink` when `encapsulation` tunnels to that node, `via NODE` otherwise),
/// with `ip route replace … proto 88` so routes already programmed the same
/// are kept. Stands in for BGP in tests and benchmarks of the overlay until
/// routes are distributed by the agents themselves. Returns the number of
/// routes written.
pub fn install_block_routes(
    lab: &crate::Lab,
    encapsulation: Encapsulation,
) -> Result<usize, LabError> {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::ListParams;
    use margay_api::IPAMBlock;
    use std::collections::BTreeMap;
    let kubeconfig = lab
        .kubeconfig()
        .ok_or_else(|| LabError::ApiServer("a bare lab has no IPAM".into()))?;
    let (blocks, vteps) = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LabError::ApiServer(format!("tokio runtime: {e}")))?;
        rt.block_on(async {
            let client = crate::nodes::client(&kubeconfig).await?;
            let mut blocks: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let list = Api::<IPAMBlock>::all(client.clone())
                .list(&ListParams::default())
                .await
                .map_err(|e| LabError::ApiServer(format!("listing IPAM blocks: {e}")))?;
            for b in list.items {
                if let Some(n) = b.spec.affine_node() {
                    blocks
                        .entry(n.to_string())
                        .or_default()
                        .push(b.spec.cidr.clone());
                }
            }
            let nodes = Api::<Node>::all(client)
                .list(&ListParams::default())
                .await
                .map_err(|e| LabError::ApiServer(format!("listing nodes: {e}")))?;
            let vteps: BTreeMap<String, String> = nodes
                .items
                .into_iter()
                .filter_map(|n| {
                    let a = n
                        .metadata
                        .annotations?
                        .get("margay.dev/vxlanTunnelAddr")?
                        .clone();
                    Some((n.metadata.name?, a))
                })
                .collect();
            Ok::<_, LabError>((blocks, vteps))
        })
    })
    .join()
    .map_err(|_| LabError::ApiServer("reading blocks panicked".into()))??;
    let mut written = 0;
    for me in &lab.plan().nodes {
        let ns = crate::netns::Netns::open(&me.netns);
        for other in lab.plan().nodes.iter().filter(|o| o.name != me.name) {
            let tunnel = match encapsulation {
                Encapsulation::VxlanAlways => true,
                Encapsulation::VxlanCrossSubnet => other.subnet != me.subnet,
                _ => false,
            };
            for b in blocks.get(&other.name).into_iter().flatten() {
                let node_ip = other.ipv4.to_string();
                let args: Vec<&str> = if tunnel {
                    let vtep = vteps.get(&other.name).ok_or_else(|| {
                        LabError::Agent(format!("node {} has published no VTEP yet", other.name))
                    })?;
                    vec![
                        "route",
                        "replace",
                        b,
                        "via",
                        vtep,
                        "dev",
                        "vxlan.margay",
                        "onlink",
                        "proto",
                        "88",
                    ]
                } else {
                    vec!["route", "replace", b, "via", &node_ip, "proto", "88"]
                };
                ns.ip(&args)?;
                written += 1;
            }
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_patch() {
        let p = PoolOptions {
            encapsulation: Encapsulation::VxlanCrossSubnet,
            nat_outgoing: true,
        };
        assert_eq!(
            p.patch(),
            serde_json::json!({"spec": {"vxlanMode": "CrossSubnet", "ipipMode": "Never", "natOutgoing": true}})
        );
        assert_eq!(Encapsulation::IpipAlways.modes(), ("Never", "Always"));
        use clap::ValueEnum;
        let names: Vec<String> = Encapsulation::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        assert_eq!(
            names,
            [
                "never",
                "vxlan-always",
                "vxlan-cross-subnet",
                "ipip-always",
                "ipip-cross-subnet"
            ]
        );
    }
}
