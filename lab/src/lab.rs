//! Bringing a lab up, looking at it and tearing it down.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::netns::{self, Netns};
use crate::state::{LAB_ID_ENV, LabState, StateDir};
use crate::topology::{self, NodePlan, Plan, Topology};
use crate::{LabError, agents, binaries, kubeconfig, nodes, process};

/// What `margay-lab up` was asked for.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub nodes: usize,
    pub topology: Topology,
    pub state_dir: PathBuf,
    /// Namespaces and links only: no API server, no agents.
    pub bare: bool,
    /// Start a `margay-agent` on every node (ignored when `bare`). Without
    /// agents the lab has the API server, CRDs and default IPPool only.
    pub agents: bool,
    /// Also create the IPv6 pool `default-ipv6-ippool` (fd00:244::/48), so
    /// pods get an address of each family.
    pub ipv6_pool: bool,
    /// Extra arguments for every `margay-agent` (kept for later
    /// `start_agent` calls), e.g. `["--ipam-gc-interval", "1s"]`.
    pub agent_args: Vec<String>,
}

impl UpOptions {
    pub fn new(state_dir: impl Into<PathBuf>) -> UpOptions {
        UpOptions {
            nodes: 3,
            topology: Topology::L2,
            state_dir: state_dir.into(),
            bare: false,
            agents: true,
            ipv6_pool: false,
            agent_args: Vec::new(),
        }
    }
}

/// A lab that is up.
#[derive(Debug, Clone)]
pub struct Lab {
    dir: StateDir,
    state: LabState,
}

const API_READY_TIMEOUT: Duration = Duration::from_secs(20);

impl Lab {
    /// Builds the lab and returns once it is ready. On failure everything built
    /// so far is removed again.
    pub fn up(opts: &UpOptions) -> Result<Lab, LabError> {
        let dir = StateDir::open(&opts.state_dir).map_err(|e| LabError::io(&opts.state_dir, e))?;
        let _lock = dir.lock().map_err(|e| LabError::io(dir.path(), e))?;
        let id = dir.lab_id();
        if dir.state_file().exists() || !own_namespaces(&id)?.is_empty() {
            return Err(LabError::AlreadyUp(dir.path().to_path_buf()));
        }
        let plan = topology::plan(&id, opts.nodes, opts.topology)?;
        match build(&dir, &plan, opts) {
            Ok(state) => {
                dir.save(&state)
                    .map_err(|e| LabError::io(&dir.state_file(), e))?;
                Ok(Lab { dir, state })
            }
            Err(e) => {
                teardown(&dir, &id);
                Err(e)
            }
        }
    }

    /// Opens the lab whose state lives in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Lab, LabError> {
        let dir = StateDir::open(state_dir).map_err(|e| LabError::io(state_dir, e))?;
        match dir.load().map_err(|e| LabError::io(&dir.state_file(), e))? {
            Some(state) => Ok(Lab { dir, state }),
            None => Err(LabError::NotUp(dir.path().to_path_buf())),
        }
    }

    /// Removes every namespace, link and process of the lab in `state_dir`,
    /// whether `up` finished or crashed. Removing nothing is not an error.
    pub fn down(state_dir: &Path) -> Result<DownReport, LabError> {
        let dir = StateDir::open(state_dir).map_err(|e| LabError::io(state_dir, e))?;
        let _lock = dir.lock().map_err(|e| LabError::io(dir.path(), e))?;
        let id = match dir.load() {
            Ok(Some(state)) => state.plan.id,
            _ => dir.lab_id(),
        };
        Ok(teardown(&dir, &id))
    }

    pub fn plan(&self) -> &Plan {
        &self.state.plan
    }

    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The kubeconfig for clients on this machine, when the lab has an API server.
    pub fn kubeconfig(&self) -> Option<PathBuf> {
        self.state.api_url.as_ref().map(|_| self.dir.kubeconfig())
    }

    /// The API server URL for clients on this machine.
    pub fn api_url(&self) -> Option<&str> {
        self.state.api_url.as_deref()
    }

    pub fn node(&self, name: &str) -> Result<&NodePlan, LabError> {
        self.state
            .plan
            .node(name)
            .ok_or_else(|| LabError::UnknownNode {
                name: name.to_string(),
                known: self.node_names().join(", "),
            })
    }

    /// Where a node keeps its CNI configuration, agent socket and agent state.
    pub fn node_files(&self, name: &str) -> Result<crate::state::NodeFiles, LabError> {
        self.node(name).map(|n| self.dir.node_files(&n.name))
    }

    /// Sets the default IPv4 pool's encapsulation and NAT outgoing.
    pub fn configure_default_pool(
        &self,
        opts: crate::pool_options::PoolOptions,
    ) -> Result<(), LabError> {
        let kubeconfig = self.kubeconfig().ok_or_else(|| {
            LabError::ApiServer("a bare lab has no API server and no pools".into())
        })?;
        crate::pool_options::configure_default_pool(&kubeconfig, opts)
    }

    pub fn node_names(&self) -> Vec<String> {
        self.state
            .plan
            .nodes
            .iter()
            .map(|n| n.name.clone())
            .collect()
    }

    /// The namespace of a node, or of `router` / `fabric`.
    pub fn netns(&self, name: &str) -> Result<Netns, LabError> {
        match name {
            "router" => Ok(Netns::open(&self.state.plan.router_netns)),
            "fabric" => Ok(Netns::open(&self.state.plan.fabric_netns)),
            node => self.node(node).map(|n| Netns::open(&n.netns)),
        }
    }

    /// A command running `argv` inside a node's (or `router`'s, `fabric`'s) namespace.
    pub fn exec_command(&self, name: &str, argv: &[String]) -> Result<Command, LabError> {
        let (program, args) = argv.split_first().ok_or(LabError::EmptyCommand)?;
        let mut cmd = self.netns(name)?.command(program);
        cmd.args(args);
        Ok(cmd)
    }

    /// What is there now: namespaces present, processes running.
    pub fn status(&self) -> Status {
        let plan = &self.state.plan;
        Status {
            id: plan.id.clone(),
            state_dir: self.dir.path().to_path_buf(),
            topology: plan.topology,
            api_url: self.state.api_url.clone(),
            api_url_nodes: self.state.api_url_nodes.clone(),
            kubeconfig: self.kubeconfig(),
            nodes: plan
                .nodes
                .iter()
                .map(|n| {
                    let s = plan.subnet_of(n);
                    NodeStatus {
                        name: n.name.clone(),
                        netns: n.netns.clone(),
                        subnet: s.name.clone(),
                        ipv4: format!("{}/{}", n.ipv4, s.ipv4_prefix),
                        ipv6: format!("{}/{}", n.ipv6, s.ipv6_prefix),
                        up: netns::exists(&n.netns),
                    }
                })
                .collect(),
            processes: {
                let mut p: Vec<ProcessStatus> = self
                    .dir
                    .recorded_pids()
                    .into_iter()
                    .map(|(role, pid)| ProcessStatus {
                        running: process::alive(pid) && process::has_env(pid, LAB_ID_ENV, &plan.id),
                        role,
                        pid,
                    })
                    .collect();
                p.sort_by(|a, b| a.role.cmp(&b.role));
                p
            },
        }
    }
}

/// Driving a node's agent (for tests and `margay-lab agent`).
impl Lab {
    /// Whether `up` started agents in this lab.
    pub fn has_agents(&self) -> bool {
        self.state.agents
    }

    /// The pid of the node's agent, if it is running.
    pub fn agent_pid(&self, node: &str) -> Result<Option<i32>, LabError> {
        let n = self.node(node)?;
        let role = agents::role(&n.name);
        Ok(self
            .dir
            .recorded_pids()
            .into_iter()
            .find(|(r, _)| *r == role)
            .map(|(_, pid)| pid)
            .filter(|&pid| {
                process::alive(pid) && process::has_env(pid, LAB_ID_ENV, &self.state.plan.id)
            }))
    }

    /// Starts the node's agent and waits until it reports ready. Starting a
    /// running agent is an error.
    pub fn start_agent(&self, node: &str) -> Result<i32, LabError> {
        self.start_agent_with(node, &[])
    }

    /// [`Lab::start_agent`] with `extra` arguments after the lab's own (e.g.
    /// `--role route-reflector` for one node).
    pub fn start_agent_with(&self, node: &str, extra: &[String]) -> Result<i32, LabError> {
        if self.state.api_url.is_none() {
            return Err(LabError::Agent(
                "this lab was built with --bare: no API server for agents".into(),
            ));
        }
        if let Some(pid) = self.agent_pid(node)? {
            return Err(LabError::Agent(format!(
                "the agent of {node} is already running (pid {pid})"
            )));
        }
        let n = self.node(node)?;
        let mut args = self.state.agent_args.clone();
        args.extend_from_slice(extra);
        let pid = agents::spawn(&self.dir, &self.state.plan.id, n, &args)?;
        agents::wait_ready(
            &self.dir,
            &n.name,
            &self.dir.node_files(&n.name),
            pid,
            agents::AGENT_READY_TIMEOUT,
        )?;
        Ok(pid)
    }

    /// Stops the node's agent gracefully (SIGTERM; SIGKILL after 5 s).
    /// Stopping a stopped agent does nothing.
    pub fn stop_agent(&self, node: &str) -> Result<(), LabError> {
        if let Some(pid) = self.agent_pid(node)? {
            process::terminate(&[pid], Duration::from_secs(5));
        }
        Ok(())
    }

    /// Kills the node's agent with SIGKILL (no clean-up of any kind) and
    /// waits until it is gone.
    pub fn kill_agent(&self, node: &str) -> Result<(), LabError> {
        if let Some(pid) = self.agent_pid(node)? {
            process::kill_now(pid);
        }
        Ok(())
    }

    /// Stops (gracefully) and starts the node's agent; returns the new pid.
    pub fn restart_agent(&self, node: &str) -> Result<i32, LabError> {
        self.stop_agent(node)?;
        self.start_agent(node)
    }
}

/// Brings a lab down when dropped: for tests, so a failing test cleans up.
#[derive(Debug)]
pub struct LabGuard(Lab);

impl LabGuard {
    pub fn up(opts: &UpOptions) -> Result<LabGuard, LabError> {
        Lab::up(opts).map(LabGuard)
    }
}

impl std::ops::Deref for LabGuard {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.0
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(e) = Lab::down(self.0.state_dir()) {
            eprintln!("warning: margay-lab down failed: {e}");
        }
    }
}

/// The output of `margay-lab status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub id: String,
    pub state_dir: PathBuf,
    pub topology: Topology,
    pub api_url: Option<String>,
    pub api_url_nodes: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub nodes: Vec<NodeStatus>,
    pub processes: Vec<ProcessStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub netns: String,
    pub subnet: String,
    pub ipv4: String,
    pub ipv6: String,
    pub up: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessStatus {
    pub role: String,
    pub pid: i32,
    pub running: bool,
}

/// What `down` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DownReport {
    pub namespaces: Vec<String>,
    pub processes: Vec<i32>,
}

fn own_namespaces(id: &str) -> Result<Vec<String>, LabError> {
    let prefix = topology::netns_prefix(id);
    Ok(netns::list()?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect())
}

fn build(dir: &StateDir, plan: &Plan, opts: &UpOptions) -> Result<LabState, LabError> {
    build_fabric(plan)?;
    let mut state = LabState {
        plan: plan.clone(),
        api_url: None,
        api_url_nodes: None,
        agents: false,
        agent_args: opts.agent_args.clone(),
    };
    if !opts.bare {
        let local = start_apiserver(dir, plan)?;
        let url = format!("http://{local}");
        let node_url = format!("http://{}", plan.api_address());
        write(&dir.kubeconfig(), &kubeconfig::render(&url))?;
        write(&dir.node_kubeconfig(), &kubeconfig::render(&node_url))?;
        nodes::register(&dir.kubeconfig(), plan)?;
        agents::install_cluster_resources(&dir.kubeconfig(), opts.ipv6_pool)?;
        state.api_url = Some(url);
        state.api_url_nodes = Some(node_url);
        if opts.agents {
            // Start them all, then wait: they sync in parallel.
            let mut pids = Vec::new();
            for n in &plan.nodes {
                pids.push((n, agents::spawn(dir, &plan.id, n, &opts.agent_args)?));
            }
            for (n, pid) in pids {
                let files = dir.node_files(&n.name);
                agents::wait_ready(dir, &n.name, &files, pid, agents::AGENT_READY_TIMEOUT)?;
            }
            state.agents = true;
        }
    }
    Ok(state)
}

fn write(path: &Path, contents: &str) -> Result<(), LabError> {
    std::fs::write(path, contents).map_err(|e| LabError::io(path, e))
}

/// Namespaces, bridges, veths, addresses, routes and sysctls.
fn build_fabric(plan: &Plan) -> Result<(), LabError> {
    let fabric = Netns::create(&plan.fabric_netns)?;
    // The fabric is pure L2: no IPv6 on its ports, so captures there show only
    // the nodes' traffic.
    fabric.sysctls(&[
        ("net.ipv6.conf.all.disable_ipv6", "1"),
        ("net.ipv6.conf.default.disable_ipv6", "1"),
    ])?;
    let router = Netns::create(&plan.router_netns)?;
    router.sysctls(&routing_sysctls())?;
    for s in &plan.subnets {
        fabric.ip(&["link", "add", &s.bridge, "type", "bridge"])?;
        fabric.ip(&["link", "set", &s.bridge, "up"])?;
        netns::veth(&fabric, &s.fabric_if, &router, &s.router_if)?;
        fabric.ip(&["link", "set", &s.fabric_if, "master", &s.bridge])?;
        add_addr(
            &router,
            &s.router_if,
            &format!("{}/{}", s.gateway_v4, s.ipv4_prefix),
        )?;
        add_addr(
            &router,
            &s.router_if,
            &format!("{}/{}", s.gateway_v6, s.ipv6_prefix),
        )?;
    }
    for n in &plan.nodes {
        let s = plan.subnet_of(n);
        let node = Netns::create(&n.netns)?;
        node.sysctls(&routing_sysctls())?;
        netns::veth(&fabric, &n.fabric_if, &node, "eth0")?;
        fabric.ip(&["link", "set", &n.fabric_if, "master", &s.bridge])?;
        add_addr(&node, "eth0", &format!("{}/{}", n.ipv4, s.ipv4_prefix))?;
        add_addr(&node, "eth0", &format!("{}/{}", n.ipv6, s.ipv6_prefix))?;
        node.ip(&["route", "add", "default", "via", &s.gateway_v4.to_string()])?;
        node.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &s.gateway_v6.to_string(),
        ])?;
    }
    Ok(())
}

/// Nodes and the router forward, and skip duplicate address detection so their
/// IPv6 addresses are usable at once.
fn routing_sysctls() -> [(&'static str, &'static str); 5] {
    [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv6.conf.all.forwarding", "1"),
        ("net.ipv6.conf.all.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_dad", "0"),
        ("net.ipv4.conf.all.rp_filter", "0"),
    ]
}

fn add_addr(ns: &Netns, dev: &str, cidr: &str) -> Result<(), LabError> {
    let mut args = vec!["addr", "add", cidr, "dev", dev];
    if cidr.contains(':') {
        args.push("nodad");
    }
    ns.ip(&args)?;
    Ok(())
}

/// Starts the API emulator on loopback (for this machine's clients) and inside
/// the router namespace (for the nodes), and waits until it listens.
fn start_apiserver(dir: &StateDir, plan: &Plan) -> Result<SocketAddr, LabError> {
    let exe = binaries::require("margay-lab")?;
    let ready = dir.file("apiserver.ready");
    let _ = std::fs::remove_file(&ready);
    let mut cmd = Command::new(exe);
    cmd.arg("apiserver")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--listen-netns")
        .arg(format!("{}={}", plan.router_netns, plan.api_address()))
        .arg("--state")
        .arg(dir.file("apiserver-state.json"))
        .arg("--ready-file")
        .arg(&ready)
        .env(LAB_ID_ENV, &plan.id);
    let log = dir.log("apiserver");
    let pid = process::spawn_daemon(&mut cmd, &log).map_err(|e| LabError::io(&log, e))?;
    dir.record_pid("apiserver", pid)
        .map_err(|e| LabError::io(dir.path(), e))?;
    let deadline = Instant::now() + API_READY_TIMEOUT;
    loop {
        if let Ok(bytes) = std::fs::read(&ready) {
            let info: ReadyFile = serde_json::from_slice(&bytes).map_err(|e| {
                LabError::ApiServer(format!("bad ready file {}: {e}", ready.display()))
            })?;
            return info
                .listen
                .iter()
                .filter_map(|a| a.parse::<SocketAddr>().ok())
                .find(|a| a.ip().is_loopback())
                .ok_or_else(|| {
                    LabError::ApiServer("no loopback listener in the ready file".into())
                });
        }
        if !process::alive(pid) || Instant::now() > deadline {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(10).collect();
            return Err(LabError::ApiServer(format!(
                "the API server did not become ready (log {}):\n{}",
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(serde::Deserialize)]
struct ReadyFile {
    listen: Vec<String>,
}

/// Stops the lab's processes and removes its namespaces and files.
fn teardown(dir: &StateDir, id: &str) -> DownReport {
    let mut report = DownReport::default();
    let pids: Vec<i32> = dir
        .recorded_pids()
        .into_iter()
        .map(|(_, pid)| pid)
        .filter(|&pid| process::alive(pid) && process::has_env(pid, LAB_ID_ENV, id))
        .collect();
    // A grace period long enough for the API server to persist its state.
    process::terminate(&pids, Duration::from_secs(5));
    report.processes = pids;
    if let Ok(names) = own_namespaces(id) {
        for name in names {
            match Netns::open(&name).delete() {
                Ok(()) => report.namespaces.push(name),
                Err(e) => eprintln!("warning: {e}"),
            }
        }
    }
    if let Err(e) = dir.clear() {
        eprintln!("warning: could not clear {}: {e}", dir.path().display());
    }
    report
}
