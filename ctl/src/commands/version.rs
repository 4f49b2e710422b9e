//! `version`: margayctl's own version and build, the API server's, and each
//! node's agent version as the agent publishes it on its Node.

use crate::cli::{GlobalArgs, OutputFormat, VersionArgs};
use crate::client::{self, api_error};
use crate::exit;
use crate::output;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use serde::Serialize;
use std::collections::BTreeMap;

/// The Node annotation an agent writes with its version (requested of the
/// agent; until it does, agents show as "unknown").
pub const AGENT_VERSION_ANNOTATION: &str = "margay.dev/agent-version";
/// The label of the agent's pods in the install manifests.
pub const AGENT_POD_LABEL: &str = "app.kubernetes.io/name=margay-agent";

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Versions {
    pub client: ClientVersion,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerVersion>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<AgentVersion>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientVersion {
    pub version: String,
    /// The commit it was built from (`MARGAY_BUILD_COMMIT` at build time).
    pub commit: String,
    pub platform: String,
    pub profile: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerVersion {
    pub url: String,
    pub kubernetes: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentVersion {
    pub node: String,
    /// From the Node annotation, else "unknown".
    pub version: String,
    /// The image of the node's agent pod, if one runs there.
    pub image: Option<String>,
}

pub fn client_version() -> ClientVersion {
    ClientVersion {
        version: env!("CARGO_PKG_VERSION").into(),
        commit: option_env!("MARGAY_BUILD_COMMIT")
            .filter(|c| !c.is_empty())
            .unwrap_or("unknown")
            .into(),
        platform: format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
        profile: if cfg!(debug_assertions) {
            "debug".into()
        } else {
            "release".into()
        },
    }
}

pub async fn run(g: &GlobalArgs, a: &VersionArgs) -> anyhow::Result<u8> {
    let mut v = Versions {
        client: client_version(),
        server: None,
        agents: Vec::new(),
    };
    if !a.client {
        let c = client::connect(g).await?;
        let info = c
            .client
            .apiserver_version()
            .await
            .map_err(|e| api_error(&c.url, "reading the API server version", e))?;
        v.server = Some(ServerVersion {
            url: c.url.clone(),
            kubernetes: info.git_version,
        });
        let nodes: Api<Node> = Api::all(c.client.clone());
        let nodes = nodes
            .list(&ListParams::default())
            .await
            .map_err(|e| api_error(&c.url, "listing Nodes", e))?;
        let pods: Api<Pod> = Api::namespaced(c.client.clone(), &g.namespace);
        // The pods are extra information: a cluster without them (or without
        // permission to list them) still gets the versions.
        let images: BTreeMap<String, String> = match pods
            .list(&ListParams::default().labels(AGENT_POD_LABEL))
            .await
        {
            Ok(list) => list
                .items
                .iter()
                .filter_map(|p| {
                    let spec = p.spec.as_ref()?;
                    let node = spec.node_name.clone()?;
                    let image = spec.containers.first()?.image.clone()?;
                    Some((node, image))
                })
                .collect(),
            Err(_) => BTreeMap::new(),
        };
        let mut agents: Vec<AgentVersion> = nodes
            .items
            .iter()
            .map(|n| {
                let name = n.metadata.name.clone().unwrap_or_default();
                AgentVersion {
                    version: n
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(AGENT_VERSION_ANNOTATION))
                        .cloned()
                        .unwrap_or_else(|| "unknown".into()),
                    image: images.get(&name).cloned(),
                    node: name,
                }
            })
            .collect();
        agents.sort_by(|a, b| a.node.cmp(&b.node));
        v.agents = agents;
    }
    match a.output {
        OutputFormat::Table | OutputFormat::Wide => print!("{}", render_text(&v)),
        OutputFormat::Yaml => print!("{}", output::yaml(&v)?),
        OutputFormat::Json => print!("{}", output::json(&v)?),
    }
    Ok(exit::OK)
}

pub fn render_text(v: &Versions) -> String {
    let c = &v.client;
    let mut out = format!(
        "Client version:  {}\nClient build:    commit {}, {}, {}\n",
        c.version, c.commit, c.platform, c.profile
    );
    if let Some(s) = &v.server {
        out.push_str(&format!("API server:      {} at {}\n", s.kubernetes, s.url));
    }
    if v.server.is_some() {
        if v.agents.is_empty() {
            out.push_str("Agents:          no nodes\n");
        } else {
            out.push_str("Agents:\n");
            let rows: Vec<Vec<String>> = v
                .agents
                .iter()
                .map(|a| {
                    vec![
                        a.node.clone(),
                        a.version.clone(),
                        a.image.clone().unwrap_or_else(|| "<none>".into()),
                    ]
                })
                .collect();
            let table = output::plain_table(
                &["NODE".into(), "AGENT VERSION".into(), "IMAGE".into()],
                &rows,
            );
            for l in table.lines() {
                out.push_str(&format!("  {l}\n"));
            }
        }
    }
    out
}
