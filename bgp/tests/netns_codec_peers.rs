//! The codec against real BGP speakers: GoBGP, BIRD 2 and FRR each run in a
//! network namespace of their own, joined by a veth pair to a second
//! namespace where a minimal blocking session built only from the codec
//! connects to them. It exchanges OPENs (4-octet AS behind AS_TRANS,
//! multiprotocol IPv4/IPv6, route refresh, graceful restart), decodes the
//! daemon's UPDATEs, and announces IPv4 and IPv6 routes whose attributes
//! (AS path, MED, communities, large communities) the daemon must then
//! show. No packet leaves the two namespaces.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use margay_bgp::codec::*;
use margay_lab::netns::{self, NetnsGuard};

const OUR_AS: u32 = 4_200_000_001;
const DAEMON_AS: u32 = 65001;
const OUR_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);
const DAEMON_ADDR: &str = "10.255.0.1";
const OUR_ADDR: &str = "10.255.0.2";

/// Two network namespaces joined by a veth pair: the daemon's
/// (10.255.0.1, fd00:99::1) and ours (10.255.0.2, fd00:99::2). The lab's
/// guards remove both on drop, after stopping every process inside them
/// (daemons that forked included); our children are reaped first.
struct Netns {
    // Children before the guards: fields drop in order.
    children: Vec<Child>,
    daemon_ns: NetnsGuard,
    client_ns: NetnsGuard,
    dir: tempfile::TempDir,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let guard = |side: &str| {
            NetnsGuard::create_unique(&format!("mgy-codec-{tag}-{side}")).expect("namespace")
        };
        let ns = Netns {
            children: Vec::new(),
            daemon_ns: guard("d"),
            client_ns: guard("c"),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        netns::veth(&ns.daemon_ns, "mgy0", &ns.client_ns, "mgy1").expect("veth pair");
        for (side, dev, v4, v6) in [
            (&ns.daemon_ns, "mgy0", "10.255.0.1/24", "fd00:99::1/64"),
            (&ns.client_ns, "mgy1", "10.255.0.2/24", "fd00:99::2/64"),
        ] {
            side.ip(&["addr", "add", v4, "dev", dev])
                .expect("IPv4 address");
            side.ip(&["addr", "add", v6, "dev", dev, "nodad"])
                .expect("IPv6 address");
        }
        ns
    }

    /// A command run inside the daemon's namespace.
    fn cmd(&self, program: &str) -> Command {
        self.daemon_ns.command(program)
    }

    fn spawn(&mut self, mut cmd: Command, log: &str) {
        let out = std::fs::File::create(self.dir.path().join(log)).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn daemon");
        self.children.push(child);
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn log(&self, file: &str) -> String {
        std::fs::read_to_string(self.path(file)).unwrap_or_default()
    }

    /// Runs `f` as the client, on a thread that has entered our namespace.
    fn as_client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let name = self.client_ns.name().to_string();
        std::thread::spawn(move || {
            margay_lab::probe::enter_netns(&name).expect("entering the client namespace");
            f()
        })
        .join()
        .expect("namespace thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A blocking BGP session driven by the codec alone.
struct Session {
    stream: TcpStream,
    framer: Framer,
    ctx: SessionContext,
}

impl Session {
    fn connect(deadline: Instant) -> Session {
        loop {
            match TcpStream::connect((DAEMON_ADDR, 179)) {
                Ok(stream) => {
                    return Session {
                        stream,
                        framer: Framer::new(),
                        ctx: SessionContext::new(OUR_AS, DAEMON_AS),
                    };
                }
                // Not listening yet: poll again shortly, up to the deadline.
                Err(_) if Instant::now() < deadline => {
                    std::thread::park_timeout(Duration::from_millis(50))
                }
                Err(e) => panic!("daemon never listened on {DAEMON_ADDR}:179: {e}"),
            }
        }
    }

    fn send(&mut self, msg: &Message) {
        let bytes = encode_to_vec(msg, &self.ctx).expect("encodes");
        self.stream.write_all(&bytes).expect("send");
    }

    fn recv(&mut self, deadline: Instant) -> Frame {
        let mut buf = [0u8; 4096];
        loop {
            match self.framer.next_frame() {
                Ok(Some(frame)) => return frame,
                Ok(None) => {}
                Err(e) => panic!("framing error from the daemon: {e}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for the daemon");
            self.stream.set_read_timeout(Some(left)).expect("timeout");
            let n = self.stream.read(&mut buf).expect("read");
            assert!(n > 0, "daemon closed the connection");
            self.framer.push(&buf[..n]);
        }
    }
}

fn our_open() -> Open {
    Open::new(
        OUR_AS,
        90,
        OUR_ID,
        Capabilities {
            multiprotocol: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
            route_refresh: true,
            enhanced_route_refresh: true,
            graceful_restart: Some(GracefulRestart {
                restart_time: 120,
                families: vec![
                    GracefulRestartFamily {
                        family: Family::IPV4_UNICAST,
                        forwarding_state: false,
                    },
                    GracefulRestartFamily {
                        family: Family::IPV6_UNICAST,
                        forwarding_state: false,
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}

fn our_attributes() -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence([OUR_AS])),
        next_hop: Some(Ipv4Addr::new(10, 255, 0, 2)),
        med: Some(7),
        communities: vec![Community::new(65001, 7)],
        large_communities: vec![LargeCommunity {
            global: OUR_AS,
            local1: 1,
            local2: 2,
        }],
        ..Default::default()
    }
}

const OUR_V4: &str = "10.99.0.0/24";
const OUR_V6: &str = "2001:db8:99::/48";

/// What the session saw from the daemon.
#[derive(Debug, Default)]
struct Learned {
    open: Option<Open>,
    routes: Vec<(Prefix, PathAttributes)>,
    end_of_rib: Vec<Family>,
}

/// Brings the session up, announces our routes, and collects the daemon's
/// until `want` prefixes are in; then runs `check` (with the session still
/// up) and closes with a Cease / Administrative Shutdown.
fn exchange(want: &'static [&'static str], check: impl FnOnce() + Send + 'static) -> Learned {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut s = Session::connect(deadline);
    let ours = our_open();
    s.send(&Message::Open(ours.clone()));
    let frame = s.recv(deadline);
    assert_eq!(
        frame.message_type,
        MessageType::Open,
        "expected OPEN, got {frame:?}"
    );
    let check_open = OpenCheck {
        local_as: OUR_AS,
        local_id: OUR_ID,
        peer_as: Some(DAEMON_AS),
    };
    let theirs = decode_open(&frame.body, &check_open).expect("daemon's OPEN is valid");
    s.ctx = SessionContext::negotiate(&ours, &theirs);
    assert!(s.ctx.four_octet_as);
    assert!(
        s.ctx.has_family(Family::IPV4_UNICAST) && s.ctx.has_family(Family::IPV6_UNICAST),
        "{:?}",
        s.ctx
    );
    s.send(&Message::Keepalive);

    let attrs = our_attributes();
    s.send(&Message::Update(Update {
        attributes: attrs.clone(),
        nlri: vec![OUR_V4.parse().unwrap()],
        ..Default::default()
    }));
    let v6 = MpReach {
        family: Family::IPV6_UNICAST,
        next_hop: NextHop::V6 {
            global: "fd00:99::2".parse::<Ipv6Addr>().unwrap(),
            link_local: None,
        },
        nlri: vec![OUR_V6.parse().unwrap()],
    };
    s.send(&Message::Update(Update {
        attributes: PathAttributes {
            next_hop: None,
            ..attrs
        },
        mp_reach: Some(v6),
        ..Default::default()
    }));
    s.send(&Message::Update(Update::end_of_rib(Family::IPV4_UNICAST)));
    s.send(&Message::Update(Update::end_of_rib(Family::IPV6_UNICAST)));

    let mut learned = Learned {
        open: Some(theirs),
        ..Default::default()
    };
    let want: Vec<Prefix> = want.iter().map(|p| p.parse().unwrap()).collect();
    while !want
        .iter()
        .all(|w| learned.routes.iter().any(|(p, _)| p == w))
    {
        let frame = s.recv(deadline);
        match decode_message(&frame, &s.ctx) {
            Ok(Received::Keepalive) => s.send(&Message::Keepalive),
            Ok(Received::Update(d)) => {
                assert_eq!(
                    d.disposition,
                    Disposition::Accept,
                    "daemon's UPDATE: {:?}",
                    d.faults
                );
                if let Some(f) = d.update.end_of_rib_family() {
                    learned.end_of_rib.push(f);
                }
                for reach in d.update.reach() {
                    for p in reach.prefixes {
                        learned.routes.push((*p, d.update.attributes.clone()));
                    }
                }
            }
            Ok(other) => panic!("unexpected message from the daemon: {other:?}"),
            Err(e) => panic!("daemon sent something we reject: {e}"),
        }
    }
    check();
    s.send(&Message::Notification(Notification::shutdown(
        CeaseSubcode::AdministrativeShutdown,
        "codec test done",
    )));
    learned
}

fn assert_learned(learned: &Learned, v4: &str, v6: &str) {
    let open = learned.open.as_ref().unwrap();
    assert_eq!(open.asn(), DAEMON_AS);
    for want in [v4, v6] {
        let p: Prefix = want.parse().unwrap();
        let (_, attrs) = learned.routes.iter().find(|(q, _)| *q == p).unwrap();
        assert_eq!(
            attrs.as_path.as_ref().and_then(|a| a.first_asn()),
            Some(DAEMON_AS),
            "{want}: {attrs:?}"
        );
        assert!(attrs.origin.is_some());
    }
}

/// Polls `probe` until it returns true (then true) or 30 s pass (false).
fn poll(mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !probe() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
    true
}

/// Polls `probe` until it returns true; fails the test after 30 s.
fn eventually(what: &str, probe: impl FnMut() -> bool) {
    assert!(poll(probe), "timed out: {what}");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write config");
}

#[test]
fn gobgp_exchanges_routes_with_the_codec() {
    let mut ns = Netns::new("gobgp");
    let conf = ns.path("gobgpd.toml");
    write(
        &conf,
        &format!(
            r#"[global.config]
  as = {DAEMON_AS}
  router-id = "10.0.0.1"
  port = 179
  local-address-list = ["{DAEMON_ADDR}"]

[[neighbors]]
  [neighbors.config]
    neighbor-address = "{OUR_ADDR}"
    peer-as = {OUR_AS}
  [neighbors.transport.config]
    passive-mode = true
    local-address = "{DAEMON_ADDR}"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
"#
        ),
    );
    let mut cmd = ns.cmd("gobgpd");
    cmd.args([
        "-f",
        conf.to_str().unwrap(),
        "--api-hosts",
        "127.0.0.1:50051",
        "-p",
    ]);
    ns.spawn(cmd, "gobgpd.log");
    let daemon_ns = ns.daemon_ns.name().to_string();
    let gobgp = move |args: &[&str]| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &daemon_ns, "gobgp"]).args(args);
        c
    };
    let (v4, v6) = ("10.20.0.0/24", "2001:db8:20::/48");
    let log_path = ns.path("gobgpd.log");
    let learned = ns.as_client(move || {
        eventually("gobgpd API", || {
            gobgp(&["global"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        run(&mut gobgp(&[
            "global",
            "rib",
            "add",
            v4,
            "community",
            "65001:20",
        ]));
        run(&mut gobgp(&[
            "global",
            "rib",
            "-a",
            "ipv6",
            "add",
            v6,
            "nexthop",
            "2001:db8::20",
        ]));
        let log_path = log_path.clone();
        exchange(&["10.20.0.0/24", "2001:db8:20::/48"], move || {
            let mut last = String::new();
            let found = poll(|| {
                let out = gobgp(&["-j", "neighbor", OUR_ADDR, "adj-in", "-a", "ipv4"]).output();
                let Ok(out) = out else { return false };
                last = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                last.contains("10.99.0.0/24")
            });
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            assert!(
                found,
                "GoBGP never showed our IPv4 route; adj-in: {last}\n{log}"
            );
            let log_path = log_path.clone();
            // The text view (GoBGP 3.10's JSON adj-in omits the path list).
            let text = run(&mut gobgp(&["neighbor", OUR_ADDR, "adj-in", "-a", "ipv4"]));
            for want in [
                OUR_AS.to_string(),
                "Med: 7".into(),
                "65001:7".into(),
                "4200000001:1:2".into(),
            ] {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                assert!(
                    text.contains(&want),
                    "GoBGP adj-in lacks {want:?}:\n{text}\n{log}"
                );
            }
            eventually("GoBGP shows our IPv6 route", || {
                gobgp(&["-j", "neighbor", OUR_ADDR, "adj-in", "-a", "ipv6"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("2001:db8:99::/48"))
            });
        })
    });
    assert_learned(&learned, v4, v6);
    let route = learned
        .routes
        .iter()
        .find(|(p, _)| p.to_string() == v4)
        .unwrap();
    assert!(
        route.1.communities.contains(&Community::new(65001, 20)),
        "{:?}\n{}",
        route.1,
        ns.log("gobgpd.log")
    );
}

#[test]
fn bird_exchanges_routes_with_the_codec() {
    let mut ns = Netns::new("bird");
    let conf = ns.path("bird.conf");
    let ctl = ns.path("bird.ctl");
    write(
        &conf,
        &format!(
            r#"log "{log}" all;
router id 10.0.0.1;
protocol device {{}}
protocol static s4 {{
  ipv4;
  route 10.30.0.0/24 blackhole {{ bgp_community.add((65001,30)); }};
}}
protocol static s6 {{
  ipv6;
  route 2001:db8:30::/48 blackhole;
}}
protocol bgp margay {{
  local {DAEMON_ADDR} as {DAEMON_AS};
  neighbor {OUR_ADDR} as {OUR_AS};
  passive on;
  ipv4 {{ import all; export where source = RTS_STATIC; }};
  ipv6 {{ import all; export where source = RTS_STATIC; next hop address fd00:99::1; }};
}}
"#,
            log = ns.path("bird.log").display()
        ),
    );
    let mut cmd = ns.cmd("bird");
    cmd.args([
        "-f",
        "-c",
        conf.to_str().unwrap(),
        "-s",
        ctl.to_str().unwrap(),
        "-P",
    ]);
    cmd.arg(ns.path("bird.pid"));
    ns.spawn(cmd, "bird.out");
    let (v4, v6) = ("10.30.0.0/24", "2001:db8:30::/48");
    let birdc = move |args: &[&str]| {
        let mut c = Command::new("birdc");
        c.arg("-s").arg(&ctl).args(args);
        c
    };
    let learned = ns.as_client(move || {
        exchange(&["10.30.0.0/24", "2001:db8:30::/48"], move || {
            let mut last = String::new();
            let found = poll(|| {
                let Ok(out) = birdc(&["show", "route", OUR_V4, "all"]).output() else {
                    return false;
                };
                last = String::from_utf8_lossy(&out.stdout).into_owned();
                last.contains("BGP.as_path")
            });
            assert!(found, "BIRD never showed our IPv4 route: {last}");
            for want in [
                "BGP.as_path: 4200000001",
                "BGP.med: 7",
                "(65001,7)",
                "(4200000001, 1, 2)",
            ] {
                assert!(last.contains(want), "BIRD's route lacks {want:?}:\n{last}");
            }
            let mut last6 = String::new();
            let found = poll(|| {
                let Ok(out) = birdc(&["show", "route", OUR_V6, "all"]).output() else {
                    return false;
                };
                last6 = String::from_utf8_lossy(&out.stdout).into_owned();
                last6.contains("BGP.as_path: 4200000001")
            });
            assert!(found, "BIRD never showed our IPv6 route: {last6}");
        })
    });
    assert_learned(&learned, v4, v6);
    let route = learned
        .routes
        .iter()
        .find(|(p, _)| p.to_string() == v4)
        .unwrap();
    assert!(
        route.1.communities.contains(&Community::new(65001, 30)),
        "{:?}\n{}",
        route.1,
        ns.log("bird.log")
    );
}

#[test]
fn frr_exchanges_routes_with_the_codec() {
    let mut ns = Netns::new("frr");
    let conf = ns.path("frr.conf");
    write(
        &conf,
        &format!(
            r#"hostname codec-test
log file {log}
route-map tag permit 10
 set community 65001:40
!
router bgp {DAEMON_AS}
 bgp router-id 10.0.0.1
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor {OUR_ADDR} remote-as {OUR_AS}
 neighbor {OUR_ADDR} passive
 address-family ipv4 unicast
  network 10.40.0.0/24 route-map tag
 exit-address-family
 address-family ipv6 unicast
  network 2001:db8:40::/48
  neighbor {OUR_ADDR} activate
 exit-address-family
!
"#,
            log = ns.path("bgpd.log").display()
        ),
    );
    let dir = ns.dir.path().to_path_buf();
    // bgpd runs as user frr: it needs the directory (config, pid, vty socket).
    run(Command::new("chown").arg("-R").arg("frr:frr").arg(&dir));
    let mut cmd = ns.cmd("/usr/lib/frr/bgpd");
    cmd.args([
        "-Z",
        "-P",
        "0",
        "-l",
        DAEMON_ADDR,
        "-f",
        conf.to_str().unwrap(),
    ]);
    cmd.arg("-i")
        .arg(dir.join("bgpd.pid"))
        .arg("--vty_socket")
        .arg(&dir);
    ns.spawn(cmd, "bgpd.out");
    let (v4, v6) = ("10.40.0.0/24", "2001:db8:40::/48");
    let vtysh = move |command: &str| {
        let mut c = Command::new("vtysh");
        c.arg("--vty_socket")
            .arg(&dir)
            .args(["-d", "bgpd", "-c", command]);
        c
    };
    let learned = ns.as_client(move || {
        exchange(&["10.40.0.0/24", "2001:db8:40::/48"], move || {
            let mut last = String::new();
            let found = poll(|| {
                let Ok(out) = vtysh(&format!("show bgp ipv4 unicast {OUR_V4} json")).output()
                else {
                    return false;
                };
                last = String::from_utf8_lossy(&out.stdout).into_owned();
                last.contains("\"paths\"")
            });
            assert!(found, "FRR never showed our IPv4 route: {last}");
            let json: serde_json::Value = serde_json::from_str(&last).expect("FRR JSON");
            let path = &json["paths"][0];
            assert_eq!(path["aspath"]["string"], "4200000001", "{last}");
            assert_eq!(path["metric"], 7, "{last}");
            assert_eq!(path["community"]["string"], "65001:7", "{last}");
            assert_eq!(path["largeCommunity"]["string"], "4200000001:1:2", "{last}");
            let mut last6 = String::new();
            let found = poll(|| {
                let Ok(out) = vtysh(&format!("show bgp ipv6 unicast {OUR_V6} json")).output()
                else {
                    return false;
                };
                last6 = String::from_utf8_lossy(&out.stdout).into_owned();
                last6.contains("4200000001")
            });
            assert!(found, "FRR never showed our IPv6 route: {last6}");
        })
    });
    assert_learned(&learned, v4, v6);
    let route = learned
        .routes
        .iter()
        .find(|(p, _)| p.to_string() == v4)
        .unwrap();
    assert!(
        route.1.communities.contains(&Community::new(65001, 40)),
        "{:?}\n{}",
        route.1,
        ns.log("bgpd.log")
    );
}
