//! Shared harness of the interop tests: a LAN of network namespaces and
//! the daemons that run in them (margay-bgpd, BIRD 2, FRR, GoBGP), with
//! polling helpers whose failures show each daemon's own view.
//!
//! Topology: a hub namespace holds a bridge; node `i` has `eth0` on it
//! with 10.0.0.(i+1)/24 and fd00::(i+1)/64. Every node is one hop from
//! every other, as a rack of nodes on one segment. Namespaces are unique
//! per test and removed on drop (processes inside are killed first).

#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use margay_bgp::daemon::{DaemonConfig, Request, Response};
use margay_bgp::{PeerConfig, PeerStatus, RouteQuery, RouteView};
use margay_lab::netns::{NetnsGuard, veth};
use margay_lab::{cmd, process};

/// Deadline for anything that involves sessions coming up on a loaded
/// CI box.
pub const SLOW: Duration = Duration::from_secs(90);

/// Polls `f` every 200 ms until it returns `Ok`, or panics after `limit`
/// with its last error and `diag()` (the daemons' own views).
/// Waits until a daemon's best path for a prefix (its JSON, from `best`)
/// carries the graceful-restart stale mark, or no longer does.
pub fn wait_peer_stale(
    what: &str,
    stale: bool,
    best: impl Fn() -> Result<serde_json::Value, String>,
    diag: impl Fn() -> String,
) {
    wait(
        what,
        SLOW,
        || {
            let p = best()?;
            if (p["stale"] == true) == stale {
                Ok(())
            } else {
                Err(p.to_string())
            }
        },
        diag,
    );
}

pub fn wait<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Result<T, String>,
    diag: impl Fn() -> String,
) -> T {
    let end = Instant::now() + limit;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= end => {
                panic!(
                    "timed out after {limit:?} waiting for {what}\nlast check: {e}\n\n{}",
                    diag()
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

pub fn run(c: &mut Command) -> String {
    match cmd::output(c) {
        Ok(o) => {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            if !o.status.success() {
                let _ = write!(
                    s,
                    "\n[{} exited {}: {}]",
                    cmd::describe(c),
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                );
            }
            s
        }
        Err(e) => format!("[{e}]"),
    }
}

/// One node of the LAN.
pub struct Node {
    pub ns: NetnsGuard,
    pub index: usize,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    /// Scratch directory for this node's daemons.
    pub dir: PathBuf,
}

impl Node {
    pub fn name(&self) -> &str {
        self.ns.name()
    }
}

/// The LAN. Field order is drop order: nodes (and their daemons) first.
pub struct Lab {
    pub nodes: Vec<Node>,
    hub: NetnsGuard,
    pub dir: tempfile::TempDir,
}

pub fn v4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, (i + 1) as u8)
}

pub fn v6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, (i + 1) as u16)
}

impl Lab {
    pub fn new(tag: &str, n: usize) -> Lab {
        let dir = tempfile::Builder::new()
            .prefix(&format!("margay-{tag}-"))
            .tempdir()
            .expect("temp dir");
        let hub = NetnsGuard::create_unique(&format!("mb{tag}h")).expect("hub namespace");
        hub.ip(&["link", "add", "br0", "type", "bridge"])
            .expect("bridge");
        hub.ip(&["link", "set", "br0", "up"]).expect("bridge up");
        let mut nodes = Vec::new();
        for i in 0..n {
            let ns = NetnsGuard::create_unique(&format!("mb{tag}{i}")).expect("node namespace");
            // No DAD: addresses must be usable at once.
            ns.sysctls(&[
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
            ])
            .expect("sysctls");
            let port = format!("p{i}");
            veth(&ns, "eth0", &hub, &port).expect("veth");
            hub.ip(&["link", "set", &port, "master", "br0"])
                .expect("enslave");
            ns.ip(&["addr", "add", &format!("{}/24", v4(i)), "dev", "eth0"])
                .expect("v4 address");
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{}/64", v6(i)),
                "dev",
                "eth0",
                "nodad",
            ])
            .expect("v6 address");
            let d = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&d).expect("node dir");
            nodes.push(Node {
                ns,
                index: i,
                v4: v4(i),
                v6: v6(i),
                dir: d,
            });
        }
        Lab { nodes, hub, dir }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------- margay

/// A margay-bgpd process in a node.
pub struct Margay {
    pub ns: String,
    pub config: PathBuf,
    pub control: PathBuf,
    pub log: PathBuf,
    pid: Option<i32>,
}

pub fn margay_config(node: &Node, asn: u32) -> DaemonConfig {
    DaemonConfig {
        router_id: node.v4,
        asn,
        listen: vec![
            format!("{}:179", node.v4).parse().expect("addr"),
            format!("[{}]:179", node.v6).parse().expect("addr"),
        ],
        cluster_id: None,
        multipath: false,
        graceful_restart: Default::default(),
        peers: Vec::new(),
        announce: Vec::new(),
    }
}

/// A peer with the short timers the tests use.
pub fn fast_peer(addr: impl Into<IpAddr>, asn: u32) -> PeerConfig {
    let mut p = PeerConfig::new(addr.into(), asn);
    p.hold_time = 9;
    p.connect_retry_time = 1;
    p
}

pub fn announcement(prefix: &str) -> margay_bgp::daemon::Announcement {
    margay_bgp::daemon::Announcement {
        prefix: prefix.parse().expect("prefix"),
        next_hop: None,
        origin: None,
        med: None,
        local_pref: None,
        communities: Vec::new(),
        large_communities: Vec::new(),
    }
}

impl Margay {
    pub fn start(node: &Node, cfg: &DaemonConfig) -> Margay {
        let config = node.dir.join("margay.yaml");
        let yaml = serde_saphyr::to_string(cfg).expect("config yaml");
        std::fs::write(&config, yaml).expect("write config");
        let mut m = Margay {
            ns: node.name().to_string(),
            config,
            control: node.dir.join("margay.sock"),
            log: node.dir.join("margay.log"),
            pid: None,
        };
        m.spawn(&[]);
        m
    }

    fn spawn(&mut self, extra: &[&str]) {
        let _ = std::fs::remove_file(&self.control);
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns])
            .arg(env!("CARGO_BIN_EXE_margay-bgpd"))
            .arg("--config")
            .arg(&self.config)
            .arg("--control")
            .arg(&self.control)
            .args(["--log", "margay_bgp=debug,margay_bgpd=debug"])
            .args(extra);
        let pid = process::spawn_daemon(&mut c, &self.log).expect("start margay-bgpd");
        self.pid = Some(pid);
        let control = self.control.clone();
        wait(
            "margay-bgpd control socket",
            SLOW,
            || {
                if control.exists() {
                    Ok(())
                } else {
                    Err("no socket yet".into())
                }
            },
            || tail(&self.log, 40),
        );
    }

    /// SIGKILL: sockets close without a NOTIFICATION, as in a crash.
    pub fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            // SAFETY: kill(2) with a pid we started; no memory involved.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            let end = Instant::now() + Duration::from_secs(10);
            while process::alive(pid) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGHUP: re-read the config file.
    pub fn reload(&self) {
        if let Some(pid) = self.pid {
            // SAFETY: kill(2) on a pid we started.
            unsafe {
                libc::kill(pid, libc::SIGHUP);
            }
        }
    }

    pub fn restart(&mut self, extra: &[&str]) {
        self.kill();
        self.spawn(extra);
    }

    pub fn request(&self, req: &Request) -> Result<Response, String> {
        let mut s = UnixStream::connect(&self.control).map_err(|e| format!("control: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .map_err(|e| e.to_string())?;
        let mut line = serde_json::to_string(req).map_err(|e| e.to_string())?;
        line.push('\n');
        s.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
        let mut answer = String::new();
        BufReader::new(s)
            .read_line(&mut answer)
            .map_err(|e| e.to_string())?;
        match serde_json::from_str(&answer).map_err(|e| format!("{e}: {answer}"))? {
            Response::Error(e) => Err(e),
            r => Ok(r),
        }
    }

    pub fn peers(&self) -> Result<Vec<PeerStatus>, String> {
        match self.request(&Request::Peers)? {
            Response::Peers(p) => Ok(p),
            other => Err(format!("unexpected {other:?}")),
        }
    }

    pub fn peer(&self, addr: impl Into<IpAddr>) -> Result<PeerStatus, String> {
        let a = addr.into();
        self.peers()?
            .into_iter()
            .find(|p| p.address == a)
            .ok_or_else(|| format!("no peer {a}"))
    }

    pub fn routes(&self, query: RouteQuery) -> Result<Vec<RouteView>, String> {
        match self.request(&Request::Routes { query })? {
            Response::Routes(r) => Ok(r),
            other => Err(format!("unexpected {other:?}")),
        }
    }

    /// The best path of `prefix` in the Loc-RIB.
    /// Waits until margay's best path for `prefix` is stale (the peer is
    /// restarting) or fresh again.
    pub fn wait_stale(&self, what: &str, prefix: &str, stale: bool, diag: impl Fn() -> String) {
        wait(
            what,
            SLOW,
            || {
                let r = self.best(prefix)?;
                if r.stale == stale {
                    Ok(())
                } else {
                    Err(format!("{r:?}"))
                }
            },
            diag,
        );
    }

    pub fn best(&self, prefix: &str) -> Result<RouteView, String> {
        self.routes(RouteQuery::LocRib)?
            .into_iter()
            .find(|r| r.prefix.to_string() == prefix && r.best)
            .ok_or_else(|| format!("{prefix} not in margay's Loc-RIB"))
    }

    pub fn announce(&self, prefix: &str) {
        self.request(&Request::Announce(announcement(prefix)))
            .expect("announce");
    }

    pub fn withdraw(&self, prefix: &str) {
        self.request(&Request::Withdraw {
            prefix: prefix.parse().expect("prefix"),
        })
        .expect("withdraw");
    }

    /// Waits until the session with `peer` is Established.
    pub fn wait_established(&self, peer: impl Into<IpAddr>, diag: impl Fn() -> String) {
        let peer = peer.into();
        wait(
            &format!("margay's session with {peer} Established"),
            SLOW,
            || {
                let p = self.peer(peer)?;
                if p.state == margay_bgp::fsm::State::Established {
                    Ok(())
                } else {
                    Err(format!("state {}, last error {:?}", p.state, p.last_error))
                }
            },
            || format!("{}\n{}", self.diag(), diag()),
        );
    }

    pub fn diag(&self) -> String {
        format!(
            "== margay-bgpd peers ==\n{}\n== margay-bgpd routes ==\n{}\n== margay-bgpd log (tail) ==\n{}",
            self.peers()
                .map(|p| margay_bgp::daemon::render::peers(&p))
                .unwrap_or_else(|e| e),
            self.routes(RouteQuery::LocRib)
                .map(|r| margay_bgp::daemon::render::routes(&r))
                .unwrap_or_else(|e| e),
            tail(&self.log, 60)
        )
    }
}

impl Drop for Margay {
    fn drop(&mut self) {
        self.kill();
    }
}

// ------------------------------------------------------------------ BIRD

pub struct Bird {
    pub ns: String,
    pub dir: PathBuf,
    pub sock: PathBuf,
    pub conf: PathBuf,
    pub log: PathBuf,
    pid: Option<i32>,
}

/// The parts of a BIRD config every test uses: device scan, kernel
/// export of BGP routes (so `ip route` shows what BIRD learned), and a
/// static protocol `announce` with the given prefixes.
pub fn bird_base(node: &Node, v4_static: &[&str], v6_static: &[&str]) -> String {
    let mut s = format!(
        "router id {};\nprotocol device {{ scan time 2; }}\n\
         protocol kernel k4 {{ ipv4 {{ export where source = RTS_BGP; }}; learn off; }}\n\
         protocol kernel k6 {{ ipv6 {{ export where source = RTS_BGP; }}; learn off; }}\n",
        node.v4
    );
    s.push_str("protocol static announce4 { ipv4;\n");
    for p in v4_static {
        let _ = writeln!(s, "  route {p} blackhole;");
    }
    s.push_str("}\nprotocol static announce6 { ipv6;\n");
    for p in v6_static {
        let _ = writeln!(s, "  route {p} blackhole;");
    }
    s.push_str("}\n");
    s
}

impl Bird {
    pub fn start(node: &Node, conf: &str) -> Bird {
        let dir = node.dir.clone();
        let b = Bird {
            ns: node.name().to_string(),
            sock: dir.join("bird.ctl"),
            conf: dir.join("bird.conf"),
            log: dir.join("bird.log"),
            dir,
            pid: None,
        };
        let mut b = b;
        std::fs::write(&b.conf, conf).expect("bird.conf");
        let check = run(Command::new("bird").args(["-p", "-c"]).arg(&b.conf));
        assert!(
            !check.contains("exited"),
            "bad BIRD config: {check}\n{conf}"
        );
        b.spawn(&[]);
        b
    }

    pub fn spawn(&mut self, extra: &[&str]) {
        let _ = std::fs::remove_file(&self.sock);
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, "bird", "-f", "-c"])
            .arg(&self.conf)
            .arg("-s")
            .arg(&self.sock)
            .args(extra);
        self.pid = Some(process::spawn_daemon(&mut c, &self.log).expect("start bird"));
        let sock = self.sock.clone();
        wait(
            "BIRD control socket",
            SLOW,
            || {
                if sock.exists() {
                    Ok(())
                } else {
                    Err("no socket".into())
                }
            },
            || tail(&self.log, 30),
        );
    }

    pub fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            // SAFETY: kill(2) on a pid we started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            let end = Instant::now() + Duration::from_secs(10);
            while process::alive(pid) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn birdc(&self, cmd: &str) -> String {
        let mut c = Command::new("birdc");
        c.arg("-s").arg(&self.sock);
        c.args(cmd.split_whitespace());
        run(&mut c)
    }

    /// BGP routes BIRD put in the kernel: (prefix, gateway).
    pub fn kernel_routes(&self, ipv6: bool) -> Vec<(String, String)> {
        let mut c = Command::new("ip");
        if ipv6 {
            c.arg("-6");
        }
        c.args(["-n", &self.ns, "-j", "route", "show", "proto", "bird"]);
        let out = run(&mut c);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        (
                            r["dst"].as_str().unwrap_or_default().to_string(),
                            r["gateway"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `show route all for PREFIX`.
    pub fn route_all(&self, prefix: &str) -> String {
        self.birdc(&format!("show route all for {prefix}"))
    }

    pub fn protocol_up(&self, name: &str) -> Result<(), String> {
        let out = self.birdc(&format!("show protocols {name}"));
        if out.contains("Established") {
            Ok(())
        } else {
            Err(out)
        }
    }

    pub fn diag(&self) -> String {
        format!(
            "== BIRD ({}) protocols ==\n{}\n== BIRD routes ==\n{}\n== BIRD log ==\n{}",
            self.ns,
            self.birdc("show protocols all"),
            self.birdc("show route all"),
            tail(&self.log, 30)
        )
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        self.kill();
    }
}

// ------------------------------------------------------------------- FRR

pub struct Frr {
    pub ns: String,
    pub dir: PathBuf,
}

impl Frr {
    /// Starts zebra and bgpd with `conf` (an frr.conf).
    pub fn start(node: &Node, conf: &str) -> Frr {
        let dir = node.dir.join("frr");
        std::fs::create_dir_all(&dir).expect("frr dir");
        run(Command::new("chown").args(["-R", "frr:frr"]).arg(&dir));
        std::fs::write(dir.join("zebra.conf"), "hostname zebra\n").expect("zebra.conf");
        std::fs::write(dir.join("frr.conf"), conf).expect("frr.conf");
        run(Command::new("chown").args(["-R", "frr:frr"]).arg(&dir));
        let f = Frr {
            ns: node.name().to_string(),
            dir,
        };
        f.spawn_daemon("zebra", "zebra.conf");
        let zserv = f.dir.join("zserv.api");
        wait(
            "zebra's zserv socket",
            SLOW,
            || {
                if zserv.exists() {
                    Ok(())
                } else {
                    Err("none".into())
                }
            },
            || f.logs(),
        );
        f.spawn_daemon("bgpd", "frr.conf");
        wait(
            "bgpd's vty socket",
            SLOW,
            || {
                if f.dir.join("bgpd.vty").exists() {
                    Ok(())
                } else {
                    Err("none".into())
                }
            },
            || f.logs(),
        );
        f
    }

    fn spawn_daemon(&self, name: &str, conf: &str) {
        self.spawn_daemon_with(name, conf, &[]);
    }

    fn spawn_daemon_with(&self, name: &str, conf: &str, extra: &[&str]) {
        let d = &self.dir;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns])
            .arg(format!("/usr/lib/frr/{name}"))
            .arg("-d")
            .arg("-f")
            .arg(d.join(conf))
            .arg("-i")
            .arg(d.join(format!("{name}.pid")))
            .arg("-z")
            .arg(d.join("zserv.api"))
            .arg("--vty_socket")
            .arg(d)
            .args(["-P", "0"])
            .arg("--log")
            .arg(format!("file:{}", d.join(format!("{name}.log")).display()))
            .args(extra);
        let out = run(&mut c);
        assert!(
            !out.contains("exited"),
            "{name} failed to start: {out}\n{}",
            self.logs()
        );
    }

    /// Kills bgpd with SIGKILL (for graceful restart helper tests).
    pub fn kill_bgpd(&self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("bgpd.pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            process::terminate(&[pid], Duration::ZERO);
        }
    }

    /// Restarts a killed bgpd with extra flags (`-K`: graceful restart).
    pub fn restart_bgpd(&self, extra: &[&str]) {
        self.spawn_daemon_with("bgpd", "frr.conf", extra);
    }

    /// Runs configuration commands (`configure terminal` first).
    pub fn configure(&self, lines: &[&str]) -> String {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, "vtysh", "--vty_socket"])
            .arg(&self.dir)
            .args(["-c", "configure terminal"]);
        for l in lines {
            c.args(["-c", l]);
        }
        run(&mut c)
    }

    pub fn vtysh(&self, cmd: &str) -> String {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, "vtysh", "--vty_socket"])
            .arg(&self.dir)
            .args(["-c", cmd]);
        run(&mut c)
    }

    pub fn json(&self, cmd: &str) -> serde_json::Value {
        serde_json::from_str(&self.vtysh(cmd)).unwrap_or_default()
    }

    pub fn peer_established(&self, peer: &str) -> Result<(), String> {
        let v = self.json("show bgp summary json");
        for af in ["ipv4Unicast", "ipv6Unicast"] {
            if v[af]["peers"][peer]["state"] == "Established" {
                return Ok(());
            }
        }
        Err(format!("FRR peer {peer} not Established: {v}"))
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in ["zebra.log", "bgpd.log"] {
            let _ = writeln!(s, "== {n} ==\n{}", tail(&self.dir.join(n), 30));
        }
        s
    }

    pub fn diag(&self) -> String {
        format!(
            "== FRR ({}) summary ==\n{}\n== FRR ipv4 table ==\n{}\n== FRR ipv6 table ==\n{}\n{}",
            self.ns,
            self.vtysh("show bgp summary"),
            self.vtysh("show bgp ipv4 unicast"),
            self.vtysh("show bgp ipv6 unicast"),
            self.logs()
        )
    }
}

// ----------------------------------------------------------------- GoBGP

pub struct GoBgp {
    pub ns: String,
    pub conf: PathBuf,
    pub log: PathBuf,
    pid: Option<i32>,
}

impl GoBgp {
    pub fn start(node: &Node, toml: &str) -> GoBgp {
        let conf = node.dir.join("gobgpd.toml");
        std::fs::write(&conf, toml).expect("gobgpd.toml");
        let mut g = GoBgp {
            ns: node.name().to_string(),
            conf,
            log: node.dir.join("gobgpd.log"),
            pid: None,
        };
        g.spawn(&[]);
        g
    }

    pub fn spawn(&mut self, extra: &[&str]) {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, "gobgpd", "-f"])
            .arg(&self.conf)
            .args([
                "--api-hosts",
                "127.0.0.1:50051",
                "-l",
                "debug",
                "-p",
                "--pprof-disable",
            ])
            .args(extra);
        self.pid = Some(process::spawn_daemon(&mut c, &self.log).expect("start gobgpd"));
        wait(
            "GoBGP API",
            SLOW,
            || {
                let out = self.gobgp(&["global"]);
                if out.contains("AS:") {
                    Ok(())
                } else {
                    Err(out)
                }
            },
            || tail(&self.log, 30),
        );
    }

    pub fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            // SAFETY: kill(2) on a pid we started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            let end = Instant::now() + Duration::from_secs(10);
            while process::alive(pid) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn gobgp(&self, args: &[&str]) -> String {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, "gobgp"]).args(args);
        run(&mut c)
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["-j"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.gobgp(&a)).unwrap_or_default()
    }

    pub fn peer_established(&self, peer: &str) -> Result<(), String> {
        let v = self.json(&["neighbor"]);
        let ok = v.as_array().is_some_and(|a| {
            a.iter()
                .any(|n| n["conf"]["neighbor_address"] == peer && n["state"]["session_state"] == 6)
        });
        if ok {
            Ok(())
        } else {
            Err(format!("GoBGP neighbor {peer}: {v}"))
        }
    }

    /// Paths GoBGP holds for `prefix` in its global RIB.
    pub fn paths(&self, family: &str, prefix: &str) -> Vec<serde_json::Value> {
        let v = self.json(&["global", "rib", "-a", family]);
        v[prefix].as_array().cloned().unwrap_or_default()
    }

    pub fn diag(&self) -> String {
        format!(
            "== GoBGP ({}) neighbors ==\n{}\n== GoBGP ipv4 rib ==\n{}\n== GoBGP ipv6 rib ==\n{}\n== gobgpd log ==\n{}",
            self.ns,
            self.gobgp(&["neighbor"]),
            self.gobgp(&["global", "rib", "-a", "ipv4"]),
            self.gobgp(&["global", "rib", "-a", "ipv6"]),
            tail(&self.log, 30)
        )
    }
}

impl Drop for GoBgp {
    fn drop(&mut self) {
        self.kill();
    }
}
