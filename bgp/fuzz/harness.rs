//! What each fuzz target does with its input, shared by the cargo-fuzz
//! targets (`fuzz_targets/*.rs`) and the corpus regression test
//! (`bgp/tests/codec_corpus.rs`), so `make test` replays every corpus file
//! exactly as the fuzzer ran it.
//!
//! Each function decodes, checks invariants with `assert!` (a panic is a
//! finding), and returns an outcome label. Corpus file names end in
//! `.<label>` when the outcome is known (`accept`, `discard`, `ignore`,
//! `withdraw`, `disable`, `reset-C-S`, `close`, `ok`, `more`).
#![allow(dead_code)]

use std::net::Ipv4Addr;

use bytes::Bytes;
use margay_bgp::codec::*;

/// The session the framing and route-refresh targets decode in: eBGP,
/// 4-octet AS, IPv4 and IPv6 unicast, enhanced route refresh.
pub fn fuzz_context() -> SessionContext {
    SessionContext::new(64512, 64513)
}

/// The OPEN check of the open target: we are AS 64512, 192.0.2.1; the
/// peer is configured as AS 64513.
pub fn fuzz_open_check() -> OpenCheck {
    OpenCheck {
        local_as: 64512,
        local_id: Ipv4Addr::new(192, 0, 2, 1),
        peer_as: Some(64513),
    }
}

fn reset_label(n: &Notification) -> String {
    let (c, s) = n.code.pair();
    format!("reset-{c}-{s}")
}

fn error_label(e: &DecodeError) -> String {
    match e {
        DecodeError::Reset(n) => reset_label(n),
        DecodeError::MalformedNotification(_) => "close".to_string(),
    }
}

/// The update target's context, from the input's first octet: bit 0 set
/// means 4-octet AS, bit 1 set means iBGP.
pub fn update_context(selector: u8) -> SessionContext {
    let peer_as = if selector & 2 != 0 { 64512 } else { 64513 };
    SessionContext {
        four_octet_as: selector & 1 != 0,
        ..SessionContext::new(64512, peer_as)
    }
}

fn disposition_label(d: &Disposition) -> String {
    match d {
        Disposition::Accept => "accept".into(),
        Disposition::AttributeDiscard => "discard".into(),
        Disposition::IgnoreRoutes => "ignore".into(),
        Disposition::TreatAsWithdraw => "withdraw".into(),
        Disposition::AfiSafiDisable { .. } => "disable".into(),
        Disposition::SessionReset(n) => reset_label(n),
    }
}

/// UPDATE target: first octet selects the context, the rest is the body.
pub fn run_update(data: &[u8]) -> String {
    let Some((&selector, body)) = data.split_first() else {
        return "more".into();
    };
    let ctx = update_context(selector);
    let decoded = decode_update(body, &ctx);
    assert!(decoded.faults.len() <= MAX_FAULTS);
    let strongest = decoded.faults.iter().map(|f| f.action).max();
    if let Some(s) = strongest {
        assert!(
            s <= decoded.disposition.class(),
            "disposition is the strongest fault"
        );
    }
    let _ = decoded.update.end_of_rib_family();
    let _ = decoded.update.all_prefixes().count();
    // What we decoded we can encode, and it decodes to the same UPDATE
    // (4-octet sessions; with 2-octet ones AS_TRANS in a received path can
    // legitimately be rewritten).
    if ctx.four_octet_as && !matches!(decoded.disposition, Disposition::SessionReset(_)) {
        match encode_to_vec(&Message::Update(decoded.update.clone()), &ctx) {
            Ok(bytes) => {
                let again = decode_update(&bytes[HEADER_LEN..], &ctx);
                assert_eq!(
                    again.update, decoded.update,
                    "re-encoded UPDATE decodes the same"
                );
            }
            Err(EncodeError::TooLong { .. }) => {}
            Err(e) => panic!("decoded UPDATE does not encode: {e}"),
        }
    }
    disposition_label(&decoded.disposition)
}

/// Framing target: the input is a byte stream. It is framed twice, in one
/// piece and in pieces of varying size, and both must agree.
pub fn run_framing(data: &[u8]) -> String {
    let whole = frame_all(data, &[data.len().max(1)]);
    let pieces = frame_all(data, &[1, 7, 19, 3, 250, 2]);
    assert_eq!(
        whole, pieces,
        "framing does not depend on how the stream is split"
    );
    let ctx = fuzz_context();
    let (frames, end) = whole;
    for frame in &frames {
        if let Err(e) = decode_message(frame, &ctx) {
            return error_label(&e);
        }
    }
    match end {
        Some(e) => error_label(&e),
        None if frames.is_empty() && !data.is_empty() => "more".into(),
        None => "ok".into(),
    }
}

type Framed = (Vec<Frame>, Option<DecodeError>);

fn frame_all(data: &[u8], chunks: &[usize]) -> Framed {
    let mut f = Framer::new();
    let mut frames = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < data.len() {
        let n = chunks[i % chunks.len()].min(data.len() - pos);
        f.push(&data[pos..pos + n]);
        pos += n;
        i += 1;
        loop {
            match f.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
        // Never more than one partial message is held.
        assert!(f.buffered() < MAX_MESSAGE_LEN + n);
    }
    (frames, None)
}

/// OPEN target: the input is an OPEN body.
pub fn run_open(data: &[u8]) -> String {
    let structural = parse_open(data);
    match decode_open(data, &fuzz_open_check()) {
        Ok(open) => {
            assert_eq!(structural.as_ref(), Ok(&open));
            let bytes = encode_to_vec(&Message::Open(open.clone()), &fuzz_context())
                .expect("a decoded OPEN encodes");
            assert_eq!(
                parse_open(&bytes[HEADER_LEN..]),
                Ok(open),
                "OPEN round trip"
            );
            "ok".into()
        }
        Err(n) => reset_label(&n),
    }
}

/// NOTIFICATION target: the input is a NOTIFICATION body.
pub fn run_notification(data: &[u8]) -> String {
    match decode_notification(data) {
        Ok(n) => {
            let _ = n.shutdown_text();
            let _ = n.to_string();
            let bytes = encode_to_vec(&Message::Notification(n.clone()), &fuzz_context());
            if let Ok(bytes) = bytes {
                assert_eq!(decode_notification(&bytes[HEADER_LEN..]), Ok(n));
            }
            "ok".into()
        }
        Err(e) => error_label(&e),
    }
}

/// ROUTE-REFRESH target: the input is a ROUTE-REFRESH body, decoded as
/// received in [`fuzz_context`].
pub fn run_route_refresh(data: &[u8]) -> String {
    let frame = Frame {
        message_type: MessageType::RouteRefresh,
        body: Bytes::copy_from_slice(data),
    };
    match decode_message(&frame, &fuzz_context()) {
        Ok(Received::RouteRefresh(rr)) => {
            let bytes =
                encode_to_vec(&Message::RouteRefresh(rr), &fuzz_context()).expect("encodes");
            assert_eq!(decode_route_refresh(&bytes[HEADER_LEN..], true), Ok(rr));
            "ok".into()
        }
        Ok(Received::Ignored(_)) => "ignore".into(),
        Ok(other) => panic!("ROUTE-REFRESH decoded as {other:?}"),
        Err(e) => error_label(&e),
    }
}

/// A target's run function.
pub type Target = fn(&[u8]) -> String;

/// The targets by corpus directory name.
pub const TARGETS: [(&str, Target); 5] = [
    ("framing", run_framing),
    ("open", run_open),
    ("update", run_update),
    ("notification", run_notification),
    ("route_refresh", run_route_refresh),
];
