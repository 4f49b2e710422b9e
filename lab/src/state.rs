//! A lab's state directory: its identity, what it built and which processes it
//! started, so that `status`, `exec` and `down` work from any later process —
//! and `down` works even when `up` crashed half way.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::topology::Plan;

/// Where a lab keeps its files unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/tmp/margay-lab";

/// Environment variable every lab process carries, holding the lab id; `down`
/// checks it before signalling a recorded pid, in case the pid was reused.
pub const LAB_ID_ENV: &str = "MARGAY_LAB_ID";

/// What `up` built, written once the lab is ready.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub plan: Plan,
    /// URL for clients on this machine (kubectl, tests).
    pub api_url: Option<String>,
    /// URL for clients inside node namespaces.
    pub api_url_nodes: Option<String>,
    /// Whether `up` started a `margay-agent` on every node.
    #[serde(default)]
    pub agents: bool,
    /// Extra arguments every agent is started with.
    #[serde(default)]
    pub agent_args: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// Opens (creating if needed) a state directory.
    pub fn open(path: &Path) -> io::Result<StateDir> {
        fs::create_dir_all(path)?;
        let path = fs::canonicalize(path)?;
        fs::create_dir_all(path.join("pids"))?;
        fs::create_dir_all(path.join("logs"))?;
        Ok(StateDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lab id: a hash of the canonical directory path, so two state
    /// directories give two labs with disjoint namespace names.
    pub fn lab_id(&self) -> String {
        lab_id_for(&self.path)
    }

    /// Takes the directory's lock, held until the guard drops, so two `up`/`down`
    /// runs on one lab never interleave.
    pub fn lock(&self) -> io::Result<DirLock> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path.join(".lock"))?;
        // SAFETY: flock on a descriptor we own; blocks until the lock is ours.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(DirLock { _file: file })
    }

    pub fn state_file(&self) -> PathBuf {
        self.path.join("lab.json")
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.path.join("kubeconfig")
    }

    /// The kubeconfig processes inside node namespaces use.
    pub fn node_kubeconfig(&self) -> PathBuf {
        self.path.join("kubeconfig.nodes")
    }

    /// Files of one node (the lab's nodes share this machine's filesystem, so
    /// what a real node keeps in /etc/cni, /var/run/margay and /var/lib/margay
    /// lives under the state directory instead).
    pub fn node_files(&self, node: &str) -> NodeFiles {
        let dir = self.path.join("nodes").join(node);
        NodeFiles {
            cni_socket: dir.join("cni.sock"),
            cni_conf_dir: dir.join("net.d"),
            agent_dir: dir.join("agent"),
            dir,
        }
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.path.join("logs").join(format!("{name}.log"))
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn load(&self) -> io::Result<Option<LabState>> {
        match fs::read(self.state_file()) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, state: &LabState) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        write_atomically(&self.state_file(), &json)
    }

    /// Records a started process under a role name (`apiserver`, `agent-node1`).
    pub fn record_pid(&self, role: &str, pid: i32) -> io::Result<()> {
        fs::write(
            self.path.join("pids").join(format!("{role}.pid")),
            pid.to_string(),
        )
    }

    /// Every recorded process, as (role, pid).
    pub fn recorded_pids(&self) -> Vec<(String, i32)> {
        let Ok(dir) = fs::read_dir(self.path.join("pids")) else {
            return Vec::new();
        };
        dir.filter_map(Result::ok)
            .filter_map(|e| {
                let role = e.file_name().to_str()?.strip_suffix(".pid")?.to_string();
                let pid = fs::read_to_string(e.path()).ok()?.trim().parse().ok()?;
                Some((role, pid))
            })
            .collect()
    }

    pub fn forget_pid(&self, role: &str) {
        let _ = fs::remove_file(self.path.join("pids").join(format!("{role}.pid")));
    }

    /// Removes what `up` wrote, keeping `logs/` for post-mortems.
    pub fn clear(&self) -> io::Result<()> {
        for entry in fs::read_dir(&self.path)? {
            let entry = entry?;
            let name = entry.file_name();
            if name == "logs" || name == ".lock" {
                continue;
            }
            let p = entry.path();
            if entry.file_type()?.is_dir() {
                fs::remove_dir_all(&p)?;
            } else {
                fs::remove_file(&p)?;
            }
        }
        fs::create_dir_all(self.path.join("pids"))
    }
}

/// Where one lab node keeps its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeFiles {
    /// `nodes/<node>/`.
    pub dir: PathBuf,
    /// The agent's endpoint socket, which the CNI plugin calls
    /// (`/var/run/margay/cni.sock` on a real node).
    pub cni_socket: PathBuf,
    /// The CNI configuration directory the agent installs its conflist into
    /// (`/etc/cni/net.d`).
    pub cni_conf_dir: PathBuf,
    /// The agent's own node-local state (`/var/lib/margay`).
    pub agent_dir: PathBuf,
}

/// Held lock on a state directory.
#[derive(Debug)]
pub struct DirLock {
    _file: fs::File,
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers
/// never see half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

/// Six hex digits of FNV-1a over the path: stable across runs and Rust versions.
pub fn lab_id_for(path: &Path) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:06x}", (h ^ (h >> 32)) & 0xff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_ids_are_stable_and_differ_between_directories() {
        let a = lab_id_for(Path::new("/tmp/margay-lab"));
        assert_eq!(a, lab_id_for(Path::new("/tmp/margay-lab")));
        assert_ne!(a, lab_id_for(Path::new("/tmp/margay-lab2")));
        assert_eq!(a.len(), 6);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn records_and_clears_pids_but_keeps_logs() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(dir.path()).unwrap();
        sd.record_pid("apiserver", 4242).unwrap();
        sd.record_pid("agent-node1", 4343).unwrap();
        let mut pids = sd.recorded_pids();
        pids.sort();
        assert_eq!(
            pids,
            [("agent-node1".into(), 4343), ("apiserver".into(), 4242)]
        );
        fs::write(sd.log("apiserver"), "hello").unwrap();
        fs::write(sd.kubeconfig(), "x").unwrap();
        sd.clear().unwrap();
        assert!(sd.recorded_pids().is_empty());
        assert!(!sd.kubeconfig().exists());
        assert!(sd.log("apiserver").exists());
    }
}
