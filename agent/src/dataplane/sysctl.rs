//! Reading and writing per-interface sysctls under `/proc/sys`.
//!
//! `/proc/sys/net` shows the network namespace of the thread that opens the
//! file, so these calls must run on the thread (and namespace) the dataplane
//! runs in: they are synchronous on purpose (a few small files, no
//! `spawn_blocking` hop to a thread that might sit in another namespace).

use crate::calc::sysctls::{Sysctl, is_valid_ifname};
use std::io;
use std::path::Path;

/// Makes each sysctl hold its value; returns how many had to be written.
/// Refuses interface names that are not safe path components.
pub fn ensure(ifname: &str, sysctls: &[Sysctl]) -> io::Result<usize> {
    if !is_valid_ifname(ifname) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{ifname:?} is not an interface name"),
        ));
    }
    let mut written = 0;
    for s in sysctls {
        let path = Path::new("/proc/sys").join(&s.path);
        let current = std::fs::read_to_string(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        if current.trim() != s.value {
            std::fs::write(&path, s.value)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            written += 1;
        }
    }
    Ok(written)
}
