//! Interned route attributes.
//!
//! Thousands of routes usually share one attribute set (a peer sends many
//! prefixes per UPDATE, and a speaker's own routes look alike), so the RIB
//! stores each distinct set once behind an [`Arc`] and routes hold only the
//! pointer. The interner maps a set to its shared copy; sets no route uses
//! any more are dropped by [`AttrInterner::purge`], which runs when the
//! interner has doubled since the last purge, so the cost is amortised.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use crate::codec::{NextHop, PathAttributes};

/// The attributes of one route: path attributes plus the next hop (kept
/// out of [`PathAttributes`] so IPv4 and IPv6 routes look alike).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteAttrs {
    /// Path attributes, with `next_hop` always `None` (see `next_hop`).
    pub attrs: PathAttributes,
    /// The next hop; `None` only for our own routes without an explicit
    /// next hop, which mean "our address on each session".
    pub next_hop: Option<NextHop>,
}

/// A shared attribute set.
pub type AttrRef = Arc<RouteAttrs>;

/// A fast hasher for attribute sets (a multiply-rotate in the style of
/// rustc's FxHash), seeded per process so a peer cannot precompute
/// colliding attribute sets. SipHash was a tenth of the time of loading a
/// full table.
#[derive(Clone, Copy, Debug)]
pub struct AttrHasher(u64);

impl AttrHasher {
    #[inline]
    fn add(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for AttrHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.add(u64::from_le_bytes(b));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u8(&mut self, v: u8) {
        self.add(u64::from(v));
    }

    fn write_u16(&mut self, v: u16) {
        self.add(u64::from(v));
    }

    fn write_u32(&mut self, v: u32) {
        self.add(u64::from(v));
    }

    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }

    fn write_usize(&mut self, v: usize) {
        self.add(v as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Builds [`AttrHasher`]s from a per-process random seed.
#[derive(Clone, Copy, Debug)]
pub struct AttrHashState(u64);

impl Default for AttrHashState {
    fn default() -> Self {
        // std's RandomState is randomly keyed per process: use it as the
        // source of the seed.
        AttrHashState(std::collections::hash_map::RandomState::new().hash_one(0u64))
    }
}

impl BuildHasher for AttrHashState {
    type Hasher = AttrHasher;

    fn build_hasher(&self) -> AttrHasher {
        AttrHasher(self.0)
    }
}

/// The set of distinct attribute sets in use.
#[derive(Debug, Default)]
pub struct AttrInterner {
    set: HashSet<AttrRef, AttrHashState>,
    /// Size after the last purge; the next purge runs at twice this.
    purge_at: usize,
}

impl AttrInterner {
    /// An empty interner.
    pub fn new() -> AttrInterner {
        AttrInterner {
            set: HashSet::default(),
            purge_at: 1024,
        }
    }

    /// The shared copy of `attrs`.
    pub fn intern(&mut self, attrs: RouteAttrs) -> AttrRef {
        if let Some(existing) = self.set.get(&attrs) {
            return Arc::clone(existing);
        }
        if self.set.len() >= self.purge_at {
            self.purge();
        }
        let shared = Arc::new(attrs);
        self.set.insert(Arc::clone(&shared));
        shared
    }

    /// Drops sets that no route holds any more.
    pub fn purge(&mut self) {
        self.set.retain(|a| Arc::strong_count(a) > 1);
        self.purge_at = (self.set.len() * 2).max(1024);
    }

    /// Distinct sets held (some may be unused until the next purge).
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// True when no set is held.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{AsPath, Origin};
    use std::net::Ipv4Addr;

    fn attrs(asn: u32) -> RouteAttrs {
        RouteAttrs {
            attrs: PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath::from_sequence([asn])),
                ..PathAttributes::default()
            },
            next_hop: Some(NextHop::V4(Ipv4Addr::new(10, 0, 0, 1))),
        }
    }

    #[test]
    fn equal_sets_share_one_allocation() {
        let mut i = AttrInterner::new();
        let a = i.intern(attrs(1));
        let b = i.intern(attrs(1));
        let c = i.intern(attrs(2));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(i.len(), 2);
    }

    #[test]
    fn hasher_separates_similar_sets() {
        let st = AttrHashState::default();
        assert_ne!(st.hash_one(attrs(1)), st.hash_one(attrs(2)));
        assert_eq!(st.hash_one(attrs(7)), st.hash_one(attrs(7)));
        // Trailing bytes of different lengths hash differently.
        assert_ne!(
            st.hash_one([0u8; 3].as_slice()),
            st.hash_one([0u8; 4].as_slice())
        );
    }

    #[test]
    fn purge_drops_only_unused_sets() {
        let mut i = AttrInterner::new();
        let kept = i.intern(attrs(1));
        drop(i.intern(attrs(2)));
        i.purge();
        assert_eq!(i.len(), 1);
        assert!(Arc::ptr_eq(&kept, &i.intern(attrs(1))));
    }
}
