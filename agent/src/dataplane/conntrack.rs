//! Connection tracking over ctnetlink (`NETLINK_NETFILTER`, subsystem
//! `CTNETLINK`): list the tracked flows and delete some of them, so that a
//! policy change also stops the established connections it denies (see
//! `calc::policy::flows_to_delete` for which).
//!
//! Encoding and decoding are pure and unit-tested; [`Conntrack`] is a
//! blocking socket in the caller's network namespace (the policy worker's
//! thread).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::calc::policy::TrackedFlow;

// linux/netlink.h, linux/netfilter/nfnetlink.h, nfnetlink_conntrack.h
const NETLINK_NETFILTER: libc::c_int = 12;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 0x2;
const NLMSG_DONE: u16 = 0x3;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// A flow as listed, with what deleting it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// AF_INET or AF_INET6.
    pub family: u8,
    pub tuple: TrackedFlow,
    /// The original-direction tuple as the kernel sent it (sent back to
    /// delete exactly this flow).
    orig_raw: Vec<u8>,
    zone: Option<Vec<u8>>,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The attributes in `buf` as (type without flags, payload).
fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((ty, &buf[4..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

fn find<'a>(a: &[(u16, &'a [u8])], ty: u16) -> Option<&'a [u8]> {
    a.iter().find(|(t, _)| *t == ty).map(|(_, p)| *p)
}

fn addr(p: &[u8]) -> Option<IpAddr> {
    match p.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(p[0], p[1], p[2], p[3]))),
        16 => {
            let b: [u8; 16] = p.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

struct Tuple {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    sport: Option<u16>,
    dport: Option<u16>,
    icmp: Option<(u8, u8)>,
}

fn tuple(p: &[u8]) -> Option<Tuple> {
    let t = attrs(p);
    let ip = attrs(find(&t, CTA_TUPLE_IP)?);
    let (src, dst) = match (find(&ip, CTA_IP_V4_SRC), find(&ip, CTA_IP_V4_DST)) {
        (Some(s), Some(d)) => (addr(s)?, addr(d)?),
        _ => (
            addr(find(&ip, CTA_IP_V6_SRC)?)?,
            addr(find(&ip, CTA_IP_V6_DST)?)?,
        ),
    };
    let pr = attrs(find(&t, CTA_TUPLE_PROTO)?);
    let proto = *find(&pr, CTA_PROTO_NUM)?.first()?;
    let port = |ty| {
        find(&pr, ty)
            .filter(|b| b.len() == 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let byte = |ty| find(&pr, ty).and_then(|b| b.first().copied());
    let icmp = match (
        byte(CTA_PROTO_ICMP_TYPE).or(byte(CTA_PROTO_ICMPV6_TYPE)),
        byte(CTA_PROTO_ICMP_CODE).or(byte(CTA_PROTO_ICMPV6_CODE)),
    ) {
        (Some(t), Some(c)) => Some((t, c)),
        _ => None,
    };
    Some(Tuple {
        src,
        dst,
        proto,
        sport: port(CTA_PROTO_SRC_PORT),
        dport: port(CTA_PROTO_DST_PORT),
        icmp,
    })
}

/// One conntrack message's payload (after the netlink header): nfgenmsg
/// then attributes. None for anything that is not a whole flow.
pub fn parse_flow(payload: &[u8]) -> Option<Flow> {
    let family = *payload.first()?;
    let a = attrs(payload.get(4..)?);
    let orig_raw = find(&a, CTA_TUPLE_ORIG)?;
    let orig = tuple(orig_raw)?;
    let reply = tuple(find(&a, CTA_TUPLE_REPLY)?)?;
    Some(Flow {
        family,
        tuple: TrackedFlow {
            protocol: orig.proto,
            orig_src: orig.src,
            orig_dst: orig.dst,
            orig_sport: orig.sport,
            orig_dport: orig.dport,
            reply_src: reply.src,
            reply_sport: reply.sport,
            icmp: orig.icmp,
        },
        orig_raw: orig_raw.to_vec(),
        zone: find(&a, CTA_ZONE).map(<[u8]>::to_vec),
    })
}

fn header(buf: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, family: u8) {
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set at the end
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&[family, 0, 0, 0]); // nfgenmsg: family, version 0, res_id 0
}

fn finish(buf: &mut [u8]) {
    let len = buf.len() as u32;
    buf[..4].copy_from_slice(&len.to_ne_bytes());
}

fn attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    buf.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

/// A dump request for every flow of every family.
pub fn encode_dump(seq: u32) -> Vec<u8> {
    let mut b = Vec::new();
    header(
        &mut b,
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        0,
    );
    finish(&mut b);
    b
}

/// A request deleting exactly `flow` (its original tuple, in its zone).
pub fn encode_delete(flow: &Flow, seq: u32) -> Vec<u8> {
    let mut b = Vec::new();
    header(
        &mut b,
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        flow.family,
    );
    attr(&mut b, CTA_TUPLE_ORIG | NLA_F_NESTED, &flow.orig_raw);
    if let Some(z) = &flow.zone {
        attr(&mut b, CTA_ZONE, z);
    }
    finish(&mut b);
    b
}

/// A ctnetlink socket.
pub struct Conntrack {
    fd: OwnedFd,
    seq: u32,
}

impl Conntrack {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Conntrack> {
        // SAFETY: plain socket(2); the descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: Duration::from_secs(5).as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: setsockopt with a timeval of the right size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Conntrack { fd, seq: 1 })
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: a zeroed sockaddr_nl addresses the kernel (pid 0).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: msg and sa are valid for the lengths given.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives netlink messages for `seq`, calling `each(type, payload)`,
    /// until DONE (dump) or an ERROR message (ack); returns the ack's errno
    /// (0 for success) or 0 after DONE.
    fn receive(&mut self, seq: u32, mut each: impl FnMut(u16, &[u8])) -> io::Result<i32> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            // SAFETY: buf is valid for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let ty = u16::from_ne_bytes([rest[4], rest[5]]);
                let mseq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
                if len < 16 || len > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                let payload = &rest[16..len];
                rest = &rest[align4(len).min(rest.len())..];
                if mseq != seq {
                    continue;
                }
                match ty {
                    NLMSG_DONE => return Ok(0),
                    NLMSG_ERROR => {
                        let errno = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                        return Ok(-errno);
                    }
                    _ => each(ty, payload),
                }
            }
        }
    }

    /// Every tracked flow.
    pub fn flows(&mut self) -> io::Result<Vec<Flow>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.send(&encode_dump(seq))?;
        let mut out = Vec::new();
        let rc = self.receive(seq, |ty, payload| {
            if ty == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW
                && let Some(f) = parse_flow(payload)
            {
                out.push(f);
            }
        })?;
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(out)
    }

    /// Deletes a flow; `false` when it was already gone.
    pub fn delete(&mut self, flow: &Flow) -> io::Result<bool> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.send(&encode_delete(flow, seq))?;
        match self.receive(seq, |_, _| {})? {
            0 => Ok(true),
            libc::ENOENT => Ok(false),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AF_INET: u8 = 2;
    const AF_INET6: u8 = 10;

    fn nested(buf: &mut Vec<u8>, ty: u16, f: impl FnOnce(&mut Vec<u8>)) {
        let mut inner = Vec::new();
        f(&mut inner);
        attr(buf, ty | NLA_F_NESTED, &inner);
    }

    fn tuple_attr(buf: &mut Vec<u8>, ty: u16, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) {
        nested(buf, ty, |t| {
            nested(t, CTA_TUPLE_IP, |ip| {
                attr(ip, CTA_IP_V4_SRC, &src);
                attr(ip, CTA_IP_V4_DST, &dst);
            });
            nested(t, CTA_TUPLE_PROTO, |p| {
                attr(p, CTA_PROTO_NUM, &[6]);
                attr(p, CTA_PROTO_SRC_PORT, &sport.to_be_bytes());
                attr(p, CTA_PROTO_DST_PORT, &dport.to_be_bytes());
            });
        });
    }

    /// A flow message as the kernel sends it in a dump: a client reaching a
    /// Service address that was DNATed to a pod.
    fn dnat_flow_payload() -> Vec<u8> {
        let mut b = vec![AF_INET, 0, 0, 0];
        tuple_attr(
            &mut b,
            CTA_TUPLE_ORIG,
            [10, 0, 1, 2],
            [10, 96, 0, 10],
            40000,
            80,
        );
        tuple_attr(
            &mut b,
            CTA_TUPLE_REPLY,
            [10, 0, 0, 2],
            [10, 0, 1, 2],
            8080,
            40000,
        );
        attr(&mut b, CTA_ZONE, &7u16.to_be_bytes());
        attr(&mut b, 12, &99u32.to_be_bytes()); // CTA_ID, ignored
        b
    }

    #[test]
    fn parses_a_dumped_flow_with_dnat() {
        let f = parse_flow(&dnat_flow_payload()).expect("a flow");
        assert_eq!(f.family, AF_INET);
        let t = &f.tuple;
        assert_eq!(t.protocol, 6);
        assert_eq!(t.orig_src, IpAddr::from([10, 0, 1, 2]));
        assert_eq!(t.orig_dst, IpAddr::from([10, 96, 0, 10]));
        assert_eq!(t.orig_sport, Some(40000));
        assert_eq!(t.reply_src, IpAddr::from([10, 0, 0, 2]));
        assert_eq!(t.reply_sport, Some(8080));
        assert_eq!(t.icmp, None);
        assert!(parse_flow(&[AF_INET, 0, 0, 0]).is_none());
        assert!(parse_flow(&[]).is_none());
    }

    #[test]
    fn delete_sends_the_original_tuple_back_in_its_zone() {
        let f = parse_flow(&dnat_flow_payload()).expect("a flow");
        let m = encode_delete(&f, 42);
        assert_eq!(
            u32::from_ne_bytes([m[0], m[1], m[2], m[3]]) as usize,
            m.len()
        );
        assert_eq!(
            u16::from_ne_bytes([m[4], m[5]]),
            (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE
        );
        assert_eq!(u32::from_ne_bytes([m[8], m[9], m[10], m[11]]), 42);
        assert_eq!(m[16], AF_INET);
        let a = attrs(&m[20..]);
        assert_eq!(a.len(), 2, "{a:?}");
        let orig = find(&a, CTA_TUPLE_ORIG).expect("orig tuple");
        let t = tuple(orig).expect("parses back");
        assert_eq!((t.src, t.dport), (IpAddr::from([10, 0, 1, 2]), Some(80)));
        assert_eq!(find(&a, CTA_ZONE), Some(&7u16.to_be_bytes()[..]));
        let d = encode_dump(3);
        assert_eq!(d.len(), 20);
        assert_eq!(u16::from_ne_bytes([d[6], d[7]]), NLM_F_REQUEST | NLM_F_DUMP);
    }

    #[test]
    fn icmp_and_ipv6_tuples() {
        let mut b = vec![AF_INET6, 0, 0, 0];
        let v6 = |last: u8| {
            let mut a = [0u8; 16];
            a[0] = 0xfd;
            a[15] = last;
            a
        };
        for (ty, s, d) in [(CTA_TUPLE_ORIG, 1, 2), (CTA_TUPLE_REPLY, 2, 1)] {
            nested(&mut b, ty, |t| {
                nested(t, CTA_TUPLE_IP, |ip| {
                    attr(ip, CTA_IP_V6_SRC, &v6(s));
                    attr(ip, CTA_IP_V6_DST, &v6(d));
                });
                nested(t, CTA_TUPLE_PROTO, |p| {
                    attr(p, CTA_PROTO_NUM, &[58]);
                    attr(p, CTA_PROTO_ICMPV6_TYPE, &[128]);
                    attr(p, CTA_PROTO_ICMPV6_CODE, &[0]);
                });
            });
        }
        let f = parse_flow(&b).expect("flow");
        assert_eq!(f.family, AF_INET6);
        assert_eq!(f.tuple.protocol, 58);
        assert_eq!(f.tuple.icmp, Some((128, 0)));
        assert_eq!(f.tuple.orig_sport, None);
        assert_eq!(f.tuple.reply_src, IpAddr::from(v6(2)));
    }
}
