//! The policy dataplane's metrics, registered with the agent's others.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabel {
    /// `netlink` (raw element batches) or `libnftables`.
    pub path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// `delta` (one pass's changes) or `reconcile` (read back and repair).
    pub op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabel {
    /// What changed: `pod`, `namespace`, `networkpolicy`,
    /// `globalnetworkpolicy`, `endpoint`.
    pub trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabel {
    /// `NetworkPolicy ns/name` or `GlobalNetworkPolicy name`.
    pub policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct EndpointDirection {
    pub namespace: String,
    pub pod: String,
    pub interface: String,
    /// `ingress` (to the pod) or `egress` (from it).
    pub direction: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 0.1 ms .. ~6.5 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// Metrics of the nftables policy dataplane.
#[derive(Clone)]
pub struct PolicyMetrics {
    pub rules: Gauge,
    pub sets: Gauge,
    pub set_elements: Gauge,
    pub endpoints: Gauge,
    pub transactions: Family<PathLabel, Counter>,
    pub transaction_duration: HistogramFamily<OpLabel>,
    pub fallbacks: Counter,
    pub repairs: Counter,
    pub errors: Counter,
    pub programming_latency: HistogramFamily<TriggerLabel>,
    pub refused: Family<PolicyLabel, Gauge>,
    pub dropped_packets: Family<EndpointDirection, Counter>,
    pub dropped_bytes: Family<EndpointDirection, Counter>,
    pub conntrack_deleted: Counter,
    pub in_sync: Gauge,
}

impl PolicyMetrics {
    /// Creates the metrics and registers them in `r`.
    pub fn register(r: &mut Registry) -> PolicyMetrics {
        let m = PolicyMetrics {
            rules: Gauge::default(),
            sets: Gauge::default(),
            set_elements: Gauge::default(),
            endpoints: Gauge::default(),
            transactions: Family::default(),
            transaction_duration: Family::new_with_constructor(latency),
            fallbacks: Counter::default(),
            repairs: Counter::default(),
            errors: Counter::default(),
            programming_latency: Family::new_with_constructor(latency),
            refused: Family::default(),
            dropped_packets: Family::default(),
            dropped_bytes: Family::default(),
            conntrack_deleted: Counter::default(),
            in_sync: Gauge::default(),
        };
        r.register(
            "margay_policy_rules",
            "Rules in policy chains (one per policy rule, peer and port entry)",
            m.rules.clone(),
        );
        r.register(
            "margay_nft_sets",
            "Sets in the inet margay table (selectors, ipBlocks, named ports)",
            m.sets.clone(),
        );
        r.register(
            "margay_nft_set_elements",
            "Elements over all sets of the inet margay table",
            m.set_elements.clone(),
        );
        r.register(
            "margay_policy_endpoints",
            "Local endpoints with compiled policy programs",
            m.endpoints.clone(),
        );
        r.register(
            "margay_nft_transactions",
            "nftables transactions sent, by path (netlink element batches, libnftables)",
            m.transactions.clone(),
        );
        r.register(
            "margay_nft_transaction_duration_seconds",
            "Time to program one pass into the kernel, by op (delta, reconcile)",
            m.transaction_duration.clone(),
        );
        r.register(
            "margay_nft_fallbacks",
            "Deltas the kernel refused, repaired by a reconcile",
            m.fallbacks.clone(),
        );
        r.register(
            "margay_nft_reconcile_repairs",
            "Reconciles that found the table differing from what the agent wants, and fixed it",
            m.repairs.clone(),
        );
        r.register(
            "margay_nft_errors",
            "Failed policy passes (retried)",
            m.errors.clone(),
        );
        r.register(
            "margay_policy_programming_latency_seconds",
            "From a change seen by the agent (watch event, endpoint) to its policy in the kernel, by trigger",
            m.programming_latency.clone(),
        );
        r.register(
            "margay_policy_refused",
            "1 for each policy the compiler refused (its previous version stays in force)",
            m.refused.clone(),
        );
        r.register(
            "margay_policy_dropped_packets",
            "Packets an endpoint's policy dropped (no rule allowed), by endpoint and direction",
            m.dropped_packets.clone(),
        );
        r.register(
            "margay_policy_dropped_bytes",
            "Bytes an endpoint's policy dropped, by endpoint and direction",
            m.dropped_bytes.clone(),
        );
        r.register(
            "margay_conntrack_flows_deleted",
            "Tracked connections deleted because a policy change denies them",
            m.conntrack_deleted.clone(),
        );
        r.register(
            "margay_policy_in_sync",
            "1 once policy is programmed from synced caches (the agent is not ready before)",
            m.in_sync.clone(),
        );
        m
    }

    pub fn op(op: &str) -> OpLabel {
        OpLabel { op: op.into() }
    }

    pub fn trigger(t: &str) -> TriggerLabel {
        TriggerLabel { trigger: t.into() }
    }
}
