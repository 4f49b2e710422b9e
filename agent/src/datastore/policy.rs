//! The watches policy needs, cluster-wide: every pod (selectors match pods
//! on every node, not only this one's), namespaces, NetworkPolicies and
//! GlobalNetworkPolicies. Unlike the reflectors in [`super`], these keep no
//! cache of whole objects: each event goes straight to the policy worker,
//! which keeps what the compiler needs (names, labels, addresses, named
//! ports) and records when the event arrived (the programming latency
//! metric starts there).

use std::fmt::Debug;
use std::hash::Hash;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use margay_api::GlobalNetworkPolicy;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use crate::calc::policy::{Change, PolicyInput};
use crate::dataplane::policy::PolicyHandle;

/// Starts the four watches on the current runtime, feeding `policy`.
pub fn start(client: Client, policy: &PolicyHandle) -> Vec<JoinHandle<()>> {
    vec![
        watch::<Pod>(Api::all(client.clone()), policy.clone(), PolicyInput::pod),
        watch::<Namespace>(
            Api::all(client.clone()),
            policy.clone(),
            PolicyInput::namespace,
        ),
        watch::<NetworkPolicy>(
            Api::all(client.clone()),
            policy.clone(),
            PolicyInput::network_policy,
        ),
        watch::<GlobalNetworkPolicy>(
            Api::all(client),
            policy.clone(),
            PolicyInput::global_network_policy,
        ),
    ]
}

fn watch<K>(api: Api<K>, policy: PolicyHandle, wrap: fn(Change<K>) -> PolicyInput) -> JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            // Managed fields are large and nobody here reads them.
            .modify(|o| o.meta_mut().managed_fields = None);
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            let change = match event {
                Ok(watcher::Event::Apply(o)) => Change::Apply(o),
                Ok(watcher::Event::Delete(o)) => Change::Delete(o),
                Ok(watcher::Event::Init) => Change::InitStart,
                Ok(watcher::Event::InitApply(o)) => Change::InitApply(o),
                Ok(watcher::Event::InitDone) => Change::InitDone,
                Err(e) => {
                    tracing::warn!(kind = %kind, error = %e, "policy watch failed; retrying");
                    continue;
                }
            };
            if !policy.input(wrap(change)) {
                return; // the worker is gone: the agent is stopping
            }
        }
    })
}
