//! Probing connectivity from inside a pod: one probe ([`probe`]) or every
//! ordered pair of pods at once ([`matrix`]).
//!
//! A probe runs on a thread that has entered the source pod's network
//! namespace (`setns`), so many run at once inside one process without forking.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::pods::spec::Protocol;

/// Default time a probe waits for a connection or an echo.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// Switches the calling thread into the named network namespace.
pub fn enter_netns(name: &str) -> io::Result<()> {
    let file = File::open(Path::new("/run/netns").join(name))?;
    // SAFETY: setns on a descriptor we hold; it changes only this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// From inside the network namespace `from_netns`: does a TCP connection to
/// `to` complete, or does a UDP datagram to it come back, within `timeout`?
/// An error is a failure to run the probe at all (no such namespace).
pub fn probe(
    from_netns: &str,
    to: SocketAddr,
    protocol: Protocol,
    timeout: Duration,
) -> io::Result<bool> {
    let from = from_netns.to_string();
    std::thread::scope(|s| {
        s.spawn(move || {
            enter_netns(&from)?;
            Ok(probe_here(to, protocol, timeout))
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("probe thread panicked")))
    })
}

/// A probe from the calling thread's namespace.
pub fn probe_here(to: SocketAddr, protocol: Protocol, timeout: Duration) -> bool {
    match protocol {
        Protocol::Tcp => TcpStream::connect_timeout(&to, timeout).is_ok(),
        Protocol::Udp => udp_echo(to, timeout).unwrap_or(false),
    }
}

fn udp_echo(to: SocketAddr, timeout: Duration) -> io::Result<bool> {
    let local: SocketAddr = match to.ip() {
        IpAddr::V4(_) => "0.0.0.0:0".parse().map_err(io::Error::other)?,
        IpAddr::V6(_) => "[::]:0".parse().map_err(io::Error::other)?,
    };
    let s = UdpSocket::bind(local)?;
    s.connect(to)?;
    let nonce: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    let deadline = Instant::now() + timeout;
    // Resend a few times within the timeout: the first datagram may be spent
    // on neighbour resolution.
    let mut next_send = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        if now >= next_send {
            let _ = s.send(&nonce);
            next_send = now + timeout / 4;
        }
        let wait = deadline.min(next_send).saturating_duration_since(now);
        s.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        match s.recv(&mut buf) {
            Ok(n) if buf[..n] == nonce => return Ok(true),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            // ICMP unreachable (nothing listening, or rejected): a clear no.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// Sends `payload` over TCP and reads it back (a stronger check than a
/// connect, for tests that want data through).
pub fn tcp_echo_here(to: SocketAddr, payload: &[u8], timeout: Duration) -> io::Result<bool> {
    let mut s = TcpStream::connect_timeout(&to, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(payload)?;
    let mut got = vec![0u8; payload.len()];
    s.read_exact(&mut got)?;
    Ok(got == payload)
}

/// One probe of a matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeJob {
    /// `NS/NAME` of the source.
    pub from: String,
    pub from_netns: String,
    /// `NS/NAME` of the target.
    pub to: String,
    pub address: SocketAddr,
    pub protocol: Protocol,
}

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeResult {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub protocol: Protocol,
    pub connected: bool,
    /// Set when the probe could not run at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Runs every job in parallel (a pool of threads; each enters a source's
/// namespace only when its next job comes from another one).
pub fn run_jobs(jobs: &[ProbeJob], timeout: Duration, max_parallel: usize) -> Vec<ProbeResult> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<ProbeResult>>> = Mutex::new(vec![None; jobs.len()]);
    let workers = jobs.len().min(max_parallel.max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut current: Option<String> = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { return };
                    let mut error = None;
                    if current.as_deref() != Some(job.from_netns.as_str()) {
                        match enter_netns(&job.from_netns) {
                            Ok(()) => current = Some(job.from_netns.clone()),
                            Err(e) => {
                                current = None;
                                error = Some(format!("entering {}: {e}", job.from_netns));
                            }
                        }
                    }
                    let connected =
                        error.is_none() && probe_here(job.address, job.protocol, timeout);
                    let r = ProbeResult {
                        from: job.from.clone(),
                        to: job.to.clone(),
                        port: job.address.port(),
                        protocol: job.protocol,
                        connected,
                        error,
                    };
                    if let Ok(mut all) = results.lock() {
                        all[i] = Some(r);
                    }
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect()
}

/// A connectivity matrix: for each port/protocol, which source reaches which
/// target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Matrix {
    /// Pods in order (`NS/NAME`).
    pub pods: Vec<String>,
    pub results: Vec<ProbeResult>,
}

impl Matrix {
    /// Whether `from` reached `to` on `port`/`protocol` (None: not probed).
    pub fn connected(&self, from: &str, to: &str, port: u16, protocol: Protocol) -> Option<bool> {
        self.results
            .iter()
            .find(|r| r.from == from && r.to == to && r.port == port && r.protocol == protocol)
            .map(|r| r.connected)
    }

    /// One table per port/protocol, rows are sources, columns targets:
    /// `.` connected, `X` not, `?` the probe could not run.
    pub fn render_table(&self) -> String {
        let mut by_port: BTreeMap<(Protocol, u16), Vec<&ProbeResult>> = BTreeMap::new();
        for r in &self.results {
            by_port.entry((r.protocol, r.port)).or_default().push(r);
        }
        let width = self.pods.iter().map(String::len).max().unwrap_or(4).max(7);
        let mut out = String::new();
        for ((proto, port), results) in by_port {
            out.push_str(&format!("{:<width$}", format!("{proto}/{port}")));
            for p in &self.pods {
                out.push_str(&format!(" {p:<width$}"));
            }
            out.push('\n');
            for from in &self.pods {
                out.push_str(&format!("{from:<width$}"));
                for to in &self.pods {
                    let cell = results
                        .iter()
                        .find(|r| &r.from == from && &r.to == to)
                        .map(|r| match (r.connected, &r.error) {
                            (_, Some(_)) => "?",
                            (true, None) => ".",
                            (false, None) => "X",
                        })
                        .unwrap_or(" ");
                    out.push_str(&format!(" {cell:<width$}"));
                }
                out.push('\n');
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(from: &str, to: &str, port: u16, connected: bool) -> ProbeResult {
        ProbeResult {
            from: from.into(),
            to: to.into(),
            port,
            protocol: Protocol::Tcp,
            connected,
            error: None,
        }
    }

    #[test]
    fn renders_one_table_per_port() {
        let m = Matrix {
            pods: vec!["x/a".into(), "x/b".into()],
            results: vec![
                result("x/a", "x/a", 80, true),
                result("x/a", "x/b", 80, false),
                result("x/b", "x/a", 80, true),
                result("x/b", "x/b", 80, true),
            ],
        };
        let t = m.render_table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["tcp/80", "x/a", "x/b"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["x/a", ".", "X"]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["x/b", ".", "."]
        );
        assert_eq!(m.connected("x/a", "x/b", 80, Protocol::Tcp), Some(false));
        assert_eq!(m.connected("x/a", "x/b", 81, Protocol::Tcp), None);
    }

    #[test]
    fn loopback_probes_tell_open_from_closed() {
        // Probes from this thread's own namespace, on loopback only.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = l.local_addr().unwrap();
        assert!(probe_here(open, Protocol::Tcp, DEFAULT_TIMEOUT));
        drop(l);
        assert!(!probe_here(open, Protocol::Tcp, DEFAULT_TIMEOUT));

        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = echo.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let (n, from) = echo.recv_from(&mut buf).unwrap();
            echo.send_to(&buf[..n], from).unwrap();
        });
        assert!(probe_here(addr, Protocol::Udp, DEFAULT_TIMEOUT));
        server.join().unwrap();
        // Nothing listens there any more: ICMP port unreachable, a quick no.
        assert!(!probe_here(addr, Protocol::Udp, Duration::from_millis(300)));
    }
}
