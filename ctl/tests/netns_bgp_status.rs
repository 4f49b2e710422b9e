//! `margayctl node status`, `bgp peers` and `bgp routes` against real agents
//! in a lab (`l2`, three nodes, mesh): run inside node1's namespace, as on a
//! node, with the nodes' kubeconfig for `--all`.
//!
//! Needs the lab, agent, CNI and margayctl binaries built (`make test` does).

mod common;

use common::margayctl_path;
use margay_lab::pods::PodRuntime;
use margay_lab::pods::spec::PodSpec;
use margay_lab::{LabGuard, UpOptions};
use std::time::{Duration, Instant};

fn until(what: &str, mut cond: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match cond() {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("timed out waiting for {what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[test]
fn node_status_bgp_peers_and_routes_show_the_mesh() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = UpOptions::new(dir.path());
    opts.nodes = 3;
    let lab = LabGuard::up(&opts).expect("lab");
    let rt = PodRuntime::new(&lab).expect("pods");
    let p2 = rt
        .create_pod(&PodSpec::new("default", "p2", "node2"))
        .expect("pod");
    let block = margay_api::net::Cidr::new_truncating(p2.primary_ip().expect("ip"), 26)
        .expect("block")
        .to_string();
    let node1 = lab.netns("node1").expect("netns");
    let kubeconfig = dir.path().join("kubeconfig.nodes");
    let ctl = |args: &[&str]| -> Result<String, String> {
        let out = node1
            .command(margayctl_path())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    until("node status shows both mesh peers Established", || {
        let out = ctl(&["node", "status"])?;
        let up = out
            .lines()
            .filter(|l| l.contains("node-to-node mesh") && l.contains("Established"))
            .count();
        (up == 2 && out.contains("Margay agent on node1 is running"))
            .then_some(())
            .ok_or(out)
    });
    // --all asks every node's agent at its recorded address.
    let all = ctl(&["node", "status", "--all"]).expect("--all");
    for n in ["node1", "node2", "node3"] {
        assert!(
            all.contains(&format!("Margay agent on {n} is running")),
            "{all}"
        );
    }
    let json = ctl(&["node", "status", "--all", "-o", "json"]).expect("json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(v.as_array().map(Vec::len), Some(3), "{json}");

    let peers = ctl(&["bgp", "peers", "-o", "wide"]).expect("bgp peers");
    assert!(peers.starts_with("PEER"), "{peers}");
    assert!(
        peers.contains("10.0.0.2") && peers.contains("10.0.0.3"),
        "{peers}"
    );
    until("node1 received node2's block from 10.0.0.2", || {
        let r = ctl(&["bgp", "routes", "--peer", "10.0.0.2"])?;
        r.lines()
            .any(|l| l.starts_with(&block) && l.contains("10.0.0.2"))
            .then_some(())
            .ok_or(r)
    });
    let adv = ctl(&[
        "bgp",
        "routes",
        "--peer",
        "10.0.0.2",
        "--advertised",
        "-o",
        "yaml",
    ])
    .expect("advertised");
    assert!(
        !adv.contains(&block),
        "node2's own block is not sent back: {adv}"
    );
    let loc = ctl(&["bgp", "routes"]).expect("loc rib");
    assert!(
        loc.lines()
            .any(|l| l.starts_with(&block) && l.trim_end().ends_with('*')),
        "{loc}"
    );
    // Bad flags are usage errors.
    let bad = node1
        .command(margayctl_path())
        .args(["bgp", "routes", "--advertised"])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
}
