//! `diags`: collects what a support engineer needs from a node into one
//! `.tar.gz`. Every item is best effort: what cannot be collected (no `nft`,
//! agent down, API unreachable) is written to `index.txt` with the reason and
//! the archive is written anyway. Runs on a node (host network, so the
//! agent's ports are on 127.0.0.1) or in the agent's container.

use crate::cli::{DiagsArgs, GlobalArgs};
use crate::client;
use crate::commands::{ipam, version};
use crate::exit;
use crate::kinds::KINDS;
use crate::output;
use anyhow::Context;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DynamicObject, ListParams};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bound on each command and HTTP request, so a wedged tool cannot hang diags.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// Commands run on the node, and the file each goes to.
const NODE_COMMANDS: &[(&str, &[&str])] = &[
    (
        "node/ip-route.txt",
        &["ip", "route", "show", "table", "all"],
    ),
    (
        "node/ip-6-route.txt",
        &["ip", "-6", "route", "show", "table", "all"],
    ),
    ("node/ip-rule.txt", &["ip", "rule"]),
    ("node/ip-link.txt", &["ip", "-d", "link"]),
    ("node/ip-addr.txt", &["ip", "addr"]),
    ("node/ip-neigh.txt", &["ip", "neigh"]),
    (
        "node/nft-table-margay.txt",
        &["nft", "list", "table", "inet", "margay"],
    ),
    (
        "node/sysctl-net.txt",
        &[
            "sysctl",
            "net.ipv4.ip_forward",
            "net.ipv6.conf.all.forwarding",
        ],
    ),
];
/// Largest log file copied whole; longer logs keep their end.
const MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;

/// The record of what was collected.
#[derive(Default)]
struct Index {
    lines: Vec<String>,
}

impl Index {
    fn ok(&mut self, file: &str) {
        self.lines.push(format!("ok      {file}"));
    }
    fn failed(&mut self, file: &str, why: &str) {
        // One line per item, whatever the tool printed.
        let why: Vec<&str> = why
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        self.lines
            .push(format!("failed  {file}: {}", why.join(" / ")));
    }
}

pub async fn run(g: &GlobalArgs, a: &DiagsArgs) -> anyhow::Result<u8> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    let stamp = jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S").to_string();
    let base = format!("margay-diags-{host}-{stamp}");
    let out_path = a
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{base}.tar.gz")));
    let staging = tempfile::Builder::new()
        .prefix("margay-diags-")
        .tempdir()
        .context("creating a staging directory")?;
    let root = staging.path().join(&base);
    let mut index = Index::default();
    write(
        &root,
        "version.txt",
        &version::render_text(&version::Versions {
            client: version::client_version(),
            server: None,
            agents: Vec::new(),
        }),
    )?;
    index.ok("version.txt");

    for (file, argv) in NODE_COMMANDS {
        match run_command(argv).await {
            Ok(text) => {
                write(&root, file, &text)?;
                index.ok(file);
            }
            Err(e) => index.failed(file, &format!("`{}`: {e}", argv.join(" "))),
        }
    }

    let health = a.health_url.trim_end_matches('/');
    for (file, url) in [
        ("agent/metrics.txt", a.metrics_url.clone()),
        ("agent/readyz.txt", format!("{health}/readyz")),
        ("agent/livez.txt", format!("{health}/livez")),
    ] {
        match http_get(&url).await {
            Ok((status, body)) => {
                write(&root, file, &format!("GET {url}: {status}\n\n{body}"))?;
                index.ok(file);
            }
            Err(e) => index.failed(file, &format!("GET {url}: {e}")),
        }
    }

    for log in &a.log_file {
        copy_logs(&root, log, &mut index);
    }

    if a.no_cluster {
        index.lines.push("skipped cluster/: --no-cluster".into());
    } else {
        collect_cluster(g, &root, &mut index).await?;
    }

    let failed = index
        .lines
        .iter()
        .filter(|l| l.starts_with("failed"))
        .count();
    write(&root, "index.txt", &(index.lines.join("\n") + "\n"))?;
    archive(staging.path(), &base, &out_path).await?;
    println!(
        "Wrote {} ({} items, {failed} could not be collected: see index.txt in it)",
        out_path.display(),
        index.lines.len()
    );
    Ok(exit::OK)
}

fn write(root: &Path, file: &str, text: &str) -> anyhow::Result<()> {
    let path = root.join(file);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

async fn run_command(argv: &[&str]) -> Result<String, String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let child = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(STEP_TIMEOUT, child).await {
        Err(_) => Err(format!("no answer within {STEP_TIMEOUT:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(out)) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Ok(Ok(out)) => Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// A plain-HTTP GET (the agent's endpoints are plain HTTP on the node).
async fn http_get(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| e.to_string())?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.lines().next().unwrap_or("").to_string();
        Ok((status, body.to_string()))
    };
    tokio::time::timeout(STEP_TIMEOUT, fetch)
        .await
        .map_err(|_| format!("no answer within {STEP_TIMEOUT:?}"))?
}

fn copy_logs(root: &Path, path: &Path, index: &mut Index) {
    let files: Vec<PathBuf> = if path.is_dir() {
        match std::fs::read_dir(path) {
            Ok(rd) => {
                let mut v: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file())
                    .collect();
                v.sort();
                v
            }
            Err(e) => {
                index.failed(&format!("logs/ from {}", path.display()), &e.to_string());
                return;
            }
        }
    } else {
        vec![path.to_path_buf()]
    };
    for f in files {
        let name = format!(
            "logs/{}",
            f.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        match tail_file(&f, MAX_LOG_BYTES) {
            Ok(bytes) => {
                let dest = root.join(&name);
                let result = dest
                    .parent()
                    .map(std::fs::create_dir_all)
                    .transpose()
                    .and_then(|_| std::fs::write(&dest, bytes));
                match result {
                    Ok(()) => index.ok(&name),
                    Err(e) => index.failed(&name, &e.to_string()),
                }
            }
            Err(e) => index.failed(&name, &format!("{}: {e}", f.display())),
        }
    }
}

fn tail_file(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if len > max {
        f.seek(SeekFrom::Start(len - max))?;
    }
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(buf)
}

async fn collect_cluster(g: &GlobalArgs, root: &Path, index: &mut Index) -> anyhow::Result<()> {
    let c = match client::connect(g).await {
        Ok(c) => c,
        Err(e) => {
            index.failed("cluster/", &format!("{e:#}"));
            return Ok(());
        }
    };
    match c.client.apiserver_version().await {
        Ok(v) => {
            write(
                root,
                "cluster/apiserver-version.txt",
                &format!("{} at {}\n", v.git_version, c.url),
            )?;
            index.ok("cluster/apiserver-version.txt");
        }
        Err(e) => {
            // Nothing else will work either: say why once.
            index.failed(
                "cluster/",
                &format!("API server at {} unreachable: {e}", c.url),
            );
            return Ok(());
        }
    }
    for k in KINDS {
        let file = format!("cluster/{}.yaml", k.plural);
        let api: Api<DynamicObject> = Api::all_with(c.client.clone(), &k.api_resource());
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                let items = list
                    .items
                    .iter()
                    .map(|o| serde_json::to_value(o).unwrap_or_default())
                    .collect();
                write(root, &file, &output::yaml(&output::list(items))?)?;
                index.ok(&file);
            }
            Err(e) => index.failed(&file, &e.to_string()),
        }
    }
    let nodes: Api<Node> = Api::all(c.client.clone());
    match nodes.list(&ListParams::default()).await {
        Ok(list) => {
            let items = list
                .items
                .iter()
                .map(|o| serde_json::to_value(o).unwrap_or_default())
                .collect();
            write(
                root,
                "cluster/nodes.yaml",
                &output::yaml(&output::list(items))?,
            )?;
            index.ok("cluster/nodes.yaml");
        }
        Err(e) => index.failed("cluster/nodes.yaml", &e.to_string()),
    }
    match ipam::check::build_report(&c, true).await {
        Ok(r) => {
            write(
                root,
                "cluster/ipam-check.txt",
                &ipam::check::render_text(&r),
            )?;
            write(root, "cluster/ipam-check.json", &output::json(&r)?)?;
            index.ok("cluster/ipam-check.txt");
            index.ok("cluster/ipam-check.json");
        }
        Err(e) => index.failed("cluster/ipam-check.json", &format!("{e:#}")),
    }
    Ok(())
}

/// `tar -czf OUT -C staging base`: tar and gzip are on every node and in
/// the agent image.
async fn archive(staging: &Path, base: &str, out: &Path) -> anyhow::Result<()> {
    let out_abs = if out.is_absolute() {
        out.to_path_buf()
    } else {
        std::env::current_dir()?.join(out)
    };
    let status = tokio::process::Command::new("tar")
        .arg("-czf")
        .arg(&out_abs)
        .arg("-C")
        .arg(staging)
        .arg(base)
        .status()
        .await
        .context("running tar (needed to write the archive)")?;
    if !status.success() {
        anyhow::bail!("tar failed ({status}) writing {}", out_abs.display());
    }
    Ok(())
}
