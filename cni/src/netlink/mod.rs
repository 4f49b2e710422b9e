//! A small synchronous rtnetlink client: just the requests the plugin makes,
//! over one `NETLINK_ROUTE` socket, without an async runtime (the plugin is
//! exec'd once per pod and must start and finish fast).
//!
//! A socket belongs to the network namespace it was opened in; [`Netlink::open_in`]
//! opens one inside a pod's namespace from a short-lived thread, so the plugin
//! never switches its own namespace.

mod addr;
mod link;
mod route;

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

pub use addr::{AddressEntry, AddressSpec};
pub use link::{LinkEntry, VethSpec};
pub use route::{RouteEntry, RouteSpec};

/// A kernel refusal or a socket failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct NetlinkError {
    pub what: String,
    #[source]
    pub source: io::Error,
}

impl NetlinkError {
    fn new(what: impl Into<String>, source: io::Error) -> NetlinkError {
        NetlinkError {
            what: what.into(),
            source,
        }
    }

    /// The errno the kernel answered with, if it was a kernel answer.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// One rtnetlink socket, in the namespace it was opened in.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let fail = |e| NetlinkError::new("opening a netlink socket", e);
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(fail)?;
        socket.bind_auto().map_err(fail)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(fail)?;
        // A kernel that never answers must not hang the runtime's pod start.
        let timeout = libc::timeval {
            tv_sec: 10,
            tv_usec: 0,
        };
        // SAFETY: setsockopt on our own descriptor with a properly sized value.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        Ok(Netlink {
            socket,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// A socket inside the network namespace `netns` (an open `/run/netns/X` or
    /// `/proc/PID/ns/net`). A thread of our own enters the namespace, opens the
    /// socket and ends; the socket stays bound to that namespace.
    pub fn open_in(netns: &File) -> Result<Netlink, NetlinkError> {
        let fd = netns.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on a descriptor we hold open for the whole call;
                // it only changes this short-lived thread's namespace.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    return Err(NetlinkError::new(
                        "entering the pod's network namespace",
                        io::Error::last_os_error(),
                    ));
                }
                Netlink::open()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(NetlinkError::new(
                    "entering the pod's network namespace",
                    io::Error::other("thread panicked"),
                ))
            })
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn encode(&mut self, msg: RouteNetlinkMessage, flags: u16) -> (u32, Vec<u8>) {
        let seq = self.next_seq();
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        nl.finalize();
        let mut bytes = vec![0; nl.buffer_len()];
        nl.serialize(&mut bytes);
        (seq, bytes)
    }

    /// Sends several requests in one write and waits for every acknowledgement:
    /// the kernel runs them in order, so one round trip configures a pod. The
    /// result has one entry per request, in order.
    pub fn batch(
        &mut self,
        requests: Vec<(RouteNetlinkMessage, u16, String)>,
    ) -> Result<Vec<Result<(), NetlinkError>>, NetlinkError> {
        let mut bytes = Vec::new();
        let mut pending = Vec::new();
        for (msg, flags, what) in requests {
            let (seq, b) = self.encode(msg, flags | NLM_F_REQUEST | NLM_F_ACK);
            bytes.extend_from_slice(&b);
            pending.push((seq, what));
        }
        self.send(&bytes)?;
        let first = pending.first().map(|(s, _)| *s).unwrap_or(0);
        let mut results: Vec<Option<Result<(), NetlinkError>>> =
            pending.iter().map(|_| None).collect();
        while results.iter().any(Option::is_none) {
            for raw in self.receive()? {
                let idx = raw.seq.wrapping_sub(first) as usize;
                if idx >= pending.len() || raw.kind != NLMSG_ERROR {
                    continue;
                }
                results[idx] = Some(match raw.error_code() {
                    0 => Ok(()),
                    code => Err(NetlinkError::new(
                        pending[idx].1.clone(),
                        io::Error::from_raw_os_error(-code),
                    )),
                });
            }
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// One request that is answered by an acknowledgement.
    pub fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> Result<(), NetlinkError> {
        let mut out = self.batch(vec![(msg, flags, what.to_string())])?;
        out.pop().unwrap_or(Ok(()))
    }

    /// One request answered by data: every message until DONE (a dump) or the
    /// single answer (a get).
    pub fn query(
        &mut self,
        msg: RouteNetlinkMessage,
        dump: bool,
        what: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
        let (seq, bytes) = self.encode(msg, flags);
        self.send(&bytes)?;
        let mut out = Vec::new();
        loop {
            for raw in self.receive()? {
                if raw.seq != seq {
                    continue;
                }
                match raw.kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        return match raw.error_code() {
                            0 => Ok(out),
                            code => {
                                Err(NetlinkError::new(what, io::Error::from_raw_os_error(-code)))
                            }
                        };
                    }
                    _ => {
                        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&raw.bytes)
                            .map_err(|e| {
                                NetlinkError::new(
                                    what,
                                    io::Error::new(io::ErrorKind::InvalidData, e),
                                )
                            })?;
                        if let NetlinkPayload::InnerMessage(inner) = msg.payload {
                            out.push(inner);
                        }
                        if !dump {
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), NetlinkError> {
        self.socket
            .send(bytes, 0)
            .map(|_| ())
            .map_err(|e| NetlinkError::new("sending netlink requests", e))
    }

    /// Reads one datagram and splits it into messages, looking only at their
    /// headers (decoding happens where a message's body is wanted, so an
    /// attribute this crate does not know never hides an acknowledgement).
    fn receive(&mut self) -> Result<Vec<RawMessage>, NetlinkError> {
        let n = loop {
            match self.socket.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NetlinkError::new("reading netlink answers", e)),
            }
        };
        Ok(split_messages(&self.buf[..n]))
    }
}

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// One netlink message as received: header fields and the whole message.
struct RawMessage {
    kind: u16,
    seq: u32,
    bytes: Vec<u8>,
}

impl RawMessage {
    /// For an `NLMSG_ERROR` message: the (negative) errno, 0 for an ack.
    fn error_code(&self) -> i32 {
        self.bytes
            .get(16..20)
            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(-libc::EBADMSG)
    }
}

fn split_messages(buf: &[u8]) -> Vec<RawMessage> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset + 16 <= buf.len() {
        let word = |at: usize| u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let len = word(offset) as usize;
        if len < 16 || offset + len > buf.len() {
            break;
        }
        out.push(RawMessage {
            kind: u16::from_ne_bytes([buf[offset + 4], buf[offset + 5]]),
            seq: word(offset + 8),
            bytes: buf[offset..offset + len].to_vec(),
        });
        offset += (len + 3) & !3;
    }
    out
}
