//! Finding Margay's own binaries (`margay-lab`, `margay-agent`, ...) from the
//! lab CLI, from tests and from benchmarks.

use std::path::PathBuf;

/// Environment variable naming a directory that holds the binaries; wins over
/// every other place.
pub const BIN_DIR_ENV: &str = "MARGAY_BIN_DIR";

/// Locates binary `name`: `$MARGAY_BIN_DIR`, then next to the running
/// executable, then one directory up (a test binary in `target/debug/deps`
/// finds `target/debug/NAME`), then `$PATH`.
pub fn locate(name: &str) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        candidates.push(PathBuf::from(dir).join(name));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join(name));
        if let Some(up) = dir.parent() {
            candidates.push(up.join(name));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// Like [`locate`], with an error that tells the user what to build.
pub fn require(name: &str) -> Result<PathBuf, crate::LabError> {
    locate(name).ok_or_else(|| crate::LabError::MissingBinary(name.to_string()))
}
