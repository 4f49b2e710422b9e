//! Prometheus metrics, named in Felix's spirit (`felix_*` -> `margay_*`),
//! served as text on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpResult {
    pub op: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Op {
    pub op: String,
}

type HistogramFamily = Family<Op, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric the agent exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Local endpoints by state (all known / ready).
    pub active_local_endpoints: Gauge,
    pub cni_requests: Family<OpResult, Counter>,
    pub cni_request_duration: HistogramFamily,
    pub ipam_operations: Family<OpResult, Counter>,
    pub ipam_errors: Family<OpResult, Counter>,
    pub ipam_duration: HistogramFamily,
    /// Routes of ours the kernel holds after the last apply.
    pub route_table_routes: Gauge,
    /// Route changes made, by op (replace/delete).
    pub route_table_changes: Family<Op, Counter>,
    /// Routes found missing or wrong after they had been programmed (repairs).
    pub route_table_repairs: Counter,
    pub route_table_errors: Counter,
    pub dataplane_apply_duration: HistogramFamily,
    pub sysctl_writes: Counter,
    /// 1 once every datastore cache has synced.
    pub datastore_in_sync: Gauge,
    pub pod_annotation_errors: Counter,
    /// Rounds of looking for endpoints of pods gone without a CNI DEL.
    pub endpoint_cleanup_rounds: Counter,
    /// Endpoints forgotten (and released) that way.
    pub endpoints_forgotten: Counter,
    /// 1 while this agent holds the IPAM GC Lease.
    pub ipam_gc_leader: Gauge,
    pub ipam_gc_passes: Family<OpResult, Counter>,
    /// Leaked addresses released by GC (Calico: ipam_gc_reclamations).
    pub ipam_gc_reclamations: Counter,
    /// The nftables policy dataplane's.
    pub policy: crate::dataplane::policy::metrics::PolicyMetrics,
    /// BGP routing's.
    pub routing: crate::routing::metrics::RoutingMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let policy = crate::dataplane::policy::metrics::PolicyMetrics::register(&mut r);
        let routing = crate::routing::metrics::RoutingMetrics::register(&mut r);
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            active_local_endpoints: Gauge::default(),
            cni_requests: Family::default(),
            cni_request_duration: Family::new_with_constructor(latency_histogram),
            ipam_operations: Family::default(),
            ipam_errors: Family::default(),
            ipam_duration: Family::new_with_constructor(latency_histogram),
            route_table_routes: Gauge::default(),
            route_table_changes: Family::default(),
            route_table_repairs: Counter::default(),
            route_table_errors: Counter::default(),
            dataplane_apply_duration: Family::new_with_constructor(latency_histogram),
            sysctl_writes: Counter::default(),
            datastore_in_sync: Gauge::default(),
            pod_annotation_errors: Counter::default(),
            endpoint_cleanup_rounds: Counter::default(),
            endpoints_forgotten: Counter::default(),
            ipam_gc_leader: Gauge::default(),
            ipam_gc_passes: Family::default(),
            ipam_gc_reclamations: Counter::default(),
            policy,
            routing,
        };
        r.register(
            "margay_active_local_endpoints",
            "Local workload endpoints the agent holds",
            m.active_local_endpoints.clone(),
        );
        r.register(
            "margay_cni_requests",
            "Requests on the CNI endpoint socket, by op and result",
            m.cni_requests.clone(),
        );
        r.register(
            "margay_cni_request_duration_seconds",
            "Time to answer a CNI endpoint request, by op",
            m.cni_request_duration.clone(),
        );
        r.register(
            "margay_ipam_operations",
            "IPAM allocations and releases, by op and result",
            m.ipam_operations.clone(),
        );
        r.register(
            "margay_ipam_errors",
            "Failed IPAM operations, by op and error kind (result label)",
            m.ipam_errors.clone(),
        );
        r.register(
            "margay_ipam_operation_duration_seconds",
            "Time of IPAM operations, by op",
            m.ipam_duration.clone(),
        );
        r.register(
            "margay_route_table_routes",
            "Endpoint routes (our route protocol) in the kernel after the last apply",
            m.route_table_routes.clone(),
        );
        r.register(
            "margay_route_table_changes",
            "Route replacements and deletions made, by op",
            m.route_table_changes.clone(),
        );
        r.register(
            "margay_route_table_repairs",
            "Routes found missing or wrong after they had been programmed",
            m.route_table_repairs.clone(),
        );
        r.register(
            "margay_route_table_errors",
            "Failed route reads or writes",
            m.route_table_errors.clone(),
        );
        r.register(
            "margay_int_dataplane_apply_time_seconds",
            "Time of one dataplane reconcile pass, by trigger",
            m.dataplane_apply_duration.clone(),
        );
        r.register(
            "margay_sysctl_writes",
            "Host-side sysctls written (set or repaired)",
            m.sysctl_writes.clone(),
        );
        r.register(
            "margay_datastore_in_sync",
            "1 once every datastore cache has synced with the API server",
            m.datastore_in_sync.clone(),
        );
        r.register(
            "margay_pod_annotation_errors",
            "Failed writes of the pod address annotations",
            m.pod_annotation_errors.clone(),
        );
        r.register(
            "margay_endpoint_cleanup_rounds",
            "Rounds of looking for endpoints of pods gone without a CNI DEL",
            m.endpoint_cleanup_rounds.clone(),
        );
        r.register(
            "margay_endpoints_forgotten",
            "Endpoints of pods gone without a CNI DEL, released and forgotten",
            m.endpoints_forgotten.clone(),
        );
        r.register(
            "margay_ipam_gc_leader",
            "1 while this agent holds the IPAM garbage collection Lease",
            m.ipam_gc_leader.clone(),
        );
        r.register(
            "margay_ipam_gc_passes",
            "IPAM garbage collection passes run here, by result",
            m.ipam_gc_passes.clone(),
        );
        r.register(
            "margay_ipam_gc_reclamations",
            "Leaked addresses released by IPAM garbage collection",
            m.ipam_gc_reclamations.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            ..m
        }
    }

    pub fn op_result(op: &str, result: &str) -> OpResult {
        OpResult {
            op: op.to_string(),
            result: result.to_string(),
        }
    }

    pub fn op(op: &str) -> Op {
        Op { op: op.to_string() }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exported_under_margay_names() {
        let m = Metrics::new();
        m.cni_requests
            .get_or_create(&Metrics::op_result("add", "ok"))
            .inc();
        m.cni_request_duration
            .get_or_create(&Metrics::op("add"))
            .observe(0.002);
        m.active_local_endpoints.set(3);
        let text = m.encode();
        assert!(
            text.contains("margay_cni_requests_total{op=\"add\",result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("margay_cni_request_duration_seconds_count{op=\"add\"} 1"),
            "{text}"
        );
        assert!(text.contains("margay_active_local_endpoints 3"), "{text}");
        assert!(
            text.contains("margay_route_table_repairs_total 0"),
            "{text}"
        );
    }
}
