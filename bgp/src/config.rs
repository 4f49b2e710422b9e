//! Speaker and peer configuration, as the library takes it and as
//! `margay-bgpd` reads it from YAML (field names are the YAML keys).
//!
//! Every field a user sets is checked by [`SpeakerConfig::validate`] /
//! [`PeerConfig::validate`]; the error names the peer and the field.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::{Family, Prefix};
use crate::policy::PrefixFilter;

/// Defaults, in seconds unless said otherwise.
pub mod defaults {
    /// Proposed hold time (RFC 4271 suggests 90).
    pub const HOLD_TIME: u16 = 90;
    /// Seconds between outgoing connection attempts.
    pub const CONNECT_RETRY_TIME: u16 = 10;
    /// RFC 9687 suggests 8 minutes for the send hold timer.
    pub const SEND_HOLD_TIME: u16 = 480;
    /// Graceful restart time we advertise (RFC 4724 suggests at most the
    /// hold time; 120 is what FRR and BIRD use).
    pub const RESTART_TIME: u16 = 120;
    /// How long a helper keeps a restarted peer's stale routes waiting for
    /// its End-of-RIB (FRR's `stalepath-time`).
    pub const STALE_ROUTES_TIME: u16 = 360;
    /// How long a restarting speaker waits for End-of-RIB from its peers
    /// before selecting routes anyway (RFC 4724 §4.1 selection deferral).
    pub const SELECTION_DEFERRAL_TIME: u16 = 360;
    /// The BGP port.
    pub const PORT: u16 = 179;
}

/// An address family Margay exchanges, as written in config files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddressFamily {
    /// IPv4 unicast.
    Ipv4Unicast,
    /// IPv6 unicast (MP-BGP).
    Ipv6Unicast,
}

impl AddressFamily {
    /// The AFI/SAFI pair.
    pub fn family(self) -> Family {
        match self {
            AddressFamily::Ipv4Unicast => Family::IPV4_UNICAST,
            AddressFamily::Ipv6Unicast => Family::IPV6_UNICAST,
        }
    }

    /// The family of `prefix`.
    pub fn of(prefix: &Prefix) -> AddressFamily {
        if prefix.is_ipv4() {
            AddressFamily::Ipv4Unicast
        } else {
            AddressFamily::Ipv6Unicast
        }
    }

    /// From an AFI/SAFI pair Margay speaks.
    pub fn from_family(family: Family) -> Option<AddressFamily> {
        match family {
            Family::IPV4_UNICAST => Some(AddressFamily::Ipv4Unicast),
            Family::IPV6_UNICAST => Some(AddressFamily::Ipv6Unicast),
            _ => None,
        }
    }
}

/// Graceful restart (RFC 4724) settings of the speaker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GracefulRestartConfig {
    /// Advertise the capability and act as helper for restarting peers.
    pub enabled: bool,
    /// Restart time we advertise: how long peers keep our routes after our
    /// session drops.
    pub restart_time: u16,
    /// How long we keep a restarted peer's stale routes once its session is
    /// back, waiting for its End-of-RIB.
    pub stale_routes_time: u16,
    /// This start is a restart (the agent or `--restarting` says so): set
    /// the Restart State bit and the Forwarding State bits (forwarding was
    /// kept), and defer advertising until End-of-RIB from every peer or
    /// `selection_deferral_time`.
    pub restarting: bool,
    /// Upper bound on how long a restarting speaker waits for End-of-RIB.
    pub selection_deferral_time: u16,
}

impl Default for GracefulRestartConfig {
    fn default() -> Self {
        GracefulRestartConfig {
            enabled: true,
            restart_time: defaults::RESTART_TIME,
            stale_routes_time: defaults::STALE_ROUTES_TIME,
            restarting: false,
            selection_deferral_time: defaults::SELECTION_DEFERRAL_TIME,
        }
    }
}

/// Settings of the speaker as a whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeakerConfig {
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// Our AS number (4-octet ASNs allowed).
    #[serde(rename = "as")]
    pub asn: u32,
    /// Addresses to accept connections on (e.g. `0.0.0.0:179`, `[::]:179`).
    /// Empty: no listener; every peer must then be active.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// Route reflector cluster id; defaults to the router id. Only used
    /// when at least one peer is a route-reflector client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<Ipv4Addr>,
    /// Install equal-cost paths (ECMP): best-route events carry every next
    /// hop of the paths that tie up to the IGP-cost step.
    #[serde(default)]
    pub multipath: bool,
    /// Graceful restart.
    #[serde(default)]
    pub graceful_restart: GracefulRestartConfig,
}

impl SpeakerConfig {
    /// A config with defaults for everything but the identity.
    pub fn new(router_id: Ipv4Addr, asn: u32) -> SpeakerConfig {
        SpeakerConfig {
            router_id,
            asn,
            listen: Vec::new(),
            cluster_id: None,
            multipath: false,
            graceful_restart: GracefulRestartConfig::default(),
        }
    }

    /// The cluster id in use.
    pub fn effective_cluster_id(&self) -> Ipv4Addr {
        self.cluster_id.unwrap_or(self.router_id)
    }

    /// Checks the speaker settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, msg: String| ConfigError::Speaker {
            field: field.to_string(),
            message: msg,
        };
        if self.router_id.is_unspecified() {
            return Err(bad("router_id", "must not be 0.0.0.0".into()));
        }
        if self.asn == 0 {
            return Err(bad("as", "must not be 0 (RFC 7607)".into()));
        }
        if self.cluster_id.is_some_and(|c| c.is_unspecified()) {
            return Err(bad("cluster_id", "must not be 0.0.0.0".into()));
        }
        let gr = &self.graceful_restart;
        if gr.restart_time > 4095 {
            return Err(bad(
                "graceful_restart.restart_time",
                format!("{} is above 4095 (12 bits)", gr.restart_time),
            ));
        }
        for (i, a) in self.listen.iter().enumerate() {
            for b in &self.listen[..i] {
                if a == b {
                    return Err(bad("listen", format!("{a} is listed twice")));
                }
            }
        }
        Ok(())
    }
}

/// One peer (neighbor).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's address: the peer's identity in the API and config.
    pub address: IpAddr,
    /// The peer's AS; equal to ours means iBGP.
    #[serde(rename = "as")]
    pub asn: u32,
    /// Free text for status output.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The peer's TCP port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Never connect; only accept the peer's connection.
    #[serde(default)]
    pub passive: bool,
    /// TCP MD5 signature password (RFC 2385), at most 80 octets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5_password: Option<String>,
    /// GTSM (RFC 5082): send with TTL 255 and drop segments below TTL 254
    /// (hop limit for IPv6). For directly connected peers.
    #[serde(default)]
    pub ttl_security: bool,
    /// Source address of outgoing connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<IpAddr>,
    /// Source port of outgoing connections (default: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port: Option<u16>,
    /// Hold time we propose (0: no keepalives; otherwise at least 3).
    #[serde(default = "default_hold_time")]
    pub hold_time: u16,
    /// Keepalive interval (default: a third of the negotiated hold time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<u16>,
    /// Seconds between outgoing connection attempts.
    #[serde(default = "default_connect_retry")]
    pub connect_retry_time: u16,
    /// Send hold time (RFC 9687): the session is dropped when nothing could
    /// be written for this long. Default: the larger of 480 s and twice the
    /// negotiated hold time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_hold_time: Option<u16>,
    /// The peer is our route-reflector client (RFC 4456).
    #[serde(default)]
    pub route_reflector_client: bool,
    /// Set the next hop to our address on routes sent to this peer (eBGP
    /// always does).
    #[serde(default)]
    pub next_hop_self: bool,
    /// Extra copies of our AS prepended on eBGP advertisements.
    #[serde(default)]
    pub as_path_prepend: u8,
    /// Import policy. None: accept on iBGP, reject on eBGP (RFC 8212).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<PrefixFilter>,
    /// Export policy. None: everything on iBGP, nothing on eBGP (RFC 8212).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<PrefixFilter>,
    /// Drop the session with Cease 6/1 when the peer sends more prefixes
    /// (per family) than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prefixes: Option<u32>,
    /// Negotiate graceful restart with this peer (when the speaker has it
    /// enabled).
    #[serde(default = "default_true")]
    pub graceful_restart: bool,
    /// Families to negotiate.
    #[serde(default = "default_families")]
    pub families: Vec<AddressFamily>,
    /// IPv6 next hop for IPv6 routes when the session runs over IPv4 (and
    /// the IPv4 next hop for IPv4 routes over an IPv6 session is not
    /// supported). Default: the session's local address when it is IPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_next_hop: Option<std::net::Ipv6Addr>,
}

fn default_port() -> u16 {
    defaults::PORT
}
fn default_hold_time() -> u16 {
    defaults::HOLD_TIME
}
fn default_connect_retry() -> u16 {
    defaults::CONNECT_RETRY_TIME
}
fn default_true() -> bool {
    true
}
fn default_families() -> Vec<AddressFamily> {
    vec![AddressFamily::Ipv4Unicast, AddressFamily::Ipv6Unicast]
}

/// Configuration errors: which object, which field, what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A speaker-wide setting.
    #[error("speaker config field {field}: {message}")]
    Speaker {
        /// The field.
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// A peer setting.
    #[error("peer {peer} field {field}: {message}")]
    Peer {
        /// The peer address.
        peer: IpAddr,
        /// The field.
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

impl PeerConfig {
    /// A peer with defaults for everything but address and AS.
    pub fn new(address: IpAddr, asn: u32) -> PeerConfig {
        PeerConfig {
            address,
            asn,
            description: String::new(),
            port: defaults::PORT,
            passive: false,
            md5_password: None,
            ttl_security: false,
            source_address: None,
            source_port: None,
            hold_time: defaults::HOLD_TIME,
            keepalive_time: None,
            connect_retry_time: defaults::CONNECT_RETRY_TIME,
            send_hold_time: None,
            route_reflector_client: false,
            next_hop_self: false,
            as_path_prepend: 0,
            import: None,
            export: None,
            max_prefixes: None,
            graceful_restart: true,
            families: default_families(),
            ipv6_next_hop: None,
        }
    }

    /// Checks the peer settings (`local_as` decides iBGP/eBGP checks).
    pub fn validate(&self, local_as: u32) -> Result<(), ConfigError> {
        let bad = |field: &str, message: String| ConfigError::Peer {
            peer: self.address,
            field: field.to_string(),
            message,
        };
        if self.address.is_unspecified() || self.address.is_multicast() {
            return Err(bad("address", "must be a unicast address".into()));
        }
        if self.asn == 0 {
            return Err(bad("as", "must not be 0 (RFC 7607)".into()));
        }
        if self.port == 0 {
            return Err(bad("port", "must not be 0".into()));
        }
        if matches!(self.hold_time, 1 | 2) {
            return Err(bad(
                "hold_time",
                format!("{} is not allowed: use 0 or at least 3", self.hold_time),
            ));
        }
        if let Some(k) = self.keepalive_time
            && (k == 0 || (self.hold_time != 0 && k >= self.hold_time))
        {
            return Err(bad(
                "keepalive_time",
                format!(
                    "{k} must be at least 1 and below hold_time {}",
                    self.hold_time
                ),
            ));
        }
        if self.connect_retry_time == 0 {
            return Err(bad("connect_retry_time", "must be at least 1".into()));
        }
        if self.send_hold_time == Some(0) {
            return Err(bad("send_hold_time", "must be at least 1".into()));
        }
        if let Some(pw) = &self.md5_password
            && (pw.is_empty() || pw.len() > 80)
        {
            return Err(bad(
                "md5_password",
                format!("{} octets; allowed: 1 to 80", pw.len()),
            ));
        }
        if let Some(src) = self.source_address
            && src.is_ipv4() != self.address.is_ipv4()
        {
            return Err(bad(
                "source_address",
                format!("{src} is not of the same family as the peer address"),
            ));
        }
        if self.families.is_empty() {
            return Err(bad("families", "at least one family is needed".into()));
        }
        let ebgp = self.asn != local_as;
        if self.route_reflector_client && ebgp {
            return Err(bad(
                "route_reflector_client",
                "only iBGP peers can be route-reflector clients".into(),
            ));
        }
        if self.max_prefixes == Some(0) {
            return Err(bad("max_prefixes", "must be at least 1".into()));
        }
        for (field, f) in [("import", &self.import), ("export", &self.export)] {
            if let Some(f) = f {
                f.validate().map_err(|m| bad(field, m))?;
            }
        }
        Ok(())
    }

    /// True when the peer is in another AS.
    pub fn is_ebgp(&self, local_as: u32) -> bool {
        self.asn != local_as
    }

    /// The families as AFI/SAFI pairs.
    pub fn family_list(&self) -> Vec<Family> {
        let mut v: Vec<Family> = self.families.iter().map(|f| f.family()).collect();
        v.dedup();
        v
    }

    /// True when a change from `self` to `new` needs the TCP session torn
    /// down (transport, identity or negotiated capabilities change).
    pub fn needs_reset(&self, new: &PeerConfig) -> bool {
        self.address != new.address
            || self.asn != new.asn
            || self.port != new.port
            || self.passive != new.passive
            || self.md5_password != new.md5_password
            || self.ttl_security != new.ttl_security
            || self.source_address != new.source_address
            || self.source_port != new.source_port
            || self.hold_time != new.hold_time
            || self.keepalive_time != new.keepalive_time
            || self.route_reflector_client != new.route_reflector_client
            || self.graceful_restart != new.graceful_restart
            || self.families != new.families
    }

    /// The send hold time for a negotiated hold time (`None`: not used,
    /// which RFC 9687 prescribes for a hold time of 0).
    pub fn effective_send_hold(&self, negotiated_hold: u16) -> Option<Duration> {
        send_hold_for(self.send_hold_time, negotiated_hold)
    }
}

/// RFC 9687: the configured send hold time, else the larger of 8 minutes
/// and twice the negotiated hold time; off when the hold time is 0.
pub fn send_hold_for(configured: Option<u16>, negotiated_hold: u16) -> Option<Duration> {
    if negotiated_hold == 0 {
        return None;
    }
    let secs = configured
        .unwrap_or_else(|| defaults::SEND_HOLD_TIME.max(negotiated_hold.saturating_mul(2)));
    Some(Duration::from_secs(u64::from(secs)))
}

/// Serde for [`Prefix`] as `ADDRESS/LENGTH` text.
pub mod serde_prefix {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::codec::Prefix;

    /// Serializes as text.
    pub fn serialize<S: Serializer>(p: &Prefix, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(p)
    }

    /// Parses `ADDRESS/LENGTH`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Prefix, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerConfig {
        PeerConfig::new("10.0.0.2".parse().expect("addr"), 65000)
    }

    #[test]
    fn defaults_validate() {
        SpeakerConfig::new(Ipv4Addr::new(10, 0, 0, 1), 65000)
            .validate()
            .expect("speaker");
        peer().validate(65000).expect("peer");
    }

    #[test]
    fn errors_name_the_peer_and_field() {
        let mut p = peer();
        p.hold_time = 2;
        let e = p.validate(65000).expect_err("hold 2").to_string();
        assert!(e.contains("10.0.0.2") && e.contains("hold_time"), "{e}");

        let mut p = peer();
        p.keepalive_time = Some(90);
        let e = p.validate(65000).expect_err("keepalive").to_string();
        assert!(e.contains("keepalive_time"), "{e}");

        let mut p = peer();
        p.md5_password = Some("x".repeat(81));
        assert!(
            p.validate(65000)
                .expect_err("md5")
                .to_string()
                .contains("md5_password")
        );

        let mut p = peer();
        p.source_address = Some("fd00::1".parse().expect("v6"));
        assert!(
            p.validate(65000)
                .expect_err("family")
                .to_string()
                .contains("source_address")
        );

        let mut p = peer();
        p.route_reflector_client = true;
        assert!(
            p.validate(65001)
                .expect_err("rr client on ebgp")
                .to_string()
                .contains("route_reflector_client")
        );
        p.validate(65000).expect("rr client on ibgp");

        let mut s = SpeakerConfig::new(Ipv4Addr::UNSPECIFIED, 65000);
        assert!(
            s.validate()
                .expect_err("router id")
                .to_string()
                .contains("router_id")
        );
        s.router_id = Ipv4Addr::new(1, 1, 1, 1);
        s.graceful_restart.restart_time = 5000;
        assert!(
            s.validate()
                .expect_err("restart time")
                .to_string()
                .contains("restart_time")
        );
    }

    #[test]
    fn send_hold_follows_rfc9687() {
        let p = peer();
        assert_eq!(p.effective_send_hold(0), None);
        assert_eq!(p.effective_send_hold(9), Some(Duration::from_secs(480)));
        assert_eq!(p.effective_send_hold(300), Some(Duration::from_secs(600)));
        let mut p = peer();
        p.send_hold_time = Some(3);
        assert_eq!(p.effective_send_hold(9), Some(Duration::from_secs(3)));
    }

    #[test]
    fn peer_yaml_with_defaults_and_kebab_families() {
        let yaml = "address: 10.0.0.2\nas: 65001\nmd5_password: secret\nfamilies: [ipv6-unicast]\nimport: accept\n";
        let p: PeerConfig = serde_saphyr::from_str(yaml).expect("yaml");
        assert_eq!(p.asn, 65001);
        assert_eq!(p.port, 179);
        assert_eq!(p.families, vec![AddressFamily::Ipv6Unicast]);
        assert!(p.graceful_restart);
        assert!(p.import.is_some() && p.export.is_none());
        let unknown = "address: 10.0.0.2\nas: 65001\nholdtime: 3\n";
        assert!(serde_saphyr::from_str::<PeerConfig>(unknown).is_err());
    }

    #[test]
    fn reset_needed_only_for_transport_and_capability_changes() {
        let a = peer();
        let mut b = a.clone();
        b.export = Some(PrefixFilter::accept_all());
        b.max_prefixes = Some(10);
        assert!(!a.needs_reset(&b));
        b.md5_password = Some("pw".into());
        assert!(a.needs_reset(&b));
    }
}
