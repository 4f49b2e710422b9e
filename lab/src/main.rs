use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use margay_lab::state::DEFAULT_STATE_DIR;
use margay_lab::{Lab, Status, Topology, UpOptions};

/// Build and drive Margay lab clusters made of network namespaces.
#[derive(Debug, Parser)]
#[command(name = "margay-lab", version)]
struct Cli {
    /// Directory holding the lab's state; one lab per directory.
    #[arg(long, global = true, env = "MARGAY_LAB_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a cluster and return once it is ready.
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// l2: all nodes on one subnet; routed: two subnets joined by a router.
        #[arg(long, value_enum, default_value_t = Topology::L2)]
        topology: Topology,
        /// Namespaces and links only: no API server, no agents.
        #[arg(long)]
        bare: bool,
        /// API server, CRDs and the default IPPool, but no margay-agent.
        #[arg(long)]
        no_agents: bool,
        /// Also create the IPv6 pool fd00:244::/48: pods get both families.
        #[arg(long)]
        ipv6_pool: bool,
        /// An extra argument for every margay-agent (repeat it), e.g.
        /// --agent-arg=--log-level --agent-arg=debug.
        #[arg(long = "agent-arg", allow_hyphen_values = true)]
        agent_args: Vec<String>,
    },
    /// Remove every namespace, link and process of the lab (also after a crashed `up`).
    Down,
    /// Show the lab: nodes, addresses, processes.
    Status {
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Print the path of the kubeconfig for the lab's API server.
    Kubeconfig,
    /// Run a command inside a node's namespace (or `router`, `fabric`).
    Exec {
        node: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Start, stop (SIGTERM), restart or kill (SIGKILL) a node's margay-agent.
    Agent {
        #[arg(value_enum)]
        action: AgentAction,
        node: String,
    },
    /// Run the Kubernetes API emulator.
    Apiserver(margay_lab::apiserver::Args),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AgentAction {
    Start,
    Stop,
    Restart,
    Kill,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Up {
            nodes,
            topology,
            bare,
            no_agents,
            ipv6_pool,
            agent_args,
        } => {
            let opts = UpOptions {
                nodes,
                topology,
                state_dir: cli.state_dir,
                bare,
                agents: !no_agents,
                ipv6_pool,
                agent_args,
            };
            let lab = Lab::up(&opts)?;
            print_table(&lab.status());
        }
        Command::Down => {
            let report = Lab::down(&cli.state_dir)?;
            println!(
                "removed {} namespaces, stopped {} processes",
                report.namespaces.len(),
                report.processes.len()
            );
        }
        Command::Status { output } => {
            let status = Lab::open(&cli.state_dir)?.status();
            match output {
                Output::Table => print_table(&status),
                Output::Json => println!("{}", serde_json::to_string_pretty(&status)?),
            }
        }
        Command::Kubeconfig => {
            let lab = Lab::open(&cli.state_dir)?;
            let path = lab
                .kubeconfig()
                .context("this lab was built with --bare and has no API server")?;
            println!("{}", path.display());
        }
        Command::Exec { node, command } => {
            let lab = Lab::open(&cli.state_dir)?;
            let err = lab.exec_command(&node, &command)?.exec();
            return Err(err).with_context(|| format!("running {:?} in {node}", command.join(" ")));
        }
        Command::Agent { action, node } => {
            let lab = Lab::open(&cli.state_dir)?;
            match action {
                AgentAction::Start => {
                    println!("agent of {node} ready (pid {})", lab.start_agent(&node)?)
                }
                AgentAction::Restart => {
                    println!("agent of {node} ready (pid {})", lab.restart_agent(&node)?)
                }
                AgentAction::Stop => lab.stop_agent(&node)?,
                AgentAction::Kill => lab.kill_agent(&node)?,
            }
        }
        Command::Apiserver(args) => margay_lab::apiserver::run(args)?,
    }
    Ok(())
}

fn print_table(s: &Status) {
    println!(
        "lab {} ({}, {} nodes), state in {}",
        s.id,
        s.topology,
        s.nodes.len(),
        s.state_dir.display()
    );
    match (&s.api_url, &s.kubeconfig) {
        (Some(url), Some(kc)) => {
            println!(
                "api server  {url} (nodes use {})",
                s.api_url_nodes.as_deref().unwrap_or("-")
            );
            println!("kubeconfig  {}", kc.display());
        }
        _ => println!("api server  none (bare lab)"),
    }
    println!();
    println!("NODE     SUBNET  IPV4           IPV6             NAMESPACE                STATE");
    for n in &s.nodes {
        let state = if n.up { "up" } else { "missing" };
        println!(
            "{:<8} {:<7} {:<14} {:<16} {:<24} {}",
            n.name, n.subnet, n.ipv4, n.ipv6, n.netns, state
        );
    }
    if !s.processes.is_empty() {
        println!();
        println!("PROCESS          PID      STATE");
        for p in &s.processes {
            let state = if p.running { "running" } else { "exited" };
            println!("{:<16} {:<8} {}", p.role, p.pid, state);
        }
    }
}
