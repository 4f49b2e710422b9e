//! The Kubernetes API emulator (`margay-lab apiserver`): test infrastructure that
//! kube-rs clients (reflectors included) and `kubectl` 1.32 use as they would a
//! real cluster. It is generic over resource kinds: objects are JSON keyed by
//! group/resource, namespace and name. `docs/apiserver-emulator.md` lists what it
//! emulates and every gap (no TLS/authn/authz/admission webhooks/server-side
//! apply/protobuf, ...).
//!
//! # Command line
//!
//! ```text
//! margay-lab apiserver --listen 127.0.0.1:0 [--listen ADDR]...
//!     [--listen-netns NS=ADDR]...   # bind inside /run/netns/NS
//!     [--state FILE]                # load at start, persist on change
//!     [--ready-file FILE]           # {"pid": N, "listen": ["127.0.0.1:41234", ...]}
//!     [--latency 50ms]              # added to every request
//! ```
//! Plain HTTP. SIGTERM/SIGINT write the state and exit 0.
//!
//! # Fault switch
//!
//! `GET /_lab/faults` and `PUT /_lab/faults` with `{"refuse": bool, "latency_ms": N}`
//! (either field optional). While `refuse` is on, every Kubernetes request has its
//! connection reset (TCP RST, no answer: what clients see of an API server that
//! went down) and open watches are cut; `/_lab/*` keeps working. `POST /_lab/compact` drops
//! the watch history, so watches from earlier versions get 410 Gone.
//!
//! # In tests
//!
//! [`TestApiServer`] runs the server on the caller's tokio runtime:
//! `TestApiServer::start().await?`, then `.url()`, `.client()` (a `kube::Client`),
//! `.kubeconfig_path()` / `.kubectl()` (for `kubectl` subprocesses),
//! `.set_latency(d)`, `.set_refusing(b)`, `.compact()`, and `.stop()` /
//! `.start_again()` / `.restart()` to restart on the same address and state
//! (objects and resourceVersions kept, watch history gone — as a real restart).
//! The server's tasks run on the test's runtime, so a test that blocks its thread
//! (e.g. `std::process::Command::output` on kubectl) needs a multi-thread runtime.

mod admission;
mod discovery;
pub mod http;
mod listen;
mod netpol;
mod patch;
mod persistence;
mod protobuf;
mod resources;
mod routing;
mod schema;
mod selectors;
pub mod server;
mod status;
pub mod store;
mod table;
mod testing;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

pub use listen::ListenError;
pub use server::{RunningServer, ServerError, ServerOptions};
pub use testing::{TestApiServer, TestApiServerBuilder};

/// Flags of `margay-lab apiserver`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (repeatable), e.g. 127.0.0.1:0.
    #[arg(long)]
    pub listen: Vec<String>,
    /// Listen inside a network namespace: NS=IP:PORT (repeatable).
    #[arg(long = "listen-netns", value_name = "NS=ADDR")]
    pub listen_netns: Vec<String>,
    /// State file: loaded at start if present, written on every change.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Written (atomically) once every listener is bound: {"pid", "listen"}.
    #[arg(long = "ready-file")]
    pub ready_file: Option<PathBuf>,
    /// Delay added to every request, e.g. 100ms or 2s.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub latency: Duration,
}

/// Parses `250ms`, `2s`, `1m`, `500us`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 100ms, 2s, 1m"))?;
    let secs = match unit {
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?}: use us, ms, s or m"
            ));
        }
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Runs the API server until SIGTERM or SIGINT.
pub fn run(args: Args) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    if args.listen.is_empty() && args.listen_netns.is_empty() {
        anyhow::bail!("apiserver: give at least one --listen ADDR or --listen-netns NS=ADDR");
    }
    let mut listeners = Vec::new();
    for a in &args.listen {
        listeners.push(listen::bind(listen::parse_addr(a)?)?);
    }
    for spec in &args.listen_netns {
        let (ns, addr) = listen::parse_netns_spec(spec)?;
        listeners.push(listen::bind_in_netns(&ns, addr)?);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let options = ServerOptions {
            state_file: args.state.clone(),
            latency: args.latency,
            ..ServerOptions::default()
        };
        let server = RunningServer::start(options, listeners)?;
        let addrs: Vec<String> = server.addrs().iter().map(|a| a.to_string()).collect();
        tracing::info!("apiserver listening on {}", addrs.join(", "));
        if let Some(p) = &args.ready_file {
            let ready = serde_json::json!({"pid": std::process::id(), "listen": addrs});
            persistence::write_atomic(p, ready.to_string().as_bytes())?;
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        server.stop().await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3h").is_err());
    }
}
