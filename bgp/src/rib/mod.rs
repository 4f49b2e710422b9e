//! The routing information base, pure: no sockets, no clocks, no tasks.
//!
//! [`Rib`] owns every path (per-peer Adj-RIB-In, tagged in one
//! [`table`]), selects the best path per prefix ([`decision`]) and decides
//! what each peer should be sent ([`export`]). Every mutating call returns
//! [`RibOutput`]s: which prefixes' best routes changed (for the agent) and
//! which advertisements each peer's session must send. The speaker task
//! applies them; tests read them directly.

pub mod attrs;
pub mod decision;
pub mod export;
pub mod table;
pub mod view;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::codec::{Family, NextHop, PathAttributes, Prefix, Update};
use crate::config::PeerConfig;
use crate::policy::{FilterAction, PrefixFilter, effective_action};

pub use attrs::{AttrInterner, AttrRef, RouteAttrs};
pub use table::{LOCAL, Path, PeerId, Rejection};
use table::{Table, V4Key, V6Key, flags};
pub use view::{PeerCounters, RouteView};

/// Speaker-wide RIB settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RibConfig {
    /// Our AS.
    pub local_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Our route-reflector cluster id.
    pub cluster_id: Ipv4Addr,
    /// Keep equal-cost paths.
    pub multipath: bool,
}

/// A peer's policy settings, as the RIB uses them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerPolicy {
    /// The peer's address.
    pub address: IpAddr,
    /// The peer's AS.
    pub asn: u32,
    /// Our route-reflector client.
    pub rr_client: bool,
    /// Next hop self on non-reflected routes.
    pub next_hop_self: bool,
    /// Extra eBGP prepends.
    pub as_path_prepend: u8,
    /// Import filter (None: RFC 8212 default).
    pub import: Option<PrefixFilter>,
    /// Export filter (None: RFC 8212 default).
    pub export: Option<PrefixFilter>,
    /// Per-family prefix limit.
    pub max_prefixes: Option<u32>,
    /// IPv6 next hop over IPv4 sessions.
    pub ipv6_next_hop: Option<Ipv6Addr>,
}

impl PeerPolicy {
    /// From a peer's config.
    pub fn from_config(c: &PeerConfig) -> PeerPolicy {
        PeerPolicy {
            address: c.address,
            asn: c.asn,
            rr_client: c.route_reflector_client,
            next_hop_self: c.next_hop_self,
            as_path_prepend: c.as_path_prepend,
            import: c.import.clone(),
            export: c.export.clone(),
            max_prefixes: c.max_prefixes,
            ipv6_next_hop: c.ipv6_next_hop,
        }
    }

    fn export_fields_differ(&self, other: &PeerPolicy) -> bool {
        self.next_hop_self != other.next_hop_self
            || self.as_path_prepend != other.as_path_prepend
            || self.export != other.export
            || self.ipv6_next_hop != other.ipv6_next_hop
    }
}

/// What the RIB learns when a session comes up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The peer's BGP identifier.
    pub router_id: Ipv4Addr,
    /// Negotiated families.
    pub families: Vec<Family>,
    /// Our address on the session.
    pub local_address: IpAddr,
    /// Families whose stale routes survive this reconnection: those in the
    /// peer's new graceful restart capability with the Forwarding State
    /// bit set. `None`: the peer did not send the capability.
    pub preserved: Option<Vec<Family>>,
}

/// One consequence of a RIB change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RibOutput {
    /// The best route (or multipath set) of the prefix changed, and the
    /// old or the new one was learned from a peer.
    BestChanged(Prefix),
    /// Send this to the peer: attributes to announce, or `None` to withdraw.
    Advertise {
        /// The receiving peer.
        peer: PeerId,
        /// The prefix.
        prefix: Prefix,
        /// What to announce; `None` withdraws.
        attrs: Option<AttrRef>,
    },
}

/// An UPDATE pushed the peer over its prefix limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixLimitExceeded {
    /// The family.
    pub family: Family,
    /// The configured limit.
    pub limit: u32,
}

/// The best route of a prefix, as the agent sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BestRoute {
    /// The prefix.
    pub prefix: Prefix,
    /// Next hops of every path in the multipath set, best first, without
    /// duplicates (one entry without multipath).
    pub next_hops: Vec<IpAddr>,
    /// Attributes of the best path.
    pub attrs: AttrRef,
    /// The peer the best path came from.
    pub peer: IpAddr,
    /// Learned over eBGP.
    pub ebgp: bool,
    /// Kept from a peer that is restarting (RFC 4724).
    pub stale: bool,
}

#[derive(Clone, Debug)]
struct RibPeer {
    policy: PeerPolicy,
    ebgp: bool,
    /// Set while Established.
    session: Option<SessionInfo>,
    /// Last known BGP identifier (stale paths outlive the session).
    router_id: Ipv4Addr,
    counters: PeerCounters,
    /// Last export: (source peer, source attrs, result), so runs of
    /// prefixes sharing attributes build and intern the result once.
    memo: Option<(PeerId, AttrRef, AttrRef)>,
}

/// Index of a family in per-family counters.
fn fidx(p: &Prefix) -> usize {
    usize::from(!p.is_ipv4())
}

fn family_of(p: &Prefix) -> Family {
    if p.is_ipv4() {
        Family::IPV4_UNICAST
    } else {
        Family::IPV6_UNICAST
    }
}

/// The best path of a prefix before a change, to compare with after.
#[derive(Clone, Debug)]
struct Before {
    best: Option<Path>,
    /// (peer, attrs) of the multipath set when multipath is on.
    multipath: Vec<(PeerId, AttrRef)>,
}

impl PartialEq for Before {
    fn eq(&self, other: &Before) -> bool {
        let same = |a: &Path, b: &Path| a.peer == b.peer && Arc::ptr_eq(&a.attrs, &b.attrs);
        let best = match (&self.best, &other.best) {
            (None, None) => true,
            (Some(a), Some(b)) => same(a, b),
            _ => false,
        };
        best && self.multipath.len() == other.multipath.len()
            && self
                .multipath
                .iter()
                .zip(&other.multipath)
                .all(|(a, b)| a.0 == b.0 && Arc::ptr_eq(&a.1, &b.1))
    }
}

/// The RIB.
#[derive(Debug)]
pub struct Rib {
    cfg: RibConfig,
    v4: Table<V4Key>,
    v6: Table<V6Key>,
    /// Indexed by [`PeerId`]; slot 0 ([`LOCAL`]) is never a peer.
    peers: Vec<Option<RibPeer>>,
    interner: AttrInterner,
    /// Restarting speaker (RFC 4724 §4.1): compute, but send nothing until
    /// [`Rib::end_deferral`].
    deferring: bool,
}

impl Rib {
    /// An empty RIB.
    pub fn new(cfg: RibConfig) -> Rib {
        Rib {
            cfg,
            v4: Table::default(),
            v6: Table::default(),
            peers: vec![None],
            interner: AttrInterner::new(),
            deferring: false,
        }
    }

    /// The settings.
    pub fn config(&self) -> &RibConfig {
        &self.cfg
    }

    /// Starts deferring advertisements (restarting speaker).
    pub fn set_deferring(&mut self, on: bool) {
        self.deferring = on;
    }

    /// True while advertisements are deferred.
    pub fn is_deferring(&self) -> bool {
        self.deferring
    }

    /// Ends deferral; the caller then dumps the table to every
    /// Established peer with [`Rib::export_all`].
    pub fn end_deferral(&mut self) {
        self.deferring = false;
    }

    /// Distinct attribute sets held.
    pub fn attribute_sets(&self) -> usize {
        self.interner.len()
    }

    /// Number of prefixes with at least one path.
    pub fn prefix_count(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    // ----- peers -----

    /// Registers a peer; its id is used in every other call.
    pub fn add_peer(&mut self, policy: PeerPolicy) -> PeerId {
        let ebgp = policy.asn != self.cfg.local_as;
        let peer = RibPeer {
            policy,
            ebgp,
            session: None,
            router_id: Ipv4Addr::UNSPECIFIED,
            counters: PeerCounters::default(),
            memo: None,
        };
        if let Some(i) = self.peers.iter().skip(1).position(Option::is_none) {
            self.peers[i + 1] = Some(peer);
            return (i + 1) as PeerId;
        }
        self.peers.push(Some(peer));
        (self.peers.len() - 1) as PeerId
    }

    fn peer(&self, id: PeerId) -> Option<&RibPeer> {
        self.peers.get(id as usize).and_then(Option::as_ref)
    }

    fn peer_mut(&mut self, id: PeerId) -> Option<&mut RibPeer> {
        self.peers.get_mut(id as usize).and_then(Option::as_mut)
    }

    /// Counters of a peer.
    pub fn counters(&self, id: PeerId) -> Option<PeerCounters> {
        self.peer(id).map(|p| p.counters)
    }

    /// True when the peer has any stale path.
    pub fn has_stale(&self, id: PeerId) -> bool {
        self.peer(id).is_some_and(|p| p.counters.stale > 0)
    }

    /// Removes a peer and all its paths.
    pub fn remove_peer(&mut self, id: PeerId) -> Vec<RibOutput> {
        let mut out = Vec::new();
        if id == LOCAL || self.peer(id).is_none() {
            return out;
        }
        if let Some(p) = self.peer_mut(id) {
            p.session = None;
        }
        for prefix in self.prefixes_of(id, |_| true) {
            self.remove_path(id, &prefix, &mut out);
        }
        self.peers[id as usize] = None;
        self.interner.purge();
        out
    }

    /// Applies new policy settings; re-evaluates imports and exports.
    pub fn update_peer(&mut self, id: PeerId, policy: PeerPolicy) -> Vec<RibOutput> {
        let mut out = Vec::new();
        let Some(old) = self.peer(id).cloned() else {
            return out;
        };
        let import_changed = old.policy.import != policy.import;
        let export_changed = old.policy.export_fields_differ(&policy);
        if let Some(p) = self.peer_mut(id) {
            p.policy = policy;
            p.memo = None;
        }
        if import_changed {
            self.reimport(id, &mut out);
        }
        if export_changed && old.session.is_some() && !self.deferring {
            self.reexport(id, &old, &mut out);
        }
        out
    }

    /// Re-applies the import policy to the peer's stored paths.
    fn reimport(&mut self, id: PeerId, out: &mut Vec<RibOutput>) {
        let Some(peer) = self.peer(id) else { return };
        let (import, ebgp) = (peer.policy.import.clone(), peer.ebgp);
        for prefix in self.prefixes_of(id, |_| true) {
            let Some(path) = self
                .table_get(&prefix)
                .iter()
                .find(|p| p.peer == id)
                .cloned()
            else {
                continue;
            };
            let loop_reason = path.rejected.filter(|r| *r != Rejection::Policy);
            let policy_reason = (effective_action(import.as_ref(), ebgp, &prefix)
                == FilterAction::Reject)
                .then_some(Rejection::Policy);
            let rejected = loop_reason.or(policy_reason);
            if rejected != path.rejected {
                let new = Path { rejected, ..path };
                self.set_path(id, &prefix, new, out);
            }
        }
    }

    /// Sends a peer what changed after its export settings changed.
    fn reexport(&mut self, id: PeerId, old: &RibPeer, out: &mut Vec<RibOutput>) {
        for (prefix, best) in self.best_paths(None) {
            let was = self.plan_for(&prefix, &best, old, id).is_some();
            let now = self.export_to(id, &prefix, &best);
            match now {
                Some(a) => out.push(RibOutput::Advertise {
                    peer: id,
                    prefix,
                    attrs: Some(a),
                }),
                None if was => out.push(RibOutput::Advertise {
                    peer: id,
                    prefix,
                    attrs: None,
                }),
                None => {}
            }
        }
        self.recount_advertised(id);
    }

    /// The session with `id` is Established. Flushes stale paths of
    /// families the peer did not preserve; returns the initial
    /// advertisements (empty while deferring); the caller sends End-of-RIB
    /// after them.
    pub fn peer_up(&mut self, id: PeerId, info: SessionInfo) -> Vec<RibOutput> {
        let mut out = Vec::new();
        let families = info.families.clone();
        let preserved = info.preserved.clone();
        let Some(p) = self.peer_mut(id) else {
            return out;
        };
        p.router_id = info.router_id;
        p.session = Some(info);
        p.memo = None;
        p.counters.advertised = [0; 2];
        if p.counters.stale > 0 {
            for f in [Family::IPV4_UNICAST, Family::IPV6_UNICAST] {
                let keep = preserved.as_ref().is_some_and(|v| v.contains(&f));
                if !keep {
                    self.flush_stale(id, Some(f), &mut out);
                }
            }
        }
        if !self.deferring {
            for f in families {
                out.extend(self.export_all(id, f));
            }
        }
        out
    }

    /// The session with `id` went down. Paths of families in `keep_stale`
    /// are kept and marked stale (graceful restart helper); the rest are
    /// withdrawn.
    pub fn peer_down(&mut self, id: PeerId, keep_stale: &[Family]) -> Vec<RibOutput> {
        let mut out = Vec::new();
        let Some(p) = self.peer_mut(id) else {
            return out;
        };
        p.session = None;
        p.memo = None;
        p.counters.advertised = [0; 2];
        for prefix in self.prefixes_of(id, |_| true) {
            if keep_stale.contains(&family_of(&prefix)) {
                self.mark_stale_one(id, &prefix);
            } else {
                self.remove_path(id, &prefix, &mut out);
            }
        }
        out
    }

    /// Marks every path of `id` in `family` stale (RFC 7313 BoRR).
    pub fn mark_stale(&mut self, id: PeerId, family: Family) {
        for prefix in self.prefixes_of(id, |_| true) {
            if family_of(&prefix) == family {
                self.mark_stale_one(id, &prefix);
            }
        }
    }

    fn mark_stale_one(&mut self, id: PeerId, prefix: &Prefix) {
        let newly = match self.table_path_mut(prefix, id) {
            Some(path) if path.flags & flags::STALE == 0 => {
                path.flags |= flags::STALE;
                true
            }
            _ => false,
        };
        if newly && let Some(p) = self.peer_mut(id) {
            p.counters.stale += 1;
        }
    }

    /// End-of-RIB (or EoRR, or a timer): drops the peer's stale paths of
    /// `family` (all families for `None`).
    pub fn end_of_stale(&mut self, id: PeerId, family: Option<Family>) -> Vec<RibOutput> {
        let mut out = Vec::new();
        self.flush_stale(id, family, &mut out);
        out
    }

    fn flush_stale(&mut self, id: PeerId, family: Option<Family>, out: &mut Vec<RibOutput>) {
        if !self.has_stale(id) {
            return;
        }
        for prefix in self.prefixes_of(id, Path::is_stale) {
            if family.is_none_or(|f| f == family_of(&prefix)) {
                self.remove_path(id, &prefix, out);
            }
        }
    }

    // ----- routes in -----

    /// Applies a received UPDATE (after the codec's RFC 7606 disposition:
    /// a treat-as-withdraw UPDATE must be given as withdrawals). Returns
    /// the outputs and, if the peer went over its limit, which one.
    pub fn apply_update(
        &mut self,
        id: PeerId,
        update: &Update,
    ) -> (Vec<RibOutput>, Option<PrefixLimitExceeded>) {
        let mut out = Vec::new();
        let Some(peer) = self.peer(id) else {
            return (out, None);
        };
        let ebgp = peer.ebgp;
        let peer_as = peer.policy.asn;
        let import = peer.policy.import.clone();
        let limit = peer.policy.max_prefixes;
        for un in update.unreach() {
            for prefix in un.prefixes {
                self.remove_path(id, prefix, &mut out);
            }
        }
        let mut touched = [false; 2];
        for reach in update.reach() {
            if !matches!(reach.family, Family::IPV4_UNICAST | Family::IPV6_UNICAST) {
                continue;
            }
            let Some(next_hop) = reach.next_hop else {
                // Classic NLRI without NEXT_HOP: the codec's disposition is
                // treat-as-withdraw; withdraw here too to be safe.
                for prefix in reach.prefixes {
                    self.remove_path(id, prefix, &mut out);
                }
                continue;
            };
            let mut attrs = update.attributes.clone();
            attrs.next_hop = None;
            if ebgp {
                // RFC 7606 §7.5/§7.9: these are iBGP-only; from eBGP they
                // are discarded.
                attrs.local_pref = None;
                attrs.originator_id = None;
                attrs.cluster_list.clear();
            }
            let loop_reason = self.import_check(&attrs, ebgp, peer_as);
            let shared = self.interner.intern(RouteAttrs {
                attrs,
                next_hop: Some(next_hop),
            });
            for prefix in reach.prefixes {
                if family_of(prefix) != reach.family {
                    continue;
                }
                let rejected = loop_reason.or_else(|| {
                    (effective_action(import.as_ref(), ebgp, prefix) == FilterAction::Reject)
                        .then_some(Rejection::Policy)
                });
                touched[fidx(prefix)] = true;
                let path = Path {
                    attrs: Arc::clone(&shared),
                    peer: id,
                    flags: 0,
                    rejected,
                };
                self.set_path(id, prefix, path, &mut out);
            }
        }
        let mut exceeded = None;
        if let (Some(limit), Some(peer)) = (limit, self.peer(id)) {
            for (i, family) in [Family::IPV4_UNICAST, Family::IPV6_UNICAST]
                .into_iter()
                .enumerate()
            {
                if touched[i] && peer.counters.accepted[i] > limit {
                    exceeded = Some(PrefixLimitExceeded { family, limit });
                }
            }
        }
        (out, exceeded)
    }

    /// Loop and sanity checks on a received path's attributes (RFC 4271
    /// §9.1.2, RFC 4456 §8, RFC 7606 §7.2).
    fn import_check(&self, a: &PathAttributes, ebgp: bool, peer_as: u32) -> Option<Rejection> {
        let Some(as_path) = a.as_path.as_ref() else {
            return Some(Rejection::Malformed);
        };
        if ebgp && as_path.first_asn() != Some(peer_as) {
            return Some(Rejection::FirstAsMismatch);
        }
        if as_path.contains(self.cfg.local_as) {
            return Some(Rejection::AsLoop);
        }
        if !ebgp {
            if a.originator_id == Some(self.cfg.router_id) {
                return Some(Rejection::OriginatorLoop);
            }
            if a.cluster_list.contains(&self.cfg.cluster_id) {
                return Some(Rejection::ClusterLoop);
            }
        }
        None
    }

    // ----- our own routes -----

    /// Originates `prefix` with `attrs` (next hop `None` = our address on
    /// each session).
    pub fn announce_local(&mut self, prefix: &Prefix, attrs: RouteAttrs) -> Vec<RibOutput> {
        let mut out = Vec::new();
        let shared = self.interner.intern(attrs);
        let path = Path {
            attrs: shared,
            peer: LOCAL,
            flags: 0,
            rejected: None,
        };
        self.set_path(LOCAL, prefix, path, &mut out);
        out
    }

    /// Stops originating `prefix`.
    pub fn withdraw_local(&mut self, prefix: &Prefix) -> Vec<RibOutput> {
        let mut out = Vec::new();
        self.remove_path(LOCAL, prefix, &mut out);
        out
    }

    /// Our own routes.
    pub fn local_routes(&self) -> Vec<(Prefix, AttrRef)> {
        self.all_prefixes()
            .into_iter()
            .filter_map(|p| {
                let a = self
                    .table_get(&p)
                    .iter()
                    .find(|x| x.peer == LOCAL)?
                    .attrs
                    .clone();
                Some((p, a))
            })
            .collect()
    }

    // ----- table plumbing -----

    fn table_get(&self, p: &Prefix) -> &[Path] {
        if p.is_ipv4() {
            self.v4.get(p)
        } else {
            self.v6.get(p)
        }
    }

    fn table_path_mut(&mut self, p: &Prefix, peer: PeerId) -> Option<&mut Path> {
        if p.is_ipv4() {
            self.v4.path_mut(p, peer)
        } else {
            self.v6.path_mut(p, peer)
        }
    }

    fn prefixes_of(&self, peer: PeerId, pred: impl Fn(&Path) -> bool + Copy) -> Vec<Prefix> {
        let mut v = self.v4.prefixes_of(peer, pred);
        v.extend(self.v6.prefixes_of(peer, pred));
        v
    }

    fn all_prefixes(&self) -> Vec<Prefix> {
        self.v4
            .iter()
            .map(|(p, _)| p)
            .chain(self.v6.iter().map(|(p, _)| p))
            .collect()
    }

    fn select(&self, paths: &[Path]) -> Option<decision::Selection> {
        select_with(&self.peers, &self.cfg, paths)
    }

    fn set_path(&mut self, id: PeerId, prefix: &Prefix, path: Path, out: &mut Vec<RibOutput>) {
        let eligible = path.eligible();
        // One table lookup for the change and both summaries: this is the
        // hot path when a peer sends a full table.
        let (peers, cfg) = (&self.peers, &self.cfg);
        let summarize = |paths: &[Path]| summary(peers, cfg, paths);
        let (before, after, old) = if prefix.is_ipv4() {
            self.v4.upsert_with(prefix, path, summarize)
        } else {
            self.v6.upsert_with(prefix, path, summarize)
        };
        if let Some(p) = self.peer_mut(id) {
            let c = &mut p.counters;
            let i = fidx(prefix);
            match &old {
                None => c.received[i] += 1,
                Some(o) => {
                    if o.eligible() {
                        c.accepted[i] -= 1;
                    }
                    if o.is_stale() {
                        c.stale -= 1;
                    }
                }
            }
            if eligible {
                c.accepted[i] += 1;
            }
        }
        self.after_change(prefix, before, after, out);
    }

    fn remove_path(&mut self, id: PeerId, prefix: &Prefix, out: &mut Vec<RibOutput>) {
        let (peers, cfg) = (&self.peers, &self.cfg);
        let summarize = |paths: &[Path]| summary(peers, cfg, paths);
        let removed = if prefix.is_ipv4() {
            self.v4.remove_with(prefix, id, summarize)
        } else {
            self.v6.remove_with(prefix, id, summarize)
        };
        let Some((before, after, old)) = removed else {
            return;
        };
        if let Some(p) = self.peer_mut(id) {
            let c = &mut p.counters;
            let i = fidx(prefix);
            c.received[i] -= 1;
            if old.eligible() {
                c.accepted[i] -= 1;
            }
            if old.is_stale() {
                c.stale -= 1;
            }
        }
        self.after_change(prefix, before, after, out);
    }

    /// Emits what a change of `prefix` from `before` to `after` means.
    fn after_change(
        &mut self,
        prefix: &Prefix,
        before: Before,
        after: Before,
        out: &mut Vec<RibOutput>,
    ) {
        if after == before {
            return;
        }
        // The agent hears about routes learned from peers only: a change
        // between "nothing" and "our own route" is not news to it.
        let learned = |b: &Before| b.best.as_ref().is_some_and(|p| p.peer != LOCAL);
        if learned(&before) || learned(&after) {
            out.push(RibOutput::BestChanged(*prefix));
        }
        let best_same = match (&before.best, &after.best) {
            (Some(a), Some(b)) => a.peer == b.peer && Arc::ptr_eq(&a.attrs, &b.attrs),
            (None, None) => true,
            _ => false,
        };
        if best_same || self.deferring {
            return;
        }
        let family = family_of(prefix);
        for to in 1..self.peers.len() as PeerId {
            let Some(peer) = self.peer(to) else { continue };
            if !peer
                .session
                .as_ref()
                .is_some_and(|s| s.families.contains(&family))
            {
                continue;
            }
            let was = before
                .best
                .as_ref()
                .is_some_and(|b| self.plan_for(prefix, b, peer, to).is_some());
            let now = after
                .best
                .as_ref()
                .and_then(|b| self.export_to(to, prefix, b));
            let i = fidx(prefix);
            match now {
                Some(a) => {
                    if !was && let Some(p) = self.peer_mut(to) {
                        p.counters.advertised[i] += 1;
                    }
                    out.push(RibOutput::Advertise {
                        peer: to,
                        prefix: *prefix,
                        attrs: Some(a),
                    });
                }
                None if was => {
                    if let Some(p) = self.peer_mut(to) {
                        p.counters.advertised[i] = p.counters.advertised[i].saturating_sub(1);
                    }
                    out.push(RibOutput::Advertise {
                        peer: to,
                        prefix: *prefix,
                        attrs: None,
                    });
                }
                None => {}
            }
        }
    }

    // ----- routes out -----

    fn export_source(&self, path: &Path) -> export::ExportSource {
        match self.peer(path.peer) {
            Some(p) => export::ExportSource {
                id: path.peer,
                ebgp: p.ebgp,
                rr_client: p.policy.rr_client,
                router_id: p.router_id,
            },
            None => export::ExportSource {
                id: LOCAL,
                ebgp: false,
                rr_client: false,
                router_id: self.cfg.router_id,
            },
        }
    }

    fn target<'a>(&self, peer: &'a RibPeer, id: PeerId) -> Option<export::ExportTarget<'a>> {
        let s = peer.session.as_ref()?;
        Some(export::ExportTarget {
            id,
            ebgp: peer.ebgp,
            asn: peer.policy.asn,
            rr_client: peer.policy.rr_client,
            router_id: s.router_id,
            next_hop_self: peer.policy.next_hop_self,
            as_path_prepend: peer.policy.as_path_prepend,
            export: peer.policy.export.as_ref(),
            local_address: s.local_address,
            ipv6_next_hop: peer.policy.ipv6_next_hop,
        })
    }

    fn export_context(&self) -> export::ExportContext {
        export::ExportContext {
            local_as: self.cfg.local_as,
            cluster_id: self.cfg.cluster_id,
        }
    }

    fn plan_for(
        &self,
        prefix: &Prefix,
        path: &Path,
        to: &RibPeer,
        to_id: PeerId,
    ) -> Option<export::ExportPlan> {
        let target = self.target(to, to_id)?;
        export::plan(prefix, path, &self.export_source(path), &target)
    }

    /// What peer `to` should hold for `prefix` if `best` is the best path.
    fn export_to(&mut self, to: PeerId, prefix: &Prefix, best: &Path) -> Option<AttrRef> {
        let peer = self.peer(to)?;
        let plan = self.plan_for(prefix, best, peer, to)?;
        if let Some((src, ref a, ref out)) = peer.memo
            && src == best.peer
            && Arc::ptr_eq(a, &best.attrs)
            && out.next_hop == plan.next_hop.or(best.attrs.next_hop)
        {
            return Some(out.clone());
        }
        let target = self.target(peer, to)?;
        let built = export::attributes(
            &self.export_context(),
            best,
            &self.export_source(best),
            &target,
            &plan,
        );
        let shared = self.interner.intern(built);
        if let Some(p) = self.peer_mut(to) {
            p.memo = Some((best.peer, best.attrs.clone(), shared.clone()));
        }
        Some(shared)
    }

    /// Everything peer `id` should hold in `family` (initial dump, route
    /// refresh, end of deferral). Also resets its advertised counter.
    pub fn export_all(&mut self, id: PeerId, family: Family) -> Vec<RibOutput> {
        let mut out = Vec::new();
        let bests: Vec<(Prefix, Path)> = self.best_paths(Some(family)).into_iter().collect();
        let mut count = 0u32;
        for (prefix, best) in bests {
            if let Some(a) = self.export_to(id, &prefix, &best) {
                count += 1;
                out.push(RibOutput::Advertise {
                    peer: id,
                    prefix,
                    attrs: Some(a),
                });
            }
        }
        let i = usize::from(family != Family::IPV4_UNICAST);
        if let Some(p) = self.peer_mut(id) {
            p.counters.advertised[i] = count;
        }
        out
    }

    fn recount_advertised(&mut self, id: PeerId) {
        let Some(peer) = self.peer(id) else { return };
        let mut counts = [0u32; 2];
        for (prefix, best) in self.best_paths(None) {
            if self.plan_for(&prefix, &best, peer, id).is_some() {
                counts[fidx(&prefix)] += 1;
            }
        }
        if let Some(p) = self.peer_mut(id) {
            p.counters.advertised = counts;
        }
    }

    /// The best path of every prefix (of `family`, or all).
    fn best_paths(&self, family: Option<Family>) -> Vec<(Prefix, Path)> {
        let mut v = Vec::new();
        let want4 = family.is_none_or(|f| f == Family::IPV4_UNICAST);
        let want6 = family.is_none_or(|f| f == Family::IPV6_UNICAST);
        if want4 {
            for (p, paths) in self.v4.iter() {
                if let Some(s) = self.select(paths) {
                    v.push((p, paths[s.best].clone()));
                }
            }
        }
        if want6 {
            for (p, paths) in self.v6.iter() {
                if let Some(s) = self.select(paths) {
                    v.push((p, paths[s.best].clone()));
                }
            }
        }
        v
    }

    // ----- queries -----

    /// The best route of `prefix` learned from a peer (`None` when there
    /// is none, or when our own route is the best).
    pub fn best_route(&self, prefix: &Prefix) -> Option<BestRoute> {
        let paths = self.table_get(prefix);
        let s = self.select(paths)?;
        let best = &paths[s.best];
        let peer = self.peer(best.peer)?;
        let mut next_hops: Vec<IpAddr> = Vec::new();
        for i in s.members() {
            if let Some(nh) = paths[i].attrs.next_hop.map(next_hop_addr)
                && !next_hops.contains(&nh)
            {
                next_hops.push(nh);
            }
        }
        Some(BestRoute {
            prefix: *prefix,
            next_hops,
            attrs: best.attrs.clone(),
            peer: peer.policy.address,
            ebgp: peer.ebgp,
            stale: best.is_stale(),
        })
    }

    /// Every best route learned from peers.
    pub fn best_routes(&self) -> Vec<BestRoute> {
        self.all_prefixes()
            .iter()
            .filter_map(|p| self.best_route(p))
            .collect()
    }

    /// The Loc-RIB: every path of every prefix, with best/multipath marks.
    pub fn loc_rib(&self) -> Vec<RouteView> {
        let mut v = Vec::new();
        for (prefix, paths) in self.v4.iter().chain(self.v6.iter()) {
            let sel = self.select(paths);
            for (i, path) in paths.iter().enumerate() {
                let best = sel.as_ref().is_some_and(|s| s.best == i);
                let mp = sel.as_ref().is_some_and(|s| s.in_multipath(i));
                v.push(self.view(prefix, path, best, mp));
            }
        }
        v
    }

    /// What peer `id` sent us (accepted and rejected).
    pub fn adj_rib_in(&self, id: PeerId) -> Vec<RouteView> {
        let mut v = Vec::new();
        for (prefix, paths) in self.v4.iter().chain(self.v6.iter()) {
            let sel = self.select(paths);
            for (i, path) in paths.iter().enumerate().filter(|(_, p)| p.peer == id) {
                let best = sel.as_ref().is_some_and(|s| s.best == i);
                let mp = sel.as_ref().is_some_and(|s| s.in_multipath(i));
                v.push(self.view(prefix, path, best, mp));
            }
        }
        v
    }

    /// What peer `id` should hold from us (the Adj-RIB-Out, computed).
    pub fn adj_rib_out(&mut self, id: PeerId) -> Vec<RouteView> {
        let mut v = Vec::new();
        for (prefix, best) in self.best_paths(None) {
            if let Some(a) = self.export_to(id, &prefix, &best) {
                let path = Path {
                    attrs: a,
                    peer: id,
                    flags: 0,
                    rejected: None,
                };
                let mut view = self.view(prefix, &path, false, false);
                view.peer = self.peer(id).map(|p| p.policy.address);
                v.push(view);
            }
        }
        v
    }

    fn view(&self, prefix: Prefix, path: &Path, best: bool, multipath: bool) -> RouteView {
        let peer = if path.peer == LOCAL {
            None
        } else {
            self.peer(path.peer).map(|p| p.policy.address)
        };
        RouteView::new(prefix, peer, path, best, multipath)
    }
}

fn source_of(peers: &[Option<RibPeer>], cfg: &RibConfig, id: PeerId) -> decision::Source {
    match peers.get(id as usize).and_then(Option::as_ref) {
        Some(p) => decision::Source {
            ebgp: p.ebgp,
            router_id: p.router_id,
            address: p.policy.address,
        },
        None => decision::Source {
            ebgp: false,
            router_id: cfg.router_id,
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        },
    }
}

fn select_with(
    peers: &[Option<RibPeer>],
    cfg: &RibConfig,
    paths: &[Path],
) -> Option<decision::Selection> {
    decision::select(paths, |id| source_of(peers, cfg, id), cfg.multipath)
}

/// The best path (and multipath set) of a prefix, for change detection.
fn summary(peers: &[Option<RibPeer>], cfg: &RibConfig, paths: &[Path]) -> Before {
    match select_with(peers, cfg, paths) {
        None => Before {
            best: None,
            multipath: Vec::new(),
        },
        Some(s) => Before {
            best: Some(paths[s.best].clone()),
            multipath: if cfg.multipath {
                s.members()
                    .map(|i| (paths[i].peer, paths[i].attrs.clone()))
                    .collect()
            } else {
                Vec::new()
            },
        },
    }
}

/// The address of a next hop (the global one for IPv6).
pub fn next_hop_addr(nh: NextHop) -> IpAddr {
    match nh {
        NextHop::V4(a) => IpAddr::V4(a),
        NextHop::V6 { global, .. } => IpAddr::V6(global),
    }
}

#[cfg(test)]
mod tests;
