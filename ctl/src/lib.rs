//! `margayctl`, the calicoctl-style command-line tool of Margay. The same
//! binary installed as `kubectl-margay` is a kubectl plugin: `kubectl margay
//! get ippools` runs it with the arguments after `margay`.
//!
//! Layout: [`cli`] (the clap definitions, one struct per command), [`commands`]
//! (one module per command group: `resources`, `ipam`, `version`, `diags`, and
//! the groups to come, `node`, `bgp`, `policy`, slot in beside them), and the
//! pieces they share: [`client`] (kubeconfig like kubectl), [`kinds`] (the
//! margay.dev kinds and their names), [`manifest`] (reading `-f` files),
//! [`check`] (validation before anything is written), [`output`] (tables,
//! YAML, JSON) and [`docs`] (the generated reference pages).
//!
//! Exit codes, for scripts: [`exit::OK`] 0, [`exit::ERROR`] 1,
//! [`exit::USAGE`] 2, [`exit::PROBLEMS`] 3 (`ipam check` found problems).

pub mod check;
pub mod cli;
pub mod client;
pub mod commands;
pub mod docs;
pub mod exit;
pub mod kinds;
pub mod manifest;
pub mod output;

use std::ffi::OsString;

/// The program name as the user typed it: `kubectl margay` when run as the
/// kubectl plugin (`kubectl-margay`), else `margayctl`.
pub fn display_name(argv0: Option<&OsString>) -> &'static str {
    let base = argv0
        .and_then(|a| std::path::Path::new(a).file_name().map(|f| f.to_owned()))
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    if base.starts_with("kubectl-margay") {
        "kubectl margay"
    } else {
        "margayctl"
    }
}

/// Parses `args` (with the program name first) and runs the command; returns
/// the exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> u8 {
    let args: Vec<OsString> = args.into_iter().collect();
    let name = display_name(args.first());
    let cli = match cli::parse(name, &args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" to clap but successes to us.
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::ERROR;
        }
    };
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(code) => code,
        Err(e) => exit::report(&e),
    }
}
