//! Registering the lab's nodes with its API server, as kubelets would.

use std::path::Path;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::LabError;
use crate::topology::Plan;

/// Label carrying the lab subnet a node sits on (handy for selectors in tests).
pub const SUBNET_LABEL: &str = "lab.margay.dev/subnet";

/// Creates a Ready `Node` object for each lab node, with its addresses.
/// Runs on a thread of its own so it works whether or not the caller is inside
/// an async runtime.
pub fn register(kubeconfig: &Path, plan: &Plan) -> Result<(), LabError> {
    let kubeconfig = kubeconfig.to_path_buf();
    let plan = plan.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LabError::ApiServer(format!("tokio runtime: {e}")))?;
        rt.block_on(register_async(&kubeconfig, &plan))
    })
    .join()
    .map_err(|_| LabError::ApiServer("node registration panicked".into()))?
}

/// A kube client for a kubeconfig file.
pub async fn client(kubeconfig: &Path) -> Result<kube::Client, LabError> {
    let err = |e: &dyn std::fmt::Display| {
        LabError::ApiServer(format!("kubeconfig {}: {e}", kubeconfig.display()))
    };
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| err(&e))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| err(&e))?;
    kube::Client::try_from(config).map_err(|e| err(&e))
}

async fn register_async(kubeconfig: &Path, plan: &Plan) -> Result<(), LabError> {
    let api: Api<Node> = Api::all(client(kubeconfig).await?);
    for n in &plan.nodes {
        let subnet = &plan.subnets[n.subnet].name;
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": n.name,
                "labels": {
                    "kubernetes.io/hostname": n.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": std::env::consts::ARCH,
                    SUBNET_LABEL: subnet,
                },
            },
        }))
        .map_err(|e| LabError::ApiServer(format!("node {}: {e}", n.name)))?;
        let fail =
            |e: kube::Error| LabError::ApiServer(format!("registering node {}: {e}", n.name));
        api.create(&PostParams::default(), &node)
            .await
            .map_err(fail)?;
        let status = json!({
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": n.ipv4.to_string()},
                    {"type": "InternalIP", "address": n.ipv6.to_string()},
                    {"type": "Hostname", "address": n.name},
                ],
                "conditions": [{
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "margay-lab node",
                }],
                "nodeInfo": {
                    "operatingSystem": "linux",
                    "architecture": std::env::consts::ARCH,
                    "kubeletVersion": "margay-lab",
                },
            }
        });
        api.patch_status(&n.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map_err(fail)?;
    }
    Ok(())
}
