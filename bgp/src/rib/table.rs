//! The route table: every path of every prefix, from every peer, in one
//! ordered map per address family.
//!
//! One table holds what the RFC calls the Adj-RIBs-In (each path is tagged
//! with its peer) and the Loc-RIB (the decision process picks among a
//! prefix's paths on demand), as BIRD does; no route is stored twice. The
//! layout is chosen for memory (the goal is at most 150 bytes per prefix at
//! a million prefixes): an IPv4 key is one `u64`, a prefix with a single
//! path keeps it inline (16 bytes: attribute pointer, peer, flags), and
//! attribute sets are interned ([`super::attrs`]).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::attrs::AttrRef;
use crate::codec::Prefix;

/// Index of a peer in the RIB; [`LOCAL`] is our own routes.
pub type PeerId = u32;

/// The pseudo-peer of locally originated routes.
pub const LOCAL: PeerId = 0;

/// Why an imported path is not eligible for the decision process. Kept
/// with the path (rather than dropping it) so counters and `routes` show
/// what a peer sent, and a policy change can be applied without asking the
/// peer again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rejection {
    /// The import policy (or RFC 8212's default) said no.
    Policy,
    /// Our AS is in the AS_PATH (RFC 4271 §9.1.2).
    AsLoop,
    /// ORIGINATOR_ID is our router id (RFC 4456 §8).
    OriginatorLoop,
    /// Our cluster id is in the CLUSTER_LIST (RFC 4456 §8).
    ClusterLoop,
    /// eBGP route whose AS_PATH does not start with the peer's AS
    /// (RFC 4271 §6.3, treat-as-withdraw per RFC 7606 §7.2).
    FirstAsMismatch,
    /// An AS_PATH that is missing (a mandatory attribute).
    Malformed,
}

/// Flag bits of a [`Path`].
pub mod flags {
    /// Kept across the peer's graceful restart (or a refresh), waiting
    /// for a fresh copy or the peer's End-of-RIB.
    pub const STALE: u8 = 1;
}

/// One path: a peer's route for a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    /// Attributes (shared).
    pub attrs: AttrRef,
    /// The peer it came from.
    pub peer: PeerId,
    /// [`flags`] bits.
    pub flags: u8,
    /// Why it is ineligible, if it is.
    pub rejected: Option<Rejection>,
}

impl Path {
    /// Eligible for the decision process.
    pub fn eligible(&self) -> bool {
        self.rejected.is_none()
    }

    /// Stale after a graceful restart or refresh.
    pub fn is_stale(&self) -> bool {
        self.flags & flags::STALE != 0
    }
}

/// The paths of one prefix, one inline (the common case) or several.
#[derive(Clone, Debug)]
pub enum Paths {
    /// A single path.
    One(Path),
    /// Two or more paths, at most one per peer.
    Many(Box<[Path]>),
}

impl Paths {
    /// The paths as a slice.
    pub fn as_slice(&self) -> &[Path] {
        match self {
            Paths::One(p) => std::slice::from_ref(p),
            Paths::Many(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [Path] {
        match self {
            Paths::One(p) => std::slice::from_mut(p),
            Paths::Many(v) => v,
        }
    }

    /// Replaces the path of `path.peer`, or adds it. Returns the old one.
    fn upsert(&mut self, path: Path) -> Option<Path> {
        if let Some(slot) = self.as_mut_slice().iter_mut().find(|p| p.peer == path.peer) {
            return Some(std::mem::replace(slot, path));
        }
        let mut v: Vec<Path> = self.as_slice().to_vec();
        v.push(path);
        *self = Paths::Many(v.into_boxed_slice());
        None
    }

    /// Removes `peer`'s path from a `Many`, turning it into `One` when a
    /// single path is left. Not for `One` (the caller removes the entry).
    fn remove_from_many(&mut self, peer: PeerId) -> Option<Path> {
        let Paths::Many(v) = self else { return None };
        let i = v.iter().position(|p| p.peer == peer)?;
        let mut rest = std::mem::take(v).into_vec();
        let removed = rest.remove(i);
        *self = if rest.len() == 1 {
            match rest.pop() {
                Some(p) => Paths::One(p),
                None => Paths::Many(Box::default()),
            }
        } else {
            Paths::Many(rest.into_boxed_slice())
        };
        Some(removed)
    }

    /// Removes the path of `peer`. Returns it and whether none is left.
    fn remove(self, peer: PeerId) -> (Option<Path>, Option<Paths>) {
        match self {
            Paths::One(p) if p.peer == peer => (Some(p), None),
            Paths::One(p) => (None, Some(Paths::One(p))),
            Paths::Many(v) => {
                let mut v = v.into_vec();
                let Some(i) = v.iter().position(|p| p.peer == peer) else {
                    return (None, Some(Paths::Many(v.into_boxed_slice())));
                };
                let removed = v.remove(i);
                let rest = match v.len() {
                    0 => None,
                    1 => v.pop().map(Paths::One),
                    _ => Some(Paths::Many(v.into_boxed_slice())),
                };
                (Some(removed), rest)
            }
        }
    }
}

/// A compact, ordered key for one address family.
pub trait Key: Ord + Copy + std::fmt::Debug {
    /// The key of a prefix of this family.
    fn from_prefix(p: &Prefix) -> Self;
    /// The prefix back.
    fn prefix(self) -> Prefix;
}

/// IPv4 key: address in the top 32 bits of 40, length below.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct V4Key(u64);

impl Key for V4Key {
    fn from_prefix(p: &Prefix) -> V4Key {
        let addr = match p.addr() {
            std::net::IpAddr::V4(a) => u32::from(a),
            std::net::IpAddr::V6(_) => 0,
        };
        V4Key((u64::from(addr) << 8) | u64::from(p.prefix_len()))
    }

    fn prefix(self) -> Prefix {
        let addr = Ipv4Addr::from((self.0 >> 8) as u32);
        let len = (self.0 & 0xff) as u8;
        // Keys are built from valid prefixes, so this cannot fail.
        Prefix::v4(addr, len).unwrap_or_else(|_| fallback_v4())
    }
}

fn fallback_v4() -> Prefix {
    match Prefix::v4(Ipv4Addr::UNSPECIFIED, 0) {
        Ok(p) => p,
        Err(_) => unreachable!("0.0.0.0/0 is a valid prefix"),
    }
}

/// IPv6 key: 16 address octets then the length (byte order sorts like
/// the prefix; alignment 1 keeps it at 17 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct V6Key([u8; 17]);

impl Key for V6Key {
    fn from_prefix(p: &Prefix) -> V6Key {
        let mut k = [0u8; 17];
        if let std::net::IpAddr::V6(a) = p.addr() {
            k[..16].copy_from_slice(&a.octets());
        }
        k[16] = p.prefix_len();
        V6Key(k)
    }

    fn prefix(self) -> Prefix {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.0[..16]);
        Prefix::v6(Ipv6Addr::from(a), self.0[16]).unwrap_or_else(|_| fallback_v4())
    }
}

/// The paths of every prefix of one family.
#[derive(Debug)]
pub struct Table<K: Key> {
    map: BTreeMap<K, Paths>,
}

impl<K: Key> Default for Table<K> {
    fn default() -> Self {
        Table {
            map: BTreeMap::new(),
        }
    }
}

impl<K: Key> Table<K> {
    /// The paths of `p`.
    pub fn get(&self, p: &Prefix) -> &[Path] {
        self.map
            .get(&K::from_prefix(p))
            .map_or(&[], |paths| paths.as_slice())
    }

    /// Sets the path of `path.peer` for `p`; returns the one it replaced.
    pub fn upsert(&mut self, p: &Prefix, path: Path) -> Option<Path> {
        match self.map.entry(K::from_prefix(p)) {
            std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().upsert(path),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(Paths::One(path));
                None
            }
        }
    }

    /// Sets the path of `path.peer` for `p` in one lookup, summarising the
    /// prefix's paths before and after the change (for change detection).
    /// Returns (before, after, replaced path).
    pub fn upsert_with<S>(
        &mut self,
        p: &Prefix,
        path: Path,
        summarize: impl Fn(&[Path]) -> S,
    ) -> (S, S, Option<Path>) {
        match self.map.entry(K::from_prefix(p)) {
            std::collections::btree_map::Entry::Occupied(mut e) => {
                let before = summarize(e.get().as_slice());
                let old = e.get_mut().upsert(path);
                (before, summarize(e.get().as_slice()), old)
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                let before = summarize(&[]);
                let v = e.insert(Paths::One(path));
                (before, summarize(v.as_slice()), None)
            }
        }
    }

    /// Removes `peer`'s path for `p` in one lookup, summarising before and
    /// after; `None` when there was no such path.
    pub fn remove_with<S>(
        &mut self,
        p: &Prefix,
        peer: PeerId,
        summarize: impl Fn(&[Path]) -> S,
    ) -> Option<(S, S, Path)> {
        let std::collections::btree_map::Entry::Occupied(mut e) = self.map.entry(K::from_prefix(p))
        else {
            return None;
        };
        let before = summarize(e.get().as_slice());
        match e.get() {
            Paths::One(x) if x.peer == peer => match e.remove() {
                Paths::One(old) => Some((before, summarize(&[]), old)),
                Paths::Many(_) => None,
            },
            Paths::One(_) => None,
            Paths::Many(_) => {
                let old = e.get_mut().remove_from_many(peer)?;
                Some((before, summarize(e.get().as_slice()), old))
            }
        }
    }

    /// Removes the path of `peer` for `p`.
    pub fn remove(&mut self, p: &Prefix, peer: PeerId) -> Option<Path> {
        let key = K::from_prefix(p);
        let paths = self.map.remove(&key)?;
        let (removed, rest) = paths.remove(peer);
        if let Some(rest) = rest {
            self.map.insert(key, rest);
        }
        removed
    }

    /// Changes the flags of `peer`'s path for `p` in place.
    pub fn path_mut(&mut self, p: &Prefix, peer: PeerId) -> Option<&mut Path> {
        self.map
            .get_mut(&K::from_prefix(p))?
            .as_mut_slice()
            .iter_mut()
            .find(|x| x.peer == peer)
    }

    /// Number of prefixes with at least one path.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every prefix with its paths, in prefix order.
    pub fn iter(&self) -> impl Iterator<Item = (Prefix, &[Path])> + '_ {
        self.map.iter().map(|(k, v)| (k.prefix(), v.as_slice()))
    }

    /// Prefixes where `peer` has a path matching `pred`, in order.
    pub fn prefixes_of(&self, peer: PeerId, pred: impl Fn(&Path) -> bool) -> Vec<Prefix> {
        self.map
            .iter()
            .filter(|(_, v)| v.as_slice().iter().any(|x| x.peer == peer && pred(x)))
            .map(|(k, _)| k.prefix())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rib::attrs::RouteAttrs;
    use std::sync::Arc;

    fn path(peer: PeerId) -> Path {
        Path {
            attrs: Arc::new(RouteAttrs {
                attrs: Default::default(),
                next_hop: None,
            }),
            peer,
            flags: 0,
            rejected: None,
        }
    }

    #[test]
    fn keys_round_trip_and_sort_like_prefixes() {
        let v4: Vec<Prefix> = ["10.0.0.0/8", "10.0.0.0/24", "9.255.0.0/16", "0.0.0.0/0"]
            .iter()
            .map(|s| s.parse().expect("prefix"))
            .collect();
        for p in &v4 {
            assert_eq!(V4Key::from_prefix(p).prefix(), *p);
        }
        let mut by_key = v4.clone();
        by_key.sort_by_key(V4Key::from_prefix);
        let mut by_prefix = v4;
        by_prefix.sort();
        assert_eq!(by_key, by_prefix);
        let p6: Prefix = "fd00:1::/64".parse().expect("v6");
        assert_eq!(V6Key::from_prefix(&p6).prefix(), p6);
    }

    #[test]
    fn one_path_inline_then_many_then_back() {
        let mut t: Table<V4Key> = Table::default();
        let p: Prefix = "10.1.0.0/24".parse().expect("prefix");
        assert!(t.upsert(&p, path(1)).is_none());
        assert!(matches!(t.map.values().next(), Some(Paths::One(_))));
        assert!(t.upsert(&p, path(2)).is_none());
        assert!(t.upsert(&p, path(2)).is_some(), "same peer replaces");
        assert_eq!(t.get(&p).len(), 2);
        assert!(t.remove(&p, 1).is_some());
        assert!(matches!(t.map.values().next(), Some(Paths::One(_))));
        assert!(t.remove(&p, 1).is_none());
        assert!(t.remove(&p, 2).is_some());
        assert!(t.is_empty());
    }

    #[test]
    fn one_lookup_changes_report_before_and_after() {
        let mut t: Table<V4Key> = Table::default();
        let p: Prefix = "10.2.0.0/24".parse().expect("prefix");
        let count = |paths: &[Path]| paths.len();
        assert_eq!(t.upsert_with(&p, path(1), count), (0, 1, None));
        let (b, a, old) = t.upsert_with(&p, path(2), count);
        assert_eq!((b, a, old.is_none()), (1, 2, true));
        let (b, a, old) = t.upsert_with(&p, path(2), count);
        assert_eq!((b, a, old.map(|o| o.peer)), (2, 2, Some(2)));
        assert!(t.remove_with(&p, 9, count).is_none());
        let (b, a, old) = t.remove_with(&p, 1, count).expect("removed");
        assert_eq!((b, a, old.peer), (2, 1, 1));
        assert!(matches!(t.map.values().next(), Some(Paths::One(_))));
        let (b, a, _) = t.remove_with(&p, 2, count).expect("removed");
        assert_eq!((b, a), (1, 0));
        assert!(t.is_empty());
        assert!(t.remove_with(&p, 2, count).is_none());
    }

    #[test]
    fn inline_path_is_small() {
        // The memory budget depends on these staying small.
        assert_eq!(std::mem::size_of::<Path>(), 16);
        assert!(std::mem::size_of::<Paths>() <= 24);
        assert_eq!(std::mem::size_of::<V4Key>(), 8);
    }
}
