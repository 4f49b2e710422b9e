//! The fuzz seed corpus, as code: one seed per row of bgp-malformed.md that
//! a decoder sees, plus well-formed messages of every type. File names are
//! `<row>.<expected outcome>` (see `bgp/fuzz/harness.rs`).

use crate::common::*;

/// (target, file name, contents)
pub type Seed = (&'static str, String, Vec<u8>);

/// (file name, contents) of one target's seeds.
type NamedSeeds = Vec<(&'static str, Vec<u8>)>;

/// Update target input: context selector then body. 1 = eBGP 4-octet,
/// 3 = iBGP 4-octet, 0 = eBGP 2-octet.
fn up(selector: u8, body: Vec<u8>) -> Vec<u8> {
    [vec![selector], body].concat()
}

fn ebgp_update(attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    up(1, update_body(&[], attrs, nlri))
}

fn ibgp_update(attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    up(3, update_body(&[], attrs, nlri))
}

fn ibgp_base() -> Vec<u8> {
    [origin(), as_path4(&[]), next_hop([192, 0, 2, 9])].concat()
}

fn update_seeds() -> NamedSeeds {
    let v6_mp = |nh: &[u8], nlri: &[u8]| attr(OPT, 14, &mp_reach_v6(nh, nlri));
    let v6_base = [origin(), as_path4(&[PEER_AS])].concat();
    let full = [
        mandatory(),
        attr(OPT, 4, &[0, 0, 0, 10]),
        attr(OPT_TRANS, 8, &[0xfd, 0xe9, 0, 1, 0xff, 0xff, 0xff, 0x01]),
        attr(OPT_TRANS, 32, &[0, 0, 0xfd, 0xe9, 0, 0, 0, 1, 0, 0, 0, 2]),
        attr(OPT_TRANS, 7, &[0, 0, 0xfd, 0xe9, 10, 0, 0, 1]),
        attr(WK, 6, &[]),
    ]
    .concat();
    let big_path: Vec<u8> = {
        let mut v = Vec::new();
        for chunk in (1u32..=900).collect::<Vec<_>>().chunks(255) {
            v.push(2);
            v.push(chunk.len() as u8);
            chunk
                .iter()
                .for_each(|a| v.extend_from_slice(&a.to_be_bytes()));
        }
        v
    };
    let two_octet = [
        origin(),
        as_path2(&[65001, 23456]),
        next_hop([192, 0, 2, 9]),
    ]
    .concat();
    vec![
        (
            "well-formed-ipv4.accept",
            ebgp_update(&full, &[24, 10, 1, 2, 16, 172, 16]),
        ),
        (
            "well-formed-ipv6-mp-reach.accept",
            ebgp_update(
                &[v6_base.clone(), v6_mp(&v6_next_hop(), &NLRI_2001_DB8)].concat(),
                &[],
            ),
        ),
        (
            "well-formed-withdraw-only.accept",
            up(1, update_body(&NLRI_10_8, &[], &[])),
        ),
        (
            "empty-update-end-of-rib.accept",
            up(1, update_body(&[], &[], &[])),
        ),
        (
            "mp-unreach-no-nlri-end-of-rib.accept",
            ebgp_update(&attr(OPT, 15, &[0, 2, 1]), &[]),
        ),
        (
            "withdrawn-length-overruns.reset-3-1",
            up(1, vec![0, 10, 8, 10]),
        ),
        (
            "total-attribute-length-overruns.reset-3-1",
            up(1, {
                let mut b = update_body(&[], &mandatory(), &[]);
                b[3] = 200;
                b
            }),
        ),
        (
            "attribute-header-truncated.withdraw",
            ebgp_update(&[mandatory(), vec![0x40, 1]].concat(), &NLRI_10_8),
        ),
        (
            "attribute-overruns-section.withdraw",
            ebgp_update(
                &[mandatory(), vec![0xc0, 8, 12, 0, 0, 0, 1]].concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "nlri-prefix-length-33.reset-3-10",
            ebgp_update(&mandatory(), &[33, 10, 0, 0, 0, 0]),
        ),
        (
            "nlri-prefix-overruns.reset-3-10",
            ebgp_update(&mandatory(), &[24, 10, 0]),
        ),
        (
            "withdrawn-prefix-length-40.reset-3-10",
            up(1, update_body(&[40, 1, 2, 3, 4, 5], &[], &[])),
        ),
        (
            "mp-reach-prefix-length-129.disable",
            ebgp_update(
                &[v6_base.clone(), v6_mp(&v6_next_hop(), &[129, 0])].concat(),
                &[],
            ),
        ),
        (
            "mp-unreach-prefix-overruns.disable",
            ebgp_update(&attr(OPT, 15, &[0, 2, 1, 64, 0x20, 0x01]), &[]),
        ),
        (
            "attribute-flag-conflict-origin-optional.withdraw",
            ebgp_update(
                &[
                    attr(OPT_TRANS, 1, &[0]),
                    as_path4(&[PEER_AS]),
                    next_hop([192, 0, 2, 9]),
                ]
                .concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "mp-reach-twice.reset-3-1",
            ebgp_update(
                &[
                    v6_base.clone(),
                    v6_mp(&v6_next_hop(), &NLRI_2001_DB8),
                    v6_mp(&v6_next_hop(), &NLRI_2001_DB8),
                ]
                .concat(),
                &[],
            ),
        ),
        (
            "mp-unreach-twice.reset-3-1",
            ebgp_update(
                &[attr(OPT, 15, &[0, 2, 1]), attr(OPT, 15, &[0, 2, 1])].concat(),
                &[],
            ),
        ),
        (
            "med-twice-keeps-first.discard",
            ebgp_update(
                &[
                    mandatory(),
                    attr(OPT, 4, &[0, 0, 0, 5]),
                    attr(OPT, 4, &[0, 0, 0, 9]),
                ]
                .concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "origin-missing.withdraw",
            ebgp_update(
                &[as_path4(&[PEER_AS]), next_hop([192, 0, 2, 9])].concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "as-path-missing.withdraw",
            ebgp_update(&[origin(), next_hop([192, 0, 2, 9])].concat(), &NLRI_10_8),
        ),
        (
            "next-hop-missing-with-ipv4-nlri.withdraw",
            ebgp_update(&[origin(), as_path4(&[PEER_AS])].concat(), &NLRI_10_8),
        ),
        (
            "unrecognised-well-known.reset-3-2",
            ebgp_update(&[mandatory(), attr(WK, 99, &[1, 2])].concat(), &NLRI_10_8),
        ),
        (
            "unknown-optional-non-transitive-dropped.accept",
            ebgp_update(&[mandatory(), attr(OPT, 99, &[1, 2])].concat(), &NLRI_10_8),
        ),
        (
            "unknown-optional-transitive-kept.accept",
            ebgp_update(
                &[mandatory(), attr(OPT_TRANS, 99, &[1, 2])].concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "several-errors-strongest-wins.reset-3-2",
            ebgp_update(
                &[
                    attr(WK, 1, &[7]),
                    as_path4(&[PEER_AS]),
                    next_hop([192, 0, 2, 9]),
                    attr(WK, 6, &[1]),
                    attr(WK, 99, &[]),
                ]
                .concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "several-errors-withdraw-beats-discard.withdraw",
            ebgp_update(
                &[
                    attr(WK, 1, &[7]),
                    as_path4(&[PEER_AS]),
                    next_hop([192, 0, 2, 9]),
                    attr(WK, 6, &[1]),
                ]
                .concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "origin-length-2.withdraw",
            ebgp_update(
                &[
                    attr(WK, 1, &[0, 0]),
                    as_path4(&[PEER_AS]),
                    next_hop([192, 0, 2, 9]),
                ]
                .concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "origin-value-3.withdraw",
            ebgp_update(
                &[
                    attr(WK, 1, &[3]),
                    as_path4(&[PEER_AS]),
                    next_hop([192, 0, 2, 9]),
                ]
                .concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "as-path-bad-segment-type.withdraw",
            ebgp_update(
                &[
                    origin(),
                    attr(WK, 2, &[5, 1, 0, 0, 0xfc, 1]),
                    next_hop([192, 0, 2, 9]),
                ]
                .concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "as-path-zero-length-segment.withdraw",
            ebgp_update(
                &[origin(), attr(WK, 2, &[2, 0]), next_hop([192, 0, 2, 9])].concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "as-path-segment-overrun.withdraw",
            ebgp_update(
                &[
                    origin(),
                    attr(WK, 2, &[2, 2, 0, 0, 0xfc, 1]),
                    next_hop([192, 0, 2, 9]),
                ]
                .concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "as-path-trailing-byte.withdraw",
            ebgp_update(
                &[
                    origin(),
                    attr(WK, 2, &[2, 1, 0, 0, 0xfc, 1, 2]),
                    next_hop([192, 0, 2, 9]),
                ]
                .concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "as-path-as-0.withdraw",
            ebgp_update(
                &[origin(), as_path4(&[PEER_AS, 0]), next_hop([192, 0, 2, 9])].concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "first-as-not-peer-as-left-to-rib.accept",
            ebgp_update(
                &[origin(), as_path4(&[65099]), next_hop([192, 0, 2, 9])].concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "own-as-in-path-left-to-rib.accept",
            ebgp_update(
                &[
                    origin(),
                    as_path4(&[PEER_AS, LOCAL_AS]),
                    next_hop([192, 0, 2, 9]),
                ]
                .concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "as4-path-from-four-octet-speaker.discard",
            ebgp_update(
                &[mandatory(), attr(OPT_TRANS, 17, &[2, 1, 0, 0, 0xfd, 0xe8])].concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "as4-path-reconstructed.accept",
            up(
                0,
                update_body(
                    &[],
                    &[
                        two_octet.clone(),
                        attr(OPT_TRANS, 17, &[2, 1, 0xfa, 0x56, 0xea, 0x00]),
                    ]
                    .concat(),
                    &NLRI_10_8,
                ),
            ),
        ),
        (
            "as4-path-malformed.discard",
            up(
                0,
                update_body(
                    &[],
                    &[
                        two_octet.clone(),
                        attr(OPT_TRANS, 17, &[2, 2, 0xfa, 0x56, 0xea, 0x00]),
                    ]
                    .concat(),
                    &NLRI_10_8,
                ),
            ),
        ),
        (
            "as4-path-longer-than-as-path.discard",
            up(
                0,
                update_body(
                    &[],
                    &[
                        two_octet,
                        attr(OPT_TRANS, 17, &[2, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]),
                    ]
                    .concat(),
                    &NLRI_10_8,
                ),
            ),
        ),
        (
            "next-hop-length-3.withdraw",
            ebgp_update(
                &[origin(), as_path4(&[PEER_AS]), attr(WK, 3, &[192, 0, 2])].concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "next-hop-0-0-0-0-semantically-invalid.ignore",
            ebgp_update(
                &[origin(), as_path4(&[PEER_AS]), next_hop([0, 0, 0, 0])].concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "next-hop-multicast-semantically-invalid.ignore",
            ebgp_update(
                &[origin(), as_path4(&[PEER_AS]), next_hop([224, 0, 0, 5])].concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "med-length-3.withdraw",
            ebgp_update(
                &[mandatory(), attr(OPT, 4, &[0, 0, 1])].concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "local-pref-ibgp-length-5.withdraw",
            ibgp_update(
                &[ibgp_base(), attr(WK, 5, &[0, 0, 0, 100, 0])].concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "local-pref-from-ebgp.discard",
            ebgp_update(
                &[mandatory(), attr(WK, 5, &[0, 0, 0, 100])].concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "atomic-aggregate-length-1.discard",
            ebgp_update(&[mandatory(), attr(WK, 6, &[0])].concat(), &NLRI_10_8),
        ),
        (
            "aggregator-length-6-on-four-octet-session.discard",
            ebgp_update(
                &[mandatory(), attr(OPT_TRANS, 7, &[0xfd, 0xe9, 10, 0, 0, 1])].concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "aggregator-as-0.discard",
            ebgp_update(
                &[mandatory(), attr(OPT_TRANS, 7, &[0, 0, 0, 0, 10, 0, 0, 1])].concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "communities-length-3.withdraw",
            ebgp_update(
                &[mandatory(), attr(OPT_TRANS, 8, &[0, 0, 1])].concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "communities-length-0.withdraw",
            ebgp_update(&[mandatory(), attr(OPT_TRANS, 8, &[])].concat(), &NLRI_10_8),
        ),
        (
            "large-communities-length-11.withdraw",
            ebgp_update(
                &[mandatory(), attr(OPT_TRANS, 32, &[1; 11])].concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "originator-id-and-cluster-list-from-ebgp.discard",
            ebgp_update(
                &[
                    mandatory(),
                    attr(OPT, 9, &[10, 0, 0, 1]),
                    attr(OPT, 10, &[10, 0, 0, 2]),
                ]
                .concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "originator-id-ibgp-length-3.withdraw",
            ibgp_update(
                &[ibgp_base(), attr(OPT, 9, &[10, 0, 0])].concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "cluster-list-ibgp-length-5.withdraw",
            ibgp_update(
                &[ibgp_base(), attr(OPT, 10, &[10, 0, 0, 1, 2])].concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "originator-id-is-ours-left-to-rib.accept",
            ibgp_update(
                &[
                    ibgp_base(),
                    attr(OPT, 9, &LOCAL_ID.octets()),
                    attr(OPT, 10, &[10, 0, 0, 2]),
                ]
                .concat(),
                &NLRI_10_8,
            ),
        ),
        (
            "mp-reach-next-hop-length-15.disable",
            ebgp_update(
                &[v6_base.clone(), v6_mp(&[0x20; 15], &NLRI_2001_DB8)].concat(),
                &[],
            ),
        ),
        (
            "mp-reach-too-short-for-afi-safi.reset-3-9",
            ebgp_update(&[v6_base, attr(OPT, 14, &[0, 2])].concat(), &[]),
        ),
        (
            "huge-as-path.accept",
            ebgp_update(
                &[origin(), attr(WK, 2, &big_path), next_hop([192, 0, 2, 9])].concat(),
                &NLRI_10_8,
            ),
        ),
    ]
}

fn framing_seeds() -> NamedSeeds {
    let mut bad_marker = message(4, &[]);
    bad_marker[3] = 0;
    let header = |len: u16, t: u8| {
        let mut h = vec![0xff; 16];
        h.extend_from_slice(&len.to_be_bytes());
        h.push(t);
        h
    };
    let upd = message(2, &update_body(&[], &mandatory(), &NLRI_10_8));
    let shutdown = message(3, &[6, 2, 3, b'b', b'y', b'e']);
    vec![
        ("marker-not-all-ones.reset-1-1", bad_marker),
        ("length-below-19.reset-1-2", header(18, 4)),
        ("length-above-4096.reset-1-2", header(4097, 2)),
        ("open-below-29.reset-1-2", header(28, 1)),
        ("update-below-23.reset-1-2", header(22, 2)),
        ("keepalive-not-19.reset-1-2", message(4, &[0])),
        ("route-refresh-not-23.reset-7-1", message(5, &[0, 1, 1])),
        ("notification-below-21.close", message(3, &[6])),
        ("unknown-message-type.reset-1-3", message(9, &[])),
        (
            "several-messages-per-read.ok",
            [message(4, &[]), upd.clone(), message(4, &[]), shutdown].concat(),
        ),
        ("half-a-message.more", upd[..30].to_vec()),
        (
            "update-then-bad-update.reset-3-1",
            [upd, message(2, &[0, 10, 8, 10])].concat(),
        ),
    ]
}

fn open_seeds() -> NamedSeeds {
    let id = [10, 0, 0, 2];
    let four = |asn: u32| [vec![65, 4], asn.to_be_bytes().to_vec()].concat();
    let caps = [
        vec![1, 4, 0, 1, 0, 1],
        vec![1, 4, 0, 2, 0, 1],
        vec![2, 0],
        vec![70, 0],
        four(PEER_AS),
        vec![64, 6, 0x40, 120, 0, 1, 1, 0x80],
    ]
    .concat();
    let peer = PEER_AS as u16;
    let mut trailing = open_body(4, peer, 90, id, &[]);
    trailing.push(0);
    let mut overrun = open_body(4, peer, 90, id, &[2, 2, 2, 0]);
    overrun[9] = 10;
    vec![
        (
            "well-formed.ok",
            open_body(4, peer, 90, id, &cap_param(&caps)),
        ),
        (
            "unknown-capability-ignored.ok",
            open_body(4, peer, 90, id, &cap_param(&[99, 3, 1, 2, 3])),
        ),
        ("hold-time-0.ok", open_body(4, peer, 0, id, &[])),
        ("version-3.reset-2-1", open_body(3, peer, 90, id, &[])),
        ("my-as-0.reset-2-2", open_body(4, 0, 90, id, &[])),
        (
            "four-octet-as-capability-0.reset-2-2",
            open_body(4, 23456, 90, id, &cap_param(&four(0))),
        ),
        ("as-mismatch.reset-2-2", open_body(4, 65000, 90, id, &[])),
        ("hold-time-1.reset-2-6", open_body(4, peer, 1, id, &[])),
        ("hold-time-2.reset-2-6", open_body(4, peer, 2, id, &[])),
        (
            "bgp-identifier-0.reset-2-3",
            open_body(4, peer, 90, [0, 0, 0, 0], &[]),
        ),
        ("optional-parameters-length-overruns.reset-2-0", overrun),
        (
            "optional-parameter-overruns.reset-2-0",
            open_body(4, peer, 90, id, &[2, 9, 2, 0]),
        ),
        (
            "capability-overruns.reset-2-0",
            open_body(4, peer, 90, id, &cap_param(&[65, 4, 0, 0])),
        ),
        ("trailing-octet.reset-2-0", trailing),
        (
            "unknown-optional-parameter.reset-2-4",
            open_body(4, peer, 90, id, &[1, 2, 0, 0]),
        ),
    ]
}

fn notification_seeds() -> NamedSeeds {
    vec![
        ("cease-shutdown-text.ok", vec![6, 2, 3, b'b', b'y', b'e']),
        (
            "cease-shutdown-text-overruns.ok",
            vec![6, 2, 50, b'h', b'i'],
        ),
        ("cease-shutdown-text-not-utf8.ok", vec![6, 4, 2, 0xff, 0xfe]),
        ("hold-timer-expired.ok", vec![4, 0]),
        ("max-prefixes.ok", vec![6, 1, 0, 1, 1, 0, 0, 3, 0xe8]),
        ("shorter-than-code-and-subcode.close", vec![6]),
    ]
}

fn route_refresh_seeds() -> NamedSeeds {
    vec![
        ("request-ipv4.ok", vec![0, 1, 0, 1]),
        ("beginning-of-route-refresh-ipv6.ok", vec![0, 2, 1, 1]),
        ("end-of-route-refresh.ok", vec![0, 1, 2, 1]),
        ("bad-length.reset-7-1", vec![0, 1, 1, 1, 0]),
        ("non-negotiated-family.ignore", vec![0, 1, 0, 128]),
        ("unknown-subtype.ignore", vec![0, 1, 9, 1]),
    ]
}

/// Every seed.
pub fn seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    let groups: [(&'static str, NamedSeeds); 5] = [
        ("update", update_seeds()),
        ("framing", framing_seeds()),
        ("open", open_seeds()),
        ("notification", notification_seeds()),
        ("route_refresh", route_refresh_seeds()),
    ];
    for (target, list) in groups {
        for (name, bytes) in list {
            out.push((target, name.to_string(), bytes));
        }
    }
    out
}
