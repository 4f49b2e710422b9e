//! An external peer: FRR as a "top of rack" router in its own namespace on
//! the `l2` fabric bridge, eBGP (AS 65000) with every node through a global
//! `BGPPeer` whose TCP-MD5 password comes from a Secret, with TTL security.
//! FRR learns the pod blocks; the nodes learn the network behind it (a
//! client namespace), and the client reaches a pod and back.
//!
//! The FRR configuration is the one `docs/bgp.md` shows.

mod routing_lab;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use margay_api::resources::bgp::{BGPPassword, SecretKeyRef};
use margay_api::{BGPPeer, BGPPeerSpec};
use margay_lab::netns::{self, Netns};
use margay_lab::pods::PodRuntime;
use margay_lab::topology::{Topology, netns_prefix};
use routing_lab::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const TOR_AS: u32 = 65000;
const TOR_IP: &str = "10.0.0.200";
const PASSWORD: &str = "s3cret-tor";

/// The ToR's frr.conf: eBGP with each node, a password, GTSM, and the
/// client network announced.
fn frr_conf(nodes: &[String]) -> String {
    let mut c = format!(
        "frr defaults datacenter\nhostname tor\nlog file bgpd.log\n!\nrouter bgp {TOR_AS}\n bgp router-id {TOR_IP}\n no bgp ebgp-requires-policy\n"
    );
    for n in nodes {
        c += &format!(
            " neighbor {n} remote-as 64512\n neighbor {n} password {PASSWORD}\n neighbor {n} ttl-security hops 1\n neighbor {n} timers connect 1\n"
        );
    }
    c += " address-family ipv4 unicast\n  network 192.168.50.0/24\n exit-address-family\n!\n";
    c
}

/// zebra and bgpd in the ToR namespace; killed on drop.
struct Frr {
    ns: String,
    dir: PathBuf,
}

impl Frr {
    fn start(ns: &str, dir: &Path, conf: &str) -> Frr {
        std::fs::create_dir_all(dir).expect("frr dir");
        std::fs::write(dir.join("zebra.conf"), "hostname tor-zebra\n").expect("zebra.conf");
        std::fs::write(dir.join("frr.conf"), conf).expect("frr.conf");
        let st = Command::new("chown")
            .args(["-R", "frr:frr"])
            .arg(dir)
            .status()
            .expect("chown");
        assert!(st.success());
        let f = Frr {
            ns: ns.into(),
            dir: dir.into(),
        };
        f.daemon("zebra", "zebra.conf");
        until("zebra's socket", || {
            dir.join("zserv.api")
                .exists()
                .then_some(())
                .ok_or("none".into())
        });
        f.daemon("bgpd", "frr.conf");
        until("bgpd's vty", || {
            dir.join("bgpd.vty")
                .exists()
                .then_some(())
                .ok_or("none".into())
        });
        f
    }

    fn daemon(&self, name: &str, conf: &str) {
        let d = &self.dir;
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns])
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
            .output()
            .expect("start frr");
        assert!(out.status.success(), "{name}: {out:?}");
    }

    fn vtysh(&self, cmd: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "vtysh", "--vty_socket"])
            .arg(&self.dir)
            .args(["-c", cmd])
            .output()
            .expect("vtysh");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        for n in ["bgpd", "zebra"] {
            if let Ok(pid) = std::fs::read_to_string(self.dir.join(format!("{n}.pid")))
                && let Ok(pid) = pid.trim().parse::<i32>()
            {
                // SAFETY: kill(2) on a pid we started; no memory is involved.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

#[test]
fn frr_top_of_rack_learns_pod_blocks_and_a_client_behind_it_reaches_a_pod() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = up(dir.path(), 2, Topology::L2, false, &[]);
    let prefix = netns_prefix(&lab.plan().id);
    // The ToR on the fabric bridge, the client behind it. Both carry the
    // lab's prefix, so `down` removes them.
    let fabric = Netns::open(&lab.plan().fabric_netns);
    let tor = Netns::create(&format!("{prefix}tor")).expect("tor netns");
    let client_ns = Netns::create(&format!("{prefix}client")).expect("client netns");
    netns::veth(&fabric, "tor", &tor, "eth0").expect("veth");
    fabric
        .ip(&[
            "link",
            "set",
            "tor",
            "master",
            &lab.plan().subnets[0].bridge,
        ])
        .expect("bridge");
    tor.ip(&["addr", "add", &format!("{TOR_IP}/24"), "dev", "eth0"])
        .expect("addr");
    tor.ip(&["link", "set", "lo", "up"]).expect("lo");
    netns::veth(&tor, "cl0", &client_ns, "eth0").expect("veth");
    tor.ip(&["addr", "add", "192.168.50.1/24", "dev", "cl0"])
        .expect("addr");
    tor.sysctls(&[("net.ipv4.ip_forward", "1")])
        .expect("forwarding");
    client_ns
        .ip(&["addr", "add", "192.168.50.2/24", "dev", "eth0"])
        .expect("addr");
    client_ns
        .ip(&["route", "add", "default", "via", "192.168.50.1"])
        .expect("route");
    let nodes: Vec<String> = lab
        .plan()
        .nodes
        .iter()
        .map(|n| n.ipv4.to_string())
        .collect();
    let frr = Frr::start(tor.name(), &dir.path().join("frr"), &frr_conf(&nodes));

    // The mesh is up before the ToR is configured; adding the ToR peer must
    // leave those sessions alone.
    let node1 = lab.netns("node1").expect("netns");
    until("node1's mesh session", || {
        established(&node1, 1, "node-to-node mesh")
    });
    let mesh_before = bgp_peers(&node1).expect("peers").peers;
    let kube_rt = runtime();
    let kube = client(&kube_rt, &lab);
    kube_rt.block_on(async {
        let _ = Api::<Namespace>::all(kube.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(serde_json::json!({"metadata": {"name": "kube-system"}}))
                    .expect("ns"),
            )
            .await;
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "bgp-passwords", "namespace": "kube-system"},
            "stringData": {"tor": PASSWORD},
        }))
        .expect("secret");
        Api::<Secret>::namespaced(kube.clone(), "kube-system")
            .create(&PostParams::default(), &secret)
            .await
            .expect("secret");
        Api::<BGPPeer>::all(kube.clone())
            .create(
                &PostParams::default(),
                &BGPPeer::new(
                    "tor",
                    BGPPeerSpec {
                        peer_ip: Some(TOR_IP.into()),
                        as_number: Some(TOR_AS),
                        ttl_security: Some(1),
                        password: Some(BGPPassword {
                            secret_key_ref: SecretKeyRef {
                                name: "bgp-passwords".into(),
                                key: "tor".into(),
                            },
                        }),
                        ..Default::default()
                    },
                ),
            )
            .await
            .expect("BGPPeer");
    });

    let rt = PodRuntime::new(&lab).expect("pod runtime");
    let p1 = pod(&rt, "default", "p1", "node1");
    let ip1 = p1.primary_ip().expect("ip");
    let block1 = block_of(ip1, 26);
    until(
        "node1: the ToR session (global peer) and the mesh up",
        || {
            let p = bgp_peers(&node1)?;
            let ok = |kind: &str| {
                p.peers
                    .iter()
                    .any(|r| r.peer_type == kind && r.state == "Established")
            };
            (ok("global") && ok("node-to-node mesh"))
                .then_some(())
                .ok_or(format!("{:?}", p.peers))
        },
    );
    let mesh_after: Vec<_> = bgp_peers(&node1)
        .expect("peers")
        .peers
        .into_iter()
        .filter(|p| p.peer_type == "node-to-node mesh")
        .collect();
    assert_eq!(mesh_after.len(), 1);
    assert_eq!(
        (mesh_after[0].established_transitions, &mesh_after[0].since),
        (
            mesh_before[0].established_transitions,
            &mesh_before[0].since
        ),
        "adding the ToR peer reset the mesh session"
    );
    until("FRR learned node1's pod block from node1", || {
        let v: serde_json::Value =
            serde_json::from_str(&frr.vtysh("show bgp ipv4 unicast json")).unwrap_or_default();
        let routes = &v["routes"][block1.to_string()];
        let via_node1 = routes.as_array().is_some_and(|paths| {
            paths.iter().any(|p| {
                p["nexthops"]
                    .as_array()
                    .is_some_and(|n| n.iter().any(|h| h["ip"] == "10.0.0.1"))
            })
        });
        via_node1
            .then_some(())
            .ok_or(frr.vtysh("show bgp ipv4 unicast"))
    });
    until("node1 learned the client network from the ToR", || {
        let have = routes88(&node1, false);
        have.iter()
            .any(|l| l.starts_with(&format!("192.168.50.0/24 via {TOR_IP} dev eth0")))
            .then_some(())
            .ok_or(format!("{have:?}"))
    });
    until("the client reaches the pod", || {
        let out = client_ns
            .command("ping")
            .args(["-c", "1", "-W", "1", &ip1.to_string()])
            .output()
            .map_err(|e| e.to_string())?;
        out.status
            .success()
            .then_some(())
            .ok_or(String::from_utf8_lossy(&out.stdout).into_owned())
    });
    until("the pod reaches the client", || {
        pings(&p1, "192.168.50.2".parse().expect("ip"))
    });
}
