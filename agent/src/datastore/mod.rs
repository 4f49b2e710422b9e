//! The agent's view of the API: kube-rs reflectors for the pods on this node
//! (`fieldSelector spec.nodeName=<node>`), nodes, namespaces, and Margay's
//! IPPool, IPAMConfiguration and AgentConfiguration.
//!
//! Nothing downstream acts on these caches before [`Datastore::wait_synced`]
//! returns: a half-listed cache would look like deletions.

pub mod policy;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use margay_api::resources::agent::agent_config_name_for_node;
use margay_api::{
    AgentConfiguration, IPAMConfiguration, IPPool, ResolvedAgentConfig, ResolvedPool,
};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The caches, cheap to clone.
#[derive(Clone)]
pub struct Datastore {
    pub pods: Store<Pod>,
    pub nodes: Store<Node>,
    pub namespaces: Store<Namespace>,
    pub pools: Store<IPPool>,
    pub ipam_configs: Store<IPAMConfiguration>,
    pub agent_configs: Store<AgentConfiguration>,
    /// Bumped on every change seen by any reflector.
    changes: watch::Receiver<u64>,
    tasks: Arc<Vec<JoinHandle<()>>>,
}

impl Datastore {
    /// Starts every reflector on the current runtime.
    pub fn start(client: Client, node: &str) -> Datastore {
        let (tx, changes) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let mut tasks = Vec::new();
        let pods = reflect(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().fields(&format!("spec.nodeName={node}")),
            &tx,
            &mut tasks,
        );
        let nodes = reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            &tx,
            &mut tasks,
        );
        let namespaces = reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            &tx,
            &mut tasks,
        );
        let pools = reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            &tx,
            &mut tasks,
        );
        let ipam_configs = reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            &tx,
            &mut tasks,
        );
        let agent_configs = reflect(
            Api::all(client),
            watcher::Config::default(),
            &tx,
            &mut tasks,
        );
        Datastore {
            pods,
            nodes,
            namespaces,
            pools,
            ipam_configs,
            agent_configs,
            changes,
            tasks: Arc::new(tasks),
        }
    }

    /// Returns once every cache has completed its first list. Several tasks
    /// may wait at once.
    pub async fn wait_synced(&self) {
        // kube's store readiness keeps a single waker (a futures oneshot
        // underneath): of several tasks waiting at once only the last to poll
        // is woken. Polling again every moment lets each waiter see the
        // value once it is there.
        loop {
            // `wait_until_ready` only fails when the writer is dropped, i.e. the
            // reflector task ended, which happens only when the agent shuts down.
            let all = async {
                let _ = futures::join!(
                    self.pods.wait_until_ready(),
                    self.nodes.wait_until_ready(),
                    self.namespaces.wait_until_ready(),
                    self.pools.wait_until_ready(),
                    self.ipam_configs.wait_until_ready(),
                    self.agent_configs.wait_until_ready(),
                );
            };
            if tokio::time::timeout(std::time::Duration::from_millis(200), all)
                .await
                .is_ok()
            {
                return;
            }
        }
    }

    /// A receiver that changes whenever any cache does.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.pods.get(&ObjectRef::new(name).within(namespace))
    }

    pub fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes.get(&ObjectRef::new(name))
    }

    pub fn namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        self.namespaces.get(&ObjectRef::new(name))
    }

    pub fn node_labels(&self, name: &str) -> BTreeMap<String, String> {
        self.node(name)
            .map(|n| n.labels().clone())
            .unwrap_or_default()
    }

    /// The valid pools (invalid ones are skipped, as IPAM skips them).
    pub fn resolved_pools(&self) -> Vec<ResolvedPool> {
        let mut pools: Vec<ResolvedPool> = self
            .pools
            .state()
            .iter()
            .filter_map(|p| ResolvedPool::from_pool(p).ok())
            .collect();
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        pools
    }

    /// The agent configuration for `node`: `default` merged with `node.<node>`.
    pub fn agent_config(&self, node: &str) -> ResolvedAgentConfig {
        let get = |name: &str| {
            self.agent_configs
                .get(&ObjectRef::new(name))
                .map(|c| c.spec.clone())
        };
        let global = get(margay_api::resources::agent::AGENT_CONFIG_DEFAULT_NAME);
        let local = get(&agent_config_name_for_node(node));
        ResolvedAgentConfig::merge(global.as_ref(), local.as_ref())
    }
}

impl Drop for Datastore {
    fn drop(&mut self) {
        // The last clone stops the reflectors.
        if Arc::strong_count(&self.tasks) == 1 {
            for t in self.tasks.iter() {
                t.abort();
            }
        }
    }
}

/// Starts one reflector; the returned store fills as it lists and watches.
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    changes: &Arc<watch::Sender<u64>>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let changes = changes.clone();
    let stream = watcher(api, config)
        .default_backoff()
        // Managed fields are large and nobody here reads them.
        .modify(|o| o.meta_mut().managed_fields = None);
    let task = tokio::spawn(async move {
        reflector::reflector(writer, stream)
            .for_each(|event| {
                match event {
                    Ok(_) => {
                        changes.send_modify(|n| *n += 1);
                    }
                    Err(e) => tracing::warn!(kind = %kind, error = %e, "watch failed; retrying"),
                }
                async {}
            })
            .await;
    });
    tasks.push(task);
    store
}
