//! NOTIFICATION error codes and subcodes (RFC 4271 §4.5 and the IANA
//! registry), and the shutdown communication of RFC 8203 / RFC 9003.

use std::fmt;

use super::family::Family;

/// Generates a subcode enum with named values and `Other(u8)` for the rest.
/// `from_u8` always maps a named value to its variant, so `Other` never holds
/// a named value and the mapping round-trips.
macro_rules! subcodes {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A subcode without a name here.
            Other(u8),
        }

        impl $name {
            /// From the wire value.
            pub fn from_u8(value: u8) -> $name {
                match value {
                    $($value => $name::$variant,)*
                    other => $name::Other(other),
                }
            }

            /// The wire value.
            pub fn to_u8(self) -> u8 {
                match self {
                    $($name::$variant => $value,)*
                    $name::Other(other) => other,
                }
            }
        }
    };
}

subcodes! {
    /// Message Header Error subcodes (code 1).
    HeaderSubcode {
        /// 0.
        Unspecific = 0,
        /// 1: marker not all ones.
        ConnectionNotSynchronized = 1,
        /// 2: length out of range or wrong for the type (data: the length field).
        BadMessageLength = 2,
        /// 3: unknown message type (data: the type octet).
        BadMessageType = 3,
    }
}

subcodes! {
    /// OPEN Message Error subcodes (code 2).
    OpenSubcode {
        /// 0: used for malformed optional parameters / capabilities.
        Unspecific = 0,
        /// 1 (data: the highest version we support, 2 octets).
        UnsupportedVersionNumber = 1,
        /// 2: AS 0, AS mismatch, 4-octet AS capability 0 (RFC 7607).
        BadPeerAs = 2,
        /// 3: BGP identifier 0, or ours on iBGP (RFC 6286).
        BadBgpIdentifier = 3,
        /// 4: optional parameter type other than capabilities.
        UnsupportedOptionalParameter = 4,
        /// 6: hold time 1 or 2 seconds.
        UnacceptableHoldTime = 6,
        /// 7: a required capability is missing (RFC 5492).
        UnsupportedCapability = 7,
        /// 11: BGP role mismatch (RFC 9234).
        RoleMismatch = 11,
    }
}

subcodes! {
    /// UPDATE Message Error subcodes (code 3).
    UpdateSubcode {
        /// 0.
        Unspecific = 0,
        /// 1: lengths overrun, MP_REACH/MP_UNREACH repeated.
        MalformedAttributeList = 1,
        /// 2: unrecognised well-known attribute (data: the attribute).
        UnrecognizedWellKnownAttribute = 2,
        /// 3: missing well-known attribute.
        MissingWellKnownAttribute = 3,
        /// 4: attribute flags error.
        AttributeFlagsError = 4,
        /// 5: attribute length error.
        AttributeLengthError = 5,
        /// 6: invalid ORIGIN.
        InvalidOriginAttribute = 6,
        /// 8: invalid NEXT_HOP.
        InvalidNextHopAttribute = 8,
        /// 9: optional attribute error (used for MP_REACH/MP_UNREACH).
        OptionalAttributeError = 9,
        /// 10: invalid network field (bad NLRI).
        InvalidNetworkField = 10,
        /// 11: malformed AS_PATH.
        MalformedAsPath = 11,
    }
}

subcodes! {
    /// Finite State Machine Error subcodes (code 5, RFC 6608).
    FsmSubcode {
        /// 0.
        Unspecified = 0,
        /// 1: unexpected message in OpenSent (data: the message type).
        UnexpectedMessageInOpenSent = 1,
        /// 2: unexpected message in OpenConfirm.
        UnexpectedMessageInOpenConfirm = 2,
        /// 3: unexpected message in Established.
        UnexpectedMessageInEstablished = 3,
    }
}

subcodes! {
    /// Cease subcodes (code 6, RFC 4486, RFC 8538, RFC 9384).
    CeaseSubcode {
        /// 0.
        Unspecific = 0,
        /// 1: prefix limit exceeded (data: AFI, SAFI, limit).
        MaximumPrefixesReached = 1,
        /// 2: administrative shutdown (data: RFC 8203 shutdown text).
        AdministrativeShutdown = 2,
        /// 3: peer de-configured.
        PeerDeconfigured = 3,
        /// 4: administrative reset (data: RFC 8203 shutdown text).
        AdministrativeReset = 4,
        /// 5: connection rejected.
        ConnectionRejected = 5,
        /// 6: other configuration change.
        OtherConfigurationChange = 6,
        /// 7: connection collision resolution.
        ConnectionCollisionResolution = 7,
        /// 8: out of resources.
        OutOfResources = 8,
        /// 9: hard reset (RFC 8538).
        HardReset = 9,
        /// 10: BFD down (RFC 9384).
        BfdDown = 10,
    }
}

subcodes! {
    /// ROUTE-REFRESH Message Error subcodes (code 7, RFC 7313).
    RouteRefreshSubcode {
        /// 0 (reserved).
        Reserved = 0,
        /// 1: invalid message length (data: the whole message).
        InvalidMessageLength = 1,
    }
}

/// A NOTIFICATION error code with its subcode.
///
/// `from_pair(code, subcode)` and `pair()` are inverse: codes 4 and 8 have
/// no subcodes, so a non-zero subcode with them becomes `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotificationCode {
    /// 1: Message Header Error.
    MessageHeader(HeaderSubcode),
    /// 2: OPEN Message Error.
    Open(OpenSubcode),
    /// 3: UPDATE Message Error.
    Update(UpdateSubcode),
    /// 4/0: Hold Timer Expired.
    HoldTimerExpired,
    /// 5: Finite State Machine Error.
    Fsm(FsmSubcode),
    /// 6: Cease.
    Cease(CeaseSubcode),
    /// 7: ROUTE-REFRESH Message Error.
    RouteRefresh(RouteRefreshSubcode),
    /// 8/0: Send Hold Timer Expired (RFC 9687).
    SendHoldTimerExpired,
    /// Any other code/subcode.
    Other {
        /// Error code.
        code: u8,
        /// Error subcode.
        subcode: u8,
    },
}

impl NotificationCode {
    /// From the two wire octets.
    pub fn from_pair(code: u8, subcode: u8) -> NotificationCode {
        match (code, subcode) {
            (1, s) => NotificationCode::MessageHeader(HeaderSubcode::from_u8(s)),
            (2, s) => NotificationCode::Open(OpenSubcode::from_u8(s)),
            (3, s) => NotificationCode::Update(UpdateSubcode::from_u8(s)),
            (4, 0) => NotificationCode::HoldTimerExpired,
            (5, s) => NotificationCode::Fsm(FsmSubcode::from_u8(s)),
            (6, s) => NotificationCode::Cease(CeaseSubcode::from_u8(s)),
            (7, s) => NotificationCode::RouteRefresh(RouteRefreshSubcode::from_u8(s)),
            (8, 0) => NotificationCode::SendHoldTimerExpired,
            (code, subcode) => NotificationCode::Other { code, subcode },
        }
    }

    /// The two wire octets (code, subcode).
    pub fn pair(self) -> (u8, u8) {
        match self {
            NotificationCode::MessageHeader(s) => (1, s.to_u8()),
            NotificationCode::Open(s) => (2, s.to_u8()),
            NotificationCode::Update(s) => (3, s.to_u8()),
            NotificationCode::HoldTimerExpired => (4, 0),
            NotificationCode::Fsm(s) => (5, s.to_u8()),
            NotificationCode::Cease(s) => (6, s.to_u8()),
            NotificationCode::RouteRefresh(s) => (7, s.to_u8()),
            NotificationCode::SendHoldTimerExpired => (8, 0),
            NotificationCode::Other { code, subcode } => (code, subcode),
        }
    }
}

impl fmt::Display for NotificationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (code, subcode) = self.pair();
        write!(f, "{code}/{subcode} ({self:?})")
    }
}

/// Maximum length of an RFC 8203 / RFC 9003 shutdown communication.
pub const MAX_SHUTDOWN_TEXT: usize = 255;

/// A NOTIFICATION message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Notification {
    /// Error code and subcode.
    pub code: NotificationCode,
    /// Data field (meaning depends on the code).
    pub data: Vec<u8>,
}

/// Why a shutdown communication could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShutdownTextError {
    /// The length octet says more than the data holds.
    #[error("shutdown communication length {declared} exceeds the {available} octets present")]
    Truncated {
        /// The length octet.
        declared: usize,
        /// Octets after the length octet.
        available: usize,
    },
    /// Not UTF-8.
    #[error("shutdown communication is not valid UTF-8")]
    NotUtf8,
}

impl Notification {
    /// A notification with a code and data.
    pub fn new(code: NotificationCode, data: Vec<u8>) -> Notification {
        Notification { code, data }
    }

    /// Cease / Administrative Shutdown (or Reset) with a shutdown
    /// communication (RFC 8203, RFC 9003). Text longer than 255 octets is cut
    /// at a character boundary.
    pub fn shutdown(subcode: CeaseSubcode, text: &str) -> Notification {
        let mut end = text.len().min(MAX_SHUTDOWN_TEXT);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut data = Vec::with_capacity(end + 1);
        // `end` is at most 255, so it fits the length octet.
        data.push(u8::try_from(end).unwrap_or(u8::MAX));
        data.extend_from_slice(&text.as_bytes()[..end]);
        Notification {
            code: NotificationCode::Cease(subcode),
            data,
        }
    }

    /// Cease / Maximum Number of Prefixes Reached with the family and the
    /// limit as data (RFC 4486 §4).
    pub fn max_prefixes(family: Family, limit: u32) -> Notification {
        let mut data = Vec::with_capacity(7);
        data.extend_from_slice(&family.afi.0.to_be_bytes());
        data.push(family.safi.0);
        data.extend_from_slice(&limit.to_be_bytes());
        Notification {
            code: NotificationCode::Cease(CeaseSubcode::MaximumPrefixesReached),
            data,
        }
    }

    /// The shutdown communication of a Cease 6/2 or 6/4: `None` for other
    /// codes or empty data, `Some(Err)` when the data is malformed (which
    /// is only logged: a NOTIFICATION is never answered).
    pub fn shutdown_text(&self) -> Option<Result<&str, ShutdownTextError>> {
        match self.code {
            NotificationCode::Cease(
                CeaseSubcode::AdministrativeShutdown | CeaseSubcode::AdministrativeReset,
            ) => {}
            _ => return None,
        }
        let (&len, rest) = self.data.split_first()?;
        let len = usize::from(len);
        let Some(text) = rest.get(..len) else {
            return Some(Err(ShutdownTextError::Truncated {
                declared: len,
                available: rest.len(),
            }));
        };
        Some(std::str::from_utf8(text).map_err(|_| ShutdownTextError::NotUtf8))
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NOTIFICATION {}", self.code)?;
        match self.shutdown_text() {
            Some(Ok(text)) => write!(f, " shutdown message {text:?}"),
            _ if !self.data.is_empty() => write!(f, " data {} octets", self.data.len()),
            _ => Ok(()),
        }
    }
}
