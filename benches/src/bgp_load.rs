//! `bgp-load`: a generator peer feeds a full-size IPv4 table (1M prefixes
//! in realistic attribute groups) to margay-bgpd, BIRD 2 and GoBGP in turn.
//! Measured: time from the first UPDATE until every prefix is in the
//! speaker's table, peak resident memory, and memory per prefix (resident
//! growth over the load ÷ prefixes).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use margay_lab::netns::{NetnsGuard, veth};
use tokio::io::AsyncWriteExt;

use crate::bgp_gen::{Dut, GenSession, Kind, synthetic_table};
use crate::figure::{Better, Figure, Goal, Measure, median};
use crate::{Benchmark, Context};

pub fn benchmark() -> Benchmark {
    Benchmark {
        name: "bgp-load",
        about: "1M IPv4 prefixes from a generator peer into margay-bgpd, BIRD 2 and GoBGP: time, peak RSS, bytes per prefix",
        run,
    }
}

/// What one speaker did with the table.
struct Load {
    seconds: f64,
    peak_rss: f64,
    bytes_per_prefix: f64,
}

fn run(ctx: &Context) -> anyhow::Result<Vec<Figure>> {
    let n = if ctx.quick { 100_000 } else { 1_000_000 };
    let dut_ip = "10.0.0.1".parse()?;
    let gen_ip = "10.0.0.2".parse()?;
    let (table, groups) = synthetic_table(n, gen_ip)?;
    eprintln!(
        "bgp-load: {n} prefixes in {groups} attribute groups, {} MB of UPDATEs",
        table.len() / 1_000_000
    );
    let table = Arc::new(table);
    // Rounds alternate the speakers so drift in machine load hits all
    // alike; GoBGP takes a minute per round and is measured once.
    let rounds = if ctx.quick { 1 } else { 3 };
    let mut samples: Vec<(Kind, Vec<Load>)> = Vec::new();
    for round in 0..rounds {
        // BIRD first: it is the quickest, so a broken environment shows early.
        for kind in [Kind::Bird, Kind::Margay, Kind::GoBgp] {
            if kind == Kind::GoBgp && round > 0 {
                continue;
            }
            let r = load(ctx, kind, n, dut_ip, gen_ip, &table, round)
                .with_context(|| format!("loading {}", kind.label()))?;
            eprintln!(
                "bgp-load: {}: {:.2} s, peak RSS {:.0} MB, {:.0} bytes/prefix",
                kind.label(),
                r.seconds,
                r.peak_rss / 1e6,
                r.bytes_per_prefix
            );
            match samples.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, v)) => v.push(r),
                None => samples.push((kind, vec![r])),
            }
        }
    }
    let mut results: Vec<(Kind, Load)> = samples
        .into_iter()
        .map(|(k, v)| {
            let f = |get: fn(&Load) -> f64| median(&mut v.iter().map(get).collect::<Vec<_>>());
            let l = Load {
                seconds: f(|l| l.seconds),
                peak_rss: f(|l| l.peak_rss),
                bytes_per_prefix: f(|l| l.bytes_per_prefix),
            };
            (k, l)
        })
        .collect();
    let Some(pos) = results.iter().position(|(k, _)| *k == Kind::Margay) else {
        bail!("margay-bgpd was not measured");
    };
    let (_, m) = results.remove(pos);
    let mut figs = Vec::new();
    let count = if ctx.quick { "100k" } else { "1M" };
    for (kind, other) in &results {
        figs.push(
            Figure::new(
                format!("time to load {count} IPv4 prefixes"),
                Measure::new("margay-bgpd", m.seconds, "s"),
                Measure::new(kind.label(), other.seconds, "s"),
                Better::Lower,
            )
            .with_goal(Goal::Ratio(1.0)),
        );
    }
    for (kind, other) in &results {
        figs.push(
            Figure::new(
                "memory per prefix",
                Measure::new("margay-bgpd", m.bytes_per_prefix, "bytes"),
                Measure::new(kind.label(), other.bytes_per_prefix, "bytes"),
                Better::Lower,
            )
            .with_goal(Goal::Absolute(150.0)),
        );
    }
    for (kind, other) in &results {
        figs.push(Figure::new(
            format!("peak RSS with {count} prefixes"),
            Measure::new("margay-bgpd", m.peak_rss / 1e6, "MB"),
            Measure::new(kind.label(), other.peak_rss / 1e6, "MB"),
            Better::Lower,
        ));
    }
    Ok(figs)
}

fn load(
    ctx: &Context,
    kind: Kind,
    n: usize,
    dut_ip: std::net::Ipv4Addr,
    gen_ip: std::net::Ipv4Addr,
    table: &Arc<Vec<u8>>,
    round: usize,
) -> anyhow::Result<Load> {
    let dut_ns = NetnsGuard::create_unique("mbld")?;
    let gen_ns = NetnsGuard::create_unique("mblg")?;
    veth(&dut_ns, "eth0", &gen_ns, "eth0")?;
    dut_ns.ip(&["addr", "add", &format!("{dut_ip}/24"), "dev", "eth0"])?;
    gen_ns.ip(&["addr", "add", &format!("{gen_ip}/24"), "dev", "eth0"])?;
    let dir = ctx.work_dir.join(format!("bgp-load-{kind:?}-{round}"));
    let dut = Dut::start(kind, &dut_ns, &dir, dut_ip, &[gen_ip], false)?;

    let (tx, rx) = std::sync::mpsc::channel::<Instant>();
    let stop = Arc::new(AtomicBool::new(false));
    let (t, s) = (Arc::clone(table), Arc::clone(&stop));
    let gen_thread = crate::bgp_gen::in_netns(&gen_ns, move || {
        Box::pin(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut g = GenSession::open(gen_ip, dut_ip, deadline).await?;
            let _ = tx.send(Instant::now());
            g.stream.write_all(&t).await?;
            g.idle(s).await
        })
    });
    let session_up = rx
        .recv_timeout(Duration::from_secs(90))
        .with_context(|| format!("no session with {}:\n{}", kind.label(), dut.log_tail()))?;
    let (rss_before, _) = dut.memory()?;
    let limit = Duration::from_secs(if ctx.quick { 30 } else { 1200 });
    let done = loop {
        if dut.routes().is_some_and(|r| r as usize >= n) {
            break Instant::now();
        }
        if session_up.elapsed() > limit {
            bail!(
                "{} holds {:?} of {n} routes after {limit:?}:\n{}",
                kind.label(),
                dut.routes(),
                dut.log_tail()
            );
        }
        if gen_thread.is_finished() {
            bail!("the generator stopped early:\n{}", dut.log_tail());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (rss_after, peak) = dut.memory()?;
    stop.store(true, Ordering::Relaxed);
    match gen_thread.join() {
        Ok(r) => {
            r??;
        }
        Err(_) => bail!("the generator thread panicked"),
    }
    Ok(Load {
        seconds: done.duration_since(session_up).as_secs_f64(),
        peak_rss: peak as f64,
        bytes_per_prefix: rss_after.saturating_sub(rss_before) as f64 / n as f64,
    })
}
