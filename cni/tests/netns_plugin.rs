//! The plugin against the kernel: ADD/DEL/CHECK/STATUS/GC in real namespaces,
//! with a stand-in for the agent's endpoint service (see `common`).

mod common;

use common::*;
use margay_api::endpoint::{WireError, host_interface_name};
use margay_lab::netns::NetnsGuard;
use serde_json::json;

fn add<'a>(
    pod_ns: &'a margay_lab::netns::Netns,
    cid: &'a str,
    pod: (&'a str, &'a str),
    conf: serde_json::Value,
) -> Invocation<'a> {
    Invocation {
        command: "ADD",
        container_id: cid,
        netns: Some(pod_ns),
        ifname: "eth0",
        pod: Some(pod),
        conf,
    }
}

#[test]
fn add_wires_a_dual_stack_pod_that_reaches_its_node_and_del_removes_it() {
    let node = node_netns("wire");
    let agent = EndpointDouble::start(&node, true);
    let pod = NetnsGuard::create_unique("mcni-pod").unwrap();
    let conf = conf(&agent.socket, "1.1.0");

    let out = run_plugin(&node, &add(&pod, "c1", ("web", "front-0"), conf.clone()));
    assert!(out.ok(), "{out:?}");
    let host_if = host_interface_name("web", "front-0");
    let r = &out.stdout;
    assert_eq!(r["cniVersion"], "1.1.0");
    assert_eq!(r["interfaces"][0]["name"], host_if.as_str());
    assert_eq!(r["interfaces"][0]["mac"], "ee:ee:ee:ee:ee:ee");
    assert_eq!(r["interfaces"][1]["name"], "eth0");
    assert_eq!(
        r["interfaces"][1]["sandbox"],
        format!("/run/netns/{}", pod.name())
    );
    assert_eq!(r["interfaces"][1]["mtu"], 1450);
    assert_eq!(
        r["ips"][0],
        json!({"address": "10.244.0.2/32", "gateway": "169.254.1.1", "interface": 1})
    );
    assert_eq!(r["ips"][1]["address"], "fd00:244::2/128");
    assert_eq!(agent.ops(), ["add", "ready"]);

    // The kernel holds what the result says.
    let link = pod.ip(&["-d", "link", "show", "eth0"]).unwrap();
    assert!(link.contains("mtu 1450") && link.contains("veth"), "{link}");
    assert!(
        link.contains(r["interfaces"][1]["mac"].as_str().unwrap()),
        "{link}"
    );
    let addrs = pod.ip(&["addr", "show", "eth0"]).unwrap();
    assert!(
        addrs.contains("10.244.0.2/32") && addrs.contains("fd00:244::2/128"),
        "{addrs}"
    );
    let routes = pod.ip(&["route", "show"]).unwrap();
    assert!(
        routes.contains("default via 169.254.1.1 dev eth0"),
        "{routes}"
    );
    assert!(
        routes.contains("169.254.1.1 dev eth0 scope link"),
        "{routes}"
    );
    let routes6 = pod.ip(&["-6", "route", "show"]).unwrap();
    assert!(
        routes6.contains("default via fe80::ecee:eeff:feee:eeee dev eth0"),
        "{routes6}"
    );
    let host = node.ip(&["-d", "link", "show", &host_if]).unwrap();
    assert!(
        host.contains("ee:ee:ee:ee:ee:ee") && host.contains("mtu 1450"),
        "{host}"
    );
    assert!(host.contains("alias margay:c1:eth0"), "{host}");
    let host6 = node.ip(&["-6", "addr", "show", "dev", &host_if]).unwrap();
    assert!(host6.contains("fe80::ecee:eeff:feee:eeee/64"), "{host6}");

    // The pod reaches its node over both families.
    for target in ["10.99.0.1", "fd00:99::1"] {
        let ping = pod.run("ping", &["-c1", "-W2", target]);
        assert!(ping.is_ok(), "ping {target}: {ping:?}");
    }

    // CHECK passes with the ADD result, and names a route someone deleted.
    let mut check_conf = conf.clone();
    check_conf["prevResult"] = out.stdout.clone();
    let check = Invocation {
        command: "CHECK",
        ..add(&pod, "c1", ("web", "front-0"), check_conf.clone())
    };
    let out = run_plugin(&node, &check);
    assert!(out.ok(), "{out:?}");
    pod.ip(&["route", "del", "default"]).unwrap();
    let out = run_plugin(&node, &check);
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout["code"], 100, "{out:?}");
    let msg = out.stdout["msg"].as_str().unwrap();
    assert!(
        msg.contains("route 0.0.0.0/0 via 169.254.1.1 dev eth0 is missing"),
        "{msg}"
    );

    // DEL removes both ends and releases; a second DEL and a DEL of something
    // never added succeed too.
    let mut del_conf = conf.clone();
    del_conf["prevResult"] = check_conf["prevResult"].clone();
    let del = Invocation {
        command: "DEL",
        ..add(&pod, "c1", ("web", "front-0"), del_conf)
    };
    let out = run_plugin(&node, &del);
    assert!(out.ok(), "{out:?}");
    assert!(mgy_links(&node).is_empty());
    assert!(pod.ip(&["link", "show", "eth0"]).is_err());
    assert_eq!(agent.allocated(), 0);
    assert!(run_plugin(&node, &del).ok());
    let unknown = Invocation {
        command: "DEL",
        container_id: "never-added",
        netns: None,
        ifname: "eth0",
        pod: Some(("web", "ghost")),
        conf: conf.clone(),
    };
    assert!(run_plugin(&node, &unknown).ok());
}

#[test]
fn a_failed_add_leaves_no_interface_and_gives_the_address_back() {
    let node = node_netns("fail");
    let agent = EndpointDouble::start(&node, false);
    agent.state.lock().unwrap().fail_ready = Some(WireError {
        code: 11,
        msg: "policy for web/front-1 not programmed in time".into(),
        details: String::new(),
    });
    let pod = NetnsGuard::create_unique("mcni-pod").unwrap();
    let out = run_plugin(
        &node,
        &add(&pod, "c1", ("web", "front-1"), conf(&agent.socket, "1.0.0")),
    );
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout["code"], 11, "{out:?}");
    assert_eq!(out.stdout["cniVersion"], "1.0.0");
    assert_eq!(
        out.stdout["msg"],
        "policy for web/front-1 not programmed in time"
    );
    assert_eq!(agent.ops(), ["add", "ready", "del"]);
    assert_eq!(agent.allocated(), 0);
    assert!(mgy_links(&node).is_empty());
    assert!(pod.ip(&["link", "show", "eth0"]).is_err());
}

#[test]
fn an_add_without_an_agent_fails_fast_and_clearly() {
    let node = node_netns("noagent");
    let pod = NetnsGuard::create_unique("mcni-pod").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("cni.sock");
    let out = run_plugin(
        &node,
        &add(&pod, "c1", ("web", "x"), conf(&socket, "1.1.0")),
    );
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout["code"], 11);
    let msg = out.stdout["msg"].as_str().unwrap();
    assert!(
        msg.contains(&format!(
            "the agent is not reachable at {}",
            socket.display()
        )) && msg.contains("is margay-agent running on this node?"),
        "{msg}"
    );
    assert!(mgy_links(&node).is_empty());
    assert!(pod.ip(&["link", "show", "eth0"]).is_err());
    // STATUS says the plugin cannot serve ADDs.
    let status = Invocation {
        command: "STATUS",
        container_id: "",
        netns: None,
        ifname: "",
        pod: None,
        conf: conf(&socket, "1.1.0"),
    };
    let out = run_plugin(&node, &status);
    assert_eq!((out.code, out.stdout["code"].as_u64()), (1, Some(50)));
}

#[test]
fn a_repeated_add_converges_and_a_foreign_interface_is_refused() {
    let node = node_netns("again");
    let agent = EndpointDouble::start(&node, false);
    let pod = NetnsGuard::create_unique("mcni-pod").unwrap();
    let c = conf(&agent.socket, "1.1.0");
    let first = run_plugin(&node, &add(&pod, "c1", ("web", "a"), c.clone()));
    assert!(first.ok(), "{first:?}");
    let second = run_plugin(&node, &add(&pod, "c1", ("web", "a"), c.clone()));
    assert!(second.ok(), "{second:?}");
    assert_eq!(first.stdout["ips"], second.stdout["ips"]);
    assert_eq!(mgy_links(&node).len(), 1);
    let addrs = pod.ip(&["addr", "show", "eth0"]).unwrap();
    assert!(addrs.contains("10.244.0.2/32"), "{addrs}");

    let other = NetnsGuard::create_unique("mcni-pod").unwrap();
    other
        .ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
        ])
        .unwrap();
    let out = run_plugin(&node, &add(&other, "c2", ("web", "b"), c));
    assert_eq!(out.stdout["code"], 102, "{out:?}");
    assert_eq!(mgy_links(&node).len(), 1);
    assert_eq!(agent.allocated(), 1, "refused before allocating");
}

#[test]
fn many_concurrent_adds_and_dels_on_one_node() {
    let node = node_netns("many");
    let agent = EndpointDouble::start(&node, true);
    let c = conf(&agent.socket, "1.1.0");
    let pods: Vec<NetnsGuard> = (0..24)
        .map(|_| NetnsGuard::create_unique("mcni-pod").unwrap())
        .collect();
    let names: Vec<String> = (0..pods.len()).map(|i| format!("p{i}")).collect();
    let cids: Vec<String> = (0..pods.len()).map(|i| format!("c{i}")).collect();
    std::thread::scope(|s| {
        for ((pod, name), cid) in pods.iter().zip(&names).zip(&cids) {
            let (node, c) = (&node, c.clone());
            s.spawn(move || {
                let out = run_plugin(node, &add(pod, cid, ("load", name), c));
                assert!(out.ok(), "{name}: {out:?}");
            });
        }
    });
    assert_eq!(mgy_links(&node).len(), pods.len());
    assert_eq!(agent.allocated(), pods.len());
    std::thread::scope(|s| {
        for ((pod, name), cid) in pods.iter().zip(&names).zip(&cids) {
            let (node, c) = (&node, c.clone());
            s.spawn(move || {
                let inv = Invocation {
                    command: "DEL",
                    ..add(pod, cid, ("load", name), c)
                };
                let out = run_plugin(node, &inv);
                assert!(out.ok(), "{name}: {out:?}");
            });
        }
    });
    assert!(mgy_links(&node).is_empty());
    assert_eq!(agent.allocated(), 0);
}

#[test]
fn gc_removes_host_sides_of_attachments_that_are_gone() {
    let node = node_netns("gc");
    let agent = EndpointDouble::start(&node, false);
    let c = conf(&agent.socket, "1.1.0");
    let kept = NetnsGuard::create_unique("mcni-pod").unwrap();
    assert!(run_plugin(&node, &add(&kept, "keep", ("web", "kept"), c.clone())).ok());
    let gone = NetnsGuard::create_unique("mcni-pod").unwrap();
    assert!(run_plugin(&node, &add(&gone, "gone", ("web", "gone"), c.clone())).ok());
    // A host side outliving its attachment (here: its peer moved out of the
    // way, as a crashed runtime might leave it) is the leak GC is for.
    gone.ip(&["link", "set", "eth0", "name", "old0", "netns", kept.name()])
        .unwrap();
    let mut gc_conf = c.clone();
    gc_conf["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let gc = Invocation {
        command: "GC",
        container_id: "",
        netns: None,
        ifname: "",
        pod: None,
        conf: gc_conf,
    };
    let out = run_plugin(&node, &gc);
    assert!(out.ok(), "{out:?}");
    assert_eq!(mgy_links(&node), [host_interface_name("web", "kept")]);
    assert_eq!(agent.allocated(), 1);
}

#[test]
fn version_lists_the_spoken_versions() {
    let node = node_netns("ver");
    let out = run_plugin(
        &node,
        &Invocation {
            command: "VERSION",
            container_id: "",
            netns: None,
            ifname: "",
            pod: None,
            conf: json!({"cniVersion": "1.0.0"}),
        },
    );
    assert!(out.ok());
    assert_eq!(
        out.stdout,
        json!({"cniVersion": "1.0.0", "supportedVersions": ["1.0.0", "1.1.0"]})
    );
}
