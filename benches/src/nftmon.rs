//! Watching a namespace's nf_tables from the kernel's side: a netlink
//! socket subscribed to `NFNLGRP_NFTABLES`, the group the kernel notifies
//! every committed change to (what `nft monitor` reads). A notification
//! means the change is in force, so this is how benchmarks observe "the
//! policy is enforced on that node" without asking the agent.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNLGRP_NFTABLES: libc::c_int = 7;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_ADD_MEMBERSHIP: libc::c_int = 1;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;

/// A committed change, as far as the benchmarks care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Chain {
        name: String,
        added: bool,
    },
    /// Element keys (raw bytes) added to or deleted from a set.
    Elements {
        set: String,
        keys: Vec<Vec<u8>>,
        added: bool,
    },
}

impl Change {
    /// Whether an element keyed by `ip` (first key bytes) was added
    /// (`added`) or deleted.
    pub fn touches_ip(&self, ip: IpAddr, want_added: bool) -> bool {
        let octets = match ip {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        matches!(self, Change::Elements { keys, added, .. }
            if *added == want_added && keys.iter().any(|k| k.starts_with(&octets)))
    }
}

fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((ty, &buf[4..len]));
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    out
}

fn name(p: &[u8]) -> String {
    String::from_utf8_lossy(p.split(|b| *b == 0).next().unwrap_or_default()).into_owned()
}

/// One notification (payload after the netlink header).
pub fn parse(ty: u16, payload: &[u8]) -> Option<Change> {
    if ty >> 8 != NFNL_SUBSYS_NFTABLES {
        return None;
    }
    let a = attrs(payload.get(4..)?);
    let find = |t: u16| a.iter().find(|(x, _)| *x == t).map(|(_, p)| *p);
    match ty & 0xff {
        m @ (NFT_MSG_NEWCHAIN | NFT_MSG_DELCHAIN) => Some(Change::Chain {
            name: name(find(NFTA_CHAIN_NAME)?),
            added: m == NFT_MSG_NEWCHAIN,
        }),
        m @ (NFT_MSG_NEWSETELEM | NFT_MSG_DELSETELEM) => {
            let keys = attrs(find(NFTA_SET_ELEM_LIST_ELEMENTS)?)
                .into_iter()
                .filter_map(|(_, elem)| {
                    let e = attrs(elem);
                    let key = e.iter().find(|(t, _)| *t == NFTA_SET_ELEM_KEY)?.1;
                    let v = attrs(key);
                    Some(v.iter().find(|(t, _)| *t == NFTA_DATA_VALUE)?.1.to_vec())
                })
                .collect();
            Some(Change::Elements {
                set: name(find(NFTA_SET_ELEM_LIST_SET)?),
                keys,
                added: m == NFT_MSG_NEWSETELEM,
            })
        }
        _ => None,
    }
}

/// A running monitor; dropping it stops its thread.
pub struct Monitor {
    stop: Arc<AtomicBool>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts a thread in the network namespace at `netns` that sends every
/// change (with when it was read) as `(tag, Instant, Change)`. Returns once
/// subscribed.
pub fn spawn(
    netns: &Path,
    tag: usize,
    tx: mpsc::Sender<(usize, Instant, Change)>,
) -> io::Result<Monitor> {
    let netns = netns.to_path_buf();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let sock = (|| -> io::Result<OwnedFd> {
            let f = std::fs::File::open(&netns)?;
            // SAFETY: setns on a namespace fd; affects this thread only.
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: plain socket(2), owned below.
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
            // SAFETY: fresh descriptor.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let group = NFNLGRP_NFTABLES;
            let big: libc::c_int = 16 << 20;
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 200_000,
            };
            // SAFETY: a zeroed sockaddr_nl binds to a kernel-chosen port id.
            let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            // SAFETY: sa is a valid sockaddr_nl of the size given.
            if unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sa as *const libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            } != 0
            {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: setsockopt with values of the sizes given.
            unsafe {
                if libc::setsockopt(
                    fd.as_raw_fd(),
                    SOL_NETLINK,
                    NETLINK_ADD_MEMBERSHIP,
                    (&group as *const libc::c_int).cast(),
                    4,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&big as *const libc::c_int).cast(),
                    4,
                );
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                );
            }
            Ok(fd)
        })();
        let fd = match sock {
            Ok(fd) => {
                let _ = ready_tx.send(Ok(()));
                fd
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let mut buf = vec![0u8; 1 << 20];
        loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let now = Instant::now();
            if n < 0 {
                let e = io::Error::last_os_error();
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut {
                    continue;
                }
                eprintln!("nftables monitor {tag}: {e}");
                continue;
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let ty = u16::from_ne_bytes([rest[4], rest[5]]);
                if len < 16 || len > rest.len() {
                    break;
                }
                if let Some(c) = parse(ty, &rest[16..len])
                    && tx.send((tag, now, c)).is_err()
                {
                    return;
                }
                rest = &rest[((len + 3) & !3).min(rest.len())..];
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| io::Error::other("monitor thread did not start"))??;
    Ok(Monitor { stop })
}
