//! The command line: one struct per command, each with examples. The
//! reference page `docs/reference/margayctl.md` is generated from these
//! definitions (see [`crate::docs`]).

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::path::PathBuf;

/// The kubectl-style output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    /// Columns, as `kubectl get` prints them.
    #[default]
    Table,
    /// Columns, with the extra ones.
    Wide,
    Yaml,
    Json,
}

const TOP_EXAMPLES: &str = "\
Examples:
  margayctl get ippools
  margayctl apply -f pools.yaml
  margayctl ipam show --show-blocks
  margayctl ipam check -o report.json
  margayctl policy explain shop/front shop/db --port 5432
  margayctl node status --all
  margayctl bgp routes --peer 10.0.0.2
  kubectl margay version            # the same binary, as a kubectl plugin

Exit codes: 0 ok, 1 error, 2 usage error, 3 problems found (ipam check).";

/// margayctl: manage Margay (margay.dev resources, IPAM) and collect diagnostics.
#[derive(Debug, Parser)]
#[command(
    name = "margayctl",
    version,
    about = "Manage Margay: margay.dev resources, IPAM, diagnostics",
    long_about = "Manage Margay: margay.dev resources, IPAM, diagnostics.\n\n\
        Talks to the Kubernetes API as kubectl does: --kubeconfig, else $KUBECONFIG, \
        else ~/.kube/config, else the in-cluster service account; --context picks a context.",
    after_help = TOP_EXAMPLES,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Clone, Args, Default)]
pub struct GlobalArgs {
    /// Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current-context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace Margay's agents run in (for `version`, `diags`). margay.dev
    /// kinds are cluster-scoped and ignore it.
    #[arg(
        short = 'n',
        long,
        global = true,
        value_name = "NS",
        default_value = "kube-system"
    )]
    pub namespace: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Get(GetArgs),
    /// Create or replace resources from files (validated before anything is written).
    Apply(WriteArgs),
    Create(CreateArgs),
    /// Replace existing resources from files (validated before anything is written).
    Replace(WriteArgs),
    Delete(DeleteArgs),
    Label(LabelArgs),
    #[command(subcommand)]
    Ipam(IpamCommand),
    #[command(subcommand)]
    Policy(PolicyCommand),
    #[command(subcommand)]
    Node(NodeCommand),
    #[command(subcommand)]
    Bgp(BgpCommand),
    Version(VersionArgs),
    Diags(DiagsArgs),
    /// Print the generated reference pages (for the docs drift test).
    #[command(hide = true)]
    Docs(DocsArgs),
}

/// Display one or many margay.dev resources.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  margayctl get ippools
  margayctl get ippool default-ipv4-ippool -o yaml
  margayctl get bgppeers -o wide
  margayctl get gnp -l team=web -o json
  margayctl get -f pools.yaml

Kinds (any of the names): ippool|ippools|pool|ipp, bgppeer|bgppeers|bgpp|bp,
bgpconfiguration|bgpconfig, globalnetworkpolicy|gnp, agentconfiguration|agentconfig,
ipamconfiguration|ipamconfig, ipamblock|ipamblocks, blockaffinity|blockaffinities,
ipamhandle|ipamhandles (also Kind.margay.dev).")]
pub struct GetArgs {
    /// The kind, then names (none: all objects of the kind).
    #[arg(value_name = "KIND [NAME...]")]
    pub args: Vec<String>,
    /// Read the kinds and names from these files ('-' for stdin).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Only objects whose labels match this label selector (e.g. `team=web,tier!=db`).
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  margayctl apply -f pools.yaml             # create or replace each object
  margayctl replace -f pool.yaml            # the object must exist
  cat peer.yaml | margayctl apply -f -
  margayctl apply -f policies/ --dry-run    # validate, and let the server check, write nothing

Every object of every file is validated before anything is written: an error names the
file, the object and the field, and nothing is written. A metadata.resourceVersion in the
file makes the write conditional on it (409 Conflict if the object changed).")]
pub struct WriteArgs {
    /// Files (YAML, several documents allowed; JSON; `-` for stdin; directories).
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Validate and send with dryRun=All: the server checks, nothing is stored.
    #[arg(long)]
    pub dry_run: bool,
    /// Allow writing IPAMBlock, BlockAffinity and IPAMHandle objects, which
    /// only Margay's IPAM should write (repairs by hand only).
    #[arg(long)]
    pub allow_ipam_writes: bool,
}

/// Create resources from files; fails for objects that exist.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  margayctl create -f pool.yaml
  margayctl create -f peers.yaml --skip-exists")]
pub struct CreateArgs {
    #[command(flatten)]
    pub write: WriteArgs,
    /// Objects that already exist are left alone instead of failing.
    #[arg(long)]
    pub skip_exists: bool,
}

/// Delete resources by kind and name, or those named in files.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  margayctl delete ippool old-pool
  margayctl delete bgppeers rack1-tor rack2-tor
  margayctl delete -f peers.yaml --skip-not-found")]
pub struct DeleteArgs {
    /// The kind, then one or more names.
    #[arg(value_name = "KIND NAME...")]
    pub args: Vec<String>,
    /// Delete the objects named in these files.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Objects that do not exist are not an error.
    #[arg(long)]
    pub skip_not_found: bool,
    /// Ask the server to check the delete with dryRun=All; nothing is deleted.
    #[arg(long)]
    pub dry_run: bool,
    /// Allow deleting IPAMBlock, BlockAffinity and IPAMHandle objects.
    #[arg(long)]
    pub allow_ipam_writes: bool,
}

/// Add, change or remove labels of resources.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  margayctl label ippool pool-a zone=east
  margayctl label ippool pool-a zone=west --overwrite
  margayctl label ippool pool-a zone-            # remove the label
  margayctl label -f peers.yaml rack=r1")]
pub struct LabelArgs {
    /// KIND NAME then labels (`key=value` to set, `key-` to remove); with -f only labels.
    #[arg(value_name = "KIND NAME KEY=VALUE|KEY-")]
    pub args: Vec<String>,
    /// Label the objects named in these files.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Allow changing a label that already has another value.
    #[arg(long)]
    pub overwrite: bool,
}

/// IP address management: usage, consistency checks, repairs, settings.
#[derive(Debug, Subcommand)]
pub enum IpamCommand {
    Show(IpamShowArgs),
    Check(IpamCheckArgs),
    Release(IpamReleaseArgs),
    Configure(IpamConfigureArgs),
}

/// Show pools and blocks: total, in use and free addresses, block affinity.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  margayctl ipam show
  margayctl ipam show --show-blocks
  margayctl ipam show --node node1
  margayctl ipam show --show-configuration -o json")]
pub struct IpamShowArgs {
    /// Also list every block with its affinity (node).
    #[arg(long)]
    pub show_blocks: bool,
    /// Only this node's blocks, and the addresses it borrowed from others (implies --show-blocks).
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Also show the cluster IPAM settings (IPAMConfiguration default).
    #[arg(long)]
    pub show_configuration: bool,
    /// Output format (wide = table).
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// Check IPAM for leaked addresses, orphan blocks, duplicate allocations and more.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  margayctl ipam check
  margayctl ipam check -o report.json      # then: margayctl ipam release --from-report report.json
  margayctl ipam check -o - | jq .leakedAddresses

Exit code 0 when everything is consistent, 3 when problems were found, 1 on errors.
An address is leaked when its node or its pod no longer exists. The agents' IPAM garbage
collector releases such addresses after a grace period; `ipam release` does it now.")]
pub struct IpamCheckArgs {
    /// Write the report (JSON) to this file; `-` for stdout.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// List every allocated address, not only problems.
    #[arg(long)]
    pub show_all_ips: bool,
}

/// Release the leaked addresses of an `ipam check` report (a dry run unless --yes).
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  margayctl ipam check -o report.json
  margayctl ipam release --from-report report.json          # dry run: what would be released
  margayctl ipam release --from-report report.json --yes    # release

Each address is checked again just before release: only addresses still leaked and still
held by the handle the report names are released, all addresses of a handle together.")]
pub struct IpamReleaseArgs {
    /// The report written by `ipam check -o FILE`.
    #[arg(long, value_name = "FILE", required = true)]
    pub from_report: PathBuf,
    /// Release for real (without it: a dry run).
    #[arg(long, visible_alias = "force")]
    pub yes: bool,
}

/// Change cluster IPAM settings (IPAMConfiguration `default`).
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  margayctl ipam configure --strict-affinity true
  margayctl ipam configure --max-blocks-per-host 4")]
pub struct IpamConfigureArgs {
    /// Never hand out addresses from another node's block (no borrowing).
    #[arg(long, value_name = "true|false", action = clap::ArgAction::Set)]
    pub strict_affinity: Option<bool>,
    /// Most blocks one node may hold (0: no limit).
    #[arg(long, value_name = "N")]
    pub max_blocks_per_host: Option<u32>,
}

/// The default `--agent`: the local agent's health listener.
pub const DEFAULT_AGENT_URL: &str = "http://127.0.0.1:9099";

/// A node's agent: its BGP sessions.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    Status(NodeStatusArgs),
}

/// The BGP sessions of this node's agent (or every node's), as `calicoctl node status`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  margayctl node status                                  # the agent on this machine
  margayctl node status --agent http://10.0.0.2:9099
  margayctl node status --all                            # every node, at its recorded address
  margayctl node status -o json

The agent answers on its health listener (`--health-listen`, port 9099): GET /bgp/peers.")]
pub struct NodeStatusArgs {
    /// The agent's health listener.
    #[arg(long, value_name = "URL", default_value = DEFAULT_AGENT_URL)]
    pub agent: String,
    /// Ask every node's agent (addresses from the Node objects, the port of --agent).
    #[arg(long)]
    pub all: bool,
    /// Output format (wide = table).
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// BGP sessions and routes of a node's agent.
#[derive(Debug, Subcommand)]
pub enum BgpCommand {
    Peers(BgpPeersArgs),
    Routes(BgpRoutesArgs),
}

/// The agent's BGP peers: address, why it peers (mesh, global, node specific,
/// route reflector), AS, session state, since when.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  margayctl bgp peers
  margayctl bgp peers -o wide            # with prefix counts
  margayctl bgp peers --agent http://10.0.0.3:9099 -o yaml")]
pub struct BgpPeersArgs {
    /// The agent's health listener.
    #[arg(long, value_name = "URL", default_value = DEFAULT_AGENT_URL)]
    pub agent: String,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// The agent's BGP routes: every path it knows (Loc-RIB), or what one peer
/// sent it (--received) or what it sends that peer (--advertised).
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  margayctl bgp routes                                   # every path, best marked *
  margayctl bgp routes --peer 10.0.0.2                   # what 10.0.0.2 sent us
  margayctl bgp routes --peer 10.0.0.2 --advertised      # what we send 10.0.0.2
  margayctl bgp routes -o wide")]
pub struct BgpRoutesArgs {
    /// The agent's health listener.
    #[arg(long, value_name = "URL", default_value = DEFAULT_AGENT_URL)]
    pub agent: String,
    /// One peer's routes (received unless --advertised).
    #[arg(long, value_name = "IP")]
    pub peer: Option<std::net::IpAddr>,
    /// What we advertise to --peer.
    #[arg(long, conflicts_with = "received")]
    pub advertised: bool,
    /// What --peer sent us (the default with --peer).
    #[arg(long)]
    pub received: bool,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// Network policy: why a connection is allowed or denied.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    Explain(PolicyExplainArgs),
}

/// A transport protocol of `policy explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ExplainProtocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

/// Explain whether a new connection from one pod to another is allowed, and which policy rule decides.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  margayctl policy explain shop/front shop/db --port 5432
  margayctl policy explain shop/front kube-system/coredns-1 --port 53 --protocol udp
  margayctl policy explain x/a y/b --port 80 -o json

The NetworkPolicies, GlobalNetworkPolicies, pods and namespaces are read from the API and
compiled exactly as every agent compiles them (the same IR its nftables rules come from).
The source's egress and the destination's ingress are evaluated; both must allow. The
answer is for a new connection; replies of allowed connections always pass, and traffic
from a node to its own pods is always allowed. A policy the agents refuse is listed as a
warning: they keep its previous version, which this explanation cannot see.")]
pub struct PolicyExplainArgs {
    /// The client pod, NAMESPACE/NAME.
    #[arg(value_name = "FROM")]
    pub from: String,
    /// The server pod, NAMESPACE/NAME.
    #[arg(value_name = "TO")]
    pub to: String,
    /// The destination port (the pod's own port, after any Service translation).
    #[arg(long, value_name = "PORT", required = true)]
    pub port: u32,
    /// The protocol.
    #[arg(long, value_enum, default_value_t)]
    pub protocol: ExplainProtocol,
    /// Use the pods' IPv6 addresses.
    #[arg(short = '6', long)]
    pub ipv6: bool,
    /// Output format (table and wide: text).
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// Show the versions of margayctl, the API server and the agents.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  margayctl version
  margayctl version --client
  margayctl version -o json

The agents' versions come from the margay.dev/agent-version annotation the agent writes
on its Node; a node without it shows \"unknown\". The IMAGE column is the image of the
Margay agent pod on the node (pods labelled app.kubernetes.io/name=margay-agent in -n).")]
pub struct VersionArgs {
    /// Only the client's version (no API access).
    #[arg(long)]
    pub client: bool,
    /// Output format (wide = table).
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// Collect what support needs from this node into a .tar.gz archive.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  margayctl diags
  margayctl diags --log-file /var/log/margay/agent.log -o /tmp/diags.tar.gz
  margay-lab exec node1 -- margayctl diags --kubeconfig LAB/node-kubeconfig
  kubectl -n kube-system exec ds/margay-agent -- margayctl diags -o /tmp/d.tar.gz

Collected: ip route / ip -6 route / ip rule / ip link / ip addr, nft list table inet margay,
the agent's /metrics, /readyz and /livez, the given log files, and from the API: every
margay.dev object, the Nodes, and an IPAM check. What cannot be collected is recorded in
the archive's index.txt; the archive is written anyway.")]
pub struct DiagsArgs {
    /// The archive to write (default: margay-diags-<host>-<time>.tar.gz here).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// A log file (or directory) to include; repeatable.
    #[arg(long, value_name = "PATH")]
    pub log_file: Vec<PathBuf>,
    /// The agent's metrics endpoint.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:9091/metrics"
    )]
    pub metrics_url: String,
    /// The agent's health endpoint base (/readyz and /livez are read).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9099")]
    pub health_url: String,
    /// Collect from this node only (no API requests).
    #[arg(long)]
    pub no_cluster: bool,
}

#[derive(Debug, Args)]
pub struct DocsArgs {
    /// Which page.
    #[arg(value_enum, default_value = "cli")]
    pub page: DocsPage,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DocsPage {
    /// docs/reference/margayctl.md
    Cli,
    /// docs/reference/resources.md
    Resources,
}

/// The clap command, named as the user invoked it.
pub fn command(name: &'static str) -> clap::Command {
    Cli::command().name(name).bin_name(name).display_name(name)
}

/// Parses `args` (program name first).
pub fn parse(name: &'static str, args: &[OsString]) -> Result<Cli, clap::Error> {
    let matches = command(name).try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}
