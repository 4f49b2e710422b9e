//! Shared by the BGP benchmarks: a synthetic routing table, BGP peers
//! driven from the benchmark process (inside a namespace), and the speakers
//! under test (margay-bgpd, BIRD 2, GoBGP) with their counters and memory.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use margay_bgp::codec::{
    AsPath, Capabilities, Community, Family, Framer, GracefulRestart, GracefulRestartFamily,
    Message, MessageType, Open, Origin, PathAttributes, Prefix, SessionContext, Update,
    encode_to_vec, pack,
};
use margay_lab::netns::Netns;
use margay_lab::{cmd, process};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Our AS and the generator's (iBGP: nothing is sent back to the
/// generator, so only import is measured).
pub const AS: u32 = 65000;

/// A deterministic pseudo-random sequence (xorshift), so every speaker
/// gets the same table.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `n` distinct IPv4 prefixes (mostly /24, some /22 and /20, scattered over
/// the address space like a real table) in attribute groups of 1 to 16
/// prefixes (about 8 on average: a full Internet table has roughly one
/// attribute set per 8 to 10 prefixes), each group with its own AS path of
/// 2 to 7 hops, MED, communities and ORIGIN. Returns the UPDATEs, encoded,
/// followed by End-of-RIB, and the number of attribute groups.
pub fn synthetic_table(n: usize, next_hop: Ipv4Addr) -> anyhow::Result<(Vec<u8>, usize)> {
    let ctx = SessionContext::new(AS, AS);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(n * 12);
    let mut i = 0usize;
    let mut k = 0u64;
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut groups = 0usize;
    while i < n {
        let size = (1 + rng.below(16) as usize).min(n - i);
        let mut prefixes = Vec::with_capacity(size);
        while prefixes.len() < size {
            // An odd multiplier permutes the 2^24 /24s; shorter prefixes
            // can cover the same bits, so duplicates are skipped.
            let slot = (k.wrapping_mul(2_654_435_761) & 0xff_ffff) as u32;
            // Unicast space only (1/8 to 223/8, not 127/8): speakers
            // reject martians.
            let first = match 1 + (slot >> 16) % 222 {
                127 => 223,
                o => o,
            };
            let slot = (first << 16) | (slot & 0xffff);
            let len = match k % 20 {
                0 => 20,
                1 | 2 => 22,
                _ => 24,
            };
            k += 1;
            let p = Prefix::v4(Ipv4Addr::from(slot << 8), len)?;
            if seen.insert(p) {
                prefixes.push(p);
            }
        }
        let hops = 2 + rng.below(6) as usize;
        // Private ASNs below ours (65000): no path is a loop for the speaker.
        let path: Vec<u32> = (0..hops).map(|_| 64512 + rng.below(400) as u32).collect();
        let communities = (0..rng.below(4))
            .map(|_| Community::new(65000 + rng.below(10) as u16, rng.below(500) as u16))
            .collect();
        let attrs = PathAttributes {
            origin: Some(if rng.below(4) == 0 {
                Origin::Incomplete
            } else {
                Origin::Igp
            }),
            as_path: Some(AsPath::from_sequence(path)),
            next_hop: Some(next_hop),
            med: (rng.below(2) == 0).then(|| rng.below(1000) as u32),
            local_pref: Some(100),
            communities,
            ..PathAttributes::default()
        };
        for u in pack::announcements(&attrs, Family::IPV4_UNICAST, None, &prefixes, &ctx)? {
            out.extend_from_slice(&encode_to_vec(&Message::Update(u), &ctx)?);
        }
        groups += 1;
        i += size;
    }
    out.extend_from_slice(&encode_to_vec(
        &Message::Update(Update::end_of_rib(Family::IPV4_UNICAST)),
        &ctx,
    )?);
    Ok((out, groups))
}

/// The generator's OPEN: IPv4 unicast, route refresh, graceful restart
/// (so every speaker sends End-of-RIB).
pub fn generator_open(id: Ipv4Addr) -> Open {
    let caps = Capabilities {
        multiprotocol: vec![Family::IPV4_UNICAST],
        route_refresh: true,
        graceful_restart: Some(GracefulRestart {
            restart_state: false,
            notification: false,
            restart_time: 120,
            families: vec![GracefulRestartFamily {
                family: Family::IPV4_UNICAST,
                forwarding_state: false,
            }],
        }),
        ..Default::default()
    };
    Open::new(AS, 180, id, caps)
}

/// Runs `body` on a thread inside `ns` with a single-threaded runtime.
pub fn in_netns<T: Send + 'static>(
    ns: &Netns,
    body: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> std::thread::JoinHandle<anyhow::Result<T>> {
    let path = format!("/run/netns/{}", ns.name());
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: setns(2) on a valid namespace descriptor; only this
        // thread moves.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(rt.block_on(body()))
    })
}

/// A generator session: connected, OPENs and KEEPALIVEs exchanged.
pub struct GenSession {
    pub stream: TcpStream,
    framer: Framer,
}

impl GenSession {
    /// Connects from `local` to `dut:179` and completes the handshake,
    /// retrying every second (a short connect-retry, as in our tests) until
    /// `deadline`: a speaker may refuse or reset connections while it
    /// starts or while its listen queue is full.
    pub async fn open(
        local: Ipv4Addr,
        dut: Ipv4Addr,
        deadline: Instant,
    ) -> anyhow::Result<GenSession> {
        loop {
            match GenSession::try_open(local, dut, deadline).await {
                Ok(s) => return Ok(s),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    async fn try_open(
        local: Ipv4Addr,
        dut: Ipv4Addr,
        deadline: Instant,
    ) -> anyhow::Result<GenSession> {
        let stream = loop {
            let s = TcpSocket::new_v4()?;
            s.bind(SocketAddr::new(local.into(), 0))?;
            match s.connect(SocketAddr::new(dut.into(), 179)).await {
                Ok(st) => break st,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => bail!("{local} cannot connect to {dut}: {e}"),
            }
        };
        stream.set_nodelay(true)?;
        let mut g = GenSession {
            stream,
            framer: Framer::new(),
        };
        let ctx = SessionContext::new(AS, AS);
        g.stream
            .write_all(&encode_to_vec(&Message::Open(generator_open(local)), &ctx)?)
            .await?;
        g.until(MessageType::Open).await?;
        g.stream
            .write_all(&encode_to_vec(&Message::Keepalive, &ctx)?)
            .await?;
        g.until(MessageType::Keepalive).await?;
        Ok(g)
    }

    /// Reads until a message of `kind` (returns its body).
    pub async fn until(&mut self, kind: MessageType) -> anyhow::Result<bytes::Bytes> {
        let mut buf = vec![0u8; 65536];
        loop {
            while let Some(f) = self
                .framer
                .next_frame()
                .map_err(|e| anyhow::anyhow!("speaker sent garbage: {e}"))?
            {
                if f.message_type == MessageType::Notification {
                    bail!("speaker sent NOTIFICATION {:?}", &f.body[..]);
                }
                if f.message_type == kind {
                    return Ok(f.body);
                }
            }
            let n = self.stream.read(&mut buf).await?;
            if n == 0 {
                bail!("speaker closed the session");
            }
            self.framer.push(&buf[..n]);
        }
    }

    /// Reads until the speaker's IPv4 End-of-RIB (an empty UPDATE).
    pub async fn until_end_of_rib(&mut self) -> anyhow::Result<()> {
        loop {
            let body = self.until(MessageType::Update).await?;
            // Withdrawn length 0 and attribute length 0: End-of-RIB.
            if body.len() == 4 && body.iter().all(|&b| b == 0) {
                return Ok(());
            }
        }
    }

    /// Keeps the session alive (reading and discarding, sending
    /// KEEPALIVEs) until `stop` is set.
    pub async fn idle(
        mut self,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> anyhow::Result<()> {
        let ka = encode_to_vec(&Message::Keepalive, &SessionContext::new(AS, AS))?;
        let mut buf = vec![0u8; 65536];
        let mut next_ka = Instant::now();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if Instant::now() >= next_ka {
                self.stream.write_all(&ka).await?;
                next_ka = Instant::now() + Duration::from_secs(10);
            }
            match tokio::time::timeout(Duration::from_millis(100), self.stream.read(&mut buf)).await
            {
                Ok(Ok(0)) => bail!("speaker closed the session"),
                Ok(Err(e)) => bail!("reading from the speaker: {e}"),
                _ => {}
            }
        }
        Ok(())
    }
}

// ------------------------------------------------------------ speakers

/// Which speaker is under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Margay,
    Bird,
    GoBgp,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Margay => "margay-bgpd",
            Kind::Bird => "BIRD 2",
            Kind::GoBgp => "GoBGP",
        }
    }
}

/// A running speaker in a namespace, configured with passive iBGP peers.
pub struct Dut {
    pub kind: Kind,
    pub pid: i32,
    ns: String,
    dir: PathBuf,
}

impl Dut {
    /// Starts `kind` in `ns` at `addr` with passive peers `peers`
    /// (route-reflector clients when `rr`).
    pub fn start(
        kind: Kind,
        ns: &Netns,
        dir: &Path,
        addr: Ipv4Addr,
        peers: &[Ipv4Addr],
        rr: bool,
    ) -> anyhow::Result<Dut> {
        std::fs::create_dir_all(dir)?;
        let log = dir.join("speaker.log");
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns.name()]);
        match kind {
            Kind::Margay => {
                let mut y =
                    format!("router_id: {addr}\nas: {AS}\nlisten: [\"{addr}:179\"]\npeers:\n");
                for p in peers {
                    let _ = writeln!(
                        y,
                        "  - {{ address: {p}, as: {AS}, passive: true, route_reflector_client: {rr} }}"
                    );
                }
                let conf = dir.join("margay.yaml");
                std::fs::write(&conf, y)?;
                let bin = margay_lab::binaries::require("margay-bgpd")?;
                c.arg(bin)
                    .arg("--config")
                    .arg(&conf)
                    .arg("--control")
                    .arg(dir.join("margay.sock"))
                    .args(["--log", "warn"]);
            }
            Kind::Bird => {
                let mut b = format!(
                    "router id {addr};\nlog stderr {{ warning, error, auth, remote, fatal, info }};\nprotocol device {{ }}\n"
                );
                for (i, p) in peers.iter().enumerate() {
                    let _ = writeln!(
                        b,
                        "protocol bgp p{i} {{ local {addr} as {AS}; neighbor {p} as {AS}; passive on; direct; {}\n  ipv4 {{ import all; export all; }}; }}",
                        if rr { "rr client;" } else { "" }
                    );
                }
                let conf = dir.join("bird.conf");
                std::fs::write(&conf, b)?;
                c.args(["bird", "-f", "-c"])
                    .arg(&conf)
                    .arg("-s")
                    .arg(dir.join("bird.ctl"));
            }
            Kind::GoBgp => {
                let mut t = format!(
                    "[global.config]\n  as = {AS}\n  router-id = \"{addr}\"\n  local-address-list = [\"{addr}\"]\n"
                );
                for p in peers {
                    let _ = write!(
                        t,
                        "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{p}\"\n    peer-as = {AS}\n  \
                         [neighbors.transport.config]\n    passive-mode = true\n  \
                         [neighbors.graceful-restart.config]\n    enabled = true\n  \
                         [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n    \
                         [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n"
                    );
                    if rr {
                        let _ = write!(
                            t,
                            "  [neighbors.route-reflector.config]\n    route-reflector-client = true\n    route-reflector-cluster-id = \"{addr}\"\n"
                        );
                    }
                }
                let conf = dir.join("gobgpd.toml");
                std::fs::write(&conf, t)?;
                c.args(["gobgpd", "-f"]).arg(&conf).args([
                    "--api-hosts",
                    "127.0.0.1:50051",
                    "-l",
                    "warn",
                    "-p",
                    "--pprof-disable",
                ]);
            }
        }
        let pid = process::spawn_daemon(&mut c, &log)
            .with_context(|| format!("starting {}", kind.label()))?;
        Ok(Dut {
            kind,
            pid,
            ns: ns.name().to_string(),
            dir: dir.to_path_buf(),
        })
    }

    /// IPv4 routes in the speaker's table (`None` while it cannot say).
    pub fn routes(&self) -> Option<u64> {
        match self.kind {
            Kind::Margay => {
                let req = serde_json::json!({"command": "peers"}).to_string() + "\n";
                let mut s =
                    std::os::unix::net::UnixStream::connect(self.dir.join("margay.sock")).ok()?;
                use std::io::{BufRead, Write};
                s.write_all(req.as_bytes()).ok()?;
                let mut line = String::new();
                std::io::BufReader::new(s).read_line(&mut line).ok()?;
                let v: serde_json::Value = serde_json::from_str(&line).ok()?;
                let peers = v["peers"].as_array()?;
                Some(
                    peers
                        .iter()
                        .map(|p| p["prefixes"]["accepted"][0].as_u64().unwrap_or(0))
                        .sum(),
                )
            }
            Kind::Bird => {
                let out = cmd::run(
                    Command::new("birdc")
                        .arg("-s")
                        .arg(self.dir.join("bird.ctl"))
                        .args(["show", "route", "count"]),
                )
                .ok()?;
                // "1000000 of 1000000 routes for 1000000 networks in table master4"
                let line = out.lines().find(|l| l.contains("routes for"))?;
                line.split_whitespace().next()?.parse().ok()
            }
            Kind::GoBgp => {
                let out = cmd::run(Command::new("ip").args([
                    "netns", "exec", &self.ns, "gobgp", "global", "rib", "summary", "-a", "ipv4",
                ]))
                .ok()?;
                // "Table ipv4-unicast\nDestination: 1000000, Path: 1000000"
                let rest = out.split("Destination:").nth(1)?;
                rest.split(',').next()?.trim().parse().ok()
            }
        }
    }

    /// True when the speaker has all `n` peers configured and waiting for
    /// their connections.
    pub fn peers_ready(&self, n: usize) -> bool {
        match self.kind {
            Kind::Margay => {
                let req = serde_json::json!({"command": "peers"}).to_string() + "\n";
                let Ok(mut s) =
                    std::os::unix::net::UnixStream::connect(self.dir.join("margay.sock"))
                else {
                    return false;
                };
                use std::io::{BufRead, Write};
                if s.write_all(req.as_bytes()).is_err() {
                    return false;
                }
                let mut line = String::new();
                if std::io::BufReader::new(s).read_line(&mut line).is_err() {
                    return false;
                }
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                v["peers"].as_array().is_some_and(|a| a.len() == n)
            }
            Kind::Bird => cmd::run(
                Command::new("birdc")
                    .arg("-s")
                    .arg(self.dir.join("bird.ctl"))
                    .args(["show", "protocols"]),
            )
            .is_ok_and(|out| out.lines().filter(|l| l.contains("Passive")).count() == n),
            Kind::GoBgp => cmd::run(
                Command::new("ip").args(["netns", "exec", &self.ns, "gobgp", "-j", "neighbor"]),
            )
            .ok()
            .and_then(|out| serde_json::from_str::<serde_json::Value>(&out).ok())
            .is_some_and(|v| v.as_array().is_some_and(|a| a.len() == n)),
        }
    }

    /// Resident and peak resident memory, bytes.
    pub fn memory(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .with_context(|| format!("{} (pid {}) is gone", self.kind.label(), self.pid))?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }

    /// The speaker's own view and its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.dir.join("speaker.log")).unwrap_or_default();
        let v: Vec<&str> = s.lines().collect();
        let view = match self.kind {
            Kind::Margay => String::new(),
            Kind::Bird => cmd::run(
                Command::new("birdc")
                    .arg("-s")
                    .arg(self.dir.join("bird.ctl"))
                    .args(["show", "protocols", "all", "p0"]),
            )
            .unwrap_or_else(|e| e.to_string()),
            Kind::GoBgp => {
                cmd::run(Command::new("ip").args(["netns", "exec", &self.ns, "gobgp", "neighbor"]))
                    .unwrap_or_else(|e| e.to_string())
            }
        };
        format!("{view}\n{}", v[v.len().saturating_sub(20)..].join("\n"))
    }
}

impl Drop for Dut {
    fn drop(&mut self) {
        process::terminate(&[self.pid], Duration::from_secs(5));
    }
}
