//! `margay-bgpd`: Margay's BGP speaker as a standalone daemon.
//!
//! ```text
//! margay-bgpd --config bgpd.yaml --control /run/margay-bgpd.sock   # run
//! margay-bgpd --control /run/margay-bgpd.sock peers [-o json]       # ask it
//! margay-bgpd --control /run/margay-bgpd.sock routes [--adj-in IP | --adj-out IP] [-o json]
//! margay-bgpd --control SOCK announce 10.1.0.0/24 [--next-hop IP] [--med N] [--community A:B]
//! margay-bgpd --control SOCK withdraw 10.1.0.0/24
//! margay-bgpd --control SOCK refresh 10.0.0.2 [--family ipv6-unicast]
//! margay-bgpd --control SOCK shutdown [--graceful-restart]
//! ```
//!
//! SIGTERM/SIGINT stop it with Cease to every peer; SIGHUP re-reads the
//! config file and applies peer and announcement changes (a change of
//! router id, AS or listen addresses needs a restart).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use margay_bgp::config::AddressFamily;
use margay_bgp::daemon::{Announcement, DaemonConfig, Request, Response, render, request, serve};
use margay_bgp::{RouteQuery, ShutdownMode, Speaker, SpeakerHandle};
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

#[derive(Parser, Debug)]
#[command(name = "margay-bgpd", version, about = "Margay's BGP speaker")]
struct Cli {
    /// YAML config file (runs the daemon).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Control socket: where the daemon listens, or which daemon a
    /// command talks to.
    #[arg(long)]
    control: Option<PathBuf>,
    /// This start is a graceful restart: set the Restart State and
    /// Forwarding State bits and defer advertising until End-of-RIB.
    #[arg(long)]
    restarting: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter (tracing env-filter syntax).
    #[arg(long, env = "MARGAY_BGPD_LOG", default_value = "info")]
    log: String,
    /// Output of commands.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Peers: state, counters, negotiated capabilities.
    Peers,
    /// Routes: the Loc-RIB, or a peer's Adj-RIB-In / Adj-RIB-Out.
    Routes {
        /// What this peer sent us.
        #[arg(long, conflicts_with = "adj_out")]
        adj_in: Option<IpAddr>,
        /// What we send this peer.
        #[arg(long)]
        adj_out: Option<IpAddr>,
    },
    /// Originate a route.
    Announce {
        /// The prefix, e.g. 10.1.0.0/24.
        prefix: String,
        /// Next hop (default: our address on each session).
        #[arg(long)]
        next_hop: Option<IpAddr>,
        /// MULTI_EXIT_DISC.
        #[arg(long)]
        med: Option<u32>,
        /// LOCAL_PREF.
        #[arg(long)]
        local_pref: Option<u32>,
        /// Community ASN:VALUE (repeatable).
        #[arg(long)]
        community: Vec<String>,
    },
    /// Stop originating a route.
    Withdraw {
        /// The prefix.
        prefix: String,
    },
    /// Ask a peer to re-send its routes (ROUTE-REFRESH).
    Refresh {
        /// The peer's address.
        peer: IpAddr,
        /// ipv4-unicast or ipv6-unicast.
        #[arg(long, default_value = "ipv4-unicast")]
        family: String,
    },
    /// Stop the daemon.
    Shutdown {
        /// Close sessions without NOTIFICATION so peers keep our routes
        /// for the restart time.
        #[arg(long)]
        graceful_restart: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match (&cli.command, &cli.config) {
        (Some(cmd), _) => {
            let Some(sock) = &cli.control else {
                bail!("a command needs --control SOCK (the daemon's control socket)");
            };
            rt.block_on(client(sock, cmd, cli.output))
        }
        (None, Some(config)) => {
            init_logging(&cli)?;
            rt.block_on(run(config, cli.control.as_deref(), cli.restarting))
        }
        (None, None) => bail!("nothing to do: give --config FILE to run, or a command"),
    }
}

fn init_logging(cli: &Cli) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .with_context(|| format!("--log {:?} is not a valid filter", cli.log))?;
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
    Ok(())
}

async fn run(config: &Path, control: Option<&Path>, restarting: bool) -> anyhow::Result<()> {
    let cfg = DaemonConfig::load(config)?;
    let mut speaker_cfg = cfg.speaker();
    speaker_cfg.graceful_restart.restarting |= restarting;
    let (speaker, best) = Speaker::start(speaker_cfg).await?;
    // The daemon installs nothing: best routes are read with `routes`.
    drop(best);
    apply(&speaker, None, &cfg).await?;
    info!(router_id = %cfg.router_id, asn = cfg.asn, peers = cfg.peers.len(), "margay-bgpd running");

    let mut control_task = None;
    if let Some(path) = control {
        if path.exists() {
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale control socket {}", path.display()))?;
        }
        let l = UnixListener::bind(path)
            .with_context(|| format!("binding control socket {}", path.display()))?;
        control_task = Some(tokio::spawn(serve(l, speaker.clone())));
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut current = cfg;
    loop {
        let stopped_by_control = async {
            match &mut control_task {
                Some(t) => {
                    let _ = t.await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                match DaemonConfig::load(config) {
                    Ok(new) => match apply(&speaker, Some(&current), &new).await {
                        Ok(()) => {
                            info!("configuration reloaded");
                            current = new;
                        }
                        Err(e) => error!("reload: {e:#}"),
                    },
                    Err(e) => error!("reload: {e}"),
                }
            }
            _ = stopped_by_control => {
                if let Some(p) = control {
                    let _ = std::fs::remove_file(p);
                }
                return Ok(());
            }
        }
    }
    info!("stopping");
    let _ = speaker.shutdown(ShutdownMode::Notify).await;
    if let Some(p) = control {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// Brings the speaker from `old` (None: nothing) to `new`.
async fn apply(
    speaker: &SpeakerHandle,
    old: Option<&DaemonConfig>,
    new: &DaemonConfig,
) -> anyhow::Result<()> {
    if let Some(old) = old
        && (old.router_id != new.router_id
            || old.asn != new.asn
            || old.listen != new.listen
            || old.cluster_id != new.cluster_id
            || old.multipath != new.multipath
            || old.graceful_restart != new.graceful_restart)
    {
        warn!(
            "router_id, as, listen, cluster_id, multipath and graceful_restart changes need a restart; ignoring them"
        );
    }
    let old_peers = old.map(|o| o.peers.as_slice()).unwrap_or(&[]);
    for p in old_peers {
        if !new.peers.iter().any(|n| n.address == p.address) {
            speaker.remove_peer(p.address).await?;
        }
    }
    for p in &new.peers {
        match old_peers.iter().find(|o| o.address == p.address) {
            None => speaker.add_peer(p.clone()).await?,
            Some(o) if o != p => speaker.update_peer(p.clone()).await?,
            Some(_) => {}
        }
    }
    let old_ann: &[Announcement] = old.map(|o| o.announce.as_slice()).unwrap_or(&[]);
    for a in old_ann {
        if !new.announce.iter().any(|n| n.prefix == a.prefix) {
            speaker.withdraw(a.prefix).await?;
        }
    }
    for a in &new.announce {
        if old_ann.iter().any(|o| o == a) {
            continue;
        }
        let route = a.to_local_route().map_err(anyhow::Error::msg)?;
        speaker.announce(a.prefix, route).await?;
    }
    Ok(())
}

async fn client(sock: &Path, cmd: &Command, output: Output) -> anyhow::Result<()> {
    let req = match cmd {
        Command::Peers => Request::Peers,
        Command::Routes { adj_in, adj_out } => Request::Routes {
            query: match (adj_in, adj_out) {
                (Some(p), _) => RouteQuery::AdjIn(*p),
                (_, Some(p)) => RouteQuery::AdjOut(*p),
                _ => RouteQuery::LocRib,
            },
        },
        Command::Announce {
            prefix,
            next_hop,
            med,
            local_pref,
            community,
        } => Request::Announce(Announcement {
            prefix: prefix
                .parse()
                .with_context(|| format!("prefix {prefix:?}"))?,
            next_hop: *next_hop,
            origin: None,
            med: *med,
            local_pref: *local_pref,
            communities: community.clone(),
            large_communities: Vec::new(),
        }),
        Command::Withdraw { prefix } => Request::Withdraw {
            prefix: prefix
                .parse()
                .with_context(|| format!("prefix {prefix:?}"))?,
        },
        Command::Refresh { peer, family } => Request::Refresh {
            peer: *peer,
            family: match family.as_str() {
                "ipv4-unicast" => AddressFamily::Ipv4Unicast,
                "ipv6-unicast" => AddressFamily::Ipv6Unicast,
                other => bail!("--family {other:?}: use ipv4-unicast or ipv6-unicast"),
            },
        },
        Command::Shutdown { graceful_restart } => Request::Shutdown {
            graceful_restart: *graceful_restart,
        },
    };
    let resp = request(sock, &req).await?;
    match (output, resp) {
        (Output::Json, Response::Peers(p)) => println!("{}", serde_json::to_string_pretty(&p)?),
        (Output::Json, Response::Routes(r)) => println!("{}", serde_json::to_string_pretty(&r)?),
        (Output::Table, Response::Peers(p)) => print!("{}", render::peers(&p)),
        (Output::Table, Response::Routes(r)) => print!("{}", render::routes(&r)),
        (_, Response::Ok) => {}
        (_, Response::Error(e)) => bail!("{e}"),
    }
    Ok(())
}
