//! `node status`, `bgp peers`, `bgp routes`: what a node's agent says about
//! its BGP sessions and routes, read from its health listener (`/bgp/peers`,
//! `/bgp/routes`, `/bgp/routes/{received,advertised}/<peer>`), as calicoctl
//! reads BIRD's. `node status --all` asks every node's agent, at the address
//! its Node records (`margay.dev/ipv4Address`, else its InternalIP).

use crate::cli::{
    BgpCommand, BgpPeersArgs, BgpRoutesArgs, GlobalArgs, NodeStatusArgs, OutputFormat,
};
use crate::output::{Align, boxed_table, plain_table};
use anyhow::{Context, anyhow, bail};
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// `http://HOST:PORT` split; only plain HTTP (the agent's health listener).
pub fn parse_agent_url(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("--agent {url:?}: must start with http://"))?;
    let hostport = rest.split('/').next().unwrap_or_default();
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            p.parse::<u16>()
                .map_err(|_| anyhow!("--agent {url:?}: bad port {p:?}"))?,
        ),
        _ => (hostport.to_string(), 80),
    };
    if host.is_empty() {
        bail!("--agent {url:?}: no host");
    }
    Ok((host, port))
}

/// One GET over HTTP/1.0 (the server closes after answering).
pub fn http_get(host: &str, port: u16, path: &str) -> anyhow::Result<String> {
    let addr: SocketAddr = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .next()
        .ok_or_else(|| anyhow!("{host}: no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to the agent at {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading the agent's answer from {addr}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("{addr}{path}: not an HTTP answer"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!("{addr}{path}: HTTP {status}: {}", body.trim());
    }
    Ok(body.to_string())
}

fn get_json(agent: &str, path: &str) -> anyhow::Result<Value> {
    let (host, port) = parse_agent_url(agent)?;
    let body = http_get(&host, port, path)?;
    serde_json::from_str(&body).with_context(|| format!("{agent}{path}: not JSON"))
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_value(v: &Value, o: OutputFormat) -> anyhow::Result<()> {
    match o {
        OutputFormat::Json => print!("{}", crate::output::json(v)?),
        OutputFormat::Yaml => print!("{}", crate::output::yaml(v)?),
        _ => unreachable!("tables are printed by the caller"),
    }
    Ok(())
}

/// The calicoctl-style status of one agent's `/bgp/peers` answer.
pub fn render_node_status(v: &Value) -> String {
    let mut out = String::new();
    if v["running"] == Value::Bool(true) {
        out.push_str(&format!(
            "Margay agent on {} is running (router id {}, AS {}{}).\n\n",
            s(&v["node"]),
            s(&v["router_id"]),
            s(&v["asn"]),
            match &v["route_reflector_cluster_id"] {
                Value::String(c) => format!(", route reflector cluster {c}"),
                _ => String::new(),
            }
        ));
    } else {
        out.push_str(&format!(
            "Margay agent on {}: BGP is not running yet.\n\n",
            s(&v["node"])
        ));
    }
    for (title, v4) in [("IPv4 BGP status", true), ("IPv6 BGP status", false)] {
        let rows: Vec<Vec<String>> = v["peers"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(|p| {
                s(&p["peer_address"])
                    .parse::<IpAddr>()
                    .is_ok_and(|a| a.is_ipv4() == v4)
            })
            .map(|p| {
                vec![
                    s(&p["peer_address"]),
                    s(&p["type"]),
                    s(&p["state"]),
                    s(&p["since"]),
                    s(&p["info"]),
                ]
            })
            .collect();
        out.push_str(title);
        out.push('\n');
        if rows.is_empty() {
            out.push_str("No IPv");
            out.push_str(if v4 { "4" } else { "6" });
            out.push_str(" peers found.\n\n");
            continue;
        }
        out.push_str(&boxed_table(
            &["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"],
            &[Align::Left; 5],
            &rows,
        ));
        out.push('\n');
    }
    out
}

/// The agent URLs of every node (its Node's address, the port of `agent`).
async fn all_agents(g: &GlobalArgs, agent: &str) -> anyhow::Result<Vec<(String, String)>> {
    let (_, port) = parse_agent_url(agent)?;
    let c = crate::client::connect(g).await?;
    let nodes = Api::<Node>::all(c.client.clone())
        .list(&Default::default())
        .await
        .map_err(|e| crate::client::api_error(&c.url, "listing nodes", e))?;
    let mut out = Vec::new();
    for n in nodes.items {
        let name = n.metadata.name.clone().unwrap_or_default();
        let ann = n
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("margay.dev/ipv4Address"))
            .and_then(|a| a.split('/').next())
            .map(str::to_string);
        let internal = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .map(|a| a.address.clone());
        match ann.or(internal) {
            Some(ip) => {
                let host = if ip.contains(':') {
                    format!("[{ip}]")
                } else {
                    ip
                };
                out.push((name, format!("http://{host}:{port}")));
            }
            None => eprintln!("node {name}: no address recorded; skipped"),
        }
    }
    out.sort();
    Ok(out)
}

pub async fn node_status(g: &GlobalArgs, a: &NodeStatusArgs) -> anyhow::Result<u8> {
    let targets = if a.all {
        all_agents(g, &a.agent).await?
    } else {
        vec![(String::new(), a.agent.clone())]
    };
    let mut answers = Vec::new();
    let mut failed = false;
    for (node, url) in &targets {
        match get_json(url, "/bgp/peers") {
            Ok(v) => answers.push(v),
            Err(e) => {
                failed = true;
                let who = if node.is_empty() {
                    url.clone()
                } else {
                    format!("{node} ({url})")
                };
                eprintln!("{who}: {e:#}");
            }
        }
    }
    match a.output {
        OutputFormat::Table | OutputFormat::Wide => {
            for v in &answers {
                print!("{}", render_node_status(v));
            }
        }
        o if a.all => print_value(&Value::Array(answers), o)?,
        o => {
            if let Some(v) = answers.first() {
                print_value(v, o)?;
            }
        }
    }
    Ok(if failed {
        crate::exit::ERROR
    } else {
        crate::exit::OK
    })
}

pub async fn run(_g: &GlobalArgs, c: BgpCommand) -> anyhow::Result<u8> {
    match c {
        BgpCommand::Peers(a) => peers(&a),
        BgpCommand::Routes(a) => routes(&a),
    }
}

fn peers(a: &BgpPeersArgs) -> anyhow::Result<u8> {
    let v = get_json(&a.agent, "/bgp/peers")?;
    let empty = Vec::new();
    let list = v["peers"].as_array().unwrap_or(&empty);
    match a.output {
        OutputFormat::Table | OutputFormat::Wide => {
            let mut header: Vec<String> = ["PEER", "TYPE", "AS", "STATE", "SINCE", "INFO"]
                .map(String::from)
                .to_vec();
            let wide = a.output == OutputFormat::Wide;
            if wide {
                header.extend(["RECEIVED", "ADVERTISED"].map(String::from));
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|p| {
                    let mut r = vec![
                        s(&p["peer_address"]),
                        s(&p["type"]),
                        s(&p["asn"]),
                        s(&p["state"]),
                        s(&p["since"]),
                        s(&p["info"]),
                    ];
                    if wide {
                        r.push(s(&p["prefixes_received"]));
                        r.push(s(&p["prefixes_advertised"]));
                    }
                    r
                })
                .collect();
            print!("{}", plain_table(&header, &rows));
        }
        o => print_value(&Value::Array(list.clone()), o)?,
    }
    Ok(crate::exit::OK)
}

/// The agent path for `bgp routes` flags.
pub fn routes_path(a: &BgpRoutesArgs) -> anyhow::Result<String> {
    match (&a.peer, a.advertised, a.received) {
        (None, false, false) => Ok("/bgp/routes".into()),
        (None, _, _) => Err(crate::exit::usage(
            "--advertised and --received need --peer IP",
        )),
        (Some(p), true, false) => Ok(format!("/bgp/routes/advertised/{p}")),
        (Some(p), _, _) => Ok(format!("/bgp/routes/received/{p}")),
    }
}

fn routes(a: &BgpRoutesArgs) -> anyhow::Result<u8> {
    let path = routes_path(a)?;
    let v = get_json(&a.agent, &path)?;
    let empty = Vec::new();
    let list = v.as_array().unwrap_or(&empty);
    match a.output {
        OutputFormat::Table | OutputFormat::Wide => {
            let wide = a.output == OutputFormat::Wide;
            let mut header: Vec<String> = ["PREFIX", "NEXT HOP", "FROM", "AS PATH", "BEST"]
                .map(String::from)
                .to_vec();
            if wide {
                header.extend(
                    ["LOCAL PREF", "ORIGINATOR", "CLUSTER LIST", "STALE"].map(String::from),
                );
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|r| {
                    let from = match &r["peer"] {
                        Value::Null => "local".to_string(),
                        p => s(p),
                    };
                    let mut row = vec![
                        s(&r["prefix"]),
                        match &r["next_hop"] {
                            Value::Null => "self".into(),
                            n => s(n),
                        },
                        from,
                        match s(&r["as_path"]).as_str() {
                            "" => "(empty)".into(),
                            p => p.to_string(),
                        },
                        if r["best"] == Value::Bool(true) {
                            "*".into()
                        } else {
                            String::new()
                        },
                    ];
                    if wide {
                        row.push(s(&r["local_pref"]));
                        row.push(s(&r["originator_id"]));
                        row.push(
                            r["cluster_list"]
                                .as_array()
                                .map(|c| c.iter().map(s).collect::<Vec<_>>().join(" "))
                                .unwrap_or_default(),
                        );
                        row.push(s(&r["stale"]));
                    }
                    row
                })
                .collect();
            print!("{}", plain_table(&header, &rows));
        }
        o => print_value(&v, o)?,
    }
    Ok(crate::exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn agent_urls_are_parsed_or_refused_clearly() {
        assert_eq!(
            parse_agent_url("http://127.0.0.1:9099").expect("ok"),
            ("127.0.0.1".to_string(), 9099)
        );
        assert_eq!(
            parse_agent_url("http://[fd00::1]:9099/").expect("ok"),
            ("fd00::1".to_string(), 9099)
        );
        assert!(parse_agent_url("https://x:1").is_err());
        assert!(parse_agent_url("http://x:notaport").is_err());
    }

    #[test]
    fn node_status_prints_a_box_per_family() {
        let v = json!({"node": "node1", "router_id": "10.0.0.1", "asn": 64512, "running": true,
            "route_reflector_cluster_id": null,
            "peers": [{"peer_address": "10.0.0.2", "type": "node-to-node mesh", "asn": 64512,
                "state": "Established", "since": "2026-11-22T08:00:00Z", "info": "1 received, 1 advertised"}]});
        let out = render_node_status(&v);
        assert!(out.contains("Margay agent on node1 is running"), "{out}");
        assert!(
            out.contains("| 10.0.0.2     | node-to-node mesh | Established |"),
            "{out}"
        );
        assert!(out.contains("No IPv6 peers found."), "{out}");
    }
}
