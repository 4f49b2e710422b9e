//! The API client, configured as kubectl configures itself: `--kubeconfig`,
//! else `$KUBECONFIG` (a list of files, merged), else `~/.kube/config`, else
//! the in-cluster service account; `--context` picks a context.

use crate::cli::GlobalArgs;
use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// A connected client and where it points, for messages.
#[derive(Clone)]
pub struct ApiClient {
    pub client: kube::Client,
    pub url: String,
}

pub async fn connect(g: &GlobalArgs) -> anyhow::Result<ApiClient> {
    let options = KubeConfigOptions {
        context: g.context.clone(),
        cluster: None,
        user: None,
    };
    let config = match &g.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None => match kube::Config::from_kubeconfig(&options).await {
            Ok(c) => c,
            // No kubeconfig at all: inside a pod, use its service account
            // (unless a context was asked for, which only a kubeconfig has).
            Err(e) if g.context.is_none() => kube::Config::incluster().map_err(|ie| {
                anyhow::anyhow!(
                    "no usable kubeconfig ({e}) and not running in a cluster ({ie}): pass --kubeconfig or set KUBECONFIG"
                )
            })?,
            Err(e) => return Err(e).context("reading the kubeconfig ($KUBECONFIG or ~/.kube/config)"),
        },
    };
    let url = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).context("building the API client")?;
    Ok(ApiClient { client, url })
}

/// Adds where we talked to, so "connection refused" says which server.
pub fn api_error(url: &str, what: &str, e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(s) => anyhow::anyhow!("{what}: {} ({})", s.message, s.reason),
        other => anyhow::anyhow!("{what}: cannot reach the API server at {url}: {other}"),
    }
}
