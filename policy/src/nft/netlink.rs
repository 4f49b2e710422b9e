//! Set-element updates as raw nf_tables netlink batches: the hot path of pod
//! churn (a pod appears, leaves or changes labels → addresses enter or leave
//! selector and named-port sets). libnftables refreshes its cache of the
//! whole ruleset before every batch, which costs milliseconds in a large
//! table; one `NFT_MSG_NEWSETELEM` / `NFT_MSG_DELSETELEM` batch costs tens
//! of microseconds whatever the table holds (ADR 0004).
//!
//! Only hash sets go this way (single addresses, and address . protocol .
//! port concatenations); interval sets, chains, full loads and listings stay
//! with libnftables. The encoding here is pure and unit-tested; the socket
//! lives in the nftables worker thread (`libnft.rs`), in the right namespace.

use std::net::IpAddr;

use crate::ir::SetElem;

// linux/netlink.h, linux/netfilter/nfnetlink.h, linux/netfilter/nf_tables.h
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
pub(crate) const NLMSG_ERROR: u16 = 0x2;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;

/// Elements to add to or delete from one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementOp {
    pub set: String,
    pub add: bool,
    pub elements: Vec<SetElem>,
}

/// The key bytes of a hash-set element as nf_tables stores them: addresses
/// in network order; in a concatenation each field padded to 4 bytes, the
/// protocol one byte, the port big-endian. None for intervals.
pub fn element_key(e: &SetElem) -> Option<Vec<u8>> {
    let addr = |a: &IpAddr| match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    };
    match e {
        SetElem::Addr(a) => Some(addr(a)),
        SetElem::AddrProtoPort(a, proto, port) => {
            let mut k = addr(a);
            k.extend_from_slice(&[*proto, 0, 0, 0]);
            let p = port.to_be_bytes();
            k.extend_from_slice(&[p[0], p[1], 0, 0]);
            Some(k)
        }
        SetElem::Range(..) => None,
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

fn nested(buf: &mut Vec<u8>, ty: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    f(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

fn cstring(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// One netlink message: header, nfgenmsg, attributes.
fn message(
    buf: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    attrs: &[u8],
) {
    let len = 16 + 4 + attrs.len();
    buf.extend_from_slice(&(len as u32).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    buf.push(family);
    buf.push(0); // NFNETLINK_V0
    buf.extend_from_slice(&res_id.to_be_bytes());
    buf.extend_from_slice(attrs);
}

/// A batch (one kernel transaction) adding/deleting elements in sets of
/// `inet <table>`. Returns the bytes and the sequence numbers that will be
/// acknowledged. Errors when an element is not a hash-set element.
pub fn encode_batch(
    table: &str,
    ops: &[ElementOp],
    first_seq: u32,
) -> Result<(Vec<u8>, Vec<u32>), String> {
    let mut buf = Vec::new();
    let mut seq = first_seq;
    let mut acked = Vec::new();
    message(
        &mut buf,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    for op in ops {
        // Keep messages well under the socket buffer: chunks of 500.
        for chunk in op.elements.chunks(500) {
            seq += 1;
            let mut a = Vec::new();
            attr(&mut a, NFTA_SET_ELEM_LIST_TABLE, &cstring(table));
            attr(&mut a, NFTA_SET_ELEM_LIST_SET, &cstring(&op.set));
            let mut err = None;
            nested(&mut a, NFTA_SET_ELEM_LIST_ELEMENTS, |a| {
                for e in chunk {
                    let Some(key) = element_key(e) else {
                        err = Some(format!("{e:?} is not a hash-set element"));
                        continue;
                    };
                    nested(a, NFTA_LIST_ELEM, |a| {
                        nested(a, NFTA_SET_ELEM_KEY, |a| attr(a, NFTA_DATA_VALUE, &key));
                    });
                }
            });
            if let Some(e) = err {
                return Err(e);
            }
            let (ty, flags) = if op.add {
                (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK)
            } else {
                (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK)
            };
            message(
                &mut buf,
                (NFNL_SUBSYS_NFTABLES << 8) | ty,
                flags,
                seq,
                NFPROTO_INET,
                0,
                &a,
            );
            acked.push(seq);
        }
    }
    seq += 1;
    message(
        &mut buf,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    Ok((buf, acked))
}

/// A netlink socket for nf_tables, opened in the calling thread's namespace.
pub(crate) struct NetlinkSocket {
    fd: std::os::fd::OwnedFd,
    seq: u32,
}

impl NetlinkSocket {
    pub(crate) fn open() -> std::io::Result<NetlinkSocket> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket(2) call; the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor we own.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // Never wait forever for an acknowledgement.
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: valid fd and option value.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        Ok(NetlinkSocket { fd, seq: 1 })
    }

    /// Send one batch and wait for every acknowledgement. The kernel applies
    /// the batch all or nothing; the first error is returned.
    pub(crate) fn apply(&mut self, table: &str, ops: &[ElementOp]) -> Result<(), String> {
        use std::os::fd::AsRawFd;
        let (buf, acked) = encode_batch(table, ops, self.seq)?;
        self.seq = self.seq.wrapping_add(acked.len() as u32 + 2);
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: buf and addr are valid for the call.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 || sent as usize != buf.len() {
            return Err(format!("netlink send: {}", std::io::Error::last_os_error()));
        }
        let mut pending: std::collections::BTreeSet<u32> = acked.into_iter().collect();
        let mut first_error: Option<String> = None;
        let mut rbuf = vec![0u8; 65536];
        while !pending.is_empty() {
            // SAFETY: rbuf is valid for writes of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), rbuf.as_mut_ptr().cast(), rbuf.len(), 0) };
            if n < 0 {
                return Err(format!("netlink recv: {}", std::io::Error::last_os_error()));
            }
            let mut off = 0usize;
            let n = n as usize;
            while off + 16 <= n {
                let len =
                    u32::from_ne_bytes(rbuf[off..off + 4].try_into().unwrap_or([0; 4])) as usize;
                let ty = u16::from_ne_bytes(rbuf[off + 4..off + 6].try_into().unwrap_or([0; 2]));
                let seq = u32::from_ne_bytes(rbuf[off + 8..off + 12].try_into().unwrap_or([0; 4]));
                if len < 16 {
                    break;
                }
                if ty == NLMSG_ERROR && off + 20 <= n {
                    let errno =
                        i32::from_ne_bytes(rbuf[off + 16..off + 20].try_into().unwrap_or([0; 4]));
                    pending.remove(&seq);
                    if errno != 0 && first_error.is_none() {
                        first_error = Some(format!(
                            "nf_tables refused the element batch: {}",
                            std::io::Error::from_raw_os_error(-errno)
                        ));
                        // An aborted batch acknowledges only up to the error.
                        pending.clear();
                    }
                }
                off += align4(len);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_network_order_and_padded() {
        let k = element_key(&SetElem::AddrProtoPort(
            "10.1.2.3".parse().unwrap(),
            6,
            8080,
        ))
        .unwrap();
        assert_eq!(k, vec![10, 1, 2, 3, 6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        assert_eq!(
            element_key(&SetElem::Addr("fd00::1".parse().unwrap()))
                .unwrap()
                .len(),
            16
        );
        assert_eq!(
            element_key(&SetElem::Range(
                "10.0.0.0".parse().unwrap(),
                "10.0.0.9".parse().unwrap()
            )),
            None
        );
    }

    #[test]
    fn batch_is_framed_and_aligned() {
        let ops = [ElementOp {
            set: "p4-abc".into(),
            add: true,
            elements: vec![SetElem::Addr("10.0.0.1".parse().unwrap())],
        }];
        let (buf, acked) = encode_batch("margay", &ops, 7).unwrap();
        assert_eq!(acked, vec![8]);
        // Three messages whose lengths add up to the buffer, each aligned.
        let mut off = 0;
        let mut types = Vec::new();
        while off < buf.len() {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            assert_eq!(len % 4, 0);
            types.push(u16::from_ne_bytes(
                buf[off + 4..off + 6].try_into().unwrap(),
            ));
            off += len;
        }
        assert_eq!(off, buf.len());
        assert_eq!(types, vec![0x10, (10 << 8) | 12, 0x11]);
        assert!(
            encode_batch(
                "margay",
                &[ElementOp {
                    set: "n".into(),
                    add: false,
                    elements: vec![SetElem::Range(
                        "10.0.0.0".parse().unwrap(),
                        "10.0.0.1".parse().unwrap()
                    )]
                }],
                1
            )
            .is_err()
        );
    }
}
