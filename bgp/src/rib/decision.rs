//! The BGP decision process (RFC 4271 §9.1.2.2, RFC 4456 §9), pure.
//!
//! Written as the RFC's successive elimination rather than a pairwise
//! comparison: MED is only comparable between paths from the same
//! neighbouring AS, which makes pairwise "better than" intransitive, while
//! elimination gives one answer whatever the order paths arrived in.
//!
//! Steps: our own route wins outright; then highest LOCAL_PREF (100 when
//! absent), shortest AS_PATH, lowest ORIGIN, lowest MED among paths from
//! the same neighbour AS, eBGP over iBGP. The paths left at that point tie
//! for ECMP (IGP cost is not considered: next hops are on connected
//! networks or resolved by the kernel). The single best among them is then
//! the lowest BGP identifier (ORIGINATOR_ID when present), the shortest
//! CLUSTER_LIST, and the lowest peer address.

use std::net::{IpAddr, Ipv4Addr};

use super::table::{LOCAL, Path, PeerId};

/// What the decision process needs to know about a path's peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    /// The peer is in another AS.
    pub ebgp: bool,
    /// The peer's BGP identifier.
    pub router_id: Ipv4Addr,
    /// The peer's address.
    pub address: IpAddr,
}

/// The outcome for one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Index of the best path.
    pub best: usize,
    /// Indices of the other paths that tie with it for multipath (empty
    /// without multipath, so the common case allocates nothing).
    pub multipath: Vec<usize>,
}

impl Selection {
    /// The multipath set: the best path, then the others that tie.
    pub fn members(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(self.best).chain(self.multipath.iter().copied())
    }

    /// True when the set has more than one path and `i` is one of them.
    pub fn in_multipath(&self, i: usize) -> bool {
        !self.multipath.is_empty() && (i == self.best || self.multipath.contains(&i))
    }
}

/// LOCAL_PREF assumed when a path has none (RFC 4271 §5.1.5 leaves it to
/// the implementation; 100 is universal).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// Picks the best path (and the multipath set) among `paths`.
pub fn select(
    paths: &[Path],
    source: impl Fn(PeerId) -> Source,
    multipath: bool,
) -> Option<Selection> {
    if let [only] = paths {
        return only.eligible().then(|| Selection {
            best: 0,
            multipath: Vec::new(),
        });
    }
    if let Some(i) = paths.iter().position(|p| p.peer == LOCAL && p.eligible()) {
        return Some(Selection {
            best: i,
            multipath: Vec::new(),
        });
    }
    let mut c: Vec<usize> = (0..paths.len()).filter(|&i| paths[i].eligible()).collect();
    if c.is_empty() {
        return None;
    }
    let a = |i: usize| &paths[i].attrs.attrs;
    keep_min(&mut c, |i| {
        u64::from(u32::MAX - a(i).local_pref.unwrap_or(DEFAULT_LOCAL_PREF))
    });
    keep_min(&mut c, |i| {
        a(i).as_path.as_ref().map_or(0, |p| p.path_len()) as u64
    });
    keep_min(&mut c, |i| a(i).origin.map_or(0, |o| u64::from(o.code())));
    // MED: within each group of paths from the same neighbour AS, drop
    // those with a MED above the group's lowest (missing MED = 0).
    let neighbour = |i: usize| a(i).as_path.as_ref().and_then(|p| p.first_asn());
    let med = |i: usize| a(i).med.unwrap_or(0);
    let snapshot = c.clone();
    c.retain(|&i| {
        let n = neighbour(i);
        snapshot
            .iter()
            .filter(|&&j| neighbour(j) == n)
            .all(|&j| med(j) >= med(i))
    });
    if c.iter().any(|&i| source(paths[i].peer).ebgp) {
        c.retain(|&i| source(paths[i].peer).ebgp);
    }
    let tied = c.clone();
    let id = |i: usize| {
        let p = &paths[i];
        u64::from(u32::from(
            p.attrs
                .attrs
                .originator_id
                .unwrap_or(source(p.peer).router_id),
        ))
    };
    keep_min(&mut c, id);
    keep_min(&mut c, |i| a(i).cluster_list.len() as u64);
    let best = *c
        .iter()
        .min_by_key(|&&i| source(paths[i].peer).address)
        .unwrap_or(&c[0]);
    let multipath = if multipath {
        tied.into_iter().filter(|&i| i != best).collect()
    } else {
        Vec::new()
    };
    Some(Selection { best, multipath })
}

/// Keeps the candidates with the smallest `key`.
fn keep_min(c: &mut Vec<usize>, key: impl Fn(usize) -> u64) {
    if c.len() < 2 {
        return;
    }
    let min = c.iter().map(|&i| key(i)).min().unwrap_or(0);
    c.retain(|&i| key(i) == min);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{AsPath, NextHop, Origin, PathAttributes};
    use crate::rib::attrs::RouteAttrs;
    use crate::rib::table::Rejection;
    use std::sync::Arc;

    struct P {
        peer: PeerId,
        lp: Option<u32>,
        path: Vec<u32>,
        origin: Origin,
        med: Option<u32>,
        originator: Option<Ipv4Addr>,
        clusters: usize,
    }

    fn p(peer: PeerId, path: &[u32]) -> P {
        P {
            peer,
            lp: None,
            path: path.to_vec(),
            origin: Origin::Igp,
            med: None,
            originator: None,
            clusters: 0,
        }
    }

    fn build(ps: &[P]) -> Vec<Path> {
        ps.iter()
            .map(|x| Path {
                attrs: Arc::new(RouteAttrs {
                    attrs: PathAttributes {
                        origin: Some(x.origin),
                        as_path: Some(AsPath::from_sequence(x.path.iter().copied())),
                        local_pref: x.lp,
                        med: x.med,
                        originator_id: x.originator,
                        cluster_list: vec![Ipv4Addr::new(1, 1, 1, 1); x.clusters],
                        ..PathAttributes::default()
                    },
                    next_hop: Some(NextHop::V4(Ipv4Addr::new(10, 0, 0, x.peer as u8))),
                }),
                peer: x.peer,
                flags: 0,
                rejected: None,
            })
            .collect()
    }

    /// Peers 1..=9 are iBGP, 10.. are eBGP; router id and address grow
    /// with the peer number.
    fn src(peer: PeerId) -> Source {
        Source {
            ebgp: peer >= 10,
            router_id: Ipv4Addr::new(9, 9, 9, peer as u8),
            address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, peer as u8)),
        }
    }

    fn best(ps: &[P]) -> PeerId {
        let paths = build(ps);
        let s = select(&paths, src, false).expect("a best path");
        paths[s.best].peer
    }

    #[test]
    fn local_pref_beats_path_length() {
        let mut a = p(1, &[1, 2, 3]);
        a.lp = Some(200);
        assert_eq!(best(&[p(2, &[1]), a]), 1);
    }

    #[test]
    fn shorter_as_path_then_lower_origin() {
        assert_eq!(best(&[p(1, &[1, 2]), p(2, &[3])]), 2);
        let mut a = p(1, &[1]);
        a.origin = Origin::Incomplete;
        assert_eq!(best(&[a, p(2, &[3])]), 2);
    }

    #[test]
    fn med_only_compared_within_the_same_neighbour_as() {
        let mut a = p(1, &[100, 1]);
        a.med = Some(50);
        let mut b = p(2, &[100, 2]);
        b.med = Some(10);
        assert_eq!(best(&[a, b]), 2);
        // Different neighbour AS: MED ignored, falls to router id.
        let mut a = p(1, &[100]);
        a.med = Some(50);
        let mut b = p(2, &[200]);
        b.med = Some(10);
        assert_eq!(best(&[a, b]), 1);
    }

    #[test]
    fn ebgp_over_ibgp_then_lowest_router_id() {
        assert_eq!(best(&[p(1, &[7]), p(11, &[8])]), 11);
        assert_eq!(best(&[p(3, &[7]), p(2, &[8])]), 2);
    }

    #[test]
    fn originator_id_stands_for_router_id_and_shorter_cluster_list_wins() {
        let mut a = p(1, &[7]);
        a.originator = Some(Ipv4Addr::new(200, 0, 0, 1));
        assert_eq!(best(&[a, p(2, &[7])]), 2);
        let mut a = p(1, &[7]);
        a.originator = Some(Ipv4Addr::new(5, 0, 0, 1));
        a.clusters = 2;
        let mut b = p(2, &[7]);
        b.originator = Some(Ipv4Addr::new(5, 0, 0, 1));
        b.clusters = 1;
        assert_eq!(best(&[a, b]), 2);
    }

    #[test]
    fn local_route_wins_and_rejected_paths_never_do() {
        let mut paths = build(&[p(1, &[]), p(LOCAL, &[])]);
        assert_eq!(select(&paths, src, false).map(|s| s.best), Some(1));
        paths[1].rejected = Some(Rejection::Policy);
        assert_eq!(select(&paths, src, false).map(|s| s.best), Some(0));
        paths[0].rejected = Some(Rejection::AsLoop);
        assert_eq!(select(&paths, src, false), None);
    }

    #[test]
    fn multipath_keeps_ties_up_to_the_igp_step() {
        let paths = build(&[p(3, &[7]), p(2, &[8]), p(1, &[7, 9])]);
        let s = select(&paths, src, true).expect("selection");
        assert_eq!(paths[s.best].peer, 2);
        let peers: Vec<PeerId> = s.members().map(|i| paths[i].peer).collect();
        assert_eq!(peers, vec![2, 3]);
        let s = select(&paths, src, false).expect("selection");
        assert_eq!(s.members().collect::<Vec<_>>(), vec![s.best]);
    }

    #[test]
    fn order_of_arrival_does_not_matter() {
        // The classic MED intransitivity case: A and B share neighbour AS
        // 100, C comes from AS 200.
        let mk = || {
            let mut a = p(3, &[100]);
            a.med = Some(10);
            let mut b = p(1, &[100]);
            b.med = Some(20);
            let c = p(2, &[200]);
            vec![a, b, c]
        };
        let base = best(&mk());
        let mut v = mk();
        v.reverse();
        assert_eq!(best(&v), base);
        let mut v = mk();
        v.rotate_left(1);
        assert_eq!(best(&v), base);
    }
}
