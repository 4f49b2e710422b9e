//! The VXLAN dataplane module alone against the kernel, in two namespaces of
//! the test's own joined by a veth ("the underlay"): the device is created
//! as asked (VNI 4096, port 4789, local address, no learning, MTU, MAC, VTEP
//! address), peers get a permanent neighbour and an FDB entry, a ping
//! crosses the tunnel (the device counters and the underlay's UDP 4789 show
//! it), a second reconcile changes nothing, wrong state is fixed in place,
//! stale peers are removed, and a device with another VNI is recreated.

use margay_agent::overlay::dataplane::{reconcile_vxlan, remove_vxlan};
use margay_agent::overlay::netlink::OverlayNetlink;
use margay_agent::overlay::nodes::{Mac, Vtep};
use margay_agent::overlay::vxlan::{Peer, VXLAN_PORT, VXLAN_VNI, VxlanDevice};
use margay_lab::netns::{Netns, NetnsGuard, veth};
use std::future::Future;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Runs `f` on a thread inside namespace `ns` with a current-thread runtime.
fn in_netns<T, F, Fut>(ns: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        // SAFETY: setns on a descriptor we own; affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(f())
    })
    .join()
    .expect("netns thread")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

struct Side {
    dev: VxlanDevice,
    peer: Peer,
}

fn sides() -> (Side, Side) {
    let a_mac = Mac::for_node("node-a", 4);
    let b_mac = Mac::for_node("node-b", 4);
    let dev = |local: &str, mac: Mac, vtep: &str| VxlanDevice {
        name: "vxlan.margay".into(),
        vni: VXLAN_VNI,
        port: VXLAN_PORT,
        local: ip(local),
        mtu: 1450,
        mac,
        addr: ip(vtep),
    };
    (
        Side {
            dev: dev("10.0.9.1", a_mac, "10.244.1.0"),
            peer: Peer {
                vtep: Vtep {
                    addr: ip("10.244.2.0"),
                    mac: b_mac,
                },
                node: ip("10.0.9.2"),
            },
        },
        Side {
            dev: dev("10.0.9.2", b_mac, "10.244.2.0"),
            peer: Peer {
                vtep: Vtep {
                    addr: ip("10.244.1.0"),
                    mac: a_mac,
                },
                node: ip("10.0.9.1"),
            },
        },
    )
}

fn reconcile(
    ns: &Netns,
    dev: &VxlanDevice,
    peers: &[Peer],
) -> margay_agent::overlay::dataplane::VxlanChanges {
    let (dev, peers) = (dev.clone(), peers.to_vec());
    in_netns(ns.name(), move || async move {
        let nl = OverlayNetlink::connect().expect("netlink");
        reconcile_vxlan(&nl, &dev, &peers).await.expect("reconcile")
    })
}

fn underlay() -> (NetnsGuard, NetnsGuard) {
    let a = NetnsGuard::create_unique("ovx-a").expect("netns a");
    let b = NetnsGuard::create_unique("ovx-b").expect("netns b");
    veth(&a, "eth0", &b, "eth0").expect("veth");
    a.ip(&["addr", "add", "10.0.9.1/24", "dev", "eth0"])
        .expect("addr a");
    b.ip(&["addr", "add", "10.0.9.2/24", "dev", "eth0"])
        .expect("addr b");
    for n in [&a, &b] {
        n.ip(&["link", "set", "lo", "up"]).expect("lo up");
    }
    (a, b)
}

fn tx_packets(ns: &Netns, dev: &str) -> u64 {
    let out = ns
        .ip(&["-s", "-j", "link", "show", dev])
        .expect("ip -s link");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    v[0]["stats64"]["tx"]["packets"]
        .as_u64()
        .expect("tx packets")
}

#[test]
fn device_peers_and_a_ping_through_the_tunnel() {
    let (a, b) = underlay();
    let (sa, sb) = sides();
    let first = reconcile(&a, &sa.dev, &[sa.peer]);
    assert!(first.device > 0 && first.peers == 2, "{first:?}");
    reconcile(&b, &sb.dev, &[sb.peer]);

    let details = a
        .ip(&["-d", "-j", "link", "show", "vxlan.margay"])
        .expect("link");
    let v: serde_json::Value = serde_json::from_str(&details).expect("json");
    let data = &v[0]["linkinfo"]["info_data"];
    assert_eq!(data["id"], 4096, "{details}");
    assert_eq!(data["port"], 4789, "{details}");
    assert_eq!(data["local"], "10.0.9.1", "{details}");
    assert_eq!(data["learning"], false, "{details}");
    assert_eq!(v[0]["mtu"], 1450);
    assert_eq!(v[0]["address"], sa.dev.mac.to_string());
    let addrs = a
        .ip(&["-4", "addr", "show", "dev", "vxlan.margay"])
        .expect("addr");
    assert!(addrs.contains("10.244.1.0/32"), "{addrs}");
    let neigh = a
        .ip(&["neigh", "show", "dev", "vxlan.margay"])
        .expect("neigh");
    assert!(
        neigh.contains(&format!("10.244.2.0 lladdr {} PERMANENT", sb.dev.mac)),
        "{neigh}"
    );
    let fdb = a
        .run("bridge", &["fdb", "show", "dev", "vxlan.margay"])
        .expect("fdb");
    assert!(
        fdb.contains(&format!("{} dst 10.0.9.2 self permanent", sb.dev.mac)),
        "{fdb}"
    );

    // The other node's pod block through the tunnel, as routing installs it.
    a.ip(&[
        "route",
        "add",
        "10.244.2.0/26",
        "via",
        "10.244.2.0",
        "dev",
        "vxlan.margay",
        "onlink",
    ])
    .expect("route a");
    b.ip(&[
        "route",
        "add",
        "10.244.1.0/26",
        "via",
        "10.244.1.0",
        "dev",
        "vxlan.margay",
        "onlink",
    ])
    .expect("route b");
    let before = tx_packets(&a, "vxlan.margay");
    let mut udp = b
        .command("tcpdump")
        .args([
            "-i", "eth0", "-n", "-c", "1", "-l", "udp", "dst", "port", "4789",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tcpdump");
    // tcpdump needs a moment to attach: ping until it has seen a packet.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut pinged = false;
    while Instant::now() < deadline {
        pinged |= a
            .run(
                "ping",
                &["-c", "1", "-W", "1", "-I", "10.244.1.0", "10.244.2.0"],
            )
            .is_ok();
        if pinged && udp.try_wait().expect("tcpdump wait").is_some() {
            break;
        }
    }
    let _ = udp.kill();
    let out = udp.wait_with_output().expect("tcpdump output");
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(pinged, "no ping reply through the tunnel");
    assert!(
        seen.contains("10.0.9.1") && seen.contains(".4789"),
        "tcpdump saw: {seen}"
    );
    assert!(tx_packets(&a, "vxlan.margay") > before);

    // Adopting: a second reconcile (an agent restart) changes nothing.
    let again = reconcile(&a, &sa.dev, &[sa.peer]);
    assert_eq!((again.device, again.peers), (0, 0), "{again:?}");
    assert_eq!(again.index, first.index);
}

#[test]
fn wrong_state_is_fixed_in_place_stale_peers_removed_and_other_vni_recreated() {
    let (a, _b) = underlay();
    let (sa, _) = sides();
    let first = reconcile(&a, &sa.dev, &[sa.peer]);
    a.ip(&["link", "set", "vxlan.margay", "mtu", "1400"])
        .expect("mtu");
    a.ip(&["link", "set", "vxlan.margay", "down"])
        .expect("down");
    a.ip(&[
        "neigh",
        "replace",
        "10.244.2.0",
        "lladdr",
        "02:99:99:99:99:99",
        "dev",
        "vxlan.margay",
        "nud",
        "permanent",
    ])
    .expect("wrong neigh");
    a.ip(&[
        "neigh",
        "add",
        "10.244.7.0",
        "lladdr",
        "02:77:77:77:77:77",
        "dev",
        "vxlan.margay",
        "nud",
        "permanent",
    ])
    .expect("stale neigh");
    a.run(
        "bridge",
        &[
            "fdb",
            "add",
            "02:77:77:77:77:77",
            "dev",
            "vxlan.margay",
            "dst",
            "10.0.9.7",
        ],
    )
    .expect("stale fdb");
    let fixed = reconcile(&a, &sa.dev, &[sa.peer]);
    assert_eq!(fixed.index, first.index, "fixed in place, not recreated");
    let link = a.ip(&["link", "show", "vxlan.margay"]).expect("link");
    assert!(link.contains("mtu 1450") && link.contains(",UP"), "{link}");
    let neigh = a
        .ip(&["neigh", "show", "dev", "vxlan.margay"])
        .expect("neigh");
    assert!(
        !neigh.contains("10.244.7.0") && !neigh.contains("02:99:99"),
        "{neigh}"
    );
    assert!(neigh.contains("10.244.2.0"), "{neigh}");
    let fdb = a
        .run("bridge", &["fdb", "show", "dev", "vxlan.margay"])
        .expect("fdb");
    assert!(!fdb.contains("02:77:77:77:77:77"), "{fdb}");

    // A node that is gone: its entries go.
    let none = reconcile(&a, &sa.dev, &[]);
    assert_eq!(none.peers, 2);
    let neigh = a
        .ip(&["neigh", "show", "dev", "vxlan.margay"])
        .expect("neigh");
    assert!(!neigh.contains("10.244.2.0"), "{neigh}");

    // Another VNI cannot be changed in place: the device is recreated.
    let mut other = sa.dev.clone();
    other.vni = 4097;
    let re = reconcile(&a, &other, &[sa.peer]);
    assert_ne!(re.index, first.index);
    let details = a.ip(&["-d", "link", "show", "vxlan.margay"]).expect("link");
    assert!(details.contains("vxlan id 4097"), "{details}");

    let name = a.name().to_string();
    let removed = in_netns(&name, || async {
        let nl = OverlayNetlink::connect().expect("netlink");
        remove_vxlan(&nl, "vxlan.margay").await.expect("remove")
    });
    assert!(removed);
    assert!(a.ip(&["link", "show", "vxlan.margay"]).is_err());
}
