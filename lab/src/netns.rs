//! Named network namespaces (`/run/netns/NAME`) and the commands run inside them.
//!
//! Everything here shells out to iproute2: the lab is test infrastructure, and
//! `ip` is what a person debugging it would type, so errors quote the exact
//! command that failed.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::cmd::{self, CommandError};
use crate::process;

/// A named network namespace. Holding one does not keep it alive or delete it;
/// see [`NetnsGuard`] for that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace and brings its loopback up.
    pub fn create(name: &str) -> Result<Netns, CommandError> {
        cmd::run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Netns::open(name);
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A handle on an existing namespace (not checked).
    pub fn open(name: &str) -> Netns {
        Netns {
            name: name.to_string(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `/run/netns/NAME` exists.
    pub fn exists(&self) -> bool {
        exists(&self.name)
    }

    /// `ip -n NAME ARGS...`, returning stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String, CommandError> {
        cmd::run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `program ARGS...` inside the namespace to completion, returning stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, CommandError> {
        cmd::run(self.command(program).args(args))
    }

    /// Sets sysctls inside the namespace (`net.*` keys are per namespace).
    pub fn sysctls(&self, settings: &[(&str, &str)]) -> Result<(), CommandError> {
        let args: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut c = self.command("sysctl");
        c.arg("-qw").args(&args);
        cmd::run(&mut c).map(|_| ())
    }

    /// Pids of every process whose network namespace is this one.
    pub fn pids(&self) -> Vec<i32> {
        cmd::run(Command::new("ip").args(["netns", "pids", &self.name]))
            .map(|out| {
                out.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops every process inside, then removes the namespace (and with it every
    /// link inside it; a veth's peer elsewhere goes too). Missing is not an error.
    pub fn delete(&self) -> Result<(), CommandError> {
        if !self.exists() {
            return Ok(());
        }
        process::terminate(&self.pids(), Duration::from_secs(2));
        cmd::run(Command::new("ip").args(["netns", "del", &self.name])).map(|_| ())
    }
}

/// Deletes its namespace (and stops what runs in it) when dropped, so a test
/// that fails half way still leaves nothing behind.
#[derive(Debug)]
pub struct NetnsGuard(Netns);

impl NetnsGuard {
    /// Creates a namespace named `PREFIX-<unique suffix>`.
    pub fn create_unique(prefix: &str) -> Result<NetnsGuard, CommandError> {
        Netns::create(&unique_name(prefix)).map(NetnsGuard)
    }
}

impl std::ops::Deref for NetnsGuard {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.0
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(e) = self.0.delete() {
            eprintln!("warning: could not delete network namespace: {e}");
        }
    }
}

/// Whether a named namespace exists.
pub fn exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Names of every named network namespace on the machine.
pub fn list() -> Result<Vec<String>, CommandError> {
    let out = cmd::run(Command::new("ip").args(["netns", "list"]))?;
    // Lines look like "name" or "name (id: 3)".
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// A name unique on this machine for this process's lifetime: the prefix, the
/// pid, a per-process counter and a few bits of the clock (pids are reused).
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{:x}-{n:x}-{:04x}",
        std::process::id(),
        nanos & 0xffff
    )
}

/// Creates a veth pair with one end `a_if` in `a` and the other `b_if` in `b`,
/// both up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<(), CommandError> {
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}
