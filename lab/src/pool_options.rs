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
