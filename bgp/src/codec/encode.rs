//! Encoding messages to wire bytes.
//!
//! Attributes are written with correct flags (Extended Length exactly when
//! the value exceeds 255 octets) in type-code order; unknown attributes,
//! which are optional transitive ones we pass on, get the Partial bit. To
//! a 2-octet AS peer, ASNs above 65535 become AS_TRANS and the real path
//! goes in AS4_PATH / AS4_AGGREGATOR (RFC 6793 §4.2.2).

use super::attributes::{
    AS_TRANS, Aggregator, AsPath, PathAttributes, RawAttribute, flags, type_code as tc,
};
use super::capabilities::{Capabilities, code};
use super::context::SessionContext;
use super::family::{Afi, Family};
use super::framing::header_bytes;
use super::message::{
    BGP_VERSION, HEADER_LEN, MAX_MESSAGE_LEN, Message, MpReach, MpUnreach, NextHop, Open,
    RouteRefresh, Update,
};
use super::notification::Notification;
use super::prefix::Prefix;

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The message would exceed 4096 octets (split the UPDATE).
    #[error("{kind} message would be {len} octets, more than the maximum {MAX_MESSAGE_LEN}")]
    TooLong {
        /// Message kind.
        kind: &'static str,
        /// Length it would have.
        len: usize,
    },
    /// A field's value does not fit its wire encoding.
    #[error("{field}: {problem}")]
    InvalidField {
        /// The field, e.g. `Update.mp_reach.next_hop`.
        field: &'static str,
        /// What is wrong and what is allowed.
        problem: String,
    },
}

fn invalid(field: &'static str, problem: impl Into<String>) -> EncodeError {
    EncodeError::InvalidField {
        field,
        problem: problem.into(),
    }
}

/// Encodes `msg` and appends it to `out`. `ctx` matters only for UPDATE
/// (4-octet AS); OPEN, KEEPALIVE, NOTIFICATION and ROUTE-REFRESH ignore it.
/// On error `out` is left as it was.
pub fn encode_message(
    msg: &Message,
    ctx: &SessionContext,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    let body = match msg {
        Message::Open(open) => encode_open(open, out),
        Message::Update(update) => encode_update(update, ctx, out),
        Message::Notification(n) => {
            encode_notification(n, out);
            Ok(())
        }
        Message::Keepalive => Ok(()),
        Message::RouteRefresh(rr) => {
            encode_route_refresh(rr, out);
            Ok(())
        }
    };
    let total = out.len() - start;
    let result = body.and_then(|()| {
        if total > MAX_MESSAGE_LEN {
            let kind = match msg {
                Message::Open(_) => "OPEN",
                Message::Update(_) => "UPDATE",
                Message::Notification(_) => "NOTIFICATION",
                Message::Keepalive => "KEEPALIVE",
                Message::RouteRefresh(_) => "ROUTE-REFRESH",
            };
            return Err(EncodeError::TooLong { kind, len: total });
        }
        Ok(())
    });
    match result {
        Ok(()) => {
            let header = header_bytes(msg.message_type().code(), total);
            out[start..start + HEADER_LEN].copy_from_slice(&header);
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// Encodes `msg` into a new buffer.
pub fn encode_to_vec(msg: &Message, ctx: &SessionContext) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(64);
    encode_message(msg, ctx, &mut out)?;
    Ok(out)
}

fn encode_open(open: &Open, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.push(BGP_VERSION);
    out.extend_from_slice(&open.my_as.to_be_bytes());
    out.extend_from_slice(&open.hold_time.to_be_bytes());
    out.extend_from_slice(&open.bgp_id.octets());
    // One optional parameter per capability, as most speakers do.
    let caps = capability_tlvs(&open.capabilities)?;
    let total: usize = caps.iter().map(|c| c.len() + 2).sum();
    if total <= 255 && caps.iter().all(|c| c.len() <= 255) {
        out.push(total as u8);
        for c in &caps {
            out.push(2);
            out.push(c.len() as u8);
            out.extend_from_slice(c);
        }
    } else {
        // RFC 9072 extended optional parameters.
        let total: usize = caps.iter().map(|c| c.len() + 3).sum();
        let total = u16::try_from(total).map_err(|_| {
            invalid(
                "Open.capabilities",
                "more than 65535 octets of capabilities",
            )
        })?;
        out.push(255);
        out.push(255);
        out.extend_from_slice(&total.to_be_bytes());
        for c in &caps {
            out.push(2);
            out.extend_from_slice(&(c.len() as u16).to_be_bytes());
            out.extend_from_slice(c);
        }
    }
    Ok(())
}

/// Each capability as `code, length, value`.
fn capability_tlvs(caps: &Capabilities) -> Result<Vec<Vec<u8>>, EncodeError> {
    let mut tlvs = Vec::new();
    let tlv = |code: u8, value: &[u8]| -> Result<Vec<u8>, EncodeError> {
        let len = u8::try_from(value.len()).map_err(|_| {
            invalid(
                "Open.capabilities",
                format!("capability {code} value longer than 255 octets"),
            )
        })?;
        let mut v = Vec::with_capacity(value.len() + 2);
        v.push(code);
        v.push(len);
        v.extend_from_slice(value);
        Ok(v)
    };
    for f in &caps.multiprotocol {
        let a = f.afi.0.to_be_bytes();
        tlvs.push(tlv(code::MULTIPROTOCOL, &[a[0], a[1], 0, f.safi.0])?);
    }
    if caps.route_refresh {
        tlvs.push(tlv(code::ROUTE_REFRESH, &[])?);
    }
    if caps.enhanced_route_refresh {
        tlvs.push(tlv(code::ENHANCED_ROUTE_REFRESH, &[])?);
    }
    if let Some(asn) = caps.four_octet_as {
        tlvs.push(tlv(code::FOUR_OCTET_AS, &asn.to_be_bytes())?);
    }
    if let Some(gr) = &caps.graceful_restart {
        if gr.restart_time > 0x0fff {
            return Err(invalid(
                "Open.capabilities.graceful_restart.restart_time",
                format!("{} is above the 12-bit maximum 4095", gr.restart_time),
            ));
        }
        let mut head = gr.restart_time;
        if gr.restart_state {
            head |= 0x8000;
        }
        if gr.notification {
            head |= 0x4000;
        }
        let mut v = head.to_be_bytes().to_vec();
        for f in &gr.families {
            v.extend_from_slice(&f.family.afi.0.to_be_bytes());
            v.push(f.family.safi.0);
            v.push(if f.forwarding_state { 0x80 } else { 0 });
        }
        tlvs.push(tlv(code::GRACEFUL_RESTART, &v)?);
    }
    for raw in &caps.unknown {
        tlvs.push(tlv(raw.code, &raw.value)?);
    }
    Ok(tlvs)
}

fn encode_notification(n: &Notification, out: &mut Vec<u8>) {
    let (code, subcode) = n.code.pair();
    out.push(code);
    out.push(subcode);
    out.extend_from_slice(&n.data);
}

fn encode_route_refresh(rr: &RouteRefresh, out: &mut Vec<u8>) {
    out.extend_from_slice(&rr.family.afi.0.to_be_bytes());
    out.push(rr.subtype.to_u8());
    out.push(rr.family.safi.0);
}

fn encode_update(u: &Update, ctx: &SessionContext, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let wpos = out.len();
    out.extend_from_slice(&[0, 0]);
    write_prefixes(&u.withdrawn, Afi::IPV4, "Update.withdrawn", out)?;
    let wlen = out.len() - wpos - 2;
    patch_u16(out, wpos, wlen, "Update.withdrawn")?;

    let apos = out.len();
    out.extend_from_slice(&[0, 0]);
    write_attributes(
        &u.attributes,
        u.mp_reach.as_ref(),
        u.mp_unreach.as_ref(),
        ctx,
        out,
    )?;
    let alen = out.len() - apos - 2;
    patch_u16(out, apos, alen, "Update.attributes")?;

    write_prefixes(&u.nlri, Afi::IPV4, "Update.nlri", out)
}

fn patch_u16(
    out: &mut [u8],
    at: usize,
    value: usize,
    field: &'static str,
) -> Result<(), EncodeError> {
    let v = u16::try_from(value).map_err(|_| invalid(field, "longer than 65535 octets"))?;
    out[at..at + 2].copy_from_slice(&v.to_be_bytes());
    Ok(())
}

/// Writes `<length, prefix>` pairs; every prefix must be of `afi`.
fn write_prefixes(
    prefixes: &[Prefix],
    afi: Afi,
    field: &'static str,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    for p in prefixes {
        if p.afi() != afi {
            return Err(invalid(
                field,
                format!("prefix {p} is not of AFI {}", afi.0),
            ));
        }
        write_prefix(p, out);
    }
    Ok(())
}

fn write_prefix(p: &Prefix, out: &mut Vec<u8>) {
    let len = p.prefix_len();
    let octets = usize::from(len).div_ceil(8);
    out.push(len);
    match p.addr() {
        std::net::IpAddr::V4(a) => out.extend_from_slice(&a.octets()[..octets]),
        std::net::IpAddr::V6(a) => out.extend_from_slice(&a.octets()[..octets]),
    }
}

/// Writes one attribute with the right length encoding.
fn write_attr(
    out: &mut Vec<u8>,
    mut attr_flags: u8,
    type_code: u8,
    value: &[u8],
) -> Result<(), EncodeError> {
    attr_flags &= !flags::EXTENDED_LENGTH;
    if value.len() > 255 {
        let len = u16::try_from(value.len()).map_err(|_| {
            invalid(
                "Update.attributes",
                format!("attribute {type_code} longer than 65535 octets"),
            )
        })?;
        out.push(attr_flags | flags::EXTENDED_LENGTH);
        out.push(type_code);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(attr_flags);
        out.push(type_code);
        out.push(value.len() as u8);
    }
    out.extend_from_slice(value);
    Ok(())
}

const WELL_KNOWN: u8 = flags::TRANSITIVE;
const OPT_NON_TRANSITIVE: u8 = flags::OPTIONAL;
const OPT_TRANSITIVE: u8 = flags::OPTIONAL | flags::TRANSITIVE;

fn write_attributes(
    a: &PathAttributes,
    reach: Option<&MpReach>,
    unreach: Option<&MpUnreach>,
    ctx: &SessionContext,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    if let Some(origin) = a.origin {
        write_attr(out, WELL_KNOWN, tc::ORIGIN, &[origin.code()])?;
    }
    // For a 2-octet peer, the path with AS_TRANS plus, if needed, AS4_PATH.
    let mut as4_path = None;
    if let Some(path) = &a.as_path {
        let four = ctx.four_octet_as;
        write_attr(
            out,
            WELL_KNOWN,
            tc::AS_PATH,
            &as_path_bytes(path, four, false),
        )?;
        if !four
            && path
                .segments
                .iter()
                .flat_map(|s| &s.asns)
                .any(|&asn| asn > 0xffff)
        {
            as4_path = Some(as_path_bytes(path, true, true));
        }
    }
    if let Some(nh) = a.next_hop {
        write_attr(out, WELL_KNOWN, tc::NEXT_HOP, &nh.octets())?;
    }
    if let Some(med) = a.med {
        write_attr(out, OPT_NON_TRANSITIVE, tc::MED, &med.to_be_bytes())?;
    }
    if let Some(lp) = a.local_pref {
        write_attr(out, WELL_KNOWN, tc::LOCAL_PREF, &lp.to_be_bytes())?;
    }
    if a.atomic_aggregate {
        write_attr(out, WELL_KNOWN, tc::ATOMIC_AGGREGATE, &[])?;
    }
    let mut as4_aggregator = None;
    if let Some(agg) = a.aggregator {
        if ctx.four_octet_as {
            write_attr(
                out,
                OPT_TRANSITIVE,
                tc::AGGREGATOR,
                &aggregator_bytes(agg, true),
            )?;
        } else {
            let shown = Aggregator {
                asn: if agg.asn > 0xffff { AS_TRANS } else { agg.asn },
                ..agg
            };
            write_attr(
                out,
                OPT_TRANSITIVE,
                tc::AGGREGATOR,
                &aggregator_bytes(shown, false),
            )?;
            if agg.asn > 0xffff {
                as4_aggregator = Some(aggregator_bytes(agg, true));
            }
        }
    }
    if !a.communities.is_empty() {
        let v: Vec<u8> = a
            .communities
            .iter()
            .flat_map(|c| c.0.to_be_bytes())
            .collect();
        write_attr(out, OPT_TRANSITIVE, tc::COMMUNITIES, &v)?;
    }
    if let Some(id) = a.originator_id {
        write_attr(out, OPT_NON_TRANSITIVE, tc::ORIGINATOR_ID, &id.octets())?;
    }
    if !a.cluster_list.is_empty() {
        let v: Vec<u8> = a.cluster_list.iter().flat_map(|c| c.octets()).collect();
        write_attr(out, OPT_NON_TRANSITIVE, tc::CLUSTER_LIST, &v)?;
    }
    if let Some(reach) = reach {
        write_attr(
            out,
            OPT_NON_TRANSITIVE,
            tc::MP_REACH_NLRI,
            &mp_reach_bytes(reach)?,
        )?;
    }
    if let Some(unreach) = unreach {
        let mut v = Vec::new();
        v.extend_from_slice(&unreach.family.afi.0.to_be_bytes());
        v.push(unreach.family.safi.0);
        write_prefixes(
            &unreach.withdrawn,
            unreach.family.afi,
            "Update.mp_unreach.withdrawn",
            &mut v,
        )?;
        write_attr(out, OPT_NON_TRANSITIVE, tc::MP_UNREACH_NLRI, &v)?;
    }
    if let Some(v) = as4_path {
        write_attr(out, OPT_TRANSITIVE, tc::AS4_PATH, &v)?;
    }
    if let Some(v) = as4_aggregator {
        write_attr(out, OPT_TRANSITIVE, tc::AS4_AGGREGATOR, &v)?;
    }
    if !a.large_communities.is_empty() {
        let v: Vec<u8> = a
            .large_communities
            .iter()
            .flat_map(|c| [c.global, c.local1, c.local2])
            .flat_map(u32::to_be_bytes)
            .collect();
        write_attr(out, OPT_TRANSITIVE, tc::LARGE_COMMUNITIES, &v)?;
    }
    for raw in &a.unknown {
        write_attr(out, raw_flags(raw), raw.type_code, &raw.value)?;
    }
    Ok(())
}

/// Flags for a passed-on unknown attribute: Partial set when it is
/// optional transitive (RFC 4271 §5: we did not recognise it).
fn raw_flags(raw: &RawAttribute) -> u8 {
    if raw.flags & OPT_TRANSITIVE == OPT_TRANSITIVE {
        raw.flags | flags::PARTIAL
    } else {
        raw.flags
    }
}

/// AS path bytes; `four` selects 4-octet ASNs, else ASNs above 65535 become
/// AS_TRANS. `as4` leaves confederation segments out (RFC 6793 §3).
/// Segments longer than 255 ASNs are split; empty ones are skipped.
fn as_path_bytes(path: &AsPath, four: bool, as4: bool) -> Vec<u8> {
    let mut v = Vec::new();
    for seg in &path.segments {
        if as4 && seg.kind.is_confed() {
            continue;
        }
        for chunk in seg.asns.chunks(255) {
            v.push(seg.kind.code());
            v.push(chunk.len() as u8);
            for &asn in chunk {
                if four {
                    v.extend_from_slice(&asn.to_be_bytes());
                } else {
                    let short = u16::try_from(asn).unwrap_or(AS_TRANS as u16);
                    v.extend_from_slice(&short.to_be_bytes());
                }
            }
        }
    }
    v
}

fn aggregator_bytes(agg: Aggregator, four: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(8);
    if four {
        v.extend_from_slice(&agg.asn.to_be_bytes());
    } else {
        v.extend_from_slice(
            &u16::try_from(agg.asn)
                .unwrap_or(AS_TRANS as u16)
                .to_be_bytes(),
        );
    }
    v.extend_from_slice(&agg.address.octets());
    v
}

fn mp_reach_bytes(reach: &MpReach) -> Result<Vec<u8>, EncodeError> {
    let Family { afi, safi } = reach.family;
    let mut v = Vec::new();
    v.extend_from_slice(&afi.0.to_be_bytes());
    v.push(safi.0);
    match (afi, reach.next_hop) {
        (Afi::IPV4, NextHop::V4(a)) => {
            v.push(4);
            v.extend_from_slice(&a.octets());
        }
        (Afi::IPV6, NextHop::V6 { global, link_local }) => {
            v.push(if link_local.is_some() { 32 } else { 16 });
            v.extend_from_slice(&global.octets());
            if let Some(ll) = link_local {
                v.extend_from_slice(&ll.octets());
            }
        }
        (_, nh) => {
            return Err(invalid(
                "Update.mp_reach.next_hop",
                format!("next hop {nh:?} does not match family {}", reach.family),
            ));
        }
    }
    v.push(0); // reserved
    write_prefixes(&reach.nlri, afi, "Update.mp_reach.nlri", &mut v)?;
    Ok(v)
}
