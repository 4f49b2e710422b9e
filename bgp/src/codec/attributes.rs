//! Path attributes (RFC 4271 §5 and the RFCs that add attributes).
//!
//! [`PathAttributes`] is the attribute set of one UPDATE, minus MP_REACH_NLRI
//! and MP_UNREACH_NLRI (those carry routes, not attributes, and live in
//! [`Update`](super::Update)). It is the value the RIB interns and shares
//! between routes, hence `Clone + Eq + Hash` and a canonical form: AS4_PATH
//! and AS4_AGGREGATOR are folded into `as_path` and `aggregator` on decode
//! (RFC 6793 §4.2.3) and regenerated on encode for 2-octet peers.

use std::net::Ipv4Addr;

/// Attribute flag bits (first octet of an attribute header).
pub mod flags {
    /// Optional (1) or well-known (0).
    pub const OPTIONAL: u8 = 0x80;
    /// Transitive (1) or non-transitive (0).
    pub const TRANSITIVE: u8 = 0x40;
    /// Partial: some speaker on the path did not recognise this optional
    /// transitive attribute.
    pub const PARTIAL: u8 = 0x20;
    /// Extended Length: the length field is two octets.
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

/// Attribute type codes (IANA "BGP Path Attributes").
pub mod type_code {
    /// ORIGIN (RFC 4271).
    pub const ORIGIN: u8 = 1;
    /// AS_PATH (RFC 4271).
    pub const AS_PATH: u8 = 2;
    /// NEXT_HOP (RFC 4271).
    pub const NEXT_HOP: u8 = 3;
    /// MULTI_EXIT_DISC (RFC 4271).
    pub const MED: u8 = 4;
    /// LOCAL_PREF (RFC 4271).
    pub const LOCAL_PREF: u8 = 5;
    /// ATOMIC_AGGREGATE (RFC 4271).
    pub const ATOMIC_AGGREGATE: u8 = 6;
    /// AGGREGATOR (RFC 4271, RFC 6793).
    pub const AGGREGATOR: u8 = 7;
    /// COMMUNITIES (RFC 1997).
    pub const COMMUNITIES: u8 = 8;
    /// ORIGINATOR_ID (RFC 4456).
    pub const ORIGINATOR_ID: u8 = 9;
    /// CLUSTER_LIST (RFC 4456).
    pub const CLUSTER_LIST: u8 = 10;
    /// MP_REACH_NLRI (RFC 4760).
    pub const MP_REACH_NLRI: u8 = 14;
    /// MP_UNREACH_NLRI (RFC 4760).
    pub const MP_UNREACH_NLRI: u8 = 15;
    /// AS4_PATH (RFC 6793).
    pub const AS4_PATH: u8 = 17;
    /// AS4_AGGREGATOR (RFC 6793).
    pub const AS4_AGGREGATOR: u8 = 18;
    /// LARGE_COMMUNITY (RFC 8092).
    pub const LARGE_COMMUNITIES: u8 = 32;
}

/// AS_TRANS (RFC 6793): stands in for a 4-octet AS in 2-octet fields.
pub const AS_TRANS: u32 = 23456;

/// ORIGIN attribute value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// Learned from an IGP (0). Most preferred.
    Igp,
    /// Learned from EGP (1).
    Egp,
    /// Learned some other way (2). Least preferred.
    Incomplete,
}

impl Origin {
    /// The wire value.
    pub fn code(self) -> u8 {
        match self {
            Origin::Igp => 0,
            Origin::Egp => 1,
            Origin::Incomplete => 2,
        }
    }

    /// From the wire value; `None` for values above 2 (malformed, RFC 7606 §7.1).
    pub fn from_code(code: u8) -> Option<Origin> {
        match code {
            0 => Some(Origin::Igp),
            1 => Some(Origin::Egp),
            2 => Some(Origin::Incomplete),
            _ => None,
        }
    }
}

/// AS_PATH segment type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SegmentType {
    /// AS_SET (1): unordered, counts as one hop.
    Set,
    /// AS_SEQUENCE (2): ordered, each AS counts as one hop.
    Sequence,
    /// AS_CONFED_SEQUENCE (3, RFC 5065): does not count towards path length.
    ConfedSequence,
    /// AS_CONFED_SET (4, RFC 5065): does not count towards path length.
    ConfedSet,
}

impl SegmentType {
    /// The wire value.
    pub fn code(self) -> u8 {
        match self {
            SegmentType::Set => 1,
            SegmentType::Sequence => 2,
            SegmentType::ConfedSequence => 3,
            SegmentType::ConfedSet => 4,
        }
    }

    /// From the wire value; `None` for unknown types (malformed AS_PATH).
    pub fn from_code(code: u8) -> Option<SegmentType> {
        match code {
            1 => Some(SegmentType::Set),
            2 => Some(SegmentType::Sequence),
            3 => Some(SegmentType::ConfedSequence),
            4 => Some(SegmentType::ConfedSet),
            _ => None,
        }
    }

    /// True for the confederation segment types.
    pub fn is_confed(self) -> bool {
        matches!(self, SegmentType::ConfedSequence | SegmentType::ConfedSet)
    }
}

/// One AS_PATH segment. On the wire a segment holds 1..=255 ASNs; longer
/// runs are split by the encoder, so `asns` may be of any non-zero length.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AsSegment {
    /// Segment type.
    pub kind: SegmentType,
    /// The ASNs, always as 4-octet values.
    pub asns: Vec<u32>,
}

/// An AS_PATH with 4-octet ASNs, after AS4_PATH reconstruction when the
/// peer speaks 2-octet AS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AsPath {
    /// Segments in wire order (the first is the neighbour's end).
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    /// A path of one AS_SEQUENCE (empty input gives the empty path).
    pub fn from_sequence(asns: impl IntoIterator<Item = u32>) -> AsPath {
        let asns: Vec<u32> = asns.into_iter().collect();
        if asns.is_empty() {
            return AsPath::default();
        }
        AsPath {
            segments: vec![AsSegment {
                kind: SegmentType::Sequence,
                asns,
            }],
        }
    }

    /// Path length for best-path selection (RFC 4271 §9.1.2.2): each AS in a
    /// sequence counts one, each AS_SET counts one, confederation segments
    /// count zero (RFC 5065 §5.3).
    pub fn path_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentType::Sequence => s.asns.len(),
                SegmentType::Set => 1,
                SegmentType::ConfedSequence | SegmentType::ConfedSet => 0,
            })
            .sum()
    }

    /// The neighbour AS: first ASN of a leading AS_SEQUENCE, for the
    /// "first AS must be the peer AS" eBGP check and MED comparison.
    pub fn first_asn(&self) -> Option<u32> {
        let first = self.segments.first()?;
        match first.kind {
            SegmentType::Sequence => first.asns.first().copied(),
            _ => None,
        }
    }

    /// The originating AS: last ASN of a trailing AS_SEQUENCE.
    pub fn origin_asn(&self) -> Option<u32> {
        let last = self.segments.last()?;
        match last.kind {
            SegmentType::Sequence => last.asns.last().copied(),
            _ => None,
        }
    }

    /// True when `asn` appears anywhere in the path (AS loop detection,
    /// RFC 4271 §9.1.2).
    pub fn contains(&self, asn: u32) -> bool {
        self.segments.iter().any(|s| s.asns.contains(&asn))
    }

    /// True when the path has no ASNs (locally originated, or iBGP-learned
    /// from the originator).
    pub fn is_empty(&self) -> bool {
        self.segments.iter().all(|s| s.asns.is_empty())
    }

    /// Prepend `asn` `count` times to the leading AS_SEQUENCE (creating one
    /// if the path starts with a set or is empty), as an eBGP speaker does
    /// when it advertises a route.
    pub fn prepend(&mut self, asn: u32, count: usize) {
        if count == 0 {
            return;
        }
        match self.segments.first_mut() {
            Some(seg) if seg.kind == SegmentType::Sequence => {
                seg.asns.splice(0..0, std::iter::repeat_n(asn, count));
            }
            _ => self.segments.insert(
                0,
                AsSegment {
                    kind: SegmentType::Sequence,
                    asns: vec![asn; count],
                },
            ),
        }
    }

    /// Total number of ASNs in all segments.
    pub fn asn_count(&self) -> usize {
        self.segments.iter().map(|s| s.asns.len()).sum()
    }
}

/// AGGREGATOR attribute (AS always 4-octet after AS4_AGGREGATOR handling).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Aggregator {
    /// The AS that formed the aggregate.
    pub asn: u32,
    /// The BGP identifier (IPv4 address) of the aggregating speaker.
    pub address: Ipv4Addr,
}

/// A standard community (RFC 1997), `asn:value` in 16+16 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    /// NO_EXPORT (RFC 1997).
    pub const NO_EXPORT: Community = Community(0xFFFF_FF01);
    /// NO_ADVERTISE (RFC 1997).
    pub const NO_ADVERTISE: Community = Community(0xFFFF_FF02);
    /// NO_EXPORT_SUBCONFED (RFC 1997).
    pub const NO_EXPORT_SUBCONFED: Community = Community(0xFFFF_FF03);

    /// `asn:value`.
    pub fn new(asn: u16, value: u16) -> Community {
        Community((u32::from(asn) << 16) | u32::from(value))
    }
}

/// A large community (RFC 8092): global administrator and two data parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    /// Global administrator (an ASN).
    pub global: u32,
    /// First local data part.
    pub local1: u32,
    /// Second local data part.
    pub local2: u32,
}

/// An attribute this codec does not interpret, kept byte for byte.
///
/// Only optional transitive attributes survive decoding (RFC 4271 §5:
/// unknown optional non-transitive ones are dropped, unknown well-known ones
/// reset the session). The decoder sets [`flags::PARTIAL`] on them, since we
/// did not recognise them and will pass them on (RFC 4271 §9.1.3).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RawAttribute {
    /// Flags as they will be sent (the Extended Length bit is recomputed by
    /// the encoder from the value's length).
    pub flags: u8,
    /// Attribute type code.
    pub type_code: u8,
    /// Attribute value.
    pub value: Vec<u8>,
}

/// The path attributes of a route: what the RIB interns and shares.
///
/// `None` / empty means the attribute was absent. `communities`,
/// `large_communities` and `cluster_list` are absent when empty (a present
/// but empty one is malformed on the wire).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PathAttributes {
    /// ORIGIN (well-known mandatory).
    pub origin: Option<Origin>,
    /// AS_PATH (well-known mandatory), with 4-octet ASNs.
    pub as_path: Option<AsPath>,
    /// NEXT_HOP for IPv4 NLRI in the classic UPDATE fields. Next hops of
    /// MP_REACH_NLRI families are in [`MpReach`](super::MpReach).
    pub next_hop: Option<Ipv4Addr>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF (iBGP only; discarded when received over eBGP).
    pub local_pref: Option<u32>,
    /// ATOMIC_AGGREGATE present.
    pub atomic_aggregate: bool,
    /// AGGREGATOR.
    pub aggregator: Option<Aggregator>,
    /// COMMUNITIES, in wire order.
    pub communities: Vec<Community>,
    /// LARGE_COMMUNITY, in wire order.
    pub large_communities: Vec<LargeCommunity>,
    /// ORIGINATOR_ID (route reflection; iBGP only).
    pub originator_id: Option<Ipv4Addr>,
    /// CLUSTER_LIST (route reflection; iBGP only), first entry is the most
    /// recent reflector.
    pub cluster_list: Vec<Ipv4Addr>,
    /// Unrecognised optional transitive attributes, passed on with Partial.
    pub unknown: Vec<RawAttribute>,
}

impl PathAttributes {
    /// True when no attribute at all is present.
    pub fn is_empty(&self) -> bool {
        *self == PathAttributes::default()
    }
}
