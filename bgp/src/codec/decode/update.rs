//! UPDATE decoding with RFC 7606 error handling.
//!
//! The decoder never stops at the first error: it parses what it can, notes
//! each fault with the action RFC 7606 gives it, and combines them into the
//! strongest [`Disposition`]. Only errors that make the NLRI impossible to
//! locate stop it early (they reset the session anyway).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::codec::attributes::{
    AS_TRANS, Aggregator, AsPath, Community, LargeCommunity, Origin, PathAttributes, RawAttribute,
    flags, type_code as tc,
};
use crate::codec::context::SessionContext;
use crate::codec::decode::as_path::{merge_as4_path, parse_as_path};
use crate::codec::decode::nlri::parse_prefixes;
use crate::codec::disposition::{DecodedUpdate, Disposition, MAX_FAULTS, UpdateFault};
use crate::codec::family::{Afi, Family, Safi};
use crate::codec::message::{MpReach, MpUnreach, NextHop, Update};
use crate::codec::notification::{Notification, NotificationCode, UpdateSubcode};
use crate::codec::reader::Reader;

/// Collects faults and the combined disposition.
struct Faults {
    disposition: Disposition,
    list: Vec<UpdateFault>,
}

impl Faults {
    fn new() -> Faults {
        Faults {
            disposition: Disposition::Accept,
            list: Vec::new(),
        }
    }

    fn add(&mut self, type_code: Option<u8>, reason: &'static str, disposition: Disposition) {
        if self.list.len() < MAX_FAULTS {
            self.list.push(UpdateFault {
                type_code,
                reason,
                action: disposition.class(),
            });
        }
        self.disposition.combine(disposition);
    }

    fn reset(
        &mut self,
        type_code: Option<u8>,
        reason: &'static str,
        sub: UpdateSubcode,
        data: Vec<u8>,
    ) {
        let n = Notification::new(NotificationCode::Update(sub), data);
        self.add(type_code, reason, Disposition::SessionReset(n));
    }

    fn withdraw(&mut self, type_code: u8, reason: &'static str) {
        self.add(Some(type_code), reason, Disposition::TreatAsWithdraw);
    }

    fn discard(&mut self, type_code: u8, reason: &'static str) {
        self.add(Some(type_code), reason, Disposition::AttributeDiscard);
    }

    fn finish(self, update: Update) -> DecodedUpdate {
        DecodedUpdate {
            update,
            disposition: self.disposition,
            faults: self.list,
        }
    }
}

/// One attribute as found on the wire.
struct RawAttr<'a> {
    flags: u8,
    type_code: u8,
    value: &'a [u8],
    /// The whole attribute (header and value), for NOTIFICATION data.
    wire: &'a [u8],
}

/// The flags (optional, transitive) a known attribute must carry, and what
/// to do when it is malformed.
fn expected_flags(type_code: u8) -> Option<(bool, bool)> {
    Some(match type_code {
        tc::ORIGIN | tc::AS_PATH | tc::NEXT_HOP | tc::LOCAL_PREF | tc::ATOMIC_AGGREGATE => {
            (false, true)
        }
        tc::MED
        | tc::ORIGINATOR_ID
        | tc::CLUSTER_LIST
        | tc::MP_REACH_NLRI
        | tc::MP_UNREACH_NLRI => (true, false),
        tc::AGGREGATOR
        | tc::COMMUNITIES
        | tc::AS4_PATH
        | tc::AS4_AGGREGATOR
        | tc::LARGE_COMMUNITIES => (true, true),
        _ => return None,
    })
}

/// Decodes an UPDATE body (the octets after the header).
///
/// Never fails: the outcome, including a session reset, is in the
/// returned [`DecodedUpdate`]'s disposition.
pub fn decode_update(body: &[u8], ctx: &SessionContext) -> DecodedUpdate {
    let mut faults = Faults::new();
    let mut update = Update::default();

    // Locate the three sections; any overrun makes NLRI unlocatable (§4).
    let mut r = Reader::new(body);
    let sections = r.u16().and_then(|wlen| {
        let withdrawn = r.take(usize::from(wlen))?;
        let alen = r.u16()?;
        let attrs = r.take(usize::from(alen))?;
        Some((withdrawn, attrs, r.rest()))
    });
    let Some((withdrawn, attrs, nlri)) = sections else {
        faults.reset(
            None,
            "withdrawn routes or path attribute length overruns the message",
            UpdateSubcode::MalformedAttributeList,
            Vec::new(),
        );
        return faults.finish(update);
    };

    match parse_prefixes(Afi::IPV4, withdrawn) {
        Ok(p) => update.withdrawn = p,
        Err(e) => {
            faults.reset(
                None,
                e.reason(),
                UpdateSubcode::InvalidNetworkField,
                Vec::new(),
            );
            return faults.finish(update);
        }
    }
    match parse_prefixes(Afi::IPV4, nlri) {
        Ok(p) => update.nlri = p,
        Err(e) => {
            faults.reset(
                None,
                e.reason(),
                UpdateSubcode::InvalidNetworkField,
                Vec::new(),
            );
            return faults.finish(update);
        }
    }

    let mut state = AttrState::default();
    let mut r = Reader::new(attrs);
    while !r.is_empty() {
        let Some(attr) = next_attribute(&mut r) else {
            // §4: header truncated or value overruns the section. The NLRI
            // field is still located by the total length.
            faults.add(
                None,
                "attribute header truncated or attribute overruns the path attributes",
                Disposition::TreatAsWithdraw,
            );
            break;
        };
        let seen = &mut state.seen[usize::from(attr.type_code)];
        if *seen {
            if matches!(attr.type_code, tc::MP_REACH_NLRI | tc::MP_UNREACH_NLRI) {
                faults.reset(
                    Some(attr.type_code),
                    "MP_REACH_NLRI or MP_UNREACH_NLRI appears twice",
                    UpdateSubcode::MalformedAttributeList,
                    Vec::new(),
                );
            } else {
                faults.discard(
                    attr.type_code,
                    "attribute appears twice: later copies discarded",
                );
            }
            continue;
        }
        *seen = true;
        decode_attribute(&attr, ctx, &mut update, &mut state, &mut faults);
    }

    finish_as4(&mut update.attributes, &state, ctx, &mut faults);
    check_mandatory(&update, &mut faults);
    check_next_hops(&update, &mut faults);
    faults.finish(update)
}

/// Per-UPDATE parse state beyond the attributes themselves.
struct AttrState {
    seen: [bool; 256],
    as4_path: Option<AsPath>,
    as4_aggregator: Option<Aggregator>,
}

impl Default for AttrState {
    fn default() -> AttrState {
        AttrState {
            seen: [false; 256],
            as4_path: None,
            as4_aggregator: None,
        }
    }
}

fn next_attribute<'a>(r: &mut Reader<'a>) -> Option<RawAttr<'a>> {
    let start = r.rest();
    let flags = r.u8()?;
    let type_code = r.u8()?;
    let len = if flags & flags::EXTENDED_LENGTH != 0 {
        r.u16()?
    } else {
        u16::from(r.u8()?)
    };
    let value = r.take(usize::from(len))?;
    let header_len = if flags & flags::EXTENDED_LENGTH != 0 {
        4
    } else {
        3
    };
    let wire = start.get(..header_len + value.len())?;
    Some(RawAttr {
        flags,
        type_code,
        value,
        wire,
    })
}

fn u32_value(v: &[u8]) -> Option<u32> {
    let [a, b, c, d] = *v else { return None };
    Some(u32::from_be_bytes([a, b, c, d]))
}

fn decode_attribute(
    attr: &RawAttr<'_>,
    ctx: &SessionContext,
    update: &mut Update,
    state: &mut AttrState,
    faults: &mut Faults,
) {
    let t = attr.type_code;
    let optional = attr.flags & flags::OPTIONAL != 0;
    let transitive = attr.flags & flags::TRANSITIVE != 0;

    let Some(expected) = expected_flags(t) else {
        decode_unknown(attr, optional, transitive, update, faults);
        return;
    };
    let flags_ok = expected == (optional, transitive);
    let a = &mut update.attributes;
    let ibgp = ctx.is_ibgp();

    match t {
        tc::ORIGIN => match attr.value {
            [v] if flags_ok => match Origin::from_code(*v) {
                Some(o) => a.origin = Some(o),
                None => faults.withdraw(t, "ORIGIN value above 2"),
            },
            _ if !flags_ok => faults.withdraw(t, "ORIGIN flags conflict"),
            _ => faults.withdraw(t, "ORIGIN length is not 1"),
        },
        tc::AS_PATH => {
            if !flags_ok {
                faults.withdraw(t, "AS_PATH flags conflict");
                return;
            }
            let size = if ctx.four_octet_as { 4 } else { 2 };
            match parse_as_path(attr.value, size) {
                Ok(path) if !ibgp && path.segments.iter().any(|s| s.kind.is_confed()) => {
                    faults.withdraw(
                        t,
                        "AS_PATH with confederation segments from an external peer",
                    );
                }
                Ok(path) => a.as_path = Some(path),
                Err(e) => faults.withdraw(t, e.reason()),
            }
        }
        tc::NEXT_HOP => match u32_value(attr.value) {
            Some(v) if flags_ok => a.next_hop = Some(Ipv4Addr::from(v)),
            _ if !flags_ok => faults.withdraw(t, "NEXT_HOP flags conflict"),
            _ => faults.withdraw(t, "NEXT_HOP length is not 4"),
        },
        tc::MED => match u32_value(attr.value) {
            Some(v) if flags_ok => a.med = Some(v),
            _ if !flags_ok => faults.withdraw(t, "MULTI_EXIT_DISC flags conflict"),
            _ => faults.withdraw(t, "MULTI_EXIT_DISC length is not 4"),
        },
        tc::LOCAL_PREF => {
            if !ibgp {
                // §7.5: meaningless from an external peer.
                faults.discard(t, "LOCAL_PREF from an external peer");
                return;
            }
            match u32_value(attr.value) {
                Some(v) if flags_ok => a.local_pref = Some(v),
                _ if !flags_ok => faults.withdraw(t, "LOCAL_PREF flags conflict"),
                _ => faults.withdraw(t, "LOCAL_PREF length is not 4"),
            }
        }
        tc::ATOMIC_AGGREGATE => {
            if !flags_ok || !attr.value.is_empty() {
                faults.discard(
                    t,
                    "ATOMIC_AGGREGATE malformed (length not 0 or flags conflict)",
                );
            } else {
                a.atomic_aggregate = true;
            }
        }
        tc::AGGREGATOR => match decode_aggregator(attr.value, ctx.four_octet_as) {
            Some(agg) if flags_ok && agg.asn != 0 => a.aggregator = Some(agg),
            _ => faults.discard(t, "AGGREGATOR malformed (length, AS 0 or flags)"),
        },
        tc::COMMUNITIES => {
            if !flags_ok || attr.value.is_empty() || !attr.value.len().is_multiple_of(4) {
                faults.withdraw(
                    t,
                    "COMMUNITIES length not a non-zero multiple of 4, or flags",
                );
                return;
            }
            a.communities = attr
                .value
                .chunks_exact(4)
                .map(|c| Community(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect();
        }
        tc::LARGE_COMMUNITIES => {
            if !flags_ok || attr.value.is_empty() || !attr.value.len().is_multiple_of(12) {
                faults.withdraw(
                    t,
                    "LARGE_COMMUNITY length not a non-zero multiple of 12, or flags",
                );
                return;
            }
            a.large_communities = attr
                .value
                .chunks_exact(12)
                .map(|c| LargeCommunity {
                    global: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                    local1: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
                    local2: u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
                })
                .collect();
        }
        tc::ORIGINATOR_ID => {
            if !ibgp {
                faults.discard(t, "ORIGINATOR_ID from an external peer");
                return;
            }
            match u32_value(attr.value) {
                Some(v) if flags_ok => a.originator_id = Some(Ipv4Addr::from(v)),
                _ => faults.withdraw(t, "ORIGINATOR_ID length is not 4, or flags"),
            }
        }
        tc::CLUSTER_LIST => {
            if !ibgp {
                faults.discard(t, "CLUSTER_LIST from an external peer");
                return;
            }
            if !flags_ok || attr.value.is_empty() || !attr.value.len().is_multiple_of(4) {
                faults.withdraw(
                    t,
                    "CLUSTER_LIST length not a non-zero multiple of 4, or flags",
                );
                return;
            }
            a.cluster_list = attr
                .value
                .chunks_exact(4)
                .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                .collect();
        }
        tc::MP_REACH_NLRI => decode_mp_reach(attr, flags_ok, ctx, update, faults),
        tc::MP_UNREACH_NLRI => decode_mp_unreach(attr, flags_ok, ctx, update, faults),
        tc::AS4_PATH => {
            if ctx.four_octet_as {
                // RFC 6793 §4.1: a NEW speaker ignores AS4_PATH from a NEW speaker.
                faults.discard(t, "AS4_PATH from a 4-octet AS speaker");
                return;
            }
            match parse_as_path(attr.value, 4) {
                Ok(path) if flags_ok && !path.segments.iter().any(|s| s.kind.is_confed()) => {
                    state.as4_path = Some(path);
                }
                _ => faults.discard(t, "AS4_PATH malformed: ignored (RFC 6793)"),
            }
        }
        tc::AS4_AGGREGATOR => {
            if ctx.four_octet_as {
                faults.discard(t, "AS4_AGGREGATOR from a 4-octet AS speaker");
                return;
            }
            match decode_aggregator(attr.value, true) {
                Some(agg) if flags_ok && agg.asn != 0 => state.as4_aggregator = Some(agg),
                _ => faults.discard(t, "AS4_AGGREGATOR malformed: ignored (RFC 6793)"),
            }
        }
        _ => decode_unknown(attr, optional, transitive, update, faults),
    }
}

fn decode_unknown(
    attr: &RawAttr<'_>,
    optional: bool,
    transitive: bool,
    update: &mut Update,
    faults: &mut Faults,
) {
    if !optional {
        faults.reset(
            Some(attr.type_code),
            "unrecognised well-known attribute",
            UpdateSubcode::UnrecognizedWellKnownAttribute,
            attr.wire.to_vec(),
        );
    } else if transitive {
        // Passed on with Partial: we did not recognise it (RFC 4271 §5).
        update.attributes.unknown.push(RawAttribute {
            flags: (attr.flags | flags::PARTIAL) & !flags::EXTENDED_LENGTH,
            type_code: attr.type_code,
            value: attr.value.to_vec(),
        });
    }
    // Unknown optional non-transitive: dropped silently.
}

fn decode_aggregator(v: &[u8], four_octet: bool) -> Option<Aggregator> {
    let mut r = Reader::new(v);
    let asn = if four_octet {
        r.u32()?
    } else {
        u32::from(r.u16()?)
    };
    let address = Ipv4Addr::from(r.u32()?);
    r.is_empty().then_some(Aggregator { asn, address })
}

/// Family of an MP attribute whose NLRI we should parse: `Err(reason)` when
/// the attribute must be ignored (not negotiated, or not a prefix family).
fn mp_family(afi: u16, safi: u8, ctx: &SessionContext) -> Result<Family, &'static str> {
    let family = Family::new(Afi(afi), Safi(safi));
    if !ctx.has_family(family) {
        return Err("MP attribute for a family that was not negotiated: ignored");
    }
    if !family.has_prefix_nlri() {
        return Err("MP attribute for a family this codec cannot parse: ignored");
    }
    Ok(family)
}

fn mp_broken(family: Family, attr: &RawAttr<'_>, reason: &'static str, faults: &mut Faults) {
    let notification = Notification::new(
        NotificationCode::Update(UpdateSubcode::OptionalAttributeError),
        attr.wire.to_vec(),
    );
    faults.add(
        Some(attr.type_code),
        reason,
        Disposition::AfiSafiDisable {
            family,
            notification,
        },
    );
}

fn decode_mp_reach(
    attr: &RawAttr<'_>,
    flags_ok: bool,
    ctx: &SessionContext,
    update: &mut Update,
    faults: &mut Faults,
) {
    let mut r = Reader::new(attr.value);
    let (Some(afi), Some(safi), Some(nh_len)) = (r.u16(), r.u8(), r.u8()) else {
        faults.reset(
            Some(attr.type_code),
            "MP_REACH_NLRI too short to hold its AFI/SAFI",
            UpdateSubcode::OptionalAttributeError,
            attr.wire.to_vec(),
        );
        return;
    };
    let family = match mp_family(afi, safi, ctx) {
        Ok(f) => f,
        Err(reason) => return faults.discard(attr.type_code, reason),
    };
    if !flags_ok {
        return mp_broken(family, attr, "MP_REACH_NLRI flags conflict", faults);
    }
    let Some(nh) = r.take(usize::from(nh_len)) else {
        return mp_broken(
            family,
            attr,
            "MP_REACH_NLRI next hop overruns the attribute",
            faults,
        );
    };
    let next_hop = match (family.afi, nh.len()) {
        (Afi::IPV4, 4) => NextHop::V4(Ipv4Addr::new(nh[0], nh[1], nh[2], nh[3])),
        (Afi::IPV6, 16 | 32) => {
            let global = ipv6_at(nh, 0);
            let link_local = (nh.len() == 32).then(|| ipv6_at(nh, 16));
            NextHop::V6 { global, link_local }
        }
        _ => {
            return mp_broken(
                family,
                attr,
                "MP_REACH_NLRI next hop length wrong for the AFI",
                faults,
            );
        }
    };
    // One reserved octet (formerly the SNPA count), ignored on receipt.
    if r.u8().is_none() {
        return mp_broken(family, attr, "MP_REACH_NLRI has no reserved octet", faults);
    }
    match parse_prefixes(family.afi, r.rest()) {
        Ok(nlri) => {
            update.mp_reach = Some(MpReach {
                family,
                next_hop,
                nlri,
            })
        }
        Err(e) => mp_broken(family, attr, e.reason(), faults),
    }
}

fn ipv6_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    if let Some(s) = b.get(at..at + 16) {
        a.copy_from_slice(s);
    }
    Ipv6Addr::from(a)
}

fn decode_mp_unreach(
    attr: &RawAttr<'_>,
    flags_ok: bool,
    ctx: &SessionContext,
    update: &mut Update,
    faults: &mut Faults,
) {
    let mut r = Reader::new(attr.value);
    let (Some(afi), Some(safi)) = (r.u16(), r.u8()) else {
        faults.reset(
            Some(attr.type_code),
            "MP_UNREACH_NLRI too short to hold its AFI/SAFI",
            UpdateSubcode::OptionalAttributeError,
            attr.wire.to_vec(),
        );
        return;
    };
    let family = match mp_family(afi, safi, ctx) {
        Ok(f) => f,
        Err(reason) => return faults.discard(attr.type_code, reason),
    };
    if !flags_ok {
        return mp_broken(family, attr, "MP_UNREACH_NLRI flags conflict", faults);
    }
    match parse_prefixes(family.afi, r.rest()) {
        Ok(withdrawn) => update.mp_unreach = Some(MpUnreach { family, withdrawn }),
        Err(e) => mp_broken(family, attr, e.reason(), faults),
    }
}

/// RFC 6793 §4.2.3: fold AS4_AGGREGATOR and AS4_PATH into the 2-octet
/// attributes when the peer is an OLD (2-octet) speaker.
fn finish_as4(
    a: &mut PathAttributes,
    state: &AttrState,
    ctx: &SessionContext,
    faults: &mut Faults,
) {
    if ctx.four_octet_as {
        return;
    }
    let mut use_as4_path = true;
    if let Some(as4_agg) = state.as4_aggregator {
        match &mut a.aggregator {
            Some(agg) if agg.asn == AS_TRANS => *agg = as4_agg,
            Some(_) => {
                // The aggregator is an OLD speaker: AS4_AGGREGATOR and
                // AS4_PATH both came from before the aggregation. Ignore both.
                use_as4_path = false;
                faults.discard(
                    tc::AS4_AGGREGATOR,
                    "AS4_AGGREGATOR with a non-AS_TRANS AGGREGATOR",
                );
            }
            None => faults.discard(tc::AS4_AGGREGATOR, "AS4_AGGREGATOR without AGGREGATOR"),
        }
    }
    let (Some(as4_path), Some(as_path)) = (&state.as4_path, &a.as_path) else {
        return;
    };
    if !use_as4_path {
        return;
    }
    match merge_as4_path(as_path, as4_path) {
        Some(merged) => a.as_path = Some(merged),
        None => faults.discard(tc::AS4_PATH, "AS4_PATH longer than AS_PATH: ignored"),
    }
}

/// §3 d: ORIGIN and AS_PATH must be present when routes are announced,
/// NEXT_HOP too when they are in the classic IPv4 NLRI field.
fn check_mandatory(update: &Update, faults: &mut Faults) {
    if !update.has_announcements() {
        return;
    }
    let a = &update.attributes;
    if a.origin.is_none() && !faults_mention(faults, tc::ORIGIN) {
        faults.withdraw(tc::ORIGIN, "ORIGIN missing");
    }
    if a.as_path.is_none() && !faults_mention(faults, tc::AS_PATH) {
        faults.withdraw(tc::AS_PATH, "AS_PATH missing");
    }
    if !update.nlri.is_empty() && a.next_hop.is_none() && !faults_mention(faults, tc::NEXT_HOP) {
        faults.withdraw(tc::NEXT_HOP, "NEXT_HOP missing with IPv4 NLRI");
    }
}

fn faults_mention(faults: &Faults, type_code: u8) -> bool {
    faults.list.iter().any(|f| f.type_code == Some(type_code))
}

/// RFC 4271 §6.3 / RFC 7606 §7.3: a syntactically fine but semantically
/// invalid next hop (unspecified, multicast, class E / broadcast) means
/// the announced routes are ignored, without any error.
fn check_next_hops(update: &Update, faults: &mut Faults) {
    if !update.nlri.is_empty()
        && let Some(nh) = update.attributes.next_hop
        && !ipv4_next_hop_usable(nh)
    {
        faults.add(
            Some(tc::NEXT_HOP),
            "NEXT_HOP is not a usable unicast address",
            Disposition::IgnoreRoutes,
        );
    }
    if let Some(reach) = &update.mp_reach
        && !reach.nlri.is_empty()
    {
        let usable = match reach.next_hop {
            NextHop::V4(a) => ipv4_next_hop_usable(a),
            NextHop::V6 { global, .. } => !global.is_unspecified() && !global.is_multicast(),
        };
        if !usable {
            faults.add(
                Some(tc::MP_REACH_NLRI),
                "MP_REACH_NLRI next hop is not a usable unicast address",
                Disposition::IgnoreRoutes,
            );
        }
    }
}

fn ipv4_next_hop_usable(a: Ipv4Addr) -> bool {
    let first = a.octets()[0];
    first != 0 && !a.is_multicast() && first < 240
}
