//! Listening sockets, including ones inside a named network namespace: the socket
//! is created by a thread that entered the namespace, so it stays there while the
//! server (in the root namespace) accepts on it.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open network namespace {ns} (/run/netns/{ns}): {source}")]
    OpenNetns { ns: String, source: std::io::Error },
    #[error("cannot enter network namespace {ns}: {source}")]
    Setns { ns: String, source: std::io::Error },
    #[error("the thread binding in network namespace {0} panicked")]
    Thread(String),
    #[error("invalid listen address {0:?}: expected IP:PORT")]
    Address(String),
    #[error("invalid --listen-netns {0:?}: expected NAMESPACE=IP:PORT")]
    NetnsSpec(String),
}

pub fn parse_addr(s: &str) -> Result<SocketAddr, ListenError> {
    s.parse().map_err(|_| ListenError::Address(s.to_string()))
}

/// Parses `NS=IP:PORT`.
pub fn parse_netns_spec(s: &str) -> Result<(String, SocketAddr), ListenError> {
    let (ns, addr) = s
        .split_once('=')
        .ok_or_else(|| ListenError::NetnsSpec(s.to_string()))?;
    if ns.is_empty() || ns.contains('/') {
        return Err(ListenError::NetnsSpec(s.to_string()));
    }
    Ok((ns.to_string(), parse_addr(addr)?))
}

/// Binds a non-blocking listener in the current network namespace.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    let l = TcpListener::bind(addr).map_err(|source| ListenError::Bind { addr, source })?;
    l.set_nonblocking(true)
        .map_err(|source| ListenError::Bind { addr, source })?;
    Ok(l)
}

/// Binds a non-blocking listener inside `/run/netns/NS`.
pub fn bind_in_netns(ns: &str, addr: SocketAddr) -> Result<TcpListener, ListenError> {
    let ns_name = ns.to_string();
    // setns affects only the calling thread, so a short-lived thread does it and
    // the rest of the process stays in its namespace.
    let worker = std::thread::spawn(move || -> Result<TcpListener, ListenError> {
        let path = format!("/run/netns/{ns_name}");
        let f = std::fs::File::open(&path).map_err(|source| ListenError::OpenNetns {
            ns: ns_name.clone(),
            source,
        })?;
        // SAFETY: setns on a valid, open namespace file descriptor; it only
        // changes this thread's network namespace.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(ListenError::Setns {
                ns: ns_name,
                source: std::io::Error::last_os_error(),
            });
        }
        bind(addr)
    });
    worker
        .join()
        .map_err(|_| ListenError::Thread(ns.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(
            parse_netns_spec("n1=10.0.0.1:6443").unwrap(),
            ("n1".to_string(), "10.0.0.1:6443".parse().unwrap())
        );
        assert!(parse_netns_spec("n1").is_err());
        assert!(parse_netns_spec("=1.2.3.4:1").is_err());
        assert!(parse_addr("localhost").is_err());
        assert!(matches!(
            bind_in_netns("margay-no-such-ns", "127.0.0.1:0".parse().unwrap()),
            Err(ListenError::OpenNetns { .. })
        ));
    }
}
