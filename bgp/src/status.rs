//! Status types the API returns: per-peer state, counters and negotiated
//! capabilities. Plain data with serde (the control socket sends them as
//! JSON).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::config::AddressFamily;
use crate::fsm::State;
use crate::rib::PeerCounters;

/// Messages sent and received on a peer's sessions (all sessions since the
/// peer was added).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageCounters {
    /// OPENs received.
    pub opens_in: u64,
    /// OPENs sent.
    pub opens_out: u64,
    /// UPDATEs received.
    pub updates_in: u64,
    /// UPDATEs sent.
    pub updates_out: u64,
    /// KEEPALIVEs received.
    pub keepalives_in: u64,
    /// KEEPALIVEs sent.
    pub keepalives_out: u64,
    /// NOTIFICATIONs received.
    pub notifications_in: u64,
    /// NOTIFICATIONs sent.
    pub notifications_out: u64,
    /// ROUTE-REFRESH messages received (requests, BoRR, EoRR).
    pub route_refresh_in: u64,
    /// ROUTE-REFRESH messages sent.
    pub route_refresh_out: u64,
    /// UPDATEs received that the codec found malformed (any RFC 7606
    /// action short of a reset).
    pub malformed_updates_in: u64,
    /// Times the session reached Established.
    pub established_transitions: u64,
}

/// The peer's graceful restart capability, as last received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerGracefulRestart {
    /// Restart time it advertised (seconds).
    pub restart_time: u16,
    /// It had the Restart State bit set (it has just restarted).
    pub restart_state: bool,
    /// Families it preserves, with the Forwarding State bit set.
    pub preserved: Vec<AddressFamily>,
}

/// What the OPEN exchange settled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Negotiated {
    /// Families both sides speak.
    pub families: Vec<AddressFamily>,
    /// 4-octet AS numbers.
    pub four_octet_as: bool,
    /// Route refresh (RFC 2918).
    pub route_refresh: bool,
    /// Enhanced route refresh (RFC 7313).
    pub enhanced_route_refresh: bool,
    /// Graceful restart: both sides sent the capability.
    pub graceful_restart: bool,
    /// The peer's graceful restart capability.
    pub peer_graceful_restart: Option<PeerGracefulRestart>,
    /// Negotiated hold time (seconds).
    pub hold_time: u16,
    /// Keepalive interval (seconds).
    pub keepalive_time: u16,
}

/// One peer, as `peers()` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer's address.
    pub address: IpAddr,
    /// Its AS.
    #[serde(rename = "as")]
    pub asn: u32,
    /// Free text from the config.
    pub description: String,
    /// eBGP or iBGP.
    pub ebgp: bool,
    /// Our route-reflector client.
    pub route_reflector_client: bool,
    /// Session state.
    pub state: State,
    /// Seconds since the Unix epoch when it entered `state`.
    pub since_unix: u64,
    /// Seconds in `state`.
    pub seconds_in_state: u64,
    /// The peer's BGP identifier (once an OPEN arrived).
    pub router_id: Option<Ipv4Addr>,
    /// Our end of the TCP session.
    pub local_address: Option<SocketAddr>,
    /// The peer's end of the TCP session.
    pub remote_address: Option<SocketAddr>,
    /// Negotiated capabilities and timers (while Established).
    pub negotiated: Option<Negotiated>,
    /// Message counters.
    pub messages: MessageCounters,
    /// Prefix counters.
    pub prefixes: PeerCounters,
    /// The peer is restarting and we keep its routes (helper mode).
    pub graceful_restart_helper: bool,
    /// Why the last session or attempt ended.
    pub last_error: Option<String>,
}
