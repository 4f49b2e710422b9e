//! Decoding a realistic UPDATE stream: Margay's codec against rustbgpd-wire
//! (the comparator, decoding the same bytes with its RFC 7606 parser).
//!
//! The stream is what a full-table eBGP feed looks like: 400 attribute
//! groups (AS paths of 2-7 hops, MED on some, 1-4 communities, a large
//! community on some), each UPDATE carrying 20-200 IPv4 prefixes of
//! lengths /16../24, about 40k prefixes in all, plus an IPv6 MP_REACH share.
//! Run: `cargo bench -p margay-bgp --bench codec`.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use margay_bgp::codec::*;

/// A small deterministic generator, so every run decodes the same bytes.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn below(&mut self, n: u32) -> u32 {
        self.next() % n
    }
}

fn stream(ctx: &SessionContext) -> (Vec<u8>, usize, usize) {
    let mut rng = Lcg(42);
    let mut out = Vec::new();
    let (mut messages, mut prefixes) = (0, 0);
    for group in 0..400u32 {
        let hops = 2 + rng.below(6);
        let mut path: Vec<u32> = vec![64513];
        path.extend((1..hops).map(|_| 1000 + rng.below(400_000)));
        let attributes = PathAttributes {
            origin: Some(if rng.below(10) == 0 {
                Origin::Incomplete
            } else {
                Origin::Igp
            }),
            as_path: Some(AsPath::from_sequence(path)),
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 1 + (group % 4) as u8)),
            med: (rng.below(3) == 0).then(|| rng.below(1000)),
            communities: (0..1 + rng.below(4))
                .map(|_| Community(rng.next()))
                .collect(),
            large_communities: if rng.below(4) == 0 {
                vec![LargeCommunity {
                    global: 64513,
                    local1: rng.next(),
                    local2: rng.next(),
                }]
            } else {
                Vec::new()
            },
            ..Default::default()
        };
        let v6 = group % 5 == 0;
        let count = 20 + rng.below(180) as usize;
        let update = if v6 {
            let nlri = (0..count.min(150))
                .map(|_| {
                    let a = Ipv6Addr::new(
                        0x2001,
                        0xdb8,
                        rng.below(65536) as u16,
                        rng.below(65536) as u16,
                        0,
                        0,
                        0,
                        0,
                    );
                    Prefix::v6(a, 32 + rng.below(33) as u8).unwrap()
                })
                .collect::<Vec<_>>();
            prefixes += nlri.len();
            Update {
                attributes: PathAttributes {
                    next_hop: None,
                    ..attributes
                },
                mp_reach: Some(MpReach {
                    family: Family::IPV6_UNICAST,
                    next_hop: NextHop::V6 {
                        global: "2001:db8::1".parse().unwrap(),
                        link_local: None,
                    },
                    nlri,
                }),
                ..Default::default()
            }
        } else {
            let nlri = (0..count)
                .map(|_| Prefix::v4(Ipv4Addr::from(rng.next()), 16 + rng.below(9) as u8).unwrap())
                .collect::<Vec<_>>();
            prefixes += nlri.len();
            Update {
                attributes,
                nlri,
                ..Default::default()
            }
        };
        encode_message(&Message::Update(update), ctx, &mut out).expect("fits in 4096");
        messages += 1;
    }
    (out, messages, prefixes)
}

fn decode_margay(stream: &[u8], ctx: &SessionContext) -> usize {
    let mut framer = Framer::new();
    framer.push(stream);
    let mut routes = 0;
    while let Some(frame) = framer.next_frame().expect("valid stream") {
        if let Ok(Received::Update(d)) = decode_message(&frame, ctx) {
            routes += d.update.reach().map(|r| r.prefixes.len()).sum::<usize>();
        }
    }
    routes
}

fn decode_rustbgpd(stream: &[u8]) -> usize {
    let mut buf = Bytes::copy_from_slice(stream);
    let mut routes = 0;
    while !buf.is_empty() {
        let msg = rustbgpd_wire::decode_message(&mut buf, 4096).expect("valid stream");
        if let rustbgpd_wire::Message::Update(u) = msg {
            let parsed = u.parse_revised(true, false, false, &[]).expect("parses");
            routes += parsed.update.announced.len();
            for a in &parsed.update.attributes {
                if let rustbgpd_wire::attribute::PathAttribute::MpReachNlri(r) = a {
                    routes += r.announced.len();
                }
            }
        }
    }
    routes
}

fn bench(c: &mut Criterion) {
    let ctx = SessionContext::new(64512, 64513);
    let (bytes, messages, prefixes) = stream(&ctx);
    assert_eq!(decode_margay(&bytes, &ctx), prefixes);
    assert_eq!(decode_rustbgpd(&bytes), prefixes);
    eprintln!(
        "stream: {messages} UPDATEs, {prefixes} prefixes, {} octets",
        bytes.len()
    );
    let mut g = c.benchmark_group("decode_update_stream");
    g.throughput(Throughput::Elements(prefixes as u64));
    g.bench_function("margay", |b| {
        b.iter(|| decode_margay(black_box(&bytes), &ctx))
    });
    g.bench_function("rustbgpd-wire", |b| {
        b.iter(|| decode_rustbgpd(black_box(&bytes)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
