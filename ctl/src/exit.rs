//! Exit codes scripts can rely on, and how errors map to them.

/// The command did what was asked (for `ipam check`: found nothing wrong).
pub const OK: u8 = 0;
/// Something failed: the API server, a validation error, an object not found.
pub const ERROR: u8 = 1;
/// The command line was wrong: unknown command, kind or flag, missing argument.
pub const USAGE: u8 = 2;
/// A check ran and found problems (`ipam check`).
pub const PROBLEMS: u8 = 3;

/// An error in how the command was called (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A bail-out for [`anyhow`]: a usage error.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// Prints `e` to stderr and returns its exit code.
pub fn report(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<UsageError>().is_some() {
        eprintln!("error: {e:#}");
        eprintln!("(run with --help for usage)");
        return USAGE;
    }
    eprintln!("error: {e:#}");
    ERROR
}
