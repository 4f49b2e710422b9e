//! The small server every lab pod runs (`margay-lab pod-server`): TCP accept
//! and echo, UDP echo, on the ports the pod was given, both IP families.

use std::io::{self, Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::time::Duration;

use super::spec::{PortSpec, Protocol};

/// Binds every port (all of them before any serving starts, so the ready file
/// means "answering"), writes `ready_file`, then serves until killed.
pub fn run(ports: &[PortSpec], ready_file: Option<&Path>) -> io::Result<()> {
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    for p in ports {
        match p.protocol {
            Protocol::Tcp => tcp.push(bind_tcp(p.port)?),
            Protocol::Udp => udp.push(bind_udp(p.port)?),
        }
    }
    if let Some(f) = ready_file {
        crate::state::write_atomically(f, b"ready\n")?;
    }
    let mut handles = Vec::new();
    for l in tcp {
        handles.push(std::thread::spawn(move || serve_tcp(l)));
    }
    for s in udp {
        handles.push(std::thread::spawn(move || serve_udp(s)));
    }
    if handles.is_empty() {
        // Nothing to serve: stay alive as the pod's "container" until stopped.
        loop {
            std::thread::park();
        }
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// A dual-stack listener when the namespace has IPv6, else IPv4 only.
fn bind_tcp(port: u16) -> io::Result<TcpListener> {
    let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    match socket(v6, socket2::Type::STREAM) {
        Ok(s) => {
            s.listen(1024)?;
            Ok(s.into())
        }
        Err(_) => TcpListener::bind(("0.0.0.0", port)),
    }
}

fn bind_udp(port: u16) -> io::Result<UdpSocket> {
    let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    match socket(v6, socket2::Type::DGRAM) {
        Ok(s) => Ok(s.into()),
        Err(_) => UdpSocket::bind(("0.0.0.0", port)),
    }
}

fn socket(addr: SocketAddr, ty: socket2::Type) -> io::Result<socket2::Socket> {
    let s = socket2::Socket::new(socket2::Domain::IPV6, ty, None)?;
    s.set_only_v6(false)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

fn serve_tcp(l: TcpListener) {
    for conn in l.incoming() {
        let Ok(mut conn) = conn else { continue };
        std::thread::spawn(move || {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
            let mut buf = [0u8; 4096];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
}

fn serve_udp(s: UdpSocket) {
    let mut buf = [0u8; 65536];
    loop {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    }
}
