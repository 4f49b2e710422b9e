//! Structured logs with `tracing`: text or one JSON object per line. The level
//! can change while the agent runs (a changed `AgentConfiguration.logLevel`);
//! `RUST_LOG`, when set, overrides it per target and is never replaced.

use margay_api::resources::agent::{LogFormat, LogLevel};
use std::io::IsTerminal;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Changes the level of a running agent's logs.
#[derive(Clone)]
pub struct LogControl {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
    /// `RUST_LOG` was set: leave the filter alone.
    pinned: bool,
}

impl LogControl {
    pub fn set_level(&self, level: LogLevel) {
        if self.pinned {
            return;
        }
        if let Some(h) = &self.handle
            && h.reload(filter_for(level)).is_ok()
        {
            tracing::info!(level = name(level), "log level changed");
        }
    }
}

fn name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

/// Our crates at the configured level; the kube/hyper stack stays at warn.
fn filter_for(level: LogLevel) -> EnvFilter {
    let l = name(level);
    EnvFilter::new(format!("warn,margay_agent={l},margay_ipam={l}"))
}

pub fn init(level: LogLevel, format: LogFormat) -> LogControl {
    let (filter, pinned) = match EnvFilter::try_from_default_env() {
        Ok(f) => (f, true),
        Err(_) => (filter_for(level), false),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::stderr().is_terminal();
    let registry = tracing_subscriber::registry().with(filter);
    let ok = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init()
            .is_ok(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .try_init()
            .is_ok(),
    };
    LogControl {
        handle: ok.then_some(handle),
        pinned,
    }
}
