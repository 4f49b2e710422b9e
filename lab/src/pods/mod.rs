//! The lab's container runtime and kubelet, for pods: `margay-lab pod
//! create|delete|list`, `namespace create|label`, and the Rust API tests use
//! ([`PodRuntime`]).
//!
//! Creating a pod does what a kubelet and containerd do on a node: the Pod
//! object (as a user wrote it, scheduled to the node), a network namespace,
//! the node's CNI network configuration run through every plugin ([`cni`]),
//! the pod's process (a small echo server, [`server`]), and finally the pod's
//! status: Running, with its IPs.

pub mod cni;
pub mod objects;
pub mod server;
pub mod spec;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::netns::Netns;
use crate::probe::{self, Matrix, ProbeJob};
use crate::state::{LAB_ID_ENV, StateDir};
use crate::{Lab, LabError, binaries, process, topology};

use self::cni::{AttachmentParams, CniExec, ConfList};
use self::spec::{PodSpec, PortSpec, Protocol, SpecError};

/// The interface name pods get (`CNI_IFNAME`).
pub const POD_IFNAME: &str = "eth0";

/// Where the reference plugins (portmap, bandwidth, ptp, ...) are installed.
pub const REFERENCE_PLUGIN_DIR: &str = "/usr/lib/cni";

/// How long pod creation waits for the node's CNI configuration to appear
/// (the agent writes it when it starts).
pub const CONFIG_WAIT: Duration = Duration::from_secs(30);

const SERVER_WAIT: Duration = Duration::from_secs(10);

/// Everything that can go wrong running pods.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error("pod {pod}: {source}")]
    Cni {
        pod: String,
        #[source]
        source: Box<cni::CniError>,
    },
    #[error("pod {0} already exists in this lab")]
    Exists(String),
    #[error("no pod {0} in this lab (see `margay-lab pod list`)")]
    NotFound(String),
    #[error("namespace {0} already exists")]
    NamespaceExists(String),
    #[error("API server: {0}")]
    Api(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pod {pod}: its server did not start: {msg}")]
    Server { pod: String, msg: String },
}

impl PodError {
    fn io(path: &Path, source: std::io::Error) -> PodError {
        PodError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// The CNI error code, when a plugin failed with one.
    pub fn cni_code(&self) -> Option<u64> {
        match self {
            PodError::Cni { source, .. } => source.code(),
            _ => None,
        }
    }
}

/// A pod the lab runs: what `pod list` shows and what probes use. Kept as
/// `STATE/pods/<ns>_<name>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodRecord {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub uid: String,
    /// The pod's network namespace (`/run/netns/<netns>`).
    pub netns: String,
    pub container_id: String,
    pub ifname: String,
    /// The pod's addresses, from the CNI result (IPv4 first).
    pub ips: Vec<IpAddr>,
    pub labels: BTreeMap<String, String>,
    /// Ports the pod's server answers on.
    pub ports: Vec<PortSpec>,
    pub named_ports: BTreeMap<String, PortSpec>,
    pub host_ports: BTreeMap<u16, PortSpec>,
    /// The configuration the ADD ran with (DEL runs the same, as the spec asks).
    pub conflist: ConfList,
    pub capability_args: Map<String, Value>,
    /// The final result of the ADD (the runtime's cache, `prevResult` of DEL
    /// and CHECK).
    pub result: Value,
    pub server_pid: Option<i32>,
}

impl PodRecord {
    /// `NS/NAME`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The pod's address of one family.
    pub fn ip(&self, ipv6: bool) -> Option<IpAddr> {
        self.ips.iter().copied().find(|ip| ip.is_ipv6() == ipv6)
    }

    /// Its first address (IPv4 when it has one).
    pub fn primary_ip(&self) -> Option<IpAddr> {
        self.ips.first().copied()
    }

    fn attachment(&self) -> AttachmentParams {
        AttachmentParams {
            container_id: self.container_id.clone(),
            netns_path: netns_path(&self.netns),
            ifname: self.ifname.clone(),
            args: cni::k8s_cni_args(&self.namespace, &self.name, &self.uid, &self.container_id),
        }
    }
}

fn netns_path(name: &str) -> String {
    format!("/run/netns/{name}")
}

fn record_file_name(namespace: &str, name: &str) -> String {
    // '_' never appears in Kubernetes names, so this cannot collide.
    format!("{namespace}_{name}")
}

/// Options for [`PodRuntime::matrix`].
#[derive(Debug, Clone)]
pub struct MatrixOptions {
    /// Only pods in these namespaces (all when empty).
    pub namespaces: Vec<String>,
    /// Ports to probe (each pod's served ports when empty).
    pub ports: Vec<u16>,
    pub protocols: Vec<Protocol>,
    pub timeout: Duration,
    /// Probe IPv6 addresses instead of IPv4.
    pub ipv6: bool,
    pub max_parallel: usize,
}

impl Default for MatrixOptions {
    fn default() -> MatrixOptions {
        MatrixOptions {
            namespaces: Vec::new(),
            ports: Vec::new(),
            protocols: vec![Protocol::Tcp, Protocol::Udp],
            timeout: probe::DEFAULT_TIMEOUT,
            ipv6: false,
            max_parallel: 512,
        }
    }
}

/// The lab's pod runtime. Cheap to share between threads (`&self` methods),
/// so tests create and delete many pods at once. It runs its own small tokio
/// runtime for API calls: call it from plain threads (in an async test, from
/// `spawn_blocking`).
pub struct PodRuntime {
    lab: Lab,
    dir: StateDir,
    rt: tokio::runtime::Runtime,
    client: kube::Client,
    cni_path: Vec<PathBuf>,
}

impl PodRuntime {
    pub fn new(lab: &Lab) -> Result<PodRuntime, PodError> {
        let kubeconfig = lab.kubeconfig().ok_or_else(|| {
            PodError::Api("this lab was built with --bare and has no API server".into())
        })?;
        let dir = StateDir::open(lab.state_dir()).map_err(|e| PodError::io(lab.state_dir(), e))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| PodError::Api(format!("tokio runtime: {e}")))?;
        let client = rt.block_on(crate::nodes::client(&kubeconfig))?;
        let cni_path = vec![install_plugin(&dir)?, PathBuf::from(REFERENCE_PLUGIN_DIR)];
        Ok(PodRuntime {
            lab: lab.clone(),
            dir,
            rt,
            client,
            cni_path,
        })
    }

    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// `CNI_PATH`: `STATE/cni-bin` (holding `margay`), then the reference plugins.
    pub fn cni_path(&self) -> &[PathBuf] {
        &self.cni_path
    }

    fn pods_dir(&self) -> PathBuf {
        self.dir.path().join("pods")
    }

    fn record_path(&self, namespace: &str, name: &str) -> PathBuf {
        self.pods_dir()
            .join(format!("{}.json", record_file_name(namespace, name)))
    }

    fn pod_netns_name(&self, namespace: &str, name: &str) -> String {
        let prefix = topology::netns_prefix(&self.lab.plan().id);
        let full = format!("{prefix}pod-{}", record_file_name(namespace, name));
        if full.len() <= 200 {
            return full;
        }
        // Very long names: a stable hash instead (the record keeps the mapping).
        let h = margay_api::endpoint::host_interface_name(namespace, name);
        format!("{prefix}pod-{h}")
    }

    /// The CNI executor for a node.
    pub fn cni_exec(&self, node: &str) -> Result<CniExec, PodError> {
        let n = self.lab.node(node)?;
        Ok(CniExec {
            cni_path: self.cni_path.clone(),
            runtime_netns: PathBuf::from(netns_path(&n.netns)),
        })
    }

    /// The node's CNI configuration, waiting up to `wait` for it to appear.
    pub fn node_conflist(&self, node: &str, wait: Duration) -> Result<ConfList, PodError> {
        let dir = self.lab.node_files(node)?.cni_conf_dir;
        let deadline = Instant::now() + wait;
        loop {
            let found = cni::load_conflist(&dir).map_err(|e| PodError::Cni {
                pod: format!("on {node}"),
                source: Box::new(e),
            })?;
            if let Some(list) = found {
                return Ok(list);
            }
            if Instant::now() >= deadline {
                return Err(PodError::Cni {
                    pod: format!("on {node}"),
                    source: Box::new(cni::CniError::NoConfig {
                        dir: dir.display().to_string(),
                    }),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // ------------------------------------------------------------ namespaces

    /// Creates a Namespace object with labels.
    pub fn create_namespace(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), PodError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels},
        }))
        .map_err(|e| PodError::Api(format!("namespace {name}: {e}")))?;
        match self.rt.block_on(api.create(&PostParams::default(), &ns)) {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                Err(PodError::NamespaceExists(name.to_string()))
            }
            Err(e) => Err(PodError::Api(format!("creating namespace {name}: {e}"))),
        }
    }

    /// Sets labels on a namespace (`None` removes the label).
    pub fn label_namespace(
        &self,
        name: &str,
        labels: &BTreeMap<String, Option<String>>,
    ) -> Result<(), PodError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let patch = json!({"metadata": {"labels": labels}});
        self.rt
            .block_on(api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)))
            .map(|_| ())
            .map_err(|e| PodError::Api(format!("labelling namespace {name}: {e}")))
    }

    fn ensure_namespace(&self, name: &str) -> Result<(), PodError> {
        match self.create_namespace(name, &BTreeMap::new()) {
            Ok(()) | Err(PodError::NamespaceExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    // ------------------------------------------------------------ pods

    /// Creates a pod and returns once it is Running and its server answers.
    /// On failure everything made so far is removed again (CNI DEL included,
    /// as a runtime does after a failed ADD).
    pub fn create_pod(&self, spec: &PodSpec) -> Result<PodRecord, PodError> {
        spec.validate()?;
        let node = self.lab.node(&spec.node)?.clone();
        let key = format!("{}/{}", spec.namespace, spec.name);
        let caps = cni::capability_args(&spec.host_ports, &spec.annotations)
            .map_err(|e| SpecError(format!("pod {key}: {e}")))?;
        let record_path = self.record_path(&spec.namespace, &spec.name);
        if record_path.exists() {
            return Err(PodError::Exists(key));
        }
        std::fs::create_dir_all(self.pods_dir()).map_err(|e| PodError::io(&self.pods_dir(), e))?;

        // The Pod object first: the API server refuses a second pod of the
        // same name, which makes it the lock against two concurrent creates.
        let uid = self.create_pod_object(spec)?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &spec.namespace);

        let netns = self.pod_netns_name(&spec.namespace, &spec.name);
        let container_id = random_container_id();
        let mut record = PodRecord {
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            node: node.name.clone(),
            uid,
            netns: netns.clone(),
            container_id,
            ifname: POD_IFNAME.to_string(),
            ips: Vec::new(),
            labels: spec.labels.clone(),
            ports: spec.served_ports(),
            named_ports: spec.named_ports.clone(),
            host_ports: spec.host_ports.clone(),
            conflist: ConfList {
                path: PathBuf::new(),
                name: String::new(),
                cni_version: String::new(),
                disable_check: false,
                plugins: Vec::new(),
            },
            capability_args: caps,
            result: Value::Null,
            server_pid: None,
        };
        let undo_object = |err: PodError| -> PodError {
            let _ = self
                .rt
                .block_on(pods.delete(&spec.name, &DeleteParams::default()));
            err
        };

        if let Err(e) = Netns::create(&netns) {
            return Err(undo_object(LabError::from(e).into()));
        }
        let undo_netns = |err: PodError| -> PodError {
            let _ = Netns::open(&netns).delete();
            undo_object(err)
        };
        let list = match self.node_conflist(&node.name, CONFIG_WAIT) {
            Ok(l) => l,
            Err(e) => return Err(undo_netns(e)),
        };
        record.conflist = list;
        let exec = self.cni_exec(&node.name)?;
        let att = record.attachment();
        match exec.add(&record.conflist, &att, &record.capability_args) {
            Ok(result) => record.result = result,
            Err(e) => {
                // A runtime follows a failed ADD with a DEL.
                let _ = exec.del(&record.conflist, &att, &record.capability_args, None);
                return Err(undo_netns(PodError::Cni {
                    pod: key,
                    source: Box::new(e),
                }));
            }
        }
        record.ips = result_ips(&record.result, &netns_path(&netns), POD_IFNAME);
        record.ips.sort_by_key(|ip| ip.is_ipv6());
        self.save(&record)?;

        let mut finish = || -> Result<(), PodError> {
            record.server_pid = Some(self.start_server(&record)?);
            self.save(&record)?;
            self.mark_running(&record, &node)
        };
        if let Err(e) = finish() {
            let _ = self.delete_pod(&spec.namespace, &spec.name);
            return Err(e);
        }
        Ok(record)
    }

    /// Creates only the Pod object (scheduled to its node, not running);
    /// returns its uid. `create_pod` starts with this; benchmarks and tests
    /// that drive CNI themselves use it alone.
    pub fn create_pod_object(&self, spec: &PodSpec) -> Result<String, PodError> {
        spec.validate()?;
        let key = format!("{}/{}", spec.namespace, spec.name);
        self.ensure_namespace(&spec.namespace)?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &spec.namespace);
        let obj: Pod = serde_json::from_value(objects::pod_object(spec))
            .map_err(|e| PodError::Api(format!("pod {key}: {e}")))?;
        match self.rt.block_on(pods.create(&PostParams::default(), &obj)) {
            Ok(p) => Ok(p.metadata.uid.unwrap_or_default()),
            Err(kube::Error::Api(s)) if s.code == 409 => Err(PodError::Exists(key)),
            Err(e) => Err(PodError::Api(format!("creating pod {key}: {e}"))),
        }
    }

    fn save(&self, record: &PodRecord) -> Result<(), PodError> {
        let path = self.record_path(&record.namespace, &record.name);
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| PodError::io(&path, std::io::Error::other(e)))?;
        crate::state::write_atomically(&path, &bytes).map_err(|e| PodError::io(&path, e))
    }

    fn server_role(record: &PodRecord) -> String {
        format!("pod-{}", record_file_name(&record.namespace, &record.name))
    }

    /// Starts the pod's process inside its namespace; returns once it answers.
    fn start_server(&self, record: &PodRecord) -> Result<i32, PodError> {
        let key = record.key();
        let role = Self::server_role(record);
        let ready = self.pods_dir().join(format!(
            "{}.ready",
            record_file_name(&record.namespace, &record.name)
        ));
        let _ = std::fs::remove_file(&ready);
        let exe = binaries::require("margay-lab")?;
        let ports: Vec<String> = record.ports.iter().map(ToString::to_string).collect();
        let mut cmd = Command::new(exe);
        cmd.arg("pod-server")
            .arg("--ready-file")
            .arg(&ready)
            .env(LAB_ID_ENV, &self.lab.plan().id);
        if !ports.is_empty() {
            cmd.arg("--ports").arg(ports.join(","));
        }
        let ns_file = File::open(netns_path(&record.netns))
            .map_err(|e| PodError::io(Path::new(&netns_path(&record.netns)), e))?;
        let fd = ns_file.as_raw_fd();
        // SAFETY: setns is async-signal-safe; `ns_file` outlives the spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let log = self.dir.log(&role);
        let pid = process::spawn_daemon(&mut cmd, &log).map_err(|e| PodError::io(&log, e))?;
        drop(ns_file);
        self.dir
            .record_pid(&role, pid)
            .map_err(|e| PodError::io(self.dir.path(), e))?;
        let deadline = Instant::now() + SERVER_WAIT;
        while !ready.exists() {
            if !process::alive(pid) || Instant::now() > deadline {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                process::terminate(&[pid], Duration::from_secs(1));
                return Err(PodError::Server {
                    pod: key,
                    msg: format!("log {}: {}", log.display(), tail.trim()),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = std::fs::remove_file(&ready);
        Ok(pid)
    }

    fn mark_running(&self, record: &PodRecord, node: &topology::NodePlan) -> Result<(), PodError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &record.namespace);
        let now = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let status = objects::running_status(
            &record.ips,
            &[node.ipv4.into(), node.ipv6.into()],
            &record.container_id,
            &now,
        );
        self.rt
            .block_on(pods.patch_status(
                &record.name,
                &PatchParams::default(),
                &Patch::Merge(&status),
            ))
            .map(|_| ())
            .map_err(|e| PodError::Api(format!("marking pod {} running: {e}", record.key())))
    }

    /// Stops the pod's process, runs CNI DEL (in reverse, with the ADD's
    /// result), then deletes the Pod object and the namespace. If DEL fails,
    /// nothing else is removed, so the delete can be retried.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> Result<(), PodError> {
        let record = self.pod(namespace, name)?;
        let role = Self::server_role(&record);
        if let Some(pid) = record.server_pid
            && process::has_env(pid, LAB_ID_ENV, &self.lab.plan().id)
        {
            process::terminate(&[pid], Duration::from_secs(2));
        }
        self.dir.forget_pid(&role);
        let exec = self.cni_exec(&record.node)?;
        let result = (!record.result.is_null()).then_some(&record.result);
        exec.del(
            &record.conflist,
            &record.attachment(),
            &record.capability_args,
            result,
        )
        .map_err(|e| PodError::Cni {
            pod: record.key(),
            source: Box::new(e),
        })?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        match self
            .rt
            .block_on(pods.delete(name, &DeleteParams::default()))
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(PodError::Api(format!("deleting pod {}: {e}", record.key()))),
        }
        Netns::open(&record.netns)
            .delete()
            .map_err(LabError::from)?;
        let path = self.record_path(namespace, name);
        std::fs::remove_file(&path).map_err(|e| PodError::io(&path, e))
    }

    /// Runs CNI CHECK through the pod's network configuration (every plugin,
    /// or only those of type `only`). The reference plugins 1.1.1 have CHECK
    /// bugs of their own (see docs/lab.md), hence `only`.
    pub fn check_pod(
        &self,
        namespace: &str,
        name: &str,
        only: Option<&str>,
    ) -> Result<(), PodError> {
        let record = self.pod(namespace, name)?;
        let exec = self.cni_exec(&record.node)?;
        let mut list = record.conflist.clone();
        if let Some(t) = only {
            list.plugins
                .retain(|p| p.get("type").and_then(Value::as_str) == Some(t));
            if list.plugins.is_empty() {
                return Err(SpecError(format!(
                    "the network configuration of pod {} has no plugin of type {t:?}",
                    record.key()
                ))
                .into());
            }
        }
        exec.check(
            &list,
            &record.attachment(),
            &record.capability_args,
            &record.result,
        )
        .map_err(|e| PodError::Cni {
            pod: record.key(),
            source: Box::new(e),
        })
    }

    /// Runs CNI GC for a node with `list` (the node's own configuration when
    /// `None`): every attachment of the lab's pods on it is still valid. A
    /// list older than 1.1.0 makes it a no-op, as in libcni.
    pub fn gc_node(&self, node: &str, list: Option<&ConfList>) -> Result<(), PodError> {
        let list = match list {
            Some(l) => l.clone(),
            None => self.node_conflist(node, Duration::ZERO)?,
        };
        let valid: Vec<(String, String)> = self
            .pods()?
            .into_iter()
            .filter(|p| p.node == node)
            .map(|p| (p.container_id, p.ifname))
            .collect();
        self.cni_exec(node)?
            .gc(&list, &valid)
            .map_err(|mut errs| PodError::Cni {
                pod: format!("GC on {node}"),
                source: Box::new(errs.remove(0)),
            })
    }

    /// One pod's record.
    pub fn pod(&self, namespace: &str, name: &str) -> Result<PodRecord, PodError> {
        let path = self.record_path(namespace, name);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| PodError::io(&path, std::io::Error::other(e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(PodError::NotFound(format!("{namespace}/{name}")))
            }
            Err(e) => Err(PodError::io(&path, e)),
        }
    }

    /// Every pod of the lab, sorted by namespace and name.
    pub fn pods(&self) -> Result<Vec<PodRecord>, PodError> {
        pods_in(self.dir.path())
    }

    // ------------------------------------------------------------ probes

    /// From inside pod `from`: does `to` answer on `port`/`protocol`?
    pub fn probe(
        &self,
        from: (&str, &str),
        to: (&str, &str),
        port: u16,
        protocol: Protocol,
        timeout: Duration,
    ) -> Result<bool, PodError> {
        let src = self.pod(from.0, from.1)?;
        let dst = self.pod(to.0, to.1)?;
        let ip = dst
            .primary_ip()
            .ok_or_else(|| PodError::NotFound(format!("an address of pod {}", dst.key())))?;
        self.probe_address(&src, SocketAddr::new(ip, port), protocol, timeout)
    }

    /// From inside pod `from`: does `address` answer?
    pub fn probe_address(
        &self,
        from: &PodRecord,
        address: SocketAddr,
        protocol: Protocol,
        timeout: Duration,
    ) -> Result<bool, PodError> {
        probe::probe(&from.netns, address, protocol, timeout)
            .map_err(|e| PodError::io(Path::new(&netns_path(&from.netns)), e))
    }

    /// Every ordered pair of the selected pods (a pod with itself included),
    /// on every port and protocol, in parallel.
    pub fn matrix(&self, opts: &MatrixOptions) -> Result<Matrix, PodError> {
        let pods: Vec<PodRecord> = self
            .pods()?
            .into_iter()
            .filter(|p| opts.namespaces.is_empty() || opts.namespaces.contains(&p.namespace))
            .collect();
        Ok(matrix_of(&pods, opts))
    }
}

/// The matrix over `pods` (see [`PodRuntime::matrix`]).
pub fn matrix_of(pods: &[PodRecord], opts: &MatrixOptions) -> Matrix {
    let mut jobs = Vec::new();
    for from in pods {
        for to in pods {
            let Some(ip) = to.ip(opts.ipv6) else { continue };
            let ports: Vec<(Protocol, u16)> = if opts.ports.is_empty() {
                to.ports
                    .iter()
                    .filter(|p| opts.protocols.contains(&p.protocol))
                    .map(|p| (p.protocol, p.port))
                    .collect()
            } else {
                opts.protocols
                    .iter()
                    .flat_map(|&proto| opts.ports.iter().map(move |&port| (proto, port)))
                    .collect()
            };
            for (protocol, port) in ports {
                jobs.push(ProbeJob {
                    from: from.key(),
                    from_netns: from.netns.clone(),
                    to: to.key(),
                    address: SocketAddr::new(ip, port),
                    protocol,
                });
            }
        }
    }
    Matrix {
        pods: pods.iter().map(PodRecord::key).collect(),
        results: probe::run_jobs(&jobs, opts.timeout, opts.max_parallel),
    }
}

/// Runtimes exec the plugin named by `type`; Margay's is `margay`, the binary
/// `margay-cni`. As an installer does on a real node (`/opt/cni/bin/margay`),
/// the lab links it into `STATE/cni-bin/`, the first directory of its
/// `CNI_PATH`; returns that directory.
pub fn install_plugin(dir: &StateDir) -> Result<PathBuf, PodError> {
    let plugin = binaries::require("margay-cni")?;
    let bin = dir.path().join("cni-bin");
    std::fs::create_dir_all(&bin).map_err(|e| PodError::io(&bin, e))?;
    let link = bin.join("margay");
    if std::fs::read_link(&link).ok().as_deref() != Some(plugin.as_path()) {
        // Through a temporary name and a rename, so concurrent runtimes never
        // see the link missing.
        let tmp = bin.join(format!(".margay.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&plugin, &tmp).map_err(|e| PodError::io(&tmp, e))?;
        std::fs::rename(&tmp, &link).map_err(|e| PodError::io(&link, e))?;
    }
    Ok(bin)
}

/// The pod records in a lab's state directory.
pub fn pods_in(state_dir: &Path) -> Result<Vec<PodRecord>, PodError> {
    let dir = state_dir.join("pods");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let bytes = std::fs::read(&p).map_err(|err| PodError::io(&p, err))?;
        let rec: PodRecord = serde_json::from_slice(&bytes)
            .map_err(|err| PodError::io(&p, std::io::Error::other(err)))?;
        out.push(rec);
    }
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(out)
}

/// The addresses a CNI result puts on `ifname` in `sandbox`.
pub fn result_ips(result: &Value, sandbox: &str, ifname: &str) -> Vec<IpAddr> {
    let empty = Vec::new();
    let interfaces = result["interfaces"].as_array().unwrap_or(&empty);
    result["ips"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter(|ip| {
            ip["interface"]
                .as_u64()
                .and_then(|i| interfaces.get(i as usize))
                .is_some_and(|i| i["name"] == ifname && i["sandbox"] == sandbox)
        })
        .filter_map(|ip| ip["address"].as_str()?.split('/').next()?.parse().ok())
        .collect()
}

fn random_container_id() -> String {
    (0..32)
        .map(|_| format!("{:02x}", fastrand::u8(..)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pod_addresses_from_a_chained_result() {
        let r = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "mgy0123456789a", "mac": "ee:ee:ee:ee:ee:ee"},
                {"name": "eth0", "sandbox": "/run/netns/p"}
            ],
            "ips": [
                {"address": "10.244.0.5/32", "interface": 1},
                {"address": "fd00:244::5/128", "interface": 1},
                {"address": "192.168.9.9/32", "interface": 0}
            ]
        });
        assert_eq!(
            result_ips(&r, "/run/netns/p", "eth0"),
            [
                "10.244.0.5".parse::<IpAddr>().unwrap(),
                "fd00:244::5".parse().unwrap()
            ]
        );
        assert!(result_ips(&r, "/run/netns/q", "eth0").is_empty());
        assert_eq!(random_container_id().len(), 64);
    }
}
