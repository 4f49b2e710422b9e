//! The `margay` CNI plugin (`margay-cni`), exec'd by the container runtime for
//! every pod.
//!
//! It asks the node's agent for the pod's addresses over the endpoint socket
//! ([`agent`], protocol in `margay_api::endpoint`), wires the pod Calico style
//! with netlink ([`wiring`] says what, [`netlink`] does it), tells the agent
//! the pod is wired, and prints the spec's result ([`result`]). [`env`] and
//! [`config`] read what the runtime passes; [`plugin`] runs each command.

pub mod agent;
pub mod config;
pub mod env;
pub mod error;
pub mod netlink;
pub mod plugin;
pub mod result;
pub mod wiring;

use std::io::Read;

/// Runs the plugin against the process's environment, stdin and stdout, and
/// returns the exit code.
pub fn main_with_process_io() -> i32 {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let version = config::version_of(&stdin).unwrap_or_else(|| "1.1.0".to_string());
    let outcome = match read {
        Err(e) => Err(error::CniError::io(format!(
            "reading the network configuration from stdin: {e}"
        ))),
        Ok(_) => env::parse(|k| std::env::var(k).ok()).and_then(|inv| plugin::run(&inv, &stdin)),
    };
    match outcome {
        Ok(None) => 0,
        Ok(Some(out)) => {
            println!("{out}");
            0
        }
        Err(e) => {
            // The spec's error object goes to stdout, where runtimes read it.
            println!("{}", e.to_json(&version));
            1
        }
    }
}
