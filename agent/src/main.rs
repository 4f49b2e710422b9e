//! `margay-agent`: see the library docs (`margay_agent`) for what it does.

use anyhow::Context;
use clap::Parser;
use kube::Client;
use kube::api::Api;
use margay_agent::config::{Cli, Settings};
use margay_api::resources::agent::{AGENT_CONFIG_DEFAULT_NAME, agent_config_name_for_node};
use margay_api::{AgentConfiguration, ResolvedAgentConfig};
use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let client = client(&cli).await?;
    // Node name first (the per-node AgentConfiguration is named after it).
    let pre = Settings::resolve(&cli, &ResolvedAgentConfig::default())?;
    let (cluster, warning) = cluster_config(&client, &pre.node_name).await;
    let settings = Settings::resolve(&cli, &cluster)?;
    let logs = margay_agent::logging::init(settings.log_level, settings.log_format);
    if let Some(w) = warning {
        tracing::warn!("{w}; using flags and defaults");
    }
    tracing::info!(node = %settings.node_name, socket = %settings.cni_socket.display(), state = %settings.state_dir.display(), "margay-agent starting");
    margay_agent::agent::run(&settings, client, logs, shutdown_signal()).await?;
    Ok(())
}

async fn client(cli: &Cli) -> anyhow::Result<Client> {
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig given and no in-cluster configuration found")?,
    };
    Client::try_from(config).context("building the API client")
}

/// The `default` and `node.<name>` AgentConfigurations, read once at start.
async fn cluster_config(client: &Client, node: &str) -> (ResolvedAgentConfig, Option<String>) {
    let api: Api<AgentConfiguration> = Api::all(client.clone());
    let read = async {
        let global = api.get_opt(AGENT_CONFIG_DEFAULT_NAME).await?;
        let local = api.get_opt(&agent_config_name_for_node(node)).await?;
        Ok::<_, kube::Error>((global, local))
    };
    match tokio::time::timeout(Duration::from_secs(10), read).await {
        Ok(Ok((g, l))) => (
            ResolvedAgentConfig::merge(g.as_ref().map(|c| &c.spec), l.as_ref().map(|c| &c.spec)),
            None,
        ),
        Ok(Err(e)) => (
            ResolvedAgentConfig::default(),
            Some(format!("could not read AgentConfiguration: {e}")),
        ),
        Err(_) => (
            ResolvedAgentConfig::default(),
            Some("AgentConfiguration: the API server did not answer within 10s".into()),
        ),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
