//! Configuration: flags and environment (which win), then the
//! `AgentConfiguration` objects (`default`, then `node.<name>`), then defaults.

use clap::Parser;
use margay_api::ResolvedAgentConfig;
use margay_api::resources::agent::{LogFormat, LogLevel};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The file name of the conflist the agent installs.
pub const DEFAULT_CONFLIST_NAME: &str = "10-margay.conflist";
/// The network name in the conflist.
pub const NETWORK_NAME: &str = "margay";

/// margay-agent: the Margay per-node agent.
#[derive(Debug, Clone, Parser)]
#[command(name = "margay-agent", version)]
pub struct Cli {
    /// This node's name (as in its Node object).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Kubeconfig file; without it the in-cluster service account (or
    /// $KUBECONFIG / ~/.kube/config) is used.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The endpoint socket the CNI plugin calls.
    #[arg(long, env = "MARGAY_CNI_SOCKET", default_value = margay_api::endpoint::DEFAULT_SOCKET)]
    pub cni_socket: PathBuf,
    /// Directory the CNI conflist is installed into.
    #[arg(long, env = "MARGAY_CNI_CONF_DIR", default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// File name of the installed conflist.
    #[arg(long, env = "MARGAY_CNI_CONFLIST_NAME", default_value = DEFAULT_CONFLIST_NAME)]
    pub cni_conflist_name: String,
    /// Do not install the CNI conflist.
    #[arg(long, env = "MARGAY_SKIP_CNI_CONF")]
    pub skip_cni_conf: bool,
    /// The agent's node-local state (endpoint records).
    #[arg(long, env = "MARGAY_STATE_DIR", default_value = "/var/lib/margay")]
    pub state_dir: PathBuf,
    /// Address of /livez and /readyz (default 0.0.0.0:<healthPort>, 9099).
    #[arg(long, env = "MARGAY_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
    /// Address of /metrics (default 0.0.0.0:<metricsPort>, 9091).
    #[arg(long, env = "MARGAY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// trace, debug, info, warn, error (default: AgentConfiguration, else info).
    #[arg(long, env = "MARGAY_LOG_LEVEL", value_parser = parse_level)]
    pub log_level: Option<LogLevel>,
    /// text or json (default: AgentConfiguration, else text).
    #[arg(long, env = "MARGAY_LOG_FORMAT", value_parser = parse_format)]
    pub log_format: Option<LogFormat>,
    /// Pod interface MTU (default: AgentConfiguration, else the uplink's).
    #[arg(long, env = "MARGAY_MTU", value_parser = clap::value_parser!(u32).range(576..=9216))]
    pub mtu: Option<u32>,
    /// Full route and sysctl resync interval, e.g. 90s; 0s: only on change
    /// (default: AgentConfiguration routeRefreshInterval, else 90s).
    #[arg(long, env = "MARGAY_ROUTE_REFRESH_INTERVAL", value_parser = parse_duration)]
    pub route_refresh_interval: Option<Duration>,
    /// How often endpoints of pods that are gone without a CNI DEL are
    /// looked for (and released); 0s: never.
    #[arg(long, env = "MARGAY_ENDPOINT_CLEANUP_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub endpoint_cleanup_interval: Duration,
    /// Do not take part in running cluster-wide IPAM garbage collection.
    #[arg(long, env = "MARGAY_NO_IPAM_GC")]
    pub no_ipam_gc: bool,
    /// Time between IPAM garbage collection passes (of the elected agent).
    #[arg(long, env = "MARGAY_IPAM_GC_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub ipam_gc_interval: Duration,
    /// How long the IPAM GC leader's Lease lasts without renewal.
    #[arg(long, env = "MARGAY_IPAM_GC_LEASE_DURATION", default_value = "30s", value_parser = parse_duration)]
    pub ipam_gc_lease_duration: Duration,
    /// Namespace of the IPAM GC Lease (`margay-ipam-gc`).
    #[arg(long, env = "MARGAY_LEASE_NAMESPACE", default_value = "kube-system")]
    pub lease_namespace: String,
    /// Bound on each API call made while serving a CNI request, e.g. 5s.
    #[arg(long, env = "MARGAY_API_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub api_timeout: Duration,
    /// Full read-back and repair of the nftables policy table, e.g. 90s; 0s:
    /// only on change (default: AgentConfiguration dataplaneRefreshInterval,
    /// else 90s).
    #[arg(long, env = "MARGAY_DATAPLANE_REFRESH_INTERVAL", value_parser = parse_duration)]
    pub dataplane_refresh_interval: Option<Duration>,
    /// How long CNI ADD (`Ready`) waits for the pod's policy to be in the
    /// kernel, e.g. 10s; 0s: do not wait (default: AgentConfiguration
    /// cniPolicyWaitTimeout, else 10s).
    #[arg(long, env = "MARGAY_CNI_POLICY_WAIT_TIMEOUT", value_parser = parse_duration)]
    pub cni_policy_wait_timeout: Option<Duration>,
    /// Do not run BGP (no speaker, no routes to other nodes).
    #[arg(long, env = "MARGAY_NO_BGP")]
    pub no_bgp: bool,
    /// `node` (default) or `route-reflector`: reflects routes between its
    /// clients and installs no routes to pods.
    #[arg(long, env = "MARGAY_ROLE", value_enum, default_value = "node")]
    pub role: crate::routing::Role,
    /// Cluster id of a route reflector (default: its router id). Reflectors
    /// sharing one do not reflect to each other.
    #[arg(long, env = "MARGAY_ROUTE_REFLECTOR_CLUSTER_ID")]
    pub route_reflector_cluster_id: Option<std::net::Ipv4Addr>,
    /// This node's IPv4 address (BGP router id and peering address);
    /// default: autodetected.
    #[arg(long, env = "MARGAY_NODE_IP")]
    pub node_ip: Option<std::net::Ipv4Addr>,
    /// This node's IPv6 address; default: autodetected.
    #[arg(long, env = "MARGAY_NODE_IPV6")]
    pub node_ipv6: Option<std::net::Ipv6Addr>,
    /// first-found, interface=REGEX, cidr=CIDR[,CIDR] or kubernetes-internal-ip.
    #[arg(long, env = "IP_AUTODETECTION_METHOD", default_value = "first-found")]
    pub ip_autodetection_method: crate::routing::detect::DetectMethod,
    /// As --ip-autodetection-method for IPv6, or `none`.
    #[arg(long, env = "IP6_AUTODETECTION_METHOD", default_value = "first-found", value_parser = parse_v6_method)]
    pub ip6_autodetection_method: V6Method,
    /// This node's AS number, overriding BGPConfiguration's (recorded on the Node).
    #[arg(long, env = "MARGAY_AS_NUMBER", value_parser = clap::value_parser!(u32).range(1..))]
    pub as_number: Option<u32>,
    /// Namespace of the Secrets BGPPeer passwords name.
    #[arg(
        long,
        env = "MARGAY_BGP_SECRETS_NAMESPACE",
        default_value = "kube-system"
    )]
    pub bgp_secrets_namespace: String,
}

/// `--ip6-autodetection-method`: a method or `none`.
#[derive(Debug, Clone)]
pub struct V6Method(pub Option<crate::routing::detect::DetectMethod>);

fn parse_v6_method(s: &str) -> Result<V6Method, String> {
    if s.trim() == "none" {
        return Ok(V6Method(None));
    }
    s.parse().map(|m| V6Method(Some(m)))
}

/// Everything decided.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_name: String,
    pub kubeconfig: Option<PathBuf>,
    pub cni_socket: PathBuf,
    /// `None`: do not install a conflist.
    pub cni_conflist: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub health_listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub log_level: LogLevel,
    /// The level came from a flag or the environment: configuration changes
    /// in the cluster do not override it.
    pub log_level_pinned: bool,
    pub log_format: LogFormat,
    pub mtu: Option<u32>,
    pub route_refresh_interval: Option<Duration>,
    pub api_timeout: Duration,
    /// `None`: this agent never runs IPAM GC.
    pub ipam_gc: Option<crate::ipam_gc::IpamGcConfig>,
    /// `None`: never look for endpoints of gone pods.
    pub endpoint_cleanup_interval: Option<Duration>,
    /// `None`: the policy table is reconciled only on change.
    pub dataplane_refresh_interval: Option<Duration>,
    /// `None`: `Ready` does not wait for policy (the pod's interface drops
    /// everything until its policy is in).
    pub cni_policy_wait_timeout: Option<Duration>,
    /// BGP routing between nodes.
    pub routing: crate::routing::RoutingSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no node name: pass --node-name or set NODE_NAME (and no hostname to fall back on: {0})"
    )]
    NoNodeName(String),
    #[error("--cni-conflist-name {0:?}: must be a plain file name ending in .conflist")]
    BadConflistName(String),
}

impl Settings {
    /// Flags win over the cluster's configuration, which wins over defaults.
    pub fn resolve(cli: &Cli, cluster: &ResolvedAgentConfig) -> Result<Settings, ConfigError> {
        let node_name = match &cli.node_name {
            Some(n) if !n.is_empty() => n.clone(),
            _ => hostname().map_err(ConfigError::NoNodeName)?,
        };
        let name = &cli.cni_conflist_name;
        if name.contains('/') || !name.ends_with(".conflist") || name.starts_with('.') {
            return Err(ConfigError::BadConflistName(name.clone()));
        }
        let any = |port: u16| SocketAddr::from(([0, 0, 0, 0], port));
        Ok(Settings {
            node_name,
            kubeconfig: cli.kubeconfig.clone(),
            cni_socket: cli.cni_socket.clone(),
            cni_conflist: (!cli.skip_cni_conf).then(|| cli.cni_conf_dir.join(name)),
            state_dir: cli.state_dir.clone(),
            health_listen: cli.health_listen.unwrap_or(any(cluster.health_port)),
            metrics_listen: cli.metrics_listen.or(cluster.metrics_port.map(any)),
            log_level: cli.log_level.unwrap_or(cluster.log_level),
            log_level_pinned: cli.log_level.is_some(),
            log_format: cli.log_format.unwrap_or(cluster.log_format),
            mtu: cli.mtu.or(cluster.mtu),
            route_refresh_interval: match cli.route_refresh_interval {
                Some(d) if d.is_zero() => None,
                Some(d) => Some(d),
                None => cluster.route_refresh_interval,
            },
            api_timeout: cli.api_timeout,
            endpoint_cleanup_interval: (!cli.endpoint_cleanup_interval.is_zero())
                .then_some(cli.endpoint_cleanup_interval),
            dataplane_refresh_interval: match cli.dataplane_refresh_interval {
                Some(d) => (!d.is_zero()).then_some(d),
                None => cluster.dataplane_refresh_interval,
            },
            cni_policy_wait_timeout: match cli.cni_policy_wait_timeout {
                Some(d) => (!d.is_zero()).then_some(d),
                None => cluster.cni_policy_wait_timeout,
            },
            routing: crate::routing::RoutingSettings {
                enabled: !cli.no_bgp,
                role: cli.role,
                node_ip: cli.node_ip.map(std::net::IpAddr::V4),
                node_ipv6: cli.node_ipv6.map(std::net::IpAddr::V6),
                autodetect_v4: cli.ip_autodetection_method.clone(),
                autodetect_v6: cli.ip6_autodetection_method.0.clone(),
                rr_cluster_id: cli.route_reflector_cluster_id,
                as_number: cli.as_number,
                secrets_namespace: cli.bgp_secrets_namespace.clone(),
                ..Default::default()
            },
            ipam_gc: (!cli.no_ipam_gc).then(|| crate::ipam_gc::IpamGcConfig {
                lease_namespace: cli.lease_namespace.clone(),
                lease_duration: cli.ipam_gc_lease_duration.max(Duration::from_secs(1)),
                interval: cli.ipam_gc_interval,
                call_timeout: Duration::from_secs(30),
            }),
        })
    }
}

fn hostname() -> Result<String, String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").map_err(|e| e.to_string())?;
    let h = h.trim().to_string();
    if h.is_empty() {
        Err("the hostname is empty".into())
    } else {
        Ok(h)
    }
}

fn parse_level(s: &str) -> Result<LogLevel, String> {
    match s.to_ascii_lowercase().as_str() {
        "trace" => Ok(LogLevel::Trace),
        "debug" => Ok(LogLevel::Debug),
        "info" => Ok(LogLevel::Info),
        "warn" | "warning" => Ok(LogLevel::Warn),
        "error" => Ok(LogLevel::Error),
        _ => Err(format!("{s:?}: allowed trace, debug, info, warn, error")),
    }
}

fn parse_format(s: &str) -> Result<LogFormat, String> {
    match s.to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("{s:?}: allowed text, json")),
    }
}

/// `500ms`, `5s`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with a unit, e.g. 5s, 500ms, 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?}: unit must be ms, s, m or h")),
    }
}

/// The CNI conflist: margay first, then the reference portmap and bandwidth
/// plugins. cniVersion 1.0.0 because Debian's reference plugins (1.1.1) do not
/// know 1.1.0.
pub fn render_conflist(socket: &std::path::Path) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "plugins": [
            {"type": "margay", "socket": socket.display().to_string()},
            {"type": "portmap", "snat": true, "capabilities": {"portMappings": true}},
            {"type": "bandwidth", "capabilities": {"bandwidth": true}},
        ],
    })
}

/// Installs the conflist atomically; leaves an identical file untouched.
pub fn install_conflist(path: &std::path::Path, socket: &std::path::Path) -> std::io::Result<bool> {
    let mut body =
        serde_json::to_vec_pretty(&render_conflist(socket)).map_err(std::io::Error::other)?;
    body.push(b'\n');
    if std::fs::read(path).ok().as_deref() == Some(&body[..]) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &body)?;
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use margay_api::AgentConfigurationSpec;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["margay-agent"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap()
    }

    #[test]
    fn flags_win_over_the_cluster_configuration_which_wins_over_defaults() {
        let spec = AgentConfigurationSpec {
            log_level: Some(LogLevel::Debug),
            health_port: Some(9100),
            metrics_port: Some(0),
            mtu: Some(1400),
            ..Default::default()
        };
        let cluster = ResolvedAgentConfig::merge(Some(&spec), None);
        let s = Settings::resolve(&cli(&["--node-name", "n1"]), &cluster).unwrap();
        assert_eq!(s.log_level, LogLevel::Debug);
        assert_eq!(s.health_listen.port(), 9100);
        assert_eq!(s.metrics_listen, None, "metricsPort 0 turns metrics off");
        assert_eq!(s.mtu, Some(1400));
        assert_eq!(s.route_refresh_interval, Some(Duration::from_secs(90)));
        assert_eq!(s.dataplane_refresh_interval, Some(Duration::from_secs(90)));
        assert_eq!(s.cni_policy_wait_timeout, Some(Duration::from_secs(10)));
        let s = Settings::resolve(
            &cli(&[
                "--node-name",
                "n1",
                "--log-level",
                "warn",
                "--mtu",
                "1300",
                "--metrics-listen",
                "127.0.0.1:9999",
                "--route-refresh-interval",
                "0s",
                "--cni-policy-wait-timeout",
                "0s",
                "--dataplane-refresh-interval",
                "30s",
                "--skip-cni-conf",
            ]),
            &cluster,
        )
        .unwrap();
        assert_eq!(s.log_level, LogLevel::Warn);
        assert_eq!(s.mtu, Some(1300));
        assert_eq!(s.metrics_listen, Some("127.0.0.1:9999".parse().unwrap()));
        assert_eq!(s.route_refresh_interval, None);
        assert_eq!(s.cni_policy_wait_timeout, None, "0s: do not wait");
        assert_eq!(s.dataplane_refresh_interval, Some(Duration::from_secs(30)));
        assert_eq!(s.cni_conflist, None);
        let d = Settings::resolve(
            &cli(&["--node-name", "n1"]),
            &ResolvedAgentConfig::default(),
        )
        .unwrap();
        assert_eq!(d.health_listen.port(), 9099);
        assert_eq!(d.metrics_listen.map(|a| a.port()), Some(9091));
        assert_eq!(
            d.cni_conflist,
            Some(PathBuf::from("/etc/cni/net.d/10-margay.conflist"))
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        let mut args = vec!["margay-agent", "--mtu", "100"];
        assert!(Cli::try_parse_from(&args).is_err());
        args = vec!["margay-agent", "--log-level", "loud"];
        let e = Cli::try_parse_from(&args).unwrap_err().to_string();
        assert!(e.contains("--log-level") && e.contains("allowed"), "{e}");
        let bad = cli(&["--node-name", "n", "--cni-conflist-name", "../x.conflist"]);
        assert!(Settings::resolve(&bad, &ResolvedAgentConfig::default()).is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
    }

    #[test]
    fn conflist_chains_margay_portmap_bandwidth_and_installs_idempotently() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("cni.sock");
        let c = render_conflist(&sock);
        assert_eq!(c["cniVersion"], "1.0.0");
        let types: Vec<&str> = c["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["margay", "portmap", "bandwidth"]);
        assert_eq!(c["plugins"][0]["socket"], sock.display().to_string());
        let path = dir.path().join("net.d/10-margay.conflist");
        assert!(install_conflist(&path, &sock).unwrap());
        assert!(!install_conflist(&path, &sock).unwrap());
        let read: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(read, c);
    }
}
