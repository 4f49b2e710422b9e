use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use margay_lab::pods::spec::{self, PodSpec, Protocol};
use margay_lab::pods::{MatrixOptions, PodRecord, PodRuntime};
use margay_lab::pool_options::{Encapsulation, PoolOptions};
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
        /// The default IPv4 pool's encapsulation between nodes.
        #[arg(long, value_enum, default_value_t = Encapsulation::Never)]
        encapsulation: Encapsulation,
        /// Masquerade traffic from the default pool's pods to destinations
        /// outside every pool.
        #[arg(long)]
        nat_outgoing: bool,
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
    /// Pods: create, delete, list, check (the lab's kubelet and container runtime).
    #[command(subcommand)]
    Pod(PodCommand),
    /// Namespace objects: create, label.
    #[command(subcommand)]
    Namespace(NamespaceCommand),
    /// From inside pod FROM, probe pod TO (or an address): exit 0 when a TCP
    /// connection completes or a UDP echo returns, 1 when not.
    Probe {
        /// NS/NAME of the pod to probe from.
        from: String,
        /// NS/NAME of the target pod, or an IP address.
        to: String,
        #[arg(long)]
        port: u16,
        #[arg(long, default_value = "tcp")]
        protocol: String,
        /// How long to wait, e.g. 1s, 500ms.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        timeout: Duration,
        /// Probe the target's IPv6 address.
        #[arg(long, short = '6')]
        ipv6: bool,
    },
    /// Probe every ordered pair of pods, in parallel, and print who reaches whom.
    Matrix {
        /// Only pods in these namespaces (comma-separated).
        #[arg(long, value_delimiter = ',')]
        namespaces: Vec<String>,
        /// Ports to probe (default: each target's served ports).
        #[arg(long, value_delimiter = ',')]
        ports: Vec<u16>,
        #[arg(long, value_delimiter = ',', default_value = "tcp,udp")]
        protocols: Vec<String>,
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        timeout: Duration,
        /// Probe IPv6 addresses.
        #[arg(long, short = '6')]
        ipv6: bool,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// The server every lab pod runs (started by `pod create`).
    #[command(hide = true)]
    PodServer {
        /// PROTOCOL:PORT list.
        #[arg(long, value_delimiter = ',')]
        ports: Vec<String>,
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum PodCommand {
    /// Create a pod on a node, run CNI ADD for it, start its server, mark it Running.
    Create {
        /// NS/NAME.
        pod: String,
        #[arg(long)]
        node: String,
        /// k=v,... labels.
        #[arg(long)]
        labels: Vec<String>,
        /// k=v,... annotations.
        #[arg(long)]
        annotations: Vec<String>,
        /// tcp:80,udp:81,... ports the pod's server answers on.
        #[arg(long)]
        serve: Vec<String>,
        /// NAME=tcp:80: a named container port (served too).
        #[arg(long)]
        named_port: Vec<String>,
        /// HOSTPORT=tcp:80: a hostPort mapping (served too; portmap does the mapping).
        #[arg(long)]
        host_port: Vec<String>,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// CNI DEL (in reverse through the network configuration), then the object and the namespace.
    Delete { pod: String },
    /// The lab's pods.
    List {
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// CNI CHECK through the pod's network configuration.
    Check {
        pod: String,
        /// Only the plugins of this type (e.g. margay).
        #[arg(long)]
        plugin: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum NamespaceCommand {
    /// Create a Namespace object.
    Create {
        name: String,
        /// k=v,... labels.
        #[arg(long)]
        labels: Vec<String>,
    },
    /// Set (k=v) or remove (k-) labels of a namespace.
    Label {
        name: String,
        #[arg(required = true)]
        labels: Vec<String>,
    },
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
            encapsulation,
            nat_outgoing,
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
            let pool = PoolOptions {
                encapsulation,
                nat_outgoing,
            };
            if !bare && pool != PoolOptions::default() {
                lab.configure_default_pool(pool)?;
            }
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
        Command::PodServer { ports, ready_file } => {
            let ports = spec::parse_ports(&ports)?;
            margay_lab::pods::server::run(&ports, ready_file.as_deref())?;
        }
        Command::Pod(cmd) => {
            let lab = Lab::open(&cli.state_dir)?;
            let rt = PodRuntime::new(&lab)?;
            return pod_command(&rt, cmd);
        }
        Command::Namespace(cmd) => {
            let lab = Lab::open(&cli.state_dir)?;
            let rt = PodRuntime::new(&lab)?;
            match cmd {
                NamespaceCommand::Create { name, labels } => {
                    rt.create_namespace(&name, &spec::parse_key_values(&labels)?)?;
                    println!("namespace/{name} created");
                }
                NamespaceCommand::Label { name, labels } => {
                    let mut changes = BTreeMap::new();
                    for l in &labels {
                        if let Some(k) = l.strip_suffix('-').filter(|_| !l.contains('=')) {
                            changes.insert(k.to_string(), None);
                        } else {
                            for (k, v) in spec::parse_key_values(std::slice::from_ref(l))? {
                                changes.insert(k, Some(v));
                            }
                        }
                    }
                    rt.label_namespace(&name, &changes)?;
                    println!("namespace/{name} labeled");
                }
            }
        }
        Command::Probe {
            from,
            to,
            port,
            protocol,
            timeout,
            ipv6,
        } => {
            let protocol: Protocol = protocol.parse()?;
            let (fns, fname) = spec::parse_pod_ref(&from)?;
            let pods = margay_lab::pods::pods_in(Lab::open(&cli.state_dir)?.state_dir())?;
            let find = |ns: &str, name: &str| {
                pods.iter()
                    .find(|p| p.namespace == ns && p.name == name)
                    .cloned()
                    .with_context(|| {
                        format!("no pod {ns}/{name} in this lab (see `margay-lab pod list`)")
                    })
            };
            let src = find(&fns, &fname)?;
            let ip: IpAddr = match to.parse() {
                Ok(ip) => ip,
                Err(_) => {
                    let (tns, tname) = spec::parse_pod_ref(&to)?;
                    let dst = find(&tns, &tname)?;
                    dst.ip(ipv6).with_context(|| {
                        format!("pod {to} has no IPv{} address", if ipv6 { 6 } else { 4 })
                    })?
                }
            };
            let ok =
                margay_lab::probe::probe(&src.netns, SocketAddr::new(ip, port), protocol, timeout)
                    .with_context(|| format!("probing from {from}"))?;
            println!(
                "{from} -> {ip} {protocol}/{port}: {}",
                if ok { "connected" } else { "no answer" }
            );
            std::process::exit(if ok { 0 } else { 1 });
        }
        Command::Matrix {
            namespaces,
            ports,
            protocols,
            timeout,
            ipv6,
            output,
        } => {
            let protocols = protocols
                .iter()
                .map(|p| p.parse::<Protocol>())
                .collect::<Result<Vec<_>, _>>()?;
            let pods = margay_lab::pods::pods_in(Lab::open(&cli.state_dir)?.state_dir())?;
            let pods: Vec<_> = pods
                .into_iter()
                .filter(|p| namespaces.is_empty() || namespaces.contains(&p.namespace))
                .collect();
            let opts = MatrixOptions {
                namespaces,
                ports,
                protocols,
                timeout,
                ipv6,
                ..MatrixOptions::default()
            };
            let m = margay_lab::pods::matrix_of(&pods, &opts);
            match output {
                Output::Table => print!("{}", m.render_table()),
                Output::Json => println!("{}", serde_json::to_string_pretty(&m)?),
            }
        }
    }
    Ok(())
}

fn pod_command(rt: &PodRuntime, cmd: PodCommand) -> anyhow::Result<()> {
    match cmd {
        PodCommand::Create {
            pod,
            node,
            labels,
            annotations,
            serve,
            named_port,
            host_port,
            output,
        } => {
            let (ns, name) = spec::parse_pod_ref(&pod)?;
            let mut s = PodSpec::new(&ns, &name, &node);
            s.labels = spec::parse_key_values(&labels)?;
            s.annotations = spec::parse_key_values(&annotations)?;
            s.serve = spec::parse_ports(&serve)?;
            for n in named_port.iter().flat_map(|s| s.split(',')) {
                let (k, p) = spec::parse_assignment(n)?;
                s.named_ports.insert(k, p);
            }
            for h in host_port.iter().flat_map(|s| s.split(',')) {
                let (k, p) = spec::parse_assignment(h)?;
                let hp: u16 =
                    k.parse().ok().filter(|&p| p > 0).with_context(|| {
                        format!("--host-port {h:?}: host port must be 1 to 65535")
                    })?;
                s.host_ports.insert(hp, p);
            }
            let rec = rt.create_pod(&s)?;
            match output {
                Output::Table => print_pods(std::slice::from_ref(&rec)),
                Output::Json => println!("{}", serde_json::to_string_pretty(&rec)?),
            }
        }
        PodCommand::Delete { pod } => {
            let (ns, name) = spec::parse_pod_ref(&pod)?;
            rt.delete_pod(&ns, &name)?;
            println!("pod {pod} deleted");
        }
        PodCommand::List { output } => {
            let pods = rt.pods()?;
            match output {
                Output::Table => print_pods(&pods),
                Output::Json => println!("{}", serde_json::to_string_pretty(&pods)?),
            }
        }
        PodCommand::Check { pod, plugin } => {
            let (ns, name) = spec::parse_pod_ref(&pod)?;
            rt.check_pod(&ns, &name, plugin.as_deref())?;
            println!("pod {pod}: CNI CHECK passed");
        }
    }
    Ok(())
}

fn print_pods(pods: &[PodRecord]) {
    println!(
        "{:<32} {:<8} {:<32} {:<20} NETNS",
        "POD", "NODE", "IPS", "PORTS"
    );
    for p in pods {
        let ips: Vec<String> = p.ips.iter().map(ToString::to_string).collect();
        let ports: Vec<String> = p.ports.iter().map(ToString::to_string).collect();
        println!(
            "{:<32} {:<8} {:<32} {:<20} {}",
            p.key(),
            p.node,
            ips.join(","),
            if ports.is_empty() {
                "-".to_string()
            } else {
                ports.join(",")
            },
            p.netns
        );
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 1s, 500ms)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unit must be ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
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
