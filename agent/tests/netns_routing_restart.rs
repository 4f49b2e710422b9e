//! Hitless agent restarts: continuous pings between pods on different nodes
//! while one node's agent is restarted gracefully (SIGTERM) and the other's
//! is killed (SIGKILL) and started again. Graceful restart keeps the peers'
//! routes, the restarted agents adopt the kernel's proto-88 routes: not one
//! packet may be lost (counted from ping's summary).

mod routing_lab;

use margay_lab::netns::Netns;
use margay_lab::pods::PodRuntime;
use margay_lab::topology::Topology;
use routing_lab::*;
use std::process::Stdio;

/// (transmitted, received) from ping's summary line.
fn ping_counts(out: &str) -> Option<(u64, u64)> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse::<u64>().ok());
    Some((nums.next()?, nums.next()?))
}

#[test]
fn agents_restart_and_get_killed_under_traffic_without_losing_a_packet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = up(dir.path(), 3, Topology::L2, false, &[]);
    let rt = PodRuntime::new(&lab).expect("pod runtime");
    let p1 = pod(&rt, "default", "p1", "node1");
    let p2 = pod(&rt, "default", "p2", "node2");
    let ip2 = p2.primary_ip().expect("ip");
    let ip1 = p1.primary_ip().expect("ip");
    until("p1 -> p2", || pings(&p1, ip2));
    until("p2 -> p1", || pings(&p2, ip1));

    // 1500 echo requests 10 ms apart (15 s); each may wait 1 s for its reply.
    let ping = Netns::open(&p1.netns)
        .command("ping")
        .args(["-i", "0.01", "-c", "1500", "-W", "1", &ip2.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ping");
    // Wait until traffic flows for sure (the ping's first replies are in
    // flight), then disturb both ends' agents.
    until("p2 answers during the run", || pings(&p1, ip2));
    lab.restart_agent("node2")
        .expect("graceful restart of node2's agent");
    lab.kill_agent("node1").expect("SIGKILL node1's agent");
    lab.start_agent("node1").expect("start node1's agent again");
    for n in ["node1", "node2", "node3"] {
        let ns = lab.netns(n).expect("netns");
        until(&format!("{n}: sessions back"), || {
            established(&ns, 2, "node-to-node mesh")
        });
    }
    let out = ping.wait_with_output().expect("ping finished");
    let text = String::from_utf8_lossy(&out.stdout);
    let (sent, received) = ping_counts(&text).unwrap_or_else(|| panic!("no summary: {text}"));
    assert_eq!(sent, 1500, "{text}");
    assert_eq!(received, sent, "packets lost across agent restarts: {text}");
    // Both agents started as BGP restarts (they found their routes in the
    // kernel), which is what kept them from withdrawing anything.
    for n in ["node1", "node2"] {
        let log = std::fs::read_to_string(lab.state_dir().join(format!("logs/agent-{n}.log")))
            .expect("agent log");
        assert!(
            log.contains("restarting=true"),
            "{n} did not restart as a BGP restart"
        );
    }
    // The routes are still BGP's (proto 88) via the right nodes.
    let node1 = lab.netns("node1").expect("netns");
    let want = format!("{} via 10.0.0.2 dev eth0", block_of(ip2, 26));
    let have = routes88(&node1, false);
    assert!(have.iter().any(|l| l.starts_with(&want)), "{have:?}");
}

#[test]
fn ping_summaries_are_parsed() {
    let s = "--- 10.0.0.2 ping statistics ---\n1500 packets transmitted, 1498 received, 0.133333% packet loss, time 15000ms\n";
    assert_eq!(ping_counts(s), Some((1500, 1498)));
    assert_eq!(ping_counts("nothing"), None);
}
