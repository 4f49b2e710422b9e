//! The default pools' encapsulation and NAT outgoing (`margay-lab up
//! --encapsulation … --nat-outgoing`, `--ipv6-encapsulation …` with
//! `--ipv6-pool`, or [`Lab::configure_default_pool`] /
//! [`Lab::configure_default_v6_pool`] afterwards): a JSON merge patch of
//! `default-ipv4-ippool`'s (or `default-ipv6-ippool`'s) spec. The agents
//! follow pool changes (devices, routes, pod MTU for new pods).
//!
//! [`Lab::configure_default_pool`]: crate::Lab::configure_default_pool
//! [`Lab::configure_default_v6_pool`]: crate::Lab::configure_default_v6_pool

use crate::LabError;
use crate::agents::{DEFAULT_POOL_NAME, DEFAULT_V6_POOL_NAME};
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
    configure_pool(kubeconfig, DEFAULT_POOL_NAME, opts)
}

/// Patches the default IPv6 pool (`up --ipv6-pool`). IPIP carries IPv4
/// only: asking for it here is refused before anything is patched.
pub fn configure_default_v6_pool(kubeconfig: &Path, opts: PoolOptions) -> Result<(), LabError> {
    check_ipv6(opts)?;
    configure_pool(kubeconfig, DEFAULT_V6_POOL_NAME, opts)
}

/// Whether `opts` can apply to an IPv6 pool.
pub fn check_ipv6(opts: PoolOptions) -> Result<(), LabError> {
    match opts.encapsulation {
        Encapsulation::IpipAlways | Encapsulation::IpipCrossSubnet => {
            Err(LabError::ApiServer(format!(
                "IPPool {DEFAULT_V6_POOL_NAME}: ipipMode cannot be on for an IPv6 pool (IPIP carries IPv4 only); use vxlan-always or vxlan-cross-subnet"
            )))
        }
        _ => Ok(()),
    }
}

fn configure_pool(
    kubeconfig: &Path,
    pool: &'static str,
    opts: PoolOptions,
) -> Result<(), LabError> {
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
                .patch(pool, &PatchParams::default(), &Patch::Merge(opts.patch()))
                .await
                .map(|_| ())
                .map_err(|e| LabError::ApiServer(format!("patching IPPool {pool}: {e}")))
        })
    })
    .join()
    .map_err(|_| LabError::ApiServer("patching the default pool panicked".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_pools_refuse_ipip() {
        for e in [Encapsulation::IpipAlways, Encapsulation::IpipCrossSubnet] {
            let err = check_ipv6(PoolOptions {
                encapsulation: e,
                nat_outgoing: false,
            })
            .expect_err("ipip on IPv6");
            assert!(err.to_string().contains("default-ipv6-ippool"), "{err}");
        }
        for e in [
            Encapsulation::Never,
            Encapsulation::VxlanAlways,
            Encapsulation::VxlanCrossSubnet,
        ] {
            assert!(
                check_ipv6(PoolOptions {
                    encapsulation: e,
                    nat_outgoing: false
                })
                .is_ok()
            );
        }
    }

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
