//! AS_PATH and AS4_PATH parsing (RFC 4271 §4.3, RFC 6793, RFC 7606 §7.2).

use crate::codec::attributes::{AsPath, AsSegment, SegmentType};
use crate::codec::reader::Reader;

/// What is wrong with an AS path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AsPathError {
    BadSegmentType,
    ZeroLengthSegment,
    Overrun,
    TrailingByte,
    AsZero,
}

impl AsPathError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            AsPathError::BadSegmentType => "AS path segment of unknown type",
            AsPathError::ZeroLengthSegment => "AS path segment of length zero",
            AsPathError::Overrun => "AS path segment overruns the attribute",
            AsPathError::TrailingByte => "AS path has a trailing octet",
            AsPathError::AsZero => "AS path contains AS 0 (RFC 7607)",
        }
    }
}

/// Parses a path with `asn_size` (2 or 4) octets per ASN. Each iteration
/// consumes at least three octets, so it terminates; the ASN vectors
/// together never exceed the input length.
pub(crate) fn parse_as_path(value: &[u8], asn_size: usize) -> Result<AsPath, AsPathError> {
    let mut r = Reader::new(value);
    let mut segments = Vec::new();
    while !r.is_empty() {
        if r.remaining() < 2 {
            return Err(AsPathError::TrailingByte);
        }
        let kind = r
            .u8()
            .and_then(SegmentType::from_code)
            .ok_or(AsPathError::BadSegmentType)?;
        let count = usize::from(r.u8().ok_or(AsPathError::Overrun)?);
        if count == 0 {
            return Err(AsPathError::ZeroLengthSegment);
        }
        let raw = r.take(count * asn_size).ok_or(AsPathError::Overrun)?;
        let asns: Vec<u32> = if asn_size == 4 {
            raw.chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        } else {
            raw.chunks_exact(2)
                .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
                .collect()
        };
        if asns.contains(&0) {
            return Err(AsPathError::AsZero);
        }
        segments.push(AsSegment { kind, asns });
    }
    Ok(AsPath { segments })
}

/// RFC 6793 §4.2.3: combine a 2-octet AS_PATH (with AS_TRANS) and the
/// AS4_PATH into the real path. Returns `None` when AS4_PATH is longer
/// than AS_PATH, in which case AS4_PATH is ignored.
pub(crate) fn merge_as4_path(as_path: &AsPath, as4_path: &AsPath) -> Option<AsPath> {
    let count = as_path.path_len();
    let count4 = as4_path.path_len();
    if count4 > count {
        return None;
    }
    // Keep the leading `count - count4` hops of AS_PATH (confederation
    // segments count zero and are kept), then append AS4_PATH.
    let mut keep = count - count4;
    let mut segments = Vec::new();
    for seg in &as_path.segments {
        if keep == 0 && !seg.kind.is_confed() {
            break;
        }
        match seg.kind {
            SegmentType::Sequence => {
                let n = keep.min(seg.asns.len());
                segments.push(AsSegment {
                    kind: seg.kind,
                    asns: seg.asns[..n].to_vec(),
                });
                keep -= n;
            }
            SegmentType::Set => {
                segments.push(seg.clone());
                keep -= 1;
            }
            SegmentType::ConfedSequence | SegmentType::ConfedSet => segments.push(seg.clone()),
        }
    }
    let mut rest = as4_path.segments.iter().cloned();
    // Join the seam when both sides are AS_SEQUENCEs, so the result is the
    // path the originator built rather than two adjacent sequences.
    if let (Some(last), Some(first)) = (segments.last_mut(), as4_path.segments.first())
        && last.kind == SegmentType::Sequence
        && first.kind == SegmentType::Sequence
    {
        last.asns.extend_from_slice(&first.asns);
        rest.next();
    }
    segments.extend(rest);
    Some(AsPath { segments })
}
