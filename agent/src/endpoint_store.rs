//! Endpoint records on the node's disk (`<state-dir>/endpoints/*.json`), so a
//! restarted agent knows its endpoints before the API answers, and never
//! mistakes a live pod's route for a stale one.
//!
//! One file per endpoint, written through a temporary file and a rename so a
//! crash leaves the old record or the new one, never half of one.

use crate::calc::endpoints::{Endpoint, EndpointKey};
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct EndpointStore {
    dir: PathBuf,
}

impl EndpointStore {
    /// Opens (creating) `<state_dir>/endpoints`.
    pub fn open(state_dir: &Path) -> io::Result<EndpointStore> {
        let dir = state_dir.join("endpoints");
        std::fs::create_dir_all(&dir)?;
        Ok(EndpointStore { dir })
    }

    fn path(&self, key: &EndpointKey) -> PathBuf {
        self.dir.join(format!(
            "{:016x}.json",
            margay_api::names::fnv1a64(key.as_str().as_bytes())
        ))
    }

    pub fn save(&self, e: &Endpoint) -> io::Result<()> {
        let path = self.path(&e.key());
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_vec_pretty(e).map_err(io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, &path)
    }

    pub fn remove(&self, key: &EndpointKey) -> io::Result<()> {
        match std::fs::remove_file(self.path(key)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every readable record; unreadable ones are reported and skipped (an
    /// endpoint without a record is recovered from IPAM and the kernel).
    pub fn load(&self) -> io::Result<Vec<Endpoint>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Endpoint>(&b).map_err(|e| e.to_string()))
            {
                Ok(e) => out.push(e),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable endpoint record")
                }
            }
        }
        out.sort_by_key(|e| e.key());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calc::endpoints::EndpointState;
    use margay_api::endpoint::{Attachment, PodRef};

    #[test]
    fn records_survive_a_reopen_and_bad_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let s = EndpointStore::open(dir.path()).unwrap();
        let e = Endpoint {
            attachment: Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into(),
            },
            pod: PodRef {
                namespace: "default".into(),
                name: "web".into(),
                uid: Some("u1".into()),
            },
            host_interface: "mgy0123456789a".into(),
            addresses: vec!["10.244.0.5".parse().unwrap()],
            mac: None,
            netns: "/run/netns/x".into(),
            state: EndpointState::Ready,
        };
        s.save(&e).unwrap();
        std::fs::write(dir.path().join("endpoints/garbage.json"), "{").unwrap();
        let again = EndpointStore::open(dir.path()).unwrap();
        assert_eq!(again.load().unwrap(), vec![e.clone()]);
        again.remove(&e.key()).unwrap();
        again.remove(&e.key()).unwrap();
        assert!(again.load().unwrap().is_empty());
    }
}
