//! Test support: a node namespace, a pod namespace, the plugin run as a
//! runtime runs it, and a stand-in for the agent's endpoint service.
//!
//! The stand-in (`EndpointDouble`) speaks our own endpoint protocol and does,
//! on `Ready`, the little the agent does for a pod on one node (proxy ARP and
//! a /32 route), so the plugin's half can be tested on its own. Every check
//! of the issue also runs against the real agent in the lab tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use margay_api::endpoint::{Allocation, Request, Response, WireError, host_interface_name};
use margay_lab::netns::{Netns, NetnsGuard};
use serde_json::{Value, json};

/// Runs `program` with the calling thread's network namespace switched to `ns`
/// in the child only, as a container runtime in that namespace would.
pub fn command_in(ns: &Netns, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let file = File::open(Path::new("/run/netns").join(ns.name())).expect("open netns");
    let mut cmd = Command::new(program);
    // SAFETY: setns is async-signal-safe; the descriptor stays open because
    // the closure owns the file.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// One invocation of the plugin.
pub struct Invocation<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: Option<&'a Netns>,
    pub ifname: &'a str,
    pub pod: Option<(&'a str, &'a str)>,
    pub conf: Value,
}

/// What the plugin printed and its exit code.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: Value,
    pub stderr: String,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
}

pub fn run_plugin(node: &Netns, inv: &Invocation<'_>) -> Outcome {
    let mut cmd = command_in(node, env!("CARGO_BIN_EXE_margay-cni"));
    cmd.env_clear()
        .env("CNI_COMMAND", inv.command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ns) = inv.netns {
        cmd.env("CNI_NETNS", format!("/run/netns/{}", ns.name()));
    }
    if let Some((pns, pname)) = inv.pod {
        cmd.env(
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={pns};K8S_POD_NAME={pname};K8S_POD_INFRA_CONTAINER_ID={}",
                inv.container_id
            ),
        );
    }
    let mut child = cmd.spawn().expect("spawn margay-cni");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(inv.conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout not JSON ({e}): {text}"))
        },
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn conf(socket: &Path, version: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "k8s-pod-network",
        "type": "margay",
        "socket": socket,
        "agentTimeoutSeconds": 10,
    })
}

/// How the double answers.
#[derive(Debug, Default)]
pub struct DoubleState {
    pub next: u32,
    pub allocations: HashMap<(String, String), Allocation>,
    /// Every request, by op name.
    pub ops: Vec<String>,
    pub fail_ready: Option<WireError>,
    pub dual_stack: bool,
    pub mtu: u32,
}

pub struct EndpointDouble {
    pub socket: PathBuf,
    pub state: Arc<Mutex<DoubleState>>,
    _dir: tempfile::TempDir,
}

impl EndpointDouble {
    /// Serves on a fresh socket; on `Ready` programs `node` the way the agent
    /// would for one node (proxy ARP, forwarding, a /32 or /128 route).
    pub fn start(node: &Netns, dual_stack: bool) -> EndpointDouble {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("cni.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let state = Arc::new(Mutex::new(DoubleState {
            next: 1,
            dual_stack,
            mtu: 1450,
            ..Default::default()
        }));
        let st = state.clone();
        let node = node.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let st = st.clone();
                let node = node.clone();
                std::thread::spawn(move || {
                    let mut line = String::new();
                    if BufReader::new(&conn).read_line(&mut line).is_err() {
                        return;
                    }
                    let Ok(req) = serde_json::from_str::<Request>(&line) else {
                        return;
                    };
                    let resp = answer(&st, &node, req);
                    let mut out = serde_json::to_vec(&resp).unwrap();
                    out.push(b'\n');
                    let _ = (&conn).write_all(&out);
                });
            }
        });
        EndpointDouble {
            socket,
            state,
            _dir: dir,
        }
    }

    pub fn ops(&self) -> Vec<String> {
        self.state.lock().unwrap().ops.clone()
    }

    pub fn allocated(&self) -> usize {
        self.state.lock().unwrap().allocations.len()
    }
}

fn answer(st: &Mutex<DoubleState>, node: &Netns, req: Request) -> Response {
    let op = serde_json::to_value(&req).unwrap()["op"]
        .as_str()
        .unwrap()
        .to_string();
    st.lock().unwrap().ops.push(op);
    match req {
        Request::Add {
            attachment, pod, ..
        } => {
            let mut s = st.lock().unwrap();
            let key = (attachment.container_id, attachment.ifname);
            if let Some(a) = s.allocations.get(&key) {
                return Response::Ok(serde_json::to_value(a).unwrap());
            }
            let n = s.next;
            s.next += 1;
            let mut addresses = vec![format!("10.244.{}.{}/32", n / 250, n % 250 + 1)];
            if s.dual_stack {
                addresses.push(format!("fd00:244::{:x}/128", n + 1));
            }
            let a = Allocation {
                addresses,
                host_interface: host_interface_name(&pod.namespace, &pod.name),
                mtu: s.mtu,
            };
            s.allocations.insert(key, a.clone());
            Response::Ok(serde_json::to_value(a).unwrap())
        }
        Request::Ready {
            host_interface,
            addresses,
            ..
        } => {
            if let Some(e) = st.lock().unwrap().fail_ready.clone() {
                return Response::Error(e);
            }
            let _ = node.sysctls(&[
                (&format!("net.ipv4.conf.{host_interface}.proxy_arp"), "1"),
                (&format!("net.ipv4.neigh.{host_interface}.proxy_delay"), "0"),
                (&format!("net.ipv4.conf.{host_interface}.forwarding"), "1"),
            ]);
            for a in addresses {
                let six = if a.contains(':') { "-6" } else { "-4" };
                if let Err(e) = node.ip(&[six, "route", "replace", &a, "dev", &host_interface]) {
                    return Response::Error(WireError {
                        code: 5,
                        msg: format!("double: {e}"),
                        details: String::new(),
                    });
                }
            }
            Response::Ok(Value::Null)
        }
        Request::Del { attachment, .. } => {
            st.lock()
                .unwrap()
                .allocations
                .remove(&(attachment.container_id, attachment.ifname));
            Response::Ok(Value::Null)
        }
        Request::Check { attachment, .. } => {
            let s = st.lock().unwrap();
            match s
                .allocations
                .get(&(attachment.container_id, attachment.ifname))
            {
                Some(a) => Response::Ok(json!({
                    "addresses": a.addresses, "hostInterface": a.host_interface
                })),
                None => Response::Error(WireError {
                    code: 3,
                    msg: "unknown attachment".into(),
                    details: String::new(),
                }),
            }
        }
        Request::Status => Response::Ok(Value::Null),
        Request::Gc { valid_attachments } => {
            let mut s = st.lock().unwrap();
            let keep: Vec<(String, String)> = valid_attachments
                .into_iter()
                .map(|a| (a.container_id, a.ifname))
                .collect();
            s.allocations.retain(|k, _| keep.contains(k));
            Response::Ok(json!({"released": []}))
        }
    }
}

/// A node namespace with an uplink, an address to reach and forwarding on.
pub fn node_netns(tag: &str) -> NetnsGuard {
    let node = NetnsGuard::create_unique(&format!("mcni-{tag}")).unwrap();
    node.sysctls(&[
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv6.conf.all.forwarding", "1"),
        ("net.ipv6.conf.all.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_dad", "0"),
    ])
    .unwrap();
    // An uplink with a default route, as a node has: proxy ARP answers for
    // 169.254.1.1 only when the node routes it out of another interface.
    node.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "uplink",
    ])
    .unwrap();
    node.ip(&["link", "set", "eth0", "up"]).unwrap();
    node.ip(&["link", "set", "uplink", "up"]).unwrap();
    node.ip(&["addr", "add", "10.99.0.1/24", "dev", "eth0"])
        .unwrap();
    node.ip(&["addr", "add", "fd00:99::1/64", "dev", "eth0", "nodad"])
        .unwrap();
    node.ip(&["route", "add", "default", "via", "10.99.0.254"])
        .unwrap();
    node
}

/// Names of the `mgy*` links in a namespace.
pub fn mgy_links(ns: &Netns) -> Vec<String> {
    ns.ip(&["-o", "link", "show"])
        .unwrap()
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with("mgy"))
        .collect()
}
