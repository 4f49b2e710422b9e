//! The store on the Kubernetes API. Writes are conditional exactly as the
//! trait demands: `create` (POST) fails with 409 AlreadyExists, `replace`
//! (PUT with `metadata.resourceVersion`) fails with 409 Conflict when the
//! object changed, `delete` carries a resourceVersion precondition. The
//! allocator re-reads and retries on those, so this layer does not.
//!
//! Transport retries are the client's: kube's default client retries 429, 503
//! and 504 up to 15 times with exponential backoff (minutes in total). On a
//! request path with its own deadline (CNI ADD), bound each call with
//! [`KubeStore::with_call_timeout`] or build the client without default retries.

use super::{IpamStore, NodeInfo, PodInfo, StoreError, StoreResult, StoredKind, describe};
use ::kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use ::kube::{Client, Error};
use k8s_openapi::api::core::v1::{Node, Pod};
use margay_api::names::NODE_LABEL;
use std::future::Future;
use std::time::Duration;

/// IPAM storage on a Kubernetes API server (or the lab's emulator).
#[derive(Clone)]
pub struct KubeStore {
    client: Client,
    call_timeout: Option<Duration>,
}

impl KubeStore {
    pub fn new(client: Client) -> KubeStore {
        KubeStore {
            client,
            call_timeout: None,
        }
    }

    /// Fail any single call that takes longer than `timeout` with
    /// `Unavailable` (a write cut off this way may or may not have happened;
    /// allocation is idempotent per handle, so the caller can retry).
    pub fn with_call_timeout(mut self, timeout: Duration) -> KubeStore {
        self.call_timeout = Some(timeout);
        self
    }

    async fn bounded<T>(
        &self,
        what: impl FnOnce() -> String,
        call: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        match self.call_timeout {
            None => call.await,
            Some(limit) => match tokio::time::timeout(limit, call).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Unavailable(format!(
                    "{}: no answer within {limit:?}",
                    what()
                ))),
            },
        }
    }

    fn api<K: StoredKind>(&self) -> Api<K> {
        Api::all(self.client.clone())
    }
}

/// Map a client error for object `name` of kind `K`.
fn map_err<K: StoredKind>(name: &str, e: Error) -> StoreError {
    let (kind, name) = describe::<K>(name);
    match e {
        Error::Api(s) if s.is_already_exists() => StoreError::AlreadyExists { kind, name },
        Error::Api(s) if s.is_conflict() => StoreError::Conflict { kind, name },
        Error::Api(s) if s.is_not_found() => StoreError::NotFound { kind, name },
        Error::Api(s) if s.is_invalid() || s.code == 400 => StoreError::Invalid {
            kind,
            name,
            message: s.message.clone(),
        },
        other => StoreError::Unavailable(format!("{kind} {name:?}: {other}")),
    }
}

fn unavailable(what: &str, e: Error) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

impl IpamStore for KubeStore {
    async fn get<K: StoredKind>(&self, name: &str) -> StoreResult<Option<K>> {
        self.bounded(
            || format!("reading {} {name:?}", K::kind(&())),
            async move {
                self.api::<K>()
                    .get_opt(name)
                    .await
                    .map_err(|e| map_err::<K>(name, e))
            },
        )
        .await
    }

    async fn list<K: StoredKind>(&self, node_label: Option<&str>) -> StoreResult<Vec<K>> {
        self.bounded(|| format!("listing {}", K::kind(&())), async move {
            let mut lp = ListParams::default();
            if let Some(v) = node_label {
                lp = lp.labels(&format!("{NODE_LABEL}={v}"));
            }
            let list = self
                .api::<K>()
                .list(&lp)
                .await
                .map_err(|e| map_err::<K>("", e))?;
            Ok(list.items)
        })
        .await
    }

    async fn create<K: StoredKind>(&self, obj: &K) -> StoreResult<K> {
        self.bounded(|| format!("creating {}", K::kind(&())), async move {
            let name = obj.meta().name.clone().unwrap_or_default();
            self.api::<K>()
                .create(&PostParams::default(), obj)
                .await
                .map_err(|e| map_err::<K>(&name, e))
        })
        .await
    }

    async fn replace<K: StoredKind>(&self, obj: &K) -> StoreResult<K> {
        self.bounded(|| format!("replacing {}", K::kind(&())), async move {
            let name = obj.meta().name.clone().unwrap_or_default();
            if obj.meta().resource_version.is_none() {
                let (kind, name) = describe::<K>(&name);
                // Without it the PUT would be unconditional.
                return Err(StoreError::Invalid {
                    kind,
                    name,
                    message: "replace needs metadata.resourceVersion (compare-and-swap)".into(),
                });
            }
            self.api::<K>()
                .replace(&name, &PostParams::default(), obj)
                .await
                .map_err(|e| map_err::<K>(&name, e))
        })
        .await
    }

    async fn delete<K: StoredKind>(&self, name: &str, resource_version: &str) -> StoreResult<()> {
        self.bounded(
            || format!("deleting {} {name:?}", K::kind(&())),
            async move {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: Some(resource_version.to_string()),
                        uid: None,
                    }),
                    ..DeleteParams::default()
                };
                self.api::<K>()
                    .delete(name, &dp)
                    .await
                    .map(|_| ())
                    .map_err(|e| map_err::<K>(name, e))
            },
        )
        .await
    }

    async fn get_node(&self, name: &str) -> StoreResult<Option<NodeInfo>> {
        self.bounded(|| format!("reading Node {name:?}"), async move {
            let api: Api<Node> = Api::all(self.client.clone());
            let node = api
                .get_opt(name)
                .await
                .map_err(|e| unavailable(&format!("Node {name:?}"), e))?;
            Ok(node.as_ref().map(NodeInfo::from_node))
        })
        .await
    }

    async fn list_nodes(&self) -> StoreResult<Vec<NodeInfo>> {
        self.bounded(|| "listing Nodes".to_string(), async move {
            let api: Api<Node> = Api::all(self.client.clone());
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| unavailable("listing Nodes", e))?;
            Ok(list.items.iter().map(NodeInfo::from_node).collect())
        })
        .await
    }

    async fn get_pod(&self, namespace: &str, name: &str) -> StoreResult<Option<PodInfo>> {
        self.bounded(|| format!("reading Pod {namespace}/{name}"), async move {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let pod = api
                .get_opt(name)
                .await
                .map_err(|e| unavailable(&format!("Pod {namespace}/{name}"), e))?;
            Ok(pod.as_ref().map(PodInfo::from_pod))
        })
        .await
    }

    async fn list_pods(&self) -> StoreResult<Vec<PodInfo>> {
        self.bounded(|| "listing Pods".to_string(), async move {
            let api: Api<Pod> = Api::all(self.client.clone());
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| unavailable("listing Pods", e))?;
            Ok(list.items.iter().map(PodInfo::from_pod).collect())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::kube::core::Status;
    use margay_api::IPAMBlock;

    fn api_error(code: u16, reason: &str) -> Error {
        Error::Api(
            Status::failure("message from the server", reason)
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn api_errors_map_to_store_errors() {
        let m = |code, reason| map_err::<IPAMBlock>("10-0-0-0-26", api_error(code, reason));
        assert!(matches!(
            m(409, "AlreadyExists"),
            StoreError::AlreadyExists { .. }
        ));
        assert!(matches!(m(409, "Conflict"), StoreError::Conflict { .. }));
        assert!(matches!(m(404, "NotFound"), StoreError::NotFound { .. }));
        assert!(matches!(m(422, "Invalid"), StoreError::Invalid { .. }));
        assert!(matches!(
            m(503, "ServiceUnavailable"),
            StoreError::Unavailable(_)
        ));
        match m(409, "Conflict") {
            StoreError::Conflict { kind, name } => {
                assert_eq!((kind.as_str(), name.as_str()), ("IPAMBlock", "10-0-0-0-26"));
            }
            other => panic!("{other:?}"),
        }
    }
}
