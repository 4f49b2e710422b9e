//! BGP routing metrics, registered with the agent's others (`margay_bgp_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerState {
    /// FSM state: `Established`, `Active`, ...
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOp {
    /// `replace` or `delete`.
    pub op: String,
}

#[derive(Clone, Debug, Default)]
pub struct RoutingMetrics {
    /// Configured peers by session state.
    pub peers: Family<PeerState, Gauge>,
    /// Prefixes this node announces.
    pub announced_prefixes: Gauge,
    /// Best routes learned from peers.
    pub learned_prefixes: Gauge,
    /// Proto-88 routes the kernel holds (learned and blackholes) after a pass.
    pub kernel_routes: Gauge,
    /// Proto-88 route changes made.
    pub kernel_route_changes: Family<RouteOp, Counter>,
    /// Route changes the kernel refused.
    pub kernel_route_errors: Counter,
}

impl RoutingMetrics {
    pub fn register(r: &mut Registry) -> RoutingMetrics {
        let m = RoutingMetrics::default();
        r.register(
            "margay_bgp_peers",
            "BGP peers by session state",
            m.peers.clone(),
        );
        r.register(
            "margay_bgp_announced_prefixes",
            "Prefixes this node announces over BGP",
            m.announced_prefixes.clone(),
        );
        r.register(
            "margay_bgp_learned_prefixes",
            "Best routes learned from BGP peers",
            m.learned_prefixes.clone(),
        );
        r.register(
            "margay_bgp_kernel_routes",
            "Routes with protocol 88 in the kernel (remote blocks and own blackholes)",
            m.kernel_routes.clone(),
        );
        r.register(
            "margay_bgp_kernel_route_changes",
            "Protocol-88 route changes made, by op",
            m.kernel_route_changes.clone(),
        );
        r.register(
            "margay_bgp_kernel_route_errors",
            "Protocol-88 route changes the kernel refused",
            m.kernel_route_errors.clone(),
        );
        m
    }
}
