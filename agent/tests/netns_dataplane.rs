//! The route and sysctl manager against the kernel, inside a namespace of the
//! test's own: routes appear with Margay's protocol, are repaired when deleted
//! by hand, sysctls are set and repaired, a second manager (an agent restart)
//! adopts right routes without touching them, and stale routes of ours are
//! swept only once sweeping is enabled.

use margay_agent::calc::ROUTE_PROTOCOL;
use margay_agent::calc::endpoints::{Endpoint, EndpointState, EndpointTable};
use margay_agent::dataplane::{self, DataplaneConfig, DataplaneHandle, SharedEndpoints};
use margay_agent::health::Health;
use margay_agent::metrics::Metrics;
use margay_api::endpoint::{Attachment, PodRef};
use margay_lab::netns::{Netns, NetnsGuard};
use std::future::Future;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs `f` on a thread inside namespace `ns` with a current-thread runtime,
/// so the netlink socket and the /proc/sys writes are the namespace's.
fn in_netns<T, F, Fut>(ns: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on a descriptor we own; affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(f())
    })
    .join()
    .unwrap()
}

fn endpoint(cid: &str, iface: &str, ips: &[&str]) -> Endpoint {
    Endpoint {
        attachment: Attachment {
            container_id: cid.into(),
            ifname: "eth0".into(),
        },
        pod: PodRef {
            namespace: "default".into(),
            name: cid.into(),
            uid: None,
        },
        host_interface: iface.into(),
        addresses: ips.iter().map(|s| s.parse().unwrap()).collect(),
        mac: None,
        netns: String::new(),
        state: EndpointState::Ready,
    }
}

fn start(endpoints: &SharedEndpoints, resync: Option<Duration>) -> (DataplaneHandle, Metrics) {
    let metrics = Metrics::new();
    let dp = dataplane::spawn(
        endpoints.clone(),
        DataplaneConfig {
            resync_interval: resync,
            mtu: None,
        },
        metrics.clone(),
        Health::new(),
    )
    .unwrap();
    (dp, metrics)
}

/// `ip route show proto 87` lines in the namespace.
fn our_routes(ns: &Netns) -> Vec<String> {
    let out = ns
        .ip(&["-o", "route", "show", "proto", &ROUTE_PROTOCOL.to_string()])
        .unwrap();
    let out6 = ns
        .ip(&[
            "-o",
            "-6",
            "route",
            "show",
            "proto",
            &ROUTE_PROTOCOL.to_string(),
        ])
        .unwrap();
    let mut v: Vec<String> = out
        .lines()
        .chain(out6.lines())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    v.sort();
    v
}

fn sysctl(ns: &Netns, key: &str) -> String {
    ns.run("sysctl", &["-n", key]).unwrap().trim().to_string()
}

/// A host-side interface: one end of a veth pair (the kernel here has no
/// dummy module), both ends up.
fn dummy(ns: &Netns, name: &str) {
    let peer = format!("{name}p");
    ns.ip(&["link", "add", name, "type", "veth", "peer", "name", &peer])
        .unwrap();
    ns.ip(&["link", "set", name, "up"]).unwrap();
    ns.ip(&["link", "set", &peer, "up"]).unwrap();
}

async fn until_async(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Records every route change in the namespace while it lives.
struct RouteMonitor {
    child: Child,
    out: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl RouteMonitor {
    fn start(ns: &Netns) -> RouteMonitor {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("monitor.log");
        let file = std::fs::File::create(&out).unwrap();
        let child = Command::new("ip")
            .args(["-n", ns.name(), "monitor", "route"])
            .stdout(Stdio::from(file))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Let it subscribe before anything happens: poll for its socket.
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0)
            < 4
        {
            assert!(Instant::now() < deadline, "ip monitor did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        RouteMonitor {
            child,
            out,
            _dir: dir,
        }
    }

    fn lines(&mut self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for RouteMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn routes_and_sysctls_are_programmed_and_repaired() {
    let ns = NetnsGuard::create_unique("mgytest-dp").unwrap();
    dummy(&ns, "mgya");
    dummy(&ns, "mgyb");
    let name = ns.name().to_string();
    let ns2 = Netns::open(&name);
    in_netns(&name, move || async move {
        let table = EndpointTable::from_records([
            endpoint("a", "mgya", &["10.244.0.1", "fd00:244::1"]),
            endpoint("b", "mgyb", &["10.244.0.2"]),
        ]);
        let endpoints: SharedEndpoints = Arc::new(Mutex::new(table));
        let (dp, metrics) = start(&endpoints, None);
        let report = dp.enable_sweep().await;
        assert!(
            report.error.is_none() && report.failed_routes.is_empty(),
            "{report:?}"
        );
        assert_eq!(
            our_routes(&ns2),
            [
                "10.244.0.1 dev mgya scope link",
                "10.244.0.2 dev mgyb scope link",
                "fd00:244::1 dev mgya metric 1024 pref medium",
            ]
        );
        assert_eq!(sysctl(&ns2, "net.ipv4.conf.mgya.proxy_arp"), "1");
        assert_eq!(sysctl(&ns2, "net.ipv4.neigh.mgya.proxy_delay"), "0");
        assert_eq!(sysctl(&ns2, "net.ipv6.conf.mgya.proxy_ndp"), "1");
        assert_eq!(
            sysctl(&ns2, "net.ipv6.conf.mgyb.proxy_ndp"),
            "0",
            "mgyb has no IPv6"
        );

        // Someone deletes a route: the kernel tells us and it comes back.
        ns2.ip(&["route", "del", "10.244.0.2/32"]).unwrap();
        until_async("the deleted route to be repaired", || {
            our_routes(&ns2)
                .iter()
                .any(|r| r.starts_with("10.244.0.2 dev mgyb"))
        })
        .await;
        until_async("the repair to be counted", || {
            metrics
                .encode()
                .contains("margay_route_table_repairs_total 1")
        })
        .await;

        // A route replaced by someone else's (another protocol) is taken back.
        ns2.ip(&[
            "route",
            "replace",
            "10.244.0.1/32",
            "dev",
            "mgyb",
            "proto",
            "static",
        ])
        .unwrap();
        until_async("the altered route to be put right", || {
            our_routes(&ns2)
                .iter()
                .any(|r| r.starts_with("10.244.0.1 dev mgya"))
        })
        .await;

        // A sysctl flipped by hand is put back by the next resync.
        ns2.run("sysctl", &["-qw", "net.ipv4.conf.mgya.proxy_arp=0"])
            .unwrap();
        let report = dp.resync().await;
        assert!(report.failed_interfaces.is_empty(), "{report:?}");
        assert_eq!(sysctl(&ns2, "net.ipv4.conf.mgya.proxy_arp"), "1");

        // An endpoint goes: its routes are swept.
        endpoints
            .lock()
            .unwrap()
            .remove(&endpoint("b", "mgyb", &[]).key());
        dp.apply().await;
        assert!(
            !our_routes(&ns2).iter().any(|r| r.contains("mgyb")),
            "{:?}",
            our_routes(&ns2)
        );

        // An endpoint whose interface is not there yet: reported, and routed
        // as soon as the interface appears.
        endpoints
            .lock()
            .unwrap()
            .upsert(endpoint("c", "mgyc", &["10.244.0.3"]));
        let report = dp.apply().await;
        assert!(report.missing_interfaces.contains("mgyc"), "{report:?}");
        assert!(
            report
                .problem_with("mgyc", &["10.244.0.3".parse::<IpAddr>().unwrap()])
                .is_some()
        );
        dummy(&ns2, "mgyc");
        until_async("the route once the interface exists", || {
            our_routes(&ns2)
                .iter()
                .any(|r| r.starts_with("10.244.0.3 dev mgyc"))
        })
        .await;
    });
}

#[test]
fn a_restarted_manager_adopts_right_routes_untouched_and_sweeps_only_when_allowed() {
    let ns = NetnsGuard::create_unique("mgytest-adopt").unwrap();
    dummy(&ns, "mgya");
    dummy(&ns, "mgyb");
    let name = ns.name().to_string();
    let table = EndpointTable::from_records([
        endpoint("a", "mgya", &["10.244.0.1"]),
        endpoint("b", "mgyb", &["10.244.0.2", "fd00:244::2"]),
    ]);
    // First agent: programs the routes.
    let t1 = table.clone();
    in_netns(&name, move || async move {
        let endpoints: SharedEndpoints = Arc::new(Mutex::new(t1));
        let (dp, _) = start(&endpoints, None);
        let report = dp.enable_sweep().await;
        assert!(report.error.is_none(), "{report:?}");
    });
    let before = our_routes(&ns);
    assert_eq!(before.len(), 3, "{before:?}");
    // A stale route of ours (an endpoint deleted while no agent ran).
    ns.ip(&[
        "route",
        "add",
        "10.244.0.99/32",
        "dev",
        "mgya",
        "proto",
        &ROUTE_PROTOCOL.to_string(),
        "scope",
        "link",
    ])
    .unwrap();

    let mut monitor = RouteMonitor::start(&ns);
    let name2 = name.clone();
    let ns2 = Netns::open(&name);
    in_netns(&name2, move || async move {
        // Second agent, same endpoints: before sync it must not sweep.
        let endpoints: SharedEndpoints = Arc::new(Mutex::new(table));
        let (dp, metrics) = start(&endpoints, None);
        let report = dp.apply().await;
        assert!(report.error.is_none(), "{report:?}");
        assert!(
            our_routes(&ns2)
                .iter()
                .any(|r| r.starts_with("10.244.0.99 ")),
            "swept before caches were in sync"
        );
        assert!(
            !metrics
                .encode()
                .contains("margay_route_table_changes_total{op=\"replace\"}"),
            "a right route was rewritten: {}",
            metrics.encode()
        );
        // Caches in sync, endpoints known: the stale route goes, nothing else moves.
        dp.enable_sweep().await;
        assert!(
            !our_routes(&ns2)
                .iter()
                .any(|r| r.starts_with("10.244.0.99 "))
        );
    });
    // Give ip monitor a moment to write what it saw: poll for the deletion it must report.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !monitor.lines().iter().any(|l| l.contains("10.244.0.99")) {
        assert!(
            Instant::now() < deadline,
            "ip monitor saw no sweep: {:?}",
            monitor.lines()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let changes = monitor.lines();
    assert!(
        changes.iter().all(|l| l.contains("10.244.0.99")),
        "a live endpoint's route flapped on restart: {changes:?}"
    );
    assert_eq!(our_routes(&ns), before);
}
