//! Read-only views of routes and counters, for the API, `routes -o json`
//! and tests. Plain data with serde, so the control socket can send them.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use super::table::{Path, Rejection};
use crate::codec::{AsPath, Origin, Prefix, SegmentType};

/// Per-peer route counters (index 0: IPv4 unicast, 1: IPv6 unicast).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCounters {
    /// Prefixes the peer currently announces to us.
    pub received: [u32; 2],
    /// Of those, the ones that passed import checks and policy.
    pub accepted: [u32; 2],
    /// Prefixes we currently advertise to the peer.
    pub advertised: [u32; 2],
    /// Paths kept stale across the peer's restart.
    pub stale: u32,
}

/// One path of one prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteView {
    /// The prefix.
    #[serde(with = "crate::config::serde_prefix")]
    pub prefix: Prefix,
    /// The peer it came from (`None`: our own route). In an Adj-RIB-Out
    /// view, the peer it goes to.
    pub peer: Option<IpAddr>,
    /// Next hop (`None`: our own route, sent with our address).
    pub next_hop: Option<IpAddr>,
    /// AS_PATH as text: sequences as numbers, sets in braces.
    pub as_path: String,
    /// `igp`, `egp` or `incomplete`.
    pub origin: Option<String>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF.
    pub local_pref: Option<u32>,
    /// Standard communities as `asn:value`.
    pub communities: Vec<String>,
    /// Large communities as `global:local1:local2`.
    pub large_communities: Vec<String>,
    /// ORIGINATOR_ID.
    pub originator_id: Option<Ipv4Addr>,
    /// CLUSTER_LIST.
    pub cluster_list: Vec<Ipv4Addr>,
    /// The best path of its prefix.
    pub best: bool,
    /// In the multipath set.
    pub multipath: bool,
    /// Kept across the peer's graceful restart.
    pub stale: bool,
    /// Why it is not used, if it is not.
    pub rejected: Option<Rejection>,
}

impl<'de> Deserialize<'de> for Rejection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Rejection, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "policy" => Rejection::Policy,
            "as-loop" => Rejection::AsLoop,
            "originator-loop" => Rejection::OriginatorLoop,
            "cluster-loop" => Rejection::ClusterLoop,
            "first-as-mismatch" => Rejection::FirstAsMismatch,
            "malformed" => Rejection::Malformed,
            other => {
                return Err(serde::de::Error::custom(format!(
                    "unknown rejection {other:?}"
                )));
            }
        })
    }
}

impl RouteView {
    /// The view of `path`.
    pub fn new(
        prefix: Prefix,
        peer: Option<IpAddr>,
        path: &Path,
        best: bool,
        multipath: bool,
    ) -> RouteView {
        let a = &path.attrs.attrs;
        RouteView {
            prefix,
            peer,
            next_hop: path.attrs.next_hop.map(super::next_hop_addr),
            as_path: a.as_path.as_ref().map(as_path_text).unwrap_or_default(),
            origin: a.origin.map(|o| {
                match o {
                    Origin::Igp => "igp",
                    Origin::Egp => "egp",
                    Origin::Incomplete => "incomplete",
                }
                .to_string()
            }),
            med: a.med,
            local_pref: a.local_pref,
            communities: a
                .communities
                .iter()
                .map(|c| format!("{}:{}", c.0 >> 16, c.0 & 0xffff))
                .collect(),
            large_communities: a
                .large_communities
                .iter()
                .map(|c| format!("{}:{}:{}", c.global, c.local1, c.local2))
                .collect(),
            originator_id: a.originator_id,
            cluster_list: a.cluster_list.clone(),
            best,
            multipath,
            stale: path.is_stale(),
            rejected: path.rejected,
        }
    }
}

/// `65001 65002 {65003 65004}`; confederation segments in parentheses.
pub fn as_path_text(p: &AsPath) -> String {
    let mut s = String::new();
    for seg in &p.segments {
        if !s.is_empty() {
            s.push(' ');
        }
        let list = seg
            .asns
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        let _ = match seg.kind {
            SegmentType::Sequence => write!(s, "{list}"),
            SegmentType::Set => write!(s, "{{{list}}}"),
            SegmentType::ConfedSequence => write!(s, "({list})"),
            SegmentType::ConfedSet => write!(s, "[{list}]"),
        };
    }
    s
}
