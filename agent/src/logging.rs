//! Structured logs with `tracing`: text or one JSON object per line.
//! `RUST_LOG` (if set) overrides the configured level per target.

use margay_api::resources::agent::{LogFormat, LogLevel};
use tracing_subscriber::EnvFilter;

pub fn init(level: LogLevel, format: LogFormat) {
    let level = match level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    };
    let filter = EnvFilter::try_from_default_env()
        // Our crates at the configured level; the kube/hyper stack one step quieter.
        .unwrap_or_else(|_| {
            EnvFilter::new(format!("warn,margay_agent={level},margay_ipam={level}"))
        });
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
