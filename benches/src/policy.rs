//! Policy dataplane benchmarks:
//! - `nft-programming`: how fast rules reach the kernel — libnftables
//!   in-process (what Margay uses) against forking `nft` per call, for
//!   single-element transactions and a full 10 000-rule table load; and an
//!   element-level set update against a policy-chain rewrite in that table;
//! - `policy-throughput`: pod-to-pod TCP throughput with 10 000 rules in
//!   force (Margay's table: verdict-map dispatch, sets, conntrack first)
//!   against no rules, and against the same rules as one linear
//!   chain evaluated per packet (iptables style, set lookups included),
//!   against as many plain address/port compares, and against the same
//!   IPv4 rules in iptables-legacy and iptables-nft with ipsets, in the
//!   same run.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use margay_api::net::IpFamily;
use margay_lab::handwired;
use margay_lab::netns::{Netns, NetnsGuard};
use margay_policy::Ir;
use margay_policy::ir::{PolicyRef, SetElem};
use margay_policy::nft::{Nft, NftDataplane, RenderConfig, Renderer};
use margay_policy::{Compiler, LocalEndpoint, NamedPort, Namespace, Pod, PodKey};

use crate::figure::{Better, Figure, Goal, Measure, median};
use crate::iperf::{IperfServer, tcp_throughput};
use crate::{Benchmark, Context};

pub fn programming() -> Benchmark {
    Benchmark {
        name: "nft-programming",
        about: "nftables programming: libnftables in-process vs forking nft; element update vs chain rewrite",
        run: run_programming,
    }
}

pub fn throughput() -> Benchmark {
    Benchmark {
        name: "policy-throughput",
        about: "pod-to-pod TCP throughput with 10 000 policy rules in force vs none vs a 10 000-rule linear chain",
        run: run_throughput,
    }
}

fn netns_path(ns: &Netns) -> PathBuf {
    PathBuf::from("/run/netns").join(ns.name())
}

/// A compiler holding `policies` NetworkPolicies of 10 rules each (×2
/// families = 20 nft rules a policy), over `endpoints` local endpoints.
fn big_cluster(policies: usize, endpoints: usize) -> anyhow::Result<Compiler> {
    let mut c = Compiler::new();
    c.upsert_namespace(Namespace::new("bench", Default::default()));
    for i in 0..endpoints {
        let mut p = Pod::new("bench", &format!("p{i}"));
        p.labels.insert("app".into(), format!("a{i}"));
        p.ips = vec![format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256).parse()?];
        p.named_ports = vec![NamedPort {
            name: "http".into(),
            protocol: 6,
            port: 8080,
        }];
        c.upsert_pod(p);
        c.upsert_local_endpoint(LocalEndpoint {
            pod: PodKey::new("bench", format!("p{i}")),
            interface: format!("mgyz{i:07}"),
        });
    }
    for i in 0..policies {
        let rules: Vec<serde_json::Value> = (0..10)
            .map(|k| {
                serde_json::json!({
                    "from": [{"podSelector": {"matchLabels": {"app": format!("a{}", (i + k + 1) % endpoints)}}}],
                    "ports": [{"port": 1000 + k}]
                })
            })
            .collect();
        let np: NetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("np{i}"), "namespace": "bench"},
            "spec": {"podSelector": {"matchLabels": {"app": format!("a{}", i % endpoints)}}, "ingress": rules}
        }))?;
        c.upsert_network_policy(&np)?;
    }
    Ok(c)
}

/// Run `f` on a thread inside the namespace at `ns`.
fn in_netns<T: Send + 'static>(
    ns: &Path,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&ns)?;
        // SAFETY: setns on a valid namespace fd; affects this thread only.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!(
                "setns {}: {}",
                ns.display(),
                std::io::Error::last_os_error()
            );
        }
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("netns thread panicked"))?
}

/// `nft CMD` as a process in the namespace; the cost the `nftables` crate's
/// JSON path pays per call.
fn nft_fork(ns: &Path, cmds: Vec<String>) -> anyhow::Result<f64> {
    in_netns(ns, move || {
        let t = Instant::now();
        for c in &cmds {
            let out = Command::new("nft").arg(c).output().context("running nft")?;
            if !out.status.success() {
                bail!("nft {c}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        Ok(t.elapsed().as_secs_f64())
    })
}

fn run_programming(ctx: &Context) -> anyhow::Result<Vec<Figure>> {
    let ns = NetnsGuard::create_unique("mgy-bench-nft")?;
    let path = netns_path(&ns);
    let nft = Nft::open_in_netns(&path)?;
    nft.run("add table inet b\nadd set inet b s { type ipv4_addr; }")?;
    let n = if ctx.quick { 200 } else { 1000 };
    let forks = if ctx.quick { 50 } else { 200 };
    // 1. One element per transaction.
    let t = Instant::now();
    for i in 0..n {
        nft.run(&format!(
            "add element inet b s {{ 10.1.{}.{} }}",
            i / 256,
            i % 256
        ))?;
    }
    let lib_per_op = t.elapsed().as_secs_f64() / n as f64;
    let fork_cmds: Vec<String> = (0..forks)
        .map(|i| format!("add element inet b s {{ 10.2.{}.{} }}", i / 256, i % 256))
        .collect();
    let fork_per_op = nft_fork(&path, fork_cmds)? / forks as f64;

    // 2. A full table of 10 000 rules (500 policies × 10 rules × 2 families).
    let c = big_cluster(500, 1000)?;
    let renderer = Renderer::default();
    let script = renderer.full(c.ir());
    let rules = c.ir().rule_count();
    let mut dp = NftDataplane::new(Nft::open_in_netns(&path)?, Renderer::default());
    let t = Instant::now();
    dp.apply_full(c.ir())?;
    let lib_full = t.elapsed().as_secs_f64();
    let file = ctx.work_dir.join("full.nft");
    std::fs::write(&file, &script)?;
    let fpath = file.clone();
    let fork_full = in_netns(&path, move || {
        let t = Instant::now();
        let out = Command::new("nft").arg("-f").arg(&fpath).output()?;
        if !out.status.success() {
            bail!("nft -f: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(t.elapsed().as_secs_f64())
    })?;

    // 3. In that table: a pod label change (element-level delta) vs a
    // policy change (one policy chain rewritten).
    dp.apply_full(c.ir())?;
    let mut c = c;
    let rounds = if ctx.quick { 50 } else { 200 };
    let mut elem = Vec::new();
    let mut elem_lib = Vec::new();
    let mut chain = Vec::new();
    for r in 0..rounds {
        // A pod on another node moving in and out of a selector: only set
        // elements change here.
        let mut p = Pod::new("bench", "remote");
        p.ips = vec!["10.200.0.7".parse()?];
        p.labels.insert(
            "app".into(),
            if r % 2 == 0 {
                "a7".into()
            } else {
                "none".into()
            },
        );
        let d = c.upsert_pod(p);
        if !d.elements_only() {
            bail!("a label change produced more than element changes: {d:?}");
        }
        let t = Instant::now();
        dp.apply_delta(c.ir(), &d)?;
        elem.push(t.elapsed().as_secs_f64() * 1e3);
        // The same kind of change through libnftables (text, one batch).
        let verb = if r % 2 == 0 { "add" } else { "delete" };
        let t = Instant::now();
        dp.nft()
            .run(&format!("{verb} element inet b s {{ 10.3.0.1 }}"))?;
        elem_lib.push(t.elapsed().as_secs_f64() * 1e3);
        let np: NetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "np3", "namespace": "bench"},
            "spec": {"podSelector": {"matchLabels": {"app": "a3"}}, "ingress": (0..10).map(|k| serde_json::json!({
                "from": [{"podSelector": {"matchLabels": {"app": format!("a{}", (4 + k) % 1000)}}}],
                "ports": [{"port": 1000 + k + (r % 2) as usize}]
            })).collect::<Vec<_>>()}
        }))?;
        let d = c.upsert_network_policy(&np)?;
        let t = Instant::now();
        dp.apply_delta(c.ir(), &d)?;
        chain.push(t.elapsed().as_secs_f64() * 1e3);
    }
    if dp.reconcile(c.ir())?.changed_anything() {
        bail!("deltas left the kernel differing from the IR");
    }
    Ok(vec![
        Figure::new(
            "one set element, one transaction",
            Measure::new("libnftables in-process", lib_per_op * 1e3, "ms"),
            Measure::new("fork nft per call", fork_per_op * 1e3, "ms"),
            Better::Lower,
        ),
        Figure::new(
            format!(
                "full table load ({rules} rules, {} sets)",
                c.ir().sets.len()
            ),
            Measure::new("libnftables in-process", lib_full * 1e3, "ms"),
            Measure::new("nft -f (one fork)", fork_full * 1e3, "ms"),
            Better::Lower,
        ),
        Figure::new(
            "one set element, in a 10 000-rule ruleset (median)",
            Measure::new(
                "raw netlink batch (Margay's element path)",
                median(&mut elem),
                "ms",
            ),
            Measure::new("libnftables in-process", median(&mut elem_lib), "ms"),
            Better::Lower,
        ),
        Figure::new(
            "pod label change vs policy change, in a 10 000-rule table (median)",
            Measure::new("element-level set update", median(&mut elem), "ms"),
            Measure::new("policy chain rewrite (10 rules)", median(&mut chain), "ms"),
            Better::Lower,
        ),
    ])
}

fn run_throughput(ctx: &Context) -> anyhow::Result<Vec<Figure>> {
    let node = NetnsGuard::create_unique("mgy-bench-node")?;
    node.sysctls(&[("net.ipv4.ip_forward", "1")])?;
    for args in [
        &[
            "link", "add", "upl0", "type", "veth", "peer", "name", "upl1",
        ][..],
        &["link", "set", "upl0", "up"],
        &["link", "set", "upl1", "up"],
        &["route", "add", "default", "dev", "upl0"],
    ] {
        node.ip(args)?;
    }
    let client_if = margay_api::endpoint::host_interface_name("bench", "client");
    let server_if = margay_api::endpoint::host_interface_name("bench", "server");
    let (cip, sip) = ("10.99.0.2", "10.99.0.3");
    let client = handwired::wire_pod(
        &node,
        &margay_lab::netns::unique_name("mgy-bench-c"),
        &client_if,
        cip.parse()?,
    )?;
    let _client_guard = Owned(client.netns.clone());
    let server = handwired::wire_pod(
        &node,
        &margay_lab::netns::unique_name("mgy-bench-s"),
        &server_if,
        sip.parse()?,
    )?;
    let _server_guard = Owned(server.netns.clone());

    // Margay's table: 10 000 rules of 500 policies on 1000 other endpoints,
    // plus the server's own policy (allow from the client, port 5201).
    let mut c = big_cluster(500, 1000)?;
    for (name, ip, iface) in [("client", cip, &client_if), ("server", sip, &server_if)] {
        let mut p = Pod::new("bench", name);
        p.labels.insert("app".into(), name.into());
        p.ips = vec![ip.parse()?];
        c.upsert_pod(p);
        c.upsert_local_endpoint(LocalEndpoint {
            pod: PodKey::new("bench", name),
            interface: iface.clone(),
        });
    }
    let np: NetworkPolicy = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "server", "namespace": "bench"},
        "spec": {"podSelector": {"matchLabels": {"app": "server"}},
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": 5201}]}]}
    }))?;
    c.upsert_network_policy(&np)?;
    let rules = c.ir().rule_count();
    let mut dp = NftDataplane::new(Nft::open_in_netns(&netns_path(&node))?, Renderer::default());

    // The comparator (the goal's "same rules as a linear chain"): Margay's
    // own policy rules, rendered as Margay renders them (set lookups for
    // selectors, port matches), all in one base chain evaluated for every
    // packet, as an iptables agent's rules with `-m set` matches are: no
    // verdict-map dispatch to the endpoint's policies, no conntrack
    // shortcut. The server's own policy is left out, so no rule matches the
    // measured flow before the final accept (the worst case for the chain,
    // as in iptables where the allowing rule sits after the others).
    let linear = linear_chain(c.ir(), "server")?;
    // The same IPv4 rules as iptables and ipset write them (what an
    // iptables-based agent runs), through iptables-legacy and iptables-nft.
    let (ipsets, ipt_rules, ipt_n) = iptables_chain(c.ir(), "server")?;
    run_with_input(&node, "ipset", &["restore"], &ipsets)?;
    // The cheaper chain an earlier version compared against: one
    // address/address/port compare per rule, no set lookups (kept as a
    // second row: it is what a chain of `-s A -d B --dport P` rules costs).
    let mut compare = String::from(
        "add table ip compare\nadd chain ip compare forward { type filter hook forward priority 0; policy accept; }\n",
    );
    for i in 0..rules {
        compare.push_str(&format!(
            "add rule ip compare forward ip saddr 172.16.{}.{} ip daddr {sip} tcp dport {} accept\n",
            (i / 256) % 256,
            i % 256,
            1000 + i % 1000
        ));
    }
    compare.push_str("add rule ip compare forward accept\n");
    let nft = Nft::open_in_netns(&netns_path(&node))?;

    let _srv = IperfServer::start(&server.netns, 5201)?;
    let (rounds, secs) = if ctx.quick { (1, 2) } else { (3, 4) };
    // Connection tracking alone (what any stateful policy, and kube-proxy,
    // turns on): separates its cost from the cost of Margay's rules.
    let ct_only = "add table inet ctonly\nadd chain inet ctonly forward { type filter hook forward priority 0; policy accept; }\nadd rule inet ctonly forward ct state established,related accept\n";
    let (mut none, mut margay, mut chain, mut cmp, mut ct) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut legacy, mut ipt_nft) = (Vec::new(), Vec::new());
    let to: IpAddr = sip.parse()?;
    for _ in 0..rounds {
        nft.run("flush ruleset")?;
        none.push(tcp_throughput(&client.netns, to, 5201, secs)? / 1e9);
        nft.run(ct_only)?;
        ct.push(tcp_throughput(&client.netns, to, 5201, secs)? / 1e9);
        nft.run("flush ruleset")?;
        dp.apply_full(c.ir())?;
        margay.push(tcp_throughput(&client.netns, to, 5201, secs)? / 1e9);
        nft.run("flush ruleset")?;
        nft.run(&linear.script)?;
        chain.push(tcp_throughput(&client.netns, to, 5201, secs)? / 1e9);
        nft.run("flush ruleset")?;
        nft.run(&compare)?;
        cmp.push(tcp_throughput(&client.netns, to, 5201, secs)? / 1e9);
        nft.run("flush ruleset")?;
        run_with_input(&node, "iptables-legacy-restore", &[], &ipt_rules)?;
        legacy.push(tcp_throughput(&client.netns, to, 5201, secs)? / 1e9);
        node.run("iptables-legacy", &["-F", "FORWARD"])?;
        run_with_input(&node, "iptables-nft-restore", &[], &ipt_rules)?;
        ipt_nft.push(tcp_throughput(&client.netns, to, 5201, secs)? / 1e9);
        nft.run("flush ruleset")?;
    }
    let (m, n, l, k, q) = (
        median(&mut margay),
        median(&mut none),
        median(&mut chain),
        median(&mut ct),
        median(&mut cmp),
    );
    Ok(vec![
        Figure::new(
            format!("pod-to-pod TCP with {rules} rules in force vs none"),
            Measure::new("Margay table", m, "Gbit/s"),
            Measure::new("no rules", n, "Gbit/s"),
            Better::Higher,
        )
        .with_goal(Goal::Ratio(0.95)),
        Figure::new(
            format!(
                "pod-to-pod TCP, {rules} rules: Margay vs the same rules as one linear chain ({} rules, {} v4)",
                linear.rules, linear.v4_rules
            ),
            Measure::new("Margay table", m, "Gbit/s"),
            Measure::new("linear chain with set lookups, per packet", l, "Gbit/s"),
            Better::Higher,
        )
        .with_goal(Goal::Ratio(5.0)),
        Figure::new(
            format!("pod-to-pod TCP: Margay vs {rules} address/port compares in one chain"),
            Measure::new("Margay table", m, "Gbit/s"),
            Measure::new("linear chain of compares, per packet", q, "Gbit/s"),
            Better::Higher,
        ),
        Figure::new(
            format!("pod-to-pod TCP: Margay vs the same {ipt_n} IPv4 rules in iptables-legacy with ipsets"),
            Measure::new("Margay table", m, "Gbit/s"),
            Measure::new("iptables-legacy, -m set per rule", median(&mut legacy), "Gbit/s"),
            Better::Higher,
        ),
        Figure::new(
            format!("pod-to-pod TCP: Margay vs the same {ipt_n} IPv4 rules in iptables-nft with ipsets"),
            Measure::new("Margay table", m, "Gbit/s"),
            Measure::new("iptables-nft, -m set per rule", median(&mut ipt_nft), "Gbit/s"),
            Better::Higher,
        ),
        Figure::new(
            format!("pod-to-pod TCP, {rules} rules vs connection tracking alone"),
            Measure::new("Margay table", m, "Gbit/s"),
            Measure::new("ct state rule only", k, "Gbit/s"),
            Better::Higher,
        ),
    ])
}

/// Margay's policy rules as one linear chain (see `run_throughput`).
struct LinearChain {
    script: String,
    rules: usize,
    /// Rules an IPv4 packet cannot skip on its family alone.
    v4_rules: usize,
}

/// Every policy rule of `ir` except those of the NetworkPolicy named
/// `except`, in one forward base chain of table `inet linear` (with copies
/// of the sets they look up), then `accept`.
fn linear_chain(ir: &Ir, except: &str) -> anyhow::Result<LinearChain> {
    let r = Renderer::new(RenderConfig {
        table: "linear".into(),
        ..RenderConfig::default()
    });
    let mut script = String::from("add table inet linear\n");
    for set in ir.sets.values() {
        r.add_set(&mut script, set);
    }
    script.push_str(
        "add chain inet linear forward { type filter hook forward priority 0; policy accept; }\n",
    );
    let (mut rules, mut v4_rules) = (0, 0);
    for c in ir.chains.values() {
        if matches!(&c.policy, PolicyRef::Kubernetes { name, .. } if name == except) {
            continue;
        }
        for rule in &c.rules {
            let text = r
                .rule(ir, rule, &c.id)
                .with_context(|| format!("rendering a rule of {}", c.id.0))?;
            if rule.family != Some(IpFamily::V6) {
                v4_rules += 1;
            }
            rules += 1;
            script.push_str(&format!("add rule inet linear forward {text}\n"));
        }
    }
    script.push_str("add rule inet linear forward accept\n");
    Ok(LinearChain {
        script,
        rules,
        v4_rules,
    })
}

/// Margay's IPv4 policy rules as an iptables agent writes them: one ipset
/// per selector set, and per rule `-p tcp -m comment -m set --match-set …
/// src -m tcp --dport N -j ACCEPT` (the shape of kube-router's and Calico's
/// rules), all in FORWARD, then ACCEPT. `(ipset restore input,
/// iptables-restore input, rules)`.
fn iptables_chain(ir: &Ir, except: &str) -> anyhow::Result<(String, String, usize)> {
    let mut sets = String::new();
    let mut made = std::collections::BTreeSet::new();
    let mut rules = String::from("*filter\n:FORWARD ACCEPT [0:0]\n");
    let mut n = 0;
    for c in ir.chains.values() {
        if matches!(&c.policy, PolicyRef::Kubernetes { name, .. } if name == except) {
            continue;
        }
        for r in &c.rules {
            if r.family == Some(IpFamily::V6) {
                continue;
            }
            let mut line = String::from("-A FORWARD");
            match r.protocol {
                Some(6) => line.push_str(" -p tcp"),
                Some(17) => line.push_str(" -p udp"),
                None => {}
                Some(p) => bail!(
                    "rule {} of {}: protocol {p} not rendered for iptables",
                    r.origin.index,
                    c.id.0
                ),
            }
            line.push_str(&format!(
                " -m comment --comment \"{} {}\"",
                c.id.0, r.origin.index
            ));
            for (m, side) in r
                .src
                .iter()
                .map(|m| (m, "src"))
                .chain(r.dst.iter().map(|m| (m, "dst")))
            {
                let set = ir
                    .sets
                    .get(&m.set)
                    .with_context(|| format!("set {}", m.set))?;
                if made.insert(m.set.clone()) {
                    sets.push_str(&format!("create {} hash:ip\n", m.set));
                    for e in &set.elements {
                        match e {
                            SetElem::Addr(a) => sets.push_str(&format!("add {} {a}\n", m.set)),
                            other => {
                                bail!("set {}: element {other:?} not rendered for ipset", m.set)
                            }
                        }
                    }
                }
                line.push_str(&format!(
                    " -m set {}--match-set {} {side}",
                    if m.negated { "! " } else { "" },
                    m.set
                ));
            }
            match r.dst_ports.as_slice() {
                [] => {}
                [(a, z)] if a == z => line.push_str(&format!(" -m tcp --dport {a}")),
                [(a, z)] => line.push_str(&format!(" -m tcp --dport {a}:{z}")),
                _ => bail!(
                    "rule {} of {}: several port ranges not rendered for iptables",
                    r.origin.index,
                    c.id.0
                ),
            }
            if r.named_dst_port.is_some() || r.icmp.is_some() || !r.src_ports.is_empty() {
                bail!(
                    "rule {} of {}: not rendered for iptables",
                    r.origin.index,
                    c.id.0
                );
            }
            line.push_str(" -j ACCEPT\n");
            rules.push_str(&line);
            n += 1;
        }
    }
    rules.push_str("-A FORWARD -j ACCEPT\nCOMMIT\n");
    Ok((sets, rules, n))
}

/// Runs `program args` in namespace `ns` with `input` on stdin.
fn run_with_input(ns: &Netns, program: &str, args: &[&str], input: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = ns
        .command(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Deletes a pod namespace created by `handwired` when dropped.
struct Owned(Netns);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.delete();
    }
}
