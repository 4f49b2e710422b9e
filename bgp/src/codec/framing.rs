//! Message framing: turns a byte stream into whole messages.
//!
//! The header is checked as soon as its 19 octets are in (the marker even
//! earlier), so a bad length is reported at once instead of waiting for
//! bytes that will never come (RFC 4271 §6.1).

use bytes::{Buf, Bytes, BytesMut};

use super::decode::DecodeError;
use super::message::{HEADER_LEN, MAX_MESSAGE_LEN, MessageType};
use super::notification::{HeaderSubcode, Notification, NotificationCode};

/// One whole message as received: its type and its body (the octets after
/// the 19-octet header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Message type.
    pub message_type: MessageType,
    /// Body, header excluded.
    pub body: Bytes,
}

impl Frame {
    /// Total length on the wire, header included.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }

    /// The 19-octet header this frame had on the wire (for NOTIFICATION
    /// data that must quote the whole message).
    pub fn header(&self) -> [u8; HEADER_LEN] {
        header_bytes(self.message_type.code(), self.wire_len())
    }
}

/// Builds a header for a message of `total_len` octets.
pub(crate) fn header_bytes(type_code: u8, total_len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0xff; HEADER_LEN];
    let len = u16::try_from(total_len).unwrap_or(u16::MAX).to_be_bytes();
    h[16] = len[0];
    h[17] = len[1];
    h[18] = type_code;
    h
}

fn header_error(subcode: HeaderSubcode, data: Vec<u8>) -> DecodeError {
    DecodeError::Reset(Notification::new(
        NotificationCode::MessageHeader(subcode),
        data,
    ))
}

/// Checks a complete 19-octet header: marker, length range, type and the
/// type's length limits. Returns the type and the total length.
///
/// A NOTIFICATION with a bad length is [`DecodeError::MalformedNotification`]:
/// it is never answered with a NOTIFICATION (RFC 4271 §6.4).
pub fn check_header(header: &[u8; HEADER_LEN]) -> Result<(MessageType, usize), DecodeError> {
    if header[..16].iter().any(|&b| b != 0xff) {
        return Err(header_error(
            HeaderSubcode::ConnectionNotSynchronized,
            Vec::new(),
        ));
    }
    let len_field = [header[16], header[17]];
    let len = usize::from(u16::from_be_bytes(len_field));
    let bad_length = || header_error(HeaderSubcode::BadMessageLength, len_field.to_vec());
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
        if header[18] == MessageType::Notification.code() {
            return Err(DecodeError::MalformedNotification("length out of range"));
        }
        return Err(bad_length());
    }
    let Some(message_type) = MessageType::from_code(header[18]) else {
        return Err(header_error(
            HeaderSubcode::BadMessageType,
            vec![header[18]],
        ));
    };
    if len < message_type.min_len() || (message_type == MessageType::Keepalive && len != HEADER_LEN)
    {
        if message_type == MessageType::Notification {
            return Err(DecodeError::MalformedNotification("length below 21 octets"));
        }
        return Err(bad_length());
    }
    Ok((message_type, len))
}

/// Accumulates received bytes and cuts them into [`Frame`]s.
///
/// Call [`Framer::push`] with each read and then [`Framer::next_frame`]
/// until it returns `Ok(None)`. The buffer then holds less than one message,
/// so it never exceeds 4095 octets plus the size of one read. After an
/// error the framer stays failed: the session is going down.
#[derive(Debug, Default)]
pub struct Framer {
    buf: BytesMut,
    failed: Option<DecodeError>,
}

impl Framer {
    /// An empty framer.
    pub fn new() -> Framer {
        Framer::default()
    }

    /// Appends received bytes (ignored once the framer has failed).
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// Octets buffered but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole message, `Ok(None)` if more bytes are needed, or the
    /// header error (a NOTIFICATION to send before closing, or a malformed
    /// NOTIFICATION header: close without answering).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        if let Some(n) = &self.failed {
            return Err(n.clone());
        }
        match self.cut() {
            Err(n) => {
                self.buf.clear();
                self.failed = Some(n.clone());
                Err(n)
            }
            ok => ok,
        }
    }

    fn cut(&mut self) -> Result<Option<Frame>, DecodeError> {
        let Some(RawFrame {
            message_type,
            wire_len,
            ..
        }) = split_frame(&self.buf)?
        else {
            return Ok(None);
        };
        let mut msg = self.buf.split_to(wire_len);
        msg.advance(HEADER_LEN);
        Ok(Some(Frame {
            message_type,
            body: msg.freeze(),
        }))
    }
}

/// A message found by [`split_frame`], borrowing the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// Message type.
    pub message_type: MessageType,
    /// Body, header excluded.
    pub body: &'a [u8],
    /// Octets the message occupies in the input (header included).
    pub wire_len: usize,
}

/// Cuts one message from the front of `buf` without copying; `Ok(None)`
/// when `buf` holds less than one message.
pub fn split_frame(buf: &[u8]) -> Result<Option<RawFrame<'_>>, DecodeError> {
    let marker_seen = buf.len().min(16);
    if buf[..marker_seen].iter().any(|&b| b != 0xff) {
        return Err(header_error(
            HeaderSubcode::ConnectionNotSynchronized,
            Vec::new(),
        ));
    }
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(header);
    let (message_type, len) = check_header(&h)?;
    match buf.get(HEADER_LEN..len) {
        Some(body) => Ok(Some(RawFrame {
            message_type,
            body,
            wire_len: len,
        })),
        None => Ok(None),
    }
}
