//! The one effect of IPAM: reading and writing objects. Every write is
//! conditional — `create` fails if the object exists, `replace` and `delete`
//! fail unless the object is still at the `resourceVersion` the caller read —
//! so concurrent writers can never overwrite each other's changes.
//!
//! Implementations: [`memory::MemoryStore`] (tests, exact API semantics in a
//! mutex), [`kube::KubeStore`] (the Kubernetes API), and
//! [`instrumented::InstrumentedStore`] (counts calls, injects conflicts,
//! latency and crashes around any other store).

pub mod instrumented;
pub mod kube;
pub mod memory;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube_core::{ClusterResourceScope, Resource};
use margay_api::{BlockAffinity, IPAMBlock, IPAMConfiguration, IPAMHandle, IPPool};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::net::IpAddr;

use ::kube::core as kube_core;

/// A cluster-scoped kind IPAM reads or writes through the store.
pub trait StoredKind:
    Resource<DynamicType = (), Scope = ClusterResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl StoredKind for IPAMBlock {}
impl StoredKind for BlockAffinity {}
impl StoredKind for IPAMHandle {}
impl StoredKind for IPPool {}
impl StoredKind for IPAMConfiguration {}

/// What IPAM needs to know of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl NodeInfo {
    pub fn from_node(node: &Node) -> NodeInfo {
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
        }
    }
}

/// What the garbage collector needs to know of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    /// `spec.nodeName`, once scheduled.
    pub node: Option<String>,
    /// `status.podIPs`, once the kubelet reported them.
    pub ips: Vec<IpAddr>,
}

impl PodInfo {
    pub fn from_pod(pod: &Pod) -> PodInfo {
        let ips = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| ips.iter().filter_map(|i| i.ip.parse().ok()).collect())
            .unwrap_or_default();
        PodInfo {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            ips,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The object changed since it was read (or was deleted): re-read and retry.
    #[error("{kind} {name:?} was modified concurrently (resourceVersion mismatch)")]
    Conflict { kind: String, name: String },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: String, name: String },
    #[error("{kind} {name:?} not found")]
    NotFound { kind: String, name: String },
    /// The server refused the object (schema, validation).
    #[error("{kind} {name:?} was refused: {message}")]
    Invalid {
        kind: String,
        name: String,
        message: String,
    },
    /// Transport failure, timeout, server error: the write may or may not
    /// have happened.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Lost a compare-and-swap race (the object changed or vanished).
    pub fn is_race(&self) -> bool {
        matches!(
            self,
            StoreError::Conflict { .. } | StoreError::NotFound { .. }
        )
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The storage IPAM runs on. Methods are generic over the stored kind so one
/// implementation covers blocks, affinities, handles, pools and configuration.
pub trait IpamStore: Send + Sync {
    fn get<K: StoredKind>(&self, name: &str)
    -> impl Future<Output = StoreResult<Option<K>>> + Send;

    /// All objects of a kind, or only those labelled `margay.dev/node=<value>`.
    fn list<K: StoredKind>(
        &self,
        node_label: Option<&str>,
    ) -> impl Future<Output = StoreResult<Vec<K>>> + Send;

    /// Create; `AlreadyExists` if the name is taken. Returns the stored object
    /// (with its `resourceVersion`).
    fn create<K: StoredKind>(&self, obj: &K) -> impl Future<Output = StoreResult<K>> + Send;

    /// Compare-and-swap: replace only if the stored `resourceVersion` equals
    /// `obj.metadata.resourceVersion`; `Conflict` otherwise, `NotFound` if gone.
    fn replace<K: StoredKind>(&self, obj: &K) -> impl Future<Output = StoreResult<K>> + Send;

    /// Delete only at `resource_version`; `Conflict` if it changed, `NotFound` if gone.
    fn delete<K: StoredKind>(
        &self,
        name: &str,
        resource_version: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    fn get_node(&self, name: &str) -> impl Future<Output = StoreResult<Option<NodeInfo>>> + Send;
    fn list_nodes(&self) -> impl Future<Output = StoreResult<Vec<NodeInfo>>> + Send;
    fn get_pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = StoreResult<Option<PodInfo>>> + Send;
    fn list_pods(&self) -> impl Future<Output = StoreResult<Vec<PodInfo>>> + Send;
}

/// Kind and name of an object, for errors.
pub(crate) fn describe<K: StoredKind>(name: &str) -> (String, String) {
    (K::kind(&()).to_string(), name.to_string())
}

/// A shared store is a store (so one store can serve many allocators/tasks).
impl<S: IpamStore> IpamStore for std::sync::Arc<S> {
    fn get<K: StoredKind>(
        &self,
        name: &str,
    ) -> impl Future<Output = StoreResult<Option<K>>> + Send {
        (**self).get(name)
    }
    fn list<K: StoredKind>(
        &self,
        node_label: Option<&str>,
    ) -> impl Future<Output = StoreResult<Vec<K>>> + Send {
        (**self).list(node_label)
    }
    fn create<K: StoredKind>(&self, obj: &K) -> impl Future<Output = StoreResult<K>> + Send {
        (**self).create(obj)
    }
    fn replace<K: StoredKind>(&self, obj: &K) -> impl Future<Output = StoreResult<K>> + Send {
        (**self).replace(obj)
    }
    fn delete<K: StoredKind>(
        &self,
        name: &str,
        resource_version: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send {
        (**self).delete::<K>(name, resource_version)
    }
    fn get_node(&self, name: &str) -> impl Future<Output = StoreResult<Option<NodeInfo>>> + Send {
        (**self).get_node(name)
    }
    fn list_nodes(&self) -> impl Future<Output = StoreResult<Vec<NodeInfo>>> + Send {
        (**self).list_nodes()
    }
    fn get_pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = StoreResult<Option<PodInfo>>> + Send {
        (**self).get_pod(namespace, name)
    }
    fn list_pods(&self) -> impl Future<Output = StoreResult<Vec<PodInfo>>> + Send {
        (**self).list_pods()
    }
}
