//! `cni-add`: how long a CNI ADD takes on a lab node, one at a time (p50,
//! p99), and how many pods per second a node wires with eight ADDs at once.
//!
//! Subject: `margay` (the plugin exec'd by the lab's runtime code, asking the
//! node's real agent for addresses over its socket, allocating in IPAM in the
//! API server, creating the veth and waiting for the agent's Ready).
//! Comparator: the reference `ptp` plugin with `host-local` IPAM (Debian's
//! containernetworking-plugins), doing the same veth + /32 + routes wiring
//! with no agent and no API server: the floor of what a CNI ADD costs. Same
//! node namespace, same pod namespaces, same load shape, alternated rounds.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use margay_lab::netns::Netns;
use margay_lab::pods::PodRuntime;
use margay_lab::pods::cni::{self, AttachmentParams, CniExec, ConfList};
use margay_lab::pods::spec::PodSpec;
use margay_lab::topology::netns_prefix;
use margay_lab::{LabGuard, Topology, UpOptions};
use serde_json::{Map, json};

use crate::figure::{Better, Figure, Goal, Measure, median};
use crate::{Benchmark, Context};

const CONCURRENCY: usize = 8;

pub fn benchmark() -> Benchmark {
    Benchmark {
        name: "cni-add",
        about: "CNI ADD latency and pods per second on one node: margay (agent, IPAM in the API) against ptp + host-local",
        run,
    }
}

struct Plugin {
    label: &'static str,
    list: ConfList,
}

struct Bench {
    exec: CniExec,
    /// Pod namespaces, and the uid of each pod's object.
    pods: Vec<String>,
    uids: Vec<String>,
}

impl Bench {
    fn attachment(&self, plugin: &str, i: usize) -> AttachmentParams {
        let cid = format!("bench-{plugin}-{i}");
        AttachmentParams {
            netns_path: format!("/run/netns/{}", self.pods[i]),
            ifname: "eth0".into(),
            args: cni::k8s_cni_args("bench", &format!("p{i}"), &self.uids[i], &cid),
            container_id: cid,
        }
    }

    /// ADD of every pod, `parallel` at a time; returns each ADD's latency (ms)
    /// and the wall time of the whole round (s).
    fn add_round(&self, p: &Plugin, parallel: usize) -> anyhow::Result<(Vec<f64>, f64)> {
        let next = AtomicUsize::new(0);
        let lat = Mutex::new(Vec::new());
        let errors = Mutex::new(Vec::new());
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..parallel {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= self.pods.len() {
                            return;
                        }
                        let t = Instant::now();
                        match self
                            .exec
                            .add(&p.list, &self.attachment(p.label, i), &Map::new())
                        {
                            Ok(_) => lat.lock().unwrap().push(t.elapsed().as_secs_f64() * 1e3),
                            Err(e) => errors.lock().unwrap().push(format!("{}: {e}", p.label)),
                        }
                    }
                });
            }
        });
        let wall = start.elapsed().as_secs_f64();
        if let Some(e) = errors.into_inner().unwrap().into_iter().next() {
            anyhow::bail!(e);
        }
        Ok((lat.into_inner().unwrap(), wall))
    }

    fn del_all(&self, p: &Plugin) -> anyhow::Result<()> {
        for i in 0..self.pods.len() {
            self.exec
                .del(&p.list, &self.attachment(p.label, i), &Map::new(), None)
                .with_context(|| format!("{} DEL", p.label))?;
        }
        Ok(())
    }
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

fn run(ctx: &Context) -> anyhow::Result<Vec<Figure>> {
    let lab = LabGuard::up(&UpOptions {
        nodes: 1,
        topology: Topology::L2,
        state_dir: ctx.work_dir.join("cni-lab"),
        bare: false,
        agents: true,
        ipv6_pool: false,
        agent_args: Vec::new(),
    })?;
    let runtime = PodRuntime::new(&lab)?;
    let node = lab.plan().nodes[0].clone();
    // Only the margay plugin of the agent's list: the comparator has no
    // portmap/bandwidth either.
    let mut margay = Plugin {
        label: "margay",
        list: runtime.node_conflist(&node.name, margay_lab::pods::CONFIG_WAIT)?,
    };
    margay.list.plugins.truncate(1);
    let host_local_dir: PathBuf = ctx.work_dir.join("host-local");
    let ptp = Plugin {
        label: "ptp",
        list: cni::parse_conflist(
            &ctx.work_dir.join("ptp.conflist"),
            json!({
                "cniVersion": "1.0.0",
                "name": "bench-ptp",
                "plugins": [{
                    "type": "ptp",
                    "mtu": 1450,
                    "ipam": {
                        "type": "host-local",
                        "subnet": "10.250.0.0/16",
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": host_local_dir,
                    },
                }],
            })
            .to_string()
            .as_bytes(),
        )?,
    };
    let n = if ctx.quick { 20 } else { 100 };
    let prefix = netns_prefix(&lab.plan().id);
    let (mut pods, mut uids) = (Vec::new(), Vec::new());
    for i in 0..n {
        // The agent reads the pod (for its address annotations): it must exist.
        uids.push(runtime.create_pod_object(&PodSpec::new(
            "bench",
            &format!("p{i}"),
            &node.name,
        ))?);
        let name = format!("{prefix}pod-bench{i}");
        Netns::create(&name)?;
        pods.push(name);
    }
    let bench = Bench {
        exec: CniExec {
            cni_path: runtime.cni_path().to_vec(),
            runtime_netns: PathBuf::from(format!("/run/netns/{}", node.netns)),
        },
        pods,
        uids,
    };

    let rounds = if ctx.quick { 1 } else { 3 };
    let mut lat = [Vec::new(), Vec::new()];
    let mut rate = [Vec::new(), Vec::new()];
    // Warm-up: first execs pay page-cache misses, the agent its first block.
    for p in [&margay, &ptp] {
        bench.add_round(p, 1)?;
        bench.del_all(p)?;
    }
    for _ in 0..rounds {
        for (k, p) in [&margay, &ptp].into_iter().enumerate() {
            let (l, _) = bench.add_round(p, 1)?;
            lat[k].extend(l);
            bench.del_all(p)?;
            let (_, wall) = bench.add_round(p, CONCURRENCY)?;
            rate[k].push(n as f64 / wall);
            bench.del_all(p)?;
        }
    }
    let [mut lm, mut lp] = lat;
    let [mut rm, mut rp] = rate;
    Ok(vec![
        Figure::new(
            "CNI ADD latency p50 (one at a time)",
            Measure::new("margay", percentile(&mut lm, 50.0), "ms"),
            Measure::new("ptp + host-local", percentile(&mut lp, 50.0), "ms"),
            Better::Lower,
        )
        .with_goal(Goal::Absolute(20.0)),
        Figure::new(
            "CNI ADD latency p99 (one at a time)",
            Measure::new("margay", percentile(&mut lm, 99.0), "ms"),
            Measure::new("ptp + host-local", percentile(&mut lp, 99.0), "ms"),
            Better::Lower,
        )
        .with_goal(Goal::Absolute(60.0)),
        Figure::new(
            format!("pods wired per second on one node ({CONCURRENCY} ADDs at once)"),
            Measure::new("margay", median(&mut rm), "pods/s"),
            Measure::new("ptp + host-local", median(&mut rp), "pods/s"),
            Better::Higher,
        )
        .with_goal(Goal::Absolute(50.0)),
    ])
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut s, 50.0), 50.0);
        assert_eq!(percentile(&mut s, 99.0), 99.0);
        assert_eq!(percentile(&mut [3.0, 1.0, 2.0], 50.0), 2.0);
    }
}
