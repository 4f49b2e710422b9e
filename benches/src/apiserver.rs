//! `apiserver`: the lab's Kubernetes API emulator against etcd (the store a real
//! kube-apiserver sits on), both over plain HTTP on loopback, driven by the
//! same HTTP client with the same load shape:
//!
//! - creates/s: 8 concurrent clients, each creating objects one after the other
//!   (emulator: ConfigMaps; etcd: `POST /v3/kv/put` of new keys with the same
//!   JSON as value);
//! - watch events/s delivered to 100 watchers: 100 watch streams anchored at the
//!   current version, then 4 writers create objects; the figure is
//!   watchers × objects ÷ time until every watcher has seen every event
//!   (emulator: `GET ...?watch=1`; etcd: `POST /v3/watch` on a key prefix).
//!
//! etcd 3.4 runs as a single member with its data directory on tmpfs (it has no
//! switch to skip fsync); the emulator runs without a state file. Both are
//! separate processes; rounds alternate between them so machine load drifts
//! hit both alike.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::figure::{Better, Figure, Measure, median};
use crate::{Benchmark, Context};

pub fn benchmark() -> Benchmark {
    Benchmark {
        name: "apiserver",
        about: "API emulator creates/s and watch events/s to 100 watchers, against etcd's JSON gateway on loopback",
        run,
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub rounds: usize,
    pub create_clients: usize,
    pub creates_per_client: usize,
    pub watchers: usize,
    pub watch_writers: usize,
    pub watch_objects: usize,
}

impl Load {
    pub fn for_context(quick: bool) -> Load {
        if quick {
            Load {
                rounds: 1,
                create_clients: 8,
                creates_per_client: 50,
                watchers: 100,
                watch_writers: 4,
                watch_objects: 200,
            }
        } else {
            Load {
                rounds: 3,
                create_clients: 8,
                creates_per_client: 500,
                watchers: 100,
                watch_writers: 4,
                watch_objects: 2000,
            }
        }
    }
}

/// The measured rates of one system.
#[derive(Debug, Clone, Default)]
pub struct Rates {
    pub creates_per_sec: Vec<f64>,
    pub watch_events_per_sec: Vec<f64>,
}

fn run(ctx: &Context) -> anyhow::Result<Vec<Figure>> {
    let load = Load::for_context(ctx.quick);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (mut emu, mut etcd) = rt.block_on(measure(&ctx.work_dir, load))?;
    Ok(vec![
        Figure::new(
            format!("creates/s ({} concurrent clients)", load.create_clients),
            Measure::new(
                "margay-lab apiserver",
                median(&mut emu.creates_per_sec),
                "creates/s",
            ),
            Measure::new(
                "etcd 3.4 v3 JSON gateway",
                median(&mut etcd.creates_per_sec),
                "creates/s",
            ),
            Better::Higher,
        ),
        Figure::new(
            format!("watch events/s delivered to {} watchers", load.watchers),
            Measure::new(
                "margay-lab apiserver",
                median(&mut emu.watch_events_per_sec),
                "events/s",
            ),
            Measure::new(
                "etcd 3.4 v3 JSON gateway",
                median(&mut etcd.watch_events_per_sec),
                "events/s",
            ),
            Better::Higher,
        ),
    ])
}

/// Starts both servers and measures them, alternating round by round.
pub async fn measure(work_dir: &Path, load: Load) -> anyhow::Result<(Rates, Rates)> {
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http();
    let emulator = Emulator::start(work_dir).await?;
    let etcd = Etcd::start(&client).await?;
    let (mut emu, mut etc) = (Rates::default(), Rates::default());
    for round in 0..load.rounds {
        emu.creates_per_sec
            .push(creates(&client, &Target::Emulator(&emulator.base), round, load).await?);
        etc.creates_per_sec
            .push(creates(&client, &Target::Etcd(&etcd.base), round, load).await?);
        emu.watch_events_per_sec
            .push(watch_fanout(&client, &Target::Emulator(&emulator.base), round, load).await?);
        etc.watch_events_per_sec
            .push(watch_fanout(&client, &Target::Etcd(&etcd.base), round, load).await?);
    }
    Ok((emu, etc))
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Emulator {
    base: String,
    _proc: Proc,
}

impl Emulator {
    async fn start(work_dir: &Path) -> anyhow::Result<Emulator> {
        let exe = margay_lab::binaries::require("margay-lab")?;
        let ready = work_dir.join("apiserver-bench.ready");
        let _ = std::fs::remove_file(&ready);
        let child = Command::new(exe)
            .args(["apiserver", "--listen", "127.0.0.1:0", "--ready-file"])
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting margay-lab apiserver")?;
        let proc = Proc(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(bytes) = std::fs::read(&ready) {
                let v: Value =
                    serde_json::from_slice(&bytes).context("parsing the emulator's ready file")?;
                let addr = v["listen"][0]
                    .as_str()
                    .context("no listen address in the ready file")?;
                return Ok(Emulator {
                    base: format!("http://{addr}"),
                    _proc: proc,
                });
            }
            if Instant::now() > deadline {
                bail!("margay-lab apiserver did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

struct Etcd {
    base: String,
    _proc: Proc,
    _data: tempfile::TempDir,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Etcd {
    async fn start(client: &HttpClient) -> anyhow::Result<Etcd> {
        // tmpfs, so the comparator's fsyncs cost what the emulator's absent ones do.
        let shm = PathBuf::from("/dev/shm");
        let data = if shm.is_dir() {
            tempfile::tempdir_in(shm)?
        } else {
            tempfile::tempdir()?
        };
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let child = Command::new("etcd")
            .args(["--name", "bench", "--data-dir"])
            .arg(data.path().join("etcd"))
            .args([
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args([
                "--initial-cluster",
                &format!("bench={peer_url}"),
                "--log-level",
                "error",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting etcd (Debian package etcd-server; run scripts/install-deps.sh)")?;
        let etcd = Etcd {
            base: client_url,
            _proc: Proc(child),
            _data: data,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while revision(client, &etcd.base).await.is_err() {
            if Instant::now() > deadline {
                bail!("etcd did not become ready on {}", etcd.base);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(etcd)
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> anyhow::Result<(u16, Bytes)> {
    let resp = client.request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

fn post_json(url: String, body: &Value) -> anyhow::Result<Request<Full<Bytes>>> {
    Ok(Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?)
}

async fn revision(client: &HttpClient, base: &str) -> anyhow::Result<u64> {
    let (status, body) = send(
        client,
        post_json(format!("{base}/v3/kv/range"), &json!({"key": b64("/")}))?,
    )
    .await?;
    if status != 200 {
        bail!("etcd range: HTTP {status}");
    }
    let v: Value = serde_json::from_slice(&body)?;
    v.pointer("/header/revision")
        .and_then(|r| r.as_str().and_then(|s| s.parse().ok()).or(r.as_u64()))
        .context("etcd range answer without header.revision")
}

/// The system under load and how it is addressed.
enum Target<'a> {
    Emulator(&'a str),
    Etcd(&'a str),
}

fn object_json(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"bench": "apiserver"}},
        "data": {"payload": "x".repeat(128)}
    })
}

impl Target<'_> {
    /// Prepares a fresh key space (`scope`) and returns its watch anchor.
    async fn prepare(&self, client: &HttpClient, scope: &str) -> anyhow::Result<u64> {
        match self {
            Target::Emulator(base) => {
                let ns =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": scope}});
                let (status, body) =
                    send(client, post_json(format!("{base}/api/v1/namespaces"), &ns)?).await?;
                if status != 201 {
                    bail!(
                        "creating namespace {scope}: HTTP {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                let v: Value = serde_json::from_slice(&body)?;
                Ok(v.pointer("/metadata/resourceVersion")
                    .and_then(|r| r.as_str())
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0))
            }
            Target::Etcd(base) => revision(client, base).await,
        }
    }

    fn create(&self, scope: &str, name: &str) -> anyhow::Result<Request<Full<Bytes>>> {
        match self {
            Target::Emulator(base) => post_json(
                format!("{base}/api/v1/namespaces/{scope}/configmaps"),
                &object_json(name),
            ),
            Target::Etcd(base) => {
                let value = object_json(name).to_string();
                post_json(
                    format!("{base}/v3/kv/put"),
                    &json!({"key": b64(&format!("/{scope}/{name}")), "value": b64(&value)}),
                )
            }
        }
    }

    fn created(&self, status: u16) -> bool {
        match self {
            Target::Emulator(_) => status == 201,
            Target::Etcd(_) => status == 200,
        }
    }

    fn watch(&self, scope: &str, anchor: u64) -> anyhow::Result<Request<Full<Bytes>>> {
        match self {
            Target::Emulator(base) => Ok(Request::get(format!(
                "{base}/api/v1/namespaces/{scope}/configmaps?watch=1&resourceVersion={anchor}&timeoutSeconds=600"
            ))
            .body(Full::new(Bytes::new()))?),
            Target::Etcd(base) => {
                // Prefix watch: range_end is the prefix with its last byte + 1.
                let (prefix, end) = (format!("/{scope}/"), format!("/{scope}0"));
                post_json(
                    format!("{base}/v3/watch"),
                    &json!({"create_request": {"key": b64(&prefix), "range_end": b64(&end), "start_revision": (anchor + 1).to_string()}}),
                )
            }
        }
    }

    /// Events carried by one line of a watch stream.
    fn events_in(&self, line: &[u8]) -> anyhow::Result<usize> {
        let v: Value = serde_json::from_slice(line).context("watch stream line is not JSON")?;
        Ok(match self {
            Target::Emulator(_) => match v["type"].as_str() {
                Some("ADDED" | "MODIFIED" | "DELETED") => 1,
                Some("ERROR") => bail!("watch error: {}", v["object"]),
                _ => 0,
            },
            Target::Etcd(_) => v
                .pointer("/result/events")
                .and_then(|e| e.as_array())
                .map(|e| e.len())
                .unwrap_or(0),
        })
    }
}

/// Creates per second with `create_clients` clients in parallel.
async fn creates(
    client: &HttpClient,
    target: &Target<'_>,
    round: usize,
    load: Load,
) -> anyhow::Result<f64> {
    let scope = format!("bench-create-{round}");
    target.prepare(client, &scope).await?;
    let start = Instant::now();
    let results = futures::future::join_all((0..load.create_clients).map(|c| {
        let scope = scope.clone();
        async move {
            for i in 0..load.creates_per_client {
                let (status, body) =
                    send(client, target.create(&scope, &format!("obj-{c}-{i}"))?).await?;
                if !target.created(status) {
                    bail!(
                        "create answered HTTP {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
            }
            Ok(())
        }
    }))
    .await;
    let elapsed = start.elapsed().as_secs_f64();
    for r in results {
        r?;
    }
    Ok((load.create_clients * load.creates_per_client) as f64 / elapsed)
}

/// Events per second delivered to `watchers` watch streams.
async fn watch_fanout(
    client: &HttpClient,
    target: &Target<'_>,
    round: usize,
    load: Load,
) -> anyhow::Result<f64> {
    let scope = format!("bench-watch-{round}");
    let anchor = target.prepare(client, &scope).await?;
    let mut bodies = Vec::new();
    for _ in 0..load.watchers {
        let resp = client.request(target.watch(&scope, anchor)?).await?;
        if resp.status() != 200 {
            bail!("watch answered HTTP {}", resp.status());
        }
        bodies.push(resp.into_body());
    }
    let start = Arc::new(std::sync::OnceLock::<Instant>::new());
    let expected = load.watch_objects;
    let readers = bodies.into_iter().map(|mut body| async move {
        let mut buf: Vec<u8> = Vec::new();
        let mut seen = 0usize;
        while seen < expected {
            let frame = tokio::time::timeout(Duration::from_secs(60), body.frame())
                .await
                .context("a watcher saw no event for 60 s")?
                .context("the watch stream ended early")??;
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    if line.len() > 1 {
                        seen += target.events_in(&line[..line.len() - 1])?;
                    }
                }
            }
        }
        anyhow::Ok(Instant::now())
    });
    let writers = async {
        let _ = start.set(Instant::now());
        let per_writer = load.watch_objects / load.watch_writers;
        let results = futures::future::join_all((0..load.watch_writers).map(|w| {
            let scope = scope.clone();
            async move {
                let count = if w + 1 == load.watch_writers {
                    load.watch_objects - per_writer * w
                } else {
                    per_writer
                };
                for i in 0..count {
                    let (status, _) =
                        send(client, target.create(&scope, &format!("w{w}-{i}"))?).await?;
                    if !target.created(status) {
                        bail!("create answered HTTP {status}");
                    }
                }
                Ok(())
            }
        }))
        .await;
        results.into_iter().collect::<anyhow::Result<Vec<()>>>()
    };
    let (done, written) = tokio::join!(futures::future::join_all(readers), writers);
    written?;
    let began = *start.get().context("writers never started")?;
    let mut last = began;
    for d in done {
        last = last.max(d?);
    }
    Ok((load.watchers * load.watch_objects) as f64 / (last - began).as_secs_f64())
}
