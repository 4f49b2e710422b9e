//! `policy explain FROM TO --port P [--protocol tcp]`: the verdict on a new
//! connection between two pods, and the policy rule that decides it.
//!
//! A thin layer over `margay_policy::ClusterExplainer`: it reads the
//! objects policy depends on, compiles them exactly as an agent does, and
//! evaluates the source's egress and the destination's ingress on the same
//! IR the agents render into nftables.

use crate::cli::{ExplainProtocol, GlobalArgs, OutputFormat, PolicyCommand, PolicyExplainArgs};
use crate::client::{ApiClient, api_error, connect};
use crate::{exit, output};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams};
use margay_api::GlobalNetworkPolicy;
use margay_api::net::IpFamily;
use margay_policy::eval::{DecidedBy, Verdict};
use margay_policy::{ClusterExplainer, ClusterSnapshot, PairExplanation, PodKey};
use serde::Serialize;

pub async fn run(g: &GlobalArgs, cmd: PolicyCommand) -> anyhow::Result<u8> {
    match cmd {
        PolicyCommand::Explain(a) => explain(g, &a).await,
    }
}

fn pod_ref(what: &str, s: &str) -> anyhow::Result<PodKey> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(PodKey::new(ns, name))
        }
        _ => Err(exit::usage(format!(
            "{what} {s:?}: expected NAMESPACE/NAME of a pod"
        ))),
    }
}

async fn explain(g: &GlobalArgs, a: &PolicyExplainArgs) -> anyhow::Result<u8> {
    let from = pod_ref("FROM", &a.from)?;
    let to = pod_ref("TO", &a.to)?;
    if a.port == 0 || a.port > 65535 {
        return Err(exit::usage(format!(
            "--port {}: must be 1 to 65535",
            a.port
        )));
    }
    let c = connect(g).await?;
    let snapshot = snapshot(&c).await?;
    let explainer = ClusterExplainer::new(&snapshot);
    let protocol = match a.protocol {
        ExplainProtocol::Tcp => 6,
        ExplainProtocol::Udp => 17,
        ExplainProtocol::Sctp => 132,
    };
    let family = if a.ipv6 { IpFamily::V6 } else { IpFamily::V4 };
    let e = explainer.explain(&from, &to, protocol, a.port, family)?;
    let refused: Vec<Refused> = explainer
        .refused()
        .iter()
        .map(|(p, err)| Refused {
            policy: p.to_string(),
            error: err.to_string(),
        })
        .collect();
    match a.output {
        OutputFormat::Table | OutputFormat::Wide => print!("{}", text(&e, &refused)),
        OutputFormat::Json => println!("{}", output::json(&Report::of(&e, refused))?),
        OutputFormat::Yaml => print!("{}", output::yaml(&Report::of(&e, refused))?),
    }
    Ok(exit::OK)
}

async fn snapshot(c: &ApiClient) -> anyhow::Result<ClusterSnapshot> {
    let lp = ListParams::default();
    let err = |what: &str| {
        let what = what.to_string();
        move |e| api_error(&c.url, &format!("listing {what}"), e)
    };
    Ok(ClusterSnapshot {
        namespaces: Api::<Namespace>::all(c.client.clone())
            .list(&lp)
            .await
            .map_err(err("Namespaces"))?
            .items,
        pods: Api::<Pod>::all(c.client.clone())
            .list(&lp)
            .await
            .map_err(err("Pods"))?
            .items,
        network_policies: Api::<NetworkPolicy>::all(c.client.clone())
            .list(&lp)
            .await
            .map_err(err("NetworkPolicies"))?
            .items,
        global_policies: Api::<GlobalNetworkPolicy>::all(c.client.clone())
            .list(&lp)
            .await
            .map_err(err("GlobalNetworkPolicies"))?
            .items,
    })
}

/// The text answer: the explanation, then warnings about refused policies.
pub fn text(e: &PairExplanation, refused: &[Refused]) -> String {
    let mut out = format!("{e}\n");
    for r in refused {
        out.push_str(&format!(
            "warning: {} is refused by the agents ({}); they keep its previous version, which this explanation cannot see\n",
            r.policy, r.error
        ));
    }
    out
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Refused {
    pub policy: String,
    pub error: String,
}

/// The answer as data (`-o json|yaml`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub from: String,
    pub to: String,
    pub from_ip: String,
    pub to_ip: String,
    pub protocol: String,
    pub port: u16,
    pub allowed: bool,
    pub egress: DirectionReport,
    pub ingress: DirectionReport,
    pub refused_policies: Vec<Refused>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectionReport {
    /// The pod whose program decides this direction.
    pub pod: String,
    pub allowed: bool,
    /// `rule`, `noPolicy`, `endOfPolicies` or `passedToKubernetes`.
    pub decided_by: &'static str,
    /// The deciding policy (for `rule`), or the one that passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// `ingress[i]` / `egress[i]` in that policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    pub explanation: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logged_by: Vec<String>,
}

impl DirectionReport {
    fn of(pod: &PodKey, v: &Verdict) -> DirectionReport {
        let (decided_by, origin, action) = match &v.decided_by {
            DecidedBy::Rule { origin, action } => ("rule", Some(origin), Some(action.to_string())),
            DecidedBy::NoPolicy => ("noPolicy", None, None),
            DecidedBy::EndOfPolicies => ("endOfPolicies", None, None),
            DecidedBy::PassedToKubernetes { pass } => ("passedToKubernetes", Some(pass), None),
        };
        DirectionReport {
            pod: pod.to_string(),
            allowed: v.allowed,
            decided_by,
            policy: origin.map(|o| o.policy.to_string()),
            rule: origin.map(|o| format!("{}[{}]", o.direction, o.index)),
            action,
            explanation: v.decided_by.to_string(),
            logged_by: v.logged.iter().map(ToString::to_string).collect(),
        }
    }
}

impl Report {
    pub fn of(e: &PairExplanation, refused: Vec<Refused>) -> Report {
        let p = &e.packet;
        Report {
            from: e.from.to_string(),
            to: e.to.to_string(),
            from_ip: p.src.to_string(),
            to_ip: p.dst.to_string(),
            protocol: margay_api::resources::policy::Protocol::from_number(p.protocol).to_string(),
            port: p.dst_port.unwrap_or(0),
            allowed: e.allowed(),
            egress: DirectionReport::of(&e.from, &e.egress),
            ingress: DirectionReport::of(&e.to, &e.ingress),
            refused_policies: refused,
        }
    }
}
