//! The state file: every object and the resourceVersion counter, so a restarted
//! server keeps objects and versions. Written atomically (temporary file, then
//! rename) after changes, coalescing bursts into one write.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::http::Shared;
use super::store::State;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("reading state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not a valid state: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("writing state file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Loads the state file if it exists.
pub fn load(path: &Path) -> Result<Option<State>, PersistError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PersistError::Read {
                path: path.into(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| PersistError::Parse {
            path: path.into(),
            source,
        })
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let err = |source| PersistError::Write {
        path: path.into(),
        source,
    };
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(
        ".tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Snapshots the store now and writes it. Only the snapshot is taken under
/// the store lock (shared references to the immutable stored objects, a
/// pointer copy each); serializing a few megabytes of JSON and writing the
/// file happen after the lock is released, so requests and watches are not
/// held up by a save. Saves are serialized, so an older snapshot never
/// replaces a newer one.
pub fn save(shared: &Shared, path: &Path) -> Result<(), PersistError> {
    let _one_at_a_time = shared.save_lock.lock().unwrap_or_else(|e| e.into_inner());
    let snapshot = shared.lock().state_snapshot();
    let bytes = serde_json::to_vec(&snapshot).map_err(|e| PersistError::Write {
        path: path.into(),
        source: e.into(),
    })?;
    write_atomic(path, &bytes)
}

/// The least time between two writes of the state file: changes within it
/// share the next write. Serializing every object is the server's main CPU
/// cost (most of its samples under `perf` in the `policy-latency`
/// benchmark, where a write came every ~50 ms), taken from the clients on a
/// small machine; a crash can lose at most this much more than the last
/// burst (shutdown writes the state at once).
pub const SAVE_MIN_INTERVAL: Duration = Duration::from_millis(500);

/// Writes the state after each burst of changes, at most every
/// [`SAVE_MIN_INTERVAL`], until the task is dropped.
pub async fn persist_loop(shared: Arc<Shared>, path: PathBuf) {
    loop {
        shared.dirty.notified().await;
        // Changes notified from here on set the permit again and are
        // written by the next round.
        let (s, p) = (shared.clone(), path.clone());
        match tokio::task::spawn_blocking(move || save(&s, &p)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("{e}"),
            Err(e) => tracing::error!("state writer failed: {e}"),
        }
        tokio::time::sleep(SAVE_MIN_INTERVAL).await;
    }
}
