//! TCP sockets for BGP with the options tokio does not expose: TCP MD5
//! signatures (RFC 2385), GTSM (RFC 5082) and IPv6-only listeners, set with
//! `setsockopt(2)` through libc.

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::config::PeerConfig;

/// `struct tcp_md5sig` from `<linux/tcp.h>` (libc does not define it).
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: u32,
    key: [u8; 80],
}

/// Longest TCP MD5 key Linux accepts.
pub const MD5_MAX_KEY: usize = 80;

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` for the duration of the call and
    // the length passed is its size; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast::<libc::c_void>(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn sockaddr_storage(addr: IpAddr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
    match addr {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and suitably aligned
            // for sockaddr_in, as POSIX guarantees.
            let sin = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
        }
        IpAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = a.octets();
        }
    }
    ss
}

/// Sets (or, with `None`, removes) the TCP MD5 key for segments to and
/// from `peer` on `fd`. On a listening socket it applies to connections
/// accepted from that address.
pub fn set_md5(fd: RawFd, peer: IpAddr, password: Option<&str>) -> io::Result<()> {
    let key = password.unwrap_or("").as_bytes();
    if key.len() > MD5_MAX_KEY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "TCP MD5 password is {} octets, at most {MD5_MAX_KEY} allowed",
                key.len()
            ),
        ));
    }
    let mut sig = TcpMd5Sig {
        addr: sockaddr_storage(peer),
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; 80],
    };
    sig.key[..key.len()].copy_from_slice(key);
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig)
}

/// GTSM (RFC 5082): send with TTL / hop limit 255, and have the kernel
/// drop segments that arrive with less than 254 (one hop away at most).
pub fn set_gtsm(fd: RawFd, ipv6: bool) -> io::Result<()> {
    let ttl: libc::c_int = 255;
    let min: libc::c_int = 254;
    if ipv6 {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &ttl)?;
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, &min)
    } else {
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, &ttl)?;
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_MINTTL, &min)
    }
}

/// Reads back IP_MINTTL / IPV6_MINHOPCOUNT (for status and tests).
pub fn min_ttl(fd: RawFd, ipv6: bool) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    let (level, name) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT)
    } else {
        (libc::IPPROTO_IP, libc::IP_MINTTL)
    };
    // SAFETY: `v` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(v)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Applies a peer's per-connection options to an accepted connection.
pub fn prepare_accepted(stream: &TcpStream, peer: &PeerConfig) -> io::Result<()> {
    stream.set_nodelay(true)?;
    if peer.ttl_security {
        set_gtsm(stream.as_raw_fd(), peer.address.is_ipv6())?;
    }
    Ok(())
}

/// Opens an outgoing connection to `peer` with its options (source
/// address and port, MD5, GTSM), giving up after `timeout`.
pub async fn connect(peer: &PeerConfig, timeout: Duration) -> io::Result<TcpStream> {
    let socket = if peer.address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    let fd = socket.as_raw_fd();
    if let Some(pw) = &peer.md5_password {
        set_md5(fd, peer.address, Some(pw))?;
    }
    if peer.ttl_security {
        set_gtsm(fd, peer.address.is_ipv6())?;
    }
    if peer.source_address.is_some() || peer.source_port.is_some() {
        let ip = peer.source_address.unwrap_or(if peer.address.is_ipv4() {
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        });
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::new(ip, peer.source_port.unwrap_or(0)))?;
    }
    socket.set_nodelay(true)?;
    let target = SocketAddr::new(peer.address, peer.port);
    match tokio::time::timeout(timeout, socket.connect(target)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connecting to {target} timed out"),
        )),
    }
}

/// A listening socket (IPv6 ones are IPv6-only, so `0.0.0.0:179` and
/// `[::]:179` can both be bound).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        let s = TcpSocket::new_v6()?;
        let on: libc::c_int = 1;
        setsockopt(s.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &on)?;
        s
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(256)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn md5_and_gtsm_options_are_accepted_by_the_kernel() {
        let l = listen("127.0.0.1:0".parse().expect("addr")).expect("listen");
        set_md5(
            l.as_raw_fd(),
            "127.0.0.2".parse().expect("ip"),
            Some("secret"),
        )
        .expect("md5 on listener");
        set_md5(l.as_raw_fd(), "127.0.0.2".parse().expect("ip"), None).expect("md5 removed");
        set_gtsm(l.as_raw_fd(), false).expect("gtsm");
        assert_eq!(min_ttl(l.as_raw_fd(), false).expect("getsockopt"), 254);
        let too_long = "x".repeat(81);
        assert!(
            set_md5(
                l.as_raw_fd(),
                "127.0.0.2".parse().expect("ip"),
                Some(&too_long)
            )
            .is_err()
        );
    }

    #[tokio::test]
    async fn connect_with_gtsm_to_a_gtsm_listener() {
        // Both ends send with TTL 255 (the listener's setting covers its
        // SYN-ACK and is inherited by the accepted socket), so the
        // handshake passes both minimum-TTL checks.
        let l = listen("127.0.0.1:0".parse().expect("addr")).expect("listen");
        set_gtsm(l.as_raw_fd(), false).expect("gtsm on listener");
        let port = l.local_addr().expect("local").port();
        let mut peer = PeerConfig::new("127.0.0.1".parse().expect("ip"), 65000);
        peer.port = port;
        peer.ttl_security = true;
        let both = async { tokio::join!(connect(&peer, Duration::from_secs(5)), l.accept()) };
        let (c, a) = tokio::time::timeout(Duration::from_secs(20), both)
            .await
            .expect("handshake in time");
        let c = c.expect("connected");
        let (accepted, _) = a.expect("accepted");
        assert_eq!(min_ttl(c.as_raw_fd(), false).expect("getsockopt"), 254);
        assert_eq!(
            min_ttl(accepted.as_raw_fd(), false).expect("getsockopt"),
            254
        );
    }
}
