//! `margayctl diags` on a node of a real lab (network namespaces, the real
//! agent), run as the docs say: `margay-lab exec node1 -- margayctl diags`.

mod common;

use common::{margayctl_path, run_program};
use margay_lab::{LabGuard, UpOptions};
use std::process::Command;

#[test]
fn diags_on_a_lab_node_collects_node_agent_and_cluster_state() {
    let state = tempfile::tempdir().unwrap();
    let mut opts = UpOptions::new(state.path());
    opts.nodes = 1;
    let lab = LabGuard::up(&opts).expect("lab up");
    let out_dir = tempfile::tempdir().unwrap();
    let archive = out_dir.path().join("diags.tar.gz");
    let lab_bin = margayctl_path().with_file_name("margay-lab");
    let mut c = Command::new(&lab_bin);
    c.arg("--state-dir")
        .arg(lab.state_dir())
        .args(["exec", "node1", "--"])
        .arg(margayctl_path())
        .arg("diags")
        .arg("--kubeconfig")
        .arg(lab.state_dir().join("kubeconfig.nodes"))
        .arg("--log-file")
        .arg(lab.state_dir().join("logs/agent-node1.log"))
        .arg("-o")
        .arg(&archive);
    let out = run_program(c, None).expect(0);
    assert!(out.stdout.contains("Wrote"), "{}", out.stdout);

    let x = out_dir.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let mut t = Command::new("tar");
    t.arg("-xzf").arg(&archive).arg("-C").arg(&x);
    run_program(t, None).expect(0);
    let root = std::fs::read_dir(&x)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(
        root.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("margay-diags-")
    );
    let read =
        |f: &str| std::fs::read_to_string(root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let index = read("index.txt");
    // From the node's namespace: its routes and links, not the host's.
    assert!(read("node/ip-route.txt").contains("default via"), "{index}");
    assert!(read("node/ip-addr.txt").contains("eth0"));
    // From the agent, over the node's loopback.
    assert!(
        read("agent/readyz.txt").contains(" 200 "),
        "{}",
        read("agent/readyz.txt")
    );
    assert!(read("agent/metrics.txt").contains("margay_datastore_in_sync 1"));
    assert!(read("logs/agent-node1.log").contains("agent ready"));
    // From the API.
    assert!(read("cluster/ippools.yaml").contains("default-ipv4-ippool"));
    assert!(read("cluster/nodes.yaml").contains("name: node1"));
    let report: serde_json::Value = serde_json::from_str(&read("cluster/ipam-check.json")).unwrap();
    assert_eq!(report["kind"], "IPAMCheckReport");
    // Everything collected or its failure recorded with the reason.
    for l in index.lines() {
        assert!(
            l.starts_with("ok ") || l.starts_with("failed ") && l.contains(": "),
            "{l}"
        );
    }
    assert!(index.contains("ok      cluster/ipam-check.json"), "{index}");

    // The agent down and the API unreachable: still an archive, with reasons.
    lab.stop_agent("node1").unwrap();
    let archive2 = out_dir.path().join("d2.tar.gz");
    let mut c = Command::new(&lab_bin);
    c.arg("--state-dir")
        .arg(lab.state_dir())
        .args(["exec", "node1", "--"])
        .arg(margayctl_path())
        .args(["diags", "--kubeconfig", "/nonexistent", "-o"])
        .arg(&archive2);
    run_program(c, None).expect(0);
    let mut t = Command::new("tar");
    t.arg("-xzOf")
        .arg(&archive2)
        .arg("--wildcards")
        .arg("*/index.txt");
    let index = run_program(t, None).expect(0).stdout;
    assert!(index.contains("failed  agent/readyz.txt"), "{index}");
    assert!(index.contains("failed  cluster/"), "{index}");
}
