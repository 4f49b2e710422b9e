//! The `margay-bgpd` config file (YAML).
//!
//! ```yaml
//! router_id: 10.0.0.1
//! as: 65000
//! listen: ["0.0.0.0:179", "[::]:179"]
//! cluster_id: 10.0.0.1          # optional; route reflector cluster id
//! multipath: false
//! graceful_restart: { enabled: true, restart_time: 120 }
//! peers:
//!   - address: 10.0.0.2
//!     as: 65000
//!     route_reflector_client: true
//!   - address: 10.0.0.254
//!     as: 65100
//!     md5_password: secret
//!     ttl_security: true
//!     import: accept
//!     export: { rules: [{ prefix: 10.244.0.0/16, le: 32, action: accept }], default: reject }
//! announce:
//!   - prefix: 10.244.1.0/26
//!     communities: ["65000:100"]
//! ```
//!
//! Peer fields are those of [`PeerConfig`]; speaker fields those of
//! [`SpeakerConfig`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::codec::{Community, LargeCommunity, Origin, Prefix};
use crate::config::{GracefulRestartConfig, PeerConfig, SpeakerConfig};
use crate::speaker::LocalRoute;

/// The whole file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// Our AS.
    #[serde(rename = "as")]
    pub asn: u32,
    /// Listen addresses.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// Route reflector cluster id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<Ipv4Addr>,
    /// ECMP.
    #[serde(default)]
    pub multipath: bool,
    /// Graceful restart.
    #[serde(default)]
    pub graceful_restart: GracefulRestartConfig,
    /// Peers.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Routes to originate.
    #[serde(default)]
    pub announce: Vec<Announcement>,
}

/// A route to originate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announcement {
    /// The prefix.
    #[serde(with = "crate::config::serde_prefix")]
    pub prefix: Prefix,
    /// Next hop (default: our address on each session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<IpAddr>,
    /// `igp` (default), `egp` or `incomplete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// MULTI_EXIT_DISC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub med: Option<u32>,
    /// LOCAL_PREF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// Communities as `asn:value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
    /// Large communities as `global:local1:local2`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub large_communities: Vec<String>,
}

/// A config file problem, naming the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum DaemonConfigError {
    /// Unreadable file.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid YAML for this schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A value is not allowed.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What and where.
        message: String,
    },
}

impl Announcement {
    /// The route to give the speaker.
    pub fn to_local_route(&self) -> Result<LocalRoute, String> {
        let origin = match self.origin.as_deref() {
            None | Some("igp") => Origin::Igp,
            Some("egp") => Origin::Egp,
            Some("incomplete") => Origin::Incomplete,
            Some(other) => {
                return Err(format!(
                    "announce {}: origin {other:?} is not one of igp, egp, incomplete",
                    self.prefix
                ));
            }
        };
        let communities = self
            .communities
            .iter()
            .map(|c| {
                parse_community(c).ok_or_else(|| {
                    format!(
                        "announce {}: community {c:?} is not ASN:VALUE with 16-bit parts",
                        self.prefix
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let large_communities = self
            .large_communities
            .iter()
            .map(|c| parse_large_community(c).ok_or_else(|| format!("announce {}: large community {c:?} is not GLOBAL:LOCAL1:LOCAL2 with 32-bit parts", self.prefix)))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(nh) = self.next_hop
            && nh.is_ipv4() != self.prefix.is_ipv4()
        {
            return Err(format!(
                "announce {}: next_hop {nh} is not of the prefix's family",
                self.prefix
            ));
        }
        Ok(LocalRoute {
            next_hop: self.next_hop,
            origin: Some(origin),
            med: self.med,
            local_pref: self.local_pref,
            communities,
            large_communities,
        })
    }
}

/// `asn:value`.
pub fn parse_community(s: &str) -> Option<Community> {
    let (a, v) = s.split_once(':')?;
    Some(Community::new(a.parse().ok()?, v.parse().ok()?))
}

/// `global:local1:local2`.
pub fn parse_large_community(s: &str) -> Option<LargeCommunity> {
    let mut it = s.split(':');
    let c = LargeCommunity {
        global: it.next()?.parse().ok()?,
        local1: it.next()?.parse().ok()?,
        local2: it.next()?.parse().ok()?,
    };
    it.next().is_none().then_some(c)
}

impl DaemonConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<DaemonConfig, DaemonConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| DaemonConfigError::Read {
            path: p.clone(),
            source,
        })?;
        let cfg: DaemonConfig =
            serde_saphyr::from_str(&text).map_err(|e| DaemonConfigError::Parse {
                path: p.clone(),
                message: e.to_string(),
            })?;
        cfg.validate()
            .map_err(|message| DaemonConfigError::Invalid { path: p, message })?;
        Ok(cfg)
    }

    /// The speaker part.
    pub fn speaker(&self) -> SpeakerConfig {
        SpeakerConfig {
            router_id: self.router_id,
            asn: self.asn,
            listen: self.listen.clone(),
            cluster_id: self.cluster_id,
            multipath: self.multipath,
            graceful_restart: self.graceful_restart.clone(),
        }
    }

    /// Checks everything, so a bad file changes nothing.
    pub fn validate(&self) -> Result<(), String> {
        self.speaker().validate().map_err(|e| e.to_string())?;
        for (i, p) in self.peers.iter().enumerate() {
            p.validate(self.asn)
                .map_err(|e| format!("peers[{i}]: {e}"))?;
            if self.peers[..i].iter().any(|q| q.address == p.address) {
                return Err(format!("peers[{i}]: address {} is listed twice", p.address));
            }
        }
        for (i, a) in self.announce.iter().enumerate() {
            a.to_local_route()
                .map_err(|e| format!("announce[{i}]: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
router_id: 10.0.0.1
as: 65000
listen: ["0.0.0.0:179"]
peers:
  - address: 10.0.0.2
    as: 65000
    route_reflector_client: true
  - address: 10.0.0.254
    as: 65100
    md5_password: secret
    ttl_security: true
    import: accept
    export:
      rules:
        - prefix: 10.244.0.0/16
          le: 32
          action: accept
      default: reject
announce:
  - prefix: 10.244.1.0/26
    communities: ["65000:100"]
    large_communities: ["65000:1:2"]
"#;

    #[test]
    fn example_parses_and_validates() {
        let c: DaemonConfig = serde_saphyr::from_str(EXAMPLE).expect("yaml");
        c.validate().expect("valid");
        assert_eq!(c.peers.len(), 2);
        assert!(c.peers[1].ttl_security);
        let r = c.announce[0].to_local_route().expect("route");
        assert_eq!(r.communities, vec![Community::new(65000, 100)]);
        assert_eq!(r.large_communities[0].local2, 2);
    }

    #[test]
    fn errors_say_where() {
        let mut c: DaemonConfig = serde_saphyr::from_str(EXAMPLE).expect("yaml");
        c.announce[0].communities = vec!["70000:1".into()];
        let e = c.validate().expect_err("bad community");
        assert!(e.contains("announce[0]") && e.contains("70000:1"), "{e}");
        let mut c: DaemonConfig = serde_saphyr::from_str(EXAMPLE).expect("yaml");
        c.peers[0].hold_time = 1;
        let e = c.validate().expect_err("bad hold time");
        assert!(e.contains("peers[0]") && e.contains("hold_time"), "{e}");
        let mut c: DaemonConfig = serde_saphyr::from_str(EXAMPLE).expect("yaml");
        c.peers.push(c.peers[0].clone());
        assert!(c.validate().expect_err("dup").contains("twice"));
    }
}
