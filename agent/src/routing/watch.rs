//! The caches routing needs beyond the agent's [`Datastore`](crate::datastore::Datastore):
//! IPAM blocks, BGPConfiguration and BGPPeers (kube-rs reflectors).

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use margay_api::{BGPConfiguration, BGPPeer, IPAMBlock};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Clone)]
pub struct RoutingCaches {
    pub blocks: Store<IPAMBlock>,
    pub bgp_configs: Store<BGPConfiguration>,
    pub bgp_peers: Store<BGPPeer>,
    pub changes: watch::Receiver<u64>,
}

impl RoutingCaches {
    pub fn start(client: Client, tasks: &mut Vec<JoinHandle<()>>) -> RoutingCaches {
        let (tx, changes) = watch::channel(0u64);
        let tx = Arc::new(tx);
        RoutingCaches {
            blocks: reflect(Api::all(client.clone()), &tx, tasks),
            bgp_configs: reflect(Api::all(client.clone()), &tx, tasks),
            bgp_peers: reflect(Api::all(client), &tx, tasks),
            changes,
        }
    }

    pub async fn wait_synced(&self) {
        let _ = futures::join!(
            self.blocks.wait_until_ready(),
            self.bgp_configs.wait_until_ready(),
            self.bgp_peers.wait_until_ready(),
        );
    }
}

fn reflect<K>(
    api: Api<K>,
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
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|o| o.meta_mut().managed_fields = None);
    tasks.push(tokio::spawn(async move {
        reflector::reflector(writer, stream)
            .for_each(|event| {
                match event {
                    Ok(_) => changes.send_modify(|n| *n += 1),
                    Err(e) => tracing::warn!(kind = %kind, error = %e, "watch failed; retrying"),
                }
                async {}
            })
            .await;
    }));
    store
}
