//! Validation of every kind: objects as operators write them (YAML), and the
//! messages they get back.

use margay_api::IPAMHandle;
use margay_api::resources::agent::{ResolvedAgentConfig, validate_agent_configuration};
use margay_api::resources::bgp::{
    CommunityValue, ResolvedBgpConfig, validate_bgp_configuration, validate_bgp_peer,
};
use margay_api::resources::ipam::{
    ResolvedIpamConfig, validate_block_affinity, validate_ipam_block, validate_ipam_configuration,
};
use margay_api::resources::ippool::{validate_ip_pool, validate_ip_pools};
use margay_api::*;
use serde::de::DeserializeOwned;

fn yaml<T: DeserializeOwned>(text: &str) -> T {
    match serde_saphyr::from_str(text) {
        Ok(v) => v,
        Err(e) => panic!("test YAML does not parse: {e}\n{text}"),
    }
}

/// Assert `result` is an error naming `field` with a message containing `needle`.
fn assert_rejects(result: Result<(), ValidationError>, field: &str, needle: &str) {
    match result {
        Ok(()) => panic!("accepted; expected {field}: {needle}"),
        Err(e) => {
            let text = e.to_string();
            assert!(
                e.errors
                    .iter()
                    .any(|f| f.field == field && f.message.contains(needle)),
                "expected {field}: ...{needle}...; got: {text}"
            );
        }
    }
}

fn pool(name: &str, spec: &str) -> IPPool {
    yaml(&format!(
        "apiVersion: margay.dev/v1\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n{spec}"
    ))
}

#[test]
fn ip_pool_accepts_good_pools_and_applies_defaults() {
    let p = pool(
        "default-ipv4",
        "  cidr: 10.244.0.0/16\n  natOutgoing: true\n",
    );
    validate_ip_pool(&p).expect("valid");
    let r = ResolvedPool::from_pool(&p).expect("resolves");
    assert_eq!(r.block_size, 26);
    assert_eq!(r.vxlan_mode, EncapMode::Never);
    assert!(r.nat_outgoing && !r.disabled);
    assert_eq!(r.node_selector, Selector::all());
    assert_eq!(r.block_len(), 64);

    let p6 = pool(
        "v6",
        "  cidr: fd00:10:244::/56\n  vxlanMode: CrossSubnet\n  nodeSelector: zone == 'a'\n",
    );
    let r6 = ResolvedPool::from_pool(&p6).expect("resolves");
    assert_eq!(r6.block_size, 122);
    assert_eq!(r6.vxlan_mode, EncapMode::CrossSubnet);
    assert_eq!(r6.node_selector.to_string(), "zone == 'a'");
    let defaulted = p6.spec.with_defaults();
    assert_eq!(defaulted.block_size, Some(122));
    assert_eq!(defaulted.ipip_mode, Some(EncapMode::Never));
}

#[test]
fn ip_pool_rejections_name_field_and_allowed_values() {
    assert_rejects(
        validate_ip_pool(&pool("p", "  cidr: 10.244.0.0\n")),
        "spec.cidr",
        "ADDRESS/PREFIX",
    );
    assert_rejects(
        validate_ip_pool(&pool("p", "  cidr: 10.244.1.0/16\n")),
        "spec.cidr",
        "10.244.0.0/16",
    );
    assert_rejects(
        validate_ip_pool(&pool("p", "  cidr: 10.0.0.0/33\n")),
        "spec.cidr",
        "0..=32",
    );
    assert_rejects(
        validate_ip_pool(&pool("p", "  cidr: 10.0.0.0/16\n  blockSize: 19\n")),
        "spec.blockSize",
        "allowed 20..=32",
    );
    assert_rejects(
        validate_ip_pool(&pool("p", "  cidr: fd00::/48\n  blockSize: 26\n")),
        "spec.blockSize",
        "allowed 116..=128",
    );
    assert_rejects(
        validate_ip_pool(&pool("p", "  cidr: 10.0.0.0/28\n")),
        "spec.blockSize",
        "shorter than the pool prefix",
    );
    assert_rejects(
        validate_ip_pool(&pool(
            "p",
            "  cidr: 10.0.0.0/16\n  vxlanMode: Always\n  ipipMode: CrossSubnet\n",
        )),
        "spec.vxlanMode",
        "both",
    );
    assert_rejects(
        validate_ip_pool(&pool("p", "  cidr: fd00::/48\n  ipipMode: Always\n")),
        "spec.ipipMode",
        "IPv4 only",
    );
    assert_rejects(
        validate_ip_pool(&pool("p", "  cidr: 169.254.0.0/16\n")),
        "spec.cidr",
        "link-local",
    );
    assert_rejects(
        validate_ip_pool(&pool(
            "p",
            "  cidr: 10.0.0.0/16\n  nodeSelector: has(zone\n",
        )),
        "spec.nodeSelector",
        "at character 8",
    );
    assert_rejects(
        validate_ip_pool(&pool("Bad_Name", "  cidr: 10.0.0.0/16\n")),
        "metadata.name",
        "lowercase",
    );
    // Several problems are reported together.
    let err = validate_ip_pool(&pool(
        "p",
        "  cidr: 10.0.0.0/16\n  blockSize: 40\n  nodeSelector: '=='\n",
    ))
    .expect_err("invalid");
    assert_eq!(err.errors.len(), 2, "{err}");
    assert!(
        err.to_string().starts_with("IPPool \"p\" is invalid: "),
        "{err}"
    );
}

#[test]
fn ip_pools_must_not_overlap() {
    let pools = vec![
        pool("a", "  cidr: 10.0.0.0/16\n"),
        pool("b", "  cidr: 10.1.0.0/16\n"),
        pool("c", "  cidr: 10.0.128.0/17\n"),
        pool("d", "  cidr: fd00::/48\n"),
    ];
    let errs = validate_ip_pools(&pools).expect_err("c overlaps a");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].name, "c");
    assert!(
        errs[0].to_string().contains("overlaps IPPool \"a\""),
        "{}",
        errs[0]
    );
    validate_ip_pools(&pools[..2]).expect("disjoint pools");
}

#[test]
fn bgp_peer_rules() {
    let peer = |spec: &str| -> BGPPeer {
        yaml(&format!(
            "apiVersion: margay.dev/v1\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n{spec}"
        ))
    };
    validate_bgp_peer(&peer("  peerIP: 192.0.2.1\n  asNumber: 65001\n")).expect("valid");
    validate_bgp_peer(&peer(
        "  peerIP: '[fd00::1]:1790'\n  asNumber: 4294967295\n  node: node-1\n",
    ))
    .expect("valid");
    validate_bgp_peer(&peer(
        "  peerSelector: has(route-reflector)\n  nodeSelector: \"!has(route-reflector)\"\n",
    ))
    .expect("valid");
    assert_rejects(
        validate_bgp_peer(&peer("  asNumber: 65001\n")),
        "spec.peerIP",
        "exactly one",
    );
    assert_rejects(
        validate_bgp_peer(&peer(
            "  peerIP: 192.0.2.1\n  peerSelector: all()\n  asNumber: 1\n",
        )),
        "spec.peerSelector",
        "exactly one",
    );
    assert_rejects(
        validate_bgp_peer(&peer("  peerIP: 192.0.2.1\n")),
        "spec.asNumber",
        "1..=4294967295",
    );
    assert_rejects(
        validate_bgp_peer(&peer("  peerIP: 192.0.2.1\n  asNumber: 0\n")),
        "spec.asNumber",
        "1..=4294967295",
    );
    assert_rejects(
        validate_bgp_peer(&peer("  peerSelector: all()\n  asNumber: 65001\n")),
        "spec.asNumber",
        "must not be set",
    );
    assert_rejects(
        validate_bgp_peer(&peer(
            "  peerIP: fd00::1:1790\n  asNumber: 1\n  node: a\n  nodeSelector: all()\n",
        )),
        "spec.nodeSelector",
        "at most one",
    );
    assert_rejects(
        validate_bgp_peer(&peer("  peerIP: 192.0.2.1:0\n  asNumber: 1\n")),
        "spec.peerIP",
        "port 0",
    );
    assert_rejects(
        validate_bgp_peer(&peer("  peerIP: 192.0.2.300\n  asNumber: 1\n")),
        "spec.peerIP",
        "[IPv6]:port",
    );
    assert_rejects(
        validate_bgp_peer(&peer("  peerSelector: rr = 'x'\n")),
        "spec.peerSelector",
        "operator",
    );
    assert_rejects(
        validate_bgp_peer(&peer(
            "  peerIP: 192.0.2.1\n  asNumber: 1\n  keepaliveTime: 0s\n",
        )),
        "spec.keepaliveTime",
        "1s..=21845s",
    );
    assert_rejects(
        validate_bgp_peer(&peer(
            "  peerIP: 192.0.2.1\n  asNumber: 1\n  ttlSecurity: 0\n",
        )),
        "spec.ttlSecurity",
        "1..=255",
    );
}

#[test]
fn peer_address_parsing() {
    let p = PeerAddress::parse("192.0.2.1").expect("v4");
    assert_eq!((p.ip.to_string(), p.port), ("192.0.2.1".into(), None));
    let p = PeerAddress::parse("192.0.2.1:1790").expect("v4:port");
    assert_eq!(p.port, Some(1790));
    assert_eq!(p.socket_addr(179).to_string(), "192.0.2.1:1790");
    let p = PeerAddress::parse("fd00::1").expect("v6");
    assert_eq!(p.socket_addr(179).to_string(), "[fd00::1]:179");
    let p = PeerAddress::parse("[fd00::1]:1790").expect("[v6]:port");
    assert_eq!(p.port, Some(1790));
    // An IPv6 address with a port must be bracketed; this one is an address.
    assert_eq!(PeerAddress::parse("fd00::1:1790").expect("v6").port, None);
    assert!(PeerAddress::parse("192.0.2.1:65536").is_err());
    assert!(PeerAddress::parse("host.example:179").is_err());
}

#[test]
fn bgp_configuration_rules_and_defaults() {
    let cfg = |name: &str, spec: &str| -> BGPConfiguration {
        yaml(&format!(
            "apiVersion: margay.dev/v1\nkind: BGPConfiguration\nmetadata:\n  name: {name}\nspec:\n{spec}"
        ))
    };
    let good = cfg(
        "default",
        "  asNumber: 65000\n  nodeToNodeMeshEnabled: false\n  serviceClusterIPs:\n  - cidr: 10.96.0.0/12\n  communities:\n  - name: no-export\n    value: '65535:65281'\n  - name: large\n    value: '65000:1:2'\n  prefixAdvertisements:\n  - cidr: 10.244.0.0/16\n    communities: [no-export, '65000:100']\n",
    );
    validate_bgp_configuration(&good).expect("valid");
    let r = ResolvedBgpConfig::from_spec(&good.spec);
    assert_eq!(
        (r.as_number, r.node_to_node_mesh, r.listen_port),
        (65000, false, 179)
    );
    let d = ResolvedBgpConfig::from_spec(&BGPConfigurationSpec::default());
    assert_eq!((d.as_number, d.node_to_node_mesh), (64512, true));
    assert_eq!(d.node_mesh_max_restart_time.as_secs(), 120);

    assert_rejects(
        validate_bgp_configuration(&cfg("other", "  asNumber: 1\n")),
        "metadata.name",
        "\"default\"",
    );
    assert_rejects(
        validate_bgp_configuration(&cfg("default", "  asNumber: 0\n")),
        "spec.asNumber",
        "1..=4294967295",
    );
    assert_rejects(
        validate_bgp_configuration(&cfg(
            "default",
            "  communities:\n  - name: x\n    value: '65536:1'\n",
        )),
        "spec.communities[0].value",
        "aa:nn",
    );
    assert_rejects(
        validate_bgp_configuration(&cfg(
            "default",
            "  prefixAdvertisements:\n  - cidr: 10.0.0.0/8\n    communities: [nope]\n",
        )),
        "spec.prefixAdvertisements[0].communities[0]",
        "neither",
    );
    assert_rejects(
        validate_bgp_configuration(&cfg(
            "default",
            "  serviceClusterIPs:\n  - cidr: 10.96.0.1/12\n",
        )),
        "spec.serviceClusterIPs[0].cidr",
        "host bits",
    );
    assert_eq!(
        CommunityValue::parse("1:2"),
        Ok(CommunityValue::Standard(1, 2))
    );
    assert_eq!(
        CommunityValue::parse("4294967295:0:1"),
        Ok(CommunityValue::Large(u32::MAX, 0, 1))
    );
    assert!(CommunityValue::parse("1:2:3:4").is_err());
    assert!(CommunityValue::parse("-1:2").is_err());
}

#[test]
fn ipam_configuration_defaults_and_rules() {
    let cfg = |name: &str, spec: &str| -> IPAMConfiguration {
        yaml(&format!(
            "apiVersion: margay.dev/v1\nkind: IPAMConfiguration\nmetadata:\n  name: {name}\nspec:\n{spec}"
        ))
    };
    let c = cfg(
        "default",
        "  strictAffinity: true\n  maxBlocksPerHost: 4\n  releasedAddressCooldown: 30s\n",
    );
    validate_ipam_configuration(&c).expect("valid");
    let r = ResolvedIpamConfig::from_spec(&c.spec);
    assert!(r.strict_affinity && r.auto_allocate_blocks);
    assert_eq!(r.max_blocks_per_host, Some(4));
    assert_eq!(r.released_address_cooldown.as_secs(), 30);
    assert_eq!(r.leak_grace_period.as_secs(), 900);
    assert_eq!(ResolvedIpamConfig::default().max_blocks_per_host, None);
    assert_rejects(
        validate_ipam_configuration(&cfg("x", "  strictAffinity: true\n")),
        "metadata.name",
        "default",
    );
    assert_rejects(
        validate_ipam_configuration(&cfg("default", "  releasedAddressCooldown: 48h\n")),
        "spec.releasedAddressCooldown",
        "0s..=86400s",
    );
}

#[test]
fn agent_configuration_merges_node_override() {
    let cfg = |name: &str, spec: &str| -> AgentConfiguration {
        yaml(&format!(
            "apiVersion: margay.dev/v1\nkind: AgentConfiguration\nmetadata:\n  name: {name}\nspec:\n{spec}"
        ))
    };
    let global = cfg(
        "default",
        "  logLevel: Debug\n  mtu: 1400\n  routeRefreshInterval: 30s\n",
    );
    let node = cfg(
        "node.worker-1",
        "  logLevel: Warn\n  metricsPort: 0\n  cniPolicyWaitTimeout: 0s\n",
    );
    validate_agent_configuration(&global).expect("valid");
    validate_agent_configuration(&node).expect("valid");
    let r = ResolvedAgentConfig::merge(Some(&global.spec), Some(&node.spec));
    assert_eq!(r.log_level, resources::agent::LogLevel::Warn);
    assert_eq!(r.mtu, Some(1400));
    assert_eq!(r.metrics_port, None);
    assert_eq!(r.cni_policy_wait_timeout, None);
    assert_eq!(r.route_refresh_interval.map(|d| d.as_secs()), Some(30));
    let d = ResolvedAgentConfig::default();
    assert_eq!(
        (d.health_port, d.metrics_port, d.vxlan_vni, d.vxlan_port),
        (9099, Some(9091), 4096, 4789)
    );
    assert_eq!(d.cni_policy_wait_timeout.map(|d| d.as_secs()), Some(10));
    assert_eq!(
        resources::agent::agent_config_name_for_node("n1"),
        "node.n1"
    );

    assert_rejects(
        validate_agent_configuration(&cfg("worker-1", "  mtu: 1500\n")),
        "metadata.name",
        "node.<nodename>",
    );
    assert_rejects(
        validate_agent_configuration(&cfg("default", "  mtu: 100\n")),
        "spec.mtu",
        "576..=9216",
    );
    assert_rejects(
        validate_agent_configuration(&cfg("default", "  healthPort: 9091\n  metricsPort: 9091\n")),
        "spec.metricsPort",
        "differ",
    );
    assert_rejects(
        validate_agent_configuration(&cfg("default", "  vxlanVNI: 16777216\n")),
        "spec.vxlanVNI",
        "1..=16777215",
    );
}

#[test]
fn ipam_objects_are_checked_for_consistency() {
    let block: IPAMBlock = yaml(
        "apiVersion: margay.dev/v1\nkind: IPAMBlock\nmetadata:\n  name: 10-0-0-0-26\nspec:\n  cidr: 10.0.0.0/26\n  affinity: host:n1\n  inUse: 2\n  allocations:\n  - {ordinal: 0, handle: a}\n  - {ordinal: 64, handle: b, node: n2}\n",
    );
    assert_rejects(
        validate_ipam_block(&block),
        "spec.allocations[1].ordinal",
        "outside the block",
    );
    assert_eq!(block.spec.affine_node(), Some("n1"));
    let misnamed: IPAMBlock = yaml(
        "apiVersion: margay.dev/v1\nkind: IPAMBlock\nmetadata:\n  name: foo\nspec:\n  cidr: 10.0.0.0/26\n",
    );
    assert_rejects(
        validate_ipam_block(&misnamed),
        "metadata.name",
        "10-0-0-0-26",
    );
    let aff: BlockAffinity = yaml(
        "apiVersion: margay.dev/v1\nkind: BlockAffinity\nmetadata:\n  name: n1-10-0-0-0-26\nspec:\n  node: n1\n  cidr: 10.0.0.0/26\n  state: pendingDeletion\n",
    );
    validate_block_affinity(&aff).expect("valid");
    assert_eq!(aff.spec.state, AffinityState::PendingDeletion);
    let handle: IPAMHandle = yaml(
        "apiVersion: margay.dev/v1\nkind: IPAMHandle\nmetadata:\n  name: other\nspec:\n  handleID: abc\n  node: n1\n  blocks: {'10.0.0.0/26': 1, 'x': 2}\n",
    );
    let err = margay_api::resources::ipam::validate_ipam_handle(&handle).expect_err("invalid");
    assert_eq!(err.errors.len(), 2, "{err}");
    assert!(
        err.errors
            .iter()
            .any(|e| e.field == "metadata.name" && e.message.contains("\"abc\"")),
        "{err}"
    );
}
