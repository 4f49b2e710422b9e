//! OPEN capabilities (RFC 5492) that Margay negotiates.

use super::family::Family;

/// Capability codes (IANA "Capability Codes").
pub mod code {
    /// Multiprotocol extensions (RFC 4760).
    pub const MULTIPROTOCOL: u8 = 1;
    /// Route refresh (RFC 2918).
    pub const ROUTE_REFRESH: u8 = 2;
    /// Graceful restart (RFC 4724).
    pub const GRACEFUL_RESTART: u8 = 64;
    /// Support for 4-octet AS numbers (RFC 6793).
    pub const FOUR_OCTET_AS: u8 = 65;
    /// Enhanced route refresh (RFC 7313).
    pub const ENHANCED_ROUTE_REFRESH: u8 = 70;
}

/// The capabilities advertised in one OPEN.
///
/// Known capabilities are parsed into fields; anything else is kept in
/// `unknown` (RFC 5492 §3: an unknown capability is ignored, not an error).
/// When a known capability appears twice, the first occurrence wins, except
/// multiprotocol, which is a list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Capabilities {
    /// Multiprotocol AFI/SAFIs (capability 1), in advertised order.
    pub multiprotocol: Vec<Family>,
    /// Route refresh (capability 2).
    pub route_refresh: bool,
    /// Enhanced route refresh (capability 70).
    pub enhanced_route_refresh: bool,
    /// The speaker's 4-octet AS (capability 65), if it supports them.
    pub four_octet_as: Option<u32>,
    /// Graceful restart (capability 64).
    pub graceful_restart: Option<GracefulRestart>,
    /// Capabilities we do not interpret, kept raw in advertised order.
    pub unknown: Vec<RawCapability>,
}

impl Capabilities {
    /// The families a session with these capabilities carries by default:
    /// the multiprotocol list, or IPv4 unicast alone when the list is empty
    /// (RFC 4760 §8: a speaker without the capability speaks IPv4 unicast).
    pub fn families(&self) -> Vec<Family> {
        if self.multiprotocol.is_empty() {
            vec![Family::IPV4_UNICAST]
        } else {
            self.multiprotocol.clone()
        }
    }
}

/// Graceful restart capability (RFC 4724 §3, RFC 8538).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct GracefulRestart {
    /// Restart State (R) bit: the sender has restarted and is waiting for
    /// End-of-RIB from its peers before selecting routes.
    pub restart_state: bool,
    /// Notification (N) bit (RFC 8538): graceful restart also covers
    /// NOTIFICATION-triggered resets (except Hard Reset).
    pub notification: bool,
    /// Restart time in seconds (12 bits on the wire, 0..=4095).
    pub restart_time: u16,
    /// Families preserved across a restart, with their Forwarding State bit.
    pub families: Vec<GracefulRestartFamily>,
}

/// One AFI/SAFI entry of the graceful restart capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GracefulRestartFamily {
    /// The family.
    pub family: Family,
    /// Forwarding State (F) bit: forwarding for this family was preserved
    /// across the restart.
    pub forwarding_state: bool,
}

/// A capability kept as bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RawCapability {
    /// Capability code.
    pub code: u8,
    /// Capability value (at most 255 octets).
    pub value: Vec<u8>,
}
