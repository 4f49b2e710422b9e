//! The cluster side of `up` that Margay itself provides: its CRDs, a default
//! IPPool, and one `margay-agent` per node (inside the node's namespace, with
//! the node kubeconfig, recorded as `agent-<node>`, logging to
//! `logs/agent-<node>.log`). The agent installs the CNI conflist itself.
//!
//! Readiness of an agent is asked on its endpoint socket (`Status`), which
//! lives on the shared filesystem, so the lab needs no route into the node.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use margay_api::endpoint::{Request, Response};
use margay_api::{IPPool, IPPoolSpec};

use crate::netns::Netns;
use crate::state::{LAB_ID_ENV, NodeFiles, StateDir};
use crate::topology::NodePlan;
use crate::{LabError, binaries, process};

/// The pool `up` creates.
pub const DEFAULT_POOL_NAME: &str = "default-ipv4-ippool";
pub const DEFAULT_POOL_CIDR: &str = "10.244.0.0/16";
pub const DEFAULT_POOL_BLOCK_SIZE: u8 = 26;
/// The IPv6 pool `up --ipv6-pool` adds.
pub const DEFAULT_V6_POOL_NAME: &str = "default-ipv6-ippool";
pub const DEFAULT_V6_POOL_CIDR: &str = "fd00:244::/48";
pub const DEFAULT_V6_POOL_BLOCK_SIZE: u8 = 122;

/// How long `up` (and `start_agent`) wait for an agent to report ready.
pub const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The pid-file role of a node's agent.
pub fn role(node: &str) -> String {
    format!("agent-{node}")
}

/// Installs the CRDs and the default IPPool, and with `ipv6` the IPv6 one
/// (on a thread of its own, so it works inside or outside an async runtime).
pub fn install_cluster_resources(kubeconfig: &Path, ipv6: bool) -> Result<(), LabError> {
    let kubeconfig = kubeconfig.to_path_buf();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LabError::ApiServer(format!("tokio runtime: {e}")))?;
        rt.block_on(async {
            let client = crate::nodes::client(&kubeconfig).await?;
            let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
            for crd in margay_api::crds::all_crds() {
                let name = crd.metadata.name.clone().unwrap_or_default();
                match crds.create(&PostParams::default(), &crd).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.is_already_exists() => {}
                    Err(e) => {
                        return Err(LabError::ApiServer(format!("installing CRD {name}: {e}")));
                    }
                }
            }
            let pools: Api<IPPool> = Api::all(client);
            let mut wanted = vec![(
                DEFAULT_POOL_NAME,
                DEFAULT_POOL_CIDR,
                DEFAULT_POOL_BLOCK_SIZE,
            )];
            if ipv6 {
                wanted.push((
                    DEFAULT_V6_POOL_NAME,
                    DEFAULT_V6_POOL_CIDR,
                    DEFAULT_V6_POOL_BLOCK_SIZE,
                ));
            }
            for (name, cidr, block_size) in wanted {
                let mut spec = IPPoolSpec::new(cidr);
                spec.block_size = Some(block_size);
                match pools
                    .create(&PostParams::default(), &IPPool::new(name, spec))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.is_already_exists() => {}
                    Err(e) => {
                        return Err(LabError::ApiServer(format!("creating IPPool {name}: {e}")));
                    }
                }
            }
            Ok(())
        })
    })
    .join()
    .map_err(|_| LabError::ApiServer("installing cluster resources panicked".into()))?
}

/// Starts a node's agent in its namespace; returns its pid at once.
pub fn spawn(
    dir: &StateDir,
    lab_id: &str,
    node: &NodePlan,
    extra_args: &[String],
) -> Result<i32, LabError> {
    let exe = binaries::require("margay-agent")?;
    let files = dir.node_files(&node.name);
    for d in [&files.dir, &files.cni_conf_dir, &files.agent_dir] {
        std::fs::create_dir_all(d).map_err(|e| LabError::io(d, e))?;
    }
    let mut cmd: Command = Netns::open(&node.netns).command(&exe);
    cmd.arg("--node-name")
        .arg(&node.name)
        .arg("--kubeconfig")
        .arg(dir.node_kubeconfig())
        .arg("--cni-socket")
        .arg(&files.cni_socket)
        .arg("--cni-conf-dir")
        .arg(&files.cni_conf_dir)
        .arg("--state-dir")
        .arg(&files.agent_dir)
        // Each node has its own namespace, so the usual ports do not collide.
        .args(["--health-listen", "0.0.0.0:9099"])
        .args(["--metrics-listen", "0.0.0.0:9091"])
        .args(extra_args)
        .env(LAB_ID_ENV, lab_id)
        .env_remove("KUBECONFIG");
    let log = dir.log(&role(&node.name));
    let pid = process::spawn_daemon(&mut cmd, &log).map_err(|e| LabError::io(&log, e))?;
    dir.record_pid(&role(&node.name), pid)
        .map_err(|e| LabError::io(dir.path(), e))?;
    Ok(pid)
}

/// Sends one request to the agent's endpoint socket and reads the answer
/// (blocking; for the lab, tests and benchmarks).
pub fn request(socket: &Path, req: &Request) -> std::io::Result<Response> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    serde_json::from_str(answer.trim_end())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Asks the agent behind `socket` for its status: `Ok(true)` when ready.
pub fn status(socket: &Path) -> std::io::Result<bool> {
    Ok(matches!(
        request(socket, &Request::Status)?,
        Response::Ok(_)
    ))
}

/// Waits until the agent answers `Status` with ready; fails early if its
/// process exits, with the tail of its log.
pub fn wait_ready(
    dir: &StateDir,
    node: &str,
    files: &NodeFiles,
    pid: i32,
    timeout: Duration,
) -> Result<(), LabError> {
    let deadline = Instant::now() + timeout;
    loop {
        if matches!(status(&files.cni_socket), Ok(true)) {
            return Ok(());
        }
        let exited = !process::alive(pid);
        if exited || Instant::now() > deadline {
            let log = dir.log(&role(node));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            return Err(LabError::Agent(format!(
                "the agent of {node} {} (log {}):\n{}",
                if exited {
                    "exited"
                } else {
                    "did not become ready in time"
                },
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
