//! The BGP wire codec: message types, framing, decoding with RFC 7606
//! dispositions, and encoding. Pure: no I/O, no async.
//!
//! Typical use by a session task:
//! 1. Feed socket reads to a [`Framer`] and take [`Frame`]s from it; a
//!    header error is a [`Notification`] to send before closing.
//! 2. Decode the peer's OPEN with [`decode_open`] against an [`OpenCheck`],
//!    then build the [`SessionContext`] with [`SessionContext::negotiate`].
//! 3. Decode later frames with [`decode_message`]; UPDATEs come back as a
//!    [`DecodedUpdate`] with a [`Disposition`].
//! 4. Encode outgoing messages with [`encode_message`] ([`pack`] cuts many
//!    prefixes into UPDATEs that fit).
//!
//! ```
//! use margay_bgp::codec::*;
//!
//! let ctx = SessionContext::new(64512, 64513);
//! let update = Update {
//!     attributes: PathAttributes {
//!         origin: Some(Origin::Igp),
//!         as_path: Some(AsPath::from_sequence([64513])),
//!         next_hop: Some("192.0.2.1".parse().unwrap()),
//!         ..Default::default()
//!     },
//!     nlri: vec!["10.1.0.0/16".parse().unwrap()],
//!     ..Default::default()
//! };
//! let bytes = encode_to_vec(&Message::Update(update.clone()), &ctx).unwrap();
//!
//! let mut framer = Framer::new();
//! framer.push(&bytes[..10]); // reads may end anywhere
//! assert_eq!(framer.next_frame(), Ok(None));
//! framer.push(&bytes[10..]);
//! let frame = framer.next_frame().unwrap().unwrap();
//! match decode_message(&frame, &ctx) {
//!     Ok(Received::Update(d)) => {
//!         assert_eq!(d.disposition, Disposition::Accept);
//!         assert_eq!(d.update, update);
//!     }
//!     Ok(other) => panic!("unexpected {other:?}"),
//!     // Send the NOTIFICATION (or, for a malformed NOTIFICATION, just close).
//!     Err(e) => panic!("{e}"),
//! }
//! ```

mod attributes;
mod capabilities;
mod context;
mod disposition;
mod family;
mod message;
mod notification;
mod prefix;

pub use attributes::{
    AS_TRANS, Aggregator, AsPath, AsSegment, Community, LargeCommunity, Origin, PathAttributes,
    RawAttribute, SegmentType, flags as attr_flags, type_code as attr_type,
};
pub use capabilities::{
    Capabilities, GracefulRestart, GracefulRestartFamily, RawCapability, code as capability_code,
};
pub use context::{OpenCheck, SessionContext};
pub use disposition::{DecodedUpdate, Disposition, DispositionClass, MAX_FAULTS, UpdateFault};
pub use family::{Afi, Family, Safi};
pub use message::{
    BGP_VERSION, HEADER_LEN, MAX_MESSAGE_LEN, Message, MessageType, MpReach, MpUnreach, NextHop,
    Open, Reach, RouteRefresh, RouteRefreshSubtype, Unreach, Update,
};
pub use notification::{
    CeaseSubcode, FsmSubcode, HeaderSubcode, MAX_SHUTDOWN_TEXT, Notification, NotificationCode,
    OpenSubcode, RouteRefreshSubcode, ShutdownTextError, UpdateSubcode,
};
pub use prefix::{Prefix, PrefixError};

mod decode;
mod encode;
mod framing;
mod reader;

pub use decode::{
    DecodeError, Received, decode_keepalive, decode_message, decode_notification, decode_open,
    decode_route_refresh, decode_update, parse_open, validate_open,
};
pub use encode::{EncodeError, encode_message, encode_to_vec};
pub use framing::{Frame, Framer, RawFrame, check_header, split_frame};

/// Packing routes into UPDATEs that fit the message size limit.
pub mod pack;
