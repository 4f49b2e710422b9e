//! BGP status served on the agent's health listener, as JSON:
//!
//! - `GET /bgp/peers`: every peer, its type, state, since when, info;
//! - `GET /bgp/routes`: the Loc-RIB (our own and learned paths);
//! - `GET /bgp/routes/received/<peer>` and `/bgp/routes/advertised/<peer>`:
//!   Adj-RIB-In and Adj-RIB-Out of one peer.
//!
//! The HTTP handler is synchronous, so the routing task refreshes a
//! snapshot (after every change it makes and every couple of seconds) and
//! the handler serialises it.

use crate::http::Answer;
use crate::routing::peers::PeerKind;
use hyper::StatusCode;
use margay_bgp::{PeerStatus, RouteView};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// One row of `/bgp/peers` (what `margayctl node status` prints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRow {
    pub peer_address: IpAddr,
    #[serde(rename = "type")]
    pub peer_type: String,
    pub asn: u32,
    /// FSM state (`Established`, `Active`...).
    pub state: String,
    /// RFC 3339 UTC time the peer entered `state`.
    pub since: String,
    pub seconds_in_state: u64,
    /// Why the last session ended, or the prefix counts when up.
    pub info: String,
    pub prefixes_received: u64,
    pub prefixes_advertised: u64,
    /// Times the session reached Established since the peer was added
    /// (a session reset by a configuration change shows here).
    #[serde(default)]
    pub established_transitions: u64,
}

/// What the node says about itself under `/bgp/peers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeersAnswer {
    pub node: String,
    pub router_id: Option<String>,
    pub asn: Option<u32>,
    pub route_reflector_cluster_id: Option<String>,
    /// False until the speaker runs (no node address yet, or starting).
    pub running: bool,
    pub peers: Vec<PeerRow>,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub peers: PeersAnswer,
    pub loc_rib: Vec<RouteView>,
    pub received: BTreeMap<IpAddr, Vec<RouteView>>,
    pub advertised: BTreeMap<IpAddr, Vec<RouteView>>,
}

/// Shared between the routing task (writer) and the HTTP handler.
#[derive(Clone, Default)]
pub struct BgpStatus {
    inner: Arc<Mutex<Snapshot>>,
}

/// RFC 3339 (UTC, seconds) of a Unix time, without a date crate.
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// A status row from the speaker's view of a peer and why we peer.
pub fn row(p: &PeerStatus, kind: Option<PeerKind>) -> PeerRow {
    let state = format!("{:?}", p.state);
    let info = match (&p.last_error, state.as_str()) {
        (_, "Established") => format!(
            "{} received, {} advertised",
            p.prefixes.received.iter().sum::<u32>(),
            p.prefixes.advertised.iter().sum::<u32>()
        ),
        (Some(e), _) => e.clone(),
        (None, _) => String::new(),
    };
    PeerRow {
        peer_address: p.address,
        peer_type: kind.map_or("unknown", PeerKind::as_str).to_string(),
        asn: p.asn,
        state,
        since: rfc3339(p.since_unix),
        seconds_in_state: p.seconds_in_state,
        info,
        prefixes_received: p.prefixes.received.iter().map(|&n| u64::from(n)).sum(),
        prefixes_advertised: p.prefixes.advertised.iter().map(|&n| u64::from(n)).sum(),
        established_transitions: p.messages.established_transitions,
    }
}

fn json<T: Serialize>(v: &T) -> Answer {
    match serde_json::to_string_pretty(v) {
        Ok(body) => Answer {
            status: StatusCode::OK,
            content_type: "application/json",
            body,
        },
        Err(e) => Answer::text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

impl BgpStatus {
    pub fn set(&self, s: Snapshot) {
        if let Ok(mut g) = self.inner.lock() {
            *g = s;
        }
    }

    pub fn get(&self) -> Snapshot {
        self.inner.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// The answer for `path`, when it is a `/bgp/` path.
    pub fn answer(&self, path: &str) -> Option<Answer> {
        let rest = path.strip_prefix("/bgp/")?;
        let snap = self.get();
        let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        Some(match parts.as_slice() {
            ["peers"] => json(&snap.peers),
            ["routes"] => json(&snap.loc_rib),
            ["routes", table @ ("received" | "advertised"), peer] => {
                let Ok(ip) = peer.parse::<IpAddr>() else {
                    return Some(Answer::text(
                        StatusCode::BAD_REQUEST,
                        format!("{peer:?} is not a peer address\n"),
                    ));
                };
                let map = if *table == "received" {
                    &snap.received
                } else {
                    &snap.advertised
                };
                match map.get(&ip) {
                    Some(r) => json(r),
                    None => Answer::text(StatusCode::NOT_FOUND, format!("no peer {ip}\n")),
                }
            }
            _ => Answer::text(
                StatusCode::NOT_FOUND,
                "try /bgp/peers, /bgp/routes, /bgp/routes/received/<peer>, /bgp/routes/advertised/<peer>\n",
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn paths_outside_bgp_are_not_ours_and_bad_peers_are_refused() {
        let s = BgpStatus::default();
        assert!(s.answer("/readyz").is_none());
        let peers = s.answer("/bgp/peers").expect("ours");
        assert_eq!(peers.status, StatusCode::OK);
        let v: PeersAnswer = serde_json::from_str(&peers.body).expect("json");
        assert!(!v.running);
        assert_eq!(
            s.answer("/bgp/routes/received/nope").expect("ours").status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            s.answer("/bgp/routes/received/10.0.0.9")
                .expect("ours")
                .status,
            StatusCode::NOT_FOUND
        );
    }
}
