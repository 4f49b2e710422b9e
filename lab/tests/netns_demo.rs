//! `make demo` is the first thing a newcomer runs: this runs the same script
//! (on the binaries `make test` built) and checks that it shows what the
//! README promises — pods on three nodes reaching each other over
//! BGP-learned routes, established sessions in `margayctl node status`, and
//! a NetworkPolicy cutting exactly the paths it should — and that it leaves
//! no namespace behind. Needs root.

use std::path::Path;
use std::process::Command;

use margay_lab::netns;
use margay_lab::topology::netns_prefix;

#[test]
fn the_demo_shows_pods_over_bgp_and_a_policy_cutting_a_path() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = root.join("target/debug");
    for exe in ["margay-lab", "margay-agent", "margay-cni", "margayctl"] {
        assert!(
            bin.join(exe).exists(),
            "{exe} is not built in {}: run `cargo build --bins` first (make test does)",
            bin.display()
        );
    }
    let state = tempfile::tempdir().expect("temp dir");
    let dir = state.path().join("lab");
    let out = Command::new("bash")
        .arg(root.join("scripts/demo.sh"))
        .current_dir(&root)
        .env("DEMO_STATE_DIR", &dir)
        .env("BIN", "target/debug")
        .output()
        .expect("running scripts/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the demo failed ({}):\n{stdout}\n{stderr}",
        out.status
    );

    // Routes to the other two nodes' blocks, learned over BGP.
    let bgp_routes = stdout
        .lines()
        .filter(|l| l.contains(" via 10.0.0.") && l.starts_with("10.244."))
        .count();
    assert!(bgp_routes >= 2, "no BGP-learned routes shown:\n{stdout}");
    let established = stdout
        .lines()
        .filter(|l| l.contains("node-to-node mesh") && l.contains("Established"))
        .count();
    assert_eq!(established, 2, "node1's sessions:\n{stdout}");

    // Two matrices: all open, then web2 reachable only from the client.
    let matrices: Vec<Vec<&str>> = stdout
        .split("matrix --namespaces demo")
        .skip(1)
        .map(|m| {
            m.lines()
                .skip(1)
                .take_while(|l| l.starts_with("demo/") || l.starts_with("tcp/"))
                .collect()
        })
        .collect();
    assert_eq!(matrices.len(), 2, "two matrices expected:\n{stdout}");
    let cells = |m: &[&str]| -> Vec<Vec<String>> {
        m.iter()
            .skip(1)
            .map(|row| row.split_whitespace().skip(1).map(str::to_string).collect())
            .collect()
    };
    let before = cells(&matrices[0]);
    let after = cells(&matrices[1]);
    assert_eq!(before.len(), 4, "{stdout}");
    assert!(
        before.iter().flatten().all(|c| c == "."),
        "before the policy every pod reaches every pod:\n{stdout}"
    );
    // Rows and columns: client, web1, web2, web3. Only web1 -> web2 and
    // web3 -> web2 are cut (web2 -> web2 stays: a pod reaches itself).
    for (r, row) in after.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            let cut = c == 2 && (r == 1 || r == 3);
            assert_eq!(
                cell == "X",
                cut,
                "after the policy, row {r} column {c}:\n{stdout}"
            );
        }
    }
    assert!(stdout.contains("TCP/80: DENIED") && stdout.contains("TCP/80: ALLOWED"));

    // Torn down: nothing of this lab is left (its id is in `status`'s
    // first line, "lab ID (l2, 3 nodes), ...").
    let id = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("lab ")
                .and_then(|r| r.split_whitespace().next())
        })
        .unwrap_or_else(|| panic!("no lab id in the status output:\n{stdout}"));
    let prefix = netns_prefix(id);
    let left: Vec<String> = netns::list()
        .expect("ip netns list")
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "the demo left namespaces: {left:?}");
}
