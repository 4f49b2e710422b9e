//! Background processes the lab starts (API server, agents, pod servers) and
//! stopping them again.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Sends SIGTERM to each pid, waits up to `grace` for them to exit, then sends
/// SIGKILL to whatever is left. Pids that are already gone are ignored.
pub fn terminate(pids: &[i32], grace: Duration) {
    for &pid in pids {
        signal(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &pid in pids.iter().filter(|&&p| alive(p)) {
        signal(pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends SIGKILL and waits (up to 5 s) until the process is gone.
pub fn kill_now(pid: i32) {
    signal(pid, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(pid: i32, sig: i32) {
    if pid > 1 {
        // SAFETY: kill(2) has no memory-safety preconditions; a stale pid is
        // reported through the return value, which we ignore on purpose.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Whether a process exists and has not exited (zombies count as gone).
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Whether the process `pid` has `KEY=VALUE` in its environment: how the lab
/// recognises its own processes after a restart, whatever the pid was reused for.
pub fn has_env(pid: i32, key: &str, value: &str) -> bool {
    let want = format!("{key}={value}");
    fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|&b| b == 0).any(|kv| kv == want.as_bytes()))
        .unwrap_or(false)
}

/// Starts `cmd` detached from the caller (own session, stdin closed, output
/// appended to `log`), returning its pid. The child is reaped by a thread so it
/// never lingers as a zombie while the caller lives.
pub fn spawn_daemon(cmd: &mut Command, log: &Path) -> std::io::Result<i32> {
    use std::os::unix::process::CommandExt;
    let out = fs::OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: setsid() is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id() as i32;
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(pid)
}
