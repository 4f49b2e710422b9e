//! Packing routes into as few UPDATEs as fit in 4096 octets, for the
//! Adj-RIB-Out: one attribute set, many prefixes.

use super::attributes::PathAttributes;
use super::context::SessionContext;
use super::encode::{EncodeError, encode_to_vec};
use super::family::Family;
use super::message::{MAX_MESSAGE_LEN, Message, MpReach, MpUnreach, NextHop, Update};
use super::prefix::Prefix;

/// Octets one prefix takes in NLRI.
fn nlri_len(p: &Prefix) -> usize {
    1 + usize::from(p.prefix_len()).div_ceil(8)
}

/// Splits `prefixes` into runs that fit next to an UPDATE of `base_len`
/// octets. `slack` covers an attribute growing into Extended Length.
fn chunks(prefixes: &[Prefix], base_len: usize, slack: usize) -> Vec<&[Prefix]> {
    let room = MAX_MESSAGE_LEN.saturating_sub(base_len + slack);
    let mut out = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, p) in prefixes.iter().enumerate() {
        let n = nlri_len(p);
        if used + n > room && i > start {
            out.push(&prefixes[start..i]);
            start = i;
            used = 0;
        }
        used += n;
    }
    if start < prefixes.len() {
        out.push(&prefixes[start..]);
    }
    out
}

/// UPDATEs announcing `prefixes` of `family` with `attributes`. IPv4
/// unicast goes in the classic NLRI field with the NEXT_HOP attribute (so
/// `next_hop` is ignored for it and `attributes.next_hop` must be set);
/// other families go in MP_REACH_NLRI with `next_hop`.
pub fn announcements(
    attributes: &PathAttributes,
    family: Family,
    next_hop: Option<NextHop>,
    prefixes: &[Prefix],
    ctx: &SessionContext,
) -> Result<Vec<Update>, EncodeError> {
    let classic = family == Family::IPV4_UNICAST;
    let make = |nlri: Vec<Prefix>| -> Result<Update, EncodeError> {
        if classic {
            return Ok(Update {
                attributes: attributes.clone(),
                nlri,
                ..Update::default()
            });
        }
        let next_hop = next_hop.ok_or_else(|| EncodeError::InvalidField {
            field: "announcements.next_hop",
            problem: format!("a next hop is required for {family}"),
        })?;
        Ok(Update {
            attributes: PathAttributes {
                next_hop: None,
                ..attributes.clone()
            },
            mp_reach: Some(MpReach {
                family,
                next_hop,
                nlri,
            }),
            ..Update::default()
        })
    };
    let base = encode_to_vec(&Message::Update(make(Vec::new())?), ctx)?.len();
    let slack = if classic { 0 } else { 1 };
    chunks(prefixes, base, slack)
        .into_iter()
        .map(|c| make(c.to_vec()))
        .collect()
}

/// UPDATEs withdrawing `prefixes` of `family` (classic withdrawn-routes
/// field for IPv4 unicast, MP_UNREACH_NLRI otherwise).
pub fn withdrawals(
    family: Family,
    prefixes: &[Prefix],
    ctx: &SessionContext,
) -> Result<Vec<Update>, EncodeError> {
    let classic = family == Family::IPV4_UNICAST;
    let make = |withdrawn: Vec<Prefix>| {
        if classic {
            Update {
                withdrawn,
                ..Update::default()
            }
        } else {
            Update {
                mp_unreach: Some(MpUnreach { family, withdrawn }),
                ..Update::default()
            }
        }
    };
    let base = encode_to_vec(&Message::Update(make(Vec::new())), ctx)?.len();
    let slack = if classic { 0 } else { 1 };
    Ok(chunks(prefixes, base, slack)
        .into_iter()
        .map(|c| make(c.to_vec()))
        .collect())
}
