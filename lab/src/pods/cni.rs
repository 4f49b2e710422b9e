//! Running a CNI network configuration list the way libcni (containerd,
//! CRI-O) does: ADD through every plugin in order with the previous result as
//! `prevResult`, DEL in reverse with the ADD's final result, CHECK in order,
//! capability arguments in `runtimeConfig` for the plugins that declare them.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// A loaded network configuration list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfList {
    /// The file it came from.
    pub path: PathBuf,
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    /// Plugin configuration objects, in order.
    pub plugins: Vec<Value>,
}

/// Why a network could not be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CniError {
    #[error(
        "no CNI network configuration in {dir} (is margay-agent running on this node? it installs one)"
    )]
    NoConfig { dir: String },
    #[error("{path}: {msg}")]
    BadConfig { path: String, msg: String },
    #[error("CNI plugin {plugin:?} not found in {path}")]
    MissingPlugin { plugin: String, path: String },
    /// A plugin failed: its spec error object, or what it printed.
    #[error("CNI {command} failed in plugin {plugin}: {msg}{}{}", code.map(|c| format!(" (code {c})")).unwrap_or_default(), if details.is_empty() { String::new() } else { format!(": {details}") })]
    Plugin {
        command: String,
        plugin: String,
        code: Option<u64>,
        msg: String,
        details: String,
    },
}

impl CniError {
    /// The plugin's CNI error code, if a plugin reported one.
    pub fn code(&self) -> Option<u64> {
        match self {
            CniError::Plugin { code, .. } => *code,
            _ => None,
        }
    }
}

/// Finds the configuration the runtime would use: the lexically first
/// `*.conflist`, `*.conf` or `*.json` in `dir` (a `.conf` holding one plugin is
/// wrapped into a list, as libcni does). `None` when there is none yet.
pub fn load_conflist(dir: &Path) -> Result<Option<ConfList>, CniError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
        .collect();
    files.sort();
    let Some(path) = files.into_iter().next() else {
        return Ok(None);
    };
    let bytes = std::fs::read(&path).map_err(|e| CniError::BadConfig {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    parse_conflist(&path, &bytes).map(Some)
}

/// Parses a configuration file's bytes.
pub fn parse_conflist(path: &Path, bytes: &[u8]) -> Result<ConfList, CniError> {
    let bad = |msg: String| CniError::BadConfig {
        path: path.display().to_string(),
        msg,
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no \"name\"".into()))?
        .to_string();
    let cni_version = obj
        .get("cniVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no \"cniVersion\"".into()))?
        .to_string();
    let plugins = match obj.get("plugins") {
        Some(Value::Array(p)) => p.clone(),
        Some(_) => return Err(bad("\"plugins\" is not a list".into())),
        // A single-plugin .conf is its own only plugin.
        None if obj.contains_key("type") => vec![v.clone()],
        None => return Err(bad("no \"plugins\" and no \"type\"".into())),
    };
    if plugins.is_empty() {
        return Err(bad("\"plugins\" is empty".into()));
    }
    for (i, p) in plugins.iter().enumerate() {
        if p.get("type").and_then(Value::as_str).is_none() {
            return Err(bad(format!("plugin {i} has no \"type\"")));
        }
    }
    Ok(ConfList {
        path: path.to_path_buf(),
        name,
        cni_version,
        disable_check: obj.get("disableCheck").and_then(Value::as_bool) == Some(true),
        plugins,
    })
}

/// The request configuration for plugin `index` (spec section 3): the plugin
/// object with `name` and `cniVersion` from the list, `prevResult` when there
/// is one, `runtimeConfig` holding the capability arguments the plugin
/// declares, and no `capabilities`.
pub fn plugin_request(
    list: &ConfList,
    index: usize,
    prev_result: Option<&Value>,
    capability_args: &Map<String, Value>,
) -> Value {
    let mut conf = list.plugins[index].as_object().cloned().unwrap_or_default();
    let declared: Vec<String> = conf
        .remove("capabilities")
        .and_then(|c| c.as_object().cloned())
        .map(|c| {
            c.into_iter()
                .filter(|(_, on)| on.as_bool() == Some(true))
                .map(|(k, _)| k)
                .collect()
        })
        .unwrap_or_default();
    conf.insert("name".into(), list.name.clone().into());
    conf.insert("cniVersion".into(), list.cni_version.clone().into());
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev.clone());
    }
    let runtime: Map<String, Value> = declared
        .iter()
        .filter_map(|cap| capability_args.get(cap).map(|v| (cap.clone(), v.clone())))
        .collect();
    if !runtime.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    Value::Object(conf)
}

/// The attachment parameters of one pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentParams {
    pub container_id: String,
    /// `/run/netns/NAME`.
    pub netns_path: String,
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: String,
}

/// kubelet's `CNI_ARGS` for a pod.
pub fn k8s_cni_args(namespace: &str, name: &str, uid: &str, container_id: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={container_id};K8S_POD_UID={uid}"
    )
}

/// kubelet's capability arguments for a pod: `portMappings` from container
/// ports with a `hostPort`, `bandwidth` from the
/// `kubernetes.io/{ingress,egress}-bandwidth` annotations (burst unlimited,
/// as kubelet sends it).
pub fn capability_args(
    host_ports: &BTreeMap<u16, super::spec::PortSpec>,
    annotations: &BTreeMap<String, String>,
) -> Result<Map<String, Value>, String> {
    let mut caps = Map::new();
    if !host_ports.is_empty() {
        let maps: Vec<Value> = host_ports
            .iter()
            .map(|(host, c)| {
                json!({"hostPort": host, "containerPort": c.port, "protocol": c.protocol.to_string()})
            })
            .collect();
        caps.insert("portMappings".into(), Value::Array(maps));
    }
    let mut bw = Map::new();
    for (dir, key) in [
        ("ingress", "kubernetes.io/ingress-bandwidth"),
        ("egress", "kubernetes.io/egress-bandwidth"),
    ] {
        if let Some(q) = annotations.get(key) {
            let rate = parse_quantity(q).ok_or_else(|| {
                format!("annotation {key}={q:?} is not a quantity (e.g. 10M, 1Gi)")
            })?;
            bw.insert(format!("{dir}Rate"), rate.into());
            bw.insert(format!("{dir}Burst"), (i32::MAX as u64).into());
        }
    }
    if !bw.is_empty() {
        caps.insert("bandwidth".into(), Value::Object(bw));
    }
    Ok(caps)
}

/// A Kubernetes quantity as an integer (`10M` = 10^7, `1Mi` = 2^20, `500k`).
pub fn parse_quantity(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mul: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mul)
}

/// Runs plugins from `cni_path`, inside `runtime_netns` (the node's namespace,
/// where a container runtime on that node runs).
#[derive(Debug, Clone)]
pub struct CniExec {
    pub cni_path: Vec<PathBuf>,
    /// `/run/netns/NODE`.
    pub runtime_netns: PathBuf,
}

impl CniExec {
    fn find(&self, plugin: &str) -> Result<PathBuf, CniError> {
        self.cni_path
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| CniError::MissingPlugin {
                plugin: plugin.to_string(),
                path: self.cni_path_var(),
            })
    }

    fn cni_path_var(&self) -> String {
        self.cni_path
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Execs one plugin with `command`, returning what it printed on success.
    pub fn exec(
        &self,
        command: &str,
        plugin: &str,
        attachment: Option<&AttachmentParams>,
        request: &Value,
    ) -> Result<Option<Value>, CniError> {
        let fail = |msg: String| CniError::Plugin {
            command: command.to_string(),
            plugin: plugin.to_string(),
            code: None,
            msg,
            details: String::new(),
        };
        let exe = self.find(plugin)?;
        let netns = File::open(&self.runtime_netns)
            .map_err(|e| fail(format!("opening {}: {e}", self.runtime_netns.display())))?;
        let mut cmd = Command::new(&exe);
        cmd.env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", self.cni_path_var())
            // The reference plugins run iptables, tc and friends.
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(a) = attachment {
            cmd.env("CNI_CONTAINERID", &a.container_id)
                .env("CNI_NETNS", &a.netns_path)
                .env("CNI_IFNAME", &a.ifname)
                .env("CNI_ARGS", &a.args);
        }
        // SAFETY: setns is async-signal-safe; `netns` outlives the spawn.
        let fd = netns.as_raw_fd();
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| fail(format!("running {}: {e}", exe.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(request.to_string().as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| fail(format!("waiting for {}: {e}", exe.display())))?;
        drop(netns);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() {
            if stdout.trim().is_empty() {
                return Ok(None);
            }
            return serde_json::from_str(&stdout).map(Some).map_err(|e| {
                fail(format!(
                    "printed something that is not JSON ({e}): {stdout}"
                ))
            });
        }
        // The spec's error object on stdout; else whatever went to stderr.
        let err: Value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(CniError::Plugin {
            command: command.to_string(),
            plugin: plugin.to_string(),
            code: err.get("code").and_then(Value::as_u64),
            msg: err
                .get("msg")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| {
                    format!(
                        "exited with {}: {}",
                        out.status,
                        if stderr.is_empty() {
                            stdout.trim()
                        } else {
                            &stderr
                        }
                    )
                }),
            details: err
                .get("details")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }

    fn plugin_type(list: &ConfList, i: usize) -> String {
        list.plugins[i]
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    /// ADD through the whole list; returns the final result.
    pub fn add(
        &self,
        list: &ConfList,
        att: &AttachmentParams,
        caps: &Map<String, Value>,
    ) -> Result<Value, CniError> {
        let mut prev: Option<Value> = None;
        for i in 0..list.plugins.len() {
            let req = plugin_request(list, i, prev.as_ref(), caps);
            let out = self.exec("ADD", &Self::plugin_type(list, i), Some(att), &req)?;
            prev = Some(out.unwrap_or(Value::Null));
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// DEL through the list in reverse, each plugin given the ADD's result.
    pub fn del(
        &self,
        list: &ConfList,
        att: &AttachmentParams,
        caps: &Map<String, Value>,
        add_result: Option<&Value>,
    ) -> Result<(), CniError> {
        for i in (0..list.plugins.len()).rev() {
            let req = plugin_request(list, i, add_result, caps);
            self.exec("DEL", &Self::plugin_type(list, i), Some(att), &req)?;
        }
        Ok(())
    }

    /// CHECK through the list (skipped when the list disables it).
    pub fn check(
        &self,
        list: &ConfList,
        att: &AttachmentParams,
        caps: &Map<String, Value>,
        add_result: &Value,
    ) -> Result<(), CniError> {
        if list.disable_check {
            return Ok(());
        }
        for i in 0..list.plugins.len() {
            let req = plugin_request(list, i, Some(add_result), caps);
            self.exec("CHECK", &Self::plugin_type(list, i), Some(att), &req)?;
        }
        Ok(())
    }

    /// STATUS of every plugin. Like libcni, a no-op for lists older than
    /// 1.1.0, the version that introduced it.
    pub fn status(&self, list: &ConfList) -> Result<(), CniError> {
        if !at_least_1_1(&list.cni_version) {
            return Ok(());
        }
        for i in 0..list.plugins.len() {
            let req = plugin_request(list, i, None, &Map::new());
            self.exec("STATUS", &Self::plugin_type(list, i), None, &req)?;
        }
        Ok(())
    }

    /// GC with the attachments still valid; every plugin runs, errors are
    /// collected. Like libcni, a no-op for lists older than 1.1.0 (the
    /// reference plugins 1.1.1 answer GC with "missing containerID").
    pub fn gc(&self, list: &ConfList, valid: &[(String, String)]) -> Result<(), Vec<CniError>> {
        if !at_least_1_1(&list.cni_version) {
            return Ok(());
        }
        let attachments: Vec<Value> = valid
            .iter()
            .map(|(c, i)| json!({"containerID": c, "ifname": i}))
            .collect();
        let mut errors = Vec::new();
        for i in 0..list.plugins.len() {
            let mut req = plugin_request(list, i, None, &Map::new());
            req["cni.dev/valid-attachments"] = Value::Array(attachments.clone());
            if let Err(e) = self.exec("GC", &Self::plugin_type(list, i), None, &req) {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Whether a spec version is 1.1.0 or later.
pub fn at_least_1_1(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::spec::{PortSpec, Protocol};

    #[test]
    fn version_gate_for_gc_and_status() {
        assert!(at_least_1_1("1.1.0") && at_least_1_1("1.2.0") && at_least_1_1("2.0.0"));
        assert!(!at_least_1_1("1.0.0") && !at_least_1_1("0.4.0") && !at_least_1_1(""));
    }

    fn list() -> ConfList {
        parse_conflist(
            Path::new("/x/10-margay.conflist"),
            json!({
                "cniVersion": "1.0.0",
                "name": "k8s-pod-network",
                "plugins": [
                    {"type": "margay", "socket": "/run/cni.sock"},
                    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
                    {"type": "bandwidth", "capabilities": {"bandwidth": true, "other": false}}
                ]
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn derives_each_plugins_request_as_the_spec_says() {
        let l = list();
        let mut hp = BTreeMap::new();
        hp.insert(
            8080,
            PortSpec {
                protocol: Protocol::Tcp,
                port: 80,
            },
        );
        let mut ann = BTreeMap::new();
        ann.insert(
            "kubernetes.io/ingress-bandwidth".to_string(),
            "10M".to_string(),
        );
        let caps = capability_args(&hp, &ann).unwrap();

        let first = plugin_request(&l, 0, None, &caps);
        assert_eq!(
            first,
            json!({"type": "margay", "socket": "/run/cni.sock", "name": "k8s-pod-network", "cniVersion": "1.0.0"})
        );
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let second = plugin_request(&l, 1, Some(&prev), &caps);
        assert_eq!(second["prevResult"], prev);
        assert_eq!(
            second["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
        );
        assert!(second.get("capabilities").is_none());
        assert_eq!(second["snat"], true);
        let third = plugin_request(&l, 2, Some(&prev), &caps);
        assert_eq!(
            third["runtimeConfig"],
            json!({"bandwidth": {"ingressRate": 10_000_000u64, "ingressBurst": 2147483647u64}})
        );
        // No capability arguments: no runtimeConfig at all.
        assert!(
            plugin_request(&l, 1, None, &Map::new())
                .get("runtimeConfig")
                .is_none()
        );
    }

    #[test]
    fn loads_the_lexically_first_config_and_wraps_a_single_plugin() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_conflist(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join("README"), "not a config").unwrap();
        std::fs::write(
            dir.path().join("20-other.conf"),
            json!({"cniVersion": "1.0.0", "name": "other", "type": "ptp"}).to_string(),
        )
        .unwrap();
        let l = load_conflist(dir.path()).unwrap().unwrap();
        assert_eq!((l.name.as_str(), l.plugins.len()), ("other", 1));
        std::fs::write(
            dir.path().join("10-margay.conflist"),
            json!({"cniVersion": "1.0.0", "name": "k8s", "disableCheck": true, "plugins": [{"type": "margay"}]}).to_string(),
        )
        .unwrap();
        let l = load_conflist(dir.path()).unwrap().unwrap();
        assert_eq!(l.name, "k8s");
        assert!(l.disable_check);
        std::fs::write(dir.path().join("05-bad.conflist"), "{\"name\": 1}").unwrap();
        let e = load_conflist(dir.path()).unwrap_err();
        assert!(e.to_string().contains("05-bad.conflist"), "{e}");
    }

    #[test]
    fn quantities_and_cni_args() {
        assert_eq!(parse_quantity("10M"), Some(10_000_000));
        assert_eq!(parse_quantity("1Mi"), Some(1 << 20));
        assert_eq!(parse_quantity("500k"), Some(500_000));
        assert_eq!(parse_quantity("12"), Some(12));
        assert_eq!(parse_quantity("1.5M"), None);
        assert_eq!(parse_quantity("M"), None);
        let e = capability_args(
            &BTreeMap::new(),
            &[(
                "kubernetes.io/egress-bandwidth".to_string(),
                "fast".to_string(),
            )]
            .into_iter()
            .collect(),
        )
        .unwrap_err();
        assert!(e.contains("egress-bandwidth"), "{e}");
        assert_eq!(
            k8s_cni_args("web", "a", "u1", "c1"),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=a;K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=u1"
        );
    }
}
