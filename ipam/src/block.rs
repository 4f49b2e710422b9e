//! An address block in memory: a bitmap of taken ordinals for fast search,
//! the allocation records, and the cooling-down ordinals. Pure: decoded from
//! and encoded to the `IPAMBlock` spec, never touches the store.
//!
//! On the wire only allocated ordinals are listed (sorted), so an empty /26 is
//! a few bytes and a full one about 64 short records; the bitmap is rebuilt on
//! decode (one pass over the records).

use margay_api::net::Cidr;
use margay_api::resources::ipam::{
    AllocationRecord, CoolingRecord, HOST_AFFINITY_PREFIX, IPAMBlockSpec,
};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Largest block we handle: /20 (IPv4) or /116 (IPv6), 4096 addresses.
pub const MAX_BLOCK_ADDRESSES: u32 = 4096;

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Holder {
    pub handle: String,
    /// The node that allocated it.
    pub node: String,
    pub namespace: Option<String>,
    pub pod: Option<String>,
}

/// A stored block that cannot be used as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("IPAMBlock {cidr:?} is corrupt: {message}")]
pub struct BlockError {
    pub cidr: String,
    pub message: String,
}

/// Why a specific address could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeError {
    OutsideBlock,
    InUse(Holder),
    CoolingDown { until: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    cidr: Cidr,
    affinity: Option<String>,
    size: u32,
    /// Bit set = ordinal allocated or cooling down (not available).
    taken: Vec<u64>,
    records: BTreeMap<u32, Holder>,
    /// Ordinal -> unix time (s) it was released.
    cooling: BTreeMap<u32, i64>,
}

impl Block {
    /// A new empty block, affine to `node` if given.
    pub fn new(cidr: Cidr, node: Option<&str>) -> Result<Block, BlockError> {
        let size = block_size(&cidr)?;
        Ok(Block {
            cidr,
            affinity: node.map(str::to_string),
            size,
            taken: vec![0; size.div_ceil(64) as usize],
            records: BTreeMap::new(),
            cooling: BTreeMap::new(),
        })
    }

    pub fn from_spec(spec: &IPAMBlockSpec) -> Result<Block, BlockError> {
        let corrupt = |message: String| BlockError {
            cidr: spec.cidr.clone(),
            message,
        };
        let cidr = Cidr::parse_strict(&spec.cidr).map_err(|e| corrupt(e.to_string()))?;
        let affinity = match &spec.affinity {
            None => None,
            Some(a) => Some(
                a.strip_prefix(HOST_AFFINITY_PREFIX)
                    .ok_or_else(|| corrupt(format!("affinity {a:?} is not host:<node>")))?
                    .to_string(),
            ),
        };
        let mut b = Block::new(cidr, affinity.as_deref())?;
        for r in &spec.allocations {
            if r.ordinal >= b.size {
                return Err(corrupt(format!("ordinal {} outside the block", r.ordinal)));
            }
            if b.is_set(r.ordinal) {
                return Err(corrupt(format!("ordinal {} listed twice", r.ordinal)));
            }
            let node = match (&r.node, &b.affinity) {
                (Some(n), _) | (None, Some(n)) => n.clone(),
                (None, None) => {
                    return Err(corrupt(format!(
                        "ordinal {} has no node and the block no affinity",
                        r.ordinal
                    )));
                }
            };
            b.set(r.ordinal);
            b.records.insert(
                r.ordinal,
                Holder {
                    handle: r.handle.clone(),
                    node,
                    namespace: r.namespace.clone(),
                    pod: r.pod.clone(),
                },
            );
        }
        for c in &spec.cooling {
            if c.ordinal >= b.size || b.records.contains_key(&c.ordinal) {
                return Err(corrupt(format!("cooling ordinal {} invalid", c.ordinal)));
            }
            b.set(c.ordinal);
            b.cooling.insert(c.ordinal, c.released_at);
        }
        Ok(b)
    }

    pub fn to_spec(&self) -> IPAMBlockSpec {
        IPAMBlockSpec {
            cidr: self.cidr.to_string(),
            affinity: self
                .affinity
                .as_ref()
                .map(|n| format!("{HOST_AFFINITY_PREFIX}{n}")),
            allocations: self
                .records
                .iter()
                .map(|(&ordinal, h)| AllocationRecord {
                    ordinal,
                    handle: h.handle.clone(),
                    // Only when it differs from the block's node (compact JSON).
                    node: (self.affinity.as_deref() != Some(h.node.as_str()))
                        .then(|| h.node.clone()),
                    namespace: h.namespace.clone(),
                    pod: h.pod.clone(),
                })
                .collect(),
            cooling: self
                .cooling
                .iter()
                .map(|(&ordinal, &released_at)| CoolingRecord {
                    ordinal,
                    released_at,
                })
                .collect(),
            in_use: self.records.len() as u32,
        }
    }

    pub fn cidr(&self) -> Cidr {
        self.cidr
    }

    /// The node holding the block, if any.
    pub fn affinity(&self) -> Option<&str> {
        self.affinity.as_deref()
    }

    pub fn set_affinity(&mut self, node: Option<&str>) {
        self.affinity = node.map(str::to_string);
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    pub fn in_use(&self) -> usize {
        self.records.len()
    }

    /// No allocations and nothing cooling down: safe to delete.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.cooling.is_empty()
    }

    pub fn has_allocations(&self) -> bool {
        !self.records.is_empty()
    }

    /// Addresses that could be allocated now (ignoring cooling expiry).
    pub fn free_count(&self) -> u32 {
        self.size - self.taken.iter().map(|w| w.count_ones()).sum::<u32>()
    }

    /// Forget cooling entries older than `cooldown` seconds; true if any went.
    pub fn expire_cooling(&mut self, now: i64, cooldown_secs: i64) -> bool {
        let expired: Vec<u32> = self
            .cooling
            .iter()
            .filter(|&(_, &at)| at.saturating_add(cooldown_secs) <= now)
            .map(|(&o, _)| o)
            .collect();
        for o in &expired {
            self.cooling.remove(o);
            self.clear(*o);
        }
        !expired.is_empty()
    }

    /// Take the lowest free ordinal for `holder`.
    pub fn allocate(&mut self, holder: Holder) -> Option<IpAddr> {
        let ordinal = self.first_free()?;
        self.set(ordinal);
        self.records.insert(ordinal, holder);
        self.cidr.nth(u128::from(ordinal))
    }

    /// Take `ip` for `holder`.
    pub fn take(&mut self, ip: IpAddr, holder: Holder) -> Result<(), TakeError> {
        let ordinal = self.ordinal(ip).ok_or(TakeError::OutsideBlock)?;
        if let Some(h) = self.records.get(&ordinal) {
            return Err(TakeError::InUse(h.clone()));
        }
        if let Some(&at) = self.cooling.get(&ordinal) {
            return Err(TakeError::CoolingDown { until: at });
        }
        self.set(ordinal);
        self.records.insert(ordinal, holder);
        Ok(())
    }

    pub fn holder(&self, ip: IpAddr) -> Option<&Holder> {
        self.ordinal(ip).and_then(|o| self.records.get(&o))
    }

    /// Release `ip`; with a cooldown the ordinal stays unavailable, stamped `now`.
    pub fn release(&mut self, ip: IpAddr, now: i64, cooldown: bool) -> Option<Holder> {
        let ordinal = self.ordinal(ip)?;
        let holder = self.records.remove(&ordinal)?;
        if cooldown {
            self.cooling.insert(ordinal, now);
        } else {
            self.clear(ordinal);
        }
        Some(holder)
    }

    /// Release every address of `handle`, returning them.
    pub fn release_handle(&mut self, handle: &str, now: i64, cooldown: bool) -> Vec<IpAddr> {
        let ips = self.addresses_of(handle);
        for ip in &ips {
            self.release(*ip, now, cooldown);
        }
        ips
    }

    pub fn addresses_of(&self, handle: &str) -> Vec<IpAddr> {
        self.records
            .iter()
            .filter(|(_, h)| h.handle == handle)
            .filter_map(|(&o, _)| self.cidr.nth(u128::from(o)))
            .collect()
    }

    /// Every allocation, by address.
    pub fn allocations(&self) -> impl Iterator<Item = (IpAddr, &Holder)> {
        self.records
            .iter()
            .filter_map(|(&o, h)| self.cidr.nth(u128::from(o)).map(|ip| (ip, h)))
    }

    fn ordinal(&self, ip: IpAddr) -> Option<u32> {
        self.cidr.ordinal_of(ip).and_then(|o| u32::try_from(o).ok())
    }

    fn first_free(&self) -> Option<u32> {
        for (i, &w) in self.taken.iter().enumerate() {
            if w != u64::MAX {
                let ordinal = i as u32 * 64 + w.trailing_ones();
                return (ordinal < self.size).then_some(ordinal);
            }
        }
        None
    }

    fn is_set(&self, o: u32) -> bool {
        self.taken[(o / 64) as usize] & (1 << (o % 64)) != 0
    }

    fn set(&mut self, o: u32) {
        self.taken[(o / 64) as usize] |= 1 << (o % 64);
    }

    fn clear(&mut self, o: u32) {
        self.taken[(o / 64) as usize] &= !(1 << (o % 64));
    }
}

fn block_size(cidr: &Cidr) -> Result<u32, BlockError> {
    let size = cidr.size();
    if size > u128::from(MAX_BLOCK_ADDRESSES) {
        return Err(BlockError {
            cidr: cidr.to_string(),
            message: format!("{size} addresses; at most {MAX_BLOCK_ADDRESSES} per block"),
        });
    }
    Ok(size as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(handle: &str) -> Holder {
        Holder {
            handle: handle.into(),
            node: "n1".into(),
            namespace: Some("default".into()),
            pod: Some(format!("pod-{handle}")),
        }
    }

    fn block(cidr: &str) -> Block {
        Block::new(cidr.parse().expect("cidr"), Some("n1")).expect("block")
    }

    #[test]
    fn allocates_lowest_free_and_fills_up() {
        let mut b = block("10.0.0.64/26");
        assert_eq!(b.free_count(), 64);
        let first = b.allocate(holder("a"));
        assert_eq!(first, Some("10.0.0.64".parse().unwrap()));
        for i in 1..64 {
            assert!(b.allocate(holder(&format!("h{i}"))).is_some());
        }
        assert_eq!(b.free_count(), 0);
        assert_eq!(b.allocate(holder("full")), None);
        let released = b.release("10.0.0.100".parse().unwrap(), 0, false);
        assert_eq!(released.map(|h| h.handle), Some("h36".to_string()));
        assert_eq!(b.allocate(holder("z")), Some("10.0.0.100".parse().unwrap()));
    }

    #[test]
    fn wire_round_trip_is_exact_and_compact() {
        let mut b = block("fd00::40/122");
        b.allocate(holder("a"));
        b.allocate(holder("b"));
        b.release("fd00::40".parse().unwrap(), 1000, true);
        let spec = b.to_spec();
        assert_eq!(spec.in_use, 1);
        assert_eq!(spec.cooling.len(), 1);
        assert_eq!(spec.affinity.as_deref(), Some("host:n1"));
        assert_eq!(
            spec.allocations[0].node, None,
            "the block's own node is implied"
        );
        let back = Block::from_spec(&spec).expect("decodes");
        assert_eq!(back, b);
        // A borrower's node is written; detaching writes every node.
        b.allocate(Holder {
            node: "n2".into(),
            ..holder("c")
        });
        b.set_affinity(None);
        let spec = b.to_spec();
        assert!(spec.allocations.iter().all(|a| a.node.is_some()));
        assert_eq!(Block::from_spec(&spec).expect("decodes"), b);
        let empty = serde_json::to_string(&block("10.0.0.0/26").to_spec()).expect("json");
        assert!(empty.len() < 80, "{empty}");
    }

    #[test]
    fn cooling_ordinals_are_not_reused_until_expired() {
        let mut b = block("10.0.0.0/30");
        for h in ["a", "b", "c", "d"] {
            b.allocate(holder(h));
        }
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        b.release(ip, 100, true);
        assert_eq!(b.allocate(holder("x")), None, "cooling address reused");
        assert_eq!(
            b.take(ip, holder("x")),
            Err(TakeError::CoolingDown { until: 100 })
        );
        assert!(!b.expire_cooling(129, 30));
        assert!(b.expire_cooling(130, 30));
        assert_eq!(b.allocate(holder("x")), Some(ip));
    }

    #[test]
    fn take_and_release_by_handle() {
        let mut b = block("10.0.0.0/26");
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        b.take(ip, holder("a")).expect("free");
        assert!(matches!(b.take(ip, holder("b")), Err(TakeError::InUse(h)) if h.handle == "a"));
        assert_eq!(
            b.take("10.0.1.0".parse().unwrap(), holder("b")),
            Err(TakeError::OutsideBlock)
        );
        b.allocate(holder("a"));
        assert_eq!(b.release_handle("a", 0, false).len(), 2);
        assert!(b.is_empty());
        assert!(
            b.release(ip, 0, false).is_none(),
            "second release is a no-op"
        );
    }

    #[test]
    fn corrupt_specs_are_refused() {
        let mut spec = block("10.0.0.0/26").to_spec();
        spec.allocations.push(AllocationRecord {
            ordinal: 64,
            handle: "x".into(),
            node: Some("n".into()),
            namespace: None,
            pod: None,
        });
        assert!(Block::from_spec(&spec).is_err());
        let mut spec = block("10.0.0.0/26").to_spec();
        spec.affinity = Some("node:x".into());
        assert!(Block::from_spec(&spec).is_err());
        assert!(Block::new("10.0.0.0/16".parse().unwrap(), None).is_err());
        let mut spec = block("10.0.0.0/26").to_spec();
        spec.affinity = None;
        spec.allocations.push(AllocationRecord {
            ordinal: 1,
            handle: "x".into(),
            node: None,
            namespace: None,
            pod: None,
        });
        assert!(Block::from_spec(&spec).is_err(), "no node anywhere");
    }
}
