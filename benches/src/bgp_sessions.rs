//! `bgp-sessions`: 200 iBGP peers connect at once to one speaker that has
//! them all as route-reflector clients (the route-reflector case):
//! time until every peer has its session Established and the speaker's
//! End-of-RIB (initial sync done), for margay-bgpd, BIRD 2 and GoBGP.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use margay_lab::netns::{NetnsGuard, veth};

use crate::bgp_gen::{Dut, GenSession, Kind};
use crate::figure::{Better, Figure, Measure};
use crate::{Benchmark, Context};

pub fn benchmark() -> Benchmark {
    Benchmark {
        name: "bgp-sessions",
        about: "200 route-reflector clients connecting at once to margay-bgpd, BIRD 2, GoBGP: time to all Established with End-of-RIB (best of 3)",
        run,
    }
}

fn run(ctx: &Context) -> anyhow::Result<Vec<Figure>> {
    let peers = if ctx.quick { 20 } else { 200 };
    let rounds = if ctx.quick { 1 } else { 3 };
    let mut times: Vec<(Kind, Vec<f64>)> = [Kind::Bird, Kind::Margay, Kind::GoBgp]
        .into_iter()
        .map(|k| (k, Vec::new()))
        .collect();
    // Alternate speakers round by round so drift in load hits all alike.
    for round in 0..rounds {
        for (kind, samples) in &mut times {
            let t = setup(ctx, *kind, peers, round)
                .with_context(|| format!("{} with {peers} peers", kind.label()))?;
            eprintln!("bgp-sessions: {}: {:.0} ms", kind.label(), t * 1e3);
            samples.push(t * 1e3);
        }
    }
    // Best of the rounds: BIRD sometimes leaves a few connection attempts
    // to the kernel's SYN retransmission backoff (about 110 s instead of
    // about 1.5 s), which says more about the run than about set-up cost.
    let mut medians: Vec<(Kind, f64)> = times
        .into_iter()
        .map(|(k, v)| (k, v.into_iter().fold(f64::INFINITY, f64::min)))
        .collect();
    let Some(pos) = medians.iter().position(|(k, _)| *k == Kind::Margay) else {
        bail!("margay-bgpd was not measured");
    };
    let (_, m) = medians.remove(pos);
    Ok(medians
        .into_iter()
        .map(|(kind, other)| {
            Figure::new(
                format!("{peers} RR clients: all Established with End-of-RIB (best of {rounds})"),
                Measure::new("margay-bgpd", m, "ms"),
                Measure::new(kind.label(), other, "ms"),
                Better::Lower,
            )
        })
        .collect())
}

/// Peer `i`'s address: 10.0.1.1 upwards.
fn peer_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8)
}

fn setup(ctx: &Context, kind: Kind, n: usize, round: usize) -> anyhow::Result<f64> {
    let dut_ns = NetnsGuard::create_unique("mbsd")?;
    let gen_ns = NetnsGuard::create_unique("mbsg")?;
    veth(&dut_ns, "eth0", &gen_ns, "eth0")?;
    let dut_ip = Ipv4Addr::new(10, 0, 0, 1);
    dut_ns.ip(&["addr", "add", "10.0.0.1/16", "dev", "eth0"])?;
    let ips: Vec<Ipv4Addr> = (0..n).map(peer_ip).collect();
    // One batch of `ip addr add` through `ip -batch`.
    let batch: String = ips
        .iter()
        .map(|ip| format!("addr add {ip}/16 dev eth0\n"))
        .collect();
    let batch_file = ctx.work_dir.join(format!("addrs-{kind:?}-{round}"));
    std::fs::write(&batch_file, batch)?;
    gen_ns.ip(&["-batch", &batch_file.display().to_string()])?;
    let dir = ctx.work_dir.join(format!("bgp-sessions-{kind:?}-{round}"));
    let dut = Dut::start(kind, &dut_ns, &dir, dut_ip, &ips, true)?;
    // As in a real fabric, the reflector is up before its clients come.
    let ready_by = Instant::now() + Duration::from_secs(120);
    while !dut.peers_ready(n) {
        if Instant::now() > ready_by {
            bail!(
                "{} never had its {n} peers ready:\n{}",
                kind.label(),
                dut.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let worker = crate::bgp_gen::in_netns(&gen_ns, move || {
        Box::pin(async move {
            let start = Instant::now();
            let deadline = start + Duration::from_secs(300);
            let mut tasks = tokio::task::JoinSet::new();
            for ip in ips {
                tasks.spawn(async move {
                    let mut s = GenSession::open(ip, dut_ip, deadline).await?;
                    s.until_end_of_rib().await?;
                    // Hold the session until every peer is done.
                    Ok::<GenSession, anyhow::Error>(s)
                });
            }
            let mut sessions = Vec::new();
            while let Some(r) = tasks.join_next().await {
                sessions.push(r??);
            }
            Ok::<f64, anyhow::Error>(start.elapsed().as_secs_f64())
        })
    });
    let t = match worker.join() {
        Ok(r) => r?,
        Err(_) => bail!("generator thread panicked"),
    };
    t.with_context(|| dut.log_tail())
}
