//! What each request does. `Add` allocates through IPAM and records the
//! endpoint; `Ready` programs it (routes, sysctls) and answers once it is in
//! the kernel; `Del` releases and forgets (idempotent); `Check`, `Status`,
//! `Gc` as the protocol describes. Requests for one attachment run one at a
//! time; requests for different attachments run concurrently.

use crate::calc::addressing::{self, POD_IP_ANNOTATION, POD_IPS_ANNOTATION};
use crate::calc::endpoints::{Endpoint, EndpointKey, EndpointState};
use crate::calc::sysctls::is_valid_ifname;
use crate::dataplane::policy::PolicyHandle;
use crate::dataplane::{DataplaneHandle, SharedEndpoints};
use crate::datastore::Datastore;
use crate::endpoint_store::EndpointStore;
use crate::health::Health;
use crate::metrics::Metrics;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use margay_api::IPAMBlock;
use margay_api::endpoint::{
    Allocation, Attachment, EndpointInfo, GcReport, PodRef, Request, Response, WireError, codes,
    host_interface_name,
};
use margay_ipam::store::kube::KubeStore;
use margay_ipam::{AddressRequest, AllocateRequest, Allocator, IpamError, IpamStore, StoreError};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Everything the handler needs.
pub struct EndpointHandler {
    pub node: String,
    pub client: Client,
    pub allocator: Allocator<KubeStore>,
    pub datastore: Datastore,
    pub endpoints: SharedEndpoints,
    pub records: EndpointStore,
    pub dataplane: DataplaneHandle,
    pub metrics: Metrics,
    pub health: Health,
    /// Bound on each API call made while serving a request.
    pub api_timeout: Duration,
    locks: Mutex<HashMap<EndpointKey, Arc<tokio::sync::Mutex<()>>>>,
    /// IPAM writes of this node, one at a time (as Calico's host-wide IPAM
    /// lock): concurrent ADDs on one node all write the same block, and
    /// racing claims of a new block make the losers fail instead of using
    /// the block the winner claimed. In sequence each costs one write.
    ipam_lock: tokio::sync::Mutex<()>,
    /// The policy dataplane, and how long `Ready` waits for it (`None`:
    /// not at all). Without it (`None`), endpoints get no policy.
    policy: Option<(PolicyHandle, Option<Duration>)>,
}

type Result<T> = std::result::Result<T, WireError>;

fn wire(code: u32, msg: impl Into<String>) -> WireError {
    WireError {
        code,
        msg: msg.into(),
        details: String::new(),
    }
}

impl EndpointHandler {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: String,
        client: Client,
        allocator: Allocator<KubeStore>,
        datastore: Datastore,
        endpoints: SharedEndpoints,
        records: EndpointStore,
        dataplane: DataplaneHandle,
        metrics: Metrics,
        health: Health,
        api_timeout: Duration,
    ) -> EndpointHandler {
        EndpointHandler {
            node,
            client,
            allocator,
            datastore,
            endpoints,
            records,
            dataplane,
            metrics,
            health,
            api_timeout,
            locks: Mutex::new(HashMap::new()),
            ipam_lock: tokio::sync::Mutex::new(()),
            policy: None,
        }
    }

    /// Endpoints get their policy from `policy`; `Ready` answers once it is
    /// in the kernel, waiting at most `wait` (`None`: it does not wait).
    pub fn with_policy(mut self, policy: PolicyHandle, wait: Option<Duration>) -> EndpointHandler {
        self.policy = Some((policy, wait));
        self
    }

    fn policy_nudge(&self) {
        if let Some((p, _)) = &self.policy {
            p.endpoints_changed();
        }
    }

    /// Waits until the endpoint's policy is in the kernel (bounded).
    async fn program_policy(&self, e: &Endpoint) -> Result<()> {
        let Some((policy, wait)) = &self.policy else {
            return Ok(());
        };
        let Some(wait) = wait else {
            policy.endpoints_changed();
            return Ok(());
        };
        let pod = self.datastore.pod(&e.pod.namespace, &e.pod.name);
        let key = e.key();
        match tokio::time::timeout(*wait, policy.program(&e.host_interface, pod)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(wire(
                codes::IO_FAILURE,
                format!(
                    "programming the policy of endpoint {} (pod {}/{}, interface {}): {why}",
                    key.as_str(),
                    e.pod.namespace,
                    e.pod.name,
                    e.host_interface
                ),
            )),
            Err(_) => Err(wire(
                codes::TRY_AGAIN_LATER,
                format!(
                    "the policy of pod {}/{} (interface {}) was not in the kernel within {wait:?} (cniPolicyWaitTimeout); the pod is not started unprotected",
                    e.pod.namespace, e.pod.name, e.host_interface
                ),
            )),
        }
    }

    pub async fn handle(&self, req: Request) -> Response {
        let result = match req {
            Request::Add {
                attachment,
                pod,
                netns,
            } => self.add(attachment, pod, netns).await.map(|a| json!(a)),
            Request::Ready {
                attachment,
                pod,
                host_interface,
                addresses,
                mac,
            } => self
                .ready(attachment, pod, host_interface, addresses, mac)
                .await
                .map(|()| serde_json::Value::Null),
            Request::Del { attachment, .. } => {
                self.del(attachment).await.map(|()| serde_json::Value::Null)
            }
            Request::Check { attachment, .. } => self.check(attachment).await.map(|i| json!(i)),
            Request::Status => self.status().map(|()| serde_json::Value::Null),
            Request::Gc { valid_attachments } => self.gc(valid_attachments).await.map(|r| json!(r)),
        };
        match result {
            Ok(v) => Response::Ok(v),
            Err(e) => Response::Error(e),
        }
    }

    fn require_ready(&self) -> Result<()> {
        if self.health.is_ready() {
            Ok(())
        } else {
            Err(wire(
                codes::TRY_AGAIN_LATER,
                format!(
                    "margay-agent on node {} is not ready yet ({}); retry shortly",
                    self.node,
                    self.health.reason()
                ),
            ))
        }
    }

    fn key(a: &Attachment) -> Result<EndpointKey> {
        let key = EndpointKey::of(a);
        if EndpointKey::parse(key.as_str()).is_none() || !is_valid_ifname(&a.ifname) {
            return Err(wire(
                codes::INVALID_ENVIRONMENT,
                format!(
                    "CNI_CONTAINERID {:?} / CNI_IFNAME {:?}: the container id must be [A-Za-z0-9_.-]+ and the interface name a Linux interface name",
                    a.container_id, a.ifname
                ),
            ));
        }
        Ok(key)
    }

    async fn lock(&self, key: &EndpointKey) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            // Drop locks nobody holds or waits for, so the map stays small.
            locks.retain(|_, m| Arc::strong_count(m) > 1);
            locks.entry(key.clone()).or_default().clone()
        };
        m.lock_owned().await
    }

    fn table_get(&self, key: &EndpointKey) -> Option<Endpoint> {
        self.endpoints.lock().ok().and_then(|t| t.get(key).cloned())
    }

    fn table_put(&self, e: Endpoint) -> Result<()> {
        self.records.save(&e).map_err(|err| {
            wire(
                codes::IO_FAILURE,
                format!("writing the endpoint record of {}: {err}", e.key().as_str()),
            )
        })?;
        if let Ok(mut t) = self.endpoints.lock() {
            t.upsert(e);
        }
        self.policy_nudge();
        Ok(())
    }

    fn table_remove(&self, key: &EndpointKey) -> Result<()> {
        if let Ok(mut t) = self.endpoints.lock() {
            t.remove(key);
        }
        self.policy_nudge();
        self.records.remove(key).map_err(|err| {
            wire(
                codes::IO_FAILURE,
                format!("removing the endpoint record of {}: {err}", key.as_str()),
            )
        })
    }

    async fn add(&self, attachment: Attachment, pod: PodRef, netns: String) -> Result<Allocation> {
        self.require_ready()?;
        let key = Self::key(&attachment)?;
        let _guard = self.lock(&key).await;
        let host_interface = host_interface_name(&pod.namespace, &pod.name);
        let mtu = self.dataplane.status().mtu;
        // A retried ADD: same answer, nothing allocated twice.
        if let Some(e) = self.table_get(&key)
            && e.pod.namespace == pod.namespace
            && e.pod.name == pod.name
        {
            return Ok(Allocation {
                addresses: e.address_strings(),
                host_interface,
                mtu,
            });
        }
        let want = self.addressing(&pod).await?;
        let req = AllocateRequest {
            handle: key.ipam_handle().to_string(),
            node: self.node.clone(),
            namespace: Some(pod.namespace.clone()),
            pod: Some(pod.name.clone()),
            ipv4: want.ipv4,
            ipv6: want.ipv6,
        };
        let started = Instant::now();
        // Waiting for the node's IPAM turn and the allocation itself are
        // bounded together, so an API server in trouble fails ADDs with
        // "try again later" instead of queueing them past the runtime's patience.
        let budget = self.ipam_budget();
        let result = tokio::time::timeout(budget, async {
            let _ipam = self.ipam_lock.lock().await;
            self.allocator.allocate(&req).await
        })
        .await
        .unwrap_or_else(|_| {
            Err(IpamError::Store(StoreError::Unavailable(format!(
                "IPAM did not finish within {budget:?}"
            ))))
        });
        self.ipam_metric("allocate", started, result.as_ref().err());
        let allocation = result.map_err(|e| ipam_wire(&e, &pod))?;
        let addresses: Vec<IpAddr> = allocation.addresses().collect();
        let endpoint = Endpoint {
            attachment: attachment.clone(),
            pod: pod.clone(),
            host_interface: host_interface.clone(),
            addresses,
            mac: None,
            netns,
            state: EndpointState::Allocated,
        };
        if let Err(e) = self.table_put(endpoint.clone()) {
            // Without a record a later DEL still releases by handle, but be tidy.
            let _ipam = self.ipam_lock.lock().await;
            let _ = self
                .allocator
                .release_handle(key.ipam_handle(), Some(&self.node))
                .await;
            return Err(e);
        }
        tracing::info!(endpoint = key.as_str(), pod = %format!("{}/{}", pod.namespace, pod.name), addresses = ?endpoint.addresses, "allocated");
        Ok(Allocation {
            addresses: endpoint.address_strings(),
            host_interface,
            mtu,
        })
    }

    /// What to ask IPAM for, from the pod's and its namespace's annotations.
    async fn addressing(&self, pod: &PodRef) -> Result<addressing::PodAddressing> {
        let pod_obj = match self.datastore.pod(&pod.namespace, &pod.name) {
            Some(p) => Some(p),
            // Not in the cache yet (the watch event may trail the ADD): ask.
            None => {
                let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
                match tokio::time::timeout(self.api_timeout, api.get_opt(&pod.name)).await {
                    Ok(Ok(p)) => p.map(Arc::new),
                    Ok(Err(e)) => {
                        return Err(wire(
                            codes::TRY_AGAIN_LATER,
                            format!(
                                "reading Pod {}/{} from the API: {e}",
                                pod.namespace, pod.name
                            ),
                        ));
                    }
                    Err(_) => {
                        return Err(wire(
                            codes::TRY_AGAIN_LATER,
                            format!(
                                "reading Pod {}/{}: the API server did not answer within {:?}",
                                pod.namespace, pod.name, self.api_timeout
                            ),
                        ));
                    }
                }
            }
        };
        let Some(pod_obj) = pod_obj else {
            return Err(wire(
                codes::INVALID_ENVIRONMENT,
                format!(
                    "Pod {}/{} (K8S_POD_NAMESPACE/K8S_POD_NAME) does not exist in the API",
                    pod.namespace, pod.name
                ),
            ));
        };
        if let (Some(want), Some(have)) = (&pod.uid, &pod_obj.metadata.uid)
            && want != have
        {
            return Err(wire(
                codes::INVALID_ENVIRONMENT,
                format!(
                    "Pod {}/{} has uid {have}, the runtime asked for uid {want} (K8S_POD_UID): the pod was recreated",
                    pod.namespace, pod.name
                ),
            ));
        }
        let ns_annotations = self
            .datastore
            .namespace(&pod.namespace)
            .map(|n| n.annotations().clone())
            .unwrap_or_default();
        let mut want = addressing::decide(
            &format!("Pod {}/{}", pod.namespace, pod.name),
            pod_obj.annotations(),
            &format!("Namespace {}", pod.namespace),
            &ns_annotations,
            &self.datastore.resolved_pools(),
            &self.datastore.node_labels(&self.node),
        )
        .map_err(|e| wire(codes::INVALID_NETWORK_CONFIG, e.to_string()))?;
        if want.ipv4.is_none() && want.ipv6.is_none() {
            // No pool selects the node: let IPAM say so in its own words.
            want.ipv4 = Some(AddressRequest::any());
        }
        Ok(want)
    }

    /// How long one IPAM operation may take, queueing included: a few API
    /// calls' worth, well inside the plugin's own timeout (30 s).
    fn ipam_budget(&self) -> Duration {
        (self.api_timeout * 4).min(Duration::from_secs(25))
    }

    fn ipam_metric(&self, op: &str, started: Instant, err: Option<&IpamError>) {
        let result = if err.is_some() { "error" } else { "ok" };
        self.metrics
            .ipam_operations
            .get_or_create(&Metrics::op_result(op, result))
            .inc();
        self.metrics
            .ipam_duration
            .get_or_create(&Metrics::op(op))
            .observe(started.elapsed().as_secs_f64());
        if let Some(e) = err {
            self.metrics
                .ipam_errors
                .get_or_create(&Metrics::op_result(op, ipam_error_kind(e)))
                .inc();
        }
    }

    async fn ready(
        &self,
        attachment: Attachment,
        pod: PodRef,
        host_interface: String,
        addresses: Vec<String>,
        mac: Option<String>,
    ) -> Result<()> {
        self.require_ready()?;
        let key = Self::key(&attachment)?;
        if !is_valid_ifname(&host_interface) {
            return Err(wire(
                codes::INVALID_NETWORK_CONFIG,
                format!("hostInterface {host_interface:?} is not an interface name"),
            ));
        }
        let mut ips = Vec::new();
        for a in &addresses {
            let ip = a
                .split('/')
                .next()
                .unwrap_or(a)
                .parse::<IpAddr>()
                .map_err(|_| {
                    wire(
                        codes::DECODE_FAILURE,
                        format!("Ready: address {a:?} is not an IP address with prefix"),
                    )
                })?;
            ips.push(ip);
        }
        let _guard = self.lock(&key).await;
        let Some(mut endpoint) = self.table_get(&key) else {
            return Err(wire(
                codes::UNKNOWN_CONTAINER,
                format!(
                    "Ready for {}: the agent allocated nothing for this attachment (Add first)",
                    key.as_str()
                ),
            ));
        };
        let have: BTreeSet<IpAddr> = endpoint.addresses.iter().copied().collect();
        let got: BTreeSet<IpAddr> = ips.iter().copied().collect();
        if have != got {
            return Err(wire(
                codes::INVALID_NETWORK_CONFIG,
                format!(
                    "Ready for {}: addresses {addresses:?} are not the ones allocated ({:?})",
                    key.as_str(),
                    endpoint.address_strings()
                ),
            ));
        }
        endpoint.host_interface = host_interface;
        endpoint.mac = mac;
        endpoint.pod.uid = pod.uid.or(endpoint.pod.uid);
        endpoint.state = EndpointState::Ready;
        self.table_put(endpoint.clone())?;
        // Routes and policy at once; the pod starts only when both are in.
        let (report, policy) = tokio::join!(self.dataplane.apply(), self.program_policy(&endpoint));
        if let Some(problem) = report.problem_with(&endpoint.host_interface, &endpoint.addresses) {
            return Err(wire(
                codes::IO_FAILURE,
                format!("programming endpoint {}: {problem}", key.as_str()),
            ));
        }
        policy?;
        self.annotate(&endpoint);
        tracing::info!(endpoint = key.as_str(), interface = %endpoint.host_interface, "endpoint programmed");
        Ok(())
    }

    /// Writes the pod's addresses as annotations, in the background so the
    /// ADD does not wait for the API.
    fn annotate(&self, e: &Endpoint) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &e.pod.namespace);
        let name = e.pod.name.clone();
        let ips: Vec<String> = e.addresses.iter().map(|ip| ip.to_string()).collect();
        let patch = json!({"metadata": {"annotations": {
            POD_IP_ANNOTATION: ips.first().cloned().unwrap_or_default(),
            POD_IPS_ANNOTATION: ips.join(","),
        }}});
        let metrics = self.metrics.clone();
        let timeout = self.api_timeout;
        tokio::spawn(async move {
            let params = PatchParams::default();
            let patch = Patch::Merge(&patch);
            let outcome = tokio::time::timeout(timeout, api.patch(&name, &params, &patch)).await;
            if !matches!(outcome, Ok(Ok(_))) {
                metrics.pod_annotation_errors.inc();
                tracing::warn!(pod = %name, "could not write the pod address annotations");
            }
        });
    }

    async fn del(&self, attachment: Attachment) -> Result<()> {
        let key = Self::key(&attachment)?;
        let _guard = self.lock(&key).await;
        let started = Instant::now();
        let budget = self.ipam_budget();
        let result = tokio::time::timeout(budget, async {
            let _ipam = self.ipam_lock.lock().await;
            self.allocator
                .release_handle(key.ipam_handle(), Some(&self.node))
                .await
        })
        .await
        .unwrap_or_else(|_| {
            Err(IpamError::Store(StoreError::Unavailable(format!(
                "IPAM did not finish within {budget:?}"
            ))))
        });
        self.ipam_metric("release", started, result.as_ref().err());
        let released = result.map_err(|e| {
            wire(
                codes::TRY_AGAIN_LATER,
                format!("releasing the addresses of {}: {e}", key.as_str()),
            )
        })?;
        let existed = self.table_get(&key).is_some();
        self.table_remove(&key)?;
        if existed && self.health.is_ready() {
            // Removes the route now if the host interface still exists.
            let _ = self.dataplane.apply().await;
        }
        tracing::info!(endpoint = key.as_str(), released = ?released, "deleted");
        Ok(())
    }

    /// Forgets endpoints whose pod is gone without a CNI DEL (a runtime that
    /// lost track of it, a node that rebooted): the pod is absent from the
    /// synced cache *and* the API confirms it (404), and the host interface no
    /// longer exists. Releases their addresses as DEL would. Returns the
    /// attachments it removed.
    pub async fn forget_endpoints_of_gone_pods(&self) -> Vec<String> {
        if !self.health.is_ready() {
            return Vec::new();
        }
        let Some(links) = self.dataplane.link_names().await else {
            return Vec::new();
        };
        let links: BTreeSet<String> = links.into_iter().collect();
        let candidates: Vec<Endpoint> = self
            .endpoints
            .lock()
            .map(|t| {
                t.iter()
                    .filter(|e| !links.contains(&e.host_interface))
                    .filter(|e| self.datastore.pod(&e.pod.namespace, &e.pod.name).is_none())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut removed = Vec::new();
        self.metrics.endpoint_cleanup_rounds.inc();
        for e in candidates {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &e.pod.namespace);
            match tokio::time::timeout(self.api_timeout, api.get_opt(&e.pod.name)).await {
                Ok(Ok(None)) => {}
                // Still there (the cache lags), or no answer: keep it.
                _ => continue,
            }
            let key = e.key();
            match self.del(e.attachment.clone()).await {
                Ok(()) => {
                    tracing::info!(endpoint = key.as_str(), pod = %format!("{}/{}", e.pod.namespace, e.pod.name), "forgot the endpoint of a pod that is gone (no CNI DEL came)");
                    self.metrics.endpoints_forgotten.inc();
                    removed.push(key.as_str().to_string());
                }
                Err(err) => {
                    tracing::warn!(endpoint = key.as_str(), error = %err.msg, "could not forget a gone pod's endpoint")
                }
            }
        }
        removed
    }

    async fn check(&self, attachment: Attachment) -> Result<EndpointInfo> {
        self.require_ready()?;
        let key = Self::key(&attachment)?;
        let Some(e) = self.table_get(&key) else {
            return Err(wire(
                codes::UNKNOWN_CONTAINER,
                format!("margay-agent holds no endpoint for {}", key.as_str()),
            ));
        };
        let held = tokio::time::timeout(
            self.api_timeout,
            self.allocator
                .handle_addresses(key.ipam_handle(), &self.node),
        )
        .await
        .map_err(|_| wire(codes::TRY_AGAIN_LATER, "IPAM did not answer in time"))?
        .map_err(|err| wire(codes::TRY_AGAIN_LATER, format!("reading IPAM: {err}")))?;
        let held: BTreeSet<IpAddr> = held.into_iter().collect();
        let want: BTreeSet<IpAddr> = e.addresses.iter().copied().collect();
        if held != want {
            return Err(wire(
                codes::IO_FAILURE,
                format!(
                    "endpoint {}: IPAM holds {held:?} for it, the agent recorded {want:?}",
                    key.as_str()
                ),
            ));
        }
        if e.state == EndpointState::Ready {
            // A pass also repairs what can be repaired; what cannot (the host
            // interface is gone) is the answer.
            let report = self.dataplane.apply().await;
            if let Some(problem) = report.problem_with(&e.host_interface, &e.addresses) {
                return Err(wire(
                    codes::IO_FAILURE,
                    format!("endpoint {}: {problem}", key.as_str()),
                ));
            }
        }
        Ok(EndpointInfo {
            addresses: e.address_strings(),
            host_interface: e.host_interface.clone(),
        })
    }

    fn status(&self) -> Result<()> {
        if self.health.is_ready() {
            Ok(())
        } else {
            Err(wire(
                codes::PLUGIN_NOT_AVAILABLE,
                format!(
                    "margay-agent on node {} is not ready: {}",
                    self.node,
                    self.health.reason()
                ),
            ))
        }
    }

    /// Releases this node's pod allocations whose attachment is not valid.
    async fn gc(&self, valid: Vec<Attachment>) -> Result<GcReport> {
        self.require_ready()?;
        let valid: BTreeSet<EndpointKey> = valid.iter().map(EndpointKey::of).collect();
        let blocks: Vec<IPAMBlock> = self
            .allocator
            .store()
            .list(None)
            .await
            .map_err(|e| wire(codes::TRY_AGAIN_LATER, format!("listing IPAM blocks: {e}")))?;
        let mut stale: BTreeSet<EndpointKey> = BTreeSet::new();
        for b in &blocks {
            let affine = b.spec.affine_node();
            for a in &b.spec.allocations {
                let node = a.node.as_deref().or(affine);
                if node != Some(self.node.as_str()) {
                    continue;
                }
                if let Some(k) = EndpointKey::parse(&a.handle)
                    && !valid.contains(&k)
                {
                    stale.insert(k);
                }
            }
        }
        // Records whose allocation is already gone are stale too.
        let recorded: Vec<EndpointKey> = self
            .endpoints
            .lock()
            .map(|t| t.iter().map(Endpoint::key).collect())
            .unwrap_or_default();
        stale.extend(recorded.into_iter().filter(|k| !valid.contains(k)));
        let mut report = GcReport::default();
        for key in stale {
            match self.del(key.attachment()).await {
                Ok(()) => report.released.push(key.as_str().to_string()),
                Err(e) => {
                    tracing::warn!(endpoint = key.as_str(), error = %e.msg, "GC could not release")
                }
            }
        }
        Ok(report)
    }
}

fn ipam_error_kind(e: &IpamError) -> &'static str {
    match e {
        IpamError::Store(StoreError::Unavailable(_)) => "unavailable",
        IpamError::Store(_) => "store",
        IpamError::Contention { .. } => "contention",
        IpamError::Exhausted { .. } | IpamError::NoPool { .. } => "exhausted",
        IpamError::Corrupt(_) => "corrupt",
        _ => "request",
    }
}

/// Maps an IPAM error to the wire: transient ones are "try again later".
fn ipam_wire(e: &IpamError, pod: &PodRef) -> WireError {
    let code = match e {
        IpamError::Store(_)
        | IpamError::Contention { .. }
        | IpamError::Exhausted { .. }
        | IpamError::NoPool { .. }
        | IpamError::NodeNotFound(_)
        | IpamError::AddressCoolingDown { .. } => codes::TRY_AGAIN_LATER,
        IpamError::Corrupt(_) => codes::IO_FAILURE,
        _ => codes::INVALID_NETWORK_CONFIG,
    };
    wire(
        code,
        format!(
            "allocating addresses for Pod {}/{}: {e}",
            pod.namespace, pod.name
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use margay_api::net::IpFamily;

    fn pod() -> PodRef {
        PodRef {
            namespace: "default".into(),
            name: "web".into(),
            uid: None,
        }
    }

    #[test]
    fn transient_ipam_errors_say_try_again_later_and_name_the_pod() {
        let unavailable = IpamError::Store(StoreError::Unavailable("down".into()));
        let e = ipam_wire(&unavailable, &pod());
        assert_eq!(e.code, codes::TRY_AGAIN_LATER);
        assert!(e.msg.contains("Pod default/web"), "{}", e.msg);
        let exhausted = IpamError::Exhausted {
            family: IpFamily::V4,
            node: "n1".into(),
            pools: vec!["p".into()],
            hint: String::new(),
        };
        assert_eq!(ipam_wire(&exhausted, &pod()).code, codes::TRY_AGAIN_LATER);
        assert_eq!(ipam_error_kind(&exhausted), "exhausted");
        assert_eq!(ipam_error_kind(&unavailable), "unavailable");
    }

    #[test]
    fn requests_that_cannot_be_met_as_asked_are_configuration_errors() {
        for e in [
            IpamError::PoolNotFound("nope".into()),
            IpamError::AddressNotInPool("192.168.9.9".parse().unwrap()),
            IpamError::AddressInUse {
                ip: "10.244.0.1".parse().unwrap(),
                handle: "x/eth0".into(),
            },
        ] {
            let w = ipam_wire(&e, &pod());
            assert_eq!(w.code, codes::INVALID_NETWORK_CONFIG, "{e}");
            assert!(w.msg.contains(&e.to_string()));
        }
    }

    #[test]
    fn attachments_that_are_not_safe_names_are_refused() {
        let bad = [
            ("c1", "../../x"),
            ("c 1", "eth0"),
            ("", "eth0"),
            ("c1", "waytoolonginterfacename"),
        ];
        for (cid, ifname) in bad {
            let a = Attachment {
                container_id: cid.into(),
                ifname: ifname.into(),
            };
            let e = EndpointHandler::key(&a).unwrap_err();
            assert_eq!(e.code, codes::INVALID_ENVIRONMENT, "{cid:?} {ifname:?}");
        }
        let ok = Attachment {
            container_id: "abc-123".into(),
            ifname: "eth0".into(),
        };
        assert_eq!(EndpointHandler::key(&ok).unwrap().as_str(), "abc-123/eth0");
    }
}
