//! The benchmarks' kernel-side observer sees committed nf_tables changes:
//! chains created and deleted, set elements added and removed (also when
//! they come as raw netlink batches, as the agent sends pod churn).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use margay_bench::nftmon::{self, Change};
use margay_lab::netns::NetnsGuard;
use margay_policy::ir::SetElem;
use margay_policy::nft::Nft;
use margay_policy::nft::netlink::ElementOp;

#[test]
fn sees_chains_and_elements_committed_in_a_namespace() {
    let ns = NetnsGuard::create_unique("mgy-nftmon").expect("netns");
    let path = PathBuf::from("/run/netns").join(ns.name());
    let (tx, rx) = mpsc::channel();
    let _mon = nftmon::spawn(&path, 7, tx).expect("monitor");
    let nft = Nft::open_in_netns(&path).expect("libnftables");
    nft.run("add table inet t\nadd set inet t s { type ipv4_addr; }\nadd chain inet t c")
        .expect("nft");
    let ip: IpAddr = "10.1.2.3".parse().expect("ip");
    nft.apply_elements(
        "t",
        vec![ElementOp {
            set: "s".into(),
            add: true,
            elements: vec![SetElem::Addr(ip)],
        }],
    )
    .expect("element over netlink");
    // A transaction the kernel refuses (its second command names a missing
    // set) commits nothing, so its chain must never be reported.
    assert!(
        nft.run("add chain inet t refused\nadd element inet t missing { 10.9.9.9 }")
            .is_err()
    );
    nft.run("delete element inet t s { 10.1.2.3 }\ndelete chain inet t c")
        .expect("nft");
    let mut seen = Vec::new();
    while let Ok((tag, _, c)) = rx.recv_timeout(Duration::from_secs(2)) {
        assert_eq!(tag, 7);
        seen.push(c);
        if seen.len() == 4 {
            break;
        }
    }
    assert!(
        seen.contains(&Change::Chain {
            name: "c".into(),
            added: true
        }),
        "{seen:?}"
    );
    assert!(
        seen.contains(&Change::Chain {
            name: "c".into(),
            added: false
        }),
        "{seen:?}"
    );
    assert!(seen.iter().any(|c| c.touches_ip(ip, true)), "{seen:?}");
    assert!(seen.iter().any(|c| c.touches_ip(ip, false)), "{seen:?}");
    // Nothing of the refused transaction, and no stray element.
    while let Ok((_, _, c)) = rx.recv_timeout(Duration::from_millis(300)) {
        seen.push(c);
    }
    assert!(
        !seen
            .iter()
            .any(|c| matches!(c, Change::Chain { name, .. } if name == "refused")),
        "{seen:?}"
    );
    let other: IpAddr = "10.9.9.9".parse().expect("ip");
    assert!(!seen.iter().any(|c| c.touches_ip(other, true)), "{seen:?}");
}
