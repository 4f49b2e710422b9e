//! The CustomResourceDefinitions of every `margay.dev/v1` kind, as installed
//! from `deploy/crds/`. Those files are generated from these types:
//! `UPDATE_CRDS=1 cargo nextest run -p margay-api crd` rewrites them, and the
//! same test fails when they drift.

use crate::resources::{agent, bgp, ipam, ippool, policy};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD Margay installs, in a stable order.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        agent::AgentConfiguration::crd(),
        bgp::BGPConfiguration::crd(),
        bgp::BGPPeer::crd(),
        ipam::BlockAffinity::crd(),
        ipam::IPAMBlock::crd(),
        ipam::IPAMConfiguration::crd(),
        ipam::IPAMHandle::crd(),
        ippool::IPPool::crd(),
        policy::GlobalNetworkPolicy::crd(),
    ]
}

#[derive(Debug, thiserror::Error)]
#[error("cannot render CRD {name} as YAML: {message}")]
pub struct RenderError {
    pub name: String,
    pub message: String,
}

/// `(file name, YAML)` for each CRD: `<plural>.margay.dev.yaml`.
pub fn render_crd_files() -> Result<Vec<(String, String)>, RenderError> {
    all_crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let yaml = serde_saphyr::to_string(&crd).map_err(|e| RenderError {
                name: name.clone(),
                message: e.to_string(),
            })?;
            Ok((
                format!("{name}.yaml"),
                format!("# Generated from the Rust types in api/ (margay_api::crds); do not edit.\n{yaml}"),
            ))
        })
        .collect()
}
