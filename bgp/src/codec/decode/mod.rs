//! Decoders, one per message type, and [`decode_message`] which dispatches
//! a [`Frame`] to them.
//!
//! Every decoder works on one message body and allocates at most in
//! proportion to it; none loops without consuming input.

mod as_path;
mod nlri;
mod open;
mod update;

pub use open::{decode_open, parse_open, validate_open};
pub use update::decode_update;

use crate::codec::context::SessionContext;
use crate::codec::disposition::{DecodedUpdate, Disposition};
use crate::codec::family::{Afi, Family, Safi};
use crate::codec::framing::{Frame, header_bytes};
use crate::codec::message::{HEADER_LEN, MessageType, Open, RouteRefresh, RouteRefreshSubtype};
use crate::codec::notification::{
    HeaderSubcode, Notification, NotificationCode, RouteRefreshSubcode,
};
use crate::codec::reader::Reader;

/// A message received in an established (or establishing) session.
// Transient (one per message, moved straight to the FSM), so the size
// difference between variants costs nothing worth a Box per UPDATE.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// OPEN, structurally valid (check it with [`validate_open`], or let
    /// the FSM reject it as unexpected in its state).
    Open(Open),
    /// UPDATE with its disposition, never [`Disposition::SessionReset`]
    /// (that is returned as [`DecodeError::Reset`]).
    Update(DecodedUpdate),
    /// NOTIFICATION.
    Notification(Notification),
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH for a negotiated family, with a known subtype.
    RouteRefresh(RouteRefresh),
    /// A message to ignore without error, with the reason for the log.
    Ignored(&'static str),
}

/// A received message that ends the session.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Send this NOTIFICATION, then close.
    #[error("peer sent a malformed message: answering with {0}")]
    Reset(Notification),
    /// A malformed NOTIFICATION: log and close, never answer it.
    #[error("peer sent a malformed NOTIFICATION ({0}); closing without answering")]
    MalformedNotification(&'static str),
}

/// Decodes one framed message in the context of a session.
pub fn decode_message(frame: &Frame, ctx: &SessionContext) -> Result<Received, DecodeError> {
    let body = &frame.body[..];
    match frame.message_type {
        MessageType::Open => parse_open(body)
            .map(Received::Open)
            .map_err(DecodeError::Reset),
        MessageType::Update => {
            let decoded = decode_update(body, ctx);
            match decoded.disposition {
                Disposition::SessionReset(n) => Err(DecodeError::Reset(n)),
                _ => Ok(Received::Update(decoded)),
            }
        }
        MessageType::Notification => decode_notification(body).map(Received::Notification),
        MessageType::Keepalive => decode_keepalive(body)
            .map(|()| Received::Keepalive)
            .map_err(DecodeError::Reset),
        MessageType::RouteRefresh => {
            let rr = decode_route_refresh(body, ctx.enhanced_route_refresh)
                .map_err(DecodeError::Reset)?;
            if !ctx.has_family(rr.family) {
                // RFC 2918 §4 / RFC 7313 §5: ignore refresh for other families.
                return Ok(Received::Ignored(
                    "ROUTE-REFRESH for a family that was not negotiated",
                ));
            }
            if let RouteRefreshSubtype::Other(_) = rr.subtype {
                return Ok(Received::Ignored("ROUTE-REFRESH with an unknown subtype"));
            }
            Ok(Received::RouteRefresh(rr))
        }
    }
}

/// Decodes a NOTIFICATION body. The only malformation possible in the
/// body is being shorter than code and subcode; a bad shutdown text is
/// reported by [`Notification::shutdown_text`], not here.
pub fn decode_notification(body: &[u8]) -> Result<Notification, DecodeError> {
    let mut r = Reader::new(body);
    let (Some(code), Some(subcode)) = (r.u8(), r.u8()) else {
        return Err(DecodeError::MalformedNotification(
            "shorter than code and subcode",
        ));
    };
    Ok(Notification::new(
        NotificationCode::from_pair(code, subcode),
        r.rest().to_vec(),
    ))
}

/// Checks a KEEPALIVE body (it must be empty: 1/2 otherwise).
pub fn decode_keepalive(body: &[u8]) -> Result<(), Notification> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(bad_length(HEADER_LEN + body.len()))
    }
}

fn bad_length(total: usize) -> Notification {
    let len = u16::try_from(total).unwrap_or(u16::MAX);
    Notification::new(
        NotificationCode::MessageHeader(HeaderSubcode::BadMessageLength),
        len.to_be_bytes().to_vec(),
    )
}

/// Decodes a ROUTE-REFRESH body (RFC 2918, RFC 7313). A wrong length is
/// 7/1 (with the whole message as data) when enhanced route refresh is
/// negotiated, else 1/2.
pub fn decode_route_refresh(body: &[u8], enhanced: bool) -> Result<RouteRefresh, Notification> {
    let [a0, a1, subtype, safi] = *body else {
        let total = HEADER_LEN + body.len();
        if enhanced {
            let mut data = header_bytes(MessageType::RouteRefresh.code(), total).to_vec();
            data.extend_from_slice(body);
            return Err(Notification::new(
                NotificationCode::RouteRefresh(RouteRefreshSubcode::InvalidMessageLength),
                data,
            ));
        }
        return Err(bad_length(total));
    };
    Ok(RouteRefresh {
        family: Family::new(Afi(u16::from_be_bytes([a0, a1])), Safi(safi)),
        subtype: RouteRefreshSubtype::from_u8(subtype),
    })
}
