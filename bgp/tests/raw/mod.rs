//! A hand-driven BGP peer for error-handling tests, and a way to run a
//! test (speaker included) inside a network namespace of its own.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use margay_bgp::codec::{
    Capabilities, Family, Frame, Framer, Message, MessageType, Notification, Open, SessionContext,
    decode_notification, encode_to_vec,
};
use margay_lab::netns::NetnsGuard;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Runs `body` on a thread that has entered `ns`, with a tokio runtime
/// whose worker threads inherit the namespace: every socket the test (and
/// the speaker under test) opens lives in `ns`.
pub fn in_netns<F, Fut>(ns: &NetnsGuard, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let path = format!("/run/netns/{}", ns.name());
    let t = std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("open namespace");
        // SAFETY: setns(2) on a valid namespace descriptor; it only
        // changes this thread's network namespace.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(body());
    });
    if let Err(e) = t.join() {
        std::panic::resume_unwind(e);
    }
}

/// A namespace with its loopback up (and the given sysctls).
pub fn namespace(tag: &str, sysctls: &[(&str, &str)]) -> NetnsGuard {
    let ns = NetnsGuard::create_unique(tag).expect("namespace");
    if !sysctls.is_empty() {
        ns.sysctls(sysctls).expect("sysctls");
    }
    ns
}

/// One TCP connection driven by hand.
pub struct RawPeer {
    pub stream: TcpStream,
    framer: Framer,
    pub ctx: SessionContext,
}

pub const WAIT: Duration = Duration::from_secs(30);

impl RawPeer {
    /// Connects from `local` to `remote`.
    pub async fn connect(local: SocketAddr, remote: SocketAddr) -> RawPeer {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let s = TcpSocket::new_v4().expect("socket");
            s.set_reuseaddr(true).expect("reuseaddr");
            s.bind(local).expect("bind");
            match s.connect(remote).await {
                Ok(stream) => return RawPeer::from(stream),
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("connecting to {remote}: {e}"),
            }
        }
    }

    pub fn from(stream: TcpStream) -> RawPeer {
        RawPeer {
            stream,
            framer: Framer::new(),
            ctx: SessionContext::new(65001, 65000),
        }
    }

    pub async fn send(&mut self, msg: &Message) {
        let b = encode_to_vec(msg, &self.ctx).expect("encode");
        self.send_raw(&b).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next message, or `None` on EOF / reset.
    pub async fn recv(&mut self) -> Option<Frame> {
        let mut buf = [0u8; 4096];
        loop {
            match self.framer.next_frame() {
                Ok(Some(f)) => return Some(f),
                Ok(None) => {}
                Err(e) => panic!("speaker sent bytes we cannot frame: {e}"),
            }
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut buf))
                .await
                .expect("the speaker answers in time")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.framer.push(&buf[..n]);
        }
    }

    /// Skips KEEPALIVEs and UPDATEs until a NOTIFICATION (panics on EOF).
    pub async fn expect_notification(&mut self) -> Notification {
        loop {
            match self.recv().await {
                Some(f) if f.message_type == MessageType::Notification => {
                    return decode_notification(&f.body).expect("well-formed NOTIFICATION");
                }
                Some(_) => continue,
                None => panic!("connection closed without a NOTIFICATION"),
            }
        }
    }

    /// Expects the connection to close with no NOTIFICATION.
    pub async fn expect_silent_close(&mut self) {
        loop {
            match self.recv().await {
                Some(f) if f.message_type == MessageType::Notification => {
                    panic!("unexpected NOTIFICATION {:?}", decode_notification(&f.body))
                }
                Some(_) => continue,
                None => return,
            }
        }
    }

    /// Sends `open`, reads the speaker's OPEN, exchanges KEEPALIVEs.
    pub async fn handshake(&mut self, open: Open) -> Open {
        self.send(&Message::Open(open)).await;
        let theirs = loop {
            let f = self.recv().await.expect("speaker's OPEN");
            if f.message_type == MessageType::Open {
                break margay_bgp::codec::parse_open(&f.body).expect("valid OPEN");
            }
        };
        self.send(&Message::Keepalive).await;
        loop {
            let f = self.recv().await.expect("speaker's KEEPALIVE");
            if f.message_type == MessageType::Keepalive {
                break;
            }
        }
        theirs
    }
}

/// An OPEN with IPv4/IPv6 unicast, route refresh (plain and enhanced).
pub fn open(asn: u32, hold: u16, id: Ipv4Addr) -> Open {
    let caps = Capabilities {
        multiprotocol: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
        route_refresh: true,
        enhanced_route_refresh: true,
        ..Default::default()
    };
    Open::new(asn, hold, id, caps)
}

// ----- hand-made UPDATEs (the encoder only writes valid ones) -----

/// One path attribute.
pub fn attr(flags: u8, type_code: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vec![flags, type_code];
    if flags & 0x10 != 0 {
        v.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        v.push(value.len() as u8);
    }
    v.extend_from_slice(value);
    v
}

pub fn origin_igp() -> Vec<u8> {
    attr(0x40, 1, &[0])
}

pub fn as_path(asns: &[u32]) -> Vec<u8> {
    let mut v = vec![2, asns.len() as u8];
    for a in asns {
        v.extend_from_slice(&a.to_be_bytes());
    }
    attr(0x40, 2, &v)
}

pub fn next_hop(a: Ipv4Addr) -> Vec<u8> {
    attr(0x40, 3, &a.octets())
}

/// An IPv4 prefix in NLRI encoding.
pub fn nlri(a: [u8; 4], len: u8) -> Vec<u8> {
    let mut v = vec![len];
    v.extend_from_slice(&a[..usize::from(len).div_ceil(8)]);
    v
}

/// A whole UPDATE message from its three fields.
pub fn update(withdrawn: &[u8], attrs: &[Vec<u8>], nlri: &[u8]) -> Vec<u8> {
    let attrs: Vec<u8> = attrs.concat();
    let mut body = Vec::new();
    body.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    body.extend_from_slice(withdrawn);
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(&attrs);
    body.extend_from_slice(nlri);
    message(2, &body)
}

/// A message with a correct header.
pub fn message(type_code: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(type_code);
    m.extend_from_slice(body);
    m
}
